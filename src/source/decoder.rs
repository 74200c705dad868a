//! The event decoder: raw binlog events in, [`ChangeEvent`]s out, with the
//! position of every row.
//!
//! It knows nothing about the network, so the same code decodes a live
//! stream, a binlog file (the benchmark) and fuzzed bytes.
//!
//! Invariants (see DESIGN.md, "Positions"):
//! - a transaction starts at its GTID event, or its BEGIN (or standalone
//!   QUERY) when the server writes no GTIDs; rows carry that start offset,
//!   the GTID state *before* the transaction and their index in it;
//! - the index counts every event delivered for the transaction (rows of
//!   included tables and schema changes), so resuming at `(start, n)`
//!   skips exactly the first `n` of them again;
//! - `Commit` carries the position after the transaction (offset of the
//!   next event, row 0, GTID state including the transaction).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::event::{ChangeEvent, EventKind, Position, RowChange, SchemaChange, TxnInfo};

use super::bytes::Reader;
use super::charset::Charsets;
use super::error::{DecodeError, SourceError};
use super::events::{self, t, Header, HEADER_LEN};
use super::filter::TableFilter;
use super::gtid::{Gtid, GtidState};
use super::rows;
use super::table_map::{self, TableInfo};

struct Txn {
    file: Arc<str>,
    offset: u64,
    gtid_before: Option<Arc<str>>,
    gtid: Option<Gtid>,
    info: Arc<TxnInfo>,
    /// Saw BEGIN: the transaction ends at XID/COMMIT, not after one statement.
    begun: bool,
    /// Events delivered (or skipped on resume) so far.
    index: u64,
    /// Events to skip at the start (resume inside this transaction).
    skip: u64,
}

struct CachedTable {
    raw: Vec<u8>,
    info: Arc<TableInfo>,
}

/// Turns raw events (header + body + checksum) into change events.
pub struct Decoder {
    file: Arc<str>,
    checksum: bool,
    post_header_lens: Vec<u8>,
    tables: HashMap<u64, CachedTable>,
    charsets: Arc<Charsets>,
    filter: TableFilter,
    gtid: Option<GtidState>,
    /// `gtid` as text, made once per change of state (not per transaction).
    gtid_text: Option<Arc<str>>,
    txn: Option<Txn>,
    resume: Option<Position>,
    /// Position after the last complete transaction or skipped event.
    next: Position,
    out: VecDeque<ChangeEvent>,
    /// Rows decoded (delivered or skipped), for statistics.
    pub rows_seen: u64,
}

impl Decoder {
    /// `checksum`: whether events before the first FORMAT_DESCRIPTION carry CRC32.
    pub fn new(charsets: Arc<Charsets>, filter: TableFilter, checksum: bool) -> Decoder {
        Decoder {
            file: "".into(),
            checksum,
            post_header_lens: Vec::new(),
            tables: HashMap::new(),
            charsets,
            filter,
            gtid: None,
            gtid_text: None,
            txn: None,
            resume: None,
            next: Position::new("", 4),
            out: VecDeque::new(),
            rows_seen: 0,
        }
    }

    /// Start at `pos`: skip `pos.row` events of the transaction starting there.
    pub fn resume_at(&mut self, pos: &Position) {
        self.file = pos.file.clone();
        self.gtid = pos.gtid.as_deref().and_then(|g| match GtidState::parse(g) {
            Ok(state) => Some(state),
            Err(e) => {
                // Only a hand-edited checkpoint gets here (`checkpoint set`
                // refuses such a --gtid): rows still stream from the position.
                tracing::warn!(
                    position = %pos,
                    gtid = g,
                    error = %e,
                    "the GTID state of the resume position does not parse; streaming from \
                     the position without it: bb.gtid-state headers and checkpoints are \
                     built from the stream; set a valid one with `checkpoint set --gtid`"
                );
                None
            }
        });
        self.gtid_text = self.gtid.as_ref().map(|g| g.to_string().into());
        self.next = pos.clone();
        self.next.gtid = self.gtid_text.clone();
        self.next.row = 0;
        self.resume = (pos.row > 0).then(|| pos.clone());
        self.txn = None;
    }

    /// Set the GTID state (e.g. from `BINLOG_GTID_POS` or the start request).
    pub fn set_gtid_state(&mut self, g: Option<GtidState>) {
        self.gtid = g;
        self.gtid_text = self.gtid.as_ref().map(|g| g.to_string().into());
        self.next.gtid = self.gtid_text.clone();
    }

    pub fn set_file(&mut self, file: &str) {
        self.file = file.into();
    }

    /// Position after the last finished transaction: where a reconnect resumes
    /// when nothing of the current transaction was delivered.
    pub fn next_position(&self) -> &Position {
        &self.next
    }

