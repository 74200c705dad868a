//! Server settings the source depends on, checked at startup and by
//! `binlog-bridge check`. Each failure says how to fix the server.

use mysql_async::prelude::Queryable;

use crate::check::CheckResult;

/// `(variable, required value, how to fix)`.
const REQUIRED: [(&str, &str, &str); 4] = [
    ("log_bin", "ON", "start the server with log_bin=<path> (binary logging is off)"),
    ("binlog_format", "ROW", "set binlog_format=ROW in the server config (SET GLOBAL affects new sessions only)"),
    ("binlog_row_image", "FULL", "set binlog_row_image=FULL in the server config"),
    ("binlog_row_metadata", "FULL", "set binlog_row_metadata=FULL (MySQL >= 8.0.1, MariaDB >= 10.5) in the server config; without it column names are unknown"),
];

/// Check binlog settings on an open connection.
pub async fn server_settings(conn: &mut mysql_async::Conn) -> Vec<CheckResult> {
    let mut out = Vec::new();
    for (var, want, fix) in REQUIRED {
        let name = format!("mysql {var}");
        let q = format!("SELECT @@GLOBAL.{var}");
        let got: Result<Option<String>, _> = conn.query_first(q).await;
        let result = match got {
            Ok(Some(v)) if v.eq_ignore_ascii_case(want) || (want == "ON" && v == "1") => {
                let shown = if v == "1" { "ON" } else { v.as_str() };
                CheckResult { name, ok: true, detail: format!("{var} = {shown}") }
            }
            Ok(Some(v)) => CheckResult {
                name,
                ok: false,
                detail: format!(
                    "{var} = {}, need {want}: {fix}",
                    match v.as_str() {
                        "0" => "OFF",
                        "1" => "ON",
                        other => other,
                    }
                ),
            },
            Ok(None) => CheckResult { name, ok: false, detail: format!("{var} has no value: {fix}") },
            Err(e) => CheckResult {
                name,
                ok: false,
                detail: format!("cannot read {var}: {e}; the server may be too old (need MySQL >= 8.0 or MariaDB >= 10.5)"),
            },
        };
        out.push(result);
    }
    // MySQL 8 only (MariaDB has no such variables): features whose events the
    // source refuses to decode.
    for (var, want, fix) in MYSQL_ONLY {
        let got: Result<Option<String>, _> =
            conn.query_first(format!("SELECT @@GLOBAL.{var}")).await;
        if let Ok(Some(v)) = got {
            let ok = v.eq_ignore_ascii_case(want) || (want == "OFF" && v == "0");
            out.push(CheckResult {
                name: format!("mysql {var}"),
                ok,
                detail: if ok {
                    format!("{var} = {v:?}")
                } else {
                    format!("{var} = {v:?}, need {want:?}: {fix}")
                },
            });
        }
    }
    out
}

/// `(variable, required value, how to fix)` for MySQL 8 servers.
const MYSQL_ONLY: [(&str, &str, &str); 2] = [
    ("binlog_row_value_options", "", "SET PERSIST binlog_row_value_options='' (partial JSON updates are not decoded)"),
    ("binlog_transaction_compression", "OFF", "SET PERSIST binlog_transaction_compression=OFF (compressed transaction payloads are not decoded)"),
];

/// The GRANT statement the bridge user needs.
pub const GRANT_HINT: &str = "GRANT SELECT, REPLICATION SLAVE, BINLOG MONITOR ON *.* TO '<user>'@'<host>' (MySQL: REPLICATION CLIENT instead of BINLOG MONITOR)";

