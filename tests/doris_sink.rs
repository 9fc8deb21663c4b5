//! Doris as a sink, against the fake of `support::doris` (no Doris is reachable here):
//! MySQL and PostgreSQL changes reach the table exactly once in effect through
//! SIGKILLs of ferry; a batch whose checkpoint was not written is sent again under the
//! same label and kept once; bad input (a wrong password, a label used for other data,
//! a failing BE) gives a clear answer; the same MySQL run against the fake as StarRocks
//! (`starrocks://`, `__op` deletes). Every check reads the fake's own SQLite rows, not
//! ferry.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::search_sink::{mysql_app, pg_app, pg_rows, pg_source, source_rows};
use crate::support::doris::{FakeDoris, Faults};
use crate::support::mariadb::{self, Cleanup};
use crate::support::{FerryRun, Outcome, app_conn, create_db, ferry_within};

/// The Doris database of every test (each test has a fake of its own).
const DB: &str = "ferrydb";

fn task_file(dir: &Path, from_url: &str, to_url: &str, task: &str, tables: &str) -> PathBuf {
    let config = dir.join("ferry.toml");
    std::fs::write(
        &config,
        format!(
            "[node]\nid = \"doris-test\"\nstore = \"sqlite://meta.db\"\n\n[[endpoint]]\nname = \"src\"\nurl = \"{from_url}\"\n\n\
             [[endpoint]]\nname = \"dw\"\nurl = \"{to_url}\"\n\n[[task]]\nname = \"{task}\"\nfrom = \"src\"\nto = \"dw\"\n\
             tables = [\"{tables}\"]\n"
        ),
    )
    .expect("task file");
    config
}

/// A fake with the `items` table the sources have.
async fn fake() -> FakeDoris {
    fake_as(false).await
}

/// A fake (as StarRocks when asked) with the `items` table the sources have.
async fn fake_as(starrocks: bool) -> FakeDoris {
    let f = FakeDoris::start_as("loader", "s3cret", starrocks).await;
    f.create_table(DB, "items", &["id", "v", "amount"], &["id"]).await;
    f
}

