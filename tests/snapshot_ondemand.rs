//! `binlog-bridge snapshot db.t` while streaming, with real `binlog-bridge
//! run` processes (three, one leads), real MariaDB, the dev env's 3-member
//! etcd and a private tansu broker.
//!
//! Table `t` is filled before the bridges start (`mysql.start = "latest"`,
//! no initial snapshot), so its rows reach Kafka only through the on-demand
//! snapshot; table `o` is only streamed. A writer inserts, updates and
//! deletes in both during the whole test. Afterwards:
//! - the topics compacted by key (deletes removing) equal both tables;
//! - no row of `t` was sent twice as a snapshot read, and every row of `t`
//!   that existed throughout was sent once;
//! - per key, streamed changes before a snapshot row's read position come
//!   before it and the ones after come after it;
//! - no streamed change of either table was written twice.
//!
//! The second test `kill -9`s the leader while a chunk is being sent.
//! Rows: `BB_ONDEMAND_TEST_ROWS` (default 50000).

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::ChildGuard;
use mysql_async::prelude::Queryable;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

const PREFIX: &str = "/bbtest-ondemand";

fn rows() -> i64 {
    std::env::var("BB_ONDEMAND_TEST_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000)
}

/// (table, id) -> v
type State = BTreeMap<(String, i64), i64>;

async fn table_state(admin: &mut mysql_async::Conn, db: &str) -> State {
    let mut out = State::new();
    for t in ["t", "o"] {
        let rows: Vec<(i64, i64)> = admin
            .query(format!("SELECT id, v FROM {db}.{t}"))
            .await
            .expect("read table");
        for (id, v) in rows {
            out.insert((t.to_string(), id), v);
        }
    }
    out
}

/// Keys of `t` the writer deleted (they may lack a snapshot read).
type Touched = Arc<Mutex<HashSet<i64>>>;

/// Single-row changes to `t` and `o`, each its own transaction, until `stop`.
async fn writer(
    url: String,
    db: String,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
    deleted: Touched,
) {
    let mut c = mysql_async::Conn::from_url(url)
        .await
        .expect("writer connects");
    let n = rows();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next_t = n;
    let mut next_o = 0i64;
    while !stop.load(Ordering::Relaxed) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let sql = if x % 2 == 0 {
            let id = ((x >> 8) % n as u64) as i64 + 1;
            match (x >> 40) % 4 {
                0 | 1 => format!("UPDATE {db}.t SET v = v + 1 WHERE id = {id}"),
                2 => {
                    next_t += 1;
                    format!("INSERT INTO {db}.t VALUES ({next_t}, 7)")
                }
                _ => {
                    deleted.lock().expect("lock").insert(id);
                    format!("DELETE FROM {db}.t WHERE id = {id}")
                }
            }
        } else {
            let id = ((x >> 8) % (next_o.max(1) as u64)) as i64 + 1;
            match (x >> 40) % 4 {
                0 | 1 => {
                    next_o += 1;
                    format!("INSERT INTO {db}.o VALUES ({next_o}, 1)")
                }
                2 => format!("UPDATE {db}.o SET v = v + 1 WHERE id = {id}"),
                _ => format!("DELETE FROM {db}.o WHERE id = {id}"),
            }
        };
        c.query_drop(sql).await.expect("writer statement");
        done.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

struct Msg {
    table: String,
    partition: i32,
    id: i64,
    op: String,
    after: Option<serde_json::Value>,
    position: String,
    part: String,
    run: Option<String>,
    snapshot: bool,
}

/// Every message of the tables' topics `{db}.{table}`, partition by partition.
fn read_all(brokers: &str, db: &str, tables: &[&str], want: &State) -> Vec<Msg> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("{db}-reader"))
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10")
        .set("max.partition.fetch.bytes", "1048576")
        .set("fetch.max.bytes", "1048576")
        .create()
        .expect("consumer");
    let mut next: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for t in tables {
        let topic = format!("{db}.{t}");
        let md = consumer
            .fetch_metadata(Some(&topic), Duration::from_secs(10))
            .expect("topic metadata");
        let parts = md.topics()[0].partitions().len() as i32;
        assert_eq!(parts, 6, "{topic} has the configured 6 partitions");
        for p in 0..parts {
            next.insert((topic.clone(), p), 0);
        }
    }
    let mut msgs = Vec::new();
    let start = Instant::now();
    loop {
        let mut progressed = false;
        for ((topic, p), from) in next.iter_mut() {
            let (_, high) = consumer
                .fetch_watermarks(topic, *p, Duration::from_secs(10))
                .expect("watermarks");
            if *from >= high {
                continue;
            }
            let mut one = TopicPartitionList::new();
            one.add_partition_offset(topic, *p, Offset::Offset(*from))
                .expect("offset");
            consumer.assign(&one).expect("assign");
            let mut last = Instant::now();
            while *from < high {
                assert!(
                    last.elapsed() < Duration::from_secs(60),
                    "{topic}/{p} stuck at offset {from} of {high}"
                );
                let Some(m) = consumer.poll(Duration::from_millis(200)) else {
                    continue;
                };
                let m = m.expect("consume");
                if m.topic() != topic || m.partition() != *p || m.offset() != *from {
                    continue;
                }
                last = Instant::now();
                progressed = true;
                *from += 1;
                let header = |name: &str| {
                    m.headers()
                        .and_then(|h| h.iter().find(|x| x.key == name))
                        .and_then(|x| x.value)
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                };
                let Some(payload) = m.payload() else {
                    continue; // a tombstone
                };
                let v: serde_json::Value = serde_json::from_slice(payload).expect("JSON value");
                let key: serde_json::Value =
                    serde_json::from_slice(m.key().expect("keyed")).expect("JSON key");
                let id = key["payload"]["id"]
                    .as_i64()
                    .or_else(|| key["id"].as_i64())
                    .unwrap_or_else(|| panic!("no id in key {key}"));
                msgs.push(Msg {
                    table: topic.trim_start_matches(&format!("{db}.")).to_string(),
                    partition: *p,
                    id,
                    op: v["op"].as_str().unwrap_or_default().to_string(),
                    after: (!v["after"].is_null()).then(|| v["after"].clone()),
                    position: header("bb.position").expect("bb.position header"),
                    part: header("bb.part").unwrap_or_default(),
                    run: header("bb.snapshot-run"),
                    snapshot: header("bb.snapshot").is_some(),
                });
            }
        }
        if &compacted(&msgs) == want || start.elapsed() > Duration::from_secs(120) {
            return msgs;
        }
        if !progressed {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}

/// The topics compacted by key.
fn compacted(msgs: &[Msg]) -> State {
    let mut out = State::new();
    for m in msgs {
        let k = (m.table.clone(), m.id);
        match (&m.after, m.op.as_str()) {
            (_, "d") | (None, _) => {
                out.remove(&k);
            }
            (Some(a), _) => {
                out.insert(k, a["v"].as_i64().expect("integer v"));
            }
        }
    }
    out
}

/// `FILE:OFFSET[+ROW]` -> (file number, offset): the transaction boundary.
fn boundary(position: &str) -> (u64, u64) {
    let (file, rest) = position.rsplit_once(':').expect("FILE:OFFSET");
    let n = file
        .rsplit_once('.')
        .and_then(|(_, n)| n.parse().ok())
        .expect("file number");
    let off = rest
        .split('+')
        .next()
        .and_then(|o| o.parse().ok())
        .expect("offset");
    (n, off)
}

struct Run {
    _dir: tempfile::TempDir,
    procs: Vec<ChildGuard>,
    logs: Vec<std::path::PathBuf>,
    configs: Vec<std::path::PathBuf>,
}

impl Run {
    fn log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.logs[i]).unwrap_or_default()
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for i in 0..self.logs.len() {
                let log = self.log(i);
                let tail: Vec<&str> = log.lines().rev().take(30).collect();
                eprintln!("--- bridge {i} log (last 30 lines, newest first) ---");
                for l in tail {
                    eprintln!("{l}");
                }
            }
        }
    }
}

