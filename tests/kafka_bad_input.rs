//! Kafka bad input: an unreachable broker, a missing topic ferry may not create, a
//! message too large. Each gives a clear error naming what is wrong and how to fix it,
//! and nothing of a refused batch is recorded as done.

use std::path::Path;
use std::time::Duration;

use crate::support::kafka;
use crate::support::mariadb::unique;
use crate::support::{FerryRun, Outcome, create_db, ferry_within};

/// A SQLite source `a.db` with one table and a Kafka target at `url`.
async fn setup(dir: &Path, url: &str, task: &str) -> std::path::PathBuf {
    create_db(&dir.join("a.db"), "CREATE TABLE items(id INTEGER PRIMARY KEY, v TEXT);").await;
    let config = dir.join("ferry.toml");
    std::fs::write(
        &config,
        format!(
            "[node]\nid = \"kbad\"\nstore = \"sqlite://meta.db\"\n\n[[endpoint]]\nname = \"lite\"\nurl = \"sqlite://a.db\"\n\n\
             [[endpoint]]\nname = \"k\"\nurl = \"{url}\"\n\n[[task]]\nname = \"{task}\"\nfrom = \"lite\"\nto = \"k\"\n\
             tables = [\"items\"]\ntopic = \"{task}.{{db}}.{{table}}\"\n"
        ),
    )
    .expect("task file");
    config
}

async fn ferry(args: &[&str]) -> Outcome {
    ferry_within(args, Duration::from_secs(60)).await
}

#[tokio::test]
async fn an_unreachable_broker_and_a_topic_ferry_may_not_create_are_named_by_check() {
    kafka::require();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = setup(dir.path(), "kafka://127.0.0.1:1", &unique("kbad")).await;
    let out = ferry(&["check", "--config", config.to_str().expect("path")]).await;
    assert_eq!(out.code, Some(2), "a setup problem: {}", out.all());
    assert!(out.all().contains("cannot reach the Kafka brokers") && out.all().contains("127.0.0.1:1"), "{}", out.all());
    assert!(out.all().contains("check that the brokers run"), "the fix is given: {}", out.all());

    let dir = tempfile::tempdir().expect("tempdir");
    let task = unique("kbad");
    let url = format!("{}?create_topics=false", kafka::url());
    let config = setup(dir.path(), &url, &task).await;
    let topic = format!("{task}.main.items");
    let run = ferry(&["run", "--config", config.to_str().expect("path")]).await;
    assert_ne!(run.code, Some(0), "{}", run.all());
    assert!(
        run.all().contains(&format!("topic {topic} (of table items) does not exist"))
            && run.all().contains("create topic"),
        "{}",
        run.all()
    );
}

#[tokio::test]
async fn a_message_too_large_stops_the_task_naming_its_row_and_records_nothing_past_it() {
    kafka::require();
    let dir = tempfile::tempdir().expect("tempdir");
    let task = unique("kbig");
    let url = format!("{}?max_message_bytes=600", kafka::url());
    let config = setup(dir.path(), &url, &task).await;
    let mut c = crate::support::app_conn(&dir.path().join("a.db")).await;
    sqlx::query("INSERT INTO items(id, v) VALUES (1, 'small')").execute(&mut c).await.expect("row");
    sqlx::query("INSERT INTO items(id, v) VALUES (2, ?1)").bind("x".repeat(2000)).execute(&mut c).await.expect("row");
    // The task stops applying at the refused row (ferry run stays up for `ferry skip`).
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
        text.contains("max_message_bytes") && text.contains("table items, key (2)"),
        "names the row and the limit: {text}"
    );
    let topic = format!("{task}.main.items");
    let got = kafka::consume(std::slice::from_ref(&topic));
    assert!(got.iter().all(|m| m.key.as_deref() != Some("{\"id\":2}")), "the large row was not written: {got:?}");
}
