//! The TOML task file (see docs/task-file.md), parsed with `deny_unknown_fields` and
//! validated into typed structs. Every error names the file, the line and the fix.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::model::SiteId;

/// A task file that cannot be used, with where and how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error(
        "cannot read task file {path}: {source}\n  fix: check the path given to --config and that this user may read it"
    )]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not match the task file's shape.
    #[error("{path}: {message}\n  fix: {hint}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
        /// What to do about it.
        hint: String,
    },
    /// The file parses but a value is wrong.
    #[error("{path}:{line}: {problem}\n  fix: {fix}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line of the offending value.
        line: usize,
        /// What is wrong.
        problem: String,
        /// How to fix it.
        fix: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    node: Spanned<RawNode>,
    #[serde(default)]
    endpoint: Vec<RawEndpoint>,
    #[serde(default)]
    task: Vec<RawTask>,
    #[serde(default)]
    token: Vec<RawToken>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    id: Spanned<String>,
    #[serde(default = "default_listen")]
    listen: Spanned<String>,
    #[serde(default = "default_store")]
    store: Spanned<String>,
}

fn default_listen() -> Spanned<String> {
    Spanned::new(0..0, "127.0.0.1:7400".to_string())
}

fn default_store() -> Spanned<String> {
    Spanned::new(0..0, "sqlite://ferry-meta.db".to_string())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEndpoint {
    name: Spanned<String>,
    site: Option<Spanned<String>>,
    url: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTask {
    name: Spanned<String>,
    from: Spanned<String>,
    to: Spanned<String>,
    #[serde(default)]
    mode: Mode,
    #[serde(default = "default_tables")]
    tables: Spanned<Vec<String>>,
    #[serde(default = "yes")]
    snapshot: bool,
    #[serde(default)]
    conflict: ConflictPolicy,
    #[serde(default = "default_workers")]
    workers: Spanned<u32>,
    #[serde(default = "yes")]
    keep_transactions: bool,
    #[serde(default)]
    max_rows_per_sec: u64,
    #[serde(default)]
    map: Vec<RawMap>,
    #[serde(default)]
    cutover: RawCutover,
}

fn default_tables() -> Spanned<Vec<String>> {
    Spanned::new(0..0, vec!["*".to_string()])
}

fn yes() -> bool {
    true
}

fn default_workers() -> Spanned<u32> {
    Spanned::new(0..0, 4)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMap {
    from: Spanned<String>,
    to: Spanned<String>,
    #[serde(default)]
    columns: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCutover {
    #[serde(default)]
    freeze: FreezeMethod,
    #[serde(default = "default_exempt")]
    exempt_users: Vec<String>,
    #[serde(default = "default_max_lag")]
    max_lag_seconds: u64,
    #[serde(default = "default_verify_age")]
    verify_max_age: Spanned<String>,
}

impl Default for RawCutover {
    fn default() -> Self {
        RawCutover {
            freeze: FreezeMethod::default(),
            exempt_users: default_exempt(),
            max_lag_seconds: default_max_lag(),
            verify_max_age: default_verify_age(),
        }
    }
}

fn default_exempt() -> Vec<String> {
    vec!["ferry".to_string(), "dba".to_string()]
}

fn default_max_lag() -> u64 {
    5
}

fn default_verify_age() -> Spanned<String> {
    Spanned::new(0..0, "24h".to_string())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawToken {
    name: Spanned<String>,
    role: Role,
    sha256: Spanned<String>,
}

/// One-way or both directions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// `from` -> `to` only.
    #[default]
    OneWay,
    /// Both directions; both sides take writes.
    TwoWay,
}

/// How a conflicting change is resolved (DESIGN.md "Two-way").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConflictPolicy {
    /// The version with the later (commit time, site) wins.
    #[default]
    LastWriterWins,
    /// The task's `from` endpoint's version wins.
    PreferFrom,
    /// The task's `to` endpoint's version wins.
    PreferTo,
    /// Record the conflict, change nothing.
    LogOnly,
}

impl fmt::Display for ConflictPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConflictPolicy::LastWriterWins => "last-writer-wins",
            ConflictPolicy::PreferFrom => "prefer-from",
            ConflictPolicy::PreferTo => "prefer-to",
            ConflictPolicy::LogOnly => "log-only",
        })
    }
}

