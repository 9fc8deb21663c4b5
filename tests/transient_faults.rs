//! Fault classes: what passes — a full table, a full disk, a busy database, a lost
//! connection — is retried with backoff and shown as `retrying` with its cause; only a
//! target refusing a row's data stops the task, naming the change, with the skip hint.

use std::time::{Duration, Instant};

use ferry::config::Config;
use ferry::engine::metrics::DirectionState;
use mysql_async::prelude::Queryable;

use crate::mysql_oneway::{start, task_file, wait_caught_up};
use crate::support::mariadb::{Cleanup, admin, connect, database, rows, shared_a, shared_b};

/// A MEMORY table on the target capped at 16 KiB (`max_heap_table_size` when it was
/// created) fills up while the source writes 2,000 rows: the direction retries, showing
/// `retrying` and "is full" (error 1114), never the skip hint. Once the table is given
/// room, the task resumes by itself and the target holds every row.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_target_table_is_retried_until_freed_and_nothing_is_lost() {
    let mut cleanup_a = Cleanup::new(&shared_a());
    let mut cleanup_b = Cleanup::new(&shared_b());
    let db = database(&shared_a(), "full", &mut cleanup_a).await;
    cleanup_b.push(format!("DROP DATABASE IF EXISTS `{db}`"));
    admin(&shared_a(), &[format!("CREATE TABLE `{db}`.t (id INT PRIMARY KEY, v VARCHAR(200) NOT NULL)")]).await;
    admin(
        &shared_b(),
        &[
            format!("CREATE DATABASE `{db}`"),
            "SET SESSION max_heap_table_size = 16384".into(),
            format!("CREATE TABLE `{db}`.t (id INT PRIMARY KEY, v VARCHAR(200) NOT NULL) ENGINE=MEMORY"),
        ],
    )
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = Config::load(&task_file(dir.path(), &shared_a(), &shared_b(), "one-way", &[&format!("{db}.*")], ""))
        .expect("config");
    cleanup_b.push(format!("DELETE FROM ferry.ferry_checkpoint WHERE task = '{}'", config.tasks[0].name));
    cleanup_b.push(format!("DELETE FROM ferry.ferry_lease WHERE task = '{}'", config.tasks[0].name));
    let engine = start(&config).await;
    wait_caught_up(&config, Duration::from_secs(60), Some(&engine)).await;

    // 2,000 rows in 20 transactions: far more than 16 KiB.
    let mut c = connect(&shared_a()).await;
    for t in 0..20 {
        let values: Vec<String> = (1..=100).map(|i| format!("({}, '{}')", t * 100 + i, "x".repeat(150))).collect();
        c.query_drop(format!("INSERT INTO `{db}`.t VALUES {}", values.join(", "))).await.expect("insert");
    }
    c.disconnect().await.ok();

    let metrics = engine.metrics()[0].clone();
    let start = Instant::now();
    let cause = loop {
        let s = metrics.status();
        assert_ne!(s.state, DirectionState::Failed, "the direction stopped on a full table: {:?}", s.last_error);
        if s.state == DirectionState::Retrying
            && let Some(e) = s.last_error.as_ref().filter(|e| e.contains("is full"))
        {
            break e.clone();
        }
        assert!(start.elapsed() < Duration::from_secs(60), "no retrying on the full table; status {s:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(cause.contains("1114"), "the cause names the server's error: {cause}");
    assert!(!cause.contains("ferry skip"), "a full table is not a reason to skip anything: {cause}");
    let held = rows(&shared_b(), &format!("SELECT COUNT(*) FROM `{db}`.t")).await[0][0].clone();
    assert_ne!(held, "2000", "the table was meant to fill up before every row went in");

    // Still retrying a while later (not stopped), then the table gets room.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_ne!(metrics.status().state, DirectionState::Failed, "{:?}", metrics.status().last_error);
    admin(
        &shared_b(),
        &["SET SESSION max_heap_table_size = 67108864".into(), format!("ALTER TABLE `{db}`.t MAX_ROWS = 1000000")],
    )
    .await;
    wait_caught_up(&config, Duration::from_secs(60), Some(&engine)).await;
    let want = rows(&shared_a(), &format!("SELECT COUNT(*), SUM(id), SUM(LENGTH(v)) FROM `{db}`.t")).await;
    let got = rows(&shared_b(), &format!("SELECT COUNT(*), SUM(id), SUM(LENGTH(v)) FROM `{db}`.t")).await;
    assert_eq!(want[0][0], "2000");
    assert_eq!(got, want, "every row reached the target once the table had room");
    let s = metrics.status();
    assert_eq!(s.state, DirectionState::Streaming, "{s:?}");
    assert_eq!(s.last_error, None, "the cause is cleared once batches apply again");
    engine.stop();
    assert!(engine.join().await.is_empty(), "a direction failed");
}

/// The target refuses a row's data — a duplicate on a unique index that is not the key
/// (which an upsert used to absorb by overwriting the other row), a value out of the
/// column's range, a child row without its parent — and the direction stops at once
/// (no retrying), naming the position, table, key and the server's message, with the
/// skip hint.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_row_the_target_refuses_stops_the_task_with_the_skip_hint() {
    let cases = [
        (
            "dup",
            "CREATE TABLE {t} (id INT PRIMARY KEY, u INT NOT NULL, UNIQUE KEY u (u))",
            "INSERT INTO {t} VALUES (1, 7); INSERT INTO {t} VALUES (2, 7)",
            "CREATE TABLE {t} (id INT PRIMARY KEY, u INT NOT NULL)",
            // An upsert would have overwritten row 1 (ON DUPLICATE KEY UPDATE): refused.
            "a unique key that is not the primary key",
        ),
        (
            "range",
            "CREATE TABLE {t} (id INT PRIMARY KEY, u TINYINT NOT NULL)",
            "INSERT INTO {t} VALUES (1, 7); INSERT INTO {t} VALUES (2, 1000)",
            "CREATE TABLE {t} (id INT PRIMARY KEY, u INT NOT NULL)",
            "1264",
        ),
        (
            "fk",
            "CREATE TABLE {t} (id INT PRIMARY KEY, u INT NOT NULL, FOREIGN KEY (u) REFERENCES {p} (id))",
            "INSERT INTO {t} VALUES (1, 7); INSERT INTO {t} VALUES (2, 8)",
            "CREATE TABLE {t} (id INT PRIMARY KEY, u INT NOT NULL)",
            "1452",
        ),
    ];
    for (name, target_sql, writes, source_sql, code) in cases {
        let mut cleanup_a = Cleanup::new(&shared_a());
        let mut cleanup_b = Cleanup::new(&shared_b());
        let db = database(&shared_a(), name, &mut cleanup_a).await;
        cleanup_b.push(format!("DROP DATABASE IF EXISTS `{db}`"));
        let t = format!("`{db}`.t");
        let p = format!("`{db}_p`.p");
        admin(&shared_a(), &[source_sql.replace("{t}", &t)]).await;
        // The parent of the foreign key lives outside the task's tables; it holds 7 only.
        cleanup_b.push(format!("DROP DATABASE IF EXISTS `{db}_p`"));
        admin(
            &shared_b(),
            &[
                format!("CREATE DATABASE `{db}`"),
                format!("CREATE DATABASE `{db}_p`"),
                format!("CREATE TABLE {p} (id INT PRIMARY KEY)"),
                format!("INSERT INTO {p} VALUES (7)"),
                target_sql.replace("{t}", &t).replace("{p}", &p),
            ],
        )
        .await;
        let dir = tempfile::tempdir().expect("tempdir");
        let config =
            Config::load(&task_file(dir.path(), &shared_a(), &shared_b(), "one-way", &[&format!("{db}.*")], ""))
                .expect("config");
        cleanup_b.push(format!("DELETE FROM ferry.ferry_checkpoint WHERE task = '{}'", config.tasks[0].name));
        cleanup_b.push(format!("DELETE FROM ferry.ferry_lease WHERE task = '{}'", config.tasks[0].name));
        let engine = start(&config).await;
        wait_caught_up(&config, Duration::from_secs(60), Some(&engine)).await;
        let mut c = connect(&shared_a()).await;
        for w in writes.split("; ") {
            c.query_drop(w.replace("{t}", &t)).await.expect("source write");
        }
        c.disconnect().await.ok();

        let metrics = engine.metrics()[0].clone();
        let start = Instant::now();
        let mut retried = false;
        let error = loop {
            let s = metrics.status();
            retried |= s.state == DirectionState::Retrying;
            if s.state == DirectionState::Failed {
                break s.last_error.unwrap_or_default();
            }
            assert!(start.elapsed() < Duration::from_secs(30), "{name}: the task did not stop; status {s:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(!retried, "{name}: a refused row is not retried: {error}");
        for want in [code, "key (2)", "ferry skip --config FILE", &format!("table {db}.t")] {
            assert!(error.contains(want), "{name}: the stop names {want:?}: {error}");
        }
        // Row 1 went in by itself, or rolled back with row 2 when both were one batch.
        let got = rows(&shared_b(), &format!("SELECT id FROM {t} ORDER BY id")).await;
        assert!(got.is_empty() || got == vec![vec!["1".to_string()]], "{name}: the refused row is not there: {got:?}");
        assert!(!engine.join().await.is_empty(), "{name}: the direction reports its error");
    }
}
