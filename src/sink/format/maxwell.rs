//! Maxwell's daemon JSON, as Flink's `maxwell-json` reads it.
//!
//! ```json
//! {"database":"shop","table":"orders","type":"update","ts":<commit seconds>,
//!  "xid":1234,"xoffset":0,                       // rows before the last of the transaction
//!  "commit":true,                                // instead of xoffset, on the last row
//!  "position":"binlog.000003:4567","server_id":1,
//!  "data":{"id":1,"name":"b"},"old":{"name":"a"}}
//! ```
//!
//! - `type`: `insert` (also for snapshot reads: Maxwell's `bootstrap-insert`
//!   is not read by Flink), `update`, `delete`.
//! - `data`: the row after the change; for `delete` the deleted row.
//! - `old`: for `update` only, the **changed** columns with their previous
//!   values (a column that was NULL appears as `null`, which Flink's reader
//!   takes as "unchanged": a Maxwell-format limitation).
//! - `xid`: the commit's XID. The binlog gives it only at the commit, and
//!   rows are not buffered until then, so it is on the last row (the one
//!   with `commit: true`) and on earlier rows only if the source already
//!   knew it; left out when there is none (non-transactional engines).
//!   `commit: true` marks the last row of a transaction, the other rows
//!   carry `xoffset` (their index in it).
//! - `position`: the source position of the transaction (`FILE:OFFSET`).
//!
//! Value mapping (Maxwell's own types):
//!
//! | MySQL                         | JSON                                           |
//! |-------------------------------|------------------------------------------------|
//! | integers                      | number, exact (BIGINT UNSIGNED up to 18446744073709551615) |
//! | FLOAT, DOUBLE                 | number (shortest text that reads back exactly) |
//! | DECIMAL                       | exact number with declared scale, `-1234.5600` |
//! | BIT(1)                        | boolean                                        |
//! | BIT(n>1)                      | number                                         |
//! | YEAR                          | number                                         |
//! | DATE, DATETIME                | SQL text, `"2024-02-29 13:45:00.120"`; zero dates kept, `"0000-00-00"` (declare STRING in Flink for them) |
//! | TIME                          | `"-838:59:59.000000"` (sign, hours > 23, fsp digits kept) |
//! | TIMESTAMP                     | UTC SQL text, as Maxwell; zero `"0000-00-00 00:00:00"` |
//! | CHAR, VARCHAR, TEXT, ENUM     | string                                         |
//! | SET                           | array of member names, `["a","c"]`             |
//! | BINARY, VARBINARY, BLOB       | base64 string, as Maxwell                      |
//! | JSON                          | string holding the JSON text                   |
//! | GEOMETRY                      | base64 of MySQL's stored form (4-byte SRID + WKB); Maxwell prints WKT |
//!
//! Schema changes go to the schema topic, key `{"database":"shop"}`, value
//! `{"type":"table-alter","database":"shop","table":"orders",
//! "sql":"ALTER TABLE ..","ts":<seconds>,"position":".."}` with Maxwell's
//! types `database-create|drop|alter`, `table-create|drop|alter` (RENAME,
//! TRUNCATE and index statements are `table-alter`). Maxwell's `def`/`old`
//! table definitions are not produced. Other statements (views, grants,
//! ...) produce no message, as with Maxwell.

use super::json::JsonWriter;
use super::{need_after, need_before, DdlKind, DdlTarget, EncodeContext, FieldNames, FormatError};
use crate::event::{Op, Position, RowChange, SchemaChange, TxnInfo, Value};

