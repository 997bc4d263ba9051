//! Disruption end to end, one method or block per test, with the three real binaries on the
//! simulated cluster (`--disruption-interval 2s --disruption-validation 3s`, instances shut
//! down in 1 s): pods are a Deployment's, so an evicted pod comes back and must find room.
//!
//! - underutilized: two t3.large each 60 % used by one pod; once the NodePool allows t3a and
//!   xlarge, one t3a.xlarge replaces both (multi-node consolidation) — launched and
//!   initialized before a pod is evicted, cheaper in total, both pods running;
//! - drift: a NodePool requirement no longer met (sizes narrowed) and then a template label
//!   added (`karpenter.sh/nodepool-hash` changes): each time the node is replaced by one that
//!   complies, and then it stays (no drift loop);
//! - expiry: `expireAfter: 30s` replaces the NodeClaim once it is that old;
//! - budgets: `nodes: "0"` keeps three empty nodes; `nodes: "1"` then removes them one at a
//!   time (never two disrupted at once, from the API server's own log);
//! - PodDisruptionBudgets: while the budget allows no disruption no node goes and no eviction
//!   is even tried; once it allows one, both nodes are replaced by cheaper ones, one at a time,
//!   with no eviction refused and never fewer healthy pods than the budget asks for;
//! - scheduled budgets: `nodes: "0"` in a window that is open keeps three empty nodes; once
//!   the window is hours away the other budget (`nodes: "2"`) rules, two at a time;
//! - terminationGracePeriod: an expired node whose only pod a budget protects is drained by
//!   evictions (refused), then, 15 s after its deletion started, by deleting the pod.

mod common;

use std::time::Duration;

