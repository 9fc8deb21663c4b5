//! MySQL/MariaDB stream positions: `mysql:FILE:POS:GTID-LIST`, the binlog file and the
//! end offset of the last event consumed, with the MariaDB GTID list at that point
//! ("" if unknown). Resuming prefers the GTID list over file+pos.

use crate::model::{Position, PositionParseError};

/// A binlog position, as the MySQL connector works with it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BinlogPos {
    /// Binlog file name (`bin.000003`).
    pub file: String,
    /// Offset just after the last consumed event.
    pub pos: u64,
    /// MariaDB GTID list at this point (`domain-server-seq,...`), or "".
    pub gtid: String,
}

impl BinlogPos {
    /// The engine's opaque position. Binlog files are numbered with a fixed width, so
    /// names sort in stream order; the offset follows the name.
    pub fn to_position(&self) -> Position {
        let mut order = self.file.as_bytes().to_vec();
        order.push(0);
        order.extend_from_slice(&self.pos.to_be_bytes());
        Position::new(format!("mysql:{}:{}:{}", self.file, self.pos, self.gtid), order, None)
    }

    /// A position inside the transaction that starts here, after its `part`-th part: a
    /// transaction too big for one read is handed out in parts (`ReadBatch::continues`).
    /// It orders after this position and before the transaction's end, and its text
    /// (`mysql:FILE:POS:GTID#PART`) names the transaction's start: read back, it resumes
    /// there, the whole transaction again. The engine never records one (the group's
    /// checkpoint is written with its last part), so this is only a safety net.
    pub fn part_position(&self, part: u32) -> Position {
        let mut order = self.file.as_bytes().to_vec();
        order.push(0);
        order.extend_from_slice(&self.pos.to_be_bytes());
        order.extend_from_slice(&part.to_be_bytes());
        Position::new(format!("mysql:{}:{}:{}#{part}", self.file, self.pos, self.gtid), order, None)
    }

    /// Whether an engine position lies inside a transaction handed out in parts.
    pub fn is_part(p: &Position) -> bool {
        p.kind() == "mysql" && p.detail().contains('#')
    }

    /// The binlog position of an engine position; an error for another kind of stream.
    /// A position inside a transaction (see [`BinlogPos::part_position`]) gives the
    /// transaction's start.
    pub fn of(p: &Position) -> Result<BinlogPos, PositionParseError> {
        let text = p.to_string();
        let err = || PositionParseError {
            text: text.clone(),
            expected: "expected mysql:<binlog file>:<offset>:<gtid list>".into(),
        };
        if p.kind() != "mysql" {
            return Err(err());
        }
        let mut parts = p.detail().splitn(3, ':');
        let file = parts.next().filter(|f| !f.is_empty()).ok_or_else(err)?.to_string();
        let pos = parts.next().and_then(|p| p.parse().ok()).ok_or_else(err)?;
        let gtid = parts.next().unwrap_or("");
        let gtid = gtid.split_once('#').map_or(gtid, |(g, _)| g).to_string();
        Ok(BinlogPos { file, pos, gtid })
    }
}

/// Reads `mysql:FILE:POS:GTID-LIST`.
pub fn parse(text: &str) -> Result<Position, PositionParseError> {
    let raw = Position::new(text.to_string(), Vec::new(), None);
    BinlogPos::of(&raw).map(|b| b.to_position())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cmp::Ordering;

    #[test]
    fn binlog_positions_round_trip_and_order() {
        let m = BinlogPos { file: "bin.000002".into(), pos: 1234, gtid: "1-1-10,2-2-5".into() }.to_position();
        assert_eq!(parse(&m.to_string()).ok(), Some(m.clone()));
        let later = BinlogPos { file: "bin.000003".into(), pos: 4, gtid: String::new() }.to_position();
        assert_eq!(m.stream_cmp(&later), Some(Ordering::Less));
        let same_file = BinlogPos { file: "bin.000002".into(), pos: 99999, gtid: String::new() }.to_position();
        assert_eq!(m.stream_cmp(&same_file), Some(Ordering::Less));
        assert!(parse("mysql").is_err());
        assert!(parse("sqlite:4").is_err());
    }

    #[test]
    fn parts_of_a_transaction_order_inside_it_and_read_back_as_its_start() {
        let start = BinlogPos { file: "bin.000002".into(), pos: 1234, gtid: "1-1-10".into() };
        let end = BinlogPos { file: "bin.000002".into(), pos: 99999, gtid: "1-1-11".into() }.to_position();
        let (p1, p2) = (start.part_position(1), start.part_position(2));
        assert_eq!(start.to_position().stream_cmp(&p1), Some(Ordering::Less));
        assert_eq!(p1.stream_cmp(&p2), Some(Ordering::Less));
        assert_eq!(p2.stream_cmp(&end), Some(Ordering::Less));
        assert!(BinlogPos::is_part(&p1) && !BinlogPos::is_part(&end));
        assert_eq!(BinlogPos::of(&p2).ok(), Some(start.clone()));
        assert_eq!(parse(&p2.to_string()).ok(), Some(start.to_position()));
        assert_ne!(p1, start.to_position());
    }
}
