//! Freezing a MySQL/MariaDB endpoint (DESIGN.md cutover, `freeze = "read-only"`): global
//! `read_only` stops application writes while ferry's account and the `exempt_users`
//! (which hold READ ONLY ADMIN or SUPER) keep writing; then the other accounts' sessions
//! are ended, because a session already inside a transaction could otherwise still
//! commit. `ferry.ferry_freeze` records when, and why, so a restart sees the freeze.

use mysql_async::Conn;
use mysql_async::prelude::Queryable;

use super::names::{FREEZE_TABLE, ferry_table};
use super::{FERRY_DB, MysqlEndpoint, ident};
use crate::connector::ConnectorError;
use crate::model::now_micros;

fn freeze_table() -> String {
    ferry_table(FREEZE_TABLE)
}

/// Records in `ferry.ferry_freeze` when and why the server was frozen (kept on a repeat).
pub async fn record(ep: &MysqlEndpoint, conn: &mut Conn, reason: &str) -> Result<(), ConnectorError> {
    let what = "recording the freeze in ferry.ferry_freeze";
    ep.exec(conn, what, &format!("CREATE DATABASE IF NOT EXISTS {}", ident(FERRY_DB))).await?;
    ep.exec(
        conn,
        what,
        &format!(
            "CREATE TABLE IF NOT EXISTS {} (id TINYINT NOT NULL PRIMARY KEY, since_us BIGINT NOT NULL, reason TEXT NOT NULL) ENGINE=InnoDB",
            freeze_table()
        ),
    )
    .await?;
    conn.exec_drop(
        format!("INSERT INTO {} VALUES (1, ?, ?) ON DUPLICATE KEY UPDATE id = id", freeze_table()),
        (now_micros(), reason),
    )
    .await
    .map_err(ep.error(what))?;
    Ok(())
}

/// Sets the server read-only and ends every session of an account other than ferry's
/// own and `exempt`; returns how many sessions were ended.
pub async fn freeze(
    ep: &MysqlEndpoint,
    conn: &mut Conn,
    exempt: &[String],
    reason: &str,
) -> Result<usize, ConnectorError> {
    let what = "freezing the server (SET GLOBAL read_only = ON)";
    record(ep, conn, reason).await?;
    conn.query_drop("SET GLOBAL read_only = ON").await.map_err(|e| match &e {
        mysql_async::Error::Server(s) if s.code == 1227 => ConnectorError::Setup {
            endpoint: ep.name.clone(),
            problem: format!("ferry's account may not set read_only: {}", s.message),
            fix: "GRANT SUPER (MariaDB: also READ ONLY ADMIN) ON *.* TO ferry's account".into(),
        },
        _ => ep.error(what)(e),
    })?;
    end_sessions(ep, conn, exempt).await
}

/// Ends every session of an account other than ferry's own and `exempt` (system
/// threads and binlog readers aside): a session already inside a transaction could
/// otherwise still commit. Returns how many were ended.
pub async fn end_sessions(ep: &MysqlEndpoint, conn: &mut Conn, exempt: &[String]) -> Result<usize, ConnectorError> {
    let what = "ending application sessions";
    let me: Option<String> =
        conn.query_first("SELECT SUBSTRING_INDEX(CURRENT_USER(), '@', 1)").await.map_err(ep.error(what))?;
    let mut keep: Vec<String> = exempt.to_vec();
    keep.extend(me);
    keep.extend(["system user", "event_scheduler"].map(String::from));
    let sessions: Vec<(u64, String)> = conn
        .query(
            "SELECT ID, USER FROM information_schema.PROCESSLIST \
             WHERE ID <> CONNECTION_ID() AND COMMAND NOT IN ('Daemon', 'Binlog Dump', 'Binlog Dump GTID')",
        )
        .await
        .map_err(ep.error("listing sessions to end"))?;
    let mut ended = 0;
    for (id, user) in sessions.into_iter().filter(|(_, u)| !keep.contains(u)) {
        match conn.query_drop(format!("KILL CONNECTION {id}")).await {
            Ok(()) => ended += 1,
            // Gone by itself in between.
            Err(mysql_async::Error::Server(s)) if s.code == 1094 => {}
            Err(e) => return Err(ep.error(format!("ending session {id} of {user}"))(e)),
        }
    }
    Ok(ended)
}

/// Lifts the freeze: the server takes writes again.
pub async fn unfreeze(ep: &MysqlEndpoint, conn: &mut Conn) -> Result<(), ConnectorError> {
    let what = "unfreezing the server (SET GLOBAL read_only = OFF)";
    ep.exec(conn, what, "SET GLOBAL read_only = OFF").await?;
    if ferry_table_exists(ep, conn, FREEZE_TABLE, what).await? {
        ep.exec(conn, what, &format!("DELETE FROM {}", freeze_table())).await?;
    }
    Ok(())
}

/// Whether ferry's database holds the table `name` (a server never frozen has none).
pub async fn ferry_table_exists(
    ep: &MysqlEndpoint,
    conn: &mut Conn,
    name: &str,
    what: &str,
) -> Result<bool, ConnectorError> {
    let exists: Option<u8> = conn
        .exec_first(
            "SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
            (FERRY_DB, name),
        )
        .await
        .map_err(ep.error(what))?;
    Ok(exists.is_some())
}

/// When the server was frozen (µs), if it is read-only now; 0 when something other than
/// ferry made it read-only.
pub async fn frozen_since(ep: &MysqlEndpoint, conn: &mut Conn) -> Result<Option<i64>, ConnectorError> {
    let what = "reading whether the server is read-only";
    let read_only: Option<u8> = conn.query_first("SELECT @@global.read_only").await.map_err(ep.error(what))?;
    if read_only != Some(1) {
        return Ok(None);
    }
    let since: Option<i64> =
        conn.query_first(format!("SELECT since_us FROM {} WHERE id = 1", freeze_table())).await.unwrap_or(None);
    Ok(Some(since.unwrap_or(0)))
}
