//! PostgreSQL one-way against the testbed's real clusters: every type through the
//! snapshot and through the pgoutput stream, value by value; SIGKILL under a pgbench
//! load; a source restarted mid-stream; sources ferry must refuse, each with its fix.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use ferry::config::Config;
use ferry::connector::postgres::{PgEndpoint, schema::describe, source::rows_after};
use ferry::connector::registry as probe;
use ferry::engine::task::prepare_target;
use ferry::engine::{Engine, plan_task};
use ferry::model::{Row, SiteId, TableName, same_row};
use tokio_util::sync::CancellationToken;

use crate::support::FerryRun;
use crate::support::postgres::{
    Cleanup, PrivatePg, connect, database, exec, schema, shared_a, shared_b, table_text, task_file, with_db, with_user,
};

/// A table holding every PostgreSQL type ferry carries.
pub(crate) const ALL_TYPES: &str = "CREATE TABLE {t} (
  id int PRIMARY KEY, sm smallint, i int, bi bigint, n numeric(30,10), nu numeric, r real, d double precision,
  b boolean, c char(5), vc varchar(20), tx text, by bytea, ts timestamptz, tsn timestamp, dt date, tm time,
  j json, jb jsonb, u uuid, ia int[], ta text[], iv interval, mood {mood}
)";

/// Rows covering edges of every type (snapshot and stream both get them).
pub(crate) fn rows_sql(t: &str, base: i64) -> Vec<String> {
    vec![
        format!(
            "INSERT INTO {t} VALUES ({base}, -32768, -2147483648, -9223372036854775808, -12345678901234567890.0123456789, 'NaN', \
             3.4028235e38, -0.0, true, 'pad', 'emoji 😀 ünï', E'tab\\there ''q'' \\\\ back', '\\x00ff10', \
             '1970-01-01 00:00:00.000001+00', '2000-02-29 23:59:59.999999', '0001-01-01', '23:59:59.999999', \
             '{{\"b\": 1, \"a\": [1, 2.50]}}', '{{\"b\": 1, \"a\": \"\\u00e9\"}}', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', \
             '{{1,NULL,3}}', '{{\"a b\",\"e\\\"f\",NULL,\"NULL\"}}', '1 day 02:03:04', 'happy')"
        ),
        format!(
            "INSERT INTO {t} VALUES ({}, 32767, 2147483647, 9223372036854775807, 0.0000000001, 1e-30, 1.17549435e-38, \
             1.7976931348623157e308, false, '', '', '', '\\x', '9999-12-31 23:59:59.999999+00', '1999-12-31 00:00:00', \
             '9999-12-31', '00:00:00', '[]', '{{}}', '00000000-0000-0000-0000-000000000000', '{{}}', '{{}}', '-1 mons', 'sad')",
            base + 1
        ),
        format!("INSERT INTO {t} (id) VALUES ({})", base + 2),
        format!(
            "INSERT INTO {t} VALUES ({}, 1, 1, 1, 1.5, 0.1, 0.1, 0.1, true, 'x', 'y', 'z', '\\xff', '2024-02-29 12:34:56.789012+05:30', \
             '2024-02-29 12:34:56.789012', '2024-02-29', '12:34:56.789012', '1', '1', '6ba7b810-9dad-11d1-80b4-00c04fd430c8', \
             '{{-1}}', '{{x}}', '00:00:00.000001', 'ok')",
            base + 3
        ),
    ]
}

/// Prepares the target and starts the config's first task in this process.
pub(crate) async fn start(config: &Config) -> Engine {
    let specs = plan_task(config, &config.tasks[0], &[]);
    prepare_target(&specs[0]).await.expect("prepare");
    Engine::start(specs, CancellationToken::new())
}

pub(crate) use crate::support::caught_up::wait_caught_up;

