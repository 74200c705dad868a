//! Helpers for the transactional-delivery tests: a bridge process with its
//! own config and log, its /status and /metrics, and reading a topic back
//! with `isolation.level=read_committed`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

use super::ChildGuard;

pub fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out.split_once("\r\n\r\n")?.1.to_string())
}

pub fn metric(port: u16, prefix: &str) -> Option<f64> {
    http_get(port, "/metrics")?
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

pub fn status(port: u16) -> Option<serde_json::Value> {
    serde_json::from_str(&http_get(port, "/status")?).ok()
}

pub fn wait_until(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
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

pub fn bridge_config(
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

pub fn spawn(dir: &std::path::Path, name: &str, config: &str) -> ChildGuard {
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
