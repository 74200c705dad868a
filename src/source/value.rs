//! One cell of a row image -> one exact [`Value`].
//!
//! The formats follow the server's `Field::pack` code (mysql-server
//! `sql/field.cc`, `mysys/my_time.cc`, `strings/decimal.cc`). Notable
//! exactness points: MEDIUMINT is sign-extended, YEAR 0 stays 0, BINARY is
//! padded back with the zero bytes the server strips, negative TIME with
//! fractional seconds uses the server's reversed-fraction encoding, DECIMAL
//! never goes through floating point.

use crate::event::{Date, DateTime, Text, Time, Value};

use super::bytes::{be, Reader};
use super::charset::{self, Charset};
use super::error::DecodeError;
use super::table_map::{ty, ColumnDecoder};

/// Decode one non-NULL cell.
pub fn decode(c: &ColumnDecoder, r: &mut Reader<'_>) -> Result<Value, DecodeError> {
    let n = c.name.as_str();
    Ok(match c.ty {
        ty::TINY => int(r, 1, c.unsigned, n)?,
        ty::SHORT => int(r, 2, c.unsigned, n)?,
        ty::INT24 => int(r, 3, c.unsigned, n)?,
        ty::LONG => int(r, 4, c.unsigned, n)?,
        ty::LONGLONG => int(r, 8, c.unsigned, n)?,
        ty::FLOAT => Value::Float(f32::from_bits(r.u32(n)?)),
        ty::DOUBLE => Value::Double(f64::from_bits(r.u64(n)?)),
        ty::NEWDECIMAL => Value::Decimal(decimal(r, c.meta, c.meta2, n)?),
        ty::BIT => {
            let bits = c.meta2 * 8 + c.meta;
            let len = usize::from(c.meta2) + usize::from(c.meta > 0);
            if len > 8 {
                return Err(DecodeError(format!("{n}: BIT wider than 64 bits")));
            }
            Value::Bit {
                bits,
                value: r.uint_be(len, n)?,
            }
        }
        ty::YEAR => match r.u8(n)? {
            0 => Value::Year(0),
            y => Value::Year(1900 + u16::from(y)),
        },
        ty::DATE | ty::NEWDATE => Value::Date(date(r.uint_le(3, n)?)),
        ty::TIME => {
            // Old TIME: signed HHMMSS in 3 bytes.
            let raw = r.uint_le(3, n)?;
            let v = ((raw << 40) as i64) >> 40;
            let a = v.unsigned_abs();
            Value::Time(Time {
                negative: v < 0,
                hours: (a / 10000) as u16,
                minutes: ((a / 100) % 100) as u8,
                seconds: (a % 100) as u8,
                micros: 0,
                fsp: 0,
            })
        }
        ty::TIME2 => Value::Time(time2(r, c.meta, n)?),
        ty::DATETIME => {
            let v = r.u64(n)?;
            let (d, t) = (v / 1_000_000, v % 1_000_000);
            Value::DateTime(DateTime {
                date: Date {
                    year: (d / 10000) as u16,
                    month: ((d / 100) % 100) as u8,
                    day: (d % 100) as u8,
                },
                hour: (t / 10000) as u8,
                minute: ((t / 100) % 100) as u8,
                second: (t % 100) as u8,
                micros: 0,
                fsp: 0,
            })
        }
        ty::DATETIME2 => Value::DateTime(datetime2(r, c.meta, n)?),
        ty::TIMESTAMP => Value::Timestamp {
            secs: i64::from(r.u32(n)?),
            micros: 0,
            fsp: 0,
        },
        ty::TIMESTAMP2 => {
            let secs = r.uint_be(4, n)? as i64;
            let micros = frac(r, c.meta, n)?;
            Value::Timestamp {
                secs,
                micros,
                fsp: c.meta as u8,
            }
        }
        ty::VARCHAR | ty::VAR_STRING => {
            let len = if c.meta < 256 {
                r.uint_le(1, n)?
            } else {
                r.uint_le(2, n)?
            };
            string(c, r.take(len as usize, n)?)?
        }
        ty::STRING => {
            let len = if c.meta < 256 {
                r.uint_le(1, n)?
            } else {
                r.uint_le(2, n)?
            };
            let b = r.take(len as usize, n)?;
            if c.charset == Charset::Binary {
                // The server strips BINARY's trailing 0x00 padding; put it back.
                let mut v = Vec::with_capacity(usize::from(c.meta).max(b.len()));
                v.extend_from_slice(b);
                v.resize(usize::from(c.meta).max(b.len()), 0);
                Value::Bytes(v)
            } else {
                string(c, b)?
            }
        }
        ty::BLOB | ty::TINY_BLOB | ty::MEDIUM_BLOB | ty::LONG_BLOB => {
            let len = r.uint_le(usize::from(c.meta.clamp(1, 4)), n)?;
            string(c, r.take(len as usize, n)?)?
        }
        ty::GEOMETRY => {
            let len = r.uint_le(usize::from(c.meta.clamp(1, 4)), n)?;
            Value::Geometry(r.take(len as usize, n)?.to_vec())
        }
        ty::JSON => {
            let len = r.uint_le(usize::from(c.meta.clamp(1, 4)), n)?;
            let b = r.take(len as usize, n)?;
            Value::Json(
                super::json::to_text(b)
                    .map_err(|e| DecodeError(format!("{n}: {e}")))?
                    .into(),
            )
        }
        ty::ENUM => {
            let i = r.uint_le(usize::from(c.meta.clamp(1, 2)), n)? as usize;
            if i == 0 {
                Value::Enum(Text::default())
            } else {
                match c.members.get(i - 1) {
                    Some(m) => Value::Enum(Text::from(m.as_str())),
                    None => {
                        return Err(DecodeError(format!(
                            "{n}: ENUM index {i} but the table map lists {} members (is binlog_row_metadata=FULL?)",
                            c.members.len()
                        )))
                    }
                }
            }
        }
        ty::SET => {
            let bits = r.uint_le(usize::from(c.meta.clamp(1, 8)), n)?;
            let mut out = Vec::new();
            for i in 0..64 {
                if bits & (1u64 << i) != 0 {
                    match c.members.get(i) {
                        Some(m) => out.push(m.clone()),
                        None => {
                            return Err(DecodeError(format!(
                                "{n}: SET bit {i} but the table map lists {} members (is binlog_row_metadata=FULL?)",
                                c.members.len()
                            )))
                        }
                    }
                }
            }
            Value::Set(out)
        }
        ty::NULL => Value::Null,
        other => {
            return Err(DecodeError(format!(
                "{n}: cannot decode column type {other}"
            )));
        }
    })
}

