//! Two-way convergence: seeded writers on both sides on overlapping keys, the task
//! restarted at random points; afterwards both sides are identical row by row and the
//! conflict log holds every version that was overwritten without being seen.
//!
//! `FERRY_TEST_SEED=N` replays a seed; `FERRY_TEST_KEEP=1` keeps the databases of a run
//! that diverged, for inspection.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ferry::config::Config;
use ferry::connector::sqlite::literal::parse_row;
use ferry::engine::task::prepare_target;
use ferry::engine::{Engine, plan_task};
use ferry::model::{Row, Value, same_row};
use sqlx::sqlite::SqliteConnection;
use tokio_util::sync::CancellationToken;

use crate::support::{app_conn, changelog_head, checkpoint_seq, create_db, dump, task_file, wait_until};

const SCHEMA: &str = "CREATE TABLE kv(k INTEGER PRIMARY KEY, v TEXT, n INTEGER, b BLOB);
                      CREATE TABLE pair(x TEXT NOT NULL, y INTEGER NOT NULL, v REAL, PRIMARY KEY (x, y));";
const KEYS: i64 = 40;

async fn write_some(conn: &mut SqliteConnection, rng: &mut fastrand::Rng, site: &str) -> Result<(), sqlx::Error> {
    sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await?;
    for _ in 0..rng.usize(1..4) {
        let k = rng.i64(1..=KEYS);
        match rng.u8(0..10) {
            0..=3 => {
                sqlx::query("INSERT INTO kv(k, v, n, b) VALUES (?1, ?2, ?3, ?4) ON CONFLICT(k) DO UPDATE SET v = excluded.v, n = excluded.n")
                    .bind(k)
                    .bind(format!("{site}-{}", rng.u32(..)))
                    .bind(rng.i64(..))
                    .bind(vec![rng.u8(..), 0])
                    .execute(&mut *conn)
                    .await?;
            }
            4..=6 => {
                sqlx::query("UPDATE kv SET v = ?1, n = n + 1 WHERE k = ?2")
                    .bind(format!("{site}-u{}", rng.u32(..)))
                    .bind(k)
                    .execute(&mut *conn)
                    .await?;
            }
            7 => {
                sqlx::query("DELETE FROM kv WHERE k = ?1").bind(k).execute(&mut *conn).await?;
            }
            _ => {
                let x = if rng.bool() { "p" } else { "q" };
                sqlx::query(
                    "INSERT INTO pair(x, y, v) VALUES (?1, ?2, ?3) ON CONFLICT(x, y) DO UPDATE SET v = excluded.v",
                )
                .bind(x)
                .bind(k % 10)
                .bind(rng.f64())
                .execute(&mut *conn)
                .await?;
            }
        }
    }
    sqlx::query("COMMIT").execute(&mut *conn).await?;
    Ok(())
}

async fn writer(path: PathBuf, site: &'static str, seed: u64, stop: Arc<AtomicBool>) -> u64 {
    let mut conn = app_conn(&path).await;
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        if write_some(&mut conn, &mut rng, site).await.is_ok() {
            n += 1;
        } else {
            let _ = sqlx::query("ROLLBACK").execute(&mut conn).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.u64(0..4))).await;
    }
    n
}

async fn start_engine(config: &Config) -> Engine {
    let task = &config.tasks[0];
    let specs = plan_task(config, task, &[]);
    for s in &specs {
        prepare_target(s).await.expect("prepare target");
    }
    Engine::start(specs, CancellationToken::new())
}

async fn stop_engine(engine: Engine) {
    engine.stop();
    let errors = engine.join().await;
    assert!(errors.is_empty(), "directions failed: {errors:?}");
}

/// Waits until task `t` has applied, both ways, everything each side's changelog holds now.
async fn catch_up(a: &Path, b: &Path, secs: u64) {
    let (ha, hb) = (changelog_head(a).await, changelog_head(b).await);
    wait_until(Duration::from_secs(secs), "both directions to catch up", || async {
        checkpoint_seq(b, "t", "a->b").await >= ha && checkpoint_seq(a, "t", "b->a").await >= hb
    })
    .await;
}

