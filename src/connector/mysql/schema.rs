//! Table discovery on MySQL/MariaDB: `db.table` globs to base tables, their columns in
//! order, primary and unique keys, and the server's own CREATE TABLE text.
//!
//! A column's `decl_type` is information_schema's COLUMN_TYPE (`bigint(20) unsigned`,
//! `decimal(65,30)`, `enum('a','b')`), except that a MariaDB JSON column (LONGTEXT with a
//! `json_valid` CHECK) is described as `json`, so every reader knows it holds JSON.

use std::sync::Arc;

use mysql_async::Conn;
use mysql_async::prelude::Queryable;

use super::values::ColumnKind;
use super::{FERRY_DB, MysqlEndpoint, ident};
use crate::connector::ConnectorError;
use crate::model::{Column, ForeignKey, TableName, TableSchema};

/// Databases never replicated: the server's own and ferry's.
const SYSTEM_DBS: [&str; 5] = ["mysql", "information_schema", "performance_schema", "sys", FERRY_DB];

/// Names of every user base table as `db.table`, sorted.
pub async fn user_tables(ep: &MysqlEndpoint, conn: &mut Conn) -> Result<Vec<(String, String)>, ConnectorError> {
    let marks = vec!["?"; SYSTEM_DBS.len()].join(", ");
    let sql = format!(
        "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES WHERE TABLE_TYPE = 'BASE TABLE' \
         AND TABLE_SCHEMA NOT IN ({marks}) ORDER BY TABLE_SCHEMA, TABLE_NAME"
    );
    conn.exec::<(String, String), _, _>(sql, SYSTEM_DBS.to_vec()).await.map_err(ep.error("listing tables"))
}

/// Resolves `db.table` globs to tables (a pattern without a database uses the URL's);
/// a pattern that matches nothing is a setup error naming it and listing what exists.
pub async fn matching_tables(
    ep: &MysqlEndpoint,
    conn: &mut Conn,
    patterns: &[String],
) -> Result<Vec<TableName>, ConnectorError> {
    let all = user_tables(ep, conn).await?;
    let mut picked: Vec<TableName> = Vec::new();
    for (p, pat) in patterns.iter().zip(qualified_patterns(ep, patterns)?) {
        let hits: Vec<&(String, String)> = all.iter().filter(|(db, t)| pat.matches(&format!("{db}.{t}"))).collect();
        if hits.is_empty() {
            return Err(ConnectorError::Setup {
                endpoint: ep.name.clone(),
                problem: format!("no table matches {p:?} on {} (tables there: {})", ep.display, list(&all)),
                fix: "correct the task's `tables` list or create the table first".into(),
            });
        }
        for (db, t) in hits {
            let name = TableName { schema: Some(db.clone()), name: t.clone() };
            if !picked.contains(&name) {
                picked.push(name);
            }
        }
    }
    picked.sort();
    Ok(picked)
}

/// The task's table patterns as `db.table` globs (a bare name is in the url's database).
pub fn qualified_patterns(ep: &MysqlEndpoint, patterns: &[String]) -> Result<Vec<glob::Pattern>, ConnectorError> {
    patterns
        .iter()
        .map(|p| {
            let full = match (p.contains('.'), ep.opts.db_name()) {
                (true, _) => p.clone(),
                (false, Some(db)) => format!("{db}.{p}"),
                (false, None) => {
                    return Err(ConnectorError::Setup {
                        endpoint: ep.name.clone(),
                        problem: format!("table pattern {p:?} names no database and the endpoint url has none"),
                        fix: format!(
                            "write it as \"DATABASE.{p}\" in the task's tables, or put the database in the url"
                        ),
                    });
                }
            };
            glob::Pattern::new(&full).map_err(|e| ConnectorError::Setup {
                endpoint: ep.name.clone(),
                problem: format!("table pattern {p:?} is invalid: {e}"),
                fix: "write database.table patterns with * and ? wildcards, e.g. \"shop.*\"".into(),
            })
        })
        .collect()
}

fn list(names: &[(String, String)]) -> String {
    const SHOWN: usize = 40;
    if names.is_empty() {
        return "none".to_string();
    }
    let mut s: Vec<String> = names.iter().take(SHOWN).map(|(d, t)| format!("{d}.{t}")).collect();
    if names.len() > SHOWN {
        s.push(format!("and {} more", names.len() - SHOWN));
    }
    s.join(", ")
}

/// Describes every table matching the globs; a table without a primary key or with a
/// column ferry cannot carry is a setup error with its fix.
pub async fn describe_matching(
    ep: &MysqlEndpoint,
    conn: &mut Conn,
    patterns: &[String],
) -> Result<Vec<Arc<TableSchema>>, ConnectorError> {
    let mut out = Vec::new();
    for name in matching_tables(ep, conn, patterns).await? {
        if let Some(s) = describe(ep, conn, &name).await? {
            out.push(Arc::new(s));
        }
    }
    Ok(out)
}

