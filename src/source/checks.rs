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
                CheckResult { name, ok: true, detail: format!("{var} = {v}") }
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
    out
}

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
