//! [`KafkaSink`]: route, encode and produce each event, track its delivery.
//!
//! The sink owns the producer, the router and the acknowledgement tracker
//! and drives them in event order; see the module doc of [`crate::sink`] for
//! the API contract and the checkpoint rule.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};

use super::acks::AckTracker;
use super::format::{self, EncodeContext, FieldNames};
use super::producer::Producer;
use super::reconcile::{partition_for, Skipper};
use super::routing::{render_topic, KeyRule, Router, TableFilter};
use super::{SinkError, HEADER_EPOCH, HEADER_GTID, HEADER_PART, HEADER_PIPELINE, HEADER_POSITION};
use crate::config::{Format, KafkaConfig};
use crate::event::{ChangeEvent, EventKind, Op, Position, RowChange};
use crate::ops::metrics::{Histogram, ProducedByTopic, TopicProduced};

/// Reads the current send deadline (the leader's lease deadline).
type DeadlineFn = Box<dyn Fn() -> Instant + Send + Sync>;

/// Streams [`ChangeEvent`]s into Kafka and reports the acknowledged position.
pub struct KafkaSink {
    producer: Producer,
    router: Router,
    tracker: AckTracker,
    format: Format,
    schema_include: bool,
    schema_topic: String,
    pipeline: Arc<str>,
    epoch: String,
    /// Reused for each message's position header text.
    position_text: String,
    window: usize,
    /// Byte bound of the window (`kafka.max_in_flight_bytes`).
    window_max_bytes: u64,
    /// Age bound of the window: nothing more is handed to the producer while
    /// the oldest unacknowledged message has waited this long (half of
    /// `message.timeout.ms`, when set). Without it a full window queued
    /// behind a broker slower than the window is large times messages out in
    /// librdkafka's queue: with the lease-bounded timeout of idempotent
    /// delivery (1 s for a 2 s lease) every burst ended in a delivery error
    /// and a step-down.
    max_age: Option<Duration>,
    /// With `max_age`: the window also stays below what the broker
    /// acknowledges in `max_age` (acknowledgement rate, measured as it goes),
    /// so the queue in front of a new message drains before its timeout.
    ack_rate: AckRate,
    /// Maxwell: the last row seen, sent once the next event shows whether it ends its transaction.
    held: Option<ChangeEvent>,
    stopped: Option<String>,
    /// Lease-gated output: no message is handed to the producer at or after this instant.
    deadline: Option<Instant>,
    /// The live deadline, read right before every hand-off (it moves with
    /// every lease keep-alive); wins over `deadline` when set.
    deadline_fn: Option<DeadlineFn>,
    /// The deadline as last read. The live one never moves back, so while the
    /// clock is a send margin short of this one no read is needed.
    deadline_seen: Option<Instant>,
    /// No hand-off this close to the deadline: a message handed off earlier is
    /// delivered or failed by the producer's own timeout before the lease can
    /// expire (idempotent delivery; see [`KafkaSink::set_send_margin`]).
    send_margin: Duration,
    /// A `send` is under way; still set at the next call means the previous
    /// `send` future was dropped mid-way (cancelled), so an event may be half sent.
    in_send: bool,
    /// Idempotent delivery: what a previous leader already wrote (see [`super::reconcile`]).
    skipper: Option<Skipper>,
    /// Skips streamed changes a snapshot segment already reflects.
    stream_filter: Option<crate::snapshot::StreamFilter>,
    /// The on-demand snapshot run whose rows are being sent (header
    /// `bb.snapshot-run` on snapshot rows).
    snapshot_run: Option<String>,
    /// Where acknowledged messages are counted (see [`KafkaSink::with_metrics`]).
    metrics: Option<SinkMetrics>,
    /// Messages and value+key bytes handed to the producer so far (batch sizing).
    sent_messages: u64,
    sent_bytes: u64,
    /// The last message's topic: consecutive messages of one table skip the
    /// topic lookups.
    last_topic: Option<LastTopic>,
}

/// A topic, its partition count and (metrics on) its counters.
struct LastTopic {
    name: Arc<str>,
    partitions: usize,
    counters: Option<Arc<TopicProduced>>,
}

/// The ops counters the sink feeds from delivery acknowledgements.
struct SinkMetrics {
    produced: Arc<ProducedByTopic>,
    topics: std::collections::HashMap<Arc<str>, Arc<TopicProduced>>,
}

