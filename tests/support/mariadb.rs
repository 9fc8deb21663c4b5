//! MariaDB for tests: the shared testbed (dc-a, dc-b from `scripts/testbed`), unique
//! names for isolation on it, a private pair of instances for tests that change global
//! settings, and running `ferry` with a deadline.
//!
//! A server that is not there fails the test with how to start it; nothing is skipped.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub use super::Outcome;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts};

/// How long one `ferry` invocation may take.
pub const FERRY_LIMIT: Duration = Duration::from_secs(60);

/// URL of the shared dc-a (FERRY_TEST_MYSQL_A, as `scripts/testbed env` prints it).
pub fn shared_a() -> String {
    std::env::var("FERRY_TEST_MYSQL_A").unwrap_or_else(|_| "mysql://ferry:ferry@127.0.0.1:3307".into())
}

/// URL of the shared dc-b.
pub fn shared_b() -> String {
    std::env::var("FERRY_TEST_MYSQL_B").unwrap_or_else(|_| "mysql://ferry:ferry@127.0.0.1:3308".into())
}

/// Host and port of a URL, e.g. `127.0.0.1:3307`.
pub fn host_port(url: &str) -> String {
    let opts = Opts::from_url(url).expect("mysql url");
    format!("{}:{}", opts.ip_or_hostname(), opts.tcp_port())
}

/// `url` with other credentials.
pub fn with_user(url: &str, user: &str, password: &str) -> String {
    format!("mysql://{user}:{password}@{}", host_port(url))
}

/// Connects, failing the test with how to start the testbed when the server is missing.
pub async fn connect(url: &str) -> Conn {
    let opts = Opts::from_url(url).expect("mysql url");
    match tokio::time::timeout(Duration::from_secs(10), Conn::new(opts)).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => panic!(
            "MariaDB at {} is not reachable: {e}\nstart the testbed with `scripts/testbed start` \
             (or run the whole suite with `scripts/test`)",
            host_port(url)
        ),
        Err(_) => panic!(
            "MariaDB at {} did not answer within 10 s\nstart the testbed with `scripts/testbed start`",
            host_port(url)
        ),
    }
}

/// Fails the test, saying how to start the testbed, when the server at `url` is not there.
pub async fn require(url: &str) {
    connect(url).await.disconnect().await.ok();
}

/// Runs statements on a server with `sql_log_bin = 0`, so test setup never shows up in the
/// binlog streams other tests read.
pub async fn admin(url: &str, statements: &[String]) {
    let mut c = connect(url).await;
    c.query_drop("SET SESSION sql_log_bin = 0").await.expect("sql_log_bin = 0");
    for s in statements {
        c.query_drop(s.as_str()).await.unwrap_or_else(|e| panic!("{s}: {e}"));
    }
    c.disconnect().await.ok();
}

/// Rows of a query polled while ferry may not have created its tables yet: a missing
/// table or database reads as no rows (on a fresh server the first run creates them).
pub async fn rows_once_created(url: &str, sql: &str) -> Vec<Vec<String>> {
    let mut c = connect(url).await;
    let result: Result<Vec<mysql_async::Row>, _> = c.query(sql).await;
    c.disconnect().await.ok();
    match result {
        Ok(found) => strings(found),
        Err(mysql_async::Error::Server(e)) if e.code == 1146 || e.code == 1049 => Vec::new(),
        Err(e) => panic!("{sql}: {e}"),
    }
}

/// Rows of a query, as strings.
pub async fn rows(url: &str, sql: &str) -> Vec<Vec<String>> {
    let mut c = connect(url).await;
    let found: Vec<mysql_async::Row> = c.query(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    c.disconnect().await.ok();
    strings(found)
}

fn strings(found: Vec<mysql_async::Row>) -> Vec<Vec<String>> {
    found
        .into_iter()
        .map(|r| {
            (0..r.len())
                .map(|i| match r.as_ref(i) {
                    Some(mysql_async::Value::Bytes(b)) => String::from_utf8_lossy(b).into_owned(),
                    Some(mysql_async::Value::NULL) | None => "NULL".into(),
                    Some(v) => v.as_sql(true),
                })
                .collect()
        })
        .collect()
}

/// A name no other test (or earlier run) uses: `prefix_<pid>_<n>`.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!("{prefix}_{}_{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// Runs statements (with `sql_log_bin = 0`) when dropped: drops the test's databases and
/// users, also when the test fails.
pub struct Cleanup {
    url: String,
    statements: Vec<String>,
}

impl Cleanup {
    /// Nothing to do yet on `url`.
    pub fn new(url: &str) -> Self {
        Cleanup { url: url.to_string(), statements: Vec::new() }
    }

    /// Adds a statement to run at the end.
    pub fn push(&mut self, statement: impl Into<String>) {
        self.statements.push(statement.into());
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let url = self.url.clone();
        let statements = std::mem::take(&mut self.statements);
        // A runtime of its own on a thread of its own: Drop may run inside the test's runtime.
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(async {
                let Ok(Ok(mut c)) =
                    tokio::time::timeout(Duration::from_secs(10), Conn::new(Opts::from_url(&url).expect("url"))).await
                else {
                    return;
                };
                let _ = c.query_drop("SET SESSION sql_log_bin = 0").await;
                for s in statements {
                    let _ = c.query_drop(s).await;
                }
                let _ = c.disconnect().await;
            });
        });
        let _ = done.join();
    }
}

