//! Walking one table chunk by chunk: a planner session on the source names each chunk's
//! upper key (the key `n` rows on, or for a single integer key compared inside the
//! databases the last one plus a span: [`super::span`]) while both sides checksum the
//! previous key range concurrently; a range whose checksums differ is narrowed down to
//! rows ([`super::bisect`]).

use std::time::Instant;

use tokio::sync::mpsc;

use super::bisect::bisect;
use super::diff::{RowDiff, TablePair, diff_rows, digest};
use super::error::VerifyError;
use super::progress::{Progress, ProgressEvent};
use super::rows::read_both;
use super::span;
use super::throttle::Throttle;
use crate::connector::verifier::{AnySide, Side};
use crate::model::{Key, KeyRange};

/// Rows of the first chunk when both sides checksum inside the database; later chunks
/// are sized so that one takes about [`NATIVE_CHUNK_SECS`] (as pt-table-checksum does).
pub const NATIVE_CHUNK_ROWS: u64 = 20_000;
/// Target duration of one in-database chunk: long enough that round trips do not
/// count, short enough that no query holds a server for long.
pub const NATIVE_CHUNK_SECS: f64 = 0.25;
/// Bounds of an in-database chunk's rows.
pub const NATIVE_CHUNK_LIMITS: (u64, u64) = (1_000, 1_000_000);
/// Rows per chunk when ferry hashes streamed rows (they are held in memory).
pub const STREAM_CHUNK_ROWS: u64 = 5_000;
/// In-database chunks the source may checksum ahead of the target.
const AHEAD: usize = 2;
/// One side's checksum of a range (`None`: the side cannot checksum it).
type Sum = Option<(u64, String)>;
/// Differing rows kept per table (with both versions, for re-checks and repair); more
/// are counted only, so a target that lacks most rows cannot exhaust memory.
pub const MAX_KEPT_DIFFS: usize = 100_000;

/// What walking one table found (before live re-checks).
#[derive(Debug, Default)]
pub struct TableWalk {
    /// Rows read or counted on the source.
    pub source_rows: u64,
    /// Rows read or counted on the target.
    pub target_rows: u64,
    /// Chunks compared.
    pub chunks: u64,
    /// Chunks that differed.
    pub chunks_differing: u64,
    /// Differing rows (at most [`MAX_KEPT_DIFFS`]).
    pub diffs: Vec<RowDiff>,
    /// Differing rows found beyond [`MAX_KEPT_DIFFS`]: counted, not kept.
    pub not_kept: u64,
    /// Wall time.
    pub seconds: f64,
}

impl TableWalk {
    /// Keeps differences up to [`MAX_KEPT_DIFFS`] and counts the rest.
    fn keep(&mut self, found: Vec<RowDiff>) {
        let room = MAX_KEPT_DIFFS.saturating_sub(self.diffs.len());
        self.not_kept += found.len().saturating_sub(room) as u64;
        self.diffs.extend(found.into_iter().take(room));
    }
}

/// Compares one table on both sides.
pub async fn walk_table(
    pair: &TablePair,
    source: &mut AnySide,
    planner: &mut AnySide,
    target: &mut AnySide,
    progress: &Progress,
    throttle: &mut Throttle,
) -> Result<TableWalk, VerifyError> {
    let start = Instant::now();
    let table = pair.source.name.to_string();
    let estimated_rows = source.estimate(&pair.source).await?;
    progress.send(ProgressEvent::TableStarted { table: table.clone(), estimated_rows });
    let mut walker = Walker { pair, source, target, progress, throttle, table, walk: TableWalk::default() };
    // Only an in-database pair may cut by arithmetic (a streamed chunk's rows are held
    // in memory, so its size must be counted in rows).
    let first = if pair.native { planner.key_at(&pair.source, &KeyRange::default(), 0).await? } else { None };
    match first.as_ref().and_then(|k| Some((span::int_of(k)?, k))) {
        Some((lowest, first)) => walker.by_spans(planner, lowest, first.clone()).await?,
        None => walker.by_offsets(planner).await?,
    }
    let mut walk = walker.walk;
    walk.seconds = start.elapsed().as_secs_f64();
    let differences = walk.diffs.len() as u64 + walk.not_kept;
    progress.send(ProgressEvent::TableDone { table: pair.source.name.to_string(), differences });
    Ok(walk)
}

