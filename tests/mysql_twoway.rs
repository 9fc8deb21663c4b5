//! MySQL/MariaDB two-way against the real testbed servers (dc-a and dc-b): changes cross
//! once and never loop (server ids, or marker rows without SUPER), conflicting writes
//! converge under every policy and are recorded, and both servers end identical after a
//! write load on overlapping keys on both sides, with a schema change in the middle and
//! ferry SIGKILLed at random.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use ferry::config::Config;
use ferry::engine::task::prepare_target;
use ferry::engine::{Engine, plan_task};
use mysql_async::prelude::Queryable;
use tokio_util::sync::CancellationToken;

use crate::mysql_oneway::{assert_same_table, tail, task_file, wait_caught_up, wait_caught_up_logged};
use crate::support::FerryRun;
use crate::support::mariadb::{Cleanup, admin, connect, database, rows, shared_a, shared_b, with_user};

/// Both directions of the config's first task, prepared and started in this process.
pub(crate) async fn start_both(config: &Config) -> Engine {
    let specs = plan_task(config, &config.tasks[0], &[]);
    for s in &specs {
        prepare_target(s).await.expect("prepare");
    }
    Engine::start(specs, CancellationToken::new())
}

/// Changes applied so far by the direction `from->to`.
pub(crate) fn applied(engine: &Engine, direction: &str) -> u64 {
    engine.metrics().iter().map(|m| m.status()).find(|s| s.direction == direction).map(|s| s.changes_total).unwrap_or(0)
}

async fn exec(url: &str, statements: &[String]) {
    let mut c = connect(url).await;
    for s in statements {
        c.query_drop(s).await.unwrap_or_else(|e| panic!("{s}: {e}"));
    }
    c.disconnect().await.ok();
}

/// A database of the same name on both servers, with table `t`, dropped at the end.
async fn pair_db(prefix: &str, ca: &mut Cleanup, cb: &mut Cleanup) -> String {
    let db = database(&shared_a(), prefix, ca).await;
    cb.push(format!("DROP DATABASE IF EXISTS `{db}`"));
    admin(&shared_b(), &[format!("CREATE DATABASE IF NOT EXISTS `{db}`")]).await;
    let create = format!(
        "CREATE TABLE `{db}`.t (id INT NOT NULL PRIMARY KEY, v INT NOT NULL, note VARCHAR(40) NULL) ENGINE=InnoDB"
    );
    exec(&shared_a(), std::slice::from_ref(&create)).await;
    db
}

fn two_way(dir: &Path, url_a: &str, url_b: &str, db: &str, policy: &str) -> Config {
    let extra = format!("conflict = \"{policy}\"");
    Config::load(&task_file(dir, url_a, url_b, "two-way", &[&format!("{db}.*")], &extra)).expect("config")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_on_both_sides_cross_once_and_never_loop() {
    let (mut ca, mut cb) = (Cleanup::new(&shared_a()), Cleanup::new(&shared_b()));
    let db = pair_db("tw_loop", &mut ca, &mut cb).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = two_way(dir.path(), &shared_a(), &shared_b(), &db, "last-writer-wins");
    crosses_once(&config, &db, &shared_a(), &shared_b()).await;
}

/// Where the account may not set its session server_id (no SUPER or BINLOG REPLAY), a
/// marker row in each applied transaction, and a comment on each schema change, keep
/// changes from looping.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_super_marker_rows_keep_changes_from_looping() {
    let (mut ca, mut cb) = (Cleanup::new(&shared_a()), Cleanup::new(&shared_b()));
    let db = pair_db("tw_mark", &mut ca, &mut cb).await;
    let name = format!("ns{}", &db[db.len().saturating_sub(10)..]).replace('_', "");
    let grants = [
        "SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, ALTER, INDEX, TRIGGER, REPLICATION SLAVE, BINLOG MONITOR ON *.*",
    ];
    // Without SUPER, MariaDB lets an account create triggers only with this on (ferry
    // says so when it is off); it only relaxes a check, so the shared servers keep it.
    for url in [shared_a(), shared_b()] {
        admin(&url, &["SET GLOBAL log_bin_trust_function_creators = 1".to_string()]).await;
    }
    crate::support::mariadb::user(&shared_a(), &name, &grants, &mut ca).await;
    crate::support::mariadb::user(&shared_b(), &name, &grants, &mut cb).await;
    let (url_a, url_b) = (with_user(&shared_a(), &name, "pw"), with_user(&shared_b(), &name, "pw"));
    let dir = tempfile::tempdir().expect("tempdir");
    let config = two_way(dir.path(), &url_a, &url_b, &db, "last-writer-wins");
    crosses_once(&config, &db, &url_a, &url_b).await;
    let marked = rows(&shared_b(), "SELECT n > 0 FROM ferry.ferry_marker WHERE site = 'dc-a'").await;
    assert_eq!(marked, vec![vec!["1".to_string()]], "ferry's writes on dc-b carry dc-a's marker row");
}

