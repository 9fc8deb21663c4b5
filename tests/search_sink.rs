//! Elasticsearch/OpenSearch as a sink (the testbed's osmem-server): MySQL and SQLite changes reach
//! their index exactly once in effect through SIGKILLs of ferry, a replay after the
//! server forgot its deletes resurrects nothing, and bad input (a conflicting mapping,
//! a write block, 429s, a wrong password) gives a clear answer. Every check reads the
//! server through its own API (`_search`, `_count`), not through ferry.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::mariadb::{self, Cleanup};
use crate::support::postgres;
use crate::support::search::{self, Faults};
use crate::support::{FerryRun, Outcome, app_conn, create_db, ferry_within};

/// Keys the application cycles through.
const KEYS: i64 = 20;

fn task_file(dir: &Path, from_url: &str, to_url: &str, task: &str, tables: &str, index: &str) -> PathBuf {
    let config = dir.join("ferry.toml");
    std::fs::write(
        &config,
        format!(
            "[node]\nid = \"search-test\"\nstore = \"sqlite://meta.db\"\n\n[[endpoint]]\nname = \"src\"\nurl = \"{from_url}\"\n\n\
             [[endpoint]]\nname = \"os\"\nurl = \"{to_url}\"\n\n[[task]]\nname = \"{task}\"\nfrom = \"src\"\nto = \"os\"\n\
             tables = [\"{tables}\"]\nindex = \"{index}\"\n"
        ),
    )
    .expect("task file");
    config
}

/// The MySQL rows as the documents ferry must have made of them: id -> (v, amount).
pub(crate) async fn source_rows(url: &str, db: &str) -> Vec<(i64, String, String)> {
    mariadb::rows(url, &format!("SELECT id, v, CAST(amount AS CHAR) FROM `{db}`.items ORDER BY id"))
        .await
        .into_iter()
        .map(|r| (r[0].parse().expect("id"), r[1].clone(), r[2].clone()))
        .collect()
}

/// The index's documents in the same form, checking each id is its key's text.
fn doc_rows(docs: &[(String, Value)]) -> Vec<(i64, String, String)> {
    docs.iter()
        .map(|(id, d)| {
            let key = d["id"].as_i64().expect("id field");
            assert_eq!(id, &key.to_string(), "document id is the primary key's text: {d}");
            (key, d["v"].as_str().unwrap_or("NULL").to_string(), d["amount"].as_str().unwrap_or("NULL").to_string())
        })
        .collect()
}

/// The application's change number `i` to `table` (keys cycle through [`KEYS`]): an
/// insert of a key not live, else every fifth a delete, the rest updates.
fn app_sql(i: i64, live: &mut std::collections::HashSet<i64>, table: &str) -> String {
    let k = i % KEYS;
    match (live.contains(&k), i % 5) {
        (false, _) => {
            live.insert(k);
            format!("INSERT INTO {table}(id, v, amount) VALUES ({k}, 'v{i}', {i}.25)")
        }
        (true, 4) => {
            live.remove(&k);
            format!("DELETE FROM {table} WHERE id = {k}")
        }
        _ => format!("UPDATE {table} SET v = 'v{i}', amount = amount + 1 WHERE id = {k}"),
    }
}

