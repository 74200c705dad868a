//! Wire formats: pure functions from a [`ChangeEvent`]'s parts to message
//! key and value bytes.
//!
//! One module per format, each producing what the matching Flink SQL format
//! reads (`debezium-json`, `canal-json`, `maxwell-json`); each module's doc
//! lists its value mapping for every [`ColumnKind`]. This module holds what
//! they share: the encoding context, temporal text helpers, DDL
//! classification, and the dispatch on [`Format`]. Nothing here touches Kafka,
//! so golden tests can call the encoders directly.
//!
//! [`ChangeEvent`]: crate::event::ChangeEvent
//! [`ColumnKind`]: crate::event::ColumnKind

pub mod canal;
mod ddl;
pub mod debezium;
pub(crate) mod json;
pub mod maxwell;

pub use ddl::{classify_ddl, DdlKind, DdlTarget};

use crate::config::Format;
use crate::event::{Date, Position, RowChange, SchemaChange, TableSchema, TxnInfo, Value};

/// An event the format cannot encode. Definite: retrying will not help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("row of {table} has {values} values but the table has {columns} columns; the source's table metadata is out of step with the row image (check binlog_row_metadata=FULL and binlog_row_image=FULL)")]
    WidthMismatch {
        table: String,
        values: usize,
        columns: usize,
    },
    #[error("{op} row of {table} lacks its {image} image; the source must send it (binlog_row_image=FULL)")]
    MissingImage {
        table: String,
        op: &'static str,
        image: &'static str,
    },
}

/// Facts an encoder needs besides the event itself. Passing `now_ms` in
/// keeps the encoders pure (golden files are stable).
#[derive(Debug, Clone)]
pub struct EncodeContext<'a> {
    /// Pipeline name (Debezium `source.name`).
    pub pipeline: &'a str,
    /// Processing time, ms since the Unix epoch (Debezium `ts_ms`, Canal `ts`).
    pub now_ms: u64,
    /// This row is the last of its transaction (Maxwell `commit: true`).
    pub last_in_txn: bool,
    /// Debezium: wrap messages as `{"schema": ..., "payload": ...}`.
    pub schema_include: bool,
}

/// Every column name of one table shape as a JSON object key, escaped,
/// quoted and with its colon (`"id":`), made once per shape so rows do not
/// escape the same names again (the sink keeps one per table route and
/// makes a new one when the table's shape changes).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldNames {
    bytes: Vec<u8>,
    /// End of each column's key in `bytes`.
    ends: Vec<usize>,
}

impl FieldNames {
    pub fn new(table: &TableSchema) -> Self {
        let mut bytes = Vec::with_capacity(table.columns.len() * 12);
        let mut ends = Vec::with_capacity(table.columns.len());
        for col in &table.columns {
            json::escape_into(&mut bytes, &col.name);
            bytes.push(b':');
            ends.push(bytes.len());
        }
        FieldNames { bytes, ends }
    }

    /// Whether these names were made for a table with this many columns
    /// (a mismatch makes the encoders escape the names themselves).
    fn fits(&self, table: &TableSchema) -> bool {
        self.ends.len() == table.columns.len()
    }

    /// The object key of column `i`, its name escaped when `i` is out of range.
    pub(crate) fn write_key(&self, w: &mut json::JsonWriter, i: usize, name: &str) {
        let start = match i {
            0 => Some(0),
            _ => self.ends.get(i - 1).copied(),
        };
        match (start, self.ends.get(i)) {
            (Some(a), Some(&b)) => w.quoted_key(&self.bytes[a..b]),
            _ => w.key(name),
        }
    }
}

/// A row message body; the key is encoded separately by [`encode_key`].
pub fn encode_row(
    format: Format,
    row: &RowChange,
    txn: &TxnInfo,
    pos: &Position,
    ctx: &EncodeContext<'_>,
) -> Result<Vec<u8>, FormatError> {
    encode_row_named(format, row, txn, pos, ctx, &FieldNames::new(&row.table))
}

/// [`encode_row`] with the table's [`FieldNames`] made beforehand (the
/// sink's hot path). Names made for another column count are not used.
pub fn encode_row_named(
    format: Format,
    row: &RowChange,
    txn: &TxnInfo,
    pos: &Position,
    ctx: &EncodeContext<'_>,
    names: &FieldNames,
) -> Result<Vec<u8>, FormatError> {
    check_width(row)?;
    let fresh;
    let names = if names.fits(&row.table) {
        names
    } else {
        fresh = FieldNames::new(&row.table);
        &fresh
    };
    match format {
        Format::Debezium => debezium::encode_row(row, txn, pos, ctx, names),
        Format::Canal => canal::encode_row(row, txn, ctx, names),
        Format::Maxwell => maxwell::encode_row(row, txn, pos, ctx, names),
    }
}

