//! `[[task.map]]` renames: a source table's schema turned into the target's names.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::TableMap;
use crate::model::{TableName, TableSchema};

/// Source table name (as the task file writes it) -> the schema to write on the target.
#[derive(Debug, Default, Clone)]
pub struct Renames {
    targets: HashMap<TableName, Arc<TableSchema>>,
}

impl Renames {
    /// Builds the target schemas of the source tables.
    pub fn new(sources: &[Arc<TableSchema>], maps: &[TableMap]) -> Self {
        let mut targets = HashMap::new();
        for s in sources {
            let full = s.name.to_string();
            let target = match maps.iter().find(|m| m.from == full) {
                None => s.clone(),
                Some(m) => {
                    let mut t = (**s).clone();
                    t.name = match m.to.split_once('.') {
                        Some((db, name)) if s.name.schema.is_some() => {
                            TableName { schema: Some(db.into()), name: name.into() }
                        }
                        _ => TableName { schema: s.name.schema.clone(), name: m.to.clone() },
                    };
                    for c in &mut t.columns {
                        if let Some(new) = m.columns.get(&c.name) {
                            c.name = new.clone();
                        }
                    }
                    Arc::new(t)
                }
            };
            targets.insert(s.name.clone(), target);
        }
        Renames { targets }
    }

    /// The target schema for a source table (the source's own when unmapped).
    pub fn target(&self, source: &Arc<TableSchema>) -> Arc<TableSchema> {
        self.targets.get(&source.name).cloned().unwrap_or_else(|| source.clone())
    }

    /// Every target schema.
    pub fn all(&self) -> Vec<Arc<TableSchema>> {
        let mut v: Vec<Arc<TableSchema>> = self.targets.values().cloned().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }
}
