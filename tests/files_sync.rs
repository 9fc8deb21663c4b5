//! Folder to folder with the real `ferry` binary: a tree of a few thousand small files
//! and some multi-MB ones copied, then changed in every way under a running task, and
//! identical afterwards — checked by `md5sum -c` of a manifest this test writes, and
//! by the listing, modes, mtimes and links. A SIGKILL during a big copy resumes it
//! where it stopped. An unreadable file is named, the rest copied, and the task goes on
//! once it can be read.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::{FerryRun, ferry_bin, ferry_within, output_within, wait_until};

/// A task file syncing `src` to `dst` (extra task keys appended).
pub fn blob_task_file(dir: &Path, src: &str, dst: &str, extra: &str) -> PathBuf {
    let path = dir.join("task.toml");
    let text = format!(
        "[node]\nid = \"t\"\nstore = \"sqlite://{}\"\n\n[[endpoint]]\nname = \"a\"\nurl = \"{src}\"\n\n\
         [[endpoint]]\nname = \"b\"\nurl = \"{dst}\"\n\n[[task]]\nname = \"files\"\nfrom = \"a\"\nto = \"b\"\n{extra}\n",
        dir.join("meta.db").display()
    );
    std::fs::write(&path, text).expect("task file");
    path
}

pub fn write(p: &Path, data: &[u8]) {
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    std::fs::write(p, data).expect("write");
}

/// Small files in nested folders, a few multi-MB ones, a link and an empty folder.
fn seed(src: &Path, small: usize) {
    let mut rng = fastrand::Rng::with_seed(18);
    for i in 0..small {
        let p = src.join(format!("d{:02}/s{:02}/f{i:05}.txt", i % 23, i % 7));
        let data: Vec<u8> = (0..rng.usize(0..3000)).map(|_| rng.u8(..)).collect();
        write(&p, &data);
    }
    for i in 0..3 {
        let data: Vec<u8> = (0..(3 << 20) + i * 4099).map(|_| rng.u8(..)).collect();
        write(&src.join(format!("big/b{i}.bin")), &data);
    }
    std::os::unix::fs::symlink("../big/b0.bin", src.join("d00/link")).expect("symlink");
    std::fs::create_dir_all(src.join("empty/inner")).expect("empty dir");
}

/// Every path under `root` (but `.ferry/`) with its kind, mode, size and mtime (files),
/// or link target.
pub fn tree(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries {
            let Ok(e) = e else { continue };
            let rel = e.path().strip_prefix(root).expect("under root").to_string_lossy().to_string();
            if rel == ".ferry" {
                continue;
            }
            // A target being written may drop a path between listing and stat: the
            // callers compare again until the trees settle.
            let Ok(md) = std::fs::symlink_metadata(e.path()) else { continue };
            let desc = if md.is_dir() {
                stack.push(e.path());
                format!("dir {:o}", md.mode() & 0o7777)
            } else if md.file_type().is_symlink() {
                format!("link {}", std::fs::read_link(e.path()).map(|p| p.display().to_string()).unwrap_or_default())
            } else {
                format!("file {:o} {} {}.{}", md.mode() & 0o7777, md.len(), md.mtime(), md.mtime_nsec())
            };
            out.insert(rel, desc);
        }
    }
    out
}

