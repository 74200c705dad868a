//! The transactional protocol against a scripted producer (the seam's fake):
//! fencing, lease loss, resume, batch boundaries, commit errors.

use std::collections::VecDeque;
use std::time::Duration;

use super::*;

/// A producer whose answers are scripted and whose calls are recorded. It
/// also models what a broker would have committed: the progress records of
/// committed transactions only.
#[derive(Default)]
struct Fake {
    calls: Vec<&'static str>,
    /// Committed progress records, oldest first (what read_committed sees).
    committed_progress: Vec<Position>,
    /// Progress record of the open transaction.
    open_progress: Option<Position>,
    init_result: Option<TxnError>,
    commit_results: VecDeque<TxnError>,
    fatal: Option<TxnError>,
    in_txn: bool,
}

impl TxnOps for Fake {
    async fn init(&mut self) -> Result<(), TxnError> {
        self.calls.push("init");
        match self.init_result.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
    async fn last_progress(&mut self) -> Result<Option<Position>, TxnError> {
        self.calls.push("last_progress");
        Ok(self.committed_progress.last().cloned())
    }
    fn begin(&mut self) -> Result<(), TxnError> {
        self.calls.push("begin");
        assert!(!self.in_txn, "begin with a transaction open");
        self.in_txn = true;
        Ok(())
    }
    fn send_progress(&mut self, resume: &Position) -> Result<(), TxnError> {
        self.calls.push("send_progress");
        assert!(self.in_txn, "progress record outside a transaction");
        self.open_progress = Some(resume.clone());
        Ok(())
    }
    async fn commit(&mut self) -> Result<(), TxnError> {
        self.calls.push("commit");
        if let Some(e) = self.commit_results.pop_front() {
            if matches!(e, TxnError::Fenced(_) | TxnError::Fatal(_)) {
                self.fatal = Some(e.clone());
            }
            return Err(e);
        }
        self.in_txn = false;
        if let Some(p) = self.open_progress.take() {
            self.committed_progress.push(p);
        }
        Ok(())
    }
    async fn abort(&mut self) -> Result<(), TxnError> {
        self.calls.push("abort");
        assert!(
            self.fatal.is_none(),
            "abort called on a fenced/fatal producer"
        );
        self.in_txn = false;
        self.open_progress = None;
        Ok(())
    }
    fn fatal(&self) -> Option<TxnError> {
        self.fatal.clone()
    }
}

fn limits(max_messages: u64) -> TxnLimits {
    TxnLimits {
        max_messages,
        max_bytes: u64::MAX,
        max_time: Duration::from_secs(3600),
    }
}

fn pos(offset: u64, row: u64) -> Position {
    Position {
        file: "binlog.000002".into(),
        offset,
        row,
        gtid: Some("0-1-7".into()),
    }
}

#[tokio::test]
async fn takeover_fences_first_then_resumes_from_the_later_of_checkpoint_and_progress() {
    // Progress record ahead of the checkpoint (the old leader committed,
    // then died before its etcd write).
    let fake = Fake {
        committed_progress: vec![pos(100, 0), pos(500, 3)],
        ..Fake::default()
    };
    let mut d = TxnDriver::new(fake, limits(10));
    let r = d.takeover(Some(&pos(100, 0))).await.unwrap();
    assert_eq!(r, Some(pos(500, 3)));
    assert_eq!(
        d.ops().calls,
        ["init", "last_progress"],
        "fence before reading"
    );

    // Checkpoint ahead (progress topic compacted away / recreated by hand).
    let fake = Fake {
        committed_progress: vec![pos(100, 0)],
        ..Fake::default()
    };
    let mut d = TxnDriver::new(fake, limits(10));
    assert_eq!(
        d.takeover(Some(&pos(900, 0))).await.unwrap(),
        Some(pos(900, 0))
    );

    // Neither: start from mysql.start.
    let mut d = TxnDriver::new(Fake::default(), limits(10));
    assert_eq!(d.takeover(None).await.unwrap(), None);
    // Only progress.
    let fake = Fake {
        committed_progress: vec![pos(42, 1)],
        ..Fake::default()
    };
    let mut d = TxnDriver::new(fake, limits(10));
    assert_eq!(d.takeover(None).await.unwrap(), Some(pos(42, 1)));
}

#[tokio::test]
async fn fenced_at_init_stops_without_work() {
    let fake = Fake {
        init_result: Some(TxnError::Fenced("PRODUCER_FENCED".into())),
        ..Fake::default()
    };
    let mut d = TxnDriver::new(fake, limits(10));
    let e = d.takeover(Some(&pos(1, 0))).await.unwrap_err();
    assert!(matches!(e, TxnError::Fenced(_)), "{e}");
    assert!(matches!(d.before_send(), Err(TxnError::Stopped(_))));
}

#[tokio::test]
async fn fenced_on_produce_steps_down_without_abort_or_checkpoint() {
    let mut d = TxnDriver::new(Fake::default(), limits(100));
    d.takeover(None).await.unwrap();
    d.before_send().unwrap();
    d.sent(pos(10, 1), 1, 100);
    // The sink's delivery failed; the producer reports it is fenced.
    d.ops.fatal = Some(TxnError::Fenced(
        "Broker: Producer attempted an operation with an old epoch".into(),
    ));
    let e = d.fail(TxnError::Abortable("delivery failed".into())).await;
    assert!(
        matches!(e, TxnError::Fenced(_)),
        "fenced wins over the send error: {e}"
    );
    assert!(
        !d.ops().calls.contains(&"abort"),
        "a fenced producer cannot abort"
    );
    // No position ever comes out after a fence.
    assert!(matches!(d.commit(true).await, Err(TxnError::Stopped(_))));
    assert!(matches!(d.before_send(), Err(TxnError::Stopped(_))));
    assert!(d.ops().committed_progress.is_empty());
    assert_eq!(d.commits(), 0);
}

#[tokio::test]
async fn fenced_on_commit_steps_down_without_abort_or_checkpoint() {
    let mut fake = Fake::default();
    fake.commit_results
        .push_back(TxnError::Fenced("PRODUCER_FENCED".into()));
    let mut d = TxnDriver::new(fake, limits(100));
    d.takeover(None).await.unwrap();
    d.before_send().unwrap();
    d.sent(pos(10, 1), 1, 100);
    let e = d.commit(true).await.unwrap_err();
    assert!(matches!(e, TxnError::Fenced(_)), "{e}");
    assert!(!d.ops().calls.contains(&"abort"));
    assert!(d.ops().committed_progress.is_empty(), "nothing committed");
    assert!(matches!(d.commit(true).await, Err(TxnError::Stopped(_))));
}

#[tokio::test]
async fn lease_lost_mid_batch_aborts_and_never_commits() {
    // Seen at commit time.
    let mut d = TxnDriver::new(Fake::default(), limits(100));
    d.takeover(None).await.unwrap();
    d.before_send().unwrap();
    d.sent(pos(10, 1), 1, 100);
    assert_eq!(d.commit(false).await, Err(TxnError::LeaseLost));
    assert_eq!(
        d.ops().calls,
        ["init", "last_progress", "begin", "abort"],
        "aborted, no progress record, no commit"
    );
    assert!(matches!(d.commit(true).await, Err(TxnError::Stopped(_))));

    // Seen by the leader loop (lease-loss signal) mid-batch.
    let mut d = TxnDriver::new(Fake::default(), limits(100));
    d.takeover(None).await.unwrap();
    d.before_send().unwrap();
    d.sent(pos(10, 1), 1, 100);
    d.lease_lost().await;
    assert_eq!(d.ops().calls.last(), Some(&"abort"));
    assert!(!d.ops().calls.contains(&"commit"));
    assert!(matches!(d.commit(true).await, Err(TxnError::Stopped(_))));
}

#[tokio::test]
async fn a_huge_binlog_transaction_spans_several_batches_resumable_by_row() {
    let mut d = TxnDriver::new(Fake::default(), limits(1000));
    d.takeover(None).await.unwrap();
    let txn = pos(4000, 0);
    let mut checkpoints = Vec::new();
    // 10 500 rows of one binlog transaction, then its COMMIT event.
    for row in 0..10_500u64 {
        d.before_send().unwrap();
        let at = Position { row, ..txn.clone() };
        d.sent(at.next_row(), 1, 300);
        if d.due() {
            checkpoints.push(d.commit(true).await.unwrap().unwrap());
        }
    }
    d.before_send().unwrap();
    d.sent(pos(9999, 0), 0, 0); // the COMMIT event: next transaction, row 0
    checkpoints.push(d.commit(true).await.unwrap().unwrap());

    let rows: Vec<u64> = checkpoints.iter().map(|p| p.row).collect();
    assert_eq!(
        rows,
        [1000, 2000, 3000, 4000, 5000, 6000, 7000, 8000, 9000, 10000, 0]
    );
    assert!(checkpoints[..10].iter().all(|p| p.offset == 4000));
    assert_eq!(checkpoints[10], pos(9999, 0));
    // Each batch's progress record is exactly what was returned to checkpoint.
    assert_eq!(d.ops().committed_progress, checkpoints);
    assert_eq!(d.commits(), 11);
    // A takeover in the middle resumes inside the transaction, by row.
    let fake = Fake {
        committed_progress: checkpoints[..4].to_vec(),
        ..Fake::default()
    };
    let mut next = TxnDriver::new(fake, limits(1000));
    assert_eq!(
        next.takeover(Some(&checkpoints[1])).await.unwrap(),
        Some(Position {
            row: 4000,
            ..txn.clone()
        })
    );
}

#[tokio::test]
async fn bytes_and_time_limits_end_a_batch() {
    let mut d = TxnDriver::new(
        Fake::default(),
        TxnLimits {
            max_messages: u64::MAX,
            max_bytes: 1000,
            max_time: Duration::from_secs(3600),
        },
    );
    d.takeover(None).await.unwrap();
    d.before_send().unwrap();
    d.sent(pos(1, 1), 1, 600);
    assert!(!d.due());
    d.sent(pos(1, 2), 1, 600);
    assert!(d.due());
    d.commit(true).await.unwrap();
    assert!(!d.due(), "nothing open after a commit");

    let mut d = TxnDriver::new(
        Fake::default(),
        TxnLimits {
            max_messages: u64::MAX,
            max_bytes: u64::MAX,
            max_time: Duration::from_millis(30),
        },
    );
    d.takeover(None).await.unwrap();
    d.before_send().unwrap();
    d.sent(pos(1, 1), 1, 1);
    assert!(!d.due());
    tokio::time::sleep(Duration::from_millis(40)).await;
    assert!(d.due());
}

#[tokio::test]
async fn retriable_commit_errors_are_retried_then_the_batch_is_aborted() {
    let mut fake = Fake::default();
    fake.commit_results
        .push_back(TxnError::Retriable("timed out".into()));
    let mut d = TxnDriver::new(fake, limits(100));
    d.takeover(None).await.unwrap();
    d.before_send().unwrap();
    d.sent(pos(10, 1), 1, 100);
    assert_eq!(d.commit(true).await.unwrap(), Some(pos(10, 1)));
    assert_eq!(d.ops().committed_progress, [pos(10, 1)]);

    let mut fake = Fake::default();
    for _ in 0..=COMMIT_RETRIES {
        fake.commit_results
            .push_back(TxnError::Retriable("coordinator moving".into()));
    }
    let mut d = TxnDriver::new(fake, limits(100));
    d.takeover(None).await.unwrap();
    d.before_send().unwrap();
    d.sent(pos(10, 1), 1, 100);
    let e = d.commit(true).await.unwrap_err();
    assert!(matches!(e, TxnError::Abortable(_)), "{e}");
    assert_eq!(d.ops().calls.last(), Some(&"abort"));
    assert!(d.ops().committed_progress.is_empty());
}

#[tokio::test]
async fn an_abortable_commit_error_aborts_and_stops_without_a_position() {
    let mut fake = Fake::default();
    fake.commit_results
        .push_back(TxnError::Abortable("INVALID_TXN_STATE".into()));
    let mut d = TxnDriver::new(fake, limits(100));
    d.takeover(Some(&pos(5, 0))).await.unwrap();
    d.before_send().unwrap();
    d.sent(pos(10, 1), 1, 100);
    let e = d.commit(true).await.unwrap_err();
    assert!(matches!(e, TxnError::Abortable(_)), "{e}");
    assert_eq!(d.ops().calls.last(), Some(&"abort"));
    assert_eq!(d.committed(), Some(&pos(5, 0)), "still the takeover point");
    assert!(matches!(d.before_send(), Err(TxnError::Stopped(_))));
}

#[tokio::test]
async fn a_fatal_commit_error_does_not_abort() {
    let mut fake = Fake::default();
    fake.commit_results
        .push_back(TxnError::Fatal("INVALID_PRODUCER_EPOCH".into()));
    let mut d = TxnDriver::new(fake, limits(100));
    d.takeover(None).await.unwrap();
    d.before_send().unwrap();
    d.sent(pos(10, 1), 1, 100);
    assert!(matches!(
        d.commit(true).await.unwrap_err(),
        TxnError::Fatal(_)
    ));
    assert!(!d.ops().calls.contains(&"abort"));
}
