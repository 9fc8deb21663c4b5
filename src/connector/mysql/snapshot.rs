//! Snapshot without locks (Netflix DBLog): a chunk is read between a low and a high
//! watermark written to `ferry.ferry_signal` in autocommit. Both watermarks flow through
//! the binlog; the engine applies the stream up to the high one and lets changes to the
//! chunk's keys seen after the low one win over the chunk's copy. Also the heartbeat
//! row, written every 100 ms so lag is exact when the application is idle.

use std::sync::atomic::{AtomicU64, Ordering};

use mysql_async::Conn;
use mysql_async::prelude::Queryable;

use super::checksum::rows_after;
use super::names::HEARTBEAT_TABLE;
use super::versions;
use super::{FERRY_DB, MysqlEndpoint, ident};
use crate::connector::{Chunk, ConnectorError, SIGNAL_TABLE};
use crate::model::{HashKey, Key, TableSchema, now_micros};

/// Watermarks written by this process, so two marks are never equal.
static MARKS: AtomicU64 = AtomicU64::new(0);

/// Writes a watermark (`L:` or `H:` + signal id + µs + counter) in autocommit; returns it.
async fn write_mark(
    ep: &MysqlEndpoint,
    conn: &mut Conn,
    kind: &str,
    signal_id: &str,
) -> Result<String, ConnectorError> {
    let now = now_micros();
    let mark = format!("{kind}:{signal_id}:{now}:{}", MARKS.fetch_add(1, Ordering::Relaxed));
    let sql = format!(
        "INSERT INTO {}.{} (id, mark, ts) VALUES (?, ?, ?) ON DUPLICATE KEY UPDATE mark = VALUES(mark), ts = VALUES(ts)",
        ident(FERRY_DB),
        ident(SIGNAL_TABLE)
    );
    conn.exec_drop(sql, (signal_id, &mark, now)).await.map_err(ep.error(format!(
        "writing a snapshot watermark to {FERRY_DB}.{SIGNAL_TABLE} (create it with ferry's prepare step; the account needs INSERT and UPDATE on it)"
    )))?;
    Ok(mark)
}

/// Reads up to `limit` rows after `after` between a low and a high watermark (no lock).
pub async fn read_chunk(
    ep: &MysqlEndpoint,
    conn: &mut Conn,
    table: &TableSchema,
    after: Option<&Key>,
    limit: usize,
    signal_id: &str,
    with_versions: bool,
) -> Result<Chunk, ConnectorError> {
    let low = write_mark(ep, conn, "L", signal_id).await?;
    let rows = rows_after(ep, conn, table, after, limit).await?;
    let versions = match with_versions {
        // Between the marks: a row written after it was read is dropped from the chunk
        // (its change wins), so a version never pairs with an older row image.
        true => Some(row_versions(ep, conn, table, &rows).await?),
        false => None,
    };
    let high = write_mark(ep, conn, "H", signal_id).await?;
    Ok(Chunk { rows, position: None, marks: Some((low, high)), versions, native: None })
}

/// The version of each row (two-way), `None` for rows older than ferry's triggers.
async fn row_versions(
    ep: &MysqlEndpoint,
    conn: &mut Conn,
    table: &TableSchema,
    rows: &[crate::model::Row],
) -> Result<Vec<Option<(crate::model::SiteId, i64)>>, ConnectorError> {
    let keys: Vec<Key> = rows.iter().map(|r| table.key_of(r)).collect();
    let refs: Vec<&Key> = keys.iter().collect();
    let stamps = versions::load(ep, conn, table, &refs, false).await?;
    Ok(keys
        .into_iter()
        .map(|k| stamps.get(&HashKey(k)).filter(|s| !s.deleted).map(|s| (s.site.clone(), s.ts)))
        .collect())
}

/// Writes this site's heartbeat row (site, now in µs).
pub async fn heartbeat(ep: &MysqlEndpoint, conn: &mut Conn, site: &str) -> Result<(), ConnectorError> {
    let sql = format!(
        "INSERT INTO {}.{} (site, ts) VALUES (?, ?) ON DUPLICATE KEY UPDATE ts = VALUES(ts)",
        ident(FERRY_DB),
        ident(HEARTBEAT_TABLE)
    );
    conn.exec_drop(sql, (site, now_micros())).await.map_err(ep.error(format!("writing the heartbeat of site {site}")))
}
