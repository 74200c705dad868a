//! A private 3-member etcd cluster for fault tests (kill the raft leader,
//! stop two members), so the shared dev-env cluster is never disturbed.
//!
//! Members listen on 127.0.0.1 on ports the OS hands out as free (so
//! parallel tests, and other checkouts running the same tests, do not
//! collide), data in a temp dir, flags as in scripts/dev-env.sh
//! (`--heartbeat-interval 50 --election-timeout 500`). Every member is
//! killed when the cluster is dropped.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use etcd_client::Client;

/// The shared dev-env cluster (scripts/dev-env.sh up).
/// The dev env's etcd endpoints (`BB_ETCD_ENDPOINTS`, default 2379/3379/4379).
pub fn shared() -> Vec<String> {
    std::env::var("BB_ETCD_ENDPOINTS")
        .unwrap_or_else(|_| "127.0.0.1:2379,127.0.0.1:3379,127.0.0.1:4379".into())
        .split(',')
        .map(str::to_string)
        .collect()
}

pub struct EtcdCluster {
    /// Client ports then peer ports, three each.
    ports: Vec<u16>,
    dir: tempfile::TempDir,
    /// Client TLS: (server cert, server key, CA) PEM paths; clients must
    /// present a certificate signed by the CA.
    tls: Option<(PathBuf, PathBuf, PathBuf)>,
    members: Vec<Option<Child>>,
}

impl EtcdCluster {
    /// Start three members and wait until the cluster answers writes.
    ///
    /// `base` 0: ports the OS hands out as free (use this). Otherwise client
    /// ports `base + 10*i` and peer ports `base + 10*i + 1`, i = 0..3 (kept
    /// for tests written against fixed ports).
    pub async fn start(base: u16) -> EtcdCluster {
        let c = EtcdCluster::spawn(base, None);
        c.wait_healthy(Duration::from_secs(20)).await;
        c
    }

    /// Start three members serving clients over mutual TLS only. The caller
    /// waits for health with its own TLS client.
    pub fn start_tls(server_cert: PathBuf, server_key: PathBuf, ca: PathBuf) -> EtcdCluster {
        EtcdCluster::spawn(0, Some((server_cert, server_key, ca)))
    }

    fn spawn(base: u16, tls: Option<(PathBuf, PathBuf, PathBuf)>) -> EtcdCluster {
        let dir = tempfile::tempdir().expect("tempdir");
        // Six distinct free ports: hold all listeners until all are chosen.
        let listeners: Vec<std::net::TcpListener> = (0..6)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port"))
            .collect();
        let ports = if base == 0 {
            listeners
                .iter()
                .map(|l| l.local_addr().expect("local addr").port())
                .collect()
        } else {
            (0..3)
                .map(|i| base + 10 * i)
                .chain((0..3).map(|i| base + 10 * i + 1))
                .collect()
        };
        drop(listeners);
        let mut c = EtcdCluster {
            ports,
            dir,
            tls,
            members: vec![None, None, None],
        };
        for i in 0..3 {
            c.start_member(i);
        }
        c
    }

    pub fn client_port(&self, i: usize) -> u16 {
        self.ports[i]
    }

    fn peer_port(&self, i: usize) -> u16 {
        self.ports[3 + i]
    }

