//! The measuring half of `scripts/bench.sh`: each subcommand measures one
//! row of the benchmark table and ends with one `RESULT key=value ...` line
//! the script reads.
//!
//! - `limits FILE...`: the two limits of the pipeline on the rows of the
//!   binlog files a workload wrote (in order: a workload larger than
//!   MariaDB's `max_binlog_size` cap of 1 GiB spans several). Decode: our
//!   decoder (checksums verified, every event into a `ChangeEvent`, one
//!   decoder across the files as a replica would read them) next to
//!   `mariadb-binlog -v FILE... > /dev/null`. Produce: the
//!   decoded events sent through [`KafkaSink`] next to a plain rdkafka
//!   `FutureProducer` sending the same messages pre-encoded (same topic,
//!   partition, key, value and headers, same producer settings and in-flight
//!   window) to the same broker. Each side runs `--runs` times, alternating;
//!   the best run of each side counts (decoding: at least three runs).
//! - `plain FILE...`: one run of that plain producer alone, for the
//!   script's adjacent pairs of it and an end-to-end run.
//! - `watch`: while a `binlog-bridge run` streams a workload written before it
//!   started, polls the high watermarks of the workload's topics until they
//!   hold `--expect` messages; rows/s is counted from the first poll that
//!   sees a message to the poll that sees the last one (the bridge's start-up,
//!   election and fence wait are not in it). Then reads the bridge's peak
//!   RSS (`VmHWM` in `/proc/PID/status`).
//! - `latency`: writes rows at a fixed rate into a table the bridge streams,
//!   each row stamped with the writer's clock just before its INSERT
//!   (autocommit: the INSERT is the commit), while a consumer in the same
//!   process reads the topic as it goes; latency is receipt minus stamp.
//!
//! ```text
//! cargo run --release --example bench_tool -- limits FILE --brokers 127.0.0.1:9092
//! ```

use std::collections::{HashMap, VecDeque};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use binlog_bridge::config::KafkaConfig;
use binlog_bridge::event::{ChangeEvent, EventKind, Position};
use binlog_bridge::sink::format::{encode_key, encode_row, EncodeContext};
use binlog_bridge::sink::producer::{producer_config, Producer};
use binlog_bridge::sink::reconcile::partition_for;
use binlog_bridge::sink::routing::render_topic;
use binlog_bridge::sink::KafkaSink;
use binlog_bridge::source::charset::Charsets;
use binlog_bridge::source::{binlog_file, Decoder, TableFilter};
use clap::{Parser, Subcommand};
use mysql_async::prelude::Queryable;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::Producer as _;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

type Error = Box<dyn std::error::Error>;

