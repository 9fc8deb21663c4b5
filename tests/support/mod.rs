//! Shared helpers: temp folders, SQLite files, task files, the ferry binary.

#![allow(dead_code)]

pub mod batches;
pub mod caught_up;
pub mod doris;
pub mod kafka;
pub mod mariadb;
pub mod netns;
pub mod node;
pub mod postgres;
pub mod redis;
pub mod relay;
pub mod s3;
pub mod search;
pub mod tls;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use ferry::config::Config;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{ConnectOptions, Executor};

/// Path of the built `ferry` binary.
pub fn ferry_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ferry"))
}

/// Runs `ferry` with arguments and waits for it (at most 10 minutes).
pub fn ferry(args: &[&str]) -> Output {
    output_within(Command::new(ferry_bin()).args(args).env("FERRY_LOG", "warn"), Duration::from_secs(600))
}

/// Runs a command to its end like `Command::output`, but kills it and fails the test
/// with what it printed when it is still running after `limit` (a hung process must
/// fail its test, not stall the whole suite).
pub fn output_within(cmd: &mut Command, limit: Duration) -> Output {
    let logs = tempfile::tempdir().expect("log folder");
    let (out_path, err_path) = (logs.path().join("stdout"), logs.path().join("stderr"));
    let mut child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&out_path).expect("stdout file"))
        .stderr(std::fs::File::create(&err_path).expect("stderr file"))
        .spawn()
        .unwrap_or_else(|e| panic!("{:?} does not start: {e}", cmd.get_program()));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            break status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
            let args: Vec<_> = cmd.get_args().map(|a| a.to_string_lossy()).collect();
            panic!(
                "`{:?} {}` did not exit within {limit:?}; stderr so far:\n{stderr}",
                cmd.get_program(),
                args.join(" ")
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: std::fs::read(&out_path).expect("read stdout"),
        stderr: std::fs::read(&err_path).expect("read stderr"),
    }
}

/// Opens (creating) a SQLite file as an application would.
pub async fn app_conn(path: &Path) -> SqliteConnection {
    SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .busy_timeout(Duration::from_secs(30))
        .disable_statement_logging()
        .connect()
        .await
        .expect("open sqlite file")
}

/// Creates a SQLite file and runs `sql` in it.
pub async fn create_db(path: &Path, sql: &str) {
    let mut c = app_conn(path).await;
    c.execute(sqlx::AssertSqlSafe(sql.to_string())).await.expect("schema");
    sqlx::Connection::close(c).await.ok();
}

/// A task file with two SQLite endpoints a and b in `dir` and one task `t`.
pub fn task_file(dir: &Path, mode: &str, extra_task_keys: &str) -> PathBuf {
    let text = format!(
        r#"[node]
id = "test-node"
store = "sqlite://meta.db"

[[endpoint]]
name = "a"
site = "dc-a"
url = "sqlite://a.db"

[[endpoint]]
name = "b"
site = "dc-b"
url = "sqlite://b.db"

[[task]]
name = "t"
from = "a"
to = "b"
mode = "{mode}"
tables = ["*"]
{extra_task_keys}
"#
    );
    let path = dir.join("ferry.toml");
    std::fs::write(&path, text).expect("write task file");
    path
}

/// A task file with these endpoints (name, site, url) and one-way tasks (name, from, to,
/// table pattern), loaded.
pub fn config_of(dir: &Path, endpoints: &[(&str, &str, String)], tasks: &[(String, &str, &str, String)]) -> Config {
    let mut text = String::from("[node]\nid = \"test-node\"\nstore = \"sqlite://meta.db\"\n");
    for (name, site, url) in endpoints {
        text.push_str(&format!("\n[[endpoint]]\nname = {name:?}\nsite = {site:?}\nurl = {url:?}\n"));
    }
    for (name, from, to, tables) in tasks {
        text.push_str(&format!("\n[[task]]\nname = {name:?}\nfrom = {from:?}\nto = {to:?}\ntables = [{tables:?}]\n"));
    }
    let path = dir.join("ferry.toml");
    std::fs::write(&path, text).expect("write task file");
    Config::load(&path).expect("task file loads")
}

