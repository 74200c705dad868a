//! MySQL's binary JSON (`sql-common/json_binary.cc`) -> JSON text.
//!
//! MySQL 8 writes JSON columns in this binary form; MariaDB stores JSON as
//! text (a LONGTEXT), so this path is covered by byte-fixture unit tests
//! built from the format description in the MySQL source. Output uses
//! MySQL's own separators (`", "` and `": "`) so it matches what `SELECT`
//! prints. Depth is limited so malformed input cannot recurse without bound.

use std::fmt::Write;

use super::bytes::{le, Reader};
use super::error::DecodeError;
use super::table_map::ty;

const MAX_DEPTH: usize = 100;

fn err(msg: &str) -> DecodeError {
    DecodeError(format!("binary JSON: {msg}"))
}

/// Convert a binary JSON document to text. An empty document is JSON `null`
/// (MySQL writes 0 bytes for a JSON NULL produced by some statements).
pub fn to_text(b: &[u8]) -> Result<String, DecodeError> {
    let mut out = String::with_capacity(b.len() * 2);
    if b.is_empty() {
        out.push_str("null");
        return Ok(out);
    }
    value(b[0], &b[1..], &mut out, 0)?;
    Ok(out)
}

fn slice(b: &[u8], from: usize, len: usize) -> Result<&[u8], DecodeError> {
    b.get(
        from..from
            .checked_add(len)
            .ok_or_else(|| err("offset overflow"))?,
    )
    .ok_or_else(|| err("offset past end of value"))
}

fn value(t: u8, b: &[u8], out: &mut String, depth: usize) -> Result<(), DecodeError> {
    if depth > MAX_DEPTH {
        return Err(err("nested deeper than 100 levels"));
    }
    match t {
        0x00 => container(b, false, true, out, depth),
        0x01 => container(b, true, true, out, depth),
        0x02 => container(b, false, false, out, depth),
        0x03 => container(b, true, false, out, depth),
        0x04 => {
            match b.first() {
                Some(0) => out.push_str("null"),
                Some(1) => out.push_str("true"),
                Some(2) => out.push_str("false"),
                _ => return Err(err("bad literal")),
            }
            Ok(())
        }
        0x05 => num(out, le(slice(b, 0, 2)?) as u16 as i16),
        0x06 => num(out, le(slice(b, 0, 2)?) as u16),
        0x07 => num(out, le(slice(b, 0, 4)?) as u32 as i32),
        0x08 => num(out, le(slice(b, 0, 4)?) as u32),
        0x09 => num(out, le(slice(b, 0, 8)?) as i64),
        0x0a => num(out, le(slice(b, 0, 8)?)),
        0x0b => {
            let d = f64::from_bits(le(slice(b, 0, 8)?));
            double(out, d);
            Ok(())
        }
        0x0c => {
            let (len, n) = varlen(b)?;
            let s =
                std::str::from_utf8(slice(b, n, len)?).map_err(|_| err("string is not UTF-8"))?;
            string(out, s);
            Ok(())
        }
        0x0f => opaque(b, out),
        _ => Err(err("unknown value type")),
    }
}

fn num(out: &mut String, v: impl std::fmt::Display) -> Result<(), DecodeError> {
    let _ = write!(out, "{v}");
    Ok(())
}

fn double(out: &mut String, d: f64) {
    match serde_json::Number::from_f64(d) {
        Some(n) => {
            let _ = write!(out, "{n}");
        }
        None => out.push_str("null"),
    }
}

fn string(out: &mut String, s: &str) {
    match serde_json::to_string(s) {
        Ok(q) => out.push_str(&q),
        Err(_) => out.push_str("\"\""),
    }
}

/// MySQL's variable-length integer: 7 bits per byte, low bits first.
fn varlen(b: &[u8]) -> Result<(usize, usize), DecodeError> {
    let mut len = 0usize;
    for i in 0..5 {
        let byte = *b.get(i).ok_or_else(|| err("truncated length"))?;
        len |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok((len, i + 1));
        }
    }
    Err(err("length longer than 5 bytes"))
}

fn container(
    b: &[u8],
    large: bool,
    object: bool,
    out: &mut String,
    depth: usize,
) -> Result<(), DecodeError> {
    let w = if large { 4 } else { 2 };
    let count = le(slice(b, 0, w)?) as usize;
    let size = le(slice(b, w, w)?) as usize;
    if size > b.len() {
        return Err(err("container size past end"));
    }
    let b = &b[..size];
    let key_entry = if object { w + 2 } else { 0 };
    let value_entry = 1 + w;
    let header = 2 * w;
    let needed = count
        .checked_mul(key_entry + value_entry)
        .and_then(|n| n.checked_add(header))
        .ok_or_else(|| err("element count overflow"))?;
    if needed > size {
        return Err(err("element count past end"));
    }
    out.push(if object { '{' } else { '[' });
    for i in 0..count {
        if i > 0 {
            out.push_str(", ");
        }
        if object {
            let e = header + i * key_entry;
            let off = le(slice(b, e, w)?) as usize;
            let klen = le(slice(b, e + w, 2)?) as usize;
            let k =
                std::str::from_utf8(slice(b, off, klen)?).map_err(|_| err("key is not UTF-8"))?;
            string(out, k);
            out.push_str(": ");
        }
        let e = header + count * key_entry + i * value_entry;
        let t = *b.get(e).ok_or_else(|| err("value entry past end"))?;
        let inlined = matches!(t, 0x04..=0x06) || (large && matches!(t, 0x07 | 0x08));
        if inlined {
            value(t, slice(b, e + 1, w)?, out, depth + 1)?;
        } else {
            let off = le(slice(b, e + 1, w)?) as usize;
            if off >= b.len() {
                return Err(err("value offset past end"));
            }
            value(t, &b[off..], out, depth + 1)?;
        }
    }
    out.push(if object { '}' } else { ']' });
    Ok(())
}

