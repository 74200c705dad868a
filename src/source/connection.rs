//! The replica connection: connect, learn what the server is, ask for the
//! binlog from a position or GTID state, and read its events ([`DumpStream`]).
//!
//! On a plain-TCP connection the dump is read by our own reader
//! ([`super::dump`]): each event's bytes as the server sent them. Otherwise
//! (TLS, a Unix socket, compression, other authentication) mysql_async does
//! the protocol (auth, COM_REGISTER_SLAVE, COM_BINLOG_DUMP); its event
//! parser strips checksums without checking them, so each event's exact
//! bytes (header + body + checksum) are rebuilt. Either way the decoder
//! verifies the CRC32 itself. A read timeout (no event and no heartbeat for
//! `read_timeout_secs`) turns a dead connection into a transient error.
//!
//! The events are read in the decoding task itself, into one reused buffer:
//! a reader task of its own, with a channel of owned copies, cost an
//! allocation, a copy and a cross-thread free per event, and a task wake-up
//! per batch (README "Performance").

use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStream, BinlogStreamRequest, Conn};

use mysql_common::packets::binlog_request::BinlogRequest;

use crate::config::{DumpReader, MysqlTls};
use crate::event::Position;

use super::charset::Charsets;
use super::dump::{RawDump, Start};
use super::error::{classify_server_error, SourceError};

/// Which server family we talk to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    MariaDb,
    MySql,
}

/// Where one dump request starts.
#[derive(Debug, Clone)]
pub enum DumpFrom {
    File { file: String, offset: u64 },
    Gtid(String),
}

/// Facts learnt on connect.
pub struct ServerInfo {
    pub flavor: Flavor,
    pub version: String,
    pub checksum: bool,
}

pub(crate) fn map_err(e: mysql_async::Error, what: &str) -> SourceError {
    use mysql_async::{DriverError, Error, IoError};
    match e {
        Error::Server(s) => classify_server_error(s.code, &s.message, what),
        Error::Url(u) => SourceError::Config(format!("mysql.url: {u}")),
        Error::Driver(DriverError::NoClientSslFlagFromServer) => SourceError::Config(
            "the MySQL server does not offer TLS, but mysql.tls asks for it; enable TLS on the server (ssl_cert, ssl_key) or set mysql.tls = \"preferred\" or \"disabled\"".into(),
        ),
        Error::Io(IoError::Tls(t)) => SourceError::Config(format!(
            "TLS setup for the MySQL connection failed: {t}; check that mysql.tls_ca_file, mysql.tls_cert_file and mysql.tls_key_file are PEM files"
        )),
        Error::Io(IoError::Io(io)) if is_cert_error(&io.to_string()) => {
            let msg = io.to_string();
            if msg.contains("NotValidForName") || msg.contains("not valid for name") {
                SourceError::Config(format!(
                    "the MySQL server's TLS certificate does not match the host in mysql.url ({msg}); connect with a host name the certificate lists, or set mysql.tls = \"verify-ca\" to check only the CA"
                ))
            } else {
                SourceError::Config(format!(
                    "the MySQL server's TLS certificate was refused ({msg}); set mysql.tls_ca_file to the CA that signed the server's certificate"
                ))
            }
        }
        other => {
            let msg = other.to_string();
            if msg.contains("larger than max_allowed_packet") {
                SourceError::Config(format!(
                    "a packet from the MySQL server ({what}) is larger than the max_allowed_packet set in mysql.url ({msg}); raise it there or leave it out (the bridge then accepts up to 1 GiB)"
                ))
            } else {
                SourceError::Transient(msg)
            }
        }
    }
}

/// Whether an I/O error text is a refused TLS certificate (rustls' wording).
fn is_cert_error(msg: &str) -> bool {
    msg.contains("invalid peer certificate")
        || msg.contains("certificate not valid for name")
        || msg.contains("CertificateUnknown")
        || msg.contains("UnknownIssuer")
}

