//! Elasticsearch and OpenSearch as sinks (`elasticsearch://host:9200`,
//! `opensearch://host:9200`, `+https` for TLS): one index per table (the task's `index`
//! template), the primary key as document id, `_bulk` requests sized by bytes, and
//! external versions that only grow for a task ([`version`]), so a replayed batch never
//! overwrites a newer document: an exactly-once effect without transactions
//! (docs/search.md). The checkpoint and the lease live in the `.ferry-checkpoints` index.

mod bulk;
mod connector;
mod document;
mod http;
mod mapping;
mod sink;
mod state;
mod verifier;
mod version;

pub use connector::Store;

use super::ConnectorError;
use super::endpoint::{Endpoint, mask_password, percent_decode as decode};
use crate::model::TableName;

/// ferry's own index: checkpoints, leases and refusal marks, one document each.
pub const STATE_INDEX: &str = ".ferry-checkpoints";

/// How text columns that are not keys are indexed (`?strings=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strings {
    /// Analysed full text with an exact `keyword` sub-field (ES's own default).
    Text,
    /// Exact values only.
    Keyword,
}

/// A search endpoint: where it is, how to log in, and the sink's options from the URL.
#[derive(Debug, Clone)]
pub struct SearchEndpoint {
    /// Endpoint name.
    pub name: String,
    /// `http://host:port` or `https://host:port`.
    pub base: String,
    /// User name, if any.
    pub user: Option<String>,
    /// Password (from the URL, `password_env` or `password_file`).
    pub password: Option<String>,
    /// `index.gc_deletes` of the indexes ferry creates (`?gc_deletes=`, default 7d).
    pub gc_deletes: String,
    /// How non-key text is indexed (`?strings=text|keyword`, default text).
    pub strings: Strings,
    /// Bytes of one `_bulk` request body at most (`?bulk_bytes=`, default 5 MiB).
    pub bulk_bytes: usize,
    /// Retries of a document the server pushed back (429) before the batch fails
    /// (`?max_retries=`, default 8; backoff 100 ms doubling up to 5 s).
    pub max_retries: u32,
    /// The URL for messages (password masked).
    pub display: String,
}

impl SearchEndpoint {
    /// The search endpoint of a task file's endpoint.
    pub fn of(ep: &Endpoint) -> Result<Self, ConnectorError> {
        let mut s = Self::parse(&ep.name, ep.url.secret_text()).map_err(|(problem, fix)| ConnectorError::Setup {
            endpoint: ep.name.clone(),
            problem,
            fix,
        })?;
        if let Some(p) = &ep.password {
            s.password = Some(p.expose().to_string());
        }
        Ok(s)
    }

    /// Parses `SCHEME://[USER[:PASSWORD]@]HOST:PORT[?option=value&…]`: `Err((problem, fix))`.
    pub fn parse(name: &str, url: &str) -> Result<Self, (String, String)> {
        let display = mask_password(url);
        let fix = || {
            "write url = \"opensearch://[USER@]HOST:PORT\" (or elasticsearch://, and +https for TLS; options: ?gc_deletes=7d&strings=text|keyword&bulk_bytes=N&max_retries=N)".to_string()
        };
        let (scheme, rest) = url.split_once("://").ok_or_else(|| (format!("url {display} is not a URL"), fix()))?;
        let tls = match scheme.to_ascii_lowercase().as_str() {
            "elasticsearch" | "opensearch" => false,
            "elasticsearch+https" | "opensearch+https" => true,
            other => return Err((format!("url {display}: scheme {other:?} is not a search store's"), fix())),
        };
        let (authority, query) = rest.split_once('?').unwrap_or((rest, ""));
        let authority = authority.trim_end_matches('/');
        if authority.contains('/') {
            return Err((format!("url {display} has a path; indexes come from the task's `index` template"), fix()));
        }
        let (creds, host) = match authority.rsplit_once('@') {
            Some((c, h)) => (Some(c), h),
            None => (None, authority),
        };
        let ok = host.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
        if !ok {
            return Err((format!("url {display}: {host:?} is not HOST:PORT"), fix()));
        }
        let (user, password) = match creds {
            Some(c) => match c.split_once(':') {
                Some((u, p)) => (Some(decode(u)), Some(decode(p))),
                None => (Some(decode(c)), None),
            },
            None => (None, None),
        };
        let mut ep = SearchEndpoint {
            name: name.to_string(),
            base: format!("{}://{host}", if tls { "https" } else { "http" }),
            user,
            password,
            gc_deletes: "7d".into(),
            strings: Strings::Text,
            bulk_bytes: 5 * 1024 * 1024,
            max_retries: 8,
            display: display.clone(),
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let bad = || (format!("url {display}: option {k}={v:?} is not valid"), fix());
            match k {
                "gc_deletes" => {
                    let digits = v.trim_end_matches(|c: char| c.is_ascii_alphabetic());
                    let unit = &v[digits.len()..];
                    if digits.is_empty()
                        || digits.parse::<u64>().is_err()
                        || !matches!(unit, "ms" | "s" | "m" | "h" | "d")
                    {
                        return Err(bad());
                    }
                    ep.gc_deletes = v.to_string();
                }
                "strings" => {
                    ep.strings = match v {
                        "text" => Strings::Text,
                        "keyword" => Strings::Keyword,
                        _ => return Err(bad()),
                    }
                }
                "bulk_bytes" => ep.bulk_bytes = v.parse().ok().filter(|n| *n >= 1024).ok_or_else(bad)?,
                "max_retries" => ep.max_retries = v.parse().map_err(|_| bad())?,
                _ => return Err((format!("url {display}: unknown option {k:?}"), fix())),
            }
        }
        Ok(ep)
    }
}