/// How a cutover stops application writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FreezeMethod {
    /// Global read-only; exempt accounts keep writing.
    #[default]
    ReadOnly,
    /// Revoke write grants of application accounts.
    Revoke,
}

/// Node API role of a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Read only.
    Viewer,
    /// Read and act on tasks.
    Operator,
    /// Everything.
    Admin,
}

/// The validated task file.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where it was read from (relative paths in it are relative to its folder).
    pub path: PathBuf,
    /// This process.
    pub node: Node,
    /// Data stores, by name.
    pub endpoints: Vec<Endpoint>,
    /// Sync tasks.
    pub tasks: Vec<Task>,
    /// Node API tokens.
    pub tokens: Vec<Token>,
}

/// `[node]`.
#[derive(Debug, Clone)]
pub struct Node {
    /// Names lease holders and audit entries.
    pub id: String,
    /// HTTP API address.
    pub listen: String,
    /// Metadata store.
    pub store: StoreUrl,
}

/// Where the metadata store lives.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreUrl {
    /// A SQLite file.
    Sqlite(PathBuf),
}

/// `[[endpoint]]`.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Its name in tasks.
    pub name: String,
    /// Where application writes to it happen.
    pub site: SiteId,
    /// How to reach it.
    pub url: EndpointUrl,
}

/// How to reach an endpoint.
#[derive(Debug, Clone, PartialEq)]
pub enum EndpointUrl {
    /// A SQLite database file.
    Sqlite(PathBuf),
    /// A MySQL/MariaDB server (`mysql://user:pass@host:port[/db]`).
    Mysql(String),
    /// A PostgreSQL server.
    Postgres(String),
}

impl EndpointUrl {
    /// The engine's name, for messages.
    pub fn engine(&self) -> &'static str {
        match self {
            EndpointUrl::Sqlite(_) => "SQLite",
            EndpointUrl::Mysql(_) => "MySQL/MariaDB",
            EndpointUrl::Postgres(_) => "PostgreSQL",
        }
    }
}

impl fmt::Display for EndpointUrl {
    /// Shows the URL with any password masked.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndpointUrl::Sqlite(p) => write!(f, "sqlite://{}", p.display()),
            EndpointUrl::Mysql(u) | EndpointUrl::Postgres(u) => f.write_str(&mask_password(u)),
        }
    }
}

/// Replaces the password in `scheme://user:password@host` with `***`.
pub fn mask_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (auth, host) = match rest.rfind('@') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => return url.to_string(),
    };
    match auth.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

/// `[[task]]`.
#[derive(Debug, Clone)]
pub struct Task {
    /// Unique task name.
    pub name: String,
    /// Source endpoint name.
    pub from: String,
    /// Target endpoint name.
    pub to: String,
    /// One-way or two-way.
    pub mode: Mode,
    /// Table globs (`db.table` for MySQL, `table` for SQLite).
    pub tables: Vec<String>,
    /// Copy existing rows first.
    pub snapshot: bool,
    /// Conflict policy (two-way).
    pub conflict: ConflictPolicy,
    /// Parallel appliers.
    pub workers: u32,
    /// Apply each source transaction whole.
    pub keep_transactions: bool,
    /// 0 = unthrottled.
    pub max_rows_per_sec: u64,
    /// Renames.
    pub maps: Vec<TableMap>,
    /// Cutover settings.
    pub cutover: Cutover,
}

/// `[[task.map]]`: a table rename with column renames.
#[derive(Debug, Clone)]
pub struct TableMap {
    /// Source table.
    pub from: String,
    /// Target table.
    pub to: String,
    /// Source column -> target column.
    pub columns: BTreeMap<String, String>,
}

