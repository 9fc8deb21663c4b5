//! Everything ferry added to a PostgreSQL server: the `ferry` schema, each direction's
//! replication slot, publication and replication origins, and for two-way the trigger
//! on each table and the replica identity it set to FULL (put back as it was).

use sqlx::Row as _;

use super::names::IDENTITY_TABLE;
use super::versions::TRIGGER;
use super::{FERRY_SCHEMA, PgEndpoint, ferry_table, ident};
use crate::connector::ConnectorError;

/// How a replica identity ferry set reads in the list.
const IDENTITY_ITEM: &str = "replica identity FULL of ";
const BACK_TO: &str = " (set by ferry for two-way; back to ";

/// The `ALTER TABLE` that gives a table back the replica identity ferry recorded
/// (`d`efault, `n`othing, `i:INDEX`).
fn restore_identity(item: &str) -> Option<String> {
    let (tbl, previous) = item.strip_prefix(IDENTITY_ITEM)?.split_once(BACK_TO)?;
    let previous = previous.strip_suffix(')')?;
    let identity = match previous {
        "n" => "NOTHING".to_string(),
        p => match p.strip_prefix("i:") {
            Some(index) => format!("USING INDEX {}", ident(index)),
            None => "DEFAULT".to_string(),
        },
    };
    Some(format!("ALTER TABLE IF EXISTS {tbl} REPLICA IDENTITY {identity}"))
}

/// What ferry added, one line each, read without writing.
pub async fn installed(ep: &PgEndpoint) -> Result<Vec<String>, ConnectorError> {
    let mut conn = ep.connect().await?;
    let mut out = Vec::new();
    let schema: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
        .bind(FERRY_SCHEMA)
        .fetch_one(&mut conn)
        .await
        .map_err(ep.error("looking for ferry's schema"))?;
    if schema {
        out.push(format!("schema {FERRY_SCHEMA} (ferry's tables)"));
        let sql = format!("SELECT tbl, previous FROM {} ORDER BY 1", ferry_table(IDENTITY_TABLE));
        // A schema from before two-way has no such table.
        if let Ok(rows) = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(&mut conn).await {
            for r in rows {
                let (tbl, previous): (String, String) = (r.get(0), r.get(1));
                out.push(format!("{IDENTITY_ITEM}{tbl}{BACK_TO}{previous})"));
            }
        }
    }
    let triggers = sqlx::query(
        "SELECT 'trigger ' || tgname || ' on ' || tgrelid::regclass::text FROM pg_trigger WHERE tgname = $1 ORDER BY 1",
    )
    .bind(TRIGGER)
    .fetch_all(&mut conn)
    .await
    .map_err(ep.error("listing ferry's triggers"))?;
    out.extend(triggers.iter().map(|r| r.get::<String, _>(0)));
    let rows = sqlx::query(
        "SELECT 'replication slot ' || slot_name FROM pg_replication_slots WHERE slot_name LIKE 'ferry\\_s\\_%' AND database = current_database() \
         UNION ALL SELECT 'publication ' || pubname FROM pg_publication WHERE pubname LIKE 'ferry\\_p\\_%' \
         UNION ALL SELECT 'replication origin ' || roname FROM pg_replication_origin WHERE roname LIKE 'ferry\\_o\\_%' \
         UNION ALL SELECT 'role ' || rolname FROM pg_roles WHERE rolname = 'ferry_freeze_probe' ORDER BY 1",
    )
    .fetch_all(&mut conn)
    .await
    .map_err(ep.error("listing ferry's slots, publications and origins"))?;
    out.extend(rows.iter().map(|r| r.get::<String, _>(0)));
    Ok(out)
}

/// Removes everything ferry added; returns what was removed. A frozen server is refused.
pub async fn uninstall(ep: &PgEndpoint) -> Result<Vec<String>, ConnectorError> {
    if super::freezer::frozen_since(ep).await?.is_some() {
        return Err(ConnectorError::Setup {
            endpoint: ep.name.clone(),
            problem: "the server is frozen for a cutover".into(),
            fix: "finish or roll back the cutover (it lifts the freeze) before uninstalling".into(),
        });
    }
    let mut found = installed(ep).await?;
    // The schema goes last: the probe role's grants on it go with the role first, and
    // the replica identities are read from it.
    found.sort_by_key(|i| i.starts_with("schema "));
    let mut conn = ep.connect().await?;
    for item in &found {
        let sql = if let Some(slot) = item.strip_prefix("replication slot ") {
            format!("SELECT pg_drop_replication_slot({})", super::string_literal(slot))
        } else if let Some(p) = item.strip_prefix("publication ") {
            format!("DROP PUBLICATION IF EXISTS {}", ident(p))
        } else if let Some(r) = item.strip_prefix("role ") {
            format!("DROP OWNED BY {r}; DROP ROLE IF EXISTS {r}", r = ident(r))
        } else if let Some(restore) = restore_identity(item) {
            restore
        } else if let Some(on) = item.strip_prefix(&format!("trigger {TRIGGER} on ")) {
            format!("DROP TRIGGER IF EXISTS {} ON {on}", ident(TRIGGER))
        } else if let Some(o) = item.strip_prefix("replication origin ") {
            format!("SELECT pg_replication_origin_drop({})", super::string_literal(o))
        } else {
            format!("DROP SCHEMA IF EXISTS {} CASCADE", ident(FERRY_SCHEMA))
        };
        ep.exec(&mut conn, &format!("removing {item}"), &sql).await?;
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_replica_identities_are_put_back() {
        let item = |p: &str| format!("{IDENTITY_ITEM}\"s\".\"t\"{BACK_TO}{p})");
        assert_eq!(
            restore_identity(&item("d")).as_deref(),
            Some("ALTER TABLE IF EXISTS \"s\".\"t\" REPLICA IDENTITY DEFAULT")
        );
        assert_eq!(
            restore_identity(&item("i:t_k")).as_deref(),
            Some("ALTER TABLE IF EXISTS \"s\".\"t\" REPLICA IDENTITY USING INDEX \"t_k\"")
        );
        assert_eq!(restore_identity("schema ferry (ferry's tables)"), None);
    }
}