/// Writes `md5  path` for every file under `src` (computed here, not by ferry) and
/// runs `md5sum -c` of it in `dst`.
pub fn md5sum_check(src: &Path, dst: &Path, manifest: &Path) -> Result<(), String> {
    use md5::Digest;
    let mut lines = String::new();
    for (rel, desc) in tree(src) {
        if desc.starts_with("file") {
            let data = std::fs::read(src.join(&rel)).map_err(|e| format!("{rel}: {e}"))?;
            let sum: String = md5::Md5::digest(&data).iter().map(|b| format!("{b:02x}")).collect();
            lines.push_str(&format!("{sum}  {rel}\n"));
        }
    }
    std::fs::write(manifest, lines).map_err(|e| e.to_string())?;
    let out = std::process::Command::new("md5sum")
        .args(["-c", "--quiet"])
        .arg(manifest)
        .current_dir(dst)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("md5sum -c: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    }
}

/// Identical trees: same paths, kinds, modes, sizes, mtimes, links, and `md5sum -c` passes.
pub fn identical(src: &Path, dst: &Path, manifest: &Path) -> Result<(), String> {
    let (a, b) = (tree(src), tree(dst));
    if a != b {
        let only_a: Vec<_> = a.iter().filter(|(k, v)| b.get(*k) != Some(v)).take(5).collect();
        let only_b: Vec<_> = b.iter().filter(|(k, v)| a.get(*k) != Some(v)).take(5).collect();
        return Err(format!("trees differ: source has {only_a:?}, target has {only_b:?}"));
    }
    md5sum_check(src, dst, manifest)
}

/// A log file without its colour codes.
pub fn log_text(p: &Path) -> String {
    strip_ansi(&std::fs::read_to_string(p).unwrap_or_default())
}

/// Text without terminal colour codes.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tree_changed_in_every_way_under_a_running_task_ends_identical() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    seed(&src, 3000);
    let cfg = blob_task_file(
        tmp.path(),
        &format!("file://{}", src.display()),
        &format!("file://{}", dst.display()),
        "rescan = \"1h\"",
    );
    let log = tmp.path().join("run.log");
    let mut run = FerryRun::start(&cfg, &log);
    let manifest = tmp.path().join("check.md5");
    wait_until(Duration::from_secs(60), "the first pass", || async { log_text(&log).contains("pass done") }).await;
    identical(&src, &dst, &manifest).expect("identical after the first copy");

    // Every kind of change, while the task runs (the watch must carry them).
    let mut rng = fastrand::Rng::with_seed(81);
    for i in 0..200 {
        write(&src.join(format!("new/n{:02}/c{i}.txt", i % 9)), format!("created {i}").as_bytes());
    }
    std::fs::write(src.join("d01/s01/f00001.txt"), b"modified in place").expect("modify");
    let mut f = std::fs::OpenOptions::new().append(true).open(src.join("big/b1.bin")).expect("append");
    std::io::Write::write_all(&mut f, &vec![7u8; 100_000]).expect("append");
    drop(f);
    std::fs::OpenOptions::new()
        .write(true)
        .open(src.join("big/b2.bin"))
        .expect("open")
        .set_len(1234)
        .expect("truncate");
    std::fs::remove_file(src.join("d02/s02/f00002.txt")).expect("delete");
    std::fs::remove_dir_all(src.join("d03")).expect("delete a folder");
    std::fs::rename(src.join("d04/s04/f00004.txt"), src.join("d05/renamed.txt")).expect("rename a file");
    std::fs::rename(src.join("d06"), src.join("d06-moved")).expect("rename a folder");
    std::fs::set_permissions(src.join("d07/s00/f00007.txt"), std::fs::Permissions::from_mode(0o600)).expect("chmod");
    std::fs::set_permissions(src.join("d08"), std::fs::Permissions::from_mode(0o750)).expect("chmod dir");
    std::os::unix::fs::symlink("nowhere", src.join("dangling")).expect("symlink");
    std::fs::create_dir_all(src.join("empty2")).expect("empty dir");
    std::fs::remove_dir(src.join("empty/inner")).expect("rmdir");
    for _ in 0..50 {
        let i = rng.usize(0..3000);
        let p = src.join(format!("d{:02}/s{:02}/f{i:05}.txt", i % 23, i % 7));
        if p.exists() {
            std::fs::write(&p, format!("rewritten {}", rng.u64(..))).expect("rewrite");
        }
    }

    let mut last = String::new();
    let ok = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match identical(&src, &dst, &manifest) {
                Ok(()) => return,
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    })
    .await;
    assert!(ok.is_ok(), "not identical within 60 s: {last}\n--- log:\n{}", log_text(&log));
    let text = log_text(&log);
    assert!(text.contains("found_by=watch"), "changes found by the watch:\n{text}");
    assert!(text.contains("renamed"), "a rename is carried as a rename:\n{text}");
    assert_eq!(run.terminate(), Some(0), "clean stop:\n{}", log_text(&log));

    // Nothing was written into the source, and a no-change run copies nothing.
    assert!(!src.join(".ferry").exists(), "ferry wrote into the source");
    let out = ferry_within(&["run", "--once", "--config", cfg.to_str().expect("utf-8")], Duration::from_secs(60)).await;
    assert_eq!(out.code, Some(0), "{}", out.all());
    identical(&src, &dst, &manifest).expect("still identical");
}

