//! Freeze: application writes to every user table are rejected; ferry's own writes
//! (which mark themselves in `ferry_apply_origin`) and its heartbeats still pass.

use sqlx::sqlite::SqliteConnection;

use super::literal::{ident, string};
use super::schema::user_tables;
use super::{SqliteEndpoint, exec_batch, migrate};
use crate::connector::ConnectorError;
use crate::model::now_micros;

/// Message application writes get while frozen.
pub const FROZEN_MESSAGE: &str =
    "ferry: this database is frozen for a cutover; writes are refused until it is unfrozen";

/// Freezes every user table in one transaction.
pub async fn freeze(ep: &SqliteEndpoint, conn: &mut SqliteConnection, reason: &str) -> Result<usize, ConnectorError> {
    migrate::run(ep, conn).await?;
    let tables = user_tables(ep, conn).await?;
    let mut sql = String::from("BEGIN IMMEDIATE;\n");
    for t in &tables {
        for event in ["INSERT", "UPDATE", "DELETE"] {
            let trig = ident(&format!("ferry_freeze_{}_{t}", event.to_lowercase()));
            sql.push_str(&format!(
                "DROP TRIGGER IF EXISTS {trig};\nCREATE TRIGGER {trig} BEFORE {event} ON {} \
                 WHEN NOT EXISTS (SELECT 1 FROM ferry_apply_origin) BEGIN SELECT RAISE(ABORT, {}); END;\n",
                ident(t),
                string(FROZEN_MESSAGE)
            ));
        }
    }
    sql.push_str(&format!(
        "INSERT INTO ferry_freeze(id, since_us, reason) VALUES (1, {}, {}) ON CONFLICT(id) DO UPDATE SET since_us = excluded.since_us, reason = excluded.reason;\nCOMMIT;",
        now_micros(),
        string(reason)
    ));
    if let Err(e) = exec_batch(conn, sql).await {
        let _ = exec_batch(conn, "ROLLBACK".into()).await;
        return Err(ConnectorError::Query {
            endpoint: ep.name.clone(),
            what: "freezing application writes".into(),
            source: e,
        });
    }
    Ok(tables.len())
}

/// Lifts a freeze.
pub async fn unfreeze(ep: &SqliteEndpoint, conn: &mut SqliteConnection) -> Result<(), ConnectorError> {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_schema WHERE type = 'trigger' AND name LIKE 'ferry\\_freeze\\_%' ESCAPE '\\'",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(ep.query_error("listing freeze triggers"))?;
    let mut sql = String::from("BEGIN IMMEDIATE;\n");
    for n in names {
        sql.push_str(&format!("DROP TRIGGER IF EXISTS {};\n", ident(&n)));
    }
    sql.push_str("DELETE FROM ferry_freeze;\nCOMMIT;");
    if let Err(e) = exec_batch(conn, sql).await {
        let _ = exec_batch(conn, "ROLLBACK".into()).await;
        return Err(ConnectorError::Query { endpoint: ep.name.clone(), what: "lifting the freeze".into(), source: e });
    }
    Ok(())
}

/// Whether the database is frozen, and since when (µs).
pub async fn frozen_since(ep: &SqliteEndpoint, conn: &mut SqliteConnection) -> Result<Option<i64>, ConnectorError> {
    let exists: Option<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_schema WHERE type = 'table' AND name = 'ferry_freeze'")
            .fetch_optional(&mut *conn)
            .await
            .map_err(ep.query_error("checking the freeze"))?;
    if exists.is_none() {
        return Ok(None);
    }
    sqlx::query_scalar("SELECT since_us FROM ferry_freeze WHERE id = 1")
        .fetch_optional(&mut *conn)
        .await
        .map_err(ep.query_error("checking the freeze"))
}
