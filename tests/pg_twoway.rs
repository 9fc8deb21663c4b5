//! PostgreSQL two-way against the testbed's real clusters: changes cross once and never
//! loop (replication origins), writers racing on the same keys on both sides (as
//! application roles, through ferry's triggers) end with both sides identical and the
//! conflicts logged; the same with MariaDB on the other side; and on a private pair, a
//! side frozen for a cutover refuses its applications while ferry keeps applying into
//! it, and uninstall takes ferry's triggers away and gives the tables back their
//! replica identity.

use std::time::{Duration, Instant};

use ferry::config::Config;
use ferry::engine::Engine;
use mysql_async::prelude::Queryable;

use crate::mysql_twoway::{applied, start_both};
use crate::pg_oneway::wait_caught_up;
use crate::support::postgres::{
    Cleanup, PrivatePg, connect, exec, rows, schema, shared_a, shared_b, task_file, with_user,
};

/// A table's content digest: md5 of its rows' text in key order (an independent reading).
async fn digest(url: &str, table: &str) -> String {
    let r =
        rows(url, &format!("SELECT md5(coalesce(string_agg(t::text, ',' ORDER BY id), '')) FROM {table} AS t")).await;
    r[0][0].clone().unwrap_or_default()
}

/// Waits until both directions caught up and `same` holds (what b->a applied last may
/// move a's head, and so on): both sides converged.
async fn converge<F, Fut>(config: &Config, engine: &Engine, limit: Duration, mut same: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        wait_caught_up(config, limit, Some(engine)).await;
        if same().await {
            return;
        }
        assert!(start.elapsed() < limit, "both sides did not converge within {limit:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// An application role (no superuser, no rights on ferry's tables) writing `table`.
async fn app_role(url: &str, role: &str, s: &str, cleanup: &mut Cleanup) -> String {
    exec(
        url,
        &format!(
            "CREATE ROLE {role} LOGIN PASSWORD 'app'; GRANT USAGE ON SCHEMA \"{s}\" TO {role}; \
             GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA \"{s}\" TO {role}"
        ),
    )
    .await;
    cleanup.push(format!("DROP OWNED BY {role}; DROP ROLE IF EXISTS {role}"));
    with_user(url, role, "app")
}

/// Random writes on keys 1..=`keys` for `run`: updates, deletes and inserts.
async fn writer(url: String, table: String, side: &'static str, keys: i64, run: Duration, seed: u64) -> u64 {
    let mut c = connect(&url).await;
    let mut rng = fastrand::Rng::with_seed(seed);
    let end = Instant::now() + run;
    let mut n = 0;
    while Instant::now() < end {
        let id = rng.i64(1..=keys);
        let sql = match rng.u8(0..10) {
            0..=5 => format!("UPDATE {table} SET v = v + 1, note = '{side}{n}' WHERE id = {id}"),
            6 | 7 => format!("INSERT INTO {table} VALUES ({id}, {n}, '{side}') ON CONFLICT (id) DO NOTHING"),
            _ => format!("DELETE FROM {table} WHERE id = {id}"),
        };
        sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut c).await.expect("application write");
        n += 1;
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_two_way_racing_writers_converge_never_loop_and_log_conflicts() {
    let (a, b) = (shared_a(), shared_b());
    let (mut ca, mut cb) = (Cleanup::new(&a), Cleanup::new(&b));
    let s = schema(&a, "pgtw", &mut ca).await;
    cb.push(format!("DROP SCHEMA IF EXISTS \"{s}\" CASCADE"));
    let t = format!("\"{s}\".t");
    exec(&a, &format!("CREATE TABLE {t} (id int PRIMARY KEY, v int NOT NULL, note text)")).await;
    exec(&a, &format!("INSERT INTO {t} SELECT g, 0, 'seed' FROM generate_series(1, 40) g")).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (file, task) =
        task_file(dir.path(), &a, &b, "two-way", &[&format!("{s}.*")], "conflict = \"last-writer-wins\"");
    ca.task(&task);
    cb.task(&task);
    ca.origin(&task, "dc-b", "b->a");
    cb.origin(&task, "dc-a", "a->b");
    let config = Config::load(&file).expect("config");
    let engine = start_both(&config).await;
    wait_caught_up(&config, Duration::from_secs(60), Some(&engine)).await;
    assert_eq!(digest(&a, &t).await, digest(&b, &t).await, "the snapshot made b equal to a");

    // Writes on each side cross once; 300 updates on a are applied on b and none come
    // back (b->a applies only heartbeats, about 10 a second).
    exec(&b, &format!("INSERT INTO {t} VALUES (100, 1, 'from b')")).await;
    let (ab0, ba0) = (applied(&engine, "a->b"), applied(&engine, "b->a"));
    let mut c = connect(&a).await;
    for _ in 0..300 {
        sqlx::query(sqlx::AssertSqlSafe(format!("UPDATE {t} SET v = v + 1 WHERE id = 1")))
            .execute(&mut c)
            .await
            .expect("update");
    }
    converge(&config, &engine, Duration::from_secs(60), || async { digest(&a, &t).await == digest(&b, &t).await })
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    wait_caught_up(&config, Duration::from_secs(60), Some(&engine)).await;
    let (ab, ba) = (applied(&engine, "a->b") - ab0, applied(&engine, "b->a") - ba0);
    assert!(ab >= 300, "a->b applied {ab} changes for 300 updates");
    assert!(ba < 150, "b->a applied {ba} changes while a wrote 300: changes loop back");
    let v = rows(&b, &format!("SELECT v::text FROM {t} WHERE id = 1")).await;
    assert_eq!(v, vec![vec![Some("300".to_string())]]);
    let none = rows(&a, &format!("SELECT count(*)::text FROM ferry.ferry_conflict WHERE task = '{task}'")).await;
    assert_eq!(none, vec![vec![Some("0".to_string())]], "no write raced, so no conflict");

    // Application roles race on the same 40 keys on both sides.
    let role_a = crate::support::mariadb::unique("app");
    let role_b = crate::support::mariadb::unique("app");
    let app_a = app_role(&a, &role_a, &s, &mut ca).await;
    let app_b = app_role(&b, &role_b, &s, &mut cb).await;
    let run = Duration::from_secs(4);
    let wa = tokio::spawn(writer(app_a, t.clone(), "a", 40, run, 1));
    let wb = tokio::spawn(writer(app_b, t.clone(), "b", 40, run, 2));
    let (na, nb) = (wa.await.expect("writer a"), wb.await.expect("writer b"));
    assert!(na > 100 && nb > 100, "the writers wrote ({na}, {nb})");
    converge(&config, &engine, Duration::from_secs(90), || async { digest(&a, &t).await == digest(&b, &t).await })
        .await;
    // Both sides agree on every row's version too (else later races would be judged
    // differently on each side).
    let vt = ferry::connector::postgres::versions::qualified_version(&ferry::model::TableName {
        schema: Some(s.clone()),
        name: "t".into(),
    });
    let versions = format!("SELECT v::text FROM {vt} AS v ORDER BY 1");
    assert_eq!(rows(&a, &versions).await, rows(&b, &versions).await, "row versions differ");
    let logged = |url: String| {
        let task = task.clone();
        async move {
            let r = rows(&url, &format!("SELECT count(*)::text FROM ferry.ferry_conflict WHERE task = '{task}'")).await;
            r[0][0].clone().unwrap_or_default().parse::<u64>().unwrap_or(0)
        }
    };
    let (la, lb) = (logged(a.clone()).await, logged(b.clone()).await);
    assert!(la + lb > 0, "writers raced on 40 keys, yet no conflict was logged");
    let log = ferry::connector::registry::conflicts(&config.endpoints[0], Some(&task), 5).await.expect("log");
    assert_eq!(log.map(|l| l.len() as u64), Some(la.min(5)), "the conflict log is served through the contract");
    engine.stop();
    assert!(engine.join().await.is_empty(), "a direction failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_and_mariadb_two_way_converge_under_racing_writers() {
    let (a, my) = (shared_a(), crate::support::mariadb::shared_a());
    let mut ca = Cleanup::new(&a);
    let s = schema(&a, "pgmytw", &mut ca).await;
    let mut cm = crate::support::mariadb::Cleanup::new(&my);
    cm.push(format!("DROP DATABASE IF EXISTS `{s}`"));
    let t = format!("\"{s}\".t");
    exec(&a, &format!("CREATE TABLE {t} (id int PRIMARY KEY, v int NOT NULL, note varchar(40))")).await;
    exec(&a, &format!("INSERT INTO {t} SELECT g, 0, 'seed' FROM generate_series(1, 30) g")).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (file, task) =
        task_file(dir.path(), &a, &my, "two-way", &[&format!("{s}.*")], "conflict = \"last-writer-wins\"");
    ca.task(&task);
    ca.origin(&task, "dc-b", "b->a");
    let config = Config::load(&file).expect("config");
    let engine = start_both(&config).await;
    wait_caught_up(&config, Duration::from_secs(60), Some(&engine)).await;
    let pg_rows = || async {
        rows(&a, &format!("SELECT x.id::text, x.v::text, coalesce(x.note, '-') FROM {t} AS x ORDER BY x.id"))
            .await
            .into_iter()
            .map(|r| r.into_iter().map(Option::unwrap_or_default).collect::<Vec<String>>())
            .collect::<Vec<_>>()
    };
    let my_rows = || async {
        crate::support::mariadb::rows(&my, &format!("SELECT id, v, COALESCE(note, '-') FROM `{s}`.t ORDER BY id")).await
    };
    assert_eq!(pg_rows().await, my_rows().await, "the snapshot made MariaDB equal to PostgreSQL");

    // 200 updates on MariaDB reach PostgreSQL and do not come back.
    let (ab0, ba0) = (applied(&engine, "a->b"), applied(&engine, "b->a"));
    let mut m = crate::support::mariadb::connect(&my).await;
    for _ in 0..200 {
        m.query_drop(format!("UPDATE `{s}`.t SET v = v + 1 WHERE id = 1")).await.expect("update");
    }
    converge(&config, &engine, Duration::from_secs(60), || async { pg_rows().await == my_rows().await }).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    wait_caught_up(&config, Duration::from_secs(60), Some(&engine)).await;
    let (ab, ba) = (applied(&engine, "a->b") - ab0, applied(&engine, "b->a") - ba0);
    assert!(ba >= 200, "b->a applied {ba} changes for 200 updates");
    assert!(ab < 120, "a->b applied {ab} changes while only MariaDB wrote: changes loop back");

    // Racing writers on the same keys on both engines.
    let pg_writer = tokio::spawn(writer(a.clone(), t.clone(), "p", 30, Duration::from_secs(3), 3));
    let my_writer = tokio::spawn({
        let (my, s) = (my.clone(), s.clone());
        async move {
            let mut c = crate::support::mariadb::connect(&my).await;
            let mut rng = fastrand::Rng::with_seed(4);
            let end = Instant::now() + Duration::from_secs(3);
            let mut n = 0u64;
            while Instant::now() < end {
                let id = rng.i64(1..=30);
                let sql = match rng.u8(0..10) {
                    0..=5 => format!("UPDATE `{s}`.t SET v = v + 1, note = 'm{n}' WHERE id = {id}"),
                    6 | 7 => format!("INSERT IGNORE INTO `{s}`.t VALUES ({id}, {n}, 'm')"),
                    _ => format!("DELETE FROM `{s}`.t WHERE id = {id}"),
                };
                c.query_drop(sql).await.expect("MariaDB write");
                n += 1;
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
            n
        }
    });
    let (np, nm) = (pg_writer.await.expect("pg writer"), my_writer.await.expect("mariadb writer"));
    assert!(np > 50 && nm > 50, "the writers wrote ({np}, {nm})");
    converge(&config, &engine, Duration::from_secs(90), || async { pg_rows().await == my_rows().await }).await;
    let pg_log = rows(&a, &format!("SELECT count(*)::text FROM ferry.ferry_conflict WHERE task = '{task}'")).await;
    let my_log =
        crate::support::mariadb::rows(&my, &format!("SELECT COUNT(*) FROM ferry.ferry_conflict WHERE task = '{task}'"))
            .await;
    let n =
        pg_log[0][0].clone().unwrap_or_default().parse::<u64>().unwrap_or(0) + my_log[0][0].parse::<u64>().unwrap_or(0);
    assert!(n > 0, "writers raced on 30 keys, yet no conflict was logged");
    engine.stop();
    assert!(engine.join().await.is_empty(), "a direction failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_two_way_applies_into_a_frozen_side_and_uninstall_restores_the_tables() {
    use ferry::connector::registry::{self as probe, FreezeRequest};
    let (pa, pb) = tokio::join!(
        tokio::task::spawn_blocking(|| PrivatePg::start("")),
        tokio::task::spawn_blocking(|| PrivatePg::start(""))
    );
    let (pa, pb) = (pa.expect("cluster a"), pb.expect("cluster b"));
    let (a, b) = (pa.url(), pb.url());
    let setup = "CREATE TABLE orders (id int PRIMARY KEY, n int); CREATE ROLE app LOGIN PASSWORD 'app'; \
                 GRANT SELECT, INSERT, UPDATE, DELETE ON orders TO app";
    exec(&a, setup).await;
    exec(&a, "INSERT INTO orders VALUES (1, 1)").await;
    exec(&b, "CREATE ROLE app LOGIN PASSWORD 'app'").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (file, _task) = task_file(dir.path(), &a, &b, "two-way", &["public.orders"], "");
    let config = Config::load(&file).expect("config");
    let engine = start_both(&config).await;
    wait_caught_up(&config, Duration::from_secs(60), Some(&engine)).await;
    exec(&b, "GRANT SELECT, INSERT, UPDATE, DELETE ON orders TO app").await;
    let (app_a, app_b) = (with_user(&a, "app", "app"), with_user(&b, "app", "app"));
    exec(&app_a, "INSERT INTO orders VALUES (2, 2)").await;
    let identity = "SELECT relreplident::text FROM pg_class WHERE oid = 'orders'::regclass";
    assert_eq!(rows(&a, identity).await, vec![vec![Some("f".to_string())]], "two-way reads whole before-images");

    // a frozen: its application is refused, ferry still applies b's writes into it.
    let how = FreezeRequest {
        method: ferry::model::FreezeMethod::ReadOnly,
        exempt_users: Vec::new(),
        reason: "t".into(),
        watch: Default::default(),
    };
    let out = probe::freeze(&config.endpoints[0], &how).await.expect("freeze");
    assert!(matches!(&out.probe, Ok(Err(_))), "the freeze holds: {:?}", out.probe);
    let refused = sqlx::query("INSERT INTO orders VALUES (3, 3)").execute(&mut connect(&app_a).await).await;
    assert!(refused.is_err_and(|e| e.to_string().contains("read-only")), "the application still writes on a");
    exec(&app_b, "INSERT INTO orders VALUES (4, 4); UPDATE orders SET n = 10 WHERE id = 1").await;
    wait_caught_up(&config, Duration::from_secs(60), Some(&engine)).await;
    let all = "SELECT o.id::text, o.n::text FROM orders AS o ORDER BY o.id";
    let want = |ids: &[(i32, i32)]| -> Vec<Vec<Option<String>>> {
        ids.iter().map(|(i, n)| vec![Some(i.to_string()), Some(n.to_string())]).collect()
    };
    assert_eq!(rows(&a, all).await, want(&[(1, 10), (2, 2), (4, 4)]), "b's writes reached the frozen a");
    probe::unfreeze(&config.endpoints[0]).await.expect("unfreeze");
    exec(&app_a, "INSERT INTO orders VALUES (5, 5)").await;
    converge(&config, &engine, Duration::from_secs(60), || async { rows(&a, all).await == rows(&b, all).await }).await;
    engine.stop();
    assert!(engine.join().await.is_empty(), "a direction failed");

    // Uninstall: triggers gone, replica identity back, nothing of ferry's left.
    for ep in &config.endpoints {
        let removed = probe::uninstall(ep).await.expect("uninstall");
        assert!(removed.iter().any(|r| r.starts_with("trigger ferry_version on")), "{removed:?}");
        assert!(probe::installed(ep).await.expect("installed").is_empty());
    }
    assert_eq!(rows(&a, identity).await, vec![vec![Some("d".to_string())]], "replica identity restored");
    let triggers = "SELECT count(*)::text FROM pg_trigger WHERE tgname = 'ferry_version'";
    assert_eq!(rows(&b, triggers).await, vec![vec![Some("0".to_string())]]);
    exec(&app_a, "INSERT INTO orders VALUES (6, 6)").await;
    drop((pa, pb));
}
