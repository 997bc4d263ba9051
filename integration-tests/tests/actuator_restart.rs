//! The actuator killed (SIGKILL) between launching an instance and recording it on the
//! NodeClaim, then restarted at the same address. The scheduler's Launch retries are used up
//! while it is down (its default: 3 attempts, 0.6 s of backoff), so the restarted actuator's
//! lifecycle resumes the launch of each claim left without a recorded launch
//! (`--launch-grace`, 3 s here), and finds the instance by its `karpenter.sh/nodeclaim` tag
//! instead of launching another: each claim ends up with exactly one instance, and the pods
//! run.
//!
//! Against moto: the sim cloud's instances live in the actuator's memory and die with it.
//! Every NodeClaim write the actuator makes after the launch (the instance's labels, then the
//! status) stalls at the simulated API server until the actuator is killed.

mod common;

use std::time::Duration;

use berth_api::v1::NodeClaim;
use berth_sim::faults::Fault;
use common::ec2::{self, cluster_instances, instances_of};
use common::{Cluster, all_run, assert_every_claim_has_pods, eventually, plain_pods};

#[tokio::test(flavor = "multi_thread")]
async fn a_launch_cut_off_before_its_status_yields_one_instance() {
    let moto = ec2::moto().await;
    let cluster = Cluster::start("actuator-restart", ec2::MANIFESTS).await;
    let actuator = ec2::actuator(&cluster, &moto.moto.endpoint, "127.0.0.1:0", &[]);
    let addr = actuator.grpc.clone().unwrap();
    let actuator_url = actuator.url();
    let scheduler = common::scheduler_with("127.0.0.1:0", &actuator_url, &[]);
    let _watcher = common::watcher(&cluster, &scheduler.url());
    ec2::class_ready(&cluster).await;

    cluster.server.faults().add(
        Fault::delay(Duration::from_secs(600))
            .method("PATCH")
            .path("/nodeclaims/"),
    );
    cluster.create(&plain_pods("web", 2, "1"));
    eventually(60, "every NodeClaim's instance runs in moto", || async {
        let claims = cluster.list::<NodeClaim>().await;
        let mut all = !claims.is_empty();
        for c in &claims {
            all &= !instances_of(&moto.ec2, c.metadata.name.as_deref().unwrap())
                .await
                .is_empty();
        }
        all
    })
    .await;
    // Let a launch still under way reach its stalled write.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before: Vec<String> = cluster
        .list::<NodeClaim>()
        .await
        .iter()
        .map(|c| {
            assert!(
                c.status
                    .as_ref()
                    .and_then(|s| s.provider_id.as_ref())
                    .is_none(),
                "{:?}: the status write should be stalled",
                c.metadata.name
            );
            c.metadata.name.clone().unwrap()
        })
        .collect();
    eprintln!("launched, not recorded: {before:?}");

    actuator.kill();
    cluster.server.faults().clear();
    // Long enough that the scheduler's retries are over: nothing but the lifecycle launches.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let _actuator = ec2::actuator(
        &cluster,
        &moto.moto.endpoint,
        &addr,
        &["--launch-grace", "3s"],
    );

    all_run(&cluster, 2, 90).await;
    let claims = cluster.list::<NodeClaim>().await;
    for name in &before {
        let instances = instances_of(&moto.ec2, name).await;
        assert_eq!(
            instances.len(),
            1,
            "{name}: launched again after the restart? {instances:?}"
        );
        let id = instances[0].instance_id().unwrap();
        let claim = claims
            .iter()
            .find(|c| c.metadata.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("{name} is gone"));
        let provider_id = claim
            .status
            .as_ref()
            .and_then(|s| s.provider_id.clone())
            .unwrap_or_else(|| panic!("{name}: the restarted actuator never recorded it"));
        assert!(
            provider_id.ends_with(&format!("/{id}")),
            "{provider_id} vs {id}"
        );
    }
    // No new claim (and instance) instead, none left without pods.
    assert_eq!(
        claims.len(),
        before.len(),
        "{:?}",
        claims.iter().map(|c| &c.metadata.name).collect::<Vec<_>>()
    );
    assert_eq!(cluster_instances(&moto.ec2).await.len(), before.len());
    assert_every_claim_has_pods(&cluster).await;
}
