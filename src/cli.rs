//! The command line: `run`, `check`, `status`, `snapshot`, `checkpoint show|set`.
//!
//! Exit codes scripts can rely on: 0 success, 1 a runtime failure (a server
//! unreachable, a check failed, `checkpoint set` refused because a leader
//! holds the lock or the MySQL server could not be asked about the position,
//! `checkpoint show` with no checkpoint yet), 2 bad usage or bad
//! configuration (including a position for `checkpoint set` that does not
//! parse, or that the server says no dump can start at).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::telemetry::LogFormat;

/// Exit code for a runtime failure.
pub const EXIT_FAILURE: u8 = 1;
/// Exit code for bad usage or configuration.
pub const EXIT_CONFIG: u8 = 2;

/// Stream a MySQL/MariaDB binlog into Kafka: one primary and hot standbys
/// behind an etcd lease, position checkpointed in etcd.
#[derive(Debug, Parser)]
#[command(name = "binlog-bridge", version, about, long_about = None)]
// The doc comments are `--help` text, where `<SECTION>` is meant literally.
#[allow(rustdoc::invalid_html_tags)]
pub struct Cli {
    /// Configuration file (TOML). Every key can be overridden by an
    /// environment variable BINLOG_BRIDGE_<SECTION>_<KEY>.
    #[arg(
        long,
        short = 'c',
        global = true,
        default_value = "binlog-bridge.toml",
        env = "BINLOG_BRIDGE_CONFIG"
    )]
    pub config: PathBuf,

    /// Log line format on stderr.
    #[arg(long, global = true, value_enum, default_value = "human")]
    pub log_format: LogFormat,

    /// Log filter, e.g. `info` or `binlog_bridge=debug` (RUST_LOG wins when set).
    #[arg(long, global = true, default_value = "info")]
    pub log_level: String,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the bridge: campaign for leadership, and while leader stream the
    /// binlog into Kafka and checkpoint the delivered position in etcd.
    Run,
    /// Validate the configuration and (unless --offline) check that MySQL,
    /// etcd and Kafka are reachable and the server's settings are right.
    /// Prints one pass/fail line per check; exits 1 if any check fails.
    Check {
        /// Only validate the configuration; contact no server.
        #[arg(long)]
        offline: bool,
    },
    /// Show the current leader, its epoch, the checkpoint and every live member.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Re-snapshot tables while streaming goes on: checks the tables, leaves
    /// a request in etcd and returns; the leader sends every row of each
    /// table again as snapshot reads. `status` shows the progress.
    Snapshot {
        /// Tables to re-snapshot, as db.table (streamed by this pipeline,
        /// with a primary key of integer, YEAR, DATE or DATETIME columns).
        #[arg(required = true, value_name = "DB.TABLE")]
        tables: Vec<String>,
    },
    /// Read or replace the pipeline's checkpoint in etcd.
    Checkpoint {
        #[command(subcommand)]
        action: CheckpointAction,
    },
    /// Test mode: the leader loop with a counter instead of MySQL and Kafka.
    #[command(hide = true)]
    Heartbeat {
        /// Append `RESUME`/`OUT` lines here (the Kafka stand-in).
        #[arg(long)]
        output: Option<PathBuf>,
        /// Milliseconds between counts.
        #[arg(long, default_value_t = 50)]
        tick_ms: u64,
    },
}

#[derive(Debug, Subcommand)]
pub enum CheckpointAction {
    /// Print the checkpoint document.
    Show {
        /// Print the raw JSON document.
        #[arg(long)]
        json: bool,
    },
    /// Replace the checkpoint with POSITION (FILE:OFFSET or FILE:OFFSET+ROW).
    Set {
        /// The position to resume from, e.g. binlog.000003:4567 or binlog.000003:4567+12.
        position: String,
        /// GTID state before that position (MySQL GTID set or MariaDB GTID list).
        #[arg(long)]
        gtid: Option<String>,
        /// Write even while a leader holds the lock (the leader will be fenced
        /// on its next checkpoint and step down).
        #[arg(long)]
        force: bool,
        /// Write without first asking the MySQL server (`[mysql]`) whether a
        /// dump can start at POSITION: for when the server cannot be reached.
        #[arg(long)]
        unchecked: bool,
    },
}

/// Load and validate the configuration, printing what is wrong.
pub fn load_config(path: &std::path::Path) -> Result<Config, ExitCode> {
    let config = Config::load(path).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(EXIT_CONFIG)
    })?;
    config.validate().map_err(|e| {
        eprintln!("error: {}: {e}", path.display());
        ExitCode::from(EXIT_CONFIG)
    })?;
    Ok(config)
}

/// Run one parsed command line.
pub async fn dispatch(cli: Cli) -> ExitCode {
    let config = match load_config(&cli.config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match cli.command {
        Command::Check { offline } => {
            println!("pass  config {}", cli.config.display());
            if offline {
                return ExitCode::SUCCESS;
            }
            crate::check::print_and_exit(crate::check::run_all(&config).await)
        }
        Command::Run => crate::bridge::main(config).await,
        Command::Status { json } => crate::coord::admin::status(&config.etcd, json).await,
        Command::Snapshot { tables } => crate::snapshot::command::main(&config, &tables).await,
        Command::Checkpoint { action } => match action {
            CheckpointAction::Show { json } => {
                crate::coord::admin::checkpoint_show(&config.etcd, json).await
            }
            CheckpointAction::Set {
                position,
                gtid,
                force,
                unchecked,
            } => {
                let server = (!unchecked).then_some(&config.mysql);
                crate::coord::admin::checkpoint_set(&config.etcd, server, &position, gtid, force)
                    .await
            }
        },
        Command::Heartbeat { output, tick_ms } => {
            crate::pipeline::heartbeat::main(&config, output, tick_ms).await
        }
    }
}
