//! Real `binlog-bridge` processes for leader-gate tests: N copies of the
//! hidden `heartbeat` command (the leader loop with a counter instead of
//! MySQL and Kafka) sharing one config, one output file and one pipeline.
//! Every process is killed when [`Bridges`] is dropped.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use binlog_bridge::coord::checkpoint::{self, Stored};
use binlog_bridge::coord::election::{current_leader, LeaderInfo};
use binlog_bridge::coord::Keys;
use etcd_client::Client;

pub const PIPELINE: &str = "p";

/// One line of the heartbeat output file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub resume: bool,
    pub epoch: i64,
    pub n: u64,
    pub pid: u32,
    pub ms: u64,
}

pub struct Bridges {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub output: PathBuf,
    pub prefix: String,
    pub endpoints: Vec<String>,
    procs: Vec<Option<Child>>,
}

pub fn now_ms() -> u64 {
    binlog_bridge::coord::now_ms()
}

impl Bridges {
    /// Write the config and start `n` processes.
    pub fn start(n: usize, endpoints: &[String], prefix: &str, ttl_secs: i64) -> Bridges {
        Bridges::start_with(n, endpoints, prefix, ttl_secs, "")
    }

    /// Like [`Bridges::start`], with `extra` appended to the `[etcd]` section.
    pub fn start_with(
        n: usize,
        endpoints: &[String],
        prefix: &str,
        ttl_secs: i64,
        extra: &str,
    ) -> Bridges {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("bridge.toml");
        let eps: Vec<String> = endpoints.iter().map(|e| format!("{e:?}")).collect();
        std::fs::write(
            &config,
            format!(
                "[mysql]\nurl = \"mysql://bridge@127.0.0.1:3306\"\nserver_id = 1001\n\
                 [etcd]\nendpoints = [{}]\nprefix = {prefix:?}\npipeline = {PIPELINE:?}\n\
                 lease_ttl_secs = {ttl_secs}\ncheckpoint_interval_ms = 100\n{extra}\n",
                eps.join(", ")
            ),
        )
        .expect("write config");
        let output = dir.path().join("output.log");
        let mut b = Bridges {
            dir,
            config,
            output,
            prefix: prefix.to_string(),
            endpoints: endpoints.to_vec(),
            procs: Vec::new(),
        };
        for _ in 0..n {
            b.spawn_one();
        }
        b
    }

    pub fn spawn_one(&mut self) -> usize {
        let i = self.procs.len();
        let log = std::fs::File::create(self.dir.path().join(format!("bridge{i}.log")))
            .expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_binlog-bridge"))
            .arg("--config")
            .arg(&self.config)
            .args([
                "--log-level",
                "binlog_bridge=debug",
                "heartbeat",
                "--tick-ms",
                "20",
                "--output",
            ])
            .arg(&self.output)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn binlog-bridge");
        self.procs.push(Some(child));
        i
    }

    pub fn keys(&self) -> Keys {
        Keys::new(&self.prefix, PIPELINE)
    }

    pub fn pid(&self, i: usize) -> u32 {
        self.procs[i]
            .as_ref()
            .map(|c| c.id())
            .expect("process running")
    }

    pub fn index_of(&self, pid: u32) -> Option<usize> {
        self.procs
            .iter()
            .position(|c| c.as_ref().map(|c| c.id()) == Some(pid))
    }

    pub fn signal(&self, i: usize, sig: &str) {
        let st = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid(i).to_string()])
            .status()
            .expect("kill");
        assert!(st.success(), "kill -{sig} failed");
    }

    /// SIGKILL process `i` and reap it.
    pub fn kill9(&mut self, i: usize) {
        if let Some(mut c) = self.procs[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Wait for process `i` to exit; its exit status, or None on timeout.
    pub fn wait_exit(&mut self, i: usize, within: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < within {
            if let Some(c) = self.procs[i].as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    self.procs[i] = None;
                    return Some(st);
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("bridge{i}.log"))).unwrap_or_default()
    }

    pub fn lines(&self) -> Vec<Line> {
        let text = std::fs::read_to_string(&self.output).unwrap_or_default();
        text.lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                if f.len() != 5 {
                    return None;
                }
                Some(Line {
                    resume: f[0] == "RESUME",
                    epoch: f[1].parse().ok()?,
                    n: f[2].parse().ok()?,
                    pid: f[3].parse().ok()?,
                    ms: f[4].parse().ok()?,
                })
            })
            .collect()
    }

    /// Run the binary's CLI against this pipeline.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        super::ops::cli(&self.config, args)
    }

    /// `status --json`, parsed.
    pub fn status(&self) -> serde_json::Value {
        let out = self.cli(&["status", "--json"]);
        assert!(
            out.status.success(),
            "status failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("status --json prints JSON")
    }

    /// Wait (up to 10 s, for an etcd cluster that is still catching up)
    /// until `status` succeeds, then assert it names `pid` / `epoch`.
    pub async fn wait_status_leader(&self, pid: u32, epoch: i64) {
        let s = wait_for("status to answer", Duration::from_secs(10), || async {
            let out = self.cli(&["status", "--json"]);
            if !out.status.success() {
                return None;
            }
            serde_json::from_slice::<serde_json::Value>(&out.stdout).ok()
        })
        .await;
        assert_eq!(s["leader"]["identity"]["pid"], pid, "status: {s}");
        assert_eq!(s["leader"]["epoch"], epoch, "status: {s}");
    }

    /// Assert that `status` names process `pid` as leader with `epoch`.
    pub fn assert_status_leader(&self, pid: u32, epoch: i64) {
        let s = self.status();
        assert_eq!(s["leader"]["identity"]["pid"], pid, "status: {s}");
        assert_eq!(s["leader"]["epoch"], epoch, "status: {s}");
    }
}

impl Drop for Bridges {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for i in 0..self.procs.len() {
                let log = self.log(i);
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                eprintln!("--- bridge {i} log (last 40 lines, newest first) ---");
                for l in tail {
                    eprintln!("{l}");
                }
            }
        }
        for c in self.procs.iter_mut().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub async fn leader(client: &Client, keys: &Keys) -> Option<LeaderInfo> {
    current_leader(client, keys, Duration::from_secs(3))
        .await
        .expect("read leader from etcd")
}

pub async fn read_checkpoint(client: &Client, keys: &Keys) -> Option<Stored> {
    checkpoint::read(client, keys, Duration::from_secs(3))
        .await
        .expect("read checkpoint from etcd")
}

/// Poll `f` every 10 ms until it returns Some, or panic after `within`.
pub async fn wait_for<T, F, Fut>(what: &str, within: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            start.elapsed() < within,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
