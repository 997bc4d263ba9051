//! Pod subresources: binding, and eviction honouring PodDisruptionBudgets.

use std::time::SystemTime;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::ApiServer;
use super::routing::{bad_request, error};
use super::selectors::selector_matches_json;
use super::write::k8s_time;
use crate::store::{Resource, StoreError};

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

    /// The Eviction API: deletes the pod unless a PodDisruptionBudget selecting it would be
    /// broken (429, as the real API server answers).
    pub(super) fn evict(&self, ns: &str, name: &str, now: SystemTime) -> Response {
        let pods = Resource::new("", "pods", true);
        let pod = match self.store.get(&pods, ns, name) {
            Ok(p) => p,
            Err(e) => return error(&e),
        };
        let labels = pod["metadata"]["labels"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        let (budgets, _) = self.store.list(
            &Resource::new("policy", "poddisruptionbudgets", true),
            Some(ns),
        );
        let (all, _) = self.store.list(&pods, Some(ns));
        for pdb in budgets {
            let selector = &pdb["spec"]["selector"];
            if !selector_matches_json(selector, &labels) {
                continue;
            }
            let matching: Vec<&Value> = all
                .iter()
                .filter(|p| {
                    selector_matches_json(
                        selector,
                        &p["metadata"]["labels"]
                            .as_object()
                            .cloned()
                            .unwrap_or_default(),
                    )
                })
                .collect();
            let expected = matching.len() as i64;
            let healthy = matching
                .iter()
                .filter(|p| {
                    p["metadata"].get("deletionTimestamp").is_none()
                        && p["status"]["phase"].as_str() == Some("Running")
                })
                .count() as i64;
            let amount = |v: &Value| -> Option<i64> {
                match v {
                    Value::Number(n) => n.as_i64(),
                    Value::String(s) => s
                        .strip_suffix('%')
                        .and_then(|p| p.parse::<i64>().ok())
                        .map(|p| (p * expected + 99) / 100),
                    _ => None,
                }
            };
            let allowed = if let Some(min) = pdb["spec"].get("minAvailable").and_then(amount) {
                healthy > min // one fewer healthy pod still meets minAvailable
            } else if let Some(max) = pdb["spec"].get("maxUnavailable").and_then(amount) {
                (expected - healthy) < max // one more unavailable still within maxUnavailable
            } else {
                true
            };
            if !allowed {
                let pdb_name = pdb["metadata"]["name"].as_str().unwrap_or_default();
                return (
                    StatusCode::TOO_MANY_REQUESTS,
                    axum::Json(json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                        "status": "Failure", "reason": "TooManyRequests", "code": 429,
                        "message": format!("Cannot evict pod as it would violate the pod's disruption budget {pdb_name}.")})),
                )
                    .into_response();
            }
        }
        match self.store.delete(&pods, ns, name, now) {
            Ok(_) => (
                StatusCode::CREATED,
                axum::Json(json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                    "status": "Success", "code": 201})),
            )
                .into_response(),
            Err(e) => error(&e),
        }
    }
}
