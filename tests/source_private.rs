//! Tests that need a server of their own (restart, purge, bad settings,
//! compressed binlog): each starts a private MariaDB in a temp dir on its own
//! port and stops it at the end.

mod common;

use std::time::Duration;

use binlog_bridge::event::{EventKind, Value};
use binlog_bridge::source::{BinlogSource, SourceError, SourceOptions, StartFrom};
use common::PrivateMariaDb;

fn ids(evs: &[binlog_bridge::event::ChangeEvent]) -> Vec<i64> {
    evs.iter()
        .filter_map(|e| match &e.kind {
            EventKind::Row(r) => match r.after.as_ref().map(|v| &v[0]) {
                Some(Value::Int(i)) => Some(*i),
                other => panic!("id is {other:?}"),
            },
            _ => None,
        })
        .collect()
}

/// Start a source at `from` and return the error it ends in: at the start,
/// or on the first read (the server refuses a dump when it begins it).
async fn first_error(cfg: &binlog_bridge::config::MysqlConfig, from: StartFrom) -> SourceError {
    let r = async {
        let mut src = BinlogSource::start(cfg, SourceOptions::default(), from).await?;
        src.next_event().await
    };
    tokio::time::timeout(Duration::from_secs(20), r)
        .await
        .expect("answer in time")
        .expect_err("the source refuses this start")
}