/// Two-way over `db`.t: rows and a schema change written on each side reach the other,
/// and 300 updates on a are applied on b once and never come back.
async fn crosses_once(config: &Config, db: &str, url_a: &str, url_b: &str) {
    exec(url_a, &[format!("INSERT INTO `{db}`.t VALUES (1, 0, 'a'), (2, 0, 'a')")]).await;
    let engine = start_both(config).await;
    wait_caught_up(config, Duration::from_secs(60), Some(&engine)).await;

    exec(url_a, &[format!("INSERT INTO `{db}`.t VALUES (10, 1, 'from a')")]).await;
    exec(
        url_b,
        &[format!("INSERT INTO `{db}`.t VALUES (20, 2, 'from b')"), format!("DELETE FROM `{db}`.t WHERE id = 2")],
    )
    .await;
    // A schema change on b reaches a (and is not sent back to b).
    exec(url_b, &[format!("ALTER TABLE `{db}`.t ADD COLUMN extra VARCHAR(10) NULL")]).await;
    exec(url_b, &[format!("INSERT INTO `{db}`.t VALUES (21, 3, 'from b', 'x')")]).await;
    wait_caught_up(config, Duration::from_secs(60), Some(&engine)).await;
    exec(url_a, &[format!("INSERT INTO `{db}`.t VALUES (11, 4, 'from a', 'y')")]).await;
    wait_caught_up(config, Duration::from_secs(60), Some(&engine)).await;
    assert_same_table(db, "t").await;
    let ids = rows(url_a, &format!("SELECT GROUP_CONCAT(id ORDER BY id) FROM `{db}`.t")).await;
    assert_eq!(ids, vec![vec!["1,10,11,20,21".to_string()]]);

    // 300 single-row updates on a: a->b applies each; b->a must apply none of them back
    // (only heartbeats, about 10 a second).
    let (ab0, ba0) = (applied(&engine, "a->b"), applied(&engine, "b->a"));
    let mut c = connect(url_a).await;
    for _ in 0..300 {
        c.query_drop(format!("UPDATE `{db}`.t SET v = v + 1 WHERE id = 1")).await.expect("update");
    }
    c.disconnect().await.ok();
    wait_caught_up(config, Duration::from_secs(60), Some(&engine)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    wait_caught_up(config, Duration::from_secs(60), Some(&engine)).await;
    let (ab, ba) = (applied(&engine, "a->b") - ab0, applied(&engine, "b->a") - ba0);
    assert!(ab >= 300, "a->b applied {ab} changes for 300 updates");
    assert!(ba < 150, "b->a applied {ba} changes while only a wrote: changes loop back");
    assert_same_table(db, "t").await;
    let v = rows(url_b, &format!("SELECT v FROM `{db}`.t WHERE id = 1")).await;
    assert_eq!(v, vec![vec!["300".to_string()]]);
    let conflicts =
        rows(url_a, &format!("SELECT COUNT(*) FROM ferry.ferry_conflict WHERE task = '{}'", config.tasks[0].name))
            .await;
    assert_eq!(conflicts, vec![vec!["0".to_string()]], "no write raced, so no conflict");
    engine.stop();
    assert!(engine.join().await.is_empty(), "a direction failed");
}

/// Writes that race while ferry is stopped: the same row updated on both sides, a row
/// deleted on one side and updated on the other, and the same new key inserted on both.
async fn race(db: &str) {
    exec(
        &shared_a(),
        &[
            format!("UPDATE `{db}`.t SET v = 100, note = 'a' WHERE id = 1"),
            format!("DELETE FROM `{db}`.t WHERE id = 2"),
            format!("INSERT INTO `{db}`.t VALUES (5, 500, 'a')"),
        ],
    )
    .await;
    // b writes later (last-writer-wins picks b's versions).
    tokio::time::sleep(Duration::from_millis(20)).await;
    exec(
        &shared_b(),
        &[
            format!("UPDATE `{db}`.t SET v = 200, note = 'b' WHERE id = 1"),
            format!("UPDATE `{db}`.t SET v = 201, note = 'b' WHERE id = 2"),
            format!("INSERT INTO `{db}`.t VALUES (5, 501, 'b')"),
        ],
    )
    .await;
}

async fn table_text(url: &str, db: &str) -> Vec<Vec<String>> {
    rows(url, &format!("SELECT id, v, note FROM `{db}`.t ORDER BY id")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_writes_converge_under_every_policy_and_are_recorded() {
    // (policy, rows both sides end with; None for log-only, where each keeps its own)
    let cases: [(&str, Option<&[(i32, i32, &str)]>); 4] = [
        ("last-writer-wins", Some(&[(1, 200, "b"), (2, 201, "b"), (3, 3, "x"), (5, 501, "b")])),
        ("prefer-from", Some(&[(1, 100, "a"), (3, 3, "x"), (5, 500, "a")])),
        ("prefer-to", Some(&[(1, 200, "b"), (2, 201, "b"), (3, 3, "x"), (5, 501, "b")])),
        ("log-only", None),
    ];
    for (policy, expected) in cases {
        let (mut ca, mut cb) = (Cleanup::new(&shared_a()), Cleanup::new(&shared_b()));
        let db = pair_db("tw_race", &mut ca, &mut cb).await;
        exec(&shared_a(), &[format!("INSERT INTO `{db}`.t VALUES (1, 1, 'x'), (2, 2, 'x'), (3, 3, 'x')")]).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let config = two_way(dir.path(), &shared_a(), &shared_b(), &db, policy);
        let engine = start_both(&config).await;
        wait_caught_up(&config, Duration::from_secs(60), Some(&engine)).await;
        engine.stop();
        while !engine.finished() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        race(&db).await;
        let (before_a, before_b) = (table_text(&shared_a(), &db).await, table_text(&shared_b(), &db).await);
        let engine = start_both(&config).await;
        wait_caught_up(&config, Duration::from_secs(60), Some(&engine)).await;
        engine.stop();

        let (a, b) = (table_text(&shared_a(), &db).await, table_text(&shared_b(), &db).await);
        match expected {
            Some(want) => {
                let want: Vec<Vec<String>> =
                    want.iter().map(|(i, v, n)| vec![i.to_string(), v.to_string(), n.to_string()]).collect();
                assert_eq!(a, want, "{policy}: dc-a");
                assert_eq!(b, want, "{policy}: dc-b");
                assert_same_table(&db, "t").await;
            }
            None => {
                assert_eq!(a, before_a, "log-only changed dc-a");
                assert_eq!(b, before_b, "log-only changed dc-b");
            }
        }
        // Every raced key is in the conflict log, on both sides, with the loser's row.
        for url in [shared_a(), shared_b()] {
            let keys = rows(
                &url,
                &format!(
                    "SELECT GROUP_CONCAT(DISTINCT pk ORDER BY pk) FROM ferry.ferry_conflict WHERE task = '{}' AND policy = '{policy}'",
                    config.tasks[0].name
                ),
            )
            .await;
            assert_eq!(keys, vec![vec!["(1),(2),(5)".to_string()]], "{policy}: conflicts recorded at {url}");
        }
        // The same log as the API and the console read it, through the connector contract.
        for ep in &config.endpoints {
            let log = ferry::connector::registry::conflicts(ep, Some(&config.tasks[0].name), 100)
                .await
                .expect("conflict log")
                .expect("MySQL keeps a conflict log");
            let mut keys: Vec<String> = log.iter().filter(|c| c.policy == policy).map(|c| c.key.clone()).collect();
            keys.sort();
            keys.dedup();
            assert_eq!(keys, ["(1)", "(2)", "(5)"], "{policy}: conflicts served for {}", ep.name);
            // With both row versions as logged, for the console's side-by-side view.
            assert!(
                log.iter().any(|c| c.incoming_row.as_deref().is_some_and(|r| r.starts_with('{')) && c.incoming_ts > 0),
                "{policy}: row versions served for {}: {log:?}",
                ep.name
            );
        }
    }
}

fn sysbench(port: u16, db: &str, action: &str, extra: &[&str]) -> Command {
    let mut c = Command::new("sysbench");
    c.args([
        "oltp_write_only",
        "--db-driver=mysql",
        "--mysql-host=127.0.0.1",
        &format!("--mysql-port={port}"),
        "--mysql-user=ferry",
        "--mysql-password=ferry",
        &format!("--mysql-db={db}"),
        "--tables=2",
        "--table-size=2000",
    ])
    .args(extra)
    .arg(action)
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    c
}

fn port_of(url: &str) -> u16 {
    mysql_async::Opts::from_url(url).expect("url").tcp_port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn both_sides_identical_after_overlapping_load_and_sigkills() {
    let ok = Command::new("sysbench").arg("--version").output().is_ok_and(|o| o.status.success());
    assert!(ok, "sysbench is missing: install it with `apt-get install -y sysbench` (scripts/test does it)");
    let (mut ca, mut cb) = (Cleanup::new(&shared_a()), Cleanup::new(&shared_b()));
    let db = database(&shared_a(), "tw_load", &mut ca).await;
    cb.push(format!("DROP DATABASE IF EXISTS `{db}`"));
    admin(&shared_b(), &[format!("CREATE DATABASE IF NOT EXISTS `{db}`")]).await;
    let out = sysbench(port_of(&shared_a()), &db, "prepare", &[]).output().expect("sysbench prepare");
    assert!(out.status.success(), "sysbench prepare: {}", String::from_utf8_lossy(&out.stderr));

    let dir = tempfile::tempdir().expect("tempdir");
    let config = two_way(dir.path(), &shared_a(), &shared_b(), &db, "last-writer-wins");
    let file = dir.path().join("ferry.toml");
    let log = dir.path().join("ferry.log");
    // The snapshot first, so b has the tables its writers need.
    let mut ferry = FerryRun::start(&file, &log);
    wait_caught_up_logged(&config, Duration::from_secs(120), &log).await;
    ferry.kill();

    let run = ["--threads=2", "--time=20", "--rate=60", "--rand-type=uniform"];
    let mut load_a = sysbench(port_of(&shared_a()), &db, "run", &run).spawn().expect("sysbench run on a");
    let mut load_b = sysbench(port_of(&shared_b()), &db, "run", &run).spawn().expect("sysbench run on b");
    let mut rng = fastrand::Rng::with_seed(11);
    for round in 0..5 {
        let mut ferry = FerryRun::start(&file, &log);
        if round == 2 {
            // A schema change on a, in the middle of the load on both sides.
            exec(&shared_a(), &[format!("ALTER TABLE `{db}`.sbtest1 ADD COLUMN extra INT NULL")]).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.u64(800..3500))).await;
        ferry.kill();
    }
    let mut ferry = FerryRun::start(&file, &log);
    for load in [&mut load_a, &mut load_b] {
        let status = tokio::task::spawn_blocking({
            let mut child = std::mem::replace(load, Command::new("true").spawn().expect("true"));
            move || child.wait()
        })
        .await
        .expect("join")
        .expect("sysbench");
        assert!(status.success(), "sysbench run failed");
    }
    wait_caught_up_logged(&config, Duration::from_secs(120), &log).await;
    // Once more: what b->a applied last may have moved a's head.
    wait_caught_up_logged(&config, Duration::from_secs(120), &log).await;
    assert_eq!(ferry.terminate(), Some(0), "ferry run did not stop cleanly; log:\n{}", tail(&log));
    let columns = |url: String| {
        let db = db.clone();
        async move {
            rows(&url, &format!("SELECT GROUP_CONCAT(column_name ORDER BY ordinal_position) FROM information_schema.columns WHERE table_schema = '{db}' AND table_name = 'sbtest1'")).await
        }
    };
    let (ca_cols, cb_cols) = (columns(shared_a()).await, columns(shared_b()).await);
    assert_eq!(ca_cols, vec![vec!["id,k,c,pad,extra".to_string()]], "the schema change is on a");
    assert_eq!(ca_cols, cb_cols, "the schema change reached b");
    for t in ["sbtest1", "sbtest2"] {
        let report = differences(&db, t, &config.tasks[0].name).await;
        assert!(report.is_empty(), "{db}.{t} differs between dc-a and dc-b:\n{report}\nlog:\n{}", tail(&log));
        assert_same_table(&db, t).await;
    }
    // Both sides agree on every row's version too (else later races would be judged
    // differently on each side).
    for t in ["sbtest1", "sbtest2"] {
        let vt = ferry::connector::mysql::versions::table_for(&ferry::model::TableName {
            schema: Some(db.clone()),
            name: t.to_string(),
        });
        let sql = format!("SELECT id, ferry_site, ferry_ts, ferry_deleted FROM ferry.`{vt}` ORDER BY id");
        let (va, vb) = (rows(&shared_a(), &sql).await, rows(&shared_b(), &sql).await);
        assert!(!va.is_empty(), "no row versions kept for {t}");
        let differ: Vec<(&Vec<String>, &Vec<String>)> = va.iter().zip(&vb).filter(|(x, y)| x != y).take(5).collect();
        assert!(
            va.len() == vb.len() && differ.is_empty(),
            "row versions of {t} differ ({} vs {}): {differ:?}",
            va.len(),
            vb.len()
        );
    }
    let conflicts = rows(
        &shared_b(),
        &format!("SELECT COUNT(*) FROM ferry.ferry_conflict WHERE task = '{}'", config.tasks[0].name),
    )
    .await;
    let n: u64 = conflicts[0][0].parse().expect("count");
    assert!(n > 0, "writers on both sides over 4,000 keys raced, yet no conflict was recorded");
}

/// The rows of a sysbench table that differ between the sides, each with its row
/// versions and conflict log entries on both sides (empty when none differ).
async fn differences(db: &str, table: &str, task: &str) -> String {
    let all = |url: String| async move {
        rows(
            &url,
            &format!("SELECT id, CONCAT_WS('|', k, LEFT(c, 12), LEFT(pad, 12)) FROM `{db}`.`{table}` ORDER BY id"),
        )
        .await
        .into_iter()
        .map(|r| (r[0].clone(), r[1].clone()))
        .collect::<std::collections::BTreeMap<_, _>>()
    };
    let (a, b) = (all(shared_a()).await, all(shared_b()).await);
    let ids: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    let mut out = String::new();
    let vt = ferry::connector::mysql::versions::table_for(&ferry::model::TableName {
        schema: Some(db.to_string()),
        name: table.to_string(),
    });
    for id in ids.into_iter().filter(|id| a.get(*id) != b.get(*id)).take(8) {
        out.push_str(&format!("id {id}: a {:?} b {:?}\n", a.get(id), b.get(id)));
        for (side, url) in [("a", shared_a()), ("b", shared_b())] {
            let v =
                rows(&url, &format!("SELECT ferry_site, ferry_ts, ferry_deleted FROM ferry.`{vt}` WHERE id = {id}"))
                    .await;
            let c = rows(
                &url,
                &format!(
                    "SELECT winner, incoming_site, incoming_ts, local_site, local_ts FROM ferry.ferry_conflict \
                     WHERE task = '{task}' AND tbl LIKE '%{table}' AND pk = '({id})' ORDER BY id"
                ),
            )
            .await;
            out.push_str(&format!("  {side}: version {v:?} conflicts {c:?}\n"));
        }
    }
    out
}
