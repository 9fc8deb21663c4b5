//! Freezing by revoking write grants (`[task.cutover] freeze = "revoke"`): every account
//! but ferry's own, `exempt` and the server's own (root, mariadb.sys, ...) loses INSERT,
//! UPDATE and DELETE wherever it holds them (global, database, table level); then its
//! sessions are ended, since a revoke does not reach sessions already connected. What
//! was revoked is saved in `ferry.ferry_revoked_grants` first as fields — user, host,
//! database, table, privilege — keyed by all of them, so a repeated freeze never
//! overwrites the original grants and the unfreeze gives back exactly those. The GRANT
//! that gives one back is built from the fields (identifiers and names quoted, the
//! privilege checked against INSERT/UPDATE/DELETE): nothing stored is ever run as SQL
//! text, so a row written into that table cannot make ferry's SUPER account run it.
//! None of it goes to the binary log: a freeze is local to its server.

use mysql_async::Conn;
use mysql_async::prelude::Queryable;

use super::names::{FREEZE_GRANTS_TABLE, FREEZE_TABLE, REVOKED_GRANTS_TABLE, ferry_table};
use super::{MysqlEndpoint, freeze, ident, string_literal};
use crate::connector::ConnectorError;

/// Accounts a revoke never touches besides ferry's own and the exempt ones.
const SERVER_ACCOUNTS: [&str; 6] = ["root", "mariadb.sys", "mysql.sys", "mysql.session", "mysql.infoschema", ""];
/// The privileges a revoke takes away.
const WRITES: [&str; 3] = ["INSERT", "UPDATE", "DELETE"];

fn grants_table() -> String {
    ferry_table(REVOKED_GRANTS_TABLE)
}

/// One revoked privilege: `privilege` ON `db`.`table` TO `user`@`host`; `*` for a
/// whole level (`*.*`, `db.*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokedGrant {
    /// Account user name.
    pub user: String,
    /// Account host.
    pub host: String,
    /// Database, or `*` (global).
    pub db: String,
    /// Table, or `*` (whole database or global).
    pub table: String,
    /// INSERT, UPDATE or DELETE.
    pub privilege: &'static str,
}

impl RevokedGrant {
    /// The level as SQL: `*.*`, `` `db`.* `` or `` `db`.`t` ``.
    fn level(&self) -> String {
        match (self.db.as_str(), self.table.as_str()) {
            ("*", _) => "*.*".into(),
            (db, "*") => format!("{}.*", ident(db)),
            (db, t) => format!("{}.{}", ident(db), ident(t)),
        }
    }

    /// The account as SQL: `'user'@'host'`.
    fn account(&self) -> String {
        format!("{}@{}", string_literal(&self.user), string_literal(&self.host))
    }

    /// The GRANT giving it back, built from the fields.
    pub fn grant_sql(&self) -> String {
        format!("GRANT {} ON {} TO {}", self.privilege, self.level(), self.account())
    }
}

/// The privilege as one of [`WRITES`]: anything else stored is refused, never run.
fn known_write(p: &str) -> Option<&'static str> {
    WRITES.iter().copied().find(|w| w.eq_ignore_ascii_case(p.trim()))
}

/// `*.*`, `` `db`.* `` or `` `db`.`t` `` (SHOW GRANTS' form) as (db, table) names.
fn parse_level(level: &str) -> Option<(String, String)> {
    fn part(s: &str) -> Option<(String, &str)> {
        if let Some(rest) = s.strip_prefix('*') {
            return Some(("*".into(), rest));
        }
        let body = s.strip_prefix('`')?;
        let mut name = String::new();
        let mut chars = body.char_indices();
        while let Some((i, c)) = chars.next() {
            if c == '`' {
                if body[i + 1..].starts_with('`') {
                    name.push('`');
                    chars.next();
                } else {
                    return Some((name, &body[i + 1..]));
                }
            } else {
                name.push(c);
            }
        }
        None
    }
    let (db, rest) = part(level.trim())?;
    let (table, rest) = part(rest.strip_prefix('.')?)?;
    rest.is_empty().then_some((db, table))
}

