//! On-demand re-snapshot: `binlog-bridge snapshot db.table...` asks the
//! leader to send the chosen tables' rows again while streaming continues.
//!
//! **Position-aligned chunks** (no stream pause, no filter). For each chunk:
//!
//! 1. A consistent read (`START TRANSACTION WITH CONSISTENT SNAPSHOT` on a
//!    connection of its own) gives the binlog position `S` of what it sees;
//!    it reads up to `snapshot.chunk_rows` rows after the cursor, in key
//!    order, and commits (no read view is held open while streaming).
//! 2. Streaming goes on normally until the stream reaches `S` at a
//!    transaction boundary: the next event is at or after `S`, a commit
//!    ends at or after it, or the stream is idle with the source's read
//!    position at or after it.
//! 3. Then: wait until every message handed to the sink is acknowledged,
//!    checkpoint (fenced) position `S` with this state and `chunk = S`, send
//!    the chunk's rows as snapshot reads (headers `bb.snapshot`,
//!    `bb.snapshot-key` and [`HEADER_RUN`]), wait for their
//!    acknowledgements, and checkpoint the cursor (the chunk's last key,
//!    `chunk = None`). Only then does streaming go on.
//!
//! Per key the order in Kafka is therefore: changes before `S`, the snapshot
//! row as of `S`, changes after `S` — a consumer's state is right at every
//! point, and no change needs filtering. Two invariants follow:
//!
//! - The checkpoint never passes a change that was not acknowledged: `S` is
//!   checkpointed only after everything before it is acknowledged, and the
//!   snapshot rows' own positions are never checkpointed (the sink's
//!   acknowledgement tracker is reset after each chunk).
//! - A partition whose last message is a snapshot row holds no streamed
//!   change after the checkpoint: chunks are sent only with nothing else in
//!   flight, and streaming resumes only once the chunk is acknowledged and
//!   its cursor checkpointed. So the exactly-once takeover, which takes stream
//!   markers only from partitions ending in a streamed change, stays exact.
//!
//! **Takeover in the middle of a chunk** (`chunk = Some(S)` in the
//! checkpoint, whose position is then `S`): the partitions whose last message
//! is a row of this run and table with a key past the cursor hold the
//! *residue* of the interrupted chunk. The new leader records it in the
//! state (fenced, before it sends anything), streams from `S`, reads the
//! chunk again at a new `S'`, and skips each row whose key is at or below its
//! partition's residue key: that row was sent at `S`, and the changes to it
//! between `S` and `S'` have been streamed after it. Residue entries are
//! dropped once the cursor passes them.
//!
//! Requests are etcd keys under `<prefix>/<pipeline>/snapshot-requests/`,
//! one per request, run one at a time in the order they were made (a second
//! request queues). When every table is done the leader clears the state and
//! records the outcome (`ondemand_last`) in one fenced checkpoint, then
//! deletes the request key; a leader that finds a request whose id the
//! checkpoint names as finished just deletes the key.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{Key, Tail};
use crate::event::Position;

/// The checkpoint's extra field holding the running [`OnDemandState`].
pub const EXTRA: &str = "ondemand";
/// The checkpoint's extra field holding the last finished run ([`Outcome`]).
pub const EXTRA_LAST: &str = "ondemand_last";
/// Header of on-demand snapshot rows: the request id of their run.
pub const HEADER_RUN: &str = "bb.snapshot-run";
/// The etcd folder of requests, under `<prefix>/<pipeline>/`.
pub const REQUESTS: &str = "snapshot-requests";

/// The etcd prefix of a pipeline's requests (ends with `/`).
pub fn requests_prefix(prefix: &str, pipeline: &str) -> String {
    format!("{}/{pipeline}/{REQUESTS}/", prefix.trim_end_matches('/'))
}

/// One request, as the CLI writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub id: String,
    /// `db.table`, in the order given, without duplicates.
    pub tables: Vec<String>,
    pub requested_at_ms: u64,
    /// Who asked: host and pid of the CLI.
    #[serde(default)]
    pub by: String,
}

