//! A blob target's own state — lease, checkpoint and manifest per direction — in one
//! SQLite file: `.ferry/state.db` inside a folder target, a local file for a bucket.
//! A step that makes a blob visible runs inside an IMMEDIATE transaction that first
//! checks the lease still carries the writer's fencing token: a takeover needs the same
//! write lock, so none can come between the check, the rename and the manifest line.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::Row as _;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection};

use super::{BlobCheckpoint, BlobHashes, ManifestEntry};
use crate::connector::registry::TargetState;
use crate::connector::sqlite::state;
use crate::connector::{ConnectorError, DirectionId, LeaseHolder, LeaseOutcome};
use crate::model::now_micros;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS ferry_lease(task TEXT NOT NULL, direction TEXT NOT NULL, node TEXT NOT NULL,
  host TEXT NOT NULL, pid INTEGER NOT NULL, expires_us INTEGER NOT NULL, fencing INTEGER NOT NULL,
  PRIMARY KEY(task, direction));
CREATE TABLE IF NOT EXISTS ferry_blob_checkpoint(task TEXT NOT NULL, direction TEXT NOT NULL, body TEXT NOT NULL,
  updated_us INTEGER NOT NULL, PRIMARY KEY(task, direction));
CREATE TABLE IF NOT EXISTS ferry_blob_manifest(task TEXT NOT NULL, direction TEXT NOT NULL, path TEXT NOT NULL,
  size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, mode INTEGER, blake3 TEXT, md5 TEXT, target TEXT,
  PRIMARY KEY(task, direction, path)) WITHOUT ROWID;
";

/// A state file in ferry's data folder on this machine, `<kind>/<name>-<hash of id>.db`:
/// where a target that cannot hold a SQLite file itself (a bucket, an SFTP server) keeps
/// its state.
pub fn local_path(kind: &str, name: &str, id: &str) -> PathBuf {
    let hash = blake3::hash(id.as_bytes()).to_hex();
    data_dir().join(kind).join(format!("{name}-{}.db", &hash.as_str()[..16]))
}

/// ferry's data folder on this machine (for what ferry keeps outside the endpoints).
pub fn data_dir() -> PathBuf {
    directories::ProjectDirs::from("", "", "ferry")
        .map(|d| d.data_local_dir().to_path_buf())
        .unwrap_or_else(|| std::env::temp_dir().join("ferry"))
}

/// The state file of one blob target.
pub struct BlobState {
    endpoint: String,
    path: PathBuf,
    conn: Option<SqliteConnection>,
}

