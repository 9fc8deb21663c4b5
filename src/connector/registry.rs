//! The one place that maps a store to its connector. Each store folder implements
//! [`Connector`] once; [`STORES`] lists them, one line per store. Everything outside
//! `src/connector/` reaches a store only through the functions here: by an endpoint's
//! URL scheme, or by a position's kind.

use futures_util::future::BoxFuture;

use super::blob::dynamic::{DynBlobSink, DynBlobSource};
use super::dynamic::{DynSink, DynSource};
use super::endpoint::{Endpoint, EndpointUrl};
use super::items::DynItemSide;
use super::typemap::TypeMap;
use super::verifier::AnySide;
use super::{
    Checkpoint, ConnectorError, DirectionId, LeaseHolder, Retention, doris, files, kafka, mysql, objects, postgres,
    redis, search, sftp, sqlite,
};
use crate::model::{FreezeMethod, Position, PositionParseError, SiteId, TableName};

/// Every store ferry speaks. Adding a store adds one line here.
pub static STORES: &[&dyn Connector] = &[
    &sqlite::Store,
    &mysql::Store,
    &postgres::Store,
    &kafka::Store,
    &files::Store,
    &objects::Store,
    &redis::Store,
    &sftp::Store,
    &search::Store,
    &doris::Store,
];

/// What kind of data a store holds; the engine moves data only between kinds that fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataKind {
    /// Keyed rows of described tables (SQL databases).
    Records,
    /// Opaque items (key, value, headers, TTL, type): Redis values, Kafka messages,
    /// documents; carried as rows of [`crate::model::item_schema`].
    Items,
    /// Files and objects: see [`super::blob`].
    Blobs,
}

/// How a direction's source is opened.
#[derive(Debug, Clone)]
pub struct SourceOptions {
    /// Names this reader's replica stream and snapshot signal row (task and direction,
    /// the same on every node of a cluster); a second reader of the same direction (the
    /// heartbeat writer) uses another.
    pub stream: String,
    /// The name this node read the direction's stream with before streams were shared
    /// by a cluster's nodes (`{node}/{task}/{direction}`): a store that keeps a reader's
    /// history by name (PostgreSQL's replication slot) carries it over to `stream` when
    /// `stream` has none yet, so an upgrade loses no change. `None`: nothing to carry.
    pub former_stream: Option<String>,
    /// This reader runs in a cluster under the direction's lease (fenced on the
    /// target): a session of the stream left by the previous owner (a killed node's
    /// replication connection, until TCP notices) may be ended instead of waited for.
    /// Outside a cluster such a session is another process's, a setup error.
    pub takeover: bool,
    /// Read each change's row version (two-way conflict resolution needs them).
    pub versions: bool,
    /// The direction's target is the same store: snapshot chunks may come as the
    /// store's own bulk rows ([`crate::connector::NativeRows`]) instead of decoded rows.
    pub native_chunks: bool,
}

/// How a direction's target is opened.
#[derive(Debug, Clone, Default)]
pub struct SinkOptions {
    /// Sessions changes are applied over in parallel (`workers`).
    pub workers: usize,
    /// Two-way: the site of the direction's source, whose versions the target records.
    pub two_way_from: Option<SiteId>,
    /// The task's `topic` template (`ferry.{db}.{table}`): where a message store puts
    /// each table's changes; stores of tables ignore it.
    pub topic: String,
    /// The task's `index` template (`{db}_{table}`): where a search store puts each
    /// table's documents; other stores ignore it.
    pub index: String,
}

/// How one side of a comparison is opened.
#[derive(Debug, Clone, Default)]
pub struct SideOptions {
    /// Repairs will be applied through it.
    pub write: bool,
    /// The task's `index` template: where a search store holds each table (stores of
    /// tables ignore it).
    pub index: String,
}

/// What a direction's target holds about it, read without writing.
#[derive(Debug, Default)]
pub struct TargetState {
    /// The recorded checkpoint, if any.
    pub checkpoint: Option<Checkpoint>,
    /// The lease row, if any.
    pub lease: Option<LeaseHolder>,
    /// A blob direction's checkpoint whole (its passes, for a cutover's drain); `None`
    /// for stores of records.
    pub blob: Option<super::blob::BlobCheckpoint>,
}

