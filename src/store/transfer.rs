//! `ferry store export` / `import`: the metadata store as a file of JSON lines, so a
//! node's audit log, cutover state, task directions, skips and last statuses can move
//! with its tasks to another node (docs/store-export.md describes the format).
//!
//! Line 1 is the header (`format`, the store's schema version, the node, when); every
//! other line is one row: `{"table": "...", "row": {...}}`. URL passwords are masked in
//! every text written. Import runs in one transaction: audit entries are appended
//! (those already present skipped), status rows keep the newer of the two, and the other
//! keyed rows (cutover, task_direction, skip) are added when their key is new; a key
//! the store already holds with other contents refuses the whole import unless `force`,
//! which lets the file's row replace it.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sqlx::Row as _;

use super::{Store, StoreError};
use crate::connector::endpoint::mask_passwords_in_text;
use crate::model::now_micros;

/// The export format this ferry writes; import refuses newer ones.
pub const FORMAT: u32 = 1;

/// Why an export or import failed, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// The file could not be read or written.
    #[error("{path}: {source}\n  fix: check the path and that this user may read/write it")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A line is not what `ferry store export` writes.
    #[error("{path} line {line}: {problem}\n  fix: import only a file written by `ferry store export`, unedited")]
    Format {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        problem: String,
    },
    /// Written by a newer ferry.
    #[error(
        "{path}: export format version {found}, but this ferry reads versions up to {supported}\n  fix: import it with the ferry release that exported it, or a newer one"
    )]
    NewerFormat {
        /// The file.
        path: PathBuf,
        /// The file's version.
        found: u32,
        /// The newest this binary reads.
        supported: u32,
    },
    /// The store holds other state under keys the file holds too.
    #[error(
        "{path}: the store already holds other state for {count} key(s) the file holds too: {keys}; nothing was imported\n  fix: pass --force to let the file's rows replace them"
    )]
    Conflicts {
        /// The file.
        path: PathBuf,
        /// How many keys.
        count: usize,
        /// The first few, as `table key`.
        keys: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Line 1 of an export.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Header {
    /// The export format version ([`FORMAT`]).
    pub format: u32,
    /// The store's schema version when exported.
    pub schema: i64,
    /// `[node] id` of the exporting node.
    pub node: String,
    /// When (µs since the epoch).
    pub exported_us: i64,
    /// ferry's version.
    pub ferry: String,
}

/// One row of the store, tagged by its table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "table", content = "row", rename_all = "snake_case")]
pub enum Record {
    /// An audit entry.
    Audit {
        /// µs since the epoch.
        at_us: i64,
        /// Who.
        actor: String,
        /// What.
        action: String,
        /// Which task.
        task: Option<String>,
        /// Details.
        detail: String,
    },
    /// A direction's last known status (JSON text, as stored).
    DirectionStatus {
        /// Task.
        task: String,
        /// `from->to`.
        direction: String,
        /// The status JSON.
        status: String,
        /// When saved.
        updated_us: i64,
    },
    /// A transaction to skip.
    Skip {
        /// Task.
        task: String,
        /// `from->to`.
        direction: String,
        /// The source position.
        position: String,
        /// Who asked.
        actor: String,
        /// When.
        at_us: i64,
    },
    /// A task's cutover state (JSON text).
    Cutover {
        /// Task.
        task: String,
        /// The state JSON.
        state: String,
        /// When saved.
        updated_us: i64,
    },
    /// The direction a cutover set for a task.
    TaskDirection {
        /// Task.
        task: String,
        /// Source endpoint.
        from_endpoint: String,
        /// Target endpoint.
        to_endpoint: String,
        /// Since when.
        since_us: i64,
    },
}

/// What an import did.
#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct Imported {
    /// Rows added.
    pub added: usize,
    /// Rows replaced (newer status, or `force`).
    pub replaced: usize,
    /// Rows already there as they are in the file (or older statuses).
    pub unchanged: usize,
}

fn mask(s: &str) -> String {
    mask_passwords_in_text(s).0
}

