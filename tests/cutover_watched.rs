//! Cutover of a bucket (the testbed's moto_server) and of an SFTP folder (the testbed's
//! sshd) with the real `ferry` binary. ferry cannot refuse writes on either, so their
//! freeze is a watch (docs/files.md): a writer active during it makes the Freeze step
//! fail with the fix and leaves nothing frozen; once the writers stopped the freeze
//! holds, a write landing after it is carried by Drain, and Verify, Switch and Open
//! target follow. A rollback lifts the watch again.

use std::path::Path;
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ferry::connector::endpoint::Endpoint;
use ferry::connector::registry;

use crate::cutover_files::Unfreeze;
use crate::files_sync::{blob_task_file, write};
use crate::support::{answering, s3};

/// `ferry cutover --task TASK ARGS` (with the test's S3 credentials), answering `input`.
fn cutover(cfg: &Path, task: &str, args: &[&str], input: &[u8]) -> Output {
    let mut all = vec!["cutover", "--task", task];
    all.extend_from_slice(args);
    answering(s3::command(&all, cfg).env("FERRY_LOG", "warn"), input)
}

fn text(o: &Output) -> String {
    format!("exit {:?}\n{}{}", o.status.code(), String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// `ferry cutover next --yes`, which must succeed and report the step done.
fn step_done(cfg: &Path, task: &str, step: &str) -> String {
    let out = cutover(cfg, task, &["next", "--yes"], b"");
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{step}: {t}");
    assert!(t.contains(&format!("step {step}: done")), "{step}: {t}");
    t
}

/// Runs a task once and verifies it, as Preflight asks, then runs Preflight alone.
fn ready(cfg: &Path, task: &str) {
    for args in [&["run", "--once", "--task", task][..], &["verify", "--task", task][..]] {
        let out = s3::ferry(args, cfg);
        assert!(out.status.success(), "{args:?}: {}", text(&out));
    }
    let out = cutover(cfg, task, &["start"], b"y\nn\n");
    assert!(text(&out).contains("step preflight: done"), "{}", text(&out));
}

/// Runs the Freeze step while `write` is called every 200 ms: it must fail, name the
/// change and the fix, and leave the endpoint unfrozen.
async fn freeze_refused_while_writing(cfg: &Path, task: &str, ep: &Endpoint, write: impl Fn(u32) + Send + 'static) {
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                write(n);
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    let out = cutover(cfg, task, &["next", "--yes"], b"");
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("writer");
    let t = text(&out);
    assert_eq!(out.status.code(), Some(3), "a write during the freeze stops the cutover: {t}");
    assert!(t.contains("changed while the freeze watched it") && t.contains("stop the application's writers"), "{t}");
    assert_eq!(registry::frozen_since(ep).await.expect("read"), None, "a failed freeze leaves nothing frozen");
}

fn endpoint(url: &str) -> Endpoint {
    crate::redis_verify::endpoint(url.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucket_cut_over_refuses_a_freeze_while_written_then_drains_verifies_switches_and_rolls_back() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dst = tmp.path().join("dst");
    let bucket = s3::bucket("cut").await;
    let http = crate::support::http_client(Duration::from_secs(10));
    let put = {
        let (http, bucket) = (http.clone(), bucket.clone());
        move |key: String, body: Vec<u8>| {
            let (http, url) = (http.clone(), format!("{}/{bucket}/pre/{key}", s3::endpoint()));
            async move {
                let r = http.put(url).body(body).send().await.expect("put");
                let status = r.status();
                assert!(status.is_success(), "put: {status}: {}", r.text().await.unwrap_or_default());
            }
        }
    };
    for i in 0..40 {
        put(format!("d{}/o{i}.txt", i % 3), format!("object {i}").into_bytes()).await;
    }
    let url = s3::url(&bucket, "pre", tmp.path());
    let cfg = blob_task_file(
        tmp.path(),
        &url,
        &format!("file://{}", dst.display()),
        "rescan = \"1h\"\n\n[task.cutover]\nquiet_seconds = 2",
    );
    let (src_ep, _unfreeze) = (endpoint(&url), Unfreeze(vec![endpoint(&format!("file://{}", dst.display()))]));
    ready(&cfg, "files");

    let (rt, busy) = (tokio::runtime::Handle::current(), put.clone());
    freeze_refused_while_writing(&cfg, "files", &src_ep, move |n| {
        // A new key each time: moto refuses an unsigned overwrite.
        rt.block_on(busy(format!("busy-{n}.txt"), format!("write {n}").into_bytes()));
    })
    .await;

    let t = step_done(&cfg, "files", "freeze");
    assert!(t.contains("no write seen") && t.contains("unchanged over 2s"), "{t}");
    assert!(registry::frozen_since(&src_ep).await.expect("read").is_some(), "the watch is recorded");
    // A write the watch cannot refuse: Drain carries it before it goes on.
    put("late.txt".into(), b"after the freeze".to_vec()).await;
    step_done(&cfg, "files", "drain");
    assert_eq!(std::fs::read(dst.join("late.txt")).expect("carried"), b"after the freeze");
    assert_eq!(std::fs::read(dst.join("busy-1.txt")).expect("carried"), b"write 1");
    for step in ["verify", "switch", "open-target"] {
        step_done(&cfg, "files", step);
    }

    // The target takes writes; a rollback carries them back and lifts the watch.
    write(&dst.join("d0/written-on-b.txt"), b"after the switch");
    let out = cutover(&cfg, "files", &["rollback", "--yes"], b"");
    assert_eq!(out.status.code(), Some(0), "rollback: {}", text(&out));
    // The bucket answers only signed reads: ferry's verify reads it (the file is on b).
    let out = s3::ferry(&["verify", "--task", "files"], &cfg);
    assert!(out.status.success(), "identical after the rollback, the write on b included: {}", text(&out));
    assert_eq!(registry::frozen_since(&src_ep).await.expect("read"), None, "the rollback lifted the watch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sftp_folder_cut_over_refuses_a_freeze_while_written_then_drains_verifies_and_switches() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    for i in 0..40 {
        write(&src.join(format!("d{}/f{i}.txt", i % 3)), format!("file {i}").as_bytes());
    }
    let (base, _, known_hosts) = crate::sftp_sync::server();
    let cfg = crate::sftp_sync::task_with(
        tmp.path(),
        &src,
        &format!("file://{}", dst.display()),
        &known_hosts,
        false,
        "rescan = \"1h\"\n\n[task.cutover]\nquiet_seconds = 2",
    );
    let src_ep = Endpoint { name: "remote".into(), ..endpoint(&format!("{base}{}", src.display())) };
    let _unfreeze = Unfreeze(vec![endpoint(&format!("file://{}", dst.display()))]);
    ready(&cfg, "pull");

    let busy = src.join("busy.log");
    freeze_refused_while_writing(&cfg, "pull", &src_ep, move |n| {
        let _ = std::fs::write(&busy, format!("write {n}\n").repeat(n as usize));
    })
    .await;

    let t = step_done(&cfg, "pull", "freeze");
    assert!(t.contains("no write seen"), "{t}");
    write(&src.join("late.txt"), b"after the freeze");
    step_done(&cfg, "pull", "drain");
    assert_eq!(std::fs::read(dst.join("late.txt")).expect("carried"), b"after the freeze");
    crate::sftp_sync::identical(&src, &dst, &tmp.path().join("drained.md5")).expect("identical after the drain");
    for step in ["verify", "switch", "open-target"] {
        step_done(&cfg, "pull", step);
    }
    // The reverse direction carries a write on the new source to the SFTP folder.
    write(&dst.join("d1/written-here.txt"), b"after the switch");
    let out = s3::ferry(&["run", "--once", "--task", "pull"], &cfg);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(std::fs::read(src.join("d1/written-here.txt")).expect("carried back"), b"after the switch");
    assert!(registry::frozen_since(&src_ep).await.expect("read").is_some(), "the old source stays watched");
    let out = cutover(&cfg, "pull", &["rollback", "--yes"], b"");
    assert_eq!(out.status.code(), Some(0), "rollback: {}", text(&out));
    assert_eq!(registry::frozen_since(&src_ep).await.expect("read"), None, "the rollback lifted the watch");
}
