//! Broker outages, on a private tansu broker this test starts, kills and
//! restarts (never the shared one): the sink loses nothing, blocks instead
//! of buffering without bound, and never reports a position beyond an
//! unacknowledged message; an undeliverable message stops it with the error.
//!
//! Needs the tansu binary (`bash scripts/dev-env.sh start broker` builds and
//! caches it, or set `BB_TANSU_BIN`); without it these tests fail.

mod common;
mod sink_fixture;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use binlog_bridge::config::{Format, KafkaConfig};
use binlog_bridge::event::{Op, Position};
use binlog_bridge::sink::{KafkaSink, SinkError};
use common::broker::PrivateBroker;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use sink_fixture::*;

fn config(brokers: &str, window: u32) -> KafkaConfig {
    KafkaConfig {
        brokers: brokers.into(),
        topic: "outage.{db}.{table}".into(),
        schema_topic: "outage.schema".into(),
        format: Format::Debezium,
        partitions: 3,
        linger_ms: 5,
        max_in_flight: window,
        ..KafkaConfig::default()
    }
}

/// Row `i` is its own transaction at offset 4 + 100 i; its commit resumes at 4 + 100 (i + 1).
fn row_and_commit(i: u64) -> [binlog_bridge::event::ChangeEvent; 2] {
    let t = all_types_table("shop", "outage");
    let tx = txn("0-1-1", 1_700_000_000_000, i);
    [
        row_event(
            &t,
            Op::Insert,
            None,
            Some(all_types_row(i as i64, false)),
            &tx,
            pos("binlog.000001", 4 + 100 * i, 0),
        ),
        commit_event(&tx, commit_pos(i)),
    ]
}

fn commit_pos(i: u64) -> Position {
    pos("binlog.000001", 4 + 100 * (i + 1), 0)
}

