//! Row versions for two-way tasks on MySQL/MariaDB.
//!
//! The binlog gives a change's row images but not which write a row's current state came
//! from, and conflict resolution needs that on both sides (DESIGN.md "Two-way"). So each
//! replicated table gets a version table in the `ferry` database holding, per primary
//! key, the site and microsecond time of the row's last write, or its deletion (a
//! tombstone). Three AFTER triggers keep it current for application writes; ferry's
//! applier sets `@ferry_apply` (the triggers then stay out) and writes the incoming
//! version itself. The trigger's row event travels in the same binlog transaction as the
//! write it versions: its after-image is the change's version, its before-image the
//! version the change replaced (`Change::seen`, or a tombstone for an insert).
//!
//! Loop prevention: the applier's session runs with a server id derived from the origin
//! site of what it writes (`server_id::apply_server_id`), so its events, DDL included, carry that
//! id and the reverse direction drops them. Where the account may not set server_id, it
//! writes a marker row (`ferry.ferry_marker`) in every applied transaction instead.

use std::collections::HashMap;
use std::sync::Arc;

use mysql_async::Conn;
use mysql_async::prelude::Queryable;

use super::names::MARKER_TABLE;
use super::schema::{key_in, qualified};
use super::values::{decode_value, kinds, param_len, to_param};
use super::{FERRY_DB, MysqlEndpoint, ident, string_literal};
use crate::connector::ConnectorError;
use crate::connector::own_names::{readable, short_hash};
use crate::model::{HashKey, Key, SiteId, TableName, TableSchema, Value};

/// Version table columns after the key columns.
pub const SITE_COLUMN: &str = "ferry_site";
/// Write time (µs since the epoch, UTC).
pub const TS_COLUMN: &str = "ferry_ts";
/// 1 for a deletion (tombstone).
pub const DELETED_COLUMN: &str = "ferry_deleted";
/// Prefix of version tables in the `ferry` database.
pub const VERSION_PREFIX: &str = "ferry_v_";
/// Prefix of ferry's triggers (in the user table's database).
pub const TRIGGER_PREFIX: &str = "ferry_";
/// The session variable that keeps the triggers out of ferry's own writes.
pub const APPLY_FLAG: &str = "@ferry_apply";

/// The version of a row: where and when it was last written, and whether that write
/// deleted it (the rule every store shares).
pub use crate::model::conflict::Stamp;

/// How the applier marks its transactions as coming from the source's site.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marking {
    /// The session's server id (events carry it, DDL included).
    ServerId,
    /// A marker row in every transaction (the account may not set server_id).
    MarkerRow,
}

/// Name (in the `ferry` database) of the version table of a user table.
pub fn table_for(user: &TableName) -> String {
    let full = user.to_string();
    format!("{VERSION_PREFIX}{}_{}", readable(&full, 45), short_hash(&full))
}

/// `ferry`.`version table`, quoted.
fn qualified_version(user: &TableName) -> String {
    format!("{}.{}", ident(FERRY_DB), ident(&table_for(user)))
}

/// Name of one of ferry's triggers on a user table (`i`, `u` or `d`).
fn trigger_name(user: &TableName, op: char) -> String {
    let full = user.to_string();
    format!("{TRIGGER_PREFIX}{op}_{}_{}", readable(&user.name, 40), short_hash(&full))
}

/// Whether a statement creates or drops one of ferry's triggers (not a schema change to
/// carry or warn about).
pub fn is_own_trigger_ddl(sql: &str) -> bool {
    let upper = sql.to_ascii_uppercase();
    upper.contains(" TRIGGER ") && upper.contains(&format!("`{}", TRIGGER_PREFIX.to_ascii_uppercase()))
}

/// The comment that tags a schema change ferry applied with its origin site (read back
/// by the reverse direction where server ids cannot mark it).
pub fn ddl_tag(origin: &SiteId) -> String {
    format!("/* ferry:origin={} */ ", origin.as_str().replace("*/", ""))
}

/// The origin site a tagged schema change names ([`ddl_tag`]).
pub fn ddl_origin(sql: &str) -> Option<SiteId> {
    let rest = sql.trim_start().strip_prefix("/* ferry:origin=")?;
    let end = rest.find(" */")?;
    Some(SiteId::new(&rest[..end]))
}

