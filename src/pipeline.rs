//! The leader loop: standby -> takeover -> work -> step down, forever.
//!
//! [`run`] is what `binlog-bridge run` calls. It owns the etcd side (session,
//! member registration, election, checkpoint reads and writes) and calls a
//! pluggable [`LeaderWork`] — the source + sink in production, a heartbeat
//! counter in tests — only while this process leads. Standbys never call it,
//! so they never connect to MySQL as a replica and never produce.
//!
//! Token tree: `root` (dropped with `run`) -> one `lost` token per session
//! (fires on lease loss, a fenced checkpoint, or `root`). The caller's `stop`
//! token asks for a graceful stop. The work sees both through
//! [`LeaderContext`]: `lost` = stop output *now*, drop what is in flight;
//! `stop` = stop reading, finish the batch, checkpoint, return `Ok`.
//!
//! Plugging in a work (what `binlog-bridge run` does):
//!
//! ```text
//! let stop = CancellationToken::new();
//! pipeline::stop_on_signals(stop.clone())?;              // SIGTERM/SIGINT
//! let (role_tx, role_rx) = watch::channel(Role::Starting); // for /readyz
//! let opts = Options::new(config.etcd.clone(), Identity::current(&config.http.listen));
//! pipeline::run(opts, MyWork { .. }, stop, role_tx).await?;
//!
//! impl LeaderWork for MyWork {
//!     async fn run(&self, ctx: LeaderContext) -> Result<(), WorkError> {
//!         // start at ctx.resume (None: mysql.start); ctx.epoch in headers;
//!         // before each hand-off to Kafka: ctx.may_send() / ctx.deadline();
//!         // select on ctx.lost() (drop everything) and ctx.stop() (finish);
//!         // after Kafka acks up to p: ctx.checkpoint.acked(&p).await?;
//!     }
//! }
//! ```

pub mod heartbeat;

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::EtcdConfig;
use crate::coord::checkpoint::{Checkpoint, CheckpointError, CheckpointStore, CheckpointWriter};
use crate::coord::election::{Election, Leadership};
use crate::coord::session::{Session, SessionHandle};
use crate::coord::{connect, retry, CoordError, Identity, Keys};

/// Why the leader work stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum WorkError {
    /// The lease was lost or the checkpoint fenced: no output may follow.
    #[error("checkpoint: {0}")]
    Checkpoint(Box<CheckpointError>),
    #[error("the etcd session was lost")]
    SessionLost,
    /// Anything else (MySQL, Kafka, ...): the pipeline steps down and campaigns again.
    #[error("{0}")]
    Failed(Box<dyn std::error::Error + Send + Sync>),
}

