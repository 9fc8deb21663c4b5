//! Row-by-row comparison of one table on two SQLite endpoints: a merge join in key order.

use std::cmp::Ordering;

use serde::Serialize;
use sqlx::sqlite::SqliteConnection;

use crate::connector::ConnectorError;
use crate::connector::sqlite::checksum::rows_after;
use crate::connector::sqlite::schema::{describe, user_tables};
use crate::connector::sqlite::{Access, SqliteEndpoint};
use crate::model::{Key, Row, TableSchema, cmp_keys, key_text};

/// Rows read per side per round.
const CHUNK: usize = 5_000;
/// Differences kept per kind for the report.
const SAMPLE: usize = 20;

/// How one table compares.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TableComparison {
    /// Table name.
    pub table: String,
    /// Rows on side a.
    pub rows_a: u64,
    /// Rows on side b.
    pub rows_b: u64,
    /// Keys only on a (count).
    pub only_in_a: u64,
    /// Keys only on b (count).
    pub only_in_b: u64,
    /// Keys on both with different values (count).
    pub different: u64,
    /// A few of the differing keys, rendered, for the report.
    pub samples: Vec<String>,
}

impl TableComparison {
    /// True when both sides hold exactly the same rows.
    pub fn identical(&self) -> bool {
        self.only_in_a == 0 && self.only_in_b == 0 && self.different == 0
    }
}

/// Compares every user table of `a` (and any only on `b`) row by row.
pub async fn compare_databases(a: &SqliteEndpoint, b: &SqliteEndpoint) -> Result<Vec<TableComparison>, ConnectorError> {
    let mut ca = a.connect(Access::ReadOnly).await?;
    let mut cb = b.connect(Access::ReadOnly).await?;
    let mut names = user_tables(a, &mut ca).await?;
    for t in user_tables(b, &mut cb).await? {
        if !names.contains(&t) {
            names.push(t);
        }
    }
    names.sort();
    let mut out = Vec::new();
    for name in names {
        let sa = describe(a, &mut ca, &name).await?;
        let sb = describe(b, &mut cb, &name).await?;
        let cmp = match (sa, sb) {
            (Some(s), Some(_)) => compare_table(a, &mut ca, b, &mut cb, &s).await?,
            (Some(s), None) => {
                let n = count(a, &mut ca, &s).await?;
                TableComparison {
                    table: name.clone(),
                    rows_a: n,
                    only_in_a: n,
                    samples: vec!["table missing on b".into()],
                    ..Default::default()
                }
            }
            (None, Some(s)) => {
                let n = count(b, &mut cb, &s).await?;
                TableComparison {
                    table: name.clone(),
                    rows_b: n,
                    only_in_b: n,
                    samples: vec!["table missing on a".into()],
                    ..Default::default()
                }
            }
            (None, None) => continue,
        };
        out.push(cmp);
    }
    crate::connector::sqlite::close(ca).await;
    crate::connector::sqlite::close(cb).await;
    Ok(out)
}

async fn count(ep: &SqliteEndpoint, conn: &mut SqliteConnection, t: &TableSchema) -> Result<u64, ConnectorError> {
    let mut n = 0u64;
    let mut after: Option<Key> = None;
    loop {
        let rows = rows_after(ep, conn, t, after.as_ref(), CHUNK).await?;
        let Some((last, _)) = rows.last() else {
            return Ok(n);
        };
        after = Some(t.key_of(last));
        n += rows.len() as u64;
    }
}

/// Compares one table that exists on both sides.
pub async fn compare_table(
    a: &SqliteEndpoint,
    ca: &mut SqliteConnection,
    b: &SqliteEndpoint,
    cb: &mut SqliteConnection,
    t: &TableSchema,
) -> Result<TableComparison, ConnectorError> {
    let mut res = TableComparison { table: t.name.to_string(), ..Default::default() };
    let (mut after_a, mut after_b): (Option<Key>, Option<Key>) = (None, None);
    let (mut buf_a, mut buf_b): (Vec<(Row, String)>, Vec<(Row, String)>) = (Vec::new(), Vec::new());
    let (mut ia, mut ib) = (0usize, 0usize);
    let (mut done_a, mut done_b) = (false, false);
    loop {
        if ia == buf_a.len() && !done_a {
            buf_a = rows_after(a, ca, t, after_a.as_ref(), CHUNK).await?;
            ia = 0;
            done_a = buf_a.len() < CHUNK;
            if let Some((last, _)) = buf_a.last() {
                after_a = Some(t.key_of(last));
            }
        }
        if ib == buf_b.len() && !done_b {
            buf_b = rows_after(b, cb, t, after_b.as_ref(), CHUNK).await?;
            ib = 0;
            done_b = buf_b.len() < CHUNK;
            if let Some((last, _)) = buf_b.last() {
                after_b = Some(t.key_of(last));
            }
        }
        let ra = buf_a.get(ia);
        let rb = buf_b.get(ib);
        match (ra, rb) {
            (None, None) => break,
            (Some((row, _)), None) => {
                res.rows_a += 1;
                res.only_in_a += 1;
                sample(&mut res, "only on a", &t.key_of(row));
                ia += 1;
            }
            (None, Some((row, _))) => {
                res.rows_b += 1;
                res.only_in_b += 1;
                sample(&mut res, "only on b", &t.key_of(row));
                ib += 1;
            }
            (Some((x, tx)), Some((y, ty))) => {
                let (kx, ky) = (t.key_of(x), t.key_of(y));
                match cmp_keys(&kx, &ky) {
                    Ordering::Less => {
                        res.rows_a += 1;
                        res.only_in_a += 1;
                        sample(&mut res, "only on a", &kx);
                        ia += 1;
                    }
                    Ordering::Greater => {
                        res.rows_b += 1;
                        res.only_in_b += 1;
                        sample(&mut res, "only on b", &ky);
                        ib += 1;
                    }
                    Ordering::Equal => {
                        res.rows_a += 1;
                        res.rows_b += 1;
                        if tx != ty {
                            res.different += 1;
                            sample(&mut res, "different", &kx);
                        }
                        ia += 1;
                        ib += 1;
                    }
                }
            }
        }
    }
    Ok(res)
}

fn sample(res: &mut TableComparison, kind: &str, key: &[crate::model::Value]) {
    if res.samples.len() < SAMPLE {
        res.samples.push(format!("{kind}: key {}", key_text(key)));
    }
}
