//! `ferry uninstall`: after a migration nothing of ferry's stays in the user's stores;
//! refused while a task runs, confirmed by typing `uninstall` (or `--yes`), audited.

use std::process::Command;
use std::time::Duration;

use crate::support::mariadb::{Cleanup, admin, database, private_cutover_pair, rows};
use crate::support::{FerryRun, app_conn, create_db, dump, ferry, ferry_bin, task_file, wait_until};

/// Names of ferry's triggers and tables in a SQLite file.
async fn ferry_objects(path: &std::path::Path) -> Vec<String> {
    let mut conn = app_conn(path).await;
    let names: Vec<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_schema WHERE name LIKE 'ferry\\_%' ESCAPE '\\' ORDER BY name")
            .fetch_all(&mut conn)
            .await
            .expect("list ferry objects");
    sqlx::Connection::close(conn).await.ok();
    names
}

/// Rows of `t` in a SQLite file (0 before the table exists).
async fn rows_of_t(path: &std::path::Path) -> i64 {
    let mut conn = app_conn(path).await;
    let n = sqlx::query_scalar("SELECT count(*) FROM t").fetch_one(&mut conn).await.unwrap_or(0);
    sqlx::Connection::close(conn).await.ok();
    n
}

/// `ferry uninstall` with `answer` typed at the prompt.
fn uninstall_typing(config: &std::path::Path, answer: &str) -> std::process::Output {
    crate::support::answering(
        Command::new(ferry_bin()).args(["uninstall", "--config"]).arg(config).env("FERRY_LOG", "warn"),
        answer.as_bytes(),
    )
}

#[tokio::test]
async fn sqlite_uninstall_is_refused_while_running_then_removes_every_trace_after_typed_confirmation() {
    let dir = tempfile::tempdir().expect("temp folder");
    let (a, b) = (dir.path().join("a.db"), dir.path().join("b.db"));
    create_db(&a, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t VALUES (1, 'x'), (2, 'y');").await;
    create_db(&b, "SELECT 1").await;
    let config = task_file(dir.path(), "two-way", "");
    let log = dir.path().join("run.log");
    let mut run = FerryRun::start(&config, &log);
    wait_until(Duration::from_secs(30), "the rows on b", || async { rows_of_t(&b).await == 2 }).await;

    let cfg = config.to_str().expect("utf-8 path");
    let busy = ferry(&["uninstall", "--config", cfg, "--yes"]);
    let stderr = String::from_utf8_lossy(&busy.stderr);
    assert_eq!(busy.status.code(), Some(3), "refused while running: {stderr}");
    assert!(stderr.contains("pid"), "names the holder: {stderr}");
    assert!(!ferry_objects(&a).await.is_empty(), "nothing removed while running");

    assert_eq!(run.terminate(), Some(0), "ferry stops cleanly");
    let before = ferry_objects(&a).await;
    assert!(before.iter().any(|n| n.starts_with("ferry_capture_")), "capture triggers were there: {before:?}");

    let no = uninstall_typing(&config, "no\n");
    assert_ne!(no.status.code(), Some(0), "{}", String::from_utf8_lossy(&no.stderr));
    assert_eq!(ferry_objects(&a).await, before, "a wrong answer removes nothing");
    let listed = String::from_utf8_lossy(&no.stdout);
    assert!(listed.contains("trigger ferry_capture_ins_t") && listed.contains("table ferry_checkpoint"), "{listed}");

    let yes = uninstall_typing(&config, "uninstall\n");
    assert_eq!(yes.status.code(), Some(0), "{}", String::from_utf8_lossy(&yes.stderr));
    assert_eq!(ferry_objects(&a).await, Vec::<String>::new());
    assert_eq!(ferry_objects(&b).await, Vec::<String>::new());
    assert_eq!(dump(&a, "t", "id").await, dump(&b, "t", "id").await, "user rows stay");
    assert_eq!(dump(&a, "t", "id").await.len(), 2);
    let mut meta = app_conn(&dir.path().join("meta.db")).await;
    let audit: Vec<String> = sqlx::query_scalar("SELECT detail FROM audit WHERE action = 'uninstall' ORDER BY id")
        .fetch_all(&mut meta)
        .await
        .expect("audit");
    sqlx::Connection::close(meta).await.ok();
    assert_eq!(audit.len(), 2, "one audit entry per endpoint: {audit:?}");
    assert!(audit[0].contains("ferry_capture_ins_t"), "{audit:?}");

    // Writes after the uninstall are the application's alone: no trigger captures them.
    create_db(&a, "INSERT INTO t VALUES (3, 'z')").await;
    let again = ferry(&["uninstall", "--config", cfg, "--yes"]);
    assert_eq!(again.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&again.stdout).contains("nothing to remove"));
}

#[tokio::test]
async fn mariadb_two_way_uninstall_removes_triggers_the_ferry_database_and_nothing_else() {
    let (pair, _guard) = private_cutover_pair().await;
    let (root_a, root_b) = (pair.root_a(), pair.root_b());
    // The pair is this test's alone now; a cutover test before it may have left a
    // server frozen (the runbook's end state): start from servers ferry never touched.
    for root in [&root_a, &root_b] {
        admin(root, &["DROP DATABASE IF EXISTS ferry".to_string()]).await;
    }
    let mut clean_a = Cleanup::new(&root_a);
    let mut clean_b = Cleanup::new(&root_b);
    let db = database(&root_a, "un", &mut clean_a).await;
    clean_b.push(format!("DROP DATABASE IF EXISTS `{db}`"));
    admin(&root_a, &[format!("CREATE TABLE `{db}`.`t` (id INT PRIMARY KEY, v VARCHAR(20))")]).await;
    admin(&root_a, &[format!("INSERT INTO `{db}`.`t` VALUES (1, 'x'), (2, 'y')")]).await;
    let dir = tempfile::tempdir().expect("temp folder");
    let config = crate::support::mariadb::task_file(
        dir.path(),
        &pair.url_a(),
        &pair.url_b(),
        "two-way",
        &[&format!("{db}.*")],
        "",
    );
    let log = dir.path().join("run.log");
    let mut run = FerryRun::start(&config, &log);
    let count = format!("SELECT COUNT(*) FROM `{db}`.`t`");
    let exists =
        format!("SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{db}' AND TABLE_NAME = 't'");
    wait_until(Duration::from_secs(60), "the rows on b", || async {
        rows(&root_b, &exists).await[0][0] == "1" && rows(&root_b, &count).await[0][0] == "2"
    })
    .await;
    assert_eq!(run.terminate(), Some(0), "ferry stops cleanly");
    let triggers = format!("SELECT TRIGGER_NAME FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = '{db}'");
    let ferry_db = "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = 'ferry'";
    for root in [&root_a, &root_b] {
        assert_eq!(rows(root, &triggers).await.len(), 3, "two-way added its three triggers");
        assert_eq!(rows(root, ferry_db).await.len(), 1);
    }

    let cfg = config.to_str().expect("utf-8 path");
    let out = ferry(&["uninstall", "--config", cfg, "--yes"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    for root in [&root_a, &root_b] {
        assert_eq!(rows(root, &triggers).await, Vec::<Vec<String>>::new());
        assert_eq!(rows(root, ferry_db).await, Vec::<Vec<String>>::new());
        assert_eq!(rows(root, &count).await, vec![vec!["2".to_string()]], "user rows stay");
    }
}