/// One bridge's config; `server_id` must be unique among replicas of the
/// shared MariaDB (tests run in parallel).
fn config_text(
    db: &str,
    env: &common::DevEnv,
    brokers: &str,
    server_id: u32,
    chunk: u32,
) -> String {
    format!(
        "[mysql]\nurl = {:?}\nserver_id = {}\nstart = \"latest\"\ninclude = [\"{db}.*\"]\n\
         [etcd]\nendpoints = {:?}\nprefix = \"{PREFIX}\"\npipeline = \"{db}\"\nlease_ttl_secs = 2\ncheckpoint_interval_ms = 200\n\
         [kafka]\nbrokers = {:?}\ndelivery = \"idempotent\"\npartitions = 6\n\
         [http]\nlisten = \"127.0.0.1:{}\"\n\
         [snapshot]\nchunk_rows = {chunk}\n",
        env.mysql_url,
        server_id,
        env.etcd_endpoints,
        brokers,
        common::free_port()
    )
}

fn start_bridges(
    db: &str,
    env: &common::DevEnv,
    brokers: &str,
    n: usize,
    server_id: u32,
    chunk: u32,
) -> Run {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut run = Run {
        procs: Vec::new(),
        logs: Vec::new(),
        configs: Vec::new(),
        _dir: dir,
    };
    for i in 0..n {
        let cfg = run._dir.path().join(format!("bb{i}.toml"));
        std::fs::write(
            &cfg,
            config_text(db, env, brokers, server_id + i as u32, chunk),
        )
        .expect("write config");
        let log = run._dir.path().join(format!("bridge{i}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_binlog-bridge"))
            .arg("--config")
            .arg(&cfg)
            .arg("run")
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn binlog-bridge run");
        run.procs.push(ChildGuard(Some(child)));
        run.logs.push(log);
        run.configs.push(cfg);
    }
    run
}

