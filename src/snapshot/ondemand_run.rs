//! The leader's side of on-demand snapshots (see [`super::ondemand`] for
//! the design and its invariants): picks requests up from etcd, reads
//! position-aligned chunks, and sends each one when the stream reaches its
//! read position, between transactions, with nothing else in flight.
//!
//! The streaming loop (`bridge.rs`) calls [`OnDemand::poll`] on its tick,
//! [`OnDemand::due_before`] before and [`OnDemand::due_after`] after every
//! event, [`OnDemand::due_idle`] when no event is waiting, and
//! [`OnDemand::deliver`] whenever one of them says so.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::ondemand::{
    self, parse_table, reached, OnDemandState, Outcome, Request, EXTRA, EXTRA_LAST,
};
use super::reader::{SnapshotError, SnapshotReader, TableInfo};
use super::requests;
use super::{key_of, Key, Tail};
use crate::config::Config;
use crate::event::{ChangeEvent, EventKind, Op, Position, RowChange, TxnInfo, Value};
use crate::ops::OpsState;
use crate::pipeline::{LeaderContext, WorkError};
use crate::sink::{KafkaSink, SinkError, TableFilter};

/// How often a leader without a run looks for requests.
const POLL_EVERY: Duration = Duration::from_secs(1);
/// How long etcd calls of this module may take.
const ETCD_TIMEOUT: Duration = Duration::from_secs(5);
/// How long deleting a finished request may hold up the stream.
const LIST_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a chunk (or the stream before it) may take to be acknowledged.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a progress line is logged, at most.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// Why an on-demand run stopped the leader (it resumes on the next one).
#[derive(Debug, thiserror::Error)]
pub enum OnDemandError {
    #[error("on-demand snapshot: {0}")]
    Read(#[from] SnapshotError),
    #[error("on-demand snapshot: Kafka sink: {0}")]
    Sink(#[from] SinkError),
    #[error("on-demand snapshot: etcd: {0}")]
    Etcd(#[from] crate::coord::CoordError),
    #[error("on-demand snapshot: {0}")]
    State(String),
}

fn failed(e: impl Into<OnDemandError>) -> WorkError {
    WorkError::Failed(Box::new(e.into()))
}

/// A chunk read at `at`, waiting for the stream to reach `at`.
struct Chunk {
    at: Position,
    rows: Vec<Vec<Value>>,
}

/// The leader's on-demand snapshot driver.
pub struct OnDemand {
    config: Config,
    prefix: String,
    state: Option<OnDemandState>,
    /// The id of the last finished run (from the checkpoint).
    last_done: Option<String>,
    reader: Option<SnapshotReader>,
    info: Option<TableInfo>,
    pending: Option<Chunk>,
    /// The position after the last commit handed to the sink (or the start).
    stream_at: Option<Position>,
    progress: Option<watch::Receiver<Position>>,
    last_poll: Option<Instant>,
    /// The latest list of request keys, kept by a task of its own so that
    /// etcd latency never holds up the stream (None until first read).
    requests: Option<watch::Receiver<Option<Vec<requests::Found>>>>,
    lister: Option<tokio::task::JoinHandle<()>>,
    /// Requests this leader finished or refused (a list read before their
    /// key was deleted may still name them).
    finished: std::collections::HashSet<String>,
    last_log: Instant,
    queued: usize,
    /// Unreadable request keys already reported (reported once each).
    reported: std::collections::HashSet<String>,
    /// Snapshot reads are failing (reported once until one succeeds).
    failing: bool,
    columns: crate::source::ColumnFilter,
    filter: TableFilter,
    ops: Arc<OpsState>,
}

impl Drop for OnDemand {
    fn drop(&mut self) {
        if let Some(t) = self.lister.take() {
            t.abort();
        }
    }
}

impl OnDemand {
    /// The driver, with the run a previous leader left in the checkpoint.
    pub fn new(
        config: &Config,
        ctx: &LeaderContext,
        ops: Arc<OpsState>,
    ) -> Result<Self, WorkError> {
        let extra = ctx
            .resume
            .as_ref()
            .map(|c| c.extra.clone())
            .unwrap_or_default();
        let state =
            OnDemandState::from_extra(&extra).map_err(|e| failed(OnDemandError::State(e)))?;
        let last_done = extra
            .get(EXTRA_LAST)
            .and_then(|v| v.get("id"))
            .and_then(|v| v.as_str())
            .map(str::to_string);
        Ok(OnDemand {
            prefix: ondemand::requests_prefix(&config.etcd.prefix, &config.etcd.pipeline),
            state,
            last_done,
            reader: None,
            info: None,
            pending: None,
            stream_at: None,
            progress: None,
            last_poll: None,
            requests: None,
            lister: None,
            finished: Default::default(),
            last_log: Instant::now(),
            queued: 0,
            reported: Default::default(),
            failing: false,
            columns: crate::source::ColumnFilter::new(&config.mysql.exclude_columns),
            filter: TableFilter::new(&config.mysql.include, &config.mysql.exclude),
            config: config.clone(),
            ops,
        })
    }

    /// Streaming starts at `from`; `progress` follows the source (see
    /// `BinlogSource::progress`). `tails` are the partitions whose last
    /// message is a snapshot row (the exactly-once takeover read them): a
    /// run interrupted in the middle of a chunk records its residue now,
    /// fenced, before anything is sent.
    pub async fn start(
        &mut self,
        ctx: &LeaderContext,
        from: Option<Position>,
        progress: watch::Receiver<Position>,
        tails: &HashMap<(Arc<str>, i32), Tail>,
    ) -> Result<(), WorkError> {
        self.stream_at = from;
        self.progress = Some(progress);
        let (tx, rx) = watch::channel(None);
        let client = ctx.checkpoint.fence().0.clone();
        let prefix = self.prefix.clone();
        self.requests = Some(rx);
        self.lister = Some(tokio::spawn(async move {
            let mut failing = false;
            loop {
                match requests::list(&client, &prefix, ETCD_TIMEOUT).await {
                    Ok(found) => {
                        failing = false;
                        if tx.send(Some(found)).is_err() {
                            return;
                        }
                    }
                    Err(e) if !failing => {
                        failing = true;
                        tracing::warn!(error = %e, "cannot look for on-demand snapshot requests now; trying again every second");
                    }
                    Err(_) => {}
                }
                tokio::time::sleep(POLL_EVERY).await;
            }
        }));
        let Some(state) = self.state.as_mut() else {
            return Ok(());
        };
        let added = state.absorb(tails);
        tracing::info!(
            id = %state.id,
            table = ?state.current(),
            cursor = ?state.cursor,
            rows = state.rows,
            interrupted_chunk = ?state.chunk.as_ref().map(ToString::to_string),
            partitions_with_rows_past_cursor = added,
            "on-demand snapshot: resuming"
        );
        self.save(ctx, true).await
    }

    /// Record the state in the checkpoint; `now`: write it at once (fenced).
    async fn save(&self, ctx: &LeaderContext, now: bool) -> Result<(), WorkError> {
        let v = match &self.state {
            Some(s) => {
                serde_json::to_value(s).map_err(|e| failed(OnDemandError::State(e.to_string())))?
            }
            None => serde_json::Value::Null,
        };
        ctx.checkpoint.set_extra(EXTRA, v).await;
        if now {
            ctx.checkpoint.flush().await?;
        }
        Ok(())
    }

    /// The stream handed `ev` to the sink.
    pub fn note(&mut self, ev: &ChangeEvent) {
        if matches!(ev.kind, EventKind::Commit) {
            self.stream_at = Some(ev.position.clone());
        }
    }

    /// A chunk is due before `ev` is sent: `ev` begins at or after the
    /// chunk's read position (it belongs to a later transaction).
    pub fn due_before(&self, ev: &ChangeEvent) -> bool {
        match &self.pending {
            Some(c) => !matches!(ev.kind, EventKind::Commit) && reached(&ev.position, &c.at),
            None => false,
        }
    }

    /// A chunk is due now: the last commit handed over ends at or after its
    /// read position.
    pub fn due_after(&self) -> bool {
        match (&self.pending, &self.stream_at) {
            (Some(c), Some(at)) => reached(at, &c.at),
            _ => false,
        }
    }

    /// A chunk is due while no event waits: the source has read the binlog
    /// up to its read position and every event it returned was handled
    /// (`idle`: the read-ahead channel is empty). The source's progress is
    /// read *before* `idle` is asked: the source publishes a position only
    /// after handing out every event before it.
    pub fn due_idle(&self, idle: impl FnOnce() -> bool) -> bool {
        if self.due_after() {
            return true;
        }
        match (&self.pending, &self.progress) {
            (Some(c), Some(p)) => {
                let read_to = p.borrow().clone();
                reached(&read_to, &c.at) && idle()
            }
            _ => false,
        }
    }

    /// On the streaming loop's tick: look for a request (when no run is
    /// going), read the next chunk (when none is waiting), publish status.
    pub async fn poll(&mut self, ctx: &LeaderContext) -> Result<(), WorkError> {
        if self.state.is_none() && self.last_poll.map_or(true, |t| t.elapsed() >= POLL_EVERY) {
            self.last_poll = Some(Instant::now());
            self.pick_up(ctx).await?;
        }
        if self.state.is_some() && self.pending.is_none() {
            self.prepare(ctx).await?;
        }
        self.publish();
        Ok(())
    }

    fn publish(&self) {
        let doc = self.state.as_ref().map(|s| {
            serde_json::json!({
                "id": s.id,
                "tables": s.tables,
                "table": s.current(),
                "rows": s.rows,
                "queued": self.queued,
            })
        });
        self.ops.update(|st| st.snapshot = doc);
    }

    /// Take the oldest request: drop finished or unreadable ones, refuse one
    /// naming a table the snapshot cannot read, start the first good one.
    async fn pick_up(&mut self, ctx: &LeaderContext) -> Result<(), WorkError> {
        let (client, leader_key) = ctx.checkpoint.fence();
        let (client, leader_key) = (client.clone(), leader_key.to_vec());
        let Some(found) = self.requests.as_ref().and_then(|rx| rx.borrow().clone()) else {
            return Ok(());
        };
        self.queued = found.len().saturating_sub(1);
        for f in found {
            let request = match f.request {
                Ok(r) if self.finished.contains(&r.id) => continue,
                Ok(r) if self.last_done.as_deref() == Some(r.id.as_str()) => {
                    self.finished.insert(r.id.clone());
                    // Finished; the leader that finished it did not get to delete the key.
                    if let Err(e) = requests::delete_fenced(
                        &client,
                        &leader_key,
                        ctx.epoch,
                        &f.key,
                        LIST_TIMEOUT,
                    )
                    .await
                    {
                        tracing::warn!(key = %f.key, error = %e, "cannot delete a finished on-demand snapshot request now; trying again later");
                    }
                    continue;
                }
                Ok(r) => r,
                Err(e) => {
                    if self.reported.insert(f.key.clone()) {
                        tracing::error!(key = %f.key, error = %e, "on-demand snapshot: unreadable request; it is not run");
                    }
                    continue;
                }
            };
            match self.validate(&request).await {
                Ok(()) => {
                    let state = OnDemandState::new(&request, crate::coord::now_ms());
                    tracing::info!(id = %request.id, tables = ?request.tables, "on-demand snapshot: starting");
                    self.state = Some(state);
                    self.info = None;
                    self.save(ctx, true).await?;
                }
                Err(OnDemandError::Read(SnapshotError::Source(e))) => {
                    // MySQL unreachable for now: the request waits for the next poll.
                    self.reader = None;
                    self.read_failed(&e);
                    return Ok(());
                }
                Err(e) => {
                    let outcome = Outcome {
                        id: request.id.clone(),
                        tables: request.tables.clone(),
                        outcome: format!("failed: {e}"),
                        rows: 0,
                        finished_at_ms: crate::coord::now_ms(),
                    };
                    tracing::error!(id = %request.id, error = %e, "on-demand snapshot refused; the request is removed");
                    self.finish(ctx, &f.key, outcome).await?;
                }
            }
            return Ok(());
        }
        Ok(())
    }

    /// Every table named is allowed by the filters and readable in key order.
    async fn validate(&mut self, request: &Request) -> Result<(), OnDemandError> {
        for t in &request.tables {
            let (db, table) = parse_table(t).map_err(OnDemandError::State)?;
            if !self.filter.allows(db, table) {
                return Err(OnDemandError::State(format!(
                    "table `{t}` is not streamed by this pipeline (mysql.include / mysql.exclude); name only streamed tables"
                )));
            }
        }
        let reader = self.reader().await?;
        for t in &request.tables {
            reader.table(t).await?;
        }
        Ok(())
    }

    /// Report a failed snapshot read once per outage (it is retried on every tick).
    fn read_failed(&mut self, e: &crate::source::SourceError) {
        if !self.failing {
            self.failing = true;
            tracing::warn!(error = %e, "on-demand snapshot: cannot read from MySQL now; retrying while streaming goes on");
        }
    }

    async fn reader(&mut self) -> Result<&mut SnapshotReader, SnapshotError> {
        if self.reader.is_none() {
            self.reader =
                Some(SnapshotReader::connect(&self.config.mysql, "binlog-bridge snapshot").await?);
        }
        self.reader
            .as_mut()
            .ok_or_else(|| SnapshotError::Unsupported("internal: no snapshot connection".into()))
    }

    /// Read the next chunk of the run at a new consistent point (moving on
    /// to the next table, or finishing, when a table has no more rows).
    async fn prepare(&mut self, ctx: &LeaderContext) -> Result<(), WorkError> {
        loop {
            let Some(state) = self.state.as_ref() else {
                return Ok(());
            };
            let Some(name) = state.current().map(str::to_string) else {
                return self.complete(ctx).await;
            };
            let (id, cursor) = (state.id.clone(), state.cursor.clone());
            let (info, at, rows) = match self.read_chunk(&name, cursor.as_ref()).await {
                Ok(r) => r,
                Err(SnapshotError::Unsupported(e)) => return self.abandon(ctx, &id, e).await,
                Err(SnapshotError::Source(e)) => {
                    // A transient MySQL error: the stream goes on, the chunk
                    // is read again on the next tick.
                    self.reader = None;
                    self.read_failed(&e);
                    return Ok(());
                }
            };
            self.failing = false;
            self.ops
                .metrics
                .snapshot_rows
                .set(&name, "estimated", info.estimated_rows as f64);
            self.info = Some(info);
            if rows.is_empty() {
                if let Some(s) = self.state.as_mut() {
                    tracing::info!(id = %s.id, table = %name, rows = s.rows, "on-demand snapshot: table read");
                    s.table_done();
                }
                self.info = None;
                self.save(ctx, false).await?;
                continue;
            }
            self.pending = Some(Chunk { at, rows });
            return Ok(());
        }
    }

    /// One chunk of `name` after `cursor`, in a consistent read of its own
    /// (committed before returning): the table, the read's position, the rows.
    /// The table's shape is read inside the snapshot for every chunk, so a
    /// column added before the read is in its rows (one altered after the
    /// read makes the chunk's SELECT fail: the leader steps down and the
    /// next one reads the chunk again).
    async fn read_chunk(
        &mut self,
        name: &str,
        cursor: Option<&Key>,
    ) -> Result<(TableInfo, Position, Vec<Vec<Value>>), SnapshotError> {
        let limit = self.config.snapshot.chunk_rows;
        let reader = self.reader().await?;
        let at = reader.begin().await?;
        let read = async {
            let info = reader.table(name).await?;
            let rows = reader.chunk(&info, cursor, limit).await?;
            Ok::<_, SnapshotError>((info, rows))
        }
        .await;
        reader.end().await?;
        let (info, rows) = read?;
        Ok((info, at, rows))
    }

    /// The stream has reached the waiting chunk's position: wait for every
    /// acknowledgement, checkpoint the position with the chunk, send the
    /// chunk, wait for its acknowledgements, checkpoint the cursor; then read
    /// the next chunk.
    pub async fn deliver(
        &mut self,
        ctx: &LeaderContext,
        sink: &mut KafkaSink,
    ) -> Result<(), WorkError> {
        let Some(chunk) = self.pending.take() else {
            return Ok(());
        };
        let Some(info) = self.info.clone() else {
            return Ok(());
        };
        // Invariant: everything before S is acknowledged before S is
        // checkpointed, and before any snapshot row is sent.
        sink.flush(FLUSH_TIMEOUT).await.map_err(failed)?;
        sink.reset_acks().map_err(failed)?;
        ctx.checkpoint.acked(&chunk.at).await?;
        let Some(state) = self.state.as_mut() else {
            return Ok(());
        };
        state.chunk = Some(chunk.at.clone());
        let id = state.id.clone();
        self.stream_at = Some(chunk.at.clone());
        self.save(ctx, true).await?;

        let name = format!("{}.{}", info.schema.database, info.schema.table);
        let txn = Arc::new(TxnInfo {
            ts_ms: crate::coord::now_ms(),
            ..TxnInfo::default()
        });
        sink.set_snapshot_run(Some(id.clone()));
        let mut sent = 0u64;
        let mut skipped = 0u64;
        let mut last: Option<Key> = None;
        for values in chunk.rows {
            if ctx.lost().is_cancelled() {
                sink.abort();
                return Err(WorkError::SessionLost);
            }
            let row = RowChange {
                table: info.schema.clone(),
                op: Op::Read,
                before: None,
                after: Some(values),
            };
            let key = key_of(&row).ok_or_else(|| {
                failed(OnDemandError::State(format!(
                    "{name}: a row without a readable primary key"
                )))
            })?;
            let has_residue = self.state.as_ref().is_some_and(|s| !s.residue.is_empty());
            if has_residue {
                if let Some((topic, partition)) = sink.route_of(&row).await.map_err(failed)? {
                    if self
                        .state
                        .as_ref()
                        .is_some_and(|s| s.sent_before(&key, &topic, partition))
                    {
                        skipped += 1;
                        last = Some(key);
                        continue;
                    }
                }
            }
            let mut ev = ChangeEvent {
                kind: EventKind::Row(row),
                txn: txn.clone(),
                position: Position {
                    row: sent,
                    ..chunk.at.clone()
                },
            };
            self.columns
                .apply(&mut ev)
                .map_err(|e| failed(OnDemandError::State(e)))?;
            sink.send(&ev).await.map_err(failed)?;
            sent += 1;
            last = Some(key);
        }
        sink.flush(FLUSH_TIMEOUT).await.map_err(failed)?;
        // The rows' own positions (S + row counter) must never be checkpointed.
        sink.reset_acks().map_err(failed)?;
        sink.set_snapshot_run(None);
        let mut rows = 0;
        if let Some(state) = self.state.as_mut() {
            if let Some(last) = last {
                state.chunk_acked(last, sent);
            }
            rows = state.rows;
        }
        self.save(ctx, true).await?;
        self.ops.metrics.snapshot_rows.add(&name, "done", sent);
        if skipped > 0 {
            tracing::info!(id = %id, table = %name, skipped, "on-demand snapshot: rows already in Kafka from the interrupted chunk were not sent again");
        }
        if self.last_log.elapsed() >= PROGRESS_EVERY {
            self.last_log = Instant::now();
            tracing::info!(id = %id, table = %name, rows, at = %chunk.at, "on-demand snapshot: progress");
        }
        self.publish();
        self.prepare(ctx).await
    }

    /// Every table is read: clear the state, record the outcome.
    async fn complete(&mut self, ctx: &LeaderContext) -> Result<(), WorkError> {
        let Some(state) = self.state.as_ref() else {
            return Ok(());
        };
        let outcome = Outcome {
            id: state.id.clone(),
            tables: state.tables.clone(),
            outcome: "done".into(),
            rows: state.rows,
            finished_at_ms: crate::coord::now_ms(),
        };
        let secs = crate::coord::now_ms().saturating_sub(state.started_at_ms) as f64 / 1000.0;
        tracing::info!(id = %state.id, tables = ?state.tables, rows = state.rows, secs, "on-demand snapshot: done");
        let key = format!("{}{}", self.prefix, state.id);
        self.finish(ctx, &key, outcome).await
    }

    /// A table became unreadable in the middle of a run (dropped, key type
    /// changed): the run ends as failed, streaming goes on.
    async fn abandon(
        &mut self,
        ctx: &LeaderContext,
        id: &str,
        why: String,
    ) -> Result<(), WorkError> {
        let Some(state) = self.state.as_ref() else {
            return Ok(());
        };
        tracing::error!(id, error = %why, "on-demand snapshot failed; the request is removed, ask again once the table is fixed");
        let outcome = Outcome {
            id: id.to_string(),
            tables: state.tables.clone(),
            outcome: format!("failed: {why}"),
            rows: state.rows,
            finished_at_ms: crate::coord::now_ms(),
        };
        let key = format!("{}{id}", self.prefix);
        self.finish(ctx, &key, outcome).await
    }

    /// Clear the state and record `outcome` in one fenced checkpoint, then
    /// delete the request key (a later leader deletes it if this one cannot).
    async fn finish(
        &mut self,
        ctx: &LeaderContext,
        key: &str,
        outcome: Outcome,
    ) -> Result<(), WorkError> {
        self.state = None;
        self.pending = None;
        self.info = None;
        self.reader = None;
        self.last_done = Some(outcome.id.clone());
        self.finished.insert(outcome.id.clone());
        let v = serde_json::to_value(&outcome)
            .map_err(|e| failed(OnDemandError::State(e.to_string())))?;
        ctx.checkpoint.set_extra(EXTRA_LAST, v).await;
        self.save(ctx, true).await?;
        // The outcome is checkpointed: a key left behind (etcd hiccup) is
        // deleted by the next poll, which finds its id finished.
        let (client, leader_key) = ctx.checkpoint.fence();
        match requests::delete_fenced(client, leader_key, ctx.epoch, key, ETCD_TIMEOUT).await {
            Ok(true) => {}
            Ok(false) => {
                ctx.lost().cancel();
                return Err(WorkError::SessionLost);
            }
            Err(e) => {
                tracing::warn!(key, error = %e, "cannot delete the finished on-demand snapshot request now; trying again later")
            }
        }
        self.last_poll = None;
        self.publish();
        Ok(())
    }
}

/// On-demand snapshot requests are not run with transactional delivery
/// in this version: each waiting one is refused (its outcome, naming
/// `kafka.delivery`, goes into the checkpoint's `ondemand_last` with the
/// next checkpoint, and its key is deleted, fenced). The CLI refuses
/// them already when the checkpoint says transactional; this covers a
/// request made before the first leader chose it (`auto`).
pub async fn refuse_all(config: &Config, ctx: &LeaderContext) {
    let etcd = &config.etcd;
    let prefix = ondemand::requests_prefix(&etcd.prefix, &etcd.pipeline);
    let (client, leader_key) = ctx.checkpoint.fence();
    let found = match requests::list(client, &prefix, Duration::from_secs(3)).await {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(error = %e, "cannot look for on-demand snapshot requests; they wait");
            return;
        }
    };
    for f in found {
        let Ok(r) = f.request else {
            tracing::error!(key = %f.key, "unreadable on-demand snapshot request; delete it");
            continue;
        };
        let why = "failed: on-demand snapshots run with kafka.delivery = \"idempotent\" or \"at-least-once\" in this version, and this leader uses transactional delivery; set kafka.delivery = \"idempotent\" and ask again";
        tracing::error!(id = %r.id, tables = ?r.tables, "on-demand snapshot refused: {why}");
        let outcome = Outcome {
            id: r.id.clone(),
            tables: r.tables.clone(),
            outcome: why.into(),
            rows: 0,
            finished_at_ms: crate::coord::now_ms(),
        };
        if let Ok(v) = serde_json::to_value(&outcome) {
            ctx.checkpoint.set_extra(EXTRA_LAST, v).await;
        }
        if let Err(e) = requests::delete_fenced(
            client,
            leader_key,
            ctx.epoch,
            &f.key,
            Duration::from_secs(3),
        )
        .await
        {
            tracing::warn!(key = %f.key, error = %e, "cannot delete the refused request");
        }
    }
}