fn string(c: &ColumnDecoder, b: &[u8]) -> Result<Value, DecodeError> {
    if c.charset == Charset::Binary {
        Ok(Value::Bytes(b.to_vec()))
    } else {
        Ok(Value::String(charset::decode_text(c.charset, b, &c.name)?))
    }
}

fn int(r: &mut Reader<'_>, n: usize, unsigned: bool, what: &str) -> Result<Value, DecodeError> {
    let v = r.uint_le(n, what)?;
    if unsigned {
        Ok(Value::UInt(v))
    } else {
        let shift = 64 - 8 * n as u32;
        Ok(Value::Int(((v << shift) as i64) >> shift))
    }
}

fn date(v: u64) -> Date {
    Date {
        year: (v >> 9) as u16,
        month: ((v >> 5) & 15) as u8,
        day: (v & 31) as u8,
    }
}

/// Fractional seconds of TIMESTAMP2 (big-endian, unsigned).
fn frac(r: &mut Reader<'_>, fsp: u16, what: &str) -> Result<u32, DecodeError> {
    Ok(match fsp {
        0 => 0,
        1 | 2 => r.uint_be(1, what)? as u32 * 10000,
        3 | 4 => r.uint_be(2, what)? as u32 * 100,
        5 | 6 => r.uint_be(3, what)? as u32,
        _ => return Err(DecodeError(format!("{what}: fractional digits {fsp} > 6"))),
    })
}

fn time2(r: &mut Reader<'_>, fsp: u16, what: &str) -> Result<Time, DecodeError> {
    const INT_OFS: i64 = 0x80_0000;
    let packed: i64 = match fsp {
        0 => (r.uint_be(3, what)? as i64 - INT_OFS) << 24,
        1 | 2 => {
            let mut int = r.uint_be(3, what)? as i64 - INT_OFS;
            let mut f = r.uint_be(1, what)? as i64;
            if int < 0 && f != 0 {
                int += 1;
                f -= 0x100;
            }
            (int << 24) + f * 10000
        }
        3 | 4 => {
            let mut int = r.uint_be(3, what)? as i64 - INT_OFS;
            let mut f = r.uint_be(2, what)? as i64;
            if int < 0 && f != 0 {
                int += 1;
                f -= 0x10000;
            }
            (int << 24) + f * 100
        }
        5 | 6 => r.uint_be(6, what)? as i64 - 0x8000_0000_0000,
        _ => return Err(DecodeError(format!("{what}: fractional digits {fsp} > 6"))),
    };
    let negative = packed < 0;
    let a = packed.unsigned_abs();
    let hms = a >> 24;
    Ok(Time {
        negative,
        hours: ((hms >> 12) % (1 << 10)) as u16,
        minutes: ((hms >> 6) % (1 << 6)) as u8,
        seconds: (hms % (1 << 6)) as u8,
        micros: (a % (1 << 24)) as u32,
        fsp: fsp as u8,
    })
}

