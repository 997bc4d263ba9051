//! kube-rs clients against the simulated API server over HTTP on 127.0.0.1:0.

use std::sync::Arc;
use std::time::SystemTime;

use berth_sim::server::ApiServer;
use berth_sim::store::Store;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use serde_json::json;

struct Sim {
    client: kube::Client,
    _server: berth_sim::server::LocalServer,
}

async fn sim(window: usize) -> Sim {
    let server = ApiServer::new(Store::new(window), Arc::new(SystemTime::now))
        .start_local()
        .await
        .unwrap();
    let config = kube::Config::new(server.url().parse().unwrap());
    Sim {
        client: kube::Client::try_from(config).unwrap(),
        _server: server,
    }
}

fn pod(name: &str, app: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": app}},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }))
    .unwrap()
}

fn code(e: &kube::Error) -> u16 {
    match e {
        kube::Error::Api(s) => s.code,
        other => panic!("not an API error: {other:?}"),
    }
}

#[tokio::test]
async fn create_get_list_with_selectors_and_conflicts() {
    let s = sim(1000).await;
    let pods: Api<Pod> = Api::namespaced(s.client.clone(), "ci");
    let a = pods
        .create(&PostParams::default(), &pod("a", "web"))
        .await
        .unwrap();
    pods.create(&PostParams::default(), &pod("b", "db"))
        .await
        .unwrap();
    assert_eq!(a.metadata.namespace.as_deref(), Some("ci"));
    assert!(a.metadata.uid.is_some() && a.metadata.creation_timestamp.is_some());

    let web = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap();
    assert_eq!(web.items.len(), 1);
    assert!(web.metadata.resource_version.is_some());
    assert_eq!(
        pods.list(&ListParams::default()).await.unwrap().items.len(),
        2
    );

    let dup = pods
        .create(&PostParams::default(), &pod("a", "web"))
        .await
        .unwrap_err();
    assert_eq!(code(&dup), 409);

    // A stale resourceVersion conflicts.
    let mut first = pods.get("a").await.unwrap();
    first
        .metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("v".into(), "1".into());
    pods.replace("a", &PostParams::default(), &first)
        .await
        .unwrap();
    first
        .metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("v".into(), "2".into());
    let stale = pods
        .replace("a", &PostParams::default(), &first)
        .await
        .unwrap_err();
    assert_eq!(code(&stale), 409);

    // Merge patch and the status subresource.
    pods.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"v": "3"}}})),
    )
    .await
    .unwrap();
    let st = pods
        .patch_status(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Running"}})),
        )
        .await
        .unwrap();
    assert_eq!(st.status.unwrap().phase.as_deref(), Some("Running"));
    let got = pods.get("a").await.unwrap();
    assert_eq!(got.metadata.labels.unwrap()["v"], "3");

    let running = pods
        .list(&ListParams::default().fields("status.phase=Running"))
        .await
        .unwrap();
    assert_eq!(running.items.len(), 1);

    pods.delete("b", &DeleteParams::default()).await.unwrap();
    assert_eq!(code(&pods.get("b").await.unwrap_err()), 404);
}

#[tokio::test]
async fn watch_resumes_from_a_resource_version_and_an_old_one_is_gone() {
    let s = sim(4).await;
    let nodes: Api<Node> = Api::all(s.client.clone());
    let node =
        |n: &str| -> Node { serde_json::from_value(json!({"metadata": {"name": n}})).unwrap() };
    nodes
        .create(&PostParams::default(), &node("n1"))
        .await
        .unwrap();
    let rv = nodes
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    nodes
        .create(&PostParams::default(), &node("n2"))
        .await
        .unwrap();

    let mut events = nodes
        .watch(&WatchParams::default().timeout(5), &rv)
        .await
        .unwrap()
        .boxed();
    match events.try_next().await.unwrap().unwrap() {
        WatchEvent::Added(n) => assert_eq!(n.metadata.name.as_deref(), Some("n2")),
        other => panic!("{other:?}"),
    }
    nodes.delete("n1", &DeleteParams::default()).await.unwrap();
    match events.try_next().await.unwrap().unwrap() {
        WatchEvent::Deleted(n) => assert_eq!(n.metadata.name.as_deref(), Some("n1")),
        other => panic!("{other:?}"),
    }
    drop(events);

    for i in 3..10 {
        nodes
            .create(&PostParams::default(), &node(&format!("n{i}")))
            .await
            .unwrap();
    }
    let mut old = nodes
        .watch(&WatchParams::default().timeout(5), &rv)
        .await
        .unwrap()
        .boxed();
    match old.try_next().await.unwrap().unwrap() {
        WatchEvent::Error(e) => assert_eq!(e.code, 410),
        other => panic!("expected 410 Gone, got {other:?}"),
    }
}

#[tokio::test]
async fn finalizers_hold_a_nodeclaim_until_removed() {
    let s = sim(1000).await;
    let claims: Api<berth_api::v1::NodeClaim> = Api::all(s.client.clone());
    let claim: berth_api::v1::NodeClaim = serde_json::from_value(json!({
        "apiVersion": "karpenter.sh/v1", "kind": "NodeClaim",
        "metadata": {"name": "gitlab-x1", "finalizers": ["karpenter.sh/termination"]},
        "spec": {"requirements": [], "nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "default"}},
    }))
    .unwrap();
    claims.create(&PostParams::default(), &claim).await.unwrap();
    claims
        .delete("gitlab-x1", &DeleteParams::default())
        .await
        .unwrap();
    let held = claims.get("gitlab-x1").await.unwrap();
    assert!(held.metadata.deletion_timestamp.is_some());
    claims
        .patch(
            "gitlab-x1",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": []}})),
        )
        .await
        .unwrap();
    assert_eq!(code(&claims.get("gitlab-x1").await.unwrap_err()), 404);
}

#[tokio::test]
async fn karpenter_objects_are_validated_on_write_naming_the_field() {
    let s = sim(1000).await;
    let pools: Api<berth_api::v1::NodePool> = Api::all(s.client.clone());
    let pool = |key: &str| -> berth_api::v1::NodePool {
        serde_json::from_value(json!({
            "apiVersion": "karpenter.sh/v1", "kind": "NodePool",
            "metadata": {"name": "gitlab"},
            "spec": {"template": {"spec": {
                "requirements": [{"key": key, "operator": "In", "values": ["x"]}],
                "nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "default"}}}},
        }))
        .unwrap()
    };
    let refused = pools
        .create(&PostParams::default(), &pool("kubernetes.io/hostname"))
        .await
        .unwrap_err();
    match refused {
        kube::Error::Api(e) => {
            assert_eq!(e.code, 422);
            assert!(
                e.message.contains("spec.template.spec.requirements[0].key"),
                "{}",
                e.message
            );
        }
        other => panic!("{other:?}"),
    }
    pools
        .create(&PostParams::default(), &pool("workload"))
        .await
        .unwrap();
    // A patch that would make it invalid is refused too, and nothing changes.
    let bad = pools
        .patch(
            "gitlab",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"weight": 1000}})),
        )
        .await
        .unwrap_err();
    assert_eq!(code(&bad), 422);
    assert_eq!(pools.get("gitlab").await.unwrap().spec.weight, None);
}
