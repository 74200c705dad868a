//! A bounds-checked little reader over event bytes.
//!
//! Every binlog field is read through [`Reader`], so a truncated or mutated
//! event becomes a [`DecodeError`] naming the field, never a panic or an
//! out-of-bounds slice.

use super::error::DecodeError;

#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

fn short(what: &str, need: usize, have: usize) -> DecodeError {
    DecodeError(format!(
        "truncated event: {what} needs {need} byte(s), {have} left"
    ))
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    pub fn position(&self) -> usize {
        self.pos
    }

    /// The unread rest, without consuming it.
    pub fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    pub fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], DecodeError> {
        if n > self.remaining() {
            return Err(short(what, n, self.remaining()));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub fn skip(&mut self, n: usize, what: &str) -> Result<(), DecodeError> {
        self.take(n, what).map(|_| ())
    }

    pub fn u8(&mut self, what: &str) -> Result<u8, DecodeError> {
        Ok(self.take(1, what)?[0])
    }

    /// Little-endian unsigned integer of `n` (1..=8) bytes.
    pub fn uint_le(&mut self, n: usize, what: &str) -> Result<u64, DecodeError> {
        let b = self.take(n, what)?;
        Ok(le(b))
    }

    /// Big-endian unsigned integer of `n` (1..=8) bytes.
    pub fn uint_be(&mut self, n: usize, what: &str) -> Result<u64, DecodeError> {
        let b = self.take(n, what)?;
        Ok(be(b))
    }

    pub fn u16(&mut self, what: &str) -> Result<u16, DecodeError> {
        Ok(self.uint_le(2, what)? as u16)
    }

    pub fn u32(&mut self, what: &str) -> Result<u32, DecodeError> {
        Ok(self.uint_le(4, what)? as u32)
    }

    pub fn u64(&mut self, what: &str) -> Result<u64, DecodeError> {
        self.uint_le(8, what)
    }

    /// MySQL length-encoded ("packed") integer.
    pub fn packed(&mut self, what: &str) -> Result<u64, DecodeError> {
        match self.u8(what)? {
            n @ 0..=250 => Ok(u64::from(n)),
            252 => self.uint_le(2, what),
            253 => self.uint_le(3, what),
            254 => self.uint_le(8, what),
            b => Err(DecodeError(format!(
                "{what}: invalid packed integer prefix {b:#04x}"
            ))),
        }
    }

    /// A packed integer used as a length or count, checked against what is left.
    pub fn packed_len(&mut self, what: &str) -> Result<usize, DecodeError> {
        let n = self.packed(what)?;
        if n > self.remaining() as u64 {
            return Err(short(
                what,
                usize::try_from(n).unwrap_or(usize::MAX),
                self.remaining(),
            ));
        }
        Ok(n as usize)
    }

    /// Packed length followed by that many bytes.
    pub fn packed_bytes(&mut self, what: &str) -> Result<&'a [u8], DecodeError> {
        let n = self.packed_len(what)?;
        self.take(n, what)
    }
}

pub fn le(b: &[u8]) -> u64 {
    b.iter()
        .rev()
        .fold(0u64, |acc, &x| (acc << 8) | u64::from(x))
}

pub fn be(b: &[u8]) -> u64 {
    b.iter().fold(0u64, |acc, &x| (acc << 8) | u64::from(x))
}

/// Bit `i` of an LSB-first bitmap (row images, null bitmaps).
#[inline]
pub fn bit(bitmap: &[u8], i: usize) -> bool {
    bitmap.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0)
}

/// Bit `i` of an MSB-first bitmap (table map signedness).
#[inline]
pub fn bit_msb(bitmap: &[u8], i: usize) -> bool {
    bitmap
        .get(i / 8)
        .is_some_and(|b| b & (0x80 >> (i % 8)) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_integers_of_every_width() {
        let buf = [
            5u8, 252, 0x34, 0x12, 253, 1, 2, 3, 254, 1, 0, 0, 0, 0, 0, 0, 0,
        ];
        let mut r = Reader::new(&buf);
        assert_eq!(r.packed("a").unwrap(), 5);
        assert_eq!(r.packed("b").unwrap(), 0x1234);
        assert_eq!(r.packed("c").unwrap(), 0x030201);
        assert_eq!(r.packed("d").unwrap(), 1);
        assert!(r.is_empty());
        assert!(Reader::new(&[255]).packed("e").is_err());
        assert!(Reader::new(&[252, 1]).packed("f").is_err());
    }

    #[test]
    fn take_past_end_is_an_error() {
        let mut r = Reader::new(&[1, 2]);
        let e = r.take(3, "thing").unwrap_err();
        assert!(e.0.contains("thing"), "{e}");
        assert_eq!(r.take(2, "x").unwrap(), &[1, 2]);
    }
}