/// `'user'@'host'` (as freezes before the structured form saved it) as (user, host).
fn parse_account(account: &str) -> Option<(String, String)> {
    fn literal(s: &str) -> Option<(String, &str)> {
        let body = s.strip_prefix('\'')?;
        let mut out = String::new();
        let mut chars = body.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\'' if body[i + 1..].starts_with('\'') => {
                    out.push('\'');
                    chars.next();
                }
                '\'' => return Some((out, &body[i + 1..])),
                '\\' => out.push(chars.next()?.1),
                c => out.push(c),
            }
        }
        None
    }
    let (user, rest) = literal(account)?;
    let (host, rest) = literal(rest.strip_prefix('@')?)?;
    rest.is_empty().then_some((user, host))
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
            "CREATE TABLE IF NOT EXISTS {} (user VARCHAR(128) NOT NULL, host VARCHAR(255) NOT NULL, \
             db VARCHAR(64) NOT NULL, tbl VARCHAR(64) NOT NULL, privilege VARCHAR(16) NOT NULL, \
             PRIMARY KEY (user, host, db, tbl, privilege)) ENGINE=InnoDB",
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
        let account = format!("{}@{}", string_literal(&user), string_literal(&host));
        let lines: Vec<String> = conn
            .query(format!("SHOW GRANTS FOR {account}"))
            .await
            .map_err(ep.error(format!("reading the grants of {account}")))?;
        for (privs, level) in lines.iter().filter_map(|l| write_grant(l)) {
            let Some((db, table)) = parse_level(&level) else {
                return Err(ConnectorError::Setup {
                    endpoint: ep.name.clone(),
                    problem: format!("the grant level {level} of {account} cannot be read back"),
                    fix: "freeze with freeze = \"read-only\" instead, and report the SHOW GRANTS line".into(),
                });
            };
            for privilege in privs {
                let g = RevokedGrant {
                    user: user.clone(),
                    host: host.clone(),
                    db: db.clone(),
                    table: table.clone(),
                    privilege,
                };
                // The first freeze's grants win: a repeat sees them revoked already.
                conn.exec_drop(
                    format!("INSERT IGNORE INTO {} VALUES (?, ?, ?, ?, ?)", grants_table()),
                    (&g.user, &g.host, &g.db, &g.table, g.privilege),
                )
                .await
                .map_err(ep.error(what))?;
                ep.exec(conn, what, &format!("REVOKE {} ON {} FROM {}", g.privilege, g.level(), g.account())).await?;
            }
            revoked += 1;
        }
    }
    let ended = freeze::end_sessions(ep, conn, exempt).await?;
    Ok((revoked, ended))
}

/// The grants saved by freezes, structured; rows of the older text table are parsed
/// into the same fields (and refused when they do not parse), never run as text.
async fn saved_grants(ep: &MysqlEndpoint, conn: &mut Conn, what: &str) -> Result<Vec<RevokedGrant>, ConnectorError> {
    let mut out = Vec::new();
    if freeze::ferry_table_exists(ep, conn, REVOKED_GRANTS_TABLE, what).await? {
        let rows: Vec<(String, String, String, String, String)> = conn
            .query(format!("SELECT user, host, db, tbl, privilege FROM {}", grants_table()))
            .await
            .map_err(ep.error(what))?;
        for (user, host, db, table, p) in rows {
            let privilege = known_write(&p).ok_or_else(|| tampered(ep, &format!("privilege {p:?}")))?;
            out.push(RevokedGrant { user, host, db, table, privilege });
        }
    }
    if freeze::ferry_table_exists(ep, conn, FREEZE_GRANTS_TABLE, what).await? {
        let rows: Vec<(String, String, String)> = conn
            .query(format!("SELECT account, level, privileges FROM {}", ferry_table(FREEZE_GRANTS_TABLE)))
            .await
            .map_err(ep.error(what))?;
        for (account, level, privs) in rows {
            let (user, host) = parse_account(&account).ok_or_else(|| tampered(ep, &format!("account {account:?}")))?;
            let (db, table) = parse_level(&level).ok_or_else(|| tampered(ep, &format!("level {level:?}")))?;
            for p in privs.split(',') {
                let privilege = known_write(p).ok_or_else(|| tampered(ep, &format!("privilege {p:?}")))?;
                out.push(RevokedGrant {
                    user: user.clone(),
                    host: host.clone(),
                    db: db.clone(),
                    table: table.clone(),
                    privilege,
                });
            }
        }
    }
    Ok(out)
}

/// A saved grant that is not what a freeze writes: refused, for a human to look at.
fn tampered(ep: &MysqlEndpoint, what: &str) -> ConnectorError {
    ConnectorError::Setup {
        endpoint: ep.name.clone(),
        problem: format!("a saved grant in ferry's freeze tables has an unexpected {what}; nothing was granted"),
        fix: "inspect ferry.ferry_revoked_grants (someone may have written to it) and give the grants back by hand"
            .into(),
    }
}

