//! Redis for tests: the testbed's pair (`scripts/testbed`, FERRY_TEST_REDIS_A/_B) and
//! private servers a test starts itself (to restart, reconfigure or break them), a small
//! client (ferry's own RESP codec), and the comparison every Redis test ends with: every
//! key but ferry's, by `DEBUG DIGEST-VALUE` and absolute expiry, on both sides.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use ferry::connector::redis::resp::{Conn, Reply};

/// URL of the testbed's first server.
pub fn url_a() -> String {
    std::env::var("FERRY_TEST_REDIS_A").unwrap_or_else(|_| "redis://127.0.0.1:6391".into())
}

/// URL of the testbed's second server.
pub fn url_b() -> String {
    std::env::var("FERRY_TEST_REDIS_B").unwrap_or_else(|_| "redis://127.0.0.1:6392".into())
}

/// `host:port` of a URL.
pub fn addr(url: &str) -> String {
    url.trim_start_matches("redis://").split(['/', '?']).next().unwrap_or_default().to_string()
}

/// Fails the test, saying how to start the testbed, when the pair is not there.
pub fn require() {
    for u in [url_a(), url_b()] {
        let a = addr(&u);
        let ok = a
            .parse::<std::net::SocketAddr>()
            .ok()
            .is_some_and(|s| std::net::TcpStream::connect_timeout(&s, Duration::from_secs(3)).is_ok());
        assert!(
            ok,
            "the Redis server at {a} is not reachable\nstart the testbed with `scripts/testbed start` and \
             `eval \"$(scripts/testbed env)\"` (or run the whole suite with `scripts/test`)"
        );
    }
}

/// A client of one database.
pub struct Client(pub Conn);

impl Client {
    /// Connects to `url`'s server and selects `db`.
    pub async fn new(url: &str, db: u32) -> Client {
        let mut c = Conn::tcp(&addr(url)).await.expect("connect to redis");
        let r = c.call(&["SELECT".to_string(), db.to_string()]).await.expect("select");
        assert!(r.error().is_none(), "SELECT {db}: {r:?}");
        Client(c)
    }

    /// Runs a command; an error reply fails the test.
    pub async fn cmd<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Reply {
        let r = self.0.call(args).await.expect("redis command");
        if let Some(e) = r.error() {
            let text: Vec<String> =
                args.iter().take(4).map(|a| String::from_utf8_lossy(a.as_ref()).into_owned()).collect();
            panic!("redis {}: {e}", text.join(" "));
        }
        r
    }

    /// Runs a command given as words.
    pub async fn run(&mut self, words: &str) -> Reply {
        let args: Vec<&str> = words.split(' ').collect();
        self.cmd(&args).await
    }

    /// Runs commands at once (errors fail the test).
    pub async fn pipe(&mut self, reqs: &[Vec<Vec<u8>>]) {
        for part in reqs.chunks(5_000) {
            let rs = self.0.pipeline(part).await.expect("pipeline");
            if let Some(e) = rs.iter().find_map(Reply::error) {
                panic!("redis pipeline: {e}");
            }
        }
    }

    /// Every key but ferry's.
    pub async fn keys(&mut self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut cursor = "0".to_string();
        loop {
            let r = self.cmd(&["SCAN", cursor.as_str(), "COUNT", "1000"]).await;
            let mut parts = r.items().into_iter();
            cursor = parts.next().and_then(|c| c.text()).unwrap_or_default();
            out.extend(parts.next().map(Reply::items).unwrap_or_default().into_iter().filter_map(Reply::bytes));
            if cursor == "0" {
                break;
            }
        }
        out.retain(|k| !k.starts_with(b"ferry:"));
        out.sort();
        out
    }

    /// Every key but ferry's, with `DEBUG DIGEST-VALUE` and `PEXPIRETIME`.
    pub async fn state(&mut self) -> BTreeMap<Vec<u8>, (String, i64)> {
        let keys = self.keys().await;
        let mut out = BTreeMap::new();
        for part in keys.chunks(1000) {
            let mut reqs = Vec::new();
            for k in part {
                reqs.push(vec![b"DEBUG".to_vec(), b"DIGEST-VALUE".to_vec(), k.clone()]);
                reqs.push(vec![b"PEXPIRETIME".to_vec(), k.clone()]);
            }
            let rs = self.0.pipeline(&reqs).await.expect("digests");
            for (i, k) in part.iter().enumerate() {
                let d = rs[2 * i]
                    .clone()
                    .items()
                    .first()
                    .and_then(Reply::text)
                    .unwrap_or_else(|| format!("{:?}", rs[2 * i]));
                let e = rs[2 * i + 1].int().unwrap_or(-9);
                if e != -2 {
                    out.insert(k.clone(), (d, e));
                }
            }
        }
        out
    }
}

