//! Cloud-side drift in the lifecycle controller, against the simulated API server and the sim
//! cloud: an initialized NodeClaim the cloud calls drifted gets `Drifted=True` with the cloud's
//! reason (what the scheduler's disruption replaces), and `False` once the cloud no longer says
//! so; claims not initialized yet are not asked.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use berth_actuator::controller::Lifecycle;
use berth_actuator::store::{Kube, NodeClaimStore};
use berth_cloud::{CloudProvider, SimCloud, SimOptions};
use berth_scheduler_core::model::{NodeClaim, NodeClassRef};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, PostParams};
use serde_json::json;

fn drifted(c: &berth_api::v1::NodeClaim) -> Option<(String, String, String)> {
    c.status.as_ref()?.conditions.iter().find_map(|k| {
        (k.type_ == "Drifted").then(|| (k.status.clone(), k.reason.clone(), k.message.clone()))
    })
}

#[tokio::test]
async fn the_cloud_s_drift_becomes_the_claim_s_drifted_condition() {
    let server = berth_sim::server::ApiServer::new(
        berth_sim::store::Store::new(10_000),
        Arc::new(SystemTime::now),
    )
    .start_local()
    .await
    .unwrap();
    let mut config = kube::Config::new(server.url().parse().unwrap());
    config.default_retry = false;
    let client = kube::Client::try_from(config).unwrap();
    let cloud = SimCloud::new(
        &berth_catalog::Catalog::builtin(),
        SimOptions {
            boot_delay: Duration::ZERO,
            termination_delay: Duration::ZERO,
            ..SimOptions::default()
        },
    );
    let lifecycle = Lifecycle::new(
        cloud.clone(),
        client.clone(),
        berth_actuator::lifecycle::Deadlines::default(),
        Arc::new(SystemTime::now),
    )
    .with_drift_interval(Duration::ZERO);
    let store = Kube::new(client.clone());
    let claims: Api<berth_api::v1::NodeClaim> = Api::all(client.clone());

    let c = NodeClaim::new(
        "gitlab-d1",
        "gitlab",
        NodeClassRef {
            group: "karpenter.k8s.aws".into(),
            kind: "EC2NodeClass".into(),
            name: "default".into(),
        },
    );
    store.create(&c).await.unwrap();
    let instance = cloud.create(&c).await.unwrap();
    store.launched("gitlab-d1", &instance).await.unwrap();
    cloud.set_drifted(
        "gitlab-d1",
        "AMIDrift: instance runs ami-1, the EC2NodeClass now selects ami-2",
    );

    // Not initialized yet: not asked.
    let pass = lifecycle.reconcile_all().await.unwrap();
    assert!(pass.drifted.is_empty());
    assert_eq!(drifted(&claims.get("gitlab-d1").await.unwrap()), None);

    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": "ip-10-0-1-7", "labels": {"kubernetes.io/hostname": "ip-10-0-1-7"}},
        "spec": {"providerID": instance.provider_id},
        "status": {"conditions": [{"type": "Ready", "status": "True"}],
                   "allocatable": {"cpu": "1930m", "pods": "29"}},
    }))
    .unwrap();
    nodes.create(&PostParams::default(), &node).await.unwrap();
    // Registration, then initialization, then the drift check of an initialized claim.
    let mut asked = false;
    for _ in 0..4 {
        let pass = lifecycle.reconcile_all().await.unwrap();
        if pass.drifted == ["gitlab-d1"] {
            asked = true;
            break;
        }
    }
    assert!(asked, "the initialized claim was never found drifted");
    assert_eq!(
        drifted(&claims.get("gitlab-d1").await.unwrap()),
        Some((
            "True".into(),
            "AMIDrift".into(),
            "instance runs ami-1, the EC2NodeClass now selects ami-2".into()
        ))
    );
    // Once set, not written again.
    assert!(lifecycle.reconcile_all().await.unwrap().drifted.is_empty());
    // The cloud changed its mind (the class's AMI is selected again): no longer drifted.
    cloud.clear_drifted("gitlab-d1");
    lifecycle.reconcile_all().await.unwrap();
    let (status, _, _) = drifted(&claims.get("gitlab-d1").await.unwrap()).unwrap();
    assert_eq!(status, "False");
    assert!(
        cloud
            .calls()
            .iter()
            .filter(|call| call.method == "is_drifted")
            .count()
            >= 2
    );
}
