//! MySQL 8-only paths on byte fixtures (MySQL cannot run here): v2 row
//! events, binary JSON, GTID and PREVIOUS_GTIDS, GTID-wrapped DDL, the
//! unsupported PARTIAL_UPDATE_ROWS event; plus checksum verification and a
//! randomized mutation test showing malformed events give errors, never panics.

use std::sync::Arc;

use binlog_bridge::event::{Date, DateTime, EventKind, Op, Position, Time, Value};
use binlog_bridge::source::charset::Charsets;
use binlog_bridge::source::fixtures::{EventBuilder, FixtureColumn};
use binlog_bridge::source::table_map::ty;
use binlog_bridge::source::{Decoder, SourceError, TableFilter};
use rand::{Rng, SeedableRng};

const SID: [u8; 16] = [
    0x3e, 0x11, 0xfa, 0x47, 0x71, 0xca, 0x11, 0xe1, 0x9e, 0x33, 0xc8, 0x0a, 0xa9, 0x42, 0x95, 0x62,
];
const UUID: &str = "3e11fa47-71ca-11e1-9e33-c80aa9429562";

fn columns() -> Vec<FixtureColumn> {
    let mut id = FixtureColumn::new("id", ty::LONGLONG, &[]);
    id.unsigned = true;
    id.nullable = false;
    let mut name = FixtureColumn::new("name", ty::VARCHAR, &[80, 0]);
    name.charset = Some(255);
    let price = FixtureColumn::new("price", ty::NEWDECIMAL, &[10, 2]);
    let doc = FixtureColumn::new("doc", ty::JSON, &[4]);
    let m = FixtureColumn::new("m", ty::INT24, &[]);
    let mut e = FixtureColumn::new("e", ty::STRING, &[ty::ENUM, 1]);
    e.members = vec!["x".into(), "y".into()];
    let dt = FixtureColumn::new("dt", ty::DATETIME2, &[3]);
    let tm = FixtureColumn::new("tm", ty::TIME2, &[2]);
    vec![id, name, price, doc, m, e, dt, tm]
}

/// One row image for `columns()`, per the v2 row format.
fn row(id: u64, name: &str) -> Vec<u8> {
    let mut r = vec![0u8]; // null bitmap: nothing NULL
    r.extend(id.to_le_bytes());
    r.push(name.len() as u8);
    r.extend(name.as_bytes());
    r.extend([0x80, 0, 0, 12, 34]); // DECIMAL(10,2) 12.34
                                    // JSON [1, "x"] as a small array.
    let json = [0x02, 2, 0, 12, 0, 0x05, 1, 0, 0x0c, 10, 0, 1, b'x'];
    r.extend((json.len() as u32).to_le_bytes());
    r.extend(json);
    r.extend([0xff, 0xff, 0xff]); // MEDIUMINT -1
    r.push(2); // ENUM 'y'
    let ymd = ((2024u64 * 13 + 2) << 5) | 29;
    let packed = (ymd << 17) | (12 << 12) | (34 << 6) | 56;
    r.extend(&(packed + 0x80_0000_0000).to_be_bytes()[3..]);
    r.extend(7890u16.to_be_bytes()); // .789 at fsp 3
    r.extend([0x7f, 0xff, 0xfe, 206]); // TIME(2) -00:00:01.50
    r
}

fn decoder(checksum: bool) -> Decoder {
    let mut d = Decoder::new(
        Arc::new(Charsets::default()),
        TableFilter::default(),
        checksum,
    );
    d.resume_at(&Position::new("binlog.000001", 4));
    d
}

fn drain(d: &mut Decoder) -> Vec<binlog_bridge::event::ChangeEvent> {
    std::iter::from_fn(|| d.pop()).collect()
}

