//! `ferry check` preflight of MySQL/MariaDB endpoints, on real servers: each problem is
//! produced for real and must come out as `PROBLEM  task t: endpoint E: ...` with the exact
//! statement or setting that fixes it, exit code 2; a well set-up pair passes and nothing
//! is written.
//!
//! Global settings (binlog format, row image, metadata, compression, retention) and a
//! server without binlog are disturbed on the private pair of this process
//! (`support::mariadb::private`); privileges, keys and globs are tested on the shared
//! testbed with accounts and databases of each test's own.

use crate::support::mariadb::{
    Cleanup, Outcome, admin, check, database, ferry, private_globals, require, rows, shared_a, shared_b, task_file,
    unique, user, with_user,
};

/// Asserts exit code 2, exactly `n` problems, and that stderr holds every `needle`.
fn refused(out: &Outcome, n: usize, needles: &[&str]) {
    assert_eq!(out.code, Some(2), "{}", out.all());
    assert_eq!(out.problems().len(), n, "expected {n} problem(s)\n{}", out.all());
    for needle in needles {
        assert!(out.stderr.contains(needle), "stderr lacks {needle:?}\n{}", out.all());
    }
    for p in out.problems() {
        assert!(p.starts_with("PROBLEM  task t: endpoint "), "{p}");
    }
    assert!(out.stderr.contains("\n  fix: "), "{}", out.all());
}

/// A database with one keyed table `t` on `url`, dropped at the end.
async fn keyed_db(url: &str, cleanup: &mut Cleanup) -> String {
    let db = database(url, "ck", cleanup).await;
    admin(url, &[format!("CREATE TABLE `{db}`.`t` (id INT PRIMARY KEY, v VARCHAR(20))")]).await;
    db
}

// --- global settings, on the private pair -------------------------------------------

/// Sets one global on the private `a`, then checks a one-way task a -> b of a keyed table.
async fn check_private_with(setting: &str, task_keys: &str) -> Outcome {
    let (pair, _globals) = private_globals().await;
    let mut clean = Cleanup::new(&pair.root_a());
    let db = keyed_db(&pair.root_a(), &mut clean).await;
    admin(&pair.root_a(), &[setting.to_string()]).await;
    let dir = tempfile::tempdir().expect("temp folder");
    let file = task_file(dir.path(), &pair.url_a(), &pair.url_b(), "one-way", &[&format!("{db}.*")], task_keys);
    check(&file).await
}

#[tokio::test]
async fn binlog_off_is_refused_with_the_my_cnf_lines() {
    let (pair, _globals) = private_globals().await;
    // b runs without binary log: as a source it must be refused (as a target it is fine).
    let mut clean = Cleanup::new(&pair.root_b());
    let db = keyed_db(&pair.root_b(), &mut clean).await;
    let dir = tempfile::tempdir().expect("temp folder");
    let file = task_file(dir.path(), &pair.url_b(), &pair.url_a(), "one-way", &[&format!("{db}.*")], "");
    let out = check(&file).await;
    refused(
        &out,
        1,
        &[
            "PROBLEM  task t: endpoint a: binary logging is off on mysql://ferry:***@127.0.0.1:",
            "log_bin = bin",
            "binlog_format = ROW",
            "binlog_row_image = FULL",
            "binlog_row_metadata = FULL",
            "--log-bin --binlog-format=ROW --binlog-row-image=FULL --binlog-row-metadata=FULL",
            "then restart the server",
        ],
    );
}

#[tokio::test]
async fn statement_binlog_format_is_refused() {
    let out = check_private_with("SET GLOBAL binlog_format = 'STATEMENT'", "").await;
    refused(
        &out,
        1,
        &["endpoint a: binlog_format is STATEMENT", "fix: SET GLOBAL binlog_format = 'ROW';", "`binlog_format = ROW`"],
    );
}

#[tokio::test]
async fn minimal_row_image_is_refused() {
    let out = check_private_with("SET GLOBAL binlog_row_image = 'MINIMAL'", "").await;
    refused(&out, 1, &["endpoint a: binlog_row_image is MINIMAL", "fix: SET GLOBAL binlog_row_image = 'FULL';"]);
}