/// Creates the marker table, and for each table its version table and (with `triggers`)
/// the three triggers that version application writes as `site`. Idempotent; the
/// triggers are replaced, so they follow the table's current columns.
pub async fn install(
    ep: &MysqlEndpoint,
    conn: &mut Conn,
    tables: &[Arc<TableSchema>],
    site: &SiteId,
    triggers: bool,
) -> Result<(), ConnectorError> {
    let opts = "ENGINE=InnoDB DEFAULT CHARSET=utf8mb4";
    let marker = format!(
        "CREATE TABLE IF NOT EXISTS {}.{} (site VARCHAR(191) NOT NULL PRIMARY KEY, n BIGINT NOT NULL) {opts}",
        ident(FERRY_DB),
        ident(MARKER_TABLE)
    );
    ep.exec(conn, "creating ferry.ferry_marker", &marker).await?;
    for t in tables {
        if t.primary_key.is_empty() {
            continue;
        }
        let keys: Vec<String> = t
            .primary_key
            .iter()
            .map(|&i| {
                let c = &t.columns[i];
                let decl = if c.decl_type.is_empty() { "varchar(191)" } else { c.decl_type.as_str() };
                format!("{} {decl} NOT NULL", ident(&c.name))
            })
            .collect();
        let key_list = t.key_columns().iter().map(|c| ident(c)).collect::<Vec<_>>().join(", ");
        let sql = format!(
            "CREATE TABLE IF NOT EXISTS {} ({}, {SITE_COLUMN} VARCHAR(191) NOT NULL, {TS_COLUMN} BIGINT NOT NULL, \
             {DELETED_COLUMN} TINYINT NOT NULL, PRIMARY KEY ({key_list})) {opts}",
            qualified_version(&t.name),
            keys.join(", ")
        );
        ep.exec(conn, &format!("creating the version table of {} in the ferry database", t.name), &sql).await?;
        if triggers {
            install_triggers(ep, conn, t, site).await?;
        }
    }
    Ok(())
}

/// The clock that stamps row versions, µs since the epoch, as SQL: the server's UTC time
/// (what two-way last-writer-wins compares, and what the engine measures for skew).
pub const VERSION_NOW_US: &str = "CAST(TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', UTC_TIMESTAMP(6)) AS SIGNED)";

