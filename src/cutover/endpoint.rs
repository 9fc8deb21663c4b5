//! What a cutover does to one endpoint, whatever its engine: freeze it (and prove the
//! freeze with a probe write as an application would make it), lift the freeze, read
//! the head of its change stream, check it answers.

use mysql_async::prelude::Queryable;

use crate::config::{Endpoint, EndpointUrl, FreezeMethod, Task};
use crate::connector::ConnectorError;
use crate::connector::mysql::{self, FERRY_DB, MysqlEndpoint, ident};
use crate::connector::sqlite::{self, Access, SqliteEndpoint, literal};
use crate::model::Position;

/// The account the MySQL probe write uses: no privilege but INSERT on one ferry table,
/// so it is refused exactly as an application account is.
const PROBE_USER: &str = "ferry_freeze_probe";

fn sqlite_ep(ep: &Endpoint, path: &std::path::Path) -> SqliteEndpoint {
    SqliteEndpoint { name: ep.name.clone(), site: ep.site.clone(), path: path.to_path_buf() }
}

fn unsupported(ep: &Endpoint, what: &str) -> ConnectorError {
    ConnectorError::Setup {
        endpoint: ep.name.clone(),
        problem: format!("{what} is not supported for {} endpoints", ep.url.engine()),
        fix: "cut over SQLite or MySQL/MariaDB endpoints".into(),
    }
}

/// What a freeze did.
#[derive(Debug, Clone)]
pub struct Frozen {
    /// Application sessions ended (MySQL) or tables guarded (SQLite).
    pub count: usize,
    /// How the probe write was refused.
    pub probe: String,
}

/// Stops application writes on `ep` as the task's `[task.cutover]` says, then proves it
/// with a probe write as an application account; a probe that gets through undoes the
/// freeze and fails.
pub async fn freeze(ep: &Endpoint, task: &Task, reason: &str) -> Result<Frozen, ConnectorError> {
    let (count, probe) = match &ep.url {
        EndpointUrl::Sqlite(path) => {
            let s = sqlite_ep(ep, path);
            let mut conn = s.connect(Access::ReadWrite).await?;
            let frozen = sqlite::freeze::freeze(&s, &mut conn, reason).await;
            sqlite::close(conn).await;
            (frozen?, sqlite_probe(&s).await)
        }
        EndpointUrl::Mysql(url) => {
            let m = MysqlEndpoint::new(&ep.name, ep.site.clone(), url)?;
            let mut conn = m.connect().await?;
            let frozen = mysql_freeze(&m, &mut conn, task, reason).await;
            let _ = conn.disconnect().await;
            match frozen {
                Ok(f) => f,
                Err(e) => {
                    // A freeze that failed half-way (some grants revoked) is undone.
                    if let Err(undo) = unfreeze(ep).await {
                        tracing::warn!(endpoint = %ep.name, error = %undo, "could not undo a failed freeze");
                    }
                    return Err(e);
                }
            }
        }
        EndpointUrl::Postgres(_) => return Err(unsupported(ep, "freezing")),
    };
    match probe {
        Ok(Err(refused)) => Ok(Frozen { count, probe: refused }),
        Ok(Ok(())) => {
            unfreeze(ep).await?;
            Err(ConnectorError::Setup {
                endpoint: ep.name.clone(),
                problem: "a probe write as an application account got through the freeze; the freeze was undone".into(),
                fix: "check that application accounts lack SUPER / READ ONLY ADMIN (MySQL) and retry".into(),
            })
        }
        Err(e) => {
            unfreeze(ep).await?;
            Err(e)
        }
    }
}

