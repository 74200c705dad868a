//! [`RdTxn`]: the [`TxnOps`] seam over librdkafka — transactional calls on
//! the sink's producer, the progress record, and reading the last committed
//! progress record with `isolation.level=read_committed`.
//!
//! The progress topic has one partition and `cleanup.policy=compact`; every
//! record is keyed by the pipeline name, so compaction keeps the latest one.
//! Its value is JSON: `{"pipeline":..,"epoch":..,"position":{..}}`.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::Producer as _;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use tokio::sync::oneshot;

use super::producer::{send_progress, RdProducer};
use super::txn::{TxnError, TxnOps};
use super::{SinkError, HEADER_EPOCH, HEADER_PIPELINE};
use crate::config::KafkaConfig;
use crate::event::Position;

/// Bound of every blocking transactional call (init, commit, abort).
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Progress records read back from the end of the topic at takeover.
const TAIL: i64 = 50;

/// A librdkafka error as the protocol must react to it.
pub fn classify(e: &KafkaError) -> TxnError {
    let text = e.to_string();
    let code = e.rdkafka_error_code();
    if matches!(
        code,
        Some(
            RDKafkaErrorCode::ProducerFenced
                | RDKafkaErrorCode::Fenced
                | RDKafkaErrorCode::InvalidProducerEpoch
                | RDKafkaErrorCode::TransactionCoordinatorFenced
        )
    ) {
        return TxnError::Fenced(text);
    }
    if matches!(code, Some(RDKafkaErrorCode::UnsupportedVersion))
        || text.contains("not supported by broker")
    {
        return TxnError::Unsupported(text);
    }
    match e {
        KafkaError::Transaction(t) if t.is_fatal() => TxnError::Fatal(text),
        KafkaError::Transaction(t) if t.txn_requires_abort() => TxnError::Abortable(text),
        KafkaError::Transaction(t) if t.is_retriable() => TxnError::Retriable(text),
        _ => TxnError::Abortable(text),
    }
}

/// Transactional calls on the sink's producer (a clone of the same handle).
pub struct RdTxn {
    producer: RdProducer,
    /// Consumer settings (brokers + security properties) for reading progress.
    cfg: KafkaConfig,
    topic: String,
    pipeline: String,
    epoch: String,
    /// The progress record of the open transaction (checked after commit).
    progress: Option<oneshot::Receiver<Result<(), KafkaError>>>,
}

impl RdTxn {
    pub fn new(
        producer: RdProducer,
        cfg: &KafkaConfig,
        topic: &str,
        pipeline: &str,
        epoch: i64,
    ) -> RdTxn {
        RdTxn {
            producer,
            cfg: cfg.clone(),
            topic: topic.to_string(),
            pipeline: pipeline.to_string(),
            epoch: epoch.to_string(),
            progress: None,
        }
    }

    async fn blocking(
        &self,
        f: impl FnOnce(&RdProducer) -> Result<(), KafkaError> + Send + 'static,
    ) -> Result<(), TxnError> {
        let p = self.producer.clone();
        tokio::task::spawn_blocking(move || f(&p))
            .await
            .map_err(|e| TxnError::Fatal(format!("transactional call task failed: {e}")))?
            .map_err(|e| classify(&e))
    }
}

impl TxnOps for RdTxn {
    async fn init(&mut self) -> Result<(), TxnError> {
        self.blocking(|p| p.init_transactions(CALL_TIMEOUT)).await
    }

    async fn last_progress(&mut self) -> Result<Option<Position>, TxnError> {
        let cfg = self.cfg.clone();
        let topic = self.topic.clone();
        let pipeline = self.pipeline.clone();
        tokio::task::spawn_blocking(move || read_progress(&cfg, &topic, &pipeline, CALL_TIMEOUT))
            .await
            .map_err(|e| TxnError::Fatal(format!("progress read task failed: {e}")))?
    }

    fn begin(&mut self) -> Result<(), TxnError> {
        self.producer.begin_transaction().map_err(|e| classify(&e))
    }

