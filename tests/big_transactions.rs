//! Source transactions bigger than one read: applied in parts inside one open target
//! transaction, so readers of the target never see part of one, whatever happens while
//! the parts go in (lease renewals among them).

use std::path::Path;
use std::time::{Duration, Instant};

use ferry::config::Config;
use ferry::connector::{TableProgress, registry};
use ferry::engine::task::prepare_target;
use ferry::engine::{Engine, plan_task};
use tokio_util::sync::CancellationToken;

use mysql_async::prelude::Queryable;

use crate::support::mariadb::{Cleanup, admin, connect, database, rows, rows_once_created, shared_a, shared_b, unique};
use crate::support::{FerryRun, app_conn, create_db, peak_rss_kib, wait_until};

/// A one-way task from the SQLite file `s` to database `db` of dc-a, with extra task keys.
fn sqlite_to_mariadb(dir: &Path, s: &Path, db: &str, extra: &str) -> Config {
    let text = format!(
        r#"[node]
id = "test-node"
store = "sqlite://meta.db"

[[endpoint]]
name = "s"
site = "dc-s"
url = "sqlite://{}"

[[endpoint]]
name = "a"
site = "dc-a"
url = "{}/{db}"

[[task]]
name = "{}"
from = "s"
to = "a"
tables = ["*"]
{extra}
"#,
        s.display(),
        shared_a(),
        unique("big")
    );
    let path = dir.join("ferry.toml");
    std::fs::write(&path, text).expect("write task file");
    Config::load(&path).expect("task file loads")
}

/// Rows of `db`.t on dc-a.
async fn count(db: &str) -> u64 {
    let r = rows(&shared_a(), &format!("SELECT COUNT(*) FROM `{db}`.t")).await;
    r.first().and_then(|r| r.first()).and_then(|n| n.parse().ok()).unwrap_or(u64::MAX)
}

/// As the defect was found: one big SQLite transaction one-way to MariaDB, `COUNT(*)`
/// on the target polled every 0.2 s. The throttle stretches the transaction's parts over
/// more than one lease renewal (every 3 s), which used to commit the open target
/// transaction half-way.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_big_sqlite_transaction_is_never_partly_visible_on_mariadb_across_lease_renewals() {
    const ROWS: u64 = 100_000;
    let mut cleanup_a = Cleanup::new(&shared_a());
    let db = database(&shared_a(), "bigvis", &mut cleanup_a).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let s = dir.path().join("s.db");
    create_db(&s, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)").await;
    // 20,000 changes a read, 20,000 rows/s: the transaction's parts take about 5 s.
    let config = sqlite_to_mariadb(dir.path(), &s, &db, "max_rows_per_sec = 20000");
    let specs = plan_task(&config, &config.tasks[0], &[]);
    let spec = specs[0].clone();
    cleanup_a.push(format!("DELETE FROM ferry.ferry_checkpoint WHERE task = '{}'", spec.id.task));
    cleanup_a.push(format!("DELETE FROM ferry.ferry_lease WHERE task = '{}'", spec.id.task));
    prepare_target(&spec).await.expect("prepare");
    let engine = Engine::start(specs, CancellationToken::new());
    wait_until(Duration::from_secs(30), "the snapshot of the empty table", || async {
        let state = registry::target_state(&spec.target, &spec.id).await.expect("target state");
        state
            .checkpoint
            .is_some_and(|cp| !cp.tables.is_empty() && cp.tables.values().all(|t| *t == TableProgress::Done))
    })
    .await;

    let mut app = app_conn(&s).await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {ROWS}) \
         INSERT INTO t SELECT i, 'row ' || i FROM n"
    )))
    .execute(&mut app)
    .await
    .expect("one big transaction");
    drop(app);

    let start = Instant::now();
    let mut seen = Vec::new();
    loop {
        let n = count(&db).await;
        if !seen.contains(&n) {
            seen.push(n);
        }
        assert!(n == 0 || n == ROWS, "a part of the transaction was visible on MariaDB: counts seen {seen:?}");
        if n == ROWS {
            break;
        }
        let errors: Vec<String> = engine.metrics().iter().filter_map(|m| m.status().last_error).collect();
        assert!(errors.is_empty(), "the direction failed: {errors:?}");
        assert!(start.elapsed() < Duration::from_secs(90), "the rows did not arrive; counts seen {seen:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        start.elapsed() > Duration::from_secs(3),
        "the transaction went in within {:?}, before a lease renewal: the test proves nothing",
        start.elapsed()
    );
    engine.stop();
    assert!(engine.join().await.is_empty(), "a direction failed");
}

