//! PodDisruptionBudgets as Kubernetes' disruption controller computes them: the pods a budget
//! expects (from the scale of their controllers for `maxUnavailable` and percentages, the
//! matching pods for an integer `minAvailable`), the healthy ones (running, Ready, not being
//! deleted), how many must stay healthy, and so how many disruptions it allows now. The
//! simulated disruption controller writes this as the budget's status (what Karpenter's and
//! Berth's disruption read), and the Eviction API checks it.
//!
//! NB: the real API server evicts against the status and counts evictions it has not yet
//! seen reflected (`disruptedPods`); the sim computes from the store at the moment of the
//! eviction and deletes pods at once, which comes to the same without the bookkeeping.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use crate::server::selectors::selector_matches_json;
use crate::store::{Resource, Store};

/// A budget's numbers now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetStatus {
    pub expected_pods: i64,
    pub current_healthy: i64,
    pub desired_healthy: i64,
    pub disruptions_allowed: i64,
    /// Why the expected pods could not be told (a pod's controller is unknown or has no
    /// scale): the budget then allows no disruption, as the real controller's fail-safe.
    pub error: Option<String>,
}

impl BudgetStatus {
    /// `status` as policy/v1 spells it, for a budget at `generation`.
    pub fn to_json(&self, generation: i64) -> Value {
        json!({
            "observedGeneration": generation,
            "expectedPods": self.expected_pods,
            "currentHealthy": self.current_healthy,
            "desiredHealthy": self.desired_healthy,
            "disruptionsAllowed": self.disruptions_allowed,
        })
    }
}

/// The workloads whose scale a budget counts: ReplicaSets (a Deployment's through it) and
/// StatefulSets, by uid.
#[derive(Debug, Default)]
pub struct Workloads {
    by_uid: BTreeMap<String, (String, Value)>,
}