/// One table's walk in progress.
struct Walker<'a> {
    pair: &'a TablePair,
    source: &'a mut AnySide,
    target: &'a mut AnySide,
    progress: &'a Progress,
    throttle: &'a mut Throttle,
    table: String,
    walk: TableWalk,
}

impl Walker<'_> {
    /// Chunks of `chunk` rows, each upper key found by the planner (a second source
    /// session) while both sides checksum the previous range.
    async fn by_offsets(&mut self, planner: &mut AnySide) -> Result<(), VerifyError> {
        let pair = self.pair;
        let mut chunk = if pair.native { NATIVE_CHUNK_ROWS } else { STREAM_CHUNK_ROWS };
        let mut after = None;
        let mut upto = planner.key_at(&pair.source, &KeyRange::default(), chunk - 1).await?;
        loop {
            let range = KeyRange { after: after.clone(), upto: upto.clone() };
            let took = Instant::now();
            let next = async {
                match &upto {
                    Some(k) => {
                        let probe = KeyRange { after: Some(k.clone()), upto: None };
                        planner.key_at(&pair.source, &probe, chunk - 1).await.map(Some)
                    }
                    None => Ok(None),
                }
            };
            let (compared, next) = tokio::join!(self.compare(&range), next);
            let (rows, differs) = compared?;
            let next = next?;
            if pair.native && !differs && rows == chunk {
                chunk = next_chunk_rows(chunk, took.elapsed().as_secs_f64());
            }
            self.done(rows, differs, took).await;
            match (upto, next) {
                (Some(k), Some(n)) => {
                    after = Some(k);
                    upto = n;
                }
                _ => return Ok(()),
            }
        }
    }

    /// Chunks of a single integer key cut by arithmetic ([`span`]) from the first key
    /// (`lowest`, its value),
    /// each side checksumming at its own pace: the source (with the planner, which only
    /// asks whether any key lies past a chunk: an index seek) leads and the target
    /// follows at most [`AHEAD`] chunks behind, so neither server waits for the other
    /// after every chunk. The chunk past which no key lies runs to the end of the table.
    /// Differing chunks are narrowed down to rows once the walk is done.
    async fn by_spans(&mut self, planner: &mut AnySide, lowest: i128, first: Key) -> Result<(), VerifyError> {
        let pair = self.pair;
        let (to_target, mut ranges) = mpsc::channel::<KeyRange>(AHEAD);
        let (source_tx, mut source_sums) = mpsc::unbounded_channel::<(KeyRange, Sum)>();
        let (target_tx, mut target_sums) = mpsc::unbounded_channel::<Sum>();
        let (source, target, throttle) = (&mut *self.source, &mut *self.target, &mut *self.throttle);
        let lead = async move {
            let mut width = i128::from(NATIVE_CHUNK_ROWS);
            let mut after: Option<Key> = None;
            let mut low = lowest - 1;
            loop {
                let high = low.saturating_add(width);
                let upto = match span::key_of(high, &first) {
                    Some(k) => {
                        let probe = KeyRange { after: Some(k.clone()), upto: None };
                        planner.key_at(&pair.source, &probe, 0).await?.map(|_| k)
                    }
                    None => None,
                };
                let range = KeyRange { after: after.clone(), upto: upto.clone() };
                if to_target.send(range.clone()).await.is_err() {
                    // The target's side failed: its error is the one to report.
                    return Ok(());
                }
                let took = Instant::now();
                let sum = source.native_checksum(&pair.source, &range).await?;
                let rows = sum.as_ref().map_or(0, |s| s.0);
                width = span::next_span(width, rows, took.elapsed().as_secs_f64());
                let _ = source_tx.send((range, sum));
                throttle.admit(rows).await;
                match upto {
                    Some(k) => {
                        after = Some(k);
                        low = high;
                    }
                    None => return Ok::<(), VerifyError>(()),
                }
            }
        };
        let follow = async move {
            while let Some(range) = ranges.recv().await {
                let sum = target.native_checksum(&pair.target, &range).await?;
                if target_tx.send(sum).is_err() {
                    break;
                }
            }
            Ok::<(), VerifyError>(())
        };
        let (walk, progress, table) = (&mut self.walk, self.progress, &self.table);
        let judge = async move {
            let mut differing = Vec::new();
            while let Some((range, a)) = source_sums.recv().await {
                let Some(b) = target_sums.recv().await else { break };
                let (na, nb) = (a.as_ref().map_or(0, |x| x.0), b.as_ref().map_or(0, |x| x.0));
                walk.source_rows += na;
                walk.target_rows += nb;
                walk.chunks += 1;
                let differs = a.is_none() || a != b;
                if differs {
                    walk.chunks_differing += 1;
                    differing.push((range, na.max(nb)));
                }
                tracing::debug!(table = %pair.source.name, rows = na, differs, "chunk compared");
                progress.send(ProgressEvent::Chunk { table: table.clone(), rows: na, differs });
            }
            differing
        };
        let (led, followed, differing) = tokio::join!(lead, follow, judge);
        led?;
        followed?;
        for (range, rows) in differing {
            let found = bisect(pair, self.source, self.target, range, rows).await?;
            self.walk.keep(found);
        }
        Ok(())
    }

    /// Compares one range.
    async fn compare(&mut self, range: &KeyRange) -> Result<(u64, bool), VerifyError> {
        if self.pair.native {
            native_chunk(self.pair, self.source, self.target, range, &mut self.walk).await
        } else {
            stream_chunk(self.pair, self.source, self.target, range, &mut self.walk).await
        }
    }

    /// Counts a compared chunk, reports it and waits as the throttle says.
    async fn done(&mut self, rows: u64, differs: bool, took: Instant) {
        let secs = took.elapsed().as_secs_f64();
        tracing::debug!(table = %self.pair.source.name, rows, differs, secs, "chunk compared");
        self.walk.chunks += 1;
        if differs {
            self.walk.chunks_differing += 1;
        }
        self.progress.send(ProgressEvent::Chunk { table: self.table.clone(), rows, differs });
        self.throttle.admit(rows).await;
    }
}

