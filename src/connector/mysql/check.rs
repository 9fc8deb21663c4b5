//! Preflight of MySQL/MariaDB endpoints for `ferry check` and `ferry run`: the binlog
//! settings CDC needs, the account's privileges, primary keys, the globs and the binlog
//! retention, each problem with the exact statement or setting that fixes it.
//!
//! Read-only: it runs `SHOW GLOBAL VARIABLES`, `SHOW GRANTS` and reads
//! `information_schema`; it never writes, not even ferry's own database.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use mysql_async::Conn;
use mysql_async::prelude::{FromRow, Queryable};

use super::{FERRY_DB, MysqlEndpoint, ident, string_literal};

/// Rows per second a snapshot is assumed to copy at when estimating its duration
/// (conservative: one chunked reader on a busy server).
pub const SNAPSHOT_ROWS_PER_SEC: u64 = 50_000;

/// Bytes of `data_length` taken as one row when estimating a snapshot (wide rows copy slower).
const BYTES_PER_ROW: u64 = 256;

/// How long to wait for a server to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Databases that are never synced.
const SYSTEM_DATABASES: [&str; 5] = ["mysql", "information_schema", "performance_schema", "sys", FERRY_DB];

/// Privileges ferry needs on a target database it writes.
const WRITE_PRIVILEGES: [&str; 5] = ["SELECT", "INSERT", "UPDATE", "DELETE", "CREATE"];

/// Privileges ferry needs on its own database: it writes there, and `ALTER` moves its
/// tables to a new schema version at start (see `migrate`).
const FERRY_DB_PRIVILEGES: [&str; 6] = ["SELECT", "INSERT", "UPDATE", "DELETE", "CREATE", "ALTER"];

/// One thing wrong with an endpoint, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Problem {
    /// Endpoint name.
    pub endpoint: String,
    /// What is wrong (names the server where it helps).
    pub problem: String,
    /// The exact statement or setting that fixes it.
    pub fix: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "endpoint {}: {}\n  fix: {}", self.endpoint, self.problem, self.fix)
    }
}

/// How an endpoint is used as a source.
#[derive(Debug, Clone, Copy)]
pub struct SourceOptions {
    /// A glob that matches no table is a problem (the forward direction; the reverse
    /// direction of a two-way task may find its tables missing until the snapshot made them).
    pub require_match: bool,
    /// Rows per second the snapshot will copy at, or `None` when no snapshot is taken
    /// (then binlog retention is not compared with a snapshot's duration).
    pub snapshot_rows_per_sec: Option<u64>,
}

/// What the source preflight found.
#[derive(Debug, Clone, Default)]
pub struct SourceReport {
    /// Problems, in the order found.
    pub problems: Vec<Problem>,
    /// The tables the globs matched, as (database, table), sorted.
    pub tables: Vec<(String, String)>,
}

/// Checks an endpoint that changes are read from: binlog settings, replication and
/// SELECT privileges, ferry's own database, primary keys, globs and binlog retention.
pub async fn preflight_source(ep: &MysqlEndpoint, patterns: &[String], opts: SourceOptions) -> SourceReport {
    let mut report = SourceReport::default();
    let Some(mut s) = Session::open(ep, &mut report.problems).await else {
        return report;
    };
    if let Err(p) = source_checks(ep, &mut s, patterns, opts, &mut report).await {
        report.problems.push(p);
    }
    s.close().await;
    report
}

/// Checks an endpoint changes are applied to: write privileges on ferry's own database
/// and on the databases of `tables` (target names, as (database, table)).
pub async fn preflight_target(ep: &MysqlEndpoint, tables: &[(String, String)]) -> Vec<Problem> {
    let mut problems = Vec::new();
    let Some(s) = Session::open(ep, &mut problems).await else {
        return problems;
    };
    if let Some(p) = ferry_db_privileges(ep, &s, "its checkpoint, conflict log and lease") {
        problems.push(p);
    }
    let mut missing: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (db, t) in tables {
        for p in WRITE_PRIVILEGES {
            let ok = if p == "CREATE" {
                s.grants.on_db(p, db) || s.grants.on_table(p, db, t)
            } else {
                s.grants.on_table(p, db, t)
            };
            if !ok {
                missing.entry(db).or_default().insert(p);
            }
        }
    }
    for (db, privs) in missing {
        let list = ordered(&privs);
        problems.push(Problem {
            endpoint: ep.name.clone(),
            problem: format!(
                "the account {} on {} lacks {} on database {} (ferry creates missing tables there and applies changes)",
                s.account,
                ep.display,
                list,
                ident(db)
            ),
            fix: format!("GRANT {list} ON {}.* TO {};", ident(db), s.account),
        });
    }
    s.close().await;
    problems
}

