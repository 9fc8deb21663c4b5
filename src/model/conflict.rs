//! Conflict resolution (DESIGN.md "Two-way"). Pure: both directions call the same
//! function with the same two versions, so both sides pick the same winner whichever
//! applies first, and converge.

use std::collections::{HashMap, VecDeque};
use std::fmt;

use serde::Deserialize;

use super::{Change, HashKey, Key, Op, Prior, Row, SiteId, TableName, same_row};

/// How a conflicting change is resolved (DESIGN.md "Two-way").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConflictPolicy {
    /// The version with the later (commit time, site) wins.
    #[default]
    LastWriterWins,
    /// The task's `from` endpoint's version wins.
    PreferFrom,
    /// The task's `to` endpoint's version wins.
    PreferTo,
    /// Record the conflict, change nothing.
    LogOnly,
}

impl fmt::Display for ConflictPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConflictPolicy::LastWriterWins => "last-writer-wins",
            ConflictPolicy::PreferFrom => "prefer-from",
            ConflictPolicy::PreferTo => "prefer-to",
            ConflictPolicy::LogOnly => "log-only",
        })
    }
}

/// How the sink treats a change that does not match the target's current row.
#[derive(Debug, Clone)]
pub struct ConflictRules {
    /// The policy from the task file.
    pub policy: ConflictPolicy,
    /// Site of the task's `from` endpoint (for prefer-from).
    pub from_site: SiteId,
    /// Site of the task's `to` endpoint (for prefer-to).
    pub to_site: SiteId,
    /// Site of the target this sink writes (the local side).
    pub local_site: SiteId,
    /// Site of the source of this direction (origin of snapshot rows).
    pub remote_site: SiteId,
}

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

/// The version of a row as a store keeps it (a version table written by triggers and
/// by ferry's applier): where and when it was last written, and whether that write
/// deleted it (a tombstone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    /// Origin site of the write.
    pub site: SiteId,
    /// Write time, µs since the epoch.
    pub ts: i64,
    /// The write deleted the row.
    pub deleted: bool,
}

impl Stamp {
    /// Orders stamps as last-writer-wins does: time, then site.
    pub fn later_than(&self, other: &Stamp) -> bool {
        (self.ts, &self.site) > (other.ts, &other.site)
    }
}

/// A version table's change read from a source's stream: the stamp a write left and the
/// one it replaced, for the row `key` of user table `table`.
#[derive(Debug, Clone)]
pub struct StampEvent {
    /// The user table whose row it versions.
    pub table: TableName,
    /// That row's key.
    pub key: Key,
    /// The stamp replaced (`None`: the key had none).
    pub before: Option<Stamp>,
    /// The stamp written (`None`: the version row was removed).
    pub after: Option<Stamp>,
}

/// Gives each change the version its write left and the one it replaced, from the
/// version table changes of the same transaction (matched by table and key, in order):
/// `Change::version`, `Change::seen`, and for an insert `Change::prior`.
pub fn attach_stamps(changes: &mut [Change], stamps: Vec<StampEvent>) {
    if stamps.is_empty() {
        return;
    }
    let mut by_key: HashMap<(TableName, HashKey), VecDeque<StampEvent>> = HashMap::new();
    for s in stamps {
        by_key.entry((s.table.clone(), HashKey(s.key.clone()))).or_default().push_back(s);
    }
    let mut take = |table: &TableName, key: &Key| {
        by_key.get_mut(&(table.clone(), HashKey(key.clone()))).and_then(|q| q.pop_front())
    };
    for c in changes.iter_mut() {
        let new_key = c.new_key();
        let moved = c.op == Op::Update && new_key != c.key;
        // A key-moving update leaves a tombstone at the old key first, then the new key.
        let old = if moved { take(&c.table.name, &c.key) } else { None };
        let Some(own) = take(&c.table.name, &new_key) else { continue };
        c.version = own.after.map(|s| (s.site, s.ts));
        let replaced = if moved { old.and_then(|o| o.before) } else { own.before };
        if c.op == Op::Insert {
            c.prior = match &replaced {
                Some(s) if s.deleted => Prior::Deleted(s.site.clone(), s.ts),
                _ => Prior::Fresh,
            };
        }
        c.seen = replaced.filter(|s| !s.deleted).map(|s| (s.site, s.ts));
    }
}

