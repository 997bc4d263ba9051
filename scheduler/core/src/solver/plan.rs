//! The solver's input and its result: the cluster a decision looks at, and the [`Plan`].

use std::time::SystemTime;

use crate::model::{
    CapacityType, DaemonSet, InstanceType, Labels, Namespace, Node, NodeClaim, NodePool, ObjectKey,
    Pod, PodDisruptionBudget, Requirement, Resources, Taint,
};
use crate::sync::NominationTarget;

/// At most this many instance types are kept per new NodeClaim (EC2 Fleet's limit on overrides
/// makes more pointless).
pub const MAX_INSTANCE_TYPES: usize = 60;

/// Everything one scheduling decision looks at.
#[derive(Debug, Clone)]
pub struct SchedulingInput {
    /// The decision's time (nothing reads a clock).
    pub now: SystemTime,
    pub node_pools: Vec<NodePoolInput>,
    pub nodes: Vec<ExistingNode>,
    pub node_claims: Vec<InFlightClaim>,
    pub daemon_sets: Vec<DaemonSet>,
    /// Pods to place. Bound pods belong in [`ExistingNode::pods`], pods nominated to an
    /// in-flight claim in [`InFlightClaim::pods`]; a pod listed here as well that is nominated
    /// to an in-flight claim stays placed there (the plan repeats its placement).
    pub pods: Vec<Pod>,
    pub pod_disruption_budgets: Vec<PodDisruptionBudget>,
    pub namespaces: Vec<Namespace>,
}

/// A NodePool and the instance types it may launch (from the cloud provider).
#[derive(Debug, Clone)]
pub struct NodePoolInput {
    pub node_pool: NodePool,
    pub instance_types: Vec<InstanceType>,
}

/// A node and the pods bound to it.
#[derive(Debug, Clone)]
pub struct ExistingNode {
    pub node: Node,
    pub pods: Vec<Pod>,
}

/// A NodeClaim that exists but whose node is not yet initialized, and the pods nominated to it.
#[derive(Debug, Clone)]
pub struct InFlightClaim {
    pub node_claim: NodeClaim,
    /// The pods nominated to it. They are not placed again, but count in topology (spread,
    /// affinity, anti-affinity) on the claim as bound pods do on their node: in the domains
    /// the claim's labels and single-valued requirements pin (see [`solve`](super::solve)).
    pub pods: Vec<Pod>,
}

/// What the solver decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub new_node_claims: Vec<NewNodeClaim>,
    /// Pods going to existing nodes or in-flight NodeClaims.
    pub placements: Vec<Placement>,
    pub unschedulable: Vec<crate::sync::Unschedulable>,
    pub stats: SolveStats,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub pod: ObjectKey,
    pub target: NominationTarget,
}

/// A NodeClaim to launch.
#[derive(Debug, Clone, PartialEq)]
pub struct NewNodeClaim {
    pub node_pool: String,
    /// The NodePool's requirements narrowed by its pods', plus `instance-type In [options]`.
    pub requirements: Vec<Requirement>,
    /// Labels the node will carry for certain (template labels, single-valued requirements).
    pub labels: Labels,
    pub taints: Vec<Taint>,
    pub startup_taints: Vec<Taint>,
    /// Compatible instance types, cheapest first, at most [`MAX_INSTANCE_TYPES`].
    pub instance_types: Vec<InstanceTypeOption>,
    pub pods: Vec<ObjectKey>,
    /// The pods' requests plus the DaemonSet pods that will run there (for the cheapest type).
    pub requests: Resources,
    /// Expected USD/hour: the cheapest compatible offering.
    pub price: f64,
}

/// One instance type a new claim may be launched as, with its cheapest compatible offering.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceTypeOption {
    pub name: String,
    pub price: f64,
    pub zone: String,
    pub capacity_type: CapacityType,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct SolveStats {
    pub pods: usize,
    pub classes: usize,
    pub placed_on_nodes: usize,
    pub placed_on_in_flight: usize,
    pub placed_on_new: usize,
    pub unschedulable: usize,
    pub new_node_claims: usize,
    /// USD/hour of the new claims.
    pub new_price: f64,
    pub duration_micros: u128,
}