/// `[task.cutover]`.
#[derive(Debug, Clone)]
pub struct Cutover {
    /// How writes are stopped.
    pub freeze: FreezeMethod,
    /// Accounts that keep writing during a freeze.
    pub exempt_users: Vec<String>,
    /// Preflight lag threshold.
    pub max_lag_seconds: u64,
    /// Preflight: the last clean verify must be this recent.
    pub verify_max_age: Duration,
}

/// `[[token]]`.
#[derive(Debug, Clone)]
pub struct Token {
    /// Who.
    pub name: String,
    /// What they may do.
    pub role: Role,
    /// Hex SHA-256 of the token.
    pub sha256: String,
}

impl Config {
    /// Reads and validates a task file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        Config::parse(path, &text)
    }

    /// Validates task-file text; `path` names it in errors and anchors relative paths.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let raw: RawFile = toml::from_str(text).map_err(|e| parse_error(path, e))?;
        Validator { path, text }.validate(raw)
    }

    /// The endpoint with this name.
    pub fn endpoint(&self, name: &str) -> Option<&Endpoint> {
        self.endpoints.iter().find(|e| e.name == name)
    }

    /// The task with this name.
    pub fn task(&self, name: &str) -> Option<&Task> {
        self.tasks.iter().find(|t| t.name == name)
    }
}

fn parse_error(path: &Path, e: toml::de::Error) -> ConfigError {
    let message = e.to_string().trim_end().to_string();
    let hint = if message.contains("unknown field") {
        "remove or rename the key; the allowed keys are listed above and in docs/task-file.md"
    } else if message.contains("missing field") {
        "add the key; docs/task-file.md shows a complete example"
    } else if message.contains("unknown variant") {
        "use one of the values listed above"
    } else {
        "correct the TOML syntax at the line shown; docs/task-file.md shows a complete example"
    };
    ConfigError::Parse { path: path.to_path_buf(), message, hint: hint.to_string() }
}

