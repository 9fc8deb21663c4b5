//! A small Doris for tests (no Doris or StarRocks package is reachable here): an FE
//! port that answers a Stream Load (`PUT /api/{db}/{table}/_stream_load`) with a 307 to
//! a BE port, both checking basic authentication, and a BE that dedupes labels ("Label
//! Already Exists" with the existing job's state), applies JSON lines to rows kept in
//! SQLite as a Unique Key table does (upsert by key, `__DORIS_DELETE_SIGN__` = 1
//! deletes), and answers the documented JSON status. Faults on request: failed loads,
//! 5xx answers, slow answers, an answer that never comes after the load applied, and
//! labels someone else used already. Tables are made here directly: ferry's table
//! creation through the MySQL-protocol query port is not exercised by it.
//!
//! Started as StarRocks ([`FakeDoris::start_as`]), the same fake takes what StarRocks's
//! Stream Load documents instead: one JSON array (`strip_outer_array: true`), the
//! `columns` header naming the fields, `__op` (0 upsert, 1 delete) as a Primary Key
//! table reads it, and it refuses `__DORIS_DELETE_SIGN__` and `hidden_columns`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use sqlx::{Executor, Row as _};
use tokio::sync::Mutex;

/// Doris's hidden delete column.
const DELETE_SIGN: &str = "__DORIS_DELETE_SIGN__";
/// StarRocks's op field of a Primary Key table's load.
const OP: &str = "__op";

/// Faults the fake makes on request (each counter is used up one load at a time).
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Loads answered `"Status": "Fail"` (a failing BE) before any lands.
    pub fail: u32,
    /// Loads answered HTTP 500.
    pub error_5xx: u32,
    /// Each load's answer waits this long.
    pub slow: Duration,
    /// The next load lands, then its answer never comes (the client dies waiting).
    pub hang_after_apply: bool,
    /// Every label not seen before was used by someone else already (FINISHED).
    pub foreign_labels: bool,
}

/// What happened to one label.
#[derive(Debug, Clone, Default)]
pub struct LabelLog {
    /// Stream Loads sent under it.
    pub requests: u32,
    /// Times its data was applied (at most 1).
    pub applied: u32,
    /// Answers "Label Already Exists".
    pub duplicates: u32,
}

struct Table {
    columns: Vec<String>,
    key: Vec<String>,
}

struct Inner {
    tables: HashMap<(String, String), Table>,
    labels: HashMap<(String, String), String>,
    log: HashMap<String, LabelLog>,
    faults: Faults,
    /// Loads applied whose answer was held back.
    hung: Vec<String>,
    /// Requests the BE refused for a missing or wrong login.
    be_unauthorized: u32,
    /// 307s the FE answered with.
    redirects: u32,
    txn: u64,
}

struct Shared {
    auth: String,
    /// Speaks StarRocks's variant of Stream Load.
    starrocks: bool,
    be_port: u16,
    rows: SqlitePool,
    inner: Mutex<Inner>,
}

/// A running fake; dropped, it stops.
pub struct FakeDoris {
    /// The FE's HTTP port.
    pub fe_port: u16,
    shared: Arc<Shared>,
    stops: Vec<tokio::sync::oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

impl Drop for FakeDoris {
    fn drop(&mut self) {
        for s in self.stops.drain(..) {
            let _ = s.send(());
        }
    }
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

fn authorized(shared: &Shared, headers: &HeaderMap) -> bool {
    headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(shared.auth.as_str())
}

fn unauthorized() -> Response {
    (StatusCode::UNAUTHORIZED, json!({"status": "FAILED", "msg": "Access denied for user"}).to_string()).into_response()
}

/// Serves `app` on `listener` until the sender is used or dropped.
fn serve(listener: tokio::net::TcpListener, app: axum::Router) -> tokio::sync::oneshot::Sender<()> {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                rx.await.ok();
            })
            .await;
    });
    tx
}

impl FakeDoris {
    /// Starts a Doris FE and BE that accept `user`/`password`.
    pub async fn start(user: &str, password: &str) -> FakeDoris {
        Self::start_as(user, password, false).await
    }