fn controller_ref(obj: &Value) -> Option<&Value> {
    obj["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|o| o["controller"].as_bool() == Some(true))
}

fn replicas(obj: &Value) -> i64 {
    obj["spec"]["replicas"].as_i64().unwrap_or(1)
}

impl Workloads {
    /// The workloads in the store (of `namespace`, when given).
    pub fn list(store: &Store, namespace: Option<&str>) -> Self {
        let mut by_uid = BTreeMap::new();
        for (kind, plural) in [
            ("Deployment", "deployments"),
            ("ReplicaSet", "replicasets"),
            ("StatefulSet", "statefulsets"),
        ] {
            for obj in store
                .list(&Resource::new("apps", plural, true), namespace)
                .0
            {
                if let Some(uid) = obj["metadata"]["uid"].as_str() {
                    by_uid.insert(uid.to_owned(), (kind.to_owned(), obj));
                }
            }
        }
        Self { by_uid }
    }

    /// The controller whose scale counts for `pod` (its uid) and that scale; `Ok(None)` for a
    /// pod without a controller (not counted, as the real controller ignores unmanaged pods).
    fn scale_of(&self, pod: &Value) -> Result<Option<(String, i64)>, String> {
        let Some(owner) = controller_ref(pod) else {
            return Ok(None);
        };
        let kind = owner["kind"].as_str().unwrap_or_default();
        let uid = owner["uid"].as_str().unwrap_or_default();
        let missing = || format!("{kind} {} of the pod is not found", owner["name"]);
        match kind {
            "ReplicaSet" => {
                let (_, rs) = self.by_uid.get(uid).ok_or_else(missing)?;
                match controller_ref(rs) {
                    Some(d) if d["kind"] == "Deployment" => {
                        let duid = d["uid"].as_str().unwrap_or_default();
                        let (_, dep) = self
                            .by_uid
                            .get(duid)
                            .ok_or_else(|| format!("Deployment {} is not found", d["name"]))?;
                        Ok(Some((duid.to_owned(), replicas(dep))))
                    }
                    _ => Ok(Some((uid.to_owned(), replicas(rs)))),
                }
            }
            "StatefulSet" => {
                let (_, ss) = self.by_uid.get(uid).ok_or_else(missing)?;
                Ok(Some((uid.to_owned(), replicas(ss))))
            }
            other => Err(format!("the pod's controller {other} has no scale")),
        }
    }
}

/// Running, Ready (when it says) and not being deleted: counts toward `currentHealthy`.
pub fn healthy(pod: &Value) -> bool {
    let ready = pod["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
        .is_none_or(|c| c["status"] == "True");
    pod["metadata"].get("deletionTimestamp").is_none()
        && pod["status"]["phase"].as_str() == Some("Running")
        && ready
}

/// Whether `pdb` selects `pod` (same namespace, selector matches).
pub fn selects(pdb: &Value, pod: &Value) -> bool {
    let labels = pod["metadata"]["labels"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    pdb["metadata"]["namespace"] == pod["metadata"]["namespace"]
        && selector_matches_json(&pdb["spec"]["selector"], &labels)
}

/// An `IntOrString` of `total`: a number, or a percentage rounded up.
fn scaled(v: &Value, total: i64) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => match s.strip_suffix('%') {
            Some(p) => p.parse::<i64>().ok().map(|p| (p * total + 99) / 100),
            None => s.parse().ok(),
        },
        _ => None,
    }
}

/// `pdb`'s status over `pods` (any namespaces; those it selects count) and `workloads`.
pub fn status(pdb: &Value, pods: &[Value], workloads: &Workloads) -> BudgetStatus {
    let matching: Vec<&Value> = pods.iter().filter(|p| selects(pdb, p)).collect();
    let current_healthy = matching.iter().filter(|p| healthy(p)).count() as i64;
    let expected_scale = || -> Result<i64, String> {
        let mut seen = BTreeSet::new();
        let mut total = 0;
        for p in &matching {
            if let Some((uid, n)) = workloads.scale_of(p)?
                && seen.insert(uid)
            {
                total += n;
            }
        }
        Ok(total)
    };
    let spec = &pdb["spec"];
    let counted = match (spec.get("maxUnavailable"), spec.get("minAvailable")) {
        (Some(max), _) if !max.is_null() => expected_scale().and_then(|expected| {
            let max = scaled(max, expected).ok_or("maxUnavailable does not parse")?;
            Ok((expected, (expected - max).max(0)))
        }),
        (_, Some(min @ Value::String(s))) if s.ends_with('%') => {
            expected_scale().and_then(|expected| {
                let min = scaled(min, expected).ok_or("minAvailable does not parse")?;
                Ok((expected, min))
            })
        }
        (_, Some(min)) if !min.is_null() => scaled(min, 0)
            .map(|min| (matching.len() as i64, min))
            .ok_or_else(|| "minAvailable does not parse".to_owned()),
        _ => Ok((matching.len() as i64, 0)),
    };
    match counted {
        Ok((expected_pods, desired_healthy)) => BudgetStatus {
            expected_pods,
            current_healthy,
            desired_healthy,
            disruptions_allowed: (current_healthy - desired_healthy).max(0),
            error: None,
        },
        Err(error) => BudgetStatus {
            expected_pods: matching.len() as i64,
            current_healthy,
            desired_healthy: current_healthy,
            disruptions_allowed: 0,
            error: Some(error),
        },
    }
}

/// The budgets in `pod`'s namespace that select it, with their status now (read from the
/// store).
pub fn budgets_of(store: &Store, pod: &Value) -> Vec<(Value, BudgetStatus)> {
    let ns = pod["metadata"]["namespace"].as_str().unwrap_or_default();
    let (budgets, _) = store.list(
        &Resource::new("policy", "poddisruptionbudgets", true),
        Some(ns),
    );
    let budgets: Vec<Value> = budgets.into_iter().filter(|b| selects(b, pod)).collect();
    if budgets.is_empty() {
        return Vec::new();
    }
    let (pods, _) = store.list(&Resource::new("", "pods", true), Some(ns));
    let workloads = Workloads::list(store, Some(ns));
    budgets
        .into_iter()
        .map(|b| {
            let s = status(&b, &pods, &workloads);
            (b, s)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, owner: Option<(&str, &str)>, phase: &str) -> Value {
        let mut p = json!({
            "metadata": {"name": name, "namespace": "ci", "labels": {"app": "web"}},
            "status": {"phase": phase},
        });
        if let Some((kind, uid)) = owner {
            p["metadata"]["ownerReferences"] =
                json!([{"kind": kind, "name": uid, "uid": uid, "controller": true}]);
        }
        p
    }

    fn pdb(spec: Value) -> Value {
        let mut spec = spec;
        spec["selector"] = json!({"matchLabels": {"app": "web"}});
        json!({"metadata": {"name": "web", "namespace": "ci"}, "spec": spec})
    }

    /// A Deployment `d` of `replicas` through ReplicaSet `rs`.
    fn deployment(replicas: i64) -> Workloads {
        let mut w = Workloads::default();
        w.by_uid.insert(
            "d".into(),
            (
                "Deployment".into(),
                json!({"metadata": {"uid": "d"}, "spec": {"replicas": replicas}}),
            ),
        );
        w.by_uid.insert(
            "rs".into(),
            (
                "ReplicaSet".into(),
                json!({"metadata": {"uid": "rs", "ownerReferences": [
                    {"kind": "Deployment", "name": "d", "uid": "d", "controller": true}]},
                    "spec": {"replicas": replicas}}),
            ),
        );
        w
    }

    #[test]
    fn max_unavailable_counts_the_deployments_scale_not_the_pods_left() {
        // Three replicas, one just evicted and not yet replaced: one is unavailable already.
        let pods = [
            pod("a", Some(("ReplicaSet", "rs")), "Running"),
            pod("b", Some(("ReplicaSet", "rs")), "Running"),
        ];
        let s = status(&pdb(json!({"maxUnavailable": 1})), &pods, &deployment(3));
        assert_eq!(
            (s.expected_pods, s.current_healthy, s.desired_healthy),
            (3, 2, 2)
        );
        assert_eq!(s.disruptions_allowed, 0);
        let s = status(
            &pdb(json!({"maxUnavailable": "50%"})),
            &pods,
            &deployment(3),
        );
        assert_eq!((s.desired_healthy, s.disruptions_allowed), (1, 1));
    }

    #[test]
    fn min_available_counts_healthy_pods() {
        let pods = [
            pod("a", None, "Running"),
            pod("b", None, "Running"),
            pod("c", None, "Pending"),
        ];
        let w = Workloads::default();
        let s = status(&pdb(json!({"minAvailable": 1})), &pods, &w);
        assert_eq!((s.expected_pods, s.current_healthy), (3, 2));
        assert_eq!(s.disruptions_allowed, 1);
        let s = status(&pdb(json!({"minAvailable": 2})), &pods, &w);
        assert_eq!(s.disruptions_allowed, 0);
        let mut deleting = pod("b", None, "Running");
        deleting["metadata"]["deletionTimestamp"] = "2024-01-01T00:00:00Z".into();
        let mut not_ready = pod("a", None, "Running");
        not_ready["status"]["conditions"] = json!([{"type": "Ready", "status": "False"}]);
        assert!(!healthy(&deleting) && !healthy(&not_ready));
    }

    #[test]
    fn percentages_round_up_and_unknown_controllers_allow_nothing() {
        let pods: Vec<Value> = (0..3)
            .map(|i| pod(&format!("p{i}"), Some(("ReplicaSet", "rs")), "Running"))
            .collect();
        let s = status(&pdb(json!({"minAvailable": "50%"})), &pods, &deployment(3));
        assert_eq!((s.desired_healthy, s.disruptions_allowed), (2, 1));
        let jobs = [pod("j", Some(("Job", "j")), "Running")];
        let s = status(
            &pdb(json!({"maxUnavailable": 1})),
            &jobs,
            &Workloads::default(),
        );
        assert_eq!(s.disruptions_allowed, 0);
        assert!(s.error.is_some());
    }
}