async fn source_checks(
    ep: &MysqlEndpoint,
    s: &mut Session,
    patterns: &[String],
    opts: SourceOptions,
    report: &mut SourceReport,
) -> Result<(), Problem> {
    let vars: BTreeMap<String, String> = s
        .query(
            ep,
            "reading the binlog settings",
            "SHOW GLOBAL VARIABLES WHERE Variable_name IN ('log_bin', 'binlog_format', 'binlog_row_image', \
             'binlog_row_metadata', 'log_bin_compress', 'binlog_transaction_compression', \
             'binlog_expire_logs_seconds', 'expire_logs_days')",
        )
        .await?
        .into_iter()
        .map(|(k, v): (String, String)| (k.to_ascii_lowercase(), v))
        .collect();
    let problems = &mut report.problems;
    let tables_out = &mut report.tables;
    problems.extend(binlog_settings(ep, s, &vars));
    problems.extend(replication_privileges(ep, s));
    if let Some(p) = ferry_db_privileges(ep, s, "its heartbeat and snapshot watermarks") {
        problems.push(p);
    }

    // Tables: only those the account has some privilege on are visible.
    let all: Vec<(String, String, Option<u64>, Option<u64>)> = s
        .query(
            ep,
            "listing tables",
            format!(
                "SELECT TABLE_SCHEMA, TABLE_NAME, TABLE_ROWS, DATA_LENGTH FROM information_schema.TABLES \
                 WHERE TABLE_TYPE IN ('BASE TABLE', 'SYSTEM VERSIONED') AND TABLE_SCHEMA NOT IN ({}) \
                 ORDER BY TABLE_SCHEMA, TABLE_NAME",
                SYSTEM_DATABASES.iter().map(|d| format!("'{d}'")).collect::<Vec<_>>().join(", ")
            ),
        )
        .await?;
    let default_db = ep.opts.db_name().map(str::to_string);
    let mut picked: BTreeSet<usize> = BTreeSet::new();
    let mut unseen_dbs: BTreeSet<String> = BTreeSet::new();
    for p in patterns {
        let full = qualify(p, default_db.as_deref());
        let Ok(pat) = glob::Pattern::new(&full) else {
            problems.push(Problem {
                endpoint: ep.name.clone(),
                problem: format!("table pattern {p:?} is not a valid glob"),
                fix: "use * and ? wildcards, e.g. \"shop.*\"".into(),
            });
            continue;
        };
        let hits: Vec<usize> = (0..all.len()).filter(|&i| pat.matches(&format!("{}.{}", all[i].0, all[i].1))).collect();
        if !hits.is_empty() {
            picked.extend(hits);
            continue;
        }
        if !opts.require_match {
            continue;
        }
        let literal_db = full.split_once('.').map(|(d, _)| d).filter(|d| !d.contains(['*', '?', '[']));
        match literal_db {
            Some(db) if !s.grants.on_db("SELECT", db) => {
                // Tables the account has no privilege on are invisible to it: the missing
                // privilege is the problem to report.
                unseen_dbs.insert(db.to_string());
            }
            _ => {
                let dbs: BTreeSet<&str> = all.iter().map(|t| t.0.as_str()).collect();
                let seen =
                    if dbs.is_empty() { "none".to_string() } else { dbs.into_iter().collect::<Vec<_>>().join(", ") };
                let hint = if s.grants.global("SELECT") {
                    String::new()
                } else {
                    format!(
                        "; the account {} sees only tables it has privileges on: if they exist, GRANT SELECT ON `db`.* TO {};",
                        s.account, s.account
                    )
                };
                problems.push(Problem {
                    endpoint: ep.name.clone(),
                    problem: format!(
                        "no table matches {full:?} on {} (databases with tables there: {seen})",
                        ep.display
                    ),
                    fix: format!(
                        "correct the task's `tables` list (MySQL patterns are database.table globs) or create the table first{hint}"
                    ),
                });
            }
        }
    }
    for db in unseen_dbs {
        problems.push(Problem {
            endpoint: ep.name.clone(),
            problem: format!(
                "the account {} on {} has no SELECT privilege on database {}, so ferry cannot see, snapshot or verify its tables",
                s.account,
                ep.display,
                ident(&db)
            ),
            fix: format!("GRANT SELECT ON {}.* TO {};", ident(&db), s.account),
        });
    }
    let tables: Vec<&(String, String, Option<u64>, Option<u64>)> = picked.iter().map(|&i| &all[i]).collect();
    *tables_out = tables.iter().map(|t| (t.0.clone(), t.1.clone())).collect();

    // SELECT on each visible table (another privilege can make it visible without SELECT).
    let mut no_select: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for t in &tables {
        if !s.grants.on_table("SELECT", &t.0, &t.1) {
            no_select.entry(&t.0).or_default().push(&t.1);
        }
    }
    for (db, names) in no_select {
        let list: Vec<String> = names.iter().map(|n| format!("{}.{}", ident(db), ident(n))).collect();
        problems.push(Problem {
            endpoint: ep.name.clone(),
            problem: format!(
                "the account {} on {} may not SELECT from {}, so ferry cannot snapshot or verify it",
                s.account,
                ep.display,
                list.join(", ")
            ),
            fix: format!("GRANT SELECT ON {}.* TO {};", ident(db), s.account),
        });
    }

    problems.extend(primary_keys(ep, s, tables_out).await?);

    if let Some(rate) = opts.snapshot_rows_per_sec
        && vars.get("log_bin").is_some_and(|v| on(v))
    {
        let rows: u64 = tables.iter().map(|t| t.2.unwrap_or(0)).sum();
        let bytes: u64 = tables.iter().map(|t| t.3.unwrap_or(0)).sum();
        if let Some(p) = retention(ep, &vars, rows, bytes, rate) {
            problems.push(p);
        }
    }
    Ok(())
}

