//! The NodeClaim lifecycle controller against the simulated API server and the sim cloud:
//! registration, initialization, liveness, drain with a PodDisruptionBudget, termination,
//! cloud-side drift.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use berth_actuator::controller::Lifecycle;
use berth_actuator::store::{Kube, NodeClaimStore};
use berth_cloud::{CloudProvider, SimCloud, SimOptions};
use berth_scheduler_core::labels;
use berth_scheduler_core::model::{
    NodeClaim, NodeClassRef, Operator, Requirement, Taint, TaintEffect,
};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

struct World {
    client: kube::Client,
    cloud: SimCloud,
    store: Kube,
    lifecycle: Lifecycle<SimCloud>,
    clock: Arc<Mutex<SystemTime>>,
    _server: berth_sim::server::LocalServer,
}

async fn world() -> World {
    let server = berth_sim::server::ApiServer::new(
        berth_sim::store::Store::new(10_000),
        Arc::new(SystemTime::now),
    );
    let server = server.start_local().await.unwrap();
    let mut config = kube::Config::new(server.url().parse().unwrap());
    // As the actuator does: a PDB's 429 is the drain's to retry, not the client's.
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
    let clock = Arc::new(Mutex::new(SystemTime::now()));
    let c = clock.clone();
    let now: Arc<dyn Fn() -> SystemTime + Send + Sync> = Arc::new(move || *c.lock().unwrap());
    // The cloud's launch times are real time, compared by the garbage collector with the
    // test's clock: the test moves both cluster and cloud time.
    let lifecycle = Lifecycle::new(
        cloud.clone(),
        client.clone(),
        berth_actuator::lifecycle::Deadlines::default(),
        now.clone(),
    )
    .with_cloud_clock(now);
    World {
        store: Kube::new(client.clone()),
        client,
        cloud,
        lifecycle,
        clock,
        _server: server,
    }
}

fn claim(name: &str) -> NodeClaim {
    let mut c = NodeClaim::new(
        name,
        "gitlab",
        NodeClassRef {
            group: "karpenter.k8s.aws".into(),
            kind: "EC2NodeClass".into(),
            name: "default".into(),
        },
    );
    c.requirements = vec![Requirement::new(
        labels::INSTANCE_TYPE,
        Operator::In,
        &["m5.large"],
    )];
    c.labels = [("workload".to_owned(), "ci".to_owned())].into();
    c.taints = vec![Taint {
        key: "dedicated".into(),
        value: "gitlab".into(),
        effect: TaintEffect::NoSchedule,
    }];
    c
}

/// Creates the claim and launches it, as the Launch RPC does.
async fn launch(w: &World, name: &str) -> String {
    let c = claim(name);
    w.store.create(&c).await.unwrap();
    let instance = w.cloud.create(&c).await.unwrap();
    w.store.launched(name, &instance).await.unwrap();
    instance.provider_id
}

