//! PostgreSQL schema changes while ferry follows a table: columns added on the source
//! (with a default, NOT NULL, several at once) reach the target ahead of the rows that
//! use them, existing rows get the default there as on the source, and both sides end
//! identical; a change ferry does not carry (a dropped column) stops the direction with
//! the fix.

use std::time::Duration;

use ferry::config::Config;
use ferry::model::TableName;

use crate::pg_oneway::{assert_same_table, start, wait_caught_up};
use crate::support::postgres::{Cleanup, exec, schema, shared_a, shared_b, task_file};

/// A table `t` of `rows` rows in a schema of its own, followed by a running one-way task
/// that has caught up.
struct Followed {
    a: String,
    b: String,
    s: String,
    t: String,
    config: Config,
    engine: ferry::engine::Engine,
    _cleanup: (Cleanup, Cleanup, tempfile::TempDir),
}

impl Followed {
    async fn start(prefix: &str, rows: u32) -> Self {
        let (a, b) = (shared_a(), shared_b());
        let (mut ca, mut cb) = (Cleanup::new(&a), Cleanup::new(&b));
        let s = schema(&a, prefix, &mut ca).await;
        cb.push(format!("DROP SCHEMA IF EXISTS \"{s}\" CASCADE"));
        let t = format!("\"{s}\".t");
        exec(
            &a,
            &format!(
                "CREATE TABLE {t} (id int PRIMARY KEY, v text); INSERT INTO {t} SELECT g, 'v' FROM generate_series(1, {rows}) g"
            ),
        )
        .await;
        let dir = tempfile::tempdir().expect("tempdir");
        let (file, task) = task_file(dir.path(), &a, &b, "one-way", &[&format!("{s}.*")], "");
        ca.task(&task);
        let config = Config::load(&file).expect("config");
        let engine = start(&config).await;
        wait_caught_up(&config, Duration::from_secs(60), Some(&engine)).await;
        Followed { a, b, s, t, config, engine, _cleanup: (ca, cb, dir) }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_added_columns_reach_the_target_ahead_of_their_rows() {
    let f = Followed::start("pgddl", 50).await;
    let (a, b, s, t, config, engine) = (&f.a, &f.b, &f.s, &f.t, &f.config, f.engine);

    exec(a, &format!("ALTER TABLE {t} ADD COLUMN n int NOT NULL DEFAULT 7, ADD COLUMN note text")).await;
    exec(a, &format!("INSERT INTO {t} VALUES (100, 'x', 1, 'new'); UPDATE {t} SET note = 'u' WHERE id = 2")).await;
    exec(a, &format!("ALTER TABLE {t} ADD COLUMN tags text[] DEFAULT '{{a,b}}'")).await;
    exec(a, &format!("UPDATE {t} SET tags = '{{x,NULL}}', n = 8 WHERE id = 3; DELETE FROM {t} WHERE id = 4")).await;
    wait_caught_up(config, Duration::from_secs(60), Some(&engine)).await;
    let name = TableName { schema: Some(s.clone()), name: "t".into() };
    assert_same_table(a, b, &name).await;

    // A dropped column is not carried: the direction stops, saying what to do.
    exec(a, &format!("ALTER TABLE {t} DROP COLUMN note; UPDATE {t} SET v = 'w' WHERE id = 5")).await;
    let failed = engine.join().await;
    let text = failed.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n");
    assert!(text.contains("changed while ferry follows it") && text.contains("ALTER TABLE"), "{text}");
}

/// Two columns added in one transaction, with rows written before, between and after:
/// the first Relation ferry reads names one new column while the catalog already holds
/// both; each is carried in its turn, and rows on either side of the second ALTER in one
/// batch keep their own columns' values.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_columns_added_twice_before_ferry_reads_the_first_are_carried() {
    let f = Followed::start("pgddl2", 20).await;
    let (a, b, s, t, config, engine) = (&f.a, &f.b, &f.s, &f.t, &f.config, f.engine);

    // One query string is one transaction: by the time ferry reads its first Relation,
    // the catalog already holds the second column.
    exec(
        a,
        &format!(
            "UPDATE {t} SET v = 'w' WHERE id = 3; \
             ALTER TABLE {t} ADD COLUMN c1 int DEFAULT 5; \
             INSERT INTO {t} (id, v, c1) VALUES (101, 'a', 11); UPDATE {t} SET c1 = 12 WHERE id = 1; \
             ALTER TABLE {t} ADD COLUMN c2 text NOT NULL DEFAULT 'd'; \
             INSERT INTO {t} VALUES (102, 'b', 21, 'x'); UPDATE {t} SET c2 = 'y', c1 = 22 WHERE id = 2"
        ),
    )
    .await;
    exec(a, &format!("UPDATE {t} SET c1 = 31, c2 = 'z' WHERE id = 101")).await;
    wait_caught_up(config, Duration::from_secs(60), Some(&engine)).await;
    let name = TableName { schema: Some(s.clone()), name: "t".into() };
    assert_same_table(a, b, &name).await;
    engine.stop();
    let stopped = engine.join().await;
    assert!(stopped.is_empty(), "stopping: {stopped:?}");
}
