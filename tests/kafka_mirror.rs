//! Topic mirroring between two Kafka clusters (the testbed's kafka and kafka-b): a topic's
//! history and the messages produced while `ferry run` is SIGKILLed five times arrive
//! exactly once, each partition in order, with keys, values, headers and timestamps as
//! produced (read by kafka-python); two-way mirroring does not loop; a missing source
//! topic is named with its fix.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::kafka::{self, Message};
use crate::support::mariadb::unique;
use crate::support::{FerryRun, ferry_within};

/// A task file mirroring `topics` from cluster A (site dc-a) to cluster B (site dc-b).
fn task_file(dir: &Path, task: &str, mode: &str, topics: &str) -> PathBuf {
    let config = dir.join("ferry.toml");
    std::fs::write(
        &config,
        format!(
            "[node]\nid = \"{task}\"\nstore = \"sqlite://meta.db\"\n\n\
             [[endpoint]]\nname = \"ka\"\nsite = \"dc-a\"\nurl = \"{}\"\n\n\
             [[endpoint]]\nname = \"kb\"\nsite = \"dc-b\"\nurl = \"{}\"\n\n\
             [[task]]\nname = \"{task}\"\nfrom = \"ka\"\nto = \"kb\"\nmode = \"{mode}\"\ntables = [{topics}]\n",
            kafka::url(),
            kafka::url_b()
        ),
    )
    .expect("task file");
    config
}

fn require_both() -> (String, String) {
    let (a, b) = (kafka::broker(), kafka::host_port(&kafka::url_b()));
    kafka::require_at(&a);
    kafka::require_at(&b);
    (a, b)
}

async fn consume(addr: &str, topic: &str) -> Vec<Message> {
    let (addr, topics) = (addr.to_string(), vec![topic.to_string()]);
    tokio::task::spawn_blocking(move || kafka::consume_at(&addr, &topics)).await.expect("consumer")
}

/// What the application produced in a message: partition, key, value, its own headers
/// (ferry's left out), timestamp.
fn produced(m: &Message) -> (i64, Option<String>, Option<serde_json::Value>, Vec<(String, String)>, i64) {
    let headers = m
        .headers
        .iter()
        .filter(|(k, _)| !k.starts_with("ferry."))
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
        .collect();
    (m.partition, m.key.clone(), m.value.clone(), headers, m.timestamp)
}

