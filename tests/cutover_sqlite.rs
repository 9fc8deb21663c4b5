//! Cutover on a SQLite pair with the real `ferry` binary while an application writes:
//! writes during the freeze fail cleanly, after Open the target's writes flow back to
//! the source, a rollback restores the original direction with nothing lost; SIGKILL
//! inside every step and resuming ends consistent; bad input is refused with nothing
//! changed.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::{Duration, Instant};

use crate::support::{FerryRun, app_conn, create_db, dump, ferry_bin, ferry_within, task_file, wait_until};

const LIMIT: Duration = Duration::from_secs(120);
const SCHEMA: &str = "CREATE TABLE orders(id INTEGER PRIMARY KEY, site TEXT NOT NULL, n INTEGER NOT NULL);";

/// Where the application writes: 0 = a, 1 = nowhere (waiting for the target to open), 2 = b.
const AT_A: u8 = 0;
const WAITING: u8 = 1;
const AT_B: u8 = 2;

/// What the application saw.
#[derive(Debug, Default)]
struct AppLog {
    /// Ids whose insert committed, with the side (AT_A, AT_B) and the ms since the start.
    committed: Vec<(i64, u8, u128)>,
    /// Errors from a frozen database.
    refused: Vec<String>,
}

/// The application: inserts rows where `at` says; a refused write (frozen) is logged and
/// the application waits to be moved.
async fn application(dir: PathBuf, at: Arc<AtomicU8>, stop: Arc<AtomicBool>, first_id: i64) -> AppLog {
    let mut log = AppLog::default();
    let mut id = first_id;
    let t0 = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let side = at.load(Ordering::Relaxed);
        if side == WAITING {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        let db = dir.join(if side == AT_A { "a.db" } else { "b.db" });
        let mut c = app_conn(&db).await;
        let r = sqlx::query("INSERT INTO orders(id, site, n) VALUES (?1, ?2, ?3)")
            .bind(id)
            .bind(if side == AT_A { "a" } else { "b" })
            .bind(id % 13)
            .execute(&mut c)
            .await;
        sqlx::Connection::close(c).await.ok();
        match r {
            Ok(_) => log.committed.push((id, side, t0.elapsed().as_millis())),
            Err(e) => {
                let msg = e.to_string();
                assert!(msg.contains("frozen"), "a write failed for another reason than the freeze: {msg}");
                log.refused.push(msg);
                // Only the application's side flips: from a to waiting.
                let _ = at.compare_exchange(side, WAITING, Ordering::Relaxed, Ordering::Relaxed);
            }
        }
        id += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    log
}

/// A `start --yes` that ran every step, each with its duration.
pub fn assert_ran_to_done(out: &crate::support::Outcome) {
    assert_eq!(out.code, Some(0), "cutover runs to Done: {}", out.all());
    for step in ["preflight", "freeze", "drain", "verify", "switch", "open-target"] {
        assert!(
            out.stdout.contains(&format!("step {step}: done in")),
            "step {step} shows its duration:\n{}",
            out.stdout
        );
    }
}

/// A folder with a.db (seeded), b.db, the task file; the task synced once and verified.
pub async fn prepared(extra: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp folder");
    if std::env::var("FERRY_TEST_KEEP").is_ok() {
        eprintln!("test folder: {}", dir.path().display());
    }
    create_db(&dir.path().join("a.db"), SCHEMA).await;
    create_db(&dir.path().join("b.db"), "PRAGMA user_version = 0;").await;
    let mut c = app_conn(&dir.path().join("a.db")).await;
    for i in 1..=500 {
        sqlx::query("INSERT INTO orders(id, site, n) VALUES (?1, 'seed', ?2)")
            .bind(i)
            .bind(i)
            .execute(&mut c)
            .await
            .expect("seed");
    }
    sqlx::Connection::close(c).await.ok();
    let config = task_file(dir.path(), "one-way", extra);
    sync_once(dir.path(), &config).await;
    let cfg = config.to_str().expect("utf-8 path");
    let v = ferry_within(&["verify", "--config", cfg, "--task", "t"], LIMIT).await;
    assert_eq!(v.code, Some(0), "the initial verify is clean: {}", v.all());
    (dir, config)
}

/// Runs `ferry run` until b equals a, then stops it.
async fn sync_once(dir: &Path, config: &Path) {
    let mut run = FerryRun::start(config, &dir.join("run.log"));
    wait_same(dir).await;
    assert_eq!(run.terminate(), Some(0), "ferry run stops cleanly; log:\n{}", log(dir));
}

fn log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("run.log")).unwrap_or_default()
}

