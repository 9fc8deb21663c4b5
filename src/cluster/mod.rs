//! Nodes in a cluster over NATS JetStream (docs/cluster.md): each task direction is
//! owned through a lease in a KV bucket ([`lease`]), taken by compare-and-set on the
//! key's revision and renewed every few seconds; the owner runs the direction with the
//! lease's token (its create's revision) as the fencing floor of its target lease, so a
//! node that lost its cluster lease cannot land a checkpoint. Every node announces itself
//! ([`members`]) and takes over directions whose lease ran out ([`owner`]). Opt-in:
//! without `[cluster]` nothing here runs.

pub mod connect;
pub mod lease;
pub mod members;
pub mod owner;
pub mod paused;
pub mod reach;
pub mod transport;
pub mod view;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::kv::{self, Store};
use futures_util::TryStreamExt;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::connector::endpoint::Endpoint;
use crate::engine::EngineError;
use crate::engine::metrics::DirectionMetrics;
use crate::engine::task::DirectionSpec;
use crate::model::now_micros;
pub use view::ClusterView;

/// Why the cluster could not be joined or read.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No NATS server answered.
    #[error(
        "cannot connect to the cluster's NATS servers {nats}: {source}\n  fix: check [cluster] nats, that nats-server runs with JetStream (-js) and that this host reaches it"
    )]
    Connect {
        /// `[cluster] nats`, passwords masked.
        nats: String,
        /// Why.
        #[source]
        source: async_nats::ConnectError,
    },
    /// A URL of `[cluster] nats` does not parse.
    #[error(
        "[cluster] nats: {url} is not a NATS server URL: {source}\n  fix: write nats://host:4222 or tls://host:4222, several separated by commas"
    )]
    Url {
        /// The URL, password masked.
        url: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The credentials file could not be read.
    #[error("cannot read the NATS credentials file {path}: {source}\n  fix: check [cluster] credentials")]
    Credentials {
        /// `[cluster] credentials`.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A JetStream request failed.
    #[error(
        "cluster: {what}: {source}\n  fix: check that the NATS servers run with JetStream enabled and this node may use the ferry_* buckets"
    )]
    Nats {
        /// What was being done (names the bucket, key or node).
        what: String,
        /// Why.
        #[source]
        source: async_nats::Error,
    },
    /// A record in a bucket is not what ferry writes.
    #[error(
        "cluster: key {key} holds a record ferry cannot read: {source}\n  fix: run the same ferry release on every node"
    )]
    Record {
        /// The key.
        key: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
}

impl ClusterError {
    fn nats(what: String, source: impl std::error::Error + Send + Sync + 'static) -> ClusterError {
        ClusterError::Nats { what, source: Box::new(source) }
    }
}

/// Opens a KV bucket, creating it when missing (a bucket made by another node with the
/// same settings is the same bucket). The bucket's stream is created here as a KV
/// bucket's is, rather than with `create_key_value`: that asks for the account's info
/// first, whose answer from nats-server 2.9 the client cannot read.
async fn open_bucket(js: &async_nats::jetstream::Context, config: kv::Config) -> Result<Store, ClusterError> {
    let name = config.bucket.clone();
    if let Ok(store) = js.get_key_value(&name).await {
        return Ok(store);
    }
    let stream = async_nats::jetstream::stream::Config {
        name: format!("KV_{name}"),
        description: Some(config.description),
        subjects: vec![format!("$KV.{name}.>")],
        max_messages_per_subject: config.history.max(1),
        max_age: config.max_age,
        max_bytes: -1,
        max_message_size: -1,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        num_replicas: config.num_replicas.max(1),
        discard: async_nats::jetstream::stream::DiscardPolicy::New,
        ..Default::default()
    };
    // Another node may create it at the same moment: then it is there to open.
    let created = js.get_or_create_stream(stream).await;
    match js.get_key_value(&name).await {
        Ok(store) => Ok(store),
        Err(open) => Err(match created {
            Err(e) => ClusterError::nats(format!("creating bucket {name}"), e),
            Ok(_) => ClusterError::nats(format!("opening bucket {name}"), open),
        }),
    }
}

