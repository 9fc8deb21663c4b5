//! The SQLite connector on its own: value fidelity through snapshot and capture, freeze,
//! range checksums, renames, and one-way sync through the engine.

use std::time::Duration;

use ferry::config::Config;
use ferry::connector::Source;
use ferry::connector::sqlite::capture::SqliteSource;
use ferry::connector::sqlite::checksum::range_checksum;
use ferry::connector::sqlite::freeze::{FROZEN_MESSAGE, freeze, frozen_since, unfreeze};
use ferry::connector::sqlite::{Access, SqliteEndpoint};
use ferry::engine::task::prepare_target;
use ferry::engine::{Engine, plan_task};
use ferry::model::{SiteId, Value};
use tokio_util::sync::CancellationToken;

use crate::support::{app_conn, changelog_head, checkpoint_seq, create_db, dump, held_open, task_file, wait_until};

const VALUES_TABLE: &str = "CREATE TABLE v(id INTEGER PRIMARY KEY, i INTEGER, r REAL, t TEXT, b BLOB, any_col);";

/// Inserts rows covering every storage class and edge value.
async fn write_edge_values(path: &std::path::Path, base: i64) {
    let mut c = app_conn(path).await;
    let rows: Vec<(Value, Value, Value, Value, Value)> = vec![
        (Value::Int(i64::MIN), Value::Float(-0.0), Value::Text(String::new()), Value::Bytes(vec![]), Value::Null),
        (
            Value::Int(i64::MAX),
            Value::Float(0.1),
            Value::Text("it's \"quoted\", with, commas".into()),
            Value::Bytes(vec![0, 0, 255]),
            Value::Int(7),
        ),
        (
            Value::Int(0),
            Value::Float(f64::INFINITY),
            Value::Text("line\nbreak 😀 ünïcode".into()),
            Value::Bytes(vec![0]),
            Value::Text("x".into()),
        ),
        (
            Value::Null,
            Value::Float(f64::NEG_INFINITY),
            Value::Text("trailing space ".into()),
            Value::Null,
            Value::Float(1e-300),
        ),
        (
            Value::Int(-1),
            Value::Float(1.7976931348623157e308),
            Value::Null,
            Value::Bytes((0..=255).collect()),
            Value::Bytes(vec![1]),
        ),
        (
            Value::Int(42),
            Value::Float(5e-324),
            Value::Text("NULL".into()),
            Value::Bytes(b"X'00'".to_vec()),
            Value::Text("".into()),
        ),
    ];
    for (n, (i, r, t, b, any)) in rows.into_iter().enumerate() {
        let mut q =
            sqlx::query("INSERT INTO v(id, i, r, t, b, any_col) VALUES (?1, ?2, ?3, ?4, ?5, ?6)").bind(base + n as i64);
        for v in [i, r, t, b, any] {
            q = match v {
                Value::Null => q.bind(None::<i64>),
                Value::Int(x) => q.bind(x),
                Value::Float(x) => q.bind(x),
                Value::Text(x) => q.bind(x),
                Value::Bytes(x) => q.bind(x),
                other => panic!("not a SQLite value: {other:?}"),
            };
        }
        q.execute(&mut c).await.expect("insert edge values");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sqlite_value_survives_snapshot_and_capture_bit_for_bit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (dir.path().join("a.db"), dir.path().join("b.db"));
    create_db(&a, VALUES_TABLE).await;
    create_db(&b, "").await;
    write_edge_values(&a, 1).await; // copied by the snapshot
    let config = Config::load(&task_file(dir.path(), "one-way", "")).expect("config");
    let specs = plan_task(&config, &config.tasks[0], &[]);
    prepare_target(&specs[0]).await.expect("prepare");
    let engine = Engine::start(specs, CancellationToken::new());
    wait_until(Duration::from_secs(20), "the snapshot", || async { dump(&b, "v", "id").await.len() == 6 }).await;

    write_edge_values(&a, 100).await; // captured inserts
    let mut c = app_conn(&a).await;
    sqlx::query("UPDATE v SET r = -r, t = t || '!' WHERE id IN (1, 2, 101, 102)")
        .execute(&mut c)
        .await
        .expect("update");
    sqlx::query("UPDATE v SET id = id + 1000 WHERE id = 103").execute(&mut c).await.expect("key update");
    sqlx::query("DELETE FROM v WHERE id IN (3, 104)").execute(&mut c).await.expect("delete");
    let head = changelog_head(&a).await;
    wait_until(Duration::from_secs(20), "the stream", || async { checkpoint_seq(&b, "t", "a->b").await >= head }).await;
    engine.stop();
    assert!(engine.join().await.is_empty());

    let (ra, rb) = (dump(&a, "v", "id").await, dump(&b, "v", "id").await);
    assert_eq!(ra.len(), 10);
    assert_eq!(ra, rb, "quote() of every row must match exactly");
    // The target created the table with the same declared types.
    let mut cb = app_conn(&b).await;
    let types: Vec<String> = sqlx::query_scalar("SELECT type FROM pragma_table_info('v') ORDER BY cid")
        .fetch_all(&mut cb)
        .await
        .expect("types");
    assert_eq!(types, vec!["INTEGER", "INTEGER", "REAL", "TEXT", "BLOB", ""]);
}

#[tokio::test]
async fn freeze_rejects_application_writes_but_not_ferry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("f.db");
    create_db(&path, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t VALUES (1, 'x');").await;
    let ep = SqliteEndpoint { name: "f".into(), site: SiteId::new("dc-f"), path: path.clone() };
    let mut conn = ep.connect(Access::ReadWrite).await.expect("open");
    assert_eq!(freeze(&ep, &mut conn, "test").await.expect("freeze"), 1);
    assert!(frozen_since(&ep, &mut conn).await.expect("state").is_some());

    let mut app = app_conn(&path).await;
    for sql in ["INSERT INTO t VALUES (2, 'y')", "UPDATE t SET v = 'z'", "DELETE FROM t"] {
        let err = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut app).await.expect_err("frozen write must fail");
        assert!(err.to_string().contains(FROZEN_MESSAGE), "{sql}: {err}");
    }
    // ferry's own writes mark themselves and pass.
    sqlx::query("BEGIN IMMEDIATE").execute(&mut conn).await.expect("begin");
    sqlx::query("INSERT INTO ferry_apply_origin(id, origin, ts) VALUES (1, 'dc-x', 0)")
        .execute(&mut conn)
        .await
        .expect("mark");
    sqlx::query("INSERT INTO t VALUES (3, 'from ferry')").execute(&mut conn).await.expect("ferry write passes");
    sqlx::query("DELETE FROM ferry_apply_origin").execute(&mut conn).await.expect("unmark");
    sqlx::query("COMMIT").execute(&mut conn).await.expect("commit");

    unfreeze(&ep, &mut conn).await.expect("unfreeze");
    assert!(frozen_since(&ep, &mut conn).await.expect("state").is_none());
    sqlx::query("INSERT INTO t VALUES (2, 'y')").execute(&mut app).await.expect("writes pass after unfreeze");
    assert_eq!(dump(&path, "t", "id").await, vec!["1,'x'", "2,'y'", "3,'from ferry'"]);
}