fn position(db: &PrivateMariaDb) -> binlog_bridge::event::Position {
    let out = db.sql("SHOW MASTER STATUS");
    let mut f = out.split_whitespace();
    let file = f.next().unwrap().to_string();
    let pos: u64 = f.next().unwrap().parse().unwrap();
    binlog_bridge::event::Position::new(file, pos)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_crash_and_restart_mid_stream_loses_and_repeats_nothing() {
    let mut db = PrivateMariaDb::start(common::free_port(), &[]);
    db.sql("CREATE DATABASE src_restart; CREATE TABLE src_restart.t (id INT PRIMARY KEY, v TEXT)");
    let start = position(&db);
    let inserts = |from: i64, to: i64| {
        (from..=to)
            .map(|i| format!("INSERT INTO src_restart.t VALUES ({i}, REPEAT('x', {i}));"))
            .collect::<String>()
    };
    db.sql(&inserts(1, 100));
    let mut src = common::start(
        &db.bridge_url(),
        4201,
        &["src_restart.*"],
        StartFrom::Position(start),
    )
    .await;
    let mut evs = common::collect_until(&mut src, Duration::from_secs(20), |e| {
        common::rows_of(e) == 50
    })
    .await;
    db.kill();
    db.run();
    db.sql(&inserts(101, 200));
    evs.extend(
        common::collect_until(&mut src, Duration::from_secs(60), |e| {
            common::rows_of(e) == 150
        })
        .await,
    );
    assert_eq!(
        ids(&evs),
        (1..=200).collect::<Vec<_>>(),
        "every row exactly once, in order"
    );
    assert!(src.reconnects >= 1, "the source reconnected");
    drop(src);
    db.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_server_is_detected_by_read_timeout_and_stream_resumes() {
    let mut db = PrivateMariaDb::start(common::free_port(), &[]);
    db.sql("CREATE DATABASE src_hung; CREATE TABLE src_hung.t (id INT PRIMARY KEY)");
    let start = position(&db);
    db.sql(
        &(1..=10)
            .map(|i| format!("INSERT INTO src_hung.t VALUES ({i});"))
            .collect::<String>(),
    );
    let mut cfg = common::mysql_config(&db.bridge_url(), 4206, &["src_hung.*"]);
    cfg.read_timeout_secs = 2;
    let opts = SourceOptions {
        connect_timeout: Duration::from_secs(1),
        min_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(300),
        ..SourceOptions::default()
    };
    let mut src = BinlogSource::start(&cfg, opts, StartFrom::Position(start))
        .await
        .unwrap();
    let mut evs = common::collect_until(&mut src, Duration::from_secs(20), |e| {
        common::rows_of(e) == 10
    })
    .await;
    db.signal_pause(true);
    let reader = tokio::spawn(async move {
        let more = common::collect_until(&mut src, Duration::from_secs(60), |e| {
            common::rows_of(e) == 10
        })
        .await;
        (src, more)
    });
    tokio::time::sleep(Duration::from_secs(5)).await;
    db.signal_pause(false);
    db.sql(
        &(11..=20)
            .map(|i| format!("INSERT INTO src_hung.t VALUES ({i});"))
            .collect::<String>(),
    );
    let (src, more) = reader.await.unwrap();
    evs.extend(more);
    assert_eq!(ids(&evs), (1..=20).collect::<Vec<_>>());
    assert!(
        src.reconnects >= 1,
        "the silent connection was given up and reopened"
    );
    drop(src);
    db.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_keep_an_idle_stream_alive() {
    let mut db = PrivateMariaDb::start(common::free_port(), &[]);
    let start = position(&db);
    let mut cfg = common::mysql_config(&db.bridge_url(), 4207, &[]);
    cfg.read_timeout_secs = 2;
    let mut src = BinlogSource::start(&cfg, SourceOptions::default(), StartFrom::Position(start))
        .await
        .unwrap();
    // Silent for 3x the read timeout: only heartbeats (every 1 s) keep it open.
    let idle = tokio::time::timeout(Duration::from_secs(6), src.next_event()).await;
    assert!(idle.is_err(), "no change happened: {idle:?}");
    db.sql("CREATE DATABASE src_idle; CREATE TABLE src_idle.t (id INT PRIMARY KEY); INSERT INTO src_idle.t VALUES (7)");
    let evs = common::collect_until(&mut src, Duration::from_secs(10), |e| {
        common::rows_of(e) == 1
    })
    .await;
    assert_eq!(ids(&evs), vec![7]);
    assert_eq!(
        src.reconnects, 0,
        "heartbeats kept the idle connection alive"
    );
    drop(src);
    db.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_gone_for_good_is_reported_after_retry_for() {
    let mut db = PrivateMariaDb::start(common::free_port(), &[]);
    let cfg = common::mysql_config(&db.bridge_url(), 4208, &[]);
    let opts = SourceOptions {
        connect_timeout: Duration::from_secs(1),
        min_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(200),
        retry_for: Some(Duration::from_secs(2)),
        ..SourceOptions::default()
    };
    let mut src = BinlogSource::start(&cfg, opts, StartFrom::Latest)
        .await
        .unwrap();
    db.kill();
    let t = std::time::Instant::now();
    let e = tokio::time::timeout(Duration::from_secs(20), src.next_event())
        .await
        .expect("gives up in time")
        .expect_err("no server, no event");
    assert!(e.is_transient(), "{e:?}");
    assert!(
        t.elapsed() >= Duration::from_secs(2),
        "retried for retry_for first"
    );
    assert!(src.reconnects == 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purged_position_and_gtid_are_definite_errors() {
    let mut db = PrivateMariaDb::start(common::free_port(), &[]);
    db.sql("CREATE DATABASE src_purge; CREATE TABLE src_purge.t (id INT PRIMARY KEY)");
    let old = position(&db);
    db.sql("INSERT INTO src_purge.t VALUES (1); FLUSH BINARY LOGS; INSERT INTO src_purge.t VALUES (2); FLUSH BINARY LOGS;");
    let newest = position(&db);
    db.sql(&format!("PURGE BINARY LOGS TO '{}'", newest.file));

    let cfg = common::mysql_config(&db.bridge_url(), 4202, &[]);
    let e = BinlogSource::start(
        &cfg,
        SourceOptions::default(),
        StartFrom::Position(old.clone()),
    )
    .await
    .err()
    .expect("purged file position fails");
    assert!(matches!(e, SourceError::Purged { .. }), "{e:?}");
    assert!(e.is_definite());
    let msg = e.to_string();
    assert!(
        msg.contains(&*old.file) && msg.contains("re-snapshot"),
        "{msg}"
    );

    // A GTID state older than the oldest binlog: the server refuses the dump.
    let e = first_error(&cfg, StartFrom::Gtid("0-1-1".into())).await;
    assert!(matches!(e, SourceError::Purged { .. }), "{e:?}");
    assert!(e.to_string().contains("re-snapshot"), "{e}");

    // `binlog-bridge check` reports the same, before streaming.
    let mut conn = common::root(&db.bridge_url()).await;
    let current = db.sql("SELECT @@gtid_binlog_pos").trim().to_string();
    for (start, ok) in [
        (old.to_string(), false),
        ("gtid:0-1-1".to_string(), false),
        (newest.to_string(), true),
        (format!("gtid:{current}"), true),
        ("earliest".to_string(), true),
    ] {
        let r = binlog_bridge::source::checks::start_position(&mut conn, &start).await;
        assert_eq!(r.ok, ok, "{start}: {}", r.detail);
        if !ok {
            assert!(r.detail.contains("re-snapshot"), "{}", r.detail);
        }
    }
    // An offset inside the first event, and one past the file's end: check
    // fails both, and streaming from there anyway gets the server's answer
    // ("bogus data in log event", "impossible position") as a definite error
    // that says what to start from instead.
    for offset in [5, newest.offset + 1000] {
        let start = format!("{}:{offset}", newest.file);
        let r = binlog_bridge::source::checks::start_position(&mut conn, &start).await;
        assert!(!r.ok, "{start}: {}", r.detail);
        assert!(
            r.detail.contains(&format!("no event at offset {offset}"))
                && r.detail.contains("SHOW MASTER STATUS"),
            "{start}: {}",
            r.detail
        );
        let from = binlog_bridge::event::Position::new(newest.file.clone(), offset);
        let e = first_error(&cfg, StartFrom::Position(from)).await;
        assert!(e.is_definite(), "{e:?}");
        let msg = e.to_string();
        assert!(
            msg.contains("error 1236")
                && msg.contains(&start)
                && msg.contains("SHOW MASTER STATUS"),
            "{msg}"
        );
    }

    // `checkpoint set` asks the server the same before writing to etcd: a
    // purged file or an offset where no event starts is refused (exit 2,
    // nothing written); an unreachable server is refused too (exit 1), unless
    // `--unchecked`.
    let env = common::dev_env();
    let dir = tempfile::tempdir().expect("tempdir");
    let pipeline = common::unique("cpcheck");
    let config = |url: &str| {
        let path = dir.path().join(format!("{}.toml", common::unique("bb")));
        std::fs::write(
            &path,
            format!(
                "[mysql]\nurl = {url:?}\nserver_id = 4203\n[etcd]\nendpoints = {:?}\npipeline = {pipeline:?}\n\
                 [kafka]\nbrokers = {:?}\n",
                env.etcd_endpoints, env.kafka_brokers
            ),
        )
        .expect("write config");
        path
    };
    let good = config(&db.bridge_url());
    let cli = |cfg: &std::path::Path, args: &[&str]| {
        let out = common::ops::cli(cfg, args);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text)
    };
    let shown = |want: Option<&str>| {
        let (code, text) = cli(&good, &["checkpoint", "show", "--json"]);
        match want {
            None => assert_eq!(code, Some(1), "no checkpoint yet: {text}"),
            Some(p) => {
                assert_eq!(code, Some(0), "{text}");
                let doc: serde_json::Value = serde_json::from_str(&text).expect("checkpoint JSON");
                let at = format!(
                    "{}:{}",
                    doc["position"]["file"].as_str().expect("file"),
                    doc["position"]["offset"].as_u64().expect("offset")
                );
                assert_eq!(at, p, "{text}");
            }
        }
    };
    let inside = format!("{}:5", newest.file);
    let series = newest.file.rsplit_once('.').expect("numbered binlog").0;
    for (pos, words) in [
        (old.to_string(), "is no longer on the server"),
        (inside.clone(), "no event at offset 5"),
        (format!("{series}.999999:4"), "the server has no binlog"),
    ] {
        let (code, text) = cli(&good, &["checkpoint", "set", &pos]);
        assert_eq!(code, Some(2), "{pos}: {text}");
        assert!(
            text.contains("checkpoint not changed")
                && text.contains(words)
                && text.contains("--unchecked"),
            "{pos}: {text}"
        );
    }
    let (code, text) = cli(
        &good,
        &["checkpoint", "set", &newest.to_string(), "--gtid", "0-1"],
    );
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains("--gtid \"0-1\"") && text.contains("MariaDB GTID list"),
        "{text}"
    );
    shown(None);
    let (code, text) = cli(&good, &["checkpoint", "set", &newest.to_string()]);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains(&format!("checked: {newest} is on the server")),
        "{text}"
    );
    shown(Some(&newest.to_string()));
    let down = config(&format!(
        "mysql://bridge:bridge@127.0.0.1:{}",
        common::free_port()
    ));
    let (code, text) = cli(&down, &["checkpoint", "set", &inside]);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("cannot ask the MySQL server") && text.contains("--unchecked"),
        "{text}"
    );
    shown(Some(&newest.to_string()));
    let (code, text) = cli(&down, &["checkpoint", "set", &inside, "--unchecked"]);
    assert_eq!(code, Some(0), "{text}");
    shown(Some(&inside));

    // Streaming from a file the server never had is refused as such, not
    // as a purge (which `allow_resnapshot_on_purge` would re-snapshot over).
    let never = binlog_bridge::event::Position::new(format!("{series}.999999"), 4);
    let e = BinlogSource::start(&cfg, SourceOptions::default(), StartFrom::Position(never))
        .await
        .err()
        .expect("a file the server never had fails");
    assert!(matches!(e, SourceError::Refused(_)), "{e:?}");
    assert!(e.is_definite());
    let msg = e.to_string();
    assert!(
        msg.contains("is not one it purged") && msg.contains("mysql.url"),
        "{msg}"
    );
    db.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_startup_check_fails_with_its_fix() {
    let mut db = PrivateMariaDb::start(
        common::free_port(),
        &[
            "binlog_format=STATEMENT",
            "binlog_row_image=MINIMAL",
            "binlog_row_metadata=MINIMAL",
        ],
    );
    db.sql("CREATE USER 'weak'@'%' IDENTIFIED BY 'weak'; GRANT SELECT ON *.* TO 'weak'@'%';");
    let cfg = common::mysql_config(&db.bridge_url(), 4203, &[]);
    let e = BinlogSource::start(&cfg, SourceOptions::default(), StartFrom::Latest)
        .await
        .err()
        .expect("bad settings fail");
    let SourceError::Settings(msgs) = &e else {
        panic!("{e:?}")
    };
    let all = msgs.join("\n");
    for want in [
        "binlog_format = STATEMENT, need ROW",
        "binlog_row_image = MINIMAL, need FULL",
        "binlog_row_metadata = MINIMAL, need FULL",
    ] {
        assert!(all.contains(want), "missing `{want}` in:\n{all}");
    }
    assert_eq!(msgs.len(), 3, "{all}");

    let weak_url = format!("mysql://weak:weak@127.0.0.1:{}", db.port);
    let weak = common::mysql_config(&weak_url, 4203, &[]);
    // (Settings checks off: this server's settings are wrong on purpose.)
    let no_settings = SourceOptions {
        check_settings: false,
        ..SourceOptions::default()
    };
    let e = BinlogSource::start(&weak, no_settings, StartFrom::Latest)
        .await
        .err()
        .expect("missing privileges fail");
    assert!(matches!(e, SourceError::Settings(_)), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("GRANT SELECT, REPLICATION SLAVE, BINLOG MONITOR ON *.*"),
        "{msg}"
    );
    // BINLOG MONITOR without REPLICATION SLAVE: the dump request itself is refused.
    db.sql("CREATE USER 'noslave'@'%' IDENTIFIED BY 'n'; GRANT SELECT, BINLOG MONITOR ON *.* TO 'noslave'@'%';");
    let noslave = common::mysql_config(
        &format!("mysql://noslave:n@127.0.0.1:{}", db.port),
        4203,
        &[],
    );
    let no_settings = SourceOptions {
        check_settings: false,
        ..SourceOptions::default()
    };
    let r = async {
        let mut src = BinlogSource::start(&noslave, no_settings, StartFrom::Latest).await?;
        src.next_event().await
    };
    let e = tokio::time::timeout(Duration::from_secs(20), r)
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(e, SourceError::Settings(_)), "{e:?}");
    assert!(e.to_string().contains("REPLICATION SLAVE"), "{e}");
    // `binlog-bridge check` names what is missing.
    let mut conn = common::root(&weak_url).await;
    let r = binlog_bridge::source::checks::privileges(&mut conn).await;
    assert!(!r[0].ok);
    assert!(
        r[0].detail
            .contains("missing REPLICATION SLAVE, BINLOG MONITOR"),
        "{}",
        r[0].detail
    );
    db.stop();

    let mut nolog = PrivateMariaDb::start(common::free_port(), &["skip-log-bin"]);
    let cfg = common::mysql_config(&nolog.bridge_url(), 4204, &[]);
    let e = BinlogSource::start(&cfg, SourceOptions::default(), StartFrom::Latest)
        .await
        .err()
        .expect("binlog off fails");
    assert!(e.to_string().contains("log_bin = OFF, need ON"), "{e}");
    nolog.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_binlog_events_decode() {
    let mut db = PrivateMariaDb::start(
        common::free_port(),
        &["log_bin_compress=ON", "log_bin_compress_min_len=10"],
    );
    let start = position(&db);
    db.sql(
        "CREATE DATABASE src_compress; CREATE TABLE src_compress.t (id INT PRIMARY KEY, v TEXT);
         INSERT INTO src_compress.t VALUES (1, REPEAT('abc', 1000)), (2, 'short');
         UPDATE src_compress.t SET v = CONCAT(v, '!') WHERE id = 1;
         DELETE FROM src_compress.t WHERE id = 2;",
    );
    let kinds = db.sql(&format!("SHOW BINLOG EVENTS IN '{}'", start.file));
    assert!(
        kinds.contains("Write_rows_compressed_v1"),
        "server wrote compressed rows:\n{kinds}"
    );
    assert!(
        kinds.contains("Query_compressed"),
        "server wrote compressed queries:\n{kinds}"
    );
    let mut src = common::start(
        &db.bridge_url(),
        4205,
        &["src_compress.*"],
        StartFrom::Position(start),
    )
    .await;
    let evs = common::collect_until(&mut src, Duration::from_secs(20), |e| {
        common::rows_of(e) == 4
    })
    .await;
    let ddl: Vec<&str> = evs
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Schema(s) => Some(s.statement.as_str()),
            _ => None,
        })
        .collect();
    assert!(
        ddl.iter()
            .any(|s| s.contains("CREATE TABLE src_compress.t")),
        "{ddl:?}"
    );
    let rows: Vec<_> = evs
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Row(r) => Some(r),
            _ => None,
        })
        .collect();
    let text = |v: &Option<Vec<Value>>| match v.as_ref().map(|v| &v[1]) {
        Some(Value::String(s)) => s.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(text(&rows[0].after), "abc".repeat(1000));
    assert_eq!(text(&rows[1].after), "short");
    assert_eq!(text(&rows[2].before), "abc".repeat(1000));
    assert_eq!(text(&rows[2].after), format!("{}!", "abc".repeat(1000)));
    assert_eq!(text(&rows[3].before), "short");
    drop(src);
    db.stop();
}
