//! Column types across stores (docs/type-mapping.md). Each store maps its native types
//! to ferry's canonical types and back ([`TypeMap`]), so any two stores map through one
//! form instead of pairwise tables. Values keep their exact form; a value the target
//! type cannot hold exactly is refused by the target's binding, naming the row.

use crate::model::TableSchema;

/// ferry's canonical column types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Canonical {
    /// True/false.
    Bool,
    /// Integer of this many bits.
    Int {
        /// Width in bits (8, 16, 24, 32, 64).
        bits: u8,
        /// No sign.
        unsigned: bool,
    },
    /// IEEE binary floating point.
    Float,
    /// Exact decimal, with precision and scale when declared.
    Decimal(Option<(u32, u32)>),
    /// Character string.
    Text,
    /// Byte string.
    Bytes,
    /// An instant (µs since the epoch, UTC).
    Timestamp,
    /// Wall-clock date and time without a zone.
    DateTime,
    /// Calendar date.
    Date,
    /// Time of day or duration.
    Time,
    /// JSON document.
    Json,
    /// UUID.
    Uuid,
    /// One of a list of labels.
    Enum(Vec<String>),
}

/// A store's native column types to and from the canonical ones.
pub trait TypeMap: Sync {
    /// The canonical type of a native declared type.
    fn canonical(&self, decl: &str) -> Canonical;
    /// The native type for a canonical one; `keyed` columns are part of a key (some
    /// stores cannot index unbounded types).
    fn native(&self, t: &Canonical, keyed: bool) -> String;
}

/// A source table's schema with column types the target store understands (and no
/// source CREATE TABLE, which is in the source's dialect). `same_store` keeps it whole.
pub fn for_target(schema: &TableSchema, from: &dyn TypeMap, to: &dyn TypeMap, same_store: bool) -> TableSchema {
    let mut out = schema.clone();
    if same_store {
        return out;
    }
    out.create_sql = None;
    let keyed: Vec<bool> = (0..schema.columns.len())
        .map(|i| schema.primary_key.contains(&i) || schema.unique_keys.iter().any(|k| k.contains(&i)))
        .collect();
    for (c, keyed) in out.columns.iter_mut().zip(keyed) {
        c.decl_type = to.native(&from.canonical(&c.decl_type), keyed);
    }
    out
}

/// `(p,s)` of a declaration such as `decimal(10, 2)`.
pub fn precision_scale(decl: &str) -> Option<(u32, u32)> {
    let args = decl.split_once('(')?.1.split_once(')')?.0;
    let (p, s) = args.split_once(',').unwrap_or((args, "0"));
    Some((p.trim().parse().ok()?, s.trim().parse().ok()?))
}
