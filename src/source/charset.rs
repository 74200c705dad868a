//! Character sets of string columns: which collation ids mean which charset,
//! and turning stored bytes into UTF-8 exactly as the server would print them.
//!
//! The binlog table map names each string column's collation by number.
//! Built-in knowledge covers the common ids of MySQL 8 and MariaDB; the
//! source adds the server's own `information_schema.COLLATIONS` at connect
//! time, so every id the server can write is known.

use std::collections::HashMap;

use super::error::DecodeError;
use crate::event::Text;

/// The charsets the decoder can convert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Charset {
    Binary,
    Utf8mb4,
    Utf8mb3,
    Latin1,
    Ascii,
    Ucs2,
    Utf16,
    Utf16le,
    Utf32,
    /// A charset we know by name but cannot convert.
    Other,
}

impl Charset {
    pub fn from_name(name: &str) -> Charset {
        match name {
            "binary" => Charset::Binary,
            "utf8mb4" => Charset::Utf8mb4,
            "utf8" | "utf8mb3" => Charset::Utf8mb3,
            "latin1" => Charset::Latin1,
            "ascii" => Charset::Ascii,
            "ucs2" => Charset::Ucs2,
            "utf16" => Charset::Utf16,
            "utf16le" => Charset::Utf16le,
            "utf32" => Charset::Utf32,
            _ => Charset::Other,
        }
    }

    /// Maximum bytes per character (to turn byte lengths into `varchar(n)`).
    pub fn mbmaxlen(self) -> u32 {
        match self {
            Charset::Binary | Charset::Latin1 | Charset::Ascii => 1,
            Charset::Ucs2 => 2,
            Charset::Utf8mb3 => 3,
            Charset::Utf8mb4 | Charset::Utf16 | Charset::Utf16le | Charset::Utf32 => 4,
            Charset::Other => 1,
        }
    }
}

/// Collation id -> charset.
#[derive(Debug, Clone)]
pub struct Charsets {
    by_id: HashMap<u32, (Charset, String)>,
}

impl Default for Charsets {
    fn default() -> Self {
        let mut by_id = HashMap::new();
        let mut add = |ids: &[u32], cs: &str| {
            for &id in ids {
                by_id.insert(id, (Charset::from_name(cs), cs.to_string()));
            }
        };
        add(&[63], "binary");
        add(&[5, 8, 15, 31, 47, 48, 49, 94], "latin1");
        add(&[11, 65], "ascii");
        add(&[33, 83, 223], "utf8mb3");
        add(&(192..=215).collect::<Vec<_>>(), "utf8mb3");
        add(&[45, 46], "utf8mb4");
        add(&(224..=247).collect::<Vec<_>>(), "utf8mb4");
        add(&(255..=323).collect::<Vec<_>>(), "utf8mb4");
        add(&[35, 90], "ucs2");
        add(&(128..=151).collect::<Vec<_>>(), "ucs2");
        add(&[54, 55], "utf16");
        add(&(101..=124).collect::<Vec<_>>(), "utf16");
        add(&[56, 62], "utf16le");
        add(&[60, 61], "utf32");
        add(&(160..=183).collect::<Vec<_>>(), "utf32");
        Charsets { by_id }
    }
}

impl Charsets {
    /// Add (or override) a collation id, e.g. from `information_schema.COLLATIONS`.
    pub fn insert(&mut self, id: u32, charset_name: &str) {
        self.by_id.insert(
            id,
            (Charset::from_name(charset_name), charset_name.to_string()),
        );
    }

    pub fn get(&self, id: u32) -> Option<(Charset, &str)> {
        self.by_id.get(&id).map(|(c, n)| (*c, n.as_str()))
    }
}

/// MySQL's `latin1` is Windows-1252 with the five undefined bytes mapped to C1 controls.
const CP1252_HIGH: [u16; 32] = [
    0x20AC, 0x0081, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160, 0x2039,
    0x0152, 0x008D, 0x017D, 0x008F, 0x0090, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013, 0x2014,
    0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0x009D, 0x017E, 0x0178,
];

