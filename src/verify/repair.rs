//! Repair: SQL that makes the target equal to the source for the confirmed differences
//! (insert what is missing, delete what is extra, update the differing columns), in the
//! target's dialect, with every value as an exact literal.

use super::diff::{RowDiff, TablePair};
use super::report::DiffKind;
use crate::connector::verifier::{Dialect, literal, literal_for};
use crate::model::Value;

/// Statements (without a trailing `;`) fixing `diffs` of one table on the target.
pub fn statements(pair: &TablePair, dialect: &dyn Dialect, diffs: &[RowDiff]) -> Vec<String> {
    let table = dialect.quote_table(&pair.target.name);
    let col = |i: usize| dialect.quote_ident(&pair.target.columns[pair.target_index[i]].name);
    let decl = |i: usize| pair.target.columns[pair.target_index[i]].decl_type.as_str();
    let key_where = |row: &[Value]| {
        let conds: Vec<String> =
            pair.source.primary_key.iter().map(|&i| format!("{} = {}", col(i), literal(dialect, &row[i]))).collect();
        conds.join(" AND ")
    };
    let mut out = Vec::with_capacity(diffs.len());
    for d in diffs {
        match (d.kind, &d.source, &d.target) {
            (DiffKind::Missing, Some(s), _) => {
                let cols: Vec<String> = (0..s.len()).map(col).collect();
                let vals: Vec<String> = s.iter().enumerate().map(|(i, v)| literal_for(dialect, v, decl(i))).collect();
                out.push(format!("INSERT INTO {table} ({}) VALUES ({})", cols.join(", "), vals.join(", ")));
            }
            (DiffKind::Extra, _, Some(t)) => out.push(format!("DELETE FROM {table} WHERE {}", key_where(t))),
            (DiffKind::Different, Some(s), Some(t)) => {
                let sets: Vec<String> = pair
                    .differing_columns(s, t)
                    .into_iter()
                    .map(|i| format!("{} = {}", col(i), literal_for(dialect, &s[i], decl(i))))
                    .collect();
                if !sets.is_empty() {
                    out.push(format!("UPDATE {table} SET {} WHERE {}", sets.join(", "), key_where(t)));
                }
            }
            _ => {}
        }
    }
    out
}

/// Lines that start a repair file for a target of `dialect`.
pub fn preamble(dialect: &dyn Dialect) -> Vec<String> {
    dialect.preamble()
}