impl KafkaSink {
    /// Connect to the brokers and create the topics whose names do not depend
    /// on the table (a fixed `kafka.topic`, the schema topic without `{db}`).
    /// `epoch` is the leader epoch written into every message's headers.
    pub async fn new(cfg: &KafkaConfig, pipeline: &str, epoch: i64) -> Result<Self, SinkError> {
        let mut producer = Producer::connect(cfg).await?;
        let board = producer.board();
        for template in [&cfg.topic, &cfg.schema_topic] {
            if !template.contains("{db}") && !template.contains("{table}") {
                producer
                    .ensure_topic(&render_topic(template, "", "", pipeline))
                    .await?;
            }
        }
        Ok(KafkaSink {
            producer,
            router: Router::new(cfg, pipeline, TableFilter::default()),
            // The board has room for max_in_flight (it was sized from it).
            window: usize::try_from(cfg.max_in_flight)
                .unwrap_or(usize::MAX)
                .clamp(1, board.window()),
            tracker: AckTracker::new(board),
            format: cfg.format,
            schema_include: cfg.debezium_schema,
            schema_topic: cfg.schema_topic.clone(),
            pipeline: pipeline.into(),
            epoch: epoch.to_string(),
            position_text: String::with_capacity(48),
            window_max_bytes: cfg.max_in_flight_bytes.max(1),
            max_age: cfg
                .properties
                .get("message.timeout.ms")
                .and_then(|ms| ms.trim().parse::<u64>().ok())
                .filter(|&ms| ms > 0)
                .map(|ms| Duration::from_millis(ms / 2)),
            ack_rate: AckRate::new(),
            held: None,
            stopped: None,
            deadline: None,
            deadline_fn: None,
            deadline_seen: None,
            send_margin: Duration::ZERO,
            in_send: false,
            skipper: None,
            stream_filter: None,
            snapshot_run: None,
            metrics: None,
            sent_messages: 0,
            sent_bytes: 0,
            last_topic: None,
        })
    }

    /// Count acknowledged messages and bytes per topic into `produced`, and
    /// each message's hand-off-to-acknowledgement time into `latency`.
    pub fn with_metrics(mut self, produced: Arc<ProducedByTopic>, latency: Arc<Histogram>) -> Self {
        self.tracker.set_latency(latency);
        self.metrics = Some(SinkMetrics {
            produced,
            topics: Default::default(),
        });
        self.last_topic = None;
        self
    }

    /// Send only tables the filter allows (`[mysql] include/exclude`);
    /// other tables' events still advance the acknowledged position.
    pub fn with_filter(mut self, filter: TableFilter) -> Self {
        self.router.set_filter(filter);
        self
    }

    /// Encode and produce one event. Returns once the message is handed to
    /// the producer; waits first while `max_in_flight` messages are
    /// unacknowledged (backpressure). A delivery error of an earlier message
    /// is returned here and stops the sink.
    ///
    /// Not cancel-safe: if a `send` future is dropped before it completes,
    /// the event may be half sent, so the sink stops and every later call
    /// returns [`SinkError::Stopped`]; resume from [`Self::acked_position`].
    pub async fn send(&mut self, ev: &ChangeEvent) -> Result<(), SinkError> {
        if self.in_send && self.stopped.is_none() {
            self.stopped = Some("a previous send was cancelled before it completed".into());
        }
        self.check()?;
        self.in_send = true;
        let r = self.send_inner(ev).await;
        self.in_send = false;
        r
    }

    async fn send_inner(&mut self, ev: &ChangeEvent) -> Result<(), SinkError> {
        if self.format == Format::Maxwell {
            let held = self.held.take();
            match (&ev.kind, held) {
                (EventKind::Row(_), prev) => {
                    if let Some(prev) = prev {
                        self.emit(&prev, false).await?;
                    }
                    self.held = Some(ev.clone());
                    return Ok(());
                }
                (EventKind::Commit, Some(mut prev)) => {
                    // The source learns the XID at commit: give it to the
                    // transaction's last row (Maxwell prints `xid` with `commit`).
                    if prev.txn.xid.is_none() && ev.txn.xid.is_some() {
                        prev.txn = ev.txn.clone();
                    }
                    self.emit(&prev, true).await?
                }
                (EventKind::Schema(_), Some(prev)) => self.emit(&prev, false).await?,
                (_, None) => {}
            }
        }
        self.emit(ev, true).await
    }

