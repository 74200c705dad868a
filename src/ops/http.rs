//! A small HTTP/1.1 server for `/metrics`, `/healthz`, `/readyz` and `/status`.
//!
//! Four read-only GET endpoints do not need a web framework: each connection
//! sends one request, gets one response and is closed. Requests are bounded
//! (8 KiB head, 5 s to send it) so a slow or hostile client cannot hold memory.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::{unix_now, OpsState};

#[derive(Debug, thiserror::Error)]
#[error(
    "cannot listen on {addr} (http.listen): {source}; pick a free address or stop what uses it"
)]
pub struct BindError {
    pub addr: String,
    pub source: std::io::Error,
}

/// Bind `addr`; serve until `cancel` fires. Returns the bound address.
pub async fn serve(
    addr: &str,
    state: Arc<OpsState>,
    cancel: CancellationToken,
) -> Result<SocketAddr, BindError> {
    let listener = TcpListener::bind(addr).await.map_err(|source| BindError {
        addr: addr.to_string(),
        source,
    })?;
    let local = listener.local_addr().map_err(|source| BindError {
        addr: addr.to_string(),
        source,
    })?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        let state = state.clone();
                        tokio::spawn(async move {
                            let _ = handle(stream, &state).await;
                        });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "http accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
        }
    });
    Ok(local)
}

async fn read_head(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        if buf.len() > 8192 {
            break;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(buf)
}

async fn handle(mut stream: TcpStream, state: &OpsState) -> std::io::Result<()> {
    let head = match tokio::time::timeout(Duration::from_secs(5), read_head(&mut stream)).await {
        Ok(r) => r?,
        Err(_) => return Ok(()),
    };
    let head = String::from_utf8_lossy(&head);
    let mut parts = head.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let (code, ctype, body) = if method != "GET" {
        (405, "text/plain", "only GET is supported\n".to_string())
    } else {
        route(path, state)
    };
    let reason = match code {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Service Unavailable",
    };
    let resp = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(resp.as_bytes()).await?;
    stream.shutdown().await
}

fn route(path: &str, state: &OpsState) -> (u16, &'static str, String) {
    match path {
        "/healthz" => (200, "text/plain", "ok\n".into()),
        "/readyz" => match state.readiness() {
            Ok(()) => (200, "text/plain", "ready\n".into()),
            Err(reason) => (503, "text/plain", format!("not ready: {reason}\n")),
        },
        "/metrics" => (
            200,
            "text/plain; version=0.0.4",
            state.metrics.render(unix_now()),
        ),
        "/status" => match state.status() {
            Some(s) => (
                200,
                "application/json",
                serde_json::to_string_pretty(&s).unwrap_or_default() + "\n",
            ),
            None => (503, "text/plain", "status unavailable\n".into()),
        },
        _ => (
            404,
            "text/plain",
            "not found; try /metrics, /healthz, /readyz or /status\n".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::Role;

    async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        let code = out[9..12].parse().unwrap();
        let body = out.split_once("\r\n\r\n").unwrap().1.to_string();
        (code, body)
    }

    #[tokio::test]
    async fn endpoints_answer_and_readyz_follows_the_role() {
        let state = OpsState::new(serde_json::json!({"host": "h", "pid": 1}));
        let cancel = CancellationToken::new();
        let addr = serve("127.0.0.1:0", state.clone(), cancel.clone())
            .await
            .unwrap();

        assert_eq!(get(addr, "/healthz").await, (200, "ok\n".into()));
        let (code, body) = get(addr, "/readyz").await;
        assert_eq!((code, body.as_str()), (503, "not ready: starting\n"));

        state.update(|s| {
            s.role = Role::Standby;
            s.etcd_connected = true;
            s.reason = None;
        });
        assert_eq!(get(addr, "/readyz").await.0, 200);

        state.update(|s| {
            s.role = Role::Leader;
            s.streaming = false;
            s.reason = Some("connecting to MySQL".into());
        });
        assert_eq!(
            get(addr, "/readyz").await,
            (503, "not ready: connecting to MySQL\n".into())
        );

        state.metrics.role_leader.set(1.0);
        let (code, body) = get(addr, "/metrics").await;
        assert_eq!(code, 200);
        assert!(body.contains("binlog_bridge_role_leader 1\n"), "{body}");

        let (code, body) = get(addr, "/status").await;
        assert_eq!(code, 200);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["role"], "leader");
        assert_eq!(v["identity"]["host"], "h");

        assert_eq!(get(addr, "/nope").await.0, 404);
        cancel.cancel();
    }

    #[tokio::test]
    async fn busy_address_is_a_clear_error() {
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = held.local_addr().unwrap().to_string();
        let state = OpsState::new(serde_json::Value::Null);
        let e = serve(&addr, state, CancellationToken::new())
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains(&addr) && e.contains("http.listen"), "{e}");
    }
}