/// Versions written by applications (after-images of local-origin changes), and every
/// before-image seen anywhere, per table.
async fn history(path: &Path, site: &str) -> (Vec<(String, String)>, Vec<(String, String)>) {
    let mut c = app_conn(path).await;
    let written: Vec<(String, String)> = sqlx::query_as(
        "SELECT tbl, after FROM ferry_changelog WHERE origin = ?1 AND after IS NOT NULL AND tbl <> 'ferry_heartbeat'",
    )
    .bind(site)
    .fetch_all(&mut c)
    .await
    .expect("changelog");
    let befores: Vec<(String, String)> =
        sqlx::query_as("SELECT tbl, before FROM ferry_changelog WHERE before IS NOT NULL AND tbl <> 'ferry_heartbeat'")
            .fetch_all(&mut c)
            .await
            .expect("changelog");
    (written, befores)
}

/// Rows the conflict logs of both sides hold (incoming and local), per table.
async fn logged(path: &Path, columns: &HashMap<String, Vec<String>>) -> Vec<(String, Row)> {
    let mut c = app_conn(path).await;
    let rows: Vec<(String, Option<String>, Option<String>)> =
        sqlx::query_as("SELECT tbl, incoming_row, local_row FROM ferry_conflict")
            .fetch_all(&mut c)
            .await
            .expect("conflicts");
    let mut out = Vec::new();
    for (tbl, inc, loc) in rows {
        for json in [inc, loc].into_iter().flatten() {
            let map: HashMap<String, Value> = serde_json::from_str(&json).expect("conflict row json");
            let row: Row = columns[&tbl].iter().map(|c| map[c].clone()).collect();
            out.push((tbl.clone(), row));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_way_converges_with_restarts_and_logs_every_overwritten_version() {
    converges_under("last-writer-wins", 20261122).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_only_records_conflicts_and_changes_neither_side() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (dir.path().join("a.db"), dir.path().join("b.db"));
    create_db(&a, "CREATE TABLE kv(k INTEGER PRIMARY KEY, v TEXT); INSERT INTO kv VALUES (1, 'base');").await;
    create_db(&b, "CREATE TABLE kv(k INTEGER PRIMARY KEY, v TEXT); INSERT INTO kv VALUES (1, 'base');").await;
    let config =
        Config::load(&task_file(dir.path(), "two-way", "conflict = \"log-only\"\nsnapshot = false")).expect("config");
    // Install capture, then stop, so both sides write the same key while nothing syncs.
    stop_engine(start_engine(&config).await).await;
    let (mut ca, mut cb) = (app_conn(&a).await, app_conn(&b).await);
    sqlx::query("UPDATE kv SET v = 'from a' WHERE k = 1").execute(&mut ca).await.expect("a");
    sqlx::query("UPDATE kv SET v = 'from b' WHERE k = 1").execute(&mut cb).await.expect("b");
    let engine = start_engine(&config).await;
    catch_up(&a, &b, 30).await;
    stop_engine(engine).await;
    assert_eq!(dump(&a, "kv", "k").await, vec!["1,'from a'"], "log-only must leave a's row");
    assert_eq!(dump(&b, "kv", "k").await, vec!["1,'from b'"], "log-only must leave b's row");
    for (side, path) in [("a", &a), ("b", &b)] {
        let mut c = app_conn(path).await;
        let rows: Vec<(String, String, Option<String>, Option<String>)> =
            sqlx::query_as("SELECT policy, winner, incoming_row, local_row FROM ferry_conflict")
                .fetch_all(&mut c)
                .await
                .expect("log");
        assert_eq!(rows.len(), 1, "side {side}: one conflict recorded: {rows:?}");
        assert_eq!((rows[0].0.as_str(), rows[0].1.as_str()), ("log-only", "local"));
        assert!(rows[0].2.is_some() && rows[0].3.is_some(), "both versions recorded: {rows:?}");
    }
}

/// Both sides delete a row while nothing syncs, then a inserts it again: at b that
/// insert meets b's own delete, which a never saw, so both sides must see the race and
/// resolve it the same way (an absent row looks the same whoever deleted it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insert_racing_a_delete_the_source_never_saw_converges_under_every_policy() {
    for (policy, expected) in [
        ("prefer-to", Vec::<&str>::new()),
        ("prefer-from", vec!["1,'again from a'"]),
        ("last-writer-wins", vec!["1,'again from a'"]),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b) = (dir.path().join("a.db"), dir.path().join("b.db"));
        create_db(&a, "CREATE TABLE kv(k INTEGER PRIMARY KEY, v TEXT); INSERT INTO kv VALUES (1, 'base');").await;
        create_db(&b, "CREATE TABLE kv(k INTEGER PRIMARY KEY, v TEXT); INSERT INTO kv VALUES (1, 'base');").await;
        let extra = format!("conflict = \"{policy}\"\nsnapshot = false");
        let config = Config::load(&task_file(dir.path(), "two-way", &extra)).expect("config");
        stop_engine(start_engine(&config).await).await;
        let (mut ca, mut cb) = (app_conn(&a).await, app_conn(&b).await);
        sqlx::query("DELETE FROM kv WHERE k = 1").execute(&mut ca).await.expect("a deletes");
        tokio::time::sleep(Duration::from_millis(5)).await;
        sqlx::query("DELETE FROM kv WHERE k = 1").execute(&mut cb).await.expect("b deletes");
        tokio::time::sleep(Duration::from_millis(5)).await;
        sqlx::query("INSERT INTO kv VALUES (1, 'again from a')").execute(&mut ca).await.expect("a inserts");
        let engine = start_engine(&config).await;
        catch_up(&a, &b, 30).await;
        stop_engine(engine).await;
        assert_eq!(dump(&a, "kv", "k").await, expected, "{policy}: side a");
        assert_eq!(dump(&b, "kv", "k").await, expected, "{policy}: side b");
        for path in [&a, &b] {
            let mut c = app_conn(path).await;
            let n: i64 =
                sqlx::query_scalar("SELECT count(*) FROM ferry_conflict").fetch_one(&mut c).await.expect("log");
            assert_eq!(n, 1, "{policy}: each side records the race once ({path:?})");
        }
    }
}

/// The a->b snapshot read a row on a before b's deletion of it reached a, and its copy
/// lands on b after that deletion: b keeps the deletion (newer than the copy), as a does
/// once the deletion arrives there. Applied blindly, the copy brought the row back on b
/// only (seen in the demo: seeded rows of b left on b alone). A copy newer than the
/// deletion (the key written again on a after it) still wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_row_read_before_a_deletion_reached_its_source_does_not_come_back() {
    use ferry::connector::registry::{self, SinkOptions};
    use ferry::connector::{ApplyBatch, Checkpoint, ConflictRules, DirectionId, SnapshotRows};
    use ferry::model::{Column, ConflictPolicy, SiteId, TableName, TableSchema};

    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (dir.path().join("a.db"), dir.path().join("b.db"));
    let seed = "CREATE TABLE kv(k INTEGER PRIMARY KEY, v TEXT); INSERT INTO kv VALUES (1, 'base'), (2, 'other');";
    create_db(&a, seed).await;
    create_db(&b, seed).await;
    let config = Config::load(&task_file(dir.path(), "two-way", "conflict = \"last-writer-wins\"\nsnapshot = false"))
        .expect("config");
    // Install capture and record both starting positions.
    stop_engine(start_engine(&config).await).await;
    let mut cb = app_conn(&b).await;
    sqlx::query("DELETE FROM kv WHERE k = 1").execute(&mut cb).await.expect("b deletes 1");
    sqlx::query("DELETE FROM kv WHERE k = 2").execute(&mut cb).await.expect("b deletes 2");
    let deleted_at: i64 = sqlx::query_scalar("SELECT max(ts) FROM ferry_changelog WHERE origin = 'dc-b' AND op = 3")
        .fetch_one(&mut cb)
        .await
        .expect("b's deletions");

    // What the a->b snapshot read on a before the deletions arrived there: row 1 as it
    // was before capture (no version), row 2 written on a after b deleted it.
    let t = Arc::new(TableSchema {
        name: TableName::bare("kv"),
        columns: vec![
            Column { name: "k".into(), decl_type: "INTEGER".into(), nullable: false },
            Column { name: "v".into(), decl_type: "TEXT".into(), nullable: true },
        ],
        primary_key: vec![0],
        unique_keys: Vec::new(),
        foreign_keys: Vec::new(),
        create_sql: None,
    });
    let target = config.endpoint("b").expect("endpoint b");
    let opts =
        SinkOptions { workers: 1, two_way_from: Some(SiteId::new("dc-a")), topic: String::new(), index: String::new() };
    let mut sink = registry::open_sink(target, &opts).await.expect("open b");
    sink.prepare().await.expect("prepare");
    sink.ensure_tables(std::slice::from_ref(&t)).await.expect("tables");
    let direction = DirectionId { task: "t".into(), from: "a".into(), to: "b".into() };
    let checkpoint = sink.load_checkpoint(&direction).await.expect("checkpoint").expect("a->b has a checkpoint");
    let rules = ConflictRules {
        policy: ConflictPolicy::LastWriterWins,
        from_site: SiteId::new("dc-a"),
        to_site: SiteId::new("dc-b"),
        local_site: SiteId::new("dc-b"),
        remote_site: SiteId::new("dc-a"),
    };
    let batch = ApplyBatch {
        txns: Vec::new(),
        snapshot: Some(SnapshotRows {
            table: t.clone(),
            rows: vec![
                vec![Value::Int(1), Value::Text("base".into())],
                vec![Value::Int(2), Value::Text("again on a".into())],
            ],
            versions: Some(vec![None, Some((SiteId::new("dc-a"), deleted_at + 1))]),
            native: None,
            last: false,
        }),
        checkpoint: Checkpoint { position: checkpoint.position.clone(), tables: checkpoint.tables.clone() },
        conflicts: Some(rules),
        one_by_one: false,
        commit: true,
        fence: None,
        flush: true,
    };
    sink.apply(&direction, &batch).await.expect("apply the copy");
    drop(sink);
    assert_eq!(
        dump(&b, "kv", "k").await,
        vec!["2,'again on a'"],
        "b keeps its deletion of 1 (the copy is older) and takes the newer row 2"
    );
    let logged: Vec<(String, String)> = sqlx::query_as("SELECT pk, winner FROM ferry_conflict ORDER BY id")
        .fetch_all(&mut cb)
        .await
        .expect("conflict log");
    assert_eq!(logged.len(), 2, "both copies met b's deletions: {logged:?}");
    assert_eq!(logged[0].1, "local", "row 1: b's deletion wins: {logged:?}");
    assert_eq!(logged[1].1, "incoming", "row 2: a's newer row wins: {logged:?}");
}

