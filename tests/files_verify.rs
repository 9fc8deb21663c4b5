//! `ferry verify` on blob tasks: every differing path is named; `--quick` compares size
//! and mtime (files) or the manifest against the ETag (objects), full mode reads every
//! byte; `--repair` makes the target equal; `--manifest` writes a file `md5sum -c`
//! accepts in the target.

use std::os::unix::fs::MetadataExt;
use std::time::{Duration, SystemTime};

use crate::files_sync::{blob_task_file, strip_ansi, write};
use crate::support::{ferry_within, s3};

fn diffs(stdout: &str) -> Vec<String> {
    let mut v: Vec<String> =
        stdout.lines().filter_map(|l| l.trim().strip_prefix("DIFF ")).map(str::to_string).collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_every_differing_path_repairs_them_and_writes_an_md5sum_manifest() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    for i in 0..200 {
        write(&src.join(format!("d{}/f{i}.txt", i % 5)), format!("file {i}").repeat(i).as_bytes());
    }
    write(&src.join("big.bin"), &vec![3u8; 5 << 20]);
    let cfg =
        blob_task_file(tmp.path(), &format!("file://{}", src.display()), &format!("file://{}", dst.display()), "");
    let cfg = cfg.to_str().expect("utf-8").to_string();
    let run = |args: &'static [&'static str]| {
        let cfg = cfg.clone();
        async move {
            let mut all: Vec<&str> = args.to_vec();
            all.extend(["--config", cfg.as_str()]);
            ferry_within(&all, Duration::from_secs(60)).await
        }
    };
    let out = run(&["run", "--once"]).await;
    assert_eq!(out.code, Some(0), "{}", out.all());
    let out = run(&["verify"]).await;
    assert_eq!(out.code, Some(0), "{}", out.all());

    // Behind ferry's back: a byte changed with size and mtime kept, a file gone, one
    // extra, one grown.
    let victim = dst.join("d1/f11.txt");
    let md = std::fs::metadata(&victim).expect("stat");
    let mut bytes = std::fs::read(&victim).expect("read");
    bytes[3] ^= 0x20;
    std::fs::write(&victim, &bytes).expect("write");
    let mtime = SystemTime::UNIX_EPOCH + Duration::new(md.mtime() as u64, md.mtime_nsec() as u32);
    std::fs::File::options()
        .write(true)
        .open(&victim)
        .expect("open")
        .set_times(std::fs::FileTimes::new().set_modified(mtime))
        .expect("keep mtime");
    std::fs::remove_file(dst.join("d2/f12.txt")).expect("remove");
    write(&dst.join("d3/extra.txt"), b"extra");
    write(&dst.join("d4/f14.txt"), b"grown on the target, longer than before");

    let quick = run(&["verify", "--quick"]).await;
    assert_eq!(quick.code, Some(1), "{}", quick.all());
    assert_eq!(
        diffs(&quick.stdout),
        [
            "d2/f12.txt: missing on the target",
            "d3/extra.txt: only on the target (gone from the source)",
            "d4/f14.txt: size 98 on the source, 39 on the target"
        ],
        "--quick trusts size and mtime: {}",
        quick.all()
    );
    let full = run(&["verify"]).await;
    assert_eq!(full.code, Some(1), "{}", full.all());
    let found = diffs(&full.stdout);
    assert_eq!(found.len(), 4, "{}", full.all());
    assert!(found.contains(&"d1/f11.txt: content differs (BLAKE3)".to_string()), "{}", full.all());

    let repair = run(&["verify", "--repair"]).await;
    assert_eq!(repair.code, Some(0), "{}", repair.all());
    assert!(repair.stdout.contains("4 repaired"), "{}", repair.all());
    let out = run(&["verify"]).await;
    assert_eq!(out.code, Some(0), "identical after the repair: {}", out.all());

    let sums = tmp.path().join("out.md5");
    let mut args = vec!["verify", "--manifest", sums.to_str().expect("utf-8"), "--config", cfg.as_str()];
    let out = ferry_within(&args, Duration::from_secs(60)).await;
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert_eq!(std::fs::read_to_string(&sums).expect("manifest").lines().count(), 201);
    let check = std::process::Command::new("md5sum").args(["-c", "--quiet"]).arg(&sums).current_dir(&dst).output();
    assert!(check.expect("md5sum runs").status.success(), "md5sum -c of ferry's manifest passes in the target");
    args.insert(1, "--quick");
    let out = ferry_within(&args, Duration::from_secs(60)).await;
    assert_eq!(out.code, Some(2), "--manifest needs content: {}", out.all());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_of_a_bucket_finds_an_object_replaced_behind_ferrys_back() {
    let tmp = tempfile::tempdir().expect("tmp");
    let src = tmp.path().join("src");
    write(&src.join("a.txt"), b"alpha");
    write(&src.join("b.txt"), b"bravo");
    write(&src.join("big.bin"), &vec![9u8; 17 << 20]);
    let bucket = s3::bucket("verify").await;
    let cfg = blob_task_file(tmp.path(), &format!("file://{}", src.display()), &s3::url(&bucket, "v", tmp.path()), "");
    let out = s3::ferry(&["run", "--once"], &cfg);
    assert!(out.status.success(), "{}", strip_ansi(&String::from_utf8_lossy(&out.stderr)));
    let out = s3::ferry(&["verify"], &cfg);
    assert!(out.status.success(), "the multipart ETag is recomputed: {}", String::from_utf8_lossy(&out.stdout));
    // Same size, new content, written by someone else.
    use rusty_s3::S3Action as _;
    let b = rusty_s3::Bucket::new(
        s3::endpoint().parse().expect("url"),
        rusty_s3::UrlStyle::Path,
        bucket.clone(),
        "us-east-1",
    )
    .expect("bucket");
    let creds = rusty_s3::Credentials::new("testing", "testing");
    let url = b.put_object(Some(&creds), "v/b.txt").sign(Duration::from_secs(600));
    let r = reqwest::Client::new().put(url).body("BRAVO").send().await.expect("put");
    assert!(r.status().is_success(), "{:?}", r.text().await);
    for mode in [&["verify", "--quick"][..], &["verify"][..]] {
        let out = s3::ferry(mode, &cfg);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{mode:?}: {stdout}");
        assert_eq!(diffs(&stdout).len(), 1, "{mode:?}: {stdout}");
        assert!(stdout.contains("DIFF b.txt"), "{mode:?}: {stdout}");
    }
}
