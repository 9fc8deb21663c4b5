//! SQLite's declared types to and from ferry's canonical types, by SQLite's affinity
//! rules. Exact decimals, dates and times are TEXT here (NUMERIC affinity would turn
//! `1.50` into the float 1.5).

use crate::connector::typemap::{Canonical, TypeMap, precision_scale};

/// SQLite's type map.
pub struct Types;

impl TypeMap for Types {
    fn canonical(&self, decl: &str) -> Canonical {
        let t = decl.trim().to_ascii_uppercase();
        if t.contains("INT") {
            return if t.starts_with("BOOL") { Canonical::Bool } else { Canonical::Int { bits: 64, unsigned: false } };
        }
        if t.contains("CHAR") || t.contains("CLOB") || t.contains("TEXT") {
            return Canonical::Text;
        }
        if t.is_empty() || t.contains("BLOB") {
            return Canonical::Bytes;
        }
        if t.contains("REAL") || t.contains("FLOA") || t.contains("DOUB") {
            return Canonical::Float;
        }
        if (t.starts_with("DECIMAL") || t.starts_with("NUMERIC"))
            && let Some(ps) = precision_scale(&t)
        {
            return Canonical::Decimal(Some(ps));
        }
        if t.starts_with("BOOL") {
            return Canonical::Bool;
        }
        // NUMERIC affinity without a precision (DATE, DATETIME, NUMERIC, ...): SQLite keeps
        // whatever the application wrote, most often text, so text holds it exactly.
        Canonical::Text
    }

    fn native(&self, t: &Canonical, _keyed: bool) -> String {
        match t {
            Canonical::Bool | Canonical::Int { .. } => "INTEGER",
            Canonical::Float => "REAL",
            Canonical::Bytes => "BLOB",
            _ => "TEXT",
        }
        .into()
    }
}
