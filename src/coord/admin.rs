//! The operator's view of the gate: `status`, `checkpoint show`,
//! `checkpoint set`. Each returns the process exit code documented in
//! `cli.rs` (0 ok, 1 runtime failure or refusal, 2 bad usage/config).

use std::process::ExitCode;
use std::time::Duration;

use serde_json::json;

use super::checkpoint::{Checkpoint, CheckpointError, CheckpointStore};
use super::election::current_leader;
use super::{connect, now_ms, Keys};
use crate::cli::{EXIT_CONFIG, EXIT_FAILURE};
use crate::config::{redact_url, EtcdConfig, MysqlConfig};
use crate::event::Position;

const TIMEOUT: Duration = Duration::from_secs(3);

fn fail(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(EXIT_FAILURE)
}

fn age(written_at_ms: u64) -> String {
    let ms = now_ms().saturating_sub(written_at_ms);
    format!("{:.1} s", ms as f64 / 1000.0)
}

/// `binlog-bridge status [--json]`.
pub async fn status(cfg: &EtcdConfig, as_json: bool) -> ExitCode {
    let keys = Keys::from_config(cfg);
    let client = match connect(cfg, TIMEOUT).await {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let store = CheckpointStore::new(client.clone(), keys.clone());
    let leader = match current_leader(&client, &keys, TIMEOUT).await {
        Ok(l) => l,
        Err(e) => return fail(e),
    };
    let checkpoint = match store.read(TIMEOUT).await {
        Ok(c) => c.map(|s| s.checkpoint),
        Err(e) => return fail(e),
    };
    let members = match store.members(TIMEOUT).await {
        Ok(m) => m,
        Err(e) => return fail(e),
    };
    let last_failure = match read_last_failure(&client, &keys).await {
        Ok(f) => f,
        Err(e) => return fail(e),
    };
    // On-demand snapshots: the running one (checkpoint), the queued
    // requests (etcd keys), and how the last one ended.
    let prefix = crate::snapshot::ondemand::requests_prefix(&cfg.prefix, &cfg.pipeline);
    let requests = match crate::snapshot::requests::list(&client, &prefix, TIMEOUT).await {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    let running = checkpoint.as_ref().and_then(|c| {
        crate::snapshot::ondemand::OnDemandState::from_extra(&c.extra)
            .ok()
            .flatten()
    });
    let last = checkpoint
        .as_ref()
        .and_then(|c| c.extra.get(crate::snapshot::ondemand::EXTRA_LAST))
        .cloned();
    let pending: Vec<serde_json::Value> = requests
        .iter()
        .filter(|f| {
            f.request
                .as_ref()
                .map_or(true, |r| running.as_ref().map_or(true, |s| s.id != r.id))
        })
        .map(|f| match &f.request {
            Ok(r) => json!({"id": r.id, "tables": r.tables, "requested_at_ms": r.requested_at_ms}),
            Err(e) => json!({"key": f.key, "error": e}),
        })
        .collect();
    if as_json {
        let doc = json!({
            "snapshot": {
                "running": running.as_ref().map(|s| json!({
                    "id": s.id,
                    "tables": s.tables,
                    "table": s.current(),
                    "rows": s.rows,
                })),
                "pending": pending,
                "last": last,
            },
            "pipeline": cfg.pipeline,
            "prefix": cfg.prefix,
            "leader": leader,
            "delivery": checkpoint.as_ref().and_then(|c| c.extra.get("delivery")),
            "checkpoint": checkpoint.as_ref().map(|c| json!({
                "position": c.position.to_string(),
                "gtid": c.position.gtid,
                "epoch": c.epoch,
                "leader": c.leader,
                "written_at_ms": c.written_at_ms,
                "age_ms": now_ms().saturating_sub(c.written_at_ms),
                "extra": c.extra,
            })),
            "members": members,
            "last_failure": last_failure,
        });
        println!("{doc}");
        return ExitCode::SUCCESS;
    }
    println!("pipeline    {} (prefix {})", cfg.pipeline, cfg.prefix);
    match &leader {
        Some(l) => match &l.identity {
            Some(i) => println!("leader      {i}, epoch {}", l.epoch),
            None => println!("leader      {} (unknown value), epoch {}", l.key, l.epoch),
        },
        None => println!("leader      none"),
    }
    match &checkpoint {
        Some(c) => println!(
            "checkpoint  {}{}, epoch {}, age {}",
            c.position,
            c.position
                .gtid
                .as_ref()
                .map(|g| format!(" gtid {g}"))
                .unwrap_or_default(),
            c.epoch,
            age(c.written_at_ms)
        ),
        None => println!("checkpoint  none"),
    }
    // Why a leader last stepped down: with every process backing off,
    // nobody leads and no member is registered; this line says why.
    if let Some(f) = &last_failure {
        let who = serde_json::from_value::<super::Identity>(f["identity"].clone())
            .map(|i| i.to_string())
            .unwrap_or_else(|_| "unknown process".into());
        println!(
            "stepped down {} ago, epoch {}, {who}: {}",
            age(f["at_ms"].as_u64().unwrap_or(0)),
            f["epoch"],
            f["error"].as_str().unwrap_or("(unreadable)")
        );
    }
    // The delivery mode the last leader used (`auto` resolved by its probe).
    if let Some(d) = checkpoint
        .as_ref()
        .and_then(|c| c.extra.get("delivery"))
        .and_then(|v| v.as_str())
    {
        println!("delivery    {d}");
    }
    if let Some(s) = &running {
        println!(
            "snapshot    running {}: {} rows done, table {} of {} ({})",
            s.id,
            s.rows,
            (s.table + 1).min(s.tables.len()),
            s.tables.len(),
            s.current().unwrap_or("-")
        );
    }
    for p in &pending {
        match (p.get("id"), p.get("error")) {
            (Some(id), _) => println!(
                "snapshot    pending {}: {}",
                id.as_str().unwrap_or_default(),
                p["tables"]
                    .as_array()
                    .map(|t| t
                        .iter()
                        .filter_map(|x| x.as_str())
                        .collect::<Vec<_>>()
                        .join(", "))
                    .unwrap_or_default()
            ),
            (_, Some(e)) => println!(
                "snapshot    unreadable request: {}",
                e.as_str().unwrap_or_default()
            ),
            _ => {}
        }
    }
    if let Some(l) = &last {
        println!(
            "snapshot    last {}: {}, {} rows",
            l["id"].as_str().unwrap_or_default(),
            l["outcome"].as_str().unwrap_or_default(),
            l["rows"]
        );
    }
    println!("members     {}", members.len());
    for m in &members {
        let lead = leader
            .as_ref()
            .and_then(|l| l.identity.as_ref())
            .is_some_and(|i| i == m);
        println!("  {m}{}", if lead { "  [leader]" } else { "" });
    }
    ExitCode::SUCCESS
}

/// The last failure a leader stepped down on (`Keys::last_failure`), with
/// its age; `None` if no leader of this pipeline ever failed.
async fn read_last_failure(
    client: &etcd_client::Client,
    keys: &Keys,
) -> Result<Option<serde_json::Value>, super::CoordError> {
    let key = keys.last_failure.clone();
    let resp = super::retry("read the last failure", TIMEOUT, || {
        let mut kv = client.kv_client();
        let key = key.clone();
        async move { kv.get(key, None).await }
    })
    .await?;
    Ok(resp.kvs().first().map(|kv| {
        let mut doc = match serde_json::from_slice::<serde_json::Value>(kv.value()) {
            Ok(v @ serde_json::Value::Object(_)) => v,
            _ => json!({ "error": String::from_utf8_lossy(kv.value()) }),
        };
        let at = doc["at_ms"].as_u64().unwrap_or(0);
        if let Some(o) = doc.as_object_mut() {
            o.insert("age_ms".into(), json!(now_ms().saturating_sub(at)));
        }
        doc
    }))
}

/// `binlog-bridge checkpoint show [--json]`. Exits 1 when there is none.
pub async fn checkpoint_show(cfg: &EtcdConfig, as_json: bool) -> ExitCode {
    let keys = Keys::from_config(cfg);
    let client = match connect(cfg, TIMEOUT).await {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let store = CheckpointStore::new(client, keys);
    let stored = match store.read(TIMEOUT).await {
        Ok(Some(s)) => s,
        Ok(None) => return fail(format!("no checkpoint at {} yet", store.key())),
        Err(e) => return fail(e),
    };
    let c = &stored.checkpoint;
    if as_json {
        match serde_json::to_string(c) {
            Ok(s) => println!("{s}"),
            Err(e) => return fail(e),
        }
        return ExitCode::SUCCESS;
    }
    println!("position    {}", c.position);
    if let Some(g) = &c.position.gtid {
        println!("gtid        {g}");
    }
    println!("epoch       {}", c.epoch);
    match &c.leader {
        Some(l) => println!("written by  {l}"),
        None => println!("written by  checkpoint set"),
    }
    println!("age         {}", age(c.written_at_ms));
    for (k, v) in &c.extra {
        println!("{k:<11} {v}");
    }
    ExitCode::SUCCESS
}

/// `binlog-bridge checkpoint set POSITION [--gtid G] [--force] [--unchecked]`.
///
/// With `server` (no `--unchecked`), the MySQL server is asked first whether
/// a dump can start at POSITION, as `binlog-bridge check` asks for
/// `mysql.start`: a purged file or an offset where no event starts is refused
/// here instead of failing every takeover afterwards.
pub async fn checkpoint_set(
    cfg: &EtcdConfig,
    server: Option<&MysqlConfig>,
    position: &str,
    gtid: Option<String>,
    force: bool,
) -> ExitCode {
    let mut pos: Position = match position.parse() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if let Some(g) = gtid {
        if g.trim().is_empty() {
            eprintln!("error: --gtid is empty; give a MySQL GTID set or a MariaDB GTID list (e.g. 0-1-100)");
            return ExitCode::from(EXIT_CONFIG);
        }
        if let Err(e) = crate::source::GtidState::parse(&g) {
            eprintln!("error: --gtid {g:?}: {e}; give a MySQL GTID set (uuid:1-5) or a MariaDB GTID list (0-1-100)");
            return ExitCode::from(EXIT_CONFIG);
        }
        pos.gtid = Some(g.trim().into());
    }
    if let Some(mysql) = server {
        match on_server(mysql, &pos).await {
            Ok(detail) => println!("checked: {detail}"),
            Err(code) => return code,
        }
    }
    let keys = Keys::from_config(cfg);
    let client = match connect(cfg, TIMEOUT).await {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let store = CheckpointStore::new(client, keys);
    let previous = match store.read(TIMEOUT).await {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    let doc = Checkpoint {
        position: pos.clone(),
        epoch: 0,
        leader: None,
        written_at_ms: now_ms(),
        extra: previous
            .as_ref()
            .map(|p| p.checkpoint.extra.clone())
            .unwrap_or_default(),
    };
    match store.set_by_hand(&doc, force, TIMEOUT).await {
        Ok(()) => {
            let before = previous
                .map(|p| p.checkpoint.position.to_string())
                .unwrap_or_else(|| "none".into());
            println!("checkpoint set to {pos} (was {before})");
            ExitCode::SUCCESS
        }
        Err(e @ CheckpointError::LeaderActive { .. }) => fail(e),
        Err(e) => fail(e),
    }
}

/// Can a dump start at `pos`? The server's answer (`binlog-bridge check`'s
/// `mysql start position`), or the exit code after saying why not.
async fn on_server(mysql: &MysqlConfig, pos: &Position) -> Result<String, ExitCode> {
    let target = redact_url(&mysql.url);
    let mut conn = match crate::source::connect(mysql, TIMEOUT).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!(
                "error: checkpoint not changed: cannot ask the MySQL server at {target} whether a dump can start at {pos}: {e}; \
                 start the server or fix mysql.url, or pass --unchecked to write the position without asking"
            );
            return Err(ExitCode::from(EXIT_FAILURE));
        }
    };
    let at = format!("{}:{}", pos.file, pos.offset);
    let r = crate::source::checks::start_position(&mut conn, &at).await;
    let _ = conn.disconnect().await;
    if r.ok {
        Ok(r.detail)
    } else {
        eprintln!(
            "error: checkpoint not changed: {} (--unchecked writes it without asking the server)",
            r.detail
        );
        Err(ExitCode::from(EXIT_CONFIG))
    }
}
