//! Kubernetes Events for disruption, as Karpenter publishes them (its
//! `pkg/controllers/disruption/events`): `DisruptionBlocked` (and `Unconsolidatable`) on a
//! kept Node and its NodeClaim, `DisruptionLaunching` on a replacement NodeClaim,
//! `DisruptionTerminating` ("Disrupting Node: ...") on a candidate's Node and NodeClaim once
//! its replacements are up and it is deleted.
//!
//! ```text
//!  scheduler ──DisruptionBlocked RPC (every evaluation)──┐
//!  Disrupt RPC (replacements launched) ──────────────────┼──> Recorder ──Dedupe──> core/v1 Event
//!  lifecycle (candidate deleted) ────────────────────────┘
//! ```
//!
//! Written as core/v1 Events (what Karpenter's client-go recorder writes and `kubectl get
//! events` / `kubectl describe node` show), in `default` for these cluster-scoped objects, as
//! client-go does. [`Dedupe`] keeps an identical event from repeating for a while, as
//! Karpenter's recorder does (2 minutes; 15 for `Unconsolidatable`): the scheduler evaluates
//! every 10 s and reports every blocked node each time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use berth_proto::v1 as pb;
use k8s_openapi::api::core::v1::{Event as EventObject, EventSource, Node, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use kube::api::{Api, PostParams};

use crate::metrics as m;

/// The component events are reported as (Karpenter's is `karpenter`).
pub const COMPONENT: &str = "berth";
/// Karpenter's event reasons.
pub const DISRUPTION_BLOCKED: &str = "DisruptionBlocked";
pub const UNCONSOLIDATABLE: &str = "Unconsolidatable";
pub const DISRUPTION_LAUNCHING: &str = "DisruptionLaunching";
pub const DISRUPTION_TERMINATING: &str = "DisruptionTerminating";

/// Karpenter's recorder's default: an identical event is not published again for this long.
pub const DEDUPE_TIMEOUT: Duration = Duration::from_secs(120);
/// Karpenter's for `Unconsolidatable`.
pub const UNCONSOLIDATABLE_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// The object an event is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Involved {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub name: String,
    pub uid: Option<String>,
}

impl Involved {
    pub fn node(name: &str, uid: Option<String>) -> Self {
        Self {
            api_version: "v1",
            kind: "Node",
            name: name.to_owned(),
            uid,
        }
    }

    pub fn node_claim(name: &str, uid: Option<String>) -> Self {
        Self {
            api_version: "karpenter.sh/v1",
            kind: "NodeClaim",
            name: name.to_owned(),
            uid,
        }
    }
}

/// One event to publish, with what makes it "the same" as an earlier one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub involved: Involved,
    pub reason: &'static str,
    pub message: String,
    /// With the reason, the dedupe key (Karpenter's `DedupeValues`).
    pub dedupe: Vec<String>,
    pub dedupe_timeout: Duration,
}

impl Event {
    fn key(&self) -> String {
        format!("{}/{}", self.reason, self.dedupe.join("/"))
    }
}

/// Which events went out recently. Pure: callers pass the time.
#[derive(Debug, Default)]
pub struct Dedupe {
    /// Key → until when a repeat is dropped.
    until: HashMap<String, Instant>,
}

impl Dedupe {
    /// Whether an event with `key` may go out now; if so it is remembered for `timeout`.
    pub fn admit(&mut self, key: &str, timeout: Duration, now: Instant) -> bool {
        self.until.retain(|_, until| *until > now);
        if self.until.contains_key(key) {
            return false;
        }
        self.until.insert(key.to_owned(), now + timeout);
        true
    }

    /// Keys remembered now (for tests and debugging).
    pub fn len(&self) -> usize {
        self.until.len()
    }

    pub fn is_empty(&self) -> bool {
        self.until.is_empty()
    }
}

