//! `[[task]] transport = "nats"` (docs/cluster.md, "Transport"): a one-way MariaDB task
//! whose changes travel through a JetStream stream of the testbed's private nats-server,
//! published by a node at the source's site and applied by one at the target's. Only the
//! node at the target's site may apply (`nodes`), as when a cut WAN keeps the other from
//! the target: while it is down nobody applies, and the stream buffers. Afterwards both
//! tables are equal. A PostgreSQL task carries every type through the stream.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cluster_failover::{count, get_json, writer};
use crate::mysql_oneway::assert_same_table;
use crate::support::FerryRun;
use crate::support::mariadb::{Cleanup, rows_once_created, shared_a, shared_b};

/// Deadline of every wait.
const WAIT: Duration = Duration::from_secs(60);

/// The testbed's private NATS (FERRY_TEST_NATS), never the machine's own service.
fn nats_url() -> String {
    std::env::var("FERRY_TEST_NATS").unwrap_or_else(|_| "nats://127.0.0.1:4232".into())
}

/// Fails the test, saying how to start it, when the private nats-server is not there.
fn require_nats(url: &str) {
    let addr = url.trim_start_matches("nats://");
    let up = std::net::TcpStream::connect(addr).is_ok();
    assert!(
        up,
        "no NATS server at {url}\nstart the testbed's with `FERRY_TESTBED_NATS=1 scripts/testbed start` \
         and `eval \"$(scripts/testbed env)\"` (FERRY_TEST_NATS)"
    );
}

/// A `ferry node` of the test: its folder, API and process.
struct Node {
    id: String,
    dir: PathBuf,
    base: String,
    run: Option<FerryRun>,
}

impl Node {
    /// Node `n` at `site`; node 2 alone may apply (`nodes`), any node may publish.
    fn new(root: &Path, n: u32, site: &str, task: &Task) -> Node {
        let dir = root.join(format!("n{n}"));
        std::fs::create_dir_all(&dir).expect("node dir");
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
        let id = format!("{}-n{n}", task.name);
        let text = format!(
            r#"[node]
id = "{id}"
site = "{site}"
listen = "127.0.0.1:{port}"
store = "sqlite://meta.db"

[cluster]
nats = "{nats}"
lease_ttl = "6s"

[[endpoint]]
name = "a"
site = "dc-a"
url = "{source}"

[[endpoint]]
name = "b"
site = "dc-b"
url = "{target}"

[[task]]
name = "{name}"
from = "a"
to = "b"
tables = ["{db}.*"]
transport = "nats"
nodes = ["{name}-n2"]
{extra}
"#,
            nats = nats_url(),
            source = task.source,
            target = task.target,
            name = task.name,
            db = task.db,
            extra = task.extra,
        );
        std::fs::write(dir.join("ferry.toml"), text).expect("write task file");
        Node { id, dir, base: format!("http://127.0.0.1:{port}"), run: None }
    }

    fn start(&mut self) {
        self.run = Some(FerryRun::start_command("node", &self.dir.join("ferry.toml"), &self.dir.join("node.log")));
    }

    fn kill(&mut self) {
        if let Some(mut r) = self.run.take() {
            r.kill();
        }
    }

    fn log(&self) -> String {
        Logs(vec![(self.id.clone(), self.dir.join("node.log"))]).tail()
    }
}

/// The nodes' log files, for failure messages.
struct Logs(Vec<(String, PathBuf)>);

impl Logs {
    fn of(nodes: &[&Node]) -> Logs {
        Logs(nodes.iter().map(|n| (n.id.clone(), n.dir.join("node.log"))).collect())
    }

    /// The last lines of each log.
    fn tail(&self) -> String {
        let mut out = String::new();
        for (id, path) in &self.0 {
            let log = std::fs::read_to_string(path).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            out += &format!("--- {id}\n{}\n", lines[lines.len().saturating_sub(30)..].join("\n"));
        }
        out
    }
}

/// The task: its name, database, extra `[[task]]` keys and endpoints' URLs.
struct Task {
    name: String,
    db: String,
    extra: String,
    source: String,
    target: String,
}

