//! `ferry verify` on blob tasks: every differing path is named; `--quick` compares size
//! and mtime (files) or the manifest against the ETag (objects), full mode compares
//! content (a bucket's ETag stands for its content where ferry can recompute it, else
//! both sides are read); `--repair` makes the target equal; `--manifest` writes a file
//! `md5sum -c` accepts in the target.

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
    put_object(&bucket, "v/b.txt", b"BRAVO").await;
    for mode in [&["verify", "--quick"][..], &["verify"][..]] {
        let out = s3::ferry(mode, &cfg);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{mode:?}: {stdout}");
        assert_eq!(diffs(&stdout).len(), 1, "{mode:?}: {stdout}");
        assert!(stdout.contains("DIFF b.txt"), "{mode:?}: {stdout}");
    }
}

/// The test's S3 bucket handle and credentials (writes "by someone else").
fn other_writer(bucket: &str) -> (rusty_s3::Bucket, rusty_s3::Credentials) {
    let b = rusty_s3::Bucket::new(
        s3::endpoint().parse().expect("url"),
        rusty_s3::UrlStyle::Path,
        bucket.to_string(),
        "us-east-1",
    )
    .expect("bucket");
    (b, rusty_s3::Credentials::new("testing", "testing"))
}

/// Writes an object with one PUT, as another tool would.
async fn put_object(bucket: &str, key: &str, data: &[u8]) {
    use rusty_s3::S3Action as _;
    let (b, creds) = other_writer(bucket);
    let url = b.put_object(Some(&creds), key).sign(Duration::from_secs(600));
    let r = reqwest::Client::new().put(url).body(data.to_vec()).send().await.expect("put");
    assert!(r.status().is_success(), "{:?}", r.text().await);
}

/// Uploads `data` as a multipart upload of `part`-byte parts, as another tool would.
async fn put_multipart(bucket: &str, key: &str, data: &[u8], part: usize) {
    use rusty_s3::S3Action as _;
    let (b, creds) = other_writer(bucket);
    let http = reqwest::Client::new();
    let ttl = Duration::from_secs(600);
    let r = http.post(b.create_multipart_upload(Some(&creds), key).sign(ttl)).send().await.expect("create");
    let body = r.text().await.expect("body");
    let created = rusty_s3::actions::CreateMultipartUpload::parse_response(&body).expect("upload id");
    let id = created.upload_id();
    let mut etags = Vec::new();
    for (i, chunk) in data.chunks(part).enumerate() {
        let url = b.upload_part(Some(&creds), key, (i + 1) as u16, id).sign(ttl);
        let r = http.put(url).body(chunk.to_vec()).send().await.expect("part");
        assert!(r.status().is_success(), "part {}: {:?}", i + 1, r.status());
        etags.push(r.headers().get("etag").and_then(|e| e.to_str().ok()).expect("part etag").to_string());
    }
    let action = b.complete_multipart_upload(Some(&creds), key, id, etags.iter().map(String::as_str));
    let url = action.sign(ttl);
    let r = http.post(url).body(action.body()).send().await.expect("complete");
    assert!(r.status().is_success(), "complete: {:?}", r.text().await);
}

