//! Secondary keys deferred during the first copy (MySQL/MariaDB target): a table ferry
//! creates gets its plain secondary keys after its copy, exactly as the source defines
//! them; a kill mid-copy still ends with them, as does a restart after the copy with
//! them missing; a table that already existed on the target is left as it was; a schema
//! change arriving meanwhile finds the table in the source's shape.

use std::path::Path;
use std::time::Duration;

use ferry::config::Config;

use crate::mysql_oneway::{tail, task_file, wait_caught_up_logged};
use crate::support::FerryRun;
use mysql_async::prelude::Queryable;

use crate::support::mariadb::{Cleanup, admin, connect, database, rows, shared_a, shared_b};

/// A table with every kind of key: the plain ones (a prefix, a descending column, two
/// columns, a comment) are deferred, the primary, unique and fulltext ones are not.
const KEYED: &str = "CREATE TABLE {t} (
  id INT NOT NULL,
  k INT NOT NULL DEFAULT 0,
  c CHAR(120) NOT NULL DEFAULT '',
  pad VARCHAR(60) NOT NULL DEFAULT '',
  code VARCHAR(20) NULL,
  PRIMARY KEY (id),
  UNIQUE KEY u_code (code),
  KEY k_1 (k),
  KEY k_pad (pad(10), k DESC) COMMENT 'prefix and order',
  KEY k_two (c, pad),
  FULLTEXT KEY ft (pad)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4";

fn fill(t: &str, db: &str, rows: u32) -> String {
    format!(
        "INSERT INTO {t} (id, k, c, pad, code) SELECT seq, seq % 97, CONCAT('c', seq % 13), CONCAT('p', seq), \
         IF(seq % 5 = 0, NULL, CONCAT('x', seq)) FROM `{db}`.seq_1_to_{rows}"
    )
}

async fn show_create(url: &str, table: &str) -> String {
    rows(url, &format!("SHOW CREATE TABLE {table}")).await[0][1].clone()
}

async fn pending(url: &str, db: &str) -> Vec<String> {
    rows(url, &format!("SELECT name FROM ferry.ferry_deferred_index WHERE db = '{db}' ORDER BY seq"))
        .await
        .into_iter()
        .map(|r| r[0].clone())
        .collect()
}

async fn index_names(url: &str, db: &str, table: &str) -> Vec<String> {
    rows(
        url,
        &format!(
            "SELECT DISTINCT INDEX_NAME FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = '{db}' \
             AND TABLE_NAME = '{table}'"
        ),
    )
    .await
    .into_iter()
    .map(|r| r[0].clone())
    .collect::<std::collections::BTreeSet<String>>()
    .into_iter()
    .collect()
}