/// The source tables (a ledger and balances) in a database of the test's own, a task
/// name nobody else uses, and the cleanups of both sides (the stream's key too).
async fn bed(extra: &str) -> (Task, Cleanup, Cleanup) {
    require_nats(&nats_url());
    let mut cleanup_a = Cleanup::new(&shared_a());
    let mut cleanup_b = Cleanup::new(&shared_b());
    let (db, name, _) =
        crate::cluster_failover::source("rly", ", note VARCHAR(200)", &mut cleanup_a, &mut cleanup_b).await;
    (Task { name, db, extra: extra.to_string(), source: shared_a(), target: shared_b() }, cleanup_a, cleanup_b)
}

/// What both tests stand on: the task's tables, a node at each site (not started),
/// an HTTP client for their APIs; the cleanups run when it goes.
struct Bed {
    task: Task,
    _root: tempfile::TempDir,
    near_source: Node,
    near_target: Node,
    http: reqwest::Client,
    ledger: String,
    _cleanups: (Cleanup, Cleanup),
}

impl Bed {
    async fn new(extra: &str) -> Bed {
        let (task, a, b) = bed(extra).await;
        let root = tempfile::tempdir().expect("temp dir");
        Bed {
            near_source: Node::new(root.path(), 1, "dc-a", &task),
            near_target: Node::new(root.path(), 2, "dc-b", &task),
            http: crate::support::http_client(Duration::from_secs(5)),
            ledger: format!("`{}`.ledger", task.db),
            task,
            _root: root,
            _cleanups: (a, b),
        }
    }
}

/// Two writers; stopped by [`stop_load`].
fn start_load(db: &str) -> (Arc<AtomicBool>, Vec<tokio::task::JoinHandle<()>>) {
    let stop = Arc::new(AtomicBool::new(false));
    let handles =
        (0..2).map(|_| tokio::spawn(writer(db.to_string(), true, Duration::from_millis(2), stop.clone()))).collect();
    (stop, handles)
}

async fn stop_load((stop, handles): (Arc<AtomicBool>, Vec<tokio::task::JoinHandle<()>>)) {
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.await.expect("writer");
    }
}

/// The node holding the lease of the direction `direction` (`a->b` applies,
/// `a->b/publish` publishes), as `asked` sees the cluster.
async fn owner(http: &reqwest::Client, asked: &Node, task: &str, direction: &str) -> Option<String> {
    let view = get_json(http, &format!("{}/api/v1/cluster", asked.base)).await?;
    let owners = view["owners"].as_array().cloned().unwrap_or_default();
    owners
        .iter()
        .find(|o| {
            o["task"] == task
                && format!("{}->{}", o["from"].as_str().unwrap_or(""), o["to"].as_str().unwrap_or("")) == direction
        })
        .and_then(|o| o["node"].as_str().map(String::from))
}

