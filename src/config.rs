//! Configuration: one TOML file, every key overridable from the environment.
//!
//! The file is read into a TOML table, environment overrides
//! (`BINLOG_BRIDGE_<SECTION>_<KEY>`) are laid over it, and the result is
//! deserialized into [`Config`] with unknown keys refused by name. Then
//! [`Config::validate`] — a pure function — checks every value and turns each
//! mistake into a message naming the key, the bad value and what is allowed.
//!
//! Secrets (passwords) may be given inline, from the environment, or as
//! `*_file` paths; they are wrapped in [`Secret`] so that no `Debug` print,
//! log line or error shows them.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

mod security;
pub use security::{MysqlTls, SaslMechanism, SecurityProtocol};

/// Prefix of environment overrides.
pub const ENV_PREFIX: &str = "BINLOG_BRIDGE_";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}; pass --config PATH or create it (see binlog-bridge.example.toml)")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    #[error("config {origin}: {message}")]
    Schema { origin: String, message: String },
    #[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
    Invalid(Vec<String>),
}

/// A string that never prints.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        // A mistyped secret (a bare number, a table) is refused without
        // echoing the value, as serde's own type errors would.
        fn refuse<E: serde::de::Error>() -> E {
            E::custom("a secret must be a quoted string (the value is not shown)")
        }
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Secret;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a quoted string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Secret, E> {
                Ok(Secret(v.to_string()))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Secret, E> {
                Ok(Secret(v))
            }
            fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Secret, E> {
                Err(refuse())
            }
            fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Secret, E> {
                Err(refuse())
            }
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Secret, E> {
                Err(refuse())
            }
            fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Secret, E> {
                Err(refuse())
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, _: A) -> Result<Secret, A::Error> {
                Err(refuse())
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, _: A) -> Result<Secret, A::Error> {
                Err(refuse())
            }
        }
        d.deserialize_any(V)
    }
}

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("***")
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub mysql: MysqlConfig,
    #[serde(default)]
    pub etcd: EtcdConfig,
    #[serde(default)]
    pub kafka: KafkaConfig,
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub snapshot: SnapshotConfig,
}

/// `[mysql]`: the source server and how to read its binlog.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MysqlConfig {
    /// `mysql://user[:password]@host:port`. The user needs
    /// `SELECT, REPLICATION SLAVE, BINLOG MONITOR` (MySQL: `REPLICATION CLIENT`).
    pub url: String,
    /// Password, if not in the URL. Prefer `password_file` or the env var.
    #[serde(default)]
    pub password: Option<Secret>,
    /// File whose first line is the password.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Replica server id, unique among all replicas of the source (1..=4294967295).
    pub server_id: u32,
    /// Where to start when no checkpoint exists: `earliest`, `latest`,
    /// `FILE:OFFSET`, or `gtid:<GTID set or MariaDB GTID list>`.
    #[serde(default = "default_start")]
    pub start: String,
    /// Heartbeat period the server is asked for, seconds.
    #[serde(default = "default_heartbeat")]
    pub heartbeat_secs: u64,
    /// A connection silent for this long (no event, no heartbeat) is dead, seconds.
    #[serde(default = "default_read_timeout")]
    pub read_timeout_secs: u64,
    /// Tables to stream, `db.table` names or `*` patterns; empty means all.
    #[serde(default)]
    pub include: Vec<String>,
    /// Tables never streamed, `db.table` names or `*` patterns.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Columns left out of every message, `db.table.column` (`*` patterns
    /// allowed in each part, as in `include`). Key columns cannot be excluded.
    #[serde(default)]
    pub exclude_columns: Vec<String>,
    /// Encryption of every MySQL connection (MySQL's `--ssl-mode`):
    /// `disabled` (default), `preferred`, `required`, `verify-ca`, `verify-identity`.
    #[serde(default)]
    pub tls: MysqlTls,
    /// CA certificate (PEM) that signed the server's certificate; only this CA
    /// is trusted. For `verify-ca` and `verify-identity`.
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
    /// Client certificate and key (PEM), for servers that require one (`REQUIRE X509`).
    #[serde(default)]
    pub tls_cert_file: Option<PathBuf>,
    #[serde(default)]
    pub tls_key_file: Option<PathBuf>,
    /// What reads the binlog dump off the connection: `auto` (default: our
    /// own reader on a plain-TCP connection, mysql_async's otherwise) or
    /// `driver` (always mysql_async's; slower, for a server our reader
    /// does not get along with).
    #[serde(default)]
    pub dump_reader: DumpReader,
}

/// `mysql.dump_reader`: see [`MysqlConfig::dump_reader`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DumpReader {
    /// Our own reader where the connection allows it, else mysql_async's.
    #[default]
    Auto,
    /// mysql_async's stream.
    Driver,
}

