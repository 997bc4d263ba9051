//! The NodeClaim lifecycle as pure decisions: given what the cluster and the cloud say now,
//! what is the next step? The controllers that watch Kubernetes and carry the steps out are
//! thin wiring around these functions (and arrive with the simulated cluster, their test bed).
//!
//! ```text
//!   Launched ──node with the providerID appears──> Registered ──Ready, startup taints gone,
//!      │                                               │        extended resources reported──> Initialized
//!      └── not registered within the TTL ──> deleted   └── deletion: taint, drain, terminate, drop finalizer
//! ```

use std::time::{Duration, SystemTime};

use berth_scheduler_core::labels;
use berth_scheduler_core::model::{Labels, Resources, Taint, TaintEffect};

/// What the lifecycle needs of a NodeClaim.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimView {
    pub name: String,
    /// Empty until launched.
    pub provider_id: String,
    /// Labels the node must carry (the NodePool's and the claim's single-valued requirements).
    pub labels: Labels,
    pub taints: Vec<Taint>,
    pub startup_taints: Vec<Taint>,
    /// Resources the claim's pods request; extended ones must be reported before Initialized.
    pub requests: Resources,
    pub registered: bool,
    pub initialized: bool,
    /// A `Launched` condition is recorded (True or False): the launch finished one way or
    /// the other.
    pub launch_recorded: bool,
    pub created_at: SystemTime,
}

/// What the lifecycle needs of a Node.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeView {
    pub name: String,
    pub provider_id: String,
    pub labels: Labels,
    pub taints: Vec<Taint>,
    pub ready: bool,
    pub allocatable: Resources,
}

/// The next lifecycle step of a live (not deleting) NodeClaim.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Nothing to do until something changes (or `recheck_after` passes).
    Wait { recheck_after: Option<Duration> },
    /// The node appeared: label and taint it as the claim says, drop
    /// `karpenter.sh/unregistered`, own it by the claim, and mark the claim Registered.
    Register {
        node: String,
        /// Labels to set (those missing or different), `karpenter.sh/registered` included.
        labels: Labels,
        /// The claim's taints the node lacks.
        add_taints: Vec<Taint>,
        remove_unregistered_taint: bool,
    },
    /// Ready, startup taints gone, extended resources reported: mark Initialized (and label
    /// the node `karpenter.sh/initialized`).
    Initialize { node: String },
    /// Launched but never registered within the TTL: delete the claim (its finalizer
    /// terminates the instance).
    Delete { reason: String },
    /// Created but its launch never finished (the actuator that launched it died between the
    /// cloud call and the status write, or before the call): launch it again. The provider's
    /// `create` is idempotent by NodeClaim name, so an instance that exists is found, not
    /// doubled.
    Launch,
}

/// Default time a launched instance has to register its node (Karpenter's 15 minutes).
pub const REGISTRATION_TTL: Duration = Duration::from_secs(15 * 60);

/// Default time a NodeClaim may stay unlaunched before the lifecycle launches it itself: longer
/// than a Launch call takes (the scheduler's deadline), so a launch under way is not raced.
pub const LAUNCH_GRACE: Duration = Duration::from_secs(60);

fn has_taint(taints: &[Taint], t: &Taint) -> bool {
    taints
        .iter()
        .any(|x| x.key == t.key && x.value == t.value && x.effect == t.effect)
}

/// How long the lifecycle waits on other actors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    /// From launch to a registered node.
    pub registration_ttl: Duration,
    /// From creation to a recorded launch, before the lifecycle launches the claim itself.
    pub launch_grace: Duration,
    /// From a recorded disruption decision to its replacements initialized, before the
    /// decision is rolled back.
    pub replacement_ttl: Duration,
}

impl Default for Deadlines {
    fn default() -> Self {
        Self {
            registration_ttl: REGISTRATION_TTL,
            launch_grace: LAUNCH_GRACE,
            replacement_ttl: REPLACEMENT_TTL,
        }
    }
}