    pub fn in_transaction(&self) -> bool {
        self.txn.is_some()
    }

    pub fn pop(&mut self) -> Option<ChangeEvent> {
        self.out.pop_front()
    }

    pub fn pending(&self) -> usize {
        self.out.len()
    }

    fn err(&self, offset: u64, error: DecodeError) -> SourceError {
        SourceError::Decode {
            file: self.file.to_string(),
            offset,
            error,
        }
    }

    fn post_header(&self, type_code: u8, default: u8) -> u8 {
        self.post_header_lens
            .get(usize::from(type_code).wrapping_sub(1))
            .copied()
            .unwrap_or(default)
    }

    /// Decode one event (all of its bytes, as stored in the binlog).
    pub fn feed(&mut self, raw: &[u8]) -> Result<(), SourceError> {
        let h = Header::parse(raw).map_err(|e| self.err(self.next.offset, e))?;
        tracing::trace!(header = ?h, file = %self.file, "binlog event");
        let offset = h.start_offset().unwrap_or(self.next.offset);
        let is_fde = h.type_code == t::FORMAT_DESCRIPTION;
        let verify = if is_fde {
            raw.len() >= HEADER_LEN + 5 && raw[raw.len() - 5] == 1
        } else {
            self.checksum
        };
        let body_end = if verify || is_fde {
            raw.len().saturating_sub(4)
        } else {
            raw.len()
        };
        if verify {
            match events::checksum(raw) {
                Some((found, computed)) if found != computed => {
                    return Err(SourceError::Checksum {
                        file: self.file.to_string(),
                        offset,
                        found,
                        computed,
                    })
                }
                Some(_) => {}
                None => {
                    return Err(
                        self.err(offset, DecodeError::new("event shorter than its checksum"))
                    )
                }
            }
        }
        if body_end < HEADER_LEN {
            return Err(self.err(offset, DecodeError::new("event shorter than its header")));
        }
        let body = &raw[HEADER_LEN..body_end];
        self.event(&h, offset, raw, body)
            .map_err(|e| self.err(offset, e))
    }

    fn event(
        &mut self,
        h: &Header,
        offset: u64,
        raw: &[u8],
        body: &[u8],
    ) -> Result<(), DecodeError> {
        let end = u64::from(h.log_pos);
        match h.type_code {
            t::FORMAT_DESCRIPTION => {
                // `body` still holds the algorithm byte; parse_fde wants it plus 4 bytes.
                let fde = events::parse_fde(&raw[HEADER_LEN..])?;
                self.checksum = fde.checksum_crc32;
                self.post_header_lens = fde.post_header_lens;
            }
            t::ROTATE => {
                let (name, pos) = events::parse_rotate(body)?;
                if h.flags & events::ARTIFICIAL_F == 0 || h.log_pos != 0 || *name != *self.file {
                    if *name != *self.file {
                        self.tables.clear();
                        self.file = name.into();
                    }
                    if self.txn.is_none() {
                        self.next.file = self.file.clone();
                        self.next.offset = pos;
                    }
                }
            }
            t::MARIA_GTID => {
                // A MariaDB GTID event stands for BEGIN unless it is standalone
                // (DDL): then the single following statement is the transaction.
                let (g, standalone) = events::parse_maria_gtid(body, h.server_id)?;
                self.begin(h, offset, Some(g), !standalone)?;
            }
            t::GTID | t::ANONYMOUS_GTID => {
                let g = events::parse_mysql_gtid(body, h.type_code == t::ANONYMOUS_GTID)?;
                self.begin(h, offset, g, false)?;
            }
            t::QUERY | t::MARIA_QUERY_COMPRESSED => {
                let phl = self.post_header(h.type_code, 13);
                let (db, stmt) = events::parse_query(body, phl, h.type_code == t::MARIA_QUERY_COMPRESSED)?;
                self.query(h, offset, end, db, stmt)?;
            }
            t::XID => {
                let xid = Reader::new(body).u64("xid")?;
                self.commit(h, end, Some(xid));
            }
            t::TABLE_MAP => {
                let phl = self.post_header(t::TABLE_MAP, 8);
                let id = if phl == 6 {
                    u64::from(Reader::new(body).u32("table id")?)
                } else {
                    Reader::new(body).uint_le(6, "table id")?
                };
                let reuse = self.tables.get(&id).is_some_and(|c| c.raw == body);
                if !reuse {
                    let info = table_map::parse(body, phl, &self.charsets)?;
                    self.tables.insert(
                        id,
                        CachedTable {
                            raw: body.to_vec(),
                            info: Arc::new(info),
                        },
                    );
                }
            }
            t::MARIA_GTID_LIST => {
                let s = events::parse_maria_gtid_list(body)?;
                if self.gtid.is_none() && self.txn.is_none() {
                    self.set_gtid_state(Some(s));
                }
            }
            t::PREVIOUS_GTIDS => {
                let s = events::parse_previous_gtids(body)?;
                if self.gtid.is_none() && self.txn.is_none() {
                    self.set_gtid_state(Some(s));
                }
            }
            t::INCIDENT => {
                return Err(DecodeError::new(
                    "INCIDENT event: the server lost binlog data here (e.g. a failed multi-table write); the stream cannot continue safely — re-snapshot",
                ))
            }
            t::XA_PREPARE => {
                // An XA transaction's binlog part ends at its prepare; its
                // later XA COMMIT / XA ROLLBACK is a transaction of its own.
                self.commit(h, end, None);
            }
            t::TRANSACTION_PAYLOAD => {
                return Err(DecodeError::new(
                    "TRANSACTION_PAYLOAD event: binlog_transaction_compression=ON is not supported; turn it off on the server",
                ))
            }
            t::MARIA_START_ENCRYPTION => {
                return Err(DecodeError::new("encrypted binlog events are not supported"))
            }
            code => {
                if let Some(kind) = rows::rows_kind(code) {
                    self.rows(h, offset, body, kind)?;
                } else if self.txn.is_none() && end >= 4 && h.log_pos != 0 && h.flags & events::ARTIFICIAL_F == 0 {
                    // Heartbeats, annotate rows, checkpoints ...: move the resume point past them.
                    if code != t::HEARTBEAT && code != t::HEARTBEAT_V2 {
                        self.next.offset = end;
                    }
                }
            }
        }
        Ok(())
    }

