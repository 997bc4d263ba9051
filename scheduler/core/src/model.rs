//! The domain model: plain structs for everything scheduling reasons about.
//!
//! These are what the watcher streams (as `berth.v1` messages, converted with `TryFrom` in
//! `berth-proto`), what the scheduler's cluster model holds, and what the solver reads. They are
//! "slim": only the fields scheduling needs, already normalised (quantities as milli-units,
//! enums instead of strings), so that the solver never parses anything.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

/// Label or annotation map, ordered so that output is deterministic.
pub type Labels = BTreeMap<String, String>;

/// Well-known resource names.
pub mod resource {
    pub const CPU: &str = "cpu";
    pub const MEMORY: &str = "memory";
    pub const PODS: &str = "pods";
    pub const EPHEMERAL_STORAGE: &str = "ephemeral-storage";
    pub const NVIDIA_GPU: &str = "nvidia.com/gpu";
    pub const AMD_GPU: &str = "amd.com/gpu";
    pub const AWS_NEURON: &str = "aws.amazon.com/neuron";
    pub const AWS_EFA: &str = "vpc.amazonaws.com/efa";
    /// Prefix of hugepage resources, e.g. `hugepages-2Mi`.
    pub const HUGEPAGES_PREFIX: &str = "hugepages-";
    /// Karpenter's limit on the number of nodes a NodePool may own.
    pub const NODES: &str = "nodes";
}

/// Amounts of resources in milli-units (see [`crate::quantity`]), keyed by resource name.
/// Absent means zero.
///
/// NB: cpu, ephemeral-storage, memory and pods live in a fixed array so that the solver's hot
/// path (clone, add, compare) allocates nothing for them; other resources go to a map that is
/// usually empty.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Resources {
    core: [i64; 4],
    extended: BTreeMap<String, i64>,
}

/// The resources held inline, in name order.
const CORE: [&str; 4] = [
    resource::CPU,
    resource::EPHEMERAL_STORAGE,
    resource::MEMORY,
    resource::PODS,
];

fn core_index(name: &str) -> Option<usize> {
    CORE.iter().position(|c| *c == name)
}

impl Resources {
    pub fn new() -> Self {
        Self::default()
    }

    /// Builder: sets `name` to `milli`.
    #[must_use]
    pub fn with(mut self, name: &str, milli: i64) -> Self {
        self.set(name, milli);
        self
    }

    pub fn get(&self, name: &str) -> i64 {
        match core_index(name) {
            Some(i) => self.core[i],
            None => self.extended.get(name).copied().unwrap_or(0),
        }
    }

    /// Sets `name`; setting zero removes the entry, so equal amounts compare equal.
    pub fn set(&mut self, name: &str, milli: i64) {
        match core_index(name) {
            Some(i) => self.core[i] = milli,
            None if milli == 0 => {
                self.extended.remove(name);
            }
            None => {
                self.extended.insert(name.to_owned(), milli);
            }
        }
    }

    /// Non-zero amounts: the core resources first, then the others by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, i64)> {
        CORE.iter()
            .zip(self.core)
            .filter(|(_, v)| *v != 0)
            .map(|(k, v)| (*k, v))
            .chain(self.extended.iter().map(|(k, v)| (k.as_str(), *v)))
    }

    pub fn is_empty(&self) -> bool {
        self.core.iter().all(|v| *v == 0) && self.extended.is_empty()
    }

    /// `self += other`, per resource.
    pub fn add(&mut self, other: &Resources) {
        for i in 0..CORE.len() {
            self.core[i] += other.core[i];
        }
        for (k, v) in &other.extended {
            let sum = self.get(k) + v;
            self.set(k, sum);
        }
    }

    /// `self -= other`, per resource (may go negative).
    pub fn sub(&mut self, other: &Resources) {
        for i in 0..CORE.len() {
            self.core[i] -= other.core[i];
        }
        for (k, v) in &other.extended {
            let diff = self.get(k) - v;
            self.set(k, diff);
        }
    }

    /// Whether every amount of `self` is at most `available`'s.
    pub fn fits_in(&self, available: &Resources) -> bool {
        (0..CORE.len()).all(|i| self.core[i] <= available.core[i])
            && self.extended.iter().all(|(k, v)| *v <= available.get(k))
    }

    /// Whether `self + extra` fits in `available`, without building the sum.
    pub fn fits_with(&self, extra: &Resources, available: &Resources) -> bool {
        (0..CORE.len()).all(|i| self.core[i] + extra.core[i] <= available.core[i])
            && self
                .extended
                .iter()
                .all(|(k, v)| v + extra.get(k) <= available.get(k))
            && extra
                .extended
                .iter()
                .all(|(k, v)| v + self.get(k) <= available.get(k))
    }
}

