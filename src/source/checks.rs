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
                detail: format!("{var} = {v}, need {want}: {fix}"),
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
