//! The producer seam: librdkafka configuration, topic creation and the raw
//! send, kept small so that the exactly-once work (transactions, lease-gated
//! sends, reading the last message per partition) can wrap it.
//!
//! Properties are laid down in three layers: delivery guarantees the bridge
//! depends on (`acks=all`, idempotence, at most 5 requests in flight:
//! [`crate::config::MANAGED_PROPERTIES`], not overridable), then throughput
//! settings from `[kafka]` (compression, linger, batch size, a Java-compatible
//! key partitioner), then `kafka.properties` as given.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::{ClientConfig, FromClientConfigAndContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Message as _, OwnedHeaders};
use rdkafka::producer::{
    BaseRecord, DeliveryResult, Producer as _, ProducerContext, ThreadedProducer,
};
use tokio::sync::oneshot;

use super::acks::DeliveryBoard;
use super::SinkError;
use crate::config::KafkaConfig;

/// How long metadata and admin calls may take before we call the broker unreachable.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

/// librdkafka producer configuration for `cfg`.
pub fn producer_config(cfg: &KafkaConfig) -> Result<ClientConfig, SinkError> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.brokers)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("max.in.flight.requests.per.connection", "5")
        .set("compression.type", cfg.compression.as_str())
        .set("linger.ms", cfg.linger_ms.to_string())
        .set("batch.size", cfg.batch_bytes.to_string())
        // Room for the whole in-flight window (a row may be two messages).
        .set(
            "queue.buffering.max.messages",
            (u64::from(cfg.max_in_flight) * 2 + 1000)
                .min(2_147_483_647)
                .to_string(),
        )
        // Same key -> same partition as Java producers (Kafka's default partitioner).
        .set("partitioner", "murmur2_random")
        // Our metadata lookups must not let a broker with auto-creation on
        // create a topic with its defaults: we create it with kafka.partitions.
        .set("allow.auto.create.topics", "false");
    for (k, v) in cfg.client_properties().map_err(SinkError::Client)? {
        c.set(k, v);
    }
    Ok(c)
}

/// Admin client configuration: brokers plus the security settings and
/// pass-through properties (they apply to both).
fn admin_config(cfg: &KafkaConfig) -> Result<ClientConfig, SinkError> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.brokers);
    for (k, v) in cfg.client_properties().map_err(SinkError::Client)? {
        c.set(k, v);
    }
    Ok(c)
}

/// Set in the opaque of a transactional progress record (the rest of it
/// numbers the record, see [`send_progress`]); every other message's opaque
/// is its [`super::acks::AckTracker`] token, far below it.
const PROGRESS_BIT: usize = 1 << (usize::BITS - 1);

/// Where a progress record's delivery outcome goes.
type ProgressSender = oneshot::Sender<Result<(), KafkaError>>;

/// The producer's context: librdkafka's delivery callback (on the producer's
/// polling thread) writes each outcome into the board the sink's tracker reads.
pub struct DeliveryContext {
    board: Arc<DeliveryBoard>,
    /// Where the outcome of the open transaction's progress record goes,
    /// with that record's opaque: the report of an earlier record (an aborted
    /// transaction's, purged) must not answer for a later one.
    progress: Mutex<Option<(usize, ProgressSender)>>,
    /// The number of the next progress record.
    progress_seq: AtomicUsize,
}

impl ClientContext for DeliveryContext {}

impl DeliveryContext {
    /// The waiting sender of progress record `token`, if it is the one waited for.
    fn take_progress(&self, token: usize) -> Option<ProgressSender> {
        let mut slot = self.progress.lock().unwrap_or_else(|e| e.into_inner());
        match slot.take() {
            Some((waiting, tx)) if waiting == token => Some(tx),
            other => {
                *slot = other;
                None
            }
        }
    }
}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, token: usize) {
        if token & PROGRESS_BIT != 0 {
            if let Some(tx) = self.take_progress(token) {
                let _ = tx.send(result.as_ref().map(|_| ()).map_err(|(e, _)| e.clone()));
            }
            return;
        }
        let outcome = match result {
            Ok(_) => Ok(()),
            Err((e, m)) => Err(format!("delivery to {} failed: {e}", m.topic())),
        };
        self.board.complete(token as u64, outcome);
    }
}

/// The librdkafka producer the sink and transactional delivery share.
pub type RdProducer = ThreadedProducer<DeliveryContext>;

