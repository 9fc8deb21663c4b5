//! A change batch as it travels through the stream: serde_json of a flat form (tables
//! once per batch, changes pointing at them, positions as their text, which the
//! registry parses back), cut into parts that fit the servers' `max_payload`.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::connector::ReadBatch;
use crate::connector::registry;
use crate::model::{
    Change, Key, Op, Position, PositionParseError, Prior, Row, SchemaChange, SchemaChangeKind, SiteId, TableName,
    TableSchema, Txn,
};

/// Why a message of the stream could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// Not the JSON ferry writes.
    #[error("a batch in the stream is not what ferry writes: {0}")]
    Json(#[from] serde_json::Error),
    /// A position of an unknown kind or form.
    #[error("a batch in the stream carries a position ferry cannot read: {0}")]
    Position(#[from] PositionParseError),
    /// A change names a table the batch does not describe.
    #[error("a change in the stream names table #{0}, which its batch does not describe")]
    Table(usize),
}

/// One batch: the changes after `after` up to `end`.
#[derive(Debug, Serialize, Deserialize)]
struct Flat {
    after: String,
    end: String,
    continues: bool,
    tables: Vec<TableSchema>,
    txns: Vec<FlatTxn>,
}

#[derive(Debug, Serialize, Deserialize)]
struct FlatTxn {
    origin: SiteId,
    ts: i64,
    position: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    changes: Vec<FlatChange>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    ddl: Vec<FlatDdl>,
}

#[derive(Debug, Serialize, Deserialize)]
struct FlatChange {
    /// Index into the batch's tables.
    t: usize,
    op: Op,
    key: Key,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    before: Option<Row>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    after: Option<Row>,
    #[serde(default, skip_serializing_if = "FlatPrior::is_unknown")]
    prior: FlatPrior,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    seen: Option<(SiteId, i64)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    version: Option<(SiteId, i64)>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
enum FlatPrior {
    #[default]
    Unknown,
    Fresh,
    Deleted(SiteId, i64),
}

impl FlatPrior {
    fn is_unknown(&self) -> bool {
        matches!(self, FlatPrior::Unknown)
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct FlatDdl {
    table: TableName,
    kind: FlatKind,
    statement: String,
    name_at: (usize, usize),
}

#[derive(Debug, Serialize, Deserialize)]
enum FlatKind {
    Create,
    Alter,
    Drop,
    Truncate,
    Index,
}

/// A batch read back from the stream.
#[derive(Debug)]
pub struct Batch {
    /// The position the batch follows.
    pub after: Position,
    /// The position after it.
    pub end: Position,
    /// The last commit group goes on in the next batch.
    pub continues: bool,
    /// Its transactions, oldest first.
    pub txns: Vec<Txn>,
}

/// Serializes the batch read after `after`.
pub fn encode(after: &Position, batch: &ReadBatch) -> Result<Vec<u8>, WireError> {
    let mut tables: Vec<TableSchema> = Vec::new();
    let mut index: HashMap<*const TableSchema, usize> = HashMap::new();
    let mut txns = Vec::with_capacity(batch.txns.len());
    for txn in &batch.txns {
        let mut changes = Vec::with_capacity(txn.changes.len());
        for c in &txn.changes {
            let t = *index.entry(Arc::as_ptr(&c.table)).or_insert_with(|| {
                tables.push((*c.table).clone());
                tables.len() - 1
            });
            changes.push(FlatChange {
                t,
                op: c.op,
                key: c.key.clone(),
                before: c.before.clone(),
                after: c.after.clone(),
                prior: match &c.prior {
                    Prior::Unknown => FlatPrior::Unknown,
                    Prior::Fresh => FlatPrior::Fresh,
                    Prior::Deleted(site, us) => FlatPrior::Deleted(site.clone(), *us),
                },
                seen: c.seen.clone(),
                version: c.version.clone(),
            });
        }
        let ddl = txn
            .ddl
            .iter()
            .map(|d| FlatDdl {
                table: d.table.clone(),
                kind: match d.kind {
                    SchemaChangeKind::Create => FlatKind::Create,
                    SchemaChangeKind::Alter => FlatKind::Alter,
                    SchemaChangeKind::Drop => FlatKind::Drop,
                    SchemaChangeKind::Truncate => FlatKind::Truncate,
                    SchemaChangeKind::Index => FlatKind::Index,
                },
                statement: d.statement.clone(),
                name_at: d.name_at,
            })
            .collect();
        txns.push(FlatTxn {
            origin: txn.origin.clone(),
            ts: txn.commit_ts,
            position: txn.position.to_string(),
            changes,
            ddl,
        });
    }
    let flat =
        Flat { after: after.to_string(), end: batch.position.to_string(), continues: batch.continues, tables, txns };
    Ok(serde_json::to_vec(&flat)?)
}

/// Reads a batch back.
pub fn decode(bytes: &[u8]) -> Result<Batch, WireError> {
    let flat: Flat = serde_json::from_slice(bytes)?;
    let tables: Vec<Arc<TableSchema>> = flat.tables.into_iter().map(Arc::new).collect();
    let mut txns = Vec::with_capacity(flat.txns.len());
    for t in flat.txns {
        let mut changes = Vec::with_capacity(t.changes.len());
        for c in t.changes {
            let table = tables.get(c.t).ok_or(WireError::Table(c.t))?.clone();
            changes.push(Change {
                table,
                op: c.op,
                key: c.key,
                before: c.before,
                after: c.after,
                prior: match c.prior {
                    FlatPrior::Unknown => Prior::Unknown,
                    FlatPrior::Fresh => Prior::Fresh,
                    FlatPrior::Deleted(site, us) => Prior::Deleted(site, us),
                },
                seen: c.seen,
                version: c.version,
            });
        }
        let ddl = t
            .ddl
            .into_iter()
            .map(|d| SchemaChange {
                table: d.table,
                kind: match d.kind {
                    FlatKind::Create => SchemaChangeKind::Create,
                    FlatKind::Alter => SchemaChangeKind::Alter,
                    FlatKind::Drop => SchemaChangeKind::Drop,
                    FlatKind::Truncate => SchemaChangeKind::Truncate,
                    FlatKind::Index => SchemaChangeKind::Index,
                },
                statement: d.statement,
                name_at: d.name_at,
            })
            .collect();
        txns.push(Txn {
            origin: t.origin,
            commit_ts: t.ts,
            position: registry::parse_position(&t.position)?,
            changes,
            ddl,
        });
    }
    Ok(Batch {
        after: registry::parse_position(&flat.after)?,
        end: registry::parse_position(&flat.end)?,
        continues: flat.continues,
        txns,
    })
}

/// Cuts an encoded batch into parts of at most `most` bytes (at least one part).
pub fn parts(bytes: &[u8], most: usize) -> Vec<&[u8]> {
    if bytes.is_empty() {
        return vec![bytes];
    }
    bytes.chunks(most.max(1)).collect()
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::model::{Column, Value};

    /// A SQLite position, for tests.
    pub(in crate::cluster::transport) fn sqlite(n: i64) -> Position {
        registry::parse_position(&format!("sqlite:{n}")).expect("a sqlite position")
    }

    /// Table `items (id INTEGER PRIMARY KEY, v BLOB)`, for tests.
    pub(in crate::cluster::transport) fn items() -> Arc<TableSchema> {
        Arc::new(TableSchema {
            name: TableName::bare("items"),
            columns: vec![
                Column { name: "id".into(), decl_type: "INTEGER".into(), nullable: false },
                Column { name: "v".into(), decl_type: "BLOB".into(), nullable: true },
            ],
            primary_key: vec![0],
            unique_keys: Vec::new(),
            foreign_keys: Vec::new(),
            create_sql: None,
        })
    }

    #[test]
    fn a_batch_comes_back_as_it_went() {
        let table = items();
        let change = Change {
            table: table.clone(),
            op: Op::Update,
            key: vec![Value::Int(7)],
            before: Some(vec![Value::Int(7), Value::Null]),
            after: Some(vec![Value::Int(7), Value::Bytes(vec![0, 255])]),
            prior: Prior::Deleted(SiteId::new("b"), 5),
            seen: Some((SiteId::new("a"), 3)),
            version: None,
        };
        let txn = Txn {
            origin: SiteId::new("a"),
            commit_ts: 42,
            position: sqlite(11),
            changes: vec![change.clone(), change],
            ddl: Vec::new(),
        };
        let batch = ReadBatch { txns: vec![txn], position: sqlite(12), continues: false };
        let bytes = encode(&sqlite(10), &batch).expect("encodes");
        let back = decode(&bytes).expect("decodes");
        assert_eq!((back.after, back.end, back.continues), (sqlite(10), sqlite(12), false));
        let t = &back.txns[0];
        assert_eq!((t.commit_ts, &t.position, t.changes.len()), (42, &sqlite(11), 2));
        let c = &t.changes[1];
        assert_eq!(c.after, Some(vec![Value::Int(7), Value::Bytes(vec![0, 255])]));
        assert_eq!(c.prior, Prior::Deleted(SiteId::new("b"), 5));
        assert_eq!(*c.table, *table);
        assert!(Arc::ptr_eq(&t.changes[0].table, &t.changes[1].table), "one schema per table and batch");
    }

    #[test]
    fn parts_cut_at_the_size_and_join_back() {
        let bytes: Vec<u8> = (0..=255).collect();
        let cut = parts(&bytes, 100);
        assert_eq!(cut.iter().map(|p| p.len()).collect::<Vec<_>>(), [100, 100, 56]);
        assert_eq!(cut.concat(), bytes);
        assert_eq!(parts(&[], 100).len(), 1);
    }
}
