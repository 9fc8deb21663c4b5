//! Read-only looks at an endpoint for `ferry status` and `ferry run`'s early lease check:
//! a direction's checkpoint and lease on its target, the head of a source. Never writes.

use crate::config::{Endpoint, EndpointUrl};
use crate::connector::mysql::{self, MysqlEndpoint};
use crate::connector::sqlite::{self, Access, SqliteEndpoint};
use crate::connector::{Checkpoint, ConnectorError, DirectionId, LeaseHolder, Source};
use crate::model::Position;

/// What a target holds about a direction.
#[derive(Debug, Default)]
pub struct TargetState {
    /// The recorded checkpoint, if any.
    pub checkpoint: Option<Checkpoint>,
    /// The lease row, if any.
    pub lease: Option<LeaseHolder>,
}

fn sqlite_ep(ep: &Endpoint, path: &std::path::Path) -> SqliteEndpoint {
    SqliteEndpoint { name: ep.name.clone(), site: ep.site.clone(), path: path.to_path_buf() }
}

/// Reads a direction's checkpoint and lease from its target.
pub async fn target_state(target: &Endpoint, dir: &DirectionId) -> Result<TargetState, ConnectorError> {
    match &target.url {
        EndpointUrl::Sqlite(path) => {
            let ep = sqlite_ep(target, path);
            let mut conn = ep.connect(Access::ReadOnly).await?;
            // A target that never ran has no ferry tables: nothing recorded.
            let checkpoint = sqlite::state::load_checkpoint(&mut conn, dir).await.ok().flatten();
            let lease = sqlite::state::lease_holder(&mut conn, dir).await.ok().flatten();
            sqlite::close(conn).await;
            Ok(TargetState { checkpoint, lease })
        }
        EndpointUrl::Mysql(url) => {
            let ep = MysqlEndpoint::new(&target.name, target.site.clone(), url)?;
            let mut conn = ep.connect().await?;
            let checkpoint = mysql::state::load_checkpoint(&ep, &mut conn, dir).await.ok().flatten();
            let lease = mysql::state::lease_holder(&ep, &mut conn, dir).await.ok().flatten();
            let _ = conn.disconnect().await;
            Ok(TargetState { checkpoint, lease })
        }
        EndpointUrl::Postgres(_) => Ok(TargetState::default()),
    }
}

/// The current head of a source's change stream.
pub async fn source_head(source: &Endpoint) -> Result<Option<Position>, ConnectorError> {
    match &source.url {
        EndpointUrl::Sqlite(path) => {
            let mut s = sqlite::capture::SqliteSource::open(sqlite_ep(source, path), Access::ReadOnly).await?;
            Ok(s.head().await.ok())
        }
        EndpointUrl::Mysql(url) => {
            let ep = MysqlEndpoint::new(&source.name, source.site.clone(), url)?;
            let mut conn = ep.connect().await?;
            let head = mysql::source::binlog_head(&ep, &mut conn).await.ok();
            let _ = conn.disconnect().await;
            Ok(head)
        }
        EndpointUrl::Postgres(_) => Ok(None),
    }
}
