//! Cutover on a MariaDB pair (private instances with the binlog on both: the cutover
//! turns read_only on and off) with the real `ferry` binary while an application
//! account writes: its writes during the freeze fail, a transaction open across the
//! freeze cannot commit, after Open the target's writes flow back, a rollback restores
//! the original direction with nothing lost; SIGKILL inside freeze, drain and switch
//! (and a rollback step) resumes to a consistent end.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::Duration;

use mysql_async::prelude::Queryable;

use crate::cutover_sqlite::{assert_ran_to_done, cutover_task, kill_inside_task};
use crate::support::mariadb::{
    Cleanup, Private, admin, connect, ferry, private_cutover_pair, rows, unique, user, with_user,
};
use crate::support::{FerryRun, wait_until};

const AT_A: u8 = 0;
const WAITING: u8 = 1;
const AT_B: u8 = 2;
const LIMIT: Duration = Duration::from_secs(120);

/// A database `orders` table seeded on a, an application account on both servers, a
/// task file with a unique task name; the task synced once and verified clean.
struct Setup {
    _dir: tempfile::TempDir,
    config: std::path::PathBuf,
    task: String,
    db: String,
    app_a: String,
    app_b: String,
    url_a: String,
    url_b: String,
    _cleanup: (Cleanup, Cleanup),
}

async fn setup(pair: &Private) -> Setup {
    setup_with(pair, "").await
}

/// [`setup`] with extra task keys.
async fn setup_with(pair: &Private, extra: &str) -> Setup {
    let dir = tempfile::tempdir().expect("temp folder");
    let db = unique("cut");
    let app = unique("app");
    let mut clean_a = Cleanup::new(&pair.root_a());
    let mut clean_b = Cleanup::new(&pair.root_b());
    clean_a.push(format!("DROP DATABASE IF EXISTS `{db}`"));
    clean_b.push(format!("DROP DATABASE IF EXISTS `{db}`"));
    let mut seed = vec![
        format!("CREATE DATABASE `{db}`"),
        format!(
            "CREATE TABLE `{db}`.orders (id INT PRIMARY KEY, site VARCHAR(8) NOT NULL, n INT NOT NULL) ENGINE=InnoDB"
        ),
    ];
    let values: Vec<String> = (1..=300).map(|i| format!("({i}, 'seed', {i})")).collect();
    seed.push(format!("INSERT INTO `{db}`.orders VALUES {}", values.join(",")));
    admin(&pair.root_a(), &seed).await;
    admin(&pair.root_b(), &[format!("CREATE DATABASE IF NOT EXISTS `{db}`")]).await;
    let grant = format!("SELECT, INSERT, UPDATE, DELETE ON `{db}`.*");
    user(&pair.root_a(), &app, &[&grant], &mut clean_a).await;
    user(&pair.root_b(), &app, &[&grant], &mut clean_b).await;
    let config = crate::support::mariadb::task_file(
        dir.path(),
        &pair.url_a(),
        &pair.url_b(),
        "one-way",
        &[&format!("{db}.*")],
        extra,
    );
    let task = unique("task");
    let text = std::fs::read_to_string(&config).expect("task file");
    std::fs::write(&config, text.replacen("name = \"t\"", &format!("name = \"{task}\""), 1)).expect("write");
    let s = Setup {
        config,
        task,
        app_a: with_user(&pair.url_a(), &app, "pw"),
        app_b: with_user(&pair.url_b(), &app, "pw"),
        url_a: pair.url_a(),
        url_b: pair.url_b(),
        db,
        _dir: dir,
        _cleanup: (clean_a, clean_b),
    };
    s.sync_once().await;
    let cfg = s.config.to_str().expect("utf-8 path");
    let v = ferry(&["verify", "--config", cfg, "--task", &s.task]).await;
    assert_eq!(v.code, Some(0), "the initial verify is clean: {}", v.all());
    s
}

impl Setup {
    async fn dump(&self, url: &str) -> Vec<Vec<String>> {
        let exists = rows(
            url,
            &format!(
                "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{}' AND TABLE_NAME = 'orders'",
                self.db
            ),
        )
        .await;
        if exists[0][0] == "0" {
            return vec![vec!["(no table)".into()]];
        }
        rows(url, &format!("SELECT id, site, n FROM `{}`.orders ORDER BY id", self.db)).await
    }