/// The `{db}` of a table: its database or schema, `main` for SQLite.
pub fn db_of(name: &TableName) -> &str {
    name.schema.as_deref().unwrap_or("main")
}

/// The index of a table from the task's template (`{db}_{table}`), in lower case
/// (Elasticsearch and OpenSearch accept no upper-case index names).
pub fn index_of(template: &str, name: &TableName) -> String {
    template.replace("{db}", db_of(name)).replace("{table}", &name.name).to_lowercase()
}

/// Why an index name is not one the server accepts, if it is not.
pub fn invalid_index(index: &str) -> Option<String> {
    if index.is_empty() || index.len() > 255 {
        return Some(format!("index name {index:?} must be 1 to 255 bytes long"));
    }
    if index == "." || index == ".." || index.starts_with(['-', '_', '+', '.']) {
        return Some(format!("index name {index:?} may not be . or .. nor start with -, _, + or ."));
    }
    index
        .chars()
        .find(|c| matches!(c, '\\' | '/' | '*' | '?' | '"' | '<' | '>' | '|' | ' ' | ',' | '#' | ':'))
        .map(|c| format!("index name {index:?} holds {c:?}, which index names may not"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_the_server_credentials_and_options() {
        let ep = SearchEndpoint::parse("s", "opensearch+https://el%40stic:p%3Aw@h:9200?gc_deletes=2s&strings=keyword")
            .expect("url");
        assert_eq!(ep.base, "https://h:9200");
        assert_eq!((ep.user.as_deref(), ep.password.as_deref()), (Some("el@stic"), Some("p:w")));
        assert_eq!((ep.gc_deletes.as_str(), ep.strings), ("2s", Strings::Keyword));
        assert!(!ep.display.contains("p%3Aw"), "password masked: {}", ep.display);
        assert_eq!(SearchEndpoint::parse("s", "elasticsearch://h:1").expect("plain").base, "http://h:1");
        assert!(SearchEndpoint::parse("s", "opensearch://h").is_err(), "no port");
        assert!(SearchEndpoint::parse("s", "opensearch://h:1/idx").is_err(), "a path");
        assert!(SearchEndpoint::parse("s", "opensearch://h:1?gc_deletes=soon").is_err(), "bad duration");
        assert!(SearchEndpoint::parse("s", "opensearch://h:1?nope=1").is_err(), "unknown option");
    }

    #[test]
    fn index_names_follow_the_template_in_lower_case() {
        let t = TableName { schema: Some("Shop".into()), name: "Orders".into() };
        assert_eq!(index_of("{db}_{table}", &t), "shop_orders");
        assert_eq!(index_of("x-{table}", &TableName::bare("t")), "x-t");
        assert!(invalid_index("a b").is_some() && invalid_index("_x").is_some() && invalid_index("ok-1").is_none());
    }
}
