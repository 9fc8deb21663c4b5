//! Redis (standalone, 7.0+) as a source and a sink of items (docs/redis.md):
//! `redis://[USER[:PASSWORD]@]HOST:PORT[/DB]`, `rediss://` for TLS (`?ca=PATH`).
//!
//! The source is a replica: `PSYNC` (a full resync parses the RDB stream, then the
//! command stream), `REPLCONF ACK` with what the target committed. The sink applies each
//! batch in one `MULTI`/`EXEC` with its checkpoint. ferry's own keys start with `ferry:`
//! and are never carried as data.

mod check;
mod connector;
mod crc64;
mod freeze;
pub mod items;
mod lua;
mod position;
mod rdb;
mod rdb_value;
mod replica;
pub mod resp;
pub mod rewrite;
mod sink;
mod source;
mod stream;

use std::sync::Arc;

pub use connector::Store;
use resp::{Conn, Reply, RespError};

use super::endpoint::{Endpoint, mask_password, percent_decode};
use super::{ConnectorError, ErrorKind};
use crate::model::SiteId;

/// The prefix of every key ferry writes; keys under it are never carried or verified.
pub const OWN_PREFIX: &[u8] = b"ferry:";
/// The heartbeat key of a site: `ferry:heartbeat:<site>` holds ferry's clock (µs).
pub const HEARTBEAT_PREFIX: &str = "ferry:heartbeat:";
/// Marks an applied batch's changes as coming from a site: `ferry:mark:<site>` is set
/// first in each applied `MULTI` (and deleted in it), so readers know their origin.
pub const MARK_PREFIX: &str = "ferry:mark:";
/// Per-key versions (two-way): `ferry:v:<key>`, a hash of time (`t`, µs), site (`s`) and
/// the fingerprint (`f`) of the value they version.
pub const VERSION_PREFIX: &str = "ferry:v:";
/// The conflict log, a stream on each side of a two-way task.
pub const CONFLICTS_KEY: &str = "ferry:conflicts";
/// The freeze record of an endpoint.
pub const FREEZE_KEY: &str = "ferry:freeze";

/// A Redis endpoint as the URL gives it.
#[derive(Clone)]
pub struct RedisEndpoint {
    /// Endpoint name.
    pub name: String,
    /// Its site.
    pub site: SiteId,
    /// Host.
    pub host: String,
    /// Port.
    pub port: u16,
    /// ACL user, if any.
    pub user: Option<String>,
    /// Password, if any (the endpoint's `password_env`/`password_file` wins over the URL's).
    pub password: Option<String>,
    /// Database number.
    pub db: u32,
    /// TLS settings for `rediss://`.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// The server name TLS checks.
    pub tls_name: String,
    /// How long a deleted key's version (two-way) is kept, seconds (`?tombstone_ttl=`).
    pub tombstone_ttl: u64,
    /// The URL for messages (password masked).
    pub display: String,
}

/// What a parsed URL holds, before TLS is set up.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedUrl {
    /// `rediss`.
    pub tls: bool,
    /// Host.
    pub host: String,
    /// Port.
    pub port: u16,
    /// User.
    pub user: Option<String>,
    /// Password.
    pub password: Option<String>,
    /// Database.
    pub db: u32,
    /// CA file (`?ca=`).
    pub ca: Option<String>,
    /// Tombstone TTL (`?tombstone_ttl=`), seconds.
    pub tombstone_ttl: u64,
}

fn url_fix() -> String {
    "write url = \"redis://[USER[:PASSWORD]@]HOST:PORT[/DB]\" (or rediss://…?ca=PATH for TLS)".into()
}

