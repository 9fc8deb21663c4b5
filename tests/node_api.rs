//! The node API against a real `ferry node` over HTTP: every endpoint, roles (a viewer
//! cannot pause: 403), no token (401), malformed JSON (400 with a message), Prometheus
//! text that parses, server-sent events, and passwords never shown.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;

use crate::support::node::{ADMIN, Node, OPERATOR, VIEWER};
use crate::support::{app_conn, wait_until};

/// Polls the verify run a start answered with (`started`) until it is no longer running.
async fn finished_run(node: &Node, started: &str) -> Value {
    let id = serde_json::from_str::<Value>(started).expect("json")["id"].as_str().expect("run id").to_string();
    let since = std::time::Instant::now();
    loop {
        let (s, body) = node.get(&format!("/api/v1/verify/{id}"), Some(VIEWER)).await;
        assert_eq!(s, 200, "{body}");
        let run: Value = serde_json::from_str(&body).expect("json");
        if run["state"] != "running" {
            return run;
        }
        assert!(since.elapsed() < std::time::Duration::from_secs(90), "verify run did not finish: {run}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

fn error_of(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("error body is not JSON ({e}): {body}"));
    v["error"].as_str().unwrap_or_else(|| panic!("no error message in {body}")).to_string()
}

/// Checks the Prometheus text exposition format line by line; returns samples by name.
fn parse_prometheus(text: &str) -> HashMap<String, Vec<(String, f64)>> {
    let mut types: HashMap<String, String> = HashMap::new();
    let mut samples: HashMap<String, Vec<(String, f64)>> = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let (name, kind) = (parts.next().expect("name"), parts.next().expect("kind"));
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "line {n}: bad type {kind}"
            );
            assert!(types.insert(name.to_string(), kind.to_string()).is_none(), "line {n}: second TYPE for {name}");
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        assert!(!line.starts_with('#'), "line {n}: unknown comment {line}");
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("line {n}: no value: {line}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("line {n}: value is not a number: {line}"));
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let labels = rest.strip_suffix('}').unwrap_or_else(|| panic!("line {n}: unclosed labels: {line}"));
                for pair in labels.split("\",").filter(|p| !p.is_empty()) {
                    let (k, v) = pair.split_once("=\"").unwrap_or_else(|| panic!("line {n}: bad label {pair}"));
                    assert!(k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "line {n}: bad label name {k}");
                    assert!(!v.trim_end_matches('"').contains('"') || v.contains("\\\""), "line {n}: unescaped quote");
                }
                (name, labels.to_string())
            }
            None => (series, String::new()),
        };
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "line {n}: bad metric name {name}"
        );
        assert!(types.contains_key(name), "line {n}: sample of {name} before its TYPE line");
        samples.entry(name.to_string()).or_default().push((labels, value));
    }
    for name in types.keys() {
        samples.entry(name.clone()).or_default();
    }
    samples
}