/// How to stop application writes on an endpoint.
#[derive(Debug, Clone)]
pub struct FreezeRequest {
    /// Read-only or revoked grants (stores that have accounts).
    pub method: FreezeMethod,
    /// Accounts that keep writing (ferry's own, the DBA's).
    pub exempt_users: Vec<String>,
    /// Recorded with the freeze, shown by `ferry status`.
    pub reason: String,
    /// Stores whose writers ferry cannot refuse (object storage, SFTP): how long the
    /// listing must stay unchanged for the freeze to hold (the task's `quiet_seconds`).
    pub watch: std::time::Duration,
}

/// What a freeze did, before its proof is judged.
#[derive(Debug)]
pub struct FreezeOutcome {
    /// Application sessions ended, grants revoked or tables guarded.
    pub count: usize,
    /// The probe write as an application makes it: `Ok(Err(message))` when refused (the
    /// freeze holds), `Ok(Ok(()))` when it got through.
    pub probe: Result<Result<(), String>, ConnectorError>,
}

/// One entry of a target's conflict log.
#[derive(Debug, Clone, PartialEq)]
pub struct ConflictRecord {
    /// Id in the log.
    pub id: i64,
    /// Task.
    pub task: String,
    /// `a->b`.
    pub direction: String,
    /// Table.
    pub table: String,
    /// Key of the row.
    pub key: String,
    /// Policy applied.
    pub policy: String,
    /// Which version won.
    pub winner: String,
    /// Site of the incoming change.
    pub incoming_site: String,
    /// Site of the local row.
    pub local_site: String,
    /// When it was detected (µs).
    pub detected_us: i64,
    /// Commit time of the incoming change (µs).
    pub incoming_ts: i64,
    /// Commit time of the local version (µs).
    pub local_ts: i64,
    /// The incoming row as logged (a JSON object; `None`: a delete).
    pub incoming_row: Option<String>,
    /// The local row as logged (`None`: absent).
    pub local_row: Option<String>,
}

/// What a source preflight is asked.
#[derive(Debug, Clone)]
pub struct SourceCheck {
    /// A glob that matches no table is a problem (the forward direction; the reverse
    /// direction of a two-way task may find its tables missing until the snapshot made them).
    pub require_match: bool,
    /// The task's throttle (0 = none) when a snapshot will be taken: a source compares
    /// its change retention with the copy's duration.
    pub snapshot_rows_per_sec: Option<u64>,
}

/// A table as a target will hold it: its (renamed) name and, where the source knows
/// them, its (renamed) columns in order.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetTable {
    /// The name, qualified as the store that reported it names tables.
    pub name: TableName,
    /// Column names in order, when known.
    pub columns: Option<Vec<String>>,
}

/// What a source preflight found.
#[derive(Debug, Clone, Default)]
pub struct SourceFindings {
    /// The tables the globs match.
    pub tables: Vec<TargetTable>,
    /// Problems, each with its fix.
    pub problems: Vec<String>,
    /// Risks that do not stop the task (printed by `ferry check`, exit 0), each with its fix.
    pub warnings: Vec<String>,
}

