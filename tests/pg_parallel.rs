//! Parallel apply on a PostgreSQL target (`workers` > 1): a one-way task under a load of
//! transactions on shared and disjoint keys, unique-value moves and a parent/child
//! foreign key, with ferry SIGKILLed during apply; and one batch applied over two
//! sessions, each committing its own stream slot, then resumed from the lowest slot.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry::config::Config;
use ferry::connector::postgres::position::Lsn;
use ferry::connector::postgres::schema::describe;
use ferry::connector::postgres::sink::PgSink;
use ferry::connector::postgres::{PgEndpoint, state};
use ferry::connector::{ApplyBatch, DirectionId, Sink};
use ferry::model::{Change, Position, SiteId, TableName, TableSchema, Txn, Value};
use sqlx::Connection;
use sqlx::postgres::PgConnection;

use crate::pg_oneway::{assert_same_table, tail, wait_caught_up};
use crate::support::FerryRun;
use crate::support::batches::{self, update};
use crate::support::mariadb::unique;
use crate::support::postgres::{Cleanup, connect, exec, rows, schema, shared_a, shared_b, task_file};

/// Parents with a unique code and a counter every writer bumps (a shared key); children
/// (ON DELETE CASCADE) with unique tags.
fn tables(s: &str) -> String {
    format!(
        "CREATE TABLE \"{s}\".parent (id int PRIMARY KEY, code text NOT NULL UNIQUE, v int NOT NULL DEFAULT 0);
         CREATE TABLE \"{s}\".child (id int PRIMARY KEY, parent_id int REFERENCES \"{s}\".parent (id) ON DELETE CASCADE,
             tag text UNIQUE, n int NOT NULL DEFAULT 0);"
    )
}

/// Kinds of load transaction, counted when they commit.
const KINDS: [&str; 8] = [
    "bump the shared counter",
    "update a child on its own",
    "swap child tags",
    "move a tag to another child",
    "insert a child",
    "delete a parent",
    "move a child to another parent",
    "insert a parent",
];

/// Runs one random transaction; `Ok(false)` when it found nothing to do.
async fn one_txn(c: &mut PgConnection, s: &str, kind: usize, rng: &mut fastrand::Rng) -> Result<bool, sqlx::Error> {
    let (a, b) = (rng.i32(1..=60), rng.i32(1..=60));
    let (x, y) = (rng.i32(1..=300), rng.i32(1..=300));
    let mut tx = c.begin().await?;
    let q = |sql: String| sqlx::query(sqlx::AssertSqlSafe(sql));
    let done = match kind {
        0 => {
            q(format!("UPDATE \"{s}\".parent SET v = v + 1 WHERE id = 1")).execute(&mut *tx).await?;
            q(format!("UPDATE \"{s}\".child SET n = n + 1 WHERE id = {x}")).execute(&mut *tx).await?.rows_affected()
        }
        1 => q(format!("UPDATE \"{s}\".child SET n = n + 1 WHERE id = {x}")).execute(&mut *tx).await?.rows_affected(),
        2 => {
            if x == y {
                return Ok(false);
            }
            // A swap through a temporary value, as applications do it.
            let set = |id: i32, tag: String| q(format!("UPDATE \"{s}\".child SET tag = {tag} WHERE id = {id}"));
            let sel = format!("SELECT tag FROM \"{s}\".child WHERE id IN ({x}, {y}) ORDER BY id = {x} DESC FOR UPDATE");
            let got: Vec<(Option<String>,)> = sqlx::query_as(sqlx::AssertSqlSafe(sel)).fetch_all(&mut *tx).await?;
            let [(tx_tag,), (ty_tag,)] = got.as_slice() else { return Ok(false) };
            let lit = |t: &Option<String>| t.as_ref().map_or("NULL".to_string(), |t| format!("'{t}'"));
            set(x, format!("'~{x}'")).execute(&mut *tx).await?;
            set(y, lit(tx_tag)).execute(&mut *tx).await?;
            set(x, lit(ty_tag)).execute(&mut *tx).await?.rows_affected()
        }
        3 => {
            // Child x gives its tag up, then child y takes it (in one transaction).
            let sel = format!("SELECT tag FROM \"{s}\".child WHERE id = {x} AND tag IS NOT NULL FOR UPDATE");
            let got: Option<(String,)> = sqlx::query_as(sqlx::AssertSqlSafe(sel)).fetch_optional(&mut *tx).await?;
            let Some((tag,)) = got else { return Ok(false) };
            q(format!("UPDATE \"{s}\".child SET tag = 'm{}' WHERE id = {x}", rng.u32(..100_000)))
                .execute(&mut *tx)
                .await?;
            q(format!("UPDATE \"{s}\".child SET tag = '{tag}' WHERE id = {y}")).execute(&mut *tx).await?.rows_affected()
        }
        4 => {
            let tag = if rng.u8(..4) == 0 { "NULL".to_string() } else { format!("'t{}'", rng.u32(1..5000)) };
            let sql = format!("INSERT INTO \"{s}\".child VALUES ({x}, {a}, {tag}, 0)");
            q(sql).execute(&mut *tx).await?.rows_affected()
        }
        5 if a != 1 => q(format!("DELETE FROM \"{s}\".parent WHERE id = {a}")).execute(&mut *tx).await?.rows_affected(),
        5 => 0,
        6 => {
            q(format!("UPDATE \"{s}\".child SET parent_id = {a}, n = n + 1 WHERE id = {x}")).execute(&mut *tx).await?;
            q(format!("UPDATE \"{s}\".parent SET v = v + 1 WHERE id = {a}")).execute(&mut *tx).await?.rows_affected()
        }
        _ => {
            let sql = format!("INSERT INTO \"{s}\".parent VALUES ({b}, 'p{}', 0)", rng.u32(1..5000));
            q(sql).execute(&mut *tx).await?.rows_affected()
        }
    };
    if done == 0 {
        return Ok(false);
    }
    tx.commit().await?;
    Ok(true)
}