/// A key's state on the target as a two-way batch goes: its row and version.
#[derive(Debug, Clone, Default)]
pub struct Local {
    /// The current row (`None`: absent).
    pub row: Option<Row>,
    /// Its version (`None`: a row older than capture, or a key never written).
    pub stamp: Option<Stamp>,
    /// The version changed in this batch (to be written).
    pub dirty: bool,
}

/// The state of every key a batch touches, by (source table name, key).
pub type KeyStates = HashMap<(TableName, HashKey), Local>;

/// What to do with one incoming change.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// The target is in the state the source changed: apply.
    Apply,
    /// The target already holds the change's result: nothing to write.
    Found,
    /// The states differ: the policy decided, against this local version.
    Conflict(Winner, Version),
}

/// Judges a change against the target's state of its key (DESIGN.md "Two-way"): it
/// applies when the target holds what the source replaced (same row image and the same
/// version the source saw; for an insert, no row and no deletion the source did not
/// see), is found when the target already holds its result, and is a conflict
/// otherwise, decided by the policy.
pub fn judge(c: &Change, incoming: Option<&Stamp>, local: &Local, rules: &ConflictRules) -> Verdict {
    let result = c.after.as_ref();
    if same_row(local.row.as_ref(), result) {
        return Verdict::Found;
    }
    let live = local.stamp.as_ref().filter(|s| !s.deleted);
    let expected = match c.op {
        Op::Insert => {
            local.row.is_none()
                && match local.stamp.as_ref().filter(|s| s.deleted) {
                    None => true,
                    Some(t) => c.prior == Prior::Deleted(t.site.clone(), t.ts),
                }
        }
        Op::Update | Op::Delete => {
            same_row(local.row.as_ref(), c.before.as_ref())
                && match (live, &c.seen) {
                    (Some(l), Some((site, ts))) => l.site == *site && l.ts == *ts,
                    // A versioned write here that the source never saw.
                    (Some(_), None) => false,
                    // No version here (a row older than capture): the images decide.
                    (None, _) => true,
                }
        }
    };
    if expected {
        return Verdict::Apply;
    }
    let local_version = match &local.stamp {
        Some(s) => Version { ts: s.ts, site: s.site.clone() },
        None => Version { ts: 0, site: rules.local_site.clone() },
    };
    let incoming_version = match incoming {
        Some(s) => Version { ts: s.ts, site: s.site.clone() },
        None => Version { ts: 0, site: rules.remote_site.clone() },
    };
    Verdict::Conflict(resolve(rules, &incoming_version, &local_version), local_version)
}

/// One incoming change of a two-way batch, with its version (`None`: a snapshot row
/// that predates capture).
#[derive(Debug)]
pub struct Incoming<'a> {
    /// The change (a snapshot row comes as an insert).
    pub change: &'a Change,
    /// Its version.
    pub stamp: Option<Stamp>,
    /// Its source position, for the conflict log.
    pub position: String,
    /// Applied without judging (each site writes its own heartbeat row).
    pub free: bool,
}

/// A conflict a batch met, for the conflict log.
#[derive(Debug, Clone)]
pub struct Met {
    /// The incoming change's index in the batch.
    pub index: usize,
    /// Which version won.
    pub winner: Winner,
    /// The incoming change's version.
    pub incoming: Version,
    /// The local version.
    pub local: Version,
    /// The local row (`None`: absent).
    pub local_row: Option<Row>,
}

/// What a two-way batch comes to.
#[derive(Debug, Default)]
pub struct Judged {
    /// Indexes of the changes to write, in order.
    pub accepted: Vec<usize>,
    /// Conflicts, each to be logged in the resolving transaction.
    pub conflicts: Vec<Met>,
}

