//! Dependency keys of source transactions and their partition into shares that may be
//! applied on separate target sessions at once, as MySQL's writeset-based parallel
//! replication orders them (DESIGN.md "Two-way", last bullet, and "Throughput").
//!
//! - Dependency keys: every change contributes its table's primary key (old and new on
//!   a key update), the values of every unique key the target has (old and new), for
//!   each foreign key the referenced (parent table, columns, values), and, for a table
//!   other tables reference, its own values of the referenced columns. A foreign key
//!   with ON DELETE/UPDATE actions changes child rows a stream may not carry (a
//!   row-based binlog does not), so every change of such a child table and every update
//!   or delete of its parent share one key for the whole child table. Text is compared
//!   case- and trailing-space-insensitively, so collation-equal values collide too (more
//!   dependencies only cost parallelism).
//! - Source transactions sharing any key are joined (union-find) into one group; a
//!   transaction is never split, so `keep_transactions` holds on every session. Groups
//!   go to the least loaded session, largest first, and keep source order there.
//! - A stream whose batches keep forming one group is not partitioned for a while
//!   ([`SplitBackoff`]).

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use super::slots::{Share, shares_of};
use crate::model::{Change, FastHash, FastHasher, Op, Row, TableName, TableSchema, Txn, Value};

/// How a sink sees one target table of a batch: its name there and its keys as the
/// target describes them.
pub trait KeyedTarget {
    /// The table's name on the target (schema or database resolved).
    fn resolved(&self) -> &TableName;
    /// Its primary, unique and foreign keys as the target has them.
    fn keys(&self) -> &TableSchema;
}

/// A table as the target describes it, named as it is there.
impl KeyedTarget for Arc<TableSchema> {
    fn resolved(&self) -> &TableName {
        &self.name
    }
    fn keys(&self) -> &TableSchema {
        self
    }
}

/// What other tables' foreign keys make of a parent table.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Referenced {
    /// The column sets referenced.
    pub sets: Vec<Vec<String>>,
    /// Child tables whose rows the target changes when a parent row goes or changes
    /// (ON DELETE/UPDATE CASCADE, SET NULL, SET DEFAULT).
    pub cascades_to: Vec<TableName>,
}

/// Per parent table, what references it.
pub type Parents = HashMap<TableName, Referenced>;

/// What references each parent table named by these tables' foreign keys.
pub fn parents_of<'a>(tables: impl Iterator<Item = &'a Arc<TableSchema>>) -> Parents {
    let mut out = Parents::new();
    for t in tables {
        for fk in &t.foreign_keys {
            let r = out.entry(fk.parent.clone()).or_default();
            if !r.sets.contains(&fk.parent_columns) {
                r.sets.push(fk.parent_columns.clone());
            }
            if fk.cascades && !r.cascades_to.contains(&t.name) {
                r.cascades_to.push(t.name.clone());
            }
        }
    }
    out
}

/// Splits source transactions into `workers` shares (indexes in source order) such that
/// transactions sharing a dependency key land in the same share.
pub fn partition<T: KeyedTarget>(
    txns: &[Txn],
    targets: &HashMap<TableName, T>,
    parents: &Parents,
    workers: usize,
) -> Vec<Vec<usize>> {
    let workers = workers.max(1);
    let coarse = coarse_tables(txns, targets, parents);
    let mut root: Vec<usize> = (0..txns.len()).collect();
    let mut owner: HashMap<u64, usize, FastHash> = HashMap::default();
    let mut deps: Vec<u64> = Vec::new();
    for (i, txn) in txns.iter().enumerate() {
        deps.clear();
        for c in &txn.changes {
            dependencies(c, targets, parents, &coarse, &mut deps);
        }
        for &h in &deps {
            match owner.entry(h) {
                Entry::Occupied(e) => {
                    let (a, b) = (find(&mut root, i), find(&mut root, *e.get()));
                    root[a.max(b)] = a.min(b);
                }
                Entry::Vacant(e) => {
                    e.insert(i);
                }
            }
        }
    }
    let mut groups: Vec<(usize, Vec<usize>)> = Vec::new();
    let mut group_of: HashMap<usize, usize> = HashMap::new();
    for (i, txn) in txns.iter().enumerate() {
        let r = find(&mut root, i);
        let g = *group_of.entry(r).or_insert_with(|| {
            groups.push((0, Vec::new()));
            groups.len() - 1
        });
        groups[g].0 += txn.changes.len().max(1);
        groups[g].1.push(i);
    }
    // Largest first onto the least loaded share (LPT scheduling).
    groups.sort_by_key(|g| std::cmp::Reverse(g.0));
    let mut shares: Vec<Vec<usize>> = vec![Vec::new(); workers];
    let mut load = vec![0usize; workers];
    for (weight, members) in groups {
        let w = (0..workers).min_by_key(|&w| load[w]).unwrap_or(0);
        load[w] += weight;
        shares[w].extend(members);
    }
    for s in &mut shares {
        s.sort_unstable();
    }
    shares
}