/// A store: its URLs, its positions, and the capabilities it has. A capability a store
/// does not have answers with [`unsupported`], a setup error naming store and capability.
pub trait Connector: Sync {
    /// The store's name for people ("SQLite", "MySQL/MariaDB").
    fn name(&self) -> &'static str;
    /// URL schemes it answers to (`mysql`, `mariadb`).
    fn schemes(&self) -> &'static [&'static str];
    /// What a URL of it looks like, for messages (`mysql://USER:PASSWORD@HOST:PORT[/DB]`).
    fn url_form(&self) -> &'static str;
    /// Checks a URL's form when the task file is read: `Err((problem, fix))`.
    fn check_url(&self, url: &EndpointUrl) -> Result<(), (String, String)>;
    /// The kind of its positions' text (`mysql` in `mysql:…`).
    fn position_kind(&self) -> &'static str;
    /// Reads one of its positions as `ferry status` prints it.
    fn parse_position(&self, text: &str) -> Result<Position, PositionParseError>;
    /// What it holds.
    fn data_kind(&self) -> DataKind {
        DataKind::Records
    }
    /// Whether, as a sink, it applies a source transaction atomically with its
    /// checkpoint. `false` makes `keep_transactions` default to false for it and an
    /// explicit `true` a setup error.
    fn transactional(&self) -> bool {
        true
    }
    /// Its native types to and from the canonical ones.
    fn types(&self) -> &'static dyn TypeMap;
    /// Opens a change reader.
    fn open_source<'a>(
        &'a self,
        ep: &'a Endpoint,
        _opts: &'a SourceOptions,
    ) -> BoxFuture<'a, Result<Box<dyn DynSource>, ConnectorError>> {
        Box::pin(async move { Err(unsupported(self.name(), ep, "a source (change capture)")) })
    }
    /// Opens a change writer.
    fn open_sink<'a>(
        &'a self,
        ep: &'a Endpoint,
        _opts: &'a SinkOptions,
    ) -> BoxFuture<'a, Result<Box<dyn DynSink>, ConnectorError>> {
        Box::pin(async move { Err(unsupported(self.name(), ep, "a sink (apply)")) })
    }
    /// Opens a blob reader (stores of [`DataKind::Blobs`]); with `own` ferry's own area
    /// (`.ferry/`) is left out, as every ferry read does (a target read back by verify,
    /// or a source that was a target once).
    fn open_blob_source<'a>(
        &'a self,
        ep: &'a Endpoint,
        _own: bool,
    ) -> BoxFuture<'a, Result<Box<dyn DynBlobSource>, ConnectorError>> {
        Box::pin(async move { Err(unsupported(self.name(), ep, "a blob source")) })
    }
    /// Opens a blob writer.
    fn open_blob_sink<'a>(&'a self, ep: &'a Endpoint) -> BoxFuture<'a, Result<Box<dyn DynBlobSink>, ConnectorError>> {
        Box::pin(async move { Err(unsupported(self.name(), ep, "a blob target")) })
    }
    /// Whether two endpoints of this store overlap (one folder inside the other): a task
    /// between them would copy its own output.
    fn overlaps(&self, _a: &Endpoint, _b: &Endpoint) -> bool {
        false
    }
    /// Reads a direction's checkpoint and lease on a target without writing; a target
    /// that never ran holds nothing.
    fn target_state<'a>(
        &'a self,
        ep: &'a Endpoint,
        dir: &'a DirectionId,
    ) -> BoxFuture<'a, Result<TargetState, ConnectorError>>;
    /// The current head of a source's stream, without writing; `None` if unknown.
    fn source_head<'a>(&'a self, ep: &'a Endpoint) -> BoxFuture<'a, Result<Option<Position>, ConnectorError>>;
    /// The history a source keeps for the reader `stream` (see [`super::Source::retention`]),
    /// read without writing, also while nothing reads it; `None` where the store keeps
    /// none per reader or the reader was never set up.
    fn source_retention<'a>(
        &'a self,
        _ep: &'a Endpoint,
        _stream: &'a str,
    ) -> BoxFuture<'a, Result<Option<Retention>, ConnectorError>> {
        Box::pin(async { Ok(None) })
    }
    /// The newest entries of a target's conflict log (of `task`, or all), newest first;
    /// `None` where the store keeps no log.
    fn conflicts<'a>(
        &'a self,
        _ep: &'a Endpoint,
        _task: Option<&'a str>,
        _limit: usize,
    ) -> BoxFuture<'a, Result<Option<Vec<ConflictRecord>>, ConnectorError>> {
        Box::pin(async { Ok(None) })
    }
    /// Whether the endpoint answers; the error says why not.
    fn reachable<'a>(&'a self, ep: &'a Endpoint) -> BoxFuture<'a, Result<(), ConnectorError>>;
    /// Verifier: opens one side of a comparison; `write` when repairs will be applied.
    fn open_side<'a>(
        &'a self,
        ep: &'a Endpoint,
        _how: &'a SideOptions,
    ) -> BoxFuture<'a, Result<AnySide, ConnectorError>> {
        Box::pin(async move { Err(unsupported(self.name(), ep, "a verified endpoint")) })
    }
    /// Verifier of item stores: opens one side of a comparison of keys and values.
    fn open_items<'a>(&'a self, ep: &'a Endpoint) -> BoxFuture<'a, Result<Box<dyn DynItemSide>, ConnectorError>> {
        Box::pin(async move { Err(unsupported(self.name(), ep, "a verified endpoint of items")) })
    }
    /// Uninstall: what ferry added to the endpoint (triggers, tables, schemas, slots,
    /// keys), one line each, read without writing.
    fn installed<'a>(&'a self, ep: &'a Endpoint) -> BoxFuture<'a, Result<Vec<String>, ConnectorError>> {
        Box::pin(async move { Err(unsupported(self.name(), ep, "an uninstalled endpoint")) })
    }
    /// Uninstall: removes everything ferry added; returns what was removed. A frozen
    /// endpoint is refused.
    fn uninstall<'a>(&'a self, ep: &'a Endpoint) -> BoxFuture<'a, Result<Vec<String>, ConnectorError>> {
        Box::pin(async move { Err(unsupported(self.name(), ep, "an uninstalled endpoint")) })
    }
    /// Preflight as a source: the tables the globs match, and every problem with its fix.
    fn check_source<'a>(
        &'a self,
        ep: &'a Endpoint,
        _patterns: &'a [String],
        _how: &'a SourceCheck,
    ) -> BoxFuture<'a, SourceFindings> {
        Box::pin(async move {
            SourceFindings {
                tables: Vec::new(),
                problems: vec![unsupported(self.name(), ep, "a source").to_string()],
                warnings: Vec::new(),
            }
        })
    }
    /// Preflight as the target of these tables (named as this store names them); `source`
    /// names the source endpoint for messages.
    fn check_target<'a>(
        &'a self,
        ep: &'a Endpoint,
        _source: &'a str,
        _tables: &'a [TargetTable],
    ) -> BoxFuture<'a, Vec<String>> {
        Box::pin(async move { vec![unsupported(self.name(), ep, "a target").to_string()] })
    }
    /// What works as a target but slower or less safely than it could (printed by `ferry
    /// check`, exit 0, nothing refused), each with its fix.
    fn target_warnings<'a>(&'a self, _ep: &'a Endpoint) -> BoxFuture<'a, Vec<String>> {
        Box::pin(async { Vec::new() })
    }
    /// Preflight of what two-way needs of these tables on this endpoint.
    fn check_two_way<'a>(&'a self, _ep: &'a Endpoint, _tables: &'a [TargetTable]) -> BoxFuture<'a, Vec<String>> {
        Box::pin(async { Vec::new() })
    }
    /// A table name as this store names it (a bare name may take the URL's database).
    fn qualify(&self, _ep: &Endpoint, name: &TableName) -> TableName {
        name.clone()
    }
    /// Whether its freeze is a watch ([`super::blob::quiesce`]): a store of blobs whose
    /// writers ferry cannot refuse (object storage, SFTP).
    fn freezes_by_watching(&self) -> bool {
        false
    }
    /// Freezer: stops application writes and tries a probe write as an application.
    fn freeze<'a>(
        &'a self,
        ep: &'a Endpoint,
        how: &'a FreezeRequest,
    ) -> BoxFuture<'a, Result<FreezeOutcome, ConnectorError>> {
        Box::pin(async move {
            match self.freezes_by_watching() {
                true => super::blob::quiesce::freeze(ep, self.name(), how.watch).await,
                false => Err(unsupported(self.name(), ep, "a frozen endpoint (cutover)")),
            }
        })
    }
    /// Freezer: lifts a freeze of any method (idempotent).
    fn unfreeze<'a>(&'a self, ep: &'a Endpoint) -> BoxFuture<'a, Result<(), ConnectorError>> {
        Box::pin(async move {
            match self.freezes_by_watching() {
                true => super::blob::quiesce::unfreeze(ep),
                false => Err(unsupported(self.name(), ep, "a frozen endpoint (cutover)")),
            }
        })
    }
    /// Freezer: since when (µs) the endpoint is frozen, if it is.
    fn frozen_since<'a>(&'a self, ep: &'a Endpoint) -> BoxFuture<'a, Result<Option<i64>, ConnectorError>> {
        Box::pin(
            async move { Ok(self.freezes_by_watching().then(|| super::blob::quiesce::frozen_since(ep)).flatten()) },
        )
    }
}

