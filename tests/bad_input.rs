//! Bad input: every broken task file or endpoint gets one clear message naming the
//! problem (with the line for file errors) and its fix, exit code 2, and nothing is
//! written anywhere — by `ferry check` and by `ferry run` alike. `ferry check` on a valid
//! setup never writes either.

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use sqlx::ConnectOptions;
use sqlx::sqlite::SqliteConnectOptions;

use crate::support::{create_db, ferry_within};

/// How long one `ferry check` or `ferry run` may take to refuse bad input.
const LIMIT: Duration = Duration::from_secs(30);

/// A valid one-way task file for a.db -> b.db (same shape as `support::task_file`).
const VALID: &str = r#"[node]
id = "test-node"
store = "sqlite://meta.db"

[[endpoint]]
name = "a"
site = "dc-a"
url = "sqlite://a.db"

[[endpoint]]
name = "b"
site = "dc-b"
url = "sqlite://b.db"

[[task]]
name = "t"
from = "a"
to = "b"
mode = "one-way"
tables = ["*"]
"#;

/// One file or folder as seen before and after a command.
#[derive(Debug, PartialEq, Eq)]
struct Entry {
    dir: bool,
    len: u64,
    modified: SystemTime,
    permissions: u32,
    content: u64,
}

/// Every path under `root` with its kind, size, mtime, mode and a hash of its bytes.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, Entry> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Entry>) {
        for e in std::fs::read_dir(dir).expect("list folder") {
            let path = e.expect("folder entry").path();
            let meta = std::fs::symlink_metadata(&path).expect("metadata");
            let content = if meta.is_file() {
                let mut h = DefaultHasher::new();
                std::fs::read(&path).expect("read file").hash(&mut h);
                h.finish()
            } else {
                0
            };
            use std::os::unix::fs::PermissionsExt;
            out.insert(
                path.strip_prefix(root).expect("under root").to_path_buf(),
                Entry {
                    dir: meta.is_dir(),
                    len: meta.len(),
                    modified: meta.modified().expect("mtime"),
                    permissions: meta.permissions().mode(),
                    content,
                },
            );
            if meta.is_dir() {
                walk(root, &path, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// Whether `path` is a file that starts with the SQLite header.
fn is_sqlite_file(path: &Path) -> bool {
    std::fs::read(path).map(|b| b.starts_with(b"SQLite format 3\0")).unwrap_or(false)
}

/// ferry's own objects (`ferry_*` tables, any trigger) in a SQLite file, opened read-only.
async fn ferry_objects(path: &Path) -> Vec<String> {
    let mut c = SqliteConnectOptions::new()
        .filename(path)
        .read_only(true)
        .disable_statement_logging()
        .connect()
        .await
        .expect("open sqlite file read-only");
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT type || ' ' || name FROM sqlite_schema WHERE name LIKE 'ferry%' OR type = 'trigger' ORDER BY name",
    )
    .fetch_all(&mut c)
    .await
    .expect("read sqlite_schema");
    sqlx::Connection::close(c).await.ok();
    names
}

/// 1-based line of the first line of `text` that equals `line` (trimmed).
fn line_of(text: &str, line: &str) -> usize {
    text.lines().position(|l| l.trim() == line).unwrap_or_else(|| panic!("fixture has no line {line:?}")) + 1
}

/// Replaces exactly one occurrence of `from` in the valid task file.
fn valid_with(from: &str, to: &str) -> String {
    assert_eq!(VALID.matches(from).count(), 1, "fixture edit {from:?} must be unique");
    VALID.replacen(from, to, 1)
}

/// a.db with table t (two rows) and b.db with an empty table t.
async fn databases(dir: &Path) {
    create_db(
        &dir.join("a.db"),
        "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t VALUES (1, 'one'), (2, 'two');",
    )
    .await;
    create_db(&dir.join("b.db"), "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);").await;
}

/// Writes the task file into `dir`.
fn write_config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("ferry.toml");
    std::fs::write(&path, text).expect("write task file");
    path
}

/// Runs `ferry check` and `ferry run` on the task file in `dir`; both must exit 2 with one
/// message that contains every string of `names` and a fix, without panicking, and must
/// leave every file in `dir` as it was, create no metadata store and add no ferry tables
/// or triggers to any database.
async fn assert_refused(dir: &Path, names: &[String]) {
    let config = dir.join("ferry.toml");
    let config = config.to_str().expect("utf-8 path");
    let before = snapshot(dir);
    for command in ["check", "run"] {
        let out = ferry_within(&[command, "--config", config], LIMIT).await;
        let all = out.all();
        assert_eq!(out.code, Some(2), "`ferry {command}` must exit 2 on bad input\n{all}");
        for name in names {
            assert!(
                out.stderr.contains(name.as_str()),
                "`ferry {command}`: stderr must name the problem ({name:?})\n{all}"
            );
        }
        assert!(out.stderr.contains("fix"), "`ferry {command}`: stderr must say how to fix it\n{all}");
        assert_eq!(
            out.stderr.matches("fix:").count(),
            1,
            "`ferry {command}`: one problem, one message with one fix\n{all}"
        );
        assert!(!all.contains("panicked"), "`ferry {command}` panicked\n{all}");
        assert!(!all.contains("RUST_BACKTRACE"), "`ferry {command}` printed a crash report\n{all}");
        assert_eq!(snapshot(dir), before, "`ferry {command}` changed files in {}\n{all}", dir.display());
    }
    assert!(!dir.join("meta.db").exists(), "the metadata store was created");
    assert!(!dir.join("ferry-meta.db").exists(), "a default metadata store was created");
    for db in ["a.db", "b.db"] {
        let path = dir.join(db);
        if is_sqlite_file(&path) {
            assert_eq!(ferry_objects(&path).await, Vec::<String>::new(), "ferry objects were added to {db}");
        }
    }
}

#[tokio::test]
async fn malformed_toml_names_the_line_and_exits_2() {
    let dir = tempfile::tempdir().expect("temp folder");
    databases(dir.path()).await;
    // An unterminated string, and a table header missing its closing bracket.
    for (from, to) in [("mode = \"one-way\"", "mode = \"one-way"), ("[[task]]", "[[task]")] {
        let text = valid_with(from, to);
        write_config(dir.path(), &text);
        let line = line_of(&text, to);
        assert_refused(dir.path(), &["ferry.toml".into(), format!("line {line}")]).await;
    }
}

#[tokio::test]
async fn unknown_key_is_named_with_its_line_and_exits_2() {
    let dir = tempfile::tempdir().expect("temp folder");
    databases(dir.path()).await;
    for (from, to, key) in [
        ("tables = [\"*\"]", "tables = [\"*\"]\ncolour = \"red\"", "colour"),
        ("store = \"sqlite://meta.db\"", "stroe = \"sqlite://meta.db\"", "stroe"),
        ("site = \"dc-b\"", "sight = \"dc-b\"", "sight"),
    ] {
        let text = valid_with(from, to);
        write_config(dir.path(), &text);
        let line = line_of(&text, to.lines().last().expect("edit"));
        assert_refused(dir.path(), &["ferry.toml".into(), format!("line {line}"), format!("`{key}`")]).await;
    }
}

#[tokio::test]
async fn unknown_endpoint_name_is_named_with_its_line_and_exits_2() {
    let dir = tempfile::tempdir().expect("temp folder");
    databases(dir.path()).await;
    for (from, to, name) in [("to = \"b\"", "to = \"c\"", "c"), ("from = \"a\"", "from = \"dc-a\"", "dc-a")] {
        let text = valid_with(from, to);
        write_config(dir.path(), &text);
        let line = line_of(&text, to);
        assert_refused(
            dir.path(),
            &[format!("ferry.toml:{line}:"), format!("endpoint \"{name}\""), "not defined".into()],
        )
        .await;
    }
}

#[tokio::test]
async fn table_without_primary_key_is_named_and_exits_2() {
    let dir = tempfile::tempdir().expect("temp folder");
    databases(dir.path()).await;
    create_db(&dir.path().join("a.db"), "CREATE TABLE nokey(x TEXT, y TEXT); INSERT INTO nokey VALUES ('p', 'q');")
        .await;
    write_config(dir.path(), VALID);
    assert_refused(dir.path(), &["nokey".into(), "primary key".into()]).await;
}

#[tokio::test]
async fn missing_database_file_is_named_and_exits_2() {
    let dir = tempfile::tempdir().expect("temp folder");
    databases(dir.path()).await;
    for (from, to, file) in [
        ("url = \"sqlite://a.db\"", "url = \"sqlite://missing-a.db\"", "missing-a.db"),
        ("url = \"sqlite://b.db\"", "url = \"sqlite://missing-b.db\"", "missing-b.db"),
        ("url = \"sqlite://b.db\"", "url = \"sqlite://no-such-folder/b.db\"", "no-such-folder/b.db"),
    ] {
        write_config(dir.path(), &valid_with(from, to));
        assert_refused(dir.path(), &[file.into(), "does not exist".into()]).await;
        assert!(!dir.path().join(file).exists(), "{file} was created");
    }
}

#[tokio::test]
async fn database_file_that_is_not_sqlite_is_named_and_exits_2() {
    // Tests run as root, where chmod 000 does not stop reading: a file that exists but is
    // not a SQLite database stands in for an unreadable one.
    let dir = tempfile::tempdir().expect("temp folder");
    databases(dir.path()).await;
    write_config(dir.path(), VALID);
    for db in ["a.db", "b.db"] {
        let path = dir.path().join(db);
        let saved = std::fs::read(&path).expect("read database");
        std::fs::write(&path, "these are notes, not a database\nq9Zk2 7fLx0 mPw3v 8dRt1\n".repeat(40))
            .expect("write junk");
        assert_refused(dir.path(), &[db.to_string(), "not a database".into()]).await;
        std::fs::write(&path, saved).expect("restore database");
    }
}

#[tokio::test]
async fn database_path_that_is_a_folder_is_named_and_exits_2() {
    let dir = tempfile::tempdir().expect("temp folder");
    databases(dir.path()).await;
    write_config(dir.path(), VALID);
    for db in ["a.db", "b.db"] {
        let path = dir.path().join(db);
        let saved = std::fs::read(&path).expect("read database");
        std::fs::remove_file(&path).expect("remove database");
        std::fs::create_dir(&path).expect("folder in place of the database");
        assert_refused(dir.path(), &[db.to_string(), "directory".into()]).await;
        std::fs::remove_dir(&path).expect("remove folder");
        std::fs::write(&path, saved).expect("restore database");
    }
}

#[tokio::test]
async fn duplicate_task_names_are_named_with_the_line_and_exit_2() {
    let dir = tempfile::tempdir().expect("temp folder");
    databases(dir.path()).await;
    let text = format!("{VALID}\n[[task]]\nname = \"t\"\nfrom = \"b\"\nto = \"a\"\n");
    write_config(dir.path(), &text);
    let lines: Vec<&str> = text.lines().collect();
    let second = lines.iter().rposition(|l| l.trim() == "name = \"t\"").expect("second task") + 1;
    assert!(second > line_of(&text, "name = \"t\""), "fixture has two tasks named t");
    assert_refused(dir.path(), &[format!("ferry.toml:{second}:"), "task \"t\"".into(), "defined twice".into()]).await;
}

#[tokio::test]
async fn same_endpoint_as_from_and_to_is_named_with_the_line_and_exits_2() {
    let dir = tempfile::tempdir().expect("temp folder");
    databases(dir.path()).await;
    let text = valid_with("to = \"b\"", "to = \"a\"");
    write_config(dir.path(), &text);
    let line = line_of(&text, "to = \"a\"");
    assert_refused(dir.path(), &[format!("ferry.toml:{line}:"), "same endpoint \"a\"".into()]).await;
}

#[tokio::test]
async fn check_on_a_valid_setup_reports_the_task_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("temp folder");
    databases(dir.path()).await;
    let config = write_config(dir.path(), VALID);
    let before = snapshot(dir.path());
    let out = ferry_within(&["check", "--config", config.to_str().expect("utf-8 path")], LIMIT).await;
    let all = out.all();
    assert_eq!(out.code, Some(0), "{all}");
    assert!(out.stdout.contains("valid (2 endpoint(s), 1 task(s))"), "{all}");
    assert!(out.stdout.contains("task t: one-way a -> b"), "{all}");
    assert!(out.stdout.contains("1 table(s): t"), "{all}");
    assert!(!out.stderr.contains("PROBLEM"), "{all}");
    assert!(!all.contains("panicked"), "{all}");
    assert_eq!(snapshot(dir.path()), before, "`ferry check` changed files\n{all}");
    assert!(!dir.path().join("meta.db").exists(), "`ferry check` created the metadata store");
    for db in ["a.db", "b.db"] {
        assert_eq!(ferry_objects(&dir.path().join(db)).await, Vec::<String>::new(), "ferry objects in {db}");
    }
}
