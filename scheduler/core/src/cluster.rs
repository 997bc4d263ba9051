//! The scheduler's model of the cluster, kept from the watcher's `Sync` batches
//! ([`crate::sync`]): a snapshot replaces it, deltas change it in order. From it the scheduler
//! takes each solve's input: the pods waiting for capacity, the nodes with the pods bound to
//! them, and the NodeClaims still in flight with the pods nominated to them.
//!
//! Pure: no I/O, no clock (callers pass `now`). Issue 6's `berth-scheduler` keeps one per
//! watcher stream; a restart rebuilds it from the next snapshot, NodeClaims included.

use std::collections::BTreeMap;
use std::time::SystemTime;

use crate::model::{
    DaemonSet, InstanceType, Namespace, Node, NodeClaim, NodeClaimCondition, NodePool, ObjectKey,
    Pod, PodDisruptionBudget, PodPhase,
};
use crate::solver::{ExistingNode, InFlightClaim, NewNodeClaim, NodePoolInput, SchedulingInput};
use crate::sync::{Batch, BatchKind, Change, Object, ObjectKind};

/// Why a batch was refused; the model is unchanged when it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyncError {
    #[error("batch {got} arrived when {expected} was expected")]
    OutOfOrder { expected: u64, got: u64 },
    #[error("a delta batch ({sequence}) arrived before any snapshot")]
    DeltaBeforeSnapshot { sequence: u64 },
}

/// The cluster as the watcher reported it.
#[derive(Debug, Clone, Default)]
pub struct ClusterModel {
    pods: BTreeMap<ObjectKey, Pod>,
    nodes: BTreeMap<String, Node>,
    node_claims: BTreeMap<String, NodeClaim>,
    node_pools: BTreeMap<String, NodePool>,
    daemon_sets: BTreeMap<ObjectKey, DaemonSet>,
    pdbs: BTreeMap<ObjectKey, PodDisruptionBudget>,
    namespaces: BTreeMap<String, Namespace>,
    /// Snapshot parts received, applied at the snapshot's end.
    pending_snapshot: Option<Vec<Change>>,
    synced: bool,
    acknowledged: u64,
    /// Pods this scheduler nominated to NodeClaims (kept across snapshots: the claims are in
    /// the snapshot, the nominations only here and on the pods' events).
    nominations: BTreeMap<ObjectKey, String>,
    /// Claims this scheduler launched that the watcher has not reported yet: counted as in
    /// flight meanwhile, so the next solve neither launches for their pods again nor forgets
    /// them against the NodePool's limits.
    launched: BTreeMap<String, NodeClaim>,
    /// Nodes a pod arrived on or left since the last [`ClusterModel::stamp_pod_events`].
    touched: std::collections::BTreeSet<String>,
    /// When a pod last arrived on or left each node (kept across snapshots: a snapshot says
    /// where pods are, not when they came).
    last_pod_event: BTreeMap<String, SystemTime>,
}

impl ClusterModel {
    /// The highest batch applied.
    pub fn acknowledged(&self) -> u64 {
        self.acknowledged
    }

    /// Whether a whole snapshot has arrived.
    pub fn synced(&self) -> bool {
        self.synced
    }

    /// A new stream starts again at sequence 1 with a snapshot.
    pub fn reset_stream(&mut self) {
        self.acknowledged = 0;
        self.pending_snapshot = None;
    }

    pub fn apply(&mut self, batch: Batch) -> Result<(), SyncError> {
        let expected = self.acknowledged + 1;
        if batch.sequence != expected {
            return Err(SyncError::OutOfOrder {
                expected,
                got: batch.sequence,
            });
        }
        match batch.kind {
            BatchKind::Snapshot => {
                self.pending_snapshot
                    .get_or_insert_with(Vec::new)
                    .extend(batch.changes);
            }
            BatchKind::SnapshotEnd => {
                let mut changes = self.pending_snapshot.take().unwrap_or_default();
                changes.extend(batch.changes);
                let nominations = std::mem::take(&mut self.nominations);
                let launched = std::mem::take(&mut self.launched);
                let last_pod_event = std::mem::take(&mut self.last_pod_event);
                *self = Self {
                    acknowledged: self.acknowledged,
                    nominations,
                    launched,
                    last_pod_event,
                    ..Self::default()
                };
                for c in changes {
                    self.change(c);
                }
                self.synced = true;
                self.forget_stale_nominations();
            }
            BatchKind::Delta => {
                if !self.synced {
                    return Err(SyncError::DeltaBeforeSnapshot {
                        sequence: batch.sequence,
                    });
                }
                for c in batch.changes {
                    self.change(c);
                }
                self.forget_stale_nominations();
            }
        }
        self.acknowledged = batch.sequence;
        Ok(())
    }

