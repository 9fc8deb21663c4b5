//! A PostgreSQL source in a cluster (docs/cluster.md, docs/postgres.md): the direction's
//! replication slot is named after the task and direction, so every node that may own
//! the direction reads the same slot. Three real `ferry node` processes share a one-way
//! PostgreSQL task under a write load, each node reaching the source through a relay of
//! its own; the owner is SIGKILLed twice, and a third time with its route to the source
//! cut first (its walsender lingers, holding the slot, as after a network cut or a dead
//! host: the new owner ends that session). Each time another node goes on from the
//! target's checkpoint with the same slot. At the end
//! the tables are equal row for row, no ledger row arrived twice, and the source holds
//! the one shared slot. A node-named slot of an older release becomes the shared slot
//! with no change lost; another node's old slot goes when that node runs the direction.
//! An owner SIGSTOPped with its apply transaction open on the PostgreSQL target does not
//! hold the next owner back: that one ends the stopped owner's sessions on the target
//! (never another direction's, nor one of a newer token) and applies; the woken node
//! writes nothing.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ferry::config::Config;
use ferry::connector::DirectionId;
use ferry::connector::postgres::{names, state};
use ferry::engine::plan_task;
use ferry::engine::task::{former_stream_of, stream_of};
use ferry::model::TableName;
use sqlx::Executor as _;

use crate::cluster_failover::{
    Member, TAKEOVER, TTL, WAIT, applied_by, free_port, nats_url, owner, require_nats, tail, wait_joined, wait_owner,
};
use crate::pg_oneway::{assert_same_table, start, wait_caught_up};
use crate::support::mariadb::unique;
use crate::support::postgres::{
    Cleanup, PrivatePg, connect, database, drop_slot_once_released, exec, rows, rows_once_created, shared_a, shared_b,
    table_text, task_file, with_db,
};
use crate::support::relay::Relay;

/// The ledger's row count on `url` (0 before the table exists).
/// A task's databases on both PostgreSQL servers; dropped with it.
struct Pair {
    _cleanups: (Cleanup, Cleanup),
    task: String,
    /// The source's URL (ledger and acct tables, 10 accounts).
    a: String,
    /// The target's URL, and its database's name.
    b: String,
    db_b: String,
}

/// A new task name and a database on each PostgreSQL server, the source's holding the
/// ledger and acct tables.
async fn ledger_pair(tag: &str) -> Pair {
    let mut ca = Cleanup::new(&shared_a());
    let mut cb = Cleanup::new(&shared_b());
    let task = unique(tag);
    // The slot goes before its database (a database with a slot cannot be dropped).
    ca.task(&task);
    let db = database(&shared_a(), tag, &mut ca).await;
    let db_b = database(&shared_b(), tag, &mut cb).await;
    let (a, b) = (with_db(&shared_a(), &db), with_db(&shared_b(), &db_b));
    let accounts: Vec<String> = (0..10).map(|i| format!("({i}, 0)")).collect();
    exec(
        &a,
        &format!(
            "CREATE TABLE public.ledger (id bigserial PRIMARY KEY, token uuid NOT NULL, amount int); \
             CREATE TABLE public.acct (id int PRIMARY KEY, balance bigint NOT NULL); \
             INSERT INTO public.acct VALUES {}",
            accounts.join(", ")
        ),
    )
    .await;
    Pair { _cleanups: (ca, cb), task, a, b, db_b }
}

