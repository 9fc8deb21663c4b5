//! `ferry node`'s HTTP API (axum) over a [`LocalNode`]: JSON endpoints under `/api/v1`,
//! server-sent events, Prometheus `/metrics`, `/health` and `/openapi.json`, behind
//! bearer tokens with roles. See docs/node-api.md.

pub mod api;
pub mod auth;
pub mod metrics;
pub mod openapi;
pub mod sse;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::control::local::LocalNode;
use auth::Auth;

/// What every handler shares.
pub struct NodeState {
    /// The tasks of this process.
    pub control: Arc<LocalNode>,
    /// Tokens and roles.
    pub auth: Auth,
    /// [node].id, for audit entries (`name@node`).
    pub node_id: String,
    /// Cancelled when the node stops; ends event streams.
    pub shutdown: CancellationToken,
    /// Whether the API is served over HTTPS.
    pub tls: bool,
    /// Cutover steps under way: they run in tasks of the node, not of the request, so a
    /// client that goes away (a console quitting, a dropped connection) does not stop a
    /// step half-way; the node waits for them when it stops.
    pub steps: tokio_util::task::TaskTracker,
}

/// Every route, as (method, path); the OpenAPI document lists exactly these.
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/health"),
    ("get", "/openapi.json"),
    ("get", "/metrics"),
    ("get", "/api/v1/node"),
    ("get", "/api/v1/whoami"),
    ("get", "/api/v1/tasks"),
    ("get", "/api/v1/tasks/{task}"),
    ("post", "/api/v1/tasks/{task}/pause"),
    ("post", "/api/v1/tasks/{task}/resume"),
    ("post", "/api/v1/tasks/{task}/verify"),
    ("post", "/api/v1/tasks/{task}/repair"),
    ("get", "/api/v1/tasks/{task}/cutover"),
    ("post", "/api/v1/tasks/{task}/cutover"),
    ("post", "/api/v1/tasks/{task}/skip"),
    ("get", "/api/v1/verify/{id}"),
    ("get", "/api/v1/conflicts"),
    ("get", "/api/v1/audit"),
    ("get", "/api/v1/logs"),
    ("get", "/api/v1/endpoints"),
    ("post", "/api/v1/endpoints/{endpoint}/freeze"),
    ("post", "/api/v1/endpoints/{endpoint}/unfreeze"),
    ("get", "/api/v1/events"),
    ("get", "/api/v1/cluster"),
    ("post", "/api/v1/cluster/rebalance"),
];

/// Why the API could not serve.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The listen address is taken or invalid.
    #[error(
        "cannot listen on {addr}: {source}\n  fix: change [node] listen in the task file or stop what uses that port"
    )]
    Bind {
        /// [node].listen.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The server failed while serving.
    #[error("the node API on {addr} stopped: {source}")]
    Serve {
        /// The address served.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The API's routes over `state`.
pub fn router(state: Arc<NodeState>) -> Router {
    Router::new()
        .route("/health", get(api::health))
        .route("/openapi.json", get(api::openapi))
        .route("/metrics", get(api::metrics))
        .route("/api/v1/node", get(api::node))
        .route("/api/v1/whoami", get(api::whoami))
        .route("/api/v1/tasks", get(api::tasks))
        .route("/api/v1/tasks/{task}", get(api::task))
        .route("/api/v1/tasks/{task}/pause", post(api::pause))
        .route("/api/v1/tasks/{task}/resume", post(api::resume))
        .route("/api/v1/tasks/{task}/verify", post(api::verify_start))
        .route("/api/v1/tasks/{task}/repair", post(api::repair_start))
        .route("/api/v1/tasks/{task}/cutover", get(api::cutover_status).post(api::cutover))
        .route("/api/v1/tasks/{task}/skip", post(api::skip))
        .route("/api/v1/verify/{id}", get(api::verify_progress))
        .route("/api/v1/conflicts", get(api::conflicts))
        .route("/api/v1/audit", get(api::audit))
        .route("/api/v1/logs", get(api::logs))
        .route("/api/v1/endpoints", get(api::endpoints))
        .route("/api/v1/endpoints/{endpoint}/freeze", post(api::freeze))
        .route("/api/v1/endpoints/{endpoint}/unfreeze", post(api::unfreeze))
        .route("/api/v1/events", get(sse::stream))
        .route("/api/v1/cluster", get(api::cluster))
        .route("/api/v1/cluster/rebalance", post(api::rebalance))
        .fallback(api::not_found)
        .with_state(state)
}

/// Binds [node].listen.
pub async fn bind(addr: &str) -> Result<TcpListener, NodeError> {
    TcpListener::bind(addr).await.map_err(|source| NodeError::Bind { addr: addr.to_string(), source })
}

/// Serves the API on `listener` until `state.shutdown` is cancelled; open event streams
/// end with it, then in-flight requests finish. With `tls`, HTTPS only.
pub async fn serve(
    listener: TcpListener,
    state: Arc<NodeState>,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> Result<(), NodeError> {
    let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
    let shutdown = state.shutdown.clone();
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    let served = match tls {
        Some(config) => {
            // tap_io: axum gives a listener's peer address to ConnectInfo only through
            // its own TcpListener or a TapIo wrapper.
            let listener = axum::serve::ListenerExt::tap_io(tls::TlsListener::new(listener, config), |_| {});
            axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await
        }
        None => axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await,
    };
    served.map_err(|source| NodeError::Serve { addr, source })
}
