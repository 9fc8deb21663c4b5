//! Parallel apply on a MariaDB target (`workers` > 1): tables with unique secondary keys
//! and foreign keys under a load that swaps unique values and moves primary keys, and a
//! resume from the lowest worker slot after some workers committed and others did not.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry::config::Config;
use ferry::connector::mysql::apply::MysqlSink;
use ferry::connector::mysql::schema::describe;
use ferry::connector::mysql::{MysqlEndpoint, state};
use ferry::connector::{ApplyBatch, DirectionId, Sink};
use ferry::model::{Change, Position, SiteId, TableName, TableSchema, Txn, Value};
use mysql_async::Conn;
use mysql_async::prelude::Queryable;

use crate::mysql_oneway::{assert_same_table, start, tail, task_file, wait_caught_up};
use crate::support::FerryRun;
use crate::support::batches::{self, update};
use crate::support::mariadb::{Cleanup, admin, connect, database, rows, shared_a, shared_b, unique};

/// Parents with a unique code; children (ON DELETE CASCADE) and notes (RESTRICT) with
/// unique tags and labels.
fn schema(db: &str) -> Vec<String> {
    vec![
        format!(
            "CREATE TABLE `{db}`.parent (id INT PRIMARY KEY, code VARCHAR(20) NOT NULL, v INT NOT NULL DEFAULT 0, \
             UNIQUE KEY code (code)) ENGINE=InnoDB"
        ),
        format!(
            "CREATE TABLE `{db}`.child (id INT PRIMARY KEY, parent_id INT NULL, tag VARCHAR(20) NULL, \
             n INT NOT NULL DEFAULT 0, UNIQUE KEY tag (tag), \
             FOREIGN KEY (parent_id) REFERENCES `{db}`.parent (id) ON DELETE CASCADE) ENGINE=InnoDB"
        ),
        format!(
            "CREATE TABLE `{db}`.note (id INT PRIMARY KEY, parent_id INT NOT NULL, label VARCHAR(20) NOT NULL, \
             UNIQUE KEY label (label), FOREIGN KEY (parent_id) REFERENCES `{db}`.parent (id)) ENGINE=InnoDB"
        ),
    ]
}

/// Kinds of load transaction, counted when they commit.
const KINDS: [&str; 10] = [
    "swap parent codes",
    "swap child tags",
    "move a child's key",
    "move a parent's key",
    "insert a child",
    "delete a parent",
    "move a child to another parent",
    "insert a parent",
    "swap note labels",
    "insert or delete a note",
];

