//! `transactional` delivery through the real binary, real MariaDB and real
//! 3-member etcd, against brokers that speak the transaction APIs.
//!
//! The dev env's broker (tansu 0.6.0) has no EndTxn, so:
//! - `wire_path_against_librdkafka_mock_cluster` runs against librdkafka's
//!   in-process mock cluster (it answers every transactional request and
//!   commits, though it neither fences nor hides aborted data): `auto` picks
//!   `transactional`, a 2 000-row binlog transaction is cut into batches,
//!   each commit writes a progress record, a graceful handover resumes from
//!   it, and every row arrives exactly once. Only graceful stops are used
//!   here: with this broker an aborted transaction's rows would still be
//!   read, so crash faults prove nothing on it (see tests/txn_nisshi.rs).

mod common;

use std::process::Command;
use std::time::Duration;

use common::txn::{bridge_config, metric, read_all, spawn, status, wait_until};
use mysql_async::prelude::Queryable;
use rdkafka::mocking::MockCluster;

#[tokio::test(flavor = "multi_thread")]
async fn wire_path_against_librdkafka_mock_cluster() {
    let env = common::dev_env();
    let db = common::unique("txn_flow");
    let mock = MockCluster::new(1).unwrap();
    let brokers = mock.bootstrap_servers();
    // The mock cannot create topics through the admin API: create them here.
    let topic = format!("{db}.t");
    mock.create_topic(&topic, 3, 1).unwrap();
    mock.create_topic(&format!("{db}.schema-changes"), 1, 1)
        .unwrap();
    mock.create_topic(&format!("{db}.progress"), 1, 1).unwrap();

    let mut admin = common::root_with(
        &env.mysql_admin_url,
        &format!("CREATE DATABASE {db}; CREATE TABLE {db}.t (id INT PRIMARY KEY, v INT)"),
    )
    .await;

    // An on-demand snapshot request made before any leader chose the
    // delivery mode (the CLI cannot refuse it yet): the transactional
    // leader refuses it, naming kafka.delivery, and deletes it.
    let mut etcd = etcd_client::Client::connect(env.etcd_endpoints.clone(), None)
        .await
        .unwrap();
    let request_key = format!("/bbtest/{db}/snapshot-requests/1-0001");
    etcd.put(
        request_key.clone(),
        format!(r#"{{"id":"1-0001","tables":["{db}.t"],"requested_at_ms":1}}"#),
        None,
    )
    .await
    .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let (pa, pb) = (common::free_port(), common::free_port());
    let mut a = spawn(
        dir.path(),
        "a",
        &bridge_config(
            &env.mysql_url,
            &env.etcd_endpoints,
            &brokers,
            &db,
            pa,
            4481,
            false,
        ),
    );
    wait_until("bridge a to stream", Duration::from_secs(30), || {
        status(pa).is_some_and(|s| s["streaming"] == true)
    });
    let sa = status(pa).unwrap();
    assert_eq!(sa["delivery"], "transactional", "{sa}");
    let mut b = spawn(
        dir.path(),
        "b",
        &bridge_config(
            &env.mysql_url,
            &env.etcd_endpoints,
            &brokers,
            &db,
            pb,
            4482,
            false,
        ),
    );
    wait_until("bridge b to stand by", Duration::from_secs(30), || {
        status(pb).is_some_and(|s| s["role"] == "standby")
    });

    // One binlog transaction of 2 000 rows (batches of 300 messages), then singles.
    let values: Vec<String> = (0..2000).map(|i| format!("({i}, {i})")).collect();
    admin
        .query_drop(format!("INSERT INTO {db}.t VALUES {}", values.join(", ")))
        .await
        .unwrap();
    for i in 2000..2100 {
        admin
            .query_drop(format!("INSERT INTO {db}.t VALUES ({i}, {i})"))
            .await
            .unwrap();
    }
    let inserts = format!("binlog_bridge_events_read_total{{table=\"{db}.t\",type=\"insert\"}} ");
    wait_until("a to read 2100 rows", Duration::from_secs(60), || {
        metric(pa, &inserts) == Some(2100.0)
    });
    let left = etcd.get(request_key.clone(), None).await.unwrap();
    assert!(left.kvs().is_empty(), "the refused request was deleted");
    let cp = etcd
        .get(format!("/bbtest/{db}/checkpoint"), None)
        .await
        .unwrap();
    let cp: serde_json::Value = serde_json::from_slice(cp.kvs()[0].value()).unwrap();
    let outcome = cp["extra"]["ondemand_last"]["outcome"]
        .as_str()
        .unwrap_or_default();
    assert!(
        outcome.starts_with("failed:") && outcome.contains("kafka.delivery = \"idempotent\""),
        "{cp}"
    );
    let txns_a = metric(pa, "binlog_bridge_kafka_transactions_total ").unwrap();
    assert!(
        txns_a >= 7.0,
        "2 000 rows in batches of 300 need at least 7 transactions: {txns_a}"
    );

    // Graceful handover: a commits its last batch and stops; b resumes from
    // the progress record / checkpoint.
    a.terminate(Duration::from_secs(15));
    wait_until("b to lead and stream", Duration::from_secs(30), || {
        status(pb).is_some_and(|s| s["role"] == "leader" && s["streaming"] == true)
    });
    for i in 2100..2200 {
        admin
            .query_drop(format!("INSERT INTO {db}.t VALUES ({i}, {i})"))
            .await
            .unwrap();
    }
    wait_until("b to read 100 rows", Duration::from_secs(60), || {
        metric(pb, &inserts) == Some(100.0)
    });
    wait_until("b to commit", Duration::from_secs(10), || {
        metric(pb, "binlog_bridge_kafka_transactions_total ").is_some_and(|n| n >= 1.0)
    });
    b.terminate(Duration::from_secs(15));
    let log_a = std::fs::read_to_string(dir.path().join("a.log")).unwrap();
    let log_b = std::fs::read_to_string(dir.path().join("b.log")).unwrap();
    assert!(
        log_b.contains("transactional takeover: previous producer fenced"),
        "{log_b}"
    );
    assert!(
        log_a.contains("transactional leader stopped cleanly"),
        "{log_a}"
    );

    // Every row exactly once, in its key's partition.
    let msgs = read_all(&brokers, &topic, 3);
    let mut ids: Vec<i64> = msgs.iter().map(|m| m.2).collect();
    ids.sort_unstable();
    let expected: Vec<i64> = (0..2200).collect();
    assert_eq!(ids.len(), 2200, "messages read: {}", ids.len());
    assert_eq!(ids, expected, "every row exactly once");

    // The progress topic's last record is where the final checkpoint is.
    let out = Command::new(env!("CARGO_BIN_EXE_binlog-bridge"))
        .arg("--config")
        .arg(dir.path().join("b.toml"))
        .args(["checkpoint", "show", "--json"])
        .output()
        .unwrap();
    let cp: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let kcfg = binlog_bridge::config::KafkaConfig {
        brokers: brokers.clone(),
        ..Default::default()
    };
    let progress = binlog_bridge::sink::txn_kafka::read_progress(
        &kcfg,
        &format!("{db}.progress"),
        &db,
        Duration::from_secs(10),
    )
    .unwrap()
    .expect("a progress record");
    assert_eq!(
        serde_json::to_value(&progress).unwrap(),
        cp["position"],
        "final checkpoint {cp} vs progress {progress}"
    );
    assert_eq!(cp["extra"]["delivery"], "transactional");
    assert_eq!(cp["extra"]["clean_stop"], true);
    admin
        .query_drop(format!("DROP DATABASE {db}"))
        .await
        .unwrap();
}