/// How many batches in a row may go to one session unpartitioned, at most, after
/// batches that formed a single dependency group.
const MAX_SKIP: u32 = 16;

/// Remembers whether a stream's batches split: a workload whose every transaction
/// touches the same few rows (pgbench's branches, a counter table) forms one dependency
/// group per batch, and partitioning 20,000 changes only to find that cost about 4 ms
/// per batch on the single session's critical path. After such a batch the next 1, 2,
/// 4 … 16 batches skip the partition; a batch that splits resets the wait.
#[derive(Debug, Default)]
pub struct SplitBackoff {
    /// Batches still to apply without partitioning.
    skip: u32,
    /// The wait after the next batch that forms one group.
    next: u32,
}

impl SplitBackoff {
    /// Whether this batch goes to one session unpartitioned because a recent batch formed
    /// one group (and counts it). Asked before a sink builds what the partition needs.
    pub fn skips(&mut self) -> bool {
        let skip = self.skip > 0;
        self.skip = self.skip.saturating_sub(1);
        skip
    }

    /// The shares of a batch split by [`partition`], or `None` when it forms one group;
    /// either way sets how many of the next batches [`Self::skips`].
    pub fn split<T: KeyedTarget>(
        &mut self,
        txns: &[Txn],
        targets: &HashMap<TableName, T>,
        parents: &Parents,
        workers: usize,
    ) -> Option<Vec<Share>> {
        let shares = shares_of(partition(txns, targets, parents, workers));
        match shares {
            Some(_) => self.next = 0,
            None => {
                self.next = (self.next * 2).clamp(1, MAX_SKIP);
                self.skip = self.next;
            }
        }
        shares
    }
}

/// The union-find root of `i`, halving paths on the way.
fn find(root: &mut [usize], mut i: usize) -> usize {
    while root[i] != i {
        root[i] = root[root[i]];
        i = root[i];
    }
    i
}

/// Tables whose keys cannot all be read from the changes: an update or delete without a
/// before-image (a one-way SQLite source) hides the old unique and referenced values, so
/// every change of such a table depends on every other (and on its parents').
fn coarse_tables<T: KeyedTarget>(
    txns: &[Txn],
    targets: &HashMap<TableName, T>,
    parents: &Parents,
) -> HashSet<TableName> {
    let mut out = HashSet::new();
    for c in txns.iter().flat_map(|t| &t.changes) {
        if c.op == Op::Insert || c.before.is_some() {
            continue;
        }
        let Some(t) = targets.get(&c.table.name) else { continue };
        if !t.keys().unique_keys.is_empty() || !t.keys().foreign_keys.is_empty() || parents.contains_key(t.resolved()) {
            out.insert(t.resolved().clone());
            out.extend(t.keys().foreign_keys.iter().map(|fk| fk.parent.clone()));
        }
    }
    out
}