    fn send_progress(&mut self, resume: &Position) -> Result<(), TxnError> {
        let value = serde_json::json!({
            "pipeline": self.pipeline,
            "epoch": self.epoch.parse::<i64>().unwrap_or(0),
            "position": resume,
        })
        .to_string();
        let headers = OwnedHeaders::new_with_capacity(2)
            .insert(Header {
                key: HEADER_PIPELINE,
                value: Some(self.pipeline.as_bytes()),
            })
            .insert(Header {
                key: HEADER_EPOCH,
                value: Some(self.epoch.as_bytes()),
            });
        let rx = send_progress(
            &self.producer,
            &self.topic,
            self.pipeline.as_bytes(),
            value.as_bytes(),
            headers,
        )
        .map_err(|e| classify(&e))?;
        self.progress = Some(rx);
        Ok(())
    }

    async fn commit(&mut self) -> Result<(), TxnError> {
        // Wait for every message of the transaction to be delivered before
        // committing. rust-rdkafka's commit_transaction flushes first, and
        // its flush, while any delivery report is outstanding, polls for up
        // to 100 ms; the producer's own polling thread takes the reports, so
        // that poll waited out its whole timeout on every commit (measured:
        // 100 ms per commit, a 10,000-message batch every ~140 ms).
        // The progress record is the transaction's last message: a failed
        // delivery of it is a failed transaction.
        if let Some(f) = self.progress.take() {
            match f.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(classify(&e)),
                Err(_) => {
                    return Err(TxnError::Abortable(
                        "the progress record's delivery was cancelled".into(),
                    ))
                }
            }
        }
        let until = std::time::Instant::now() + CALL_TIMEOUT;
        while self.producer.in_flight_count() > 0 && std::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // Whatever is still outstanding (none unless the wait timed out),
        // commit_transaction flushes or fails on.
        self.blocking(|p| p.commit_transaction(CALL_TIMEOUT)).await
    }

    async fn abort(&mut self) -> Result<(), TxnError> {
        self.progress = None;
        self.blocking(|p| p.abort_transaction(CALL_TIMEOUT)).await
    }

    fn fatal(&self) -> Option<TxnError> {
        let (code, reason) = self.producer.client().fatal_error()?;
        let text = format!("{code}: {reason}");
        Some(
            if matches!(
                code,
                RDKafkaErrorCode::ProducerFenced
                    | RDKafkaErrorCode::Fenced
                    | RDKafkaErrorCode::InvalidProducerEpoch
            ) {
                TxnError::Fenced(text)
            } else {
                TxnError::Fatal(text)
            },
        )
    }
}

