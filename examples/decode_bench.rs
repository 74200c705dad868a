//! Decode speed of the binlog source next to `mariadb-binlog -v`.
//!
//! Reads one binlog file (make one with `scripts/make-bench-binlog.sh
//! /tmp/bench-1m.binlog`), decodes every event into `ChangeEvent`s with the
//! same decoder the live stream uses (checksums verified), and times
//! `mariadb-binlog -v FILE > /dev/null` on the same file. Prints rows/s for
//! both and the ratio (ours / theirs; >= 1.0 means at least as fast).
//!
//! It also times what the live stream does per event before our decoder
//! sees it: mysql_async's `BinlogStream` parses each packet with
//! mysql_common's `EventStreamReader` (an owned copy of the event, a clone
//! of the format description, every table map parsed and stored), and
//! `source::connection::raw_event` rebuilds the event's bytes from that.
//! The difference is the CPU the stream spends above our decoder, without
//! the socket (the packet codec's copy is not in it). Several files are
//! read in order through one decoder, as a replica reads them.
//!
//! `cargo run --release --example decode_bench -- /tmp/bench-1m.binlog`

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use binlog_bridge::event::{EventKind, Position};
use binlog_bridge::source::charset::Charsets;
use binlog_bridge::source::{binlog_file, connection, Decoder, TableFilter};

/// The live stream's per-event path without the socket: mysql_common's
/// `EventStreamReader::read` on each event (as mysql_async's `BinlogStream`
/// does), the bytes rebuilt with `raw_event`, then our decoder.
fn decode_via_stream_reader(files: &[(String, Vec<u8>)]) -> Result<(u64, Duration), String> {
    let start = Instant::now();
    let mut d = Decoder::new(Arc::new(Charsets::default()), TableFilter::default(), false);
    let mut esr = mysql_common::binlog::EventStreamReader::new(
        mysql_common::binlog::consts::BinlogVersion::Version4,
    );
    let mut raw = Vec::new();
    let mut rows = 0u64;
    for (i, (name, bytes)) in files.iter().enumerate() {
        if i == 0 {
            d.resume_at(&Position::new(name.as_str(), 4));
        }
        for item in binlog_file::events(bytes).map_err(|e| e.to_string())? {
            let (at, ev) = item.map_err(|e| e.to_string())?;
            let parsed = esr
                .read(ev)
                .map_err(|e| format!("{name} offset {at}: mysql_common: {e}"))?
                .ok_or_else(|| format!("{name} offset {at}: mysql_common read no event"))?;
            connection::raw_event(&parsed, &mut raw);
            d.feed(&raw)
                .map_err(|e| format!("{name} offset {at}: {e}"))?;
            while let Some(ev) = d.pop() {
                if matches!(ev.kind, EventKind::Row(_)) {
                    rows += 1;
                }
            }
        }
    }
    Ok((rows, start.elapsed()))
}

/// Our decoder over all `files` in order (one decoder, as a replica reads).
fn decode_all(files: &[(String, Vec<u8>)]) -> Result<(u64, Duration), String> {
    let mut rows = 0;
    let mut took = Duration::ZERO;
    let start = Instant::now();
    let mut d = Decoder::new(Arc::new(Charsets::default()), TableFilter::default(), false);
    for (i, (name, bytes)) in files.iter().enumerate() {
        if i == 0 {
            d.resume_at(&Position::new(name.as_str(), 4));
        }
        for item in binlog_file::events(bytes).map_err(|e| e.to_string())? {
            let (at, ev) = item.map_err(|e| e.to_string())?;
            d.feed(ev).map_err(|e| format!("{name} offset {at}: {e}"))?;
            while let Some(ev) = d.pop() {
                if matches!(ev.kind, EventKind::Row(_)) {
                    rows += 1;
                }
            }
        }
        took = start.elapsed();
    }
    Ok((rows, took))
}

fn main() {
    let paths: Vec<String> = std::env::args().skip(1).collect();
    if paths.is_empty() {
        eprintln!(
            "usage: decode_bench BINLOG_FILE...   (make one with scripts/make-bench-binlog.sh)"
        );
        std::process::exit(2);
    }
    let mut files = Vec::new();
    for path in &paths {
        match std::fs::read(path) {
            Ok(b) => {
                let name = std::path::Path::new(path)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                files.push((name, b));
            }
            Err(e) => {
                eprintln!("{path}: {e}");
                std::process::exit(2);
            }
        }
    }
    let runs = 3;
    let mut best_ours = Duration::MAX;
    let mut best_esr = Duration::MAX;
    let mut rows = 0;
    // Alternate the two so a slow phase of the machine hits both.
    for _ in 0..runs {
        match decode_all(&files) {
            Ok((r, t)) => {
                rows = r;
                best_ours = best_ours.min(t);
            }
            Err(e) => {
                eprintln!("decode failed: {e}");
                std::process::exit(1);
            }
        }
        match decode_via_stream_reader(&files) {
            Ok((r, t)) if r == rows => best_esr = best_esr.min(t),
            Ok((r, _)) => {
                eprintln!("through mysql_common: {r} rows, our decoder alone: {rows}");
                std::process::exit(1);
            }
            Err(e) => {
                eprintln!("decode through mysql_common failed: {e}");
                std::process::exit(1);
            }
        }
    }
    let mut best_c = Duration::MAX;
    for _ in 0..runs {
        let t = Instant::now();
        let status = Command::new("mariadb-binlog")
            .arg("-v")
            .args(&paths)
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
    let bytes: usize = files.iter().map(|(_, b)| b.len()).sum();
    println!(
        "files: {} ({bytes} bytes, {rows} rows), best of {runs}",
        paths.join(" ")
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
    let per_m = |t: Duration| t.as_secs_f64() * 1e6 / rows.max(1) as f64;
    println!(
        "through mysql_common's EventStreamReader + raw_event + our decoder: {:>10.0} rows/s ({:.3} s)",
        rows as f64 / best_esr.as_secs_f64(),
        best_esr.as_secs_f64()
    );
    println!(
        "CPU-seconds per 1M rows: our decoder {:.2}, through the stream reader {:.2} ({:.2}x)",
        per_m(best_ours),
        per_m(best_esr),
        best_esr.as_secs_f64() / best_ours.as_secs_f64()
    );
}