#[tokio::test]
async fn minimal_row_metadata_is_refused() {
    let out = check_private_with("SET GLOBAL binlog_row_metadata = 'MINIMAL'", "").await;
    refused(&out, 1, &["endpoint a: binlog_row_metadata is MINIMAL", "fix: SET GLOBAL binlog_row_metadata = 'FULL';"]);
}

#[tokio::test]
async fn compressed_binlog_is_refused() {
    let out = check_private_with("SET GLOBAL log_bin_compress = ON", "").await;
    refused(&out, 1, &["endpoint a: log_bin_compress is ON", "fix: SET GLOBAL log_bin_compress = OFF;"]);
}

#[tokio::test]
async fn binlog_retention_shorter_than_the_snapshot_is_refused() {
    let (pair, _globals) = private_globals().await;
    let root = pair.root_a();
    let mut clean = Cleanup::new(&root);
    let db = keyed_db(&root, &mut clean).await;
    admin(
        &root,
        &[
            format!("INSERT INTO `{db}`.`t` SELECT seq, 'x' FROM `{db}`.seq_1_to_300"),
            format!("ANALYZE TABLE `{db}`.`t`"),
            "SET GLOBAL binlog_expire_logs_seconds = 60".to_string(),
        ],
    )
    .await;
    let dir = tempfile::tempdir().expect("temp folder");
    // 300 rows at 1 row/s: about 5 minutes of snapshot against one minute of binlog.
    let file =
        task_file(dir.path(), &pair.url_a(), &pair.url_b(), "one-way", &[&format!("{db}.*")], "max_rows_per_sec = 1");
    let out = check(&file).await;
    refused(
        &out,
        1,
        &[
            "endpoint a: binlog retention on mysql://ferry:***@127.0.0.1:",
            "is 1 min (binlog_expire_logs_seconds = 60)",
            "about 300 rows",
            "fix: SET GLOBAL binlog_expire_logs_seconds = 86400;",
            "`binlog_expire_logs_seconds = 86400`",
        ],
    );

    // Without a snapshot the retention is no concern.
    let file = task_file(
        dir.path(),
        &pair.url_a(),
        &pair.url_b(),
        "one-way",
        &[&format!("{db}.*")],
        "max_rows_per_sec = 1\nsnapshot = false",
    );
    let out = check(&file).await;
    assert_eq!(out.code, Some(0), "{}", out.all());
}

/// Schemas and tables of a server (ferry's own database included, if there).
async fn objects(url: &str) -> Vec<Vec<String>> {
    rows(
        url,
        "SELECT s.SCHEMA_NAME, t.TABLE_NAME FROM information_schema.SCHEMATA s \
         LEFT JOIN information_schema.TABLES t ON t.TABLE_SCHEMA = s.SCHEMA_NAME \
         WHERE s.SCHEMA_NAME NOT IN ('information_schema', 'performance_schema', 'mysql', 'sys') \
         ORDER BY 1, 2",
    )
    .await
}

#[tokio::test]
async fn well_set_up_pair_passes_and_writes_nothing() {
    let (pair, _globals) = private_globals().await;
    let mut clean = Cleanup::new(&pair.root_a());
    let db = keyed_db(&pair.root_a(), &mut clean).await;
    admin(&pair.root_a(), &[format!("CREATE TABLE `{db}`.`u` (a INT, b INT, PRIMARY KEY (a, b))")]).await;
    let dir = tempfile::tempdir().expect("temp folder");
    let file = task_file(dir.path(), &pair.url_a(), &pair.url_b(), "one-way", &[&format!("{db}.*")], "");
    let (a_before, b_before) = (objects(&pair.root_a()).await, objects(&pair.root_b()).await);
    let binlog_before = rows(&pair.root_a(), "SHOW MASTER STATUS").await;

    let out = check(&file).await;
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(out.problems().is_empty(), "{}", out.all());
    assert!(
        out.stdout.contains(&format!("ok       task t: one-way a -> b (mysql://ferry:***@127.0.0.1:{}", pair.port_a)),
        "{}",
        out.all()
    );
    assert!(out.stdout.contains(&format!("2 table(s): {db}.t, {db}.u")), "{}", out.all());

    assert_eq!(objects(&pair.root_a()).await, a_before, "check changed a's schemas or tables");
    assert_eq!(objects(&pair.root_b()).await, b_before, "check changed b's schemas or tables");
    assert_eq!(rows(&pair.root_a(), "SHOW MASTER STATUS").await, binlog_before, "check wrote to a's binlog");
    for url in [pair.root_a(), pair.root_b()] {
        let ferry_db =
            rows(&url, "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = 'ferry'").await;
        assert!(ferry_db.is_empty(), "check created ferry's database on {url}");
    }
    assert!(!dir.path().join("meta.db").exists(), "check created the metadata store");
}