/// Every key of a bucket that holds a message (`what` names the listing in errors);
/// a deleted key is listed too, and its reader skips the delete marker.
async fn list_keys(store: &Store, what: &str) -> Result<Vec<String>, ClusterError> {
    // The stream's subjects, asked of its leader page by page: a request and its answer.
    // (A KV key listing is an ephemeral push consumer instead, and one made while a
    // NATS server had just died was seen to deliver nothing for a minute, so every
    // listing timed out until that server came back.) A key rewritten meanwhile keeps
    // its subject: its new message is stored before the old one goes.
    let prefix = format!("$KV.{}.", store.name);
    let subjects = store
        .stream
        .info_with_subjects(format!("{prefix}>"))
        .await
        .map_err(|e| ClusterError::nats(format!("listing {what}"), e))?;
    let listed: Vec<(String, usize)> =
        subjects.try_collect().await.map_err(|e| ClusterError::nats(format!("listing {what}"), e))?;
    let mut keys: Vec<String> =
        listed.into_iter().filter_map(|(subject, _)| subject.strip_prefix(&prefix).map(str::to_string)).collect();
    keys.sort();
    Ok(keys)
}

/// How many copies of ferry's buckets to ask for: `[cluster] replicas`, else 3 when
/// the server this node reached announces a cluster of three or more servers.
fn replicas(cluster: &crate::config::Cluster, js: &async_nats::jetstream::Context) -> usize {
    cluster.replicas.unwrap_or_else(|| {
        let info = js.client().server_info();
        if info.connect_urls.len() >= 3 { 3 } else { 1 }
    })
}

/// A name as a KV key part: characters a key may not hold escaped as `=XX` (hex bytes).
fn key_part(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("={b:02X}"));
        }
    }
    out
}

/// A direction this node may run, with the `[[task]] nodes` that may.
pub struct Candidate {
    /// The direction as planned for this node.
    pub spec: DirectionSpec,
    /// `[[task]] nodes` (empty: any node).
    pub nodes: Vec<String>,
}

/// What the ownership loop shares with readers (API, status).
#[derive(Default)]
struct Shared {
    /// Metrics of every direction that ran here since the node started.
    metrics: Mutex<Vec<Arc<DirectionMetrics>>>,
    /// Directions whose lease this node holds (`task from->to`), and whether each is
    /// held paused (its engine stopped).
    held: Mutex<HashMap<String, (String, bool)>>,
}

/// What [`Cluster::owner_of`] finds for a task.
#[derive(Debug, Clone, PartialEq)]
pub enum Ownership {
    /// This node holds every lease of the task's directions.
    Here,
    /// Another node holds one: its id and API address (`[node] listen`, when known).
    Elsewhere {
        /// `[node] id`.
        node: String,
        /// Its API address.
        listen: Option<String>,
    },
    /// No node holds it right now (between owners, or nobody may run it).
    Nobody,
}

/// This node's membership: the ownership loop, owned and stopped by [`Cluster::stop`].
pub struct Cluster {
    shared: Arc<Shared>,
    leases: Store,
    members: Store,
    paused: Store,
    /// `[node] id`.
    me: String,
    nats: String,
    shutdown: CancellationToken,
    task: tokio::sync::Mutex<Option<JoinHandle<Vec<EngineError>>>>,
}

