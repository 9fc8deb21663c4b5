//! The JSON endpoints under `/api/v1`: read tasks, logs and endpoints; act on tasks and
//! endpoints. Every action checks the caller's role and is audited with its name.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{ConnectInfo, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::NodeState;
use super::auth::Caller;
use crate::config::Role;
use crate::control::{Control, ControlError};

/// An error answered as `{"error": "..."}` with its status.
#[derive(Debug)]
pub struct ApiError(pub ControlError);

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        ApiError(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut body = serde_json::json!({ "error": self.0.to_string() });
        // A cluster node not running the task names the one that does.
        if let ControlError::NotOwner { owner, api, .. } = &self.0 {
            body["owner"] = owner.clone().into();
            body["owner_api"] = api.clone().into();
        }
        let mut resp = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

impl FromRequestParts<Arc<NodeState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<NodeState>) -> Result<Self, Self::Rejection> {
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
        let header = parts.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        let ip = peer.map(|p| p.ip());
        if let Some(wait) = ip.and_then(|ip| state.auth.locked_out(ip)) {
            return Err(ApiError(ControlError::TooManyRequests {
                message: format!("too many failed authentications from this address; try again in {wait} s"),
            }));
        }
        match state.auth.authenticate(header, peer) {
            Ok(caller) => Ok(caller),
            // No Authorization header at all (a health probe, a browser) guesses
            // nothing: it is answered 401 without counting or auditing.
            Err(e) if header.is_none() => Err(e.into()),
            Err(e) => {
                // Audited with the address and the reason, never the token presented.
                let locked = ip.is_some_and(|ip| state.auth.record_failure(ip));
                let who = peer.map_or_else(|| "unknown".to_string(), |p| p.ip().to_string());
                let detail = format!("{} {}: {e}", parts.method, parts.uri.path());
                let store = state.control.store();
                if let Err(err) = store.audit(&format!("{who}@{}", state.node_id), "auth.failed", None, &detail).await {
                    tracing::warn!(error = %err, "cannot audit a failed authentication");
                }
                if locked {
                    tracing::warn!(peer = %who, "too many failed authentications: address refused for a while");
                }
                Err(e.into())
            }
        }
    }
}

/// Body of an action (`POST`): empty or a JSON object; no options yet, unknown keys are
/// refused so that a typo is not silently ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionBody {}

fn action_body(body: &Bytes) -> Result<ActionBody, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(ActionBody::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        ApiError(ControlError::BadRequest { message: format!("the body is not a valid JSON action: {e}") })
    })
}

/// Fuzzing entry (fuzz/fuzz_targets/node_api_json.rs and the corpus replay test): the
/// JSON bodies the API reads — an action body and a cutover request — parsed exactly
/// as the handlers parse them. Returns how many parsed; it must never panic.
pub fn fuzz_json_inputs(data: &[u8]) -> usize {
    let body = Bytes::copy_from_slice(data);
    usize::from(action_body(&body).is_ok())
        + usize::from(serde_json::from_slice::<crate::cutover::CutoverRequest>(data).is_ok())
        + usize::from(parse_skip(data).is_ok())
}

fn actor(state: &NodeState, caller: &Caller) -> String {
    format!("{}@{}", caller.name, state.node_id)
}

type ApiResult = Result<Response, ApiError>;

fn ok<T: serde::Serialize>(value: T) -> ApiResult {
    Ok(Json(value).into_response())
}

/// `GET /api/v1/node`.
pub async fn node(State(s): State<Arc<NodeState>>, caller: Caller) -> ApiResult {
    caller.require(Role::Viewer, "reading the node")?;
    ok(s.control.overview().await?)
}

/// `GET /api/v1/whoami`: the caller's token name and role, and whether the node serves
/// HTTPS (the console shows them and offers only what the role may do).
pub async fn whoami(State(s): State<Arc<NodeState>>, caller: Caller) -> ApiResult {
    caller.require(Role::Viewer, "reading who you are")?;
    ok(crate::control::Access { name: caller.name, role: caller.role, tls: Some(s.tls) })
}

/// `GET /api/v1/tasks`.
pub async fn tasks(State(s): State<Arc<NodeState>>, caller: Caller) -> ApiResult {
    caller.require(Role::Viewer, "reading tasks")?;
    ok(s.control.overview().await?.tasks)
}

/// `GET /api/v1/tasks/{task}`.
pub async fn task(State(s): State<Arc<NodeState>>, caller: Caller, Path(name): Path<String>) -> ApiResult {
    caller.require(Role::Viewer, "reading a task")?;
    let overview = s.control.overview().await?;
    match overview.tasks.into_iter().find(|t| t.name == name) {
        Some(t) => ok(t),
        None => Err(ControlError::NotFound { what: format!("task {name:?}") }.into()),
    }
}

