//! Where ferry's own tables stand: the version `ferry_schema` records for a component,
//! or, before versions were recorded, what the tables present say.

/// The version ferry's tables are at, and whether `ferry_schema` records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    /// 0: no ferry tables yet.
    pub version: i64,
    /// False when inferred from the tables (none yet, or a release before versions).
    pub recorded: bool,
}

impl Found {
    /// Judges the version from the tables present (`names`) and the version
    /// `ferry_schema` records, if any: without one, any of `v1_tables` means a release
    /// before versions (1), none of them a store ferry never wrote to (0).
    pub fn judge(names: &[String], recorded: Option<i64>, v1_tables: &[&str]) -> Found {
        match recorded {
            Some(version) => Found { version, recorded: true },
            None => {
                let legacy = v1_tables.iter().any(|t| names.iter().any(|n| n == t));
                Found { version: i64::from(legacy), recorded: false }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_version_wins_and_old_tables_mean_version_one() {
        let names = vec!["ferry_lease".to_string(), "orders".to_string()];
        assert_eq!(Found::judge(&names, Some(3), &["ferry_lease"]), Found { version: 3, recorded: true });
        assert_eq!(Found::judge(&names, None, &["ferry_lease"]), Found { version: 1, recorded: false });
        assert_eq!(Found::judge(&names, None, &["ferry_checkpoint"]), Found { version: 0, recorded: false });
    }
}
