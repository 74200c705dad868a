//! The `binlog-bridge` binary: parse the command line, start logging, dispatch.
//! Everything else lives in the library.

use std::process::ExitCode;

use clap::Parser;

/// mimalloc instead of glibc malloc: decoded rows are allocated on the
/// reader's thread and freed on the sink's, where glibc's per-thread arenas
/// spend ~20% of a streaming bridge's CPU in malloc/free (perf); see the
/// README's "Performance" section for the measured difference.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // The watchdog guard (src/coord/watchdog.rs): no config, no runtime.
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() == Some(binlog_bridge::coord::watchdog::GUARD_ARG) {
        return binlog_bridge::coord::watchdog::guard_main(&args.next().unwrap_or_default());
    }
    let cli = binlog_bridge::cli::Cli::parse();
    binlog_bridge::telemetry::init(cli.log_format, &cli.log_level);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(binlog_bridge::cli::dispatch(cli))
}