/// More changes at once than the watch can follow (its limit lowered by a test hook
/// to a few hundred, the kernel queue's overflow taking the same path): the task
/// says so, rescans, and converges without a periodic rescan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_overflowed_by_many_changes_at_once_converges_by_rescan() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    seed(&src, 100);
    let cfg = blob_task_file(
        tmp.path(),
        &format!("file://{}", src.display()),
        &format!("file://{}", dst.display()),
        "rescan = \"1h\"",
    );
    let log = tmp.path().join("run.log");
    let mut run = FerryRun::start_with_env("run", &cfg, &log, &[("FERRY_TEST_MOST_HINTS", "200".to_string())]);
    let manifest = tmp.path().join("check.md5");
    wait_until(Duration::from_secs(60), "the first pass", || async { log_text(&log).contains("pass done") }).await;
    for i in 0..600 {
        write(&src.join(format!("burst/b{:02}/f{i}.txt", i % 13)), format!("burst {i}").as_bytes());
    }
    std::fs::remove_dir_all(src.join("d01")).expect("delete a folder");
    let mut last = String::new();
    let ok = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match identical(&src, &dst, &manifest) {
                Ok(()) => return,
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    })
    .await;
    assert!(ok.is_ok(), "not identical within 60 s: {last}\n--- log:\n{}", log_text(&log));
    let text = log_text(&log);
    assert!(text.contains("queue overflowed): rescanning"), "the overflow is said:\n{text}");
    assert!(text.contains("found_by=rescan"), "the rescan found the changes:\n{text}");
    assert!(!text.contains("periodic rescan"), "not the periodic one:\n{text}");
    assert_eq!(run.terminate(), Some(0), "clean stop:\n{}", log_text(&log));
}

/// Runs the task and SIGKILLs it once a partial file in `partial_dir` is past 20 MiB
/// and the target's state file `state` records its first 16 MiB as durable.
pub async fn run_killed_past_20_mib(cfg: &Path, partial_dir: &Path, state: &Path, log: &Path) {
    run_killed_with_partials_past_20_mib(cfg, partial_dir, state, log, 1).await
}

/// Runs the task and SIGKILLs it once `n` partial files in `partial_dir` are past 20 MiB
/// and recorded in `state` as durable past 16 MiB.
pub async fn run_killed_with_partials_past_20_mib(cfg: &Path, partial_dir: &Path, state: &Path, log: &Path, n: usize) {
    run_until_partials_past_20_mib(cfg, partial_dir, state, log, n).await.kill();
}

/// How many partial writes the checkpoints in the blob state file `state` record as
/// durable past 16 MiB (0 while it does not exist yet).
async fn recorded_past_16_mib(state: &Path) -> usize {
    use sqlx::{ConnectOptions, Row};
    if !state.exists() {
        return 0;
    }
    let conn = sqlx::sqlite::SqliteConnectOptions::new().filename(state).read_only(true).connect().await;
    let Ok(mut conn) = conn else { return 0 };
    let bodies = sqlx::query("SELECT body FROM ferry_blob_checkpoint").fetch_all(&mut conn).await.unwrap_or_default();
    bodies
        .iter()
        .filter_map(|r| serde_json::from_str::<serde_json::Value>(&r.get::<String, _>(0)).ok())
        .flat_map(|cp| cp["uploads"].as_array().cloned().unwrap_or_default())
        .filter(|u| u["durable"].as_u64().is_some_and(|d| d >= 16 << 20))
        .count()
}

/// The sizes of the partial files under `partial_dir` (a folder target spreads them
/// over subfolders; an SFTP target keeps them in it).
pub fn partial_sizes(partial_dir: &Path) -> Vec<u64> {
    let mut sizes = Vec::new();
    let mut stack = vec![partial_dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) => sizes.push(m.len()),
                Err(_) => {}
            }
        }
    }
    sizes
}

/// Starts the task and returns it running once `n` partial files in `partial_dir` are
/// past 20 MiB and `state` records them durable past 16 MiB (the checkpoint is saved
/// while the copy goes on: on a busy machine it can land after the next bytes do).
async fn run_until_partials_past_20_mib(
    cfg: &Path,
    partial_dir: &Path,
    state: &Path,
    log: &Path,
    n: usize,
) -> FerryRun {
    let run = FerryRun::start(cfg, log);
    wait_until(Duration::from_secs(60), "the copies to get past 20 MiB, checkpointed past 16 MiB", || async {
        partial_sizes(partial_dir).iter().filter(|len| **len > 20 << 20).count() >= n
            && recorded_past_16_mib(state).await >= n
    })
    .await;
    run
}

