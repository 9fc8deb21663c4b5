//! Driving a sink directly, as the engine does: changes, stream batches and a sink
//! started on a direction.

use std::sync::Arc;

use ferry::connector::{ApplyBatch, Checkpoint, DirectionId, Sink};
use ferry::model::{Change, Op, Position, Prior, Row, TableSchema, Txn};

/// An update of one row from `before` to `after`.
pub fn update(table: &Arc<TableSchema>, before: Row, after: Row) -> Change {
    Change {
        table: table.clone(),
        op: Op::Update,
        key: table.key_of(&before),
        before: Some(before),
        after: Some(after),
        prior: Prior::Unknown,
        seen: None,
        version: None,
    }
}

/// A one-way stream batch of these transactions, committed with the checkpoint at `end`.
pub fn batch(txns: Vec<Txn>, end: Position) -> ApplyBatch {
    ApplyBatch {
        txns,
        snapshot: None,
        checkpoint: Checkpoint { position: Some(end), tables: Default::default() },
        conflicts: None,
        one_by_one: false,
        commit: true,
        fence: None,
        flush: true,
    }
}

/// An opened sink started on `dir` as the engine starts one: ferry's tables, the table,
/// the checkpoint loaded (its position returned).
pub async fn started<S: Sink>(mut sink: S, t: &Arc<TableSchema>, dir: &DirectionId) -> (S, Option<Position>) {
    sink.prepare().await.expect("prepare");
    sink.ensure_tables(std::slice::from_ref(t)).await.expect("ensure tables");
    let position = sink.load_checkpoint(dir).await.expect("load").and_then(|c| c.position);
    (sink, position)
}
