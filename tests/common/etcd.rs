//! A private 3-member etcd cluster on its own ports and data dirs, started
//! with the same timing flags as the dev env (`--heartbeat-interval 50
//! --election-timeout 500`), for tests that kill or stop members.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, wait_port, ChildGuard};

pub struct PrivateEtcd {
    dir: tempfile::TempDir,
    client_ports: [u16; 3],
    peer_ports: [u16; 3],
    members: Vec<ChildGuard>,
}

impl PrivateEtcd {
    pub fn start() -> PrivateEtcd {
        let dir = tempfile::tempdir().expect("temp dir");
        let client_ports = [free_port(), free_port(), free_port()];
        let peer_ports = [free_port(), free_port(), free_port()];
        let mut c = PrivateEtcd {
            dir,
            client_ports,
            peer_ports,
            members: Vec::new(),
        };
        for i in 0..3 {
            let g = c.spawn(i);
            c.members.push(g);
        }
        for p in client_ports {
            wait_port(p, Duration::from_secs(20));
        }
        c.wait_healthy(Duration::from_secs(20));
        c
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.client_ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect()
    }

    pub fn endpoint(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.client_ports[i])
    }

    fn cluster(&self) -> String {
        (0..3)
            .map(|i| format!("m{i}=http://127.0.0.1:{}", self.peer_ports[i]))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn spawn(&self, i: usize) -> ChildGuard {
        let data = self.dir.path().join(format!("m{i}"));
        let state = if data.join("member").exists() {
            "existing"
        } else {
            "new"
        };
        let client = format!("http://127.0.0.1:{}", self.client_ports[i]);
        let peer = format!("http://127.0.0.1:{}", self.peer_ports[i]);
        let log =
            std::fs::File::create(self.dir.path().join(format!("m{i}.log"))).expect("etcd log");
        let child = Command::new("etcd")
            .args(["--name", &format!("m{i}")])
            .arg("--data-dir")
            .arg(&data)
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &self.cluster()])
            .args(["--initial-cluster-state", state])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn etcd (install etcd-server: scripts/dev-env.sh install)");
        ChildGuard(Some(child))
    }

    /// kill -9 member `i`.
    pub fn kill(&mut self, i: usize) {
        self.members[i].kill();
    }

    /// Start member `i` again with its data.
    pub fn restart(&mut self, i: usize) {
        self.members[i].kill();
        let g = self.spawn(i);
        self.members[i] = g;
        wait_port(self.client_ports[i], Duration::from_secs(20));
    }

    /// Index of the member that is raft leader, asked through etcdctl.
    pub fn raft_leader(&self) -> Option<usize> {
        for i in 0..3 {
            let out = Command::new("etcdctl")
                .env("ETCDCTL_API", "3")
                .args([
                    "--endpoints",
                    &self.endpoint(i),
                    "endpoint",
                    "status",
                    "-w",
                    "json",
                ])
                .output()
                .ok()?;
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            let st = &v[0]["Status"];
            let (Some(leader), Some(me)) =
                (st["leader"].as_u64(), st["header"]["member_id"].as_u64())
            else {
                continue;
            };
            if leader == me {
                return Some(i);
            }
        }
        None
    }

    pub fn wait_healthy(&self, timeout: Duration) {
        let start = Instant::now();
        let eps = self.endpoints().join(",");
        while start.elapsed() < timeout {
            let ok = Command::new("etcdctl")
                .env("ETCDCTL_API", "3")
                .args(["--endpoints", &eps, "endpoint", "health"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ok {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("private etcd cluster not healthy after {timeout:?}");
    }
}