impl Request {
    /// Read a request key's value; what cannot be read is named with the
    /// key, so the operator can delete it.
    pub fn parse(key: &str, value: &[u8]) -> Result<Request, String> {
        let r: Request = serde_json::from_slice(value).map_err(|e| {
            format!("snapshot request {key} cannot be read ({e}); delete it with `etcdctl del {key}` and ask again")
        })?;
        if r.tables.is_empty() {
            return Err(format!(
                "snapshot request {key} names no table; delete it with `etcdctl del {key}`"
            ));
        }
        for t in &r.tables {
            parse_table(t).map_err(|e| format!("snapshot request {key}: {e}"))?;
        }
        Ok(r)
    }
}

/// A request id: time-ordered and unique enough for one pipeline's CLI calls.
pub fn new_id(now_ms: u64, pid: u32) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{now_ms}-{:04x}", (pid ^ nanos) & 0xffff)
}

/// Split `db.table` (no patterns: a snapshot names real tables).
pub fn parse_table(name: &str) -> Result<(&str, &str), String> {
    let Some((db, table)) = name.split_once('.') else {
        return Err(format!(
            "`{name}` is not a table name; write it as db.table"
        ));
    };
    if db.is_empty() || table.is_empty() || table.contains('.') {
        return Err(format!(
            "`{name}` is not a table name; write it as db.table"
        ));
    }
    if name.contains('*') || name.contains('?') {
        return Err(format!(
            "`{name}` is a pattern; name each table to re-snapshot as db.table"
        ));
    }
    Ok((db, table))
}

/// The rows of an interrupted chunk already in one partition: keys of
/// `tables[table]` at or below `key` in `partition` of `topic` were sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Residue {
    pub table: usize,
    pub topic: String,
    pub partition: i32,
    pub key: Key,
}

/// A run's progress, kept in the checkpoint (field [`EXTRA`]).
///
/// Invariant: `table`/`cursor`/`rows` name only rows Kafka has acknowledged;
/// `chunk` is `Some(S)` exactly while a chunk read at `S` may be partly in
/// Kafka (the checkpoint position is then `S`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OnDemandState {
    /// The request id.
    pub id: String,
    /// `db.table`, in reading order.
    pub tables: Vec<String>,
    /// The table being read (== `tables.len()` when done).
    pub table: usize,
    /// The last acknowledged key of `table`.
    #[serde(default)]
    pub cursor: Option<Key>,
    /// Snapshot rows acknowledged in this run, all tables.
    #[serde(default)]
    pub rows: u64,
    /// The position of the chunk being sent, if one is.
    #[serde(default)]
    pub chunk: Option<Position>,
    #[serde(default)]
    pub residue: Vec<Residue>,
    pub started_at_ms: u64,
}

/// How a run ended (field [`EXTRA_LAST`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub id: String,
    pub tables: Vec<String>,
    /// `done`, or `failed: <why>`.
    pub outcome: String,
    pub rows: u64,
    pub finished_at_ms: u64,
}

impl OnDemandState {
    pub fn new(request: &Request, now_ms: u64) -> OnDemandState {
        OnDemandState {
            id: request.id.clone(),
            tables: request.tables.clone(),
            table: 0,
            cursor: None,
            rows: 0,
            chunk: None,
            residue: Vec::new(),
            started_at_ms: now_ms,
        }
    }

    /// The state in a checkpoint's extra map. A field that is there but
    /// cannot be read is an error (silently dropping it would lose the run).
    pub fn from_extra(
        extra: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Option<OnDemandState>, String> {
        match extra.get(EXTRA) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(v) => serde_json::from_value(v.clone()).map(Some).map_err(|e| {
                format!("the checkpoint's `{EXTRA}` field cannot be read ({e}); remove it with `binlog-bridge checkpoint set POSITION --force` (the run is then abandoned: ask for it again)")
            }),
        }
    }

