//! Nodes in a cluster over NATS JetStream (docs/cluster.md): three real `ferry node`
//! processes share a one-way MariaDB task through the testbed's private nats-server.
//! The owner is SIGKILLed five times under a sysbench load and a ledger writer: each
//! time another node takes the direction over within 10 s past the lease's expiry and
//! goes on from the target's checkpoint; a node that comes back does not take it back;
//! a SIGSTOPped owner that wakes after losing its lease applies nothing. Afterwards the
//! tables are equal (CHECKSUM TABLE) with no ledger row twice. A paused task stays
//! paused when its owner dies, and only its owner pauses or resumes it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use serde_json::Value;

use crate::mysql_oneway::{assert_same_table, require_sysbench, sysbench_sized};
use crate::support::FerryRun;
use crate::support::mariadb::{Cleanup, connect, database, rows, rows_once_created, shared_a, shared_b, unique};

/// The cluster lease's TTL in the task files (short, for the suite's time).
pub(crate) const TTL: Duration = Duration::from_secs(6);
/// How long a takeover may take after a kill: the lease expires at most a TTL after
/// the kill (its last renewal came before it), and the issue allows 10 s past that.
pub(crate) const TAKEOVER: Duration = Duration::from_secs(6 + 10);
/// How many times the owner is SIGKILLed.
const KILLS: usize = 5;
/// Rows in each of sysbench's two tables (small: the snapshot is not what is tested).
const SYSBENCH_ROWS: u32 = 2000;
/// Deadline of every other wait.
pub(crate) const WAIT: Duration = Duration::from_secs(60);

/// The testbed's private NATS (FERRY_TEST_NATS), never the machine's own service.
pub(crate) fn nats_url() -> String {
    std::env::var("FERRY_TEST_NATS").unwrap_or_else(|_| "nats://127.0.0.1:4232".into())
}

/// Fails the test, saying how to start it, when the private nats-server is not there.
pub(crate) fn require_nats(url: &str) {
    let addr = url.trim_start_matches("nats://");
    let greeting = std::net::TcpStream::connect(addr).and_then(|mut s| {
        use std::io::Read;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf)?;
        Ok(buf)
    });
    assert!(
        matches!(greeting, Ok(b) if &b == b"INFO"),
        "no NATS server at {url} ({greeting:?})\nstart the testbed's with `FERRY_TESTBED_NATS=1 scripts/testbed start` \
         and `eval \"$(scripts/testbed env)\"` (FERRY_TEST_NATS)"
    );
}

pub(crate) fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

/// One `ferry node` of the cluster, with its own folder, store and API port.
pub(crate) struct Member {
    pub(crate) id: String,
    dir: PathBuf,
    pub(crate) base: String,
    run: Option<FerryRun>,
    /// The network namespace it runs in (`None`: the test's own).
    pub(crate) netns: Option<String>,
}

impl Member {
    /// A node of id `id` with its folder `dir` (its task file `ferry.toml` written by the
    /// caller) and API at `base`, not started.
    pub(crate) fn new(id: String, dir: PathBuf, base: String) -> Member {
        Member { id, dir, base, run: None, netns: None }
    }

    pub(crate) fn config(&self) -> PathBuf {
        self.dir.join("ferry.toml")
    }

    pub(crate) fn start(&mut self) {
        let (config, log) = (self.config(), self.dir.join("node.log"));
        self.run = Some(match &self.netns {
            Some(ns) => FerryRun::start_in_netns(ns, "node", &config, &log),
            None => FerryRun::start_command("node", &config, &log),
        });
    }

    /// Replaces `from` with `to` in its task file (before it starts): the test points it
    /// at another address.
    pub(crate) fn rewrite_config(&self, from: &str, to: &str) {
        let file = self.config();
        let text = std::fs::read_to_string(&file).expect("task file");
        let changed = text.replace(from, to);
        assert_ne!(changed, text, "{from} is not in {}", file.display());
        std::fs::write(&file, changed).expect("rewrite task file");
    }

    pub(crate) fn pid(&self) -> u32 {
        self.run.as_ref().and_then(FerryRun::pid).expect("a running node")
    }

    pub(crate) fn kill(&mut self) {
        if let Some(mut r) = self.run.take() {
            r.kill();
        }
    }

