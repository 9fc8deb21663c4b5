//! Bad input to `ferry cutover`: an unknown task, a two-way task, a task lagging above
//! its threshold, a second cutover while one runs — each a clear refusal (exit 2) with
//! nothing changed. And an application connection opened before the freeze cannot
//! write after it.

use std::path::Path;

use crate::cutover_sqlite::{cutover, frozen, paused_inside, prepared};
use crate::support::{app_conn, task_file};

/// The cutover state rows in the metadata store.
async fn cutover_rows(dir: &Path) -> i64 {
    let mut c = app_conn(&dir.join("meta.db")).await;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM cutover").fetch_one(&mut c).await.unwrap_or(0);
    sqlx::Connection::close(c).await.ok();
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cutover_refuses_unknown_task_two_way_and_lag_above_threshold() {
    let (dir, config) = prepared("").await;
    let cfg = config.to_str().expect("utf-8 path");
    let out = crate::support::ferry_within(
        &["cutover", "--config", cfg, "--task", "nope", "start", "--yes"],
        crate::support::mariadb::FERRY_LIMIT,
    )
    .await;
    assert_eq!(out.code, Some(2), "{}", out.all());
    assert!(out.stderr.contains("\"nope\"") && out.stderr.contains("fix:"), "{}", out.all());

    // Lag can never be under 0 s: preflight refuses, no state is kept, nothing is frozen.
    let lagging = task_file(dir.path(), "one-way", "[task.cutover]\nmax_lag_seconds = 0");
    let out = cutover(&lagging, &["start", "--yes"]).await;
    assert_eq!(out.code, Some(2), "{}", out.all());
    assert!(
        out.stdout.contains("preflight refused") && out.stdout.contains("[!!] lag under max_lag_seconds = 0"),
        "{}",
        out.all()
    );
    assert_eq!(cutover_rows(dir.path()).await, 0, "a refused preflight keeps no cutover state");
    assert!(!frozen(&dir.path().join("a.db")).await, "nothing frozen");
    let status = cutover(&lagging, &["status"]).await;
    assert!(status.stdout.contains("no cutover started"), "{}", status.all());

    let two_way = task_file(dir.path(), "two-way", "");
    let out = cutover(&two_way, &["start", "--yes"]).await;
    assert_eq!(out.code, Some(2), "{}", out.all());
    assert!(out.stderr.contains("two-way"), "{}", out.all());
    assert_eq!(cutover_rows(dir.path()).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_cutover_while_one_runs_is_refused_and_old_connections_cannot_write() {
    let (dir, config) = prepared("").await;
    // Opened before the freeze and kept.
    let mut old = app_conn(&dir.path().join("a.db")).await;
    sqlx::query("INSERT INTO orders(id, site, n) VALUES (100001, 'old', 1)")
        .execute(&mut old)
        .await
        .expect("writes before");

    let mut first = paused_inside(&config, &["start", "--yes"], "drain").await;
    let refused = sqlx::query("INSERT INTO orders(id, site, n) VALUES (100002, 'old', 2)").execute(&mut old).await;
    let message = format!("{refused:?}");
    assert!(
        refused.is_err() && message.contains("frozen"),
        "the connection opened before the freeze cannot write: {message}"
    );

    for args in [&["start", "--yes"][..], &["next", "--yes"][..], &["rollback", "--yes"][..]] {
        let out = cutover(&config, args).await;
        assert_eq!(out.code, Some(2), "{args:?} while a step runs: {}", out.all());
        assert!(out.stderr.contains("being run by pid"), "{}", out.all());
    }
    let status = cutover(&config, &["status"]).await;
    assert!(status.stdout.contains("next step drain") && status.stdout.contains("[running]"), "{}", status.all());

    first.kill().expect("SIGKILL");
    first.wait().expect("reap");
    let out = cutover(&config, &["start", "--yes"]).await;
    assert_eq!(out.code, Some(2), "a second start after a crash is still refused: {}", out.all());
    assert!(out.stderr.contains("already in progress"), "{}", out.all());
    let out = cutover(&config, &["rollback", "--yes"]).await;
    assert_eq!(out.code, Some(0), "{}", out.all());
    sqlx::query("INSERT INTO orders(id, site, n) VALUES (100003, 'old', 3)")
        .execute(&mut old)
        .await
        .expect("writes after the rollback");
    sqlx::Connection::close(old).await.ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_yes_each_step_asks_and_a_no_stops_before_it() {
    use std::io::Write as _;
    let (dir, config) = prepared("").await;
    let mut child = std::process::Command::new(crate::support::ferry_bin())
        .args(["cutover", "--config", config.to_str().expect("utf-8 path"), "--task", "t", "start"])
        .env("FERRY_LOG", "warn")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn ferry cutover");
    child.stdin.take().expect("stdin").write_all(b"y\nn\n").expect("answers");
    let out = tokio::task::spawn_blocking(move || child.wait_with_output()).await.expect("join").expect("output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("run step preflight of the cutover of task t? [y/N]"), "{stdout}");
    assert!(stdout.contains("step preflight: done"), "{stdout}");
    assert!(stdout.contains("stopped before step freeze"), "{stdout}");
    assert!(!frozen(&dir.path().join("a.db")).await, "declined: nothing frozen");
    let status = cutover(&config, &["status"]).await;
    assert!(status.stdout.contains("next step freeze"), "{}", status.all());
    let out = cutover(&config, &["rollback", "--yes"]).await;
    assert_eq!(out.code, Some(0), "{}", out.all());
}
