use super::*;
use crate::event::TableSchema;
use std::sync::Arc;

fn pos(o: u64) -> Position {
    Position::new("binlog.000001", o)
}

fn k(i: i64) -> Key {
    vec![KeyPart::I(i)]
}

fn row(id: i64) -> RowChange {
    RowChange {
        table: Arc::new(TableSchema {
            database: "db".into(),
            table: "b".into(),
            columns: vec![crate::event::Column {
                name: "id".into(),
                kind: ColumnKind::Int,
                sql_type: "int".into(),
                unsigned: false,
                nullable: false,
                precision: None,
                scale: None,
            }],
            primary_key: vec![0],
        }),
        op: crate::event::Op::Update,
        before: Some(vec![Value::Int(id)]),
        after: Some(vec![Value::Int(id)]),
    }
}

/// Tables a, b, c; segment 0 at 100 read a and b up to key 10 (checkpoint),
/// and partition 1 of `t` had received b's rows up to key 15 before the
/// crash; segment 1 at 200 continues b after 10.
fn two_segments() -> SnapshotState {
    let mut s = SnapshotState::new(pos(100), vec!["db.a".into(), "db.b".into(), "db.c".into()]);
    s.segments.push(Segment {
        position: pos(200),
        table: 1,
        after: Some(k(10)),
        residue: vec![Residue {
            topic: "t".into(),
            partition: 1,
            key: k(15),
        }],
    });
    s.done = true;
    s
}

#[test]
fn each_key_is_covered_by_the_segment_that_read_it() {
    let s = two_segments();
    // Table a: all read by segment 0.
    assert_eq!(s.covering(0, &k(99), "t", 0).position, pos(100));
    // Table b up to the checkpoint: segment 0.
    assert_eq!(s.covering(1, &k(10), "t", 0).position, pos(100));
    // Past the checkpoint, in the partition that already had rows up to 15.
    assert_eq!(s.covering(1, &k(15), "t", 1).position, pos(100));
    assert_eq!(s.covering(1, &k(16), "t", 1).position, pos(200));
    // Past the checkpoint in another partition: segment 1.
    assert_eq!(s.covering(1, &k(11), "t", 0).position, pos(200));
    // Later tables: segment 1.
    assert_eq!(s.covering(2, &k(1), "t", 1).position, pos(200));
}

#[test]
fn the_stream_filter_skips_only_changes_a_later_segment_reflects() {
    let s = two_segments();
    let mut f = StreamFilter::new(&s).expect("two segments need a filter");
    // Key 20 of b in partition 0 was read at 200: a change at 150 is in it.
    assert!(f.skip(&row(20), &pos(150), "t", 0));
    // Key 5 was read at 100: the change at 150 is not in it.
    assert!(!f.skip(&row(5), &pos(150), "t", 0));
    // Key 12 in partition 1 was sent before the crash (read at 100).
    assert!(!f.skip(&row(12), &pos(150), "t", 1));
    // From 200 on nothing is skipped.
    assert!(!f.skip(&row(20), &pos(200), "t", 0));
    assert_eq!(f.skipped(), 1);
    // A single segment needs no filter.
    let one = SnapshotState::new(pos(100), vec!["db.b".into()]);
    assert!(StreamFilter::new(&one).is_none());
}

#[test]
fn keys_order_like_the_server_and_round_trip_as_header_text() {
    assert!(vec![KeyPart::I(1), KeyPart::I(9)] < vec![KeyPart::I(2), KeyPart::I(0)]);
    assert!(KeyPart::U(u64::MAX) > KeyPart::U(1));
    let d = key_part(&Value::Date(crate::event::Date {
        year: 2024,
        month: 2,
        day: 29,
    }));
    let dt = key_part(&Value::DateTime(crate::event::DateTime {
        date: crate::event::Date {
            year: 2024,
            month: 2,
            day: 29,
        },
        hour: 0,
        minute: 0,
        second: 1,
        micros: 0,
        fsp: 0,
    }));
    assert!(d < dt);
    let key = vec![
        KeyPart::I(-3),
        KeyPart::U(7),
        KeyPart::T("2024-02-29 00:00:00.000000".into()),
    ];
    assert_eq!(parse_key(&key_text(&key)), Some(key));
    assert_eq!(key_part(&Value::String("x".into())), None);
}

#[test]
fn a_missing_state_is_none_and_a_broken_one_is_an_error() {
    let mut extra = serde_json::Map::new();
    assert_eq!(SnapshotState::from_extra(&extra), Ok(None));
    extra.insert(EXTRA.into(), serde_json::json!({"done": "yes"}));
    let e = SnapshotState::from_extra(&extra).unwrap_err();
    assert!(e.contains("checkpoint set"), "{e}");
    let s = two_segments();
    extra.insert(EXTRA.into(), serde_json::to_value(&s).unwrap());
    assert_eq!(SnapshotState::from_extra(&extra), Ok(Some(s)));
}

#[test]
fn residue_ignores_rows_of_an_earlier_snapshot() {
    let mut s = SnapshotState::new(pos(500), vec!["db.a".into(), "db.b".into()]);
    s.table = 1;
    s.after = Some(k(10));
    let tail = |table: &str, key: i64, at: Option<u64>| Tail {
        table: table.into(),
        key: k(key),
        position: at.map(|o| Position { row: 3, ..pos(o) }),
        run: None,
    };
    let mut tails = HashMap::new();
    // This snapshot's row past the checkpoint: residue.
    tails.insert((Arc::from("t"), 0), tail("db.b", 20, Some(500)));
    // Past the checkpoint, but sent by an earlier snapshot (before P1).
    tails.insert((Arc::from("t"), 1), tail("db.b", 30, Some(100)));
    // At or below the checkpointed key; another table.
    tails.insert((Arc::from("t"), 2), tail("db.b", 10, Some(500)));
    tails.insert((Arc::from("t"), 3), tail("db.a", 40, Some(500)));
    assert_eq!(
        s.residue(&tails),
        vec![Residue {
            topic: "t".into(),
            partition: 0,
            key: k(20)
        }]
    );
}