    pub(crate) fn signal(&self, sig: &str) {
        let ok = std::process::Command::new("kill").arg(format!("-{sig}")).arg(self.pid().to_string()).status();
        assert!(ok.is_ok_and(|s| s.success()), "kill -{sig} {}", self.pid());
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("node.log")).unwrap_or_default()
    }
}

/// A node's task file; `(nats, ttl)`: its `[cluster]`.
fn write_config(dir: &Path, id: &str, site: &str, port: u16, (nats, ttl): (&str, Duration), db: &str, task: &str) {
    let text = format!(
        r#"[node]
id = "{id}"
site = "{site}"
listen = "127.0.0.1:{port}"
store = "sqlite://meta.db"

[cluster]
nats = "{nats}"
lease_ttl = "{}s"

[[endpoint]]
name = "a"
site = "dc-a"
url = "{}"

[[endpoint]]
name = "b"
site = "dc-b"
url = "{}"

[[task]]
name = "{task}"
from = "a"
to = "b"
tables = ["{db}.*"]
"#,
        ttl.as_secs(),
        shared_a(),
        shared_b()
    );
    std::fs::write(dir.join("ferry.toml"), text).expect("write task file");
}

pub(crate) async fn get_json(http: &reqwest::Client, url: &str) -> Option<Value> {
    let r = http.get(url).send().await.ok()?;
    if !r.status().is_success() {
        return None;
    }
    r.json().await.ok()
}

/// The node owning the task's direction, as the first live node answering sees it.
pub(crate) async fn owner(http: &reqwest::Client, members: &[Member], task: &str) -> Option<String> {
    for m in members.iter().filter(|m| m.run.is_some()) {
        if let Some(view) = get_json(http, &format!("{}/api/v1/cluster", m.base)).await {
            let owners = view["owners"].as_array().cloned().unwrap_or_default();
            return owners.iter().find(|o| o["task"] == task).and_then(|o| o["node"].as_str().map(String::from));
        }
    }
    None
}

