//! Freeze safety (issue 15.4) on the private MariaDB: a probe account left behind by a
//! freeze killed between creating and dropping it is gone once a ferry process starts
//! next; grants saved by a revoke freeze are given back from their fields, so a row
//! written into ferry's table cannot make ferry's SUPER account run SQL of its choice.

use std::time::Duration;

use ferry::connector::mysql::MysqlEndpoint;
use ferry::connector::mysql::freezer::PROBE_USER;
use ferry::model::SiteId;

use crate::support::mariadb::{admin, private_globals, rows};
use crate::support::{FerryRun, create_db, task_file, wait_until};

async fn probe_accounts(root: &str) -> usize {
    rows(root, &format!("SELECT User FROM mysql.user WHERE User = '{PROBE_USER}'")).await.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_account_left_by_a_killed_freeze_is_gone_after_the_next_start() {
    let (pair, _globals) = private_globals().await;
    // What a freeze killed (SIGKILL) right after creating its probe leaves.
    admin(
        &pair.root_a(),
        &[
            format!("DROP USER IF EXISTS '{PROBE_USER}'@'%'"),
            format!("CREATE USER '{PROBE_USER}'@'%' IDENTIFIED BY 'left-behind'"),
        ],
    )
    .await;
    assert_eq!(probe_accounts(&pair.root_a()).await, 1);

    // The next start: a node whose task file names that server.
    let dir = tempfile::tempdir().expect("tempdir");
    for db in ["a.db", "b.db"] {
        create_db(&dir.path().join(db), "CREATE TABLE kv(k INTEGER PRIMARY KEY, v TEXT);").await;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
    let path = task_file(dir.path(), "one-way", "");
    let mut text = std::fs::read_to_string(&path).expect("task file");
    text = text.replacen("[node]\n", &format!("[node]\nlisten = \"127.0.0.1:{port}\"\n"), 1);
    text.push_str(&format!("\n[[endpoint]]\nname = \"m\"\nurl = \"{}\"\n", pair.url_a()));
    std::fs::write(&path, text).expect("write");
    let log = dir.path().join("node.log");
    let mut node = FerryRun::start_command("node", &path, &log);
    let root = pair.root_a();
    wait_until(Duration::from_secs(30), "the leftover probe account to be dropped", || {
        let root = root.clone();
        async move { probe_accounts(&root).await == 0 }
    })
    .await;
    // The account goes a moment before the line is written: wait for both.
    let found = |log: std::path::PathBuf| async move {
        std::fs::read_to_string(&log).unwrap_or_default().contains("removed a freeze probe account")
    };
    let logged = tokio::time::timeout(Duration::from_secs(30), async {
        while !found(log.clone()).await {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    node.terminate();
    assert!(logged.is_ok(), "the removal is logged: {}", std::fs::read_to_string(&log).unwrap_or_default());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saved_grants_are_given_back_from_fields_never_run_as_text() {
    let (pair, _globals) = private_globals().await;
    let ep = MysqlEndpoint::new("a", SiteId::new("dc-a"), &pair.url_a()).expect("endpoint");
    let table = "`ferry`.`ferry_revoked_grants`";
    let create = format!(
        "CREATE TABLE IF NOT EXISTS {table} (user VARCHAR(128) NOT NULL, host VARCHAR(255) NOT NULL, \
         db VARCHAR(64) NOT NULL, tbl VARCHAR(64) NOT NULL, privilege VARCHAR(16) NOT NULL, \
         PRIMARY KEY (user, host, db, tbl, privilege))"
    );
    let reset = |rows: &str| {
        vec![
            "CREATE DATABASE IF NOT EXISTS ferry".to_string(),
            create.clone(),
            format!("DELETE FROM {table}"),
            format!("INSERT INTO {table} VALUES {rows}"),
            "DROP USER IF EXISTS 'ferry_injected'@'%'".into(),
        ]
    };
    // A privilege that is not a write grant a freeze takes: refused, nothing granted.
    admin(&pair.root_a(), &reset("('ferry', '%', '*', '*', 'ALL PRIVILEGES')")).await;
    let mut conn = ep.connect().await.expect("connect");
    let err = ferry::connector::mysql::revoke::unfreeze(&ep, &mut conn).await.expect_err("refused");
    assert!(err.to_string().contains("unexpected privilege"), "{err}");

    // A user name carrying SQL: quoted as a name, so it names no account and runs nothing.
    let injected = "x'@'%' IDENTIFIED BY 'pw'; CREATE USER 'ferry_injected'@'%";
    admin(&pair.root_a(), &reset(&format!("('{}', '%', '*', '*', 'INSERT')", injected.replace('\'', "''")))).await;
    let restored = ferry::connector::mysql::revoke::unfreeze(&ep, &mut conn).await.expect("unfreeze");
    assert_eq!(restored, 0, "no such account: nothing given back");
    let created =
        rows(&pair.root_a(), "SELECT User FROM mysql.user WHERE User = 'ferry_injected' OR User LIKE 'x''%'").await;
    assert!(created.is_empty(), "the stored text never ran as SQL, and no account was made: {created:?}");
    conn.disconnect().await.ok();
    admin(&pair.root_a(), &[format!("DROP TABLE IF EXISTS {table}")]).await;
}
