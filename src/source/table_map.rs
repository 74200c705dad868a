//! TABLE_MAP_EVENT: the table a following row event refers to, parsed once
//! into everything row decoding needs.
//!
//! With `binlog_row_metadata=FULL` the table map carries column names,
//! signedness, charsets, ENUM/SET members and the primary key. We turn it
//! into an [`Arc<TableSchema>`] for the sink plus one [`ColumnDecoder`] per
//! column, so each row is decoded straight from bytes into values with no
//! per-row metadata work.

use std::sync::Arc;

use crate::event::{Column, ColumnKind, TableSchema};

use super::bytes::{bit, bit_msb, Reader};
use super::charset::{Charset, Charsets};
use super::error::DecodeError;

/// MySQL protocol column type codes (`enum_field_types`).
pub mod ty {
    pub const DECIMAL: u8 = 0;
    pub const TINY: u8 = 1;
    pub const SHORT: u8 = 2;
    pub const LONG: u8 = 3;
    pub const FLOAT: u8 = 4;
    pub const DOUBLE: u8 = 5;
    pub const NULL: u8 = 6;
    pub const TIMESTAMP: u8 = 7;
    pub const LONGLONG: u8 = 8;
    pub const INT24: u8 = 9;
    pub const DATE: u8 = 10;
    pub const TIME: u8 = 11;
    pub const DATETIME: u8 = 12;
    pub const YEAR: u8 = 13;
    pub const NEWDATE: u8 = 14;
    pub const VARCHAR: u8 = 15;
    pub const BIT: u8 = 16;
    pub const TIMESTAMP2: u8 = 17;
    pub const DATETIME2: u8 = 18;
    pub const TIME2: u8 = 19;
    pub const JSON: u8 = 245;
    pub const NEWDECIMAL: u8 = 246;
    pub const ENUM: u8 = 247;
    pub const SET: u8 = 248;
    pub const TINY_BLOB: u8 = 249;
    pub const MEDIUM_BLOB: u8 = 250;
    pub const LONG_BLOB: u8 = 251;
    pub const BLOB: u8 = 252;
    pub const VAR_STRING: u8 = 253;
    pub const STRING: u8 = 254;
    pub const GEOMETRY: u8 = 255;
}

/// How to read one column of a row image.
#[derive(Debug, Clone)]
pub struct ColumnDecoder {
    /// The real type (STRING resolved to ENUM/SET/CHAR).
    pub ty: u8,
    /// Type metadata: length-prefix bytes, max byte length, fsp, (precision, scale) ...
    pub meta: u16,
    /// Second metadata value: DECIMAL scale, BIT whole bytes.
    pub meta2: u16,
    pub unsigned: bool,
    pub charset: Charset,
    pub members: Arc<[String]>,
    /// Column name, for error messages.
    pub name: String,
}

/// A parsed table map.
#[derive(Debug, Clone)]
pub struct TableInfo {
    pub table_id: u64,
    pub schema: Arc<TableSchema>,
    pub columns: Vec<ColumnDecoder>,
}

fn is_numeric(t: u8) -> bool {
    matches!(
        t,
        ty::TINY
            | ty::SHORT
            | ty::INT24
            | ty::LONG
            | ty::LONGLONG
            | ty::NEWDECIMAL
            | ty::FLOAT
            | ty::DOUBLE
            | ty::DECIMAL
    )
}

fn is_character(t: u8) -> bool {
    matches!(
        t,
        ty::STRING
            | ty::VAR_STRING
            | ty::VARCHAR
            | ty::BLOB
            | ty::TINY_BLOB
            | ty::MEDIUM_BLOB
            | ty::LONG_BLOB
    )
}

