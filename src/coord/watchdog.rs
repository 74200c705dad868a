//! Watchdog: a small guard process that kills a frozen leader before its
//! lease can expire (self-fencing, as Patroni does with the Linux watchdog).
//!
//! Why: with `idempotent` delivery a leader that is frozen whole (SIGSTOP, a
//! stopped container, a debugger) cannot purge its producer queue, and
//! librdkafka sends a produce request it had already built as soon as the
//! process runs again, before it checks message timeouts. By then a new
//! leader has replayed the same changes, so they would arrive twice. A killed
//! process sends nothing more, and what it had already written to its
//! sockets reaches the broker at once, before the lease expires and before
//! any successor reads the partitions.
//!
//! How: `binlog-bridge run` starts its own executable as `binlog-bridge
//! __watchdog PID` with a pipe on its stdin. A thread of the bridge writes a
//! line every [`BEAT`]: `arm NS` (this process leads with idempotent delivery
//! and its lease deadline is NS on the system's monotonic clock) or
//! `disarm`. The guard kills the bridge with SIGKILL when it is armed, has
//! heard nothing for [`STALL`] and the deadline is less than [`AHEAD`] away:
//! a live bridge that merely lost etcd keeps beating and stops its own
//! output; a frozen one stops beating. When the pipe closes (the bridge
//! exited) the guard exits.
//!
//! Limits: a freeze of both processes at once (a whole machine or VM, a
//! cgroup freezer, SIGSTOP to the process group) freezes the guard too.

use std::io::{BufRead, Write};
use std::process::{Child, ChildStdin, Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Argument that turns the executable into the guard.
pub const GUARD_ARG: &str = "__watchdog";
/// How often the bridge tells the guard where it stands.
pub const BEAT: Duration = Duration::from_millis(30);
/// Silence after which the guard takes the bridge for frozen.
pub const STALL: Duration = Duration::from_millis(150);
/// How long before the lease deadline a frozen leader is killed.
pub const AHEAD: Duration = Duration::from_millis(150);

/// Nanoseconds on CLOCK_MONOTONIC, the clock both processes share.
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own; CLOCK_MONOTONIC
    // always exists on Linux.
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
    }
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

type DeadlineFn = Box<dyn Fn() -> tokio::time::Instant + Send + Sync>;

/// The bridge's side: the guard process and the beat thread.
pub struct Watchdog {
    armed: Arc<Mutex<Option<DeadlineFn>>>,
    _child: Child,
}

/// Disarms the watchdog when dropped (leadership over).
pub struct Armed {
    armed: Arc<Mutex<Option<DeadlineFn>>>,
}

impl Drop for Armed {
    fn drop(&mut self) {
        if let Ok(mut a) = self.armed.lock() {
            *a = None;
        }
    }
}

impl Watchdog {
    /// Start the guard for this process.
    pub fn spawn() -> std::io::Result<Watchdog> {
        let exe = std::env::current_exe()?;
        let mut child = Command::new(exe)
            .arg(GUARD_ARG)
            .arg(std::process::id().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| std::io::Error::other("the watchdog has no stdin pipe"))?;
        let armed: Arc<Mutex<Option<DeadlineFn>>> = Arc::new(Mutex::new(None));
        let beat = armed.clone();
        std::thread::Builder::new()
            .name("watchdog-beat".into())
            .spawn(move || beat_loop(stdin, beat))?;
        Ok(Watchdog {
            armed,
            _child: child,
        })
    }

    /// Arm while the returned guard lives: `deadline` is read at every beat.
    pub fn arm(
        &self,
        deadline: impl Fn() -> tokio::time::Instant + Send + Sync + 'static,
    ) -> Armed {
        if let Ok(mut a) = self.armed.lock() {
            *a = Some(Box::new(deadline));
        }
        Armed {
            armed: self.armed.clone(),
        }
    }
}

