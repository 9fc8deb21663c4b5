//! `ferry node --config FILE`: runs the file's tasks as `ferry run` does and serves the
//! node API on [node].listen until SIGINT/SIGTERM.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{CommandError, every_second_until};
use crate::config::Config;
use crate::control::VerifyEngine;
use crate::control::local::LocalNode;
use crate::node::auth::Auth;
use crate::node::{self, NodeState};
use crate::store::actor;

/// `ferry node --config FILE`.
pub async fn node(config_path: &Path, signal: impl Future<Output = ()>) -> Result<u8, CommandError> {
    let config = Config::load(config_path)?;
    let tls = match &config.node.tls {
        Some(t) => Some(node::tls::server_config(t).map_err(|e| CommandError::Input {
            problem: e.to_string(),
            fix: "give [node] tls_cert a PEM certificate chain and tls_key its PEM private key".into(),
        })?),
        None => None,
    };
    // Bind first: a taken port fails before any task starts.
    let listener = node::bind(&config.node.listen)
        .await
        .map_err(|e| CommandError::Input { problem: e.to_string(), fix: "pick a free [node] listen address".into() })?;
    let local = Arc::new(LocalNode::start(config.clone(), Box::new(VerifyEngine::default())).await?);
    let who = actor(&config.node.id);
    let shutdown = CancellationToken::new();
    let state = Arc::new(NodeState {
        control: local.clone(),
        auth: Auth::new(config.tokens.clone()),
        node_id: config.node.id.clone(),
        shutdown: shutdown.clone(),
        tls: tls.is_some(),
        steps: tokio_util::task::TaskTracker::new(),
    });
    let steps = state.steps.clone();
    let scheme = if tls.is_some() { "https" } else { "http" };
    let server = tokio::spawn(node::serve(listener, state, tls));
    local.store().audit(&who, "node.start", None, &format!("serving {}", config.node.listen)).await?;
    info!(listen = %config.node.listen, scheme, "node serving; stop with Ctrl-C or SIGTERM");
    if config.tokens.is_empty() {
        warn!(
            listen = %config.node.listen,
            "NO [[token]] IN THE TASK FILE: the node API is UNAUTHENTICATED and serves loopback clients only \
             (every local user and process is admin); add [[token]] entries to serve others with roles"
        );
    }

    every_second_until(signal, async || {
        local.save_statuses().await;
        !server.is_finished()
    })
    .await;
    shutdown.cancel();
    let served = server.await;
    // A cutover step under way ends on its own (its state is saved step by step).
    steps.close();
    if !steps.is_empty() {
        info!(steps = steps.len(), "waiting for the cutover step under way to end");
    }
    steps.wait().await;
    let errors = local.shutdown().await;
    let detail =
        if errors.is_empty() { "clean stop".to_string() } else { format!("{} error(s): {}", errors.len(), errors[0]) };
    local.store().audit(&who, "node.stop", None, &detail).await?;
    match served {
        Ok(Err(e)) => return Err(CommandError::Runtime(e.to_string())),
        Err(e) => return Err(CommandError::Runtime(format!("the node API task ended abnormally: {e}"))),
        Ok(Ok(())) => {}
    }
    match errors.into_iter().next() {
        None => Ok(0),
        Some(e) => Err(e.into()),
    }
}