/// Lifts a freeze (idempotent).
pub async fn unfreeze(ep: &Endpoint) -> Result<(), ConnectorError> {
    match &ep.url {
        EndpointUrl::Sqlite(path) => {
            let s = sqlite_ep(ep, path);
            let mut conn = s.connect(Access::ReadWrite).await?;
            let r = sqlite::freeze::unfreeze(&s, &mut conn).await;
            sqlite::close(conn).await;
            r
        }
        EndpointUrl::Mysql(url) => {
            let m = MysqlEndpoint::new(&ep.name, ep.site.clone(), url)?;
            let mut conn = m.connect().await?;
            // Either method may have frozen it: give back grants, lift read_only.
            let r = match mysql::revoke::unfreeze(&m, &mut conn).await {
                Ok(_) => mysql::freeze::unfreeze(&m, &mut conn).await,
                Err(e) => Err(e),
            };
            let _ = conn.disconnect().await;
            r
        }
        EndpointUrl::Postgres(_) => Err(unsupported(ep, "unfreezing")),
    }
}

/// Since when (µs) the endpoint is frozen, if it is.
pub async fn frozen_since(ep: &Endpoint) -> Result<Option<i64>, ConnectorError> {
    match &ep.url {
        EndpointUrl::Sqlite(path) => {
            let s = sqlite_ep(ep, path);
            let mut conn = s.connect(Access::ReadOnly).await?;
            let r = sqlite::freeze::frozen_since(&s, &mut conn).await;
            sqlite::close(conn).await;
            r
        }
        EndpointUrl::Mysql(url) => {
            let m = MysqlEndpoint::new(&ep.name, ep.site.clone(), url)?;
            let mut conn = m.connect().await?;
            let r = match mysql::freeze::frozen_since(&m, &mut conn).await {
                Ok(None) => mysql::revoke::frozen_since(&m, &mut conn).await,
                other => other,
            };
            let _ = conn.disconnect().await;
            r
        }
        EndpointUrl::Postgres(_) => Ok(None),
    }
}

/// Whether the endpoint answers; the error says why not.
pub async fn reachable(ep: &Endpoint) -> Result<(), ConnectorError> {
    match &ep.url {
        EndpointUrl::Sqlite(path) => {
            let conn = sqlite_ep(ep, path).connect(Access::ReadOnly).await?;
            sqlite::close(conn).await;
            Ok(())
        }
        EndpointUrl::Mysql(url) => {
            let m = MysqlEndpoint::new(&ep.name, ep.site.clone(), url)?;
            let mut conn = m.connect().await?;
            let r = conn.query_drop("SELECT 1").await.map_err(m.error("checking the server answers"));
            let _ = conn.disconnect().await;
            r
        }
        EndpointUrl::Postgres(_) => Err(unsupported(ep, "cutover")),
    }
}

/// The head of the endpoint's change stream (capture must be installed on SQLite).
pub async fn head(ep: &Endpoint) -> Result<Position, ConnectorError> {
    crate::connector::probe::source_head(ep).await?.ok_or_else(|| ConnectorError::Setup {
        endpoint: ep.name.clone(),
        problem: "cannot read the head of its change stream".into(),
        fix: "check that change capture is installed (SQLite) or the binary log is on (MySQL)".into(),
    })
}

/// A write as an application makes it, rolled back: `Ok(Err(message))` when refused.
async fn sqlite_probe(s: &SqliteEndpoint) -> Result<Result<(), String>, ConnectorError> {
    let mut conn = s.connect(Access::ReadWrite).await?;
    let tables = sqlite::schema::user_tables(s, &mut conn).await;
    let result = match tables {
        Ok(tables) => match tables.first() {
            // No user table: nothing an application could write.
            None => Ok(Err("no user tables to write".to_string())),
            Some(t) => {
                let t = literal::ident(t);
                // The freeze trigger fires before any constraint is checked.
                let sql = format!("BEGIN; INSERT INTO {t} DEFAULT VALUES; ROLLBACK;");
                match sqlite::exec_batch(&mut conn, sql).await {
                    Ok(()) => Ok(Ok(())),
                    Err(e) => {
                        let _ = sqlite::exec_batch(&mut conn, "ROLLBACK".into()).await;
                        let msg = e.to_string();
                        if msg.contains(sqlite::freeze::FROZEN_MESSAGE) { Ok(Err(msg)) } else { Ok(Ok(())) }
                    }
                }
            }
        },
        Err(e) => Err(e),
    };
    sqlite::close(conn).await;
    result
}

