//! `ferry verify` refuses what it cannot compare fairly — a table that does not exist, a
//! table whose columns differ between the sides, a table without a primary key — with
//! one message naming the table and the fix, and exit code 2.

use std::path::Path;
use std::time::Duration;

use crate::support::mariadb::{Cleanup, admin, database, shared_b};
use crate::support::{Outcome, create_db, ferry_within, task_file};

const LIMIT: Duration = Duration::from_secs(60);

async fn verify(config: &Path, extra: &[&str]) -> Outcome {
    let mut args = vec!["verify", "--config", config.to_str().expect("utf-8")];
    args.extend_from_slice(extra);
    ferry_within(&args, LIMIT).await
}

fn assert_refused(out: &Outcome, needles: &[&str]) {
    assert_eq!(out.code, Some(2), "bad input exits 2: {}", out.all());
    for n in needles {
        assert!(out.stderr.contains(n), "the message names {n:?}: {}", out.all());
    }
    assert!(out.stderr.contains("fix:"), "the message says what to do: {}", out.all());
    assert!(out.stdout.is_empty(), "no report on bad input: {}", out.all());
}

#[tokio::test]
async fn unknown_table_is_named_with_the_fix() {
    let dir = tempfile::tempdir().expect("tempdir");
    create_db(&dir.path().join("a.db"), "CREATE TABLE kv(k INTEGER PRIMARY KEY, v TEXT);").await;
    create_db(&dir.path().join("b.db"), "CREATE TABLE other(k INTEGER PRIMARY KEY);").await;
    let config = task_file(dir.path(), "one-way", "");
    // The table exists on the source only.
    let out = verify(&config, &[]).await;
    assert_refused(&out, &["table kv", "does not exist on endpoint b", "--tables"]);
    // --tables names no table of the task.
    let out = verify(&config, &["--tables", "nosuch"]).await;
    assert_refused(&out, &["--tables \"nosuch\"", "matches no table", "kv"]);
    // The task's own list names a table that is nowhere.
    let config = task_file(dir.path(), "one-way", "").display().to_string();
    std::fs::write(
        &config,
        std::fs::read_to_string(&config).expect("read").replace("tables = [\"*\"]", "tables = [\"ghost\"]"),
    )
    .expect("write");
    let out = verify(Path::new(&config), &[]).await;
    assert_refused(&out, &["ghost"]);
}

#[tokio::test]
async fn different_columns_are_listed_with_the_fix() {
    let dir = tempfile::tempdir().expect("tempdir");
    create_db(&dir.path().join("a.db"), "CREATE TABLE kv(k INTEGER PRIMARY KEY, v TEXT, extra INTEGER);").await;
    create_db(&dir.path().join("b.db"), "CREATE TABLE kv(k INTEGER PRIMARY KEY, v TEXT, other TEXT);").await;
    let out = verify(&task_file(dir.path(), "one-way", ""), &[]).await;
    assert_refused(&out, &["table kv has different columns", "\"extra\"", "\"other\"", "ALTER TABLE"]);
}

#[tokio::test]
async fn table_without_primary_key_is_refused_with_the_fix() {
    let dir = tempfile::tempdir().expect("tempdir");
    create_db(&dir.path().join("a.db"), "CREATE TABLE log(at TEXT, msg TEXT);").await;
    create_db(&dir.path().join("b.db"), "CREATE TABLE log(at TEXT, msg TEXT);").await;
    let out = verify(&task_file(dir.path(), "one-way", ""), &[]).await;
    assert_refused(&out, &["table log has no primary key", "leave it out"]);
}

#[tokio::test]
async fn mariadb_target_without_primary_key_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    create_db(&dir.path().join("a.db"), "CREATE TABLE log(id INTEGER PRIMARY KEY, msg TEXT);").await;
    let mut cb = Cleanup::new(&shared_b());
    let db = database(&shared_b(), "vbad", &mut cb).await;
    admin(&shared_b(), &[format!("CREATE TABLE `{db}`.log (id INT NOT NULL, msg TEXT, UNIQUE KEY (id))")]).await;
    let text = format!(
        "[node]\nid = \"n\"\nstore = \"sqlite://meta.db\"\n\n[[endpoint]]\nname = \"a\"\nurl = \"sqlite://a.db\"\n\n\
         [[endpoint]]\nname = \"b\"\nurl = \"{}/{db}\"\n\n[[task]]\nname = \"t\"\nfrom = \"a\"\nto = \"b\"\n",
        shared_b()
    );
    let config = dir.path().join("ferry.toml");
    std::fs::write(&config, text).expect("task file");
    let out = verify(&config, &[]).await;
    assert_refused(&out, &[&format!("table {db}.log has no primary key"), "ADD PRIMARY KEY (`id`)"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_task_still_copying_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    create_db(
        &dir.path().join("a.db"),
        "CREATE TABLE kv(k INTEGER PRIMARY KEY, v TEXT); \
         WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x<120000) INSERT INTO kv SELECT x, 'v' FROM c;",
    )
    .await;
    create_db(&dir.path().join("b.db"), "CREATE TABLE kv(k INTEGER PRIMARY KEY, v TEXT);").await;
    // A throttled snapshot (chunks of 50,000 rows, 2,000 rows/s) copies for about a minute.
    let config = task_file(dir.path(), "one-way", "max_rows_per_sec = 2000");
    let _run = crate::support::FerryRun::start(&config, &dir.path().join("run.log"));
    let b = dir.path().join("b.db");
    crate::support::wait_until(Duration::from_secs(30), "the snapshot to start", || async {
        crate::support::dump(&b, "kv", "k").await.len() > 10
    })
    .await;
    let out = verify(&config, &[]).await;
    assert_refused(&out, &["is still copying table kv", "ferry status"]);
}
