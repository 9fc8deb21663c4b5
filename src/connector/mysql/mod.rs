//! MySQL/MariaDB: binlog CDC over the replication protocol, watermark snapshot, batched
//! idempotent apply with the checkpoint in the same transaction, checksums, freeze.
//! One driver for all of it: mysql_async (exact values: decimals and zero dates as
//! strings, UTC sessions).
//!
//! ferry's own tables live in a `ferry` database on each server: sources use
//! `ferry_heartbeat` and `ferry_signal` (snapshot watermarks), targets `ferry_checkpoint`,
//! `ferry_conflict` and `ferry_lease`. `migrate` creates them and moves them forward
//! (schema version in `ferry_schema`).

pub mod apply;
pub mod binlog;
pub mod check;
pub mod checksum;
pub mod conflict;
pub mod connector;
pub mod ddl;
pub mod deferred;
pub mod freeze;
pub mod freezer;
pub mod load;
pub mod migrate;
pub mod names;
pub mod parallel;
pub mod position;
pub mod preflight;
pub mod revoke;
pub mod schema;
pub mod server_id;
pub mod sink;
pub mod snapshot;
pub mod source;
pub mod state;
pub mod tls;
pub mod types;
pub mod uninstall;
pub mod values;
pub mod verifier;
pub mod versions;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder};

pub use connector::Store;

use crate::connector::endpoint::{Endpoint, mask_password};
use crate::connector::{ConnectorError, ErrorKind};
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
    /// The MySQL endpoint of a task file's endpoint; a `password_env`/`password_file`
    /// password replaces one in the URL.
    pub fn of(ep: &Endpoint) -> Result<Self, ConnectorError> {
        let mut m = MysqlEndpoint::new(&ep.name, ep.site.clone(), ep.url.secret_text())?;
        if let Some(password) = &ep.password {
            m.opts = OptsBuilder::from_opts(m.opts).pass(Some(password.expose())).into();
        }
        Ok(m)
    }

    /// Parses a `mysql://user:password@host:port[/db]` URL; a bad URL is a setup error.
    pub fn new(name: &str, site: SiteId, url: &str) -> Result<Self, ConnectorError> {
        let display = mask_password(url);
        let url = url.replacen("mariadb://", "mysql://", 1);
        let (url, tls) = tls::split(&url).map_err(|e| ConnectorError::Setup {
            endpoint: name.to_string(),
            problem: format!("url {display}: {}", e.problem),
            fix: e.fix,
        })?;
        let mut opts = Opts::from_url(&url).map_err(|e| ConnectorError::Setup {
            endpoint: name.to_string(),
            problem: format!("url {display} is not a valid MySQL URL: {e}"),
            fix: "write url = \"mysql://USER:PASSWORD@HOST:PORT\" (the database part is optional; TLS: ?ssl-mode=required|verify-ca|verify-identity&ssl-ca=/path/ca.pem)".into(),
        })?;
        // The driver's own TLS parameters (require_ssl=true) need it too.
        crate::connector::tls_provider();
        if tls.is_some() {
            opts = OptsBuilder::from_opts(opts).ssl_opts(tls).into();
        }
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

/// Server errors that refuse a row's data: duplicates on a unique key (1022, 1062, 1169, 1586),
/// NULL or missing values (1048, 1263, 1364, 1171), values out of range or not fitting
/// the column (1264, 1265, 1292, 1300, 1366, 1367, 1406, 1411, 1690, 3140), foreign keys
/// (1216, 1217, 1451, 1452), checks (4025 MariaDB, 3819 MySQL), a row too large (1118).
const REFUSED: [u16; 25] = [
    1022, 1062, 1586, 1048, 1263, 1364, 1171, 1264, 1265, 1292, 1300, 1366, 1367, 1406, 1411, 1690, 3140, 1216, 1217,
    1451, 1452, 4025, 3819, 1118, 1169,
];

/// Server errors a human must fix in the setup: access (1044, 1045, 1142, 1143, 1227),
/// a database, table or column that is not there or not as described (1049, 1146, 1054,
/// 1136).
const SETUP: [u16; 9] = [1044, 1045, 1049, 1142, 1143, 1146, 1227, 1054, 1136];

/// Whether a server error code refuses a row's data (see [`error_kind`]).
pub fn refuses_data(code: u16) -> bool {
    REFUSED.contains(&code)
}

/// What a MySQL/MariaDB error calls for. Only the refusals of a row's data above stop
/// for a decision; resource and connection trouble (disk full 1021, table full 1114, out
/// of memory, too many connections, a lost or killed connection, read-only during a
/// freeze, lock waits and deadlocks) and anything not known to refuse data are retried
/// with backoff: retrying never loses a change, skipping does.
pub fn error_kind(e: &mysql_async::Error) -> ErrorKind {
    match e {
        mysql_async::Error::Server(s) if refuses_data(s.code) => ErrorKind::Refused,
        mysql_async::Error::Server(s) if SETUP.contains(&s.code) => ErrorKind::Setup,
        mysql_async::Error::Url(_) => ErrorKind::Setup,
        _ => ErrorKind::Runtime,
    }
}

/// Quotes an identifier for MySQL.
pub fn ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// A MySQL string literal for SQL text: backslashes doubled (the default sql_mode
/// treats them as escapes), quotes doubled.
pub fn string_literal(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(code: u16) -> mysql_async::Error {
        mysql_async::Error::Server(mysql_async::ServerError { code, message: String::new(), state: String::new() })
    }

    #[test]
    fn only_refusals_of_data_stop_for_a_decision() {
        // Duplicate on a unique index, out of range, foreign key, check: the change is named.
        for code in [1062, 1264, 1452, 1451, 4025] {
            assert_eq!(error_kind(&server(code)), ErrorKind::Refused, "{code}");
        }
        // Disk full, table full, out of memory, too many connections, lock wait,
        // deadlock, read-only, connection killed: retried, never skipped.
        for code in [1021, 1114, 1041, 1040, 1205, 1213, 1290, 1927] {
            assert_eq!(error_kind(&server(code)), ErrorKind::Runtime, "{code}");
        }
        assert_eq!(error_kind(&server(1146)), ErrorKind::Setup);
        let lost =
            mysql_async::Error::Io(mysql_async::IoError::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset)));
        assert_eq!(error_kind(&lost), ErrorKind::Runtime);
    }
}
