//! SQLite <-> MariaDB one-way tasks, both directions: every type both engines can hold
//! makes a round trip with exact equality per row, and a value SQLite cannot hold stops
//! the task naming it.

use std::path::Path;
use std::time::{Duration, Instant};

use ferry::config::Config;
use ferry::engine::task::prepare_target;
use ferry::engine::{Engine, plan_task};
use ferry::model::{TableName, same_row};
use mysql_async::prelude::Queryable;
use tokio_util::sync::CancellationToken;

use crate::mysql_oneway::{ALL_TYPES, all_rows, rows_sql};
use crate::support::mariadb::{Cleanup, check, connect, database, shared_a, shared_b, unique};
use crate::support::{app_conn, config_of, create_db, dump};

/// Endpoints `a` and `b` (MariaDB dc-a and dc-b, database `db`) and `s` (SQLite), and
/// two one-way tasks through `s`: from `from` to `s`, then from `s` to `to` (names unique
/// on the shared servers, where checkpoints outlive the test's files).
async fn config(dir: &Path, db: &str, from: &str, to: &str, tables_x: &str) -> Config {
    let s = dir.join("s.db");
    create_db(&s, "PRAGMA user_version = 1").await;
    config_of(
        dir,
        &[
            ("a", "dc-a", format!("{}/{db}", shared_a())),
            ("b", "dc-b", format!("{}/{db}", shared_b())),
            ("s", "dc-s", format!("sqlite://{}", s.display())),
        ],
        &[(unique("x"), from, "s", tables_x.to_string()), (unique("y"), "s", to, "*".to_string())],
    )
}

/// Prepares and starts both tasks (x first, so y's source table exists).
async fn start(config: &Config) -> Vec<Engine> {
    let mut engines = Vec::new();
    for task in &config.tasks {
        let specs = plan_task(config, task, &[]);
        prepare_target(&specs[0]).await.expect("prepare");
        engines.push(Engine::start(specs, CancellationToken::new()));
    }
    engines
}