    fn change(&mut self, change: Change) {
        match change {
            Change::Upsert(o) => match o {
                Object::Pod(p) => {
                    let on = |p: &Pod| {
                        p.node_name
                            .clone()
                            .filter(|_| !matches!(p.phase, PodPhase::Succeeded | PodPhase::Failed))
                    };
                    let now_on = on(&p);
                    let was_on = self.pods.get(&p.key).and_then(on);
                    if now_on != was_on && self.synced {
                        self.touched.extend(now_on.into_iter().chain(was_on));
                    }
                    self.pods.insert(p.key.clone(), p);
                }
                Object::Node(n) => {
                    self.nodes.insert(n.name.clone(), n);
                }
                Object::NodeClaim(c) => {
                    self.launched.remove(&c.name);
                    self.node_claims.insert(c.name.clone(), c);
                }
                Object::NodePool(p) => {
                    self.node_pools.insert(p.name.clone(), p);
                }
                Object::DaemonSet(d) => {
                    self.daemon_sets.insert(d.key.clone(), d);
                }
                Object::PodDisruptionBudget(b) => {
                    self.pdbs.insert(b.key.clone(), b);
                }
                Object::Namespace(n) => {
                    self.namespaces.insert(n.name.clone(), n);
                }
            },
            Change::Delete { kind, key } => match kind {
                ObjectKind::Pod => {
                    if let Some(n) = self.pods.remove(&key).and_then(|p| p.node_name) {
                        self.touched.insert(n);
                    }
                }
                ObjectKind::Node => {
                    self.nodes.remove(&key.name);
                }
                ObjectKind::NodeClaim => {
                    self.node_claims.remove(&key.name);
                }
                ObjectKind::NodePool => {
                    self.node_pools.remove(&key.name);
                }
                ObjectKind::DaemonSet => {
                    self.daemon_sets.remove(&key);
                }
                ObjectKind::PodDisruptionBudget => {
                    self.pdbs.remove(&key);
                }
                ObjectKind::Namespace => {
                    self.namespaces.remove(&key.name);
                }
            },
        }
    }

    /// Records a launch this scheduler asked for and the pods meant for it; the claim counts
    /// as in flight until the watcher reports it (and after, as the watcher reports it).
    pub fn record_launch(&mut self, claim: NodeClaim, pods: &[ObjectKey]) {
        for p in pods {
            self.nominations.insert(p.clone(), claim.name.clone());
        }
        if !self.node_claims.contains_key(&claim.name) {
            self.launched.insert(claim.name.clone(), claim);
        }
    }

    /// Nominations end when the pod is gone or bound, or when its claim, once reported, is
    /// no longer in flight: gone or being deleted (a failed launch, a claim that never
    /// registered), or initialized (its node is there; if the kube-scheduler could not bind
    /// the pod to it, the pod is pending again like any other).
    fn forget_stale_nominations(&mut self) {
        let pods = &self.pods;
        let claims = &self.node_claims;
        let launched = &self.launched;
        self.nominations.retain(|key, claim| {
            pods.get(key).is_some_and(|p| p.node_name.is_none())
                && (launched.contains_key(claim) || claims.get(claim).is_some_and(Self::in_flight))
        });
    }

    /// Stamps the pod events of the batches applied since the last call with `now`.
    pub fn stamp_pod_events(&mut self, now: SystemTime) {
        for n in std::mem::take(&mut self.touched) {
            self.last_pod_event.insert(n, now);
        }
        let nodes = &self.nodes;
        self.last_pod_event.retain(|n, _| nodes.contains_key(n));
    }

    /// Whether nothing is on its way: no pod waiting for a node (bound to none, not finished),
    /// no NodeClaim in flight, no launch unreported. Disruption waits for this, as
    /// Karpenter's waits for pending pods and launches to settle.
    pub fn settled(&self) -> bool {
        self.launched.is_empty()
            && !self.node_claims.values().any(Self::in_flight)
            && !self.pods.values().any(|p| {
                p.node_name.is_none() && matches!(p.phase, PodPhase::Pending | PodPhase::Unknown)
            })
    }

