//! PostgreSQL over TLS on a private cluster serving TLS only (`ssl = on`, `hostssl`
//! lines alone in pg_hba.conf) with the test CA's certificate for 127.0.0.1 and
//! localhost: each `sslmode` does what libpq's does, for queries and for the change
//! stream alike, and an unknown mode is a config error.

use std::time::Duration;

use ferry::config::Config;
use ferry::connector::endpoint::{Endpoint, EndpointUrl};
use ferry::connector::registry as probe;
use ferry::model::{SiteId, TableName};

use crate::pg_oneway::{assert_same_table, start, wait_caught_up};
use crate::support::postgres::{Cleanup, PrivatePg, exec, rows, shared_b, task_file};

fn endpoint(url: &str) -> Endpoint {
    Endpoint {
        name: "a".into(),
        site: SiteId::new("dc-a"),
        url: EndpointUrl::new(url.to_string(), "."),
        password: None,
        ssh: Default::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_sslmodes_hold_for_queries_and_the_change_stream() {
    let certs = crate::support::tls::certs();
    let (cert, key) = PrivatePg::server_certs(certs);
    let opts = format!("-c ssl=on -c ssl_cert_file={} -c ssl_key_file={}", cert.display(), key.display());
    let pg = tokio::task::spawn_blocking(move || PrivatePg::start(&opts)).await.expect("cluster");
    pg.hba(
        "local all all trust\nlocal replication all trust\n\
         hostssl all all 127.0.0.1/32 trust\nhostssl replication all 127.0.0.1/32 trust\n\
         hostssl all all ::1/128 trust\nhostssl replication all ::1/128 trust\n",
    );
    let base = pg.url();
    let (ca, other) = (certs.ca().display().to_string(), certs.other_ca().display().to_string());
    let ok = [
        base.clone(),
        format!("{base}?sslmode=prefer"),
        format!("{base}?sslmode=require"),
        format!("{base}?sslmode=verify-ca&sslrootcert={ca}"),
        format!("{base}?sslmode=verify-full&sslrootcert={ca}"),
        format!("{}?sslmode=verify-full&sslrootcert={ca}", base.replace("127.0.0.1", "localhost")),
    ];
    for url in &ok {
        let r = probe::reachable(&endpoint(url)).await;
        assert!(r.is_ok(), "{url}: {r:?}");
    }
    let refused = [
        (format!("{base}?sslmode=disable"), "no encryption"),
        (format!("{base}?sslmode=verify-ca&sslrootcert={other}"), "certificate"),
        (format!("{base}?sslmode=require&sslrootcert={other}"), "certificate"),
        (format!("{base}?sslmode=verify-full"), "certificate"),
    ];
    for (url, why) in &refused {
        let r = probe::reachable(&endpoint(url)).await;
        assert!(r.as_ref().is_err_and(|e| e.to_string().to_lowercase().contains(why)), "{url}: {r:?}");
    }

    // An unknown mode is a config error naming the valid ones.
    let dir = tempfile::tempdir().expect("tempdir");
    let (bad, _) =
        task_file(dir.path(), &format!("{base}?sslmode=on"), &shared_b(), "one-way", &["public.tls_items"], "");
    let e = Config::load(&bad).expect_err("sslmode=on is refused").to_string();
    assert!(e.contains("sslmode=\"on\"") && e.contains("verify-full"), "{e}");

    // The change stream over verify-full: snapshot and stream reach the target.
    exec(&base, "CREATE TABLE tls_items (id int PRIMARY KEY, v text); INSERT INTO tls_items SELECT g, 'v' FROM generate_series(1, 100) g")
        .await;
    let b = shared_b();
    let mut cb = Cleanup::new(&b);
    cb.push("DROP TABLE IF EXISTS public.tls_items");
    let url = format!("{base}?sslmode=verify-full&sslrootcert={ca}");
    let dir = tempfile::tempdir().expect("tempdir");
    let (file, task) = task_file(dir.path(), &url, &b, "one-way", &["public.tls_items"], "");
    cb.push(format!("DELETE FROM ferry.ferry_checkpoint WHERE task = '{task}'"));
    let config = Config::load(&file).expect("config");
    let engine = start(&config).await;
    wait_caught_up(&config, Duration::from_secs(60), Some(&engine)).await;
    exec(
        &base,
        "INSERT INTO tls_items SELECT g, 'w' FROM generate_series(101, 150) g; UPDATE tls_items SET v = 'u' WHERE id < 10",
    )
    .await;
    wait_caught_up(&config, Duration::from_secs(60), Some(&engine)).await;
    let stream = rows(
        &base,
        "SELECT count(*)::text, coalesce(bool_and(s.ssl), false)::text FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid)",
    )
    .await;
    assert_eq!(stream, vec![vec![Some("1".to_string()), Some("true".to_string())]], "the stream is encrypted");
    engine.stop();
    assert!(engine.join().await.is_empty(), "the direction failed");
    assert_same_table(&base, &b, &TableName { schema: Some("public".into()), name: "tls_items".into() }).await;
    let _ = std::fs::remove_dir_all(cert.parent().expect("cert dir"));
    drop(pg);
}
