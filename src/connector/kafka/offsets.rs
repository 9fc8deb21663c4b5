//! A Kafka source's position: the next offset to read in every partition of the topics
//! it mirrors, written `kafka:TOPIC:PARTITION:OFFSET,…` (sorted). Offsets only grow, so
//! their sum orders the positions of one reader, and counts messages for lag.

use std::collections::BTreeMap;

use crate::model::{Position, PositionParseError};

/// Next offset to read per (topic, partition).
pub type Offsets = BTreeMap<(String, i32), i64>;

/// The position of `offsets`.
pub fn position(offsets: &Offsets) -> Position {
    let text = offsets.iter().map(|((t, p), o)| format!("{t}:{p}:{o}")).collect::<Vec<_>>().join(",");
    let sum: i64 = offsets.values().sum();
    Position::new(format!("kafka:{text}"), sum.max(0).to_be_bytes().to_vec(), Some(sum))
}

/// The offsets of a position's text (`kafka:TOPIC:P:O,…`; a bare `P:O` entry, as an older
/// form spelled one topic's partitions, reads with an empty topic).
pub fn parse(text: &str) -> Result<Offsets, PositionParseError> {
    let bad = || PositionParseError {
        text: text.to_string(),
        expected: "expected kafka:TOPIC:PARTITION:OFFSET[,…]".into(),
    };
    let detail = text.strip_prefix("kafka:").ok_or_else(bad)?;
    let mut out = Offsets::new();
    for part in detail.split(',').filter(|p| !p.is_empty()) {
        let fields: Vec<&str> = part.split(':').collect();
        let (topic, p, o) = match fields.as_slice() {
            [t, p, o] => (*t, *p, *o),
            [p, o] => ("", *p, *o),
            _ => return Err(bad()),
        };
        let (p, o): (i32, i64) = (p.parse().map_err(|_| bad())?, o.parse().map_err(|_| bad())?);
        if p < 0 || o < 0 {
            return Err(bad());
        }
        out.insert((topic.to_string(), p), o);
    }
    Ok(out)
}

/// The position of a log's messages at rest: a snapshot chunk of a topic is consistent
/// with any position (messages never change), so it asks for no catching up.
pub fn start() -> Position {
    position(&Offsets::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_round_trip_and_order_by_progress() {
        let mut o = Offsets::new();
        o.insert(("orders".into(), 0), 5);
        o.insert(("orders".into(), 1), 7);
        let p = position(&o);
        assert_eq!(p.to_string(), "kafka:orders:0:5,orders:1:7");
        assert_eq!(parse(&p.to_string()).expect("parse"), o);
        let mut later = o.clone();
        later.insert(("orders".into(), 1), 9);
        assert_eq!(p.stream_cmp(&position(&later)), Some(std::cmp::Ordering::Less));
        assert_eq!(p.changes_until(&position(&later)), Some(2));
        assert!(parse("kafka:a:b:c").is_err() && parse("mysql:1").is_err());
        assert_eq!(parse("kafka:").expect("empty"), Offsets::new());
        assert_eq!(start().stream_cmp(&p), Some(std::cmp::Ordering::Less));
    }
}
