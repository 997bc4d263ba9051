//! Pod subresources: binding, and eviction honouring PodDisruptionBudgets.

use std::time::SystemTime;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::ApiServer;
use super::routing::{bad_request, error};
use super::write::k8s_time;
use crate::pdb;
use crate::store::{Resource, StoreError};

/// What the Eviction API did, and pods deleted around it past their PodDisruptionBudget: what
/// a test reads to tell that draining never broke a budget.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EvictionStats {
    /// Evictions carried out (the pod deleted).
    pub evicted: u64,
    /// Evictions refused with 429 because they would have broken a PodDisruptionBudget, as
    /// `namespace/pod (budget)`: a drain that tried too early, or a node that should not have
    /// been disrupted.
    pub refused: Vec<String>,
    /// Healthy pods deleted directly (not evicted) while a budget selecting them allowed no
    /// disruption, as `namespace/pod (budget)`: each broke that budget.
    pub deleted_past_budget: Vec<String>,
}

impl ApiServer {
    /// The binding subresource: assigns a pod to a node (409 when it is already assigned).
    pub(super) fn bind(&self, ns: &str, name: &str, binding: &Value, now: SystemTime) -> Response {
        let pods = Resource::new("", "pods", true);
        let Some(node) = binding["target"]["name"].as_str().filter(|n| !n.is_empty()) else {
            return bad_request("Binding: target.name: Required value");
        };
        let mut pod = match self.store.get(&pods, ns, name) {
            Ok(p) => p,
            Err(e) => return error(&e),
        };
        if let Some(current) = pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) {
            return error(&StoreError::Conflict {
                resource: "pods/binding".to_owned(),
                name: format!("{name} is already assigned to node {current}"),
            });
        }
        pod["spec"]["nodeName"] = node.into();
        let condition = json!({"type": "PodScheduled", "status": "True",
            "lastTransitionTime": k8s_time(now)});
        let conditions = pod["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|c| c["type"] != "PodScheduled")
            .chain([condition])
            .collect::<Vec<_>>();
        pod["status"]["conditions"] = conditions.into();
        match self.store.update(&pods, pod, now) {
            Ok(_) => (
                StatusCode::CREATED,
                axum::Json(json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                    "status": "Success", "code": 201})),
            )
                .into_response(),
            Err(e) => error(&e),
        }
    }

    /// The Eviction API: deletes the pod unless a PodDisruptionBudget selecting it allows no
    /// disruption now (429, as the real API server answers; counted in
    /// [`ApiServer::evictions`]). A pod that is not healthy may go while its budgets have
    /// their healthy pods (the default `unhealthyPodEvictionPolicy`, `IfHealthyBudget`); a
    /// pod being deleted already may always.
    pub(super) fn evict(&self, ns: &str, name: &str, now: SystemTime) -> Response {
        let pods = Resource::new("", "pods", true);
        // NB: one eviction at a time, check and delete together, as the real server
        // serializes them on the budget's resourceVersion.
        let mut stats = self
            .evictions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let pod = match self.store.get(&pods, ns, name) {
            Ok(p) => p,
            Err(e) => return error(&e),
        };
        if pod["metadata"].get("deletionTimestamp").is_none() {
            let healthy = pdb::healthy(&pod);
            for (budget, status) in pdb::budgets_of(&self.store, &pod) {
                let allowed = if healthy {
                    status.disruptions_allowed > 0
                } else {
                    status.error.is_none() && status.current_healthy >= status.desired_healthy
                };
                if allowed {
                    continue;
                }
                let pdb_name = budget["metadata"]["name"].as_str().unwrap_or_default();
                stats.refused.push(format!("{ns}/{name} ({pdb_name})"));
                return (
                    StatusCode::TOO_MANY_REQUESTS,
                    axum::Json(json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                        "status": "Failure", "reason": "TooManyRequests", "code": 429,
                        "message": format!("Cannot evict pod as it would violate the pod's disruption budget {pdb_name}."),
                        "details": {"causes": [{"reason": "DisruptionBudget",
                            "message": format!("The disruption budget {pdb_name} needs {} healthy pods and has {} currently",
                                status.desired_healthy, status.current_healthy)}]}})),
                )
                    .into_response();
            }
        }
        match self.store.delete(&pods, ns, name, now) {
            Ok(_) => {
                stats.evicted += 1;
                (
                    StatusCode::CREATED,
                    axum::Json(json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                        "status": "Success", "code": 201})),
                )
                    .into_response()
            }
            Err(e) => error(&e),
        }
    }

    /// A pod deleted directly (not evicted): counted when it was healthy and a budget
    /// selecting it allowed no disruption, since the deletion breaks that budget (the real
    /// API server lets it through all the same).
    pub(super) fn note_pod_deletion(&self, ns: &str, name: &str) {
        let Ok(pod) = self.store.get(&Resource::new("", "pods", true), ns, name) else {
            return;
        };
        if !pdb::healthy(&pod) {
            return;
        }
        for (budget, status) in pdb::budgets_of(&self.store, &pod) {
            if status.disruptions_allowed <= 0 {
                let pdb_name = budget["metadata"]["name"].as_str().unwrap_or_default();
                self.evictions
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .deleted_past_budget
                    .push(format!("{ns}/{name} ({pdb_name})"));
            }
        }
    }
}