/// Runs one random transaction; `Ok(false)` when it found nothing to do.
async fn one_txn(c: &mut Conn, db: &str, kind: usize, rng: &mut fastrand::Rng) -> Result<bool, mysql_async::Error> {
    let (a, b) = (rng.i32(1..=80), rng.i32(1..=80));
    match kind {
        0 | 1 | 8 => {
            let (table, col, ids) = match kind {
                0 => ("parent", "code", (a, b)),
                1 => ("child", "tag", (rng.i32(1..=400), rng.i32(1..=400))),
                _ => ("note", "label", (rng.i32(1..=200), rng.i32(1..=200))),
            };
            if ids.0 == ids.1 {
                return Ok(false);
            }
            let got: Vec<(i32, Option<String>)> = c
                .exec(format!("SELECT id, {col} FROM `{db}`.{table} WHERE id IN (?, ?) FOR UPDATE"), (ids.0, ids.1))
                .await?;
            let [(x, vx), (y, vy)] = got.as_slice() else { return Ok(false) };
            // A swap through a temporary value, as applications do it.
            let set = format!("UPDATE `{db}`.{table} SET {col} = ? WHERE id = ?");
            c.exec_drop(&set, (format!("~{x}"), x)).await?;
            c.exec_drop(&set, (vx, y)).await?;
            c.exec_drop(&set, (vy, x)).await?;
        }
        2 => {
            let sql = format!("UPDATE `{db}`.child SET id = ? WHERE id = ?");
            c.exec_drop(sql, (rng.i32(1..=400), rng.i32(1..=400))).await?;
        }
        3 => c.exec_drop(format!("UPDATE `{db}`.parent SET id = ? WHERE id = ?"), (a, b)).await?,
        4 => {
            let tag = if rng.u8(..4) == 0 { None } else { Some(format!("t{}", rng.u32(1..2000))) };
            let sql = format!("INSERT INTO `{db}`.child VALUES (?, ?, ?, 0)");
            c.exec_drop(sql, (rng.i32(1..=400), a, tag)).await?;
        }
        5 => c.exec_drop(format!("DELETE FROM `{db}`.parent WHERE id = ?"), (a,)).await?,
        6 => {
            let sql = format!("UPDATE `{db}`.child SET parent_id = ?, n = n + 1 WHERE id = ?");
            c.exec_drop(sql, (a, rng.i32(1..=400))).await?;
            let sql = format!("UPDATE `{db}`.parent SET v = v + 1 WHERE id = ?");
            c.exec_drop(sql, (a,)).await?;
        }
        7 => {
            let sql = format!("INSERT INTO `{db}`.parent VALUES (?, ?, 0)");
            c.exec_drop(sql, (a, format!("p{}", rng.u32(1..2000)))).await?;
        }
        _ => {
            if rng.bool() {
                let sql = format!("INSERT INTO `{db}`.note VALUES (?, ?, ?)");
                c.exec_drop(sql, (rng.i32(1..=200), a, format!("l{}", rng.u32(1..2000)))).await?;
            } else {
                c.exec_drop(format!("DELETE FROM `{db}`.note WHERE id = ?"), (rng.i32(1..=200),)).await?;
            }
        }
    }
    Ok(c.affected_rows() > 0 || matches!(kind, 0 | 1 | 8))
}

/// `clients` sessions writing random transactions on dc-a for `time`; returns how many
/// of each kind committed. Refusals (duplicates, foreign keys, deadlocks) roll back.
async fn load(db: &str, clients: u64, time: Duration, seed: u64) -> [u64; KINDS.len()] {
    let until = Instant::now() + time;
    let runs = (0..clients).map(|n| {
        let db = db.to_string();
        async move {
            let mut c = connect(&shared_a()).await;
            let mut rng = fastrand::Rng::with_seed(seed * 100 + n);
            let mut done = [0u64; KINDS.len()];
            while Instant::now() < until {
                let kind = rng.usize(..KINDS.len());
                c.query_drop("START TRANSACTION").await.expect("start transaction");
                match one_txn(&mut c, &db, kind, &mut rng).await {
                    Ok(true) => {
                        c.query_drop("COMMIT").await.expect("commit");
                        done[kind] += 1;
                    }
                    Ok(false) | Err(mysql_async::Error::Server(_)) => {
                        c.query_drop("ROLLBACK").await.expect("rollback");
                    }
                    Err(e) => panic!("load on dc-a failed: {e}"),
                }
            }
            c.disconnect().await.ok();
            done
        }
    });
    let mut total = [0u64; KINDS.len()];
    for done in futures_util::future::join_all(runs).await {
        for (t, d) in total.iter_mut().zip(done) {
            *t += d;
        }
    }
    total
}

