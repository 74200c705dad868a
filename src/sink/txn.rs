//! `transactional` delivery: the protocol, kept apart from librdkafka behind
//! the [`TxnOps`] seam so it can be tested without a broker that has
//! transactions (the dev env's has none).
//!
//! One leader term, as driven by the bridge:
//!
//! ```text
//! takeover:  ops.init()                  init_transactions: bumps the producer epoch,
//!                                        fences the previous leader's producer and
//!                                        aborts its open transaction
//!            resume = max(etcd checkpoint, ops.last_progress())   (read_committed)
//! each event: before_send()              begin a transaction if none is open
//!             ... the sink produces the event's messages ...
//!             sent(resume_pos, msgs, bytes)
//!             if due(): commit()         progress record (resume_pos) + commit, atomically
//!                                        -> Some(pos): only now may the etcd checkpoint say pos
//! lease lost / send failed: fail()       abort (unless the producer is fatal), no checkpoint
//! ```
//!
//! Invariants enforced here:
//! 1. A position is returned for checkpointing only by a successful
//!    `commit`, and it is exactly the position in the progress record of
//!    that transaction: the checkpoint never passes committed data.
//! 2. Fenced or fatal (another producer with our `transactional.id` took
//!    over): no abort call (the producer cannot), no position returned, the
//!    driver refuses all further work; the leader steps down.
//! 3. The lease is checked right before every commit: a leader that lost it
//!    aborts instead of committing.
//! 4. A batch (one Kafka transaction) ends at any event boundary: a huge
//!    binlog transaction spans several batches, each ending at a position
//!    whose row index says how many of its rows are in.

use std::time::Duration;

use tokio::time::Instant;

use crate::event::Position;

/// How a transactional call failed, as the protocol must react to it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxnError {
    /// Another producer with our `transactional.id` initialised after us: a
    /// newer leader exists. Step down; never checkpoint.
    #[error("the Kafka producer was fenced by a newer producer with the same transactional.id ({0}): another leader took over; stepping down without a checkpoint")]
    Fenced(String),
    /// The producer cannot be used any more (librdkafka fatal error).
    #[error("fatal Kafka producer error ({0}); stepping down without a checkpoint")]
    Fatal(String),
    /// The transaction failed and must be aborted; the caller may retry after abort.
    #[error("the Kafka transaction failed and was aborted ({0}); the next leader term resumes from the last committed batch")]
    Abortable(String),
    /// A call may succeed if repeated (timeout, coordinator moving).
    #[error("retriable Kafka transaction error ({0})")]
    Retriable(String),
    /// The leader lease was lost before the commit: the open transaction was aborted.
    #[error("the leader lease was lost with a transaction open; it was aborted and nothing was checkpointed")]
    LeaseLost,
    /// The broker does not support Kafka transactions.
    #[error(
        "the Kafka broker does not support transactions ({0}); set kafka.delivery = \"idempotent\""
    )]
    Unsupported(String),
    /// The driver stopped earlier and refuses further work.
    #[error("the transactional producer stopped earlier ({0}); step down and let the next leader resume")]
    Stopped(String),
}

/// The transactional calls of a Kafka producer: the seam between the
/// protocol ([`TxnDriver`]) and librdkafka ([`super::txn_kafka::RdTxn`]).
#[allow(async_fn_in_trait)]
pub trait TxnOps {
    /// `init_transactions`: fence every older producer with the same id.
    async fn init(&mut self) -> Result<(), TxnError>;
    /// The position in the last committed progress record, read with
    /// `isolation.level=read_committed` (after `init`).
    async fn last_progress(&mut self) -> Result<Option<Position>, TxnError>;
    /// `begin_transaction`.
    fn begin(&mut self) -> Result<(), TxnError>;
    /// Produce the progress record (the resume position after the batch)
    /// inside the open transaction.
    fn send_progress(&mut self, resume: &Position) -> Result<(), TxnError>;
    /// `commit_transaction`: flushes the data and the progress record and commits.
    async fn commit(&mut self) -> Result<(), TxnError>;
    /// `abort_transaction`.
    async fn abort(&mut self) -> Result<(), TxnError>;
    /// The producer's fatal error, if it has one (fenced is fatal).
    fn fatal(&self) -> Option<TxnError>;
}

/// When a batch (one Kafka transaction) is committed: whichever limit is hit first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnLimits {
    pub max_messages: u64,
    pub max_bytes: u64,
    pub max_time: Duration,
}

/// How often a retriable commit error is retried before the batch is aborted.
const COMMIT_RETRIES: u32 = 3;

/// The transactional protocol for one leader term.
pub struct TxnDriver<T> {
    ops: T,
    limits: TxnLimits,
    open: bool,
    started: Option<Instant>,
    messages: u64,
    bytes: u64,
    /// Resume position after the last event of the open batch.
    pending: Option<Position>,
    /// Position of the last committed batch.
    committed: Option<Position>,
    stopped: Option<String>,
    commits: u64,
}

impl<T: TxnOps> TxnDriver<T> {
    pub fn new(ops: T, limits: TxnLimits) -> Self {
        TxnDriver {
            ops,
            limits,
            open: false,
            started: None,
            messages: 0,
            bytes: 0,
            pending: None,
            committed: None,
            stopped: None,
            commits: 0,
        }
    }