impl Store {
    fn io(&self, path: &Path) -> impl FnOnce(std::io::Error) -> TransferError + '_ {
        let path = path.to_path_buf();
        move |source| TransferError::Io { path, source }
    }

    /// Every row of the store, passwords masked, oldest audit entry first.
    async fn records(&self) -> Result<Vec<Record>, StoreError> {
        let q = |sql: &'static str, what: &'static str| async move {
            sqlx::query(sql).fetch_all(&self.pool).await.map_err(self.err(what))
        };
        let mut out = Vec::new();
        for r in
            q("SELECT at_us, actor, action, task, detail FROM audit ORDER BY id", "exporting the audit log").await?
        {
            out.push(Record::Audit {
                at_us: r.get(0),
                actor: mask(r.get(1)),
                action: r.get(2),
                task: r.get(3),
                detail: mask(r.get(4)),
            });
        }
        let sql = "SELECT task, direction, status, updated_us FROM direction_status ORDER BY task, direction";
        for r in q(sql, "exporting the statuses").await? {
            out.push(Record::DirectionStatus {
                task: r.get(0),
                direction: r.get(1),
                status: mask(r.get(2)),
                updated_us: r.get(3),
            });
        }
        let sql = "SELECT task, direction, position, actor, at_us FROM skip ORDER BY task, direction, position";
        for r in q(sql, "exporting the skips").await? {
            out.push(Record::Skip {
                task: r.get(0),
                direction: r.get(1),
                position: r.get(2),
                actor: r.get(3),
                at_us: r.get(4),
            });
        }
        for r in q("SELECT task, state, updated_us FROM cutover ORDER BY task", "exporting the cutover states").await? {
            out.push(Record::Cutover { task: r.get(0), state: mask(r.get(1)), updated_us: r.get(2) });
        }
        let sql = "SELECT task, from_endpoint, to_endpoint, since_us FROM task_direction ORDER BY task";
        for r in q(sql, "exporting the task directions").await? {
            out.push(Record::TaskDirection {
                task: r.get(0),
                from_endpoint: r.get(1),
                to_endpoint: r.get(2),
                since_us: r.get(3),
            });
        }
        Ok(out)
    }

    /// Writes the whole store to `path` (0600, replaced if there); the number of rows.
    pub async fn export(&self, path: &Path, node: &str) -> Result<usize, TransferError> {
        let records = self.records().await?;
        let header = Header {
            format: FORMAT,
            schema: super::migrate::LATEST,
            node: node.to_string(),
            exported_us: now_micros(),
            ferry: env!("CARGO_PKG_VERSION").to_string(),
        };
        let mut text = json_line(&header);
        for r in &records {
            text.push_str(&json_line(r));
        }
        super::write_private(path, text.as_bytes()).map_err(self.io(path))?;
        Ok(records.len())
    }

    /// Reads `path` and merges it into the store (module docs); refuses a newer format
    /// and, unless `force`, keys the store holds with other contents.
    pub async fn import(&self, path: &Path, force: bool) -> Result<Imported, TransferError> {
        let records = read_file(path)?;
        let mut tx = self.pool.begin().await.map_err(self.err("starting the import"))?;
        let mut done = Imported::default();
        let mut conflicts = Vec::new();
        for r in &records {
            let (present, key) = existing(&mut tx, r).await.map_err(self.err("reading the store to import"))?;
            match present {
                Presence::Absent => {
                    insert(&mut tx, r).await.map_err(self.err("importing a row"))?;
                    done.added += 1;
                }
                Presence::Same => done.unchanged += 1,
                Presence::Older => {
                    insert(&mut tx, r).await.map_err(self.err("importing a row"))?;
                    done.replaced += 1;
                }
                Presence::Newer => done.unchanged += 1,
                Presence::Different if force => {
                    insert(&mut tx, r).await.map_err(self.err("importing a row"))?;
                    done.replaced += 1;
                }
                Presence::Different => conflicts.push(key),
            }
        }
        if !conflicts.is_empty() {
            // Dropping the transaction rolls every row back.
            let keys = conflicts.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
            return Err(TransferError::Conflicts { path: path.to_path_buf(), count: conflicts.len(), keys });
        }
        tx.commit().await.map_err(self.err("committing the import"))?;
        Ok(done)
    }
}

