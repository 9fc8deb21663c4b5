//! PostgreSQL for tests: the shared testbed (pg-a, pg-b from `scripts/testbed`), unique
//! names for isolation on it, private clusters for tests that restart a server or need
//! other settings, and cleanup of what a test's tasks left (slots hold WAL).
//!
//! A server that is not there fails the test with how to start it; nothing is skipped.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Executor, Row as _};

/// URL of the shared pg-a (FERRY_TEST_PG_A, as `scripts/testbed env` prints it).
pub fn shared_a() -> String {
    std::env::var("FERRY_TEST_PG_A").unwrap_or_else(|_| "postgres://ferry:ferry@127.0.0.1:5441/postgres".into())
}

/// URL of the shared pg-b.
pub fn shared_b() -> String {
    std::env::var("FERRY_TEST_PG_B").unwrap_or_else(|_| "postgres://ferry:ferry@127.0.0.1:5442/postgres".into())
}

/// `url` with another database.
pub fn with_db(url: &str, db: &str) -> String {
    let (base, _) = url.rsplit_once('/').expect("url with a database");
    format!("{base}/{db}")
}

/// `url` with other credentials.
pub fn with_user(url: &str, user: &str, password: &str) -> String {
    let (_, rest) = url.split_once('@').expect("url with credentials");
    format!("postgres://{user}:{password}@{rest}")
}

/// Connects, failing the test with how to start the testbed when the server is missing.
pub async fn connect(url: &str) -> PgConnection {
    ferry::connector::tls_provider();
    let opts: PgConnectOptions = url.parse().expect("postgres url");
    let opts = opts.options([("TimeZone", "UTC"), ("extra_float_digits", "3")]).disable_statement_logging();
    match tokio::time::timeout(Duration::from_secs(10), opts.connect()).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => panic!(
            "PostgreSQL at {} is not reachable: {e}\nstart the testbed with `scripts/testbed start` \
             (or run the whole suite with `scripts/test`)",
            url.rsplit_once('@').map_or(url, |(_, h)| h)
        ),
        Err(_) => {
            panic!("PostgreSQL at {url} did not answer within 10 s\nstart the testbed with `scripts/testbed start`")
        }
    }
}

/// Runs statements (simple protocol; several may be `;`-separated).
pub async fn exec(url: &str, sql: &str) {
    let mut c = connect(url).await;
    c.execute(sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// Drops replication slot `slot` once no session holds it: a walsender leaves the slot
/// a moment after ferry's replication connection has closed, and dropping it before
/// then fails with "is active for PID".
pub async fn drop_slot_once_released(url: &str, slot: &str) {
    let active = format!("SELECT active::text FROM pg_replication_slots WHERE slot_name = '{slot}'");
    let start = std::time::Instant::now();
    while rows(url, &active).await == vec![vec![Some("true".to_string())]] {
        assert!(start.elapsed() < Duration::from_secs(30), "slot {slot} still active 30 s after ferry stopped");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    exec(url, &format!("SELECT pg_drop_replication_slot('{slot}')")).await;
}

/// Rows of a query as text (every column cast by the caller or read as text).
pub async fn rows(url: &str, sql: &str) -> Vec<Vec<Option<String>>> {
    let mut c = connect(url).await;
    let found = sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
        .fetch_all(&mut c)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    found.iter().map(|r| (0..r.len()).map(|i| r.get::<Option<String>, _>(i)).collect()).collect()
}

/// Rows of a query polled while ferry may not have created its tables yet: a missing
/// table or schema reads as no rows.
pub async fn rows_once_created(url: &str, sql: &str) -> Vec<Vec<Option<String>>> {
    let mut c = connect(url).await;
    match sqlx::query(sqlx::AssertSqlSafe(sql.to_string())).fetch_all(&mut c).await {
        Ok(found) => found.iter().map(|r| (0..r.len()).map(|i| r.get::<Option<String>, _>(i)).collect()).collect(),
        Err(sqlx::Error::Database(e)) if matches!(e.code().as_deref(), Some("42P01" | "3F000")) => Vec::new(),
        Err(e) => panic!("{sql}: {e}"),
    }
}

/// A table's rows as PostgreSQL prints them (`t::text`), in key order: an independent
/// reading of the data, not ferry's.
pub async fn table_text(url: &str, table: &str, order: &str) -> Vec<String> {
    rows(url, &format!("SELECT t::text FROM {table} t ORDER BY {order}"))
        .await
        .into_iter()
        .map(|r| r.into_iter().next().flatten().unwrap_or_default())
        .collect()
}

/// Drops, when dropped: the test's schemas and databases, and the slots and
/// publications of the test's tasks (a forgotten slot keeps WAL forever).
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

    /// Drops the replication origin ferry's two-way applier of direction `from->to` of
    /// `task` used on this server (changes from site `from_site`): each origin ever set
    /// up holds one of the server's max_replication_slots replication states.
    pub fn origin(&mut self, task: &str, from_site: &str, direction: &str) {
        let name = ferry::connector::postgres::names::origin(from_site, &format!("{task}/{direction}"));
        self.push(format!(
            "SELECT pg_replication_origin_drop(roname) FROM pg_replication_origin WHERE roname = '{name}'"
        ));
    }

    /// Drops the replication slots and publications of task `task` (in every database).
    pub fn task(&mut self, task: &str) {
        let stem = task.to_ascii_lowercase().replace(|c: char| !c.is_ascii_alphanumeric(), "_");
        self.push(format!(
            "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name LIKE '%{stem}%' AND active_pid IS NOT NULL"
        ));
        self.push("SELECT pg_sleep(0.3)");
        self.push(format!(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name LIKE '%{stem}%'"
        ));
        self.push(format!(
            "DO $$ DECLARE p text; BEGIN FOR p IN SELECT pubname FROM pg_publication WHERE pubname LIKE '%{stem}%' LOOP EXECUTE format('DROP PUBLICATION %I', p); END LOOP; END $$"
        ));
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let url = self.url.clone();
        let statements = std::mem::take(&mut self.statements);
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(async {
                ferry::connector::tls_provider();
                let Ok(opts) = url.parse::<PgConnectOptions>() else { return };
                let Ok(Ok(mut c)) = tokio::time::timeout(Duration::from_secs(10), opts.connect()).await else { return };
                for s in statements {
                    let _ = c.execute(sqlx::raw_sql(sqlx::AssertSqlSafe(s))).await;
                }
            });
        });
        let _ = done.join();
    }
}

