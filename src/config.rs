//! The TOML task file (see docs/task-file.md), parsed with `deny_unknown_fields` and
//! validated into typed structs. Every error names the file, the line and the fix.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;

pub use crate::connector::endpoint::{Endpoint, EndpointUrl, Secret, SshKeys, mask_password};
use crate::connector::registry;
pub use crate::engine::clock::SkewBounds;
use crate::model::SiteId;
pub use crate::model::{ConflictPolicy, FreezeMethod, TableMap};

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
    cluster: Option<Spanned<RawCluster>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    nats: Spanned<String>,
    tls_ca: Option<Spanned<String>>,
    credentials: Option<Spanned<String>>,
    lease_ttl: Option<Spanned<String>>,
    replicas: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    id: Spanned<String>,
    #[serde(default = "default_listen")]
    listen: Spanned<String>,
    #[serde(default = "default_store")]
    store: Spanned<String>,
    #[serde(default)]
    tls_cert: Option<Spanned<String>>,
    #[serde(default)]
    tls_key: Option<Spanned<String>>,
    #[serde(default)]
    site: Option<Spanned<String>>,
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
    password_env: Option<Spanned<String>>,
    password_file: Option<Spanned<String>>,
    identity: Option<Spanned<String>>,
    known_hosts: Option<Spanned<String>>,
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
    keep_transactions: Option<Spanned<bool>>,
    #[serde(default)]
    max_rows_per_sec: u64,
    topic: Option<String>,
    index: Option<String>,
    #[serde(default)]
    max_bytes_per_sec: u64,
    #[serde(default)]
    rescan: Option<Spanned<String>>,
    #[serde(default = "default_retention_alarm")]
    retention_alarm: Spanned<String>,
    #[serde(default)]
    map: Vec<RawMap>,
    #[serde(default)]
    cutover: RawCutover,
    clock_skew_alarm: Option<Spanned<String>>,
    clock_skew_pause: Option<Spanned<String>>,
    #[serde(default)]
    nodes: Option<Spanned<Vec<String>>>,
    transport: Option<Spanned<String>>,
    transport_max_bytes: Option<Spanned<String>>,
    transport_max_age: Option<Spanned<String>>,
    publish_nodes: Option<Spanned<Vec<String>>>,
}

/// The topic template of a task that names none.
pub const DEFAULT_TOPIC: &str = "ferry.{db}.{table}";
/// The index template of a task that names none.
pub const DEFAULT_INDEX: &str = "{db}_{table}";

fn default_tables() -> Spanned<Vec<String>> {
    Spanned::new(0..0, vec!["*".to_string()])
}

fn yes() -> bool {
    true
}

fn default_retention_alarm() -> Spanned<String> {
    Spanned::new(0..0, "10GB".to_string())
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
    #[serde(default = "default_quiet")]
    quiet_seconds: u64,
}

impl Default for RawCutover {
    fn default() -> Self {
        RawCutover {
            freeze: FreezeMethod::default(),
            exempt_users: default_exempt(),
            max_lag_seconds: default_max_lag(),
            verify_max_age: default_verify_age(),
            quiet_seconds: default_quiet(),
        }
    }
}

fn default_quiet() -> u64 {
    5
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

/// Node API role of a token (docs/node-api.md has the matrix).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
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
    /// `[cluster]`: nodes that share tasks over NATS JetStream; `None` runs every task here.
    pub cluster: Option<Cluster>,
}

/// `[cluster]` (docs/cluster.md).
#[derive(Clone)]
pub struct Cluster {
    /// NATS server URL(s), comma-separated (`nats://host:4222`, `tls://…`); may carry a
    /// user and password, shown only masked.
    pub nats: String,
    /// PEM file of the CA that signed the NATS servers' certificates (TLS required then).
    pub tls_ca: Option<PathBuf>,
    /// NATS credentials file (`.creds`: a user JWT and its NKey seed).
    pub credentials: Option<PathBuf>,
    /// How long a task direction's ownership lasts without renewal (3 s to 15 s).
    pub lease_ttl: Duration,
    /// Copies JetStream keeps of ferry's KV buckets (1, 3 or 5); `None`: 3 when the
    /// servers form a cluster of three or more, else 1.
    pub replicas: Option<usize>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password: only its masked form is ever printed.
        f.debug_struct("Cluster")
            .field("nats", &self.nats_masked())
            .field("tls_ca", &self.tls_ca)
            .field("credentials", &self.credentials)
            .field("lease_ttl", &self.lease_ttl)
            .field("replicas", &self.replicas)
            .finish()
    }
}