    /// Starts an FE and a BE that accept `user`/`password`, as StarRocks when asked.
    pub async fn start_as(user: &str, password: &str, starrocks: bool) -> FakeDoris {
        let dir = tempfile::tempdir().expect("fake doris folder");
        let opts = SqliteConnectOptions::new().filename(dir.path().join("rows.db")).create_if_missing(true);
        let rows = SqlitePoolOptions::new().max_connections(2).connect_with(opts).await.expect("fake doris rows");
        rows.execute("CREATE TABLE rows(db TEXT, tbl TEXT, k TEXT, doc TEXT NOT NULL, PRIMARY KEY(db, tbl, k))")
            .await
            .expect("rows table");
        let be_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind be");
        let be_port = be_listener.local_addr().expect("be address").port();
        let shared = Arc::new(Shared {
            auth: basic(user, password),
            starrocks,
            be_port,
            rows,
            inner: Mutex::new(Inner {
                tables: HashMap::new(),
                labels: HashMap::new(),
                log: HashMap::new(),
                faults: Faults::default(),
                hung: Vec::new(),
                be_unauthorized: 0,
                redirects: 0,
                txn: 1000,
            }),
        });
        let be = axum::Router::new()
            .route("/api/{db}/{table}/_stream_load", axum::routing::put(be_load))
            .with_state(shared.clone());
        let be_tx = serve(be_listener, be);
        let fe = axum::Router::new()
            .route("/api/{db}/{table}/_stream_load", axum::routing::put(fe_load))
            .route("/api/health", axum::routing::get(|| async { json!({"msg": "success", "code": 0}).to_string() }))
            .with_state(shared.clone());
        let fe_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind fe");
        let fe_port = fe_listener.local_addr().expect("fe address").port();
        let fe_tx = serve(fe_listener, fe);
        FakeDoris { fe_port, shared, stops: vec![fe_tx, be_tx], _dir: dir }
    }

    /// `doris://USER:PASSWORD@127.0.0.1:FE/DB` (`starrocks://` for a StarRocks fake; no
    /// query port: tables are made here).
    pub fn url(&self, user: &str, password: &str, db: &str) -> String {
        let scheme = if self.shared.starrocks { "starrocks" } else { "doris" };
        format!("{scheme}://{user}:{password}@127.0.0.1:{}/{db}", self.fe_port)
    }

    /// Makes a Unique Key table of these columns, keyed by `key`.
    pub async fn create_table(&self, db: &str, table: &str, columns: &[&str], key: &[&str]) {
        let t = Table {
            columns: columns.iter().map(|c| c.to_string()).collect(),
            key: key.iter().map(|c| c.to_string()).collect(),
        };
        self.shared.inner.lock().await.tables.insert((db.into(), table.into()), t);
    }

    /// Sets the faults.
    pub async fn faults(&self, f: Faults) {
        self.shared.inner.lock().await.faults = f;
    }

    /// The table's rows, read from the fake's SQLite (not through ferry), in key order.
    pub async fn rows(&self, db: &str, table: &str) -> Vec<Value> {
        let found = sqlx::query("SELECT doc FROM rows WHERE db = ?1 AND tbl = ?2 ORDER BY k")
            .bind(db)
            .bind(table)
            .fetch_all(&self.shared.rows)
            .await
            .expect("fake rows");
        found
            .iter()
            .map(|r| serde_json::from_str(&r.try_get::<String, _>(0).expect("doc")).expect("json doc"))
            .collect()
    }

    /// Every label's log.
    pub async fn labels(&self) -> HashMap<String, LabelLog> {
        self.shared.inner.lock().await.log.clone()
    }

    /// Labels whose load applied while its answer was held back.
    pub async fn hung(&self) -> Vec<String> {
        self.shared.inner.lock().await.hung.clone()
    }

    /// (307s from the FE, BE requests refused for their login).
    pub async fn counters(&self) -> (u32, u32) {
        let i = self.shared.inner.lock().await;
        (i.redirects, i.be_unauthorized)
    }
}

async fn fe_load(
    State(shared): State<Arc<Shared>>,
    Path((db, table)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&shared, &headers) {
        return unauthorized();
    }
    shared.inner.lock().await.redirects += 1;
    let location = format!("http://127.0.0.1:{}/api/{db}/{table}/_stream_load", shared.be_port);
    (StatusCode::TEMPORARY_REDIRECT, [("location", location)]).into_response()
}

fn answer(body: Value) -> Response {
    ([("content-type", "application/json")], body.to_string()).into_response()
}

