//! A tiny append-only JSON writer.
//!
//! The formats write every message field by field, in the order the wire
//! format documents (so golden files read like the specs), straight into one
//! byte buffer: no intermediate `serde_json::Value` tree per row, which keeps
//! encoding cheap on the hot path. It only ever produces valid JSON as long as
//! callers pair `begin_*`/`end_*` and put a value after each `key`.

use std::io::Write;

use crate::event::{Date, DateTime, Time};

pub(crate) struct JsonWriter {
    buf: Vec<u8>,
    /// A value was just written at the current nesting level: the next item needs a comma.
    comma: bool,
}

impl JsonWriter {
    pub(crate) fn with_capacity(n: usize) -> Self {
        JsonWriter {
            buf: Vec::with_capacity(n),
            comma: false,
        }
    }

    pub(crate) fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    fn sep(&mut self) {
        if self.comma {
            self.buf.push(b',');
        }
    }

    pub(crate) fn begin_object(&mut self) {
        self.sep();
        self.buf.push(b'{');
        self.comma = false;
    }

    pub(crate) fn end_object(&mut self) {
        self.buf.push(b'}');
        self.comma = true;
    }

    pub(crate) fn begin_array(&mut self) {
        self.sep();
        self.buf.push(b'[');
        self.comma = false;
    }

    pub(crate) fn end_array(&mut self) {
        self.buf.push(b']');
        self.comma = true;
    }

    /// An object key; the next call must write its value.
    pub(crate) fn key(&mut self, k: &str) {
        self.sep();
        escape_into(&mut self.buf, k);
        self.buf.push(b':');
        self.comma = false;
    }

    /// A key written in the source as a literal: it is copied without the
    /// escape scan (literal keys are plain ASCII names; checked in debug builds).
    pub(crate) fn lit_key(&mut self, k: &'static str) {
        debug_assert!(!needs_escape(k), "literal key {k:?} needs escaping");
        self.sep();
        self.buf.push(b'"');
        self.buf.extend_from_slice(k.as_bytes());
        self.buf.extend_from_slice(b"\":");
        self.comma = false;
    }

    /// A string value written in the source as a literal, copied without the
    /// escape scan (checked in debug builds).
    pub(crate) fn lit_string(&mut self, s: &'static str) {
        debug_assert!(!needs_escape(s), "literal string {s:?} needs escaping");
        self.sep();
        self.buf.push(b'"');
        self.buf.extend_from_slice(s.as_bytes());
        self.buf.push(b'"');
        self.comma = true;
    }

    pub(crate) fn string(&mut self, s: &str) {
        self.sep();
        escape_into(&mut self.buf, s);
        self.comma = true;
    }

    pub(crate) fn null(&mut self) {
        self.raw("null");
    }

    pub(crate) fn bool(&mut self, b: bool) {
        self.raw(if b { "true" } else { "false" });
    }

    /// An object key already escaped and quoted, with its colon
    /// (`"name":`, from [`FieldNames`](super::FieldNames)); the next call
    /// must write its value.
    pub(crate) fn quoted_key(&mut self, quoted: &[u8]) {
        self.sep();
        self.buf.extend_from_slice(quoted);
        self.comma = false;
    }

    pub(crate) fn i64(&mut self, n: i64) {
        self.sep();
        self.buf
            .extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
        self.comma = true;
    }

    pub(crate) fn u64(&mut self, n: u64) {
        self.sep();
        self.buf
            .extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
        self.comma = true;
    }

    /// An integer as a JSON string, `"-12"` (Canal's text values).
    pub(crate) fn i64_text(&mut self, n: i64) {
        self.sep();
        self.buf.push(b'"');
        self.buf
            .extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
        self.buf.push(b'"');
        self.comma = true;
    }

    /// An unsigned integer as a JSON string, `"12"`.
    pub(crate) fn u64_text(&mut self, n: u64) {
        self.sep();
        self.buf.push(b'"');
        self.buf
            .extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
        self.buf.push(b'"');
        self.comma = true;
    }

