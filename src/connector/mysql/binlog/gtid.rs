//! MariaDB GTIDs: the GTID state a position carries (per replication domain, the server
//! and sequence of its last transaction), its text form, and the GTID and GTID_LIST
//! events that move it (parsed by hand: the driver knows only MySQL's).

use std::collections::BTreeMap;

use super::wire::{Cur, DecodeError};

/// GTID event flag: the group is a single statement without BEGIN/COMMIT (DDL).
const FL_STANDALONE: u8 = 1;

/// A GTID state: domain -> (server, sequence).
pub(super) type GtidState = BTreeMap<u32, (u32, u64)>;

/// A MariaDB GTID event: the transaction group it opens.
pub(super) struct GtidEvent {
    /// Its sequence number.
    pub(super) seq: u64,
    /// Its replication domain.
    pub(super) domain: u32,
    /// A single statement without BEGIN/COMMIT (DDL).
    pub(super) standalone: bool,
}

/// Reads a GTID event's body.
pub(super) fn gtid_event(data: &[u8]) -> Result<GtidEvent, DecodeError> {
    let mut c = Cur::new(data);
    let (seq, domain, flags) = (c.le(8)?, c.le(4)?, c.le(1)?);
    Ok(GtidEvent { seq, domain: domain as u32, standalone: flags as u8 & FL_STANDALONE != 0 })
}

/// Merges a GTID_LIST event (the GTID state at this point) into `state`, keeping the
/// newer sequence per domain.
pub(super) fn merge_list_event(state: &mut GtidState, data: &[u8]) -> Result<(), DecodeError> {
    let mut c = Cur::new(data);
    let count = c.le(4)? & 0x0fff_ffff;
    for _ in 0..count {
        let (d, s, n) = (c.le(4)? as u32, c.le(4)? as u32, c.le(8)?);
        match state.get(&d) {
            Some((_, cur)) if *cur > n => {}
            _ => {
                state.insert(d, (s, n));
            }
        }
    }
    Ok(())
}

/// Parses a MariaDB GTID list `d-s-n,d-s-n` into domain -> (server, sequence).
pub(super) fn parse_gtid_list(text: &str) -> Option<GtidState> {
    let mut out = GtidState::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let mut it = part.split('-');
        let d = it.next()?.parse().ok()?;
        let s = it.next()?.parse().ok()?;
        let n = it.next()?.parse().ok()?;
        if it.next().is_some() {
            return None;
        }
        out.insert(d, (s, n));
    }
    Some(out)
}

/// Formats a GTID state as MariaDB writes it, sorted by domain.
pub(super) fn format_gtid_list(state: &GtidState) -> String {
    let parts: Vec<String> = state.iter().map(|(d, (s, n))| format!("{d}-{s}-{n}")).collect();
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gtid_lists_round_trip_sorted() {
        let s = parse_gtid_list("2-2-5,1-1-10").expect("list");
        assert_eq!(format_gtid_list(&s), "1-1-10,2-2-5");
        assert!(parse_gtid_list("1-1").is_none());
        assert_eq!(format_gtid_list(&parse_gtid_list("").expect("empty list")), "");
    }
}
