//! More of the API server's semantics through kube-rs: kube-runtime's watcher across cut
//! watches, 410s and injected 500s; bookmarks; binding; v1beta1 conversion on write;
//! strategic merge patch; server-side apply with field managers.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use berth_sim::faults::Fault;
use berth_sim::server::ApiServer;
use berth_sim::store::Store;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, Event};
use serde_json::json;

struct Sim {
    client: kube::Client,
    server: ApiServer,
    _local: berth_sim::server::LocalServer,
}

async fn sim(window: usize) -> Sim {
    let server = ApiServer::new(Store::new(window), Arc::new(SystemTime::now));
    let local = server.clone().start_local().await.unwrap();
    let mut config = kube::Config::new(local.url().parse().unwrap());
    // Injected 429s and 500s must reach the test, not be retried away.
    config.default_retry = false;
    Sim {
        client: kube::Client::try_from(config).unwrap(),
        server,
        _local: local,
    }
}

fn pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "web"}},
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

/// The names a kube-runtime watcher stream knows after `n` more events.
async fn next_names(
    stream: &mut (impl futures::Stream<Item = Result<Event<Pod>, watcher::Error>> + Unpin),
    known: &mut std::collections::BTreeSet<String>,
    until: impl Fn(&std::collections::BTreeSet<String>) -> bool,
) -> usize {
    let mut errors = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !until(known) {
        let event = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("the watcher kept up")
            .expect("the stream does not end");
        match event {
            Ok(Event::Apply(p) | Event::InitApply(p)) => {
                known.insert(p.metadata.name.unwrap());
            }
            Ok(Event::Delete(p)) => {
                known.remove(&p.metadata.name.unwrap());
            }
            Ok(Event::Init) => known.clear(),
            Ok(Event::InitDone) => {}
            Err(_) => errors += 1,
        }
    }
    errors
}