/// Open a connection with `opts` built for `tls` (see `source::mysql_opts`).
///
/// - `preferred`: a server without TLS is connected to over plain TCP instead.
/// - `verify-ca`: the certificate chain is checked, the host name is not.
///   mysql_async's switch for that (`skip_domain_validation`) matches on a
///   rustls error text that newer rustls no longer produces, so: when the
///   handshake fails *only* on the name (webpki checks the chain first, so the
///   chain was accepted), connect again verifying against a name the
///   certificate itself lists.
pub async fn connect(
    opts: &mysql_async::Opts,
    tls: MysqlTls,
    timeout: Duration,
) -> Result<Conn, SourceError> {
    let once = |opts: mysql_async::Opts| async move {
        match tokio::time::timeout(timeout, Conn::new(opts)).await {
            Ok(r) => Ok(r),
            Err(_) => Err(SourceError::Transient(format!(
                "no answer from the MySQL server within {timeout:?}"
            ))),
        }
    };
    match once(opts.clone()).await? {
        Ok(c) => Ok(c),
        Err(mysql_async::Error::Driver(mysql_async::DriverError::NoClientSslFlagFromServer))
            if tls == MysqlTls::Preferred =>
        {
            tracing::debug!(
                "the MySQL server offers no TLS; mysql.tls = \"preferred\": connecting without"
            );
            let plain: mysql_async::Opts = mysql_async::OptsBuilder::from_opts(opts.clone())
                .ssl_opts(None::<mysql_async::SslOpts>)
                .into();
            once(plain).await?.map_err(|e| map_err(e, "connect"))
        }
        Err(mysql_async::Error::Io(mysql_async::IoError::Io(io))) if tls == MysqlTls::VerifyCa => {
            let msg = io.to_string();
            let (Some(name), Some(ssl)) = (certificate_name(&msg), opts.ssl_opts()) else {
                return Err(map_err(
                    mysql_async::Error::Io(mysql_async::IoError::Io(io)),
                    "connect",
                ));
            };
            let ssl = ssl.clone().with_danger_tls_hostname_override(Some(name));
            let again: mysql_async::Opts = mysql_async::OptsBuilder::from_opts(opts.clone())
                .ssl_opts(ssl)
                .into();
            once(again).await?.map_err(|e| map_err(e, "connect"))
        }
        Err(e) => Err(map_err(e, "connect")),
    }
}

/// From a rustls "certificate not valid for name X; certificate is only
/// valid for A, B or C" error, the first name the certificate lists that can
/// be verified against (not a wildcard).
fn certificate_name(msg: &str) -> Option<String> {
    let (_, names) = msg.split_once("certificate is only valid for ")?;
    names
        .split(", ")
        .flat_map(|n| n.split(" or "))
        .map(|n| {
            let n = n.trim();
            n.strip_prefix("IpAddress(")
                .or_else(|| n.strip_prefix("DnsName("))
                .unwrap_or(n)
                .trim_end_matches(')')
                .trim_matches('"')
                .to_string()
        })
        .find(|n| !n.is_empty() && !n.contains('*'))
}

pub async fn server_info(conn: &mut Conn) -> Result<ServerInfo, SourceError> {
    let version: Option<String> = conn
        .query_first("SELECT VERSION()")
        .await
        .map_err(|e| map_err(e, "SELECT VERSION()"))?;
    let version = version.unwrap_or_default();
    let flavor = if version.to_ascii_lowercase().contains("mariadb") {
        Flavor::MariaDb
    } else {
        Flavor::MySql
    };
    let cs: Option<String> = conn
        .query_first("SELECT @@GLOBAL.binlog_checksum")
        .await
        .map_err(|e| map_err(e, "binlog_checksum"))?;
    Ok(ServerInfo {
        flavor,
        version,
        checksum: cs.is_some_and(|c| !c.eq_ignore_ascii_case("NONE")),
    })
}

