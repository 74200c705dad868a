//! Debezium MySQL change-event envelope, as Flink's `debezium-json` reads it.
//!
//! Row message value (`kafka.debezium_schema = false`, the default; Flink
//! `'debezium-json.schema-include' = 'false'`):
//!
//! ```json
//! {"before":{..}|null,"after":{..}|null,
//!  "source":{"version":"binlog-bridge 0.1.0","connector":"mysql","name":"<pipeline>",
//!            "ts_ms":<commit ms>,"snapshot":"false","db":"shop","sequence":null,
//!            "table":"orders","server_id":1,"gtid":"0-1-42"|null,
//!            "file":"binlog.000003","pos":<txn start offset>,"row":<row in txn>,
//!            "thread":null,"query":null},
//!  "op":"c"|"u"|"d"|"r","ts_ms":<processing ms>,"transaction":null}
//! ```
//!
//! With `kafka.debezium_schema = true` the same object is the `payload` of
//! `{"schema":{..},"payload":{..}}` (Flink `'debezium-json.schema-include' =
//! 'true'`); the schema block describes the types below. Inserts have
//! `before: null`, deletes `after: null`, snapshot reads are `op: "r"` with
//! `source.snapshot: "true"`. No tombstones are written after deletes.
//!
//! Value mapping (Debezium with `decimal.handling.mode=string`; temporal
//! values as SQL text instead of Debezium's epoch numbers, because Flink's
//! JSON reader parses DATE/TIME/TIMESTAMP columns from text only):
//!
//! | MySQL                     | JSON                                              |
//! |---------------------------|---------------------------------------------------|
//! | TINYINT..BIGINT (signed or unsigned) | number, exact (BIGINT UNSIGNED up to 18446744073709551615: read it as DECIMAL(20,0) in Flink) |
//! | FLOAT, DOUBLE             | number (shortest text that reads back exactly)    |
//! | DECIMAL                   | string with the declared scale, `"-1234.5600"`    |
//! | BIT(1)                    | boolean                                           |
//! | BIT(n>1)                  | base64 of ceil(n/8) bytes, little-endian (Debezium `io.debezium.data.Bits`) |
//! | YEAR                      | number                                            |
//! | DATE                      | `"2024-02-29"`                                    |
//! | TIME                      | `"-838:59:59.000000"` (sign and hours beyond 23 kept; fsp digits) |
//! | DATETIME                  | `"2024-02-29 13:45:00.120"` (fsp digits)          |
//! | TIMESTAMP                 | UTC, `"2024-02-29 12:45:00"` (fsp digits)         |
//! | zero/invalid DATE, DATETIME, TIMESTAMP | `null` if the column is nullable, else the epoch (`"1970-01-01"`, `"1970-01-01 00:00:00"`), as Debezium does |
//! | CHAR, VARCHAR, TEXT, ENUM | string                                            |
//! | SET                       | string, members comma-separated, `"a,c"`          |
//! | BINARY, VARBINARY, BLOB   | base64 string                                     |
//! | JSON                      | string holding the JSON text                      |
//! | GEOMETRY                  | `{"wkb":"<base64 WKB>","srid":4326}`              |
//! | NULL                      | `null`                                            |
//!
//! Schema changes go to the schema topic as Debezium's schema-change event:
//! key `{"databaseName":"shop"}`, value `{"source":{..},"ts_ms":..,
//! "databaseName":"shop","schemaName":null,"ddl":"ALTER TABLE ..",
//! "tableChanges":[]}`.

use super::json::JsonWriter;
use super::{need_after, need_before, DdlTarget, EncodeContext, FieldNames, FormatError};
use crate::event::{
    Column, ColumnKind, Op, Position, RowChange, SchemaChange, TableSchema, TxnInfo, Value,
};

const VERSION: &str = concat!("binlog-bridge ", env!("CARGO_PKG_VERSION"));

