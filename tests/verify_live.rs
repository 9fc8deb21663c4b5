//! `ferry verify` while a task runs under write load: whatever replication has not
//! applied yet when a chunk is read is re-checked after it has, so verify reports no
//! confirmed difference — on a two-way SQLite task and a one-way MariaDB task.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ferry::config::Config;
use mysql_async::prelude::Queryable;

use crate::support::caught_up::wait_caught_up;
use crate::support::mariadb::{Cleanup, admin, connect, database, shared_a, shared_b, unique};
use crate::support::{FerryRun, app_conn, create_db, ferry_within, task_file};

const LIMIT: Duration = Duration::from_secs(180);
const KEYS: i64 = 5_000;

/// Runs verify with JSON output; asserts it found nothing confirmed and ran live.
async fn verify_clean(config: &Path) -> serde_json::Value {
    let out = ferry_within(&["verify", "--config", config.to_str().expect("utf-8"), "--format", "json"], LIMIT).await;
    let v: serde_json::Value =
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("stdout is one JSON report ({e}): {}", out.all()));
    assert_eq!(v["tasks"][0]["confirmed"], 0, "no confirmed difference under live replication: {}", out.all());
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert_eq!(v["tasks"][0]["live"], true, "verify saw the task running: {}", out.all());
    v
}

async fn sqlite_writer(path: std::path::PathBuf, seed: u64, stop: Arc<AtomicBool>) -> u64 {
    let mut conn = app_conn(&path).await;
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        let k = rng.i64(1..=KEYS * 2);
        let sql = match rng.u8(0..10) {
            0..=6 => format!("UPDATE kv SET v = 'w{seed}-{}', n = n + 1 WHERE k = {k}", rng.u32(..)),
            7..=8 => format!("INSERT INTO kv(k, v, n) VALUES ({k}, 'i{seed}', 0) ON CONFLICT(k) DO NOTHING"),
            _ => format!("DELETE FROM kv WHERE k = {k}"),
        };
        if sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await.is_ok() {
            n += 1;
        }
        tokio::time::sleep(Duration::from_millis(rng.u64(1..6))).await;
    }
    sqlx::Connection::close(conn).await.ok();
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_way_sqlite_under_writes_has_no_confirmed_differences() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (dir.path().join("a.db"), dir.path().join("b.db"));
    let schema = "CREATE TABLE kv(k INTEGER PRIMARY KEY, v TEXT, n INTEGER NOT NULL);";
    create_db(&a, &format!("{schema} WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x<{KEYS}) INSERT INTO kv SELECT x, 'v'||x, 0 FROM c;")).await;
    create_db(&b, schema).await;
    let path = task_file(dir.path(), "two-way", "");
    let config = Config::load(&path).expect("config");
    let _run = FerryRun::start(&path, &dir.path().join("run.log"));
    wait_caught_up(&config, LIMIT, None).await;

    let stop = Arc::new(AtomicBool::new(false));
    let wa = tokio::spawn(sqlite_writer(a.clone(), 1, stop.clone()));
    let wb = tokio::spawn(sqlite_writer(b.clone(), 2, stop.clone()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    for _ in 0..3 {
        verify_clean(&path).await;
    }
    stop.store(true, Ordering::Relaxed);
    let (na, nb) = (wa.await.expect("writer a"), wb.await.expect("writer b"));
    assert!(na > 100 && nb > 100, "writers made too few changes: {na}, {nb}");
    wait_caught_up(&config, LIMIT, None).await;
    let v = verify_clean(&path).await;
    assert_eq!(v["tasks"][0]["transient"], 0, "once replication is idle nothing is in flight: {v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_way_mariadb_under_writes_has_no_confirmed_differences() {
    let (mut ca, mut cb) = (Cleanup::new(&shared_a()), Cleanup::new(&shared_b()));
    let db = database(&shared_a(), "vlive", &mut ca).await;
    cb.push(format!("DROP DATABASE IF EXISTS `{db}`"));
    admin(&shared_b(), &[format!("CREATE DATABASE `{db}`")]).await;
    let values: Vec<String> = (1..=KEYS).map(|k| format!("({k}, 'v{k}', 0)")).collect();
    let mut c = connect(&shared_a()).await;
    c.query_drop(format!("CREATE TABLE `{db}`.kv (k BIGINT PRIMARY KEY, v VARCHAR(64), n INT NOT NULL)"))
        .await
        .expect("create");
    c.query_drop(format!("INSERT INTO `{db}`.kv VALUES {}", values.join(", "))).await.expect("load");
    c.disconnect().await.ok();

    let dir = tempfile::tempdir().expect("tempdir");
    let text = format!(
        "[node]\nid = \"test-node\"\nstore = \"sqlite://meta.db\"\n\n[[endpoint]]\nname = \"a\"\nurl = \"{}\"\n\n\
         [[endpoint]]\nname = \"b\"\nurl = \"{}\"\n\n[[task]]\nname = \"{}\"\nfrom = \"a\"\nto = \"b\"\ntables = [\"{db}.*\"]\n",
        shared_a(),
        shared_b(),
        unique("vlive")
    );
    let path = dir.path().join("ferry.toml");
    std::fs::write(&path, text).expect("task file");
    let config = Config::load(&path).expect("config");
    let _run = FerryRun::start(&path, &dir.path().join("run.log"));
    wait_caught_up(&config, LIMIT, None).await;

    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, db) = (stop.clone(), db.clone());
        tokio::spawn(async move {
            let mut c = connect(&shared_a()).await;
            let mut rng = fastrand::Rng::with_seed(7);
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let k = rng.i64(1..=KEYS * 2);
                let sql = match rng.u8(0..10) {
                    0..=6 => format!("UPDATE `{db}`.kv SET v = 'w{}', n = n + 1 WHERE k = {k}", rng.u32(..)),
                    7..=8 => format!("INSERT IGNORE INTO `{db}`.kv VALUES ({k}, 'i', 0)"),
                    _ => format!("DELETE FROM `{db}`.kv WHERE k = {k}"),
                };
                c.query_drop(sql).await.expect("write");
                n += 1;
                tokio::time::sleep(Duration::from_millis(rng.u64(1..4))).await;
            }
            c.disconnect().await.ok();
            n
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    for _ in 0..3 {
        let v = verify_clean(&path).await;
        assert_eq!(v["tasks"][0]["tables"][0]["method"], "in-database", "{v}");
    }
    stop.store(true, Ordering::Relaxed);
    assert!(writer.await.expect("writer") > 100, "the writer made too few changes");
    wait_caught_up(&config, LIMIT, None).await;
    verify_clean(&path).await;
}
