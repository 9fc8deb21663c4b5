//! Apache Doris as a sink (`doris://USER:PASSWORD@FE_HOST:HTTP_PORT/DB?query_port=9030`,
//! `doris+https://` for TLS): each table's changes go as one Stream Load of JSON lines
//! per batch (`PUT /api/{db}/{table}/_stream_load`), upserts and deletes (the
//! `__DORIS_DELETE_SIGN__` hidden column) on a Unique Key table. Every load carries a
//! label derived from the task, the direction, the batch's first and last source
//! positions and the table, and is recorded with its data before it is sent, so a
//! batch interrupted by a crash is sent again, exactly as it was, under the same label,
//! and the server keeps it once (docs/doris.md). The checkpoint, the recorded loads and
//! the lease live in a SQLite file of the node ([`state`]).

mod connector;
mod ddl;
mod load;
mod sink;
mod state;
mod stream_load;
mod types;

use std::path::PathBuf;

pub use connector::Store;
use sha2::{Digest, Sha256};

use super::ConnectorError;
use super::endpoint::{Endpoint, mask_password, percent_decode as decode};
use crate::connector::DirectionId;

/// Which server speaks at an endpoint: the two differ only in how a load marks
/// deletes and in the table model (docs/doris.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// Apache Doris: Unique Key tables, `__DORIS_DELETE_SIGN__`.
    Doris,
    /// StarRocks: Primary Key tables, `__op` (0 upsert, 1 delete).
    StarRocks,
}

impl Flavor {
    /// The server's name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Flavor::Doris => "Doris",
            Flavor::StarRocks => "StarRocks",
        }
    }

    /// The field of a load's line that marks it a delete (1) or an upsert (0).
    pub fn op_field(self) -> &'static str {
        match self {
            Flavor::Doris => "__DORIS_DELETE_SIGN__",
            Flavor::StarRocks => "__op",
        }
    }

    /// The table model ferry writes to, as `SHOW CREATE TABLE` spells its key clause.
    pub fn model(self) -> &'static str {
        match self {
            Flavor::Doris => "UNIQUE KEY",
            Flavor::StarRocks => "PRIMARY KEY",
        }
    }

    /// The model's name, for messages.
    pub fn model_name(self) -> &'static str {
        match self {
            Flavor::Doris => "Unique Key",
            Flavor::StarRocks => "Primary Key",
        }
    }

    fn scheme(self) -> &'static str {
        match self {
            Flavor::Doris => "doris",
            Flavor::StarRocks => "starrocks",
        }
    }
}

/// A Doris endpoint: where its FE answers, how to log in, and the options of its URL.
#[derive(Debug, Clone)]
pub struct DorisEndpoint {
    /// Endpoint name.
    pub name: String,
    /// `http://host:port` or `https://host:port` of the FE's HTTP port.
    pub base: String,
    /// FE host (the query port is on it too).
    pub host: String,
    /// The database every table of the task lands in.
    pub db: String,
    /// User name.
    pub user: String,
    /// Password (from the URL, `password_env` or `password_file`).
    pub password: String,
    /// The FE's MySQL-protocol port (`?query_port=`): tables are created and checked
    /// through it; without it ferry creates none and the tables must exist.
    pub query_port: Option<u16>,
    /// A PEM file of the CA that signed the server's certificate (`?ca=`, TLS only).
    pub ca: Option<PathBuf>,
    /// The node's file of ferry's state for this endpoint (`?state=`).
    pub state: PathBuf,
    /// Sends of one load the server pushed back (5xx, no answer) before the batch
    /// fails (`?max_retries=`, default 5).
    pub max_retries: u32,
    /// The URL for messages (password masked).
    pub display: String,
    /// Doris or StarRocks (by the URL's scheme).
    pub flavor: Flavor,
}

/// What a Doris URL looks like, for messages.
pub const URL_FORM: &str = "doris://USER[:PASSWORD]@FE_HOST:HTTP_PORT/DB[?query_port=9030] (doris+https:// for TLS; starrocks:// and starrocks+https:// for StarRocks)";

fn url_fix(flavor: Flavor) -> String {
    let s = flavor.scheme();
    format!(
        "write url = \"{s}://USER@FE_HOST:8030/DB?query_port=9030\" ({s}+https:// for TLS, with ?ca=/path/ca.pem; other options: state=PATH, max_retries=N)"
    )
}

impl DorisEndpoint {
    /// The Doris endpoint of a task file's endpoint.
    pub fn of(ep: &Endpoint) -> Result<Self, ConnectorError> {
        let setup = |(problem, fix)| ConnectorError::Setup { endpoint: ep.name.clone(), problem, fix };
        let mut d = Self::parse(&ep.name, ep.url.secret_text()).map_err(setup)?;
        if let Some(p) = &ep.password {
            d.password = p.expose().to_string();
        }
        d.state = ep.url.resolve(&d.state.to_string_lossy());
        d.ca = d.ca.map(|c| ep.url.resolve(&c.to_string_lossy()));
        Ok(d)
    }