    /// A DATE as a JSON string, the same text as its `Display`
    /// (`"2024-02-29"`), written without a `String` in between.
    pub(crate) fn date(&mut self, d: &Date) {
        self.sep();
        self.buf.push(b'"');
        push_date(&mut self.buf, d);
        self.buf.push(b'"');
        self.comma = true;
    }

    /// A TIME as a JSON string, the same text as its `Display`
    /// (`"-838:59:59.000000"`).
    pub(crate) fn time(&mut self, t: &Time) {
        self.sep();
        self.buf.push(b'"');
        if t.negative {
            self.buf.push(b'-');
        }
        push_padded(&mut self.buf, u64::from(t.hours), 2);
        self.buf.push(b':');
        push_padded(&mut self.buf, u64::from(t.minutes), 2);
        self.buf.push(b':');
        push_padded(&mut self.buf, u64::from(t.seconds), 2);
        push_frac(&mut self.buf, t.micros, t.fsp);
        self.buf.push(b'"');
        self.comma = true;
    }

    /// A DATETIME as a JSON string, the same text as its `Display`
    /// (`"2024-02-29 13:45:00.120"`).
    pub(crate) fn datetime(&mut self, dt: &DateTime) {
        self.sep();
        self.buf.push(b'"');
        push_date(&mut self.buf, &dt.date);
        self.buf.push(b' ');
        push_padded(&mut self.buf, u64::from(dt.hour), 2);
        self.buf.push(b':');
        push_padded(&mut self.buf, u64::from(dt.minute), 2);
        self.buf.push(b':');
        push_padded(&mut self.buf, u64::from(dt.second), 2);
        push_frac(&mut self.buf, dt.micros, dt.fsp);
        self.buf.push(b'"');
        self.comma = true;
    }

    /// Shortest text that reads back as the same f64; NaN and infinities
    /// (which MySQL cannot store) become `null`.
    pub(crate) fn f64(&mut self, x: f64) {
        if x.is_finite() {
            self.sep();
            write_float(&mut self.buf, x, x.abs());
            self.comma = true;
        } else {
            self.null();
        }
    }

    /// Shortest text that reads back as the same f32 (not the f64 widening:
    /// FLOAT 0.1 prints as `0.1`, not `0.10000000149011612`).
    pub(crate) fn f32(&mut self, x: f32) {
        if x.is_finite() {
            self.sep();
            write_float(&mut self.buf, x, f64::from(x.abs()));
            self.comma = true;
        } else {
            self.null();
        }
    }

    /// A JSON number given as text, written verbatim when it is a valid JSON
    /// number (exact DECIMAL), as a string otherwise.
    pub(crate) fn number_text(&mut self, s: &str) {
        if is_json_number(s) {
            self.raw(s);
        } else {
            self.string(s);
        }
    }

    /// Pre-encoded JSON (caller guarantees validity).
    pub(crate) fn raw(&mut self, s: &str) {
        self.sep();
        self.buf.extend_from_slice(s.as_bytes());
        self.comma = true;
    }
}

/// Shortest round-trip text of a finite float, plain for everyday
/// magnitudes and in exponent form (`-1.5e300`, `1e-7`) outside
/// 1e-5..1e16, so huge DOUBLEs do not print 300 digits. Valid JSON either way.
pub(crate) fn float_text<T: zmij::Float>(x: T, abs: f64) -> String {
    let mut buf = Vec::with_capacity(24);
    write_float(&mut buf, x, abs);
    // Digits, '-', '.' and 'e' only.
    String::from_utf8(buf).unwrap_or_default()
}

