//! The snapshot driver a leader runs before streaming: read chunks, send
//! them, checkpoint acknowledged progress, resume after a failover.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::reader::{SnapshotError, SnapshotReader, TableInfo};
use super::{key_of, Key, Segment, SnapshotState, Tail, EXTRA};
use crate::config::Config;
use crate::event::{ChangeEvent, EventKind, Op, Position, RowChange, TxnInfo};
use crate::ops::OpsState;
use crate::pipeline::{LeaderContext, WorkError};
use crate::sink::{KafkaSink, SinkError, TableFilter};

/// How often a progress line is logged, at most.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// How long the end of the snapshot waits for Kafka's acknowledgements.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the snapshot did not finish.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("snapshot: {0}")]
    Read(#[from] SnapshotError),
    #[error("snapshot: Kafka sink: {0}")]
    Sink(#[from] SinkError),
    #[error("snapshot: {0}")]
    State(String),
}

/// How the snapshot ended.
pub enum Outcome {
    /// Every table read and acknowledged: stream from `state.position`.
    Done(SnapshotState),
    /// A graceful stop: what was sent is acknowledged and checkpointed.
    Stopped,
}

/// A chunk sent and not yet known to be acknowledged: once the sink's
/// acknowledged row counter reaches `end`, the state may say `table`/`after`.
struct Sent {
    end: u64,
    table: usize,
    after: Option<Key>,
    rows: u64,
}

fn failed(e: impl Into<RunError>) -> WorkError {
    WorkError::Failed(Box::new(e.into()))
}

/// Run (or resume, when `resume` holds an unfinished state) the snapshot.
/// `tails` are the partitions whose last message is a snapshot row (read by
/// the exactly-once takeover); empty when the last leader stopped cleanly.
pub async fn run(
    config: &Config,
    ctx: &LeaderContext,
    ops: &OpsState,
    sink: &mut KafkaSink,
    resume: Option<SnapshotState>,
    tails: &HashMap<(Arc<str>, i32), Tail>,
) -> Result<Outcome, WorkError> {
    let mut reader = SnapshotReader::open(&config.mysql).await.map_err(failed)?;
    let at = reader.position.clone();
    let mut state = match resume {
        Some(mut s) => {
            let current = s.tables.get(s.table).cloned().unwrap_or_default();
            let residue = s.residue(tails);
            tracing::info!(
                table = %current,
                after = ?s.after,
                at = %at,
                partitions_with_rows_past_checkpoint = residue.len(),
                "snapshot: resuming after a failover with a new consistent read"
            );
            s.segments.push(Segment {
                position: at.clone(),
                table: s.table,
                after: s.after.clone(),
                residue,
            });
            s
        }
        None => {
            let filter = TableFilter::new(&config.mysql.include, &config.mysql.exclude);
            let tables = reader
                .tables(|d, t| filter.allows(d, t))
                .await
                .map_err(failed)?;
            tracing::info!(tables = tables.len(), at = %at, "snapshot: starting");
            SnapshotState::new(at.clone(), tables)
        }
    };
    // Before the first row of this segment: the stream start and the segment
    // (with its residue) are in the fenced checkpoint, so every later
    // takeover can tell which segment covers which row.
    ctx.checkpoint.acked(&state.position).await?;
    ctx.checkpoint
        .set_extra(
            EXTRA,
            serde_json::to_value(&state).map_err(|e| failed(RunError::State(e.to_string())))?,
        )
        .await;
    ctx.checkpoint.flush().await?;

    let residue = state
        .segments
        .last()
        .map(|s| s.residue.clone())
        .unwrap_or_default();
    let first = state.table;
    let txn = Arc::new(TxnInfo {
        ts_ms: crate::coord::now_ms(),
        ..TxnInfo::default()
    });
    // `mysql.exclude_columns` applies to snapshot rows exactly as to streamed ones.
    let mut columns = crate::source::ColumnFilter::new(&config.mysql.exclude_columns);
    let mut sent: u64 = 0;
    let mut pending: VecDeque<Sent> = VecDeque::new();
    let mut rows_total = state.rows;
    let mut last_log = Instant::now();
    let mut skipped = 0u64;
    let started = Instant::now();

    for t in first..state.tables.len() {
        let name = state.tables[t].clone();
        let info: TableInfo = reader.table(&name).await.map_err(failed)?;
        let mut after = if t == first {
            state.after.clone()
        } else {
            None
        };
        let mut table_rows = 0u64;
        ops.metrics
            .snapshot_rows
            .set(&name, "estimated", info.estimated_rows as f64);
        loop {
            if ctx.lost().is_cancelled() {
                sink.abort();
                return Err(WorkError::SessionLost);
            }
            if ctx.stop().is_cancelled() {
                return stop(ctx, sink, &mut state, &mut pending).await;
            }
            let rows = tokio::select! {
                biased;
                _ = ctx.lost().cancelled() => {
                    sink.abort();
                    return Err(WorkError::SessionLost);
                }
                r = reader.chunk(&info, after.as_ref(), config.snapshot.chunk_rows) => r.map_err(failed)?,
            };
            if rows.is_empty() {
                break;
            }
            let n = rows.len() as u64;
            for values in rows {
                let row = RowChange {
                    table: info.schema.clone(),
                    op: Op::Read,
                    before: None,
                    after: Some(values),
                };
                let key = key_of(&row).ok_or_else(|| {
                    failed(RunError::State(format!(
                        "{name}: a row without a readable primary key"
                    )))
                })?;
                if t == first && !residue.is_empty() {
                    if let Some((topic, partition)) = sink.route_of(&row).await.map_err(failed)? {
                        let there = residue.iter().any(|r| {
                            r.partition == partition && *r.topic == *topic && key <= r.key
                        });
                        if there {
                            skipped += 1;
                            after = Some(key);
                            continue;
                        }
                    }
                }
                let mut ev = ChangeEvent {
                    kind: EventKind::Row(row),
                    txn: txn.clone(),
                    position: Position {
                        row: sent,
                        ..at.clone()
                    },
                };
                columns
                    .apply(&mut ev)
                    .map_err(|e| failed(RunError::State(e)))?;
                sink.send(&ev).await.map_err(failed)?;
                sent += 1;
                after = Some(key);
            }
            table_rows += n;
            rows_total += n;
            pending.push_back(Sent {
                end: sent,
                table: t,
                after: after.clone(),
                rows: rows_total,
            });
            // At most one chunk unacknowledged: the producer must deliver
            // within its lease-bounded timeout (half the TTL), so a burst
            // must stay well within what the broker takes in that time.
            sink.wait_in_flight(0).await.map_err(failed)?;
            advance(ctx, sink, &mut state, &mut pending).await?;
            ops.metrics
                .snapshot_rows
                .set(&name, "done", table_rows as f64);
            if last_log.elapsed() >= PROGRESS_EVERY {
                last_log = Instant::now();
                tracing::info!(
                    table = %name,
                    rows = table_rows,
                    estimated = info.estimated_rows,
                    table_index = t + 1,
                    tables = state.tables.len(),
                    "snapshot: progress"
                );
            }
            ops.update(|s| {
                s.reason = Some(format!(
                    "leader: snapshot of {name}: {table_rows} of ~{} rows (table {} of {})",
                    info.estimated_rows,
                    t + 1,
                    state.tables.len()
                ))
            });
        }
        tracing::info!(table = %name, rows = table_rows, "snapshot: table read");
        pending.push_back(Sent {
            end: sent,
            table: t + 1,
            after: None,
            rows: rows_total,
        });
    }
    drop(reader);
    // Everything sent must be acknowledged before streaming starts
    // (invariant: in every partition snapshot rows precede streamed changes).
    sink.flush(FLUSH_TIMEOUT).await.map_err(failed)?;
    sink.reset_acks().map_err(failed)?;
    state.table = state.tables.len();
    state.after = None;
    state.rows = rows_total;
    state.done = true;
    ctx.checkpoint
        .set_extra(
            EXTRA,
            serde_json::to_value(&state).map_err(|e| failed(RunError::State(e.to_string())))?,
        )
        .await;
    ctx.checkpoint.flush().await?;
    tracing::info!(
        rows = rows_total,
        sent,
        skipped_already_in_kafka = skipped,
        secs = started.elapsed().as_secs_f64(),
        stream_from = %state.position,
        "snapshot: done"
    );
    Ok(Outcome::Done(state))
}

/// Move the state past every chunk Kafka has acknowledged and hand it to
/// the checkpoint writer (written at most once per checkpoint interval).
async fn advance(
    ctx: &LeaderContext,
    sink: &mut KafkaSink,
    state: &mut SnapshotState,
    pending: &mut VecDeque<Sent>,
) -> Result<(), WorkError> {
    // The sink's acknowledged resume position counts the snapshot rows
    // acknowledged in order (`row` = rows before it).
    let acked = sink
        .poll_acks()
        .map_err(failed)?
        .map(|p| p.row)
        .unwrap_or(0);
    let mut moved = false;
    while pending.front().is_some_and(|s| s.end <= acked) {
        if let Some(s) = pending.pop_front() {
            state.table = s.table;
            state.after = s.after;
            state.rows = s.rows;
            moved = true;
        }
    }
    if moved {
        let v =
            serde_json::to_value(&*state).map_err(|e| failed(RunError::State(e.to_string())))?;
        ctx.checkpoint.set_extra(EXTRA, v).await;
        ctx.checkpoint.acked(&state.position).await?;
    }
    Ok(())
}

/// Graceful stop in the middle: wait for every acknowledgement, record the
/// last chunk sent, and let the pipeline write the final checkpoint.
async fn stop(
    ctx: &LeaderContext,
    sink: &mut KafkaSink,
    state: &mut SnapshotState,
    pending: &mut VecDeque<Sent>,
) -> Result<Outcome, WorkError> {
    sink.flush(FLUSH_TIMEOUT).await.map_err(failed)?;
    while let Some(s) = pending.pop_front() {
        state.table = s.table;
        state.after = s.after;
        state.rows = s.rows;
    }
    let v = serde_json::to_value(&*state).map_err(|e| failed(RunError::State(e.to_string())))?;
    ctx.checkpoint.set_extra(EXTRA, v).await;
    ctx.checkpoint.flush().await?;
    tracing::info!(table = ?state.tables.get(state.table), after = ?state.after, "snapshot: stopped; the next leader resumes here");
    Ok(Outcome::Stopped)
}