    /// Whether every table is read.
    pub fn done(&self) -> bool {
        self.table >= self.tables.len()
    }

    /// The table being read, `db.table`.
    pub fn current(&self) -> Option<&str> {
        self.tables.get(self.table).map(String::as_str)
    }

    /// Take in the partition tails a takeover found: every partition whose
    /// last message is a row of this run and of the table being read, past
    /// the cursor, is residue of an interrupted chunk (merged with what an
    /// earlier takeover recorded: the larger key wins).
    pub fn absorb(&mut self, tails: &HashMap<(Arc<str>, i32), Tail>) -> usize {
        let Some(current) = self.current().map(str::to_string) else {
            return 0;
        };
        let mut added = 0;
        for ((topic, partition), tail) in tails {
            if tail.run.as_deref() != Some(self.id.as_str()) || tail.table != current {
                continue;
            }
            if self.cursor.as_ref().is_some_and(|c| &tail.key <= c) {
                continue;
            }
            match self
                .residue
                .iter_mut()
                .find(|r| r.table == self.table && r.partition == *partition && *r.topic == **topic)
            {
                Some(r) => {
                    if tail.key > r.key {
                        r.key = tail.key.clone();
                    }
                }
                None => {
                    self.residue.push(Residue {
                        table: self.table,
                        topic: topic.to_string(),
                        partition: *partition,
                        key: tail.key.clone(),
                    });
                    added += 1;
                }
            }
        }
        added
    }

    /// Whether the row `key` of the current table, bound for `partition` of
    /// `topic`, is already in Kafka from an interrupted chunk.
    pub fn sent_before(&self, key: &Key, topic: &str, partition: i32) -> bool {
        self.residue.iter().any(|r| {
            r.table == self.table && r.partition == partition && r.topic == topic && key <= &r.key
        })
    }

    /// A chunk of the current table ending at `last` is acknowledged
    /// (`rows` of them sent): move the cursor, drop residue it passed.
    pub fn chunk_acked(&mut self, last: Key, rows: u64) {
        self.rows += rows;
        self.cursor = Some(last);
        self.chunk = None;
        let (table, cursor) = (self.table, self.cursor.clone());
        self.residue
            .retain(|r| r.table == table && cursor.as_ref().map_or(true, |c| &r.key > c));
    }

    /// The current table has no rows past the cursor: go to the next.
    pub fn table_done(&mut self) {
        self.table += 1;
        self.cursor = None;
        self.chunk = None;
        let table = self.table;
        self.residue.retain(|r| r.table == table);
    }
}