/// [`float_text`] appended to `buf` (no String in between: the encoders'
/// hot path). The text is the one `{x}` (plain) or `{x:e}` (exponent form)
/// prints; the shortest digits come from zmij, several times faster than
/// `core::fmt`'s, and are laid out here (a test compares the two).
fn write_float<T: zmij::Float>(buf: &mut Vec<u8>, x: T, abs: f64) {
    let mut b = zmij::Buffer::new();
    let text = b.format_finite(x).as_bytes();
    let (neg, text) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, text),
    };
    // text = mantissa ['e' exponent]; the value is 0.DIGITS x 10^point.
    let (mant, exp) = match text.iter().position(|&c| c == b'e') {
        Some(i) => (&text[..i], parse_exponent(&text[i + 1..])),
        None => (text, 0),
    };
    // Digits without the '.', and how many of them come before it.
    let mut digits = [0u8; 32];
    let mut n = 0;
    let mut point: Option<i32> = None;
    for &c in mant {
        if c == b'.' {
            point = Some(n as i32);
        } else if n < digits.len() {
            digits[n] = c;
            n += 1;
        }
    }
    let mut point = point.unwrap_or(n as i32);
    let lead = digits[..n].iter().take_while(|&&c| c == b'0').count();
    digits.copy_within(lead..n, 0);
    n -= lead;
    point -= lead as i32;
    while n > 0 && digits[n - 1] == b'0' {
        n -= 1;
    }
    let point = point + exp;
    if neg {
        buf.push(b'-');
    }
    if n == 0 {
        buf.push(b'0');
        return;
    }
    let d = &digits[..n];
    if abs == 0.0 || (1e-5..1e16).contains(&abs) {
        if point <= 0 {
            buf.extend_from_slice(b"0.");
            buf.resize(buf.len() + (-point) as usize, b'0');
            buf.extend_from_slice(d);
        } else if point as usize >= n {
            buf.extend_from_slice(d);
            buf.resize(buf.len() + (point as usize - n), b'0');
        } else {
            buf.extend_from_slice(&d[..point as usize]);
            buf.push(b'.');
            buf.extend_from_slice(&d[point as usize..]);
        }
    } else {
        buf.push(d[0]);
        if n > 1 {
            buf.push(b'.');
            buf.extend_from_slice(&d[1..]);
        }
        buf.push(b'e');
        let mut ib = itoa::Buffer::new();
        buf.extend_from_slice(ib.format(point - 1).as_bytes());
    }
}

/// The exponent after zmij's 'e': optional sign, then digits.
fn parse_exponent(t: &[u8]) -> i32 {
    let (neg, t) = match t.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, t),
    };
    let v = t
        .iter()
        .fold(0i32, |v, &c| v * 10 + i32::from(c.wrapping_sub(b'0')));
    if neg {
        -v
    } else {
        v
    }
}

/// `n` in decimal, zero-padded to at least `width` digits (`{n:0width$}`).
fn push_padded(buf: &mut Vec<u8>, n: u64, width: usize) {
    let mut b = itoa::Buffer::new();
    let digits = b.format(n).as_bytes();
    for _ in digits.len()..width {
        buf.push(b'0');
    }
    buf.extend_from_slice(digits);
}

/// `YYYY-MM-DD`, as `Date`'s `Display` (`{:04}-{:02}-{:02}`).
fn push_date(buf: &mut Vec<u8>, d: &Date) {
    push_padded(buf, u64::from(d.year), 4);
    buf.push(b'-');
    push_padded(buf, u64::from(d.month), 2);
    buf.push(b'-');
    push_padded(buf, u64::from(d.day), 2);
}

/// `.` and the first `fsp` (at most 6) digits of `micros` zero-padded to
/// six, nothing when `fsp` is 0: the same as the temporal `Display`s.
fn push_frac(buf: &mut Vec<u8>, micros: u32, fsp: u8) {
    if fsp == 0 {
        return;
    }
    let mut b = itoa::Buffer::new();
    let text = b.format(micros).as_bytes();
    let want = usize::from(fsp.min(6));
    // The first `want` characters of `text` left-padded with zeros to six.
    let zeros = 6usize.saturating_sub(text.len()).min(want);
    buf.push(b'.');
    for _ in 0..zeros {
        buf.push(b'0');
    }
    buf.extend_from_slice(&text[..want - zeros]);
}