/// Freezes a MySQL server as the task says, proving it with a throw-away account that
/// holds only INSERT on a ferry table (as an application account holds no SUPER). The
/// account exists before the freeze, so a revoke takes its grant too; neither the
/// account nor the attempt reaches the binary log. Returns the count of sessions ended
/// (and grants revoked) and the probe's outcome: `Ok(Err(message))` when refused.
async fn mysql_freeze(
    m: &MysqlEndpoint,
    conn: &mut mysql_async::Conn,
    task: &Task,
    reason: &str,
) -> Result<(usize, Result<Result<(), String>, ConnectorError>), ConnectorError> {
    let (table, password) = probe_account(m, conn).await?;
    let exempt = &task.cutover.exempt_users;
    let frozen = match task.cutover.freeze {
        FreezeMethod::ReadOnly => mysql::freeze::freeze(m, conn, exempt, reason).await,
        FreezeMethod::Revoke => mysql::revoke::freeze(m, conn, exempt, reason).await.map(|(r, e)| r + e),
    };
    let outcome = match &frozen {
        Ok(_) => Ok(probe_write(m, &table, password).await),
        Err(_) => Ok(Err(String::new())),
    };
    let dropped = drop_probe_account(m, conn, &table).await;
    let count = frozen?;
    dropped?;
    Ok((count, outcome))
}

fn probe_account_name() -> String {
    format!("'{PROBE_USER}'@'%'")
}

/// Creates the probe account; returns its table and password.
async fn probe_account(m: &MysqlEndpoint, conn: &mut mysql_async::Conn) -> Result<(String, String), ConnectorError> {
    let what = "preparing the freeze probe account";
    let table = format!("{}.{}", ident(FERRY_DB), ident("ferry_freeze_probe"));
    let password = format!("p{}", crate::model::now_micros());
    let account = probe_account_name();
    for sql in [
        "SET SESSION sql_log_bin = 0".to_string(),
        format!("CREATE DATABASE IF NOT EXISTS {}", ident(FERRY_DB)),
        format!("CREATE TABLE IF NOT EXISTS {table} (id INT PRIMARY KEY) ENGINE=InnoDB"),
        format!("DROP USER IF EXISTS {account}"),
        format!("CREATE USER {account} IDENTIFIED BY '{password}'"),
        format!("GRANT INSERT ON {table} TO {account}"),
    ] {
        m.exec(conn, what, &sql).await?;
    }
    Ok((table, password))
}

/// The probe write: `Err(message)` when refused.
async fn probe_write(m: &MysqlEndpoint, table: &str, password: String) -> Result<(), String> {
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname(m.opts.ip_or_hostname().to_string())
        .tcp_port(m.opts.tcp_port())
        .user(Some(PROBE_USER))
        .pass(Some(password))
        .prefer_socket(false);
    let mut app = mysql_async::Conn::new(opts).await.map_err(|e| format!("refused at connect: {e}"))?;
    let r = app.query_drop(format!("INSERT INTO {table} VALUES (1)")).await;
    let _ = app.disconnect().await;
    r.map_err(|e| e.to_string())
}

/// Drops the probe account, its saved grants and any row a probe got through with.
async fn drop_probe_account(
    m: &MysqlEndpoint,
    conn: &mut mysql_async::Conn,
    table: &str,
) -> Result<(), ConnectorError> {
    let what = "removing the freeze probe account";
    m.exec(conn, what, &format!("DROP USER IF EXISTS {}", probe_account_name())).await?;
    mysql::revoke::forget(m, conn, PROBE_USER).await?;
    m.exec(conn, what, &format!("DELETE FROM {table}")).await
}