/// What a blocked node becomes: the event's reason and how long it is not repeated, or `None`
/// when Karpenter publishes nothing for it (waiting out `consolidateAfter`, or `Never`, is not
/// a block: Karpenter's NodeClaim is just not `Consolidatable` yet; `Explain` says it).
pub fn blocked_reason(kind: pb::DisruptionBlockKind) -> Option<(&'static str, Duration)> {
    use pb::DisruptionBlockKind as K;
    match kind {
        K::Unspecified | K::ConsolidateAfter | K::ConsolidationDisabled => None,
        K::NotConsolidatable => Some((UNCONSOLIDATABLE, UNCONSOLIDATABLE_TIMEOUT)),
        K::NotInitialized
        | K::NodeDoNotDisrupt
        | K::PodDoNotDisrupt
        | K::PodDisruptionBudget
        | K::Budget
        | K::NodePoolUnknown => Some((DISRUPTION_BLOCKED, DEDUPE_TIMEOUT)),
    }
}

/// The events for one blocked node: on the Node and (when known) its NodeClaim, de-duplicated
/// per object and kind of block, so a node's event repeats at once when what holds it changes
/// (a do-not-disrupt pod finished, a PDB now blocks) and otherwise only after the timeout.
pub fn blocked(
    node: Involved,
    claim: Option<Involved>,
    kind: pb::DisruptionBlockKind,
    message: &str,
) -> Vec<Event> {
    let Some((reason, timeout)) = blocked_reason(kind) else {
        return Vec::new();
    };
    [Some(node), claim]
        .into_iter()
        .flatten()
        .map(|involved| Event {
            dedupe: vec![
                involved.kind.to_owned(),
                involved.name.clone(),
                kind.as_str_name().to_owned(),
            ],
            involved,
            reason,
            message: message.to_owned(),
            dedupe_timeout: timeout,
        })
        .collect()
}

/// A replacement NodeClaim launched for a decision (Karpenter's "Launching NodeClaim: ...").
pub fn launching(claim: Involved, method: &str) -> Event {
    Event {
        dedupe: vec![claim.name.clone(), method.to_owned()],
        involved: claim,
        reason: DISRUPTION_LAUNCHING,
        message: format!("Launching NodeClaim: {method}"),
        dedupe_timeout: DEDUPE_TIMEOUT,
    }
}

/// A candidate deleted now that its replacements are up: Karpenter's "Disrupting Node:
/// <method>" and "Disrupting NodeClaim: <method>", with the decision's savings and reason.
pub fn terminating(
    node: Option<Involved>,
    claim: Involved,
    method: &str,
    savings_per_hour: Option<f64>,
    why: &str,
) -> Vec<Event> {
    let mut detail = Vec::new();
    if let Some(s) = savings_per_hour {
        detail.push(format!("saving ${s:.4}/h"));
    }
    if !why.is_empty() {
        detail.push(why.to_owned());
    }
    let detail = if detail.is_empty() {
        String::new()
    } else {
        format!(" ({})", detail.join("; "))
    };
    [node, Some(claim)]
        .into_iter()
        .flatten()
        .map(|involved| Event {
            message: format!("Disrupting {}: {method}{detail}", involved.kind),
            dedupe: vec![
                involved.kind.to_owned(),
                involved.name.clone(),
                method.to_owned(),
            ],
            involved,
            reason: DISRUPTION_TERMINATING,
            dedupe_timeout: DEDUPE_TIMEOUT,
        })
        .collect()
}

/// Publishes [`Event`]s to the cluster, de-duplicated. Cheap to clone (clones share the
/// dedupe memory).
#[derive(Clone)]
pub struct Recorder {
    client: kube::Client,
    dedupe: Arc<Mutex<Dedupe>>,
    clock: crate::Clock,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder").finish_non_exhaustive()
    }
}

impl Recorder {
    pub fn new(client: kube::Client) -> Self {
        Self {
            client,
            dedupe: Arc::new(Mutex::new(Dedupe::default())),
            clock: crate::Clock::default(),
        }
    }

    /// Events carry `clock`'s time (the cluster's; the wall clock by default).
    pub fn with_clock(mut self, clock: crate::Clock) -> Self {
        self.clock = clock;
        self
    }

    fn admit(&self, e: &Event) -> bool {
        self.dedupe.lock().unwrap_or_else(|e| e.into_inner()).admit(
            &e.key(),
            e.dedupe_timeout,
            Instant::now(),
        )
    }

    /// Publishes each event not published within its dedupe timeout. Failures are logged and
    /// counted, never returned: events are best effort.
    pub async fn publish(&self, events: Vec<Event>) {
        for e in events {
            if !self.admit(&e) {
                continue;
            }
            self.write(&e).await;
        }
    }

