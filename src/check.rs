//! `binlog-bridge check`: one pass/fail line per thing the bridge needs.
//!
//! Each check says, when it fails, what is wrong and what to do about it.

use std::process::ExitCode;
use std::time::Duration;

use mysql_async::prelude::Queryable;

use crate::config::{redact_url, resolve_secret, Config};

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

impl CheckResult {
    fn pass(name: &str, detail: impl Into<String>) -> Self {
        CheckResult {
            name: name.into(),
            ok: true,
            detail: detail.into(),
        }
    }
    fn fail(name: &str, detail: impl Into<String>) -> Self {
        CheckResult {
            name: name.into(),
            ok: false,
            detail: detail.into(),
        }
    }
}

const TIMEOUT: Duration = Duration::from_secs(5);

/// Run every online check.
pub async fn run_all(config: &Config) -> Vec<CheckResult> {
    let mut out = Vec::new();
    out.extend(check_mysql(config).await);
    out.extend(check_etcd(config).await);
    out.push(check_kafka(config).await);
    out
}

/// Print results; exit 0 if all passed, 1 otherwise.
pub fn print_and_exit(results: Vec<CheckResult>) -> ExitCode {
    let mut failed = 0;
    for r in &results {
        println!(
            "{}  {}: {}",
            if r.ok { "pass" } else { "FAIL" },
            r.name,
            r.detail
        );
        if !r.ok {
            failed += 1;
        }
    }
    if failed == 0 {
        println!("all {} checks passed", results.len());
        ExitCode::SUCCESS
    } else {
        println!("{failed} of {} checks failed", results.len());
        ExitCode::from(crate::cli::EXIT_FAILURE)
    }
}

/// Connection options for the configured MySQL server.
pub fn mysql_opts(config: &Config) -> Result<mysql_async::Opts, String> {
    let url = &config.mysql.url;
    let opts = mysql_async::Opts::from_url(url)
        .map_err(|e| format!("mysql.url {:?}: {e}", redact_url(url)))?;
    let password = resolve_secret(
        "mysql.password",
        &config.mysql.password,
        &config.mysql.password_file,
    )?;
    let mut b = mysql_async::OptsBuilder::from_opts(opts);
    if let Some(p) = password {
        b = b.pass(Some(p.expose().to_string()));
    }
    Ok(b.into())
}

async fn check_mysql(config: &Config) -> Vec<CheckResult> {
    let name = "mysql connection";
    let target = redact_url(&config.mysql.url);
    let opts = match mysql_opts(config) {
        Ok(o) => o,
        Err(e) => return vec![CheckResult::fail(name, e)],
    };
    let conn = tokio::time::timeout(TIMEOUT, mysql_async::Conn::new(opts)).await;
    let mut conn = match conn {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            return vec![CheckResult::fail(
                name,
                format!("{target}: {e}; check mysql.url, the password and that the server is up"),
            )]
        }
        Err(_) => {
            return vec![CheckResult::fail(
                name,
                format!("{target}: no answer within {TIMEOUT:?}; check host, port and firewall"),
            )]
        }
    };
    let mut out = Vec::new();
    let version: Option<String> = conn.query_first("SELECT VERSION()").await.ok().flatten();
    out.push(CheckResult::pass(
        name,
        format!("{target} ({})", version.unwrap_or_default()),
    ));
    out.extend(crate::source::checks::all(&mut conn, &config.mysql).await);
    let _ = conn.disconnect().await;
    if config.snapshot.mode == crate::config::SnapshotMode::Initial {
        out.push(check_snapshot(config).await);
    }
    out
}

/// `snapshot.mode = "initial"`: the server can give a consistent snapshot
/// with its binlog position, and every table to read has a usable key.
async fn check_snapshot(config: &Config) -> CheckResult {
    use crate::snapshot::reader::SnapshotReader;
    let name = "initial snapshot";
    let mut reader = match SnapshotReader::open(&config.mysql).await {
        Ok(r) => r,
        Err(e) => return CheckResult::fail(name, e.to_string()),
    };
    let filter = crate::sink::TableFilter::new(&config.mysql.include, &config.mysql.exclude);
    let tables = match reader.tables(|d, t| filter.allows(d, t)).await {
        Ok(t) => t,
        Err(e) => return CheckResult::fail(name, e.to_string()),
    };
    let mut refused = Vec::new();
    for t in &tables {
        if let Err(e) = reader.table(t).await {
            refused.push(e.to_string());
        }
    }
    if refused.is_empty() {
        CheckResult::pass(
            name,
            format!(
                "consistent snapshot at {} without a lock; {} table(s) to read",
                reader.position,
                tables.len()
            ),
        )
    } else {
        CheckResult::fail(name, refused.join("; "))
    }
}

async fn check_etcd(config: &Config) -> Vec<CheckResult> {
    let mut out = Vec::new();
    for ep in &config.etcd.endpoints {
        let name = format!("etcd {ep}");
        let opts = etcd_client::ConnectOptions::new()
            .with_connect_timeout(TIMEOUT)
            .with_timeout(TIMEOUT);
        let r = async {
            let mut c = etcd_client::Client::connect([ep.as_str()], Some(opts)).await?;
            c.status().await
        };
        match tokio::time::timeout(TIMEOUT * 2, r).await {
            Ok(Ok(s)) => out.push(CheckResult::pass(
                &name,
                format!("etcd {} (raft term {})", s.version(), s.raft_term()),
            )),
            Ok(Err(e)) => out.push(CheckResult::fail(
                &name,
                format!("{e}; check etcd.endpoints and that the member is up"),
            )),
            Err(_) => out.push(CheckResult::fail(
                &name,
                "no answer; check etcd.endpoints and that the member is up",
            )),
        }
    }
    out
}

async fn check_kafka(config: &Config) -> CheckResult {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let name = "kafka";
    let mut cc = rdkafka::ClientConfig::new();
    cc.set("bootstrap.servers", &config.kafka.brokers);
    for (k, v) in &config.kafka.properties {
        cc.set(k, v);
    }
    let brokers = config.kafka.brokers.clone();
    let r = tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = cc.create().map_err(|e| e.to_string())?;
        let md = consumer
            .fetch_metadata(None, TIMEOUT)
            .map_err(|e| e.to_string())?;
        Ok::<_, String>((md.brokers().len(), md.topics().len()))
    })
    .await;
    match r {
        Ok(Ok((b, t))) => {
            CheckResult::pass(name, format!("{brokers}: {b} broker(s), {t} topic(s)"))
        }
        Ok(Err(e)) => CheckResult::fail(
            name,
            format!("{brokers}: {e}; check kafka.brokers and that the broker is up"),
        ),
        Err(e) => CheckResult::fail(name, format!("metadata task failed: {e}")),
    }
}
