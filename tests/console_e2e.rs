//! The console end to end: the real binary inside tmux (a private tmux server per test),
//! the screen read with capture-pane, keys sent with send-keys. `ferry demo` shows lag
//! and throughput that change, every screen opens, and q prints the demo's summary; a
//! console watching a node over HTTP pauses a task, shows the node stale with its
//! last-seen time when it dies, and reconnects by itself when it comes back.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::ferry_bin;
use crate::support::node::{Node, OPERATOR};

/// A private tmux server running one command in a window of a given size; killed on drop.
pub struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(command: &str) -> Tmux {
        Tmux::start_sized(command, 100, 30)
    }

    /// Runs `command` in a `width`x`height` window.
    pub fn start_sized(command: &str, width: u16, height: u16) -> Tmux {
        let found = Command::new("tmux").arg("-V").output();
        assert!(
            found.is_ok_and(|o| o.status.success()),
            "tmux is needed for this test: apt-get install -y tmux (scripts/test installs it)"
        );
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let socket = format!("ferry-e2e-{}-{nanos}", std::process::id());
        let t = Tmux { socket };
        let (w, h) = (width.to_string(), height.to_string());
        let ok = t.tmux(&["new-session", "-d", "-s", "e2e", "-x", &w, "-y", &h, command]).status.success();
        assert!(ok, "tmux new-session failed");
        t
    }

    fn tmux(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .args(["-L", &self.socket, "-f", "/dev/null"])
            .args(args)
            .env_remove("TMUX")
            .output()
            .expect("tmux runs")
    }

    /// The screen as text.
    pub fn screen(&self) -> String {
        String::from_utf8_lossy(&self.tmux(&["capture-pane", "-p", "-t", "e2e"]).stdout).into_owned()
    }

    /// Sends keys (tmux send-keys names; `-l` first for literal text).
    pub fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "e2e"];
        args.extend_from_slice(keys);
        assert!(self.tmux(&args).status.success(), "send-keys {keys:?}");
    }

    /// Polls the screen until `cond` holds; returns that screen.
    pub async fn wait_for(&self, what: &str, limit: Duration, cond: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let s = self.screen();
            if cond(&s) {
                return s;
            }
            assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}; screen:\n{s}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        // Only this test's private server.
        let _ = self.tmux(&["kill-server"]);
    }
}

/// The Lag and Rows/s cells of the overview row of a direction.
pub fn overview_values(screen: &str, direction: &str) -> Option<(String, String)> {
    let line = screen.lines().find(|l| l.contains(direction) && l.contains("streaming"))?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let i = words.iter().position(|w| *w == "streaming")?;
    Some((words.get(i + 1)?.to_string(), words.get(i + 2)?.to_string()))
}

/// `p` quoted for sh.
pub fn shell_quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "'\\''"))
}

