//! Row versions for two-way tasks on PostgreSQL, as for MySQL (DESIGN.md "Two-way").
//!
//! The change stream gives a change's row images but not which write a row's current
//! state came from, and conflict resolution needs that on both sides. So each replicated
//! table gets a version table in the `ferry` schema holding, per primary key, the site
//! and microsecond time of the row's last write, or its deletion (a tombstone). An AFTER
//! trigger keeps it current for application writes (a `SECURITY DEFINER` function owned
//! by ferry's account, so an application role needs no rights on ferry's tables);
//! ferry's applier sets `ferry.apply = on` in its session (the trigger then stays out)
//! and writes the incoming version itself. The version table is in the direction's
//! publication with `REPLICA IDENTITY FULL`: the trigger's change travels in the same
//! transaction as the write it versions, its new image is the change's version and its
//! old image the version the change replaced (`Change::seen`, or a tombstone for an
//! insert, `Change::prior`).
//!
//! Two-way also needs whole before-images of the user tables' updates and deletes
//! (conflict detection compares them with the target's row): the source sets their
//! replica identity to FULL and records what it was in `ferry.ferry_identity`, so
//! `ferry uninstall` puts it back.
//!
//! The write time is the trigger's clock (`clock_timestamp()`), as MySQL's triggers
//! use theirs: a commit timestamp is not known inside the transaction, and a row's
//! version must be the same value on both sides.

use std::collections::HashMap;
use std::sync::Arc;

use sqlx::Row as _;
use sqlx::postgres::PgConnection;

use super::names::IDENTITY_TABLE;
use super::values::encode;
use super::{FERRY_SCHEMA, PgEndpoint, ferry_table, ident, qualified, string_literal};
use crate::connector::ConnectorError;
use crate::connector::own_names::{readable, short_hash};
use crate::model::conflict::{Stamp, StampEvent};
use crate::model::{Change, Key, Row, SiteId, TableName, TableSchema, Value};

/// Version table columns after the key columns: the write's site.
pub const SITE_COLUMN: &str = "ferry_site";
/// Write time (µs since the epoch, UTC).
pub const TS_COLUMN: &str = "ferry_ts";
/// True for a deletion (tombstone).
pub const DELETED_COLUMN: &str = "ferry_deleted";
/// Prefix of version tables in the `ferry` schema.
pub const VERSION_PREFIX: &str = "ferry_v_";
/// Prefix of the trigger functions in the `ferry` schema.
const FUNCTION_PREFIX: &str = "ferry_vf_";
/// The trigger's name on each user table.
pub const TRIGGER: &str = "ferry_version";
/// The session setting that keeps the triggers out of ferry's own writes.
pub const APPLY_SETTING: &str = "ferry.apply";

/// Name (in the `ferry` schema) of the version table of a user table (at most 63 bytes).
pub fn table_for(user: &TableName) -> String {
    let full = user.to_string();
    format!("{VERSION_PREFIX}{}_{}", readable(&full, 44).to_ascii_lowercase(), short_hash(&full))
}

fn function_for(user: &TableName) -> String {
    let full = user.to_string();
    format!("{FUNCTION_PREFIX}{}_{}", readable(&full, 43).to_ascii_lowercase(), short_hash(&full))
}

/// `"ferry"."version table"`.
pub fn qualified_version(user: &TableName) -> String {
    ferry_table(&table_for(user))
}

/// Creates each table's version table and the trigger that versions application writes
/// as `site`. Idempotent: what is already as wanted is left alone (a trigger replaced
/// on every start would lock the table each time).
pub async fn install(
    ep: &PgEndpoint,
    conn: &mut PgConnection,
    tables: &[Arc<TableSchema>],
    site: &SiteId,
) -> Result<(), ConnectorError> {
    for t in tables.iter().filter(|t| !t.primary_key.is_empty()) {
        let keys: Vec<String> = t
            .primary_key
            .iter()
            .map(|&i| format!("{} {} NOT NULL", ident(&t.columns[i].name), t.columns[i].decl_type))
            .collect();
        let key_list = t.key_columns().iter().map(|c| ident(c)).collect::<Vec<_>>().join(", ");
        let version = qualified_version(&t.name);
        let exists: Option<String> =
            sqlx::query_scalar("SELECT relreplident::text FROM pg_class WHERE oid = to_regclass($1)")
                .bind(&version)
                .fetch_optional(&mut *conn)
                .await
                .map_err(ep.error(format!("looking up the version table of {}", t.name)))?;
        if exists.as_deref() != Some("f") {
            let sql = format!(
                "CREATE TABLE IF NOT EXISTS {version} ({}, {SITE_COLUMN} text NOT NULL, {TS_COLUMN} bigint NOT NULL, \
                 {DELETED_COLUMN} boolean NOT NULL, PRIMARY KEY ({key_list})); \
                 ALTER TABLE {version} REPLICA IDENTITY FULL",
                keys.join(", ")
            );
            ep.exec(conn, &format!("creating the version table of {} in schema {FERRY_SCHEMA}", t.name), &sql).await?;
        }
        install_trigger(ep, conn, t, site).await?;
    }
    Ok(())
}

