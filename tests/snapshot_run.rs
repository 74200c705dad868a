//! The initial snapshot with real `binlog-bridge run` processes (three, one
//! leads), real MariaDB, the dev env's 3-member etcd and tansu broker:
//! 200k existing rows in three tables (single-column INT and BIGINT UNSIGNED
//! keys, a composite key) while a writer updates, inserts and deletes during
//! the snapshot. The topics, compacted by key, must equal the tables at the
//! end; no snapshot row may appear twice and no message may be written twice.
//! Each test has a private broker (a fresh sqlite store).
//! The second test `kill -9`s the leader in the middle of the snapshot.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::ChildGuard;

/// The etcd prefix of this file's bridges.
const PREFIX: &str = "/bbtest-snap";
use mysql_async::prelude::Queryable;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

/// (table, primary key, v) -> present.
type State = BTreeMap<(String, Vec<i64>), i64>;

/// Rows in the three tables: `BB_SNAPSHOT_TEST_ROWS` (default 200000, the
/// issue's figure) split 50/30/20.
fn tables() -> [(&'static str, i64); 3] {
    let total: i64 = std::env::var("BB_SNAPSHOT_TEST_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    [("t1", total / 2), ("t2", total * 3 / 10), ("t3", total / 5)]
}

fn pk_cols(table: &str) -> &'static [&'static str] {
    if table == "t3" {
        &["a", "b"]
    } else {
        &["id"]
    }
}

async fn create(admin: &mut mysql_async::Conn, db: &str) {
    admin
        .query_drop(format!(
            "CREATE DATABASE {db};
             CREATE TABLE {db}.t1 (id INT PRIMARY KEY, v INT NOT NULL, s VARCHAR(32));
             CREATE TABLE {db}.t2 (id BIGINT UNSIGNED PRIMARY KEY, v INT NOT NULL, d DATETIME(3));
             CREATE TABLE {db}.t3 (a INT, b SMALLINT, v INT NOT NULL, PRIMARY KEY (a, b));
             INSERT INTO {db}.t1 SELECT seq, seq, CONCAT('row-', seq) FROM {db}.seq_1_to_{};
             INSERT INTO {db}.t2 SELECT seq, seq * 2, '2024-02-29 13:45:00.120' FROM {db}.seq_1_to_{};
             INSERT INTO {db}.t3 SELECT seq DIV 10, seq MOD 10, seq FROM {db}.seq_1_to_{};",
            tables()[0].1, tables()[1].1, tables()[2].1
        ))
        .await
        .expect("create and fill the tables");
}

async fn table_state(admin: &mut mysql_async::Conn, db: &str) -> State {
    let mut out = State::new();
    for (t, _) in tables() {
        let cols = pk_cols(t).join(", ");
        let rows: Vec<mysql_async::Row> = admin
            .query(format!("SELECT {cols}, v FROM {db}.{t}"))
            .await
            .expect("read table");
        for r in rows {
            let n = r.len();
            let key: Vec<i64> = (0..n - 1)
                .map(|i| r.get::<i64, usize>(i).unwrap())
                .collect();
            out.insert((t.to_string(), key), r.get::<i64, usize>(n - 1).unwrap());
        }
    }
    out
}

/// Random single-row changes in their own transactions until `stop`.
async fn writer(url: String, db: String, stop: Arc<AtomicBool>, done: Arc<AtomicU64>) {
    let mut c = mysql_async::Conn::from_url(url)
        .await
        .expect("writer connects");
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next_id = 200_000i64;
    while !stop.load(Ordering::Relaxed) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let (t, n) = tables()[(x % 3) as usize];
        let id = ((x >> 8) % n as u64) as i64 + 1;
        let sql = match (x >> 40) % 4 {
            0 | 1 => match t {
                "t3" => format!(
                    "UPDATE {db}.t3 SET v = v + 1 WHERE a = {} AND b = {}",
                    id / 10,
                    id % 10
                ),
                _ => format!("UPDATE {db}.{t} SET v = v + 1 WHERE id = {id}"),
            },
            2 => {
                next_id += 1;
                match t {
                    "t3" => format!("INSERT INTO {db}.t3 VALUES ({next_id}, 1, 7)"),
                    "t1" => format!("INSERT INTO {db}.t1 VALUES ({next_id}, 7, 'new')"),
                    _ => format!("INSERT INTO {db}.t2 VALUES ({next_id}, 7, NOW())"),
                }
            }
            _ => match t {
                "t3" => format!(
                    "DELETE FROM {db}.t3 WHERE a = {} AND b = {}",
                    id / 10,
                    id % 10
                ),
                _ => format!("DELETE FROM {db}.{t} WHERE id = {id}"),
            },
        };
        c.query_drop(sql).await.expect("writer statement");
        done.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Every message of the three topics, with the facts the checks need.
struct Msg {
    table: String,
    key: String,
    op: String,
    after: Option<serde_json::Value>,
    position: String,
    part: String,
    snapshot: bool,
}

struct Reader {
    consumer: BaseConsumer,
    db: String,
    /// Next offset to read, per (topic, partition).
    next: BTreeMap<(String, i32), i64>,
    msgs: Vec<Msg>,
}

impl Reader {
    fn new(brokers: &str, db: &str) -> Reader {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", format!("{db}-reader"))
            .set("enable.auto.commit", "false")
            .set("fetch.wait.max.ms", "10")
            .set("max.partition.fetch.bytes", "1048576")
            .set("fetch.max.bytes", "1048576")
            .create()
            .expect("consumer");
        let mut next = BTreeMap::new();
        for (t, _) in tables() {
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
        Reader {
            consumer,
            db: db.to_string(),
            next,
            msgs: Vec::new(),
        }
    }

    /// One pass: read each partition, one at a time (small requests for
    /// the test broker), up to its current end. True if anything was new.
    fn drain(&mut self) -> bool {
        let mut progressed = false;
        let parts: Vec<(String, i32)> = self.next.keys().cloned().collect();
        for (t, p) in parts {
            let (_, high) = self
                .consumer
                .fetch_watermarks(&t, p, Duration::from_secs(10))
                .expect("watermarks");
            let key = (t.clone(), p);
            let from = self.next[&key];
            if from >= high {
                continue;
            }
            let mut one = TopicPartitionList::new();
            one.add_partition_offset(&t, p, Offset::Offset(from))
                .expect("offset");
            self.consumer.assign(&one).expect("assign");
            let mut last = Instant::now();
            while self.next[&key] < high {
                assert!(
                    last.elapsed() < Duration::from_secs(60),
                    "{t}/{p} stuck at offset {} of {high}",
                    self.next[&key]
                );
                let Some(m) = self.consumer.poll(Duration::from_millis(200)) else {
                    continue;
                };
                let m = m.expect("consume");
                if m.topic() != t || m.partition() != p {
                    continue;
                }
                last = Instant::now();
                progressed = true;
                self.next.insert(key.clone(), m.offset() + 1);
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
                let table = t.trim_start_matches(&format!("{}.", self.db)).to_string();
                self.msgs.push(Msg {
                    table,
                    key: String::from_utf8_lossy(m.key().expect("keyed")).into_owned(),
                    op: v["op"].as_str().unwrap_or_default().to_string(),
                    after: (!v["after"].is_null()).then(|| v["after"].clone()),
                    position: header("bb.position").expect("bb.position header"),
                    part: header("bb.part").unwrap_or_default(),
                    snapshot: header("bb.snapshot").is_some(),
                });
            }
        }
        progressed
    }

    /// The topics compacted by key, as (table, key, v).
    fn state(&self) -> State {
        let mut by_key: HashMap<(String, String), Option<&serde_json::Value>> = HashMap::new();
        for m in &self.msgs {
            let k = (m.table.clone(), m.key.clone());
            if m.op == "d" {
                by_key.insert(k, None);
            } else {
                by_key.insert(k, m.after.as_ref());
            }
        }
        let mut out = State::new();
        for ((table, _), after) in by_key {
            if let Some(a) = after {
                let key = pk_cols(&table)
                    .iter()
                    .map(|c| a[*c].as_i64().expect("integer key"))
                    .collect();
                out.insert((table, key), a["v"].as_i64().expect("integer v"));
            }
        }
        out
    }
}

struct Run {
    _dir: tempfile::TempDir,
    procs: Vec<ChildGuard>,
    logs: Vec<std::path::PathBuf>,
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

fn start_bridges(db: &str, env: &common::DevEnv, brokers: &str, n: usize, chunk: u32) -> Run {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut procs = Vec::new();
    let mut logs = Vec::new();
    for i in 0..n {
        let config = format!(
            "[mysql]\nurl = {:?}\nserver_id = {}\nstart = \"latest\"\ninclude = [\"{db}.*\"]\nexclude_columns = [\"{db}.t1.s\"]\n\
             [etcd]\nendpoints = {:?}\nprefix = \"{PREFIX}\"\npipeline = \"{db}\"\nlease_ttl_secs = 2\ncheckpoint_interval_ms = 200\n\
             [kafka]\nbrokers = {:?}\ndelivery = \"idempotent\"\npartitions = 6\n\
             [http]\nlisten = \"127.0.0.1:{}\"\n\
             [snapshot]\nmode = \"initial\"\nchunk_rows = {chunk}\n",
            env.mysql_url,
            5100 + i,
            env.etcd_endpoints,
            brokers,
            common::free_port()
        );
        let cfg = dir.path().join(format!("bb{i}.toml"));
        std::fs::write(&cfg, config).expect("write config");
        let log = dir.path().join(format!("bridge{i}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_binlog-bridge"))
            .arg("--config")
            .arg(&cfg)
            .arg("run")
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn binlog-bridge run");
        procs.push(ChildGuard(Some(child)));
        logs.push(log);
    }
    Run {
        _dir: dir,
        procs,
        logs,
    }
}

/// Which process leads: the one whose /status says leader.
fn leader_index(run: &Run) -> Option<usize> {
    (0..run.logs.len())
        .find(|&i| run.procs[i].0.is_some() && run.log(i).contains("snapshot: starting"))
}

/// What happens to the leader in the middle of the snapshot.
#[derive(Clone, Copy, PartialEq)]
enum Fault {
    None,
    Kill9,
    Term,
}

async fn scenario(name: &str, fault: Fault) {
    let kill_mid_snapshot = fault != Fault::None;
    let env = common::dev_env();
    let db = common::unique(name);
    let mut admin = mysql_async::Conn::from_url(env.mysql_admin_url.clone())
        .await
        .expect("MariaDB admin connection: start the dev env");
    create(&mut admin, &db).await;
    let mut etcd = etcd_client::Client::connect(env.etcd_endpoints.clone(), None)
        .await
        .expect("etcd: start the dev env");

    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicU64::new(0));
    // A broker of its own: tansu's sqlite storage slows down as it fills,
    // and these tests write 200k+ messages each.
    let broker = common::broker::PrivateBroker::start();
    // Smaller chunks in the kill test: a longer snapshot to kill it in.
    let chunk = if kill_mid_snapshot { 100 } else { 500 };
    let mut run = start_bridges(&db, &env, &broker.brokers(), 3, chunk);
    // The writer starts with the bridges: its changes land before, during
    // and after the snapshot's consistent point.
    let w = tokio::spawn(writer(
        env.mysql_admin_url.clone(),
        db.clone(),
        stop.clone(),
        writes.clone(),
    ));

    let mut killed = None;
    if kill_mid_snapshot {
        let cp = common::etcd::wait_checkpoint(
            &mut etcd,
            PREFIX,
            &db,
            "snapshot progress",
            Duration::from_secs(120),
            |c| {
                let s = &c["extra"]["snapshot"];
                let total: i64 = tables().iter().map(|(_, n)| n).sum();
                s["done"] == false && s["rows"].as_i64().unwrap_or(0) >= total / 4
            },
        )
        .await;
        let i = leader_index(&run).expect("a leader started the snapshot");
        if fault == Fault::Term {
            run.procs[i].terminate(Duration::from_secs(10));
        } else {
            run.procs[i].kill();
        }
        killed = Some(i);
        println!(
            "killed the leader (bridge {i}) with {} snapshot rows checkpointed, table {}",
            cp["extra"]["snapshot"]["rows"], cp["extra"]["snapshot"]["table"]
        );
    }
    let cp = common::etcd::wait_checkpoint(
        &mut etcd,
        PREFIX,
        &db,
        "the snapshot to finish",
        Duration::from_secs(180),
        |c| c["extra"]["snapshot"]["done"] == true,
    )
    .await;
    let segments = cp["extra"]["snapshot"]["segments"].as_array().map(Vec::len);
    // Writes continue into streaming, then stop.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    w.await.expect("writer");
    println!("writer: {} changes", writes.load(Ordering::Relaxed));

    let want = table_state(&mut admin, &db).await;
    // Wait until the bridges have checkpointed past the last change, then
    // stop them: the test broker serves large reads badly while it writes.
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
    let mut reader = Reader::new(&broker.brokers(), &db);
    let start = Instant::now();
    loop {
        let progressed = reader.drain();
        if reader.state() == want || start.elapsed() > Duration::from_secs(120) {
            break;
        }
        if !progressed {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    let got = reader.state();
    if let Some(m) = reader.msgs.first() {
        println!(
            "first message: {} {} {} {:?}",
            m.table, m.key, m.op, m.after
        );
    }
    println!("read {} messages", reader.msgs.len());
    let missing = want.iter().filter(|(k, v)| got.get(*k) != Some(*v)).count();
    let extra = got.keys().filter(|k| !want.contains_key(*k)).count();
    assert_eq!(
        (missing, extra),
        (0, 0),
        "compacted topics differ from the tables ({} rows)",
        want.len()
    );
    assert_eq!(got, want);

    // No snapshot row twice, no message twice.
    let mut reads: HashMap<(&str, &str), u32> = HashMap::new();
    let mut seen: HashMap<(&str, &str, &str, &str), u32> = HashMap::new();
    for m in &reader.msgs {
        if m.snapshot {
            assert_eq!(m.op, "r", "snapshot rows are op r");
            *reads.entry((&m.table, &m.key)).or_default() += 1;
        } else {
            *seen
                .entry((&m.table, &m.key, &m.position, &m.part))
                .or_default() += 1;
        }
    }
    // mysql.exclude_columns holds for snapshot rows as for streamed ones.
    let leaked = reader
        .msgs
        .iter()
        .filter(|m| m.table == "t1" && m.after.as_ref().is_some_and(|a| a.get("s").is_some()))
        .count();
    assert_eq!(leaked, 0, "t1.s is excluded");
    assert!(reader
        .msgs
        .iter()
        .any(|m| m.table == "t2" && m.after.as_ref().is_some_and(|a| a.get("d").is_some())));
    let twice = reads.values().filter(|n| **n > 1).count();
    assert_eq!(twice, 0, "snapshot rows sent twice");
    let dup = seen.values().filter(|n| **n > 1).count();
    assert_eq!(dup, 0, "streamed changes sent twice");
    // Every row that existed at the start and was never touched was read once.
    let initial: i64 = tables().iter().map(|(_, n)| n).sum();
    println!(
        "{} messages: {} snapshot reads (of {initial} initial rows), {} streamed; {} segment(s); compacted state = {} rows, equal to the tables",
        reader.msgs.len(),
        reads.len(),
        seen.len(),
        segments.unwrap_or(0),
        want.len()
    );
    assert!(reads.len() as i64 >= initial - writes.load(Ordering::Relaxed) as i64);
    if let Some(k) = killed {
        assert!(
            segments.unwrap_or(0) >= 2,
            "the takeover read a second segment: {cp}"
        );
        let resumed = (0..run.logs.len())
            .filter(|&i| i != k)
            .any(|i| run.log(i).contains("snapshot: resuming after a failover"));
        assert!(resumed, "a standby resumed the snapshot");
        if fault == Fault::Term {
            assert!(
                run.log(k)
                    .contains("snapshot: stopped; the next leader resumes here"),
                "the stopped leader recorded its last chunk"
            );
        }
    } else {
        assert_eq!(segments, Some(1), "one consistent read without failover");
    }
    for p in &mut run.procs {
        p.terminate(Duration::from_secs(10));
    }
    admin
        .query_drop(format!("DROP DATABASE {db}"))
        .await
        .expect("drop database");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_with_concurrent_writes_equals_the_tables() {
    scenario("snap_plain", Fault::None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_of_the_leader_mid_snapshot_resumes_without_duplicates() {
    scenario("snap_kill", Fault::Kill9).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_of_the_leader_mid_snapshot_hands_over_at_the_last_chunk() {
    scenario("snap_term", Fault::Term).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_names_the_tables_the_snapshot_cannot_read() {
    let env = common::dev_env();
    let db = common::unique("snap_check");
    let mut admin = mysql_async::Conn::from_url(env.mysql_admin_url.clone())
        .await
        .expect("MariaDB admin connection: start the dev env");
    admin
        .query_drop(format!(
            "CREATE DATABASE {db};
             CREATE TABLE {db}.ok (id INT PRIMARY KEY, d DATE);
             CREATE TABLE {db}.nokey (v INT);
             CREATE TABLE {db}.textkey (k VARCHAR(10) PRIMARY KEY);"
        ))
        .await
        .expect("create tables");
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("bb.toml");
    let write = |include: &str| {
        std::fs::write(
            &cfg,
            format!(
                "[mysql]\nurl = {:?}\nserver_id = 5190\ninclude = [\"{db}.{include}\"]\n\
                 [etcd]\nendpoints = {:?}\n[kafka]\nbrokers = {:?}\n[snapshot]\nmode = \"initial\"\n",
                env.mysql_url, env.etcd_endpoints, env.kafka_brokers
            ),
        )
        .expect("write config");
    };
    let check = || {
        let out = Command::new(env!("CARGO_BIN_EXE_binlog-bridge"))
            .arg("--config")
            .arg(&cfg)
            .arg("check")
            .env_remove("RUST_LOG")
            .output()
            .expect("run check");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    write("*");
    let text = check();
    let line = text
        .lines()
        .find(|l| l.contains("initial snapshot"))
        .unwrap_or_else(|| panic!("no snapshot line in:\n{text}"));
    assert!(line.starts_with("FAIL"), "{line}");
    assert!(
        line.contains(&format!("`{db}.nokey` has no primary key")),
        "{line}"
    );
    assert!(
        line.contains(&format!(
            "`{db}.textkey`: primary-key column `k` is varchar(10)"
        )),
        "{line}"
    );
    assert!(!line.contains(&format!("{db}.ok")), "{line}");
    write("ok");
    let text = check();
    let line = text
        .lines()
        .find(|l| l.contains("initial snapshot"))
        .unwrap_or_else(|| panic!("no snapshot line in:\n{text}"));
    assert!(line.starts_with("pass"), "{line}");
    assert!(
        line.contains("without a lock; 1 table(s) to read"),
        "{line}"
    );
    admin
        .query_drop(format!("DROP DATABASE {db}"))
        .await
        .expect("drop database");
}
