//! A transaction the target rejects stops the task with the position, table, key and
//! SQLite's message; `ferry skip` skips exactly that transaction on purpose, audited.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{app_conn, create_db, dump, ferry, ferry_bin, task_file};

fn run_until_exit(config: &std::path::Path, limit: Duration) -> std::process::Output {
    let child = Command::new(ferry_bin())
        .args(["run", "--config"])
        .arg(config)
        .env("FERRY_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ferry run");
    let pid = child.id();
    let start = Instant::now();
    let waiter = std::thread::spawn(move || child.wait_with_output().expect("wait"));
    while !waiter.is_finished() {
        if start.elapsed() > limit {
            let _ = Command::new("kill").arg("-KILL").arg(pid.to_string()).status();
            panic!("ferry run did not stop by itself within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    waiter.join().expect("join")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_transaction_stops_the_task_and_skip_moves_past_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (dir.path().join("a.db"), dir.path().join("b.db"));
    create_db(&a, "CREATE TABLE acct(id INTEGER PRIMARY KEY, balance INTEGER NOT NULL);").await;
    // The target refuses negative balances; the source does not.
    create_db(&b, "CREATE TABLE acct(id INTEGER PRIMARY KEY, balance INTEGER NOT NULL CHECK (balance >= 0));").await;
    let config = task_file(dir.path(), "one-way", "snapshot = false");

    // Start once so capture is installed and the stream starts at the current head.
    let mut app = app_conn(&a).await;
    let mut first =
        Command::new(ferry_bin()).args(["run", "--config"]).arg(&config).stderr(Stdio::null()).spawn().expect("spawn");
    crate::support::wait_until(Duration::from_secs(20), "capture to be installed", || async {
        crate::support::checkpoint_seq(&b, "t", "a->b").await >= 0 && trigger_count(&a).await > 0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = Command::new("kill").arg("-TERM").arg(first.id().to_string()).status();
    assert!(first.wait().expect("wait").success(), "first run did not stop cleanly");

    for sql in ["INSERT INTO acct VALUES (1, 10)", "INSERT INTO acct VALUES (2, -5)", "INSERT INTO acct VALUES (3, 30)"]
    {
        sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut app).await.expect("app write");
        // Separate capture epochs, so the bad row is its own transaction.
        tokio::time::sleep(Duration::from_millis(5)).await;
        sqlx::query("UPDATE ferry_clock SET epoch = epoch + 1").execute(&mut app).await.expect("epoch");
    }

    let out = run_until_exit(&config, Duration::from_secs(30));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "a rejected row is a runtime stop (exit 3): {err}");
    assert!(err.contains("table acct"), "names the table: {err}");
    assert!(err.contains("key (2)"), "names the key: {err}");
    assert!(err.contains("CHECK constraint failed"), "carries SQLite's message: {err}");
    assert!(err.contains("ferry skip --config"), "says how to skip: {err}");
    let position = err
        .split("source position ")
        .nth(1)
        .and_then(|rest| {
            rest.split(':').take(2).collect::<Vec<_>>().join(":").split_whitespace().next().map(String::from)
        })
        .expect("the message names the position");
    assert!(position.starts_with("sqlite:"), "position {position}");
    assert!(dump(&b, "acct", "id").await.is_empty(), "the failed batch is rolled back whole");

    let skip = ferry(&["skip", "--config", config.to_str().expect("utf8"), "--task", "t", "--position", &position]);
    assert!(skip.status.success(), "skip failed: {}", String::from_utf8_lossy(&skip.stderr));

    let mut again =
        Command::new(ferry_bin()).args(["run", "--config"]).arg(&config).stderr(Stdio::null()).spawn().expect("spawn");
    crate::support::wait_until(Duration::from_secs(20), "the rows after the skipped one", || async {
        dump(&b, "acct", "id").await == vec!["1,10".to_string(), "3,30".to_string()]
    })
    .await;
    let _ = Command::new("kill").arg("-TERM").arg(again.id().to_string()).status();
    assert!(again.wait().expect("wait").success());

    let mut meta = app_conn(&dir.path().join("meta.db")).await;
    let audited: Vec<String> =
        sqlx::query_scalar("SELECT detail FROM audit WHERE action = 'skip'").fetch_all(&mut meta).await.expect("audit");
    assert_eq!(audited.len(), 1, "the skip is audited once: {audited:?}");
    assert!(audited[0].contains(&position), "audit names the position: {audited:?}");
}

async fn trigger_count(path: &std::path::Path) -> i64 {
    let mut c = app_conn(path).await;
    sqlx::query_scalar("SELECT count(*) FROM sqlite_schema WHERE type = 'trigger' AND name LIKE 'ferry_capture%'")
        .fetch_one(&mut c)
        .await
        .unwrap_or(0)
}
