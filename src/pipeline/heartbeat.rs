//! A stand-in leader work for testing the gate without MySQL or Kafka.
//!
//! While leading it counts: every tick it "sends" the next number (appends a
//! line to an output file, the Kafka stand-in, but only while
//! [`LeaderContext::may_send`]), then reports it acknowledged to the
//! checkpoint writer. Its position is `heartbeat.000001:<4 + counter>`, so a
//! new leader resumes the count from the checkpoint. Exposed as the hidden
//! `binlog-bridge heartbeat` command so tests can run real processes.
//!
//! Output lines (one `write` each, appended, so several processes can share
//! one file): `RESUME <epoch> <counter> <pid> <unix ms>` at takeover and
//! `OUT <epoch> <counter> <pid> <unix ms>` per send.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{LeaderContext, LeaderWork, Options, Role, WorkError};
use crate::config::Config;
use crate::coord::{now_ms, Identity};
use crate::event::Position;

/// The file name of heartbeat positions.
pub const FILE: &str = "heartbeat.000001";

pub fn position(counter: u64) -> Position {
    Position::new(FILE, 4 + counter)
}

pub fn counter(position: &Position) -> u64 {
    position.offset.saturating_sub(4)
}

#[derive(Debug, thiserror::Error)]
#[error("cannot append to heartbeat output {path}: {source}")]
pub struct OutputError {
    path: PathBuf,
    source: std::io::Error,
}

/// The heartbeat work.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    pub output: Option<PathBuf>,
    pub tick: Duration,
}

impl Heartbeat {
    fn emit(&self, line: String) -> Result<(), WorkError> {
        let Some(path) = &self.output else {
            return Ok(());
        };
        let res = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut f| f.write_all(line.as_bytes()));
        res.map_err(|source| {
            WorkError::Failed(Box::new(OutputError {
                path: path.clone(),
                source,
            }))
        })
    }
}

impl LeaderWork for Heartbeat {
    async fn run(&self, ctx: LeaderContext) -> Result<(), WorkError> {
        let pid = std::process::id();
        let mut n = ctx
            .resume
            .as_ref()
            .map(|c| counter(&c.position))
            .unwrap_or(0);
        self.emit(format!("RESUME {} {n} {pid} {}\n", ctx.epoch, now_ms()))?;
        // Like a real sink, checkpoints are written beside the sends, not in
        // their way: the send loop publishes the latest acknowledged count,
        // a second future hands it to the (throttling) writer.
        let (acked_tx, mut acked_rx) = watch::channel(n);
        let writer = ctx.checkpoint.clone();
        let checkpoints = async move {
            while acked_rx.changed().await.is_ok() {
                let m = *acked_rx.borrow_and_update();
                writer.acked(&position(m)).await?;
            }
            Ok::<(), WorkError>(())
        };
        let sends = async {
            loop {
                tokio::select! {
                    biased;
                    _ = ctx.lost().cancelled() => return Err(WorkError::SessionLost),
                    _ = ctx.stop().cancelled() => return Ok(n),
                    _ = tokio::time::sleep(self.tick) => {}
                }
                // The gate of every send: lease alive and its deadline ahead.
                if !ctx.may_send() {
                    return Err(WorkError::SessionLost);
                }
                n += 1;
                self.emit(format!("OUT {} {n} {pid} {}\n", ctx.epoch, now_ms()))?;
                // "Kafka acknowledged" n.
                let _ = acked_tx.send(n);
            }
        };
        let mut checkpoints = Box::pin(checkpoints);
        let last = tokio::select! {
            r = sends => r?,
            r = &mut checkpoints => {
                r?;
                return Err(WorkError::SessionLost);
            }
        };
        // It may be parked inside a write holding the writer's lock: drop it
        // before writing ourselves (found by the SIGTERM test: a deadlock).
        drop(checkpoints);
        // Graceful stop: record the last acknowledged count; the pipeline
        // writes the final checkpoint after we return.
        ctx.checkpoint.acked(&position(last)).await?;
        Ok(())
    }
}

/// `binlog-bridge heartbeat`: the leader loop with the heartbeat work.
pub async fn main(config: &Config, output: Option<PathBuf>, tick_ms: u64) -> ExitCode {
    let identity = Identity::current(&config.http.listen);
    let stop = CancellationToken::new();
    if let Err(e) = super::stop_on_signals(stop.clone()) {
        eprintln!("error: cannot install signal handlers: {e}");
        return ExitCode::from(crate::cli::EXIT_FAILURE);
    }
    let (role_tx, _role_rx) = watch::channel(Role::Starting);
    let work = Heartbeat {
        output,
        tick: Duration::from_millis(tick_ms.max(1)),
    };
    tracing::info!(identity = %identity, "heartbeat pipeline starting");
    match super::run(
        Options::new(config.etcd.clone(), identity),
        work,
        stop,
        role_tx,
    )
    .await
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(crate::cli::EXIT_FAILURE)
        }
    }
}
