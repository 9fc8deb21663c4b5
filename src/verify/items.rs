//! Verify of an item task (Redis): both sides' keys matching the task's patterns (ferry's
//! own left out) with a digest of each value in a canonical form, merged by key; every
//! key that differs is named (missing, extra, another type or value, an expiry more than
//! a second apart). While the task runs, differing keys are read again until replication
//! caught up with them or the rounds run out. `--quick` compares key counts and a sample
//! of keys; `--repair` rewrites each differing key on the target from the source.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::VerifyError;
use super::report::Report;
use crate::config::{Config, Task};
use crate::connector::DirectionId;
use crate::connector::items::Digest;
use crate::connector::registry;

/// Expiries this far apart (ms) still match: both sides hold the same absolute expiry,
/// unless one was set by a relative command replayed a moment later.
const TTL_TOLERANCE_MS: i64 = 1_000;
/// Keys a quick verify compares in full.
const SAMPLE: usize = 1_000;
/// Re-check rounds while the task runs, and the wait between them.
const ROUNDS: usize = 5;
const ROUND_WAIT: Duration = Duration::from_secs(1);

/// How to verify an item task.
#[derive(Debug, Clone, Default)]
pub struct ItemOptions {
    /// Counts and a sample only.
    pub quick: bool,
    /// Rewrite what differs on the target.
    pub repair: bool,
}

/// One key that differs.
#[derive(Debug, Clone, Serialize)]
pub struct ItemDiff {
    /// The key (lossy UTF-8).
    pub key: String,
    /// How it differs.
    pub reason: String,
}

/// What an item verify found.
#[derive(Debug, Clone, Serialize)]
pub struct ItemReport {
    /// Task.
    pub task: String,
    /// Source endpoint.
    pub source: String,
    /// Target endpoint.
    pub target: String,
    /// `full` or `quick`.
    pub mode: String,
    /// Keys on the source.
    pub source_keys: u64,
    /// Keys on the target.
    pub target_keys: u64,
    /// Keys compared.
    pub checked: u64,
    /// Differences still there after the re-checks.
    pub differences: Vec<ItemDiff>,
    /// Differences replication fixed while verify waited.
    pub transient: u64,
    /// Keys repaired.
    pub repaired: u64,
    /// Wall time.
    pub seconds: f64,
}

impl ItemReport {
    /// Whether nothing differs (or everything that did was repaired).
    pub fn identical(&self) -> bool {
        self.differences.len() as u64 == self.repaired
    }

    /// For people.
    pub fn text(&self) -> String {
        let mut out = format!(
            "task {} {} -> {} ({} verify): {} key(s) on the source, {} on the target, {} checked, {} differ{}{}, {:.1}s\n",
            self.task,
            self.source,
            self.target,
            self.mode,
            self.source_keys,
            self.target_keys,
            self.checked,
            self.differences.len(),
            if self.transient > 0 {
                format!(" ({} more caught up while verify waited)", self.transient)
            } else {
                String::new()
            },
            if self.repaired > 0 { format!(", {} repaired", self.repaired) } else { String::new() },
            self.seconds
        );
        for d in &self.differences {
            out.push_str(&format!("  DIFF {}: {}\n", d.key, d.reason));
        }
        out.push_str(if self.identical() { "IDENTICAL\n" } else { "DIFFERENT\n" });
        out
    }

    /// The record-store report (for the audit log and cutover's preflight).
    pub fn as_report(&self) -> Report {
        Report {
            task: self.task.clone(),
            source: self.source.clone(),
            target: self.target.clone(),
            mode: self.mode.clone(),
            live: false,
            recheck_rounds: 0,
            identical: self.identical(),
            confirmed: self.differences.len() as u64 - self.repaired,
            transient: self.transient,
            unsettled: 0,
            rows_checked: self.checked,
            seconds: self.seconds,
            repair: None,
            tables: Vec::new(),
        }
    }
}

/// Whether a task moves items.
pub fn is_items_task(config: &Config, task: &Task) -> bool {
    config.endpoint(&task.from).is_some_and(registry::is_items)
}

/// How two digests of one key differ, if they do.
fn differs(s: Option<&Digest>, t: Option<&Digest>) -> Option<String> {
    match (s, t) {
        (None, None) => None,
        (Some(_), None) => Some("missing on the target".into()),
        (None, Some(_)) => Some("only on the target (gone from the source)".into()),
        (Some(s), Some(t)) if s.kind != t.kind => {
            Some(format!("a {} on the source, a {} on the target", s.kind, t.kind))
        }
        (Some(s), Some(t)) if s.hash != t.hash => Some(format!("the {} values differ", s.kind)),
        (Some(s), Some(t)) => match (s.expire_ms, t.expire_ms) {
            (None, None) => None,
            (Some(a), Some(b)) if (a - b).abs() <= TTL_TOLERANCE_MS => None,
            (a, b) => Some(format!(
                "expiry differs: {} on the source, {} on the target",
                a.map_or("none".into(), |v| format!("{v} ms")),
                b.map_or("none".into(), |v| format!("{v} ms"))
            )),
        },
    }
}

