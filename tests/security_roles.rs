//! Roles (issue 15.3) against a real `ferry node`: the matrix of docs/node-api.md on
//! every acting route (a viewer refused everywhere an operator or admin is needed, an
//! operator everywhere an admin is), `/api/v1/whoami` tells the console the role, and
//! failed authentications are audited (never with the token) and rate-limited.

use crate::support::node::{ADMIN, Node, OPERATOR, VIEWER};

/// (path, lowest role allowed) of every POST route, `{}` the task or endpoint.
const ACTIONS: [(&str, &str); 7] = [
    ("/api/v1/tasks/t/pause", "operator"),
    ("/api/v1/tasks/t/resume", "operator"),
    ("/api/v1/tasks/t/verify", "operator"),
    ("/api/v1/tasks/t/repair", "admin"),
    ("/api/v1/tasks/t/cutover", "admin"),
    ("/api/v1/endpoints/a/freeze", "admin"),
    ("/api/v1/endpoints/a/unfreeze", "admin"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_role_matrix_holds_on_every_acting_route() {
    let node = Node::start(true).await;
    for (token, role) in [(VIEWER, "viewer"), (OPERATOR, "operator"), (ADMIN, "admin")] {
        let who = node.json("/api/v1/whoami", token).await;
        assert_eq!(who["role"], role, "{who}");
        assert_eq!(who["tls"], false, "{who}");
    }
    for (path, needed) in ACTIONS {
        let refused: &[&str] = if needed == "admin" { &[VIEWER, OPERATOR] } else { &[VIEWER] };
        for token in refused {
            // A body that would be valid, so only the role can refuse it.
            let body = path.ends_with("cutover").then_some(r#"{"action":"start"}"#);
            let (status, text) = node.post(path, Some(token), body).await;
            assert_eq!(status, 403, "POST {path} must need {needed}: {text}");
            assert!(text.contains(&format!("needs the {needed} role")), "{text}");
        }
    }
    // What an operator may do, it can.
    let (status, text) = node.post("/api/v1/tasks/t/pause", Some(OPERATOR), None).await;
    assert_eq!(status, 200, "{text}");
    let (status, text) = node.post("/api/v1/tasks/t/resume", Some(OPERATOR), None).await;
    assert_eq!(status, 200, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_authentications_are_audited_and_rate_limited() {
    let node = Node::start(true).await;
    let wrong = "not-a-real-token-0123";
    let mut statuses = Vec::new();
    for _ in 0..12 {
        statuses.push(node.get("/api/v1/tasks", Some(wrong)).await.0);
    }
    assert!(statuses[..10].iter().all(|s| *s == 401), "{statuses:?}");
    assert_eq!(statuses[11], 429, "past 10 failures a minute the address waits: {statuses:?}");
    // Locked out: even a good token waits, so guessing cannot go on beside it.
    let (status, text) = node.get("/api/v1/tasks", Some(VIEWER)).await;
    assert_eq!(status, 429, "{text}");
    assert!(text.contains("try again in"), "{text}");

    let mut c = crate::support::app_conn(&node.dir.path().join("meta.db")).await;
    let failed: Vec<(String, String)> =
        sqlx::query_as("SELECT actor, detail FROM audit WHERE action = 'auth.failed' ORDER BY id")
            .fetch_all(&mut c)
            .await
            .expect("audit");
    sqlx::Connection::close(c).await.ok();
    assert!(failed.len() >= 10, "every failure up to the limit is audited: {failed:?}");
    assert!(failed[0].0.starts_with("127.0.0.1@"), "the address is recorded: {failed:?}");
    assert!(failed[0].1.contains("/api/v1/tasks") && failed[0].1.contains("unknown token"), "{failed:?}");
    assert!(failed.iter().all(|(_, d)| !d.contains(wrong)), "the presented token is never stored: {failed:?}");
}
