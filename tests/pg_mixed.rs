//! PostgreSQL with the other stores, through the canonical types: PostgreSQL -> MariaDB
//! -> PostgreSQL and PostgreSQL -> SQLite -> PostgreSQL, each a pair of one-way tasks,
//! and every value compared on the way back (PostgreSQL's own row text and ferry's
//! values), so each hop carried it exactly.

use std::path::Path;
use std::time::Duration;

use ferry::config::Config;
use ferry::engine::task::prepare_target;
use ferry::engine::{Engine, plan_task};
use ferry::model::TableName;
use tokio_util::sync::CancellationToken;

use crate::pg_oneway::assert_same_table;
use crate::support::caught_up::task_caught_up;
use crate::support::mariadb::unique;
use crate::support::postgres::{Cleanup, exec, schema, shared_a, shared_b};
use crate::support::{config_of, create_db};

/// The types both other engines can hold (a PostgreSQL enum goes as text).
const TABLE: &str = "CREATE TABLE {t} (
  id int PRIMARY KEY, sm smallint, i int, bi bigint, n numeric(30,10), r real, d double precision, b boolean,
  c char(5), vc varchar(20), tx text, by bytea, ts timestamptz, tsn timestamp, dt date, tm time, j json,
  u uuid, ia int[], iv interval
)";

fn rows_sql(t: &str, base: i64) -> Vec<String> {
    vec![
        format!(
            "INSERT INTO {t} VALUES ({base}, -32768, -2147483648, -9223372036854775808, -12345678901234567890.0123456789, \
             3.4028235e38, -0.0, true, 'pad', 'emoji 😀 ünï', E'tab\\there ''q'' \\\\ back', '\\x00ff10', \
             '1970-01-01 00:00:00.000001+00', '2000-02-29 23:59:59.999999', '1000-01-01', '23:59:59.999999', \
             '{{\"a\": [1, 2], \"b\": \"x\"}}', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{{1,NULL,3}}', '1 day 02:03:04')"
        ),
        format!(
            "INSERT INTO {t} VALUES ({}, 32767, 2147483647, 9223372036854775807, 0.0000000001, 1.17549435e-38, \
             1.7976931348623157e308, false, '', '', '', '\\x', '9999-12-31 23:59:59.999999+00', '1999-12-31 00:00:00', \
             '9999-12-31', '00:00:00', '[]', '00000000-0000-0000-0000-000000000000', '{{}}', '-1 mons')",
            base + 1
        ),
        format!("INSERT INTO {t} (id) VALUES ({})", base + 2),
        format!(
            "INSERT INTO {t} VALUES ({}, 1, 1, 1, 1.5, 0.1, 0.1, true, 'x', 'y', 'z', '\\xff', '2024-02-29 12:34:56.789012+05:30', \
             '2024-02-29 12:34:56.789012', '2024-02-29', '12:34:56.789012', '1', '6ba7b810-9dad-11d1-80b4-00c04fd430c8', \
             '{{-1}}', '00:00:00.000001')",
            base + 3
        ),
    ]
}

/// Prepares and starts each task (in order, so the next one's source table exists).
async fn start(config: &Config) -> Vec<Engine> {
    let mut engines = Vec::new();
    for task in &config.tasks {
        let specs = plan_task(config, task, &[]);
        prepare_target(&specs[0]).await.expect("prepare");
        engines.push(Engine::start(specs, CancellationToken::new()));
        // The next task reads this one's target: let the snapshot make its tables.
        task_caught_up(config, task, Duration::from_secs(60), &engines.iter().collect::<Vec<_>>()).await;
    }
    engines
}

async fn stop(engines: Vec<Engine>) {
    for e in engines {
        e.stop();
        assert!(e.join().await.is_empty(), "a direction failed");
    }
}