/// `POST /api/v1/tasks/{task}/pause` (operator).
pub async fn pause(
    State(s): State<Arc<NodeState>>,
    caller: Caller,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult {
    caller.require(Role::Operator, "pausing a task")?;
    action_body(&body)?;
    ok(s.control.pause(&actor(&s, &caller), &name).await?)
}

/// `POST /api/v1/tasks/{task}/resume` (operator).
pub async fn resume(
    State(s): State<Arc<NodeState>>,
    caller: Caller,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult {
    caller.require(Role::Operator, "resuming a task")?;
    action_body(&body)?;
    ok(s.control.resume(&actor(&s, &caller), &name).await?)
}

/// `POST /api/v1/tasks/{task}/verify` (operator): 202 with the run's id.
pub async fn verify_start(
    State(s): State<Arc<NodeState>>,
    caller: Caller,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult {
    caller.require(Role::Operator, "starting a verify")?;
    action_body(&body)?;
    let progress = s.control.verify_start(&actor(&s, &caller), &name, false).await?;
    Ok((StatusCode::ACCEPTED, Json(progress)).into_response())
}

/// `POST /api/v1/tasks/{task}/repair` (admin): a verify that also makes the target equal
/// to the source; 202 with the run's id.
pub async fn repair_start(
    State(s): State<Arc<NodeState>>,
    caller: Caller,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult {
    caller.require(Role::Admin, "repairing a target")?;
    action_body(&body)?;
    let progress = s.control.verify_start(&actor(&s, &caller), &name, true).await?;
    Ok((StatusCode::ACCEPTED, Json(progress)).into_response())
}

/// `GET /api/v1/tasks/{task}/cutover`: the task's cutover state, steps and live values.
pub async fn cutover_status(State(s): State<Arc<NodeState>>, caller: Caller, Path(name): Path<String>) -> ApiResult {
    caller.require(Role::Viewer, "reading a cutover")?;
    ok(s.control.cutover_status(&name).await?)
}

/// `POST /api/v1/tasks/{task}/cutover` (admin): `{"action": "start"|"next"|"rollback",
/// "quick_only": false}`; answers when the step has run, with its outcome.
pub async fn cutover(
    State(s): State<Arc<NodeState>>,
    caller: Caller,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult {
    // A cutover step freezes or revokes writes on a store and switches the direction:
    // the same role as /freeze.
    caller.require(Role::Admin, "running a cutover step")?;
    let req: crate::cutover::CutoverRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError(ControlError::BadRequest {
            message: format!(
                "the body must be {{\"action\": \"start\"|\"next\"|\"rollback\", \"quick_only\": bool}}: {e}"
            ),
        })
    })?;
    let (control, who, task) = (s.control.clone(), actor(&s, &caller), name.clone());
    let step = s.steps.spawn(async move { control.cutover(&who, &task, req).await });
    let outcome = step.await.map_err(|e| {
        ApiError(ControlError::Task {
            task: name,
            message: format!("the cutover step ended abnormally: {e}; `ferry cutover` shows where it stands"),
        })
    })?;
    ok(outcome?)
}

/// `POST /api/v1/tasks/{task}/skip` (admin): `{"position": "…", "direction": "a->b"}`;
/// records the skip (audited) and starts a stopped task again past it.
pub async fn skip(State(s): State<Arc<NodeState>>, caller: Caller, Path(name): Path<String>, body: Bytes) -> ApiResult {
    // The target will never hold the transaction's changes: what the data is, as repair.
    caller.require(Role::Admin, "skipping a transaction")?;
    let req = parse_skip(&body)?;
    ok(s.control.skip(&actor(&s, &caller), &name, req).await?)
}

fn parse_skip(body: &[u8]) -> Result<crate::control::SkipRequest, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError(ControlError::BadRequest {
            message: format!("the body must be {{\"position\": \"…\", \"direction\": \"a->b\"}}: {e}"),
        })
    })
}

/// Query of `GET /api/v1/logs`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TailQuery {
    /// Only lines after this sequence number (default 0: from the oldest kept).
    after: Option<u64>,
    /// At most this many lines, the newest (default 500, at most 2000).
    limit: Option<usize>,
}

/// `GET /api/v1/logs?after=&limit=`: the node process's own log lines.
pub async fn logs(
    State(s): State<Arc<NodeState>>,
    caller: Caller,
    q: Result<Query<TailQuery>, QueryRejection>,
) -> ApiResult {
    caller.require(Role::Viewer, "reading the node's log")?;
    let Query(q) = q.map_err(|e| ApiError(ControlError::BadRequest { message: e.body_text() }))?;
    let limit = q.limit.unwrap_or(500).min(crate::control::logs::KEEP);
    ok(s.control.logs(q.after.unwrap_or(0), limit).await?)
}

