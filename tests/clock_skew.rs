//! Clock skew (issue 15.5): a two-way task measures both sides' clocks through the
//! connectors (`Source::clock`) and compares them; one side's clock is faked ahead by
//! ferry's test-only hook (`FERRY_TEST_CLOCK_OFFSETS`, a file of `endpoint = ms` lines
//! added to what that endpoint's clock says). Above `clock_skew_alarm` the task alarms
//! in `/metrics`, the API and `ferry status`; above `clock_skew_pause` it stops applying
//! with the message and goes on by itself once the skew falls back, saying so.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::support::{FerryRun, app_conn, create_db, dump, ferry, task_file, wait_until};

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

async fn get(http: &reqwest::Client, url: String) -> String {
    match http.get(url).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// The value of a metric sample line `name{task="t",direction="dir"}`.
fn sample(metrics: &str, name: &str, dir: &str) -> Option<f64> {
    let head = format!("{name}{{task=\"t\",direction=\"{dir}\"}} ");
    metrics.lines().find_map(|l| l.strip_prefix(&head)).and_then(|v| v.trim().parse().ok())
}

/// Task t's directions as the API shows them.
async fn directions(http: &reqwest::Client, base: &str) -> Vec<Value> {
    let body = get(http, format!("{base}/api/v1/tasks/t")).await;
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    v["directions"].as_array().cloned().unwrap_or_default()
}

fn fake(path: &Path, b_ms: i64) {
    std::fs::write(path, format!("b = {b_ms}\n")).expect("offsets file");
}

async fn insert(db: &Path, k: i64) {
    let mut c = app_conn(db).await;
    sqlx::query("INSERT INTO kv VALUES (?1, 'v')").bind(k).execute(&mut c).await.expect("insert");
    sqlx::Connection::close(c).await.ok();
}

async fn keys(db: &Path) -> usize {
    dump(db, "kv", "k").await.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_way_task_alarms_pauses_and_resumes_on_a_faked_clock_skew() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (dir.path().join("a.db"), dir.path().join("b.db"));
    for db in [&a, &b] {
        create_db(db, "CREATE TABLE kv(k INTEGER PRIMARY KEY, v TEXT);").await;
    }
    let port = free_port();
    let config = task_file(dir.path(), "two-way", "clock_skew_alarm = \"500ms\"\nclock_skew_pause = \"2s\"");
    let text = std::fs::read_to_string(&config).expect("task file");
    std::fs::write(&config, text.replacen("[node]\n", &format!("[node]\nlisten = \"127.0.0.1:{port}\"\n"), 1))
        .expect("task file");
    let offsets = dir.path().join("offsets");
    fake(&offsets, 0);
    let log = dir.path().join("node.log");
    let _node =
        FerryRun::start_with_env("node", &config, &log, &[("FERRY_TEST_CLOCK_OFFSETS", offsets.display().to_string())]);
    let base = format!("http://127.0.0.1:{port}");
    ferry::client::install_crypto_provider();
    let http = crate::support::http_client(Duration::from_secs(5));
    let logged = || std::fs::read_to_string(&log).unwrap_or_default();

    // Measured on both sides, within the bound: no alarm.
    let (h, u) = (&http, base.clone());
    wait_until(Duration::from_secs(30), "both clocks measured", || {
        let u = u.clone();
        async move { sample(&get(h, format!("{u}/metrics")).await, "ferry_task_clock_skew_alarm", "a->b") == Some(0.0) }
    })
    .await;
    let m = get(&http, format!("{base}/metrics")).await;
    let skew = sample(&m, "ferry_task_clock_skew_seconds", "a->b").expect("skew sample");
    assert!(skew.abs() < 0.1, "the real clocks of one host agree: {skew}\n{m}");
    assert!(sample(&m, "ferry_task_clock_offset_seconds", "b->a").is_some(), "{m}");

    // b's clock 800 ms ahead: an alarm, but applying goes on.
    fake(&offsets, 800);
    let (h, u) = (&http, base.clone());
    wait_until(Duration::from_secs(15), "the skew alarm in /metrics", || {
        let u = u.clone();
        async move {
            let m = get(h, format!("{u}/metrics")).await;
            sample(&m, "ferry_task_clock_skew_alarm", "a->b") == Some(1.0)
                && sample(&m, "ferry_task_clock_skew_alarm", "b->a") == Some(1.0)
        }
    })
    .await;
    let m = get(&http, format!("{base}/metrics")).await;
    let skew = sample(&m, "ferry_task_clock_skew_seconds", "a->b").expect("skew");
    assert!((skew + 0.8).abs() < 0.1, "a's clock is 0.8 s behind b's: {skew}\n{m}");
    assert_eq!(sample(&m, "ferry_task_clock_skew_paused", "a->b"), Some(0.0), "{m}");
    let d = directions(&http, &base).await;
    assert!(d.iter().all(|d| d["clock_skew"] == "alarm"), "{d:?}");
    let message = d[0]["clock_message"].as_str().unwrap_or_default().to_string();
    assert!(
        message.contains("b ahead") && message.contains("clock_skew_alarm") && message.contains("fix:"),
        "{message}"
    );
    insert(&a, 1).await;
    let bb = b.clone();
    wait_until(Duration::from_secs(15), "a write applied despite the alarm", || {
        let bb = bb.clone();
        async move { keys(&bb).await == 1 }
    })
    .await;
    // `ferry status` shows it too (the node saves its status every second).
    let status = || {
        let out = ferry(&["status", "--config", config.to_str().expect("path"), "--format", "json"]);
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let json = status();
        let rows: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap_or_default();
        if rows.len() == 2 && rows.iter().all(|d| d["clock_skew"] == "alarm") && json.contains("b ahead") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "`ferry status` never showed the alarm:\n{json}\n{}", logged());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // 3 s ahead, above clock_skew_pause: both directions stop applying, with the message.
    fake(&offsets, 3000);
    let (h, u) = (&http, base.clone());
    wait_until(Duration::from_secs(15), "the pause", || {
        let u = u.clone();
        async move {
            let d = directions(h, &u).await;
            d.len() == 2 && d.iter().all(|d| d["state"] == "clock_skew" && d["clock_skew"] == "paused")
        }
    })
    .await;
    let m = get(&http, format!("{base}/metrics")).await;
    assert_eq!(sample(&m, "ferry_task_clock_skew_paused", "b->a"), Some(1.0), "{m}");
    assert_eq!(sample(&m, "ferry_task_up", "a->b"), Some(0.0), "{m}");
    let d = directions(&http, &base).await;
    let message = d[0]["clock_message"].as_str().unwrap_or_default().to_string();
    assert!(message.contains("3.00 s apart") && message.contains("applying is paused"), "{message}");
    assert!(logged().contains("applying paused") && logged().contains("rather than picking wrong winners"));
    insert(&a, 2).await;
    insert(&b, 3).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!((keys(&a).await, keys(&b).await), (2, 2), "nothing applied while paused");

    // Back within the bound: applying goes on by itself, and says so.
    fake(&offsets, 0);
    let (aa, bb) = (a.clone(), b.clone());
    wait_until(Duration::from_secs(15), "the resume", || {
        let (aa, bb) = (aa.clone(), bb.clone());
        async move { keys(&aa).await == 3 && keys(&bb).await == 3 }
    })
    .await;
    let (h, u) = (&http, base.clone());
    wait_until(Duration::from_secs(10), "the alarm to clear", || {
        let u = u.clone();
        async move {
            let d = directions(h, &u).await;
            d.len() == 2 && d.iter().all(|d| d["state"] == "streaming" && d["clock_skew"] == "ok")
        }
    })
    .await;
    // The log says both (a reading missed under load delays neither past a few seconds).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = logged();
        if text.contains("applying resumed") && text.contains("within clock_skew_alarm") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the log never said the resume and the clocks back within:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if std::env::var_os("FERRY_TEST_SHOW_LOG").is_some() {
        eprintln!("{}", logged());
    }
}

/// The connector contract's clock on every store: SQLite (the host's, as its triggers
/// stamp versions), MariaDB (`UTC_TIMESTAMP(6)`, as its version triggers do) and
/// PostgreSQL (`clock_timestamp()`): here all on this host, so within a second of ours.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_store_tells_the_clock_its_versions_are_stamped_with() {
    use ferry::connector::Source;
    use ferry::connector::registry::{self, SourceOptions};

    let dir = tempfile::tempdir().expect("tempdir");
    create_db(&dir.path().join("s.db"), "CREATE TABLE kv(k INTEGER PRIMARY KEY);").await;
    let (my, pg) = (crate::support::mariadb::shared_a(), crate::support::postgres::shared_a());
    crate::support::mariadb::require(&my).await;
    crate::support::postgres::connect(&pg).await;
    let config = crate::support::config_of(
        dir.path(),
        &[("s", "dc-s", "sqlite://s.db".to_string()), ("m", "dc-m", my), ("p", "dc-p", pg)],
        &[],
    );
    for ep in &config.endpoints {
        let opts = SourceOptions {
            stream: format!("clock-test/{}", ep.name),
            former_stream: None,
            takeover: false,
            versions: false,
            native_chunks: false,
        };
        let mut source = registry::open_source(ep, &opts).await.expect("open");
        let t0 = ferry::model::now_micros();
        let server = source.clock().await.expect("clock").expect("every store tells its time");
        let t1 = ferry::model::now_micros();
        let offset = server - (t0 + t1) / 2;
        assert!(offset.abs() < 1_000_000, "{}: {offset} µs from this host's clock", ep.name);
    }
}
