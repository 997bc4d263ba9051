//! A pod no NodePool can host gets a `FailedProvisioning` event with the reason, and nothing
//! is launched for it.

mod common;

use berth_api::v1::NodeClaim;
use common::{Berth, Cluster, eventually};
use k8s_openapi::api::core::v1::Event;

#[tokio::test(flavor = "multi_thread")]
async fn a_pod_nothing_can_host_is_told_why() {
    let cluster = Cluster::start("failed", common::SEED).await;
    let _berth = Berth::start(&cluster);
    cluster.create(
        "apiVersion: v1
kind: Pod
metadata: {name: huge, namespace: default}
spec:
  containers: [{name: a, image: x, resources: {requests: {cpu: '900', memory: 1Gi}}}]",
    );
    eventually(30, "a FailedProvisioning event on the pod", || async {
        cluster.list::<Event>().await.iter().any(|e| {
            e.reason.as_deref() == Some("FailedProvisioning")
                && e.involved_object.name.as_deref() == Some("huge")
        })
    })
    .await;
    let events = cluster.list::<Event>().await;
    let e = events
        .iter()
        .find(|e| e.reason.as_deref() == Some("FailedProvisioning"))
        .unwrap();
    assert_eq!(e.type_.as_deref(), Some("Warning"));
    assert_eq!(e.involved_object.kind.as_deref(), Some("Pod"));
    let message = e.message.clone().unwrap_or_default();
    eprintln!("FailedProvisioning: {message}");
    assert!(!message.is_empty(), "the event says why");
    assert!(
        cluster.list::<NodeClaim>().await.is_empty(),
        "nothing launched"
    );
}