/// The MySQL application: inserts, updates and deletes, one transaction each, until `stop`.
pub(crate) async fn mysql_app(url: &str, db: &str, stop: Arc<AtomicBool>) -> usize {
    let mut c = mariadb::connect(url).await;
    let mut live = std::collections::HashSet::new();
    let mut i: i64 = 0;
    let table = format!("`{db}`.items");
    while !stop.load(Ordering::Relaxed) {
        c.query_drop(app_sql(i, &mut live, &table)).await.expect("mysql write");
        i += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    c.disconnect().await.ok();
    usize::try_from(i).unwrap_or(0)
}

/// The PostgreSQL application: the same changes as [`mysql_app`] on `items` of the
/// database `url` names, one transaction each, until `stop`.
pub(crate) async fn pg_app(url: &str, stop: Arc<AtomicBool>) -> usize {
    let mut c = postgres::connect(url).await;
    let mut live = std::collections::HashSet::new();
    let mut i: i64 = 0;
    while !stop.load(Ordering::Relaxed) {
        let sql = app_sql(i, &mut live, "items");
        sqlx::Executor::execute(&mut c, sqlx::raw_sql(sqlx::AssertSqlSafe(sql))).await.expect("postgres write");
        i += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    usize::try_from(i).unwrap_or(0)
}

/// The PostgreSQL rows of `items` in the form of [`source_rows`].
pub(crate) async fn pg_rows(url: &str) -> Vec<(i64, String, String)> {
    postgres::rows(url, "SELECT id::text, v, amount::text FROM items ORDER BY items.id")
        .await
        .into_iter()
        .map(|r| {
            let text = |i: usize| r[i].clone().unwrap_or_else(|| "NULL".into());
            (text(0).parse().expect("id"), text(1), text(2))
        })
        .collect()
}

/// A PostgreSQL database of the test's own with `items` seeded with keys 100..150, its
/// cleanup (slots of `task` dropped before the database), and its URL.
pub(crate) async fn pg_source(prefix: &str, task: &str) -> (String, postgres::Cleanup, postgres::Cleanup) {
    let a = postgres::shared_a();
    let mut cleanup = postgres::Cleanup::new(&a);
    let db = postgres::database(&a, prefix, &mut cleanup).await;
    let url = postgres::with_db(&a, &db);
    let mut seed = String::from("CREATE TABLE items(id BIGINT PRIMARY KEY, v VARCHAR(40), amount NUMERIC(12,2));");
    seed.push_str("INSERT INTO items SELECT k, 'seed' || k, k + 0.5 FROM generate_series(100, 149) k;");
    postgres::exec(&url, &seed).await;
    let mut slots = postgres::Cleanup::new(&a);
    slots.task(task);
    (url, cleanup, slots)
}

/// The SQLite application: the same changes as [`mysql_app`], one transaction each.
async fn sqlite_app(path: &Path, stop: Arc<AtomicBool>) -> usize {
    let mut c = app_conn(path).await;
    let mut live = std::collections::HashSet::new();
    let mut i: i64 = 0;
    while !stop.load(Ordering::Relaxed) {
        let k = i % KEYS;
        let (sql, amount) = match (live.contains(&k), i % 5) {
            (false, _) => {
                live.insert(k);
                ("INSERT INTO items(id, v, amount) VALUES (?1, ?2, ?3)", format!("{i}.25"))
            }
            (true, 4) => {
                live.remove(&k);
                ("DELETE FROM items WHERE id = ?1 AND ?2 IS NOT NULL AND ?3 IS NOT NULL", String::new())
            }
            _ => ("UPDATE items SET v = ?2, amount = ?3 WHERE id = ?1", format!("{i}.75")),
        };
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(k)
            .bind(format!("v{i}"))
            .bind(amount)
            .execute(&mut c)
            .await
            .expect("sqlite write");
        i += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    usize::try_from(i).unwrap_or(0)
}

/// The SQLite rows in the form of [`doc_rows`].
async fn sqlite_rows(path: &Path) -> Vec<(i64, String, String)> {
    let mut c = app_conn(path).await;
    let rows: Vec<(i64, String, String)> =
        sqlx::query_as("SELECT id, v, amount FROM items ORDER BY id").fetch_all(&mut c).await.expect("rows");
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mysql_and_sqlite_changes_reach_opensearch_exactly_once_in_effect_through_sigkills() {
    search::require().await;
    let my = mariadb::shared_a();
    mariadb::require(&my).await;
    let mut cleanup = Cleanup::new(&my);
    let db = mariadb::database(&my, "search_src", &mut cleanup).await;
    let mut seed =
        vec![format!("CREATE TABLE `{db}`.items(id BIGINT PRIMARY KEY, v VARCHAR(40), amount DECIMAL(12,2))")];
    seed.extend((100..150).map(|k| format!("INSERT INTO `{db}`.items VALUES ({k}, 'seed{k}', {k}.50)")));
    mariadb::admin(&my, &seed).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let prefix = search::unique("mysql");
    let index = format!("{prefix}_{db}_items").to_lowercase();
    let config = task_file(
        dir.path(),
        &format!("{my}/{db}"),
        &search::url(),
        &prefix,
        &format!("{db}.items"),
        &format!("{prefix}_{{db}}_{{table}}"),
    );
    // A SQLite source into the same server, as a second task of the same process.
    let lite = dir.path().join("a.db");
    create_db(&lite, "CREATE TABLE items(id INTEGER PRIMARY KEY, v TEXT, amount TEXT);").await;
    let lite_index = format!("{prefix}_main_items");
    let mut text = std::fs::read_to_string(&config).expect("task file");
    text.push_str(&format!(
        "\n[[endpoint]]\nname = \"lite\"\nurl = \"sqlite://a.db\"\n\n[[task]]\nname = \"{prefix}-lite\"\nfrom = \"lite\"\n\
         to = \"os\"\ntables = [\"items\"]\nindex = \"{prefix}_{{db}}_{{table}}\"\n"
    ));
    std::fs::write(&config, text).expect("task file");
    let log = dir.path().join("ferry.log");
    let mut ferry = FerryRun::start(&config, &log);
    crate::support::wait_until(Duration::from_secs(60), "the snapshot's 50 documents", || async {
        search::count(&index).await >= 50
    })
    .await;

    let stop = Arc::new(AtomicBool::new(false));
    let app = tokio::spawn({
        let (my, db, stop) = (my.clone(), db.clone(), stop.clone());
        async move { mysql_app(&my, &db, stop).await }
    });
    let lite_app = tokio::spawn({
        let (lite, stop) = (lite.clone(), stop.clone());
        async move { sqlite_app(&lite, stop).await }
    });
    ferry.sigkill_now_and_then(&config, &log, 23).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let made = app.await.expect("application");
    assert!(made > 100, "the application made too few changes ({made})");
    let lite_made = lite_app.await.expect("sqlite application");
    assert!(lite_made > 100, "the SQLite application made too few changes ({lite_made})");

    // Caught up when the index holds exactly the source's rows.
    let want = source_rows(&my, &db).await;
    let start = Instant::now();
    let mut got = Vec::new();
    while start.elapsed() < Duration::from_secs(60) {
        got = doc_rows(&search::documents(&index).await);
        if got == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    let first_diff = got.iter().zip(&want).position(|(a, b)| a != b);
    assert!(
        got == want,
        "the index differs from the source after {made} changes: {} documents, {} rows; first difference at {first_diff:?}: got {:?}, want {:?}\nferry log:\n{}",
        got.len(),
        want.len(),
        first_diff.map(|i| &got[i]),
        first_diff.map(|i| &want[i]),
        log_text()
    );
    assert_eq!(search::count(&index).await, want.len() as u64, "_count agrees: no duplicate or stale document");
    let lite_want = sqlite_rows(&lite).await;
    let mut lite_got = Vec::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        lite_got = doc_rows(&search::documents(&lite_index).await);
        if lite_got == lite_want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        lite_got == lite_want && search::count(&lite_index).await == lite_want.len() as u64,
        "the SQLite task's index differs from its source after {lite_made} changes: {} documents, {} rows\nferry log:\n{}",
        lite_got.len(),
        lite_want.len(),
        log_text()
    );

    // The mapping came from the source schema through the canonical types.
    let (_, m) = search::call(Method::GET, &format!("/{index}/_mapping"), None).await;
    let props = &m[&index]["mappings"]["properties"];
    assert_eq!(props["id"]["type"], json!("long"), "{m}");
    assert_eq!(props["amount"]["type"], json!("keyword"), "exact decimals as keyword: {m}");
    assert_eq!(props["amount"]["fields"]["number"]["type"], json!("scaled_float"), "{m}");
    let (_, s) = search::call(Method::GET, &format!("/{index}/_settings"), None).await;
    assert_eq!(s[&index]["settings"]["index"]["gc_deletes"], json!("7d"), "deletes are remembered a week: {s}");

    // ferry verify agrees, and repairs what someone changed behind its back.
    ferry.terminate();
    let changed = &want[0];
    search::call(
        Method::PUT,
        &format!("/{index}/_doc/{}", changed.0),
        Some(json!({"id": changed.0, "v": "tampered", "amount": "0.00"})),
    )
    .await;
    search::call(Method::DELETE, &format!("/{index}/_doc/{}", want[1].0), None).await;
    let cfg = config.to_str().expect("path");
    let out = ferry_within(&["verify", "--config", cfg, "--repair"], Duration::from_secs(60)).await;
    assert_eq!(out.code, Some(1), "differences found: {}", out.all());
    assert!(out.stdout.contains("Different key") && out.stdout.contains("Missing key"), "{}", out.all());
    let out = ferry_within(&["verify", "--config", cfg], Duration::from_secs(60)).await;
    assert_eq!(out.code, Some(0), "repaired: {}", out.all());
    assert_eq!(doc_rows(&search::documents(&index).await), want, "the repair re-indexed the source's rows");
    search::drop_index(&index).await;
    drop(cleanup);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_changes_reach_opensearch_exactly_once_in_effect_through_sigkills() {
    search::require().await;
    let prefix = search::unique("pg");
    let (pg, cleanup, slots) = pg_source("search_pg", &prefix).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let index = format!("{prefix}_public_items");
    let template = format!("{prefix}_{{db}}_{{table}}");
    let config = task_file(dir.path(), &pg, &search::url(), &prefix, "public.items", &template);
    let log = dir.path().join("ferry.log");
    let mut ferry = FerryRun::start(&config, &log);
    crate::support::wait_until(Duration::from_secs(60), "the snapshot's 50 documents", || async {
        search::count(&index).await >= 50
    })
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let app = tokio::spawn({
        let (pg, stop) = (pg.clone(), stop.clone());
        async move { pg_app(&pg, stop).await }
    });
    ferry.sigkill_now_and_then(&config, &log, 29).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let made = app.await.expect("application");
    assert!(made > 100, "the application made too few changes ({made})");
    let want = pg_rows(&pg).await;
    let mut got = Vec::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        got = doc_rows(&search::documents(&index).await);
        if got == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        got == want,
        "the index differs from PostgreSQL after {made} changes: {} documents, {} rows\ngot {got:?}\nwant {want:?}\nferry log:\n{}",
        got.len(),
        want.len(),
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert_eq!(search::count(&index).await, want.len() as u64, "_count agrees: no duplicate or stale document");
    ferry.terminate();
    search::drop_index(&index).await;
    drop((slots, cleanup));
}

/// ferry run --once on a task file, within a minute.
async fn once(config: &Path) -> Outcome {
    ferry_within(&["run", "--once", "--config", config.to_str().expect("path")], Duration::from_secs(60)).await
}

#[tokio::test]
async fn a_replay_after_the_server_forgot_its_deletes_resurrects_nothing() {
    search::require().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let lite = dir.path().join("a.db");
    create_db(&lite, "CREATE TABLE items(id INTEGER PRIMARY KEY, v TEXT, amount TEXT);").await;
    let task = search::unique("gc");
    let index = format!("{task}_items");
    // The server forgets a delete's version after 1 s on this index.
    let url = format!("{}?gc_deletes=1s", search::url());
    let config = task_file(dir.path(), "sqlite://a.db", &url, &task, "items", &format!("{task}_{{table}}"));
    let out = once(&config).await;
    assert_eq!(out.code, Some(0), "{}", out.all());
    let cp_id = format!("/.ferry-checkpoints/_doc/checkpoint:{task}:src-%3Eos");
    let (_, before) = search::call(Method::GET, &cp_id, None).await;
    assert_eq!(before["found"], json!(true), "the checkpoint lives in .ferry-checkpoints: {before}");

    let mut c = app_conn(&lite).await;
    for k in 1..=5 {
        sqlx::query("INSERT INTO items(id, v, amount) VALUES (?1, 'v', '1.00')")
            .bind(k)
            .execute(&mut c)
            .await
            .expect("insert");
    }
    assert_eq!(once(&config).await.code, Some(0));
    sqlx::query("DELETE FROM items WHERE id <= 3").execute(&mut c).await.expect("delete");
    assert_eq!(once(&config).await.code, Some(0));
    assert_eq!(search::count(&index).await, 2);

    // Wait until the server provably forgot deletes: a probe deleted at version 6 takes
    // version 5 again.
    let probe = format!("{task}_probe");
    search::call(Method::PUT, &format!("/{probe}"), Some(json!({"settings": {"index": {"gc_deletes": "1s"}}}))).await;
    search::call(Method::PUT, &format!("/{probe}/_doc/1?version=5&version_type=external"), Some(json!({"a": 1}))).await;
    search::call(Method::DELETE, &format!("/{probe}/_doc/1?version=6&version_type=external"), None).await;
    crate::support::wait_until(Duration::from_secs(30), "the server to forget the probe's delete", || {
        let probe = probe.clone();
        async move {
            let (status, _) = search::call(
                Method::PUT,
                &format!("/{probe}/_doc/1?version=5&version_type=external"),
                Some(json!({"a": 1})),
            )
            .await;
            status == 201
        }
    })
    .await;

    // The replay a lost checkpoint causes: from before the inserts.
    let mut old = before["_source"].clone();
    old.as_object_mut().expect("checkpoint document").remove("_seq_no");
    search::call(Method::PUT, &cp_id, Some(old)).await;
    let out = once(&config).await;
    assert_eq!(out.code, Some(0), "{}", out.all());
    let ids: Vec<String> = search::documents(&index).await.into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids, ["4", "5"], "the deleted documents stay deleted after the replay");
    search::drop_index(&index).await;
    search::drop_index(&probe).await;
}

#[tokio::test]
async fn a_conflicting_mapping_a_write_block_429s_and_a_wrong_password_get_clear_answers() {
    search::require().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let lite = dir.path().join("a.db");
    create_db(
        &lite,
        "CREATE TABLE items(id INTEGER PRIMARY KEY, v TEXT, amount TEXT); INSERT INTO items VALUES (1, 'a', '1');",
    )
    .await;
    let task = search::unique("bad");
    let index = format!("{task}_items");
    let template = format!("{task}_{{table}}");

    // An existing index that maps `v` as a number: refused before anything is written.
    search::call(Method::PUT, &format!("/{index}"), Some(json!({"mappings": {"properties": {"v": {"type": "long"}}}})))
        .await;
    let config = task_file(dir.path(), "sqlite://a.db", &search::url(), &task, "items", &template);
    let out = once(&config).await;
    assert_eq!(out.code, Some(2), "a setup problem: {}", out.all());
    assert!(
        out.all().contains(&format!("index {index} maps field v as long")) && out.all().contains("reindex"),
        "{}",
        out.all()
    );
    search::drop_index(&index).await;

    // A write block: the run stops naming the index and how to lift it.
    assert_eq!(once(&config).await.code, Some(0));
    search::call(Method::PUT, &format!("/{index}/_settings"), Some(json!({"index": {"blocks": {"write": true}}})))
        .await;
    let mut c = app_conn(&lite).await;
    sqlx::query("INSERT INTO items VALUES (2, 'b', '2')").execute(&mut c).await.expect("insert");
    let out = once(&config).await;
    assert_eq!(out.code, Some(2), "{}", out.all());
    assert!(
        out.all().contains(&format!("index {index} refuses writes")) && out.all().contains("index.blocks.write"),
        "{}",
        out.all()
    );
    search::call(Method::PUT, &format!("/{index}/_settings"), Some(json!({"index": {"blocks": {"write": false}}})))
        .await;

    // 429s: sent again after a backoff until they land.
    let proxy = search::proxy(Faults { push_back: 3, ..Faults::default() }).await;
    let config = task_file(dir.path(), "sqlite://a.db", &proxy.url, &task, "items", &template);
    let out = once(&config).await;
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert_eq!(proxy.pushed.load(Ordering::SeqCst), 3, "the proxy pushed back three requests");
    assert_eq!(search::count(&index).await, 2, "both rows landed after the 429s");
    drop(proxy);

    // A wrong password: a setup problem naming the login, the password never shown.
    let proxy = search::proxy(Faults { password: Some("ferry:right".into()), ..Faults::default() }).await;
    let url = proxy.url.replace("://", "://ferry:wrong-secret@");
    let config = task_file(dir.path(), "sqlite://a.db", &url, &task, "items", &template);
    let out = once(&config).await;
    assert_eq!(out.code, Some(2), "{}", out.all());
    assert!(out.all().contains("refused ferry's login") && out.all().contains("password"), "{}", out.all());
    assert!(!out.all().contains("wrong-secret"), "the password is never printed: {}", out.all());
    let url = proxy.url.replace("://", "://ferry:right@");
    let config = task_file(dir.path(), "sqlite://a.db", &url, &task, "items", &template);
    assert_eq!(once(&config).await.code, Some(0), "the right password is accepted");
    search::drop_index(&index).await;
}

#[tokio::test]
async fn a_document_the_index_refuses_stops_the_task_naming_document_and_field_and_can_be_skipped() {
    search::require().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let lite = dir.path().join("a.db");
    create_db(&lite, "CREATE TABLE ev(id INTEGER PRIMARY KEY, n INTEGER); INSERT INTO ev VALUES (1, 5);").await;
    let task = search::unique("refused");
    let index = format!("{task}_ev");
    let config = task_file(dir.path(), "sqlite://a.db", &search::url(), &task, "ev", &format!("{task}_{{table}}"));
    assert_eq!(once(&config).await.code, Some(0));
    // SQLite keeps text in an INTEGER column; the index's `long` field refuses it.
    let mut c = app_conn(&lite).await;
    sqlx::query("INSERT INTO ev VALUES (2, 'lots')").execute(&mut c).await.expect("insert");
    sqlx::query("INSERT INTO ev VALUES (3, 7)").execute(&mut c).await.expect("insert");
    let out = once(&config).await;
    assert_eq!(out.code, Some(3), "refused data stops the task: {}", out.all());
    assert!(
        out.all().contains(&format!("index {index} refused document 2, field n")) && out.all().contains("ferry skip"),
        "{}",
        out.all()
    );
    let position =
        out.all().split("--position ").nth(1).and_then(|r| r.split_whitespace().next()).expect("position").to_string();
    let cfg = config.to_str().expect("path");
    let skip =
        ferry_within(&["skip", "--config", cfg, "--task", &task, "--position", &position], Duration::from_secs(30))
            .await;
    assert_eq!(skip.code, Some(0), "{}", skip.all());
    assert_eq!(once(&config).await.code, Some(0));
    let ids: Vec<String> = search::documents(&index).await.into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids, ["1", "3"], "the skipped document is left out, the one after it lands");
    search::drop_index(&index).await;
}
