//! Kafka as a sink of change events: a SQLite, a MySQL and a PostgreSQL source, `ferry run` SIGKILLed
//! five times while the applications write; an independent consumer (kafka-python) then
//! finds every change exactly once, each key's events in the order they were made, in
//! the documented envelope.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use mysql_async::prelude::Queryable;
use serde_json::{Value, json};

use crate::support::kafka::{self, Message};
use crate::support::mariadb::{self, Cleanup};
use crate::support::postgres as pg;
use crate::support::{FerryRun, app_conn, create_db};

/// Keys the applications cycle through.
const KEYS: i64 = 12;

/// One change the application made: key, op (c/u/d) and the row's `v` after it.
type Made = (i64, &'static str, Option<String>);

/// What the application does at step `i` to key `i % KEYS`, given whether the key exists.
fn step(i: i64, exists: bool) -> (&'static str, String) {
    let v = format!("v{i}");
    match (exists, i % 5) {
        (false, _) => ("c", v),
        (true, 4) => ("d", v),
        (true, _) => ("u", v),
    }
}

/// Records a change the application made, and whether its key now exists.
fn note(live: &mut std::collections::HashSet<i64>, made: &mut Vec<Made>, k: i64, op: &'static str, v: String) {
    if op == "d" {
        live.remove(&k);
    } else {
        live.insert(k);
    }
    made.push((k, op, (op != "d").then_some(v)));
}

/// The SQLite application: one transaction per change until `stop`.
async fn sqlite_app(path: &Path, stop: Arc<AtomicBool>, first: i64) -> Vec<Made> {
    let mut c = app_conn(path).await;
    let mut made = Vec::new();
    let mut live = std::collections::HashSet::new();
    let mut i = first;
    while !stop.load(Ordering::Relaxed) {
        let k = i % KEYS;
        let (op, v) = step(i, live.contains(&k));
        let sql = match op {
            "c" => "INSERT INTO items(id, v, amount) VALUES (?1, ?2, '1.50')",
            "u" => "UPDATE items SET v = ?2, amount = '2.25' WHERE id = ?1",
            _ => "DELETE FROM items WHERE id = ?1 AND ?2 IS NOT NULL",
        };
        sqlx::query(sqlite_sql(sql)).bind(k).bind(&v).execute(&mut c).await.expect("sqlite write");
        note(&mut live, &mut made, k, op, v);
        i += 1;
        tokio::time::sleep(Duration::from_millis(4)).await;
    }
    made
}

fn sqlite_sql(s: &'static str) -> sqlx::AssertSqlSafe<&'static str> {
    sqlx::AssertSqlSafe(s)
}

/// The MySQL application: one transaction per change until `stop`.
async fn mysql_app(url: &str, db: &str, stop: Arc<AtomicBool>) -> Vec<Made> {
    let mut c = mariadb::connect(url).await;
    let mut made = Vec::new();
    let mut live = std::collections::HashSet::new();
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        let k = i % KEYS;
        let (op, v) = step(i, live.contains(&k));
        let sql = match op {
            "c" => format!("INSERT INTO `{db}`.items(id, v, amount) VALUES ({k}, '{v}', 1.50)"),
            "u" => format!("UPDATE `{db}`.items SET v = '{v}', amount = 2.25 WHERE id = {k}"),
            _ => format!("DELETE FROM `{db}`.items WHERE id = {k}"),
        };
        c.query_drop(sql).await.expect("mysql write");
        note(&mut live, &mut made, k, op, v);
        i += 1;
        tokio::time::sleep(Duration::from_millis(4)).await;
    }
    c.disconnect().await.ok();
    made
}

/// The PostgreSQL application: one transaction per change until `stop`.
async fn pg_app(url: &str, schema: &str, stop: Arc<AtomicBool>) -> Vec<Made> {
    use sqlx::Executor;
    let mut c = pg::connect(url).await;
    let mut made = Vec::new();
    let mut live = std::collections::HashSet::new();
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        let k = i % KEYS;
        let (op, v) = step(i, live.contains(&k));
        let sql = match op {
            "c" => format!("INSERT INTO \"{schema}\".items(id, v, amount) VALUES ({k}, '{v}', 1.50)"),
            "u" => format!("UPDATE \"{schema}\".items SET v = '{v}', amount = 2.25 WHERE id = {k}"),
            _ => format!("DELETE FROM \"{schema}\".items WHERE id = {k}"),
        };
        c.execute(sqlx::raw_sql(sqlx::AssertSqlSafe(sql))).await.expect("postgres write");
        note(&mut live, &mut made, k, op, v);
        i += 1;
        tokio::time::sleep(Duration::from_millis(4)).await;
    }
    made
}

