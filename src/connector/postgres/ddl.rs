//! Schema changes in a PostgreSQL change stream. pgoutput carries no DDL: a table's
//! Relation message, sent before its first change after an `ALTER TABLE`, lists its
//! columns as they are from then on. Columns added at the end (`ADD COLUMN`, PostgreSQL
//! always appends) are carried: the table is described anew and an `ALTER TABLE … ADD
//! COLUMN IF NOT EXISTS` with each new column's type, default and NOT NULL goes to the
//! target ahead of the transaction's rows (a PostgreSQL target runs it in the same
//! transaction). Existing rows get the column's default on the target as they did on the
//! source (a volatile default, such as `random()`, cannot give them the same values).
//! Other changes (a column dropped, renamed or retyped) stop the direction with the fix.

use sqlx::postgres::PgConnection;

use super::decoder::RelColumn;
use super::{PgEndpoint, ident, qualified, schema};
use crate::connector::ConnectorError;
use crate::model::{Column, SchemaChange, SchemaChangeKind, TableSchema};

const ALTER: &str = "ALTER TABLE ";

/// A followed table as the stream shows it now, with what the target must run first.
pub struct Followed {
    /// The table's description from here on.
    pub table: TableSchema,
    /// Schema changes to carry (none when the stream is only behind the description).
    pub ddl: Vec<SchemaChange>,
}

/// Follows a Relation message of a followed table described as `old`: `None` when its
/// columns are the described ones, or changed in a way that is not carried; columns
/// added at the end are carried; a stream from before columns were added (read again
/// after a restart) reads its rows with the columns it has, leaving the others as they
/// are on the target.
pub async fn follow(
    ep: &PgEndpoint,
    conn: &mut PgConnection,
    old: &TableSchema,
    stream: &[RelColumn],
) -> Result<Option<Followed>, ConnectorError> {
    let names: Vec<&str> = old.columns.iter().map(|c| c.name.as_str()).collect();
    let stream_columns: Vec<&str> = stream.iter().map(|c| c.name.as_str()).collect();
    if names == stream_columns {
        return Ok(None);
    }
    let k = stream_columns.len();
    if k < names.len() && names[..k] == *stream_columns.as_slice() && old.primary_key.iter().all(|&i| i < k) {
        let mut table = old.clone();
        table.columns.truncate(k);
        table.unique_keys.retain(|u| u.iter().all(|&i| i < k));
        return Ok(Some(Followed { table, ddl: Vec::new() }));
    }
    Ok(added_columns(ep, conn, old, stream).await?.map(|(table, change)| Followed { table, ddl: vec![change] }))
}

/// When the stream's columns of `old` are its columns plus some at the end: the table
/// as the stream shows it and the change adding them; `None` for any other change.
/// Each added column is looked up in the catalog by name, and typed as the stream types
/// it: the catalog may already hold later changes (another column added before ferry
/// read this Relation), which the following Relation messages carry in their turn.
pub async fn added_columns(
    ep: &PgEndpoint,
    conn: &mut PgConnection,
    old: &TableSchema,
    stream: &[RelColumn],
) -> Result<Option<(TableSchema, SchemaChange)>, ConnectorError> {
    let n = old.columns.len();
    if stream.len() <= n || old.columns.iter().zip(stream).any(|(c, s)| c.name != s.name) {
        return Ok(None);
    }
    let Some(now) = schema::describe(ep, conn, &old.name).await? else { return Ok(None) };
    let key_names = |t: &TableSchema| t.primary_key.iter().map(|&i| t.columns[i].name.clone()).collect::<Vec<_>>();
    if key_names(&now) != key_names(old) {
        return Ok(None);
    }
    let mut table = old.clone();
    let mut clauses = Vec::new();
    for s in &stream[n..] {
        let decl_type: String = sqlx::query_scalar("SELECT format_type($1::bigint::oid, $2)")
            .bind(i64::from(s.type_oid))
            .bind(s.typmod)
            .fetch_one(&mut *conn)
            .await
            .map_err(ep.error(format!("naming the type of the new column {}.{}", old.name, s.name)))?;
        // A column dropped again since is still carried as the stream shows it, without
        // the default and NOT NULL the catalog no longer holds.
        let nullable = now.columns.iter().find(|c| c.name == s.name).is_none_or(|c| c.nullable);
        let default: Option<String> = sqlx::query_scalar(
            "SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attribute a JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
             WHERE a.attrelid = to_regclass($1) AND a.attname = $2 AND a.attgenerated = '' AND NOT a.attisdropped",
        )
        .bind(qualified(&old.name))
        .bind(&s.name)
        .fetch_optional(&mut *conn)
        .await
        .map_err(ep.error(format!("reading the default of the new column {}.{}", old.name, s.name)))?;
        clauses.push(format!(
            "ADD COLUMN IF NOT EXISTS {} {}{}{}",
            ident(&s.name),
            decl_type,
            default.map(|d| format!(" DEFAULT {d}")).unwrap_or_default(),
            if nullable { "" } else { " NOT NULL" }
        ));
        table.columns.push(Column { name: s.name.clone(), decl_type, nullable });
    }
    let name = qualified(&old.name);
    let statement = format!("{ALTER}{name} {}", clauses.join(", "));
    let change = SchemaChange {
        table: old.name.clone(),
        kind: SchemaChangeKind::Alter,
        statement,
        name_at: (ALTER.len(), ALTER.len() + name.len()),
    };
    Ok(Some((table, change)))
}