    /// A disruption evaluation's input: the provisioning input, every NodeClaim and the pod
    /// event times.
    pub fn disruption_input(
        &self,
        instance_types: &BTreeMap<String, Vec<InstanceType>>,
        now: SystemTime,
        options: crate::disruption::Options,
    ) -> crate::disruption::DisruptionInput {
        crate::disruption::DisruptionInput {
            cluster: self.input(instance_types, now),
            node_claims: self.node_claims.values().cloned().collect(),
            last_pod_event: self.last_pod_event.clone(),
            options,
        }
    }

    pub fn node_claim(&self, name: &str) -> Option<&NodeClaim> {
        self.node_claims.get(name)
    }

    /// Records that the solver placed `pod` on a claim already in flight.
    pub fn nominate(&mut self, pod: ObjectKey, claim: &str) {
        self.nominations.insert(pod, claim.to_owned());
    }

    /// The claim `pod` is nominated to, if any.
    pub fn nomination(&self, pod: &ObjectKey) -> Option<&str> {
        self.nominations.get(pod).map(String::as_str)
    }

    pub fn pod(&self, key: &ObjectKey) -> Option<&Pod> {
        self.pods.get(key)
    }

    pub fn node_pool(&self, name: &str) -> Option<&NodePool> {
        self.node_pools.get(name)
    }

    /// Claims launched by this scheduler and not yet reported by the watcher.
    pub fn launches_unreported(&self) -> usize {
        self.launched.len()
    }

    /// Forgets a launch that did not happen: its pods are pending again.
    pub fn forget_claim(&mut self, claim: &str) {
        self.launched.remove(claim);
        self.nominations.retain(|_, c| c != claim);
    }

    pub fn node_pools(&self) -> impl Iterator<Item = &NodePool> {
        self.node_pools.values()
    }

    /// Pods waiting for capacity: marked Unschedulable by the kube-scheduler, unbound, not
    /// finished, not being deleted... and not already nominated to a claim in flight.
    pub fn pending(&self) -> impl Iterator<Item = &Pod> {
        self.pods.values().filter(|p| {
            p.unschedulable
                && p.node_name.is_none()
                && matches!(p.phase, PodPhase::Pending)
                && !self.nominations.contains_key(&p.key)
        })
    }

    /// A claim is in flight until its node is initialized.
    fn in_flight(c: &NodeClaim) -> bool {
        !c.deleting && !c.conditions.contains(&NodeClaimCondition::Initialized)
    }

    /// The solver's input: NodePools with the instance types the caller fetched for them
    /// (pools without are left out), nodes with their pods, claims in flight with the pods
    /// nominated to them, and the pending pods.
    pub fn input(
        &self,
        instance_types: &BTreeMap<String, Vec<InstanceType>>,
        now: SystemTime,
    ) -> SchedulingInput {
        let mut nodes: BTreeMap<&str, ExistingNode> = self
            .nodes
            .values()
            .map(|n| {
                (
                    n.name.as_str(),
                    ExistingNode {
                        node: n.clone(),
                        pods: Vec::new(),
                    },
                )
            })
            .collect();
        for p in self.pods.values() {
            if matches!(p.phase, PodPhase::Succeeded | PodPhase::Failed) {
                continue;
            }
            if let Some(n) = p.node_name.as_deref().and_then(|n| nodes.get_mut(n)) {
                n.pods.push(p.clone());
            }
        }
        // A claim's `requests` are the pods it was launched for. When none of them is
        // nominated here (a scheduler restarted, whose nominations died with it), those pods
        // are pending again in this model: counting their requests as well would fill the
        // claim with pods that are not coming and launch a second claim for them. Such a
        // claim offers its whole allocatable instead, and the pending pods fill it first.
        let nominated: std::collections::BTreeSet<&str> =
            self.nominations.values().map(String::as_str).collect();
        let mut claims: BTreeMap<&str, InFlightClaim> = self
            .node_claims
            .values()
            .chain(self.launched.values())
            .filter(|c| Self::in_flight(c))
            .map(|c| {
                let mut node_claim = c.clone();
                if !nominated.contains(c.name.as_str()) {
                    node_claim.requests = crate::model::Resources::new();
                }
                (
                    c.name.as_str(),
                    InFlightClaim {
                        node_claim,
                        pods: Vec::new(),
                    },
                )
            })
            .collect();
        // The nominated pods go with their claim, not with the pending ones: the solver does
        // not place them again, but counts them in topology on the claim.
        for (pod, claim) in &self.nominations {
            if let (Some(c), Some(p)) = (claims.get_mut(claim.as_str()), self.pods.get(pod)) {
                c.pods.push(p.clone());
            }
        }
        SchedulingInput {
            now,
            node_pools: self
                .node_pools
                .values()
                .filter_map(|p| {
                    Some(NodePoolInput {
                        node_pool: p.clone(),
                        instance_types: instance_types.get(&p.name)?.clone(),
                    })
                })
                .collect(),
            nodes: nodes.into_values().collect(),
            node_claims: claims.into_values().collect(),
            daemon_sets: self.daemon_sets.values().cloned().collect(),
            pods: self.pending().cloned().collect(),
            pod_disruption_budgets: self.pdbs.values().cloned().collect(),
            namespaces: self.namespaces.values().cloned().collect(),
        }
    }
}

