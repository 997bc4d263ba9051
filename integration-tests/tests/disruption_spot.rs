//! Consolidation across capacity types, with the three real binaries on the simulated cluster
//! (the sim cloud prices spot at 35 % of on-demand):
//!
//! - on-demand → spot: once the NodePool allows spot, an on-demand node is replaced by a spot
//!   node of the same type (no feature gate needed: Karpenter does the same);
//! - spot → spot, with `--feature-gates SpotToSpotConsolidation=true`: a spot node is replaced
//!   by a cheaper spot node only when at least 15 cheaper spot instance types could hold its
//!   pods (Karpenter's rule, so the replacement is not the next to be reclaimed); with one
//!   cheaper type it stays.

mod common;

use std::time::Duration;

use berth_api::v1::NodeClaim;
use common::disruption::{
    CAPACITY_TYPE, INSTANCE_TYPE, claim_names, methods, name, only_claim_runs, only_new_claim_runs,
    requirements_of, set_requirements, web_pool_with,
};
use common::history::{self, node_claims};
use common::{Berth, Cluster, SEED, claim_label, deployment, describe_claims, eventually};

const UNDERUTILIZED: &str = "{consolidationPolicy: WhenEmptyOrUnderutilized, consolidateAfter: 0s}";

#[tokio::test(flavor = "multi_thread")]
async fn an_on_demand_node_is_replaced_by_spot_once_its_pool_allows_spot() {
    let pool = web_pool_with(
        requirements_of(&["t3"], &["large"], &["on-demand"]),
        UNDERUTILIZED,
        "",
    );
    let cluster = Cluster::start("disruption-on-demand-to-spot", &[SEED[0], &pool]).await;
    let _berth = Berth::start_disrupting(&cluster);
    cluster.create(&deployment("web", 1, "1200m"));
    eventually(60, "the pod runs on an on-demand t3.large", || async {
        only_claim_runs(&cluster, "web", 1).await.is_some()
    })
    .await;
    let first = only_claim_runs(&cluster, "web", 1).await.unwrap();
    assert_eq!(claim_label(&first, CAPACITY_TYPE), Some("on-demand"));
    let old = claim_names(std::slice::from_ref(&first));

    set_requirements(
        &cluster,
        requirements_of(&["t3"], &["large"], &["on-demand", "spot"]),
    )
    .await;
    eventually(90, "a spot node replaces it", || async {
        only_new_claim_runs(&cluster, &old, "web", 1)
            .await
            .is_some()
    })
    .await;
    let second = only_new_claim_runs(&cluster, &old, "web", 1)
        .await
        .expect("it stays");
    assert_eq!(claim_label(&second, CAPACITY_TYPE), Some("spot"));
    assert_eq!(claim_label(&second, INSTANCE_TYPE), Some("t3.large"));

    let claims = history::log(&cluster, &node_claims()).await;
    assert_eq!(
        history::created(&claims),
        [old.clone(), vec![name(&second)]].concat()
    );
    assert_eq!(
        methods(&claims).get(&old[0]).map(String::as_str),
        Some("Underutilized")
    );
}

/// Families whose `large` (2 vCPU, 8 GiB or so) costs less than a t3.xlarge: with `large`
/// and `xlarge` allowed, well over 15 spot types cheaper than a t3.xlarge hold a 500m pod.
const MANY_FAMILIES: &[&str] = &[
    "t3", "t3a", "t2", "m5", "m5a", "m6i", "m6a", "m7i", "c5", "c5a", "c6i", "c6a", "c7i", "r5",
    "r5a", "r6i", "r6a",
];

#[tokio::test(flavor = "multi_thread")]
async fn a_spot_node_is_replaced_by_spot_only_with_fifteen_cheaper_types() {
    let pool = web_pool_with(
        requirements_of(&["t3"], &["xlarge"], &["spot"]),
        UNDERUTILIZED,
        "",
    );
    let cluster = Cluster::start("disruption-spot-to-spot", &[SEED[0], &pool]).await;
    let _berth = Berth::start_disrupting_with(
        &cluster,
        &["--feature-gates", "SpotToSpotConsolidation=true"],
    );
    cluster.create(&deployment("web", 1, "500m"));
    eventually(60, "the pod runs on a spot t3.xlarge", || async {
        only_claim_runs(&cluster, "web", 1).await.is_some()
    })
    .await;
    let first = only_claim_runs(&cluster, "web", 1).await.unwrap();
    assert_eq!(claim_label(&first, CAPACITY_TYPE), Some("spot"));
    assert_eq!(claim_label(&first, INSTANCE_TYPE), Some("t3.xlarge"));
    let old = claim_names(std::slice::from_ref(&first));

    // One cheaper spot type (t3.large) holds the pod: fewer than 15, so the node stays,
    // however many evaluations pass.
    set_requirements(
        &cluster,
        requirements_of(&["t3"], &["large", "xlarge"], &["spot"]),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(12)).await;
    let claims = history::log(&cluster, &node_claims()).await;
    assert_eq!(
        history::created(&claims),
        old,
        "{:?}",
        describe_claims(&cluster).await
    );
    assert_eq!(history::most_disrupting_at_once(&claims), 0);

    // Many cheaper spot types: now it is replaced by a cheaper spot node.
    set_requirements(
        &cluster,
        requirements_of(MANY_FAMILIES, &["large", "xlarge"], &["spot"]),
    )
    .await;
    eventually(90, "a cheaper spot node replaces it", || async {
        only_new_claim_runs(&cluster, &old, "web", 1)
            .await
            .is_some()
    })
    .await;
    let second: NodeClaim = only_new_claim_runs(&cluster, &old, "web", 1)
        .await
        .expect("it stays");
    assert_eq!(claim_label(&second, CAPACITY_TYPE), Some("spot"));
    let new_type = claim_label(&second, INSTANCE_TYPE).unwrap();
    assert!(
        common::on_demand_price(new_type) < common::on_demand_price("t3.xlarge"),
        "{new_type} is not cheaper than t3.xlarge"
    );
    let claims = history::log(&cluster, &node_claims()).await;
    assert_eq!(
        history::created(&claims),
        [old.clone(), vec![name(&second)]].concat()
    );
    assert_eq!(
        methods(&claims).get(&old[0]).map(String::as_str),
        Some("Underutilized")
    );
}