async fn wait_same(dir: &Path) {
    let (a, b) = (dir.join("a.db"), dir.join("b.db"));
    wait_until(LIMIT, "a and b to hold the same rows", || async {
        b.exists() && dump(&a, "orders", "id").await == dump_or_empty(&b).await
    })
    .await;
}

async fn dump_or_empty(path: &Path) -> Vec<String> {
    let mut c = app_conn(path).await;
    let exists: Option<String> = sqlx::query_scalar("SELECT name FROM sqlite_schema WHERE name = 'orders'")
        .fetch_optional(&mut c)
        .await
        .ok()
        .flatten();
    sqlx::Connection::close(c).await.ok();
    if exists.is_some() { dump(path, "orders", "id").await } else { vec!["(no table)".into()] }
}

/// `ferry cutover ARGS` with its output.
pub async fn cutover(config: &Path, args: &[&str]) -> crate::support::Outcome {
    cutover_task(config, "t", args).await
}

/// `ferry cutover --task TASK ARGS` with its output.
pub async fn cutover_task(config: &Path, task: &str, args: &[&str]) -> crate::support::Outcome {
    let cfg = config.to_str().expect("utf-8 path");
    let mut all = vec!["cutover", "--config", cfg, "--task", task];
    all.extend_from_slice(args);
    ferry_within(&all, LIMIT).await
}

/// Starts `ferry cutover ARGS` with the test hook pausing inside `step`, waits until it
/// is there, and SIGKILLs it.
async fn kill_inside(config: &Path, args: &[&str], step: &str) {
    kill_inside_task(config, "t", args, step).await;
}

/// [`kill_inside`] for the task named `task`.
pub async fn kill_inside_task(config: &Path, task: &str, args: &[&str], step: &str) {
    let mut child = paused_inside_task(config, task, args, step).await;
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
}

/// Starts `ferry cutover ARGS` with the test hook pausing inside `step`; returns it there.
pub async fn paused_inside(config: &Path, args: &[&str], step: &str) -> std::process::Child {
    paused_inside_task(config, "t", args, step).await
}

