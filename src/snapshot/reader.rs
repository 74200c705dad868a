//! The snapshot's MariaDB side: one connection holding a consistent-snapshot
//! transaction, the table list, each table's shape from
//! `information_schema`, and primary-key chunks converted to [`Value`]s
//! exactly as the binlog source would decode the same rows.

use std::sync::Arc;
use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::Conn;

use super::{orderable, Key, KeyPart};
use crate::config::MysqlConfig;
use crate::event::{Column, ColumnKind, Date, DateTime, Position, TableSchema, Time, Value};
use crate::source::connection::{self, Flavor};
use crate::source::SourceError;

/// What stops a snapshot read.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Connection, server restart: the leader steps down and a leader retries.
    #[error("MySQL: {0}")]
    Source(#[from] SourceError),
    /// A table or server the snapshot cannot handle; retrying cannot help.
    #[error("{0}")]
    Unsupported(String),
}

fn sql(e: mysql_async::Error, what: &str) -> SnapshotError {
    SnapshotError::Source(connection::map_err(e, what))
}

/// A table ready to be read.
#[derive(Debug, Clone)]
pub struct TableInfo {
    pub schema: Arc<TableSchema>,
    /// `information_schema.TABLES.TABLE_ROWS`: an estimate.
    pub estimated_rows: u64,
    select: String,
    /// Per column: fractional digits, and enum/set members are not needed
    /// (the server sends names).
    fsp: Vec<u8>,
}

/// One connection inside `START TRANSACTION WITH CONSISTENT SNAPSHOT`.
pub struct SnapshotReader {
    conn: Conn,
    /// The binlog position exactly consistent with what this transaction sees.
    pub position: Position,
}

