//! Parallel apply of one-way batches over `workers` sessions, ordered by dependency
//! keys as MySQL's writeset-based parallel replication orders them (DESIGN.md "Two-way",
//! last bullet, and "Throughput").
//!
//! - Dependency keys and the grouping of source transactions into shares:
//!   [`crate::connector::parallel::partition`] (shared with the PostgreSQL target).
//! - Each session applies its share in its own transaction together with its own stream
//!   slot in `ferry_checkpoint` (`stream:W`); all sessions commit before the next batch
//!   starts, and the stream resumes from the lowest slot, leaving out the transactions
//!   listed by slots past it ([`crate::connector::parallel::slots`]).
//! - The first commit after loading, any batch that carries snapshot rows or schema
//!   changes, one-by-one diagnosis and two-way batches go through the single-session
//!   path, which writes every worker's slot at one position in one transaction.

use std::collections::HashMap;

use mysql_async::Conn;
use mysql_async::prelude::Queryable;
use tracing::warn;

use super::apply::{MysqlSink, Targets, write_changes};
use super::state;
use crate::connector::parallel::slots::{Share, stays_single};
use crate::connector::{ApplyBatch, ApplyReport, Checkpoint, ConnectorError, DirectionId, LeaseHolder};
use crate::model::{Change, Position, Txn};

/// One session's share of a batch: its transactions (source order) and its slots.
struct Job<'b> {
    txns: Vec<&'b Txn>,
    share: Share,
}

impl MysqlSink {
    /// Applies a one-way stream batch over the worker sessions; `None` when the batch
    /// must take the single-session path (see the module header) or does not split.
    pub(super) async fn apply_parallel(
        &mut self,
        dir: &DirectionId,
        batch: &ApplyBatch,
    ) -> Result<Option<ApplyReport>, ConnectorError> {
        // A stream that recently formed one group skips the partition and what it needs.
        let single = stays_single(batch, self.workers, &self.stream) || self.split.skips();
        if single {
            return Ok(None);
        }
        let targets = self.targets(batch.txns.iter().flat_map(|t| &t.changes))?;
        let Some(shares) = self.split.split(&batch.txns, &targets, &self.parents, self.workers) else {
            return Ok(None);
        };
        let jobs: Vec<Job<'_>> = shares
            .into_iter()
            .map(|share| Job { txns: share.txns.iter().map(|&i| &batch.txns[i]).collect(), share })
            .collect();
        tracing::debug!(endpoint = %self.ep.name, transactions = batch.txns.len(), sessions = jobs.len(), "applying a batch over several sessions");
        self.open_helpers(jobs.len() - 1).await?;

        let (budget, cp, written, fence) = (self.budget, &batch.checkpoint, &self.written, batch.fence);
        let mut conns: Vec<&mut Conn> = Vec::with_capacity(jobs.len());
        conns.push(&mut self.conn);
        conns.extend(self.helpers.iter_mut().take(jobs.len() - 1));
        let runs = conns
            .iter_mut()
            .zip(&jobs)
            .enumerate()
            .map(|(j, (conn, job))| run_job(conn, budget, &targets, job, dir, cp, written, fence, j == 0));
        let mut results = futures_util::future::join_all(runs).await;
        // A session that failed (a deadlock or lock wait between sessions, or a collision
        // the keys did not foresee) tries again alone, after the others committed: its
        // transactions do not depend on theirs.
        for (j, job) in jobs.iter().enumerate() {
            if let Err(e) = &results[j] {
                warn!(endpoint = %self.ep.name, session = j, transactions = job.txns.len(), error = %e, "a parallel apply session failed; applying its share again on its own");
                results[j] = run_job(conns[j], budget, &targets, job, dir, cp, written, fence, j == 0).await;
            }
        }
        drop(conns);
        // Another process took the lease over: what did commit went in before it did
        // (the takeover waited for those commits), the rest must not.
        let lost = results.iter().find_map(|r| r.as_ref().ok().and_then(|r| r.as_ref().err()).cloned());
        let mut results: Vec<Result<Vec<(String, String)>, mysql_async::Error>> =
            results.into_iter().map(|r| r.map(|r| r.unwrap_or_default())).collect();
        if let Some(holder) = lost {
            self.stream.settled = false;
            return Err(self.fenced(dir, fence.unwrap_or(0), holder));
        }
        let any_failed = results.iter().any(Result::is_err);
        let mut failed = None;
        for (j, (job, result)) in jobs.iter().zip(results.drain(..)).enumerate() {
            match result {
                Ok(noted) => {
                    self.written.extend(noted);
                    // Committed while another session failed: the retry of the batch
                    // must leave these transactions out.
                    for t in job.txns.iter().filter(|_| any_failed) {
                        self.stream.note_applied(&t.position);
                    }
                }
                Err(e) => failed = failed.or(Some((j, e))),
            }
        }
        if let Some((j, source)) = failed {
            self.stream.settled = false;
            let job = &jobs[j];
            let last = job.txns.last().map(|t| t.position.to_string()).unwrap_or_default();
            return Err(ConnectorError::Mysql {
                endpoint: self.ep.name.clone(),
                what: format!(
                    "applying {} source transactions over {} sessions (session {j}: {} transactions, the last at {last})",
                    batch.txns.len(),
                    jobs.len(),
                    job.txns.len()
                ),
                source: Box::new(source),
            });
        }
        self.stream.committed(batch.checkpoint.position.as_ref());
        let rows = batch.txns.iter().map(|t| t.changes.len() as u64).sum();
        Ok(Some(ApplyReport { rows, conflicts: 0 }))
    }
}

/// Applies one session's share in its own transaction with its stream slots (and, on
/// the first session, the table slots); returns the slots to note once committed, or
/// (rolled back) the lease's new holder when the lease no longer carries `fence`.
#[allow(clippy::too_many_arguments)]
async fn run_job(
    conn: &mut Conn,
    budget: usize,
    targets: &Targets,
    job: &Job<'_>,
    dir: &DirectionId,
    cp: &Checkpoint,
    written: &HashMap<String, String>,
    fence: Option<i64>,
    tables: bool,
) -> Result<Result<Vec<(String, String)>, LeaseHolder>, mysql_async::Error> {
    conn.query_drop("START TRANSACTION").await?;
    let result = async {
        let changes: Vec<&Change> = job.txns.iter().flat_map(|t| &t.changes).collect();
        write_changes(conn, budget, targets, &changes).await?;
        if let Some(fence) = fence
            && let Some(holder) = state::check_fence(conn, dir, fence).await?
        {
            return Ok(Err(holder));
        }
        let positions: Vec<&Position> = job.txns.iter().map(|t| &t.position).collect();
        let streams = job.share.streams(&positions);
        state::write_checkpoint(conn, dir, cp, written, &streams, tables).await.map(Ok)
    }
    .await;
    match result {
        Ok(Err(holder)) => {
            let _ = conn.query_drop("ROLLBACK").await;
            Ok(Err(holder))
        }
        Ok(Ok(noted)) => match conn.query_drop("COMMIT").await {
            Ok(()) => Ok(Ok(noted)),
            Err(e) => {
                let _ = conn.query_drop("ROLLBACK").await;
                Err(e)
            }
        },
        Err(e) => {
            let _ = conn.query_drop("ROLLBACK").await;
            Err(e)
        }
    }
}