/// The binary's allocator, so "our decoder" and "our sink" here cost what
/// they cost inside `binlog-bridge run` (src/main.rs).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Decode and produce limits on the rows of a workload's binlog files.
    Limits {
        /// The binlog files the workload wrote, in order (copied from the
        /// server's data directory, under their own names).
        #[arg(required = true)]
        files: Vec<String>,
        #[arg(long)]
        brokers: String,
        /// Runs of each side (alternating); the best counts.
        #[arg(long, default_value_t = 2)]
        runs: usize,
        /// Name the topics PREFIX-plainN.DB.TABLE / PREFIX-sinkN.DB.TABLE
        /// (N = run) instead of time-stamped names, for a broker whose topics
        /// must exist beforehand (the mock broker has no CreateTopics).
        #[arg(long, value_name = "PREFIX")]
        fixed_topics: Option<String>,
        /// The broker's pid: its CPU time is measured over each produce run.
        #[arg(long)]
        broker_pid: Option<u32>,
    },
    /// One run of the plain producer alone on a workload's rows (the
    /// produce limit's reference), to pair with an end-to-end run measured
    /// right before or after it.
    Plain {
        /// The binlog files the workload wrote, in order.
        #[arg(required = true)]
        files: Vec<String>,
        #[arg(long)]
        brokers: String,
        /// Names this run's topics (PREFIX-TAG.DB.TABLE with
        /// --fixed-topics, else time-stamped).
        #[arg(long)]
        tag: String,
        #[arg(long, value_name = "PREFIX")]
        fixed_topics: Option<String>,
        /// The broker's pid: its CPU time is measured over the run.
        #[arg(long)]
        broker_pid: Option<u32>,
    },
    /// Time a running bridge until the topics hold the expected messages.
    Watch {
        #[arg(long)]
        brokers: String,
        /// Topics to sum (repeat).
        #[arg(long, required = true)]
        topic: Vec<String>,
        #[arg(long)]
        expect: i64,
        /// The bridge's pid, for its peak RSS.
        #[arg(long)]
        pid: u32,
        /// NAME=PID of another process whose CPU time over the measured
        /// window is printed beside the bridge's (repeat: the broker, MariaDB).
        #[arg(long, value_parser = parse_named_pid)]
        cpu_pid: Vec<(String, u32)>,
        #[arg(long, default_value_t = 600)]
        timeout_secs: u64,
        #[arg(long, default_value_t = 20)]
        interval_ms: u64,
    },
    /// Commit-to-consumer latency at a fixed rate.
    Latency {
        /// A MySQL URL that may write to --db.
        #[arg(long)]
        mysql: String,
        #[arg(long)]
        brokers: String,
        /// Database holding table `lat` (created here; must be streamed by the bridge).
        #[arg(long)]
        db: String,
        /// The topic the bridge writes `db.lat` to.
        #[arg(long)]
        topic: String,
        /// Rows per second.
        #[arg(long, default_value_t = 5000)]
        rate: u64,
        /// Rows per INSERT (one INSERT = one transaction).
        #[arg(long, default_value_t = 10)]
        batch: u64,
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        /// Rows stamped in the first seconds are left out of the percentiles.
        #[arg(long, default_value_t = 3)]
        warmup_secs: u64,
    },
    /// Create the `lat` table and its topic for `latency`, before the bridge
    /// starts (tansu's sqlite storage has been seen to fail when two clients
    /// create one topic at once).
    LatencyTable {
        #[arg(long)]
        mysql: String,
        #[arg(long)]
        db: String,
        #[arg(long)]
        brokers: String,
        #[arg(long)]
        topic: String,
    },
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

// ---------------------------------------------------------------- limits

/// Decodes every event of `files` (read one at a time, in order, through one
/// decoder); returns the events and the time spent decoding (reading the
/// files from disk is not counted).
fn decode(files: &[String]) -> Result<(Vec<ChangeEvent>, Duration), Error> {
    let mut out = Vec::new();
    let mut spent = Duration::ZERO;
    let mut d = Decoder::new(Arc::new(Charsets::default()), TableFilter::default(), true);
    for (i, path) in files.iter().enumerate() {
        let bytes = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
        let name = file_name(path);
        let file_events = binlog_file::events(&bytes).map_err(|e| format!("{path}: {e}"))?;
        let start = Instant::now();
        if i == 0 {
            d.resume_at(&Position::new(name.as_str(), 4));
        } else {
            // The previous file ended with a ROTATE naming this one; say so
            // anyway, so an error names the right file.
            d.set_file(&name);
        }
        for item in file_events {
            let (at, ev) = item.map_err(|e| format!("{path}: {e}"))?;
            d.feed(ev)
                .map_err(|e| format!("{path}: offset {at}: {e}"))?;
            while let Some(ev) = d.pop() {
                out.push(ev);
            }
        }
        spent += start.elapsed();
    }
    if d.in_transaction() {
        return Err(format!(
            "{} ends inside a transaction: pass every binlog file the workload wrote",
            files.last().map(String::as_str).unwrap_or("")
        )
        .into());
    }
    Ok((out, spent))
}