/// Describes one table (`None` when it does not exist); a table without a primary key
/// or with a column ferry cannot carry is a setup error with its fix.
pub async fn describe(
    ep: &MysqlEndpoint,
    conn: &mut Conn,
    table: &TableName,
) -> Result<Option<TableSchema>, ConnectorError> {
    let Some(schema) = describe_loose(ep, conn, table).await? else { return Ok(None) };
    for c in &schema.columns {
        if ColumnKind::from_decl(&c.decl_type).is_none() {
            return Err(ConnectorError::Setup {
                endpoint: ep.name.clone(),
                problem: format!("column {}.{} has type {}, which ferry cannot carry exactly", table, c.name, c.decl_type),
                fix: "leave the table out of the task's tables, or change the column to a supported type (see docs/mysql-types.md)".into(),
            });
        }
    }
    if schema.primary_key.is_empty() {
        let candidate = schema
            .unique_keys
            .iter()
            .find(|k| k.iter().all(|&i| !schema.columns[i].nullable))
            .map(|k| k.iter().map(|&i| ident(&schema.columns[i].name)).collect::<Vec<_>>().join(", "))
            .unwrap_or_else(|| "...".to_string());
        return Err(ConnectorError::Setup {
            endpoint: ep.name.clone(),
            problem: format!("table {table} has no primary key"),
            fix: format!(
                "ALTER TABLE {} ADD PRIMARY KEY ({candidate}); or leave the table out of the task's tables: ferry needs a key to apply changes exactly once",
                qualified(table)
            ),
        });
    }
    Ok(Some(schema))
}

/// `db`.`table`, quoted.
pub fn qualified(table: &TableName) -> String {
    match &table.schema {
        Some(db) => format!("{}.{}", ident(db), ident(&table.name)),
        None => ident(&table.name),
    }
}

/// Describes a table as it is, without judging it (no primary key and any column type
/// allowed): for checking a target's existing tables.
pub async fn describe_loose(
    ep: &MysqlEndpoint,
    conn: &mut Conn,
    table: &TableName,
) -> Result<Option<TableSchema>, ConnectorError> {
    let Some(db) = table.schema.clone() else {
        return Err(ConnectorError::Setup {
            endpoint: ep.name.clone(),
            problem: format!("table {table} names no database"),
            fix: "name MySQL tables as database.table (map them with [[task.map]] to = \"db.table\")".into(),
        });
    };
    let what = format!("describing table {table}");
    let kind: Option<String> = conn
        .exec_first(
            "SELECT TABLE_TYPE FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
            (&db, &table.name),
        )
        .await
        .map_err(ep.error(what.clone()))?;
    match kind.as_deref() {
        None => return Ok(None),
        Some("BASE TABLE") => {}
        Some(other) => {
            return Err(ConnectorError::Setup {
                endpoint: ep.name.clone(),
                problem: format!("{table} is a {other}, not a base table"),
                fix: "replicate base tables only; leave it out of the task's tables".into(),
            });
        }
    }
    let cols: Vec<(String, String, String, String)> = conn
        .exec(
            "SELECT COLUMN_NAME, COLUMN_TYPE, DATA_TYPE, IS_NULLABLE FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
            (&db, &table.name),
        )
        .await
        .map_err(ep.error(what.clone()))?;
    // MariaDB's JSON is LONGTEXT with a json_valid CHECK (MySQL has no TABLE_NAME there: 1054).
    let mut json_checks: Vec<String> = Vec::new();
    if cols.iter().any(|c| c.2.eq_ignore_ascii_case("longtext")) {
        json_checks = match conn
            .exec(
                "SELECT CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS \
                 WHERE CONSTRAINT_SCHEMA = ? AND TABLE_NAME = ? AND CHECK_CLAUSE LIKE 'json\\_valid(%'",
                (&db, &table.name),
            )
            .await
        {
            Ok(v) => v,
            Err(mysql_async::Error::Server(e)) if e.code == 1054 => Vec::new(),
            Err(e) => return Err(ep.error(what.clone())(e)),
        };
    }
    let columns: Vec<Column> = cols
        .into_iter()
        .map(|(name, column_type, data_type, nullable)| {
            let is_json = data_type.eq_ignore_ascii_case("json")
                || (data_type.eq_ignore_ascii_case("longtext")
                    && json_checks
                        .iter()
                        .any(|c| c.trim().to_lowercase() == format!("json_valid({})", ident(&name)).to_lowercase()));
            let decl_type = if is_json { "json".to_string() } else { column_type };
            Column { name, decl_type, nullable: nullable.eq_ignore_ascii_case("YES") }
        })
        .collect();
    let stats: Vec<(String, i64, String)> = conn
        .exec(
            "SELECT INDEX_NAME, NON_UNIQUE, COLUMN_NAME FROM information_schema.STATISTICS \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY INDEX_NAME = 'PRIMARY' DESC, INDEX_NAME, SEQ_IN_INDEX",
            (&db, &table.name),
        )
        .await
        .map_err(ep.error(what.clone()))?;
    let mut primary_key = Vec::new();
    let mut unique_keys: Vec<(String, Vec<usize>)> = Vec::new();
    for (index, non_unique, column) in stats {
        let Some(i) = columns.iter().position(|c| c.name == column) else { continue };
        if index == "PRIMARY" {
            primary_key.push(i);
        } else if non_unique == 0 {
            match unique_keys.iter_mut().find(|(n, _)| *n == index) {
                Some((_, cols)) => cols.push(i),
                None => unique_keys.push((index, vec![i])),
            }
        }
    }
    let create: Option<(String, String)> =
        conn.query_first(format!("SHOW CREATE TABLE {}", qualified(table))).await.map_err(ep.error(what))?;
    let create_sql = create.map(|(_, sql)| sql);
    let foreign_keys = create_sql.as_deref().map(|sql| foreign_keys_of(sql, &db, &columns)).unwrap_or_default();
    Ok(Some(TableSchema {
        name: table.clone(),
        columns,
        primary_key,
        unique_keys: unique_keys.into_iter().map(|(_, k)| k).collect(),
        foreign_keys,
        create_sql,
    }))
}

