//! The binlog event envelope and the non-row events the source needs:
//! common header, CRC32 check, FORMAT_DESCRIPTION, ROTATE, QUERY (plain and
//! MariaDB-compressed), XID, MariaDB GTID / GTID_LIST, MySQL GTID /
//! PREVIOUS_GTIDS.
//!
//! Layouts follow mysql-server `libbinlogevents` and MariaDB `log_event.h`.

use super::bytes::Reader;
use super::error::DecodeError;
use super::gtid::{uuid_text, Gtid, GtidState};

/// Event type codes (both servers; MariaDB's own start at 160).
pub mod t {
    pub const QUERY: u8 = 2;
    pub const STOP: u8 = 3;
    pub const ROTATE: u8 = 4;
    pub const FORMAT_DESCRIPTION: u8 = 15;
    pub const XID: u8 = 16;
    pub const TABLE_MAP: u8 = 19;
    pub const INCIDENT: u8 = 26;
    pub const HEARTBEAT: u8 = 27;
    pub const GTID: u8 = 33;
    pub const ANONYMOUS_GTID: u8 = 34;
    pub const PREVIOUS_GTIDS: u8 = 35;
    pub const XA_PREPARE: u8 = 38;
    pub const TRANSACTION_PAYLOAD: u8 = 40;
    pub const HEARTBEAT_V2: u8 = 41;
    pub const MARIA_ANNOTATE_ROWS: u8 = 160;
    pub const MARIA_BINLOG_CHECKPOINT: u8 = 161;
    pub const MARIA_GTID: u8 = 162;
    pub const MARIA_GTID_LIST: u8 = 163;
    pub const MARIA_START_ENCRYPTION: u8 = 164;
    pub const MARIA_QUERY_COMPRESSED: u8 = 165;
}

pub const HEADER_LEN: usize = 19;
/// Event flag: created by the server for the dump, not stored in the file.
pub const ARTIFICIAL_F: u16 = 0x20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub timestamp: u32,
    pub type_code: u8,
    pub server_id: u32,
    pub event_size: u32,
    pub log_pos: u32,
    pub flags: u16,
}

impl Header {
    pub fn parse(raw: &[u8]) -> Result<Header, DecodeError> {
        let mut r = Reader::new(raw);
        let h = Header {
            timestamp: r.u32("event timestamp")?,
            type_code: r.u8("event type")?,
            server_id: r.u32("server id")?,
            event_size: r.u32("event size")?,
            log_pos: r.u32("log position")?,
            flags: r.u16("event flags")?,
        };
        if h.event_size as usize != raw.len() {
            return Err(DecodeError(format!(
                "event size field says {} bytes, the event has {}",
                h.event_size,
                raw.len()
            )));
        }
        Ok(h)
    }

    /// Offset of the event's first byte in its file, when the server says.
    pub fn start_offset(&self) -> Option<u64> {
        (self.log_pos != 0 && self.log_pos >= self.event_size)
            .then(|| u64::from(self.log_pos - self.event_size))
    }
}

/// CRC32 (ISO-HDLC, as zlib) of `raw` without its last 4 bytes, and the stored value.
pub fn checksum(raw: &[u8]) -> Option<(u32, u32)> {
    let n = raw.len().checked_sub(4)?;
    let stored = u32::from_le_bytes([raw[n], raw[n + 1], raw[n + 2], raw[n + 3]]);
    Some((stored, crc32fast::hash(&raw[..n])))
}

/// FORMAT_DESCRIPTION_EVENT: post-header lengths and checksum algorithm.
pub struct Fde {
    pub server_version: String,
    pub post_header_lens: Vec<u8>,
    pub checksum_crc32: bool,
}

pub fn parse_fde(body_with_footer: &[u8]) -> Result<Fde, DecodeError> {
    let mut r = Reader::new(body_with_footer);
    let version = r.u16("binlog version")?;
    if version != 4 {
        return Err(DecodeError(format!(
            "binlog version {version}; only v4 (MySQL >= 5.0) is supported"
        )));
    }
    let sv = r.take(50, "server version")?;
    let server_version =
        String::from_utf8_lossy(sv.split(|&b| b == 0).next().unwrap_or(&[])).into_owned();
    r.skip(4, "create timestamp")?;
    let header_len = r.u8("header length")?;
    if usize::from(header_len) != HEADER_LEN {
        return Err(DecodeError(format!(
            "event header length {header_len}, expected 19"
        )));
    }
    // The rest: post-header lengths, then checksum algorithm (1) and checksum (4).
    let rest = r.rest();
    if rest.len() < 5 {
        return Err(DecodeError::new("format description too short"));
    }
    let lens = &rest[..rest.len() - 5];
    let alg = rest[rest.len() - 5];
    Ok(Fde {
        server_version,
        post_header_lens: lens.to_vec(),
        checksum_crc32: alg == 1,
    })
}

/// ROTATE_EVENT: next file name and position.
pub fn parse_rotate(body: &[u8]) -> Result<(String, u64), DecodeError> {
    let mut r = Reader::new(body);
    let pos = r.u64("rotate position")?;
    let name = String::from_utf8(r.rest().to_vec())
        .map_err(|_| DecodeError::new("rotate: file name is not UTF-8"))?;
    if name.is_empty() {
        return Err(DecodeError::new("rotate: empty file name"));
    }
    Ok((name, pos))
}

