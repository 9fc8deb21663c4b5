//! The names of ferry's own tables on a MySQL/MariaDB server, all in the [`FERRY_DB`]
//! database: one home, below every file that reads or writes them. The snapshot
//! watermark table is [`crate::connector::SIGNAL_TABLE`], named alike on every store;
//! the two-way version tables are named per user table by `versions::table_for`.

use super::{FERRY_DB, ident};

/// Sources: a microsecond timestamp per site, written every 100 ms (lag when idle).
pub const HEARTBEAT_TABLE: &str = crate::connector::HEARTBEAT_TABLE;
/// Targets: per task direction, the stream position and per-table snapshot progress.
pub const CHECKPOINT_TABLE: &str = "ferry_checkpoint";
/// Targets: the conflicts two-way apply resolved, each with both versions.
pub const CONFLICT_TABLE: &str = "ferry_conflict";
/// Targets: who runs each task direction, and until when.
pub const LEASE_TABLE: &str = "ferry_lease";
/// Two-way: the origin of an applied transaction, where the applier cannot set its
/// session server id.
pub const MARKER_TABLE: &str = "ferry_marker";
/// Cutover: when, and why, the server was frozen.
pub const FREEZE_TABLE: &str = "ferry_freeze";
/// Cutover, releases before the structured form: the write grants a revoking freeze
/// took away, as SQL text (read only to give them back, never run as text).
pub const FREEZE_GRANTS_TABLE: &str = "ferry_freeze_grants";
/// Cutover: the write grants a revoking freeze took away, one row per (user, host,
/// database, table, privilege), to give back by building the GRANT from the fields.
pub const REVOKED_GRANTS_TABLE: &str = "ferry_revoked_grants";

/// `ferry`.`name`, quoted.
pub fn ferry_table(name: &str) -> String {
    format!("{}.{}", ident(FERRY_DB), ident(name))
}
