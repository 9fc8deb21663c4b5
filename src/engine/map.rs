//! `[[task.map]]` renames: a source table's schema turned into the target's names.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::config::TableMap;
use crate::model::{TableName, TableSchema};

/// The `[[task.map]]` rules, applied to whatever shape a source table has now: a table
/// altered mid-stream gets its new columns under the target's names.
#[derive(Debug, Default)]
pub struct Renames {
    maps: Vec<TableMap>,
    /// Source table -> (the source schema last seen, its target schema).
    cache: Mutex<HashMap<TableName, (Arc<TableSchema>, Arc<TableSchema>)>>,
}

impl Renames {
    /// Builds the target schemas of the source tables.
    pub fn new(sources: &[Arc<TableSchema>], maps: &[TableMap]) -> Self {
        let r = Renames { maps: maps.to_vec(), cache: Mutex::new(HashMap::new()) };
        for s in sources {
            r.target(s);
        }
        r
    }

    /// The target schema for a source table (the source's own when unmapped).
    pub fn target(&self, source: &Arc<TableSchema>) -> Arc<TableSchema> {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((seen, target)) = cache.get(&source.name)
            && (Arc::ptr_eq(seen, source) || seen.columns == source.columns)
        {
            return target.clone();
        }
        let target = self.rename(source);
        cache.insert(source.name.clone(), (source.clone(), target.clone()));
        target
    }

    /// The target's name for a source table, and whether its columns are renamed too.
    pub fn target_name(&self, source: &TableName) -> (TableName, bool) {
        let rule = self.rule(source);
        (rule.name(source), matches!(rule, Rule::Table(m) if !m.columns.is_empty()))
    }

    /// Every target schema.
    pub fn all(&self) -> Vec<Arc<TableSchema>> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<Arc<TableSchema>> = cache.values().map(|(_, t)| t.clone()).collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    fn rule(&self, source: &TableName) -> Rule<'_> {
        let full = source.to_string();
        if let Some(m) = self.maps.iter().find(|m| m.from == full) {
            return Rule::Table(m);
        }
        // A whole database: `from = "shop.*"`, `to = "shop_v2.*"` (exact table maps win).
        let db_map = source.schema.as_ref().and_then(|db| {
            self.maps.iter().find(|m| m.from.strip_suffix(".*") == Some(db.as_str()) && m.to.ends_with(".*"))
        });
        match db_map {
            Some(m) => Rule::Database(m.to.trim_end_matches(".*").to_string()),
            None => Rule::Same,
        }
    }

    fn rename(&self, s: &Arc<TableSchema>) -> Arc<TableSchema> {
        let rule = self.rule(&s.name);
        if matches!(rule, Rule::Same) {
            return s.clone();
        }
        let mut t = (**s).clone();
        t.name = rule.name(&s.name);
        if let Rule::Table(m) = rule {
            for c in &mut t.columns {
                if let Some(new) = m.columns.get(&c.name) {
                    c.name = new.clone();
                }
            }
        }
        Arc::new(t)
    }
}

/// How a source table's name maps.
enum Rule<'a> {
    Same,
    Database(String),
    Table(&'a TableMap),
}

impl Rule<'_> {
    /// The target's name of `source` under this rule.
    fn name(&self, source: &TableName) -> TableName {
        match self {
            Rule::Same => source.clone(),
            Rule::Database(db) => TableName { schema: Some(db.clone()), name: source.name.clone() },
            Rule::Table(m) => match m.to.split_once('.') {
                Some((db, name)) if source.schema.is_some() => TableName { schema: Some(db.into()), name: name.into() },
                _ => TableName { schema: source.schema.clone(), name: m.to.clone() },
            },
        }
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
            foreign_keys: vec![],
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
