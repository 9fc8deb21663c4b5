//! External versions that only grow for a task. A version is
//! `epoch · 2^41 + seq · 2 + snapshot`:
//!
//! - `seq` numbers the stream's changes (heartbeats aside) in stream order from the
//!   epoch's start; the checkpoint stores the `seq` of its position, so a replay from
//!   the checkpoint numbers the same changes the same way (a source's stream is
//!   immutable), and a replayed change can never carry a higher version than a newer
//!   change already applied: the server keeps the newer document (409 per item).
//! - Snapshot rows applied while the counter stands at `seq` take `seq · 2 + 1`: above
//!   every change they already contain, below the next change of the stream. They do
//!   not advance the counter, so the numbering depends on the stream alone.
//! - `epoch` (stored with the checkpoint) grows when the stream after the checkpoint
//!   cannot be the one numbered before: the source's positions reset or changed kind
//!   (a failover, a cutover onto another server), or the last run stopped on a refused
//!   document (which may be skipped, removing changes from the count). A new epoch
//!   numbers from 0 above every version of the older ones.

/// Bits of a version below the epoch.
const EPOCH_SHIFT: u32 = 41;
/// Changes one epoch can number (2^40; past it the epoch moves on).
pub const SEQ_LIMIT: u64 = 1 << 40;

/// The version of change `seq` of `epoch` (or of a snapshot row applied at `seq`).
pub fn version(epoch: u64, seq: u64, snapshot: bool) -> i64 {
    let v = (epoch << EPOCH_SHIFT) | (seq << 1) | u64::from(snapshot);
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_grow_with_the_stream_and_with_each_epoch() {
        assert!(version(0, 5, false) < version(0, 5, true), "a snapshot row at 5 is newer than change 5");
        assert!(version(0, 5, true) < version(0, 6, false), "and older than change 6");
        assert!(version(0, SEQ_LIMIT - 1, true) < version(1, 0, false), "a new epoch is above the old one");
        assert!(version((1 << 22) - 1, SEQ_LIMIT - 1, true) > 0, "fits in a signed 64-bit version");
    }
}