/// The NodeClaim to launch for a solver's new claim of `pool`, named `name`.
pub fn node_claim_for(
    new: &NewNodeClaim,
    pool: &NodePool,
    name: &str,
    now: SystemTime,
) -> NodeClaim {
    let mut claim = NodeClaim::new(name, &pool.name, pool.node_class_ref.clone());
    claim.labels = new.labels.clone();
    claim.annotations = pool.annotations.clone();
    claim
        .annotations
        .extend(crate::disruption::hash_annotations(pool));
    claim.requirements = new.requirements.clone();
    claim.taints = new.taints.clone();
    claim.startup_taints = new.startup_taints.clone();
    claim.requests = new.requests.clone();
    claim.expire_after = pool.expire_after;
    claim.termination_grace_period = pool.termination_grace_period;
    claim.created_at = now;
    claim
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::NodeClassRef;

    fn batch(sequence: u64, kind: BatchKind, changes: Vec<Change>) -> Batch {
        Batch {
            sequence,
            kind,
            changes,
        }
    }

    fn pending(name: &str) -> Change {
        let mut p = Pod::new("ci", name);
        p.unschedulable = true;
        Change::Upsert(Object::Pod(p))
    }

    fn claim(name: &str) -> NodeClaim {
        NodeClaim::new(
            name,
            "gitlab",
            NodeClassRef {
                group: "karpenter.k8s.aws".into(),
                kind: "EC2NodeClass".into(),
                name: "default".into(),
            },
        )
    }

    #[test]
    fn a_snapshot_replaces_the_model_and_deltas_follow_in_order() {
        let mut m = ClusterModel::default();
        assert_eq!(
            m.apply(batch(1, BatchKind::Delta, vec![])),
            Err(SyncError::DeltaBeforeSnapshot { sequence: 1 })
        );
        m.apply(batch(1, BatchKind::Snapshot, vec![pending("a")]))
            .unwrap();
        assert!(!m.synced(), "half a snapshot is not applied");
        assert_eq!(m.pending().count(), 0);
        m.apply(batch(2, BatchKind::SnapshotEnd, vec![pending("b")]))
            .unwrap();
        assert_eq!(m.pending().count(), 2);
        assert_eq!(
            m.apply(batch(4, BatchKind::Delta, vec![])),
            Err(SyncError::OutOfOrder {
                expected: 3,
                got: 4
            })
        );
        m.apply(batch(
            3,
            BatchKind::Delta,
            vec![Change::Delete {
                kind: ObjectKind::Pod,
                key: ObjectKey::new("ci", "a"),
            }],
        ))
        .unwrap();
        assert_eq!(m.acknowledged(), 3);
        let names: Vec<&str> = m.pending().map(|p| p.key.name.as_str()).collect();
        assert_eq!(names, ["b"]);
        // A new snapshot (a watcher restart) replaces everything.
        m.reset_stream();
        m.apply(batch(1, BatchKind::SnapshotEnd, vec![pending("c")]))
            .unwrap();
        let names: Vec<&str> = m.pending().map(|p| p.key.name.as_str()).collect();
        assert_eq!(names, ["c"]);
    }

    #[test]
    fn a_launch_counts_in_flight_before_the_watcher_reports_it() {
        let mut m = ClusterModel::default();
        m.apply(batch(
            1,
            BatchKind::SnapshotEnd,
            vec![pending("a"), pending("b")],
        ))
        .unwrap();
        m.record_launch(claim("gitlab-1"), &[ObjectKey::new("ci", "a")]);
        // An unrelated delta, then a whole new snapshot without the claim yet.
        m.apply(batch(2, BatchKind::Delta, vec![pending("c")]))
            .unwrap();
        m.reset_stream();
        m.apply(batch(
            1,
            BatchKind::SnapshotEnd,
            vec![pending("a"), pending("b"), pending("c")],
        ))
        .unwrap();
        let input = m.input(&BTreeMap::new(), SystemTime::UNIX_EPOCH);
        assert_eq!(input.node_claims.len(), 1, "still in flight");
        assert_eq!(input.pods.len(), 2, "a waits on its claim");
        // Reported, then the launch is forgotten when it failed.
        m.apply(batch(
            2,
            BatchKind::Delta,
            vec![Change::Upsert(Object::NodeClaim(claim("gitlab-1")))],
        ))
        .unwrap();
        assert_eq!(m.pending().count(), 2);
        m.forget_claim("gitlab-1");
        assert_eq!(m.pending().count(), 3);
    }

    #[test]
    fn after_a_restart_a_claim_in_flight_offers_its_room_to_the_pending_pods() {
        let mut launched = claim("gitlab-1");
        launched.requests = crate::model::Resources::from_iter([("cpu".to_owned(), 4000)]);
        let mut m = ClusterModel::default();
        // A new scheduler: the claim is in the snapshot, nothing is nominated to it.
        m.apply(batch(
            1,
            BatchKind::SnapshotEnd,
            vec![
                pending("a"),
                Change::Upsert(Object::NodeClaim(launched.clone())),
            ],
        ))
        .unwrap();
        let input = m.input(&BTreeMap::new(), SystemTime::UNIX_EPOCH);
        assert!(input.node_claims[0].node_claim.requests.is_empty());
        assert_eq!(input.pods.len(), 1);
        // The scheduler that launched it knows its pods: their requests stay counted.
        m.nominate(ObjectKey::new("ci", "a"), "gitlab-1");
        let input = m.input(&BTreeMap::new(), SystemTime::UNIX_EPOCH);
        assert_eq!(input.node_claims[0].node_claim.requests.get("cpu"), 4000);
    }

    #[test]
    fn nominated_pods_wait_on_their_claim_until_it_fails_or_they_bind() {
        let mut m = ClusterModel::default();
        m.apply(batch(
            1,
            BatchKind::SnapshotEnd,
            vec![
                pending("a"),
                Change::Upsert(Object::NodeClaim(claim("gitlab-1"))),
            ],
        ))
        .unwrap();
        m.record_launch(claim("gitlab-1"), &[ObjectKey::new("ci", "a")]);
        assert_eq!(m.pending().count(), 0);
        let input = m.input(&BTreeMap::new(), SystemTime::UNIX_EPOCH);
        assert_eq!(input.node_claims.len(), 1);
        let nominated: Vec<&ObjectKey> = input.node_claims[0].pods.iter().map(|p| &p.key).collect();
        assert_eq!(nominated, [&ObjectKey::new("ci", "a")]);
        assert!(input.pods.is_empty());
        // The claim disappears (its launch failed): the pod is pending again.
        m.apply(batch(
            2,
            BatchKind::Delta,
            vec![Change::Delete {
                kind: ObjectKind::NodeClaim,
                key: ObjectKey::new("", "gitlab-1"),
            }],
        ))
        .unwrap();
        assert_eq!(m.pending().count(), 1);
        // A pod nominated to a claim whose node came up without room for it (others took
        // the space) is pending again once the claim is initialized.
        m.record_launch(claim("gitlab-3"), &[ObjectKey::new("ci", "a")]);
        assert_eq!(m.pending().count(), 0);
        let mut up = claim("gitlab-3");
        up.conditions.insert(NodeClaimCondition::Initialized);
        m.apply(batch(
            3,
            BatchKind::Delta,
            vec![Change::Upsert(Object::NodeClaim(up))],
        ))
        .unwrap();
        assert_eq!(m.pending().count(), 1);
        // An initialized claim is a node, not capacity in flight.
        let mut done = claim("gitlab-2");
        done.conditions.insert(NodeClaimCondition::Initialized);
        m.apply(batch(
            4,
            BatchKind::Delta,
            vec![Change::Upsert(Object::NodeClaim(done))],
        ))
        .unwrap();
        assert!(
            m.input(&BTreeMap::new(), SystemTime::UNIX_EPOCH)
                .node_claims
                .is_empty()
        );
    }
}