impl From<CheckpointError> for WorkError {
    fn from(e: CheckpointError) -> Self {
        WorkError::Checkpoint(Box::new(e))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// A definite etcd problem (bad credentials, bad config): retrying will not help.
    #[error(transparent)]
    Etcd(#[from] CoordError),
}

/// The work a leader does. Called once per leadership; must return soon
/// after `ctx.stop()` fires (graceful, after its own final acks) and must
/// stop output at once when `ctx.lost()` fires (the pipeline also drops the
/// future then).
pub trait LeaderWork: Send + Sync {
    fn run(&self, ctx: LeaderContext) -> impl Future<Output = Result<(), WorkError>> + Send;
}

/// Everything the leader work gets from the gate.
pub struct LeaderContext {
    /// Fencing token: the create revision of our leader key. Put it in every
    /// message's headers.
    pub epoch: i64,
    pub identity: Identity,
    /// Where to resume: the checkpoint as it was at takeover (None: no
    /// checkpoint yet, start from `mysql.start`).
    pub resume: Option<Checkpoint>,
    /// Record acknowledged positions here; it writes the fenced checkpoint.
    pub checkpoint: CheckpointWriter,
    session: SessionHandle,
    stop: CancellationToken,
}

impl LeaderContext {
    /// Fires when the lease is lost or a checkpoint was fenced: stop output now.
    pub fn lost(&self) -> &CancellationToken {
        self.session.lost()
    }
    /// Fires on a graceful stop request: stop reading, finish the batch, return.
    pub fn stop(&self) -> &CancellationToken {
        &self.stop
    }
    /// The local lease deadline (monotonic clock). Never hand anything to the
    /// producer at or after it.
    pub fn deadline(&self) -> Instant {
        self.session.deadline()
    }
    /// True if output is allowed right now (lease alive, deadline ahead).
    pub fn may_send(&self) -> bool {
        self.session.is_alive()
    }
    /// A handle to the session, for tasks the work spawns.
    pub fn session(&self) -> SessionHandle {
        self.session.clone()
    }
}

/// Timings of the loop, derived from `[etcd]`.
#[derive(Debug, Clone)]
pub struct Options {
    pub etcd: EtcdConfig,
    pub identity: Identity,
    /// How long one etcd operation may be retried before the loop starts over.
    pub op_timeout: Duration,
    /// Where the round trip of every answered lease keep-alive is recorded.
    pub keepalive_latency: Option<std::sync::Arc<crate::ops::metrics::Histogram>>,
}

impl Options {
    pub fn new(etcd: EtcdConfig, identity: Identity) -> Options {
        let ttl = Duration::from_secs(etcd.lease_ttl_secs.max(1) as u64);
        Options {
            etcd,
            identity,
            op_timeout: ttl.max(Duration::from_secs(1)),
            keepalive_latency: None,
        }
    }
}

/// Observable state of the loop (for /readyz, /status and tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    Starting,
    Standby,
    Leader {
        epoch: i64,
    },
    /// The leader work failed (e.g. MySQL or Kafka unreachable, a wrong
    /// password): stepped down, out of the election until the pause ends.
    Backoff {
        error: String,
        retry_in_ms: u64,
    },
    Stopped,
}

/// Run the leader loop until `stop` fires. Returns Ok after a graceful stop
/// (final checkpoint written if leading, resigned, lease revoked), or an
/// error that retrying cannot fix (etcd refused our credentials).
pub async fn run<W: LeaderWork>(
    opts: Options,
    work: W,
    stop: CancellationToken,
    role: watch::Sender<Role>,
) -> Result<(), PipelineError> {
    let root = CancellationToken::new();
    let _root_guard = root.clone().drop_guard();
    let keys = Keys::from_config(&opts.etcd);
    let mut attempts: u32 = 0;
    let client = loop {
        match connect(&opts.etcd, opts.op_timeout).await {
            Ok(c) => break c,
            Err(
                e @ (CoordError::Refused { .. }
                | CoordError::Config(_)
                | CoordError::ReadFile { .. }),
            ) => return Err(e.into()),
            Err(e) => {
                attempts = attempts.saturating_add(1);
                let pause = etcd_pause(attempts);
                tracing::warn!(error = %e, attempts, retry_in_ms = pause.as_millis() as u64, "cannot connect to etcd yet; retrying");
                if sleep_or_stop(&stop, pause).await {
                    return Ok(());
                }
            }
        }
    };
    let election = Election::new(client.clone(), keys.clone());
    let store = CheckpointStore::new(client.clone(), keys.clone());
    let interval = Duration::from_millis(opts.etcd.checkpoint_interval_ms);
    // Standby is announced once a session exists (below), not before.
    let mut session_failures: u32 = 0;

    // A lease whose session ended only because its local deadline passed:
    // it may have survived in etcd (see Session::reattach).
    let mut carried: Option<(i64, Duration)> = None;
    // Leaderships in a row that ended in a work failure (see `failure_pause`).
    let mut failures: u32 = 0;
    while !stop.is_cancelled() {
        // --- session: the surviving lease, or a new one -------------------
        let reattached = match carried.take() {
            Some((lease, ttl)) => {
                match Session::reattach(&client, lease, ttl, &root, ttl * 2).await {
                    Some(s) => {
                        tracing::info!(
                            lease = format!("{lease:x}"),
                            "the lease survived the etcd stall; carrying on with it"
                        );
                        Some(s)
                    }
                    None => {
                        crate::coord::session::revoke(
                            client.clone(),
                            lease,
                            Duration::from_millis(200),
                        )
                        .await;
                        None
                    }
                }
            }
            None => None,
        };
        let session = match reattached {
            Some(s) => s,
            None => match Session::start(&client, opts.etcd.lease_ttl_secs, &root, opts.op_timeout)
                .await
            {
                Ok(s) => {
                    session_failures = 0;
                    s
                }
                Err(e @ CoordError::Refused { .. }) => return Err(e.into()),
                Err(e) => {
                    // No session: not ready (etcd down or without quorum).
                    let _ = role.send(Role::Starting);
                    session_failures = session_failures.saturating_add(1);
                    let pause = etcd_pause(session_failures);
                    tracing::warn!(error = %e, attempts = session_failures, retry_in_ms = pause.as_millis() as u64, "cannot start an etcd session; retrying");
                    if sleep_or_stop(&stop, pause).await {
                        break;
                    }
                    continue;
                }
            },
        };
        if let Some(hist) = &opts.keepalive_latency {
            // Ends when the session's keep-alive task does (the sender drops).
            let mut rtt = session.keepalive_rtt();
            let hist = hist.clone();
            tokio::spawn(async move {
                while rtt.changed().await.is_ok() {
                    let d = *rtt.borrow_and_update();
                    if let Some(d) = d {
                        hist.observe(d);
                    }
                }
            });
        }
        register_member(&client, &keys, &session, &opts).await;

        // --- standby: campaign, log who leads -----------------------------
        let _ = role.send(Role::Standby);
        let observer_stop = session.lost().child_token();
        let observer = {
            let election = election.clone();
            let t = observer_stop.clone();
            tokio::spawn(async move { election.log_leaders(t).await })
        };
        let won = tokio::select! {
            _ = stop.cancelled() => None,
            r = election.campaign(&session, &opts.identity) => match r {
                Ok(w) => w,
                Err(e @ CoordError::Refused { .. }) => {
                    observer_stop.cancel();
                    session.close(opts.op_timeout).await;
                    return Err(e.into());
                }
                Err(e) => {
                    tracing::warn!(error = %e, "campaign failed");
                    None
                }
            },
        };
        observer_stop.cancel();
        let _ = observer.await;
        let Some(leadership) = won else {
            if session.deadline_passed() && !stop.is_cancelled() {
                tracing::info!(
                    "session deadline passed while standing by; trying to keep the lease"
                );
                carried = Some(session.abandon());
            } else {
                session.close(Duration::from_millis(500)).await;
            }
            continue;
        };

        // --- leader ---------------------------------------------------------
        let led_at = Instant::now();
        let outcome = lead(
            &opts,
            &work,
            &store,
            &session,
            &leadership,
            interval,
            &stop,
            &role,
        )
        .await;
        match outcome {
            Ok(()) => {
                let _ = role.send(Role::Standby);
                // Graceful: final checkpoint already written in `lead`.
                resign_quietly(&election, &leadership).await;
                session.close(opts.op_timeout).await;
                break;
            }
            Err(e)
                if session.deadline_passed()
                    && matches!(e, WorkError::SessionLost | WorkError::Checkpoint(_)) =>
            {
                // Output has stopped. If the lease survived the stall, the
                // campaign on it returns at once with the same epoch and we
                // lead on; if not, a standby has (or will have) taken over.
                // Until a session is back: not ready.
                let _ = role.send(Role::Starting);
                tracing::warn!(epoch = leadership.epoch, error = %e, "lease deadline passed: output stopped; trying to keep the lease");
                carried = Some(session.abandon());
            }
            Err(e) => {
                // A failure after a long healthy leadership starts the
                // backoff over; failures in a row double the pause.
                if led_at.elapsed() >= HEALTHY_LEADERSHIP {
                    failures = 0;
                }
                failures = failures.saturating_add(1);
                let pause = failure_pause(failures);
                tracing::warn!(
                    epoch = leadership.epoch,
                    error = %e,
                    failures,
                    retry_in_ms = pause.as_millis() as u64,
                    "stepping down"
                );
                if !session.lost().is_cancelled() {
                    resign_quietly(&election, &leadership).await;
                }
                session.close(Duration::from_millis(500)).await;
                // After the resign: a standby need not wait for this.
                record_failure(&client, &keys, &opts, leadership.epoch, &e, pause).await;
                // Out of the election for the pause: a standby can try, and
                // a lasting fault (MySQL down, wrong password) is retried
                // with backoff and one log line per attempt, not a hot loop.
                let _ = role.send(Role::Backoff {
                    error: e.to_string(),
                    retry_in_ms: pause.as_millis() as u64,
                });
                if sleep_or_stop(&stop, pause).await {
                    break;
                }
            }
        }
    }
    if let Some((lease, _)) = carried {
        crate::coord::session::revoke(client.clone(), lease, Duration::from_millis(500)).await;
    }
    let _ = role.send(Role::Stopped);
    Ok(())
}

/// Pause before the `n`th retry to reach etcd: 200 ms doubling, at most 5 s.
fn etcd_pause(n: u32) -> Duration {
    Duration::from_millis(200u64.saturating_mul(1 << n.saturating_sub(1).min(5)))
        .min(Duration::from_secs(5))
}

/// A leadership that lasted this long before failing resets the backoff.
const HEALTHY_LEADERSHIP: Duration = Duration::from_secs(60);

/// Pause after the `n`th work failure in a row: 100 ms doubling, at most 30 s.
pub fn failure_pause(n: u32) -> Duration {
    Duration::from_millis(100u64.saturating_mul(1 << n.saturating_sub(1).min(9)))
        .min(Duration::from_secs(30))
}

#[allow(clippy::too_many_arguments)]
async fn lead<W: LeaderWork>(
    opts: &Options,
    work: &W,
    store: &CheckpointStore,
    session: &Session,
    leadership: &Leadership,
    interval: Duration,
    stop: &CancellationToken,
    role: &watch::Sender<Role>,
) -> Result<(), WorkError> {
    let lost = session.lost().clone();
    if !session.handle().is_alive() {
        return Err(WorkError::SessionLost);
    }
    let resume = tokio::select! {
        _ = lost.cancelled() => return Err(WorkError::SessionLost),
        r = store.read(session.deadline().saturating_duration_since(Instant::now())) => r,
    }
    .map_err(|e| WorkError::from(CheckpointError::from(e)))?
    .map(|s| s.checkpoint);
    tracing::info!(
        epoch = leadership.epoch,
        resume = %resume.as_ref().map(|c| c.position.to_string()).unwrap_or_else(|| "none (mysql.start)".into()),
        "leading"
    );
    let _ = role.send(Role::Leader {
        epoch: leadership.epoch,
    });
    let writer = CheckpointWriter::new(
        store.clone(),
        leadership.key.clone(),
        leadership.epoch,
        opts.identity.clone(),
        interval,
        session.handle(),
        resume.as_ref(),
    );
    let ctx = LeaderContext {
        epoch: leadership.epoch,
        identity: opts.identity.clone(),
        resume,
        checkpoint: writer.clone(),
        session: session.handle(),
        stop: stop.clone(),
    };
    // Lease loss wins over everything: the work future is dropped at once.
    let result = tokio::select! {
        biased;
        _ = lost.cancelled() => Err(WorkError::SessionLost),
        r = work.run(ctx) => r,
    };
    result?;
    // Graceful return: the final fenced checkpoint of what was acknowledged.
    writer.flush().await?;
    Ok(())
}

async fn resign_quietly(election: &Election, leadership: &Leadership) {
    if let Err(e) = election
        .resign(leadership, Duration::from_millis(1000))
        .await
    {
        tracing::debug!(error = %e, "resign failed; the lease revoke removes the key anyway");
    }
}

/// Register `<members>/<lease hex>` = identity on the session's lease, so
/// `status` can list every live process. Best effort.
async fn register_member(
    client: &etcd_client::Client,
    keys: &Keys,
    session: &Session,
    opts: &Options,
) {
    let key = format!("{}{:x}", keys.members, session.lease());
    let value = opts.identity.to_json();
    let lease = session.lease();
    let res = retry("register member", opts.op_timeout, || {
        let mut kv = client.kv_client();
        let (key, value) = (key.clone(), value.clone());
        async move {
            kv.put(
                key,
                value,
                Some(etcd_client::PutOptions::new().with_lease(lease)),
            )
            .await
        }
    })
    .await;
    if let Err(e) = res {
        tracing::warn!(error = %e, "cannot register as a member (status will not list this process)");
    }
}

/// Write why this leader steps down to `<pipeline>/last-failure`, for
/// `binlog-bridge status`: while every process is backing off nobody leads
/// and no member is registered, and this is what says why. Best effort,
/// bounded (etcd may be what failed).
async fn record_failure(
    client: &etcd_client::Client,
    keys: &Keys,
    opts: &Options,
    epoch: i64,
    error: &WorkError,
    pause: Duration,
) {
    let value = serde_json::json!({
        "identity": opts.identity,
        "epoch": epoch,
        "at_ms": crate::coord::now_ms(),
        "error": error.to_string(),
        "retry_in_ms": pause.as_millis() as u64,
    })
    .to_string();
    let res = retry("record the failure", Duration::from_millis(500), || {
        let mut kv = client.kv_client();
        let (key, value) = (keys.last_failure.clone(), value.clone());
        async move { kv.put(key, value, None).await }
    })
    .await;
    if let Err(e) = res {
        tracing::debug!(error = %e, "cannot record the failure for status");
    }
}

/// Sleep, or return true at once if `stop` fires.
async fn sleep_or_stop(stop: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        _ = stop.cancelled() => true,
        _ = tokio::time::sleep(d) => false,
    }
}

/// Cancel `stop` on the first SIGTERM or SIGINT; exit the process with code
/// 130 on a second one (an operator who insists).
pub fn stop_on_signals(stop: CancellationToken) -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("stop requested: finishing the batch, final checkpoint, resign");
        stop.cancel();
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::warn!("second stop signal: exiting now");
        std::process::exit(130);
    });
    Ok(())
}

#[cfg(test)]
mod backoff_tests {
    use super::*;

    #[test]
    fn failures_in_a_row_double_the_pause_up_to_a_cap() {
        let ms: Vec<u64> = (1..=11)
            .map(|n| failure_pause(n).as_millis() as u64)
            .collect();
        assert_eq!(
            ms,
            [100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000]
        );
        let ms: Vec<u64> = (1..=8).map(|n| etcd_pause(n).as_millis() as u64).collect();
        assert_eq!(ms, [200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
    }
}
