//! Crash safety: the real `ferry run` is SIGKILLed at random points during the snapshot
//! and the stream, and restarted, repeatedly, while the application writes. Afterwards
//! the target equals the source row by row, every inserted row of an insert-only table
//! is there exactly once, and no deleted row has come back.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::support::{FerryRun, app_conn, changelog_head, checkpoint_seq, create_db, dump, task_file};

const ITEMS: i64 = 160_000;
const SCHEMA: &str = "CREATE TABLE events(id INTEGER PRIMARY KEY, payload TEXT NOT NULL, at REAL);
                      CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT, qty INTEGER, tag BLOB);";

async fn seed(path: &Path) {
    let mut c = app_conn(path).await;
    sqlx::query("BEGIN").execute(&mut c).await.expect("begin");
    for i in 1..=ITEMS {
        sqlx::query("INSERT INTO items(id, name, qty, tag) VALUES (?1, ?2, ?3, ?4)")
            .bind(i)
            .bind(format!("item {i}"))
            .bind(i % 97)
            .bind(vec![(i % 251) as u8, 0, 7])
            .execute(&mut c)
            .await
            .expect("seed");
    }
    sqlx::query("COMMIT").execute(&mut c).await.expect("commit");
}

/// The application: appends events, updates and deletes items; returns deleted ids.
async fn application(path: PathBuf, stop: Arc<AtomicBool>) -> (u64, Vec<i64>) {
    let mut c = app_conn(&path).await;
    let mut rng = fastrand::Rng::with_seed(7);
    let mut events = 0u64;
    let mut deleted = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let ok = async {
            sqlx::query("BEGIN IMMEDIATE").execute(&mut c).await?;
            for _ in 0..rng.usize(1..20) {
                sqlx::query("INSERT INTO events(payload, at) VALUES (?1, ?2)")
                    .bind(format!("event-{}", rng.u64(..)))
                    .bind(rng.f64())
                    .execute(&mut c)
                    .await?;
            }
            let id = rng.i64(1..=ITEMS);
            sqlx::query("UPDATE items SET qty = qty + 1, name = ?1 WHERE id = ?2")
                .bind(format!("changed {}", rng.u32(..)))
                .bind(id)
                .execute(&mut c)
                .await?;
            let del = rng.i64(1..=ITEMS);
            let r = sqlx::query("DELETE FROM items WHERE id = ?1").bind(del).execute(&mut c).await?;
            sqlx::query("COMMIT").execute(&mut c).await?;
            Ok::<_, sqlx::Error>((r.rows_affected() > 0).then_some(del))
        }
        .await;
        match ok {
            Ok(d) => {
                events += 1;
                deleted.extend(d);
            }
            Err(_) => {
                let _ = sqlx::query("ROLLBACK").execute(&mut c).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    (events, deleted)
}

/// Whether the target recorded the copy of both tables as over.
async fn copy_done(b: &Path) -> bool {
    let mut c = app_conn(b).await;
    sqlx::query_scalar::<_, i64>(
        "SELECT count(*) FROM ferry_checkpoint WHERE slot IN ('table:items', 'table:events') AND progress LIKE '%done%'",
    )
    .fetch_one(&mut c)
    .await
    .is_ok_and(|n| n == 2)
}

/// The items table's snapshot progress as the target recorded it.
async fn snapshot_state(b: &Path) -> Option<String> {
    let mut c = app_conn(b).await;
    sqlx::query_scalar("SELECT progress FROM ferry_checkpoint WHERE slot = 'table:items'")
        .fetch_optional(&mut c)
        .await
        .ok()
        .flatten()
        .flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn survives_sigkill_during_snapshot_and_stream_without_loss_or_duplicates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (dir.path().join("a.db"), dir.path().join("b.db"));
    create_db(&a, SCHEMA).await;
    create_db(&b, SCHEMA).await;
    seed(&a).await;
    let config = task_file(dir.path(), "one-way", "");
    let log = dir.path().join("ferry.log");

    let stop = Arc::new(AtomicBool::new(false));
    let app = tokio::spawn(application(a.clone(), stop.clone()));
    let mut rng = fastrand::Rng::with_seed(42);
    // Early kills land in the snapshot (160,000 rows: several chunks), later ones in the stream.
    let mut mid_snapshot = 0;
    for round in 0..10 {
        let mut ferry = FerryRun::start(&config, &log);
        if round < 5 {
            // On a loaded machine the start alone can outlast a fixed delay: wait for the
            // copy of items to be under way (or over), then kill at a random point.
            let start = std::time::Instant::now();
            while snapshot_state(&b).await.is_none() && start.elapsed() < Duration::from_secs(30) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            tokio::time::sleep(Duration::from_millis(rng.u64(0..300))).await;
        } else {
            tokio::time::sleep(Duration::from_millis(rng.u64(300..1500))).await;
        }
        ferry.kill();
        if snapshot_state(&b).await.is_some_and(|s| !s.contains("done")) {
            mid_snapshot += 1;
        }
    }
    assert!(mid_snapshot > 0, "no kill landed during the snapshot; the test did not exercise snapshot resume");
    let mut ferry = FerryRun::start(&config, &log);
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let (txns, deleted) = app.await.expect("application");
    assert!(txns > 100, "the application made only {txns} transactions");

    let head = changelog_head(&a).await;
    // Caught up: the copy of items is over and the stream has passed the source's head
    // (the stream advances during the copy too, so the position alone says nothing).
    let start = std::time::Instant::now();
    while !(copy_done(&b).await && checkpoint_seq(&b, "t", "a->b").await >= head) {
        assert!(
            start.elapsed() < Duration::from_secs(180),
            "the target did not finish the copy and catch up within 180 s: items {:?}, stream at {} of {head}, ferry {}; log:\n{}",
            snapshot_state(&b).await,
            checkpoint_seq(&b, "t", "a->b").await,
            if ferry.exited() { "exited" } else { "running" },
            std::fs::read_to_string(&log).unwrap_or_default().lines().rev().take(30).collect::<Vec<_>>().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        ferry.terminate(),
        Some(0),
        "ferry run did not stop cleanly on SIGTERM; log: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );

    assert_eq!(dump(&a, "items", "id").await, dump(&b, "items", "id").await, "items differ");
    let (ea, eb) = (dump(&a, "events", "id").await, dump(&b, "events", "id").await);
    assert_eq!(ea.len(), eb.len(), "events: source has {}, target {}", ea.len(), eb.len());
    assert_eq!(ea, eb, "events differ");
    let mut c = app_conn(&b).await;
    let dupes: i64 =
        sqlx::query_scalar("SELECT count(*) FROM (SELECT payload FROM events GROUP BY payload HAVING count(*) > 1)")
            .fetch_one(&mut c)
            .await
            .expect("dupes");
    let src_dupes: i64 = {
        let mut s = app_conn(&a).await;
        sqlx::query_scalar("SELECT count(*) FROM (SELECT payload FROM events GROUP BY payload HAVING count(*) > 1)")
            .fetch_one(&mut s)
            .await
            .expect("dupes")
    };
    assert_eq!(dupes, src_dupes, "an inserted event was applied more than once");
    for id in &deleted {
        let back: Option<i64> = sqlx::query_scalar("SELECT id FROM items WHERE id = ?1")
            .bind(id)
            .fetch_optional(&mut c)
            .await
            .expect("query");
        assert!(back.is_none(), "deleted item {id} came back on the target");
    }
    assert!(!deleted.is_empty(), "the application deleted nothing; the test did not exercise deletes");
}