/// A header or a record as one JSON line.
fn json_line(v: &impl Serialize) -> String {
    // Plain structs of strings and integers always serialise.
    let mut line = serde_json::to_string(v).unwrap_or_default();
    line.push('\n');
    line
}

/// The rows of an export file, its header checked.
pub fn read_file(path: &Path) -> Result<Vec<Record>, TransferError> {
    let io = |source| TransferError::Io { path: path.to_path_buf(), source };
    let file = std::fs::File::open(path).map_err(io)?;
    let bad = |line: usize, problem: String| TransferError::Format { path: path.to_path_buf(), line, problem };
    let mut records = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|source| TransferError::Io { path: path.to_path_buf(), source })?;
        if i == 0 {
            // The version first: a newer header may not parse as this one.
            let v: serde_json::Value =
                serde_json::from_str(&line).map_err(|e| bad(1, format!("not a ferry store export header: {e}")))?;
            let found = v
                .get("format")
                .and_then(serde_json::Value::as_u64)
                .ok_or_else(|| bad(1, "not a ferry store export header: no \"format\" version".into()))?;
            let found = u32::try_from(found).unwrap_or(u32::MAX);
            if found > FORMAT {
                return Err(TransferError::NewerFormat { path: path.to_path_buf(), found, supported: FORMAT });
            }
            serde_json::from_value::<Header>(v).map_err(|e| bad(1, format!("header: {e}")))?;
            continue;
        }
        if line.trim().is_empty() {
            continue;
        }
        records.push(serde_json::from_str(&line).map_err(|e| bad(i + 1, e.to_string()))?);
    }
    if records.is_empty() && std::fs::metadata(path).map(|m| m.len()).unwrap_or(0) == 0 {
        return Err(bad(1, "the file is empty".into()));
    }
    Ok(records)
}

/// How a row of the file stands against the store.
enum Presence {
    /// Its key is not in the store.
    Absent,
    /// The store holds it as it is.
    Same,
    /// The store holds an older status for it.
    Older,
    /// The store holds a newer status for it.
    Newer,
    /// The store holds other contents under its key.
    Different,
}

type Tx<'a> = sqlx::Transaction<'a, sqlx::Sqlite>;

/// Whether the store holds `r` (by key), and the key as `table key` for messages.
async fn existing(tx: &mut Tx<'_>, r: &Record) -> Result<(Presence, String), sqlx::Error> {
    let same = |found: bool, equal: bool| match (found, equal) {
        (false, _) => Presence::Absent,
        (true, true) => Presence::Same,
        (true, false) => Presence::Different,
    };
    Ok(match r {
        Record::Audit { at_us, actor, action, task, detail } => {
            let n: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM audit WHERE at_us = ?1 AND actor = ?2 AND action = ?3 AND task IS ?4 AND detail = ?5",
            )
            .bind(at_us)
            .bind(actor)
            .bind(action)
            .bind(task)
            .bind(detail)
            .fetch_one(&mut **tx)
            .await?;
            (if n > 0 { Presence::Same } else { Presence::Absent }, format!("audit {at_us}"))
        }
        Record::DirectionStatus { task, direction, status, updated_us } => {
            let row: Option<(String, i64)> =
                sqlx::query_as("SELECT status, updated_us FROM direction_status WHERE task = ?1 AND direction = ?2")
                    .bind(task)
                    .bind(direction)
                    .fetch_optional(&mut **tx)
                    .await?;
            let p = match row {
                None => Presence::Absent,
                Some((s, _)) if s == *status => Presence::Same,
                Some((_, at)) if at < *updated_us => Presence::Older,
                Some(_) => Presence::Newer,
            };
            (p, format!("direction_status {task} {direction}"))
        }
        Record::Skip { task, direction, position, .. } => {
            let n: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM skip WHERE task = ?1 AND direction = ?2 AND position = ?3")
                    .bind(task)
                    .bind(direction)
                    .bind(position)
                    .fetch_one(&mut **tx)
                    .await?;
            // A skip is its key: present means the same.
            (if n > 0 { Presence::Same } else { Presence::Absent }, format!("skip {task} {direction} {position}"))
        }
        Record::Cutover { task, state, .. } => {
            let found: Option<String> = sqlx::query_scalar("SELECT state FROM cutover WHERE task = ?1")
                .bind(task)
                .fetch_optional(&mut **tx)
                .await?;
            (same(found.is_some(), found.as_deref() == Some(state)), format!("cutover {task}"))
        }
        Record::TaskDirection { task, from_endpoint, to_endpoint, .. } => {
            let found: Option<(String, String)> =
                sqlx::query_as("SELECT from_endpoint, to_endpoint FROM task_direction WHERE task = ?1")
                    .bind(task)
                    .fetch_optional(&mut **tx)
                    .await?;
            let equal = found.as_ref().is_some_and(|(f, t)| f == from_endpoint && t == to_endpoint);
            (same(found.is_some(), equal), format!("task_direction {task}"))
        }
    })
}