impl BlobState {
    /// Opens (creating with `create`) the state file; `None` when it does not exist and
    /// `create` is false (a target that never ran).
    pub async fn open(endpoint: &str, path: &Path, create: bool) -> Result<Option<BlobState>, ConnectorError> {
        if !create && !path.exists() {
            return Ok(None);
        }
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(create)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(30))
            .disable_statement_logging();
        let mut conn = opts.connect().await.map_err(|source| ConnectorError::Open {
            endpoint: endpoint.to_string(),
            target: path.display().to_string(),
            source,
            fix: "ferry keeps this target's manifest, checkpoint and lease in that file: check that this user may \
                  read and write it and its folder"
                .into(),
        })?;
        if create {
            sqlx::raw_sql(SCHEMA).execute(&mut conn).await.map_err(|source| ConnectorError::Query {
                endpoint: endpoint.to_string(),
                what: format!("creating ferry's state in {}", path.display()),
                source,
            })?;
        }
        Ok(Some(BlobState { endpoint: endpoint.to_string(), path: path.to_path_buf(), conn: Some(conn) }))
    }

    /// Opens (creating it and its folder) a state file on this machine for a target
    /// that cannot hold it (see [`local_path`]); `scheme` names the URL whose `state=`
    /// parameter moves it.
    pub async fn open_local(endpoint: &str, path: &Path, scheme: &str) -> Result<BlobState, ConnectorError> {
        let fix = format!("set state=/path/to/file.db in the {scheme} URL to a folder this user may write");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| ConnectorError::Setup {
                endpoint: endpoint.to_string(),
                problem: format!("cannot create {}: {e}", dir.display()),
                fix: fix.clone(),
            })?;
        }
        BlobState::open(endpoint, path, true).await?.ok_or_else(|| ConnectorError::Setup {
            endpoint: endpoint.to_string(),
            problem: format!("ferry's state file {} could not be created", path.display()),
            fix,
        })
    }

    /// What `ferry status` and the cutover read of a direction in the state file at
    /// `path` (nothing when the target never ran); `kind` is the position's prefix.
    pub async fn target_state(
        endpoint: &str,
        path: &Path,
        dir: &DirectionId,
        kind: &str,
    ) -> Result<TargetState, ConnectorError> {
        let Some(mut st) = BlobState::open(endpoint, path, false).await? else {
            return Ok(TargetState::default());
        };
        let lease = st.lease_holder(dir).await.ok().flatten();
        let cp = st.load_checkpoint(dir).await.ok().flatten();
        st.close().await;
        let checkpoint = cp.as_ref().map(|cp| crate::connector::Checkpoint {
            position: Some(super::position(kind, cp)),
            tables: Default::default(),
        });
        Ok(TargetState { checkpoint, lease, blob: cp })
    }

    fn conn(&mut self) -> &mut SqliteConnection {
        // Always Some until drop.
        self.conn.as_mut().expect("state connection")
    }

    fn err(&self, what: &str) -> impl FnOnce(sqlx::Error) -> ConnectorError + use<> {
        let (endpoint, what) = (self.endpoint.clone(), format!("{what} (state file {})", self.path.display()));
        move |source| ConnectorError::Query { endpoint, what, source }
    }

    /// Opens an IMMEDIATE transaction in which the lease carries `fencing`, or answers
    /// [`ConnectorError::Fenced`] with nothing changed.
    pub async fn begin_fenced(&mut self, dir: &DirectionId, fencing: i64) -> Result<(), ConnectorError> {
        let e = self.err("taking the state file's write lock");
        sqlx::raw_sql("BEGIN IMMEDIATE").execute(self.conn()).await.map_err(e)?;
        let e = self.err("reading the lease");
        match state::check_fence(self.conn(), dir, fencing).await.map_err(e) {
            Ok(None) => Ok(()),
            other => {
                self.rollback().await;
                let holder = other?;
                Err(ConnectorError::Fenced {
                    endpoint: self.endpoint.clone(),
                    dir: dir.to_string(),
                    mine: fencing,
                    holder: holder.filter(|h| h.pid != 0).map(Box::new),
                })
            }
        }
    }

    /// Commits the open transaction.
    pub async fn commit(&mut self) -> Result<(), ConnectorError> {
        let e = self.err("committing");
        sqlx::raw_sql("COMMIT").execute(self.conn()).await.map_err(e)?;
        Ok(())
    }

    /// Rolls the open transaction back (nothing to report: a failed rollback leaves
    /// nothing committed either).
    pub async fn rollback(&mut self) {
        let _ = sqlx::raw_sql("ROLLBACK").execute(self.conn()).await;
    }

    /// Ends the open transaction as its last step went: committed when it succeeded,
    /// rolled back (and the step's error returned) when it failed.
    pub async fn end<T>(&mut self, step: Result<T, ConnectorError>) -> Result<T, ConnectorError> {
        match step {
            Ok(v) => {
                self.commit().await?;
                Ok(v)
            }
            Err(e) => {
                self.rollback().await;
                Err(e)
            }
        }
    }

    /// Records a manifest entry in its own fenced transaction.
    pub async fn record(
        &mut self,
        dir: &DirectionId,
        entry: &ManifestEntry,
        fencing: i64,
    ) -> Result<(), ConnectorError> {
        self.begin_fenced(dir, fencing).await?;
        let step = self.put_entry(dir, entry).await;
        self.end(step).await
    }

    /// Inside a fenced transaction: records what a path holds now.
    pub async fn put_entry(&mut self, dir: &DirectionId, entry: &ManifestEntry) -> Result<(), ConnectorError> {
        let e = self.err("recording a manifest entry");
        let (b3, md5) = match &entry.hashes {
            Some(h) => (Some(h.blake3.clone()), Some(h.md5.clone()).filter(|m| !m.is_empty())),
            None => (None, None),
        };
        sqlx::query(
            "INSERT INTO ferry_blob_manifest(task, direction, path, size, mtime_ns, mode, blake3, md5, target) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT(task, direction, path) DO UPDATE SET \
             size = excluded.size, mtime_ns = excluded.mtime_ns, mode = excluded.mode, blake3 = excluded.blake3, \
             md5 = excluded.md5, target = excluded.target",
        )
        .bind(&dir.task)
        .bind(dir.direction())
        .bind(&entry.path)
        .bind(i64::try_from(entry.size).unwrap_or(i64::MAX))
        .bind(entry.mtime_ns)
        .bind(entry.mode.map(i64::from))
        .bind(b3)
        .bind(md5)
        .bind(&entry.target)
        .execute(self.conn())
        .await
        .map_err(e)?;
        Ok(())
    }

    /// Inside a fenced transaction: forgets a path (and, for a folder, what it held).
    pub async fn remove_entry(&mut self, dir: &DirectionId, path: &str) -> Result<(), ConnectorError> {
        let e = self.err("removing a manifest entry");
        // What a folder held: paths from `dir/` up to (not including) `dir0` ('0' follows '/').
        let base = path.trim_end_matches('/');
        sqlx::query(
            "DELETE FROM ferry_blob_manifest WHERE task = ?1 AND direction = ?2 AND \
             (path = ?3 OR (path >= ?4 AND path < ?5))",
        )
        .bind(&dir.task)
        .bind(dir.direction())
        .bind(path)
        .bind(format!("{base}/"))
        .bind(format!("{base}0"))
        .execute(self.conn())
        .await
        .map_err(e)?;
        Ok(())
    }

    /// Inside a fenced transaction: moves a path's entry to a new path.
    pub async fn rename_entry(&mut self, dir: &DirectionId, from: &str, to: &str) -> Result<(), ConnectorError> {
        let e = self.err("renaming a manifest entry");
        let _ = self.remove_entry(dir, to).await;
        sqlx::query("UPDATE ferry_blob_manifest SET path = ?4 WHERE task = ?1 AND direction = ?2 AND path = ?3")
            .bind(&dir.task)
            .bind(dir.direction())
            .bind(from)
            .bind(to)
            .execute(self.conn())
            .await
            .map_err(e)?;
        Ok(())
    }

    /// Up to `limit` manifest entries after `after`, in path order.
    pub async fn manifest(
        &mut self,
        dir: &DirectionId,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ManifestEntry>, ConnectorError> {
        let e = self.err("reading the manifest");
        // The page as one JSON row: row by row, each line crossed from SQLite's worker
        // thread to this task on its own (a hand-off and a wake-up per line, a fifth of
        // a no-change pass over 20,000 files).
        let page: String = sqlx::query_scalar(
            "SELECT json_group_array(json_array(path, size, mtime_ns, mode, blake3, md5, target)) FROM \
             (SELECT path, size, mtime_ns, mode, blake3, md5, target FROM ferry_blob_manifest \
              WHERE task = ?1 AND direction = ?2 AND path > ?3 ORDER BY path LIMIT ?4)",
        )
        .bind(&dir.task)
        .bind(dir.direction())
        // A plain range (every path sorts after ""): `?3 IS NULL OR …` made SQLite walk
        // the direction's lines from the first for every page.
        .bind(after.unwrap_or(""))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_one(self.conn())
        .await
        .map_err(e)?;
        type Line = (String, i64, i64, Option<i64>, Option<String>, Option<String>, Option<String>);
        let lines: Vec<Line> = serde_json::from_str(&page).map_err(|j| ConnectorError::Setup {
            endpoint: self.endpoint.clone(),
            problem: format!("the manifest page after {after:?} does not read back: {j}"),
            fix: "report this as a bug; deleting the target's .ferry/state.db makes ferry rebuild it".into(),
        })?;
        let mut out: Vec<ManifestEntry> = lines
            .into_iter()
            .map(|(path, size, mtime_ns, mode, b3, md5, target)| ManifestEntry {
                path,
                size: u64::try_from(size).unwrap_or(0),
                mtime_ns,
                mode: mode.and_then(|m| u32::try_from(m).ok()),
                hashes: b3.map(|blake3| BlobHashes { blake3, md5: md5.unwrap_or_default() }),
                target,
            })
            .collect();
        // An aggregate's order is the subquery's in SQLite, but SQL does not promise it.
        out.sort_unstable_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    /// One path's manifest entry.
    pub async fn entry(&mut self, dir: &DirectionId, path: &str) -> Result<Option<ManifestEntry>, ConnectorError> {
        let e = self.err("reading the manifest");
        let row = sqlx::query(
            "SELECT path, size, mtime_ns, mode, blake3, md5, target FROM ferry_blob_manifest \
             WHERE task = ?1 AND direction = ?2 AND path = ?3",
        )
        .bind(&dir.task)
        .bind(dir.direction())
        .bind(path)
        .fetch_optional(self.conn())
        .await
        .map_err(e)?;
        Ok(row.as_ref().map(entry_of))
    }

    /// The direction's checkpoint.
    pub async fn load_checkpoint(&mut self, dir: &DirectionId) -> Result<Option<BlobCheckpoint>, ConnectorError> {
        let e = self.err("reading the checkpoint");
        let row = sqlx::query("SELECT body FROM ferry_blob_checkpoint WHERE task = ?1 AND direction = ?2")
            .bind(&dir.task)
            .bind(dir.direction())
            .fetch_optional(self.conn())
            .await
            .map_err(e)?;
        let Some(row) = row else { return Ok(None) };
        let body: String = row.get(0);
        serde_json::from_str(&body).map(Some).map_err(|err| ConnectorError::Setup {
            endpoint: self.endpoint.clone(),
            problem: format!("the checkpoint of {dir} in {} cannot be read: {err}", self.path.display()),
            fix: "delete that file to copy the direction again from the start (only what differs is copied)".into(),
        })
    }

    /// Records the direction's checkpoint, if the lease still carries `fencing`.
    pub async fn save_checkpoint(
        &mut self,
        dir: &DirectionId,
        cp: &BlobCheckpoint,
        fencing: i64,
    ) -> Result<(), ConnectorError> {
        let body = serde_json::to_string(cp).unwrap_or_default();
        self.begin_fenced(dir, fencing).await?;
        let e = self.err("recording the checkpoint");
        let r = sqlx::query(
            "INSERT INTO ferry_blob_checkpoint(task, direction, body, updated_us) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT(task, direction) DO UPDATE SET body = excluded.body, updated_us = excluded.updated_us",
        )
        .bind(&dir.task)
        .bind(dir.direction())
        .bind(body)
        .bind(now_micros())
        .execute(self.conn())
        .await
        .map_err(e);
        match r {
            Ok(_) => self.commit().await,
            Err(e) => {
                self.rollback().await;
                Err(e)
            }
        }
    }

    /// Who holds the lease (a released lease: nobody).
    pub async fn lease_holder(&mut self, dir: &DirectionId) -> Result<Option<LeaseHolder>, ConnectorError> {
        let e = self.err("reading the lease");
        state::lease_holder(self.conn(), dir).await.map_err(e)
    }

    /// Takes or renews the lease, by the same rule and table as a SQLite target's.
    pub async fn lease(
        &mut self,
        dir: &DirectionId,
        me: &LeaseHolder,
        ttl: Duration,
    ) -> Result<LeaseOutcome, ConnectorError> {
        let e = self.err("taking the lease");
        sqlx::raw_sql("BEGIN IMMEDIATE").execute(self.conn()).await.map_err(e)?;
        let e = self.err("taking the lease");
        let step = state::take_lease(self.conn(), dir, me, ttl).await.map_err(e);
        self.end(step).await
    }

    /// Gives the lease back if it is still `me`'s tenure.
    pub async fn release(&mut self, dir: &DirectionId, me: &LeaseHolder) -> Result<(), ConnectorError> {
        let e = self.err("releasing the lease");
        state::drop_lease(self.conn(), dir, me).await.map_err(e)
    }

    /// Closes the file cleanly.
    pub async fn close(mut self) {
        if let Some(c) = self.conn.take() {
            let _ = c.close().await;
        }
    }
}

fn entry_of(r: &sqlx::sqlite::SqliteRow) -> ManifestEntry {
    let b3: Option<String> = r.get(4);
    let md5: Option<String> = r.get(5);
    ManifestEntry {
        path: r.get(0),
        size: u64::try_from(r.get::<i64, _>(1)).unwrap_or(0),
        mtime_ns: r.get(2),
        mode: r.get::<Option<i64>, _>(3).and_then(|m| u32::try_from(m).ok()),
        hashes: b3.map(|blake3| BlobHashes { blake3, md5: md5.unwrap_or_default() }),
        target: r.get(6),
    }
}

/// A lease holder for tests of blob targets' state.
#[cfg(test)]
pub(crate) fn holder(host: &str, pid: u32, fencing: i64) -> LeaseHolder {
    LeaseHolder { node: "n".into(), host: host.into(), pid, expires_us: 0, expired: false, fencing, floor: 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_writer_whose_lease_passed_on_is_fenced_out_of_the_state_file() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut st = BlobState::open("t", &dir.path().join("state.db"), true).await.expect("open").expect("created");
        let d = DirectionId { task: "files".into(), from: "a".into(), to: "b".into() };
        let ttl = Duration::from_secs(15);
        // This process (pid alive) takes it; another host cannot while it lasts.
        let me = holder("here", std::process::id(), 0);
        assert_eq!(st.lease(&d, &me, ttl).await.expect("lease"), LeaseOutcome::Acquired { fencing: 1 });
        let other = holder("elsewhere", 1, 0);
        assert!(matches!(st.lease(&d, &other, ttl).await.expect("lease"), LeaseOutcome::HeldBy(_)));
        let mine = holder("here", std::process::id(), 1);
        st.begin_fenced(&d, 1).await.expect("our tenure writes");
        st.rollback().await;
        assert!(matches!(st.begin_fenced(&d, 7).await, Err(ConnectorError::Fenced { .. })), "a stale token");
        // Released, then taken by the other host under the next token: ours writes nothing.
        st.release(&d, &mine).await.expect("release");
        assert_eq!(st.lease_holder(&d).await.expect("holder"), None, "released: nobody holds it");
        assert_eq!(st.lease(&d, &other, ttl).await.expect("lease"), LeaseOutcome::Acquired { fencing: 2 });
        match st.begin_fenced(&d, 1).await {
            Err(ConnectorError::Fenced { holder: Some(h), mine: 1, .. }) => {
                assert_eq!((h.host.as_str(), h.fencing), ("elsewhere", 2))
            }
            other => panic!("expected Fenced naming the new holder, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn manifest_pages_read_back_every_line_as_written_whatever_its_path_holds() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut st = BlobState::open("t", &dir.path().join("state.db"), true).await.expect("open").expect("created");
        let d = DirectionId { task: "files".into(), from: "a".into(), to: "b".into() };
        let me = holder("here", std::process::id(), 0);
        assert_eq!(
            st.lease(&d, &me, Duration::from_secs(15)).await.expect("lease"),
            LeaseOutcome::Acquired { fencing: 1 }
        );
        // Paths with what JSON must escape, and lines with and without their optional parts.
        let paths = ["a \"quoted\" name", "b\\back\\slash", "c\nnew\tline\u{1}", "d/ünïcödé ✓", "e/plain.txt"];
        let mut lines: Vec<ManifestEntry> = paths
            .iter()
            .enumerate()
            .map(|(i, p)| ManifestEntry {
                path: p.to_string(),
                size: (i as u64) << 33,
                mtime_ns: -(i as i64) * 1_000_000_007,
                mode: (i % 2 == 0).then_some(0o644 + i as u32),
                hashes: (i % 2 == 1).then(|| BlobHashes { blake3: format!("b3-{i}"), md5: String::new() }),
                target: (i != 2).then(|| format!("etag-{i}")),
            })
            .collect();
        lines[3].hashes = Some(BlobHashes { blake3: "b3-3".into(), md5: "d41d8cd98f00b204e9800998ecf8427e".into() });
        st.begin_fenced(&d, 1).await.expect("fenced");
        for l in &lines {
            st.put_entry(&d, l).await.expect("put");
        }
        st.commit().await.expect("commit");
        // Read two lines a page, after each page's last path, as a pass does.
        let mut read = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = st.manifest(&d, after.as_deref(), 2).await.expect("page");
            let done = page.len() < 2;
            after = page.last().map(|l| l.path.clone()).or(after);
            read.extend(page);
            if done {
                break;
            }
        }
        assert_eq!(read, lines, "every line, in path order, as written");
        for l in &lines {
            assert_eq!(st.entry(&d, &l.path).await.expect("entry").as_ref(), Some(l), "one line read by itself");
        }
    }
}