/// A MySQL source's transaction too big for memory streams in parts inside one open
/// target transaction: one `UPDATE` of 1,000,000 rows, one-way to MariaDB through the
/// `ferry` binary. Readers of the target see none of it or all of it (`COUNT(*)` of
/// updated rows polled every 0.2 s), and the ferry process's peak RSS (VmHWM) stays
/// under 400 MiB (holding the transaction whole took several times that).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_row_mysql_update_streams_in_parts_with_bounded_memory_and_is_never_partly_visible() {
    const ROWS: u64 = 1_000_000;
    const LIMIT_MIB: u64 = 400;
    let dir = tempfile::tempdir().expect("tempdir");
    let Same { db, config, task, cleanup: _cleanup } = same_rows_both_sides(
        dir.path(),
        "bigupd",
        "id INT PRIMARY KEY, n INT NOT NULL, note VARCHAR(40) NOT NULL",
        &format!("seq, 0, CONCAT('row ', seq) FROM seq_1_to_{ROWS}"),
        "snapshot = false",
    )
    .await;
    let log = dir.path().join("ferry.log");
    let mut ferry = start_streaming(&config, &log, &task).await;
    let pid = ferry.pid().expect("ferry runs");
    let before = peak_rss_kib(pid).expect("VmHWM");

    let mut c = connect(&shared_a()).await;
    c.query_drop(format!("UPDATE `{db}`.t SET n = n + 1")).await.expect("one big UPDATE");
    c.disconnect().await.ok();

    let updated = format!("SELECT COUNT(*) FROM `{db}`.t WHERE n = 1");
    let start = Instant::now();
    let mut seen = Vec::new();
    loop {
        let n: u64 = rows(&shared_b(), &updated).await[0][0].parse().expect("count");
        if !seen.contains(&n) {
            seen.push(n);
        }
        assert!(n == 0 || n == ROWS, "a part of the UPDATE was visible on the target: counts seen {seen:?}");
        if n == ROWS {
            break;
        }
        assert!(!ferry.exited(), "ferry exited; log:\n{}", std::fs::read_to_string(&log).unwrap_or_default());
        assert!(start.elapsed() < Duration::from_secs(600), "the UPDATE did not arrive within 10 minutes");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let peak = peak_rss_kib(pid).expect("VmHWM");
    eprintln!(
        "1,000,000-row UPDATE applied in {:.1} s; ferry's peak RSS {} MiB (before the UPDATE: {} MiB)",
        start.elapsed().as_secs_f64(),
        peak / 1024,
        before / 1024
    );
    assert!(peak < LIMIT_MIB * 1024, "ferry's peak RSS was {} MiB, over {LIMIT_MIB} MiB", peak / 1024);
    assert_eq!(ferry.terminate(), Some(0), "log:\n{}", std::fs::read_to_string(&log).unwrap_or_default());
}

/// A MySQL transaction of 30,000 changes, more than the engine's 20,000 per read but
/// within the 50,000 a MySQL source asks for (`Source::batch_changes`, through the boxed
/// source `ferry run` uses), is read whole: never applied in parts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mysql_transaction_within_its_sources_read_size_is_not_applied_in_parts() {
    const ROWS: u64 = 30_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let Same { db, config, task, cleanup: _cleanup } = same_rows_both_sides(
        dir.path(),
        "bigread",
        "id INT PRIMARY KEY, n INT NOT NULL",
        &format!("seq, 0 FROM seq_1_to_{ROWS}"),
        "snapshot = false",
    )
    .await;
    let log = dir.path().join("ferry.log");
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    let mut ferry = start_streaming(&config, &log, &task).await;
    let mut c = connect(&shared_a()).await;
    c.query_drop(format!("UPDATE `{db}`.t SET n = n + 1")).await.expect("one UPDATE of every row");
    c.disconnect().await.ok();
    let sums = format!("SELECT COUNT(*), SUM(n) FROM `{db}`.t");
    let want = vec![vec![ROWS.to_string(), ROWS.to_string()]];
    wait_until(Duration::from_secs(60), "the UPDATE on the target", || async {
        rows(&shared_b(), &sums).await == want
    })
    .await;
    assert!(
        !log_text().contains(IN_PARTS),
        "a {ROWS}-change transaction was applied in parts; log:
{}",
        log_text()
    );
    assert_eq!(
        ferry.terminate(),
        Some(0),
        "log:
{}",
        log_text()
    );
}