/// Writes `r`, over the row under its key (the caller decided it may).
async fn insert(tx: &mut Tx<'_>, r: &Record) -> Result<(), sqlx::Error> {
    match r {
        Record::Audit { at_us, actor, action, task, detail } => {
            sqlx::query("INSERT INTO audit(at_us, actor, action, task, detail) VALUES (?1, ?2, ?3, ?4, ?5)")
                .bind(at_us)
                .bind(actor)
                .bind(action)
                .bind(task)
                .bind(detail)
                .execute(&mut **tx)
                .await?;
        }
        Record::DirectionStatus { task, direction, status, updated_us } => {
            let sql =
                "INSERT OR REPLACE INTO direction_status(task, direction, status, updated_us) VALUES (?1, ?2, ?3, ?4)";
            sqlx::query(sql).bind(task).bind(direction).bind(status).bind(updated_us).execute(&mut **tx).await?;
        }
        Record::Skip { task, direction, position, actor, at_us } => {
            sqlx::query(
                "INSERT OR IGNORE INTO skip(task, direction, position, actor, at_us) VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .bind(task)
            .bind(direction)
            .bind(position)
            .bind(actor)
            .bind(at_us)
            .execute(&mut **tx)
            .await?;
        }
        Record::Cutover { task, state, updated_us } => {
            let sql = "INSERT OR REPLACE INTO cutover(task, state, updated_us) VALUES (?1, ?2, ?3)";
            sqlx::query(sql).bind(task).bind(state).bind(updated_us).execute(&mut **tx).await?;
        }
        Record::TaskDirection { task, from_endpoint, to_endpoint, since_us } => {
            let sql = "INSERT OR REPLACE INTO task_direction(task, from_endpoint, to_endpoint, since_us) VALUES (?1, ?2, ?3, ?4)";
            sqlx::query(sql).bind(task).bind(from_endpoint).bind(to_endpoint).bind(since_us).execute(&mut **tx).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store with a row in every table, a password in an audit detail and a cutover.
    async fn populated(path: &Path) -> Store {
        let store = Store::open(path, true).await.expect("open");
        store.audit("op@n1", "run.start", Some("orders"), "from mysql://ferry:s3cret@db-a:3306").await.expect("audit");
        store.audit("op@n1", "task.pause", Some("orders"), "paused").await.expect("audit");
        store.save_cutover("orders", r#"{"step":"Verify","url":"mysql://u:s3cret@h"}"#).await.expect("cutover");
        store.set_direction("orders", Some(("b", "a"))).await.expect("direction");
        sqlx::query(
            "INSERT INTO skip(task, direction, position, actor, at_us) VALUES ('orders', 'a->b', 'x:1', 'op@n1', 3)",
        )
        .execute(&store.pool)
        .await
        .expect("skip");
        sqlx::query(
            "INSERT INTO direction_status(task, direction, status, updated_us) VALUES ('orders', 'a->b', '{}', 5)",
        )
        .execute(&store.pool)
        .await
        .expect("status");
        store
    }

    #[tokio::test]
    async fn an_export_imports_into_an_empty_store_as_it_was_without_passwords() {
        let dir = tempfile::tempdir().expect("tempdir");
        let old = populated(&dir.path().join("old.db")).await;
        let file = dir.path().join("meta.jsonl");
        let n = old.export(&file, "n1").await.expect("export");
        let text = std::fs::read_to_string(&file).expect("read");
        assert!(!text.contains("s3cret"), "a password in the export:\n{text}");
        assert_eq!(text.lines().count(), n + 1, "a header and one line per row");
        let header: Header = serde_json::from_str(text.lines().next().unwrap_or_default()).expect("header");
        assert_eq!((header.format, header.node.as_str()), (FORMAT, "n1"));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&file).expect("meta").permissions().mode() & 0o777, 0o600);

        let new = Store::open(&dir.path().join("new.db"), true).await.expect("open");
        let done = new.import(&file, false).await.expect("import");
        assert_eq!(done, Imported { added: n, replaced: 0, unchanged: 0 });
        assert_eq!(new.records().await.expect("rows"), old.records().await.expect("rows"));
        assert_eq!(new.direction("orders").await.expect("dir"), Some(("b".into(), "a".into())));
        assert!(new.load_cutover("orders").await.expect("cutover").is_some_and(|c| c.contains("Verify")));
        // Importing again changes nothing.
        let again = new.import(&file, false).await.expect("import again");
        assert_eq!(again, Imported { added: 0, replaced: 0, unchanged: n });
        assert_eq!(new.audit_log(100).await.expect("audit").len(), 2);
    }

    #[tokio::test]
    async fn other_state_under_the_same_key_is_kept_unless_forced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let old = populated(&dir.path().join("old.db")).await;
        let file = dir.path().join("meta.jsonl");
        old.export(&file, "n1").await.expect("export");
        let new = Store::open(&dir.path().join("new.db"), true).await.expect("open");
        new.save_cutover("orders", r#"{"step":"Done"}"#).await.expect("cutover");
        new.audit("op@n2", "run.start", None, "n2's own").await.expect("audit");

        let refused = new.import(&file, false).await.expect_err("a conflicting cutover");
        assert!(refused.to_string().contains("cutover orders") && refused.to_string().contains("--force"), "{refused}");
        assert_eq!(new.audit_log(100).await.expect("audit").len(), 1, "nothing imported");
        assert_eq!(new.direction("orders").await.expect("dir"), None, "nothing imported");

        let done = new.import(&file, true).await.expect("forced");
        assert_eq!(done.replaced, 1, "{done:?}");
        assert!(new.load_cutover("orders").await.expect("cutover").is_some_and(|c| c.contains("Verify")));
        assert_eq!(new.audit_log(100).await.expect("audit").len(), 3, "both nodes' entries");
    }

    #[tokio::test]
    async fn a_newer_format_or_another_file_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("m.db"), true).await.expect("open");
        let newer = dir.path().join("newer.jsonl");
        std::fs::write(&newer, format!("{{\"format\":{},\"later\":true}}\n", FORMAT + 1)).expect("write");
        let e = store.import(&newer, true).await.expect_err("newer");
        assert!(matches!(e, TransferError::NewerFormat { found, .. } if found == FORMAT + 1), "{e}");
        let other = dir.path().join("other.jsonl");
        std::fs::write(&other, "id,name\n1,x\n").expect("write");
        let e = store.import(&other, false).await.expect_err("not an export");
        assert!(matches!(e, TransferError::Format { line: 1, .. }), "{e}");
    }
}
