//! `ferry check` on a PostgreSQL endpoint: what logical replication needs of a source
//! (wal_level, free slots and senders, the REPLICATION attribute, rights to publish the
//! tables, a key on every table), the WAL retention risk, and what a target and two-way
//! need. Read-only; each problem with its fix.

use sqlx::Row as _;
use sqlx::postgres::PgConnection;

use super::{PgEndpoint, ident, qualified, schema};
use crate::connector::registry::{SourceCheck, SourceFindings, TargetTable};
use crate::model::TableName;

/// A bare table name as PostgreSQL names it (`public`).
pub fn qualify(name: &TableName) -> TableName {
    match &name.schema {
        Some(_) => name.clone(),
        None => TableName { schema: Some("public".into()), name: name.name.clone() },
    }
}

async fn setting(conn: &mut PgConnection, name: &str) -> Option<String> {
    sqlx::query_scalar("SELECT current_setting($1, true)").bind(name).fetch_one(&mut *conn).await.ok().flatten()
}

/// As a source.
pub async fn check_source(ep: &PgEndpoint, patterns: &[String], how: &SourceCheck) -> SourceFindings {
    let mut f = SourceFindings::default();
    let mut conn = match ep.connect().await {
        Ok(c) => c,
        Err(e) => {
            f.problems.push(e.to_string());
            return f;
        }
    };
    let problem = |p: String, fix: String| format!("endpoint {}: {p}\n  fix: {fix}", ep.name);
    let wal = setting(&mut conn, "wal_level").await.unwrap_or_default();
    if wal != "logical" {
        f.problems.push(problem(
            format!("wal_level is {wal:?}: the server writes no logical change stream"),
            "ALTER SYSTEM SET wal_level = logical; then restart the server".into(),
        ));
    }
    let row = sqlx::query(
        "SELECT current_setting('max_replication_slots')::int - (SELECT count(*) FROM pg_replication_slots)::int, \
         current_setting('max_wal_senders')::int - (SELECT count(*) FROM pg_stat_replication)::int, \
         (SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user), \
         current_setting('max_slot_wal_keep_size')",
    )
    .fetch_one(&mut conn)
    .await;
    match row {
        Ok(r) => {
            let (slots, senders, replication, keep): (i32, i32, Option<bool>, String) =
                (r.get(0), r.get(1), r.get(2), r.get(3));
            if slots < 1 {
                f.problems.push(problem(
                    "no replication slot is free (max_replication_slots reached)".into(),
                    "raise max_replication_slots in postgresql.conf and restart, or drop unused slots (SELECT pg_drop_replication_slot(name))".into(),
                ));
            }
            if senders < 1 {
                f.problems.push(problem(
                    "no WAL sender is free (max_wal_senders reached)".into(),
                    "raise max_wal_senders in postgresql.conf and restart".into(),
                ));
            }
            if replication != Some(true) {
                f.problems.push(problem(
                    format!("account {} may not stream changes (no REPLICATION attribute)", ep.user),
                    format!("ALTER ROLE {} REPLICATION", ident(&ep.user)),
                ));
            }
            if keep == "-1" {
                f.warnings.push(format!(
                    "endpoint {}: max_slot_wal_keep_size = -1: a stopped ferry makes the server keep WAL without limit (a full disk stops the server)\n  fix: ALTER SYSTEM SET max_slot_wal_keep_size = '50GB' (sized for the longest outage to ride out); SELECT pg_reload_conf(); a slot past it is invalidated and ferry stops, asking for a new snapshot",
                    ep.name
                ));
            }
        }
        Err(e) => f.problems.push(ep.error("reading the replication settings")(e).to_string()),
    }
    let names = match schema::matching_tables(ep, &mut conn, patterns).await {
        Ok(n) => n,
        Err(e) => {
            f.problems.push(e.to_string());
            return f;
        }
    };
    if names.is_empty() && how.require_match {
        f.problems.push(problem(
            format!("the task's tables ({}) match no table in database {}", patterns.join(", "), ep.database),
            "correct the task's tables (schema.table globs)".into(),
        ));
    }
    for name in &names {
        match schema::describe(ep, &mut conn, name).await {
            Ok(Some(t)) => {
                let owner: Option<bool> = sqlx::query_scalar(
                    "SELECT pg_has_role(current_user, c.relowner, 'USAGE') OR (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) FROM pg_class c WHERE c.oid = to_regclass($1)",
                )
                .bind(qualified(name))
                .fetch_optional(&mut conn)
                .await
                .ok()
                .flatten();
                if owner == Some(false) {
                    f.problems.push(problem(
                        format!("account {} cannot add table {name} to a publication (it does not own it)", ep.user),
                        format!(
                            "ALTER TABLE {} OWNER TO {} (or run ferry as the owner or a superuser)",
                            qualified(name),
                            ident(&ep.user)
                        ),
                    ));
                }
                f.tables.push(TargetTable {
                    name: t.name.clone(),
                    columns: Some(t.columns.iter().map(|c| c.name.clone()).collect()),
                });
            }
            Ok(None) => {}
            Err(e) => f.problems.push(e.to_string()),
        }
    }
    let create: Option<bool> = sqlx::query_scalar("SELECT has_database_privilege(current_database(), 'CREATE')")
        .fetch_one(&mut conn)
        .await
        .ok();
    if create == Some(false) {
        f.problems.push(problem(
            format!("account {} may not create ferry's schema or a publication in database {}", ep.user, ep.database),
            format!("GRANT CREATE ON DATABASE {} TO {}", ident(&ep.database), ident(&ep.user)),
        ));
    }
    f
}

