//! MySQL/MariaDB schema changes carried by a one-way task under a write load: ALTER
//! TABLE ADD/MODIFY/DROP COLUMN, CREATE/DROP INDEX, CREATE, TRUNCATE and DROP TABLE
//! reach the target in order with the rows around them; a rename stops the task naming
//! the statement and the binlog position.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use mysql_async::prelude::Queryable;

use crate::mysql_oneway::{assert_same_table, start_one_way, wait_caught_up};
use crate::support::mariadb::{Cleanup, connect, database, rows, shared_a, shared_b};

/// Inserts and updates rows of `items` (and of `extra` once it exists) until stopped.
async fn writer(db: String, stop: Arc<AtomicBool>) -> u64 {
    let mut c = connect(&shared_a()).await;
    let mut rng = fastrand::Rng::with_seed(7);
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        let k = rng.i64(1..400);
        let sql = match rng.u8(0..4) {
            0 => format!("INSERT INTO `{db}`.items(name, qty) VALUES ('w{k}', {k})"),
            1 => format!("UPDATE `{db}`.items SET qty = qty + 1, name = 'u{k}' WHERE id = {k}"),
            2 => format!("DELETE FROM `{db}`.items WHERE id = {k}"),
            _ => format!("INSERT INTO `{db}`.extra(id, v) VALUES ({k}, 'x{k}') ON DUPLICATE KEY UPDATE v = 'y{k}'"),
        };
        // `extra` comes and goes with the schema changes: its errors are expected.
        if c.query_drop(&sql).await.is_ok() {
            n += 1;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    n
}

async fn tables_of(url: &str, db: &str) -> Vec<Vec<String>> {
    rows(url, &format!("SELECT table_name FROM information_schema.tables WHERE table_schema = '{db}' ORDER BY 1")).await
}

/// SHOW CREATE TABLE without the AUTO_INCREMENT counter (the target's follows its rows).
async fn create_sql(url: &str, full: &str) -> String {
    let r = rows(url, &format!("SHOW CREATE TABLE {full}")).await;
    let sql = r[0][1].clone();
    sql.split(' ').filter(|w| !w.starts_with("AUTO_INCREMENT=")).collect::<Vec<_>>().join(" ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn schema_changes_reach_the_target_in_order_under_load() {
    let mut cleanup_a = Cleanup::new(&shared_a());
    let mut cleanup_b = Cleanup::new(&shared_b());
    let db = database(&shared_a(), "ddl", &mut cleanup_a).await;
    cleanup_b.push(format!("DROP DATABASE IF EXISTS `{db}`"));
    let mut a = connect(&shared_a()).await;
    a.query_drop(format!(
        "CREATE TABLE `{db}`.items(id INT NOT NULL AUTO_INCREMENT PRIMARY KEY, name VARCHAR(40), qty INT) ENGINE=InnoDB"
    ))
    .await
    .expect("create");
    let values: Vec<String> = (1..=200).map(|i| format!("('n{i}', {i})")).collect();
    a.query_drop(format!("INSERT INTO `{db}`.items(name, qty) VALUES {}", values.join(","))).await.expect("rows");

    let (_dir, config, engine) = start_one_way(&db).await;

    let stop = Arc::new(AtomicBool::new(false));
    let w = tokio::spawn(writer(db.clone(), stop.clone()));
    let pause = || tokio::time::sleep(Duration::from_millis(150));
    for ddl in [
        "ALTER TABLE items ADD COLUMN note VARCHAR(20) NOT NULL DEFAULT 'n/a'",
        "ALTER TABLE items MODIFY COLUMN qty BIGINT",
        "CREATE TABLE extra (id INT PRIMARY KEY, v TEXT)",
        "CREATE INDEX ix_name ON items (name)",
        "ALTER TABLE items DROP COLUMN note, ADD COLUMN price DECIMAL(10,2) DEFAULT 1.50 AFTER name",
        "CREATE TABLE gone (id INT PRIMARY KEY)",
        "INSERT INTO gone VALUES (1), (2)",
        "DROP TABLE gone",
        "TRUNCATE TABLE extra",
        "DROP INDEX ix_name ON items",
    ] {
        pause().await;
        a.query_drop(format!("USE `{db}`")).await.expect("use");
        a.query_drop(ddl).await.unwrap_or_else(|e| panic!("{ddl}: {e}"));
    }
    pause().await;
    stop.store(true, Ordering::Relaxed);
    assert!(w.await.expect("writer") > 50, "the writer made too few writes");

    wait_caught_up(&config, Duration::from_secs(60), Some(&engine)).await;
    engine.stop();
    assert!(engine.join().await.is_empty(), "the direction failed");
    assert_eq!(tables_of(&shared_a(), &db).await, tables_of(&shared_b(), &db).await, "table lists differ");
    for t in ["items", "extra"] {
        let full = format!("`{db}`.`{t}`");
        assert_eq!(create_sql(&shared_a(), &full).await, create_sql(&shared_b(), &full).await, "{t}: schemas differ");
        assert_same_table(&db, t).await;
    }
    a.disconnect().await.ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_rename_stops_the_task_naming_the_statement_and_position() {
    let mut cleanup_a = Cleanup::new(&shared_a());
    let mut cleanup_b = Cleanup::new(&shared_b());
    let db = database(&shared_a(), "ren", &mut cleanup_a).await;
    cleanup_b.push(format!("DROP DATABASE IF EXISTS `{db}`"));
    let mut a = connect(&shared_a()).await;
    a.query_drop(format!("CREATE TABLE `{db}`.t (id INT PRIMARY KEY)")).await.expect("create");
    let (_dir, _config, engine) = start_one_way(&db).await;
    a.query_drop(format!("RENAME TABLE `{db}`.t TO `{db}`.t2")).await.expect("rename");
    let errors = tokio::time::timeout(Duration::from_secs(30), engine.join()).await.expect("the task stops by itself");
    let text = format!("{errors:?}");
    assert!(text.contains("RENAME TABLE") && text.contains("cannot carry"), "error names the statement: {text}");
    assert!(text.contains("binlog") && text.contains("offset"), "error names the binlog position: {text}");
    a.disconnect().await.ok();
}