/// Whether the stream has reached `s` (a transaction boundary): an event
/// at `next` (row, schema change or commit position) is at or after it.
pub fn reached(next: &Position, s: &Position) -> bool {
    (next.file_index(), next.offset) >= (s.file_index(), s.offset)
        && (next.file_index().is_some() || next.file == s.file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::KeyPart;

    fn key(i: i64) -> Key {
        vec![KeyPart::I(i)]
    }

    fn tail(run: &str, table: &str, k: i64) -> Tail {
        Tail {
            table: table.into(),
            key: key(k),
            position: None,
            run: Some(run.into()),
        }
    }

    fn request() -> Request {
        Request {
            id: "r1".into(),
            tables: vec!["db.a".into(), "db.b".into()],
            requested_at_ms: 1,
            by: "host 1".into(),
        }
    }

    #[test]
    fn state_round_trips_through_the_checkpoint_extra() {
        let mut s = OnDemandState::new(&request(), 7);
        s.chunk = Some("binlog.000002:400".parse().unwrap());
        s.cursor = Some(key(5));
        s.residue.push(Residue {
            table: 0,
            topic: "db.a".into(),
            partition: 2,
            key: key(9),
        });
        let mut extra = serde_json::Map::new();
        extra.insert(EXTRA.into(), serde_json::to_value(&s).unwrap());
        assert_eq!(OnDemandState::from_extra(&extra).unwrap(), Some(s));
        extra.insert(EXTRA.into(), serde_json::Value::Null);
        assert_eq!(OnDemandState::from_extra(&extra).unwrap(), None);
        extra.insert(EXTRA.into(), serde_json::json!({"id": 3}));
        let e = OnDemandState::from_extra(&extra).unwrap_err();
        assert!(e.contains("`ondemand` field cannot be read"), "{e}");
    }

    #[test]
    fn requests_parse_or_name_what_is_wrong() {
        let r = request();
        let v = serde_json::to_vec(&r).unwrap();
        assert_eq!(Request::parse("k", &v).unwrap(), r);
        let e = Request::parse("/p/x/snapshot-requests/1", b"{").unwrap_err();
        assert!(e.contains("etcdctl del /p/x/snapshot-requests/1"), "{e}");
        let e = Request::parse("k", br#"{"id":"1","tables":[],"requested_at_ms":1}"#).unwrap_err();
        assert!(e.contains("names no table"), "{e}");
        let e = Request::parse("k", br#"{"id":"1","tables":["nodot"],"requested_at_ms":1}"#)
            .unwrap_err();
        assert!(e.contains("write it as db.table"), "{e}");
        assert!(parse_table("db.t*").unwrap_err().contains("is a pattern"));
        assert!(parse_table(".t").is_err() && parse_table("a.b.c").is_err());
        assert_eq!(parse_table("shop.orders").unwrap(), ("shop", "orders"));
        assert_eq!(requests_prefix("/bb/", "p"), "/bb/p/snapshot-requests/");
    }

    #[test]
    fn takeover_residue_is_this_runs_rows_past_the_cursor_merged_by_max() {
        let mut s = OnDemandState::new(&request(), 0);
        s.cursor = Some(key(10));
        let mut tails = HashMap::new();
        let t: Arc<str> = "db.a".into();
        tails.insert((t.clone(), 0), tail("r1", "db.a", 14));
        tails.insert((t.clone(), 1), tail("r1", "db.a", 10)); // at the cursor: acknowledged
        tails.insert((t.clone(), 2), tail("r0", "db.a", 30)); // another run
        tails.insert((t.clone(), 3), tail("r1", "db.b", 30)); // another table
        assert_eq!(s.absorb(&tails), 1);
        assert!(s.sent_before(&key(14), "db.a", 0));
        assert!(s.sent_before(&key(11), "db.a", 0));
        assert!(!s.sent_before(&key(15), "db.a", 0));
        assert!(!s.sent_before(&key(11), "db.a", 1));
        // A second takeover saw a further row in partition 0: the larger key wins.
        tails.insert((t.clone(), 0), tail("r1", "db.a", 20));
        assert_eq!(s.absorb(&tails), 0);
        assert!(s.sent_before(&key(20), "db.a", 0));
        // A chunk ending at 15 keeps the entry (20 > 15); one ending at 20 drops it.
        s.chunk_acked(key(15), 5);
        assert_eq!(s.residue.len(), 1);
        s.chunk_acked(key(20), 5);
        assert!(s.residue.is_empty());
        assert_eq!((s.rows, s.cursor.clone()), (10, Some(key(20))));
        s.table_done();
        assert_eq!((s.current(), s.cursor.clone()), (Some("db.b"), None));
        s.table_done();
        assert!(s.done());
    }

    #[test]
    fn the_stream_reaches_a_read_position_at_a_transaction_boundary() {
        let s: Position = "binlog.000002:1000".parse().unwrap();
        let at = |t: &str| t.parse::<Position>().unwrap();
        // Rows of a transaction that began before S: not yet.
        assert!(!reached(&at("binlog.000002:900+3"), &s));
        // The commit ending at S, or the first event of the next transaction.
        assert!(reached(&at("binlog.000002:1000"), &s));
        assert!(reached(&at("binlog.000002:1000+2"), &s));
        // An earlier file, a later file (by number, not text).
        assert!(!reached(&at("binlog.000001:5000"), &s));
        assert!(reached(&at("binlog.000010:4"), &s));
    }
}
