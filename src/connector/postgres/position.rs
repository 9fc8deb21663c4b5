//! PostgreSQL stream positions: `pg:LSN` (`pg:0/16B3748`), the end of the last source
//! commit consumed. LSNs order the stream; the slot resumes after it.

use crate::model::{Position, PositionParseError};

/// A WAL position as the connector works with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Lsn(pub u64);

impl Lsn {
    /// The engine's opaque position.
    pub fn to_position(self) -> Position {
        Position::new(format!("pg:{}", self.text()), self.0.to_be_bytes().to_vec(), None)
    }

    /// PostgreSQL's `X/Y` text.
    pub fn text(self) -> String {
        format!("{:X}/{:X}", self.0 >> 32, self.0 & 0xffff_ffff)
    }

    /// Reads `X/Y`.
    pub fn parse_text(text: &str) -> Option<Lsn> {
        let (hi, lo) = text.split_once('/')?;
        let hi = u64::from_str_radix(hi, 16).ok()?;
        let lo = u64::from_str_radix(lo, 16).ok()?;
        (hi <= 0xffff_ffff && lo <= 0xffff_ffff).then_some(Lsn(hi << 32 | lo))
    }

    /// The LSN of an engine position; an error for another kind of stream.
    pub fn of(p: &Position) -> Result<Lsn, PositionParseError> {
        let err =
            || PositionParseError { text: p.to_string(), expected: "expected pg:<LSN> such as pg:0/16B3748".into() };
        if p.kind() != "pg" {
            return Err(err());
        }
        // A part of a big transaction (`LSN#N`) resumes at the transaction's start.
        let detail = p.detail();
        let detail = detail.split_once('#').map_or(detail, |(l, _)| l);
        Lsn::parse_text(detail).ok_or_else(err)
    }
}

/// Reads `pg:LSN`.
pub fn parse(text: &str) -> Result<Position, PositionParseError> {
    let raw = Position::new(text.to_string(), Vec::new(), None);
    Lsn::of(&raw).map(Lsn::to_position)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cmp::Ordering;

    #[test]
    fn lsns_round_trip_and_order() {
        let a = Lsn(0x1_0000_00A0).to_position();
        assert_eq!(a.to_string(), "pg:1/A0");
        assert_eq!(parse("pg:1/A0").ok(), Some(a.clone()));
        let b = parse("pg:1/FF").expect("lsn");
        assert_eq!(a.stream_cmp(&b), Some(Ordering::Less));
        assert!(parse("pg:zz").is_err());
        assert!(parse("mysql:1/2").is_err());
    }
}