/// The next step for `claim`; `node` is the Node whose providerID matches, if any.
pub fn next_step(
    claim: &ClaimView,
    node: Option<&NodeView>,
    now: SystemTime,
    deadlines: Deadlines,
) -> Step {
    let Deadlines {
        registration_ttl,
        launch_grace,
        ..
    } = deadlines;
    if claim.provider_id.is_empty() {
        if claim.launch_recorded {
            // The launch failed and said why (Launched=False): the scheduler decides again.
            return Step::Wait {
                recheck_after: None,
            };
        }
        // A Launch call may be under way: give it its time, then launch it ourselves.
        let age = now.duration_since(claim.created_at).unwrap_or_default();
        if age >= launch_grace {
            return Step::Launch;
        }
        return Step::Wait {
            recheck_after: Some(launch_grace - age),
        };
    }
    let Some(node) = node else {
        let age = now.duration_since(claim.created_at).unwrap_or_default();
        if age >= registration_ttl {
            return Step::Delete {
                reason: format!(
                    "no node registered with provider ID {} within {}s",
                    claim.provider_id,
                    registration_ttl.as_secs()
                ),
            };
        }
        return Step::Wait {
            recheck_after: Some(registration_ttl - age),
        };
    };
    if !claim.registered {
        let mut want = claim.labels.clone();
        want.insert(labels::NODE_REGISTERED.to_owned(), "true".to_owned());
        let missing: Labels = want
            .into_iter()
            .filter(|(k, v)| node.labels.get(k) != Some(v))
            .collect();
        return Step::Register {
            node: node.name.clone(),
            labels: missing,
            add_taints: claim
                .taints
                .iter()
                .filter(|t| !has_taint(&node.taints, t))
                .cloned()
                .collect(),
            remove_unregistered_taint: node
                .taints
                .iter()
                .any(|t| t.key == labels::UNREGISTERED_TAINT_KEY),
        };
    }
    if !claim.initialized {
        let startup_left = claim.startup_taints.iter().any(|t| {
            node.taints
                .iter()
                .any(|n| n.key == t.key && n.effect == t.effect)
        });
        let extended_missing = claim.requests.iter().any(|(name, amount)| {
            amount > 0 && is_extended(name) && node.allocatable.get(name) <= 0
        });
        if node.ready && !startup_left && !extended_missing {
            return Step::Initialize {
                node: node.name.clone(),
            };
        }
    }
    Step::Wait {
        recheck_after: None,
    }
}

/// Resources the kubelet reports only once a device plugin runs (GPUs, Neuron, EFA, ...).
fn is_extended(name: &str) -> bool {
    name.contains('/') && !name.starts_with("hugepages-")
}

/// A pod on a node being drained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodView {
    pub namespace: String,
    pub name: String,
    /// `system-cluster-critical` / `system-node-critical` priority class.
    pub critical: bool,
    pub daemon_set: bool,
    /// Succeeded or Failed: nothing to evict.
    pub terminal: bool,
    /// A static (mirror) pod: the kubelet owns it, the API cannot evict it.
    pub mirror: bool,
    /// Already being deleted.
    pub deleting: bool,
    /// `karpenter.sh/do-not-disrupt: "true"` on a running pod: not evicted; the drain waits
    /// for it to finish (or for the termination grace period).
    pub do_not_disrupt: bool,
}

/// The next step of draining and terminating a NodeClaim being deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DrainStep {
    /// Taint the node `karpenter.sh/disrupted:NoSchedule` so nothing new lands.
    Taint,
    /// Evict these pods through the Eviction API (a 429 means a PDB says not now: retry
    /// with backoff).
    Evict(Vec<(String, String)>),
    /// The termination grace period is over: delete these pods whatever the PDBs say.
    Delete(Vec<(String, String)>),
    /// Evictions are under way; check again shortly.
    WaitForPods,
    /// Nothing left to drain: terminate the instance (repeat until the cloud says NotFound),
    /// then delete the Node and drop the finalizer.
    Terminate,
}

/// The taint a draining node carries.
pub fn disrupted_taint() -> Taint {
    Taint {
        key: labels::DISRUPTED_TAINT_KEY.to_owned(),
        value: String::new(),
        effect: TaintEffect::NoSchedule,
    }
}

