//! Conflict resolution (DESIGN.md "Two-way"). Pure: both directions call the same
//! function with the same two versions, so both sides pick the same winner whichever
//! applies first, and converge.

use crate::config::ConflictPolicy;
use crate::connector::ConflictRules;
use crate::model::SiteId;

/// Which version of a row a write came from: commit time (µs) and origin site.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    /// Commit time in microseconds (0 when unknown: rows that predate capture).
    pub ts: i64,
    /// Origin site.
    pub site: SiteId,
}

/// The outcome of a conflict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Winner {
    /// The incoming change is applied; the local version is overwritten.
    Incoming,
    /// The local row stays; the incoming version is discarded.
    Local,
}

impl Winner {
    /// Name stored in the conflict log.
    pub fn as_str(self) -> &'static str {
        match self {
            Winner::Incoming => "incoming",
            Winner::Local => "local",
        }
    }
}

/// Decides a conflict between the incoming change and the target's current row.
pub fn resolve(rules: &ConflictRules, incoming: &Version, local: &Version) -> Winner {
    let incoming_wins = match rules.policy {
        ConflictPolicy::LastWriterWins => incoming > local,
        ConflictPolicy::PreferFrom => rules.remote_site == rules.from_site,
        ConflictPolicy::PreferTo => rules.remote_site == rules.to_site,
        ConflictPolicy::LogOnly => false,
    };
    if incoming_wins { Winner::Incoming } else { Winner::Local }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(policy: ConflictPolicy, remote: &str, local: &str) -> ConflictRules {
        ConflictRules {
            policy,
            from_site: SiteId::new("a"),
            to_site: SiteId::new("b"),
            local_site: SiteId::new(local),
            remote_site: SiteId::new(remote),
        }
    }

    fn v(ts: i64, site: &str) -> Version {
        Version { ts, site: SiteId::new(site) }
    }

    #[test]
    fn last_writer_wins_is_symmetric() {
        // At b, a's write arrives; at a, b's write arrives: both keep the later one.
        let at_b = resolve(&rules(ConflictPolicy::LastWriterWins, "a", "b"), &v(20, "a"), &v(10, "b"));
        let at_a = resolve(&rules(ConflictPolicy::LastWriterWins, "b", "a"), &v(10, "b"), &v(20, "a"));
        assert_eq!((at_b, at_a), (Winner::Incoming, Winner::Local));
        // Equal times: the site breaks the tie the same way on both sides.
        let at_b = resolve(&rules(ConflictPolicy::LastWriterWins, "a", "b"), &v(5, "a"), &v(5, "b"));
        let at_a = resolve(&rules(ConflictPolicy::LastWriterWins, "b", "a"), &v(5, "b"), &v(5, "a"));
        assert_eq!((at_b, at_a), (Winner::Local, Winner::Incoming));
    }

    #[test]
    fn preferred_site_wins_both_ways() {
        assert_eq!(resolve(&rules(ConflictPolicy::PreferFrom, "a", "b"), &v(1, "a"), &v(9, "b")), Winner::Incoming);
        assert_eq!(resolve(&rules(ConflictPolicy::PreferFrom, "b", "a"), &v(9, "b"), &v(1, "a")), Winner::Local);
        assert_eq!(resolve(&rules(ConflictPolicy::PreferTo, "a", "b"), &v(9, "a"), &v(1, "b")), Winner::Local);
        assert_eq!(resolve(&rules(ConflictPolicy::LogOnly, "a", "b"), &v(9, "a"), &v(1, "b")), Winner::Local);
    }
}