/// Runs PostgreSQL a -> `mid` -> PostgreSQL b over one table and compares a with b.
/// The table is named like its schema `s` (unique); on b it lives in `b_schema`.
async fn round_trip(dir: &Path, mid: (&str, String), mid_pattern: &str, s: &str, b_schema: &str) {
    let (a, b) = (shared_a(), shared_b());
    let t = format!("\"{s}\".\"{s}\"");
    exec(&a, &TABLE.replace("{t}", &t)).await;
    // The DBA's schema on the far side: ferry would otherwise create the middle store's types.
    let tb = format!("\"{b_schema}\".\"{s}\"");
    exec(&b, &format!("CREATE SCHEMA IF NOT EXISTS \"{b_schema}\"; {}", TABLE.replace("{t}", &tb))).await;
    for sql in rows_sql(&t, 1) {
        exec(&a, &sql).await;
    }
    let config = config_of(
        dir,
        &[("a", "dc-a", a.clone()), (mid.0, "dc-m", mid.1.clone()), ("b", "dc-b", b.clone())],
        &[(unique("x"), "a", mid.0, format!("{s}.*")), (unique("y"), mid.0, "b", mid_pattern.to_string())],
    );
    let mut cleanup = Cleanup::new(&a);
    cleanup.task(&config.tasks[0].name);
    let engines = start(&config).await;
    for sql in rows_sql(&t, 100) {
        exec(&a, &sql).await;
    }
    exec(
        &a,
        &format!("UPDATE {t} SET n = -n, vc = vc || ' ✓', by = '\\x00', d = 1e300, ia = '{{7}}' WHERE id IN (1, 103)"),
    )
    .await;
    exec(&a, &format!("DELETE FROM {t} WHERE id IN (2, 102)")).await;
    for task in &config.tasks {
        task_caught_up(&config, task, Duration::from_secs(60), &engines.iter().collect::<Vec<_>>()).await;
    }
    stop(engines).await;
    let name = TableName { schema: Some(s.to_string()), name: s.to_string() };
    let (ta, tb) = (
        crate::support::postgres::table_text(&a, &t, "1").await,
        crate::support::postgres::table_text(&b, &tb, "1").await,
    );
    assert_eq!(ta.len(), 6, "rows on a: {ta:?}");
    assert_eq!(ta, tb, "{t} differs after the round trip");
    if b_schema == s {
        assert_same_table(&a, &b, &name).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_to_mariadb_to_pg_keeps_every_value_exactly() {
    let mut cleanup_a = Cleanup::new(&shared_a());
    let mut cleanup_b = Cleanup::new(&shared_b());
    let s = schema(&shared_a(), "pgmy", &mut cleanup_a).await;
    cleanup_b.push(format!("DROP SCHEMA IF EXISTS \"{s}\" CASCADE"));
    let my = crate::support::mariadb::shared_a();
    let mut cleanup_m = crate::support::mariadb::Cleanup::new(&my);
    cleanup_m.push(format!("DROP DATABASE IF EXISTS `{s}`"));
    let dir = tempfile::tempdir().expect("tempdir");
    round_trip(dir.path(), ("m", my.clone()), &format!("{s}.*"), &s, &s).await;
    // Arrays are JSON arrays on MariaDB (NULL elements null, the string "NULL" a string).
    let arrays = crate::support::mariadb::rows(
        &my,
        &format!("SELECT JSON_TYPE(ia), ia FROM `{s}`.`{s}` WHERE id IN (100, 101, 103) ORDER BY id"),
    )
    .await;
    assert_eq!(
        arrays,
        [["ARRAY", "[1,null,3]"], ["ARRAY", "[]"], ["ARRAY", "[7]"]].map(|r| r.map(str::to_string).to_vec()).to_vec(),
        "arrays on MariaDB"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_to_sqlite_to_pg_keeps_every_value_exactly() {
    let mut cleanup_a = Cleanup::new(&shared_a());
    let mut cleanup_b = Cleanup::new(&shared_b());
    let s = schema(&shared_a(), "pgsq", &mut cleanup_a).await;
    cleanup_b.push(format!("DROP SCHEMA IF EXISTS \"{s}\" CASCADE"));
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("s.db");
    create_db(&file, "PRAGMA user_version = 1").await;
    // SQLite names tables without a schema: the way back maps them into the test's schema.
    cleanup_b.push(format!("DROP TABLE IF EXISTS public.\"{s}\""));
    round_trip(dir.path(), ("s", format!("sqlite://{}", file.display())), "*", &s, "public").await;
}
