//! MySQL/MariaDB column types to and from ferry's canonical types. Key columns get
//! bounded types: MySQL cannot index unbounded TEXT/BLOB.

use crate::connector::typemap::{Canonical, TypeMap, precision_scale};

/// MySQL/MariaDB's type map.
pub struct Types;

impl TypeMap for Types {
    fn canonical(&self, decl: &str) -> Canonical {
        let t = decl.trim().to_ascii_lowercase();
        let base = t.split(|c: char| c == '(' || c.is_whitespace()).next().unwrap_or("");
        let unsigned = t.contains("unsigned");
        match base {
            "bool" | "boolean" => Canonical::Bool,
            "tinyint" => Canonical::Int { bits: 8, unsigned },
            "smallint" | "year" => Canonical::Int { bits: 16, unsigned },
            "mediumint" => Canonical::Int { bits: 24, unsigned },
            "int" | "integer" => Canonical::Int { bits: 32, unsigned },
            "bigint" | "bit" => Canonical::Int { bits: 64, unsigned },
            "float" | "double" | "real" => Canonical::Float,
            "decimal" | "numeric" | "dec" | "fixed" => Canonical::Decimal(precision_scale(&t)),
            "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" => Canonical::Bytes,
            "timestamp" => Canonical::Timestamp,
            "datetime" => Canonical::DateTime,
            "date" => Canonical::Date,
            "time" => Canonical::Time,
            "json" => Canonical::Json,
            "uuid" => Canonical::Uuid,
            "enum" => Canonical::Enum(enum_labels(decl)),
            _ => Canonical::Text,
        }
    }

    fn native(&self, t: &Canonical, keyed: bool) -> String {
        let text = if keyed { "VARCHAR(255)" } else { "LONGTEXT" };
        match t {
            Canonical::Bool => "TINYINT(1)".into(),
            Canonical::Int { unsigned: true, .. } => "BIGINT UNSIGNED".into(),
            Canonical::Int { .. } => "BIGINT".into(),
            Canonical::Float => "DOUBLE".into(),
            Canonical::Decimal(Some((p, s))) => format!("DECIMAL({p},{s})"),
            // An unbounded decimal keeps its exact text.
            Canonical::Decimal(None) => text.into(),
            Canonical::Bytes => (if keyed { "VARBINARY(255)" } else { "LONGBLOB" }).into(),
            Canonical::Timestamp | Canonical::DateTime => "DATETIME(6)".into(),
            Canonical::Date => "DATE".into(),
            Canonical::Time => "TIME(6)".into(),
            Canonical::Json => "JSON".into(),
            Canonical::Uuid => "CHAR(36)".into(),
            Canonical::Enum(labels) if !labels.is_empty() => {
                let labels: Vec<String> = labels.iter().map(|l| super::string_literal(l)).collect();
                format!("ENUM({})", labels.join(","))
            }
            Canonical::Enum(_) | Canonical::Text => text.into(),
        }
    }
}

/// The labels of `enum('a','b')`.
fn enum_labels(decl: &str) -> Vec<String> {
    let Some(inner) = decl.split_once('(').and_then(|(_, r)| r.rsplit_once(')')).map(|(i, _)| i) else {
        return Vec::new();
    };
    let mut labels = Vec::new();
    let mut cur = String::new();
    let mut chars = inner.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (false, '\'') => quoted = true,
            (true, '\'') if chars.peek() == Some(&'\'') => {
                cur.push('\'');
                chars.next();
            }
            (true, '\'') => {
                quoted = false;
                labels.push(std::mem::take(&mut cur));
            }
            (true, c) => cur.push(c),
            _ => {}
        }
    }
    labels
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connector::sqlite::types::Types as Sqlite;

    fn to_mysql(decl: &str, keyed: bool) -> String {
        Types.native(&Sqlite.canonical(decl), keyed)
    }

    fn to_sqlite(decl: &str) -> String {
        Sqlite.native(&Types.canonical(decl), false)
    }

    #[test]
    fn sqlite_types_map_by_affinity() {
        assert_eq!(to_mysql("INTEGER", true), "BIGINT");
        assert_eq!(to_mysql("text", true), "VARCHAR(255)");
        assert_eq!(to_mysql("VARCHAR(40)", false), "LONGTEXT");
        assert_eq!(to_mysql("", false), "LONGBLOB");
        assert_eq!(to_mysql("double precision", false), "DOUBLE");
        assert_eq!(to_mysql("DECIMAL(10, 2)", false), "DECIMAL(10,2)");
        assert_eq!(to_mysql("BOOLEAN", false), "TINYINT(1)");
        assert_eq!(to_mysql("DATETIME", false), "LONGTEXT");
    }

    #[test]
    fn mysql_types_keep_exact_values_in_sqlite() {
        assert_eq!(to_sqlite("bigint(20) unsigned"), "INTEGER");
        assert_eq!(to_sqlite("decimal(65,30)"), "TEXT");
        assert_eq!(to_sqlite("datetime(6)"), "TEXT");
        assert_eq!(to_sqlite("double"), "REAL");
        assert_eq!(to_sqlite("varbinary(20)"), "BLOB");
        assert_eq!(to_sqlite("enum('a','b')"), "TEXT");
        assert_eq!(Types.canonical("enum('a','it''s')"), Canonical::Enum(vec!["a".into(), "it's".into()]));
    }
}