/// Whether `s` holds a control character, `"` or `\\`: eight bytes per step
/// (the zero-byte and less-than tests of "Bit Twiddling Hacks", exact as a
/// yes/no for any byte below 0x80; bytes of 0x80 and above never match).
fn needs_escape(s: &str) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH != 0;
    let mut chunks = s.as_bytes().chunks_exact(8);
    for c in &mut chunks {
        let mut a = [0u8; 8];
        a.copy_from_slice(c);
        let x = u64::from_le_bytes(a);
        if x.wrapping_sub(ONES * 0x20) & !x & HIGH != 0
            || has_zero(x ^ (ONES * u64::from(b'"')))
            || has_zero(x ^ (ONES * u64::from(b'\\')))
        {
            return true;
        }
    }
    chunks
        .remainder()
        .iter()
        .any(|&b| b < 0x20 || b == b'"' || b == b'\\')
}

pub(crate) fn escape_into(buf: &mut Vec<u8>, s: &str) {
    buf.push(b'"');
    let bytes = s.as_bytes();
    // Most strings (names, numbers as text, dates) need no escape: one tight
    // scan and one copy (this function was the largest self cost of the
    // bridge under callgrind). A 16-byte-block scan the compiler vectorises
    // was tried: no difference in the bridge's CPU time (3 rounds, 300k rows
    // of workload (c)), so this stays the plain scan.
    if !needs_escape(s) {
        buf.extend_from_slice(bytes);
        buf.push(b'"');
        return;
    }
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..=0x1f => {
                buf.extend_from_slice(&bytes[start..i]);
                let _ = write!(buf, "\\u{b:04x}");
                start = i + 1;
                continue;
            }
            _ => continue,
        };
        buf.extend_from_slice(&bytes[start..i]);
        buf.extend_from_slice(esc);
        start = i + 1;
    }
    buf.extend_from_slice(&bytes[start..]);
    buf.push(b'"');
}

