//! Tables through the FE's MySQL-protocol query port (`?query_port=`): a table ferry
//! creates is keyed by the source's primary key (key columns first, as both require),
//! value columns nullable (a delete's line carries only the key): on Doris a
//! merge-on-write Unique Key table, on StarRocks a Primary Key table. A table that
//! exists is checked: the flavour's model, the primary key's columns as its key, and
//! every source column present.

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder, SslOpts};

use super::{DorisEndpoint, Flavor};
use crate::connector::ConnectorError;
use crate::model::TableSchema;

/// A connection to the query port.
pub async fn connect(ep: &DorisEndpoint, port: u16) -> Result<Conn, ConnectorError> {
    crate::connector::tls_provider();
    let mut opts = OptsBuilder::default()
        .ip_or_hostname(ep.host.clone())
        .tcp_port(port)
        .user(Some(ep.user.clone()))
        .pass(Some(ep.password.clone()))
        .prefer_socket(false);
    if ep.base.starts_with("https://") {
        let mut ssl = SslOpts::default();
        if let Some(ca) = &ep.ca {
            ssl = ssl.with_root_certs(vec![ca.clone().into()]);
        }
        opts = opts.ssl_opts(Some(ssl));
    }
    Conn::new(opts).await.map_err(|e| mysql(ep, format!("connecting to the query port {}:{port}", ep.host), e))
}

fn mysql(ep: &DorisEndpoint, what: String, e: mysql_async::Error) -> ConnectorError {
    ConnectorError::Mysql { endpoint: ep.name.clone(), what, source: Box::new(e) }
}