/// `db.table` globs; a pattern without a database part is relative to the URL's database.
fn qualify(pattern: &str, default_db: Option<&str>) -> String {
    match default_db {
        Some(db) if !pattern.contains('.') => format!("{db}.{pattern}"),
        _ => pattern.to_string(),
    }
}

fn on(v: &str) -> bool {
    matches!(v.to_ascii_uppercase().as_str(), "ON" | "1" | "YES" | "TRUE")
}

/// A line for the server's my.cnf so a `SET GLOBAL` survives a restart.
fn persist(setting: &str) -> String {
    format!("and put `{setting}` under [mariadbd] (MySQL: [mysqld]) in the server's my.cnf so it survives a restart")
}

fn binlog_settings(ep: &MysqlEndpoint, s: &Session, vars: &BTreeMap<String, String>) -> Vec<Problem> {
    let mut out = Vec::new();
    let problem = |problem: String, fix: String| Problem { endpoint: ep.name.clone(), problem, fix };
    let get = |k: &str| vars.get(k).map(String::as_str);
    let log_bin = get("log_bin").is_some_and(on);
    if !log_bin {
        out.push(problem(
            format!(
                "binary logging is off on {} (log_bin = {}): ferry reads every change from the binlog",
                ep.display,
                get("log_bin").unwrap_or("missing")
            ),
            "log_bin cannot be switched on at run time: add `log_bin = bin`, `binlog_format = ROW`, \
             `binlog_row_image = FULL`, `binlog_row_metadata = FULL` and a unique `server_id` under [mariadbd] \
             in the server's my.cnf (or start mariadbd with --log-bin --binlog-format=ROW --binlog-row-image=FULL \
             --binlog-row-metadata=FULL --server-id=N), then restart the server"
                .into(),
        ));
    }
    let format = get("binlog_format").unwrap_or("missing");
    if !format.eq_ignore_ascii_case("ROW") {
        out.push(problem(
            format!(
                "binlog_format is {format} on {}: ferry needs ROW events (the changed rows, not the statements)",
                ep.display
            ),
            format!(
                "SET GLOBAL binlog_format = 'ROW'; (sessions already open keep their format: reconnect the applications) {}",
                persist("binlog_format = ROW")
            ),
        ));
    }
    let image = get("binlog_row_image").unwrap_or("missing");
    if !image.eq_ignore_ascii_case("FULL") {
        out.push(problem(
            format!(
                "binlog_row_image is {image} on {}: ferry needs every column before and after each change (conflict detection, updates of any column)",
                ep.display
            ),
            format!("SET GLOBAL binlog_row_image = 'FULL'; {}", persist("binlog_row_image = FULL")),
        ));
    }
    match get("binlog_row_metadata") {
        None => out.push(problem(
            format!(
                "server {} ({}) has no binlog_row_metadata setting: ferry needs column names and signedness in row events",
                ep.display, s.version
            ),
            "upgrade to MariaDB 10.5 or later (or MySQL 8.0), then set binlog_row_metadata = FULL".into(),
        )),
        Some(v) if !v.eq_ignore_ascii_case("FULL") => out.push(problem(
            format!(
                "binlog_row_metadata is {v} on {}: without FULL, row events lack column names and signedness (BIGINT UNSIGNED values would decode wrongly)",
                ep.display
            ),
            format!("SET GLOBAL binlog_row_metadata = 'FULL'; {}", persist("binlog_row_metadata = FULL")),
        )),
        Some(_) => {}
    }
    if log_bin {
        for var in ["log_bin_compress", "binlog_transaction_compression"] {
            if get(var).is_some_and(on) {
                out.push(problem(
                    format!("{var} is ON on {}: ferry cannot read compressed binlog events", ep.display),
                    format!(
                        "SET GLOBAL {var} = OFF; then FLUSH BINARY LOGS; so ferry starts on an uncompressed binlog, {}",
                        persist(&format!("{var} = OFF"))
                    ),
                ));
            }
        }
    }
    out
}

