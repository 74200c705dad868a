//! The Kafka sink: turns [`ChangeEvent`]s into Kafka messages and tells the
//! pipeline which source position is safely in Kafka.
//!
//! # API the pipeline calls
//!
//! ```text
//! let mut sink = KafkaSink::new(&cfg.kafka, pipeline, epoch).await?      // connects, creates fixed topics
//!     .with_filter(TableFilter::new(&cfg.mysql.include, &cfg.mysql.exclude));
//! sink.send(&event).await?;            // encode + produce; waits while max_in_flight messages are unacknowledged
//! sink.acked_position();               // Option<Position>: resume point; everything before it is in Kafka
//! sink.poll_acks()?;                   // drain finished deliveries without sending (same value, or the delivery error)
//! sink.flush(timeout).await?;          // wait for every delivery; returns the acknowledged position
//! sink.abort();                        // purge queued/in-flight messages; the sink is finished afterwards
//! sink.set_deadline(Some(instant));    // lease gate: no hand-off to the producer at/after `instant`
//! ```
//!
//! **Checkpoint rule**: the only position that may be checkpointed is
//! [`KafkaSink::acked_position`] (or what `flush` returns). It is a *resume*
//! position: after a row or schema event at `p` it is `p.next_row()`, after a
//! [`EventKind::Commit`] at `p` it is `p` (row 0 of the next transaction).
//! It never passes a message Kafka has not acknowledged (enforced in the
//! private `acks` module). A delivery error stops the sink with that error;
//! nothing is skipped, and every later call returns [`SinkError::Stopped`].
//!
//! Every message carries headers [`HEADER_POSITION`] (the event's
//! [`Position`] in its `FILE:OFFSET+ROW` text form), [`HEADER_GTID`] (the GTID
//! state before the transaction, when the source knows it),
//! [`HEADER_PIPELINE`] and [`HEADER_EPOCH`] (the leader epoch passed to
//! `new`), so a reader of the last message of a partition knows where the
//! writer was, and a stray message of an old leader is recognisable.
//!
//! Row messages go to the table's topic (`kafka.topic`), keyed by the JSON
//! of the key columns; schema changes go to `kafka.schema_topic`, never to a
//! row topic. An update that changes the key is sent as a delete (old key)
//! followed by an insert (new key), as Debezium does, so per-key order holds
//! in both partitions. With `format = "maxwell"` each row is held until the
//! next event arrives, to mark the last row of a transaction `commit: true`.
//!
//! [`ChangeEvent`]: crate::event::ChangeEvent
//! [`EventKind::Commit`]: crate::event::EventKind::Commit
//! [`Position`]: crate::event::Position

mod acks;
pub mod format;
mod kafka;
pub mod probe;
pub mod producer;
pub mod reconcile;
pub mod routing;
pub mod txn;
pub mod txn_kafka;

pub use kafka::KafkaSink;
pub use routing::TableFilter;

/// Header: source position of the event (`binlog.000003:4567+2`).
pub const HEADER_POSITION: &str = "bb.position";
/// Header: GTID state before the event's transaction, when known.
pub const HEADER_GTID: &str = "bb.gtid-state";
/// Header: pipeline name.
pub const HEADER_PIPELINE: &str = "bb.pipeline";
/// Header: leader epoch (decimal) of the writer.
pub const HEADER_EPOCH: &str = "bb.epoch";
/// Header: 1 on the second message of an update that changed the key
/// (absent, meaning 0, otherwise): with the position it names the message.
pub const HEADER_PART: &str = "bb.part";

/// What went wrong in the sink, and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("invalid Kafka client configuration: {0}; check kafka.properties")]
    Client(String),
    #[error("cannot reach Kafka at {brokers}: {reason}; check kafka.brokers and that the brokers are up")]
    Connect { brokers: String, reason: String },
    #[error("topic {topic} does not exist and kafka.create_topics = false; create it (e.g. with {partitions} partitions) or set kafka.create_topics = true")]
    TopicMissing { topic: String, partitions: i32 },
    #[error("cannot create topic {topic}: {reason}; create it by hand or allow the bridge to create topics")]
    CreateTopic { topic: String, reason: String },
    #[error("kafka.key_columns for {table} names column `{column}`, which the table does not have (columns: {columns}); fix kafka.key_columns")]
    KeyColumn {
        table: String,
        column: String,
        columns: String,
    },
    #[error("cannot encode event at {position}: {source}")]
    Format {
        position: String,
        source: format::FormatError,
    },
    #[error("Kafka did not take a message for {topic} (event at {position}): {reason}")]
    Enqueue {
        topic: String,
        position: String,
        reason: String,
    },
    #[error("a message was not delivered: {0}; the acknowledged position stops before it — restart from the last checkpoint")]
    Delivery(String),
    #[error(
        "the sink stopped earlier ({0}); create a new sink and resume from the last checkpoint"
    )]
    Stopped(String),
    #[error(
        "flush timed out after {0:?} with {1} messages unacknowledged; is the broker reachable?"
    )]
    FlushTimeout(std::time::Duration, usize),
    #[error("the send deadline (leader lease) passed; unacknowledged messages were purged and output stopped — step down and let the next leader resume from the checkpoint")]
    DeadlinePassed,
    #[error("internal error: {0}")]
    Internal(String),
}
