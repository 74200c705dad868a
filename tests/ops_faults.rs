//! Faults at startup and mid-stream, each seen the way an operator sees them:
//! what `run` logs, what /readyz and /status say, and what reaches Kafka.
//!
//! - a wrong MySQL password: a clear, repeating (backed-off) log naming the
//!   user and the settings; /readyz 503 with the reason; fixing the password
//!   file recovers without a restart;
//! - MySQL, Kafka or etcd unreachable at startup: retried with backoff and a
//!   repeating log, then every row written meanwhile is streamed;
//! - MySQL restarted under a running leader: /readyz 503 naming the binlog
//!   connection while it is down, 200 after, nothing lost;
//! - etcd quorum lost under a running bridge: /readyz 503 with a reason, 200
//!   again when quorum returns;
//! - a table dropped and recreated with other columns mid-stream: later rows
//!   carry the new columns, nothing skipped;
//! - a config file that does not parse: exit 2 naming the file, line, column.

mod common;

use std::process::Command;
use std::time::Duration;

use common::broker::PrivateBroker;
use common::etcd::EtcdCluster;
use common::ops::{consume_json, get, host_port, status, wait_until, RunningBridge};
use common::PrivateMariaDb;
use mysql_async::prelude::Queryable;

/// A bridge config; `mysql` is `user[:pw]@host:port`, `extra_mysql` more `[mysql]` lines.
fn config(
    mysql: &str,
    extra_mysql: &str,
    server_id: u32,
    endpoints: &[String],
    pipeline: &str,
    brokers: &str,
    port: u16,
) -> String {
    format!(
        "[mysql]\nurl = \"mysql://{mysql}\"\nserver_id = {server_id}\n{extra_mysql}\n\
         [etcd]\nendpoints = {endpoints:?}\nprefix = \"/bbtest\"\npipeline = \"{pipeline}\"\nlease_ttl_secs = 1\ncheckpoint_interval_ms = 100\n\
         [kafka]\nbrokers = \"{brokers}\"\ndelivery = \"at-least-once\"\ntopic = \"{{pipeline}}.{{db}}.{{table}}\"\n\
         [http]\nlisten = \"127.0.0.1:{port}\"\n"
    )
}

fn readyz(port: u16) -> Option<(u16, String)> {
    get(port, "/readyz")
}

/// The `after.id` of every message (debezium).
fn ids(msgs: &[serde_json::Value]) -> Vec<i64> {
    let mut v: Vec<i64> = msgs
        .iter()
        .filter_map(|m| m["after"]["id"].as_i64())
        .collect();
    v.sort();
    v
}

