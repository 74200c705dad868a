//! Canal `FlatMessage` JSON, as Flink's `canal-json` reads it.
//!
//! One row per message (Canal batches several rows of one statement into
//! `data[]`; one row per message lets each row be partitioned by its key):
//!
//! ```json
//! {"data":[{"id":"1","name":"a"}],"database":"shop","es":<commit ms>,"gtid":"0-1-42",
//!  "id":0,"isDdl":false,"mysqlType":{"id":"int(11)","name":"varchar(20)"},
//!  "old":[{"name":"b"}]|null,"pkNames":["id"]|null,"sql":"",
//!  "sqlType":{"id":4,"name":12},"table":"orders","ts":<processing ms>,"type":"UPDATE"}
//! ```
//!
//! - `type`: `INSERT` (also for snapshot reads), `UPDATE`, `DELETE`.
//! - `data[0]`: the row after the change; for `DELETE` the deleted row.
//! - `old[0]`: for `UPDATE` only, the **changed** columns with their values
//!   before the change (a column that changed from NULL appears as `null`;
//!   Flink's reader treats a null in `old` as "unchanged", a Canal-format
//!   limitation). `null` for INSERT and DELETE.
//! - `pkNames`: the table's primary key columns, `null` without one.
//! - `mysqlType`: the column type as MySQL prints it; `sqlType`: its
//!   `java.sql.Types` code (unsigned types widen: TINYINT UNSIGNED ->
//!   SMALLINT 5, INT UNSIGNED -> BIGINT -5, BIGINT UNSIGNED -> DECIMAL 3).
//! - `es`: commit time, `ts`: processing time (ms); `id` is always 0.
//!
//! Values are JSON strings, as in Canal (Flink parses numbers, dates and
//! base64 bytes from strings), or `null`:
//!
//! | MySQL                          | JSON string                                  |
//! |--------------------------------|----------------------------------------------|
//! | integers, FLOAT, DOUBLE        | decimal text, `"-42"`, `"18446744073709551615"`, `"0.1"` |
//! | DECIMAL                        | exact text with declared scale, `"-1234.5600"` |
//! | BIT(n)                         | the value as decimal text, `"5"`             |
//! | YEAR                           | `"2024"` (`"0000"` for zero)                 |
//! | DATE, DATETIME                 | SQL text, zero dates kept: `"0000-00-00 00:00:00"` (declare STRING in Flink for zero dates) |
//! | TIME                           | `"-838:59:59.000000"` (sign, hours > 23 and fsp digits kept) |
//! | TIMESTAMP                      | UTC SQL text `"2024-02-29 12:45:00"`; zero `"0000-00-00 00:00:00"` |
//! | CHAR, VARCHAR, TEXT, ENUM      | the text                                     |
//! | SET                            | members comma-separated, `"a,c"`             |
//! | BINARY, VARBINARY, BLOB        | base64 (Canal itself writes ISO-8859-1 text; base64 is what Flink BYTES reads) |
//! | JSON                           | the JSON text                                |
//! | GEOMETRY                       | base64 of MySQL's stored form (4-byte SRID + WKB) |
//!
//! Schema changes go to the schema topic: key `{"database":"shop"}`, value
//! as above with `"isDdl":true`, `"sql":"<statement>"`, `data`/`old`/
//! `mysqlType`/`sqlType`/`pkNames` null, `table` the named table, and `type`
//! by Canal's event types: `CREATE`, `ALTER`, `ERASE` (DROP TABLE),
//! `RENAME`, `TRUNCATE`, `CINDEX`, `DINDEX`, else `QUERY`. (Flink's reader
//! fails on DDL types other than CREATE, which is why DDL never goes to row
//! topics.)

use super::json::{float_text, JsonWriter};
use super::{need_after, need_before, DdlKind, DdlTarget, EncodeContext, FieldNames, FormatError};
use crate::event::{Column, ColumnKind, Op, RowChange, SchemaChange, TableSchema, TxnInfo, Value};