/// Each key's events in the topic (partition order), tombstones apart.
fn per_key(messages: &[Message], topic: &str) -> (BTreeMap<i64, Vec<(String, Option<String>)>>, usize) {
    let mut keys: BTreeMap<i64, Vec<(String, Option<String>)>> = BTreeMap::new();
    let mut tombstones = 0;
    let mut msgs: Vec<&Message> = messages.iter().filter(|m| m.topic == topic).collect();
    msgs.sort_by_key(|m| (m.partition, m.offset));
    for m in msgs {
        let key: Value = serde_json::from_str(m.key.as_deref().expect("every message has a key")).expect("key JSON");
        let id = key["id"].as_i64().expect("key {\"id\": N}");
        let Some(v) = &m.value else {
            tombstones += 1;
            continue;
        };
        let op = v["op"].as_str().expect("op").to_string();
        if op == "r" {
            continue;
        }
        let after = v["after"]["v"].as_str().map(str::to_string);
        keys.entry(id).or_default().push((op, after));
    }
    (keys, tombstones)
}

fn expected(made: &[Made]) -> BTreeMap<i64, Vec<(String, Option<String>)>> {
    let mut keys: BTreeMap<i64, Vec<(String, Option<String>)>> = BTreeMap::new();
    for (k, op, v) in made {
        keys.entry(*k).or_default().push((op.to_string(), v.clone()));
    }
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_mysql_and_postgres_change_events_arrive_exactly_once_after_sigkills() {
    kafka::require();
    let my = mariadb::shared_a();
    mariadb::require(&my).await;
    let mut cleanup = Cleanup::new(&my);
    let pgu = pg::shared_a();
    let mut pg_cleanup = pg::Cleanup::new(&pgu);
    let schema = pg::schema(&pgu, "kafka_src", &mut pg_cleanup).await;
    pg::exec(&pgu, &format!("CREATE TABLE \"{schema}\".items(id BIGINT PRIMARY KEY, v TEXT, amount NUMERIC(10,2))"))
        .await;
    let db = mariadb::database(&my, "kafka_src", &mut cleanup).await;
    mariadb::admin(
        &my,
        &[format!("CREATE TABLE `{db}`.items(id BIGINT PRIMARY KEY, v VARCHAR(40), amount DECIMAL(10,2))")],
    )
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let lite = dir.path().join("a.db");
    create_db(&lite, "CREATE TABLE items(id INTEGER PRIMARY KEY, v TEXT, amount TEXT);").await;
    let prefix = mariadb::unique("k");
    pg_cleanup.task(&format!("{prefix}-pg"));
    let config = dir.path().join("ferry.toml");
    std::fs::write(
        &config,
        format!(
            r#"[node]
id = "kafka-test"
store = "sqlite://meta.db"

[[endpoint]]
name = "lite"
url = "sqlite://a.db"

[[endpoint]]
name = "my"
url = "{my}/{db}"

[[endpoint]]
name = "pg"
url = "{pgu}"

[[endpoint]]
name = "k"
url = "{}?partitions=3&tombstones=true"

[[task]]
name = "{prefix}-lite"
from = "lite"
to = "k"
tables = ["items"]
topic = "{prefix}.{{db}}.{{table}}"

[[task]]
name = "{prefix}-my"
from = "my"
to = "k"
tables = ["{db}.items"]
topic = "{prefix}.{{db}}.{{table}}"

[[task]]
name = "{prefix}-pg"
from = "pg"
to = "k"
tables = ["{schema}.items"]
topic = "{prefix}.{{db}}.{{table}}"
"#,
            kafka::url()
        ),
    )
    .expect("task file");
    let lite_topic = format!("{prefix}.main.items");
    let my_topic = format!("{prefix}.{db}.items");
    let pg_topic = format!("{prefix}.{schema}.items");
    let topics = [lite_topic.clone(), my_topic.clone(), pg_topic.clone()];
    let log = dir.path().join("ferry.log");
    let mut ferry = FerryRun::start(&config, &log);

    // A first row from each source (copied or streamed, as the race with the snapshot
    // goes; key 100 is not compared): once both are in Kafka, both directions stream.
    let mut c = app_conn(&lite).await;
    sqlx::query("INSERT INTO items(id, v, amount) VALUES (100, 'first', '0')").execute(&mut c).await.expect("seed");
    let mut mc = mariadb::connect(&my).await;
    mc.query_drop(format!("INSERT INTO `{db}`.items(id, v, amount) VALUES (100, 'first', 0)")).await.expect("seed");
    pg::exec(&pgu, &format!("INSERT INTO \"{schema}\".items(id, v, amount) VALUES (100, 'first', 0)")).await;
    let mut started = false;
    for _ in 0..60 {
        let t = topics.to_vec();
        let got = tokio::task::spawn_blocking(move || kafka::consume(&t)).await.expect("consumer");
        let seen = |t: &str| got.iter().any(|m| m.topic == t && m.value.is_some());
        if topics.iter().all(|t| seen(t)) {
            started = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        started,
        "the first rows never reached Kafka; ferry log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );

    let stop = Arc::new(AtomicBool::new(false));
    let lite_app = tokio::spawn({
        let (lite, stop) = (lite.clone(), stop.clone());
        async move { sqlite_app(&lite, stop, 0).await }
    });
    let my_app = tokio::spawn({
        let (my, db, stop) = (my.clone(), db.clone(), stop.clone());
        async move { mysql_app(&my, &db, stop).await }
    });
    let pg_app = tokio::spawn({
        let (pgu, schema, stop) = (pgu.clone(), schema.clone(), stop.clone());
        async move { pg_app(&pgu, &schema, stop).await }
    });
    let mut rng = fastrand::Rng::with_seed(20);
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(rng.u64(900..1800))).await;
        ferry.kill();
        ferry = FerryRun::start(&config, &log);
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    stop.store(true, Ordering::Relaxed);
    let lite_made = lite_app.await.expect("sqlite app");
    let my_made = my_app.await.expect("mysql app");
    let pg_made = pg_app.await.expect("postgres app");
    let want = (lite_made.len(), my_made.len(), pg_made.len());

    // Caught up when every change is there (duplicates would only add to the count).
    let count = |got: &[Message], t: &str| {
        got.iter()
            .filter(|m| m.topic == t && m.value.as_ref().is_some_and(|v| v["op"] != "r" && v["after"]["v"] != "first"))
            .count()
    };
    let mut got = Vec::new();
    for _ in 0..60 {
        let t = topics.clone();
        got = tokio::task::spawn_blocking(move || kafka::consume(&t)).await.expect("consumer");
        if count(&got, &lite_topic) >= want.0 && count(&got, &my_topic) >= want.1 && count(&got, &pg_topic) >= want.2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    ferry.terminate();
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();

    for (topic, made) in [(&lite_topic, &lite_made), (&my_topic, &my_made), (&pg_topic, &pg_made)] {
        let (keys, tombstones) = per_key(&got, topic);
        let mut keys = keys;
        keys.remove(&100);
        let want = expected(made);
        let summary: Vec<(i64, usize, usize)> =
            want.iter().map(|(k, e)| (*k, keys.get(k).map_or(0, Vec::len), e.len())).collect();
        eprintln!("topic {topic}: (key, arrived, made) {summary:?}");
        for (k, events) in &want {
            let got_events = keys.get(k).cloned().unwrap_or_default();
            let first_diff = got_events.iter().zip(events).position(|(a, b)| a != b);
            assert!(
                got_events == *events,
                "topic {topic}, key {k}: {} events arrived, {} changes were made; first difference at {first_diff:?}: \
                 got {:?}, made {:?}\nferry log:\n{log_text}",
                got_events.len(),
                events.len(),
                first_diff.map(|i| &got_events[i.saturating_sub(1)..(i + 2).min(got_events.len())]),
                first_diff.map(|i| &events[i.saturating_sub(1)..(i + 2).min(events.len())]),
            );
        }
        assert_eq!(keys.len(), want.len(), "topic {topic}: keys never written appear");
        let deletes = made.iter().filter(|m| m.1 == "d").count();
        assert_eq!(tombstones, deletes, "topic {topic}: one tombstone after each delete");
        assert!(
            deletes > 0 && made.len() > 100,
            "topic {topic}: the application made too few changes ({})",
            made.len()
        );
    }

    // The envelope, as documented.
    let m = got
        .iter()
        .find(|m| m.topic == my_topic && m.value.as_ref().is_some_and(|v| v["op"] == "u"))
        .expect("an update");
    let v = m.value.as_ref().expect("value");
    assert_eq!(v["after"]["amount"], json!("2.25"), "decimals as strings: {v}");
    assert!(v["before"]["id"].is_i64(), "before-image of an update: {v}");
    assert_eq!(v["source"]["db"], json!(db));
    assert_eq!(v["source"]["table"], json!("items"));
    assert!(v["source"]["position"].as_str().is_some_and(|p| p.starts_with("mysql:")), "{v}");
    assert!(v["source"]["ts_ms"].is_i64());
    assert_eq!(m.headers.get("ferry.position").and_then(Value::as_str), v["source"]["position"].as_str());
    let lite_first = got.iter().find(|m| m.topic == lite_topic).expect("a sqlite message");
    assert_eq!(lite_first.value.as_ref().expect("value")["source"]["db"], json!("main"));
    let pg_event = got.iter().find(|m| m.topic == pg_topic && m.value.is_some()).expect("a postgres message");
    assert_eq!(pg_event.value.as_ref().expect("value")["source"]["db"], json!(schema), "{{db}} is the schema");
    drop(mc);
    drop(cleanup);
    drop(pg_cleanup);
}