/// Every collation the server knows, added to the built-in table.
pub async fn load_charsets(conn: &mut Conn) -> Charsets {
    let mut cs = Charsets::default();
    let rows: Result<Vec<(u32, String)>, _> = conn
        .query(
            "SELECT ID, CHARACTER_SET_NAME FROM information_schema.COLLATIONS WHERE ID IS NOT NULL",
        )
        .await;
    if let Ok(rows) = rows {
        for (id, name) in rows {
            cs.insert(id, &name);
        }
    }
    cs
}

/// `file` is a binlog of the same series as the server's oldest, `first`
/// (same base name), with a lower number: one the server had and purged.
/// A file of another series, or a later number, was never on this server.
pub fn purged_before(file: &str, first: &str) -> bool {
    let split = |f: &str| {
        f.rsplit_once('.')
            .and_then(|(base, n)| Some((base.to_string(), n.parse::<u64>().ok()?)))
    };
    matches!((split(file), split(first)), (Some((b1, n1)), Some((b2, n2))) if b1 == b2 && n1 < n2)
}

/// `SHOW BINARY LOGS` file names, oldest first.
pub async fn binary_logs(conn: &mut Conn) -> Result<Vec<String>, SourceError> {
    let rows: Vec<mysql_async::Row> = conn
        .query("SHOW BINARY LOGS")
        .await
        .map_err(|e| map_err(e, "SHOW BINARY LOGS"))?;
    Ok(rows
        .into_iter()
        .filter_map(|r| r.get_opt::<String, _>(0).and_then(Result::ok))
        .collect())
}

/// `SHOW MASTER STATUS`: the current end of the binlog.
pub async fn current_position(conn: &mut Conn) -> Result<Position, SourceError> {
    let row: Option<mysql_async::Row> = conn
        .query_first("SHOW MASTER STATUS")
        .await
        .map_err(|e| map_err(e, "SHOW MASTER STATUS"))?;
    let row = row.ok_or_else(|| {
        SourceError::Settings(vec![
            "SHOW MASTER STATUS is empty: binary logging is off; start the server with log_bin"
                .into(),
        ])
    })?;
    let file: Option<String> = row.get_opt(0).and_then(Result::ok);
    let pos: Option<u64> = row.get_opt(1).and_then(Result::ok);
    match (file, pos) {
        (Some(f), Some(p)) => Ok(Position::new(f, p)),
        _ => Err(SourceError::Transient(
            "SHOW MASTER STATUS gave no file/position".into(),
        )),
    }
}

/// MariaDB: the GTID state at a binlog position (`BINLOG_GTID_POS`); `None`
/// when the history before it is empty. An error says why the server could
/// not tell.
pub async fn mariadb_gtid_at(
    conn: &mut Conn,
    file: &str,
    offset: u64,
) -> Result<Option<String>, String> {
    let r: Option<Option<String>> = conn
        .exec_first("SELECT BINLOG_GTID_POS(?, ?)", (file, offset))
        .await
        .map_err(|e| e.to_string())?;
    match r.flatten() {
        // MariaDB answers NULL, not an error, when it cannot read that far
        // (measured: after an event over its max_allowed_packet) or the
        // offset is not where an event starts.
        None => Err("the server answered NULL: an event before the position in that file is larger than the server's max_allowed_packet, or the position is not an event boundary".into()),
        Some(s) if s.is_empty() => Ok(None),
        Some(s) => Ok(Some(s)),
    }
}

