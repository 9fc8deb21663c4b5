//! The NATS connection of a node: `[cluster] nats` with its TLS CA and credentials file.

use std::time::Duration;

use super::ClusterError;
use crate::config::Cluster;

/// How long the first connection may take before the node gives up with a clear error.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a JetStream request may take before it fails: a quarter of the lease TTL,
/// 1 s to 5 s.
pub fn request_timeout(lease_ttl: Duration) -> Duration {
    (lease_ttl / 4).clamp(Duration::from_secs(1), Duration::from_secs(5))
}

/// Connects to the cluster's NATS servers as node `node_id`; JetStream on top.
pub async fn connect(cluster: &Cluster, node_id: &str) -> Result<async_nats::jetstream::Context, ClusterError> {
    let mut options = async_nats::ConnectOptions::new()
        .name(format!("ferry node {node_id}"))
        .connection_timeout(CONNECT_TIMEOUT)
        // Reconnect for ever: a NATS outage only stops renewals, which stops the tasks.
        .max_reconnects(None);
    if let Some(ca) = &cluster.tls_ca {
        options = options.add_root_certificates(ca.clone()).require_tls(true);
    }
    if let Some(creds) = &cluster.credentials {
        options = options
            .credentials_file(creds)
            .await
            .map_err(|source| ClusterError::Credentials { path: creds.clone(), source })?;
    }
    // async-nats parses a &str as one URL: a list is split here (`a,b,c`).
    let mut servers = Vec::new();
    for url in cluster.nats.split(',').map(str::trim).filter(|u| !u.is_empty()) {
        let addr = url
            .parse::<async_nats::ServerAddr>()
            .map_err(|source| ClusterError::Url { url: crate::connector::endpoint::mask_password(url), source })?;
        servers.push(addr);
    }
    let client = options
        .connect(servers)
        .await
        .map_err(|source| ClusterError::Connect { nats: cluster.nats_masked(), source })?;
    Ok(async_nats::jetstream::new(client))
}
