//! PostgreSQL: logical-replication CDC (the pgoutput plugin over the streaming
//! replication protocol, our own decoder), DBLog watermark snapshot, batched idempotent
//! apply with the checkpoint in the same transaction.
//!
//! Queries go through sqlx (runtime-checked statements only); the change stream through
//! `pgwire-replication`. Every session runs with `TimeZone=UTC`, `extra_float_digits=3`,
//! ISO dates and hex bytea, so values read as text are exact and zone-free.
//!
//! ferry's own tables live in a `ferry` schema on each server: sources use
//! `ferry_heartbeat` and `ferry_signal` (snapshot watermarks, both in the direction's
//! publication), targets `ferry_checkpoint`, `ferry_conflict` and `ferry_lease`.
//! `migrate` creates them and moves them forward (schema version in `ferry_schema`).
//! Each source direction owns a replication slot and a publication named after it
//! (`names`). Two-way adds row versions (`versions`: a version table and a trigger per
//! table) and judged apply (`conflict`); loops are cut by replication origins.

pub mod arrays;
pub mod check;
pub mod conflict;
pub mod connector;
pub mod copy;
pub mod copy_binary;
pub mod ddl;
pub mod decoder;
pub mod deferred;
pub mod export;
pub mod freezer;
pub mod handover;
pub mod migrate;
pub mod names;
pub mod parallel;
pub mod position;
pub mod schema;
pub mod sink;
pub mod slot;
pub mod source;
pub mod state;
pub mod tls;
pub mod types;
pub mod uninstall;
pub mod values;
pub mod verifier;
pub mod versions;

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection};

pub use connector::Store;

use crate::connector::endpoint::{Endpoint, Secret, mask_password};
use crate::connector::{ConnectorError, ErrorKind};
use crate::model::SiteId;

/// The schema holding ferry's own tables on a PostgreSQL server.
pub const FERRY_SCHEMA: &str = "ferry";

/// One PostgreSQL endpoint of the task file.
#[derive(Debug, Clone)]
pub struct PgEndpoint {
    /// Endpoint name.
    pub name: String,
    /// Its site.
    pub site: SiteId,
    /// Host (or socket directory).
    pub host: String,
    /// Port.
    pub port: u16,
    /// Account.
    pub user: String,
    /// Password ("" for none); never printed.
    password: Secret,
    /// Database.
    pub database: String,
    /// The URL with the password masked, for messages.
    pub display: String,
    /// TLS (`sslmode`, `sslrootcert`).
    pub tls: tls::PgTls,
}

impl PgEndpoint {
    /// The PostgreSQL endpoint of a task file's endpoint; a `password_env`/`password_file`
    /// password replaces one in the URL.
    pub fn of(ep: &Endpoint) -> Result<Self, ConnectorError> {
        let mut p = PgEndpoint::new(&ep.name, ep.site.clone(), ep.url.secret_text())?;
        if let Some(password) = &ep.password {
            p.password = password.clone();
        }
        // A relative sslrootcert is the task file's folder's.
        p.tls = tls::parse(ep.url.secret_text(), |f| ep.url.resolve(f)).map_err(|e| p.tls_error(e))?;
        Ok(p)
    }

    fn tls_error(&self, e: tls::TlsUrlError) -> ConnectorError {
        ConnectorError::Setup {
            endpoint: self.name.clone(),
            problem: format!("url {}: {}", self.display, e.problem),
            fix: e.fix,
        }
    }

    /// Parses `postgres://user:password@host:port/db`; a bad URL is a setup error.
    pub fn new(name: &str, site: SiteId, url: &str) -> Result<Self, ConnectorError> {
        let display = mask_password(url);
        let bad = |why: String| ConnectorError::Setup {
            endpoint: name.to_string(),
            problem: format!("url {display} is not a valid PostgreSQL URL: {why}"),
            fix: "write url = \"postgres://USER:PASSWORD@HOST:PORT/DATABASE\"".into(),
        };
        let tls = tls::parse(url, tls::as_written).map_err(|e| ConnectorError::Setup {
            endpoint: name.to_string(),
            problem: format!("url {display}: {}", e.problem),
            fix: e.fix,
        })?;
        let opts: PgConnectOptions = tls::strip(url).parse().map_err(|e: sqlx::Error| bad(e.to_string()))?;
        let database = opts.get_database().map(str::to_string).unwrap_or_else(|| opts.get_username().to_string());
        // The password is not readable back from the options: take it from the URL.
        let password = url
            .split_once("://")
            .and_then(|(_, rest)| rest.rsplit_once('@'))
            .and_then(|(auth, _)| auth.split_once(':'))
            .map(|(_, pw)| percent_decode(pw))
            .unwrap_or_default();
        Ok(PgEndpoint {
            name: name.to_string(),
            site,
            host: opts.get_host().to_string(),
            port: opts.get_port(),
            user: opts.get_username().to_string(),
            password: Secret::new(password),
            database,
            display,
            tls,
        })
    }

    /// The password, for the replication session's login.
    pub(crate) fn password(&self) -> &str {
        self.password.expose()
    }

