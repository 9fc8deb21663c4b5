//! The server ids ferry's sessions take on a MySQL/MariaDB server: a replica stream's
//! (every binlog reader registers as a replica under its own id) and a two-way applier's
//! (its writes carry an id derived from their origin site, so the reverse direction
//! knows them and drops them: loop prevention, see `versions.rs`).

use crate::model::SiteId;

/// A server id for a replica stream, derived from a stable string (node + direction), in
/// a range unlikely to clash with real servers (3,000,000,000 ..= 3,999,999,999).
pub fn replica_server_id(seed: &str) -> u32 {
    let h = crate::connector::own_names::fnv1a64(seed.bytes());
    3_000_000_000 + (h % 1_000_000_000) as u32
}

/// The server id a two-way applier uses while writing changes that came from `origin`.
pub fn apply_server_id(origin: &SiteId) -> u32 {
    replica_server_id(&format!("ferry-apply/{origin}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_ids_are_stable_and_high() {
        let a = replica_server_id("node-1 shop a->b");
        assert_eq!(a, replica_server_id("node-1 shop a->b"));
        assert_ne!(a, replica_server_id("node-1 shop b->a"));
        assert!((3_000_000_000..4_000_000_000).contains(&a));
    }
}