/// [`paused_inside`] for the task named `task`.
pub async fn paused_inside_task(config: &Path, task: &str, args: &[&str], step: &str) -> std::process::Child {
    let err = config.with_file_name(format!("cutover-{step}.err"));
    let mut child = Command::new(ferry_bin())
        .args(["cutover", "--config", config.to_str().expect("utf-8 path"), "--task", task])
        .args(args)
        .env("FERRY_LOG", "warn")
        .env("FERRY_CUTOVER_PAUSE_IN", step)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err).expect("stderr file"))
        .spawn()
        .expect("spawn ferry cutover");
    let start = Instant::now();
    let marker = format!("paused inside step {step}");
    loop {
        let text = std::fs::read_to_string(&err).unwrap_or_default();
        if text.contains(&marker) {
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("ferry cutover exited ({status}) before reaching step {step}:\n{text}");
        }
        assert!(start.elapsed() < LIMIT, "ferry cutover never reached step {step}:\n{text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child
}

async fn status_json(config: &Path) -> serde_json::Value {
    let out = cutover(config, &["status"]).await;
    assert_eq!(out.code, Some(0), "{}", out.all());
    serde_json::Value::String(out.stdout)
}

fn assert_step(status: &serde_json::Value, next: &str) {
    let text = status.as_str().unwrap_or_default();
    assert!(text.contains(&format!("next step {next}")), "expected the cutover at step {next}:\n{text}");
}

pub async fn frozen(db: &Path) -> bool {
    let mut c = app_conn(db).await;
    let n: Option<i64> = sqlx::query_scalar("SELECT count(*) FROM ferry_freeze").fetch_one(&mut c).await.ok();
    sqlx::Connection::close(c).await.ok();
    n.unwrap_or(0) > 0
}

/// Every committed id is on both sides exactly once, and both sides are identical.
async fn assert_nothing_lost(dir: &Path, committed: &[(i64, u8, u128)]) {
    if std::env::var("FERRY_TEST_KEEP").is_ok() {
        let keep = std::path::PathBuf::from("/tmp/fcut-keep");
        let _ = std::fs::create_dir_all(&keep);
        for f in std::fs::read_dir(dir).expect("list") {
            let f = f.expect("entry").path();
            let _ = std::fs::copy(&f, keep.join(f.file_name().expect("name")));
        }
    }
    let a = dump(&dir.join("a.db"), "orders", "id").await;
    let b = dump(&dir.join("b.db"), "orders", "id").await;
    assert_eq!(a, b, "both sides identical");
    let ids: Vec<i64> = a.iter().map(|r| r.split(',').next().and_then(|s| s.parse().ok()).expect("id")).collect();
    for (id, side, ms) in committed {
        assert!(
            ids.binary_search(id).is_ok(),
            "committed row {id} (written on {}, {ms} ms after the application started) is on both sides",
            if *side == AT_A { "a" } else { "b" }
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_cutover_under_writes_then_rollback_loses_nothing() {
    let (dir, config) = prepared("").await;
    let at = Arc::new(AtomicU8::new(AT_A));
    let stop = Arc::new(AtomicBool::new(false));
    let app = tokio::spawn(application(dir.path().to_path_buf(), at.clone(), stop.clone(), 1_000));

    // Plan changes nothing.
    let plan = cutover(&config, &["plan"]).await;
    assert_eq!(plan.code, Some(0), "{}", plan.all());
    assert!(plan.stdout.contains("Freeze source") && plan.stdout.contains("no cutover started"), "{}", plan.stdout);

    let out = cutover(&config, &["start", "--yes"]).await;
    assert_ran_to_done(&out);
    assert!(at.load(Ordering::Relaxed) == WAITING, "the application's writes on a were refused during the freeze");
    assert!(frozen(&dir.path().join("a.db")).await && !frozen(&dir.path().join("b.db")).await, "a frozen, b open");

    // The application moves to b; `ferry run` follows the stored direction b -> a.
    at.store(AT_B, Ordering::Relaxed);
    let status = ferry_within(&["status", "--config", config.to_str().expect("path")], LIMIT).await;
    assert!(status.stdout.contains("direction set by a cutover") && status.stdout.contains("b->a"), "{}", status.all());
    let mut run = FerryRun::start(&config, &dir.path().join("run.log"));
    wait_until(LIMIT, "writes on b to reach a", || async {
        let a = dump(&dir.path().join("a.db"), "orders", "id").await;
        a.iter().any(|r| r.contains("'b'"))
    })
    .await;
    assert_eq!(run.terminate(), Some(0), "{}", log(dir.path()));

    // Writes on b that nothing carries to a yet.
    let (a_db, b_db) = (dir.path().join("a.db"), dir.path().join("b.db"));
    let on_b = dump(&b_db, "orders", "id").await.len();
    wait_until(LIMIT, "new writes on b", || async { dump(&b_db, "orders", "id").await.len() > on_b + 5 }).await;
    assert_ne!(dump(&a_db, "orders", "id").await, dump(&b_db, "orders", "id").await, "b is ahead of a");

    // Rollback: b frozen, its writes drained to a, a reopened, a -> b again. Stopped
    // just before a reopens: a is still frozen and already holds every write made on b.
    let mut paused = paused_inside(&config, &["rollback", "--yes"], "rollback-reopen-source").await;
    assert!(frozen(&a_db).await && frozen(&b_db).await, "a not reopened yet, b frozen");
    assert_eq!(
        dump(&a_db, "orders", "id").await,
        dump(&b_db, "orders", "id").await,
        "a has b's writes before it reopens"
    );
    paused.kill().expect("SIGKILL");
    paused.wait().expect("reap");
    let out = cutover(&config, &["rollback", "--yes"]).await;
    assert_eq!(out.code, Some(0), "rollback runs to the end: {}", out.all());
    assert!(out.stdout.contains("rolled-back"), "{}", out.stdout);
    assert!(!frozen(&dir.path().join("a.db")).await, "a takes writes again");
    at.store(AT_A, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let log_app = app.await.expect("application");
    assert!(!log_app.refused.is_empty(), "writes during the freeze failed cleanly at the application");
    assert!(log_app.committed.iter().any(|(_, side, _)| *side == AT_B), "the application wrote on b");
    sync_once(dir.path(), &config).await;
    assert_nothing_lost(dir.path(), &log_app.committed).await;
    let status = ferry_within(&["status", "--config", config.to_str().expect("path")], LIMIT).await;
    assert!(
        !status.stdout.contains("direction set by a cutover") && status.stdout.contains("a->b"),
        "{}",
        status.all()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_cutover_resumes_after_sigkill_in_every_step() {
    let (dir, config) = prepared("").await;
    let at = Arc::new(AtomicU8::new(AT_A));
    let stop = Arc::new(AtomicBool::new(false));
    let app = tokio::spawn(application(dir.path().to_path_buf(), at.clone(), stop.clone(), 1_000));

    // Preflight keeps no state: killed inside it, the cutover has not started.
    kill_inside(&config, &["start", "--yes"], "preflight").await;
    let s = status_json(&config).await;
    assert!(s.as_str().unwrap_or_default().contains("no cutover started"), "{s}");
    // A first cutover in one go; its rollback is killed inside every step and resumed.
    let out = cutover(&config, &["start", "--yes", "--quick-only"]).await;
    assert_eq!(out.code, Some(0), "{}", out.all());
    for step in ["rollback-freeze-target", "rollback-drain", "rollback-reopen-source", "rollback-restore"] {
        let args: &[&str] = if step == "rollback-freeze-target" { &["rollback", "--yes"] } else { &["next", "--yes"] };
        kill_inside(&config, args, step).await;
        let s = status_json(&config).await;
        assert_step(&s, step);
        let out = cutover(&config, &["next", "--yes"]).await;
        assert_eq!(out.code, Some(0), "resuming {step}: {}", out.all());
    }
    let s = status_json(&config).await;
    assert_step(&s, "rolled-back");
    assert!(!frozen(&dir.path().join("a.db")).await, "a open after the rollback");
    at.store(AT_A, Ordering::Relaxed);

    // A second cutover after the rollback, killed inside every step and resumed.
    for step in ["freeze", "drain", "verify", "switch", "open-target"] {
        let args: &[&str] = if step == "freeze" { &["start", "--yes"] } else { &["next", "--yes"] };
        kill_inside(&config, args, step).await;
        let s = status_json(&config).await;
        assert_step(&s, step);
        let out = cutover(&config, &["next", "--yes"]).await;
        assert_eq!(out.code, Some(0), "resuming {step}: {}", out.all());
        assert!(out.stdout.contains(&format!("step {step}: done")), "{}", out.stdout);
    }
    let s = status_json(&config).await;
    assert_step(&s, "done");
    at.store(AT_B, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let log_app = app.await.expect("application");
    sync_once(dir.path(), &config).await;
    assert_nothing_lost(dir.path(), &log_app.committed).await;
}
