//! Narrowing a key range whose server-side checksums differ down to rows: split it at
//! its middle key, checksum both halves on both sides, keep only halves that differ,
//! until a range is small enough to read and compare row by row.

use super::diff::{RowDiff, TablePair, diff_rows};
use super::error::VerifyError;
use super::rows::read_both;
use crate::connector::verifier::{AnySide, Side};
use crate::model::KeyRange;

/// A range this small is read and compared row by row.
pub const LEAF_ROWS: u64 = 256;

/// The differing rows of `range`, which holds at most `rows` rows on the larger side.
pub async fn bisect(
    pair: &TablePair,
    source: &mut AnySide,
    target: &mut AnySide,
    range: KeyRange,
    rows: u64,
) -> Result<Vec<RowDiff>, VerifyError> {
    let mut out = Vec::new();
    // An explicit stack instead of recursion: async recursion would need boxing.
    let mut stack = vec![(range, rows)];
    while let Some((range, rows)) = stack.pop() {
        let mid = if rows > LEAF_ROWS { source.key_at(&pair.source, &range, rows / 2 - 1).await? } else { None };
        // No middle key on the source (the rows are on the target only): read them.
        let Some(mid) = mid.filter(|m| range.upto.as_ref() != Some(m)) else {
            let (src, tgt) = read_both(pair, source, target, &range).await?;
            out.extend(diff_rows(pair, src, tgt));
            continue;
        };
        let halves = [
            KeyRange { after: range.after.clone(), upto: Some(mid.clone()) },
            KeyRange { after: Some(mid), upto: range.upto.clone() },
        ];
        for half in halves {
            let (a, b) =
                tokio::join!(source.native_checksum(&pair.source, &half), target.native_checksum(&pair.target, &half));
            let (a, b) = (a?, b?);
            if a.is_none() || a != b {
                let n = a.map_or(0, |x| x.0).max(b.map_or(0, |x| x.0));
                stack.push((half, n));
            }
        }
    }
    Ok(out)
}
