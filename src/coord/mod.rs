//! The leader gate: everything the bridge keeps in etcd.
//!
//! Three nouns, as in etcd's Go `concurrency` package: a [`session::Session`]
//! (one lease, kept alive, with a local deadline and a "lost" signal), an
//! [`election::Election`] on `<prefix>/<pipeline>/leader` whose leader key's
//! create revision is the **epoch** (fencing token), and the fenced
//! [`checkpoint`] written only while that key still exists. This file holds
//! what they share: the etcd connection built from `[etcd]`, the key layout,
//! the process identity, and the retry-with-deadline helper every etcd call
//! that matters goes through (after a member dies the client keeps sending
//! some requests to the dead endpoint for a while, see TESTENV.md).

pub mod admin;
pub mod checkpoint;
pub mod election;
pub mod session;
pub mod watchdog;

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use etcd_client::{Certificate, Client, ConnectOptions, Identity as TlsIdentity, TlsOptions};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::config::{resolve_secret, EtcdConfig};

/// What went wrong talking to etcd.
#[derive(Debug, thiserror::Error)]
pub enum CoordError {
    #[error("etcd settings: {0}; fix the [etcd] section of the config")]
    Config(String),
    #[error("cannot read {what} {path}: {source}; check etcd.{what}")]
    ReadFile {
        what: &'static str,
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("etcd {what} failed for {elapsed_ms} ms (last error: {source}); check that a quorum of etcd.endpoints is reachable")]
    Unavailable {
        what: String,
        elapsed_ms: u128,
        source: etcd_client::Error,
    },
    #[error("etcd {what} was refused: {source}; check etcd.username/password and the user's permissions on the prefix")]
    Refused {
        what: String,
        source: etcd_client::Error,
    },
    #[error("etcd {what} did not answer within {timeout_ms} ms; check that a quorum of etcd.endpoints is reachable")]
    Timeout { what: String, timeout_ms: u128 },
    #[error("etcd key {key} holds something that is not what binlog-bridge wrote: {message}")]
    Corrupt { key: String, message: String },
}

/// The keys of one pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    /// Election name: candidates create `<leader>/<lease id hex>` under it.
    pub leader: String,
    /// The checkpoint document.
    pub checkpoint: String,
    /// Prefix of member registrations, `<members>/<lease id hex>`.
    pub members: String,
    /// The last failure that made a leader step down (no lease: it outlives
    /// the process, so `status` can say why nobody leads).
    pub last_failure: String,
}

impl Keys {
    pub fn new(prefix: &str, pipeline: &str) -> Keys {
        let base = format!("{}/{}", prefix.trim_end_matches('/'), pipeline);
        Keys {
            leader: format!("{base}/leader"),
            checkpoint: format!("{base}/checkpoint"),
            members: format!("{base}/members/"),
            last_failure: format!("{base}/last-failure"),
        }
    }

    pub fn from_config(cfg: &EtcdConfig) -> Keys {
        Keys::new(&cfg.prefix, &cfg.pipeline)
    }
}

/// Who a process is: written as the election value, the member registration
/// and the checkpoint's `leader` field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub host: String,
    pub pid: u32,
    /// The process's HTTP address (metrics, health, status).
    pub http: String,
    /// Process start, milliseconds since the Unix epoch.
    pub started_at_ms: u64,
}

impl Identity {
    /// This process.
    pub fn current(http: &str) -> Identity {
        let host = std::env::var("HOSTNAME")
            .ok()
            .filter(|h| !h.is_empty())
            .or_else(|| {
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .ok()
                    .map(|h| h.trim().to_string())
            })
            .unwrap_or_else(|| "unknown-host".into());
        Identity {
            host,
            pid: std::process::id(),
            http: http.to_string(),
            started_at_ms: now_ms(),
        }
    }

    pub fn to_json(&self) -> String {
        // A struct of strings and integers always serializes.
        serde_json::to_string(self).unwrap_or_default()
    }
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} pid {} (http {})", self.host, self.pid, self.http)
    }
}

/// Wall clock, milliseconds since the Unix epoch (0 if the clock is before 1970).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Build the connect options from `[etcd]`: auth and TLS.
pub fn connect_options(cfg: &EtcdConfig) -> Result<ConnectOptions, CoordError> {
    // require_leader: a member cut off from the quorum answers at once with
    // "no leader" instead of letting a keep-alive or a Txn hang.
    let mut opts = ConnectOptions::new()
        .with_connect_timeout(Duration::from_millis(1000))
        .with_require_leader(true);
    let password = resolve_secret("etcd.password", &cfg.password, &cfg.password_file)
        .map_err(CoordError::Config)?;
    match (&cfg.username, password) {
        (Some(user), Some(pw)) => {
            opts = opts
                .with_user(user.clone(), pw.expose().to_string())
                .with_auto_token_refresh(true)
        }
        (Some(_), None) => {
            return Err(CoordError::Config(
                "etcd.username is set without etcd.password or etcd.password_file".into(),
            ))
        }
        (None, Some(_)) => {
            return Err(CoordError::Config(
                "etcd.password is set without etcd.username".into(),
            ))
        }
        (None, None) => {}
    }
    let tls_wanted = cfg.ca_file.is_some()
        || cfg.cert_file.is_some()
        || cfg.endpoints.iter().any(|e| e.starts_with("https://"));
    if tls_wanted {
        let mut tls = TlsOptions::new();
        if let Some(ca) = &cfg.ca_file {
            let pem = std::fs::read(ca).map_err(|source| CoordError::ReadFile {
                what: "ca_file",
                path: ca.clone(),
                source,
            })?;
            tls = tls.ca_certificate(Certificate::from_pem(pem));
        }
        match (&cfg.cert_file, &cfg.key_file) {
            (Some(cert), Some(key)) => {
                let cert_pem = std::fs::read(cert).map_err(|source| CoordError::ReadFile {
                    what: "cert_file",
                    path: cert.clone(),
                    source,
                })?;
                let key_pem = std::fs::read(key).map_err(|source| CoordError::ReadFile {
                    what: "key_file",
                    path: key.clone(),
                    source,
                })?;
                tls = tls.identity(TlsIdentity::from_pem(cert_pem, key_pem));
            }
            (None, None) => {}
            _ => {
                return Err(CoordError::Config(
                    "etcd.cert_file and etcd.key_file go together".into(),
                ))
            }
        }
        opts = opts.with_tls(tls);
    }
    Ok(opts)
}

