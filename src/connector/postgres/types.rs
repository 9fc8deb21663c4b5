//! PostgreSQL column types (as `format_type` prints them) to and from ferry's canonical
//! types. Between two PostgreSQL endpoints the declared types are kept as they are.

use crate::connector::typemap::{Canonical, TypeMap, precision_scale};

/// PostgreSQL's type map.
pub struct Types;

impl TypeMap for Types {
    fn canonical(&self, decl: &str) -> Canonical {
        let t = decl.trim().to_ascii_lowercase();
        if t.ends_with("[]") {
            // Arrays travel as JSON arrays (`arrays.rs`): JSON elsewhere.
            return Canonical::Json;
        }
        let base = t.split('(').next().unwrap_or("").trim();
        match base {
            "boolean" | "bool" => Canonical::Bool,
            "smallint" | "int2" | "smallserial" => Canonical::Int { bits: 16, unsigned: false },
            "integer" | "int" | "int4" | "serial" => Canonical::Int { bits: 32, unsigned: false },
            "bigint" | "int8" | "bigserial" => Canonical::Int { bits: 64, unsigned: false },
            "real" | "float4" | "double precision" | "float8" => Canonical::Float,
            "numeric" | "decimal" => Canonical::Decimal(precision_scale(&t)),
            "bytea" => Canonical::Bytes,
            "date" => Canonical::Date,
            "json" | "jsonb" => Canonical::Json,
            "uuid" => Canonical::Uuid,
            _ if t.starts_with("timestamp") && t.contains("with time zone") && !t.contains("without") => {
                Canonical::Timestamp
            }
            "timestamptz" => Canonical::Timestamp,
            _ if t.starts_with("timestamp") => Canonical::DateTime,
            _ if t.starts_with("time") && !t.contains("with time zone") => Canonical::Time,
            _ => Canonical::Text,
        }
    }

    fn native(&self, t: &Canonical, _keyed: bool) -> String {
        match t {
            Canonical::Bool => "boolean".into(),
            Canonical::Int { bits: 8 | 16, unsigned: false } => "smallint".into(),
            Canonical::Int { bits: 8 | 16, unsigned: true } | Canonical::Int { bits: 24 | 32, unsigned: false } => {
                "integer".into()
            }
            Canonical::Int { bits: 24 | 32, unsigned: true } | Canonical::Int { unsigned: false, .. } => {
                "bigint".into()
            }
            // BIGINT UNSIGNED reaches 2^64-1: only numeric holds it.
            Canonical::Int { unsigned: true, .. } => "numeric(20,0)".into(),
            Canonical::Float => "double precision".into(),
            Canonical::Decimal(Some((p, s))) if *p >= 1 && *p <= 1000 => format!("numeric({p},{s})"),
            Canonical::Decimal(_) => "numeric".into(),
            Canonical::Text | Canonical::Enum(_) => "text".into(),
            Canonical::Bytes => "bytea".into(),
            Canonical::Timestamp => "timestamp with time zone".into(),
            Canonical::DateTime => "timestamp without time zone".into(),
            Canonical::Date => "date".into(),
            Canonical::Time => "time without time zone".into(),
            // json keeps the document's text exactly as it came (jsonb would reorder it).
            Canonical::Json => "json".into(),
            Canonical::Uuid => "uuid".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connector::mysql::types::Types as Mysql;
    use crate::connector::sqlite::types::Types as Sqlite;

    #[test]
    fn postgres_types_map_through_the_canonical_ones() {
        assert_eq!(Types.canonical("timestamp with time zone"), Canonical::Timestamp);
        assert_eq!(Types.canonical("timestamp(3) without time zone"), Canonical::DateTime);
        assert_eq!(Types.canonical("time without time zone"), Canonical::Time);
        assert_eq!(Types.canonical("numeric(12,3)"), Canonical::Decimal(Some((12, 3))));
        assert_eq!(Types.canonical("integer[]"), Canonical::Json);
        assert_eq!(Mysql.native(&Types.canonical("text[]"), false), "JSON");
        assert_eq!(Mysql.native(&Types.canonical("bigint"), true), "BIGINT");
        assert_eq!(Mysql.native(&Types.canonical("timestamp with time zone"), false), "DATETIME(6)");
        assert_eq!(Types.native(&Mysql.canonical("bigint(20) unsigned"), false), "numeric(20,0)");
        assert_eq!(Types.native(&Mysql.canonical("tinyint(1)"), false), "smallint");
        assert_eq!(Types.native(&Mysql.canonical("datetime(6)"), false), "timestamp without time zone");
        assert_eq!(Types.native(&Sqlite.canonical("INTEGER"), true), "bigint");
        assert_eq!(Sqlite.native(&Types.canonical("bytea"), false), "BLOB");
    }
}
