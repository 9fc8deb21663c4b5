//! `ferry run --once` on a database task: it copies what exists, applies the changes
//! made since, catches up with the source's head and exits 0 by itself.

use std::time::Duration;

use crate::support::{app_conn, create_db, dump, ferry_within, task_file};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_once_catches_up_with_a_database_source_and_exits_zero() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = dir.path().join("a.db");
    create_db(&a, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);").await;
    create_db(&dir.path().join("b.db"), "SELECT 1;").await;
    let mut c = app_conn(&a).await;
    for i in 0..500 {
        sqlx::query("INSERT INTO t(id, v) VALUES (?1, ?2)")
            .bind(i)
            .bind(format!("v{i}"))
            .execute(&mut c)
            .await
            .expect("insert");
    }
    let cfg = task_file(dir.path(), "one-way", "");
    let cfg = cfg.to_str().expect("utf-8").to_string();
    let out = ferry_within(&["run", "--once", "--config", cfg.as_str()], Duration::from_secs(60)).await;
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert_eq!(dump(&dir.path().join("b.db"), "t", "id").await.len(), 500);
    // Changes since: the next --once carries them.
    sqlx::query("UPDATE t SET v = 'changed' WHERE id < 10").execute(&mut c).await.expect("update");
    sqlx::query("DELETE FROM t WHERE id >= 490").execute(&mut c).await.expect("delete");
    let out = ferry_within(&["run", "--once", "--config", cfg.as_str()], Duration::from_secs(60)).await;
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert_eq!(dump(&dir.path().join("b.db"), "t", "id").await, dump(&a, "t", "id").await);
}