/// Polls `cond` every 20 ms until it holds or `limit` passes.
pub async fn wait_until<F, Fut>(limit: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !cond().await {
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether this process holds a file of the SQLite database `path` open (the database,
/// its `-wal` or `-shm`).
pub fn held_open(path: &Path) -> bool {
    let names: Vec<String> = ["", "-wal", "-shm"].iter().map(|ext| format!("{}{ext}", path.display())).collect();
    std::fs::read_dir("/proc/self/fd").into_iter().flatten().flatten().any(|fd| {
        std::fs::read_link(fd.path()).is_ok_and(|t| {
            let t = t.to_string_lossy();
            names.iter().any(|n| t == n.as_str() || t == format!("{n} (deleted)"))
        })
    })
}

/// Highest changelog sequence of a database (0 when empty).
pub async fn changelog_head(path: &Path) -> i64 {
    let mut c = app_conn(path).await;
    let v: Option<i64> = sqlx::query_scalar("SELECT max(seq) FROM ferry_changelog")
        .fetch_one(&mut c)
        .await
        .expect("reading the changelog head");
    sqlx::Connection::close(c).await.ok();
    v.unwrap_or(0)
}

/// The applied position (sqlite sequence) a target recorded for a direction.
pub async fn checkpoint_seq(target: &Path, task: &str, direction: &str) -> i64 {
    let mut c = app_conn(target).await;
    let v: Option<String> = sqlx::query_scalar(
        "SELECT position FROM ferry_checkpoint WHERE task = ?1 AND direction = ?2 AND slot = 'stream:0'",
    )
    .bind(task)
    .bind(direction)
    .fetch_optional(&mut c)
    .await
    .ok()
    .flatten()
    .flatten();
    sqlx::Connection::close(c).await.ok();
    v.and_then(|p| p.strip_prefix("sqlite:").and_then(|s| s.parse().ok())).unwrap_or(0)
}

/// Every row of a table as canonical text, in key order.
pub async fn dump(path: &Path, table: &str, order_by: &str) -> Vec<String> {
    let mut c = app_conn(path).await;
    let cols: Vec<String> =
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT name FROM pragma_table_info('{table}') ORDER BY cid")))
            .fetch_all(&mut c)
            .await
            .expect("columns");
    let expr: Vec<String> = cols.iter().map(|c| format!("quote(\"{c}\")")).collect();
    let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT {} FROM \"{table}\" ORDER BY {order_by}",
        expr.join("||','||")
    )))
    .fetch_all(&mut c)
    .await
    .expect("rows");
    sqlx::Connection::close(c).await.ok();
    rows
}

/// A running `ferry run` child (log appended to a file), killed on drop.
pub struct FerryRun(Option<std::process::Child>);

impl FerryRun {
    /// Starts `ferry run --config CONFIG` with info logging into `log`.
    pub fn start(config: &Path, log: &Path) -> FerryRun {
        FerryRun::start_command("run", config, log)
    }

    /// Starts `ferry COMMAND --config CONFIG` (`run`, `node`) with info logging into `log`.
    pub fn start_command(command: &str, config: &Path, log: &Path) -> FerryRun {
        FerryRun::start_with_env(command, config, log, &[])
    }

    /// [`FerryRun::start_command`] with these environment variables (test hooks).
    pub fn start_with_env(command: &str, config: &Path, log: &Path, env: &[(&str, String)]) -> FerryRun {
        FerryRun::spawn(Command::new(ferry_bin()), command, config, log, env)
    }

    /// [`FerryRun::start_command`] inside the network namespace `netns` (`ip netns exec`,
    /// which execs ferry: the child's pid is ferry's).
    pub fn start_in_netns(netns: &str, command: &str, config: &Path, log: &Path) -> FerryRun {
        let mut ip = Command::new("ip");
        ip.args(["netns", "exec", netns]).arg(ferry_bin());
        FerryRun::spawn(ip, command, config, log, &[])
    }