    /// The highest resume position up to which every message is
    /// acknowledged by Kafka — the only position that may be checkpointed.
    pub fn acked_position(&self) -> Option<Position> {
        self.tracker.acked().cloned()
    }

    /// Take in finished deliveries without sending anything; returns the
    /// acknowledged position, or the delivery error that stopped the sink.
    pub fn poll_acks(&mut self) -> Result<Option<Position>, SinkError> {
        self.check()?;
        Ok(self.acked_position())
    }

    /// Messages handed to the producer and not yet acknowledged.
    pub fn in_flight(&self) -> usize {
        self.tracker.in_flight()
    }

    /// Send a held Maxwell row (without `commit`, as its transaction end is
    /// not known yet), then wait until every message is acknowledged.
    /// Returns the acknowledged position.
    pub async fn flush(&mut self, timeout: Duration) -> Result<Option<Position>, SinkError> {
        self.check()?;
        if let Some(prev) = self.held.take() {
            self.emit(&prev, false).await?;
        }
        match tokio::time::timeout(timeout, self.tracker.wait_all()).await {
            Ok(Ok(())) => Ok(self.acked_position()),
            Ok(Err(reason)) => Err(self.stop(reason)),
            Err(_) => Err(SinkError::FlushTimeout(timeout, self.tracker.in_flight())),
        }
    }

    /// Stop output at once: purge queued and in-flight messages (they are
    /// not acknowledged, so the acknowledged position stays where it is).
    /// The sink refuses further sends.
    pub fn abort(&mut self) {
        self.held = None;
        self.producer.purge();
        if self.stopped.is_none() {
            self.stopped = Some("aborted: unacknowledged messages were purged".into());
        }
    }