async fn stop(engines: Vec<Engine>) {
    for e in engines {
        e.stop();
        assert!(e.join().await.is_empty(), "a direction failed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mariadb_to_sqlite_to_mariadb_keeps_every_value_exactly() {
    let mut cleanup_a = Cleanup::new(&shared_a());
    let mut cleanup_b = Cleanup::new(&shared_b());
    let db = database(&shared_a(), "mix", &mut cleanup_a).await;
    cleanup_b.push(format!("DROP DATABASE IF EXISTS `{db}`"));
    let t = format!("`{db}`.`all_types`");
    let (mut a, mut b) = (connect(&shared_a()).await, connect(&shared_b()).await);
    a.query_drop(ALL_TYPES.replace("{t}", &t)).await.expect("create on a");
    // The DBA's schema on the far side: ferry would otherwise create SQLite-shaped types.
    b.query_drop(format!("CREATE DATABASE `{db}`")).await.expect("db on b");
    b.query_drop(ALL_TYPES.replace("{t}", &t)).await.expect("create on b");
    // SQLite integers are signed 64-bit: unsigned values above that are tested apart.
    let in_range = |sql: String| sql.replace("18446744073709551615", "9223372036854775807");
    for sql in rows_sql(&t, 1) {
        a.query_drop(
            in_range(sql).replace("b'1111111111111111111111111111111111111111111111111111111111111111'", "b'0111'"),
        )
        .await
        .expect("snapshot rows");
    }

    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path(), &db, "a", "b", &format!("{db}.*")).await;
    let engines = start(&config).await;
    for sql in rows_sql(&t, 100) {
        a.query_drop(
            in_range(sql).replace("b'1111111111111111111111111111111111111111111111111111111111111111'", "b'1'"),
        )
        .await
        .expect("stream rows");
    }
    a.query_drop(format!(
        "UPDATE {t} SET dec65 = '0.000000000000000000000000000002', tm = '-12:00:00.000001', vc = CONCAT(vc, ' ✓'), \
         js = '{{\"k\": 1}}', ts = '2001-02-03 04:05:06.070809' WHERE id IN (1, 100)"
    ))
    .await
    .expect("update");
    a.query_drop(format!("DELETE FROM {t} WHERE id IN (2, 102)")).await.expect("delete");

    let name = TableName { schema: Some(db.clone()), name: "all_types".into() };
    let start_at = Instant::now();
    loop {
        let (ra, rb) = (all_rows(&shared_a(), &name).await, all_rows(&shared_b(), &name).await);
        if ra.len() == rb.len() && ra.iter().zip(&rb).all(|(x, y)| same_row(Some(x), Some(y))) {
            assert_eq!(ra.len(), 6, "rows on dc-a");
            break;
        }
        if start_at.elapsed() > Duration::from_secs(60) {
            let diff: Vec<String> = ra
                .iter()
                .zip(&rb)
                .filter(|(x, y)| !same_row(Some(x), Some(y)))
                .map(|(x, y)| format!("\n  dc-a {x:?}\n  dc-b {y:?}"))
                .collect();
            panic!(
                "dc-b did not reach dc-a's rows through SQLite ({} vs {} rows):{}",
                ra.len(),
                rb.len(),
                diff.concat()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop(engines).await;
    a.disconnect().await.ok();
    b.disconnect().await.ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_to_mariadb_to_sqlite_keeps_every_value_exactly() {
    let mut cleanup_a = Cleanup::new(&shared_a());
    let db = database(&shared_a(), "mixs", &mut cleanup_a).await;
    let dir = tempfile::tempdir().expect("tempdir");
    // s.db -> dc-a (tables created by ferry from SQLite's types) -> back into t.db.
    let schema = "CREATE TABLE kinds(id INTEGER PRIMARY KEY, code TEXT NOT NULL UNIQUE, i INTEGER, r REAL, \
                  t TEXT, b BLOB, d DECIMAL(12,4), flag BOOLEAN)";
    create_db(&dir.path().join("s.db"), schema).await;
    let mut s = app_conn(&dir.path().join("s.db")).await;
    let insert = "INSERT INTO kinds VALUES (1, 'min', -9223372036854775808, -1.7976931348623157e308, '', X'', 12345678.1234, 0), \
                  (2, 'max', 9223372036854775807, 2.2250738585072014e-308, 'tab\tquote''s ünï 😀 ', X'00FF00', -0.0001, 1), \
                  (3, 'nulls', NULL, NULL, NULL, NULL, NULL, NULL)";
    sqlx::query(insert).execute(&mut s).await.expect("rows");

    // Task x: s -> a; task y: a -> t (a SQLite file of its own).
    let (src, dst) = (dir.path().join("s.db"), dir.path().join("t.db"));
    let config = config_of(
        dir.path(),
        &[
            ("s", "dc-s", format!("sqlite://{}", src.display())),
            ("a", "dc-a", format!("{}/{db}", shared_a())),
            ("t", "dc-t", format!("sqlite://{}", dst.display())),
        ],
        &[(unique("x"), "s", "a", "*".to_string()), (unique("y"), "a", "t", format!("{db}.*"))],
    );
    // The far side's schema as the DBA made it: SQLite's own types again (ferry would
    // create TEXT for MariaDB's DECIMAL, to keep its digits exactly).
    create_db(&dst, schema).await;
    let engines = start(&config).await;
    sqlx::query("INSERT INTO kinds VALUES (4, 'later', 42, 0.1, 'x', X'01', 1.5, 1)")
        .execute(&mut s)
        .await
        .expect("insert");
    // A bound double: SQLite's own text-to-double parsing is off by a few ULPs at
    // extreme exponents (docs/type-mapping.md), bound values are exact.
    sqlx::query("UPDATE kinds SET t = 'changed', r = ?1 WHERE id = 2")
        .bind(1e-300_f64)
        .execute(&mut s)
        .await
        .expect("update");
    sqlx::query("DELETE FROM kinds WHERE id = 1").execute(&mut s).await.expect("delete");

    let start_at = Instant::now();
    loop {
        let want = dump(&src, "kinds", "id").await;
        if sqlite_has(&dst, "kinds").await && dump(&dst, "kinds", "id").await == want {
            assert_eq!(want.len(), 3);
            break;
        }
        assert!(
            start_at.elapsed() < Duration::from_secs(60),
            "t.db did not reach s.db's rows through MariaDB:\n  s {want:?}\n  t {:?}",
            if sqlite_has(&dst, "kinds").await { dump(&dst, "kinds", "id").await } else { Vec::new() }
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop(engines).await;
}

async fn sqlite_has(path: &Path, table: &str) -> bool {
    let mut c = app_conn(path).await;
    sqlx::query_scalar::<_, i64>("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1")
        .bind(table)
        .fetch_one(&mut c)
        .await
        .map(|n| n > 0)
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_sqlite_cannot_hold_stops_the_task_naming_it() {
    let mut cleanup_a = Cleanup::new(&shared_a());
    let db = database(&shared_a(), "mixu", &mut cleanup_a).await;
    let mut a = connect(&shared_a()).await;
    a.query_drop(format!("CREATE TABLE `{db}`.big (id INT PRIMARY KEY, u BIGINT UNSIGNED)")).await.expect("create");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path(), &db, "a", "b", &format!("{db}.*")).await;
    let specs = plan_task(&config, &config.tasks[0], &[]);
    prepare_target(&specs[0]).await.expect("prepare");
    let engine = Engine::start(specs, CancellationToken::new());
    a.query_drop(format!("INSERT INTO `{db}`.big VALUES (7, 18446744073709551615)")).await.expect("insert");
    let errors = tokio::time::timeout(Duration::from_secs(30), engine.join()).await.expect("the task stops by itself");
    let text = format!("{errors:?}");
    assert!(
        text.contains("18446744073709551615")
            && text.contains("cannot be stored exactly in SQLite")
            && text.contains("big"),
        "the error names the value, the table and why: {text}"
    );
    a.disconnect().await.ok();
}

/// `ferry check` takes SQLite <-> MariaDB tasks, one-way and two-way, and writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_accepts_one_way_and_two_way_mixed_tasks() {
    let mut cleanup_a = Cleanup::new(&shared_a());
    let mut cleanup_b = Cleanup::new(&shared_b());
    let db = database(&shared_a(), "mixc", &mut cleanup_a).await;
    cleanup_b.push(format!("DROP DATABASE IF EXISTS `{db}`"));
    let mut b = connect(&shared_b()).await;
    b.query_drop(format!("CREATE DATABASE `{db}`")).await.expect("db on b");
    b.disconnect().await.ok();
    let mut a = connect(&shared_a()).await;
    a.query_drop(format!("CREATE TABLE `{db}`.t (id INT PRIMARY KEY, v TEXT)")).await.expect("create");
    a.disconnect().await.ok();
    let dir = tempfile::tempdir().expect("tempdir");
    config(dir.path(), &db, "a", "b", &format!("{db}.*")).await;
    // The second task's source table, which the first task would otherwise create.
    let mut s = app_conn(&dir.path().join("s.db")).await;
    sqlx::query("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)").execute(&mut s).await.expect("sqlite table");
    drop(s);
    let out = check(&dir.path().join("ferry.toml")).await;
    assert_eq!(out.code, Some(0), "one-way mixed tasks pass: {}", out.all());
    assert!(out.stdout.contains(&format!("{db}.t")), "names the table: {}", out.all());

    let path = dir.path().join("ferry.toml");
    let text = std::fs::read_to_string(&path).expect("read");
    std::fs::write(&path, text.replacen("tables = [", "mode = \"two-way\"\ntables = [", 1)).expect("write");
    let out = check(&path).await;
    assert_eq!(out.code, Some(0), "two-way mixed tasks pass: {}", out.all());
    assert!(out.stdout.contains("two-way"), "says two-way: {}", out.all());
    assert!(!sqlite_has(&dir.path().join("s.db"), "ferry_changelog").await, "check wrote nothing");
}

async fn sqlite_rows(path: &Path) -> Vec<String> {
    dump(path, "t", "id").await
}

async fn mariadb_rows(url: &str, db: &str) -> Vec<String> {
    crate::support::mariadb::rows(url, &format!("SELECT id, v, note FROM `{db}`.t ORDER BY id"))
        .await
        .into_iter()
        .map(|r| format!("{},{},'{}'", r[0], r[1], r[2]))
        .collect()
}

/// SQLite <-> MariaDB two-way: writes on each side reach the other once, writes that race
/// while ferry is stopped converge under last-writer-wins, and both sides record them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_and_mariadb_two_way_converge_and_record_races() {
    let mut cleanup_a = Cleanup::new(&shared_a());
    let db = database(&shared_a(), "mixtw", &mut cleanup_a).await;
    let mut a = connect(&shared_a()).await;
    a.query_drop(format!("CREATE TABLE `{db}`.t (id INT NOT NULL PRIMARY KEY, v INT NOT NULL, note VARCHAR(40) NULL)"))
        .await
        .expect("create");
    a.query_drop(format!("INSERT INTO `{db}`.t VALUES (1, 1, 'x'), (2, 2, 'x'), (3, 3, 'x')")).await.expect("rows");
    let dir = tempfile::tempdir().expect("tempdir");
    let s = dir.path().join("s.db");
    create_db(&s, "PRAGMA user_version = 1").await;
    let task = unique("mixtw");
    let text = format!(
        "[node]\nid = \"test-node\"\nstore = \"sqlite://meta.db\"\n\n[[endpoint]]\nname = \"a\"\nsite = \"dc-a\"\nurl = \"{}/{db}\"\n\n\
         [[endpoint]]\nname = \"s\"\nsite = \"dc-s\"\nurl = \"sqlite://{}\"\n\n[[task]]\nname = \"{task}\"\nfrom = \"a\"\nto = \"s\"\n\
         mode = \"two-way\"\ntables = [\"t\"]\n",
        shared_a(),
        s.display()
    );
    let path = dir.path().join("ferry.toml");
    std::fs::write(&path, text).expect("task file");
    let config = Config::load(&path).expect("config");
    let run = || async {
        let specs = plan_task(&config, &config.tasks[0], &[]);
        prepare_target(&specs[0]).await.expect("prepare");
        Engine::start(specs, CancellationToken::new())
    };
    let engine = run().await;
    settle(engine, &db, &s).await;

    // While ferry is stopped: the same row updated on both sides (SQLite later), a row
    // deleted on MariaDB and updated on SQLite, a new row on each side.
    a.query_drop(format!("UPDATE `{db}`.t SET v = 100, note = 'a' WHERE id = 1")).await.expect("update");
    a.query_drop(format!("DELETE FROM `{db}`.t WHERE id = 2")).await.expect("delete");
    a.query_drop(format!("INSERT INTO `{db}`.t VALUES (10, 10, 'a')")).await.expect("insert");
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut q = app_conn(&s).await;
    for sql in [
        "UPDATE t SET v = 200, note = 's' WHERE id = 1",
        "UPDATE t SET v = 201, note = 's' WHERE id = 2",
        "INSERT INTO t VALUES (20, 20, 's')",
    ] {
        sqlx::query(sql).execute(&mut q).await.expect("sqlite write");
    }
    drop(q);
    let engine = run().await;
    settle(engine, &db, &s).await;
    let want = vec!["1,200,'s'", "2,201,'s'", "3,3,'x'", "10,10,'a'", "20,20,'s'"];
    assert_eq!(mariadb_rows(&shared_a(), &db).await, want, "MariaDB side");
    let conflicts = crate::support::mariadb::rows(
        &shared_a(),
        &format!("SELECT GROUP_CONCAT(pk ORDER BY pk) FROM ferry.ferry_conflict WHERE task = '{task}'"),
    )
    .await;
    assert_eq!(conflicts, vec![vec!["(1),(2)".to_string()]], "MariaDB records both races");
    let mut q = app_conn(&s).await;
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM ferry_conflict").fetch_one(&mut q).await.expect("count");
    assert_eq!(n, 2, "SQLite records both races");
    a.disconnect().await.ok();
}

/// Waits until both sides of a SQLite <-> MariaDB two-way task agree and stay so, then stops it.
async fn settle(engine: Engine, db: &str, s: &Path) {
    let start = Instant::now();
    loop {
        let (m, q) = (mariadb_rows(&shared_a(), db).await, sqlite_rows(s).await);
        if m == q && !m.is_empty() {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if mariadb_rows(&shared_a(), db).await == m && sqlite_rows(s).await == q {
                break;
            }
        }
        let errors: Vec<String> = engine.metrics().iter().filter_map(|m| m.status().last_error).collect();
        assert!(start.elapsed() < Duration::from_secs(60), "sides did not converge: {m:?} vs {q:?}; {errors:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    engine.stop();
    assert!(engine.join().await.is_empty(), "a direction failed");
}

/// A SQLite transaction larger than one read (50,000 rows; reads take 20,000 changes)
/// reaches MariaDB in parts held in one open MariaDB transaction, committed with the last.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sqlite_transaction_larger_than_a_read_reaches_mariadb_whole() {
    let mut cleanup_a = Cleanup::new(&shared_a());
    let db = database(&shared_a(), "mixbig", &mut cleanup_a).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let s = dir.path().join("s.db");
    create_db(&s, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)").await;
    let config = config_of(
        dir.path(),
        &[("a", "dc-a", format!("{}/{db}", shared_a())), ("s", "dc-s", format!("sqlite://{}", s.display()))],
        &[(unique("big"), "s", "a", "*".to_string())],
    );
    let specs = plan_task(&config, &config.tasks[0], &[]);
    prepare_target(&specs[0]).await.expect("prepare");
    let engine = Engine::start(specs, CancellationToken::new());
    let count = || async {
        crate::support::mariadb::rows(&shared_a(), &format!("SELECT COUNT(*) FROM `{db}`.t"))
            .await
            .first()
            .and_then(|r| r.first().cloned())
            .unwrap_or_default()
    };
    // The (empty) snapshot done, so the rows come through the stream.
    let spec = plan_task(&config, &config.tasks[0], &[]).remove(0);
    crate::support::wait_until(Duration::from_secs(30), "the snapshot of the empty table", || async {
        let state = ferry::connector::registry::target_state(&spec.target, &spec.id).await.expect("target state");
        state.checkpoint.is_some_and(|cp| {
            !cp.tables.is_empty() && cp.tables.values().all(|t| *t == ferry::connector::TableProgress::Done)
        })
    })
    .await;
    assert_eq!(count().await, "0");
    let mut q = app_conn(&s).await;
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 50000) \
         INSERT INTO t SELECT i, 'row ' || i FROM n",
    )
    .execute(&mut q)
    .await
    .expect("one big transaction");
    drop(q);
    // Never a part of it: MariaDB shows none of the rows until all of them.
    let start = Instant::now();
    loop {
        let n = count().await;
        assert!(n == "0" || n == "50000", "a part of the transaction was visible on MariaDB: {n} rows");
        if n == "50000" {
            break;
        }
        let errors: Vec<String> = engine.metrics().iter().filter_map(|m| m.status().last_error).collect();
        assert!(errors.is_empty(), "the direction failed: {errors:?}");
        assert!(start.elapsed() < Duration::from_secs(60), "the rows did not arrive");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    engine.stop();
    assert!(engine.join().await.is_empty(), "a direction failed");
}
