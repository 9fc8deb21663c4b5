//! MySQL/MariaDB's freezer as the registry asks for it: read-only or revoked grants
//! (freeze.rs, revoke.rs), proven by a write from a throw-away account that holds only
//! INSERT on a ferry table, as an application account holds no SUPER.

use mysql_async::prelude::Queryable;

use super::{FERRY_DB, MysqlEndpoint, freeze, ident, revoke};
use crate::connector::ConnectorError;
use crate::connector::registry::{FreezeOutcome, FreezeRequest};
use crate::model::FreezeMethod;

/// The account the probe write uses: no privilege but INSERT on one ferry table, so it
/// is refused exactly as an application account is.
pub const PROBE_USER: &str = "ferry_freeze_probe";

/// Freezes the server as asked and tries the probe write.
pub async fn freeze_and_probe(m: &MysqlEndpoint, how: &FreezeRequest) -> Result<FreezeOutcome, ConnectorError> {
    let mut conn = m.connect().await?;
    let frozen = mysql_freeze(m, &mut conn, how).await;
    let _ = conn.disconnect().await;
    let (count, probe) = frozen?;
    Ok(FreezeOutcome { count, probe })
}

/// Lifts a freeze of either method: gives back grants, lifts read_only.
pub async fn unfreeze(m: &MysqlEndpoint) -> Result<(), ConnectorError> {
    let mut conn = m.connect().await?;
    let r = match revoke::unfreeze(m, &mut conn).await {
        Ok(_) => freeze::unfreeze(m, &mut conn).await,
        Err(e) => Err(e),
    };
    let _ = conn.disconnect().await;
    r
}

/// Since when (µs) the server is frozen by either method, if it is. Every process
/// reads this at start, so it also removes a probe account that a freeze killed
/// between creating and dropping it left behind.
pub async fn frozen_since(m: &MysqlEndpoint) -> Result<Option<i64>, ConnectorError> {
    let mut conn = m.connect().await?;
    if let Err(e) = drop_leftover_probe(m, &mut conn).await {
        tracing::warn!(endpoint = %m.name, error = %e, "could not check for a leftover freeze probe account");
    }
    let r = match freeze::frozen_since(m, &mut conn).await {
        Ok(None) => revoke::frozen_since(m, &mut conn).await,
        other => other,
    };
    let _ = conn.disconnect().await;
    r
}

/// Freezes a MySQL server as the task says, proving it with a throw-away account that
/// holds only INSERT on a ferry table (as an application account holds no SUPER). The
/// account exists before the freeze, so a revoke takes its grant too; neither the
/// account nor the attempt reaches the binary log. Returns the count of sessions ended
/// (and grants revoked) and the probe's outcome: `Ok(Err(message))` when refused.
async fn mysql_freeze(
    m: &MysqlEndpoint,
    conn: &mut mysql_async::Conn,
    how: &FreezeRequest,
) -> Result<(usize, Result<Result<(), String>, ConnectorError>), ConnectorError> {
    let (table, password) = probe_account(m, conn).await?;
    let (exempt, reason) = (&how.exempt_users, how.reason.as_str());
    let frozen = match how.method {
        FreezeMethod::ReadOnly => freeze::freeze(m, conn, exempt, reason).await,
        FreezeMethod::Revoke => revoke::freeze(m, conn, exempt, reason).await.map(|(r, e)| r + e),
    };
    let outcome = match &frozen {
        Ok(_) => probe_write(m, &table, password).await,
        Err(_) => Ok(Err(String::new())),
    };
    let dropped = drop_probe_account(m, conn, &table).await;
    let count = frozen?;
    dropped?;
    Ok((count, outcome))
}

/// The probe account as GRANT and DROP USER write it.
pub fn probe_account_name() -> String {
    format!("'{PROBE_USER}'@'%'")
}

/// Creates the probe account; returns its table and password.
async fn probe_account(m: &MysqlEndpoint, conn: &mut mysql_async::Conn) -> Result<(String, String), ConnectorError> {
    let what = "preparing the freeze probe account";
    let table = format!("{}.{}", ident(FERRY_DB), ident("ferry_freeze_probe"));
    let password = random_password(m)?;
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

/// 48 hex digits from the operating system's secure random source: the probe account
/// may be reached from anywhere ('%') while it exists, so its password must not be
/// guessable.
fn random_password(m: &MysqlEndpoint) -> Result<String, ConnectorError> {
    let mut bytes = [0u8; 24];
    rustls::crypto::ring::default_provider().secure_random.fill(&mut bytes).map_err(|_| ConnectorError::Setup {
        endpoint: m.name.clone(),
        problem: "no secure random numbers for the freeze probe's password".into(),
        fix: "check that the operating system's random source (getrandom) works".into(),
    })?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Drops the probe account if one exists outside a freeze of this process (a crash
/// between its creation and its removal), with its saved grants.
async fn drop_leftover_probe(m: &MysqlEndpoint, conn: &mut mysql_async::Conn) -> Result<(), ConnectorError> {
    let what = "removing a leftover freeze probe account";
    let found: Option<u64> = conn
        .exec_first("SELECT COUNT(*) FROM mysql.user WHERE User = ?", (PROBE_USER,))
        .await
        .map_err(m.error(what))?;
    if found.unwrap_or(0) == 0 {
        return Ok(());
    }
    m.exec(conn, what, "SET SESSION sql_log_bin = 0").await?;
    m.exec(conn, what, &format!("DROP USER IF EXISTS {}", probe_account_name())).await?;
    revoke::forget(m, conn, PROBE_USER).await?;
    tracing::warn!(endpoint = %m.name, account = PROBE_USER, "removed a freeze probe account a stopped freeze left behind");
    Ok(())
}

/// The probe write: `Ok(Err(message))` when refused. A probe that cannot even connect
/// proves nothing about writes, so that is an error (the freeze is then undone).
async fn probe_write(m: &MysqlEndpoint, table: &str, password: String) -> Result<Result<(), String>, ConnectorError> {
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname(m.opts.ip_or_hostname().to_string())
        .tcp_port(m.opts.tcp_port())
        .user(Some(PROBE_USER))
        .pass(Some(password))
        // The probe must travel as the application's sessions do: a server that
        // requires TLS would refuse a plain probe, and a refused connection is not
        // proof of a freeze.
        .ssl_opts(m.opts.ssl_opts().cloned())
        .prefer_socket(false);
    let mut app = mysql_async::Conn::new(opts).await.map_err(|e| ConnectorError::Setup {
        endpoint: m.name.clone(),
        problem: format!("the freeze probe account could not connect, so the freeze is not proven: {e}"),
        fix: "let ferry's host connect as a new account (host '%'; the same TLS as ferry's URL) and retry".into(),
    })?;
    let r = app.query_drop(format!("INSERT INTO {table} VALUES (1)")).await;
    let _ = app.disconnect().await;
    Ok(r.map_err(|e| e.to_string()))
}

/// Drops the probe account, its saved grants and any row a probe got through with.
async fn drop_probe_account(
    m: &MysqlEndpoint,
    conn: &mut mysql_async::Conn,
    table: &str,
) -> Result<(), ConnectorError> {
    let what = "removing the freeze probe account";
    m.exec(conn, what, &format!("DROP USER IF EXISTS {}", probe_account_name())).await?;
    revoke::forget(m, conn, PROBE_USER).await?;
    m.exec(conn, what, &format!("DELETE FROM {table}")).await
}
