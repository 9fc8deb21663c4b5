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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_added_columns_reach_the_target_ahead_of_their_rows() {
    let (a, b) = (shared_a(), shared_b());
    let (mut ca, mut cb) = (Cleanup::new(&a), Cleanup::new(&b));
    let s = schema(&a, "pgddl", &mut ca).await;
    cb.push(format!("DROP SCHEMA IF EXISTS \"{s}\" CASCADE"));
    let t = format!("\"{s}\".t");
    exec(
        &a,
        &format!(
            "CREATE TABLE {t} (id int PRIMARY KEY, v text); INSERT INTO {t} SELECT g, 'v' FROM generate_series(1, 50) g"
        ),
    )
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (file, task) = task_file(dir.path(), &a, &b, "one-way", &[&format!("{s}.*")], "");
    ca.task(&task);
    let config = Config::load(&file).expect("config");
    let engine = start(&config).await;
    wait_caught_up(&config, Duration::from_secs(60), Some(&engine)).await;

    exec(&a, &format!("ALTER TABLE {t} ADD COLUMN n int NOT NULL DEFAULT 7, ADD COLUMN note text")).await;
    exec(&a, &format!("INSERT INTO {t} VALUES (100, 'x', 1, 'new'); UPDATE {t} SET note = 'u' WHERE id = 2")).await;
    exec(&a, &format!("ALTER TABLE {t} ADD COLUMN tags text[] DEFAULT '{{a,b}}'")).await;
    exec(&a, &format!("UPDATE {t} SET tags = '{{x,NULL}}', n = 8 WHERE id = 3; DELETE FROM {t} WHERE id = 4")).await;
    wait_caught_up(&config, Duration::from_secs(60), Some(&engine)).await;
    let name = TableName { schema: Some(s.clone()), name: "t".into() };
    assert_same_table(&a, &b, &name).await;

    // A dropped column is not carried: the direction stops, saying what to do.
    exec(&a, &format!("ALTER TABLE {t} DROP COLUMN note; UPDATE {t} SET v = 'w' WHERE id = 5")).await;
    let failed = engine.join().await;
    let text = failed.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n");
    assert!(text.contains("changed while ferry follows it") && text.contains("ALTER TABLE"), "{text}");
}
