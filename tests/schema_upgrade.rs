//! ferry's own tables as the last release before schema versions created them (fixtures
//! in tests/fixtures/schema_v1: that release's exact DDL with a checkpoint at a real
//! position, a lease and a conflict) are upgraded by `ferry run`, which then resumes at
//! the checkpoint: no new snapshot, nothing lost, nothing applied twice. A schema newer
//! than the binary is refused with the versions and the fix, and changes nothing.
//!
//! Each target table gets test triggers logging every write ferry makes to it, so the
//! tests see exactly which rows the resumed run touched.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ferry::connector::mysql::{MysqlEndpoint, migrate as mysql_migrate};
use ferry::connector::sqlite::migrate as sqlite_migrate;
use ferry::model::{Position, SiteId};
use mysql_async::prelude::Queryable;

use crate::support::mariadb::{self, Cleanup, admin, connect, private_globals, rows, unique};
use crate::support::{FerryRun, app_conn, checkpoint_seq, create_db, dump, ferry_within, task_file};

/// A fixture file's text.
fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/schema_v1").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

/// A MySQL fixture's statements (one per `;` at a line end, `--` lines dropped), with
/// `@NAME@` placeholders replaced.
fn mysql_statements(name: &str, vars: &[(&str, &str)]) -> Vec<String> {
    let mut text: String =
        fixture(name).lines().filter(|l| !l.trim_start().starts_with("--")).collect::<Vec<_>>().join("\n");
    for (k, v) in vars {
        text = text.replace(&format!("@{k}@"), v);
    }
    text.split(";\n").map(str::trim).map(|s| s.trim_end_matches(';').to_string()).filter(|s| !s.is_empty()).collect()
}

