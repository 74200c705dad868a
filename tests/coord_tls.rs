//! etcd over mutual TLS: a private cluster that only accepts clients with a
//! certificate from its CA (made here with `openssl`); a bridge configured
//! with `etcd.ca_file`, `cert_file` and `key_file` leads and `status` works;
//! without the client certificate the connection is refused (exit 1).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::bridge::{wait_for, Bridges};
use common::etcd::{unique_prefix, EtcdCluster};
use common::tls::openssl;

/// A CA, a server certificate for 127.0.0.1 and a client certificate.
fn make_certs(dir: &Path) {
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n",
    )
    .expect("ext file");
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").expect("ext file");
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=bbtest-ca",
        ],
    );
    for (name, cn) in [("server", "127.0.0.1"), ("client", "bridge")] {
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
                "-subj",
                &format!("/CN={cn}"),
            ],
        );
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &format!("{name}.pem"),
                "-days",
                "2",
                "-extfile",
                &format!("{name}.ext"),
            ],
        );
    }
}

/// `binlog-bridge check` output with `etcd_lines` in `[etcd]`; MySQL and
/// Kafka are the dev env's.
fn check(endpoints: &[String], etcd_lines: &str) -> String {
    let env = common::dev_env();
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("check.toml");
    std::fs::write(
        &cfg,
        format!(
            "[mysql]\nurl = \"{}\"\nserver_id = 1001\n[etcd]\nendpoints = {endpoints:?}\n{etcd_lines}\n[kafka]\nbrokers = \"{}\"\n",
            env.mysql_url, env.kafka_brokers
        ),
    )
    .expect("config");
    let out = Command::new(env!("CARGO_BIN_EXE_binlog-bridge"))
        .arg("--config")
        .arg(&cfg)
        .arg("check")
        .output()
        .expect("run check");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridge_with_a_client_certificate_leads_over_tls_and_one_without_is_refused() {
    let certs = tempfile::tempdir().expect("tempdir");
    let d = certs.path();
    make_certs(d);
    let etcd = EtcdCluster::start_tls(d.join("server.pem"), d.join("server.key"), d.join("ca.pem"));
    let tls = format!(
        "ca_file = {:?}\ncert_file = {:?}\nkey_file = {:?}",
        d.join("ca.pem"),
        d.join("client.pem"),
        d.join("client.key")
    );
    let b = Bridges::start_with(1, &etcd.endpoints(), &unique_prefix("tls"), 1, &tls);
    let pid = b.pid(0);
    wait_for(
        "the bridge to lead over TLS",
        Duration::from_secs(20),
        || async {
            let out = b.cli(&["status", "--json"]);
            let s: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            (s["leader"]["identity"]["pid"] == pid).then_some(())
        },
    )
    .await;
    // `check` reaches every member with the same TLS settings as `run`.
    let text = check(&etcd.endpoints(), &tls);
    for ep in etcd.endpoints() {
        assert!(text.contains(&format!("pass  etcd {ep}:")), "{text}");
    }

    // Same CA, no client certificate: the server refuses the handshake.
    let no_cert = Bridges::start_with(
        0,
        &etcd.endpoints(),
        &unique_prefix("tls"),
        1,
        &format!("ca_file = {:?}", d.join("ca.pem")),
    );
    let out = no_cert.cli(&["status"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = check(
        &etcd.endpoints(),
        &format!("ca_file = {:?}", d.join("ca.pem")),
    );
    assert!(
        text.contains(&format!("FAIL  etcd {}:", etcd.endpoints()[0])),
        "{text}"
    );
    println!(
        "without a client certificate: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
}