/// Polls both sides until they hold the same keys with the same values and expiries.
pub async fn wait_identical(a: &mut Client, b: &mut Client, limit: Duration, what: &str) {
    let start = Instant::now();
    loop {
        let (sa, sb) = (a.state().await, b.state().await);
        if sa == sb {
            return;
        }
        if start.elapsed() > limit {
            let only_a: Vec<_> = sa
                .keys()
                .filter(|k| !sb.contains_key(*k))
                .take(5)
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .collect();
            let only_b: Vec<_> = sb
                .keys()
                .filter(|k| !sa.contains_key(*k))
                .take(5)
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .collect();
            let differ: Vec<_> = sa
                .iter()
                .filter(|(k, v)| sb.get(*k).is_some_and(|w| w != *v))
                .take(5)
                .map(|(k, v)| format!("{} {:?} vs {:?}", String::from_utf8_lossy(k), v, sb.get(k)))
                .collect();
            // Two-way: the keys' versions on both sides.
            let mut versions = Vec::new();
            for k in only_a.iter().chain(&only_b).take(4) {
                let vk = format!("ferry:v:{k}");
                let va = a.cmd(&["HGETALL", vk.as_str()]).await;
                let vb = b.cmd(&["HGETALL", vk.as_str()]).await;
                let text = |r: Reply| r.items().iter().filter_map(Reply::text).collect::<Vec<_>>().join(" ");
                versions.push(format!("{k}: [{}] vs [{}]", text(va), text(vb)));
            }
            panic!(
                "{what}: not identical after {limit:?} ({} vs {} keys)\nonly on the first: {only_a:?}\nonly on the second: {only_b:?}\ndiffering: {differ:?}\nversions: {versions:?}",
                sa.len(),
                sb.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// A private redis-server a test starts (and may stop, restart or break), killed on drop.
pub struct Server {
    /// Its port.
    pub port: u16,
    dir: PathBuf,
    extra: Vec<String>,
    child: Option<Child>,
}

impl Server {
    /// Starts a server in `dir` with these extra arguments (`--requirepass x`, …).
    pub fn start(dir: &Path, extra: &[&str]) -> Server {
        let mut s = Server {
            port: free_port(),
            dir: dir.to_path_buf(),
            extra: extra.iter().map(|e| e.to_string()).collect(),
            child: None,
        };
        s.launch();
        s
    }

    fn launch(&mut self) {
        std::fs::create_dir_all(&self.dir).expect("server dir");
        let mut cmd = Command::new("redis-server");
        cmd.args([
            "--port",
            &self.port.to_string(),
            "--bind",
            "127.0.0.1",
            "--protected-mode",
            "no",
            "--daemonize",
            "no",
        ])
        .args([
            "--save",
            "",
            "--appendonly",
            "no",
            "--enable-debug-command",
            "local",
            "--repl-diskless-sync-delay",
            "0",
        ])
        .args(["--databases", "16"])
        .arg("--dir")
        .arg(&self.dir)
        .arg("--logfile")
        .arg(self.dir.join("log"))
        .args(&self.extra)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
        self.child = Some(cmd.spawn().expect("redis-server starts (scripts/testbed installs it)"));
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(start.elapsed() < Duration::from_secs(20), "redis-server on {} did not start", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Its URL (database `db`).
    pub fn url(&self, db: u32) -> String {
        format!("redis://127.0.0.1:{}/{db}", self.port)
    }

    /// Stops it with `SHUTDOWN SAVE` (its RDB keeps the replication id and offset).
    pub async fn shutdown_save(&mut self) {
        if let Ok(mut c) = Conn::tcp(&format!("127.0.0.1:{}", self.port)).await {
            let _ = c.call(&["SHUTDOWN", "SAVE"]).await;
        }
        if let Some(mut ch) = self.child.take() {
            let _ = ch.wait();
        }
    }

    /// Starts it again on the same port and folder.
    pub fn restart(&mut self) {
        self.launch();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A task file with two Redis endpoints and one task.
pub fn task_file(dir: &Path, a: &str, b: &str, mode: &str, tables: &str, extra: &str) -> PathBuf {
    let text = format!(
        r#"[node]
id = "redis-test"
store = "sqlite://meta.db"

[[endpoint]]
name = "a"
site = "dc-a"
url = "{a}"

[[endpoint]]
name = "b"
site = "dc-b"
url = "{b}"

[[task]]
name = "t"
from = "a"
to = "b"
mode = "{mode}"
tables = [{tables}]
{extra}
"#
    );
    let path = dir.join("ferry.toml");
    std::fs::write(&path, text).expect("task file");
    path
}
