//! Real `binlog-bridge` processes for leader-gate tests: N copies of the
//! hidden `heartbeat` command (the leader loop with a counter instead of
//! MySQL and Kafka) sharing one config, one output file and one pipeline.
//! Every process is killed when [`Bridges`] is dropped.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::OnceLock;
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

/// Env var carrying the CLI arguments (JSON array) of a self-exec'd child.
const CHILD_ARGS: &str = "BB_COORD_TEST_CHILD_ARGS";
/// Line a self-exec'd child prints before its own output.
const CHILD_MARKER: &str = "--- binlog-bridge child output ---";

/// How to start a `binlog-bridge` process.
///
/// By default the test binary re-executes itself as the CLI through
/// `/proc/self/exe` (see [`child_main`]: exactly what main.rs does, `Cli`
/// parse + telemetry + `dispatch`, in a separate OS process). Why not
/// `CARGO_BIN_EXE_binlog-bridge`: while several worktrees share one
/// CARGO_TARGET_DIR, that file is replaced by whichever worktree built last
/// (measured: bridges failing with "unrecognized subcommand 'heartbeat'"
/// mid-run), whereas `/proc/self/exe` is always the very image under test.
/// `BB_COORD_TEST_REAL_BIN=1` runs the real binary instead (for CI with its
/// own target dir); it must have this branch's hidden `heartbeat` command.
enum Program {
    Binary(PathBuf),
    SelfExec(PathBuf),
}

fn program() -> &'static Program {
    static P: OnceLock<Program> = OnceLock::new();
    P.get_or_init(|| {
        if std::env::var_os("BB_COORD_TEST_REAL_BIN").is_some() {
            let real = PathBuf::from(env!("CARGO_BIN_EXE_binlog-bridge"));
            let ok = Command::new(&real)
                .args(["heartbeat", "--help"])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false);
            assert!(
                ok,
                "{} has no `heartbeat` command: not this branch's build",
                real.display()
            );
            Program::Binary(real)
        } else {
            Program::SelfExec(PathBuf::from("/proc/self/exe"))
        }
    })
}

fn command(args: &[String]) -> Command {
    match program() {
        Program::Binary(p) => {
            let mut c = Command::new(p);
            c.args(args);
            c
        }
        Program::SelfExec(p) => {
            let mut c = Command::new(p);
            c.args([
                "--exact",
                "bridge_child_process",
                "--ignored",
                "--nocapture",
                "--test-threads",
                "1",
            ]);
            c.env(
                CHILD_ARGS,
                serde_json::to_string(args).expect("args to JSON"),
            );
            c
        }
    }
}

/// Body of the `#[ignore]`d `bridge_child_process` test each test file
/// declares: when started by [`command`], act as `binlog-bridge` (main.rs,
/// verbatim) and exit with its code.
pub fn child_main() {
    use clap::Parser;
    let Ok(args) = std::env::var(CHILD_ARGS) else {
        return;
    };
    let args: Vec<String> = serde_json::from_str(&args).expect("child args JSON");
    // The test harness printed "running 1 test" on stdout: mark where ours begins.
    println!("{CHILD_MARKER}");
    let cli = binlog_bridge::cli::Cli::parse_from(
        std::iter::once("binlog-bridge".to_string()).chain(args),
    );
    binlog_bridge::telemetry::init(cli.log_format, &cli.log_level);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let code = rt.block_on(binlog_bridge::cli::dispatch(cli));
    let n = (0..=255u8)
        .find(|n| ExitCode::from(*n) == code)
        .unwrap_or(1);
    std::process::exit(i32::from(n));
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
        let mut all = vec![
            "--config".to_string(),
            self.config.to_string_lossy().into_owned(),
        ];
        all.extend(args.iter().map(|a| a.to_string()));
        let mut out = command(&all)
            .env_remove("RUST_LOG")
            .output()
            .expect("run binlog-bridge");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if let Some((_, rest)) = text.split_once(&format!("{CHILD_MARKER}\n")) {
            out.stdout = rest.as_bytes().to_vec();
        }
        out
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
