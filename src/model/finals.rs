//! The state each key of one table ends in after a run of changes: what a sink that
//! collapses a batch writes (one delete or one upsert per key, whatever came between).

use std::borrow::Cow;

use indexmap::IndexMap;

use super::{Change, FastHash, HashKeyRef, Row, Value};

/// Final states per key, in the order the keys were first touched; keys are borrowed
/// from the changes (only an update that moves its row to another key builds that key).
pub struct Finals<'a>(IndexMap<HashKeyRef<'a>, Option<&'a Row>, FastHash>);

impl<'a> Finals<'a> {
    /// The final states after `changes`, all of one table, in source order.
    pub fn of(changes: &[&'a Change]) -> Self {
        let mut finals = Finals(IndexMap::with_capacity_and_hasher(changes.len(), FastHash::default()));
        for change in changes {
            finals.add(change);
        }
        finals
    }

    /// Takes the next change of the table: its key ends holding the after-image, or
    /// gone; an update that moves its row leaves the old key gone.
    fn add(&mut self, change: &'a Change) {
        // `insert` keeps a key's first place and takes its latest state.
        let key = HashKeyRef(Cow::Borrowed(change.key.as_slice()));
        match &change.after {
            Some(after) if change.moves_key() => {
                self.0.insert(key, None);
                self.0.insert(HashKeyRef(Cow::Owned(change.table.key_of(after))), Some(after));
            }
            after => {
                self.0.insert(key, after.as_ref());
            }
        }
    }

    /// The keys that end gone.
    pub fn deletes(&self) -> Vec<&[Value]> {
        self.0.iter().filter(|(_, r)| r.is_none()).map(|(k, _)| k.0.as_ref()).collect()
    }

    /// The rows the other keys end holding.
    pub fn upserts(&self) -> Vec<&'a Row> {
        self.0.values().filter_map(|r| *r).collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::model::{Column, Op, Prior, TableName, TableSchema};

    fn change(table: &Arc<TableSchema>, op: Op, key: i64, after: Option<(i64, &str)>) -> Change {
        Change {
            table: table.clone(),
            op,
            key: vec![Value::Int(key)],
            before: None,
            after: after.map(|(k, v)| vec![Value::Int(k), Value::Text(v.into())]),
            prior: Prior::Unknown,
            seen: None,
            version: None,
        }
    }

    /// A table `t(id, v)` keyed by `id`.
    fn table() -> Arc<TableSchema> {
        let column = |name: &str| Column { name: name.into(), decl_type: "int".into(), nullable: false };
        Arc::new(TableSchema {
            name: TableName { schema: None, name: "t".into() },
            columns: vec![column("id"), column("v")],
            primary_key: vec![0],
            unique_keys: Vec::new(),
            foreign_keys: Vec::new(),
            create_sql: None,
        })
    }

    fn row(k: i64, v: &str) -> Row {
        vec![Value::Int(k), Value::Text(v.into())]
    }

    /// The last change to a key wins; a key moved away ends gone and its new key holds
    /// the row; a key deleted then inserted again ends holding the row; order is first
    /// touch.
    #[test]
    fn each_key_ends_in_its_last_state() {
        let t = table();
        let changes = [
            change(&t, Op::Insert, 1, Some((1, "a"))),
            change(&t, Op::Update, 1, Some((1, "b"))),
            change(&t, Op::Insert, 2, Some((2, "x"))),
            change(&t, Op::Update, 2, Some((3, "x"))),
            change(&t, Op::Delete, 4, None),
            change(&t, Op::Delete, 5, None),
            change(&t, Op::Insert, 5, Some((5, "again"))),
        ];
        let finals = Finals::of(&changes.iter().collect::<Vec<_>>());
        assert_eq!(finals.deletes(), vec![&[Value::Int(2)][..], &[Value::Int(4)][..]]);
        assert_eq!(finals.upserts(), vec![&row(1, "b"), &row(3, "x"), &row(5, "again")]);
    }

    /// A row moved onto a key deleted earlier in the run ends there; a key a row moved
    /// away from and then back to ends holding it, in the place it was first touched.
    #[test]
    fn a_row_moved_onto_a_key_ends_there_and_a_key_moved_back_holds_it() {
        let t = table();
        let changes = [
            change(&t, Op::Delete, 4, None),
            change(&t, Op::Update, 6, Some((4, "moved in"))),
            change(&t, Op::Update, 7, Some((8, "away"))),
            change(&t, Op::Update, 8, Some((7, "back"))),
        ];
        let finals = Finals::of(&changes.iter().collect::<Vec<_>>());
        assert_eq!(finals.deletes(), vec![&[Value::Int(6)][..], &[Value::Int(8)][..]]);
        assert_eq!(finals.upserts(), vec![&row(4, "moved in"), &row(7, "back")]);
    }
}