fn default_start() -> String {
    "earliest".into()
}
fn default_heartbeat() -> u64 {
    1
}
fn default_read_timeout() -> u64 {
    10
}

/// `[etcd]`: the leader gate and checkpoint store.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdConfig {
    /// Every member's client endpoint, `host:port` or `http(s)://host:port`.
    #[serde(default = "default_endpoints")]
    pub endpoints: Vec<String>,
    /// Key prefix under which all pipelines live.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// Pipeline name: the bridges sharing it form one primary + standbys group.
    #[serde(default = "default_pipeline")]
    pub pipeline: String,
    /// Lease TTL in seconds (1 or more). A dead leader is replaced after about this long.
    #[serde(default = "default_ttl")]
    pub lease_ttl_secs: i64,
    /// Minimum interval between checkpoint writes, milliseconds.
    #[serde(default = "default_checkpoint_interval")]
    pub checkpoint_interval_ms: u64,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<Secret>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// CA certificate (PEM) for TLS endpoints.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key (PEM) for mutual TLS.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Kill this process when it is frozen (stopped beating) while leading
    /// with idempotent delivery, just before its lease can expire; see
    /// `src/coord/watchdog.rs`.
    #[serde(default = "default_true")]
    pub watchdog: bool,
}

fn default_true() -> bool {
    true
}

fn default_endpoints() -> Vec<String> {
    vec![
        "127.0.0.1:2379".into(),
        "127.0.0.1:3379".into(),
        "127.0.0.1:4379".into(),
    ]
}
fn default_prefix() -> String {
    "/binlog-bridge".into()
}
fn default_pipeline() -> String {
    "default".into()
}
fn default_ttl() -> i64 {
    2
}
fn default_checkpoint_interval() -> u64 {
    1000
}

impl Default for EtcdConfig {
    fn default() -> Self {
        EtcdConfig {
            endpoints: default_endpoints(),
            prefix: default_prefix(),
            pipeline: default_pipeline(),
            lease_ttl_secs: default_ttl(),
            checkpoint_interval_ms: default_checkpoint_interval(),
            username: None,
            password: None,
            password_file: None,
            ca_file: None,
            cert_file: None,
            key_file: None,
            watchdog: true,
        }
    }
}

/// Output message format, each readable by the Flink SQL format of the same name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// Flink `debezium-json`.
    Debezium,
    /// Flink `canal-json`.
    Canal,
    /// Flink `maxwell-json`.
    Maxwell,
}

/// How delivery is made exactly-once across failover.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Delivery {
    /// Probe the broker: transactions available -> transactional, else idempotent.
    Auto,
    /// Kafka transactions; consumers read with isolation.level=read_committed.
    Transactional,
    /// Idempotent producer + lease-gated sends + reconciliation on takeover.
    Idempotent,
    /// Idempotent producer, no reconciliation: a failover may repeat rows.
    AtLeastOnce,
}