/// Per-column metadata bytes in the table map.
fn read_meta(t: u8, r: &mut Reader<'_>) -> Result<(u8, u16, u16), DecodeError> {
    Ok(match t {
        ty::FLOAT
        | ty::DOUBLE
        | ty::BLOB
        | ty::GEOMETRY
        | ty::JSON
        | ty::TIME2
        | ty::DATETIME2
        | ty::TIMESTAMP2
        | ty::TINY_BLOB
        | ty::MEDIUM_BLOB
        | ty::LONG_BLOB => (t, u16::from(r.u8("column metadata")?), 0),
        ty::VARCHAR | ty::VAR_STRING => (t, r.u16("column metadata")?, 0),
        ty::BIT => {
            let bits = r.u8("bit metadata")?;
            let bytes = r.u8("bit metadata")?;
            (t, u16::from(bits), u16::from(bytes))
        }
        ty::NEWDECIMAL => {
            let p = r.u8("decimal metadata")?;
            let s = r.u8("decimal metadata")?;
            (t, u16::from(p), u16::from(s))
        }
        ty::STRING | ty::ENUM | ty::SET => {
            let b0 = r.u8("string metadata")?;
            let b1 = r.u8("string metadata")?;
            if b0 == 0 {
                (t, u16::from(b1), 0)
            } else if (b0 & 0x30) != 0x30 {
                // CHAR longer than 255 bytes: two length bits live in byte 0.
                let len = ((u16::from((b0 & 0x30) ^ 0x30)) << 4) | u16::from(b1);
                (b0 | 0x30, len, 0)
            } else {
                (b0, u16::from(b1), 0)
            }
        }
        _ => (t, 0, 0),
    })
}

#[derive(Default)]
struct Optional {
    signed: Option<Vec<u8>>,
    default_charset: Option<(u32, Vec<(usize, u32)>)>,
    column_charsets: Option<Vec<u32>>,
    enum_set_default: Option<(u32, Vec<(usize, u32)>)>,
    enum_set_charsets: Option<Vec<u32>>,
    names: Option<Vec<String>>,
    set_values: Vec<Vec<Vec<u8>>>,
    enum_values: Vec<Vec<Vec<u8>>>,
    geometry_types: Vec<u64>,
    primary_key: Vec<usize>,
}

fn read_default_charset(r: &mut Reader<'_>) -> Result<(u32, Vec<(usize, u32)>), DecodeError> {
    let default = r.packed("default charset")? as u32;
    let mut pairs = Vec::new();
    while !r.is_empty() {
        let idx = r.packed("charset column index")? as usize;
        let cs = r.packed("charset")? as u32;
        pairs.push((idx, cs));
    }
    Ok((default, pairs))
}

/// ENUM/SET member names, raw: they are in the column's charset.
fn read_strings(r: &mut Reader<'_>, what: &str) -> Result<Vec<Vec<u8>>, DecodeError> {
    let n = r.packed_len(what)?;
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push(r.packed_bytes(what)?.to_vec());
    }
    Ok(v)
}

fn members_in(
    raw: Option<&Vec<Vec<u8>>>,
    cs: Charset,
    what: &str,
) -> Result<Arc<[String]>, DecodeError> {
    let mut out = Vec::new();
    for m in raw.map(Vec::as_slice).unwrap_or_default() {
        out.push(super::charset::decode(cs, m, what)?);
    }
    Ok(Arc::from(out))
}

fn read_optional(mut r: Reader<'_>, ncols: usize) -> Result<Optional, DecodeError> {
    let mut o = Optional::default();
    while !r.is_empty() {
        let field = r.u8("metadata field type")?;
        let mut v = Reader::new(r.packed_bytes("metadata field")?);
        match field {
            1 => o.signed = Some(v.rest().to_vec()),
            2 => o.default_charset = Some(read_default_charset(&mut v)?),
            3 => {
                let mut c = Vec::new();
                while !v.is_empty() {
                    c.push(v.packed("column charset")? as u32);
                }
                o.column_charsets = Some(c);
            }
            4 => {
                let mut names = Vec::with_capacity(ncols);
                while !v.is_empty() {
                    names
                        .push(String::from_utf8_lossy(v.packed_bytes("column name")?).into_owned());
                }
                o.names = Some(names);
            }
            5 | 6 => {
                let mut all = Vec::new();
                while !v.is_empty() {
                    all.push(read_strings(&mut v, "enum/set member")?);
                }
                if field == 5 {
                    o.set_values = all;
                } else {
                    o.enum_values = all;
                }
            }
            7 => {
                while !v.is_empty() {
                    o.geometry_types.push(v.packed("geometry type")?);
                }
            }
            8 => {
                while !v.is_empty() {
                    o.primary_key.push(v.packed("primary key column")? as usize);
                }
            }
            9 => {
                while !v.is_empty() {
                    o.primary_key.push(v.packed("primary key column")? as usize);
                    v.packed("primary key prefix")?;
                }
            }
            10 => o.enum_set_default = Some(read_default_charset(&mut v)?),
            11 => {
                let mut c = Vec::new();
                while !v.is_empty() {
                    c.push(v.packed("enum/set charset")? as u32);
                }
                o.enum_set_charsets = Some(c);
            }
            _ => {} // column visibility and future fields: not needed
        }
    }
    Ok(o)
}