#[tokio::test]
async fn range_checksums_match_equal_rows_and_catch_one_changed_byte() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (dir.path().join("a.db"), dir.path().join("b.db"));
    let schema = "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB);";
    create_db(&a, schema).await;
    create_db(&b, schema).await;
    for p in [&a, &b] {
        let mut c = app_conn(p).await;
        for i in 1..=500i64 {
            sqlx::query("INSERT INTO t VALUES (?1, ?2)")
                .bind(i)
                .bind(vec![i as u8; 4])
                .execute(&mut c)
                .await
                .expect("insert");
        }
    }
    let mut c = app_conn(&b).await;
    sqlx::query("UPDATE t SET v = X'01010100' WHERE id = 257").execute(&mut c).await.expect("change a byte");
    let ea = SqliteEndpoint { name: "a".into(), site: SiteId::new("a"), path: a };
    let eb = SqliteEndpoint { name: "b".into(), site: SiteId::new("b"), path: b };
    let mut sa = SqliteSource::open(ea.clone(), Access::ReadOnly).await.expect("open");
    let table = sa.tables(&["t".into()]).await.expect("describe").remove(0);
    let mut ca = ea.connect(Access::ReadOnly).await.expect("a");
    let mut cb = eb.connect(Access::ReadOnly).await.expect("b");
    let k = |i: i64| vec![Value::Int(i)];
    let low_a = range_checksum(&ea, &mut ca, &table, None, Some(&k(256))).await.expect("sum");
    let low_b = range_checksum(&eb, &mut cb, &table, None, Some(&k(256))).await.expect("sum");
    assert_eq!(low_a, low_b);
    assert_eq!(low_a.0, 256);
    let high_a = range_checksum(&ea, &mut ca, &table, Some(&k(256)), None).await.expect("sum");
    let high_b = range_checksum(&eb, &mut cb, &table, Some(&k(256)), None).await.expect("sum");
    assert_eq!(high_a.0, 244);
    assert_eq!(high_a.0, high_b.0);
    assert_ne!(high_a.1, high_b.1, "one changed byte must change the checksum");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renames_map_tables_and_columns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (dir.path().join("a.db"), dir.path().join("b.db"));
    create_db(
        &a,
        "CREATE TABLE customers(id INTEGER PRIMARY KEY, name TEXT); INSERT INTO customers VALUES (1, 'Ada');",
    )
    .await;
    create_db(&b, "").await;
    let extra = "[[task.map]]\nfrom = \"customers\"\nto = \"clients\"\ncolumns = { name = \"full_name\" }\n";
    let config = Config::load(&task_file(dir.path(), "one-way", extra)).expect("config");
    let specs = plan_task(&config, &config.tasks[0], &[]);
    prepare_target(&specs[0]).await.expect("prepare");
    let engine = Engine::start(specs, CancellationToken::new());
    let mut app = app_conn(&a).await;
    sqlx::query("INSERT INTO customers VALUES (2, 'Grace')").execute(&mut app).await.expect("insert");
    wait_until(Duration::from_secs(20), "renamed rows", || async { dump(&b, "clients", "id").await.len() == 2 }).await;
    engine.stop();
    assert!(engine.join().await.is_empty());
    assert_eq!(dump(&b, "clients", "id").await, vec!["1,'Ada'", "2,'Grace'"]);
    let mut cb = app_conn(&b).await;
    let cols: Vec<String> = sqlx::query_scalar("SELECT name FROM pragma_table_info('clients') ORDER BY cid")
        .fetch_all(&mut cb)
        .await
        .expect("cols");
    assert_eq!(cols, vec!["id", "full_name"]);
}

