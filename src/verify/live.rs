//! Verifying while a task runs: a difference seen in a chunk may be a change still on
//! its way. Such rows are re-read after every direction of the task has applied past
//! the source positions of the moment they were seen, for a bounded number of rounds.
//! A row whose two versions did not change across a round and still differ is
//! confirmed; one that became equal is transient; one that kept changing is unsettled.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::diff::{RowDiff, TablePair, diff_rows};
use super::error::VerifyError;
use super::progress::{Progress, ProgressEvent};
use crate::config::{Config, Task};
use crate::connector::host::{host_name, pid_alive};
use crate::connector::verifier::{AnySide, Side};
use crate::connector::{TableProgress, registry};
use crate::engine::plan_task;
use crate::engine::task::DirectionSpec;
use crate::model::Row;

/// The directions of a task that a live process runs now (empty when none does).
pub async fn running_directions(config: &Config, task: &Task) -> Vec<DirectionSpec> {
    let mut out = Vec::new();
    for spec in plan_task(config, task, &[]) {
        let Ok(state) = registry::target_state(&spec.target, &spec.id).await else { continue };
        if let Some(h) = state.lease {
            // A lease that ran out (by the target's clock) is nobody's; on this host the pid
            // must run too (as `ferry status`).
            let alive = !h.expired && (h.host != host_name() || pid_alive(h.pid));
            if alive {
                out.push(spec);
            }
        }
    }
    out
}

/// The first table a running direction is still copying (its snapshot is not done):
/// verifying it now would report the rows not copied yet.
pub async fn copying(directions: &[DirectionSpec]) -> Option<(String, String)> {
    for d in directions {
        let Ok(state) = registry::target_state(&d.target, &d.id).await else { continue };
        let Some(cp) = state.checkpoint else { continue };
        if let Some((table, _)) = cp.tables.iter().find(|(_, p)| **p != TableProgress::Done) {
            return Some((d.id.to_string(), table.clone()));
        }
    }
    None
}

/// Waits until every direction's applied position has reached its source's head as it
/// is now; false when `limit` passed first.
pub async fn wait_caught_up(directions: &[DirectionSpec], limit: Duration) -> bool {
    let mut heads = Vec::new();
    for d in directions {
        heads.push(registry::source_head(&d.source).await.ok().flatten());
    }
    let start = Instant::now();
    loop {
        let mut all = true;
        for (d, head) in directions.iter().zip(&heads) {
            let Some(head) = head else { continue };
            let applied = registry::target_state(&d.target, &d.id).await.ok().and_then(|s| s.checkpoint?.position);
            let reached = applied.and_then(|p| p.stream_cmp(head)).is_some_and(|o| o != std::cmp::Ordering::Less);
            all &= reached;
        }
        if all {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Settled outcome of one table's differences.
#[derive(Debug, Default)]
pub struct Settled {
    /// Still differing with neither version changing.
    pub confirmed: Vec<RowDiff>,
    /// Fixed by replication.
    pub transient: Vec<RowDiff>,
    /// Kept changing.
    pub unsettled: Vec<RowDiff>,
}

/// How re-checking is bounded.
#[derive(Debug, Clone, Copy)]
pub struct Rechecks {
    /// Rounds at most.
    pub rounds: u32,
    /// Wait for replication per round at most.
    pub wait: Duration,
}

/// Re-checks every table's differences while `directions` run; returns per table the
/// settled outcome and the rounds made.
pub async fn settle(
    pairs: &[TablePair],
    found: Vec<Vec<RowDiff>>,
    source: &mut AnySide,
    target: &mut AnySide,
    directions: &[DirectionSpec],
    limits: Rechecks,
    progress: &Progress,
) -> Result<(Vec<Settled>, u32), VerifyError> {
    let mut settled: Vec<Settled> = pairs.iter().map(|_| Settled::default()).collect();
    let mut pending = found;
    let mut round = 0;
    while round < limits.rounds && pending.iter().any(|p| !p.is_empty()) {
        round += 1;
        let n: usize = pending.iter().map(Vec::len).sum();
        progress.send(ProgressEvent::Recheck { round, pending: n as u64 });
        if !wait_caught_up(directions, limits.wait).await {
            // Conservative: a stalled replication leaves real differences; rows that did
            // not change are still reported as confirmed.
            tracing::warn!(
                round,
                wait_secs = limits.wait.as_secs(),
                "replication did not catch up; re-checking anyway"
            );
        }
        for (i, pair) in pairs.iter().enumerate() {
            let before = std::mem::take(&mut pending[i]);
            if before.is_empty() {
                continue;
            }
            let keys: Vec<_> = before.iter().map(|d| d.key.clone()).collect();
            let (src, tgt) =
                tokio::join!(source.rows_by_keys(&pair.source, &keys), target.rows_by_keys(&pair.target, &keys));
            let tgt: Vec<Row> = tgt?.into_iter().map(|r| pair.align(r)).collect();
            let now: HashMap<Vec<u8>, RowDiff> =
                diff_rows(pair, src?, tgt).into_iter().map(|d| (key_of(pair, &d), d)).collect();
            for old in before {
                match now.get(&key_of(pair, &old)) {
                    None => settled[i].transient.push(old),
                    Some(new) if same_versions(pair, &old, new) => settled[i].confirmed.push(new.clone()),
                    Some(new) => pending[i].push(new.clone()),
                }
            }
        }
    }
    for (i, rest) in pending.into_iter().enumerate() {
        settled[i].unsettled.extend(rest);
    }
    Ok((settled, round))
}

fn key_of(pair: &TablePair, d: &RowDiff) -> Vec<u8> {
    let mut out = Vec::new();
    for (n, &i) in pair.source.primary_key.iter().enumerate() {
        super::canonical::encode(pair.classes[i], &d.key[n], &mut out);
    }
    out
}

fn same_versions(pair: &TablePair, a: &RowDiff, b: &RowDiff) -> bool {
    let bytes = |r: &Option<Row>| r.as_ref().map(|r| pair.row_bytes(r));
    bytes(&a.source) == bytes(&b.source) && bytes(&a.target) == bytes(&b.target)
}