fn charset_of(
    nth: usize,
    default: &Option<(u32, Vec<(usize, u32)>)>,
    per_column: &Option<Vec<u32>>,
) -> Option<u32> {
    if let Some(c) = per_column {
        return c.get(nth).copied();
    }
    default.as_ref().map(|(d, pairs)| {
        pairs
            .iter()
            .find(|(i, _)| *i == nth)
            .map_or(*d, |(_, c)| *c)
    })
}

fn quote_list(items: &[String]) -> String {
    items
        .iter()
        .map(|s| format!("'{}'", s.replace('\'', "''")))
        .collect::<Vec<_>>()
        .join(",")
}

fn fsp_suffix(base: &str, fsp: u16) -> String {
    if fsp == 0 {
        base.to_string()
    } else {
        format!("{base}({fsp})")
    }
}

/// Parse a TABLE_MAP_EVENT body (after the common header, checksum removed).
pub fn parse(
    body: &[u8],
    post_header_len: u8,
    charsets: &Charsets,
) -> Result<TableInfo, DecodeError> {
    let mut r = Reader::new(body);
    let table_id = if post_header_len == 6 {
        u64::from(r.u32("table id")?)
    } else {
        r.uint_le(6, "table id")?
    };
    r.skip(2, "table map flags")?;
    let db_len = usize::from(r.u8("database name length")?);
    let database = String::from_utf8_lossy(r.take(db_len, "database name")?).into_owned();
    r.skip(1, "database name terminator")?;
    let t_len = usize::from(r.u8("table name length")?);
    let table = String::from_utf8_lossy(r.take(t_len, "table name")?).into_owned();
    r.skip(1, "table name terminator")?;
    let ncols = r.packed_len("column count")?;
    let types = r.take(ncols, "column types")?;
    let mut meta = Reader::new(r.packed_bytes("column metadata")?);
    let nulls = r.take(ncols.div_ceil(8), "null bitmap")?;
    let opt = read_optional(Reader::new(r.rest()), ncols)?;

    let mut columns = Vec::with_capacity(ncols);
    let mut decoders = Vec::with_capacity(ncols);
    let (mut n_numeric, mut n_char, mut n_enumset, mut n_enum, mut n_set, mut n_geo) =
        (0usize, 0usize, 0usize, 0usize, 0usize, 0usize);
    for (i, &t) in types.iter().enumerate() {
        let (real, m1, m2) = read_meta(t, &mut meta)?;
        let name = match &opt.names {
            Some(n) => n.get(i).cloned().unwrap_or_else(|| format!("col{i}")),
            None => format!("col{i}"),
        };
        let mut unsigned = false;
        if is_numeric(real) {
            if let Some(s) = &opt.signed {
                unsigned = bit_msb(s, n_numeric);
            }
            n_numeric += 1;
        }
        let mut charset = Charset::Binary;
        let mut resolve = |id: Option<u32>| -> Result<(), DecodeError> {
            if let Some(id) = id {
                match charsets.get(id) {
                    Some((c, _)) => charset = c,
                    None => {
                        return Err(DecodeError(format!(
                            "column {database}.{table}.{name}: unknown collation id {id}"
                        )))
                    }
                }
            }
            Ok(())
        };
        let mut members: Arc<[String]> = Arc::from(Vec::new());
        if is_character(real) {
            resolve(charset_of(
                n_char,
                &opt.default_charset,
                &opt.column_charsets,
            ))?;
            n_char += 1;
        } else if real == ty::ENUM || real == ty::SET {
            resolve(charset_of(
                n_enumset,
                &opt.enum_set_default,
                &opt.enum_set_charsets,
            ))?;
            n_enumset += 1;
            if real == ty::ENUM {
                members = members_in(opt.enum_values.get(n_enum), charset, &name)?;
                n_enum += 1;
            } else {
                members = members_in(opt.set_values.get(n_set), charset, &name)?;
                n_set += 1;
            }
        }
        let binary = charset == Charset::Binary;
        let mb = charset.mbmaxlen();
        let (kind, sql_type, precision, scale) = match real {
            ty::TINY => (ColumnKind::TinyInt, "tinyint".to_string(), None, None),
            ty::SHORT => (ColumnKind::SmallInt, "smallint".into(), None, None),
            ty::INT24 => (ColumnKind::MediumInt, "mediumint".into(), None, None),
            ty::LONG => (ColumnKind::Int, "int".into(), None, None),
            ty::LONGLONG => (ColumnKind::BigInt, "bigint".into(), None, None),
            ty::FLOAT => (ColumnKind::Float, "float".into(), None, None),
            ty::DOUBLE => (ColumnKind::Double, "double".into(), None, None),
            ty::NEWDECIMAL | ty::DECIMAL => (
                ColumnKind::Decimal,
                format!("decimal({m1},{m2})"),
                Some(u32::from(m1)),
                Some(u32::from(m2)),
            ),
            ty::BIT => {
                let bits = u32::from(m2) * 8 + u32::from(m1);
                (ColumnKind::Bit, format!("bit({bits})"), Some(bits), None)
            }
            ty::YEAR => (ColumnKind::Year, "year".into(), None, None),
            ty::DATE | ty::NEWDATE => (ColumnKind::Date, "date".into(), None, None),
            ty::TIME | ty::TIME2 => (
                ColumnKind::Time,
                fsp_suffix("time", m1),
                Some(u32::from(m1)),
                None,
            ),
            ty::DATETIME | ty::DATETIME2 => (
                ColumnKind::DateTime,
                fsp_suffix("datetime", m1),
                Some(u32::from(m1)),
                None,
            ),
            ty::TIMESTAMP | ty::TIMESTAMP2 => (
                ColumnKind::Timestamp,
                fsp_suffix("timestamp", m1),
                Some(u32::from(m1)),
                None,
            ),
            ty::VARCHAR | ty::VAR_STRING => {
                let n = u32::from(m1) / mb;
                if binary {
                    (
                        ColumnKind::VarBinary,
                        format!("varbinary({n})"),
                        Some(n),
                        None,
                    )
                } else {
                    (ColumnKind::VarChar, format!("varchar({n})"), Some(n), None)
                }
            }
            ty::STRING => {
                let n = u32::from(m1) / mb;
                if binary {
                    (ColumnKind::Binary, format!("binary({n})"), Some(n), None)
                } else {
                    (ColumnKind::Char, format!("char({n})"), Some(n), None)
                }
            }
            ty::BLOB | ty::TINY_BLOB | ty::MEDIUM_BLOB | ty::LONG_BLOB => {
                let size = match m1 {
                    1 => "tiny",
                    3 => "medium",
                    4 => "long",
                    _ => "",
                };
                if binary {
                    (ColumnKind::Blob, format!("{size}blob"), None, None)
                } else {
                    (ColumnKind::Text, format!("{size}text"), None, None)
                }
            }
            ty::ENUM => (
                ColumnKind::Enum,
                format!("enum({})", quote_list(&members)),
                None,
                None,
            ),
            ty::SET => (
                ColumnKind::Set,
                format!("set({})", quote_list(&members)),
                None,
                None,
            ),
            ty::JSON => (ColumnKind::Json, "json".into(), None, None),
            ty::GEOMETRY => {
                let g = [
                    "geometry",
                    "point",
                    "linestring",
                    "polygon",
                    "multipoint",
                    "multilinestring",
                    "multipolygon",
                    "geometrycollection",
                ];
                let name = opt
                    .geometry_types
                    .get(n_geo)
                    .and_then(|&t| g.get(t as usize))
                    .copied()
                    .unwrap_or("geometry");
                n_geo += 1;
                (ColumnKind::Geometry, name.to_string(), None, None)
            }
            other => {
                return Err(DecodeError(format!(
                    "column {database}.{table}.{name}: unsupported column type {other}"
                )))
            }
        };
        let sql_type = if unsigned {
            format!("{sql_type} unsigned")
        } else {
            sql_type
        };
        columns.push(Column {
            name: name.clone(),
            kind,
            sql_type,
            unsigned,
            nullable: bit(nulls, i),
            precision,
            scale,
        });
        decoders.push(ColumnDecoder {
            ty: real,
            meta: m1,
            meta2: m2,
            unsigned,
            charset,
            members,
            name,
        });
    }
    if let Some(&bad) = opt.primary_key.iter().find(|&&i| i >= ncols) {
        return Err(DecodeError(format!(
            "table map {database}.{table}: primary key column {bad} out of range ({ncols} columns)"
        )));
    }
    Ok(TableInfo {
        table_id,
        schema: Arc::new(TableSchema {
            database,
            table,
            columns,
            primary_key: opt.primary_key,
        }),
        columns: decoders,
    })
}