// --- privileges, on the shared testbed ------------------------------------------------

const FERRY_DB_PRIVS: &str = "SELECT, INSERT, UPDATE, DELETE, CREATE, ALTER ON `ferry`.*";

#[tokio::test]
async fn missing_replication_privileges_are_refused() {
    let (a, b) = (shared_a(), shared_b());
    let mut clean = Cleanup::new(&a);
    let db = keyed_db(&a, &mut clean).await;
    let name = unique("ck_norepl");
    let select = format!("SELECT ON `{db}`.*");
    user(&a, &name, &[&select, FERRY_DB_PRIVS], &mut clean).await;
    let dir = tempfile::tempdir().expect("temp folder");
    let file = task_file(dir.path(), &with_user(&a, &name, "pw"), &b, "one-way", &[&format!("{db}.*")], "");
    let out = check(&file).await;
    refused(
        &out,
        2,
        &[
            &format!("endpoint a: the account '{name}'@'127.0.0.1' on mysql://{name}:***@"),
            "lacks the REPLICATION SLAVE privilege",
            &format!("fix: GRANT REPLICATION SLAVE ON *.* TO '{name}'@'127.0.0.1';"),
            "lacks the BINLOG MONITOR privilege (REPLICATION CLIENT)",
            &format!("fix: GRANT BINLOG MONITOR ON *.* TO '{name}'@'127.0.0.1';"),
        ],
    );
}

#[tokio::test]
async fn missing_select_on_source_tables_is_refused() {
    let (a, b) = (shared_a(), shared_b());
    let mut clean = Cleanup::new(&a);
    let hidden = keyed_db(&a, &mut clean).await;
    let insert_only = keyed_db(&a, &mut clean).await;
    let name = unique("ck_nosel");
    let insert = format!("INSERT ON `{insert_only}`.*");
    // REPLICATION CLIENT is MariaDB's old name of BINLOG MONITOR: accepted.
    user(&a, &name, &["REPLICATION SLAVE, REPLICATION CLIENT ON *.*", FERRY_DB_PRIVS, &insert], &mut clean).await;
    let dir = tempfile::tempdir().expect("temp folder");
    let tables = [format!("{hidden}.*"), format!("{insert_only}.*")];
    let tables: Vec<&str> = tables.iter().map(String::as_str).collect();
    let file = task_file(dir.path(), &with_user(&a, &name, "pw"), &b, "one-way", &tables, "");
    let out = check(&file).await;
    refused(
        &out,
        2,
        &[
            &format!("endpoint a: the account '{name}'@'127.0.0.1' on mysql://{name}:***@"),
            &format!("has no SELECT privilege on database `{hidden}`"),
            &format!("fix: GRANT SELECT ON `{hidden}`.* TO '{name}'@'127.0.0.1';"),
            &format!("may not SELECT from `{insert_only}`.`t`"),
            &format!("fix: GRANT SELECT ON `{insert_only}`.* TO '{name}'@'127.0.0.1';"),
        ],
    );
}