/// Polls until `node` holds the lease of `direction`.
async fn wait_owner(http: &reqwest::Client, logs: &Logs, asked: &Node, task: &str, direction: &str, node: &Node) {
    let start = Instant::now();
    while owner(http, asked, task, direction).await.as_deref() != Some(node.id.as_str()) {
        assert!(start.elapsed() < WAIT, "{} did not take {direction} within {WAIT:?}; logs:\n{}", node.id, logs.tail());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The status of `direction` on `node` (its API).
async fn direction(http: &reqwest::Client, node: &Node, task: &str, direction: &str) -> Option<Value> {
    let tasks = get_json(http, &format!("{}/api/v1/tasks", node.base)).await?;
    let t = tasks.as_array()?.iter().find(|t| t["name"] == task)?.clone();
    t["directions"].as_array()?.iter().find(|d| d["direction"] == direction).cloned()
}

/// Polls until the target holds more than `n` ledger rows.
async fn wait_target_past(table: &str, n: u64, what: &str, logs: &Logs) {
    let start = Instant::now();
    while count(&shared_b(), table).await <= n {
        assert!(start.elapsed() < WAIT, "{what}: the target stayed at {n} rows of {table}; logs:\n{}", logs.tail());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Polls until the target holds every ledger row of the source, then compares both
/// tables row by row and by CHECKSUM TABLE, and looks for a ledger row applied twice.
async fn assert_caught_up(task: &Task, logs: &Logs) {
    let ledger = format!("`{}`.ledger", task.db);
    let source_rows = count(&shared_a(), &ledger).await;
    let start = Instant::now();
    while count(&shared_b(), &ledger).await < source_rows {
        assert!(
            start.elapsed() < WAIT,
            "the target did not catch up with the source's {source_rows} rows; logs:\n{}",
            logs.tail()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_same_table(&task.db, "ledger").await;
    assert_same_table(&task.db, "acct").await;
    let twice = rows_once_created(&shared_b(), &format!("SELECT COUNT(*) - COUNT(DISTINCT token) FROM {ledger}")).await;
    assert_eq!(twice[0][0], "0", "a ledger row was applied twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_relayed_task_buffers_while_the_applying_node_is_down_and_replays_it_in_order() {
    let Bed { task, _root, mut near_source, mut near_target, http, ledger, _cleanups } = Bed::new("").await;
    let load = start_load(&task.db);

    // One node alone runs both roles.
    near_target.start();
    let nodes = Logs::of(&[&near_target]);
    wait_owner(&http, &nodes, &near_target, &task.name, "a->b/publish", &near_target).await;
    wait_owner(&http, &nodes, &near_target, &task.name, "a->b", &near_target).await;
    wait_target_past(&ledger, 0, "one node with both roles", &nodes).await;

    // A node at the source's site joins; a rebalance moves the publishing role to it.
    near_source.start();
    let nodes = Logs::of(&[&near_target, &near_source]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let out = crate::support::ferry(&["cluster", "rebalance", "--node", &near_target.base]);
    assert!(out.status.success(), "ferry cluster rebalance: {}", String::from_utf8_lossy(&out.stderr));
    wait_owner(&http, &nodes, &near_target, &task.name, "a->b/publish", &near_source).await;
    let at = count(&shared_b(), &ledger).await;
    wait_target_past(&ledger, at, "publishing at the source's site", &nodes).await;

    // The applying node goes down under load: the target stands still, publishing goes on.
    near_target.kill();
    let published = |d: Option<Value>| d.and_then(|d| d["changes_total"].as_u64()).unwrap_or(0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (held, before) = (
        count(&shared_b(), &ledger).await,
        published(direction(&http, &near_source, &task.name, "a->b/publish").await),
    );
    tokio::time::sleep(Duration::from_secs(25)).await;
    let after = published(direction(&http, &near_source, &task.name, "a->b/publish").await);
    assert_eq!(count(&shared_b(), &ledger).await, held, "something applied while the applying node was down");
    assert!(after > before + 1000, "publishing stalled while the applying node was down ({before} -> {after})");
    let source_rows = count(&shared_a(), &ledger).await;
    assert!(source_rows > held + 500, "the load wrote too little during the outage ({held} -> {source_rows})");

    // It comes back: the backlog is applied, then the live changes.
    near_target.start();
    wait_target_past(&ledger, source_rows, "after the applying node came back", &nodes).await;
    stop_load(load).await;
    assert_caught_up(&task, &nodes).await;
    near_source.kill();
    near_target.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_stream_stops_publishing_with_an_alarm_and_drops_nothing() {
    let Bed { task, _root, mut near_source, mut near_target, http, ledger, _cleanups } =
        Bed::new("transport_max_bytes = \"1MB\"").await;
    let load = start_load(&task.db);
    near_source.start();
    let nodes = Logs::of(&[&near_source, &near_target]);
    wait_owner(&http, &nodes, &near_source, &task.name, "a->b/publish", &near_source).await;
    near_target.start();
    wait_owner(&http, &nodes, &near_source, &task.name, "a->b", &near_target).await;
    wait_target_past(&ledger, 0, "the applying node", &nodes).await;

    // With nobody applying, the stream fills up and the publishing side stops reading,
    // with an alarm the API shows.
    near_target.kill();
    let start = Instant::now();
    let full = loop {
        let d = direction(&http, &near_source, &task.name, "a->b/publish").await;
        if let Some(d) = d.filter(|d| d["state"] == "transport_full") {
            break d;
        }
        assert!(start.elapsed() < WAIT, "no transport alarm within {WAIT:?}; logs:\n{}", near_source.log());
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(full["retention_alarm"], true, "{full}");
    let message = full["last_error"].as_str().unwrap_or_default();
    assert!(message.contains("is full") && message.contains("nothing is dropped"), "{message}");
    // It stays stopped while the writes go on.
    let published = full["changes_total"].as_u64().unwrap_or(0);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let d = direction(&http, &near_source, &task.name, "a->b/publish").await.expect("the publishing role");
    assert!(d["changes_total"].as_u64().unwrap_or(0) <= published + 5_000, "publishing went on: {d}");

    // The applying node comes back and drains the stream: the alarm clears, publishing
    // goes on, and nothing was lost.
    near_target.start();
    let start = Instant::now();
    loop {
        let d = direction(&http, &near_source, &task.name, "a->b/publish").await;
        if d.as_ref().is_some_and(|d| d["state"] == "streaming" && d["retention_alarm"] == false) {
            break;
        }
        assert!(
            start.elapsed() < WAIT,
            "the alarm did not clear: {d:?}; logs:\n{}{}",
            near_source.log(),
            near_target.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    stop_load(load).await;
    assert_caught_up(&task, &nodes).await;
    near_source.kill();
    near_target.kill();
}

/// A PostgreSQL source and target through the stream: every type ferry carries, in the
/// snapshot and in the stream (inserts, updates of every column, a key change, deletes),
/// arrives equal, and the source holds one replication slot for the task (the
/// publishing role's), none for the applying role, which reads the stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_postgresql_task_carries_every_type_through_the_stream() {
    use crate::pg_oneway::{all_types_source, assert_same_table, write_every_change};
    use crate::support::postgres::{self, table_text};

    require_nats(&nats_url());
    let (a, b) = (postgres::shared_a(), postgres::shared_b());
    let mut cleanup_a = postgres::Cleanup::new(&a);
    let mut cleanup_b = postgres::Cleanup::new(&b);
    let (s, t) = all_types_source(&a, &b, "rlypg", &mut cleanup_a, &mut cleanup_b).await;
    let name = crate::support::mariadb::unique("rlypg");
    cleanup_a.task(&name);
    let task = Task { name, db: s.clone(), extra: String::new(), source: a.clone(), target: b.clone() };
    let root = tempfile::tempdir().expect("temp dir");
    // Node 2 may apply; alone, it runs both roles.
    let mut node = Node::new(root.path(), 2, "dc-b", &task);
    node.start();
    let logs = Logs::of(&[&node]);
    let same = |what: &'static str| {
        let (a, b, t, logs) = (&a, &b, &t, &logs);
        async move {
            let start = Instant::now();
            let exists = format!("SELECT to_regclass('{}')::text", t.replace('\'', "''"));
            while postgres::rows(b, &exists).await[0][0].is_none()
                || table_text(a, t, "1").await != table_text(b, t, "1").await
            {
                assert!(start.elapsed() < WAIT, "{what}: {t} differs after {WAIT:?}; logs:\n{}", logs.tail());
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    };
    same("the snapshot").await;

    // Through the stream.
    write_every_change(&a, &t).await;
    same("the stream").await;
    let table = ferry::model::TableName { schema: Some(s.clone()), name: "all_types".into() };
    assert_same_table(&a, &b, &table).await;

    let stem = task.name.to_ascii_lowercase();
    let slots = postgres::rows(
        &a,
        &format!("SELECT slot_name FROM pg_replication_slots WHERE slot_name LIKE '%{stem}%' AND NOT temporary"),
    )
    .await;
    assert_eq!(slots.len(), 1, "the task's slots on the source: {slots:?}; logs:\n{}", logs.tail());
    node.kill();
}