    fn spawn(mut program: Command, command: &str, config: &Path, log: &Path, env: &[(&str, String)]) -> FerryRun {
        let err = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("log file");
        let child = program
            .args([command, "--config"])
            .arg(config)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            // FERRY_TEST_LOG (e.g. `ferry=debug`) turns up the children's logging.
            .env("FERRY_LOG", std::env::var("FERRY_TEST_LOG").unwrap_or_else(|_| "info".into()))
            .stdout(std::process::Stdio::null())
            .stderr(err)
            .spawn()
            .expect("spawn ferry");
        FerryRun(Some(child))
    }

    /// The child's process id (`None` once it was killed or stopped).
    pub fn pid(&self) -> Option<u32> {
        self.0.as_ref().map(std::process::Child::id)
    }

    /// Whether the child has exited (by itself).
    pub fn exited(&mut self) -> bool {
        self.0.as_mut().is_none_or(|c| c.try_wait().ok().flatten().is_some())
    }

    /// `ferry run` SIGKILLed 4 times at random moments 0.7–1.5 s apart (from `seed`) and
    /// started again each time with the same task file and log.
    pub async fn sigkill_now_and_then(&mut self, config: &Path, log: &Path, seed: u64) {
        let mut rng = fastrand::Rng::with_seed(seed);
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_millis(rng.u64(700..1500))).await;
            self.kill();
            *self = FerryRun::start(config, log);
        }
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM; the exit code, or `None` when it did not stop within 20 s (then killed).
    pub fn terminate(&mut self) -> Option<i32> {
        let mut c = self.0.take()?;
        let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(s)) = c.try_wait() {
                return s.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
        None
    }
}

impl Drop for FerryRun {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What a finished `ferry` process left.
#[derive(Debug)]
pub struct Outcome {
    /// Exit code (`None`: killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Outcome {
    /// Both streams, for assertion messages.
    pub fn all(&self) -> String {
        format!("exit code {:?}\n--- stdout:\n{}\n--- stderr:\n{}", self.code, self.stdout, self.stderr)
    }

    /// The `PROBLEM` lines of standard error.
    pub fn problems(&self) -> Vec<&str> {
        self.stderr.lines().filter(|l| l.starts_with("PROBLEM")).collect()
    }
}

/// Runs `ferry args` with its output in files, failing the test (after killing the
/// child) when it does not exit by itself within `limit`.
pub async fn ferry_within(args: &[&str], limit: Duration) -> Outcome {
    let mut cmd = Command::new(ferry_bin());
    cmd.args(args).env("FERRY_LOG", "warn").env_remove("RUST_BACKTRACE");
    // Waited for off the runtime's threads; a timeout's panic (with the log) goes on.
    let out = tokio::task::spawn_blocking(move || output_within(&mut cmd, limit))
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
    Outcome {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The peak resident memory (VmHWM, in KiB) of a running process, from /proc.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// An HTTP client for nodes and test servers. It makes ring the process's TLS provider
/// first: reqwest's rustls panics without one in a test that runs alone (in the whole
/// suite another test usually installed it).
pub fn http_client(timeout: Duration) -> reqwest::Client {
    http_client_as(timeout, None)
}

/// [`http_client`] sending `token` as a bearer token with every request (nodes without
/// tokens ignore it from loopback).
pub fn http_client_as(timeout: Duration, token: Option<&str>) -> reqwest::Client {
    ferry::connector::tls_provider();
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(t) = token {
        headers.insert(reqwest::header::AUTHORIZATION, format!("Bearer {t}").parse().expect("header value"));
    }
    reqwest::Client::builder().timeout(timeout).default_headers(headers).build().expect("http client")
}

/// Runs `cmd` with `input` typed on its standard input; its output.
pub fn answering(cmd: &mut Command, input: &[u8]) -> Output {
    use std::io::Write as _;
    use std::process::Stdio;
    let mut child =
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("ferry runs");
    child.stdin.take().expect("stdin").write_all(input).expect("type");
    child.wait_with_output().expect("ferry ends")
}
