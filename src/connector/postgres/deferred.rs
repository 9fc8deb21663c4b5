//! Keys of the tables ferry creates on a PostgreSQL target, added when their first copy
//! is done. Loading rows into a table without its primary and unique keys and building
//! them once costs the server less than keeping them up row by row (what `pg_restore`
//! does too). A table stays keyless only while it receives nothing but its first copy's
//! COPY chunks, each continuing the last in key order, in this process: anything else
//! (a change from the stream, a chunk re-copied after a restart) first adds the keys.
//! The pending `ALTER TABLE` is recorded in `ferry.ferry_deferred_key` in the same
//! transaction that creates the table, so a crash mid-copy leaves a record the next
//! start acts on before writing anything.

use std::collections::HashMap;

use sqlx::Row as _;
use sqlx::postgres::PgConnection;

use super::names::DEFERRED_TABLE;
use super::schema::{create_sql, key_clauses};
use super::{PgEndpoint, ferry_table, qualified, string_literal};
use crate::connector::ConnectorError;
use crate::model::{Key, TableName, TableSchema};

/// Tables this process created without their keys, and what their open transaction
/// changes about them once it commits.
#[derive(Debug, Default)]
pub struct Deferred {
    /// Per target table: its `ALTER TABLE … ADD …` and the last key copied so far.
    tables: HashMap<TableName, Keyless>,
    /// What the open transaction did, applied when it commits.
    staged: Vec<Staged>,
}

#[derive(Debug)]
struct Keyless {
    alter: String,
    upto: Option<Key>,
}

#[derive(Debug)]
enum Staged {
    /// A chunk up to this key was appended.
    Upto(TableName, Key),
    /// The keys were added (the table is an ordinary one from now on).
    Keyed(TableName),
}

impl Deferred {
    /// Whether any table is still without its keys (none, once every first copy is done).
    pub fn any(&self) -> bool {
        !self.tables.is_empty()
    }

    /// Whether `table` is still without its keys.
    pub fn is_keyless(&self, table: &TableName) -> bool {
        self.tables.contains_key(table)
    }

    /// Whether a chunk starting after `after` continues `table`'s copy where the last
    /// one ended (so it can be appended without clearing its key range first).
    pub fn continues(&self, table: &TableName, after: Option<&Key>) -> bool {
        self.tables.get(table).is_some_and(|k| k.upto.as_ref() == after)
    }

    /// The pending `ALTER TABLE` of a keyless table.
    pub fn alter(&self, table: &TableName) -> Option<&str> {
        self.tables.get(table).map(|k| k.alter.as_str())
    }

    /// A chunk up to `upto` was appended in the open transaction.
    pub fn stage_upto(&mut self, table: &TableName, upto: Key) {
        self.staged.push(Staged::Upto(table.clone(), upto));
    }

    /// The keys were added in the open transaction.
    pub fn stage_keyed(&mut self, table: &TableName) {
        self.staged.push(Staged::Keyed(table.clone()));
    }

    /// The open transaction committed.
    pub fn committed(&mut self) {
        for s in std::mem::take(&mut self.staged) {
            match s {
                Staged::Upto(t, key) => {
                    if let Some(k) = self.tables.get_mut(&t) {
                        k.upto = Some(key);
                    }
                }
                Staged::Keyed(t) => {
                    self.tables.remove(&t);
                }
            }
        }
    }

    /// The open transaction was rolled back.
    pub fn rolled_back(&mut self) {
        self.staged.clear();
    }

    /// Takes over an empty table an earlier sink created keyless (the engine prepares
    /// the target with one sink and copies with another): its copy has not begun.
    pub fn adopt(&mut self, table: &TableName, alter: String) {
        self.tables.insert(table.clone(), Keyless { alter, upto: None });
    }