/// The endpoint list as the client wants it: with TLS, bare `host:port`
/// entries become `https://` (etcd-client refuses `http://` with TLS options).
pub fn endpoint_urls(cfg: &EtcdConfig) -> Result<Vec<String>, CoordError> {
    let tls = cfg.ca_file.is_some()
        || cfg.cert_file.is_some()
        || cfg.endpoints.iter().any(|e| e.starts_with("https://"));
    let mut out = Vec::with_capacity(cfg.endpoints.len());
    for ep in &cfg.endpoints {
        if tls && ep.starts_with("http://") {
            return Err(CoordError::Config(format!(
                "endpoint {ep} is plain http:// but TLS is configured; use https:// or HOST:PORT"
            )));
        }
        if ep.contains("://") {
            out.push(ep.clone());
        } else if tls {
            out.push(format!("https://{ep}"));
        } else {
            out.push(format!("http://{ep}"));
        }
    }
    if out.is_empty() {
        return Err(CoordError::Config("etcd.endpoints is empty".into()));
    }
    Ok(out)
}

/// Connect to every configured endpoint (the client balances across them, so
/// one member's death changes nothing), retrying until `timeout`.
pub async fn connect(cfg: &EtcdConfig, timeout: Duration) -> Result<Client, CoordError> {
    let endpoints = endpoint_urls(cfg)?;
    let opts = connect_options(cfg)?;
    retry("connect", timeout, || {
        let endpoints = endpoints.clone();
        let opts = opts.clone();
        async move { Client::connect(endpoints, Some(opts)).await }
    })
    .await
}

/// Errors etcd (or the client) gives for a request that can never succeed
/// as sent: retrying them only hides the problem.
pub fn is_definite(e: &etcd_client::Error) -> bool {
    use etcd_client::Error as E;
    match e {
        E::GRpcStatus(s) => matches!(
            s.code(),
            tonic::Code::Unauthenticated
                | tonic::Code::PermissionDenied
                | tonic::Code::NotFound
                | tonic::Code::InvalidArgument
                | tonic::Code::Unimplemented
        ),
        E::InvalidArgs(_) | E::InvalidUri(_) => true,
        _ => false,
    }
}

/// Per-attempt bound: one dead endpoint must not eat the whole deadline.
const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(700);

/// Run `op` until it succeeds, fails definitely, or `timeout` has passed.
/// Each attempt is itself bounded, and attempts are spaced 25..200 ms.
pub async fn retry<T, F, Fut>(what: &str, timeout: Duration, mut op: F) -> Result<T, CoordError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, etcd_client::Error>>,
{
    let start = Instant::now();
    let deadline = start + timeout;
    let mut pause = Duration::from_millis(25);
    let mut last: Option<etcd_client::Error> = None;
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Err(match last {
                Some(source) => CoordError::Unavailable {
                    what: what.to_string(),
                    elapsed_ms: start.elapsed().as_millis(),
                    source,
                },
                None => CoordError::Timeout {
                    what: what.to_string(),
                    timeout_ms: timeout.as_millis(),
                },
            });
        }
        let bound = (deadline - now).min(ATTEMPT_TIMEOUT);
        match tokio::time::timeout(bound, op()).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) if is_definite(&e) => {
                return Err(CoordError::Refused {
                    what: what.to_string(),
                    source: e,
                })
            }
            Ok(Err(e)) => {
                tracing::debug!(what, error = %e, "etcd call failed; retrying");
                last = Some(e);
            }
            Err(_) => tracing::debug!(what, "etcd call timed out; retrying"),
        }
        let now = Instant::now();
        if now + pause >= deadline {
            tokio::time::sleep_until(deadline).await;
        } else {
            tokio::time::sleep(pause).await;
        }
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_documented_layout() {
        let k = Keys::new("/bb", "orders");
        assert_eq!(k.leader, "/bb/orders/leader");
        assert_eq!(k.checkpoint, "/bb/orders/checkpoint");
        assert_eq!(k.members, "/bb/orders/members/");
        assert_eq!(k.last_failure, "/bb/orders/last-failure");
    }

    #[test]
    fn endpoints_get_a_scheme_and_tls_refuses_plain_http() {
        let mut cfg = EtcdConfig {
            endpoints: vec!["127.0.0.1:2379".into(), "http://h:1".into()],
            ..EtcdConfig::default()
        };
        assert_eq!(
            endpoint_urls(&cfg).unwrap(),
            vec!["http://127.0.0.1:2379", "http://h:1"]
        );
        cfg.ca_file = Some("/nonexistent".into());
        assert!(matches!(endpoint_urls(&cfg), Err(CoordError::Config(_))));
        cfg.endpoints = vec!["127.0.0.1:2379".into()];
        assert_eq!(endpoint_urls(&cfg).unwrap(), vec!["https://127.0.0.1:2379"]);
    }

    #[test]
    fn missing_tls_files_are_named() {
        let cfg = EtcdConfig {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..EtcdConfig::default()
        };
        let e = connect_options(&cfg).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
    }
}
