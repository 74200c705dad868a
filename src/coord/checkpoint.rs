//! The checkpoint: the position Kafka has acknowledged, kept in etcd at
//! `<prefix>/<pipeline>/checkpoint`, written only by the current leader.
//!
//! Invariants, enforced here:
//! 1. **Fenced**: a leader writes only through a Txn
//!    `create_revision(our leader key) == epoch`. If the compare fails our key
//!    is gone (lease expired, resigned, deleted by `checkpoint set --force`),
//!    someone else may lead: the write is refused, the session's "lost"
//!    token is cancelled so every output stops, and [`CheckpointError::Fenced`]
//!    is returned.
//! 2. **Only acknowledged positions**: the writer is only ever given positions
//!    the caller says Kafka acknowledged (everything up to them); it never
//!    invents one.
//! 3. **Monotonic**: within one leadership the written position never goes
//!    back (a smaller one is refused with [`CheckpointError::Regressed`]).
//! 4. **Only while the lease holds**: no write is attempted once the session
//!    is lost or its local deadline has passed.
//! 5. **Throttled**: at most one write per `checkpoint_interval_ms`, plus one
//!    final [`CheckpointWriter::flush`] at every graceful stop.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, GetOptions, Txn, TxnOp};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::election::current_leader;
use super::session::SessionHandle;
use super::{now_ms, retry, CoordError, Identity, Keys};
use crate::event::Position;

/// The checkpoint document (JSON in etcd).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Everything before this position was acknowledged by Kafka: resume here.
    pub position: Position,
    /// Epoch (leader key create revision) of the writer; 0 when set by hand.
    pub epoch: i64,
    /// The writer, or None when set with `binlog-bridge checkpoint set`.
    #[serde(default)]
    pub leader: Option<Identity>,
    /// Wall clock of the write, milliseconds since the Unix epoch.
    pub written_at_ms: u64,
    /// Open map for other modules (e.g. the topic set exactly-once reconciles).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// A checkpoint as stored, with its etcd revision.
#[derive(Debug, Clone)]
pub struct Stored {
    pub checkpoint: Checkpoint,
    pub mod_revision: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint refused: epoch {epoch} no longer holds the leader key (another process leads or the key was removed); stopping output and standing by")]
    Fenced { epoch: i64 },
    #[error("checkpoint not written: the etcd session was lost (lease deadline passed); stopping output and standing by")]
    SessionLost,
    #[error("checkpoint refused: position {new} is before the last written {last}; this is a bug in the caller (positions must only move forward)")]
    Regressed { last: Position, new: Position },
    #[error("a leader holds the lock ({leader}); stop it first or pass --force (it will be fenced and step down)")]
    LeaderActive { leader: String },
    #[error(transparent)]
    Etcd(#[from] CoordError),
}

/// Reads and writes the checkpoint key.
#[derive(Clone)]
pub struct CheckpointStore {
    client: Client,
    keys: Keys,
}

impl CheckpointStore {
    pub fn new(client: Client, keys: Keys) -> CheckpointStore {
        CheckpointStore { client, keys }
    }

    pub fn key(&self) -> &str {
        &self.keys.checkpoint
    }

    /// The stored checkpoint, if any.
    pub async fn read(&self, timeout: Duration) -> Result<Option<Stored>, CoordError> {
        let key = self.keys.checkpoint.clone();
        let resp = retry("read checkpoint", timeout, || {
            let mut kv = self.client.kv_client();
            let key = key.clone();
            async move { kv.get(key, None).await }
        })
        .await?;
        match resp.kvs().first() {
            None => Ok(None),
            Some(kv) => {
                let checkpoint =
                    serde_json::from_slice(kv.value()).map_err(|e| CoordError::Corrupt {
                        key: key.clone(),
                        message: format!(
                            "{e}; fix it with `binlog-bridge checkpoint set POSITION --force`"
                        ),
                    })?;
                Ok(Some(Stored {
                    checkpoint,
                    mod_revision: kv.mod_revision(),
                }))
            }
        }
    }

    /// Write `doc` if and only if `leader_key` still has create revision
    /// `epoch` (invariant 1). Retries transient errors until `until`; a Txn
    /// retried after an unknown outcome writes the same document, so it is
    /// harmless.
    pub async fn write_fenced(
        &self,
        leader_key: &[u8],
        epoch: i64,
        doc: &Checkpoint,
        until: Instant,
    ) -> Result<(), CheckpointError> {
        let value = serde_json::to_vec(doc).map_err(|e| CoordError::Corrupt {
            key: self.keys.checkpoint.clone(),
            message: e.to_string(),
        })?;
        let timeout = until.saturating_duration_since(Instant::now());
        let resp = retry("checkpoint txn", timeout, || {
            let mut kv = self.client.kv_client();
            let txn = Txn::new()
                .when([Compare::create_revision(
                    leader_key.to_vec(),
                    CompareOp::Equal,
                    epoch,
                )])
                .and_then([TxnOp::put(
                    self.keys.checkpoint.clone(),
                    value.clone(),
                    None,
                )]);
            async move { kv.txn(txn).await }
        })
        .await?;
        if resp.succeeded() {
            Ok(())
        } else {
            Err(CheckpointError::Fenced { epoch })
        }
    }

