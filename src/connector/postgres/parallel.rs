//! Parallel apply of one-way stream batches on a PostgreSQL target over `workers`
//! sessions (the main one and the helpers that also spread COPY snapshot chunks).
//!
//! - Which source transactions may go apart, and the shares: the shared
//!   [`crate::connector::parallel::partition`] over the target's own keys (primary,
//!   unique, foreign; `schema::describe_loose`).
//! - Each session takes the lease's row FOR KEY SHARE under the batch's fencing token
//!   ([`state::check_fence`]), writes its share's final rows, and its own stream slot
//!   (`stream:W`: the batch's end, and the transactions it committed) in one
//!   transaction; all commit before the next batch starts. The stream resumes from the
//!   lowest slot, leaving out the transactions listed past it
//!   ([`crate::connector::parallel::slots`]).
//! - The first commit after loading, batches with snapshot rows or schema changes,
//!   one-by-one diagnosis and every two-way batch take the single-session path
//!   (`sink.rs`), which writes every worker's slot at one position.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use sqlx::postgres::PgConnection;
use tracing::warn;

use super::sink::{PgSink, Writer};
use super::{PgEndpoint, state};
use crate::connector::parallel::slots::{Share, stays_single};
use crate::connector::{ApplyBatch, ApplyReport, Checkpoint, ConnectorError, DirectionId, ErrorKind, LeaseHolder};
use crate::model::{Change, FastHash, Position, TableName, TableSchema, Txn};

/// What one worker session's transaction needs besides its share.
struct Run<'a> {
    ep: &'a PgEndpoint,
    targets: &'a HashMap<TableName, Arc<TableSchema>>,
    dir: &'a DirectionId,
    cp: &'a Checkpoint,
    fence: Option<i64>,
    /// Wait for the commits' flush ([`ApplyBatch::flush`]).
    flush: bool,
}

impl PgSink {
    /// Applies a one-way stream batch over the worker sessions; `None` when the batch
    /// must take the single-session path (see the module header) or does not split.
    pub(super) async fn apply_parallel(
        &mut self,
        dir: &DirectionId,
        batch: &ApplyBatch,
    ) -> Result<Option<ApplyReport>, ConnectorError> {
        // A stream that recently formed one group skips the partition and what it needs.
        let single = stays_single(batch, self.workers, &self.stream) || self.is_two_way() || self.split.skips();
        if single {
            return Ok(None);
        }
        self.load_targets(batch.txns.iter().flat_map(|t| &t.changes)).await?;
        // The target's own description of each table, by the changes' names.
        // Thousands of changes of a few tables: each name resolved once.
        let seen: HashSet<&TableName, FastHash> =
            batch.txns.iter().flat_map(|t| &t.changes).map(|c| &c.table.name).collect();
        let keyed: HashMap<TableName, Arc<TableSchema>> = seen
            .into_iter()
            .filter_map(|n| Some((n.clone(), self.targets.get(&PgSink::resolve(n))?.clone())))
            .collect();
        let Some(shares) = self.split.split(&batch.txns, &keyed, &self.parents, self.workers) else {
            return Ok(None);
        };
        while self.helpers.len() + 1 < shares.len() {
            let conn = self.ep.connect().await?;
            self.helpers.push(conn);
        }
        tracing::debug!(endpoint = %self.ep.name, transactions = batch.txns.len(), sessions = shares.len(), "applying a batch over several sessions");
        let txns: Vec<Vec<&Txn>> = shares.iter().map(|s| s.txns.iter().map(|&i| &batch.txns[i]).collect()).collect();
        let base = self.written.clone();
        let mut written: Vec<HashMap<String, String>> =
            (0..shares.len()).map(|j| if j == 0 { base.clone() } else { HashMap::new() }).collect();
        let run = Run {
            ep: &self.ep,
            targets: &self.targets,
            dir,
            cp: &batch.checkpoint,
            fence: batch.fence,
            flush: batch.flush,
        };
        let mut conns: Vec<&mut PgConnection> = Vec::with_capacity(shares.len());
        conns.push(&mut self.conn);
        conns.extend(self.helpers.iter_mut().take(shares.len() - 1));
        let runs = conns
            .iter_mut()
            .zip(&shares)
            .zip(&txns)
            .zip(written.iter_mut())
            .enumerate()
            .map(|(j, (((conn, share), txns), written))| run.share(conn, txns, share, written, j == 0));
        let mut results = futures_util::future::join_all(runs).await;
        // A session that failed for a reason not in its data (a deadlock between
        // sessions) tries again alone, after the others committed: its transactions do
        // not depend on theirs. A refusal fails the batch: the engine then applies it
        // change by change on one session, leaving out what the others committed.
        for j in 0..results.len() {
            if let Err(e) = &results[j]
                && e.kind() != ErrorKind::Refused
            {
                warn!(endpoint = %self.ep.name, session = j, transactions = txns[j].len(), error = %e, "a parallel apply session failed; applying its share again on its own");
                written[j] = if j == 0 { base.clone() } else { HashMap::new() };
                results[j] = run.share(conns[j], &txns[j], &shares[j], &mut written[j], j == 0).await;
            }
        }
        drop(conns);
        // Another process took the lease over: what did commit went in before it did
        // (the takeover waited for those commits, and their slots say so), the rest
        // must not.
        let lost = results.iter().find_map(|r| r.as_ref().ok().and_then(|r| r.as_ref().err()).cloned());
        if let Some(holder) = lost {
            self.stream.settled = false;
            self.written.clear();
            return Err(ConnectorError::Fenced {
                endpoint: self.ep.name.clone(),
                dir: dir.to_string(),
                mine: batch.fence.unwrap_or(0),
                holder: (holder.pid != 0).then(|| Box::new(holder)),
            });
        }
        let any_failed = results.iter().any(Result::is_err);
        let mut failed = None;
        for (j, result) in results.into_iter().enumerate() {
            match result {
                // Committed while another session failed: the retry of the batch must
                // leave these transactions out.
                Ok(_) if any_failed => txns[j].iter().for_each(|t| self.stream.note_applied(&t.position)),
                Ok(_) => {}
                Err(e) => failed = failed.or(Some((j, e))),
            }
        }
        if let Some((j, e)) = failed {
            self.stream.settled = false;
            self.written.clear();
            // A helper whose connection broke would fail every later batch: they are
            // opened anew when next needed (each rolled back what it had open).
            self.helpers.clear();
            let last = txns[j].last().map(|t| t.position.to_string()).unwrap_or_default();
            let context = format!(
                "applying {} source transactions over {} sessions (session {j}: {} transactions, the last at {last})",
                batch.txns.len(),
                shares.len(),
                txns[j].len()
            );
            return Err(match e {
                ConnectorError::Postgres { endpoint, what, source } => {
                    ConnectorError::Postgres { endpoint, what: format!("{what}, {context}"), source }
                }
                other => other,
            });
        }
        self.written = written.swap_remove(0);
        self.stream.committed(batch.checkpoint.position.as_ref());
        let rows = batch.txns.iter().map(|t| t.changes.len() as u64).sum();
        Ok(Some(ApplyReport { rows, conflicts: 0 }))
    }
}

