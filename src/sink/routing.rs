//! Routing: which tables are sent, to which topic, under which key.
//!
//! Computed once per table and cached (recomputed when the table's shape
//! changes), so the hot path is two hash lookups. Keys decide partitions:
//! the primary key (or the configured `kafka.key_columns`) keeps every change
//! of one row in one partition, in order. Tables without any key fall back
//! to `kafka.keyless` and say so once at info level.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::config::{KafkaConfig, Keyless};
use crate::event::TableSchema;

use super::format::json::JsonWriter;
use super::format::{DdlKind, DdlTarget, FieldNames};
use super::SinkError;

/// `[mysql] include/exclude` as a predicate on `db.table`.
///
/// Patterns are matched against the whole `db.table` name, `*` matching any
/// run of characters (the same rule as the source's filter), e.g. `shop.*`,
/// `*.orders`, `shop.order_*`. An empty include list includes everything;
/// exclude wins over include. Evaluated once per table (routes are cached).
#[derive(Debug, Clone, Default)]
pub struct TableFilter {
    include: Vec<String>,
    exclude: Vec<String>,
}

impl TableFilter {
    pub fn new(include: &[String], exclude: &[String]) -> Self {
        TableFilter {
            include: include.to_vec(),
            exclude: exclude.to_vec(),
        }
    }

    pub fn allows(&self, db: &str, table: &str) -> bool {
        let name = format!("{db}.{table}");
        let hit = |p: &String| glob(p, &name);
        (self.include.is_empty() || self.include.iter().any(hit)) && !self.exclude.iter().any(hit)
    }

    /// Whether a schema change is sent: one that names a table only if that
    /// table is allowed; a database statement only if some table of that
    /// database may be included and the database is not excluded as a whole
    /// (`db.*`). Anything this cannot be sure of is sent: a rename (its new
    /// name may be included), a statement naming several tables, and
    /// statements that name no table (views, routines, grants).
    pub fn allows_ddl(&self, target: &DdlTarget, statement: &str) -> bool {
        let upper = statement.to_ascii_uppercase();
        match target.kind {
            DdlKind::Other | DdlKind::RenameTable => true,
            _ if upper.contains("RENAME")
                || (upper.contains(',') && target.kind == DdlKind::DropTable) =>
            {
                true
            }
            DdlKind::CreateDatabase | DdlKind::DropDatabase | DdlKind::AlterDatabase => {
                let db = target.database.as_str();
                let db_part =
                    |p: &String| p.split_once('.').map_or(p.as_str(), |(d, _)| d).to_string();
                let may_include =
                    self.include.is_empty() || self.include.iter().any(|p| glob(&db_part(p), db));
                let whole_db_excluded = self.exclude.iter().any(|p| {
                    p.split_once('.')
                        .is_some_and(|(d, t)| t == "*" && glob(d, db))
                });
                may_include && !whole_db_excluded
            }
            _ if target.table.is_empty() => true,
            _ => self.allows(&target.database, &target.table),
        }
    }
}

/// `*` matches any run of characters; everything else matches itself.
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Replace `{db}`, `{table}` and `{pipeline}` in a topic template. Characters
/// Kafka does not allow in topic names (anything but ASCII letters, digits,
/// `.`, `_`, `-`) in the substituted names become `_`, as Debezium does.
pub fn render_topic(template: &str, db: &str, table: &str, pipeline: &str) -> String {
    template
        .replace("{db}", &topic_safe(db))
        .replace("{table}", &topic_safe(table))
        .replace("{pipeline}", &topic_safe(pipeline))
}

fn topic_safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// How a table's messages are keyed.
#[derive(Debug, Clone, PartialEq)]
pub enum KeyRule {
    /// JSON of these columns (indexes into the table's columns).
    Columns(Vec<usize>),
    /// The same pre-encoded key for every row (`keyless = "table"`).
    Fixed(Vec<u8>),
    /// No key (`keyless = "none"`).
    None,
}

/// Where one table's rows go.
#[derive(Debug, Clone)]
pub struct Route {
    pub included: bool,
    pub topic: Arc<str>,
    pub key: KeyRule,
    /// The shape's column names as encoded JSON keys, made once per shape.
    pub names: Arc<FieldNames>,
    /// The table shape this route was computed for.
    schema: Arc<TableSchema>,
}

/// Routes per table, cached.
pub struct Router {
    topic_template: String,
    pipeline: String,
    key_columns: BTreeMap<String, Vec<String>>,
    keyless: Keyless,
    filter: TableFilter,
    routes: HashMap<String, HashMap<String, Arc<Route>>>,
    /// The route handed out last: the next event's, as a rule (events of one
    /// table come in runs and share one `Arc<TableSchema>`).
    last: Option<Arc<Route>>,
}

impl Router {
    pub fn new(cfg: &KafkaConfig, pipeline: &str, filter: TableFilter) -> Self {
        Router {
            topic_template: cfg.topic.clone(),
            pipeline: pipeline.to_string(),
            key_columns: cfg.key_columns.clone(),
            keyless: cfg.keyless,
            filter,
            routes: HashMap::new(),
            last: None,
        }
    }

