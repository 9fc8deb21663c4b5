//! The console an operator trusts during a cutover (issue 16), end to end: the real
//! binary in tmux at 120x36 and 80x24. A verify started with `v` counts for the
//! cutover's Preflight; a freeze shows on the Overview, in the node's endpoints list and
//! in `ferry status`; `q` asks first and says what stays frozen; `b` rolls back to the
//! end on one typed confirmation; keys typed while the Cutover screen loads run nothing;
//! `q` with in-process tasks running asks first.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::console_e2e::{Tmux, overview_values, shell_quote};
use crate::support::{FerryRun, app_conn, create_db, ferry_bin, ferry_within, task_file, wait_until};

const SCHEMA: &str = "CREATE TABLE orders(id INTEGER PRIMARY KEY, site TEXT NOT NULL, n INTEGER NOT NULL);";
const WAIT: Duration = Duration::from_secs(60);

/// a.db with 200 rows, an empty b.db and a one-way task t a->b; the task file's path.
async fn one_way_task(dir: &Path, listen: Option<u16>) -> PathBuf {
    create_db(&dir.join("a.db"), SCHEMA).await;
    create_db(&dir.join("b.db"), "PRAGMA user_version = 0;").await;
    let mut c = app_conn(&dir.join("a.db")).await;
    for i in 1..=200 {
        sqlx::query("INSERT INTO orders(id, site, n) VALUES (?1, 'seed', ?2)")
            .bind(i)
            .bind(i)
            .execute(&mut c)
            .await
            .expect("seed a");
    }
    sqlx::Connection::close(c).await.ok();
    let config = task_file(dir, "one-way", "");
    if let Some(port) = listen {
        let text = std::fs::read_to_string(&config).expect("task file");
        std::fs::write(&config, text.replacen("[node]\n", &format!("[node]\nlisten = \"127.0.0.1:{port}\"\n"), 1))
            .expect("write task file");
    }
    config
}

/// The console's command line in tmux: its exit code lands in `exit_file`.
fn console_command(args: &str, exit_file: &Path) -> String {
    format!(
        "env FERRY_LOG=warn {} console {args}; echo EXIT=$? > {}; sleep 60",
        shell_quote(&ferry_bin()),
        shell_quote(exit_file)
    )
}

