//! MySQL/MariaDB: binlog CDC over the replication protocol, watermark snapshot, batched
//! idempotent apply with the checkpoint in the same transaction, checksums, freeze.
//! One driver for all of it: mysql_async (exact values: decimals and zero dates as
//! strings, UTC sessions).
//!
//! ferry's own tables live in a `ferry` database on each server: `ferry_heartbeat` and
//! `ferry_signal` (snapshot watermarks) on sources; `ferry_checkpoint`, `ferry_conflict`
//! and `ferry_lease` on targets.

pub mod apply;
pub mod binlog;
pub mod check;
pub mod checksum;
pub mod conflict;
pub mod ddl;
pub mod freeze;
pub mod parallel;
pub mod revoke;
pub mod schema;
pub mod snapshot;
pub mod source;
pub mod state;
pub mod values;
pub mod versions;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder};

use crate::connector::ConnectorError;
use crate::model::SiteId;

/// The database holding ferry's own tables on a MySQL/MariaDB server.
pub const FERRY_DB: &str = "ferry";

/// One MySQL/MariaDB endpoint of the task file.
#[derive(Debug, Clone)]
pub struct MysqlEndpoint {
    /// Endpoint name.
    pub name: String,
    /// Its site.
    pub site: SiteId,
    /// Connection options parsed from the URL (the password never leaves them).
    pub opts: Opts,
    /// The URL with the password masked, for messages.
    pub display: String,
}

impl MysqlEndpoint {
    /// Parses a `mysql://user:password@host:port[/db]` URL; a bad URL is a setup error.
    pub fn new(name: &str, site: SiteId, url: &str) -> Result<Self, ConnectorError> {
        let display = crate::config::mask_password(url);
        let url = url.replacen("mariadb://", "mysql://", 1);
        let opts = Opts::from_url(&url).map_err(|e| ConnectorError::Setup {
            endpoint: name.to_string(),
            problem: format!("url {display} is not a valid MySQL URL: {e}"),
            fix: "write url = \"mysql://USER:PASSWORD@HOST:PORT\" (the database part is optional)".into(),
        })?;
        Ok(MysqlEndpoint { name: name.to_string(), site, opts, display })
    }

    /// Opens a session set up the way every ferry session must be: UTC, utf8mb4, strict
    /// SQL mode that keeps zero dates (they are data to carry, not errors).
    pub async fn connect(&self) -> Result<Conn, ConnectorError> {
        let opts = OptsBuilder::from_opts(self.opts.clone()).prefer_socket(false).init(vec![
            "SET time_zone = '+00:00'",
            "SET NAMES utf8mb4",
            "SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_AUTO_VALUE_ON_ZERO,NO_ENGINE_SUBSTITUTION'",
        ]);
        Conn::new(opts).await.map_err(|e| self.error("connecting")(e))
    }

    /// Wraps a driver error with this endpoint and what ferry was doing.
    pub fn error(&self, what: impl Into<String>) -> impl FnOnce(mysql_async::Error) -> ConnectorError + '_ {
        let what = what.into();
        move |source| ConnectorError::Mysql { endpoint: self.name.clone(), what, source: Box::new(source) }
    }

    /// Runs a statement without results.
    pub async fn exec(&self, conn: &mut Conn, what: &str, sql: &str) -> Result<(), ConnectorError> {
        conn.query_drop(sql).await.map_err(self.error(what))
    }
}

/// A deadlock or lock wait timeout: the transaction lost a lock race and is worth
/// running again (not a refusal of its data).
pub fn lock_conflict(e: &mysql_async::Error) -> bool {
    matches!(e, mysql_async::Error::Server(s) if matches!(s.code, 1205 | 1213))
}

/// Quotes an identifier for MySQL.
pub fn ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}