    pub fn set_filter(&mut self, filter: TableFilter) {
        self.filter = filter;
        self.routes.clear();
        self.last = None;
    }

    /// Whether the table filter lets this schema change through
    /// ([`TableFilter::allows_ddl`]).
    pub fn allows_ddl(&self, target: &DdlTarget, statement: &str) -> bool {
        self.filter.allows_ddl(target, statement)
    }

    /// The route of `table`, computed on first sight or when its shape changed.
    pub fn route(&mut self, table: &Arc<TableSchema>) -> Result<&Route, SinkError> {
        self.route_shared(table).map(|r| &**r)
    }

    /// [`Router::route`], shared: the sink holds it across its sends
    /// without copying the key rule for every row.
    pub fn route_shared(&mut self, table: &Arc<TableSchema>) -> Result<&Arc<Route>, SinkError> {
        let hit = self
            .last
            .as_ref()
            .is_some_and(|r| Arc::ptr_eq(&r.schema, table));
        if !hit {
            let route = self.lookup(table)?;
            self.last = Some(route);
        }
        self.last
            .as_ref()
            .ok_or_else(|| SinkError::Internal("route vanished from cache".into()))
    }

    /// The cached route of `table`, computed first if missing or stale.
    fn lookup(&mut self, table: &Arc<TableSchema>) -> Result<Arc<Route>, SinkError> {
        let fresh = match self
            .routes
            .get(&table.database)
            .and_then(|m| m.get(&table.table))
        {
            Some(r) => {
                !(Arc::ptr_eq(&r.schema, table)
                    || r.schema.columns == table.columns
                        && r.schema.primary_key == table.primary_key)
            }
            None => true,
        };
        if fresh {
            let announced = self
                .routes
                .get(&table.database)
                .is_some_and(|m| m.contains_key(&table.table));
            let route = self.compute(table, !announced)?;
            self.routes
                .entry(table.database.clone())
                .or_default()
                .insert(table.table.clone(), Arc::new(route));
        }
        self.routes
            .get(&table.database)
            .and_then(|m| m.get(&table.table))
            .cloned()
            .ok_or_else(|| SinkError::Internal("route vanished from cache".into()))
    }

