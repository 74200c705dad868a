//! A workload for the demo and the chaos test: changes rows in several tables
//! at a steady rate and logs every change it knows to be committed.
//!
//! Every change (insert, update, delete) carries a unique, increasing `seq`
//! number: inserts and updates write it into the row, a delete removes a row
//! whose last `seq` is known. After each COMMIT returns, the transaction's
//! changes are appended to the log (`op table id seq` per line). A COMMIT whose
//! outcome is unknown (the connection broke during it) is logged with a `?`
//! prefix: the verifier accepts such changes once or not at all. With
//! `--big-every N` every Nth transaction inserts `--big-rows` rows at once, a
//! burst on top of the steady `--rate` (pacing counts it as one change, so the
//! small transactions never pause while a big one is worked off);
//! with `--ddl-every N` every Nth transaction is an `ALTER TABLE ... ADD COLUMN`.
//!
//!     cargo run --example cdc_writer -- --url mysql://root@127.0.0.1:3306 \
//!         --db chaos --log /tmp/chaos.log --rate 500 --seconds 60

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use mysql_async::prelude::Queryable;
use rand::{Rng, SeedableRng};

#[derive(Debug, Parser)]
struct Args {
    /// MySQL URL of a user that may create databases and write.
    #[arg(long, default_value = "mysql://root@127.0.0.1:3306")]
    url: String,
    /// Database to create (dropped first when --fresh).
    #[arg(long, default_value = "chaos")]
    db: String,
    /// Drop and recreate the database first.
    #[arg(long)]
    fresh: bool,
    /// Number of tables t0..tN-1.
    #[arg(long, default_value_t = 3)]
    tables: usize,
    /// Row changes per second (small transactions of 1-5 changes).
    #[arg(long, default_value_t = 200)]
    rate: u64,
    /// Stop after this many seconds (0: run until this file exists: --stop-file).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Stop when this file appears.
    #[arg(long)]
    stop_file: Option<PathBuf>,
    /// Every Nth transaction inserts --big-rows rows (0: never).
    #[arg(long, default_value_t = 0)]
    big_every: u64,
    #[arg(long, default_value_t = 10_000)]
    big_rows: u64,
    /// Every Nth transaction is a DDL statement (0: never).
    #[arg(long, default_value_t = 0)]
    ddl_every: u64,
    /// Where committed changes are logged.
    #[arg(long)]
    log: PathBuf,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

struct Change {
    op: &'static str,
    table: usize,
    id: u64,
    seq: u64,
}

async fn connect(url: &str) -> mysql_async::Conn {
    let mut delay = Duration::from_millis(100);
    loop {
        match mysql_async::Conn::from_url(url).await {
            Ok(c) => return c,
            Err(e) => {
                eprintln!("writer: connect failed ({e}); retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a = Args::parse();
    let mut rng = rand::rngs::StdRng::seed_from_u64(a.seed);
    let mut conn = connect(&a.url).await;
    if a.fresh {
        conn.query_drop(format!("DROP DATABASE IF EXISTS {}", a.db))
            .await?;
    }
    conn.query_drop(format!("CREATE DATABASE IF NOT EXISTS {}", a.db))
        .await?;
    for t in 0..a.tables {
        conn.query_drop(format!(
            "CREATE TABLE IF NOT EXISTS {}.t{t} (id BIGINT PRIMARY KEY, seq BIGINT NOT NULL, payload VARCHAR(64))",
            a.db
        ))
        .await?;
    }
    let mut log = std::io::BufWriter::new(
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&a.log)?,
    );
    // Live rows per table: id -> last seq. Starts empty: --fresh is expected
    // for a run whose log is verified.
    let mut live: Vec<HashMap<u64, u64>> = vec![HashMap::new(); a.tables];
    let mut next_id = vec![1u64; a.tables];
    let mut seq = 0u64;
    let start = Instant::now();
    let mut txns = 0u64;
    let mut changes_done = 0u64;
    // What pacing counts: a big transaction is one change, not big_rows.
    let mut paced = 0u64;
    let mut uncertain = 0u64;
    let mut ddl_n = 0u64;

    loop {
        if a.seconds > 0 && start.elapsed() >= Duration::from_secs(a.seconds) {
            break;
        }
        if let Some(f) = &a.stop_file {
            if f.exists() {
                break;
            }
        }
        txns += 1;
        if a.ddl_every > 0 && txns % a.ddl_every == 0 {
            ddl_n += 1;
            let t = rng.gen_range(0..a.tables);
            let stmt = format!("ALTER TABLE {}.t{t} ADD COLUMN c{ddl_n} INT NULL", a.db);
            if let Err(e) = conn.query_drop(&stmt).await {
                eprintln!("writer: DDL failed ({e}); reconnecting");
                conn = connect(&a.url).await;
            }
            continue;
        }
        let mut batch: Vec<Change> = Vec::new();
        let mut sql = String::from("BEGIN;");
        let big = a.big_every > 0 && txns % a.big_every == 0;
        if big {
            let t = rng.gen_range(0..a.tables);
            let mut values = Vec::new();
            for _ in 0..a.big_rows {
                seq += 1;
                let id = next_id[t];
                next_id[t] += 1;
                values.push(format!("({id},{seq},'big')"));
                batch.push(Change {
                    op: "c",
                    table: t,
                    id,
                    seq,
                });
                if values.len() == 1000 {
                    sql.push_str(&format!(
                        "INSERT INTO {}.t{t} (id, seq, payload) VALUES {};",
                        a.db,
                        values.join(",")
                    ));
                    values.clear();
                }
            }
            if !values.is_empty() {
                sql.push_str(&format!(
                    "INSERT INTO {}.t{t} (id, seq, payload) VALUES {};",
                    a.db,
                    values.join(",")
                ));
            }
        } else {
            let n = rng.gen_range(1..=5);
            for _ in 0..n {
                let t = rng.gen_range(0..a.tables);
                seq += 1;
                let roll: u32 = rng.gen_range(0..10);
                // Ids touched earlier in this same transaction are skipped for
                // update/delete so the log's per-row order is simple.
                let pick = live[t]
                    .keys()
                    .copied()
                    .find(|id| !batch.iter().any(|c| c.table == t && c.id == *id));
                match (roll, pick) {
                    (0..=5, _) | (_, None) => {
                        let id = next_id[t];
                        next_id[t] += 1;
                        sql.push_str(&format!(
                            "INSERT INTO {}.t{t} (id, seq, payload) VALUES ({id},{seq},'p{seq}');",
                            a.db
                        ));
                        batch.push(Change {
                            op: "c",
                            table: t,
                            id,
                            seq,
                        });
                    }
                    (6..=8, Some(id)) => {
                        sql.push_str(&format!(
                            "UPDATE {}.t{t} SET seq = {seq}, payload = 'u{seq}' WHERE id = {id};",
                            a.db
                        ));
                        batch.push(Change {
                            op: "u",
                            table: t,
                            id,
                            seq,
                        });
                    }
                    (_, Some(id)) => {
                        // The delete's before image carries the row's last seq;
                        // the change itself is identified by the new seq below.
                        let last = live[t].get(&id).copied().unwrap_or(0);
                        sql.push_str(&format!("DELETE FROM {}.t{t} WHERE id = {id};", a.db));
                        batch.push(Change {
                            op: "d",
                            table: t,
                            id,
                            seq: last,
                        });
                        seq -= 1;
                    }
                }
            }
        }
        sql.push_str("COMMIT;");
        match conn.query_drop(&sql).await {
            Ok(()) => {
                for c in &batch {
                    match c.op {
                        "d" => {
                            live[c.table].remove(&c.id);
                        }
                        _ => {
                            live[c.table].insert(c.id, c.seq);
                        }
                    }
                    writeln!(log, "{} t{} {} {}", c.op, c.table, c.id, c.seq)?;
                }
                changes_done += batch.len() as u64;
                paced += if big { 1 } else { batch.len() as u64 };
            }
            Err(e) => {
                // Unknown outcome: the verifier accepts these once or never.
                eprintln!("writer: transaction failed ({e}); reconnecting");
                for c in &batch {
                    writeln!(log, "? {} t{} {} {}", c.op, c.table, c.id, c.seq)?;
                }
                uncertain += batch.len() as u64;
                conn = connect(&a.url).await;
                // Re-read the live set: whether it committed decides what is live.
                for (t, rows) in live.iter_mut().enumerate() {
                    let got: Vec<(u64, u64)> = match conn
                        .query(format!("SELECT id, seq FROM {}.t{t}", a.db))
                        .await
                    {
                        Ok(v) => v,
                        Err(_) => continue,
                    };
                    *rows = got.into_iter().collect();
                    if let Some(max) = rows.keys().max() {
                        next_id[t] = next_id[t].max(max + 1);
                    }
                }
            }
        }
        log.flush()?;
        // Pace: `rate` changes per second, big transactions aside.
        let due = Duration::from_secs_f64(paced as f64 / a.rate.max(1) as f64);
        let el = start.elapsed();
        if due > el {
            tokio::time::sleep(due - el).await;
        }
    }
    log.flush()?;
    println!(
        "writer: {txns} transactions, {changes_done} committed changes, {uncertain} uncertain, {ddl_n} DDL in {:.1}s",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
