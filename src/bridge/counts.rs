//! Rows and schema changes read, per table, for the `events_read` metric.

use std::collections::HashMap;

use crate::event::{ChangeEvent, EventKind, Op};
use crate::ops::OpsState;

/// Per-table counts kept locally and published on each tick, so the hot path
/// takes no lock and allocates nothing for a table it has seen.
#[derive(Default)]
pub(super) struct Counts(HashMap<String, HashMap<String, [u64; 5]>>);

const KINDS: [&str; 5] = ["insert", "update", "delete", "read", "ddl"];

impl Counts {
    fn add(&mut self, db: &str, table: &str, kind: usize) {
        if let Some(t) = self.0.get_mut(db).and_then(|m| m.get_mut(table)) {
            t[kind] += 1;
            return;
        }
        let mut c = [0; 5];
        c[kind] = 1;
        self.0
            .entry(db.to_string())
            .or_default()
            .insert(table.to_string(), c);
    }

    pub(super) fn count(&mut self, ev: &ChangeEvent) {
        match &ev.kind {
            EventKind::Row(r) => {
                let k = match r.op {
                    Op::Insert => 0,
                    Op::Update => 1,
                    Op::Delete => 2,
                    Op::Read => 3,
                };
                self.add(&r.table.database, &r.table.table, k);
            }
            EventKind::Schema(s) => self.add(&s.database, "", 4),
            EventKind::Commit => {}
        }
    }

    pub(super) fn publish(&mut self, ops: &OpsState) {
        for (db, tables) in self.0.iter_mut() {
            for (table, c) in tables.iter_mut() {
                let name = if table.is_empty() {
                    db.clone()
                } else {
                    format!("{db}.{table}")
                };
                for (i, n) in c.iter_mut().enumerate() {
                    if *n > 0 {
                        ops.metrics.events_read.add(&name, KINDS[i], *n);
                        *n = 0;
                    }
                }
            }
        }
    }
}
