//! Freezing a MariaDB endpoint (on the private instance: it changes a global): the
//! server turns read-only for applications, an application session caught inside a
//! transaction is ended so it cannot commit, ferry's own account keeps writing, and
//! unfreezing lets applications write again.

use ferry::connector::mysql::MysqlEndpoint;
use ferry::connector::mysql::freeze::{freeze, frozen_since, unfreeze};
use ferry::model::SiteId;
use mysql_async::prelude::Queryable;

use crate::support::mariadb::{Cleanup, admin, connect, private_globals, user, with_user};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freeze_stops_application_writes_and_ends_their_open_transactions() {
    let (pair, _globals) = private_globals().await;
    let url = pair.url_a();
    let mut cleanup = Cleanup::new(&pair.root_a());
    cleanup.push("DROP DATABASE IF EXISTS freeze_app");
    admin(
        &pair.root_a(),
        &[
            "CREATE DATABASE IF NOT EXISTS freeze_app".into(),
            "CREATE TABLE IF NOT EXISTS freeze_app.t (id INT PRIMARY KEY)".into(),
        ],
    )
    .await;
    user(&pair.root_a(), "freeze_app", &["SELECT, INSERT, UPDATE, DELETE ON freeze_app.*"], &mut cleanup).await;
    let app_url = with_user(&url, "freeze_app", "pw");

    // An application transaction left open across the freeze.
    let mut open = connect(&app_url).await;
    open.query_drop("START TRANSACTION").await.expect("begin");
    open.query_drop("INSERT INTO freeze_app.t VALUES (1)").await.expect("insert in the open transaction");

    let ep = MysqlEndpoint::new("a", SiteId::new("dc-a"), &url).expect("endpoint");
    let mut ferry = ep.connect().await.expect("ferry's session");
    let ended = freeze(&ep, &mut ferry, &[], "test").await.expect("freeze");
    assert!(ended >= 1, "the open application session was ended ({ended})");
    assert!(frozen_since(&ep, &mut ferry).await.expect("state").is_some_and(|t| t > 0), "frozen, with its time");

    assert!(open.query_drop("COMMIT").await.is_err(), "the transaction open across the freeze must not commit");
    let mut app = connect(&app_url).await;
    let refused = app.query_drop("INSERT INTO freeze_app.t VALUES (2)").await;
    let message = format!("{refused:?}");
    assert!(
        refused.is_err() && (message.contains("read-only") || message.contains("1290")),
        "application write refused: {message}"
    );
    ferry.query_drop("INSERT INTO freeze_app.t VALUES (3)").await.expect("ferry's own account keeps writing");

    unfreeze(&ep, &mut ferry).await.expect("unfreeze");
    assert_eq!(frozen_since(&ep, &mut ferry).await.expect("state"), None);
    app.query_drop("INSERT INTO freeze_app.t VALUES (4)").await.expect("application writes again");
    let ids: Vec<i32> = ferry.query("SELECT id FROM freeze_app.t ORDER BY id").await.expect("rows");
    assert_eq!(ids, vec![3, 4], "nothing of the ended transaction committed");
    ferry.disconnect().await.ok();
    app.disconnect().await.ok();
}