/// Rebuild an event's bytes exactly as the server sent them into `raw`
/// (cleared first). Public for `examples/decode_bench.rs`, which times this
/// step with the parse mysql_async does before it.
pub fn raw_event(ev: &mysql_async::binlog::events::Event, raw: &mut Vec<u8>) {
    let h = ev.header();
    raw.clear();
    raw.reserve(h.event_size() as usize);
    raw.extend_from_slice(&h.timestamp().to_le_bytes());
    raw.push(h.event_type_raw());
    raw.extend_from_slice(&h.server_id().to_le_bytes());
    raw.extend_from_slice(&h.event_size().to_le_bytes());
    raw.extend_from_slice(&h.log_pos().to_le_bytes());
    raw.extend_from_slice(&h.flags_raw().to_le_bytes());
    raw.extend_from_slice(ev.data());
    let stripped = (h.event_size() as usize).saturating_sub(raw.len());
    if stripped == 5 {
        let alg = match ev.footer().get_checksum_alg() {
            Ok(Some(a)) => a as u8,
            Ok(None) => 0,
            Err(_) => 0xff,
        };
        raw.push(alg);
    }
    if stripped >= 4 {
        raw.extend_from_slice(&ev.checksum().unwrap_or_default());
    }
}

/// Why [`DumpStream::next`] gave no event.
#[derive(Debug)]
pub enum ReadError {
    Source(SourceError),
    /// A malformed packet (what was wrong): the stream is unusable and
    /// retrying would read the same packet again.
    Malformed(String),
}

/// What reads the events off the connection.
enum Reader {
    /// mysql_async's stream (TLS, a Unix socket, compression, other
    /// authentication); None once the library panicked: not polled again.
    Driver(Option<BinlogStream>),
    /// Our own ([`super::dump`]): each event's bytes as sent, no parse.
    Raw(Box<RawDump>),
}

/// A binlog dump in progress: each [`DumpStream::next`] is one event's exact
/// bytes, or the error that ended the stream.
pub struct DumpStream {
    reader: Reader,
    /// `file:offset` or `gtid:...`, for errors.
    what: String,
    read_timeout: Duration,
    /// The read timeout without a timer per event: a check every half
    /// timeout; the connection is dead when three checks in a row found no
    /// event since the one before (silent for at least `read_timeout`, at
    /// most 1.5 times it).
    tick: tokio::time::Interval,
    quiet_checks: u32,
    /// The last event's bytes, rebuilt from mysql_async's parse (reused).
    raw: Vec<u8>,
}

impl DumpStream {
    fn new(reader: Reader, what: String, read_timeout: Duration) -> Self {
        let check = read_timeout / 2;
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + check, check);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        DumpStream {
            reader,
            what,
            read_timeout,
            tick,
            quiet_checks: 0,
            raw: Vec::new(),
        }
    }

    /// Whether the events come through our own reader (not mysql_async's).
    pub fn is_raw(&self) -> bool {
        matches!(self.reader, Reader::Raw(_))
    }

    fn silent(&mut self) -> Option<ReadError> {
        self.quiet_checks += 1;
        (self.quiet_checks >= 3).then(|| {
            ReadError::Source(SourceError::Transient(format!(
                "no binlog event or heartbeat for {:?}: connection presumed dead",
                self.read_timeout
            )))
        })
    }

    /// The next event's bytes. An error ends the stream: open a new one.
    ///
    /// Cancel-safe: both readers keep a partly read packet.
    pub async fn next(&mut self) -> Result<&[u8], ReadError> {
        loop {
            match &mut self.reader {
                Reader::Raw(raw) => {
                    let next = tokio::select! {
                        biased;
                        r = raw.read_event() => Some(r),
                        _ = self.tick.tick() => None,
                    };
                    match next {
                        None => {
                            if let Some(e) = self.silent() {
                                return Err(e);
                            }
                        }
                        Some(Ok(())) => {
                            self.quiet_checks = 0;
                            break;
                        }
                        Some(Err(e)) => return Err(e),
                    }
                }
                Reader::Driver(slot) => {
                    let Some(stream) = slot.as_mut() else {
                        return Err(ReadError::Malformed(PANICKED.into()));
                    };
                    // A panic inside the protocol library (a malformed packet) must
                    // not take the bridge down: it ends this stream with a definite
                    // error instead (retrying would read the same packet again).
                    let next = tokio::select! {
                        biased;
                        n = std::panic::AssertUnwindSafe(stream.next()).catch_unwind() => Some(n),
                        _ = self.tick.tick() => None,
                    };
                    match next {
                        None => {
                            if let Some(e) = self.silent() {
                                return Err(e);
                            }
                        }
                        Some(Err(_panic)) => {
                            *slot = None;
                            return Err(ReadError::Malformed(PANICKED.into()));
                        }
                        Some(Ok(None)) => {
                            return Err(ReadError::Source(SourceError::Transient(
                                "the server closed the binlog stream".into(),
                            )))
                        }
                        Some(Ok(Some(Err(e)))) => {
                            return Err(ReadError::Source(map_err(e, &self.what)))
                        }
                        Some(Ok(Some(Ok(ev)))) => {
                            self.quiet_checks = 0;
                            raw_event(&ev, &mut self.raw);
                            return Ok(&self.raw);
                        }
                    }
                }
            }
        }
        match &self.reader {
            Reader::Raw(raw) => Ok(raw.event()),
            Reader::Driver(_) => Ok(&self.raw),
        }
    }
}

