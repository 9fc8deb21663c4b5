//! Schema versions of ferry's own tables in the `ferry` database of a MySQL/MariaDB
//! server, and their forward migrations, run at start (sink prepare, capture install).
//!
//! `ferry`.`ferry_schema` holds one row per component; here one component, `endpoint`,
//! covers the tables every start needs — checkpoint, conflict log, lease, heartbeat and
//! snapshot signal — whether the server is a source, a target or both. (Tables created on
//! first use — `ferry_freeze`, `ferry_revoked_grants`, `ferry_marker`, two-way version
//! tables — keep their own `CREATE … IF NOT EXISTS`; a step that changes one alters it
//! where it exists.) Version 1 is exactly the DDL of the releases before schema versions:
//! a server holding their tables and no `ferry_schema` row is recognised as version 1.
//! Those releases created the first four tables on targets and the last two on sources,
//! so version 1's statements run again on such a server (they only create what is
//! missing), then the later steps.
//!
//! MySQL commits each DDL statement by itself, so steps cannot share a transaction with
//! the version record. Instead every step is idempotent (`IF NOT EXISTS`, a column added
//! only when missing), the version is recorded after each step, and the whole upgrade
//! runs under a server-wide named lock (`GET_LOCK`), so two processes starting at once
//! take turns and the second finds the work done. A crash mid-way repeats at most the
//! step it was in. A schema newer than this binary knows is refused, never written.

use crate::model::schema_version::Found;
use mysql_async::Conn;
use mysql_async::prelude::Queryable;
use tracing::info;

use super::{FERRY_DB, MysqlEndpoint, ident};
use crate::connector::ConnectorError;
use crate::model::now_micros;

/// This server's row in `ferry`.`ferry_schema`.
pub const COMPONENT: &str = "endpoint";

/// The named lock (server-wide) that serialises upgrades.
const LOCK: &str = "ferry.schema";

/// How long a start waits for another process's upgrade, in seconds.
const LOCK_WAIT_S: u32 = 60;

/// What one step does to the `ferry` database.
#[derive(Debug, Clone, Copy)]
pub enum Change {
    /// Statements that are idempotent by themselves (`CREATE … IF NOT EXISTS`).
    Statements(&'static [&'static str]),
    /// A column added to a ferry table when it is missing (MySQL 8 has no `ADD COLUMN
    /// IF NOT EXISTS`).
    AddColumn {
        /// Table in the `ferry` database.
        table: &'static str,
        /// New column.
        column: &'static str,
        /// Its type and default.
        definition: &'static str,
    },
}

/// One forward step of the schema.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// The version the database is at once the step ran.
    pub version: i64,
    /// What the step does, for logs and errors.
    pub what: &'static str,
    /// The change.
    pub change: Change,
}

/// Every step, oldest first; a server at version N runs those above N.
pub const MIGRATIONS: &[Migration] = &[
    Migration { version: 1, what: "create ferry's tables", change: Change::Statements(V1) },
    Migration {
        version: 2,
        what: "add the lease's fencing token (ferry_lease.fencing)",
        change: Change::AddColumn { table: "ferry_lease", column: "fencing", definition: "BIGINT NOT NULL DEFAULT 0" },
    },
    Migration {
        version: 3,
        what: "add the list of secondary indexes deferred until a table's copy is done (ferry_deferred_index)",
        change: Change::Statements(V3),
    },
];

/// The newest version this binary knows.
pub const LATEST: i64 = MIGRATIONS[MIGRATIONS.len() - 1].version;

/// The version record itself (not a numbered step: it exists from the first upgrade on).
const SCHEMA_TABLE: &str = "CREATE TABLE IF NOT EXISTS `ferry`.`ferry_schema` (component VARCHAR(191) NOT NULL PRIMARY KEY, \
     version BIGINT NOT NULL, updated_us BIGINT NOT NULL) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4";

/// Tables version 1 creates: any of them without a version row is a server set up by a
/// release before schema versions.
const V1_TABLES: [&str; 5] = ["ferry_checkpoint", "ferry_conflict", "ferry_lease", "ferry_heartbeat", "ferry_signal"];