/// Pushes the dependency keys (hashed) of one change.
fn dependencies<T: KeyedTarget>(
    c: &Change,
    targets: &HashMap<TableName, T>,
    parents: &Parents,
    coarse: &HashSet<TableName>,
    out: &mut Vec<u64>,
) {
    let Some(t) = targets.get(&c.table.name) else { return };
    let name = t.resolved();
    let images = [c.before.as_ref(), c.after.as_ref()];
    if coarse.contains(name) {
        out.push(dep(name, &["*"], std::iter::empty()));
    }
    let pk = c.table.key_columns();
    out.push(dep(name, &pk, c.key.iter()));
    if let Some(vals) = c.after.as_ref().and_then(|row| pick(row, &c.table.primary_key)) {
        out.push(dep(name, &pk, vals.into_iter()));
    }
    for uk in &t.keys().unique_keys {
        let cols: Vec<&str> = uk.iter().filter_map(|&i| t.keys().columns.get(i).map(|c| c.name.as_str())).collect();
        for row in images.iter().flatten() {
            if let Some(vals) = pick(row, uk) {
                out.push(dep(name, &cols, vals.into_iter()));
            }
        }
    }
    if t.keys().foreign_keys.iter().any(|fk| fk.cascades) {
        out.push(dep(name, &["*"], std::iter::empty()));
    }
    for fk in &t.keys().foreign_keys {
        if coarse.contains(&fk.parent) {
            out.push(dep(&fk.parent, &["*"], std::iter::empty()));
        }
        for row in images.iter().flatten() {
            if let Some(vals) = pick(row, &fk.columns) {
                out.push(dep(&fk.parent, &fk.parent_columns, vals.into_iter()));
            }
        }
    }
    let referenced = parents.get(name);
    if c.op != Op::Insert {
        for child in referenced.iter().flat_map(|r| &r.cascades_to) {
            out.push(dep(child, &["*"], std::iter::empty()));
        }
    }
    for set in referenced.iter().flat_map(|r| &r.sets) {
        let Some(idx) = set.iter().map(|n| t.keys().column_index(n)).collect::<Option<Vec<usize>>>() else { continue };
        for row in images.iter().flatten() {
            if let Some(vals) = pick(row, &idx) {
                out.push(dep(name, set, vals.into_iter()));
            }
        }
    }
}

/// The values of these columns of a row; `None` when one is NULL (NULL never collides
/// in a unique key and references nothing) or missing.
fn pick<'r>(row: &'r Row, idx: &[usize]) -> Option<Vec<&'r Value>> {
    idx.iter().map(|&i| row.get(i).filter(|v| !v.is_null())).collect()
}

/// A dependency key's hash: table, column names, values. Two different keys with the
/// same hash only join groups that could have run apart.
fn dep<'v, S: AsRef<str>>(table: &TableName, cols: &[S], vals: impl Iterator<Item = &'v Value>) -> u64 {
    let mut h = FastHasher::default();
    table.hash(&mut h);
    for c in cols {
        c.as_ref().hash(&mut h);
    }
    for v in vals {
        hash_value(v, &mut h);
    }
    h.finish()
}

