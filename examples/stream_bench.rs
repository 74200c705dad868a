//! Live streaming speed: rows/s from a server through mysql_async and the
//! source's decoder (checksums verified), as the pipeline would see them.
//!
//! `cargo run --release --example stream_bench -- mysql://bridge:bridge@127.0.0.1:3306 FILE:POS ROWS`
//! streams from FILE:POS until ROWS row events arrived and prints the rate.

use std::time::Instant;

use binlog_bridge::config::MysqlConfig;
use binlog_bridge::event::{EventKind, Position};
use binlog_bridge::source::{BinlogSource, SourceOptions, StartFrom};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        eprintln!("usage: stream_bench MYSQL_URL FILE:POS ROWS");
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
    let cfg = MysqlConfig {
        url: args[1].clone(),
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
    };
    let t = Instant::now();
    let mut src =
        match BinlogSource::start(&cfg, SourceOptions::default(), StartFrom::Position(pos)).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(1);
            }
        };
    let mut rows = 0u64;
    while rows < want {
        match src.next_event().await {
            Ok(ev) => {
                if matches!(ev.kind, EventKind::Row(_)) {
                    rows += 1;
                }
            }
            Err(e) => {
                eprintln!("after {rows} rows: {e}");
                std::process::exit(1);
            }
        }
    }
    let s = t.elapsed().as_secs_f64();
    println!(
        "streamed {rows} rows in {s:.3} s: {:.0} rows/s",
        rows as f64 / s
    );
}
