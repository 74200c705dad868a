#!/usr/bin/env python3
"""The peer of the benchmark: python-mysql-replication + confluent-kafka.

Streams the binlog from FILE:POS with python-mysql-replication, turns every
row change of --db into a Debezium-like JSON message (before, after, source
with file/pos/ts, op) keyed by the JSON of the primary key, and produces it
with confluent-kafka (librdkafka) to topic PREFIX.DB.TABLE (created first,
3 partitions) with the bridge's producer settings: acks=all, idempotence,
lz4, linger 5 ms. Stops once --expect row changes are delivered and prints

    RESULT rows=N secs=S rate=R cpu_secs=C

where the time runs from the first row change read to the last delivery
acknowledged (connecting and the scan up to the first row are not in it),
and C is the CPU time (user + system, all threads) of the whole process.

Usage: peer.py --mysql-port P --file F --pos N --db D --expect N --brokers B --topic-prefix T
"""

import argparse
import datetime
import decimal
import json
import resource
import sys
import time

from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent


def plain(v):
    if isinstance(v, (bytes, bytearray)):
        return v.decode("utf-8", "replace")
    if isinstance(v, decimal.Decimal):
        return str(v)
    if isinstance(v, (datetime.datetime, datetime.date, datetime.time, datetime.timedelta)):
        return str(v)
    return str(v)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mysql-host", default="127.0.0.1")
    ap.add_argument("--mysql-port", type=int, required=True)
    ap.add_argument("--mysql-user", default="bridge")
    ap.add_argument("--mysql-password", default="bridge")
    ap.add_argument("--server-id", type=int, default=4901)
    ap.add_argument("--file", required=True)
    ap.add_argument("--pos", type=int, required=True)
    ap.add_argument("--db", required=True)
    ap.add_argument("--expect", type=int, required=True)
    ap.add_argument("--brokers", required=True)
    ap.add_argument("--topic-prefix", required=True)
    ap.add_argument("--timeout", type=float, default=1800)
    a = ap.parse_args()

    producer = Producer({
        "bootstrap.servers": a.brokers,
        "acks": "all",
        "enable.idempotence": True,
        "compression.type": "lz4",
        "linger.ms": 5,
        "queue.buffering.max.messages": 200000,
    })
    admin = AdminClient({"bootstrap.servers": a.brokers})
    created = set()
    failed = []
    delivered = [0]

    def on_delivery(err, _msg):
        if err is not None:
            failed.append(err)
        else:
            delivered[0] += 1

    def topic_for(table):
        t = f"{a.topic_prefix}.{a.db}.{table}"
        known = admin.list_topics(t, timeout=10).topics.get(t) if t not in created else None
        if known is not None and known.error is None and known.partitions:
            created.add(t)  # made beforehand (the mock broker has no CreateTopics)
        if t not in created:
            fut = admin.create_topics([NewTopic(t, num_partitions=3, replication_factor=1)])
            for f in fut.values():
                try:
                    f.result(30)
                except KafkaException as e:
                    if "TOPIC_ALREADY_EXISTS" not in str(e):
                        raise
            created.add(t)
        return t

    stream = BinLogStreamReader(
        connection_settings={"host": a.mysql_host, "port": a.mysql_port,
                             "user": a.mysql_user, "passwd": a.mysql_password},
        server_id=a.server_id,
        log_file=a.file,
        log_pos=a.pos,
        resume_stream=True,
        blocking=True,
        only_events=[WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent],
        only_schemas=[a.db],
    )
    started = None
    sent = 0
    deadline = time.monotonic() + a.timeout
    try:
        for ev in stream:
            if started is None:
                started = time.monotonic()
            topic = topic_for(ev.table)
            pk = ev.primary_key
            pks = list(pk) if isinstance(pk, (tuple, list)) else [pk]
            for row in ev.rows:
                if isinstance(ev, WriteRowsEvent):
                    before, after, op = None, row["values"], "c"
                elif isinstance(ev, UpdateRowsEvent):
                    before, after, op = row["before_values"], row["after_values"], "u"
                else:
                    before, after, op = row["values"], None, "d"
                image = after if after is not None else before
                key = json.dumps({k: image[k] for k in pks}, default=plain)
                value = json.dumps({
                    "before": before, "after": after, "op": op,
                    "source": {"db": ev.schema, "table": ev.table, "ts_ms": ev.timestamp * 1000,
                               "file": stream.log_file, "pos": ev.packet.log_pos},
                    "ts_ms": int(time.time() * 1000),
                }, default=plain)
                while True:
                    try:
                        producer.produce(topic, value=value, key=key, on_delivery=on_delivery)
                        break
                    except BufferError:
                        producer.poll(0.05)
                sent += 1
            producer.poll(0)
            if failed:
                raise RuntimeError(f"delivery failed: {failed[0]}")
            if sent >= a.expect:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out after {a.timeout} s with {sent} of {a.expect} rows")
        left = producer.flush(300)
        if left or failed:
            raise RuntimeError(f"{left} messages undelivered, errors: {failed[:3]}")
    finally:
        stream.close()
    secs = time.monotonic() - started
    if delivered[0] != a.expect:
        print(f"peer: delivered {delivered[0]} messages, expected {a.expect}", file=sys.stderr)
        sys.exit(1)
    ru = resource.getrusage(resource.RUSAGE_SELF)
    cpu = ru.ru_utime + ru.ru_stime
    print(f"RESULT rows={delivered[0]} secs={secs:.3f} rate={delivered[0] / secs:.0f} cpu_secs={cpu:.2f}")


if __name__ == "__main__":
    main()