/// Karpenter's drain order: non-critical pods, then critical ones, then DaemonSet pods
/// (non-critical, then critical), each group gone before the next starts. `node_taints` is
/// `None` when the node is gone already; `grace_over` when the claim's
/// `terminationGracePeriod` has passed since deletion started.
pub fn drain_step(node_taints: Option<&[Taint]>, pods: &[PodView], grace_over: bool) -> DrainStep {
    let Some(taints) = node_taints else {
        return DrainStep::Terminate;
    };
    let disrupted = disrupted_taint();
    if !taints
        .iter()
        .any(|t| t.key == disrupted.key && t.effect == disrupted.effect)
    {
        return DrainStep::Taint;
    }
    let drainable: Vec<&PodView> = pods.iter().filter(|p| !p.terminal && !p.mirror).collect();
    if drainable.is_empty() {
        return DrainStep::Terminate;
    }
    let key = |p: &&PodView| (p.namespace.clone(), p.name.clone());
    if grace_over {
        let left: Vec<(String, String)> =
            drainable.iter().filter(|p| !p.deleting).map(key).collect();
        // Pods already terminating past the grace period do not hold the instance (Karpenter
        // terminates it); the rest are deleted first.
        return if left.is_empty() {
            DrainStep::Terminate
        } else {
            DrainStep::Delete(left)
        };
    }
    for (daemon_set, critical) in [(false, false), (false, true), (true, false), (true, true)] {
        let group: Vec<&&PodView> = drainable
            .iter()
            .filter(|p| p.daemon_set == daemon_set && p.critical == critical)
            .collect();
        if group.is_empty() {
            continue;
        }
        let to_evict: Vec<(String, String)> = group
            .iter()
            .filter(|p| !p.deleting && !p.do_not_disrupt)
            .map(|p| (p.namespace.clone(), p.name.clone()))
            .collect();
        return if to_evict.is_empty() {
            DrainStep::WaitForPods
        } else {
            DrainStep::Evict(to_evict)
        };
    }
    DrainStep::Terminate
}

/// What became of one replacement of a disruption decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replacement {
    /// No NodeClaim of that name (never created, or gone).
    Missing,
    /// Created, not initialized yet.
    Pending,
    /// Its launch failed (`Launched=False`) or it is being deleted.
    Failed,
    Initialized,
}

/// The next step of a NodeClaim recorded in a disruption decision (not deleted yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DisruptionStep {
    /// Taint its node `karpenter.sh/disrupted:NoSchedule` so nothing new lands.
    Taint,
    Wait,
    /// Every replacement is up: delete the claim (the drain and termination follow).
    Delete,
    /// Give up: untaint the node and clear the record (the scheduler decides again later).
    RollBack(String),
}

/// Karpenter's wait for replacements before it gives a decision up.
pub const REPLACEMENT_TTL: Duration = Duration::from_secs(15 * 60);