/// Checks an endpoint of a two-way task: ferry versions each row of `tables` (database,
/// table) with triggers, which the account must be allowed to create.
pub async fn preflight_two_way(ep: &MysqlEndpoint, tables: &[(String, String)]) -> Vec<Problem> {
    let mut problems = Vec::new();
    let Some(mut s) = Session::open(ep, &mut problems).await else {
        return problems;
    };
    let missing: BTreeSet<&str> =
        tables.iter().filter(|(db, t)| !s.grants.on_table("TRIGGER", db, t)).map(|(db, _)| db.as_str()).collect();
    for db in missing {
        problems.push(Problem {
            endpoint: ep.name.clone(),
            problem: format!(
                "the account {} on {} lacks TRIGGER on database {}: two-way versions each row with ferry's triggers",
                s.account,
                ep.display,
                ident(db)
            ),
            fix: format!("GRANT TRIGGER ON {}.* TO {};", ident(db), s.account),
        });
    }
    if !s.grants.global("SUPER") {
        let trusted: Vec<String> = s
            .query(ep, "reading log_bin_trust_function_creators", "SELECT @@GLOBAL.log_bin_trust_function_creators")
            .await
            .unwrap_or_default();
        if trusted.first().map(String::as_str) != Some("1") {
            problems.push(Problem {
                endpoint: ep.name.clone(),
                problem: format!(
                    "the account {} on {} may not create triggers while binary logging is on (it lacks SUPER and log_bin_trust_function_creators is off); two-way versions each row with ferry's triggers",
                    s.account, ep.display
                ),
                fix: "SET GLOBAL log_bin_trust_function_creators = 1 (and log_bin_trust_function_creators = 1 in my.cnf)".into(),
            });
        }
    }
    s.close().await;
    problems
}

fn replication_privileges(ep: &MysqlEndpoint, s: &Session) -> Vec<Problem> {
    let mut out = Vec::new();
    if !s.grants.global("REPLICATION SLAVE") {
        out.push(Problem {
            endpoint: ep.name.clone(),
            problem: format!(
                "the account {} on {} lacks the REPLICATION SLAVE privilege: ferry reads the binlog as a replica does",
                s.account, ep.display
            ),
            fix: format!("GRANT REPLICATION SLAVE ON *.* TO {};", s.account),
        });
    }
    let client = ["REPLICATION CLIENT", "BINLOG MONITOR", "SUPER"];
    if !client.iter().any(|p| s.grants.global(p)) {
        // MariaDB 10.5 renamed REPLICATION CLIENT to BINLOG MONITOR (the old name is an alias).
        let name = if s.binlog_monitor() { "BINLOG MONITOR" } else { "REPLICATION CLIENT" };
        out.push(Problem {
            endpoint: ep.name.clone(),
            problem: format!(
                "the account {} on {} lacks the {name} privilege (REPLICATION CLIENT): ferry reads binlog positions with SHOW MASTER STATUS and SHOW BINARY LOGS",
                s.account, ep.display
            ),
            fix: format!("GRANT {name} ON *.* TO {};", s.account),
        });
    }
    out
}

fn ferry_db_privileges(ep: &MysqlEndpoint, s: &Session, what: &str) -> Option<Problem> {
    let missing: BTreeSet<&str> = FERRY_DB_PRIVILEGES.into_iter().filter(|p| !s.grants.on_db(p, FERRY_DB)).collect();
    if missing.is_empty() {
        return None;
    }
    let list = ordered(&missing);
    Some(Problem {
        endpoint: ep.name.clone(),
        problem: format!(
            "the account {} on {} lacks {list} on ferry's own database {} (ferry creates it and keeps {what} there)",
            s.account,
            ep.display,
            ident(FERRY_DB)
        ),
        fix: format!("GRANT {list} ON {}.* TO {};", ident(FERRY_DB), s.account),
    })
}

