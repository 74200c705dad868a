//! Leader gate with real `binlog-bridge` processes (the hidden `heartbeat`
//! command) on the shared dev-env etcd cluster, 1 s lease: exactly one
//! leads, `kill -9` and SIGTERM hand over in time and resume from the
//! checkpoint, a paused leader writes nothing after it wakes, `status` and
//! `checkpoint` tell the truth. Needs `scripts/dev-env.sh up`; fails if etcd
//! is unreachable.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::bridge::{leader, now_ms, read_checkpoint, wait_for, Bridges, Line};
use common::etcd::{shared_client, unique_prefix};

const TTL_MS: u64 = 1000;

fn shared() -> Vec<String> {
    common::etcd::shared()
}

/// Wait until some process leads and has sent at least one message; return
/// (leader pid, epoch).
async fn first_leader(b: &Bridges, client: &etcd_client::Client) -> (u32, i64) {
    let keys = b.keys();
    wait_for("a leader that sends", Duration::from_secs(15), || async {
        let l = leader(client, &keys).await?;
        let pid = l.identity.as_ref()?.pid;
        b.lines()
            .iter()
            .any(|x| !x.resume && x.epoch == l.epoch && x.pid == pid)
            .then_some((pid, l.epoch))
    })
    .await
}

fn senders_since(lines: &[Line], since_ms: u64) -> BTreeSet<(u32, i64)> {
    lines
        .iter()
        .filter(|l| !l.resume && l.ms >= since_ms)
        .map(|l| (l.pid, l.epoch))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_of_the_leader_hands_over_within_ttl_plus_1s_and_resumes_from_checkpoint() {
    let client = shared_client().await;
    let mut b = Bridges::start(3, &shared(), &unique_prefix("kill9"), 1);
    let keys = b.keys();
    let (pid1, epoch1) = first_leader(&b, &client).await;

    // Exactly one sends: over one second only one (process, epoch) outputs.
    let t = now_ms();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let senders = senders_since(&b.lines(), t);
    assert_eq!(
        senders,
        BTreeSet::from([(pid1, epoch1)]),
        "exactly one leader sends"
    );
    b.assert_status_leader(pid1, epoch1);
    let status = b.status();
    assert_eq!(
        status["members"].as_array().map(|m| m.len()),
        Some(3),
        "{status}"
    );

    let i = b.index_of(pid1).expect("leader is one of ours");
    let t_kill = now_ms();
    b.kill9(i);
    // Nobody can lead before the dead leader's lease expires (>= 2/3 TTL
    // from now), so this is the checkpoint the next leader must resume from.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let cp = read_checkpoint(&client, &keys)
        .await
        .expect("a checkpoint exists");
    assert_eq!(cp.checkpoint.epoch, epoch1);
    let resume_n = cp.checkpoint.position.offset - 4;

    let first = wait_for(
        "the new leader's first send",
        Duration::from_secs(5),
        || async {
            b.lines()
                .into_iter()
                .find(|l| !l.resume && l.epoch != epoch1)
        },
    )
    .await;
    let takeover = first.ms.saturating_sub(t_kill);
    println!(
        "kill -9 takeover: {takeover} ms (last send of old leader to first of new is shorter)"
    );
    assert!(
        takeover <= TTL_MS + 1000,
        "takeover took {takeover} ms > TTL + 1 s"
    );
    assert!(first.epoch > epoch1, "epochs grow");
    assert_ne!(first.pid, pid1);
    let resume = b
        .lines()
        .into_iter()
        .find(|l| l.resume && l.epoch == first.epoch)
        .expect("RESUME line of the new leader");
    assert_eq!(resume.n, resume_n, "new leader resumes from the checkpoint");
    assert_eq!(first.n, resume_n + 1);
    b.assert_status_leader(first.pid, first.epoch);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_of_the_leader_hands_over_within_1s_without_loss_or_repeat() {
    let client = shared_client().await;
    let mut b = Bridges::start(3, &shared(), &unique_prefix("sigterm"), 1);
    let (pid1, epoch1) = first_leader(&b, &client).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let i = b.index_of(pid1).expect("leader is one of ours");
    let t_term = now_ms();
    b.signal(i, "TERM");
    let first = wait_for(
        "the new leader's first send",
        Duration::from_secs(5),
        || async {
            b.lines()
                .into_iter()
                .find(|l| !l.resume && l.epoch != epoch1)
        },
    )
    .await;
    let takeover = first.ms.saturating_sub(t_term);
    println!("SIGTERM takeover: {takeover} ms");
    assert!(takeover < 1000, "graceful takeover took {takeover} ms");
    let st = b
        .wait_exit(i, Duration::from_secs(5))
        .expect("old leader exits");
    assert!(st.success(), "graceful stop exits 0, got {st:?}");

    // The final checkpoint covers the last send: the new leader continues
    // exactly after it (nothing lost, nothing repeated).
    let lines = b.lines();
    let last_old = lines
        .iter()
        .filter(|l| !l.resume && l.epoch == epoch1)
        .map(|l| l.n)
        .max()
        .expect("old leader sent");
    let resume = lines
        .iter()
        .find(|l| l.resume && l.epoch == first.epoch)
        .expect("RESUME line");
    assert_eq!(
        resume.n, last_old,
        "resume exactly after the old leader's last send"
    );
    assert_eq!(first.n, last_old + 1);
    b.assert_status_leader(first.pid, first.epoch);
    let log = b.log(i);
    assert!(log.contains("stop requested"), "old leader log:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_paused_past_its_ttl_writes_nothing_after_it_wakes() {
    let client = shared_client().await;
    let b = Bridges::start(3, &shared(), &unique_prefix("sigstop"), 1);
    let keys = b.keys();
    let (pid1, epoch1) = first_leader(&b, &client).await;
    let i = b.index_of(pid1).expect("leader is one of ours");

    let t_stop = now_ms();
    b.signal(i, "STOP");
    let (pid2, epoch2) = wait_for("a new leader", Duration::from_secs(5), || async {
        b.lines()
            .into_iter()
            .find(|l| !l.resume && l.epoch != epoch1)
            .map(|l| (l.pid, l.epoch))
    })
    .await;
    println!("takeover from a paused leader: {} ms", now_ms() - t_stop);
    wait_for(
        "a checkpoint by the new leader",
        Duration::from_secs(3),
        || async {
            let cp = read_checkpoint(&client, &keys).await?;
            (cp.checkpoint.epoch == epoch2).then_some(())
        },
    )
    .await;

    // Watch every checkpoint write from now on.
    let mut wc = client.watch_client();
    let mut stream = wc
        .watch(keys.checkpoint.clone(), None)
        .await
        .expect("watch checkpoint");
    let writes = tokio::spawn(async move {
        let mut epochs = Vec::new();
        let until = tokio::time::Instant::now() + Duration::from_millis(2000);
        while let Ok(Ok(Some(resp))) = tokio::time::timeout_at(until, stream.message()).await {
            for ev in resp.events() {
                if let Some(kv) = ev.kv() {
                    let doc: serde_json::Value =
                        serde_json::from_slice(kv.value()).expect("checkpoint JSON");
                    epochs.push(doc["epoch"].as_i64().expect("epoch"));
                }
            }
        }
        epochs
    });
    let t_cont = now_ms();
    b.signal(i, "CONT");
    let epochs = writes.await.expect("watch task");
    println!("checkpoint writes in the 2 s after SIGCONT, by epoch: {epochs:?}");
    assert!(!epochs.is_empty(), "the new leader keeps checkpointing");
    assert!(
        epochs.iter().all(|&e| e == epoch2),
        "only the new leader (epoch {epoch2}) may write; saw {epochs:?}"
    );
    let stray: Vec<Line> = b
        .lines()
        .into_iter()
        .filter(|l| l.pid == pid1 && !l.resume && l.ms >= t_cont)
        .collect();
    assert!(
        stray.is_empty(),
        "paused leader sent after waking: {stray:?}"
    );
    b.assert_status_leader(pid2, epoch2);
    let log = b.log(i);
    for l in log.lines().filter(|l| {
        l.contains("session lost")
            || l.contains("Txn refused")
            || l.contains("lease deadline passed")
    }) {
        println!("woken process: {l}");
    }
    assert!(
        // Whichever notices first says so: the session, the fenced Txn, or
        // the leader loop seeing its deadline gone.
        log.contains("etcd session lost")
            || log.contains("checkpoint Txn refused")
            || log.contains("lease deadline passed"),
        "the woken process must notice it lost the lease:\n{log}"
    );
    // It stands by again: registered as a member, not leading.
    wait_for(
        "the woken process to register again",
        Duration::from_secs(5),
        || async {
            let s = b.status();
            let pids: Vec<u64> = s["members"]
                .as_array()?
                .iter()
                .filter_map(|m| m["pid"].as_u64())
                .collect();
            pids.contains(&u64::from(pid1)).then_some(())
        },
    )
    .await;
    assert!(t_cont > t_stop);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoint_set_is_refused_while_a_leader_runs_and_force_fences_it() {
    let client = shared_client().await;
    let mut b = Bridges::start(2, &shared(), &unique_prefix("cpset"), 1);
    let keys = b.keys();
    let (pid1, epoch1) = first_leader(&b, &client).await;

    let bad = b.cli(&["checkpoint", "set", "heartbeat.000001:x"]);
    assert_eq!(
        bad.status.code(),
        Some(2),
        "invalid position is a usage error"
    );
    assert!(String::from_utf8_lossy(&bad.stderr).contains("offset is not a number"));

    // The heartbeat pipeline has no MySQL server to ask about its
    // positions: every set here is `--unchecked`.
    let refused = b.cli(&[
        "checkpoint",
        "set",
        "heartbeat.000001:100004",
        "--unchecked",
    ]);
    assert_eq!(refused.status.code(), Some(1));
    let msg = String::from_utf8_lossy(&refused.stderr);
    assert!(
        msg.contains("--force") && msg.contains(&pid1.to_string()),
        "{msg}"
    );

    let forced = b.cli(&[
        "checkpoint",
        "set",
        "heartbeat.000001:100004",
        "--gtid",
        "0-1-7",
        "--force",
        "--unchecked",
    ]);
    assert!(
        forced.status.success(),
        "{}",
        String::from_utf8_lossy(&forced.stderr)
    );
    // The old leader's key went with the forced write: its next checkpoint
    // is refused by the fenced Txn, it steps down, and the next leader
    // resumes from the forced position.
    let resume = wait_for(
        "a leader resuming from the forced checkpoint",
        Duration::from_secs(5),
        || async { b.lines().into_iter().find(|l| l.resume && l.epoch > epoch1) },
    )
    .await;
    assert_eq!(resume.n, 100_000);
    let i = b.index_of(pid1).expect("ours");
    wait_for(
        "the old leader to be fenced",
        Duration::from_secs(3),
        || async { b.log(i).contains("checkpoint Txn refused").then_some(()) },
    )
    .await;
    // `checkpoint show` sees the new leader's checkpoint once it writes one.
    let doc = wait_for(
        "the new leader's checkpoint",
        Duration::from_secs(3),
        || async {
            let show = b.cli(&["checkpoint", "show", "--json"]);
            assert!(show.status.success());
            let doc: serde_json::Value = serde_json::from_slice(&show.stdout).expect("JSON");
            (doc["epoch"].as_i64() == Some(resume.epoch)).then_some(doc)
        },
    )
    .await;
    let n = doc["position"]["offset"].as_u64().expect("offset") - 4;
    assert!(n > 100_000, "continues from the forced position: {doc}");

    // With nobody leading, no --force is needed.
    for j in 0..2 {
        b.kill9(j);
    }
    wait_for(
        "the leader key to expire",
        Duration::from_secs(5),
        || async { leader(&client, &keys).await.is_none().then_some(()) },
    )
    .await;
    let ok = b.cli(&[
        "checkpoint",
        "set",
        "heartbeat.000001:4+3",
        "--gtid",
        "0-1-9",
        "--unchecked",
    ]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let cp = read_checkpoint(&client, &keys).await.expect("checkpoint");
    assert_eq!(cp.checkpoint.position.to_string(), "heartbeat.000001:4+3");
    assert_eq!(cp.checkpoint.position.gtid.as_deref(), Some("0-1-9"));
    assert_eq!(cp.checkpoint.epoch, 0);
    let text = b.cli(&["status"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("leader      none") && text.contains("heartbeat.000001:4+3"),
        "{text}"
    );
}