/// The message key of a row: a JSON object of the key columns, values
/// mapped as the format maps them, e.g. `{"id":42}`.
pub fn encode_key(
    format: Format,
    table: &TableSchema,
    values: &[Value],
    key_columns: &[usize],
) -> Vec<u8> {
    encode_key_named(format, table, values, key_columns, &FieldNames::default())
}

/// [`encode_key`] with the table's [`FieldNames`] made beforehand.
pub fn encode_key_named(
    format: Format,
    table: &TableSchema,
    values: &[Value],
    key_columns: &[usize],
    names: &FieldNames,
) -> Vec<u8> {
    let cached = names.fits(table);
    let mut w = json::JsonWriter::with_capacity(32);
    w.begin_object();
    for &i in key_columns {
        if let (Some(col), Some(v)) = (table.columns.get(i), values.get(i)) {
            if cached {
                names.write_key(&mut w, i, &col.name);
            } else {
                w.key(&col.name);
            }
            match format {
                Format::Debezium => debezium::write_value(&mut w, col, v),
                Format::Canal => canal::write_value(&mut w, v),
                Format::Maxwell => maxwell::write_value(&mut w, v),
            }
        }
    }
    w.end_object();
    w.into_bytes()
}

/// A schema-change message (key, value) for the schema topic, or `None`
/// when the format has no message for this statement (Maxwell emits DDL only
/// for database and table statements).
pub fn encode_ddl(
    format: Format,
    ddl: &SchemaChange,
    txn: &TxnInfo,
    pos: &Position,
    ctx: &EncodeContext<'_>,
) -> Option<(Vec<u8>, Vec<u8>)> {
    let target = classify_ddl(&ddl.statement, &ddl.database);
    match format {
        Format::Debezium => Some(debezium::encode_ddl(ddl, &target, txn, pos, ctx)),
        Format::Canal => Some(canal::encode_ddl(ddl, &target, txn, ctx)),
        Format::Maxwell => maxwell::encode_ddl(ddl, &target, txn, pos),
    }
}

fn check_width(row: &RowChange) -> Result<(), FormatError> {
    let columns = row.table.columns.len();
    for image in [&row.before, &row.after].into_iter().flatten() {
        if image.len() != columns {
            return Err(FormatError::WidthMismatch {
                table: qualified(&row.table),
                values: image.len(),
                columns,
            });
        }
    }
    Ok(())
}

pub(crate) fn qualified(t: &TableSchema) -> String {
    format!("{}.{}", t.database, t.table)
}

pub(crate) fn op_name(op: crate::event::Op) -> &'static str {
    match op {
        crate::event::Op::Insert => "insert",
        crate::event::Op::Update => "update",
        crate::event::Op::Delete => "delete",
        crate::event::Op::Read => "snapshot read",
    }
}

/// The before image, required for updates and deletes.
pub(crate) fn need_before(row: &RowChange) -> Result<&[Value], FormatError> {
    row.before
        .as_deref()
        .ok_or_else(|| FormatError::MissingImage {
            table: qualified(&row.table),
            op: op_name(row.op),
            image: "before",
        })
}

/// The after image, required for inserts, reads and updates.
pub(crate) fn need_after(row: &RowChange) -> Result<&[Value], FormatError> {
    row.after
        .as_deref()
        .ok_or_else(|| FormatError::MissingImage {
            table: qualified(&row.table),
            op: op_name(row.op),
            image: "after",
        })
}

/// A DATE with a zero year, month or day: MySQL accepts it, Flink's DATE
/// parser (`ISO_LOCAL_DATE`) does not.
pub(crate) fn is_zero_date(d: &Date) -> bool {
    d.year == 0 || d.month == 0 || d.day == 0
}

/// A TIMESTAMP as UTC wall-clock text, `YYYY-MM-DD HH:MM:SS[.f]` with `fsp`
/// fraction digits (Flink's SQL timestamp layout). `0.0` is MySQL's zero
/// timestamp and prints as `0000-00-00 00:00:00`.
#[cfg(test)]
pub(crate) fn timestamp_utc(secs: i64, micros: u32, fsp: u8) -> String {
    timestamp_parts(secs, micros, fsp).to_string()
}

