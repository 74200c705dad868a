//! WRITE/UPDATE/DELETE_ROWS events (v1 as MariaDB writes them, v2 as MySQL 8
//! writes them, and MariaDB's zlib-compressed variants) -> row changes.
//!
//! One event holds the rows of one statement chunk (about 8 KiB by default),
//! so decoding a whole event at once keeps memory bounded regardless of how
//! big the transaction is.

use std::borrow::Cow;

use crate::event::{Op, Value};

use super::bytes::{bit, Reader};
use super::error::DecodeError;
use super::table_map::TableInfo;
use super::value;

/// Row event type codes.
pub mod kind {
    pub const WRITE_V1: u8 = 23;
    pub const UPDATE_V1: u8 = 24;
    pub const DELETE_V1: u8 = 25;
    pub const WRITE_V2: u8 = 30;
    pub const UPDATE_V2: u8 = 31;
    pub const DELETE_V2: u8 = 32;
    pub const PARTIAL_UPDATE: u8 = 39;
    pub const WRITE_COMPRESSED_V1: u8 = 166;
    pub const UPDATE_COMPRESSED_V1: u8 = 167;
    pub const DELETE_COMPRESSED_V1: u8 = 168;
    pub const WRITE_COMPRESSED: u8 = 169;
    pub const UPDATE_COMPRESSED: u8 = 170;
    pub const DELETE_COMPRESSED: u8 = 171;
}

/// Facts about a row event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowsKind {
    pub op: Op,
    pub v2: bool,
    pub compressed: bool,
}

pub fn rows_kind(t: u8) -> Option<RowsKind> {
    use kind::*;
    let (op, v2, compressed) = match t {
        WRITE_V1 => (Op::Insert, false, false),
        UPDATE_V1 => (Op::Update, false, false),
        DELETE_V1 => (Op::Delete, false, false),
        WRITE_V2 => (Op::Insert, true, false),
        UPDATE_V2 | PARTIAL_UPDATE => (Op::Update, true, false),
        DELETE_V2 => (Op::Delete, true, false),
        WRITE_COMPRESSED_V1 => (Op::Insert, false, true),
        UPDATE_COMPRESSED_V1 => (Op::Update, false, true),
        DELETE_COMPRESSED_V1 => (Op::Delete, false, true),
        WRITE_COMPRESSED => (Op::Insert, true, true),
        UPDATE_COMPRESSED => (Op::Update, true, true),
        DELETE_COMPRESSED => (Op::Delete, true, true),
        _ => return None,
    };
    Some(RowsKind { op, v2, compressed })
}

/// The fixed part of a row event: which table, and where the row data starts.
pub struct RowsHeader {
    pub table_id: u64,
    pub flags: u16,
}

pub fn read_header(
    r: &mut Reader<'_>,
    post_header_len: u8,
    v2: bool,
) -> Result<RowsHeader, DecodeError> {
    let table_id = if post_header_len == 6 {
        u64::from(r.u32("table id")?)
    } else {
        r.uint_le(6, "table id")?
    };
    let flags = r.u16("rows flags")?;
    if v2 {
        let extra = usize::from(r.u16("extra data length")?);
        r.skip(extra.saturating_sub(2), "extra row data")?;
    }
    Ok(RowsHeader { table_id, flags })
}

/// A decoded row change: (before, after).
pub type RowImage = (Option<Vec<Value>>, Option<Vec<Value>>);

fn image(
    r: &mut Reader<'_>,
    t: &TableInfo,
    present: &[u8],
    n_present: usize,
) -> Result<Vec<Value>, DecodeError> {
    let nulls = r.take(n_present.div_ceil(8), "row null bitmap")?;
    let mut out = Vec::with_capacity(t.columns.len());
    let mut k = 0usize;
    for (i, c) in t.columns.iter().enumerate() {
        if !bit(present, i) {
            // Not in the image (binlog_row_image is not FULL): unknown, shown as NULL.
            out.push(Value::Null);
            continue;
        }
        if bit(nulls, k) {
            out.push(Value::Null);
        } else {
            out.push(value::decode(c, r)?);
        }
        k += 1;
    }
    Ok(out)
}

/// Decode the body of a row event (after its header fields), calling `f`
/// for every row in order.
pub fn decode_rows(
    r: &mut Reader<'_>,
    kind: RowsKind,
    table: &TableInfo,
    partial: bool,
    mut f: impl FnMut(RowImage) -> Result<(), DecodeError>,
) -> Result<(), DecodeError> {
    if partial {
        return Err(DecodeError::new(
            "PARTIAL_UPDATE_ROWS_EVENT (MySQL binlog_row_value_options=PARTIAL_JSON) is not supported; set binlog_row_value_options='' on the server",
        ));
    }
    let ncols = usize::try_from(r.packed("row column count")?).unwrap_or(usize::MAX);
    if ncols != table.columns.len() {
        return Err(DecodeError(format!(
            "row event for {}.{} has {ncols} columns, its table map {}",
            table.schema.database,
            table.schema.table,
            table.columns.len()
        )));
    }
    let bm_len = ncols.div_ceil(8);
    let before_bm = r.take(bm_len, "columns-present bitmap")?;
    let after_bm = if kind.op == Op::Update {
        r.take(bm_len, "after-image columns bitmap")?
    } else {
        before_bm
    };
    let count = |bm: &[u8]| (0..ncols).filter(|&i| bit(bm, i)).count();
    let (nb, na) = (count(before_bm), count(after_bm));
    let body: Cow<'_, [u8]> = if kind.compressed {
        Cow::Owned(super::compress::uncompress(r.rest())?)
    } else {
        Cow::Borrowed(r.rest())
    };
    let mut rr = Reader::new(&body);
    while !rr.is_empty() {
        let row = match kind.op {
            Op::Insert => (None, Some(image(&mut rr, table, after_bm, na)?)),
            Op::Delete => (Some(image(&mut rr, table, before_bm, nb)?), None),
            Op::Update | Op::Read => {
                let b = image(&mut rr, table, before_bm, nb)?;
                let a = image(&mut rr, table, after_bm, na)?;
                (Some(b), Some(a))
            }
        };
        f(row)?;
    }
    Ok(())
}
