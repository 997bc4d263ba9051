//! The scheduler's feedback, published to the cluster: an Event on each pod (`Nominated` with
//! the NodeClaim or node, `FailedProvisioning` with the reason), de-duplicated and
//! rate-limited; and each NodePool's status (resources and nodes in use, `NodeClassReady` and
//! `Ready` conditions).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant, SystemTime};

use berth_api::v1::NodePool;
use berth_scheduler_core::labels;
use berth_scheduler_core::model::ObjectKey;
use berth_scheduler_core::quantity::{format_milli, parse_milli};
use berth_scheduler_core::sync::{Feedback, NominationTarget};
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::reflector::ObjectRef;

use crate::cluster::Stores;
use crate::metrics;

/// The component events are reported as.
pub const COMPONENT: &str = "berth";
pub const REASON_NOMINATED: &str = "Nominated";
pub const REASON_FAILED: &str = "FailedProvisioning";

/// One event to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodEvent {
    pub pod: ObjectKey,
    pub reason: &'static str,
    pub type_: &'static str,
    pub message: String,
}

/// The events a feedback message asks for.
pub fn events(feedback: &Feedback) -> Vec<PodEvent> {
    let mut out = Vec::new();
    for n in &feedback.nominations {
        let message = match &n.target {
            NominationTarget::NodeClaim(c) => format!("Pod should schedule on: nodeclaim/{c}"),
            NominationTarget::Node(node) => format!("Pod should schedule on: node/{node}"),
        };
        out.push(PodEvent {
            pod: n.pod.clone(),
            reason: REASON_NOMINATED,
            type_: "Normal",
            message,
        });
    }
    for u in &feedback.unschedulable {
        out.push(PodEvent {
            pod: u.pod.clone(),
            reason: REASON_FAILED,
            type_: "Warning",
            message: u.reason.clone(),
        });
    }
    out
}

/// Drops an event already published within `window`, and keeps to `per_second` events with
/// bursts of `burst`. Pure: callers pass the time.
#[derive(Debug)]
pub struct Limiter {
    window: Duration,
    seen: HashMap<(ObjectKey, &'static str, String), Instant>,
    per_second: f64,
    burst: f64,
    tokens: f64,
    last: Option<Instant>,
}

/// Why an event was not published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    Duplicate,
    RateLimited,
}

impl Limiter {
    pub fn new(window: Duration, per_second: f64, burst: u32) -> Self {
        Self {
            window,
            seen: HashMap::new(),
            per_second,
            burst: f64::from(burst),
            tokens: f64::from(burst),
            last: None,
        }
    }

    pub fn admit(&mut self, e: &PodEvent, now: Instant) -> Result<(), Dropped> {
        let window = self.window;
        self.seen.retain(|_, at| now.duration_since(*at) < window);
        let key = (e.pod.clone(), e.reason, e.message.clone());
        if self.seen.contains_key(&key) {
            return Err(Dropped::Duplicate);
        }
        if let Some(last) = self.last {
            self.tokens = (self.tokens + now.duration_since(last).as_secs_f64() * self.per_second)
                .min(self.burst);
        }
        self.last = Some(now);
        if self.tokens < 1.0 {
            return Err(Dropped::RateLimited);
        }
        self.tokens -= 1.0;
        self.seen.insert(key, now);
        Ok(())
    }
}

fn now_time() -> Time {
    Time(
        SystemTime::now()
            .try_into()
            .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
    )
}

/// Publishes events for feedback.
pub struct Publisher {
    client: kube::Client,
    stores: Stores,
    limiter: Limiter,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("limiter", &self.limiter)
            .finish_non_exhaustive()
    }
}

impl Publisher {
    pub fn new(client: kube::Client, stores: Stores, limiter: Limiter) -> Self {
        Self {
            client,
            stores,
            limiter,
        }
    }

    pub async fn publish(&mut self, feedback: &Feedback) {
        for e in events(feedback) {
            if let Err(dropped) = self.limiter.admit(&e, Instant::now()) {
                let why = match dropped {
                    Dropped::Duplicate => "duplicate",
                    Dropped::RateLimited => "rate_limited",
                };
                ::metrics::counter!(metrics::EVENTS_DROPPED_TOTAL, "why" => why).increment(1);
                continue;
            }
            let Some(pod) = self
                .stores
                .pods
                .get(&ObjectRef::new(&e.pod.name).within(&e.pod.namespace))
            else {
                continue;
            };
            let now = now_time();
            let nanos = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos();
            let event = Event {
                metadata: ObjectMeta {
                    name: Some(format!("{}.{nanos:x}", e.pod.name)),
                    namespace: Some(e.pod.namespace.clone()),
                    ..ObjectMeta::default()
                },
                involved_object: ObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: Some(e.pod.name.clone()),
                    namespace: Some(e.pod.namespace.clone()),
                    uid: pod.metadata.uid.clone(),
                    resource_version: pod.metadata.resource_version.clone(),
                    ..ObjectReference::default()
                },
                reason: Some(e.reason.into()),
                message: Some(e.message.clone()),
                type_: Some(e.type_.into()),
                source: Some(EventSource {
                    component: Some(COMPONENT.into()),
                    host: None,
                }),
                reporting_component: Some(COMPONENT.into()),
                first_timestamp: Some(now.clone()),
                last_timestamp: Some(now),
                count: Some(1),
                ..Event::default()
            };
            let api: Api<Event> = Api::namespaced(self.client.clone(), &e.pod.namespace);
            match api.create(&PostParams::default(), &event).await {
                Ok(_) => {
                    ::metrics::counter!(metrics::EVENTS_PUBLISHED_TOTAL, "reason" => e.reason)
                        .increment(1);
                }
                Err(err) => {
                    tracing::warn!(pod = %e.pod, reason = e.reason, error = %err, "publishing an event");
                    ::metrics::counter!(metrics::EVENT_PUBLISH_ERRORS_TOTAL).increment(1);
                }
            }
        }
    }
}