/// Two 40 MiB files (`one.bin`, `two.bin`) and the files in `extra` under `src`, and a
/// task copying them to `dst` at 16 MB/s (the two big lanes share it): the task file.
fn two_big_files(tmp: &Path, seed: u64, extra: &[&str]) -> PathBuf {
    let mut rng = fastrand::Rng::with_seed(seed);
    for name in ["one.bin", "two.bin"] {
        let data: Vec<u8> = (0..40 << 20).map(|_| rng.u8(..)).collect();
        write(&tmp.join("src").join(name), &data);
    }
    for name in extra {
        write(&tmp.join("src").join(name), name.as_bytes());
    }
    let (src, dst) = (tmp.join("src"), tmp.join("dst"));
    blob_task_file(
        tmp,
        &format!("file://{}", src.display()),
        &format!("file://{}", dst.display()),
        "max_bytes_per_sec = 16000000",
    )
}

/// After an interrupted run of [`two_big_files`]: neither is visible; `run --once`
/// resumes both, each at more than `past` bytes, leaves no partial file, and the trees
/// are identical.
fn both_resume_past(tmp: &Path, cfg: &Path, past: u64) {
    let (src, dst) = (tmp.join("src"), tmp.join("dst"));
    assert!(!dst.join("one.bin").exists() && !dst.join("two.bin").exists(), "not visible before they are whole");
    let mut resumed = run_once_resumed(cfg);
    resumed.sort();
    let paths: Vec<&str> = resumed.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(paths, ["one.bin", "two.bin"], "both copies resumed: {resumed:?}");
    for (path, at) in &resumed {
        assert!(*at >= past, "{path} resumed at {at}, not where it stopped");
    }
    assert!(dst.join(".ferry/partial").is_dir(), "the partial folder is there");
    assert_eq!(partial_sizes(&dst.join(".ferry/partial")), Vec::<u64>::new(), "no partial file left");
    identical(&src, &dst, &tmp.join("check.md5")).expect("identical");
}

/// Runs `ferry run --once` (it must succeed) and returns where its log says the
/// interrupted copy resumed (`resuming the copy where it stopped at=N`).
pub fn run_once_resumed_at(cfg: &Path) -> u64 {
    let all = run_once_resumed(cfg);
    all.first().map(|(_, at)| *at).unwrap_or_else(|| panic!("no copy resumed: {all:?}"))
}

