//! GTID state, the half of a position that survives a source failover.
//!
//! MariaDB: a list of `domain-server-seq`, one per replication domain
//! (what `@slave_connect_state` takes). MySQL: a GTID set
//! `uuid:1-5:7,uuid2:1-9` (what COM_BINLOG_DUMP_GTID takes). Both are
//! updated as transactions pass and printed in the server's own text form.

use std::collections::BTreeMap;
use std::fmt;

/// The GTID state of one source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GtidState {
    MariaDb(BTreeMap<u32, (u32, u64)>),
    MySql(BTreeMap<String, Vec<(u64, u64)>>),
}

/// One transaction's GTID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gtid {
    MariaDb { domain: u32, server: u32, seq: u64 },
    MySql { uuid: String, gno: u64 },
}

impl fmt::Display for Gtid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Gtid::MariaDb {
                domain,
                server,
                seq,
            } => write!(f, "{domain}-{server}-{seq}"),
            Gtid::MySql { uuid, gno } => write!(f, "{uuid}:{gno}"),
        }
    }
}

impl GtidState {
    /// Parse a MariaDB list (`0-1-100,1-2-3`) or a MySQL set (`uuid:1-5:7`).
    pub fn parse(s: &str) -> Result<GtidState, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("empty GTID state".into());
        }
        if s.contains(':') {
            let mut m = BTreeMap::new();
            for part in s.split(',') {
                let mut it = part.trim().split(':');
                let uuid = it.next().unwrap_or("").trim().to_ascii_lowercase();
                if uuid.len() != 36 || !uuid.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
                    return Err(format!("`{part}`: `{uuid}` is not a server UUID"));
                }
                let mut ivs: Vec<(u64, u64)> = Vec::new();
                for iv in it {
                    let (a, b) = match iv.split_once('-') {
                        Some((a, b)) => (a, b),
                        None => (iv, iv),
                    };
                    let a: u64 = a
                        .parse()
                        .map_err(|_| format!("`{part}`: bad interval `{iv}`"))?;
                    let b: u64 = b
                        .parse()
                        .map_err(|_| format!("`{part}`: bad interval `{iv}`"))?;
                    if a == 0 || b < a {
                        return Err(format!("`{part}`: bad interval `{iv}`"));
                    }
                    ivs.push((a, b));
                }
                let e: &mut Vec<(u64, u64)> = m.entry(uuid).or_default();
                e.extend(ivs);
                normalize(e);
            }
            Ok(GtidState::MySql(m))
        } else {
            let mut m = BTreeMap::new();
            for part in s.split(',') {
                let nums: Vec<&str> = part.trim().split('-').collect();
                let bad = || format!("`{part}` is not DOMAIN-SERVER-SEQ");
                if nums.len() != 3 {
                    return Err(bad());
                }
                let d: u32 = nums[0].parse().map_err(|_| bad())?;
                let sv: u32 = nums[1].parse().map_err(|_| bad())?;
                let q: u64 = nums[2].parse().map_err(|_| bad())?;
                m.insert(d, (sv, q));
            }
            Ok(GtidState::MariaDb(m))
        }
    }

    /// Record that the transaction `g` has been applied.
    pub fn apply(&mut self, g: &Gtid) {
        match (self, g) {
            (
                GtidState::MariaDb(m),
                Gtid::MariaDb {
                    domain,
                    server,
                    seq,
                },
            ) => {
                m.insert(*domain, (*server, *seq));
            }
            (GtidState::MySql(m), Gtid::MySql { uuid, gno }) => {
                insert_interval(m.entry(uuid.clone()).or_default(), *gno);
            }
            (s, g) => {
                // A state of the other flavour: start over from this GTID.
                *s = GtidState::from_gtid(g);
            }
        }
    }

    pub fn from_gtid(g: &Gtid) -> GtidState {
        let mut s = match g {
            Gtid::MariaDb { .. } => GtidState::MariaDb(BTreeMap::new()),
            Gtid::MySql { .. } => GtidState::MySql(BTreeMap::new()),
        };
        s.apply(g);
        s
    }
}

fn normalize(v: &mut Vec<(u64, u64)>) {
    v.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(v.len());
    for &(a, b) in v.iter() {
        match out.last_mut() {
            Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    *v = out;
}

fn insert_interval(v: &mut Vec<(u64, u64)>, g: u64) {
    // Fast path: extends the last interval (the common, in-order case).
    if let Some(last) = v.last_mut() {
        if last.1.checked_add(1) == Some(g) {
            last.1 = g;
            return;
        }
        if g >= last.0 && g <= last.1 {
            return;
        }
    }
    v.push((g, g));
    normalize(v);
}

impl fmt::Display for GtidState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GtidState::MariaDb(m) => {
                for (i, (d, (s, q))) in m.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{d}-{s}-{q}")?;
                }
                Ok(())
            }
            GtidState::MySql(m) => {
                for (i, (uuid, ivs)) in m.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    f.write_str(uuid)?;
                    for (a, b) in ivs {
                        if a == b {
                            write!(f, ":{a}")?;
                        } else {
                            write!(f, ":{a}-{b}")?;
                        }
                    }
                }
                Ok(())
            }
        }
    }
}

/// Format 16 raw UUID bytes as text.
pub fn uuid_text(b: &[u8]) -> String {
    let h = hex::encode(b);
    if h.len() != 32 {
        return h;
    }
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mariadb_list_round_trip_and_apply() {
        let mut s = GtidState::parse("1-2-3,0-1-100").unwrap();
        assert_eq!(s.to_string(), "0-1-100,1-2-3");
        s.apply(&Gtid::MariaDb {
            domain: 0,
            server: 5,
            seq: 101,
        });
        assert_eq!(s.to_string(), "0-5-101,1-2-3");
        assert!(GtidState::parse("0-1").is_err());
    }

    #[test]
    fn mysql_set_merges_intervals() {
        let u = "3e11fa47-71ca-11e1-9e33-c80aa9429562";
        let mut s = GtidState::parse(&format!("{u}:1-5:7")).unwrap();
        s.apply(&Gtid::MySql {
            uuid: u.into(),
            gno: 6,
        });
        assert_eq!(s.to_string(), format!("{u}:1-7"));
        s.apply(&Gtid::MySql {
            uuid: u.into(),
            gno: 9,
        });
        assert_eq!(s.to_string(), format!("{u}:1-7:9"));
        assert!(GtidState::parse("nope:1-2").is_err());
        assert!(GtidState::parse(&format!("{u}:5-2")).is_err());
    }
}