/// Version 1: exactly the DDL of the releases before schema versions, targets' then
/// sources' (do not edit: a change is a new step).
const V1: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS `ferry`.`ferry_checkpoint` (task VARCHAR(191) NOT NULL, direction VARCHAR(191) NOT NULL, \
     slot VARCHAR(191) NOT NULL, position TEXT NULL, progress MEDIUMTEXT NULL, updated_us BIGINT NOT NULL, \
     PRIMARY KEY (task, direction, slot)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
    "CREATE TABLE IF NOT EXISTS `ferry`.`ferry_conflict` (id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY, task VARCHAR(191) NOT NULL, \
     direction VARCHAR(191) NOT NULL, tbl VARCHAR(191) NOT NULL, pk TEXT NOT NULL, policy VARCHAR(191) NOT NULL, \
     winner VARCHAR(191) NOT NULL, incoming_site VARCHAR(191) NOT NULL, incoming_ts BIGINT NOT NULL, \
     incoming_row MEDIUMTEXT NULL, local_site VARCHAR(191) NOT NULL, local_ts BIGINT NOT NULL, \
     local_row MEDIUMTEXT NULL, position TEXT NOT NULL, detected_us BIGINT NOT NULL) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
    "CREATE TABLE IF NOT EXISTS `ferry`.`ferry_lease` (task VARCHAR(191) NOT NULL, direction VARCHAR(191) NOT NULL, \
     node VARCHAR(191) NOT NULL, host VARCHAR(191) NOT NULL, pid BIGINT NOT NULL, expires_us BIGINT NOT NULL, \
     PRIMARY KEY (task, direction)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
    "CREATE TABLE IF NOT EXISTS `ferry`.`ferry_heartbeat` (site VARCHAR(191) NOT NULL PRIMARY KEY, ts BIGINT NOT NULL) \
     ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
    "CREATE TABLE IF NOT EXISTS `ferry`.`ferry_signal` (id VARCHAR(191) NOT NULL PRIMARY KEY, mark VARCHAR(191) NOT NULL, \
     ts BIGINT NOT NULL) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
];

/// Version 3: the indexes of tables ferry created that wait for the table's copy (see
/// `deferred.rs`).
const V3: &[&str] =
    &["CREATE TABLE IF NOT EXISTS `ferry`.`ferry_deferred_index` (db VARCHAR(64) NOT NULL, tbl VARCHAR(64) NOT NULL, \
     name VARCHAR(64) NOT NULL, seq INT NOT NULL, definition TEXT NOT NULL, created_us BIGINT NOT NULL, \
     PRIMARY KEY (db, tbl, name)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"];

/// Reads the schema version of the `ferry` database (inferring 1 for a release before versions).
pub async fn found_version(ep: &MysqlEndpoint, conn: &mut Conn) -> Result<Found, ConnectorError> {
    let what = "reading ferry's schema version (ferry.ferry_schema)";
    let names: Vec<String> = conn
        .exec("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = ?", (FERRY_DB,))
        .await
        .map_err(ep.error(what))?;
    let recorded = if names.iter().any(|n| n == "ferry_schema") {
        conn.exec_first("SELECT version FROM `ferry`.`ferry_schema` WHERE component = ?", (COMPONENT,))
            .await
            .map_err(ep.error(what))?
    } else {
        None
    };
    Ok(Found::judge(&names, recorded, &V1_TABLES))
}

/// The refusal of a server whose ferry tables are newer than this binary.
pub fn newer_schema(ep: &MysqlEndpoint, found: i64) -> ConnectorError {
    ConnectorError::Setup {
        endpoint: ep.name.clone(),
        problem: format!(
            "ferry's tables in the `{FERRY_DB}` database on {} are at schema version {found}, but this ferry knows versions up to {LATEST}: a newer ferry release has upgraded them",
            ep.display
        ),
        fix: format!("upgrade ferry on every node to a release that knows schema version {found}"),
    }
}

/// Brings the `ferry` database to [`LATEST`], creating it on a new server; refuses a
/// newer schema. Idempotent, and safe when several processes start at once.
pub async fn run(ep: &MysqlEndpoint, conn: &mut Conn) -> Result<(), ConnectorError> {
    let got: Option<i64> = conn
        .exec_first("SELECT GET_LOCK(?, ?)", (LOCK, LOCK_WAIT_S))
        .await
        .map_err(ep.error("taking ferry's schema lock"))?;
    if got != Some(1) {
        let holder: Option<Option<u64>> = conn
            .exec_first("SELECT IS_USED_LOCK(?)", (LOCK,))
            .await
            .map_err(ep.error("reading ferry's schema lock"))?;
        let holder = holder.flatten().map_or_else(|| "another session".to_string(), |id| format!("session {id}"));
        return Err(ConnectorError::Setup {
            endpoint: ep.name.clone(),
            problem: format!(
                "{holder} has held ferry's schema lock (GET_LOCK('{LOCK}')) for over {LOCK_WAIT_S} s: another ferry is upgrading ferry's tables, or is stuck doing so"
            ),
            fix: "wait for the other ferry to start; if its session is stuck (SHOW PROCESSLIST), end it with KILL and start again".into(),
        });
    }
    let result = upgrade(ep, conn).await;
    // Also released when the session ends; an error here changes nothing.
    let _ = conn.exec_drop("SELECT RELEASE_LOCK(?)", (LOCK,)).await;
    result
}

