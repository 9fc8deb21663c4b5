//! Which tables a verify run compares: the task's tables (narrowed by `--tables`), each
//! described on both sides and paired column by column. Anything that makes a fair
//! comparison impossible is bad input naming the table and the fix.

use std::sync::Arc;

use super::canonical::ColumnClass;
use super::diff::TablePair;
use super::error::VerifyError;
use crate::config::Task;
use crate::connector::verifier::{AnySide, Dialect, Side};
use crate::engine::map::Renames;
use crate::model::TableName;

/// The tables to compare, and whether keys must be read in byte order on both sides
/// (text key columns whose collations differ between two MySQL sides would otherwise
/// sort differently, and chunks are key ranges).
#[derive(Debug)]
pub struct Plan {
    /// The table pairs.
    pub pairs: Vec<TablePair>,
    /// Read keys in byte order on every side.
    pub byte_order: bool,
}

/// Describes and pairs the tables of `task` on both sides.
pub async fn plan_tables(
    task: &Task,
    source: &mut AnySide,
    target: &mut AnySide,
    filter: Option<&str>,
) -> Result<Plan, VerifyError> {
    let mut names = source.matching(&task.tables).await?;
    if let Some(glob) = filter {
        let pat = glob::Pattern::new(glob).map_err(|e| VerifyError::Input {
            problem: format!("--tables {glob:?} is not a valid glob: {e}"),
            fix: "use * and ? wildcards, e.g. --tables 'shop.*'".into(),
        })?;
        let all: Vec<String> = names.iter().map(ToString::to_string).collect();
        names.retain(|n| pat.matches(&n.to_string()) || pat.matches(&n.name));
        if names.is_empty() {
            return Err(VerifyError::Input {
                problem: format!(
                    "--tables {glob:?} matches no table of task {} (its tables on {}: {})",
                    task.name,
                    source.name(),
                    if all.is_empty() { "none".into() } else { all.join(", ") }
                ),
                fix: "name one of the task's tables, or widen the task's `tables` list".into(),
            });
        }
    }
    let mut pairs = Vec::new();
    let mut byte_order = false;
    for name in names {
        let Some(src) = source.describe(&name).await? else { continue };
        let src = Arc::new(src);
        let mapped = Renames::new(std::slice::from_ref(&src), &task.maps).target(&src);
        let tname = target_name(&mapped.name, target)?;
        let Some(tgt) = target.describe(&tname).await? else {
            return Err(VerifyError::Input {
                problem: format!(
                    "table {} of endpoint {} does not exist on endpoint {} (as {tname})",
                    name,
                    source.name(),
                    target.name()
                ),
                fix: format!(
                    "create it on {} (`ferry run` creates missing target tables), map it with [[task.map]], or leave it out with --tables",
                    target.name()
                ),
            });
        };
        let (ca, cb) = (source.key_collations(&src).await?, target.key_collations(&tgt).await?);
        if let (Some(a), Some(b)) = (ca, cb)
            && a != b
        {
            byte_order = true;
        }
        let same_engine = (source.dialect().store() == target.dialect().store()).then_some(target.dialect());
        pairs.push(pair(&src, &mapped.columns, tgt, same_engine)?);
    }
    Ok(Plan { pairs, byte_order })
}

/// The target's name of a (mapped) table: SQLite names are bare; a bare name on MySQL
/// takes the database of the endpoint's URL.
fn target_name(mapped: &TableName, target: &AnySide) -> Result<TableName, VerifyError> {
    target.dialect().target_name(mapped, target.default_database()).map_err(|(problem, fix)| VerifyError::Input {
        problem: format!("{problem} on endpoint {}", target.name()),
        fix: format!("endpoint {}: {fix}", target.name()),
    })
}

fn pair(
    src: &crate::model::TableSchema,
    mapped: &[crate::model::Column],
    tgt: crate::model::TableSchema,
    same_engine: Option<&dyn Dialect>,
) -> Result<TablePair, VerifyError> {
    let names = |cols: &[crate::model::Column]| cols.iter().map(|c| c.name.clone()).collect::<Vec<_>>();
    let (want, have) = (names(mapped), names(&tgt.columns));
    let only_src: Vec<&String> = want.iter().filter(|c| !have.contains(c)).collect();
    let only_tgt: Vec<&String> = have.iter().filter(|c| !want.contains(c)).collect();
    if !only_src.is_empty() || !only_tgt.is_empty() {
        return Err(VerifyError::Input {
            problem: format!(
                "table {} has different columns on the two sides: source ({}) vs target {} ({}); only on the source: {:?}; only on the target: {:?}",
                src.name,
                want.join(", "),
                tgt.name,
                have.join(", "),
                only_src,
                only_tgt
            ),
            fix: format!(
                "give {} the same columns on both sides (ALTER TABLE), map renamed columns with [[task.map]] columns = {{ old = \"new\" }}, or leave the table out with --tables",
                src.name
            ),
        });
    }
    let target_index: Vec<usize> = want.iter().map(|c| have.iter().position(|h| h == c).unwrap_or(0)).collect();
    let src_key: Vec<usize> = src.primary_key.iter().map(|&i| target_index[i]).collect();
    if src_key != tgt.primary_key {
        let key = |t: &crate::model::TableSchema| t.key_columns().join(", ");
        return Err(VerifyError::Input {
            problem: format!(
                "table {} has different primary keys: source ({}) vs target {} ({})",
                src.name,
                key(src),
                tgt.name,
                key(&tgt)
            ),
            fix: "give both sides the same primary key; rows are matched by it".into(),
        });
    }
    let classes: Vec<ColumnClass> =
        src.columns.iter().zip(&target_index).map(|(c, &j)| ColumnClass::of(c, &tgt.columns[j])).collect();
    let same_types = src
        .columns
        .iter()
        .zip(&tgt.columns)
        .all(|(a, b)| a.decl_type.eq_ignore_ascii_case(&b.decl_type) && a.nullable == b.nullable);
    // Some stores render floats with fewer digits than they hold (the store's dialect
    // decides whether its in-store checksum is exact for them).
    let floats = src.columns.iter().any(|c| {
        let d = c.decl_type.to_ascii_lowercase();
        d.starts_with("float") || d.starts_with("double") || d.starts_with("real")
    });
    let in_order = target_index.iter().enumerate().all(|(i, &j)| i == j);
    let (native, method) = match same_engine.and_then(|d| d.native_method(floats)) {
        Some(method) if same_types && in_order => (true, method),
        _ => (false, "in-ferry"),
    };
    Ok(TablePair { source: src.clone(), target: tgt, classes, target_index, native, method })
}
