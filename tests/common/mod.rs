//! Helpers shared by integration tests: a private etcd cluster for fault
//! tests, and real `binlog-bridge` processes running the heartbeat work.
#![allow(dead_code)]

pub mod bridge;
pub mod etcd;