/// A table's foreign keys, read from its `SHOW CREATE TABLE` text (`CONSTRAINT … FOREIGN
/// KEY (…) REFERENCES [db.]t (…) [ON DELETE …] [ON UPDATE …]` lines; a parent without a
/// database is in `db`). The text is at hand already; a join of information_schema's
/// KEY_COLUMN_USAGE and REFERENTIAL_CONSTRAINTS crashed MariaDB 10.11.19 under load here.
pub fn foreign_keys_of(sql: &str, db: &str, columns: &[Column]) -> Vec<ForeignKey> {
    sql.lines().filter_map(|line| foreign_key_line(line, db, columns)).collect()
}

fn foreign_key_line(line: &str, db: &str, columns: &[Column]) -> Option<ForeignKey> {
    let (_, rest) = split_quoted(line.trim_start().strip_prefix("CONSTRAINT `")?)?;
    let (names, rest) = quoted_list(rest.strip_prefix(" FOREIGN KEY ")?)?;
    let (first, rest) = split_quoted(rest.strip_prefix(" REFERENCES `")?)?;
    let (parent, rest) = match rest.strip_prefix(".`") {
        Some(r) => {
            let (name, r) = split_quoted(r)?;
            (TableName { schema: Some(first), name }, r)
        }
        None => (TableName { schema: Some(db.to_string()), name: first }, rest),
    };
    let (parent_columns, rest) = quoted_list(rest.strip_prefix(' ')?)?;
    let columns: Vec<usize> = names.iter().map(|n| columns.iter().position(|c| c.name == *n)).collect::<Option<_>>()?;
    // RESTRICT and NO ACTION only refuse; CASCADE, SET NULL and SET DEFAULT change children.
    let acts = |on: &str| {
        rest.find(on).is_some_and(|i| {
            let action = rest[i + on.len()..].trim_start();
            action.starts_with("CASCADE") || action.starts_with("SET ")
        })
    };
    Some(ForeignKey { columns, parent, parent_columns, cascades: acts("ON DELETE") || acts("ON UPDATE") })
}

/// A parenthesised list of backticked names, and what follows its `)`.
fn quoted_list(s: &str) -> Option<(Vec<String>, &str)> {
    let mut rest = s.strip_prefix('(')?;
    let mut names = Vec::new();
    loop {
        rest = rest.trim_start_matches([',', ' ']);
        if let Some(after) = rest.strip_prefix(')') {
            return Some((names, after));
        }
        let (name, after) = split_quoted(rest.strip_prefix('`')?)?;
        names.push(name);
        rest = after;
    }
}

/// Column names of a `SHOW CREATE TABLE` text, in order (`None` if it cannot be read).
pub fn create_sql_columns(sql: &str) -> Option<Vec<String>> {
    let mut names = Vec::new();
    for line in sql.lines().skip(1) {
        let Some(rest) = line.strip_prefix("  `") else { continue };
        let (name, _) = split_quoted(rest)?;
        names.push(name);
    }
    Some(names)
}

/// Splits `name` rest-of-line after an opening backtick, undoing doubled backticks.
fn split_quoted(s: &str) -> Option<(String, &str)> {
    let mut name = String::new();
    let mut chars = s.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c == '`' {
            if chars.peek().map(|(_, c)| *c) == Some('`') {
                chars.next();
                name.push('`');
            } else {
                return Some((name, &s[i + 1..]));
            }
        } else {
            name.push(c);
        }
    }
    None
}