async fn first_sse_event(node: &Node, token: &str) -> (String, Value) {
    let mut resp =
        node.http.get(format!("{}/api/v1/events", node.base)).bearer_auth(token).send().await.expect("events request");
    assert_eq!(resp.status(), 200);
    let ctype = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    assert!(ctype.starts_with("text/event-stream"), "content type {ctype}");
    let mut text = String::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        while !text.contains("\n\n") {
            match resp.chunk().await.expect("event chunk") {
                Some(c) => text.push_str(&String::from_utf8_lossy(&c)),
                None => break,
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no event within 10 s; got {text:?}");
    let event = text.lines().find_map(|l| l.strip_prefix("event: ")).unwrap_or("").to_string();
    let data = text.lines().find_map(|l| l.strip_prefix("data: ")).unwrap_or("");
    (event, serde_json::from_str(data).unwrap_or_else(|e| panic!("event data is not JSON ({e}): {text}")))
}

#[tokio::test]
async fn node_api_serves_every_endpoint_by_role() {
    let node = Node::start(true).await;
    use reqwest::Method;

    // Every request needs a token, health included (a viewer's is enough).
    let (s, _) = node.get("/health", None).await;
    assert_eq!(s, 401, "health without a token");
    let (s, body) = node.get("/health", Some(VIEWER)).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).expect("json")["node"], "test-node");
    for path in ["/api/v1/tasks", "/metrics", "/openapi.json", "/api/v1/events", "/api/v1/audit"] {
        let (s, body) = node.get(path, None).await;
        assert_eq!(s, 401, "GET {path} without a token: {body}");
        assert!(error_of(&body).contains("Bearer"), "{body}");
        let (s, _) = node.get(path, Some("not-a-token")).await;
        assert_eq!(s, 401, "GET {path} with an unknown token");
    }

    // Reads, as a viewer.
    let overview = node.json("/api/v1/node", VIEWER).await;
    assert_eq!(overview["node"], "test-node");
    assert_eq!(overview["version"], env!("CARGO_PKG_VERSION"), "the node says which ferry it runs");
    assert!(overview["started_us"].as_i64().is_some_and(|t| t > 0), "and since when: {overview}");
    let tasks = node.json("/api/v1/tasks", VIEWER).await;
    assert_eq!(tasks[0]["name"], "t");
    assert_eq!(tasks[0]["directions"].as_array().map(Vec::len), Some(2));
    let (s, body) = node.get("/api/v1/tasks/nope", Some(VIEWER)).await;
    assert_eq!(s, 404, "{body}");
    assert!(error_of(&body).contains("nope"));
    let endpoints = node.json("/api/v1/endpoints", VIEWER).await;
    let text = endpoints.to_string() + &overview.to_string();
    assert!(!text.contains("hunter2"), "a password is shown: {text}");
    assert!(text.contains("mysql://ferry:***@127.0.0.1:1/shop"), "{text}");
    assert!(node.json("/api/v1/conflicts?task=t&limit=5", VIEWER).await.is_array());
    let (s, body) = node.get("/api/v1/conflicts?limit=many", Some(VIEWER)).await;
    assert_eq!(s, 400, "{body}");
    assert!(!error_of(&body).is_empty());
    let doc = node.json("/openapi.json", VIEWER).await;
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["paths"]["/api/v1/tasks/{task}/pause"]["post"].is_object());

    // Live metrics move with application writes.
    let mut app = app_conn(&node.dir.path().join("a.db")).await;
    for k in 0..50 {
        sqlx::query("INSERT INTO kv(k, v) VALUES (?1, 'x')").bind(k).execute(&mut app).await.expect("insert");
    }
    wait_until(Duration::from_secs(20), "the node to report the 50 applied changes", || async {
        let t = node.json("/api/v1/tasks/t", VIEWER).await;
        t["directions"].as_array().is_some_and(|d| {
            d.iter().any(|d| d["direction"] == "a->b" && d["changes_total"].as_u64().unwrap_or(0) >= 50)
        })
    })
    .await;

    // Prometheus text parses and carries the contract's names.
    let (s, metrics) = node.get("/metrics", Some(VIEWER)).await;
    assert_eq!(s, 200);
    let samples = parse_prometheus(&metrics);
    for name in
        ["ferry_task_lag_seconds", "ferry_task_changes_total", "ferry_task_errors_total", "ferry_verify_differences"]
    {
        assert!(samples.contains_key(name), "{name} missing from /metrics:\n{metrics}");
    }
    let changes = &samples["ferry_task_changes_total"];
    assert!(
        changes.iter().any(|(l, v)| l.contains("direction=\"a->b\"") && *v >= 50.0),
        "changes_total of a->b: {changes:?}"
    );

    // Server-sent events.
    let (event, data) = first_sse_event(&node, VIEWER).await;
    assert_eq!(event, "overview");
    assert_eq!(data["tasks"][0]["name"], "t");

    // Actions: roles, malformed JSON, conflicts with state, audit with the caller's name.
    let (s, body) = node.post("/api/v1/tasks/t/pause", Some(VIEWER), None).await;
    assert_eq!(s, 403, "a viewer paused: {body}");
    assert!(error_of(&body).contains("operator"), "{body}");
    let (s, body) = node.post("/api/v1/tasks/t/pause", Some(OPERATOR), Some("{\"reason\": ")).await;
    assert_eq!(s, 400, "{body}");
    assert!(error_of(&body).contains("JSON"), "{body}");
    let (s, body) = node.post("/api/v1/tasks/t/pause", Some(OPERATOR), Some("{}")).await;
    assert_eq!(s, 200, "{body}");
    let paused: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(paused["paused"], true);
    assert!(paused["directions"].as_array().expect("dirs").iter().all(|d| d["state"] == "stopped"), "{body}");
    let (s, body) = node.post("/api/v1/tasks/t/pause", Some(OPERATOR), None).await;
    assert_eq!(s, 409, "{body}");
    let (s, body) = node.post("/api/v1/tasks/t/resume", Some(OPERATOR), None).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).expect("json")["paused"], false);
    let (s, body) = node.post("/api/v1/tasks/t/resume", Some(OPERATOR), None).await;
    assert_eq!(s, 409, "resuming a running task: {body}");
    let (s, _) = node.post("/api/v1/tasks/nope/resume", Some(OPERATOR), None).await;
    assert_eq!(s, 404);

    // Verify: an operator starts a run; anyone reads its progress until it ends.
    let (s, _) = node.post("/api/v1/tasks/t/verify", Some(VIEWER), None).await;
    assert_eq!(s, 403, "a viewer cannot start a verify");
    let (s, body) = node.post("/api/v1/tasks/t/verify", Some(OPERATOR), None).await;
    assert_eq!(s, 202, "{body}");
    let run = finished_run(&node, &body).await;
    assert_eq!(run["state"], "identical", "{run}");
    assert!(run["report"].as_str().is_some_and(|r| r.contains("IDENTICAL")), "{run}");
    let (s, _) = node.get("/api/v1/verify/no-such-run", Some(VIEWER)).await;
    assert_eq!(s, 404);
    // Repair writes to the target: admin only.
    let (s, _) = node.post("/api/v1/tasks/t/repair", Some(OPERATOR), None).await;
    assert_eq!(s, 403, "an operator cannot repair");
    let (s, body) = node.post("/api/v1/tasks/t/repair", Some(ADMIN), None).await;
    assert_eq!(s, 202, "{body}");
    assert!(serde_json::from_str::<Value>(&body).expect("json")["id"].is_string(), "{body}");
    // The run ends (nothing to repair on identical sides), and the audit log names the
    // admin who asked for it.
    let run = finished_run(&node, &body).await;
    assert_eq!(run["state"], "identical", "{run}");
    let (_, audit) = node.get("/api/v1/audit", Some(VIEWER)).await;
    assert!(audit.contains("verify.repair_start"), "the repair is audited: {audit}");

    // Freeze needs admin; it really refuses application writes, and unfreeze lifts it.
    let (s, _) = node.post("/api/v1/endpoints/a/freeze", Some(OPERATOR), None).await;
    assert_eq!(s, 403);
    let (s, body) = node.post("/api/v1/endpoints/a/freeze", Some(ADMIN), None).await;
    assert_eq!(s, 200, "{body}");
    assert!(serde_json::from_str::<Value>(&body).expect("json")["frozen_since_us"].is_i64(), "{body}");
    let refused = sqlx::query("INSERT INTO kv(k, v) VALUES (1000, 'frozen')").execute(&mut app).await;
    assert!(refused.is_err(), "a frozen endpoint took an application write");
    let (s, body) = node.post("/api/v1/endpoints/a/unfreeze", Some(ADMIN), None).await;
    assert_eq!(s, 200, "{body}");
    sqlx::query("INSERT INTO kv(k, v) VALUES (1000, 'thawed')").execute(&mut app).await.expect("write after unfreeze");
    // A MySQL endpoint nothing answers on: the failure names it (and no password).
    let (s, body) = node.post("/api/v1/endpoints/m/freeze", Some(ADMIN), None).await;
    assert_eq!(s, 500, "{body}");
    assert!(error_of(&body).contains("endpoint m: connecting") && !body.contains("hunter2"), "{body}");
    let (s, _) = node.call(Method::POST, "/api/v1/endpoints/zz/freeze", Some(ADMIN), None).await;
    assert_eq!(s, 404);

    let audit = node.json("/api/v1/audit?limit=20", VIEWER).await;
    let entries: Vec<(String, String)> = audit
        .as_array()
        .expect("audit array")
        .iter()
        .map(|e| (e["actor"].as_str().unwrap_or("").to_string(), e["action"].as_str().unwrap_or("").to_string()))
        .collect();
    for (actor, action) in [
        ("op@test-node", "task.pause"),
        ("op@test-node", "task.resume"),
        ("root@test-node", "endpoint.freeze"),
        ("root@test-node", "endpoint.unfreeze"),
    ] {
        assert!(
            entries.contains(&(actor.to_string(), action.to_string())),
            "{action} by {actor} not audited: {entries:?}"
        );
    }
    let (s, _) = node.get("/api/v1/nothing-here", Some(VIEWER)).await;
    assert_eq!(s, 404);
    sqlx::Connection::close(app).await.ok();
}