/// The next in-database chunk size after `rows` rows took `secs`: aiming at
/// [`NATIVE_CHUNK_SECS`], growing at most fourfold, within [`NATIVE_CHUNK_LIMITS`].
pub(super) fn next_chunk_rows(rows: u64, secs: f64) -> u64 {
    let ideal = (rows as f64 * NATIVE_CHUNK_SECS / secs.max(0.001)) as u64;
    ideal.min(rows * 4).clamp(NATIVE_CHUNK_LIMITS.0, NATIVE_CHUNK_LIMITS.1)
}

/// Server-side checksums of one range on both sides at once; bisects when they differ.
async fn native_chunk(
    pair: &TablePair,
    source: &mut AnySide,
    target: &mut AnySide,
    range: &KeyRange,
    walk: &mut TableWalk,
) -> Result<(u64, bool), VerifyError> {
    let (a, b) = tokio::join!(source.native_checksum(&pair.source, range), target.native_checksum(&pair.target, range));
    let (a, b) = (a?, b?);
    let (na, nb) = (a.as_ref().map_or(0, |x| x.0), b.as_ref().map_or(0, |x| x.0));
    walk.source_rows += na;
    walk.target_rows += nb;
    if a.is_some() && a == b {
        return Ok((na, false));
    }
    walk.keep(bisect(pair, source, target, range.clone(), na.max(nb)).await?);
    Ok((na, true))
}

/// Both sides' rows of one range, read at once and compared by canonical hashes.
async fn stream_chunk(
    pair: &TablePair,
    source: &mut AnySide,
    target: &mut AnySide,
    range: &KeyRange,
    walk: &mut TableWalk,
) -> Result<(u64, bool), VerifyError> {
    let (src, tgt) = read_both(pair, source, target, range).await?;
    let n = src.len() as u64;
    walk.source_rows += n;
    walk.target_rows += tgt.len() as u64;
    if digest(pair, &src) == digest(pair, &tgt) {
        return Ok((n, false));
    }
    walk.keep(diff_rows(pair, src, tgt));
    Ok((n, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_at_most_the_cap_and_counts_the_rest() {
        let d = RowDiff { kind: crate::verify::report::DiffKind::Missing, key: Vec::new(), source: None, target: None };
        let mut w = TableWalk::default();
        w.keep(vec![d.clone(); MAX_KEPT_DIFFS - 1]);
        w.keep(vec![d; 3]);
        assert_eq!((w.diffs.len(), w.not_kept), (MAX_KEPT_DIFFS, 2));
    }

    #[test]
    fn chunks_grow_towards_the_target_time_within_bounds() {
        assert_eq!(next_chunk_rows(20_000, 0.025), 80_000);
        assert_eq!(next_chunk_rows(100_000, 0.5), 50_000);
        assert_eq!(next_chunk_rows(2_000, 10.0), 1_000);
        assert_eq!(next_chunk_rows(800_000, 0.1), 1_000_000);
    }
}
