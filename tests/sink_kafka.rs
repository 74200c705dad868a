//! The sink against the real broker (dev-env tansu on 127.0.0.1:9092, or
//! `BB_TEST_BROKERS`): round trip per format read back with plain
//! serde_json, key partitioning and per-key order, topic creation, the
//! acknowledged position, and errors a user can cause. A broker that cannot
//! be reached fails these tests; start it with
//! `bash scripts/dev-env.sh start broker`.

mod sink_fixture;

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use binlog_bridge::config::{Format, KafkaConfig};
use binlog_bridge::event::{ChangeEvent, Op, Value};
use binlog_bridge::sink::{KafkaSink, SinkError, TableFilter};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::Value as J;
use sink_fixture::*;

fn unique(prefix: &str) -> String {
    let n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{}-{n}", std::process::id())
}

fn config(prefix: &str, format: Format) -> KafkaConfig {
    KafkaConfig {
        brokers: brokers(),
        topic: format!("{prefix}.{{db}}.{{table}}"),
        schema_topic: format!("{prefix}.schema"),
        format,
        partitions: 3,
        linger_ms: 1,
        ..KafkaConfig::default()
    }
}

pub struct Got {
    pub partition: i32,
    pub key: Option<String>,
    pub value: J,
    pub headers: HashMap<String, String>,
}

/// Read `want` messages of `topic` from the beginning (all partitions), in
/// partition order then offset order.
pub fn consume(topic: &str, want: usize) -> Vec<Got> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", unique("sinktest-reader"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let parts = md.topics()[0].partitions().len();
    let mut tpl = TopicPartitionList::new();
    for p in 0..parts as i32 {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut out = vec![];
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while out.len() < want && std::time::Instant::now() < deadline {
        if let Some(m) = c.poll(Duration::from_millis(200)) {
            let m = m.unwrap();
            let mut headers = HashMap::new();
            if let Some(h) = m.headers() {
                for h in h.iter() {
                    headers.insert(
                        h.key.to_string(),
                        String::from_utf8(h.value.unwrap_or_default().to_vec()).unwrap(),
                    );
                }
            }
            out.push(Got {
                partition: m.partition(),
                key: m.key().map(|k| String::from_utf8(k.to_vec()).unwrap()),
                value: serde_json::from_slice(m.payload().unwrap()).unwrap(),
                headers,
            });
        }
    }
    // Nothing more than expected arrives.
    if let Some(extra) = c.poll(Duration::from_millis(500)) {
        panic!("unexpected extra message: {:?}", extra.map(|m| m.offset()));
    }
    assert_eq!(out.len(), want, "messages read from {topic}");
    out
}

/// insert id 1, update id 1 (commit), delete id 1 (commit), plus a DDL.
fn script() -> Vec<ChangeEvent> {
    let t = all_types_table("shop", "items");
    // As the source does: rows carry no XID, the Commit event does.
    let a = std::sync::Arc::new(binlog_bridge::event::TxnInfo {
        xid: None,
        ..(*txn("0-1-10", 1_700_000_000_000, 10)).clone()
    });
    let a_commit = txn("0-1-10", 1_700_000_000_000, 10);
    let b = txn("0-1-11", 1_700_000_001_000, 11);
    let d = txn("0-1-12", 1_700_000_002_000, 0);
    vec![
        row_event(
            &t,
            Op::Insert,
            None,
            Some(all_types_row(1, false)),
            &a,
            pos("binlog.000001", 100, 0),
        ),
        row_event(
            &t,
            Op::Update,
            Some(all_types_row(1, false)),
            Some(all_types_row(1, true)),
            &a,
            pos("binlog.000001", 100, 1),
        ),
        commit_event(&a_commit, pos("binlog.000001", 900, 0)),
        ddl_event(
            "shop",
            "ALTER TABLE items ADD COLUMN z INT",
            &d,
            pos("binlog.000001", 900, 0),
        ),
        row_event(
            &t,
            Op::Delete,
            Some(all_types_row(1, true)),
            None,
            &b,
            pos("binlog.000001", 1500, 0),
        ),
        commit_event(&b, pos("binlog.000001", 2000, 0)),
    ]
}

