//! Which tables a binlog stream decodes: the task's tables, tables created later that
//! its patterns match, ferry's own heartbeat and signal tables, and (two-way) the
//! version tables and the marker table.

use std::collections::{HashMap, HashSet};

use crate::connector::SIGNAL_TABLE;
use crate::connector::mysql::FERRY_DB;
use crate::connector::mysql::names::{HEARTBEAT_TABLE, MARKER_TABLE};
use crate::connector::mysql::versions;
use crate::model::TableName;

/// Which tables to decode; everything else is skipped (but still advances the position).
#[derive(Debug, Clone, Default)]
pub struct TableFilter {
    /// database -> tables; the key `None` holds tables named without a database (any database).
    tables: HashMap<Option<String>, HashSet<String>>,
    /// The task's `db.table` patterns: a table created later that matches joins the stream.
    patterns: Vec<glob::Pattern>,
    /// Two-way: also decode the tables' version tables and ferry's marker table.
    versions: bool,
}

impl TableFilter {
    /// A filter for these tables, plus ferry's own `ferry.ferry_heartbeat` and `ferry.ferry_signal`.
    pub fn new(tables: impl IntoIterator<Item = TableName>) -> Self {
        let mut filter = TableFilter::default();
        let own = [HEARTBEAT_TABLE, SIGNAL_TABLE]
            .into_iter()
            .map(|t| TableName { schema: Some(FERRY_DB.to_string()), name: t.to_string() });
        for t in tables.into_iter().chain(own) {
            filter.tables.entry(t.schema).or_default().insert(t.name);
        }
        filter
    }

    /// Also follows tables created later whose `db.table` matches one of `patterns`.
    pub fn with_patterns(mut self, patterns: Vec<glob::Pattern>) -> Self {
        self.patterns = patterns;
        self
    }

    /// Two-way: pairs each change with its row version (see `versions.rs`) and reads the
    /// origin markers of ferry's own transactions.
    pub fn with_versions(mut self, on: bool) -> Self {
        self.versions = on;
        if on {
            self.add(&TableName { schema: Some(FERRY_DB.to_string()), name: MARKER_TABLE.to_string() });
        }
        self
    }

    /// Whether the stream pairs changes with row versions (two-way).
    pub(super) fn versions(&self) -> bool {
        self.versions
    }

    /// The user table whose version table is `ferry`.`name`, when following versions.
    pub(super) fn versioned_by(&self, db: &str, name: &str) -> Option<TableName> {
        if !self.versions || db != FERRY_DB || !name.starts_with(versions::VERSION_PREFIX) {
            return None;
        }
        self.tables
            .iter()
            .flat_map(|(d, set)| set.iter().map(move |t| TableName { schema: d.clone(), name: t.clone() }))
            .find(|t| versions::table_for(t) == name)
    }

    /// True when a table of this name, existing or created later, belongs to the stream.
    pub(super) fn claims(&self, t: &TableName) -> bool {
        let db = t.schema.as_deref().unwrap_or_default();
        self.contains(db, &t.name) || self.patterns.iter().any(|p| p.matches(&format!("{db}.{}", t.name)))
    }

    /// Follows this table from now on (it was created).
    pub(super) fn add(&mut self, t: &TableName) {
        self.tables.entry(t.schema.clone()).or_default().insert(t.name.clone());
    }

    /// Stops following this table (it was dropped).
    pub(super) fn remove(&mut self, t: &TableName) {
        if let Some(set) = self.tables.get_mut(&t.schema) {
            set.remove(&t.name);
        }
    }

    /// True when changes of `db`.`table` are decoded.
    pub fn contains(&self, db: &str, table: &str) -> bool {
        // Scan the (few) databases rather than allocate a key.
        self.tables.iter().any(|(d, tables)| d.as_deref().is_none_or(|d| d == db) && tables.contains(table))
    }

    /// True when a statement's text names one of the filtered tables as a whole word (a
    /// heuristic: statements are only inspected for warnings and statement-based DML).
    pub(super) fn mentioned_in(&self, query: &str) -> bool {
        let q = query.to_ascii_lowercase();
        let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80;
        self.tables.values().flatten().any(|t| {
            let t = t.to_ascii_lowercase();
            q.match_indices(&t).any(|(i, _)| {
                let before = i.checked_sub(1).map(|j| q.as_bytes()[j]);
                let after = q.as_bytes().get(i + t.len()).copied();
                !before.is_some_and(word) && !after.is_some_and(word)
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_always_has_ferry_tables() {
        let f = TableFilter::new([TableName { schema: Some("shop".into()), name: "orders".into() }]);
        assert!(f.contains("shop", "orders"));
        assert!(f.contains("ferry", "ferry_signal"));
        assert!(f.contains("ferry", "ferry_heartbeat"));
        assert!(!f.contains("shop", "customers"));
        assert!(f.mentioned_in("TRUNCATE TABLE `shop`.`orders`"));
        assert!(f.mentioned_in("alter table Orders add x int"));
        assert!(!f.mentioned_in("INSERT INTO shop.orders_archive VALUES (1)"));
    }
}