#[test]
fn mysql8_gtid_transaction_with_v2_rows_and_binary_json() {
    let mut b = EventBuilder::default();
    let cols = columns();
    let mut events = vec![b.fde(), b.previous_gtids(SID, 1, 5)];
    let txn_start = b.pos;
    events.push(b.mysql_gtid(SID, 5));
    events.push(b.query("shop", "BEGIN"));
    events.push(b.table_map(70, "shop", "items", &cols, &[0]));
    let mut two = row(1, "héllo😀");
    two.extend(row(2, "b"));
    events.push(b.rows(30, 70, cols.len(), &two));
    let mut upd = row(2, "b");
    upd.extend(row(2, "c"));
    events.push(b.rows(31, 70, cols.len(), &upd));
    events.push(b.xid(99));
    let end = b.pos;
    let mut d = decoder(true);
    for e in &events {
        d.feed(e).unwrap();
    }
    let out = drain(&mut d);
    assert_eq!(out.len(), 4, "{out:#?}");
    let EventKind::Row(r0) = &out[0].kind else {
        panic!()
    };
    assert_eq!(r0.op, Op::Insert);
    assert_eq!(r0.table.primary_key, vec![0]);
    let types: Vec<&str> = r0
        .table
        .columns
        .iter()
        .map(|c| c.sql_type.as_str())
        .collect();
    assert_eq!(
        types,
        [
            "bigint unsigned",
            "varchar(20)",
            "decimal(10,2)",
            "json",
            "mediumint",
            "enum('x','y')",
            "datetime(3)",
            "time(2)"
        ]
    );
    assert_eq!(
        r0.after.as_ref().unwrap(),
        &vec![
            Value::UInt(1),
            Value::String("héllo😀".into()),
            Value::Decimal("12.34".into()),
            Value::Json(r#"[1, "x"]"#.into()),
            Value::Int(-1),
            Value::Enum("y".into()),
            Value::DateTime(DateTime {
                date: Date {
                    year: 2024,
                    month: 2,
                    day: 29
                },
                hour: 12,
                minute: 34,
                second: 56,
                micros: 789_000,
                fsp: 3
            }),
            Value::Time(Time {
                negative: true,
                hours: 0,
                minutes: 0,
                seconds: 1,
                micros: 500_000,
                fsp: 2
            }),
        ]
    );
    let before = format!("{UUID}:1-4");
    for (i, e) in out[..3].iter().enumerate() {
        assert_eq!(
            e.position,
            Position {
                file: "binlog.000001".into(),
                offset: u64::from(txn_start),
                row: i as u64,
                gtid: Some(before.as_str().into())
            }
        );
        assert_eq!(e.txn.gtid.as_deref(), Some(format!("{UUID}:5").as_str()));
    }
    let EventKind::Row(upd) = &out[2].kind else {
        panic!()
    };
    assert_eq!(upd.op, Op::Update);
    assert_eq!(upd.before.as_ref().unwrap()[1], Value::String("b".into()));
    assert_eq!(upd.after.as_ref().unwrap()[1], Value::String("c".into()));
    assert!(matches!(out[3].kind, EventKind::Commit));
    assert_eq!(out[3].txn.xid, Some(99));
    assert_eq!(
        out[3].position,
        Position {
            file: "binlog.000001".into(),
            offset: u64::from(end),
            row: 0,
            gtid: Some(format!("{UUID}:1-5").into())
        }
    );
}

#[test]
fn mysql8_ddl_is_its_own_gtid_transaction() {
    let mut b = EventBuilder::default();
    let mut d = decoder(true);
    d.feed(&b.fde()).unwrap();
    d.feed(&b.previous_gtids(SID, 1, 7)).unwrap();
    let start = b.pos;
    d.feed(&b.mysql_gtid(SID, 7)).unwrap();
    d.feed(&b.query("shop", "/* c */ ALTER TABLE items ADD c INT"))
        .unwrap();
    let out = drain(&mut d);
    assert_eq!(out.len(), 2);
    let EventKind::Schema(s) = &out[0].kind else {
        panic!("{out:?}")
    };
    assert_eq!(
        (s.database.as_str(), s.statement.as_str()),
        ("shop", "/* c */ ALTER TABLE items ADD c INT")
    );
    assert_eq!(out[0].position.offset, u64::from(start));
    assert!(matches!(out[1].kind, EventKind::Commit));
    assert_eq!(out[1].position.offset, u64::from(b.pos));
    assert_eq!(
        out[1].position.gtid.as_deref(),
        Some(format!("{UUID}:1-7").as_str())
    );
}

#[test]
fn partial_json_update_is_refused_with_the_fix() {
    let mut b = EventBuilder::default();
    let cols = columns();
    let mut d = decoder(true);
    for e in [
        b.fde(),
        b.mysql_gtid(SID, 1),
        b.query("", "BEGIN"),
        b.table_map(70, "shop", "items", &cols, &[0]),
    ] {
        d.feed(&e).unwrap();
    }
    let e = d
        .feed(&b.rows(39, 70, cols.len(), &row(1, "a")))
        .unwrap_err();
    assert!(e.is_definite());
    assert!(e.to_string().contains("binlog_row_value_options"), "{e}");
}

#[test]
fn corrupt_checksum_is_a_definite_error() {
    let mut b = EventBuilder::default();
    let mut d = decoder(true);
    d.feed(&b.fde()).unwrap();
    let mut q = b.query("", "BEGIN");
    q[25] ^= 0x01;
    let e = d.feed(&q).unwrap_err();
    assert!(matches!(e, SourceError::Checksum { .. }), "{e:?}");
    assert!(e.is_definite());
    assert!(e.to_string().contains("CRC32"), "{e}");
}

#[test]
fn compressed_transaction_payload_is_refused() {
    let mut b = EventBuilder::default();
    let mut d = decoder(true);
    d.feed(&b.fde()).unwrap();
    let e = d.feed(&b.event(40, &[1, 2, 3])).unwrap_err();
    assert!(
        e.to_string().contains("binlog_transaction_compression"),
        "{e}"
    );
}

/// Randomized mutation test: flip, truncate, extend and splice bytes of
/// valid events (checksums off so mutations reach the parsers) and feed
/// them after a valid prefix. Any panic fails the test.
#[test]
fn mutated_and_random_events_never_panic() {
    let seed: u64 = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed);
    let iters: usize = std::env::var("FUZZ_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30_000);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut b = EventBuilder {
        checksum: false,
        ..EventBuilder::default()
    };
    let cols = columns();
    let prefix = vec![
        b.fde(),
        b.mysql_gtid(SID, 1),
        b.query("", "BEGIN"),
        b.table_map(70, "shop", "items", &cols, &[0]),
    ];
    let mut two = row(1, "x");
    two.extend(row(2, "y"));
    let corpus = vec![
        b.table_map(70, "shop", "items", &cols, &[0]),
        b.rows(30, 70, cols.len(), &two),
        b.rows(23, 70, cols.len(), &row(3, "z")),
        b.rows(31, 70, cols.len(), &two),
        b.query("shop", "CREATE TABLE t (a INT)"),
        b.mysql_gtid(SID, 2),
        b.maria_gtid(0, 5, false),
        b.previous_gtids(SID, 1, 9),
        b.rotate("binlog.000002", 4),
        b.xid(5),
        b.fde(),
    ];
    let (mut ok, mut errors) = (0usize, 0usize);
    for i in 0..iters {
        let mut ev = corpus[rng.gen_range(0..corpus.len())].clone();
        match rng.gen_range(0..5) {
            0 => {
                for _ in 0..rng.gen_range(1..4) {
                    let at = rng.gen_range(19..ev.len().max(20));
                    if at < ev.len() {
                        ev[at] = rng.gen();
                    }
                }
            }
            1 => ev.truncate(rng.gen_range(19..=ev.len())),
            2 => ev.extend((0..rng.gen_range(1..64)).map(|_| rng.gen::<u8>())),
            3 => {
                let at = rng.gen_range(19..=ev.len());
                let junk: Vec<u8> = (0..rng.gen_range(1..16)).map(|_| rng.gen()).collect();
                ev.splice(at..at, junk);
            }
            _ => {
                ev = (0..rng.gen_range(0..200)).map(|_| rng.gen()).collect();
            }
        }
        if ev.len() >= 19 && rng.gen_bool(0.9) {
            // Keep the size field truthful so the body parsers are reached.
            let n = ev.len() as u32;
            ev[9..13].copy_from_slice(&n.to_le_bytes());
        }
        let mut d = decoder(false);
        for p in &prefix {
            d.feed(p).unwrap();
        }
        match d.feed(&ev) {
            Ok(()) => ok += 1,
            Err(e) => {
                assert!(e.is_definite(), "iteration {i}: {e}");
                errors += 1;
            }
        }
        drain(&mut d);
    }
    assert!(ok > 0 && errors > iters / 10, "ok {ok}, errors {errors}");
}