const PANICKED: &str = "the MySQL protocol library panicked on a malformed binlog packet";

/// The `SET`s a dump needs first: heartbeat, MariaDB's capability and GTID
/// start state.
fn dump_setup(
    flavor: Flavor,
    from: &DumpFrom,
    heartbeat: Duration,
) -> Result<Vec<String>, SourceError> {
    let hb_ns = heartbeat.as_nanos().min(u128::from(u32::MAX) * 1_000_000) as u64;
    let mut setup = vec![format!("SET @master_heartbeat_period = {hb_ns}")];
    if flavor == Flavor::MariaDb {
        setup.push("SET @mariadb_slave_capability = 4".into());
    }
    if let DumpFrom::Gtid(g) = from {
        if flavor == Flavor::MariaDb {
            if !g
                .chars()
                .all(|c| c.is_ascii_digit() || c == '-' || c == ',')
            {
                return Err(SourceError::Config(format!("bad MariaDB GTID list `{g}`")));
            }
            setup.push(format!("SET @slave_connect_state = '{g}'"));
            setup.push("SET @slave_gtid_strict_mode = 0".into());
        }
    }
    Ok(setup)
}

/// A dump request's file name, offset and MySQL GTID set.
type Target = (Vec<u8>, u64, Option<Vec<mysql_async::Sid<'static>>>);

/// The dump's file and offset (a GTID dump: none, and MySQL's GTID set).
fn dump_target(flavor: Flavor, from: &DumpFrom) -> Result<Target, SourceError> {
    Ok(match from {
        DumpFrom::File { file, offset } => (file.as_bytes().to_vec(), *offset, None),
        DumpFrom::Gtid(g) => {
            let mut sids = None;
            if flavor == Flavor::MySql {
                let mut v = Vec::new();
                for part in g.split(',') {
                    let sid: mysql_async::Sid<'static> = part.trim().parse().map_err(|e| {
                        SourceError::Config(format!("bad MySQL GTID set `{part}`: {e:?}"))
                    })?;
                    v.push(sid);
                }
                sids = Some(v);
            }
            (Vec::new(), 4, sids)
        }
    })
}

fn describe(from: &DumpFrom) -> String {
    match from {
        DumpFrom::File { file, offset } => format!("{file}:{offset}"),
        DumpFrom::Gtid(g) => format!("gtid:{g}"),
    }
}