/// The trigger function's body for a table.
fn function_body(t: &TableSchema, site: &SiteId) -> String {
    let cols = t.key_columns();
    let key_list = cols.iter().map(|c| ident(c)).collect::<Vec<_>>().join(", ");
    let image = |of: &str| cols.iter().map(|c| format!("{of}.{}", ident(c))).collect::<Vec<_>>().join(", ");
    let upsert = |of: &str, deleted: &str| {
        format!(
            "INSERT INTO {} ({key_list}, {SITE_COLUMN}, {TS_COLUMN}, {DELETED_COLUMN}) VALUES ({}, {}, \
             (extract(epoch FROM clock_timestamp()) * 1000000)::bigint, {deleted}) ON CONFLICT ({key_list}) DO UPDATE \
             SET {SITE_COLUMN} = excluded.{SITE_COLUMN}, {TS_COLUMN} = excluded.{TS_COLUMN}, \
             {DELETED_COLUMN} = excluded.{DELETED_COLUMN};",
            qualified_version(&t.name),
            image(of),
            string_literal(site.as_str())
        )
    };
    format!(
        "\nBEGIN\n  IF current_setting({setting}, true) = 'on' THEN RETURN NULL; END IF;\n  \
         IF TG_OP = 'DELETE' OR (TG_OP = 'UPDATE' AND ROW({old}) IS DISTINCT FROM ROW({new})) THEN\n    {tomb}\n  END IF;\n  \
         IF TG_OP <> 'DELETE' THEN\n    {live}\n  END IF;\n  RETURN NULL;\nEND\n",
        setting = string_literal(APPLY_SETTING),
        old = image("OLD"),
        new = image("NEW"),
        tomb = upsert("OLD", "true"),
        live = upsert("NEW", "false"),
    )
}

/// The AFTER trigger of a table and its function, replaced only when they differ.
async fn install_trigger(
    ep: &PgEndpoint,
    conn: &mut PgConnection,
    t: &TableSchema,
    site: &SiteId,
) -> Result<(), ConnectorError> {
    let function = function_for(&t.name);
    let body = function_body(t, site);
    let current = sqlx::query(
        "SELECT p.prosrc, EXISTS (SELECT 1 FROM pg_trigger g WHERE g.tgrelid = to_regclass($3) AND g.tgname = $4 AND g.tgfoid = p.oid) \
         FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = $1 AND p.proname = $2",
    )
    .bind(FERRY_SCHEMA)
    .bind(&function)
    .bind(qualified(&t.name))
    .bind(TRIGGER)
    .fetch_optional(&mut *conn)
    .await
    .map_err(ep.error(format!("reading ferry's trigger on {}", t.name)))?;
    if let Some(r) = current
        && r.get::<String, _>(0) == body
        && r.get::<bool, _>(1)
    {
        return Ok(());
    }
    let name = ferry_table(&function);
    let sql = format!(
        "CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER \
         SET search_path = pg_catalog, pg_temp AS $ferry${body}$ferry$; \
         REVOKE ALL ON FUNCTION {name}() FROM PUBLIC; \
         CREATE OR REPLACE TRIGGER {TRIGGER} AFTER INSERT OR UPDATE OR DELETE ON {} FOR EACH ROW EXECUTE FUNCTION {name}()",
        qualified(&t.name)
    );
    ep.exec(
        conn,
        &format!(
            "creating ferry's trigger on {} (two-way versions rows with it; the account must own the table)",
            t.name
        ),
        &sql,
    )
    .await
}