fn quote(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

impl SnapshotReader {
    /// Connect and open the consistent snapshot. MariaDB only (see the
    /// module doc of [`super`]).
    pub async fn open(config: &MysqlConfig) -> Result<SnapshotReader, SnapshotError> {
        let mut r = SnapshotReader::connect(config, "snapshot.mode = \"initial\"").await?;
        r.begin().await?;
        Ok(r)
    }

    /// Connect without opening a snapshot yet (`what` names the feature in
    /// the error for a MySQL server).
    pub async fn connect(
        config: &MysqlConfig,
        what: &str,
    ) -> Result<SnapshotReader, SnapshotError> {
        let mut conn = crate::source::connect(config, Duration::from_secs(10)).await?;
        let info = connection::server_info(&mut conn).await?;
        if info.flavor != Flavor::MariaDb {
            return Err(SnapshotError::Unsupported(format!(
                "{what} needs MariaDB (START TRANSACTION WITH CONSISTENT SNAPSHOT gives the binlog position of the snapshot without a lock); the server is MySQL {}, where that position needs FLUSH TABLES WITH READ LOCK (RELOAD privilege) or GTID_EXECUTED, which this version does not implement. Load the tables another way",
                info.version
            )));
        }
        for stmt in [
            "SET SESSION time_zone = '+00:00'",
            "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ",
        ] {
            conn.query_drop(stmt).await.map_err(|e| sql(e, stmt))?;
        }
        Ok(SnapshotReader {
            conn,
            position: Position::new("", 4),
        })
    }

    /// Open a consistent snapshot and return (and keep in `position`) the
    /// binlog position exactly consistent with what it sees.
    pub async fn begin(&mut self) -> Result<Position, SnapshotError> {
        let stmt = "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY";
        self.conn.query_drop(stmt).await.map_err(|e| sql(e, stmt))?;
        let status: Vec<(String, String)> = self
            .conn
            .query("SHOW STATUS LIKE 'binlog_snapshot_%'")
            .await
            .map_err(|e| sql(e, "SHOW STATUS LIKE 'binlog_snapshot_%'"))?;
        let get = |name: &str| {
            status
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        let file = get("binlog_snapshot_file").unwrap_or_default();
        let offset = get("binlog_snapshot_position").and_then(|v| v.parse::<u64>().ok());
        let (false, Some(offset)) = (file.is_empty(), offset) else {
            return Err(SnapshotError::Unsupported(
                "the server reports no binlog_snapshot_file/position: the binary log is off; set log_bin and binlog_format=ROW".into(),
            ));
        };
        self.position = Position::new(file, offset);
        Ok(self.position.clone())
    }

    /// End the snapshot transaction (its read view is released).
    pub async fn end(&mut self) -> Result<(), SnapshotError> {
        self.conn
            .query_drop("COMMIT")
            .await
            .map_err(|e| sql(e, "COMMIT"))
    }

    /// Base tables of user databases, `db.table`, in name order, that `allow` accepts.
    pub async fn tables(
        &mut self,
        allow: impl Fn(&str, &str) -> bool,
    ) -> Result<Vec<String>, SnapshotError> {
        let q = "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES \
                 WHERE TABLE_TYPE = 'BASE TABLE' AND TABLE_SCHEMA NOT IN \
                 ('mysql', 'information_schema', 'performance_schema', 'sys') \
                 ORDER BY TABLE_SCHEMA, TABLE_NAME";
        let rows: Vec<(String, String)> = self.conn.query(q).await.map_err(|e| sql(e, q))?;
        Ok(rows
            .into_iter()
            .filter(|(d, t)| allow(d, t))
            .map(|(d, t)| format!("{d}.{t}"))
            .collect())
    }

    /// The shape of `db.table`, refused if its rows cannot be read in
    /// resumable key order.
    pub async fn table(&mut self, name: &str) -> Result<TableInfo, SnapshotError> {
        let Some((db, table)) = name.split_once('.') else {
            return Err(SnapshotError::Unsupported(format!(
                "snapshot table `{name}` is not a db.table name"
            )));
        };
        let q = "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, IS_NULLABLE, NUMERIC_PRECISION, \
                 NUMERIC_SCALE, CHARACTER_MAXIMUM_LENGTH, DATETIME_PRECISION, CHARACTER_SET_NAME \
                 FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? \
                 ORDER BY ORDINAL_POSITION";
        let rows: Vec<mysql_async::Row> = self
            .conn
            .exec(q, (db, table))
            .await
            .map_err(|e| sql(e, "information_schema.COLUMNS"))?;
        if rows.is_empty() {
            return Err(SnapshotError::Unsupported(format!(
                "table `{name}` has no columns visible to the snapshot user (dropped, or no SELECT privilege: GRANT SELECT ON `{db}`.* TO the bridge user)"
            )));
        }
        let mut columns = Vec::new();
        let mut fsp = Vec::new();
        for r in rows {
            let text = |i: usize| -> String {
                r.get::<Option<String>, usize>(i)
                    .flatten()
                    .unwrap_or_default()
            };
            let num = |i: usize| -> Option<u64> { r.get::<Option<u64>, usize>(i).flatten() };
            let (col_name, data_type, column_type) = (text(0), text(1), text(2).to_lowercase());
            let binary = r.get::<Option<String>, usize>(8).flatten().is_none();
            let kind = kind_of(&data_type, binary).ok_or_else(|| {
                SnapshotError::Unsupported(format!(
                    "column {name}.{col_name}: type `{data_type}` is not supported by the snapshot; exclude the table with mysql.exclude"
                ))
            })?;
            let unsigned = column_type.contains("unsigned");
            let precision = match kind {
                ColumnKind::Decimal | ColumnKind::Bit => num(4),
                ColumnKind::Time | ColumnKind::DateTime | ColumnKind::Timestamp => num(7),
                ColumnKind::Char
                | ColumnKind::VarChar
                | ColumnKind::Binary
                | ColumnKind::VarBinary => num(6),
                _ => None,
            }
            .map(|p| p as u32);
            let scale = match kind {
                ColumnKind::Decimal => num(5).map(|s| s as u32),
                _ => None,
            };
            fsp.push(num(7).unwrap_or(0).min(6) as u8);
            columns.push(Column {
                name: col_name,
                kind,
                sql_type: sql_type(&column_type, kind),
                unsigned,
                nullable: text(3).eq_ignore_ascii_case("YES"),
                precision,
                scale,
            });
        }
        let q = "SELECT COLUMN_NAME FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = ? \
                 AND TABLE_NAME = ? AND INDEX_NAME = 'PRIMARY' ORDER BY SEQ_IN_INDEX";
        let pk_names: Vec<String> = self
            .conn
            .exec(q, (db, table))
            .await
            .map_err(|e| sql(e, "information_schema.STATISTICS"))?;
        if pk_names.is_empty() {
            return Err(SnapshotError::Unsupported(format!(
                "table `{name}` has no primary key: the snapshot reads and resumes in primary-key order; add a primary key or exclude the table with mysql.exclude"
            )));
        }
        let mut primary_key = Vec::new();
        for k in &pk_names {
            let i = columns.iter().position(|c| &c.name == k).ok_or_else(|| {
                SnapshotError::Unsupported(format!(
                    "table `{name}`: primary-key column `{k}` not among its columns"
                ))
            })?;
            if !orderable(columns[i].kind) {
                return Err(SnapshotError::Unsupported(format!(
                    "table `{name}`: primary-key column `{k}` is {}; the snapshot resumes by key order and supports integer, YEAR, DATE and DATETIME keys only; exclude the table with mysql.exclude",
                    columns[i].sql_type
                )));
            }
            primary_key.push(i);
        }
        let q = "SELECT TABLE_ROWS FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?";
        let estimated_rows: Option<Option<u64>> = self
            .conn
            .exec_first(q, (db, table))
            .await
            .map_err(|e| sql(e, "information_schema.TABLES"))?;
        let cols: Vec<String> = columns.iter().map(|c| quote(&c.name)).collect();
        let select = format!(
            "SELECT {} FROM {}.{}",
            cols.join(", "),
            quote(db),
            quote(table)
        );
        Ok(TableInfo {
            schema: Arc::new(TableSchema {
                database: db.to_string(),
                table: table.to_string(),
                columns,
                primary_key,
            }),
            estimated_rows: estimated_rows.flatten().unwrap_or(0),
            select,
            fsp,
        })
    }

    /// Up to `limit` rows with a key above `after`, in key order.
    pub async fn chunk(
        &mut self,
        t: &TableInfo,
        after: Option<&Key>,
        limit: u32,
    ) -> Result<Vec<Vec<Value>>, SnapshotError> {
        let pk: Vec<String> = t
            .schema
            .primary_key
            .iter()
            .map(|&i| quote(&t.schema.columns[i].name))
            .collect();
        let order = pk.join(", ");
        let (q, params) = match after {
            None => (
                format!("{} ORDER BY {order} LIMIT {limit}", t.select),
                Vec::new(),
            ),
            Some(key) => {
                // (a, b) > (x, y) written as a OR of ranges the optimizer uses:
                // a > x OR (a = x AND b > y).
                let mut ors = Vec::new();
                let mut params = Vec::new();
                for n in 0..pk.len() {
                    let mut ands = Vec::new();
                    for (i, col) in pk.iter().enumerate().take(n + 1) {
                        let op = if i == n { ">" } else { "=" };
                        ands.push(format!("{col} {op} ?"));
                        params.push(param(key.get(i)));
                    }
                    ors.push(format!("({})", ands.join(" AND ")));
                }
                (
                    format!(
                        "{} WHERE {} ORDER BY {order} LIMIT {limit}",
                        t.select,
                        ors.join(" OR ")
                    ),
                    params,
                )
            }
        };
        let rows: Vec<mysql_async::Row> = self.conn.exec(q, params).await.map_err(|e| {
            sql(
                e,
                &format!("reading {}.{}", t.schema.database, t.schema.table),
            )
        })?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let raw = row.unwrap();
            let mut values = Vec::with_capacity(raw.len());
            for (i, v) in raw.into_iter().enumerate() {
                let col = &t.schema.columns[i];
                values.push(convert(v, col, t.fsp[i]).map_err(|e| {
                    SnapshotError::Unsupported(format!(
                        "{}.{}.{}: {e}",
                        t.schema.database, t.schema.table, col.name
                    ))
                })?);
            }
            out.push(values);
        }
        Ok(out)
    }
}

fn param(k: Option<&KeyPart>) -> mysql_async::Value {
    match k {
        Some(KeyPart::I(i)) => mysql_async::Value::Int(*i),
        Some(KeyPart::U(u)) => mysql_async::Value::UInt(*u),
        Some(KeyPart::T(t)) => mysql_async::Value::Bytes(t.clone().into_bytes()),
        None => mysql_async::Value::NULL,
    }
}

fn kind_of(data_type: &str, binary: bool) -> Option<ColumnKind> {
    use ColumnKind as K;
    Some(match data_type.to_ascii_lowercase().as_str() {
        "tinyint" => K::TinyInt,
        "smallint" => K::SmallInt,
        "mediumint" => K::MediumInt,
        "int" | "integer" => K::Int,
        "bigint" => K::BigInt,
        "float" => K::Float,
        "double" | "real" => K::Double,
        "decimal" | "numeric" => K::Decimal,
        "bit" => K::Bit,
        "year" => K::Year,
        "date" => K::Date,
        "time" => K::Time,
        "datetime" => K::DateTime,
        "timestamp" => K::Timestamp,
        "char" if binary => K::Binary,
        "char" => K::Char,
        "varchar" if binary => K::VarBinary,
        "varchar" => K::VarChar,
        "tinytext" | "text" | "mediumtext" | "longtext" if binary => K::Blob,
        "tinytext" | "text" | "mediumtext" | "longtext" => K::Text,
        "binary" => K::Binary,
        "varbinary" => K::VarBinary,
        "tinyblob" | "blob" | "mediumblob" | "longblob" => K::Blob,
        "enum" => K::Enum,
        "set" => K::Set,
        "json" => K::Json,
        "geometry" | "point" | "linestring" | "polygon" | "multipoint" | "multilinestring"
        | "multipolygon" | "geometrycollection" => K::Geometry,
        _ => return None,
    })
}

/// `COLUMN_TYPE` as the binlog source prints it: integer display widths and
/// `zerofill` dropped (`int(10) unsigned` -> `int unsigned`).
fn sql_type(column_type: &str, kind: ColumnKind) -> String {
    use ColumnKind as K;
    let t = column_type.replace(" zerofill", "");
    match kind {
        K::TinyInt | K::SmallInt | K::MediumInt | K::Int | K::BigInt | K::Year => {
            match (t.find('('), t.find(')')) {
                (Some(a), Some(b)) if a < b => format!("{}{}", &t[..a], &t[b + 1..]),
                _ => t,
            }
        }
        _ => t,
    }
}

fn text(b: Vec<u8>) -> Result<String, String> {
    String::from_utf8(b).map_err(|e| format!("value is not UTF-8: {e}"))
}

fn int_of(v: &mysql_async::Value) -> Result<i128, String> {
    match v {
        mysql_async::Value::Int(i) => Ok(i128::from(*i)),
        mysql_async::Value::UInt(u) => Ok(i128::from(*u)),
        mysql_async::Value::Bytes(b) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| format!("expected an integer, got {:?}", String::from_utf8_lossy(b))),
        other => Err(format!("expected an integer, got {other:?}")),
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// One value from the server's binary protocol, typed like the binlog source.
fn convert(v: mysql_async::Value, col: &Column, fsp: u8) -> Result<Value, String> {
    use mysql_async::Value as M;
    use ColumnKind as K;
    if v == M::NULL {
        return Ok(Value::Null);
    }
    Ok(match col.kind {
        K::TinyInt | K::SmallInt | K::MediumInt | K::Int | K::BigInt => {
            let n = int_of(&v)?;
            if col.unsigned {
                Value::UInt(u64::try_from(n).map_err(|e| e.to_string())?)
            } else {
                Value::Int(i64::try_from(n).map_err(|e| e.to_string())?)
            }
        }
        K::Year => Value::Year(u16::try_from(int_of(&v)?).map_err(|e| e.to_string())?),
        K::Float | K::Double => {
            let d = match v {
                M::Float(f) => f64::from(f),
                M::Double(d) => d,
                M::Bytes(b) => text(b)?.trim().parse().map_err(|e| format!("{e}"))?,
                other => return Err(format!("expected a number, got {other:?}")),
            };
            if col.kind == K::Float {
                Value::Float(d as f32)
            } else {
                Value::Double(d)
            }
        }
        K::Decimal => match v {
            M::Bytes(b) => Value::Decimal(text(b)?.into()),
            other => Value::Decimal(int_of(&other)?.to_string().into()),
        },
        K::Bit => {
            let value = match v {
                M::Bytes(b) => b.iter().fold(0u64, |acc, x| (acc << 8) | u64::from(*x)),
                other => u64::try_from(int_of(&other)?).map_err(|e| e.to_string())?,
            };
            Value::Bit {
                bits: col.precision.unwrap_or(1) as u16,
                value,
            }
        }
        K::Date | K::DateTime | K::Timestamp => {
            let (y, mo, d, h, mi, s, us) = match v {
                M::Date(y, mo, d, h, mi, s, us) => (y, mo, d, h, mi, s, us),
                other => return Err(format!("expected a date, got {other:?}")),
            };
            let date = Date {
                year: y,
                month: mo,
                day: d,
            };
            match col.kind {
                K::Date => Value::Date(date),
                K::DateTime => Value::DateTime(DateTime {
                    date,
                    hour: h,
                    minute: mi,
                    second: s,
                    micros: us,
                    fsp,
                }),
                _ if y == 0 => Value::Timestamp {
                    secs: 0,
                    micros: 0,
                    fsp,
                },
                _ => {
                    let days = days_from_civil(i64::from(y), i64::from(mo), i64::from(d));
                    Value::Timestamp {
                        secs: days * 86_400
                            + i64::from(h) * 3600
                            + i64::from(mi) * 60
                            + i64::from(s),
                        micros: us,
                        fsp,
                    }
                }
            }
        }
        K::Time => match v {
            M::Time(negative, days, h, m, s, us) => Value::Time(Time {
                negative,
                hours: u16::try_from(days * 24 + u32::from(h)).map_err(|e| e.to_string())?,
                minutes: m,
                seconds: s,
                micros: us,
                fsp,
            }),
            other => return Err(format!("expected a time, got {other:?}")),
        },
        K::Char | K::VarChar | K::Text | K::Enum | K::Set | K::Json => {
            let s = match v {
                M::Bytes(b) => text(b)?,
                other => return Err(format!("expected text, got {other:?}")),
            };
            match col.kind {
                K::Enum => Value::Enum(s.into()),
                K::Set if s.is_empty() => Value::Set(Vec::new()),
                K::Set => Value::Set(s.split(',').map(str::to_string).collect()),
                K::Json => Value::Json(s.into()),
                _ => Value::String(s.into()),
            }
        }
        K::Binary | K::VarBinary | K::Blob | K::Geometry => {
            let b = match v {
                M::Bytes(b) => b,
                other => return Err(format!("expected bytes, got {other:?}")),
            };
            if col.kind == K::Geometry {
                Value::Geometry(b)
            } else {
                Value::Bytes(b)
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_days_match_known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2024, 2, 29), 19_782);
    }

    #[test]
    fn column_types_print_like_the_binlog_source() {
        assert_eq!(
            sql_type("int(10) unsigned", ColumnKind::Int),
            "int unsigned"
        );
        assert_eq!(sql_type("bigint(20)", ColumnKind::BigInt), "bigint");
        assert_eq!(
            sql_type("decimal(10,2)", ColumnKind::Decimal),
            "decimal(10,2)"
        );
        assert_eq!(sql_type("year(4)", ColumnKind::Year), "year");
    }
}
