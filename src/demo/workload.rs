//! The demo's application: writers on both data centers, with inserts, updates and
//! deletes, and deliberate conflicts (both sides updating the same hot keys, and now
//! and then inserting the same new key).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sqlx::sqlite::SqliteConnection;
use tokio_util::sync::CancellationToken;

/// Schema of the demo's tables, created on both sides.
pub const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS accounts(
  id INTEGER PRIMARY KEY,
  owner TEXT NOT NULL,
  balance TEXT NOT NULL,
  note TEXT,
  avatar BLOB,
  score REAL);
CREATE TABLE IF NOT EXISTS orders(
  region TEXT NOT NULL,
  order_no INTEGER NOT NULL,
  account_id INTEGER NOT NULL,
  amount TEXT NOT NULL,
  status TEXT NOT NULL,
  PRIMARY KEY (region, order_no));
"#;

/// Keys both sides update: the deliberate conflicts.
pub const HOT_KEYS: i64 = 20;

/// What one writer did.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Committed transactions.
    pub txns: AtomicU64,
    /// Row changes.
    pub rows: AtomicU64,
    /// Transactions that failed (e.g. busy) and were rolled back.
    pub failed: AtomicU64,
}

/// One data center's writer.
pub struct Writer {
    /// 0 for a, 1 for b: keeps freshly inserted keys apart except for deliberate clashes.
    pub side: i64,
    /// The application's own connection.
    pub conn: SqliteConnection,
    /// Random choices.
    pub rng: fastrand::Rng,
    /// Counters.
    pub stats: Arc<WriterStats>,
}

fn money(rng: &mut fastrand::Rng) -> String {
    format!("{}.{:02}", rng.i64(0..100_000), rng.u8(0..100))
}

impl Writer {
    /// Writes until cancelled, a few hundred small transactions per second.
    pub async fn run(mut self, stop: CancellationToken) {
        let mut next_id = 1_000 + self.side;
        let mut next_order = 1 + self.side;
        let region = if self.side == 0 { "eu" } else { "us" };
        while !stop.is_cancelled() {
            let result = self.one_txn(&mut next_id, &mut next_order, region).await;
            match result {
                Ok(rows) => {
                    self.stats.txns.fetch_add(1, Ordering::Relaxed);
                    self.stats.rows.fetch_add(rows, Ordering::Relaxed);
                }
                Err(_) => {
                    let _ = sqlx::query("ROLLBACK").execute(&mut self.conn).await;
                    self.stats.failed.fetch_add(1, Ordering::Relaxed);
                }
            }
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(Duration::from_millis(self.rng.u64(1..6))) => {}
            }
        }
    }

    async fn one_txn(&mut self, next_id: &mut i64, next_order: &mut i64, region: &str) -> Result<u64, sqlx::Error> {
        let conn = &mut self.conn;
        let rng = &mut self.rng;
        sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await?;
        let mut rows = 0u64;
        for _ in 0..rng.usize(1..4) {
            let roll = rng.u8(0..100);
            if roll < 30 {
                // Update a hot key both sides write: a conflict when the other side does too.
                let id = rng.i64(1..=HOT_KEYS);
                let r = sqlx::query("UPDATE accounts SET balance = ?1, note = ?2, score = ?3 WHERE id = ?4")
                    .bind(money(rng))
                    .bind(format!("touched by {}", if region == "eu" { "dc-a" } else { "dc-b" }))
                    .bind(rng.f64() * 100.0)
                    .bind(id)
                    .execute(&mut *conn)
                    .await?;
                rows += r.rows_affected();
            } else if roll < 55 {
                // A new account; now and then both sides pick the same id on purpose.
                let id = if rng.u8(0..100) < 5 { 900_000 + rng.i64(0..50) } else { *next_id };
                *next_id += 2;
                let avatar: Vec<u8> = (0..rng.usize(0..8)).map(|_| rng.u8(..)).collect();
                let note = if rng.bool() { Some(String::new()) } else { None };
                let r = sqlx::query(
                    "INSERT INTO accounts(id, owner, balance, note, avatar, score) VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                     ON CONFLICT(id) DO UPDATE SET owner = excluded.owner, balance = excluded.balance",
                )
                .bind(id)
                .bind(format!("owner-{id}-{region} ✓"))
                .bind(money(rng))
                .bind(note)
                .bind(avatar)
                .bind(-0.0f64)
                .execute(&mut *conn)
                .await?;
                rows += r.rows_affected();
            } else if roll < 75 {
                let no = *next_order;
                *next_order += 2;
                let r = sqlx::query(
                    "INSERT INTO orders(region, order_no, account_id, amount, status) VALUES (?1, ?2, ?3, ?4, 'new')",
                )
                .bind(region)
                .bind(no)
                .bind(rng.i64(1..=500))
                .bind(money(rng))
                .execute(&mut *conn)
                .await?;
                rows += r.rows_affected();
            } else if roll < 90 {
                let r = sqlx::query(
                    "UPDATE orders SET status = ?1 WHERE rowid IN (SELECT rowid FROM orders WHERE status <> 'shipped' ORDER BY random() LIMIT 1)",
                )
                .bind(if rng.bool() { "paid" } else { "shipped" })
                .execute(&mut *conn)
                .await?;
                rows += r.rows_affected();
            } else {
                // Deletes: an order somewhere, or an account (hot keys included: delete vs update conflicts).
                let r = if rng.bool() {
                    sqlx::query(
                        "DELETE FROM orders WHERE rowid IN (SELECT rowid FROM orders ORDER BY random() LIMIT 1)",
                    )
                    .execute(&mut *conn)
                    .await?
                } else {
                    sqlx::query("DELETE FROM accounts WHERE id = ?1").bind(rng.i64(1..=500)).execute(&mut *conn).await?
                };
                rows += r.rows_affected();
            }
        }
        sqlx::query("COMMIT").execute(&mut *conn).await?;
        Ok(rows)
    }
}

/// Seeds a data center with rows that exist before ferry starts (copied by the snapshot).
pub async fn seed(conn: &mut SqliteConnection, side: i64, rng: &mut fastrand::Rng) -> Result<(), sqlx::Error> {
    sqlx::raw_sql(SCHEMA).execute(&mut *conn).await?;
    sqlx::query("BEGIN").execute(&mut *conn).await?;
    if side == 0 {
        for id in 1..=500i64 {
            sqlx::query(
                "INSERT INTO accounts(id, owner, balance, note, avatar, score) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .bind(id)
            .bind(format!("owner-{id}"))
            .bind(money(rng))
            .bind(if id % 7 == 0 { Some("") } else { None })
            .bind(vec![0u8, id as u8, 255])
            .bind(id as f64 / 3.0)
            .execute(&mut *conn)
            .await?;
        }
    } else {
        for no in 1..=200i64 {
            sqlx::query("INSERT INTO orders(region, order_no, account_id, amount, status) VALUES ('legacy', ?1, ?2, ?3, 'shipped')")
                .bind(no)
                .bind(rng.i64(1..=500))
                .bind(money(rng))
                .execute(&mut *conn)
                .await?;
        }
    }
    sqlx::query("COMMIT").execute(&mut *conn).await?;
    Ok(())
}
