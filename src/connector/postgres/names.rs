//! Names of what ferry owns on a PostgreSQL server: its tables in the `ferry` schema,
//! and per source direction a replication slot, a publication and a replication origin.
//! Slot and publication names are limited to 63 bytes of `[a-z0-9_]`: a direction's
//! readable stem is cut and a hash of the full stream name keeps them apart.

use sha2::{Digest, Sha256};

/// Checkpoint rows (stream position and per-table snapshot progress).
pub const CHECKPOINT_TABLE: &str = "ferry_checkpoint";
/// Lease rows.
pub const LEASE_TABLE: &str = "ferry_lease";
/// Conflict log.
pub const CONFLICT_TABLE: &str = "ferry_conflict";
/// Heartbeat rows (flow through the stream).
pub const HEARTBEAT_TABLE: &str = crate::connector::HEARTBEAT_TABLE;
/// Snapshot watermarks (flow through the stream).
pub const SIGNAL_TABLE: &str = crate::connector::SIGNAL_TABLE;
/// Schema version of ferry's tables.
pub const SCHEMA_TABLE: &str = "ferry_schema";
/// Freeze state (cutover): what was changed, to restore it exactly.
pub const FREEZE_TABLE: &str = "ferry_freeze";
/// Replica identities ferry set to FULL for two-way, with what they were, to restore.
pub const IDENTITY_TABLE: &str = "ferry_identity";
/// Where each replication slot ferry created began (a checkpoint before it cannot be
/// read from it).
pub const SLOT_TABLE: &str = "ferry_slot";
/// Keys of tables ferry created, still to build once their first copy is done.
pub const DEFERRED_TABLE: &str = "ferry_deferred_key";

/// `ferry_<stem>_<hash>`, at most 63 bytes of `[a-z0-9_]`.
fn object_name(kind: &str, stream: &str) -> String {
    let stem: String =
        stream.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' }).collect();
    let hash = Sha256::digest(stream.as_bytes());
    let hex: String = hash.iter().take(5).map(|b| format!("{b:02x}")).collect();
    let stem: String = stem.chars().take(63 - 6 - kind.len() - 2 - hex.len()).collect();
    format!("ferry_{kind}_{stem}_{hex}")
}

/// The replication slot of a source direction's stream.
pub fn slot(stream: &str) -> String {
    object_name("s", stream)
}

/// The temporary slot that exports a first copy's snapshot, for the process `pid`
/// reading `stream` (a killed process's one may linger until its session ends).
pub fn snapshot_slot(stream: &str, pid: u32) -> String {
    object_name("x", &format!("{stream}/{pid}"))
}

/// The publication of a source direction's stream.
pub fn publication(stream: &str) -> String {
    object_name("p", stream)
}

/// The prefix of the replication origins of ferry's appliers writing changes that came
/// from `site`: a source reading that target drops transactions carrying one (two-way).
pub fn origin_prefix(site: &str) -> String {
    let stem: String =
        site.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' }).take(30).collect();
    let hash = Sha256::digest(site.as_bytes());
    let hex: String = hash.iter().take(4).map(|b| format!("{b:02x}")).collect();
    format!("ferry_o_{stem}_{hex}_")
}

/// The replication origin ferry's applier sets on a target for the changes of one task
/// direction, which come from `site` (one session per origin at a time: a direction of
/// its own each).
pub fn origin(site: &str, direction: &str) -> String {
    let hash = Sha256::digest(direction.as_bytes());
    let hex: String = hash.iter().take(5).map(|b| format!("{b:02x}")).collect();
    format!("{}{hex}", origin_prefix(site))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_postgres_limits_and_stay_apart() {
        let long = "node-1/a-very-long-task-name-that-goes-on-and-on-and-on/a->b";
        let s = slot(long);
        assert!(s.len() <= 63, "{s}");
        assert!(s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'));
        assert_ne!(slot("n/t/a->b"), slot("n/t/b->a"));
        assert_ne!(slot("n/t/a->b"), publication("n/t/a->b"));
        let o = origin(&"dc-".repeat(40), "task/a->b");
        assert!(o.len() <= 63 && o.starts_with(&origin_prefix(&"dc-".repeat(40))), "{o}");
        assert_ne!(origin("dc-a", "t/a->b"), origin("dc-a", "u/a->b"));
        assert!(!origin("dc-ab", "t").starts_with(&origin_prefix("dc-a")));
    }
}
