//! Binding model values to SQLite statements: what SQLite can hold exactly, and a clear
//! error for what it cannot.

use sqlx::Sqlite;
use sqlx::query::Query;
use sqlx::sqlite::SqliteArguments;

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
        Value::Text(s) | Value::Decimal(s) | Value::Json(s) => q.bind(s.clone()),
        Value::Bytes(b) => q.bind(b.clone()),
        // The UTC text MySQL itself takes back, so a round trip is exact.
        Value::Timestamp(us) => q.bind(crate::model::timestamp_text(*us)),
        other => q.bind(other.to_string()),
    })
}

/// Binds a row of values in order.
pub fn bind_all<'q>(mut q: SqliteQuery<'q>, values: &[Value]) -> Result<SqliteQuery<'q>, UnstorableValue> {
    for v in values {
        q = bind_value(q, v)?;
    }
    Ok(q)
}
