//! The WAL retention trap on a private PostgreSQL source: the WAL a direction's slot
//! keeps is measured (metrics, `/metrics` families, the status probe) and alarms over
//! the task's bound; a slot the server invalidated (`max_slot_wal_keep_size`) stops the
//! direction with what is lost and how to start over, and following that fix copies the
//! tables anew.

use std::time::{Duration, Instant};

use ferry::config::Config;
use ferry::connector::registry as probe;
use ferry::engine::task::stream_of;
use ferry::engine::{Engine, plan_task};
use ferry::model::TableName;

use crate::pg_oneway::{assert_same_table, start, wait_caught_up};
use crate::support::postgres::{Cleanup, PrivatePg, drop_slot_once_released, exec, rows, shared_b, task_file};

/// Generates WAL on `url` and checkpoints until the server invalidates `slot`.
async fn lose_slot(url: &str, slot: &str) {
    let start = Instant::now();
    loop {
        let status =
            rows(url, &format!("SELECT wal_status FROM pg_replication_slots WHERE slot_name = '{slot}'")).await;
        if status == vec![vec![Some("lost".to_string())]] {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "the slot was not invalidated: {status:?}");
        exec(url, "INSERT INTO filler SELECT g, repeat('x', 500) FROM generate_series(1, 5000) g; DELETE FROM filler")
            .await;
        exec(url, "SELECT pg_switch_wal()").await;
        exec(url, "CHECKPOINT").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_slot_wal_is_measured_alarmed_and_a_lost_slot_stops_with_how_to_start_over() {
    let pg = tokio::task::spawn_blocking(|| PrivatePg::start("-c max_slot_wal_keep_size=1MB")).await.expect("cluster");
    let (a, b) = (pg.url(), shared_b());
    exec(&a, "CREATE TABLE slot_items (id int PRIMARY KEY, v text); INSERT INTO slot_items SELECT g, 'v' FROM generate_series(1, 200) g")
        .await;
    exec(&a, "CREATE UNLOGGED TABLE filler (id int, pad text)").await;
    let mut cb = Cleanup::new(&b);
    cb.push("DROP TABLE IF EXISTS public.slot_items");
    let dir = tempfile::tempdir().expect("tempdir");
    let (file, task) = task_file(dir.path(), &a, &b, "one-way", &["public.slot_items"], "retention_alarm = \"1kB\"");
    cb.push(format!("DELETE FROM ferry.ferry_checkpoint WHERE task = '{task}'"));
    let config = Config::load(&file).expect("config");
    let engine = start(&config).await;
    wait_caught_up(&config, Duration::from_secs(60), Some(&engine)).await;

    // Measured and alarmed: the heartbeats alone make the slot keep more than 1 kB.
    let started = Instant::now();
    let status = loop {
        let s = engine.metrics()[0].status();
        if s.retained_bytes.is_some() && s.retention_alarm {
            break s;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "no retention alarm: {s:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(status.retained_bytes.is_some_and(|b| b > 1024), "{status:?}");
    let spec = &plan_task(&config, &config.tasks[0], &[])[0];
    let stream = stream_of(&spec.id);
    let kept = probe::source_retention(&spec.source, &stream).await.expect("probe").expect("the slot keeps WAL");
    assert!(kept.bytes > 0 && !kept.at_risk, "{kept:?}");
    engine.stop();
    assert!(engine.join().await.is_empty(), "the direction failed");
    // The stop confirms the head, so what the slot keeps is only what is written after
    // it (the heartbeats' WAL before the stop was released): 4 kB more.
    exec(&a, "CREATE TABLE wal_after_stop (pad text); INSERT INTO wal_after_stop SELECT repeat(g::text, 1000) FROM generate_series(1, 4) g")
        .await;
    // `ferry status` reads it from the source while nothing runs.
    let out = crate::support::ferry(&["status", "--config", file.to_str().expect("utf-8"), "--format", "json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status json");
    let dir0 = &json[0];
    assert!(dir0["retained_bytes"].as_u64().is_some_and(|b| b > 1024), "{json}");
    assert_eq!(dir0["retention_alarm"], serde_json::json!(true), "{json}");
    let text = crate::support::ferry(&["status", "--config", file.to_str().expect("utf-8")]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("source keeps") && text.contains("ALARM"), "{text}");

    // While ferry is stopped the server invalidates the slot: the direction stops, saying
    // what is lost and how to start over.
    exec(&a, "INSERT INTO slot_items VALUES (1000, 'lost')").await;
    let slot = ferry::connector::postgres::names::slot(&stream);
    lose_slot(&a, &slot).await;
    let err = probe::source_retention(&spec.source, &stream).await.expect_err("a lost slot is an error");
    assert!(err.to_string().contains("wal_status = lost"), "{err}");
    let engine = Engine::start(plan_task(&config, &config.tasks[0], &[]), tokio_util::sync::CancellationToken::new());
    let failed = engine.join().await;
    let text = failed.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n");
    assert!(text.contains("invalidated") && text.contains("changes made on this source"), "{text}");
    assert!(
        text.contains(&format!("pg_drop_replication_slot('{slot}')")) && text.contains("ferry_checkpoint"),
        "{text}"
    );

    // The fix: drop the slot, delete the checkpoint, run again: a new copy.
    drop_slot_once_released(&a, &slot).await;
    exec(&b, &format!("DELETE FROM ferry.ferry_checkpoint WHERE task = '{task}'")).await;
    let engine = start(&config).await;
    wait_caught_up(&config, Duration::from_secs(60), Some(&engine)).await;
    engine.stop();
    assert!(engine.join().await.is_empty(), "the direction failed after starting over");
    assert_same_table(&a, &b, &TableName { schema: Some("public".into()), name: "slot_items".into() }).await;
    drop(pg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_a_slot_created_after_the_checkpoint_stops_the_direction_instead_of_skipping_changes() {
    let pg = tokio::task::spawn_blocking(|| PrivatePg::start("")).await.expect("cluster");
    let (a, b) = (pg.url(), shared_b());
    exec(&a, "CREATE TABLE slot_gap (id int PRIMARY KEY, v text); INSERT INTO slot_gap SELECT g, 'v' FROM generate_series(1, 50) g")
        .await;
    let mut cb = Cleanup::new(&b);
    cb.push("DROP TABLE IF EXISTS public.slot_gap");
    let dir = tempfile::tempdir().expect("tempdir");
    let (file, task) = task_file(dir.path(), &a, &b, "one-way", &["public.slot_gap"], "");
    cb.push(format!("DELETE FROM ferry.ferry_checkpoint WHERE task = '{task}'"));
    let config = Config::load(&file).expect("config");
    let engine = start(&config).await;
    wait_caught_up(&config, Duration::from_secs(60), Some(&engine)).await;
    engine.stop();
    assert!(engine.join().await.is_empty(), "the direction failed");

    // While ferry is stopped the slot is dropped and rows change: the next start creates
    // a new slot, which begins after those changes. Reading from it would skip them.
    let spec = &plan_task(&config, &config.tasks[0], &[])[0];
    let slot = ferry::connector::postgres::names::slot(&stream_of(&spec.id));
    drop_slot_once_released(&a, &slot).await;
    exec(&a, "INSERT INTO slot_gap VALUES (1000, 'made while the slot was gone')").await;
    let engine = start(&config).await;
    let failed = tokio::time::timeout(Duration::from_secs(60), engine.join()).await.expect("the direction stops");
    let text = failed.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n");
    assert!(
        text.contains(&format!("replication slot {slot} begins at")) && text.contains("ferry_checkpoint"),
        "{text}"
    );
    let copied = rows(&b, "SELECT count(*)::text FROM public.slot_gap WHERE id = 1000").await;
    assert_eq!(copied, [[Some("0".to_string())]], "nothing applied past the gap");

    // The fix it names: delete the checkpoint, run again: a new copy with the row.
    exec(&b, &format!("DELETE FROM ferry.ferry_checkpoint WHERE task = '{task}'")).await;
    let engine = start(&config).await;
    wait_caught_up(&config, Duration::from_secs(60), Some(&engine)).await;
    engine.stop();
    assert!(engine.join().await.is_empty(), "the direction failed after starting over");
    assert_same_table(&a, &b, &TableName { schema: Some("public".into()), name: "slot_gap".into() }).await;
    drop(pg);
}