/// JSON number grammar: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
pub(crate) fn is_json_number(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    if b.first() == Some(&b'-') {
        i += 1;
    }
    let digits = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i - start
    };
    let int_start = i;
    let n = digits(&mut i);
    if n == 0 || (n > 1 && b[int_start] == b'0') {
        return false;
    }
    if i < b.len() && b[i] == b'.' {
        i += 1;
        if digits(&mut i) == 0 {
            return false;
        }
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == b.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The layout `write_float` reproduces: std's shortest `Display` and
    /// `LowerExp` of the float (what it wrote before it used zmij).
    fn float_reference<T: std::fmt::Display + std::fmt::LowerExp>(x: T, abs: f64) -> String {
        if abs == 0.0 || (1e-5..1e16).contains(&abs) {
            format!("{x}")
        } else {
            format!("{x:e}")
        }
    }

    #[test]
    fn floats_print_as_std_prints_them() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed_f10a7);
        let mut doubles = vec![
            0.0,
            -0.0,
            1.0,
            -1.0,
            0.1,
            0.3,
            1e-5,
            9.999999999999999e-6,
            1e16,
            9999999999999998.0,
            123456789.125,
            f64::MAX,
            f64::MIN,
            f64::MIN_POSITIVE,
            5e-324,
            1e22,
            1e23,
            2.5e-8,
        ];
        let mut floats = vec![
            0.0f32,
            -0.0,
            0.1,
            1e-7,
            16777216.0,
            f32::MAX,
            f32::MIN_POSITIVE,
            1e-45,
            3.4e38,
        ];
        for _ in 0..1_000_000 {
            doubles.push(f64::from_bits(rng.gen()));
            floats.push(f32::from_bits(rng.gen()));
            // Everyday magnitudes, where random bits rarely land.
            doubles.push(rng.gen_range(-1e6..1e6));
            doubles.push((rng.gen_range(-1e9..1e9f64) * 100.0).round() / 100.0);
            floats.push(rng.gen_range(-1e4..1e4f32));
        }
        let mut ties = 0;
        for x in doubles.into_iter().filter(|x| x.is_finite()) {
            let mut buf = Vec::new();
            write_float(&mut buf, x, x.abs());
            let ours = String::from_utf8(buf).unwrap();
            let std = float_reference(x, x.abs());
            if ours != std {
                ties += 1;
                same_but_for_a_tie(&ours, &std);
                assert_eq!(ours.parse::<f64>().ok(), Some(x), "{ours} reads back");
            }
        }
        for x in floats.into_iter().filter(|x| x.is_finite()) {
            let abs = f64::from(x.abs());
            let mut buf = Vec::new();
            write_float(&mut buf, x, abs);
            let ours = String::from_utf8(buf).unwrap();
            let std = float_reference(x, abs);
            if ours != std {
                ties += 1;
                same_but_for_a_tie(&ours, &std);
                assert_eq!(ours.parse::<f32>().ok(), Some(x), "{ours} reads back");
            }
        }
        // Only exact halves differ (most from the cent-rounded doubles).
        assert!(ties < 40_000, "{ties} of 5 million differ from std");
    }

    /// Where the value lies exactly halfway between two shortest digit
    /// strings, zmij rounds the last digit to even and std up: the same
    /// layout, only the last digit differs, by one.
    fn same_but_for_a_tie(ours: &str, std: &str) {
        let (a, b) = (ours.as_bytes(), std.as_bytes());
        assert_eq!(a.len(), b.len(), "{ours} vs std {std}");
        let diff: Vec<usize> = (0..a.len()).filter(|&i| a[i] != b[i]).collect();
        assert_eq!(diff.len(), 1, "{ours} vs std {std}");
        let i = diff[0];
        assert!(
            a[i].is_ascii_digit() && b[i].is_ascii_digit(),
            "{ours} vs std {std}"
        );
        assert_eq!(a[i].abs_diff(b[i]), 1, "{ours} vs std {std}");
        assert!(
            i + 1 == a.len() || !a[i + 1].is_ascii_digit(),
            "last digit: {ours} vs std {std}"
        );
        assert_eq!((a[i] - b'0') % 2, 0, "rounded to even: {ours} vs std {std}");
    }

    #[test]
    fn writes_nested_structures_that_serde_reads_back() {
        let mut w = JsonWriter::with_capacity(64);
        w.begin_object();
        w.key("a\"b");
        w.string("line\nbreak\u{1}\\");
        w.key("n");
        w.begin_array();
        w.i64(-1);
        w.u64(u64::MAX);
        w.f32(0.1);
        w.f64(f64::NAN);
        w.f64(-1.5e300);
        w.f32(1e-7);
        w.number_text("-12.340");
        w.number_text("01");
        w.end_array();
        w.key("o");
        w.begin_object();
        w.end_object();
        w.end_object();
        let text = String::from_utf8(w.into_bytes()).unwrap();
        assert_eq!(
            text,
            r#"{"a\"b":"line\nbreak\u0001\\","n":[-1,18446744073709551615,0.1,null,-1.5e300,1e-7,-12.340,"01"],"o":{}}"#
        );
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["a\"b"], "line\nbreak\u{1}\\");
    }

    #[test]
    fn needs_escape_finds_every_special_byte_at_every_offset() {
        for len in 0..40usize {
            for at in 0..len {
                for b in 0u8..=0xff {
                    let mut bytes = vec![b'a'; len];
                    bytes[at] = b;
                    // Bytes over 0x7f alone are not UTF-8; pair them as é.
                    let Ok(s) = String::from_utf8(bytes.clone()) else {
                        continue;
                    };
                    let want = b < 0x20 || b == b'"' || b == b'\\';
                    assert_eq!(needs_escape(&s), want, "byte {b:#x} at {at} of {len}");
                }
            }
            // Multi-byte characters (bytes 0x80 and above) never need an escape.
            let s: String = "é".repeat(len);
            assert!(!needs_escape(&s));
            let s = format!("{s}\u{1}");
            assert!(needs_escape(&s));
        }
    }

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        let mut cases: Vec<String> = (0u8..0x80).map(|b| format!("x{}y", b as char)).collect();
        cases.extend([
            "".into(),
            "plain ascii".into(),
            "Grüße 日本 🎉".into(),
            "a\"b\\c\u{7f}".into(),
        ]);
        // Longer strings, with an escaped byte at every place of a
        // 39-character one (start, middle, end; after multi-byte characters).
        for special in ['"', '\\', '\n', '\u{1}', '\u{1f}'] {
            for at in 0..40 {
                let mut s: String = "Grüße-0123456789-abcdefghijklmnop-xyz"
                    .chars()
                    .take(38)
                    .collect();
                let byte = s.char_indices().nth(at).map_or(s.len(), |(i, _)| i);
                s.insert(byte, special);
                cases.push(s);
            }
        }
        cases.push("n".repeat(200));
        for s in cases {
            let mut buf = Vec::new();
            escape_into(&mut buf, &s);
            assert_eq!(
                String::from_utf8(buf).unwrap(),
                serde_json::to_string(&s).unwrap(),
                "{s:?}"
            );
        }
    }

    /// The temporal and integer writers print exactly what the `Display`
    /// text they replace printed (messages stay byte-identical).
    #[test]
    fn direct_writers_match_display_text() {
        fn text(f: impl FnOnce(&mut JsonWriter)) -> String {
            let mut w = JsonWriter::with_capacity(32);
            f(&mut w);
            String::from_utf8(w.into_bytes()).unwrap()
        }
        let quoted = |s: String| format!("\"{s}\"");
        for year in [0, 7, 99, 1970, 2024, 9999, 10000, u16::MAX] {
            for (month, day) in [(0, 0), (1, 9), (12, 31)] {
                let d = Date { year, month, day };
                assert_eq!(text(|w| w.date(&d)), quoted(d.to_string()));
            }
        }
        for micros in [0, 1, 9, 10, 120_000, 999_999, 1_000_000, 4_294_967_295] {
            for fsp in 0..=7 {
                for (negative, hours) in [
                    (false, 0),
                    (true, 5),
                    (false, 99),
                    (true, 838),
                    (false, 1000),
                ] {
                    let t = Time {
                        negative,
                        hours,
                        minutes: 7,
                        seconds: 59,
                        micros,
                        fsp,
                    };
                    assert_eq!(text(|w| w.time(&t)), quoted(t.to_string()), "{t:?}");
                }
                let dt = DateTime {
                    date: Date {
                        year: 2024,
                        month: 2,
                        day: 29,
                    },
                    hour: 3,
                    minute: 45,
                    second: 0,
                    micros,
                    fsp,
                };
                assert_eq!(text(|w| w.datetime(&dt)), quoted(dt.to_string()), "{dt:?}");
            }
        }
        for n in [i64::MIN, -1, 0, 7, 1_234_567, i64::MAX] {
            assert_eq!(text(|w| w.i64(n)), n.to_string());
            assert_eq!(text(|w| w.i64_text(n)), quoted(n.to_string()));
        }
        for n in [0, 1, 1 << 40, u64::MAX] {
            assert_eq!(text(|w| w.u64(n)), n.to_string());
            assert_eq!(text(|w| w.u64_text(n)), quoted(n.to_string()));
        }
        // Separators between them as between any values.
        let both = text(|w| {
            w.begin_array();
            w.i64_text(1);
            w.date(&Date {
                year: 2024,
                month: 1,
                day: 2,
            });
            w.u64(3);
            w.end_array();
        });
        assert_eq!(both, r#"["1","2024-01-02",3]"#);
    }

    #[test]
    fn literals_are_written_as_escaped_ones() {
        let mut lit = JsonWriter::with_capacity(32);
        let mut esc = JsonWriter::with_capacity(32);
        lit.begin_object();
        lit.lit_key("ts_ms");
        lit.lit_string("binlog-bridge 0.1.0");
        lit.lit_key("sql");
        lit.lit_string("");
        lit.end_object();
        esc.begin_object();
        esc.key("ts_ms");
        esc.string("binlog-bridge 0.1.0");
        esc.key("sql");
        esc.string("");
        esc.end_object();
        assert_eq!(lit.into_bytes(), esc.into_bytes());
    }

    #[test]
    fn json_number_grammar() {
        for ok in ["0", "-0", "1.5", "-1234.5600", "1e5", "2E-3"] {
            assert!(is_json_number(ok), "{ok}");
        }
        for bad in ["", "-", "01", "1.", ".5", "1e", "NaN", "1.2.3", "+1"] {
            assert!(!is_json_number(bad), "{bad}");
        }
    }
}