/// The position in the last committed progress record of `pipeline` in
/// `topic` (partition 0), read with `isolation.level=read_committed`.
/// `None` if the topic holds none.
pub fn read_progress(
    cfg: &KafkaConfig,
    topic: &str,
    pipeline: &str,
    timeout: Duration,
) -> Result<Option<Position>, TxnError> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.brokers)
        .set("group.id", format!("binlog-bridge-progress-{pipeline}"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true");
    for (k, v) in &cfg.properties {
        if is_client_property(k) {
            c.set(k, v);
        }
    }
    let consumer: BaseConsumer = c
        .create()
        .map_err(|e| TxnError::Fatal(format!("progress reader: {e}")))?;
    let (low, high) = consumer.fetch_watermarks(topic, 0, timeout).map_err(|e| {
        TxnError::Retriable(format!(
            "cannot read the watermarks of progress topic {topic}: {e}"
        ))
    })?;
    if high <= low {
        return Ok(None);
    }
    // Read the tail first; a compacted topic is small, so if the tail
    // holds no record of ours, read it all.
    for start in [(high - TAIL).max(low), low] {
        let found = scan(&consumer, topic, pipeline, start, high, timeout)?;
        if found.is_some() || start == low {
            return Ok(found);
        }
    }
    Ok(None)
}

fn scan(
    consumer: &BaseConsumer,
    topic: &str,
    pipeline: &str,
    start: i64,
    high: i64,
    timeout: Duration,
) -> Result<Option<Position>, TxnError> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Offset(start))
        .map_err(|e| TxnError::Fatal(e.to_string()))?;
    consumer
        .assign(&tpl)
        .map_err(|e| TxnError::Fatal(format!("progress reader assign: {e}")))?;
    let deadline = std::time::Instant::now() + timeout;
    let mut last = None;
    loop {
        if std::time::Instant::now() > deadline {
            return Err(TxnError::Retriable(format!(
                "reading progress topic {topic} from offset {start} to {high} timed out"
            )));
        }
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(_))) => return Ok(last),
            Some(Err(e)) => {
                return Err(TxnError::Retriable(format!(
                    "reading progress topic {topic}: {e}"
                )))
            }
            Some(Ok(m)) => {
                if m.key() == Some(pipeline.as_bytes()) {
                    let doc: serde_json::Value = serde_json::from_slice(m.payload().unwrap_or(b""))
                        .map_err(|e| {
                            TxnError::Fatal(format!(
                            "progress record at {topic}/0@{} is not valid JSON ({e}); is the topic shared with something else?",
                            m.offset()
                        ))
                        })?;
                    let pos: Position =
                        serde_json::from_value(doc["position"].clone()).map_err(|e| {
                            TxnError::Fatal(format!(
                                "progress record at {topic}/0@{} has no valid position ({e})",
                                m.offset()
                            ))
                        })?;
                    last = Some(pos);
                }
                if m.offset() + 1 >= high {
                    return Ok(last);
                }
            }
        }
    }
}

/// Pass-through properties that also apply to a consumer (security and
/// connection settings), not producer-only ones.
fn is_client_property(k: &str) -> bool {
    k.starts_with("security.")
        || k.starts_with("ssl.")
        || k.starts_with("sasl.")
        || k.starts_with("socket.")
        || k.starts_with("client.")
        || k == "broker.address.family"
}

/// Create the progress topic when missing: one partition, compacted.
pub async fn ensure_progress_topic(cfg: &KafkaConfig, topic: &str) -> Result<(), SinkError> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.brokers);
    for (k, v) in &cfg.properties {
        if is_client_property(k) {
            c.set(k, v);
        }
    }
    let admin: AdminClient<DefaultClientContext> =
        c.create().map_err(|e| SinkError::Client(e.to_string()))?;
    let new = NewTopic::new(topic, 1, TopicReplication::Fixed(cfg.replication_factor))
        .set("cleanup.policy", "compact");
    let opts = AdminOptions::new().operation_timeout(Some(CALL_TIMEOUT));
    let results = admin
        .create_topics([&new], &opts)
        .await
        .map_err(|e| SinkError::CreateTopic {
            topic: topic.to_string(),
            reason: e.to_string(),
        })?;
    for r in results {
        match r {
            Ok(_) => tracing::info!(topic, "created the progress topic (1 partition, compacted)"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => {
                return Err(SinkError::CreateTopic {
                    topic: topic.to_string(),
                    reason: code.to_string(),
                })
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn librdkafka_errors_map_to_the_protocol_reaction() {
        for code in [
            RDKafkaErrorCode::ProducerFenced,
            RDKafkaErrorCode::Fenced,
            RDKafkaErrorCode::InvalidProducerEpoch,
        ] {
            let e = KafkaError::MessageProduction(code);
            assert!(matches!(classify(&e), TxnError::Fenced(_)), "{code:?}");
        }
        let e = KafkaError::MessageProduction(RDKafkaErrorCode::UnsupportedVersion);
        assert!(matches!(classify(&e), TxnError::Unsupported(_)));
        // Anything else, outside a transactional call, aborts the batch.
        let e = KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut);
        assert!(matches!(classify(&e), TxnError::Abortable(_)));
    }
}