pub(crate) fn encode_row(
    row: &RowChange,
    txn: &TxnInfo,
    pos: &Position,
    ctx: &EncodeContext<'_>,
    names: &FieldNames,
) -> Result<Vec<u8>, FormatError> {
    let (before, after, op) = match row.op {
        Op::Insert => (None, Some(need_after(row)?), "c"),
        Op::Read => (None, Some(need_after(row)?), "r"),
        Op::Update => (Some(need_before(row)?), Some(need_after(row)?), "u"),
        Op::Delete => (Some(need_before(row)?), None, "d"),
    };
    let t = &row.table;
    let mut w = JsonWriter::with_capacity(256 + 48 * t.columns.len());
    w.begin_object();
    if ctx.schema_include {
        w.lit_key("schema");
        write_schema(&mut w, t, ctx.pipeline);
        w.lit_key("payload");
        w.begin_object();
    }
    w.lit_key("before");
    write_image(&mut w, t, names, before);
    w.lit_key("after");
    write_image(&mut w, t, names, after);
    w.lit_key("source");
    write_source(
        &mut w,
        ctx.pipeline,
        txn,
        pos,
        &t.database,
        Some(&t.table),
        row.op == Op::Read,
    );
    w.lit_key("op");
    w.lit_string(op);
    w.lit_key("ts_ms");
    w.u64(ctx.now_ms);
    w.lit_key("transaction");
    w.null();
    if ctx.schema_include {
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
    ctx: &EncodeContext<'_>,
) -> (Vec<u8>, Vec<u8>) {
    let mut k = JsonWriter::with_capacity(48);
    k.begin_object();
    k.lit_key("databaseName");
    k.string(&target.database);
    k.end_object();

    let mut w = JsonWriter::with_capacity(256 + ddl.statement.len());
    w.begin_object();
    w.lit_key("source");
    let table = (!target.table.is_empty()).then_some(target.table.as_str());
    write_source(
        &mut w,
        ctx.pipeline,
        txn,
        pos,
        &target.database,
        table,
        false,
    );
    w.lit_key("ts_ms");
    w.u64(ctx.now_ms);
    w.lit_key("databaseName");
    w.string(&target.database);
    w.lit_key("schemaName");
    w.null();
    w.lit_key("ddl");
    w.string(&ddl.statement);
    w.lit_key("tableChanges");
    w.begin_array();
    w.end_array();
    w.end_object();
    (k.into_bytes(), w.into_bytes())
}

fn write_image(w: &mut JsonWriter, t: &TableSchema, names: &FieldNames, image: Option<&[Value]>) {
    match image {
        None => w.null(),
        Some(values) => {
            w.begin_object();
            for (i, (col, v)) in t.columns.iter().zip(values).enumerate() {
                names.write_key(w, i, &col.name);
                write_value(w, col, v);
            }
            w.end_object();
        }
    }
}

fn write_source(
    w: &mut JsonWriter,
    pipeline: &str,
    txn: &TxnInfo,
    pos: &Position,
    db: &str,
    table: Option<&str>,
    snapshot: bool,
) {
    w.begin_object();
    w.lit_key("version");
    w.lit_string(VERSION);
    w.lit_key("connector");
    w.lit_string("mysql");
    w.lit_key("name");
    w.string(pipeline);
    w.lit_key("ts_ms");
    w.u64(txn.ts_ms);
    w.lit_key("snapshot");
    w.lit_string(if snapshot { "true" } else { "false" });
    w.lit_key("db");
    w.string(db);
    w.lit_key("sequence");
    w.null();
    w.lit_key("table");
    match table {
        Some(t) => w.string(t),
        None => w.null(),
    }
    w.lit_key("server_id");
    w.u64(u64::from(txn.server_id));
    w.lit_key("gtid");
    match &txn.gtid {
        Some(g) => w.string(g),
        None => w.null(),
    }
    w.lit_key("file");
    w.string(&pos.file);
    w.lit_key("pos");
    w.u64(pos.offset);
    w.lit_key("row");
    w.u64(pos.row);
    w.lit_key("thread");
    w.null();
    w.lit_key("query");
    w.null();
    w.end_object();
}

/// One column value in Debezium's mapping (see the module doc).
pub(crate) fn write_value(w: &mut JsonWriter, col: &Column, v: &Value) {
    match v {
        Value::Null => w.null(),
        Value::Int(n) => w.i64(*n),
        Value::UInt(n) => w.u64(*n),
        Value::Float(x) => w.f32(*x),
        Value::Double(x) => w.f64(*x),
        Value::Decimal(s) => w.string(s),
        Value::String(s) | Value::Enum(s) | Value::Json(s) => w.string(s),
        Value::Bytes(b) => w.string(&super::base64(b)),
        Value::Bit { bits, value } => {
            if *bits <= 1 {
                w.bool(*value != 0);
            } else {
                let n = usize::from(bits.div_ceil(8));
                w.string(&super::base64(&value.to_le_bytes()[..n.min(8)]));
            }
        }
        Value::Year(y) => w.u64(u64::from(*y)),
        Value::Date(d) => {
            if super::is_zero_date(d) {
                zero_temporal(w, col, "1970-01-01")
            } else {
                w.date(d)
            }
        }
        Value::Time(t) => w.time(t),
        Value::DateTime(dt) => {
            if super::is_zero_date(&dt.date) {
                zero_temporal(w, col, "1970-01-01 00:00:00")
            } else {
                w.datetime(dt)
            }
        }
        Value::Timestamp { secs, micros, fsp } => {
            if *secs == 0 && *micros == 0 {
                zero_temporal(w, col, "1970-01-01 00:00:00")
            } else {
                w.datetime(&super::timestamp_parts(*secs, *micros, *fsp))
            }
        }
        Value::Set(members) => w.string(&members.join(",")),
        Value::Geometry(g) => {
            let (srid, wkb) = split_geometry(g);
            w.begin_object();
            w.lit_key("wkb");
            w.string(&super::base64(wkb));
            w.lit_key("srid");
            match srid {
                Some(s) => w.u64(u64::from(s)),
                None => w.null(),
            }
            w.end_object();
        }
    }
}

/// Debezium: a zero date becomes null in a nullable column, else the epoch.
fn zero_temporal(w: &mut JsonWriter, col: &Column, epoch: &str) {
    if col.nullable {
        w.null()
    } else {
        w.string(epoch)
    }
}

/// MySQL stores geometry as a 4-byte little-endian SRID then WKB.
fn split_geometry(g: &[u8]) -> (Option<u32>, &[u8]) {
    match g.get(..4) {
        Some(s) if g.len() > 4 => (Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]])), &g[4..]),
        _ => (None, g),
    }
}

