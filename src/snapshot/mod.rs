//! Initial snapshot: the rows tables already hold, read at one consistent
//! point P1 and sent as snapshot reads before the binlog is streamed from P1.
//!
//! How it stays exact across failover (`idempotent` delivery, no Kafka
//! transactions), with the state kept in the checkpoint's `snapshot` field:
//!
//! 1. One connection opens `START TRANSACTION WITH CONSISTENT SNAPSHOT` and
//!    reads MariaDB's `binlog_snapshot_file/position`: the binlog position
//!    exactly consistent with what the transaction sees, without any lock.
//! 2. Tables are read one after another in primary-key chunks (keyset
//!    pagination); every row is a message with the headers
//!    [`HEADER_SNAPSHOT`] (`db.table`) and [`HEADER_SNAPSHOT_KEY`] (its
//!    primary key). Rows of one table reach each partition in key order.
//! 3. After a chunk is acknowledged the checkpoint records (fenced, like
//!    streaming) the table and the last key. The checkpoint's position stays
//!    P1 throughout: that is where streaming starts.
//! 4. A new leader cannot reopen the old transaction: it opens a new one at
//!    P2 (a new [`Segment`]) and continues after the checkpointed key. Rows
//!    sent after that key but before the crash are found from the last
//!    message of each partition: a row whose key is at or below its
//!    partition's last snapshot key of the same table is already in Kafka
//!    (the *residue*), so it is skipped. The segment, with its residue, is
//!    checkpointed before the first row of the new segment is sent.
//! 5. Every (table, key, partition) is covered by exactly one segment
//!    ([`SnapshotState::covering`]): the one whose read put it into Kafka (or
//!    would have, had the row existed). Streaming from P1 skips a change
//!    whose position is before its covering segment's position: the
//!    snapshot row already reflects it. Segment 0 is at P1, so with no
//!    failover nothing is skipped.
//! 6. Streaming starts only once every table is read and acknowledged, so in
//!    every partition snapshot rows come before streamed changes; the
//!    streaming takeover ignores snapshot messages (see `sink::reconcile`).
//!
//! `snapshot.mode = "when-needed"` (with `allow_resnapshot_on_purge`) starts
//! a new snapshot, state and all, when the checkpointed position is purged
//! (`bridge.rs`, `on_purged`): its P1 is after every position the old
//! checkpoint named, so the checkpoint only moves forward, and partition tails
//! older than P1 (rows of the old snapshot) are never taken as residue
//! ([`SnapshotState::residue`]).
//!
//! On-demand re-snapshots of chosen tables while streaming
//! (`binlog-bridge snapshot db.table...`) reuse the reader and the key order
//! but not this state: see [`ondemand`] (design, invariants) and
//! [`ondemand_run`] (the leader's driver).
//!
//! Keys must have an order computed the same way here and in the server:
//! primary keys made of integer, YEAR, DATE and DATETIME columns. Tables
//! without a primary key, or with another key type, are refused by name
//! (exclude them with `mysql.exclude`). MySQL is refused: its consistent
//! snapshot position needs `FLUSH TABLES WITH READ LOCK` (the `RELOAD`
//! privilege) or GTID_EXECUTED, which this version does not implement.

pub mod command;
pub mod ondemand;
pub mod ondemand_run;
pub mod reader;
pub mod requests;
pub mod run;

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::event::{ColumnKind, Position, RowChange, Value};

/// The checkpoint's extra field holding [`SnapshotState`].
pub const EXTRA: &str = "snapshot";
/// Header of snapshot messages: the table, `db.table`.
pub const HEADER_SNAPSHOT: &str = "bb.snapshot";
/// Header of snapshot messages: the row's primary key ([`Key`] as JSON).
pub const HEADER_SNAPSHOT_KEY: &str = "bb.snapshot-key";

