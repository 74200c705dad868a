//! binlog-bridge: stream a MySQL/MariaDB binlog into Kafka under an etcd
//! leader gate.
//!
//! The library does the work; `main.rs` only parses the command line and
//! dispatches. Module map (see DESIGN in the README):
//! - [`config`]: the TOML file, env overrides, validation;
//! - [`event`]: the seam type between the binlog source and the Kafka sink;
//! - [`cli`]: the subcommands;
//! - [`coord`]: the etcd leader gate (session, election, fenced checkpoint);
//! - [`pipeline`]: the leader loop that runs the work only while leading;
//! - [`source`]: the binlog replica stream and row decoding;
//! - [`sink`]: routing, encoding and producing to Kafka;
//! - [`ops`]: metrics and health endpoints.

pub mod bridge;
pub mod check;
pub mod cli;
pub mod config;
pub mod coord;
pub mod event;
pub mod ops;
pub mod pipeline;
pub mod sink;
pub mod snapshot;
pub mod source;
pub mod telemetry;
