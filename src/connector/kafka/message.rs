//! A topic read as a source (mirroring): each message is a row of the fixed message
//! schema (partition, offset, key, value, headers, timestamp), keyed by (partition,
//! offset), so the engine's snapshot, stream, checkpoints and renames carry messages
//! like rows. A Kafka sink recognises the schema and writes each message back as it
//! was: same key, value, headers and timestamp, into the same partition number.

use std::collections::BTreeMap;

use base64::Engine as _;
use rskafka::record::{Record, RecordAndOffset};

use crate::model::{Column, Row, TableName, TableSchema, Value};

/// Header naming the site where a message was first produced (loop prevention).
pub const ORIGIN_HEADER: &str = "ferry.origin";
/// Header of a mirrored message: its offset in the source partition (the read-back of a
/// restart skips what already landed).
pub const OFFSET_HEADER: &str = "ferry.offset";

/// Column names and types of the message schema, in order.
const COLUMNS: [(&str, &str, bool); 6] = [
    ("partition", "int64", false),
    ("offset", "int64", false),
    ("key", "bytes", true),
    ("value", "bytes", true),
    ("headers", "json", false),
    ("timestamp", "timestamp", false),
];

/// What `create_sql` of a topic's schema starts with: the rest is its partition count.
const PARTITIONS_TAG: &str = "kafka-topic partitions=";

/// The schema of a topic with `partitions` partitions (the count rides in `create_sql`,
/// so a Kafka target creates the mirror topic alike).
pub fn schema(topic: &str, partitions: usize) -> TableSchema {
    TableSchema {
        name: TableName::bare(topic),
        columns: COLUMNS
            .iter()
            .map(|(n, t, nullable)| Column { name: (*n).into(), decl_type: (*t).into(), nullable: *nullable })
            .collect(),
        primary_key: vec![0, 1],
        unique_keys: Vec::new(),
        foreign_keys: Vec::new(),
        create_sql: Some(format!("{PARTITIONS_TAG}{partitions}")),
    }
}

/// The partition count of a topic's schema, when it is the message schema.
pub fn partitions_of(t: &TableSchema) -> Option<usize> {
    let same = t.columns.len() == COLUMNS.len()
        && t.columns.iter().zip(COLUMNS).all(|(c, (n, ty, _))| c.name == n && c.decl_type == ty);
    if !same {
        return None;
    }
    t.create_sql.as_deref().and_then(|s| s.strip_prefix(PARTITIONS_TAG)).and_then(|n| n.parse().ok())
}

/// A header's text.
fn header<'a>(headers: &'a BTreeMap<String, Vec<u8>>, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| std::str::from_utf8(v).ok())
}

/// The site a message was first produced at: its origin header, else `here`.
pub fn origin<'a>(r: &'a Record, here: &'a str) -> &'a str {
    header(&r.headers, ORIGIN_HEADER).unwrap_or(here)
}

/// A message of partition `p` as a row; a message without an origin header gets `site`.
pub fn row_of(p: i32, m: &RecordAndOffset, site: &str) -> Row {
    let r = &m.record;
    let mut headers: Vec<(&str, String)> =
        r.headers.iter().map(|(k, v)| (k.as_str(), base64::engine::general_purpose::STANDARD.encode(v))).collect();
    if !r.headers.contains_key(ORIGIN_HEADER) {
        headers.push((ORIGIN_HEADER, base64::engine::general_purpose::STANDARD.encode(site)));
    }
    vec![
        Value::Int(i64::from(p)),
        Value::Int(m.offset),
        r.key.clone().map_or(Value::Null, Value::Bytes),
        r.value.clone().map_or(Value::Null, Value::Bytes),
        Value::Json(serde_json::to_string(&headers).unwrap_or_else(|_| "[]".into())),
        Value::Timestamp(r.timestamp.timestamp_micros()),
    ]
}

/// A message row taken apart.
#[derive(Debug)]
pub struct Message {
    /// Its partition number (the same in source and target).
    pub partition: i32,
    /// Its offset in the source partition.
    pub offset: i64,
    /// The record to write: key, value, headers and timestamp as read.
    pub record: Record,
}

/// The message a row of the message schema holds; `Err` says which column is wrong.
pub fn message_of(row: &Row) -> Result<Message, String> {
    let [p, o, key, value, headers, ts] = row.as_slice() else {
        return Err(format!("{} columns, expected {}", row.len(), COLUMNS.len()));
    };
    let (Value::Int(p), Value::Int(offset)) = (p, o) else { return Err(format!("partition {p}, offset {o}")) };
    let partition = i32::try_from(*p).map_err(|_| format!("partition {p}"))?;
    let bytes = |v: &Value, what: &str| match v {
        Value::Null => Ok(None),
        Value::Bytes(b) => Ok(Some(b.clone())),
        other => Err(format!("{what} {other}")),
    };
    let Value::Json(text) = headers else { return Err(format!("headers {headers}")) };
    let pairs: Vec<(String, String)> = serde_json::from_str(text).map_err(|e| format!("headers {text}: {e}"))?;
    let mut map = BTreeMap::new();
    for (k, v) in pairs {
        let v = base64::engine::general_purpose::STANDARD.decode(&v).map_err(|e| format!("header {k}: {e}"))?;
        map.insert(k, v);
    }
    let Value::Timestamp(us) = ts else { return Err(format!("timestamp {ts}")) };
    let timestamp = rskafka::chrono::DateTime::from_timestamp_micros(*us).ok_or_else(|| format!("timestamp {us}"))?;
    let record = Record { key: bytes(key, "key")?, value: bytes(value, "value")?, headers: map, timestamp };
    Ok(Message { partition, offset: *offset, record })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_through_rows_keeping_key_value_headers_and_time() {
        let ts = rskafka::chrono::DateTime::from_timestamp_micros(1_700_000_000_123_000).expect("time");
        let m = RecordAndOffset {
            record: Record {
                key: None,
                value: Some(vec![0, 255]),
                headers: BTreeMap::from([("trace".to_string(), b"x1".to_vec())]),
                timestamp: ts,
            },
            offset: 41,
        };
        let row = row_of(2, &m, "dc-a");
        let back = message_of(&row).expect("row");
        assert_eq!((back.partition, back.offset), (2, 41));
        assert_eq!((&back.record.key, &back.record.value), (&None, &Some(vec![0, 255])));
        assert_eq!(back.record.timestamp, ts);
        assert_eq!(header(&back.record.headers, "trace"), Some("x1"));
        assert_eq!(origin(&back.record, "elsewhere"), "dc-a", "a message without origin gets its cluster's site");
        let s = schema("orders", 3);
        assert_eq!(partitions_of(&s), Some(3));
        assert_eq!(s.key_of(&row), vec![Value::Int(2), Value::Int(41)]);
    }
}