impl Run<'_> {
    /// COMMIT, without waiting for the WAL flush where the batch allows it.
    fn commit_sql(&self) -> &'static str {
        match self.flush {
            true => "COMMIT",
            false => "SET LOCAL synchronous_commit = off; COMMIT",
        }
    }

    /// Applies one session's share in its own transaction with its stream slots (and,
    /// on the first session, the table slots); `Ok(Err(holder))` (rolled back) when the
    /// lease no longer carries the batch's fencing token.
    async fn share(
        &self,
        conn: &mut PgConnection,
        txns: &[&Txn],
        share: &Share,
        written: &mut HashMap<String, String>,
        tables: bool,
    ) -> Result<Result<(), LeaseHolder>, ConnectorError> {
        let ep = self.ep;
        ep.exec(conn, "beginning a worker session's transaction", "BEGIN").await?;
        let result = async {
            if let Some(fence) = self.fence
                && let Some(holder) = state::check_fence(conn, self.dir, fence)
                    .await
                    .map_err(ep.error(format!("checking the lease of {}", self.dir)))?
            {
                return Ok(Err(holder));
            }
            let changes: Vec<&Change> = txns.iter().flat_map(|t| &t.changes).collect();
            Writer { ep, conn: &mut *conn, targets: self.targets, raced: false }.write_final(&changes, None).await?;
            let positions: Vec<&Position> = txns.iter().map(|t| &t.position).collect();
            state::write_checkpoint(conn, self.dir, self.cp, written, &share.streams(&positions), tables)
                .await
                .map_err(ep.error(format!("writing the checkpoint of {}", self.dir)))?;
            Ok(Ok(()))
        }
        .await;
        match result {
            Ok(Ok(())) => match ep.exec(conn, "committing a worker session's transaction", self.commit_sql()).await {
                Ok(()) => Ok(Ok(())),
                Err(e) => {
                    let _ = ep.exec(conn, "rolling back", "ROLLBACK").await;
                    Err(e)
                }
            },
            other => {
                let _ = ep.exec(conn, "rolling back", "ROLLBACK").await;
                other
            }
        }
    }
}