fn opaque(b: &[u8], out: &mut String) -> Result<(), DecodeError> {
    let field_type = *b.first().ok_or_else(|| err("truncated opaque"))?;
    let (len, n) = varlen(&b[1..])?;
    let data = slice(b, 1 + n, len)?;
    match field_type {
        ty::NEWDECIMAL if data.len() >= 2 => {
            let (p, s) = (u16::from(data[0]), u16::from(data[1]));
            let mut r = Reader::new(&data[2..]);
            let d = super::value::decimal(&mut r, p, s, "json decimal")?;
            out.push_str(&d);
        }
        ty::DATE | ty::TIME | ty::DATETIME | ty::TIMESTAMP if data.len() >= 8 => {
            let packed = le(&data[..8]) as i64;
            let text = packed_temporal(field_type, packed);
            string(out, &text);
        }
        _ => {
            use base64::Engine;
            let enc = base64::engine::general_purpose::STANDARD.encode(data);
            string(out, &format!("base64:type{field_type}:{enc}"));
        }
    }
    Ok(())
}

/// MySQL's in-memory packed temporal (`TIME_to_longlong_*_packed`) as text.
fn packed_temporal(t: u8, packed: i64) -> String {
    let neg = packed < 0;
    let a = packed.unsigned_abs();
    let micros = a % (1 << 24);
    let int = a >> 24;
    let frac = if micros > 0 {
        format!(".{micros:06}")
    } else {
        String::new()
    };
    if t == ty::TIME {
        let (h, m, s) = ((int >> 12) % (1 << 10), (int >> 6) % 64, int % 64);
        return format!("{}{h:02}:{m:02}:{s:02}{frac}", if neg { "-" } else { "" });
    }
    let ymd = int >> 17;
    let ym = ymd >> 5;
    let hms = int % (1 << 17);
    let (y, mo, d) = (ym / 13, ym % 13, ymd % 32);
    if t == ty::DATE {
        return format!("{y:04}-{mo:02}-{d:02}");
    }
    format!(
        "{y:04}-{mo:02}-{d:02} {:02}:{:02}:{:02}{frac}",
        hms >> 12,
        (hms >> 6) % 64,
        hms % 64
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Byte fixtures laid out per json_binary.cc's format comment.
    #[test]
    fn small_object_with_nested_array() {
        // {"a": [1, "x"], "b": true}
        let arr: Vec<u8> = {
            // count=2, size, entries: (int16 inline 1), (string at offset)
            let mut v = vec![2, 0, 0, 0];
            v.extend([0x05, 1, 0]);
            v.extend([0x0c, 10, 0]);
            v.extend([1, b'x']);
            let size = v.len() as u16;
            v[2..4].copy_from_slice(&size.to_le_bytes());
            v
        };
        let mut obj = vec![2, 0, 0, 0];
        // key entries: header 4 + 2*4 key entries + 2*3 value entries = 18
        let keys_at = 4 + 2 * 4 + 2 * 3;
        obj.extend((keys_at as u16).to_le_bytes());
        obj.extend(1u16.to_le_bytes());
        obj.extend((keys_at as u16 + 1).to_le_bytes());
        obj.extend(1u16.to_le_bytes());
        let arr_at = keys_at + 2;
        obj.extend([0x02]);
        obj.extend((arr_at as u16).to_le_bytes());
        obj.extend([0x04, 1, 0]);
        obj.extend([b'a', b'b']);
        obj.extend(&arr);
        let size = obj.len() as u16;
        obj[2..4].copy_from_slice(&size.to_le_bytes());
        let mut doc = vec![0x00];
        doc.extend(obj);
        assert_eq!(to_text(&doc).unwrap(), r#"{"a": [1, "x"], "b": true}"#);
    }

    #[test]
    fn scalars() {
        assert_eq!(to_text(&[0x04, 0]).unwrap(), "null");
        assert_eq!(to_text(&[0x05, 0xff, 0xff]).unwrap(), "-1");
        let mut d = vec![0x0b];
        d.extend(1.5f64.to_le_bytes());
        assert_eq!(to_text(&d).unwrap(), "1.5");
        assert_eq!(to_text(&[0x0c, 3, b'a', b'"', b'b']).unwrap(), r#""a\"b""#);
        assert_eq!(to_text(&[]).unwrap(), "null");
    }

    #[test]
    fn malformed_is_an_error() {
        assert!(to_text(&[0x00, 5, 0, 100, 0]).is_err());
        assert!(to_text(&[0x0c, 0x80]).is_err());
        assert!(to_text(&[0x42]).is_err());
    }
}
