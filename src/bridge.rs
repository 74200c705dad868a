//! `binlog-bridge run`: the binlog source and the Kafka sink plugged into the
//! leader loop, with the ops endpoints beside them.
//!
//! While this process leads, [`Bridge`] streams: a task reads the binlog into
//! a bounded channel (so a slow Kafka back-pressures the source, and the main
//! loop can wait for events, checkpoint ticks and lease loss at once without
//! cancelling a half-read event), the loop hands each event to the sink, and
//! the sink's *acknowledged* position is given to the checkpoint writer.
//!
//! Invariants enforced here:
//! 1. Only [`KafkaSink::acked_position`] (or what `flush` returns) is ever
//!    checkpointed: everything before it is in Kafka.
//! 2. No message is handed to the producer at or after the lease deadline
//!    (`set_deadline` before every send; the sink checks it right before the
//!    hand-off).
//! 3. On lease loss the producer is purged and the work returns at once; the
//!    pipeline also drops this future, and dropping the producer purges it.
//! 4. Exactly-once without transactions: nothing is handed to the producer
//!    within the fence delay (its delivery timeout plus slack) of the
//!    deadline, so everything a leader sent is settled before its lease can
//!    expire and its successor reads the partitions without waiting.
//! 5. A leader frozen whole (SIGSTOP) while leading with idempotent delivery
//!    is killed by its watchdog process just before its lease can expire
//!    (`coord::watchdog`), so it cannot send once it runs again.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Delivery, StartPosition};
use crate::coord::Identity;
use crate::event::{ChangeEvent, Position};
use crate::ops::{OpsState, Role as OpsRole};
use crate::pipeline::{self, LeaderContext, LeaderWork, Options, Role, WorkError};
use crate::sink::txn::TxnError;
use crate::sink::{KafkaSink, SinkError, TableFilter};
use crate::snapshot::ondemand_run::OnDemand;
use crate::source::{BinlogSource, SourceError, SourceOptions, StartFrom};

mod counts;
mod delivery;
mod feed;
mod txn;

use counts::Counts;
pub use delivery::{delivery_name, delivery_timeout, resolve_delivery, FENCE_SLACK};
use delivery::{fence_wait, producer_settings};
use feed::Feed;