/// Privileges in the order GRANT statements list them here.
fn ordered(privs: &BTreeSet<&str>) -> String {
    FERRY_DB_PRIVILEGES.into_iter().filter(|p| privs.contains(p)).collect::<Vec<_>>().join(", ")
}

async fn primary_keys(
    ep: &MysqlEndpoint,
    s: &mut Session,
    tables: &[(String, String)],
) -> Result<Vec<Problem>, Problem> {
    if tables.is_empty() {
        return Ok(Vec::new());
    }
    let dbs: BTreeSet<&str> = tables.iter().map(|t| t.0.as_str()).collect();
    let in_list = dbs.iter().map(|d| string_literal(d)).collect::<Vec<_>>().join(", ");
    // (db, table, index, non_unique, column, nullable) in index column order.
    let stats: Vec<(String, String, String, i64, String, String)> = s
        .query(
            ep,
            "reading the tables' keys",
            format!(
                "SELECT TABLE_SCHEMA, TABLE_NAME, INDEX_NAME, NON_UNIQUE, COLUMN_NAME, NULLABLE \
                 FROM information_schema.STATISTICS WHERE TABLE_SCHEMA IN ({in_list}) \
                 ORDER BY TABLE_SCHEMA, TABLE_NAME, INDEX_NAME, SEQ_IN_INDEX"
            ),
        )
        .await?;
    // Per table: its unique indexes as (columns, all NOT NULL).
    let mut keys: BTreeMap<(&str, &str), BTreeMap<&str, (Vec<&str>, bool)>> = BTreeMap::new();
    for (db, t, idx, non_unique, col, nullable) in &stats {
        if *non_unique != 0 {
            continue;
        }
        let e = keys.entry((db, t)).or_default().entry(idx).or_insert((Vec::new(), true));
        e.0.push(col);
        e.1 &= !nullable.eq_ignore_ascii_case("YES");
    }
    let mut out = Vec::new();
    for (db, t) in tables {
        let idx = keys.get(&(db.as_str(), t.as_str()));
        if idx.is_some_and(|i| i.contains_key("PRIMARY")) {
            continue;
        }
        let name = format!("{}.{}", ident(db), ident(t));
        let candidate = idx.and_then(|i| i.values().filter(|(_, not_null)| *not_null).min_by_key(|(c, _)| c.len()));
        let fix = match candidate {
            Some((cols, _)) => {
                let cols: Vec<String> = cols.iter().map(|c| ident(c)).collect();
                format!(
                    "ALTER TABLE {name} ADD PRIMARY KEY ({}); (its unique key on NOT NULL columns), or leave the table out of the task's `tables`",
                    cols.join(", ")
                )
            }
            None => {
                let cols: Vec<String> = s
                    .query(
                        ep,
                        "reading a table's columns",
                        format!(
                            "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = {} AND TABLE_NAME = {}",
                            string_literal(db),
                            string_literal(t)
                        ),
                    )
                    .await?;
                let id = ["id", "row_id", "pk_id"]
                    .into_iter()
                    .find(|n| !cols.iter().any(|c| c.eq_ignore_ascii_case(n)))
                    .unwrap_or("ferry_pk");
                format!(
                    "ALTER TABLE {name} ADD COLUMN {} BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY; (or ALTER TABLE {name} ADD PRIMARY KEY over columns that identify a row, or leave the table out of the task's `tables`)",
                    ident(id)
                )
            }
        };
        out.push(Problem {
            endpoint: ep.name.clone(),
            problem: format!(
                "table {name} on {} has no primary key: ferry needs one to apply each change exactly once",
                ep.display
            ),
            fix,
        });
    }
    Ok(out)
}

