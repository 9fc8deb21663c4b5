//! A real `ferry node` on a free loopback port, for the API and console tests.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ferry::node::auth::sha256_hex;
use serde_json::Value;

use super::{FerryRun, create_db, task_file};

/// A viewer's token.
pub const VIEWER: &str = "viewer-token-1";
/// An operator's token.
pub const OPERATOR: &str = "operator-token-2";
/// An admin's token.
pub const ADMIN: &str = "admin-token-3";

/// A running `ferry node` on a free loopback port, killed on drop.
pub struct Node {
    run: FerryRun,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The folder with a.db, b.db, meta.db, ferry.toml, node.log.
    pub dir: tempfile::TempDir,
    /// A client for the test's own calls.
    pub http: reqwest::Client,
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

/// The shared two-way task file, listening on `port`, with an unused MySQL endpoint
/// whose password must never be shown, and optionally three tokens.
fn node_file(dir: &Path, port: u16, tokens: bool) -> PathBuf {
    let path = task_file(dir, "two-way", "");
    let mut text = std::fs::read_to_string(&path).expect("task file");
    text = text.replacen("[node]\n", &format!("[node]\nlisten = \"127.0.0.1:{port}\"\n"), 1);
    text.push_str("\n[[endpoint]]\nname = \"m\"\nurl = \"mysql://ferry:hunter2-secret@127.0.0.1:1/shop\"\n");
    if tokens {
        for (name, role, token) in
            [("viewer", "viewer", VIEWER), ("op", "operator", OPERATOR), ("root", "admin", ADMIN)]
        {
            text.push_str(&format!(
                "\n[[token]]\nname = \"{name}\"\nrole = \"{role}\"\nsha256 = \"{}\"\n",
                sha256_hex(token)
            ));
        }
    }
    std::fs::write(&path, text).expect("write task file");
    path
}

impl Node {
    /// Creates a.db and b.db with a kv table and starts a node on a two-way task t.
    pub async fn start(tokens: bool) -> Node {
        const KV: &str = "CREATE TABLE kv(k INTEGER PRIMARY KEY, v TEXT);";
        Node::start_with(tokens, KV, KV).await
    }

    /// Starts a node on a two-way task t between a.db and b.db made by these scripts.
    pub async fn start_with(tokens: bool, a_sql: &str, b_sql: &str) -> Node {
        ferry::client::install_crypto_provider();
        let dir = tempfile::tempdir().expect("temp dir");
        for (db, sql) in [("a.db", a_sql), ("b.db", b_sql)] {
            create_db(&dir.path().join(db), sql).await;
        }
        let port = free_port();
        let config = node_file(dir.path(), port, tokens);
        let run = FerryRun::start_command("node", &config, &dir.path().join("node.log"));
        let node = Node {
            run,
            base: format!("http://127.0.0.1:{port}"),
            dir,
            http: crate::support::http_client(Duration::from_secs(10)),
        };
        node.wait_ready().await;
        node
    }

    /// Waits until /health answers (200, or 401 when the node has tokens).
    pub async fn wait_ready(&self) {
        let health = format!("{}/health", self.base);
        let ready = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                if let Ok(r) = self.http.get(&health).send().await
                    && (r.status() == 200 || r.status() == 401)
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        assert!(
            ready.is_ok(),
            "node did not serve /health within 30 s; log:\n{}",
            std::fs::read_to_string(self.dir.path().join("node.log")).unwrap_or_default()
        );
    }

    /// Kills the node (SIGKILL), as a crash or a lost machine would.
    pub fn kill(&mut self) {
        self.run.kill();
    }

    /// Starts the node again on the same port and files.
    pub async fn restart(&mut self) {
        self.run.kill();
        let dir = self.dir.path();
        self.run = FerryRun::start_command("node", &dir.join("ferry.toml"), &dir.join("node.log"));
        self.wait_ready().await;
    }

    /// One request; (status, body).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> (u16, String) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b.to_string());
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        (status, resp.text().await.expect("body"))
    }

    /// GET.
    pub async fn get(&self, path: &str, token: Option<&str>) -> (u16, String) {
        self.call(reqwest::Method::GET, path, token, None).await
    }

    /// POST.
    pub async fn post(&self, path: &str, token: Option<&str>, body: Option<&str>) -> (u16, String) {
        self.call(reqwest::Method::POST, path, token, body).await
    }

    /// GET that must answer 200 with JSON.
    pub async fn json(&self, path: &str, token: &str) -> Value {
        let (status, body) = self.get(path, Some(token)).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {body}"))
    }
}