/// Ask for the binlog. With [`DumpReader::Auto`], on a connection our own reader
/// can open (plain TCP, native or cached-SHA2 login), the dump runs on a
/// new connection of its own and `conn` is closed; otherwise on `conn`
/// through mysql_async.
#[allow(clippy::too_many_arguments)]
pub async fn start_dump(
    mut conn: Conn,
    opts: &mysql_async::Opts,
    via: DumpReader,
    flavor: Flavor,
    server_id: u32,
    from: &DumpFrom,
    heartbeat: Duration,
    read_timeout: Duration,
    connect_timeout: Duration,
) -> Result<DumpStream, SourceError> {
    let setup = dump_setup(flavor, from, heartbeat)?;
    let what = describe(from);
    let (file, offset, sids) = dump_target(flavor, from)?;
    if via == DumpReader::Auto {
        let mut req = BinlogRequest::new(server_id)
            .with_filename(&file[..])
            .with_pos(offset);
        if let Some(sids) = &sids {
            req = req.with_use_gtid(true).with_sids(sids.iter().cloned());
        }
        // Bounded as mysql_async's connect is.
        let started = tokio::time::timeout(
            connect_timeout,
            RawDump::start(opts, &setup, server_id, req, &what),
        )
        .await
        .unwrap_or_else(|_| {
            Err(Start::Failed(SourceError::Transient(format!(
                "no answer from the MySQL server within {connect_timeout:?}"
            ))))
        });
        match started {
            Ok(raw) => {
                // The queries before the dump were on `conn`; it is done
                // (a server that does not answer the goodbye does not hold
                // the stream up).
                let _ = tokio::time::timeout(connect_timeout, conn.disconnect()).await;
                return Ok(DumpStream::new(
                    Reader::Raw(Box::new(raw)),
                    what,
                    read_timeout,
                ));
            }
            Err(Start::Unsupported(why)) => {
                tracing::info!(%why, "reading the binlog dump through mysql_async");
            }
            Err(Start::Failed(e)) => {
                tracing::warn!(error = %e, "our binlog dump reader could not start; reading through mysql_async");
            }
        }
    }
    for q in &setup {
        conn.query_drop(q).await.map_err(|e| map_err(e, q))?;
    }
    let mut req = BinlogStreamRequest::new(server_id)
        .with_filename(&file)
        .with_pos(offset);
    if let Some(sids) = sids {
        req = req.with_gtid().with_gtid_set(sids);
    }
    let stream = conn
        .get_binlog_stream(req)
        .await
        .map_err(|e| map_err(e, &what))?;
    Ok(DumpStream::new(
        Reader::Driver(Some(stream)),
        what,
        read_timeout,
    ))
}

#[cfg(test)]
mod tests {
    use super::{certificate_name, purged_before};

    #[test]
    fn only_a_lower_number_of_the_same_series_counts_as_purged() {
        assert!(purged_before("binlog.000002", "binlog.000010"));
        assert!(!purged_before("binlog.000010", "binlog.000010"));
        assert!(!purged_before("binlog.000011", "binlog.000010"));
        assert!(!purged_before("other.000001", "binlog.000010"));
        assert!(!purged_before("binlog", "binlog.000010"));
        assert!(!purged_before("binlog.x", "binlog.000010"));
    }

    #[test]
    fn the_first_name_a_certificate_lists_is_read_from_the_rustls_error() {
        let m = "invalid peer certificate: certificate not valid for name \"localhost\"; certificate is only valid for IpAddress(127.0.0.1)";
        assert_eq!(certificate_name(m).as_deref(), Some("127.0.0.1"));
        let m = "invalid peer certificate: certificate not valid for name \"10.0.0.1\"; certificate is only valid for DnsName(\"*.example\"), DnsName(\"db.example\") or IpAddress(1.2.3.4)";
        assert_eq!(certificate_name(m).as_deref(), Some("db.example"));
        let m = "invalid peer certificate: certificate not valid for name \"a\"; certificate is not valid for any names (according to its subjectAltName extension)";
        assert_eq!(certificate_name(m), None);
        assert_eq!(
            certificate_name("invalid peer certificate: UnknownIssuer"),
            None
        );
    }
}