/// Check the connected user's privileges from `SHOW GRANTS`.
pub async fn privileges(conn: &mut mysql_async::Conn) -> Vec<CheckResult> {
    let name = "mysql privileges".to_string();
    let grants: Result<Vec<String>, _> = conn.query("SHOW GRANTS").await;
    let grants = match grants {
        Ok(g) => g.join("\n").to_ascii_uppercase(),
        Err(e) => {
            return vec![CheckResult {
                name,
                ok: false,
                detail: format!("cannot read SHOW GRANTS: {e}"),
            }]
        }
    };
    let on_all = |g: &str| {
        grants
            .lines()
            .any(|l| l.contains(" ON *.* ") && (l.contains(g) || l.contains("ALL PRIVILEGES")))
    };
    let mut missing = Vec::new();
    if !on_all("REPLICATION SLAVE") && !on_all("REPLICATION REPLICA") {
        missing.push("REPLICATION SLAVE");
    }
    if !on_all("BINLOG MONITOR") && !on_all("REPLICATION CLIENT") && !on_all("SUPER") {
        missing.push("BINLOG MONITOR");
    }
    if !on_all("SELECT") {
        missing.push("SELECT");
    }
    if missing.is_empty() {
        vec![CheckResult {
            name,
            ok: true,
            detail: "REPLICATION SLAVE, BINLOG MONITOR, SELECT".into(),
        }]
    } else {
        vec![CheckResult {
            name,
            ok: false,
            detail: format!("missing {}: run {GRANT_HINT}", missing.join(", ")),
        }]
    }
}

/// Is the configured start position still on the server?
///
/// `FILE:OFFSET` must name a file in `SHOW BINARY LOGS` and an offset where
/// an event starts (or the file's end). A MariaDB GTID list
/// must not be older than the GTID list at the start of the oldest binlog.
pub async fn start_position(conn: &mut mysql_async::Conn, start: &str) -> CheckResult {
    let name = "mysql start position".to_string();
    let fail = |detail: String| CheckResult {
        name: name.clone(),
        ok: false,
        detail,
    };
    let logs: Vec<String> = match super::connection::binary_logs(conn).await {
        Ok(l) => l,
        Err(e) => return fail(e.to_string()),
    };
    let Some(first) = logs.first().cloned() else {
        return fail("SHOW BINARY LOGS is empty: binary logging is off".into());
    };
    let range = format!("{first} .. {}", logs.last().cloned().unwrap_or_default());
    let purged = |what: &str| {
        format!("{what} is no longer on the server (binlogs: {range}): re-snapshot the tables or reset the checkpoint")
    };
    match crate::config::StartPosition::parse(start) {
        Err(e) => fail(format!("mysql.start = {start:?}: {e}")),
        Ok(crate::config::StartPosition::Earliest) => CheckResult {
            name,
            ok: true,
            detail: format!("earliest = {first}:4"),
        },
        Ok(crate::config::StartPosition::Latest) => CheckResult {
            name,
            ok: true,
            detail: "latest".into(),
        },
        Ok(crate::config::StartPosition::At(p)) => {
            if !logs.iter().any(|l| **l == *p.file) {
                if super::connection::purged_before(&p.file, &first) {
                    return fail(purged(&p.to_string()));
                }
                return fail(format!(
                    "{p}: the server has no binlog {} (binlogs: {range}); name a file SHOW BINARY LOGS lists",
                    p.file
                ));
            }
            // The dump refuses an offset where no event starts ("impossible
            // position"), after the bridge has taken the lead: say so here.
            // At the end of the file (SHOW MASTER STATUS) the answer is empty.
            let q = format!(
                "SHOW BINLOG EVENTS IN '{}' FROM {} LIMIT 1",
                p.file.replace('\'', "''"),
                p.offset
            );
            match conn.query::<mysql_async::Row, _>(q).await {
                Ok(_) => CheckResult {
                    name,
                    ok: true,
                    detail: format!("{p} is on the server ({range})"),
                },
                Err(e) => fail(format!(
                    "{p}: the server reads no event at offset {} of {} (SHOW BINLOG EVENTS: {e}); start at an offset SHOW BINLOG EVENTS lists, or the one SHOW MASTER STATUS gives",
                    p.offset, p.file
                )),
            }
        }
        Ok(crate::config::StartPosition::Gtid(g)) => {
            let wanted = match super::GtidState::parse(&g) {
                Ok(super::GtidState::MariaDb(m)) => m,
                Ok(_) => {
                    return CheckResult {
                        name,
                        ok: true,
                        detail: format!(
                            "gtid:{g} (MySQL GTID sets are checked by the server on connect)"
                        ),
                    }
                }
                Err(e) => return fail(format!("mysql.start gtid:{g}: {e}")),
            };
            let q = format!(
                "SHOW BINLOG EVENTS IN '{}' LIMIT 4",
                first.replace('\'', "''")
            );
            let rows: Vec<mysql_async::Row> = match conn.query(q).await {
                Ok(rows) => rows,
                Err(e) => {
                    return fail(format!(
                        "cannot read the GTID list of {first} (SHOW BINLOG EVENTS: {e}; an event over the server's max_allowed_packet early in that file stops it)"
                    ))
                }
            };
            let oldest = rows.iter().find_map(|r| {
                let kind: Option<String> = r.get_opt(2).and_then(Result::ok);
                let info: Option<String> = r.get_opt(5).and_then(Result::ok);
                (kind.as_deref() == Some("Gtid_list")).then(|| info.unwrap_or_default())
            });
            let Some(list) = oldest else {
                return fail(format!(
                    "cannot read the GTID list of {first}: no Gtid_list event among its first four"
                ));
            };
            let list = list.trim_matches(|c| c == '[' || c == ']');
            if list.is_empty() {
                return CheckResult {
                    name,
                    ok: true,
                    detail: format!(
                        "gtid:{g}: the oldest binlog {first} starts at the beginning of history"
                    ),
                };
            }
            match super::GtidState::parse(list) {
                Ok(super::GtidState::MariaDb(oldest)) => {
                    let gone: Vec<String> = oldest
                        .iter()
                        .filter(|(d, (_, seq))| !matches!(wanted.get(d), Some((_, w)) if w >= seq))
                        .map(|(d, (s, q))| format!("{d}-{s}-{q}"))
                        .collect();
                    if gone.is_empty() {
                        CheckResult {
                            name,
                            ok: true,
                            detail: format!(
                                "gtid:{g} is on the server (oldest binlog starts after [{list}])"
                            ),
                        }
                    } else {
                        fail(purged(&format!(
                            "gtid:{g} (needs transactions up to {})",
                            gone.join(",")
                        )))
                    }
                }
                _ => fail(format!("cannot parse the GTID list [{list}] of {first}")),
            }
        }
    }
}