#[tokio::test]
async fn a_claim_registers_initializes_drains_around_a_pdb_and_terminates() {
    let w = world().await;
    let provider_id = launch(&w, "gitlab-x1").await;
    let nodes: Api<Node> = Api::all(w.client.clone());
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": "ip-10-0-1-5", "labels": {"kubernetes.io/hostname": "ip-10-0-1-5"}},
        "spec": {"providerID": provider_id,
                 "taints": [{"key": "karpenter.sh/unregistered", "effect": "NoExecute"}]},
        "status": {"conditions": [{"type": "Ready", "status": "False"}],
                   "allocatable": {"cpu": "1930m", "pods": "29"}},
    }))
    .unwrap();
    nodes.create(&PostParams::default(), &node).await.unwrap();

    // Registration.
    let pass = w.lifecycle.reconcile_all().await.unwrap();
    assert_eq!(pass.registered, ["gitlab-x1"]);
    let n = nodes.get("ip-10-0-1-5").await.unwrap();
    let node_labels = n.metadata.labels.clone().unwrap();
    assert_eq!(node_labels["karpenter.sh/registered"], "true");
    assert_eq!(node_labels["workload"], "ci");
    assert_eq!(n.metadata.owner_references.unwrap()[0].name, "gitlab-x1");
    let taints = n.spec.unwrap().taints.unwrap();
    assert!(taints.iter().all(|t| t.key != "karpenter.sh/unregistered"));
    assert!(taints.iter().any(|t| t.key == "dedicated"));

    // Initialization once Ready.
    assert!(
        w.lifecycle
            .reconcile_all()
            .await
            .unwrap()
            .initialized
            .is_empty()
    );
    nodes
        .patch_status(
            "ip-10-0-1-5",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}})),
        )
        .await
        .unwrap();
    assert_eq!(
        w.lifecycle.reconcile_all().await.unwrap().initialized,
        ["gitlab-x1"]
    );
    let n = nodes.get("ip-10-0-1-5").await.unwrap();
    assert_eq!(
        n.metadata.labels.unwrap()["karpenter.sh/initialized"],
        "true"
    );

    // Pods on the node, one guarded by a PDB, one of a DaemonSet.
    let pods: Api<Pod> = Api::namespaced(w.client.clone(), "ci");
    for (name, owner) in [("build-1", None), ("ds-1", Some("DaemonSet"))] {
        let mut p = json!({
            "metadata": {"name": name, "labels": {"app": name}},
            "spec": {"nodeName": "ip-10-0-1-5", "containers": [{"name": "c", "image": "x"}]},
            "status": {"phase": "Running"},
        });
        if let Some(kind) = owner {
            p["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": kind,
                "name": "ds", "uid": "u-ds", "controller": true}]);
        }
        let created = pods
            .create(
                &PostParams::default(),
                &serde_json::from_value(p.clone()).unwrap(),
            )
            .await
            .unwrap();
        // Status is a subresource: set it apart.
        pods.patch_status(
            created.metadata.name.as_deref().unwrap(),
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Running"}})),
        )
        .await
        .unwrap();
    }
    let pdbs: Api<k8s_openapi::api::policy::v1::PodDisruptionBudget> =
        Api::namespaced(w.client.clone(), "ci");
    pdbs.create(
        &PostParams::default(),
        &serde_json::from_value(json!({
            "metadata": {"name": "build"},
            "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "build-1"}}},
        }))
        .unwrap(),
    )
    .await
    .unwrap();

    // Deletion: taint, then evictions in order, blocked by the PDB until it goes.
    w.store.delete("gitlab-x1").await.unwrap();
    w.lifecycle.reconcile_all().await.unwrap();
    let n = nodes.get("ip-10-0-1-5").await.unwrap();
    assert!(
        n.spec
            .unwrap()
            .taints
            .unwrap()
            .iter()
            .any(|t| t.key == "karpenter.sh/disrupted" && t.effect == "NoSchedule")
    );
    let pass = w.lifecycle.reconcile_all().await.unwrap();
    assert_eq!(pass.eviction_blocked, ["ci/build-1"], "{pass:?}");
    assert!(pods.get_opt("build-1").await.unwrap().is_some());
    pdbs.delete("build", &DeleteParams::default())
        .await
        .unwrap();
    assert_eq!(
        w.lifecycle.reconcile_all().await.unwrap().evicted,
        ["ci/build-1"]
    );
    assert!(pods.get_opt("build-1").await.unwrap().is_none());
    assert_eq!(
        w.lifecycle.reconcile_all().await.unwrap().evicted,
        ["ci/ds-1"],
        "DaemonSet pods last"
    );

    // Terminate until the cloud says NotFound, then the node and the finalizer go.
    assert_eq!(
        w.lifecycle.reconcile_all().await.unwrap().terminated,
        ["gitlab-x1"]
    );
    assert_eq!(
        w.lifecycle.reconcile_all().await.unwrap().finalized,
        ["gitlab-x1"]
    );
    let claims: Api<berth_api::v1::NodeClaim> = Api::all(w.client.clone());
    assert!(claims.get_opt("gitlab-x1").await.unwrap().is_none());
    assert!(nodes.get_opt("ip-10-0-1-5").await.unwrap().is_none());
    assert!(w.cloud.list().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_claim_whose_node_never_registers_is_deleted_and_its_instance_terminated() {
    let w = world().await;
    launch(&w, "gitlab-lost").await;
    assert!(
        w.lifecycle
            .reconcile_all()
            .await
            .unwrap()
            .deleted_unregistered
            .is_empty()
    );
    *w.clock.lock().unwrap() += Duration::from_secs(16 * 60);
    assert_eq!(
        w.lifecycle
            .reconcile_all()
            .await
            .unwrap()
            .deleted_unregistered,
        ["gitlab-lost"]
    );
    assert_eq!(
        w.lifecycle.reconcile_all().await.unwrap().terminated,
        ["gitlab-lost"]
    );
    assert_eq!(
        w.lifecycle.reconcile_all().await.unwrap().finalized,
        ["gitlab-lost"]
    );
    assert!(w.cloud.list().await.unwrap().is_empty());
}

#[tokio::test]
async fn leaked_instances_are_terminated_and_claims_without_instances_deleted() {
    let w = world().await;
    // An instance without a NodeClaim (e.g. the claim write failed after the launch).
    w.cloud.create(&claim("ghost")).await.unwrap();
    // A claim whose instance disappeared behind Berth's back.
    launch(&w, "gitlab-orphan").await;
    w.cloud.delete("gitlab-orphan").await.unwrap();
    assert!(w.cloud.get("gitlab-orphan").await.is_err());

    let pass = w.lifecycle.reconcile_all().await.unwrap();
    assert!(
        pass.leaked_terminated.is_empty(),
        "within the grace: {pass:?}"
    );
    assert_eq!(pass.orphans_deleted, ["gitlab-orphan"]);

    *w.clock.lock().unwrap() += Duration::from_secs(31);
    let pass = w.lifecycle.reconcile_all().await.unwrap();
    assert_eq!(pass.leaked_terminated, ["ghost"]);
    assert!(w.cloud.get("ghost").await.is_err());
}

#[tokio::test]
async fn a_launch_never_recorded_is_resumed_after_the_grace_and_finds_its_instance() {
    let w = world().await;
    // The launcher died after the cloud call, before the status write.
    let c = claim("gitlab-cut");
    w.store.create(&c).await.unwrap();
    let instance = w.cloud.create(&c).await.unwrap();
    let pass = w.lifecycle.reconcile_all().await.unwrap();
    assert!(
        pass.relaunched.is_empty(),
        "within the grace a Launch call may still be under way"
    );
    *w.clock.lock().unwrap() += berth_actuator::lifecycle::LAUNCH_GRACE + Duration::from_secs(1);
    let pass = w.lifecycle.reconcile_all().await.unwrap();
    assert_eq!(pass.relaunched, ["gitlab-cut"]);
    let stored = Api::<berth_api::v1::NodeClaim>::all(w.client.clone())
        .get("gitlab-cut")
        .await
        .unwrap();
    let status = stored.status.unwrap();
    assert_eq!(
        status.provider_id.as_deref(),
        Some(instance.provider_id.as_str())
    );
    assert!(
        status
            .conditions
            .iter()
            .any(|c| c.type_ == "Launched" && c.status == "True")
    );
    assert_eq!(
        w.cloud.list().await.unwrap().len(),
        1,
        "the instance was found, not launched twice"
    );
    // Recorded now: nothing more to resume.
    let pass = w.lifecycle.reconcile_all().await.unwrap();
    assert!(pass.relaunched.is_empty());
}

#[tokio::test]
async fn a_disrupted_taint_without_a_disruption_under_way_is_removed() {
    let w = world().await;
    let provider_id = launch(&w, "gitlab-t1").await;
    let nodes: Api<Node> = Api::all(w.client.clone());
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": "ip-10-0-1-9", "labels": {"kubernetes.io/hostname": "ip-10-0-1-9"}},
        "spec": {"providerID": provider_id},
        "status": {"conditions": [{"type": "Ready", "status": "True"}],
                   "allocatable": {"cpu": "1930m", "pods": "29"}},
    }))
    .unwrap();
    nodes.create(&PostParams::default(), &node).await.unwrap();
    w.lifecycle.reconcile_all().await.unwrap();
    w.lifecycle.reconcile_all().await.unwrap();
    let taints = |n: Node| n.spec.and_then(|s| s.taints).unwrap_or_default();
    // Left by a pass that tainted after a roll-back had cleared the claim's record.
    let mut with = taints(nodes.get("ip-10-0-1-9").await.unwrap());
    assert!(with.iter().all(|t| t.key != "karpenter.sh/disrupted"));
    with.push(
        serde_json::from_value(json!({"key": "karpenter.sh/disrupted", "effect": "NoSchedule"}))
            .unwrap(),
    );
    nodes
        .patch(
            "ip-10-0-1-9",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"taints": with}})),
        )
        .await
        .unwrap();
    let pass = w.lifecycle.reconcile_all().await.unwrap();
    assert_eq!(pass.disruption_taints_removed, ["gitlab-t1"]);
    let left = taints(nodes.get("ip-10-0-1-9").await.unwrap());
    assert!(
        left.iter().all(|t| t.key != "karpenter.sh/disrupted"),
        "{left:?}"
    );
    // The claim's own taints stay.
    assert!(left.iter().any(|t| t.key == "dedicated"), "{left:?}");
    assert!(
        w.lifecycle
            .reconcile_all()
            .await
            .unwrap()
            .disruption_taints_removed
            .is_empty()
    );
}