/// QUERY_EVENT: default database and statement text.
pub fn parse_query(
    body: &[u8],
    post_header_len: u8,
    compressed: bool,
) -> Result<(String, String), DecodeError> {
    let mut r = Reader::new(body);
    r.skip(8, "query thread id and exec time")?;
    let db_len = usize::from(r.u8("query db length")?);
    r.skip(2, "query error code")?;
    let status_len = if post_header_len >= 13 {
        usize::from(r.u16("status vars length")?)
    } else {
        0
    };
    r.skip(
        usize::from(post_header_len).saturating_sub(13),
        "query post-header",
    )?;
    r.skip(status_len, "query status vars")?;
    let db = String::from_utf8_lossy(r.take(db_len, "query db")?).into_owned();
    r.skip(1, "query db terminator")?;
    let text = if compressed {
        super::compress::uncompress(r.rest())?
    } else {
        r.rest().to_vec()
    };
    let stmt = String::from_utf8(text)
        .map_err(|e| DecodeError(format!("query text is not UTF-8: {e}")))?;
    Ok((db, stmt))
}

/// MariaDB GTID_EVENT: the GTID and whether the transaction is standalone
/// (DDL: no BEGIN/COMMIT around it).
pub fn parse_maria_gtid(body: &[u8], server_id: u32) -> Result<(Gtid, bool), DecodeError> {
    let mut r = Reader::new(body);
    let seq = r.u64("gtid seq_no")?;
    let domain = r.u32("gtid domain")?;
    let flags = r.u8("gtid flags")?;
    Ok((
        Gtid::MariaDb {
            domain,
            server: server_id,
            seq,
        },
        flags & 1 != 0,
    ))
}

/// MariaDB GTID_LIST_EVENT: the GTID state at the start of a file.
pub fn parse_maria_gtid_list(body: &[u8]) -> Result<GtidState, DecodeError> {
    let mut r = Reader::new(body);
    let count = r.u32("gtid list count")? & 0x0fff_ffff;
    let mut m = std::collections::BTreeMap::new();
    for _ in 0..count {
        let d = r.u32("gtid list domain")?;
        let s = r.u32("gtid list server")?;
        let q = r.u64("gtid list seq")?;
        m.insert(d, (s, q));
    }
    Ok(GtidState::MariaDb(m))
}

/// MySQL GTID_LOG_EVENT / ANONYMOUS_GTID_LOG_EVENT.
pub fn parse_mysql_gtid(body: &[u8], anonymous: bool) -> Result<Option<Gtid>, DecodeError> {
    let mut r = Reader::new(body);
    r.skip(1, "gtid flags")?;
    let sid = r.take(16, "gtid sid")?;
    let gno = r.u64("gtid gno")?;
    if anonymous {
        return Ok(None);
    }
    Ok(Some(Gtid::MySql {
        uuid: uuid_text(sid),
        gno,
    }))
}

/// MySQL PREVIOUS_GTIDS_LOG_EVENT: the executed GTID set before this file.
pub fn parse_previous_gtids(body: &[u8]) -> Result<GtidState, DecodeError> {
    let mut r = Reader::new(body);
    let n = r.u64("previous gtids count")?;
    let mut m = std::collections::BTreeMap::new();
    for _ in 0..n {
        let sid = r.take(16, "previous gtids sid")?;
        let n_iv = r.u64("previous gtids intervals")?;
        if n_iv > r.remaining() as u64 / 16 {
            return Err(DecodeError::new("previous gtids: interval count past end"));
        }
        let mut ivs = Vec::new();
        for _ in 0..n_iv {
            let a = r.u64("interval start")?;
            let b = r.u64("interval end")?;
            if b <= a {
                return Err(DecodeError::new("previous gtids: empty interval"));
            }
            ivs.push((a, b - 1));
        }
        m.insert(uuid_text(sid), ivs);
    }
    Ok(GtidState::MySql(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn previous_gtids_fixture() {
        // One SID with interval [1, 6) -> uuid:1-5 (libbinlogevents encodes end exclusive).
        let mut b = 1u64.to_le_bytes().to_vec();
        b.extend([
            0x3e, 0x11, 0xfa, 0x47, 0x71, 0xca, 0x11, 0xe1, 0x9e, 0x33, 0xc8, 0x0a, 0xa9, 0x42,
            0x95, 0x62,
        ]);
        b.extend(1u64.to_le_bytes());
        b.extend(1u64.to_le_bytes());
        b.extend(6u64.to_le_bytes());
        let s = parse_previous_gtids(&b).unwrap();
        assert_eq!(s.to_string(), "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5");
        assert!(parse_previous_gtids(&b[..20]).is_err());
    }

    #[test]
    fn mysql_gtid_fixture() {
        let mut b = vec![1u8];
        b.extend([
            0x3e, 0x11, 0xfa, 0x47, 0x71, 0xca, 0x11, 0xe1, 0x9e, 0x33, 0xc8, 0x0a, 0xa9, 0x42,
            0x95, 0x62,
        ]);
        b.extend(42u64.to_le_bytes());
        b.extend([2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        let g = parse_mysql_gtid(&b, false).unwrap().unwrap();
        assert_eq!(g.to_string(), "3e11fa47-71ca-11e1-9e33-c80aa9429562:42");
        assert_eq!(parse_mysql_gtid(&b, true).unwrap(), None);
    }

    #[test]
    fn header_size_mismatch_is_an_error() {
        let mut raw = vec![0u8; 19];
        raw[9] = 20;
        assert!(Header::parse(&raw).is_err());
        raw[9] = 19;
        assert!(Header::parse(&raw).is_ok());
    }
}
