//! The sink against the real broker (dev-env tansu, or `BB_TEST_BROKERS`)
//! with idempotent delivery's lease-bounded `message.timeout.ms`: a burst far
//! larger than the broker acknowledges within that timeout is still
//! delivered without a single timed-out message, because the in-flight
//! window follows the broker's acknowledgement rate and the age of the
//! oldest unacknowledged message. Before that, the whole `max_in_flight`
//! window (100000) was handed to librdkafka at once, and what queued longer
//! than the timeout failed with `MessageTimedOut` (the leader stepped down
//! and replayed, over and over).

mod sink_fixture;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use binlog_bridge::config::{Format, KafkaConfig};
use binlog_bridge::event::Op;
use binlog_bridge::sink::KafkaSink;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;
use sink_fixture::*;

#[tokio::test]
async fn a_burst_larger_than_the_broker_drains_within_the_timeout_is_delivered() {
    let n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let prefix = format!("sinktest-burst-{}-{n}", std::process::id());
    let mut cfg = KafkaConfig {
        brokers: brokers(),
        topic: format!("{prefix}.{{db}}.{{table}}"),
        schema_topic: format!("{prefix}.schema"),
        format: Format::Debezium,
        partitions: 3,
        ..KafkaConfig::default()
    };
    // What the bridge sets for a 6 s lease (bridge::delivery_timeout: half
    // the TTL). The test broker acknowledges 5k-12k messages/s, so the
    // burst below takes 7-18 s to drain, more than twice the timeout: handed
    // over at once, its tail would time out. (1 s, a 2 s lease, also shows it on a quiet
    // machine, but a broker pause over 1 s while the whole suite runs in
    // parallel failed it in CI.)
    for p in ["message.timeout.ms", "request.timeout.ms"] {
        cfg.properties.insert(p.into(), "3000".into());
    }
    let rows = 90_000u64;
    let t = all_types_table("shop", "burst");
    let mut sink = KafkaSink::new(&cfg, "burst", 1).await.unwrap();
    for i in 0..rows {
        let tx = txn(&format!("0-1-{i}"), 1_700_000_000_000, i);
        let ev = row_event(
            &t,
            Op::Insert,
            None,
            Some(all_types_row(i as i64, false)),
            &tx,
            pos("binlog.000001", 4 + i * 1000, 0),
        );
        sink.send(&ev)
            .await
            .unwrap_or_else(|e| panic!("row {i} of {rows}: {e}"));
        sink.send(&commit_event(
            &tx,
            pos("binlog.000001", 4 + (i + 1) * 1000, 0),
        ))
        .await
        .unwrap_or_else(|e| panic!("commit {i} of {rows}: {e}"));
    }
    let acked = sink
        .flush(Duration::from_secs(120))
        .await
        .unwrap_or_else(|e| panic!("flush: {e}"));
    assert_eq!(acked, Some(pos("binlog.000001", 4 + rows * 1000, 0)));

    // Every row is in the topic once.
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    let topic = format!("{prefix}.shop.burst");
    let mut total = 0;
    for p in 0..3 {
        let (lo, hi) = c
            .fetch_watermarks(&topic, p, Duration::from_secs(10))
            .unwrap();
        total += hi - lo;
    }
    assert_eq!(total, rows as i64);
}