/// A source replaced by another database (or restored from a backup) has a changelog
/// behind the checkpoint: ferry refuses instead of waiting for changes it already
/// applied, and says how to copy again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_source_behind_the_checkpoint_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (dir.path().join("a.db"), dir.path().join("b.db"));
    create_db(&a, "CREATE TABLE kv(k INTEGER PRIMARY KEY, v TEXT);").await;
    create_db(&b, "").await;
    let config = Config::load(&task_file(dir.path(), "one-way", "")).expect("config");
    let run = || async {
        let specs = plan_task(&config, &config.tasks[0], &[]);
        prepare_target(&specs[0]).await.expect("prepare");
        Engine::start(specs, CancellationToken::new())
    };
    let engine = run().await;
    let mut c = app_conn(&a).await;
    for k in 0..50 {
        sqlx::query("INSERT INTO kv VALUES (?1, 'x')").bind(k).execute(&mut c).await.expect("insert");
    }
    // Closed, not dropped (a dropped connection closes later, on its own thread): what
    // is open after `join` below is the engine's.
    sqlx::Connection::close(c).await.expect("close");
    let head = changelog_head(&a).await;
    wait_until(Duration::from_secs(30), "the target to catch up", || async {
        checkpoint_seq(&b, "t", "a->b").await >= head
    })
    .await;
    engine.stop();
    assert!(engine.join().await.is_empty(), "the first run failed");
    // The engine closed its sessions before `join` returned: nothing of this process
    // holds the database, so removing it and making a new one at its path is safe.
    assert!(!held_open(&a), "the stopped engine still holds {} open", a.display());

    for ext in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{ext}", a.display()));
    }
    create_db(&a, "CREATE TABLE kv(k INTEGER PRIMARY KEY, v TEXT);").await;
    let errors = tokio::time::timeout(Duration::from_secs(30), run().await.join()).await.expect("stops by itself");
    let text = format!("{errors:?}");
    assert!(text.contains("replaced or restored") && text.contains("ferry_checkpoint"), "clear refusal: {text}");
    assert_eq!(dump(&b, "kv", "k").await.len(), 50, "the target keeps its rows");
}