/// Compares binlog retention with the expected snapshot time: the binlog written while the
/// snapshot runs must still be there when the stream catches up.
fn retention(ep: &MysqlEndpoint, vars: &BTreeMap<String, String>, rows: u64, bytes: u64, rate: u64) -> Option<Problem> {
    let rate = rate.clamp(1, SNAPSHOT_ROWS_PER_SEC);
    let secs_var = vars.get("binlog_expire_logs_seconds").and_then(|v| v.trim().parse::<u64>().ok());
    let days_var = vars.get("expire_logs_days").and_then(|v| v.trim().parse::<f64>().ok());
    let (kept, setting) = match (secs_var, days_var) {
        (Some(s), _) if s > 0 => (s, format!("binlog_expire_logs_seconds = {s}")),
        (_, Some(d)) if d > 0.0 => ((d * 86400.0).round() as u64, format!("expire_logs_days = {d}")),
        _ => return None, // 0 everywhere: binlogs are kept until purged by hand
    };
    let snapshot = rows.max(bytes / BYTES_PER_ROW).div_ceil(rate);
    let needed = snapshot.saturating_mul(2);
    if kept >= needed {
        return None;
    }
    let n = needed.div_ceil(86_400).max(1) * 86_400;
    let fix = if secs_var.is_some() {
        format!(
            "SET GLOBAL binlog_expire_logs_seconds = {n}; {}",
            persist(&format!("binlog_expire_logs_seconds = {n}"))
        )
    } else {
        let d = n / 86_400;
        format!("SET GLOBAL expire_logs_days = {d}; {}", persist(&format!("expire_logs_days = {d}")))
    };
    Some(Problem {
        endpoint: ep.name.clone(),
        problem: format!(
            "binlog retention on {} is {} ({setting}) but the snapshot of about {rows} rows ({} MiB) is expected to take about {} at {rate} rows/s; \
             ferry needs the binlog kept at least twice that ({}) so the stream can catch up after the snapshot",
            ep.display,
            human(kept),
            bytes / (1024 * 1024),
            human(snapshot),
            human(needed)
        ),
        fix,
    })
}

/// "45 s", "12 min", "3 h 5 min", "2 d 4 h".
fn human(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs} s"),
        60..3600 => format!("{} min", secs / 60),
        3600..86400 => format!("{} h {} min", secs / 3600, secs % 3600 / 60),
        _ => format!("{} d {} h", secs / 86400, secs % 86400 / 3600),
    }
}

/// An open, read-only look at one server.
struct Session {
    conn: Conn,
    version: String,
    /// `'user'@'host'` as GRANT wants it.
    account: String,
    grants: Grants,
}

impl Session {
    /// Connects and reads the version, the account and its grants; a failure is one
    /// problem naming the server.
    async fn open(ep: &MysqlEndpoint, problems: &mut Vec<Problem>) -> Option<Session> {
        let conn = match tokio::time::timeout(CONNECT_TIMEOUT, ep.connect()).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                problems.push(connect_problem(ep, &e));
                return None;
            }
            Err(_) => {
                problems.push(Problem {
                    endpoint: ep.name.clone(),
                    problem: format!("cannot connect to {}: no answer within {CONNECT_TIMEOUT:?}", ep.display),
                    fix: "start the server, or correct host and port in the endpoint's url (and check firewalls between here and there)".into(),
                });
                return None;
            }
        };
        let mut s = Session { conn, version: String::new(), account: String::new(), grants: Grants::default() };
        match s.identify(ep).await {
            Ok(()) => Some(s),
            Err(p) => {
                problems.push(p);
                s.close().await;
                None
            }
        }
    }

    async fn identify(&mut self, ep: &MysqlEndpoint) -> Result<(), Problem> {
        let who: Vec<(String, String)> =
            self.query(ep, "reading the server version", "SELECT VERSION(), CURRENT_USER()").await?;
        let (version, current) = who.into_iter().next().unwrap_or_default();
        self.version = version;
        self.account = account(&current);
        let lines: Vec<String> = self.query(ep, "reading the account's privileges", "SHOW GRANTS").await?;
        self.grants = Grants(lines.iter().filter_map(|l| parse_grant(l)).collect());
        Ok(())
    }

    /// MariaDB 10.5+ calls REPLICATION CLIENT `BINLOG MONITOR`.
    fn binlog_monitor(&self) -> bool {
        if !self.version.contains("MariaDB") {
            return false;
        }
        let mut parts = self.version.split(['.', '-']).map(|p| p.parse::<u32>().unwrap_or(0));
        let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
        (major, minor) >= (10, 5)
    }

    async fn query<T: FromRow + Send + 'static>(
        &mut self,
        ep: &MysqlEndpoint,
        what: &str,
        sql: impl AsRef<str>,
    ) -> Result<Vec<T>, Problem> {
        self.conn.query(sql.as_ref()).await.map_err(|e| Problem {
            endpoint: ep.name.clone(),
            problem: format!("{what} on {} failed: {e}", ep.display),
            fix: "check that the account in the url may read information_schema and run SHOW GRANTS / SHOW GLOBAL VARIABLES".into(),
        })
    }

    async fn close(self) {
        let _ = self.conn.disconnect().await;
    }
}