    fn begin(
        &mut self,
        h: &Header,
        offset: u64,
        gtid: Option<Gtid>,
        begun: bool,
    ) -> Result<(), DecodeError> {
        let mut skip = 0;
        if let Some(r) = self.resume.take() {
            if r.offset == offset && (*r.file == *self.file || r.file.is_empty()) {
                skip = r.row;
            } else {
                // Skipping rows of some other transaction would lose data.
                return Err(DecodeError(format!(
                    "resume position {r} names row {} of a transaction at offset {}, but the first transaction found starts at {}:{offset}; use a position taken from a delivered event",
                    r.row, r.offset, self.file
                )));
            }
        }
        self.txn = Some(Txn {
            file: self.file.clone(),
            offset,
            gtid_before: self.gtid_text.clone(),
            info: Arc::new(TxnInfo {
                gtid: gtid.as_ref().map(|g| g.to_string()),
                ts_ms: u64::from(h.timestamp) * 1000,
                server_id: h.server_id,
                xid: None,
            }),
            gtid,
            begun,
            index: 0,
            skip,
        });
        Ok(())
    }

    fn query(
        &mut self,
        h: &Header,
        offset: u64,
        end: u64,
        db: String,
        stmt: String,
    ) -> Result<(), DecodeError> {
        let word = first_keyword(&stmt);
        match word.as_str() {
            "BEGIN" => {
                match &mut self.txn {
                    Some(txn) => txn.begun = true,
                    None => self.begin(h, offset, None, true)?,
                }
                return Ok(());
            }
            "COMMIT" | "ROLLBACK" if self.txn.as_ref().is_some_and(|t| t.begun) => {
                self.commit(h, end, None);
                return Ok(());
            }
            "XA" | "SAVEPOINT" => return Ok(()),
            _ => {}
        }
        if self.txn.is_none() {
            self.begin(h, offset, None, false)?;
        }
        if matches!(
            word.as_str(),
            "CREATE" | "ALTER" | "DROP" | "RENAME" | "TRUNCATE"
        ) {
            // Table maps for a changed table are re-sent after DDL; drop stale ones.
            self.tables.clear();
            self.deliver(EventKind::Schema(SchemaChange {
                database: db,
                statement: stmt,
            }));
        }
        if self.txn.as_ref().is_some_and(|t| !t.begun) {
            self.commit(h, end, None);
        }
        Ok(())
    }

    /// Hand out one event of the current transaction (or skip it on resume).
    fn deliver(&mut self, kind: EventKind) {
        let Some(txn) = self.txn.as_mut() else { return };
        let index = txn.index;
        txn.index += 1;
        if index < txn.skip {
            return;
        }
        self.out.push_back(ChangeEvent {
            kind,
            txn: txn.info.clone(),
            position: Position {
                file: txn.file.clone(),
                offset: txn.offset,
                row: index,
                gtid: txn.gtid_before.clone(),
            },
        });
    }