fn consume_ids(brokers: &str, topic: &str, want: usize) -> Vec<i64> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "outage-reader")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..3 {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut ids = vec![];
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while ids.len() < want && std::time::Instant::now() < deadline {
        if let Some(m) = c.poll(Duration::from_millis(200)) {
            let m = m.unwrap();
            let v: serde_json::Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
            ids.push(v["after"]["id"].as_i64().unwrap());
        }
    }
    while let Some(m) = c.poll(Duration::from_millis(1000)) {
        let m = m.unwrap();
        let v: serde_json::Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
        ids.push(v["after"]["id"].as_i64().unwrap());
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_crash_mid_stream_loses_nothing_and_position_waits_for_acks() {
    let mut broker = PrivateBroker::start();
    let window = 300;
    let total: u64 = 3000;
    let before_crash: u64 = 1000;
    let mut sink = KafkaSink::new(&config(&broker.brokers(), window), "demo", 3)
        .await
        .unwrap();
    for i in 0..before_crash {
        for ev in row_and_commit(i) {
            sink.send(&ev).await.unwrap();
        }
    }
    let acked_before = sink.flush(Duration::from_secs(30)).await.unwrap();
    assert_eq!(acked_before, Some(commit_pos(before_crash - 1)));

    broker.kill();

    // Keep streaming while the broker is down, in a task that reports progress.
    let Blocked {
        sent: sent_during,
        seen: seen_acked,
        task,
    } = send_until_blocked(sink, before_crash..total, |s| s.acked_position()).await;
    assert!(
        sent_during <= window as usize,
        "sent {sent_during} rows past a window of {window}"
    );
    // Nothing was acknowledged while the broker was down: the position did not move.
    for a in seen_acked.lock().unwrap().iter() {
        assert_eq!(a, &acked_before, "position moved while the broker was down");
    }

    broker.restart();
    let mut sink = tokio::time::timeout(Duration::from_secs(120), task)
        .await
        .expect("sender resumes after the broker is back")
        .unwrap();
    let acked = sink.flush(Duration::from_secs(60)).await.unwrap();
    assert_eq!(acked, Some(commit_pos(total - 1)));
    // Positions reported along the way only ever grew.
    let seen = seen_acked.lock().unwrap().clone();
    assert!(seen.windows(2).all(|w| w[0] <= w[1]));

    let ids = consume_ids(&broker.brokers(), "outage.shop.outage", total as usize);
    let unique: HashSet<i64> = ids.iter().copied().collect();
    assert_eq!(unique.len(), total as usize, "lost rows");
    assert_eq!(ids.len(), total as usize, "duplicated rows");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undeliverable_message_stops_the_sink_and_position_stays_before_it() {
    let mut broker = PrivateBroker::start();
    let mut cfg = config(&broker.brokers(), 1000);
    cfg.properties
        .insert("message.timeout.ms".into(), "1500".into());
    let mut sink = KafkaSink::new(&cfg, "demo", 3).await.unwrap();
    for i in 0..10 {
        for ev in row_and_commit(i) {
            sink.send(&ev).await.unwrap();
        }
    }
    let acked_before = sink.flush(Duration::from_secs(30)).await.unwrap();
    assert_eq!(acked_before, Some(commit_pos(9)));
    broker.kill();
    for i in 10..20 {
        for ev in row_and_commit(i) {
            sink.send(&ev).await.unwrap();
        }
    }
    let e = sink.flush(Duration::from_secs(30)).await.unwrap_err();
    assert!(matches!(e, SinkError::Delivery(_)), "{e}");
    assert!(e.to_string().contains("outage.shop.outage"), "{e}");
    assert_eq!(
        sink.acked_position(),
        acked_before,
        "never past the failed message"
    );
    let again = sink.send(&row_and_commit(20)[0]).await.unwrap_err();
    assert!(matches!(again, SinkError::Stopped(_)), "{again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_purges_unacknowledged_messages_and_keeps_the_position() {
    let mut broker = PrivateBroker::start();
    let mut sink = KafkaSink::new(&config(&broker.brokers(), 1000), "demo", 3)
        .await
        .unwrap();
    for ev in row_and_commit(0) {
        sink.send(&ev).await.unwrap();
    }
    let acked_before = sink.flush(Duration::from_secs(30)).await.unwrap();
    broker.kill();
    for i in 1..50 {
        for ev in row_and_commit(i) {
            sink.send(&ev).await.unwrap();
        }
    }
    sink.abort();
    assert_eq!(sink.acked_position(), acked_before);
    let e = sink.send(&row_and_commit(50)[0]).await.unwrap_err();
    assert!(e.to_string().contains("aborted"), "{e}");
    broker.restart();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ids = consume_ids(&broker.brokers(), "outage.shop.outage", 1);
    assert_eq!(ids, [0], "purged messages were not delivered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_send_stops_the_sink() {
    let mut broker = PrivateBroker::start();
    let mut sink = KafkaSink::new(&config(&broker.brokers(), 1), "demo", 3)
        .await
        .unwrap();
    for ev in row_and_commit(0) {
        sink.send(&ev).await.unwrap();
    }
    let acked_before = sink.flush(Duration::from_secs(30)).await.unwrap();
    broker.kill();
    sink.send(&row_and_commit(1)[0]).await.unwrap();
    // The window (1 message) is full and the broker is down: this send waits...
    let cancelled =
        tokio::time::timeout(Duration::from_millis(500), sink.send(&row_and_commit(2)[0])).await;
    assert!(cancelled.is_err(), "send should block on the full window");
    // ... and was dropped: the sink must not continue as if nothing happened.
    let e = sink.send(&row_and_commit(3)[0]).await.unwrap_err();
    assert!(e.to_string().contains("cancelled"), "{e}");
    assert_eq!(sink.acked_position(), acked_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_window_stops_at_max_in_flight_bytes_with_the_broker_down() {
    let mut broker = PrivateBroker::start();
    let max_bytes: u64 = 64 * 1024;
    // The message-count window is far larger: only the byte bound can stop it.
    let mut cfg = config(&broker.brokers(), 100_000);
    cfg.max_in_flight_bytes = max_bytes;
    let mut sink = KafkaSink::new(&cfg, "demo", 3).await.unwrap();
    for ev in row_and_commit(0) {
        sink.send(&ev).await.unwrap();
    }
    sink.flush(Duration::from_secs(30)).await.unwrap();
    assert_eq!(
        sink.in_flight_bytes(),
        0,
        "acknowledged bytes must leave the window"
    );

    broker.kill();
    let total: u64 = 2000;
    let Blocked {
        sent: sent_during,
        seen: seen_bytes,
        task,
    } = send_until_blocked(sink, 1..total, |s| s.in_flight_bytes()).await;
    let seen = seen_bytes.lock().unwrap().clone();
    let peak = seen.iter().copied().max().unwrap_or(0);
    let per_msg = peak / sent_during.max(1) as u64;
    println!("broker down: {sent_during} rows sent, {peak} bytes in flight (~{per_msg} B/message), bound {max_bytes}");
    assert!(
        peak <= max_bytes,
        "{peak} bytes in flight past a bound of {max_bytes}"
    );
    // It stopped because the next message did not fit, not earlier.
    assert!(
        peak + 2 * per_msg > max_bytes,
        "stopped at {peak} bytes, well below the bound of {max_bytes}"
    );
    assert!(sent_during > 10 && sent_during < total as usize - 1);

    broker.restart();
    let mut sink = tokio::time::timeout(Duration::from_secs(120), task)
        .await
        .expect("sender resumes after the broker is back")
        .unwrap();
    let acked = sink.flush(Duration::from_secs(60)).await.unwrap();
    assert_eq!(acked, Some(commit_pos(total - 1)));
    assert_eq!(sink.in_flight_bytes(), 0);
    let ids = consume_ids(&broker.brokers(), "outage.shop.outage", total as usize);
    let unique: HashSet<i64> = ids.iter().copied().collect();
    assert_eq!(unique.len(), total as usize, "lost rows");
    assert_eq!(ids.len(), total as usize, "duplicated rows");
}

/// A sender task streaming rows while the broker is down, once it stopped.
struct Blocked<T> {
    /// Rows sent before it blocked.
    sent: usize,
    /// `sample(sink)` after each row sent.
    seen: Arc<Mutex<Vec<T>>>,
    /// Finishes (returning the sink) once the broker is back.
    task: tokio::task::JoinHandle<KafkaSink>,
}

/// Send `rows` in a task, sampling the sink after each; wait 3 s, then check
/// over one more second that the sender is blocked (the window is full), not
/// buffering.
async fn send_until_blocked<T: Send + 'static>(
    mut sink: KafkaSink,
    rows: std::ops::Range<u64>,
    sample: fn(&KafkaSink) -> T,
) -> Blocked<T> {
    let sent = Arc::new(AtomicUsize::new(0));
    let seen: Arc<Mutex<Vec<T>>> = Arc::default();
    let task = {
        let (sent, seen) = (sent.clone(), seen.clone());
        tokio::spawn(async move {
            for i in rows {
                for ev in row_and_commit(i) {
                    sink.send(&ev).await.unwrap();
                }
                sent.fetch_add(1, Ordering::SeqCst);
                seen.lock().unwrap().push(sample(&sink));
            }
            sink
        })
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    let sent_during = sent.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        sent.load(Ordering::SeqCst),
        sent_during,
        "with the broker down the sender must block (window full), not buffer"
    );
    Blocked {
        sent: sent_during,
        seen,
        task,
    }
}