#[test]
fn resume_row_index_at_a_non_transaction_start_is_refused() {
    let mut b = EventBuilder::default();
    let fde = b.fde();
    let gtid = b.mysql_gtid(SID, 1);
    let mut d = Decoder::new(Arc::new(Charsets::default()), TableFilter::default(), true);
    // Row 3 of a transaction claimed to start 1 byte after the real one.
    d.resume_at(&Position {
        file: "binlog.000001".into(),
        offset: u64::from(b.pos) + 1,
        row: 3,
        gtid: None,
    });
    d.feed(&fde).unwrap();
    let e = d.feed(&gtid).unwrap_err();
    assert!(
        e.to_string()
            .contains("use a position taken from a delivered event"),
        "{e}"
    );
}

#[test]
fn unknown_gtid_state_stays_unknown_until_the_next_file_says() {
    let mut b = EventBuilder::default();
    let mut d = decoder(true);
    d.feed(&b.fde()).unwrap();
    d.feed(&b.mysql_gtid(SID, 9)).unwrap();
    d.feed(&b.query("shop", "DROP TABLE x")).unwrap();
    let out = drain(&mut d);
    assert_eq!(
        out[1].position.gtid, None,
        "a started-mid-file stream does not invent a GTID set"
    );
    assert_eq!(
        out[1].txn.gtid.as_deref(),
        Some(format!("{UUID}:9").as_str())
    );
    // Next file: PREVIOUS_GTIDS makes the state known.
    d.feed(&b.rotate("binlog.000002", 4)).unwrap();
    b.pos = 4;
    d.feed(&b.fde()).unwrap();
    d.feed(&b.previous_gtids(SID, 1, 10)).unwrap();
    d.feed(&b.mysql_gtid(SID, 10)).unwrap();
    d.feed(&b.query("shop", "DROP TABLE y")).unwrap();
    let out = drain(&mut d);
    assert_eq!(&*out[0].position.file, "binlog.000002");
    assert_eq!(
        out[0].position.gtid.as_deref(),
        Some(format!("{UUID}:1-9").as_str())
    );
    assert_eq!(
        out[1].position.gtid.as_deref(),
        Some(format!("{UUID}:1-10").as_str())
    );
}

#[test]
fn mariadb_gtid_is_begin_unless_standalone() {
    let mut b = EventBuilder::default();
    let cols = columns();
    let mut d = decoder(true);
    d.feed(&b.fde()).unwrap();
    // DML: GTID, a statement that is not DDL, rows, then COMMIT (non-transactional engine).
    d.feed(&b.maria_gtid(0, 10, false)).unwrap();
    d.feed(&b.query("shop", "SAVEPOINT a")).unwrap();
    d.feed(&b.table_map(70, "shop", "items", &cols, &[0]))
        .unwrap();
    d.feed(&b.rows(23, 70, cols.len(), &row(1, "a"))).unwrap();
    d.feed(&b.query("shop", "COMMIT")).unwrap();
    // DDL: standalone GTID then the statement.
    d.feed(&b.maria_gtid(0, 11, true)).unwrap();
    d.feed(&b.query("shop", "TRUNCATE items")).unwrap();
    let kinds: Vec<&str> = drain(&mut d)
        .iter()
        .map(|e| match e.kind {
            EventKind::Row(_) => "row",
            EventKind::Schema(_) => "schema",
            EventKind::Commit => "commit",
        })
        .collect();
    assert_eq!(kinds, ["row", "commit", "schema", "commit"]);
}