    /// Replace the checkpoint by hand (`checkpoint set`). Refused while a
    /// leader holds the lock unless `force`; with `force` the leader's key is
    /// deleted in the same Txn, so that leader is fenced at its next
    /// checkpoint and steps down, and the next leader starts from `doc`.
    pub async fn set_by_hand(
        &self,
        doc: &Checkpoint,
        force: bool,
        timeout: Duration,
    ) -> Result<(), CheckpointError> {
        let value = serde_json::to_vec(doc).map_err(|e| CoordError::Corrupt {
            key: self.keys.checkpoint.clone(),
            message: e.to_string(),
        })?;
        let leader = current_leader(&self.client, &self.keys, timeout).await?;
        let put = TxnOp::put(self.keys.checkpoint.clone(), value, None);
        let candidates = format!("{}/", self.keys.leader);
        let txn = match (&leader, force) {
            // Nobody leads: write only if that is still true at commit time.
            (None, _) => Txn::new()
                .when([Compare::version(candidates.clone(), CompareOp::Equal, 0).with_prefix()])
                .and_then([put]),
            (Some(l), false) => {
                return Err(CheckpointError::LeaderActive {
                    leader: describe(l.identity.as_ref(), l.epoch),
                })
            }
            (Some(l), true) => Txn::new()
                .when([Compare::create_revision(
                    l.key.clone(),
                    CompareOp::Equal,
                    l.epoch,
                )])
                .and_then([put, TxnOp::delete(l.key.clone(), None)]),
        };
        let resp = retry("checkpoint set", timeout, || {
            let mut kv = self.client.kv_client();
            let txn = txn.clone();
            async move { kv.txn(txn).await }
        })
        .await?;
        if resp.succeeded() {
            return Ok(());
        }
        // The leadership changed between our read and the Txn.
        match current_leader(&self.client, &self.keys, timeout).await? {
            Some(l) => Err(CheckpointError::LeaderActive {
                leader: describe(l.identity.as_ref(), l.epoch),
            }),
            None => Err(CheckpointError::LeaderActive {
                leader: "leadership changed while writing; try again".into(),
            }),
        }
    }

    /// Every registered member (`<members>/<lease hex>` on each process's lease).
    pub async fn members(&self, timeout: Duration) -> Result<Vec<Identity>, CoordError> {
        let prefix = self.keys.members.clone();
        let resp = retry("list members", timeout, || {
            let mut kv = self.client.kv_client();
            let prefix = prefix.clone();
            async move { kv.get(prefix, Some(GetOptions::new().with_prefix())).await }
        })
        .await?;
        Ok(resp
            .kvs()
            .iter()
            .filter_map(|kv| serde_json::from_slice(kv.value()).ok())
            .collect())
    }
}

fn describe(identity: Option<&Identity>, epoch: i64) -> String {
    match identity {
        Some(i) => format!("{i}, epoch {epoch}"),
        None => format!("epoch {epoch}"),
    }
}

struct WriterState {
    last_write: Option<Instant>,
    written: Option<Position>,
    acked: Option<Position>,
    extra: serde_json::Map<String, serde_json::Value>,
    /// An extra field changed since the last write: the next write must
    /// happen even if the position did not move.
    extra_dirty: bool,
}

/// The leader's checkpoint writer. Clones share state (the pipeline keeps one
/// to write the final checkpoint after the work returns).
#[derive(Clone)]
pub struct CheckpointWriter {
    store: CheckpointStore,
    leader_key: Vec<u8>,
    epoch: i64,
    identity: Identity,
    interval: Duration,
    session: SessionHandle,
    state: Arc<Mutex<WriterState>>,
}

impl CheckpointWriter {
    pub fn new(
        store: CheckpointStore,
        leader_key: Vec<u8>,
        epoch: i64,
        identity: Identity,
        interval: Duration,
        session: SessionHandle,
        resume: Option<&Checkpoint>,
    ) -> CheckpointWriter {
        CheckpointWriter {
            store,
            leader_key,
            epoch,
            identity,
            interval,
            session,
            state: Arc::new(Mutex::new(WriterState {
                last_write: None,
                written: resume.map(|c| c.position.clone()),
                acked: None,
                extra: resume.map(|c| c.extra.clone()).unwrap_or_default(),
                extra_dirty: false,
            })),
        }
    }

