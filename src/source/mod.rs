//! The binlog source: connect to MySQL/MariaDB as a replica, stream the
//! binlog, decode row images into [`crate::event::ChangeEvent`]s.
//!
//! # API used by the pipeline
//!
//! ```text
//! let mut src = BinlogSource::start(&config.mysql, SourceOptions::default(), StartFrom::Position(pos)).await?;
//! loop {
//!     let ev = src.next_event().await?;   // Row | Schema | Commit, in binlog order
//! }
//! ```
//!
//! - [`StartFrom`]: a [`Position`] (file + offset of a transaction start, and
//!   how many of its events were already delivered), a GTID state, the
//!   earliest binlog the server has, or its current end.
//! - Every row/schema event's `position` is (transaction start, index within
//!   the transaction, GTID state before it); resuming at
//!   `position.next_row()` continues right after it. `Commit` carries the
//!   position after the transaction.
//! - Errors: [`SourceError::is_transient`] errors (network, restart) are
//!   retried inside `next_event` with capped exponential backoff and jitter,
//!   resuming after the last event handed out, so the caller never sees a
//!   row twice or misses one. `next_event` returns a transient error only
//!   when `SourceOptions::retry_for` has run out; anything else it returns is
//!   definite: stop, print it, and drop the source.
//! - Memory: at most one binlog event's rows are decoded ahead (and the
//!   socket's buffers); events are read as they are decoded.
//! - Row index: counts every event the source delivers for a transaction
//!   (rows of included tables and schema changes). A `Commit` is emitted for
//!   every transaction, including ones with no included rows, so positions
//!   keep advancing.
//!
//! # Files
//!
//! `connection` (replica connection, dump request, event reading), `decoder`
//! (events -> change events, positions), `events` (header, CRC32, non-row
//! events), `table_map`, `rows`, `value`, `json`, `charset`, `compress`
//! (row decoding), `gtid` (GTID state), `checks` (startup checks), `filter`,
//! `error`, `fixtures` (event builders for tests and the benchmark).
//!
//! # Verified against a live server vs. byte fixtures only
//!
//! Against MariaDB 10.11 (integration tests): v1 row events, every column
//! type, MariaDB GTID/GTID_LIST/annotate/checkpoint events, compressed
//! query and row events, rotation, resume by file/pos/row and by GTID,
//! restart, purge, settings and privilege checks.
//!
//! Only on byte fixtures built from the MySQL source layouts (MySQL 8 cannot
//! run on the test machines): v2 row events, binary JSON, MySQL GTID and
//! PREVIOUS_GTIDS events and GTID-set state, GTID-wrapped DDL, refusal of
//! PARTIAL_UPDATE_ROWS (`binlog_row_value_options=PARTIAL_JSON`) and of
//! TRANSACTION_PAYLOAD (`binlog_transaction_compression=ON`). The MySQL
//! GTID dump request (COM_BINLOG_DUMP_GTID) is not exercised at all.

pub mod binlog_file;
pub mod bytes;
pub mod charset;
pub mod checks;
pub mod columns;
pub mod compress;
pub mod connection;
pub mod decoder;
pub mod dump;
pub mod error;
pub mod events;
pub mod filter;
pub mod fixtures;
pub mod gtid;
pub mod json;
pub mod rows;
pub mod table_map;
pub mod value;

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;

pub use columns::ColumnFilter;
pub use connection::Flavor;
pub use decoder::Decoder;
pub use error::{DecodeError, SourceError};
pub use filter::TableFilter;
pub use gtid::{Gtid, GtidState};

use crate::config::{MysqlConfig, StartPosition};
use crate::event::{ChangeEvent, EventKind, Position};

use connection::{DumpFrom, DumpStream, ReadError};

/// Where streaming starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartFrom {
    /// A transaction start plus the number of its events already delivered.
    Position(Position),
    /// A MariaDB GTID list (`0-1-100`) or MySQL GTID set (`uuid:1-100`):
    /// stream the transactions not in it.
    Gtid(String),
    /// The oldest binlog the server still has.
    Earliest,
    /// The current end of the binlog.
    Latest,
}

impl From<StartPosition> for StartFrom {
    fn from(s: StartPosition) -> Self {
        match s {
            StartPosition::Earliest => StartFrom::Earliest,
            StartPosition::Latest => StartFrom::Latest,
            StartPosition::At(p) => StartFrom::Position(p),
            StartPosition::Gtid(g) => StartFrom::Gtid(g),
        }
    }
}

/// Knobs that are not in the config file.
#[derive(Debug, Clone)]
pub struct SourceOptions {
    pub connect_timeout: Duration,
    /// First reconnect delay; doubles up to `max_backoff`.
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    /// Run the server-settings checks on start (and fail if one fails).
    pub check_settings: bool,
    /// Give up reconnecting after this long and return the transient error
    /// (None: retry forever).
    pub retry_for: Option<Duration>,
}

