//! A remote folder pulled over SFTP (the testbed's private sshd, through the system's
//! `ssh` client) into a local folder with `ferry run --once`, changed in every way and
//! pulled again: identical afterwards by the listing and `md5sum -c`. A local folder
//! pushed to an SFTP target, changed in every way under a running task: identical
//! afterwards. A SIGKILL during a big push resumes the file where it stopped. A server
//! whose host key is not the known one is refused with the fix, and nothing is written.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::files_sync::{log_text, md5sum_check, run_killed_past_20_mib, run_once_resumed_at, tree, write};
use crate::support::{FerryRun, ferry_within, wait_until};

/// The testbed's SFTP server: (URL base, identity, known_hosts).
pub fn server() -> (String, String, String) {
    let get = |k: &str| {
        std::env::var(k).unwrap_or_else(|_| {
            panic!("{k} is not set: start the testbed's sshd with `scripts/testbed start` and `eval \"$(scripts/testbed env)\"` (scripts/test does both)")
        })
    };
    (get("FERRY_TEST_SFTP"), get("FERRY_TEST_SFTP_IDENTITY"), get("FERRY_TEST_SFTP_KNOWN_HOSTS"))
}

/// A task pulling `src` (a folder on this host, served by the sshd) into `dst`; with
/// `push`, the other way round (`dst` to the folder `src` through the server).
fn task(dir: &Path, src: &Path, dst: &str, known_hosts: &str, push: bool) -> PathBuf {
    task_with(dir, src, dst, known_hosts, push, "")
}

/// [`task`] with extra task keys.
pub fn task_with(dir: &Path, src: &Path, dst: &str, known_hosts: &str, push: bool, extra: &str) -> PathBuf {
    let (base, identity, _) = server();
    let path = dir.join("task.toml");
    let text = format!(
        "[node]\nid = \"t\"\nstore = \"sqlite://{}\"\n\n[[endpoint]]\nname = \"remote\"\nurl = \"{base}{}{state}\"\n\
         identity = \"{identity}\"\nknown_hosts = \"{known_hosts}\"\n\n[[endpoint]]\nname = \"here\"\nurl = \"{dst}\"\n\n\
         [[task]]\nname = \"pull\"\nfrom = \"{from}\"\nto = \"{to}\"\n{extra}\n",
        dir.join("meta.db").display(),
        src.display(),
        // A target's state file stays in the test's folder.
        state = if push { format!("?state={}", dir.join("sftp-state.db").display()) } else { String::new() },
        from = if push { "here" } else { "remote" },
        to = if push { "remote" } else { "here" },
    );
    std::fs::write(&path, text).expect("task file");
    path
}

/// The tree with mtimes in whole seconds: SFTP (version 3) carries no more.
fn tree_s(root: &Path) -> BTreeMap<String, String> {
    tree(root)
        .into_iter()
        .map(|(k, v)| {
            (k, if v.starts_with("file") { v.rsplit_once('.').map_or(v.clone(), |(a, _)| a.to_string()) } else { v })
        })
        .collect()
}

pub fn identical(src: &Path, dst: &Path, manifest: &Path) -> Result<(), String> {
    let (a, b) = (tree_s(src), tree_s(dst));
    if a != b {
        let only_a: Vec<_> = a.iter().filter(|(k, v)| b.get(*k) != Some(v)).take(5).collect();
        let only_b: Vec<_> = b.iter().filter(|(k, v)| a.get(*k) != Some(v)).take(5).collect();
        return Err(format!("trees differ: source has {only_a:?}, target has {only_b:?}"));
    }
    md5sum_check(src, dst, manifest)
}

/// `small` files in `folders` folders, a 5 MB one (returned), a link, an empty folder
/// and a file of mode 600.
fn seed(root: &Path, small: usize, folders: usize) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(small as u64);
    for i in 0..small {
        let data: Vec<u8> = (0..rng.usize(0..4000)).map(|_| rng.u8(..)).collect();
        write(&root.join(format!("d{:02}/f{i:04}.bin", i % folders)), &data);
    }
    let big: Vec<u8> = (0..(5 << 20) + 4097).map(|_| rng.u8(..)).collect();
    write(&root.join("big/b.bin"), &big);
    std::os::unix::fs::symlink("../big/b.bin", root.join("d00/link")).expect("symlink");
    std::fs::create_dir_all(root.join("empty/inner")).expect("empty dir");
    std::fs::set_permissions(root.join("d01/f0001.bin"), std::fs::Permissions::from_mode(0o600)).expect("chmod");
    big
}

