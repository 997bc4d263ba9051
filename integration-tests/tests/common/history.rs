//! What happened, in order: the simulated API server's own log of changes to NodeClaims and
//! Pods since the cluster started (every change, none missed between polls), for asserting
//! on the past: how many NodeClaims were ever created, how many were being disrupted at once,
//! whether a pod was evicted before its replacement node was up, how few pods of an app were
//! healthy at the worst moment.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use berth_sim::store::{Event, EventType, Resource};
use serde_json::Value;

use super::Cluster;

/// The annotation the actuator records a disruption decision under (on each candidate).
pub const DISRUPTION_ID: &str = "disruption.berth.dev/id";

pub fn node_claims() -> Resource {
    Resource::new("karpenter.sh", "nodeclaims", false)
}

pub fn pods() -> Resource {
    Resource::new("", "pods", true)
}

/// The changes to `resource` since the cluster started, in order.
pub async fn log(cluster: &Cluster, resource: &Resource) -> Vec<Event> {
    let mut watch = cluster
        .store
        .watch(resource, 0)
        .expect("the store keeps the whole log of a test");
    let mut out = Vec::new();
    // The log so far is replayed at once; the first wait is for changes yet to come.
    while let Ok(Ok(e)) = tokio::time::timeout(Duration::ZERO, watch.next()).await {
        out.push(e);
    }
    out
}

fn name(e: &Event) -> String {
    let m = &e.object["metadata"];
    match m["namespace"].as_str() {
        Some(ns) => format!("{ns}/{}", m["name"].as_str().unwrap_or_default()),
        None => m["name"].as_str().unwrap_or_default().to_owned(),
    }
}

/// The names of every NodeClaim ever created, in order.
pub fn created(claims: &[Event]) -> Vec<String> {
    claims
        .iter()
        .filter(|e| e.kind == EventType::Added)
        .map(name)
        .collect()
}

/// Recorded in a disruption decision, or being deleted.
pub fn disrupting(claim: &Value) -> bool {
    claim["metadata"].get("deletionTimestamp").is_some()
        || claim["metadata"]["annotations"]
            .get(DISRUPTION_ID)
            .is_some()
}

/// The most NodeClaims that were being disrupted at the same time.
pub fn most_disrupting_at_once(claims: &[Event]) -> usize {
    let mut now: BTreeMap<String, bool> = BTreeMap::new();
    let mut most = 0;
    for e in claims {
        match e.kind {
            EventType::Deleted => {
                now.remove(&name(e));
            }
            _ => {
                now.insert(name(e), disrupting(&e.object));
            }
        }
        most = most.max(now.values().filter(|d| **d).count());
    }
    most
}

fn condition_true(obj: &Value, type_: &str) -> bool {
    obj["status"]["conditions"].as_array().is_some_and(|c| {
        c.iter()
            .any(|c| c["type"] == type_ && c["status"] == "True")
    })
}

/// When (the resourceVersion at which) NodeClaim `claim` became Initialized.
pub fn initialized_at(claims: &[Event], claim: &str) -> Option<u64> {
    claims
        .iter()
        .find(|e| name(e) == claim && condition_true(&e.object, "Initialized"))
        .map(|e| e.resource_version)
}

/// When pod `namespace/name` was deleted (evicted, for pods of a drained node).
pub fn deleted_at(pods: &[Event], pod: &str) -> Option<u64> {
    pods.iter()
        .find(|e| name(e) == pod && e.kind == EventType::Deleted)
        .map(|e| e.resource_version)
}

/// The names of the pods that ran on `node`.
pub fn ran_on(pods: &[Event], node: &str) -> BTreeSet<String> {
    pods.iter()
        .filter(|e| e.object["spec"]["nodeName"] == node)
        .map(name)
        .collect()
}

/// Running, Ready and not being deleted (what a PodDisruptionBudget counts as healthy).
fn healthy(pod: &Value) -> bool {
    pod["metadata"].get("deletionTimestamp").is_none()
        && pod["status"]["phase"] == "Running"
        && condition_true(pod, "Ready")
}

/// The fewest healthy pods labelled `app=<app>` at any moment after `from` of them first were
/// healthy together.
pub fn fewest_healthy(pods: &[Event], app: &str, from: usize) -> Option<usize> {
    let mut now: BTreeMap<String, bool> = BTreeMap::new();
    let mut fewest: Option<usize> = None;
    for e in pods
        .iter()
        .filter(|e| e.object["metadata"]["labels"]["app"] == app)
    {
        match e.kind {
            EventType::Deleted => {
                now.remove(&name(e));
            }
            _ => {
                now.insert(name(e), healthy(&e.object));
            }
        }
        let n = now.values().filter(|h| **h).count();
        fewest = match fewest {
            None if n >= from => Some(n),
            None => None,
            Some(f) => Some(f.min(n)),
        };
    }
    fewest
}
