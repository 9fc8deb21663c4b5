//! Two processes: starting a second `ferry run` for a running task is refused, names the
//! holder and changes nothing; a clean stop releases the lease; a process started after
//! a crash (same host, holder's pid gone) takes the lease over by itself.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::support::{app_conn, checkpoint_seq, create_db, dump, ferry, ferry_bin, task_file};

/// A `ferry run` child, killed and reaped on drop if still running.
struct Run {
    child: Child,
    log: PathBuf,
}

impl Run {
    fn start(config: &Path, log: PathBuf) -> Run {
        let child = Command::new(ferry_bin())
            .args(["run", "--config", config.to_str().expect("utf-8 path")])
            .env("FERRY_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("ferry run starts");
        Run { child, log }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the process to exit by itself; kills it and fails when it overruns.
    async fn exit_within(&mut self, limit: Duration, what: &str) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for ferry") {
                return status;
            }
            if start.elapsed() > limit {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("{what}: did not exit within {limit:?}; its log:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends SIGTERM (a clean stop).
    fn terminate(&self) {
        let status = Command::new("kill").arg("-TERM").arg(self.pid().to_string()).status().expect("kill runs");
        assert!(status.success(), "kill -TERM {} failed", self.pid());
    }

    /// SIGKILL (a crash), then reaps the child so that its pid is really gone.
    fn crash(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap");
    }

    /// Fails with the log when the process has already exited.
    fn assert_running(&mut self, what: &str) {
        if let Some(status) = self.child.try_wait().expect("try_wait") {
            panic!("{what}: exited early with {status}; its log:\n{}", self.log());
        }
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The held lease rows in the target: (node, host, pid). A released lease keeps its row
/// (and fencing token) with nobody in it (pid 0).
async fn lease_rows(target: &Path) -> Vec<(String, String, i64)> {
    let mut c = app_conn(target).await;
    let rows: Vec<(String, String, i64)> =
        sqlx::query_as("SELECT node, host, pid FROM ferry_lease WHERE pid <> 0 ORDER BY task, direction")
            .fetch_all(&mut c)
            .await
            .unwrap_or_default();
    sqlx::Connection::close(c).await.ok();
    rows
}

/// The checkpoint slots recorded in the target: (task, direction, slot).
async fn checkpoint_slots(target: &Path) -> Vec<(String, String, String)> {
    let mut c = app_conn(target).await;
    let rows: Vec<(String, String, String)> =
        sqlx::query_as("SELECT task, direction, slot FROM ferry_checkpoint ORDER BY task, direction, slot")
            .fetch_all(&mut c)
            .await
            .expect("read ferry_checkpoint");
    sqlx::Connection::close(c).await.ok();
    rows
}

/// `ferry status --format json` for direction a->b: (state, holder).
fn status_of(config: &Path) -> (String, String) {
    let out = ferry(&["status", "--config", config.to_str().expect("utf-8 path"), "--format", "json"]);
    let v: serde_json::Value = match serde_json::from_slice(&out.stdout) {
        Ok(v) => v,
        Err(_) => return (String::new(), String::new()),
    };
    let d = v.as_array().and_then(|a| a.iter().find(|d| d["direction"] == "a->b"));
    let field = |k: &str| d.and_then(|d| d[k].as_str()).unwrap_or_default().to_string();
    (field("state"), field("holder"))
}

/// Waits until `run` streams: status says so, names it as holder, and the target holds
/// the source's rows.
async fn wait_streaming(run: &mut Run, config: &Path, a: &Path, b: &Path, what: &str) {
    let pid = format!("pid {}", run.pid());
    let limit = Duration::from_secs(30);
    let start = Instant::now();
    loop {
        run.assert_running(what);
        let (state, holder) = status_of(config);
        if state == "streaming" && holder.contains(&pid) && dump(a, "t", "id").await == dump(b, "t", "id").await {
            return;
        }
        assert!(
            start.elapsed() < limit,
            "{what}: not streaming after {limit:?} (status {state:?}, holder {holder:?}); its log:\n{}",
            run.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Inserts a row into the source and waits until the target has it.
async fn insert_and_wait(a: &Path, b: &Path, id: i64, run: &mut Run, what: &str) {
    create_db(a, &format!("INSERT INTO t VALUES ({id}, 'row {id}')")).await;
    let want = format!("{id},'row {id}'");
    let start = Instant::now();
    loop {
        run.assert_running(what);
        if dump(b, "t", "id").await.contains(&want) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "{what}: row {id} not applied within 15 s; its log:\n{}",
            run.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(dump(a, "t", "id").await, dump(b, "t", "id").await, "{what}: target differs from source");
}

#[tokio::test(flavor = "multi_thread")]
async fn second_run_is_refused_and_a_crashed_holder_is_taken_over() {
    let dir = tempfile::tempdir().expect("temp folder");
    let logs = tempfile::tempdir().expect("log folder");
    let (a, b) = (dir.path().join("a.db"), dir.path().join("b.db"));
    create_db(
        &a,
        "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); \
         INSERT INTO t VALUES (1, 'row 1'), (2, 'row 2'), (3, 'row 3'), (4, 'row 4'), (5, 'row 5');",
    )
    .await;
    create_db(&b, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);").await;
    let config = task_file(dir.path(), "one-way", "");

    // First process: copies the rows and streams.
    let mut first = Run::start(&config, logs.path().join("first.log"));
    wait_streaming(&mut first, &config, &a, &b, "first run").await;
    let first_pid = i64::from(first.pid());
    insert_and_wait(&a, &b, 6, &mut first, "first run").await;

    // Second process: refused at once, naming the holder; changes nothing.
    let rows_before = dump(&b, "t", "id").await;
    let slots_before = checkpoint_slots(&b).await;
    let seq_before = checkpoint_seq(&b, "t", "a->b").await;
    let lease_before = lease_rows(&b).await;
    assert_eq!(lease_before.len(), 1, "one lease row while the first run streams: {lease_before:?}");
    assert_eq!(lease_before[0].2, first_pid, "the first run holds the lease: {lease_before:?}");

    let mut second = Run::start(&config, logs.path().join("second.log"));
    let status = second.exit_within(Duration::from_secs(10), "second run").await;
    let log = second.log();
    assert_eq!(status.code(), Some(3), "a second run of a running task exits 3 (already running); log:\n{log}");
    assert!(
        log.contains("already running") || log.contains("lease"),
        "the refusal says the task is already running; log:\n{log}"
    );
    assert!(log.contains(&format!("pid {first_pid}")), "the refusal names the holder's pid {first_pid}; log:\n{log}");
    assert!(log.contains("fix"), "the refusal says what to do; log:\n{log}");
    assert!(!log.contains("panicked"), "second run panicked; log:\n{log}");

    first.assert_running("first run after the refusal");
    assert_eq!(dump(&b, "t", "id").await, rows_before, "the second run changed the target's rows");
    assert_eq!(dump(&a, "t", "id").await, rows_before, "the target still equals the source");
    assert_eq!(checkpoint_slots(&b).await, slots_before, "the second run changed the checkpoint slots");
    assert!(checkpoint_seq(&b, "t", "a->b").await >= seq_before, "the checkpoint went backwards after the second run");
    let lease_after = lease_rows(&b).await;
    assert_eq!(lease_after, lease_before, "the lease (node, host, pid) must stay the first run's");
    // The first run still applies changes after the refusal.
    insert_and_wait(&a, &b, 7, &mut first, "first run after the refusal").await;

    // A clean stop (SIGTERM) exits 0 and releases the lease.
    first.terminate();
    let status = first.exit_within(Duration::from_secs(10), "first run after SIGTERM").await;
    assert_eq!(status.code(), Some(0), "SIGTERM is a clean stop; log:\n{}", first.log());
    assert_eq!(lease_rows(&b).await, Vec::new(), "a clean stop releases the lease");

    // Third process: starts without waiting, then crashes (SIGKILL) holding the lease.
    let mut third = Run::start(&config, logs.path().join("third.log"));
    wait_streaming(&mut third, &config, &a, &b, "third run").await;
    insert_and_wait(&a, &b, 8, &mut third, "third run").await;
    let third_pid = i64::from(third.pid());
    third.crash();
    let stale = lease_rows(&b).await;
    assert_eq!(stale.len(), 1, "the crashed run leaves its lease row: {stale:?}");
    assert_eq!(stale[0].2, third_pid, "the stale lease is the crashed run's: {stale:?}");

    // Fourth process, started right after: the holder is provably dead (same host, pid
    // gone), so it takes the lease over by itself and applies new changes.
    let mut fourth = Run::start(&config, logs.path().join("fourth.log"));
    let taken = Instant::now();
    let fourth_pid = i64::from(fourth.pid());
    loop {
        fourth.assert_running("fourth run");
        if lease_rows(&b).await.iter().any(|(_, _, p)| *p == fourth_pid) {
            break;
        }
        // The lease lasts 15 s: taking it within 10 s means no waiting for it to expire.
        assert!(
            taken.elapsed() < Duration::from_secs(10),
            "the fourth run did not take over the crashed run's lease within 10 s; lease {:?}; its log:\n{}",
            lease_rows(&b).await,
            fourth.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_streaming(&mut fourth, &config, &a, &b, "fourth run").await;
    insert_and_wait(&a, &b, 9, &mut fourth, "fourth run").await;
    let log = fourth.log();
    assert!(!log.contains("already running"), "the fourth run must not be refused; log:\n{log}");

    fourth.terminate();
    let status = fourth.exit_within(Duration::from_secs(10), "fourth run after SIGTERM").await;
    assert_eq!(status.code(), Some(0), "log:\n{}", fourth.log());
}

// --- fencing: a process that lost its lease commits nothing -------------------------

mod fencing {
    use std::sync::Arc;
    use std::time::Duration;

    use ferry::connector::endpoint::{Endpoint, EndpointUrl};
    use ferry::connector::mysql::position::BinlogPos;
    use ferry::connector::registry::{self, SinkOptions};
    use ferry::connector::{ApplyBatch, Checkpoint, ConnectorError, DirectionId, LeaseHolder, LeaseOutcome, Sink};
    use ferry::model::{Change, Column, Position, SiteId, TableName, TableSchema, Txn, Value};

    use crate::support::create_db;
    use crate::support::mariadb::{Cleanup, admin, database, rows, shared_b, unique};

    /// A process as a lease holder: its own host name, so only expiry decides.
    fn process(name: &str) -> LeaseHolder {
        LeaseHolder {
            node: name.into(),
            host: format!("host-{name}"),
            pid: 4242,
            expires_us: 0,
            expired: false,
            fencing: 0,
            floor: 0,
        }
    }

    fn at(pos: u64) -> Position {
        BinlogPos { file: "bin.000001".into(), pos, gtid: String::new() }.to_position()
    }

    /// One source transaction inserting row `id`, ending at `pos`.
    fn txn(t: &Arc<TableSchema>, id: i64, pos: u64) -> Txn {
        let row = vec![Value::Int(id), Value::Text(format!("row {id}"))];
        Txn {
            origin: SiteId::new("dc-a"),
            commit_ts: 0,
            position: at(pos),
            changes: vec![Change::snapshot_insert(t, &row)],
            ddl: Vec::new(),
        }
    }

    fn batch(txns: Vec<Txn>, end: u64, commit: bool, fence: i64) -> ApplyBatch {
        ApplyBatch {
            txns,
            snapshot: None,
            checkpoint: Checkpoint { position: Some(at(end)), tables: Default::default() },
            conflicts: None,
            one_by_one: false,
            commit,
            fence: Some(fence),
            flush: true,
        }
    }

    async fn take(
        sink: &mut Box<dyn ferry::connector::dynamic::DynSink>,
        dir: &DirectionId,
        who: &LeaseHolder,
        ttl: Duration,
    ) -> i64 {
        match sink.lease(dir, who, ttl).await.expect("lease") {
            LeaseOutcome::Acquired { fencing } => fencing,
            other => panic!("{} could not take the lease: {other:?}", who.node),
        }
    }

    fn assert_fenced(result: Result<ferry::connector::ApplyReport, ConnectorError>, winner: &str, what: &str) {
        match result {
            Err(e @ ConnectorError::Fenced { .. }) => {
                let text = e.to_string();
                assert!(text.contains("lost its lease") && text.contains(winner), "{what}: {text}");
            }
            other => panic!("{what}: expected the batch to be refused for a lost lease, got {other:?}"),
        }
    }

    /// Two processes on one target: `a` loses the lease to `b` (its lease ran out), then
    /// whatever `a` still applies — a batch, a commit group in parts, on several sessions
    /// — is refused whole; its renewal and release leave `b`'s lease alone; `b` applies;
    /// every new holder gets a greater fencing token. `sessions_ended`: the store ends a
    /// lapsed holder's sessions on takeover. `ids` reads the table's keys.
    async fn lost_lease_commits_nothing<F, Fut>(
        target: &Endpoint,
        t: Arc<TableSchema>,
        workers: usize,
        sessions_ended: bool,
        ids: F,
    ) where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Vec<i64>>,
    {
        let dir = DirectionId { task: unique("fence"), from: "a".into(), to: "b".into() };
        let opts = SinkOptions { workers, two_way_from: None, topic: String::new(), index: String::new() };
        let open = || async {
            let mut sink = registry::open_sink(target, &opts).await.expect("open sink");
            sink.prepare().await.expect("prepare");
            sink.ensure_tables(std::slice::from_ref(&t)).await.expect("tables");
            sink.load_checkpoint(&dir).await.expect("checkpoint");
            sink
        };
        let (mut a, mut b) = (open().await, open().await);
        let (mut pa, mut pb) = (process("a"), process("b"));

        // a holds the lease and applies; its lease then runs out (1 ms) while it is away.
        pa.fencing = take(&mut a, &dir, &pa, Duration::from_secs(60)).await;
        a.apply(&dir, &batch(vec![txn(&t, 1, 10)], 10, true, pa.fencing)).await.expect("a applies as holder");
        pa.fencing = take(&mut a, &dir, &pa, Duration::from_millis(1)).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        // b takes it over, with a greater fencing token.
        pb.fencing = take(&mut b, &dir, &pb, Duration::from_secs(60)).await;
        assert!(pb.fencing > pa.fencing, "the new holder's token {} must exceed {}", pb.fencing, pa.fencing);
        b.load_checkpoint(&dir).await.expect("b loads the checkpoint");
        b.apply(&dir, &batch(vec![txn(&t, 2, 20)], 20, true, pb.fencing)).await.expect("b applies as holder");

        // a comes back. Its sessions may be gone: a store that can end them (MySQL) did
        // when b took over, so that no open transaction of a's could hold b up. Either way
        // nothing lands, and on new sessions every write under a's token is refused: a
        // batch, a commit group in parts, several transactions at once.
        match a.apply(&dir, &batch(vec![txn(&t, 3, 30)], 30, true, pa.fencing)).await {
            Err(ConnectorError::Fenced { .. }) => {}
            Err(e) if sessions_ended => assert!(e.to_string().contains("connection"), "{e}"),
            other => panic!("a's batch after the takeover must fail, got {other:?}"),
        }
        let mut a = open().await;
        assert_fenced(a.apply(&dir, &batch(vec![txn(&t, 3, 30)], 30, true, pa.fencing)).await, "node \"b\"", "a batch");
        a.apply(&dir, &batch(vec![txn(&t, 4, 40)], 40, false, pa.fencing)).await.expect("a part applies uncommitted");
        assert_fenced(
            a.apply(&dir, &batch(vec![txn(&t, 5, 50)], 50, true, pa.fencing)).await,
            "node \"b\"",
            "the part that commits a group",
        );
        assert_fenced(
            a.apply(&dir, &batch(vec![txn(&t, 6, 60), txn(&t, 7, 70)], 70, true, pa.fencing)).await,
            "node \"b\"",
            "two independent transactions",
        );
        assert_eq!(ids().await, vec![1, 2], "nothing a applied after losing its lease is in the target");
        let cp = b.load_checkpoint(&dir).await.expect("checkpoint").expect("one");
        assert_eq!(cp.position, Some(at(20)), "the checkpoint stays b's");

        // a's renewal is refused, naming b; its release leaves b's lease alone.
        match a.lease(&dir, &pa, Duration::from_secs(60)).await.expect("renewal answers") {
            LeaseOutcome::HeldBy(h) => assert_eq!((h.node.as_str(), h.fencing), ("b", pb.fencing)),
            other => panic!("a's renewal must be refused: {other:?}"),
        }
        a.release(&dir, &pa).await.expect("release");
        let state = registry::target_state(target, &dir).await.expect("state");
        let holder = state.lease.expect("b still holds the lease");
        assert_eq!((holder.node.as_str(), holder.fencing, holder.expired), ("b", pb.fencing, false));

        // b goes on (several sessions, where the store has them) and then stops cleanly.
        b.apply(&dir, &batch(vec![txn(&t, 8, 80), txn(&t, 9, 90)], 90, true, pb.fencing)).await.expect("b applies");
        assert_eq!(ids().await, vec![1, 2, 8, 9]);
        b.release(&dir, &pb).await.expect("release");
        assert!(registry::target_state(target, &dir).await.expect("state").lease.is_none(), "released");
        // The next holder still gets a greater token: release keeps the counter.
        let mut c = open().await;
        let fc = take(&mut c, &dir, &process("c"), Duration::from_secs(60)).await;
        assert!(fc > pb.fencing, "token {fc} after a release must exceed {}", pb.fencing);
        assert_fenced(
            b.apply(&dir, &batch(vec![txn(&t, 10, 100)], 100, true, pb.fencing)).await,
            "node \"c\"",
            "b after its release",
        );
        assert_eq!(ids().await, vec![1, 2, 8, 9]);
    }

    fn table(name: TableName) -> Arc<TableSchema> {
        Arc::new(TableSchema {
            name,
            columns: vec![
                Column { name: "id".into(), decl_type: "INTEGER".into(), nullable: false },
                Column { name: "v".into(), decl_type: "TEXT".into(), nullable: false },
            ],
            primary_key: vec![0],
            unique_keys: Vec::new(),
            foreign_keys: Vec::new(),
            create_sql: None,
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_sqlite_target_refuses_every_write_of_a_process_that_lost_its_lease() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("b.db");
        create_db(&path, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)").await;
        let target = Endpoint {
            name: "b".into(),
            site: SiteId::new("dc-b"),
            url: EndpointUrl::new(format!("sqlite://{}", path.display()), dir.path()),
            password: None,
            ssh: Default::default(),
        };
        let ids = || async {
            let mut c = crate::support::app_conn(&path).await;
            let ids: Vec<i64> =
                sqlx::query_scalar("SELECT id FROM t ORDER BY id").fetch_all(&mut c).await.expect("ids");
            sqlx::Connection::close(c).await.ok();
            ids
        };
        lost_lease_commits_nothing(&target, table(TableName::bare("t")), 1, false, ids).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_mariadb_target_refuses_every_write_of_a_process_that_lost_its_lease() {
        let mut cleanup = Cleanup::new(&shared_b());
        let db = database(&shared_b(), "fence", &mut cleanup).await;
        admin(&shared_b(), &[format!("CREATE TABLE `{db}`.t (id INT PRIMARY KEY, v VARCHAR(40) NOT NULL)")]).await;
        cleanup.push("DELETE FROM ferry.ferry_checkpoint WHERE task LIKE 'fence\\_%'");
        cleanup.push("DELETE FROM ferry.ferry_lease WHERE task LIKE 'fence\\_%'");
        let target = Endpoint {
            name: "b".into(),
            site: SiteId::new("dc-b"),
            url: EndpointUrl::new(format!("{}/{db}", shared_b()), "."),
            password: None,
            ssh: Default::default(),
        };
        let sql = format!("SELECT id FROM `{db}`.t ORDER BY id");
        let ids = || async { rows(&shared_b(), &sql).await.iter().map(|r| r[0].parse().expect("id")).collect() };
        let name = TableName { schema: Some(db.clone()), name: "t".into() };
        // Two sessions: independent transactions are applied in parallel, each fenced.
        lost_lease_commits_nothing(&target, table(name), 2, true, ids).await;
    }
}

// --- a paused process loses its lease and stays out ----------------------------------

mod paused {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};

    use mysql_async::prelude::Queryable;

    use super::Run;
    use crate::mysql_oneway::task_file;
    use crate::support::mariadb::{Cleanup, admin, connect, database, rows, rows_once_created, shared_a, shared_b};

    fn signal(run: &Run, sig: &str) {
        let status = std::process::Command::new("kill").arg(sig).arg(run.pid().to_string()).status().expect("kill");
        assert!(status.success(), "kill {sig} {}", run.pid());
    }

    /// The lease row on the target: (pid, fencing, expired by the server's clock).
    async fn lease(task: &str) -> Option<(u32, i64, bool)> {
        let r = rows(
            &shared_b(),
            &format!(
                "SELECT pid, fencing, expires_us < CAST(UNIX_TIMESTAMP(NOW(6)) * 1000000 AS SIGNED) \
                 FROM ferry.ferry_lease WHERE task = '{task}'"
            ),
        )
        .await;
        r.first().map(|r| (r[0].parse().expect("pid"), r[1].parse().expect("fencing"), r[2] == "1"))
    }

    /// The counter of row 1 and the checkpoint's (file, offset) on the target.
    async fn progress(db: &str, task: &str) -> (i64, (String, u64)) {
        let n = rows(&shared_b(), &format!("SELECT n FROM `{db}`.t WHERE id = 1")).await;
        let n = n.first().and_then(|r| r[0].parse().ok()).unwrap_or(-1);
        let p = rows_once_created(
            &shared_b(),
            &format!("SELECT position FROM ferry.ferry_checkpoint WHERE task = '{task}' AND slot = 'stream:0'"),
        )
        .await;
        let p = p.first().map(|r| r[0].clone()).unwrap_or_default();
        let mut parts = p.strip_prefix("mysql:").unwrap_or("").splitn(3, ':');
        let file = parts.next().unwrap_or("").to_string();
        let offset = parts.next().and_then(|o| o.parse().ok()).unwrap_or(0);
        (n, (file, offset))
    }

    /// SIGSTOP the running process for 20 s: its lease runs out (15 s, by the target's
    /// clock), a second process takes it over with a greater fencing token and goes on
    /// applying the source's writes. After SIGCONT the first is refused and stops with a
    /// message saying it lost the lease; nothing it writes lands: the target's counter and
    /// checkpoint never go back, and the second keeps the lease and the target in step.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_process_paused_past_its_lease_is_refused_when_it_resumes_and_nothing_it_writes_lands() {
        let mut cleanup_a = Cleanup::new(&shared_a());
        let mut cleanup_b = Cleanup::new(&shared_b());
        let db = database(&shared_a(), "paused", &mut cleanup_a).await;
        cleanup_b.push(format!("DROP DATABASE IF EXISTS `{db}`"));
        admin(
            &shared_a(),
            &[
                format!("CREATE TABLE `{db}`.t (id INT PRIMARY KEY, n BIGINT NOT NULL)"),
                format!("INSERT INTO `{db}`.t VALUES (1, 0)"),
            ],
        )
        .await;
        let dir = tempfile::tempdir().expect("tempdir");
        let logs = tempfile::tempdir().expect("logs");
        let config = task_file(dir.path(), &shared_a(), &shared_b(), "one-way", &[&format!("{db}.*")], "");
        let text = std::fs::read_to_string(&config).expect("task file");
        let task = text.lines().find_map(|l| l.strip_prefix("name = \"task_")).expect("task name");
        let task = format!("task_{}", task.trim_end_matches('"'));
        cleanup_b.push(format!("DELETE FROM ferry.ferry_checkpoint WHERE task = '{task}'"));
        cleanup_b.push(format!("DELETE FROM ferry.ferry_lease WHERE task = '{task}'"));

        let mut first = Run::start(&config, logs.path().join("first.log"));
        let start = Instant::now();
        while lease(&task).await.is_none_or(|l| l.0 != first.pid()) || progress(&db, &task).await.0 != 0 {
            first.assert_running("first run");
            assert!(start.elapsed() < Duration::from_secs(30), "first run not streaming; log:\n{}", first.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        // The application: row 1 counts up and a row is added, every 20 ms.
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (stop, db) = (stop.clone(), db.clone());
            tokio::spawn(async move {
                let mut c = connect(&shared_a()).await;
                let mut k = 1;
                while !stop.load(Ordering::Relaxed) {
                    k += 1;
                    c.query_drop(format!("UPDATE `{db}`.t SET n = n + 1 WHERE id = 1")).await.expect("update");
                    c.query_drop(format!("INSERT INTO `{db}`.t VALUES ({k}, {k})")).await.expect("insert");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                c.disconnect().await.ok();
                k
            })
        };
        let start = Instant::now();
        while progress(&db, &task).await.0 < 5 {
            assert!(start.elapsed() < Duration::from_secs(20), "first run does not apply; log:\n{}", first.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        // Paused: its lease runs out by the target's clock, then a second process takes it.
        signal(&first, "-STOP");
        let paused = Instant::now();
        let (_, first_token, _) = lease(&task).await.expect("lease row");
        while !lease(&task).await.is_some_and(|l| l.2) {
            assert!(paused.elapsed() < Duration::from_secs(18), "the paused process's lease did not run out");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut second = Run::start(&config, logs.path().join("second.log"));
        while lease(&task).await.is_none_or(|l| l.0 != second.pid()) {
            second.assert_running("second run");
            assert!(paused.elapsed() < Duration::from_secs(20), "no takeover within 20 s; log:\n{}", second.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (_, second_token, _) = lease(&task).await.expect("lease row");
        assert!(second_token > first_token, "the new holder's fencing token {second_token} > {first_token}");
        let taken = progress(&db, &task).await;
        while progress(&db, &task).await.0 <= taken.0 {
            second.assert_running("second run");
            assert!(paused.elapsed() < Duration::from_secs(30), "second run does not apply; log:\n{}", second.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if let Some(left) = Duration::from_secs(20).checked_sub(paused.elapsed()) {
            tokio::time::sleep(left).await;
        }

        // Resumed: watch the target until the first has stopped, and a little longer.
        let mut last = progress(&db, &task).await;
        signal(&first, "-CONT");
        let resumed = Instant::now();
        let mut exited = None;
        while exited.is_none_or(|t: Instant| t.elapsed() < Duration::from_secs(3)) {
            let now = progress(&db, &task).await;
            assert!(
                now.0 >= last.0,
                "the target's counter went back from {} to {}: a stale write landed",
                last.0,
                now.0
            );
            assert!(now.1 >= last.1, "the checkpoint went back from {:?} to {:?}", last.1, now.1);
            last = now;
            if exited.is_none() && first.child.try_wait().expect("try_wait").is_some() {
                exited = Some(Instant::now());
            }
            assert!(
                resumed.elapsed() < Duration::from_secs(30),
                "the resumed process did not stop within 30 s; log:\n{}",
                first.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let status = first.exit_within(Duration::from_secs(1), "first run").await;
        let log = first.log();
        assert_eq!(status.code(), Some(3), "the refused process exits 3; log:\n{log}");
        assert!(
            log.contains("lost its lease") && log.contains(&format!("pid {}", second.pid())),
            "the first says it lost its lease, naming the new holder; log:\n{log}"
        );
        assert!(!log.contains("panicked"), "log:\n{log}");
        let holder = lease(&task).await.expect("lease row");
        assert_eq!((holder.0, holder.1), (second.pid(), second_token), "the second keeps the lease");

        // The second brings the target level with the source and keeps running.
        stop.store(true, Ordering::Relaxed);
        let last_id = writer.await.expect("writer");
        let want = rows(&shared_a(), &format!("SELECT COUNT(*), SUM(n) FROM `{db}`.t")).await;
        assert_eq!(want[0][0], last_id.to_string(), "rows 1..={last_id} on the source");
        let start = Instant::now();
        while rows(&shared_b(), &format!("SELECT COUNT(*), SUM(n) FROM `{db}`.t")).await != want {
            second.assert_running("second run");
            assert!(start.elapsed() < Duration::from_secs(30), "target not level; log:\n{}", second.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        second.terminate();
        let status = second.exit_within(Duration::from_secs(15), "second run").await;
        assert_eq!(status.code(), Some(0), "log:\n{}", second.log());
    }
}
