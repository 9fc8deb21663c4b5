//! Column types across engines (docs/type-mapping.md): the type a table created on a
//! SQLite target gets for a MySQL/MariaDB column, and the other way round. Values keep
//! their exact form; a value the target type cannot hold exactly is refused by the
//! target's binding, naming the row.

use crate::model::TableSchema;

/// The engines ferry maps between.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// SQLite.
    Sqlite,
    /// MySQL or MariaDB.
    Mysql,
}

/// A source table's schema with column types the target engine understands (and no
/// source CREATE TABLE, which is in the source's dialect).
pub fn for_target(schema: &TableSchema, from: Engine, to: Engine) -> TableSchema {
    let mut out = schema.clone();
    if from == to {
        return out;
    }
    out.create_sql = None;
    let keyed: Vec<bool> = (0..schema.columns.len())
        .map(|i| schema.primary_key.contains(&i) || schema.unique_keys.iter().any(|k| k.contains(&i)))
        .collect();
    for (c, keyed) in out.columns.iter_mut().zip(keyed) {
        c.decl_type = match to {
            Engine::Sqlite => mysql_to_sqlite(&c.decl_type).to_string(),
            Engine::Mysql => sqlite_to_mysql(&c.decl_type, keyed),
        };
    }
    out
}

/// SQLite type for a MySQL/MariaDB column type. Exact decimals, dates and times are TEXT
/// (SQLite's NUMERIC affinity would turn `1.50` into the float 1.5).
pub fn mysql_to_sqlite(decl: &str) -> &'static str {
    let t = decl.trim().to_ascii_lowercase();
    let base = t.split(|c: char| c == '(' || c.is_whitespace()).next().unwrap_or("");
    match base {
        "tinyint" | "smallint" | "mediumint" | "int" | "integer" | "bigint" | "year" | "bool" | "boolean" => "INTEGER",
        "float" | "double" | "real" => "REAL",
        "bit" => "INTEGER",
        "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" => "BLOB",
        _ => "TEXT",
    }
}

/// MySQL/MariaDB type for a SQLite declared type, by SQLite's affinity rules. Key
/// columns get bounded types (MySQL cannot index unbounded TEXT/BLOB).
pub fn sqlite_to_mysql(decl: &str, keyed: bool) -> String {
    let t = decl.trim().to_ascii_uppercase();
    let text = if keyed { "VARCHAR(255)" } else { "LONGTEXT" };
    let blob = if keyed { "VARBINARY(255)" } else { "LONGBLOB" };
    if t.contains("INT") {
        return if t.starts_with("BOOL") { "TINYINT(1)".into() } else { "BIGINT".into() };
    }
    if t.contains("CHAR") || t.contains("CLOB") || t.contains("TEXT") {
        return text.into();
    }
    if t.is_empty() || t.contains("BLOB") {
        return blob.into();
    }
    if t.contains("REAL") || t.contains("FLOA") || t.contains("DOUB") {
        return "DOUBLE".into();
    }
    if let Some(args) = t.strip_prefix("DECIMAL").or_else(|| t.strip_prefix("NUMERIC")).map(str::trim)
        && args.starts_with('(')
    {
        return format!("DECIMAL{args}");
    }
    if t.starts_with("BOOL") {
        return "TINYINT(1)".into();
    }
    // NUMERIC affinity without a precision (DATE, DATETIME, NUMERIC, ...): SQLite keeps
    // whatever the application wrote, most often text, so text holds it exactly.
    text.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_types_map_by_affinity() {
        assert_eq!(sqlite_to_mysql("INTEGER", true), "BIGINT");
        assert_eq!(sqlite_to_mysql("text", true), "VARCHAR(255)");
        assert_eq!(sqlite_to_mysql("VARCHAR(40)", false), "LONGTEXT");
        assert_eq!(sqlite_to_mysql("", false), "LONGBLOB");
        assert_eq!(sqlite_to_mysql("double precision", false), "DOUBLE");
        assert_eq!(sqlite_to_mysql("DECIMAL(10, 2)", false), "DECIMAL(10, 2)");
        assert_eq!(sqlite_to_mysql("BOOLEAN", false), "TINYINT(1)");
        assert_eq!(sqlite_to_mysql("DATETIME", false), "LONGTEXT");
    }

    #[test]
    fn mysql_types_keep_exact_values_in_sqlite() {
        assert_eq!(mysql_to_sqlite("bigint(20) unsigned"), "INTEGER");
        assert_eq!(mysql_to_sqlite("decimal(65,30)"), "TEXT");
        assert_eq!(mysql_to_sqlite("datetime(6)"), "TEXT");
        assert_eq!(mysql_to_sqlite("double"), "REAL");
        assert_eq!(mysql_to_sqlite("varbinary(20)"), "BLOB");
        assert_eq!(mysql_to_sqlite("enum('a','b')"), "TEXT");
    }
}
