//! End to end through real services: MariaDB writes -> binlog source ->
//! Kafka sink -> a consumer sees every row, all changes of a key in one
//! partition and in commit order, keyless rows in one partition, the DDL on
//! the schema topic only, and the row topic with the configured partition
//! count. MariaDB is the dev-env one (fails if unreachable); the broker is a
//! private tansu so the test does not depend on the shared broker's load.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use binlog_bridge::config::{Format, KafkaConfig};
use binlog_bridge::event::EventKind;
use binlog_bridge::sink::KafkaSink;
use binlog_bridge::source::StartFrom;
use mysql_async::prelude::Queryable;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

const DB: &str = "sink_e2e";
const IDS: i64 = 30;
const ROUNDS: i64 = 5;

/// (partition, key, value) of every message of `topic`.
fn read_all(brokers: &str, topic: &str, want: usize) -> Vec<(i32, String, serde_json::Value)> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "sink-e2e-reader")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..md.topics()[0].partitions().len() as i32 {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut out = vec![];
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while out.len() < want && std::time::Instant::now() < deadline {
        if let Some(m) = c.poll(Duration::from_millis(200)) {
            let m = m.unwrap();
            out.push((
                m.partition(),
                String::from_utf8(m.key().unwrap().to_vec()).unwrap(),
                serde_json::from_slice(m.payload().unwrap()).unwrap(),
            ));
        }
    }
    assert!(
        c.poll(Duration::from_millis(500)).is_none(),
        "more than {want} messages in {topic}"
    );
    assert_eq!(out.len(), want, "messages in {topic}");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_rows_reach_kafka_complete_partitioned_and_in_order() {
    let broker = common::broker::PrivateBroker::start();
    let mut conn = common::root(&common::root_url()).await;
    conn.query_drop(format!("DROP DATABASE IF EXISTS {DB}"))
        .await
        .unwrap();
    conn.query_drop(format!("CREATE DATABASE {DB}"))
        .await
        .unwrap();
    conn.query_drop(format!(
        "CREATE TABLE {DB}.t (id INT PRIMARY KEY, v INT NOT NULL, note VARCHAR(20))"
    ))
    .await
    .unwrap();
    conn.query_drop(format!("CREATE TABLE {DB}.heap (a INT, b VARCHAR(10))"))
        .await
        .unwrap();
    let start = common::master_position(&mut conn).await;

    // Writes: inserts, ROUNDS multi-row update transactions, deletes, keyless rows, DDL.
    let values: Vec<String> = (1..=IDS).map(|i| format!("({i}, 0, 'n{i}')")).collect();
    conn.query_drop(format!("INSERT INTO {DB}.t VALUES {}", values.join(",")))
        .await
        .unwrap();
    for round in 1..=ROUNDS {
        conn.query_drop(format!("UPDATE {DB}.t SET v = {round}"))
            .await
            .unwrap();
    }
    conn.query_drop(format!("DELETE FROM {DB}.t WHERE id <= 5"))
        .await
        .unwrap();
    conn.query_drop(format!(
        "INSERT INTO {DB}.heap VALUES (1,'x'),(1,'x'),(2,'y')"
    ))
    .await
    .unwrap();
    conn.query_drop(format!("ALTER TABLE {DB}.t ADD COLUMN z INT"))
        .await
        .unwrap();
    let rows_expected = (IDS + IDS * ROUNDS + 5 + 3) as usize;

    let mut src = common::start(
        &common::bridge_url(),
        4301,
        &[&format!("{DB}.*")],
        StartFrom::Position(start),
    )
    .await;
    let cfg = KafkaConfig {
        brokers: broker.brokers(),
        topic: "e2e.{db}.{table}".into(),
        schema_topic: "e2e.schema".into(),
        format: Format::Debezium,
        partitions: 4,
        linger_ms: 1,
        ..KafkaConfig::default()
    };
    let mut sink = KafkaSink::new(&cfg, "e2e", 1).await.unwrap();
    let (mut rows, mut ddl_seen, mut last_commit) = (0, false, None);
    while !(rows == rows_expected && ddl_seen && last_commit.is_some()) {
        let ev = tokio::time::timeout(Duration::from_secs(30), src.next_event())
            .await
            .unwrap_or_else(|_| panic!("source stalled after {rows} rows"))
            .unwrap();
        // DDL is not filtered by `include`: other tests' schema changes on
        // the shared server come through too, and must not reach this test's
        // schema topic.
        if matches!(&ev.kind, EventKind::Schema(s) if !s.statement.contains(DB)) {
            continue;
        }
        match &ev.kind {
            EventKind::Row(_) => rows += 1,
            EventKind::Schema(s) => ddl_seen |= s.statement.contains("ADD COLUMN z"),
            EventKind::Commit if ddl_seen => last_commit = Some(ev.position.clone()),
            EventKind::Commit => {}
        }
        sink.send(&ev).await.unwrap();
    }
    let acked = sink.flush(Duration::from_secs(60)).await.unwrap();
    assert_eq!(
        acked, last_commit,
        "everything up to the last commit is acknowledged"
    );

    let topic = format!("e2e.{DB}.t");
    assert_eq!(
        sink.producer().partition_count(&topic).await.unwrap(),
        Some(4)
    );
    let got = read_all(&broker.brokers(), &topic, (IDS + IDS * ROUNDS + 5) as usize);
    let mut by_key: HashMap<String, Vec<(i32, String, Option<i64>)>> = HashMap::new();
    for (p, key, v) in &got {
        let op = v["op"].as_str().unwrap().to_string();
        let val = v["after"]["v"].as_i64();
        by_key.entry(key.clone()).or_default().push((*p, op, val));
    }
    assert_eq!(by_key.len(), IDS as usize, "every row arrived");
    let mut partitions = std::collections::HashSet::new();
    for id in 1..=IDS {
        let seq = &by_key[&format!(r#"{{"id":{id}}}"#)];
        assert!(
            seq.iter().all(|(p, _, _)| *p == seq[0].0),
            "id {id} spread over partitions"
        );
        partitions.insert(seq[0].0);
        let mut want: Vec<(String, Option<i64>)> = vec![("c".into(), Some(0))];
        want.extend((1..=ROUNDS).map(|r| ("u".to_string(), Some(r))));
        if id <= 5 {
            want.push(("d".into(), None));
        }
        let have: Vec<(String, Option<i64>)> =
            seq.iter().map(|(_, op, v)| (op.clone(), *v)).collect();
        assert_eq!(have, want, "id {id}: changes out of order or missing");
    }
    assert!(
        partitions.len() > 1,
        "30 keys over 4 partitions use more than one"
    );

    let heap = read_all(&broker.brokers(), &format!("e2e.{DB}.heap"), 3);
    assert!(heap
        .iter()
        .all(|(p, k, _)| *p == heap[0].0 && k == r#"{"database":"sink_e2e","table":"heap"}"#));
    let ddl = read_all(&broker.brokers(), "e2e.schema", 1);
    assert!(ddl[0].2["ddl"].as_str().unwrap().contains("ADD COLUMN z"));
}