fn quote(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// The `CREATE TABLE` of a table ferry makes (column types already Doris's).
pub fn create_sql(flavor: Flavor, db: &str, table: &TableSchema) -> String {
    // StarRocks's DATETIME holds microseconds and takes no precision.
    let decl = |t: &str| match flavor {
        Flavor::StarRocks if t.eq_ignore_ascii_case("DATETIME(6)") => "DATETIME".to_string(),
        _ => t.to_string(),
    };
    let keys: Vec<&str> = table.primary_key.iter().map(|&i| table.columns[i].name.as_str()).collect();
    let mut cols = Vec::new();
    for &i in &table.primary_key {
        let c = &table.columns[i];
        cols.push(format!("  {} {} NOT NULL", quote(&c.name), decl(&c.decl_type)));
    }
    for (i, c) in table.columns.iter().enumerate() {
        if !table.primary_key.contains(&i) {
            cols.push(format!("  {} {} NULL", quote(&c.name), decl(&c.decl_type)));
        }
    }
    let key_list = keys.iter().map(|k| quote(k)).collect::<Vec<_>>().join(", ");
    let model = match flavor {
        Flavor::Doris => format!(
            "UNIQUE KEY({key_list})\nDISTRIBUTED BY HASH({key_list}) BUCKETS AUTO\nPROPERTIES (\"enable_unique_key_merge_on_write\" = \"true\")"
        ),
        // Without BUCKETS StarRocks (2.5.7+) sets the bucket count itself.
        Flavor::StarRocks => format!("PRIMARY KEY({key_list})\nDISTRIBUTED BY HASH({key_list})"),
    };
    format!("CREATE TABLE IF NOT EXISTS {}.{} (\n{}\n) {model}", quote(db), quote(&table.name.name), cols.join(",\n"))
}

/// Creates each table that does not exist, and checks those that do.
pub async fn ensure(ep: &DorisEndpoint, port: u16, tables: &[&TableSchema]) -> Result<(), ConnectorError> {
    let mut c = connect(ep, port).await?;
    for t in tables {
        let name = &t.name.name;
        let show = format!("SHOW CREATE TABLE {}.{}", quote(&ep.db), quote(name));
        let existing: Result<Option<(String, String)>, _> = c.query_first(show).await;
        match existing {
            Ok(Some((_, create))) => check(ep, t, &create)?,
            // Unknown table (1146; Doris also answers 1105 with "Unknown table").
            Ok(None) | Err(mysql_async::Error::Server(_)) => {
                tracing::info!(endpoint = %ep.name, db = %ep.db, table = %name, "creating table");
                c.query_drop(create_sql(ep.flavor, &ep.db, t))
                    .await
                    .map_err(|e| mysql(ep, format!("creating table {}.{name}", ep.db), e))?;
            }
            Err(e) => return Err(mysql(ep, format!("reading the definition of table {}.{name}", ep.db), e)),
        }
    }
    c.disconnect().await.ok();
    Ok(())
}

/// Checks an existing table's definition against what ferry writes to it.
fn check(ep: &DorisEndpoint, t: &TableSchema, create: &str) -> Result<(), ConnectorError> {
    let name = format!("{}.{}", ep.db, t.name.name);
    let problem = |p: String| ConnectorError::Setup {
        endpoint: ep.name.clone(),
        problem: format!("table {name}: {p}"),
        fix: format!(
            "drop {name} and let ferry create it (a {} table keyed by the source's primary key, docs/doris.md), or map the source table to another name",
            ep.flavor.model_name()
        ),
    };
    let key = t.primary_key.iter().map(|&i| quote(&t.columns[i].name)).collect::<Vec<_>>().join(", ");
    let compact = |s: &str| s.split_whitespace().collect::<String>().to_ascii_lowercase();
    let clause = format!("{}(", ep.flavor.model());
    let model_name = ep.flavor.model_name();
    let Some(model) = create.find(&clause).map(|i| &create[i..]) else {
        return Err(problem(format!("it is not a {model_name} table, so deletes and updates cannot replace its rows")));
    };
    let declared = model.split_once(')').map_or("", |(k, _)| k).trim_start_matches(clause.as_str());
    if compact(declared) != compact(&key) {
        return Err(problem(format!(
            "its {} is ({declared}), but the source's primary key is ({key})",
            ep.flavor.model().to_ascii_lowercase()
        )));
    }
    let lower = create.to_ascii_lowercase();
    let missing: Vec<&str> = t
        .columns
        .iter()
        .map(|c| c.name.as_str())
        .filter(|c| !lower.contains(&format!("`{}`", c.to_ascii_lowercase())))
        .collect();
    if !missing.is_empty() {
        return Err(problem(format!("it lacks the source's columns {}", missing.join(", "))));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Column, TableName};

    fn table() -> TableSchema {
        let col = |n: &str, t: &str| Column { name: n.into(), decl_type: t.into(), nullable: true };
        TableSchema {
            name: TableName { schema: Some("shop".into()), name: "items".into() },
            columns: vec![col("v", "STRING"), col("id", "BIGINT")],
            primary_key: vec![1],
            unique_keys: Vec::new(),
            foreign_keys: Vec::new(),
            create_sql: None,
        }
    }

    #[test]
    fn tables_are_unique_key_with_the_key_first() {
        let sql = create_sql(Flavor::Doris, "d", &table());
        assert!(sql.contains("`id` BIGINT NOT NULL,\n  `v` STRING NULL"), "{sql}");
        assert!(sql.contains("UNIQUE KEY(`id`)") && sql.contains("HASH(`id`)"), "{sql}");
        let sr = create_sql(Flavor::StarRocks, "d", &table());
        assert!(sr.contains("PRIMARY KEY(`id`)\nDISTRIBUTED BY HASH(`id`)") && !sr.contains("UNIQUE"), "{sr}");
    }

    #[test]
    fn an_existing_table_must_be_unique_keyed_by_the_primary_key() {
        let ep = DorisEndpoint::parse("d", "doris://u@h:1/d").expect("url");
        let good = "CREATE TABLE `items` (`id` bigint NOT NULL, `v` text NULL) ENGINE=OLAP UNIQUE KEY(`id`) DISTRIBUTED BY HASH(`id`)";
        assert!(check(&ep, &table(), good).is_ok());
        let dup = good.replace("UNIQUE KEY", "DUPLICATE KEY");
        assert!(check(&ep, &table(), &dup).expect_err("refused").to_string().contains("not a Unique Key table"));
        let short = "CREATE TABLE `items` (`id` bigint NOT NULL) UNIQUE KEY(`id`)";
        assert!(check(&ep, &table(), short).expect_err("refused").to_string().contains("lacks the source's columns v"));
        let sr = DorisEndpoint::parse("s", "starrocks://u@h:1/d").expect("url");
        assert!(check(&sr, &table(), &good.replace("UNIQUE KEY", "PRIMARY KEY")).is_ok());
        assert!(check(&sr, &table(), good).expect_err("refused").to_string().contains("not a Primary Key table"));
    }
}
