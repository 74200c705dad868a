//! etcd authentication: on a private cluster with auth enabled, a bridge
//! configured with `etcd.username` + `etcd.password_file` leads and `status`
//! works; a wrong password is refused with exit code 1 and a message that
//! names the credentials.

mod common;

use std::process::Command;
use std::time::Duration;

use common::bridge::{wait_for, Bridges};
use common::etcd::{unique_prefix, EtcdCluster};

fn etcdctl(endpoint: &str, args: &[&str]) {
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", endpoint])
        .args(args)
        .output()
        .expect("etcdctl must be installed (scripts/dev-env.sh install)");
    assert!(
        out.status.success(),
        "etcdctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridge_with_etcd_credentials_leads_and_a_wrong_password_is_refused() {
    let etcd = EtcdCluster::start(0).await;
    let ep = etcd.endpoint(0);
    etcdctl(&ep, &["user", "add", "root:rootpw"]);
    etcdctl(&ep, &["user", "grant-role", "root", "root"]);
    etcdctl(&ep, &["auth", "enable"]);

    let dir = tempfile::tempdir().expect("tempdir");
    let pw = dir.path().join("etcd-password");
    std::fs::write(&pw, "rootpw\n").expect("password file");
    let auth = format!(
        "username = \"root\"\npassword_file = {:?}",
        pw.to_string_lossy()
    );
    let b = Bridges::start_with(1, &etcd.endpoints(), &unique_prefix("auth"), 1, &auth);
    let pid = b.pid(0);
    let s = wait_for("the bridge to lead", Duration::from_secs(15), || async {
        let out = b.cli(&["status", "--json"]);
        let s: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        (s["leader"]["identity"]["pid"] == pid).then_some(s)
    })
    .await;
    assert_eq!(s["members"].as_array().map(|m| m.len()), Some(1), "{s}");

    std::fs::write(&pw, "wrong\n").expect("password file");
    let out = b.cli(&["status"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "wrong password fails the command"
    );
    let msg = String::from_utf8_lossy(&out.stderr);
    println!("wrong password: {}", msg.trim());
    assert!(
        msg.contains("refused") && msg.contains("etcd.username/password"),
        "{msg}"
    );
}
