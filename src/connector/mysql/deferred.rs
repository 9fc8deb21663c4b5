//! Secondary indexes deferred during the first copy. A table ferry creates on the target
//! is created without its plain (non-unique) secondary keys, and they are added in one
//! `ALTER TABLE` once the table's copy is done: one sorted build instead of an index
//! entry per loaded row (the sysbench table took 22% less target CPU this way). The
//! primary key and unique keys are never deferred (upserts need them to overwrite by
//! key), nor is anything on a table with foreign keys or referenced by one (a foreign key
//! needs its index from the start), nor FULLTEXT and SPATIAL keys.
//!
//! The pending list lives in `ferry`.`ferry_deferred_index` on the target, written before
//! the table is created and deleted after the index is built, so a crash at any point
//! still ends with the index: the next start reads the list back and builds it once the
//! table's copy is done (or at once when it already is). An index already there (a crash
//! after the `ALTER` but before the list was cleared) is not built again.

use mysql_async::Conn;
use mysql_async::prelude::Queryable;
use tracing::{info, warn};

use super::schema::qualified;
use super::{FERRY_DB, MysqlEndpoint, ident};
use crate::connector::ConnectorError;
use crate::model::{TableName, now_micros};

/// The pending list's table in the `ferry` database.
pub const TABLE: &str = "ferry_deferred_index";

/// Errors meaning the server cannot build the index in place without a lock: 1845/1846
/// (ALGORITHM/LOCK not supported for this operation).
const NOT_IN_PLACE: [u16; 2] = [1845, 1846];

/// One deferred index: its name and its definition exactly as the source's `SHOW CREATE
/// TABLE` wrote it (`KEY \`k_1\` (\`k\`)`, prefix lengths, order and comment included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeferredIndex {
    /// Index name.
    pub name: String,
    /// The key's clause, as in CREATE TABLE.
    pub definition: String,
}

/// A `SHOW CREATE TABLE` text without its plain secondary keys, and those keys in their
/// order; `None` when the text does not have the shape the server writes (then nothing
/// is deferred).
pub fn split_keys(sql: &str) -> Option<(String, Vec<DeferredIndex>)> {
    let lines: Vec<&str> = sql.lines().collect();
    let close = lines.iter().position(|l| l.starts_with(')'))?;
    if close < 2 || !lines[0].ends_with('(') {
        return None;
    }
    let mut kept = Vec::new();
    let mut deferred = Vec::new();
    for line in &lines[1..close] {
        let body = line.strip_prefix("  ")?.trim_end_matches(',');
        match body.strip_prefix("KEY `") {
            Some(rest) => {
                let end = quoted_end(rest)?;
                deferred.push(DeferredIndex { name: rest[..end].replace("``", "`"), definition: body.to_string() });
            }
            None => kept.push(body),
        }
    }
    if kept.is_empty() {
        return None;
    }
    let mut out = format!("{}\n  {}\n", lines[0], kept.join(",\n  "));
    out.push_str(&lines[close..].join("\n"));
    Some((out, deferred))
}

/// Where the backticked name starting `s` ends (doubled backticks inside).
fn quoted_end(s: &str) -> Option<usize> {
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'`' {
            if bytes.get(i + 1) == Some(&b'`') {
                i += 2;
                continue;
            }
            return Some(i);
        }
        i += 1;
    }
    None
}

fn table_sql() -> String {
    format!("{}.{}", ident(FERRY_DB), ident(TABLE))
}

/// Records `table`'s deferred indexes (replacing any earlier list for it), before the
/// table is created.
pub async fn record(
    ep: &MysqlEndpoint,
    conn: &mut Conn,
    table: &TableName,
    indexes: &[DeferredIndex],
) -> Result<(), ConnectorError> {
    let what = format!("recording the indexes of {table} deferred until its copy is done");
    let db = table.schema.clone().unwrap_or_default();
    forget(ep, conn, table).await?;
    for (seq, ix) in indexes.iter().enumerate() {
        conn.exec_drop(
            format!(
                "INSERT INTO {} (db, tbl, name, seq, definition, created_us) VALUES (?, ?, ?, ?, ?, ?)",
                table_sql()
            ),
            (&db, &table.name, &ix.name, seq as i64, &ix.definition, now_micros()),
        )
        .await
        .map_err(ep.error(what.clone()))?;
    }
    Ok(())
}

/// Drops `table`'s pending list.
pub async fn forget(ep: &MysqlEndpoint, conn: &mut Conn, table: &TableName) -> Result<(), ConnectorError> {
    let db = table.schema.clone().unwrap_or_default();
    conn.exec_drop(format!("DELETE FROM {} WHERE db = ? AND tbl = ?", table_sql()), (&db, &table.name))
        .await
        .map_err(ep.error(format!("clearing the deferred indexes of {table}")))
}