    async fn write(&self, e: &Event) {
        let at: k8s_openapi::jiff::Timestamp = self
            .clock
            .now()
            .try_into()
            .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        // The name is unique on the wall clock, whatever the cluster's clock does.
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let object = EventObject {
            metadata: ObjectMeta {
                // client-go's naming: the object's name and the time in hex nanoseconds.
                name: Some(format!("{}.{nanos:x}", e.involved.name)),
                namespace: Some("default".into()),
                ..ObjectMeta::default()
            },
            involved_object: ObjectReference {
                api_version: Some(e.involved.api_version.into()),
                kind: Some(e.involved.kind.into()),
                name: Some(e.involved.name.clone()),
                uid: e.involved.uid.clone(),
                ..ObjectReference::default()
            },
            reason: Some(e.reason.into()),
            message: Some(e.message.clone()),
            type_: Some("Normal".into()),
            source: Some(EventSource {
                component: Some(COMPONENT.into()),
                host: None,
            }),
            reporting_component: Some(COMPONENT.into()),
            reporting_instance: Some(COMPONENT.into()),
            first_timestamp: Some(Time(at)),
            last_timestamp: Some(Time(at)),
            event_time: Some(MicroTime(at)),
            action: Some("Disruption".into()),
            count: Some(1),
            ..EventObject::default()
        };
        let api: Api<EventObject> = Api::namespaced(self.client.clone(), "default");
        match api.create(&PostParams::default(), &object).await {
            Ok(_) => {
                ::metrics::counter!(m::EVENTS_TOTAL, "reason" => e.reason).increment(1);
            }
            Err(err) => {
                tracing::warn!(kind = e.involved.kind, name = %e.involved.name, reason = e.reason, error = %err, "publishing an event");
                ::metrics::counter!(m::EVENT_ERRORS_TOTAL, "reason" => e.reason).increment(1);
            }
        }
    }

    /// The events for the nodes a disruption evaluation kept. A node whose events are all
    /// within their dedupe timeout costs nothing; otherwise one GET finds its uid and its
    /// NodeClaim (the owner reference registration put on it).
    pub async fn blocked(&self, report: &[pb::BlockedNode]) {
        let nodes: Api<Node> = Api::all(self.client.clone());
        for b in report {
            let events = blocked(Involved::node(&b.node, None), None, b.kind(), &b.message);
            let Some(first) = events.first() else {
                continue;
            };
            if !self.admit(first) {
                continue;
            }
            let node = match nodes.get_opt(&b.node).await {
                Ok(Some(n)) => n,
                Ok(None) => continue,
                Err(e) => {
                    tracing::debug!(node = %b.node, error = %e, "reading a blocked node");
                    continue;
                }
            };
            let claim = node
                .metadata
                .owner_references
                .iter()
                .flatten()
                .find(|o| o.kind == "NodeClaim")
                .map(|o| Involved::node_claim(&o.name, Some(o.uid.clone())));
            let events = blocked(
                Involved::node(&b.node, node.metadata.uid.clone()),
                claim,
                b.kind(),
                &b.message,
            );
            // The node's own event was admitted above; its claim's goes through the dedupe.
            let mut events = events.into_iter();
            if let Some(node_event) = events.next() {
                self.write(&node_event).await;
            }
            self.publish(events.collect()).await;
        }
    }

