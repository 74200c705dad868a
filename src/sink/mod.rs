//! The Kafka sink (placeholder while formats are built).
pub mod format;