    fn compute(&self, t: &Arc<TableSchema>, first_time: bool) -> Result<Route, SinkError> {
        let included = self.filter.allows(&t.database, &t.table);
        let topic: Arc<str> =
            render_topic(&self.topic_template, &t.database, &t.table, &self.pipeline).into();
        let name = format!("{}.{}", t.database, t.table);
        let key = if let Some(cols) = self.key_columns.get(&name) {
            let mut idx = Vec::with_capacity(cols.len());
            for c in cols {
                let i = t.column_index(c).ok_or_else(|| SinkError::KeyColumn {
                    table: name.clone(),
                    column: c.clone(),
                    columns: t
                        .columns
                        .iter()
                        .map(|c| c.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                })?;
                idx.push(i);
            }
            KeyRule::Columns(idx)
        } else if !t.primary_key.is_empty() {
            KeyRule::Columns(t.primary_key.clone())
        } else {
            if first_time && included {
                tracing::info!(
                    table = %name,
                    keyless = ?self.keyless,
                    "table has no primary key and no kafka.key_columns entry: {}",
                    match self.keyless {
                        Keyless::Table => "messages are keyed by the table name (one partition, order kept)",
                        Keyless::None => "messages have no key (spread over partitions, no order between rows)",
                    }
                );
            }
            match self.keyless {
                Keyless::Table => {
                    let mut w = JsonWriter::with_capacity(48);
                    w.begin_object();
                    w.key("database");
                    w.string(&t.database);
                    w.key("table");
                    w.string(&t.table);
                    w.end_object();
                    KeyRule::Fixed(w.into_bytes())
                }
                Keyless::None => KeyRule::None,
            }
        };
        Ok(Route {
            included,
            topic,
            key,
            names: Arc::new(FieldNames::new(t)),
            schema: t.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Column, ColumnKind};
    use crate::sink::format::classify_ddl;

    #[test]
    fn schema_changes_follow_the_table_filter() {
        let f = TableFilter::new(
            &["shop.*".into(), "crm.customers".into()],
            &["shop.tmp_*".into()],
        );
        let sent = |sql: &str, db: &str| f.allows_ddl(&classify_ddl(sql, db), sql);
        assert!(sent("ALTER TABLE orders ADD COLUMN note TEXT", "shop"));
        assert!(sent(
            "CREATE TABLE IF NOT EXISTS `shop`.`items` (id INT)",
            "other"
        ));
        assert!(!sent("CREATE TABLE tmp_x (id INT)", "shop"));
        assert!(!sent("ALTER TABLE logs ADD COLUMN x INT", "audit"));
        assert!(!sent("DROP TABLE crm.leads", ""));
        assert!(sent("DROP TABLE crm.customers", ""));
        assert!(!sent("TRUNCATE audit.logs", ""));
        assert!(!sent("CREATE INDEX i ON audit.logs (x)", ""));
        // Database statements: sent when a table of the database may be included.
        assert!(sent("CREATE DATABASE shop", ""));
        assert!(sent("DROP DATABASE crm", ""));
        assert!(!sent("CREATE DATABASE audit", ""));
        // Not sure: sent.
        assert!(sent("RENAME TABLE audit.x TO shop.x", ""));
        assert!(sent("ALTER TABLE audit.x RENAME TO shop.x", ""));
        assert!(sent("DROP TABLE audit.a, shop.b", ""));
        assert!(sent("CREATE VIEW v AS SELECT 1", "audit"));

        let f = TableFilter::new(&[], &["audit.*".into(), "crm.secret".into()]);
        let sent = |sql: &str, db: &str| f.allows_ddl(&classify_ddl(sql, db), sql);
        assert!(!sent("DROP DATABASE audit", ""));
        assert!(sent("DROP DATABASE crm", ""));
        assert!(!sent("ALTER TABLE secret ADD COLUMN y INT", "crm"));
        assert!(sent("ALTER TABLE anything ADD COLUMN y INT", "crm"));
    }

    fn table(db: &str, name: &str, pk: Vec<usize>) -> Arc<TableSchema> {
        let col = |n: &str| Column {
            name: n.into(),
            kind: ColumnKind::Int,
            sql_type: "int".into(),
            unsigned: false,
            nullable: false,
            precision: None,
            scale: None,
        };
        Arc::new(TableSchema {
            database: db.into(),
            table: name.into(),
            columns: vec![col("id"), col("tenant"), col("v")],
            primary_key: pk,
        })
    }

    #[test]
    fn glob_patterns() {
        assert!(glob("*", ""));
        assert!(glob("order_*", "order_2024"));
        assert!(glob("*_log", "audit_log"));
        assert!(glob("a*b*c", "aXXbYc"));
        assert!(!glob("a*b*c", "aXXbY"));
        assert!(!glob("orders", "orders2"));
        assert!(glob("orders", "orders"));
    }

    #[test]
    fn include_exclude_exact_and_patterns() {
        let f = TableFilter::new(
            &["shop.*".into(), "crm.customers".into()],
            &["shop.tmp_*".into()],
        );
        assert!(f.allows("shop", "orders"));
        assert!(f.allows("crm", "customers"));
        assert!(!f.allows("crm", "leads"));
        assert!(!f.allows("shop", "tmp_import"));
        let suffix = TableFilter::new(&["*orders".into()], &[]);
        assert!(suffix.allows("shop", "orders") && !suffix.allows("shop", "items"));
        let all = TableFilter::new(&[], &["*.audit".into()]);
        assert!(all.allows("x", "y"));
        assert!(!all.allows("x", "audit"));
    }

    #[test]
    fn topic_names_replace_characters_kafka_refuses() {
        assert_eq!(
            render_topic("{pipeline}.{db}.{table}", "my db", "Grüße$1", "p"),
            "p.my_db.Gr__e_1"
        );
        assert_eq!(render_topic("all-changes", "a", "b", "p"), "all-changes");
    }

    #[test]
    fn topic_template_and_key_choice() {
        let mut cfg = KafkaConfig {
            topic: "{pipeline}.{db}.{table}".into(),
            ..KafkaConfig::default()
        };
        cfg.key_columns
            .insert("shop.events".into(), vec!["tenant".into(), "id".into()]);
        let mut r = Router::new(&cfg, "p1", TableFilter::default());
        let orders = table("shop", "orders", vec![0]);
        let route = r.route(&orders).unwrap();
        assert_eq!(&*route.topic, "p1.shop.orders");
        assert_eq!(route.key, KeyRule::Columns(vec![0]));
        let events = table("shop", "events", vec![0]);
        assert_eq!(r.route(&events).unwrap().key, KeyRule::Columns(vec![1, 0]));
        let heap = table("shop", "heap", vec![]);
        assert_eq!(
            r.route(&heap).unwrap().key,
            KeyRule::Fixed(br#"{"database":"shop","table":"heap"}"#.to_vec())
        );
        cfg.keyless = Keyless::None;
        let mut r = Router::new(&cfg, "p1", TableFilter::default());
        assert_eq!(r.route(&heap).unwrap().key, KeyRule::None);
    }

    #[test]
    fn unknown_key_column_is_a_clear_error() {
        let mut cfg = KafkaConfig::default();
        cfg.key_columns
            .insert("shop.orders".into(), vec!["nope".into()]);
        let mut r = Router::new(&cfg, "p", TableFilter::default());
        let e = r
            .route(&table("shop", "orders", vec![0]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("`nope`") && e.contains("id, tenant, v"), "{e}");
    }

    #[test]
    fn route_is_recomputed_when_the_table_changes_shape() {
        let mut r = Router::new(&KafkaConfig::default(), "p", TableFilter::default());
        let t1 = table("shop", "orders", vec![0]);
        assert_eq!(r.route(&t1).unwrap().key, KeyRule::Columns(vec![0]));
        let t2 = table("shop", "orders", vec![1]);
        assert_eq!(r.route(&t2).unwrap().key, KeyRule::Columns(vec![1]));
    }
}