/// Parses `redis[s]://[user[:password]@]host:port[/db][?ca=…&tombstone_ttl=…]`:
/// `Err((problem, fix))`.
pub fn parse_url(url: &str) -> Result<ParsedUrl, (String, String)> {
    let display = mask_password(url);
    let (scheme, rest) =
        url.split_once("://").ok_or_else(|| (format!("url {display} is not a Redis URL"), url_fix()))?;
    let tls = match scheme.to_ascii_lowercase().as_str() {
        "redis" => false,
        "rediss" => true,
        _ => return Err((format!("url {display} is not a Redis URL"), url_fix())),
    };
    let (main, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (auth, hostpart) = match main.rfind('@') {
        Some(i) => (Some(&main[..i]), &main[i + 1..]),
        None => (None, main),
    };
    let (hostport, path) = hostpart.split_once('/').unwrap_or((hostpart, ""));
    let (host, port) =
        hostport.rsplit_once(':').ok_or_else(|| (format!("url {display} names no port (HOST:PORT)"), url_fix()))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err((format!("url {display} names no host"), url_fix()));
    }
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| (format!("url {display}: port {port:?} is not a port number"), url_fix()))?;
    let db: u32 = if path.is_empty() {
        0
    } else {
        path.parse().map_err(|_| (format!("url {display}: database {path:?} is not a number"), url_fix()))?
    };
    let (user, password) = match auth {
        None => (None, None),
        Some(a) => match a.split_once(':') {
            Some((u, p)) => ((!u.is_empty()).then(|| percent_decode(u)), Some(percent_decode(p))),
            None => ((!a.is_empty()).then(|| percent_decode(a)), None),
        },
    };
    let mut parsed =
        ParsedUrl { tls, host: host.to_string(), port, user, password, db, ca: None, tombstone_ttl: 7 * 86_400 };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let bad = || (format!("url {display}: option {k}={v:?} is not valid"), url_fix());
        match k {
            "ca" if tls => parsed.ca = Some(percent_decode(v)),
            "ca" => {
                return Err((
                    format!("url {display}: ?ca= is for TLS"),
                    "use rediss:// for a TLS connection, or drop ?ca=".into(),
                ));
            }
            "tombstone_ttl" => parsed.tombstone_ttl = v.parse().ok().filter(|n| *n > 0).ok_or_else(bad)?,
            _ => return Err((format!("url {display}: unknown option {k:?}"), url_fix())),
        }
    }
    Ok(parsed)
}

impl RedisEndpoint {
    /// The Redis endpoint of a task file's endpoint.
    pub fn of(ep: &Endpoint) -> Result<Self, ConnectorError> {
        let setup =
            |(problem, fix): (String, String)| ConnectorError::Setup { endpoint: ep.name.clone(), problem, fix };
        let p = parse_url(ep.url.secret_text()).map_err(setup)?;
        let tls = if p.tls {
            crate::connector::tls_provider();
            let mut roots = rustls::RootCertStore::empty();
            match &p.ca {
                Some(path) => {
                    let path = ep.url.resolve(path);
                    let pem = std::fs::read(&path).map_err(|e| {
                        setup((
                            format!("cannot read the CA file {}: {e}", path.display()),
                            "point ?ca= at a PEM file".into(),
                        ))
                    })?;
                    let certs: Vec<_> = rustls_pemfile_certs(&pem);
                    if certs.is_empty() {
                        return Err(setup((
                            format!("the CA file {} holds no PEM certificate", path.display()),
                            "point ?ca= at the PEM file of the CA that signed the server's certificate".into(),
                        )));
                    }
                    for c in certs {
                        roots.add(c).map_err(|e| {
                            setup((format!("the CA file {}: {e}", path.display()), "use a valid PEM CA".into()))
                        })?;
                    }
                }
                None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
            }
            let cfg = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
            Some(Arc::new(cfg))
        } else {
            None
        };
        Ok(RedisEndpoint {
            name: ep.name.clone(),
            site: ep.site.clone(),
            tls_name: p.host.clone(),
            host: p.host,
            port: p.port,
            user: p.user,
            password: ep.password.as_ref().map(|s| s.expose().to_string()).or(p.password),
            db: p.db,
            tls,
            tombstone_ttl: p.tombstone_ttl,
            display: mask_password(ep.url.secret_text()),
        })
    }