/// Events read ahead of the sink. Bounded: a slow Kafka stops the reader.
const READ_AHEAD: usize = 4096;
/// Checkpoint field: the leader that wrote it stopped gracefully, with
/// everything it sent acknowledged.
pub const CLEAN_STOP: &str = "clean_stop";
/// Checkpoint field: the send margin (ms) the leader that wrote it kept
/// before its lease deadline (idempotent delivery). A successor waits only
/// what that margin does not already cover of the fence delay; a checkpoint
/// without the field (written by a version without the margin) gets the
/// whole delay.
pub const SEND_MARGIN_MS: &str = "send_margin_ms";
/// How long the broker probe of `kafka.delivery = "auto"` / `"transactional"`
/// may take when leading, and at startup (where it holds up joining the election).
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
const STARTUP_PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a graceful stop waits for Kafka to acknowledge the last batch.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the leader work stopped.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error("binlog source: {0}")]
    Source(#[from] SourceError),
    #[error("Kafka sink: {0}")]
    Sink(#[from] SinkError),
    #[error("Kafka transaction: {0}")]
    Txn(#[from] TxnError),
    #[error("{0}")]
    Config(String),
}

fn failed(e: impl Into<BridgeError>) -> WorkError {
    WorkError::Failed(Box::new(e.into()))
}

/// An event the reader sent, or why the leader loop stops: the reader's
/// error, or the reader gone without one.
fn received(ev: Option<Result<ChangeEvent, SourceError>>) -> Result<ChangeEvent, WorkError> {
    match ev {
        Some(Ok(ev)) => Ok(ev),
        Some(Err(e)) => Err(failed(e)),
        None => Err(failed(BridgeError::Config(
            "the binlog reader stopped without an error".into(),
        ))),
    }
}

/// The production leader work: binlog -> Kafka -> checkpoint.
pub struct Bridge {
    config: Config,
    ops: Arc<OpsState>,
    /// The delivery mode in force: `kafka.delivery`, with `auto` replaced by
    /// what the broker probe chose (probed again at takeover until known).
    delivery: std::sync::Mutex<Option<Delivery>>,
    /// Kills this process if it freezes while leading with idempotent
    /// delivery (`etcd.watchdog`; see `coord::watchdog`).
    watchdog: Option<crate::coord::watchdog::Watchdog>,
}

impl Bridge {
    pub fn new(config: Config, ops: Arc<OpsState>) -> Bridge {
        let delivery = std::sync::Mutex::new(None);
        Bridge {
            config,
            ops,
            delivery,
            watchdog: None,
        }
    }

    /// The delivery mode to use ([`resolve_delivery`]), probed once the
    /// broker answers (waiting up to `timeout`) and remembered from then on.
    pub async fn delivery(&self, timeout: Duration) -> Result<Delivery, BridgeError> {
        if let Some(d) = *self.delivery.lock().unwrap_or_else(|e| e.into_inner()) {
            return Ok(d);
        }
        let chosen = resolve_delivery(&self.config.kafka, timeout).await?;
        *self.delivery.lock().unwrap_or_else(|e| e.into_inner()) = Some(chosen);
        Ok(chosen)
    }

    fn start_from(&self, ctx: &LeaderContext) -> Result<StartFrom, WorkError> {
        if let Some(c) = &ctx.resume {
            return Ok(StartFrom::Position(c.position.clone()));
        }
        StartPosition::parse(&self.config.mysql.start)
            .map(StartFrom::from)
            .map_err(|e| failed(BridgeError::Config(format!("mysql.start: {e}"))))
    }
}

impl LeaderWork for Bridge {
    async fn run(&self, ctx: LeaderContext) -> Result<(), WorkError> {
        let kafka = &self.config.kafka;
        let mysql = &self.config.mysql;
        let delivery = self.delivery(PROBE_TIMEOUT).await.map_err(failed)?;
        // The initial snapshot (src/snapshot) runs before streaming; a
        // finished one may leave a filter for the first streamed changes.
        let (snapshot, mut stream_filter) = self.snapshot_plan(&ctx)?;
        self.ops.update(|s| {
            s.streaming = false;
            s.epoch = Some(ctx.epoch);
            s.delivery = Some(delivery_name(delivery).into());
            s.reason = Some("leader: connecting to Kafka and MySQL".into());
        });
        ctx.checkpoint
            .set_extra("delivery", serde_json::json!(delivery_name(delivery)))
            .await;
        if delivery == Delivery::Transactional {
            if snapshot.is_some() {
                return Err(failed(BridgeError::Config(
                    "snapshot.mode = \"initial\" runs with idempotent or at-least-once delivery in this version, and the broker was chosen for transactional delivery; set kafka.delivery = \"idempotent\" for the snapshot, or snapshot.mode = \"never\"".into(),
                )));
            }
            crate::snapshot::ondemand_run::refuse_all(&self.config, &ctx).await;
            return self.run_transactional(ctx).await;
        }
        let mut from = self.start_from(&ctx)?;

        let exactly_once = matches!(delivery, Delivery::Idempotent | Delivery::Auto);
        let kafka = &producer_settings(kafka, self.config.etcd.lease_ttl_secs, exactly_once);
        // Whether the last leader stopped cleanly: it flushed everything and
        // wrote its final checkpoint, and nobody has led since (every leader
        // clears the flag below before it sends anything). Then the
        // checkpoint is exact and the exactly-once fence is not needed; so it
        // is not either when there is no checkpoint at all (nobody sent).
        let clean = match &ctx.resume {
            None => true,
            Some(c) => c.extra.get(CLEAN_STOP) == Some(&serde_json::Value::Bool(true)),
        };
        let mut snapshot = snapshot;
        let mut source = match snapshot {
            Some(_) => None,
            None => {
                match BinlogSource::start(mysql, SourceOptions::default(), from.clone()).await {
                    Ok(source) => Some(source),
                    Err(e @ SourceError::Purged { .. }) => {
                        self.on_purged(e)?;
                        // A new snapshot of every table replaces the old stream
                        // state (and whatever filter the old snapshot left).
                        snapshot = Some(None);
                        stream_filter = None;
                        None
                    }
                    Err(e) => return Err(failed(e)),
                }
            }
        };
        // Before any output: record where this leader starts and that it has
        // not stopped cleanly (yet).
        ctx.checkpoint
            .set_extra(CLEAN_STOP, serde_json::Value::Bool(false))
            .await;
        let fence = delivery_timeout(self.config.etcd.lease_ttl_secs) + FENCE_SLACK;
        let send_margin = if exactly_once { fence } else { Duration::ZERO };
        ctx.checkpoint
            .set_extra(
                SEND_MARGIN_MS,
                serde_json::json!(send_margin.as_millis() as u64),
            )
            .await;
        if let Some(p) = source.as_ref().and_then(BinlogSource::position) {
            ctx.checkpoint.acked(&p).await?;
        }
        ctx.checkpoint.flush().await?;

        let mut sink = KafkaSink::new(kafka, &self.config.etcd.pipeline, ctx.epoch)
            .await
            .map_err(failed)?
            .with_filter(TableFilter::new(&mysql.include, &mysql.exclude))
            .with_metrics(
                self.ops.metrics.produced.clone(),
                self.ops.metrics.kafka_delivery_seconds.clone(),
            );
        // Invariant 2: the sink reads the live lease deadline right before
        // every hand-off to the producer.
        let session = ctx.session();
        sink.set_deadline_fn(move || session.deadline());
        // Invariant 4: hand-offs stop a delivery timeout (plus slack) before
        // the deadline, so whatever this leader sent is settled before its
        // lease can expire and the next leader can read the partitions at once.
        sink.set_send_margin(send_margin);
        // Invariant 5: a leader frozen whole cannot purge its producer; the
        // watchdog kills it before its lease can expire.
        let _armed = match (&self.watchdog, exactly_once) {
            (Some(w), true) => {
                let session = ctx.session();
                Some(w.arm(move || session.deadline()))
            }
            _ => None,
        };
        let mut snapshot_tails = HashMap::new();
        if exactly_once && !clean {
            snapshot_tails = self.reconcile(&ctx, kafka, &mut sink).await?;
        } else if exactly_once {
            tracing::info!("the previous leader stopped cleanly: resuming without the fence delay");
        }
        if let Some(resume) = snapshot {
            use crate::snapshot::run::{run as snapshot_run, Outcome};
            let outcome = snapshot_run(
                &self.config,
                &ctx,
                &self.ops,
                &mut sink,
                resume,
                &snapshot_tails,
            )
            .await;
            match outcome {
                Err(e) => {
                    sink.abort();
                    return Err(e);
                }
                Ok(Outcome::Stopped) => {
                    ctx.checkpoint
                        .set_extra(CLEAN_STOP, serde_json::Value::Bool(true))
                        .await;
                    return Ok(());
                }
                Ok(Outcome::Done(state)) => {
                    stream_filter = crate::snapshot::StreamFilter::new(&state);
                    from = StartFrom::Position(state.position.clone());
                    source = Some(
                        BinlogSource::start(mysql, SourceOptions::default(), from.clone())
                            .await
                            .map_err(failed)?,
                    );
                }
            }
        }
        if let Some(f) = stream_filter {
            sink.set_stream_filter(f);
        }
        let Some(source) = source else {
            return Err(failed(BridgeError::Config(
                "internal: no binlog source after the snapshot".into(),
            )));
        };
        tracing::info!(epoch = ctx.epoch, from = ?from, "streaming");

        // On-demand snapshots (`binlog-bridge snapshot`) run between
        // transactions of the stream (src/snapshot/ondemand.rs).
        let mut ondemand = OnDemand::new(&self.config, &ctx, self.ops.clone())?;
        ondemand
            .start(&ctx, source.position(), source.progress(), &snapshot_tails)
            .await?;

        let outage = source.outage();
        let mut down = false;
        let (mut feed, _abort_reader) = self.spawn_reader(source);

        self.ops.update(|s| {
            s.streaming = true;
            s.reason = None;
        });
        let mut counts = Counts::default();
        let mut topics_recorded = known_topics(&ctx);
        let mut last: Option<(Position, u64)> = None;
        let mut tick = tokio::time::interval(Duration::from_millis(
            (self.config.etcd.checkpoint_interval_ms / 2).clamp(20, 500),
        ));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

        let result: Result<(), WorkError> = loop {
            let ev = match feed.ready() {
                Some(ev) => Some(ev),
                None => tokio::select! {
                    biased;
                    _ = ctx.lost().cancelled() => {
                        sink.abort();
                        break Err(WorkError::SessionLost);
                    }
                    _ = ctx.stop().cancelled() => break Ok(()),
                    _ = std::future::ready(()), if ondemand.due_idle(|| feed.is_empty()) => {
                        if let Err(e) = ondemand.deliver(&ctx, &mut sink).await {
                            break Err(e);
                        }
                        continue;
                    }
                    _ = tick.tick() => {
                        if let Err(e) = ondemand.poll(&ctx).await {
                            break Err(e);
                        }
                        self.publish(&mut counts, &sink, last.as_ref());
                        self.follow_outage(&outage, &mut down);
                        let mut topics = sink.topics();
                        topics.sort();
                        if topics != topics_recorded {
                            ctx.checkpoint.set_extra("topics", serde_json::json!(topics)).await;
                            topics_recorded = topics;
                        }
                        match sink.poll_acks() {
                            Ok(Some(p)) => {
                                let started = std::time::Instant::now();
                                if ctx.checkpoint.acked(&p).await? {
                                    self.ops.metrics.checkpoint_commit_seconds.observe(started.elapsed());
                                    self.ops.metrics.checkpoint_unix.set(crate::ops::unix_now());
                                    self.ops.update(|s| s.checkpoint = Some(p.to_string()));
                                }
                            }
                            Ok(None) => {}
                            Err(e) => break Err(self.sink_failed(e)),
                        }
                        continue;
                    }
                    ev = feed.next() => ev,
                },
            };
            let ev = match received(ev) {
                Ok(ev) => ev,
                Err(e) => break Err(e),
            };
            counts.count(&ev);
            last = Some((ev.position.clone(), ev.txn.ts_ms));
            // A waiting on-demand chunk goes out between transactions: before
            // the first event at or after its read position, or right after
            // the commit that reaches it.
            if ondemand.due_before(&ev) {
                if let Err(e) = ondemand.deliver(&ctx, &mut sink).await {
                    break Err(e);
                }
            }
            if let Err(e) = sink.send(&ev).await {
                break Err(self.sink_failed(e));
            }
            ondemand.note(&ev);
            if ondemand.due_after() {
                if let Err(e) = ondemand.deliver(&ctx, &mut sink).await {
                    break Err(e);
                }
            }
        };
        self.publish(&mut counts, &sink, last.as_ref());
        self.ops.update(|s| {
            s.streaming = false;
            s.reason = Some("leader: stopping".into());
        });
        if result.is_err() {
            sink.abort();
            return result;
        }
        // Graceful stop: wait for every acknowledgement; the pipeline writes
        // the final checkpoint after we return.
        match sink.flush(FLUSH_TIMEOUT).await {
            Ok(p) => {
                if let Some(p) = p {
                    ctx.checkpoint.acked(&p).await?;
                }
                // Everything sent is acknowledged and checkpointed (the
                // pipeline writes this final checkpoint after we return).
                ctx.checkpoint
                    .set_extra(CLEAN_STOP, serde_json::Value::Bool(true))
                    .await;
            }
            Err(e) => {
                sink.abort();
                return Err(failed(e));
            }
        }
        Ok(())
    }
}

impl Bridge {
    /// The reader task: binlog -> bounded channel. Dropping the guard stops it.
    fn spawn_reader(
        &self,
        mut source: BinlogSource,
    ) -> (Feed<Result<ChangeEvent, SourceError>>, AbortOnDrop) {
        let (tx, rx) = mpsc::channel::<Result<ChangeEvent, SourceError>>(READ_AHEAD);
        let ops = self.ops.clone();
        let reader = tokio::spawn(async move {
            let mut reconnects = source.reconnects;
            loop {
                let ev = source.next_event().await;
                if source.reconnects != reconnects {
                    ops.metrics
                        .source_reconnects
                        .add(source.reconnects - reconnects);
                    reconnects = source.reconnects;
                }
                let end = ev.is_err();
                if tx.send(ev).await.is_err() || end {
                    break;
                }
            }
        });
        (Feed::new(rx), AbortOnDrop(reader))
    }
}

/// Partitions whose last message is a snapshot row: its table and key.
type SnapshotTails = HashMap<(Arc<str>, i32), crate::snapshot::Tail>;

/// Run the snapshot first (resuming this state, if any); stream filter.
type SnapshotPlan = (
    Option<Option<crate::snapshot::SnapshotState>>,
    Option<crate::snapshot::StreamFilter>,
);

/// The topic set recorded in the checkpoint being resumed.
fn known_topics(ctx: &LeaderContext) -> Vec<String> {
    ctx.resume
        .as_ref()
        .and_then(|c| c.extra.get("topics"))
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default()
}

impl Bridge {
    /// Idempotent delivery's takeover: wait out the fence delay, read the
    /// last message of every partition this pipeline may have written, and
    /// have the sink skip what is already there (see `sink::reconcile`).
    async fn reconcile(
        &self,
        ctx: &LeaderContext,
        kafka: &crate::config::KafkaConfig,
        sink: &mut KafkaSink,
    ) -> Result<SnapshotTails, WorkError> {
        let fence = fence_wait(
            delivery_timeout(self.config.etcd.lease_ttl_secs) + FENCE_SLACK,
            ctx.resume.as_ref().map(|c| &c.extra),
        );
        let started = std::time::Instant::now();
        tokio::select! {
            biased;
            _ = ctx.lost().cancelled() => return Err(WorkError::SessionLost),
            _ = ctx.stop().cancelled() => return Ok(HashMap::new()),
            _ = tokio::time::sleep(fence) => {}
        }
        let known = known_topics(ctx);
        let cfg = kafka.clone();
        let pipeline = self.config.etcd.pipeline.clone();
        let include = self.config.mysql.include.clone();
        let markers = tokio::task::spawn_blocking(move || {
            crate::sink::reconcile::last_messages(
                &cfg,
                &pipeline,
                &include,
                &known,
                Duration::from_secs(10),
            )
        })
        .await
        .map_err(|e| failed(BridgeError::Config(format!("reconcile task failed: {e}"))))?
        .map_err(failed)?;
        tracing::info!(
            partitions = markers.stream.len() + markers.snapshot.len(),
            fence_ms = fence.as_millis() as u64,
            took_ms = started.elapsed().as_millis() as u64,
            "exactly-once takeover: read the last message of every partition written before"
        );
        sink.set_skipper(crate::sink::reconcile::Skipper::new(markers.stream));
        Ok(markers.snapshot)
    }

    /// Whether this leader runs the initial snapshot first (with the state
    /// to resume, if a previous leader began it), and the filter a finished
    /// snapshot leaves for the first streamed changes.
    fn snapshot_plan(&self, ctx: &LeaderContext) -> Result<SnapshotPlan, WorkError> {
        let state = match &ctx.resume {
            Some(c) => crate::snapshot::SnapshotState::from_extra(&c.extra)
                .map_err(|e| failed(BridgeError::Config(e)))?,
            None => None,
        };
        Ok(match state {
            Some(s) if !s.done => (Some(Some(s)), None),
            Some(s) => (None, crate::snapshot::StreamFilter::new(&s)),
            None if ctx.resume.is_none() && self.config.snapshot.mode.initial() => {
                (Some(None), None)
            }
            None => (None, None),
        })
    }

    /// The checkpointed position is purged from the server. With
    /// `snapshot.mode = "when-needed"` and `allow_resnapshot_on_purge` the
    /// caller takes a new snapshot of every table (logged here, at warn);
    /// otherwise this is the definite error, with what to do about it.
    fn on_purged(&self, e: SourceError) -> Result<(), WorkError> {
        let snap = &self.config.snapshot;
        if snap.mode == crate::config::SnapshotMode::WhenNeeded && snap.allow_resnapshot_on_purge {
            tracing::warn!(error = %e, "the checkpointed binlog position is purged from the server: snapshot.mode = \"when-needed\" with allow_resnapshot_on_purge = true, so every included table is read again (consumers receive all its rows again as snapshot reads) and streaming restarts from the new snapshot's position");
            return Ok(());
        }
        if snap.mode != crate::config::SnapshotMode::WhenNeeded {
            return Err(failed(e));
        }
        Err(failed(BridgeError::Config(format!(
            "binlog source: {e}; snapshot.mode = \"when-needed\" takes a new snapshot of every table in this case only when snapshot.allow_resnapshot_on_purge = true confirms it"
        ))))
    }

    /// Not streaming while the binlog connection is being re-established:
    /// /readyz says so (and why) until it is back.
    fn follow_outage(&self, outage: &crate::source::Outage, down: &mut bool) {
        let now = outage.lock().ok().and_then(|g| g.clone());
        match (now, *down) {
            (Some(e), _) => {
                *down = true;
                self.ops.update(|s| {
                    s.streaming = false;
                    s.reason = Some(format!(
                        "leader: the binlog connection is down, reconnecting: {e}"
                    ));
                });
            }
            (None, true) => {
                *down = false;
                self.ops.update(|s| {
                    s.streaming = true;
                    s.reason = None;
                });
            }
            (None, false) => {}
        }
    }

    /// A sink error, counted when it is a failed delivery.
    fn sink_failed(&self, e: SinkError) -> WorkError {
        if matches!(e, SinkError::Delivery(_)) {
            self.ops.metrics.kafka_delivery_errors.inc();
        }
        failed(e)
    }

    fn publish(&self, counts: &mut Counts, sink: &KafkaSink, last: Option<&(Position, u64)>) {
        counts.publish(&self.ops);
        let m = &self.ops.metrics;
        m.kafka_in_flight.set(sink.in_flight() as i64);
        if let Some((pos, ts_ms)) = last {
            m.binlog_file_index
                .set(pos.file_index().unwrap_or(0) as f64);
            m.binlog_offset.set(pos.offset as f64);
            let lag = (crate::ops::unix_now() - *ts_ms as f64 / 1000.0).max(0.0);
            m.lag_seconds.set(lag);
            let text = pos.to_string();
            self.ops.update(|s| {
                s.position = Some(text);
                s.lag_seconds = Some(lag);
            });
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// `binlog-bridge run`.
pub async fn main(config: Config) -> ExitCode {
    let identity = Identity::current(&config.http.listen);
    let ops = OpsState::new(serde_json::to_value(&identity).unwrap_or_default());
    let cancel = CancellationToken::new();
    let _cancel_guard = cancel.clone().drop_guard();
    match crate::ops::http::serve(&config.http.listen, ops.clone(), cancel.clone()).await {
        Ok(addr) => tracing::info!(%addr, "serving /metrics, /healthz, /readyz, /status"),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(crate::cli::EXIT_FAILURE);
        }
    }
    let stop = CancellationToken::new();
    if let Err(e) = pipeline::stop_on_signals(stop.clone()) {
        eprintln!("error: cannot install signal handlers: {e}");
        return ExitCode::from(crate::cli::EXIT_FAILURE);
    }
    let (role_tx, role_rx) = watch::channel(Role::Starting);
    tokio::spawn(follow_role(role_rx, ops.clone()));
    tracing::info!(
        identity = %identity,
        pipeline = %config.etcd.pipeline,
        delivery = delivery_name(config.kafka.delivery),
        format = ?config.kafka.format,
        "binlog-bridge starting"
    );
    let mut work = Bridge::new(config.clone(), ops.clone());
    if config.etcd.watchdog && config.kafka.delivery != Delivery::AtLeastOnce {
        match crate::coord::watchdog::Watchdog::spawn() {
            Ok(w) => work.watchdog = Some(w),
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the watchdog process: a leader frozen while it leads will not be killed before its lease expires (set etcd.watchdog = false to silence this)")
            }
        }
    }
    // Decide the delivery mode now, so a misconfiguration shows at once (a
    // broker that does not answer soon only delays this to the first takeover).
    match work.delivery(STARTUP_PROBE_TIMEOUT).await {
        Ok(d) => {
            tracing::info!(
                configured = delivery_name(config.kafka.delivery),
                chosen = delivery_name(d),
                "delivery mode"
            );
            ops.update(|s| s.delivery = Some(delivery_name(d).into()));
            if d == Delivery::Transactional && config.snapshot.mode.initial() {
                eprintln!(
                    "error: snapshot.mode = \"{}\" runs with idempotent or at-least-once delivery in this version, and kafka.delivery = \"{}\" chose transactional for this broker; set kafka.delivery = \"idempotent\" for the snapshot, or snapshot.mode = \"never\"",
                    config.snapshot.mode.name(),
                    delivery_name(config.kafka.delivery)
                );
                return ExitCode::from(crate::cli::EXIT_CONFIG);
            }
        }
        Err(e @ BridgeError::Txn(TxnError::Unsupported(_))) => {
            eprintln!("error: {e}");
            return ExitCode::from(crate::cli::EXIT_CONFIG);
        }
        Err(e) => {
            tracing::warn!(error = %e, configured = delivery_name(config.kafka.delivery), "cannot probe the broker for transaction support now; probing again when this process leads")
        }
    }
    let mut options = Options::new(config.etcd.clone(), identity);
    options.keepalive_latency = Some(ops.metrics.etcd_keepalive_seconds.clone());
    match pipeline::run(options, work, stop, role_tx).await {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(crate::cli::EXIT_FAILURE)
        }
    }
}

/// Mirror the leader loop's role into the ops state and metrics.
async fn follow_role(mut rx: watch::Receiver<Role>, ops: Arc<OpsState>) {
    let mut was_leader = false;
    loop {
        let role = rx.borrow_and_update().clone();
        let leader = matches!(role, Role::Leader { .. });
        if leader != was_leader {
            ops.metrics.leadership_changes.inc();
            was_leader = leader;
        }
        ops.metrics.role_leader.set(if leader { 1.0 } else { 0.0 });
        ops.update(|s| match role {
            Role::Starting => {
                s.role = OpsRole::Starting;
                s.etcd_connected = false;
                s.streaming = false;
                s.epoch = None;
                s.reason = Some("no etcd session: connecting to etcd".into());
            }
            Role::Standby => {
                s.role = OpsRole::Standby;
                s.etcd_connected = true;
                s.streaming = false;
                s.epoch = None;
                s.reason = None;
                s.snapshot = None;
            }
            Role::Leader { epoch } => {
                s.role = OpsRole::Leader;
                s.etcd_connected = true;
                s.epoch = Some(epoch);
            }
            Role::Backoff {
                ref error,
                retry_in_ms,
            } => {
                // Not in the election and not streaming: not ready, and why.
                s.role = OpsRole::Standby;
                s.etcd_connected = false;
                s.streaming = false;
                s.epoch = None;
                s.reason = Some(format!(
                    "stepped down after an error, retrying in {:.1} s: {error}",
                    retry_in_ms as f64 / 1000.0
                ));
            }
            Role::Stopped => {
                s.role = OpsRole::Starting;
                s.etcd_connected = false;
                s.streaming = false;
                s.reason = Some("stopped".into());
            }
        });
        if rx.changed().await.is_err() {
            break;
        }
    }
}
