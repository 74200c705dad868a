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
pub mod txn;

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

/// A free TCP port on 127.0.0.1 for a server a test starts.
///
/// A port from 20000-31999, below Linux's default ephemeral range (32768 and up), so
/// no client socket of any process picks it as its local port, and reserved
/// for this run with a file, so no other test process gets it either. Both
/// matter to tests that stop and restart a server on its port: while it is
/// down, a port the kernel once called free can go to anyone else.
pub fn free_port() -> u16 {
    const LOW: u16 = 20000;
    const SPAN: u16 = 12000;
    let dir = std::env::temp_dir().join("binlog-bridge-test-ports");
    std::fs::create_dir_all(&dir).expect("create the port reservation dir");
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
        ^ std::process::id().wrapping_mul(2_654_435_761);
    let start = (seed % u32::from(SPAN)) as u16;
    for i in 0..SPAN {
        let port = LOW + (start + i) % SPAN;
        let mark = dir.join(port.to_string());
        // A reservation older than three hours is from an earlier run: take it over.
        let stale = std::fs::metadata(&mark)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > Duration::from_secs(3 * 3600));
        if stale {
            let _ = std::fs::remove_file(&mark);
        }
        if std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&mark)
            .is_err()
        {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port left in 127.0.0.1:{LOW}-{}", LOW + SPAN - 1);
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
