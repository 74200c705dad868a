//! Shared support for integration tests: where the dev-env services are, and
//! private service instances (their own ports and data dirs) for tests that
//! inject faults, so that killing a broker or an etcd member never disturbs
//! other tests running at the same time against the shared dev env.
//!
//! Every helper fails loudly when a service is missing: a test that needs a
//! service it cannot reach fails, it does not pass silently.
#![allow(dead_code)]

pub mod bridge;
pub mod broker;
pub mod etcd;
pub mod ops;
pub mod source;
pub mod tls;

#[allow(unused_imports)]
pub use source::*;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

/// The dev env's endpoints (`scripts/dev-env.sh env`), with its defaults.
pub struct DevEnv {
    pub mysql_url: String,
    pub mysql_admin_url: String,
    pub etcd_endpoints: Vec<String>,
    pub kafka_brokers: String,
}

fn var_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

pub fn dev_env() -> DevEnv {
    DevEnv {
        mysql_url: var_or("BB_MYSQL_URL", "mysql://bridge:bridge@127.0.0.1:3306"),
        mysql_admin_url: var_or("BB_MYSQL_ADMIN_URL", "mysql://root@127.0.0.1:3306"),
        etcd_endpoints: var_or(
            "BB_ETCD_ENDPOINTS",
            "127.0.0.1:2379,127.0.0.1:3379,127.0.0.1:4379",
        )
        .split(',')
        .map(str::to_string)
        .collect(),
        kafka_brokers: var_or("BB_KAFKA_BROKERS", "127.0.0.1:9092"),
    }
}

/// The tansu binary the dev env uses.
pub fn tansu_bin() -> PathBuf {
    if let Ok(p) = std::env::var("BB_TANSU_BIN") {
        return p.into();
    }
    let cache = std::env::var("BB_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into()))
                .join(".cache/binlog-bridge")
        });
    let bin = cache.join("tansu-0.6.0/bin/tansu");
    assert!(
        bin.exists(),
        "tansu not found at {}: run scripts/dev-env.sh up first",
        bin.display()
    );
    bin
}

/// A free TCP port on 127.0.0.1 (bind to 0, read, release).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// Wait until 127.0.0.1:port accepts connections.
pub fn wait_port(port: u16, timeout: Duration) {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("nothing listens on 127.0.0.1:{port} after {timeout:?}");
}

/// A child process killed (SIGKILL) and reaped on drop.
pub struct ChildGuard(pub Option<Child>);

impl ChildGuard {
    pub fn pid(&self) -> u32 {
        self.0.as_ref().map(|c| c.id()).unwrap_or(0)
    }
    /// SIGKILL and wait.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
    /// SIGTERM and wait up to `timeout`, then SIGKILL.
    pub fn terminate(&mut self, timeout: Duration) {
        if let Some(mut c) = self.0.take() {
            signal(c.id(), "TERM");
            let start = Instant::now();
            while start.elapsed() < timeout {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Send a signal by name (`TERM`, `KILL`, `STOP`, `CONT`) with kill(1).
pub fn signal(pid: u32, sig: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{sig} {pid} failed");
}

/// A name unique to this test run, for databases, topics and key prefixes.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}_{}_{nanos}", std::process::id())
}