struct Validator<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Validator<'_> {
    fn line(&self, span: std::ops::Range<usize>) -> usize {
        let end = span.start.min(self.text.len());
        self.text[..end].bytes().filter(|&b| b == b'\n').count() + 1
    }

    fn invalid<T>(&self, span: std::ops::Range<usize>, problem: String, fix: &str) -> Result<T, ConfigError> {
        Err(ConfigError::Invalid {
            path: self.path.to_path_buf(),
            line: self.line(span),
            problem,
            fix: fix.to_string(),
        })
    }

    fn validate(&self, raw: RawFile) -> Result<Config, ConfigError> {
        let base = self.path.parent().map(Path::to_path_buf).unwrap_or_default();
        let node_span = raw.node.span();
        let node = raw.node.into_inner();
        if node.id.get_ref().trim().is_empty() {
            return self.invalid(
                node.id.span(),
                "[node] id is empty".into(),
                "give this process a name, e.g. id = \"node-1\"",
            );
        }
        let store = match node.store.get_ref().strip_prefix("sqlite:") {
            Some(rest) => StoreUrl::Sqlite(resolve(&base, rest)),
            None => {
                let span = if node.store.span().is_empty() { node_span } else { node.store.span() };
                return self.invalid(
                    span,
                    format!("[node] store {:?} is not supported", node.store.get_ref()),
                    "use a SQLite file, e.g. store = \"sqlite://ferry-meta.db\"",
                );
            }
        };
        if node.listen.get_ref().parse::<std::net::SocketAddr>().is_err() {
            return self.invalid(
                node.listen.span(),
                format!("[node] listen {:?} is not an address", node.listen.get_ref()),
                "use host:port, e.g. listen = \"127.0.0.1:7400\"",
            );
        }

        let mut endpoints = Vec::new();
        let mut names = HashSet::new();
        for e in raw.endpoint {
            let name = e.name.get_ref().clone();
            if name.trim().is_empty() {
                return self.invalid(
                    e.name.span(),
                    "an endpoint has an empty name".into(),
                    "give every [[endpoint]] a unique name",
                );
            }
            if !names.insert(name.clone()) {
                return self.invalid(
                    e.name.span(),
                    format!("endpoint {name:?} is defined twice"),
                    "give every [[endpoint]] a unique name",
                );
            }
            let url = self.endpoint_url(&base, &e.url)?;
            let site = e.site.map(|s| s.into_inner()).unwrap_or_else(|| name.clone());
            endpoints.push(Endpoint { name, site: SiteId::new(&site), url });
        }

        let mut tasks = Vec::new();
        let mut task_names = HashSet::new();
        for t in raw.task {
            tasks.push(self.task(t, &names, &mut task_names)?);
        }

        let mut tokens = Vec::new();
        for t in raw.token {
            let hash = t.sha256.get_ref();
            if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                return self.invalid(
                    t.sha256.span(),
                    format!("token {:?}: sha256 is not 64 hex digits", t.name.get_ref()),
                    "store the SHA-256 of the token, e.g. `printf %s TOKEN | sha256sum`",
                );
            }
            tokens.push(Token { name: t.name.into_inner(), role: t.role, sha256: hash.to_ascii_lowercase() });
        }

        Ok(Config {
            path: self.path.to_path_buf(),
            node: Node { id: node.id.into_inner(), listen: node.listen.into_inner(), store },
            endpoints,
            tasks,
            tokens,
        })
    }

    fn endpoint_url(&self, base: &Path, url: &Spanned<String>) -> Result<EndpointUrl, ConfigError> {
        let text = url.get_ref();
        if let Some(rest) = text.strip_prefix("sqlite:") {
            if rest.trim_start_matches('/').is_empty() {
                return self.invalid(
                    url.span(),
                    "sqlite URL has no file path".into(),
                    "write url = \"sqlite://path/to/file.db\"",
                );
            }
            return Ok(EndpointUrl::Sqlite(resolve(base, rest)));
        }
        if text.starts_with("mysql://") || text.starts_with("mariadb://") {
            return Ok(EndpointUrl::Mysql(text.clone()));
        }
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            return Ok(EndpointUrl::Postgres(text.clone()));
        }
        self.invalid(
            url.span(),
            format!("endpoint url {:?} has an unknown scheme", mask_password(text)),
            "use sqlite://FILE, mysql://USER:PASSWORD@HOST:PORT or postgres://...",
        )
    }

    fn task(&self, t: RawTask, endpoints: &HashSet<String>, seen: &mut HashSet<String>) -> Result<Task, ConfigError> {
        let name = t.name.get_ref().clone();
        if name.trim().is_empty() {
            return self.invalid(t.name.span(), "a task has an empty name".into(), "give every [[task]] a unique name");
        }
        if !seen.insert(name.clone()) {
            return self.invalid(
                t.name.span(),
                format!("task {name:?} is defined twice"),
                "give every [[task]] a unique name (one task can hold many tables)",
            );
        }
        for side in [&t.from, &t.to] {
            if !endpoints.contains(side.get_ref()) {
                let mut known: Vec<&String> = endpoints.iter().collect();
                known.sort();
                return self.invalid(
                    side.span(),
                    format!("task {name:?} names endpoint {:?}, which is not defined", side.get_ref()),
                    &format!("define it as an [[endpoint]] or use one of: {known:?}"),
                );
            }
        }
        if t.from.get_ref() == t.to.get_ref() {
            return self.invalid(
                t.to.span(),
                format!("task {name:?} has the same endpoint {:?} as from and to", t.to.get_ref()),
                "point `to` at a different endpoint; a task copies between two data stores",
            );
        }
        if t.tables.get_ref().is_empty() {
            return self.invalid(
                t.tables.span(),
                format!("task {name:?} lists no tables"),
                "list table globs, e.g. tables = [\"*\"]",
            );
        }
        for g in t.tables.get_ref() {
            if glob::Pattern::new(g).is_err() || g.trim().is_empty() {
                return self.invalid(
                    t.tables.span(),
                    format!("task {name:?}: table pattern {g:?} is not a valid glob"),
                    "use * and ? wildcards, e.g. \"shop.*\"",
                );
            }
        }
        if *t.workers.get_ref() == 0 {
            return self.invalid(t.workers.span(), format!("task {name:?}: workers = 0"), "use workers = 1 or more");
        }
        let verify_max_age = match parse_duration(t.cutover.verify_max_age.get_ref()) {
            Some(d) => d,
            None => {
                return self.invalid(
                    t.cutover.verify_max_age.span(),
                    format!("task {name:?}: verify_max_age {:?} is not a duration", t.cutover.verify_max_age.get_ref()),
                    "write a number with a unit s, m, h or d, e.g. \"24h\"",
                );
            }
        };
        let maps = t
            .map
            .into_iter()
            .map(|m| TableMap { from: m.from.into_inner(), to: m.to.into_inner(), columns: m.columns })
            .collect();
        Ok(Task {
            name,
            from: t.from.into_inner(),
            to: t.to.into_inner(),
            mode: t.mode,
            tables: t.tables.into_inner(),
            snapshot: t.snapshot,
            conflict: t.conflict,
            workers: t.workers.into_inner(),
            keep_transactions: t.keep_transactions,
            max_rows_per_sec: t.max_rows_per_sec,
            maps,
            cutover: Cutover {
                freeze: t.cutover.freeze,
                exempt_users: t.cutover.exempt_users,
                max_lag_seconds: t.cutover.max_lag_seconds,
                verify_max_age,
            },
        })
    }
}

