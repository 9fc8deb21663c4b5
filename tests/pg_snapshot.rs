//! PostgreSQL's first copy through an exported snapshot and COPY, against the testbed's
//! real clusters: chunks read by COPY decode to exactly the values the row reader
//! gives, for every type; chunks handed to a PostgreSQL target undecoded replace their
//! key range there (stale and extra rows in the range go, nothing doubles).

use std::sync::Arc;

use ferry::connector::postgres::sink::PgSink;
use ferry::connector::postgres::source::{PgSource, rows_after};
use ferry::connector::postgres::{PgEndpoint, schema::describe};
use ferry::connector::{ApplyBatch, Checkpoint, DirectionId, Sink, SnapshotRows, Source};
use ferry::model::{SiteId, TableName, TableSchema, same_row};

use crate::pg_oneway::{ALL_TYPES, assert_same_table, rows_sql};
use crate::support::postgres::{Cleanup, exec, schema, shared_a, shared_b};

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
    let mut sink = PgSink::open(ep_b).await.expect("sink");
    sink.prepare().await.expect("prepare");
    sink.ensure_tables(std::slice::from_ref(&table)).await.expect("target table");
    let t = format!("\"{s}\".all_types");
    // Already on the target: a stale copy of a source row, and rows the source does not
    // have, inside the first chunk's range and after the last key.
    exec(&b, &format!("INSERT INTO {t} (id, tx) VALUES (1, 'stale'), (5, 'extra'), (99, 'extra')")).await;

    let dir = DirectionId { task: format!("copytest_{s}"), from: "a".into(), to: "b".into() };
    cleanup_b.push(format!("DELETE FROM ferry.ferry_checkpoint WHERE task = '{}'", dir.task));
    let mut after = None;
    let mut chunks = 0;
    // The first chunk twice: copied again (as after a crash), it overwrites.
    for again in [true, false, false, false, false] {
        let chunk = src.read_chunk(&table, after.as_ref(), 5, false).await.expect("chunk");
        let native = chunk.native.clone().expect("a chunk for a PostgreSQL target comes as COPY text");
        assert!(chunk.rows.is_empty() && chunk.position.is_some());
        let batch = ApplyBatch {
            txns: Vec::new(),
            snapshot: Some(SnapshotRows {
                table: table.clone(),
                rows: Vec::new(),
                versions: None,
                native: Some(native.clone()),
                last: false,
            }),
            checkpoint: Checkpoint::default(),
            conflicts: None,
            one_by_one: false,
            commit: true,
            fence: None,
        };
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