/// Gives each table a replica identity of FULL (whole before-images in the stream),
/// recording what it had in `ferry.ferry_identity` the first time.
pub async fn full_identity(
    ep: &PgEndpoint,
    conn: &mut PgConnection,
    tables: &[Arc<TableSchema>],
) -> Result<(), ConnectorError> {
    for t in tables {
        let name = qualified(&t.name);
        let identity: Option<String> =
            sqlx::query_scalar("SELECT relreplident::text FROM pg_class WHERE oid = to_regclass($1)")
                .bind(&name)
                .fetch_optional(&mut *conn)
                .await
                .map_err(ep.error(format!("reading the replica identity of {}", t.name)))?;
        let Some(mut identity) = identity.filter(|i| i != "f") else { continue };
        if identity == "i" {
            let index: Option<String> = sqlx::query_scalar(
                "SELECT c.relname::text FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
                 WHERE i.indrelid = to_regclass($1) AND i.indisreplident",
            )
            .bind(&name)
            .fetch_optional(&mut *conn)
            .await
            .map_err(ep.error(format!("reading the replica identity index of {}", t.name)))?;
            identity = format!("i:{}", index.unwrap_or_default());
        }
        let record = format!(
            "INSERT INTO {} (tbl, previous) VALUES ($1, $2) ON CONFLICT (tbl) DO NOTHING",
            ferry_table(IDENTITY_TABLE)
        );
        sqlx::query(sqlx::AssertSqlSafe(record))
            .bind(&name)
            .bind(&identity)
            .execute(&mut *conn)
            .await
            .map_err(ep.error("recording a table's replica identity in ferry.ferry_identity"))?;
        ep.exec(
            conn,
            &format!("setting the replica identity of {} to FULL (two-way compares whole before-images; the account must own the table)", t.name),
            &format!("ALTER TABLE {name} REPLICA IDENTITY FULL"),
        )
        .await?;
        tracing::info!(endpoint = %ep.name, table = %t.name, was = %identity, "replica identity set to FULL for two-way (ferry uninstall puts it back)");
    }
    Ok(())
}

/// `unnest($first::text[], …) WITH ORDINALITY AS u(k0, …, i)` over a table's key
/// columns, and the join condition of a table aliased `alias` on it.
fn keys_join(t: &TableSchema, types: &[String], alias: &str, first: usize) -> (String, String) {
    let n = t.primary_key.len();
    let arrays: Vec<String> = (0..n).map(|i| format!("${}::text[]", first + i)).collect();
    let names: Vec<String> = (0..n).map(|i| format!("k{i}")).collect();
    let cond: Vec<String> = t
        .key_columns()
        .iter()
        .zip(types)
        .enumerate()
        .map(|(i, (c, ty))| format!("{alias}.{} = u.k{i}::{ty}", ident(c)))
        .collect();
    (format!("unnest({}) WITH ORDINALITY AS u({}, i)", arrays.join(", "), names.join(", ")), cond.join(" AND "))
}

/// The declared types of a table's key columns.
fn key_types(t: &TableSchema) -> Vec<String> {
    t.primary_key.iter().map(|&i| t.columns[i].decl_type.clone()).collect()
}

/// Binds keys as one text array per key column.
fn bind_keys<'q>(
    mut q: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    width: usize,
    keys: &[&Key],
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    for i in 0..width {
        let col: Vec<Option<String>> = keys.iter().map(|k| k.get(i).and_then(encode)).collect();
        q = q.bind(col);
    }
    q
}

/// The stamps of these keys of table `t` (the target's description), by index in
/// `keys`; with `lock`, locked for the rest of the transaction.
pub async fn load(
    ep: &PgEndpoint,
    conn: &mut PgConnection,
    t: &TableSchema,
    keys: &[&Key],
    lock: bool,
) -> Result<HashMap<usize, Stamp>, ConnectorError> {
    let mut out = HashMap::new();
    if keys.is_empty() || t.primary_key.is_empty() {
        return Ok(out);
    }
    let (from, cond) = keys_join(t, &key_types(t), "v", 1);
    let sql = format!(
        "SELECT u.i, v.{SITE_COLUMN}, v.{TS_COLUMN}, v.{DELETED_COLUMN} FROM {from} JOIN {} AS v ON {cond}{}",
        qualified_version(&t.name),
        if lock { " FOR UPDATE OF v" } else { "" }
    );
    for (n, part) in keys.chunks(5_000).enumerate() {
        let q = bind_keys(sqlx::query(sqlx::AssertSqlSafe(sql.clone())), t.primary_key.len(), part);
        let rows =
            q.fetch_all(&mut *conn).await.map_err(ep.error(format!("reading the row versions of {}", t.name)))?;
        for r in rows {
            let i: i64 = r.get(0);
            let stamp = Stamp { site: SiteId::new(&r.get::<String, _>(1)), ts: r.get(2), deleted: r.get(3) };
            out.insert(n * 5_000 + usize::try_from(i - 1).unwrap_or(0), stamp);
        }
    }
    Ok(out)
}