/// Hashes a value so that values a unique index may treat as equal hash alike: integers
/// by number whatever their signedness, text lowercased without trailing spaces. This is
/// deliberately coarser than a key's identity ([`crate::model::HashKey`]): a dependency
/// may join changes of different keys (costing only parallelism), never part two that
/// the target's index would see as one.
fn hash_value(v: &Value, h: &mut FastHasher) {
    match v {
        Value::Int(i) if *i >= 0 => {
            h.write_u8(1);
            h.write_u64(*i as u64);
        }
        Value::UInt(u) => {
            h.write_u8(1);
            h.write_u64(*u);
        }
        Value::Int(i) => {
            h.write_u8(2);
            h.write_i64(*i);
        }
        Value::Float(f) => {
            h.write_u8(3);
            h.write_u64(f.to_bits());
        }
        Value::Text(s) => {
            h.write_u8(4);
            for ch in s.trim_end_matches(' ').chars().flat_map(char::to_lowercase) {
                h.write_u32(u32::from(ch));
            }
        }
        Value::Bytes(b) => {
            h.write_u8(5);
            h.write(b);
        }
        other => {
            h.write_u8(6);
            other.to_string().hash(h);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Column, ForeignKey, Position, Prior, SiteId};

    fn table(name: &str, cols: &[&str], unique: Vec<Vec<usize>>, fks: Vec<ForeignKey>) -> Arc<TableSchema> {
        Arc::new(TableSchema {
            name: TableName { schema: Some("db".into()), name: name.into() },
            columns: cols
                .iter()
                .map(|c| Column { name: c.to_string(), decl_type: "int".into(), nullable: true })
                .collect(),
            primary_key: vec![0],
            unique_keys: unique,
            foreign_keys: fks,
            create_sql: None,
        })
    }

    fn targets(tables: &[&Arc<TableSchema>]) -> (HashMap<TableName, Arc<TableSchema>>, Parents) {
        let parents = parents_of(tables.iter().copied());
        let targets = tables.iter().map(|t| (t.name.clone(), (*t).clone())).collect();
        (targets, parents)
    }

    fn change(t: &Arc<TableSchema>, before: Option<Row>, after: Option<Row>) -> Change {
        let op = match (&before, &after) {
            (None, _) => Op::Insert,
            (_, None) => Op::Delete,
            _ => Op::Update,
        };
        let key = t.key_of(before.as_ref().or(after.as_ref()).expect("an image"));
        Change { table: t.clone(), op, key, before, after, prior: Prior::Unknown, seen: None, version: None }
    }

    fn txn(seq: i64, changes: Vec<Change>) -> Txn {
        Txn {
            origin: SiteId::new("a"),
            commit_ts: 0,
            position: Position::new(format!("t:{seq}"), seq.to_be_bytes().to_vec(), None),
            changes,
            ddl: Vec::new(),
        }
    }

    fn row(vals: &[Value]) -> Row {
        vals.to_vec()
    }

    /// The share each transaction landed in.
    fn share_of(shares: &[Vec<usize>], n: usize) -> Vec<usize> {
        (0..n).map(|i| shares.iter().position(|s| s.contains(&i)).expect("every transaction has a share")).collect()
    }

    #[test]
    fn a_unique_value_swap_stays_in_one_share_and_order() {
        let t = table("u", &["id", "u"], vec![vec![1]], vec![]);
        let (targets, parents) = targets(&[&t]);
        let (i, s) = (Value::Int, |v: &str| Value::Text(v.into()));
        let txns = vec![
            txn(1, vec![change(&t, Some(row(&[i(1), s("a")])), Some(row(&[i(1), s("x")])))]),
            txn(2, vec![change(&t, Some(row(&[i(2), s("b")])), Some(row(&[i(2), s("a")])))]),
            txn(3, vec![change(&t, Some(row(&[i(3), s("c")])), Some(row(&[i(3), s("d")])))]),
            txn(4, vec![change(&t, Some(row(&[i(4), s("e")])), Some(row(&[i(4), s("B ")])))]),
        ];
        let shares = partition(&txns, &targets, &parents, 4);
        let of = share_of(&shares, txns.len());
        assert_eq!(of[0], of[1], "the value 'a' moves from row 1 to row 2: {shares:?}");
        assert_eq!(of[1], of[3], "'B ' equals 'b' under a case-insensitive PAD SPACE collation: {shares:?}");
        assert_ne!(of[0], of[2], "row 3 shares nothing with the others: {shares:?}");
        assert!(shares.iter().all(|s| s.windows(2).all(|w| w[0] < w[1])), "source order within a share: {shares:?}");
    }

    #[test]
    fn parents_children_and_key_updates_share_dependencies() {
        let parent = table("p", &["id", "name"], vec![], vec![]);
        let fk = ForeignKey {
            columns: vec![1],
            parent: parent.name.clone(),
            parent_columns: vec!["id".into()],
            cascades: false,
        };
        let child = table("c", &["id", "p"], vec![], vec![fk]);
        let (targets, parents) = targets(&[&parent, &child]);
        let (i, u, n) = (Value::Int, Value::UInt, Value::Null);
        let txns = vec![
            txn(1, vec![change(&parent, None, Some(row(&[i(5), n.clone()])))]),
            txn(2, vec![change(&child, None, Some(row(&[i(10), u(5)])))]),
            txn(3, vec![change(&child, None, Some(row(&[i(11), i(6)])))]),
            txn(4, vec![change(&child, Some(row(&[i(12), n.clone()])), Some(row(&[i(13), n.clone()])))]),
            txn(5, vec![change(&child, None, Some(row(&[i(13), n])))]),
            txn(6, vec![change(&parent, Some(row(&[i(6), Value::Null])), None)]),
        ];
        let shares = partition(&txns, &targets, &parents, 8);
        let of = share_of(&shares, txns.len());
        assert_eq!(of[0], of[1], "a child references the parent inserted before it: {shares:?}");
        assert_ne!(of[0], of[2], "another parent value: {shares:?}");
        assert_eq!(of[3], of[4], "a key moved to 13, then 13 is written again: {shares:?}");
        assert_eq!(of[2], of[5], "parent 6 goes while a child references it: {shares:?}");
        assert_ne!(of[3], of[0], "NULL references nothing: {shares:?}");
    }

    #[test]
    fn a_table_without_before_images_is_serialized() {
        let t = table("u", &["id", "u"], vec![vec![1]], vec![]);
        let (targets, parents) = targets(&[&t]);
        let i = Value::Int;
        let mut keyless = change(&t, Some(row(&[i(1), i(1)])), Some(row(&[i(1), i(2)])));
        keyless.before = None;
        let txns =
            vec![txn(1, vec![keyless]), txn(2, vec![change(&t, Some(row(&[i(2), i(3)])), Some(row(&[i(2), i(1)])))])];
        let shares = partition(&txns, &targets, &parents, 2);
        let of = share_of(&shares, 2);
        assert_eq!(of[0], of[1], "the old unique value of row 1 is unknown: {shares:?}");
    }

    #[test]
    fn a_cascading_parent_delete_orders_every_change_of_its_child_table() {
        let parent = table("p", &["id"], vec![], vec![]);
        let fk = ForeignKey {
            columns: vec![1],
            parent: parent.name.clone(),
            parent_columns: vec!["id".into()],
            cascades: true,
        };
        let child = table("c", &["id", "p", "tag"], vec![vec![2]], vec![fk]);
        let other = table("o", &["id"], vec![], vec![]);
        let (targets, parents) = targets(&[&parent, &child, &other]);
        let i = Value::Int;
        let txns = vec![
            // Deleting parent 1 also deletes its children on the target (not in the binlog) ...
            txn(1, vec![change(&parent, Some(row(&[i(1)])), None)]),
            // ... so a child taking a tag one of them held must wait for it.
            txn(2, vec![change(&child, None, Some(row(&[i(9), i(2), i(7)])))]),
            txn(3, vec![change(&other, None, Some(row(&[i(1)])))]),
        ];
        let shares = partition(&txns, &targets, &parents, 3);
        let of = share_of(&shares, 3);
        assert_eq!(of[0], of[1], "{shares:?}");
        assert_ne!(of[0], of[2], "{shares:?}");
    }

    #[test]
    fn batches_after_one_that_formed_one_group_skip_the_partition_for_longer_each_time() {
        let t = table("c", &["id", "n"], vec![], vec![]);
        let (targets, parents) = targets(&[&t]);
        let i = Value::Int;
        let update = |id: i64, n: i64| change(&t, Some(row(&[i(id), i(n)])), Some(row(&[i(id), i(n + 1)])));
        // Every transaction updates the same counter row / each its own row.
        let hot: Vec<Txn> = (0..4).map(|s| txn(s, vec![update(1, s)])).collect();
        let apart: Vec<Txn> = (0..4).map(|s| txn(s, vec![update(s + 1, s)])).collect();
        let mut b = SplitBackoff::default();
        let mut run = |txns: &[Txn]| !b.skips() && b.split(txns, &targets, &parents, 2).is_some();
        assert!(!run(&hot));
        assert!(!run(&apart), "the batch after a single group is not partitioned");
        assert!(run(&apart), "then it is, and splits");
        assert!(!run(&hot));
        assert!(!run(&apart), "a split reset the wait to one batch");
        assert!(run(&apart));
        assert!(!run(&hot));
        assert!(!run(&hot));
        assert!(!run(&hot), "partitioned again, one group again: the wait doubles");
        assert!(!run(&apart) && !run(&apart));
        assert!(run(&apart));
    }
}
