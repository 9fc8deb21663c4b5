//! The SQLite changelog's retention (issue 15.5) never loses silently what a reader
//! still needs: rows are pruned only once every registered reader has them, the
//! highest pruned seq is remembered, and a reader asking for changes from before it
//! stops with the fix instead of skipping them.

use std::time::Duration;

use crate::support::{FerryRun, app_conn, create_db, dump, task_file, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_behind_the_pruned_changelog_stops_with_the_fix() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (dir.path().join("a.db"), dir.path().join("b.db"));
    create_db(&a, "CREATE TABLE kv(k INTEGER PRIMARY KEY, v TEXT); INSERT INTO kv VALUES (1, 'one');").await;
    create_db(&b, "CREATE TABLE kv(k INTEGER PRIMARY KEY, v TEXT);").await;
    let config = task_file(dir.path(), "one-way", "");
    let log = dir.path().join("run.log");
    let mut run = FerryRun::start(&config, &log);
    let bb = b.clone();
    wait_until(Duration::from_secs(30), "the snapshot", || {
        let bb = bb.clone();
        async move { dump(&bb, "kv", "k").await.len() == 1 }
    })
    .await;
    run.terminate();

    // Changes while ferry is stopped, then pruned as they would be had this reader not
    // been registered (another reader had them all, ten minutes ago).
    create_db(&a, "INSERT INTO kv VALUES (2, 'two'); INSERT INTO kv VALUES (3, 'three');").await;
    let mut c = app_conn(&a).await;
    let head: i64 = sqlx::query_scalar("SELECT max(seq) FROM ferry_changelog").fetch_one(&mut c).await.expect("head");
    sqlx::query("DELETE FROM ferry_changelog").execute(&mut c).await.expect("prune");
    sqlx::query("INSERT INTO ferry_consumer(consumer, seq, updated_us) VALUES ('~pruned', ?1, 0)")
        .bind(head)
        .execute(&mut c)
        .await
        .expect("mark");
    sqlx::Connection::close(c).await.ok();

    let mut run = FerryRun::start(&config, &log);
    let logged = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_until(Duration::from_secs(30), "the reader to stop on the gap", || {
        let text = logged();
        async move { text.contains("changelog was pruned") }
    })
    .await;
    run.terminate();
    let text = logged();
    assert!(text.contains("ferry_checkpoint") || text.contains("--repair"), "the fix is given: {text}");
    assert_eq!(dump(&b, "kv", "k").await.len(), 1, "nothing was skipped past silently");
}

/// Retention shortened to this (ms) for the peer tests, by ferry's test-only hook.
const SHORT_RETENTION_MS: &str = "1000";