/// ferry's own reading of a table (values as the engine carries them).
pub(crate) async fn all_rows(url: &str, table: &TableName) -> Vec<Row> {
    let ep = PgEndpoint::new("t", SiteId::new("t"), url).expect("url");
    let mut conn = ep.connect().await.expect("connect");
    let schema = describe(&ep, &mut conn, table).await.expect("describe").expect("table exists");
    rows_after(&ep, &mut conn, &schema, None, 1_000_000).await.expect("rows")
}

/// Both sides hold the same rows: PostgreSQL's own text of each row, and ferry's values.
pub(crate) async fn assert_same_table(url_a: &str, url_b: &str, table: &TableName) {
    let full = format!("\"{}\".\"{}\"", table.schema.as_deref().unwrap_or("public"), table.name);
    let (ta, tb) = (table_text(url_a, &full, "1").await, table_text(url_b, &full, "1").await);
    assert!(!ta.is_empty(), "{full} is empty on the source");
    assert_eq!(ta, tb, "{full} differs (row text)");
    let (ra, rb) = (all_rows(url_a, table).await, all_rows(url_b, table).await);
    assert_eq!(ra.len(), rb.len(), "{full}: row counts differ");
    for (x, y) in ra.iter().zip(&rb) {
        assert!(same_row(Some(x), Some(y)), "{full}: rows differ:\n  a {x:?}\n  b {y:?}");
    }
}

/// Schema `s` of the test's own on `a` (and dropped on `b` at the end) with the enum
/// type on both (ferry creates tables, not types) and table `"s".all_types` holding
/// [`rows_sql`]'s first rows: `(s, "s".all_types)`.
pub(crate) async fn all_types_source(
    a: &str,
    b: &str,
    prefix: &str,
    cleanup_a: &mut Cleanup,
    cleanup_b: &mut Cleanup,
) -> (String, String) {
    let s = schema(a, prefix, cleanup_a).await;
    cleanup_b.push(format!("DROP SCHEMA IF EXISTS \"{s}\" CASCADE"));
    for url in [a, b] {
        exec(
            url,
            &format!("CREATE SCHEMA IF NOT EXISTS \"{s}\"; CREATE TYPE \"{s}\".mood AS ENUM ('happy', 'sad', 'ok')"),
        )
        .await;
    }
    let t = format!("\"{s}\".all_types");
    exec(a, &ALL_TYPES.replace("{t}", &t).replace("{mood}", &format!("\"{s}\".mood"))).await;
    for sql in rows_sql(&t, 1) {
        exec(a, &sql).await;
    }
    (s, t)
}

