//! The election on `<prefix>/<pipeline>/leader`, through etcd's election API.
//!
//! Every candidate creates `<leader>/<lease id hex>` on its session's lease
//! (that is what etcd's `Campaign` does); the key with the lowest create
//! revision leads. That create revision is the **epoch**: it only grows from
//! one leader to the next, and the checkpoint Txn compares it, so a leader
//! whose key is gone (lease expired, resigned, deleted by `checkpoint set
//! --force`) can no longer write anything.

use std::time::Duration;

use etcd_client::{Client, GetOptions, LeaderKey, ResignOptions, SortOrder, SortTarget};
use tokio_util::sync::CancellationToken;

use super::session::Session;
use super::{retry, CoordError, Identity, Keys};

/// We lead: the key we hold and its create revision.
#[derive(Debug, Clone)]
pub struct Leadership {
    pub key: Vec<u8>,
    /// Create revision of `key`: the fencing token.
    pub epoch: i64,
    pub lease: i64,
    leader_key: LeaderKey,
}

/// Who leads, as read from etcd.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LeaderInfo {
    pub key: String,
    pub epoch: i64,
    pub lease: i64,
    /// The leader's identity, or None if the value is not ours.
    pub identity: Option<Identity>,
}

/// Campaigning and observing one pipeline's election.
#[derive(Clone)]
pub struct Election {
    client: Client,
    keys: Keys,
}

impl Election {
    pub fn new(client: Client, keys: Keys) -> Election {
        Election { client, keys }
    }

    /// Block until we lead, retrying failed campaign calls (a dead endpoint)
    /// every 100 ms. Returns None if the session is lost first (or its
    /// parent token fires). Dropping the future abandons the campaign; etcd
    /// removes the candidacy when the call is cancelled or the lease ends.
    pub async fn campaign(
        &self,
        session: &Session,
        identity: &Identity,
    ) -> Result<Option<Leadership>, CoordError> {
        let value = identity.to_json();
        let lost = session.lost().clone();
        loop {
            let mut ec = self.client.election_client();
            let call = ec.campaign(self.keys.leader.clone(), value.clone(), session.lease());
            let res = tokio::select! {
                _ = lost.cancelled() => return Ok(None),
                r = call => r,
            };
            match res {
                Ok(mut resp) => match resp.take_leader() {
                    Some(lk) => {
                        return Ok(Some(Leadership {
                            key: lk.key().to_vec(),
                            epoch: lk.rev(),
                            lease: lk.lease(),
                            leader_key: lk,
                        }))
                    }
                    None => {
                        return Err(CoordError::Corrupt {
                            key: self.keys.leader.clone(),
                            message: "campaign answered without a leader key".into(),
                        })
                    }
                },
                // Our lease is gone (expired while we were paused): the
                // session is over, not the process.
                Err(etcd_client::Error::GRpcStatus(st)) if st.code() == tonic::Code::NotFound => {
                    tracing::debug!(error = %st.message(), "campaign: lease not found");
                    return Ok(None);
                }
                Err(e) if super::is_definite(&e) => {
                    return Err(CoordError::Refused {
                        what: "campaign".into(),
                        source: e,
                    })
                }
                Err(e) => {
                    tracing::debug!(error = %e, "campaign failed; retrying");
                    tokio::select! {
                        _ = lost.cancelled() => return Ok(None),
                        _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    }
                }
            }
        }
    }

    /// Give up leadership: delete our key if it is still ours, so a standby
    /// takes over at once instead of after the lease TTL.
    pub async fn resign(
        &self,
        leadership: &Leadership,
        timeout: Duration,
    ) -> Result<(), CoordError> {
        retry("resign", timeout, || {
            let mut ec = self.client.election_client();
            let lk = leadership.leader_key.clone();
            async move { ec.resign(Some(ResignOptions::new().with_leader(lk))).await }
        })
        .await
        .map(|_| ())
    }

    /// The current leader: the candidate key with the lowest create revision.
    pub async fn leader(&self, timeout: Duration) -> Result<Option<LeaderInfo>, CoordError> {
        current_leader(&self.client, &self.keys, timeout).await
    }

    /// Log every change of leader until `stop` fires (for standbys: "who
    /// leads now"). Uses etcd's Observe stream, re-opened after errors.
    pub async fn log_leaders(&self, stop: CancellationToken) {
        let mut last: Option<i64> = None;
        while !stop.is_cancelled() {
            let mut ec = self.client.election_client();
            let opened = tokio::select! {
                _ = stop.cancelled() => return,
                s = ec.observe(self.keys.leader.clone()) => s,
            };
            let mut stream = match opened {
                Ok(s) => s,
                Err(_) => {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_millis(200)) => continue,
                    }
                }
            };
            loop {
                let msg = tokio::select! {
                    _ = stop.cancelled() => return,
                    m = stream.message() => m,
                };
                match msg {
                    Ok(Some(resp)) => {
                        if let Some(kv) = resp.kv() {
                            let epoch = kv.create_revision();
                            if last != Some(epoch) {
                                last = Some(epoch);
                                let who = serde_json::from_slice::<Identity>(kv.value())
                                    .map(|i| i.to_string())
                                    .unwrap_or_else(|_| {
                                        String::from_utf8_lossy(kv.value()).into_owned()
                                    });
                                tracing::info!(leader = %who, epoch, "standing by; current leader");
                            }
                        }
                    }
                    _ => break,
                }
            }
        }
    }
}

/// Read the leader from the KV store (no election call needed): the key
/// under `<leader>/` with the lowest create revision.
pub async fn current_leader(
    client: &Client,
    keys: &Keys,
    timeout: Duration,
) -> Result<Option<LeaderInfo>, CoordError> {
    let prefix = format!("{}/", keys.leader);
    let resp = retry("get leader", timeout, || {
        let mut kv = client.kv_client();
        let prefix = prefix.clone();
        async move {
            kv.get(
                prefix,
                Some(
                    GetOptions::new()
                        .with_prefix()
                        .with_sort(SortTarget::Create, SortOrder::Ascend)
                        .with_limit(1),
                ),
            )
            .await
        }
    })
    .await?;
    Ok(resp.kvs().first().map(|kv| LeaderInfo {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        epoch: kv.create_revision(),
        lease: kv.lease(),
        identity: serde_json::from_slice(kv.value()).ok(),
    }))
}