/// One primary-key column value, in an order equal to the server's.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyPart {
    /// Signed integers and YEAR.
    I(i64),
    /// Unsigned integers.
    U(u64),
    /// DATE and DATETIME as fixed-width text (`YYYY-MM-DD HH:MM:SS.ffffff`).
    T(String),
}

/// A primary key, columns in key order; compared lexicographically like the
/// server's row comparison `(a, b) > (x, y)`.
pub type Key = Vec<KeyPart>;

/// Column types whose order [`KeyPart`] reproduces.
pub fn orderable(kind: ColumnKind) -> bool {
    matches!(
        kind,
        ColumnKind::TinyInt
            | ColumnKind::SmallInt
            | ColumnKind::MediumInt
            | ColumnKind::Int
            | ColumnKind::BigInt
            | ColumnKind::Year
            | ColumnKind::Date
            | ColumnKind::DateTime
    )
}

/// The key part of one value, if its type is orderable.
pub fn key_part(v: &Value) -> Option<KeyPart> {
    Some(match v {
        Value::Int(i) => KeyPart::I(*i),
        Value::UInt(u) => KeyPart::U(*u),
        Value::Year(y) => KeyPart::I(i64::from(*y)),
        Value::Date(d) => KeyPart::T(format!("{d} 00:00:00.000000")),
        Value::DateTime(dt) => KeyPart::T(format!(
            "{} {:02}:{:02}:{:02}.{:06}",
            dt.date, dt.hour, dt.minute, dt.second, dt.micros
        )),
        _ => return None,
    })
}

/// The primary key of a row change (after image, or before for a delete).
pub fn key_of(row: &RowChange) -> Option<Key> {
    let image = row.after.as_ref().or(row.before.as_ref())?;
    if row.table.primary_key.is_empty() {
        return None;
    }
    row.table
        .primary_key
        .iter()
        .map(|&i| image.get(i).and_then(key_part))
        .collect()
}

/// A key as header text.
pub fn key_text(key: &Key) -> String {
    serde_json::to_string(key).unwrap_or_default()
}

/// A key from header text.
pub fn parse_key(text: &str) -> Option<Key> {
    serde_json::from_str(text).ok()
}

/// A partition's last snapshot message before a segment began, for the
/// segment's first table: keys at or below `key` in that partition were
/// sent by an earlier segment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Residue {
    pub topic: String,
    pub partition: i32,
    pub key: Key,
}

/// The last message of a partition, when it is a snapshot row.
#[derive(Debug, Clone, PartialEq)]
pub struct Tail {
    /// `db.table`.
    pub table: String,
    pub key: Key,
    /// The row's position header: the position of the read that sent it.
    pub position: Option<Position>,
    /// The on-demand run that sent it (header `bb.snapshot-run`); None for
    /// the initial snapshot.
    pub run: Option<String>,
}

/// One consistent read: from `table` (index into the table list) after key
/// `after`, at binlog position `position`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    pub position: Position,
    pub table: usize,
    #[serde(default)]
    pub after: Option<Key>,
    #[serde(default)]
    pub residue: Vec<Residue>,
}

/// The snapshot's progress, kept in the checkpoint (field [`EXTRA`]).
///
/// Invariant: `table`/`after` only ever name rows whose messages Kafka has
/// acknowledged (everything of tables before `table`, and of `table` up to
/// `after`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotState {
    /// Every table is read and acknowledged; streaming runs.
    pub done: bool,
    /// P1: where streaming starts (segment 0's position).
    pub position: Position,
    /// The tables to read, `db.table`, in reading order (fixed at the start).
    pub tables: Vec<String>,
    /// The table being read (== `tables.len()` when done).
    pub table: usize,
    /// The last acknowledged key of `table`.
    #[serde(default)]
    pub after: Option<Key>,
    /// Rows acknowledged, all tables.
    #[serde(default)]
    pub rows: u64,
    pub segments: Vec<Segment>,
}