    /// Parses `doris[+https]://USER[:PASSWORD]@HOST:PORT/DB[?option=value&…]` (or
    /// `starrocks[+https]://…`): `Err((problem, fix))`. Relative paths of options stay
    /// relative here.
    pub fn parse(name: &str, url: &str) -> Result<Self, (String, String)> {
        let display = mask_password(url);
        let (scheme, rest) =
            url.split_once("://").ok_or_else(|| (format!("url {display} is not a URL"), url_fix(Flavor::Doris)))?;
        let (flavor, tls) = match scheme.to_ascii_lowercase().as_str() {
            "doris" => (Flavor::Doris, false),
            "doris+https" => (Flavor::Doris, true),
            "starrocks" => (Flavor::StarRocks, false),
            "starrocks+https" => (Flavor::StarRocks, true),
            other => {
                return Err((
                    format!("url {display}: scheme {other:?} is not Doris's or StarRocks's"),
                    url_fix(Flavor::Doris),
                ));
            }
        };
        let fix = || url_fix(flavor);
        let (main, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, db) = main.split_once('/').unwrap_or((main, ""));
        let db = db.trim_end_matches('/');
        if db.is_empty() || db.contains('/') {
            return Err((format!("url {display} names no database (…:PORT/DB)"), fix()));
        }
        let (creds, hostport) = authority
            .rsplit_once('@')
            .ok_or_else(|| (format!("url {display} names no user (USER@HOST:PORT)"), fix()))?;
        let (host, port) = hostport
            .rsplit_once(':')
            .filter(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
            .ok_or_else(|| (format!("url {display}: {hostport:?} is not HOST:PORT"), fix()))?;
        let (user, password) = match creds.split_once(':') {
            Some((u, p)) => (decode(u), decode(p)),
            None => (decode(creds), String::new()),
        };
        if user.is_empty() {
            return Err((format!("url {display} names no user"), fix()));
        }
        let mut d = DorisEndpoint {
            name: name.to_string(),
            base: format!("{}://{host}:{port}", if tls { "https" } else { "http" }),
            host: host.to_string(),
            db: decode(db),
            user,
            password,
            query_port: None,
            ca: None,
            state: PathBuf::from(format!("ferry-doris-{name}.db")),
            max_retries: 5,
            display: display.clone(),
            flavor,
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let bad = || (format!("url {display}: option {k}={v:?} is not valid"), fix());
            match k {
                "query_port" => d.query_port = Some(v.parse().map_err(|_| bad())?),
                "ca" if tls && !v.is_empty() => d.ca = Some(PathBuf::from(decode(v))),
                "ca" => {
                    return Err((
                        format!("url {display}: ?ca= is for TLS"),
                        format!("use {}+https:// for a TLS connection, or drop ?ca=", flavor.scheme()),
                    ));
                }
                "state" if !v.is_empty() => d.state = PathBuf::from(decode(v)),
                "max_retries" => d.max_retries = v.parse().map_err(|_| bad())?,
                _ => return Err((format!("url {display}: unknown option {k:?}"), fix())),
            }
        }
        Ok(d)
    }
}

/// The label of one table's load of a batch: the same task, direction, range and table
/// give the same label, so the server deduplicates a load sent again. Doris takes
/// `[A-Za-z0-9_-:]`, at most 128 characters: a readable prefix and a SHA-256 digest.
pub fn label(dir: &DirectionId, first: &str, last: &str, table: &str) -> String {
    let mut h = Sha256::new();
    for part in [dir.task.as_str(), &dir.direction(), first, last, table] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    let digest = h.finalize();
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    let task: String = dir
        .task
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
        .take(48)
        .collect();
    format!("ferry_{task}_{hex}")
}

/// The SHA-256 of a load's data, recorded with its label: a label recorded for other
/// data than what is sent under it is refused.
pub fn digest(data: &[u8]) -> String {
    Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_the_fe_database_credentials_and_options() {
        let d = DorisEndpoint::parse("d", "doris+https://ro%40ot:p%3Aw@fe:8030/shop?query_port=9030&ca=ca.pem")
            .expect("url");
        assert_eq!((d.base.as_str(), d.db.as_str(), d.query_port), ("https://fe:8030", "shop", Some(9030)));
        assert_eq!((d.user.as_str(), d.password.as_str()), ("ro@ot", "p:w"));
        assert_eq!(d.ca, Some(PathBuf::from("ca.pem")));
        assert!(!d.display.contains("p%3Aw"), "password masked: {}", d.display);
        assert_eq!(DorisEndpoint::parse("d", "doris://u@h:1/db").expect("plain").base, "http://h:1");
        assert!(DorisEndpoint::parse("d", "doris://u@h:1").is_err(), "no database");
        assert!(DorisEndpoint::parse("d", "doris://h:1/db").is_err(), "no user");
        assert!(DorisEndpoint::parse("d", "doris://u@h:1/db?ca=x").is_err(), "a CA without TLS");
        assert!(DorisEndpoint::parse("d", "doris://u@h:1/db?nope=1").is_err(), "unknown option");
        assert_eq!(d.flavor, Flavor::Doris);
        let s = DorisEndpoint::parse("s", "starrocks+https://u@fe:8030/shop").expect("starrocks");
        assert_eq!((s.flavor, s.base.as_str()), (Flavor::StarRocks, "https://fe:8030"));
        assert_eq!(DorisEndpoint::parse("s", "starrocks://u@h:1/db").expect("plain").flavor, Flavor::StarRocks);
    }

    #[test]
    fn labels_follow_task_direction_range_and_table_only() {
        let dir = DirectionId { task: "shop orders".into(), from: "a".into(), to: "d".into() };
        let l = label(&dir, "mysql:b.1:4", "mysql:b.1:90", "items");
        assert_eq!(l, label(&dir, "mysql:b.1:4", "mysql:b.1:90", "items"), "stable");
        assert_ne!(l, label(&dir, "mysql:b.1:4", "mysql:b.1:91", "items"));
        assert_ne!(l, label(&dir, "mysql:b.1:4", "mysql:b.1:90", "other"));
        assert!(l.starts_with("ferry_shop_orders_") && l.len() <= 128);
        assert!(l.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'));
    }
}
