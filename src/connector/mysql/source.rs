//! The MySQL/MariaDB [`Source`]: table discovery, the DBLog snapshot, heartbeats and the
//! binlog stream, glued together for the engine.

use std::sync::Arc;
use std::time::Duration;

use mysql_async::Conn;
use mysql_async::prelude::Queryable;

use super::binlog::{BinlogReader, Read, TableFilter};
use super::position::BinlogPos;
use super::server_id::{apply_server_id, replica_server_id};
use super::versions;
use super::{MysqlEndpoint, migrate, schema, snapshot};
use crate::connector::{Chunk, ConnectorError, ReadBatch, ReadRequest, Source};
use crate::model::{Key, Position, TableSchema};

/// How long one read waits for the first transaction before returning empty.
const READ_WAIT: Duration = Duration::from_millis(50);
/// Changes per stream read. A backlog's batch collapses each key to its final row, so
/// where keys are hot a bigger batch leaves the target fewer rows: bench/mysql_cdc went
/// from 89k to 167-208k changes/s with 50,000 instead of the engine's 20,000 (about 0.26
/// rows per change against 0.38 on sysbench's default key spread).
const READ_CHANGES: usize = 50_000;

/// A MySQL/MariaDB server read as a change source.
pub struct MysqlSource {
    ep: MysqlEndpoint,
    conn: Conn,
    reader: Option<BinlogReader>,
    reader_at: Option<Position>,
    tables: Vec<Arc<TableSchema>>,
    /// The task's table patterns: tables created later that match are followed too.
    patterns: Vec<glob::Pattern>,
    server_id: u32,
    signal_id: String,
    /// Two-way: version the tables' rows and pair changes with their versions.
    versions: bool,
}

impl MysqlSource {
    /// Connects; `stream_name` (task and direction) keys the replica server id and the
    /// snapshot signal row, so two directions never share them.
    pub async fn open(ep: MysqlEndpoint, stream_name: &str) -> Result<Self, ConnectorError> {
        let conn = ep.connect().await?;
        Ok(MysqlSource {
            ep,
            conn,
            reader: None,
            reader_at: None,
            tables: Vec::new(),
            patterns: Vec::new(),
            server_id: replica_server_id(stream_name),
            signal_id: stream_name.to_string(),
            versions: false,
        })
    }

    /// Two-way: installs row versioning with capture and reads versions with changes.
    pub fn with_versions(mut self, on: bool) -> Self {
        self.versions = on;
        self
    }
}

/// The binlog head: file, offset and the GTID list.
pub async fn binlog_head(ep: &MysqlEndpoint, conn: &mut Conn) -> Result<Position, ConnectorError> {
    let status: Option<mysql_async::Row> = conn
        .query_first("SHOW MASTER STATUS")
        .await
        .map_err(ep.error("reading the binlog head (SHOW MASTER STATUS)"))?;
    let Some(row) = status else {
        return Err(ConnectorError::Setup {
            endpoint: ep.name.clone(),
            problem: "the binary log is off, so there are no changes to follow".into(),
            fix: "start the server with log_bin (my.cnf [mysqld]: log_bin = mysql-bin, binlog_format = ROW, binlog_row_image = FULL, binlog_row_metadata = FULL) and restart it".into(),
        });
    };
    let file: String = row.get(0).unwrap_or_default();
    let pos: u64 = row.get(1).unwrap_or(4);
    let gtid: Option<String> =
        conn.query_first("SELECT @@gtid_binlog_pos").await.map_err(ep.error("reading @@gtid_binlog_pos"))?;
    Ok(BinlogPos { file, pos, gtid: gtid.unwrap_or_default() }.to_position())
}

impl Source for MysqlSource {
    async fn tables(&mut self, patterns: &[String]) -> Result<Vec<Arc<TableSchema>>, ConnectorError> {
        let tables = schema::describe_matching(&self.ep, &mut self.conn, patterns).await?;
        self.tables = tables.clone();
        self.patterns = schema::qualified_patterns(&self.ep, patterns)?;
        Ok(tables)
    }

    async fn install_capture(&mut self, tables: &[Arc<TableSchema>]) -> Result<(), ConnectorError> {
        migrate::run(&self.ep, &mut self.conn).await?;
        if self.versions {
            versions::install(&self.ep, &mut self.conn, tables, &self.ep.site, true).await?;
        }
        self.tables = tables.to_vec();
        // A new table set needs a new filter.
        self.reader = None;
        self.reader_at = None;
        Ok(())
    }

    async fn head(&mut self) -> Result<Position, ConnectorError> {
        binlog_head(&self.ep, &mut self.conn).await
    }

    async fn read_chunk(
        &mut self,
        table: &TableSchema,
        after: Option<&Key>,
        limit: usize,
        with_versions: bool,
    ) -> Result<Chunk, ConnectorError> {
        let versions = with_versions && self.versions;
        snapshot::read_chunk(&self.ep, &mut self.conn, table, after, limit, &self.signal_id, versions).await
    }

    fn batch_changes(&self) -> Option<usize> {
        Some(READ_CHANGES)
    }

    async fn read_changes(&mut self, req: &ReadRequest) -> Result<ReadBatch, ConnectorError> {
        if self.reader.is_none() || self.reader_at.as_ref() != Some(&req.after) {
            self.reader = None;
            let filter = TableFilter::new(self.tables.iter().map(|t| t.name.clone()))
                .with_patterns(self.patterns.clone())
                .with_versions(self.versions);
            let reader = BinlogReader::start(&self.ep, self.server_id, &req.after, filter).await?;
            self.reader = Some(reader);
        }
        let Some(reader) = self.reader.as_mut() else {
            return Ok(ReadBatch { txns: Vec::new(), position: req.after.clone(), continues: false });
        };
        let Read { mut txns, position, continues } = match reader.read(req.max_changes, READ_WAIT).await {
            Ok(v) => v,
            Err(e) => {
                // The stream is gone; the next call starts a new one from the checkpoint.
                self.reader = None;
                self.reader_at = None;
                return Err(e);
            }
        };
        // The target's applier writes here under a server id of its own (two-way): those
        // transactions came from the target and must not go back.
        let applied_here = apply_server_id(&req.exclude_origin);
        for (t, id) in txns.iter_mut().zip(reader.server_ids()) {
            if *id == applied_here {
                t.origin = req.exclude_origin.clone();
            }
        }
        txns.retain(|t| t.origin != req.exclude_origin);
        self.reader_at = Some(position.clone());
        Ok(ReadBatch { txns, position, continues })
    }

    async fn heartbeat(&mut self) -> Result<(), ConnectorError> {
        let site = self.ep.site.to_string();
        snapshot::heartbeat(&self.ep, &mut self.conn, &site).await
    }

    async fn consumed(&mut self, _consumer: &str, _position: &Position) -> Result<(), ConnectorError> {
        // The server purges binlogs by its own retention; `ferry check` compares it with
        // the expected snapshot time.
        Ok(())
    }

    async fn clock(&mut self) -> Result<Option<i64>, ConnectorError> {
        // The same expression the version triggers stamp rows with.
        let now: Option<i64> = self
            .conn
            .query_first(format!("SELECT {}", versions::VERSION_NOW_US))
            .await
            .map_err(self.ep.error("reading the server's clock"))?;
        Ok(now)
    }

    async fn estimate_rows(&mut self, table: &TableSchema) -> Result<Option<u64>, ConnectorError> {
        super::checksum::estimated_rows(&self.ep, &mut self.conn, &table.name).await.map(Some)
    }
}