/// `ferry verify --format json --task TASK`: exit code and the task's blob report.
fn verify_json(cfg: &std::path::Path, task: &str) -> (Option<i32>, serde_json::Value) {
    let out = s3::ferry(&["verify", "--format", "json", "--task", task], cfg);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", strip_ansi(&String::from_utf8_lossy(&out.stderr))));
    (out.status.code(), doc["blob_tasks"][0].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_verify_takes_a_buckets_etag_for_its_content_and_reads_the_bytes_when_it_does_not_match() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (src, back) = (tmp.path().join("src"), tmp.path().join("back"));
    let mut rng = fastrand::Rng::with_seed(18);
    let big: Vec<u8> = std::iter::repeat_with(|| rng.u8(..)).take((17 << 20) + 5).collect();
    write(&src.join("a.txt"), b"alpha");
    write(&src.join("b.txt"), b"bravo");
    write(&src.join("big.bin"), &big);
    let (b1, b2) = (s3::bucket("etag-up").await, s3::bucket("etag-across").await);
    let cfg = tmp.path().join("task.toml");
    let ep = |name: &str, url: String| format!("[[endpoint]]\nname = \"{name}\"\nurl = \"{url}\"\n\n");
    let task =
        |name: &str, from: &str, to: &str| format!("[[task]]\nname = \"{name}\"\nfrom = \"{from}\"\nto = \"{to}\"\n\n");
    let text = format!(
        "[node]\nid = \"t\"\nstore = \"sqlite://{}\"\n\n{}{}{}{}{}{}{}",
        tmp.path().join("meta.db").display(),
        ep("dir", format!("file://{}", src.display())),
        ep("b1", s3::url(&b1, "v", tmp.path())),
        ep("b2", s3::url(&b2, "w", tmp.path())),
        ep("back", format!("file://{}", back.display())),
        task("up", "dir", "b1"),
        task("across", "b1", "b2"),
        task("down", "b1", "back"),
    );
    std::fs::write(&cfg, text).expect("task file");
    for t in ["up", "across", "down"] {
        let out = s3::ferry(&["run", "--once", "--task", t], &cfg);
        assert!(out.status.success(), "{t}: {}", strip_ansi(&String::from_utf8_lossy(&out.stderr)));
    }
    let total = (5 + 5 + big.len()) as u64;
    // A folder against a bucket: the folder alone is read, every object (the 17 MiB one
    // a 3-part multipart upload of ferry's) proven by its ETag.
    for t in ["up", "down"] {
        let (code, r) = verify_json(&cfg, t);
        assert_eq!(code, Some(0), "{t}: {r}");
        assert_eq!((r["by_etag"].as_u64(), r["etag_fallbacks"].as_u64()), (Some(3), Some(0)), "{t}: {r}");
        assert_eq!(r["bytes_read"].as_u64(), Some(total), "{t}: one side read: {r}");
    }
    // Two buckets stating the same content hashes: nothing read.
    let (code, r) = verify_json(&cfg, "across");
    assert_eq!(code, Some(0), "{r}");
    assert_eq!((r["by_etag"].as_u64(), r["bytes_read"].as_u64()), (Some(3), Some(0)), "{r}");
    // The source's MD5s for md5sum come from the bucket's ETags (the multipart one from
    // the folder's bytes, found equal).
    let sums = tmp.path().join("down.md5");
    let out = s3::ferry(&["verify", "--task", "down", "--manifest", sums.to_str().expect("utf-8")], &cfg);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let check = std::process::Command::new("md5sum").args(["-c", "--quiet"]).arg(&sums).current_dir(&back).output();
    assert!(check.expect("md5sum runs").status.success(), "md5sum -c of the manifest passes in the folder");
    assert_eq!(std::fs::read_to_string(&sums).expect("manifest").lines().count(), 3);

    // Behind ferry's back, in the bucket: b.txt rewritten with the same size; two
    // objects uploaded by another tool in 5 MiB parts (4 parts, where ferry's 8 MiB parts
    // make 3: an ETag ferry cannot recompute), one equal to the folder's file, one not.
    put_object(&b1, "v/b.txt", b"BRAVO").await;
    write(&src.join("foreign_same.bin"), &big);
    write(&src.join("foreign_diff.bin"), &big);
    let mut changed = big.clone();
    changed[(9 << 20) + 1] ^= 1;
    put_multipart(&b1, "v/foreign_same.bin", &big, 5 << 20).await;
    put_multipart(&b1, "v/foreign_diff.bin", &changed, 5 << 20).await;
    let (code, r) = verify_json(&cfg, "up");
    assert_eq!(code, Some(1), "{r}");
    let found: Vec<String> = r["differences"]
        .as_array()
        .expect("differences")
        .iter()
        .map(|d| format!("{}: {}", d["path"].as_str().unwrap_or(""), d["reason"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(
        found,
        ["b.txt: content differs (MD5)", "foreign_diff.bin: content differs (BLAKE3)"],
        "the same-size change is found by content, the foreign multipart object equal to the folder's file is not reported: {r}"
    );
    // a.txt and big.bin by ETag; b.txt (ETag not matching) and both foreign objects read.
    assert_eq!((r["by_etag"].as_u64(), r["etag_fallbacks"].as_u64()), (Some(2), Some(3)), "{r}");
    let text = s3::ferry(&["verify", "--task", "up"], &cfg);
    let stdout = String::from_utf8_lossy(&text.stdout);
    assert!(stdout.contains("2 by a bucket's ETag, 3 read on both sides"), "{stdout}");
}