pub(crate) fn encode_row(
    row: &RowChange,
    txn: &TxnInfo,
    ctx: &EncodeContext<'_>,
    names: &FieldNames,
) -> Result<Vec<u8>, FormatError> {
    let t = &row.table;
    let (data, old, ty) = match row.op {
        Op::Insert | Op::Read => (need_after(row)?, None, "INSERT"),
        Op::Update => (need_after(row)?, Some(need_before(row)?), "UPDATE"),
        Op::Delete => (need_before(row)?, None, "DELETE"),
    };
    let mut w = JsonWriter::with_capacity(256 + 64 * t.columns.len());
    w.begin_object();
    w.lit_key("data");
    w.begin_array();
    w.begin_object();
    for (i, (col, v)) in t.columns.iter().zip(data).enumerate() {
        names.write_key(&mut w, i, &col.name);
        write_value(&mut w, v);
    }
    w.end_object();
    w.end_array();
    write_header(&mut w, &t.database, txn, false);
    w.lit_key("mysqlType");
    w.begin_object();
    for (i, col) in t.columns.iter().enumerate() {
        names.write_key(&mut w, i, &col.name);
        w.string(&col.sql_type);
    }
    w.end_object();
    w.lit_key("old");
    match old {
        None => w.null(),
        Some(before) => {
            w.begin_array();
            w.begin_object();
            for (i, ((col, b), a)) in t.columns.iter().zip(before).zip(data).enumerate() {
                if b != a {
                    names.write_key(&mut w, i, &col.name);
                    write_value(&mut w, b);
                }
            }
            w.end_object();
            w.end_array();
        }
    }
    w.lit_key("pkNames");
    write_pk_names(&mut w, t);
    w.lit_key("sql");
    w.lit_string("");
    w.lit_key("sqlType");
    w.begin_object();
    for (i, col) in t.columns.iter().enumerate() {
        names.write_key(&mut w, i, &col.name);
        w.i64(sql_type(col));
    }
    w.end_object();
    w.lit_key("table");
    w.string(&t.table);
    w.lit_key("ts");
    w.u64(ctx.now_ms);
    w.lit_key("type");
    w.lit_string(ty);
    w.end_object();
    Ok(w.into_bytes())
}

pub(crate) fn encode_ddl(
    ddl: &SchemaChange,
    target: &DdlTarget,
    txn: &TxnInfo,
    ctx: &EncodeContext<'_>,
) -> (Vec<u8>, Vec<u8>) {
    let mut k = JsonWriter::with_capacity(48);
    k.begin_object();
    k.lit_key("database");
    k.string(&target.database);
    k.end_object();

    let mut w = JsonWriter::with_capacity(256 + ddl.statement.len());
    w.begin_object();
    w.lit_key("data");
    w.null();
    write_header(&mut w, &target.database, txn, true);
    for key in ["mysqlType", "old", "pkNames"] {
        w.key(key);
        w.null();
    }
    w.lit_key("sql");
    w.string(&ddl.statement);
    w.lit_key("sqlType");
    w.null();
    w.lit_key("table");
    w.string(&target.table);
    w.lit_key("ts");
    w.u64(ctx.now_ms);
    w.lit_key("type");
    w.string(ddl_type(target.kind));
    w.end_object();
    (k.into_bytes(), w.into_bytes())
}

/// `database`, `es`, `gtid`, `id`, `isDdl` (alphabetical, as Canal prints them).
fn write_header(w: &mut JsonWriter, database: &str, txn: &TxnInfo, is_ddl: bool) {
    w.lit_key("database");
    w.string(database);
    w.lit_key("es");
    w.u64(txn.ts_ms);
    w.lit_key("gtid");
    w.string(txn.gtid.as_deref().unwrap_or(""));
    w.lit_key("id");
    w.u64(0);
    w.lit_key("isDdl");
    w.bool(is_ddl);
}

