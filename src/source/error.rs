//! Errors of the binlog source, split the way the pipeline must react.
//!
//! *Definite* errors mean the data is wrong or gone (purged binlog, an event
//! we cannot decode, a corrupt checksum, server settings that make decoding
//! impossible): retrying cannot help, so the pipeline stops and prints the
//! message, which says what to do. *Transient* errors (network, server
//! restart, read timeout) are retried by the source itself with backoff.

/// A malformed or unsupported piece of a binlog event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub String);

impl DecodeError {
    pub fn new(msg: impl Into<String>) -> Self {
        DecodeError(msg.into())
    }
}

/// Everything that can go wrong in the source.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The requested binlog position or GTID state is no longer on the server.
    #[error("the requested binlog position {what} is no longer on the server (purged): {detail}; re-snapshot the tables or reset the checkpoint to a position the server still has (SHOW BINARY LOGS)")]
    Purged { what: String, detail: String },
    /// The server is configured so that rows cannot be streamed or decoded.
    #[error("the MySQL/MariaDB server is not set up for binlog streaming:\n  - {}", .0.join("\n  - "))]
    Settings(Vec<String>),
    /// An event's CRC32 does not match its bytes.
    #[error("corrupt binlog event at {file}:{offset}: CRC32 is {found:#010x}, the event's bytes give {computed:#010x}; the binlog or the network path is damaged")]
    Checksum {
        file: String,
        offset: u64,
        found: u32,
        computed: u32,
    },
    /// An event we cannot decode (malformed, or a feature we do not support).
    #[error("cannot decode binlog event at {file}:{offset}: {error}")]
    Decode {
        file: String,
        offset: u64,
        error: DecodeError,
    },
    /// The configuration or the start position is unusable.
    #[error("{0}")]
    Config(String),
    /// The server refused the replication request for a reason retrying cannot fix.
    #[error("the server refused the binlog dump: {0}")]
    Refused(String),
    /// Network, server restart, read timeout: the source retries these itself.
    #[error("transient source error: {0}")]
    Transient(String),
}

impl SourceError {
    /// True for errors worth retrying (with backoff) from the last position.
    pub fn is_transient(&self) -> bool {
        matches!(self, SourceError::Transient(_))
    }

    /// True for errors that retrying cannot fix: stop and say why.
    pub fn is_definite(&self) -> bool {
        !self.is_transient()
    }
}

/// MySQL error codes that mean "what you asked for is gone or impossible".
pub(crate) fn classify_server_error(code: u16, message: &str, what: &str) -> SourceError {
    match code {
        // ER_MASTER_FATAL_ERROR_READING_BINLOG: purged file, GTID not in binlog, bad position.
        1236 => {
            let m = message.to_ascii_lowercase();
            if m.contains("not in the master's binlog") || m.contains("not in the master binlog") {
                SourceError::Refused(format!(
                    "error {code}: {message}; the requested GTID is newer than anything this server has written (is this the right server?)"
                ))
            } else if m.contains("could not find")
                || m.contains("purged")
                || m.contains("first log file name")
                || m.contains("gtid")
            {
                SourceError::Purged {
                    what: what.to_string(),
                    detail: message.to_string(),
                }
            } else if m.contains("impossible position") || m.contains("bogus data in log event") {
                // MariaDB's words for an offset past the file's end, and for
                // one inside an event (or a damaged file).
                SourceError::Refused(format!(
                    "error {code}: {message}; no event starts where the dump was asked to start ({what}), or the binlog is damaged there: start at an offset SHOW BINLOG EVENTS lists, or the one SHOW MASTER STATUS gives (`binlog-bridge check` tests mysql.start)"
                ))
            } else {
                SourceError::Refused(format!("error {code}: {message}"))
            }
        }
        // After the login, MariaDB answers a binlog dump by a user without
        // REPLICATION SLAVE with "access denied" too: a missing privilege.
        1045 if what != "connect" => SourceError::Settings(vec![format!(
            "error {code}: {message} (while: {what}); run GRANT SELECT, REPLICATION SLAVE, BINLOG MONITOR ON *.* TO the bridge user (MySQL: REPLICATION CLIENT instead of BINLOG MONITOR)"
        )]),
        // At login: wrong user name or password (or a host the user may not connect from).
        1045 => SourceError::Config(format!(
            "the MySQL server refused the login (error {code}: {message}); check the user in mysql.url and the password (mysql.password_file, mysql.password or BINLOG_BRIDGE_MYSQL_PASSWORD), and that the user may connect from this host"
        )),
        // Missing privilege.
        1044 | 1142 | 1227 => SourceError::Settings(vec![format!(
            "error {code}: {message}; run GRANT SELECT, REPLICATION SLAVE, BINLOG MONITOR ON *.* TO the bridge user (MySQL: REPLICATION CLIENT instead of BINLOG MONITOR)"
        )]),
        // Server shutting down, connection killed, too many connections: retry.
        1053 | 1077 | 1078 | 1079 | 1152 | 1153 | 1158..=1161 | 1040 | 2013 | 2006 => {
            SourceError::Transient(format!("error {code}: {message}"))
        }
        1047 => SourceError::Refused(format!(
            "error {code}: {message} (a MySQL GTID dump was sent to a MariaDB server?)"
        )),
        _ => SourceError::Transient(format!("error {code}: {message}")),
    }
}