    /// Gate output on a deadline (the leader's local lease deadline, on the
    /// monotonic clock): it is checked right before every hand-off to the
    /// producer; once passed, the sink purges what is unacknowledged, stops,
    /// and `send` returns [`SinkError::DeadlinePassed`]. `None` removes the gate.
    pub fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.deadline = deadline;
        self.deadline_seen = None;
    }

    /// Gate output on a deadline that moves forward only (a lease's, which
    /// each answered keep-alive extends): it is checked right before every
    /// hand-off to the producer (after any wait for room in the window),
    /// against the clock read then. `f` is called when the clock comes
    /// within the send margin of the deadline `f` last returned, so a wait
    /// never uses a stale deadline.
    pub fn set_deadline_fn(&mut self, f: impl Fn() -> Instant + Send + Sync + 'static) {
        self.deadline_fn = Some(Box::new(f));
        self.deadline_seen = None;
    }

    /// Stop handing messages to the producer `margin` before the deadline
    /// (and wait there until the deadline moves on, or passes). With `margin`
    /// at least the producer's delivery timeout, every message this leader
    /// ever handed off is delivered or has failed before its lease can
    /// expire, so a successor needs no fence delay of its own.
    pub fn set_send_margin(&mut self, margin: Duration) {
        self.send_margin = margin;
        self.deadline_seen = None;
    }

    /// Skip messages a previous leader already wrote (idempotent delivery's
    /// replay after a takeover; see [`super::reconcile`]).
    pub fn set_skipper(&mut self, skipper: Skipper) {
        self.skipper = Some(skipper);
    }

    /// Skip streamed changes that a snapshot read after a failover already
    /// reflects (see [`crate::snapshot`]).
    pub fn set_stream_filter(&mut self, filter: crate::snapshot::StreamFilter) {
        self.stream_filter = Some(filter);
    }

    /// Mark the snapshot rows sent from now on as rows of on-demand run `id`
    /// (header `bb.snapshot-run`); None for the initial snapshot.
    pub fn set_snapshot_run(&mut self, id: Option<String>) {
        self.snapshot_run = id;
    }

    /// The topic and partition a row's message goes to, or None if the
    /// table filter excludes it. Creates the topic if needed.
    pub async fn route_of(
        &mut self,
        row: &RowChange,
    ) -> Result<Option<(Arc<str>, i32)>, SinkError> {
        let route = self.router.route(&row.table)?;
        if !route.included {
            return Ok(None);
        }
        let topic = route.topic.clone();
        let key = message_key(self.format, row, &route.key, &route.names);
        let partition = self.partition(&topic, key.as_deref()).await?;
        Ok(Some((topic, partition)))
    }

    /// Wait until at most `n` messages are unacknowledged (a producer that
    /// must deliver within the lease-bounded timeout cannot take a whole
    /// table at once). A delivery error stops the sink and is returned.
    pub async fn wait_in_flight(&mut self, n: usize) -> Result<(), SinkError> {
        while self.tracker.in_flight() > n {
            if let Err(reason) = self.tracker.wait_one().await {
                return Err(self.stop(reason));
            }
        }
        Ok(())
    }

    /// Forget acknowledged resume positions once nothing is in flight (the
    /// snapshot's row counters must not be compared with binlog positions).
    pub fn reset_acks(&mut self) -> Result<(), SinkError> {
        if self.tracker.in_flight() > 0 {
            return Err(SinkError::Internal(format!(
                "reset_acks with {} messages in flight",
                self.tracker.in_flight()
            )));
        }
        self.tracker.reset();
        // The rate counts the new tracker's acknowledgements from zero.
        self.ack_rate = AckRate::new();
        Ok(())
    }

    async fn partition(&mut self, topic: &Arc<str>, key: Option<&[u8]>) -> Result<i32, SinkError> {
        self.producer.ensure_topic(topic).await?;
        Ok(partition_for(
            key,
            self.producer.partitions_of(topic).unwrap_or(1),
        ))
    }

    /// Messages skipped because a previous leader had written them.
    pub fn skipped(&self) -> u64 {
        self.skipper.as_ref().map(Skipper::skipped).unwrap_or(0)
    }

    /// Topics written so far (the set a takeover must inspect).
    pub fn topics(&self) -> Vec<String> {
        self.producer.topics().map(str::to_string).collect()
    }

    /// The producer seam, for delivery modes layered on top (transactions).
    pub fn producer(&self) -> &Producer {
        &self.producer
    }

    /// Make sure a topic exists (created with `kafka.partitions` when
    /// missing and allowed), e.g. the progress topic of transactional delivery.
    pub async fn ensure_topic(&mut self, topic: &str) -> Result<(), SinkError> {
        self.producer.ensure_topic(topic).await
    }

    /// Messages and bytes (key + value) handed to the producer so far.
    pub fn sent_totals(&self) -> (u64, u64) {
        (self.sent_messages, self.sent_bytes)
    }

    /// Where to resume once everything handed over so far is in Kafka
    /// (acknowledged or not yet): the end of a transactional batch. A held
    /// Maxwell row is not handed over, so it is not included.
    pub fn handed_over_position(&self) -> Option<Position> {
        self.tracker.last_queued().cloned()
    }

    /// Wait until every message handed over is acknowledged, without
    /// sending a held Maxwell row (after a transactional commit this returns
    /// at once: the commit flushed everything).
    pub async fn settle(&mut self, timeout: Duration) -> Result<Option<Position>, SinkError> {
        self.check()?;
        match tokio::time::timeout(timeout, self.tracker.wait_all()).await {
            Ok(Ok(())) => Ok(self.acked_position()),
            Ok(Err(reason)) => Err(self.stop(reason)),
            Err(_) => Err(SinkError::FlushTimeout(timeout, self.tracker.in_flight())),
        }
    }

    fn check(&mut self) -> Result<(), SinkError> {
        if let Some(reason) = &self.stopped {
            return Err(SinkError::Stopped(reason.clone()));
        }
        if let Err(reason) = self.tracker.poll_ready() {
            return Err(self.stop(reason));
        }
        Ok(())
    }

    fn stop(&mut self, reason: String) -> SinkError {
        self.stopped = Some(reason.clone());
        SinkError::Delivery(reason)
    }

    async fn emit(&mut self, ev: &ChangeEvent, last_in_txn: bool) -> Result<(), SinkError> {
        let pipeline = self.pipeline.clone();
        match &ev.kind {
            EventKind::Commit => {
                self.tracker.push_resume(ev.position.clone());
            }
            EventKind::Schema(ddl) => {
                let ctx = encode_context(&pipeline, last_in_txn, self.schema_include);
                let target = format::classify_ddl(&ddl.statement, &ddl.database);
                let encoded = if self.router.allows_ddl(&target, &ddl.statement) {
                    format::encode_ddl(self.format, ddl, &ev.txn, &ev.position, &ctx)
                } else {
                    None
                };
                if let Some((key, value)) = encoded {
                    let topic: Arc<str> = render_topic(
                        &self.schema_topic,
                        &target.database,
                        &target.table,
                        &self.pipeline,
                    )
                    .into();
                    self.produce(topic, Some(&key), &value, ev, 0).await?;
                }
                self.tracker.push_resume(ev.position.next_row());
            }
            EventKind::Row(row) => {
                let ctx = encode_context(&pipeline, last_in_txn, self.schema_include);
                let route = self.router.route_shared(&row.table)?.clone();
                if route.included {
                    let split = split_key_change(row, &route.key);
                    let parts = match &split {
                        None => [Some(row), None],
                        Some([delete, insert]) => [Some(delete), Some(insert)],
                    };
                    for (index, part) in parts.into_iter().flatten().enumerate() {
                        let value = format::encode_row_named(
                            self.format,
                            part,
                            &ev.txn,
                            &ev.position,
                            &ctx,
                            &route.names,
                        )
                        .map_err(|source| SinkError::Format {
                            position: ev.position.to_string(),
                            source,
                        })?;
                        let key = message_key(self.format, part, &route.key, &route.names);
                        if self.stream_filter.is_some() && part.op != Op::Read {
                            let partition = self.partition(&route.topic, key.as_deref()).await?;
                            if let Some(f) = &mut self.stream_filter {
                                if f.skip(part, &ev.position, &route.topic, partition) {
                                    continue;
                                }
                            }
                        }
                        self.produce(
                            route.topic.clone(),
                            key.as_deref(),
                            &value,
                            ev,
                            index as u32,
                        )
                        .await?;
                    }
                }
                self.tracker.push_resume(ev.position.next_row());
            }
        }
        Ok(())
    }

    /// The lease gate, right before a hand-off: an error once the deadline
    /// has passed; inside the send margin, wait for a keep-alive to move the
    /// deadline on (it does every TTL/10 while etcd answers).
    /// `now` is the clock read just before; returns the time it read last
    /// (the hand-off's time).
    async fn wait_for_gate(&mut self, mut now: Instant) -> Result<Instant, SinkError> {
        if self
            .deadline_seen
            .is_some_and(|d| now + self.send_margin < d)
        {
            return Ok(now);
        }
        loop {
            let Some(d) = self.deadline_fn.as_ref().map(|f| f()).or(self.deadline) else {
                return Ok(now);
            };
            self.deadline_seen = Some(d);
            if now >= d {
                self.abort();
                self.stopped = Some("the send deadline (lease) passed".into());
                return Err(SinkError::DeadlinePassed);
            }
            if now + self.send_margin < d {
                return Ok(now);
            }
            tokio::time::sleep((d - now).min(GATE_POLL)).await;
            now = Instant::now();
        }
    }

    /// Hand one message to the producer, waiting for room in the window.
    async fn produce(
        &mut self,
        topic: Arc<str>,
        key: Option<&[u8]>,
        value: &[u8],
        ev: &ChangeEvent,
        part: u32,
    ) -> Result<(), SinkError> {
        let (partitions, counters) = match &self.last_topic {
            Some(t) if Arc::ptr_eq(&t.name, &topic) => (t.partitions, t.counters.clone()),
            _ => {
                self.producer.ensure_topic(&topic).await?;
                let partitions = self.producer.partitions_of(&topic).unwrap_or(1);
                let counters = self.metrics.as_mut().map(|m| {
                    m.topics
                        .entry(topic.clone())
                        .or_insert_with(|| m.produced.topic(&topic))
                        .clone()
                });
                self.last_topic = Some(LastTopic {
                    name: topic.clone(),
                    partitions,
                    counters: counters.clone(),
                });
                (partitions, counters)
            }
        };
        // The sink picks the partition itself (murmur2 of the key, as Java
        // producers do) so that a takeover knows where each event went.
        let partition = partition_for(key, partitions);
        if let Some(s) = &mut self.skipper {
            if s.skip(&topic, partition, (&ev.position, part)) {
                return Ok(());
            }
        }
        let bytes = (key.map_or(0, <[u8]>::len) + value.len()) as u64;
        // One clock read for the age-based checks and the gate, unless the
        // window makes this message wait.
        let mut now = Instant::now();
        loop {
            let age_now = self.max_age.map(|_| now);
            if self.tracker.in_flight() < self.effective_window(age_now)
                && !self.oldest_too_old(age_now)
                && !self.bytes_full(bytes)
            {
                break;
            }
            if let Err(reason) = self.tracker.wait_one().await {
                return Err(self.stop(reason));
            }
            now = Instant::now();
        }
        let sent = self.wait_for_gate(now).await?;
        loop {
            match self.producer.send(
                self.tracker.next_token(),
                &topic,
                partition,
                key,
                value,
                headers(
                    &mut self.position_text,
                    ev,
                    &self.pipeline,
                    &self.epoch,
                    part,
                    self.snapshot_run.as_deref(),
                ),
            ) {
                Ok(()) => {
                    self.sent_messages += 1;
                    self.sent_bytes += bytes;
                    self.tracker.push_message(sent.into_std(), bytes, counters);
                    return Ok(());
                }
                Err(KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull)) => {
                    // librdkafka's own queue is full: let deliveries complete.
                    if self.tracker.in_flight() > 0 {
                        if let Err(reason) = self.tracker.wait_one().await {
                            return Err(self.stop(reason));
                        }
                    } else {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
                Err(e) => {
                    let err = SinkError::Enqueue {
                        topic: topic.to_string(),
                        position: ev.position.to_string(),
                        reason: e.to_string(),
                    };
                    self.stopped = Some(err.to_string());
                    return Err(err);
                }
            }
        }
    }
}

