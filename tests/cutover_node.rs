//! `ferry cutover` against a running `ferry node`: the CLI drives the node's task
//! through the API (admin role, as /freeze: an operator or a viewer is refused), the node runs the reverse
//! direction after Switch, every step is in the node's audit log with the token's name.

use std::time::Duration;

use ferry::node::auth::sha256_hex;

use crate::cutover_sqlite::{assert_ran_to_done, cutover, frozen, prepared};
use crate::support::node::{ADMIN, OPERATOR, VIEWER};
use crate::support::{FerryRun, app_conn, dump, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cutover_through_the_node_api_with_roles_and_audit() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
    let (dir, config) = prepared("").await;
    let mut text = std::fs::read_to_string(&config).expect("task file");
    text = text.replacen("[node]\n", &format!("[node]\nlisten = \"127.0.0.1:{port}\"\n"), 1);
    for (name, role, token) in [("viewer", "viewer", VIEWER), ("op", "operator", OPERATOR), ("root", "admin", ADMIN)] {
        text.push_str(&format!(
            "\n[[token]]\nname = \"{name}\"\nrole = \"{role}\"\nsha256 = \"{}\"\n",
            sha256_hex(token)
        ));
    }
    std::fs::write(&config, text).expect("write task file");
    let _node = FerryRun::start_command("node", &config, &dir.path().join("node.log"));
    ferry::client::install_crypto_provider();
    let http = crate::support::http_client(Duration::from_secs(60));
    let base = format!("http://127.0.0.1:{port}/api/v1/tasks/t/cutover");
    wait_until(Duration::from_secs(30), "the node to serve", || async {
        http.get(&base).bearer_auth(VIEWER).send().await.is_ok_and(|r| r.status() == 200)
    })
    .await;
    let view: serde_json::Value = viewer_json(&http, &base).await;
    assert!(view["state"].is_null() && view["steps"].as_array().is_some_and(|s| s.len() == 6), "{view}");

    let r = http.post(&base).bearer_auth(VIEWER).body(r#"{"action":"start"}"#).send().await.expect("post");
    assert_eq!(r.status(), 403, "a viewer may not run a step");
    let r = http.post(&base).bearer_auth(OPERATOR).body(r#"{"action":"start"}"#).send().await.expect("post");
    assert_eq!(r.status(), 403, "an operator may not either: a step freezes writes, as /freeze (admin)");
    assert!(r.text().await.unwrap_or_default().contains("needs the admin role"));
    let r = http.post(&base).bearer_auth(ADMIN).body(r#"{"action":"jump"}"#).send().await.expect("post");
    assert_eq!(r.status(), 400, "an unknown action is a bad request");
    for token in [VIEWER, OPERATOR] {
        let out = cutover(&config, &["start", "--yes", "--token", token]).await;
        assert_eq!(out.code, Some(2), "{}", out.all());
    }

    let out = cutover(&config, &["start", "--yes", "--token", ADMIN]).await;
    assert!(out.stdout.contains("through the node"), "{}", out.all());
    assert_ran_to_done(&out);

    // The node runs b -> a now: a write on b reaches a without anything else running.
    write_on_b_reaches_a(dir.path(), 777777).await;
    let task = viewer_json(&http, &format!("http://127.0.0.1:{port}/api/v1/tasks/t")).await;
    assert_eq!((&task["from"], &task["to"]), (&serde_json::json!("b"), &serde_json::json!("a")), "{task}");

    let audit = viewer_json(&http, &format!("http://127.0.0.1:{port}/api/v1/audit?limit=200")).await;
    let entries = audit.as_array().expect("entries");
    for step in ["preflight", "freeze", "drain", "verify", "switch", "open-target"] {
        let e = entries
            .iter()
            .find(|e| e["action"] == format!("cutover.{step}"))
            .unwrap_or_else(|| panic!("no audit entry for {step}: {audit}"));
        assert_eq!(e["actor"], "root@test-node", "{e}");
        assert!(e["detail"].as_str().is_some_and(|d| d.contains("\"millis\"") && d.contains("\"checks\"")), "{e}");
    }

    let out = cutover(&config, &["rollback", "--yes", "--token", ADMIN]).await;
    assert_eq!(out.code, Some(0), "{}", out.all());
    let view: serde_json::Value = viewer_json(&http, &base).await;
    assert_eq!(view["state"]["step"], "rolled-back", "{view}");
    assert_eq!(view["live"]["direction"], "a->b", "{view}");
}

/// GET `url` with the viewer's token, as JSON.
async fn viewer_json(http: &reqwest::Client, url: &str) -> serde_json::Value {
    http.get(url).bearer_auth(VIEWER).send().await.expect("request").json().await.expect("json")
}

/// An application write on b shows up on a: the node runs the reverse direction.
async fn write_on_b_reaches_a(dir: &std::path::Path, id: i64) {
    let mut b = app_conn(&dir.join("b.db")).await;
    sqlx::query("INSERT INTO orders(id, site, n) VALUES (?1, 'b', 7)")
        .bind(id)
        .execute(&mut b)
        .await
        .expect("write on b");
    sqlx::Connection::close(b).await.ok();
    let prefix = format!("{id},");
    wait_until(Duration::from_secs(60), "the write on b to reach a", || async {
        dump(&dir.join("a.db"), "orders", "id").await.iter().any(|r| r.starts_with(&prefix))
    })
    .await;
}

/// A `ferry node` on `config` with the cutover test hook set to `pause_in` (if any),
/// its log in `log`.
fn start_node(config: &std::path::Path, log: &std::path::Path, pause_in: Option<&str>) -> std::process::Child {
    let err = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("log file");
    let mut cmd = std::process::Command::new(crate::support::ferry_bin());
    cmd.args(["node", "--config"]).arg(config).env("FERRY_LOG", "info");
    if let Some(step) = pause_in {
        cmd.env("FERRY_CUTOVER_PAUSE_IN", step);
    }
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(err)
        .spawn()
        .expect("spawn ferry node")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_killed_inside_switch_resumes_the_cutover_after_restart() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
    let (dir, config) = prepared("").await;
    let text = std::fs::read_to_string(&config).expect("task file");
    std::fs::write(&config, text.replacen("[node]\n", &format!("[node]\nlisten = \"127.0.0.1:{port}\"\n"), 1))
        .expect("write task file");
    let log = dir.path().join("node.log");
    ferry::client::install_crypto_provider();
    let http = crate::support::http_client(Duration::from_secs(5));
    let base = format!("http://127.0.0.1:{port}/api/v1/tasks/t/cutover");
    let ready = || async {
        wait_until(Duration::from_secs(30), "the node to serve", || async {
            http.get(&base).send().await.is_ok_and(|r| r.status() == 200)
        })
        .await
    };
    let mut node = start_node(&config, &log, Some("switch"));
    ready().await;
    let cfg = config.to_str().expect("utf-8 path").to_string();
    let cli = tokio::spawn(async move {
        crate::support::ferry_within(
            &["cutover", "--config", &cfg, "--task", "t", "start", "--yes"],
            Duration::from_secs(120),
        )
        .await
    });
    wait_until(Duration::from_secs(60), "the node to pause inside switch", || async {
        std::fs::read_to_string(&log).unwrap_or_default().contains("paused inside step switch")
    })
    .await;
    node.kill().expect("SIGKILL the node");
    node.wait().expect("reap");
    let out = cli.await.expect("cli");
    assert_eq!(out.code, Some(3), "the CLI reports the lost node: {}", out.all());

    let mut node = start_node(&config, &log, None);
    ready().await;
    let status = cutover(&config, &["status"]).await;
    assert!(status.stdout.contains("next step switch"), "{}", status.all());
    let out = cutover(&config, &["next", "--yes"]).await;
    assert_eq!(out.code, Some(0), "switch resumed on the restarted node: {}", out.all());
    let out = cutover(&config, &["next", "--yes"]).await;
    assert!(out.stdout.contains("step open-target: done"), "{}", out.all());
    assert!(frozen(&dir.path().join("a.db")).await && !frozen(&dir.path().join("b.db")).await, "a frozen, b open");

    // The restarted node runs b -> a.
    write_on_b_reaches_a(dir.path(), 888888).await;
    node.kill().expect("stop the node");
    node.wait().expect("reap");
}
