//! Secrets (issue 15.2): `ferry check` warns (exit 0) about a task file holding a
//! password that other users can read; passwords never reach status, check or log
//! output; the metadata store and `--repair-sql` files are 0600; repair audit entries
//! name keys, not row contents.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use crate::support::{FerryRun, app_conn, create_db, ferry_within, task_file, wait_until};

const LIMIT: Duration = Duration::from_secs(60);
const PASSWORD: &str = "hunter2-secret";

/// A SQLite pair a -> b (`kv` with a row only a has, and one that differs) and an
/// unused MySQL endpoint whose URL holds [`PASSWORD`].
async fn setup(dir: &Path) -> std::path::PathBuf {
    let schema = "CREATE TABLE kv(k INTEGER PRIMARY KEY, v TEXT);";
    create_db(&dir.join("a.db"), &format!("{schema} INSERT INTO kv VALUES (1, 'row-content-one'), (2, 'two');")).await;
    create_db(&dir.join("b.db"), &format!("{schema} INSERT INTO kv VALUES (2, 'other');")).await;
    let path = task_file(dir, "one-way", "");
    let mut text = std::fs::read_to_string(&path).expect("task file");
    text.push_str(&format!("\n[[endpoint]]\nname = \"m\"\nurl = \"mysql://ferry:{PASSWORD}@127.0.0.1:1/shop\"\n"));
    std::fs::write(&path, text).expect("write");
    path
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode() & 0o777
}

#[tokio::test]
async fn check_warns_about_a_task_file_others_can_read_and_still_passes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = setup(dir.path()).await;
    let arg = config.to_str().expect("utf-8");
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let out = ferry_within(&["check", "--config", arg], LIMIT).await;
    assert_eq!(out.code, Some(0), "a warning refuses nothing: {}", out.all());
    assert!(out.stderr.contains("WARNING") && out.stderr.contains("chmod 600"), "{}", out.all());
    assert!(out.stderr.contains("endpoint(s) m"), "names the endpoint: {}", out.all());
    assert!(!out.all().contains(PASSWORD), "the warning does not print the password: {}", out.all());

    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let out = ferry_within(&["check", "--config", arg], LIMIT).await;
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(!out.stderr.contains("WARNING"), "a private file is fine: {}", out.all());
}

#[tokio::test]
async fn passwords_and_row_contents_stay_out_of_outputs_and_files_are_private() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = setup(dir.path()).await;
    let arg = config.to_str().expect("utf-8");

    // A run's log and the status afterwards.
    let log = dir.path().join("run.log");
    let mut run = FerryRun::start(&config, &log);
    let b = dir.path().join("b.db");
    wait_until(Duration::from_secs(30), "the run copies the rows", || {
        let b = b.clone();
        async move { crate::support::dump(&b, "kv", "k").await.len() == 2 }
    })
    .await;
    run.terminate();
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(!logged.contains(PASSWORD), "log: {logged}");
    let out = ferry_within(&["status", "--config", arg, "--format", "json"], LIMIT).await;
    assert!(!out.all().contains(PASSWORD), "status: {}", out.all());
    let meta = dir.path().join("meta.db");
    assert_eq!(mode(&meta), 0o600, "the metadata store is created 0600");

    // A difference behind ferry's back, repaired with a repair file.
    create_db(&dir.path().join("b.db"), "UPDATE kv SET v = 'changed-behind' WHERE k = 1;").await;
    let repair = dir.path().join("repair.sql");
    let out =
        ferry_within(&["verify", "--config", arg, "--repair-sql", repair.to_str().expect("utf-8"), "--repair"], LIMIT)
            .await;
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert_eq!(mode(&repair), 0o600, "the repair file holds row contents: 0600");
    let mut c = app_conn(&meta).await;
    let audit: Vec<(String, String)> =
        sqlx::query_as("SELECT action, detail FROM audit ORDER BY id").fetch_all(&mut c).await.expect("audit");
    sqlx::Connection::close(c).await.ok();
    let repairs: Vec<&String> = audit.iter().filter(|(a, _)| a == "verify.repair").map(|(_, d)| d).collect();
    assert_eq!(repairs.len(), 1, "{audit:?}");
    assert!(repairs[0].contains("key (1)"), "the key is recorded: {}", repairs[0]);
    for (_, detail) in &audit {
        assert!(!detail.contains("row-content-one") && !detail.contains("changed-behind"), "row content: {detail}");
        assert!(!detail.contains(PASSWORD), "password: {detail}");
    }
}