/// `GET /api/v1/verify/{id}`.
pub async fn verify_progress(State(s): State<Arc<NodeState>>, caller: Caller, Path(id): Path<String>) -> ApiResult {
    caller.require(Role::Viewer, "reading a verify")?;
    ok(s.control.verify_progress(&id).await?)
}

/// Query of the log endpoints.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    /// Only this task (conflicts).
    task: Option<String>,
    /// At most this many entries (default 100, at most 1000).
    limit: Option<usize>,
}

fn log_query(q: Result<Query<LogQuery>, QueryRejection>) -> Result<(Option<String>, usize), ApiError> {
    let Query(q) = q.map_err(|e| ApiError(ControlError::BadRequest { message: e.body_text() }))?;
    Ok((q.task, q.limit.unwrap_or(100).min(1000)))
}

/// `GET /api/v1/conflicts?task=&limit=`.
pub async fn conflicts(
    State(s): State<Arc<NodeState>>,
    caller: Caller,
    q: Result<Query<LogQuery>, QueryRejection>,
) -> ApiResult {
    caller.require(Role::Viewer, "reading the conflict log")?;
    let (task, limit) = log_query(q)?;
    ok(s.control.conflicts(task.as_deref(), limit).await?)
}

/// `GET /api/v1/audit?limit=`.
pub async fn audit(
    State(s): State<Arc<NodeState>>,
    caller: Caller,
    q: Result<Query<LogQuery>, QueryRejection>,
) -> ApiResult {
    caller.require(Role::Viewer, "reading the audit log")?;
    let (_, limit) = log_query(q)?;
    ok(s.control.audit(limit).await?)
}

/// `GET /api/v1/endpoints`.
pub async fn endpoints(State(s): State<Arc<NodeState>>, caller: Caller) -> ApiResult {
    caller.require(Role::Viewer, "reading endpoints")?;
    ok(s.control.overview().await?.endpoints)
}

/// `GET /api/v1/cluster`: every node of the cluster and every direction's owner.
pub async fn cluster(State(s): State<Arc<NodeState>>, caller: Caller) -> ApiResult {
    caller.require(Role::Viewer, "reading the cluster")?;
    match s.control.cluster_view().await? {
        Some(view) => ok(view),
        None => {
            Err(ControlError::NotFound { what: "the cluster (this node's task file has no [cluster])".into() }.into())
        }
    }
}

/// `POST /api/v1/cluster/rebalance` (operator): directions move to their preferred nodes.
pub async fn rebalance(State(s): State<Arc<NodeState>>, caller: Caller, body: Bytes) -> ApiResult {
    caller.require(Role::Operator, "rebalancing the cluster")?;
    action_body(&body)?;
    s.control.cluster_rebalance().await?;
    s.control
        .store()
        .audit(&actor(&s, &caller), "cluster.rebalance", None, "asked every node to rebalance")
        .await
        .map_err(ControlError::from)?;
    ok(serde_json::json!({ "requested": true }))
}

/// `POST /api/v1/endpoints/{endpoint}/freeze` (admin).
pub async fn freeze(
    State(s): State<Arc<NodeState>>,
    caller: Caller,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult {
    caller.require(Role::Admin, "freezing an endpoint")?;
    action_body(&body)?;
    ok(s.control.freeze(&actor(&s, &caller), &name).await?)
}

/// `POST /api/v1/endpoints/{endpoint}/unfreeze` (admin).
pub async fn unfreeze(
    State(s): State<Arc<NodeState>>,
    caller: Caller,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult {
    caller.require(Role::Admin, "unfreezing an endpoint")?;
    action_body(&body)?;
    ok(s.control.unfreeze(&actor(&s, &caller), &name).await?)
}

/// `GET /health` (viewer, like every request when tokens exist: DESIGN.md): whether the
/// node serves and how many directions failed.
pub async fn health(State(s): State<Arc<NodeState>>, caller: Caller) -> ApiResult {
    caller.require(Role::Viewer, "reading the node's health")?;
    let overview = s.control.overview().await?;
    let failed = overview
        .tasks
        .iter()
        .flat_map(|t| &t.directions)
        .filter(|d| d.state == crate::engine::metrics::DirectionState::Failed)
        .count();
    ok(serde_json::json!({
        "status": if failed == 0 { "ok" } else { "degraded" },
        "node": overview.node,
        "tasks": overview.tasks.len(),
        "failed_directions": failed,
    }))
}

/// `GET /openapi.json`.
pub async fn openapi(caller: Caller) -> ApiResult {
    caller.require(Role::Viewer, "reading the API document")?;
    ok(super::openapi::document())
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(s): State<Arc<NodeState>>, caller: Caller) -> ApiResult {
    caller.require(Role::Viewer, "reading metrics")?;
    let overview = s.control.overview().await?;
    let text = super::metrics::render(&overview);
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response())
}

/// Any other path.
pub async fn not_found() -> ApiResult {
    Err(ControlError::NotFound { what: "this path".into() }.into())
}