    /// Runs `ferry run` until b equals a (or a equals b), then stops it.
    async fn sync_once(&self) {
        let log = self.config.with_file_name("run.log");
        let mut run = FerryRun::start(&self.config, &log);
        wait_until(LIMIT, "a and b to hold the same rows", || async {
            self.dump(&self.url_a).await == self.dump(&self.url_b).await
        })
        .await;
        assert_eq!(
            run.terminate(),
            Some(0),
            "ferry run stops cleanly: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    async fn cutover(&self, args: &[&str]) -> crate::support::Outcome {
        cutover_task(&self.config, &self.task, args).await
    }

    async fn assert_nothing_lost(&self, committed: &[i64]) {
        let a = self.dump(&self.url_a).await;
        assert_eq!(a, self.dump(&self.url_b).await, "both sides identical");
        let ids: Vec<i64> = a.iter().map(|r| r[0].parse().expect("id")).collect();
        for id in committed {
            assert!(ids.binary_search(id).is_ok(), "committed row {id} is on both sides");
        }
    }
}

async fn read_only(url: &str) -> bool {
    rows(url, "SELECT @@global.read_only").await[0][0] == "1"
}

/// The application: inserts as its own account where `at` says; a failed write (the
/// freeze refuses it or ends the session) moves it to waiting.
async fn application(
    app_a: String,
    app_b: String,
    db: String,
    at: Arc<AtomicU8>,
    stop: Arc<AtomicBool>,
) -> (Vec<i64>, Vec<String>) {
    let (mut committed, mut refused) = (Vec::new(), Vec::new());
    let mut id = 10_000i64;
    let mut conn: Option<(u8, mysql_async::Conn)> = None;
    while !stop.load(Ordering::Relaxed) {
        let side = at.load(Ordering::Relaxed);
        if side == WAITING {
            conn = None;
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        if conn.as_ref().is_none_or(|(s, _)| *s != side) {
            conn = Some((side, connect(if side == AT_A { &app_a } else { &app_b }).await));
        }
        let Some((_, c)) = conn.as_mut() else { continue };
        let site = if side == AT_A { "a" } else { "b" };
        match c.exec_drop(format!("INSERT INTO `{db}`.orders VALUES (?, ?, ?)"), (id, site, id % 13)).await {
            Ok(()) => committed.push(id),
            Err(e) => {
                refused.push(e.to_string());
                conn = None;
                let _ = at.compare_exchange(side, WAITING, Ordering::Relaxed, Ordering::Relaxed);
            }
        }
        id += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    (committed, refused)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_cutover_under_writes_then_rollback_loses_nothing() {
    let (pair, _globals) = private_cutover_pair().await;
    let s = setup(pair).await;
    let at = Arc::new(AtomicU8::new(AT_A));
    let stop = Arc::new(AtomicBool::new(false));
    let app = tokio::spawn(application(s.app_a.clone(), s.app_b.clone(), s.db.clone(), at.clone(), stop.clone()));
    // An application transaction open across the freeze.
    let mut open = connect(&s.app_a).await;
    open.query_drop("START TRANSACTION").await.expect("begin");
    open.query_drop(format!("INSERT INTO `{}`.orders VALUES (90001, 'open', 1)", s.db)).await.expect("insert");

    let out = s.cutover(&["start", "--yes"]).await;
    assert_ran_to_done(&out);
    assert!(open.query_drop("COMMIT").await.is_err(), "a transaction open across the freeze cannot commit");
    assert!(read_only(&s.url_a).await && !read_only(&s.url_b).await, "a frozen, b open");
    let mut late = connect(&s.app_a).await;
    let refused = late.query_drop(format!("INSERT INTO `{}`.orders VALUES (90002, 'late', 1)", s.db)).await;
    assert!(format!("{refused:?}").contains("read-only") || format!("{refused:?}").contains("1290"), "{refused:?}");
    late.disconnect().await.ok();

    // The application moves to b; `ferry run` follows the stored direction b -> a.
    at.store(AT_B, Ordering::Relaxed);
    let log = s.config.with_file_name("reverse.log");
    let mut run = FerryRun::start(&s.config, &log);
    wait_until(LIMIT, "writes on b to reach a", || async { s.dump(&s.url_a).await.iter().any(|r| r[1] == "b") }).await;
    assert_eq!(run.terminate(), Some(0), "{}", std::fs::read_to_string(&log).unwrap_or_default());

    let out = s.cutover(&["rollback", "--yes"]).await;
    assert_eq!(out.code, Some(0), "rollback: {}", out.all());
    assert!(!read_only(&s.url_a).await && read_only(&s.url_b).await, "a open again, b frozen");
    at.store(AT_A, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let (committed, refused) = app.await.expect("application");
    assert!(!refused.is_empty(), "writes during the freeze failed at the application");
    assert!(!committed.is_empty(), "the application wrote");
    s.sync_once().await;
    s.assert_nothing_lost(&committed).await;
    let ids = s.dump(&s.url_a).await;
    assert!(!ids.iter().any(|r| r[0] == "90001" || r[0] == "90002"), "nothing of the refused writes committed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_cutover_resumes_after_sigkill_in_freeze_drain_switch() {
    let (pair, _globals) = private_cutover_pair().await;
    let s = setup(pair).await;
    let at = Arc::new(AtomicU8::new(AT_A));
    let stop = Arc::new(AtomicBool::new(false));
    let app = tokio::spawn(application(s.app_a.clone(), s.app_b.clone(), s.db.clone(), at.clone(), stop.clone()));

    let plan: [(&str, &[&str], bool); 6] = [
        ("freeze", &["start", "--yes", "--quick-only"], true),
        ("drain", &["next", "--yes"], true),
        ("verify", &["next", "--yes"], false),
        ("switch", &["next", "--yes"], true),
        ("open-target", &["next", "--yes"], false),
        ("rollback-drain", &["rollback", "--yes"], true),
    ];
    for (step, args, kill) in plan {
        if kill {
            kill_inside_task(&s.config, &s.task, args, step).await;
            let status = s.cutover(&["status"]).await;
            assert!(status.stdout.contains(&format!("next step {step}")), "killed inside {step}: {}", status.all());
            let out = s.cutover(&["next", "--yes"]).await;
            assert_eq!(out.code, Some(0), "resuming {step}: {}", out.all());
            assert!(out.stdout.contains(&format!("step {step}: done")), "{}", out.stdout);
        } else {
            let out = s.cutover(args).await;
            assert_eq!(out.code, Some(0), "{step}: {}", out.all());
        }
        if step == "open-target" {
            assert!(read_only(&s.url_a).await && !read_only(&s.url_b).await, "a frozen, b open");
            at.store(AT_B, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    // The rollback goes on after its resumed drain.
    let out = s.cutover(&["rollback", "--yes"]).await;
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(out.stdout.contains("rolled-back"), "{}", out.stdout);
    assert!(!read_only(&s.url_a).await, "a open after the rollback");
    at.store(AT_A, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let (committed, _) = app.await.expect("application");
    s.sync_once().await;
    s.assert_nothing_lost(&committed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_cutover_with_revoke_freeze_takes_and_gives_back_write_grants() {
    let (pair, _globals) = private_cutover_pair().await;
    let s = setup_with(pair, "[task.cutover]\nfreeze = \"revoke\"").await;
    let account = s.app_a.split("//").nth(1).and_then(|r| r.split(':').next()).expect("user").to_string();
    let grants = |url: String| {
        let account = account.clone();
        async move { rows(&url, &format!("SHOW GRANTS FOR '{account}'@'127.0.0.1'")).await }
    };
    let before = grants(pair.root_a()).await;
    let mut old = connect(&s.app_a).await;

    let out = s.cutover(&["start", "--yes"]).await;
    assert_ran_to_done(&out);
    assert!(!read_only(&s.url_a).await, "revoke leaves read_only alone");
    assert!(
        old.query_drop(format!("INSERT INTO `{}`.orders VALUES (80001, 'old', 1)", s.db)).await.is_err(),
        "the session opened before the freeze was ended"
    );
    let mut app = connect(&s.app_a).await;
    let refused = app.query_drop(format!("INSERT INTO `{}`.orders VALUES (80002, 'new', 1)", s.db)).await;
    assert!(format!("{refused:?}").contains("1142") || format!("{refused:?}").contains("denied"), "{refused:?}");
    app.query_drop(format!("SELECT COUNT(*) FROM `{}`.orders", s.db)).await.expect("reads still work");
    app.disconnect().await.ok();
    let revoked = grants(pair.root_a()).await;
    assert!(revoked.iter().all(|g| !g[0].contains("INSERT")), "write grants revoked: {revoked:?}");
    let mut b = connect(&s.app_b).await;
    b.query_drop(format!("INSERT INTO `{}`.orders VALUES (80003, 'b', 1)", s.db)).await.expect("b takes writes");
    b.disconnect().await.ok();

    let out = s.cutover(&["rollback", "--yes"]).await;
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert_eq!(grants(pair.root_a()).await, before, "the rollback gives a's grants back exactly");
    let mut app = connect(&s.app_a).await;
    app.query_drop(format!("INSERT INTO `{}`.orders VALUES (80004, 'a', 1)", s.db))
        .await
        .expect("a takes writes again");
    app.disconnect().await.ok();
    s.sync_once().await;
    s.assert_nothing_lost(&[80003, 80004]).await;
}
