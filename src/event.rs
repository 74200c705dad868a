//! The seam between source and sink.
//!
//! The binlog source turns replication events into [`ChangeEvent`]s; the Kafka
//! sink turns [`ChangeEvent`]s into messages. Neither side knows the other's
//! crates: everything the sink needs (table and column metadata, typed values,
//! transaction facts, the exact source position) travels in these types.
//!
//! Values are exact: integers keep their width and sign, DECIMAL stays text,
//! temporal types keep every field (including zero dates and negative TIME),
//! bytes stay bytes. Formatting for a wire format is the sink's job.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Text of a row value: a string that keeps up to 24 bytes inline (no heap
/// allocation), derefs to `str`.
pub type Text = compact_str::CompactString;

/// One column value, decoded exactly from a row image.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    /// Signed integers of every width (TINYINT .. BIGINT).
    Int(i64),
    /// Unsigned integers of every width (TINYINT UNSIGNED .. BIGINT UNSIGNED).
    UInt(u64),
    Float(f32),
    Double(f64),
    /// DECIMAL / NUMERIC as exact text, e.g. `-1234.5600` (scale kept).
    Decimal(Text),
    /// Character data (CHAR, VARCHAR, TEXT), converted to UTF-8 from the column charset.
    String(Text),
    /// BINARY, VARBINARY, BLOB, and character data in the `binary` charset.
    Bytes(Vec<u8>),
    /// BIT(n): the value, n <= 64.
    Bit {
        bits: u16,
        value: u64,
    },
    /// YEAR: 0 or 1901..=2155.
    Year(u16),
    /// DATE, fields as stored (zero dates and zero parts allowed).
    Date(Date),
    /// TIME: possibly negative, hours up to 838.
    Time(Time),
    /// DATETIME: wall-clock, no time zone.
    DateTime(DateTime),
    /// TIMESTAMP: seconds and microseconds since the Unix epoch, UTC.
    /// `0.0` is MySQL's zero timestamp `0000-00-00 00:00:00`.
    Timestamp {
        secs: i64,
        micros: u32,
        fsp: u8,
    },
    /// ENUM member by name (empty string for the invalid-value index 0).
    Enum(Text),
    /// SET members by name, in definition order.
    Set(Vec<String>),
    /// JSON document as JSON text.
    Json(Text),
    /// GEOMETRY as stored: 4-byte SRID followed by WKB.
    Geometry(Vec<u8>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Date {
    pub year: u16,
    pub month: u8,
    pub day: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Time {
    pub negative: bool,
    pub hours: u16,
    pub minutes: u8,
    pub seconds: u8,
    pub micros: u32,
    /// Fractional-second digits declared on the column (0..=6).
    pub fsp: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateTime {
    pub date: Date,
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
    pub micros: u32,
    /// Fractional-second digits declared on the column (0..=6).
    pub fsp: u8,
}

fn write_frac(f: &mut fmt::Formatter<'_>, micros: u32, fsp: u8) -> fmt::Result {
    if fsp == 0 {
        return Ok(());
    }
    let digits = format!("{micros:06}");
    write!(f, ".{}", &digits[..usize::from(fsp.min(6))])
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.negative { "-" } else { "" };
        write!(
            f,
            "{sign}{:02}:{:02}:{:02}",
            self.hours, self.minutes, self.seconds
        )?;
        write_frac(f, self.micros, self.fsp)
    }
}

impl fmt::Display for DateTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {:02}:{:02}:{:02}",
            self.date, self.hour, self.minute, self.second
        )?;
        write_frac(f, self.micros, self.fsp)
    }
}

/// The SQL type family of a column, as the binlog's table map describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColumnKind {
    TinyInt,
    SmallInt,
    MediumInt,
    Int,
    BigInt,
    Float,
    Double,
    Decimal,
    Bit,
    Year,
    Date,
    Time,
    DateTime,
    Timestamp,
    Char,
    VarChar,
    Text,
    Binary,
    VarBinary,
    Blob,
    Enum,
    Set,
    Json,
    Geometry,
}