/// The next step of a claim in a disruption decision recorded at `started_at`.
/// `node_tainted` is `None` when the claim has no node; `emptiness_broken` when the decision
/// is an emptiness one and a reschedulable pod arrived on the node since.
pub fn disruption_step(
    started_at: SystemTime,
    node_tainted: Option<bool>,
    emptiness_broken: bool,
    replacements: &[(String, Replacement)],
    now: SystemTime,
    deadlines: Deadlines,
) -> DisruptionStep {
    if node_tainted == Some(false) {
        return DisruptionStep::Taint;
    }
    if emptiness_broken {
        return DisruptionStep::RollBack("a pod arrived on the empty node".into());
    }
    let age = now.duration_since(started_at).unwrap_or_default();
    for (name, r) in replacements {
        match r {
            Replacement::Failed => {
                return DisruptionStep::RollBack(format!("replacement {name} failed"));
            }
            // The actuator that recorded the decision died before creating it.
            Replacement::Missing if age >= deadlines.launch_grace => {
                return DisruptionStep::RollBack(format!("replacement {name} was never created"));
            }
            Replacement::Missing | Replacement::Pending if age >= deadlines.replacement_ttl => {
                return DisruptionStep::RollBack(format!(
                    "replacement {name} not initialized within {}s",
                    deadlines.replacement_ttl.as_secs()
                ));
            }
            _ => {}
        }
    }
    if replacements
        .iter()
        .all(|(_, r)| *r == Replacement::Initialized)
    {
        DisruptionStep::Delete
    } else {
        DisruptionStep::Wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_disruption_taints_waits_for_its_replacements_then_deletes() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let d = Deadlines::default();
        let up = |r| vec![("r1".to_owned(), r)];
        assert_eq!(
            disruption_step(t, Some(false), false, &up(Replacement::Pending), t, d),
            DisruptionStep::Taint
        );
        assert_eq!(
            disruption_step(t, Some(true), false, &up(Replacement::Pending), t, d),
            DisruptionStep::Wait
        );
        assert_eq!(
            disruption_step(t, Some(true), false, &up(Replacement::Initialized), t, d),
            DisruptionStep::Delete
        );
        // No replacement (emptiness): delete at once; unless a pod arrived.
        assert_eq!(
            disruption_step(t, Some(true), false, &[], t, d),
            DisruptionStep::Delete
        );
        assert!(matches!(
            disruption_step(t, Some(true), true, &[], t, d),
            DisruptionStep::RollBack(_)
        ));
        // A replacement that failed, was never created, or never came up: roll back.
        assert!(matches!(
            disruption_step(t, Some(true), false, &up(Replacement::Failed), t, d),
            DisruptionStep::RollBack(_)
        ));
        assert_eq!(
            disruption_step(t, Some(true), false, &up(Replacement::Missing), t, d),
            DisruptionStep::Wait
        );
        assert!(matches!(
            disruption_step(t, Some(true), false, &up(Replacement::Missing), t + d.launch_grace, d),
            DisruptionStep::RollBack(m) if m.contains("never created")
        ));
        assert!(matches!(
            disruption_step(t, Some(true), false, &up(Replacement::Pending), t + REPLACEMENT_TTL, d),
            DisruptionStep::RollBack(m) if m.contains("not initialized")
        ));
    }

    #[test]
    fn the_drain_waits_for_do_not_disrupt_pods_until_the_grace_period() {
        let tainted = [disrupted_taint()];
        let mut build = pod("build", false, false);
        build.do_not_disrupt = true;
        let pods = [build, pod("web", false, false)];
        assert_eq!(
            drain_step(Some(&tainted), &pods, false),
            DrainStep::Evict(keys(&["web"]))
        );
        assert_eq!(
            drain_step(Some(&tainted), &pods[..1], false),
            DrainStep::WaitForPods
        );
        assert_eq!(
            drain_step(Some(&tainted), &pods[..1], true),
            DrainStep::Delete(keys(&["build"]))
        );
    }

    fn t0() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000)
    }

    fn taint(key: &str, value: &str, effect: TaintEffect) -> Taint {
        Taint {
            key: key.into(),
            value: value.into(),
            effect,
        }
    }

    fn claim() -> ClaimView {
        ClaimView {
            name: "gitlab-x1".into(),
            provider_id: "aws:///us-east-1a/i-1".into(),
            labels: [
                ("karpenter.sh/nodepool".to_owned(), "gitlab".to_owned()),
                ("workload".to_owned(), "ci".to_owned()),
            ]
            .into(),
            taints: vec![taint("dedicated", "gitlab", TaintEffect::NoSchedule)],
            startup_taints: vec![taint("cni/not-ready", "", TaintEffect::NoSchedule)],
            requests: Resources::new().with("cpu", 1000),
            registered: false,
            initialized: false,
            launch_recorded: true,
            created_at: t0(),
        }
    }

    fn node() -> NodeView {
        NodeView {
            name: "ip-10-0-1-5".into(),
            provider_id: "aws:///us-east-1a/i-1".into(),
            labels: [("workload".to_owned(), "ci".to_owned())].into(),
            taints: vec![
                taint(labels::UNREGISTERED_TAINT_KEY, "", TaintEffect::NoExecute),
                taint("cni/not-ready", "", TaintEffect::NoSchedule),
            ],
            ready: false,
            allocatable: Resources::new().with("cpu", 1930),
        }
    }

    #[test]
    fn an_unlaunched_claim_waits_for_the_launch_then_is_launched_again() {
        let mut c = claim();
        c.provider_id.clear();
        c.launch_recorded = false;
        let d = Deadlines::default();
        assert_eq!(
            next_step(&c, None, t0() + Duration::from_secs(10), d),
            Step::Wait {
                recheck_after: Some(LAUNCH_GRACE - Duration::from_secs(10))
            },
            "a Launch call may be under way"
        );
        assert_eq!(
            next_step(&c, None, t0() + LAUNCH_GRACE, d),
            Step::Launch,
            "the launcher died before recording the launch"
        );
        // A launch that failed and said so is the scheduler's to decide again.
        c.launch_recorded = true;
        assert_eq!(
            next_step(&c, None, t0() + Duration::from_secs(3600), d),
            Step::Wait {
                recheck_after: None
            }
        );
    }

    #[test]
    fn a_claim_whose_node_never_registers_is_deleted_after_the_ttl() {
        let c = claim();
        assert_eq!(
            next_step(
                &c,
                None,
                t0() + Duration::from_secs(60),
                Deadlines::default()
            ),
            Step::Wait {
                recheck_after: Some(REGISTRATION_TTL - Duration::from_secs(60))
            }
        );
        match next_step(&c, None, t0() + REGISTRATION_TTL, Deadlines::default()) {
            Step::Delete { reason } => assert!(reason.contains("i-1"), "{reason}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn registration_labels_and_taints_the_node_and_drops_the_unregistered_taint() {
        match next_step(&claim(), Some(&node()), t0(), Deadlines::default()) {
            Step::Register {
                node,
                labels: l,
                add_taints,
                remove_unregistered_taint,
            } => {
                assert_eq!(node, "ip-10-0-1-5");
                assert_eq!(
                    l.get("karpenter.sh/nodepool").map(String::as_str),
                    Some("gitlab")
                );
                assert_eq!(
                    l.get(labels::NODE_REGISTERED).map(String::as_str),
                    Some("true")
                );
                assert!(!l.contains_key("workload"), "already there");
                assert_eq!(
                    add_taints,
                    vec![taint("dedicated", "gitlab", TaintEffect::NoSchedule)]
                );
                assert!(remove_unregistered_taint);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn initialized_once_ready_without_startup_taints_and_with_extended_resources() {
        let mut c = claim();
        c.registered = true;
        c.requests.set("nvidia.com/gpu", 1000);
        let mut n = node();
        n.taints.clear();
        n.ready = true;
        assert_eq!(
            next_step(&c, Some(&n), t0(), Deadlines::default()),
            Step::Wait {
                recheck_after: None
            },
            "the GPU is not reported yet"
        );
        n.allocatable.set("nvidia.com/gpu", 1000);
        n.taints = vec![taint("cni/not-ready", "", TaintEffect::NoSchedule)];
        assert!(
            matches!(
                next_step(&c, Some(&n), t0(), Deadlines::default()),
                Step::Wait { .. }
            ),
            "a startup taint is still there"
        );
        n.taints.clear();
        assert_eq!(
            next_step(&c, Some(&n), t0(), Deadlines::default()),
            Step::Initialize {
                node: "ip-10-0-1-5".into()
            }
        );
        n.ready = false;
        assert!(matches!(
            next_step(&c, Some(&n), t0(), Deadlines::default()),
            Step::Wait { .. }
        ));
    }

    fn pod(name: &str, critical: bool, daemon_set: bool) -> PodView {
        PodView {
            namespace: "ci".into(),
            name: name.into(),
            critical,
            daemon_set,
            terminal: false,
            mirror: false,
            deleting: false,
            do_not_disrupt: false,
        }
    }

    fn keys(names: &[&str]) -> Vec<(String, String)> {
        names
            .iter()
            .map(|n| ("ci".to_owned(), (*n).to_owned()))
            .collect()
    }

    #[test]
    fn drain_taints_first_then_evicts_in_karpenters_order() {
        let pods = vec![
            pod("ds-critical", true, true),
            pod("ds", false, true),
            pod("critical", true, false),
            pod("build-1", false, false),
            pod("build-2", false, false),
        ];
        assert_eq!(drain_step(Some(&[]), &pods, false), DrainStep::Taint);
        let tainted = [disrupted_taint()];
        assert_eq!(
            drain_step(Some(&tainted), &pods, false),
            DrainStep::Evict(keys(&["build-1", "build-2"]))
        );
        let mut rest: Vec<PodView> = pods[..3].to_vec();
        assert_eq!(
            drain_step(Some(&tainted), &rest, false),
            DrainStep::Evict(keys(&["critical"]))
        );
        rest[2].deleting = true;
        assert_eq!(
            drain_step(Some(&tainted), &rest, false),
            DrainStep::WaitForPods
        );
        rest.truncate(2);
        assert_eq!(
            drain_step(Some(&tainted), &rest, false),
            DrainStep::Evict(keys(&["ds"]))
        );
        rest.remove(1);
        assert_eq!(
            drain_step(Some(&tainted), &rest, false),
            DrainStep::Evict(keys(&["ds-critical"]))
        );
        assert_eq!(drain_step(Some(&tainted), &[], false), DrainStep::Terminate);
    }

    #[test]
    fn terminal_and_mirror_pods_do_not_hold_the_drain_and_a_gone_node_terminates() {
        let tainted = [disrupted_taint()];
        let mut done = pod("finished", false, false);
        done.terminal = true;
        let mut mirror = pod("kube-proxy", true, false);
        mirror.mirror = true;
        assert_eq!(
            drain_step(Some(&tainted), &[done, mirror], false),
            DrainStep::Terminate
        );
        assert_eq!(
            drain_step(None, &[pod("x", false, false)], false),
            DrainStep::Terminate
        );
    }

    #[test]
    fn after_the_grace_period_pods_are_deleted_whatever_the_pdbs_say() {
        let tainted = [disrupted_taint()];
        let pods = vec![pod("build-1", false, false), pod("ds", false, true)];
        assert_eq!(
            drain_step(Some(&tainted), &pods, true),
            DrainStep::Delete(keys(&["build-1", "ds"]))
        );
        // Deleted but stuck terminating: the instance goes anyway.
        let stuck: Vec<PodView> = pods
            .into_iter()
            .map(|mut p| {
                p.deleting = true;
                p
            })
            .collect();
        assert_eq!(
            drain_step(Some(&tainted), &stuck, true),
            DrainStep::Terminate
        );
        assert_eq!(
            drain_step(Some(&tainted), &stuck, false),
            DrainStep::WaitForPods
        );
    }
}

/// What garbage collection does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GcAction {
    /// An instance of this cluster whose NodeClaim does not exist: terminate it.
    TerminateInstance {
        node_claim: String,
        provider_id: String,
    },
    /// A launched NodeClaim whose instance is gone: delete it.
    DeleteClaim { node_claim: String },
}

/// Karpenter's grace before an instance without a NodeClaim counts as leaked (it may have
/// been launched a moment before its claim was written).
pub const LEAK_GRACE: Duration = Duration::from_secs(30);

/// Leaked instances and orphaned claims. `instances` are the cloud's (`list()`), `claims` the
/// NodeClaims with their provider IDs (empty until launched).
pub fn garbage(
    instances: &[berth_scheduler_core::model::Instance],
    claims: &[(String, String)],
    now: SystemTime,
    grace: Duration,
) -> Vec<GcAction> {
    let claim_names: std::collections::BTreeSet<&str> =
        claims.iter().map(|(n, _)| n.as_str()).collect();
    let live_ids: std::collections::BTreeSet<&str> =
        instances.iter().map(|i| i.provider_id.as_str()).collect();
    let mut out: Vec<GcAction> = instances
        .iter()
        .filter(|i| !claim_names.contains(i.node_claim.as_str()))
        .filter(|i| now.duration_since(i.launched_at).unwrap_or_default() >= grace)
        .filter(|i| i.state != berth_scheduler_core::model::InstanceState::ShuttingDown)
        .map(|i| GcAction::TerminateInstance {
            node_claim: i.node_claim.clone(),
            provider_id: i.provider_id.clone(),
        })
        .collect();
    out.extend(
        claims
            .iter()
            .filter(|(_, id)| !id.is_empty() && !live_ids.contains(id.as_str()))
            .map(|(name, _)| GcAction::DeleteClaim {
                node_claim: name.clone(),
            }),
    );
    out
}

#[cfg(test)]
mod gc_tests {
    use super::*;
    use berth_scheduler_core::model::{CapacityType, Instance, InstanceState};

    fn instance(claim: &str, id: &str, launched: SystemTime, state: InstanceState) -> Instance {
        Instance {
            node_claim: claim.into(),
            node_pool: "gitlab".into(),
            provider_id: id.into(),
            instance_type: "m5.large".into(),
            zone: "us-east-1a".into(),
            capacity_type: CapacityType::Spot,
            image_id: "ami-1".into(),
            capacity: Resources::new(),
            allocatable: Resources::new(),
            labels: Labels::new(),
            price: 0.03,
            state,
            launched_at: launched,
        }
    }

    #[test]
    fn leaked_instances_after_the_grace_and_claims_without_instances() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(10_000);
        let instances = vec![
            instance(
                "kept",
                "i-1",
                t - Duration::from_secs(600),
                InstanceState::Running,
            ),
            instance(
                "leaked",
                "i-2",
                t - Duration::from_secs(600),
                InstanceState::Running,
            ),
            instance(
                "just-launched",
                "i-3",
                t - Duration::from_secs(5),
                InstanceState::Pending,
            ),
            instance(
                "going",
                "i-4",
                t - Duration::from_secs(600),
                InstanceState::ShuttingDown,
            ),
        ];
        let claims = vec![
            ("kept".to_owned(), "i-1".to_owned()),
            ("orphan".to_owned(), "i-9".to_owned()),
            ("not-launched".to_owned(), String::new()),
        ];
        assert_eq!(
            garbage(&instances, &claims, t, LEAK_GRACE),
            vec![
                GcAction::TerminateInstance {
                    node_claim: "leaked".into(),
                    provider_id: "i-2".into()
                },
                GcAction::DeleteClaim {
                    node_claim: "orphan".into()
                },
            ]
        );
    }
}
