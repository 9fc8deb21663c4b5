//! The envelope's field types (docs/kafka.md) to and from ferry's canonical types: a
//! topic has no declared columns, so a target schema carries these names only for
//! messages and docs; values are encoded by their own kind (see `envelope`).

use crate::connector::typemap::{Canonical, TypeMap};

/// Kafka's type map: the JSON encodings of the envelope.
pub struct Types;

impl TypeMap for Types {
    fn canonical(&self, decl: &str) -> Canonical {
        match decl {
            "boolean" => Canonical::Bool,
            "int64" => Canonical::Int { bits: 64, unsigned: false },
            "uint64" => Canonical::Int { bits: 64, unsigned: true },
            "double" => Canonical::Float,
            "decimal" => Canonical::Decimal(None),
            "bytes" => Canonical::Bytes,
            "timestamp" => Canonical::Timestamp,
            "datetime" => Canonical::DateTime,
            "date" => Canonical::Date,
            "time" => Canonical::Time,
            "json" => Canonical::Json,
            "uuid" => Canonical::Uuid,
            _ => Canonical::Text,
        }
    }

    fn native(&self, t: &Canonical, _keyed: bool) -> String {
        match t {
            Canonical::Bool => "boolean",
            Canonical::Int { unsigned: true, bits: 64 } => "uint64",
            Canonical::Int { .. } => "int64",
            Canonical::Float => "double",
            Canonical::Decimal(_) => "decimal",
            Canonical::Bytes => "bytes",
            Canonical::Timestamp => "timestamp",
            Canonical::DateTime => "datetime",
            Canonical::Date => "date",
            Canonical::Time => "time",
            Canonical::Json => "json",
            Canonical::Uuid => "uuid",
            Canonical::Text | Canonical::Enum(_) => "string",
        }
        .into()
    }
}