/// Whether a direction of the task runs now (its lease is held and not expired).
async fn running(config: &Config, task: &Task) -> bool {
    let (Some(from), Some(to)) = (config.endpoint(&task.from), config.endpoint(&task.to)) else { return false };
    let dir = DirectionId { task: task.name.clone(), from: from.name.clone(), to: to.name.clone() };
    matches!(registry::target_state(to, &dir).await, Ok(s) if s.lease.as_ref().is_some_and(|l| !l.expired && l.pid != 0))
}

/// Verifies one item task.
pub async fn verify_items_task(config: &Config, task: &Task, opts: &ItemOptions) -> Result<ItemReport, VerifyError> {
    let started = Instant::now();
    let (Some(from), Some(to)) = (config.endpoint(&task.from), config.endpoint(&task.to)) else {
        return Err(VerifyError::Input {
            problem: format!("task {}: an endpoint is not defined", task.name),
            fix: "define both endpoints".into(),
        });
    };
    registry::check_pair(from, to)?;
    let live = running(config, task).await;
    if opts.repair && live {
        return Err(VerifyError::Input {
            problem: format!("task {} is running: a repair would race its changes", task.name),
            fix: "stop the task, repair, then start it again".into(),
        });
    }
    let mut source = registry::open_items(from).await?;
    let mut target = registry::open_items(to).await?;
    let patterns = if task.tables.is_empty() { vec!["*".to_string()] } else { task.tables.clone() };
    let mut report = ItemReport {
        task: task.name.clone(),
        source: from.name.clone(),
        target: to.name.clone(),
        mode: if opts.quick { "quick".into() } else { "full".into() },
        source_keys: 0,
        target_keys: 0,
        checked: 0,
        differences: Vec::new(),
        transient: 0,
        repaired: 0,
        seconds: 0.0,
    };
    let mut found: Vec<(Vec<u8>, String)> = Vec::new();
    if opts.quick {
        let (ns, sample) = source.count(&patterns, SAMPLE).await?;
        let (nt, _) = target.count(&patterns, 0).await?;
        report.source_keys = ns;
        report.target_keys = nt;
        if ns != nt {
            report.differences.push(ItemDiff {
                key: "(all keys)".into(),
                reason: format!("{ns} keys on the source, {nt} on the target (run a full verify to find them)"),
            });
        }
        let (a, b) = (source.digests_of(&sample).await?, target.digests_of(&sample).await?);
        report.checked = sample.len() as u64;
        for ((k, s), t) in sample.iter().zip(&a).zip(&b) {
            if let Some(why) = differs(s.as_ref(), t.as_ref()) {
                found.push((k.clone(), why));
            }
        }
    } else {
        let (a, b) = tokio::join!(source.digests(&patterns), target.digests(&patterns));
        let (a, b) = (a?, b?);
        report.source_keys = a.len() as u64;
        report.target_keys = b.len() as u64;
        let (mut i, mut j) = (0, 0);
        while i < a.len() || j < b.len() {
            let (s, t) = match (a.get(i), b.get(j)) {
                (Some(s), Some(t)) if s.key == t.key => {
                    i += 1;
                    j += 1;
                    (Some(s), Some(t))
                }
                (Some(s), Some(t)) if s.key < t.key => {
                    i += 1;
                    (Some(s), None)
                }
                (Some(s), None) => {
                    i += 1;
                    (Some(s), None)
                }
                (_, t) => {
                    j += 1;
                    (None, t)
                }
            };
            report.checked += 1;
            if let Some(why) = differs(s, t) {
                found.push((s.or(t).map(|d| d.key.clone()).unwrap_or_default(), why));
            }
        }
    }
    // While the task runs, what differs may be in flight: read those keys again.
    let mut rounds = 0;
    while live && !found.is_empty() && rounds < ROUNDS {
        rounds += 1;
        tokio::time::sleep(ROUND_WAIT).await;
        let keys: Vec<Vec<u8>> = found.iter().map(|(k, _)| k.clone()).collect();
        let (a, b) = (source.digests_of(&keys).await?, target.digests_of(&keys).await?);
        let before = found.len();
        found = keys
            .into_iter()
            .zip(a.iter().zip(&b))
            .filter_map(|(k, (s, t))| differs(s.as_ref(), t.as_ref()).map(|why| (k, why)))
            .collect();
        report.transient += (before - found.len()) as u64;
    }
    report.differences.extend(
        found.iter().map(|(k, why)| ItemDiff { key: String::from_utf8_lossy(k).into_owned(), reason: why.clone() }),
    );
    if opts.repair && !found.is_empty() {
        let keys: Vec<Vec<u8>> = found.iter().map(|(k, _)| k.clone()).collect();
        let items = source.read(&keys).await?;
        let writes: Vec<_> = keys.into_iter().zip(items).collect();
        target.write(&writes).await?;
        report.repaired = writes.len() as u64;
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}