/// Polls cluster `addr` until `topic` holds `want` messages (or 30 s pass).
async fn wait_for(addr: &str, topic: &str, want: usize) -> Vec<Message> {
    let mut got = Vec::new();
    for _ in 0..60 {
        got = consume(addr, topic).await;
        if got.len() >= want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mirrored_messages_arrive_exactly_once_in_order_with_headers_and_timestamps_after_sigkills() {
    let (a, b) = require_both();
    let dir = tempfile::tempdir().expect("tempdir");
    let task = unique("mirror");
    let topic = task.replace('_', "-");
    // History before the first start: copied by the snapshot.
    kafka::produce(&a, &topic, 3, 0, 150, 0);
    let config = task_file(dir.path(), &task, "one-way", &format!("\"{topic}\""));
    let log = dir.path().join("ferry.log");
    let mut ferry = FerryRun::start(&config, &log);

    // Messages produced while ferry is killed and restarted five times.
    let live = 400;
    let producer = tokio::task::spawn_blocking({
        let (a, topic) = (a.clone(), topic.clone());
        move || kafka::produce(&a, &topic, 3, 150, live, 15)
    });
    let mut rng = fastrand::Rng::with_seed(21);
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(rng.u64(700..1400))).await;
        ferry.kill();
        ferry = FerryRun::start(&config, &log);
    }
    producer.await.expect("producer");
    let total = 150 + live as usize;
    let got = wait_for(&b, &topic, total).await;
    // Anything late (a duplicate) would show within a moment.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let got = if got.len() >= total { consume(&b, &topic).await } else { got };
    ferry.terminate();
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();

    let source = consume(&a, &topic).await;
    assert_eq!(source.len(), total, "the producer's messages are all in cluster A");
    let want: Vec<_> = source.iter().map(produced).collect();
    let mirrored: Vec<_> = got.iter().map(produced).collect();
    assert_eq!(
        mirrored.len(),
        want.len(),
        "cluster B holds each message exactly once ({} there, {} produced)\nferry log:\n{log_text}",
        mirrored.len(),
        want.len()
    );
    assert_eq!(mirrored, want, "each partition holds the same messages in the same order, as produced");
    for m in &got {
        assert_eq!(m.headers.get("ferry.origin").and_then(|v| v.as_str()), Some("dc-a"), "origin header: {m:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_way_mirroring_delivers_both_sides_messages_without_loops() {
    let (a, b) = require_both();
    let dir = tempfile::tempdir().expect("tempdir");
    let task = unique("mirror2w");
    let topic = task.replace('_', "-");
    kafka::produce(&a, &topic, 2, 0, 20, 0);
    kafka::produce(&b, &topic, 2, 1000, 20, 0);
    let config = task_file(dir.path(), &task, "two-way", &format!("\"{topic}\""));
    let log = dir.path().join("ferry.log");
    let ferry = FerryRun::start(&config, &log);
    let (got_a, got_b) = (wait_for(&a, &topic, 40).await, wait_for(&b, &topic, 40).await);
    // While running, more on B reaches A once.
    kafka::produce(&b, &topic, 2, 2000, 5, 0);
    let got_a2 = wait_for(&a, &topic, 45).await;
    // A loop would keep adding copies: give it time to show.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (end_a, end_b) = (consume(&a, &topic).await, consume(&b, &topic).await);
    drop(ferry);
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(got_a.len() >= 40 && got_b.len() >= 40 && got_a2.len() >= 45, "both sides caught up\n{log_text}");
    assert_eq!((end_a.len(), end_b.len()), (45, 45), "every message once on each side, no loop\n{log_text}");
    let from = |ms: &[Message], site: &str| {
        ms.iter().filter(|m| m.headers.get("ferry.origin").and_then(|v| v.as_str()) == Some(site)).count()
    };
    assert_eq!(from(&end_a, "dc-b"), 25, "A holds B's messages, marked with B's origin");
    assert_eq!(from(&end_b, "dc-a"), 20, "B holds A's messages, marked with A's origin");
    let mut ids_a: Vec<i64> = end_a.iter().filter_map(|m| m.value.as_ref()?["i"].as_i64()).collect();
    let mut ids_b: Vec<i64> = end_b.iter().filter_map(|m| m.value.as_ref()?["i"].as_i64()).collect();
    ids_a.sort_unstable();
    ids_b.sort_unstable();
    assert_eq!(ids_a, ids_b, "both clusters hold the same messages");
}

#[tokio::test]
async fn a_missing_source_topic_is_named_with_its_fix() {
    require_both();
    let dir = tempfile::tempdir().expect("tempdir");
    let task = unique("mirrormiss");
    let config = task_file(dir.path(), &task, "one-way", "\"no-such-topic-here\"");
    let out = ferry_within(&["check", "--config", config.to_str().expect("path")], Duration::from_secs(60)).await;
    assert_eq!(out.code, Some(2), "a setup problem: {}", out.all());
    assert!(
        out.all().contains("topic no-such-topic-here does not exist") && out.all().contains("fix:"),
        "{}",
        out.all()
    );
}

#[tokio::test]
async fn a_mirrored_message_too_large_for_the_target_stops_naming_its_partition_and_offset() {
    let (a, b) = require_both();
    let dir = tempfile::tempdir().expect("tempdir");
    let task = unique("mirrorbig");
    let topic = task.replace('_', "-");
    kafka::produce(&a, &topic, 1, 0, 3, 0);
    let config = task_file(dir.path(), &task, "one-way", &format!("\"{topic}\""));
    // Every mirrored message (value, key and ferry's headers) is above 60 bytes.
    let text = std::fs::read_to_string(&config).expect("task file");
    let target = kafka::url_b();
    std::fs::write(&config, text.replace(&format!("\"{target}\""), &format!("\"{target}?max_message_bytes=60\"")))
        .expect("task file");
    let log = dir.path().join("ferry.log");
    let mut run = FerryRun::start(&config, &log);
    let mut text = String::new();
    for _ in 0..150 {
        text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("max_message_bytes") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    run.terminate();
    assert!(
        text.contains("max_message_bytes") && text.contains(&format!("table {topic}, key (0, 0)")),
        "names the topic, partition and offset, and the limit: {text}"
    );
    assert!(consume(&b, &topic).await.is_empty(), "nothing was mirrored past the refused message");
}
