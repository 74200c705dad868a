//! `snapshot.mode = "when-needed"` with a real `binlog-bridge run`, a private
//! MariaDB (its binlogs are purged), the dev env's 3-member etcd and tansu
//! broker: a bridge snapshots and streams, stops cleanly, the server purges
//! the binlogs past its checkpoint while rows keep changing. Restarted
//! without `allow_resnapshot_on_purge` it reports the purge and streams
//! nothing; with it, it reads the table again (`op: r`) and streams from the
//! new snapshot's position: the topic, compacted by key, equals the table
//! plus the rows deleted while the binlog was lost (no event says so).

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::ops::{status, RunningBridge};
use common::PrivateMariaDb;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

fn config(db: &PrivateMariaDb, pipeline: &str, port: u16, allow: bool) -> String {
    let env = common::dev_env();
    format!(
        "[mysql]\nurl = {:?}\nserver_id = 5301\ninclude = [\"purge_db.*\"]\n\
         [etcd]\nendpoints = {:?}\nprefix = \"/bbtest-purge\"\npipeline = \"{pipeline}\"\nlease_ttl_secs = 2\ncheckpoint_interval_ms = 200\n\
         [kafka]\nbrokers = {:?}\ndelivery = \"idempotent\"\npartitions = 3\ntopic = \"{{pipeline}}.{{db}}.{{table}}\"\n\
         [http]\nlisten = \"127.0.0.1:{port}\"\n\
         [snapshot]\nmode = \"when-needed\"\nallow_resnapshot_on_purge = {allow}\nchunk_rows = 7\n",
        db.bridge_url(),
        env.etcd_endpoints,
        env.kafka_brokers,
    )
}

/// `id -> v` of the table.
fn table(db: &PrivateMariaDb) -> BTreeMap<i64, i64> {
    db.sql("SELECT id, v FROM purge_db.t")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (a, b) = l.split_once('\t').expect("two columns");
            (a.parse().expect("id"), b.parse().expect("v"))
        })
        .collect()
}

/// Every message of `topic` from the beginning: (key, op, after.v), until
/// `done` accepts them or `within` passes. Reads again with a new consumer
/// every 10 s (a fetch of the test broker has been seen not to answer).
fn read_topic(
    brokers: &str,
    topic: &str,
    within: Duration,
    done: impl Fn(&[(i64, String, Option<i64>)]) -> bool,
) -> Vec<(i64, String, Option<i64>)> {
    let start = Instant::now();
    loop {
        let left = within.saturating_sub(start.elapsed());
        let out = read_once(brokers, topic, left.min(Duration::from_secs(10)), &done);
        if done(&out) || start.elapsed() >= within {
            return out;
        }
    }
}

fn read_once(
    brokers: &str,
    topic: &str,
    within: Duration,
    done: &impl Fn(&[(i64, String, Option<i64>)]) -> bool,
) -> Vec<(i64, String, Option<i64>)> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("{topic}-reader"))
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10")
        .create()
        .expect("consumer");
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let parts = md.topics()[0].partitions().len() as i32;
    assert!(parts > 0, "{topic} exists");
    let mut tpl = TopicPartitionList::new();
    for p in 0..parts {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .expect("partition");
    }
    c.assign(&tpl).expect("assign");
    let start = Instant::now();
    let mut out = Vec::new();
    while start.elapsed() < within && !done(&out) {
        let Some(Ok(m)) = c.poll(Duration::from_millis(200)) else {
            continue;
        };
        let key: serde_json::Value =
            serde_json::from_slice(m.key().expect("keyed")).expect("JSON key");
        let id = key["id"].as_i64().expect("key id");
        match m.payload() {
            None => out.push((id, "tombstone".into(), None)),
            Some(p) => {
                let v: serde_json::Value = serde_json::from_slice(p).expect("JSON value");
                let op = v["op"].as_str().expect("op").to_string();
                out.push((id, op, v["after"]["v"].as_i64()));
            }
        }
    }
    out
}

