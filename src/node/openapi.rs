//! The OpenAPI 3.1 document served at `/openapi.json`, written by hand: the API is
//! small and the document is its contract (docs/node-api.md explains it in prose).

use serde_json::{Value, json};

fn op(summary: &str, role: &str, ok: &str) -> Value {
    json!({
        "summary": summary,
        "description": format!("Needs the {role} role."),
        "security": [{ "bearer": [] }],
        "responses": {
            "200": { "description": ok, "content": { "application/json": {} } },
            "400": { "$ref": "#/components/responses/Error" },
            "401": { "$ref": "#/components/responses/Error" },
            "403": { "$ref": "#/components/responses/Error" },
            "404": { "$ref": "#/components/responses/Error" }
        }
    })
}

fn with_param(mut v: Value, name: &str, what: &str) -> Value {
    v["parameters"] =
        json!([{ "name": name, "in": "path", "required": true, "description": what, "schema": { "type": "string" } }]);
    v
}

/// The document.
pub fn document() -> Value {
    let task = "Task name from the task file.";
    let endpoint = "Endpoint name from the task file.";
    let mut verify = with_param(op("Start a verify of the task", "operator", "unused"), "task", task);
    verify["responses"]["202"] = json!({ "description": "Started: the run's first progress, with its id." });
    let mut repair = with_param(
        op("Verify the task and repair its target (insert, update, delete by key; audited)", "admin", "unused"),
        "task",
        task,
    );
    repair["responses"]["202"] = json!({ "description": "Started: the run's first progress, with its id." });
    let mut log_params = json!([
        { "name": "limit", "in": "query", "schema": { "type": "integer", "maximum": 1000, "default": 100 } }
    ]);
    let mut conflicts = op("Newest entries of the targets' conflict logs", "viewer", "Conflict entries, newest first.");
    conflicts["parameters"] = log_params.clone();
    if let Some(a) = conflicts["parameters"].as_array_mut() {
        a.push(json!({ "name": "task", "in": "query", "schema": { "type": "string" } }));
    }
    let mut logs = op(
        "The node process's own log lines (FERRY_LOG), oldest first: those after sequence number `after`, at most `limit` of the newest",
        "viewer",
        "Lines {seq, at_us, level, message}.",
    );
    logs["parameters"] = json!([
        { "name": "after", "in": "query", "schema": { "type": "integer", "default": 0 } },
        { "name": "limit", "in": "query", "schema": { "type": "integer", "maximum": 2000, "default": 500 } }
    ]);
    let mut audit = op("Newest audit log entries", "viewer", "Audit entries, newest first.");
    audit["parameters"] = log_params.take();
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "ferry node API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Tasks with live metrics, actions on them, the conflict and audit logs. Bearer tokens with roles viewer < operator < admin (viewer reads; operator also pauses, resumes and verifies; admin also changes who can write or what the data is: freeze, cutover steps, repair); failed authentications are audited and an address with more than 10 in a minute gets 429; without [[token]] entries only loopback clients are served."
        },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "responses": {
                "Error": {
                    "description": "An error with a message.",
                    "content": { "application/json": { "schema": {
                        "type": "object", "required": ["error"], "properties": { "error": { "type": "string" } }
                    } } }
                }
            }
        },
        "paths": {
            "/health": { "get": { "summary": "Whether the node serves (viewer)", "responses": { "200": { "description": "status, node, tasks, failed_directions" } } } },
            "/openapi.json": { "get": op("This document", "viewer", "The OpenAPI document.") },
            "/metrics": { "get": op("Prometheus text format: ferry_task_lag_seconds, ferry_task_changes_total, ferry_task_errors_total, ferry_task_source_retained_bytes, ferry_task_retention_alarm, ferry_verify_differences, ...", "viewer", "Metrics.") },
            "/api/v1/node": { "get": op("Node id, version, start time, every task with live metrics, endpoints (passwords masked)", "viewer", "The node overview.") },
            "/api/v1/whoami": { "get": op("The caller's token name and role, and whether the node serves HTTPS", "viewer", "{name, role, tls}.") },
            "/api/v1/tasks": { "get": op("Every task with live metrics", "viewer", "Tasks.") },
            "/api/v1/tasks/{task}": { "get": with_param(op("One task with live metrics", "viewer", "The task."), "task", task) },
            "/api/v1/tasks/{task}/pause": { "post": with_param(op("Pause the task after its in-flight batch (audited)", "operator", "The paused task."), "task", task) },
            "/api/v1/tasks/{task}/resume": { "post": with_param(op("Resume a paused task (audited)", "operator", "The running task."), "task", task) },
            "/api/v1/tasks/{task}/verify": { "post": verify },
            "/api/v1/tasks/{task}/repair": { "post": repair },
            "/api/v1/tasks/{task}/cutover": {
                "get": with_param(op("The task's cutover: persisted state, steps with checks and durations, live lag and pending changes", "viewer", "The cutover."), "task", task),
                "post": with_param(op("Run a cutover action, body {\"action\": \"start\"|\"next\"|\"rollback\", \"quick_only\": bool}; answers when the step has run (audited); a step freezes or revokes writes and switches the direction, so admin as /freeze", "admin", "The cutover with the step's outcome."), "task", task)
            },
            "/api/v1/tasks/{task}/skip": { "post": with_param(op("Skip one source transaction on purpose, body {\"position\": \"…\", \"direction\": \"a->b\"} (direction optional for one-way tasks); recorded and audited as `ferry skip`, and a stopped task starts again past it; 409 while the task runs", "admin", "{task, direction, position, resumed}."), "task", task) },
            "/api/v1/logs": { "get": logs },
            "/api/v1/verify/{id}": { "get": with_param(op("Progress and report of a verify run", "viewer", "Progress."), "id", "Verify run id.") },
            "/api/v1/conflicts": { "get": conflicts },
            "/api/v1/audit": { "get": audit },
            "/api/v1/endpoints": { "get": op("Endpoints with freeze state (passwords masked)", "viewer", "Endpoints.") },
            "/api/v1/endpoints/{endpoint}/freeze": { "post": with_param(op("Refuse application writes on the endpoint (audited)", "admin", "The endpoint."), "endpoint", endpoint) },
            "/api/v1/endpoints/{endpoint}/unfreeze": { "post": with_param(op("Lift the freeze (audited)", "admin", "The endpoint."), "endpoint", endpoint) },
            "/api/v1/events": { "get": op("Server-sent events: an `overview` event per second", "viewer", "text/event-stream") },
            "/api/v1/cluster": { "get": op("The cluster (docs/cluster.md): every node (id, site, version, started_us, last_seen_us, tasks) and every task direction's owner; 404 on a node without [cluster]", "viewer", "{nats, nodes, owners}.") },
            "/api/v1/cluster/rebalance": { "post": op("Ask every node to hand its directions to live nodes at their targets' sites (audited)", "operator", "{requested: true}.") }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::document;
    use crate::node::ROUTES;

    #[test]
    fn every_route_is_documented() {
        let doc = document();
        for (method, path) in ROUTES {
            assert!(doc["paths"][path][method].is_object(), "{method} {path} missing from /openapi.json");
        }
        // One operation per route (a path may have several methods).
        let operations: usize = doc["paths"]
            .as_object()
            .map(|p| p.values().filter_map(|m| m.as_object()).map(|m| m.len()).sum())
            .unwrap_or(0);
        assert_eq!(operations, ROUTES.len());
    }
}