/// The UTC wall-clock fields of a TIMESTAMP, printed by [`timestamp_utc`]
/// (and written straight into a message by the encoders).
pub(crate) fn timestamp_parts(secs: i64, micros: u32, fsp: u8) -> crate::event::DateTime {
    use crate::event::DateTime;
    if secs == 0 && micros == 0 {
        let zero = Date {
            year: 0,
            month: 0,
            day: 0,
        };
        return DateTime {
            date: zero,
            hour: 0,
            minute: 0,
            second: 0,
            micros: 0,
            fsp,
        };
    }
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    DateTime {
        date: Date {
            year: u16::try_from(year).unwrap_or(0),
            month,
            day,
        },
        hour: (rem / 3600) as u8,
        minute: (rem % 3600 / 60) as u8,
        second: (rem % 60) as u8,
        micros,
        fsp,
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (H. Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u8, u8) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

pub(crate) fn base64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_print_as_utc_sql_text() {
        assert_eq!(timestamp_utc(1, 0, 0), "1970-01-01 00:00:01");
        assert_eq!(
            timestamp_utc(2_147_483_647, 999_999, 6),
            "2038-01-19 03:14:07.999999"
        );
        assert_eq!(
            timestamp_utc(951_782_400, 120_000, 3),
            "2000-02-29 00:00:00.120"
        );
        assert_eq!(timestamp_utc(0, 0, 0), "0000-00-00 00:00:00");
        assert_eq!(timestamp_utc(-1, 0, 0), "1969-12-31 23:59:59");
    }

    fn table(names: &[&str]) -> TableSchema {
        use crate::event::{Column, ColumnKind};
        TableSchema {
            database: "d".into(),
            table: "t".into(),
            columns: names
                .iter()
                .map(|n| Column {
                    name: (*n).into(),
                    kind: ColumnKind::Int,
                    sql_type: "int".into(),
                    unsigned: false,
                    nullable: true,
                    precision: None,
                    scale: None,
                })
                .collect(),
            primary_key: vec![0],
        }
    }

    #[test]
    fn field_names_are_the_escaped_keys() {
        let t = table(&["id", "a\"b", "línea\n", ""]);
        let names = FieldNames::new(&t);
        let mut cached = json::JsonWriter::with_capacity(64);
        let mut escaped = json::JsonWriter::with_capacity(64);
        for w in [&mut cached, &mut escaped] {
            w.begin_object();
        }
        for (i, col) in t.columns.iter().enumerate() {
            names.write_key(&mut cached, i, &col.name);
            cached.i64(i as i64);
            escaped.key(&col.name);
            escaped.i64(i as i64);
        }
        // Out of range: the name given is escaped instead.
        names.write_key(&mut cached, 9, "x");
        cached.null();
        escaped.key("x");
        escaped.null();
        for w in [&mut cached, &mut escaped] {
            w.end_object();
        }
        let text = String::from_utf8(cached.into_bytes()).unwrap();
        assert_eq!(text, String::from_utf8(escaped.into_bytes()).unwrap());
        assert_eq!(text, r#"{"id":0,"a\"b":1,"línea\n":2,"":3,"x":null}"#);
    }

    /// Names made for another table shape are not used: every format's
    /// message is the one `encode_row` makes with fresh names.
    #[test]
    fn names_of_another_shape_are_not_used() {
        use crate::event::{Op, RowChange};
        let t = std::sync::Arc::new(table(&["id", "v"]));
        let row = RowChange {
            table: t.clone(),
            op: Op::Update,
            before: Some(vec![Value::Int(1), Value::Int(2)]),
            after: Some(vec![Value::Int(1), Value::Int(3)]),
        };
        let stale = FieldNames::new(&table(&["x", "y", "z"]));
        let txn = TxnInfo::default();
        let pos = Position::new("binlog.000001", 4);
        let ctx = EncodeContext {
            pipeline: "p",
            now_ms: 1,
            last_in_txn: true,
            schema_include: false,
        };
        for format in [Format::Debezium, Format::Canal, Format::Maxwell] {
            let fresh = encode_row(format, &row, &txn, &pos, &ctx).unwrap();
            let named = encode_row_named(format, &row, &txn, &pos, &ctx, &stale).unwrap();
            assert_eq!(
                String::from_utf8(named).unwrap(),
                String::from_utf8(fresh).unwrap()
            );
            let values = row.after.as_deref().unwrap();
            assert_eq!(
                encode_key_named(format, &t, values, &[0], &stale),
                encode_key(format, &t, values, &[0])
            );
            assert_eq!(
                encode_key_named(format, &t, values, &[0], &FieldNames::new(&t)),
                encode_key(format, &t, values, &[0])
            );
        }
    }

    #[test]
    fn zero_dates_are_recognised() {
        let d = |year, month, day| Date { year, month, day };
        assert!(is_zero_date(&d(0, 0, 0)));
        assert!(is_zero_date(&d(2024, 0, 1)));
        assert!(is_zero_date(&d(2024, 1, 0)));
        assert!(!is_zero_date(&d(2024, 1, 1)));
    }
}