/// A no-op update on b (setting the values the row has) followed, after it synced, by a
/// real update on a: nothing raced, so no policy may keep b's stale row. a found b's
/// update already in place; the version it records there is what a's update replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_after_a_no_op_update_synced_is_no_conflict_under_every_policy() {
    for policy in ["prefer-to", "prefer-from", "last-writer-wins"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b) = (dir.path().join("a.db"), dir.path().join("b.db"));
        create_db(&a, "CREATE TABLE kv(k INTEGER PRIMARY KEY, v TEXT);").await;
        create_db(&b, "CREATE TABLE kv(k INTEGER PRIMARY KEY, v TEXT);").await;
        let extra = format!("conflict = \"{policy}\"\nsnapshot = false");
        let config = Config::load(&task_file(dir.path(), "two-way", &extra)).expect("config");
        // Install capture and record both checkpoints first: a first start without a
        // snapshot begins at the head, after anything written meanwhile.
        stop_engine(start_engine(&config).await).await;
        let engine = start_engine(&config).await;
        let (mut ca, mut cb) = (app_conn(&a).await, app_conn(&b).await);
        sqlx::query("INSERT INTO kv VALUES (1, 'paid')").execute(&mut ca).await.expect("a inserts");
        catch_up(&a, &b, 30).await;
        sqlx::query("UPDATE kv SET v = 'paid' WHERE k = 1").execute(&mut cb).await.expect("b's no-op update");
        catch_up(&a, &b, 30).await;
        sqlx::query("UPDATE kv SET v = 'shipped' WHERE k = 1").execute(&mut ca).await.expect("a updates");
        catch_up(&a, &b, 30).await;
        stop_engine(engine).await;
        assert_eq!(dump(&a, "kv", "k").await, vec!["1,'shipped'"], "{policy}: side a");
        assert_eq!(dump(&b, "kv", "k").await, vec!["1,'shipped'"], "{policy}: side b");
        for path in [&a, &b] {
            let mut c = app_conn(path).await;
            let n: i64 =
                sqlx::query_scalar("SELECT count(*) FROM ferry_conflict").fetch_one(&mut c).await.expect("log");
            assert_eq!(n, 0, "{policy}: nothing raced, so no conflict ({path:?})");
        }
    }
}

