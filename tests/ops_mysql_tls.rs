//! MySQL TLS against a real MariaDB that has a certificate and a user that
//! must use TLS (`REQUIRE SSL`): the source streams rows with the right CA
//! under `verify-identity`; a wrong CA, a host name the certificate does not
//! list, and a plain connection each fail with a message naming the setting
//! to fix; a `REQUIRE X509` user connects with `tls_cert_file`/`tls_key_file`
//! and is refused without them. Certificates are made with `openssl` for the test.

mod common;

use std::path::Path;
use std::time::Duration;

use binlog_bridge::config::{MysqlConfig, MysqlTls};
use binlog_bridge::event::EventKind;
use binlog_bridge::source::{BinlogSource, SourceError, SourceOptions, StartFrom};
use common::tls::{make_ca, make_client_cert, make_server_cert};
use common::PrivateMariaDb;

fn config(url: &str, tls: MysqlTls, ca: Option<&Path>) -> MysqlConfig {
    let mut c = common::mysql_config(url, 4501, &["tlsdb.*"]);
    c.tls = tls;
    c.tls_ca_file = ca.map(Path::to_path_buf);
    c
}

async fn start(cfg: &MysqlConfig) -> Result<BinlogSource, SourceError> {
    let opts = SourceOptions {
        connect_timeout: Duration::from_secs(5),
        ..SourceOptions::default()
    };
    BinlogSource::start(cfg, opts, StartFrom::Earliest).await
}

fn start_err(r: Result<BinlogSource, SourceError>) -> String {
    match r {
        Ok(_) => panic!("connected, but it must have been refused"),
        Err(e) => {
            assert!(e.is_definite(), "a TLS refusal is not worth retrying: {e}");
            e.to_string()
        }
    }
}