    /// Fence the previous leader's producer, then return where to resume:
    /// the later of the etcd checkpoint and the last committed progress record.
    pub async fn takeover(
        &mut self,
        checkpoint: Option<&Position>,
    ) -> Result<Option<Position>, TxnError> {
        self.check()?;
        if let Err(e) = self.ops.init().await {
            return Err(self.stop(e));
        }
        let progress = match self.ops.last_progress().await {
            Ok(p) => p,
            Err(e) => return Err(self.stop(e)),
        };
        let resume = match (checkpoint, progress) {
            (Some(c), Some(p)) => Some(if &p > c { p } else { c.clone() }),
            (Some(c), None) => Some(c.clone()),
            (None, p) => p,
        };
        self.committed = resume.clone();
        Ok(resume)
    }

    /// Open a transaction if none is open; call before handing any message
    /// of the next event to the producer.
    pub fn before_send(&mut self) -> Result<(), TxnError> {
        self.check()?;
        if !self.open {
            if let Err(e) = self.ops.begin() {
                return Err(self.stop(e));
            }
            self.open = true;
            self.started = Some(Instant::now());
            self.messages = 0;
            self.bytes = 0;
        }
        Ok(())
    }

    /// An event is handed over: `resume` is where to resume once it is
    /// committed; `messages`/`bytes` what it added to the batch.
    pub fn sent(&mut self, resume: Position, messages: u64, bytes: u64) {
        self.pending = Some(resume);
        self.messages += messages;
        self.bytes += bytes;
    }

    /// A batch is open and one of the limits is reached.
    pub fn due(&self) -> bool {
        self.open
            && (self.messages >= self.limits.max_messages
                || self.bytes >= self.limits.max_bytes
                || self
                    .started
                    .is_some_and(|t| t.elapsed() >= self.limits.max_time))
    }

    /// True while a transaction is open.
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// Batches committed in this term.
    pub fn commits(&self) -> u64 {
        self.commits
    }

    /// The position of the last committed batch (or the takeover's resume point).
    pub fn committed(&self) -> Option<&Position> {
        self.committed.as_ref()
    }

    /// Commit the open batch with its progress record. `lease_alive` is read
    /// right before the call (invariant 3). Returns the position to
    /// checkpoint, `None` if no transaction was open.
    pub async fn commit(&mut self, lease_alive: bool) -> Result<Option<Position>, TxnError> {
        self.check()?;
        if !self.open {
            return Ok(None);
        }
        if !lease_alive {
            self.abort_quietly().await;
            return Err(self.stop(TxnError::LeaseLost));
        }
        let resume = self.pending.clone();
        if let Some(p) = &resume {
            if let Err(e) = self.ops.send_progress(p) {
                return Err(self.fail(e).await);
            }
        }
        let mut tries = 0;
        loop {
            match self.ops.commit().await {
                Ok(()) => break,
                Err(TxnError::Retriable(reason)) if tries < COMMIT_RETRIES => {
                    tries += 1;
                    tracing::warn!(%reason, tries, "Kafka commit failed (retriable); retrying");
                }
                Err(TxnError::Retriable(reason)) => {
                    return Err(self
                        .fail(TxnError::Abortable(format!(
                            "commit still failing after {} tries: {reason}",
                            tries + 1
                        )))
                        .await)
                }
                Err(e) => return Err(self.fail(e).await),
            }
        }
        self.open = false;
        self.started = None;
        self.commits += 1;
        if resume.is_some() {
            self.committed = resume.clone();
        }
        // Invariant 1: only a committed batch's progress position leaves here.
        Ok(resume)
    }

    /// A send (or anything else) failed: abort the open transaction unless
    /// the producer is fenced or fatal, and stop. Returns the error to report.
    pub async fn fail(&mut self, cause: TxnError) -> TxnError {
        let cause = match self.ops.fatal() {
            Some(fatal) => fatal,
            None => cause,
        };
        if !matches!(cause, TxnError::Fenced(_) | TxnError::Fatal(_)) {
            self.abort_quietly().await;
        }
        self.stop(cause)
    }

    /// The lease was lost: abort the open transaction (if the producer still
    /// can), stop. Nothing may be checkpointed afterwards.
    pub async fn lease_lost(&mut self) {
        if self.stopped.is_some() {
            return;
        }
        if self.ops.fatal().is_none() {
            self.abort_quietly().await;
        }
        self.stop(TxnError::LeaseLost);
    }

    async fn abort_quietly(&mut self) {
        if !self.open {
            return;
        }
        self.open = false;
        self.pending = None;
        if let Err(e) = self.ops.abort().await {
            tracing::warn!(error = %e, "abort_transaction failed; the next leader's init_transactions aborts it");
        }
    }

    fn check(&self) -> Result<(), TxnError> {
        match &self.stopped {
            Some(reason) => Err(TxnError::Stopped(reason.clone())),
            None => Ok(()),
        }
    }

    fn stop(&mut self, e: TxnError) -> TxnError {
        self.open = false;
        self.pending = None;
        if self.stopped.is_none() {
            self.stopped = Some(e.to_string());
        }
        e
    }

    /// The seam, for the sink that shares the producer.
    pub fn ops(&self) -> &T {
        &self.ops
    }
}

#[cfg(test)]
#[path = "txn_tests.rs"]
mod tests;
