//! The leader gate through the library, against the shared dev-env etcd
//! (fails if it is unreachable): the fenced Txn refuses a leader whose key
//! is gone, the session's deadline follows keep-alives and a revoked lease
//! is noticed, a surviving lease is re-attached with the same epoch, and
//! three in-process `pipeline::run` loops elect one leader and hand over
//! on a graceful stop with nothing lost or repeated.

mod common;

use std::time::Duration;

use binlog_bridge::config::EtcdConfig;
use binlog_bridge::coord::checkpoint::{
    Checkpoint, CheckpointError, CheckpointStore, CheckpointWriter,
};
use binlog_bridge::coord::election::Election;
use binlog_bridge::coord::session::{LossReason, Session};
use binlog_bridge::coord::{now_ms, Identity, Keys};
use binlog_bridge::pipeline::heartbeat::{counter, position, Heartbeat};
use binlog_bridge::pipeline::{self, Options, Role};
use common::etcd::{shared_client, unique_prefix};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const T: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fenced_txn_refuses_a_leader_whose_key_is_gone() {
    let client = shared_client().await;
    let keys = Keys::new(&unique_prefix("fence"), "p");
    let root = CancellationToken::new();
    let election = Election::new(client.clone(), keys.clone());
    let store = CheckpointStore::new(client.clone(), keys.clone());
    let me = Identity::current("127.0.0.1:1");

    let a = Session::start(&client, 1, &root, T)
        .await
        .expect("session A");
    let lead_a = election
        .campaign(&a, &me)
        .await
        .expect("campaign")
        .expect("A leads");
    let writer = CheckpointWriter::new(
        store.clone(),
        lead_a.key.clone(),
        lead_a.epoch,
        me.clone(),
        Duration::ZERO,
        a.handle(),
        None,
    );
    assert!(writer.acked(&position(10)).await.expect("leader writes"));
    let cp = store.read(T).await.expect("read").expect("written");
    assert_eq!(
        (cp.checkpoint.epoch, counter(&cp.checkpoint.position)),
        (lead_a.epoch, 10)
    );
    // Positions never go back.
    assert!(matches!(
        writer.acked(&position(9)).await,
        Err(CheckpointError::Regressed { .. })
    ));

    // B campaigns behind A; then A's key disappears while A's own session
    // still thinks all is well (what a paused or partitioned leader sees).
    let b = Session::start(&client, 1, &root, T)
        .await
        .expect("session B");
    let mut kv = client.kv_client();
    kv.delete(lead_a.key.clone(), None)
        .await
        .expect("delete A's key");
    let lead_b = tokio::time::timeout(T, election.campaign(&b, &me))
        .await
        .expect("B's campaign returns")
        .expect("campaign")
        .expect("B leads");
    assert!(lead_b.epoch > lead_a.epoch, "epochs grow");
    assert!(
        a.handle().is_alive(),
        "A's lease is fine: only the fence can stop it"
    );

    // The writer's Txn is refused, and refusing cancels A's output at once.
    match writer.acked(&position(11)).await {
        Err(CheckpointError::Fenced { epoch }) => assert_eq!(epoch, lead_a.epoch),
        other => panic!("expected Fenced, got {other:?}"),
    }
    assert!(a.lost().is_cancelled(), "a fenced write stops all output");
    // The raw Txn with the stale epoch is refused too, and nothing changed.
    let doc = Checkpoint {
        position: position(99),
        epoch: lead_a.epoch,
        leader: Some(me.clone()),
        written_at_ms: now_ms(),
        extra: Default::default(),
    };
    let r = store
        .write_fenced(&lead_a.key, lead_a.epoch, &doc, Instant::now() + T)
        .await;
    assert!(matches!(r, Err(CheckpointError::Fenced { .. })), "{r:?}");
    let cp = store.read(T).await.expect("read").expect("still there");
    assert_eq!(
        (cp.checkpoint.epoch, counter(&cp.checkpoint.position)),
        (lead_a.epoch, 10)
    );
    // B's writes go through.
    let doc_b = Checkpoint {
        epoch: lead_b.epoch,
        ..doc
    };
    store
        .write_fenced(&lead_b.key, lead_b.epoch, &doc_b, Instant::now() + T)
        .await
        .expect("the current leader writes");
    b.close(T).await;
    a.close(T).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_deadline_follows_keep_alives_and_a_revoked_lease_is_noticed() {
    let client = shared_client().await;
    let root = CancellationToken::new();
    let s = Session::start(&client, 1, &root, T).await.expect("session");
    assert_eq!(s.ttl(), Duration::from_secs(1), "etcd granted the 1 s TTL");
    let d0 = s.deadline();
    // deadline = (send time of an answered keep-alive) + TTL <= now + TTL.
    let now = Instant::now();
    assert!(d0 > now && d0 <= now + s.ttl(), "deadline within one TTL");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let d1 = s.deadline();
    assert!(d1 > d0, "keep-alives move the deadline on");
    assert!(d1 <= Instant::now() + Duration::from_secs(1));

    let mut lc = client.lease_client();
    lc.revoke(s.lease()).await.expect("revoke");
    let t = Instant::now();
    tokio::time::timeout(Duration::from_secs(1), s.lost().cancelled())
        .await
        .expect("the loss is noticed before the deadline");
    println!("revoked lease noticed after {} ms", t.elapsed().as_millis());
    assert_eq!(s.loss_reason(), Some(LossReason::LeaseGone));
    assert!(!s.deadline_passed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_that_survived_is_reattached_and_keeps_its_epoch() {
    let client = shared_client().await;
    let keys = Keys::new(&unique_prefix("reattach"), "p");
    let root = CancellationToken::new();
    let election = Election::new(client.clone(), keys.clone());
    let me = Identity::current("127.0.0.1:1");
    let s = Session::start(&client, 1, &root, T).await.expect("session");
    let lead = election
        .campaign(&s, &me)
        .await
        .expect("campaign")
        .expect("leads");
    let (lease, ttl) = s.abandon();
    let again = Session::reattach(&client, lease, ttl, &root, T)
        .await
        .expect("the lease is still alive");
    let lead2 = election
        .campaign(&again, &me)
        .await
        .expect("campaign")
        .expect("leads");
    assert_eq!(lead2.epoch, lead.epoch, "same key, same epoch");
    let (lease, ttl) = again.abandon();
    client.lease_client().revoke(lease).await.expect("revoke");
    assert!(
        Session::reattach(&client, lease, ttl, &root, T)
            .await
            .is_none(),
        "a revoked lease cannot be re-attached"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_in_process_pipelines_elect_one_leader_and_hand_over_on_stop() {
    let client = shared_client().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let output = dir.path().join("out.log");
    let cfg = EtcdConfig {
        endpoints: common::etcd::shared(),
        prefix: unique_prefix("inproc"),
        pipeline: "p".into(),
        lease_ttl_secs: 1,
        checkpoint_interval_ms: 100,
        ..EtcdConfig::default()
    };
    let keys = Keys::from_config(&cfg);
    let mut stops = Vec::new();
    let mut roles = Vec::new();
    let mut tasks = Vec::new();
    for i in 0..3 {
        let stop = CancellationToken::new();
        let (tx, rx) = watch::channel(Role::Starting);
        let opts = Options::new(
            cfg.clone(),
            Identity::current(&format!("127.0.0.1:{}", 9000 + i)),
        );
        let work = Heartbeat {
            output: Some(output.clone()),
            tick: Duration::from_millis(20),
        };
        tasks.push(tokio::spawn(pipeline::run(opts, work, stop.clone(), tx)));
        stops.push(stop);
        roles.push(rx);
    }
    let leaders = |roles: &[watch::Receiver<Role>]| -> Vec<(usize, i64)> {
        roles
            .iter()
            .enumerate()
            .filter_map(|(i, r)| match *r.borrow() {
                Role::Leader { epoch } => Some((i, epoch)),
                _ => None,
            })
            .collect()
    };
    let (first, epoch1) =
        common::bridge::wait_for("one leader", Duration::from_secs(10), || async {
            let l = leaders(&roles);
            (l.len() == 1).then(|| l[0])
        })
        .await;
    // Stays exactly one for a while.
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(25)).await;
        assert_eq!(leaders(&roles), vec![(first, epoch1)]);
    }
    let t = Instant::now();
    stops[first].cancel();
    let (second, epoch2) =
        common::bridge::wait_for("a new leader", Duration::from_secs(2), || async {
            let l = leaders(&roles);
            (l.len() == 1 && l[0].0 != first).then(|| l[0])
        })
        .await;
    println!(
        "in-process graceful handover: {} ms",
        t.elapsed().as_millis()
    );
    assert!(t.elapsed() < Duration::from_secs(1));
    assert!(epoch2 > epoch1);
    let res = tokio::time::timeout(T, &mut tasks[first])
        .await
        .expect("stopped");
    assert!(
        matches!(res, Ok(Ok(()))),
        "graceful stop returns Ok: {res:?}"
    );
    assert_eq!(*roles[first].borrow(), Role::Stopped);
    // The final checkpoint covered the old leader's last send.
    let text = std::fs::read_to_string(&output).expect("output");
    let last_old = text
        .lines()
        .filter(|l| l.starts_with(&format!("OUT {epoch1} ")))
        .filter_map(|l| l.split(' ').nth(2)?.parse::<u64>().ok())
        .max()
        .expect("old leader sent");
    let resume = text
        .lines()
        .find(|l| l.starts_with(&format!("RESUME {epoch2} ")))
        .and_then(|l| l.split(' ').nth(2)?.parse::<u64>().ok())
        .expect("RESUME line");
    assert_eq!(resume, last_old);
    let cp = common::bridge::read_checkpoint(&client, &keys)
        .await
        .expect("checkpoint");
    assert!(cp.checkpoint.epoch >= epoch1);
    for (i, s) in stops.iter().enumerate() {
        if i != first {
            s.cancel();
        }
    }
    for (i, t) in tasks.into_iter().enumerate() {
        if i != first {
            let r = tokio::time::timeout(T, t).await.expect("stops");
            assert!(matches!(r, Ok(Ok(()))));
        }
    }
    assert_ne!(second, first);
    assert!(
        common::bridge::leader(&client, &keys).await.is_none(),
        "everyone resigned"
    );
}