impl SnapshotState {
    pub fn new(position: Position, tables: Vec<String>) -> SnapshotState {
        SnapshotState {
            done: false,
            position: position.clone(),
            tables,
            table: 0,
            after: None,
            rows: 0,
            segments: vec![Segment {
                position,
                table: 0,
                after: None,
                residue: Vec::new(),
            }],
        }
    }

    /// The state in a checkpoint's extra map. A field that is there but
    /// cannot be read is an error (silently starting over would duplicate).
    pub fn from_extra(
        extra: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Option<SnapshotState>, String> {
        match extra.get(EXTRA) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(v) => serde_json::from_value(v.clone()).map(Some).map_err(|e| {
                format!("the checkpoint's `{EXTRA}` field cannot be read ({e}); reset it with `binlog-bridge checkpoint set POSITION --force`")
            }),
        }
    }

    /// The residue of a new segment of this unfinished snapshot: the
    /// partitions whose last message (`tails`) is a row of the table being
    /// read, past the checkpointed key, sent by this snapshot. A row of an
    /// earlier snapshot (before a `when-needed` re-snapshot) is older than
    /// this snapshot's start and is not residue.
    pub fn residue(&self, tails: &HashMap<(std::sync::Arc<str>, i32), Tail>) -> Vec<Residue> {
        let current = self.tables.get(self.table).cloned().unwrap_or_default();
        tails
            .iter()
            .filter(|(_, tail)| {
                tail.table == current
                    && tail.run.is_none()
                    && tail.position.as_ref().map_or(true, |p| p >= &self.position)
                    && self.after.as_ref().map_or(true, |a| &tail.key > a)
            })
            .map(|((topic, partition), tail)| Residue {
                topic: topic.to_string(),
                partition: *partition,
                key: tail.key.clone(),
            })
            .collect()
    }

    /// The segment whose read covers `key` of table `table` in `partition`
    /// of `topic` (see the module doc, point 5).
    pub fn covering(&self, table: usize, key: &Key, topic: &str, partition: i32) -> &Segment {
        for s in self.segments.iter().rev() {
            if table > s.table {
                return s;
            }
            if table == s.table {
                let beyond = s.after.as_ref().map_or(true, |a| key > a);
                let sent_before = s
                    .residue
                    .iter()
                    .any(|r| r.partition == partition && r.topic == topic && key <= &r.key);
                if beyond && !sent_before {
                    return s;
                }
            }
        }
        &self.segments[0]
    }
}

/// Skips streamed changes that a later snapshot segment already reflects
/// (point 5 of the module doc). Installed on the sink after a snapshot that
/// had more than one segment; inert once the stream passes the last
/// segment's position.
#[derive(Debug)]
pub struct StreamFilter {
    state: SnapshotState,
    index: HashMap<String, usize>,
    until: Position,
    skipped: u64,
}

impl StreamFilter {
    /// None when there is nothing to filter (a single segment, at P1).
    pub fn new(state: &SnapshotState) -> Option<StreamFilter> {
        let until = state.segments.iter().map(|s| &s.position).max()?.clone();
        if until <= state.position {
            return None;
        }
        let index = state
            .tables
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i))
            .collect();
        Some(StreamFilter {
            state: state.clone(),
            index,
            until,
            skipped: 0,
        })
    }

    /// True if the change to `row` at `position`, bound for `partition` of
    /// `topic`, is already reflected by a snapshot row.
    pub fn skip(
        &mut self,
        row: &RowChange,
        position: &Position,
        topic: &str,
        partition: i32,
    ) -> bool {
        if position >= &self.until {
            return false;
        }
        let name = format!("{}.{}", row.table.database, row.table.table);
        let Some(&table) = self.index.get(&name) else {
            return false;
        };
        let Some(key) = key_of(row) else {
            return false;
        };
        let seg = self.state.covering(table, &key, topic, partition);
        let skip = position < &seg.position;
        if skip {
            self.skipped += 1;
        }
        skip
    }

    /// Changes skipped so far.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }
}

#[cfg(test)]
mod tests;