fn utf16_units(b: &[u8], big_endian: bool, what: &str) -> Result<String, DecodeError> {
    if b.len() % 2 != 0 {
        return Err(DecodeError(format!("{what}: odd byte count for UTF-16")));
    }
    let units = b.chunks_exact(2).map(|c| {
        if big_endian {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from_le_bytes([c[0], c[1]])
        }
    });
    char::decode_utf16(units)
        .collect::<Result<String, _>>()
        .map_err(|e| DecodeError(format!("{what}: invalid UTF-16: {e}")))
}

/// [`decode`] as a row value's [`Text`]: UTF-8 (the common case) is copied
/// once, inline when short.
pub fn decode_text(cs: Charset, bytes: &[u8], what: &str) -> Result<Text, DecodeError> {
    match cs {
        Charset::Utf8mb4 | Charset::Utf8mb3 | Charset::Ascii | Charset::Binary => {
            utf8(bytes, what).map(Text::from)
        }
        _ => decode(cs, bytes, what).map(Text::from),
    }
}

/// Stored bytes of a UTF-8 (or ASCII, or binary) column, checked.
fn utf8<'a>(bytes: &'a [u8], what: &str) -> Result<&'a str, DecodeError> {
    std::str::from_utf8(bytes).map_err(|e| DecodeError(format!("{what}: invalid UTF-8: {e}")))
}

/// Convert stored bytes in `cs` to a Rust string.
pub fn decode(cs: Charset, bytes: &[u8], what: &str) -> Result<String, DecodeError> {
    match cs {
        Charset::Utf8mb4 | Charset::Utf8mb3 | Charset::Ascii | Charset::Binary => {
            utf8(bytes, what).map(str::to_string)
        }
        Charset::Latin1 => Ok(bytes
            .iter()
            .map(|&b| match b {
                0x80..=0x9F => char::from_u32(u32::from(CP1252_HIGH[usize::from(b - 0x80)]))
                    .unwrap_or('\u{FFFD}'),
                _ => char::from(b),
            })
            .collect()),
        Charset::Ucs2 | Charset::Utf16 => utf16_units(bytes, true, what),
        Charset::Utf16le => utf16_units(bytes, false, what),
        Charset::Utf32 => {
            if bytes.len() % 4 != 0 {
                return Err(DecodeError(format!("{what}: byte count not a multiple of 4 for UTF-32")));
            }
            bytes
                .chunks_exact(4)
                .map(|c| {
                    char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                        .ok_or_else(|| DecodeError(format!("{what}: invalid UTF-32 code point")))
                })
                .collect()
        }
        Charset::Other => Err(DecodeError(format!(
            "{what}: the column's character set cannot be converted by binlog-bridge (supported: utf8mb4, utf8mb3, latin1, ascii, ucs2, utf16, utf32, binary)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latin1_is_cp1252_like_mysql() {
        let s = decode(Charset::Latin1, &[b'a', 0xE9, 0x80, 0x81, 0xFF], "c").unwrap();
        assert_eq!(s, "aé€\u{81}ÿ");
    }

    #[test]
    fn utf8mb4_four_byte_and_bad_utf8() {
        assert_eq!(
            decode(Charset::Utf8mb4, "😀".as_bytes(), "c").unwrap(),
            "😀"
        );
        assert!(decode(Charset::Utf8mb4, &[0xff], "c").is_err());
    }

    #[test]
    fn collation_ids_resolve() {
        let c = Charsets::default();
        assert_eq!(c.get(255).unwrap().0, Charset::Utf8mb4);
        assert_eq!(c.get(8).unwrap().0, Charset::Latin1);
        assert_eq!(c.get(63).unwrap().0, Charset::Binary);
    }
}
