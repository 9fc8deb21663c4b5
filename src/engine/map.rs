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
            // A whole database: `from = "shop.*"`, `to = "shop_v2.*"` (exact table maps win).
            let db_map = s.name.schema.as_ref().and_then(|db| {
                maps.iter().find(|m| m.from.strip_suffix(".*") == Some(db.as_str()) && m.to.ends_with(".*"))
            });
            let target = match maps.iter().find(|m| m.from == full) {
                None => match db_map {
                    Some(m) => {
                        let mut t = (**s).clone();
                        let db = m.to.trim_end_matches(".*");
                        t.name = TableName { schema: Some(db.to_string()), name: s.name.name.clone() };
                        Arc::new(t)
                    }
                    None => s.clone(),
                },
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Column;

    fn table(db: &str, name: &str) -> Arc<TableSchema> {
        Arc::new(TableSchema {
            name: TableName { schema: Some(db.into()), name: name.into() },
            columns: vec![
                Column { name: "id".into(), decl_type: "int".into(), nullable: false },
                Column { name: "name".into(), decl_type: "text".into(), nullable: true },
            ],
            primary_key: vec![0],
            unique_keys: vec![],
            create_sql: None,
        })
    }

    fn map(from: &str, to: &str, cols: &[(&str, &str)]) -> TableMap {
        TableMap {
            from: from.into(),
            to: to.into(),
            columns: cols.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect(),
        }
    }

    #[test]
    fn maps_tables_columns_and_whole_databases() {
        let (t1, t2, t3) = (table("shop", "customers"), table("shop", "orders"), table("crm", "leads"));
        let r = Renames::new(
            &[t1.clone(), t2.clone(), t3.clone()],
            &[map("shop.customers", "shop2.clients", &[("name", "full_name")]), map("shop.*", "shop2.*", &[])],
        );
        let c = r.target(&t1);
        assert_eq!(c.name.to_string(), "shop2.clients");
        assert_eq!(c.columns[1].name, "full_name");
        assert_eq!(r.target(&t2).name.to_string(), "shop2.orders");
        assert_eq!(r.target(&t3).name.to_string(), "crm.leads");
    }
}