    /// Creates `t` (its target name) without its keys and records them, in one
    /// transaction; from now on this process copies into it keyless.
    pub async fn create(
        &mut self,
        ep: &PgEndpoint,
        conn: &mut PgConnection,
        t: &TableSchema,
    ) -> Result<(), ConnectorError> {
        let clauses = key_clauses(t);
        let alter = format!(
            "ALTER TABLE {} {}",
            qualified(&t.name),
            clauses.iter().map(|c| format!("ADD {c}")).collect::<Vec<_>>().join(", ")
        );
        let sql = format!(
            "{}; INSERT INTO {record} (tbl, statement) VALUES ({tbl}, {statement}) \
             ON CONFLICT (tbl) DO UPDATE SET statement = excluded.statement",
            create_sql(t, false),
            record = ferry_table(DEFERRED_TABLE),
            tbl = string_literal(&qualified(&t.name)),
            statement = string_literal(&alter),
        );
        ep.exec(conn, &format!("creating table {}", t.name), &sql).await?;
        tracing::info!(endpoint = %ep.name, table = %t.name, keys = %clauses.join(", "), "created the table without its keys: they are built once its first copy is done");
        self.tables.insert(t.name.clone(), Keyless { alter, upto: None });
        Ok(())
    }
}

/// The sort memory a key build gets at least (`maintenance_work_mem`, for its own
/// transaction): 2,000,000 integer keys built in a median 0.50 s with 256 MB against
/// 0.52 s with the default 64 MB on an idle machine here, 0.55 s against 0.67–0.89 s on
/// a busy one (docs/postgres.md).
const KEY_BUILD_MEMORY: &str = "256MB";

/// Runs a recorded `ALTER TABLE` and drops its record, in the caller's transaction if
/// one is open (else as one transaction of its own).
pub async fn add_keys(
    ep: &PgEndpoint,
    conn: &mut PgConnection,
    table: &TableName,
    alter: &str,
) -> Result<(), ConnectorError> {
    let started = std::time::Instant::now();
    // The key is built by sorting every row's key: with the server's default 64 MB of
    // maintenance_work_mem that sort spills to disk for a few million rows, so the
    // build gets at least KEY_BUILD_MEMORY (never less than the server's setting), for
    // this transaction only.
    let sql = format!(
        "SELECT set_config('maintenance_work_mem', \
         greatest(pg_size_bytes(current_setting('maintenance_work_mem')), pg_size_bytes('{KEY_BUILD_MEMORY}')) / 1024 || 'kB', true); \
         {alter}; DELETE FROM {} WHERE tbl = {}",
        ferry_table(DEFERRED_TABLE),
        string_literal(&qualified(table))
    );
    ep.exec(conn, &format!("adding the keys of {table} ({alter})"), &sql).await?;
    tracing::info!(endpoint = %ep.name, table = %table, ms = started.elapsed().as_millis() as u64, "built the keys of the table");
    Ok(())
}

/// Keys an earlier process recorded and did not add (it stopped mid-copy), by the
/// target table's qualified name.
pub async fn recorded(ep: &PgEndpoint, conn: &mut PgConnection) -> Result<HashMap<String, String>, ConnectorError> {
    let sql = format!("SELECT tbl, statement FROM {}", ferry_table(DEFERRED_TABLE));
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .fetch_all(&mut *conn)
        .await
        .map_err(ep.error("reading the keys still to build (ferry.ferry_deferred_key)"))?;
    rows.iter()
        .map(|r| Ok((r.try_get::<String, _>(0)?, r.try_get::<String, _>(1)?)))
        .collect::<Result<_, sqlx::Error>>()
        .map_err(ep.error("reading the keys still to build (ferry.ferry_deferred_key)"))
}

/// Whether the table holds no row.
pub async fn holds_no_rows(
    ep: &PgEndpoint,
    conn: &mut PgConnection,
    table: &TableName,
) -> Result<bool, ConnectorError> {
    let sql = format!("SELECT NOT EXISTS (SELECT 1 FROM {})", qualified(table));
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .fetch_one(&mut *conn)
        .await
        .map_err(ep.error(format!("checking whether {table} is empty")))
}
