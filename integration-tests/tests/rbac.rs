//! The Kubernetes permissions each service needs, measured: the three binaries run with
//! leader election through a NodeClaim's whole life (pending pods → launch → register → run →
//! expiry → a drain a PodDisruptionBudget refuses → the pod deleted after
//! `terminationGracePeriod` → the NodeClaim and its Node deleted), each with its own bearer
//! token, and the simulated API server's audit records every (verb, group, resource) each one
//! asked for. They must be exactly those of `deploy/helm/tests/fixtures/kube-calls.json`, which
//! the chart's tests (`deploy/helm/tests/test_chart.py`, `Rbac`) hold the chart's
//! ClusterRoles and Roles to: a call the chart does not grant, or a grant no call needs, fails
//! one or the other.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::disruption::{claim_names, guarded_web_pod, runs_on_a_replacement, web_pool};
use common::{Cluster, QUICK_DISRUPTION, SEED, eventually};

const CALLS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../deploy/helm/tests/fixtures/kube-calls.json"
);
const SERVICES: [&str; 3] = ["watcher", "scheduler", "actuator"];
/// Where the Leases are (the chart's release namespace).
const LEASE_NAMESPACE: &str = "berth";

type Calls = BTreeMap<String, BTreeSet<(String, String, String)>>;

fn elect(identity: &str) -> Vec<&str> {
    vec![
        "--leader-elect",
        "--leader-election-namespace",
        LEASE_NAMESPACE,
        "--leader-election-identity",
        identity,
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn each_service_makes_exactly_the_kubernetes_calls_the_chart_grants() {
    let pool = web_pool(
        &["t3"],
        &["large"],
        "{consolidationPolicy: WhenEmpty, consolidateAfter: 0s}",
        "      expireAfter: 40s\n      terminationGracePeriod: 10s",
    );
    let cluster = Cluster::start("rbac", &[SEED[0], &pool]).await;
    let actuator = common::actuator_with(
        &cluster,
        &[&["--sim-termination-delay", "1s"][..], &elect("actuator-1")].concat(),
    );
    let kc = cluster.kubeconfig_for("berth-scheduler");
    let scheduler = common::scheduler_with(
        "127.0.0.1:0",
        &actuator.url(),
        &[
            QUICK_DISRUPTION,
            &["--kubeconfig", &kc],
            &elect("scheduler-1"),
        ]
        .concat(),
    );
    let _watcher = common::watcher_with(&cluster, &scheduler.url(), &elect("watcher-1"));

    let (first, _) = guarded_web_pod(&cluster).await;
    let old = claim_names(std::slice::from_ref(&first));
    runs_on_a_replacement(&cluster, &old, "web", 1).await;
    eventually(30, "the expired NodeClaim is gone", || async {
        cluster
            .list::<berth_api::v1::NodeClaim>()
            .await
            .iter()
            .all(|c| c.metadata.name.as_deref() != Some(old[0].as_str()))
    })
    .await;
    let evictions = cluster.server.evictions();
    assert!(
        !evictions.refused.is_empty() && !evictions.deleted_past_budget.is_empty(),
        "the drain evicted (refused) and then deleted the pod: {evictions:?}"
    );

    let audit = cluster.server.audit();
    let mut observed = Calls::new();
    for service in SERVICES {
        let calls = audit.calls_of(&format!("berth-{service}"));
        assert!(!calls.is_empty(), "no call recorded for berth-{service}");
        for c in &calls {
            if c.resource == "leases" {
                assert_eq!(c.namespace.as_deref(), Some(LEASE_NAMESPACE), "{c:?}");
            }
        }
        observed.insert(
            service.to_owned(),
            calls
                .into_iter()
                .map(|c| (c.group, c.resource, c.verb))
                .collect(),
        );
    }
    let want: Calls = serde_json::from_str(
        &std::fs::read_to_string(CALLS).unwrap_or_else(|e| panic!("{CALLS}: {e}")),
    )
    .unwrap_or_else(|e| panic!("{CALLS}: {e}"));
    for service in SERVICES {
        let got = &observed[service];
        let listed = want.get(service).cloned().unwrap_or_default();
        let missing: Vec<_> = got.difference(&listed).collect();
        let unused: Vec<_> = listed.difference(got).collect();
        assert!(
            missing.is_empty() && unused.is_empty(),
            "berth-{service}: called but not in {CALLS}: {missing:?}; listed but never called: {unused:?}\nwhat was called:\n{}",
            serde_json::to_string_pretty(&observed).unwrap()
        );
    }
}
