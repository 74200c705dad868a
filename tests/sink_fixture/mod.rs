//! Shared fixture for the sink tests: one table with every column kind the
//! source can produce, and insert/update/delete/read/DDL events on it.
#![allow(dead_code)]

use std::sync::Arc;

use binlog_bridge::event::{
    ChangeEvent, Column, ColumnKind, Date, DateTime, EventKind, Op, Position, RowChange,
    SchemaChange, TableSchema, Time, TxnInfo, Value,
};

fn col(name: &str, kind: ColumnKind, sql_type: &str, unsigned: bool, nullable: bool) -> Column {
    Column {
        name: name.into(),
        kind,
        sql_type: sql_type.into(),
        unsigned,
        nullable,
        precision: None,
        scale: None,
    }
}

/// `shop.all_types`: primary key `id`.
pub fn all_types_table(db: &str, table: &str) -> Arc<TableSchema> {
    use ColumnKind::*;
    let mut cols = vec![
        col("id", Int, "int(11)", false, false),
        col("ti", TinyInt, "tinyint(4)", false, true),
        col("tiu", TinyInt, "tinyint(3) unsigned", true, true),
        col("si", SmallInt, "smallint(6)", false, true),
        col("mi", MediumInt, "mediumint(9)", false, true),
        col("iu", Int, "int(10) unsigned", true, true),
        col("bi", BigInt, "bigint(20)", false, true),
        col("biu", BigInt, "bigint(20) unsigned", true, true),
        col("f", Float, "float", false, true),
        col("d", Double, "double", false, true),
        col("dec", Decimal, "decimal(10,4)", false, true),
        col("b1", Bit, "bit(1)", false, true),
        col("b12", Bit, "bit(12)", false, true),
        col("y", Year, "year(4)", false, true),
        col("dt", Date, "date", false, true),
        col("dz", Date, "date", false, true),
        col("tm", Time, "time(2)", false, true),
        col("dtm", DateTime, "datetime(3)", false, true),
        col("dtz", DateTime, "datetime", false, false),
        col("ts", Timestamp, "timestamp(6)", false, true),
        col("tsz", Timestamp, "timestamp", false, true),
        col("c", Char, "char(3)", false, true),
        col("vc", VarChar, "varchar(20)", false, true),
        col("tx", Text, "text", false, true),
        col("bin", Binary, "binary(4)", false, true),
        col("vb", VarBinary, "varbinary(8)", false, true),
        col("bl", Blob, "blob", false, true),
        col("e", Enum, "enum('small','large')", false, true),
        col("s", Set, "set('a','b','c')", false, true),
        col("j", Json, "json", false, true),
        col("g", Geometry, "point", false, true),
        col("n", Int, "int(11)", false, true),
    ];
    cols[10].precision = Some(10);
    cols[10].scale = Some(4);
    cols[11].precision = Some(1);
    cols[12].precision = Some(12);
    Arc::new(TableSchema {
        database: db.into(),
        table: table.into(),
        columns: cols,
        primary_key: vec![0],
    })
}

/// A row of `all_types` with id `id`; `variant` changes a few columns.
pub fn all_types_row(id: i64, variant: bool) -> Vec<Value> {
    let date = |year, month, day| Date { year, month, day };
    // POINT(1 2), SRID 4326, little-endian WKB.
    let mut point = 4326u32.to_le_bytes().to_vec();
    point.extend_from_slice(&[1, 1, 0, 0, 0]);
    point.extend_from_slice(&1.0f64.to_le_bytes());
    point.extend_from_slice(&2.0f64.to_le_bytes());
    vec![
        Value::Int(id),
        Value::Int(-128),
        Value::UInt(255),
        Value::Int(-32768),
        Value::Int(-8_388_608),
        Value::UInt(4_294_967_295),
        Value::Int(i64::MIN),
        Value::UInt(u64::MAX),
        Value::Float(0.1),
        Value::Double(-1.5e300),
        Value::Decimal(if variant {
            "1.0000".into()
        } else {
            "-1234.5600".into()
        }),
        Value::Bit { bits: 1, value: 1 },
        Value::Bit {
            bits: 12,
            value: 0xABC,
        },
        Value::Year(2024),
        Value::Date(date(2024, 2, 29)),
        Value::Date(date(0, 0, 0)),
        Value::Time(Time {
            negative: true,
            hours: 838,
            minutes: 59,
            seconds: 58,
            micros: 120_000,
            fsp: 2,
        }),
        Value::DateTime(DateTime {
            date: date(2024, 2, 29),
            hour: 13,
            minute: 45,
            second: 0,
            micros: 120_000,
            fsp: 3,
        }),
        Value::DateTime(DateTime {
            date: date(0, 0, 0),
            hour: 0,
            minute: 0,
            second: 0,
            micros: 0,
            fsp: 0,
        }),
        Value::Timestamp {
            secs: 1_709_214_300,
            micros: 5,
            fsp: 6,
        },
        Value::Timestamp {
            secs: 0,
            micros: 0,
            fsp: 0,
        },
        Value::String("abc".into()),
        Value::String(if variant {
            "new \"quoted\" ✓".into()
        } else {
            "Grüße, \"world\"\n".into()
        }),
        Value::String("long text".into()),
        Value::Bytes(vec![0x61, 0, 0, 0]),
        Value::Bytes(vec![0xff, 0x00, 0x7f]),
        Value::Bytes(b"blob\x00data".to_vec()),
        Value::Enum("large".into()),
        Value::Set(vec!["a".into(), "c".into()]),
        Value::Json(r#"{"k":[1,2,{"x":null}]}"#.into()),
        Value::Geometry(point),
        if variant { Value::Int(7) } else { Value::Null },
    ]
}

pub fn txn(gtid: &str, ts_ms: u64, xid: u64) -> Arc<TxnInfo> {
    Arc::new(TxnInfo {
        gtid: Some(gtid.into()),
        ts_ms,
        server_id: 1,
        xid: Some(xid),
    })
}

pub fn row_event(
    table: &Arc<TableSchema>,
    op: Op,
    before: Option<Vec<Value>>,
    after: Option<Vec<Value>>,
    txn: &Arc<TxnInfo>,
    pos: Position,
) -> ChangeEvent {
    ChangeEvent {
        kind: EventKind::Row(RowChange {
            table: table.clone(),
            op,
            before,
            after,
        }),
        txn: txn.clone(),
        position: pos,
    }
}

pub fn commit_event(txn: &Arc<TxnInfo>, pos: Position) -> ChangeEvent {
    ChangeEvent {
        kind: EventKind::Commit,
        txn: txn.clone(),
        position: pos,
    }
}

pub fn ddl_event(db: &str, statement: &str, txn: &Arc<TxnInfo>, pos: Position) -> ChangeEvent {
    ChangeEvent {
        kind: EventKind::Schema(SchemaChange {
            database: db.into(),
            statement: statement.into(),
        }),
        txn: txn.clone(),
        position: pos,
    }
}

pub fn pos(file: &str, offset: u64, row: u64) -> Position {
    Position {
        file: file.into(),
        offset,
        row,
        gtid: None,
    }
}

/// The broker the sink tests use: `BB_TEST_BROKERS`, else the dev env's
/// `BB_KAFKA_BROKERS`, else the dev env's default port.
pub fn brokers() -> String {
    std::env::var("BB_TEST_BROKERS")
        .or_else(|_| std::env::var("BB_KAFKA_BROKERS"))
        .unwrap_or_else(|_| "127.0.0.1:9092".into())
}
