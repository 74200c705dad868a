//! Helpers for the source integration tests: connections to the dev
//! env MariaDB, a config for the binlog source, and a private MariaDB
//! instance for tests that restart, purge or misconfigure a server.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use binlog_bridge::config::MysqlConfig;
use binlog_bridge::event::{ChangeEvent, EventKind, Position};
use binlog_bridge::source::{BinlogSource, SourceOptions, StartFrom};
use mysql_async::prelude::Queryable;

/// The dev env's MariaDB as root (`BB_MYSQL_ADMIN_URL`, default port 3306).
pub fn root_url() -> String {
    std::env::var("BB_MYSQL_ADMIN_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into())
}

/// The dev env's MariaDB as the bridge user (`BB_MYSQL_URL`, default port 3306).
pub fn bridge_url() -> String {
    std::env::var("BB_MYSQL_URL").unwrap_or_else(|_| "mysql://bridge:bridge@127.0.0.1:3306".into())
}

pub async fn root(url: &str) -> mysql_async::Conn {
    mysql_async::Conn::from_url(url).await.unwrap_or_else(|e| {
        panic!("cannot reach MariaDB at {url} (run scripts/dev-env.sh up): {e}")
    })
}

/// A root connection to `url` that has run the setup statements `sql`.
pub async fn root_with(url: &str, sql: &str) -> mysql_async::Conn {
    use mysql_async::prelude::Queryable;
    let mut conn = root(url).await;
    conn.query_drop(sql)
        .await
        .unwrap_or_else(|e| panic!("setup SQL failed: {e}\n{sql}"));
    conn
}

pub fn mysql_config(url: &str, server_id: u32, include: &[&str]) -> MysqlConfig {
    MysqlConfig {
        url: url.into(),
        password: None,
        password_file: None,
        server_id,
        start: "earliest".into(),
        heartbeat_secs: 1,
        read_timeout_secs: 5,
        include: include.iter().map(|s| s.to_string()).collect(),
        exclude: vec![],
        exclude_columns: vec![],
        tls: Default::default(),
        tls_ca_file: None,
        tls_cert_file: None,
        tls_key_file: None,
        dump_reader: Default::default(),
    }
}

pub async fn master_position(conn: &mut mysql_async::Conn) -> Position {
    let row: mysql_async::Row = conn
        .query_first("SHOW MASTER STATUS")
        .await
        .unwrap()
        .unwrap();
    Position::new(
        row.get::<String, _>(0).unwrap(),
        row.get::<u64, _>(1).unwrap(),
    )
}

pub async fn start(url: &str, server_id: u32, include: &[&str], from: StartFrom) -> BinlogSource {
    start_with(&mysql_config(url, server_id, include), from).await
}

/// As [`start`], with a whole `[mysql]` section.
pub async fn start_with(cfg: &MysqlConfig, from: StartFrom) -> BinlogSource {
    let opts = SourceOptions {
        min_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(500),
        ..SourceOptions::default()
    };
    BinlogSource::start(cfg, opts, from)
        .await
        .expect("source starts")
}

/// Read events until `pred` says stop, with an overall deadline.
pub async fn collect_until(
    src: &mut BinlogSource,
    timeout: Duration,
    mut stop: impl FnMut(&[ChangeEvent]) -> bool,
) -> Vec<ChangeEvent> {
    let mut out = Vec::new();
    let deadline = Instant::now() + timeout;
    while !stop(&out) {
        let left = deadline.saturating_duration_since(Instant::now());
        let ev = tokio::time::timeout(left, src.next_event())
            .await
            .unwrap_or_else(|_| panic!("timed out after {} events", out.len()))
            .expect("next_event");
        out.push(ev);
    }
    out
}

pub fn rows_of(evs: &[ChangeEvent]) -> usize {
    evs.iter()
        .filter(|e| matches!(e.kind, EventKind::Row(_)))
        .count()
}

/// A private MariaDB server in a temp dir, stopped on drop.
pub struct PrivateMariaDb {
    pub dir: tempfile::TempDir,
    pub port: u16,
    child: Option<Child>,
    extra: Vec<String>,
}

impl PrivateMariaDb {
    pub fn cnf(&self) -> PathBuf {
        self.dir.path().join("my.cnf")
    }

    fn write_cnf(dir: &Path, port: u16, extra: &[String]) {
        let d = dir.display();
        let mut cnf = format!(
            "[client]\nsocket={d}/mysql.sock\nport={port}\nhost=127.0.0.1\nuser=root\n\n[mariadbd]\ndatadir={d}/data\nsocket={d}/mysql.sock\npid-file={d}/mariadbd.pid\nport={port}\nbind-address=127.0.0.1\nuser=root\nskip-name-resolve\nserver_id=1\nlog_bin={d}/data/binlog\nbinlog_format=ROW\nbinlog_row_image=FULL\nbinlog_row_metadata=FULL\ninnodb_buffer_pool_size=32M\ninnodb_log_file_size=8M\nlog-error={d}/err.log\n"
        );
        for e in extra {
            cnf.push_str(e);
            cnf.push('\n');
        }
        std::fs::write(dir.join("my.cnf"), cnf).unwrap();
    }

    /// Install and start; `extra` lines are appended to `[mariadbd]`.
    pub fn start(port: u16, extra: &[&str]) -> PrivateMariaDb {
        let dir = tempfile::tempdir().unwrap();
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        // Install with the plain config (the bootstrap refuses some options), run with `extra`.
        Self::write_cnf(dir.path(), port, &[]);
        let install = || {
            Command::new("mariadb-install-db")
                .arg(format!(
                    "--defaults-file={}",
                    dir.path().join("my.cnf").display()
                ))
                .args(["--auth-root-authentication-method=normal", "--skip-test-db"])
                .output()
                .expect("mariadb-install-db runs")
        };
        let mut out = install();
        if !out.status.success() {
            // Seen once under heavy parallel load: retry on a clean data dir.
            let _ = std::fs::remove_dir_all(dir.path().join("data"));
            out = install();
        }
        assert!(
            out.status.success(),
            "install-db: {}{}\nerr.log: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(dir.path().join("err.log")).unwrap_or_default()
        );
        Self::write_cnf(dir.path(), port, &extra);
        let mut s = PrivateMariaDb {
            dir,
            port,
            child: None,
            extra,
        };
        s.run();
        s.sql(
            "CREATE USER 'bridge'@'%' IDENTIFIED BY 'bridge';
             GRANT SELECT, REPLICATION SLAVE, BINLOG MONITOR ON *.* TO 'bridge'@'%';
             CREATE USER 'bridge'@'localhost' IDENTIFIED BY 'bridge';
             GRANT SELECT, REPLICATION SLAVE, BINLOG MONITOR ON *.* TO 'bridge'@'localhost';",
        );
        s
    }

    pub fn run(&mut self) {
        let child = Command::new("mariadbd")
            .arg(format!("--defaults-file={}", self.cnf().display()))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("mariadbd starts");
        self.child = Some(child);
        // Ready when the server answering on the TCP port is this one (its
        // datadir is ours): a ping alone would also accept someone else's
        // server that got the port while ours was down.
        let datadir = self.dir.path().join("data");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let answer = Command::new("mariadb")
                .arg(format!("--defaults-file={}", self.cnf().display()))
                .args(["--protocol=tcp", "-N", "-B", "-e", "SELECT @@datadir"])
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
            if let Some(dir) = answer {
                assert!(
                    Path::new(dir.trim_end_matches('/')) == datadir,
                    "127.0.0.1:{} is served by another MariaDB (datadir {dir})",
                    self.port
                );
                break;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "private mariadb on {} exited ({status}) while starting; err.log:\n{}",
                    self.port,
                    std::fs::read_to_string(self.dir.path().join("err.log")).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "private mariadb on {} did not start",
                self.port
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGSTOP (`pause = true`) or SIGCONT the server: a hung, not a dead, peer.
    pub fn signal_pause(&self, pause: bool) {
        let pid = self
            .child
            .as_ref()
            .expect("server running")
            .id()
            .to_string();
        let sig = if pause { "-STOP" } else { "-CONT" };
        let ok = Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} {pid}");
    }

    /// SIGKILL the server (a crash, not a clean shutdown).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("mariadb-admin")
                .arg(format!("--defaults-file={}", self.cnf().display()))
                .arg("shutdown")
                .output();
            let _ = c.wait();
        }
    }

    pub fn sql(&self, sql: &str) -> String {
        let out = Command::new("mariadb")
            .arg(format!("--defaults-file={}", self.cnf().display()))
            .args(["-N", "-B", "-e", sql])
            .output()
            .expect("mariadb client runs");
        assert!(
            out.status.success(),
            "{sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn root_url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}", self.port)
    }

    pub fn bridge_url(&self) -> String {
        format!("mysql://bridge:bridge@127.0.0.1:{}", self.port)
    }
}

impl Drop for PrivateMariaDb {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