/// The setup error of a capability a store does not have.
pub fn unsupported(store: &str, ep: &Endpoint, capability: &str) -> ConnectorError {
    ConnectorError::Setup {
        endpoint: ep.name.clone(),
        problem: format!("{store} cannot be used as {capability} by this version of ferry"),
        fix: "choose another endpoint for this role (docs/architecture.md lists what each store supports)".into(),
    }
}

/// The store of a URL scheme, if ferry speaks it.
pub fn by_scheme(scheme: &str) -> Option<&'static dyn Connector> {
    STORES.iter().copied().find(|s| s.schemes().contains(&scheme))
}

/// Every URL form ferry accepts, for messages.
pub fn url_forms() -> String {
    STORES.iter().map(|s| s.url_form()).collect::<Vec<_>>().join(", ")
}

/// Checks an endpoint URL when the task file is read: `Err((problem, fix))`.
pub fn check_url(url: &EndpointUrl) -> Result<(), (String, String)> {
    match by_scheme(&url.scheme()) {
        Some(store) => store.check_url(url),
        None => Err((
            format!("{:?} endpoints ({url}) cannot be synced by this version of ferry yet", url.scheme()),
            format!("use one of {}", url_forms()),
        )),
    }
}

/// The store of an endpoint.
pub fn store(ep: &Endpoint) -> Result<&'static dyn Connector, ConnectorError> {
    by_scheme(&ep.url.scheme()).ok_or_else(|| ConnectorError::Setup {
        endpoint: ep.name.clone(),
        problem: format!("endpoint url {} has an unknown scheme", ep.url),
        fix: format!("use one of {}", url_forms()),
    })
}