/// How often a send held inside the margin looks at the deadline again.
const GATE_POLL: Duration = Duration::from_millis(5);

/// Smallest window the acknowledgement rate may shrink it to.
const MIN_WINDOW: usize = 1000;

/// Acknowledged messages per second, smoothed, sampled at most every 100 ms.
struct AckRate {
    mark: Instant,
    mark_acked: u64,
    per_sec: f64,
}

impl AckRate {
    fn new() -> Self {
        AckRate {
            mark: Instant::now(),
            mark_acked: 0,
            per_sec: 0.0,
        }
    }

    fn update(&mut self, acked: u64, at: Instant) -> f64 {
        let dt = at.saturating_duration_since(self.mark).as_secs_f64();
        if dt >= 0.1 {
            let now = acked.saturating_sub(self.mark_acked) as f64 / dt;
            self.per_sec = if self.per_sec == 0.0 {
                now
            } else {
                0.7 * self.per_sec + 0.3 * now
            };
            self.mark = at;
            self.mark_acked = acked;
        }
        self.per_sec
    }
}

impl KafkaSink {
    /// `max_in_flight`, or with an age bound, what the broker acknowledges
    /// within it (at least [`MIN_WINDOW`]).
    fn effective_window(&mut self, now: Option<Instant>) -> usize {
        let (Some(max), Some(now)) = (self.max_age, now) else {
            return self.window;
        };
        let rate = self.ack_rate.update(self.tracker.acked_messages(), now);
        ((rate * max.as_secs_f64()) as usize).clamp(MIN_WINDOW.min(self.window), self.window)
    }

