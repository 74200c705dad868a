//! The watchdog (`etcd.watchdog`, src/coord/watchdog.rs) with real processes:
//! a leader streaming with idempotent delivery is frozen with SIGSTOP while a
//! writer keeps inserting; its watchdog kills it before its 1 s lease
//! expires, the standby takes over, and every row arrives exactly once.

mod common;

use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use common::ops::{consume_json, status, wait_until, RunningBridge};
use mysql_async::prelude::Queryable;

fn config(db: &str, port: u16, server_id: u32) -> String {
    let env = common::dev_env();
    format!(
        "[mysql]\nurl = \"{}\"\nserver_id = {}\nstart = \"latest\"\ninclude = [\"{db}.*\"]\n\
         [etcd]\nendpoints = {:?}\nprefix = \"/bbtest\"\npipeline = \"{db}\"\nlease_ttl_secs = 1\n\
         [kafka]\nbrokers = \"{}\"\ndelivery = \"idempotent\"\ntopic = \"{{pipeline}}.{{db}}.{{table}}\"\n\
         [http]\nlisten = \"127.0.0.1:{port}\"\n",
        env.mysql_url, server_id, env.etcd_endpoints, env.kafka_brokers
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_frozen_leader_is_killed_before_its_lease_expires_and_no_row_repeats() {
    let env = common::dev_env();
    let db = common::unique("ops_wd");
    let mut admin = common::root_with(
        &env.mysql_admin_url,
        &format!("CREATE DATABASE {db}; CREATE TABLE {db}.t (id INT PRIMARY KEY, v INT)"),
    )
    .await;
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let ports = [common::free_port(), common::free_port()];
    let mut first =
        RunningBridge::start(dirs[0].path(), &config(&db, ports[0], 4811), ports[0], &[]);
    first.wait_streaming(Duration::from_secs(30));
    let second = RunningBridge::start(dirs[1].path(), &config(&db, ports[1], 4812), ports[1], &[]);
    wait_until(
        "the second bridge to stand by",
        Duration::from_secs(30),
        || status(ports[1]).is_some_and(|s| s["role"] == "standby"),
    );

    // A steady writer, one row per transaction, during the whole freeze.
    let rows = 600u32;
    let url = env.mysql_admin_url.clone();
    let table = format!("{db}.t");
    let writer = tokio::spawn(async move {
        let mut c = mysql_async::Conn::from_url(url.as_str()).await?;
        for id in 1..=rows {
            c.query_drop(format!("INSERT INTO {table} VALUES ({id}, {id})"))
                .await?;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok::<(), mysql_async::Error>(())
    });
    tokio::time::sleep(Duration::from_millis(700)).await;

    let pid = first.child.pid();
    common::signal(pid, "STOP");
    let frozen = Instant::now();
    let child = first.child.0.as_mut().expect("the first bridge runs");
    let exit = loop {
        if let Some(s) = child.try_wait().expect("wait for the frozen bridge") {
            break s;
        }
        assert!(
            frozen.elapsed() < Duration::from_secs(5),
            "the frozen leader was not killed; log:\n{}",
            first.log()
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let killed_after = frozen.elapsed();
    assert_eq!(exit.signal(), Some(9), "killed by SIGKILL: {exit:?}");
    // Before its 1 s lease can expire (deadline = last keep-alive + 1 s).
    assert!(
        killed_after < Duration::from_millis(1000),
        "killed {killed_after:?} after the freeze"
    );
    assert!(first.log().contains("watchdog"), "{}", first.log());

    wait_until("the standby to take over", Duration::from_secs(20), || {
        status(ports[1]).is_some_and(|s| s["role"] == "leader" && s["streaming"] == true)
    });
    writer.await.expect("writer task").expect("writer");

    let topic = format!("{db}.{db}.t");
    let msgs = consume_json(
        &env.kafka_brokers,
        &topic,
        rows as usize,
        Duration::from_secs(60),
        &[],
    );
    // Anything late (a duplicate) would arrive within the next seconds.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let msgs_after = consume_json(
        &env.kafka_brokers,
        &topic,
        rows as usize + 1,
        Duration::from_secs(5),
        &[],
    );
    let mut seen: HashMap<i64, usize> = HashMap::new();
    for m in &msgs_after {
        let id = m["payload"]["after"]["id"]
            .as_i64()
            .or_else(|| m["after"]["id"].as_i64())
            .expect("an insert with an id");
        *seen.entry(id).or_default() += 1;
    }
    let dup: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dup.is_empty(), "rows sent twice: {dup:?}");
    assert_eq!(msgs.len(), rows as usize);
    assert_eq!(seen.len(), rows as usize, "every row once");
    drop(second);
    admin
        .query_drop(format!("DROP DATABASE {db}"))
        .await
        .expect("drop the test database");
}