fn write_pk_names(w: &mut JsonWriter, t: &TableSchema) {
    if t.primary_key.is_empty() {
        w.null();
        return;
    }
    w.begin_array();
    for &i in &t.primary_key {
        if let Some(c) = t.columns.get(i) {
            w.string(&c.name);
        }
    }
    w.end_array();
}

fn ddl_type(kind: DdlKind) -> &'static str {
    match kind {
        DdlKind::CreateTable => "CREATE",
        DdlKind::AlterTable => "ALTER",
        DdlKind::DropTable => "ERASE",
        DdlKind::RenameTable => "RENAME",
        DdlKind::TruncateTable => "TRUNCATE",
        DdlKind::CreateIndex => "CINDEX",
        DdlKind::DropIndex => "DINDEX",
        DdlKind::CreateDatabase
        | DdlKind::DropDatabase
        | DdlKind::AlterDatabase
        | DdlKind::Other => "QUERY",
    }
}

/// `java.sql.Types` code of a column, widened for unsigned types as Canal does.
pub fn sql_type(col: &Column) -> i64 {
    use ColumnKind::*;
    const BIT: i64 = -7;
    const TINYINT: i64 = -6;
    const SMALLINT: i64 = 5;
    const INTEGER: i64 = 4;
    const BIGINT: i64 = -5;
    const REAL: i64 = 7;
    const DOUBLE: i64 = 8;
    const DECIMAL: i64 = 3;
    const CHAR: i64 = 1;
    const VARCHAR: i64 = 12;
    const DATE: i64 = 91;
    const TIME: i64 = 92;
    const TIMESTAMP: i64 = 93;
    const BINARY: i64 = -2;
    const VARBINARY: i64 = -3;
    const BLOB: i64 = 2004;
    const CLOB: i64 = 2005;
    let u = col.unsigned;
    match col.kind {
        TinyInt => {
            if u {
                SMALLINT
            } else {
                TINYINT
            }
        }
        SmallInt => {
            if u {
                INTEGER
            } else {
                SMALLINT
            }
        }
        MediumInt => INTEGER,
        Int => {
            if u {
                BIGINT
            } else {
                INTEGER
            }
        }
        BigInt => {
            if u {
                DECIMAL
            } else {
                BIGINT
            }
        }
        Float => REAL,
        Double => DOUBLE,
        Decimal => DECIMAL,
        Bit => BIT,
        Year => VARCHAR,
        Date => DATE,
        Time => TIME,
        DateTime | Timestamp => TIMESTAMP,
        Char | Enum | Set => CHAR,
        VarChar | Json => VARCHAR,
        Text => CLOB,
        Binary | Geometry => BINARY,
        VarBinary => VARBINARY,
        Blob => BLOB,
    }
}

/// One column value in Canal's mapping: text or null (see the module doc).
pub(crate) fn write_value(w: &mut JsonWriter, v: &Value) {
    match v {
        Value::Null => w.null(),
        Value::Int(n) => w.i64_text(*n),
        Value::UInt(n) => w.u64_text(*n),
        Value::Float(x) => w.string(&float_text(*x, f64::from(x.abs()))),
        Value::Double(x) => w.string(&float_text(*x, x.abs())),
        Value::Decimal(s) | Value::String(s) | Value::Enum(s) | Value::Json(s) => w.string(s),
        Value::Bytes(b) | Value::Geometry(b) => w.string(&super::base64(b)),
        Value::Bit { value, .. } => w.u64_text(*value),
        Value::Year(y) => w.string(&format!("{y:04}")),
        Value::Date(d) => w.date(d),
        Value::Time(t) => w.time(t),
        Value::DateTime(dt) => w.datetime(dt),
        Value::Timestamp { secs, micros, fsp } => {
            w.datetime(&super::timestamp_parts(*secs, *micros, *fsp))
        }
        Value::Set(members) => w.string(&members.join(",")),
    }
}