/// Runs the task file's task until caught up, then stops it cleanly.
async fn run_until_caught_up(file: &Path, log: &Path) {
    let config = Config::load(file).expect("config");
    let mut ferry = FerryRun::start(file, log);
    wait_caught_up_logged(&config, Duration::from_secs(120), log).await;
    assert_eq!(
        ferry.terminate(),
        Some(0),
        "ferry run did not stop cleanly; log:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deferred_keys_are_built_after_the_copy_exactly_and_existing_tables_are_left_alone() {
    let mut cleanup_a = Cleanup::new(&shared_a());
    let mut cleanup_b = Cleanup::new(&shared_b());
    let db = database(&shared_a(), "defer", &mut cleanup_a).await;
    cleanup_b.push(format!("DROP DATABASE IF EXISTS `{db}`"));
    let (t, kept) = (format!("`{db}`.`t`"), format!("`{db}`.`kept`"));
    admin(
        &shared_a(),
        &[KEYED.replace("{t}", &t), fill(&t, &db, 3000), KEYED.replace("{t}", &kept), fill(&kept, &db, 500)],
    )
    .await;
    // `kept` exists on the target already, with a key of its own and without k_two.
    admin(
        &shared_b(),
        &[
            format!("CREATE DATABASE `{db}`"),
            KEYED.replace("{t}", &kept).replace("  KEY k_two (c, pad),\n", "  KEY mine (code, k),\n"),
        ],
    )
    .await;
    let kept_before = show_create(&shared_b(), &kept).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = task_file(dir.path(), &shared_a(), &shared_b(), "one-way", &[&format!("{db}.*")], "");
    let log = dir.path().join("ferry.log");
    run_until_caught_up(&file, &log).await;

    assert_eq!(show_create(&shared_b(), &t).await, show_create(&shared_a(), &t).await, "log:\n{}", tail(&log));
    assert_eq!(show_create(&shared_b(), &kept).await, kept_before, "the existing table was changed");
    assert_eq!(pending(&shared_b(), &db).await, Vec::<String>::new(), "nothing left waiting");
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(
        text.contains("created the table without its secondary indexes")
            && text.contains("[\"k_1\", \"k_pad\", \"k_two\"]")
            && text.contains("built the deferred indexes"),
        "the log names the deferred keys and their build:\n{}",
        tail(&log)
    );
    assert!(!text.contains(&format!("table={db}.kept")), "nothing deferred on the existing table:\n{text}");
    for table in [&t, &kept] {
        let count = |url: String| {
            let sql = format!("SELECT COUNT(*), SUM(k), SUM(CRC32(CONCAT_WS('|', id, c, pad, code))) FROM {table}");
            async move { rows(&url, &sql).await }
        };
        assert_eq!(count(shared_b()).await, count(shared_a()).await, "{table}'s rows");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_kill_mid_copy_and_a_schema_change_meanwhile_still_end_with_the_sources_keys() {
    let mut cleanup_a = Cleanup::new(&shared_a());
    let mut cleanup_b = Cleanup::new(&shared_b());
    let db = database(&shared_a(), "deferkill", &mut cleanup_a).await;
    cleanup_b.push(format!("DROP DATABASE IF EXISTS `{db}`"));
    let t = format!("`{db}`.`t`");
    admin(&shared_a(), &[KEYED.replace("{t}", &t), fill(&t, &db, 160_000)]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    // 50,000-row chunks at most 40,000 rows a second: the copy takes about 4 s.
    let file =
        task_file(dir.path(), &shared_a(), &shared_b(), "one-way", &[&format!("{db}.*")], "max_rows_per_sec = 40000");
    let config = Config::load(&file).expect("config");
    let log = dir.path().join("ferry.log");
    let mut ferry = FerryRun::start(&file, &log);
    let progress = format!("SELECT progress FROM ferry.ferry_checkpoint WHERE task = '{}'", config.tasks[0].name);
    crate::support::wait_until(Duration::from_secs(120), "a copied chunk", || async {
        rows(&shared_b(), &progress).await.concat().concat().contains("copying")
    })
    .await;
    ferry.kill();
    let copied = rows(&shared_b(), &progress).await.concat().concat();
    assert!(copied.contains("copying"), "killed mid-copy: {copied}");
    // Killed mid-copy: the table has its primary, unique and fulltext keys only, and the
    // rest wait in the list that survives the kill.
    assert_eq!(index_names(&shared_b(), &db, "t").await, ["PRIMARY", "ft", "u_code"]);
    assert_eq!(pending(&shared_b(), &db).await, ["k_1", "k_pad", "k_two"]);

    // Meanwhile the source drops one of the waiting keys and adds a column (in its
    // binlog: the next run meets the change in the stream, mid-copy).
    let mut a = connect(&shared_a()).await;
    a.query_drop(format!("ALTER TABLE {t} DROP INDEX k_two, ADD COLUMN extra INT NULL")).await.expect("alter");
    a.query_drop(format!("UPDATE {t} SET extra = id WHERE id % 1000 = 0")).await.expect("update");
    a.disconnect().await.ok();
    run_until_caught_up(&file, &log).await;
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(text.contains("a schema change of a table whose indexes wait for its copy: building them first"), "{text}");
    assert_eq!(show_create(&shared_b(), &t).await, show_create(&shared_a(), &t).await, "log:\n{}", tail(&log));
    assert_eq!(pending(&shared_b(), &db).await, Vec::<String>::new());
    let sql = format!("SELECT COUNT(*), SUM(k), SUM(extra), SUM(CRC32(CONCAT_WS('|', id, c, pad, code))) FROM {t}");
    assert_eq!(rows(&shared_b(), &sql).await, rows(&shared_a(), &sql).await);

    // A restart after the copy with a key missing (killed between the copy's last commit
    // and the build): the key is built at the next start.
    admin(
        &shared_b(),
        &[
            format!("ALTER TABLE {t} DROP INDEX k_1, DROP INDEX k_pad"),
            format!(
                "INSERT INTO ferry.ferry_deferred_index (db, tbl, name, seq, definition, created_us) \
                 VALUES ('{db}', 't', 'k_1', 0, 'KEY `k_1` (`k`)', 0), \
                 ('{db}', 't', 'k_pad', 1, 'KEY `k_pad` (`pad`(10),`k` DESC) COMMENT ''prefix and order''', 0)"
            ),
        ],
    )
    .await;
    // (Caught up already: the wait is for the build, then for a clean stop.)
    let mut ferry = FerryRun::start(&file, &log);
    crate::support::wait_until(Duration::from_secs(60), "the missing keys built", || async {
        pending(&shared_b(), &db).await.is_empty()
    })
    .await;
    wait_caught_up_logged(&config, Duration::from_secs(60), &log).await;
    assert_eq!(ferry.terminate(), Some(0), "ferry run did not stop cleanly; log:\n{}", tail(&log));
    assert_eq!(show_create(&shared_b(), &t).await, show_create(&shared_a(), &t).await, "log:\n{}", tail(&log));
}