impl Default for SourceOptions {
    fn default() -> Self {
        SourceOptions {
            connect_timeout: Duration::from_secs(10),
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(30),
            check_settings: true,
            retry_for: None,
        }
    }
}

/// A live binlog stream from one server.
pub struct BinlogSource {
    opts: mysql_async::Opts,
    config: MysqlConfig,
    options: SourceOptions,
    flavor: Flavor,
    decoder: Decoder,
    /// The binlog dump being read (None while reconnecting).
    stream: Option<DumpStream>,
    /// Where a reconnect resumes: right after the last event handed out.
    resume: Option<Position>,
    /// The original start, used while nothing was handed out yet.
    start: StartFrom,
    /// Reconnects done so far (for tests and metrics).
    pub reconnects: u64,
    /// `mysql.exclude_columns`, applied to every row handed out.
    columns: ColumnFilter,
    /// While the stream is down and being re-established: the error.
    outage: Outage,
    /// Where the stream has read to between transactions (see [`Self::progress`]).
    progress: tokio::sync::watch::Sender<Position>,
}

/// Shared view of a source's connection: `Some(error)` while the binlog
/// stream is interrupted and reconnecting, `None` while it is up.
pub type Outage = Arc<std::sync::Mutex<Option<String>>>;

fn set_outage(o: &Outage, v: Option<String>) {
    if let Ok(mut g) = o.lock() {
        *g = v;
    }
}

/// Connection options for `config`: the URL, the password (inline or from
/// its file) and `mysql.tls`. Every MySQL connection the bridge opens uses
/// these (replication, `check`, server queries).
pub fn mysql_opts(config: &MysqlConfig) -> Result<mysql_async::Opts, SourceError> {
    let opts = mysql_async::Opts::from_url(&config.url).map_err(|e| {
        SourceError::Config(format!(
            "mysql.url {:?}: {e}",
            crate::config::redact_url(&config.url)
        ))
    })?;
    let password =
        crate::config::resolve_secret("mysql.password", &config.password, &config.password_file)
            .map_err(SourceError::Config)?;
    // mysql_async refuses packets over its max_allowed_packet, by default
    // the server session's (16 MiB on MariaDB 10.11): one binlog event over
    // it (a big row, an UPDATE's two images of a big row) failed the stream
    // at the same event on every reconnect. The server's own limits still
    // apply to what it sends; 1 GiB is the protocol's largest.
    let max_packet = opts.max_allowed_packet().unwrap_or(1 << 30);
    let mut b = mysql_async::OptsBuilder::from_opts(opts).max_allowed_packet(Some(max_packet));
    if let Some(p) = password {
        b = b.pass(Some(p.expose().to_string()));
    }
    if let Some(tls) = config.ssl_opts() {
        // TLS over a Unix socket is skipped by the driver: force TCP.
        b = b.ssl_opts(tls).prefer_socket(false);
    }
    Ok(b.into())
}

/// Connect with `config`'s options (see [`mysql_opts`]).
pub async fn connect(
    config: &MysqlConfig,
    timeout: std::time::Duration,
) -> Result<mysql_async::Conn, SourceError> {
    let opts = mysql_opts(config)?;
    connection::connect(&opts, config.tls, timeout).await
}

impl BinlogSource {
    /// Connect, check the server, and start streaming at `from`.
    ///
    /// Fails (without retrying) if the server cannot be reached, is set up
    /// wrongly, or no longer has the requested position.
    pub async fn start(
        config: &MysqlConfig,
        options: SourceOptions,
        from: StartFrom,
    ) -> Result<BinlogSource, SourceError> {
        let opts = mysql_opts(config)?;
        let mut conn = connection::connect(&opts, config.tls, options.connect_timeout).await?;
        if options.check_settings {
            // Privileges are not read from SHOW GRANTS here (roles would give
            // false alarms): a missing one fails the first statement that
            // needs it, with error 1227 turned into the GRANT to run.
            let failed: Vec<String> = checks::server_settings(&mut conn)
                .await
                .into_iter()
                .filter(|r| !r.ok)
                .map(|r| format!("{}: {}", r.name, r.detail))
                .collect();
            if !failed.is_empty() {
                return Err(SourceError::Settings(failed));
            }
        }
        if !config.exclude_columns.is_empty() {
            let r = checks::excluded_key_columns(&mut conn, &config.exclude_columns).await;
            if !r.ok {
                return Err(SourceError::Config(r.detail));
            }
        }
        let info = connection::server_info(&mut conn).await?;
        let charsets = Arc::new(connection::load_charsets(&mut conn).await);
        let filter = TableFilter::new(&config.include, &config.exclude);
        let decoder = Decoder::new(charsets, filter, info.checksum);
        let mut src = BinlogSource {
            opts,
            config: config.clone(),
            options,
            flavor: info.flavor,
            decoder,
            stream: None,
            resume: None,
            start: from,
            reconnects: 0,
            columns: ColumnFilter::new(&config.exclude_columns),
            outage: Outage::default(),
            progress: tokio::sync::watch::channel(Position::new("", 4)).0,
        };
        src.open(conn).await?;
        Ok(src)
    }

