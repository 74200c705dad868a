//! The other half of the demo and the chaos test: reads every topic of the
//! writer's database from the beginning and checks the writer's log against
//! what Kafka holds.
//!
//! It counts, for the changes the writer knows committed: lost (never
//! delivered), duplicated (delivered more than once), out of order (a row's
//! changes delivered in another order than committed), and phantom (delivered
//! but never committed). Changes whose commit outcome was unknown (`?` lines)
//! may appear once or not at all. Takeover times are measured from the
//! messages' epoch headers and timestamps: last message of one leader epoch to
//! the first of the next. Exits 1 on any lost, duplicated, out-of-order or
//! phantom change, and 3 when Kafka holds more than the broker would serve
//! (reads stalled before the end of some partition): no verdict. Reads Debezium-format values (`kafka.format = "debezium"`).
//!
//!     cargo run --example cdc_verify -- --brokers 127.0.0.1:9092 --db chaos --log /tmp/chaos.log

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

#[derive(Debug, Parser)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:9092")]
    brokers: String,
    /// The writer's database: topics named `<db>.*` are read.
    #[arg(long, default_value = "chaos")]
    db: String,
    /// The writer's log.
    #[arg(long)]
    log: PathBuf,
    /// Give up waiting for missing changes after this many seconds.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
    /// Consumer isolation level: read_committed (what Flink jobs should use) or read_uncommitted.
    #[arg(long, default_value = "read_committed")]
    isolation: String,
    /// A partition that yields nothing for this many seconds while Kafka
    /// holds more means the broker stopped serving reads (exit 3).
    #[arg(long, default_value_t = 180)]
    stall_secs: u64,
    /// Header carrying the leader epoch.
    #[arg(long, default_value = "bb.epoch")]
    epoch_header: String,
    /// The fault injector's rounds, one `ROUND FAULT UNIX_MS` line each (when
    /// the fault was injected): prints takeover times by fault type.
    #[arg(long)]
    rounds: Option<PathBuf>,
}

/// (op, table, seq): one change, unique across the run.
type ChangeId = (String, String, u64);

#[derive(Default)]
struct Expected {
    certain: Vec<(ChangeId, u64)>,
    uncertain: HashSet<ChangeId>,
}

fn read_log(path: &PathBuf) -> std::io::Result<Expected> {
    let text = std::fs::read_to_string(path)?;
    let mut e = Expected::default();
    for line in text.lines() {
        let mut parts: Vec<&str> = line.split_whitespace().collect();
        let unsure = parts.first() == Some(&"?");
        if unsure {
            parts.remove(0);
        }
        if let [op, table, id, seq] = parts[..] {
            let (Ok(id), Ok(seq)) = (id.parse::<u64>(), seq.parse::<u64>()) else {
                continue;
            };
            let cid = (op.to_string(), table.to_string(), seq);
            if unsure {
                e.uncertain.insert(cid);
            } else {
                e.certain.push((cid, id));
            }
        }
    }
    Ok(e)
}

struct Seen {
    change: ChangeId,
    id: u64,
    epoch: Option<i64>,
    ts_ms: i64,
    /// Where it was read and the change's `bb.position`, to show duplicates.
    at: String,
}

fn parse(m: &rdkafka::message::BorrowedMessage<'_>, epoch_header: &str) -> Option<Seen> {
    let v: serde_json::Value = serde_json::from_slice(m.payload()?).ok()?;
    let v = if v.get("payload").is_some() {
        &v["payload"]
    } else {
        &v
    };
    let op = v["op"].as_str()?.to_string();
    let image = if op == "d" { &v["before"] } else { &v["after"] };
    let seq = image["seq"].as_u64()?;
    let id = image["id"].as_u64()?;
    let table = v["source"]["table"].as_str()?.to_string();
    let epoch = m.headers().and_then(|h| {
        h.iter()
            .find(|x| x.key == epoch_header)
            .and_then(|x| std::str::from_utf8(x.value?).ok()?.parse().ok())
    });
    let position = m.headers().and_then(|h| {
        h.iter()
            .find(|x| x.key == "bb.position")
            .and_then(|x| std::str::from_utf8(x.value?).ok().map(str::to_string))
    });
    Some(Seen {
        change: (op, table, seq),
        id,
        epoch,
        ts_ms: m.timestamp().to_millis().unwrap_or(0),
        at: format!(
            "{}/{}@{} position {} epoch {:?} ts {}",
            m.topic(),
            m.partition(),
            m.offset(),
            position.unwrap_or_default(),
            epoch,
            m.timestamp().to_millis().unwrap_or(0)
        ),
    })
}

