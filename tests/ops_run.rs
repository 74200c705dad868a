//! A real `binlog-bridge run` seen from the operator's side: /metrics moves
//! while rows flow, /readyz and /status follow the role, and the MySQL
//! password given in a file never shows in logs, /status or /metrics.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::broker::PrivateBroker;
use common::ops::{get, host_port, metric, wait_until};
use common::ChildGuard;
use mysql_async::prelude::Queryable;

#[tokio::test(flavor = "multi_thread")]
async fn metrics_move_readyz_follows_the_role_and_secrets_stay_hidden() {
    let env = common::dev_env();
    let broker = PrivateBroker::start();
    let db = common::unique("ops_run");
    // A user of its own, with a password that cannot appear by accident.
    let user = format!("u{}", &db[db.len() - 8..]);
    let secret = format!("Pw-{db}-x9");
    let mut admin = common::root_with(
        &env.mysql_admin_url,
        &format!(
            "CREATE USER '{user}'@'%' IDENTIFIED BY '{secret}'; \
             GRANT SELECT, REPLICATION SLAVE, BINLOG MONITOR ON *.* TO '{user}'@'%'"
        ),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("mysql-password");
    std::fs::write(&pw, format!("{secret}\n")).unwrap();
    let port = common::free_port();
    let config = format!(
        "[mysql]\nurl = \"mysql://{user}@{}\"\npassword_file = \"{}\"\nserver_id = 4401\nstart = \"latest\"\ninclude = [\"{db}.*\"]\n\
         [etcd]\nendpoints = {:?}\nprefix = \"/bbtest\"\npipeline = \"{db}\"\nlease_ttl_secs = 1\ncheckpoint_interval_ms = 100\nwatchdog = false\n\
         [kafka]\nbrokers = \"{}\"\ndelivery = \"idempotent\"\n[http]\nlisten = \"127.0.0.1:{port}\"\n",
        host_port(&env.mysql_url),
        pw.display(),
        env.etcd_endpoints,
        broker.brokers()
    );
    let cfg_path = dir.path().join("bb.toml");
    std::fs::write(&cfg_path, config).unwrap();
    let log_path = dir.path().join("bridge.log");
    let mut bridge = ChildGuard(Some(
        Command::new(env!("CARGO_BIN_EXE_binlog-bridge"))
            .arg("--config")
            .arg(&cfg_path)
            .arg("run")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .unwrap(),
    ));

    wait_until(
        "the bridge to lead and stream",
        Duration::from_secs(20),
        || {
            get(port, "/status")
                .and_then(|(_, b)| serde_json::from_str::<serde_json::Value>(&b).ok())
                .is_some_and(|s| s["role"] == "leader" && s["streaming"] == true)
        },
    );
    assert_eq!(get(port, "/readyz").map(|r| r.0), Some(200));
    assert_eq!(get(port, "/healthz").map(|r| r.0), Some(200));

    admin
        .query_drop(format!(
            "CREATE DATABASE {db}; CREATE TABLE {db}.t (id INT PRIMARY KEY, v INT)"
        ))
        .await
        .unwrap();
    for i in 0..50 {
        admin
            .query_drop(format!("INSERT INTO {db}.t VALUES ({i}, {i})"))
            .await
            .unwrap();
    }
    admin
        .query_drop(format!("UPDATE {db}.t SET v = v + 1 WHERE id < 10"))
        .await
        .unwrap();

    let inserts = format!("binlog_bridge_events_read_total{{table=\"{db}.t\",type=\"insert\"}} ");
    let updates = format!("binlog_bridge_events_read_total{{table=\"{db}.t\",type=\"update\"}} ");
    wait_until(
        "the counters to count every row",
        Duration::from_secs(20),
        || {
            get(port, "/metrics").is_some_and(|(_, b)| {
                metric(&b, &inserts) == Some(50.0) && metric(&b, &updates) == Some(10.0)
            })
        },
    );
    let (_, body) = get(port, "/metrics").unwrap();
    assert_eq!(metric(&body, "binlog_bridge_role_leader "), Some(1.0));
    let lag = metric(&body, "binlog_bridge_replication_lag_seconds ").unwrap();
    assert!((0.0..60.0).contains(&lag), "lag {lag}");
    let age = metric(&body, "binlog_bridge_checkpoint_age_seconds ").unwrap();
    assert!((0.0..10.0).contains(&age), "checkpoint age {age}");
    // Kafka acknowledged every row: 50 inserts + 10 updates on the row topic
    // (the update keeps its key: one message each), with their bytes.
    let topic = format!("{db}.t");
    wait_until("every row acknowledged", Duration::from_secs(20), || {
        get(port, "/metrics").is_some_and(|(_, b)| {
            metric(
                &b,
                &format!("binlog_bridge_kafka_produced_messages_total{{topic=\"{topic}\"}} "),
            ) == Some(60.0)
        })
    });
    let (_, body) = get(port, "/metrics").unwrap();
    let bytes = metric(
        &body,
        &format!("binlog_bridge_kafka_produced_bytes_total{{topic=\"{topic}\"}} "),
    )
    .unwrap();
    assert!(
        bytes > 60.0 * 50.0,
        "60 JSON messages are more than {bytes} bytes"
    );
    // Every acknowledged message was timed; the DDL went to the schema topic.
    let delivered = metric(&body, "binlog_bridge_kafka_delivery_seconds_count ").unwrap();
    assert!(delivered >= 62.0, "delivery latency count {delivered}");
    let sum = metric(&body, "binlog_bridge_kafka_delivery_seconds_sum ").unwrap();
    assert!(
        sum > 0.0 && sum / delivered < 5.0,
        "mean delivery {}",
        sum / delivered
    );
    // Checkpoints were written (interval 100 ms) and timed.
    let commits = metric(&body, "binlog_bridge_checkpoint_commit_seconds_count ").unwrap();
    assert!(commits >= 1.0, "checkpoint commits {commits}");
    let slow = metric(
        &body,
        "binlog_bridge_checkpoint_commit_seconds_bucket{le=\"+Inf\"} ",
    )
    .unwrap();
    assert_eq!(slow, commits, "+Inf bucket is the count");
    // Keep-alives go every TTL/10 (100 ms), each well under a second.
    let beats = metric(&body, "binlog_bridge_etcd_keepalive_seconds_count ").unwrap();
    assert!(beats >= 1.0, "keep-alives {beats}");
    let under_1s = metric(
        &body,
        "binlog_bridge_etcd_keepalive_seconds_bucket{le=\"1\"} ",
    )
    .unwrap();
    assert!(
        under_1s >= beats * 0.9,
        "{under_1s} of {beats} keep-alives under 1 s"
    );

    // Freeze it past its lease: on waking it must step down (its lease is
    // gone) and, as the only candidate, lead again under a new epoch. (The
    // watchdog, off here, would kill it instead: tests/ops_watchdog.rs; this
    // is the path of a freeze that takes the watchdog too.)
    let epoch = |port| {
        get(port, "/status")
            .and_then(|(_, b)| serde_json::from_str::<serde_json::Value>(&b).ok())
            .and_then(|s| s["epoch"].as_i64())
    };
    let first = epoch(port).expect("leader epoch in /status");
    common::signal(bridge.pid(), "STOP");
    std::thread::sleep(Duration::from_millis(3000));
    common::signal(bridge.pid(), "CONT");
    wait_until(
        "a new epoch after the freeze",
        Duration::from_secs(30),
        || {
            epoch(port).is_some_and(|e| e != first)
                && get(port, "/readyz").map(|r| r.0) == Some(200)
        },
    );
    let (_, body) = get(port, "/metrics").unwrap();
    let changes = metric(&body, "binlog_bridge_leadership_changes_total ").unwrap();
    assert!(changes >= 3.0, "led, stepped down, led again: {changes}");
    // The new lease's keep-alives are timed too (the first one goes TTL/10
    // after the election, so wait for it rather than read at once).
    wait_until(
        "keep-alives timed under the new lease",
        Duration::from_secs(10),
        || {
            get(port, "/metrics").is_some_and(|(_, b)| {
                metric(&b, "binlog_bridge_etcd_keepalive_seconds_count ")
                    .is_some_and(|later| later > beats)
            })
        },
    );

    // The password from the file shows nowhere.
    let (_, status) = get(port, "/status").unwrap();
    let (_, metrics) = get(port, "/metrics").unwrap();
    bridge.terminate(Duration::from_secs(10));
    let log = std::fs::read_to_string(&log_path).unwrap();
    for (name, text) in [("log", &log), ("/status", &status), ("/metrics", &metrics)] {
        assert!(!text.contains(&secret), "{name} shows the password");
    }
    assert!(
        log.contains("stepping down")
            || log.contains("session lost")
            || log.contains("lease deadline passed"),
        "{log}"
    );
    admin
        .query_drop(format!("DROP DATABASE {db}; DROP USER '{user}'@'%'"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn status_says_why_nobody_leads_when_every_leader_steps_down() {
    let env = common::dev_env();
    let pipeline = common::unique("ops_failure");
    // A checkpoint in a binlog file this server never had (the wrong server,
    // or a mistyped position): every leadership fails at its start, steps
    // down and backs off, so nobody leads and no member is registered.
    let mut admin = mysql_async::Conn::from_url(env.mysql_admin_url.clone())
        .await
        .expect("MariaDB admin connection: start the dev env");
    let file: String = admin
        .query_first::<mysql_async::Row, _>("SHOW MASTER STATUS")
        .await
        .expect("SHOW MASTER STATUS")
        .and_then(|r| r.get(0))
        .expect("a binlog file");
    let series = file.rsplit_once('.').expect("numbered binlog").0;
    let never = format!("{series}.999999:4");
    let dir = tempfile::tempdir().expect("tempdir");
    let port = common::free_port();
    let config = format!(
        "[mysql]\nurl = {:?}\nserver_id = 4402\ninclude = [\"{pipeline}.*\"]\n\
         [etcd]\nendpoints = {:?}\nprefix = \"/bbtest\"\npipeline = \"{pipeline}\"\nlease_ttl_secs = 1\nwatchdog = false\n\
         [kafka]\nbrokers = {:?}\n[http]\nlisten = \"127.0.0.1:{port}\"\n",
        env.mysql_url, env.etcd_endpoints, env.kafka_brokers
    );
    // The same file RunningBridge::start writes below.
    let cfg_path = dir.path().join("bb.toml");
    std::fs::write(&cfg_path, &config).expect("write config");
    let cli = |args: &[&str]| common::ops::cli(&cfg_path, args);
    let set = cli(&["checkpoint", "set", &never, "--unchecked"]);
    assert!(
        set.status.success(),
        "{}",
        String::from_utf8_lossy(&set.stderr)
    );
    let none = cli(&["status", "--json"]);
    let doc: serde_json::Value = serde_json::from_slice(&none.stdout).expect("status JSON");
    assert!(doc["last_failure"].is_null(), "no failure yet: {doc}");

    let mut bridge = common::ops::RunningBridge::start(dir.path(), &config, port, &[]);
    let pid = bridge.child.pid();
    let mut failure = serde_json::Value::Null;
    wait_until(
        "status to show the failed leadership",
        Duration::from_secs(20),
        || {
            let out = cli(&["status", "--json"]);
            let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            failure = doc["last_failure"].clone();
            !failure.is_null()
        },
    );
    let error = failure["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(&format!("binlog {series}.999999"))
            && error.contains("is not on this server"),
        "{failure}"
    );
    assert_eq!(failure["identity"]["pid"].as_u64(), Some(u64::from(pid)));
    assert!(
        failure["epoch"].as_i64().is_some_and(|e| e > 0),
        "{failure}"
    );
    assert!(
        failure["retry_in_ms"].as_u64().is_some_and(|ms| ms > 0),
        "{failure}"
    );
    let text = cli(&["status"]);
    let text = String::from_utf8_lossy(&text.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("stepped down "))
        .unwrap_or_else(|| panic!("no failure line in:\n{text}"));
    assert!(
        line.contains(&format!("pid {pid}")) && line.contains("is not on this server"),
        "{line}"
    );
    bridge.child.kill();
    let _ = admin.disconnect().await;
}