/// A schema of the test's own on a server, dropped at the end.
pub async fn schema(url: &str, prefix: &str, cleanup: &mut Cleanup) -> String {
    let s = crate::support::mariadb::unique(prefix);
    cleanup.push(format!("DROP SCHEMA IF EXISTS \"{s}\" CASCADE"));
    exec(url, &format!("CREATE SCHEMA \"{s}\"")).await;
    s
}

/// A database of the test's own on a server, dropped at the end (after its slots).
pub async fn database(url: &str, prefix: &str, cleanup: &mut Cleanup) -> String {
    let d = crate::support::mariadb::unique(prefix);
    cleanup.push(format!("DROP DATABASE IF EXISTS \"{d}\" WITH (FORCE)"));
    exec(url, &format!("CREATE DATABASE \"{d}\"")).await;
    d
}

/// A task file with endpoints `a` (site dc-a) and `b` (site dc-b) at any URLs, one task
/// with a unique name; returns the file and the task's name.
pub fn task_file(dir: &Path, url_a: &str, url_b: &str, mode: &str, tables: &[&str], extra: &str) -> (PathBuf, String) {
    let path = crate::support::mariadb::task_file(dir, url_a, url_b, mode, tables, extra);
    let name = crate::support::mariadb::unique("task");
    let text = std::fs::read_to_string(&path).expect("task file");
    std::fs::write(&path, text.replacen("name = \"t\"", &format!("name = \"{name}\""), 1)).expect("write");
    (path, name)
}

/// A PostgreSQL 15 cluster of this test alone (it may be restarted or set up wrongly on
/// purpose), stopped and removed on drop. Its data dir is owned by the postgres user,
/// as initdb demands when run by root.
pub struct PrivatePg {
    /// Data dir.
    pub dir: PathBuf,
    /// Port on 127.0.0.1.
    pub port: u16,
    opts: String,
}

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

fn as_pg(cmd: &str, args: &[&str]) -> std::process::Output {
    let root = Command::new("id").arg("-u").output().map(|o| o.stdout == b"0\n").unwrap_or(false);
    let mut c = if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", cmd]);
        c
    } else {
        Command::new(cmd)
    };
    c.args(args).output().unwrap_or_else(|e| panic!("{cmd}: {e}; install postgresql-15 (scripts/testbed start does)"))
}