fn connect_problem(ep: &MysqlEndpoint, e: &crate::connector::ConnectorError) -> Problem {
    use crate::connector::ConnectorError;
    let (detail, fix) = match e {
        ConnectorError::Mysql { source, .. } => {
            let fix = match source.as_ref() {
                mysql_async::Error::Server(s) if s.code == 1045 => {
                    "correct the user and password in the endpoint's url, or create the account on the server (CREATE USER 'USER'@'HOST' IDENTIFIED BY '...';)".to_string()
                }
                mysql_async::Error::Server(s) if s.code == 1049 => {
                    "create the database, or remove the database part from the endpoint's url".to_string()
                }
                mysql_async::Error::Server(s) if s.code == 1130 => {
                    "allow this host: create the account for the host ferry connects from on the server".to_string()
                }
                mysql_async::Error::Io(_) | mysql_async::Error::Driver(_) => {
                    "start the server, or correct host and port in the endpoint's url".to_string()
                }
                _ => "check that the server runs and that the endpoint's url is right".to_string(),
            };
            (source.to_string(), fix)
        }
        other => (other.to_string(), "check the endpoint's url".to_string()),
    };
    Problem { endpoint: ep.name.clone(), problem: format!("cannot connect to {}: {detail}", ep.display), fix }
}

/// `user@host` from CURRENT_USER() as `'user'@'host'`.
fn account(current: &str) -> String {
    let (user, host) = current.rsplit_once('@').unwrap_or((current, "%"));
    format!("{}@{}", string_literal(user), string_literal(host))
}

/// Where a grant applies.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Level {
    /// `*.*`
    Global,
    /// `db`.* — the name is a LIKE pattern (`_` and `%` are wildcards unless escaped).
    Db(String),
    /// `db`.`table`
    Table(String, String),
}

/// One `GRANT ... ON ... TO ...` line of SHOW GRANTS.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Grant {
    level: Level,
    /// Upper-case privilege names; `ALL` for ALL PRIVILEGES. Column privileges are left out.
    privs: BTreeSet<String>,
}

/// The account's (and its current role's) grants.
#[derive(Debug, Default)]
struct Grants(Vec<Grant>);

impl Grants {
    fn has(g: &Grant, p: &str) -> bool {
        g.privs.contains("ALL") || g.privs.contains(p)
    }

    /// A global privilege.
    fn global(&self, p: &str) -> bool {
        self.0.iter().any(|g| g.level == Level::Global && Self::has(g, p))
    }

    /// A privilege on every table of a database (global or database level).
    fn on_db(&self, p: &str, db: &str) -> bool {
        self.0.iter().any(|g| {
            Self::has(g, p)
                && match &g.level {
                    Level::Global => true,
                    Level::Db(pat) => like(pat, db),
                    Level::Table(..) => false,
                }
        })
    }

    /// A privilege on one table.
    fn on_table(&self, p: &str, db: &str, table: &str) -> bool {
        self.on_db(p, db)
            || self.0.iter().any(|g| Self::has(g, p) && matches!(&g.level, Level::Table(d, t) if d == db && t == table))
    }
}

/// Parses one SHOW GRANTS line; `None` for role grants, PROXY, routines and anything else.
fn parse_grant(line: &str) -> Option<Grant> {
    let rest = line.trim().strip_prefix("GRANT ")?;
    let on = find_top(rest, " ON ")?;
    let to = find_top(rest, " TO ")?;
    if to < on {
        return None; // GRANT `role` TO ...
    }
    let privs_text = &rest[..on];
    let mut privs = BTreeSet::new();
    for p in split_top(privs_text) {
        let p = p.trim().to_ascii_uppercase();
        if p.contains('(') || p == "PROXY" {
            continue; // column privileges cover part of a table only
        }
        privs.insert(if p == "ALL PRIVILEGES" { "ALL".to_string() } else { p });
    }
    let target = rest[on + 4..to].trim();
    let level = parse_target(target)?;
    Some(Grant { level, privs })
}

/// `*.*`, `` `db`.* `` or `` `db`.`t` ``.
fn parse_target(t: &str) -> Option<Level> {
    if t == "*.*" {
        return Some(Level::Global);
    }
    let (db, rest) = take_ident(t)?;
    let rest = rest.strip_prefix('.')?;
    if rest == "*" {
        return Some(Level::Db(db));
    }
    let (table, tail) = take_ident(rest)?;
    tail.is_empty().then_some(Level::Table(db, table))
}

/// A backquoted (or bare) identifier at the start of `s`, and the rest.
fn take_ident(s: &str) -> Option<(String, &str)> {
    if let Some(body) = s.strip_prefix('`') {
        let mut out = String::new();
        let mut chars = body.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            if c == '`' {
                if matches!(chars.peek(), Some((_, '`'))) {
                    chars.next();
                    out.push('`');
                } else {
                    return Some((out, &body[i + 1..]));
                }
            } else {
                out.push(c);
            }
        }
        None
    } else {
        let end = s.find(['.', ' ']).unwrap_or(s.len());
        (end > 0 && !s[..end].contains(['*', '(', '\''])).then(|| (s[..end].to_string(), &s[end..]))
    }
}

