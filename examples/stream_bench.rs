//! Live streaming speed: rows/s from a server through the source's dump
//! reader and decoder (checksums verified), as the pipeline would see them,
//! with our own dump reader and with mysql_async's (`mysql.dump_reader`).
//!
//! `cargo run --release --example stream_bench -- mysql://bridge:bridge@127.0.0.1:3306 FILE:POS ROWS [RUNS]`
//! streams from FILE:POS until ROWS row events arrived, RUNS times with each
//! reader in turn, and prints each run's rate and CPU (the whole process),
//! then the median CPU of each reader and their ratio.

use std::time::Instant;

use binlog_bridge::config::{DumpReader, MysqlConfig};
use binlog_bridge::event::{EventKind, Position};
use binlog_bridge::source::{BinlogSource, SourceOptions, StartFrom};

/// CPU-seconds this process has used (every thread, user + system).
fn cpu_secs() -> f64 {
    // SAFETY: getrusage writes into the zeroed struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return f64::NAN;
    }
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(ru.ru_utime) + t(ru.ru_stime)
}

/// Stream `want` rows from `pos` with `reader`: (seconds, CPU-seconds).
async fn stream(
    url: &str,
    pos: &Position,
    want: u64,
    reader: DumpReader,
) -> Result<(f64, f64), String> {
    let cfg = MysqlConfig {
        url: url.into(),
        password: None,
        password_file: None,
        server_id: 4999,
        start: "earliest".into(),
        heartbeat_secs: 1,
        read_timeout_secs: 10,
        include: vec![],
        exclude: vec![],
        exclude_columns: vec![],
        tls: Default::default(),
        tls_ca_file: None,
        tls_cert_file: None,
        tls_key_file: None,
        dump_reader: reader,
    };
    let t = Instant::now();
    let c = cpu_secs();
    let mut src = BinlogSource::start(
        &cfg,
        SourceOptions::default(),
        StartFrom::Position(pos.clone()),
    )
    .await
    .map_err(|e| e.to_string())?;
    let mut rows = 0u64;
    while rows < want {
        let ev = src
            .next_event()
            .await
            .map_err(|e| format!("after {rows} rows: {e}"))?;
        if matches!(ev.kind, EventKind::Row(_)) {
            rows += 1;
        }
    }
    Ok((t.elapsed().as_secs_f64(), cpu_secs() - c))
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 && args.len() != 5 {
        eprintln!("usage: stream_bench MYSQL_URL FILE:POS ROWS [RUNS]");
        std::process::exit(2);
    }
    let pos: Position = match args[2].parse() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let want: u64 = args[3].parse().unwrap_or(1_000_000);
    let runs: usize = args.get(4).and_then(|r| r.parse().ok()).unwrap_or(1);
    let mut cpu = [Vec::new(), Vec::new()];
    let readers = [
        (DumpReader::Auto, "own"),
        (DumpReader::Driver, "mysql_async"),
    ];
    // Alternated, so a slow phase of the machine hits both.
    for run in 0..runs {
        for (i, (reader, name)) in readers.iter().enumerate() {
            match stream(&args[1], &pos, want, *reader).await {
                Ok((s, c)) => {
                    println!(
                        "run {run}, {name} reader: {want} rows in {s:.3} s: {:.0} rows/s, {:.2} CPU-s per 1M rows",
                        want as f64 / s,
                        c * 1e6 / want as f64
                    );
                    cpu[i].push(c * 1e6 / want as f64);
                }
                Err(e) => {
                    eprintln!("{name} reader: {e}");
                    std::process::exit(1);
                }
            }
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let own = median(&mut cpu[0]);
    let driver = median(&mut cpu[1]);
    println!(
        "median CPU-s per 1M rows over {runs} run(s): own reader {own:.2}, mysql_async {driver:.2} (own / mysql_async {:.2}x)",
        own / driver
    );
}
