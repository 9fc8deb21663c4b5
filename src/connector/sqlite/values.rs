//! Binding model values to SQLite statements: what SQLite can hold exactly, and a clear
//! error for what it cannot.

use std::sync::Arc;

use sqlx::query::Query;
use sqlx::sqlite::SqliteArguments;
use sqlx::{Arguments, Sqlite};

use crate::model::Value;

/// A query being built.
pub type SqliteQuery<'q> = Query<'q, Sqlite, SqliteArguments>;

/// A value SQLite cannot store exactly.
#[derive(Debug, thiserror::Error)]
#[error("value {value} cannot be stored exactly in SQLite: {why}")]
pub struct UnstorableValue {
    /// The value, rendered.
    pub value: String,
    /// Why.
    pub why: &'static str,
}

/// A value as SQLite stores it: the one mapping [`bind_value`] and [`add_value`] share.
enum Stored {
    Null,
    Int(i64),
    Float(f64),
    /// One copy into the shared buffer sqlx keeps (a cloned String would be copied and
    /// then boxed again).
    Text(Arc<str>),
    Bytes(Vec<u8>),
}

/// How `v` is stored. Types SQLite has no storage class for are stored as their exact text.
fn stored(v: &Value) -> Result<Stored, UnstorableValue> {
    Ok(match v {
        Value::Null => Stored::Null,
        Value::Int(i) => Stored::Int(*i),
        Value::UInt(u) => match i64::try_from(*u) {
            Ok(i) => Stored::Int(i),
            Err(_) => {
                return Err(UnstorableValue {
                    value: u.to_string(),
                    why: "SQLite integers are signed 64-bit; store it in a TEXT column",
                });
            }
        },
        Value::Float(f) => Stored::Float(*f),
        Value::Text(s) | Value::Decimal(s) | Value::Json(s) => Stored::Text(Arc::from(s.as_str())),
        Value::Bytes(b) => Stored::Bytes(b.clone()),
        // The UTC text MySQL itself takes back, so a round trip is exact.
        Value::Timestamp(us) => Stored::Text(Arc::from(crate::model::timestamp_text(*us))),
        other => Stored::Text(Arc::from(other.to_string())),
    })
}

/// Binds one value (as [`stored`] stores it).
pub fn bind_value<'q>(q: SqliteQuery<'q>, v: &Value) -> Result<SqliteQuery<'q>, UnstorableValue> {
    Ok(match stored(v)? {
        Stored::Null => q.bind(None::<i64>),
        Stored::Int(i) => q.bind(i),
        Stored::Float(f) => q.bind(f),
        Stored::Text(t) => q.bind(t),
        Stored::Bytes(b) => q.bind(b),
    })
}

/// Appends one value to arguments built ahead (multi-row statements: reserved once,
/// without a `Query::bind` per value), as [`bind_value`] binds it.
pub fn add_value(args: &mut SqliteArguments, v: &Value) -> Result<(), UnstorableValue> {
    let added = match stored(v)? {
        Stored::Null => args.add(None::<i64>),
        Stored::Int(i) => args.add(i),
        Stored::Float(f) => args.add(f),
        Stored::Text(t) => args.add(t),
        Stored::Bytes(b) => args.add(b),
    };
    added.map_err(|_| UnstorableValue { value: v.to_string(), why: "the SQLite driver could not encode it" })
}

/// Binds a row of values in order.
pub fn bind_all<'q>(mut q: SqliteQuery<'q>, values: &[Value]) -> Result<SqliteQuery<'q>, UnstorableValue> {
    for v in values {
        q = bind_value(q, v)?;
    }
    Ok(q)
}