async fn converges_under(policy: &str, default_seed: u64) {
    let seed: u64 = std::env::var("FERRY_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(default_seed);
    let mut rng = fastrand::Rng::with_seed(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (dir.path().join("a.db"), dir.path().join("b.db"));
    // Rows on both sides before the task starts: some equal, some different, some on
    // one side only, so the snapshots race the writers' deletes and updates.
    let mut seed_a = String::from(SCHEMA);
    let mut seed_b = String::from(SCHEMA);
    for k in 1..=KEYS {
        let row = |v: &str| format!("INSERT INTO kv(k, v, n, b) VALUES ({k}, '{v}', {k}, X'00');");
        match k % 4 {
            0 => (seed_a.push_str(&row("seed")), seed_b.push_str(&row("seed"))),
            1 => (seed_a.push_str(&row("seed-a")), seed_b.push_str(&row("seed-b"))),
            2 => (seed_a.push_str(&row("seed-a")), ()),
            _ => ((), seed_b.push_str(&row("seed-b"))),
        };
    }
    create_db(&a, &seed_a).await;
    create_db(&b, &seed_b).await;
    let config = Config::load(&task_file(dir.path(), "two-way", &format!("conflict = \"{policy}\""))).expect("config");

    let mut engine = start_engine(&config).await;
    let stop = Arc::new(AtomicBool::new(false));
    let wa = tokio::spawn(writer(a.clone(), "dc-a", seed + 1, stop.clone()));
    let wb = tokio::spawn(writer(b.clone(), "dc-b", seed + 2, stop.clone()));

    // Restart the task at random points while both sides write.
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(rng.u64(200..900))).await;
        stop_engine(engine).await;
        tokio::time::sleep(Duration::from_millis(rng.u64(0..300))).await;
        engine = start_engine(&config).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let (na, nb) = (wa.await.expect("writer a"), wb.await.expect("writer b"));
    assert!(na > 50 && nb > 50, "writers made too few transactions: {na}, {nb}");

    // Lag 0: each direction has applied everything its source holds.
    catch_up(&a, &b, 60).await;
    stop_engine(engine).await;

    for (table, order) in [("kv", "k"), ("pair", "x, y")] {
        let (ra, rb) = (dump(&a, table, order).await, dump(&b, table, order).await);
        if ra != rb && std::env::var("FERRY_TEST_KEEP").is_ok() {
            panic!("table {table} differs ({policy}, seed {seed}); databases kept in {:?}", dir.keep());
        }
        assert_eq!(ra, rb, "table {table} differs between a and b ({policy}, seed {seed})");
    }

    // Every application version that vanished without being the before-image of a
    // later change (a normal overwrite) must be in a conflict log.
    let columns: HashMap<String, Vec<String>> =
        [("kv".to_string(), vec!["k", "v", "n", "b"]), ("pair".to_string(), vec!["x", "y", "v"])]
            .into_iter()
            .map(|(t, c)| (t, c.into_iter().map(String::from).collect()))
            .collect();
    let (wa_, ba) = history(&a, "dc-a").await;
    let (wb_, bb) = history(&b, "dc-b").await;
    let seen: Vec<(String, Row)> =
        ba.iter().chain(&bb).map(|(t, r)| (t.clone(), parse_row(r).expect("before row"))).collect();
    let mut final_rows: Vec<(String, Row)> = Vec::new();
    for (table, order) in [("kv", "k"), ("pair", "x, y")] {
        for r in dump(&a, table, order).await {
            final_rows.push((table.to_string(), parse_row(&r).expect("final row")));
        }
    }
    let mut logs = logged(&a, &columns).await;
    logs.extend(logged(&b, &columns).await);
    let conflicts = logs.len();
    let contains =
        |set: &[(String, Row)], t: &str, row: &Row| set.iter().any(|(tt, r)| tt == t && same_row(Some(r), Some(row)));
    let mut lost = Vec::new();
    for (t, text) in wa_.iter().chain(&wb_) {
        let row = parse_row(text).expect("written row");
        if contains(&seen, t, &row) || contains(&final_rows, t, &row) {
            continue;
        }
        if !contains(&logs, t, &row) {
            lost.push(format!("{t}: {text}"));
        }
    }
    assert!(conflicts > 0, "overlapping writers produced no conflicts; the test did not exercise resolution");
    assert!(
        lost.is_empty(),
        "{} overwritten versions are missing from the conflict log (seed {seed}): {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prefer_from_converges_with_restarts_and_rows_on_both_sides() {
    converges_under("prefer-from", 7).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prefer_to_converges_with_restarts_and_rows_on_both_sides() {
    converges_under("prefer-to", 8).await;
}