/// The three AFTER triggers of a table.
async fn install_triggers(
    ep: &MysqlEndpoint,
    conn: &mut Conn,
    t: &TableSchema,
    site: &SiteId,
) -> Result<(), ConnectorError> {
    let cols = t.key_columns();
    let key_list = cols.iter().map(|c| ident(c)).collect::<Vec<_>>().join(", ");
    let ts = VERSION_NOW_US;
    let upsert = |image: &str, deleted: u8| {
        let values = cols.iter().map(|c| format!("{image}.{}", ident(c))).collect::<Vec<_>>().join(", ");
        format!(
            "INSERT INTO {} ({key_list}, {SITE_COLUMN}, {TS_COLUMN}, {DELETED_COLUMN}) VALUES ({values}, {}, {ts}, {deleted}) \
             ON DUPLICATE KEY UPDATE {SITE_COLUMN} = VALUES({SITE_COLUMN}), {TS_COLUMN} = VALUES({TS_COLUMN}), \
             {DELETED_COLUMN} = VALUES({DELETED_COLUMN});",
            qualified_version(&t.name),
            string_literal(site.as_str())
        )
    };
    let same = |names: &mut dyn Iterator<Item = &str>| {
        names.map(|c| format!("OLD.{0} <=> NEW.{0}", ident(c))).collect::<Vec<_>>().join(" AND ")
    };
    let moved = same(&mut cols.iter().copied());
    // An update that leaves the row as it was is not in the binlog (row events log
    // changed rows only), so it must not move the version either: the other side would
    // never hear of it.
    let unchanged = same(&mut t.columns.iter().map(|c| c.name.as_str()));
    let bodies = [
        ('i', "INSERT", upsert("NEW", 0)),
        (
            'u',
            "UPDATE",
            format!(
                "IF NOT ({unchanged}) THEN IF NOT ({moved}) THEN {} END IF; {} END IF;",
                upsert("OLD", 1),
                upsert("NEW", 0)
            ),
        ),
        ('d', "DELETE", upsert("OLD", 1)),
    ];
    let db = t.name.schema.clone().unwrap_or_default();
    // Triggers already as wanted stay: every start (of both directions) would otherwise
    // replace them, each replacement a DDL statement in the binlog.
    let existing: Vec<(String, String)> = conn
        .exec(
            "SELECT TRIGGER_NAME, ACTION_STATEMENT FROM information_schema.TRIGGERS \
             WHERE EVENT_OBJECT_SCHEMA = ? AND EVENT_OBJECT_TABLE = ?",
            (db.as_str(), t.name.name.as_str()),
        )
        .await
        .map_err(ep.error(format!("reading the triggers of {}", t.name)))?;
    for (op, event, body) in bodies {
        let trigger = trigger_name(&t.name, op);
        let statement = format!("IF {APPLY_FLAG} IS NULL THEN {body} END IF");
        if existing.iter().any(|(n, s)| *n == trigger && *s == statement) {
            continue;
        }
        let name = format!("{}.{}", ident(&db), ident(&trigger));
        let sql = format!(
            "CREATE OR REPLACE TRIGGER {name} AFTER {event} ON {} FOR EACH ROW {statement}",
            qualified(&t.name)
        );
        match conn.query_drop(&sql).await {
            Ok(()) => {}
            Err(mysql_async::Error::Server(e)) if e.code == 1419 => {
                return Err(ConnectorError::Setup {
                    endpoint: ep.name.clone(),
                    problem: format!(
                        "cannot create ferry's triggers on {} (two-way versions rows with them): with binary logging on, the server allows it only to accounts with SUPER",
                        t.name
                    ),
                    fix: "SET GLOBAL log_bin_trust_function_creators = 1 (and log_bin_trust_function_creators = 1 in my.cnf), or give ferry's account SUPER".into(),
                });
            }
            Err(e) => {
                return Err(ep.error(format!(
                    "creating ferry's {event} trigger on {} (two-way versions rows with it; the account needs the TRIGGER privilege)",
                    t.name
                ))(e));
            }
        }
    }
    Ok(())
}

/// Drops ferry's triggers from a table (a two-way task removed or turned one-way).
pub async fn drop_triggers(ep: &MysqlEndpoint, conn: &mut Conn, t: &TableName) -> Result<(), ConnectorError> {
    let db = t.schema.clone().unwrap_or_default();
    for op in ['i', 'u', 'd'] {
        let sql = format!("DROP TRIGGER IF EXISTS {}.{}", ident(&db), ident(&trigger_name(t, op)));
        ep.exec(conn, &format!("dropping ferry's trigger on {t}"), &sql).await?;
    }
    Ok(())
}

/// Reads the stamps of these keys of a table (by key identity); with `lock`, locks them
/// for the rest of the transaction.
pub async fn load(
    ep: &MysqlEndpoint,
    conn: &mut Conn,
    table: &TableSchema,
    keys: &[&Key],
    lock: bool,
) -> Result<HashMap<HashKey, Stamp>, ConnectorError> {
    let mut out = HashMap::new();
    if keys.is_empty() || table.primary_key.is_empty() {
        return Ok(out);
    }
    let key_kinds = kinds(ep, &table.key_only())?;
    let cols = table.key_columns().iter().map(|c| ident(c)).collect::<Vec<_>>().join(", ");
    let width = table.primary_key.len();
    for chunk in keys.chunks(500) {
        let sql = format!(
            "SELECT {cols}, {SITE_COLUMN}, {TS_COLUMN}, {DELETED_COLUMN} FROM {} WHERE {}{}",
            qualified_version(&table.name),
            key_in(table, chunk.len()),
            if lock { " FOR UPDATE" } else { "" }
        );
        let params: Vec<mysql_async::Value> = chunk.iter().flat_map(|k| k.iter().map(to_param)).collect();
        let rows: Vec<mysql_async::Row> =
            conn.exec(sql, params).await.map_err(ep.error(format!("reading the row versions of {}", table.name)))?;
        for row in rows {
            let mut values = row.unwrap_raw();
            let rest = values.split_off(width.min(values.len()));
            let mut key: Key = Vec::with_capacity(width);
            for (v, kind) in values.into_iter().zip(&key_kinds) {
                key.push(decode_value(kind, v.unwrap_or(mysql_async::Value::NULL)).unwrap_or(Value::Null));
            }
            let text = |v: Option<&Option<mysql_async::Value>>| match v {
                Some(Some(mysql_async::Value::Bytes(b))) => String::from_utf8_lossy(b).into_owned(),
                _ => String::new(),
            };
            let int = |v: Option<&Option<mysql_async::Value>>| match v {
                Some(Some(mysql_async::Value::Int(i))) => *i,
                Some(Some(mysql_async::Value::UInt(u))) => *u as i64,
                Some(Some(mysql_async::Value::Bytes(b))) => String::from_utf8_lossy(b).parse().unwrap_or(0),
                _ => 0,
            };
            let stamp =
                Stamp { site: SiteId::new(&text(rest.first())), ts: int(rest.get(1)), deleted: int(rest.get(2)) != 0 };
            out.insert(HashKey(key), stamp);
        }
    }
    Ok(out)
}

