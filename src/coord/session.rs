//! The session: one etcd lease per process, kept alive on a timer, with a
//! local deadline and a "lost" signal that fires without waiting for etcd.
//!
//! Why a local deadline: etcd expires the lease on its own clock, `TTL` after
//! the leader last renewed it. We only ever learn about renewals from
//! answers, so we compute `deadline = send time of the answered keep-alive +
//! TTL` on the monotonic clock. Because etcd renewed *after* we sent, our
//! deadline is never later than etcd's expiry: once it passes, another
//! process may lead, so all output must already have stopped. The exactly-once
//! work reads [`Session::deadline`] before every hand-off to Kafka.
//!
//! Keep-alives go out every TTL/10 (at least 50 ms), not the usual TTL/3:
//! the deadline can only be as late as the last *answered* send + TTL, so the
//! margin that rides out an etcd raft-leader election (measured 0.6-0.9 s
//! with `--election-timeout 500`) is TTL minus the period. With a 1 s lease,
//! TTL/3 leaves 0.67 s and a raft-leader kill made the bridge lose its lease
//! about every other time; TTL/10 leaves 0.9 s. The cost is ten small
//! requests per TTL per process. A failed or unanswered keep-alive is
//! retried on a fresh stream (the client balances over all endpoints, so the
//! retry usually reaches a live member) until the deadline; the session is
//! lost when the deadline passes or etcd answers TTL <= 0 (the lease is gone).
//! This differs from "lost on the first error" on purpose: the death of the
//! one member our stream happened to use must not change who leads, and the
//! deadline alone is what makes output safe.

use std::time::Duration;

use etcd_client::{Client, LeaseKeepAliveStream, LeaseKeeper};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{retry, CoordError};

/// Why a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LossReason {
    /// No keep-alive was answered before the local deadline.
    DeadlinePassed,
    /// etcd answered that the lease no longer exists.
    LeaseGone,
}

/// A live lease and its keep-alive task.
pub struct Session {
    client: Client,
    lease: i64,
    ttl: Duration,
    lost: CancellationToken,
    deadline: watch::Receiver<Instant>,
    reason: watch::Receiver<Option<LossReason>>,
    /// Round trip of the last answered keep-alive.
    rtt: watch::Receiver<Option<Duration>>,
    task: JoinHandle<()>,
}

/// What the leader work needs of the session: the deadline and the signal.
/// Cheap to clone.
#[derive(Clone)]
pub struct SessionHandle {
    lease: i64,
    lost: CancellationToken,
    deadline: watch::Receiver<Instant>,
}

impl SessionHandle {
    /// The local lease deadline (monotonic). Output is allowed strictly before it.
    pub fn deadline(&self) -> Instant {
        *self.deadline.borrow()
    }
    /// Fires when the session is lost (or the leader was fenced).
    pub fn lost(&self) -> &CancellationToken {
        &self.lost
    }
    /// True while output is allowed: not lost and the deadline is ahead.
    pub fn is_alive(&self) -> bool {
        !self.lost.is_cancelled() && Instant::now() < self.deadline()
    }
    pub fn lease(&self) -> i64 {
        self.lease
    }
}

impl Session {
    /// Grant a lease of `ttl_secs` and start keeping it alive. `parent` is the
    /// token whose cancellation also ends this session (the pipeline's root).
    pub async fn start(
        client: &Client,
        ttl_secs: i64,
        parent: &CancellationToken,
        timeout: Duration,
    ) -> Result<Session, CoordError> {
        let sent = Instant::now();
        let granted = retry("lease grant", timeout, || {
            let mut lc = client.lease_client();
            async move { lc.grant(ttl_secs, None).await }
        })
        .await?;
        // etcd may raise the TTL (minimum 1.5 x election timeout); use its answer.
        let ttl = Duration::from_secs(granted.ttl().max(1) as u64);
        let lease = granted.id();
        tracing::debug!(
            lease = format!("{lease:x}"),
            ttl_ms = ttl.as_millis() as u64,
            "session started"
        );
        Ok(Session::running(client, lease, ttl, sent, parent))
    }

    /// A session on `lease`, alive until `sent + ttl` unless keep-alives
    /// (started here) move the deadline on.
    fn running(
        client: &Client,
        lease: i64,
        ttl: Duration,
        sent: Instant,
        parent: &CancellationToken,
    ) -> Session {
        let (deadline_tx, deadline) = watch::channel(sent + ttl);
        let (reason_tx, reason) = watch::channel(None);
        let (rtt_tx, rtt) = watch::channel(None);
        let lost = parent.child_token();
        let task = tokio::spawn(keep_alive_loop(
            client.clone(),
            lease,
            ttl,
            deadline_tx,
            reason_tx,
            rtt_tx,
            lost.clone(),
        ));
        Session {
            client: client.clone(),
            lease,
            ttl,
            lost,
            deadline,
            reason,
            rtt,
            task,
        }
    }