/// The topic compacted by key: the last after image of each key.
fn compact(msgs: &[(i64, String, Option<i64>)]) -> BTreeMap<i64, i64> {
    let mut state = BTreeMap::new();
    for (id, op, v) in msgs {
        match (op.as_str(), v) {
            ("d" | "tombstone", _) => {
                state.remove(id);
            }
            (_, Some(v)) => {
                state.insert(*id, *v);
            }
            (_, None) => panic!("{op} message without after.v for {id}"),
        }
    }
    state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purged_checkpoint_is_an_error_unless_a_resnapshot_is_confirmed() {
    let env = common::dev_env();
    let db = PrivateMariaDb::start(common::free_port(), &[]);
    db.sql(
        "CREATE DATABASE purge_db;
         CREATE TABLE purge_db.t (id INT PRIMARY KEY, v INT NOT NULL);
         INSERT INTO purge_db.t SELECT seq, seq FROM (SELECT 1 seq UNION SELECT 2 UNION SELECT 3 UNION SELECT 4 UNION SELECT 5 UNION SELECT 6 UNION SELECT 7 UNION SELECT 8 UNION SELECT 9 UNION SELECT 10) s;
         INSERT INTO purge_db.t SELECT id + 10, id + 10 FROM purge_db.t;
         INSERT INTO purge_db.t SELECT id + 20, id + 20 FROM purge_db.t;",
    );
    let pipeline = common::unique("snap_purge");
    let topic = format!("{pipeline}.purge_db.t");
    let dir = tempfile::tempdir().expect("tempdir");

    // 1. Initial snapshot (40 rows), then streamed changes.
    let port = common::free_port();
    let mut bridge =
        RunningBridge::start(dir.path(), &config(&db, &pipeline, port, false), port, &[]);
    bridge.wait_streaming(Duration::from_secs(60));
    db.sql("UPDATE purge_db.t SET v = v + 100 WHERE id <= 5; DELETE FROM purge_db.t WHERE id = 40; INSERT INTO purge_db.t VALUES (41, 41)");
    let streamed = table(&db);
    let msgs = read_topic(&env.kafka_brokers, &topic, Duration::from_secs(60), |m| {
        compact(m) == streamed
    });
    assert_eq!(
        compact(&msgs),
        streamed,
        "before the purge: {msgs:?}\nbridge log:\n{}",
        bridge.log()
    );
    assert_eq!(msgs.iter().filter(|m| m.1 == "r").count(), 40, "{msgs:?}");
    bridge.child.terminate(Duration::from_secs(20));

    // 2. Changes the stopped bridge never streams, then the purge.
    db.sql("UPDATE purge_db.t SET v = v + 1000 WHERE id > 30; DELETE FROM purge_db.t WHERE id IN (1, 2); INSERT INTO purge_db.t VALUES (50, 50); FLUSH BINARY LOGS");
    let newest = db
        .sql("SHOW MASTER STATUS")
        .split('\t')
        .next()
        .expect("binlog file")
        .to_string();
    // The server keeps a file a dump thread still reads (the stopped
    // bridge's thread ends at its next heartbeat): purge until it is gone.
    let start = Instant::now();
    loop {
        db.sql(&format!("PURGE BINARY LOGS TO '{newest}'"));
        let logs = db.sql("SHOW BINARY LOGS");
        if logs.lines().next().is_some_and(|l| l.starts_with(&newest)) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "binlogs before {newest} purged within 30 s: {logs}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    let at_purge = table(&db);

    // 3. Without the confirmation: the purge is reported, nothing streams.
    let port = common::free_port();
    let bridge = RunningBridge::start(dir.path(), &config(&db, &pipeline, port, false), port, &[]);
    let start = Instant::now();
    while !bridge.log().contains("no longer on the server (purged)") {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the purge is reported within 60 s: {}",
            bridge.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = bridge.log();
    assert!(
        log.contains("snapshot.allow_resnapshot_on_purge = true"),
        "the error names the confirmation: {log}"
    );
    let s = status(port).expect("status");
    assert_ne!(s["streaming"], true, "{s}");
    drop(bridge);
    let n_before = read_topic(&env.kafka_brokers, &topic, Duration::from_secs(5), |_| {
        false
    })
    .len();
    assert_eq!(
        n_before,
        msgs.len(),
        "nothing was sent after the purge error"
    );

    // 4. Confirmed: a new snapshot of the table, then streaming from it.
    let port = common::free_port();
    let bridge = RunningBridge::start(dir.path(), &config(&db, &pipeline, port, true), port, &[]);
    bridge.wait_streaming(Duration::from_secs(60));
    let log = bridge.log();
    assert_eq!(
        log.matches("checkpointed binlog position is purged")
            .count(),
        1,
        "one warning: {log}"
    );
    db.sql("UPDATE purge_db.t SET v = v + 7 WHERE id = 3; DELETE FROM purge_db.t WHERE id = 4; INSERT INTO purge_db.t VALUES (60, 60)");
    // The topic equals the table, except for the rows deleted while the
    // binlog was lost (documented): no binlog event says they were deleted,
    // and a snapshot only reads rows that exist.
    let mut want = table(&db);
    let gap_deleted: BTreeMap<i64, i64> = streamed
        .iter()
        .filter(|(id, _)| !at_purge.contains_key(id))
        .map(|(id, v)| (*id, *v))
        .collect();
    assert_eq!(gap_deleted.keys().copied().collect::<Vec<_>>(), [1, 2]);
    want.extend(gap_deleted);
    let all = read_topic(&env.kafka_brokers, &topic, Duration::from_secs(60), |m| {
        compact(m) == want
    });
    assert_eq!(
        compact(&all),
        want,
        "after the re-snapshot: {all:?}\nbridge log:\n{}",
        bridge.log()
    );
    // Snapshot reads: the 40 first rows once, plus every row the table held
    // at the re-snapshot once more.
    let mut reads: BTreeMap<i64, usize> = BTreeMap::new();
    for m in all.iter().filter(|m| m.1 == "r") {
        *reads.entry(m.0).or_default() += 1;
    }
    let mut expected: BTreeMap<i64, usize> = (1..=40).map(|id| (id, 1)).collect();
    for id in at_purge.keys() {
        *expected.entry(*id).or_default() += 1;
    }
    assert_eq!(reads, expected, "snapshot reads per key: {all:?}");
    let checkpoint = status(port).expect("status");
    assert_eq!(checkpoint["streaming"], true, "{checkpoint}");
    drop(bridge);
}