/// Debezium schema type (and semantic name) of a column as we encode it.
fn column_schema(col: &Column) -> (&'static str, Option<&'static str>) {
    use ColumnKind::*;
    let u = col.unsigned;
    match col.kind {
        TinyInt => (if u { "int16" } else { "int8" }, None),
        SmallInt => (if u { "int32" } else { "int16" }, None),
        MediumInt => ("int32", None),
        Int => (if u { "int64" } else { "int32" }, None),
        BigInt => ("int64", None),
        Float => ("float32", None),
        Double => ("float64", None),
        Decimal => ("string", None),
        Bit if col.precision.unwrap_or(1) <= 1 => ("boolean", None),
        Bit => ("bytes", Some("io.debezium.data.Bits")),
        Year => ("int32", Some("io.debezium.time.Year")),
        Date | Time | DateTime | Timestamp => ("string", None),
        Char | VarChar | Text => ("string", None),
        Binary | VarBinary | Blob => ("bytes", None),
        Enum => ("string", Some("io.debezium.data.Enum")),
        Set => ("string", Some("io.debezium.data.EnumSet")),
        Json => ("string", Some("io.debezium.data.Json")),
        Geometry => ("struct", Some("io.debezium.data.geometry.Geometry")),
    }
}

fn write_field(w: &mut JsonWriter, ty: &str, optional: bool, name: Option<&str>, field: &str) {
    w.begin_object();
    w.lit_key("type");
    w.string(ty);
    w.lit_key("optional");
    w.bool(optional);
    if let Some(n) = name {
        w.lit_key("name");
        w.string(n);
    }
    w.lit_key("field");
    w.string(field);
    w.end_object();
}

fn write_row_struct(w: &mut JsonWriter, t: &TableSchema, record: &str, field: &str) {
    w.begin_object();
    w.lit_key("type");
    w.string("struct");
    w.lit_key("fields");
    w.begin_array();
    for col in &t.columns {
        let (ty, name) = column_schema(col);
        if ty == "struct" {
            w.begin_object();
            w.lit_key("type");
            w.string("struct");
            w.lit_key("fields");
            w.begin_array();
            write_field(w, "bytes", false, None, "wkb");
            write_field(w, "int32", true, None, "srid");
            w.end_array();
            w.lit_key("optional");
            w.bool(col.nullable);
            w.lit_key("name");
            w.string(name.unwrap_or("struct"));
            w.lit_key("field");
            w.string(&col.name);
            w.end_object();
        } else {
            write_field(w, ty, col.nullable, name, &col.name);
        }
    }
    w.end_array();
    w.lit_key("optional");
    w.bool(true);
    w.lit_key("name");
    w.string(record);
    w.lit_key("field");
    w.string(field);
    w.end_object();
}

fn write_schema(w: &mut JsonWriter, t: &TableSchema, pipeline: &str) {
    let record = format!("{pipeline}.{}.{}.Value", t.database, t.table);
    w.begin_object();
    w.lit_key("type");
    w.string("struct");
    w.lit_key("fields");
    w.begin_array();
    write_row_struct(w, t, &record, "before");
    write_row_struct(w, t, &record, "after");
    w.begin_object();
    w.lit_key("type");
    w.string("struct");
    w.lit_key("fields");
    w.begin_array();
    for (ty, optional, field) in [
        ("string", false, "version"),
        ("string", false, "connector"),
        ("string", false, "name"),
        ("int64", false, "ts_ms"),
        ("string", true, "snapshot"),
        ("string", false, "db"),
        ("string", true, "sequence"),
        ("string", true, "table"),
        ("int64", false, "server_id"),
        ("string", true, "gtid"),
        ("string", false, "file"),
        ("int64", false, "pos"),
        ("int32", false, "row"),
        ("int64", true, "thread"),
        ("string", true, "query"),
    ] {
        write_field(w, ty, optional, None, field);
    }
    w.end_array();
    w.lit_key("optional");
    w.bool(false);
    w.lit_key("name");
    w.string("io.debezium.connector.mysql.Source");
    w.lit_key("field");
    w.string("source");
    w.end_object();
    write_field(w, "string", false, None, "op");
    write_field(w, "int64", true, None, "ts_ms");
    write_field(w, "struct", true, None, "transaction");
    w.end_array();
    w.lit_key("optional");
    w.bool(false);
    w.lit_key("name");
    w.string(&format!("{pipeline}.{}.{}.Envelope", t.database, t.table));
    w.end_object();
}
