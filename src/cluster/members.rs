//! Who is in the cluster: every node writes its record into the `ferry_nodes` KV bucket
//! every few seconds; a node that stops renewing shows as gone, then drops out when the
//! bucket's max_age removes its record.

use std::time::Duration;

use async_nats::jetstream::kv::{self, Operation, Store};
use serde::{Deserialize, Serialize};

use super::ClusterError;

/// The bucket holding one record per node.
pub const BUCKET: &str = "ferry_nodes";
/// How long a node's record stays after its last renewal.
const KEEP: Duration = Duration::from_secs(120);

/// A node as it announces itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    /// `[node] id`.
    pub id: String,
    /// `[node] site`.
    pub site: Option<String>,
    /// ferry's version.
    pub version: String,
    /// `[node] listen` (its API).
    pub listen: String,
    /// When it started (µs since the epoch, its clock).
    pub started_us: i64,
    /// When it last wrote this record (µs since the epoch, its clock).
    pub last_seen_us: i64,
    /// The directions it runs (`task from->to`).
    pub tasks: Vec<String>,
    /// Endpoints it could not reach at its last probe (it takes no direction using them).
    #[serde(default)]
    pub unreachable: Vec<String>,
}

/// Opens (creating when missing) the members bucket.
pub async fn bucket(js: &async_nats::jetstream::Context, replicas: usize) -> Result<Store, ClusterError> {
    let config = kv::Config {
        bucket: BUCKET.to_string(),
        description: "ferry: the nodes of the cluster".to_string(),
        history: 1,
        max_age: KEEP,
        num_replicas: replicas,
        ..Default::default()
    };
    super::open_bucket(js, config).await
}

/// Writes this node's record (its key is its id, escaped as a lease key's parts are).
pub async fn announce(store: &Store, me: &Member) -> Result<(), ClusterError> {
    let key = member_key(&me.id);
    let body = serde_json::to_vec(me).map_err(|source| ClusterError::Record { key: key.clone(), source })?;
    store.put(&key, body.into()).await.map_err(|e| ClusterError::nats(format!("announcing node {}", me.id), e))?;
    Ok(())
}

/// Removes this node's record (a clean stop).
pub async fn leave(store: &Store, id: &str) -> Result<(), ClusterError> {
    let key = member_key(id);
    store.delete(&key).await.map_err(|e| ClusterError::nats(format!("removing node {id}"), e))
}

/// Every node's record, by id.
pub async fn all(store: &Store) -> Result<Vec<Member>, ClusterError> {
    let keys = super::list_keys(store, "the nodes").await?;
    let mut members = Vec::new();
    for key in keys {
        let entry = store.entry(&key).await.map_err(|e| ClusterError::nats(format!("reading node {key}"), e))?;
        if let Some(e) = entry.filter(|e| e.operation == Operation::Put) {
            // A record another release wrote in another shape is skipped, not fatal.
            if let Ok(m) = serde_json::from_slice::<Member>(&e.value) {
                members.push(m);
            }
        }
    }
    members.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(members)
}

fn member_key(id: &str) -> String {
    super::key_part(id)
}
