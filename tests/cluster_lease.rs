//! The cluster lease record (docs/cluster.md, "Fencing"): from the moment a node takes a
//! direction's lease, the record in the `ferry_leases` bucket carries the tenure's exact
//! fencing token (the revision its `create` returned), renewals keep it, the next tenure
//! gets a larger one, and the cluster view shows what the record holds, never a number
//! inferred from the key's revision. Against the testbed's private nats-server.

use ferry::cluster::lease::{self, LeaseRecord};
use ferry::cluster::{members, view};
use ferry::connector::DirectionId;

use crate::cluster_failover::{TTL, nats_url, require_nats};
use crate::support::mariadb::unique;

fn record(dir: &DirectionId, node: &str) -> LeaseRecord {
    LeaseRecord {
        task: dir.task.clone(),
        from: dir.from.clone(),
        to: dir.to.clone(),
        node: node.into(),
        site: None,
        since_us: 0,
        fencing: 0,
        paused: false,
    }
}

/// The direction's record as the cluster view shows it.
async fn viewed(
    members: &async_nats::jetstream::kv::Store,
    leases: &async_nats::jetstream::kv::Store,
    task: &str,
) -> LeaseRecord {
    let v = view::read("test", members, leases).await.expect("the cluster view");
    v.owners.into_iter().find(|o| o.task == task).unwrap_or_else(|| panic!("no owner of {task} in the view"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_lease_carries_its_exact_fencing_token_and_the_view_never_infers_one() {
    let url = nats_url();
    require_nats(&url);
    let client = async_nats::connect(url.as_str()).await.expect("connect to the testbed's NATS");
    let js = async_nats::jetstream::new(client);
    let leases = lease::bucket(&js, TTL, 1).await.expect("the lease bucket");
    let member_store = members::bucket(&js, 1).await.expect("the members bucket");
    let dir = DirectionId { task: unique("lease"), from: "a".into(), to: "b".into() };
    let key = lease::key(&dir);

    // Taken: the stored record carries the token at once, before any renewal.
    let held = lease::take(&leases, &key, &record(&dir, "n1")).await.expect("take").expect("a free lease");
    let token = held.record.fencing;
    assert!(token > 0, "no fencing token: {held:?}");
    assert!(held.revision > token, "the record was not written again after its create: {held:?}");
    let stored = lease::read(&leases, &key).await.expect("read").expect("the lease");
    assert_eq!(stored.record.fencing, token, "the stored record does not carry the tenure's token");
    assert_eq!(stored.revision, held.revision);
    assert_eq!(viewed(&member_store, &leases, &dir.task).await.token(), Some(token));

    // Another node cannot take it; a renewal moves the revision, not the token.
    assert!(lease::take(&leases, &key, &record(&dir, "n2")).await.expect("take").is_none(), "taken twice");
    let renewed = lease::renew(&leases, &key, &held).await.expect("renew").expect("still ours");
    assert!(renewed.revision > held.revision);
    assert_eq!(viewed(&member_store, &leases, &dir.task).await.token(), Some(token), "the token moved with a renewal");
    // A renewal on a stale revision is refused.
    assert!(lease::renew(&leases, &key, &held).await.expect("renew").is_none(), "a stale renewal was accepted");

    // Released, the next tenure's token is larger than every revision of the last one.
    lease::release(&leases, &key, &renewed).await.expect("release");
    let next = lease::take(&leases, &key, &record(&dir, "n2")).await.expect("take").expect("the released lease");
    assert!(
        next.record.fencing > renewed.revision,
        "the next tenure's token {} is not past {}",
        next.record.fencing,
        renewed.revision
    );
    let shown = viewed(&member_store, &leases, &dir.task).await;
    assert_eq!((shown.node.as_str(), shown.token()), ("n2", Some(next.record.fencing)));

    // A record without its token (written by a create alone, as before this was fixed)
    // shows an unknown token, not the key's revision.
    lease::release(&leases, &key, &next).await.expect("release");
    let body = serde_json::to_vec(&record(&dir, "n3")).expect("json");
    let rev = leases.create(&key, body.into()).await.expect("create a bare record");
    let shown = viewed(&member_store, &leases, &dir.task).await;
    assert_eq!((shown.node.as_str(), shown.token()), ("n3", None), "the view inferred a token (revision {rev})");
    leases.delete_expect_revision(&key, Some(rev)).await.expect("clean up the lease");
}
