//! Exactly-once across failover without Kafka transactions (`idempotent`
//! delivery): a new leader finds out what the previous leaders already wrote
//! and does not write it again.
//!
//! Why it works:
//! - The sink chooses every message's partition itself ([`partition_for`]:
//!   Kafka's murmur2 of the key, as Java producers do), so the partition of
//!   an event is known before it is sent.
//! - Within one producer session the idempotent producer makes each
//!   partition receive a gap-free, duplicate-free prefix of what was sent,
//!   and positions only grow along a partition. So the last message of a
//!   partition tells exactly which of the partition's events are in Kafka:
//!   those at or before its marker (position, part).
//! - Before reading those last messages the new leader waits out the fence
//!   delay (the producer's `message.timeout.ms` plus slack), after which no
//!   message the old leader handed over before its lease deadline can still
//!   arrive.
//! - While replaying from the checkpoint, an event whose marker is at or
//!   before its partition's last marker is skipped; the first one after it
//!   clears the entry, and from then on that partition is written normally.
//!
//! A message's marker is its `bb.position` header plus `bb.part` (0, or 1 for
//! the second message of an update that changed the key). Messages of other
//! pipelines (another `bb.pipeline` header) are not ours: such a partition is
//! treated as empty, so topics must not be shared between pipelines in this
//! mode.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

use super::{SinkError, HEADER_PART, HEADER_PIPELINE, HEADER_POSITION};
use crate::config::KafkaConfig;
use crate::event::Position;

/// Where a message stands in the source: its event's position and its part.
pub type Marker = (Position, u32);

