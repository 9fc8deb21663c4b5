//! PostgreSQL's first copy through an exported snapshot and COPY, against the testbed's
//! real clusters: chunks read by COPY decode to exactly the values the row reader
//! gives, for every type; chunks handed to a PostgreSQL target undecoded replace their
//! key range there (stale and extra rows in the range go, nothing doubles); a table
//! ferry creates gets its keys once its first copy is done, or at the next start.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry::connector::postgres::sink::PgSink;
use ferry::connector::postgres::source::{PgSource, rows_after};
use ferry::connector::postgres::{PgEndpoint, schema::describe};
use ferry::connector::{ApplyBatch, Checkpoint, DirectionId, NativeRows, Sink, SnapshotRows, Source};
use ferry::model::{SiteId, TableName, TableSchema, same_row};

use crate::pg_oneway::{ALL_TYPES, assert_same_table, rows_sql};
use ferry::config::Config;

use crate::pg_oneway::{tail, wait_caught_up};
use crate::support::FerryRun;
use crate::support::postgres::{
    Cleanup, PrivatePg, database, exec, rows, rows_once_created, schema, shared_a, shared_b, table_text, task_file,
    with_db,
};

/// A batch of one snapshot chunk (COPY text) and nothing else.
fn chunk_batch(table: &Arc<TableSchema>, native: Option<NativeRows>) -> ApplyBatch {
    ApplyBatch {
        txns: Vec::new(),
        snapshot: Some(SnapshotRows {
            table: table.clone(),
            rows: Vec::new(),
            versions: None,
            last: native.as_ref().is_some_and(|n| n.upto.is_none()),
            native,
        }),
        checkpoint: Checkpoint::default(),
        conflicts: None,
        one_by_one: false,
        commit: true,
        fence: None,
        flush: true,
    }
}

/// A source reading `table` of `url` for a direction named after `stream`.
async fn source(url: &str, stream: &str, native: bool) -> (PgSource, Arc<TableSchema>) {
    let ep = PgEndpoint::new("a", SiteId::new("a"), url).expect("url");
    let mut src = PgSource::open(ep, stream).await.expect("open source").with_native_chunks(native);
    let tables = src.tables(&[format!("{stream}.*")]).await.expect("tables");
    (src, tables[0].clone())
}