use berth_api::v1::NodeClaim;
use common::disruption::{
    INSTANCE_TYPE, claim_names, guarded_web_pod, methods, only_new_claim_runs, patch_pool,
    requirements, runs_on_a_replacement, set_requirements, web_pdb, web_pool,
};
use common::history::{self, node_claims, pods};
use common::{
    Berth, Cluster, SEED, claim_label, deployment, describe_claims, eventually, fleet_price,
    running,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn two_half_used_nodes_are_replaced_by_one_cheaper_node() {
    // Budgets of 100 %: the default 10 % of two nodes would let one go at a time.
    let pool = web_pool(
        &["t3"],
        &["large"],
        "{consolidationPolicy: WhenEmptyOrUnderutilized, consolidateAfter: 0s, budgets: [{nodes: '100%'}]}",
        "",
    );
    let cluster = Cluster::start("disruption-underutilized", &[SEED[0], &pool]).await;
    let _berth = Berth::start_disrupting(&cluster);
    // A 1.2-CPU pod per t3.large (1.93 CPU allocatable): two nodes, each 60 % used.
    cluster.create(&deployment("web", 2, "1200m"));
    eventually(60, "two web pods run on two t3.large", || async {
        running(&cluster, "web").await.len() == 2 && cluster.list::<NodeClaim>().await.len() == 2
    })
    .await;
    let before = cluster.list::<NodeClaim>().await;
    let old = claim_names(&before);
    for c in &before {
        assert_eq!(claim_label(c, INSTANCE_TYPE), Some("t3.large"));
    }
    let price_before = fleet_price(&cluster).await;

    // One t3a.xlarge ($0.1504/h) holds both pods for less than two t3.large ($0.1664/h);
    // a t3.xlarge costs the same as the two, and a t3a.large holds one pod.
    set_requirements(&cluster, requirements(&["t3", "t3a"], &["large", "xlarge"])).await;
    eventually(90, "one cheaper node holds both pods", || async {
        only_new_claim_runs(&cluster, &old, "web", 2)
            .await
            .is_some()
    })
    .await;
    let replacement = only_new_claim_runs(&cluster, &old, "web", 2)
        .await
        .expect("it stays");
    let price_after = fleet_price(&cluster).await;
    assert!(
        price_after < price_before,
        "${price_after}/h after, ${price_before}/h before: {:?}",
        describe_claims(&cluster).await
    );
    assert_eq!(claim_label(&replacement, INSTANCE_TYPE), Some("t3a.xlarge"));

    let claims = history::log(&cluster, &node_claims()).await;
    let pod_log = history::log(&cluster, &pods()).await;
    let new = replacement.metadata.name.clone().unwrap();
    let mut created = history::created(&claims);
    created.sort();
    let mut expected = [old.clone(), vec![new.clone()]].concat();
    expected.sort();
    assert_eq!(created, expected, "exactly one replacement");
    let methods = methods(&claims);
    for c in &old {
        assert_eq!(methods.get(c).map(String::as_str), Some("Underutilized"));
    }
    // No pod was evicted before its new node was up.
    let up = history::initialized_at(&claims, &new).expect("the replacement initialized");
    for c in &before {
        let node = c.status.as_ref().unwrap().node_name.clone().unwrap();
        for pod in history::ran_on(&pod_log, &node) {
            let gone = history::deleted_at(&pod_log, &pod)
                .unwrap_or_else(|| panic!("{pod} still exists on a removed node"));
            assert!(gone > up, "{pod} was evicted before {new} was initialized");
        }
    }
    assert!(cluster.server.evictions().evicted >= 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_nodepool_change_drifts_its_node_to_a_compliant_one() {
    let pool = web_pool(
        &["t3"],
        &["large", "xlarge"],
        "{consolidationPolicy: WhenEmpty, consolidateAfter: 0s}",
        "",
    );
    let cluster = Cluster::start("disruption-drift", &[SEED[0], &pool]).await;
    let _berth = Berth::start_disrupting(&cluster);
    // Two 500m pods: one t3.large, the cheapest that holds them.
    cluster.create(&deployment("web", 2, "500m"));
    eventually(60, "the pods run on one t3.large", || async {
        only_new_claim_runs(&cluster, &[], "web", 2).await.is_some()
    })
    .await;
    let first = only_new_claim_runs(&cluster, &[], "web", 2)
        .await
        .expect("it stays");
    assert_eq!(claim_label(&first, INSTANCE_TYPE), Some("t3.large"));
    let mut old = claim_names(std::slice::from_ref(&first));

    // 1. A requirement the node no longer meets: only xlarge now.
    set_requirements(&cluster, requirements(&["t3"], &["xlarge"])).await;
    eventually(90, "a t3.xlarge replaces the t3.large", || async {
        only_new_claim_runs(&cluster, &old, "web", 2)
            .await
            .is_some()
    })
    .await;
    let second = only_new_claim_runs(&cluster, &old, "web", 2)
        .await
        .expect("it stays");
    assert_eq!(claim_label(&second, INSTANCE_TYPE), Some("t3.xlarge"));
    old.extend(claim_names(std::slice::from_ref(&second)));

    // 2. A template label: the NodePool's hash changes, the node lacks the label.
    patch_pool(
        &cluster,
        "web",
        json!({"spec": {"template": {"metadata": {"labels": {"tier": "gold"}}}}}),
    )
    .await;
    eventually(90, "a node labelled tier=gold replaces it", || async {
        only_new_claim_runs(&cluster, &old, "web", 2)
            .await
            .is_some()
    })
    .await;
    let third = only_new_claim_runs(&cluster, &old, "web", 2)
        .await
        .expect("it stays");
    assert_eq!(claim_label(&third, "tier"), Some("gold"));
    let nodes = cluster.list::<Node>().await;
    assert_eq!(
        nodes[0]
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("tier"))
            .map(String::as_str),
        Some("gold")
    );

    // It complies: past several evaluations, nothing else is disrupted or launched.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let claims = history::log(&cluster, &node_claims()).await;
    assert_eq!(
        history::created(&claims),
        [old.clone(), claim_names(std::slice::from_ref(&third))].concat(),
        "one replacement per change, then none: {:?}",
        describe_claims(&cluster).await
    );
    let methods = methods(&claims);
    for c in &old {
        assert_eq!(methods.get(c).map(String::as_str), Some("Drifted"), "{c}");
    }
    assert!(!methods.contains_key(third.metadata.name.as_deref().unwrap()));
    assert_eq!(running(&cluster, "web").await.len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_node_claim_is_replaced() {
    let pool = web_pool(
        &["t3"],
        &["large"],
        "{consolidationPolicy: WhenEmpty, consolidateAfter: 0s}",
        "      expireAfter: 30s",
    );
    let cluster = Cluster::start("disruption-expiry", &[SEED[0], &pool]).await;
    let _berth = Berth::start_disrupting(&cluster);
    cluster.create(&deployment("web", 2, "500m"));
    eventually(60, "the pods run", || async {
        only_new_claim_runs(&cluster, &[], "web", 2).await.is_some()
    })
    .await;
    let first = only_new_claim_runs(&cluster, &[], "web", 2)
        .await
        .expect("it stays");
    let old = claim_names(std::slice::from_ref(&first));
    eventually(90, "a new NodeClaim replaces the expired one", || async {
        only_new_claim_runs(&cluster, &old, "web", 2)
            .await
            .is_some()
    })
    .await;
    let second = only_new_claim_runs(&cluster, &old, "web", 2)
        .await
        .expect("it stays");

    let claims = history::log(&cluster, &node_claims()).await;
    assert_eq!(
        history::created(&claims),
        [old.clone(), claim_names(std::slice::from_ref(&second))].concat()
    );
    assert_eq!(
        methods(&claims).get(&old[0]).map(String::as_str),
        Some("Expired")
    );
    // Not before it was 30 s old.
    let started = claims
        .iter()
        .find_map(|e| {
            (e.object["metadata"]["name"] == old[0].as_str())
                .then(|| {
                    e.object["metadata"]["annotations"]["disruption.berth.dev/started-at"].as_str()
                })
                .flatten()
                .map(str::to_owned)
        })
        .expect("the decision was recorded");
    let started: k8s_openapi::jiff::Timestamp = started.parse().unwrap();
    let created = first.metadata.creation_timestamp.clone().unwrap().0;
    assert!(
        started.duration_since(created).as_secs() >= 30,
        "disrupted at {started}, created at {created}"
    );
}

/// Three t3.large, each run a 1.2-CPU pod of Deployment `web`, which is then scaled to 0.
async fn three_empty_nodes(cluster: &Cluster) {
    cluster.create(&deployment("web", 3, "1200m"));
    eventually(60, "three pods run on three nodes", || async {
        running(cluster, "web").await.len() == 3 && cluster.list::<Node>().await.len() == 3
    })
    .await;
    Api::<Deployment>::namespaced(cluster.client.clone(), "default")
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 0}})),
        )
        .await
        .unwrap();
    eventually(30, "the pods are gone", || async {
        cluster
            .list::<k8s_openapi::api::core::v1::Pod>()
            .await
            .is_empty()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_budget_of_zero_keeps_empty_nodes_and_one_lets_them_go_one_at_a_time() {
    let pool = web_pool(
        &["t3"],
        &["large"],
        "{consolidationPolicy: WhenEmpty, consolidateAfter: 0s, budgets: [{nodes: '0'}]}",
        "",
    );
    let cluster = Cluster::start("disruption-budgets", &[SEED[0], &pool]).await;
    let _berth = Berth::start_disrupting(&cluster);
    three_empty_nodes(&cluster).await;

    // Three empty nodes, a budget of none: several evaluations later all are still there.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let claims = history::log(&cluster, &node_claims()).await;
    assert_eq!(history::most_disrupting_at_once(&claims), 0);
    assert_eq!(cluster.list::<NodeClaim>().await.len(), 3);

    patch_pool(
        &cluster,
        "web",
        json!({"spec": {"disruption": {"budgets": [{"nodes": "1"}]}}}),
    )
    .await;
    eventually(90, "every empty node is removed", || async {
        cluster.list::<NodeClaim>().await.is_empty() && cluster.list::<Node>().await.is_empty()
    })
    .await;
    let claims = history::log(&cluster, &node_claims()).await;
    assert_eq!(
        history::most_disrupting_at_once(&claims),
        1,
        "the budget allows one at a time"
    );
    let methods = methods(&claims);
    assert_eq!(methods.len(), 3, "{methods:?}");
    assert!(methods.values().all(|m| m == "Empty"), "{methods:?}");
    assert_eq!(history::created(&claims).len(), 3, "nothing launched");
}

#[tokio::test(flavor = "multi_thread")]
async fn pod_disruption_budgets_hold_nodes_and_are_never_broken() {
    let pool = web_pool(
        &["t3"],
        &["large"],
        "{consolidationPolicy: WhenEmptyOrUnderutilized, consolidateAfter: 0s}",
        "",
    );
    let cluster = Cluster::start("disruption-pdb", &[SEED[0], &pool]).await;
    let _berth = Berth::start_disrupting(&cluster);
    cluster.create(&deployment("web", 2, "1200m"));
    cluster.create(&web_pdb(2));
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(cluster.client.clone(), "default");
    eventually(
        60,
        "both pods run and the budget allows none to go",
        || async {
            let status = pdbs.get("web").await.unwrap().status.unwrap_or_default();
            running(&cluster, "web").await.len() == 2
                && status.current_healthy == 2
                && status.disruptions_allowed == 0
        },
    )
    .await;
    let old = claim_names(&cluster.list::<NodeClaim>().await);
    assert_eq!(old.len(), 2);

    // A t3a.large is cheaper than each t3.large: each node would be replaced...
    set_requirements(&cluster, requirements(&["t3", "t3a"], &["large"])).await;
    // ...but the budget holds both: no decision, no eviction tried.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let claims = history::log(&cluster, &node_claims()).await;
    let mut created = history::created(&claims);
    created.sort();
    assert_eq!(created, old, "the list is sorted by name");
    assert_eq!(history::most_disrupting_at_once(&claims), 0);
    assert_eq!(
        cluster.server.evictions(),
        berth_sim::server::EvictionStats::default()
    );

    // One may go at a time now.
    pdbs.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"minAvailable": null, "maxUnavailable": 1}})),
    )
    .await
    .unwrap();
    eventually(120, "both nodes are replaced by t3a.large", || async {
        let claims = cluster.list::<NodeClaim>().await;
        let pods = running(&cluster, "web").await;
        claims.len() == 2
            && claims.iter().all(|c| {
                !old.contains(c.metadata.name.as_ref().unwrap())
                    && claim_label(c, INSTANCE_TYPE) == Some("t3a.large")
            })
            && cluster.list::<Node>().await.len() == 2
            && pods.len() == 2
    })
    .await;
    let claims = history::log(&cluster, &node_claims()).await;
    let pod_log = history::log(&cluster, &pods()).await;
    assert_eq!(history::created(&claims).len(), 4, "one replacement each");
    assert_eq!(
        history::most_disrupting_at_once(&claims),
        1,
        "one at a time"
    );
    let evictions = cluster.server.evictions();
    assert_eq!(evictions.evicted, 2, "{evictions:?}");
    assert!(
        evictions.refused.is_empty(),
        "evictions tried while the budget allowed none: {evictions:?}"
    );
    assert!(
        evictions.deleted_past_budget.is_empty(),
        "pods deleted around the budget: {evictions:?}"
    );
    assert_eq!(
        history::fewest_healthy(&pod_log, "web", 2),
        Some(1),
        "maxUnavailable 1 of 2"
    );
}