/// `binlog-bridge check` output for a `verify-identity` config with `ca`.
fn check(url: &str, ca: &Path) -> String {
    let env = common::dev_env();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bb.toml");
    std::fs::write(
        &cfg,
        format!(
            "[mysql]\nurl = \"{url}\"\nserver_id = 4502\ntls = \"verify-identity\"\ntls_ca_file = {:?}\n[etcd]\nendpoints = {:?}\n[kafka]\nbrokers = \"{}\"\n",
            ca.display().to_string(),
            env.etcd_endpoints,
            env.kafka_brokers
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_binlog-bridge"))
        .arg("--config")
        .arg(&cfg)
        .arg("check")
        .output()
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn streams_over_verified_tls_and_names_the_setting_when_refused() {
    let certs = tempfile::tempdir().unwrap();
    let dir = certs.path();
    let ca = make_ca(dir, "ca");
    let other_ca = make_ca(dir, "otherca");
    // Valid for 127.0.0.1 only: "localhost" is a wrong host name for it.
    let (cert, key) = make_server_cert(dir, "ca", "server", "IP:127.0.0.1");
    let port = common::free_port();
    let db = PrivateMariaDb::start(
        port,
        &[
            &format!("ssl_ca={}", ca.display()),
            &format!("ssl_cert={}", cert.display()),
            &format!("ssl_key={}", key.display()),
        ],
    );
    db.sql(
        "CREATE USER 'tlsuser'@'%' IDENTIFIED BY 'tlspw' REQUIRE SSL;
         GRANT SELECT, REPLICATION SLAVE, BINLOG MONITOR ON *.* TO 'tlsuser'@'%';
         CREATE DATABASE tlsdb; CREATE TABLE tlsdb.t (id INT PRIMARY KEY, v VARCHAR(20));
         INSERT INTO tlsdb.t VALUES (1, 'a'), (2, 'b'), (3, 'c');",
    );
    let url = format!("mysql://tlsuser:tlspw@127.0.0.1:{port}");
    let wrong_host_url = format!("mysql://tlsuser:tlspw@localhost:{port}");

    // The right CA, host name checked: rows stream.
    let cfg = config(&url, MysqlTls::VerifyIdentity, Some(&ca));
    let mut src = start(&cfg)
        .await
        .expect("verify-identity with the right CA");
    let evs = common::collect_until(&mut src, Duration::from_secs(20), |e| {
        common::rows_of(e) >= 3
    })
    .await;
    let ids: Vec<String> = evs
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Row(r) => r.after.as_ref().map(|a| format!("{:?}", a[0])),
            _ => None,
        })
        .collect();
    assert_eq!(ids.len(), 3, "{ids:?}");
    drop(src);

    // The connection really is encrypted: the server says so for our session.
    let opts = binlog_bridge::source::mysql_opts(&cfg).unwrap();
    let mut conn = mysql_async::Conn::new(opts).await.unwrap();
    use mysql_async::prelude::Queryable;
    let cipher: Option<(String, String)> = conn
        .query_first("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
        .await
        .unwrap();
    let cipher = cipher.map(|c| c.1).unwrap_or_default();
    assert!(!cipher.is_empty(), "no TLS cipher on the session");
    drop(conn);

    // required: encrypted, certificate not checked, so another CA's server passes.
    start(&config(&url, MysqlTls::Required, None))
        .await
        .expect("tls = required");
    // verify-ca checks the CA but not the name: "localhost" is accepted.
    start(&config(&wrong_host_url, MysqlTls::VerifyCa, Some(&ca)))
        .await
        .expect("verify-ca ignores the host name");

    // A CA that did not sign the server's certificate.
    let e = start_err(start(&config(&url, MysqlTls::VerifyCa, Some(&other_ca))).await);
    assert!(e.contains("mysql.tls_ca_file"), "{e}");
    assert!(e.contains("certificate"), "{e}");
    // `check` uses the same connection: pass with the right CA, a named failure without.
    for (ca, want) in [
        (&ca, "pass  mysql connection"),
        (&other_ca, "FAIL  mysql connection"),
    ] {
        let out = check(&url, ca);
        assert!(out.contains(want), "{out}");
        assert!(!out.contains("tlspw"), "check shows the password: {out}");
        if want.starts_with("FAIL") {
            assert!(out.contains("mysql.tls_ca_file"), "{out}");
        }
    }

    // verify-identity with a host the certificate does not list.
    let e = start_err(
        start(&config(
            &wrong_host_url,
            MysqlTls::VerifyIdentity,
            Some(&ca),
        ))
        .await,
    );
    assert!(e.contains("mysql.url"), "{e}");
    assert!(e.contains("verify-ca"), "{e}");

    // A user that must present a client certificate (REQUIRE X509).
    let (client_cert, client_key) = make_client_cert(dir, "ca", "client");
    db.sql(
        "CREATE USER 'x509user'@'%' IDENTIFIED BY 'x509pw' REQUIRE X509;
         GRANT SELECT, REPLICATION SLAVE, BINLOG MONITOR ON *.* TO 'x509user'@'%';",
    );
    let x509_url = format!("mysql://x509user:x509pw@127.0.0.1:{port}");
    let mut with_cert = config(&x509_url, MysqlTls::VerifyIdentity, Some(&ca));
    with_cert.tls_cert_file = Some(client_cert);
    with_cert.tls_key_file = Some(client_key);
    let mut src = start(&with_cert)
        .await
        .expect("client certificate accepted");
    let evs = common::collect_until(&mut src, Duration::from_secs(20), |e| {
        common::rows_of(e) >= 3
    })
    .await;
    assert_eq!(common::rows_of(&evs), 3);
    drop(src);
    let e = start_err(start(&config(&x509_url, MysqlTls::VerifyIdentity, Some(&ca))).await);
    assert!(e.contains("x509user"), "without the certificate: {e}");

    // The user must use TLS: without it the server refuses the login, and
    // the message names the user and the settings to check.
    let e = start_err(start(&config(&url, MysqlTls::Disabled, None)).await);
    assert!(e.contains("tlsuser"), "{e}");
    assert!(e.contains("mysql.password_file"), "{e}");
    assert!(!e.contains("tlspw"), "the password shows: {e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn preferred_falls_back_to_plain_and_required_names_the_server_side_fix() {
    // The shared dev-env server has no TLS.
    let env = common::dev_env();
    let cfg = config(&env.mysql_url, MysqlTls::Preferred, None);
    let src = start(&cfg).await.expect("preferred connects without TLS");
    drop(src);
    let e = start_err(start(&config(&env.mysql_url, MysqlTls::Required, None)).await);
    assert!(e.contains("does not offer TLS"), "{e}");
    assert!(e.contains("mysql.tls"), "{e}");
}
