//! Helpers for tests that run the real `binlog-bridge run` binary and look
//! at it the way an operator does: its HTTP endpoints, its log, Kafka.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::ChildGuard;

/// `binlog-bridge --config CONFIG ARGS...` (a CLI command: `status`,
/// `checkpoint set`, ...), run to its end, `RUST_LOG` unset.
pub fn cli(config: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_binlog-bridge"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run binlog-bridge")
}

/// `GET path` on 127.0.0.1:port: (status code, body).
pub fn get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let code = out.get(9..12)?.parse().ok()?;
    Some((code, out.split_once("\r\n\r\n")?.1.to_string()))
}

/// `/status` as JSON.
pub fn status(port: u16) -> Option<serde_json::Value> {
    get(port, "/status").and_then(|(_, b)| serde_json::from_str(&b).ok())
}

/// The value of the first metric line starting with `line_prefix`.
pub fn metric(body: &str, line_prefix: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(line_prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
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

/// `host:port` of a `mysql://...@host:port` URL.
pub fn host_port(url: &str) -> String {
    url.rsplit('@')
        .next()
        .unwrap_or(url)
        .trim_end_matches('/')
        .to_string()
}

/// A `binlog-bridge run` child with its config and log in `dir`.
pub struct RunningBridge {
    pub child: ChildGuard,
    pub log: PathBuf,
    pub port: u16,
}

impl RunningBridge {
    /// Write `config` to `dir/bb.toml` and start `run`, stderr to `dir/bridge.log`.
    pub fn start(dir: &Path, config: &str, port: u16, env: &[(&str, &str)]) -> RunningBridge {
        let cfg = dir.join("bb.toml");
        std::fs::write(&cfg, config).expect("write config");
        let log = dir.join("bridge.log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_binlog-bridge"));
        cmd.arg("--config")
            .arg(&cfg)
            .arg("run")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"));
        for (k, v) in env {
            cmd.env(k, v);
        }
        RunningBridge {
            child: ChildGuard(Some(cmd.spawn().expect("start binlog-bridge run"))),
            log,
            port,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn wait_streaming(&self, within: Duration) {
        wait_until("the bridge to lead and stream", within, || {
            status(self.port).is_some_and(|s| s["role"] == "leader" && s["streaming"] == true)
        });
    }
}

/// Every message of `topic` (all partitions, from the beginning) as JSON,
/// polling until `want` arrived or `within` passed. `props` are extra
/// client properties (security).
pub fn consume_json(
    brokers: &str,
    topic: &str,
    want: usize,
    within: Duration,
    props: &[(&str, &str)],
) -> Vec<serde_json::Value> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", brokers)
        .set("group.id", format!("{topic}-reader"))
        .set("enable.auto.commit", "false");
    for (k, v) in props {
        cc.set(*k, *v);
    }
    let c: BaseConsumer = cc.create().expect("consumer");
    let mut out = Vec::new();
    let start = Instant::now();
    let mut assigned = false;
    while out.len() < want && start.elapsed() < within {
        if !assigned {
            let parts = c
                .fetch_metadata(Some(topic), Duration::from_secs(2))
                .ok()
                .and_then(|md| md.topics().first().map(|t| t.partitions().len()))
                .unwrap_or(0);
            if parts == 0 {
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
            let mut tpl = TopicPartitionList::new();
            for p in 0..parts as i32 {
                tpl.add_partition_offset(topic, p, Offset::Beginning)
                    .expect("partition");
            }
            c.assign(&tpl).expect("assign");
            assigned = true;
        }
        if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
            if let Some(p) = m.payload() {
                out.push(serde_json::from_slice(p).expect("JSON message"));
            }
        }
    }
    out
}