    /// Connect options with ferry's session settings.
    pub fn options(&self) -> PgConnectOptions {
        // sqlx checks certificates with rustls's process-wide provider.
        crate::connector::tls_provider();
        let mut o = PgConnectOptions::new()
            .host(&self.host)
            .port(self.port)
            .username(&self.user)
            .database(&self.database)
            .application_name("ferry")
            .options([
                ("TimeZone", "UTC"),
                ("extra_float_digits", "3"),
                ("DateStyle", "ISO, YMD"),
                ("IntervalStyle", "postgres"),
                ("bytea_output", "hex"),
            ])
            .disable_statement_logging()
            .ssl_mode(self.tls.sqlx_mode());
        if let Some(ca) = &self.tls.root_cert {
            o = o.ssl_root_cert(ca);
        }
        if !self.password.expose().is_empty() {
            o = o.password(self.password.expose());
        }
        o
    }

    /// A replication session's settings for `slot` and `publication`, with ferry's
    /// session settings (UTC, exact floats, ISO dates, hex bytea).
    pub(crate) fn replication_config(
        &self,
        slot: String,
        publication: String,
    ) -> pgwire_replication::ReplicationConfig {
        pgwire_replication::ReplicationConfig::new(
            self.host.clone(),
            self.user.clone(),
            self.password().to_string(),
            self.database.clone(),
            slot,
            publication,
        )
        .with_port(self.port)
        .with_tls(self.tls.replication(&self.host))
        .with_options("-c timezone=UTC -c extra_float_digits=3 -c DateStyle=ISO,YMD -c bytea_output=hex -c IntervalStyle=postgres")
    }

    /// Opens a session set up the way every ferry session must be.
    pub async fn connect(&self) -> Result<PgConnection, ConnectorError> {
        PgConnection::connect_with(&self.options()).await.map_err(|source| match sqlstate(&source) {
            // Starting up or shutting down (a restart): a passing state, retried.
            Some(code) if code.starts_with("57P") => ConnectorError::Postgres {
                endpoint: self.name.clone(),
                what: format!("connecting to {}", self.display),
                source,
            },
            _ => ConnectorError::Open {
                endpoint: self.name.clone(),
                target: self.display.clone(),
                fix: "check that the server runs and the url's host, port, user, password and database are right"
                    .into(),
                source,
            },
        })
    }

    /// Wraps a driver error with this endpoint and what ferry was doing.
    pub fn error(&self, what: impl Into<String>) -> impl FnOnce(sqlx::Error) -> ConnectorError + '_ {
        let what = what.into();
        move |source| ConnectorError::Postgres { endpoint: self.name.clone(), what, source }
    }

    /// Runs statements without results (simple protocol: several may be `;`-separated).
    pub async fn exec(&self, conn: &mut PgConnection, what: &str, sql: &str) -> Result<(), ConnectorError> {
        use sqlx::Executor;
        conn.execute(sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))).await.map(|_| ()).map_err(self.error(what))
    }
}

/// Decodes `%XX` escapes of a URL part.
pub(crate) fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The SQLSTATE of a server error, if it is one.
pub fn sqlstate(e: &sqlx::Error) -> Option<String> {
    match e {
        sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
        _ => None,
    }
}

/// What a PostgreSQL error calls for: integrity and data errors (class 22, 23) refuse
/// the row; access, undefined objects and syntax (28, 42, 3D, 3F) need a human; the rest
/// (connection, resources, serialization, read-only during a freeze, shutdown) is retried.
pub fn error_kind(e: &sqlx::Error) -> ErrorKind {
    match sqlstate(e).as_deref().map(|c| &c[..2.min(c.len())]) {
        Some("22" | "23") => ErrorKind::Refused,
        Some("28" | "42" | "3D" | "3F") => ErrorKind::Setup,
        _ => match e {
            sqlx::Error::Configuration(_) | sqlx::Error::Tls(_) => ErrorKind::Setup,
            _ => ErrorKind::Runtime,
        },
    }
}

/// Quotes an identifier for PostgreSQL.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A PostgreSQL string literal (standard_conforming_strings: only quotes are doubled).
pub fn string_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// `"schema"."table"` of a table name (bare names are in `public`).
pub fn qualified(name: &crate::model::TableName) -> String {
    format!("{}.{}", ident(name.schema.as_deref().unwrap_or("public")), ident(&name.name))
}

/// A ferry table, `"ferry"."name"`.
pub fn ferry_table(name: &str) -> String {
    format!("{}.{}", ident(FERRY_SCHEMA), ident(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_and_hide_their_password() {
        let ep = PgEndpoint::new("a", SiteId::new("a"), "postgres://u:p%40ss@127.0.0.1:5441/db").expect("url");
        assert_eq!((ep.host.as_str(), ep.port, ep.user.as_str(), ep.database.as_str()), ("127.0.0.1", 5441, "u", "db"));
        assert_eq!(ep.password(), "p@ss");
        assert!(!ep.display.contains("p%40ss"));
        assert!(!format!("{ep:?}").contains("p@ss"));
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
    }
}