/// Creates the tables with rows on dc-a, and a one-way task over them with 4 workers
/// and keep_transactions.
async fn populated(db: &str) -> (tempfile::TempDir, std::path::PathBuf, Config) {
    let mut setup = schema(db);
    setup.push(format!("INSERT INTO `{db}`.parent SELECT seq, CONCAT('p', seq), 0 FROM `{db}`.seq_1_to_60"));
    setup.push(format!(
        "INSERT INTO `{db}`.child SELECT seq, seq % 60 + 1, CONCAT('t', seq), 0 FROM `{db}`.seq_1_to_200"
    ));
    setup.push(format!(
        "INSERT INTO `{db}`.note SELECT seq, seq * 7 % 60 + 1, CONCAT('l', seq) FROM `{db}`.seq_1_to_100"
    ));
    admin(&shared_a(), &setup).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = task_file(
        dir.path(),
        &shared_a(),
        &shared_b(),
        "one-way",
        &[&format!("{db}.*")],
        "workers = 4\nkeep_transactions = true\n",
    );
    let config = Config::load(&file).expect("config");
    (dir, file, config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_apply_keeps_unique_swaps_key_moves_and_foreign_keys_identical() {
    let mut cleanup_a = Cleanup::new(&shared_a());
    let mut cleanup_b = Cleanup::new(&shared_b());
    let db = database(&shared_a(), "par", &mut cleanup_a).await;
    cleanup_b.push(format!("DROP DATABASE IF EXISTS `{db}`"));
    let (_dir, _file, config) = populated(&db).await;
    let engine = start(&config).await;
    wait_caught_up(&config, Duration::from_secs(60), Some(&engine)).await;
    engine.stop();
    assert!(engine.join().await.is_empty(), "the snapshot failed");

    // A backlog written while ferry is stopped, so it comes back in large batches, then
    // more load while it catches up.
    let backlog = load(&db, 4, Duration::from_secs(4), 1).await;
    let engine = start(&config).await;
    let live = load(&db, 4, Duration::from_secs(4), 2).await;
    wait_caught_up(&config, Duration::from_secs(90), Some(&engine)).await;
    let errors: Vec<String> = engine.metrics().iter().filter_map(|m| m.status().last_error).collect();
    engine.stop();
    assert!(engine.join().await.is_empty(), "the direction failed");
    assert!(errors.is_empty(), "apply errors: {errors:?}");

    for (i, kind) in KINDS.iter().enumerate() {
        assert!(backlog[i] + live[i] > 0, "no {kind:?} transaction committed; the load did not exercise it");
    }
    for t in ["parent", "child", "note"] {
        assert_same_table(&db, t).await;
    }
    let slots = rows(
        &shared_b(),
        &format!(
            "SELECT COUNT(*), COUNT(DISTINCT position) FROM ferry.ferry_checkpoint WHERE task = '{}' AND slot LIKE 'stream:%'",
            config.tasks[0].name
        ),
    )
    .await;
    assert_eq!(slots, vec![vec!["4".to_string(), "1".into()]], "one stream slot per worker, all at one position");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn survives_sigkill_during_parallel_apply_of_unique_swaps_and_foreign_keys() {
    let mut cleanup_a = Cleanup::new(&shared_a());
    let mut cleanup_b = Cleanup::new(&shared_b());
    let db = database(&shared_a(), "parkill", &mut cleanup_a).await;
    cleanup_b.push(format!("DROP DATABASE IF EXISTS `{db}`"));
    let (dir, file, config) = populated(&db).await;
    let log = dir.path().join("ferry.log");
    let mut ferry = FerryRun::start(&file, &log);
    wait_caught_up(&config, Duration::from_secs(60), None).await;
    ferry.kill();

    // Load all along; ferry is killed at random moments and started again, so kills land
    // while backlog batches are applied over several sessions.
    let slots_sql = format!(
        "SELECT COUNT(DISTINCT position) FROM ferry.ferry_checkpoint WHERE task = '{}' AND slot LIKE 'stream:%'",
        config.tasks[0].name
    );
    let kills = async {
        let mut rng = fastrand::Rng::with_seed(7);
        let mut split = 0;
        for _ in 0..6 {
            tokio::time::sleep(Duration::from_millis(rng.u64(300..900))).await;
            let mut ferry = FerryRun::start(&file, &log);
            tokio::time::sleep(Duration::from_millis(rng.u64(600..1800))).await;
            ferry.kill();
            if rows(&shared_b(), &slots_sql).await != vec![vec!["1".to_string()]] {
                split += 1;
            }
        }
        split
    };
    let (done, split) = tokio::join!(load(&db, 3, Duration::from_secs(12), 3), kills);
    eprintln!("kills that left worker slots at different positions: {split} of 6");
    let mut ferry = FerryRun::start(&file, &log);
    let caught_up =
        tokio::time::timeout(Duration::from_secs(120), wait_caught_up(&config, Duration::from_secs(600), None));
    assert!(caught_up.await.is_ok(), "the target did not catch up within 120 s; log:\n{}", tail(&log));
    assert_eq!(ferry.terminate(), Some(0), "ferry run did not stop cleanly; log:\n{}", tail(&log));
    assert!(done.iter().sum::<u64>() > 0, "the load committed nothing");
    for t in ["parent", "child", "note"] {
        assert_same_table(&db, t).await;
    }
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        !text.contains("cannot apply") && !text.contains(" ERROR "),
        "an apply error ({split} kills left worker slots apart):\n{}",
        tail(&log)
    );
}

fn at(pos: u64) -> Position {
    ferry::connector::mysql::position::BinlogPos { file: "bin.000001".into(), pos, gtid: String::new() }.to_position()
}

fn batch(txns: Vec<Txn>, end: u64) -> ApplyBatch {
    batches::batch(txns, at(end))
}

/// A sink over `workers` sessions, started on `dir` as the engine starts one.
async fn sink_on(
    ep: &MysqlEndpoint,
    t: &Arc<TableSchema>,
    dir: &DirectionId,
    workers: usize,
) -> (MysqlSink, Option<Position>) {
    batches::started(MysqlSink::open(ep.clone()).await.expect("sink").with_workers(workers), t, dir).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn resumes_from_the_lowest_worker_slot_without_applying_committed_transactions_again() {
    let mut cleanup_b = Cleanup::new(&shared_b());
    let db = database(&shared_b(), "parres", &mut cleanup_b).await;
    let name = TableName { schema: Some(db.clone()), name: "u".into() };
    admin(
        &shared_b(),
        &[
            format!("CREATE TABLE `{db}`.u (id INT PRIMARY KEY, u VARCHAR(10) NOT NULL, UNIQUE KEY u (u))"),
            format!("INSERT INTO `{db}`.u VALUES (1, 'a'), (2, 'b'), (3, 'c'), (4, 'e')"),
        ],
    )
    .await;
    let ep = MysqlEndpoint::new("b", SiteId::new("dc-b"), &shared_b()).expect("url");
    let mut conn = ep.connect().await.expect("connect");
    let t = Arc::new(describe(&ep, &mut conn, &name).await.expect("describe").expect("table"));
    let (i, s) = (Value::Int, |v: &str| Value::Text(v.into()));
    let txn = |pos: u64, changes: Vec<Change>| Txn {
        origin: SiteId::new("dc-a"),
        commit_ts: 0,
        position: at(pos),
        changes,
        ddl: Vec::new(),
    };
    // Row 1 takes 'v', gives it up for 'w', then row 2 takes 'v'; rows 3 and 4 change on
    // their own.
    let txns = [
        txn(10, vec![update(&t, vec![i(1), s("a")], vec![i(1), s("v")])]),
        txn(20, vec![update(&t, vec![i(1), s("v")], vec![i(1), s("w")])]),
        txn(30, vec![update(&t, vec![i(2), s("b")], vec![i(2), s("v")])]),
        txn(40, vec![update(&t, vec![i(3), s("c")], vec![i(3), s("d")])]),
        txn(50, vec![update(&t, vec![i(4), s("e")], vec![i(4), s("f")])]),
    ];
    let dir = DirectionId { task: unique("parres"), from: "a".into(), to: "b".into() };

    // A clean parallel batch: two sessions, each committing its own slot.
    let (mut sink, position) = sink_on(&ep, &t, &dir, 2).await;
    assert_eq!(position, None);
    sink.apply(&dir, &batch(Vec::new(), 5)).await.expect("first checkpoint");
    sink.apply(&dir, &batch(txns[3..].to_vec(), 60)).await.expect("parallel batch");
    let slot_rows = |dir: &DirectionId| {
        let sql = format!(
            "SELECT slot, position, COALESCE(progress, '') FROM ferry.ferry_checkpoint WHERE task = '{}' \
             AND slot LIKE 'stream:%' ORDER BY slot",
            dir.task
        );
        async move { rows(&shared_b(), &sql).await }
    };
    let slots = slot_rows(&dir).await;
    assert_eq!(slots.len(), 2, "{slots:?}");
    assert!(slots.iter().all(|r| r[1] == at(60).to_string()), "{slots:?}");
    assert!(
        slots.iter().any(|r| r[2].contains(&at(40).to_string()))
            && slots.iter().any(|r| r[2].contains(&at(50).to_string())),
        "each session lists the transaction it committed: {slots:?}"
    );

    // The state a crash leaves when session 0 committed the 'v' group of the batch
    // ending at 70 and session 1 (row 3: 'd' -> 'x') did not.
    admin(
        &shared_b(),
        &[
            format!("UPDATE `{db}`.u SET u = CASE id WHEN 1 THEN 'w' WHEN 2 THEN 'v' ELSE u END"),
            format!(
                "UPDATE ferry.ferry_checkpoint SET position = '{}', progress = '{{\"applied\":[\"{}\",\"{}\",\"{}\"]}}' \
                 WHERE task = '{}' AND slot = 'stream:0'",
                at(70),
                at(61),
                at(62),
                at(63),
                dir.task
            ),
        ],
    )
    .await;
    let replay = vec![
        txn(61, txns[0].changes.clone()),
        txn(62, txns[1].changes.clone()),
        txn(63, txns[2].changes.clone()),
        txn(64, vec![update(&t, vec![i(3), s("d")], vec![i(3), s("x")])]),
    ];
    let (cp, slots) = state::load_checkpoint_slots(&ep, &mut conn, &dir).await.expect("load").expect("checkpoint");
    assert_eq!(cp.position, Some(at(60)), "the stream resumes from the lowest slot");
    assert_eq!(slots.count, 2);
    assert_eq!(slots.applied.len(), 3, "{slots:?}");

    // Applying those transactions again from the top would move row 1 to 'v' while row 2
    // holds it: the listed transactions must be left out.
    let other = DirectionId { task: unique("parres_naive"), ..dir.clone() };
    let (mut naive, _) = sink_on(&ep, &t, &other, 1).await;
    assert!(naive.apply(&other, &batch(replay.clone(), 70)).await.is_err(), "a blind replay collides on 'v'");

    let (mut sink, position) = sink_on(&ep, &t, &dir, 2).await;
    assert_eq!(position, Some(at(60)));
    sink.apply(&dir, &batch(replay, 70)).await.expect("the resumed batch applies");
    let got = rows(&shared_b(), &format!("SELECT id, u FROM `{db}`.u ORDER BY id")).await;
    let want: Vec<Vec<String>> = [("1", "w"), ("2", "v"), ("3", "x"), ("4", "f")]
        .iter()
        .map(|(a, b)| vec![a.to_string(), b.to_string()])
        .collect();
    assert_eq!(got, want);
    let (cp, slots) = state::load_checkpoint_slots(&ep, &mut conn, &dir).await.expect("load").expect("checkpoint");
    assert_eq!((cp.position, slots.count, slots.applied.len()), (Some(at(70)), 2, 0), "every slot moved on");

    // Fewer workers next time: the first commit drops the slots of the others.
    let (mut sink, position) = sink_on(&ep, &t, &dir, 1).await;
    assert_eq!(position, Some(at(70)));
    sink.apply(&dir, &batch(Vec::new(), 80)).await.expect("a batch on one worker");
    let (cp, slots) = state::load_checkpoint_slots(&ep, &mut conn, &dir).await.expect("load").expect("checkpoint");
    assert_eq!((cp.position, slots.count), (Some(at(80)), 1), "one slot for one worker");
    conn.disconnect().await.ok();
    cleanup_b.push(format!("DELETE FROM ferry.ferry_checkpoint WHERE task IN ('{}', '{}')", dir.task, other.task));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_share_leaves_the_committed_shares_recorded_and_not_applied_again() {
    let mut cleanup_b = Cleanup::new(&shared_b());
    let db = database(&shared_b(), "parfail", &mut cleanup_b).await;
    let name = TableName { schema: Some(db.clone()), name: "c".into() };
    // The target refuses what the source accepted: v must stay below 100 here.
    admin(
        &shared_b(),
        &[
            format!("CREATE TABLE `{db}`.c (id INT PRIMARY KEY, v INT NOT NULL, CONSTRAINT small CHECK (v < 100))"),
            format!("INSERT INTO `{db}`.c VALUES (1, 1), (2, 2)"),
        ],
    )
    .await;
    let ep = MysqlEndpoint::new("b", SiteId::new("dc-b"), &shared_b()).expect("url");
    let mut conn = ep.connect().await.expect("connect");
    let t = Arc::new(describe(&ep, &mut conn, &name).await.expect("describe").expect("table"));
    let i = Value::Int;
    let txn = |pos: u64, id: i64, v: i64| Txn {
        origin: SiteId::new("dc-a"),
        commit_ts: 0,
        position: at(pos),
        changes: vec![update(&t, vec![i(id), i(id)], vec![i(id), i(v)])],
        ddl: Vec::new(),
    };
    let txns = vec![txn(10, 1, 50), txn(20, 2, 500)];
    let dir = DirectionId { task: unique("parfail"), from: "a".into(), to: "b".into() };
    cleanup_b.push(format!("DELETE FROM ferry.ferry_checkpoint WHERE task = '{}'", dir.task));

    let (mut sink, _) = sink_on(&ep, &t, &dir, 2).await;
    sink.apply(&dir, &batch(Vec::new(), 5)).await.expect("first checkpoint");
    let err = sink.apply(&dir, &batch(txns.clone(), 30)).await.expect_err("row 2 is refused");
    assert!(err.to_string().contains("sessions"), "{err}");

    // Row 1's session committed with its slot; the stream resumes before the batch and
    // knows row 1's transaction is done.
    let (cp, slots) = state::load_checkpoint_slots(&ep, &mut conn, &dir).await.expect("load").expect("checkpoint");
    assert_eq!((cp.position, slots.applied), (Some(at(5)), vec![at(10)]));
    let got = rows(&shared_b(), &format!("SELECT id, v FROM `{db}`.c ORDER BY id")).await;
    assert_eq!(got, vec![vec!["1".to_string(), "50".into()], vec!["2".into(), "2".into()]]);

    // The engine's diagnosis (change by change, one session) names the refused change only.
    let mut diagnose = batch(txns.clone(), 30);
    diagnose.one_by_one = true;
    match sink.apply(&dir, &diagnose).await {
        Err(ferry::connector::ConnectorError::Apply(f)) => {
            assert_eq!((f.position.clone(), f.key.as_str()), (at(20), "(2)"), "{f}");
        }
        other => panic!("expected the refused change at {}, got {other:?}", at(20)),
    }

    // Fixed by hand; a new run applies row 2 and leaves row 1's transaction alone.
    admin(&shared_b(), &[format!("ALTER TABLE `{db}`.c DROP CONSTRAINT small")]).await;
    let (mut sink, position) = sink_on(&ep, &t, &dir, 2).await;
    assert_eq!(position, Some(at(5)));
    sink.apply(&dir, &batch(txns, 30)).await.expect("the batch applies");
    let got = rows(&shared_b(), &format!("SELECT id, v FROM `{db}`.c ORDER BY id")).await;
    assert_eq!(got, vec![vec!["1".to_string(), "50".into()], vec!["2".into(), "500".into()]]);
    let (cp, slots) = state::load_checkpoint_slots(&ep, &mut conn, &dir).await.expect("load").expect("checkpoint");
    assert_eq!((cp.position, slots.count, slots.applied.len()), (Some(at(30)), 2, 0));
    conn.disconnect().await.ok();
}