/// Judges a batch's changes in source order against `state` (each key's row and version
/// as read from the target, locked), which follows every accepted change; versions
/// that change are marked dirty, to be written with the rows. Every store's two-way
/// apply goes through here, so all of them decide alike.
pub fn judge_batch(incoming: &[Incoming<'_>], state: &mut KeyStates, rules: &ConflictRules) -> Judged {
    let mut out = Judged::default();
    for (index, inc) in incoming.iter().enumerate() {
        let c = inc.change;
        if inc.free {
            out.accepted.push(index);
            continue;
        }
        let old_id = (c.table.name.clone(), HashKey(c.key.clone()));
        let local = state.get(&old_id).cloned().unwrap_or_default();
        let verdict = judge(c, inc.stamp.as_ref(), &local, rules);
        tracing::debug!(
            table = %c.table.name, key = %super::key_text(&c.key), op = ?c.op, incoming = ?inc.stamp, seen = ?c.seen,
            prior = ?c.prior, local = ?local.stamp, verdict = ?verdict, position = %inc.position, "two-way judge"
        );
        let apply = match &verdict {
            Verdict::Apply => true,
            Verdict::Found => {
                // Both sides hold the same result: keep the later of the two versions on
                // both, so they agree on it.
                if let Some(s) = &inc.stamp {
                    let keep = match &local.stamp {
                        Some(l) if l.deleted == s.deleted && l.later_than(s) => l.clone(),
                        _ => s.clone(),
                    };
                    let entry = state.entry((c.table.name.clone(), HashKey(c.new_key()))).or_default();
                    if entry.stamp.as_ref() != Some(&keep) {
                        entry.stamp = Some(keep);
                        entry.dirty = true;
                    }
                }
                false
            }
            Verdict::Conflict(winner, local_version) => {
                out.conflicts.push(Met {
                    index,
                    winner: *winner,
                    incoming: inc
                        .stamp
                        .as_ref()
                        .map(|s| Version { ts: s.ts, site: s.site.clone() })
                        .unwrap_or(Version { ts: 0, site: rules.remote_site.clone() }),
                    local: local_version.clone(),
                    local_row: local.row.clone(),
                });
                *winner == Winner::Incoming
            }
        };
        if !apply {
            continue;
        }
        let new_key = c.new_key();
        if new_key != c.key {
            let old = state.entry(old_id).or_default();
            old.row = None;
            if let Some(s) = &inc.stamp {
                old.stamp = Some(Stamp { deleted: true, ..s.clone() });
                old.dirty = true;
            }
        }
        let entry = state.entry((c.table.name.clone(), HashKey(new_key))).or_default();
        entry.row = c.after.clone();
        if let Some(s) = &inc.stamp {
            entry.stamp = Some(s.clone());
            entry.dirty = true;
        }
        out.accepted.push(index);
    }
    out
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

    mod judging {
        use std::sync::Arc;

        use super::super::*;
        use crate::model::{Change, Column, Op, Prior, Row, SiteId, TableName, TableSchema, Value};

        fn table() -> Arc<TableSchema> {
            Arc::new(TableSchema {
                name: TableName { schema: Some("db".into()), name: "t".into() },
                columns: vec![
                    Column { name: "id".into(), decl_type: "int".into(), nullable: false },
                    Column { name: "v".into(), decl_type: "int".into(), nullable: true },
                ],
                primary_key: vec![0],
                unique_keys: Vec::new(),
                foreign_keys: Vec::new(),
                create_sql: None,
            })
        }

        fn row(v: i64) -> Row {
            vec![Value::Int(1), Value::Int(v)]
        }

        fn stamp(site: &str, ts: i64) -> Stamp {
            Stamp { site: SiteId::new(site), ts, deleted: false }
        }

        fn update(from: i64, to: i64, seen: Option<(&str, i64)>) -> Change {
            Change {
                table: table(),
                op: Op::Update,
                key: vec![Value::Int(1)],
                before: Some(row(from)),
                after: Some(row(to)),
                prior: Prior::Unknown,
                seen: seen.map(|(s, t)| (SiteId::new(s), t)),
                version: None,
            }
        }

        fn rules(policy: ConflictPolicy, local: &str, remote: &str) -> ConflictRules {
            ConflictRules {
                policy,
                from_site: SiteId::new("a"),
                to_site: SiteId::new("b"),
                local_site: SiteId::new(local),
                remote_site: SiteId::new(remote),
            }
        }

        #[test]
        fn stamps_order_by_time_then_site() {
            assert!(stamp("a", 2).later_than(&stamp("b", 1)));
            assert!(stamp("b", 1).later_than(&stamp("a", 1)));
            assert!(!stamp("a", 1).later_than(&stamp("a", 1)));
        }

        #[test]
        fn an_update_of_the_version_the_source_saw_applies() {
            let local = Local { row: Some(row(1)), stamp: Some(stamp("b", 5)), dirty: false };
            let r = rules(ConflictPolicy::LastWriterWins, "b", "a");
            assert_eq!(judge(&update(1, 2, Some(("b", 5))), Some(&stamp("a", 9)), &local, &r), Verdict::Apply);
        }

        #[test]
        fn an_equal_row_hiding_an_unseen_local_write_is_a_conflict() {
            // Same image, but the local version is one the source never saw.
            let local = Local { row: Some(row(1)), stamp: Some(stamp("b", 7)), dirty: false };
            let r = rules(ConflictPolicy::LastWriterWins, "b", "a");
            let v = judge(&update(1, 2, Some(("b", 5))), Some(&stamp("a", 9)), &local, &r);
            assert_eq!(v, Verdict::Conflict(Winner::Incoming, Version { ts: 7, site: SiteId::new("b") }));
        }

        #[test]
        fn concurrent_updates_pick_the_same_winner_on_both_sides() {
            // a wrote 2 at t=10, b wrote 3 at t=20, both from 1 seen as (a, 1).
            let at_b = judge(
                &update(1, 2, Some(("a", 1))),
                Some(&stamp("a", 10)),
                &Local { row: Some(row(3)), stamp: Some(stamp("b", 20)), dirty: false },
                &rules(ConflictPolicy::LastWriterWins, "b", "a"),
            );
            let at_a = judge(
                &update(1, 3, Some(("a", 1))),
                Some(&stamp("b", 20)),
                &Local { row: Some(row(2)), stamp: Some(stamp("a", 10)), dirty: false },
                &rules(ConflictPolicy::LastWriterWins, "a", "b"),
            );
            assert!(matches!(at_b, Verdict::Conflict(Winner::Local, _)));
            assert!(matches!(at_a, Verdict::Conflict(Winner::Incoming, _)));
        }

        #[test]
        fn an_insert_over_a_deletion_the_source_never_saw_is_a_conflict() {
            let mut insert = update(1, 2, None);
            insert.op = Op::Insert;
            insert.before = None;
            insert.prior = Prior::Fresh;
            let tomb = Local { row: None, stamp: Some(Stamp { deleted: true, ..stamp("b", 8) }), dirty: false };
            let r = rules(ConflictPolicy::LastWriterWins, "b", "a");
            assert!(matches!(judge(&insert, Some(&stamp("a", 9)), &tomb, &r), Verdict::Conflict(Winner::Incoming, _)));
            insert.prior = Prior::Deleted(SiteId::new("b"), 8);
            assert_eq!(judge(&insert, Some(&stamp("a", 9)), &tomb, &r), Verdict::Apply);
        }

        #[test]
        fn a_result_already_here_is_found() {
            let local = Local { row: Some(row(2)), stamp: Some(stamp("b", 7)), dirty: false };
            let r = rules(ConflictPolicy::LogOnly, "b", "a");
            assert_eq!(judge(&update(1, 2, Some(("a", 1))), Some(&stamp("a", 9)), &local, &r), Verdict::Found);
        }

        #[test]
        fn a_batch_follows_its_accepted_changes_and_marks_versions_to_write() {
            // Two updates of one key in a batch: the second sees the first's result.
            let (u1, mut u2) = (update(1, 2, None), update(2, 3, Some(("a", 9))));
            u2.seen = Some((SiteId::new("a"), 9));
            let incoming = [
                Incoming { change: &u1, stamp: Some(stamp("a", 9)), position: "p1".into(), free: false },
                Incoming { change: &u2, stamp: Some(stamp("a", 10)), position: "p2".into(), free: false },
            ];
            let mut state = KeyStates::new();
            state.insert(
                (table().name.clone(), HashKey(vec![Value::Int(1)])),
                Local { row: Some(row(1)), stamp: None, dirty: false },
            );
            let r = rules(ConflictPolicy::LastWriterWins, "b", "a");
            let judged = judge_batch(&incoming, &mut state, &r);
            assert_eq!(judged.accepted, vec![0, 1]);
            assert!(judged.conflicts.is_empty());
            let end = &state[&(table().name.clone(), HashKey(vec![Value::Int(1)]))];
            assert_eq!((end.row.clone(), end.stamp.clone(), end.dirty), (Some(row(3)), Some(stamp("a", 10)), true));
        }
    }
}
