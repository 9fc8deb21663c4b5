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

/// The lease row of direction t a->b in the target: (node, host, pid).
async fn lease_rows(target: &Path) -> Vec<(String, String, i64)> {
    let mut c = app_conn(target).await;
    let rows: Vec<(String, String, i64)> =
        sqlx::query_as("SELECT node, host, pid FROM ferry_lease ORDER BY task, direction")
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