/// The fake's `items` rows as (id, v, amount), the form of the sources' rows.
async fn table_rows(f: &FakeDoris) -> Vec<(i64, String, String)> {
    let mut rows: Vec<(i64, String, String)> = f
        .rows(DB, "items")
        .await
        .iter()
        .map(|d: &Value| {
            let text = |k: &str| match &d[k] {
                Value::Null => "NULL".to_string(),
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (d["id"].as_i64().expect("id is a number"), text("v"), text("amount"))
        })
        .collect();
    rows.sort();
    rows
}

/// Waits until the fake holds exactly `want`, failing with the difference and the log.
async fn converges(f: &FakeDoris, want: &[(i64, String, String)], log: &Path, made: usize) {
    let start = Instant::now();
    let mut got = Vec::new();
    while start.elapsed() < Duration::from_secs(90) {
        got = table_rows(f).await;
        if got == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let first_diff = got.iter().zip(want).position(|(a, b)| a != b);
    assert!(
        got == want,
        "the Doris table differs from the source after {made} changes: {} rows, {} wanted; first difference at {first_diff:?}: got {:?}, want {:?}\nonly in Doris: {:?}\nonly in the source: {:?}\nferry log:\n{}",
        got.len(),
        want.len(),
        first_diff.map(|i| &got[i]),
        first_diff.map(|i| &want[i]),
        got.iter().filter(|r| !want.contains(r)).collect::<Vec<_>>(),
        want.iter().filter(|r| !got.contains(r)).collect::<Vec<_>>(),
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// No label's data was applied twice, every load went through the FE's redirect, and
/// the BE never saw a request without the login.
async fn loads_were_clean(f: &FakeDoris) {
    let labels = f.labels().await;
    assert!(!labels.is_empty(), "loads were made");
    for (label, log) in &labels {
        assert!(log.applied <= 1, "label {label} applied {} times", log.applied);
        assert!(label.starts_with("ferry_"), "ferry's label form: {label}");
    }
    let (redirects, unauthorized) = f.counters().await;
    assert!(redirects as usize >= labels.len(), "every load came through the FE's 307 ({redirects})");
    assert_eq!(unauthorized, 0, "ferry kept its login across the redirect to the BE");
}

/// Starts ferry, waits for the snapshot's 50 rows, runs the application (`app`, told to
/// stop through its flag) while ferry is SIGKILLed and restarted four times; the
/// running ferry and the number of changes the application made.
async fn through_sigkills<A>(f: &FakeDoris, config: &Path, log: &Path, seed: u64, app: A) -> (FerryRun, usize)
where
    A: FnOnce(Arc<AtomicBool>) -> tokio::task::JoinHandle<usize>,
{
    let mut ferry = FerryRun::start(config, log);
    crate::support::wait_until(Duration::from_secs(60), "the snapshot's 50 rows", || async {
        f.rows(DB, "items").await.len() >= 50
    })
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let app = app(stop.clone());
    ferry.sigkill_now_and_then(config, log, seed).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let made = app.await.expect("application");
    assert!(made > 100, "the application made too few changes ({made})");
    (ferry, made)
}

/// MySQL inserts, updates and deletes reach the fake (as StarRocks when asked) through
/// four SIGKILLs of ferry: the table equals the source, no label applied twice.
async fn mysql_through_sigkills(starrocks: bool, seed_rng: u64) {
    let my = mariadb::shared_a();
    mariadb::require(&my).await;
    let mut cleanup = Cleanup::new(&my);
    let name = if starrocks { "starrocks_src" } else { "doris_src" };
    let db = mariadb::database(&my, name, &mut cleanup).await;
    let mut seed =
        vec![format!("CREATE TABLE `{db}`.items(id BIGINT PRIMARY KEY, v VARCHAR(40), amount DECIMAL(12,2))")];
    seed.extend((100..150).map(|k| format!("INSERT INTO `{db}`.items VALUES ({k}, 'seed{k}', {k}.50)")));
    mariadb::admin(&my, &seed).await;
    let f = fake_as(starrocks).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let task = mariadb::unique(if starrocks { "srmy" } else { "dmy" });
    let config =
        task_file(dir.path(), &format!("{my}/{db}"), &f.url("loader", "s3cret", DB), &task, &format!("{db}.items"));
    let log = dir.path().join("ferry.log");
    let (mut ferry, made) = through_sigkills(&f, &config, &log, seed_rng, |stop| {
        let (my, db) = (my.clone(), db.clone());
        tokio::spawn(async move { mysql_app(&my, &db, stop).await })
    })
    .await;
    converges(&f, &source_rows(&my, &db).await, &log, made).await;
    loads_were_clean(&f).await;
    assert!(dir.path().join("ferry-doris-dw.db").exists(), "the state file sits beside the task file");
    ferry.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mysql_changes_reach_doris_exactly_once_in_effect_through_sigkills() {
    mysql_through_sigkills(false, 31).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mysql_changes_reach_starrocks_exactly_once_in_effect_through_sigkills() {
    mysql_through_sigkills(true, 41).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_changes_reach_doris_exactly_once_in_effect_through_sigkills() {
    let task = mariadb::unique("dpg");
    let (pg, cleanup, slots) = pg_source("doris_pg", &task).await;
    let f = fake().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = task_file(dir.path(), &pg, &f.url("loader", "s3cret", DB), &task, "public.items");
    let log = dir.path().join("ferry.log");
    let (mut ferry, made) = through_sigkills(&f, &config, &log, 37, |stop| {
        let pg = pg.clone();
        tokio::spawn(async move { pg_app(&pg, stop).await })
    })
    .await;
    converges(&f, &pg_rows(&pg).await, &log, made).await;
    loads_were_clean(&f).await;
    ferry.terminate();
    drop((slots, cleanup));
}

/// A SQLite source with `items` (id, v, amount as text) holding keys 1..=n.
async fn sqlite_source(dir: &Path, n: i64) -> PathBuf {
    let lite = dir.join("a.db");
    let mut sql = String::from("CREATE TABLE items(id INTEGER PRIMARY KEY, v TEXT, amount TEXT);");
    for k in 1..=n {
        sql.push_str(&format!("INSERT INTO items VALUES ({k}, 'v{k}', '{k}.00');"));
    }
    create_db(&lite, &sql).await;
    lite
}

async fn sqlite_rows(lite: &Path) -> Vec<(i64, String, String)> {
    let mut c = app_conn(lite).await;
    sqlx::query_as("SELECT id, v, amount FROM items ORDER BY id").fetch_all(&mut c).await.expect("rows")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_whose_checkpoint_was_not_written_is_sent_again_under_the_same_label_and_kept_once() {
    let f = fake().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let lite = sqlite_source(dir.path(), 10).await;
    let task = mariadb::unique("dreplay");
    let config = task_file(dir.path(), "sqlite://a.db", &f.url("loader", "s3cret", DB), &task, "items");
    let log = dir.path().join("ferry.log");
    let mut ferry = FerryRun::start(&config, &log);
    crate::support::wait_until(Duration::from_secs(60), "the snapshot's 10 rows", || async {
        f.rows(DB, "items").await.len() == 10
    })
    .await;
    // The next load lands, but ferry never hears so: it is killed waiting.
    f.faults(Faults { hang_after_apply: true, ..Faults::default() }).await;
    let mut c = app_conn(&lite).await;
    sqlx::query("UPDATE items SET v = 'changed', amount = '99.50' WHERE id <= 3")
        .execute(&mut c)
        .await
        .expect("update");
    sqlx::query("DELETE FROM items WHERE id = 4").execute(&mut c).await.expect("delete");
    crate::support::wait_until(Duration::from_secs(60), "a load applied without an answer", || async {
        !f.hung().await.is_empty()
    })
    .await;
    let label = f.hung().await[0].clone();
    ferry.kill();
    ferry = FerryRun::start(&config, &log);
    sqlx::query("INSERT INTO items VALUES (11, 'after', '11.00')").execute(&mut c).await.expect("insert");
    converges(&f, &sqlite_rows(&lite).await, &log, 3).await;
    let logged = f.labels().await[&label].clone();
    assert!(
        logged.requests >= 2 && logged.duplicates >= 1 && logged.applied == 1,
        "label {label} was sent again after the restart, answered Label Already Exists, and applied once: {logged:?}\nferry log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    loads_were_clean(&f).await;
    ferry.terminate();
}

/// ferry run --once on a task file, within a minute.
async fn once(config: &Path) -> Outcome {
    ferry_within(&["run", "--once", "--config", config.to_str().expect("path")], Duration::from_secs(60)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_a_label_used_for_other_data_and_a_failing_be_get_clear_answers() {
    let f = fake().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let lite = sqlite_source(dir.path(), 5).await;
    let task = mariadb::unique("dbad");

    // A wrong password: a setup problem naming the login, the password never shown.
    let config = task_file(dir.path(), "sqlite://a.db", &f.url("loader", "wrong-secret", DB), &task, "items");
    let out = once(&config).await;
    assert_eq!(out.code, Some(2), "{}", out.all());
    assert!(out.all().contains("refused ferry's login") && out.all().contains("password"), "{}", out.all());
    assert!(!out.all().contains("wrong-secret"), "the password is never printed: {}", out.all());
    assert!(table_rows(&f).await.is_empty(), "nothing landed");

    // Every label was used already by someone else: refused, naming table and label.
    // (A task of its own: the first one's batch stays recorded for its next run.)
    let task = mariadb::unique("dforeign");
    f.faults(Faults { foreign_labels: true, ..Faults::default() }).await;
    let config = task_file(dir.path(), "sqlite://a.db", &f.url("loader", "s3cret", DB), &task, "items");
    let out = once(&config).await;
    assert_eq!(out.code, Some(2), "{}", out.all());
    let label = f.labels().await.into_keys().next().expect("a label was tried");
    assert!(
        out.all().contains(&format!("table {DB}.items: label {label} is already used"))
            && out.all().contains("other data"),
        "{}",
        out.all()
    );
    assert!(table_rows(&f).await.is_empty(), "nothing landed under a label someone else used");

    // A failing BE (500s, then "Fail"): sent again under the same label until it lands.
    // A fresh task: the refused one's labels stay taken.
    let task = mariadb::unique("dbe");
    let config = task_file(dir.path(), "sqlite://a.db", &f.url("loader", "s3cret", DB), &task, "items");
    f.faults(Faults { error_5xx: 2, fail: 2, slow: Duration::from_millis(300), ..Faults::default() }).await;
    let out = once(&config).await;
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert_eq!(table_rows(&f).await, sqlite_rows(&lite).await, "the rows landed after the BE recovered");
    let retried = f.labels().await.into_values().filter(|l| l.requests >= 5 && l.applied == 1).count();
    assert_eq!(retried, 1, "one label sent five times, applied once");

    // A BE that keeps failing: the run stops naming table and label.
    f.faults(Faults { fail: 1000, ..Faults::default() }).await;
    let mut c = app_conn(&lite).await;
    sqlx::query("INSERT INTO items VALUES (6, 'x', '6.00')").execute(&mut c).await.expect("insert");
    let log = dir.path().join("ferry.log");
    let mut ferry = FerryRun::start(&config, &log);
    crate::support::wait_until(Duration::from_secs(60), "the failure in the log", || async {
        std::fs::read_to_string(&log).unwrap_or_default().contains("the load failed 6 times in a row")
    })
    .await;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(text.contains(&format!("loading table {DB}.items under label ferry_")), "{text}");
    f.faults(Faults::default()).await;
    converges(&f, &sqlite_rows(&lite).await, &log, 1).await;
    ferry.terminate();
}
