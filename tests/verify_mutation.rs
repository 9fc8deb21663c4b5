//! `ferry verify` finds exactly the rows that were changed behind its back, at random
//! places (seeded: FERRY_TEST_SEED) — missing,
//! extra, one changed column, NULL vs empty string, a trailing space, the last digit of
//! a decimal's scale, one microsecond, one byte of a blob, rows of a composite-key
//! table — on SQLite, MariaDB and SQLite <-> MariaDB pairs of 100,000 rows, and nothing
//! else; after `--repair` it finds nothing.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mysql_async::prelude::Queryable;
use sqlx::Executor;

use crate::support::mariadb::{Cleanup, connect, database, shared_a, shared_b};
use crate::support::{Outcome, app_conn, ferry_within};

/// Rows of the big table (ids are even: odd ids are free for extra rows in the middle).
const ROWS: i64 = 100_000;
/// Rows of the composite-key table.
const COMP_ROWS: i64 = 2_000;
/// How long one verify may take.
const LIMIT: Duration = Duration::from_secs(240);

/// Where a side's tables live.
enum Db {
    Sqlite(PathBuf),
    Mysql { url: String, db: String },
}

impl Db {
    /// The task file's url of this side (a MySQL url names the database).
    fn url(&self) -> String {
        match self {
            Db::Sqlite(p) => format!("sqlite://{}", p.display()),
            Db::Mysql { url, db } => format!("{url}/{db}"),
        }
    }

    fn ddl(&self) -> Vec<String> {
        let big = "CREATE TABLE big (id BIGINT NOT NULL PRIMARY KEY, name VARCHAR(64) NULL, \
                   amount DECIMAL(12,4) NOT NULL, happened DATETIME(6) NOT NULL, data BLOB NULL, n INT NOT NULL)";
        let comp = "CREATE TABLE comp (region VARCHAR(16) NOT NULL, seq INT NOT NULL, v VARCHAR(32) NULL, \
                    PRIMARY KEY (region, seq))";
        vec![big.to_string(), comp.to_string()]
    }

    async fn run(&self, statements: &[String]) {
        match self {
            Db::Sqlite(path) => {
                let mut c = app_conn(path).await;
                c.execute("BEGIN").await.expect("begin");
                for s in statements {
                    c.execute(sqlx::AssertSqlSafe(s.clone())).await.unwrap_or_else(|e| panic!("{s:.200}: {e}"));
                }
                c.execute("COMMIT").await.expect("commit");
                sqlx::Connection::close(c).await.ok();
            }
            Db::Mysql { url, db } => {
                let mut c = connect(url).await;
                c.query_drop("SET SESSION sql_log_bin = 0").await.expect("sql_log_bin");
                c.query_drop(format!("USE `{db}`")).await.expect("use");
                c.query_drop("START TRANSACTION").await.expect("begin");
                for s in statements {
                    c.query_drop(s.as_str()).await.unwrap_or_else(|e| panic!("{s:.200}: {e}"));
                }
                c.query_drop("COMMIT").await.expect("commit");
                c.disconnect().await.ok();
            }
        }
    }
}

/// Big row `i`'s time with its microseconds given.
fn happened(i: i64, micros: i64) -> String {
    format!("'2024-{:02}-{:02} {:02}:{:02}:{:02}.{micros:06}'", 1 + i % 12, 1 + i % 28, i % 24, i % 60, (i * 7) % 60)
}