/// Waits until `done` holds, failing with the run's log after `limit`.
async fn wait_for<F, Fut>(limit: Duration, what: &str, log: &Path, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !done().await {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}; ferry's log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Asserts a refusal of a newer schema: exit 2, naming the endpoint, both versions and the fix.
fn assert_refused_newer(out: &crate::support::Outcome, endpoint: &str, found: i64, supported: i64) {
    assert_eq!(out.code, Some(2), "a newer schema is a setup error (exit 2)\n{}", out.all());
    for needle in [
        format!("endpoint {endpoint}: "),
        format!("are at schema version {found}, but this ferry knows versions up to {supported}"),
        format!("fix: upgrade ferry on every node to a release that knows schema version {found}"),
    ] {
        assert!(out.stderr.contains(&needle), "stderr lacks {needle:?}\n{}", out.all());
    }
}

// --- SQLite -------------------------------------------------------------------------------

/// Logs every write to b's `t` into `applied` (op, id).
const SQLITE_WRITE_LOG: &str =
    "CREATE TABLE applied(n INTEGER PRIMARY KEY AUTOINCREMENT, op TEXT NOT NULL, id INTEGER NOT NULL);
CREATE TRIGGER log_ins AFTER INSERT ON t BEGIN INSERT INTO applied(op, id) VALUES ('ins', NEW.id); END;
CREATE TRIGGER log_upd AFTER UPDATE ON t BEGIN INSERT INTO applied(op, id) VALUES ('upd', NEW.id); END;
CREATE TRIGGER log_del AFTER DELETE ON t BEGIN INSERT INTO applied(op, id) VALUES ('del', OLD.id); END;";

async fn sqlite_rows<T>(path: &Path, sql: &str) -> Vec<T>
where
    T: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow> + Send + Unpin,
{
    let mut c = app_conn(path).await;
    let rows = sqlx::query_as(sqlx::AssertSqlSafe(sql.to_string()))
        .fetch_all(&mut c)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    sqlx::Connection::close(c).await.ok();
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_tables_of_the_previous_release_are_upgraded_and_the_task_resumes_at_its_checkpoint() {
    let dir = tempfile::tempdir().expect("temp folder");
    let (a, b) = (dir.path().join("a.db"), dir.path().join("b.db"));
    let log: PathBuf = dir.path().join("ferry.log");
    create_db(&a, &fixture("sqlite_source.sql")).await;
    create_db(&b, &fixture("sqlite_target.sql")).await;
    create_db(&b, SQLITE_WRITE_LOG).await;
    assert_eq!(checkpoint_seq(&b, "t", "a->b").await, 4, "the fixture's checkpoint");
    // Changes after the checkpoint (changelog seq 5..7), made while no ferry ran.
    create_db(
        &a,
        "INSERT INTO t VALUES (7, 'seven'); UPDATE t SET v = 'one-b' WHERE id = 1; DELETE FROM t WHERE id = 5;",
    )
    .await;

    let config = task_file(dir.path(), "one-way", "");
    let mut run = FerryRun::start(&config, &log);
    let want = ["1,'one-b'", "2,'two, edited on b'", "4,'four'", "6,'six'", "7,'seven'"];
    wait_for(Duration::from_secs(30), "b's checkpoint to pass the last change (sqlite:7)", &log, || async {
        checkpoint_seq(&b, "t", "a->b").await >= 7
    })
    .await;
    assert_eq!(run.terminate(), Some(0), "a clean stop; log:\n{}", std::fs::read_to_string(&log).unwrap_or_default());
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();

    // Exactly the three changes after the checkpoint were written to b: the hand edit of
    // row 2 survives (no snapshot, no re-read of applied changes) and nothing else moved.
    assert_eq!(dump(&b, "t", "id").await, want, "b's rows; log:\n{log_text}");
    let applied: Vec<(String, i64)> = sqlite_rows(&b, "SELECT op, id FROM applied ORDER BY id, n").await;
    assert_eq!(
        applied,
        vec![("upd".to_string(), 1), ("del".to_string(), 5), ("ins".to_string(), 7)],
        "writes ferry made to b.t; log:\n{log_text}"
    );
    assert_eq!(dump(&a, "t", "id").await, ["1,'one-b'", "2,'two-b'", "4,'four'", "6,'six'", "7,'seven'"]);

    // Both files are at the latest version; the lease has its new column; old rows stay.
    for db in [&a, &b] {
        let versions: Vec<(String, i64)> = sqlite_rows(db, "SELECT component, version FROM ferry_schema").await;
        assert_eq!(versions, vec![("endpoint".to_string(), sqlite_migrate::LATEST)], "{}", db.display());
        let cols: Vec<(String,)> = sqlite_rows(db, "SELECT name FROM pragma_table_info('ferry_lease')").await;
        assert!(cols.iter().any(|(c,)| c == "fencing"), "ferry_lease.fencing in {}: {cols:?}", db.display());
    }
    let conflicts: Vec<(i64, String, String)> = sqlite_rows(&b, "SELECT id, task, pk FROM ferry_conflict").await;
    assert_eq!(conflicts, vec![(1, "old".to_string(), "2".to_string())], "the logged conflict is kept");
    assert!(log_text.contains("release before schema versions"), "the upgrade says what it found; log:\n{log_text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_schema_newer_than_the_binary_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().expect("temp folder");
    let (a, b) = (dir.path().join("a.db"), dir.path().join("b.db"));
    create_db(&a, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t VALUES (1, 'one');").await;
    let newer = sqlite_migrate::LATEST + 1;
    create_db(
        &b,
        &format!(
            "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); \
             CREATE TABLE ferry_schema(component TEXT PRIMARY KEY, version INTEGER NOT NULL, updated_us INTEGER NOT NULL); \
             INSERT INTO ferry_schema VALUES ('endpoint', {newer}, 0);"
        ),
    )
    .await;
    let config = task_file(dir.path(), "one-way", "");
    let out = ferry_within(&["run", "--config", config.to_str().expect("utf-8 path")], Duration::from_secs(30)).await;
    assert_refused_newer(&out, "b", newer, sqlite_migrate::LATEST);
    let objects: Vec<(String,)> =
        sqlite_rows(&b, "SELECT name FROM sqlite_schema WHERE name LIKE 'ferry%' ORDER BY name").await;
    assert_eq!(objects, vec![("ferry_schema".to_string(),)], "nothing of ferry's was written to b");
    assert!(dump(&b, "t", "id").await.is_empty(), "no row was copied to b");
}

// --- MySQL/MariaDB (the private pair: the tests replace its whole `ferry` database) --------

/// The current binlog position of a server, as ferry writes it.
async fn binlog_position(url: &str) -> Position {
    let status = rows(url, "SHOW MASTER STATUS").await;
    let gtid = rows(url, "SELECT @@gtid_binlog_pos").await;
    ferry::connector::registry::parse_position(&format!("mysql:{}:{}:{}", status[0][0], status[0][1], gtid[0][0]))
        .expect("a position")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_tables_of_the_previous_release_are_upgraded_and_the_task_resumes_at_its_checkpoint() {
    let (pair, _globals) = private_globals().await;
    let (root_a, root_b) = (pair.root_a(), pair.root_b());
    let mut clean_a = Cleanup::new(&root_a);
    let mut clean_b = Cleanup::new(&root_b);
    // The pair is left without a `ferry` database, as other tests of it expect.
    clean_a.push("DROP DATABASE IF EXISTS `ferry`");
    clean_b.push("DROP DATABASE IF EXISTS `ferry`");
    admin(&root_a, &["DROP DATABASE IF EXISTS `ferry`".into()]).await;
    admin(&root_b, &["DROP DATABASE IF EXISTS `ferry`".into()]).await;
    let db = mariadb::database(&root_a, "upg", &mut clean_a).await;
    clean_b.push(format!("DROP DATABASE IF EXISTS `{db}`"));
    let task = unique("upg_task");
    let vars_task = [("TASK", task.as_str()), ("DB", db.as_str())];

    // The source: rows copied by the snapshot, the previous release's ferry tables, then
    // changes it applied (in the binlog before the checkpoint position).
    admin(
        &root_a,
        &[
            format!("CREATE TABLE `{db}`.t (id INT NOT NULL PRIMARY KEY, v VARCHAR(50)) ENGINE=InnoDB"),
            format!("INSERT INTO `{db}`.t VALUES (1, 'one'), (2, 'two'), (3, 'three'), (4, 'four'), (5, 'five')"),
        ],
    )
    .await;
    admin(&root_a, &mysql_statements("mysql_source.sql", &vars_task)).await;
    let mut app = connect(&root_a).await;
    for sql in [
        format!("UPDATE `{db}`.t SET v = 'two-b' WHERE id = 2"),
        format!("DELETE FROM `{db}`.t WHERE id = 3"),
        format!("INSERT INTO `{db}`.t VALUES (6, 'six')"),
    ] {
        app.query_drop(sql).await.expect("a change before the checkpoint");
    }
    let checkpoint = binlog_position(&root_a).await;
    // Changes after the checkpoint, made while no ferry ran.
    for sql in [
        format!("INSERT INTO `{db}`.t VALUES (7, 'seven')"),
        format!("UPDATE `{db}`.t SET v = 'one-b' WHERE id = 1"),
        format!("DELETE FROM `{db}`.t WHERE id = 5"),
    ] {
        app.query_drop(sql).await.expect("a change after the checkpoint");
    }
    app.disconnect().await.ok();
    let last_change = binlog_position(&root_a).await;

    // The target: the rows as of the checkpoint, row 2 then edited by hand, the write
    // log, and the previous release's ferry tables with the checkpoint.
    admin(
        &root_b,
        &[
            format!("CREATE DATABASE `{db}`"),
            format!("CREATE TABLE `{db}`.t (id INT NOT NULL PRIMARY KEY, v VARCHAR(50)) ENGINE=InnoDB"),
            format!(
                "INSERT INTO `{db}`.t VALUES (1, 'one'), (2, 'two, edited on b'), (4, 'four'), (5, 'five'), (6, 'six')"
            ),
            format!("CREATE TABLE `{db}`.applied (n INT AUTO_INCREMENT PRIMARY KEY, op VARCHAR(3), id INT)"),
            format!(
                "CREATE TRIGGER `{db}`.log_ins AFTER INSERT ON `{db}`.t FOR EACH ROW INSERT INTO `{db}`.applied (op, id) VALUES ('ins', NEW.id)"
            ),
            format!(
                "CREATE TRIGGER `{db}`.log_upd AFTER UPDATE ON `{db}`.t FOR EACH ROW INSERT INTO `{db}`.applied (op, id) VALUES ('upd', NEW.id)"
            ),
            format!(
                "CREATE TRIGGER `{db}`.log_del AFTER DELETE ON `{db}`.t FOR EACH ROW INSERT INTO `{db}`.applied (op, id) VALUES ('del', OLD.id)"
            ),
        ],
    )
    .await;
    let position = checkpoint.to_string();
    let vars = [("TASK", task.as_str()), ("DB", db.as_str()), ("POSITION", position.as_str())];
    admin(&root_b, &mysql_statements("mysql_target.sql", &vars)).await;

    let dir = tempfile::tempdir().expect("temp folder");
    let log = dir.path().join("ferry.log");
    let config = mariadb::task_file(dir.path(), &pair.url_a(), &pair.url_b(), "one-way", &[&format!("{db}.*")], "");
    let text = std::fs::read_to_string(&config).expect("task file");
    std::fs::write(&config, text.replacen("name = \"t\"", &format!("name = \"{task}\""), 1)).expect("task name");
    let mut run = FerryRun::start(&config, &log);
    let want = vec![
        vec!["1".to_string(), "one-b".into()],
        vec!["2".into(), "two, edited on b".into()],
        vec!["4".into(), "four".into()],
        vec!["6".into(), "six".into()],
        vec!["7".into(), "seven".into()],
    ];
    let select_t = format!("SELECT id, v FROM `{db}`.t ORDER BY id");
    let select_stream =
        format!("SELECT position FROM ferry.ferry_checkpoint WHERE task = '{task}' AND slot = 'stream:0'");
    wait_for(Duration::from_secs(60), &format!("b's checkpoint to pass the last change ({last_change})"), &log, || {
        let (root_b, select_stream, last_change) = (&root_b, &select_stream, &last_change);
        async move {
            let now = rows(root_b, select_stream).await;
            let at: Option<Position> = now.first().and_then(|r| ferry::connector::registry::parse_position(&r[0]).ok());
            at.is_some_and(|p| p.stream_cmp(last_change).is_some_and(|o| o.is_ge()))
        }
    })
    .await;
    assert_eq!(run.terminate(), Some(0), "a clean stop; log:\n{}", std::fs::read_to_string(&log).unwrap_or_default());
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();

    assert_eq!(rows(&root_b, &select_t).await, want, "b's rows; log:\n{log_text}");
    let applied = rows(&root_b, &format!("SELECT op, id FROM `{db}`.applied ORDER BY id, n")).await;
    assert_eq!(
        applied,
        vec![vec!["upd".to_string(), "1".into()], vec!["del".into(), "5".into()], vec!["ins".into(), "7".into()]],
        "writes ferry made to b's t; log:\n{log_text}"
    );
    let stream = rows(&root_b, &select_stream).await;
    let resumed: Position = ferry::connector::registry::parse_position(&stream[0][0])
        .expect("the checkpoint stays in today's position format");
    assert_eq!(resumed.stream_cmp(&checkpoint), Some(std::cmp::Ordering::Greater), "the checkpoint moved on");

    for root in [&root_a, &root_b] {
        let versions = rows(root, "SELECT component, version FROM ferry.ferry_schema").await;
        assert_eq!(versions, vec![vec!["endpoint".to_string(), mysql_migrate::LATEST.to_string()]], "{root}");
        let fencing = rows(
            root,
            "SELECT COLUMN_TYPE, IS_NULLABLE, COLUMN_DEFAULT FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = 'ferry' AND TABLE_NAME = 'ferry_lease' AND COLUMN_NAME = 'fencing'",
        )
        .await;
        assert_eq!(fencing, vec![vec!["bigint(20)".to_string(), "NO".into(), "0".into()]], "{root}");
    }
    let conflicts = rows(&root_b, "SELECT id, task, pk FROM ferry.ferry_conflict").await;
    assert_eq!(conflicts, vec![vec!["1".to_string(), "old".into(), "2".into()]], "the logged conflict is kept");
    assert!(log_text.contains("release before schema versions"), "the upgrade says what it found; log:\n{log_text}");

    // A schema newer than this binary: refused, naming b, and nothing is written.
    let newer = mysql_migrate::LATEST + 1;
    admin(&root_b, &[format!("UPDATE ferry.ferry_schema SET version = {newer}")]).await;
    let before = rows(&root_b, "SELECT task, slot, position, progress FROM ferry.ferry_checkpoint ORDER BY 1, 2").await;
    let out = mariadb::ferry(&["run", "--config", config.to_str().expect("utf-8 path")]).await;
    assert_refused_newer(&out, "b", newer, mysql_migrate::LATEST);
    assert_eq!(
        rows(&root_b, "SELECT task, slot, position, progress FROM ferry.ferry_checkpoint ORDER BY 1, 2").await,
        before,
        "the refused run changed the checkpoint"
    );
    assert_eq!(rows(&root_b, "SELECT version FROM ferry.ferry_schema").await, vec![vec![newer.to_string()]]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_starts_at_the_same_time_upgrade_the_ferry_database_once() {
    let (pair, _globals) = private_globals().await;
    let root_b = pair.root_b();
    let mut clean_b = Cleanup::new(&root_b);
    clean_b.push("DROP DATABASE IF EXISTS `ferry`");
    admin(&root_b, &["DROP DATABASE IF EXISTS `ferry`".into()]).await;
    // The previous release's tables of a target (no ferry_signal: that was a source's).
    admin(&root_b, &mysql_statements("mysql_target.sql", &[("TASK", "t"), ("DB", "d"), ("POSITION", "mysql:b:4:")]))
        .await;
    let ep = MysqlEndpoint::new("b", SiteId::new("dc-b"), &pair.url_b()).expect("endpoint");
    let starts: Vec<_> = (0..4)
        .map(|_| {
            let ep = ep.clone();
            tokio::spawn(async move {
                let mut conn = ep.connect().await.expect("connect");
                let r = mysql_migrate::run(&ep, &mut conn).await;
                conn.disconnect().await.ok();
                r
            })
        })
        .collect();
    for s in starts {
        s.await.expect("joined").expect("every start succeeds");
    }
    assert_eq!(
        rows(&root_b, "SELECT component, version FROM ferry.ferry_schema").await,
        vec![vec!["endpoint".to_string(), mysql_migrate::LATEST.to_string()]]
    );
    let lease = rows(&root_b, "SELECT task, node, fencing FROM ferry.ferry_lease").await;
    assert_eq!(lease, vec![vec!["t".to_string(), "node-old".into(), "0".into()]], "the lease row keeps its data");
    let tables =
        rows(&root_b, "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'ferry' ORDER BY 1").await;
    let names: Vec<&str> = tables.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(
        names,
        [
            "ferry_checkpoint",
            "ferry_conflict",
            "ferry_deferred_index",
            "ferry_heartbeat",
            "ferry_lease",
            "ferry_schema",
            "ferry_signal"
        ],
        "version 1's tables completed (the target lacked ferry_signal), version 3's list of deferred indexes and the version record"
    );
}
