//! Walking one table chunk by chunk: the source names each chunk's upper key (the key
//! `CHUNK_ROWS` rows on), both sides checksum that key range concurrently, and a range
//! whose checksums differ is narrowed down to rows ([`super::bisect`]).

use std::time::Instant;

use super::VerifyError;
use super::bisect::bisect;
use super::diff::{RowDiff, TablePair, diff_rows, digest};
use super::progress::{Progress, ProgressEvent};
use super::side::{AnySide, Side};
use super::throttle::Throttle;
use crate::model::{KeyRange, Row};

/// Rows per chunk when both sides checksum inside the database.
pub const NATIVE_CHUNK_ROWS: u64 = 20_000;
/// Rows per chunk when ferry hashes streamed rows (they are held in memory).
pub const STREAM_CHUNK_ROWS: u64 = 5_000;

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
    /// Differing rows.
    pub diffs: Vec<RowDiff>,
    /// Wall time.
    pub seconds: f64,
}

/// Compares one table on both sides.
pub async fn walk_table(
    pair: &TablePair,
    source: &mut AnySide,
    target: &mut AnySide,
    progress: &Progress,
    throttle: &mut Throttle,
) -> Result<TableWalk, VerifyError> {
    let start = Instant::now();
    let table = pair.source.name.to_string();
    let estimated_rows = source.estimate(&pair.source).await?;
    progress.send(ProgressEvent::TableStarted { table: table.clone(), estimated_rows });
    let chunk = if pair.native { NATIVE_CHUNK_ROWS } else { STREAM_CHUNK_ROWS };
    let mut walk = TableWalk::default();
    let mut after = None;
    loop {
        let probe = KeyRange { after: after.clone(), upto: None };
        let upto = source.key_at(&pair.source, &probe, chunk - 1).await?;
        let range = KeyRange { after: after.clone(), upto: upto.clone() };
        let (rows, differs) = if pair.native {
            native_chunk(pair, source, target, &range, &mut walk).await?
        } else {
            stream_chunk(pair, source, target, &range, &mut walk).await?
        };
        walk.chunks += 1;
        if differs {
            walk.chunks_differing += 1;
        }
        progress.send(ProgressEvent::Chunk { table: table.clone(), rows, differs });
        throttle.admit(rows).await;
        match upto {
            Some(k) => after = Some(k),
            None => break,
        }
    }
    walk.seconds = start.elapsed().as_secs_f64();
    progress.send(ProgressEvent::TableDone { table, differences: walk.diffs.len() as u64 });
    Ok(walk)
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
    walk.diffs.extend(bisect(pair, source, target, range.clone(), na.max(nb)).await?);
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
    walk.diffs.extend(diff_rows(pair, src, tgt));
    Ok((n, true))
}

/// Both sides' rows of a range, read concurrently, the target's aligned to source order.
pub async fn read_both(
    pair: &TablePair,
    source: &mut AnySide,
    target: &mut AnySide,
    range: &KeyRange,
) -> Result<(Vec<Row>, Vec<Row>), VerifyError> {
    let (src, tgt) = tokio::join!(source.rows(&pair.source, range, None), target.rows(&pair.target, range, None));
    let tgt: Vec<Row> = tgt?.into_iter().map(|r| pair.align(r)).collect();
    Ok((src?, tgt))
}