fn touch(p: &Path, secs_ago: u64) {
    let f = std::fs::File::options().write(true).open(p).expect("open");
    f.set_modified(SystemTime::now() - Duration::from_secs(secs_ago)).expect("mtime");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_tree_is_pulled_over_sftp_changed_in_every_way_and_pulled_again_identical() {
    let (_, _, known) = server();
    let tmp = tempfile::tempdir().expect("tmp");
    let (src, dst) = (tmp.path().join("remote"), tmp.path().join("here"));
    seed(&src, 300, 11);
    let cfg = task(tmp.path(), &src, &format!("file://{}", dst.display()), &known, false);
    let cfg = cfg.to_str().expect("utf-8");

    let check = ferry_within(&["check", "--config", cfg], Duration::from_secs(60)).await;
    assert_eq!(check.code, Some(0), "check of a good sftp source: {}", check.all());
    let out = ferry_within(&["run", "--once", "--config", cfg], Duration::from_secs(120)).await;
    assert_eq!(out.code, Some(0), "{}", out.all());
    identical(&src, &dst, &tmp.path().join("m1.md5")).expect("identical after the first copy");

    // Every kind of change (the modified files get an mtime of their own second).
    write(&src.join("d02/new.txt"), b"created");
    write(&src.join("d03/f0003.bin"), b"modified, and of another size");
    touch(&src.join("d03/f0003.bin"), 7);
    let mut appended = std::fs::read(src.join("big/b.bin")).expect("read");
    appended.extend_from_slice(b"appended");
    write(&src.join("big/b.bin"), &appended);
    touch(&src.join("big/b.bin"), 5);
    std::fs::File::options().write(true).open(src.join("d04/f0004.bin")).expect("open").set_len(3).expect("truncate");
    touch(&src.join("d04/f0004.bin"), 3);
    std::fs::remove_file(src.join("d05/f0005.bin")).expect("delete");
    std::fs::rename(src.join("d06/f0006.bin"), src.join("d06/renamed.bin")).expect("rename");
    std::fs::set_permissions(src.join("d07/f0007.bin"), std::fs::Permissions::from_mode(0o640)).expect("chmod");
    std::fs::remove_dir_all(src.join("empty/inner")).expect("rmdir");

    let out = ferry_within(&["run", "--once", "--config", cfg], Duration::from_secs(120)).await;
    assert_eq!(out.code, Some(0), "{}", out.all());
    identical(&src, &dst, &tmp.path().join("m2.md5")).expect("identical after the changes");
    assert!(!dst.join("d05/f0005.bin").exists() && dst.join("d06/renamed.bin").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sftp_server_with_an_unknown_host_key_is_refused_with_the_fix_and_nothing_is_written() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (src, dst) = (tmp.path().join("remote"), tmp.path().join("here"));
    write(&src.join("a.txt"), b"a");
    // A known_hosts file holding another key for the server's address.
    let (_, _, real_known) = server();
    let other = tmp.path().join("other_key");
    let made = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&other)
        .status()
        .expect("ssh-keygen");
    assert!(made.success());
    let real = std::fs::read_to_string(&real_known).expect("known_hosts");
    let host = real.split_whitespace().next().expect("host field").to_string();
    let pub_key = std::fs::read_to_string(other.with_extension("pub")).expect("pub");
    let wrong = tmp.path().join("known_hosts");
    let key: Vec<&str> = pub_key.split_whitespace().take(2).collect();
    std::fs::write(&wrong, format!("{host} {}\n", key.join(" "))).expect("known_hosts");
    let cfg = task(tmp.path(), &src, &format!("file://{}", dst.display()), &wrong.display().to_string(), false);
    let cfg = cfg.to_str().expect("utf-8");

    let out = ferry_within(&["check", "--config", cfg], Duration::from_secs(60)).await;
    assert_eq!(out.code, Some(2), "{}", out.all());
    assert!(out.stdout.contains("host key") || out.stderr.contains("host key"), "{}", out.all());
    assert!(out.all().contains("ssh-keyscan"), "the fix: {}", out.all());
    let out = ferry_within(&["run", "--once", "--config", cfg], Duration::from_secs(60)).await;
    assert_eq!(out.code, Some(2), "{}", out.all());
    assert!(out.stderr.contains("host key"), "{}", out.all());
    assert!(!dst.join("a.txt").exists(), "nothing copied from a server that is not the known one");
}

/// Waits until `dst` is identical to `src`, or fails with the last difference and the log.
async fn converges(src: &Path, dst: &Path, manifest: &Path, log: &Path) {
    let mut last = String::new();
    let ok = tokio::time::timeout(Duration::from_secs(90), async {
        loop {
            match identical(src, dst, manifest) {
                Ok(()) => return,
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    })
    .await;
    assert!(ok.is_ok(), "not identical within 90 s: {last}\n--- log:\n{}", log_text(log));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_tree_pushed_over_sftp_and_changed_in_every_way_under_a_running_task_ends_identical() {
    let (_, _, known) = server();
    let tmp = tempfile::tempdir().expect("tmp");
    // `remote` is the folder the sshd serves (on this host, so the test can look).
    let (here, remote) = (tmp.path().join("here"), tmp.path().join("remote"));
    let big = seed(&here, 400, 13);
    let cfg = task_with(tmp.path(), &remote, &format!("file://{}", here.display()), &known, true, "rescan = \"1h\"");

    let check = ferry_within(&["check", "--config", cfg.to_str().expect("utf-8")], Duration::from_secs(60)).await;
    assert_eq!(check.code, Some(0), "check of an sftp target: {}", check.all());
    let log = tmp.path().join("run.log");
    let mut run = FerryRun::start(&cfg, &log);
    let manifest = tmp.path().join("check.md5");
    wait_until(Duration::from_secs(90), "the first pass", || async { log_text(&log).contains("pass done") }).await;
    identical(&here, &remote, &manifest).expect("identical after the first copy");

    // Every kind of change while the task runs (the local watch finds them).
    write(&here.join("d02/new.txt"), b"created");
    write(&here.join("new/deep/er.txt"), b"created in a new folder");
    write(&here.join("d03/f0003.bin"), b"modified, and of another size");
    touch(&here.join("d03/f0003.bin"), 7);
    let mut appended = big;
    appended.extend_from_slice(b"appended");
    write(&here.join("big/b.bin"), &appended);
    touch(&here.join("big/b.bin"), 5);
    std::fs::File::options().write(true).open(here.join("d04/f0004.bin")).expect("open").set_len(3).expect("truncate");
    touch(&here.join("d04/f0004.bin"), 3);
    std::fs::remove_file(here.join("d05/f0005.bin")).expect("delete");
    std::fs::remove_dir_all(here.join("d12")).expect("delete a folder");
    std::fs::rename(here.join("d06/f0006.bin"), here.join("d06/renamed.bin")).expect("rename");
    std::fs::rename(here.join("d07"), here.join("d07-moved")).expect("rename a folder");
    std::fs::set_permissions(here.join("d08/f0008.bin"), std::fs::Permissions::from_mode(0o640)).expect("chmod");
    std::fs::set_permissions(here.join("d09"), std::fs::Permissions::from_mode(0o750)).expect("chmod dir");
    std::fs::remove_dir(here.join("empty/inner")).expect("rmdir");
    converges(&here, &remote, &manifest, &log).await;
    assert!(!remote.join("d05/f0005.bin").exists() && remote.join("d06/renamed.bin").exists());
    assert!(log_text(&log).contains("found_by=watch"), "changes found by the watch:\n{}", log_text(&log));
    assert_eq!(run.terminate(), Some(0), "clean stop:\n{}", log_text(&log));
    assert!(!here.join(".ferry").exists(), "ferry wrote into the source");
    let partial = std::fs::read_dir(remote.join(".ferry/partial")).expect("partial dir").count();
    assert_eq!(partial, 0, "no partial file left on the server");

    // A no-change run copies nothing and leaves the tree as it is.
    let out = ferry_within(&["run", "--once", "--config", cfg.to_str().expect("utf-8")], Duration::from_secs(60)).await;
    assert_eq!(out.code, Some(0), "{}", out.all());
    identical(&here, &remote, &manifest).expect("still identical");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_push_over_sftp_killed_midway_resumes_where_it_stopped() {
    let (_, _, known) = server();
    let tmp = tempfile::tempdir().expect("tmp");
    let (here, remote) = (tmp.path().join("here"), tmp.path().join("remote"));
    let mut rng = fastrand::Rng::with_seed(6);
    let data: Vec<u8> = (0..48 << 20).map(|_| rng.u8(..)).collect();
    write(&here.join("huge.bin"), &data);
    write(&here.join("small.txt"), b"small");
    let cfg = task_with(
        tmp.path(),
        &remote,
        &format!("file://{}", here.display()),
        &known,
        true,
        "max_bytes_per_sec = 12000000",
    );
    let partial_dir = remote.join(".ferry/partial");
    let state = tmp.path().join("sftp-state.db");
    run_killed_past_20_mib(&cfg, &partial_dir, &state, &tmp.path().join("run.log")).await;
    assert!(!remote.join("huge.bin").exists(), "not visible before it is whole");

    let at = run_once_resumed_at(&cfg);
    assert!(at >= 16 << 20, "resumed at {at}, not at the start");
    assert_eq!(std::fs::read(remote.join("huge.bin")).expect("copied"), data);
    assert_eq!(std::fs::read_dir(&partial_dir).expect("partial dir").count(), 0, "no partial file left");
    identical(&here, &remote, &tmp.path().join("check.md5")).expect("identical");
}