#[tokio::test]
async fn the_kube_runtime_watcher_survives_cut_watches_500s_and_410s() {
    let s = sim(5).await;
    let pods: Api<Pod> = Api::namespaced(s.client.clone(), "default");
    pods.create(&PostParams::default(), &pod("a"))
        .await
        .unwrap();
    let mut stream = watcher::watcher(pods.clone(), watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut known = std::collections::BTreeSet::new();
    next_names(&mut stream, &mut known, |k| k.contains("a")).await;

    // A cut watch: the watcher re-watches from its resourceVersion and loses nothing.
    s.server.faults().cut_watches();
    pods.create(&PostParams::default(), &pod("b"))
        .await
        .unwrap();
    next_names(&mut stream, &mut known, |k| k.contains("b")).await;

    // The next watch and list fail with 500 twice, the watch is cut, and more than the
    // window's worth of writes happens meanwhile: the re-watch is 410 Gone, the watcher
    // relists and still ends up with every pod.
    s.server
        .faults()
        .add(Fault::status(500).method("GET").path("/pods").times(2));
    s.server.faults().cut_watches();
    for i in 0..10 {
        pods.create(&PostParams::default(), &pod(&format!("c{i}")))
            .await
            .unwrap();
    }
    pods.delete("a", &Default::default()).await.unwrap();
    next_names(&mut stream, &mut known, |k| {
        k.len() == 11 && !k.contains("a") && k.contains("c9")
    })
    .await;
}

#[tokio::test]
async fn injected_statuses_reach_the_client_and_then_stop() {
    let s = sim(100).await;
    let pods: Api<Pod> = Api::namespaced(s.client.clone(), "default");
    s.server
        .faults()
        .add(Fault::status(429).method("POST").times(1));
    let err = pods
        .create(&PostParams::default(), &pod("a"))
        .await
        .unwrap_err();
    assert_eq!(code(&err), 429);
    pods.create(&PostParams::default(), &pod("a"))
        .await
        .unwrap();
    s.server
        .faults()
        .add(Fault::delay(Duration::from_secs(5)).path("/pods/a"));
    let slow = tokio::time::timeout(Duration::from_millis(300), pods.get("a")).await;
    assert!(
        slow.is_err(),
        "the request stalls past the client's deadline"
    );
}

#[tokio::test]
async fn bookmarks_arrive_on_a_quiet_watch_when_asked_for() {
    let s = sim(100).await;
    let pods: Api<Pod> = Api::namespaced(s.client.clone(), "default");
    let created = pods
        .create(&PostParams::default(), &pod("a"))
        .await
        .unwrap();
    let rv = created.metadata.resource_version.unwrap();
    // The server sends a bookmark after 60 s of quiet and when timeoutSeconds ends the
    // watch (kube-rs asks for bookmarks by default); here the watch ends after 1 s.
    let params = kube::api::WatchParams::default().timeout(1);
    let events: Vec<_> = pods
        .watch(&params, &rv)
        .await
        .unwrap()
        .collect::<Vec<_>>()
        .await;
    assert_eq!(events.len(), 1, "{events:?}");
    match &events[0] {
        Ok(kube::api::WatchEvent::Bookmark(b)) => {
            assert_eq!(b.metadata.resource_version, rv)
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn binding_assigns_once() {
    let s = sim(100).await;
    let pods: Api<Pod> = Api::namespaced(s.client.clone(), "default");
    pods.create(&PostParams::default(), &pod("a"))
        .await
        .unwrap();
    let binding = json!({"apiVersion": "v1", "kind": "Binding",
        "metadata": {"name": "a"}, "target": {"kind": "Node", "name": "node-1"}});
    let req = http::Request::post("/api/v1/namespaces/default/pods/a/binding")
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&binding).unwrap())
        .unwrap();
    s.client.request::<serde_json::Value>(req).await.unwrap();
    let p = pods.get("a").await.unwrap();
    assert_eq!(p.spec.unwrap().node_name.as_deref(), Some("node-1"));
    let again = http::Request::post("/api/v1/namespaces/default/pods/a/binding")
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&binding).unwrap())
        .unwrap();
    let err = s
        .client
        .request::<serde_json::Value>(again)
        .await
        .unwrap_err();
    assert_eq!(code(&err), 409);
}

#[tokio::test]
async fn a_v1beta1_nodepool_is_stored_as_v1() {
    let s = sim(100).await;
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../api/tests/fixtures/seed/nodepool-gitlab.v1beta1.yaml"
    ))
    .unwrap();
    let obj: serde_json::Value = serde_norway::from_str(&text).unwrap();
    let ar = kube::api::ApiResource {
        group: "karpenter.sh".into(),
        version: "v1beta1".into(),
        api_version: "karpenter.sh/v1beta1".into(),
        kind: "NodePool".into(),
        plural: "nodepools".into(),
    };
    let beta: Api<kube::api::DynamicObject> = Api::all_with(s.client.clone(), &ar);
    let dynamic: kube::api::DynamicObject = serde_json::from_value(obj).unwrap();
    beta.create(&PostParams::default(), &dynamic).await.unwrap();
    let v1: Api<berth_api::v1::NodePool> = Api::all(s.client.clone());
    let name = dynamic.metadata.name.clone().unwrap();
    let stored = v1.get(&name).await.unwrap();
    assert_eq!(
        stored.spec.template.spec.node_class_ref.kind, "EC2NodeClass",
        "v1beta1's nodeClassRef converted"
    );
    // A patch through v1beta1 is refused with the reason; through v1 it works.
    let err = beta
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"weight": 5}})),
        )
        .await
        .unwrap_err();
    assert_eq!(code(&err), 400);
    v1.patch(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"weight": 5}})),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn strategic_merge_and_server_side_apply() {
    let s = sim(100).await;
    let pods: Api<Pod> = Api::namespaced(s.client.clone(), "default");
    pods.create(&PostParams::default(), &pod("a"))
        .await
        .unwrap();
    // Containers merge by name: adding a sidecar keeps the first container.
    let patched = pods
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Strategic(
                json!({"spec": {"containers": [{"name": "sidecar", "image": "envoy"}]}}),
            ),
        )
        .await
        .unwrap();
    let names: Vec<String> = patched
        .spec
        .unwrap()
        .containers
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names, ["c", "sidecar"]);

    // Apply creates, records the manager, and a second manager's different value conflicts.
    let cm: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(s.client.clone(), "default");
    let applied = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}});
    let d = cm
        .patch(
            "web",
            &PatchParams::apply("gitops"),
            &Patch::Apply(&applied),
        )
        .await
        .unwrap();
    let fields = d.metadata.managed_fields.unwrap();
    assert_eq!(fields[0].manager.as_deref(), Some("gitops"));
    assert_eq!(fields[0].operation.as_deref(), Some("Apply"));
    let scale = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"}, "spec": {"replicas": 5}});
    let err = cm
        .patch(
            "web",
            &PatchParams::apply("autoscaler"),
            &Patch::Apply(&scale),
        )
        .await
        .unwrap_err();
    assert_eq!(code(&err), 409);
    let forced = cm
        .patch(
            "web",
            &PatchParams::apply("autoscaler").force(),
            &Patch::Apply(&scale),
        )
        .await
        .unwrap();
    assert_eq!(forced.spec.unwrap().replicas, Some(5));
}