/// `sqlite://rel.db` and `sqlite:rel.db` are relative to the task file's folder;
/// `sqlite:///abs.db` is absolute.
fn resolve(base: &Path, rest: &str) -> PathBuf {
    let p = rest.strip_prefix("//").unwrap_or(rest);
    let p = Path::new(p);
    if p.is_absolute() { p.to_path_buf() } else { base.join(p) }
}

/// Parses "90s", "15m", "24h", "7d".
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (num, unit) = text.split_at(split);
    let n: u64 = num.parse().ok()?;
    let secs = match unit.trim() {
        "s" => n,
        "m" => n.checked_mul(60)?,
        "h" => n.checked_mul(3600)?,
        "d" => n.checked_mul(86400)?,
        _ => return None,
    };
    Some(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[node]
id = "n1"

[[endpoint]]
name = "a"
url = "sqlite://a.db"

[[endpoint]]
name = "b"
site = "dc-b"
url = "mysql://ferry:secret@127.0.0.1:3308"

[[task]]
name = "t"
from = "a"
to = "b"
mode = "two-way"
"#;

    #[test]
    fn defaults_fill_the_rest() {
        let c = Config::parse(Path::new("/etc/ferry/f.toml"), GOOD).expect("valid");
        let t = &c.tasks[0];
        assert_eq!(t.mode, Mode::TwoWay);
        assert_eq!(t.conflict, ConflictPolicy::LastWriterWins);
        assert_eq!(t.workers, 4);
        assert!(t.keep_transactions && t.snapshot);
        assert_eq!(c.endpoints[0].site.as_str(), "a");
        assert_eq!(c.endpoints[0].url, EndpointUrl::Sqlite(PathBuf::from("/etc/ferry/a.db")));
        assert_eq!(c.node.store, StoreUrl::Sqlite(PathBuf::from("/etc/ferry/ferry-meta.db")));
        assert_eq!(c.endpoints[1].url.to_string(), "mysql://ferry:***@127.0.0.1:3308");
    }

    #[test]
    fn same_endpoint_both_sides_names_the_line() {
        let text = GOOD.replace("to = \"b\"", "to = \"a\"");
        let err = Config::parse(Path::new("f.toml"), &text).expect_err("invalid");
        let msg = err.to_string();
        assert!(msg.contains("f.toml:17:"), "{msg}");
        assert!(msg.contains("same endpoint"), "{msg}");
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("24h"), Some(Duration::from_secs(86400)));
        assert_eq!(parse_duration("x"), None);
    }
}
