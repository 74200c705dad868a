//! Sink produce throughput against a plain rdkafka producer.
//!
//! Sends the same rows twice to the same broker: once through [`KafkaSink`]
//! (routing, encoding, headers, in-order ack tracking) and once as
//! pre-encoded bytes (same key, value and headers) through a bare
//! `FutureProducer` with the same producer settings and the same in-flight
//! window, alternating, `BENCH_ROUNDS` (3) times; prints both rates per round
//! and the ratio (target >= 0.8). Run against the dev broker:
//!
//! ```text
//! cargo run --release --example sink_bench -- [ROWS] [FORMAT]
//! ```
//! (`BB_TEST_BROKERS` overrides 127.0.0.1:9092.)

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use binlog_bridge::config::{Format, KafkaConfig};
use binlog_bridge::event::{
    ChangeEvent, Column, ColumnKind, Date, DateTime, EventKind, Op, Position, RowChange,
    TableSchema, TxnInfo, Value,
};
use binlog_bridge::sink::format::{encode_key, encode_row, EncodeContext};
use binlog_bridge::sink::producer::{producer_config, Producer};
use binlog_bridge::sink::KafkaSink;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

fn table() -> Arc<TableSchema> {
    let col = |name: &str, kind, sql: &str| Column {
        name: name.into(),
        kind,
        sql_type: sql.into(),
        unsigned: false,
        nullable: true,
        precision: None,
        scale: None,
    };
    Arc::new(TableSchema {
        database: "bench".into(),
        table: "orders".into(),
        columns: vec![
            col("id", ColumnKind::BigInt, "bigint(20)"),
            col("customer_id", ColumnKind::Int, "int(11)"),
            col("status", ColumnKind::VarChar, "varchar(16)"),
            col("amount", ColumnKind::Decimal, "decimal(12,2)"),
            col("note", ColumnKind::VarChar, "varchar(255)"),
            col("created_at", ColumnKind::DateTime, "datetime"),
            col("qty", ColumnKind::SmallInt, "smallint(6)"),
            col("flags", ColumnKind::TinyInt, "tinyint(4)"),
        ],
        primary_key: vec![0],
    })
}

fn events(n: u64) -> Vec<ChangeEvent> {
    let t = table();
    let mut out = Vec::with_capacity(n as usize + n as usize / 10);
    let mut txn = Arc::new(TxnInfo::default());
    for i in 0..n {
        if i % 10 == 0 {
            txn = Arc::new(TxnInfo {
                gtid: Some(format!("0-1-{i}")),
                ts_ms: 1_700_000_000_000 + i,
                server_id: 1,
                xid: Some(i),
            });
        }
        let row = vec![
            Value::Int(i as i64),
            Value::Int((i % 5000) as i64),
            Value::String("paid".into()),
            Value::Decimal(format!("{}.{:02}", i % 1000, i % 100).into()),
            Value::String("a customer note of moderate length, for realism".into()),
            Value::DateTime(DateTime {
                date: Date {
                    year: 2024,
                    month: 3,
                    day: 1,
                },
                hour: 12,
                minute: 0,
                second: (i % 60) as u8,
                micros: 0,
                fsp: 0,
            }),
            Value::Int(3),
            Value::Int(1),
        ];
        let base = 4 + (i / 10) * 10_000;
        out.push(ChangeEvent {
            kind: EventKind::Row(RowChange {
                table: t.clone(),
                op: Op::Insert,
                before: None,
                after: Some(row),
            }),
            txn: txn.clone(),
            position: Position {
                file: "binlog.000001".into(),
                offset: base,
                row: i % 10,
                gtid: None,
            },
        });
        if i % 10 == 9 {
            out.push(ChangeEvent {
                kind: EventKind::Commit,
                txn: txn.clone(),
                position: Position::new("binlog.000001", base + 10_000),
            });
        }
    }
    out
}

fn stamp() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

async fn run_sink(
    cfg: &KafkaConfig,
    evs: &[ChangeEvent],
) -> Result<f64, Box<dyn std::error::Error>> {
    let mut sink = KafkaSink::new(cfg, "bench", 1).await?;
    // Create the topic before timing, as the plain run does.
    let mut warm = Producer::connect(cfg).await?;
    warm.ensure_topic(
        &cfg.topic
            .replace("{db}", "bench")
            .replace("{table}", "orders"),
    )
    .await?;
    let start = Instant::now();
    for ev in evs {
        sink.send(ev).await?;
    }
    sink.flush(Duration::from_secs(300)).await?;
    Ok(start.elapsed().as_secs_f64())
}