#[tokio::test]
async fn missing_privileges_on_ferrys_database_are_refused_on_both_sides() {
    let (a, b) = (shared_a(), shared_b());
    let mut clean_a = Cleanup::new(&a);
    let mut clean_b = Cleanup::new(&b);
    let db = keyed_db(&a, &mut clean_a).await;
    let name = unique("ck_noferry");
    let select = format!("SELECT ON `{db}`.*");
    user(&a, &name, &["REPLICATION SLAVE, BINLOG MONITOR ON *.*", &select], &mut clean_a).await;
    let write = format!("SELECT, INSERT, UPDATE, DELETE, CREATE ON `{db}`.*");
    user(&b, &name, &[&write, "SELECT ON `ferry`.*"], &mut clean_b).await;
    let dir = tempfile::tempdir().expect("temp folder");
    let file = task_file(
        dir.path(),
        &with_user(&a, &name, "pw"),
        &with_user(&b, &name, "pw"),
        "one-way",
        &[&format!("{db}.*")],
        "",
    );
    let out = check(&file).await;
    refused(
        &out,
        2,
        &[
            &format!("endpoint a: the account '{name}'@'127.0.0.1' on mysql://{name}:***@"),
            "lacks SELECT, INSERT, UPDATE, DELETE, CREATE, ALTER on ferry's own database `ferry`",
            &format!("fix: GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, ALTER ON `ferry`.* TO '{name}'@'127.0.0.1';"),
            &format!("endpoint b: the account '{name}'@'127.0.0.1' on mysql://{name}:***@"),
            "lacks INSERT, UPDATE, DELETE, CREATE, ALTER on ferry's own database `ferry`",
            &format!("fix: GRANT INSERT, UPDATE, DELETE, CREATE, ALTER ON `ferry`.* TO '{name}'@'127.0.0.1';"),
        ],
    );
}

#[tokio::test]
async fn missing_write_privileges_on_the_target_are_refused() {
    let (a, b) = (shared_a(), shared_b());
    let mut clean_a = Cleanup::new(&a);
    let mut clean_b = Cleanup::new(&b);
    let db = keyed_db(&a, &mut clean_a).await;
    let name = unique("ck_ro");
    let select = format!("SELECT ON `{db}`.*");
    user(&b, &name, &[FERRY_DB_PRIVS, &select], &mut clean_b).await;
    let dir = tempfile::tempdir().expect("temp folder");
    let file = task_file(dir.path(), &a, &with_user(&b, &name, "pw"), "one-way", &[&format!("{db}.*")], "");
    let out = check(&file).await;
    refused(
        &out,
        1,
        &[
            &format!("endpoint b: the account '{name}'@'127.0.0.1' on mysql://{name}:***@"),
            &format!("lacks INSERT, UPDATE, DELETE, CREATE on database `{db}`"),
            &format!("fix: GRANT INSERT, UPDATE, DELETE, CREATE ON `{db}`.* TO '{name}'@'127.0.0.1';"),
        ],
    );
}

// --- tables and globs, on the shared testbed ------------------------------------------

#[tokio::test]
async fn tables_without_primary_key_are_refused_by_check_and_run() {
    let (a, b) = (shared_a(), shared_b());
    let mut clean = Cleanup::new(&a);
    let db = keyed_db(&a, &mut clean).await;
    admin(
        &a,
        &[
            format!("CREATE TABLE `{db}`.`nokey` (a INT, b TEXT)"),
            format!("CREATE TABLE `{db}`.`ukey` (code VARCHAR(10) NOT NULL, v INT, UNIQUE KEY (code))"),
        ],
    )
    .await;
    let dir = tempfile::tempdir().expect("temp folder");
    let file = task_file(dir.path(), &a, &b, "one-way", &[&format!("{db}.*")], "");
    let needles = [
        format!("endpoint a: table `{db}`.`nokey` on mysql://ferry:***@"),
        "has no primary key".to_string(),
        format!("fix: ALTER TABLE `{db}`.`nokey` ADD COLUMN `id` BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY;"),
        format!("endpoint a: table `{db}`.`ukey` on mysql://ferry:***@"),
        format!("fix: ALTER TABLE `{db}`.`ukey` ADD PRIMARY KEY (`code`);"),
    ];
    let needles: Vec<&str> = needles.iter().map(String::as_str).collect();
    let out = check(&file).await;
    refused(&out, 2, &needles);

    // `ferry run` runs the same preflight and refuses before writing anything.
    let out = ferry(&["run", "--config", file.to_str().expect("utf-8 path")]).await;
    refused(&out, 2, &needles);
    assert!(!dir.path().join("meta.db").exists(), "run created the metadata store");
    let tables =
        rows(&a, &format!("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{db}'")).await;
    assert_eq!(tables.len(), 3, "run changed the source database: {tables:?}");
}