#[tokio::test]
async fn node_without_tokens_serves_loopback_clients() {
    let node = Node::start(false).await;
    let (s, body) = node.get("/api/v1/tasks", None).await;
    assert_eq!(s, 200, "{body}");
    let (s, body) = node.post("/api/v1/tasks/t/pause", None, None).await;
    assert_eq!(s, 200, "{body}");
    let audit = node.json("/api/v1/audit", "ignored").await;
    assert_eq!(audit[0]["actor"], "local@test-node", "{audit}");
}

/// The direction `dir` of task t as the node reports it.
async fn direction(node: &Node, dir: &str) -> Value {
    let t = node.json("/api/v1/tasks/t", VIEWER).await;
    t["directions"].as_array().and_then(|d| d.iter().find(|d| d["direction"] == dir).cloned()).unwrap_or_default()
}

#[tokio::test]
async fn node_api_serves_snapshot_progress_its_log_lines_and_skips_a_refused_transaction() {
    // a holds 300 rows to copy; b refuses v = 'bad' (a CHECK the source does not have).
    let rows: String = (1..=300).map(|k| format!("INSERT INTO kv VALUES ({k}, 'v{k}');")).collect();
    let a = format!("CREATE TABLE kv(k INTEGER PRIMARY KEY, v TEXT);{rows}");
    let b = "CREATE TABLE kv(k INTEGER PRIMARY KEY, v TEXT CHECK (v <> 'bad'));";
    let node = Node::start_with(true, &a, b).await;

    // Snapshot progress per table: rows copied of the source's estimate.
    wait_until(Duration::from_secs(20), "the snapshot of kv to be done", || async {
        let d = direction(&node, "a->b").await;
        d["snapshot_tables"].as_array().is_some_and(|t| t.iter().any(|t| t["table"] == "kv" && t["state"] == "done"))
    })
    .await;
    let d = direction(&node, "a->b").await;
    let kv = &d["snapshot_tables"][0];
    assert_eq!((kv["rows_copied"].as_u64(), kv["rows_estimated"].as_u64()), (Some(300), Some(300)), "{d}");
    let (_, metrics) = node.get("/metrics", Some(VIEWER)).await;
    let samples = parse_prometheus(&metrics);
    let rows = &samples["ferry_task_snapshot_table_rows"];
    assert!(rows.iter().any(|(l, v)| l.contains("table=\"kv\"") && *v == 300.0), "{rows:?}");
    assert!(samples.contains_key("ferry_task_snapshot_table_rows_estimated"), "{metrics}");

    // The node's own log lines: a viewer reads them, and asks only for the new ones.
    let (s, _) = node.get("/api/v1/logs", None).await;
    assert_eq!(s, 401);
    let lines = node.json("/api/v1/logs", VIEWER).await;
    let lines = lines.as_array().expect("an array of lines").clone();
    assert!(
        lines.iter().any(|l| l["level"] == "INFO" && l["message"].as_str().is_some_and(|m| m.contains("started"))),
        "the node's start is logged: {lines:?}"
    );
    let last = lines.last().and_then(|l| l["seq"].as_u64()).expect("a sequence number");
    let newer = node.json(&format!("/api/v1/logs?after={last}"), VIEWER).await;
    assert!(newer.as_array().is_some_and(|n| n.iter().all(|l| l["seq"].as_u64() > Some(last))), "{newer}");
    let (s, body) = node.get("/api/v1/logs?after=soon", Some(VIEWER)).await;
    assert_eq!(s, 400, "{body}");

    // A row b refuses stops a->b on a named transaction.
    let mut app = app_conn(&node.dir.path().join("a.db")).await;
    sqlx::query("INSERT INTO kv(k, v) VALUES (1000, 'bad')").execute(&mut app).await.expect("insert");
    wait_until(Duration::from_secs(30), "a->b to stop on the refused row", || async {
        direction(&node, "a->b").await["state"] == "failed"
    })
    .await;
    let d = direction(&node, "a->b").await;
    let failed = &d["failed_change"];
    assert_eq!((failed["table"].as_str(), failed["skippable"].as_bool()), (Some("kv"), Some(true)), "{d}");
    assert!(failed["message"].as_str().is_some_and(|m| m.contains("CHECK")), "{d}");
    let position = failed["position"].as_str().expect("position").to_string();

    // Skipping changes what the target holds: admin only, audited, and the task goes on.
    let body = format!("{{\"position\": \"{position}\", \"direction\": \"a->b\"}}");
    let (s, _) = node.post("/api/v1/tasks/t/skip", Some(OPERATOR), Some(&body)).await;
    assert_eq!(s, 403, "an operator cannot skip");
    let (s, err) = node.post("/api/v1/tasks/t/skip", Some(ADMIN), Some("{\"position\": \"x\", \"oops\": 1}")).await;
    assert_eq!(s, 400, "{err}");
    let (s, err) = node.post("/api/v1/tasks/t/skip", Some(ADMIN), Some(&body.replace("a->b", "a->z"))).await;
    assert_eq!(s, 400, "no such direction: {err}");
    // The direction may be left out: the node knows which one stopped at the position.
    let body = format!("{{\"position\": \"{position}\"}}");
    let (s, body) = node.post("/api/v1/tasks/t/skip", Some(ADMIN), Some(&body)).await;
    assert_eq!(s, 200, "{body}");
    let skipped: Value = serde_json::from_str(&body).expect("json");
    assert_eq!((skipped["direction"].as_str(), skipped["resumed"].as_bool()), (Some("a->b"), Some(true)), "{body}");
    sqlx::query("INSERT INTO kv(k, v) VALUES (1001, 'good')").execute(&mut app).await.expect("insert");
    let b_db = node.dir.path().join("b.db");
    let count_on_b = |k: i64| {
        let path = b_db.clone();
        async move {
            let mut b = app_conn(&path).await;
            let n: i64 =
                sqlx::query_scalar("SELECT count(*) FROM kv WHERE k = ?1").bind(k).fetch_one(&mut b).await.unwrap_or(0);
            sqlx::Connection::close(b).await.ok();
            n
        }
    };
    wait_until(Duration::from_secs(30), "a->b to go on past the skipped transaction", || async {
        count_on_b(1001).await == 1
    })
    .await;
    let n = count_on_b(1000).await;
    assert_eq!(n, 0, "the skipped row never reached b");
    let (s, _) = node.post("/api/v1/tasks/t/skip", Some(ADMIN), Some(&body)).await;
    assert_eq!(s, 400, "the answer is not a request body");
    let audit = node.json("/api/v1/audit?limit=20", VIEWER).await.to_string();
    assert!(audit.contains("\"skip\"") && audit.contains(&position) && audit.contains("root@test-node"), "{audit}");
    sqlx::Connection::close(app).await.ok();
}