    pub fn epoch(&self) -> i64 {
        self.epoch
    }

    /// The etcd client and this leader's key, for other fenced writes
    /// (e.g. deleting a finished snapshot request).
    pub fn fence(&self) -> (&Client, &[u8]) {
        (&self.store.client, &self.leader_key)
    }

    /// Whether the lease still allows writing.
    pub fn may_write(&self) -> bool {
        self.session.is_alive()
    }

    /// Set an extra field carried in every following checkpoint.
    pub async fn set_extra(&self, key: impl Into<String>, value: serde_json::Value) {
        let mut st = self.state.lock().await;
        let key = key.into();
        if st.extra.get(&key) != Some(&value) {
            st.extra.insert(key, value);
            st.extra_dirty = true;
        }
    }

    /// The last position written by this writer (or resumed from).
    pub async fn written(&self) -> Option<Position> {
        self.state.lock().await.written.clone()
    }

    /// Kafka acknowledged everything before `position` (invariant 2: callers
    /// pass only acknowledged positions). Writes if the interval has passed
    /// since the last write; returns whether it wrote.
    ///
    /// A write retries while the lease holds, so during an etcd election this
    /// can take up to the lease TTL: call it from a task whose blocking does
    /// not hold up sends if that matters (the heartbeat work does).
    pub async fn acked(&self, position: &Position) -> Result<bool, CheckpointError> {
        let mut st = self.state.lock().await;
        if let Some(last) = st.acked.as_ref().or(st.written.as_ref()) {
            if position < last {
                return Err(CheckpointError::Regressed {
                    last: last.clone(),
                    new: position.clone(),
                });
            }
        }
        st.acked = Some(position.clone());
        let due = match st.last_write {
            None => true,
            Some(t) => t.elapsed() >= self.interval,
        };
        if !due {
            return Ok(false);
        }
        self.write_locked(&mut st).await
    }

    /// Write the latest acknowledged position now, if newer than the last
    /// write (the final checkpoint of a graceful stop).
    pub async fn flush(&self) -> Result<bool, CheckpointError> {
        let mut st = self.state.lock().await;
        self.write_locked(&mut st).await
    }

    async fn write_locked(&self, st: &mut WriterState) -> Result<bool, CheckpointError> {
        let Some(position) = st.acked.clone() else {
            return Ok(false);
        };
        if st.written.as_ref() == Some(&position) && st.last_write.is_some() && !st.extra_dirty {
            return Ok(false);
        }
        // Invariant 4: never write after the lease deadline or a loss.
        if !self.session.is_alive() {
            return Err(CheckpointError::SessionLost);
        }
        let doc = Checkpoint {
            position: position.clone(),
            epoch: self.epoch,
            leader: Some(self.identity.clone()),
            written_at_ms: now_ms(),
            extra: st.extra.clone(),
        };
        // Retry for as long as the lease holds: the deadline moves on with
        // every answered keep-alive, and a Txn stalled by an etcd leader
        // election must not make a leader that kept its lease step down.
        let mut result = self
            .store
            .write_fenced(&self.leader_key, self.epoch, &doc, self.session.deadline())
            .await;
        while matches!(
            result,
            Err(CheckpointError::Etcd(
                CoordError::Timeout { .. } | CoordError::Unavailable { .. }
            ))
        ) && self.session.is_alive()
        {
            result = self
                .store
                .write_fenced(&self.leader_key, self.epoch, &doc, self.session.deadline())
                .await;
        }
        match result {
            Err(CheckpointError::Etcd(
                CoordError::Timeout { .. } | CoordError::Unavailable { .. },
            )) => Err(CheckpointError::SessionLost),
            Ok(()) => {
                st.last_write = Some(Instant::now());
                st.written = Some(position);
                st.extra_dirty = false;
                Ok(true)
            }
            Err(CheckpointError::Fenced { epoch }) => {
                // Invariant 1: fenced means someone else may lead: stop all output.
                tracing::error!(
                    epoch,
                    "checkpoint Txn refused: no longer leader; stopping output"
                );
                self.session.lost().cancel();
                Err(CheckpointError::Fenced { epoch })
            }
            Err(e) => Err(e),
        }
    }
}

/// Read a checkpoint given only the client (for the CLI).
pub async fn read(
    client: &Client,
    keys: &Keys,
    timeout: Duration,
) -> Result<Option<Stored>, CoordError> {
    CheckpointStore::new(client.clone(), keys.clone())
        .read(timeout)
        .await
}