/// A database of the test's own on a server, dropped at the end.
pub async fn database(url: &str, prefix: &str, cleanup: &mut Cleanup) -> String {
    let db = unique(prefix);
    cleanup.push(format!("DROP DATABASE IF EXISTS `{db}`"));
    admin(url, &[format!("CREATE DATABASE `{db}`")]).await;
    db
}

/// An account `name`@127.0.0.1 (password `pw`) with the given grants (`ON ...` parts
/// follow the privilege list as written), dropped at the end.
pub async fn user(url: &str, name: &str, grants: &[&str], cleanup: &mut Cleanup) {
    cleanup.push(format!("DROP USER IF EXISTS '{name}'@'127.0.0.1'"));
    let mut statements = vec![
        format!("DROP USER IF EXISTS '{name}'@'127.0.0.1'"),
        format!("CREATE USER '{name}'@'127.0.0.1' IDENTIFIED BY 'pw'"),
    ];
    for g in grants {
        statements.push(format!("GRANT {g} TO '{name}'@'127.0.0.1'"));
    }
    admin(url, &statements).await;
}

/// A task file with two MySQL endpoints `a` (site dc-a) and `b` (site dc-b) and one task `t`.
pub fn task_file(dir: &Path, url_a: &str, url_b: &str, mode: &str, tables: &[&str], extra_task_keys: &str) -> PathBuf {
    let tables: Vec<String> = tables.iter().map(|t| format!("{t:?}")).collect();
    let text = format!(
        r#"[node]
id = "test-node"
store = "sqlite://meta.db"

[[endpoint]]
name = "a"
site = "dc-a"
url = "{url_a}"

[[endpoint]]
name = "b"
site = "dc-b"
url = "{url_b}"

[[task]]
name = "t"
from = "a"
to = "b"
mode = "{mode}"
tables = [{}]
{extra_task_keys}
"#,
        tables.join(", ")
    );
    let path = dir.join("ferry.toml");
    std::fs::write(&path, text).expect("write task file");
    path
}

/// Runs `ferry args`, failing the test (after killing it) when it does not exit within
/// [`FERRY_LIMIT`].
pub async fn ferry(args: &[&str]) -> Outcome {
    super::ferry_within(args, FERRY_LIMIT).await
}

/// `ferry check --config FILE`.
pub async fn check(config: &Path) -> Outcome {
    ferry(&["check", "--config", config.to_str().expect("utf-8 path")]).await
}

// --- a private pair for tests that disturb a server ---------------------------------

/// A pair of MariaDB instances of this test process, started with `scripts/testbed` in
/// a temporary folder on free ports: `a` as the testbed makes it (binlog on, ROW, FULL,
/// FULL metadata), `b` restarted WITHOUT binary logging (a source ferry must refuse; a
/// fine target). Both stop, and the folder goes, when the test process ends — also when
/// it fails or is killed: a watchdog process waits for it.
pub struct Private {
    /// Folder holding dc-a and dc-b.
    pub dir: PathBuf,
    /// Port of the instance with binlog on.
    pub port_a: u16,
    /// Port of the instance without binlog.
    pub port_b: u16,
    /// Waits for this process to end, then stops both and removes `dir`.
    _watchdog: std::process::Child,
}

impl Private {
    /// ferry's URL of a (binlog on).
    pub fn url_a(&self) -> String {
        format!("mysql://ferry:ferry@127.0.0.1:{}", self.port_a)
    }

    /// ferry's URL of b (binlog off).
    pub fn url_b(&self) -> String {
        format!("mysql://ferry:ferry@127.0.0.1:{}", self.port_b)
    }

    /// root's URL of a (no password over TCP from 127.0.0.1).
    pub fn root_a(&self) -> String {
        format!("mysql://root@127.0.0.1:{}", self.port_a)
    }

    /// root's URL of b.
    pub fn root_b(&self) -> String {
        format!("mysql://root@127.0.0.1:{}", self.port_b)
    }
}