impl std::fmt::Debug for Resources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl FromIterator<(String, i64)> for Resources {
    fn from_iter<I: IntoIterator<Item = (String, i64)>>(iter: I) -> Self {
        let mut resources = Resources::new();
        for (name, milli) in iter {
            resources.set(&name, milli);
        }
        resources
    }
}

/// Operators of a node selector requirement, Karpenter's set (Kubernetes' plus `Gte`/`Lte`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
    Gt,
    Lt,
    Gte,
    Lte,
}

impl Operator {
    /// The spelling used in Kubernetes manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            Operator::In => "In",
            Operator::NotIn => "NotIn",
            Operator::Exists => "Exists",
            Operator::DoesNotExist => "DoesNotExist",
            Operator::Gt => "Gt",
            Operator::Lt => "Lt",
            Operator::Gte => "Gte",
            Operator::Lte => "Lte",
        }
    }
}

/// A node selector requirement: `key operator values`, optionally asking that at least
/// `min_values` distinct values of `key` stay possible (Karpenter's flexibility guard).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    pub key: String,
    pub operator: Operator,
    pub values: Vec<String>,
    pub min_values: Option<u32>,
}

impl Requirement {
    pub fn new(key: &str, operator: Operator, values: &[&str]) -> Self {
        Self {
            key: key.to_owned(),
            operator,
            values: values.iter().map(|v| (*v).to_owned()).collect(),
            min_values: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TaintEffect {
    NoSchedule,
    PreferNoSchedule,
    NoExecute,
}

impl TaintEffect {
    /// Kubernetes' spelling (`NoSchedule`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            TaintEffect::NoSchedule => "NoSchedule",
            TaintEffect::PreferNoSchedule => "PreferNoSchedule",
            TaintEffect::NoExecute => "NoExecute",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taint {
    pub key: String,
    pub value: String,
    pub effect: TaintEffect,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TolerationOperator {
    Equal,
    Exists,
}

/// A pod's toleration. An empty `key` with `Exists` tolerates every taint; `effect: None`
/// matches every effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Toleration {
    pub key: String,
    pub operator: TolerationOperator,
    pub value: String,
    pub effect: Option<TaintEffect>,
    pub toleration_seconds: Option<i64>,
}

/// One term of a node selector: all its requirements must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeSelectorTerm {
    pub match_expressions: Vec<Requirement>,
    pub match_fields: Vec<Requirement>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreferredSchedulingTerm {
    pub weight: i32,
    pub term: NodeSelectorTerm,
}

/// Node affinity. `required` is an OR of terms; empty means no requirement.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeAffinity {
    pub required: Vec<NodeSelectorTerm>,
    pub preferred: Vec<PreferredSchedulingTerm>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelectorOperator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectorRequirement {
    pub key: String,
    pub operator: SelectorOperator,
    pub values: Vec<String>,
}

/// A label selector. An empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    pub match_labels: Labels,
    pub match_expressions: Vec<SelectorRequirement>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenUnsatisfiable {
    DoNotSchedule,
    ScheduleAnyway,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeInclusionPolicy {
    Honor,
    Ignore,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopologySpreadConstraint {
    pub max_skew: i32,
    pub topology_key: String,
    pub when_unsatisfiable: WhenUnsatisfiable,
    pub label_selector: Option<LabelSelector>,
    pub min_domains: Option<i32>,
    pub match_label_keys: Vec<String>,
    /// Kubernetes' default is `Honor`.
    pub node_affinity_policy: NodeInclusionPolicy,
    /// Kubernetes' default is `Ignore`.
    pub node_taints_policy: NodeInclusionPolicy,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodAffinityTerm {
    pub label_selector: Option<LabelSelector>,
    /// Empty together with no `namespace_selector` means "the pod's own namespace".
    pub namespaces: Vec<String>,
    pub namespace_selector: Option<LabelSelector>,
    pub topology_key: String,
    pub match_label_keys: Vec<String>,
    pub mismatch_label_keys: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightedPodAffinityTerm {
    pub weight: i32,
    pub term: PodAffinityTerm,
}

/// Pod affinity or anti-affinity (the same shape serves both).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodAffinity {
    pub required: Vec<PodAffinityTerm>,
    pub preferred: Vec<WeightedPodAffinityTerm>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

/// A container port bound on the host. Two pods with the same (ip, port, protocol) conflict;
/// an empty or `0.0.0.0` ip conflicts with every ip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    pub ip: String,
    pub port: u16,
    pub protocol: Protocol,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InitContainer {
    pub requests: Resources,
    /// A restartable ("sidecar") init container: `restartPolicy: Always`. It keeps running
    /// beside the app containers, so its requests add to theirs.
    pub sidecar: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PodPhase {
    Pending,
    Running,
    Succeeded,
    Failed,
    Unknown,
}

/// Namespace and name of a namespaced object.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn new(namespace: &str, name: &str) -> Self {
        Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerReference {
    pub kind: String,
    pub name: String,
    pub uid: String,
}

/// A pod, as scheduling sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pod {
    pub key: ObjectKey,
    pub uid: String,
    pub labels: Labels,
    /// The controlling owner (ReplicaSet, Job, StatefulSet, DaemonSet, ...), if any.
    pub owner: Option<OwnerReference>,
    pub priority: i32,
    /// Requests of each app container.
    pub containers: Vec<Resources>,
    pub init_containers: Vec<InitContainer>,
    /// RuntimeClass pod overhead.
    pub overhead: Resources,
    pub node_selector: Labels,
    pub node_affinity: Option<NodeAffinity>,
    pub tolerations: Vec<Toleration>,
    pub topology_spread: Vec<TopologySpreadConstraint>,
    pub pod_affinity: Option<PodAffinity>,
    pub pod_anti_affinity: Option<PodAffinity>,
    /// Requirements that the pod's volumes impose (zonal PVs, allowed topologies); all must hold.
    pub volume_requirements: Vec<Requirement>,
    pub host_ports: Vec<HostPort>,
    /// `karpenter.sh/do-not-disrupt: "true"`.
    pub do_not_disrupt: bool,
    pub phase: PodPhase,
    /// The node it is bound to, if any.
    pub node_name: Option<String>,
    /// The NodeClaim Berth nominated it to, if any.
    pub nominated_node_claim: Option<String>,
    /// The kube-scheduler marked it `PodScheduled=False, reason=Unschedulable`.
    pub unschedulable: bool,
    pub created_at: SystemTime,
}

impl Pod {
    /// A pending pod with no requests or constraints; fill in what a test needs.
    pub fn new(namespace: &str, name: &str) -> Self {
        Self {
            key: ObjectKey::new(namespace, name),
            uid: format!("uid-{namespace}-{name}"),
            labels: Labels::new(),
            owner: None,
            priority: 0,
            containers: Vec::new(),
            init_containers: Vec::new(),
            overhead: Resources::new(),
            node_selector: Labels::new(),
            node_affinity: None,
            tolerations: Vec::new(),
            topology_spread: Vec::new(),
            pod_affinity: None,
            pod_anti_affinity: None,
            volume_requirements: Vec::new(),
            host_ports: Vec::new(),
            do_not_disrupt: false,
            phase: PodPhase::Pending,
            node_name: None,
            nominated_node_claim: None,
            unschedulable: false,
            created_at: SystemTime::UNIX_EPOCH,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    pub name: String,
    pub labels: Labels,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    /// Empty until the cloud has reported it.
    pub provider_id: String,
    pub labels: Labels,
    pub taints: Vec<Taint>,
    pub capacity: Resources,
    pub allocatable: Resources,
    pub ready: bool,
    /// Cordoned (`spec.unschedulable`).
    pub unschedulable: bool,
    /// Has a deletionTimestamp.
    pub deleting: bool,
    /// Annotated `karpenter.sh/do-not-disrupt: "true"`.
    pub do_not_disrupt: bool,
    pub created_at: SystemTime,
}

/// Reference from a NodePool or NodeClaim to its cloud-specific node class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeClassRef {
    pub group: String,
    pub kind: String,
    pub name: String,
}

/// NodeClaim status conditions that are currently true.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NodeClaimCondition {
    Launched,
    Registered,
    Initialized,
    Ready,
    Drifted,
    Consolidatable,
    Drained,
    InstanceTerminating,
}

/// A NodeClaim: a request for one node, and what became of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeClaim {
    pub name: String,
    pub node_pool: String,
    pub labels: Labels,
    pub annotations: Labels,
    pub requirements: Vec<Requirement>,
    pub taints: Vec<Taint>,
    pub startup_taints: Vec<Taint>,
    /// What the pods nominated to it request (plus DaemonSet overhead).
    pub requests: Resources,
    pub node_class_ref: NodeClassRef,
    pub expire_after: Option<Duration>,
    pub termination_grace_period: Option<Duration>,
    pub provider_id: String,
    pub node_name: String,
    pub image_id: String,
    pub capacity: Resources,
    pub allocatable: Resources,
    pub conditions: BTreeSet<NodeClaimCondition>,
    pub deleting: bool,
    pub created_at: SystemTime,
}

impl NodeClaim {
    /// A NodeClaim with a name and NodePool and nothing else; fill in what a test needs.
    pub fn new(name: &str, node_pool: &str, node_class_ref: NodeClassRef) -> Self {
        Self {
            name: name.to_owned(),
            node_pool: node_pool.to_owned(),
            labels: Labels::new(),
            annotations: Labels::new(),
            requirements: Vec::new(),
            taints: Vec::new(),
            startup_taints: Vec::new(),
            requests: Resources::new(),
            node_class_ref,
            expire_after: None,
            termination_grace_period: None,
            provider_id: String::new(),
            node_name: String::new(),
            image_id: String::new(),
            capacity: Resources::new(),
            allocatable: Resources::new(),
            conditions: BTreeSet::new(),
            deleting: false,
            created_at: SystemTime::UNIX_EPOCH,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsolidationPolicy {
    WhenEmpty,
    WhenEmptyOrUnderutilized,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DisruptionReason {
    Underutilized,
    Empty,
    Drifted,
}

/// How many nodes a disruption budget lets go at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetNodes {
    /// A percentage (0..=100) of the NodePool's nodes, rounded up.
    Percent(u8),
    Count(u32),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budget {
    pub nodes: BudgetNodes,
    /// Empty means every reason.
    pub reasons: Vec<DisruptionReason>,
    /// A cron schedule (UTC) when the budget is active; `None` means always.
    pub schedule: Option<String>,
    pub duration: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disruption {
    pub consolidation_policy: ConsolidationPolicy,
    /// `None` is `Never`.
    pub consolidate_after: Option<Duration>,
    pub budgets: Vec<Budget>,
}

/// A NodePool, normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePool {
    pub name: String,
    /// Higher weight is tried first; Kubernetes' absent weight is 0.
    pub weight: i32,
    /// Labels and annotations that nodes from this pool get.
    pub labels: Labels,
    pub annotations: Labels,
    pub requirements: Vec<Requirement>,
    pub taints: Vec<Taint>,
    pub startup_taints: Vec<Taint>,
    pub node_class_ref: NodeClassRef,
    /// Upper bounds on the pool's total capacity, including `nodes`.
    pub limits: Resources,
    /// `None` is `Never`.
    pub expire_after: Option<Duration>,
    pub termination_grace_period: Option<Duration>,
    pub disruption: Disruption,
    /// The pool and its node class are ready to launch into.
    pub ready: bool,
    /// Why not, when `ready` is false.
    pub not_ready_reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonSet {
    pub key: ObjectKey,
    /// The pod template: requests, selectors, affinity and tolerations are what matter.
    pub template: Pod,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodDisruptionBudget {
    pub key: ObjectKey,
    pub selector: LabelSelector,
    /// From the PDB's status: how many matching pods may be evicted right now.
    pub disruptions_allowed: i32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CapacityType {
    OnDemand,
    Spot,
    Reserved,
}

impl CapacityType {
    /// The `karpenter.sh/capacity-type` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            CapacityType::OnDemand => crate::labels::CAPACITY_TYPE_ON_DEMAND,
            CapacityType::Spot => crate::labels::CAPACITY_TYPE_SPOT,
            CapacityType::Reserved => crate::labels::CAPACITY_TYPE_RESERVED,
        }
    }
}

/// Where and how an instance type can be bought, and at what price.
#[derive(Debug, Clone, PartialEq)]
pub struct Offering {
    pub zone: String,
    pub capacity_type: CapacityType,
    /// USD per hour.
    pub price: f64,
    /// False when the cloud recently reported no capacity here.
    pub available: bool,
}

/// What the cloud and kubelet keep back from a node's capacity.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overhead {
    pub kube_reserved: Resources,
    pub system_reserved: Resources,
    pub eviction_threshold: Resources,
}

/// An instance type a NodePool may launch.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceType {
    pub name: String,
    /// Its well-known labels as requirements (`node.kubernetes.io/instance-type In [m5.large]`,
    /// `karpenter.k8s.aws/instance-cpu In [2]`, ...).
    pub requirements: Vec<Requirement>,
    pub capacity: Resources,
    pub overhead: Overhead,
    /// Every offering, available or not.
    pub offerings: Vec<Offering>,
}

impl InstanceType {
    /// Capacity minus every overhead, never below zero.
    pub fn allocatable(&self) -> Resources {
        self.capacity
            .iter()
            .map(|(name, capacity)| {
                let reserved = self.overhead.kube_reserved.get(name)
                    + self.overhead.system_reserved.get(name)
                    + self.overhead.eviction_threshold.get(name);
                (name.to_owned(), (capacity - reserved).max(0))
            })
            .collect()
    }
}

/// Where an instance is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum InstanceState {
    /// Launched, not booted yet.
    Pending,
    Running,
    /// Termination requested, not finished.
    ShuttingDown,
}

/// An instance the cloud launched for a NodeClaim.
#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    pub node_claim: String,
    pub node_pool: String,
    /// `aws:///us-east-1a/i-0123...` on EC2, `sim:///zone/i-...` in the sim cloud.
    pub provider_id: String,
    pub instance_type: String,
    pub zone: String,
    pub capacity_type: CapacityType,
    pub image_id: String,
    pub capacity: Resources,
    pub allocatable: Resources,
    /// Labels the node will carry (instance facts, zone, capacity type, ...).
    pub labels: Labels,
    /// USD per hour of the offering it was launched into.
    pub price: f64,
    pub state: InstanceState,
    pub launched_at: SystemTime,
}

/// What became of a `Terminate` request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TerminationState {
    /// Shutting down; ask again.
    Terminating,
    /// Gone (or never existed).
    Terminated,
}
