//! Disruption with the three real binaries: a build pod annotated `karpenter.sh/do-not-disrupt`
//! keeps its node while it runs; once the pods are gone the node is empty and is removed
//! (the seed's GitLab pool: `WhenUnderutilized` = `WhenEmptyOrUnderutilized`, consolidateAfter
//! 0s), its NodeClaim and Node deleted and its instance terminated. The actuator publishes
//! Karpenter's events on the way: `DisruptionBlocked` on the Node and its NodeClaim naming the
//! do-not-disrupt pod (once, though the scheduler reports it every evaluation), then
//! `DisruptionTerminating` ("Disrupting Node: Empty") when the node goes.

mod common;

use berth_api::v1::NodeClaim;
use common::{Berth, Cluster, build_pods, eventually};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams};

#[tokio::test(flavor = "multi_thread")]
async fn an_empty_node_is_removed_and_a_do_not_disrupt_pod_keeps_its_node() {
    let cluster = Cluster::start("disruption-empty", common::SEED).await;
    cluster.create("apiVersion: v1\nkind: Namespace\nmetadata: {name: gitlab}");
    let _berth = Berth::start(&cluster);
    cluster.create(&build_pods("gitlab", "build", 3));
    eventually(60, "the builds run", || async {
        cluster
            .list::<Pod>()
            .await
            .iter()
            .filter(|p| common::is_running(p))
            .count()
            == 3
    })
    .await;
    assert_eq!(cluster.list::<NodeClaim>().await.len(), 1);
    let claim = cluster.list::<NodeClaim>().await[0]
        .metadata
        .name
        .clone()
        .unwrap();
    let node = cluster.list::<Node>().await[0]
        .metadata
        .name
        .clone()
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), "gitlab");
    // One build is protected: the node stays while it runs, though the others go.
    let mut keep: Pod = pods.get("build-0").await.unwrap();
    keep.metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert("karpenter.sh/do-not-disrupt".into(), "true".into());
    keep.metadata.managed_fields = None;
    pods.replace("build-0", &Default::default(), &keep)
        .await
        .unwrap();
    for name in ["build-1", "build-2"] {
        pods.delete(name, &DeleteParams::default()).await.unwrap();
    }
    // Past the evaluation interval (10 s) and validation wait (15 s) it is still there.
    tokio::time::sleep(std::time::Duration::from_secs(30)).await;
    assert_eq!(
        cluster.list::<NodeClaim>().await.len(),
        1,
        "a node with a do-not-disrupt pod was disrupted"
    );
    let blocked = common::events_about(&cluster, "Node", &node, "DisruptionBlocked").await;
    assert_eq!(
        blocked.len(),
        1,
        "one DisruptionBlocked event on the node, de-duplicated across evaluations: {blocked:#?}"
    );
    let message = blocked[0].message.clone().unwrap_or_default();
    assert!(
        message.contains("gitlab/build-0") && message.contains("karpenter.sh/do-not-disrupt"),
        "{message}"
    );
    assert!(blocked[0].involved_object.uid.is_some());
    let on_claim = common::events_about(&cluster, "NodeClaim", &claim, "DisruptionBlocked").await;
    assert_eq!(on_claim.len(), 1, "{on_claim:#?}");
    // The build ends: the node is empty and goes.
    pods.delete("build-0", &DeleteParams::default())
        .await
        .unwrap();
    eventually(90, "the empty node is removed", || async {
        cluster.list::<NodeClaim>().await.is_empty() && cluster.list::<Node>().await.is_empty()
    })
    .await;
    for (kind, name) in [("Node", &node), ("NodeClaim", &claim)] {
        let disrupting = common::events_about(&cluster, kind, name, "DisruptionTerminating").await;
        assert_eq!(disrupting.len(), 1, "{kind} {name}: {disrupting:#?}");
        let message = disrupting[0].message.clone().unwrap_or_default();
        assert!(
            message.starts_with(&format!("Disrupting {kind}: Empty (saving $")),
            "{message}"
        );
    }
}
