//! The state each key of one table ends in after a run of changes: what a sink that
//! collapses a batch writes (one delete or one upsert per key, whatever came between).

use std::borrow::Cow;
use std::collections::HashMap;
use std::collections::hash_map::Entry;

use super::{Change, FastHash, HashKeyRef, Op, Row, Value};

/// Final states per key, in the order the keys were first touched; keys are borrowed
/// from the changes (only an update that moves its row to another key builds that key).
#[derive(Default)]
pub struct Finals<'a> {
    states: Vec<(Cow<'a, [Value]>, Option<&'a Row>)>,
    index: HashMap<HashKeyRef<'a>, usize, FastHash>,
}

impl<'a> Finals<'a> {
    /// Room for `n` keys.
    pub fn with_capacity(n: usize) -> Self {
        Finals { states: Vec::with_capacity(n), index: HashMap::with_capacity_and_hasher(n, FastHash::default()) }
    }

    /// Takes the next change of the table: its key ends holding the after-image, or
    /// gone; an update that moves its row leaves the old key gone.
    pub fn add(&mut self, change: &'a Change) {
        let key = Cow::Borrowed(change.key.as_slice());
        match (&change.after, change.op) {
            (None, _) => self.set(key, None),
            // An insert's key is its row's key.
            (Some(after), Op::Insert) => self.set(key, Some(after)),
            (Some(after), _) if !change.moves_key() => self.set(key, Some(after)),
            (Some(after), _) => {
                self.set(key, None);
                self.set(Cow::Owned(change.table.key_of(after)), Some(after));
            }
        }
    }

    fn set(&mut self, key: Cow<'a, [Value]>, state: Option<&'a Row>) {
        match self.index.entry(HashKeyRef(key)) {
            Entry::Occupied(e) => self.states[*e.get()].1 = state,
            Entry::Vacant(e) => {
                self.states.push((e.key().0.clone(), state));
                e.insert(self.states.len() - 1);
            }
        }
    }

    /// The keys that end gone.
    pub fn deletes(&self) -> Vec<&[Value]> {
        self.states.iter().filter(|(_, r)| r.is_none()).map(|(k, _)| k.as_ref()).collect()
    }

    /// The rows the other keys end holding.
    pub fn upserts(&self) -> Vec<&'a Row> {
        self.states.iter().filter_map(|(_, r)| *r).collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::model::{Column, Prior, TableName, TableSchema};

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

    /// The last change to a key wins; a key moved away ends gone and its new key holds
    /// the row; a key deleted then inserted again ends holding the row; order is first
    /// touch.
    #[test]
    fn each_key_ends_in_its_last_state() {
        let column = |name: &str| Column { name: name.into(), decl_type: "int".into(), nullable: false };
        let t = Arc::new(TableSchema {
            name: TableName { schema: None, name: "t".into() },
            columns: vec![column("id"), column("v")],
            primary_key: vec![0],
            unique_keys: Vec::new(),
            foreign_keys: Vec::new(),
            create_sql: None,
        });
        let changes = [
            change(&t, Op::Insert, 1, Some((1, "a"))),
            change(&t, Op::Update, 1, Some((1, "b"))),
            change(&t, Op::Insert, 2, Some((2, "x"))),
            change(&t, Op::Update, 2, Some((3, "x"))),
            change(&t, Op::Delete, 4, None),
            change(&t, Op::Delete, 5, None),
            change(&t, Op::Insert, 5, Some((5, "again"))),
        ];
        let mut finals = Finals::with_capacity(changes.len());
        for c in &changes {
            finals.add(c);
        }
        assert_eq!(finals.deletes(), vec![&[Value::Int(2)][..], &[Value::Int(4)][..]]);
        let row = |k: i64, v: &str| vec![Value::Int(k), Value::Text(v.into())];
        assert_eq!(finals.upserts(), vec![&row(1, "b"), &row(3, "x"), &row(5, "again")]);
    }
}