/// Stopping inside a big MySQL transaction applied in parts: a clean stop (SIGTERM) rolls
/// its parts back, a crash (SIGKILL) loses them with the session; either way the next
/// run applies the transaction again from its start, whole, and the target ends equal to
/// the source, never showing part of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_inside_a_big_mysql_transaction_applies_it_whole_at_the_next_run() {
    // Five parts of a MySQL read (50,000 changes), so a stop lands between parts: with
    // two, the last one was sometimes in flight at the SIGTERM and committed it whole.
    const ROWS: u64 = 250_000;
    let dir = tempfile::tempdir().expect("tempdir");
    // 50,000 rows/s: each transaction's parts take about 5 s.
    let Same { db, config, task, cleanup: _cleanup } = same_rows_both_sides(
        dir.path(),
        "bigstop",
        "id INT PRIMARY KEY, n INT NOT NULL",
        &format!("seq, 0 FROM seq_1_to_{ROWS}"),
        "snapshot = false\nmax_rows_per_sec = 50000",
    )
    .await;
    let log = dir.path().join("ferry.log");
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    let sums = format!("SELECT COUNT(*), SUM(n) FROM `{db}`.t");

    for (round, stop) in [(1, "SIGTERM"), (2, "SIGKILL")] {
        let mut ferry = start_streaming(&config, &log, &task).await;
        let seen = log_text().matches(IN_PARTS).count();
        let mut c = connect(&shared_a()).await;
        c.query_drop(format!("UPDATE `{db}`.t SET n = n + 1")).await.expect("one big UPDATE");
        c.disconnect().await.ok();
        // Part-way through its parts (about 5 s), the process stops: once the first part
        // is in the open target transaction (a fixed wait missed it under load).
        let start = Instant::now();
        while log_text().matches(IN_PARTS).count() <= seen {
            assert!(!ferry.exited(), "ferry exited; log:\n{}", log_text());
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "the UPDATE was not applied in parts; log:\n{}",
                log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let want = vec![vec![ROWS.to_string(), (ROWS * round).to_string()]];
        let before = vec![vec![ROWS.to_string(), (ROWS * (round - 1)).to_string()]];
        assert_eq!(rows(&shared_b(), &sums).await, before, "round {round}: the UPDATE must not be visible yet");
        match stop {
            "SIGTERM" => assert_eq!(ferry.terminate(), Some(0), "a clean stop; log:\n{}", log_text()),
            _ => ferry.kill(),
        }
        assert_eq!(rows(&shared_b(), &sums).await, before, "round {round}: nothing of the UPDATE after the {stop}");
        if stop == "SIGTERM" {
            assert!(log_text().contains("its parts are rolled back"), "the stop says so; log:\n{}", log_text());
        }

        let mut ferry = FerryRun::start(&config, &log);
        let start = Instant::now();
        loop {
            let got = rows(&shared_b(), &sums).await;
            if got == want {
                break;
            }
            assert_eq!(got, before, "round {round}: part of the UPDATE was visible after the restart");
            assert!(!ferry.exited(), "ferry exited; log:\n{}", log_text());
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "round {round}: the UPDATE did not arrive; log:\n{}",
                log_text()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(ferry.terminate(), Some(0), "log:\n{}", log_text());
    }
}

/// A database with the same rows on both shared servers (written outside the binlog,
/// so a task that follows from the head carries only what the test writes next), and a
/// one-way task file for it.
struct Same {
    db: String,
    config: std::path::PathBuf,
    task: String,
    cleanup: (Cleanup, Cleanup),
}

/// What ferry logs when it applies a source transaction in parts: one test waits for
/// it, another asserts its absence, so a renamed message fails the first.
const IN_PARTS: &str = "applying it in parts inside one target transaction";

/// Starts `ferry run` and waits until the task's direction streams (its stream slot
/// holds a position), failing if ferry exits first.
async fn start_streaming(config: &Path, log: &Path, task: &str) -> FerryRun {
    let mut ferry = FerryRun::start(config, log);
    let checkpoint = format!(
        "SELECT COUNT(*) FROM ferry.ferry_checkpoint WHERE task = 'task_{task}' AND slot = 'stream:0' AND position IS NOT NULL"
    );
    let start = Instant::now();
    while rows_once_created(&shared_b(), &checkpoint).await.first().is_none_or(|r| r[0] != "1") {
        let log = || std::fs::read_to_string(log).unwrap_or_default();
        assert!(!ferry.exited(), "ferry exited; log:\n{}", log());
        assert!(start.elapsed() < Duration::from_secs(60), "ferry did not start streaming; log:\n{}", log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ferry
}

async fn same_rows_both_sides(
    dir: &std::path::Path,
    prefix: &str,
    columns: &str,
    select: &str,
    task_keys: &str,
) -> Same {
    let mut cleanup_a = Cleanup::new(&shared_a());
    let mut cleanup_b = Cleanup::new(&shared_b());
    let db = database(&shared_a(), prefix, &mut cleanup_a).await;
    cleanup_b.push(format!("DROP DATABASE IF EXISTS `{db}`"));
    for (url, create_db) in [(shared_a(), false), (shared_b(), true)] {
        let mut sql = Vec::new();
        if create_db {
            sql.push(format!("CREATE DATABASE `{db}`"));
        }
        sql.push(format!("CREATE TABLE `{db}`.t ({columns})"));
        sql.push(format!("USE `{db}`"));
        sql.push(format!("INSERT INTO `{db}`.t SELECT {select}"));
        admin(&url, &sql).await;
    }
    let config =
        crate::mysql_oneway::task_file(dir, &shared_a(), &shared_b(), "one-way", &[&format!("{db}.*")], task_keys);
    let text = std::fs::read_to_string(&config).expect("task file");
    let task = text
        .lines()
        .find_map(|l| l.strip_prefix("name = \"task_"))
        .expect("task name")
        .trim_end_matches('"')
        .to_string();
    cleanup_b.push(format!("DELETE FROM ferry.ferry_checkpoint WHERE task = 'task_{task}'"));
    cleanup_b.push(format!("DELETE FROM ferry.ferry_lease WHERE task = 'task_{task}'"));
    Same { db, config, task, cleanup: (cleanup_a, cleanup_b) }
}