fn beat_loop(mut out: ChildStdin, armed: Arc<Mutex<Option<DeadlineFn>>>) {
    loop {
        let line = match armed.lock() {
            Ok(a) => match a.as_ref() {
                Some(f) => {
                    let d = f();
                    let left = d.saturating_duration_since(tokio::time::Instant::now());
                    format!("arm {}\n", mono_ns().saturating_add(left.as_nanos() as u64))
                }
                None => "disarm\n".to_string(),
            },
            Err(_) => "disarm\n".to_string(),
        };
        if out.write_all(line.as_bytes()).is_err() {
            tracing::warn!("the watchdog process is gone: a frozen leader will not be killed");
            return;
        }
        std::thread::sleep(BEAT);
    }
}

/// What the guard does with what it heard.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct GuardState {
    /// The armed deadline (monotonic ns), if armed.
    pub deadline: Option<u64>,
    /// When the last line arrived (monotonic ns).
    pub last: u64,
}

impl GuardState {
    /// Take one line from the bridge.
    pub fn hear(&mut self, line: &str, now: u64) {
        self.last = now;
        let mut words = line.split_whitespace();
        match (
            words.next(),
            words.next().and_then(|n| n.parse::<u64>().ok()),
        ) {
            (Some("arm"), Some(ns)) => self.deadline = Some(ns),
            _ => self.deadline = None,
        }
    }

    /// Whether the bridge is to be killed now.
    pub fn must_kill(&self, now: u64) -> bool {
        match self.deadline {
            Some(d) => {
                now.saturating_sub(self.last) >= STALL.as_nanos() as u64
                    && now.saturating_add(AHEAD.as_nanos() as u64) >= d
            }
            None => false,
        }
    }
}

/// The guard process: `binlog-bridge __watchdog PID`.
pub fn guard_main(parent: &str) -> ExitCode {
    let Ok(pid) = parent.parse::<i32>() else {
        eprintln!("error: {GUARD_ARG} takes the bridge's process id, got {parent:?}");
        return ExitCode::from(2);
    };
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            match line {
                Ok(l) => {
                    if tx.send(l).is_err() {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
    });
    let mut state = GuardState {
        deadline: None,
        last: mono_ns(),
    };
    loop {
        match rx.recv_timeout(Duration::from_millis(10)) {
            Ok(line) => state.hear(&line, mono_ns()),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            // The bridge closed the pipe: it exited.
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return ExitCode::SUCCESS,
        }
        if state.must_kill(mono_ns()) {
            // SAFETY: kill(2) with a pid we were given and SIGKILL.
            let rc = unsafe { libc::kill(pid, libc::SIGKILL) };
            eprintln!(
                "binlog-bridge watchdog: the leader process {pid} stopped responding for {} ms with its etcd lease about to expire (frozen?); killed it{} so it cannot send after another leader takes over — restart it (a supervisor does)",
                STALL.as_millis(),
                if rc == 0 { "" } else { " (kill failed)" }
            );
            return ExitCode::SUCCESS;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn a_beating_leader_is_never_killed() {
        let mut s = GuardState::default();
        s.hear("arm 1000000000", 0);
        // Deadline close, but it beat 20 ms ago: alive (lost etcd, say).
        s.hear("arm 1000000000", 990 * MS);
        assert!(!s.must_kill(1010 * MS));
    }

    #[test]
    fn a_silent_leader_is_killed_before_its_deadline() {
        let mut s = GuardState::default();
        s.hear(&format!("arm {}", 1000 * MS), 100 * MS);
        assert!(!s.must_kill(200 * MS), "silent but the deadline is far");
        assert!(!s.must_kill(849 * MS));
        assert!(s.must_kill(850 * MS));
        // Deadline near but only just silent: wait for the stall.
        let mut s = GuardState::default();
        s.hear(&format!("arm {}", 1000 * MS), 900 * MS);
        assert!(!s.must_kill(1000 * MS));
        assert!(s.must_kill(1050 * MS));
    }

    #[test]
    fn disarmed_or_garbled_means_no_kill() {
        let mut s = GuardState::default();
        s.hear("arm 5", 0);
        s.hear("disarm", 0);
        assert!(!s.must_kill(10_000 * MS));
        s.hear("arm x", 0);
        assert!(!s.must_kill(10_000 * MS));
    }
}