/// The store's name of an endpoint, for messages ("unknown" for an unknown scheme).
pub fn store_name(ep: &Endpoint) -> &'static str {
    by_scheme(&ep.url.scheme()).map_or("unknown", |s| s.name())
}

/// Whether two endpoints are of the same store (same types, same SQL).
pub fn same_store(a: &Endpoint, b: &Endpoint) -> bool {
    store_name(a) == store_name(b)
}

/// Checks that data can flow from `from` to `to`: an impossible pair names both stores.
pub fn check_pair(from: &Endpoint, to: &Endpoint) -> Result<(), ConnectorError> {
    let (a, b) = (store(from)?, store(to)?);
    if a.data_kind() == b.data_kind() {
        return Ok(());
    }
    Err(ConnectorError::Setup {
        endpoint: format!("{} -> {}", from.name, to.name),
        problem: format!(
            "{} ({:?}) cannot feed {} ({:?}): the two stores hold different kinds of data",
            a.name(),
            a.data_kind(),
            b.name(),
            b.data_kind()
        ),
        fix: "pair stores of the same kind (databases with databases, files with objects, …)".into(),
    })
}

/// Whether an endpoint holds items (Redis values).
pub fn is_items(ep: &Endpoint) -> bool {
    by_scheme(&ep.url.scheme()).is_some_and(|s| s.data_kind() == DataKind::Items)
}

/// Opens one side of an item comparison on an endpoint.
pub async fn open_items(ep: &Endpoint) -> Result<Box<dyn DynItemSide>, ConnectorError> {
    store(ep)?.open_items(ep).await
}

/// Whether an endpoint holds blobs (files, objects).
pub fn is_blob(ep: &Endpoint) -> bool {
    by_scheme(&ep.url.scheme()).is_some_and(|s| s.data_kind() == DataKind::Blobs)
}

/// Opens a blob reader on an endpoint (`own`: a target read back, its own area left out).
pub async fn open_blob_source(ep: &Endpoint, own: bool) -> Result<Box<dyn DynBlobSource>, ConnectorError> {
    store(ep)?.open_blob_source(ep, own).await
}

/// Opens a blob writer on an endpoint.
pub async fn open_blob_sink(ep: &Endpoint) -> Result<Box<dyn DynBlobSink>, ConnectorError> {
    store(ep)?.open_blob_sink(ep).await
}

/// Refuses a blob pair whose endpoints overlap (one folder inside the other).
pub fn check_blob_pair(from: &Endpoint, to: &Endpoint) -> Result<(), ConnectorError> {
    check_pair(from, to)?;
    let (a, b) = (store(from)?, store(to)?);
    if a.name() == b.name() && a.overlaps(from, to) {
        return Err(ConnectorError::Setup {
            endpoint: format!("{} -> {}", from.name, to.name),
            problem: format!(
                "{} and {} overlap: one is inside the other, so the task would copy its own output",
                from.url, to.url
            ),
            fix: "point source and target at folders (or prefixes) apart from each other".into(),
        });
    }
    Ok(())
}

