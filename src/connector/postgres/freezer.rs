//! PostgreSQL's freezer for a cutover: every login role but the exempt ones (and ferry's
//! own) gets `default_transaction_read_only = on` and its sessions are ended, so new and
//! reconnecting sessions cannot write. What each role had before is kept in
//! `ferry.ferry_freeze` and restored exactly. Proven by a write from a throw-away role
//! that holds only INSERT on a ferry table, as an application account would.

use sqlx::Row as _;
use sqlx::postgres::PgConnection;

use super::names::FREEZE_TABLE;
use super::{PgEndpoint, ferry_table, ident, migrate, string_literal};
use crate::connector::ConnectorError;
use crate::connector::registry::{FreezeOutcome, FreezeRequest};
use crate::model::{FreezeMethod, now_micros};

/// The role the probe write uses.
pub const PROBE_ROLE: &str = "ferry_freeze_probe";
const PROBE_TABLE: &str = "ferry_probe";

/// Freezes the server as asked and tries the probe write.
pub async fn freeze_and_probe(ep: &PgEndpoint, how: &FreezeRequest) -> Result<FreezeOutcome, ConnectorError> {
    if how.method == FreezeMethod::Revoke {
        return Err(ConnectorError::Setup {
            endpoint: ep.name.clone(),
            problem: "PostgreSQL endpoints are frozen read-only; revoking grants is not supported by this version"
                .into(),
            fix: "set [task.cutover] freeze = \"read-only\"".into(),
        });
    }
    let mut conn = ep.connect().await?;
    migrate::run(ep, &mut conn).await?;
    let password = format!("p{:x}", fastrand::u64(..));
    let setup = format!(
        "CREATE TABLE IF NOT EXISTS {probe} (id bigserial PRIMARY KEY, ts bigint NOT NULL);
         DO $$ BEGIN
           IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = {role_lit}) THEN CREATE ROLE {role} LOGIN; END IF;
         END $$;
         ALTER ROLE {role} LOGIN PASSWORD {pw};
         GRANT USAGE ON SCHEMA ferry TO {role};
         GRANT INSERT ON {probe} TO {role};
         GRANT USAGE ON SEQUENCE {seq} TO {role};",
        probe = ferry_table(PROBE_TABLE),
        role = ident(PROBE_ROLE),
        role_lit = string_literal(PROBE_ROLE),
        pw = string_literal(&password),
        seq = ferry_table("ferry_probe_id_seq"),
    );
    ep.exec(&mut conn, "creating the freeze probe role", &setup).await?;
    let mut exempt: Vec<String> = how.exempt_users.clone();
    exempt.push(ep.user.clone());
    let roles: Vec<(String, Option<String>)> = sqlx::query(
        "SELECT r.rolname::text, (SELECT substr(c, length('default_transaction_read_only=') + 1) FROM pg_db_role_setting s, unnest(s.setconfig) c \
           WHERE s.setrole = r.oid AND s.setdatabase = 0 AND c LIKE 'default_transaction_read_only=%') \
         FROM pg_roles r WHERE r.rolcanlogin AND r.rolname <> ALL($1) AND r.rolname NOT LIKE 'pg\\_%'",
    )
    .bind(&exempt)
    .fetch_all(&mut conn)
    .await
    .map_err(ep.error("listing login roles"))?
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect();
    let now = now_micros();
    for (role, setting) in &roles {
        // The first freeze records what the role had; a repeated freeze keeps that.
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO {} (role, setting, since_us) VALUES ($1, $2, $3) ON CONFLICT (role) DO NOTHING",
            ferry_table(FREEZE_TABLE)
        )))
        .bind(role)
        .bind(setting)
        .bind(now)
        .execute(&mut conn)
        .await
        .map_err(ep.error("recording the freeze"))?;
        ep.exec(
            &mut conn,
            &format!("freezing role {role}"),
            &format!("ALTER ROLE {} SET default_transaction_read_only = on", ident(role)),
        )
        .await?;
    }
    let names: Vec<String> = roles.iter().map(|(r, _)| r.clone()).collect();
    let ended: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = ANY($1) AND pid <> pg_backend_pid()) x",
    )
    .bind(&names)
    .fetch_one(&mut conn)
    .await
    .map_err(ep.error("ending the frozen roles' sessions"))?;
    let probe = probe_write(ep, &password).await;
    Ok(FreezeOutcome { count: names.len() + usize::try_from(ended).unwrap_or(0), probe })
}

/// The probe: an INSERT as the probe role, `Ok(Err(message))` when refused.
async fn probe_write(ep: &PgEndpoint, password: &str) -> Result<Result<(), String>, ConnectorError> {
    use sqlx::Connection;
    let opts = ep.options().username(PROBE_ROLE).password(password);
    let mut c = PgConnection::connect_with(&opts).await.map_err(ep.error("connecting as the freeze probe role"))?;
    let r = sqlx::query(sqlx::AssertSqlSafe(format!("INSERT INTO {} (ts) VALUES ($1)", ferry_table(PROBE_TABLE))))
        .bind(now_micros())
        .execute(&mut c)
        .await;
    let _ = c.close().await;
    Ok(match r {
        Ok(_) => Ok(()),
        Err(e) => Err(e.to_string()),
    })
}

/// Lifts the freeze: each role gets back exactly the setting it had.
pub async fn unfreeze(ep: &PgEndpoint) -> Result<(), ConnectorError> {
    let mut conn = ep.connect().await?;
    let rows =
        match sqlx::query(sqlx::AssertSqlSafe(format!("SELECT role, setting FROM {}", ferry_table(FREEZE_TABLE))))
            .fetch_all(&mut conn)
            .await
        {
            Ok(rows) => rows,
            Err(e) if super::sqlstate(&e).as_deref() == Some("42P01") => return Ok(()),
            Err(e) => return Err(ep.error("reading the freeze record")(e)),
        };
    for r in rows {
        let (role, setting): (String, Option<String>) = (r.get(0), r.get(1));
        let sql = match &setting {
            Some(s) => format!("ALTER ROLE {} SET default_transaction_read_only = {}", ident(&role), string_literal(s)),
            None => format!("ALTER ROLE {} RESET default_transaction_read_only", ident(&role)),
        };
        // A role dropped meanwhile has nothing to restore.
        let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
            .bind(&role)
            .fetch_one(&mut conn)
            .await
            .map_err(ep.error("looking up a frozen role"))?;
        if exists {
            ep.exec(&mut conn, &format!("unfreezing role {role}"), &sql).await?;
        }
        sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {} WHERE role = $1", ferry_table(FREEZE_TABLE))))
            .bind(&role)
            .execute(&mut conn)
            .await
            .map_err(ep.error("clearing the freeze record"))?;
    }
    Ok(())
}

/// Since when (µs) the server is frozen, if it is.
pub async fn frozen_since(ep: &PgEndpoint) -> Result<Option<i64>, ConnectorError> {
    let mut conn = ep.connect().await?;
    match sqlx::query_scalar::<_, Option<i64>>(sqlx::AssertSqlSafe(format!(
        "SELECT min(since_us) FROM {}",
        ferry_table(FREEZE_TABLE)
    )))
    .fetch_one(&mut conn)
    .await
    {
        Ok(v) => Ok(v),
        Err(e) if super::sqlstate(&e).as_deref() == Some("42P01") => Ok(None),
        Err(e) => Err(ep.error("reading the freeze record")(e)),
    }
}
