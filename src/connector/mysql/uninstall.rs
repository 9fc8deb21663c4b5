//! Leaves no trace on a MySQL/MariaDB server: ferry's triggers on user tables (two-way
//! row versions), the `ferry` database (checkpoints, leases, conflicts, heartbeats,
//! signals, markers, version tables, the freeze records) and the freeze probe account.
//! User tables and rows stay as they are.

use mysql_async::Conn;
use mysql_async::prelude::Queryable;

use super::versions::TRIGGER_PREFIX;
use super::{FERRY_DB, MysqlEndpoint, freezer, ident, string_literal};
use crate::connector::ConnectorError;

/// What ferry added to the server, one line each.
pub async fn installed(ep: &MysqlEndpoint) -> Result<Vec<String>, ConnectorError> {
    let mut conn = ep.connect().await?;
    let found = objects(ep, &mut conn).await;
    let _ = conn.disconnect().await;
    found
}

/// Removes everything ferry added; a frozen server is refused (lift the freeze first:
/// the saved grants of a revoke live in the `ferry` database).
pub async fn uninstall(ep: &MysqlEndpoint) -> Result<Vec<String>, ConnectorError> {
    if let Some(since) = freezer::frozen_since(ep).await? {
        return Err(ConnectorError::Setup {
            endpoint: ep.name.clone(),
            problem: format!("the server is frozen for a cutover (since {since} µs)"),
            fix: "finish or roll back the cutover (`ferry cutover rollback`), then uninstall".into(),
        });
    }
    let mut conn = ep.connect().await?;
    let result = remove(ep, &mut conn).await;
    let _ = conn.disconnect().await;
    result
}

async fn remove(ep: &MysqlEndpoint, conn: &mut Conn) -> Result<Vec<String>, ConnectorError> {
    let found = objects(ep, conn).await?;
    let what = "removing what ferry added";
    for (db, name) in triggers(ep, conn).await? {
        ep.exec(conn, what, &format!("DROP TRIGGER IF EXISTS {}.{}", ident(&db), ident(&name))).await?;
    }
    ep.exec(conn, what, &format!("DROP DATABASE IF EXISTS {}", ident(FERRY_DB))).await?;
    if probe_account_exists(ep, conn).await? {
        ep.exec(conn, what, &format!("DROP USER IF EXISTS {}", freezer::probe_account_name())).await?;
    }
    Ok(found)
}

async fn objects(ep: &MysqlEndpoint, conn: &mut Conn) -> Result<Vec<String>, ConnectorError> {
    let mut found: Vec<String> =
        triggers(ep, conn).await?.into_iter().map(|(db, name)| format!("trigger {db}.{name}")).collect();
    let db: Option<String> = conn
        .exec_first("SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?", (FERRY_DB,))
        .await
        .map_err(ep.error("looking for the ferry database"))?;
    if db.is_some() {
        let tables: Vec<String> = conn
            .exec(
                "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? ORDER BY TABLE_NAME",
                (FERRY_DB,),
            )
            .await
            .map_err(ep.error("listing the ferry database"))?;
        found.push(format!("database {FERRY_DB} ({} table(s): {})", tables.len(), tables.join(", ")));
    }
    if probe_account_exists(ep, conn).await? {
        found.push(format!("account {}", freezer::probe_account_name()));
    }
    Ok(found)
}

/// ferry's triggers on user tables: (database, name).
async fn triggers(ep: &MysqlEndpoint, conn: &mut Conn) -> Result<Vec<(String, String)>, ConnectorError> {
    let pattern = format!("{}%", TRIGGER_PREFIX.replace('_', "\\_"));
    conn.exec(
        "SELECT TRIGGER_SCHEMA, TRIGGER_NAME FROM information_schema.TRIGGERS WHERE TRIGGER_NAME LIKE ? \
         AND TRIGGER_SCHEMA <> ? ORDER BY 1, 2",
        (pattern, FERRY_DB),
    )
    .await
    .map_err(ep.error("listing ferry's triggers"))
}

async fn probe_account_exists(ep: &MysqlEndpoint, conn: &mut Conn) -> Result<bool, ConnectorError> {
    let sql = format!("SELECT COUNT(*) FROM mysql.user WHERE User = {}", string_literal(freezer::PROBE_USER));
    match conn.query_first::<u64, _>(sql).await {
        Ok(n) => Ok(n.unwrap_or(0) > 0),
        // Without SELECT on mysql.user the account cannot be seen: it is left alone.
        Err(mysql_async::Error::Server(e)) if matches!(e.code, 1142 | 1044) => Ok(false),
        Err(e) => Err(ep.error("looking for the freeze probe account")(e)),
    }
}
