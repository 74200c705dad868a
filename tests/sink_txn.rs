//! Delivery-mode choice against the dev env's broker (tansu 0.6.0, which has
//! no Kafka transactions): `auto` picks `idempotent` and says so in /status;
//! an explicit `transactional` is refused at startup, naming `idempotent`.
//! (`transactional` itself needs a broker with transactions: see
//! tests/txn_nisshi.rs and the unit tests of `sink::txn`.)

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use binlog_bridge::bridge::resolve_delivery;
use binlog_bridge::config::{Delivery, KafkaConfig};
use binlog_bridge::sink::probe::{probe_transactions, TxnSupport};
use common::ChildGuard;

fn kafka(brokers: &str, delivery: Delivery) -> KafkaConfig {
    KafkaConfig {
        brokers: brokers.to_string(),
        delivery,
        ..KafkaConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_probe_finds_no_endtxn_and_auto_resolves_to_idempotent() {
    let env = common::dev_env();
    let cfg = kafka(&env.kafka_brokers, Delivery::Auto);
    let support = probe_transactions(&cfg, Duration::from_secs(10)).unwrap();
    match support {
        TxnSupport::Missing(apis) => assert!(apis.contains(&"EndTxn"), "{apis:?}"),
        TxnSupport::Supported => panic!("tansu 0.6.0 has no EndTxn, yet the probe says supported"),
    }
    assert_eq!(
        resolve_delivery(&cfg, Duration::from_secs(3))
            .await
            .unwrap(),
        Delivery::Idempotent
    );
    // Modes that need no probe are kept as given.
    for d in [Delivery::Idempotent, Delivery::AtLeastOnce] {
        assert_eq!(
            resolve_delivery(&kafka(&env.kafka_brokers, d), Duration::from_secs(3))
                .await
                .unwrap(),
            d
        );
    }
    let e = resolve_delivery(
        &kafka(&env.kafka_brokers, Delivery::Transactional),
        Duration::from_secs(3),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("does not offer EndTxn") && e.contains("kafka.delivery = \"idempotent\""),
        "{e}"
    );
    // A broker that is not there is an error naming the brokers, not a guess.
    let nobody = format!("127.0.0.1:{}", common::free_port());
    let e = resolve_delivery(&kafka(&nobody, Delivery::Auto), Duration::from_secs(3))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains(&nobody), "{e}");
}

fn config(env: &common::DevEnv, db: &str, delivery: &str, port: u16) -> String {
    format!(
        "[mysql]\nurl = \"{}\"\nserver_id = 4471\nstart = \"latest\"\ninclude = [\"{db}.*\"]\n\
         [etcd]\nendpoints = {:?}\nprefix = \"/bbtest\"\npipeline = \"{db}\"\nlease_ttl_secs = 1\n\
         [kafka]\nbrokers = \"{}\"\ndelivery = \"{delivery}\"\n[http]\nlisten = \"127.0.0.1:{port}\"\n",
        env.mysql_url, env.etcd_endpoints, env.kafka_brokers
    )
}

fn get_status(port: u16) -> Option<serde_json::Value> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET /status HTTP/1.1\r\nHost: x\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    serde_json::from_str(out.split_once("\r\n\r\n")?.1).ok()
}

#[test]
fn run_refuses_explicit_transactional_and_auto_shows_idempotent_in_status() {
    let env = common::dev_env();
    let db = common::unique("txn_mode");
    let dir = tempfile::tempdir().unwrap();

    // Explicit transactional: refused before anything else, exit code 2.
    let path = dir.path().join("txn.toml");
    std::fs::write(
        &path,
        config(&env, &db, "transactional", common::free_port()),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_binlog-bridge"))
        .arg("--config")
        .arg(&path)
        .arg("run")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("does not support transactions")
            && stderr.contains("kafka.delivery = \"idempotent\""),
        "{stderr}"
    );

    // auto: the chosen mode is logged and shown in /status.
    let port = common::free_port();
    let path = dir.path().join("auto.toml");
    std::fs::write(&path, config(&env, &db, "auto", port)).unwrap();
    let log = dir.path().join("auto.log");
    let mut bridge = ChildGuard(Some(
        Command::new(env!("CARGO_BIN_EXE_binlog-bridge"))
            .arg("--config")
            .arg(&path)
            .arg("run")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    ));
    let start = Instant::now();
    let mut last = None;
    while start.elapsed() < Duration::from_secs(20) {
        last = get_status(port);
        if last
            .as_ref()
            .is_some_and(|s| s["delivery"] == "idempotent" && s["streaming"] == true)
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // The operator's `status` (read from etcd) names the mode too.
    let out = Command::new(env!("CARGO_BIN_EXE_binlog-bridge"))
        .arg("--config")
        .arg(&path)
        .arg("status")
        .output()
        .unwrap();
    let status_text = String::from_utf8_lossy(&out.stdout).to_string();
    bridge.terminate(Duration::from_secs(10));
    assert!(
        status_text.lines().any(|l| l == "delivery    idempotent"),
        "{status_text}"
    );
    let logged = std::fs::read_to_string(&log).unwrap();
    let status = last.expect("no /status answer");
    assert_eq!(status["delivery"], "idempotent", "{status}\n{logged}");
    assert_eq!(status["streaming"], true, "{status}\n{logged}");
    assert!(
        logged.lines().any(|l| l.contains("delivery mode")
            && l.contains("chosen")
            && l.contains("idempotent")),
        "{logged}"
    );
}