/// Writes stamps of keys of table `t` (upserts; each key once).
pub async fn store(
    ep: &PgEndpoint,
    conn: &mut PgConnection,
    t: &TableSchema,
    entries: &[(&Key, &Stamp)],
) -> Result<(), ConnectorError> {
    if entries.is_empty() || t.primary_key.is_empty() {
        return Ok(());
    }
    let n = t.primary_key.len();
    let key_list = t.key_columns().iter().map(|c| ident(c)).collect::<Vec<_>>().join(", ");
    let casts: Vec<String> = key_types(t).iter().enumerate().map(|(i, ty)| format!("u.k{i}::{ty}")).collect();
    let arrays: Vec<String> = (0..n).map(|i| format!("${}::text[]", i + 1)).collect();
    let names: Vec<String> = (0..n).map(|i| format!("k{i}")).collect();
    let sql = format!(
        "INSERT INTO {} ({key_list}, {SITE_COLUMN}, {TS_COLUMN}, {DELETED_COLUMN}) \
         SELECT {}, u.s, u.t, u.d FROM unnest({}, ${}::text[], ${}::bigint[], ${}::boolean[]) AS u({}, s, t, d) \
         ON CONFLICT ({key_list}) DO UPDATE SET {SITE_COLUMN} = excluded.{SITE_COLUMN}, {TS_COLUMN} = excluded.{TS_COLUMN}, \
         {DELETED_COLUMN} = excluded.{DELETED_COLUMN}",
        qualified_version(&t.name),
        casts.join(", "),
        arrays.join(", "),
        n + 1,
        n + 2,
        n + 3,
        names.join(", "),
    );
    for part in entries.chunks(5_000) {
        let keys: Vec<&Key> = part.iter().map(|(k, _)| *k).collect();
        let q = bind_keys(sqlx::query(sqlx::AssertSqlSafe(sql.clone())), n, &keys)
            .bind(part.iter().map(|(_, s)| s.site.as_str().to_string()).collect::<Vec<_>>())
            .bind(part.iter().map(|(_, s)| s.ts).collect::<Vec<_>>())
            .bind(part.iter().map(|(_, s)| s.deleted).collect::<Vec<_>>());
        q.execute(&mut *conn).await.map_err(ep.error(format!("writing the row versions of {}", t.name)))?;
    }
    Ok(())
}

/// The stamp of a version table row as the stream decodes it (key columns, site, µs,
/// deleted as 1/0).
fn stamp_of(row: &Row) -> Option<Stamp> {
    let n = row.len().checked_sub(3)?;
    let site = match row.get(n)? {
        Value::Text(s) => SiteId::new(s),
        _ => return None,
    };
    let int = |v: &Value| match v {
        Value::Int(i) => Some(*i),
        Value::UInt(u) => i64::try_from(*u).ok(),
        _ => None,
    };
    Some(Stamp { site, ts: int(row.get(n + 1)?)?, deleted: int(row.get(n + 2)?)? != 0 })
}

/// A version table's change from the stream, as the stamp event of user table `user`.
pub fn stamp_event(user: &TableName, change: &Change) -> StampEvent {
    StampEvent {
        table: user.clone(),
        key: change.key.clone(),
        before: change.before.as_ref().and_then(stamp_of),
        after: change.after.as_ref().and_then(stamp_of),
    }
}

/// Whether a table of the stream is a version table.
pub fn is_version_table(name: &TableName) -> bool {
    name.schema.as_deref() == Some(FERRY_SCHEMA) && name.name.starts_with(VERSION_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_short_unique_and_readable() {
        let a = TableName { schema: Some("a_b".into()), name: "c".into() };
        let b = TableName { schema: Some("a".into()), name: "b_c".into() };
        assert_ne!(table_for(&a), table_for(&b));
        assert!(table_for(&a).starts_with("ferry_v_a_b_c_"));
        let long = TableName { schema: Some("D".repeat(64)), name: "t".repeat(64) };
        assert!(table_for(&long).len() <= 63 && function_for(&long).len() <= 63);
        assert!(is_version_table(&TableName { schema: Some("ferry".into()), name: table_for(&a) }));
    }

    #[test]
    fn version_rows_read_as_stamps() {
        let row = vec![Value::Int(7), Value::Text("dc-a".into()), Value::Int(42), Value::Int(1)];
        assert_eq!(stamp_of(&row), Some(Stamp { site: SiteId::new("dc-a"), ts: 42, deleted: true }));
        assert_eq!(stamp_of(&vec![Value::Int(1)]), None);
    }
}