    /// The NodeClaim's reference with its uid, for an event (`None` when it cannot be read).
    pub async fn node_claim(&self, name: &str) -> Option<Involved> {
        let api: Api<berth_api::v1::NodeClaim> = Api::all(self.client.clone());
        match api.get_opt(name).await {
            Ok(Some(c)) => Some(Involved::node_claim(name, c.metadata.uid)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::DisruptionBlockKind as K;

    #[test]
    fn an_identical_event_waits_out_its_timeout() {
        let mut d = Dedupe::default();
        let t0 = Instant::now();
        assert!(d.admit("k", DEDUPE_TIMEOUT, t0));
        // The scheduler reports every 10 s: none of these go out.
        for i in 1..12 {
            assert!(!d.admit("k", DEDUPE_TIMEOUT, t0 + Duration::from_secs(10 * i)));
        }
        assert!(d.admit("k", DEDUPE_TIMEOUT, t0 + DEDUPE_TIMEOUT));
        assert!(d.admit("other", DEDUPE_TIMEOUT, t0 + Duration::from_secs(1)));
    }

    #[test]
    fn expired_keys_are_forgotten() {
        let mut d = Dedupe::default();
        let t0 = Instant::now();
        for i in 0..100 {
            assert!(d.admit(&format!("n{i}"), DEDUPE_TIMEOUT, t0));
        }
        assert_eq!(d.len(), 100);
        assert!(d.admit("late", DEDUPE_TIMEOUT, t0 + DEDUPE_TIMEOUT));
        assert_eq!(d.len(), 1);
    }

    fn keys(events: &[Event]) -> Vec<String> {
        events.iter().map(Event::key).collect()
    }

    #[test]
    fn a_node_repeats_at_once_when_what_blocks_it_changes() {
        let node = || Involved::node("n1", Some("u1".into()));
        let claim = || Some(Involved::node_claim("c1", Some("u2".into())));
        let pod = blocked(node(), claim(), K::PodDoNotDisrupt, "pod a/b has ...");
        let pod_again = blocked(node(), claim(), K::PodDoNotDisrupt, "pod a/c has ...");
        let pdb = blocked(
            node(),
            claim(),
            K::PodDisruptionBudget,
            "PodDisruptionBudget ...",
        );
        assert_eq!(pod.len(), 2);
        assert_eq!(pod[0].involved.kind, "Node");
        assert_eq!(pod[1].involved.kind, "NodeClaim");
        assert_eq!(pod[0].reason, DISRUPTION_BLOCKED);
        // Another do-not-disrupt pod is the same kind of block: deduplicated with the first.
        assert_eq!(keys(&pod), keys(&pod_again));
        assert_ne!(keys(&pod), keys(&pdb));

        let mut d = Dedupe::default();
        let t0 = Instant::now();
        let admitted = |d: &mut Dedupe, events: &[Event], at: Instant| {
            events
                .iter()
                .filter(|e| d.admit(&e.key(), e.dedupe_timeout, at))
                .count()
        };
        assert_eq!(admitted(&mut d, &pod, t0), 2);
        assert_eq!(
            admitted(&mut d, &pod_again, t0 + Duration::from_secs(10)),
            0
        );
        assert_eq!(admitted(&mut d, &pdb, t0 + Duration::from_secs(20)), 2);
        // Back to the pod within the timeout: not repeated (flapping is bounded).
        assert_eq!(admitted(&mut d, &pod, t0 + Duration::from_secs(30)), 0);
    }

    #[test]
    fn waiting_for_consolidate_after_is_no_event_and_unconsolidatable_waits_longer() {
        let node = || Involved::node("n1", None);
        assert!(blocked(node(), None, K::ConsolidateAfter, "consolidateAfter ...").is_empty());
        assert!(blocked(node(), None, K::ConsolidationDisabled, "Never").is_empty());
        assert!(blocked(node(), None, K::Unspecified, "").is_empty());
        let u = blocked(node(), None, K::NotConsolidatable, "no cheaper node");
        assert_eq!(u[0].reason, UNCONSOLIDATABLE);
        assert_eq!(u[0].dedupe_timeout, UNCONSOLIDATABLE_TIMEOUT);
    }

    #[test]
    fn terminating_names_the_method_and_the_savings() {
        let events = terminating(
            Some(Involved::node("n1", None)),
            Involved::node_claim("c1", None),
            "Underutilized",
            Some(0.0416),
            "replace with a cheaper node",
        );
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].reason, DISRUPTION_TERMINATING);
        assert_eq!(
            events[0].message,
            "Disrupting Node: Underutilized (saving $0.0416/h; replace with a cheaper node)"
        );
        assert_eq!(
            events[1].message.split(':').next(),
            Some("Disrupting NodeClaim")
        );
        let bare = terminating(None, Involved::node_claim("c1", None), "Empty", None, "");
        assert_eq!(bare.len(), 1);
        assert_eq!(bare[0].message, "Disrupting NodeClaim: Empty");
        assert_eq!(
            launching(Involved::node_claim("r1", None), "Drifted").message,
            "Launching NodeClaim: Drifted"
        );
    }
}
