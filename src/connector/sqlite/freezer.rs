//! SQLite's freezer as the registry asks for it: guard triggers on every user table
//! (freeze.rs), proven by a write as an application makes it.

use super::{Access, SqliteEndpoint, close, exec_batch, freeze, literal, schema};
use crate::connector::ConnectorError;
use crate::connector::registry::FreezeOutcome;

/// Freezes the file and tries a probe write.
pub async fn freeze_and_probe(s: &SqliteEndpoint, reason: &str) -> Result<FreezeOutcome, ConnectorError> {
    let mut conn = s.connect(Access::ReadWrite).await?;
    let frozen = freeze::freeze(s, &mut conn, reason).await;
    close(conn).await;
    Ok(FreezeOutcome { count: frozen?, probe: probe(s).await })
}

/// Lifts the freeze.
pub async fn unfreeze(s: &SqliteEndpoint) -> Result<(), ConnectorError> {
    let mut conn = s.connect(Access::ReadWrite).await?;
    let r = freeze::unfreeze(s, &mut conn).await;
    close(conn).await;
    r
}

/// Since when (µs) the file is frozen, if it is.
pub async fn frozen_since(s: &SqliteEndpoint) -> Result<Option<i64>, ConnectorError> {
    let mut conn = s.connect(Access::ReadOnly).await?;
    let r = freeze::frozen_since(s, &mut conn).await;
    close(conn).await;
    r
}

/// A write as an application makes it, rolled back: `Ok(Err(message))` when refused.
async fn probe(s: &SqliteEndpoint) -> Result<Result<(), String>, ConnectorError> {
    let mut conn = s.connect(Access::ReadWrite).await?;
    let tables = schema::user_tables(s, &mut conn).await;
    let result = match tables {
        Ok(tables) => match tables.first() {
            // No user table: nothing an application could write.
            None => Ok(Err("no user tables to write".to_string())),
            Some(t) => {
                let t = literal::ident(t);
                // The freeze trigger fires before any constraint is checked.
                let sql = format!("BEGIN; INSERT INTO {t} DEFAULT VALUES; ROLLBACK;");
                match exec_batch(&mut conn, sql).await {
                    Ok(()) => Ok(Ok(())),
                    Err(e) => {
                        let _ = exec_batch(&mut conn, "ROLLBACK".into()).await;
                        let msg = e.to_string();
                        if msg.contains(freeze::FROZEN_MESSAGE) { Ok(Err(msg)) } else { Ok(Ok(())) }
                    }
                }
            }
        },
        Err(e) => Err(e),
    };
    close(conn).await;
    result
}