/// Once the writer stopped: the target `b` catches up with the source `a`, holds no
/// ledger row twice, and both tables end equal row for row (the acct updates are the
/// last to arrive: polled).
async fn same_rows_each_once(a: &str, b: &str) {
    let source_rows = count(a).await;
    let started = Instant::now();
    while count(b).await < source_rows {
        assert!(started.elapsed() < WAIT, "the target did not catch up with the source's {source_rows} ledger rows");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let dup = rows(b, "SELECT (count(*) - count(DISTINCT token))::text FROM public.ledger").await;
    assert_eq!(dup, [[Some("0".to_string())]], "a ledger row arrived twice");
    let started = Instant::now();
    for t in ["public.ledger", "public.acct"] {
        loop {
            let (ta, tb) = (table_text(a, t, "id").await, table_text(b, t, "id").await);
            if ta == tb {
                assert!(!ta.is_empty(), "{t} is empty");
                break;
            }
            assert!(
                started.elapsed() < WAIT,
                "{t} differs: {} rows on the source, {} on the target",
                ta.len(),
                tb.len()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

async fn count(url: &str) -> u64 {
    let r = rows_once_created(url, "SELECT count(*)::text FROM public.ledger").await;
    r.first().and_then(|r| r[0].as_deref()).and_then(|n| n.parse().ok()).unwrap_or(0)
}

/// Polls until the target holds more than `n` ledger rows; `members`' logs on failure.
async fn wait_target_past(b: &str, n: u64, what: &str, members: &[Member]) {
    let start = Instant::now();
    while count(b).await <= n {
        assert!(
            start.elapsed() < WAIT,
            "{what}: the target stayed at {n} ledger rows for {WAIT:?}; logs:\n{}",
            members.iter().map(|m| format!("--- {}\n{}", m.id, tail(&m.log()))).collect::<String>()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The application: each transaction adds a ledger row and moves a balance.
async fn writer(a: String, stop: Arc<AtomicBool>) {
    let mut c = connect(&a).await;
    let mut i: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let txn = format!(
            "BEGIN; INSERT INTO public.ledger (token, amount) VALUES (gen_random_uuid(), {}); \
             UPDATE public.acct SET balance = balance + {} WHERE id = {}; COMMIT",
            i % 100,
            i % 7,
            i % 10
        );
        if c.execute(sqlx::raw_sql(sqlx::AssertSqlSafe(txn))).await.is_err() {
            let _ = c.execute("ROLLBACK").await;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The ferry slots of the source database, by name.
async fn slots(a: &str) -> Vec<String> {
    rows(
        a,
        "SELECT slot_name::text FROM pg_replication_slots WHERE slot_name LIKE 'ferry\\_%' AND database = current_database() ORDER BY 1",
    )
    .await
    .into_iter()
    .filter_map(|r| r.into_iter().next().flatten())
    .collect()
}

/// A node's task file: endpoints `a` and `b` at the PostgreSQL URLs, its `[cluster]`.
fn write_config(dir: &Path, id: &str, port: u16, (a, b): (&str, &str), task: &str) {
    let text = format!(
        r#"[node]
id = "{id}"
site = "dc-b"
listen = "127.0.0.1:{port}"
store = "sqlite://meta.db"

[cluster]
nats = "{nats}"
lease_ttl = "{ttl}s"

[[endpoint]]
name = "a"
site = "dc-a"
url = "{a}"

[[endpoint]]
name = "b"
site = "dc-b"
url = "{b}"

[[task]]
name = "{task}"
from = "a"
to = "b"
tables = ["public.ledger", "public.acct"]
"#,
        nats = nats_url(),
        ttl = TTL.as_secs()
    );
    std::fs::write(dir.join("ferry.toml"), text).expect("write task file");
}

/// The server process streaming from `slot`, if one is.
async fn slot_pid(a: &str, slot: &str) -> Option<String> {
    rows(a, &format!("SELECT active_pid::text FROM pg_replication_slots WHERE slot_name = '{slot}'"))
        .await
        .into_iter()
        .next()
        .and_then(|r| r.into_iter().next().flatten())
}

/// Polls until the source's only ferry slot is `slot` and a session streams from it.
async fn wait_streaming_from(a: &str, slot: &str, what: &str) {
    let start = Instant::now();
    loop {
        let active =
            rows(a, &format!("SELECT active::text FROM pg_replication_slots WHERE slot_name = '{slot}'")).await;
        let all = slots(a).await;
        if all == [slot.to_string()] && active == [[Some("true".to_string())]] {
            return;
        }
        assert!(start.elapsed() < WAIT, "{what}: the source's ferry slots are {all:?} (want only {slot}, active)");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_source_direction_moves_between_nodes_on_one_shared_slot_without_losing_or_doubling_rows() {
    require_nats(&nats_url());
    let pair = ledger_pair("pgfo").await;
    let (task, a, b) = (pair.task.clone(), pair.a.clone(), pair.b.clone());
    let slot = names::slot(&stream_of(&DirectionId { task: task.clone(), from: "a".into(), to: "b".into() }));

    let root = tempfile::tempdir().expect("temp dir");
    let upstream = Relay::upstream_of(&a);
    let mut relays = Vec::new();
    let mut members = Vec::new();
    for i in 1..=3 {
        let relay = Relay::start("127.0.0.1:0".parse().expect("address"), upstream).await;
        let via = a.replacen(&upstream.to_string(), &relay.addr.to_string(), 1);
        let dir = root.path().join(format!("n{i}"));
        std::fs::create_dir_all(&dir).expect("node dir");
        let (id, port) = (format!("{task}-n{i}"), free_port());
        write_config(&dir, &id, port, (&via, &b), &task);
        members.push(Member::new(id, dir, format!("http://127.0.0.1:{port}")));
        relays.push(relay);
    }
    for m in &mut members {
        m.start();
    }
    let http = crate::support::http_client(Duration::from_secs(5));
    let stop = Arc::new(AtomicBool::new(false));
    let app = tokio::spawn(writer(a.clone(), stop.clone()));

    let mut current = wait_owner(&http, &members, &task, None, WAIT).await;
    wait_target_past(&b, 0, "the first owner", &members).await;
    wait_streaming_from(&a, &slot, "the first owner").await;

    let mut takeovers = Vec::new();
    // Twice SIGKILL (the kernel closes its connections: the walsender ends at once),
    // then SIGKILL with its route to the source cut first (its walsender lingers, holding
    // the slot, until the new owner ends it).
    for (round, cut) in [false, false, true].into_iter().enumerate() {
        let sig = if cut { "KILL after its route to the source was cut" } else { "KILL" };
        let i = members.iter().position(|m| m.id == current).expect("owner is a member");
        let at = count(&b).await;
        let since = Instant::now();
        // The walsender serving the owner about to die (its session lingers when cut).
        let walsender = if cut { slot_pid(&a, &slot).await } else { None };
        if cut {
            relays[i].hold();
        }
        members[i].kill();
        let next = wait_owner(&http, &members, &task, Some(&current), TAKEOVER).await;
        takeovers.push(since.elapsed());
        // The new owner goes on from the target's checkpoint, on the same slot.
        wait_target_past(&b, at, &format!("round {round}: {next} after SIG{sig} of {current}"), &members).await;
        wait_streaming_from(&a, &slot, &format!("round {round}: {next}")).await;
        if let Some(pid) = walsender {
            // The cut owner's session must not linger. The new owner ends it and says so;
            // only if the server ended it first (its own timeouts) may the log be silent.
            let log = members.iter().find(|m| m.id == next).map(Member::log).unwrap_or_default();
            let said = log.contains("ended the session a previous owner left on it") && log.contains(&slot);
            // A backend ended a moment ago may still be listed while it exits (it gave
            // the slot up first): allowed a few seconds to leave the list.
            let listed = format!("SELECT pid::text FROM pg_stat_activity WHERE pid = {pid}");
            let gone_by = Instant::now() + Duration::from_secs(5);
            let mut alive = !rows(&a, &listed).await.is_empty();
            while alive && Instant::now() < gone_by {
                tokio::time::sleep(Duration::from_millis(100)).await;
                alive = !rows(&a, &listed).await.is_empty();
            }
            assert!(
                !alive,
                "round {round}: the killed owner's walsender {pid} still lingers on {slot}:\n{}",
                tail(&log)
            );
            if !said {
                // Then it must have gone before the server's own timeout could have ended
                // it: a new owner that cannot end it waits that long for the slot.
                let timeout = rows(&a, "SELECT setting FROM pg_settings WHERE name = 'wal_sender_timeout'").await;
                let ms: u64 = timeout.first().and_then(|r| r[0].as_deref()).and_then(|v| v.parse().ok()).unwrap_or(0);
                assert!(
                    since.elapsed() < Duration::from_millis(ms),
                    "round {round}: {next} never said it ended walsender {pid}, and the takeover took {:?}, past the server's wal_sender_timeout of {ms} ms:\n{}",
                    since.elapsed(),
                    tail(&log)
                );
                eprintln!("round {round}: walsender {pid} ended before {next} looked");
            }
        }
        // The old owner comes back (its route too) and takes nothing back.
        relays[i].reopen().await;
        members[i].start();
        wait_joined(&http, &members[i]).await;
        assert_eq!(owner(&http, &members, &task).await.as_deref(), Some(next.as_str()), "round {round}: moved back");
        current = next;
    }
    eprintln!("takeovers (lease TTL {TTL:?}): {takeovers:?}");

    stop.store(true, Ordering::Relaxed);
    app.await.expect("writer");
    same_rows_each_once(&a, &b).await;
    assert_eq!(slots(&a).await, std::slice::from_ref(&slot), "stray slots on the source");
    for m in &mut members {
        m.kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_a_node_named_slot_of_an_older_release_becomes_the_shared_slot_with_no_change_lost() {
    let pg = tokio::task::spawn_blocking(|| PrivatePg::start("")).await.expect("cluster");
    let (a, b) = (pg.url(), shared_b());
    exec(&a, "CREATE TABLE up_items (id int PRIMARY KEY, v text); INSERT INTO up_items SELECT g, 'v' FROM generate_series(1, 100) g")
        .await;
    let mut cb = Cleanup::new(&b);
    cb.push("DROP TABLE IF EXISTS public.up_items");
    let dir = tempfile::tempdir().expect("tempdir");
    let (file, task) = task_file(dir.path(), &a, &b, "one-way", &["public.up_items"], "");
    cb.push(format!("DELETE FROM ferry.ferry_checkpoint WHERE task = '{task}'"));
    let config = Config::load(&file).expect("config");
    let spec = &plan_task(&config, &config.tasks[0], &[])[0];
    let (stream, former) = (stream_of(&spec.id), former_stream_of(&config.node.id, &spec.id));
    let (slot, old_slot) = (names::slot(&stream), names::slot(&former));
    let (publication, old_publication) = (names::publication(&stream), names::publication(&former));
    let engine = start(&config).await;
    wait_caught_up(&config, WAIT, Some(&engine)).await;
    engine.stop();
    assert!(engine.join().await.is_empty(), "the direction failed");

    // What an older release left: the slot and publication named after the node (made
    // now, with nothing written since the target's checkpoint), its record in
    // ferry.ferry_slot, schema version 4 (no publication column), no shared slot.
    let tables: Vec<String> = rows(
        &a,
        &format!(
            "SELECT format('%I.%I', schemaname, tablename) FROM pg_publication_tables WHERE pubname = '{publication}'"
        ),
    )
    .await
    .into_iter()
    .filter_map(|r| r.into_iter().next().flatten())
    .collect();
    assert!(tables.iter().any(|t| t.ends_with("up_items")), "{tables:?}");
    exec(&a, &format!("CREATE PUBLICATION {old_publication} FOR TABLE {}", tables.join(", "))).await;
    exec(&a, &format!("SELECT pg_create_logical_replication_slot('{old_slot}', 'pgoutput')")).await;
    drop_slot_once_released(&a, &slot).await;
    exec(
        &a,
        &format!(
            "DROP PUBLICATION {publication}; \
             UPDATE ferry.ferry_slot SET slot = '{old_slot}' WHERE slot = '{slot}'; \
             ALTER TABLE ferry.ferry_slot DROP COLUMN publication; DELETE FROM ferry.ferry_schema WHERE version > 4"
        ),
    )
    .await;
    // Changes while ferry is stopped: only the old slot keeps them.
    exec(
        &a,
        "INSERT INTO up_items SELECT g, 'while upgrading' FROM generate_series(101, 150) g; \
         UPDATE up_items SET v = 'changed' WHERE id <= 10; DELETE FROM up_items WHERE id BETWEEN 11 AND 20",
    )
    .await;

    let engine = start(&config).await;
    // Changes after the carry-over too.
    exec(&a, "INSERT INTO up_items VALUES (1000, 'after the upgrade')").await;
    let started = Instant::now();
    let up = TableName { schema: Some("public".into()), name: "up_items".into() };
    loop {
        if table_text(&a, "public.up_items", "id").await == table_text(&b, "public.up_items", "id").await {
            break;
        }
        assert!(started.elapsed() < WAIT, "the changes kept by the old slot did not all arrive");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_same_table(&a, &b, &up).await;
    assert_eq!(
        slots(&a).await,
        std::slice::from_ref(&slot),
        "the old slot was not carried over to the shared one (and dropped)"
    );
    let record =
        rows(&a, &format!("SELECT slot, publication FROM ferry.ferry_slot WHERE slot IN ('{slot}', '{old_slot}')"))
            .await;
    assert_eq!(record, [[Some(slot.clone()), Some(old_publication.clone())]], "ferry.ferry_slot after the carry-over");
    let version = rows(&a, "SELECT max(version)::text FROM ferry.ferry_schema").await;
    assert_eq!(version, [[Some("5".to_string())]]);
    engine.stop();
    assert!(engine.join().await.is_empty(), "the direction failed after the carry-over");

    // Another node of the cluster had its own old slot: when it runs the direction it
    // reads on from the shared slot and drops its old one.
    let mut other = config.clone();
    other.node.id = format!("{}-other", config.node.id);
    let other_slot = names::slot(&former_stream_of(&other.node.id, &spec.id));
    exec(&a, &format!("SELECT pg_create_logical_replication_slot('{other_slot}', 'pgoutput')")).await;
    exec(&a, "UPDATE up_items SET v = 'second start' WHERE id = 1000").await;
    let engine = start(&other).await;
    wait_caught_up(&other, WAIT, Some(&engine)).await;
    engine.stop();
    assert!(engine.join().await.is_empty(), "the direction failed on the other node");
    assert_same_table(&a, &b, &up).await;
    assert_eq!(slots(&a).await, [slot], "the other node's old slot is left");
    drop(pg);
}

/// Polls the target database `db` until one of ferry's sessions there has a write
/// transaction open between statements; its backend pid and transaction start.
async fn open_apply_transaction(b: &mut sqlx::PgConnection, db: &str) -> Option<(i32, String)> {
    let sql = format!(
        "SELECT pid, xact_start::text FROM pg_stat_activity WHERE datname = '{db}' AND pid <> pg_backend_pid() \
         AND application_name LIKE 'ferry%' AND state = 'idle in transaction' AND backend_xid IS NOT NULL LIMIT 1"
    );
    sqlx::query_as::<_, (i32, String)>(sqlx::AssertSqlSafe(sql)).fetch_optional(b).await.expect("pg_stat_activity")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_target_owner_stopped_with_its_apply_transaction_open_does_not_hold_the_next_owner_back() {
    require_nats(&nats_url());
    let pair = ledger_pair("pgstop").await;
    let (task, a, b, db_b) = (pair.task.clone(), pair.a.clone(), pair.b.clone(), pair.db_b.clone());
    let root = tempfile::tempdir().expect("temp dir");
    let mut members = Vec::new();
    for i in 1..=3 {
        let dir = root.path().join(format!("n{i}"));
        std::fs::create_dir_all(&dir).expect("node dir");
        let (id, port) = (format!("{task}-n{i}"), free_port());
        write_config(&dir, &id, port, (&a, &b), &task);
        members.push(Member::new(id, dir, format!("http://127.0.0.1:{port}")));
    }
    for m in &mut members {
        m.start();
    }
    let http = crate::support::http_client(Duration::from_secs(5));
    let stop = Arc::new(AtomicBool::new(false));
    let app = tokio::spawn(writer(a.clone(), stop.clone()));
    let current = wait_owner(&http, &members, &task, None, WAIT).await;
    wait_target_past(&b, 0, "the first owner", &members).await;
    let i = members.iter().position(|m| m.id == current).expect("owner is a member");

    // Bystanders the takeover must leave alone: a session named for another direction
    // (older token) and one named for this direction under a newer token than any here.
    let dir = DirectionId { task: task.clone(), from: "a".into(), to: "b".into() };
    let other = DirectionId { task: task.clone(), from: "b".into(), to: "a".into() };
    let mut bystanders = Vec::new();
    for name in [state::session_name(&other, 1), state::session_name(&dir, i64::MAX / 2)] {
        let mut c = connect(&b).await;
        c.execute(sqlx::AssertSqlSafe(format!("SET application_name = '{name}'"))).await.expect("name a bystander");
        bystanders.push((name, c));
    }

    // Stop the owner while its apply transaction is open on the target (its
    // connection stays alive: the server never drops it by itself).
    let mut watch = connect(&b).await;
    let started = Instant::now();
    let (session, at) = loop {
        assert!(started.elapsed() < WAIT, "never caught the owner with an apply transaction open on the target");
        let Some((pid, xact)) = open_apply_transaction(&mut watch, &db_b).await else { continue };
        members[i].signal("STOP");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let still = rows(&b, &format!("SELECT xact_start::text FROM pg_stat_activity WHERE pid = {pid}")).await;
        if still == [[Some(xact.clone())]] {
            break (pid, count(&b).await);
        }
        members[i].signal("CONT");
    };
    let since = Instant::now();
    let next = wait_owner(&http, &members, &task, Some(&current), TAKEOVER).await;
    // The new owner applies within 10 s past the stopped owner's lease expiry.
    while count(&b).await <= at {
        assert!(
            since.elapsed() < TAKEOVER,
            "{next} applied nothing within {TAKEOVER:?} of the STOP of {current} (its apply transaction open on the target); logs:\n{}",
            members.iter().map(|m| format!("--- {}\n{}", m.id, tail(&m.log()))).collect::<String>()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eprintln!("applied by {next} {:?} after the STOP (lease TTL {TTL:?})", since.elapsed());
    let gone = rows(&b, &format!("SELECT count(*)::text FROM pg_stat_activity WHERE pid = {session}")).await;
    assert_eq!(gone, [[Some("0".to_string())]], "the stopped owner's session on the target was not ended");
    for (name, c) in &mut bystanders {
        let alive = c.execute("SELECT 1").await;
        assert!(alive.is_ok(), "the takeover ended the session named {name}: {alive:?}");
    }
    // Said by whichever node held the lease first after the STOP: on a loaded machine the
    // lease can pass through one node before it settles on `next`.
    let logs: Vec<String> = members.iter().filter(|m| m.id != current).map(Member::log).collect();
    assert!(
        logs.iter().any(|log| log.contains("ended the sessions of the lease's previous holder")),
        "no node said it ended the stopped owner's sessions (now owned by {next}):\n{}",
        members.iter().map(|m| format!("--- {}\n{}", m.id, tail(&m.log()))).collect::<String>()
    );

    // Woken, the old owner finds its tenure over and writes nothing.
    members[i].signal("CONT");
    let started = Instant::now();
    loop {
        let view = crate::cluster_failover::get_json(&http, &format!("{}/api/v1/cluster", members[i].base)).await;
        let nodes = view.as_ref().and_then(|v| v["nodes"].as_array().cloned()).unwrap_or_default();
        if nodes.iter().any(|n| n["id"] == current.as_str() && n["tasks"].as_array().is_some_and(Vec::is_empty)) {
            break;
        }
        assert!(started.elapsed() < WAIT, "the woken node still claims the task; log:\n{}", tail(&members[i].log()));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let after = applied_by(&http, &members[i], &task).await.expect("the woken node's counter");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let later = applied_by(&http, &members[i], &task).await.expect("the woken node's counter");
    assert_eq!(later, after, "the woken node kept applying changes after losing its lease");
    let next_pid = members.iter().find(|m| m.id == next).map(Member::pid).expect("the new owner");
    let holder = rows(&b, &format!("SELECT node, pid::text FROM ferry.ferry_lease WHERE task = '{task}'")).await;
    assert_eq!(holder, [[Some(next.clone()), Some(next_pid.to_string())]], "the target's lease is not the new owner's");

    stop.store(true, Ordering::Relaxed);
    app.await.expect("writer");
    same_rows_each_once(&a, &b).await;
    for m in &mut members {
        m.kill();
    }
}
