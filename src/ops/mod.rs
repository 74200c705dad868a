//! What an on-call engineer sees: metrics, health, readiness and status, served
//! over HTTP (`[http] listen`), all read from one shared [`OpsState`].
//!
//! The pipeline writes into the state (role, leader, position, counters); the
//! HTTP server only reads it, so serving a scrape never blocks the stream.

pub mod http;
pub mod metrics;

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

pub use metrics::Metrics;

/// What this process is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Connecting to etcd, not campaigning yet.
    Starting,
    /// Campaigning; another process (or nobody) leads.
    Standby,
    /// Holds the lease and streams.
    Leader,
}

/// The `/status` document.
#[derive(Debug, Clone, Serialize)]
pub struct StatusDoc {
    pub role: Role,
    /// This process's identity (as written in the election key).
    pub identity: serde_json::Value,
    /// The current leader's identity, when known.
    pub leader: Option<serde_json::Value>,
    /// Our epoch while leader.
    pub epoch: Option<i64>,
    /// Last position read from the binlog.
    pub position: Option<String>,
    /// Last position checkpointed (fully acknowledged by Kafka).
    pub checkpoint: Option<String>,
    /// Delivery mode in force while leader.
    pub delivery: Option<String>,
    /// Replication lag, seconds.
    pub lag_seconds: Option<f64>,
    /// Whether the etcd session is alive.
    pub etcd_connected: bool,
    /// Whether the leader is streaming (source and sink up).
    pub streaming: bool,
    /// Why the process is not ready, if it is not.
    pub reason: Option<String>,
    /// While leader: the on-demand snapshot running (request id, tables,
    /// table, rows done) and the requests queued behind it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<serde_json::Value>,
}

/// Shared between the pipeline (writer) and the HTTP server (reader).
#[derive(Debug)]
pub struct OpsState {
    pub metrics: Metrics,
    status: Mutex<StatusDoc>,
}

impl OpsState {
    pub fn new(identity: serde_json::Value) -> Arc<OpsState> {
        Arc::new(OpsState {
            metrics: Metrics::default(),
            status: Mutex::new(StatusDoc {
                role: Role::Starting,
                identity,
                leader: None,
                epoch: None,
                position: None,
                checkpoint: None,
                delivery: None,
                lag_seconds: None,
                etcd_connected: false,
                streaming: false,
                reason: Some("starting".into()),
                snapshot: None,
            }),
        })
    }

    /// Change the status document under the lock.
    pub fn update(&self, f: impl FnOnce(&mut StatusDoc)) {
        if let Ok(mut s) = self.status.lock() {
            f(&mut s);
        }
    }

    pub fn status(&self) -> Option<StatusDoc> {
        self.status.lock().ok().map(|s| s.clone())
    }

    /// `Ok(())` when ready; `Err(reason)` otherwise. Ready = leader and
    /// streaming, or standby with a live etcd session.
    pub fn readiness(&self) -> Result<(), String> {
        let s = self
            .status()
            .ok_or_else(|| "status lock poisoned".to_string())?;
        match s.role {
            Role::Leader if s.streaming => Ok(()),
            Role::Leader => Err(s
                .reason
                .unwrap_or_else(|| "leader, not streaming yet".into())),
            Role::Standby if s.etcd_connected => Ok(()),
            Role::Standby => Err(s.reason.unwrap_or_else(|| "no etcd session".into())),
            Role::Starting => Err(s.reason.unwrap_or_else(|| "starting".into())),
        }
    }
}

/// Seconds since the Unix epoch, as f64.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}
