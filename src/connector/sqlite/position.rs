//! SQLite stream positions: `sqlite:SEQ`, the changelog sequence of the last change
//! consumed. The sequence counts changes, so lag in changes is exact.

use crate::model::{Position, PositionParseError};

/// The position after the change with sequence `seq`.
pub fn at(seq: i64) -> Position {
    // Sign bit flipped so big-endian bytes order like the signed numbers.
    let order = ((seq as u64) ^ (1 << 63)).to_be_bytes().to_vec();
    Position::new(format!("sqlite:{seq}"), order, Some(seq))
}

/// The changelog sequence of a SQLite position; `None` for another kind of stream.
pub fn seq(p: &Position) -> Option<i64> {
    if p.kind() == "sqlite" { p.detail().parse().ok() } else { None }
}

/// Reads `sqlite:SEQ`.
pub fn parse(text: &str) -> Result<Position, PositionParseError> {
    let err = || PositionParseError { text: text.to_string(), expected: "expected sqlite:<sequence>".into() };
    let seq = text.strip_prefix("sqlite:").ok_or_else(err)?.parse().map_err(|_| err())?;
    Ok(at(seq))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cmp::Ordering;

    #[test]
    fn sqlite_positions_round_trip_and_order() {
        let p = at(42);
        assert_eq!(parse(&p.to_string()).ok(), Some(p.clone()));
        assert_eq!(seq(&p), Some(42));
        assert_eq!(at(-1).stream_cmp(&at(0)), Some(Ordering::Less));
        assert_eq!(at(9).stream_cmp(&at(10)), Some(Ordering::Less));
        assert!(parse("sqlite:x").is_err());
        assert!(parse("mysql:1").is_err());
    }
}
