//! The scheduler killed (SIGKILL) mid-burst and restarted at the same address: the watcher
//! reconnects and sends a fresh snapshot, NodeClaims in flight included; every pod runs and
//! no NodeClaim is launched twice for the same pods (every node ends up with pods).

mod common;

use berth_api::v1::NodeClaim;
use common::{Cluster, all_run, assert_every_claim_has_pods, eventually, plain_pods};

#[tokio::test(flavor = "multi_thread")]
async fn no_duplicate_claims_and_no_lost_pods() {
    let cluster = Cluster::start("restart", common::SEED).await;
    let actuator = common::actuator(&cluster);
    let scheduler = common::scheduler(&actuator.url());
    let url = scheduler.url();
    let addr = scheduler.grpc.clone().unwrap();
    let _watcher = common::watcher(&cluster, &url);
    cluster.create(&plain_pods("web", 8, "1"));
    eventually(30, "the first NodeClaim", || async {
        !cluster.list::<NodeClaim>().await.is_empty()
    })
    .await;
    scheduler.kill();
    // More pods while the scheduler is down.
    cluster.create(&plain_pods("late", 12, "1"));
    let _scheduler = common::scheduler_with(&addr, &actuator.url(), &[]);
    all_run(&cluster, 20, 60).await;
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_every_claim_has_pods(&cluster).await;
}