/// Gives back every grant a revoke freeze took (idempotent); the accounts gone since
/// are skipped.
pub async fn unfreeze(ep: &MysqlEndpoint, conn: &mut Conn) -> Result<usize, ConnectorError> {
    let what = "unfreezing the server (restoring write grants)";
    let saved = saved_grants(ep, conn, what).await?;
    if saved.is_empty() {
        return Ok(0);
    }
    ep.exec(conn, what, "SET SESSION sql_log_bin = 0").await?;
    let mut restored = 0;
    for g in &saved {
        // GRANT creates a missing account unless sql_mode says NO_AUTO_CREATE_USER
        // (gone in MySQL 8): give back only to accounts that exist.
        let exists: Option<u64> = conn
            .exec_first("SELECT COUNT(*) FROM mysql.user WHERE User = ? AND Host = ?", (&g.user, &g.host))
            .await
            .map_err(ep.error(what))?;
        if exists.unwrap_or(0) == 0 {
            continue;
        }
        match conn.query_drop(g.grant_sql()).await {
            Ok(()) => restored += 1,
            // The account was dropped meanwhile: nothing to give back.
            Err(mysql_async::Error::Server(s)) if matches!(s.code, 1133 | 1396) => {}
            Err(e) => return Err(ep.error(format!("restoring {}", g.grant_sql()))(e)),
        }
    }
    for table in [REVOKED_GRANTS_TABLE, FREEZE_GRANTS_TABLE] {
        if freeze::ferry_table_exists(ep, conn, table, what).await? {
            ep.exec(conn, what, &format!("DELETE FROM {}", ferry_table(table))).await?;
        }
    }
    Ok(restored)
}

/// Forgets the saved grants of one account (the freeze probe's, dropped after use).
pub async fn forget(ep: &MysqlEndpoint, conn: &mut Conn, user: &str) -> Result<(), ConnectorError> {
    let what = "forgetting the freeze probe's grants";
    if freeze::ferry_table_exists(ep, conn, REVOKED_GRANTS_TABLE, what).await? {
        conn.exec_drop(format!("DELETE FROM {} WHERE user = ?", grants_table()), (user,))
            .await
            .map_err(ep.error(what))?;
    }
    Ok(())
}

/// Whether write grants are revoked now (µs since the freeze), per `ferry.ferry_freeze`.
pub async fn frozen_since(ep: &MysqlEndpoint, conn: &mut Conn) -> Result<Option<i64>, ConnectorError> {
    let what = "reading whether write grants are revoked";
    let mut saved = 0;
    for table in [REVOKED_GRANTS_TABLE, FREEZE_GRANTS_TABLE] {
        let n: Option<u64> =
            conn.query_first(format!("SELECT COUNT(*) FROM {}", ferry_table(table))).await.unwrap_or(None);
        saved += n.unwrap_or(0);
    }
    if saved == 0 {
        return Ok(None);
    }
    let since: Option<i64> = conn
        .query_first(format!("SELECT since_us FROM {} WHERE id = 1", ferry_table(FREEZE_TABLE)))
        .await
        .map_err(ep.error(what))?;
    Ok(Some(since.unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_fields_become_a_quoted_grant_and_odd_text_never_parses() {
        let g = RevokedGrant {
            user: "app'; DROP USER root; --".into(),
            host: "%".into(),
            db: "sh`op".into(),
            table: "*".into(),
            privilege: "INSERT",
        };
        assert_eq!(g.grant_sql(), "GRANT INSERT ON `sh``op`.* TO 'app''; DROP USER root; --'@'%'");
        assert_eq!(parse_level("`sh``op`.`t`"), Some(("sh`op".into(), "t".into())));
        assert_eq!(parse_level("*.*"), Some(("*".into(), "*".into())));
        assert_eq!(parse_level("`db`.* ; DROP USER root"), None);
        assert_eq!(parse_account("'app'@'%'"), Some(("app".into(), "%".into())));
        assert_eq!(parse_account("'a''b'@'h' ; DROP USER x"), None);
        assert_eq!(known_write("insert"), Some("INSERT"));
        assert_eq!(known_write("ALL PRIVILEGES"), None);
        assert_eq!(known_write("SUPER"), None);
    }

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