/// Writes stamps of keys of a table (upserts), in statements under `budget` parameter bytes.
pub async fn store(
    conn: &mut Conn,
    budget: usize,
    table: &TableSchema,
    entries: &[(&Key, &Stamp)],
) -> Result<(), mysql_async::Error> {
    if entries.is_empty() || table.primary_key.is_empty() {
        return Ok(());
    }
    let cols = table.key_columns().iter().map(|c| ident(c)).collect::<Vec<_>>().join(", ");
    let width = table.primary_key.len() + 3;
    let tuple = format!("({})", vec!["?"; width].join(","));
    let mut start = 0;
    while start < entries.len() {
        let mut bytes = 0;
        let mut end = start;
        while end < entries.len() && end - start < 1000 && (end == start || bytes < budget) {
            bytes += entries[end].0.iter().map(param_len).sum::<usize>() + entries[end].1.site.as_str().len() + 16;
            end += 1;
        }
        let part = &entries[start..end];
        let sql = format!(
            "INSERT INTO {} ({cols}, {SITE_COLUMN}, {TS_COLUMN}, {DELETED_COLUMN}) VALUES {} \
             ON DUPLICATE KEY UPDATE {SITE_COLUMN} = VALUES({SITE_COLUMN}), {TS_COLUMN} = VALUES({TS_COLUMN}), \
             {DELETED_COLUMN} = VALUES({DELETED_COLUMN})",
            qualified_version(&table.name),
            vec![tuple.as_str(); part.len()].join(",")
        );
        let mut params: Vec<mysql_async::Value> = Vec::with_capacity(part.len() * width);
        for (key, stamp) in part {
            params.extend(key.iter().map(to_param));
            params.push(mysql_async::Value::from(stamp.site.as_str()));
            params.push(mysql_async::Value::Int(stamp.ts));
            params.push(mysql_async::Value::Int(i64::from(stamp.deleted)));
        }
        conn.exec_drop(sql, params).await?;
        start = end;
    }
    Ok(())
}

/// Writes this transaction's marker row (origin `site`), for servers where the applier
/// cannot set its session server id.
pub async fn mark(conn: &mut Conn, site: &SiteId) -> Result<(), mysql_async::Error> {
    let sql = format!(
        "INSERT INTO {}.{} (site, n) VALUES (?, 1) ON DUPLICATE KEY UPDATE n = n + 1",
        ident(FERRY_DB),
        ident(MARKER_TABLE)
    );
    conn.exec_drop(sql, (site.as_str(),)).await
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
        let long = TableName { schema: Some("d".repeat(64)), name: "t".repeat(64) };
        assert!(table_for(&long).len() <= 64);
        assert!(trigger_name(&long, 'u').len() <= 64);
    }

    #[test]
    fn own_trigger_ddl_is_recognised() {
        let t = TableName { schema: Some("shop".into()), name: "orders".into() };
        let sql =
            format!("CREATE DEFINER=`ferry`@`%` TRIGGER IF NOT EXISTS `shop`.`{}` AFTER INSERT", trigger_name(&t, 'i'));
        assert!(is_own_trigger_ddl(&sql));
        assert!(!is_own_trigger_ddl("CREATE TRIGGER `shop`.`audit` AFTER INSERT ON orders FOR EACH ROW SET @x = 1"));
    }
}
