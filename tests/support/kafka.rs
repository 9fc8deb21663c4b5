//! Kafka for tests: the testbed's broker (tansu, `scripts/testbed`) and an independent
//! consumer written in Python with kafka-python, so what ferry wrote is read by another
//! client than the one that wrote it.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

/// URL of the testbed's broker (FERRY_TEST_KAFKA, as `scripts/testbed env` prints it).
pub fn url() -> String {
    std::env::var("FERRY_TEST_KAFKA").unwrap_or_else(|_| "kafka://127.0.0.1:9192".into())
}

/// URL of the testbed's second broker, the other data center's cluster (FERRY_TEST_KAFKA_B).
pub fn url_b() -> String {
    std::env::var("FERRY_TEST_KAFKA_B").unwrap_or_else(|_| "kafka://127.0.0.1:9193".into())
}

/// `host:port` of the broker.
pub fn broker() -> String {
    host_port(&url())
}

/// `host:port` of a `kafka://` URL's first broker.
pub fn host_port(url: &str) -> String {
    url.trim_start_matches("kafka://").split(['?', ',']).next().unwrap_or_default().to_string()
}

fn python() -> String {
    std::env::var("FERRY_TEST_KAFKA_PYTHON")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/.testbed/venv/bin/python").to_string())
}

/// Fails the test, saying how to start the testbed, when the broker is not there.
pub fn require() {
    require_at(&broker());
}

/// Fails the test, saying how to start the testbed, when the broker at `addr` is not there.
pub fn require_at(addr: &str) {
    let addr = addr.to_string();
    let ok = addr
        .parse::<std::net::SocketAddr>()
        .ok()
        .is_some_and(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_secs(3)).is_ok());
    assert!(
        ok,
        "the Kafka broker at {addr} is not reachable\nstart the testbed with `scripts/testbed start` and \
         `eval \"$(scripts/testbed env)\"` (or run the whole suite with `scripts/test`)"
    );
    assert!(
        std::path::Path::new(&python()).exists(),
        "kafka-python's virtualenv {} is missing\nrun `scripts/testbed start`, which installs it",
        python()
    );
}

/// The consumer: every message of every partition of the topics, from the start to the
/// end, as JSON lines (partition, offset, key, value, headers).
const CONSUMER: &str = r#"
import json, sys
from kafka import KafkaConsumer, TopicPartition
c = KafkaConsumer(bootstrap_servers=sys.argv[1], api_version=(2, 5), enable_auto_commit=False)
tps = []
for topic in sys.argv[2:]:
    for p in sorted(c.partitions_for_topic(topic) or []):
        tps.append(TopicPartition(topic, p))
if not tps:
    sys.exit(0)
c.assign(tps)
c.seek_to_beginning(*tps)
out = []
# Until two polls in a row find nothing (end_offsets is not used: tansu 0.6 answers
# ListOffsets with a stale end).
empty = 0
for _ in range(240):
    got = c.poll(500)
    if not got:
        empty += 1
        if empty >= 2:
            break
        continue
    empty = 0
    for tp, recs in got.items():
        for r in recs:
            out.append({"topic": r.topic, "partition": r.partition, "offset": r.offset,
                        "key": r.key.decode() if r.key is not None else None,
                        "value": json.loads(r.value) if r.value is not None else None,
                        "headers": {k: v.decode() for k, v in r.headers},
                        "timestamp": r.timestamp})
for o in out:
    print(json.dumps(o))
"#;

/// One message as the consumer read it.
#[derive(Debug, Clone)]
pub struct Message {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i64,
    /// Offset.
    pub offset: i64,
    /// Key text.
    pub key: Option<String>,
    /// Value, parsed (None: a tombstone).
    pub value: Option<Value>,
    /// Headers.
    pub headers: serde_json::Map<String, Value>,
    /// Timestamp, ms.
    pub timestamp: i64,
}

/// Every message of these topics, per partition in offset order.
pub fn consume(topics: &[String]) -> Vec<Message> {
    consume_at(&broker(), topics)
}

/// Every message of these topics on the broker at `addr`, per partition in offset order.
pub fn consume_at(addr: &str, topics: &[String]) -> Vec<Message> {
    let mut cmd = Command::new(python());
    cmd.arg("-c").arg(CONSUMER).arg(addr).args(topics);
    let out = cmd.output().expect("run the kafka-python consumer");
    assert!(out.status.success(), "the consumer failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("consumer line is JSON");
            Message {
                topic: v["topic"].as_str().unwrap_or_default().to_string(),
                partition: v["partition"].as_i64().unwrap_or(-1),
                offset: v["offset"].as_i64().unwrap_or(-1),
                key: v["key"].as_str().map(str::to_string),
                value: (!v["value"].is_null()).then(|| v["value"].clone()),
                headers: v["headers"].as_object().cloned().unwrap_or_default(),
                timestamp: v["timestamp"].as_i64().unwrap_or(-1),
            }
        })
        .collect()
}

/// The producer: creates the topic (with `partitions`) unless it exists, then sends
/// messages `first..first+count` round-robin over the partitions, one every `pause_ms`:
/// key `k{i % 7}`, value `{"i": i}`, a header `n` = i, timestamp 1_600_000_000_000 + i ms.
const PRODUCER: &str = r#"
import json, sys, time
from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import TopicAlreadyExistsError
addr, topic, partitions, first, count, pause = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:7])
a = KafkaAdminClient(bootstrap_servers=addr, api_version=(2, 5))
try:
    a.create_topics([NewTopic(topic, partitions, 1)])
except TopicAlreadyExistsError:
    pass
p = KafkaProducer(bootstrap_servers=addr, api_version=(2, 5))
for i in range(first, first + count):
    p.send(topic, key=b"k%d" % (i % 7), value=json.dumps({"i": i}).encode(), partition=i % partitions,
           headers=[("n", str(i).encode())], timestamp_ms=1600000000000 + i)
    if pause:
        p.flush()
        time.sleep(pause / 1000)
p.flush()
"#;

/// Produces messages `first..first+count` to `topic` on the broker at `addr` (see
/// [`PRODUCER`]), creating the topic with `partitions` if it is missing.
pub fn produce(addr: &str, topic: &str, partitions: u32, first: u32, count: u32, pause_ms: u32) {
    let out = Command::new(python())
        .arg("-c")
        .arg(PRODUCER)
        .args([addr, topic])
        .args([partitions, first, count, pause_ms].map(|n| n.to_string()))
        .output()
        .expect("run the kafka-python producer");
    assert!(out.status.success(), "the producer failed: {}", String::from_utf8_lossy(&out.stderr));
}
