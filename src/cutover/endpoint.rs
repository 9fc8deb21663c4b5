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
    if task.cutover.freeze == FreezeMethod::Revoke {
        return Err(ConnectorError::Setup {
            endpoint: ep.name.clone(),
            problem: "freeze = \"revoke\" is not supported by this version of ferry".into(),
            fix: "use freeze = \"read-only\" in [task.cutover]".into(),
        });
    }
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
            let frozen = mysql::freeze::freeze(&m, &mut conn, &task.cutover.exempt_users, reason).await;
            let probe = match frozen {
                Ok(_) => mysql_probe(&m, &mut conn).await,
                Err(_) => Ok(Err(String::new())),
            };
            let _ = conn.disconnect().await;
            (frozen?, probe)
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
            let r = mysql::freeze::unfreeze(&m, &mut conn).await;
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
            let r = mysql::freeze::frozen_since(&m, &mut conn).await;
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

/// A write by a throw-away account that holds only INSERT on a ferry table (as an
/// application account holds no SUPER); neither the account nor the attempt reaches the
/// binary log. `Ok(Err(message))` when refused.
async fn mysql_probe(m: &MysqlEndpoint, conn: &mut mysql_async::Conn) -> Result<Result<(), String>, ConnectorError> {
    let what = "preparing the freeze probe account";
    let table = format!("{}.{}", ident(FERRY_DB), ident("ferry_freeze_probe"));
    let password = format!("p{}", crate::model::now_micros());
    let host = m.opts.ip_or_hostname().to_string();
    let account = format!("'{PROBE_USER}'@'%'");
    for sql in [
        "SET SESSION sql_log_bin = 0".to_string(),
        format!("CREATE TABLE IF NOT EXISTS {table} (id INT PRIMARY KEY) ENGINE=InnoDB"),
        format!("DROP USER IF EXISTS {account}"),
        format!("CREATE USER {account} IDENTIFIED BY '{password}'"),
        format!("GRANT INSERT ON {table} TO {account}"),
    ] {
        m.exec(conn, what, &sql).await?;
    }
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname(host)
        .tcp_port(m.opts.tcp_port())
        .user(Some(PROBE_USER))
        .pass(Some(password))
        .prefer_socket(false);
    let outcome = match mysql_async::Conn::new(opts).await {
        Ok(mut app) => {
            let r = app.query_drop(format!("INSERT INTO {table} VALUES (1)")).await;
            let _ = app.disconnect().await;
            match r {
                Ok(()) => Ok(()),
                Err(e) => Err(e.to_string()),
            }
        }
        Err(e) => {
            let _ = m.exec(conn, what, &format!("DROP USER IF EXISTS {account}")).await;
            return Err(m.error("connecting as the freeze probe account")(e));
        }
    };
    m.exec(conn, "removing the freeze probe account", &format!("DROP USER IF EXISTS {account}")).await?;
    // A probe that got through wrote a row: take it out again.
    m.exec(conn, "removing the probe row", &format!("DELETE FROM {table}")).await?;
    Ok(outcome)
}
