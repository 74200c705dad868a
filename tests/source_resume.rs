//! Positions against the dev env MariaDB: rotation across files, resume by
//! file/offset + row index inside a 10k-row transaction, resume at a commit
//! position, resume by MariaDB GTID.

mod common;

use std::time::Duration;

use binlog_bridge::event::{ChangeEvent, EventKind, Position, Value};
use binlog_bridge::source::StartFrom;
use mysql_async::prelude::Queryable;

fn ids(evs: &[ChangeEvent]) -> Vec<i64> {
    evs.iter()
        .filter_map(|e| match &e.kind {
            EventKind::Row(r) => match r.after.as_ref().or(r.before.as_ref()).map(|v| &v[0]) {
                Some(Value::Int(i)) => Some(*i),
                other => panic!("id is {other:?}"),
            },
            _ => None,
        })
        .collect()
}

async fn fresh_db(conn: &mut mysql_async::Conn, db: &str) -> Position {
    conn.query_drop(format!("DROP DATABASE IF EXISTS {db}"))
        .await
        .unwrap();
    conn.query_drop(format!("CREATE DATABASE {db}"))
        .await
        .unwrap();
    conn.query_drop(format!(
        "CREATE TABLE {db}.t (id INT PRIMARY KEY, v VARCHAR(20))"
    ))
    .await
    .unwrap();
    common::master_position(conn).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_mid_stream_keeps_every_row_in_order() {
    let mut conn = common::root(&common::root_url()).await;
    let start = fresh_db(&mut conn, "src_rotate").await;
    let mut src = common::start(
        &common::bridge_url(),
        4102,
        &["src_rotate.*"],
        StartFrom::Position(start.clone()),
    )
    .await;
    for i in 1..=3 {
        conn.query_drop(format!("INSERT INTO src_rotate.t VALUES ({i}, 'a')"))
            .await
            .unwrap();
    }
    let first = common::collect_until(&mut src, Duration::from_secs(20), |e| {
        common::rows_of(e) == 3
    })
    .await;
    conn.query_drop("FLUSH BINARY LOGS").await.unwrap();
    let after_flush = common::master_position(&mut conn).await;
    for i in 4..=6 {
        conn.query_drop(format!("INSERT INTO src_rotate.t VALUES ({i}, 'b')"))
            .await
            .unwrap();
    }
    let second = common::collect_until(&mut src, Duration::from_secs(20), |e| {
        common::rows_of(e) == 3
    })
    .await;
    assert_eq!(ids(&first), vec![1, 2, 3]);
    assert_eq!(ids(&second), vec![4, 5, 6]);
    for e in second
        .iter()
        .filter(|e| matches!(e.kind, EventKind::Row(_)))
    {
        assert_eq!(
            e.position.file, after_flush.file,
            "rows after the flush name the new file: {e:?}"
        );
        assert!(e.position >= after_flush);
    }
    // Every row is followed by its commit; positions strictly increase.
    let all: Vec<&ChangeEvent> = first.iter().chain(&second).collect();
    let commits: Vec<&Position> = all
        .iter()
        .filter(|e| matches!(e.kind, EventKind::Commit))
        .map(|e| &e.position)
        .collect();
    assert!(commits.len() >= 5, "commits: {commits:?}");
    assert!(commits.windows(2).all(|w| w[0] < w[1]), "{commits:?}");
    assert!(
        all.iter().all(|e| e.position.gtid.is_some()),
        "MariaDB GTID state is known"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_inside_a_10k_row_transaction_yields_exactly_the_rest() {
    let mut conn = common::root(&common::root_url()).await;
    let start = fresh_db(&mut conn, "src_resume").await;
    conn.query_drop(
        "INSERT INTO src_resume.t SELECT seq, CONCAT('r', seq) FROM src_resume.seq_1_to_10000",
    )
    .await
    .unwrap();
    conn.query_drop("INSERT INTO src_resume.t VALUES (10001, 'after')")
        .await
        .unwrap();

    let mut src = common::start(
        &common::bridge_url(),
        4103,
        &["src_resume.*"],
        StartFrom::Position(start.clone()),
    )
    .await;
    let mut evs = Vec::new();
    let mut most_buffered = 0;
    while common::rows_of(&evs) < 10_001 {
        let ev = tokio::time::timeout(Duration::from_secs(30), src.next_event())
            .await
            .unwrap()
            .unwrap();
        most_buffered = most_buffered.max(src.buffered());
        evs.push(ev);
    }
    drop(src);
    // Memory is bounded by one binlog event (~8 KiB of rows), not the transaction.
    assert!(
        most_buffered > 0 && most_buffered < 1_000,
        "buffered up to {most_buffered} events"
    );
    let rows: Vec<&ChangeEvent> = evs
        .iter()
        .filter(|e| matches!(e.kind, EventKind::Row(_)))
        .collect();
    let txn_start = rows[0].position.clone();
    for (i, r) in rows[..10_000].iter().enumerate() {
        assert_eq!(r.position.row, i as u64);
        assert_eq!(
            (&r.position.file, r.position.offset),
            (&txn_start.file, txn_start.offset)
        );
    }
    assert_eq!(ids(&evs), (1..=10_001).collect::<Vec<_>>());

    // Resume *at* row 4321: it is delivered again, then the rest.
    let at = rows[4321].position.clone();
    let mut src = common::start(
        &common::bridge_url(),
        4103,
        &["src_resume.*"],
        StartFrom::Position(at),
    )
    .await;
    let again = common::collect_until(&mut src, Duration::from_secs(60), |e| {
        common::rows_of(e) == 10_000 - 4321 + 1
    })
    .await;
    assert_eq!(ids(&again), (4322..=10_001).collect::<Vec<_>>());
    drop(src);

    // Resume just after row 9999 (the last of the big transaction): only its commit, then row 10001.
    let after_last = rows[9_999].position.next_row();
    let mut src = common::start(
        &common::bridge_url(),
        4103,
        &["src_resume.*"],
        StartFrom::Position(after_last),
    )
    .await;
    let tail = common::collect_until(&mut src, Duration::from_secs(30), |e| {
        common::rows_of(e) == 1
    })
    .await;
    assert!(
        matches!(tail[0].kind, EventKind::Commit),
        "first event is the big transaction's commit"
    );
    assert_eq!(ids(&tail), vec![10_001]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_by_commit_position_and_by_mariadb_gtid() {
    let mut conn = common::root(&common::root_url()).await;
    let start = fresh_db(&mut conn, "src_gtid").await;
    for i in 1..=5 {
        conn.query_drop(format!("INSERT INTO src_gtid.t VALUES ({i}, 'g')"))
            .await
            .unwrap();
    }
    let mut src = common::start(
        &common::bridge_url(),
        4104,
        &["src_gtid.*"],
        StartFrom::Position(start),
    )
    .await;
    let evs = common::collect_until(&mut src, Duration::from_secs(20), |e| {
        common::rows_of(e) == 5
    })
    .await;
    // Wait for the 5th commit too.
    let mut evs = evs;
    while !matches!(evs.last().map(|e| &e.kind), Some(EventKind::Commit)) {
        evs.push(src.next_event().await.unwrap());
    }
    drop(src);
    let commits: Vec<&ChangeEvent> = evs
        .iter()
        .filter(|e| matches!(e.kind, EventKind::Commit))
        .collect();
    // The commit after row 2: its position resumes at row 3, by file/pos and by GTID.
    let c2 = commits
        .iter()
        .find(|c| {
            let idx = evs.iter().position(|e| std::ptr::eq(e, **c)).unwrap();
            ids(&evs[..idx]) == vec![1, 2]
        })
        .expect("commit after row 2");
    let gtid = c2.position.gtid.clone().expect("gtid state after commit");
    assert!(
        c2.txn.gtid.as_deref().is_some_and(|g| gtid.contains(g)),
        "{gtid} includes the txn GTID {:?}",
        c2.txn.gtid
    );

    let mut src = common::start(
        &common::bridge_url(),
        4104,
        &["src_gtid.*"],
        StartFrom::Position(c2.position.clone()),
    )
    .await;
    let by_pos = common::collect_until(&mut src, Duration::from_secs(20), |e| {
        common::rows_of(e) == 3
    })
    .await;
    assert_eq!(ids(&by_pos), vec![3, 4, 5]);
    drop(src);

    let mut src = common::start(
        &common::bridge_url(),
        4104,
        &["src_gtid.*"],
        StartFrom::Gtid(gtid.to_string()),
    )
    .await;
    let by_gtid = common::collect_until(&mut src, Duration::from_secs(20), |e| {
        common::rows_of(e) == 3
    })
    .await;
    assert_eq!(ids(&by_gtid), vec![3, 4, 5]);
    // Positions seen after a GTID start are real file offsets, equal to the file/pos run's.
    let p_pos: Vec<&Position> = by_pos
        .iter()
        .filter(|e| matches!(e.kind, EventKind::Row(_)))
        .map(|e| &e.position)
        .collect();
    let p_gtid: Vec<&Position> = by_gtid
        .iter()
        .filter(|e| matches!(e.kind, EventKind::Row(_)))
        .map(|e| &e.position)
        .collect();
    assert_eq!(p_pos, p_gtid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn include_and_exclude_filters_skip_tables() {
    let mut conn = common::root(&common::root_url()).await;
    let start = fresh_db(&mut conn, "src_filter").await;
    conn.query_drop("CREATE TABLE src_filter.skipped (id INT PRIMARY KEY)")
        .await
        .unwrap();
    conn.query_drop("INSERT INTO src_filter.skipped VALUES (1)")
        .await
        .unwrap();
    conn.query_drop("INSERT INTO src_filter.t VALUES (2, 'kept')")
        .await
        .unwrap();
    let mut cfg = common::mysql_config(&common::bridge_url(), 4105, &["src_filter.*"]);
    cfg.exclude = vec!["src_filter.skip*".into()];
    let mut src = binlog_bridge::source::BinlogSource::start(
        &cfg,
        binlog_bridge::source::SourceOptions::default(),
        StartFrom::Position(start),
    )
    .await
    .unwrap();
    let evs = common::collect_until(&mut src, Duration::from_secs(10), |e| {
        common::rows_of(e) == 1
    })
    .await;
    assert_eq!(ids(&evs), vec![2], "rows of the excluded table are skipped");
    let EventKind::Row(r) = &evs
        .iter()
        .find(|e| matches!(e.kind, EventKind::Row(_)))
        .unwrap()
        .kind
    else {
        unreachable!()
    };
    assert_eq!(r.table.table, "t");
}