/// Waits for the console to end; its exit line.
async fn exited(exit_file: &Path, tmux: &Tmux) -> String {
    let start = Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(exit_file)
            && text.contains("EXIT=")
        {
            return text;
        }
        assert!(start.elapsed() < WAIT, "the console did not end; screen:\n{}", tmux.screen());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn get(http: &reqwest::Client, url: &str) -> Value {
    http.get(url).send().await.expect("request").json().await.expect("json")
}

/// Every action in the metadata store's audit log.
async fn audit_actions(meta: &Path) -> Vec<String> {
    let mut c = app_conn(meta).await;
    let actions = sqlx::query_scalar("SELECT action FROM audit ORDER BY id").fetch_all(&mut c).await.expect("audit");
    sqlx::Connection::close(c).await.ok();
    actions
}

/// Whether `screen` shows a failed step (then waiting on is pointless).
fn no_failure(screen: &str) {
    assert!(!screen.contains("failed:"), "a step failed:\n{screen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_verify_counts_freeze_shows_everywhere_q_asks_and_b_rolls_back_to_the_end() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
    let dir = tempfile::tempdir().expect("temp dir");
    let config = one_way_task(dir.path(), Some(port)).await;
    let _node = FerryRun::start_command("node", &config, &dir.path().join("node.log"));
    let base = format!("http://127.0.0.1:{port}");
    let http = crate::support::http_client(Duration::from_secs(30));
    wait_until(WAIT, "the node to serve", || async {
        http.get(format!("{base}/health")).send().await.is_ok_and(|r| r.status() == 200)
    })
    .await;
    let exit_file = dir.path().join("console.exit");
    let tmux = Tmux::start_sized(&console_command(&format!("--node {base}"), &exit_file), 120, 36);
    tmux.wait_for("task t streaming", WAIT, |s| overview_values(s, "a->b").is_some()).await;

    // 3: a verify started with v records the evidence the cutover's Preflight reads.
    tmux.keys(&["v", "3"]);
    tmux.wait_for("the console's verify to end identical", WAIT, |s| s.contains("run t-1: identical, 0 confirmed"))
        .await;
    let audit = get(&http, &format!("{base}/api/v1/audit?limit=50")).await;
    assert!(
        audit.as_array().is_some_and(|a| a.iter().any(|e| e["action"] == "verify.clean" && e["task"] == "t")),
        "the console's verify is recorded as verify.clean: {audit}"
    );
    tmux.keys(&["6"]);
    tmux.wait_for("the wizard", WAIT, |s| s.contains("n: start with Preflight")).await;
    tmux.keys(&["n"]);
    let s = tmux
        .wait_for("Preflight to pass on the console's verify", WAIT, |s| {
            s.contains("next step: freeze") || s.contains("failed")
        })
        .await;
    no_failure(&s);
    assert!(s.contains("clean") && !s.contains("no verify recorded"), "{s}");

    // Freeze a behind the typed task name.
    tmux.keys(&["n"]);
    tmux.wait_for("the freeze confirmation", WAIT, |s| {
        s.contains("Enter confirms") && s.contains("Freeze source\" of the cutover of t")
    })
    .await;
    tmux.keys(&["-l", "t"]);
    tmux.keys(&["Enter"]);
    let s = tmux
        .wait_for("a frozen", WAIT, |s| {
            (s.contains("next step: drain") && s.contains("frozen: a")) || s.contains("failed")
        })
        .await;
    no_failure(&s);

    // 2: the Overview, the node's endpoints list and `ferry status` show the freeze and the step.
    tmux.keys(&["1"]);
    tmux.wait_for("the freeze and the cutover on the Overview", WAIT, |s| {
        s.contains("a FROZEN for") && s.contains("cutover of t (a->b): next step drain")
    })
    .await;
    let endpoints = get(&http, &format!("{base}/api/v1/endpoints")).await;
    let a = endpoints.as_array().and_then(|e| e.iter().find(|e| e["name"] == "a")).cloned().unwrap_or_default();
    assert!(a["frozen_since_us"].is_i64(), "the API says a is frozen: {endpoints}");
    let b = endpoints.as_array().and_then(|e| e.iter().find(|e| e["name"] == "b")).cloned().unwrap_or_default();
    assert!(b["frozen_since_us"].is_null(), "b is not frozen: {endpoints}");
    let status = ferry_within(&["status", "--config", config.to_str().expect("utf-8 path")], WAIT).await;
    assert!(status.stdout.contains("endpoint a: FROZEN for"), "{}", status.all());
    assert!(status.stdout.contains("task t: cutover a->b: next step drain"), "{}", status.all());

    // 1: q asks and says what stays frozen; Esc stays.
    tmux.keys(&["q"]);
    tmux.wait_for("the quit question", WAIT, |s| {
        s.contains("Quit the console?") && s.contains("endpoint a stays FROZEN") && s.contains("the cutover of t stays")
    })
    .await;
    tmux.keys(&["Escape"]);
    tmux.wait_for("the question gone", WAIT, |s| !s.contains("Quit the console?") && s.contains("still here")).await;
    assert!(!exit_file.exists(), "Esc does not quit");

    // 8: b rolls back to the end on one typed confirmation, the wizard saying so first.
    tmux.keys(&["6"]);
    tmux.wait_for("the wizard's rollback hint", WAIT, |s| s.contains("b: roll back to a->b, every step to the end"))
        .await;
    tmux.keys(&["b"]);
    tmux.wait_for("the rollback confirmation", WAIT, |s| {
        s.contains("Enter confirms") && s.contains("Roll back the cutover of t to its end")
    })
    .await;
    tmux.keys(&["-l", "t"]);
    tmux.keys(&["Enter"]);
    let s =
        tmux.wait_for("the rollback to end", WAIT, |s| s.contains("cutover rolled-back") || s.contains("failed")).await;
    no_failure(&s);
    let view = get(&http, &format!("{base}/api/v1/tasks/t/cutover")).await;
    assert_eq!(view["state"]["step"], "rolled-back", "{view}");
    let audit = get(&http, &format!("{base}/api/v1/audit?limit=100")).await;
    for step in ["rollback-freeze-target", "rollback-drain", "rollback-reopen-source", "rollback-restore"] {
        assert!(
            audit.as_array().is_some_and(|a| a.iter().any(|e| e["action"] == format!("cutover.{step}"))),
            "step {step} ran: {audit}"
        );
    }
    assert!(!crate::cutover_sqlite::frozen(&dir.path().join("a.db")).await, "a takes writes again");

    // Nothing frozen, no cutover under way, the tasks run on the node: q quits at once.
    tmux.keys(&["1"]);
    tmux.wait_for("the Overview without alerts", WAIT, |s| !s.contains("FROZEN") && s.contains("a->b")).await;
    // The overview polled while the last step ran may still show the cutover running:
    // q then asks, naming it, until the next poll; after that, q quits at once.
    let start = Instant::now();
    let quit = || std::fs::read_to_string(&exit_file).is_ok_and(|t| t.contains("EXIT="));
    loop {
        tmux.keys(&["q"]);
        let asked = Instant::now();
        while !quit() && !tmux.screen().contains("Quit?") && asked.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if quit() {
            break;
        }
        let s = tmux.screen();
        assert!(
            s.contains("the cutover of t stays at") && start.elapsed() < WAIT,
            "q neither quit nor asked about the rolled-back cutover's last step; screen:\n{s}"
        );
        tmux.keys(&["n"]);
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
    let exit = exited(&exit_file, &tmux).await;
    assert!(exit.contains("EXIT=0"), "{exit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_typed_while_the_cutover_screen_loads_run_nothing_and_q_asks_before_stopping_in_process_tasks() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = one_way_task(dir.path(), None).await;
    let exit_file = dir.path().join("console.exit");
    let tmux = Tmux::start_sized(&console_command(&format!("--config {}", shell_quote(&config)), &exit_file), 80, 24);
    tmux.wait_for("task t streaming", WAIT, |s| overview_values(s, "a->b").is_some()).await;

    // 5: screen 6, then at once what would pause, resume, start a cutover, and a name.
    tmux.keys(&["6", "p", "r", "n", "t", "Enter"]);
    tmux.wait_for("the wizard's data", WAIT, |s| s.contains("n: start with Preflight")).await;
    // A request sent would be done and audited well within this.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let actions = audit_actions(&dir.path().join("meta.db")).await;
    assert!(actions.iter().any(|a| a == "console.start"), "{actions:?}");
    for action in ["task.pause", "task.resume", "cutover."] {
        assert!(
            !actions.iter().any(|a| a.starts_with(action)),
            "{action} ran from keys typed while loading: {actions:?}"
        );
    }
    tmux.keys(&["1"]);
    let overview = tmux.wait_for("the Overview", WAIT, |s| s.contains("┌ Tasks")).await;
    assert!(overview_values(&overview, "a->b").is_some(), "still streaming, not paused:\n{overview}");

    // 1: q asks before stopping the tasks running inside the console; q again quits.
    tmux.keys(&["q"]);
    tmux.wait_for("the quit question", WAIT, |s| s.contains("in-process task(s) t stop")).await;
    assert!(!exit_file.exists(), "q asked first");
    tmux.keys(&["q"]);
    let exit = exited(&exit_file, &tmux).await;
    assert!(exit.contains("EXIT=0"), "{exit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_token_is_said_and_not_retried_as_stale() {
    let node = crate::support::node::Node::start(true).await;
    let exit_file = node.dir.path().join("console.exit");
    let command = console_command(&format!("--node {} --token not-a-token", node.base), &exit_file);
    let tmux = Tmux::start_sized(&command, 80, 24);
    let s = tmux.wait_for("the token rejected", WAIT, |s| s.contains("token rejected; not retrying")).await;
    assert!(!s.contains("reconnecting"), "a rejected token is not a node to reconnect to:\n{s}");
    tmux.keys(&["q"]);
    let exit = exited(&exit_file, &tmux).await;
    assert!(exit.contains("EXIT=0"), "{exit}");
}