/// The every-type table on both sides (the enum type too: ferry creates tables, not types).
async fn every_type_table(a: &str, b: &str, prefix: &str, cleanup_a: &mut Cleanup, cleanup_b: &mut Cleanup) -> String {
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
    for base in [1, 10, 20] {
        for sql in rows_sql(&t, base) {
            exec(a, &sql).await;
        }
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_copy_chunks_decode_every_type_exactly_as_the_row_reader() {
    let (a, b) = (shared_a(), shared_b());
    let (mut cleanup_a, mut cleanup_b) = (Cleanup::new(&a), Cleanup::new(&b));
    let s = every_type_table(&a, &b, "pgcopy", &mut cleanup_a, &mut cleanup_b).await;
    let (mut src, table) = source(&a, &s, false).await;
    let ep = PgEndpoint::new("a", SiteId::new("a"), &a).expect("url");
    let mut conn = ep.connect().await.expect("connect");
    let expected = rows_after(&ep, &mut conn, &table, None, 1_000).await.expect("rows");
    assert_eq!(expected.len(), 12);

    // Chunks of 5: 5, 5, 2 rows, all at the one snapshot position.
    let mut got = Vec::new();
    let mut after = None;
    let mut positions = Vec::new();
    loop {
        let chunk = src.read_chunk(&table, after.as_ref(), 5, false).await.expect("chunk");
        assert!(chunk.native.is_none() && chunk.marks.is_none(), "a decoded chunk read at a position");
        positions.push(chunk.position.clone().expect("the exported snapshot's position"));
        let n = chunk.rows.len();
        after = chunk.rows.last().map(|r| table.key_of(r));
        got.extend(chunk.rows);
        if n < 5 {
            break;
        }
    }
    assert_eq!(positions.len(), 3);
    assert!(positions.windows(2).all(|p| p[0] == p[1]), "chunks of one copy share its snapshot: {positions:?}");
    assert_eq!(got.len(), expected.len());
    for (x, y) in got.iter().zip(&expected) {
        assert_eq!(x, y, "a value read through COPY differs from the row reader's");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_copy_chunks_replace_their_key_range_on_a_postgres_target() {
    let (a, b) = (shared_a(), shared_b());
    let (mut cleanup_a, mut cleanup_b) = (Cleanup::new(&a), Cleanup::new(&b));
    let s = every_type_table(&a, &b, "pgcopyin", &mut cleanup_a, &mut cleanup_b).await;
    let (mut src, table) = source(&a, &s, true).await;
    let ep_b = PgEndpoint::new("b", SiteId::new("b"), &b).expect("url");
    // Created by one sink (keyless until its first copy is done), then opened again with
    // rows already in it: the keys are built at once, so those rows are replaced by key
    // like everywhere else.
    let mut first = PgSink::open(ep_b.clone()).await.expect("sink");
    first.prepare().await.expect("prepare");
    first.ensure_tables(std::slice::from_ref(&table)).await.expect("target table");
    drop(first);
    let t = format!("\"{s}\".all_types");
    // Already on the target: a stale copy of a source row, and rows the source does not
    // have, inside the first chunk's range and after the last key.
    exec(&b, &format!("INSERT INTO {t} (id, tx) VALUES (1, 'stale'), (5, 'extra'), (99, 'extra')")).await;
    let mut sink = PgSink::open(ep_b).await.expect("sink");
    sink.ensure_tables(std::slice::from_ref(&table)).await.expect("target table, again");

    let dir = DirectionId { task: format!("copytest_{s}"), from: "a".into(), to: "b".into() };
    cleanup_b.push(format!("DELETE FROM ferry.ferry_checkpoint WHERE task = '{}'", dir.task));
    let mut after = None;
    let mut chunks = 0;
    // The first chunk twice: copied again (as after a crash), it overwrites.
    for again in [true, false, false, false, false] {
        let chunk = src.read_chunk(&table, after.as_ref(), 5, false).await.expect("chunk");
        let native = chunk.native.clone().expect("a chunk for a PostgreSQL target comes as COPY text");
        assert!(chunk.rows.is_empty() && chunk.position.is_some());
        let batch = chunk_batch(&table, Some(native.clone()));
        let report = sink.apply(&dir, &batch).await.expect("apply the chunk");
        assert_eq!(report.rows, native.count as u64);
        chunks += 1;
        if !again {
            after = native.last.clone();
        }
        if native.upto.is_none() {
            break;
        }
    }
    assert_eq!(chunks, 4, "12 rows in chunks of 5, the first copied twice");
    assert_same_table(&a, &b, &TableName { schema: Some(s.clone()), name: "all_types".into() }).await;
    let ep_a = PgEndpoint::new("a", SiteId::new("a"), &a).expect("url");
    let mut conn = ep_a.connect().await.expect("connect");
    let name = TableName { schema: Some(s.clone()), name: "all_types".into() };
    let schema_a = describe(&ep_a, &mut conn, &name).await.expect("describe").expect("exists");
    let rows_a = rows_after(&ep_a, &mut conn, &schema_a, None, 100).await.expect("rows");
    let ep_b = PgEndpoint::new("b", SiteId::new("b"), &b).expect("url");
    let mut conn_b = ep_b.connect().await.expect("connect");
    let rows_b = rows_after(&ep_b, &mut conn_b, &schema_a, None, 100).await.expect("rows");
    assert_eq!(rows_a.len(), rows_b.len(), "extra rows on the target must go with their range");
    assert!(rows_a.iter().zip(&rows_b).all(|(x, y)| same_row(Some(x), Some(y))));
}

/// The primary and unique constraints of `table` on `url`, by name and definition.
async fn constraints(url: &str, table: &str) -> Vec<Vec<Option<String>>> {
    rows(
        url,
        &format!(
            "SELECT conname::text, pg_get_constraintdef(oid) FROM pg_constraint \
             WHERE conrelid = '{table}'::regclass AND contype IN ('p', 'u') ORDER BY 1"
        ),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_a_table_ferry_creates_gets_the_sources_keys_when_its_first_copy_is_done() {
    let (a, b) = (shared_a(), shared_b());
    let (mut cleanup_a, mut cleanup_b) = (Cleanup::new(&a), Cleanup::new(&b));
    let s = schema(&a, "pgkeys", &mut cleanup_a).await;
    cleanup_b.push(format!("DROP SCHEMA IF EXISTS \"{s}\" CASCADE"));
    let t = format!("\"{s}\".t");
    exec(
        &a,
        &format!(
            "CREATE TABLE {t} (id int PRIMARY KEY, code text NOT NULL UNIQUE, v text); \
             INSERT INTO {t} SELECT i, 'c' || i, repeat('v', i) FROM generate_series(1, 12) i"
        ),
    )
    .await;
    let (mut src, table) = source(&a, &s, true).await;
    let ep_b = PgEndpoint::new("b", SiteId::new("b"), &b).expect("url");
    // Prepared by one sink, copied by another (as the engine does): the empty table
    // stays keyless.
    let mut prepare = PgSink::open(ep_b.clone()).await.expect("sink");
    prepare.prepare().await.expect("prepare");
    prepare.ensure_tables(std::slice::from_ref(&table)).await.expect("target table");
    drop(prepare);
    let mut sink = PgSink::open(ep_b.clone()).await.expect("sink");
    sink.ensure_tables(std::slice::from_ref(&table)).await.expect("target table, again");
    assert!(constraints(&b, &t).await.is_empty(), "loaded without its keys");
    let recorded = format!("SELECT count(*)::text FROM ferry.ferry_deferred_key WHERE tbl = '\"{s}\".\"t\"'");
    assert_eq!(rows(&b, &recorded).await, [[Some("1".to_string())]], "the keys to build are recorded");

    let dir = DirectionId { task: format!("keystest_{s}"), from: "a".into(), to: "b".into() };
    cleanup_b.push(format!("DELETE FROM ferry.ferry_checkpoint WHERE task = '{}'", dir.task));
    let mut after = None;
    let mut chunks = 0;
    loop {
        let chunk = src.read_chunk(&table, after.as_ref(), 5, false).await.expect("chunk");
        let native = chunk.native.clone().expect("COPY text");
        let batch = chunk_batch(&table, Some(native.clone()));
        sink.apply(&dir, &batch).await.expect("apply the chunk");
        chunks += 1;
        after = native.last.clone();
        if native.upto.is_none() {
            break;
        }
        assert!(constraints(&b, &t).await.is_empty(), "still keyless while the copy lasts");
    }
    assert_eq!(chunks, 3);
    assert_eq!(
        constraints(&b, &t).await,
        constraints(&a, &t).await,
        "the source's keys, named as the source names them"
    );
    assert_eq!(rows(&b, &recorded).await, [[Some("0".to_string())]], "nothing left to build");
    assert_same_table(&a, &b, &TableName { schema: Some(s.clone()), name: "t".into() }).await;

    // A copy that stops midway: the next start builds the keys before copying on.
    exec(&b, &format!("DROP TABLE {t}")).await;
    let mut sink = PgSink::open(ep_b.clone()).await.expect("sink");
    sink.ensure_tables(std::slice::from_ref(&table)).await.expect("target table");
    let chunk = src.read_chunk(&table, None, 5, false).await.expect("chunk");
    let batch = chunk_batch(&table, chunk.native);
    sink.apply(&dir, &batch).await.expect("apply the first chunk");
    drop(sink);
    assert!(constraints(&b, &t).await.is_empty());
    let mut sink = PgSink::open(ep_b).await.expect("sink");
    sink.ensure_tables(std::slice::from_ref(&table)).await.expect("target table, after a restart");
    assert_eq!(constraints(&b, &t).await, constraints(&a, &t).await, "built at the next start");
    assert_eq!(rows(&b, &recorded).await, [[Some("0".to_string())]]);
}

/// The target server crashes (`pg_ctl -m immediate`) while the first copy commits its
/// chunks (which do not wait for their WAL flush): when it is back, the copy goes on
/// from the last chunk that survived, and the target ends with every row exactly once
/// and its key built.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_a_target_server_crash_during_the_first_copy_loses_and_doubles_nothing() {
    let a = shared_a();
    let mut cleanup_a = Cleanup::new(&a);
    let db = database(&a, "pgtcrash", &mut cleanup_a).await;
    let ua = with_db(&a, &db);
    exec(&ua, "CREATE TABLE public.items (id bigint PRIMARY KEY, v text NOT NULL)").await;
    exec(&ua, "INSERT INTO public.items SELECT g, md5(g::text) FROM generate_series(1, 400000) g").await;
    let pg = tokio::task::spawn_blocking(|| PrivatePg::start("")).await.expect("cluster");
    let ub = pg.url();
    let dir = tempfile::tempdir().expect("tempdir");
    // Throttled so the 400,000 rows (8 chunks) take about 4 s whatever the machine.
    let (file, task) = task_file(dir.path(), &ua, &ub, "one-way", &["public.items"], "max_rows_per_sec = 100000");
    let mut cleanup_slots = Cleanup::new(&a);
    cleanup_slots.task(&task);
    let config = Config::load(&file).expect("config");
    let log = dir.path().join("ferry.log");
    let mut ferry = FerryRun::start(&file, &log);

    let progress_sql =
        format!("SELECT coalesce(string_agg(progress, ','), '') FROM ferry.ferry_checkpoint WHERE task = '{task}'");
    let deadline = Instant::now() + Duration::from_secs(60);
    let progress = loop {
        let p: String = rows_once_created(&ub, &progress_sql).await.concat().into_iter().flatten().collect();
        if p.contains("copying") {
            break p;
        }
        assert!(Instant::now() < deadline, "no chunk was committed within 60 s (progress {p:?}); log:\n{}", tail(&log));
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!("crashing the target at progress {progress}");
    let pg = pg.crash().await;

    wait_caught_up(&config, Duration::from_secs(120), None).await;
    assert_eq!(ferry.terminate(), Some(0), "ferry run did not stop cleanly; log:\n{}", tail(&log));
    let sum = "SELECT count(*)::text, count(DISTINCT id)::text, md5(string_agg(id || ':' || v, '|' ORDER BY id)) FROM public.items";
    assert_eq!(rows(&ua, sum).await, rows(&ub, sum).await, "the copy differs after the crash; log:\n{}", tail(&log));
    let key = "SELECT count(*)::text FROM pg_constraint WHERE conrelid = 'public.items'::regclass AND contype = 'p'";
    assert_eq!(rows(&ub, key).await, vec![vec![Some("1".to_string())]], "the target's key was not built");
    drop(pg);
    drop(cleanup_slots);
}

/// Every built-in type whose chunks travel in COPY's binary form, with the values that
/// trip converters up (NaN and infinities, NULLs, bytes 0x00, escapes, non-ASCII, a
/// `character(5)` value whose padding is not carried but must come back).
const PORTABLE_TYPES: &str = "CREATE TABLE {t} (id bigint PRIMARY KEY, b boolean, i2 smallint, i4 integer, \
    f4 real, f8 double precision, n numeric, n2 numeric(12,3), tx text, vc character varying(20), ch character(5), \
    by bytea, d date, tm time, ttz time with time zone, ts timestamp(3), tstz timestamp with time zone, \
    iv interval, u uuid, j json, jb jsonb)";

const PORTABLE_ROWS: &str = "INSERT INTO {t} VALUES \
    (1, true, -32768, 2147483647, 1.1, 'NaN', 'NaN', 1.5, E'tab\\there\\nnew\\\\line', 'ünïcødé 🚀', 'é b', '\\x00ff00', \
     '2024-02-29', '23:59:59.999999', '12:00:00+05:30', '2024-01-01 00:00:00.123', 'infinity', \
     '1 year 2 mons 3 days 04:05:06.789', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{\"a\": [1, 2.50]}', '{\"b\": null, \"a\": 1}'), \
    (2, false, 0, -2147483648, '-Infinity', 'Infinity', '123456789012345678901234567890.123456789', -0.001, '', '', '', '\\x', \
     '-infinity', '00:00', '00:00:00-12', '1970-01-01 00:00:00', '-infinity', '-1 days', \
     '00000000-0000-0000-0000-000000000000', '[]', '\"s\"'), \
    (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL), \
    (4, true, 1, 1, 3.4028235e38, 2.2250738585072014e-308, -1e-20, 999999999.999, 'x', 'y', 'z', '\\x5c', \
     '0001-01-01', '01:02:03', '01:02:03+00', '2262-04-11 23:47:16.854', '1999-12-31 23:59:59.999999+00', \
     '0', 'ffffffff-ffff-ffff-ffff-ffffffffffff', 'null', '{}'), \
    (5, false, 5, 5, 0, -0.0, 0, 0, '\\N', 'a\\b', '\\', '\\x0a0d09', '2000-01-01', '12:00', '12:00+00', \
     '2000-01-01 12:00', '2000-01-01 12:00+00', '1 mon', '12345678-1234-1234-1234-123456789abc', '\"\\\\u0000x\"', '[1, \"2\", 3.0]')";

/// Chunks of a table of built-in types travel in COPY binary, and load value for value
/// into a table ferry creates (same types: loaded as is) and into one made beforehand
/// with other column types (through a table of the source's types, cast by the server).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_binary_chunks_carry_every_built_in_type_exactly() {
    let (a, b) = (shared_a(), shared_b());
    let (mut cleanup_a, mut cleanup_b) = (Cleanup::new(&a), Cleanup::new(&b));
    let s = schema(&a, "pgbin", &mut cleanup_a).await;
    cleanup_b.push(format!("DROP SCHEMA IF EXISTS \"{s}\" CASCADE"));
    exec(&b, &format!("CREATE SCHEMA IF NOT EXISTS \"{s}\"")).await;
    let (same, other) = (format!("\"{s}\".same"), format!("\"{s}\".other"));
    for t in [&same, &other] {
        exec(&a, &PORTABLE_TYPES.replace("{t}", t)).await;
        exec(&a, &PORTABLE_ROWS.replace("{t}", t)).await;
    }
    // Made beforehand on the target, three columns of other types that take the values.
    let widened = PORTABLE_TYPES
        .replace("{t}", &other)
        .replace("i4 integer", "i4 bigint")
        .replace("vc character varying(20)", "vc text")
        .replace("n2 numeric(12,3)", "n2 numeric(20,3)");
    exec(&b, &widened).await;

    let ep_a = PgEndpoint::new("a", SiteId::new("a"), &a).expect("url");
    let mut src = PgSource::open(ep_a, &s).await.expect("open source").with_native_chunks(true);
    let tables = src.tables(&[format!("{s}.*")]).await.expect("tables");
    let mut sink = PgSink::open(PgEndpoint::new("b", SiteId::new("b"), &b).expect("url")).await.expect("sink");
    sink.prepare().await.expect("prepare");
    sink.ensure_tables(&tables).await.expect("target tables");
    let dir = DirectionId { task: format!("bintest_{s}"), from: "a".into(), to: "b".into() };
    cleanup_b.push(format!("DELETE FROM ferry.ferry_checkpoint WHERE task = '{}'", dir.task));
    for table in &tables {
        let mut after = None;
        loop {
            let chunk = src.read_chunk(table, after.as_ref(), 2, false).await.expect("chunk");
            let native = chunk.native.clone().expect("a chunk for a PostgreSQL target comes undecoded");
            assert_eq!(native.format, ferry::connector::postgres::copy_binary::FORMAT, "{} not in binary", table.name);
            let report = sink.apply(&dir, &chunk_batch(table, Some(native.clone()))).await.expect("apply");
            assert_eq!(report.rows, native.count as u64);
            after = native.last.clone();
            if native.upto.is_none() {
                break;
            }
        }
        let name = table.name.to_string();
        let (x, y) = (table_text(&a, &name, "id").await, table_text(&b, &name, "id").await);
        assert_eq!(x.len(), 5, "{name}: the source's rows");
        assert_eq!(x, y, "{name}: a value changed on its way through COPY binary");
    }
}
