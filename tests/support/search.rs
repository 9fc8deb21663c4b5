//! The search server for tests: the testbed's osmem-server (FERRY_TEST_SEARCH, an
//! in-memory server answering the OpenSearch 3.x API), read back through its own REST
//! API (`_search`, `_count`, `_doc`), never through ferry; and a small proxy in front of
//! it that asks for a password or pushes `_bulk` requests back with 429, for the faults
//! osmem-server does not make itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use serde_json::{Value, json};

/// URL of the testbed's server (`opensearch://127.0.0.1:PORT`).
pub fn url() -> String {
    std::env::var("FERRY_TEST_SEARCH").unwrap_or_else(|_| "opensearch://127.0.0.1:9201".into())
}

/// `http://127.0.0.1:PORT` of the testbed's server.
pub fn base() -> String {
    format!("http://{}", url().trim_start_matches("opensearch://"))
}

fn http() -> reqwest::Client {
    ferry::client::install_crypto_provider();
    crate::support::http_client(Duration::from_secs(20))
}

/// Fails the test, saying how to start the testbed, when the server is not there.
pub async fn require() {
    let r = http().get(base()).send().await;
    assert!(
        r.is_ok_and(|r| r.status().is_success()),
        "no search server at {}\nstart the testbed with `scripts/testbed start` and `eval \"$(scripts/testbed env)\"` \
         (or run the whole suite with `scripts/test`)",
        base()
    );
}

/// A request to the server; the status and JSON answer.
pub async fn call(method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut r = http().request(method, format!("{}{path}", base()));
    if let Some(b) = body {
        r = r.json(&b);
    }
    let resp = r.send().await.expect("search server answers");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Every document of an index (refreshed first), sorted by `id`: (doc id, source).
pub async fn documents(index: &str) -> Vec<(String, Value)> {
    call(reqwest::Method::POST, &format!("/{index}/_refresh"), None).await;
    let mut out = Vec::new();
    let mut after: Option<Value> = None;
    loop {
        let mut q = json!({"size": 1000, "sort": [{"id": "asc"}], "query": {"match_all": {}}});
        if let Some(a) = &after {
            q["search_after"] = a.clone();
        }
        let (status, j) = call(reqwest::Method::POST, &format!("/{index}/_search"), Some(q)).await;
        if status == 404 {
            return out;
        }
        let hits = j["hits"]["hits"].as_array().cloned().unwrap_or_default();
        for h in &hits {
            out.push((h["_id"].as_str().unwrap_or_default().to_string(), h["_source"].clone()));
        }
        match hits.last() {
            Some(h) if hits.len() == 1000 => after = Some(h["sort"].clone()),
            _ => return out,
        }
    }
}

/// The server's document count of an index.
pub async fn count(index: &str) -> u64 {
    call(reqwest::Method::POST, &format!("/{index}/_refresh"), None).await;
    let (_, j) = call(reqwest::Method::GET, &format!("/{index}/_count"), None).await;
    j["count"].as_u64().unwrap_or(0)
}

/// Deletes an index (test cleanup); absent is fine.
pub async fn drop_index(index: &str) {
    call(reqwest::Method::DELETE, &format!("/{index}"), None).await;
}

/// A unique index-name prefix for one test (lower case).
pub fn unique(tag: &str) -> String {
    format!("t{}{tag}", fastrand::u32(..))
}

/// What the proxy does to requests.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Basic-auth `user:password` every request must carry (else 401).
    pub password: Option<String>,
    /// `_bulk` requests answered 429 before the proxy forwards any.
    pub push_back: u32,
}

/// A proxy in front of the testbed's server, on its own port; dropped, it stops.
pub struct Proxy {
    /// `opensearch://127.0.0.1:PORT` of the proxy.
    pub url: String,
    /// `_bulk` requests it pushed back so far.
    pub pushed: Arc<AtomicU32>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// Starts a proxy with these faults.
pub async fn proxy(faults: Faults) -> Proxy {
    use base64::Engine as _;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
    let port = listener.local_addr().expect("proxy address").port();
    let pushed = Arc::new(AtomicU32::new(0));
    let expected =
        faults.password.as_ref().map(|p| format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(p)));
    let state = (Arc::new(faults), pushed.clone(), expected);
    let app = axum::Router::new().fallback(move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
        let (faults, pushed, expected) = state.clone();
        async move {
            if let Some(want) = &expected
                && headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(want.as_str())
            {
                let body = json!({"error": {"type": "security_exception", "reason": "unable to authenticate user"}, "status": 401});
                return (StatusCode::UNAUTHORIZED, body.to_string()).into_response();
            }
            if uri.path() == "/_bulk" && pushed.load(Ordering::SeqCst) < faults.push_back {
                pushed.fetch_add(1, Ordering::SeqCst);
                let body = json!({"error": {"type": "es_rejected_execution_exception", "reason": "rejected execution (test)"}, "status": 429});
                return (StatusCode::TOO_MANY_REQUESTS, body.to_string()).into_response();
            }
            let path = uri.path_and_query().map_or("/", |p| p.as_str());
            let mut r = http().request(reqwest::Method::from_bytes(method.as_str().as_bytes()).expect("method"), format!("{}{path}", base()));
            if let Some(ct) = headers.get("content-type").and_then(|v| v.to_str().ok()) {
                r = r.header("content-type", ct);
            }
            match r.body(body.to_vec()).send().await {
                Ok(resp) => {
                    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
                    (status, [("content-type", "application/json")], resp.bytes().await.unwrap_or_default().to_vec()).into_response()
                }
                Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
            }
        }
    });
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                rx.await.ok();
            })
            .await;
    });
    Proxy { url: format!("opensearch://127.0.0.1:{port}"), pushed, stop: Some(tx) }
}
