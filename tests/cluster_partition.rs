//! A network partition (docs/cluster.md, "Tested"): one ferry node runs in a network
//! namespace the test creates, reaching NATS over one veth pair and the databases (and
//! the test its API) over another, through relays in the test process to the testbed's
//! servers on 127.0.0.1; a second node runs outside. While the node inside owns a
//! one-way MariaDB task under a writer, its NATS link goes down: it stops the direction
//! before its lease runs out, the node outside takes over within the TTL + 10 s under a
//! larger fencing token, and the node inside, which still reaches the databases, lands
//! nothing from then on; once the link is back it finds its lease taken and stays idle.
//! The tables end equal (CHECKSUM TABLE) with no ledger row twice.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::cluster_failover::{
    Bed, TAKEOVER, WAIT, applied_by, assert_all_arrived_once, count, first_alone_then_second, get_json, nats_url,
    start_writer, stop_writer, tail, wait_lease, wait_owner, wait_target_past,
};
use crate::support::mariadb::{rows, shared_a, shared_b};
use crate::support::netns::{Netns, require_root_and_ip};
use crate::support::node::VIEWER;
use crate::support::relay::Relay;
use ferry::node::auth::sha256_hex;

/// A relay on `ip` (a veth end of the test's) to the server of `url`, and the text of
/// the task file to rewrite for it (`from`, `to`).
async fn relay_for(ip: IpAddr, url: &str, before: &str) -> (Relay, String, String) {
    let upstream = Relay::upstream_of(url);
    let relay = Relay::start(SocketAddr::new(ip, 0), upstream).await;
    let (from, to) = (format!("{before}{upstream}\""), format!("{before}{}\"", relay.addr));
    (relay, from, to)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_cut_off_from_nats_loses_its_lease_and_lands_nothing_after() {
    require_root_and_ip();
    let bed = Bed::new(&["dc-b", "dc-b"]).await;
    let (db, task, ledger) = (bed.db.clone(), bed.task.clone(), bed.ledger.clone());
    // Made before the nodes, so it is removed after they are killed (drop order).
    let (ns, links) = Netns::create(2);
    let (nats_link, data_link) = (&links[0], &links[1]);
    let mut members = bed.members();
    let _relays = {
        let inside = &mut members[0];
        inside.netns = Some(ns.name.clone());
        let (nats, from, to) = relay_for(nats_link.host_ip.into(), &nats_url(), "//").await;
        inside.rewrite_config(&from, &to);
        let (a, from, to) = relay_for(data_link.host_ip.into(), &shared_a(), "@").await;
        inside.rewrite_config(&from, &to);
        let (b, from, to) = relay_for(data_link.host_ip.into(), &shared_b(), "@").await;
        inside.rewrite_config(&from, &to);
        let port = inside.base.rsplit(':').next().expect("port").to_string();
        inside.rewrite_config(&format!("\"127.0.0.1:{port}\""), &format!("\"{}:{port}\"", data_link.ns_ip));
        inside.base = format!("http://{}:{port}", data_link.ns_ip);
        // Its API serves the test from outside its namespace: with a token only.
        let file = inside.config();
        let text = std::fs::read_to_string(&file).expect("task file");
        let token =
            format!("{text}\n[[token]]\nname = \"test\"\nrole = \"viewer\"\nsha256 = \"{}\"\n", sha256_hex(VIEWER));
        std::fs::write(&file, token).expect("task file");
        (nats, a, b)
    };
    let http = crate::support::http_client_as(Duration::from_secs(5), Some(VIEWER));
    let app = start_writer(&db);
    // The node inside starts alone and takes the task; the node outside joins.
    let first = first_alone_then_second(&http, &mut members, &task, &ledger).await;
    let tenure = wait_lease(&http, &members[1], &task).await["fencing"].as_u64().expect("the tenure");

    // The partition: the node inside loses NATS, not the databases.
    let cut = Instant::now();
    ns.set_link(nats_link, false);
    let next = wait_owner(&http, &members[1..], &task, Some(&first), TAKEOVER).await;
    let took = cut.elapsed();
    assert_eq!(next, members[1].id);
    let lease = wait_lease(&http, &members[1], &task).await;
    assert!(
        lease["fencing"].as_u64().is_some_and(|f| f > tenure),
        "the new tenure's token is not past {tenure}: {lease}"
    );
    // The node inside stopped the direction before its lease ran out: what it applied is
    // final from here on, while the node outside applies.
    let log = members[0].log();
    assert!(
        log.contains("the cluster lease could not be renewed in time; stopping the direction"),
        "the node inside did not stop the direction; log:\n{}",
        tail(&log)
    );
    let final_count = applied_by(&http, &members[0], &task).await.expect("the inside node's counter");
    let at = count(&shared_b(), &ledger).await;
    wait_target_past(&ledger, at, "the node outside").await;

    // Healed: the node inside answers again, finds its lease taken and holds nothing.
    ns.set_link(nats_link, true);
    let start = Instant::now();
    loop {
        let view = get_json(&http, &format!("{}/api/v1/cluster", members[1].base)).await;
        let nodes = view.as_ref().and_then(|v| v["nodes"].as_array().cloned()).unwrap_or_default();
        let me = nodes.iter().find(|n| n["id"] == first.as_str()).cloned().unwrap_or_default();
        let fresh = me["last_seen_us"].as_i64().is_some_and(|t| t > ferry::model::now_micros() - 3_000_000);
        if fresh && me["tasks"].as_array().is_some_and(Vec::is_empty) {
            break;
        }
        assert!(start.elapsed() < WAIT, "the healed node still claims the task; log:\n{}", tail(&members[0].log()));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let after = applied_by(&http, &members[0], &task).await.expect("the inside node's counter");
    assert_eq!(after, final_count, "the node inside applied changes after losing its lease");
    let holder = rows(&shared_b(), &format!("SELECT node FROM ferry.ferry_lease WHERE task = '{task}'")).await;
    assert_eq!(holder, vec![vec![next.clone()]], "the target's lease is the new owner's");
    assert_eq!(wait_lease(&http, &members[1], &task).await["node"], next.as_str());

    eprintln!("takeover after the partition (lease TTL {:?}): {took:?}", bed.ttl);
    stop_writer(app).await;
    assert_all_arrived_once(&db, &ledger).await;
    for m in &mut members {
        m.kill();
    }
}
