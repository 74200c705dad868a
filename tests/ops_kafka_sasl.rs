//! Kafka SASL through the named config keys, end to end against a real
//! broker (tansu 0.6.0 with `--authentication` supports SCRAM-SHA-256/512):
//! `run` streams rows into a broker that requires SCRAM, a consumer with the
//! same credentials reads every row, `check` names the SASL failure when the
//! password is wrong, and the password shows in no log, `check` output,
//! /status or /metrics.

mod common;

use std::process::Command;
use std::time::Duration;

use common::broker::PrivateBroker;
use common::ops::{get, metric, wait_until, RunningBridge};
use mysql_async::prelude::Queryable;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

const USER: &str = "bbsasl";

fn check(cfg: &std::path::Path, env: &[(&str, &str)]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_binlog-bridge"))
        .arg("--config")
        .arg(cfg)
        .arg("check")
        .envs(env.iter().copied())
        .output()
        .expect("run check");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread")]
async fn streams_into_a_scram_broker_and_never_shows_the_password() {
    let env = common::dev_env();
    let db = common::unique("ops_sasl");
    let password = format!("Kp-{db}-q7");
    let broker = PrivateBroker::start_with_users(&[(USER, &password, "scram256")]);
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let config = format!(
        "[mysql]\nurl = \"{}\"\nserver_id = 4611\nstart = \"latest\"\ninclude = [\"{db}.*\"]\n\
         [etcd]\nendpoints = {:?}\nprefix = \"/bbtest\"\npipeline = \"{db}\"\nlease_ttl_secs = 2\ncheckpoint_interval_ms = 100\n\
         [kafka]\nbrokers = \"{}\"\ndelivery = \"at-least-once\"\nsecurity_protocol = \"sasl_plaintext\"\nsasl_mechanism = \"SCRAM-SHA-256\"\nsasl_username = \"{USER}\"\n\
         [http]\nlisten = \"127.0.0.1:{port}\"\n",
        env.mysql_url,
        env.etcd_endpoints,
        broker.brokers()
    );
    // The password comes from the environment, as a deployment's secret store gives it.
    let secret_env = [("BINLOG_BRIDGE_KAFKA_SASL_PASSWORD", password.as_str())];

    // check: passes with the password, names the SASL failure without it.
    std::fs::write(dir.path().join("check.toml"), &config).unwrap();
    let (ok, good) = check(&dir.path().join("check.toml"), &secret_env);
    assert!(ok, "{good}");
    assert!(good.contains("pass  kafka"), "{good}");
    let (ok, bad) = check(
        &dir.path().join("check.toml"),
        &[("BINLOG_BRIDGE_KAFKA_SASL_PASSWORD", "not-the-password")],
    );
    assert!(!ok, "{bad}");
    assert!(bad.contains("SASL authentication error"), "{bad}");
    assert!(bad.contains("kafka.sasl_username"), "{bad}");
    assert!(
        !bad.contains("not-the-password"),
        "check shows the password: {bad}"
    );

    // A second bridge (its own pipeline) with a wrong password: run says why.
    let wrong_dir = tempfile::tempdir().unwrap();
    let wrong_port = common::free_port();
    let wrong_cfg = config
        .replace(
            &format!("pipeline = \"{db}\""),
            &format!("pipeline = \"{db}_wrong\""),
        )
        .replace("server_id = 4611", "server_id = 4612")
        .replace(
            &format!("127.0.0.1:{port}"),
            &format!("127.0.0.1:{wrong_port}"),
        );
    let wrong = RunningBridge::start(
        wrong_dir.path(),
        &wrong_cfg,
        wrong_port,
        &[("BINLOG_BRIDGE_KAFKA_SASL_PASSWORD", "not-the-password")],
    );

    let bridge = RunningBridge::start(dir.path(), &config, port, &secret_env);
    bridge.wait_streaming(Duration::from_secs(30));
    let mut admin = common::root_with(
        &env.mysql_admin_url,
        &format!("CREATE DATABASE {db}; CREATE TABLE {db}.t (id INT PRIMARY KEY, v INT)"),
    )
    .await;
    for i in 0..20 {
        admin
            .query_drop(format!("INSERT INTO {db}.t VALUES ({i}, {i})"))
            .await
            .unwrap();
    }

    // A consumer with the same credentials reads every row.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.brokers())
        .set("group.id", format!("{db}-reader"))
        .set("enable.auto.commit", "false")
        .set("security.protocol", "sasl_plaintext")
        .set("sasl.mechanism", "SCRAM-SHA-256")
        .set("sasl.username", USER)
        .set("sasl.password", &password)
        .create()
        .unwrap();
    let topic = format!("{db}.t");
    let mut ids = std::collections::BTreeSet::new();
    wait_until("every row in Kafka", Duration::from_secs(60), || {
        if consumer.assignment().map(|a| a.count()).unwrap_or(0) == 0 {
            let Ok(md) = consumer.fetch_metadata(Some(&topic), Duration::from_secs(2)) else {
                return false;
            };
            let parts = md
                .topics()
                .first()
                .map(|t| t.partitions().len())
                .unwrap_or(0);
            if parts == 0 {
                return false;
            }
            let mut tpl = TopicPartitionList::new();
            for p in 0..parts as i32 {
                tpl.add_partition_offset(&topic, p, Offset::Beginning)
                    .unwrap();
            }
            consumer.assign(&tpl).unwrap();
        }
        while let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let v: serde_json::Value =
                serde_json::from_slice(m.payload().unwrap_or(b"{}")).unwrap();
            if let Some(id) = v["after"]["id"].as_i64() {
                ids.insert(id);
            }
        }
        ids.len() == 20
    });
    assert_eq!(ids, (0..20).collect());

    let (_, status) = get(port, "/status").unwrap();
    let (_, metrics) = get(port, "/metrics").unwrap();
    // `binlog-bridge status`, with the secret in its environment too.
    let out = Command::new(env!("CARGO_BIN_EXE_binlog-bridge"))
        .arg("--config")
        .arg(dir.path().join("check.toml"))
        .arg("status")
        .envs(secret_env.iter().copied())
        .output()
        .expect("run status");
    let cli_status = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cli_status}");
    assert!(cli_status.contains("leader"), "{cli_status}");
    assert_eq!(metric(&metrics, "binlog_bridge_role_leader "), Some(1.0));
    let mut bridge = bridge;
    bridge.child.terminate(Duration::from_secs(10));
    let log = bridge.log();
    for (name, text) in [
        ("log", &log),
        ("check output", &good),
        ("/status", &status),
        ("/metrics", &metrics),
        ("status command", &cli_status),
    ] {
        assert!(!text.contains(&password), "{name} shows the SASL password");
    }
    assert!(log.contains("streaming"), "{log}");
    wait_until(
        "the wrong-password bridge to step down",
        Duration::from_secs(40),
        || wrong.log().contains("stepping down"),
    );
    let wrong_log = wrong.log();
    assert!(
        wrong_log.contains("SASL authentication error"),
        "{wrong_log}"
    );
    assert!(wrong_log.contains("check the SASL/SSL keys"), "{wrong_log}");
    assert!(!wrong_log.contains("not-the-password"), "{wrong_log}");
    assert!(!wrong_log.contains(&password), "{wrong_log}");
    drop(wrong);
    admin
        .query_drop(format!("DROP DATABASE {db}"))
        .await
        .unwrap();
}
