//! `mysql.include` / `mysql.exclude`: which tables' rows the source decodes.
//!
//! Patterns are `db.table` with `*` matching any run of characters. An empty
//! include list means every table. Rows of other tables are skipped without
//! being decoded.

#[derive(Debug, Clone, Default)]
pub struct TableFilter {
    include: Vec<String>,
    exclude: Vec<String>,
}

/// Whether `name` matches `pattern`, where `*` matches any run of characters.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    glob(pattern.as_bytes(), name.as_bytes())
}

fn glob(p: &[u8], s: &[u8]) -> bool {
    match p.split_first() {
        None => s.is_empty(),
        Some((b'*', rest)) => (0..=s.len()).any(|i| glob(rest, &s[i..])),
        Some((c, rest)) => s.first() == Some(c) && glob(rest, &s[1..]),
    }
}

impl TableFilter {
    pub fn new(include: &[String], exclude: &[String]) -> Self {
        TableFilter {
            include: include.to_vec(),
            exclude: exclude.to_vec(),
        }
    }

    pub fn includes(&self, db: &str, table: &str) -> bool {
        if self.include.is_empty() && self.exclude.is_empty() {
            return true;
        }
        let name = format!("{db}.{table}");
        let m = |p: &String| glob(p.as_bytes(), name.as_bytes());
        (self.include.is_empty() || self.include.iter().any(m)) && !self.exclude.iter().any(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn include_and_exclude_patterns() {
        let f = TableFilter::new(&["shop.*".into()], &["shop.tmp_*".into()]);
        assert!(f.includes("shop", "orders"));
        assert!(!f.includes("shop", "tmp_x"));
        assert!(!f.includes("other", "orders"));
        assert!(TableFilter::default().includes("a", "b"));
    }
}