/// A `SHOW CREATE TABLE` text rewritten to create `table` (qualified) if it does not exist.
pub fn retarget_create_sql(sql: &str, table: &TableName) -> Option<String> {
    let rest = sql.strip_prefix("CREATE TABLE `")?;
    let (_, after_name) = split_quoted(rest)?;
    Some(format!("CREATE TABLE IF NOT EXISTS {}{after_name}", qualified(table)))
}

/// `(k1, k2) IN ((?,?),…)` matching `n` primary keys of a table (`k IN (?,…)` for a
/// one-column key); bind the keys' values in order.
pub fn key_in(table: &TableSchema, n: usize) -> String {
    let cols: Vec<String> = table.key_columns().iter().map(|c| ident(c)).collect();
    let width = cols.len().max(1);
    let tuple = if width == 1 { "?".to_string() } else { format!("({})", vec!["?"; width].join(",")) };
    let lhs = if width == 1 { cols.join(",") } else { format!("({})", cols.join(",")) };
    format!("{lhs} IN ({})", vec![tuple.as_str(); n].join(","))
}

/// A CREATE TABLE built from a schema's columns and keys (when no source text fits).
pub fn create_table_sql(table: &TableSchema) -> String {
    let mut parts: Vec<String> = table
        .columns
        .iter()
        .map(|c| {
            let decl = if c.decl_type.is_empty() { "longtext" } else { c.decl_type.as_str() };
            format!("{} {decl}{}", ident(&c.name), if c.nullable { " NULL" } else { " NOT NULL" })
        })
        .collect();
    let key = |k: &[usize]| k.iter().map(|&i| ident(&table.columns[i].name)).collect::<Vec<_>>().join(", ");
    parts.push(format!("PRIMARY KEY ({})", key(&table.primary_key)));
    for u in &table.unique_keys {
        parts.push(format!("UNIQUE ({})", key(u)));
    }
    format!(
        "CREATE TABLE IF NOT EXISTS {} (\n  {}\n) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
        qualified(&table.name),
        parts.join(",\n  ")
    )
}

pub use crate::connector::parallel::partition::{Parents, Referenced, parents_of};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn foreign_keys_are_read_from_create_table() {
        let sql = "CREATE TABLE `c` (\n  `id` int(11) NOT NULL,\n  `p` int(11) DEFAULT NULL,\n  `q``x` int(11) NOT NULL,\n  \
                   `r` varchar(9) NOT NULL,\n  PRIMARY KEY (`id`),\n  KEY `p` (`p`),\n  \
                   CONSTRAINT `c_ibfk_1` FOREIGN KEY (`p`) REFERENCES `parent` (`id`) ON DELETE CASCADE,\n  \
                   CONSTRAINT `two` FOREIGN KEY (`q``x`, `r`) REFERENCES `other`.`pq` (`a`, `b`),\n  \
                   CONSTRAINT `up` FOREIGN KEY (`r`) REFERENCES `parent` (`code`) ON UPDATE SET NULL\n) ENGINE=InnoDB";
        let cols: Vec<Column> = ["id", "p", "q`x", "r"]
            .iter()
            .map(|n| Column { name: n.to_string(), decl_type: "int".into(), nullable: true })
            .collect();
        let fks = foreign_keys_of(sql, "db", &cols);
        let parent = TableName { schema: Some("db".into()), name: "parent".into() };
        let other = TableName { schema: Some("other".into()), name: "pq".into() };
        assert_eq!(
            fks,
            vec![
                ForeignKey {
                    columns: vec![1],
                    parent: parent.clone(),
                    parent_columns: vec!["id".into()],
                    cascades: true
                },
                ForeignKey {
                    columns: vec![2, 3],
                    parent: other,
                    parent_columns: vec!["a".into(), "b".into()],
                    cascades: false
                },
                ForeignKey { columns: vec![3], parent, parent_columns: vec!["code".into()], cascades: true },
            ]
        );
    }

    #[test]
    fn create_sql_is_retargeted_and_read() {
        let sql =
            "CREATE TABLE `a``b` (\n  `id` int(11) NOT NULL,\n  `x``y` text,\n  PRIMARY KEY (`id`)\n) ENGINE=InnoDB";
        let t = TableName { schema: Some("db".into()), name: "t".into() };
        assert_eq!(
            retarget_create_sql(sql, &t).as_deref(),
            Some(
                "CREATE TABLE IF NOT EXISTS `db`.`t` (\n  `id` int(11) NOT NULL,\n  `x``y` text,\n  PRIMARY KEY (`id`)\n) ENGINE=InnoDB"
            )
        );
        assert_eq!(create_sql_columns(sql), Some(vec!["id".to_string(), "x`y".to_string()]));
    }
}
