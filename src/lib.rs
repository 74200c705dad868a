//! binlog-bridge: stream a MySQL/MariaDB binlog into Kafka under an etcd
//! leader gate.
//!
//! The library does the work; `main.rs` only parses the command line and
//! dispatches. Module map (see DESIGN in the README):
//! - [`config`]: the TOML file, env overrides, validation;
//! - [`event`]: the seam type between the binlog source and the Kafka sink;
//! - [`cli`]: the subcommands.

pub mod cli;
pub mod config;
pub mod event;
pub mod telemetry;
pub mod check;
pub mod source;