/// The audit names each call by the client's bearer token, in RBAC's verbs: get, list, watch,
/// create, patch (and create for an apply that creates), delete, subresources as
/// `resource/sub`.
#[tokio::test]
async fn the_audit_records_each_clients_calls_as_rbac_verbs() {
    let s = sim(1000).await;
    let kc = berth_sim::server::kubeconfig_with_token(&s._local.url(), "berth-test");
    let kc = kube::config::Kubeconfig::from_yaml(&kc).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    let client = kube::Client::try_from(config).unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "ci");
    pods.create(&PostParams::default(), &pod("a"))
        .await
        .unwrap();
    pods.get("a").await.unwrap();
    pods.list(&Default::default()).await.unwrap();
    let mut w = pods
        .watch(&kube::api::WatchParams::default().timeout(1), "0")
        .await
        .unwrap()
        .boxed();
    let _ = w.next().await;
    let apply = PatchParams::apply("berth-test");
    pods.patch("b", &apply, &Patch::Apply(pod("b")))
        .await
        .unwrap();
    pods.patch("b", &apply, &Patch::Apply(pod("b")))
        .await
        .unwrap();
    pods.patch_status(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {}})),
    )
    .await
    .unwrap();
    pods.evict("a", &Default::default()).await.unwrap();
    pods.delete("b", &Default::default()).await.unwrap();
    // The test's own anonymous client is someone else.
    Api::<Pod>::all(s.client.clone())
        .list(&Default::default())
        .await
        .unwrap();

    let got: Vec<(String, String, Option<String>)> = s
        .server
        .audit()
        .calls_of("berth-test")
        .into_iter()
        .map(|c| (c.verb, c.resource, c.namespace))
        .collect();
    let ci = Some("ci".to_owned());
    let want: Vec<(String, String, Option<String>)> = [
        ("create", "pods"),
        ("create", "pods/eviction"),
        ("delete", "pods"),
        ("get", "pods"),
        ("list", "pods"),
        ("patch", "pods"),
        ("patch", "pods/status"),
        ("watch", "pods"),
    ]
    .iter()
    .map(|(v, r)| ((*v).to_owned(), (*r).to_owned(), ci.clone()))
    .collect();
    assert_eq!(got, want);
    let anonymous = s.server.audit().calls_of("system:anonymous");
    assert_eq!(anonymous.len(), 1, "{anonymous:?}");
    assert_eq!(anonymous.first().unwrap().namespace, None);
}
