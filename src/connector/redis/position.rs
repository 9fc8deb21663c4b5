//! Redis stream positions: `redis:REPLID:OFFSET:DB`, the replication id, the offset of
//! the last replication-stream byte applied and the database the stream had selected
//! there (a continued stream does not select it again). Offsets go on across a failover
//! or a restart that keeps its data (PSYNC2's second id), so they alone order positions.

use crate::model::{Position, PositionParseError};

/// The position after `offset` bytes of the stream of `replid`, with database `db` selected.
pub fn position(replid: &str, offset: u64, db: u32) -> Position {
    Position::new(format!("redis:{replid}:{offset}:{db}"), offset.to_be_bytes().to_vec(), None)
}

/// Reads `redis:REPLID:OFFSET[:DB]`.
pub fn parse(text: &str) -> Result<Position, PositionParseError> {
    let (replid, offset, db) = split(text).ok_or_else(|| PositionParseError {
        text: text.to_string(),
        expected: "expected redis:REPLID:OFFSET:DB (a 40-character replication id, a byte offset and a database)"
            .into(),
    })?;
    Ok(position(replid, offset, db))
}

/// The replication id, offset and selected database of a position.
pub fn split(text: &str) -> Option<(&str, u64, u32)> {
    let rest = text.strip_prefix("redis:")?;
    let (replid, rest) = rest.split_once(':')?;
    if replid.len() != 40 || !replid.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    let (offset, db) = rest.split_once(':').unwrap_or((rest, "0"));
    Some((replid, offset.parse().ok()?, db.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_round_trip_and_order_by_offset() {
        let id = "a".repeat(40);
        let p = parse(&format!("redis:{id}:1234:5")).expect("parses");
        assert_eq!(split(&p.to_string()), Some((id.as_str(), 1234, 5)));
        let other = position(&"b".repeat(40), 99, 0);
        assert_eq!(other.stream_cmp(&p), Some(std::cmp::Ordering::Less));
        assert!(parse("redis:short:1").is_err() && parse("redis:x").is_err());
    }
}