/// `[kafka]`: where and how messages are produced.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap brokers, comma-separated `host:port`.
    #[serde(default = "default_brokers")]
    pub brokers: String,
    /// Topic template: `{db}`, `{table}` and `{pipeline}` are replaced.
    #[serde(default = "default_topic")]
    pub topic: String,
    /// Topic for schema changes (DDL).
    #[serde(default = "default_schema_topic")]
    pub schema_topic: String,
    #[serde(default = "default_format")]
    pub format: Format,
    #[serde(default = "default_delivery")]
    pub delivery: Delivery,
    /// Partitions of topics the bridge creates.
    #[serde(default = "default_partitions")]
    pub partitions: i32,
    /// Replication factor of topics the bridge creates.
    #[serde(default = "default_replication")]
    pub replication_factor: i32,
    /// Key columns per table (`"db.table" = ["col", ...]`), overriding the primary key.
    #[serde(default)]
    pub key_columns: BTreeMap<String, Vec<String>>,
    /// Extra librdkafka properties, passed through as given (e.g. `"security.protocol" = "SASL_SSL"`).
    /// They are applied last: `"compression.type"`, `"linger.ms"` or `"batch.size"`
    /// here override `compression`, `linger_ms` and `batch_bytes`.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// Compression of produced batches: `none`, `gzip`, `snappy`, `lz4` (default) or `zstd`.
    #[serde(default = "default_compression")]
    pub compression: Compression,
    /// How long the producer waits to fill a batch, milliseconds (librdkafka `linger.ms`).
    #[serde(default = "default_linger_ms")]
    pub linger_ms: u32,
    /// Largest batch per partition, bytes (librdkafka `batch.size`).
    #[serde(default = "default_batch_bytes")]
    pub batch_bytes: u32,
    /// Messages handed to the producer but not yet acknowledged, at most. When
    /// the window is full the sink waits for acknowledgements, so the source slows down.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: u32,
    /// Key + value bytes of the messages in that window, at most (a single
    /// larger message still goes alone). Bounds memory when nothing else
    /// does (at-least-once delivery has no delivery-timeout bound).
    #[serde(default = "default_max_in_flight_bytes")]
    pub max_in_flight_bytes: u64,
    /// Message key for tables with neither a primary key nor a `key_columns`
    /// entry: `table` (the table name: all its rows in one partition, in
    /// order) or `none` (no key: spread over partitions, no order).
    #[serde(default)]
    pub keyless: Keyless,
    /// Create missing topics with `partitions` and `replication_factor`. If
    /// false, a missing topic stops the bridge with an error naming it.
    #[serde(default = "default_create_topics")]
    pub create_topics: bool,
    /// `format = "debezium"` only: wrap each message as `{"schema":..,"payload":..}`
    /// (Flink `'debezium-json.schema-include' = 'true'`).
    #[serde(default)]
    pub debezium_schema: bool,
    /// `plaintext` (default), `ssl`, `sasl_plaintext` or `sasl_ssl`.
    #[serde(default)]
    pub security_protocol: SecurityProtocol,
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512` (with a `sasl_*` protocol).
    #[serde(default)]
    pub sasl_mechanism: Option<SaslMechanism>,
    #[serde(default)]
    pub sasl_username: Option<String>,
    /// SASL password; prefer `sasl_password_file` or `BINLOG_BRIDGE_KAFKA_SASL_PASSWORD`.
    #[serde(default)]
    pub sasl_password: Option<Secret>,
    /// File whose first line is the SASL password.
    #[serde(default)]
    pub sasl_password_file: Option<PathBuf>,
    /// CA certificate (PEM) of the brokers, with `ssl` / `sasl_ssl`.
    #[serde(default)]
    pub ssl_ca_file: Option<PathBuf>,
    /// Client certificate and key (PEM) for brokers that require one.
    #[serde(default)]
    pub ssl_cert_file: Option<PathBuf>,
    #[serde(default)]
    pub ssl_key_file: Option<PathBuf>,
    /// `delivery = "transactional"`: the producer's `transactional.id`, the
    /// same in every copy of the pipeline (a new leader's producer fences the
    /// old one by it). Default `binlog-bridge.{pipeline}`.
    #[serde(default)]
    pub transactional_id: Option<String>,
    /// `delivery = "transactional"`: compacted topic (1 partition) holding
    /// the position after each committed batch. `{pipeline}` is replaced.
    #[serde(default = "default_progress_topic")]
    pub progress_topic: String,
    /// `delivery = "transactional"`: a batch (one Kafka transaction) is
    /// committed after this many messages ...
    #[serde(default = "default_transaction_max_messages")]
    pub transaction_max_messages: u64,
    /// ... or this many bytes of message values ...
    #[serde(default = "default_transaction_max_bytes")]
    pub transaction_max_bytes: u64,
    /// ... or this many milliseconds after it began, whichever comes first.
    #[serde(default = "default_transaction_max_ms")]
    pub transaction_max_ms: u64,
}

impl KafkaConfig {
    /// The `transactional.id` of `pipeline`'s producer.
    pub fn transactional_id_for(&self, pipeline: &str) -> String {
        self.transactional_id
            .clone()
            .unwrap_or_else(|| format!("binlog-bridge.{pipeline}"))
    }
}

fn default_progress_topic() -> String {
    "{pipeline}.progress".into()
}
fn default_transaction_max_messages() -> u64 {
    10_000
}
fn default_transaction_max_bytes() -> u64 {
    8_000_000
}
fn default_transaction_max_ms() -> u64 {
    200
}

/// Compression codec of produced batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    /// The librdkafka `compression.type` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

/// Message key of tables without a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Keyless {
    /// Key by `db.table`: one partition per table, order kept.
    #[default]
    Table,
    /// No key: rows spread over partitions, no order between them.
    None,
}

fn default_compression() -> Compression {
    Compression::Lz4
}
fn default_linger_ms() -> u32 {
    5
}
fn default_batch_bytes() -> u32 {
    1_000_000
}
fn default_max_in_flight() -> u32 {
    100_000
}
fn default_max_in_flight_bytes() -> u64 {
    16 * 1024 * 1024
}
fn default_create_topics() -> bool {
    true
}

fn default_brokers() -> String {
    "127.0.0.1:9092".into()
}
fn default_topic() -> String {
    "{db}.{table}".into()
}
fn default_schema_topic() -> String {
    "{pipeline}.schema-changes".into()
}
fn default_format() -> Format {
    Format::Debezium
}
fn default_delivery() -> Delivery {
    Delivery::Auto
}
fn default_partitions() -> i32 {
    3
}
fn default_replication() -> i32 {
    1
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: default_brokers(),
            topic: default_topic(),
            schema_topic: default_schema_topic(),
            format: default_format(),
            delivery: default_delivery(),
            partitions: default_partitions(),
            replication_factor: default_replication(),
            key_columns: BTreeMap::new(),
            properties: BTreeMap::new(),
            compression: default_compression(),
            linger_ms: default_linger_ms(),
            batch_bytes: default_batch_bytes(),
            max_in_flight: default_max_in_flight(),
            max_in_flight_bytes: default_max_in_flight_bytes(),
            keyless: Keyless::default(),
            create_topics: default_create_topics(),
            debezium_schema: false,
            security_protocol: SecurityProtocol::default(),
            sasl_mechanism: None,
            sasl_username: None,
            sasl_password: None,
            sasl_password_file: None,
            ssl_ca_file: None,
            ssl_cert_file: None,
            ssl_key_file: None,
            transactional_id: None,
            progress_topic: default_progress_topic(),
            transaction_max_messages: default_transaction_max_messages(),
            transaction_max_bytes: default_transaction_max_bytes(),
            transaction_max_ms: default_transaction_max_ms(),
        }
    }
}

/// `[snapshot]`: loading the rows tables already hold before streaming.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotConfig {
    /// `never` (default): stream from `mysql.start`, load nothing.
    /// `initial`: when the pipeline has no checkpoint yet, read every table
    /// `mysql.include/exclude` allows (as `op: r` / `INSERT` / `insert`
    /// messages) at one consistent point, then stream from that point.
    /// `when-needed`: like `initial`, and also take a new snapshot of every
    /// table when the checkpointed position has been purged from the server,
    /// if `allow_resnapshot_on_purge` confirms it.
    #[serde(default)]
    pub mode: SnapshotMode,
    /// With `mode = "when-needed"`: `true` confirms that a purged checkpoint
    /// position is answered by a new snapshot of every table (consumers see
    /// every row again as a snapshot read). `false` (default): a purged
    /// position stays a definite error.
    #[serde(default)]
    pub allow_resnapshot_on_purge: bool,
    /// Rows read per query (primary-key chunk); a checkpoint is written at
    /// most once per `etcd.checkpoint_interval_ms` after a chunk is acknowledged.
    /// Also the chunk of on-demand snapshots (`binlog-bridge snapshot`), each
    /// one consistent read, checkpointed before and after it is sent.
    #[serde(default = "default_chunk_rows")]
    pub chunk_rows: u32,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SnapshotMode {
    #[default]
    Never,
    Initial,
    WhenNeeded,
}

impl SnapshotMode {
    /// Whether a pipeline without a checkpoint snapshots first.
    pub fn initial(self) -> bool {
        matches!(self, SnapshotMode::Initial | SnapshotMode::WhenNeeded)
    }

    /// The name as written in the config.
    pub fn name(self) -> &'static str {
        match self {
            SnapshotMode::Never => "never",
            SnapshotMode::Initial => "initial",
            SnapshotMode::WhenNeeded => "when-needed",
        }
    }
}

fn default_chunk_rows() -> u32 {
    1024
}

impl Default for SnapshotConfig {
    fn default() -> Self {
        SnapshotConfig {
            mode: SnapshotMode::Never,
            allow_resnapshot_on_purge: false,
            chunk_rows: default_chunk_rows(),
        }
    }
}

/// `[http]`: metrics and health endpoints.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Listen address of /metrics, /healthz, /readyz, /status.
    #[serde(default = "default_listen")]
    pub listen: String,
}

fn default_listen() -> String {
    "127.0.0.1:9187".into()
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: default_listen(),
        }
    }
}

/// Variables with the prefix that are not config overrides.
const NOT_OVERRIDES: [&str; 1] = ["BINLOG_BRIDGE_CONFIG"];

/// Sections whose keys may be overridden from the environment.
const SECTIONS: [&str; 5] = ["mysql", "etcd", "kafka", "http", "snapshot"];

impl Config {
    /// Read `path`, apply overrides from the process environment, deserialize.
    /// Does not validate: call [`Config::validate`].
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml_with_env(&text, path, std::env::vars())
    }

    /// Parse TOML text, lay `env` overrides over it, deserialize.
    pub fn from_toml_with_env(
        text: &str,
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut table: toml::Table =
            text.parse()
                .map_err(|e: toml::de::Error| ConfigError::Parse {
                    path: path.to_path_buf(),
                    message: hide_secret_lines(e.to_string().trim_end()),
                })?;
        let mut vars: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX) && !NOT_OVERRIDES.contains(&k.as_str()))
            .collect();
        vars.sort();
        let mut origin = format!("file {}", path.display());
        for (var, value) in &vars {
            apply_env(&mut table, var, value)?;
        }
        if !vars.is_empty() {
            let names: Vec<&str> = vars.iter().map(|(k, _)| k.as_str()).collect();
            origin.push_str(&format!(" with environment {}", names.join(", ")));
        }
        let de = toml::Value::Table(table);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner().to_string();
            let message = if path == "." || path.is_empty() {
                inner.trim_end().to_string()
            } else {
                format!("key `{path}`: {}", inner.trim_end())
            };
            ConfigError::Schema { origin, message }
        })
    }

    /// Check every value; return all mistakes at once.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut errs = Vec::new();
        validate_mysql(&self.mysql, &mut errs);
        validate_etcd(&self.etcd, &mut errs);
        validate_kafka(&self.kafka, &mut errs);
        if !(1..=1_000_000).contains(&self.snapshot.chunk_rows) {
            errs.push(format!(
                "snapshot.chunk_rows = {} is out of range; use 1..=1000000 (default 1024)",
                self.snapshot.chunk_rows
            ));
        }
        if self.snapshot.allow_resnapshot_on_purge && self.snapshot.mode != SnapshotMode::WhenNeeded
        {
            errs.push(format!(
                "snapshot.allow_resnapshot_on_purge = true only applies with snapshot.mode = \"when-needed\" (it is \"{}\"); set the mode or remove the key",
                self.snapshot.mode.name()
            ));
        }
        let columns = crate::source::ColumnFilter::new(&self.mysql.exclude_columns);
        for (table, cols) in &self.kafka.key_columns {
            let Some((db, t)) = table.split_once('.') else {
                continue;
            };
            for c in cols {
                if let Some(p) = columns.excludes(db, t, c) {
                    errs.push(format!(
                        "mysql.exclude_columns entry {p:?} excludes `{c}`, a kafka.key_columns column of {table}; the message key needs it: narrow the entry or change the key"
                    ));
                }
            }
        }
        if self.http.listen.parse::<SocketAddr>().is_err() {
            errs.push(format!(
                "http.listen = {:?} is not an address; use IP:PORT, e.g. \"127.0.0.1:9187\"",
                self.http.listen
            ));
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(errs))
        }
    }
}

/// A TOML parse error quotes the offending line: if it is a password line,
/// show the key only.
fn hide_secret_lines(message: &str) -> String {
    message
        .lines()
        .map(|l| {
            let quoted = l.split_once(" | ").is_some_and(|(n, _)| {
                n.trim().chars().all(|c| c.is_ascii_digit()) && !n.trim().is_empty()
            });
            if quoted && l.to_ascii_lowercase().contains("password") {
                match l.split_once('=') {
                    Some((k, _)) => format!("{k}= *** (hidden)"),
                    None => format!(
                        "{} | *** (hidden)",
                        l.split_once(" | ").map(|p| p.0).unwrap_or("")
                    ),
                }
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Lay one `BINLOG_BRIDGE_<SECTION>_<KEY>` variable over the table.
///
/// `<KEY>` is the key in upper case (`SERVER_ID` -> `server_id`). Values parse
/// as TOML when they can (numbers, booleans, `["a","b"]` arrays) and are taken
/// as strings otherwise. Map entries use a double underscore:
/// `BINLOG_BRIDGE_KAFKA_PROPERTIES__COMPRESSION_TYPE=zstd` sets
/// `kafka.properties."compression.type"` (underscores become dots).
fn apply_env(table: &mut toml::Table, var: &str, value: &str) -> Result<(), ConfigError> {
    let rest = &var[ENV_PREFIX.len()..];
    let env_err = |message: String| ConfigError::Env {
        var: var.to_string(),
        message,
    };
    let (section, key) = rest
        .split_once('_')
        .map(|(s, k)| (s.to_ascii_lowercase(), k))
        .ok_or_else(|| env_err("expected BINLOG_BRIDGE_<SECTION>_<KEY>".into()))?;
    if !SECTIONS.contains(&section.as_str()) {
        return Err(env_err(format!(
            "unknown section `{section}`; sections are {}",
            SECTIONS.join(", ")
        )));
    }
    if key.is_empty() {
        return Err(env_err("missing key after the section".into()));
    }
    let sect = table
        .entry(section.clone())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    let sect = sect
        .as_table_mut()
        .ok_or_else(|| env_err(format!("`{section}` in the file is not a table")))?;
    let parsed = parse_env_value(value);
    match key.split_once("__") {
        Some((map, entry)) => {
            let map = map.to_ascii_lowercase();
            let entry = entry.to_ascii_lowercase().replace('_', ".");
            let m = sect
                .entry(map.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            let m = m
                .as_table_mut()
                .ok_or_else(|| env_err(format!("`{section}.{map}` is not a table")))?;
            m.insert(entry, toml::Value::String(value.to_string()));
        }
        None => {
            let key = key.to_ascii_lowercase();
            // A secret is always a string: a password like `12345` must
            // neither become a number nor be echoed by a type error.
            let value = if key.ends_with("password") {
                toml::Value::String(value.to_string())
            } else {
                parsed
            };
            sect.insert(key, value);
        }
    }
    Ok(())
}

fn parse_env_value(value: &str) -> toml::Value {
    let doc = format!("v = {value}");
    match doc.parse::<toml::Table>() {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(value.to_string())),
        Err(_) => toml::Value::String(value.to_string()),
    }
}

fn validate_mysql(m: &MysqlConfig, errs: &mut Vec<String>) {
    match url::Url::parse(&m.url) {
        Ok(u) if u.scheme() != "mysql" => errs.push(format!(
            "mysql.url = {:?}: scheme `{}` is not supported; use mysql://USER@HOST:PORT",
            redact_url(&m.url),
            u.scheme()
        )),
        Ok(u) if u.host_str().unwrap_or("").is_empty() => errs.push(format!(
            "mysql.url = {:?} has no host; use mysql://USER@HOST:PORT",
            redact_url(&m.url)
        )),
        Ok(u) if u.username().is_empty() => errs.push(format!(
            "mysql.url = {:?} has no user; use mysql://USER@HOST:PORT",
            redact_url(&m.url)
        )),
        Ok(_) => {}
        Err(e) => errs.push(format!(
            "mysql.url = {:?} is not a URL ({e}); use mysql://USER@HOST:PORT",
            redact_url(&m.url)
        )),
    }
    if m.server_id == 0 {
        errs.push(
            "mysql.server_id = 0 is not allowed; use a number from 1 to 4294967295 that no other replica of the source uses"
                .into(),
        );
    }
    if m.password.is_some() && m.password_file.is_some() {
        errs.push("mysql.password and mysql.password_file are both set; keep one".into());
    }
    if let Err(e) = crate::config::StartPosition::parse(&m.start) {
        errs.push(format!("mysql.start = {:?}: {e}", m.start));
    }
    if m.heartbeat_secs == 0 || m.heartbeat_secs > 3600 {
        errs.push(format!(
            "mysql.heartbeat_secs = {} is out of range; use 1 to 3600",
            m.heartbeat_secs
        ));
    }
    if m.read_timeout_secs <= m.heartbeat_secs {
        errs.push(format!(
            "mysql.read_timeout_secs = {} must be greater than mysql.heartbeat_secs = {}",
            m.read_timeout_secs, m.heartbeat_secs
        ));
    }
    for (key, pats) in [("mysql.include", &m.include), ("mysql.exclude", &m.exclude)] {
        for p in pats {
            if !p.contains('.') {
                errs.push(format!(
                    "{key} entry {p:?} is not DB.TABLE; use e.g. \"shop.orders\" or \"shop.*\""
                ));
            }
        }
    }
    for p in &m.exclude_columns {
        let parts: Vec<&str> = p.split('.').collect();
        if parts.len() != 3 || parts.iter().any(|s| s.is_empty()) {
            errs.push(format!(
                "mysql.exclude_columns entry {p:?} is not DB.TABLE.COLUMN; use e.g. \"shop.customers.ssn\" or \"shop.*.password_hash\""
            ));
        }
    }
    security::validate_mysql_tls(m, errs);
}

fn validate_etcd(e: &EtcdConfig, errs: &mut Vec<String>) {
    if e.endpoints.is_empty() {
        errs.push(
            "etcd.endpoints is empty; list every etcd member, e.g. [\"127.0.0.1:2379\", \"127.0.0.1:3379\", \"127.0.0.1:4379\"]"
                .into(),
        );
    }
    for ep in &e.endpoints {
        if let Err(why) = check_endpoint(ep) {
            errs.push(format!(
                "etcd.endpoints entry {ep:?} {why}; use HOST:PORT or http(s)://HOST:PORT"
            ));
        }
    }
    if !e.prefix.starts_with('/') || e.prefix.ends_with('/') {
        errs.push(format!(
            "etcd.prefix = {:?} must start with `/` and not end with `/`, e.g. \"/binlog-bridge\"",
            e.prefix
        ));
    }
    if e.pipeline.is_empty()
        || !e
            .pipeline
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
    {
        errs.push(format!(
            "etcd.pipeline = {:?}: use letters, digits, `-`, `_` or `.` (not empty)",
            e.pipeline
        ));
    }
    if e.lease_ttl_secs < 1 || e.lease_ttl_secs > 300 {
        errs.push(format!(
            "etcd.lease_ttl_secs = {} is out of range; use 1 to 300 (default 2)",
            e.lease_ttl_secs
        ));
    }
    if e.checkpoint_interval_ms == 0 {
        errs.push(
            "etcd.checkpoint_interval_ms = 0 is not allowed; use 1 or more (default 1000)".into(),
        );
    }
    if e.password.is_some() && e.password_file.is_some() {
        errs.push("etcd.password and etcd.password_file are both set; keep one".into());
    }
    if (e.password.is_some() || e.password_file.is_some()) && e.username.is_none() {
        errs.push("etcd.password is set but etcd.username is not; set both".into());
    }
    if e.cert_file.is_some() != e.key_file.is_some() {
        errs.push("etcd.cert_file and etcd.key_file go together; set both or neither".into());
    }
}

fn check_endpoint(ep: &str) -> Result<(), String> {
    let hostport = if let Some(rest) = ep
        .strip_prefix("http://")
        .or_else(|| ep.strip_prefix("https://"))
    {
        rest.trim_end_matches('/')
    } else if ep.contains("://") {
        return Err("has an unsupported scheme".into());
    } else {
        ep
    };
    let (host, port) = hostport
        .rsplit_once(':')
        .ok_or_else(|| "has no port".to_string())?;
    if host.is_empty() {
        return Err("has no host".into());
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(format!("has a bad port `{port}`")),
    }
}

fn validate_kafka(k: &KafkaConfig, errs: &mut Vec<String>) {
    let brokers: Vec<&str> = k.brokers.split(',').map(str::trim).collect();
    if brokers.iter().all(|b| b.is_empty()) {
        errs.push("kafka.brokers is empty; use e.g. \"127.0.0.1:9092\"".into());
    } else {
        for b in brokers {
            if let Err(why) = check_endpoint(b) {
                errs.push(format!(
                    "kafka.brokers entry {b:?} {why}; use HOST:PORT[,HOST:PORT...]"
                ));
            }
        }
    }
    for (key, template) in [
        ("kafka.topic", &k.topic),
        ("kafka.schema_topic", &k.schema_topic),
    ] {
        if let Err(why) = check_topic_template(template) {
            errs.push(format!("{key} = {template:?} {why}"));
        }
    }
    if let Err(why) = check_topic_template(&k.progress_topic) {
        errs.push(format!(
            "kafka.progress_topic = {:?} {why}",
            k.progress_topic
        ));
    } else if k.progress_topic.contains("{db}") || k.progress_topic.contains("{table}") {
        errs.push(format!(
            "kafka.progress_topic = {:?} may only use {{pipeline}}, e.g. \"{{pipeline}}.progress\"",
            k.progress_topic
        ));
    }
    if k.progress_topic == k.topic || k.progress_topic == k.schema_topic {
        errs.push(format!(
            "kafka.progress_topic = {:?} is also a data topic; give it a name of its own, e.g. \"{{pipeline}}.progress\"",
            k.progress_topic
        ));
    }
    if let Some(id) = &k.transactional_id {
        if id.trim().is_empty() || id.chars().any(char::is_control) {
            errs.push(format!(
                "kafka.transactional_id = {id:?} is empty or has control characters; remove it (default binlog-bridge.{{pipeline}}) or give a name"
            ));
        }
    }
    if k.transaction_max_messages < 1 || k.transaction_max_messages > 10_000_000 {
        errs.push(format!(
            "kafka.transaction_max_messages = {} is out of range; use 1 to 10000000 (default 10000)",
            k.transaction_max_messages
        ));
    }
    if k.transaction_max_bytes < 1 || k.transaction_max_bytes > 1_000_000_000 {
        errs.push(format!(
            "kafka.transaction_max_bytes = {} is out of range; use 1 to 1000000000 (default 8000000)",
            k.transaction_max_bytes
        ));
    }
    if k.transaction_max_ms < 1 || k.transaction_max_ms > 30_000 {
        errs.push(format!(
            "kafka.transaction_max_ms = {} is out of range; use 1 to 30000 (default 200; the broker aborts transactions older than transaction.timeout.ms)",
            k.transaction_max_ms
        ));
    }
    if k.topic == k.schema_topic {
        errs.push(format!(
            "kafka.schema_topic = {:?} is the same as kafka.topic; schema changes must not be mixed into row topics (Flink's readers fail on them), e.g. \"{{pipeline}}.schema-changes\"",
            k.schema_topic
        ));
    }
    if k.partitions < 1 {
        errs.push(format!(
            "kafka.partitions = {} must be 1 or more",
            k.partitions
        ));
    }
    if k.replication_factor < 1 {
        errs.push(format!(
            "kafka.replication_factor = {} must be 1 or more",
            k.replication_factor
        ));
    }
    for (table, cols) in &k.key_columns {
        if !table.contains('.') || table.contains('*') {
            errs.push(format!(
                "kafka.key_columns key {table:?} is not DB.TABLE, e.g. \"shop.orders\""
            ));
        }
        if cols.is_empty() {
            errs.push(format!(
                "kafka.key_columns.{table:?} is empty; list at least one column"
            ));
        }
    }
    for key in k.properties.keys() {
        if MANAGED_PROPERTIES.contains(&key.as_str()) {
            errs.push(format!(
                "kafka.properties.{key:?} is set by the bridge itself and cannot be overridden (delivery guarantees depend on it)"
            ));
        }
    }
    if k.linger_ms > 300_000 {
        errs.push(format!(
            "kafka.linger_ms = {} is out of range; use 0 to 300000 (default 5)",
            k.linger_ms
        ));
    }
    if k.batch_bytes < 1 || k.batch_bytes > 2_147_483_647 {
        errs.push(format!(
            "kafka.batch_bytes = {} is out of range; use 1 to 2147483647 (default 1000000)",
            k.batch_bytes
        ));
    }
    if k.max_in_flight < 1 || k.max_in_flight > 1_000_000 {
        errs.push(format!(
            "kafka.max_in_flight = {} is out of range; use 1 to 1000000 (default 100000)",
            k.max_in_flight
        ));
    }
    if k.max_in_flight_bytes < 1024 || k.max_in_flight_bytes > 1 << 30 {
        errs.push(format!(
            "kafka.max_in_flight_bytes = {} is out of range; use 1024 to 1073741824 (default 16777216 = 16 MiB)",
            k.max_in_flight_bytes
        ));
    }
    security::validate_kafka_security(k, errs);
    if k.debezium_schema && k.format != Format::Debezium {
        errs.push(format!(
            "kafka.debezium_schema = true only applies to format = \"debezium\", not {:?}; remove it",
            k.format
        ));
    }
}

/// librdkafka properties whose values the delivery protocols depend on.
pub const MANAGED_PROPERTIES: [&str; 6] = [
    "bootstrap.servers",
    "enable.idempotence",
    "acks",
    "transactional.id",
    "max.in.flight.requests.per.connection",
    "enable.auto.commit",
];

fn check_topic_template(t: &str) -> Result<(), String> {
    if t.is_empty() {
        return Err("is empty".into());
    }
    let mut rest = t;
    while let Some(open) = rest.find('{') {
        let close = rest[open..]
            .find('}')
            .ok_or_else(|| "has an unclosed `{`".to_string())?;
        let name = &rest[open + 1..open + close];
        if !["db", "table", "pipeline"].contains(&name) {
            return Err(format!(
                "has unknown placeholder `{{{name}}}`; allowed: {{db}}, {{table}}, {{pipeline}}"
            ));
        }
        rest = &rest[open + close + 1..];
    }
    let literal = t
        .replace("{db}", "a")
        .replace("{table}", "a")
        .replace("{pipeline}", "a");
    if literal.len() > 249
        || !literal
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-')
    {
        return Err(
            "is not a valid Kafka topic name; use letters, digits, `.`, `_`, `-` and placeholders"
                .into(),
        );
    }
    Ok(())
}

/// Hide the password of a URL for messages.
pub fn redact_url(u: &str) -> String {
    match url::Url::parse(u) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(_) => u.to_string(),
        // Unparseable: hide whatever stands between the last `:` and the `@`.
        Err(_) => match u.rfind('@') {
            Some(at) => {
                let scheme_end = u.find("://").map(|s| s + 3).unwrap_or(0);
                match u[..at].rfind(':').filter(|&c| c >= scheme_end) {
                    Some(c) => format!("{}:***{}", &u[..c], &u[at..]),
                    None => u.to_string(),
                }
            }
            None => u.to_string(),
        },
    }
}

/// Where to start streaming when there is no checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartPosition {
    Earliest,
    Latest,
    At(crate::event::Position),
    Gtid(String),
}

impl StartPosition {
    pub fn parse(s: &str) -> Result<StartPosition, String> {
        match s {
            "earliest" => Ok(StartPosition::Earliest),
            "latest" => Ok(StartPosition::Latest),
            _ => {
                if let Some(g) = s.strip_prefix("gtid:") {
                    if g.trim().is_empty() {
                        return Err(
                            "empty GTID; use gtid:0-1-100 (MariaDB) or gtid:UUID:1-100 (MySQL)"
                                .into(),
                        );
                    }
                    Ok(StartPosition::Gtid(g.trim().to_string()))
                } else {
                    s.parse()
                        .map(StartPosition::At)
                        .map_err(|e| format!("{e}; or use earliest, latest, gtid:..."))
                }
            }
        }
    }
}

/// Read a secret given inline or by file (first line, trailing newline cut).
pub fn resolve_secret(
    key: &str,
    inline: &Option<Secret>,
    file: &Option<PathBuf>,
) -> Result<Option<Secret>, String> {
    if let Some(s) = inline {
        return Ok(Some(s.clone()));
    }
    match file {
        Some(path) => std::fs::read_to_string(path)
            .map(|t| Some(Secret::new(t.lines().next().unwrap_or("").to_string())))
            .map_err(|e| format!("{key}_file {}: {e}", path.display())),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests;