/// Every pending list on this server, by table, each in its original key order.
pub async fn load(ep: &MysqlEndpoint, conn: &mut Conn) -> Result<Vec<(TableName, DeferredIndex)>, ConnectorError> {
    let rows: Vec<(String, String, String, String)> = conn
        .query(format!("SELECT db, tbl, name, definition FROM {} ORDER BY db, tbl, seq", table_sql()))
        .await
        .map_err(ep.error(format!("reading the deferred indexes ({FERRY_DB}.{TABLE})")))?;
    Ok(rows
        .into_iter()
        .map(|(db, tbl, name, definition)| {
            (TableName { schema: Some(db), name: tbl }, DeferredIndex { name, definition })
        })
        .collect())
}

/// Builds `table`'s deferred indexes that are not there yet, in one `ALTER TABLE` (one
/// scan for all of them), in place and without a lock where the server allows it, then
/// clears the list. `prefix` goes before the statement (two-way: the origin tag, so the
/// reverse direction does not bring it back). An index the server refuses is named in a
/// warning with the statement that builds it, and dropped from the list.
pub async fn build(
    ep: &MysqlEndpoint,
    conn: &mut Conn,
    table: &TableName,
    indexes: &[DeferredIndex],
    prefix: &str,
) -> Result<(), ConnectorError> {
    let db = table.schema.clone().unwrap_or_default();
    let what = format!("building the deferred indexes of {table}");
    let have: Vec<String> = conn
        .exec(
            "SELECT DISTINCT INDEX_NAME FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
            (&db, &table.name),
        )
        .await
        .map_err(ep.error(what.clone()))?;
    let missing: Vec<&DeferredIndex> = indexes.iter().filter(|ix| !have.contains(&ix.name)).collect();
    let names: Vec<&str> = missing.iter().map(|ix| ix.name.as_str()).collect();
    if !missing.is_empty() {
        let adds: Vec<String> = missing.iter().map(|ix| format!("ADD {}", ix.definition)).collect();
        let base = format!("{prefix}ALTER TABLE {} {}", qualified(table), adds.join(", "));
        let started = std::time::Instant::now();
        info!(endpoint = %ep.name, table = %table, indexes = ?names, "building the deferred indexes");
        let online = format!("{base}, ALGORITHM=INPLACE, LOCK=NONE");
        let result = match conn.query_drop(&online).await {
            Err(mysql_async::Error::Server(e)) if NOT_IN_PLACE.contains(&e.code) => {
                info!(endpoint = %ep.name, table = %table, reason = %e.message, "the deferred indexes cannot be built in place without a lock here; building them with the server's default algorithm");
                conn.query_drop(&base).await
            }
            r => r,
        };
        match result {
            Ok(()) => {
                info!(endpoint = %ep.name, table = %table, indexes = ?names, seconds = started.elapsed().as_secs_f64(), "built the deferred indexes");
            }
            Err(mysql_async::Error::Server(e)) => {
                warn!(endpoint = %ep.name, table = %table, error = %e.message, code = e.code, "the deferred indexes could not be built; build them by hand: {base}");
            }
            Err(e) => return Err(ep.error(what)(e)),
        }
    }
    forget(ep, conn, table).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_keys_are_split_off_and_the_rest_is_kept_exactly() {
        let sql = "CREATE TABLE `t` (\n  `id` int(11) NOT NULL,\n  `k` int(11) NOT NULL DEFAULT 0,\n  `c` char(120) NOT NULL,\n  \
                   PRIMARY KEY (`id`),\n  UNIQUE KEY `u` (`c`),\n  KEY `k_1` (`k`),\n  KEY `a``b` (`c`(10),`k` DESC) COMMENT 'x',\n  \
                   FULLTEXT KEY `f` (`c`)\n) ENGINE=InnoDB DEFAULT CHARSET=latin1\n PARTITION BY HASH (`id`)";
        let (rest, keys) = split_keys(sql).expect("split");
        assert_eq!(
            rest,
            "CREATE TABLE `t` (\n  `id` int(11) NOT NULL,\n  `k` int(11) NOT NULL DEFAULT 0,\n  `c` char(120) NOT NULL,\n  \
             PRIMARY KEY (`id`),\n  UNIQUE KEY `u` (`c`),\n  FULLTEXT KEY `f` (`c`)\n) ENGINE=InnoDB DEFAULT CHARSET=latin1\n PARTITION BY HASH (`id`)"
        );
        assert_eq!(
            keys,
            vec![
                DeferredIndex { name: "k_1".into(), definition: "KEY `k_1` (`k`)".into() },
                DeferredIndex { name: "a`b".into(), definition: "KEY `a``b` (`c`(10),`k` DESC) COMMENT 'x'".into() },
            ]
        );
        // The last line of the body loses nothing when it is a key.
        let (rest, keys) =
            split_keys("CREATE TABLE `t` (\n  `id` int NOT NULL,\n  KEY `x` (`id`)\n) ENGINE=InnoDB").expect("split");
        assert_eq!(rest, "CREATE TABLE `t` (\n  `id` int NOT NULL\n) ENGINE=InnoDB");
        assert_eq!(keys.len(), 1);
        assert_eq!(split_keys("CREATE TABLE `t` (`id` int)"), None);
    }
}