/// The peer case of issue 15.5: a two-way task's `b->a` falls behind while `a->b` goes
/// on (here: the task runs one-way for a while) and `a` prunes its changelog. A change
/// that `b` made before `a`'s newer write of the same key arrives at `a` only after
/// that. With `hold` (the normal case) `a` kept the version `b->a` needs and the
/// conflict goes to the newer write on both sides; without (the hold removed, as for a
/// peer that never applied here) `b->a` stops with the fix instead of letting the older
/// write win. Returns the folder, the log and the second run's exit code.
async fn peer_behind_the_retention(hold: bool) -> (tempfile::TempDir, std::path::PathBuf, Option<i32>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (dir.path().join("a.db"), dir.path().join("b.db"));
    create_db(&a, "CREATE TABLE kv(k INTEGER PRIMARY KEY, v TEXT); INSERT INTO kv VALUES (1, 'x');").await;
    create_db(&b, "CREATE TABLE kv(k INTEGER PRIMARY KEY, v TEXT);").await;
    let two_way = task_file(dir.path(), "two-way", "");
    let one_way = dir.path().join("one-way.toml");
    let text = std::fs::read_to_string(&two_way).expect("task file");
    std::fs::write(&one_way, text.replace("mode = \"two-way\"", "mode = \"one-way\"")).expect("one-way file");
    let log = dir.path().join("run.log");
    let env = [("FERRY_TEST_CHANGELOG_RETENTION_MS", SHORT_RETENTION_MS.to_string())];
    let start = |config: &std::path::Path| FerryRun::start_with_env("run", config, &log, &env);

    // Both directions run and apply (b->a registers the versions it holds on a).
    let mut run = start(&two_way);
    let bb = b.clone();
    wait_until(Duration::from_secs(30), "the snapshot", || {
        let bb = bb.clone();
        async move { dump(&bb, "kv", "k").await == ["1,'x'"] }
    })
    .await;
    // Long enough for a's own heartbeats of this run to outlive the retention, so the
    // hold still lets a prune what is older.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(run.terminate(), Some(0));

    // b writes the key, then a writes it later: a's write is the newer one.
    create_db(&b, "UPDATE kv SET v = 'older from b' WHERE k = 1;").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    create_db(&a, "UPDATE kv SET v = 'newer from a' WHERE k = 1;").await;
    if !hold {
        create_db(&a, "DELETE FROM ferry_version_hold;").await;
    }
    // b->a falls behind: only a->b runs, past the (shortened) retention, and a prunes
    // what a->b consumed when it stops.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let mut run = start(&one_way);
    let bb = b.clone();
    wait_until(Duration::from_secs(30), "a's write at b", || {
        let bb = bb.clone();
        async move { dump(&bb, "kv", "k").await == ["1,'newer from a'"] }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(run.terminate(), Some(0));
    let mut c = app_conn(&a).await;
    let pruned: Option<i64> = sqlx::query_scalar("SELECT seq FROM ferry_consumer WHERE consumer = '~pruned'")
        .fetch_optional(&mut c)
        .await
        .expect("mark");
    sqlx::Connection::close(c).await.ok();
    assert!(pruned.is_some(), "a pruned its changelog with the shortened retention");

    // The task two-way again: b->a brings b's older write.
    let mut run = start(&two_way);
    if hold {
        let aa = a.clone();
        wait_until(Duration::from_secs(30), "b's older write to reach a", || {
            let aa = aa.clone();
            async move {
                let mut c = app_conn(&aa).await;
                let n: i64 = sqlx::query_scalar("SELECT count(*) FROM ferry_conflict WHERE direction = 'b->a'")
                    .fetch_one(&mut c)
                    .await
                    .unwrap_or(0);
                sqlx::Connection::close(c).await.ok();
                n > 0
            }
        })
        .await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let code = run.terminate();
        (dir, log, code)
    } else {
        let start = std::time::Instant::now();
        while !run.exited() && start.elapsed() < Duration::from_secs(30) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let code = run.terminate();
        (dir, log, code)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_behind_more_than_the_retention_finds_its_versions_kept() {
    let (dir, log, code) = peer_behind_the_retention(true).await;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(code, Some(0), "{text}");
    let (a, b) = (dir.path().join("a.db"), dir.path().join("b.db"));
    assert_eq!(dump(&a, "kv", "k").await, ["1,'newer from a'"], "a kept its newer write: {text}");
    assert_eq!(dump(&b, "kv", "k").await, ["1,'newer from a'"], "both sides agree");
    let mut c = app_conn(&a).await;
    let conflicts: Vec<(String, String)> =
        sqlx::query_as("SELECT winner, local_site FROM ferry_conflict WHERE direction = 'b->a'")
            .fetch_all(&mut c)
            .await
            .expect("conflicts");
    sqlx::Connection::close(c).await.ok();
    assert_eq!(conflicts, [("local".to_string(), "dc-a".to_string())], "resolved against a's kept version");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_behind_pruned_versions_stops_with_the_fix() {
    let (dir, log, code) = peer_behind_the_retention(false).await;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(code, Some(2), "a setup error: {text}");
    assert!(text.contains("were already pruned") && text.contains("~pruned_ts"), "the problem and the fix: {text}");
    let a = dir.path().join("a.db");
    assert_eq!(dump(&a, "kv", "k").await, ["1,'newer from a'"], "b's older write did not silently win");
}