/// Big row `i`'s blob.
fn data(i: i64) -> Vec<u8> {
    (0..8).map(|k| (i >> (k * 3)) as u8 ^ k as u8).collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

/// Big row `i`'s amount with the last digit of its scale given.
fn amount(i: i64, frac: i64) -> String {
    format!("'{}.{frac:04}'", i % 100_000)
}

/// The values of big row `i` as SQL literals both engines read the same way.
fn big_row(i: i64) -> String {
    let name = if i % 10 == 0 { "NULL".to_string() } else { format!("'n{i}'") };
    format!(
        "({}, {name}, {}, {}, X'{}', {})",
        i * 2,
        amount(i, (i * 37) % 10_000),
        happened(i, (i * 7919) % 1_000_000),
        hex(&data(i)),
        i * 3
    )
}

fn load_statements() -> Vec<String> {
    let mut out = Vec::new();
    let ids: Vec<i64> = (1..=ROWS).collect();
    for part in ids.chunks(2_000) {
        let values: Vec<String> = part.iter().map(|&i| big_row(i)).collect();
        out.push(format!("INSERT INTO big VALUES {}", values.join(", ")));
    }
    let comp: Vec<String> = (0..COMP_ROWS).map(|i| format!("('r{}', {i}, 'v{i}')", i % 7)).collect();
    for part in comp.chunks(1_000) {
        out.push(format!("INSERT INTO comp VALUES {}", part.join(", ")));
    }
    out
}

/// Random mutations made on the target (seeded: FERRY_TEST_SEED), the (kind, key) verify
/// must report for each, and the id whose `n` alone was changed.
fn mutations(seed: u64) -> (Vec<String>, BTreeSet<(String, String)>, i64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut used = BTreeSet::new();
    // A row index not used by another mutation, with `i % 10 == 0` when `null_name`.
    let mut pick = |null_name: bool| loop {
        let i = rng.i64(1..=ROWS);
        if (i % 10 == 0) == null_name && used.insert(i) {
            return i;
        }
    };
    let mut expected = BTreeSet::new();
    let mut sql = Vec::new();
    let mut note = |kind: &str, key: String| expected.insert((kind.to_string(), key));
    // Missing on the target: the last row and two anywhere.
    for i in [ROWS, pick(false), pick(true)] {
        sql.push(format!("DELETE FROM big WHERE id = {}", i * 2));
        note("missing", format!("({})", i * 2));
    }
    // Extra on the target: before the first, in a gap, after the last.
    for id in [1, pick(false) * 2 + 1, ROWS * 2 + 1] {
        sql.push(format!("INSERT INTO big VALUES ({id}, 'extra', '1.0000', '2024-01-01 00:00:00', NULL, 0)"));
        note("extra", format!("({id})"));
    }
    let mut different = |i: i64, set: String| {
        sql.push(format!("UPDATE big SET {set} WHERE id = {}", i * 2));
        note("different", format!("({})", i * 2));
    };
    let changed = pick(false);
    different(changed, "n = n + 1".into()); // one changed column
    different(pick(true), "name = ''".into()); // NULL vs empty string
    let i = pick(false);
    different(i, format!("name = 'n{i} '")); // trailing space
    let i = pick(false);
    different(i, format!("amount = {}", amount(i, ((i * 37) % 10_000 + 1) % 10_000))); // last digit of the scale
    let i = pick(false);
    different(i, format!("happened = {}", happened(i, ((i * 7919) % 1_000_000 + 1) % 1_000_000))); // one microsecond
    let i = pick(false);
    let mut blob = data(i);
    blob[rng.usize(0..8)] ^= 0x20;
    different(i, format!("data = X'{}'", hex(&blob))); // one byte of the blob
    // Composite key.
    let (r, seq) = (rng.i64(0..COMP_ROWS), rng.i64(0..COMP_ROWS));
    let seq = if seq == r { (seq + 1) % COMP_ROWS } else { seq };
    sql.push(format!("DELETE FROM comp WHERE region = 'r{}' AND seq = {r}", r % 7));
    note("missing", format!("(\"r{}\", {r})", r % 7));
    sql.push("INSERT INTO comp VALUES ('r3', 100000, 'new')".into());
    note("extra", "(\"r3\", 100000)".into());
    sql.push(format!("UPDATE comp SET v = 'changed' WHERE region = 'r{}' AND seq = {seq}", seq % 7));
    note("different", format!("(\"r{}\", {seq})", seq % 7));
    (sql, expected, changed * 2)
}

/// The seed of the random mutations: FERRY_TEST_SEED, else fixed.
fn seed() -> u64 {
    std::env::var("FERRY_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(20_261_122)
}

fn task_file(dir: &Path, a: &Db, b: &Db, tables: &str) -> PathBuf {
    let text = format!(
        "[node]\nid = \"test-node\"\nstore = \"sqlite://meta.db\"\n\n[[endpoint]]\nname = \"a\"\nurl = \"{}\"\n\n\
         [[endpoint]]\nname = \"b\"\nurl = \"{}\"\n\n[[task]]\nname = \"t\"\nfrom = \"a\"\nto = \"b\"\ntables = [{tables}]\n",
        a.url(),
        b.url()
    );
    let path = dir.join("ferry.toml");
    std::fs::write(&path, text).expect("task file");
    path
}

/// Every (kind, key) of the report's confirmed differences, and the methods used.
fn confirmed(out: &Outcome) -> (BTreeSet<(String, String)>, Vec<String>) {
    let v: serde_json::Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON report: {e}\n{}", out.all()));
    let mut found = BTreeSet::new();
    let mut methods = Vec::new();
    for task in v["tasks"].as_array().expect("tasks") {
        for t in task["tables"].as_array().expect("tables") {
            methods.push(t["method"].as_str().unwrap_or("").to_string());
            for d in t["confirmed"].as_array().expect("confirmed") {
                found.insert((
                    d["kind"].as_str().unwrap_or("").to_string(),
                    d["key"].as_str().unwrap_or("").to_string(),
                ));
            }
            assert!(t["transient"].as_array().is_some_and(Vec::is_empty), "no task runs, nothing is transient");
        }
    }
    (found, methods)
}

async fn mutation_case(a: Db, b: Db, tables: &str, method: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let load = load_statements();
    for side in [&a, &b] {
        side.run(&side.ddl()).await;
        side.run(&load).await;
    }
    let seed = seed();
    let (sql, expected, changed) = mutations(seed);
    b.run(&sql).await;
    let config = task_file(dir.path(), &a, &b, tables);
    let config = config.to_str().expect("utf-8");
    let repair_sql = dir.path().join("repair.sql");

    let out = ferry_within(
        &["verify", "--config", config, "--format", "json", "--repair-sql", repair_sql.to_str().expect("utf-8")],
        LIMIT,
    )
    .await;
    assert_eq!(out.code, Some(1), "differences must exit 1: {}", out.all());
    let (found, methods) = confirmed(&out);
    assert_eq!(found, expected, "verify must report exactly the mutated keys (seed {seed})");
    assert!(methods.iter().all(|m| m == method), "expected method {method}, got {methods:?}");
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
    let big = &v["tasks"][0]["tables"]
        .as_array()
        .expect("tables")
        .iter()
        .find(|t| t["table"].as_str().unwrap_or("").ends_with("big"))
        .cloned()
        .expect("big table");
    let changed_cols: Vec<String> = big["confirmed"]
        .as_array()
        .expect("list")
        .iter()
        .filter(|d| d["key"] == format!("({changed})").as_str())
        .flat_map(|d| d["columns"].as_array().cloned().unwrap_or_default())
        .map(|c| c["column"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(changed_cols, vec!["n"], "the changed column is named: {big}");
    let file = std::fs::read_to_string(&repair_sql).expect("repair file written");
    assert_eq!(file.matches("INSERT INTO").count(), 4, "{file}");
    assert_eq!(file.matches("DELETE FROM").count(), 4, "{file}");

    let out = ferry_within(&["verify", "--config", config, "--repair"], LIMIT).await;
    assert_eq!(out.code, Some(1), "the repairing run still reports what it found: {}", out.all());
    let out = ferry_within(&["verify", "--config", config], LIMIT).await;
    assert_eq!(out.code, Some(0), "after --repair both sides are identical: {}", out.all());
    assert!(out.stdout.contains("IDENTICAL"), "{}", out.all());

    let audit = audit_actions(&dir.path().join("meta.db")).await;
    assert_eq!(
        audit.iter().filter(|a| *a == "verify.repair").count(),
        expected.len(),
        "one audit entry per repaired row: {audit:?}"
    );
}

async fn audit_actions(store: &Path) -> Vec<String> {
    let mut c = app_conn(store).await;
    let v: Vec<String> =
        sqlx::query_scalar("SELECT action FROM audit ORDER BY id").fetch_all(&mut c).await.expect("audit");
    sqlx::Connection::close(c).await.ok();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_pair_reports_exactly_the_mutated_rows_and_repairs_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    mutation_case(Db::Sqlite(dir.path().join("a.db")), Db::Sqlite(dir.path().join("b.db")), "\"*\"", "sqlite-text")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_pair_reports_exactly_the_mutated_rows_and_repairs_them() {
    let (mut ca, mut cb) = (Cleanup::new(&shared_a()), Cleanup::new(&shared_b()));
    let db = database(&shared_a(), "vmut", &mut ca).await;
    cb.push(format!("DROP DATABASE IF EXISTS `{db}`"));
    crate::support::mariadb::admin(&shared_b(), &[format!("CREATE DATABASE `{db}`")]).await;
    let a = Db::Mysql { url: shared_a(), db: db.clone() };
    let b = Db::Mysql { url: shared_b(), db: db.clone() };
    mutation_case(a, b, &format!("\"{db}.*\""), "in-database").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_to_mariadb_pair_compares_by_value_and_repairs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cb = Cleanup::new(&shared_b());
    let db = database(&shared_b(), "vmix", &mut cb).await;
    let b = Db::Mysql { url: shared_b(), db };
    mutation_case(Db::Sqlite(dir.path().join("a.db")), b, "\"*\"", "in-ferry").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_to_sqlite_pair_compares_by_value_and_repairs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut ca = Cleanup::new(&shared_a());
    let db = database(&shared_a(), "vmix", &mut ca).await;
    let a = Db::Mysql { url: shared_a(), db: db.clone() };
    mutation_case(a, Db::Sqlite(dir.path().join("b.db")), &format!("\"{db}.*\""), "in-ferry").await;
}