    pub fn endpoint(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.client_port(i))
    }

    pub fn endpoints(&self) -> Vec<String> {
        (0..3).map(|i| self.endpoint(i)).collect()
    }

    /// (Re)start member `i` (state `existing` if its data dir is there).
    pub fn start_member(&mut self, i: usize) {
        assert!(self.members[i].is_none(), "member {i} already running");
        let cluster: Vec<String> = (0..3)
            .map(|j| format!("m{j}=http://127.0.0.1:{}", self.peer_port(j)))
            .collect();
        let data = self.dir.path().join(format!("m{i}"));
        let state = if data.join("member").exists() {
            "existing"
        } else {
            "new"
        };
        let log = std::fs::File::create(self.dir.path().join(format!("m{i}.log")))
            .expect("etcd log file");
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut tls_args: Vec<String> = Vec::new();
        if let Some((cert, key, ca)) = &self.tls {
            for (flag, path) in [
                ("--cert-file", cert),
                ("--key-file", key),
                ("--trusted-ca-file", ca),
            ] {
                tls_args.push(flag.into());
                tls_args.push(path.to_string_lossy().into_owned());
            }
            tls_args.push("--client-cert-auth".into());
        }
        let child = Command::new("etcd")
            .args(&tls_args)
            .args([
                "--name",
                &format!("m{i}"),
                "--data-dir",
                &data.to_string_lossy(),
                "--listen-client-urls",
                &format!("{scheme}://127.0.0.1:{}", self.client_port(i)),
                "--advertise-client-urls",
                &format!("{scheme}://127.0.0.1:{}", self.client_port(i)),
                "--listen-peer-urls",
                &format!("http://127.0.0.1:{}", self.peer_port(i)),
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{}", self.peer_port(i)),
                "--initial-cluster",
                &cluster.join(","),
                "--initial-cluster-state",
                state,
                "--initial-cluster-token",
                &format!("bbtest-{}", self.ports[0]),
                "--heartbeat-interval",
                "50",
                "--election-timeout",
                "500",
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("etcd must be installed (scripts/dev-env.sh install)");
        self.members[i] = Some(child);
    }

    /// SIGKILL member `i` and reap it.
    pub fn kill_member(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Index of the raft leader, asking each running member.
    pub async fn raft_leader(&self) -> Option<usize> {
        for i in 0..3 {
            if self.members[i].is_none() {
                continue;
            }
            let Ok(Ok(mut c)) = tokio::time::timeout(
                Duration::from_secs(1),
                Client::connect([self.endpoint(i)], None),
            )
            .await
            else {
                continue;
            };
            if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_secs(1), c.status()).await {
                let me = s.header().map(|h| h.member_id()).unwrap_or(0);
                if s.leader() != 0 && s.leader() == me {
                    return Some(i);
                }
            }
        }
        None
    }

    /// Wait until a put through all endpoints succeeds.
    pub async fn wait_healthy(&self, within: Duration) {
        let start = Instant::now();
        while start.elapsed() < within {
            if let Ok(Ok(mut c)) = tokio::time::timeout(
                Duration::from_secs(1),
                Client::connect(self.endpoints(), None),
            )
            .await
            {
                if let Ok(Ok(_)) =
                    tokio::time::timeout(Duration::from_secs(1), c.put("/health", "ok", None)).await
                {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "private etcd cluster on ports {:?} not healthy within {within:?}; logs in {}",
            self.ports,
            self.dir.path().display()
        );
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..3 {
            self.kill_member(i);
        }
    }
}

/// A client for the shared dev-env cluster; panics (fails the test) if it is
/// not reachable: these tests need a real etcd.
pub async fn shared_client() -> Client {
    let mut c = tokio::time::timeout(Duration::from_secs(5), Client::connect(shared(), None))
        .await
        .expect("etcd connect timed out: start it with scripts/dev-env.sh up")
        .expect("etcd unreachable: start it with scripts/dev-env.sh up");
    tokio::time::timeout(Duration::from_secs(5), c.get("/bbtest-ping", None))
        .await
        .expect("etcd did not answer: start it with scripts/dev-env.sh up")
        .expect("etcd refused a read: start it with scripts/dev-env.sh up");
    c
}

/// A unique prefix per test run on the shared cluster.
pub fn unique_prefix(test: &str) -> String {
    format!(
        "/bbtest/{test}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0)
    )
}

/// The checkpoint document of pipeline `pipeline` under `prefix`, if written.
pub async fn checkpoint(
    client: &mut Client,
    prefix: &str,
    pipeline: &str,
) -> Option<serde_json::Value> {
    let r = client
        .get(format!("{prefix}/{pipeline}/checkpoint"), None)
        .await
        .ok()?;
    serde_json::from_slice(r.kvs().first()?.value()).ok()
}

/// Polls the checkpoint every 10 ms until `f` accepts it; panics naming
/// `what` after `within`.
pub async fn wait_checkpoint(
    client: &mut Client,
    prefix: &str,
    pipeline: &str,
    what: &str,
    within: Duration,
    f: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let start = Instant::now();
    loop {
        if let Some(c) = checkpoint(client, prefix, pipeline).await {
            if f(&c) {
                return c;
            }
        }
        assert!(
            start.elapsed() < within,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
