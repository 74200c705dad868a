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

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::ChildGuard;
use mysql_async::prelude::Queryable;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::mocking::MockCluster;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

pub fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out.split_once("\r\n\r\n")?.1.to_string())
}

fn metric(port: u16, prefix: &str) -> Option<f64> {
    http_get(port, "/metrics")?
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn status(port: u16) -> Option<serde_json::Value> {
    serde_json::from_str(&http_get(port, "/status")?).ok()
}

fn wait_until(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < within {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out after {within:?} waiting for {what}");
}

/// Every message of `topic` (all partitions), read with read_committed up
/// to the end: (partition, key, `id` from the row image, epoch header).
pub fn read_all(brokers: &str, topic: &str, partitions: i32) -> Vec<(i32, String, i64, String)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "txn-flow-check")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed")
        .create()
        .unwrap();
    let mut out = Vec::new();
    for p in 0..partitions {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
        consumer.assign(&tpl).unwrap();
        let start = Instant::now();
        loop {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "reading {topic}/{p} timed out"
            );
            match consumer.poll(Duration::from_millis(200)) {
                None => {}
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => break,
                Some(Err(e)) => panic!("consume {topic}/{p}: {e}"),
                Some(Ok(m)) => {
                    let doc: serde_json::Value =
                        serde_json::from_slice(m.payload().unwrap_or(b"null")).unwrap();
                    let id = doc["after"]["id"].as_i64().unwrap_or(-1);
                    let epoch = m
                        .headers()
                        .and_then(|h| h.iter().find(|h| h.key == "bb.epoch"))
                        .and_then(|h| h.value)
                        .map(|v| String::from_utf8_lossy(v).to_string())
                        .unwrap_or_default();
                    let key = String::from_utf8_lossy(m.key().unwrap_or(b"")).to_string();
                    out.push((p, key, id, epoch));
                }
            }
        }
    }
    out
}

fn bridge_config(
    mysql_url: &str,
    etcd: &[String],
    brokers: &str,
    db: &str,
    port: u16,
    server_id: u32,
    create_topics: bool,
) -> String {
    format!(
        "[mysql]\nurl = \"{mysql_url}\"\nserver_id = {server_id}\nstart = \"latest\"\ninclude = [\"{db}.*\"]\n\
         [etcd]\nendpoints = {etcd:?}\nprefix = \"/bbtest\"\npipeline = \"{db}\"\nlease_ttl_secs = 1\ncheckpoint_interval_ms = 100\n\
         [kafka]\nbrokers = \"{brokers}\"\ndelivery = \"auto\"\ncreate_topics = {create_topics}\n\
         transaction_max_messages = 300\ntransaction_max_ms = 50\n\
         [http]\nlisten = \"127.0.0.1:{port}\"\n"
    )
}

fn spawn(dir: &std::path::Path, name: &str, config: &str) -> ChildGuard {
    let cfg = dir.join(format!("{name}.toml"));
    std::fs::write(&cfg, config).unwrap();
    ChildGuard(Some(
        Command::new(env!("CARGO_BIN_EXE_binlog-bridge"))
            .arg("--config")
            .arg(&cfg)
            .arg("run")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join(format!("{name}.log"))).unwrap())
            .spawn()
            .unwrap(),
    ))
}

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

    let mut admin = mysql_async::Conn::from_url(&env.mysql_admin_url)
        .await
        .unwrap();
    admin
        .query_drop(format!(
            "CREATE DATABASE {db}; CREATE TABLE {db}.t (id INT PRIMARY KEY, v INT)"
        ))
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
