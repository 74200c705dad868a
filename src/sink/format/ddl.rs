//! Just enough DDL reading to label a schema change: what kind of statement
//! it is and which database/table it names.
//!
//! Canal (`type`: CREATE/ALTER/ERASE/...) and Maxwell (`table-create`,
//! `database-drop`, ...) label DDL messages by kind and carry the table
//! name; the binlog only gives the statement text and the default database.
//! This is a keyword reader, not a SQL parser: anything it does not
//! recognise is [`DdlKind::Other`], which every format still handles.

/// What a schema-change statement does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DdlKind {
    CreateDatabase,
    DropDatabase,
    AlterDatabase,
    CreateTable,
    DropTable,
    AlterTable,
    RenameTable,
    TruncateTable,
    CreateIndex,
    DropIndex,
    /// Views, procedures, grants, ... anything else.
    Other,
}

/// The kind and the (first) object a statement names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DdlTarget {
    pub kind: DdlKind,
    /// The named object's database, else the statement's default database.
    pub database: String,
    /// The table named, empty for database statements and `Other`.
    pub table: String,
}

/// Classify `statement`, run with `default_db` as the current database.
pub fn classify_ddl(statement: &str, default_db: &str) -> DdlTarget {
    let mut c = Cursor {
        s: strip_version_comment(statement),
    };
    let other = DdlTarget {
        kind: DdlKind::Other,
        database: default_db.to_string(),
        table: String::new(),
    };
    let first = c.word();
    let kind = match first.as_str() {
        "CREATE" => {
            let mut w = c.word();
            while matches!(
                w.as_str(),
                "OR" | "REPLACE" | "TEMPORARY" | "UNIQUE" | "FULLTEXT" | "SPATIAL"
            ) {
                w = c.word();
            }
            match w.as_str() {
                "TABLE" => DdlKind::CreateTable,
                "DATABASE" | "SCHEMA" => DdlKind::CreateDatabase,
                "INDEX" => DdlKind::CreateIndex,
                _ => return other,
            }
        }
        "DROP" => {
            let mut w = c.word();
            while w == "TEMPORARY" {
                w = c.word();
            }
            match w.as_str() {
                "TABLE" | "TABLES" => DdlKind::DropTable,
                "DATABASE" | "SCHEMA" => DdlKind::DropDatabase,
                "INDEX" => DdlKind::DropIndex,
                _ => return other,
            }
        }
        "ALTER" => {
            let mut w = c.word();
            while matches!(w.as_str(), "ONLINE" | "IGNORE") {
                w = c.word();
            }
            match w.as_str() {
                "TABLE" => DdlKind::AlterTable,
                "DATABASE" | "SCHEMA" => DdlKind::AlterDatabase,
                _ => return other,
            }
        }
        "RENAME" => match c.word().as_str() {
            "TABLE" | "TABLES" => DdlKind::RenameTable,
            _ => return other,
        },
        "TRUNCATE" => {
            let save = c.s;
            if c.word() != "TABLE" {
                c.s = save;
            }
            DdlKind::TruncateTable
        }
        _ => return other,
    };
    // IF [NOT] EXISTS
    let save = c.s;
    if c.word() == "IF" {
        let w = c.word();
        if w == "NOT" {
            c.word();
        }
    } else {
        c.s = save;
    }
    if matches!(kind, DdlKind::CreateIndex | DdlKind::DropIndex) {
        // INDEX name [USING ...] ON table
        c.ident();
        loop {
            let w = c.word();
            if w == "ON" || w.is_empty() {
                break;
            }
        }
    }
    let first_name = c.ident();
    let second_name = if c.s.starts_with('.') {
        c.s = &c.s[1..];
        Some(c.ident())
    } else {
        None
    };
    match kind {
        DdlKind::CreateDatabase | DdlKind::DropDatabase | DdlKind::AlterDatabase => DdlTarget {
            kind,
            database: if first_name.is_empty() {
                default_db.to_string()
            } else {
                first_name
            },
            table: String::new(),
        },
        _ => match second_name {
            Some(table) => DdlTarget {
                kind,
                database: first_name,
                table,
            },
            None => DdlTarget {
                kind,
                database: default_db.to_string(),
                table: first_name,
            },
        },
    }
}