    fn commit(&mut self, h: &Header, end: u64, xid: Option<u64>) {
        let Some(txn) = self.txn.take() else {
            return;
        };
        // An unknown state stays unknown (None) rather than becoming a
        // one-GTID set that would claim everything else was never applied;
        // the next file's GTID_LIST / PREVIOUS_GTIDS event makes it known.
        if let (Some(g), Some(s)) = (&txn.gtid, &mut self.gtid) {
            s.apply(g);
            self.gtid_text = Some(s.to_string().into());
        }
        let mut info = (*txn.info).clone();
        info.xid = xid;
        if info.ts_ms == 0 {
            info.ts_ms = u64::from(h.timestamp) * 1000;
        }
        self.next = Position {
            file: self.file.clone(),
            offset: if end > 0 { end } else { self.next.offset },
            row: 0,
            gtid: self.gtid_text.clone(),
        };
        self.out.push_back(ChangeEvent {
            kind: EventKind::Commit,
            txn: Arc::new(info),
            position: self.next.clone(),
        });
    }

    fn rows(
        &mut self,
        h: &Header,
        offset: u64,
        body: &[u8],
        kind: rows::RowsKind,
    ) -> Result<(), DecodeError> {
        let phl = self.post_header(h.type_code, if kind.v2 { 10 } else { 8 });
        let mut r = Reader::new(body);
        let rh = rows::read_header(&mut r, if phl == 6 { 6 } else { 8 }, kind.v2)?;
        let Some(cached) = self.tables.get(&rh.table_id) else {
            return Err(DecodeError(format!(
                "row event for table id {} without a preceding table map (the start position is inside a statement)",
                rh.table_id
            )));
        };
        let table = cached.info.clone();
        if self.txn.is_none() {
            return Err(DecodeError(format!(
                "row event at offset {offset} outside a transaction: the start position is not a transaction start"
            )));
        }
        if !self
            .filter
            .includes(&table.schema.database, &table.schema.table)
        {
            return Ok(());
        }
        let partial = h.type_code == rows::kind::PARTIAL_UPDATE;
        let mut decoded = Vec::new();
        rows::decode_rows(&mut r, kind, &table, partial, |(before, after)| {
            decoded.push((before, after));
            Ok(())
        })?;
        self.rows_seen += decoded.len() as u64;
        for (before, after) in decoded {
            self.deliver(EventKind::Row(RowChange {
                table: table.schema.clone(),
                op: kind.op,
                before,
                after,
            }));
        }
        Ok(())
    }
}

/// The first SQL keyword, upper-cased, after leading comments and spaces.
pub fn first_keyword(stmt: &str) -> String {
    let mut s = stmt.trim_start();
    loop {
        if let Some(rest) = s.strip_prefix("/*") {
            match rest.find("*/") {
                Some(i) => s = rest[i + 2..].trim_start(),
                None => return String::new(),
            }
        } else if s.starts_with("--") || s.starts_with('#') {
            match s.find('\n') {
                Some(i) => s = s[i + 1..].trim_start(),
                None => return String::new(),
            }
        } else {
            break;
        }
    }
    s.chars()
        .take_while(|c| c.is_ascii_alphabetic())
        .collect::<String>()
        .to_ascii_uppercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Log lines written under a test's own subscriber.
    #[derive(Clone, Default)]
    struct Lines(Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| std::io::Error::other("poisoned"))?
                .extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_resume_gtid_state_that_does_not_parse_is_dropped_with_a_warning() {
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let mut d = Decoder::new(
            Arc::new(Charsets::default()),
            TableFilter::new(&[], &[]),
            true,
        );
        let mut pos = Position::new("binlog.000002", 400);
        pos.gtid = Some("0-1".into());
        tracing::subscriber::with_default(subscriber, || d.resume_at(&pos));
        assert_eq!(d.next_position().gtid, None);
        let text = String::from_utf8(lines.0.lock().expect("log").clone()).expect("UTF-8");
        assert!(
            text.contains("WARN")
                && text.contains("does not parse")
                && text.contains("binlog.000002:400")
                && text.contains("0-1"),
            "{text}"
        );

        // A valid one is kept, and says nothing.
        let lines_before = text.len();
        pos.gtid = Some("0-1-7".into());
        d.resume_at(&pos);
        assert_eq!(d.next_position().gtid.as_deref(), Some("0-1-7"));
        assert_eq!(lines.0.lock().expect("log").len(), lines_before);
    }

    #[test]
    fn keywords_skip_comments() {
        assert_eq!(first_keyword("/* x */ alter table t"), "ALTER");
        assert_eq!(first_keyword("-- c\n  create table t"), "CREATE");
        assert_eq!(first_keyword("BEGIN"), "BEGIN");
        assert_eq!(first_keyword("/* unterminated"), "");
    }
}
