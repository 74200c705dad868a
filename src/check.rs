//! `binlog-bridge check`: one pass/fail line per thing the bridge needs.
//!
//! Each check says, when it fails, what is wrong and what to do about it.

use std::process::ExitCode;
use std::time::Duration;

use mysql_async::prelude::Queryable;

use crate::config::{redact_url, Config};

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

async fn check_mysql(config: &Config) -> Vec<CheckResult> {
    let name = "mysql connection";
    let target = redact_url(&config.mysql.url);
    let mut conn = match crate::source::connect(&config.mysql, TIMEOUT).await {
        Ok(c) => c,
        Err(e) if e.is_transient() => {
            return vec![CheckResult::fail(
                name,
                format!("{target}: {e}; check host, port, firewall and that the server is up"),
            )]
        }
        Err(e) => return vec![CheckResult::fail(name, format!("{target}: {e}"))],
    };
    let mut out = Vec::new();
    let version: Option<String> = conn.query_first("SELECT VERSION()").await.ok().flatten();
    out.push(CheckResult::pass(
        name,
        format!("{target} ({})", version.unwrap_or_default()),
    ));
    out.extend(crate::source::checks::all(&mut conn, &config.mysql).await);
    let _ = conn.disconnect().await;
    if config.snapshot.mode.initial() {
        out.push(check_snapshot(config).await);
    }
    out
}

/// `snapshot.mode = "initial"` or `"when-needed"`: the server can give a consistent snapshot
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
        // The same TLS and credentials as `run` (etcd.ca_file, username, ...).
        let mut one = config.etcd.clone();
        one.endpoints = vec![ep.clone()];
        let (urls, opts) = match (
            crate::coord::endpoint_urls(&one),
            crate::coord::connect_options(&one),
        ) {
            (Ok(u), Ok(o)) => (u, o.with_connect_timeout(TIMEOUT).with_timeout(TIMEOUT)),
            (Err(e), _) | (_, Err(e)) => {
                out.push(CheckResult::fail(&name, e.to_string()));
                continue;
            }
        };
        let r = async {
            let mut c = etcd_client::Client::connect(urls, Some(opts)).await?;
            c.status().await
        };
        match tokio::time::timeout(TIMEOUT * 2, r).await {
            Ok(Ok(s)) => out.push(CheckResult::pass(
                &name,
                format!("etcd {} (raft term {})", s.version(), s.raft_term()),
            )),
            Ok(Err(e)) => out.push(CheckResult::fail(
                &name,
                format!("{e}; check etcd.endpoints, that the member is up, and etcd.username / password / ca_file / cert_file"),
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
    match config.kafka.client_properties() {
        Ok(props) => {
            for (k, v) in &props {
                cc.set(k, v);
            }
        }
        Err(e) => return CheckResult::fail(name, e),
    }
    let brokers = config.kafka.brokers.clone();
    let secured = config.kafka.security_protocol != crate::config::SecurityProtocol::Plaintext;
    let r = tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer<LastError> = cc
            .create_with_context(LastError::default())
            .map_err(|e| e.to_string())?;
        let md = consumer.fetch_metadata(None, TIMEOUT).map_err(|e| {
            // librdkafka's own reason (e.g. "SASL authentication error") is
            // clearer than the metadata call's "transport failure"; polling
            // serves the error events queued meanwhile.
            let _ = consumer.poll(Duration::from_millis(100));
            match consumer.context().get() {
                Some(reason) => format!("{e} ({reason})"),
                None => e.to_string(),
            }
        })?;
        Ok::<_, String>((md.brokers().len(), md.topics().len()))
    })
    .await;
    match r {
        Ok(Ok((b, t))) => {
            CheckResult::pass(name, format!("{brokers}: {b} broker(s), {t} topic(s)"))
        }
        Ok(Err(e)) if secured => CheckResult::fail(
            name,
            format!("{brokers}: {e}; check kafka.brokers, kafka.security_protocol, kafka.sasl_mechanism, kafka.sasl_username, the SASL password (kafka.sasl_password_file) and kafka.ssl_ca_file"),
        ),
        Ok(Err(e)) => CheckResult::fail(
            name,
            format!("{brokers}: {e}; check kafka.brokers and that the broker is up"),
        ),
        Err(e) => CheckResult::fail(name, format!("metadata task failed: {e}")),
    }
}

/// Keeps the last error librdkafka reported (its reason text names SASL and
/// TLS failures; it never contains the password).
#[derive(Default)]
struct LastError(std::sync::Mutex<Option<String>>);

impl LastError {
    fn get(&self) -> Option<String> {
        self.0.lock().ok().and_then(|g| g.clone())
    }
}

impl rdkafka::ClientContext for LastError {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        if let Ok(mut g) = self.0.lock() {
            *g = Some(if reason.is_empty() {
                error.to_string()
            } else {
                reason.to_string()
            });
        }
    }
}

impl rdkafka::consumer::ConsumerContext for LastError {}