/// Polls until the direction is owned by a node other than `not`; its id.
pub(crate) async fn wait_owner(
    http: &reqwest::Client,
    members: &[Member],
    task: &str,
    not: Option<&str>,
    limit: Duration,
) -> String {
    let start = Instant::now();
    loop {
        if let Some(o) = owner(http, members, task).await
            && Some(o.as_str()) != not
        {
            return o;
        }
        assert!(
            start.elapsed() < limit,
            "no node other than {not:?} took task {task} over within {limit:?}; logs:\n{}",
            members.iter().map(|m| format!("--- {}\n{}", m.id, tail(&m.log()))).collect::<String>()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

pub(crate) fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(25)..].join("\n")
}

/// A node's applied-changes counter for the task (0 before it ran it).
pub(crate) async fn applied_by(http: &reqwest::Client, m: &Member, task: &str) -> Option<u64> {
    let tasks = get_json(http, &format!("{}/api/v1/tasks", m.base)).await?;
    let t = tasks.as_array()?.iter().find(|t| t["name"] == task)?.clone();
    Some(t["directions"].as_array()?.iter().filter_map(|d| d["changes_total"].as_u64()).sum())
}

pub(crate) async fn count(url: &str, table: &str) -> u64 {
    let r = rows_once_created(url, &format!("SELECT COUNT(*) FROM {table}")).await;
    r.first().and_then(|r| r[0].parse().ok()).unwrap_or(0)
}

/// Polls until the target holds more than `n` ledger rows (the owner applies).
pub(crate) async fn wait_target_past(table: &str, n: u64, what: &str) {
    let start = Instant::now();
    while count(&shared_b(), table).await <= n {
        assert!(start.elapsed() < WAIT, "{what}: the target stayed at {n} rows of {table} for {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The application: each transaction adds a ledger row (with a `note` of varying length
/// when the ledger has that column) and moves a balance; `pause` between transactions.
pub(crate) async fn writer(db: String, with_note: bool, pause: Duration, stop: Arc<AtomicBool>) {
    let mut c = connect(&shared_a()).await;
    let mut i: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let insert = if with_note {
            format!(
                "INSERT INTO `{db}`.ledger (token, amount, note) VALUES (UUID(), {}, REPEAT('x', {}))",
                i % 100,
                i % 200
            )
        } else {
            format!("INSERT INTO `{db}`.ledger (token, amount) VALUES (UUID(), {})", i % 100)
        };
        let txn = async {
            c.query_drop("START TRANSACTION").await?;
            c.query_drop(insert).await?;
            c.query_drop(format!("UPDATE `{db}`.acct SET balance = balance + {} WHERE id = {}", i % 7, i % 10)).await?;
            c.query_drop("COMMIT").await
        }
        .await;
        if txn.is_err() {
            let _ = c.query_drop("ROLLBACK").await;
        }
        tokio::time::sleep(pause).await;
    }
    c.disconnect().await.ok();
}

pub(crate) fn start_writer(db: &str) -> (Arc<AtomicBool>, tokio::task::JoinHandle<()>) {
    let stop = Arc::new(AtomicBool::new(false));
    (stop.clone(), tokio::spawn(writer(db.to_string(), false, Duration::from_millis(5), stop)))
}

pub(crate) async fn stop_writer((stop, handle): (Arc<AtomicBool>, tokio::task::JoinHandle<()>)) {
    stop.store(true, Ordering::Relaxed);
    handle.await.expect("writer");
}

/// A sysbench run, stopped when dropped (also when the test fails).
struct Load(std::process::Child);

impl Drop for Load {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The source tables (a ledger and balances) in a database of the test's own, and a
/// task name nobody else uses (its lease key and target rows are the test's alone);
/// `prefix` starts both names, `ledger_extra` adds columns to the ledger.
pub(crate) async fn source(
    prefix: &str,
    ledger_extra: &str,
    cleanup_a: &mut Cleanup,
    cleanup_b: &mut Cleanup,
) -> (String, String, String) {
    let db = database(&shared_a(), prefix, cleanup_a).await;
    cleanup_b.push(format!("DROP DATABASE IF EXISTS `{db}`"));
    let task = unique(prefix);
    cleanup_b.push(format!("DELETE FROM ferry.ferry_checkpoint WHERE task = '{task}'"));
    cleanup_b.push(format!("DELETE FROM ferry.ferry_lease WHERE task = '{task}'"));
    let accounts: Vec<String> = (0..10).map(|i| format!("({i}, 0)")).collect();
    // The admin statements skip the binlog; the snapshot copies them.
    crate::support::mariadb::admin(
        &shared_a(),
        &[
            format!(
                "CREATE TABLE `{db}`.ledger (id BIGINT AUTO_INCREMENT PRIMARY KEY, token CHAR(36) NOT NULL, amount INT{ledger_extra})"
            ),
            format!("CREATE TABLE `{db}`.acct (id INT PRIMARY KEY, balance BIGINT NOT NULL)"),
            format!("INSERT INTO `{db}`.acct VALUES {}", accounts.join(", ")),
        ],
    )
    .await;
    let ledger = format!("`{db}`.ledger");
    (db, task, ledger)
}

/// One node per site given, each with its folder under `root`, not started.
fn cluster(root: &Path, sites: &[&str], nats: &str, ttl: Duration, db: &str, task: &str) -> Vec<Member> {
    sites
        .iter()
        .enumerate()
        .map(|(i, site)| {
            let dir = root.join(format!("n{}", i + 1));
            std::fs::create_dir_all(&dir).expect("node dir");
            let id = format!("{task}-n{}", i + 1);
            let port = free_port();
            write_config(&dir, &id, site, port, (nats, ttl), db, task);
            Member::new(id, dir, format!("http://127.0.0.1:{port}"))
        })
        .collect()
}

/// Polls until `m` (started) shows in the cluster's node records as `m` sees them.
pub(crate) async fn wait_joined(http: &reqwest::Client, m: &Member) {
    let start = Instant::now();
    loop {
        let view = get_json(http, &format!("{}/api/v1/cluster", m.base)).await;
        let seen = view.as_ref().and_then(|v| v["nodes"].as_array().cloned()).unwrap_or_default();
        if seen.iter().any(|n| n["id"] == m.id.as_str()) {
            return;
        }
        assert!(start.elapsed() < WAIT, "{} did not join the cluster; log:\n{}", m.id, tail(&m.log()));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Polls until the target holds every ledger row of the source; that count.
async fn wait_caught_up(table: &str) -> u64 {
    let source_rows = count(&shared_a(), table).await;
    let start = Instant::now();
    while count(&shared_b(), table).await < source_rows {
        assert!(start.elapsed() < WAIT, "the target did not catch up with the source's {source_rows} rows of {table}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    source_rows
}

/// Once the target caught up: no ledger row twice, both tables equal.
pub(crate) async fn assert_all_arrived_once(db: &str, ledger: &str) {
    wait_caught_up(ledger).await;
    let dup = rows(&shared_b(), &format!("SELECT COUNT(*) - COUNT(DISTINCT token) FROM {ledger}")).await;
    assert_eq!(dup[0][0], "0", "a ledger row arrived twice");
    assert_same_table(db, "ledger").await;
    assert_same_table(db, "acct").await;
}

/// What both tests stand on: the source tables, a NATS server, nodes of the given sites
/// (not started); the cleanups run when it goes.
pub(crate) struct Bed {
    pub(crate) db: String,
    pub(crate) task: String,
    pub(crate) ledger: String,
    root: tempfile::TempDir,
    sites: Vec<String>,
    nats: String,
    /// The nodes' `[cluster] lease_ttl`.
    pub(crate) ttl: Duration,
    _cleanups: (Cleanup, Cleanup),
}

impl Bed {
    pub(crate) async fn new(sites: &[&str]) -> Bed {
        Bed::on(sites, nats_url()).await
    }

    /// The bed with its nodes joining the NATS servers `nats` (comma-separated URLs).
    pub(crate) async fn on(sites: &[&str], nats: String) -> Bed {
        for url in nats.split(',') {
            require_nats(url);
        }
        let mut cleanup_a = Cleanup::new(&shared_a());
        let mut cleanup_b = Cleanup::new(&shared_b());
        let (db, task, ledger) = source("clu", "", &mut cleanup_a, &mut cleanup_b).await;
        let root = tempfile::tempdir().expect("temp dir");
        let sites = sites.iter().map(|s| s.to_string()).collect();
        Bed { db, task, ledger, root, sites, nats, ttl: TTL, _cleanups: (cleanup_a, cleanup_b) }
    }

    pub(crate) fn members(&self) -> Vec<Member> {
        let sites: Vec<&str> = self.sites.iter().map(String::as_str).collect();
        cluster(self.root.path(), &sites, &self.nats, self.ttl, &self.db, &self.task)
    }
}

/// The first node starts alone and takes the task (the target receives rows), then the
/// second joins; the first's id.
pub(crate) async fn first_alone_then_second(
    http: &reqwest::Client,
    members: &mut [Member],
    task: &str,
    ledger: &str,
) -> String {
    members[0].start();
    let first = wait_owner(http, members, task, None, WAIT).await;
    assert_eq!(first, members[0].id);
    wait_target_past(ledger, 0, "the first owner").await;
    members[1].start();
    wait_joined(http, &members[1]).await;
    first
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_at_the_target_s_site_waits_for_a_rebalance_to_get_the_task() {
    let bed = Bed::new(&["dc-a", "dc-b"]).await;
    let (db, task, ledger) = (bed.db.clone(), bed.task.clone(), bed.ledger.clone());
    let mut members = bed.members();
    let http = crate::support::http_client(Duration::from_secs(5));
    let app = start_writer(&db);
    // Alone, the node away from the target's site takes the task; the node at the
    // target's site joins and leaves the task where it is...
    let first = first_alone_then_second(&http, &mut members, &task, &ledger).await;
    assert_eq!(owner(&http, &members, &task).await.as_deref(), Some(first.as_str()), "the task moved unasked");
    // ...until a rebalance is asked (through that node's API).
    let out = crate::support::ferry(&["cluster", "rebalance", "--node", &members[1].base]);
    assert!(out.status.success(), "ferry cluster rebalance: {}", String::from_utf8_lossy(&out.stderr));
    let moved = wait_owner(&http, &members, &task, Some(&first), WAIT).await;
    assert_eq!(moved, members[1].id, "the task went to a node away from the target's site");
    let at = count(&shared_b(), &ledger).await;
    wait_target_past(&ledger, at, "the node at the target's site").await;
    stop_writer(app).await;
    wait_caught_up(&ledger).await;
    assert_same_table(&db, "ledger").await;
    assert_same_table(&db, "acct").await;
    for m in &mut members {
        m.kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_owner_s_task_moves_to_another_node_and_a_woken_one_writes_nothing() {
    require_sysbench();
    let bed = Bed::new(&["dc-b", "dc-b", "dc-b"]).await;
    let (db, task, ledger) = (bed.db.clone(), bed.task.clone(), bed.ledger.clone());
    // sysbench's tables beside the ledger, copied by the snapshot, then written under load.
    let port_a = mysql_async::Opts::from_url(&shared_a()).expect("url of dc-a").tcp_port();
    let out = sysbench_sized(port_a, &db, SYSBENCH_ROWS, "prepare", &[]).output().expect("sysbench prepare");
    assert!(out.status.success(), "sysbench prepare: {}", String::from_utf8_lossy(&out.stderr));
    let mut members = bed.members();
    for m in &mut members {
        m.start();
    }
    let http = crate::support::http_client(Duration::from_secs(5));
    let mut app = start_writer(&db);
    // Runs until killed below (a time limit long past the test's).
    let mut load = Load(
        sysbench_sized(port_a, &db, SYSBENCH_ROWS, "run", &["--threads=1", "--time=600", "--rate=40"])
            .spawn()
            .expect("sysbench run"),
    );

    // One node takes the direction and applies.
    let mut current = wait_owner(&http, &members, &task, None, WAIT).await;
    wait_target_past(&ledger, 0, "the first owner").await;

    let mut takeovers = Vec::new();
    for round in 1..=KILLS {
        let i = members.iter().position(|m| m.id == current).expect("owner is a member");
        let at_kill = count(&shared_b(), &ledger).await;
        let killed = Instant::now();
        members[i].kill();
        let next = wait_owner(&http, &members, &task, Some(&current), TAKEOVER).await;
        takeovers.push(killed.elapsed());
        assert_ne!(next, current, "round {round}");
        // The new owner goes on from the target's checkpoint.
        wait_target_past(&ledger, at_kill, &format!("round {round}: {next} after the takeover")).await;
        // The killed node comes back and does not take the direction back.
        members[i].start();
        wait_joined(&http, &members[i]).await;
        let now = owner(&http, &members, &task).await;
        assert_eq!(now.as_deref(), Some(next.as_str()), "round {round}: the task moved back");
        current = next;
    }
    eprintln!("takeovers after SIGKILL (lease TTL {TTL:?}): {takeovers:?}");
    assert!(load.0.try_wait().expect("sysbench").is_none(), "sysbench stopped before the kills were done");
    drop(load);

    // A SIGSTOPped owner: quiet the writer so its counter is final, stop it, and let
    // another node take over while the writer goes on.
    stop_writer(app).await;
    let i = members.iter().position(|m| m.id == current).expect("owner is a member");
    let source_rows = wait_caught_up(&ledger).await;
    let before = applied_by(&http, &members[i], &task).await.expect("the owner's counter");
    members[i].signal("STOP");
    app = start_writer(&db);
    let others: Vec<&Member> = members.iter().filter(|m| m.id != current).collect();
    let start = Instant::now();
    let taker = loop {
        let mut found = None;
        for m in &others {
            if let Some(view) = get_json(&http, &format!("{}/api/v1/cluster", m.base)).await {
                let owners = view["owners"].as_array().cloned().unwrap_or_default();
                found = owners
                    .iter()
                    .find(|o| o["task"] == task.as_str() && o["node"] != current.as_str())
                    .and_then(|o| o["node"].as_str().map(String::from));
                break;
            }
        }
        if let Some(t) = found {
            break t;
        }
        assert!(start.elapsed() < TAKEOVER, "nobody took over from the stopped owner within {TAKEOVER:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    wait_target_past(&ledger, source_rows, &format!("{taker} after the stopped owner")).await;
    members[i].signal("CONT");
    // The woken node finds its cluster lease gone and stops the direction; its target
    // lease was superseded, so nothing it still had under way lands.
    let start = Instant::now();
    loop {
        let view = get_json(&http, &format!("{}/api/v1/cluster", members[i].base)).await;
        let me = view.as_ref().and_then(|v| v["nodes"].as_array().cloned()).unwrap_or_default();
        let idle = me.iter().any(|n| n["id"] == current.as_str() && n["tasks"].as_array().is_some_and(Vec::is_empty));
        if idle {
            break;
        }
        assert!(start.elapsed() < WAIT, "the woken node still claims the task; log:\n{}", tail(&members[i].log()));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // The counter counts a batch when its commit returns: with the writer quiet, what is
    // still under way at the STOP is a batch of ferry's own heartbeat rows (a change or
    // two), committed before the STOP and counted after the wake. Nothing after it.
    let after = applied_by(&http, &members[i], &task).await.expect("the woken node's counter");
    assert!(after <= before + 2, "the woken node applied {} changes after losing its lease", after - before);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let later = applied_by(&http, &members[i], &task).await.expect("the woken node's counter");
    assert_eq!(later, after, "the woken node kept applying changes after losing its lease");
    let taker_pid = members.iter().find(|m| m.id == taker).map(Member::pid).expect("taker");
    let holder = rows(&shared_b(), &format!("SELECT node, pid FROM ferry.ferry_lease WHERE task = '{task}'")).await;
    assert_eq!(holder, vec![vec![taker.clone(), taker_pid.to_string()]], "the target's lease is the taker's");

    // Everything arrived once.
    stop_writer(app).await;
    assert_all_arrived_once(&db, &ledger).await;
    assert_same_table(&db, "sbtest1").await;
    assert_same_table(&db, "sbtest2").await;

    // `ferry cluster status` through any node: every node and the direction's owner.
    let out = crate::support::ferry(&["cluster", "status", "--node", &members[0].base]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "ferry cluster status: {text}{}", String::from_utf8_lossy(&out.stderr));
    for m in &members {
        assert!(text.contains(&m.id), "{} missing from ferry cluster status:\n{text}", m.id);
    }
    let line = text.lines().find(|l| l.starts_with(&format!("{task} a->b"))).unwrap_or_default();
    assert!(line.contains(&taker), "the owner of {task} is not {taker} in ferry cluster status:\n{text}");
    for m in &mut members {
        m.kill();
    }
}

/// POSTs to a node's API; the status and the JSON body.
async fn post(http: &reqwest::Client, url: &str) -> (u16, Value) {
    let r = http.post(url).send().await.unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// The task's lease record as `m` sees the cluster.
pub(crate) async fn lease_of(http: &reqwest::Client, m: &Member, task: &str) -> Option<Value> {
    let view = get_json(http, &format!("{}/api/v1/cluster", m.base)).await?;
    view["owners"].as_array()?.iter().find(|o| o["task"] == task).cloned()
}

/// The task's lease record as `m` sees the cluster, read again until one reading shows it
/// (a listing of the bucket can miss a key rewritten meanwhile).
pub(crate) async fn wait_lease(http: &reqwest::Client, m: &Member, task: &str) -> Value {
    let start = Instant::now();
    loop {
        if let Some(lease) = lease_of(http, m, task).await {
            return lease;
        }
        assert!(start.elapsed() < WAIT, "{} showed no lease of {task} for {WAIT:?}", m.id);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paused_task_stays_paused_when_its_owner_dies_and_only_its_owner_pauses_it() {
    let bed = Bed::new(&["dc-b", "dc-b"]).await;
    let (db, task, ledger) = (bed.db.clone(), bed.task.clone(), bed.ledger.clone());
    let mut members = bed.members();
    for m in &mut members {
        m.start();
    }
    let http = crate::support::http_client(Duration::from_secs(40));
    let app = start_writer(&db);
    let owner_id = wait_owner(&http, &members, &task, None, WAIT).await;
    wait_target_past(&ledger, 0, "the first owner").await;
    let o = members.iter().position(|m| m.id == owner_id).expect("owner is a member");
    let other = 1 - o;
    for m in &members {
        wait_joined(&http, m).await;
    }

    // The node that does not run the task answers 409 and names the one that does.
    let (status, body) = post(&http, &format!("{}/api/v1/tasks/{task}/pause", members[other].base)).await;
    assert_eq!(status, 409, "pause on a node not running the task: {body}");
    assert_eq!(body["owner"], owner_id.as_str(), "{body}");
    let owner_port = members[o].base.rsplit(':').next().expect("port");
    assert!(body["owner_api"].as_str().is_some_and(|a| a.ends_with(owner_port)), "{body}");

    // The owner pauses it: nothing more lands, while the application goes on writing.
    let (status, body) = post(&http, &format!("{}/api/v1/tasks/{task}/pause", members[o].base)).await;
    assert_eq!(status, 200, "pause on the owner: {body}");
    assert_eq!(body["paused"], true, "{body}");
    assert_eq!(lease_of(&http, &members[o], &task).await.map(|l| l["paused"].clone()), Some(Value::Bool(true)));
    let at_pause = count(&shared_b(), &ledger).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(count(&shared_b(), &ledger).await, at_pause, "rows landed on the target after the pause");
    let (status, body) = post(&http, &format!("{}/api/v1/tasks/{task}/pause", members[o].base)).await;
    assert_eq!(status, 409, "a second pause: {body}");

    // The owner dies: the other node takes the lease over and holds the task paused.
    members[o].kill();
    let taker = wait_owner(&http, &members, &task, Some(&owner_id), TAKEOVER).await;
    assert_eq!(taker, members[other].id);
    let lease = lease_of(&http, &members[other], &task).await.expect("the taker's lease");
    assert_eq!(lease["paused"], true, "the new owner's lease does not say paused: {lease}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(count(&shared_b(), &ledger).await, at_pause, "the new owner resumed a paused task");
    let tasks = get_json(&http, &format!("{}/api/v1/tasks", members[other].base)).await.expect("tasks");
    let view = tasks.as_array().and_then(|t| t.iter().find(|t| t["name"] == task.as_str()).cloned());
    assert_eq!(view.map(|v| v["paused"].clone()), Some(Value::Bool(true)), "the new owner's task view");

    // Resumed on its new owner, it goes on from the target's checkpoint.
    let (status, body) = post(&http, &format!("{}/api/v1/tasks/{task}/resume", members[other].base)).await;
    assert_eq!(status, 200, "resume on the new owner: {body}");
    assert_eq!(body["paused"], false, "{body}");
    wait_target_past(&ledger, at_pause, "after the resume").await;
    stop_writer(app).await;
    assert_all_arrived_once(&db, &ledger).await;
    for m in &mut members {
        m.kill();
    }
}

/// A node that cannot reach one of a direction's endpoints never takes it, even at the
/// target's site and alone in the cluster: it says so in its record (`unreachable`,
/// `ferry cluster status`), and the direction goes to a node that reaches both.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_that_cannot_reach_an_endpoint_leaves_the_direction_to_one_that_can() {
    let bed = Bed::new(&["dc-b", "dc-a"]).await;
    let (db, task, ledger) = (bed.db.clone(), bed.task.clone(), bed.ledger.clone());
    let mut members = bed.members();
    // The node at the target's site sees the target at a port where nothing listens.
    let port_b = mysql_async::Opts::from_url(&shared_b()).expect("url of dc-b").tcp_port();
    members[0].rewrite_config(&format!(":{port_b}\""), &format!(":{}\"", free_port()));
    let http = crate::support::http_client(Duration::from_secs(5));
    members[0].start();
    wait_joined(&http, &members[0]).await;
    // Alone and at the target's site, it still leaves the direction free; it names the
    // endpoint it cannot reach.
    wait_unreachable(&http, &members[0], &members[0], &["b"]).await;
    tokio::time::sleep(bed.ttl).await;
    assert_eq!(owner(&http, &members, &task).await, None, "a node that cannot reach the target took the direction");
    // A node away from the target's site, reaching both, takes it at once.
    let app = start_writer(&db);
    members[1].start();
    let took = wait_owner(&http, &members, &task, None, WAIT).await;
    assert_eq!(took, members[1].id);
    let out = crate::support::ferry(&["cluster", "status", "--node", &members[1].base]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("cannot reach b"), "ferry cluster status:\n{text}");
    stop_writer(app).await;
    assert_all_arrived_once(&db, &ledger).await;
    for m in &mut members {
        m.kill();
    }
}

/// How long a hand-over may take once the owner lost its way to an endpoint: its next
/// probe is at most 10 s away (sooner when its direction retries the endpoint), then a
/// round of its ownership loop gives the lease back and the other node takes it.
const HANDOVER: Duration = Duration::from_secs(15);

/// Polls `m`'s record (as `via` sees the cluster) until its `unreachable` list is `want`.
pub(crate) async fn wait_unreachable(http: &reqwest::Client, via: &Member, m: &Member, want: &[&str]) {
    let start = Instant::now();
    loop {
        let view = get_json(http, &format!("{}/api/v1/cluster", via.base)).await;
        let nodes = view.as_ref().and_then(|v| v["nodes"].as_array().cloned()).unwrap_or_default();
        let listed = nodes.iter().find(|n| n["id"] == m.id.as_str()).and_then(|n| n["unreachable"].as_array().cloned());
        if listed.is_some_and(|l| l.iter().map(|v| v.as_str().unwrap_or_default()).eq(want.iter().copied())) {
            return;
        }
        assert!(
            start.elapsed() < WAIT,
            "{}'s record never said it cannot reach {want:?}; log:\n{}",
            m.id,
            tail(&m.log())
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The owner loses its way to the target while it runs the direction (its own relay to
/// the target closes; the other node reaches the target directly): it stops the direction
/// and gives the lease back, the other node takes it over within seconds and goes on from
/// the target's checkpoint, and when the first node reaches the target again it leaves the
/// direction where it is (no flapping).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_owner_that_loses_an_endpoint_hands_the_direction_over_and_does_not_take_it_back() {
    use crate::support::relay::Relay;
    let bed = Bed::new(&["dc-b", "dc-b"]).await;
    let (db, task, ledger) = (bed.db.clone(), bed.task.clone(), bed.ledger.clone());
    let mut members = bed.members();
    // The first node reaches the target only through the test's relay.
    let upstream = Relay::upstream_of(&shared_b());
    let mut relay = Relay::start("127.0.0.1:0".parse().expect("address"), upstream).await;
    members[0].rewrite_config(&format!("@{upstream}\""), &format!("@{}\"", relay.addr));
    let http = crate::support::http_client(Duration::from_secs(5));
    let app = start_writer(&db);
    let first = first_alone_then_second(&http, &mut members, &task, &ledger).await;
    // The owner must know a node that reaches both ends before it may hand over.
    let start = Instant::now();
    while !get_json(&http, &format!("{}/api/v1/cluster", members[0].base))
        .await
        .and_then(|v| v["nodes"].as_array().cloned())
        .is_some_and(|n| n.iter().any(|n| n["id"] == members[1].id.as_str()))
    {
        assert!(start.elapsed() < WAIT, "{} never saw {}", members[0].id, members[1].id);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // The owner's way to the target goes.
    let at_cut = count(&shared_b(), &ledger).await;
    let cut = Instant::now();
    relay.close().await;
    let next = wait_owner(&http, &members[1..], &task, Some(&first), HANDOVER).await;
    let handed = cut.elapsed();
    assert_eq!(next, members[1].id);
    wait_target_past(&ledger, at_cut, "the node that reaches the target").await;
    wait_unreachable(&http, &members[1], &members[0], &["b"]).await;
    let log = members[0].log();
    assert!(
        log.contains("cannot reach an endpoint of the direction: handing it to a node that can"),
        "the owner did not hand the direction over; log:\n{}",
        tail(&log)
    );

    // It reaches the target again, says so, and leaves the direction where it is for a
    // few rounds of its ownership loop (one a second).
    relay.reopen().await;
    wait_unreachable(&http, &members[1], &members[0], &[]).await;
    // (A reading of the view may miss the lease key, which JetStream's key listing does
    // now and then for a key rewritten while it lists: only the first node as owner counts.)
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(4) {
        let now = owner(&http, &members[1..], &task).await;
        assert_ne!(now.as_deref(), Some(first.as_str()), "the direction moved back; log:\n{}", tail(&members[0].log()));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(wait_owner(&http, &members[1..], &task, None, WAIT).await, next);
    let log = members[0].log();
    assert_eq!(
        log.matches("took the cluster lease").count(),
        1,
        "the first node took the lease again:\n{}",
        tail(&log)
    );
    eprintln!("hand-over after the owner lost its way to the target: {handed:?}");
    stop_writer(app).await;
    assert_all_arrived_once(&db, &ledger).await;
    for m in &mut members {
        m.kill();
    }
}
