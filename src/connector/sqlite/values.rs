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

/// Binds one value. Types SQLite has no storage class for are bound as their exact text.
pub fn bind_value<'q>(q: SqliteQuery<'q>, v: &Value) -> Result<SqliteQuery<'q>, UnstorableValue> {
    Ok(match v {
        Value::Null => q.bind(None::<i64>),
        Value::Int(i) => q.bind(*i),
        Value::UInt(u) => match i64::try_from(*u) {
            Ok(i) => q.bind(i),
            Err(_) => {
                return Err(UnstorableValue {
                    value: u.to_string(),
                    why: "SQLite integers are signed 64-bit; store it in a TEXT column",
                });
            }
        },
        Value::Float(f) => q.bind(*f),
        // One copy into the shared buffer sqlx keeps (a cloned String would be copied
        // and then boxed again).
        Value::Text(s) | Value::Decimal(s) | Value::Json(s) => q.bind(Arc::<str>::from(s.as_str())),
        Value::Bytes(b) => q.bind(b.clone()),
        // The UTC text MySQL itself takes back, so a round trip is exact.
        Value::Timestamp(us) => q.bind(crate::model::timestamp_text(*us)),
        other => q.bind(other.to_string()),
    })
}

/// Appends one value to arguments built ahead (multi-row statements: reserved once,
/// without a `Query::bind` per value), as [`bind_value`] binds it.
pub fn add_value(args: &mut SqliteArguments, v: &Value) -> Result<(), UnstorableValue> {
    let added = match v {
        Value::Null => args.add(None::<i64>),
        Value::Int(i) => args.add(*i),
        Value::UInt(u) => match i64::try_from(*u) {
            Ok(i) => args.add(i),
            Err(_) => {
                return Err(UnstorableValue {
                    value: u.to_string(),
                    why: "SQLite integers are signed 64-bit; store it in a TEXT column",
                });
            }
        },
        Value::Float(f) => args.add(*f),
        Value::Text(s) | Value::Decimal(s) | Value::Json(s) => args.add(Arc::<str>::from(s.as_str())),
        Value::Bytes(b) => args.add(b.clone()),
        Value::Timestamp(us) => args.add(crate::model::timestamp_text(*us)),
        other => args.add(other.to_string()),
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