/// One column of a table, as known from the binlog table map (with
/// `binlog_row_metadata=FULL`).
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub name: String,
    pub kind: ColumnKind,
    /// The column type as MySQL prints it, e.g. `int unsigned`, `decimal(10,2)`,
    /// `varchar(20)`, `enum('a','b')`. Used by formats that carry the SQL type.
    pub sql_type: String,
    pub unsigned: bool,
    pub nullable: bool,
    /// Declared precision/length where one applies (DECIMAL precision, CHAR length, BIT width, fsp).
    pub precision: Option<u32>,
    /// DECIMAL scale.
    pub scale: Option<u32>,
}

/// A table's shape at the point of a row event.
#[derive(Debug, Clone, PartialEq)]
pub struct TableSchema {
    pub database: String,
    pub table: String,
    pub columns: Vec<Column>,
    /// Indexes into `columns` of the primary key, in key order. Empty if none.
    pub primary_key: Vec<usize>,
}

impl TableSchema {
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }
}

/// What happened to a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Insert,
    Update,
    Delete,
    /// A row read by a snapshot, not by the binlog.
    Read,
}

/// One row change.
#[derive(Debug, Clone, PartialEq)]
pub struct RowChange {
    pub table: Arc<TableSchema>,
    pub op: Op,
    /// Present for Update and Delete.
    pub before: Option<Vec<Value>>,
    /// Present for Insert, Update and Read.
    pub after: Option<Vec<Value>>,
}

/// A statement that changed the schema (CREATE/ALTER/DROP/RENAME/TRUNCATE ...).
#[derive(Debug, Clone, PartialEq)]
pub struct SchemaChange {
    /// The default database the statement ran in (may be empty).
    pub database: String,
    pub statement: String,
}

/// Facts about the source transaction an event belongs to.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TxnInfo {
    /// The transaction's GTID (`uuid:n` on MySQL, `domain-server-seq` on MariaDB), if any.
    pub gtid: Option<String>,
    /// Commit timestamp (binlog event header), milliseconds since the Unix epoch.
    pub ts_ms: u64,
    /// The source server that wrote the event.
    pub server_id: u32,
    /// XID of the commit, once known.
    pub xid: Option<u64>,
}

/// What a [`ChangeEvent`] carries.
#[derive(Debug, Clone, PartialEq)]
pub enum EventKind {
    Row(RowChange),
    Schema(SchemaChange),
    /// The transaction that the preceding rows belong to committed.
    /// `ChangeEvent::position` is the position right after it (row 0 of the next
    /// transaction, with the GTID state including this one).
    Commit,
}

/// The unit that crosses from source to sink.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeEvent {
    pub kind: EventKind,
    pub txn: Arc<TxnInfo>,
    /// For a row: the position *of* this row (its transaction start and its row
    /// index). Resuming at this position re-delivers this row; resuming at
    /// [`Position::next_row`] skips it.
    pub position: Position,
}

/// Where in the binlog a change is.
///
/// A position names a point inside a transaction: where the transaction starts
/// (the file and offset of its GTID or BEGIN event), the source's GTID state
/// before it, and how many of its row changes come before this point.
/// Positions of one source are totally ordered by (file sequence, offset, row).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Position {
    /// Binlog file name, e.g. `binlog.000003` (shared: a position is
    /// copied several times per row).
    pub file: Arc<str>,
    /// Byte offset in `file` of the transaction's first event.
    pub offset: u64,
    /// Row changes of that transaction before this point.
    #[serde(default)]
    pub row: u64,
    /// GTID state before the transaction: a MySQL GTID set or a MariaDB GTID list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gtid: Option<Arc<str>>,
}

impl Position {
    pub fn new(file: impl Into<Arc<str>>, offset: u64) -> Self {
        Position {
            file: file.into(),
            offset,
            row: 0,
            gtid: None,
        }
    }

    /// The position just after this row.
    pub fn next_row(&self) -> Position {
        Position {
            row: self.row + 1,
            ..self.clone()
        }
    }

    /// Appends the text form (as `Display` prints it) to `out` without
    /// going through the formatting machinery (once per message on the hot path).
    pub fn write_text(&self, out: &mut String) {
        out.push_str(&self.file);
        out.push(':');
        out.push_str(itoa::Buffer::new().format(self.offset));
        if self.row > 0 {
            out.push('+');
            out.push_str(itoa::Buffer::new().format(self.row));
        }
    }

    /// The numeric suffix of the binlog file name (`binlog.000012` -> 12).
    pub fn file_index(&self) -> Option<u64> {
        file_index(&self.file)
    }
}

