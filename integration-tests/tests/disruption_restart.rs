//! A service killed (SIGKILL) in the middle of a disruption and restarted at the same address:
//! the decision lives in the objects it wrote (the `disruption.berth.dev` annotations on the
//! candidate, the named replacement NodeClaim), so the restarted service resumes it or rolls
//! it back; either way exactly one replacement is launched (NodeClaims from the API server's
//! own log; instances from moto), and the pods run on it.
//!
//! - the scheduler, once the actuator has recorded its drift decision (the sim cloud);
//! - the actuator, once it has recorded a drift decision (against moto: the sim cloud's
//!   instances would die with the actuator), with `--launch-grace 3s` so a replacement left
//!   unlaunched is resumed, or the decision rolled back, quickly.

mod common;

use std::time::Duration;

use common::disruption::{decision_recorded, name, only_claim_runs, patch_pool};
use common::ec2::{self, cluster_instances, instances_of, live_instances};
use common::history::{self, node_claims};
use common::{Cluster, QUICK_DISRUPTION, SEED, deployment, describe_claims, eventually};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn a_scheduler_killed_mid_disruption_launches_one_replacement() {
    let pool = "apiVersion: karpenter.sh/v1
kind: NodePool
metadata: {name: web}
spec:
  template:
    spec:
      nodeClassRef: {group: karpenter.k8s.aws, kind: EC2NodeClass, name: default}
      requirements:
        - {key: karpenter.k8s.aws/instance-family, operator: In, values: [t3]}
        - {key: karpenter.k8s.aws/instance-size, operator: In, values: [large, xlarge]}
        - {key: karpenter.sh/capacity-type, operator: In, values: [on-demand]}
  disruption: {consolidationPolicy: WhenEmpty, consolidateAfter: 0s}
";
    let cluster = Cluster::start("disruption-scheduler-restart", &[SEED[0], pool]).await;
    let actuator = common::actuator_with(&cluster, &["--sim-termination-delay", "1s"]);
    let scheduler = common::scheduler_with("127.0.0.1:0", &actuator.url(), QUICK_DISRUPTION);
    let addr = scheduler.grpc.clone().unwrap();
    let _watcher = common::watcher(&cluster, &scheduler.url());
    cluster.create(&deployment("web", 2, "500m"));
    eventually(60, "the pods run on one node", || async {
        only_claim_runs(&cluster, "web", 2).await.is_some()
    })
    .await;
    let first = name(&only_claim_runs(&cluster, "web", 2).await.unwrap());

    // Drift: template labels change the NodePool's hash.
    patch_pool(
        &cluster,
        "web",
        json!({"spec": {"template": {"metadata": {"labels": {"tier": "gold"}}}}}),
    )
    .await;
    decision_recorded(&cluster, &first).await;
    scheduler.kill();
    let _scheduler = common::scheduler_with(&addr, &actuator.url(), QUICK_DISRUPTION);

    eventually(90, "the pods run on the replacement", || async {
        only_claim_runs(&cluster, "web", 2)
            .await
            .is_some_and(|c| name(&c) != first)
    })
    .await;
    // Past several evaluations of the restarted scheduler: nothing more.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let created = history::created(&history::log(&cluster, &node_claims()).await);
    assert_eq!(
        created.len(),
        2,
        "one replacement: {created:?}, now {:?}",
        describe_claims(&cluster).await
    );
    let last = only_claim_runs(&cluster, "web", 2)
        .await
        .expect("the replacement stays and runs the pods");
    assert_eq!(name(&last), created[1]);
    assert_eq!(
        common::claim_label(&last, "tier"),
        Some("gold"),
        "it complies"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_actuator_killed_mid_disruption_launches_one_instance() {
    let moto = ec2::moto().await;
    let cluster = Cluster::start("disruption-actuator-restart", ec2::MANIFESTS).await;
    let actuator = ec2::actuator(
        &cluster,
        &moto.moto.endpoint,
        "127.0.0.1:0",
        &["--launch-grace", "3s"],
    );
    let addr = actuator.grpc.clone().unwrap();
    let actuator_url = actuator.url();
    let scheduler = common::scheduler_with("127.0.0.1:0", &actuator_url, QUICK_DISRUPTION);
    let _watcher = common::watcher(&cluster, &scheduler.url());
    ec2::class_ready(&cluster).await;
    // Drift only: moto launches any type a claim allows, not the cheapest as EC2's
    // lowest-price strategy would, so consolidation would then rightly replace it again.
    patch_pool(
        &cluster,
        "default-nodepool",
        json!({"spec": {"disruption": {"consolidationPolicy": "WhenEmpty", "consolidateAfter": "0s"}}}),
    )
    .await;
    cluster.create(&deployment("web", 2, "500m"));
    eventually(90, "the pods run on one node", || async {
        only_claim_runs(&cluster, "web", 2).await.is_some()
    })
    .await;
    let first = name(&only_claim_runs(&cluster, "web", 2).await.unwrap());

    // The seed's default pool (stored as v1): a template label drifts its node.
    patch_pool(
        &cluster,
        "default-nodepool",
        json!({"spec": {"template": {"metadata": {"labels": {"tier": "gold"}}}}}),
    )
    .await;
    decision_recorded(&cluster, &first).await;
    actuator.kill();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _actuator = ec2::actuator(
        &cluster,
        &moto.moto.endpoint,
        &addr,
        &["--launch-grace", "3s"],
    );

    eventually(120, "the pods run on the replacement", || async {
        only_claim_runs(&cluster, "web", 2)
            .await
            .is_some_and(|c| name(&c) != first)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    let created = history::created(&history::log(&cluster, &node_claims()).await);
    let now = describe_claims(&cluster).await;
    // A decision the dead actuator left without its replacement is rolled back and decided
    // again: another replacement NodeClaim, never a second instance for one.
    let last = only_claim_runs(&cluster, "web", 2)
        .await
        .unwrap_or_else(|| panic!("the replacement stays and runs the pods: {now:?}"));
    assert_eq!(common::claim_label(&last, "tier"), Some("gold"));
    for claim in &created {
        let instances = instances_of(&moto.ec2, claim).await;
        assert!(
            instances.len() <= 1,
            "{claim}: {} instances: {instances:?}",
            instances.len()
        );
    }
    let running_instances: Vec<String> = live_instances(&moto.ec2)
        .await
        .iter()
        .filter_map(|i| i.instance_id().map(str::to_owned))
        .collect();
    assert_eq!(
        running_instances.len(),
        1,
        "one instance left: {running_instances:?} (claims {created:?})"
    );
    assert_eq!(
        instances_of(&moto.ec2, &name(&last)).await.len(),
        1,
        "{created:?}"
    );
    // Whatever the kill cut short, two instances were ever launched: the first and one
    // replacement.
    assert_eq!(
        cluster_instances(&moto.ec2).await.len(),
        2,
        "claims {created:?}"
    );
}
