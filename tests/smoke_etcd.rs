//! A real 3-member etcd cluster: a value put through one endpoint is read
//! through every endpoint, and after the raft leader is killed the other two
//! members still serve reads and writes.

mod common;

use std::time::{Duration, Instant};

use common::etcd::EtcdCluster;
use etcd_client::Client;

async fn client(ep: &str) -> Client {
    let opts = etcd_client::ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(Duration::from_secs(2));
    Client::connect([ep], Some(opts))
        .await
        .unwrap_or_else(|e| panic!("connect {ep}: {e}"))
}

async fn get(ep: &str, key: &str) -> Option<String> {
    let mut c = client(ep).await;
    let r = c
        .get(key, None)
        .await
        .unwrap_or_else(|e| panic!("get via {ep}: {e}"));
    r.kvs()
        .first()
        .map(|kv| kv.value_str().unwrap_or_default().to_string())
}

/// Retry an operation until it succeeds or `within` passes (elections take ~1 s).
async fn put_retrying(ep: &str, key: &str, value: &str, within: Duration) {
    let start = Instant::now();
    loop {
        let mut c = client(ep).await;
        match c.put(key, value, None).await {
            Ok(_) => return,
            Err(e) if start.elapsed() < within => {
                eprintln!("put via {ep} failed ({e}); retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("put via {ep} still failing after {within:?}: {e}"),
        }
    }
}

#[tokio::test]
async fn put_get_through_every_endpoint_survives_leader_kill() {
    let mut cluster = EtcdCluster::start(12500).await;
    let eps = cluster.endpoints();

    put_retrying(&eps[0], "/smoke/a", "1", Duration::from_secs(5)).await;
    for ep in &eps {
        assert_eq!(get(ep, "/smoke/a").await.as_deref(), Some("1"), "via {ep}");
    }

    let leader = cluster
        .raft_leader()
        .await
        .expect("the cluster has a raft leader");
    cluster.kill_member(leader);
    let alive: Vec<&String> = eps
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != leader)
        .map(|(_, e)| e)
        .collect();

    put_retrying(alive[0], "/smoke/b", "2", Duration::from_secs(10)).await;
    for ep in &alive {
        assert_eq!(get(ep, "/smoke/a").await.as_deref(), Some("1"), "via {ep}");
        assert_eq!(get(ep, "/smoke/b").await.as_deref(), Some("2"), "via {ep}");
    }
    // A client given all three endpoints keeps working with one dead.
    let mut all = Client::connect(&eps, None).await.unwrap();
    let start = Instant::now();
    let mut ok = 0;
    while ok < 10 {
        match all.get("/smoke/b", None).await {
            Ok(r) => {
                assert_eq!(r.kvs()[0].value_str().unwrap(), "2");
                ok += 1;
            }
            Err(e) => {
                assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "multi-endpoint client keeps failing: {e}"
                );
            }
        }
    }

    // The killed member rejoins and catches up.
    cluster.start_member(leader);
    cluster.wait_healthy(Duration::from_secs(20)).await;
    let start = Instant::now();
    loop {
        // The member may not listen yet: connection errors mean "not yet".
        let got = match Client::connect([eps[leader].as_str()], None).await {
            Ok(mut c) => c.get("/smoke/b", None).await.ok(),
            Err(_) => None,
        };
        let value = got.and_then(|r| {
            r.kvs()
                .first()
                .map(|kv| kv.value_str().unwrap_or_default().to_string())
        });
        if value.as_deref() == Some("2") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "restarted member did not catch up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