    /// Try to take up `lease` again after the local deadline passed. The
    /// deadline is conservative: during an etcd raft election nobody can
    /// renew, but the new raft leader extends every lease, so the lease (and
    /// with it our election key and epoch) may well have survived. Sends a
    /// keep-alive until `timeout`: if etcd answers TTL > 0 the lease never
    /// expired, nobody else can have been granted our place, and a new
    /// session on the same lease is returned. None if the lease is gone or
    /// etcd did not answer in time.
    pub async fn reattach(
        client: &Client,
        lease: i64,
        ttl: Duration,
        parent: &CancellationToken,
        timeout: Duration,
    ) -> Option<Session> {
        let until = Instant::now() + timeout;
        while Instant::now() < until && !parent.is_cancelled() {
            let sent = Instant::now();
            let mut lc = client.lease_client();
            let bound = until
                .saturating_duration_since(sent)
                .min(Duration::from_millis(500));
            match tokio::time::timeout(bound, lc.keep_alive(lease)).await {
                Ok(Ok(_)) => {
                    return Some(Session::running(client, lease, ttl, sent, parent));
                }
                Ok(Err(e)) if is_lease_gone(&e) => return None,
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        None
    }

    pub fn lease(&self) -> i64 {
        self.lease
    }
    pub fn ttl(&self) -> Duration {
        self.ttl
    }
    pub fn deadline(&self) -> Instant {
        *self.deadline.borrow()
    }
    pub fn lost(&self) -> &CancellationToken {
        &self.lost
    }
    /// Why the session was lost, once it was (None while alive or when it was
    /// ended by its parent token or by fencing).
    pub fn loss_reason(&self) -> Option<LossReason> {
        self.reason.borrow().clone()
    }
    /// True if the session ended (or is ending) because its local deadline
    /// passed: the keep-alive task may not have recorded it yet when a
    /// checkpoint write notices the clock first.
    pub fn deadline_passed(&self) -> bool {
        match self.loss_reason() {
            Some(LossReason::DeadlinePassed) => true,
            Some(LossReason::LeaseGone) => false,
            None => Instant::now() >= self.deadline(),
        }
    }

    /// Round trip of the last answered keep-alive; changes on every answer.
    pub fn keepalive_rtt(&self) -> watch::Receiver<Option<Duration>> {
        self.rtt.clone()
    }

    pub fn handle(&self) -> SessionHandle {
        SessionHandle {
            lease: self.lease,
            lost: self.lost.clone(),
            deadline: self.deadline.clone(),
        }
    }

    /// End the session: stop keep-alives and revoke the lease, so every key
    /// attached to it (election candidacy, member registration) disappears
    /// now instead of after the TTL. If etcd cannot be reached within
    /// `timeout`, the revoke continues in the background for a while.
    pub async fn close(self, timeout: Duration) {
        self.lost.cancel();
        self.task.abort();
        revoke(self.client.clone(), self.lease, timeout).await;
    }
}

impl Session {
    /// Stop keep-alives without revoking (the lease may still be alive and
    /// worth [`Session::reattach`]ing).
    pub fn abandon(self) -> (i64, Duration) {
        self.lost.cancel();
        self.task.abort();
        (self.lease, self.ttl)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.lost.cancel();
        self.task.abort();
    }
}

/// Revoke `lease`, trying for `timeout` in the foreground and then up to 10 s
/// more in a background task (after a quorum loss the revoke can only land
/// once the quorum is back; until then the key expires on its own).
pub async fn revoke(client: Client, lease: i64, timeout: Duration) {
    let attempt = move |c: Client| async move {
        retry("lease revoke", Duration::from_millis(700), || {
            let mut lc = c.lease_client();
            async move { lc.revoke(lease).await }
        })
        .await
    };
    let fg = tokio::time::timeout(timeout, attempt(client.clone())).await;
    match fg {
        Ok(Ok(_)) => tracing::debug!(lease = format!("{lease:x}"), "lease revoked"),
        Ok(Err(CoordError::Refused { .. })) => {} // e.g. already gone: nothing left to do
        _ => {
            tokio::spawn(async move {
                let until = Instant::now() + Duration::from_secs(10);
                while Instant::now() < until {
                    match attempt(client.clone()).await {
                        Ok(_) | Err(CoordError::Refused { .. }) => return,
                        Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                    }
                }
            });
        }
    }
}

/// Is this keep-alive error etcd saying the lease does not exist?
fn is_lease_gone(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::LeaseKeepAliveError(m) => m.contains("not found"),
        etcd_client::Error::GRpcStatus(s) => s.message().contains("requested lease not found"),
        _ => false,
    }
}

enum Beat {
    /// Answered with this TTL (seconds).
    Alive(i64),
    Gone,
    Failed(String),
}

async fn one_beat(
    client: &Client,
    lease: i64,
    ttl: Duration,
    stream: &mut Option<(LeaseKeeper, LeaseKeepAliveStream)>,
) -> Beat {
    match stream {
        None => {
            let mut lc = client.lease_client();
            match lc.keep_alive(lease).await {
                // Opening the stream sends one keep-alive and reads its answer
                // (etcd-client checks TTL > 0 itself).
                Ok(pair) => {
                    *stream = Some(pair);
                    Beat::Alive(ttl.as_secs() as i64)
                }
                Err(e) if is_lease_gone(&e) => Beat::Gone,
                Err(e) => Beat::Failed(e.to_string()),
            }
        }
        Some((keeper, answers)) => {
            if let Err(e) = keeper.keep_alive().await {
                return Beat::Failed(e.to_string());
            }
            match answers.message().await {
                Ok(Some(r)) if r.ttl() > 0 => Beat::Alive(r.ttl()),
                Ok(Some(_)) => Beat::Gone,
                Ok(None) => Beat::Failed("keep-alive stream closed".into()),
                Err(e) if is_lease_gone(&e) => Beat::Gone,
                Err(e) => Beat::Failed(e.to_string()),
            }
        }
    }
}

async fn keep_alive_loop(
    client: Client,
    lease: i64,
    ttl: Duration,
    deadline_tx: watch::Sender<Instant>,
    reason_tx: watch::Sender<Option<LossReason>>,
    rtt_tx: watch::Sender<Option<Duration>>,
    lost: CancellationToken,
) {
    let period = (ttl / 10).max(Duration::from_millis(50));
    let retry_pause = Duration::from_millis(50);
    let mut stream: Option<(LeaseKeeper, LeaseKeepAliveStream)> = None;
    let mut next = Instant::now() + period;
    let lose = |why: LossReason| {
        tracing::warn!(lease = format!("{lease:x}"), reason = ?why, "etcd session lost; all output stops now");
        let _ = reason_tx.send(Some(why));
        lost.cancel();
    };
    loop {
        let deadline = *deadline_tx.borrow();
        tokio::select! {
            biased;
            _ = lost.cancelled() => return,
            _ = tokio::time::sleep_until(deadline) => {
                lose(LossReason::DeadlinePassed);
                return;
            }
            _ = tokio::time::sleep_until(next) => {}
        }
        let sent = Instant::now();
        // One keep-alive round trip, bounded by the deadline: an answer that
        // arrives after it cannot extend anything (etcd may already have
        // expired the lease).
        let beat = tokio::select! {
            biased;
            _ = lost.cancelled() => return,
            _ = tokio::time::sleep_until(deadline) => {
                lose(LossReason::DeadlinePassed);
                return;
            }
            b = tokio::time::timeout(period.max(Duration::from_millis(250)), one_beat(&client, lease, ttl, &mut stream)) => b,
        };
        match beat {
            Ok(Beat::Alive(secs)) => {
                let _ = rtt_tx.send(Some(sent.elapsed()));
                // Invariant: the deadline only ever comes from the *send* time
                // of an answered keep-alive plus the TTL etcd answered.
                let new_deadline = sent + Duration::from_secs(secs.max(0) as u64);
                if new_deadline > *deadline_tx.borrow() {
                    let _ = deadline_tx.send(new_deadline);
                }
                next = sent + period;
            }
            Ok(Beat::Gone) => {
                lose(LossReason::LeaseGone);
                return;
            }
            Ok(Beat::Failed(e)) => {
                tracing::debug!(lease = format!("{lease:x}"), error = %e, "keep-alive failed; retrying on a new stream");
                stream = None;
                next = Instant::now() + retry_pause;
            }
            Err(_) => {
                tracing::debug!(
                    lease = format!("{lease:x}"),
                    "keep-alive unanswered; retrying on a new stream"
                );
                stream = None;
                next = Instant::now();
            }
        }
    }
}
