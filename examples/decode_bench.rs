//! Decode speed of the binlog source next to `mariadb-binlog -v`.
//!
//! Reads one binlog file (make one with `scripts/make-bench-binlog.sh
//! /tmp/bench-1m.binlog`), decodes every event into `ChangeEvent`s with the
//! same decoder the live stream uses (checksums verified), and times
//! `mariadb-binlog -v FILE > /dev/null` on the same file. Prints rows/s for
//! both and the ratio (ours / theirs; >= 1.0 means at least as fast).
//!
//! `cargo run --release --example decode_bench -- /tmp/bench-1m.binlog`

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use binlog_bridge::event::{EventKind, Position};
use binlog_bridge::source::charset::Charsets;
use binlog_bridge::source::{binlog_file, Decoder, TableFilter};

fn decode(bytes: &[u8], name: &str) -> Result<(u64, Duration), String> {
    let file_events = binlog_file::events(bytes).map_err(|e| e.to_string())?;
    let start = Instant::now();
    let mut d = Decoder::new(Arc::new(Charsets::default()), TableFilter::default(), false);
    d.resume_at(&Position::new(name, 4));
    let mut rows = 0u64;
    for item in file_events {
        let (at, ev) = item.map_err(|e| e.to_string())?;
        d.feed(ev).map_err(|e| format!("offset {at}: {e}"))?;
        while let Some(ev) = d.pop() {
            if matches!(ev.kind, EventKind::Row(_)) {
                rows += 1;
            }
        }
    }
    Ok((rows, start.elapsed()))
}

fn main() {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: decode_bench BINLOG_FILE   (make one with scripts/make-bench-binlog.sh)");
        std::process::exit(2);
    };
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("{path}: {e}");
            std::process::exit(2);
        }
    };
    let name = std::path::Path::new(&path)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let runs = 3;
    let mut best_ours = Duration::MAX;
    let mut rows = 0;
    for _ in 0..runs {
        match decode(&bytes, &name) {
            Ok((r, t)) => {
                rows = r;
                best_ours = best_ours.min(t);
            }
            Err(e) => {
                eprintln!("decode failed: {e}");
                std::process::exit(1);
            }
        }
    }
    let mut best_c = Duration::MAX;
    for _ in 0..runs {
        let t = Instant::now();
        let status = Command::new("mariadb-binlog")
            .arg("-v")
            .arg(&path)
            .stdout(Stdio::null())
            .status();
        match status {
            Ok(s) if s.success() => best_c = best_c.min(t.elapsed()),
            other => {
                eprintln!("mariadb-binlog -v failed: {other:?}");
                std::process::exit(1);
            }
        }
    }
    let ours = rows as f64 / best_ours.as_secs_f64();
    let theirs = rows as f64 / best_c.as_secs_f64();
    println!(
        "file: {path} ({} bytes, {rows} rows), best of {runs}",
        bytes.len()
    );
    println!(
        "binlog-bridge decoder: {:>10.0} rows/s ({:.3} s)",
        ours,
        best_ours.as_secs_f64()
    );
    println!(
        "mariadb-binlog -v:     {:>10.0} rows/s ({:.3} s)",
        theirs,
        best_c.as_secs_f64()
    );
    println!("ratio (ours / mariadb-binlog): {:.2}", ours / theirs);
}