/// Runs `ferry run --once` (it must succeed) and returns each copy its log says it
/// resumed, with where (`path=P at=N`).
pub fn run_once_resumed(cfg: &Path) -> Vec<(String, u64)> {
    let out = output_within(
        std::process::Command::new(ferry_bin()).args(["run", "--once", "--config"]).arg(cfg).env("FERRY_LOG", "info"),
        Duration::from_secs(300),
    );
    let err = strip_ansi(&String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{err}");
    let field = |line: &str, name: &str| -> String {
        line.split(&format!(" {name}=")).nth(1).and_then(|s| s.split_whitespace().next()).unwrap_or_default().into()
    };
    let resumed: Vec<(String, u64)> = err
        .lines()
        .filter(|l| l.contains("resuming the copy where it stopped"))
        .map(|l| (field(l, "path"), field(l, "at").parse().unwrap_or_else(|_| panic!("offset in {l:?}"))))
        .collect();
    assert!(!resumed.is_empty(), "the copy resumed:\n{err}");
    resumed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_copy_killed_midway_resumes_where_it_stopped() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    let mut rng = fastrand::Rng::with_seed(5);
    let data: Vec<u8> = (0..48 << 20).map(|_| rng.u8(..)).collect();
    write(&src.join("huge.bin"), &data);
    write(&src.join("small.txt"), b"small");
    let cfg = blob_task_file(
        tmp.path(),
        &format!("file://{}", src.display()),
        &format!("file://{}", dst.display()),
        "max_bytes_per_sec = 12000000",
    );
    let partial_dir = dst.join(".ferry/partial");
    run_killed_past_20_mib(&cfg, &partial_dir, &dst.join(".ferry/state.db"), &tmp.path().join("run.log")).await;
    assert!(!dst.join("huge.bin").exists(), "not visible before it is whole");

    let at = run_once_resumed_at(&cfg);
    assert!(at >= 16 << 20, "resumed at {at}, not at the start");
    assert_eq!(std::fs::read(dst.join("huge.bin")).expect("copied"), data);
    assert!(partial_dir.is_dir(), "the partial folder is there");
    assert_eq!(partial_sizes(&partial_dir), Vec::<u64>::new(), "no partial file left");
    identical(&src, &dst, &tmp.path().join("check.md5")).expect("identical");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_copies_made_side_by_side_and_killed_midway_all_resume_where_they_stopped() {
    let tmp = tempfile::tempdir().expect("tmp");
    // Both copies are under way at once (a kill only once both are past 20 MiB), each
    // checkpointed as it grows.
    let cfg = two_big_files(tmp.path(), 11, &["small.txt"]);
    let partial_dir = tmp.path().join("dst/.ferry/partial");
    let state = tmp.path().join("dst/.ferry/state.db");
    run_killed_with_partials_past_20_mib(&cfg, &partial_dir, &state, &tmp.path().join("run.log"), 2).await;
    both_resume_past(tmp.path(), &cfg, 16 << 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_copies_stopped_by_sigterm_resume_from_all_they_had_written() {
    let tmp = tempfile::tempdir().expect("tmp");
    let cfg = two_big_files(tmp.path(), 13, &[]);
    let partial_dir = tmp.path().join("dst/.ferry/partial");
    let state = tmp.path().join("dst/.ferry/state.db");
    let mut run = run_until_partials_past_20_mib(&cfg, &partial_dir, &state, &tmp.path().join("run.log"), 2).await;
    // Stopped, not killed: each big lane syncs what it wrote and the pass checkpoints it,
    // so the copies resume past the last 16 MiB mark a crash would fall back to.
    assert_eq!(run.terminate(), Some(0), "ferry stops cleanly on SIGTERM");
    both_resume_past(tmp.path(), &cfg, (20 << 20) + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_copy_does_not_hold_back_the_small_files_listed_after_it() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    let mut rng = fastrand::Rng::with_seed(7);
    // Listed first, and about 4 s to copy at the task's rate.
    let big: Vec<u8> = (0..40 << 20).map(|_| rng.u8(..)).collect();
    write(&src.join("a/big.bin"), &big);
    let small = 200;
    for i in 0..small {
        let data: Vec<u8> = (0..rng.usize(10..2000)).map(|_| rng.u8(..)).collect();
        write(&src.join(format!("b/f{i:03}.txt")), &data);
    }
    let cfg = blob_task_file(
        tmp.path(),
        &format!("file://{}", src.display()),
        &format!("file://{}", dst.display()),
        "max_bytes_per_sec = 10000000",
    );
    let log = tmp.path().join("run.log");
    let mut run = FerryRun::start(&cfg, &log);
    let count_small = || std::fs::read_dir(dst.join("b")).map(|d| d.count()).unwrap_or(0);
    wait_until(Duration::from_secs(60), "the small files to be copied", || async { count_small() == small }).await;
    assert!(
        !dst.join("a/big.bin").exists(),
        "the big file listed before the small ones landed first: they waited for it"
    );
    wait_until(Duration::from_secs(60), "the big file to be copied", || async { dst.join("a/big.bin").exists() }).await;
    run.kill();
    assert_eq!(std::fs::read(dst.join("a/big.bin")).expect("copied"), big);
    identical(&src, &dst, &tmp.path().join("check.md5")).expect("identical");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_pipe_is_skipped_with_a_warning_and_the_rest_copied() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    write(&src.join("a/file.txt"), b"kept");
    let made = std::process::Command::new("mkfifo").arg(src.join("a/pipe")).status().expect("mkfifo runs");
    assert!(made.success(), "mkfifo");
    let cfg =
        blob_task_file(tmp.path(), &format!("file://{}", src.display()), &format!("file://{}", dst.display()), "");
    let out = output_within(
        std::process::Command::new(ferry_bin()).args(["run", "--once", "--config"]).arg(&cfg).env("FERRY_LOG", "warn"),
        Duration::from_secs(120),
    );
    let err = strip_ansi(&String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{err}");
    assert!(err.contains("skipping a named pipe") && err.contains("a/pipe"), "the pipe is named in a warning:\n{err}");
    assert_eq!(std::fs::read(dst.join("a/file.txt")).expect("copied"), b"kept");
    assert!(std::fs::symlink_metadata(dst.join("a/pipe")).is_err(), "no pipe at the target");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_file_is_named_the_rest_copied_and_the_task_resumes() {
    let tmp = tempfile::tempdir().expect("tmp");
    // Root reads anything: ferry then runs as nobody, in folders nobody may write.
    let as_root = std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false);
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    write(&src.join("ok/one.txt"), b"one");
    write(&src.join("ok/two.txt"), b"two");
    write(&src.join("secret/locked.txt"), b"locked");
    std::fs::set_permissions(src.join("secret/locked.txt"), std::fs::Permissions::from_mode(0o000)).expect("chmod");
    for d in [&src, &src.join("ok"), &src.join("secret")] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let cfg =
        blob_task_file(tmp.path(), &format!("file://{}", src.display()), &format!("file://{}", dst.display()), "");
    let run_once = || {
        let mut cmd = if as_root {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "nobody", "--"]).arg(ferry_bin());
            c
        } else {
            std::process::Command::new(ferry_bin())
        };
        output_within(
            cmd.args(["run", "--once", "--config"]).arg(&cfg).env("FERRY_LOG", "warn"),
            Duration::from_secs(300),
        )
    };
    let out = run_once();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "a path that cannot be read fails the run:\n{err}");
    assert!(err.contains("secret/locked.txt"), "the error names the path:\n{err}");
    assert!(err.contains("fix:"), "and says what to do:\n{err}");
    assert_eq!(std::fs::read(dst.join("ok/one.txt")).expect("the rest is copied"), b"one");
    assert!(!dst.join("secret/locked.txt").exists());

    std::fs::set_permissions(src.join("secret/locked.txt"), std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let out = run_once();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    identical(&src, &dst, &tmp.path().join("check.md5")).expect("identical once readable");
}

/// A small tmpfs mounted on a folder (the target's disk), unmounted when dropped.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(at: &Path, size: &str) -> SmallDisk {
        std::fs::create_dir_all(at).expect("mount point");
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "this test fills a small tmpfs as the target's disk and must mount one: run the tests as root \
             (scripts/test does, as CI runs it): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk(at.to_path_buf())
    }

    fn grow(&self, size: &str) {
        let out = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .output()
            .expect("run mount");
        assert!(out.status.success(), "remount {}: {}", self.0.display(), String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_target_disk_is_named_with_the_fix_nothing_half_written_shows_and_the_copy_resumes_once_freed() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("disk/dst"));
    // 2.3 MiB of files for a 1 MiB disk.
    let mut rng = fastrand::Rng::with_seed(28);
    for i in 0..36 {
        let data: Vec<u8> = (0..64 << 10).map(|_| rng.u8(..)).collect();
        write(&src.join(format!("d{}/f{i:02}.bin", i % 3)), &data);
    }
    let disk = SmallDisk::mount(&tmp.path().join("disk"), "1m");
    let cfg =
        blob_task_file(tmp.path(), &format!("file://{}", src.display()), &format!("file://{}", dst.display()), "");
    let log = tmp.path().join("ferry.log");
    let mut run = FerryRun::start(&cfg, &log);
    wait_until(Duration::from_secs(60), "ferry to say the target's disk is full", || async {
        log_text(&log).contains("No space left on device")
    })
    .await;
    let text = log_text(&log);
    let line = text.lines().find(|l| l.contains("No space left on device")).unwrap_or_default().to_string();
    assert!(
        line.contains("cannot write") && line.contains(".bin"),
        "the error names the file it could not write: {line}"
    );
    assert!(text.contains("fix: free space on the target's disk"), "and says what to do:\n{text}");
    assert!(!run.exited(), "a full disk is waited out, not a reason to stop:\n{text}");
    // Nothing half written is visible: each file there is the source's, whole.
    let (want, got) = (tree(&src), tree(&dst));
    for (rel, desc) in got.iter().filter(|(_, d)| d.starts_with("file")) {
        assert_eq!(want.get(rel), Some(desc), "{rel} on the full disk is not the source's");
        assert_eq!(std::fs::read(dst.join(rel)).ok(), std::fs::read(src.join(rel)).ok(), "{rel}: content");
    }

    // Space freed (the disk grown): the copy goes on by itself and ends identical.
    disk.grow("16m");
    let check = tmp.path().join("check.md5");
    wait_until(Duration::from_secs(120), "the copy to resume once the disk has room", || async {
        identical(&src, &dst, &check).is_ok()
    })
    .await;
    assert_eq!(run.terminate(), Some(0), "a clean stop:\n{}", log_text(&log));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_source_folder_or_nested_endpoints_are_refused_with_the_fix() {
    let tmp = tempfile::tempdir().expect("tmp");
    let missing = tmp.path().join("nope");
    let cfg = blob_task_file(
        tmp.path(),
        &format!("file://{}", missing.display()),
        &format!("file://{}", tmp.path().join("dst").display()),
        "",
    );
    let out = ferry_within(&["run", "--once", "--config", cfg.to_str().expect("utf-8")], Duration::from_secs(30)).await;
    assert_eq!(out.code, Some(2), "{}", out.all());
    assert!(out.stderr.contains(&missing.display().to_string()), "names the folder: {}", out.all());
    assert!(out.stderr.contains("fix:"), "{}", out.all());

    std::fs::create_dir_all(tmp.path().join("src")).expect("src");
    let cfg = blob_task_file(
        tmp.path(),
        &format!("file://{}", tmp.path().join("src").display()),
        &format!("file://{}", tmp.path().join("src/inside").display()),
        "",
    );
    let out = ferry_within(&["run", "--once", "--config", cfg.to_str().expect("utf-8")], Duration::from_secs(30)).await;
    assert_eq!(out.code, Some(2), "{}", out.all());
    assert!(out.stderr.contains("overlap"), "{}", out.all());
    assert!(!tmp.path().join("src/inside").exists(), "nothing written into the source");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_becomes_a_folder_and_a_folder_that_becomes_a_file_are_carried() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    write(&src.join("x"), b"file x");
    write(&src.join("y/inner.txt"), b"in y");
    let cfg =
        blob_task_file(tmp.path(), &format!("file://{}", src.display()), &format!("file://{}", dst.display()), "");
    let once = || run_once_ok(&cfg);
    once().await;
    std::fs::remove_file(src.join("x")).expect("rm");
    write(&src.join("x/now-a-folder.txt"), b"x is a folder");
    std::fs::remove_dir_all(src.join("y")).expect("rm -r");
    write(&src.join("y"), b"y is a file");
    once().await;
    identical(&src, &dst, &tmp.path().join("check.md5")).expect("identical");
}

/// The mtime (s, ns) of every folder under `root` (but `.ferry/`).
fn folder_mtimes(root: &Path) -> BTreeMap<String, (i64, i64)> {
    let mut out = BTreeMap::new();
    for (rel, desc) in tree(root) {
        if desc.starts_with("dir") {
            let md = std::fs::symlink_metadata(root.join(&rel)).expect("folder");
            out.insert(rel, (md.mtime(), md.mtime_nsec()));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn folder_mtimes_are_the_sources_after_a_copy_and_after_changes_inside_them() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    seed(&src, 300);
    // Folder times from long ago, as a restored tree has them.
    for (i, rel) in folder_mtimes(&src).keys().enumerate() {
        let f = std::fs::File::open(src.join(rel)).expect("open folder");
        let when = std::time::UNIX_EPOCH + Duration::from_secs(1_500_000_000 + i as u64 * 7919);
        f.set_times(std::fs::FileTimes::new().set_modified(when)).expect("folder mtime");
    }
    let cfg =
        blob_task_file(tmp.path(), &format!("file://{}", src.display()), &format!("file://{}", dst.display()), "");
    let once = || run_once_ok(&cfg);
    once().await;
    identical(&src, &dst, &tmp.path().join("check.md5")).expect("identical");
    assert_eq!(folder_mtimes(&dst), folder_mtimes(&src), "folder mtimes after the first copy");

    // A file added in one folder, one deleted in another, a folder removed from a third:
    // each changes its folder's mtime on both sides.
    write(&src.join("d01/s01/added.txt"), b"new");
    let gone = tree(&src).into_keys().find(|k| k.starts_with("d02/") && k.ends_with(".txt")).expect("a file");
    std::fs::remove_file(src.join(&gone)).expect("rm");
    std::fs::remove_dir_all(src.join("empty/inner")).expect("rm -r");
    once().await;
    identical(&src, &dst, &tmp.path().join("check.md5")).expect("identical after the changes");
    assert_eq!(folder_mtimes(&dst), folder_mtimes(&src), "folder mtimes after changes inside them");
    // Nothing differs: a pass copies nothing and leaves them so.
    let inodes_before = inodes(&dst);
    once().await;
    assert_eq!(inodes(&dst), inodes_before, "nothing copied again");
    assert_eq!(folder_mtimes(&dst), folder_mtimes(&src), "folder mtimes after a no-change pass");
}

/// `ferry run --once` of the task file `cfg`, which must succeed.
async fn run_once_ok(cfg: &Path) {
    let out =
        ferry_within(&["run", "--once", "--config", cfg.to_str().expect("utf-8")], Duration::from_secs(120)).await;
    assert_eq!(out.code, Some(0), "{}", out.all());
}

/// Inode of every file under `root` (but `.ferry/`): a file copied again gets a new one.
fn inodes(root: &Path) -> BTreeMap<String, u64> {
    tree(root)
        .into_iter()
        .filter(|(_, desc)| desc.starts_with("file"))
        .filter_map(|(rel, _)| std::fs::metadata(root.join(&rel)).ok().map(|m| (rel, m.ino())))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_many_file_copy_on_several_lanes_killed_midway_resumes_without_copying_anything_twice() {
    use md5::Digest;
    use sqlx::{ConnectOptions, Row};
    let tmp = tempfile::tempdir().expect("tmp");
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    let mut rng = fastrand::Rng::with_seed(81);
    let total = 2000;
    for i in 0..total {
        let data: Vec<u8> = (0..rng.usize(100..3000)).map(|_| rng.u8(..)).collect();
        write(&src.join(format!("d{:02}/f{i:05}.bin", i % 17)), &data);
    }
    // Slow enough to be killed midway: about 3 MB at 600 kB/s, 4 lanes.
    let cfg = blob_task_file(
        tmp.path(),
        &format!("file://{}", src.display()),
        &format!("file://{}", dst.display()),
        "workers = 4\nmax_bytes_per_sec = 600000",
    );
    let mut run = FerryRun::start(&cfg, &tmp.path().join("run.log"));
    wait_until(Duration::from_secs(60), "300 files to be copied", || async { inodes(&dst).len() >= 300 }).await;
    run.kill();
    let before = inodes(&dst);
    assert!(before.len() < total, "killed midway: {} of {total} files were visible", before.len());

    let out = output_within(
        std::process::Command::new(ferry_bin()).args(["run", "--once", "--config"]).arg(&cfg).env("FERRY_LOG", "info"),
        Duration::from_secs(300),
    );
    let err = strip_ansi(&String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{err}");
    identical(&src, &dst, &tmp.path().join("check.md5")).expect("identical after the resume");
    // A file visible at the kill was not copied again: the same inode (a copy renames a
    // new file into place).
    let after = inodes(&dst);
    for (rel, ino) in &before {
        assert_eq!(after.get(rel), Some(ino), "{rel} was copied again after the resume");
    }
    let copied = err
        .lines()
        .filter(|l| l.contains("pass done"))
        .find_map(|l| l.split("copied=").nth(1)?.split_whitespace().next()?.parse::<usize>().ok())
        .unwrap_or_else(|| panic!("a pass done line:\n{err}"));
    assert_eq!(copied, total - before.len(), "the resumed pass copies exactly what was not visible");

    // The manifest, read here: one line per file, with the source's size and mtime, and
    // the hashes this test computes wherever ferry recorded them (a line a rescan added
    // after a kill between a rename and its commit has none: the content was not read).
    let mut db = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(dst.join(".ferry/state.db"))
        .read_only(true)
        .connect()
        .await
        .expect("state file");
    let rows = sqlx::query("SELECT path, size, mtime_ns, md5, blake3 FROM ferry_blob_manifest WHERE task = 'files'")
        .fetch_all(&mut db)
        .await
        .expect("manifest");
    assert_eq!(rows.len(), total, "one manifest line per file");
    for r in rows {
        let path: String = r.get(0);
        let md = std::fs::metadata(src.join(&path)).unwrap_or_else(|e| panic!("{path} in the source: {e}"));
        let mtime_ns = md.mtime() * 1_000_000_000 + md.mtime_nsec();
        assert_eq!((r.get::<i64, _>(1), r.get::<i64, _>(2)), (md.len() as i64, mtime_ns), "{path}: size and mtime");
        let data = std::fs::read(src.join(&path)).expect("read");
        if let Some(md5) = r.get::<Option<String>, _>(3) {
            let want: String = md5::Md5::digest(&data).iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(md5, want, "{path}: the manifest's MD5");
        }
        if let Some(b3) = r.get::<Option<String>, _>(4) {
            assert_eq!(b3, blake3::hash(&data).to_hex().to_string(), "{path}: the manifest's BLAKE3");
        }
    }
}