fn datetime2(r: &mut Reader<'_>, fsp: u16, what: &str) -> Result<DateTime, DecodeError> {
    let int = r.uint_be(5, what)? as i64 - 0x80_0000_0000;
    let micros = frac(r, fsp, what)?;
    let a = int.unsigned_abs();
    let ymd = a >> 17;
    let ym = ymd >> 5;
    let hms = a % (1 << 17);
    Ok(DateTime {
        date: Date {
            year: (ym / 13) as u16,
            month: (ym % 13) as u8,
            day: (ymd % (1 << 5)) as u8,
        },
        hour: (hms >> 12) as u8,
        minute: ((hms >> 6) % (1 << 6)) as u8,
        second: (hms % (1 << 6)) as u8,
        micros,
        fsp: fsp as u8,
    })
}

const DIG2BYTES: [usize; 10] = [0, 1, 1, 2, 2, 3, 3, 4, 4, 4];

/// Bytes a DECIMAL(p,s) takes in a row image.
pub fn decimal_size(precision: u16, scale: u16) -> usize {
    let p = usize::from(precision);
    let s = usize::from(scale);
    let intg = p.saturating_sub(s);
    intg / 9 * 4 + DIG2BYTES[intg % 9] + s / 9 * 4 + DIG2BYTES[s % 9]
}

/// MySQL's binary DECIMAL as exact text (`-1234.50`).
pub fn decimal(
    r: &mut Reader<'_>,
    precision: u16,
    scale: u16,
    what: &str,
) -> Result<Text, DecodeError> {
    if precision == 0 || precision > 65 || scale > 30 || scale > precision {
        return Err(DecodeError(format!(
            "{what}: bad DECIMAL({precision},{scale})"
        )));
    }
    // No allocation but the result's (none up to 24 characters): the bytes
    // are flipped in a stack copy and the digits written to stack buffers (decimal_size(65, 30) is 30 bytes;
    // a group reads at most 4 bytes, 10 digits even when corrupt).
    let size = decimal_size(precision, scale);
    let raw = r.take(size, what)?;
    let mut copy = [0u8; 32];
    let b = &mut copy[..size];
    b.copy_from_slice(raw);
    let negative = b[0] & 0x80 == 0;
    b[0] ^= 0x80;
    if negative {
        for x in b.iter_mut() {
            *x = !*x;
        }
    }
    let s = usize::from(scale);
    let intg = usize::from(precision) - s;
    let mut p = 0usize;
    // Every group zero-padded to its digit count, then leading zeros trimmed:
    // the same text as printing the first group bare.
    let mut int_digits = Digits::new();
    let lead = DIG2BYTES[intg % 9];
    if lead > 0 {
        int_digits.push(be(&b[p..p + lead]), intg % 9);
        p += lead;
    }
    for _ in 0..intg / 9 {
        int_digits.push(be(&b[p..p + 4]), 9);
        p += 4;
    }
    let mut frac_digits = Digits::new();
    for _ in 0..s / 9 {
        frac_digits.push(be(&b[p..p + 4]), 9);
        p += 4;
    }
    let tail = DIG2BYTES[s % 9];
    if tail > 0 {
        frac_digits.push(be(&b[p..p + tail]), s % 9);
    }
    let int_text = int_digits.text();
    let trimmed = &int_text[int_text.iter().take_while(|&&c| c == b'0').count()..];
    let frac_text = frac_digits.text();
    let is_zero = trimmed.is_empty() && frac_text.iter().all(|&c| c == b'0');
    let mut out = Digits::new();
    if negative && !is_zero {
        out.put(b"-");
    }
    out.put(if trimmed.is_empty() { b"0" } else { trimmed });
    if s > 0 {
        out.put(b".");
        out.put(frac_text);
    }
    // Only ASCII digits, '-' and '.' were written.
    Ok(Text::from(
        std::str::from_utf8(out.text()).unwrap_or_default(),
    ))
}

/// A DECIMAL's digits on the stack: the integer part is at most 8 groups of
/// at most 10 digits (a 4-byte group of corrupt data can exceed 9), the
/// fraction 4; the whole text adds a sign and a point.
struct Digits {
    buf: [u8; 128],
    len: usize,
}

impl Digits {
    fn new() -> Self {
        Digits {
            buf: [0; 128],
            len: 0,
        }
    }