/// The numeric suffix of a binlog file name (`binlog.000012` -> 12).
pub fn file_index(file: &str) -> Option<u64> {
    file.rsplit_once('.').and_then(|(_, n)| n.parse().ok())
}

impl Ord for Position {
    fn cmp(&self, other: &Self) -> Ordering {
        let by_file = match (self.file_index(), other.file_index()) {
            (Some(a), Some(b)) => a.cmp(&b),
            _ => self.file.cmp(&other.file),
        };
        by_file
            .then(self.offset.cmp(&other.offset))
            .then(self.row.cmp(&other.row))
    }
}

impl PartialOrd for Position {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Text form: `FILE:OFFSET` or `FILE:OFFSET+ROW`, e.g. `binlog.000003:4567+12`.
/// (The GTID state is not part of the text form.)
impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.offset)?;
        if self.row > 0 {
            write!(f, "+{}", self.row)?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid position `{input}`: {reason}; expected FILE:OFFSET or FILE:OFFSET+ROW, e.g. binlog.000003:4567+12")]
pub struct ParsePositionError {
    pub input: String,
    pub reason: &'static str,
}

impl FromStr for Position {
    type Err = ParsePositionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| ParsePositionError {
            input: s.to_string(),
            reason,
        };
        let (file, rest) = s.rsplit_once(':').ok_or_else(|| err("missing `:`"))?;
        if file.is_empty() {
            return Err(err("empty file name"));
        }
        let (offset, row) = match rest.split_once('+') {
            Some((o, r)) => (o, Some(r)),
            None => (rest, None),
        };
        let offset: u64 = offset.parse().map_err(|_| err("offset is not a number"))?;
        if offset < 4 {
            return Err(err("offset must be at least 4 (the binlog header)"));
        }
        let row: u64 = match row {
            Some(r) => r.parse().map_err(|_| err("row is not a number"))?,
            None => 0,
        };
        Ok(Position {
            file: file.into(),
            offset,
            row,
            gtid: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_text_is_written_as_displayed() {
        let mut out = String::from("stale");
        for p in [
            Position::new("binlog.000003", 4567),
            Position {
                row: 12,
                gtid: Some("0-1-5".into()),
                ..Position::new("binlog.000003", 4567)
            },
            Position::new("", u64::MAX),
        ] {
            out.clear();
            p.write_text(&mut out);
            assert_eq!(out, p.to_string());
        }
    }

    #[test]
    fn positions_order_by_file_number_then_offset_then_row() {
        let a: Position = "binlog.000009:900".parse().unwrap();
        let b: Position = "binlog.000010:4".parse().unwrap();
        let c: Position = "binlog.000010:4+1".parse().unwrap();
        let d: Position = "binlog.000010:120".parse().unwrap();
        assert!(a < b && b < c && c < d);
        assert_eq!(b.next_row(), c);
    }

    #[test]
    fn position_text_round_trips() {
        for s in ["binlog.000003:4567", "mysql-bin.000001:4+12"] {
            let p: Position = s.parse().unwrap();
            assert_eq!(p.to_string(), s);
        }
    }

    #[test]
    fn bad_positions_are_refused_with_reason() {
        let cases = [
            ("binlog.000003", "missing `:`"),
            (":4", "empty file name"),
            ("binlog.000003:x", "offset is not a number"),
            (
                "binlog.000003:2",
                "offset must be at least 4 (the binlog header)",
            ),
            ("binlog.000003:4+y", "row is not a number"),
        ];
        for (input, reason) in cases {
            let e = input.parse::<Position>().unwrap_err();
            assert_eq!(e.reason, reason, "{input}");
            assert!(e.to_string().contains(input));
        }
    }

    #[test]
    fn temporal_values_print_as_sql() {
        let t = Time {
            negative: true,
            hours: 838,
            minutes: 59,
            seconds: 58,
            micros: 120_000,
            fsp: 2,
        };
        assert_eq!(t.to_string(), "-838:59:58.12");
        let dt = DateTime {
            date: Date {
                year: 0,
                month: 0,
                day: 0,
            },
            hour: 0,
            minute: 0,
            second: 0,
            micros: 0,
            fsp: 0,
        };
        assert_eq!(dt.to_string(), "0000-00-00 00:00:00");
    }
}