async fn run_script(format: Format) -> (String, Vec<Got>, Vec<Got>) {
    let prefix = unique("sinktest-rt");
    let cfg = config(&prefix, format);
    let mut sink = KafkaSink::new(&cfg, "demo", 7).await.unwrap();
    for ev in script() {
        sink.send(&ev).await.unwrap();
    }
    let acked = sink.flush(Duration::from_secs(30)).await.unwrap();
    assert_eq!(
        acked,
        Some(pos("binlog.000001", 2000, 0)),
        "resume after the last commit"
    );
    let rows = consume(&format!("{prefix}.shop.items"), 3);
    let ddl = consume(&format!("{prefix}.schema"), 1);
    (prefix, rows, ddl)
}

fn check_headers(rows: &[Got]) {
    let positions: Vec<&str> = rows
        .iter()
        .map(|g| g.headers["bb.position"].as_str())
        .collect();
    assert_eq!(
        positions,
        [
            "binlog.000001:100",
            "binlog.000001:100+1",
            "binlog.000001:1500"
        ]
    );
    for g in rows {
        assert_eq!(g.headers["bb.pipeline"], "demo");
        assert_eq!(g.headers["bb.epoch"], "7");
        assert!(g.key.is_some(), "row messages are keyed");
    }
    // All changes of id 1 share one partition.
    assert!(rows.iter().all(|g| g.partition == rows[0].partition));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debezium_round_trip_through_the_broker() {
    let (_, rows, ddl) = run_script(Format::Debezium).await;
    check_headers(&rows);
    assert_eq!(rows[0].key.as_deref(), Some(r#"{"id":1}"#));
    let ops: Vec<&str> = rows
        .iter()
        .map(|g| g.value["op"].as_str().unwrap())
        .collect();
    assert_eq!(ops, ["c", "u", "d"]);
    assert!(rows[0].value["before"].is_null());
    assert_eq!(rows[0].value["after"]["vc"], "Grüße, \"world\"\n");
    assert_eq!(rows[1].value["before"]["dec"], "-1234.5600");
    assert_eq!(rows[1].value["after"]["dec"], "1.0000");
    assert_eq!(rows[2].value["before"]["id"], 1);
    assert!(rows[2].value["after"].is_null());
    assert_eq!(rows[0].value["source"]["table"], "items");
    assert_eq!(ddl[0].value["ddl"], "ALTER TABLE items ADD COLUMN z INT");
    assert_eq!(ddl[0].key.as_deref(), Some(r#"{"databaseName":"shop"}"#));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canal_round_trip_through_the_broker() {
    let (_, rows, ddl) = run_script(Format::Canal).await;
    check_headers(&rows);
    assert_eq!(rows[0].key.as_deref(), Some(r#"{"id":"1"}"#));
    let types: Vec<&str> = rows
        .iter()
        .map(|g| g.value["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["INSERT", "UPDATE", "DELETE"]);
    assert_eq!(rows[1].value["data"][0]["n"], "7");
    let old = rows[1].value["old"][0].as_object().unwrap();
    let mut changed: Vec<&str> = old.keys().map(String::as_str).collect();
    changed.sort();
    assert_eq!(changed, ["dec", "n", "vc"]);
    assert_eq!(ddl[0].value["isDdl"], true);
    assert_eq!(ddl[0].value["type"], "ALTER");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maxwell_round_trip_through_the_broker() {
    let (_, rows, ddl) = run_script(Format::Maxwell).await;
    check_headers(&rows);
    let types: Vec<&str> = rows
        .iter()
        .map(|g| g.value["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["insert", "update", "delete"]);
    // commit:true exactly on the last row of each transaction.
    let commits: Vec<bool> = rows.iter().map(|g| g.value["commit"] == true).collect();
    assert_eq!(commits, [false, true, true]);
    assert_eq!(rows[0].value["xoffset"], 0);
    assert!(
        rows[0].value.get("xid").is_none(),
        "XID unknown before the commit"
    );
    assert_eq!(rows[1].value["xid"], 10, "the commit row carries the XID");
    assert_eq!(rows[2].value["xid"], 11);
    assert_eq!(rows[1].value["old"]["vc"], "Grüße, \"world\"\n");
    assert_eq!(rows[2].value["data"]["id"], 1);
    assert_eq!(ddl[0].value["type"], "table-alter");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_land_in_one_partition_in_order_and_topic_has_configured_partitions() {
    let prefix = unique("sinktest-order");
    let mut cfg = config(&prefix, Format::Debezium);
    cfg.partitions = 4;
    let t = all_types_table("shop", "counters");
    let mut sink = KafkaSink::new(&cfg, "demo", 1).await.unwrap();
    let keys = 20;
    let rounds = 10;
    let mut n = 0;
    for round in 0..rounds {
        let tx = txn("0-1-1", 1_700_000_000_000, round as u64);
        for key in 0..keys {
            let mut before = all_types_row(key, false);
            let mut after = all_types_row(key, false);
            before[31] = Value::Int(round - 1);
            after[31] = Value::Int(round);
            let (op, before) = if round == 0 {
                (Op::Insert, None)
            } else {
                (Op::Update, Some(before))
            };
            let ev = row_event(
                &t,
                op,
                before,
                Some(after),
                &tx,
                pos("binlog.000002", 4 + round as u64 * 1000, key as u64),
            );
            sink.send(&ev).await.unwrap();
            n += 1;
        }
    }
    sink.flush(Duration::from_secs(30)).await.unwrap();
    let topic = format!("{prefix}.shop.counters");
    assert_eq!(
        sink.producer().partition_count(&topic).await.unwrap(),
        Some(4)
    );
    let got = consume(&topic, n);
    let mut by_key: HashMap<String, Vec<(i32, i64)>> = HashMap::new();
    for g in &got {
        let id = g.value["after"]["id"].as_i64().unwrap();
        assert_eq!(g.key.as_deref(), Some(format!(r#"{{"id":{id}}}"#).as_str()));
        by_key
            .entry(g.key.clone().unwrap())
            .or_default()
            .push((g.partition, g.value["after"]["n"].as_i64().unwrap()));
    }
    assert_eq!(by_key.len(), keys as usize);
    let mut used = std::collections::HashSet::new();
    for (key, seq) in by_key {
        assert!(
            seq.iter().all(|(p, _)| *p == seq[0].0),
            "{key} spread over partitions"
        );
        used.insert(seq[0].0);
        let order: Vec<i64> = seq.iter().map(|(_, n)| *n).collect();
        assert_eq!(
            order,
            (0..rounds).collect::<Vec<i64>>(),
            "{key} out of order"
        );
    }
    assert!(
        used.len() > 1,
        "20 keys should use more than one of 4 partitions"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_change_is_sent_as_delete_of_old_key_then_insert_of_new_key() {
    let prefix = unique("sinktest-rekey");
    let cfg = config(&prefix, Format::Debezium);
    let t = all_types_table("shop", "rekey");
    let tx = txn("0-1-1", 1_700_000_000_000, 1);
    let mut sink = KafkaSink::new(&cfg, "demo", 1).await.unwrap();
    let ev = row_event(
        &t,
        Op::Update,
        Some(all_types_row(1, false)),
        Some(all_types_row(2, false)),
        &tx,
        binlog_bridge::event::Position {
            gtid: Some("0-1-5".into()),
            ..pos("binlog.000003", 4, 0)
        },
    );
    sink.send(&ev).await.unwrap();
    assert_eq!(
        sink.flush(Duration::from_secs(30)).await.unwrap(),
        Some(binlog_bridge::event::Position {
            gtid: Some("0-1-5".into()),
            ..pos("binlog.000003", 4, 1)
        })
    );
    let mut got = consume(&format!("{prefix}.shop.rekey"), 2);
    got.sort_by_key(|g| g.value["op"].as_str().unwrap() == "c");
    assert_eq!(got[0].value["op"], "d");
    assert_eq!(got[0].key.as_deref(), Some(r#"{"id":1}"#));
    assert_eq!(got[1].value["op"], "c");
    assert_eq!(got[1].key.as_deref(), Some(r#"{"id":2}"#));
    for g in &got {
        assert_eq!(g.headers["bb.position"], "binlog.000003:4");
        assert_eq!(g.headers["bb.gtid-state"], "0-1-5");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn excluded_tables_send_nothing_but_still_advance_the_position() {
    let prefix = unique("sinktest-filter");
    let cfg = config(&prefix, Format::Canal);
    let kept = all_types_table("shop", "kept");
    let skipped = all_types_table("shop", "tmp_x");
    let tx = txn("0-1-1", 1_700_000_000_000, 1);
    let mut sink = KafkaSink::new(&cfg, "demo", 1)
        .await
        .unwrap()
        .with_filter(TableFilter::new(&["shop.*".into()], &["shop.tmp_*".into()]));
    sink.send(&row_event(
        &kept,
        Op::Insert,
        None,
        Some(all_types_row(1, false)),
        &tx,
        pos("binlog.000004", 4, 0),
    ))
    .await
    .unwrap();
    sink.send(&row_event(
        &skipped,
        Op::Insert,
        None,
        Some(all_types_row(1, false)),
        &tx,
        pos("binlog.000004", 4, 1),
    ))
    .await
    .unwrap();
    let acked = sink.flush(Duration::from_secs(30)).await.unwrap();
    assert_eq!(acked, Some(pos("binlog.000004", 4, 2)));
    assert_eq!(consume(&format!("{prefix}.shop.kept"), 1).len(), 1);
    assert_eq!(
        sink.producer()
            .partition_count(&format!("{prefix}.shop.tmp_x"))
            .await
            .unwrap(),
        None
    );
    // Schema changes follow the same filter: one of an excluded table or
    // database is not sent, and the position still moves past it.
    for (i, (db, sql)) in [
        ("shop", "ALTER TABLE tmp_x ADD COLUMN z INT"),
        ("audit", "CREATE TABLE logs (id INT PRIMARY KEY)"),
        ("audit", "CREATE DATABASE audit"),
        ("shop", "ALTER TABLE kept ADD COLUMN z INT"),
    ]
    .into_iter()
    .enumerate()
    {
        sink.send(&ddl_event(
            db,
            sql,
            &tx,
            pos("binlog.000004", 100 + i as u64, 0),
        ))
        .await
        .unwrap();
    }
    let acked = sink.flush(Duration::from_secs(30)).await.unwrap();
    assert_eq!(acked, Some(pos("binlog.000004", 103, 1)));
    let ddl = consume(&format!("{prefix}.schema"), 1);
    assert!(
        ddl[0].value.to_string().contains("ALTER TABLE kept"),
        "{:?}",
        ddl[0].value
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_topic_with_creation_off_names_the_topic() {
    let prefix = unique("sinktest-nocreate");
    let mut cfg = config(&prefix, Format::Debezium);
    cfg.schema_topic = format!("{prefix}.{{db}}.schema");
    cfg.create_topics = false;
    let t = all_types_table("shop", "absent");
    let tx = txn("0-1-1", 1_700_000_000_000, 1);
    let mut sink = KafkaSink::new(&cfg, "demo", 1).await.unwrap();
    let e = sink
        .send(&row_event(
            &t,
            Op::Insert,
            None,
            Some(all_types_row(1, false)),
            &tx,
            pos("binlog.000005", 4, 0),
        ))
        .await
        .unwrap_err();
    assert!(matches!(e, SinkError::TopicMissing { .. }), "{e}");
    let text = e.to_string();
    assert!(
        text.contains(&format!("{prefix}.shop.absent")) && text.contains("kafka.create_topics"),
        "{text}"
    );
    assert_eq!(sink.acked_position(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_broker_is_a_clear_error() {
    let mut cfg = config("x", Format::Debezium);
    cfg.brokers = "127.0.0.1:1".into();
    let e = KafkaSink::new(&cfg, "demo", 1)
        .await
        .err()
        .expect("must fail");
    let text = e.to_string();
    assert!(text.contains("cannot reach Kafka at 127.0.0.1:1"), "{text}");
}

/// Insert of row `i` of `t`, as row `i` of the transaction at `file`:4.
fn insert_at(
    t: &std::sync::Arc<binlog_bridge::event::TableSchema>,
    tx: &std::sync::Arc<binlog_bridge::event::TxnInfo>,
    file: &str,
    i: i64,
) -> ChangeEvent {
    row_event(
        t,
        Op::Insert,
        None,
        Some(all_types_row(i, false)),
        tx,
        pos(file, 4, i as u64),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_handed_to_the_producer_after_the_deadline() {
    let prefix = unique("sinktest-deadline");
    let cfg = config(&prefix, Format::Debezium);
    let t = all_types_table("shop", "gated");
    let tx = txn("0-1-1", 1_700_000_000_000, 1);
    let mut sink = KafkaSink::new(&cfg, "demo", 1).await.unwrap();
    let ev = |i: i64| insert_at(&t, &tx, "binlog.000006", i);
    sink.set_deadline(Some(tokio::time::Instant::now() + Duration::from_secs(60)));
    sink.send(&ev(0)).await.unwrap();
    assert_eq!(
        sink.flush(Duration::from_secs(30)).await.unwrap(),
        Some(pos("binlog.000006", 4, 1))
    );
    sink.set_deadline(Some(tokio::time::Instant::now()));
    let e = sink.send(&ev(1)).await.unwrap_err();
    assert!(matches!(e, SinkError::DeadlinePassed), "{e}");
    assert!(matches!(
        sink.send(&ev(2)).await.unwrap_err(),
        SinkError::Stopped(_)
    ));
    assert_eq!(sink.acked_position(), Some(pos("binlog.000006", 4, 1)));
    let got = consume(&format!("{prefix}.shop.gated"), 1);
    assert_eq!(got[0].value["after"]["id"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_send_margin_holds_hand_offs_until_the_lease_moves_on() {
    use std::sync::{Arc, Mutex};
    use tokio::time::Instant;
    let prefix = unique("sinktest-margin");
    let cfg = config(&prefix, Format::Debezium);
    let t = all_types_table("shop", "margin");
    let tx = txn("0-1-1", 1_700_000_000_000, 1);
    let mut sink = KafkaSink::new(&cfg, "demo", 1).await.unwrap();
    let ev = |i: i64| insert_at(&t, &tx, "binlog.000007", i);
    let lease = Arc::new(Mutex::new(Instant::now() + Duration::from_secs(5)));
    let read = lease.clone();
    sink.set_deadline_fn(move || *read.lock().unwrap());
    sink.set_send_margin(Duration::from_secs(1));
    sink.send(&ev(0)).await.unwrap();

    // Inside the margin: held until a "keep-alive" moves the deadline on.
    // A lease's deadline only moves forward (the sink relies on it), so a
    // new lease starts inside the margin.
    let lease = Arc::new(Mutex::new(Instant::now() + Duration::from_millis(800)));
    let read = lease.clone();
    sink.set_deadline_fn(move || *read.lock().unwrap());
    let renew = lease.clone();
    let renewer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        *renew.lock().unwrap() = Instant::now() + Duration::from_secs(5);
    });
    let started = Instant::now();
    sink.send(&ev(1)).await.unwrap();
    let held = started.elapsed();
    renewer.await.unwrap();
    assert!(held >= Duration::from_millis(250), "sent after {held:?}");
    assert_eq!(
        sink.flush(Duration::from_secs(30)).await.unwrap(),
        Some(pos("binlog.000007", 4, 2))
    );

    // Never renewed: a hand-off while the deadline is more than the margin
    // away, then none once it is within it (the deadline read before is not
    // trusted there), then the deadline error.
    let end = Instant::now() + Duration::from_millis(1500);
    sink.set_deadline_fn(move || end);
    sink.send(&ev(2)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let started = Instant::now();
    let e = sink.send(&ev(3)).await.unwrap_err();
    assert!(matches!(e, SinkError::DeadlinePassed), "{e}");
    assert!(started.elapsed() >= Duration::from_millis(800));
    assert_eq!(sink.acked_position(), Some(pos("binlog.000007", 4, 3)));
    let got = consume(&format!("{prefix}.shop.margin"), 3);
    let mut ids: Vec<_> = got
        .iter()
        .filter_map(|m| m.value["after"]["id"].as_i64())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, vec![0, 1, 2]);
}