/// As a target of these tables.
pub async fn check_target(ep: &PgEndpoint, tables: &[TargetTable]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut conn = match ep.connect().await {
        Ok(c) => c,
        Err(e) => return vec![e.to_string()],
    };
    let create: Option<bool> = sqlx::query_scalar("SELECT has_database_privilege(current_database(), 'CREATE')")
        .fetch_one(&mut conn)
        .await
        .ok();
    if create == Some(false) {
        problems.push(format!(
            "endpoint {}: account {} may not create ferry's schema or tables in database {}\n  fix: GRANT CREATE ON DATABASE {} TO {}",
            ep.name,
            ep.user,
            ep.database,
            ident(&ep.database),
            ident(&ep.user)
        ));
    }
    let ro: Option<String> = setting(&mut conn, "default_transaction_read_only").await;
    if ro.as_deref() == Some("on") {
        problems.push(format!(
            "endpoint {}: sessions of account {} are read-only (default_transaction_read_only = on; a cutover freeze?)\n  fix: ferry cutover --unfreeze, or ALTER ROLE {} SET default_transaction_read_only = off",
            ep.name,
            ep.user,
            ident(&ep.user)
        ));
    }
    for t in tables {
        let name = qualify(&t.name);
        if let Ok(Some(existing)) = schema::describe_loose(ep, &mut conn, &name).await
            && let Some(cols) = &t.columns
        {
            for c in cols {
                if existing.column_index(c).is_none() {
                    problems.push(format!(
                        "endpoint {}: table {name} has no column {c} (the source has)\n  fix: add it, or map the column with [[task.map]]",
                        ep.name
                    ));
                }
            }
        }
    }
    problems
}

/// What two-way needs on this endpoint (as a source and as a target): replication
/// origins for loop prevention (superuser, or EXECUTE on the origin functions).
/// Commit timestamps are not needed: row versions carry their own times
/// (`versions.rs`). Ownership of each table (for ferry's trigger and its replica
/// identity) is checked with the source.
pub async fn check_two_way(ep: &PgEndpoint) -> Vec<String> {
    let mut conn = match ep.connect().await {
        Ok(c) => c,
        Err(e) => return vec![e.to_string()],
    };
    let mut problems = Vec::new();
    let origins: Option<bool> = sqlx::query_scalar(
        "SELECT has_function_privilege('pg_replication_origin_create(text)', 'EXECUTE') \
         AND has_function_privilege('pg_replication_origin_session_setup(text)', 'EXECUTE') \
         AND has_function_privilege('pg_replication_origin_session_is_setup()', 'EXECUTE')",
    )
    .fetch_one(&mut conn)
    .await
    .ok();
    if origins == Some(false) {
        problems.push(format!(
            "endpoint {}: account {} may not use replication origins: two-way marks ferry's writes with one so they are not sent back (loop prevention)\n  fix: GRANT EXECUTE ON FUNCTION pg_replication_origin_create(text), pg_replication_origin_session_setup(text), pg_replication_origin_session_is_setup() TO {} (as a superuser), or run ferry as a superuser",
            ep.name,
            ep.user,
            ident(&ep.user)
        ));
    }
    problems
}