/// The settings ferry needs, restored on `a` before every test that changes globals.
const GOOD_GLOBALS: [&str; 6] = [
    "SET GLOBAL read_only = OFF",
    "SET GLOBAL binlog_format = 'ROW'",
    "SET GLOBAL binlog_row_image = 'FULL'",
    "SET GLOBAL binlog_row_metadata = 'FULL'",
    "SET GLOBAL log_bin_compress = OFF",
    "SET GLOBAL binlog_expire_logs_seconds = 0",
];

/// The private pair, started on first use (a few seconds) and shared by the tests of
/// this process.
pub fn private() -> &'static Private {
    static PAIR: OnceLock<Private> = OnceLock::new();
    PAIR.get_or_init(start_private)
}

/// The private pair, started on first use, from async code.
pub async fn private_pair() -> &'static Private {
    tokio::task::spawn_blocking(private).await.expect("private instances start")
}

/// Exclusive use of the private pair's global settings, reset to what ferry needs.
/// Tests that change globals hold it to the end, so they run one at a time.
pub async fn private_globals() -> (&'static Private, tokio::sync::MutexGuard<'static, ()>) {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let pair = private_pair().await;
    let guard = LOCK.lock().await;
    let reset: Vec<String> = GOOD_GLOBALS.iter().map(|s| s.to_string()).collect();
    admin(&pair.root_a(), &reset).await;
    (pair, guard)
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local address").port()
}

fn testbed() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/testbed")
}

/// A second private pair with the binary log on BOTH instances (a cutover's reverse
/// direction reads the target's binlog), for tests that change globals such as
/// read_only; exclusive use, globals reset on both.
pub async fn private_cutover_pair() -> (&'static Private, tokio::sync::MutexGuard<'static, ()>) {
    static PAIR: OnceLock<Private> = OnceLock::new();
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let pair = tokio::task::spawn_blocking(|| PAIR.get_or_init(|| start_private_pair(false)))
        .await
        .expect("private instances start");
    let guard = LOCK.lock().await;
    let reset: Vec<String> = GOOD_GLOBALS.iter().map(|s| s.to_string()).collect();
    admin(&pair.root_a(), &reset).await;
    admin(&pair.root_b(), &reset).await;
    (pair, guard)
}

fn start_private() -> Private {
    start_private_pair(true)
}

