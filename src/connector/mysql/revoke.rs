//! Freezing by revoking write grants (`[task.cutover] freeze = "revoke"`): every account
//! but ferry's own, `exempt` and the server's own (root, mariadb.sys, ...) loses INSERT,
//! UPDATE and DELETE wherever it holds them (global, database, table level); then its
//! sessions are ended, since a revoke does not reach sessions already connected. What
//! was revoked is saved in `ferry.ferry_freeze_grants` first, keyed by account and level,
//! so a repeated freeze never overwrites the original grants and the unfreeze gives back
//! exactly those. None of it goes to the binary log: a freeze is local to its server.

use mysql_async::Conn;
use mysql_async::prelude::Queryable;

use super::{FERRY_DB, MysqlEndpoint, freeze, ident};
use crate::connector::ConnectorError;

/// Accounts a revoke never touches besides ferry's own and the exempt ones.
const SERVER_ACCOUNTS: [&str; 6] = ["root", "mariadb.sys", "mysql.sys", "mysql.session", "mysql.infoschema", ""];
/// The privileges a revoke takes away.
const WRITES: [&str; 3] = ["INSERT", "UPDATE", "DELETE"];

fn grants_table() -> String {
    format!("{}.{}", ident(FERRY_DB), ident("ferry_freeze_grants"))
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

/// The write privileges a `SHOW GRANTS` line gives, and the level (`*.*`, `` `db`.* ``,
/// `` `db`.`t` ``); `None` for lines without any (USAGE, SELECT only, roles, proxies)
/// and for column-level grants.
fn write_grant(line: &str) -> Option<(Vec<&'static str>, String)> {
    let rest = line.strip_prefix("GRANT ")?;
    let (privs, rest) = rest.split_once(" ON ")?;
    let (level, _) = rest.split_once(" TO ")?;
    if privs.contains('(') || level.starts_with("PROCEDURE ") || level.starts_with("FUNCTION ") {
        return None;
    }
    let held: Vec<&str> = privs.split(',').map(str::trim).collect();
    let all = held.iter().any(|p| p.starts_with("ALL"));
    let writes: Vec<&'static str> = WRITES.iter().copied().filter(|w| all || held.contains(w)).collect();
    (!writes.is_empty()).then(|| (writes, level.trim().to_string()))
}

/// Revokes the write grants of every application account and ends their sessions;
/// returns (accounts' grants revoked, sessions ended).
pub async fn freeze(
    ep: &MysqlEndpoint,
    conn: &mut Conn,
    exempt: &[String],
    reason: &str,
) -> Result<(usize, usize), ConnectorError> {
    let what = "freezing the server (revoking write grants)";
    ep.exec(conn, what, "SET SESSION sql_log_bin = 0").await?;
    freeze::record(ep, conn, reason).await?;
    ep.exec(
        conn,
        what,
        &format!(
            "CREATE TABLE IF NOT EXISTS {} (account VARCHAR(300) NOT NULL, level VARCHAR(300) NOT NULL, \
             privileges VARCHAR(100) NOT NULL, PRIMARY KEY (account, level)) ENGINE=InnoDB",
            grants_table()
        ),
    )
    .await?;
    let me: Option<String> =
        conn.query_first("SELECT SUBSTRING_INDEX(CURRENT_USER(), '@', 1)").await.map_err(ep.error(what))?;
    let mut keep: Vec<String> = exempt.iter().cloned().chain(me).collect();
    keep.extend(SERVER_ACCOUNTS.iter().map(|s| s.to_string()));
    // MariaDB lists roles in mysql.user too; they hold no sessions.
    let accounts: Vec<(String, String)> =
        match conn.query("SELECT User, Host FROM mysql.user WHERE is_role = 'N'").await {
            Ok(a) => a,
            Err(_) => conn.query("SELECT User, Host FROM mysql.user").await.map_err(ep.error("listing accounts"))?,
        };
    let mut revoked = 0;
    for (user, host) in accounts.into_iter().filter(|(u, _)| !keep.contains(u)) {
        let account = format!("{}@{}", quote(&user), quote(&host));
        let lines: Vec<String> = conn
            .query(format!("SHOW GRANTS FOR {account}"))
            .await
            .map_err(ep.error(format!("reading the grants of {account}")))?;
        for (privs, level) in lines.iter().filter_map(|l| write_grant(l)) {
            let privs = privs.join(", ");
            // The first freeze's grants win: a repeat sees them revoked already.
            conn.exec_drop(
                format!("INSERT IGNORE INTO {} VALUES (?, ?, ?)", grants_table()),
                (&account, &level, &privs),
            )
            .await
            .map_err(ep.error(what))?;
            ep.exec(conn, what, &format!("REVOKE {privs} ON {level} FROM {account}")).await?;
            revoked += 1;
        }
    }
    let ended = freeze::end_sessions(ep, conn, exempt).await?;
    Ok((revoked, ended))
}

/// Gives back every grant a revoke freeze took (idempotent); the accounts gone since
/// are skipped.
pub async fn unfreeze(ep: &MysqlEndpoint, conn: &mut Conn) -> Result<usize, ConnectorError> {
    let what = "unfreezing the server (restoring write grants)";
    if !freeze::ferry_table_exists(ep, conn, "ferry_freeze_grants", what).await? {
        return Ok(0);
    }
    ep.exec(conn, what, "SET SESSION sql_log_bin = 0").await?;
    let saved: Vec<(String, String, String)> = conn
        .query(format!("SELECT account, level, privileges FROM {}", grants_table()))
        .await
        .map_err(ep.error(what))?;
    let mut restored = 0;
    for (account, level, privs) in saved {
        match conn.query_drop(format!("GRANT {privs} ON {level} TO {account}")).await {
            Ok(()) => restored += 1,
            // The account was dropped meanwhile: nothing to give back.
            Err(mysql_async::Error::Server(s)) if matches!(s.code, 1133 | 1396) => {}
            Err(e) => return Err(ep.error(format!("restoring {privs} ON {level} TO {account}"))(e)),
        }
        conn.exec_drop(format!("DELETE FROM {} WHERE account = ? AND level = ?", grants_table()), (&account, &level))
            .await
            .map_err(ep.error(what))?;
    }
    Ok(restored)
}

/// Forgets the saved grants of one account (the freeze probe's, dropped after use).
pub async fn forget(ep: &MysqlEndpoint, conn: &mut Conn, user: &str) -> Result<(), ConnectorError> {
    let what = "forgetting the freeze probe's grants";
    if freeze::ferry_table_exists(ep, conn, "ferry_freeze_grants", what).await? {
        conn.exec_drop(format!("DELETE FROM {} WHERE account LIKE ?", grants_table()), (format!("{}@%", quote(user)),))
            .await
            .map_err(ep.error(what))?;
    }
    Ok(())
}

/// Whether write grants are revoked now (µs since the freeze), per `ferry.ferry_freeze`.
pub async fn frozen_since(ep: &MysqlEndpoint, conn: &mut Conn) -> Result<Option<i64>, ConnectorError> {
    let what = "reading whether write grants are revoked";
    let saved: Option<u64> = conn.query_first(format!("SELECT COUNT(*) FROM {}", grants_table())).await.unwrap_or(None);
    if saved.unwrap_or(0) == 0 {
        return Ok(None);
    }
    let since: Option<i64> = conn
        .query_first(format!("SELECT since_us FROM {}.{} WHERE id = 1", ident(FERRY_DB), ident("ferry_freeze")))
        .await
        .map_err(ep.error(what))?;
    Ok(Some(since.unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::write_grant;

    #[test]
    fn write_grants_are_found_by_level() {
        assert_eq!(
            write_grant("GRANT SELECT, INSERT, UPDATE, DELETE ON `shop`.* TO `app`@`%`"),
            Some((vec!["INSERT", "UPDATE", "DELETE"], "`shop`.*".into()))
        );
        assert_eq!(
            write_grant("GRANT ALL PRIVILEGES ON *.* TO `app`@`%` IDENTIFIED BY PASSWORD '*X'"),
            Some((vec!["INSERT", "UPDATE", "DELETE"], "*.*".into()))
        );
        assert_eq!(write_grant("GRANT INSERT ON `shop`.`t` TO `app`@`%`"), Some((vec!["INSERT"], "`shop`.`t`".into())));
        assert_eq!(write_grant("GRANT USAGE ON *.* TO `app`@`%`"), None);
        assert_eq!(write_grant("GRANT SELECT ON `shop`.* TO `app`@`%`"), None);
        assert_eq!(write_grant("GRANT INSERT (a) ON `shop`.`t` TO `app`@`%`"), None);
    }
}