impl Cluster {
    /// The NATS URL(s) with any password masked, for logs and the API.
    pub fn nats_masked(&self) -> String {
        self.nats.split(',').map(|u| mask_password(u.trim())).collect::<Vec<_>>().join(",")
    }
}

/// The cluster lease's TTL when `[cluster] lease_ttl` is not given.
pub const DEFAULT_CLUSTER_LEASE_TTL: Duration = Duration::from_secs(10);

/// `[node]`.
#[derive(Debug, Clone)]
pub struct Node {
    /// Names lease holders and audit entries.
    pub id: String,
    /// HTTP API address.
    pub listen: String,
    /// Metadata store.
    pub store: StoreUrl,
    /// Certificate chain and private key (PEM files) when the API is served over HTTPS.
    pub tls: Option<NodeTls>,
    /// `[node] site`: the data center it runs in; a cluster prefers it for tasks whose
    /// target is at that site.
    pub site: Option<String>,
}

/// `[node] tls_cert` and `tls_key`: the node serves HTTPS only.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeTls {
    /// PEM certificate chain, the node's certificate first.
    pub cert: PathBuf,
    /// PEM private key of that certificate.
    pub key: PathBuf,
}

/// Where the metadata store lives.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreUrl {
    /// A SQLite file.
    Sqlite(PathBuf),
}

impl StoreUrl {
    /// The metadata store's file.
    pub fn path(&self) -> PathBuf {
        match self {
            StoreUrl::Sqlite(p) => p.clone(),
        }
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
    /// A message-store target's topic template (`ferry.{db}.{table}`, the default).
    pub topic: String,
    /// A search-store target's index template (`{db}_{table}`, the default).
    pub index: String,
    /// Files and objects: bytes per second at most (0 = unthrottled).
    pub max_bytes_per_sec: u64,
    /// Files and objects: how often a full rescan checks every path (change hints
    /// between rescans are only hints).
    pub rescan: std::time::Duration,
    /// Alarm when a source keeps more change history than this for a direction (bytes;
    /// a PostgreSQL slot's retained WAL).
    pub retention_alarm: u64,
    /// Renames.
    pub maps: Vec<TableMap>,
    /// Cutover settings.
    pub cutover: Cutover,
    /// Two-way: how far apart the two sides' clocks may be (alarm, pause).
    pub clock_skew: SkewBounds,
    /// In a cluster, the `[node] id`s that may run it (empty: any node).
    pub nodes: Vec<String>,
    /// `transport = "nats"`: changes travel through a JetStream stream between a node
    /// near the source and one near the target; `None` applies them directly.
    pub transport: Option<Transport>,
}

/// `[[task]] transport = "nats"` and its limits (docs/cluster.md, "Transport").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transport {
    /// The most the stream buffers (bytes) before the publishing side stops with an alarm.
    pub max_bytes: u64,
    /// The oldest change the stream may hold before the publishing side stops with an alarm.
    pub max_age: Duration,
    /// The `[node] id`s that may publish (empty: any node); `nodes` says who may apply.
    pub publish_nodes: Vec<String>,
}