/// A NodePool's status as the watcher computes it: what its nodes provide and how many there
/// are, and its readiness.
pub fn node_pool_status(
    pool: &NodePool,
    nodes: &[std::sync::Arc<k8s_openapi::api::core::v1::Node>],
    class_ready: (bool, &str),
    now: &Time,
) -> berth_api::v1::NodePoolStatus {
    let name = pool.metadata.name.as_deref().unwrap_or_default();
    let mut totals: BTreeMap<String, i64> = BTreeMap::new();
    let mut count = 0;
    for n in nodes {
        let owned = n
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(labels::NODE_POOL))
            .is_some_and(|p| p == name);
        if !owned {
            continue;
        }
        count += 1;
        for (resource, q) in n
            .status
            .as_ref()
            .and_then(|s| s.capacity.as_ref())
            .into_iter()
            .flatten()
        {
            if let Ok(v) = parse_milli(&q.0) {
                *totals.entry(resource.clone()).or_default() += v;
            }
        }
    }
    totals.insert("nodes".into(), count * 1000);
    let previous = pool
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let (ready, reason) = class_ready;
    let condition = |type_: &str, ok: bool, why: &str| {
        let status = if ok { "True" } else { "False" };
        let kept = previous
            .iter()
            .find(|p| p.type_ == type_ && p.status == status)
            .map(|p| p.last_transition_time.clone());
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: if ok {
                type_.into()
            } else {
                format!("{}NotReady", type_.trim_end_matches("Ready"))
            },
            message: if ok { String::new() } else { why.to_owned() },
            last_transition_time: kept.unwrap_or_else(|| now.clone()),
            observed_generation: pool.metadata.generation,
        }
    };
    berth_api::v1::NodePoolStatus {
        resources: totals
            .into_iter()
            .map(|(k, v)| (k, Quantity(format_milli(v))))
            .collect(),
        nodes: Some(count),
        conditions: vec![
            condition("NodeClassReady", ready, reason),
            condition("Ready", ready, reason),
        ],
    }
}

/// Writes each NodePool's status when it differs from what the cluster holds.
/// [`metrics::NODEPOOL_USAGE`] and [`metrics::NODEPOOL_LIMIT`] of one NodePool, from the
/// status just computed and its spec (a quantity that does not parse is left out).
fn record_usage_and_limits(pool: &NodePool, status: &berth_api::v1::NodePoolStatus) {
    let name = pool.metadata.name.clone().unwrap_or_default();
    let set = |metric: &'static str, resource: &str, q: &str| {
        if let Ok(milli) = parse_milli(q) {
            ::metrics::gauge!(metric, "nodepool" => name.clone(), "resource" => resource.to_owned())
                .set(milli as f64 / 1000.0);
        }
    };
    for (resource, q) in &status.resources {
        set(metrics::NODEPOOL_USAGE, resource, &q.0);
    }
    for (resource, q) in &pool.spec.limits {
        set(metrics::NODEPOOL_LIMIT, resource, &q.0);
    }
}

pub async fn update_node_pool_statuses(client: &kube::Client, stores: &Stores) {
    let api: Api<NodePool> = Api::all(client.clone());
    let nodes = stores.nodes.state();
    let now = now_time();
    for pool in stores.node_pools.state() {
        let (ready, reason) = stores.node_class_ready(&pool);
        let status = node_pool_status(&pool, &nodes, (ready, &reason), &now);
        record_usage_and_limits(&pool, &status);
        let unchanged = pool.status.as_ref().is_some_and(|s| {
            s.resources == status.resources
                && s.nodes == status.nodes
                && s.conditions.len() == status.conditions.len()
                && s.conditions.iter().zip(&status.conditions).all(|(a, b)| {
                    a.type_ == b.type_
                        && a.status == b.status
                        && a.message == b.message
                        && a.observed_generation == b.observed_generation
                })
        });
        if unchanged {
            continue;
        }
        let name = pool.metadata.name.clone().unwrap_or_default();
        let patch = Patch::Merge(serde_json::json!({ "status": status }));
        match api
            .patch_status(&name, &PatchParams::default(), &patch)
            .await
        {
            Ok(_) => ::metrics::counter!(metrics::NODE_POOL_STATUS_UPDATES_TOTAL).increment(1),
            Err(e) => {
                tracing::warn!(node_pool = %name, error = %e, "updating NodePool status");
                ::metrics::counter!(metrics::NODE_POOL_STATUS_ERRORS_TOTAL).increment(1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(pod: &str, message: &str) -> PodEvent {
        PodEvent {
            pod: ObjectKey::new("ci", pod),
            reason: REASON_FAILED,
            type_: "Warning",
            message: message.into(),
        }
    }

    #[test]
    fn duplicates_are_dropped_within_the_window_and_bursts_are_limited() {
        let t0 = Instant::now();
        let mut l = Limiter::new(Duration::from_secs(120), 1.0, 2);
        assert_eq!(l.admit(&ev("a", "no fit"), t0), Ok(()));
        assert_eq!(l.admit(&ev("a", "no fit"), t0), Err(Dropped::Duplicate));
        assert_eq!(l.admit(&ev("a", "other"), t0), Ok(()));
        assert_eq!(l.admit(&ev("b", "no fit"), t0), Err(Dropped::RateLimited));
        // A second later one token is back.
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(l.admit(&ev("b", "no fit"), t1), Ok(()));
        // After the window the same event may be published again.
        let t2 = t0 + Duration::from_secs(121);
        assert_eq!(l.admit(&ev("a", "no fit"), t2), Ok(()));
    }
}
