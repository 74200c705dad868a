//! The Kafka-protocol broker is real and durable: an idempotent producer's
//! keyed messages with headers survive a `kill -9` of the broker, and the last
//! message of a partition (offset high-1) reads back with its headers.

mod common;

use std::time::Duration;

use common::broker::PrivateBroker;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

fn config(brokers: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers);
    c
}

async fn create_topic(brokers: &str, topic: &str, partitions: i32) {
    let admin: AdminClient<_> = config(brokers).create().unwrap();
    let r = admin
        .create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .unwrap();
    for t in r {
        t.unwrap_or_else(|(name, e)| panic!("create topic {name}: {e}"));
    }
}

/// offset, key, payload, headers
type Read = (i64, Vec<u8>, Vec<u8>, Vec<(String, Vec<u8>)>);

/// Read the last message of `partition`, retrying while the broker comes back.
fn last_message(brokers: &str, topic: &str, partition: i32) -> Read {
    let consumer: BaseConsumer = config(brokers)
        .set("group.id", "smoke-kafka")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let (_, high) = loop {
        match consumer.fetch_watermarks(topic, partition, Duration::from_secs(5)) {
            Ok(w) => break w,
            Err(e) if std::time::Instant::now() < deadline => {
                eprintln!("watermarks: {e}; retrying");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("fetch watermarks: {e}"),
        }
    };
    assert!(high > 0, "partition {partition} is empty");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(high - 1))
        .unwrap();
    consumer.assign(&tpl).unwrap();
    while std::time::Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => {
                let headers = m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|x| (x.key.to_string(), x.value.unwrap_or_default().to_vec()))
                            .collect()
                    })
                    .unwrap_or_default();
                return (
                    m.offset(),
                    m.key().unwrap_or_default().to_vec(),
                    m.payload().unwrap_or_default().to_vec(),
                    headers,
                );
            }
            Some(Err(e)) => eprintln!("poll: {e}"),
            None => {}
        }
    }
    panic!(
        "no message read from {topic}/{partition} at offset {}",
        high - 1
    );
}

#[tokio::test]
async fn idempotent_produce_survives_broker_kill_and_last_message_reads_back() {
    let mut broker = PrivateBroker::start();
    let brokers = broker.brokers();
    let topic = "smoke-kafka";
    create_topic(&brokers, topic, 3).await;

    let producer: FutureProducer = config(&brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("message.timeout.ms", "30000")
        .create()
        .unwrap();
    for i in 0..20u32 {
        let key = format!("k{}", i % 4);
        let payload = format!("v{i}");
        let headers = OwnedHeaders::new().insert(Header {
            key: "bb.position",
            value: Some(format!("binlog.000001:{}", 100 + i).as_bytes()),
        });
        let rec = FutureRecord::to(topic)
            .key(&key)
            .payload(&payload)
            .partition((i % 3) as i32)
            .headers(headers);
        producer
            .send(rec, Duration::from_secs(10))
            .await
            .unwrap_or_else(|(e, _)| panic!("send {i}: {e}"));
    }

    // kill -9 and restart: acknowledged messages must persist.
    broker.kill();
    broker.restart();

    // i = 17 is the last one sent to partition 2 (i % 3 == 2).
    let (offset, key, payload, headers) = last_message(&brokers, topic, 2);
    assert_eq!(offset, 5, "partition 2 got 6 messages (i = 2, 5, ..., 17)");
    assert_eq!(key, b"k1");
    assert_eq!(payload, b"v17");
    assert_eq!(
        headers,
        vec![("bb.position".to_string(), b"binlog.000001:117".to_vec())]
    );

    // The producer keeps working after the restart (same idempotent session or a new one).
    producer
        .send(
            FutureRecord::to(topic)
                .key("k9")
                .payload("after")
                .partition(2),
            Duration::from_secs(30),
        )
        .await
        .unwrap_or_else(|(e, _)| panic!("send after restart: {e}"));
    let (offset, key, payload, _) = last_message(&brokers, topic, 2);
    assert_eq!(
        (offset, key.as_slice(), payload.as_slice()),
        (6, &b"k9"[..], &b"after"[..])
    );
}