/// The work of [`run`], under its lock.
async fn upgrade(ep: &MysqlEndpoint, conn: &mut Conn) -> Result<(), ConnectorError> {
    let found = found_version(ep, conn).await?;
    if found.version > LATEST {
        return Err(newer_schema(ep, found.version));
    }
    if found.recorded && found.version == LATEST {
        return Ok(());
    }
    if !found.recorded && found.version == 1 {
        info!(endpoint = %ep.name, "ferry's tables of a release before schema versions found: taking them as version 1");
    }
    let create = "creating ferry's database and its schema version record";
    let db = format!("CREATE DATABASE IF NOT EXISTS {} CHARACTER SET utf8mb4", ident(FERRY_DB));
    ep.exec(conn, create, &db).await.map_err(|e| privileges(ep, e))?;
    ep.exec(conn, create, SCHEMA_TABLE).await.map_err(|e| privileges(ep, e))?;
    // Unrecorded, version 1 runs too: it only creates what is missing (a source lacked
    // the target's tables and the other way round).
    let from = if found.recorded { found.version } else { 0 };
    for m in MIGRATIONS.iter().filter(|m| m.version > from) {
        if found.version > 0 && m.version > found.version {
            info!(endpoint = %ep.name, version = m.version, step = m.what, "upgrading ferry's tables");
        }
        apply(ep, conn, m).await.map_err(|e| privileges(ep, e))?;
        record(ep, conn, m.version).await?;
    }
    Ok(())
}

/// Runs one step.
async fn apply(ep: &MysqlEndpoint, conn: &mut Conn, m: &Migration) -> Result<(), ConnectorError> {
    let what = format!("upgrading ferry's tables to schema version {}: {}", m.version, m.what);
    match m.change {
        Change::Statements(statements) => {
            for sql in statements {
                ep.exec(conn, &what, sql).await?;
            }
        }
        Change::AddColumn { table, column, definition } => {
            let have: Option<i64> = conn
                .exec_first(
                    "SELECT COUNT(*) FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND COLUMN_NAME = ?",
                    (FERRY_DB, table, column),
                )
                .await
                .map_err(ep.error(what.clone()))?;
            if have.unwrap_or(0) == 0 {
                let sql = format!(
                    "ALTER TABLE {}.{} ADD COLUMN {} {definition}",
                    ident(FERRY_DB),
                    ident(table),
                    ident(column)
                );
                ep.exec(conn, &what, &sql).await?;
            }
        }
    }
    Ok(())
}

/// Records the version reached.
async fn record(ep: &MysqlEndpoint, conn: &mut Conn, version: i64) -> Result<(), ConnectorError> {
    conn.exec_drop(
        "INSERT INTO `ferry`.`ferry_schema` (component, version, updated_us) VALUES (?, ?, ?) \
         ON DUPLICATE KEY UPDATE version = VALUES(version), updated_us = VALUES(updated_us)",
        (COMPONENT, version, now_micros()),
    )
    .await
    .map_err(ep.error("recording ferry's schema version"))
}

/// A privilege refusal during an upgrade, turned into the grant that fixes it.
fn privileges(ep: &MysqlEndpoint, e: ConnectorError) -> ConnectorError {
    match &e {
        ConnectorError::Mysql { what, source, .. } => match source.as_ref() {
            mysql_async::Error::Server(s) if matches!(s.code, 1044 | 1142) => ConnectorError::Setup {
                endpoint: ep.name.clone(),
                problem: format!("{what}: ferry's account may not change its own tables: {}", s.message),
                fix: format!(
                    "GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, ALTER ON {}.* TO ferry's account",
                    ident(FERRY_DB)
                ),
            },
            _ => e,
        },
        _ => e,
    }
}
