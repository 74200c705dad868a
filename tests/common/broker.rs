//! A private tansu broker (sqlite storage in its own temp dir, its own port)
//! that a test may stop and restart without touching the shared dev-env broker.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{free_port, tansu_bin, wait_port, ChildGuard};

pub struct PrivateBroker {
    pub port: u16,
    dir: tempfile::TempDir,
    child: ChildGuard,
    auth: bool,
    bin: PathBuf,
}

impl PrivateBroker {
    pub fn start() -> PrivateBroker {
        Self::start_bin(tansu_bin())
    }

    /// The same with another binary of the same command line (nisshi 0.7.0).
    pub fn start_bin(bin: PathBuf) -> PrivateBroker {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let child = spawn(&bin, &dir.path().to_path_buf(), port, false);
        PrivateBroker {
            port,
            dir,
            child,
            auth: false,
            bin,
        }
    }

    /// A broker that requires SASL SCRAM: `users` are `(name, password,
    /// "scram256" | "scram512")`, created with `tansu user create` before the
    /// broker is restarted with `--authentication`.
    pub fn start_with_users(users: &[(&str, &str, &str)]) -> PrivateBroker {
        let mut b = PrivateBroker::start();
        for (name, password, mechanism) in users {
            let out = Command::new(tansu_bin())
                .args(["user", "create", "--broker"])
                .arg(format!("tcp://127.0.0.1:{}", b.port))
                .args(["--mechanism", mechanism, name, password])
                .output()
                .expect("run tansu user create");
            assert!(
                out.status.success(),
                "tansu user create {name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        b.auth = true;
        b.restart();
        b
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// kill -9 the broker (its data stays on disk).
    pub fn kill(&mut self) {
        self.child.kill();
    }

    /// SIGTERM the broker and wait for it to exit.
    pub fn stop(&mut self) {
        self.child.terminate(Duration::from_secs(10));
    }

    /// Start it again on the same port and data.
    pub fn restart(&mut self) {
        self.child.kill();
        self.child = spawn(
            &self.bin,
            &self.dir.path().to_path_buf(),
            self.port,
            self.auth,
        );
    }
}

fn spawn(bin: &PathBuf, dir: &PathBuf, port: u16, auth: bool) -> ChildGuard {
    let url = format!("tcp://127.0.0.1:{port}");
    let log = std::fs::File::create(dir.join("broker.log")).expect("broker log");
    let child = Command::new(bin)
        .current_dir(dir)
        .args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
        ])
        .args(["--storage-engine", "sqlite://broker.db"])
        .args(if auth {
            &["--authentication"][..]
        } else {
            &[][..]
        })
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn broker {}: {e}", bin.display()));
    wait_port(port, Duration::from_secs(20));
    index_headers(&dir.join("broker.db"));
    ChildGuard(Some(child))
}

/// The index `scripts/dev-env.sh` adds to tansu's `header` table (see
/// `index_broker_headers` there: without it every fetch scans every header
/// ever written, and reading back a large topic stalls the broker).
fn index_headers(db: &std::path::Path) {
    const SQL: &str = r#"
import sqlite3, sys, time
for _ in range(100):
    try:
        c = sqlite3.connect(sys.argv[1], timeout=30)
        if c.execute("select 1 from sqlite_master where name = 'header'").fetchone():
            c.execute("create index if not exists bb_header_record on header (topition, offset_id)")
            c.commit()
            sys.exit(0)
        c.close()
    except sqlite3.Error:
        pass
    time.sleep(0.1)
sys.exit(1)
"#;
    let ok = Command::new("python3")
        .args(["-c", SQL])
        .arg(db)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "could not index the private broker's header table in {}",
        db.display()
    );
}