/// `transport_max_bytes` when not given.
pub const DEFAULT_TRANSPORT_MAX_BYTES: u64 = 1 << 30;
/// `transport_max_age` when not given.
pub const DEFAULT_TRANSPORT_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

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
    /// Files and objects: Drain ends once no change was carried for this long (and a
    /// full pass begun after the freeze found nothing to carry).
    pub quiet_seconds: u64,
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
        let tls = match (&node.tls_cert, &node.tls_key) {
            (None, None) => None,
            (Some(cert), Some(key)) => {
                Some(NodeTls { cert: resolve(&base, cert.get_ref()), key: resolve(&base, key.get_ref()) })
            }
            (Some(one), None) | (None, Some(one)) => {
                return self.invalid(
                    one.span(),
                    "[node] needs both tls_cert and tls_key to serve HTTPS".into(),
                    "give both PEM files (tls_cert = \"node.crt\", tls_key = \"node.key\"), or neither for plain HTTP",
                );
            }
        };

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
            let password = self.endpoint_password(&base, &e)?;
            let ssh = self.endpoint_ssh(&base, &e, &url)?;
            let site = e.site.map(|s| s.into_inner()).unwrap_or_else(|| name.clone());
            endpoints.push(Endpoint { name, site: SiteId::new(&site), url, password, ssh });
        }

        let cluster = match raw.cluster {
            Some(c) => Some(self.cluster(&base, c)?),
            None => None,
        };
        let mut tasks = Vec::new();
        let mut task_names = HashSet::new();
        for t in raw.task {
            if let Some(nodes) = &t.nodes {
                self.task_nodes(t.name.get_ref(), nodes, cluster.is_some())?;
            }
            let keep = self.keep_transactions(&t, &endpoints)?;
            let transport = self.transport(&t, cluster.is_some())?;
            let mut task = self.task(t, &names, &mut task_names)?;
            task.transport = transport;
            task.keep_transactions = keep;
            tasks.push(task);
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
            node: Node {
                id: node.id.into_inner(),
                listen: node.listen.into_inner(),
                store,
                tls,
                site: node.site.map(Spanned::into_inner),
            },
            endpoints,
            tasks,
            tokens,
            cluster,
        })
    }

    /// `[cluster]`: a NATS URL, optional TLS CA and credentials files, the lease TTL.
    fn cluster(&self, base: &Path, raw: Spanned<RawCluster>) -> Result<Cluster, ConfigError> {
        let raw = raw.into_inner();
        let nats = raw.nats.get_ref().trim().to_string();
        for url in nats.split(',').map(str::trim) {
            let scheme_ok = ["nats://", "tls://"].iter().any(|s| url.starts_with(s));
            if !scheme_ok || url.len() <= "nats://".len() {
                return self.invalid(
                    raw.nats.span(),
                    format!("[cluster] nats {:?} is not a NATS URL", mask_password(url)),
                    "write nats://host:4222 (or tls://host:4222), several separated by commas",
                );
            }
        }
        let lease_ttl = match &raw.lease_ttl {
            None => DEFAULT_CLUSTER_LEASE_TTL,
            Some(t) => match parse_duration(t.get_ref()) {
                Some(d) if (Duration::from_secs(3)..=Duration::from_secs(15)).contains(&d) => d,
                _ => {
                    return self.invalid(
                        t.span(),
                        format!("[cluster] lease_ttl {:?} is not a duration from 3s to 15s", t.get_ref()),
                        "write e.g. lease_ttl = \"10s\": a dead node's tasks move after about this long",
                    );
                }
            },
        };
        let replicas = match &raw.replicas {
            None => None,
            Some(r) if [1, 3, 5].contains(r.get_ref()) => usize::try_from(*r.get_ref()).ok(),
            Some(r) => {
                return self.invalid(
                    r.span(),
                    format!("[cluster] replicas {} is not 1, 3 or 5", r.get_ref()),
                    "write replicas = 3 for a three-server JetStream cluster (or leave it out: ferry counts the servers)",
                );
            }
        };
        Ok(Cluster {
            nats,
            tls_ca: raw.tls_ca.map(|p| resolve(base, p.get_ref())),
            credentials: raw.credentials.map(|p| resolve(base, p.get_ref())),
            lease_ttl,
            replicas,
        })
    }

    /// `[[task]] nodes`: node ids, only in a cluster.
    fn task_nodes(&self, task: &str, nodes: &Spanned<Vec<String>>, cluster: bool) -> Result<(), ConfigError> {
        if !cluster {
            return self.invalid(
                nodes.span(),
                format!("task {task:?} lists nodes, but the file has no [cluster]"),
                "add a [cluster] section (nats = \"nats://host:4222\") or remove nodes: without a cluster this node runs every task",
            );
        }
        if nodes.get_ref().is_empty() || nodes.get_ref().iter().any(|n| n.trim().is_empty()) {
            return self.invalid(
                nodes.span(),
                format!("task {task:?}: nodes lists no node or an empty id"),
                "list [node] ids, e.g. nodes = [\"dc-b-1\", \"dc-b-2\"], or remove nodes to let any node run it",
            );
        }
        Ok(())
    }

    fn endpoint_url(&self, base: &Path, url: &Spanned<String>) -> Result<EndpointUrl, ConfigError> {
        let parsed = EndpointUrl::new(url.get_ref().clone(), base);
        match registry::check_url(&parsed) {
            Ok(()) => Ok(parsed),
            Err((problem, fix)) => self.invalid(url.span(), problem, &fix),
        }
    }

    /// `keep_transactions`: true by default where the target applies a source
    /// transaction atomically; a target that cannot defaults to false and refuses true.
    fn keep_transactions(&self, t: &RawTask, endpoints: &[Endpoint]) -> Result<bool, ConfigError> {
        let target = endpoints.iter().find(|e| e.name == *t.to.get_ref());
        let store = target.and_then(|e| registry::by_scheme(&e.url.scheme()));
        let atomic = store.is_none_or(|s| s.transactional());
        match &t.keep_transactions {
            Some(k) if *k.get_ref() && !atomic => self.invalid(
                k.span(),
                format!(
                    "task {:?}: keep_transactions = true, but its target {:?} ({}) cannot apply a source transaction atomically",
                    t.name.get_ref(),
                    t.to.get_ref(),
                    store.map_or("unknown", |s| s.name())
                ),
                "remove keep_transactions (it defaults to false for this target): readers of it may see part of a source transaction, and ferry keeps the exactly-once effect by idempotent writes with the checkpoint",
            ),
            Some(k) => Ok(*k.get_ref()),
            None => Ok(atomic),
        }
    }

    /// `identity` and `known_hosts`: for `sftp://` endpoints only, paths as given (`~/`
    /// is the home folder; relative to the task file's folder).
    fn endpoint_ssh(&self, base: &Path, e: &RawEndpoint, url: &EndpointUrl) -> Result<SshKeys, ConfigError> {
        let sftp = url.scheme() == "sftp";
        let mut keys = SshKeys::default();
        for (key, value, slot) in
            [("identity", &e.identity, &mut keys.identity), ("known_hosts", &e.known_hosts, &mut keys.known_hosts)]
        {
            let Some(v) = value else { continue };
            if !sftp {
                return self.invalid(
                    v.span(),
                    format!(
                        "endpoint {:?}: {key} is for sftp:// endpoints (this one is {}://)",
                        e.name.get_ref(),
                        url.scheme()
                    ),
                    &format!("remove {key}"),
                );
            }
            *slot = Some(expand_home(base, v.get_ref()));
        }
        Ok(keys)
    }

    /// The password of `password_env` or `password_file` (at most one), read now.
    fn endpoint_password(&self, base: &Path, e: &RawEndpoint) -> Result<Option<Secret>, ConfigError> {
        match (&e.password_env, &e.password_file) {
            (Some(var), Some(_)) => self.invalid(
                var.span(),
                format!("endpoint {:?} sets both password_env and password_file", e.name.get_ref()),
                "keep one of them",
            ),
            (Some(var), None) => match std::env::var(var.get_ref()) {
                Ok(p) => Ok(Some(Secret::new(p))),
                Err(_) => self.invalid(
                    var.span(),
                    format!("endpoint {:?}: environment variable {} is not set", e.name.get_ref(), var.get_ref()),
                    &format!("export {}=... in the environment that starts ferry", var.get_ref()),
                ),
            },
            (None, Some(file)) => {
                let path = resolve(base, file.get_ref());
                match std::fs::read_to_string(&path) {
                    // A trailing newline is the file's, not the password's.
                    Ok(p) => Ok(Some(Secret::new(p.trim_end_matches(['\n', '\r'])))),
                    Err(err) => self.invalid(
                        file.span(),
                        format!("endpoint {:?}: cannot read password_file {}: {err}", e.name.get_ref(), path.display()),
                        "give a readable file holding only the password (chmod 600)",
                    ),
                }
            }
            (None, None) => Ok(None),
        }
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
        let clock_skew = self.clock_skew(&name, t.clock_skew_alarm.as_ref(), t.clock_skew_pause.as_ref())?;
        let rescan = match &t.rescan {
            None => Duration::from_secs(300),
            Some(r) => match parse_duration(r.get_ref()).filter(|d| !d.is_zero()) {
                Some(d) => d,
                None => {
                    return self.invalid(
                        r.span(),
                        format!("task {name:?}: rescan {:?} is not a duration", r.get_ref()),
                        "write a number with a unit s, m, h or d, e.g. \"5m\"",
                    );
                }
            },
        };
        let Some(retention_alarm) = parse_size(t.retention_alarm.get_ref()) else {
            return self.invalid(
                t.retention_alarm.span(),
                format!("task {name:?}: retention_alarm {:?} is not a size", t.retention_alarm.get_ref()),
                "write a number of bytes with a unit kB, MB, GB or TB (1024-based, as PostgreSQL's), e.g. \"10GB\"",
            );
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
            keep_transactions: true,
            max_rows_per_sec: t.max_rows_per_sec,
            topic: t.topic.unwrap_or_else(|| DEFAULT_TOPIC.to_string()),
            index: t.index.unwrap_or_else(|| DEFAULT_INDEX.to_string()),
            max_bytes_per_sec: t.max_bytes_per_sec,
            rescan,
            retention_alarm,
            maps,
            cutover: Cutover {
                freeze: t.cutover.freeze,
                exempt_users: t.cutover.exempt_users,
                max_lag_seconds: t.cutover.max_lag_seconds,
                verify_max_age,
                quiet_seconds: t.cutover.quiet_seconds,
            },
            clock_skew,
            nodes: t.nodes.map(Spanned::into_inner).unwrap_or_default(),
            transport: None,
        })
    }

    /// `transport`, `transport_max_bytes`, `transport_max_age`: only `"direct"` (the
    /// default) or `"nats"`, the latter only in a cluster and for one-way tasks.
    fn transport(&self, t: &RawTask, cluster: bool) -> Result<Option<Transport>, ConfigError> {
        let name = t.name.get_ref();
        let nats = match &t.transport {
            None => false,
            Some(k) => match k.get_ref().as_str() {
                "direct" => false,
                "nats" => true,
                other => {
                    return self.invalid(
                        k.span(),
                        format!("task {name:?}: transport {other:?} is not known"),
                        "write transport = \"nats\" (through a JetStream stream) or leave it out (direct)",
                    );
                }
            },
        };
        if !nats {
            let set = t.transport_max_bytes.as_ref().or(t.transport_max_age.as_ref()).map(Spanned::span);
            if let Some(span) = set.or(t.publish_nodes.as_ref().map(Spanned::span)) {
                return self.invalid(
                    span,
                    format!("task {name:?} sets a transport key without transport = \"nats\""),
                    "add transport = \"nats\" or remove transport_max_bytes, transport_max_age and publish_nodes",
                );
            }
            return Ok(None);
        }
        let span = t.transport.as_ref().map(Spanned::span).unwrap_or(0..0);
        if !cluster {
            return self.invalid(
                span,
                format!("task {name:?} has transport = \"nats\", but the file has no [cluster]"),
                "add a [cluster] section (nats = \"nats://host:4222\"): the stream lives on the cluster's NATS servers",
            );
        }
        if t.mode == Mode::TwoWay {
            return self.invalid(
                span,
                format!("task {name:?}: transport = \"nats\" is built for one-way tasks only"),
                "remove transport (two-way directions apply directly) or make the task one-way",
            );
        }
        let max_bytes = match &t.transport_max_bytes {
            None => DEFAULT_TRANSPORT_MAX_BYTES,
            Some(b) => match parse_size(b.get_ref()).filter(|n| *n >= 1 << 20) {
                Some(n) => n,
                None => {
                    return self.invalid(
                        b.span(),
                        format!("task {name:?}: transport_max_bytes {:?} is not a size of 1MB or more", b.get_ref()),
                        "write a number of bytes with a unit kB, MB, GB or TB, at least \"1MB\", e.g. \"1GB\"",
                    );
                }
            },
        };
        let max_age = match &t.transport_max_age {
            None => DEFAULT_TRANSPORT_MAX_AGE,
            Some(a) => match parse_duration(a.get_ref()).filter(|d| !d.is_zero()) {
                Some(d) => d,
                None => {
                    return self.invalid(
                        a.span(),
                        format!("task {name:?}: transport_max_age {:?} is not a duration", a.get_ref()),
                        "write a number with a unit s, m, h or d, e.g. \"24h\"",
                    );
                }
            },
        };
        if let Some(nodes) = &t.publish_nodes {
            self.task_nodes(name, nodes, cluster)?;
        }
        let publish_nodes = t.publish_nodes.as_ref().map(|n| n.get_ref().clone()).unwrap_or_default();
        Ok(Some(Transport { max_bytes, max_age, publish_nodes }))
    }

    /// `clock_skew_alarm` (default 500ms) and `clock_skew_pause` (default 2s, or "off").
    fn clock_skew(
        &self,
        name: &str,
        alarm: Option<&Spanned<String>>,
        pause: Option<&Spanned<String>>,
    ) -> Result<SkewBounds, ConfigError> {
        let mut bounds = SkewBounds::default();
        let fix = "write a number with a unit ms, s or m, e.g. \"500ms\" or \"2s\"";
        if let Some(a) = alarm {
            match parse_duration(a.get_ref()) {
                Some(d) if !d.is_zero() => bounds.alarm = d,
                _ => {
                    return self.invalid(
                        a.span(),
                        format!("task {name:?}: clock_skew_alarm {:?} is not a positive duration", a.get_ref()),
                        fix,
                    );
                }
            }
        }
        if let Some(p) = pause {
            bounds.pause = match p.get_ref().trim() {
                "off" => None,
                text => match parse_duration(text) {
                    Some(d) if !d.is_zero() => Some(d),
                    _ => {
                        return self.invalid(
                            p.span(),
                            format!("task {name:?}: clock_skew_pause {:?} is not a positive duration", p.get_ref()),
                            "write a number with a unit ms, s or m, e.g. \"2s\", or \"off\" to alarm only",
                        );
                    }
                },
            };
        }
        if let Some(p) = bounds.pause
            && p < bounds.alarm
        {
            let span = pause.or(alarm).map(|s| s.span()).unwrap_or(0..0);
            return self.invalid(
                span,
                format!(
                    "task {name:?}: clock_skew_pause ({p:?}) is below clock_skew_alarm ({:?}): the task would pause without alarming first",
                    bounds.alarm
                ),
                "make clock_skew_pause at least clock_skew_alarm",
            );
        }
        Ok(bounds)
    }
}

