//! Cutover of a folder task with the real `ferry` binary (root: the freeze is a
//! read-only bind mount). A writer that held its file open since before the freeze
//! keeps writing: the Drain step refuses to go on while changes still appear, then
//! drains once they stop (a full pass begun after the freeze carries the late writes).
//! Verify, Switch and Open target follow; a write on the opened target flows back, and
//! a rollback brings the original direction back with that write on the source.

use std::io::Write as _;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ferry::connector::endpoint::{Endpoint, EndpointUrl};
use ferry::connector::registry;
use ferry::model::SiteId;

use crate::cutover_sqlite::cutover_task;
use crate::files_sync::{blob_task_file, identical, write};
use crate::support::{Outcome, ferry_bin, ferry_within};

fn endpoint(dir: &Path) -> Endpoint {
    Endpoint {
        name: "x".into(),
        site: SiteId::new("x"),
        url: EndpointUrl::new(format!("file://{}", dir.display()), "/"),
        password: None,
        ssh: Default::default(),
    }
}

/// Lifts the freezes the test leaves (else the folders stay mounted).
pub struct Unfreeze(pub Vec<Endpoint>);

impl Drop for Unfreeze {
    fn drop(&mut self) {
        let eps = std::mem::take(&mut self.0);
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
            for ep in &eps {
                let _ = rt.block_on(registry::unfreeze(ep));
            }
        })
        .join();
    }
}

/// `ferry cutover next --yes`: one step.
async fn next(cfg: &Path) -> Outcome {
    cutover_task(cfg, "files", &["next", "--yes"]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_cut_over_drains_late_writes_refuses_while_they_go_on_and_rolls_back() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    for i in 0..60 {
        write(&src.join(format!("d{}/f{i}.txt", i % 4)), format!("file {i}").as_bytes());
    }
    write(&src.join("held.log"), b"before\n");
    let cfg = blob_task_file(
        tmp.path(),
        &format!("file://{}", src.display()),
        &format!("file://{}", dst.display()),
        "rescan = \"1h\"\n\n[task.cutover]\nquiet_seconds = 1",
    );
    let as_root = std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false);
    let _unfreeze = Unfreeze(vec![endpoint(&src), endpoint(&dst)]);
    let c = cfg.to_str().expect("utf-8");
    let out = ferry_within(&["run", "--once", "--config", c], Duration::from_secs(60)).await;
    assert_eq!(out.code, Some(0), "{}", out.all());
    let out = ferry_within(&["verify", "--config", c], Duration::from_secs(60)).await;
    assert_eq!(out.code, Some(0), "a clean verify for Preflight: {}", out.all());

    // Preflight only: answered yes, then no to Freeze.
    let mut start = tokio::process::Command::new(ferry_bin())
        .args(["cutover", "--config", c, "--task", "files", "start"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("ferry runs");
    let mut stdin = start.stdin.take().expect("stdin");
    tokio::io::AsyncWriteExt::write_all(&mut stdin, b"y\nn\n").await.expect("answers");
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(60), start.wait_with_output()).await.expect("in time");
    let out = out.expect("runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("step preflight: done"), "{text}");

    // A writer opened its file before the freeze: the freeze cannot stop it.
    let mut held = std::fs::OpenOptions::new().append(true).open(src.join("held.log")).expect("open");
    let out = next(&cfg).await;
    if !as_root {
        assert_eq!(out.code, Some(3), "{}", out.all());
        assert!(out.all().contains("needs root") && out.all().contains("fix:"), "{}", out.all());
        return;
    }
    assert_eq!(out.code, Some(0), "freeze: {}", out.all());
    assert!(std::fs::write(src.join("new.txt"), b"x").is_err(), "a new file is refused while frozen");
    held.write_all(b"written after the freeze\n").expect("a held descriptor still writes");

    // Changes keep appearing: Drain refuses to go on (its limit lowered by a test hook).
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let mut held = held.try_clone().expect("dup");
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let _ = held.write_all(format!("still writing {n}\n").as_bytes());
                std::thread::sleep(Duration::from_millis(250));
            }
        })
    };
    let refused = tokio::process::Command::new(ferry_bin())
        .args(["cutover", "--config", c, "--task", "files", "next", "--yes"])
        .env("FERRY_TEST_DRAIN_LIMIT", "8")
        .env("FERRY_LOG", "warn")
        .output();
    let refused = tokio::time::timeout(Duration::from_secs(60), refused).await.expect("in time").expect("runs");
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("writer");
    let text = format!("{}{}", String::from_utf8_lossy(&refused.stdout), String::from_utf8_lossy(&refused.stderr));
    assert_eq!(refused.status.code(), Some(3), "drain refused while changes appear:\n{text}");
    assert!(text.contains("changes still appear"), "{text}");

    // The writer stopped: Drain ends, and the late writes are on the target.
    held.write_all(b"last line\n").expect("write");
    drop(held);
    let out = next(&cfg).await;
    assert_eq!(out.code, Some(0), "drain: {}", out.all());
    identical(&src, &dst, &tmp.path().join("drained.md5")).expect("identical after the drain");
    for step in ["verify", "switch", "open-target"] {
        let out = next(&cfg).await;
        assert_eq!(out.code, Some(0), "{step}: {}", out.all());
        assert!(out.stdout.contains(&format!("step {step}: done")), "{step}: {}", out.all());
    }
    assert!(std::fs::write(src.join("new.txt"), b"x").is_err(), "the old source stays frozen");

    // The target takes writes now; a rollback carries them back to the source.
    write(&dst.join("d0/written-on-b.txt"), b"after the switch");
    let out = cutover_task(&cfg, "files", &["rollback", "--yes"]).await;
    assert_eq!(out.code, Some(0), "rollback: {}", out.all());
    assert_eq!(
        std::fs::read(src.join("d0/written-on-b.txt")).expect("carried back"),
        b"after the switch",
        "{}",
        out.all()
    );
    std::fs::write(src.join("new.txt"), b"x").expect("the source takes writes again");
    assert!(std::fs::write(dst.join("new.txt"), b"x").is_err(), "the target stays frozen after a rollback");
    let _ = std::fs::remove_file(src.join("new.txt"));
    identical(&src, &dst, &tmp.path().join("rolled-back.md5")).expect("identical after the rollback");
}