#[tokio::test]
async fn two_way_checks_the_reverse_direction_too() {
    let (a, b) = (shared_a(), shared_b());
    let mut clean_a = Cleanup::new(&a);
    let mut clean_b = Cleanup::new(&b);
    let db = keyed_db(&a, &mut clean_a).await;
    clean_b.push(format!("DROP DATABASE IF EXISTS `{db}`"));
    admin(&b, &[format!("CREATE DATABASE `{db}`"), format!("CREATE TABLE `{db}`.`t` (id INT, v VARCHAR(20))")]).await;
    let dir = tempfile::tempdir().expect("temp folder");
    let file = task_file(dir.path(), &a, &b, "two-way", &[&format!("{db}.*")], "");
    let out = check(&file).await;
    refused(
        &out,
        1,
        &[
            &format!("PROBLEM  task t: endpoint b: table `{db}`.`t` on mysql://ferry:***@"),
            // `id` is taken there: the suggested key column gets another name.
            &format!(
                "fix: ALTER TABLE `{db}`.`t` ADD COLUMN `row_id` BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY;"
            ),
        ],
    );
}

#[tokio::test]
async fn two_way_passes_before_the_target_has_the_tables() {
    let (a, b) = (shared_a(), shared_b());
    require(&b).await;
    let mut clean = Cleanup::new(&a);
    let db = keyed_db(&a, &mut clean).await;
    let dir = tempfile::tempdir().expect("temp folder");
    let file = task_file(dir.path(), &a, &b, "two-way", &[&format!("{db}.*")], "");
    let out = check(&file).await;
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(out.stdout.contains("ok       task t: two-way a -> b"), "{}", out.all());
    assert!(out.stdout.contains(&format!("1 table(s): {db}.t")), "{}", out.all());
    let on_b =
        rows(&b, &format!("SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = '{db}'")).await;
    assert!(on_b.is_empty(), "check created {db} on b");
}

#[tokio::test]
async fn a_glob_matching_no_table_is_refused() {
    let (a, b) = (shared_a(), shared_b());
    let mut clean = Cleanup::new(&a);
    let db = keyed_db(&a, &mut clean).await;
    let dir = tempfile::tempdir().expect("temp folder");
    let good = format!("{db}.t");
    let bad = format!("{db}.nosuch*");
    let file = task_file(dir.path(), &a, &b, "one-way", &[&good, &bad], "");
    let out = check(&file).await;
    refused(
        &out,
        1,
        &[
            &format!("PROBLEM  task t: endpoint a: no table matches \"{bad}\" on mysql://ferry:***@"),
            "fix: correct the task's `tables` list",
        ],
    );
}

// --- connections ----------------------------------------------------------------------

/// A port on 127.0.0.1 where nothing listens.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("address").port()
}

#[tokio::test]
async fn an_unreachable_server_is_one_problem_per_endpoint() {
    let (pa, pb) = (closed_port(), closed_port());
    let dir = tempfile::tempdir().expect("temp folder");
    let file = task_file(
        dir.path(),
        &format!("mysql://ferry:s3cret-zz@127.0.0.1:{pa}"),
        &format!("mysql://ferry:s3cret-zz@127.0.0.1:{pb}"),
        "two-way",
        &["shop.*"],
        "",
    );
    let out = check(&file).await;
    refused(
        &out,
        2,
        &[
            &format!("PROBLEM  task t: endpoint a: cannot connect to mysql://ferry:***@127.0.0.1:{pa}"),
            &format!("PROBLEM  task t: endpoint b: cannot connect to mysql://ferry:***@127.0.0.1:{pb}"),
            "fix: start the server, or correct host and port in the endpoint's url",
        ],
    );
    assert!(!out.all().contains("s3cret-zz"), "password shown\n{}", out.all());
}

#[tokio::test]
async fn a_wrong_password_is_one_clear_problem() {
    let (a, b) = (shared_a(), shared_b());
    require(&a).await;
    let mut clean = Cleanup::new(&a);
    let db = keyed_db(&a, &mut clean).await;
    let dir = tempfile::tempdir().expect("temp folder");
    let file =
        task_file(dir.path(), &with_user(&a, "ferry", "not-the-pw-zz"), &b, "one-way", &[&format!("{db}.*")], "");
    let out = check(&file).await;
    refused(
        &out,
        1,
        &[
            "PROBLEM  task t: endpoint a: cannot connect to mysql://ferry:***@",
            "Access denied",
            "fix: correct the user and password in the endpoint's url",
        ],
    );
    assert!(!out.all().contains("not-the-pw-zz"), "password shown\n{}", out.all());
}