async fn be_load(
    State(shared): State<Arc<Shared>>,
    Path((db, table)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header = |k: &str| headers.get(k).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let mut inner = shared.inner.lock().await;
    if !authorized(&shared, &headers) {
        inner.be_unauthorized += 1;
        return unauthorized();
    }
    let label = header("label");
    let framing_ok = if shared.starrocks {
        header("strip_outer_array") == "true" && header("hidden_columns").is_empty()
    } else {
        header("read_json_by_line") == "true"
    };
    if header("format") != "json" || !framing_ok || label.is_empty() {
        let want = if shared.starrocks { "a labelled JSON array (strip_outer_array)" } else { "labelled JSON lines" };
        return answer(json!({"Status": "Fail", "Message": format!("the fake takes {want} only")}));
    }
    inner.log.entry(label.clone()).or_default().requests += 1;
    let slow = inner.faults.slow;
    if inner.faults.error_5xx > 0 {
        inner.faults.error_5xx -= 1;
        return (StatusCode::INTERNAL_SERVER_ERROR, "injected BE failure").into_response();
    }
    if inner.faults.fail > 0 {
        inner.faults.fail -= 1;
        return answer(
            json!({"Label": label, "Status": "Fail", "Message": "[INTERNAL_ERROR]tablet writer write failed (injected)"}),
        );
    }
    let key = (db.clone(), label.clone());
    if inner.faults.foreign_labels && !inner.labels.contains_key(&key) {
        inner.labels.insert(key.clone(), "FINISHED".into());
    }
    if let Some(state) = inner.labels.get(&key).cloned() {
        inner.log.entry(label.clone()).or_default().duplicates += 1;
        return answer(json!({"Label": label, "Status": "Label Already Exists", "ExistingJobStatus": state,
            "Message": format!("Label [{label}] has already been used.")}));
    }
    let Some(t) = inner.tables.get(&(db.clone(), table.clone())) else {
        return answer(json!({"Label": label, "Status": "Fail", "Message": format!("unknown table {db}.{table}")}));
    };
    // StarRocks reads only the fields `columns` names, `__op` among them.
    let named: Option<Vec<String>> = shared.starrocks.then(|| {
        header("columns").split(',').map(|c| c.trim().trim_matches('`').to_string()).filter(|c| !c.is_empty()).collect()
    });
    if let Some(unknown) = named.iter().flatten().find(|c| *c != OP && !t.columns.contains(c)) {
        return answer(
            json!({"Label": label, "Status": "Fail", "Message": format!("Unknown column '{unknown}' in 'columns'")}),
        );
    }
    let (op_field, objects): (&str, Vec<Option<serde_json::Map<String, Value>>>) = if shared.starrocks {
        let items = match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Array(items)) => items,
            _ => vec![Value::Null],
        };
        let objects = items
            .into_iter()
            .map(|v| match v {
                Value::Object(m) => Some(m),
                _ => None,
            })
            .collect();
        (OP, objects)
    } else {
        let objects = body
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| match serde_json::from_slice::<Value>(l) {
                Ok(Value::Object(m)) => Some(m),
                _ => None,
            })
            .collect();
        (DELETE_SIGN, objects)
    };
    // Parse every row first: strict mode refuses the whole load for one bad row.
    let mut ops: Vec<(String, Option<Value>)> = Vec::new();
    let mut bad = 0u64;
    for m in objects {
        let Some(mut m) = m else {
            bad += 1;
            continue;
        };
        let op_named = named.as_ref().is_none_or(|n| n.iter().any(|c| c == op_field));
        let delete = op_named && m.remove(op_field).and_then(|v| v.as_i64()) == Some(1);
        let unread = |k: &String| named.as_ref().is_some_and(|n| !n.contains(k));
        if m.keys().any(|k| !t.columns.contains(k) || unread(k))
            || t.key.iter().any(|k| m.get(k).is_none_or(Value::is_null))
        {
            bad += 1;
            continue;
        }
        let k = Value::Array(t.key.iter().map(|c| m[c].clone()).collect()).to_string();
        let mut doc = serde_json::Map::new();
        for c in &t.columns {
            doc.insert(c.clone(), m.get(c).cloned().unwrap_or(Value::Null));
        }
        ops.push((k, (!delete).then_some(Value::Object(doc))));
    }
    if bad > 0 {
        return answer(json!({"Label": label, "Status": "Fail", "Message": "too many filtered rows",
            "NumberFilteredRows": bad, "ErrorURL": format!("http://127.0.0.1:{}/api/_load_error_log?file={label}", shared.be_port)}));
    }
    let mut tx = shared.rows.begin().await.expect("fake begin");
    for (k, doc) in &ops {
        match doc {
            Some(d) => sqlx::query("INSERT INTO rows(db, tbl, k, doc) VALUES (?1, ?2, ?3, ?4) ON CONFLICT(db, tbl, k) DO UPDATE SET doc = excluded.doc")
                .bind(&db)
                .bind(&table)
                .bind(k)
                .bind(d.to_string())
                .execute(&mut *tx)
                .await
                .expect("fake upsert"),
            None => sqlx::query("DELETE FROM rows WHERE db = ?1 AND tbl = ?2 AND k = ?3")
                .bind(&db)
                .bind(&table)
                .bind(k)
                .execute(&mut *tx)
                .await
                .expect("fake delete"),
        };
    }
    tx.commit().await.expect("fake commit");
    inner.labels.insert(key, "FINISHED".into());
    inner.log.entry(label.clone()).or_default().applied += 1;
    inner.txn += 1;
    let txn = inner.txn;
    let hang = std::mem::take(&mut inner.faults.hang_after_apply);
    if hang {
        inner.hung.push(label.clone());
    }
    drop(inner);
    if hang {
        // The load is in; its answer never comes while the test needs it.
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    tokio::time::sleep(slow).await;
    let n = ops.len();
    answer(json!({"TxnId": txn, "Label": label, "Status": "Success", "Message": "OK", "NumberTotalRows": n,
        "NumberLoadedRows": n, "NumberFilteredRows": 0, "NumberUnselectedRows": 0, "LoadBytes": body.len()}))
}