    /// A message of `bytes` does not fit beside what is in flight
    /// (`max_in_flight_bytes`); one message alone always fits.
    fn bytes_full(&self, bytes: u64) -> bool {
        let held = self.tracker.in_flight_bytes();
        held > 0 && held + bytes > self.window_max_bytes
    }

    /// Key + value bytes handed to the producer and not yet acknowledged.
    pub fn in_flight_bytes(&self) -> u64 {
        self.tracker.in_flight_bytes()
    }

    /// The oldest unacknowledged message has waited `max_age` or longer.
    fn oldest_too_old(&self, now: Option<Instant>) -> bool {
        match (self.max_age, now, self.tracker.oldest_sent()) {
            (Some(max), Some(now), Some(at)) => now.into_std().saturating_duration_since(at) >= max,
            _ => false,
        }
    }
}

/// What the encoders need besides the event; the wall clock is read here,
/// once per event that is encoded (a commit marker needs none).
fn encode_context(pipeline: &str, last_in_txn: bool, schema_include: bool) -> EncodeContext<'_> {
    EncodeContext {
        pipeline,
        now_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
        last_in_txn,
        schema_include,
    }
}

/// The headers of one message; `position_text` is a buffer reused for the
/// position's text (librdkafka copies every header value).
fn headers(
    position_text: &mut String,
    ev: &ChangeEvent,
    pipeline: &str,
    epoch: &str,
    part: u32,
    run: Option<&str>,
) -> OwnedHeaders {
    position_text.clear();
    ev.position.write_text(position_text);
    let mut h = OwnedHeaders::new_with_capacity(4)
        .insert(Header {
            key: HEADER_POSITION,
            value: Some(position_text.as_bytes()),
        })
        .insert(Header {
            key: HEADER_PIPELINE,
            value: Some(pipeline.as_bytes()),
        })
        .insert(Header {
            key: HEADER_EPOCH,
            value: Some(epoch.as_bytes()),
        });
    if part > 0 {
        h = h.insert(Header {
            key: HEADER_PART,
            value: Some(part.to_string().as_bytes()),
        });
    }
    if let Some(g) = &ev.position.gtid {
        h = h.insert(Header {
            key: HEADER_GTID,
            value: Some(g.as_bytes()),
        });
    }
    // Snapshot rows name their table and key, so a takeover in the middle
    // of a snapshot knows which rows each partition already holds.
    if let EventKind::Row(row) = &ev.kind {
        if row.op == Op::Read {
            let table = format!("{}.{}", row.table.database, row.table.table);
            let key = crate::snapshot::key_of(row)
                .map(|k| crate::snapshot::key_text(&k))
                .unwrap_or_default();
            h = h
                .insert(Header {
                    key: crate::snapshot::HEADER_SNAPSHOT,
                    value: Some(table.as_bytes()),
                })
                .insert(Header {
                    key: crate::snapshot::HEADER_SNAPSHOT_KEY,
                    value: Some(key.as_bytes()),
                });
            if let Some(run) = run {
                h = h.insert(Header {
                    key: crate::snapshot::ondemand::HEADER_RUN,
                    value: Some(run.as_bytes()),
                });
            }
        }
    }
    h
}