#[tokio::test]
async fn a_store_ferry_does_not_speak_yet_is_refused_when_the_file_is_read() {
    let dir = tempfile::tempdir().expect("temp folder");
    crate::support::create_db(&dir.path().join("a.db"), "CREATE TABLE t (id INTEGER PRIMARY KEY)").await;
    let file =
        task_file(dir.path(), "sqlite://a.db", "mongodb://ferry:secret@127.0.0.1:27017/app", "one-way", &["*"], "");
    let out = check(&file).await;
    assert_eq!(out.code, Some(2), "{}", out.all());
    // Refused when the task file is read, naming its line and the URL forms ferry speaks.
    assert!(out.stderr.contains("ferry.toml:"), "{}", out.all());
    assert!(out.stderr.contains("cannot be synced by this version of ferry yet"), "{}", out.all());
    assert!(out.stderr.contains("mysql://") && out.stderr.contains("postgres://"), "{}", out.all());
    assert!(!out.all().contains("secret"), "the password is masked: {}", out.all());
    assert!(!dir.path().join("meta.db").exists(), "check created the metadata store");
}

#[tokio::test]
async fn two_way_needs_the_trigger_privilege_on_both_sides() {
    let (a, b) = (shared_a(), shared_b());
    let mut clean_a = Cleanup::new(&a);
    let mut clean_b = Cleanup::new(&b);
    let db = keyed_db(&a, &mut clean_a).await;
    clean_b.push(format!("DROP DATABASE IF EXISTS `{db}`"));
    let name = unique("ck_tw");
    // Everything a two-way task needs but TRIGGER on the tables' database (on b).
    let tables = format!("SELECT, INSERT, UPDATE, DELETE, CREATE ON `{db}`.*");
    user(&b, &name, &[FERRY_DB_PRIVS, &tables, "REPLICATION SLAVE, BINLOG MONITOR, SUPER ON *.*"], &mut clean_b).await;
    let dir = tempfile::tempdir().expect("temp folder");
    let file = task_file(dir.path(), &a, &with_user(&b, &name, "pw"), "two-way", &[&format!("{db}.*")], "");
    let out = check(&file).await;
    refused(
        &out,
        1,
        &[
            &format!("endpoint b: the account '{name}'@'127.0.0.1' on mysql://{name}:***@"),
            &format!("lacks TRIGGER on database `{db}`: two-way versions each row with ferry's triggers"),
            &format!("fix: GRANT TRIGGER ON `{db}`.* TO '{name}'@'127.0.0.1';"),
        ],
    );
}

/// The task file of `task_file` with `password_file = "pw"` on both endpoints.
fn with_password_file(file: &std::path::Path, password: &str) {
    let text = std::fs::read_to_string(file).expect("task file");
    let text = if text.contains("password_file") {
        text
    } else {
        text.replace("site = \"dc-a\"", "site = \"dc-a\"\npassword_file = \"pw\"")
            .replace("site = \"dc-b\"", "site = \"dc-b\"\npassword_file = \"pw\"")
    };
    std::fs::write(file, text).expect("task file");
    std::fs::write(file.with_file_name("pw"), format!("{password}\n")).expect("password file");
}

#[tokio::test]
async fn a_password_file_replaces_the_url_password_and_is_never_shown() {
    let (a, b) = (shared_a(), shared_b());
    let mut clean = Cleanup::new(&a);
    let db = keyed_db(&a, &mut clean).await;
    let dir = tempfile::tempdir().expect("temp folder");
    // The URLs carry a wrong password: only the file's may get in.
    let (url_a, url_b) = (with_user(&a, "ferry", "not-this-one"), with_user(&b, "ferry", "not-this-one"));
    let file = task_file(dir.path(), &url_a, &url_b, "one-way", &[&format!("{db}.*")], "");
    with_password_file(&file, "ferry");
    let out = check(&file).await;
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(!out.all().contains("not-this-one"), "{}", out.all());

    with_password_file(&file, "wrong-secret-in-file");
    let out = check(&file).await;
    assert_eq!(out.code, Some(2), "{}", out.all());
    assert!(out.stderr.contains("Access denied"), "{}", out.all());
    assert!(!out.all().contains("wrong-secret-in-file"), "the password is never shown: {}", out.all());
}
