//! Snapshot read speed next to a plain `SELECT *` of the same table.
//!
//! Reads one table twice on the same server, in the same process: once with
//! a plain `SELECT * FROM db.table` (text protocol, every row fetched and
//! dropped), once the way the initial snapshot does (consistent-snapshot
//! transaction, primary-key chunks, values typed exactly, each row encoded
//! as a Debezium message). Kafka is left out: it measures the bridge, not
//! the broker. Prints rows/s for both and the ratio (snapshot / plain).
//!
//! `cargo run --release --example snapshot_bench -- --url mysql://root@127.0.0.1:3306 --table bench.t [--chunk 1024]`
//! (make a table: `CREATE TABLE bench.t (id INT PRIMARY KEY, v INT, s VARCHAR(32), d DATETIME(3));
//! INSERT INTO bench.t SELECT seq, seq, CONCAT('row-', seq), NOW(3) FROM bench.seq_1_to_1000000;`)

use std::sync::Arc;
use std::time::Instant;

use clap::Parser;
use futures_util::StreamExt;
use mysql_async::prelude::Queryable;

use binlog_bridge::config::{Format, MysqlConfig};
use binlog_bridge::event::{Op, Position, RowChange, TxnInfo};
use binlog_bridge::sink::format::{encode_row, EncodeContext};
use binlog_bridge::snapshot::key_of;
use binlog_bridge::snapshot::reader::SnapshotReader;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "mysql://root@127.0.0.1:3306")]
    url: String,
    /// `db.table`, with an integer primary key.
    #[arg(long)]
    table: String,
    #[arg(long, default_value_t = 1024)]
    chunk: u32,
}

async fn plain(url: &str, table: &str) -> Result<(u64, f64), String> {
    let mut c = mysql_async::Conn::from_url(url)
        .await
        .map_err(|e| e.to_string())?;
    let start = Instant::now();
    let mut rows = 0u64;
    let mut result = c
        .query_iter(format!("SELECT * FROM {table}"))
        .await
        .map_err(|e| e.to_string())?;
    let mut stream = result
        .stream::<mysql_async::Row>()
        .await
        .map_err(|e| e.to_string())?
        .ok_or("no result set")?;
    while let Some(r) = stream.next().await {
        r.map_err(|e| e.to_string())?;
        rows += 1;
    }
    Ok((rows, start.elapsed().as_secs_f64()))
}

async fn snapshot(url: &str, table: &str, chunk: u32) -> Result<(u64, f64, u64), String> {
    let cfg: MysqlConfig =
        toml::from_str(&format!("url = {url:?}\nserver_id = 1\n")).map_err(|e| e.to_string())?;
    let start = Instant::now();
    let mut r = SnapshotReader::open(&cfg)
        .await
        .map_err(|e| e.to_string())?;
    let info = r.table(table).await.map_err(|e| e.to_string())?;
    let txn = TxnInfo::default();
    let pos = Position::new("binlog.000001", 4);
    let ctx = EncodeContext {
        pipeline: "bench",
        now_ms: 0,
        last_in_txn: true,
        schema_include: false,
    };
    let (mut rows, mut bytes) = (0u64, 0u64);
    let mut after = None;
    loop {
        let chunk_rows = r
            .chunk(&info, after.as_ref(), chunk)
            .await
            .map_err(|e| e.to_string())?;
        if chunk_rows.is_empty() {
            break;
        }
        for values in chunk_rows {
            let row = RowChange {
                table: Arc::clone(&info.schema),
                op: Op::Read,
                before: None,
                after: Some(values),
            };
            bytes += encode_row(Format::Debezium, &row, &txn, &pos, &ctx)
                .map_err(|e| e.to_string())?
                .len() as u64;
            after = key_of(&row);
            rows += 1;
        }
    }
    Ok((rows, start.elapsed().as_secs_f64(), bytes))
}

#[tokio::main]
async fn main() {
    let a = Args::parse();
    let run = async {
        // Plain first, snapshot second, plain again: both see a warm buffer pool.
        let _ = plain(&a.url, &a.table).await?;
        let (s_rows, s_secs, bytes) = snapshot(&a.url, &a.table, a.chunk).await?;
        let (p_rows, p_secs) = plain(&a.url, &a.table).await?;
        Ok::<_, String>((p_rows, p_secs, s_rows, s_secs, bytes))
    };
    match run.await {
        Ok((p_rows, p_secs, s_rows, s_secs, bytes)) => {
            let p = p_rows as f64 / p_secs;
            let s = s_rows as f64 / s_secs;
            println!("plain SELECT *:             {p_rows} rows in {p_secs:.2} s = {p:.0} rows/s");
            println!(
                "snapshot (chunks {}, typed, Debezium-encoded): {s_rows} rows in {s_secs:.2} s = {s:.0} rows/s ({} MB of messages)",
                a.chunk,
                bytes / 1_000_000
            );
            println!("ratio snapshot / plain: {:.2}", s / p);
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