/// Hand the open transaction's progress record to `producer`; the receiver
/// gets its delivery outcome. One at a time: a second replaces the first's
/// receiver (which then reports cancelled), and the first's report is dropped.
pub fn send_progress(
    producer: &RdProducer,
    topic: &str,
    key: &[u8],
    value: &[u8],
    headers: OwnedHeaders,
) -> Result<oneshot::Receiver<Result<(), KafkaError>>, KafkaError> {
    let (tx, rx) = oneshot::channel();
    let context = producer.client().context();
    let token =
        PROGRESS_BIT | (context.progress_seq.fetch_add(1, Ordering::Relaxed) & !PROGRESS_BIT);
    let slot = &context.progress;
    *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some((token, tx));
    let rec = BaseRecord::with_opaque_to(topic, token)
        .partition(0)
        .key(key)
        .payload(value)
        .headers(headers);
    producer.send(rec).map_err(|(e, _)| {
        slot.lock().unwrap_or_else(|e| e.into_inner()).take();
        e
    })?;
    Ok(rx)
}

/// A librdkafka producer plus the topic bookkeeping the sink needs.
pub struct Producer {
    inner: RdProducer,
    admin: AdminClient<DefaultClientContext>,
    brokers: String,
    partitions: i32,
    replication: i32,
    create: bool,
    /// Topics known to exist (checked or created), with their partition counts.
    known: HashMap<String, usize>,
}

impl Producer {
    /// Build the clients and check that the brokers answer.
    pub async fn connect(cfg: &KafkaConfig) -> Result<Self, SinkError> {
        let context = DeliveryContext {
            board: Arc::new(DeliveryBoard::new(
                usize::try_from(cfg.max_in_flight).unwrap_or(usize::MAX),
            )),
            progress: Mutex::new(None),
            progress_seq: AtomicUsize::new(0),
        };
        let inner = RdProducer::from_config_and_context(&producer_config(cfg)?, context)
            .map_err(|e| SinkError::Client(e.to_string()))?;
        let admin: AdminClient<DefaultClientContext> = admin_config(cfg)?
            .create()
            .map_err(|e| SinkError::Client(e.to_string()))?;
        let p = inner.clone();
        tokio::task::spawn_blocking(move || p.client().fetch_metadata(None, ADMIN_TIMEOUT))
            .await
            .map_err(|e| SinkError::Internal(e.to_string()))?
            .map_err(|e| SinkError::Connect {
                brokers: cfg.brokers.clone(),
                reason: if cfg.security_protocol == crate::config::SecurityProtocol::Plaintext {
                    e.to_string()
                } else {
                    // librdkafka logs the precise cause (e.g. "SASL authentication error") just before.
                    format!("{e} (with kafka.security_protocol = {:?}: check the SASL/SSL keys too; `binlog-bridge check` prints librdkafka's reason)", cfg.security_protocol.as_str())
                },
            })?;
        Ok(Producer {
            inner,
            admin,
            brokers: cfg.brokers.clone(),
            partitions: cfg.partitions,
            replication: cfg.replication_factor,
            create: cfg.create_topics,
            known: HashMap::new(),
        })
    }

    /// The underlying producer (for transactions and purges layered on top).
    pub fn inner(&self) -> &RdProducer {
        &self.inner
    }

    /// Where this producer's delivery callback records outcomes.
    pub(crate) fn board(&self) -> Arc<DeliveryBoard> {
        self.inner.client().context().board.clone()
    }

    /// Topics this producer has checked or created so far.
    pub fn topics(&self) -> impl Iterator<Item = &str> {
        self.known.keys().map(String::as_str)
    }

    /// Partitions of a topic [`Self::ensure_topic`] has seen.
    pub fn partitions_of(&self, topic: &str) -> Option<usize> {
        self.known.get(topic).copied()
    }