    /// A runtime error of a connection (retried).
    pub fn io(&self, what: impl Into<String>) -> impl FnOnce(RespError) -> ConnectorError + '_ {
        let what = what.into();
        move |e| ConnectorError::Stream {
            endpoint: self.name.clone(),
            what: format!("{what} on {}", self.display),
            source: Box::new(e),
            kind: ErrorKind::Runtime,
        }
    }

    /// An error reply to what ferry was doing.
    pub fn refused(&self, what: &str, message: &str) -> ConnectorError {
        let kind = error_kind(message);
        if kind == ErrorKind::Setup {
            return ConnectorError::Setup {
                endpoint: self.name.clone(),
                problem: format!("{} refused {what}: {message}", self.display),
                fix: setup_fix(message),
            };
        }
        ConnectorError::Stream {
            endpoint: self.name.clone(),
            what: format!("{what} on {}", self.display),
            source: message.to_string().into(),
            kind,
        }
    }

    /// Connects and logs in, on the URL's database; errors say what to fix.
    pub async fn connect(&self) -> Result<Conn, ConnectorError> {
        let mut c = self.connect_raw().await?;
        if self.db != 0 {
            let r = c
                .call(&["SELECT".to_string(), self.db.to_string()])
                .await
                .map_err(self.io("selecting the database"))?;
            if let Some(e) = r.error() {
                return Err(ConnectorError::Setup {
                    endpoint: self.name.clone(),
                    problem: format!("{} has no database {}: {e}", self.display, self.db),
                    fix: "use a database number below the server's `databases` setting".into(),
                });
            }
        }
        Ok(c)
    }

    /// Connects and logs in, without selecting a database.
    pub async fn connect_raw(&self) -> Result<Conn, ConnectorError> {
        // Unreachable is retried (a server restarting comes back); `ferry check` says what
        // to fix.
        let mut c = Conn::open(self).await.map_err(|e| ConnectorError::Stream {
            endpoint: self.name.clone(),
            what: format!("cannot reach the Redis server {} ({}:{})", self.display, self.host, self.port),
            source: Box::new(e),
            kind: ErrorKind::Runtime,
        })?;
        if let Some(pw) = &self.password {
            let r = match &self.user {
                Some(u) => c.call(&["AUTH", u.as_str(), pw.as_str()]).await,
                None => c.call(&["AUTH", pw.as_str()]).await,
            }
            .map_err(self.io("logging in"))?;
            if let Some(e) = r.error() {
                return Err(ConnectorError::Setup {
                    endpoint: self.name.clone(),
                    problem: format!(
                        "{} refused the login{}: {e}",
                        self.display,
                        self.user.as_ref().map(|u| format!(" of user {u:?}")).unwrap_or_default()
                    ),
                    fix: "check the url's user and password (or the endpoint's password_env / password_file)".into(),
                });
            }
        }
        let r = c.call(&["CLIENT", "SETNAME", "ferry"]).await.map_err(self.io("naming the connection"))?;
        if let Some(e) = r.error()
            && (e.starts_with("NOAUTH") || e.starts_with("WRONGPASS"))
        {
            return Err(ConnectorError::Setup {
                endpoint: self.name.clone(),
                problem: format!("{} asks for a password: {e}", self.display),
                fix: "give the password in the url (redis://USER:PASSWORD@HOST:PORT) or with password_env / password_file".into(),
            });
        }
        Ok(c)
    }

    /// Runs one request; an error reply becomes a [`ConnectorError`].
    pub async fn call<A: AsRef<[u8]>>(&self, c: &mut Conn, what: &str, args: &[A]) -> Result<Reply, ConnectorError> {
        let r = c.call(args).await.map_err(self.io(what.to_string()))?;
        match r {
            Reply::Error(e) => Err(self.refused(what, &e)),
            r => Ok(r),
        }
    }
}

/// Reads the PEM certificates of a file.
fn rustls_pemfile_certs(pem: &[u8]) -> Vec<rustls_pki_types::CertificateDer<'static>> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::pem_slice_iter(pem).filter_map(Result::ok).collect()
}

/// What an error reply calls for.
pub fn error_kind(message: &str) -> ErrorKind {
    let code = message.split_whitespace().next().unwrap_or("");
    match code {
        "NOPERM" | "NOAUTH" | "WRONGPASS" | "NOSCRIPT" | "READONLY" | "MOVED" | "ASK" | "CLUSTERDOWN" => {
            ErrorKind::Setup
        }
        "LOADING" | "BUSY" | "MASTERDOWN" | "TRYAGAIN" | "OOM" => ErrorKind::Runtime,
        "ERR" if message.contains("unknown command") => ErrorKind::Setup,
        _ => ErrorKind::Refused,
    }
}

fn setup_fix(message: &str) -> String {
    let code = message.split_whitespace().next().unwrap_or("");
    match code {
        "NOPERM" => "grant ferry's user the command (ACL SETUSER … +COMMAND), or use an account that has it".into(),
        "NOAUTH" | "WRONGPASS" => "check the url's user and password".into(),
        "READONLY" => "point the url at the primary, not at a read-only replica".into(),
        "MOVED" | "ASK" | "CLUSTERDOWN" => {
            "Redis Cluster is not supported by this release; use a standalone server".into()
        }
        _ => "check that the server is Redis 7.0 or later and allows the command".into(),
    }
}

/// Whether a key is ferry's own.
pub fn own(key: &[u8]) -> bool {
    key.starts_with(OWN_PREFIX)
}