fn drifted(c: &berth_api::v1::NodeClaim) -> Option<(String, String, String)> {
    c.status.as_ref()?.conditions.iter().find_map(|k| {
        (k.type_ == "Drifted").then(|| (k.status.clone(), k.reason.clone(), k.message.clone()))
    })
}

/// Cloud-side drift: an initialized NodeClaim the cloud calls drifted gets `Drifted=True` with
/// the cloud's reason (what the scheduler's disruption replaces), and `False` once the cloud no
/// longer says so; claims not initialized yet are not asked.
#[tokio::test]
async fn the_cloud_s_drift_becomes_the_claim_s_drifted_condition() {
    let mut w = world().await;
    w.lifecycle = w.lifecycle.with_drift_interval(Duration::ZERO);
    let lifecycle = &w.lifecycle;
    let claims: Api<berth_api::v1::NodeClaim> = Api::all(w.client.clone());
    let provider_id = launch(&w, "gitlab-d1").await;
    w.cloud.set_drifted(
        "gitlab-d1",
        "AMIDrift: instance runs ami-1, the EC2NodeClass now selects ami-2",
    );

    // Not initialized yet: not asked.
    let pass = lifecycle.reconcile_all().await.unwrap();
    assert!(pass.drifted.is_empty());
    assert_eq!(drifted(&claims.get("gitlab-d1").await.unwrap()), None);

    let nodes: Api<Node> = Api::all(w.client.clone());
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": "ip-10-0-1-7", "labels": {"kubernetes.io/hostname": "ip-10-0-1-7"}},
        "spec": {"providerID": provider_id},
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
    w.cloud.clear_drifted("gitlab-d1");
    lifecycle.reconcile_all().await.unwrap();
    let (status, _, _) = drifted(&claims.get("gitlab-d1").await.unwrap()).unwrap();
    assert_eq!(status, "False");
    assert!(
        w.cloud
            .calls()
            .iter()
            .filter(|call| call.method == "is_drifted")
            .count()
            >= 2
    );
}