fn file_name(path: &str) -> String {
    std::path::Path::new(path)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn rows_of(evs: &[ChangeEvent]) -> usize {
    evs.iter()
        .filter(|e| matches!(e.kind, EventKind::Row(_)))
        .count()
}

struct Plain {
    topic: String,
    partition: i32,
    key: Vec<u8>,
    value: Vec<u8>,
    position: String,
    gtid: Option<String>,
}

/// The messages the sink would send for `evs`, pre-encoded.
fn pre_encode(
    cfg: &KafkaConfig,
    evs: &[ChangeEvent],
    partitions: usize,
) -> Result<Vec<Plain>, Error> {
    let ctx = EncodeContext {
        pipeline: "bench",
        now_ms: 0,
        last_in_txn: true,
        schema_include: false,
    };
    let mut out = Vec::with_capacity(evs.len());
    for ev in evs {
        let EventKind::Row(r) = &ev.kind else {
            continue;
        };
        let value = encode_row(cfg.format, r, &ev.txn, &ev.position, &ctx)?;
        let image = r.after.as_deref().or(r.before.as_deref()).unwrap_or(&[]);
        let key = encode_key(cfg.format, &r.table, image, &r.table.primary_key);
        out.push(Plain {
            topic: render_topic(&cfg.topic, &r.table.database, &r.table.table, "bench"),
            partition: partition_for(Some(&key), partitions),
            key,
            value,
            position: ev.position.to_string(),
            gtid: ev.position.gtid.as_deref().map(str::to_string),
        });
    }
    Ok(out)
}

fn kafka_cfg(brokers: &str, tag: &str, fixed: Option<&str>) -> KafkaConfig {
    let base = match fixed {
        Some(prefix) => format!("{prefix}-{tag}"),
        None => format!("limits-{tag}-{}", now_us()),
    };
    KafkaConfig {
        brokers: brokers.into(),
        topic: format!("{base}.{{db}}.{{table}}"),
        schema_topic: format!("{base}.schema"),
        ..KafkaConfig::default()
    }
}

async fn create_topics(cfg: &KafkaConfig, evs: &[ChangeEvent]) -> Result<(), Error> {
    let mut p = Producer::connect(cfg).await?;
    let mut done = std::collections::HashSet::new();
    for ev in evs {
        if let EventKind::Row(r) = &ev.kind {
            let t = render_topic(&cfg.topic, &r.table.database, &r.table.table, "bench");
            if done.insert(t.clone()) {
                p.ensure_topic(&t).await?;
            }
        }
    }
    Ok(())
}

/// CPU seconds of this process (all its threads, librdkafka's included) and
/// of the broker process, read at one moment.
#[derive(Clone, Copy)]
struct CpuMark {
    me: f64,
    broker: Option<f64>,
}

impl CpuMark {
    fn now(broker: Option<u32>) -> Self {
        CpuMark {
            me: cpu_secs(std::process::id()).unwrap_or(f64::NAN),
            broker: broker.and_then(cpu_secs),
        }
    }

    /// The run that began at `start` (and at `self`) ends now.
    fn timed(&self, start: Instant, broker: Option<u32>) -> Timed {
        let took = start.elapsed();
        let now = CpuMark::now(broker);
        Timed {
            took,
            cpu: now.me - self.me,
            broker_cpu: now.broker.zip(self.broker).map(|(b, a)| b - a),
        }
    }
}

/// One timed produce run: wall time and the CPU seconds of this process and
/// of the broker over it.
struct Timed {
    took: Duration,
    cpu: f64,
    broker_cpu: Option<f64>,
}

async fn run_plain(
    cfg: &KafkaConfig,
    msgs: &[Plain],
    broker_pid: Option<u32>,
) -> Result<Timed, Error> {
    let producer: FutureProducer = producer_config(cfg)?.create()?;
    // Connected and topic metadata known before the clock starts, as the
    // sink's producer is (its topics are checked before it is timed).
    let mut topics: Vec<&str> = msgs.iter().map(|m| &m.topic[..]).collect();
    topics.sort_unstable();
    topics.dedup();
    for t in topics {
        producer
            .client()
            .fetch_metadata(Some(t), Duration::from_secs(10))?;
    }
    // And its idempotent producer id, and a connection to each partition's
    // leader: one untimed message to each partition the run writes, each
    // awaited. Without it the first timed messages waited for the producer
    // id (0.5-1 s at times: 20,000 rows measured at 19,000-446,000 msg/s).
    let mut parts: Vec<(&str, i32)> = msgs.iter().map(|m| (&m.topic[..], m.partition)).collect();
    parts.sort_unstable();
    parts.dedup();
    for (t, p) in parts {
        let rec: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(t).partition(p).payload(&[]);
        producer
            .send(rec, Duration::from_secs(30))
            .await
            .map_err(|(e, _)| format!("warm-up message to {t} [{p}]: {e}"))?;
    }
    // The sink's window: max_in_flight messages and max_in_flight_bytes.
    let window = cfg.max_in_flight as usize;
    let max_bytes = cfg.max_in_flight_bytes;
    let mut held: u64 = 0;
    let mut pending: VecDeque<(rdkafka::producer::DeliveryFuture, u64)> =
        VecDeque::with_capacity(window);
    let mark = CpuMark::now(broker_pid);
    let start = Instant::now();
    for m in msgs {
        let bytes = (m.key.len() + m.value.len()) as u64;
        while pending.len() >= window || (held > 0 && held + bytes > max_bytes) {
            if let Some((f, b)) = pending.pop_front() {
                f.await?.map_err(|(e, _)| e)?;
                held -= b;
            }
        }
        let mut headers = OwnedHeaders::new_with_capacity(4)
            .insert(Header {
                key: "bb.position",
                value: Some(&m.position[..]),
            })
            .insert(Header {
                key: "bb.pipeline",
                value: Some("bench"),
            })
            .insert(Header {
                key: "bb.epoch",
                value: Some("1"),
            });
        if let Some(g) = &m.gtid {
            headers = headers.insert(Header {
                key: "bb.gtid-state",
                value: Some(&g[..]),
            });
        }
        loop {
            let rec = FutureRecord::to(&m.topic)
                .partition(m.partition)
                .key(&m.key)
                .payload(&m.value)
                .headers(headers.clone());
            match producer.send_result(rec) {
                Ok(f) => {
                    pending.push_back((f, bytes));
                    held += bytes;
                    break;
                }
                Err((
                    rdkafka::error::KafkaError::MessageProduction(
                        rdkafka::types::RDKafkaErrorCode::QueueFull,
                    ),
                    _,
                )) => match pending.pop_front() {
                    Some((f, b)) => {
                        f.await?.map_err(|(e, _)| e)?;
                        held -= b;
                    }
                    None => tokio::time::sleep(Duration::from_millis(5)).await,
                },
                Err((e, _)) => return Err(e.into()),
            }
        }
    }
    for (f, _) in pending {
        f.await?.map_err(|(e, _)| e)?;
    }
    Ok(mark.timed(start, broker_pid))
}

async fn run_sink(
    cfg: &KafkaConfig,
    evs: &[ChangeEvent],
    broker_pid: Option<u32>,
) -> Result<Timed, Error> {
    let mut sink = KafkaSink::new(cfg, "bench", 1).await?;
    let mark = CpuMark::now(broker_pid);
    let start = Instant::now();
    for ev in evs {
        sink.send(ev).await?;
    }
    sink.flush(Duration::from_secs(600)).await?;
    Ok(mark.timed(start, broker_pid))
}

fn mariadb_binlog(files: &[String]) -> Result<Duration, Error> {
    let t = Instant::now();
    let status = Command::new("mariadb-binlog")
        .arg("-v")
        .args(files)
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("cannot run mariadb-binlog (install mariadb-client): {e}"))?;
    if !status.success() {
        return Err(format!("mariadb-binlog -v {} failed: {status}", files.join(" ")).into());
    }
    Ok(t.elapsed())
}