/// `/*!40000 ALTER TABLE ... */` -> `ALTER TABLE ...`; leading plain comments skipped.
fn strip_version_comment(s: &str) -> &str {
    let mut s = s.trim_start();
    loop {
        if let Some(rest) = s.strip_prefix("/*!") {
            let rest = rest.trim_start_matches(|c: char| c.is_ascii_digit());
            return rest.trim_end().trim_end_matches("*/");
        }
        if let Some(rest) = s.strip_prefix("/*") {
            match rest.find("*/") {
                Some(end) => s = rest[end + 2..].trim_start(),
                None => return "",
            }
        } else {
            return s;
        }
    }
}

struct Cursor<'a> {
    s: &'a str,
}

impl Cursor<'_> {
    /// The next bare word, upper-cased (empty at the end or before punctuation).
    fn word(&mut self) -> String {
        self.s = self.s.trim_start();
        let end = self
            .s
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(self.s.len());
        let w = self.s[..end].to_ascii_uppercase();
        self.s = &self.s[end..];
        w
    }

    /// The next identifier, backtick-quoted (with ``` `` ``` escapes) or bare.
    fn ident(&mut self) -> String {
        self.s = self.s.trim_start();
        if let Some(rest) = self.s.strip_prefix('`') {
            let mut out = String::new();
            let mut chars = rest.char_indices().peekable();
            while let Some((i, ch)) = chars.next() {
                if ch == '`' {
                    if let Some(&(_, '`')) = chars.peek() {
                        out.push('`');
                        chars.next();
                        continue;
                    }
                    self.s = &rest[i + 1..];
                    return out;
                }
                out.push(ch);
            }
            self.s = "";
            out
        } else {
            let end = self
                .s
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$'))
                .unwrap_or(self.s.len());
            let w = self.s[..end].to_string();
            self.s = &self.s[end..];
            w
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(stmt: &str) -> (DdlKind, String, String) {
        let d = classify_ddl(stmt, "shop");
        (d.kind, d.database, d.table)
    }

    #[test]
    fn classifies_common_statements_and_names() {
        use DdlKind::*;
        let cases = [
            ("CREATE TABLE t1 (id int)", CreateTable, "shop", "t1"),
            (
                "create table if not exists `my db`.`we``ird` (id int)",
                CreateTable,
                "my db",
                "we`ird",
            ),
            (
                "CREATE OR REPLACE TEMPORARY TABLE x (a int)",
                CreateTable,
                "shop",
                "x",
            ),
            (
                "DROP TABLE `t1` /* generated by server */",
                DropTable,
                "shop",
                "t1",
            ),
            (
                "DROP TABLE IF EXISTS other.t2, t3",
                DropTable,
                "other",
                "t2",
            ),
            ("ALTER TABLE t1 ADD COLUMN c int", AlterTable, "shop", "t1"),
            (
                "alter online ignore table t1 drop c",
                AlterTable,
                "shop",
                "t1",
            ),
            ("RENAME TABLE a TO b", RenameTable, "shop", "a"),
            ("TRUNCATE t9", TruncateTable, "shop", "t9"),
            ("TRUNCATE TABLE db2.t9", TruncateTable, "db2", "t9"),
            (
                "CREATE UNIQUE INDEX ix ON t1 (a)",
                CreateIndex,
                "shop",
                "t1",
            ),
            ("DROP INDEX ix ON db3.t1", DropIndex, "db3", "t1"),
            (
                "CREATE DATABASE IF NOT EXISTS inv",
                CreateDatabase,
                "inv",
                "",
            ),
            ("DROP SCHEMA inv", DropDatabase, "inv", ""),
            (
                "ALTER DATABASE inv CHARACTER SET utf8mb4",
                AlterDatabase,
                "inv",
                "",
            ),
            (
                "/*!40000 ALTER TABLE `t` DISABLE KEYS */",
                AlterTable,
                "shop",
                "t",
            ),
            ("CREATE VIEW v AS SELECT 1", Other, "shop", ""),
            ("GRANT ALL ON *.* TO x", Other, "shop", ""),
            ("", Other, "shop", ""),
        ];
        for (stmt, kind, db, table) in cases {
            assert_eq!(t(stmt), (kind, db.to_string(), table.to_string()), "{stmt}");
        }
    }
}
