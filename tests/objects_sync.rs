//! Folders and S3 buckets (the testbed's moto_server) with the real `ferry` binary:
//! dir -> s3 -> s3 -> dir round trips end identical (`md5sum -c` of the test's own
//! manifest), changes are found by listing against the manifest, a no-change pass copies
//! nothing, a SIGKILLed multipart upload resumes through ListParts, and a missing bucket
//! or credentials are named with the fix.

use std::path::Path;

use sqlx::ConnectOptions;
use std::time::Duration;

use crate::files_sync::{blob_task_file, md5sum_check, strip_ansi as strip, tree, write};
use crate::support::s3;
use crate::support::wait_until;

/// A task file with several endpoints and tasks.
fn task_file(dir: &Path, endpoints: &[(&str, String)], tasks: &[(&str, &str, &str, &str)]) -> std::path::PathBuf {
    let mut text = format!("[node]\nid = \"t\"\nstore = \"sqlite://{}\"\n", dir.join("meta.db").display());
    for (name, url) in endpoints {
        text.push_str(&format!("\n[[endpoint]]\nname = \"{name}\"\nurl = \"{url}\"\n"));
    }
    for (name, from, to, extra) in tasks {
        text.push_str(&format!("\n[[task]]\nname = \"{name}\"\nfrom = \"{from}\"\nto = \"{to}\"\n{extra}\n"));
    }
    let path = dir.join("task.toml");
    std::fs::write(&path, text).expect("task file");
    path
}

/// A task file with a folder `src` going up to a bucket (task `up`, with `up_extra`) and
/// the bucket coming down to `back` under `dir` (task `down`).
fn up_and_down(dir: &Path, src: &Path, bucket: &str, prefix: &str, up_extra: &str) -> std::path::PathBuf {
    up_and_down_with(dir, src, &s3::url(bucket, prefix, dir), up_extra)
}

/// [`up_and_down`] with the bucket's URL given (to set its query parameters).
fn up_and_down_with(dir: &Path, src: &Path, s_url: &str, up_extra: &str) -> std::path::PathBuf {
    task_file(
        dir,
        &[
            ("dir", format!("file://{}", src.display())),
            ("s", s_url.to_string()),
            ("back", format!("file://{}", dir.join("back").display())),
        ],
        &[("up", "dir", "s", up_extra), ("down", "s", "back", "")],
    )
}

/// Runs `ferry run --once --task TASK`; its log, after checking it exited 0.
fn once(cfg: &Path, task: &str) -> String {
    let out = s3::ferry(&["run", "--once", "--task", task], cfg);
    let err = strip(&String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "ferry run --once --task {task}:\n{err}");
    err
}

/// The `copied=N` of the last pass in a log.
fn copied(log: &str) -> u64 {
    log.lines()
        .rfind(|l| l.contains("pass done"))
        .and_then(|l| l.split("copied=").nth(1))
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no pass in:\n{log}"))
}

