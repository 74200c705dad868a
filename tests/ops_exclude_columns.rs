//! `mysql.exclude_columns` through the real pipeline: three `run` processes
//! (debezium, canal, maxwell) stream the same table; in every format the
//! excluded columns are absent from every message (before and after images)
//! and the others are present. A pattern matching a primary-key column is
//! refused: `check` names the pattern and the column, and `run` does not
//! stream.

mod common;

use std::process::Command;
use std::time::Duration;

use common::ops::{consume_json, wait_until, RunningBridge};
use mysql_async::prelude::Queryable;

fn config(db: &str, format: &str, exclude: &str, port: u16, server_id: u32) -> String {
    let env = common::dev_env();
    format!(
        "[mysql]\nurl = \"{}\"\nserver_id = {}\nstart = \"latest\"\ninclude = [\"{db}.*\"]\nexclude_columns = {exclude}\n\
         [etcd]\nendpoints = {:?}\nprefix = \"/bbtest\"\npipeline = \"{db}_{format}\"\nlease_ttl_secs = 2\n\
         [kafka]\nbrokers = \"{}\"\ndelivery = \"at-least-once\"\nformat = \"{format}\"\ntopic = \"{{pipeline}}.{{db}}.{{table}}\"\n\
         [http]\nlisten = \"127.0.0.1:{port}\"\n",
        env.mysql_url,
        server_id,
        env.etcd_endpoints,
        env.kafka_brokers
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn excluded_columns_are_in_no_format_and_a_key_column_is_refused() {
    let env = common::dev_env();
    let db = common::unique("ops_cols");
    let exclude = format!("[\"{db}.users.ssn\", \"{db}.*.pw_*\"]");
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let formats = ["debezium", "canal", "maxwell"];
    let bridges: Vec<RunningBridge> = formats
        .iter()
        .zip(&dirs)
        .zip(4701..)
        .map(|((f, d), id)| {
            let port = common::free_port();
            RunningBridge::start(d.path(), &config(&db, f, &exclude, port, id), port, &[])
        })
        .collect();
    for b in &bridges {
        b.wait_streaming(Duration::from_secs(30));
    }
    let mut admin = common::root_with(
        &env.mysql_admin_url,
        &format!(
            "CREATE DATABASE {db}; \
             CREATE TABLE {db}.users (id INT PRIMARY KEY, name VARCHAR(20), ssn VARCHAR(11), pw_hash VARCHAR(64)); \
             INSERT INTO {db}.users VALUES (1, 'ann', '123-45-6789', 'hash-one'), (2, 'bob', '987-65-4321', 'hash-two'); \
             UPDATE {db}.users SET name = 'anne', ssn = '000-00-0000' WHERE id = 1; \
             DELETE FROM {db}.users WHERE id = 2"
        ),
    )
    .await;

    for format in formats {
        let topic = format!("{db}_{format}.{db}.users");
        let msgs = consume_json(&env.kafka_brokers, &topic, 4, Duration::from_secs(60), &[]);
        assert_eq!(
            msgs.len(),
            4,
            "{format}: insert, insert, update, delete: {msgs:?}"
        );
        for m in &msgs {
            let text = m.to_string();
            for hidden in ["ssn", "pw_hash", "123-45-6789", "000-00-0000", "hash-one"] {
                assert!(
                    !text.contains(hidden),
                    "{format} message shows {hidden}: {text}"
                );
            }
            assert!(text.contains("\"id\""), "{format}: {text}");
        }
        let all = msgs.iter().map(|m| m.to_string()).collect::<String>();
        for shown in ["\"ann\"", "\"anne\"", "\"bob\""] {
            assert!(all.contains(shown), "{format} lacks {shown}: {all}");
        }
    }
    drop(bridges);

    // A pattern that matches the primary key.
    let bad = format!("[\"{db}.users.i*\"]");
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let text = config(&db, "debezium", &bad, port, 4704);
    std::fs::write(dir.path().join("bad.toml"), &text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_binlog-bridge"))
        .arg("--config")
        .arg(dir.path().join("bad.toml"))
        .arg("check")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stdout.contains(&format!("FAIL  mysql exclude_columns: \"{db}.users.i*\" matches primary-key column {db}.users.id")),
        "{stdout}"
    );
    let bridge = RunningBridge::start(dir.path(), &text, port, &[]);
    wait_until("run to report the clash", Duration::from_secs(20), || {
        bridge.log().contains("primary-key column")
    });
    let s = common::ops::status(port).unwrap();
    assert_ne!(s["streaming"], true, "{s}");
    drop(bridge);
    admin
        .query_drop(format!("DROP DATABASE {db}"))
        .await
        .unwrap();
}