/// Kafka's murmur2 (the Java client's `Utils.murmur2`).
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    let mut h: u32 = SEED ^ (len as u32);
    let chunks = data.chunks_exact(4);
    let tail = chunks.remainder();
    for c in chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    match tail.len() {
        3 => {
            h ^= u32::from(tail[2]) << 16;
            h ^= u32::from(tail[1]) << 8;
            h ^= u32::from(tail[0]);
            h = h.wrapping_mul(M);
        }
        2 => {
            h ^= u32::from(tail[1]) << 8;
            h ^= u32::from(tail[0]);
            h = h.wrapping_mul(M);
        }
        1 => {
            h ^= u32::from(tail[0]);
            h = h.wrapping_mul(M);
        }
        _ => {}
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition of a message: murmur2 of the key (Java's default
/// partitioner); keyless messages go to partition 0 so their order holds.
pub fn partition_for(key: Option<&[u8]>, partitions: usize) -> i32 {
    match key {
        Some(k) if partitions > 0 => ((murmur2(k) & 0x7fff_ffff) as usize % partitions) as i32,
        _ => 0,
    }
}

/// Decides, during the replay after a takeover, which messages are already in Kafka.
#[derive(Debug, Default)]
pub struct Skipper {
    last: HashMap<(Arc<str>, i32), Marker>,
    skipped: u64,
}

impl Skipper {
    pub fn new(last: HashMap<(Arc<str>, i32), Marker>) -> Skipper {
        Skipper { last, skipped: 0 }
    }

    /// True if the message for `(topic, partition)` at `marker` is already there.
    /// The first message past a partition's last marker clears it.
    pub fn skip(&mut self, topic: &Arc<str>, partition: i32, marker: (&Position, u32)) -> bool {
        if self.last.is_empty() {
            // Every partition is past its last marker (the usual case).
            return false;
        }
        let k = (topic.clone(), partition);
        let Some((pos, part)) = self.last.get(&k) else {
            return false;
        };
        let present = match marker.0.cmp(pos) {
            std::cmp::Ordering::Less => true,
            std::cmp::Ordering::Equal => marker.1 <= *part,
            std::cmp::Ordering::Greater => false,
        };
        if present {
            self.skipped += 1;
        } else {
            self.last.remove(&k);
        }
        present
    }

    /// Messages skipped so far.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Partitions still waiting for their first new message.
    pub fn pending(&self) -> usize {
        self.last.len()
    }
}

/// Topics that may hold this pipeline's messages: those named in `known`
/// (the checkpoint's topic set) plus every topic in the cluster that the
/// topic templates could have produced — for the tables `include` allows,
/// when it is set.
pub fn candidate_topics(
    cfg: &KafkaConfig,
    pipeline: &str,
    include: &[String],
    cluster: &[String],
    known: &[String],
) -> Vec<String> {
    let tables: Vec<(String, String)> = if include.is_empty() {
        vec![("*".into(), "*".into())]
    } else {
        include
            .iter()
            .map(|p| match p.split_once('.') {
                Some((d, t)) => (d.to_string(), t.to_string()),
                None => (p.clone(), "*".to_string()),
            })
            .collect()
    };
    let mut patterns: Vec<String> = Vec::new();
    for t in [&cfg.topic, &cfg.schema_topic] {
        for (db, table) in &tables {
            patterns.push(
                t.replace("{pipeline}", pipeline)
                    .replace("{db}", db)
                    .replace("{table}", table),
            );
        }
    }
    let mut out: Vec<String> = known.to_vec();
    for t in cluster {
        if patterns.iter().any(|p| super::routing::glob(p, t)) && !out.contains(t) {
            out.push(t.clone());
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Read the marker of the last message of every partition of the candidate
/// topics. Partitions that are empty, or whose last message is not this
/// pipeline's, are left out. All partitions are read at once (one assignment
/// at each partition's last offset). Blocking: call it from `spawn_blocking`.
pub fn last_markers(
    cfg: &KafkaConfig,
    pipeline: &str,
    include: &[String],
    known: &[String],
    timeout: Duration,
) -> Result<HashMap<(Arc<str>, i32), Marker>, SinkError> {
    last_messages(cfg, pipeline, include, known, timeout).map(|l| l.stream)
}

/// The last message of every partition this pipeline wrote, split by kind.
#[derive(Debug, Default)]
pub struct LastMessages {
    /// Partitions whose last message is a streamed change: its marker.
    pub stream: HashMap<(Arc<str>, i32), Marker>,
    /// Partitions whose last message is a snapshot row: its table
    /// (`db.table`), primary key and position (its segment's position; a
    /// row of an earlier snapshot is older than the current one's start). Such a partition holds no streamed
    /// change after the checkpoint (the initial snapshot precedes streaming;
    /// an on-demand chunk is sent only with everything before it
    /// acknowledged and checkpointed, see `snapshot::ondemand`), so the
    /// streaming replay skips nothing there.
    pub snapshot: HashMap<(Arc<str>, i32), crate::snapshot::Tail>,
}

/// [`last_markers`], with the snapshot rows found at partition ends.
pub fn last_messages(
    cfg: &KafkaConfig,
    pipeline: &str,
    include: &[String],
    known: &[String],
    timeout: Duration,
) -> Result<LastMessages, SinkError> {
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", &cfg.brokers)
        .set("group.id", format!("binlog-bridge-reconcile-{pipeline}"))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("fetch.wait.max.ms", "10")
        // Room for the producer's largest batch in one fetch.
        .set("max.partition.fetch.bytes", "52428800")
        .set("fetch.max.bytes", "52428800")
        .set("isolation.level", "read_committed");
    for (k, v) in &cfg.client_properties().map_err(SinkError::Client)? {
        // Producer-only properties would make the consumer refuse to start.
        if !PRODUCER_ONLY.iter().any(|p| k.starts_with(p)) {
            cc.set(k, v);
        }
    }
    let consumer: BaseConsumer = cc.create().map_err(|e| SinkError::Client(e.to_string()))?;
    let connect = |e: rdkafka::error::KafkaError| SinkError::Connect {
        brokers: cfg.brokers.clone(),
        reason: e.to_string(),
    };
    let md = consumer.fetch_metadata(None, timeout).map_err(connect)?;
    let cluster: Vec<String> = md.topics().iter().map(|t| t.name().to_string()).collect();
    let topics = candidate_topics(cfg, pipeline, include, &cluster, known);
    let mut tpl = TopicPartitionList::new();
    let mut wanted: HashMap<(String, i32), i64> = HashMap::new();
    for t in md.topics() {
        if !topics.iter().any(|x| x == t.name()) {
            continue;
        }
        for p in t.partitions() {
            let (low, high) = consumer
                .fetch_watermarks(t.name(), p.id(), timeout)
                .map_err(connect)?;
            if high > low {
                tpl.add_partition_offset(t.name(), p.id(), Offset::Offset(high - 1))
                    .map_err(|e| SinkError::Internal(e.to_string()))?;
                wanted.insert((t.name().to_string(), p.id()), high - 1);
            }
        }
    }
    let mut out = LastMessages::default();
    if wanted.is_empty() {
        return Ok(out);
    }
    consumer
        .assign(&tpl)
        .map_err(|e| SinkError::Internal(e.to_string()))?;
    let deadline = std::time::Instant::now() + timeout;
    while !wanted.is_empty() && std::time::Instant::now() < deadline {
        let m = match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => m,
            Some(Err(e)) => {
                return Err(SinkError::Connect {
                    brokers: cfg.brokers.clone(),
                    reason: format!("reading the last message of each partition: {e}"),
                })
            }
            None => continue,
        };
        let k = (m.topic().to_string(), m.partition());
        if wanted.get(&k) != Some(&m.offset()) {
            continue;
        }
        wanted.remove(&k);
        match marker_of(&m, pipeline) {
            Some(Last::Stream(marker)) => {
                out.stream.insert((Arc::from(k.0.as_str()), k.1), marker);
            }
            Some(Last::Snapshot(tail)) => {
                out.snapshot.insert((Arc::from(k.0.as_str()), k.1), tail);
            }
            None => {}
        }
    }
    if let Some(((topic, partition), offset)) = wanted.into_iter().next() {
        return Err(SinkError::Connect {
            brokers: cfg.brokers.clone(),
            reason: format!(
                "the last message of {topic}/{partition} (offset {offset}) could not be read within {timeout:?}"
            ),
        });
    }
    Ok(out)
}

/// Producer-only librdkafka properties not passed to the reconciling consumer.
const PRODUCER_ONLY: [&str; 8] = [
    "compression",
    "linger.ms",
    "batch",
    "queue.buffering",
    "message.timeout.ms",
    "request.timeout.ms",
    "partitioner",
    "delivery.timeout.ms",
];

enum Last {
    Stream(Marker),
    Snapshot(crate::snapshot::Tail),
}

/// The marker in a message's headers, if the message is this pipeline's.
fn marker_of(m: &rdkafka::message::BorrowedMessage<'_>, pipeline: &str) -> Option<Last> {
    let h = m.headers()?;
    let header = |name: &str| {
        h.iter()
            .find(|x| x.key == name)
            .and_then(|x| x.value)
            .and_then(|v| std::str::from_utf8(v).ok())
            .map(str::to_string)
    };
    if header(HEADER_PIPELINE).as_deref() != Some(pipeline) {
        return None;
    }
    if let Some(table) = header(crate::snapshot::HEADER_SNAPSHOT) {
        let key = crate::snapshot::parse_key(&header(crate::snapshot::HEADER_SNAPSHOT_KEY)?)?;
        let position = header(HEADER_POSITION).and_then(|p| p.parse().ok());
        let run = header(crate::snapshot::ondemand::HEADER_RUN);
        return Some(Last::Snapshot(crate::snapshot::Tail {
            table,
            key,
            position,
            run,
        }));
    }
    let pos = header(HEADER_POSITION)?.parse().ok()?;
    let part = header(HEADER_PART)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    Some(Last::Stream((pos, part)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_the_java_client() {
        // Values from Kafka's UtilsTest.testMurmur2.
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973932308),
            (b"foobar", -790332482),
            (b"a-little-bit-long-string", -985981536),
            (b"a-little-bit-longer-string", -1486304829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58897971,
            ),
            (b"abc", 479470107),
        ];
        for (input, want) in cases {
            assert_eq!(murmur2(input), want, "{:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn keyless_messages_go_to_partition_zero() {
        assert_eq!(partition_for(None, 3), 0);
        let p = partition_for(Some(b"{\"id\":1}"), 3);
        assert!((0..3).contains(&p));
        assert_eq!(p, partition_for(Some(b"{\"id\":1}"), 3));
    }

    #[test]
    fn skipper_skips_up_to_the_last_marker_then_lets_everything_through() {
        let t: Arc<str> = "db.t".into();
        let at = |o: u64, r: u64| Position {
            file: "binlog.000001".into(),
            offset: o,
            row: r,
            gtid: None,
        };
        let mut last = HashMap::new();
        last.insert((t.clone(), 1), (at(100, 2), 0));
        let mut s = Skipper::new(last);
        assert!(s.skip(&t, 1, (&at(50, 0), 0)));
        assert!(s.skip(&t, 1, (&at(100, 2), 0)));
        // Other partitions were empty: nothing to skip there.
        assert!(!s.skip(&t, 0, (&at(100, 1), 0)));
        // The second part of a key-changing update at the same position is new.
        assert!(!s.skip(&t, 1, (&at(100, 2), 1)));
        assert_eq!(s.pending(), 0);
        // Once cleared, even an older marker is sent (it cannot occur in order).
        assert!(!s.skip(&t, 1, (&at(100, 2), 0)));
        assert_eq!(s.skipped(), 2);
    }

    #[test]
    fn candidate_topics_follow_the_templates() {
        let cfg = KafkaConfig::default();
        let cluster = vec![
            "shop.orders".to_string(),
            "p1.schema-changes".to_string(),
            "other".to_string(),
            "p2.schema-changes".to_string(),
        ];
        let got = candidate_topics(&cfg, "p1", &[], &cluster, &["kept".to_string()]);
        // `{db}.{table}` matches any dotted name; what is not ours is told
        // apart later by the pipeline header of its last message.
        assert_eq!(
            got,
            [
                "kept",
                "p1.schema-changes",
                "p2.schema-changes",
                "shop.orders"
            ]
        );
        // With an include filter only the included tables' topics qualify
        // (plus the schema topic, whose template has no table in it).
        let got = candidate_topics(&cfg, "p1", &["shop.*".to_string()], &cluster, &[]);
        assert_eq!(got, ["p1.schema-changes", "shop.orders"]);
    }
}
