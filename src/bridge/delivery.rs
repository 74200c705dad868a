//! The delivery mode against the broker, and the timing exactly-once
//! delivery without transactions rests on: the producer's delivery timeout,
//! the fence delay a takeover waits, and what of it a predecessor's send
//! margin already covered.

use std::time::Duration;

use super::{BridgeError, SEND_MARGIN_MS};
use crate::config::Delivery;
use crate::sink::probe::TxnSupport;
use crate::sink::txn::TxnError;

/// The name of a delivery mode as written in the config.
pub fn delivery_name(d: Delivery) -> &'static str {
    match d {
        Delivery::Auto => "auto",
        Delivery::Transactional => "transactional",
        Delivery::Idempotent => "idempotent",
        Delivery::AtLeastOnce => "at-least-once",
    }
}

/// Resolve `kafka.delivery` against the broker: `auto` becomes
/// `transactional` when the broker supports Kafka transactions, else
/// `idempotent`; an explicit `transactional` on a broker without them is
/// refused, naming `idempotent`. Other modes are returned as given, unprobed.
pub async fn resolve_delivery(
    kafka: &crate::config::KafkaConfig,
    timeout: Duration,
) -> Result<Delivery, BridgeError> {
    if !matches!(kafka.delivery, Delivery::Auto | Delivery::Transactional) {
        return Ok(kafka.delivery);
    }
    let cfg = kafka.clone();
    let support =
        tokio::task::spawn_blocking(move || crate::sink::probe::probe_transactions(&cfg, timeout))
            .await
            .map_err(|e| BridgeError::Config(format!("broker probe task failed: {e}")))??;
    match (kafka.delivery, support) {
        (Delivery::Auto, TxnSupport::Supported) => Ok(Delivery::Transactional),
        (Delivery::Auto, TxnSupport::Missing(_)) => Ok(Delivery::Idempotent),
        (_, TxnSupport::Supported) => Ok(Delivery::Transactional),
        (_, TxnSupport::Missing(apis)) => Err(BridgeError::Txn(TxnError::Unsupported(format!(
            "kafka.delivery = \"transactional\", but the broker at {} does not offer {}",
            kafka.brokers,
            apis.join(", ")
        )))),
    }
}

/// The producer timeout of idempotent delivery, from the lease TTL: half the
/// TTL, at least 500 ms. A takeover waits this long (plus [`FENCE_SLACK`])
/// before reading what the previous leader wrote.
pub fn delivery_timeout(lease_ttl_secs: i64) -> Duration {
    Duration::from_millis((lease_ttl_secs.max(1) as u64 * 500).clamp(500, 5000))
}

/// What of the fence delay a takeover still has to wait: the part the
/// previous leader's send margin (recorded in its checkpoint) does not cover.
pub(super) fn fence_wait(
    fence: Duration,
    extra: Option<&serde_json::Map<String, serde_json::Value>>,
) -> Duration {
    let margin = extra
        .and_then(|e| e.get(SEND_MARGIN_MS))
        .and_then(serde_json::Value::as_u64)
        .map_or(Duration::ZERO, Duration::from_millis);
    fence.saturating_sub(margin)
}

/// Added to the delivery timeout to make the fence delay.
pub const FENCE_SLACK: Duration = Duration::from_millis(100);

/// The Kafka settings the delivery mode depends on. For exactly-once
/// (idempotent) delivery no message may outlive the fence delay in the
/// producer: `message.timeout.ms` and `request.timeout.ms` are bounded by
/// [`delivery_timeout`], whatever `kafka.properties` says.
pub(super) fn producer_settings(
    kafka: &crate::config::KafkaConfig,
    ttl: i64,
    exactly_once: bool,
) -> crate::config::KafkaConfig {
    let mut k = kafka.clone();
    if exactly_once {
        let ms = delivery_timeout(ttl).as_millis().to_string();
        for prop in ["message.timeout.ms", "request.timeout.ms"] {
            if let Some(v) = k.properties.get(prop) {
                if v != &ms {
                    tracing::warn!(property = prop, given = %v, used = %ms, "kafka.properties value replaced: exactly-once delivery bounds it by the lease");
                }
            }
            k.properties.insert(prop.to_string(), ms.clone());
        }
    }
    k
}

#[cfg(test)]
mod fence_tests {
    use super::*;
    use crate::bridge::CLEAN_STOP;

    fn extra(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn a_margin_covering_the_fence_means_no_wait() {
        let fence = delivery_timeout(1) + FENCE_SLACK;
        let e = extra(serde_json::json!({ SEND_MARGIN_MS: 600 }));
        assert_eq!(fence_wait(fence, Some(&e)), Duration::ZERO);
    }

    #[test]
    fn no_recorded_margin_means_the_whole_fence() {
        let fence = delivery_timeout(2) + FENCE_SLACK;
        assert_eq!(fence, Duration::from_millis(1100));
        assert_eq!(fence_wait(fence, None), fence);
        let e = extra(serde_json::json!({ CLEAN_STOP: false }));
        assert_eq!(fence_wait(fence, Some(&e)), fence);
        // A leader that ran at-least-once (margin 0) leaves the whole delay.
        let e = extra(serde_json::json!({ SEND_MARGIN_MS: 0 }));
        assert_eq!(fence_wait(fence, Some(&e)), fence);
    }

    #[test]
    fn a_smaller_margin_leaves_the_rest() {
        // The previous leader ran with a 1 s lease, this one with 2 s.
        let fence = delivery_timeout(2) + FENCE_SLACK;
        let e = extra(serde_json::json!({ SEND_MARGIN_MS: 600 }));
        assert_eq!(fence_wait(fence, Some(&e)), Duration::from_millis(500));
    }
}