async fn insert_rows(url: &str, db: &str, table: &str, from: i64, n: i64) {
    let mut c = mysql_async::Conn::from_url(url).await.unwrap();
    for i in from..from + n {
        c.query_drop(format!("INSERT INTO {db}.{table} VALUES ({i}, {i})"))
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_mysql_password_backs_off_names_the_user_and_recovers_when_fixed() {
    let env = common::dev_env();
    let db = common::unique("ops_pw");
    let user = format!("u{}", &db[db.len() - 8..]);
    let secret = format!("Right-{db}");
    let mut admin = common::root_with(
        &env.mysql_admin_url,
        &format!(
            "CREATE USER '{user}'@'%' IDENTIFIED BY '{secret}'; \
             GRANT SELECT, REPLICATION SLAVE, BINLOG MONITOR ON *.* TO '{user}'@'%'; \
             CREATE DATABASE {db}; CREATE TABLE {db}.t (id INT PRIMARY KEY, v INT)"
        ),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "Wrong-password-9\n").unwrap();
    let port = common::free_port();
    let cfg = config(
        &format!("{user}@{}", host_port(&env.mysql_url)),
        &format!(
            "password_file = \"{}\"\nstart = \"latest\"\ninclude = [\"{db}.*\"]",
            pw.display()
        ),
        4801,
        &env.etcd_endpoints,
        &db,
        &env.kafka_brokers,
        port,
    );
    let mut bridge = RunningBridge::start(dir.path(), &cfg, port, &[]);
    wait_until(
        "/readyz to give the reason",
        Duration::from_secs(20),
        || {
            readyz(port).is_some_and(|(code, body)| {
                code == 503 && body.contains("Access denied") && body.contains("retrying in")
            })
        },
    );
    // Back off: 0.1, 0.2, 0.4, 0.8, 1.6, 3.2 s ... so about 6 attempts in 6 s,
    // not the ~60 a fixed 100 ms pause would give.
    std::thread::sleep(Duration::from_secs(6));
    let log = bridge.log();
    let attempts = log.matches("stepping down").count();
    assert!(
        (3..=9).contains(&attempts),
        "{attempts} attempts in ~6 s:\n{log}"
    );
    let line = log.lines().find(|l| l.contains("stepping down")).unwrap();
    assert!(
        line.contains(&format!("Access denied for user '{user}'")),
        "{line}"
    );
    assert!(line.contains("mysql.password_file"), "{line}");
    assert!(line.contains("retry_in_ms"), "{line}");
    assert!(
        !log.contains("Wrong-password-9"),
        "the password shows in the log"
    );
    let exited = bridge
        .child
        .0
        .as_mut()
        .and_then(|c| c.try_wait().ok().flatten());
    assert!(
        exited.is_none(),
        "run exited ({exited:?}) instead of retrying"
    );

    // The operator fixes the file: the next attempt streams, no restart.
    std::fs::write(&pw, format!("{secret}\n")).unwrap();
    bridge.wait_streaming(Duration::from_secs(40));
    assert_eq!(readyz(port).map(|r| r.0), Some(200));
    insert_rows(&env.mysql_admin_url, &db, "t", 0, 5).await;
    let msgs = consume_json(
        &env.kafka_brokers,
        &format!("{db}.{db}.t"),
        5,
        Duration::from_secs(30),
        &[],
    );
    assert_eq!(ids(&msgs), [0, 1, 2, 3, 4]);
    drop(bridge);
    admin
        .query_drop(format!("DROP DATABASE {db}; DROP USER '{user}'@'%'"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn mysql_unreachable_at_startup_is_retried_then_every_row_streams() {
    let env = common::dev_env();
    let mut mysql = PrivateMariaDb::start(common::free_port(), &[]);
    mysql.sql("CREATE DATABASE down; CREATE TABLE down.t (id INT PRIMARY KEY, v INT)");
    let start = mysql
        .sql("SHOW MASTER STATUS")
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(":");
    mysql.sql("INSERT INTO down.t VALUES (0, 0), (1, 1)");
    mysql.stop();
    let pipeline = common::unique("ops_mysql_down");
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let cfg = config(
        &format!("bridge:bridge@127.0.0.1:{}", mysql.port),
        &format!("start = \"{start}\"\ninclude = [\"down.*\"]"),
        4802,
        &env.etcd_endpoints,
        &pipeline,
        &env.kafka_brokers,
        port,
    );
    let bridge = RunningBridge::start(dir.path(), &cfg, port, &[]);
    wait_until("a repeating, clear log", Duration::from_secs(20), || {
        bridge.log().matches("stepping down").count() >= 3
    });
    let log = bridge.log();
    assert!(
        log.contains("Connection refused") || log.contains("connection refused"),
        "{log}"
    );
    wait_until(
        "/readyz 503 with the reason",
        Duration::from_secs(20),
        || readyz(port).is_some_and(|(c, b)| c == 503 && b.contains("retrying in")),
    );
    mysql.run();
    mysql.sql("INSERT INTO down.t VALUES (2, 2), (3, 3)");
    bridge.wait_streaming(Duration::from_secs(40));
    let msgs = consume_json(
        &env.kafka_brokers,
        &format!("{pipeline}.down.t"),
        4,
        Duration::from_secs(30),
        &[],
    );
    assert_eq!(
        ids(&msgs),
        [0, 1, 2, 3],
        "rows from before and after the outage"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kafka_unreachable_at_startup_is_retried_then_every_row_streams() {
    let env = common::dev_env();
    let mut broker = PrivateBroker::start();
    broker.stop();
    let db = common::unique("ops_kafka_down");
    let mut admin = common::root_with(
        &env.mysql_admin_url,
        &format!("CREATE DATABASE {db}; CREATE TABLE {db}.t (id INT PRIMARY KEY, v INT)"),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let cfg = config(
        &format!("bridge:bridge@{}", host_port(&env.mysql_url)),
        &format!("start = \"latest\"\ninclude = [\"{db}.*\"]"),
        4803,
        &env.etcd_endpoints,
        &db,
        &broker.brokers(),
        port,
    );
    let bridge = RunningBridge::start(dir.path(), &cfg, port, &[]);
    // Each attempt reads the start position, records it, then fails on Kafka.
    wait_until("a clear log naming Kafka", Duration::from_secs(40), || {
        bridge.log().contains("cannot reach Kafka")
    });
    insert_rows(&env.mysql_admin_url, &db, "t", 0, 5).await;
    // Between attempts it is briefly a standby with a live etcd session
    // (ready by definition); the rest of the time not ready, saying why.
    wait_until("/readyz 503 naming Kafka", Duration::from_secs(30), || {
        readyz(port).is_some_and(|(c, b)| c == 503 && b.contains("Kafka"))
    });
    broker.restart();
    bridge.wait_streaming(Duration::from_secs(60));
    insert_rows(&env.mysql_admin_url, &db, "t", 5, 5).await;
    let msgs = consume_json(
        &broker.brokers(),
        &format!("{db}.{db}.t"),
        10,
        Duration::from_secs(30),
        &[],
    );
    assert_eq!(ids(&msgs), (0..10).collect::<Vec<_>>(), "nothing lost");
    let log = bridge.log();
    assert!(log.contains("check kafka.brokers"), "{log}");
    drop(bridge);
    admin
        .query_drop(format!("DROP DATABASE {db}"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn etcd_down_at_startup_and_quorum_loss_flip_readyz_with_a_reason() {
    let env = common::dev_env();
    let mut etcd = EtcdCluster::start(0).await;
    for i in 0..3 {
        etcd.kill_member(i);
    }
    let db = common::unique("ops_etcd_down");
    let mut admin = common::root_with(
        &env.mysql_admin_url,
        &format!("CREATE DATABASE {db}; CREATE TABLE {db}.t (id INT PRIMARY KEY, v INT)"),
    )
    .await;
    let pos: mysql_async::Row = admin
        .query_first("SHOW MASTER STATUS")
        .await
        .unwrap()
        .unwrap();
    let start = format!(
        "{}:{}",
        pos.get::<String, _>(0).unwrap(),
        pos.get::<u64, _>(1).unwrap()
    );
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let cfg = config(
        &format!("bridge:bridge@{}", host_port(&env.mysql_url)),
        &format!("start = \"{start}\"\ninclude = [\"{db}.*\"]"),
        4804,
        &etcd.endpoints(),
        &db,
        &env.kafka_brokers,
        port,
    );
    let bridge = RunningBridge::start(dir.path(), &cfg, port, &[]);
    wait_until("/readyz 503 without etcd", Duration::from_secs(20), || {
        readyz(port).is_some_and(|(c, b)| c == 503 && b.contains("etcd"))
    });
    insert_rows(&env.mysql_admin_url, &db, "t", 0, 3).await;
    std::thread::sleep(Duration::from_secs(2));
    let log = bridge.log();
    assert!(log.matches("etcd").count() >= 2, "a repeating log: {log}");
    for i in 0..3 {
        etcd.start_member(i);
    }
    bridge.wait_streaming(Duration::from_secs(40));
    assert_eq!(readyz(port).map(|r| r.0), Some(200));
    let topic = format!("{db}.{db}.t");
    let msgs = consume_json(&env.kafka_brokers, &topic, 3, Duration::from_secs(30), &[]);
    assert_eq!(ids(&msgs), [0, 1, 2], "rows written while etcd was down");

    // Quorum lost under the running leader: not ready, and why.
    let raft = etcd.raft_leader().await.expect("a raft leader");
    etcd.kill_member(raft);
    etcd.kill_member((raft + 1) % 3);
    wait_until(
        "/readyz 503 on quorum loss",
        Duration::from_secs(20),
        || readyz(port).is_some_and(|(c, b)| c == 503 && b.contains("etcd")),
    );
    let s = status(port).unwrap();
    assert_eq!(s["streaming"], false, "{s}");
    etcd.start_member(raft);
    etcd.start_member((raft + 1) % 3);
    wait_until(
        "/readyz 200 after quorum returns",
        Duration::from_secs(40),
        || readyz(port).is_some_and(|(c, _)| c == 200),
    );
    insert_rows(&env.mysql_admin_url, &db, "t", 3, 2).await;
    let msgs = consume_json(&env.kafka_brokers, &topic, 5, Duration::from_secs(30), &[]);
    let got = ids(&msgs);
    for i in 0..5 {
        assert!(got.contains(&i), "row {i} missing: {got:?}");
    }
    drop(bridge);
    admin
        .query_drop(format!("DROP DATABASE {db}"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_table_recreated_with_other_columns_mid_stream_decodes_with_the_new_ones() {
    let env = common::dev_env();
    let db = common::unique("ops_recreate");
    let mut admin = common::root_with(
        &env.mysql_admin_url,
        &format!("CREATE DATABASE {db}; CREATE TABLE {db}.t (id INT PRIMARY KEY, a INT)"),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let cfg = config(
        &format!("bridge:bridge@{}", host_port(&env.mysql_url)),
        &format!("start = \"latest\"\ninclude = [\"{db}.*\"]"),
        4805,
        &env.etcd_endpoints,
        &db,
        &env.kafka_brokers,
        port,
    );
    let bridge = RunningBridge::start(dir.path(), &cfg, port, &[]);
    bridge.wait_streaming(Duration::from_secs(30));
    admin
        .query_drop(format!(
            "INSERT INTO {db}.t VALUES (1, 10), (2, 20); \
             DROP TABLE {db}.t; \
             CREATE TABLE {db}.t (id BIGINT PRIMARY KEY, name VARCHAR(20), price DECIMAL(8,2)); \
             INSERT INTO {db}.t VALUES (3, 'three', 3.50), (4, 'four', 4.25); \
             UPDATE {db}.t SET name = 'FOUR' WHERE id = 4"
        ))
        .await
        .unwrap();
    let msgs = consume_json(
        &env.kafka_brokers,
        &format!("{db}.{db}.t"),
        5,
        Duration::from_secs(30),
        &[],
    );
    assert_eq!(msgs.len(), 5, "{msgs:?}");
    let after: Vec<&serde_json::Value> = msgs.iter().map(|m| &m["after"]).collect();
    let by_id = |id: i64| {
        after
            .iter()
            .rev()
            .find(|a| a["id"].as_i64() == Some(id))
            .copied()
            .unwrap_or_else(|| panic!("no row {id}: {msgs:?}"))
    };
    assert_eq!(by_id(1)["a"], 10);
    assert!(by_id(1).get("name").is_none());
    assert_eq!(by_id(3)["name"], "three");
    assert_eq!(by_id(3)["price"].to_string(), "\"3.50\"");
    assert!(by_id(3).get("a").is_none(), "the old column is gone");
    assert_eq!(by_id(4)["name"], "FOUR");
    let s = status(port).unwrap();
    assert_eq!(s["streaming"], true, "still streaming: {s}");
    let log = bridge.log();
    assert!(!log.contains("panicked"), "{log}");
    drop(bridge);
    admin
        .query_drop(format!("DROP DATABASE {db}"))
        .await
        .unwrap();
}

#[test]
fn a_config_file_that_does_not_parse_names_the_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.toml");
    std::fs::write(&path, "[mysql]\nurl = \"mysql://a@b:1\"\nserver_id = = 3\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_binlog-bridge"))
        .arg("--config")
        .arg(&path)
        .arg("run")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(err.contains("line 3, column 13"), "{err}");
    assert!(err.contains("server_id = = 3"), "shows the line: {err}");
}
