//! One key range of a table pair read on both sides at once, the target's rows aligned
//! to source order: what a streamed chunk ([`super::chunk`]) and a bisected range's
//! leaves ([`super::bisect`]) compare row by row.

use super::diff::TablePair;
use super::error::VerifyError;
use crate::connector::verifier::{AnySide, Side};
use crate::model::{KeyRange, Row};

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
