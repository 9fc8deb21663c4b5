//! `ferry check`'s look at a task's pair of endpoints, over each store's preflight in the
//! registry: the source as a source, the target as a target of the (renamed) tables, and
//! for two-way each side in the other role too, plus what two-way needs. Read-only;
//! every problem once, each with its fix.

use super::endpoint::Endpoint;
use super::registry::{self, PreflightTask, SourceCheck, TargetTable};
use crate::model::TableName;

/// Preflight of a task's pair: a one-line summary, or every problem with its fix.
pub async fn preflight(from: &Endpoint, to: &Endpoint, task: &PreflightTask) -> Result<String, Vec<String>> {
    if let Err(e) = registry::check_pair(from, to) {
        return Err(vec![e.to_string()]);
    }
    check_task(from, to, task).await
}

/// Checks one task's pair of endpoints: a one-line summary, or every problem found.
async fn check_task(from: &Endpoint, to: &Endpoint, task: &PreflightTask) -> Result<String, Vec<String>> {
    let (src, dst) = match (registry::store(from), registry::store(to)) {
        (Ok(a), Ok(b)) => (a, b),
        (a, b) => return Err([a.err(), b.err()].into_iter().flatten().map(|e| e.to_string()).collect()),
    };
    let forward =
        SourceCheck { require_match: true, snapshot_rows_per_sec: task.snapshot.then_some(task.max_rows_per_sec) };
    let found = src.check_source(from, &task.tables, &forward).await;
    let mut problems = found.problems;
    let mut warnings = found.warnings;
    let targets: Vec<TargetTable> = found.tables.iter().map(|t| renamed(task, t, |n| dst.qualify(to, n))).collect();
    problems.extend(dst.check_target(to, &from.name, &targets).await);
    warnings.extend(dst.target_warnings(to).await);
    if task.two_way {
        // The reverse direction reads the target's copies (which the snapshot may not have
        // made yet) and writes back into the source's tables.
        let patterns: Vec<String> = targets.iter().map(|t| t.name.to_string()).collect();
        let reverse = SourceCheck { require_match: false, snapshot_rows_per_sec: None };
        let back = dst.check_source(to, &patterns, &reverse).await;
        problems.extend(back.problems);
        warnings.extend(back.warnings);
        problems.extend(src.check_target(from, &to.name, &found.tables).await);
        warnings.extend(src.target_warnings(from).await);
        problems.extend(src.check_two_way(from, &found.tables).await);
        problems.extend(dst.check_two_way(to, &targets).await);
    }
    let mut seen = std::collections::HashSet::new();
    problems.retain(|p| seen.insert(p.clone()));
    if !problems.is_empty() {
        return Err(problems);
    }
    let names: Vec<String> = found.tables.iter().map(|t| t.name.to_string()).collect();
    let mut seen = std::collections::HashSet::new();
    warnings.retain(|w| seen.insert(w.clone()));
    let warned: String = warnings.iter().map(|w| format!("\n  warning: {w}")).collect();
    Ok(format!(
        "{} {} -> {} ({} -> {}), {} table(s): {}{warned}",
        if task.two_way { "two-way" } else { "one-way" },
        from.name,
        to.name,
        from.url,
        to.url,
        names.len(),
        names.join(", ")
    ))
}

/// A source table as the target will hold it, renamed by the task's maps (a map's `to`
/// without a database or schema keeps the source's), then named as the target names it.
fn renamed(task: &PreflightTask, t: &TargetTable, qualify: impl Fn(&TableName) -> TableName) -> TargetTable {
    let full = t.name.to_string();
    let map = task.maps.iter().find(|m| m.from == full || m.from == t.name.name);
    let name = match map.map(|m| m.to.split_once('.').map(|(d, n)| (d.to_string(), n.to_string()))) {
        Some(Some((schema, name))) => TableName { schema: Some(schema), name },
        Some(None) => TableName { schema: t.name.schema.clone(), name: map.map(|m| m.to.clone()).unwrap_or_default() },
        None => t.name.clone(),
    };
    let columns = t.columns.as_ref().map(|cols| {
        cols.iter().map(|c| map.and_then(|m| m.columns.get(c)).cloned().unwrap_or_else(|| c.clone())).collect()
    });
    TargetTable { name: qualify(&name), columns }
}