async fn limits(
    files: &[String],
    brokers: &str,
    runs: usize,
    fixed: Option<&str>,
    broker_pid: Option<u32>,
) -> Result<(), Error> {
    let mut file_bytes = 0u64;
    for f in files {
        file_bytes += std::fs::metadata(f).map_err(|e| format!("{f}: {e}"))?.len();
    }
    let shown = files.join(" ");
    let runs = runs.max(1);
    let (mut ours, mut theirs) = (Duration::MAX, Duration::MAX);
    let mut evs = Vec::new();
    // Decoding takes well under a second: one run is mostly noise on a
    // shared machine, so take the best of at least three.
    for _ in 0..runs.max(3) {
        evs.clear();
        let (e, t) = decode(files)?;
        evs = e;
        ours = ours.min(t);
        theirs = theirs.min(mariadb_binlog(files)?);
    }
    let rows = rows_of(&evs);
    if rows == 0 {
        return Err(format!("{shown} holds no row events").into());
    }
    let per_s = |d: Duration| rows as f64 / d.as_secs_f64();
    println!(
        "decode {shown} ({file_bytes} bytes, {rows} rows): ours {:.0} rows/s, mariadb-binlog -v {:.0} rows/s",
        per_s(ours),
        per_s(theirs)
    );

    let (mut plain_best, mut sink_best): (Option<Timed>, Option<Timed>) = (None, None);
    let mut msg_bytes = 0usize;
    for round in 0..runs {
        let cfg = kafka_cfg(brokers, &format!("plain{round}"), fixed);
        create_topics(&cfg, &evs).await?;
        let msgs = pre_encode(&cfg, &evs, cfg.partitions as usize)?;
        msg_bytes = msgs.iter().map(|m| m.key.len() + m.value.len()).sum();
        let p = run_plain(&cfg, &msgs, broker_pid).await?;
        drop(msgs);
        let cfg = kafka_cfg(brokers, &format!("sink{round}"), fixed);
        create_topics(&cfg, &evs).await?;
        let s = run_sink(&cfg, &evs, broker_pid).await?;
        let cpu = |t: &Timed| match t.broker_cpu {
            Some(b) => format!("CPU {:.2} s + broker {b:.2} s", t.cpu),
            None => format!("CPU {:.2} s", t.cpu),
        };
        println!(
            "produce round {round}: plain {:.0} msg/s ({:.2} s, {}), sink {:.0} msg/s ({:.2} s, {})",
            per_s(p.took),
            p.took.as_secs_f64(),
            cpu(&p),
            per_s(s.took),
            s.took.as_secs_f64(),
            cpu(&s)
        );
        if plain_best.as_ref().map_or(true, |b| p.took < b.took) {
            plain_best = Some(p);
        }
        if sink_best.as_ref().map_or(true, |b| s.took < b.took) {
            sink_best = Some(s);
        }
    }
    let (Some(plain), Some(sink)) = (plain_best, sink_best) else {
        return Err("no produce run".into());
    };
    // CPU seconds per million rows of the best runs; decoding is one thread
    // doing nothing else, so its wall time is its CPU time.
    let per_m = |cpu: f64| cpu * 1e6 / rows as f64;
    let broker_per_m = |t: &Timed| {
        t.broker_cpu
            .map_or("-".to_string(), |b| format!("{:.2}", per_m(b)))
    };
    println!(
        "RESULT rows={rows} files={} bytes_per_msg={:.0} decode_ours={:.0} decode_mariadb={:.0} produce_plain={:.0} produce_sink={:.0} \
         cpu_m_decode={:.2} cpu_m_plain={:.2} cpu_m_plain_broker={} cpu_m_sink={:.2} cpu_m_sink_broker={}",
        files.len(),
        msg_bytes as f64 / rows as f64,
        per_s(ours),
        per_s(theirs),
        per_s(plain.took),
        per_s(sink.took),
        per_m(ours.as_secs_f64()),
        per_m(plain.cpu),
        broker_per_m(&plain),
        per_m(sink.cpu),
        broker_per_m(&sink),
    );
    Ok(())
}

