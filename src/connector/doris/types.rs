//! Column types of a Doris table: ferry's canonical types to Doris's and back. A key
//! column cannot be STRING, FLOAT, DOUBLE or JSON in Doris, so keyed text becomes
//! VARCHAR; an exact decimal keeps its precision where Doris's DECIMAL (38 digits)
//! holds it, else it is kept as its exact text. docs/doris.md lists each choice and why.

use crate::connector::typemap::{Canonical, TypeMap, precision_scale};

/// Doris's widest VARCHAR, for text in a key.
const KEY_VARCHAR: &str = "VARCHAR(65533)";

/// The Doris type map.
pub struct Types;

impl TypeMap for Types {
    fn canonical(&self, decl: &str) -> Canonical {
        let d = decl.to_ascii_lowercase();
        match d.split('(').next().unwrap_or("").trim() {
            "boolean" => Canonical::Bool,
            "tinyint" => Canonical::Int { bits: 8, unsigned: false },
            "smallint" => Canonical::Int { bits: 16, unsigned: false },
            "int" => Canonical::Int { bits: 32, unsigned: false },
            "bigint" => Canonical::Int { bits: 64, unsigned: false },
            // Holds every u64 (ferry's only use of it).
            "largeint" => Canonical::Int { bits: 64, unsigned: true },
            "float" | "double" => Canonical::Float,
            "decimal" | "decimalv3" => Canonical::Decimal(precision_scale(&d)),
            "datetime" | "datetimev2" => Canonical::Timestamp,
            "date" | "datev2" => Canonical::Date,
            "json" | "jsonb" => Canonical::Json,
            _ => Canonical::Text,
        }
    }

    fn native(&self, t: &Canonical, keyed: bool) -> String {
        match t {
            Canonical::Bool => "BOOLEAN".into(),
            Canonical::Int { bits: 8, unsigned: false } => "TINYINT".into(),
            Canonical::Int { bits: 8 | 16, .. } => "SMALLINT".into(),
            Canonical::Int { bits: 24 | 32, unsigned: false } => "INT".into(),
            Canonical::Int { bits: 24 | 32, .. } => "BIGINT".into(),
            Canonical::Int { unsigned: true, .. } => "LARGEINT".into(),
            Canonical::Int { .. } => "BIGINT".into(),
            Canonical::Float if !keyed => "DOUBLE".into(),
            Canonical::Decimal(Some((p, s))) if *p <= 38 => format!("DECIMAL({p},{s})"),
            // Microseconds, in UTC (Doris's DATETIME has no zone).
            Canonical::Timestamp | Canonical::DateTime => "DATETIME(6)".into(),
            Canonical::Date => "DATE".into(),
            Canonical::Json if !keyed => "JSON".into(),
            Canonical::Uuid => "VARCHAR(36)".into(),
            _ if keyed => KEY_VARCHAR.into(),
            // Time (Doris stores no TIME), bytes (as base64), unbounded decimals (their
            // exact text), text, enums.
            _ => "STRING".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_types_map_to_doris_and_back() {
        for t in [
            Canonical::Bool,
            Canonical::Int { bits: 8, unsigned: false },
            Canonical::Int { bits: 32, unsigned: false },
            Canonical::Int { bits: 64, unsigned: false },
            Canonical::Int { bits: 64, unsigned: true },
            Canonical::Float,
            Canonical::Decimal(Some((12, 2))),
            Canonical::Timestamp,
            Canonical::Date,
            Canonical::Json,
            Canonical::Text,
        ] {
            assert_eq!(Types.canonical(&Types.native(&t, false)), t, "{t:?}");
        }
        assert_eq!(Types.native(&Canonical::Text, true), KEY_VARCHAR, "a key is never STRING");
        assert_eq!(Types.native(&Canonical::Decimal(Some((65, 30))), false), "STRING", "beyond 38 digits: exact text");
        assert_eq!(Types.native(&Canonical::Int { bits: 32, unsigned: true }, false), "BIGINT");
    }
}