    /// Make sure `topic` exists: create it when missing (if allowed), and
    /// wait until the cluster's metadata shows its partitions.
    pub async fn ensure_topic(&mut self, topic: &str) -> Result<(), SinkError> {
        if self.known.contains_key(topic) {
            return Ok(());
        }
        let mut count = self.partition_count(topic).await?;
        if count.is_none() {
            if !self.create {
                return Err(SinkError::TopicMissing {
                    topic: topic.to_string(),
                    partitions: self.partitions,
                });
            }
            self.create_topic(topic).await?;
            let deadline = tokio::time::Instant::now() + ADMIN_TIMEOUT;
            loop {
                count = self.partition_count(topic).await?;
                if count.is_some() {
                    break;
                }
                if tokio::time::Instant::now() > deadline {
                    return Err(SinkError::CreateTopic {
                        topic: topic.to_string(),
                        reason:
                            "created, but it did not appear in the cluster metadata within 10 s"
                                .into(),
                    });
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        self.known
            .insert(topic.to_string(), count.unwrap_or(1).max(1));
        Ok(())
    }

    /// Partitions of `topic` per the cluster metadata, `None` if it does not exist.
    pub async fn partition_count(&self, topic: &str) -> Result<Option<usize>, SinkError> {
        let p = self.inner.clone();
        let name = topic.to_string();
        let md = tokio::task::spawn_blocking(move || {
            p.client().fetch_metadata(Some(&name), ADMIN_TIMEOUT)
        })
        .await
        .map_err(|e| SinkError::Internal(e.to_string()))?
        .map_err(|e| SinkError::Connect {
            brokers: self.brokers.clone(),
            reason: e.to_string(),
        })?;
        Ok(md
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .filter(|t| t.error().is_none() && !t.partitions().is_empty())
            .map(|t| t.partitions().len()))
    }

    async fn create_topic(&self, topic: &str) -> Result<(), SinkError> {
        let new = NewTopic::new(
            topic,
            self.partitions,
            TopicReplication::Fixed(self.replication),
        );
        let opts = AdminOptions::new().operation_timeout(Some(ADMIN_TIMEOUT));
        let results =
            self.admin
                .create_topics([&new], &opts)
                .await
                .map_err(|e| SinkError::CreateTopic {
                    topic: topic.to_string(),
                    reason: e.to_string(),
                })?;
        for r in results {
            match r {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((_, code)) => {
                    return Err(SinkError::CreateTopic {
                        topic: topic.to_string(),
                        reason: code.to_string(),
                    })
                }
            }
        }
        tracing::info!(
            topic,
            partitions = self.partitions,
            replication_factor = self.replication,
            "created topic"
        );
        Ok(())
    }

    /// Hand one message to librdkafka under `token` (the sink's tracker's
    /// next token: its outcome lands in the board `board()` returns).
    /// `Err(QueueFull)` means: wait for deliveries, then try again.
    pub fn send(
        &self,
        token: u64,
        topic: &str,
        partition: i32,
        key: Option<&[u8]>,
        value: &[u8],
        headers: OwnedHeaders,
    ) -> Result<(), KafkaError> {
        let token = usize::try_from(token)
            .ok()
            .filter(|t| t & PROGRESS_BIT == 0)
            .ok_or_else(|| KafkaError::MessageProduction(RDKafkaErrorCode::InvalidArgument))?;
        let mut rec = BaseRecord::with_opaque_to(topic, token)
            .partition(partition)
            .payload(value)
            .headers(headers);
        if let Some(k) = key {
            rec = rec.key(k);
        }
        self.inner.send(rec).map_err(|(e, _)| e)
    }

    /// Drop every queued and in-flight message; their deliveries fail with
    /// "purged". Used when output must stop at once (lease lost, abort).
    pub fn purge(&self) {
        self.inner
            .purge(rdkafka::producer::PurgeConfig::default().queue().inflight());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_earlier_progress_report_does_not_answer_for_the_open_one() {
        let ctx = DeliveryContext {
            board: Arc::new(DeliveryBoard::new(4)),
            progress: Mutex::new(None),
            progress_seq: AtomicUsize::new(0),
        };
        let (tx, mut rx) = oneshot::channel();
        *ctx.progress.lock().unwrap() = Some((PROGRESS_BIT | 7, tx));
        assert!(
            ctx.take_progress(PROGRESS_BIT | 6).is_none(),
            "an aborted transaction's record"
        );
        let tx = ctx
            .take_progress(PROGRESS_BIT | 7)
            .expect("the open record's sender");
        tx.send(Ok(())).unwrap();
        assert!(matches!(rx.try_recv(), Ok(Ok(()))));
        assert!(ctx.take_progress(PROGRESS_BIT | 7).is_none(), "taken once");
    }

    #[test]
    fn guarantees_and_tuning_are_set_and_properties_apply_last() {
        let mut cfg = KafkaConfig::default();
        cfg.properties
            .insert("compression.type".into(), "zstd".into());
        cfg.properties
            .insert("message.timeout.ms".into(), "30000".into());
        let c = producer_config(&cfg).unwrap();
        assert_eq!(c.get("acks"), Some("all"));
        assert_eq!(c.get("enable.idempotence"), Some("true"));
        assert_eq!(c.get("max.in.flight.requests.per.connection"), Some("5"));
        assert_eq!(c.get("linger.ms"), Some("5"));
        assert_eq!(c.get("batch.size"), Some("1000000"));
        assert_eq!(c.get("allow.auto.create.topics"), Some("false"));
        assert_eq!(c.get("compression.type"), Some("zstd"), "properties win");
        assert_eq!(c.get("message.timeout.ms"), Some("30000"));
        let c = producer_config(&KafkaConfig::default()).unwrap();
        assert_eq!(c.get("compression.type"), Some("lz4"));
    }
}