/// `Plain`: decode and encode untimed, then one timed plain producer run.
async fn plain(
    files: &[String],
    brokers: &str,
    tag: &str,
    fixed: Option<&str>,
    broker_pid: Option<u32>,
) -> Result<(), Error> {
    let (evs, _) = decode(files)?;
    let rows = rows_of(&evs);
    if rows == 0 {
        return Err(format!("{} holds no row events", files.join(" ")).into());
    }
    let cfg = kafka_cfg(brokers, tag, fixed);
    create_topics(&cfg, &evs).await?;
    let msgs = pre_encode(&cfg, &evs, cfg.partitions as usize)?;
    drop(evs);
    let p = run_plain(&cfg, &msgs, broker_pid).await?;
    let per_m = |cpu: f64| cpu * 1e6 / rows as f64;
    println!(
        "RESULT rows={rows} produce_plain={:.0} cpu_m_plain={:.2} cpu_m_plain_broker={}",
        rows as f64 / p.took.as_secs_f64(),
        per_m(p.cpu),
        p.broker_cpu
            .map_or("-".to_string(), |b| format!("{:.2}", per_m(b))),
    );
    Ok(())
}

fn parse_named_pid(s: &str) -> Result<(String, u32), String> {
    let (name, pid) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}`: want NAME=PID"))?;
    let pid = pid.parse().map_err(|e| format!("`{s}`: bad pid: {e}"))?;
    Ok((name.to_string(), pid))
}

// ---------------------------------------------------------------- watch

fn vm_hwm_kb(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// User + system CPU seconds the process has used so far.
fn cpu_secs(pid: u32) -> Option<f64> {
    stat_cpu(&format!("/proc/{pid}/stat")).map(|(_, cpu)| cpu)
}

/// Name and user + system CPU seconds from a `/proc/.../stat` file.
fn stat_cpu(path: &str) -> Option<(String, f64)> {
    let s = std::fs::read_to_string(path).ok()?;
    // The command name is in parentheses and may hold spaces.
    let name = &s[s.find('(')? + 1..s.rfind(')')?];
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let (utime, stime): (f64, f64) = (f.get(11)?.parse().ok()?, f.get(12)?.parse().ok()?);
    Some((name.to_string(), (utime + stime) / clock_ticks()))
}

/// The whole machine's CPU time so far from `/proc/stat`, in seconds summed
/// over its cores: (busy, idle, steal). Busy is user, nice, system, irq and
/// softirq; idle counts iowait too; steal is time the hypervisor gave to
/// someone else.
fn machine_cpu() -> Option<(f64, f64, f64)> {
    let s = std::fs::read_to_string("/proc/stat").ok()?;
    let line = s.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap_or(0.0))
        .collect();
    let at = |i: usize| f.get(i).copied().unwrap_or(0.0);
    let busy = at(0) + at(1) + at(2) + at(5) + at(6);
    let tck = clock_ticks();
    Some((busy / tck, (at(3) + at(4)) / tck, at(7) / tck))
}

/// CPU seconds of each thread of `pid`, by thread id (with its name).
fn thread_cpu(pid: u32) -> HashMap<String, (String, f64)> {
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for e in dir.flatten() {
        let tid = e.file_name().to_string_lossy().into_owned();
        if let Some(v) = stat_cpu(&format!("/proc/{pid}/task/{tid}/stat")) {
            out.insert(tid, v);
        }
    }
    out
}

/// Cores each thread name kept busy between two [`thread_cpu`] readings
/// (threads of one name summed, e.g. the runtime's workers), busiest first,
/// as `name/cores;...` (spaces in names as `_`).
fn threads_busy(
    before: &HashMap<String, (String, f64)>,
    after: &HashMap<String, (String, f64)>,
    secs: f64,
) -> String {
    let mut by_name: HashMap<String, f64> = HashMap::new();
    for (tid, (name, cpu)) in after {
        let was = before.get(tid).map_or(0.0, |b| b.1);
        *by_name.entry(name.replace(' ', "_")).or_default() += cpu - was;
    }
    let mut v: Vec<(String, f64)> = by_name.into_iter().filter(|(_, c)| *c > 0.0).collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1));
    v.iter()
        .map(|(n, c)| format!("{n}/{:.2}", c / secs))
        .collect::<Vec<_>>()
        .join(";")
}

fn clock_ticks() -> f64 {
    static TCK: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TCK.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
            .unwrap_or(100.0)
    })
}

fn watermark_sum(c: &BaseConsumer, topics: &[String]) -> i64 {
    let mut sum = 0;
    for t in topics {
        let Ok(md) = c.fetch_metadata(Some(t), Duration::from_secs(5)) else {
            continue;
        };
        let Some(mt) = md.topics().first() else {
            continue;
        };
        // High watermarks, not high - low: every topic is new (starts at
        // offset 0), and the mock broker drops old segments as it goes.
        for p in mt.partitions() {
            if let Ok((_, hi)) = c.fetch_watermarks(t, p.id(), Duration::from_secs(5)) {
                sum += hi;
            }
        }
    }
    sum
}

fn watch(
    brokers: &str,
    topics: &[String],
    expect: i64,
    pid: u32,
    others: &[(String, u32)],
    timeout: Duration,
    interval: Duration,
) -> Result<(), Error> {
    // CPU seconds of the bridge and of each other process, read when the
    // first message shows up: the measured window's CPU is the difference.
    let sample = || -> Vec<Option<f64>> {
        std::iter::once(pid)
            .chain(others.iter().map(|o| o.1))
            .map(cpu_secs)
            .collect()
    };
    let mut first_cpu: Vec<Option<f64>> = Vec::new();
    let mut first_threads = HashMap::new();
    let mut first_machine = None;
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "bench-watch")
        .set("allow.auto.create.topics", "false")
        .create()?;
    let deadline = Instant::now() + timeout;
    let mut first: Option<(Instant, i64)> = None;
    let mut last_sum = 0;
    loop {
        let sum = watermark_sum(&c, topics);
        let at = Instant::now();
        if sum > 0 && first.is_none() {
            first = Some((at, sum));
            first_cpu = sample();
            first_threads = thread_cpu(pid);
            first_machine = machine_cpu();
        }
        if sum >= expect {
            let (t0, n0) = first.unwrap_or((at, sum));
            let secs = at.duration_since(t0).as_secs_f64();
            let rate = if secs > 0.0 {
                (sum - n0) as f64 / secs
            } else {
                f64::NAN
            };
            let hwm = vm_hwm_kb(pid)
                .ok_or_else(|| format!("bridge pid {pid} is gone: no VmHWM to read"))?;
            let cpu = cpu_secs(pid)
                .ok_or_else(|| format!("bridge pid {pid} is gone: no CPU time to read"))?;
            // Over the window: the bridge's and the others' CPU seconds.
            let mut window = String::new();
            let names = std::iter::once("bridge").chain(others.iter().map(|o| o.0.as_str()));
            for ((name, a), b) in names.zip(&first_cpu).zip(sample()) {
                if let (Some(a), Some(b)) = (a, b) {
                    window.push_str(&format!(" window_cpu_{name}={:.2}", b - a));
                }
            }
            if secs > 0.0 {
                let busy = threads_busy(&first_threads, &thread_cpu(pid), secs);
                window.push_str(&format!(" threads={busy}"));
                // Every process on the machine (etcd, this poller, ...), and
                // the time nobody here used: idle, and steal by the host.
                if let (Some(a), Some(b)) = (first_machine, machine_cpu()) {
                    window.push_str(&format!(
                        " machine_busy={:.2} machine_idle={:.2} machine_steal={:.2}",
                        (b.0 - a.0) / secs,
                        (b.1 - a.1) / secs,
                        (b.2 - a.2) / secs
                    ));
                }
            }
            println!(
                "RESULT messages={sum} first_seen={n0} secs={secs:.3} rate={rate:.0} vmhwm_kb={hwm} cpu_secs={cpu:.2}{window}"
            );
            if sum > expect {
                eprintln!("watch: {sum} messages, more than the {expect} expected");
            }
            return Ok(());
        }
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            return Err(
                format!("the bridge (pid {pid}) exited after {sum} of {expect} messages").into(),
            );
        }
        if at >= deadline {
            return Err(format!(
                "timed out after {timeout:?}: {sum} of {expect} messages (last poll before: {last_sum})"
            )
            .into());
        }
        last_sum = sum;
        std::thread::sleep(interval);
    }
}

// ---------------------------------------------------------------- latency

async fn latency_table(mysql: &str, db: &str, brokers: &str, topic: &str) -> Result<(), Error> {
    let mut conn = mysql_async::Conn::from_url(mysql).await?;
    conn.query_drop(format!("CREATE DATABASE IF NOT EXISTS `{db}`"))
        .await?;
    conn.query_drop(format!(
        "CREATE TABLE IF NOT EXISTS `{db}`.lat (id BIGINT PRIMARY KEY, ts_us BIGINT NOT NULL, pad VARCHAR(64))"
    ))
    .await?;
    conn.disconnect().await?;
    let cfg = KafkaConfig {
        brokers: brokers.into(),
        ..KafkaConfig::default()
    };
    Producer::connect(&cfg).await?.ensure_topic(topic).await?;
    Ok(())
}

fn percentile(sorted: &[i64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)] as f64
}

#[allow(clippy::too_many_arguments)]
async fn latency(
    mysql: &str,
    brokers: &str,
    db: &str,
    topic: &str,
    rate: u64,
    batch: u64,
    seconds: u64,
    warmup: u64,
) -> Result<(), Error> {
    let batch = batch.max(1);
    let cfg = KafkaConfig {
        brokers: brokers.into(),
        ..KafkaConfig::default()
    };
    let partitions = Producer::connect(&cfg)
        .await?
        .partition_count(topic)
        .await?
        .ok_or_else(|| format!("topic {topic} does not exist: run latency-table first"))?;
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("bench-latency-{}", now_us()))
        .set("enable.auto.commit", "false")
        // A consumer reading as it goes: do not let the broker hold a fetch long.
        .set("fetch.wait.max.ms", "10")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p as i32, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(i64, i64)>();
    let reader = tokio::spawn(async move {
        loop {
            let m = match consumer.recv().await {
                Ok(m) => m,
                Err(e) => return Err::<(), String>(format!("consumer: {e}")),
            };
            let got = now_us();
            let Some(v) = m.payload() else { continue };
            let j: serde_json::Value =
                serde_json::from_slice(v).map_err(|e| format!("not JSON: {e}"))?;
            let Some(ts) = j["after"]["ts_us"]
                .as_i64()
                .or_else(|| j["after"]["ts_us"].as_str().and_then(|s| s.parse().ok()))
            else {
                return Err(format!("message without after.ts_us: {j}"));
            };
            if tx.send((ts, got - ts)).is_err() {
                return Ok(());
            }
        }
    });

    let mut conn = mysql_async::Conn::from_url(mysql).await?;
    let interval = Duration::from_secs_f64(batch as f64 / rate.max(1) as f64);
    let mut tick = tokio::time::interval(interval);
    let start = Instant::now();
    let start_us = now_us();
    let warm_end_us = start_us + warmup as i64 * 1_000_000;
    let mut id = 0u64;
    let mut stamps_after_warmup = 0u64;
    while start.elapsed() < Duration::from_secs(seconds) {
        tick.tick().await;
        let ts = now_us();
        let mut sql = format!("INSERT INTO `{db}`.lat (id, ts_us, pad) VALUES ");
        for i in 0..batch {
            id += 1;
            if i > 0 {
                sql.push(',');
            }
            sql.push_str(&format!("({id},{ts},'payload-{id}')"));
        }
        conn.query_drop(sql).await?;
        if ts >= warm_end_us {
            stamps_after_warmup += batch;
        }
    }
    let wrote = id;
    let write_secs = start.elapsed().as_secs_f64();
    conn.disconnect().await?;

    // Collect until every row arrived (or 60 s pass).
    let mut measured = Vec::with_capacity(wrote as usize);
    let mut received = 0u64;
    let until = Instant::now() + Duration::from_secs(60);
    while received < wrote {
        let left = until.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Some((ts, l))) => {
                received += 1;
                // Rows stamped during the warm-up are left out.
                if ts >= warm_end_us {
                    measured.push(l);
                }
            }
            Ok(None) => {
                return Err(match reader.await {
                    Ok(Err(e)) => e.into(),
                    other => format!("the consumer stopped: {other:?}").into(),
                })
            }
            Err(_) => break,
        }
    }
    reader.abort();
    if received < wrote {
        return Err(
            format!("only {received} of {wrote} rows reached the consumer within 60 s").into(),
        );
    }
    if measured.len() as u64 != stamps_after_warmup {
        return Err(format!(
            "{} rows stamped after the warm-up were written, {} received",
            stamps_after_warmup,
            measured.len()
        )
        .into());
    }
    measured.sort_unstable();
    let ms = |us: f64| us / 1000.0;
    println!(
        "RESULT rows={wrote} rate={:.0} measured={} p50_ms={:.1} p99_ms={:.1} max_ms={:.1}",
        wrote as f64 / write_secs,
        measured.len(),
        ms(percentile(&measured, 0.50)),
        ms(percentile(&measured, 0.99)),
        ms(percentile(&measured, 1.0)),
    );
    Ok(())
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Limits {
            files,
            brokers,
            runs,
            fixed_topics,
            broker_pid,
        } => limits(&files, &brokers, runs, fixed_topics.as_deref(), broker_pid).await,
        Cmd::Plain {
            files,
            brokers,
            tag,
            fixed_topics,
            broker_pid,
        } => plain(&files, &brokers, &tag, fixed_topics.as_deref(), broker_pid).await,
        Cmd::Watch {
            brokers,
            topic,
            expect,
            pid,
            cpu_pid,
            timeout_secs,
            interval_ms,
        } => watch(
            &brokers,
            &topic,
            expect,
            pid,
            &cpu_pid,
            Duration::from_secs(timeout_secs),
            Duration::from_millis(interval_ms),
        ),
        Cmd::Latency {
            mysql,
            brokers,
            db,
            topic,
            rate,
            batch,
            seconds,
            warmup_secs,
        } => {
            latency(
                &mysql,
                &brokers,
                &db,
                &topic,
                rate,
                batch,
                seconds,
                warmup_secs,
            )
            .await
        }
        Cmd::LatencyTable {
            mysql,
            db,
            brokers,
            topic,
        } => latency_table(&mysql, &db, &brokers, &topic).await,
    };
    if let Err(e) = r {
        eprintln!("bench_tool: {e}");
        std::process::exit(1);
    }
}