    fn put(&mut self, bytes: &[u8]) {
        let n = bytes.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&bytes[..n]);
        self.len += n;
    }

    /// `v` zero-padded to `width` digits (`{v:0width$}`).
    fn push(&mut self, v: u64, width: usize) {
        let mut t = itoa::Buffer::new();
        let d = t.format(v).as_bytes();
        let pad = width.saturating_sub(d.len());
        let end = (self.len + pad + d.len()).min(self.buf.len());
        let room = end - self.len;
        let pad = pad.min(room);
        self.buf[self.len..self.len + pad].fill(b'0');
        let n = (room - pad).min(d.len());
        self.buf[self.len + pad..self.len + pad + n].copy_from_slice(&d[..n]);
        self.len += pad + n;
    }

    fn text(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(bytes: &[u8], p: u16, s: u16) -> String {
        decimal(&mut Reader::new(bytes), p, s, "d")
            .unwrap()
            .to_string()
    }

    #[test]
    fn decimal_examples_from_mysql_docs() {
        // decimal.c's comment: 1234567890.1234 as DECIMAL(14,4).
        let b = [0x81, 0x0D, 0xFB, 0x38, 0xD2, 0x04, 0xD2];
        assert_eq!(dec(&b, 14, 4), "1234567890.1234");
        let n: Vec<u8> = b.iter().map(|x| !x).collect();
        assert_eq!(dec(&n, 14, 4), "-1234567890.1234");
        assert_eq!(decimal_size(14, 4), 7);
        assert_eq!(decimal_size(65, 30), 30);
    }

    /// The straightforward decoder the one above replaced (a String per
    /// group), kept as the reference it must agree with.
    fn decimal_reference(raw: &[u8], precision: u16, scale: u16) -> String {
        let mut b = raw.to_vec();
        let negative = b[0] & 0x80 == 0;
        b[0] ^= 0x80;
        if negative {
            for x in &mut b {
                *x = !*x;
            }
        }
        let s = usize::from(scale);
        let intg = usize::from(precision) - s;
        let mut p = 0usize;
        let mut int_digits = String::new();
        let lead = DIG2BYTES[intg % 9];
        if lead > 0 {
            int_digits.push_str(&be(&b[p..p + lead]).to_string());
            p += lead;
        }
        for _ in 0..intg / 9 {
            let v = be(&b[p..p + 4]);
            p += 4;
            if int_digits.is_empty() {
                int_digits.push_str(&v.to_string());
            } else {
                int_digits.push_str(&format!("{v:09}"));
            }
        }
        let trimmed = int_digits.trim_start_matches('0');
        let mut frac_digits = String::new();
        for _ in 0..s / 9 {
            frac_digits.push_str(&format!("{:09}", be(&b[p..p + 4])));
            p += 4;
        }
        let tail = DIG2BYTES[s % 9];
        if tail > 0 {
            let v = be(&b[p..p + tail]);
            frac_digits.push_str(&format!("{v:0width$}", width = s % 9));
        }
        let is_zero = trimmed.is_empty() && frac_digits.bytes().all(|c| c == b'0');
        let mut out = String::new();
        if negative && !is_zero {
            out.push('-');
        }
        out.push_str(if trimmed.is_empty() { "0" } else { trimmed });
        if s > 0 {
            out.push('.');
            out.push_str(&frac_digits);
        }
        out
    }

    #[test]
    fn decimal_agrees_with_the_reference_on_random_bytes_of_every_shape() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for precision in 1..=65u16 {
            for scale in 0..=precision.min(30) {
                let size = decimal_size(precision, scale);
                for round in 0..40 {
                    // Random bytes (corrupt groups over 999999999 included),
                    // all-zero and all-ones (both signs of zero).
                    let raw: Vec<u8> = match round {
                        0 => vec![0x80; 1].into_iter().chain(vec![0; size - 1]).collect(),
                        1 => vec![0x7f; 1]
                            .into_iter()
                            .chain(vec![0xff; size - 1])
                            .collect(),
                        _ => (0..size).map(|_| rng.gen()).collect(),
                    };
                    assert_eq!(
                        dec(&raw, precision, scale),
                        decimal_reference(&raw, precision, scale),
                        "DECIMAL({precision},{scale}) {raw:02x?}"
                    );
                }
            }
        }
    }

    #[test]
    fn negative_time_with_fraction() {
        // -00:00:01.5 at fsp 1: int part -1 -> stored as (0x800000 - 1 + 1)=0x800000? use the packer inverse.
        // Build: packed = -(1 s + 0.5 s) ; intpart=-2 after borrow, frac byte 0x100-50=206.
        let bytes = [0x7F, 0xFF, 0xFE, 206];
        let t = time2(&mut Reader::new(&bytes), 1, "t").unwrap();
        assert_eq!(t.to_string(), "-00:00:01.5");
    }

    #[test]
    fn mediumint_sign_extends() {
        let v = int(&mut Reader::new(&[0xFF, 0xFF, 0xFF]), 3, false, "m").unwrap();
        assert_eq!(v, Value::Int(-1));
        let v = int(&mut Reader::new(&[0x00, 0x00, 0x80]), 3, false, "m").unwrap();
        assert_eq!(v, Value::Int(-8_388_608));
    }
}
