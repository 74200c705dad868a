//! etcd faults under three real `binlog-bridge` processes, on a private
//! 3-member etcd cluster (tests/common/etcd.rs) so the shared one is never
//! touched: losing one member (even the raft leader) changes nothing;
//! losing the quorum stops all output within the lease TTL, nothing is sent
//! while it lasts, and one leader resumes from the checkpoint after.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::bridge::{leader, now_ms, read_checkpoint, wait_for, Bridges};
use common::etcd::{unique_prefix, EtcdCluster};
use etcd_client::Client;

const TTL_MS: u64 = 1000;

async fn client_for(endpoints: &[String]) -> Client {
    Client::connect(endpoints, None)
        .await
        .expect("connect to private etcd")
}

async fn sending_leader(b: &Bridges, client: &Client, within: Duration) -> (u32, i64) {
    let keys = b.keys();
    wait_for("a leader that sends", within, || async {
        let l = common::bridge::leader(client, &keys).await?;
        let pid = l.identity.as_ref()?.pid;
        b.lines()
            .iter()
            .any(|x| !x.resume && x.epoch == l.epoch && x.pid == pid)
            .then_some((pid, l.epoch))
    })
    .await
}

fn senders_between(b: &Bridges, from_ms: u64, to_ms: u64) -> BTreeSet<(u32, i64)> {
    b.lines()
        .iter()
        .filter(|l| !l.resume && l.ms >= from_ms && l.ms < to_ms)
        .map(|l| (l.pid, l.epoch))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_one_etcd_member_even_the_raft_leader_does_not_change_who_leads() {
    let mut etcd = EtcdCluster::start(0).await;
    let client = client_for(&etcd.endpoints()).await;
    let b = Bridges::start(3, &etcd.endpoints(), &unique_prefix("member-loss"), 1);
    let (pid, epoch) = sending_leader(&b, &client, Duration::from_secs(15)).await;

    // A follower first, then (after it is back) the raft leader.
    let raft = etcd.raft_leader().await.expect("a raft leader");
    let follower = (raft + 1) % 3;
    for (what, victim) in [("follower", follower), ("raft leader", usize::MAX)] {
        let victim = if victim == usize::MAX {
            etcd.raft_leader().await.expect("a raft leader")
        } else {
            victim
        };
        let t = now_ms();
        etcd.kill_member(victim);
        tokio::time::sleep(Duration::from_millis(3000)).await;
        let senders = senders_between(&b, t, now_ms());
        assert_eq!(
            senders,
            BTreeSet::from([(pid, epoch)]),
            "after killing the etcd {what} the same bridge keeps leading and sending"
        );
        // It is still sending at the end (the output may pause while etcd
        // elects a new raft leader: the heartbeat waits for its checkpoint).
        let times: Vec<u64> = b
            .lines()
            .iter()
            .filter(|l| !l.resume && l.ms >= t)
            .map(|l| l.ms)
            .collect();
        let gap = times
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or(u64::MAX);
        println!("etcd {what} killed: largest gap in the leader's output {gap} ms");
        assert!(
            gap < TTL_MS,
            "output stalled {gap} ms after killing the etcd {what}"
        );
        b.wait_status_leader(pid, epoch).await;
        etcd.start_member(victim);
        etcd.wait_healthy(Duration::from_secs(15)).await;
        // Let the restarted member catch up before the next fault.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let l = leader(&client, &b.keys()).await.expect("leader");
    assert_eq!(l.epoch, epoch);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_etcd_quorum_stops_output_within_ttl_and_one_leader_resumes_after() {
    let mut etcd = EtcdCluster::start(0).await;
    let client = client_for(&etcd.endpoints()).await;
    let b = Bridges::start(3, &etcd.endpoints(), &unique_prefix("quorum-loss"), 1);
    let keys = b.keys();
    let (pid1, epoch1) = sending_leader(&b, &client, Duration::from_secs(15)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Kill the raft leader and one follower: from this instant no keep-alive
    // can be answered, so the lease deadline is at most TTL away. (If the
    // raft leader survived alone it would keep renewing leases until it
    // noticed, one or two election timeouts later, and output may go on for
    // TTL after that: still safe, as nobody else can be granted anything.)
    let raft = etcd.raft_leader().await.expect("a raft leader");
    let other = (raft + 1) % 3;
    let before = read_checkpoint(&client, &keys).await.expect("checkpoint");
    let before_n = before.checkpoint.position.offset - 4;
    let t_loss = now_ms();
    etcd.kill_member(raft);
    etcd.kill_member(other);
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let lines = b.lines();
    let last = lines
        .iter()
        .filter(|l| !l.resume && l.epoch == epoch1)
        .map(|l| l.ms)
        .max()
        .expect("leader sent");
    let stopped_after = last.saturating_sub(t_loss);
    println!("quorum lost: leader's last send {stopped_after} ms after the loss (TTL {TTL_MS} ms)");
    assert!(
        stopped_after <= TTL_MS,
        "leader sent {stopped_after} ms after losing the quorum"
    );
    let t_restore = now_ms();
    let during = senders_between(&b, t_loss + TTL_MS, t_restore);
    assert!(
        during.is_empty(),
        "nobody may send without a quorum: {during:?}"
    );
    let last_n = lines
        .iter()
        .filter(|l| !l.resume && l.epoch == epoch1)
        .map(|l| l.n)
        .max()
        .expect("leader sent");

    etcd.start_member(raft);
    etcd.start_member(other);
    let first = wait_for(
        "a leader after the quorum returns",
        Duration::from_secs(15),
        || async {
            b.lines()
                .into_iter()
                .find(|l| !l.resume && l.ms >= t_restore)
        },
    )
    .await;
    println!(
        "quorum restored: first send {} ms later (pid {}, epoch {}; before: pid {pid1}, epoch {epoch1})",
        first.ms - t_restore,
        first.pid,
        first.epoch
    );
    // Either the old leader's lease survived (same epoch: etcd extends
    // leases when a new raft leader takes over) or a new leadership began.
    assert!(first.epoch >= epoch1, "epochs never go back");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let after = senders_between(&b, first.ms, now_ms());
    assert_eq!(
        after,
        BTreeSet::from([(first.pid, first.epoch)]),
        "exactly one leader resumes"
    );
    let resume = b
        .lines()
        .into_iter()
        .find(|l| l.resume && l.epoch == first.epoch)
        .expect("RESUME line");
    assert!(
        resume.n <= last_n,
        "resumes at or before the last send (checkpoint lags sends)"
    );
    // The checkpoint etcd held when the quorum went (one write may have
    // been in flight: interval 100 ms = 5 ticks).
    assert!(
        resume.n >= before_n && resume.n <= before_n + 10,
        "resume {} is not the checkpoint of the loss time ({before_n})",
        resume.n
    );
    println!(
        "resumed at {} (checkpoint before the loss {before_n}, last send {last_n})",
        resume.n
    );
    // The new leader's first checkpoint write may wait on an etcd that is
    // still settling after the restart: poll for it rather than expect it
    // within a fixed time. Until it lands, etcd may only hold the old epoch's.
    wait_for(
        "the resumed leader's checkpoint",
        Duration::from_secs(15),
        || async {
            let cp = read_checkpoint(&client, &keys).await.expect("checkpoint");
            let e = cp.checkpoint.epoch;
            assert!(
                e == epoch1 || e == first.epoch,
                "checkpoint epoch {e} is neither the old ({epoch1}) nor the resumed leader's ({})",
                first.epoch
            );
            (e == first.epoch).then_some(())
        },
    )
    .await;
    b.wait_status_leader(first.pid, first.epoch).await;
}