fn cli(cfg: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_binlog-bridge"))
        .arg("--config")
        .arg(cfg)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run the binlog-bridge CLI")
}

/// `binlog-bridge snapshot TABLES`: the request id it printed.
fn request(cfg: &std::path::Path, tables: &[&str]) -> String {
    let mut args = vec!["snapshot"];
    args.extend_from_slice(tables);
    let out = cli(cfg, &args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "snapshot request failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("request "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no request id in:\n{stdout}"))
        .to_string()
}

/// What happens to the leader in the middle of the run.
#[derive(Clone, Copy, PartialEq)]
enum Fault {
    None,
    Kill9,
    Term,
}

async fn scenario(name: &str, fault: Fault) {
    let env = common::dev_env();
    let db = common::unique(name);
    let n = rows();
    let mut admin = mysql_async::Conn::from_url(env.mysql_admin_url.clone())
        .await
        .expect("MariaDB admin connection: start the dev env");
    admin
        .query_drop(format!(
            "CREATE DATABASE {db};
             CREATE TABLE {db}.t (id INT PRIMARY KEY, v INT NOT NULL);
             CREATE TABLE {db}.o (id INT PRIMARY KEY, v INT NOT NULL);
             INSERT INTO {db}.t SELECT seq, seq FROM {db}.seq_1_to_{n};"
        ))
        .await
        .expect("create and fill the tables");
    let mut etcd = etcd_client::Client::connect(env.etcd_endpoints.clone(), None)
        .await
        .expect("etcd: start the dev env");
    let broker = common::broker::PrivateBroker::start();
    let chunk = 1000;
    let server_id = match fault {
        Fault::None => 5210,
        Fault::Kill9 => 5220,
        Fault::Term => 5230,
    };
    let mut run = start_bridges(&db, &env, &broker.brokers(), 3, server_id, chunk);
    common::etcd::wait_checkpoint(
        &mut etcd,
        PREFIX,
        &db,
        "a leader streaming",
        Duration::from_secs(60),
        |_| true,
    )
    .await;

    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicU64::new(0));
    let deleted: Touched = Arc::default();
    let w = tokio::spawn(writer(
        env.mysql_admin_url.clone(),
        db.clone(),
        stop.clone(),
        writes.clone(),
        deleted.clone(),
    ));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let id = request(&run.configs[0], &[&format!("{db}.t")]);
    println!("requested {id}");

    let mut killed = None;
    if fault == Fault::None {
        // While it runs, `status --json` (from etcd) and the leader's
        // /status show it with its progress.
        let cp = common::etcd::wait_checkpoint(
            &mut etcd,
            PREFIX,
            &db,
            "the run to start",
            Duration::from_secs(60),
            |c| c["extra"]["ondemand"]["id"] == id.as_str(),
        )
        .await;
        let port: u16 = cp["leader"]["http"]
            .as_str()
            .and_then(|h| h.rsplit_once(':'))
            .and_then(|(_, p)| p.parse().ok())
            .expect("leader http address");
        let out = cli(&run.configs[0], &["status", "--json"]);
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status JSON");
        // A 50k-row run takes seconds: it is still running now.
        assert_eq!(
            doc["snapshot"]["running"]["id"],
            id.as_str(),
            "status shows the run: {doc}"
        );
        assert_eq!(
            doc["snapshot"]["running"]["table"],
            format!("{db}.t"),
            "{doc}"
        );
        let st = common::ops::status(port).expect("leader /status");
        assert_eq!(
            st["snapshot"]["id"],
            id.as_str(),
            "/status shows the run: {st}"
        );
        println!("status: {}; /status: {}", doc["snapshot"], st["snapshot"]);
    }
    if fault != Fault::None {
        // While a chunk is being sent (its position is checkpointed right
        // before its first row), a quarter of the way in.
        let cp = common::etcd::wait_checkpoint(
            &mut etcd,
            PREFIX,
            &db,
            "a chunk being sent, a quarter of the way in",
            Duration::from_secs(180),
            |c| {
                let s = &c["extra"]["ondemand"];
                s["id"] == id.as_str() && !s["chunk"].is_null() && s["rows"].as_i64() >= Some(n / 4)
            },
        )
        .await;
        // Some of the chunk's rows reach the broker in this time (it takes
        // ~10k messages/s), not all of its 1000.
        tokio::time::sleep(Duration::from_millis(40)).await;
        let pid = cp["leader"]["pid"].as_u64().expect("leader pid") as u32;
        let i = (0..run.procs.len())
            .find(|&i| run.procs[i].pid() == pid)
            .expect("the leader is one of ours");
        if fault == Fault::Term {
            run.procs[i].terminate(Duration::from_secs(10));
        } else {
            run.procs[i].kill();
        }
        killed = Some(i);
        println!(
            "{} of the leader (bridge {i}) with {} rows checkpointed, chunk at {}",
            if fault == Fault::Term {
                "SIGTERM"
            } else {
                "kill -9"
            },
            cp["extra"]["ondemand"]["rows"],
            cp["extra"]["ondemand"]["chunk"]
        );
    }
    let cp = common::etcd::wait_checkpoint(
        &mut etcd,
        PREFIX,
        &db,
        "the on-demand snapshot to finish",
        Duration::from_secs(300),
        |c| c["extra"]["ondemand_last"]["id"] == id.as_str(),
    )
    .await;
    assert_eq!(cp["extra"]["ondemand_last"]["outcome"], "done", "{cp}");
    assert!(cp["extra"]["ondemand"].is_null(), "state cleared: {cp}");
    // The request key is deleted right after that checkpoint.
    let start = Instant::now();
    loop {
        let left = etcd
            .get(format!("{PREFIX}/{db}/snapshot-requests/{id}"), None)
            .await
            .expect("etcd get");
        if left.kvs().is_empty() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the finished request was not deleted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    w.await.expect("writer");
    println!("writer: {} changes", writes.load(Ordering::Relaxed));

    let want = table_state(&mut admin, &db).await;
    let (file, offset): (String, u64) = {
        let r: mysql_async::Row = admin
            .query_first("SHOW MASTER STATUS")
            .await
            .expect("SHOW MASTER STATUS")
            .expect("binlog on");
        (r.get(0).expect("file"), r.get(1).expect("offset"))
    };
    common::etcd::wait_checkpoint(
        &mut etcd,
        PREFIX,
        &db,
        "the checkpoint to pass the last change",
        Duration::from_secs(120),
        |c| {
            let p = &c["position"];
            p["file"].as_str() == Some(file.as_str()) && p["offset"].as_u64() >= Some(offset)
        },
    )
    .await;
    for p in &mut run.procs {
        p.terminate(Duration::from_secs(10));
    }
    let msgs = read_all(&broker.brokers(), &db, &["t", "o"], &want);
    let got = compacted(&msgs);
    let missing = want.iter().filter(|(k, v)| got.get(*k) != Some(*v)).count();
    let extra = got.keys().filter(|k| !want.contains_key(*k)).count();
    assert_eq!(
        (missing, extra),
        (0, 0),
        "compacted topics differ from the tables ({} rows)",
        want.len()
    );

    // Snapshot reads: only of t, op r, this run, each key once; every row
    // that existed throughout (never deleted) once.
    let mut reads: HashMap<i64, u32> = HashMap::new();
    let mut streamed: HashMap<(&str, i64, &str, &str), u32> = HashMap::new();
    for m in &msgs {
        if m.snapshot {
            assert_eq!(
                (m.table.as_str(), m.op.as_str()),
                ("t", "r"),
                "snapshot rows are reads of t"
            );
            assert_eq!(
                m.run.as_deref(),
                Some(id.as_str()),
                "bb.snapshot-run names the request"
            );
            *reads.entry(m.id).or_default() += 1;
        } else {
            *streamed
                .entry((&m.table, m.id, &m.position, &m.part))
                .or_default() += 1;
        }
    }
    let twice = reads.values().filter(|c| **c > 1).count();
    assert_eq!(twice, 0, "snapshot rows sent twice");
    let deleted = deleted.lock().expect("lock").clone();
    let unread: Vec<i64> = (1..=n)
        .filter(|k| !deleted.contains(k) && !reads.contains_key(k))
        .collect();
    assert!(
        unread.is_empty(),
        "{} rows of t never deleted but not read, e.g. {:?}",
        unread.len(),
        &unread[..unread.len().min(5)]
    );
    let dup = streamed.values().filter(|c| **c > 1).count();
    assert_eq!(dup, 0, "streamed changes written twice");
    // Per key (one partition each): streamed changes before the snapshot
    // row's read position come before it, later ones after it.
    let mut by_key: HashMap<(&str, i64), Vec<&Msg>> = HashMap::new();
    for m in &msgs {
        by_key.entry((&m.table, m.id)).or_default().push(m);
    }
    let mut checked = 0;
    for ((_, id), list) in &by_key {
        let Some(at) = list.iter().position(|m| m.snapshot) else {
            continue;
        };
        let s = boundary(&list[at].position);
        assert!(
            list.iter().all(|m| m.partition == list[0].partition),
            "key {id} in one partition"
        );
        for (i, m) in list.iter().enumerate().filter(|(_, m)| !m.snapshot) {
            let before = boundary(&m.position) < s;
            assert_eq!(
                i < at,
                before,
                "key {id}: change at {} vs snapshot row read at {}",
                m.position,
                list[at].position
            );
            checked += 1;
        }
    }
    println!(
        "{} messages: {} snapshot reads of {n} rows ({} deleted by the writer), {} streamed changes; {checked} changes of snapshot-read keys in order around their read; compacted = tables ({} rows)",
        msgs.len(),
        reads.len(),
        deleted.len(),
        streamed.len(),
        want.len()
    );
    if let Some(k) = killed {
        let logs: Vec<String> = (0..run.logs.len())
            .filter(|&i| i != k)
            .map(|i| run.log(i))
            .collect();
        assert!(
            logs.iter()
                .any(|l| l.contains("on-demand snapshot: resuming")),
            "a standby resumed the run"
        );
        let skipped = logs.iter().any(|l| {
            l.contains("rows already in Kafka from the interrupted chunk were not sent again")
        });
        println!("the new leader skipped rows of the interrupted chunk: {skipped}");
        if fault == Fault::Term {
            // A graceful stop finishes the chunk it is sending: nothing to skip.
            assert!(
                logs.iter()
                    .any(|l| l.contains("on-demand snapshot: resuming")
                        && l.contains("interrupted_chunk=None")),
                "the stopped leader finished its chunk"
            );
            assert!(!skipped, "nothing to skip after a graceful stop");
        }
    }
    admin
        .query_drop(format!("DROP DATABASE {db}"))
        .await
        .expect("drop database");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ondemand_snapshot_while_streaming_equals_the_table() {
    scenario("od_plain", Fault::None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_of_the_leader_mid_chunk_resumes_without_duplicates() {
    scenario("od_kill", Fault::Kill9).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_of_the_leader_mid_run_hands_over_at_the_last_chunk() {
    scenario("od_term", Fault::Term).await;
}

/// What the CLI refuses (exit code 2, naming the table and what to do), two
/// requests made while no bridge runs (they wait, `status` shows them
/// pending, the second queued behind the first), and their runs, one after
/// the other, once a bridge leads, on a stream with no other writes of this
/// test (each chunk is sent when the stream has read up to its position).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tables_are_refused_and_requests_queue_until_a_leader_runs_them() {
    let env = common::dev_env();
    let db = common::unique("od_cli");
    let mut admin = mysql_async::Conn::from_url(env.mysql_admin_url.clone())
        .await
        .expect("MariaDB admin connection: start the dev env");
    admin
        .query_drop(format!(
            "CREATE DATABASE {db};
             CREATE TABLE {db}.t (id INT PRIMARY KEY, v INT NOT NULL);
             CREATE TABLE {db}.nokey (v INT);
             CREATE TABLE {db}.textkey (k VARCHAR(10) PRIMARY KEY);
             INSERT INTO {db}.t SELECT seq, seq FROM {db}.seq_1_to_2500;"
        ))
        .await
        .expect("create tables");
    let broker = common::broker::PrivateBroker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("bb.toml");
    std::fs::write(&cfg, config_text(&db, &env, &broker.brokers(), 5240, 100)).expect("config");
    let refused = |args: &[&str], want: &str| {
        let out = cli(&cfg, args);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: expected {want:?} in {err}");
    };
    refused(
        &["snapshot", &format!("{db}.nokey")],
        &format!("`{db}.nokey` has no primary key"),
    );
    refused(
        &["snapshot", &format!("{db}.textkey")],
        &format!("`{db}.textkey`: primary-key column `k` is varchar(10)"),
    );
    refused(
        &["snapshot", &format!("{db}.missing")],
        &format!("table `{db}.missing` has no columns visible"),
    );
    refused(&["snapshot", "other_db.t"], "is not streamed by pipeline");
    refused(&["snapshot", "nodot"], "write it as db.table");
    let txn_cfg = dir.path().join("txn.toml");
    std::fs::write(
        &txn_cfg,
        config_text(&db, &env, &broker.brokers(), 5240, 100)
            .replace("delivery = \"idempotent\"", "delivery = \"transactional\""),
    )
    .expect("config");
    let out = cli(&txn_cfg, &["snapshot", &format!("{db}.t")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("kafka.delivery = \"idempotent\""));

    // No bridge runs: the request is written and waits.
    let out = cli(&cfg, &["snapshot", &format!("{db}.t"), &format!("{db}.t")]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("no leader is running now: the request waits"),
        "{stdout}"
    );
    let id = stdout
        .lines()
        .find_map(|l| l.strip_prefix("request "))
        .and_then(|l| l.split_whitespace().next())
        .expect("request id")
        .to_string();
    // A second request queues behind the first.
    let out = cli(&cfg, &["snapshot", &format!("{db}.t")]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("queued  behind 1 earlier request(s)"),
        "{stdout}"
    );
    let id2 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("request "))
        .and_then(|l| l.split_whitespace().next())
        .expect("request id")
        .to_string();
    let out = cli(&cfg, &["status"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let first = text.find(&format!("snapshot    pending {id}: {db}.t"));
    let second = text.find(&format!("snapshot    pending {id2}: {db}.t"));
    assert!(
        first.is_some() && second.is_some() && first < second,
        "both pending, oldest first: {text}"
    );

    // A bridge starts, leads, and runs them in order on an otherwise idle stream.
    let mut run = start_bridges(&db, &env, &broker.brokers(), 1, 5240, 100);
    let mut etcd = etcd_client::Client::connect(env.etcd_endpoints.clone(), None)
        .await
        .expect("etcd");
    let cp = common::etcd::wait_checkpoint(
        &mut etcd,
        PREFIX,
        &db,
        "the waiting requests to run",
        Duration::from_secs(120),
        |c| c["extra"]["ondemand_last"]["id"] == id2.as_str(),
    )
    .await;
    assert_eq!(cp["extra"]["ondemand_last"]["outcome"], "done", "{cp}");
    assert_eq!(cp["extra"]["ondemand_last"]["rows"], 2500, "{cp}");
    assert_eq!(
        cp["extra"]["ondemand_last"]["tables"],
        serde_json::json!([format!("{db}.t")]),
        "the table named twice is read once"
    );
    let out = cli(&cfg, &["status"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains(&format!("snapshot    last {id2}: done, 2500 rows")),
        "{text}"
    );
    run.procs[0].terminate(Duration::from_secs(10));
    let log = run.log(0);
    let done1 = log.find(&format!("on-demand snapshot: done id={id}"));
    let start2 = log.find(&format!("on-demand snapshot: starting id={id2}"));
    assert!(
        done1.is_some() && start2.is_some() && done1 < start2,
        "the second request ran after the first finished"
    );
    let want: State = (1..=2500).map(|i| (("t".to_string(), i), i)).collect();
    let msgs = read_all(&broker.brokers(), &db, &["t"], &want);
    assert_eq!(compacted(&msgs), want);
    assert_eq!(msgs.len(), 5000, "each row once per run, nothing else");
    for run_id in [&id, &id2] {
        let keys: HashSet<i64> = msgs
            .iter()
            .filter(|m| m.run.as_deref() == Some(run_id.as_str()))
            .map(|m| m.id)
            .collect();
        assert_eq!(keys.len(), 2500, "run {run_id} read every row once");
    }
    admin
        .query_drop(format!("DROP DATABASE {db}"))
        .await
        .expect("drop database");
}

/// MariaDB (a private server) restarts in the middle of a run: the chunk
/// reads fail and are retried while the binlog stream reconnects; the
/// leader does not step down, and every row is still sent exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mariadb_restart_mid_run_is_retried_without_a_step_down() {
    let mut maria = common::PrivateMariaDb::start(common::free_port(), &[]);
    let db = common::unique("od_restart");
    let n = 20_000;
    maria.sql(&format!(
        "CREATE DATABASE {db};
         CREATE TABLE {db}.t (id INT PRIMARY KEY, v INT NOT NULL);
         INSERT INTO {db}.t SELECT seq, seq FROM {db}.seq_1_to_{n};"
    ));
    let shared = common::dev_env();
    let env = common::DevEnv {
        mysql_url: maria.bridge_url(),
        mysql_admin_url: maria.root_url(),
        etcd_endpoints: shared.etcd_endpoints.clone(),
        kafka_brokers: shared.kafka_brokers.clone(),
    };
    let broker = common::broker::PrivateBroker::start();
    let mut run = start_bridges(&db, &env, &broker.brokers(), 1, 5250, 100);
    let mut etcd = etcd_client::Client::connect(env.etcd_endpoints.clone(), None)
        .await
        .expect("etcd");
    common::etcd::wait_checkpoint(
        &mut etcd,
        PREFIX,
        &db,
        "a leader streaming",
        Duration::from_secs(60),
        |_| true,
    )
    .await;
    let id = request(&run.configs[0], &[&format!("{db}.t")]);
    let cp = common::etcd::wait_checkpoint(
        &mut etcd,
        PREFIX,
        &db,
        "a quarter of the run",
        Duration::from_secs(120),
        |c| c["extra"]["ondemand"]["rows"].as_i64() >= Some(n / 4),
    )
    .await;
    let epoch = cp["epoch"].clone();
    maria.stop();
    std::thread::sleep(Duration::from_secs(2));
    maria.run();
    let cp = common::etcd::wait_checkpoint(
        &mut etcd,
        PREFIX,
        &db,
        "the run to finish",
        Duration::from_secs(180),
        |c| c["extra"]["ondemand_last"]["id"] == id.as_str(),
    )
    .await;
    assert_eq!(cp["extra"]["ondemand_last"]["outcome"], "done", "{cp}");
    assert_eq!(cp["epoch"], epoch, "the leader kept leading: {cp}");
    run.procs[0].terminate(Duration::from_secs(10));
    let log = run.log(0);
    assert!(
        log.contains(
            "on-demand snapshot: cannot read from MySQL now; retrying while streaming goes on"
        ),
        "a chunk read failed during the restart and was retried"
    );
    assert!(!log.contains("stepping down"), "no step-down");
    let want: State = (1..=n).map(|i| (("t".to_string(), i), i)).collect();
    let msgs = read_all(&broker.brokers(), &db, &["t"], &want);
    assert_eq!(compacted(&msgs), want);
    let mut reads: HashMap<i64, u32> = HashMap::new();
    for m in msgs.iter().filter(|m| m.snapshot) {
        *reads.entry(m.id).or_default() += 1;
    }
    assert_eq!(reads.len() as i64, n, "every row read");
    assert!(reads.values().all(|c| *c == 1), "no row read twice");
    assert_eq!(msgs.len() as i64, n, "nothing else");
}