/// `clients` sessions writing random transactions on pg-a for `time`; returns how many
/// of each kind committed. Refusals (duplicates, foreign keys, deadlocks) roll back.
async fn load(url: &str, s: &str, clients: u64, time: Duration, seed: u64) -> [u64; KINDS.len()] {
    let until = Instant::now() + time;
    let runs = (0..clients).map(|n| async move {
        let mut c = connect(url).await;
        let mut rng = fastrand::Rng::with_seed(seed * 100 + n);
        let mut done = [0u64; KINDS.len()];
        while Instant::now() < until {
            let kind = rng.usize(..KINDS.len());
            match one_txn(&mut c, s, kind, &mut rng).await {
                Ok(true) => done[kind] += 1,
                Ok(false) | Err(sqlx::Error::Database(_)) => {}
                Err(e) => panic!("load on pg-a failed: {e}"),
            }
        }
        done
    });
    let mut total = [0u64; KINDS.len()];
    for done in futures_util::future::join_all(runs).await {
        for (t, d) in total.iter_mut().zip(done) {
            *t += d;
        }
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_parallel_apply_survives_sigkill_with_unique_moves_and_foreign_keys() {
    let (a, b) = (shared_a(), shared_b());
    let mut cleanup_a = Cleanup::new(&a);
    let mut cleanup_b = Cleanup::new(&b);
    let s = schema(&a, "pgpar", &mut cleanup_a).await;
    cleanup_b.push(format!("DROP SCHEMA IF EXISTS \"{s}\" CASCADE"));
    exec(&a, &tables(&s)).await;
    // Before-images carry the old unique and referenced values (without them such
    // tables are applied in order, on one session).
    exec(
        &a,
        &format!("ALTER TABLE \"{s}\".parent REPLICA IDENTITY FULL; ALTER TABLE \"{s}\".child REPLICA IDENTITY FULL"),
    )
    .await;
    exec(
        &a,
        &format!(
            "INSERT INTO \"{s}\".parent SELECT g, 'p' || g, 0 FROM generate_series(1, 50) g;
             INSERT INTO \"{s}\".child SELECT g, g % 50 + 1, 't' || g, 0 FROM generate_series(1, 200) g;"
        ),
    )
    .await;
    // The target enforces the same keys (ferry creates tables without foreign keys).
    exec(&b, &format!("CREATE SCHEMA \"{s}\"; {}", tables(&s))).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (file, task) =
        task_file(dir.path(), &a, &b, "one-way", &[&format!("{s}.*")], "workers = 4\nkeep_transactions = true\n");
    cleanup_a.task(&task);
    cleanup_b.push(format!("DELETE FROM ferry.ferry_checkpoint WHERE task = '{task}'"));
    let config = Config::load(&file).expect("config");
    let log = dir.path().join("ferry.log");
    let mut ferry = FerryRun::start(&file, &log);
    wait_caught_up(&config, Duration::from_secs(90), None).await;
    ferry.kill();

    // Load all along; ferry is killed at random moments and started again, so kills land
    // while backlog batches are applied over several sessions.
    let slots_sql = format!(
        "SELECT count(DISTINCT position)::text FROM ferry.ferry_checkpoint WHERE task = '{task}' AND slot LIKE 'stream:%'"
    );
    let kills = async {
        let mut rng = fastrand::Rng::with_seed(11);
        let mut split = 0;
        for _ in 0..6 {
            tokio::time::sleep(Duration::from_millis(rng.u64(300..900))).await;
            let mut ferry = FerryRun::start(&file, &log);
            tokio::time::sleep(Duration::from_millis(rng.u64(800..2000))).await;
            ferry.kill();
            if rows(&b, &slots_sql).await != vec![vec![Some("1".to_string())]] {
                split += 1;
            }
        }
        split
    };
    let (done, split) = tokio::join!(load(&a, &s, 4, Duration::from_secs(14), 3), kills);
    eprintln!("kills that left worker slots at different positions: {split} of 6; committed: {done:?}");
    let mut ferry = FerryRun::start(&file, &log);
    let caught_up =
        tokio::time::timeout(Duration::from_secs(150), wait_caught_up(&config, Duration::from_secs(600), None));
    assert!(caught_up.await.is_ok(), "the target did not catch up within 150 s; log:\n{}", tail(&log));
    assert!(!ferry.exited(), "ferry stopped by itself; log:\n{}", tail(&log));
    assert_eq!(ferry.terminate(), Some(0), "ferry run did not stop cleanly; log:\n{}", tail(&log));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    for line in text.lines().filter(|l| l.contains("WARN") || l.contains("ERROR")).take(20) {
        eprintln!("{line}");
    }
    for (kind, n) in KINDS.iter().zip(done) {
        assert!(n > 0, "no {kind:?} transaction committed; the load did not exercise it");
    }
    for t in ["parent", "child"] {
        assert_same_table(&a, &b, &TableName { schema: Some(s.clone()), name: t.into() }).await;
    }
    let slots = rows(
        &b,
        &format!(
            "SELECT count(*)::text, count(DISTINCT position)::text FROM ferry.ferry_checkpoint \
             WHERE task = '{task}' AND slot LIKE 'stream:%'"
        ),
    )
    .await;
    assert_eq!(
        slots,
        vec![vec![Some("4".to_string()), Some("1".into())]],
        "one stream slot per worker, at one position"
    );
}

fn at(lsn: u64) -> Position {
    Lsn(lsn).to_position()
}

fn batch(txns: Vec<Txn>, end: u64) -> ApplyBatch {
    batches::batch(txns, at(end))
}

/// A sink over `workers` sessions, started on `dir` as the engine starts one.
async fn sink_on(
    ep: &PgEndpoint,
    t: &Arc<TableSchema>,
    dir: &DirectionId,
    workers: usize,
) -> (PgSink, Option<Position>) {
    batches::started(PgSink::open(ep.clone()).await.expect("sink").with_workers(workers), t, dir).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_parallel_batch_commits_a_slot_per_session_and_resumes_from_the_lowest() {
    let b = shared_b();
    let mut cleanup_b = Cleanup::new(&b);
    let s = schema(&b, "pgparres", &mut cleanup_b).await;
    exec(
        &b,
        &format!(
            "CREATE TABLE \"{s}\".u (id int PRIMARY KEY, u text NOT NULL UNIQUE);
             INSERT INTO \"{s}\".u VALUES (1, 'a'), (2, 'b'), (3, 'c'), (4, 'e')"
        ),
    )
    .await;
    let ep = PgEndpoint::new("b", SiteId::new("dc-b"), &b).expect("url");
    let mut conn = ep.connect().await.expect("connect");
    let name = TableName { schema: Some(s.clone()), name: "u".into() };
    let t = Arc::new(describe(&ep, &mut conn, &name).await.expect("describe").expect("table"));
    let (i, v) = (Value::Int, |x: &str| Value::Text(x.into()));
    let txn = |pos: u64, changes: Vec<Change>| Txn {
        origin: SiteId::new("dc-a"),
        commit_ts: 0,
        position: at(pos),
        changes,
        ddl: Vec::new(),
    };
    let dir = DirectionId { task: unique("pgparres"), from: "a".into(), to: "b".into() };
    cleanup_b.push(format!("DELETE FROM ferry.ferry_checkpoint WHERE task = '{}'", dir.task));
    let slot_rows = || {
        let sql = format!(
            "SELECT slot, position, coalesce(progress, '') FROM ferry.ferry_checkpoint WHERE task = '{}' \
             AND slot LIKE 'stream:%' ORDER BY slot",
            dir.task
        );
        let b = b.clone();
        async move { rows(&b, &sql).await }
    };

    // The first commit goes on one session and writes both slots; then rows 3 and 4,
    // independent, go over two sessions, each listing the transaction it committed.
    let (mut sink, position) = sink_on(&ep, &t, &dir, 2).await;
    assert_eq!(position, None);
    sink.apply(&dir, &batch(Vec::new(), 5)).await.expect("first checkpoint");
    let txns = vec![
        txn(40, vec![update(&t, vec![i(3), v("c")], vec![i(3), v("d")])]),
        txn(50, vec![update(&t, vec![i(4), v("e")], vec![i(4), v("f")])]),
    ];
    sink.apply(&dir, &batch(txns, 60)).await.expect("parallel batch");
    let slots = slot_rows().await;
    assert_eq!(slots.len(), 2, "{slots:?}");
    assert!(slots.iter().all(|r| r[1] == Some(at(60).to_string())), "{slots:?}");
    for p in [at(40), at(50)] {
        assert!(
            slots.iter().any(|r| r[2].as_deref().is_some_and(|g| g.contains(&p.to_string()))),
            "a session lists {p}: {slots:?}"
        );
    }

    // The state a crash leaves when session 0 committed the 'v' group of the batch
    // ending at 70 (row 1 takes 'v', gives it up for 'w', row 2 takes 'v') and session
    // 1 (row 3: 'd' -> 'x') did not.
    exec(
        &b,
        &format!(
            "UPDATE \"{s}\".u SET u = CASE id WHEN 1 THEN 'w' WHEN 2 THEN 'v' ELSE u END;
             UPDATE ferry.ferry_checkpoint SET position = '{}', progress = '{{\"applied\":[\"{}\",\"{}\",\"{}\"]}}'
             WHERE task = '{}' AND slot = 'stream:0'",
            at(70),
            at(61),
            at(62),
            at(63),
            dir.task
        ),
    )
    .await;
    let replay = vec![
        txn(61, vec![update(&t, vec![i(1), v("a")], vec![i(1), v("v")])]),
        txn(62, vec![update(&t, vec![i(1), v("v")], vec![i(1), v("w")])]),
        txn(63, vec![update(&t, vec![i(2), v("b")], vec![i(2), v("v")])]),
        txn(64, vec![update(&t, vec![i(3), v("d")], vec![i(3), v("x")])]),
    ];
    let (cp, slots) = state::load_checkpoint_slots(&ep, &mut conn, &dir).await.expect("load").expect("checkpoint");
    assert_eq!(cp.position, Some(at(60)), "the stream resumes from the lowest slot");
    assert_eq!((slots.count, slots.applied.len()), (2, 3), "{slots:?}");
    let (mut sink, position) = sink_on(&ep, &t, &dir, 2).await;
    assert_eq!(position, Some(at(60)));
    sink.apply(&dir, &batch(replay, 70)).await.expect("the resumed batch applies");
    let got = rows(&b, &format!("SELECT id::text, u FROM \"{s}\".u ORDER BY id")).await;
    let want: Vec<Vec<Option<String>>> = [("1", "w"), ("2", "v"), ("3", "x"), ("4", "f")]
        .iter()
        .map(|(a, b)| vec![Some(a.to_string()), Some(b.to_string())])
        .collect();
    assert_eq!(got, want, "the listed transactions were left out, the others applied");
    let (cp, slots) = state::load_checkpoint_slots(&ep, &mut conn, &dir).await.expect("load").expect("checkpoint");
    assert_eq!((cp.position, slots.count, slots.applied.len()), (Some(at(70)), 2, 0), "every slot moved on");

    // Fewer workers next time: the first commit drops the other slots.
    let (mut sink, position) = sink_on(&ep, &t, &dir, 1).await;
    assert_eq!(position, Some(at(70)));
    sink.apply(&dir, &batch(Vec::new(), 80)).await.expect("a batch on one worker");
    let (cp, slots) = state::load_checkpoint_slots(&ep, &mut conn, &dir).await.expect("load").expect("checkpoint");
    assert_eq!((cp.position, slots.count), (Some(at(80)), 1), "one slot for one worker");
    conn.close().await.ok();
}
