//! Paused tasks of the cluster: one key per paused task in the `ferry_tasks` KV bucket
//! (kept until resumed, not expiring), so a pause outlives the node that ran the task:
//! whoever owns the task's lease next holds it without starting it.

use std::collections::HashMap;

use async_nats::jetstream::kv::{self, Operation, Store};
use serde::{Deserialize, Serialize};

use super::ClusterError;

/// The bucket holding one record per paused task.
pub const BUCKET: &str = "ferry_tasks";

/// Who paused a task, and when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pause {
    /// Task name.
    pub task: String,
    /// Who asked (`user@node`).
    pub actor: String,
    /// When (µs since the epoch, the asking node's clock).
    pub at_us: i64,
}

/// Opens (creating when missing) the paused-tasks bucket.
pub async fn bucket(js: &async_nats::jetstream::Context, replicas: usize) -> Result<Store, ClusterError> {
    let config = kv::Config {
        bucket: BUCKET.to_string(),
        description: "ferry: paused tasks".to_string(),
        history: 1,
        num_replicas: replicas,
        ..Default::default()
    };
    super::open_bucket(js, config).await
}

/// Marks `task` paused.
pub async fn pause(store: &Store, pause: &Pause) -> Result<(), ClusterError> {
    let key = super::key_part(&pause.task);
    let body = serde_json::to_vec(pause).map_err(|source| ClusterError::Record { key: key.clone(), source })?;
    store.put(&key, body.into()).await.map_err(|e| ClusterError::nats(format!("pausing task {}", pause.task), e))?;
    Ok(())
}

/// Clears `task`'s pause.
pub async fn resume(store: &Store, task: &str) -> Result<(), ClusterError> {
    store.delete(super::key_part(task)).await.map_err(|e| ClusterError::nats(format!("resuming task {task}"), e))
}

/// Every paused task, by name.
pub async fn all(store: &Store) -> Result<HashMap<String, Pause>, ClusterError> {
    let keys = super::list_keys(store, "the paused tasks").await?;
    let mut paused = HashMap::new();
    for key in keys {
        let entry = store.entry(&key).await.map_err(|e| ClusterError::nats(format!("reading paused task {key}"), e))?;
        if let Some(e) = entry.filter(|e| e.operation == Operation::Put) {
            let p: Pause =
                serde_json::from_slice(&e.value).map_err(|source| ClusterError::Record { key: key.clone(), source })?;
            paused.insert(p.task.clone(), p);
        }
    }
    Ok(paused)
}