async fn run_plain(
    cfg: &KafkaConfig,
    msgs: &[(Vec<u8>, Vec<u8>, String)],
) -> Result<f64, Box<dyn std::error::Error>> {
    let topic = cfg
        .topic
        .replace("{db}", "bench")
        .replace("{table}", "orders");
    let mut admin = Producer::connect(cfg).await?;
    admin.ensure_topic(&topic).await?;
    let producer: FutureProducer = producer_config(cfg)?.create()?;
    let window = cfg.max_in_flight as usize;
    let mut pending: VecDeque<rdkafka::producer::DeliveryFuture> = VecDeque::with_capacity(window);
    let start = Instant::now();
    for (k, v, pos) in msgs {
        while pending.len() >= window {
            if let Some(f) = pending.pop_front() {
                f.await?.map_err(|(e, _)| e)?;
            }
        }
        // The same headers the sink writes, so both runs put the same bytes on the wire.
        let headers = OwnedHeaders::new_with_capacity(3)
            .insert(Header {
                key: "bb.position",
                value: Some(&pos[..]),
            })
            .insert(Header {
                key: "bb.pipeline",
                value: Some("bench"),
            })
            .insert(Header {
                key: "bb.epoch",
                value: Some("1"),
            });
        let f = producer
            .send_result(FutureRecord::to(&topic).key(k).payload(v).headers(headers))
            .map_err(|(e, _)| e)?;
        pending.push_back(f);
    }
    for f in pending {
        f.await?.map_err(|(e, _)| e)?;
    }
    Ok(start.elapsed().as_secs_f64())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let rows: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let format = match args.get(2).map(String::as_str) {
        Some("canal") => Format::Canal,
        Some("maxwell") => Format::Maxwell,
        _ => Format::Debezium,
    };
    let brokers = std::env::var("BB_TEST_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let evs = events(rows);
    // The same messages, pre-encoded, for the plain producer.
    let ctx = EncodeContext {
        pipeline: "bench",
        now_ms: 0,
        last_in_txn: false,
        schema_include: false,
    };
    let msgs: Vec<(Vec<u8>, Vec<u8>, String)> = evs
        .iter()
        .filter_map(|ev| match &ev.kind {
            EventKind::Row(r) => {
                let v = encode_row(format, r, &ev.txn, &ev.position, &ctx).ok()?;
                let k = encode_key(format, &r.table, r.after.as_deref()?, &r.table.primary_key);
                Some((k, v, ev.position.to_string()))
            }
            _ => None,
        })
        .collect();
    // CPU cost of encoding alone (what the sink adds per message besides Kafka).
    let start = Instant::now();
    let mut encoded = 0usize;
    for ev in &evs {
        if let EventKind::Row(r) = &ev.kind {
            let v = encode_row(format, r, &ev.txn, &ev.position, &ctx)?;
            let k = encode_key(
                format,
                &r.table,
                r.after.as_deref().unwrap_or(&[]),
                &r.table.primary_key,
            );
            encoded += v.len() + k.len();
        }
    }
    let enc = start.elapsed().as_secs_f64();
    println!(
        "encode only: {:.0} msg/s ({:.0} MB/s)",
        rows as f64 / enc,
        encoded as f64 / enc / 1e6
    );
    let bytes: usize = msgs.iter().map(|(k, v, _)| k.len() + v.len()).sum();
    println!(
        "{rows} rows, {format:?}, {:.0} bytes/message, broker {brokers}",
        bytes as f64 / msgs.len() as f64
    );
    let mut results = vec![];
    // Alternate to even out broker warm-up and background load.
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    for round in 0..rounds {
        let cfg = |tag: &str| KafkaConfig {
            brokers: brokers.clone(),
            topic: format!("bench-{tag}-{round}-{}.{{db}}.{{table}}", stamp()),
            schema_topic: format!("bench-schema-{}", stamp()),
            format,
            ..KafkaConfig::default()
        };
        let plain = run_plain(&cfg("plain"), &msgs).await?;
        let sink = run_sink(&cfg("sink"), &evs).await?;
        let (p, s) = (rows as f64 / plain, rows as f64 / sink);
        println!(
            "round {round}: plain {p:>9.0} msg/s ({plain:.2} s)   sink {s:>9.0} msg/s ({sink:.2} s)   ratio {:.2}",
            s / p
        );
        results.push((p, s));
    }
    let mut ratios: Vec<f64> = results.iter().map(|(p, s)| s / p).collect();
    ratios.sort_by(f64::total_cmp);
    let (p, s) = results
        .iter()
        .fold((0.0, 0.0), |(a, b), (p, s)| (a + p, b + s));
    println!(
        "ratio sink/plain: median {:.2}, of mean rates {:.2} (target >= 0.8)",
        ratios[ratios.len() / 2],
        s / p
    );
    Ok(())
}