/// Opens a direction's change reader on its source.
pub async fn open_source(ep: &Endpoint, opts: &SourceOptions) -> Result<Box<dyn DynSource>, ConnectorError> {
    store(ep)?.open_source(ep, opts).await
}

/// Opens a direction's change writer on its target.
pub async fn open_sink(ep: &Endpoint, opts: &SinkOptions) -> Result<Box<dyn DynSink>, ConnectorError> {
    store(ep)?.open_sink(ep, opts).await
}

/// Reads a direction's checkpoint and lease from its target, without writing.
pub async fn target_state(ep: &Endpoint, dir: &DirectionId) -> Result<TargetState, ConnectorError> {
    store(ep)?.target_state(ep, dir).await
}

/// The current head of a source's change stream, without writing.
pub async fn source_head(ep: &Endpoint) -> Result<Option<Position>, ConnectorError> {
    store(ep)?.source_head(ep).await
}

/// The history a source keeps for the reader `stream`, without writing.
pub async fn source_retention(ep: &Endpoint, stream: &str) -> Result<Option<Retention>, ConnectorError> {
    store(ep)?.source_retention(ep, stream).await
}

/// The newest entries of a target's conflict log; `None` where the store keeps none.
pub async fn conflicts(
    ep: &Endpoint,
    task: Option<&str>,
    limit: usize,
) -> Result<Option<Vec<ConflictRecord>>, ConnectorError> {
    store(ep)?.conflicts(ep, task, limit).await
}

/// Whether the endpoint answers; the error says why not.
pub async fn reachable(ep: &Endpoint) -> Result<(), ConnectorError> {
    store(ep)?.reachable(ep).await
}

/// Stops application writes on an endpoint and tries a probe write.
pub async fn freeze(ep: &Endpoint, how: &FreezeRequest) -> Result<FreezeOutcome, ConnectorError> {
    store(ep)?.freeze(ep, how).await
}

/// Lifts a freeze (idempotent).
pub async fn unfreeze(ep: &Endpoint) -> Result<(), ConnectorError> {
    store(ep)?.unfreeze(ep).await
}

/// Since when (µs) the endpoint is frozen, if it is.
pub async fn frozen_since(ep: &Endpoint) -> Result<Option<i64>, ConnectorError> {
    store(ep)?.frozen_since(ep).await
}

/// What `ferry check` asks of a task's pair of endpoints.
#[derive(Debug, Clone)]
pub struct PreflightTask {
    /// Table globs.
    pub tables: Vec<String>,
    /// Both directions run (each side is also a source and a target).
    pub two_way: bool,
    /// The task copies existing rows first.
    pub snapshot: bool,
    /// The task's throttle (0 = none).
    pub max_rows_per_sec: u64,
    /// Renames.
    pub maps: Vec<crate::model::TableMap>,
}

/// What ferry added to an endpoint, one line each.
pub async fn installed(ep: &Endpoint) -> Result<Vec<String>, ConnectorError> {
    store(ep)?.installed(ep).await
}

/// Removes everything ferry added to an endpoint; returns what was removed.
pub async fn uninstall(ep: &Endpoint) -> Result<Vec<String>, ConnectorError> {
    store(ep)?.uninstall(ep).await
}

/// Opens one side of a comparison on an endpoint; `write` when repairs will be applied.
pub async fn open_side(ep: &Endpoint, how: &SideOptions) -> Result<AnySide, ConnectorError> {
    store(ep)?.open_side(ep, how).await
}

/// Reads a position as `ferry status` prints it (`sqlite:42`, `mysql:FILE:POS:GTID`).
pub fn parse_position(text: &str) -> Result<Position, PositionParseError> {
    let kind = text.split_once(':').map_or(text, |(k, _)| k);
    match STORES.iter().find(|s| s.position_kind() == kind) {
        Some(store) => store.parse_position(text),
        None => Err(PositionParseError {
            text: text.to_string(),
            expected: format!(
                "expected a position of kind {}",
                STORES.iter().map(|s| format!("{}:…", s.position_kind())).collect::<Vec<_>>().join(" or ")
            ),
        }),
    }
}
