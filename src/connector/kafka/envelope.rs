//! The message of a change: key = the primary key as a JSON object, value = a
//! Debezium-compatible envelope (`before`, `after`, `source`, `op`, `ts_ms`), and the
//! JSON encoding of each value kind (docs/kafka.md lists them).

use serde_json::{Map, Value as Json, json};

pub use crate::model::json::row_json;
use crate::model::json::value_json as encode;
use crate::model::{Op, Row, TableName, TableSchema, Value};

/// The `{db}` of a table: its database or schema, `main` for SQLite.
pub fn db_of(name: &TableName) -> &str {
    name.schema.as_deref().unwrap_or("main")
}

/// The topic of a table from the task's template (`ferry.{db}.{table}`).
pub fn topic_of(template: &str, name: &TableName) -> String {
    template.replace("{db}", db_of(name)).replace("{table}", &name.name)
}

/// Why a topic name is not one Kafka accepts, if it is not.
pub fn invalid_topic(topic: &str) -> Option<String> {
    if topic.is_empty() || topic.len() > 249 {
        return Some(format!("topic name {topic:?} must be 1 to 249 characters long"));
    }
    if topic == "." || topic == ".." {
        return Some(format!("topic name {topic:?} is reserved"));
    }
    topic
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        .map(|c| format!("topic name {topic:?} holds {c:?}; Kafka allows only ASCII letters, digits, '.', '_' and '-'"))
}

/// The message key: the primary key as a JSON object (`{"id":1}`).
pub fn key_bytes(table: &TableSchema, key: &[Value]) -> Vec<u8> {
    let mut m = Map::new();
    for (name, v) in table.key_columns().into_iter().zip(key) {
        m.insert(name.to_string(), encode(v));
    }
    Json::Object(m).to_string().into_bytes()
}

/// What the envelope's `source` block says.
pub struct SourceInfo<'a> {
    /// The site where the application wrote the change.
    pub site: &'a str,
    /// The source position after its transaction.
    pub position: &'a str,
    /// The source table.
    pub table: &'a TableName,
    /// Commit time, µs.
    pub commit_us: i64,
    /// A snapshot read (`op` r).
    pub snapshot: bool,
}

/// The envelope of one change (or snapshot row: `op` r).
pub fn envelope(
    table: &TableSchema,
    op: Op,
    before: Option<&Row>,
    after: Option<&Row>,
    src: &SourceInfo<'_>,
) -> Vec<u8> {
    let op = match (src.snapshot, op) {
        (true, _) => "r",
        (false, Op::Insert) => "c",
        (false, Op::Update) => "u",
        (false, Op::Delete) => "d",
    };
    json!({
        "before": before.map(|r| row_json(table, r)),
        "after": after.map(|r| row_json(table, r)),
        "source": {
            "connector": "ferry",
            "version": env!("CARGO_PKG_VERSION"),
            "site": src.site,
            "position": src.position,
            "db": db_of(src.table),
            "table": src.table.name,
            "ts_ms": src.commit_us.div_euclid(1000),
            "ts_us": src.commit_us,
            "snapshot": src.snapshot,
        },
        "op": op,
        "ts_ms": crate::model::now_micros().div_euclid(1000),
    })
    .to_string()
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_encode_as_documented() {
        assert_eq!(encode(&Value::Decimal("-12.3400".into())), json!("-12.3400"));
        assert_eq!(encode(&Value::UInt(u64::MAX)), json!(u64::MAX));
        assert_eq!(encode(&Value::Bytes(vec![0, 255])), json!("AP8="));
        assert_eq!(encode(&Value::Float(f64::NEG_INFINITY)), json!("-Infinity"));
        assert_eq!(encode(&Value::Timestamp(1_500_000)), json!("1970-01-01T00:00:01.500000Z"));
        assert_eq!(encode(&Value::Timestamp(86_400_000_000)), json!("1970-01-02T00:00:00.000000Z"));
        let dt = Value::DateTime { year: 2024, month: 2, day: 29, hour: 23, minute: 5, second: 9, micros: 7 };
        assert_eq!(encode(&dt), json!("2024-02-29T23:05:09.000007"));
        let t = Value::Time { negative: true, hours: 838, minutes: 59, seconds: 59, micros: 0 };
        assert_eq!(encode(&t), json!("-838:59:59.000000"));
        assert_eq!(topic_of("ferry.{db}.{table}", &TableName::bare("t")), "ferry.main.t");
        assert!(invalid_topic("a b").is_some() && invalid_topic("ferry.main.t").is_none());
    }
}
