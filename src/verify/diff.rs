//! Row-level comparison of the two sides' rows of one key range, in canonical form:
//! which keys are missing, extra, or different and in which columns.

use std::collections::HashMap;

use super::canonical::{ColumnClass, encode, encode_row, hash_bytes};
use super::report::{ColumnDiff, DiffKind, Difference};
use crate::model::{Key, Row, TableSchema, key_text};

/// A table as both sides hold it, with the class each column is compared in.
#[derive(Debug, Clone)]
pub struct TablePair {
    /// The source's schema.
    pub source: TableSchema,
    /// The target's schema (columns in the source's order, renamed as mapped).
    pub target: TableSchema,
    /// Per column (source order), how values compare.
    pub classes: Vec<ColumnClass>,
    /// Position of each source column in the target's rows.
    pub target_index: Vec<usize>,
    /// Both sides checksum each range as one engine's exact form, without ferry's
    /// canonical values (same engine, same types; MySQL: no floats).
    pub native: bool,
    /// How chunks are compared, as the report names it.
    pub method: &'static str,
}

/// One differing row with both versions (target rows reordered to source column order).
#[derive(Debug, Clone)]
pub struct RowDiff {
    /// Missing, extra or different.
    pub kind: DiffKind,
    /// The key (source's values where the source has the row).
    pub key: Key,
    /// The source's row.
    pub source: Option<Row>,
    /// The target's row, in source column order.
    pub target: Option<Row>,
}

impl TablePair {
    /// A target row in source column order.
    pub fn align(&self, row: Row) -> Row {
        if self.target_index.iter().enumerate().all(|(i, &j)| i == j) {
            return row;
        }
        self.target_index.iter().map(|&j| row[j].clone()).collect()
    }

    /// Canonical bytes of a row's key.
    pub fn key_bytes(&self, row: &[crate::model::Value]) -> Vec<u8> {
        let mut out = Vec::with_capacity(16);
        for &i in &self.source.primary_key {
            encode(self.classes[i], &row[i], &mut out);
        }
        out
    }

    /// Canonical bytes of a whole row.
    pub fn row_bytes(&self, row: &[crate::model::Value]) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        encode_row(&self.classes, row, &mut out);
        out
    }

    /// Columns whose canonical values differ.
    pub fn differing_columns(&self, a: &[crate::model::Value], b: &[crate::model::Value]) -> Vec<usize> {
        let (mut x, mut y) = (Vec::new(), Vec::new());
        (0..self.classes.len())
            .filter(|&i| {
                x.clear();
                y.clear();
                encode(self.classes[i], &a[i], &mut x);
                encode(self.classes[i], &b[i], &mut y);
                x != y
            })
            .collect()
    }

    /// The report entry of a row difference.
    pub fn describe(&self, d: &RowDiff) -> Difference {
        let columns = match (&d.source, &d.target) {
            (Some(a), Some(b)) => self
                .differing_columns(a, b)
                .into_iter()
                .map(|i| ColumnDiff {
                    column: self.source.columns[i].name.clone(),
                    source: a[i].to_string(),
                    target: b[i].to_string(),
                })
                .collect(),
            _ => Vec::new(),
        };
        Difference { kind: d.kind, key: key_text(&d.key), columns }
    }
}

/// Count and order-independent sum of the canonical row hashes of some rows.
pub fn digest(pair: &TablePair, rows: &[Row]) -> (u64, u64) {
    let sum = rows.iter().fold(0u64, |acc, r| acc.wrapping_add(hash_bytes(&pair.row_bytes(r))));
    (rows.len() as u64, sum)
}

/// The differences between the two sides' rows of one range (target rows aligned).
pub fn diff_rows(pair: &TablePair, source: Vec<Row>, target: Vec<Row>) -> Vec<RowDiff> {
    let mut theirs: HashMap<Vec<u8>, Row> = HashMap::with_capacity(target.len());
    let mut extra_order = Vec::with_capacity(target.len());
    for r in target {
        let k = pair.key_bytes(&r);
        extra_order.push(k.clone());
        theirs.insert(k, r);
    }
    let mut out = Vec::new();
    for r in source {
        let k = pair.key_bytes(&r);
        match theirs.remove(&k) {
            None => out.push(RowDiff {
                kind: DiffKind::Missing,
                key: pair.source.key_of(&r),
                source: Some(r),
                target: None,
            }),
            Some(t) => {
                if pair.row_bytes(&r) != pair.row_bytes(&t) {
                    out.push(RowDiff {
                        kind: DiffKind::Different,
                        key: pair.source.key_of(&r),
                        source: Some(r),
                        target: Some(t),
                    });
                }
            }
        }
    }
    for k in extra_order {
        if let Some(t) = theirs.remove(&k) {
            out.push(RowDiff { kind: DiffKind::Extra, key: pair.source.key_of(&t), source: None, target: Some(t) });
        }
    }
    out
}