/// A cron schedule (UTC, as Karpenter reads it) of a window that opened `ago` ago: with a
/// duration longer than `ago`, its budget is active now.
fn daily_at(ago: Duration, later: Duration) -> String {
    let at = k8s_openapi::jiff::Timestamp::now() - ago + later;
    let at = at.to_zoned(k8s_openapi::jiff::tz::TimeZone::UTC);
    format!("{} {} * * *", at.minute(), at.hour())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_scheduled_budget_holds_nodes_only_while_its_window_is_open() {
    // The window opened a minute ago and lasts an hour: none may go now.
    let open = daily_at(Duration::from_secs(60), Duration::ZERO);
    let pool = web_pool(
        &["t3"],
        &["large"],
        &format!(
            "{{consolidationPolicy: WhenEmpty, consolidateAfter: 0s, budgets: [{{nodes: '0', schedule: '{open}', duration: 1h}}, {{nodes: '2'}}]}}"
        ),
        "",
    );
    let cluster = Cluster::start("disruption-budget-schedule", &[SEED[0], &pool]).await;
    let _berth = Berth::start_disrupting(&cluster);
    three_empty_nodes(&cluster).await;
    tokio::time::sleep(Duration::from_secs(12)).await;
    let claims = history::log(&cluster, &node_claims()).await;
    assert_eq!(history::most_disrupting_at_once(&claims), 0);
    assert_eq!(cluster.list::<NodeClaim>().await.len(), 3);

    // The same budget, its window now opening in two hours: the other budget (2) rules.
    let later = daily_at(Duration::ZERO, Duration::from_secs(2 * 3600));
    patch_pool(
        &cluster,
        "web",
        json!({"spec": {"disruption": {"budgets": [
            {"nodes": "0", "schedule": later, "duration": "1h"},
            {"nodes": "2"},
        ]}}}),
    )
    .await;
    eventually(90, "every empty node is removed", || async {
        cluster.list::<NodeClaim>().await.is_empty() && cluster.list::<Node>().await.is_empty()
    })
    .await;
    let claims = history::log(&cluster, &node_claims()).await;
    assert_eq!(
        history::most_disrupting_at_once(&claims),
        2,
        "the unscheduled budget allows two at a time"
    );
    let methods = methods(&claims);
    assert_eq!(methods.len(), 3, "{methods:?}");
    assert!(methods.values().all(|m| m == "Empty"), "{methods:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn termination_grace_period_ends_a_drain_a_pod_disruption_budget_holds() {
    // Expiry is forceful: the node goes although the budget lets no pod be evicted, and its
    // drain turns forceful 15 s after the NodeClaim's deletion started.
    let pool = web_pool(
        &["t3"],
        &["large"],
        "{consolidationPolicy: WhenEmpty, consolidateAfter: 0s}",
        "      expireAfter: 40s\n      terminationGracePeriod: 15s",
    );
    let cluster = Cluster::start("disruption-grace", &[SEED[0], &pool]).await;
    let _berth = Berth::start_disrupting(&cluster);
    let (first, pod_before) = guarded_web_pod(&cluster).await;
    let old = claim_names(std::slice::from_ref(&first));
    runs_on_a_replacement(&cluster, &old, "web", 1).await;
    let pod_after = running(&cluster, "web").await.remove(0);
    let claims = history::log(&cluster, &node_claims()).await;
    assert_eq!(
        methods(&claims).get(&old[0]).map(String::as_str),
        Some("Expired")
    );
    assert_eq!(history::created(&claims).len(), 2, "one replacement");
    let deletion_started = claims
        .iter()
        .find_map(|e| {
            (e.object["metadata"]["name"] == old[0].as_str())
                .then(|| e.object["metadata"]["deletionTimestamp"].as_str())
                .flatten()
                .map(str::to_owned)
        })
        .expect("the expired NodeClaim was deleted");
    let deletion_started: k8s_openapi::jiff::Timestamp = deletion_started.parse().unwrap();
    let recreated = pod_after.metadata.creation_timestamp.clone().unwrap().0;
    // Whole seconds on both sides.
    assert!(
        recreated.duration_since(deletion_started).as_secs() >= 14,
        "the pod was replaced at {recreated}, the drain started at {deletion_started}"
    );
    let evictions = cluster.server.evictions();
    assert!(
        !evictions.refused.is_empty(),
        "the drain first asked to evict: {evictions:?}"
    );
    assert_eq!(
        evictions.deleted_past_budget,
        [format!("default/{pod_before} (web)")],
        "then deleted the pod past its budget, once the grace period ended"
    );
}