/// The message key of a row: JSON of its key columns, a fixed key, or none.
fn message_key(
    fmt: Format,
    row: &RowChange,
    rule: &KeyRule,
    names: &FieldNames,
) -> Option<Vec<u8>> {
    match rule {
        KeyRule::Columns(cols) => {
            let image = row.after.as_ref().or(row.before.as_ref());
            image.map(|v| format::encode_key_named(fmt, &row.table, v, cols, names))
        }
        KeyRule::Fixed(k) => Some(k.clone()),
        KeyRule::None => None,
    }
}

/// An update that changes the message key becomes a delete of the old key
/// and an insert of the new one (each lands in its key's partition), as
/// Debezium does. `None` means "the row itself" (no allocation per row).
fn split_key_change(row: &RowChange, rule: &KeyRule) -> Option<[RowChange; 2]> {
    let KeyRule::Columns(cols) = rule else {
        return None;
    };
    if row.op != Op::Update {
        return None;
    }
    let (Some(before), Some(after)) = (&row.before, &row.after) else {
        return None;
    };
    if cols.iter().all(|&i| before.get(i) == after.get(i)) {
        return None;
    }
    Some([
        RowChange {
            table: row.table.clone(),
            op: Op::Delete,
            before: Some(before.clone()),
            after: None,
        },
        RowChange {
            table: row.table.clone(),
            op: Op::Insert,
            before: None,
            after: Some(after.clone()),
        },
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_send<T: Send>(_: &T) {}

    /// Compile-time check: the pipeline can run the sink inside `tokio::spawn`.
    #[allow(dead_code)]
    fn send_future_is_send(s: &mut KafkaSink, e: &ChangeEvent) {
        is_send(&s.send(e));
    }

    /// After the snapshot the acknowledgement counter restarts from zero: a
    /// sample below the last one is a rate of 0, not an overflow (it was a
    /// panic in debug builds, measured in tests/snapshot_purge.rs).
    #[test]
    fn ack_rate_survives_a_counter_restart() {
        let mut r = AckRate::new();
        std::thread::sleep(Duration::from_millis(110));
        assert!(r.update(50, Instant::now()) > 0.0);
        std::thread::sleep(Duration::from_millis(110));
        let after = r.update(10, Instant::now());
        assert!(after.is_finite() && after >= 0.0, "{after}");
    }
}
