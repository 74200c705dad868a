//! Every metric the bridge exports, defined in one place, rendered in the
//! Prometheus text format.
//!
//! Counters and gauges are atomics; labelled counters (events by table and
//! type) keep a small map behind a mutex, touched once per event batch, not per
//! byte. Names and help texts here are the reference the README's metrics
//! table is checked against.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down; stored as f64 bits.
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    pub fn set(&self, v: f64) {
        self.0.store(v.to_bits(), Ordering::Relaxed);
    }
    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

/// An integer gauge that can be moved by deltas (in-flight counts).
#[derive(Debug, Default)]
pub struct IntGauge(AtomicI64);

impl IntGauge {
    pub fn add(&self, d: i64) {
        self.0.fetch_add(d, Ordering::Relaxed);
    }
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Counters labelled by (table, type).
#[derive(Debug, Default)]
pub struct TableCounter(Mutex<BTreeMap<(String, String), u64>>);

impl TableCounter {
    pub fn add(&self, table: &str, kind: &str, n: u64) {
        if let Ok(mut m) = self.0.lock() {
            *m.entry((table.to_string(), kind.to_string())).or_insert(0) += n;
        }
    }
    /// Set one labelled value (for gauges kept in the same shape).
    pub fn set(&self, table: &str, kind: &str, v: f64) {
        if let Ok(mut m) = self.0.lock() {
            m.insert((table.to_string(), kind.to_string()), v as u64);
        }
    }
    pub fn total(&self) -> u64 {
        self.0.lock().map(|m| m.values().sum()).unwrap_or(0)
    }
}

/// Upper bounds (seconds) of the latency histograms' buckets.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A latency histogram with [`LATENCY_BUCKETS`]: lock-free, one bucket
/// increment plus count and sum per observation.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Per bucket (not cumulative); the last slot is +Inf.
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    count: AtomicU64,
    /// Sum of observations, nanoseconds.
    sum_ns: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = LATENCY_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(
            u64::try_from(d.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
    /// Sum of observations, seconds.
    pub fn sum(&self) -> f64 {
        self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9
    }
}

/// Messages and bytes acknowledged by Kafka for one topic.
#[derive(Debug, Default)]
pub struct TopicProduced {
    messages: AtomicU64,
    bytes: AtomicU64,
}

impl TopicProduced {
    /// One acknowledged message of `bytes` (key + value).
    pub fn acked(&self, bytes: usize) {
        self.messages.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }
    pub fn messages(&self) -> u64 {
        self.messages.load(Ordering::Relaxed)
    }
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

/// [`TopicProduced`] per topic. The sink takes a topic's handle once and
/// counts acknowledgements on it without a lock.
#[derive(Debug, Default)]
pub struct ProducedByTopic(Mutex<BTreeMap<String, Arc<TopicProduced>>>);

impl ProducedByTopic {
    /// The counters of `topic`, created at zero on first use.
    pub fn topic(&self, topic: &str) -> Arc<TopicProduced> {
        match self.0.lock() {
            Ok(mut m) => m.entry(topic.to_string()).or_default().clone(),
            // A poisoned map only loses the count, never the message.
            Err(_) => Arc::new(TopicProduced::default()),
        }
    }
    fn snapshot(&self) -> Vec<(String, u64, u64)> {
        self.0
            .lock()
            .map(|m| {
                m.iter()
                    .map(|(t, c)| (t.clone(), c.messages(), c.bytes()))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// All metrics of one process.
#[derive(Debug, Default)]
pub struct Metrics {
    pub role_leader: Gauge,
    pub leadership_changes: Counter,
    pub events_read: TableCounter,
    pub binlog_file_index: Gauge,
    pub binlog_offset: Gauge,
    pub lag_seconds: Gauge,
    pub kafka_in_flight: IntGauge,
    pub kafka_delivery_errors: Counter,
    /// Kafka transactions committed (transactional delivery).
    pub kafka_transactions: Counter,
    /// Unix time (seconds) of the last checkpoint write; 0 = never.
    pub checkpoint_unix: Gauge,
    pub source_reconnects: Counter,
    /// Initial snapshot rows by (table, `done` | `estimated`).
    pub snapshot_rows: TableCounter,
    /// Fed by the sink from delivery acknowledgements.
    pub produced: Arc<ProducedByTopic>,
    /// Hand-off to the producer until Kafka's acknowledgement, per message.
    pub kafka_delivery_seconds: Arc<Histogram>,
    /// One checkpoint write to etcd (the fenced transaction), leader only.
    pub checkpoint_commit_seconds: Histogram,
    /// One lease keep-alive round trip to etcd.
    pub etcd_keepalive_seconds: Arc<Histogram>,
}

/// `(name, type, help)` for every metric, in render order.
pub const METRICS: [(&str, &str, &str); 17] = [
    ("binlog_bridge_role_leader", "gauge", "1 while this process is the leader, 0 as standby."),
    ("binlog_bridge_leadership_changes_total", "counter", "Times this process became leader or stepped down."),
    ("binlog_bridge_events_read_total", "counter", "Row changes and schema changes read from the binlog, by table and type."),
    ("binlog_bridge_binlog_file_index", "gauge", "Numeric suffix of the binlog file being read."),
    ("binlog_bridge_binlog_offset_bytes", "gauge", "Offset in that binlog file of the last transaction read."),
    ("binlog_bridge_replication_lag_seconds", "gauge", "Now minus the source commit time of the last event read (heartbeats keep it current when idle)."),
    ("binlog_bridge_kafka_in_flight_messages", "gauge", "Messages handed to the producer and not yet acknowledged."),
    ("binlog_bridge_kafka_delivery_errors_total", "counter", "Messages Kafka refused or failed to acknowledge."),
    ("binlog_bridge_kafka_transactions_total", "counter", "Kafka transactions (batches with their progress record) committed, in transactional delivery."),
    ("binlog_bridge_checkpoint_age_seconds", "gauge", "Seconds since this process last wrote the checkpoint (-1: never)."),
    ("binlog_bridge_source_reconnects_total", "counter", "Times the binlog connection was re-established."),
    ("binlog_bridge_kafka_produced_messages_total", "counter", "Messages Kafka acknowledged, by topic."),
    ("binlog_bridge_kafka_produced_bytes_total", "counter", "Key and value bytes of the messages Kafka acknowledged, by topic."),
    ("binlog_bridge_kafka_delivery_seconds", "histogram", "Time from handing a message to the producer to Kafka's acknowledgement."),
    ("binlog_bridge_checkpoint_commit_seconds", "histogram", "Time to write one checkpoint to etcd (a fenced transaction)."),
    ("binlog_bridge_etcd_keepalive_seconds", "histogram", "Round trip of one etcd lease keep-alive."),
    ("binlog_bridge_snapshot_rows", "gauge", "Snapshot rows by table (initial and on-demand): type=done sent by this process (a table resumed after a failover counts from where it resumed; an on-demand run adds to it), type=estimated from information_schema.TABLES."),
];

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    /// The Prometheus text exposition of every metric.
    pub fn render(&self, now_unix: f64) -> String {
        let mut out = String::with_capacity(4096);
        for (name, kind, help) in METRICS {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            match name {
                "binlog_bridge_role_leader" => line(&mut out, name, self.role_leader.get()),
                "binlog_bridge_leadership_changes_total" => {
                    line(&mut out, name, self.leadership_changes.get() as f64)
                }
                "binlog_bridge_events_read_total" => labelled(&mut out, name, &self.events_read),
                "binlog_bridge_binlog_file_index" => {
                    line(&mut out, name, self.binlog_file_index.get())
                }
                "binlog_bridge_binlog_offset_bytes" => {
                    line(&mut out, name, self.binlog_offset.get())
                }
                "binlog_bridge_replication_lag_seconds" => {
                    line(&mut out, name, self.lag_seconds.get())
                }
                "binlog_bridge_kafka_in_flight_messages" => {
                    line(&mut out, name, self.kafka_in_flight.get() as f64)
                }
                "binlog_bridge_kafka_delivery_errors_total" => {
                    line(&mut out, name, self.kafka_delivery_errors.get() as f64)
                }
                "binlog_bridge_kafka_transactions_total" => {
                    line(&mut out, name, self.kafka_transactions.get() as f64)
                }
                "binlog_bridge_checkpoint_age_seconds" => {
                    let at = self.checkpoint_unix.get();
                    let age = if at > 0.0 {
                        (now_unix - at).max(0.0)
                    } else {
                        -1.0
                    };
                    line(&mut out, name, age)
                }
                "binlog_bridge_snapshot_rows" => labelled(&mut out, name, &self.snapshot_rows),
                "binlog_bridge_source_reconnects_total" => {
                    line(&mut out, name, self.source_reconnects.get() as f64)
                }
                "binlog_bridge_kafka_produced_messages_total" => {
                    for (topic, messages, _) in self.produced.snapshot() {
                        let _ = writeln!(out, "{name}{{topic=\"{}\"}} {messages}", escape(&topic));
                    }
                }
                "binlog_bridge_kafka_produced_bytes_total" => {
                    for (topic, _, bytes) in self.produced.snapshot() {
                        let _ = writeln!(out, "{name}{{topic=\"{}\"}} {bytes}", escape(&topic));
                    }
                }
                "binlog_bridge_kafka_delivery_seconds" => {
                    histogram(&mut out, name, &self.kafka_delivery_seconds)
                }
                "binlog_bridge_checkpoint_commit_seconds" => {
                    histogram(&mut out, name, &self.checkpoint_commit_seconds)
                }
                _ => histogram(&mut out, name, &self.etcd_keepalive_seconds),
            }
        }
        out
    }
}

fn line(out: &mut String, name: &str, v: f64) {
    let _ = writeln!(out, "{name} {v}");
}

fn histogram(out: &mut String, name: &str, h: &Histogram) {
    let mut cumulative = 0;
    for (i, le) in LATENCY_BUCKETS.iter().enumerate() {
        cumulative += h.buckets[i].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
    }
    cumulative += h.buckets[LATENCY_BUCKETS.len()].load(Ordering::Relaxed);
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
    let _ = writeln!(out, "{name}_sum {}", h.sum());
    let _ = writeln!(out, "{name}_count {cumulative}");
}

fn labelled(out: &mut String, name: &str, c: &TableCounter) {
    if let Ok(m) = c.0.lock() {
        for ((table, kind), v) in m.iter() {
            let _ = writeln!(
                out,
                "{name}{{table=\"{}\",type=\"{}\"}} {v}",
                escape(table),
                escape(kind)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_metric_with_help_and_values() {
        let m = Metrics::default();
        m.role_leader.set(1.0);
        m.events_read.add("shop.orders", "insert", 3);
        m.events_read.add("shop.orders", "update", 2);
        m.checkpoint_unix.set(100.0);
        let text = m.render(103.5);
        for (name, kind, _) in METRICS {
            assert!(text.contains(&format!("# TYPE {name} {kind}\n")), "{name}");
        }
        assert!(text.contains("binlog_bridge_role_leader 1\n"));
        assert!(text.contains(
            "binlog_bridge_events_read_total{table=\"shop.orders\",type=\"insert\"} 3\n"
        ));
        assert!(text.contains("binlog_bridge_checkpoint_age_seconds 3.5\n"));
        assert_eq!(m.events_read.total(), 5);
    }

    #[test]
    fn histograms_are_cumulative_and_topics_are_labelled() {
        let m = Metrics::default();
        m.checkpoint_commit_seconds
            .observe(Duration::from_micros(300));
        m.checkpoint_commit_seconds
            .observe(Duration::from_millis(7));
        m.checkpoint_commit_seconds.observe(Duration::from_secs(60));
        let t = m.produced.topic("shop.orders");
        t.acked(10);
        t.acked(5);
        m.produced.topic("shop.orders").acked(1);
        let text = m.render(0.0);
        let n = "binlog_bridge_checkpoint_commit_seconds";
        assert!(
            text.contains(&format!("{n}_bucket{{le=\"0.0005\"}} 1\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!("{n}_bucket{{le=\"0.005\"}} 1\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!("{n}_bucket{{le=\"0.01\"}} 2\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!("{n}_bucket{{le=\"10\"}} 2\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!("{n}_bucket{{le=\"+Inf\"}} 3\n")),
            "{text}"
        );
        assert!(text.contains(&format!("{n}_count 3\n")), "{text}");
        assert!(text.contains(&format!("{n}_sum 60.0073\n")), "{text}");
        assert!(
            text.contains("binlog_bridge_kafka_produced_messages_total{topic=\"shop.orders\"} 3\n")
        );
        assert!(
            text.contains("binlog_bridge_kafka_produced_bytes_total{topic=\"shop.orders\"} 16\n")
        );
        assert!(text.contains("binlog_bridge_etcd_keepalive_seconds_count 0\n"));
    }

    #[test]
    fn label_values_are_escaped() {
        let m = Metrics::default();
        m.events_read.add("a\"b", "x\\y", 1);
        let text = m.render(0.0);
        assert!(text.contains("table=\"a\\\"b\",type=\"x\\\\y\""), "{text}");
        assert!(text.contains("binlog_bridge_checkpoint_age_seconds -1\n"));
    }
}
