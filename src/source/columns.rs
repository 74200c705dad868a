//! `mysql.exclude_columns`: columns left out of every row before it is
//! encoded, in every output format.
//!
//! Patterns are `db.table.column`, each part a name or a `*` pattern as in
//! `mysql.include`. A row of a table with excluded columns gets a projected
//! [`TableSchema`] (computed once per table shape and shared) and values
//! without those columns. A primary-key column cannot be excluded: the
//! message key and the exactly-once bookkeeping need it, so such a pattern
//! is refused at startup (see `checks::excluded_key_columns`) and, for a
//! table created later, when its first row arrives.

use std::collections::HashMap;
use std::sync::Arc;

use crate::event::{ChangeEvent, EventKind, TableSchema};

use super::filter::glob_match;

/// What happens to one table shape: nothing, or these columns are kept.
#[derive(Debug, Clone)]
enum Shape {
    Unchanged,
    Projected {
        keep: Vec<usize>,
        schema: Arc<TableSchema>,
    },
}

/// Applies `mysql.exclude_columns` to change events.
#[derive(Debug, Default)]
pub struct ColumnFilter {
    /// (db, table, column) patterns.
    patterns: Vec<(String, String, String)>,
    /// Per table shape (keyed by the schema's address; the `Arc` is held so
    /// the address cannot be reused while cached).
    cache: HashMap<usize, (Arc<TableSchema>, Shape)>,
}

/// Cached shapes at most; a new shape comes only with DDL.
const CACHE_LIMIT: usize = 4096;

