//! On-demand snapshot requests in etcd: one key per request under
//! `<prefix>/<pipeline>/snapshot-requests/`, written by the CLI, run by the
//! leader in creation order, deleted (fenced on the leader key) when done.

use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, GetOptions, SortOrder, SortTarget, Txn, TxnOp};

use super::ondemand::Request;
use crate::coord::{retry, CoordError};

/// A request key as found in etcd: the request, or why it cannot be read.
#[derive(Debug, Clone)]
pub struct Found {
    pub key: String,
    pub request: Result<Request, String>,
}

/// Every request under `prefix`, oldest first.
pub async fn list(
    client: &Client,
    prefix: &str,
    timeout: Duration,
) -> Result<Vec<Found>, CoordError> {
    let resp = retry("list snapshot requests", timeout, || {
        let mut kv = client.kv_client();
        let opts = GetOptions::new()
            .with_prefix()
            .with_sort(SortTarget::Create, SortOrder::Ascend);
        let prefix = prefix.to_string();
        async move { kv.get(prefix, Some(opts)).await }
    })
    .await?;
    Ok(resp
        .kvs()
        .iter()
        .map(|kv| {
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            let request = Request::parse(&key, kv.value());
            Found { key, request }
        })
        .collect())
}

/// Write a new request (refused if its key exists: ids are unique).
pub async fn put(
    client: &Client,
    prefix: &str,
    request: &Request,
    timeout: Duration,
) -> Result<String, CoordError> {
    let key = format!("{prefix}{}", request.id);
    let value = serde_json::to_vec(request).map_err(|e| CoordError::Corrupt {
        key: key.clone(),
        message: e.to_string(),
    })?;
    let resp = retry("write the snapshot request", timeout, || {
        let mut kv = client.kv_client();
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key.clone(), value.clone(), None)]);
        async move { kv.txn(txn).await }
    })
    .await?;
    if !resp.succeeded() {
        return Err(CoordError::Corrupt {
            key,
            message: "a request with this id exists already; ask again".into(),
        });
    }
    Ok(key)
}

/// Delete a request key if `leader_key` still has create revision `epoch`.
/// Returns false when fenced (someone else leads).
pub async fn delete_fenced(
    client: &Client,
    leader_key: &[u8],
    epoch: i64,
    key: &str,
    timeout: Duration,
) -> Result<bool, CoordError> {
    let resp = retry("delete the snapshot request", timeout, || {
        let mut kv = client.kv_client();
        let txn = Txn::new()
            .when([Compare::create_revision(
                leader_key.to_vec(),
                CompareOp::Equal,
                epoch,
            )])
            .and_then([TxnOp::delete(key.to_string(), None)]);
        async move { kv.txn(txn).await }
    })
    .await?;
    Ok(resp.succeeded())
}
