//! Repair: SQL that makes the target equal to the source for the confirmed differences
//! (insert what is missing, delete what is extra, update the differing columns), in the
//! target's dialect, with every value as an exact literal.

use super::diff::{RowDiff, TablePair};
use super::report::DiffKind;
use super::side::Dialect;
use crate::model::Value;
use crate::model::timestamp_text;

/// Statements (without a trailing `;`) fixing `diffs` of one table on the target.
pub fn statements(pair: &TablePair, dialect: Dialect, diffs: &[RowDiff]) -> Vec<String> {
    let table = match dialect {
        Dialect::Sqlite => quote_ident(dialect, &pair.target.name.name),
        Dialect::Mysql => crate::connector::mysql::schema::qualified(&pair.target.name),
    };
    let col = |i: usize| quote_ident(dialect, &pair.target.columns[pair.target_index[i]].name);
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
                let vals: Vec<String> = s.iter().map(|v| literal(dialect, v)).collect();
                out.push(format!("INSERT INTO {table} ({}) VALUES ({})", cols.join(", "), vals.join(", ")));
            }
            (DiffKind::Extra, _, Some(t)) => out.push(format!("DELETE FROM {table} WHERE {}", key_where(t))),
            (DiffKind::Different, Some(s), Some(t)) => {
                let sets: Vec<String> = pair
                    .differing_columns(s, t)
                    .into_iter()
                    .map(|i| format!("{} = {}", col(i), literal(dialect, &s[i])))
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

/// Lines that start a repair file for a target of `dialect` (a MySQL session in UTC,
/// as every ferry session).
pub fn preamble(dialect: Dialect) -> Vec<String> {
    match dialect {
        Dialect::Sqlite => vec!["BEGIN".into()],
        Dialect::Mysql => vec!["SET time_zone = '+00:00'".into(), "START TRANSACTION".into()],
    }
}

fn quote_ident(dialect: Dialect, name: &str) -> String {
    match dialect {
        Dialect::Sqlite => crate::connector::sqlite::literal::ident(name),
        Dialect::Mysql => crate::connector::mysql::ident(name),
    }
}

fn string(dialect: Dialect, s: &str) -> String {
    match dialect {
        Dialect::Sqlite => crate::connector::sqlite::literal::string(s),
        Dialect::Mysql => {
            let mut out = String::with_capacity(s.len() + 2);
            out.push('\'');
            for c in s.chars() {
                match c {
                    '\'' => out.push_str("''"),
                    '\\' => out.push_str("\\\\"),
                    '\0' => out.push_str("\\0"),
                    c => out.push(c),
                }
            }
            out.push('\'');
            out
        }
    }
}

/// A value as an exact SQL literal of `dialect` (what ferry's apply would bind).
pub fn literal(dialect: Dialect, v: &Value) -> String {
    match v {
        Value::Null => "NULL".into(),
        Value::Int(i) => i.to_string(),
        Value::UInt(u) => match (dialect, i64::try_from(*u)) {
            (Dialect::Sqlite, Err(_)) => string(dialect, &u.to_string()),
            _ => u.to_string(),
        },
        Value::Float(f) if f.is_nan() => "NULL".into(),
        Value::Float(f) if f.is_infinite() => if *f > 0.0 { "9e999" } else { "-9e999" }.into(),
        Value::Float(f) => format!("{f:e}"),
        Value::Decimal(s) | Value::Text(s) | Value::Json(s) => string(dialect, s),
        Value::Bytes(b) => {
            let hex: String = b.iter().map(|x| format!("{x:02X}")).collect();
            format!("X'{hex}'")
        }
        Value::Timestamp(us) => string(dialect, &timestamp_text(*us)),
        other => string(dialect, &other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_are_exact_and_escaped() {
        assert_eq!(literal(Dialect::Mysql, &Value::Text("it's \\ ok".into())), "'it''s \\\\ ok'");
        assert_eq!(literal(Dialect::Sqlite, &Value::Text("it's \\".into())), "'it''s \\'");
        assert_eq!(literal(Dialect::Sqlite, &Value::Bytes(vec![0, 255])), "X'00FF'");
        assert_eq!(literal(Dialect::Mysql, &Value::Float(0.1)), "1e-1");
        assert_eq!(literal(Dialect::Sqlite, &Value::UInt(u64::MAX)), "'18446744073709551615'");
        assert_eq!(literal(Dialect::Mysql, &Value::Null), "NULL");
    }
}