fn start_private_pair(b_without_binlog: bool) -> Private {
    let dir = tempfile::Builder::new().prefix("ferry-ck-").tempdir_in("/tmp").expect("temp folder").keep();
    let port_a = free_port();
    let mut port_b = free_port();
    while port_b == port_a {
        port_b = free_port();
    }
    let env = [
        ("FERRY_TESTBED_DIR", dir.display().to_string()),
        ("FERRY_TESTBED_PORT_A", port_a.to_string()),
        ("FERRY_TESTBED_PORT_B", port_b.to_string()),
        // MariaDB only, even when the caller's shell asked its testbed for NATS (a
        // FERRY_TESTBED_NATS_PORT exported for the private testbed would collide).
        ("FERRY_TESTBED_NATS", "0".to_string()),
    ];
    // The watchdog first: whatever happens from here on, the instances stop and the
    // folder goes once this process is gone. Its own process group keeps it out of a
    // Ctrl-C aimed at the test run.
    use std::os::unix::process::CommandExt;
    let watchdog = Command::new("sh")
        .args([
            "-c",
            r#"while kill -0 "$1" 2>/dev/null; do sleep 1; done; "$2" stop >/dev/null 2>&1; rm -rf "$FERRY_TESTBED_DIR""#,
            "ferry-ck-watchdog",
            &std::process::id().to_string(),
            &testbed().display().to_string(),
        ])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("start the watchdog of the private instances");

    let out = Command::new(testbed())
        .arg("start")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .output()
        .expect("run scripts/testbed");
    assert!(
        out.status.success(),
        "`scripts/testbed start` of the private instances in {} failed ({}):\n{}{}",
        dir.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if b_without_binlog {
        restart_without_binlog(&dir.join("dc-b"), port_b);
    }
    Private { dir, port_a, port_b, _watchdog: watchdog }
}

/// Stops the instance in `dir` and starts it again on the same data dir, socket, pid file
/// and port, with binlog settings but no binary log.
fn restart_without_binlog(dir: &Path, port: u16) {
    restart_with(dir, port, &[]);
}

/// A private instance serving TLS only (`require_secure_transport=ON`) with the test
/// certificates of [`super::tls::certs`] (server certificate for 127.0.0.1 signed by
/// `ca.pem`), started on first use; its root is reached through the socket.
pub struct TlsServer {
    /// ferry's URL without TLS parameters.
    pub url: String,
    /// The instance's unix socket (exempt from require_secure_transport).
    pub sock: PathBuf,
    /// The certificates.
    pub certs: &'static super::tls::Certs,
}

impl TlsServer {
    /// Runs SQL as root through the socket.
    pub fn root_sql(&self, sql: &str) {
        let out = Command::new("mariadb")
            .args(["--no-defaults", "-uroot", "-S"])
            .arg(&self.sock)
            .args(["-e", sql])
            .stdin(Stdio::null())
            .output()
            .expect("mariadb client runs");
        assert!(out.status.success(), "{sql}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

/// The TLS-only instance (the binlog-less half of a private pair of its own, restarted
/// with ssl_cert/ssl_key/ssl_ca and require_secure_transport=ON).
pub async fn private_tls() -> &'static TlsServer {
    static SERVER: OnceLock<TlsServer> = OnceLock::new();
    tokio::task::spawn_blocking(|| {
        SERVER.get_or_init(|| {
            let certs = super::tls::certs();
            let pair = Box::leak(Box::new(start_private_pair(false)));
            let dir = pair.dir.join("dc-b");
            let c = &certs.dir;
            restart_with(
                &dir,
                pair.port_b,
                &[
                    format!("--ssl-ca={}", c.join("ca.pem").display()),
                    format!("--ssl-cert={}", c.join("server.pem").display()),
                    format!("--ssl-key={}", c.join("server.key").display()),
                    "--require-secure-transport=ON".into(),
                ],
            );
            TlsServer { url: pair.url_b(), sock: dir.join("sock"), certs }
        })
    })
    .await
    .expect("the TLS instance starts")
}

/// Restarts the instance in `dir` without binary log and with `extra` server options.
fn restart_with(dir: &Path, port: u16, extra: &[String]) {
    let pid_file = dir.join("pid");
    let pid = std::fs::read_to_string(&pid_file).expect("pid file of dc-b").trim().to_string();
    let sock = dir.join("sock");
    let status = Command::new("mariadb-admin")
        .args(["--no-defaults", "-uroot", "-S"])
        .arg(&sock)
        .arg("shutdown")
        .stdin(Stdio::null())
        .status()
        .expect("mariadb-admin runs");
    assert!(status.success(), "mariadb-admin shutdown of {} failed", dir.display());
    let deadline = Instant::now() + Duration::from_secs(60);
    while Path::new(&format!("/proc/{pid}")).exists() && !zombie(&pid) {
        assert!(Instant::now() < deadline, "mariadbd {pid} did not stop");
        std::thread::sleep(Duration::from_millis(100));
    }
    let d = dir.display();
    let mut args = vec![
        "--no-defaults".to_string(),
        format!("--datadir={d}"),
        format!("--port={port}"),
        "--bind-address=127.0.0.1".into(),
        format!("--socket={d}/sock"),
        format!("--pid-file={d}/pid"),
        format!("--log-error={d}/err.log"),
        "--skip-name-resolve".into(),
        "--server-id=2".into(),
        "--gtid-domain-id=2".into(),
        "--skip-log-bin".into(),
        "--binlog-format=ROW".into(),
        "--binlog-row-image=FULL".into(),
        "--binlog-row-metadata=FULL".into(),
        "--character-set-server=utf8mb4".into(),
        "--innodb-buffer-pool-size=64M".into(),
        "--performance-schema=OFF".into(),
    ];
    args.extend_from_slice(extra);
    if is_root() {
        args.push("--user=root".into());
    }
    // Detached like scripts/testbed does it (setsid + nohup), so `scripts/testbed stop`
    // finds it by its pid file and it never becomes this process's zombie.
    let script = r#"setsid nohup mariadbd "$@" </dev/null >>"$FERRY_DIR/stdout.log" 2>&1 &"#;
    let status = Command::new("sh")
        .args(["-c", script, "sh"])
        .args(&args)
        .env("FERRY_DIR", dir)
        .stdin(Stdio::null())
        .status()
        .expect("start mariadbd");
    assert!(status.success(), "could not start mariadbd in {d}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ok = Command::new("mariadb")
            .args(["--no-defaults", "-uroot", "-S"])
            .arg(&sock)
            .args(["--connect-timeout=2", "-N", "-e", "select 1"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if ok {
            break;
        }
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(dir.join("err.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            panic!("mariadbd without binlog in {d} did not answer within 60 s; err.log ends:\n{}", tail.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn zombie(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.rsplit_once(") ").map(|(_, r)| r.starts_with('Z')).unwrap_or(false))
        .unwrap_or(true)
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| o.stdout.trim_ascii() == b"0").unwrap_or(false)
}