/// Same files with the same content (objects carry no modes, links or empty folders).
fn same_files(src: &Path, dst: &Path, manifest: &Path) {
    let files = |t: std::collections::BTreeMap<String, String>| {
        t.into_iter().filter(|(_, d)| d.starts_with("file")).map(|(p, _)| p).collect::<Vec<_>>()
    };
    assert_eq!(files(tree(src)), files(tree(dst)), "same files");
    md5sum_check(src, dst, manifest).expect("md5sum -c");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tree_goes_to_a_bucket_to_another_and_back_identical_and_changes_follow() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (src, back) = (tmp.path().join("src"), tmp.path().join("back"));
    let mut rng = fastrand::Rng::with_seed(3);
    for i in 0..400 {
        let data: Vec<u8> = (0..rng.usize(0..2000)).map(|_| rng.u8(..)).collect();
        write(&src.join(format!("p{}/f{i}.dat", i % 13)), &data);
    }
    for (i, size) in [(0, 12 << 20), (1, (9 << 20) + 77)] {
        let data: Vec<u8> = (0..size).map(|_| rng.u8(..)).collect();
        write(&src.join(format!("big/b{i}.bin")), &data);
    }
    let (b1, b2) = (s3::bucket("one").await, s3::bucket("two").await);
    let cfg = task_file(
        tmp.path(),
        &[
            ("dir", format!("file://{}", src.display())),
            ("s1", s3::url(&b1, "pre/fix", tmp.path())),
            ("s2", s3::url(&b2, "", tmp.path())),
            ("back", format!("file://{}", back.display())),
        ],
        &[("up", "dir", "s1", ""), ("across", "s1", "s2", ""), ("down", "s2", "back", "")],
    );
    for t in ["up", "across", "down"] {
        let log = once(&cfg, t);
        assert_eq!(copied(&log), 402, "{t}: every file copied:\n{log}");
    }
    let manifest = tmp.path().join("check.md5");
    same_files(&src, &back, &manifest);

    // Changes, found by listing against the manifest (buckets send no hints).
    std::fs::write(src.join("p1/f1.dat"), b"rewritten").expect("rewrite");
    let mut f = std::fs::OpenOptions::new().append(true).open(src.join("big/b1.bin")).expect("append");
    std::io::Write::write_all(&mut f, b"appended").expect("append");
    drop(f);
    std::fs::remove_file(src.join("p2/f2.dat")).expect("delete");
    write(&src.join("p3/new.dat"), b"new");
    for t in ["up", "across", "down"] {
        let log = once(&cfg, t);
        assert_eq!(copied(&log), 3, "{t}: only what changed is copied:\n{log}");
        assert!(log.contains("deleted=1"), "{t}: the deleted file goes:\n{log}");
    }
    same_files(&src, &back, &manifest);
    for t in ["up", "across", "down"] {
        assert_eq!(copied(&once(&cfg, t)), 0, "{t}: a no-change pass copies nothing");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multipart_upload_killed_midway_resumes_through_listparts() {
    let tmp = tempfile::tempdir().expect("tmp");
    let src = tmp.path().join("src");
    let mut rng = fastrand::Rng::with_seed(9);
    let data: Vec<u8> = (0..40 << 20).map(|_| rng.u8(..)).collect();
    write(&src.join("huge.bin"), &data);
    // Under the cutoff (though bigger than a part): one PUT, its ETag the plain MD5.
    let mid: Vec<u8> = (0..12 << 20).map(|_| rng.u8(..)).collect();
    write(&src.join("mid.bin"), &mid);
    let bucket = s3::bucket("resume").await;
    // Multipart from 16 MiB (the default cutoff is 100 MiB: the test stays small).
    let url = format!("{}&upload_cutoff=16MiB", s3::url(&bucket, "", tmp.path()));
    let cfg = up_and_down_with(tmp.path(), &src, &url, "max_bytes_per_sec = 10000000");
    let log = tmp.path().join("run.log");
    let mut child = s3::command(&["run", "--task", "up"], &cfg)
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("ferry starts");
    // Kill once the checkpoint records an upload with parts in it.
    let state = tmp.path().join(format!("{bucket}-state.db"));
    wait_until(Duration::from_secs(60), "a part of the upload to be recorded", || async {
        let Ok(mut c) = sqlx::sqlite::SqliteConnectOptions::new().filename(&state).read_only(true).connect().await
        else {
            return false;
        };
        let body: Option<String> =
            sqlx::query_scalar("SELECT body FROM ferry_blob_checkpoint").fetch_optional(&mut c).await.ok().flatten();
        body.is_some_and(|b| b.contains("\"durable\":") && !b.contains("\"durable\":0"))
    })
    .await;
    child.kill().expect("SIGKILL");
    let _ = child.wait();

    let resumed = once(&cfg, "up");
    let line = resumed.lines().find(|l| l.contains("resuming the copy where it stopped")).unwrap_or_else(|| {
        panic!("the upload resumed:\n{resumed}");
    });
    let at: u64 = line
        .split("at=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("offset in {line:?}"));
    assert!(at >= 8 << 20, "resumed at {at}, not at the start");
    // The parts went up several at once and the copy resumed: the manifest's hash is
    // still that of the whole content, and verify (every byte, the multipart ETag
    // recomputed) finds the object identical.
    let mut c =
        sqlx::sqlite::SqliteConnectOptions::new().filename(&state).read_only(true).connect().await.expect("state");
    let b3: String = sqlx::query_scalar("SELECT blake3 FROM ferry_blob_manifest WHERE path = 'huge.bin'")
        .fetch_one(&mut c)
        .await
        .expect("manifest line");
    assert_eq!(b3, blake3::hash(&data).to_hex().to_string(), "the manifest's BLAKE3 of the whole object");
    let etag = |path: &'static str| {
        sqlx::query_scalar::<_, String>("SELECT target FROM ferry_blob_manifest WHERE path = ?").bind(path)
    };
    let huge_etag = etag("huge.bin").fetch_one(&mut c).await.expect("huge.bin's ETag");
    assert!(huge_etag.ends_with("-5"), "huge.bin went up in 5 parts of 8 MiB: {huge_etag}");
    let mid_etag = etag("mid.bin").fetch_one(&mut c).await.expect("mid.bin's ETag");
    use md5::Digest;
    let mid_md5: String = md5::Md5::digest(&mid).iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(mid_etag.trim_matches('"'), mid_md5, "mid.bin went up in one PUT");
    let out = s3::ferry(&["verify", "--task", "up"], &cfg);
    assert!(out.status.success(), "verify: {}", strip(&String::from_utf8_lossy(&out.stdout)));
    once(&cfg, "down");
    assert_eq!(std::fs::read(tmp.path().join("back/huge.bin")).expect("copied back"), data);
    assert_eq!(std::fs::read(tmp.path().join("back/mid.bin")).expect("copied back"), mid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_bucket_or_missing_credentials_are_named_with_the_fix() {
    let tmp = tempfile::tempdir().expect("tmp");
    let src = tmp.path().join("src");
    write(&src.join("a.txt"), b"a");
    let missing = format!("ferry-missing-{}", fastrand::u32(..));
    let cfg = blob_task_file(tmp.path(), &format!("file://{}", src.display()), &s3::url(&missing, "", tmp.path()), "");
    let out = s3::ferry(&["run", "--once"], &cfg);
    let err = strip(&String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(&missing) && err.contains("NoSuchBucket") && err.contains("create bucket"), "{err}");

    // No credentials at all: the variables to set are named. (Refused credentials are
    // classified by their S3 error code, a unit test of the client: moto_server does
    // not check presigned requests' keys.)
    let bucket = s3::bucket("nocreds").await;
    let cfg = blob_task_file(tmp.path(), &format!("file://{}", src.display()), &s3::url(&bucket, "", tmp.path()), "");
    let out = crate::support::output_within(
        s3::command(&["run", "--once"], &cfg).env_remove("AWS_ACCESS_KEY_ID").env_remove("AWS_SECRET_ACCESS_KEY"),
        Duration::from_secs(300),
    );
    let err = strip(&String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("AWS_ACCESS_KEY_ID is not set") && err.contains("fix:"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucket_listed_over_several_server_pages_is_seen_whole_by_every_pass() {
    // moto answers at most 1,000 keys a listing: 2,150 objects take three requests, each
    // continuing after the last key of the one before (what is kept ahead between the
    // engine's pages, when a store answers more than a page, is the client's unit tests').
    let tmp = tempfile::tempdir().expect("tmp");
    let src = tmp.path().join("src");
    for i in 0..2_150 {
        write(&src.join(format!("d{}/f{i:04}", i % 7)), format!("{i}").as_bytes());
    }
    let bucket = s3::bucket("pages").await;
    let cfg = up_and_down(tmp.path(), &src, &bucket, "p", "");
    assert_eq!(copied(&once(&cfg, "up")), 2_150);
    let log = once(&cfg, "up");
    assert_eq!(copied(&log), 0, "a no-change pass over three server pages copies nothing:\n{log}");
    assert!(log.contains("deleted=0"), "and deletes nothing:\n{log}");
    // A change in the second and third server pages is found by the next pass.
    std::fs::remove_file(src.join("d1/f1149")).expect("delete");
    std::fs::write(src.join("d5/f2000"), b"changed").expect("rewrite");
    let log = once(&cfg, "up");
    assert_eq!(copied(&log), 1, "{log}");
    assert!(log.contains("deleted=1"), "{log}");
    let down = once(&cfg, "down");
    same_files(&src, &tmp.path().join("back"), &tmp.path().join("check.md5"));
    assert_eq!(copied(&down), 2_149, "{down}");
}