/// Exit 3: the broker did not serve the reads (not a verdict on the bridge).
fn stalled(why: &str) -> ! {
    eprintln!("verify: the broker stopped serving reads: {why}");
    std::process::exit(3);
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Takeover time of each fault round, from the messages themselves: the first
/// message of the first leader epoch that began after the fault, minus the
/// last message of the epoch before it (the old leader's last write). Rounds
/// whose fault did not change the leader (or changed it only after the next
/// round began) count as "no change".
fn print_takeovers(rounds: &str, spans: &[(i64, i64)]) {
    let mut by_fault: BTreeMap<String, (Vec<i64>, usize)> = BTreeMap::new();
    let parsed: Vec<(String, i64)> = rounds
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let _round = it.next()?;
            let fault = it.next()?.to_string();
            let at: i64 = it.next()?.parse().ok()?;
            Some((fault, at))
        })
        .collect();
    for (i, (fault, at)) in parsed.iter().enumerate() {
        let next_round = parsed.get(i + 1).map(|r| r.1).unwrap_or(i64::MAX);
        let entry = by_fault.entry(fault.clone()).or_default();
        let new = spans
            .iter()
            .position(|s| s.0 > *at)
            .filter(|&j| j > 0 && spans[j].0 < next_round);
        match new {
            Some(j) => entry.0.push(spans[j].0 - spans[j - 1].1),
            None => entry.1 += 1,
        }
    }
    println!();
    println!("| fault | rounds | leader changed | takeover ms min/median/p99/max (last message of old leader to first of new) |");
    println!("| --- | --- | --- | --- |");
    for (fault, (mut t, unchanged)) in by_fault {
        t.sort_unstable();
        let stats = if t.is_empty() {
            "-".to_string()
        } else {
            format!(
                "{}/{}/{}/{}",
                t[0],
                percentile(&t, 0.5),
                percentile(&t, 0.99),
                t[t.len() - 1]
            )
        };
        println!(
            "| {fault} | {} | {} | {stats} |",
            t.len() + unchanged,
            t.len()
        );
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a = Args::parse();
    let expected = read_log(&a.log)?;
    let certain: HashSet<&ChangeId> = expected.certain.iter().map(|(c, _)| c).collect();

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &a.brokers)
        .set("group.id", "cdc-verify")
        .set("enable.auto.commit", "false")
        .set("isolation.level", &a.isolation)
        // Large fetches: the test broker (tansu on sqlite) spends seconds per
        // fetch request whatever its size, so fewer, larger fetches finish
        // sooner; and it stalls on a batch that does not fit a fetch.
        .set("max.partition.fetch.bytes", "16777216")
        .set("fetch.max.bytes", "16777216")
        .create()?;
    let prefix = format!("{}.", a.db);
    let md = match consumer.fetch_metadata(None, Duration::from_secs(10)) {
        Ok(md) => md,
        Err(e) => stalled(&format!("cannot read the topic list: {e}")),
    };
    let mut tpl = TopicPartitionList::new();
    // What Kafka holds now (the writer has finished): reading up to these
    // offsets means everything was read.
    let mut ends: HashMap<(String, i32), i64> = HashMap::new();
    for t in md.topics() {
        if t.name().starts_with(&prefix) {
            for p in t.partitions() {
                tpl.add_partition_offset(t.name(), p.id(), Offset::Beginning)?;
                match consumer.fetch_watermarks(t.name(), p.id(), Duration::from_secs(10)) {
                    Ok((_, high)) => {
                        ends.insert((t.name().to_string(), p.id()), high);
                    }
                    Err(e) => stalled(&format!(
                        "cannot read the end of {}/{}: {e}",
                        t.name(),
                        p.id()
                    )),
                }
            }
        }
    }
    let mut next: HashMap<(String, i32), i64> = HashMap::new();
    if tpl.count() == 0 {
        eprintln!("verify: no topic named {prefix}* on {}", a.brokers);
    }
    // Read one partition at a time from where the last pass stopped up to its
    // current end, in passes, until every committed change was seen and a
    // pass finds nothing new (the leader may still be catching up when this
    // starts). One partition per fetch keeps the test broker's work per
    // request small.
    let mut parts: Vec<(String, i32)> = ends.keys().cloned().collect();
    parts.sort();
    drop(tpl);
    let mut seen: Vec<Seen> = Vec::new();
    let mut found: HashSet<ChangeId> = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(a.timeout);
    let mut unreadable = 0u64;
    loop {
        let mut progressed = false;
        for (t, p) in &parts {
            let high = match consumer.fetch_watermarks(t, *p, Duration::from_secs(10)) {
                Ok((_, high)) => high,
                Err(e) => stalled(&format!("cannot read the end of {t}/{p}: {e}")),
            };
            let key = (t.clone(), *p);
            let from = next.get(&key).copied().unwrap_or(0);
            if from >= high {
                continue;
            }
            let mut one = TopicPartitionList::new();
            one.add_partition_offset(t, *p, Offset::Offset(from))?;
            consumer.assign(&one)?;
            let mut last_progress = Instant::now();
            while next.get(&key).copied().unwrap_or(0) < high {
                match consumer.poll(Duration::from_millis(200)) {
                    Some(Ok(m)) if m.topic() == t && m.partition() == *p => {
                        next.insert(key.clone(), m.offset() + 1);
                        last_progress = Instant::now();
                        progressed = true;
                        match parse(&m, &a.epoch_header) {
                            Some(s) => {
                                found.insert(s.change.clone());
                                seen.push(s);
                            }
                            None => unreadable += 1,
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => eprintln!("verify: {e}"),
                    None => {}
                }
                if last_progress.elapsed() > Duration::from_secs(a.stall_secs) {
                    stalled(&format!(
                        "read {} messages; {t}/{p} stuck at offset {} of {high}",
                        seen.len(),
                        next.get(&key).copied().unwrap_or(0)
                    ));
                }
            }
        }
        let complete = certain.iter().all(|c| found.contains(*c));
        if complete && !progressed {
            break;
        }
        if !progressed {
            if Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    // Counts.
    let mut count: HashMap<&ChangeId, u64> = HashMap::new();
    for s in &seen {
        *count.entry(&s.change).or_insert(0) += 1;
    }
    let duplicated: u64 = count.values().filter(|n| **n > 1).map(|n| n - 1).sum();
    let lost: Vec<&ChangeId> = certain
        .iter()
        .filter(|c| !count.contains_key(**c))
        .copied()
        .collect();
    let phantom = count
        .keys()
        .filter(|c| !certain.contains(**c) && !expected.uncertain.contains(**c))
        .count();

    // Per-row order: the delivered order of a row's changes (first delivery of
    // each) must be the committed order.
    let mut committed: HashMap<(String, u64), Vec<&ChangeId>> = HashMap::new();
    for (c, id) in &expected.certain {
        committed.entry((c.1.clone(), *id)).or_default().push(c);
    }
    let mut delivered: HashMap<(String, u64), Vec<&ChangeId>> = HashMap::new();
    let mut first: HashSet<&ChangeId> = HashSet::new();
    for s in &seen {
        if certain.contains(&s.change) && first.insert(&s.change) {
            delivered
                .entry((s.change.1.clone(), s.id))
                .or_default()
                .push(&s.change);
        }
    }
    let out_of_order = delivered
        .iter()
        .filter(|(k, got)| {
            let want: Vec<&&ChangeId> = committed
                .get(*k)
                .map(|v| v.iter().filter(|c| found.contains(**c)).collect())
                .unwrap_or_default();
            let got: Vec<&&ChangeId> = got.iter().collect();
            want != got
        })
        .count();

    // Takeovers: epochs in order of their first message.
    let mut epochs: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
    for s in &seen {
        if let Some(e) = s.epoch {
            let r = epochs.entry(e).or_insert((s.ts_ms, s.ts_ms));
            r.0 = r.0.min(s.ts_ms);
            r.1 = r.1.max(s.ts_ms);
        }
    }
    let spans: Vec<(i64, i64)> = epochs.values().copied().collect();
    let mut gaps: Vec<i64> = spans.windows(2).map(|w| w[1].0 - w[0].1).collect();
    gaps.sort_unstable();

    println!("| metric | value |");
    println!("| --- | --- |");
    println!("| changes committed (certain) | {} |", certain.len());
    println!(
        "| changes with unknown outcome | {} |",
        expected.uncertain.len()
    );
    println!("| messages read | {} |", seen.len());
    println!("| unreadable messages | {unreadable} |");
    println!("| lost | {} |", lost.len());
    println!("| duplicated | {duplicated} |");
    println!("| out of order (rows) | {out_of_order} |");
    println!("| phantom | {phantom} |");
    println!("| leader epochs seen | {} |", epochs.len());
    println!(
        "| takeover gap ms min/median/p99/max | {}/{}/{}/{} |",
        gaps.first().copied().unwrap_or(0),
        percentile(&gaps, 0.5),
        percentile(&gaps, 0.99),
        gaps.last().copied().unwrap_or(0)
    );
    if let Some(path) = &a.rounds {
        print_takeovers(&std::fs::read_to_string(path)?, &spans);
    }
    for c in lost.iter().take(10) {
        println!("lost: {c:?}");
    }
    let mut shown = 0;
    for (c, n) in &count {
        if *n > 1 && shown < 10 {
            shown += 1;
            println!("duplicated: {c:?}");
            for s in seen.iter().filter(|s| &s.change == *c) {
                println!("  read at {}", s.at);
            }
        }
    }
    if !lost.is_empty() || duplicated > 0 || out_of_order > 0 || phantom > 0 {
        std::process::exit(1);
    }
    Ok(())
}