#[tokio::test]
async fn demo_console_in_tmux_shows_live_lag_and_throughput_and_q_prints_the_summary() {
    let dir = tempfile::tempdir().expect("temp dir");
    let demo_dir = dir.path().join("demo");
    let out = dir.path().join("summary.txt");
    let command = format!(
        "env FERRY_LOG=warn {} demo --dir {} --seed 11 > {}; echo exit=$? >> {}; sleep 30",
        shell_quote(&ferry_bin()),
        shell_quote(&demo_dir),
        shell_quote(&out),
        shell_quote(&out)
    );
    let tmux = Tmux::start(&command);

    // Overview with both directions streaming and numbers that move.
    let first = tmux
        .wait_for("both directions streaming with throughput", Duration::from_secs(60), |s| {
            s.contains("1 Overview")
                && overview_values(s, "a->b").is_some_and(|(_, r)| r != "0")
                && overview_values(s, "b->a").is_some()
        })
        .await;
    let first_values = (overview_values(&first, "a->b"), overview_values(&first, "b->a"));
    tmux.wait_for("lag and throughput to change", Duration::from_secs(20), |s| {
        (overview_values(s, "a->b"), overview_values(s, "b->a")) != first_values
    })
    .await;

    // Task detail: charts, and the 10-second rate changes over time.
    tmux.keys(&["Enter"]);
    let task = tmux
        .wait_for("the task screen", Duration::from_secs(10), |s| {
            s.contains("Lag, last 10 min") && s.contains("Rows/s, last 10 min") && s.contains("Totals")
        })
        .await;
    let rates = |s: &str| -> Vec<String> {
        s.lines()
            .filter(|l| l.contains("rows/s (10s"))
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect()
    };
    let before = rates(&task);
    assert_eq!(before.len(), 2, "two directions on the task screen:\n{task}");
    tmux.wait_for("the task screen's rates to change", Duration::from_secs(20), |s| {
        rates(s) != before && rates(s).len() == 2
    })
    .await;

    // The other screens.
    tmux.keys(&["3"]);
    tmux.wait_for("the verify screen", Duration::from_secs(10), |s| s.contains("Verify demo on")).await;
    tmux.keys(&["4"]);
    tmux.wait_for("the audit screen", Duration::from_secs(10), |s| s.contains("Audit log") && s.contains("demo.start"))
        .await;
    tmux.keys(&["5"]);
    tmux.wait_for("the config screen", Duration::from_secs(10), |s| s.contains("ferry.toml") && s.contains("[[task]]"))
        .await;
    tmux.keys(&["?"]);
    tmux.wait_for("the help overlay", Duration::from_secs(10), |s| s.contains("Keys") && s.contains("command")).await;
    tmux.keys(&["?"]);
    tmux.keys(&["1"]);
    tmux.wait_for("the overview again", Duration::from_secs(10), |s| s.contains("Nodes") && !s.contains("┌ Keys"))
        .await;

    // q stops the workload and prints the demo's summary.
    tmux.keys(&["q"]);
    let start = Instant::now();
    let summary = loop {
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        if text.contains("exit=") {
            break text;
        }
        assert!(start.elapsed() < Duration::from_secs(180), "the demo did not end after q; screen:\n{}", tmux.screen());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // q ends the workload; the demo waits for lag 0, compares both sides and prints its
    // summary: identical, exit 0.
    assert!(summary.contains("ferry demo summary"), "{summary}");
    assert!(summary.contains("synced a->b:") && summary.contains("synced b->a:"), "{summary}");
    assert!(summary.contains("result: both data centers hold identical rows"), "{summary}");
    assert!(summary.contains("exit=0"), "{summary}");
}

#[tokio::test]
async fn console_over_http_pauses_a_task_marks_a_dead_node_stale_and_reconnects() {
    let mut node = Node::start(true).await;
    let command = format!(
        "env FERRY_TOKEN={OPERATOR} FERRY_LOG=warn {} console --node {}; sleep 30",
        shell_quote(&ferry_bin()),
        node.base
    );
    let tmux = Tmux::start(&command);
    tmux.wait_for("the node's task", Duration::from_secs(30), |s| {
        s.contains("● test-node") && overview_values(s, "a->b").is_some()
    })
    .await;

    // p pauses the selected task through the API, as the operator token's name.
    tmux.keys(&["p"]);
    tmux.wait_for("the task paused", Duration::from_secs(20), |s| s.contains("paused") && !s.contains("streaming"))
        .await;
    let audit = node.json("/api/v1/audit", OPERATOR).await;
    assert_eq!(audit[0]["action"], "task.pause", "{audit}");
    assert_eq!(audit[0]["actor"], "op@test-node", "{audit}");

    // l: the remote node's own log lines (its API's /api/v1/logs) in the Log view.
    tmux.keys(&["l"]);
    tmux.wait_for("the node's log lines", Duration::from_secs(20), |s| s.contains("log      started direction=t"))
        .await;
    tmux.keys(&["Escape"]);

    // The node dies: stale, with its last-seen time; it comes back: the console reconnects.
    node.kill();
    tmux.wait_for("the node marked stale", Duration::from_secs(20), |s| {
        s.contains("stale, last seen") && s.contains("reconnecting")
    })
    .await;
    node.restart().await;
    tmux.wait_for("the console to reconnect", Duration::from_secs(30), |s| {
        !s.contains("stale, last seen") && s.contains("● test-node") && overview_values(s, "a->b").is_some()
    })
    .await;
    tmux.keys(&["q"]);
}

#[tokio::test]
async fn console_with_a_task_file_applies_a_saved_edit_by_running_the_tasks_again() {
    let dir = tempfile::tempdir().expect("temp dir");
    crate::support::create_db(&dir.path().join("a.db"), "CREATE TABLE kv(k INTEGER PRIMARY KEY, v TEXT);").await;
    crate::support::create_db(&dir.path().join("b.db"), "").await;
    let file = crate::support::task_file(dir.path(), "one-way", "");
    let command =
        format!("env FERRY_LOG=warn {} console --config {}; sleep 30", shell_quote(&ferry_bin()), shell_quote(&file));
    let tmux = Tmux::start(&command);
    tmux.wait_for("the in-process task", Duration::from_secs(30), |s| overview_values(s, "a->b").is_some()).await;

    // Config screen: edit, save with Ctrl-S; the file is valid, so the tasks run again.
    tmux.keys(&["5"]);
    tmux.wait_for("the config screen", Duration::from_secs(10), |s| s.contains("[node]")).await;
    tmux.keys(&["e"]);
    tmux.keys(&["-l", "# edited in the console"]);
    tmux.keys(&["Enter", "C-s"]);
    tmux.wait_for("the save", Duration::from_secs(10), |s| s.contains("running the tasks again")).await;
    tmux.keys(&["1"]);
    tmux.wait_for("the tasks running again", Duration::from_secs(30), |s| overview_values(s, "a->b").is_some()).await;
    let text = std::fs::read_to_string(&file).expect("task file");
    assert!(text.starts_with("# edited in the console"), "the edit was saved: {text}");
    tmux.keys(&["4"]);
    tmux.wait_for("the restart in the audit log", Duration::from_secs(20), |s| {
        s.contains("console.stop") && s.contains("console.start")
    })
    .await;
    tmux.keys(&["q"]);
}

#[tokio::test]
async fn console_refuses_without_a_node_or_a_terminal_and_says_why() {
    let none = crate::support::ferry_within(&["console"], Duration::from_secs(20)).await;
    assert_eq!(none.code, Some(2), "{}", none.all());
    assert!(none.stderr.contains("--node") && none.stderr.contains("--config"), "{}", none.all());
    let no_tty =
        crate::support::ferry_within(&["console", "--node", "http://127.0.0.1:9"], Duration::from_secs(20)).await;
    assert_eq!(no_tty.code, Some(2), "{}", no_tty.all());
    assert!(no_tty.stderr.contains("terminal"), "{}", no_tty.all());
}
