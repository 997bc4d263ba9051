//! The Kubernetes NodeClaim store against Berth's simulated API server over HTTP.

use std::sync::Arc;
use std::time::SystemTime;

use berth_actuator::store::{Kube, NodeClaimStore};
use berth_scheduler_core::model::{
    CapacityType, Instance, InstanceState, NodeClaim, NodeClassRef, Resources,
};
use kube::api::Api;

#[tokio::test]
async fn a_nodeclaim_lives_and_dies_through_the_store() {
    let server = berth_sim::server::ApiServer::new(
        berth_sim::store::Store::new(1000),
        Arc::new(SystemTime::now),
    );
    let server = server.start_local().await.unwrap();
    let client = kube::Client::try_from(kube::Config::new(server.url().parse().unwrap())).unwrap();
    let store = Kube::new(client.clone());
    let claims: Api<berth_api::v1::NodeClaim> = Api::all(client);

    let mut claim = NodeClaim::new(
        "gitlab-x1",
        "gitlab",
        NodeClassRef {
            group: "karpenter.k8s.aws".into(),
            kind: "EC2NodeClass".into(),
            name: "default".into(),
        },
    );
    claim.requests = Resources::new().with("cpu", 1500);
    store.create(&claim).await.unwrap();
    store.create(&claim).await.unwrap(); // idempotent
    let stored = claims.get("gitlab-x1").await.unwrap();
    assert_eq!(
        stored.metadata.finalizers.as_deref(),
        Some(&["karpenter.sh/termination".to_owned()][..])
    );
    assert_eq!(
        stored.metadata.labels.unwrap()["karpenter.sh/nodepool"],
        "gitlab"
    );

    let instance = Instance {
        node_claim: "gitlab-x1".into(),
        node_pool: "gitlab".into(),
        provider_id: "sim:///us-east-1a/i-00000000000000001".into(),
        instance_type: "m5.large".into(),
        zone: "us-east-1a".into(),
        capacity_type: CapacityType::Spot,
        image_id: "ami-1".into(),
        capacity: Resources::new().with("cpu", 2000),
        allocatable: Resources::new().with("cpu", 1930),
        labels: Default::default(),
        price: 0.03,
        state: InstanceState::Running,
        launched_at: SystemTime::now(),
    };
    store.launched("gitlab-x1", &instance).await.unwrap();
    let status = claims.get("gitlab-x1").await.unwrap().status.unwrap();
    assert_eq!(
        status.provider_id.as_deref(),
        Some(instance.provider_id.as_str())
    );
    assert_eq!(status.allocatable["cpu"].0, "1930m");
    assert_eq!(status.conditions.len(), 1);
    assert_eq!(
        (
            status.conditions[0].type_.as_str(),
            status.conditions[0].status.as_str()
        ),
        ("Launched", "True")
    );

    store.delete("gitlab-x1").await.unwrap();
    assert!(
        claims
            .get("gitlab-x1")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_some()
    );
    store.finalize("gitlab-x1").await.unwrap();
    assert!(claims.get_opt("gitlab-x1").await.unwrap().is_none());

    server.shutdown().await.unwrap();
}
