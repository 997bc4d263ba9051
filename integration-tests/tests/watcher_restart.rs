//! The watcher killed (SIGKILL) mid-burst and restarted: the new one lists everything again
//! and sends the scheduler a fresh snapshot, NodeClaims in flight included; every pod runs
//! (those created while no watcher ran too), and no NodeClaim is launched twice for the same
//! pods (every node ends up with pods).

mod common;

use berth_api::v1::NodeClaim;
use common::{Cluster, all_run, assert_every_claim_has_pods, eventually, plain_pods};

#[tokio::test(flavor = "multi_thread")]
async fn no_duplicate_claims_and_no_lost_pods() {
    let cluster = Cluster::start("watcher-restart", common::SEED).await;
    let actuator = common::actuator(&cluster);
    let scheduler = common::scheduler(&actuator.url());
    let watcher = common::watcher(&cluster, &scheduler.url());
    cluster.create(&plain_pods("web", 8, "1"));
    eventually(30, "the first NodeClaim", || async {
        !cluster.list::<NodeClaim>().await.is_empty()
    })
    .await;
    watcher.kill();
    // More pods while no watcher runs.
    cluster.create(&plain_pods("late", 12, "1"));
    let _watcher = common::watcher(&cluster, &scheduler.url());
    all_run(&cluster, 20, 60).await;
    // Give a duplicate time to show up, then check there is none.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_every_claim_has_pods(&cluster).await;
    all_run(&cluster, 20, 1).await;
}