/// Byte offset of `needle` outside quotes, backquotes and parentheses.
fn find_top(s: &str, needle: &str) -> Option<usize> {
    let mut depth = 0i32;
    let mut quote: Option<char> = None;
    for (i, c) in s.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None => match c {
                '`' | '\'' | '"' => quote = Some(c),
                '(' => depth += 1,
                ')' => depth -= 1,
                _ if depth == 0 && s[i..].starts_with(needle) => return Some(i),
                _ => {}
            },
        }
    }
    None
}

/// Splits a privilege list at commas outside parentheses and quotes.
fn split_top(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(i) = find_top(rest, ",") {
        out.push(&rest[..i]);
        rest = &rest[i + 1..];
    }
    out.push(rest);
    out
}

/// SQL LIKE as grants use it: `%` any run, `_` any one character, `\` escapes.
fn like(pattern: &str, text: &str) -> bool {
    fn go(p: &[char], t: &[char]) -> bool {
        match p.split_first() {
            None => t.is_empty(),
            Some(('%', rest)) => (0..=t.len()).any(|i| go(rest, &t[i..])),
            Some(('_', rest)) => !t.is_empty() && go(rest, &t[1..]),
            Some(('\\', rest)) if !rest.is_empty() => t.first() == Some(&rest[0]) && go(&rest[1..], &t[1..]),
            Some((c, rest)) => t.first() == Some(c) && go(rest, &t[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    go(&p, &t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_parse() {
        let g = parse_grant(
            "GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO `u`@`127.0.0.1` IDENTIFIED BY PASSWORD '*7B'",
        )
        .expect("grant");
        assert_eq!(g.level, Level::Global);
        assert!(g.privs.contains("REPLICATION SLAVE") && g.privs.contains("BINLOG MONITOR"));
        let g = parse_grant("GRANT SELECT, INSERT ON `zz\\_db`.* TO `u`@`%`").expect("grant");
        assert_eq!(g.level, Level::Db("zz\\_db".into()));
        let g =
            parse_grant("GRANT SELECT (`a`, `b`), UPDATE ON `d`.`t``x` TO `u`@`%` WITH GRANT OPTION").expect("grant");
        assert_eq!(g.level, Level::Table("d".into(), "t`x".into()));
        assert_eq!(g.privs.iter().cloned().collect::<Vec<_>>(), vec!["UPDATE".to_string()]);
        assert_eq!(parse_grant("GRANT `zz_role` TO `u`@`127.0.0.1`"), None);
        assert_eq!(parse_grant("GRANT EXECUTE ON PROCEDURE `d`.`p` TO `u`@`%`"), None);
        let all = parse_grant("GRANT ALL PRIVILEGES ON *.* TO `ferry`@`127.0.0.1` WITH GRANT OPTION").expect("grant");
        let grants = Grants(vec![all]);
        assert!(grants.global("REPLICATION SLAVE") && grants.on_table("DELETE", "x", "y"));
    }

    #[test]
    fn like_matches_grant_patterns() {
        assert!(like("zz\\_db", "zz_db"));
        assert!(!like("zz\\_db", "zzxdb"));
        assert!(like("zz_db", "zzxdb"));
        assert!(like("shop%", "shop_eu"));
        assert!(!like("shop", "shop2"));
    }

    #[test]
    fn accounts_quote_for_grant() {
        assert_eq!(account("ferry@127.0.0.1"), "'ferry'@'127.0.0.1'");
        assert_eq!(account("a@b@%"), "'a@b'@'%'");
    }

    #[test]
    fn retention_compares_with_twice_the_snapshot() {
        let ep = MysqlEndpoint::new("a", crate::model::SiteId::new("a"), "mysql://u:p@127.0.0.1:1").expect("url");
        let vars = |s: &str| BTreeMap::from([("binlog_expire_logs_seconds".to_string(), s.to_string())]);
        assert!(retention(&ep, &vars("0"), 10_000_000, 0, SNAPSHOT_ROWS_PER_SEC).is_none());
        assert!(retention(&ep, &vars("400"), 10_000_000, 0, SNAPSHOT_ROWS_PER_SEC).is_none());
        let p = retention(&ep, &vars("399"), 10_000_000, 0, SNAPSHOT_ROWS_PER_SEC).expect("too short");
        assert!(p.fix.starts_with("SET GLOBAL binlog_expire_logs_seconds = 86400;"), "{}", p.fix);
        assert_eq!(human(3725), "1 h 2 min");
    }
}