pub(crate) fn encode_row(
    row: &RowChange,
    txn: &TxnInfo,
    pos: &Position,
    ctx: &EncodeContext<'_>,
    names: &FieldNames,
) -> Result<Vec<u8>, FormatError> {
    let t = &row.table;
    let (data, old, ty) = match row.op {
        Op::Insert | Op::Read => (need_after(row)?, None, "insert"),
        Op::Update => (need_after(row)?, Some(need_before(row)?), "update"),
        Op::Delete => (need_before(row)?, None, "delete"),
    };
    let mut w = JsonWriter::with_capacity(192 + 48 * t.columns.len());
    w.begin_object();
    w.lit_key("database");
    w.string(&t.database);
    w.lit_key("table");
    w.string(&t.table);
    w.lit_key("type");
    w.lit_string(ty);
    w.lit_key("ts");
    w.u64(txn.ts_ms / 1000);
    if let Some(xid) = txn.xid {
        w.lit_key("xid");
        w.u64(xid);
    }
    if ctx.last_in_txn {
        w.lit_key("commit");
        w.bool(true);
    } else {
        w.lit_key("xoffset");
        w.u64(pos.row);
    }
    w.lit_key("position");
    w.string(&format!("{}:{}", pos.file, pos.offset));
    w.lit_key("server_id");
    w.u64(u64::from(txn.server_id));
    w.lit_key("data");
    w.begin_object();
    for (i, (col, v)) in t.columns.iter().zip(data).enumerate() {
        names.write_key(&mut w, i, &col.name);
        write_value(&mut w, v);
    }
    w.end_object();
    if let Some(before) = old {
        w.lit_key("old");
        w.begin_object();
        for (i, ((col, b), a)) in t.columns.iter().zip(before).zip(data).enumerate() {
            if b != a {
                names.write_key(&mut w, i, &col.name);
                write_value(&mut w, b);
            }
        }
        w.end_object();
    }
    w.end_object();
    Ok(w.into_bytes())
}

pub(crate) fn encode_ddl(
    ddl: &SchemaChange,
    target: &DdlTarget,
    txn: &TxnInfo,
    pos: &Position,
) -> Option<(Vec<u8>, Vec<u8>)> {
    let ty = match target.kind {
        DdlKind::CreateDatabase => "database-create",
        DdlKind::DropDatabase => "database-drop",
        DdlKind::AlterDatabase => "database-alter",
        DdlKind::CreateTable => "table-create",
        DdlKind::DropTable => "table-drop",
        DdlKind::AlterTable
        | DdlKind::RenameTable
        | DdlKind::TruncateTable
        | DdlKind::CreateIndex
        | DdlKind::DropIndex => "table-alter",
        DdlKind::Other => return None,
    };
    let mut k = JsonWriter::with_capacity(48);
    k.begin_object();
    k.lit_key("database");
    k.string(&target.database);
    k.end_object();

    let mut w = JsonWriter::with_capacity(192 + ddl.statement.len());
    w.begin_object();
    w.lit_key("type");
    w.string(ty);
    w.lit_key("database");
    w.string(&target.database);
    if !target.table.is_empty() {
        w.lit_key("table");
        w.string(&target.table);
    }
    w.lit_key("sql");
    w.string(&ddl.statement);
    w.lit_key("ts");
    w.u64(txn.ts_ms / 1000);
    w.lit_key("position");
    w.string(&format!("{}:{}", pos.file, pos.offset));
    w.end_object();
    Some((k.into_bytes(), w.into_bytes()))
}

/// One column value in Maxwell's mapping (see the module doc).
pub(crate) fn write_value(w: &mut JsonWriter, v: &Value) {
    match v {
        Value::Null => w.null(),
        Value::Int(n) => w.i64(*n),
        Value::UInt(n) => w.u64(*n),
        Value::Float(x) => w.f32(*x),
        Value::Double(x) => w.f64(*x),
        Value::Decimal(s) => w.number_text(s),
        Value::String(s) | Value::Enum(s) | Value::Json(s) => w.string(s),
        Value::Bytes(b) | Value::Geometry(b) => w.string(&super::base64(b)),
        Value::Bit { bits, value } => {
            if *bits <= 1 {
                w.bool(*value != 0)
            } else {
                w.u64(*value)
            }
        }
        Value::Year(y) => w.u64(u64::from(*y)),
        Value::Date(d) => w.date(d),
        Value::Time(t) => w.time(t),
        Value::DateTime(dt) => w.datetime(dt),
        Value::Timestamp { secs, micros, fsp } => {
            w.datetime(&super::timestamp_parts(*secs, *micros, *fsp))
        }
        Value::Set(members) => {
            w.begin_array();
            for m in members {
                w.string(m);
            }
            w.end_array();
        }
    }
}