impl ColumnFilter {
    /// `patterns` are validated `db.table.column` strings (see `Config::validate`).
    pub fn new(patterns: &[String]) -> ColumnFilter {
        ColumnFilter {
            patterns: patterns
                .iter()
                .filter_map(|p| {
                    let mut it = p.splitn(3, '.');
                    Some((
                        it.next()?.to_string(),
                        it.next()?.to_string(),
                        it.next()?.to_string(),
                    ))
                })
                .collect(),
            cache: HashMap::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// The pattern excluding `db.table.column`, if one does.
    pub fn excludes(&self, db: &str, table: &str, column: &str) -> Option<String> {
        self.patterns
            .iter()
            .find(|(d, t, c)| glob_match(d, db) && glob_match(t, table) && glob_match(c, column))
            .map(|(d, t, c)| format!("{d}.{t}.{c}"))
    }

    /// Drop the excluded columns of a row event. Errors (a key column
    /// matched) say which pattern and which key, and what to do.
    pub fn apply(&mut self, ev: &mut ChangeEvent) -> Result<(), String> {
        if self.patterns.is_empty() {
            return Ok(());
        }
        let EventKind::Row(row) = &mut ev.kind else {
            return Ok(());
        };
        let id = Arc::as_ptr(&row.table) as usize;
        if !self.cache.contains_key(&id) {
            let shape = self.shape(&row.table)?;
            if self.cache.len() >= CACHE_LIMIT {
                self.cache.clear();
            }
            self.cache.insert(id, (row.table.clone(), shape));
        }
        let Some((_, Shape::Projected { keep, schema })) = self.cache.get(&id) else {
            return Ok(());
        };
        row.table = schema.clone();
        for values in [&mut row.before, &mut row.after].into_iter().flatten() {
            let all = std::mem::take(values);
            *values = all
                .into_iter()
                .enumerate()
                .filter(|(i, _)| keep.binary_search(i).is_ok())
                .map(|(_, v)| v)
                .collect();
        }
        Ok(())
    }

    fn shape(&self, t: &TableSchema) -> Result<Shape, String> {
        let mut keep = Vec::with_capacity(t.columns.len());
        for (i, c) in t.columns.iter().enumerate() {
            match self.excludes(&t.database, &t.table, &c.name) {
                None => keep.push(i),
                Some(p) if t.primary_key.contains(&i) => {
                    return Err(format!(
                        "mysql.exclude_columns entry {p:?} matches `{}`, a primary-key column of {}.{}; the message key needs it: narrow or remove the entry",
                        c.name, t.database, t.table
                    ))
                }
                Some(_) => {}
            }
        }
        if keep.len() == t.columns.len() {
            return Ok(Shape::Unchanged);
        }
        let schema = TableSchema {
            database: t.database.clone(),
            table: t.table.clone(),
            columns: keep.iter().map(|&i| t.columns[i].clone()).collect(),
            primary_key: t
                .primary_key
                .iter()
                .filter_map(|k| keep.iter().position(|i| i == k))
                .collect(),
        };
        Ok(Shape::Projected {
            keep,
            schema: Arc::new(schema),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Column, ColumnKind, Op, Position, RowChange, TxnInfo, Value};

    fn col(name: &str) -> Column {
        Column {
            name: name.into(),
            kind: ColumnKind::Int,
            sql_type: "int".into(),
            unsigned: false,
            nullable: true,
            precision: None,
            scale: None,
        }
    }

    fn event(table: Arc<TableSchema>, before: Vec<i64>, after: Vec<i64>) -> ChangeEvent {
        ChangeEvent {
            kind: EventKind::Row(RowChange {
                table,
                op: Op::Update,
                before: Some(before.into_iter().map(Value::Int).collect()),
                after: Some(after.into_iter().map(Value::Int).collect()),
            }),
            txn: Arc::new(TxnInfo::default()),
            position: Position::new("binlog.000001", 4),
        }
    }

    #[test]
    fn excluded_columns_leave_schema_and_both_images_and_the_key_follows() {
        let t = Arc::new(TableSchema {
            database: "shop".into(),
            table: "users".into(),
            columns: vec![col("ssn"), col("id"), col("pw_hash"), col("v")],
            primary_key: vec![1],
        });
        let mut f = ColumnFilter::new(&["shop.*.ssn".into(), "shop.users.pw_*".into()]);
        let mut ev = event(t.clone(), vec![1, 2, 3, 4], vec![5, 6, 7, 8]);
        f.apply(&mut ev).unwrap();
        let EventKind::Row(r) = &ev.kind else {
            panic!()
        };
        let names: Vec<&str> = r.table.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["id", "v"]);
        assert_eq!(r.table.primary_key, [0]);
        assert_eq!(
            r.before.as_deref(),
            Some(&[Value::Int(2), Value::Int(4)][..])
        );
        assert_eq!(
            r.after.as_deref(),
            Some(&[Value::Int(6), Value::Int(8)][..])
        );
        // The projected schema is shared by every row of the table.
        let first = r.table.clone();
        let mut ev2 = event(t, vec![1, 2, 3, 4], vec![1, 2, 3, 4]);
        f.apply(&mut ev2).unwrap();
        let EventKind::Row(r2) = &ev2.kind else {
            panic!()
        };
        assert!(Arc::ptr_eq(&first, &r2.table));
        // Another database is untouched.
        let other = Arc::new(TableSchema {
            database: "crm".into(),
            table: "users".into(),
            columns: vec![col("ssn"), col("id")],
            primary_key: vec![1],
        });
        let mut ev3 = event(other.clone(), vec![1, 2], vec![1, 2]);
        f.apply(&mut ev3).unwrap();
        let EventKind::Row(r3) = &ev3.kind else {
            panic!()
        };
        assert!(Arc::ptr_eq(&other, &r3.table));
    }

    #[test]
    fn a_key_column_is_refused_with_the_pattern_and_the_table() {
        let t = Arc::new(TableSchema {
            database: "shop".into(),
            table: "orders".into(),
            columns: vec![col("id"), col("v")],
            primary_key: vec![0],
        });
        let mut f = ColumnFilter::new(&["shop.*.id".into()]);
        let e = f.apply(&mut event(t, vec![1, 2], vec![1, 2])).unwrap_err();
        assert!(
            e.contains("\"shop.*.id\"") && e.contains("shop.orders"),
            "{e}"
        );
        assert!(e.contains("primary-key"), "{e}");
    }
}
