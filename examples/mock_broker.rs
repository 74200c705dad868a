//! A Kafka-protocol broker that is never the bottleneck, for benchmarks.
//!
//! librdkafka's mock cluster (`rd_kafka_mock_cluster_new`) keeps partitions
//! in memory and listens on real 127.0.0.1 ports that other processes (the
//! bridge, the peer's confluent-kafka, the bench tool) can use. It supports
//! idempotent produce, fetch, list offsets and metadata, but not the Admin
//! API's CreateTopics: topics are created here, with their partition count,
//! or automatically by the first metadata request that names them (with the
//! mock's default of 4 partitions). Each partition keeps only its last
//! ~100000 messages / 5 MB (librdkafka's mock log limits), so memory stays
//! bounded on long runs. It is a test broker: it shows the client-side
//! limits of a producer, not what a real on-disk broker acknowledges.
//!
//! ```text
//! cargo run --release --example mock_broker -- [--brokers N] [--topic NAME:PARTITIONS]...
//! ```
//!
//! Prints `BOOTSTRAP host:port,...` on stdout once the topics exist, then
//! runs until killed (SIGTERM/SIGINT end it at once; the data is lost).

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use rdkafka::mocking::MockCluster;

#[derive(Parser)]
#[command(about = "Run librdkafka's in-memory mock Kafka cluster for benchmarks")]
struct Args {
    /// Number of mock brokers.
    #[arg(long, default_value_t = 1)]
    brokers: i32,
    /// A topic to create, as NAME:PARTITIONS (repeat for more).
    #[arg(long = "topic", value_name = "NAME:PARTITIONS")]
    topics: Vec<String>,
}

fn parse_topic(spec: &str) -> Result<(&str, i32), String> {
    let (name, parts) = spec
        .rsplit_once(':')
        .ok_or_else(|| format!("--topic {spec:?}: expected NAME:PARTITIONS, e.g. orders:3"))?;
    let parts: i32 =
        parts.parse().ok().filter(|p| *p >= 1).ok_or_else(|| {
            format!("--topic {spec:?}: the partition count must be a number >= 1")
        })?;
    if name.is_empty() {
        return Err(format!("--topic {spec:?}: the topic name is empty"));
    }
    Ok((name, parts))
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.brokers < 1 {
        eprintln!("--brokers must be 1 or more");
        return ExitCode::from(2);
    }
    let topics = match args
        .topics
        .iter()
        .map(|t| parse_topic(t))
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let cluster = match MockCluster::new(args.brokers) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cannot start the mock cluster: {e}");
            return ExitCode::FAILURE;
        }
    };
    let replication = args.brokers.min(3);
    for (name, parts) in topics {
        if let Err(e) = cluster.create_topic(name, parts, replication) {
            eprintln!("cannot create topic {name} ({parts} partitions): {e}");
            return ExitCode::FAILURE;
        }
    }
    let mut out = std::io::stdout();
    if writeln!(out, "BOOTSTRAP {}", cluster.bootstrap_servers())
        .and_then(|_| out.flush())
        .is_err()
    {
        return ExitCode::FAILURE;
    }
    // The cluster runs on librdkafka's own threads; this one only keeps it alive.
    loop {
        std::thread::park();
    }
}