/// Redis's glob matching (`*`, `?`, `[abc]`, `[^a-z]`, `\x`), as `KEYS`/`SCAN MATCH` do it.
pub fn glob_match(pattern: &[u8], s: &[u8]) -> bool {
    fn go(p: &[u8], s: &[u8]) -> bool {
        let (mut pi, mut si) = (0, 0);
        let (mut star_p, mut star_s) = (None::<usize>, 0);
        while si < s.len() {
            if pi < p.len() {
                match p[pi] {
                    b'*' => {
                        star_p = Some(pi);
                        star_s = si;
                        pi += 1;
                        continue;
                    }
                    b'?' => {
                        pi += 1;
                        si += 1;
                        continue;
                    }
                    b'[' => {
                        if let Some((matched, next)) = class(p, pi, s[si])
                            && matched
                        {
                            pi = next;
                            si += 1;
                            continue;
                        }
                    }
                    b'\\' if pi + 1 < p.len() => {
                        if p[pi + 1] == s[si] {
                            pi += 2;
                            si += 1;
                            continue;
                        }
                    }
                    c => {
                        if c == s[si] {
                            pi += 1;
                            si += 1;
                            continue;
                        }
                    }
                }
            }
            match star_p {
                Some(sp) => {
                    pi = sp + 1;
                    star_s += 1;
                    si = star_s;
                }
                None => return false,
            }
        }
        while pi < p.len() && p[pi] == b'*' {
            pi += 1;
        }
        pi == p.len()
    }
    /// Matches one byte against the class at `p[at] == '['`: (matched, index after it).
    fn class(p: &[u8], at: usize, c: u8) -> Option<(bool, usize)> {
        let mut i = at + 1;
        let not = p.get(i) == Some(&b'^');
        if not {
            i += 1;
        }
        let mut matched = false;
        loop {
            let &b = p.get(i)?;
            if b == b']' {
                break;
            }
            if b == b'\\' && i + 1 < p.len() {
                matched |= p[i + 1] == c;
                i += 2;
            } else if p.get(i + 1) == Some(&b'-') && p.get(i + 2).is_some_and(|&e| e != b']') {
                let (lo, hi) = (b.min(p[i + 2]), b.max(p[i + 2]));
                matched |= (lo..=hi).contains(&c);
                i += 3;
            } else {
                matched |= b == c;
                i += 1;
            }
        }
        Some((matched != not, i + 1))
    }
    go(pattern, s)
}

/// Whether a key is carried by a task with these patterns (ferry's own never is).
pub fn wanted(patterns: &[String], key: &[u8]) -> bool {
    !own(key) && patterns.iter().any(|p| glob_match(p.as_bytes(), key))
}

/// Reads a field of `INFO`'s text.
pub fn info_field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(':')).map(str::trim)
}

/// The `(major, minor)` of a `redis_version`.
pub fn version_of(info: &str) -> Option<(u32, u32)> {
    let v = info_field(info, "redis_version")?;
    let mut parts = v.split('.');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_with_user_password_db_and_options() {
        let p = parse_url("redis://app:s%40cret@10.0.0.1:6380/3").expect("url");
        assert_eq!((p.user.as_deref(), p.password.as_deref(), p.db, p.port), (Some("app"), Some("s@cret"), 3, 6380));
        let p = parse_url("redis://:pw@h:1").expect("password only");
        assert_eq!((p.user, p.password.as_deref(), p.db), (None, Some("pw"), 0));
        let p = parse_url("rediss://h:6379?ca=ca.pem").expect("tls");
        assert!(p.tls && p.ca.as_deref() == Some("ca.pem"));
        assert!(parse_url("redis://h").is_err(), "no port");
        assert!(parse_url("redis://h:1/x").is_err(), "db not a number");
        assert!(parse_url("redis://h:1?ca=x").is_err(), "ca without TLS");
        assert!(parse_url("redis://h:1?nope=1").is_err(), "unknown option");
        assert!(parse_url("mysql://h:1").is_err());
    }

    #[test]
    fn globs_match_as_redis_does() {
        let m = |p: &str, s: &str| glob_match(p.as_bytes(), s.as_bytes());
        assert!(m("*", "anything") && m("user:*", "user:1") && !m("user:*", "users:1"));
        assert!(m("h?llo", "hello") && m("h[ae]llo", "hallo") && !m("h[ae]llo", "hillo"));
        assert!(m("h[^e]llo", "hallo") && !m("h[^e]llo", "hello") && m("h[a-c]llo", "hbllo"));
        assert!(m("a\\*b", "a*b") && !m("a\\*b", "axb") && m("*:*:x", "a:b:c:x"));
        assert!(!wanted(&["*".into()], b"ferry:checkpoint:t") && wanted(&["*".into()], b"k"));
    }
}