impl Cluster {
    /// Connects to `[cluster]`, announces this node and starts taking the candidates'
    /// leases; directions run until `shutdown` or [`Cluster::stop`]. `unreachable`: the
    /// endpoints the node's start-up probe could not reach (probed again every few seconds).
    pub async fn join(
        config: &Config,
        candidates: Vec<Candidate>,
        unreachable: std::collections::BTreeSet<String>,
        shutdown: CancellationToken,
    ) -> Result<Cluster, ClusterError> {
        let Some(cluster) = &config.cluster else {
            return Err(ClusterError::nats(
                "joining".into(),
                std::io::Error::other("the task file has no [cluster] section"),
            ));
        };
        let js = connect::connect(cluster, &config.node.id).await?;
        let replicas = replicas(cluster, &js);
        // The ownership loop's lease requests time out early: one that hangs (a NATS
        // server died, a stream elects a new leader) must not hold it past a renewal
        // or two. Listings (the cluster view, the nodes) keep the default timeout: an
        // ordered consumer's requests cut short return keys twice or not at all.
        let mut quick = js.clone();
        quick.set_timeout(connect::request_timeout(cluster.lease_ttl));
        let leases = lease::bucket(&quick, cluster.lease_ttl, replicas).await?;
        let lease_list = lease::bucket(&js, cluster.lease_ttl, replicas).await?;
        let members = members::bucket(&js, replicas).await?;
        let paused = paused::bucket(&js, replicas).await?;
        // Relayed directions run as two roles, each with its own lease.
        let candidates = if candidates.iter().any(|c| c.spec.transport.is_some()) {
            transport::split(candidates, &transport::NatsRelay::open(js.clone(), replicas).await?)
        } else {
            candidates
        };
        // Each endpoint once, by name: a node takes only directions it can reach both ends of.
        let mut endpoints: Vec<Endpoint> = Vec::new();
        for c in &candidates {
            for ep in [&c.spec.source, &c.spec.target] {
                if !endpoints.iter().any(|e| e.name == ep.name) {
                    endpoints.push(ep.clone());
                }
            }
        }
        let (reach, reach_task) = reach::watch(endpoints, unreachable, shutdown.clone());
        let me = members::Member {
            id: config.node.id.clone(),
            site: config.node.site.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            listen: config.node.listen.clone(),
            started_us: now_micros(),
            last_seen_us: now_micros(),
            tasks: Vec::new(),
            unreachable: reach.names().into_iter().collect(),
        };
        // A bucket another node has just made may not take writes yet (its replicas are
        // still choosing a leader: "no stream found"); the first record is retried a while.
        let deadline = Instant::now() + Duration::from_secs(15);
        while let Err(e) = members::announce(&members, &me).await {
            if Instant::now() >= deadline || shutdown.is_cancelled() {
                return Err(e);
            }
            tracing::info!(error = %e, "the nodes bucket does not take this node's record yet; retrying");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let shared = Arc::new(Shared::default());
        let owner = owner::Owner::new(owner::Setup {
            me,
            leases: leases.clone(),
            members: members.clone(),
            paused: paused.clone(),
            ttl: cluster.lease_ttl,
            candidates,
            shutdown: shutdown.clone(),
            shared: shared.clone(),
            reach,
            reach_task: Some(reach_task),
        });
        let task = tokio::spawn(owner.run());
        Ok(Cluster {
            shared,
            leases: lease_list,
            members,
            paused,
            me: config.node.id.clone(),
            nats: cluster.nats_masked(),
            shutdown,
            task: tokio::sync::Mutex::new(Some(task)),
        })
    }

    /// Metrics of the directions that ran on this node (running or stopped).
    pub fn metrics(&self) -> Vec<Arc<DirectionMetrics>> {
        self.shared.metrics.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// Every node and every direction's owner, as the buckets hold them now.
    pub async fn view(&self) -> Result<ClusterView, ClusterError> {
        view::read(&self.nats, &self.members, &self.leases).await
    }

    /// Who holds the leases of `task`'s directions now.
    pub async fn owner_of(&self, task: &str) -> Result<Ownership, ClusterError> {
        let view = self.view().await?;
        let owners: Vec<&lease::LeaseRecord> = view.owners.iter().filter(|o| o.task == task).collect();
        if let Some(other) = owners.iter().find(|o| o.node != self.me) {
            let listen = view.nodes.iter().find(|n| n.id == other.node).map(|n| n.listen.clone());
            return Ok(Ownership::Elsewhere { node: other.node.clone(), listen });
        }
        Ok(if owners.is_empty() { Ownership::Nobody } else { Ownership::Here })
    }

    /// Pauses (`true`) or resumes `task` for the whole cluster: the pause is kept in the
    /// `ferry_tasks` bucket, so a node that takes the task over later holds it paused too.
    /// Waits up to `wait` for this node's ownership loop to stop (or start) the task's
    /// directions held here; `false` when they did not within it.
    pub async fn set_paused(&self, task: &str, actor: &str, pause: bool, wait: Duration) -> Result<bool, ClusterError> {
        if pause {
            paused::pause(&self.paused, &paused::Pause { task: task.into(), actor: actor.into(), at_us: now_micros() })
                .await?;
        } else {
            paused::resume(&self.paused, task).await?;
        }
        let start = Instant::now();
        loop {
            if self.held_paused(task) == Some(pause) {
                return Ok(true);
            }
            if start.elapsed() >= wait {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Whether this node holds `task` paused: `None` when it holds none of its
    /// directions, else whether all it holds are paused.
    pub fn held_paused(&self, task: &str) -> Option<bool> {
        let held = self.shared.held.lock().ok()?;
        let mine: Vec<bool> = held.values().filter(|(t, _)| t == task).map(|(_, p)| *p).collect();
        if mine.is_empty() { None } else { Some(mine.iter().all(|p| *p)) }
    }

    /// Asks every node to move its directions to their preferred nodes (`ferry cluster
    /// rebalance`).
    pub async fn rebalance(&self) -> Result<(), ClusterError> {
        owner::request_rebalance(&self.leases).await
    }

    /// Stops every direction of this node, gives their leases back and leaves the
    /// cluster; returns the directions' errors.
    pub async fn stop(&self) -> Vec<EngineError> {
        self.shutdown.cancel();
        let Some(task) = self.task.lock().await.take() else {
            return Vec::new();
        };
        match task.await {
            Ok(errors) => errors,
            Err(e) => {
                tracing::error!(error = %e, "the cluster ownership task ended abnormally");
                Vec::new()
            }
        }
    }
}