/// `sqlite://rel.db` and `sqlite:rel.db` are relative to the task file's folder;
/// `sqlite:///abs.db` is absolute.
/// A path from the task file: `~/…` in the home folder, relative ones in `base`.
fn expand_home(base: &Path, text: &str) -> PathBuf {
    match (text.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => Path::new(&home).join(rest),
        _ => resolve(base, text),
    }
}

fn resolve(base: &Path, rest: &str) -> PathBuf {
    let p = rest.strip_prefix("//").unwrap_or(rest);
    let p = Path::new(p);
    if p.is_absolute() { p.to_path_buf() } else { base.join(p) }
}

/// Parses "512MB", "10GB", "1TB", "64kB" or a plain number of bytes (1024-based units,
/// as PostgreSQL's settings); "512MiB", "512M" and "64k" are the same sizes.
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (num, unit) = text.split_at(split);
    let n: u64 = num.parse().ok()?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" | "kib" | "k" => 1 << 10,
        "mb" | "mib" | "m" => 1 << 20,
        "gb" | "gib" | "g" => 1 << 30,
        "tb" | "tib" | "t" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(factor)
}

/// Parses "500ms", "90s", "15m", "24h", "7d".
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (num, unit) = text.split_at(split);
    let n: u64 = num.parse().ok()?;
    let secs = match unit.trim() {
        "ms" => return Some(Duration::from_millis(n)),
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
        assert_eq!(c.endpoints[0].url.resolve("a.db"), PathBuf::from("/etc/ferry/a.db"));
        assert_eq!(c.node.store, StoreUrl::Sqlite(PathBuf::from("/etc/ferry/ferry-meta.db")));
        assert_eq!(c.endpoints[1].url.to_string(), "mysql://ferry:***@127.0.0.1:3308");
    }

    #[test]
    fn every_sample_task_file_is_valid() {
        let dir = tempfile::tempdir().expect("temp folder");
        std::fs::write(dir.path().join("new.pw"), "pw\n").expect("password file");
        for (name, text) in [
            ("demo.toml", include_str!("../assets/demo.toml")),
            ("sqlite.toml", include_str!("../assets/sqlite.toml")),
            ("mysql.toml", include_str!("../assets/mysql.toml")),
        ] {
            // Tests cannot set variables (no unsafe code): PATH stands in for the password's.
            let text = text.replace("FERRY_OLD_PASSWORD", "PATH");
            let c = Config::parse(&dir.path().join(name), &text).unwrap_or_else(|e| panic!("assets/{name}: {e}"));
            assert!(!c.tasks.is_empty() && c.endpoints.len() == 2, "assets/{name}");
        }
    }

    #[test]
    fn a_cluster_section_joins_nodes_and_tasks_name_theirs() {
        let text = GOOD.replace("id = \"n1\"", "id = \"n1\"\nsite = \"dc-b\"")
            + "nodes = [\"n1\", \"n2\"]\n\n[cluster]\nnats = \"nats://u:pw@h1:4222,tls://h2:4222\"\nlease_ttl = \"8s\"\ncredentials = \"n.creds\"\nreplicas = 3\n";
        let c = Config::parse(Path::new("/etc/ferry/f.toml"), &text).expect("valid");
        let cluster = c.cluster.as_ref().expect("[cluster]");
        assert_eq!(cluster.lease_ttl, Duration::from_secs(8));
        assert_eq!(cluster.replicas, Some(3));
        assert_eq!(cluster.nats_masked(), "nats://u:***@h1:4222,tls://h2:4222");
        assert!(!format!("{cluster:?}").contains("pw"), "{cluster:?}");
        assert_eq!(cluster.credentials.as_deref(), Some(Path::new("/etc/ferry/n.creds")));
        assert_eq!(c.node.site.as_deref(), Some("dc-b"));
        assert_eq!(c.tasks[0].nodes, ["n1", "n2"]);
        assert!(Config::parse(Path::new("f.toml"), GOOD).expect("valid").cluster.is_none());
    }

    #[test]
    fn cluster_settings_that_cannot_work_are_refused_with_a_fix() {
        let cases = [
            (GOOD.to_string() + "nodes = [\"n1\"]\n", "the file has no [cluster]"),
            (GOOD.to_string() + "nodes = []\n[cluster]\nnats = \"nats://h:4222\"\n", "nodes lists no node"),
            (GOOD.to_string() + "[cluster]\nnats = \"http://u:pw@h:4222\"\n", "is not a NATS URL"),
            (GOOD.to_string() + "[cluster]\nnats = \"nats://h:4222\"\nlease_ttl = \"60s\"\n", "from 3s to 15s"),
            (GOOD.to_string() + "[cluster]\nnats = \"nats://h:4222\"\nreplicas = 2\n", "not 1, 3 or 5"),
            (GOOD.to_string() + "[cluster]\nnats = \"nats://h:4222\"\nbucket = \"x\"\n", "unknown field"),
        ];
        for (text, want) in cases {
            let e = Config::parse(Path::new("f.toml"), &text).expect_err(want).to_string();
            assert!(e.contains(want) && e.contains("fix") && !e.contains("pw"), "{want}: {e}");
        }
    }

    #[test]
    fn transport_nats_takes_its_limits_and_publishing_nodes() {
        let one_way = GOOD.replace("mode = \"two-way\"", "mode = \"one-way\"");
        let cluster = "\n[cluster]\nnats = \"nats://h:4222\"\n";
        let text = one_way.clone()
            + "transport = \"nats\"\npublish_nodes = [\"a1\"]\ntransport_max_bytes = \"2GB\"\n"
            + cluster;
        let c = Config::parse(Path::new("f.toml"), &text).expect("valid");
        let t = c.tasks[0].transport.as_ref().expect("transport");
        assert_eq!(
            (t.max_bytes, t.max_age, t.publish_nodes.as_slice()),
            (2 << 30, DEFAULT_TRANSPORT_MAX_AGE, &["a1".to_string()][..])
        );
        let direct =
            Config::parse(Path::new("f.toml"), &(one_way.clone() + "transport = \"direct\"\n")).expect("valid");
        assert!(direct.tasks[0].transport.is_none());
        let cases = [
            (one_way.clone() + "transport = \"nats\"\n", "the file has no [cluster]"),
            (GOOD.to_string() + "transport = \"nats\"\n" + cluster, "one-way tasks only"),
            (one_way.clone() + "transport = \"kafka\"\n", "is not known"),
            (one_way.clone() + "transport_max_age = \"1h\"\n", "without transport = \"nats\""),
            (one_way.clone() + "transport = \"nats\"\ntransport_max_bytes = \"10kB\"\n" + cluster, "1MB or more"),
        ];
        for (text, want) in cases {
            let e = Config::parse(Path::new("f.toml"), &text).expect_err(want).to_string();
            assert!(e.contains(want) && e.contains("fix"), "{want}: {e}");
        }
    }

    #[test]
    fn keep_transactions_false_is_kept() {
        let text = GOOD.replace("mode = \"two-way\"", "mode = \"two-way\"\nkeep_transactions = false");
        let c = Config::parse(Path::new("f.toml"), &text).expect("valid");
        assert!(!c.tasks[0].keep_transactions);
    }

    #[test]
    fn passwords_come_from_a_file_and_are_never_printed() {
        let dir = tempfile::tempdir().expect("temp folder");
        std::fs::write(dir.path().join("pw"), "s3cr3t-from-file\n").expect("write");
        let text = GOOD.replace("site = \"dc-b\"", "site = \"dc-b\"\npassword_file = \"pw\"");
        let c = Config::parse(&dir.path().join("f.toml"), &text).expect("valid");
        let pw = c.endpoints[1].password.as_ref().expect("a password");
        assert_eq!(pw.expose(), "s3cr3t-from-file");
        assert!(!format!("{c:?}").contains("s3cr3t"), "Debug prints no secret");
        assert!(!format!("{c:?}").contains(":secret@"), "Debug prints no URL password");
    }

    #[test]
    fn password_sources_that_cannot_be_read_name_the_line_and_the_fix() {
        let var = "FERRY_TEST_SURELY_UNSET_PASSWORD_VAR";
        let text = GOOD.replace("site = \"dc-b\"", &format!("site = \"dc-b\"\npassword_env = \"{var}\""));
        let msg = Config::parse(Path::new("f.toml"), &text).expect_err("unset variable").to_string();
        assert!(msg.contains("f.toml:") && msg.contains(var) && msg.contains("fix:"), "{msg}");
        let text = GOOD.replace("site = \"dc-b\"", "site = \"dc-b\"\npassword_file = \"/nonexistent/pw\"");
        let msg = Config::parse(Path::new("f.toml"), &text).expect_err("missing file").to_string();
        assert!(msg.contains("password_file") && msg.contains("/nonexistent/pw"), "{msg}");
        let text = GOOD
            .replace("site = \"dc-b\"", &format!("site = \"dc-b\"\npassword_env = \"{var}\"\npassword_file = \"pw\""));
        let msg = Config::parse(Path::new("f.toml"), &text).expect_err("both").to_string();
        assert!(msg.contains("both password_env and password_file"), "{msg}");
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
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
    }

    #[test]
    fn clock_skew_bounds_default_and_parse() {
        let base = GOOD.replace("[[task]]\n", "[[task]]\nclock_skew_alarm = \"250ms\"\nclock_skew_pause = \"off\"\n");
        assert_ne!(base, GOOD, "the fixture has a task");
        let c = Config::parse(Path::new("f.toml"), &base).expect("parses");
        assert_eq!(c.tasks[0].clock_skew, SkewBounds { alarm: Duration::from_millis(250), pause: None });
        let c = Config::parse(Path::new("f.toml"), GOOD).expect("parses");
        assert_eq!(c.tasks[0].clock_skew, SkewBounds::default());
        let bad = GOOD.replace("[[task]]\n", "[[task]]\nclock_skew_alarm = \"3s\"\n");
        let e = Config::parse(Path::new("f.toml"), &bad).expect_err("pause below alarm").to_string();
        assert!(e.contains("clock_skew_pause") && e.contains("fix:"), "{e}");
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("10GB"), Some(10 << 30));
        assert_eq!(parse_size("64kB"), Some(64 << 10));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("1 tb"), Some(1 << 40));
        assert_eq!(parse_size("ten"), None);
        assert_eq!(parse_size("5PB"), None);
        // The binary spellings (an s3:// URL's upload_cutoff= is read with this too).
        assert_eq!(parse_size("1048576"), Some(1 << 20));
        assert_eq!(parse_size("8MiB"), Some(8 << 20));
        assert_eq!(parse_size("200M"), Some(200 << 20));
        assert_eq!(parse_size("1 GiB"), Some(1 << 30));
        assert_eq!(parse_size("64k"), Some(64 << 10));
        assert_eq!(parse_size("ten"), None);
        assert_eq!(parse_size("8MB"), Some(8 << 20), "MB is 1024-based, as everywhere in the task file");
    }
}