impl PrivatePg {
    /// Initialises and starts a cluster with the testbed's settings plus `extra` server
    /// options (e.g. `-c wal_level=replica`).
    pub fn start(extra: &str) -> PrivatePg {
        assert!(
            Path::new(PG_BIN).join("initdb").exists(),
            "{PG_BIN}/initdb missing: run scripts/testbed start (it installs postgresql-15)"
        );
        let dir = PathBuf::from(format!("/tmp/ferry-pgtest-{}", crate::support::mariadb::unique("pg")));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("data dir");
        let _ = Command::new("chown").args(["postgres:", dir.to_str().expect("utf-8")]).status();
        let d = dir.to_str().expect("utf-8").to_string();
        let out = as_pg(
            &format!("{PG_BIN}/initdb"),
            &["-D", &d, "--auth=trust", "-U", "postgres", "-E", "UTF8", "--locale=C.UTF-8"],
        );
        assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let opts = format!(
            "-p {port} -k {d} -c listen_addresses=127.0.0.1 -c wal_level=logical -c max_replication_slots=16 -c max_wal_senders=16 -c track_commit_timestamp=on -c shared_buffers=32MB {extra}"
        );
        let pg = PrivatePg { dir, port, opts };
        pg.ctl_start();
        exec_blocking(&pg.url_as("postgres"), "CREATE ROLE ferry LOGIN SUPERUSER REPLICATION PASSWORD 'ferry'");
        pg
    }

    fn ctl_start(&self) {
        let d = self.dir.to_str().expect("utf-8");
        let log = format!("{d}/log");
        let out = as_pg(&format!("{PG_BIN}/pg_ctl"), &["-D", d, "-l", &log, "-w", "-o", &self.opts, "start"]);
        assert!(
            out.status.success(),
            "pg_ctl start: {}{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// Stops (fast) and starts the server again on the same port.
    pub fn restart(&self) {
        let d = self.dir.to_str().expect("utf-8");
        let out = as_pg(&format!("{PG_BIN}/pg_ctl"), &["-D", d, "-m", "fast", "-w", "stop"]);
        assert!(out.status.success(), "pg_ctl stop: {}", String::from_utf8_lossy(&out.stderr));
        self.ctl_start();
    }

    /// Stops the server as a crash would (`-m immediate`: no shutdown checkpoint, WAL not
    /// flushed past what was) and starts it again on the same port, which replays WAL.
    pub fn crash_and_start(&self) {
        let d = self.dir.to_str().expect("utf-8");
        let out = as_pg(&format!("{PG_BIN}/pg_ctl"), &["-D", d, "-m", "immediate", "-w", "stop"]);
        assert!(out.status.success(), "pg_ctl stop -m immediate: {}", String::from_utf8_lossy(&out.stderr));
        self.ctl_start();
    }

    /// [`PrivatePg::crash_and_start`] off the async runtime's threads.
    pub async fn crash(self) -> PrivatePg {
        tokio::task::spawn_blocking(move || {
            self.crash_and_start();
            self
        })
        .await
        .expect("crash and start the server")
    }

    /// Replaces pg_hba.conf and reloads the server.
    pub fn hba(&self, text: &str) {
        let file = self.dir.join("pg_hba.conf");
        std::fs::write(&file, text).expect("pg_hba.conf");
        let _ = Command::new("chown").args(["postgres:", file.to_str().expect("utf-8")]).status();
        let d = self.dir.to_str().expect("utf-8");
        let out = as_pg(&format!("{PG_BIN}/pg_ctl"), &["-D", d, "reload"]);
        assert!(out.status.success(), "pg_ctl reload: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// A copy of the test certificate and key the server may read (owned by postgres,
    /// mode 0600, as PostgreSQL demands of a key), for `-c ssl_cert_file/ssl_key_file`.
    pub fn server_certs(certs: &crate::support::tls::Certs) -> (PathBuf, PathBuf) {
        let dir = PathBuf::from(format!("/tmp/ferry-pgtls-{}", crate::support::mariadb::unique("c")));
        std::fs::create_dir_all(&dir).expect("cert dir");
        let (cert, key) = (dir.join("server.pem"), dir.join("server.key"));
        std::fs::copy(certs.cert(), &cert).expect("cert");
        std::fs::copy(certs.key(), &key).expect("key");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("key mode");
        let _ = Command::new("chown").args(["-R", "postgres:", dir.to_str().expect("utf-8")]).status();
        (cert, key)
    }

    /// The ferry account's URL (database `postgres`).
    pub fn url(&self) -> String {
        format!("postgres://ferry:ferry@127.0.0.1:{}/postgres", self.port)
    }

    fn url_as(&self, user: &str) -> String {
        format!("postgres://{user}@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        let d = self.dir.to_str().unwrap_or_default().to_string();
        let _ = as_pg(&format!("{PG_BIN}/pg_ctl"), &["-D", &d, "-m", "immediate", "-w", "stop"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn exec_blocking(url: &str, sql: &str) {
    let (url, sql) = (url.to_string(), sql.to_string());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(exec(&url, &sql));
    })
    .join()
    .expect("statement ran");
}
