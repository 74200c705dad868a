//! Does the broker support Kafka transactions? Asked once at startup for
//! `kafka.delivery = "auto"` (pick `transactional` or `idempotent`) and for
//! an explicit `transactional` (refuse a broker without them).
//!
//! How: every librdkafka client sends an `ApiVersions` request on each new
//! broker connection — after TLS, before SASL authentication — and logs the
//! answer under the `feature` debug context as
//! `  ApiKey EndTxn (26) Versions 0..3`. The probe opens a client with the
//! bridge's own connection properties (so TLS and SASL work exactly as for
//! the producer), forces a connection with a metadata request, and reads
//! those lines. Transactions need InitProducerId (22), AddPartitionsToTxn
//! (24) and EndTxn (26). tansu 0.6.0, for one, lists no EndTxn.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::ClientConfig;

use super::SinkError;
use crate::config::KafkaConfig;

/// The Kafka APIs a transactional producer needs, by key.
pub const TXN_APIS: [(i16, &str); 3] = [
    (22, "InitProducerId"),
    (24, "AddPartitionsToTxn"),
    (26, "EndTxn"),
];

/// What the broker said about transactions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnSupport {
    Supported,
    /// The transaction APIs the broker does not list.
    Missing(Vec<&'static str>),
}

/// What the log lines said: whether the list header was seen, and
/// ApiKey -> (min, max) version.
type Seen = (bool, BTreeMap<i16, (i16, i16)>);

#[derive(Clone, Default)]
struct Capture {
    apis: Arc<Mutex<Seen>>,
}

impl ClientContext for Capture {
    fn log(&self, _level: RDKafkaLogLevel, fac: &str, line: &str) {
        if fac != "APIVERSION" {
            return;
        }
        let Ok(mut st) = self.apis.lock() else {
            return;
        };
        if line.contains("Broker API support:") {
            st.0 = true;
        } else if let Some((key, min, max)) = parse_api_line(line) {
            st.1.insert(key, (min, max));
        }
    }
}

impl ConsumerContext for Capture {}

/// `[thrd:..]: host:port/id:   ApiKey EndTxn (26) Versions 0..3` -> (26, 0, 3).
fn parse_api_line(line: &str) -> Option<(i16, i16, i16)> {
    let rest = &line[line.find("  ApiKey ")? + 9..];
    let open = rest.find('(')?;
    let close = rest[open..].find(')')? + open;
    let key: i16 = rest[open + 1..close].parse().ok()?;
    let versions = rest[close + 1..].trim().strip_prefix("Versions ")?;
    let (min, max) = versions.split_once("..")?;
    Some((key, min.trim().parse().ok()?, max.trim().parse().ok()?))
}

/// Which of [`TXN_APIS`] the version list lacks.
fn missing(apis: &BTreeMap<i16, (i16, i16)>) -> Vec<&'static str> {
    TXN_APIS
        .iter()
        .filter(|(k, _)| !apis.contains_key(k))
        .map(|(_, name)| *name)
        .collect()
}

/// Ask the brokers whether they support transactions (blocking; run it
/// off the async runtime).
pub fn probe_transactions(cfg: &KafkaConfig, timeout: Duration) -> Result<TxnSupport, SinkError> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.brokers);
    for (k, v) in &cfg.properties {
        if k.starts_with("security.")
            || k.starts_with("ssl.")
            || k.starts_with("sasl.")
            || k.starts_with("socket.")
            || k == "broker.address.family"
            || k == "client.id"
        {
            c.set(k, v);
        }
    }
    c.set("debug", "feature")
        .set_log_level(rdkafka::config::RDKafkaLogLevel::Debug);
    let capture = Capture::default();
    let consumer: BaseConsumer<Capture> = c
        .create_with_context(capture.clone())
        .map_err(|e| SinkError::Client(e.to_string()))?;
    consumer
        .fetch_metadata(None, timeout)
        .map_err(|e| SinkError::Connect {
            brokers: cfg.brokers.clone(),
            reason: e.to_string(),
        })?;
    // The version list is logged before the connection is up; the client
    // queues its log lines, and polling serves them to the context.
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    loop {
        let _ = consumer.poll(Duration::from_millis(20));
        if let Ok(st) = capture.apis.lock() {
            if st.0 && !st.1.is_empty() {
                let m = missing(&st.1);
                return Ok(if m.is_empty() {
                    TxnSupport::Supported
                } else {
                    TxnSupport::Missing(m)
                });
            }
        }
        if std::time::Instant::now() > deadline {
            return Err(SinkError::Connect {
                brokers: cfg.brokers.clone(),
                reason: "the broker's ApiVersions answer was not seen (api.version.request disabled?); set kafka.delivery explicitly".into(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_lines_parse_and_missing_apis_are_named() {
        assert_eq!(
            parse_api_line("  ApiKey EndTxn (26) Versions 0..3"),
            Some((26, 0, 3))
        );
        // As librdkafka 2.12 logs it.
        assert_eq!(
            parse_api_line("[thrd:127.0.0.1:9122/bootstrap]: 127.0.0.1:9122/bootstrap:   ApiKey InitProducerId (22) Versions 0..5"),
            Some((22, 0, 5))
        );
        assert_eq!(
            parse_api_line("[thrd:x]: x:   ApiKey Unknown-75? (75) Versions 0..0"),
            Some((75, 0, 0))
        );
        assert_eq!(
            parse_api_line("  ApiKey Produce (0) Versions 3..11"),
            Some((0, 3, 11))
        );
        assert_eq!(parse_api_line("Broker API support:"), None);
        assert_eq!(parse_api_line("  ApiKey Weird (x) Versions 0..1"), None);
        let mut apis = BTreeMap::new();
        apis.insert(22, (0, 4));
        apis.insert(24, (0, 3));
        assert_eq!(missing(&apis), ["EndTxn"]);
        apis.insert(26, (0, 3));
        assert!(missing(&apis).is_empty());
    }
}
