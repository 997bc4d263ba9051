//! Set-ups and questions shared by the disruption scenarios: a NodePool `web` on the seed's
//! EC2NodeClass, patches to it, and "does exactly one NodeClaim run the app now?".

use std::collections::BTreeMap;

use berth_api::v1::{NodeClaim, NodePool};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

use super::history::DISRUPTION_ID;
use super::{Cluster, eventually, node_of, running};

pub const INSTANCE_TYPE: &str = "node.kubernetes.io/instance-type";
pub const CAPACITY_TYPE: &str = "karpenter.sh/capacity-type";

/// NodePool `web` on the seed's EC2NodeClass: on-demand amd64 of `families` in `sizes`, with
/// `disruption` as its `spec.disruption` and `spec_extra` lines in `spec.template.spec`.
pub fn web_pool(families: &[&str], sizes: &[&str], disruption: &str, spec_extra: &str) -> String {
    web_pool_with(requirements(families, sizes), disruption, spec_extra)
}

/// NodePool `web` with `requirements` (see [`requirements_of`]).
pub fn web_pool_with(requirements: Value, disruption: &str, spec_extra: &str) -> String {
    format!(
        "apiVersion: karpenter.sh/v1
kind: NodePool
metadata: {{name: web}}
spec:
  template:
    spec:
      nodeClassRef: {{group: karpenter.k8s.aws, kind: EC2NodeClass, name: default}}
      requirements: {requirements}
{spec_extra}
  disruption: {disruption}
"
    )
}

/// On-demand amd64 instances of `families` in `sizes`.
pub fn requirements(families: &[&str], sizes: &[&str]) -> Value {
    requirements_of(families, sizes, &["on-demand"])
}

/// amd64 instances of `families` in `sizes`, of `capacity_types`.
pub fn requirements_of(families: &[&str], sizes: &[&str], capacity_types: &[&str]) -> Value {
    json!([
        {"key": "karpenter.k8s.aws/instance-family", "operator": "In", "values": families},
        {"key": "karpenter.k8s.aws/instance-size", "operator": "In", "values": sizes},
        {"key": CAPACITY_TYPE, "operator": "In", "values": capacity_types},
        {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]},
    ])
}

/// PodDisruptionBudget `web` over the `app: web` pods, `minAvailable` of them.
pub fn web_pdb(min_available: u32) -> String {
    format!(
        "apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {{name: web, namespace: default}}
spec:
  minAvailable: {min_available}
  selector: {{matchLabels: {{app: web}}}}"
    )
}

/// A JSON merge patch of NodePool `pool`.
pub async fn patch_pool(cluster: &Cluster, pool: &str, patch: Value) {
    Api::<NodePool>::all(cluster.client.clone())
        .patch(pool, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .unwrap();
}

/// A merge patch of NodePool `web`'s `spec.template.spec.requirements`.
pub async fn set_requirements(cluster: &Cluster, requirements: Value) {
    patch_pool(
        cluster,
        "web",
        json!({"spec": {"template": {"spec": {"requirements": requirements}}}}),
    )
    .await;
}

pub fn name(c: &NodeClaim) -> String {
    c.metadata.name.clone().unwrap_or_default()
}

pub fn claim_names(claims: &[NodeClaim]) -> Vec<String> {
    claims.iter().map(name).collect()
}

/// The only NodeClaim, if there is exactly one and one Node, and the `app` pods all run on it
/// (`replicas` of them).
pub async fn only_claim_runs(cluster: &Cluster, app: &str, replicas: usize) -> Option<NodeClaim> {
    let claims = cluster.list::<NodeClaim>().await;
    let [claim] = claims.as_slice() else {
        return None;
    };
    let node = claim.status.as_ref()?.node_name.clone()?;
    let pods = running(cluster, app).await;
    (cluster.list::<Node>().await.len() == 1
        && pods.len() == replicas
        && pods.iter().all(|p| node_of(p) == Some(node.as_str())))
    .then(|| claim.clone())
}

/// [`only_claim_runs`], when that NodeClaim is not one of `old`.
pub async fn only_new_claim_runs(
    cluster: &Cluster,
    old: &[String],
    app: &str,
    replicas: usize,
) -> Option<NodeClaim> {
    only_claim_runs(cluster, app, replicas)
        .await
        .filter(|c| !old.contains(&name(c)))
}

/// One pod of Deployment `web` (500m) that a PodDisruptionBudget (`minAvailable: 1`) keeps
/// from eviction: waits until it runs on a NodeClaim alone, and returns that NodeClaim and the
/// pod's name.
pub async fn guarded_web_pod(cluster: &Cluster) -> (NodeClaim, String) {
    cluster.create(&super::deployment("web", 1, "500m"));
    cluster.create(&web_pdb(1));
    eventually(60, "the pod runs", || async {
        only_new_claim_runs(cluster, &[], "web", 1).await.is_some()
    })
    .await;
    let claim = only_new_claim_runs(cluster, &[], "web", 1)
        .await
        .expect("it stays");
    let pod = running(cluster, "web").await[0]
        .metadata
        .name
        .clone()
        .expect("a named pod");
    (claim, pod)
}

/// Waits until the `replicas` pods of `app` run on one NodeClaim that is not one of `old`.
pub async fn runs_on_a_replacement(cluster: &Cluster, old: &[String], app: &str, replicas: usize) {
    eventually(120, "the pods run on the replacement", || async {
        only_new_claim_runs(cluster, old, app, replicas)
            .await
            .is_some()
    })
    .await;
}

/// The disruption method recorded on each NodeClaim that was disrupted.
pub fn methods(claims: &[berth_sim::store::Event]) -> BTreeMap<String, String> {
    claims
        .iter()
        .filter_map(|e| {
            let m = &e.object["metadata"];
            Some((
                m["name"].as_str()?.to_owned(),
                m["annotations"]["disruption.berth.dev/method"]
                    .as_str()?
                    .to_owned(),
            ))
        })
        .collect()
}

/// Waits until NodeClaim `claim` carries a disruption decision.
pub async fn decision_recorded(cluster: &Cluster, claim: &str) {
    let claims: Api<NodeClaim> = Api::all(cluster.client.clone());
    eventually(60, "the disruption decision is recorded", || async {
        claims
            .get_opt(claim)
            .await
            .unwrap()
            .and_then(|c| c.metadata.annotations)
            .is_some_and(|a| a.contains_key(DISRUPTION_ID))
    })
    .await;
}
