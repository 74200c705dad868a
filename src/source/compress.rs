//! MariaDB compressed events (`log_bin_compress=ON`): QUERY_COMPRESSED and
//! the *_ROWS_COMPRESSED events carry zlib data behind a small header.
//!
//! Header byte: `0x80 | n` where the low 3 bits give how many big-endian
//! bytes of uncompressed length follow (mariadb `binlog_get_uncompress_len`).

use std::io::Read;

use super::error::DecodeError;

/// Largest uncompressed size accepted (MariaDB's own limit is 1 GiB events).
const MAX_LEN: usize = 1 << 30;

pub fn uncompress(b: &[u8]) -> Result<Vec<u8>, DecodeError> {
    let first = *b
        .first()
        .ok_or_else(|| DecodeError::new("compressed event: empty body"))?;
    if first & 0xe0 != 0x80 {
        return Err(DecodeError(format!(
            "compressed event: bad header byte {first:#04x}"
        )));
    }
    let n = usize::from(first & 0x07);
    if n == 0 || n > 4 || b.len() < 1 + n {
        return Err(DecodeError(format!(
            "compressed event: bad length size {n}"
        )));
    }
    let len = b[1..1 + n]
        .iter()
        .fold(0usize, |a, &x| (a << 8) | usize::from(x));
    if len > MAX_LEN {
        return Err(DecodeError(format!(
            "compressed event: uncompressed length {len} too large"
        )));
    }
    let mut out = Vec::with_capacity(len);
    let mut z = flate2::read::ZlibDecoder::new(&b[1 + n..]).take(len as u64 + 1);
    z.read_to_end(&mut out)
        .map_err(|e| DecodeError(format!("compressed event: zlib: {e}")))?;
    if out.len() != len {
        return Err(DecodeError(format!(
            "compressed event: expected {len} bytes, zlib gave {}",
            out.len()
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn round_trip_and_errors() {
        let data = b"hello hello hello hello".repeat(10);
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(&data).unwrap();
        let packed = z.finish().unwrap();
        let mut ev = vec![0x82, (data.len() >> 8) as u8, data.len() as u8];
        ev.extend(&packed);
        assert_eq!(uncompress(&ev).unwrap(), data);
        ev[2] ^= 1;
        assert!(uncompress(&ev).is_err());
        assert!(uncompress(&[0x00]).is_err());
        assert!(uncompress(&[]).is_err());
    }
}