/// What the stream must carry of table `t` on `a`: inserts, updates of every column, a
/// key change, deletes, and an update that leaves a large (TOASTed) value unchanged.
pub(crate) async fn write_every_change(a: &str, t: &str) {
    for sql in rows_sql(t, 100) {
        exec(a, &sql).await;
    }
    exec(a, &format!("UPDATE {t} SET tx = repeat('big ', 5000) WHERE id = 1")).await;
    exec(a, &format!(
        "UPDATE {t} SET sm = sm / 2, n = -n, r = 1.5, d = 'Infinity', vc = vc || ' ✓', by = '\\x00', ts = ts + interval '1 us', \
         jb = '{{\"k\": [true, null]}}', ia = '{{7}}', mood = 'sad' WHERE id IN (1, 100, 103)"
    ))
    .await;
    exec(a, &format!("UPDATE {t} SET id = id + 1000 WHERE id = 101")).await;
    exec(a, &format!("DELETE FROM {t} WHERE id IN (2, 102)")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_every_type_round_trips_through_snapshot_and_stream() {
    let (a, b) = (shared_a(), shared_b());
    let mut cleanup_a = Cleanup::new(&a);
    let mut cleanup_b = Cleanup::new(&b);
    let (s, t) = all_types_source(&a, &b, "pgfid", &mut cleanup_a, &mut cleanup_b).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (file, task) = task_file(dir.path(), &a, &b, "one-way", &[&format!("{s}.*")], "");
    cleanup_a.task(&task);
    let config = Config::load(&file).expect("config");
    let engine = start(&config).await;
    wait_caught_up(&config, Duration::from_secs(60), Some(&engine)).await;
    let name = TableName { schema: Some(s.clone()), name: "all_types".into() };
    assert_same_table(&a, &b, &name).await;

    write_every_change(&a, &t).await;
    wait_caught_up(&config, Duration::from_secs(60), Some(&engine)).await;
    engine.stop();
    assert!(engine.join().await.is_empty(), "the direction failed");
    assert_same_table(&a, &b, &name).await;
    let big = crate::support::postgres::rows(&b, &format!("SELECT length(tx)::text FROM {t} WHERE id = 1")).await;
    assert_eq!(big[0][0].as_deref(), Some("20000"), "the unchanged TOAST value was lost");
}

pub(crate) use crate::mysql_oneway::tail;

fn pgbench(url: &str, args: &[&str]) -> Command {
    let mut c = Command::new("pgbench");
    c.args(args).arg(url).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped());
    c
}

/// `pgbench -i` at `scale` (100,000 accounts per unit) into the database of `url`.
fn pgbench_init(url: &str, scale: u32) {
    let scale = scale.to_string();
    let out = pgbench(url, &["-i", "-s", &scale, "-q"]).output().expect("pgbench -i (install postgresql-client)");
    assert!(out.status.success(), "pgbench -i: {}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_survives_sigkill_during_snapshot_and_stream_under_pgbench() {
    let (a, b) = (shared_a(), shared_b());
    let mut cleanup_a = Cleanup::new(&a);
    let mut cleanup_b = Cleanup::new(&b);
    let db = database(&a, "pgcrash", &mut cleanup_a).await;
    cleanup_b.push(format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"));
    exec(&b, &format!("CREATE DATABASE \"{db}\"")).await;
    let (ua, ub) = (with_db(&a, &db), with_db(&b, &db));
    pgbench_init(&ua, 3);
    let dir = tempfile::tempdir().expect("tempdir");
    // pgbench_history has no key: it is left out (a table without key is refused).
    let tables = ["public.pgbench_accounts", "public.pgbench_branches", "public.pgbench_tellers"];
    // Throttled so the 300,000 seeded rows take about 3 s of copying whatever the
    // machine: the COPY snapshot, spread over sessions, could otherwise finish before
    // the first kill.
    let (file, task) = task_file(dir.path(), &ua, &ub, "one-way", &tables, "max_rows_per_sec = 100000");
    // The slot lives in the test's database: dropped before the database goes.
    let mut cleanup_slots = Cleanup::new(&a);
    cleanup_slots.task(&task);
    let config = Config::load(&file).expect("config");
    let log = dir.path().join("ferry.log");
    let mut load = pgbench(&ua, &["-c", "2", "-T", "20", "-R", "300", "-n"]).spawn().expect("pgbench run");

    let mut rng = fastrand::Rng::with_seed(5);
    let mut mid_snapshot = 0;
    for round in 0..6 {
        let mut ferry = FerryRun::start(&file, &log);
        // The first kill comes while the throttled snapshot copies.
        let ms = if round == 0 {
            rng.u64(300..900)
        } else if round < 3 {
            rng.u64(2500..4500)
        } else {
            rng.u64(1500..3500)
        };
        tokio::time::sleep(Duration::from_millis(ms)).await;
        ferry.kill();
        let progress = crate::support::postgres::rows_once_created(
            &ub,
            &format!(
                "SELECT coalesce(string_agg(progress, ','), '') FROM ferry.ferry_checkpoint WHERE task = '{task}'"
            ),
        )
        .await;
        let p: String = progress.concat().into_iter().flatten().collect();
        eprintln!("round {round}: killed after {ms} ms, progress {p}");
        if p.contains("copying") || p.contains("pending") {
            mid_snapshot += 1;
        }
    }
    assert!(mid_snapshot > 0, "no kill landed during the snapshot; the test did not exercise snapshot resume");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        text.matches("copying through an exported snapshot").count() >= 2,
        "the copies did not go through an exported snapshot (COPY); log:\n{}",
        tail(&log)
    );
    let mut ferry = FerryRun::start(&file, &log);
    let status = tokio::task::spawn_blocking(move || load.wait()).await.expect("join").expect("pgbench");
    assert!(status.success(), "pgbench run failed");
    wait_caught_up(&config, Duration::from_secs(120), None).await;
    assert_eq!(ferry.terminate(), Some(0), "ferry run did not stop cleanly; log:\n{}", tail(&log));
    for t in tables {
        let (sa, sb) = (
            crate::support::postgres::rows(
                &ua,
                &format!("SELECT count(*)::text, md5(string_agg(t::text, '|' ORDER BY t::text))::text FROM {t} t"),
            )
            .await,
            crate::support::postgres::rows(
                &ub,
                &format!("SELECT count(*)::text, md5(string_agg(t::text, '|' ORDER BY t::text))::text FROM {t} t"),
            )
            .await,
        );
        assert_eq!(sa, sb, "{t} differs after crashes; log:\n{}", tail(&log));
    }
    drop(cleanup_slots);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_reconnects_after_the_source_restarts_and_loses_nothing() {
    let src = tokio::task::spawn_blocking(|| PrivatePg::start("")).await.expect("cluster");
    let b = shared_b();
    let mut cleanup_b = Cleanup::new(&b);
    let s = crate::support::mariadb::unique("pgrestart");
    cleanup_b.push(format!("DROP SCHEMA IF EXISTS \"{s}\" CASCADE"));
    let a = src.url();
    exec(&a, &format!("CREATE SCHEMA \"{s}\"; CREATE TABLE \"{s}\".t (id int PRIMARY KEY, v text); INSERT INTO \"{s}\".t SELECT g, 'v' || g FROM generate_series(1, 100) g")).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (file, _task) = task_file(dir.path(), &a, &b, "one-way", &[&format!("{s}.*")], "");
    let config = Config::load(&file).expect("config");
    let engine = start(&config).await;
    wait_caught_up(&config, Duration::from_secs(60), Some(&engine)).await;
    exec(&a, &format!("INSERT INTO \"{s}\".t SELECT g, 'w' || g FROM generate_series(101, 200) g")).await;
    // A fast shutdown waits for every walsender's client to confirm the WAL end: ferry
    // must confirm at once, never hold up the DBA's restart.
    let began = std::time::Instant::now();
    let src = tokio::task::spawn_blocking(move || {
        src.restart();
        src
    })
    .await
    .expect("restart");
    assert!(began.elapsed() < Duration::from_secs(20), "the restart waited {:?} for ferry", began.elapsed());
    exec(&a, &format!("INSERT INTO \"{s}\".t SELECT g, 'x' || g FROM generate_series(201, 300) g; UPDATE \"{s}\".t SET v = v || '!' WHERE id % 7 = 0")).await;
    wait_caught_up(&config, Duration::from_secs(90), Some(&engine)).await;
    engine.stop();
    assert!(engine.join().await.is_empty(), "the direction failed");
    assert_same_table(&a, &b, &TableName { schema: Some(s.clone()), name: "t".into() }).await;
    drop(src);
}

/// `ferry run` fails at once with `needle` in its error, and writes nothing to the target.
async fn refused(file: &Path, needle: &str, target: &str, probe_sql: &str) {
    let out =
        crate::support::ferry_within(&["run", "--config", file.to_str().expect("utf-8")], Duration::from_secs(60))
            .await;
    assert_eq!(out.code, Some(2), "refused as a setup problem (exit 2), not run nor crashed: {}", out.all());
    assert!(out.all().contains(needle), "expected {needle:?} in:\n{}", out.all());
    let found = crate::support::postgres::rows(target, probe_sql).await;
    assert_eq!(found[0][0].as_deref(), Some("0"), "something was written to the target: {}", out.all());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_refuses_bad_sources_with_their_fix_and_writes_nothing() {
    let (a, b) = (shared_a(), shared_b());
    let mut cleanup_a = Cleanup::new(&a);
    let mut cleanup_b = Cleanup::new(&b);
    let s = schema(&a, "pgbad", &mut cleanup_a).await;
    cleanup_b.push(format!("DROP SCHEMA IF EXISTS \"{s}\" CASCADE"));
    let written = format!("SELECT count(*)::text FROM pg_tables WHERE schemaname = '{s}'");
    let dir = tempfile::tempdir().expect("tempdir");

    // A table without a key.
    exec(&a, &format!("CREATE TABLE \"{s}\".nokey (v int); INSERT INTO \"{s}\".nokey VALUES (1)")).await;
    let (file, task) = task_file(dir.path(), &a, &b, "one-way", &[&format!("{s}.nokey")], "");
    cleanup_a.task(&task);
    refused(&file, "has no primary key", &b, &written).await;

    // An account without REPLICATION, and one that does not own the table.
    exec(&a, &format!("CREATE TABLE \"{s}\".t (id int PRIMARY KEY); INSERT INTO \"{s}\".t VALUES (1)")).await;
    let user = crate::support::mariadb::unique("norepl");
    cleanup_a.push(format!("DROP OWNED BY \"{user}\"; DROP ROLE IF EXISTS \"{user}\""));
    exec(&a, &format!("CREATE ROLE \"{user}\" LOGIN PASSWORD 'pw'; GRANT ALL ON SCHEMA \"{s}\" TO \"{user}\"; GRANT SELECT ON \"{s}\".t TO \"{user}\"; GRANT CREATE ON DATABASE postgres TO \"{user}\"")).await;
    let ua = with_user(&a, &user, "pw");
    let (file, task) = task_file(dir.path(), &ua, &b, "one-way", &[&format!("{s}.t")], "");
    cleanup_a.task(&task);
    let check = crate::support::mariadb::check(&file).await;
    assert_eq!(check.code, Some(2), "{}", check.all());
    assert!(check.all().contains("REPLICATION"), "{}", check.all());
    assert!(check.all().contains("does not own"), "{}", check.all());
    refused(&file, "no REPLICATION attribute", &b, &written).await;
    exec(&a, &format!("ALTER ROLE \"{user}\" REPLICATION")).await;
    let check = crate::support::mariadb::check(&file).await;
    assert!(!check.all().contains("REPLICATION attribute"), "{}", check.all());
    refused(&file, "does not own", &b, &written).await;

    // wal_level = replica (a private cluster).
    let replica = tokio::task::spawn_blocking(|| PrivatePg::start("-c wal_level=replica")).await.expect("cluster");
    exec(&replica.url(), "CREATE TABLE t (id int PRIMARY KEY)").await;
    let (file, _) = task_file(dir.path(), &replica.url(), &b, "one-way", &["public.t"], "");
    let check = crate::support::mariadb::check(&file).await;
    assert!(check.all().contains("wal_level is \"replica\""), "{}", check.all());
    refused(
        &file,
        "wal_level = logical",
        &b,
        "SELECT count(*)::text FROM pg_tables WHERE schemaname = 'public' AND tablename = 't'",
    )
    .await;
    drop(replica);

    // A slot held by another consumer.
    let (file, task) = task_file(dir.path(), &a, &b, "one-way", &[&format!("{s}.t")], "");
    cleanup_a.task(&task);
    let config = Config::load(&file).expect("config");
    let spec = &plan_task(&config, &config.tasks[0], &[])[0];
    let stream = format!("{}/{}/{}", spec.node_id, spec.id.task, spec.id.direction());
    let (slot, publication) =
        (ferry::connector::postgres::names::slot(&stream), ferry::connector::postgres::names::publication(&stream));
    exec(&a, &format!("CREATE PUBLICATION \"{publication}\" FOR TABLE \"{s}\".t")).await;
    exec(&a, &format!("SELECT pg_create_logical_replication_slot('{slot}', 'pgoutput')")).await;
    let mut other = Command::new("pg_recvlogical")
        .args(["-d", &a, "--slot", &slot, "--start", "-f", "/dev/null", "-o", "proto_version=1", "-o"])
        .arg(format!("publication_names={publication}"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("pg_recvlogical (postgresql-client)");
    tokio::time::sleep(Duration::from_millis(500)).await;
    refused(&file, "used by another consumer", &b, &written).await;
    let _ = other.kill();
    let _ = other.wait();
    let _ = connect(&a).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_verify_finds_differences_in_the_database_and_repairs_them() {
    let (a, b) = (shared_a(), shared_b());
    let mut cleanup_a = Cleanup::new(&a);
    let mut cleanup_b = Cleanup::new(&b);
    let s = schema(&a, "pgver", &mut cleanup_a).await;
    cleanup_b.push(format!("DROP SCHEMA IF EXISTS \"{s}\" CASCADE"));
    let t = format!("\"{s}\".v");
    exec(&a, &format!(
        "CREATE TABLE {t} (id int PRIMARY KEY, n numeric(20,5), by bytea, ts timestamptz, f float8, tx text); \
         INSERT INTO {t} SELECT g, g * 1.5, decode(md5(g::text), 'hex'), '2024-01-01'::timestamptz + g * interval '1 s', g / 7.0, 'r' || g \
         FROM generate_series(1, 3000) g"
    ))
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (file, task) = task_file(dir.path(), &a, &b, "one-way", &[&format!("{s}.*")], "");
    cleanup_a.task(&task);
    let config = Config::load(&file).expect("config");
    let engine = start(&config).await;
    wait_caught_up(&config, Duration::from_secs(60), Some(&engine)).await;
    engine.stop();
    assert!(engine.join().await.is_empty(), "the direction failed");
    let cfg = file.to_str().expect("utf-8");
    let verify = |extra: &'static [&'static str]| {
        let mut args = vec!["verify", "--config", cfg, "--task", &task];
        args.extend_from_slice(extra);
        let args: Vec<String> = args.into_iter().map(str::to_string).collect();
        async move {
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            crate::support::ferry_within(&refs, Duration::from_secs(60)).await
        }
    };
    let clean = verify(&[]).await;
    assert_eq!(clean.code, Some(0), "{}", clean.all());
    // Damage the target: a changed float and bytea, a missing row, an extra row.
    exec(&b, &format!("UPDATE {t} SET f = f + 1e-12, by = '\\x00' WHERE id = 17; DELETE FROM {t} WHERE id = 2500; INSERT INTO {t} (id, tx) VALUES (9000, 'extra')")).await;
    let found = verify(&[]).await;
    assert_eq!(found.code, Some(1), "{}", found.all());
    let repaired = verify(&["--repair"]).await;
    assert!(repaired.code.is_some(), "{}", repaired.all());
    let again = verify(&[]).await;
    assert_eq!(again.code, Some(0), "after the repair: {}\nrepair run: {}", again.all(), repaired.all());
    assert_same_table(&a, &b, &TableName { schema: Some(s.clone()), name: "v".into() }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_freeze_makes_applications_read_only_proves_it_and_restores_exactly() {
    use ferry::connector::endpoint::{Endpoint, EndpointUrl};
    use ferry::connector::registry::FreezeRequest;
    let pg = tokio::task::spawn_blocking(|| PrivatePg::start("")).await.expect("cluster");
    let url = pg.url();
    exec(&url, "CREATE TABLE orders (id int PRIMARY KEY); CREATE ROLE app LOGIN PASSWORD 'app'; GRANT INSERT, SELECT ON orders TO app; \
                CREATE ROLE dba LOGIN PASSWORD 'dba' SUPERUSER; CREATE ROLE ro LOGIN PASSWORD 'ro'; ALTER ROLE ro SET default_transaction_read_only = on").await;
    let app = with_user(&url, "app", "app");
    exec(&app, "INSERT INTO orders VALUES (1)").await;
    let ep = Endpoint {
        name: "a".into(),
        site: SiteId::new("a"),
        url: EndpointUrl::new(url.clone(), "."),
        password: None,
        ssh: Default::default(),
    };
    let how = FreezeRequest {
        method: ferry::model::FreezeMethod::ReadOnly,
        exempt_users: vec!["dba".into()],
        reason: "test".into(),
        watch: Default::default(),
    };
    // An application session open before the freeze is ended by it.
    let mut open = connect(&app).await;
    let out = probe::freeze(&ep, &how).await.expect("freeze");
    assert!(matches!(&out.probe, Ok(Err(m)) if m.contains("read-only")), "probe: {:?}", out.probe);
    assert!(out.count >= 2, "roles frozen and sessions ended: {}", out.count);
    assert!(sqlx::query("SELECT 1").execute(&mut open).await.is_err(), "the open application session survived");
    let refused = sqlx::query("INSERT INTO orders VALUES (2)").execute(&mut connect(&app).await).await;
    assert!(refused.is_err_and(|e| e.to_string().contains("read-only")), "the application still writes");
    exec(&with_user(&url, "dba", "dba"), "INSERT INTO orders VALUES (3)").await;
    exec(&url, "INSERT INTO orders VALUES (4)").await;
    assert!(probe::frozen_since(&ep).await.expect("frozen since").is_some());
    probe::unfreeze(&ep).await.expect("unfreeze");
    exec(&app, "INSERT INTO orders VALUES (5)").await;
    let settings = crate::support::postgres::rows(
        &url,
        "SELECT r.rolname::text, array_to_string(s.setconfig, ',') FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole ORDER BY 1",
    )
    .await;
    assert_eq!(
        settings,
        vec![vec![Some("ro".to_string()), Some("default_transaction_read_only=on".to_string())]],
        "settings not restored exactly"
    );
    assert!(probe::frozen_since(&ep).await.expect("frozen since").is_none());
    // Uninstall leaves nothing of ferry's: its schema and the probe role.
    let removed = probe::uninstall(&ep).await.expect("uninstall");
    assert!(
        removed.iter().any(|r| r.starts_with("schema")) && removed.iter().any(|r| r.contains("ferry_freeze_probe")),
        "{removed:?}"
    );
    assert!(probe::installed(&ep).await.expect("installed").is_empty());
    drop(pg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_a_transaction_bigger_than_a_read_is_applied_whole_in_parts() {
    let (a, b) = (shared_a(), shared_b());
    let mut cleanup_a = Cleanup::new(&a);
    let mut cleanup_b = Cleanup::new(&b);
    let s = schema(&a, "pgbig", &mut cleanup_a).await;
    cleanup_b.push(format!("DROP SCHEMA IF EXISTS \"{s}\" CASCADE"));
    let t = format!("\"{s}\".big");
    exec(&a, &format!("CREATE TABLE {t} (id int PRIMARY KEY, v bigint); INSERT INTO {t} SELECT g, 0 FROM generate_series(1, 70000) g")).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (file, task) = task_file(dir.path(), &a, &b, "one-way", &[&format!("{s}.*")], "");
    cleanup_a.task(&task);
    let config = Config::load(&file).expect("config");
    let engine = start(&config).await;
    wait_caught_up(&config, Duration::from_secs(60), Some(&engine)).await;
    // 70,000 changes in one source transaction: read and applied in parts (20,000
    // each) inside one target transaction, while the lease is renewed beside it.
    exec(&a, &format!("UPDATE {t} SET v = id * 2")).await;
    exec(&a, &format!("UPDATE {t} SET v = v + 1 WHERE id % 3 = 0")).await;
    wait_caught_up(&config, Duration::from_secs(120), Some(&engine)).await;
    engine.stop();
    assert!(engine.join().await.is_empty(), "the direction failed");
    assert_same_table(&a, &b, &TableName { schema: Some(s.clone()), name: "big".into() }).await;
}

/// The target server crashes (`pg_ctl -m immediate`) while ferry catches up a stream
/// backlog, whose full batches commit without waiting for their flush: the source
/// still has everything the crash took back (ferry confirms only flushed positions), so
/// once the server is back the tables end equal.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_a_target_server_crash_while_a_backlog_is_applied_loses_nothing() {
    let a = shared_a();
    let mut cleanup_a = Cleanup::new(&a);
    let db = database(&a, "pgbacklog", &mut cleanup_a).await;
    let ua = with_db(&a, &db);
    pgbench_init(&ua, 1);
    let pg = tokio::task::spawn_blocking(|| PrivatePg::start("")).await.expect("cluster");
    let ub = pg.url();
    let dir = tempfile::tempdir().expect("tempdir");
    let tables = ["public.pgbench_accounts", "public.pgbench_branches", "public.pgbench_tellers"];
    // Throttled so the backlog's 120,000 changes (6 full batches) take about 3 s.
    let (file, task) = task_file(dir.path(), &ua, &ub, "one-way", &tables, "max_rows_per_sec = 40000");
    let mut cleanup_slots = Cleanup::new(&a);
    cleanup_slots.task(&task);
    let config = Config::load(&file).expect("config");
    let log = dir.path().join("ferry.log");

    // Level, then a backlog written while ferry is stopped.
    let mut ferry = FerryRun::start(&file, &log);
    wait_caught_up(&config, Duration::from_secs(60), None).await;
    assert_eq!(ferry.terminate(), Some(0), "ferry run did not stop cleanly; log:\n{}", tail(&log));
    let out = pgbench(&ua, &["-n", "-c", "2", "-t", "20000"]).output().expect("pgbench run");
    assert!(out.status.success(), "pgbench run: {}", String::from_utf8_lossy(&out.stderr));
    let position_sql = format!("SELECT min(position) FROM ferry.ferry_checkpoint WHERE task = '{task}'");
    let before = crate::support::postgres::rows(&ub, &position_sql).await;

    let mut ferry = FerryRun::start(&file, &log);
    let started = std::time::Instant::now();
    loop {
        let now = crate::support::postgres::rows(&ub, &position_sql).await;
        if now != before {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no batch of the backlog was applied; log:\n{}",
            tail(&log)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The crash must come while the backlog is still being applied, or it proves nothing.
    let balance = "SELECT sum(abalance)::text FROM public.pgbench_accounts";
    assert_ne!(
        crate::support::postgres::rows(&ua, balance).await,
        crate::support::postgres::rows(&ub, balance).await,
        "the backlog was applied before the crash; log:\n{}",
        tail(&log)
    );
    let pg = pg.crash().await;

    wait_caught_up(&config, Duration::from_secs(120), None).await;
    assert_eq!(ferry.terminate(), Some(0), "ferry run did not stop cleanly; log:\n{}", tail(&log));
    for t in tables {
        let sum = format!("SELECT count(*)::text, md5(string_agg(t::text, '|' ORDER BY t::text)) FROM {t} t");
        assert_eq!(
            crate::support::postgres::rows(&ua, &sum).await,
            crate::support::postgres::rows(&ub, &sum).await,
            "{t} differs after the target's crash; log:\n{}",
            tail(&log)
        );
    }
    drop(pg);
    drop(cleanup_slots);
}