/// Every source check for `binlog-bridge check`: settings, privileges, start position.
pub async fn all(
    conn: &mut mysql_async::Conn,
    config: &crate::config::MysqlConfig,
) -> Vec<CheckResult> {
    let mut out = server_settings(conn).await;
    out.extend(privileges(conn).await);
    out.push(start_position(conn, &config.start).await);
    if !config.exclude_columns.is_empty() {
        out.push(excluded_key_columns(conn, &config.exclude_columns).await);
    }
    out
}

/// `mysql.exclude_columns` must not match a primary-key column of any
/// existing table (tables created later are checked on their first row).
pub async fn excluded_key_columns(
    conn: &mut mysql_async::Conn,
    patterns: &[String],
) -> CheckResult {
    let name = "mysql exclude_columns".to_string();
    let rows: Result<Vec<(String, String, String)>, _> = conn
        .query(
            "SELECT TABLE_SCHEMA, TABLE_NAME, COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE \
             WHERE CONSTRAINT_NAME = 'PRIMARY' \
             AND TABLE_SCHEMA NOT IN ('mysql', 'information_schema', 'performance_schema', 'sys')",
        )
        .await;
    let rows = match rows {
        Ok(r) => r,
        Err(e) => {
            return CheckResult {
                name,
                ok: false,
                detail: format!("cannot read the primary keys from information_schema: {e}"),
            }
        }
    };
    let filter = super::ColumnFilter::new(patterns);
    let clashes: Vec<String> = rows
        .iter()
        .filter_map(|(db, table, col)| {
            filter
                .excludes(db, table, col)
                .map(|p| format!("{p:?} matches primary-key column {db}.{table}.{col}"))
        })
        .collect();
    if clashes.is_empty() {
        CheckResult {
            name,
            ok: true,
            detail: format!(
                "{} pattern(s), no primary-key column among them",
                patterns.len()
            ),
        }
    } else {
        CheckResult {
            name,
            ok: false,
            detail: format!(
                "{}; the message key needs these columns: narrow or remove those mysql.exclude_columns entries",
                clashes.join(", ")
            ),
        }
    }
}