    /// A handle that shows whether the stream is interrupted (for /readyz).
    pub fn outage(&self) -> Outage {
        self.outage.clone()
    }

    /// Change events decoded but not yet returned: at most one binlog
    /// event's rows, whatever the size of the transaction.
    pub fn buffered(&self) -> usize {
        self.decoder.pending()
    }

    /// Where the stream stands between transactions: updated after each
    /// binlog event read outside a transaction once every change before it
    /// was returned by [`Self::next_event`] (heartbeats while idle included).
    /// A caller that has handled every returned event and sees this at or
    /// past a position knows the binlog holds nothing more before it.
    pub fn progress(&self) -> tokio::sync::watch::Receiver<Position> {
        self.progress.subscribe()
    }

    /// What reads the current dump: `"own"` ([`dump`]) or `"mysql_async"`
    /// (see `mysql.dump_reader`); None while not connected.
    pub fn dump_reader(&self) -> Option<&'static str> {
        self.stream
            .as_ref()
            .map(|s| if s.is_raw() { "own" } else { "mysql_async" })
    }

    /// The server family.
    pub fn flavor(&self) -> Flavor {
        self.flavor
    }

    /// Where a restart would resume: right after the last event returned.
    pub fn resume_position(&self) -> Option<&Position> {
        self.resume.as_ref()
    }

    /// Where the stream stands: after the last event returned, or, before
    /// the first one, the start position once it is known (`Latest` and
    /// `Earliest` are resolved when the dump opens; a GTID start is not).
    pub fn position(&self) -> Option<Position> {
        match (&self.resume, &self.start) {
            (Some(p), _) | (None, StartFrom::Position(p)) => Some(p.clone()),
            _ => None,
        }
    }

    /// Open a dump on `conn` from the resume point (or the original start).
    async fn open(&mut self, mut conn: mysql_async::Conn) -> Result<(), SourceError> {
        let from = match (&self.resume, &self.start) {
            (Some(p), _) | (None, StartFrom::Position(p)) => p.clone(),
            (None, StartFrom::Earliest) => {
                let logs = connection::binary_logs(&mut conn).await?;
                let first = logs.first().cloned().ok_or_else(|| {
                    SourceError::Settings(vec!["SHOW BINARY LOGS is empty: binary logging is off; start the server with log_bin".into()])
                })?;
                let p = Position::new(first, 4);
                self.start = StartFrom::Position(p.clone());
                p
            }
            (None, StartFrom::Latest) => {
                let p = connection::current_position(&mut conn).await?;
                // Later reconnects must not jump to a newer "latest".
                self.start = StartFrom::Position(p.clone());
                p
            }
            (None, StartFrom::Gtid(g)) => {
                let state = GtidState::parse(g)
                    .map_err(|e| SourceError::Config(format!("start GTID `{g}`: {e}")))?;
                self.decoder.resume_at(&Position::new("", 4));
                self.decoder.set_gtid_state(Some(state));
                let dump = DumpFrom::Gtid(g.clone());
                return self.dump(conn, &dump).await;
            }
        };
        if self.flavor == Flavor::MariaDb || !from.file.is_empty() {
            let logs = connection::binary_logs(&mut conn).await?;
            let known = logs.iter().any(|l| **l == *from.file);
            if !known {
                let range = match (logs.first(), logs.last()) {
                    (Some(a), Some(b)) => format!("{a} .. {b}"),
                    _ => "none".into(),
                };
                // Only a file the server had can have been purged; one it
                // never had is a wrong position or the wrong server, which a
                // re-snapshot (allow_resnapshot_on_purge) must not paper over.
                if logs
                    .first()
                    .is_some_and(|first| connection::purged_before(&from.file, first))
                {
                    return Err(SourceError::Purged {
                        what: from.to_string(),
                        detail: format!(
                            "file {} is not among the server's binary logs ({range})",
                            from.file
                        ),
                    });
                }
                return Err(SourceError::Refused(format!(
                    "binlog {} (position {from}) is not on this server and is not one it purged \
                     (its binlogs: {range}): is mysql.url the server this position came from? \
                     If it is, set a position it has with `binlog-bridge checkpoint set`",
                    from.file
                )));
            }
        }
        let mut pos = from.clone();
        if pos.gtid.is_none() && self.flavor == Flavor::MariaDb {
            match connection::mariadb_gtid_at(&mut conn, &pos.file, pos.offset).await {
                Ok(g) => pos.gtid = g.map(Into::into),
                // Rows still stream from the position; only the GTID state
                // the bridge reports (bb.gtid-state, checkpoints) is then
                // built from the stream and lacks what came before it.
                Err(e) => tracing::warn!(
                    position = %pos,
                    error = %e,
                    "cannot read the GTID state at the start position (SELECT BINLOG_GTID_POS); \
                     streaming from the position all the same, but the GTID state in \
                     bb.gtid-state headers and checkpoints is then built from the stream \
                     and misses replication domains with no transaction after it; raise \
                     the server's max_allowed_packet above the binlog's largest event"
                ),
            }
        }
        self.decoder.resume_at(&pos);
        let dump = DumpFrom::File {
            file: pos.file.to_string(),
            offset: pos.offset,
        };
        self.dump(conn, &dump).await
    }

    async fn dump(&mut self, conn: mysql_async::Conn, from: &DumpFrom) -> Result<(), SourceError> {
        // The old dump's connection is closed before the new one asks.
        self.stream = None;
        self.stream = Some(
            connection::start_dump(
                conn,
                &self.opts,
                self.config.dump_reader,
                self.flavor,
                self.config.server_id,
                from,
                Duration::from_secs(self.config.heartbeat_secs.max(1)),
                Duration::from_secs(self.config.read_timeout_secs.max(2)),
                self.options.connect_timeout,
            )
            .await?,
        );
        tracing::debug!(reader = ?self.dump_reader(), "binlog dump started");
        Ok(())
    }

    /// The next change: a row, a schema change, or a transaction's commit.
    ///
    /// Transient failures are retried here (backoff with jitter, resuming
    /// after the last returned event). An error returned is definite.
    ///
    /// Cancel-safe: dropping the future loses no event (an interrupted
    /// reconnect is simply redone on the next call).
    pub async fn next_event(&mut self) -> Result<ChangeEvent, SourceError> {
        let mut attempt: u32 = 0;
        // When the first failure of this call happened (read on failure
        // only: no clock read per event).
        let mut since: Option<std::time::Instant> = None;
        loop {
            match self.try_next().await {
                Ok(mut ev) => {
                    self.columns.apply(&mut ev).map_err(SourceError::Config)?;
                    self.resume = Some(match ev.kind {
                        EventKind::Commit => ev.position.clone(),
                        _ => ev.position.next_row(),
                    });
                    return Ok(ev);
                }
                Err(e) if e.is_transient() => {
                    let since = *since.get_or_insert_with(std::time::Instant::now);
                    if self.options.retry_for.is_some_and(|d| since.elapsed() >= d) {
                        return Err(e);
                    }
                    attempt = attempt.saturating_add(1);
                    let base = self
                        .options
                        .min_backoff
                        .saturating_mul(1u32 << attempt.min(16));
                    let cap = base.min(self.options.max_backoff);
                    let delay = cap.mul_f64(rand::thread_rng().gen_range(0.5..=1.0));
                    tracing::warn!(error = %e, attempt, ?delay, "binlog stream interrupted; reconnecting");
                    set_outage(&self.outage, Some(e.to_string()));
                    self.stream = None;
                    while self.decoder.pop().is_some() {}
                    tokio::time::sleep(delay).await;
                    match self.reconnect().await {
                        Ok(()) => {
                            self.reconnects += 1;
                            set_outage(&self.outage, None);
                        }
                        Err(e) if e.is_transient() => {
                            tracing::warn!(error = %e, "reconnect failed");
                        }
                        Err(e) => return Err(e),
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn reconnect(&mut self) -> Result<(), SourceError> {
        let conn =
            connection::connect(&self.opts, self.config.tls, self.options.connect_timeout).await?;
        self.open(conn).await
    }

    async fn try_next(&mut self) -> Result<ChangeEvent, SourceError> {
        loop {
            if let Some(ev) = self.decoder.pop() {
                return Ok(ev);
            }
            let stream = self
                .stream
                .as_mut()
                .ok_or_else(|| SourceError::Transient("not connected".into()))?;
            match stream.next().await {
                Ok(raw) => {
                    self.decoder.feed(raw)?;
                    if self.decoder.pending() == 0 && !self.decoder.in_transaction() {
                        let next = self.decoder.next_position();
                        self.progress.send_if_modified(|p| {
                            let moved = p != next;
                            if moved {
                                *p = next.clone();
                            }
                            moved
                        });
                    }
                }
                Err(ReadError::Source(e)) => return Err(e),
                Err(ReadError::Malformed(what)) => {
                    return Err(SourceError::Decode {
                        file: self.decoder.next_position().file.to_string(),
                        offset: self.decoder.next_position().offset,
                        error: DecodeError::new(what),
                    })
                }
            }
        }
    }
}
