//! Leaves no trace in a SQLite file: ferry's capture and freeze triggers on user tables
//! and every `ferry_*` table go, in one transaction. User tables and rows stay as they are.

use sqlx::Row as _;
use sqlx::sqlite::SqliteConnection;

use super::{Access, SqliteEndpoint, begin_immediate, close, commit, exec_batch, freeze, literal, rollback};
use crate::connector::ConnectorError;

/// What ferry added to the file: `trigger NAME` and `table NAME` entries.
pub async fn installed(ep: &SqliteEndpoint) -> Result<Vec<String>, ConnectorError> {
    let mut conn = ep.connect(Access::ReadOnly).await?;
    let found = objects(ep, &mut conn).await;
    close(conn).await;
    Ok(found?.into_iter().map(|(kind, name)| format!("{kind} {name}")).collect())
}

/// Removes everything ferry added; a frozen file is refused (lift the freeze first, so
/// nobody mistakes the lifted guard for a finished cutover).
pub async fn uninstall(ep: &SqliteEndpoint) -> Result<Vec<String>, ConnectorError> {
    let mut conn = ep.connect(Access::ReadWrite).await?;
    let result = remove(ep, &mut conn).await;
    close(conn).await;
    result
}

async fn remove(ep: &SqliteEndpoint, conn: &mut SqliteConnection) -> Result<Vec<String>, ConnectorError> {
    if let Some(since) = freeze::frozen_since(ep, conn).await? {
        return Err(ConnectorError::Setup {
            endpoint: ep.name.clone(),
            problem: format!("the database is frozen for a cutover (since {since} µs)"),
            fix: "finish or roll back the cutover (`ferry cutover rollback`), then uninstall".into(),
        });
    }
    let found = objects(ep, conn).await?;
    let what = "removing ferry's triggers and tables";
    begin_immediate(conn).await.map_err(ep.query_error(what))?;
    for (kind, name) in &found {
        let sql = format!("DROP {} IF EXISTS {}", kind.to_ascii_uppercase(), literal::ident(name));
        if let Err(e) = exec_batch(conn, sql).await {
            rollback(conn).await;
            return Err(ep.query_error(format!("{what}: {kind} {name}"))(e));
        }
    }
    commit(conn).await.map_err(ep.query_error(what))?;
    Ok(found.into_iter().map(|(kind, name)| format!("{kind} {name}")).collect())
}

/// ferry's triggers (first: they name ferry's tables) and tables.
async fn objects(ep: &SqliteEndpoint, conn: &mut SqliteConnection) -> Result<Vec<(String, String)>, ConnectorError> {
    let rows = sqlx::query(
        "SELECT type, name FROM sqlite_schema WHERE type IN ('trigger', 'table') AND name LIKE 'ferry\\_%' ESCAPE '\\' \
         ORDER BY type = 'table', name",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(ep.query_error("listing ferry's triggers and tables"))?;
    Ok(rows.iter().map(|r| (r.get::<String, _>(0), r.get::<String, _>(1))).collect())
}
