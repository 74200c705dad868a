//! Our own binlog dump reader (src/source/dump.rs) against mysql_async's
//! stream, on a MariaDB of the test's own: the same range of the binlog read both
//! ways gives the same change events, including a row event over 16 MiB
//! (sent as several packets and joined), a multi-row transaction, an update,
//! a delete and a schema change. The big row is read by connections whose
//! session max_allowed_packet (16 MiB) is smaller than its event, which
//! mysql_async alone refused at every reconnect. A start position after
//! that event, where MariaDB cannot tell the GTID state, still streams and
//! says so in a warning.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use binlog_bridge::config::DumpReader;
use binlog_bridge::event::{ChangeEvent, EventKind, Position, Value};
use binlog_bridge::source::StartFrom;
use common::PrivateMariaDb;

/// A LONGTEXT value longer than one protocol packet holds (16 MiB - 1).
const BIG: usize = 17 * 1024 * 1024 + 123;

async fn read_all(
    url: &str,
    reader: DumpReader,
    name: &str,
    from: &binlog_bridge::event::Position,
    commits: usize,
) -> Vec<ChangeEvent> {
    let mut cfg = common::mysql_config(url, 4301, &["r.*"]);
    cfg.dump_reader = reader;
    let mut src = common::start_with(&cfg, StartFrom::Position(from.clone())).await;
    assert_eq!(src.dump_reader(), Some(name), "which reader runs the dump");
    common::collect_until(&mut src, Duration::from_secs(60), |evs| {
        evs.iter()
            .filter(|e| matches!(e.kind, EventKind::Commit))
            .count()
            >= commits
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_dump_readers_yield_the_same_events_including_a_row_over_16_mib() {
    // A server of its own: an event over 16 MiB in the shared dev env's
    // binlog would fail other tests' SHOW BINLOG EVENTS and
    // BINLOG_GTID_POS(), which read it within their session's
    // max_allowed_packet.
    let log = Captured::default();
    tracing::subscriber::set_global_default(
        tracing_subscriber::fmt()
            .with_writer(log.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::WARN)
            .finish(),
    )
    .expect("the only subscriber of this test binary");
    let mut db = PrivateMariaDb::start(common::free_port(), &[]);
    db.sql(
        "CREATE DATABASE r; CREATE TABLE r.t (id INT PRIMARY KEY, n INT, v LONGTEXT);
         SET GLOBAL max_allowed_packet = 67108864;",
    );
    let out = db.sql("SHOW MASTER STATUS");
    let mut f = out.split_whitespace();
    let start = Position::new(
        f.next().expect("a binlog file").to_string(),
        f.next()
            .and_then(|p| p.parse::<u64>().ok())
            .expect("a position"),
    );
    // Each statement its own transaction, except the one in BEGIN/COMMIT.
    db.sql(&format!(
        "INSERT INTO r.t VALUES (1, 1, 'one');
         BEGIN; INSERT INTO r.t VALUES (2, 2, 'two'), (3, 3, 'three'); UPDATE r.t SET n = 10 WHERE id = 1; COMMIT;
         INSERT INTO r.t VALUES (4, 4, REPEAT('x', {BIG}));
         DELETE FROM r.t WHERE id = 2;
         ALTER TABLE r.t ADD COLUMN extra INT;
         INSERT INTO r.t VALUES (5, 5, 'five', 55);"
    ));
    // The readers' sessions get 16 MiB, less than the big row's event.
    db.sql("SET GLOBAL max_allowed_packet = 16777216");

    // Commits: insert 1, the transaction, the big row, the delete, the
    // ALTER (its own), insert 5.
    let commits = 6;
    let url = db.bridge_url();
    let own = read_all(&url, DumpReader::Auto, "own", &start, commits).await;
    let driver = read_all(&url, DumpReader::Driver, "mysql_async", &start, commits).await;

    let rows = own
        .iter()
        .filter(|e| matches!(e.kind, EventKind::Row(_)))
        .count();
    assert_eq!(rows, 7, "7 row changes read: {own:#?}");
    let big = own.iter().find_map(|e| match &e.kind {
        EventKind::Row(r) => r
            .after
            .as_ref()
            .and_then(|a| {
                a.iter().find_map(|v| match v {
                    Value::String(t) => Some(t.len()),
                    _ => None,
                })
            })
            .filter(|len| *len == BIG),
        _ => None,
    });
    assert_eq!(big, Some(BIG), "the row over 16 MiB arrived whole");
    assert_eq!(own.len(), driver.len(), "as many events both ways");
    for (i, (a, b)) in own.iter().zip(&driver).enumerate() {
        assert_eq!(a, b, "event {i} differs between the readers");
    }

    // A start position after the big event, given without a GTID state (as
    // `mysql.start = "FILE:OFFSET"` gives it): MariaDB's BINLOG_GTID_POS()
    // answers NULL there, as it cannot read past an event over its
    // max_allowed_packet. The rows still stream, and a warning says that the
    // GTID state is not known and what to do.
    let big_at = own
        .iter()
        .position(|e| matches!(&e.kind, EventKind::Row(r) if r.after.as_ref().is_some_and(|a| a.iter().any(|v| matches!(v, Value::String(t) if t.len() == BIG)))))
        .expect("the big row");
    let after_big = own[big_at..]
        .iter()
        .find(|e| matches!(e.kind, EventKind::Commit))
        .map(|e| Position::new(e.position.file.clone(), e.position.offset))
        .expect("the big row's commit");
    let rest = read_all(&url, DumpReader::Auto, "own", &after_big, 3).await;
    let rest_rows = rest
        .iter()
        .filter(|e| matches!(e.kind, EventKind::Row(_)))
        .count();
    assert_eq!(
        rest_rows, 2,
        "the delete and insert 5 after the big row: {rest:#?}"
    );
    let logged = String::from_utf8_lossy(&log.0.lock().expect("log buffer")).into_owned();
    let warning = logged
        .lines()
        .find(|l| l.contains("cannot read the GTID state at the start position"))
        .unwrap_or_else(|| panic!("no GTID state warning in:\n{logged}"));
    assert!(warning.contains("WARN"), "{warning}");
    assert!(
        warning.contains(&after_big.to_string()) && warning.contains("max_allowed_packet"),
        "names the position and the setting: {warning}"
    );
    db.stop();
}

/// What the source logs, kept for assertions.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("log buffer poisoned"))?
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}
