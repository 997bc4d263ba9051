//! The provisioning solver: which pending pods go to existing nodes, which to NodeClaims in
//! flight, and which new NodeClaims to launch.
//!
//! ```text
//!  pending pods ──group──> classes (same scheduling needs, with a count)
//!       │   ordered by priority, then size (largest first)
//!       v
//!  for each pod:  existing nodes ──> in-flight NodeClaims ──> open new claims ──> a new claim
//!                 (first fit)        (first fit)              (narrowing types)   (NodePools by weight)
//!       │
//!       v
//!  Plan { new claims (types cheapest first, ≤ 60), placements, unschedulable + reasons, stats }
//! ```
//!
//! A new claim starts allowing every instance type of its NodePool that is compatible and within
//! limits; each pod added narrows the set to types it still fits, so claims fill the largest
//! types first and the final choice is the cheapest type that holds what was packed. Pods of one
//! class behave identically, so a class keeps a cursor over nodes and claims: one that refused a
//! pod of the class refuses the rest (it only gets fuller), which keeps the work linear.
//!
//! Deterministic: the same input gives the same plan (every order is total).

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Instant, SystemTime};

use crate::labels;
use crate::model::{
    CapacityType, DaemonSet, HostPort, InstanceType, Labels, Namespace, Node, NodeClaim, NodePool,
    ObjectKey, Pod, PodDisruptionBudget, PodPhase, Requirement, Resources, Taint, resource,
};
use crate::pod::{
    self, add, effective_requests, fits, host_ports_conflict, requirement_alternatives, untolerated,
};
use crate::quantity::Milli;
use crate::requirements::{Requirements, ValueSet};
use crate::sync::NominationTarget;
use crate::topology::{self, Constraint, DomainId, Gate, KeyId, NodeFacts, Topology};

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
    /// the claim's labels and single-valued requirements pin (see [`solve`]).
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

// ---- preparation --------------------------------------------------------------------------------

/// An instance type as one NodePool sees it.
struct PoolType {
    index: usize,
    /// Template ∩ the type's own requirements ∩ its available offerings' zones/capacity types.
    reqs: Requirements,
    /// Allocatable less the DaemonSet pods that would run on it.
    room: Resources,
    capacity: Resources,
    daemon_overhead: Resources,
    /// The cheapest available offering the NodePool allows (USD/hour).
    price: f64,
}

struct PreparedPool {
    input: usize,
    template: Requirements,
    types: Vec<PoolType>,
    /// Limits (milli) and what is already charged against them outside this solve.
    limits: Resources,
    used: Resources,
}

/// A pod, preprocessed.
struct PodInfo {
    requests: Resources,
    alternatives: Vec<Requirements>,
}

/// A new NodeClaim being packed.
struct OpenClaim {
    pool: usize,
    /// Intersection of the chosen requirement alternatives of its pods.
    reqs: Requirements,
    /// Indexes into the pool's `types` still possible, in pool order.
    options: Vec<usize>,
    pods: Vec<usize>,
    requests: Resources,
    host_ports: Vec<HostPort>,
    /// What it charges against its pool's limits: per resource the max over its options.
    charge: Resources,
    /// Per resource the most room any option has (a quick upper bound for fitting). It is
    /// recomputed only when the options halve: over a superset of the options it is still an
    /// upper bound.
    max_room: Resources,
    /// How many options `max_room` was computed over.
    max_room_of: usize,
    /// The claim's hostname domain (`new:<index>`), interned.
    host_id: DomainId,
    /// Per topology key (by id), the domain the claim's requirements or its pool's template
    /// pin, if any (see [`State::refresh_domains`]).
    domain_ids: Vec<Option<DomainId>>,
    /// The room of the type this claim is filled toward (see [`best_shape`]): pods that
    /// would outgrow it go to other claims, so nodes stay the cheapest shape for the workload.
    cap: Option<Resources>,
}

/// Among `options` of `pool` whose room holds `first`, the type that absorbs `demand` (in its
/// CPU:memory mix) at the lowest price per unit absorbed; its room.
fn best_shape(
    pool: &PreparedPool,
    options: &[usize],
    first: &Resources,
    demand: &Resources,
) -> Option<Resources> {
    options
        .iter()
        .map(|&o| &pool.types[o])
        .filter(|t| t.price.is_finite() && fits(first, &t.room))
        .map(|t| {
            let absorb = [resource::CPU, resource::MEMORY]
                .iter()
                .filter(|r| demand.get(r) > 0)
                .map(|r| t.room.get(r).max(0) as f64 / demand.get(r) as f64)
                .fold(f64::INFINITY, f64::min);
            (
                if absorb.is_finite() {
                    t.price / absorb.max(1e-12)
                } else {
                    t.price
                },
                t,
            )
        })
        // Equal cost per unit (within rounding): the larger type, which fragments less.
        .min_by(|a, b| {
            if (a.0 - b.0).abs() <= 1e-9 * a.0.abs().max(b.0.abs()) {
                b.1.room
                    .get(resource::CPU)
                    .cmp(&a.1.room.get(resource::CPU))
            } else {
                a.0.total_cmp(&b.0)
            }
        })
        .map(|(_, t)| t.room.clone())
}

/// Whether no pending pod could still join the claim.
fn claim_full(c: &OpenClaim, smallest: &Resources) -> bool {
    let mut need = c.requests.clone();
    add(&mut need, smallest);
    !fits(&need, &c.max_room)
}

/// Per resource, the largest room among `options`.
fn max_room(pool: &PreparedPool, options: &[usize]) -> Resources {
    let mut out = Resources::new();
    for &o in options {
        for (name, v) in pool.types[o].room.iter() {
            if v > out.get(name) {
                out.set(name, v);
            }
        }
    }
    out
}

/// Capacity already in use on an existing node or in-flight claim.
struct Bin {
    target: NominationTarget,
    /// Index into `input.nodes` for a node.
    node: Option<usize>,
    /// The labels topology domains are read from (hostname included).
    domains: Labels,
    /// Allocatable (for a claim whose type is unknown, the smallest compatible type's).
    capacity: Resources,
    labels_reqs: Requirements,
    taints: Vec<Taint>,
    free: Resources,
    host_ports: Vec<HostPort>,
    usable: bool,
    /// `domains` per topology key id (filled once the keys are known).
    domain_ids: Vec<Option<DomainId>>,
}

fn offering_reqs(it: &InstanceType) -> Requirements {
    let available = it.offerings.iter().filter(|o| o.available);
    let zones: BTreeSet<String> = available.clone().map(|o| o.zone.clone()).collect();
    let capacity_types: BTreeSet<String> = available
        .map(|o| o.capacity_type.as_str().to_owned())
        .collect();
    let mut r = Requirements::from_requirements(&it.requirements);
    r.add(labels::TOPOLOGY_ZONE, ValueSet::one_of(zones));
    r.add(labels::CAPACITY_TYPE, ValueSet::one_of(capacity_types));
    r.add(labels::INSTANCE_TYPE, ValueSet::one_of([it.name.clone()]));
    r
}

fn template_reqs(np: &NodePool) -> Requirements {
    let mut r = Requirements::from_requirements(&np.requirements);
    for (k, v) in &np.labels {
        r.add(k, ValueSet::one_of([v.clone()]));
    }
    r.add(labels::NODE_POOL, ValueSet::one_of([np.name.clone()]));
    r
}

/// Whether a DaemonSet's pods would run on a node with these requirements and taints.
fn daemon_runs_on(ds: &DaemonSet, reqs: &Requirements, taints: &[Taint]) -> bool {
    untolerated(&ds.template.tolerations, taints).is_none()
        && requirement_alternatives(&ds.template)
            .iter()
            .any(|alt| reqs.admits(alt).is_ok())
}

/// Whether a DaemonSet's pods run on a node with these labels and taints (its selectors,
/// affinity and tolerations).
pub fn daemon_runs_on_labels(ds: &DaemonSet, labels: &Labels, taints: &[Taint]) -> bool {
    daemon_runs_on(ds, &Requirements::from_labels(labels), taints)
}

/// Pool capacity already in use: nodes and in-flight claims labelled with the pool.
fn pool_usage(input: &SchedulingInput, np: &NodePool, types: &[InstanceType]) -> Resources {
    let mut used = Resources::new();
    let nodes_with_claims: BTreeSet<&str> = input
        .node_claims
        .iter()
        .map(|c| c.node_claim.node_name.as_str())
        .filter(|n| !n.is_empty())
        .collect();
    for n in &input.nodes {
        if n.node.labels.get(labels::NODE_POOL) == Some(&np.name)
            && !nodes_with_claims.contains(n.node.name.as_str())
        {
            add(&mut used, &n.node.capacity);
            used.set(resource::NODES, used.get(resource::NODES) + 1000);
        }
    }
    for c in &input.node_claims {
        if c.node_claim.node_pool == np.name {
            add(&mut used, &in_flight_capacity(&c.node_claim, types, true));
            used.set(resource::NODES, used.get(resource::NODES) + 1000);
        }
    }
    used
}

/// An in-flight claim's capacity: its reported capacity, else the largest (for limits) or
/// smallest (for packing) compatible instance type's.
fn in_flight_capacity(c: &NodeClaim, types: &[InstanceType], largest: bool) -> Resources {
    if !c.capacity.is_empty() {
        return c.capacity.clone();
    }
    let reqs = Requirements::from_requirements(&c.requirements);
    let compatible = types
        .iter()
        .filter(|t| offering_reqs(t).intersect(&reqs).is_ok());
    let mut out: Option<Resources> = None;
    for t in compatible {
        out = Some(match out {
            None => t.capacity.clone(),
            Some(acc) => t
                .capacity
                .iter()
                .chain(acc.iter())
                .map(|(k, _)| {
                    let (a, b) = (acc.get(k), t.capacity.get(k));
                    (k.to_owned(), if largest { a.max(b) } else { a.min(b) })
                })
                .collect(),
        });
    }
    out.unwrap_or_default()
}

fn in_flight_allocatable(c: &NodeClaim, types: &[InstanceType]) -> Resources {
    if !c.allocatable.is_empty() {
        return c.allocatable.clone();
    }
    let reqs = Requirements::from_requirements(&c.requirements);
    let mut out: Option<Resources> = None;
    for t in types
        .iter()
        .filter(|t| offering_reqs(t).intersect(&reqs).is_ok())
    {
        let a = t.allocatable();
        out = Some(match out {
            None => a,
            Some(acc) => a
                .iter()
                .chain(acc.iter())
                .map(|(k, _)| (k.to_owned(), acc.get(k).min(a.get(k))))
                .collect(),
        });
    }
    out.unwrap_or_default()
}

fn prepare_pools(input: &SchedulingInput) -> Vec<PreparedPool> {
    let mut order: Vec<usize> = (0..input.node_pools.len()).collect();
    order.sort_by(|&a, &b| {
        let (pa, pb) = (
            &input.node_pools[a].node_pool,
            &input.node_pools[b].node_pool,
        );
        pb.weight
            .cmp(&pa.weight)
            .then_with(|| pa.name.cmp(&pb.name))
    });
    order
        .into_iter()
        .map(|i| {
            let npi = &input.node_pools[i];
            let np = &npi.node_pool;
            let template = template_reqs(np);
            let mut types = Vec::new();
            if np.ready {
                for (index, it) in npi.instance_types.iter().enumerate() {
                    let Ok(reqs) = template.intersect(&offering_reqs(it)) else {
                        continue;
                    };
                    let mut daemon_overhead = Resources::new();
                    for ds in &input.daemon_sets {
                        if daemon_runs_on(ds, &reqs, &np.taints) {
                            add(&mut daemon_overhead, &effective_requests(&ds.template));
                        }
                    }
                    let mut room = it.allocatable();
                    pod::sub(&mut room, &daemon_overhead);
                    let price = cheapest_offering(it, &reqs).map_or(f64::INFINITY, |o| o.0);
                    types.push(PoolType {
                        index,
                        reqs,
                        room,
                        capacity: it.capacity.clone(),
                        daemon_overhead,
                        price,
                    });
                }
                // Cheapest first, so that option lists come out ordered.
                types.sort_by(|a, b| {
                    let pa = cheapest_offering(&npi.instance_types[a.index], &a.reqs)
                        .map_or(f64::INFINITY, |o| o.0);
                    let pb = cheapest_offering(&npi.instance_types[b.index], &b.reqs)
                        .map_or(f64::INFINITY, |o| o.0);
                    pa.total_cmp(&pb).then_with(|| {
                        npi.instance_types[a.index]
                            .name
                            .cmp(&npi.instance_types[b.index].name)
                    })
                });
            }
            PreparedPool {
                input: i,
                template,
                types,
                limits: np.limits.clone(),
                used: pool_usage(input, np, &npi.instance_types),
            }
        })
        .collect()
}

/// The cheapest available offering of `it` that `reqs` allow: (price, zone, capacity type).
fn cheapest_offering(
    it: &InstanceType,
    reqs: &Requirements,
) -> Option<(f64, String, CapacityType)> {
    cheapest_offering_in(
        it,
        reqs.get(labels::TOPOLOGY_ZONE),
        reqs.get(labels::CAPACITY_TYPE),
    )
}

/// The cheapest available offering in the allowed zones and capacity types (`None`: any).
fn cheapest_offering_in(
    it: &InstanceType,
    zones: Option<&ValueSet>,
    capacity_types: Option<&ValueSet>,
) -> Option<(f64, String, CapacityType)> {
    cheapest_offering_ref(it, zones, capacity_types)
        .map(|o| (o.price, o.zone.clone(), o.capacity_type))
}

fn cheapest_offering_ref<'a>(
    it: &'a InstanceType,
    zones: Option<&ValueSet>,
    capacity_types: Option<&ValueSet>,
) -> Option<&'a crate::model::Offering> {
    it.offerings
        .iter()
        .filter(|o| o.available)
        .filter(|o| zones.is_none_or(|z| z.allows(Some(&o.zone))))
        .filter(|o| capacity_types.is_none_or(|c| c.allows(Some(o.capacity_type.as_str()))))
        .min_by(|a, b| {
            a.price
                .total_cmp(&b.price)
                .then_with(|| a.zone.cmp(&b.zone))
                .then_with(|| a.capacity_type.cmp(&b.capacity_type))
        })
}

/// What both sets of requirements allow for one key (`None`: neither constrains it);
/// borrowed when only one does.
fn key_values<'a>(
    a: &'a Requirements,
    b: &'a Requirements,
    key: &str,
) -> Option<std::borrow::Cow<'a, ValueSet>> {
    use std::borrow::Cow;
    match (a.get(key), b.get(key)) {
        (Some(x), Some(y)) if x == y => Some(Cow::Borrowed(x)),
        (Some(x), Some(y)) => Some(Cow::Owned(x.intersect(y))),
        (Some(x), None) | (None, Some(x)) => Some(Cow::Borrowed(x)),
        (None, None) => None,
    }
}

/// The bins of a solve: existing nodes, then in-flight claims.
struct Bins<'a> {
    bins: Vec<Bin>,
    /// Pods of [`SchedulingInput::pods`] nominated to an in-flight claim: its bin.
    nominated: BTreeMap<ObjectKey, usize>,
    /// Each in-flight claim with the bin its nominated pods run on: its own, or its node's
    /// once the node registered.
    in_flight: Vec<(usize, &'a InFlightClaim)>,
}

fn prepare_bins(input: &SchedulingInput) -> Bins<'_> {
    let mut bins = Vec::new();
    let mut nominated = BTreeMap::new();
    let mut in_flight = Vec::new();
    let mut node_bins: BTreeMap<&str, usize> = BTreeMap::new();
    let mut nodes: Vec<(usize, &ExistingNode)> = input.nodes.iter().enumerate().collect();
    nodes.sort_by(|a, b| a.1.node.name.cmp(&b.1.node.name));
    for (node_index, n) in nodes {
        node_bins.insert(n.node.name.as_str(), bins.len());
        let mut used = Resources::new();
        let mut host_ports = Vec::new();
        let running_daemons: BTreeSet<&str> = n
            .pods
            .iter()
            .filter_map(|p| pod::daemon_set_owner(p))
            .collect();
        for p in n
            .pods
            .iter()
            .filter(|p| !matches!(p.phase, PodPhase::Succeeded | PodPhase::Failed))
        {
            add(&mut used, &effective_requests(p));
            host_ports.extend(p.host_ports.iter().cloned());
        }
        for ds in &input.daemon_sets {
            if !running_daemons.contains(ds.key.name.as_str())
                && daemon_runs_on_labels(ds, &n.node.labels, &n.node.taints)
            {
                add(&mut used, &effective_requests(&ds.template));
                host_ports.extend(ds.template.host_ports.iter().cloned());
            }
        }
        let mut free = n.node.allocatable.clone();
        let capacity = free.clone();
        pod::sub(&mut free, &used);
        let mut domains = n.node.labels.clone();
        domains
            .entry(labels::HOSTNAME.to_owned())
            .or_insert_with(|| n.node.name.clone());
        bins.push(Bin {
            target: NominationTarget::Node(n.node.name.clone()),
            node: Some(node_index),
            domains,
            capacity,
            labels_reqs: Requirements::from_labels(&n.node.labels),
            taints: n.node.taints.clone(),
            free,
            host_ports,
            usable: n.node.ready && !n.node.unschedulable && !n.node.deleting,
            domain_ids: Vec::new(),
        });
    }
    let mut claims: Vec<&InFlightClaim> = input.node_claims.iter().collect();
    claims.sort_by(|a, b| a.node_claim.name.cmp(&b.node_claim.name));
    let types_of = |pool: &str| {
        input
            .node_pools
            .iter()
            .find(|p| p.node_pool.name == pool)
            .map(|p| p.instance_types.as_slice())
            .unwrap_or(&[])
    };
    for c in claims {
        let claim = &c.node_claim;
        // A claim whose node registered is an existing node now.
        if !claim.node_name.is_empty()
            && let Some(&bin) = node_bins.get(claim.node_name.as_str())
        {
            in_flight.push((bin, c));
            continue;
        }
        let mut free = in_flight_allocatable(claim, types_of(&claim.node_pool));
        let capacity = free.clone();
        pod::sub(&mut free, &claim.requests);
        for p in &c.pods {
            nominated.insert(p.key.clone(), bins.len());
        }
        in_flight.push((bins.len(), c));
        let mut reqs = Requirements::from_requirements(&claim.requirements);
        for (k, v) in &claim.labels {
            reqs.add(k, ValueSet::one_of([v.clone()]));
        }
        let mut domains = reqs.labels();
        domains.insert(
            labels::HOSTNAME.to_owned(),
            format!("nodeclaim:{}", claim.name),
        );
        bins.push(Bin {
            target: NominationTarget::NodeClaim(claim.name.clone()),
            node: None,
            domains,
            capacity,
            labels_reqs: reqs,
            taints: claim.taints.clone(),
            free,
            host_ports: Vec::new(),
            usable: !claim.deleting,
            domain_ids: Vec::new(),
        });
    }
    Bins {
        bins,
        nominated,
        in_flight,
    }
}

// ---- the solve ----------------------------------------------------------------------------------------

/// One way of scheduling a pod: its preferences, relaxed step by step (Karpenter's order:
/// preferred pod affinity, then preferred node affinity terms from the lightest, then
/// ScheduleAnyway spread, then tolerating PreferNoSchedule taints).
#[derive(Debug, Clone, PartialEq)]
struct View {
    alternatives: Vec<Requirements>,
    constraints: Vec<Constraint>,
    tolerate_prefer_no_schedule: bool,
    /// Topology keys whose domain must be known on a node this pod joins (filled in once
    /// every class's constraints are registered).
    pin_keys: Vec<String>,
    /// `pin_keys` but hostname, interned.
    pin_key_ids: Vec<KeyId>,
    /// The owned topology groups the pod counts in (filled in with `pin_keys`).
    owner_groups: Vec<usize>,
}

/// What all pods of a class share.
struct Class {
    pods: Vec<usize>,
    views: Vec<View>,
    /// Per view, per constraint: every domain the pod could go to (sorted).
    universes: Vec<Vec<Vec<DomainId>>>,
    /// Placement changes what later pods of the class may do (topology), so no cursor.
    topology: bool,
}

const NEW_NODE_DOMAIN: &str = "\u{0}new-node";

fn views_for(
    p: &Pod,
    base: &[Requirements],
    topo: &mut Topology,
    namespaces: &[Namespace],
) -> Vec<View> {
    let mut preferred_terms: Vec<&crate::model::PreferredSchedulingTerm> = p
        .node_affinity
        .as_ref()
        .map(|a| a.preferred.iter().collect())
        .unwrap_or_default();
    // Heaviest kept longest: relax from the lightest.
    preferred_terms.sort_by_key(|t| std::cmp::Reverse(t.weight));
    let with_terms = |n: usize| -> Vec<Requirements> {
        base.iter()
            .map(|alt| {
                let mut alt = alt.clone();
                for t in &preferred_terms[..n] {
                    for r in &t.term.match_expressions {
                        alt.add(&r.key, ValueSet::from_requirement(r));
                    }
                }
                alt
            })
            .collect()
    };
    let required = {
        let mut c = topo.spread_constraints(p, false);
        c.extend(topo.affinity_constraints(p, false, namespaces));
        c
    };
    let mut all_spread = topo.spread_constraints(p, true);
    let with_preferred_affinity = {
        let mut c = all_spread.clone();
        c.extend(topo.affinity_constraints(p, true, namespaces));
        c
    };
    all_spread.extend(topo.affinity_constraints(p, false, namespaces));
    let mut views = vec![View {
        alternatives: with_terms(preferred_terms.len()),
        constraints: with_preferred_affinity,
        tolerate_prefer_no_schedule: false,
        pin_keys: vec![],
        pin_key_ids: vec![],
        owner_groups: vec![],
    }];
    views.push(View {
        alternatives: with_terms(preferred_terms.len()),
        constraints: all_spread.clone(),
        tolerate_prefer_no_schedule: false,
        pin_keys: vec![],
        pin_key_ids: vec![],
        owner_groups: vec![],
    });
    for n in (0..preferred_terms.len()).rev() {
        views.push(View {
            alternatives: with_terms(n),
            constraints: all_spread.clone(),
            tolerate_prefer_no_schedule: false,
            pin_keys: vec![],
            pin_key_ids: vec![],
            owner_groups: vec![],
        });
    }
    views.push(View {
        alternatives: base.to_vec(),
        constraints: required.clone(),
        tolerate_prefer_no_schedule: false,
        pin_keys: vec![],
        pin_key_ids: vec![],
        owner_groups: vec![],
    });
    views.push(View {
        alternatives: base.to_vec(),
        constraints: required,
        tolerate_prefer_no_schedule: true,
        pin_keys: vec![],
        pin_key_ids: vec![],
        owner_groups: vec![],
    });
    views.dedup();
    views
}

/// Every domain of `key` the pod could be placed in under `view`.
///
/// Only the pod's required node constraints narrow it (`alternatives`), not its preferences:
/// Kubernetes counts spread domains over every node the pod may run on.
fn universe(
    input: &SchedulingInput,
    pools: &[PreparedPool],
    bins: &[Bin],
    p: &Pod,
    alternatives: &[Requirements],
    key: &str,
    c: &Constraint,
) -> BTreeSet<String> {
    let spread = input_spread(p, c, key);
    let mut out = BTreeSet::new();
    for b in bins.iter().filter(|b| b.usable) {
        let (honor_affinity, honor_taints) = spread;
        if honor_affinity
            && !alternatives
                .iter()
                .any(|alt| b.labels_reqs.admits(alt).is_ok())
        {
            continue;
        }
        if honor_taints && untolerated(&p.tolerations, &b.taints).is_some() {
            continue;
        }
        if let Some(d) = b.domains.get(key) {
            out.insert(d.clone());
        }
    }
    for pool in pools {
        let np = &input.node_pools[pool.input].node_pool;
        if untolerated(&p.tolerations, &np.taints).is_some() {
            continue;
        }
        if key == labels::HOSTNAME {
            if !pool.types.is_empty() {
                out.insert(NEW_NODE_DOMAIN.to_owned());
            }
            continue;
        }
        for t in &pool.types {
            for alt in alternatives {
                if t.reqs.admits(alt).is_ok()
                    && let Some(values) = key_values(&t.reqs, alt, key)
                    && let Some(values) = values.as_ref().finite_values()
                {
                    out.extend(values.iter().cloned());
                }
            }
        }
    }
    out
}

/// The node inclusion policies of the spread constraint behind `c` (affinity: honour both).
fn input_spread(p: &Pod, c: &Constraint, key: &str) -> (bool, bool) {
    use crate::model::NodeInclusionPolicy::Honor;
    match c {
        Constraint::Spread { .. } => p
            .topology_spread
            .iter()
            .find(|s| s.topology_key == key)
            .map_or((true, false), |s| {
                (
                    s.node_affinity_policy == Honor,
                    s.node_taints_policy == Honor,
                )
            }),
        _ => (true, false),
    }
}

/// Solves one provisioning decision.
pub fn solve(input: &SchedulingInput) -> Plan {
    let started = Instant::now();
    let pools = prepare_pools(input);
    let Bins {
        bins,
        nominated,
        in_flight,
    } = prepare_bins(input);

    let mut placements = Vec::new();
    let unschedulable = Vec::new();
    let mut stats = SolveStats::default();

    // Pods already nominated to an in-flight claim stay there (its requests include them).
    let mut pending: Vec<usize> = Vec::new();
    for (i, p) in input.pods.iter().enumerate() {
        if p.node_name.is_some() || matches!(p.phase, PodPhase::Succeeded | PodPhase::Failed) {
            continue;
        }
        stats.pods += 1;
        match nominated.get(&p.key) {
            Some(&bin) => {
                placements.push(Placement {
                    pod: p.key.clone(),
                    target: bins[bin].target.clone(),
                });
                stats.placed_on_in_flight += 1;
            }
            None => pending.push(i),
        }
    }

    let infos: Vec<PodInfo> = input
        .pods
        .iter()
        .map(|p| PodInfo {
            requests: effective_requests(p),
            alternatives: requirement_alternatives(p),
        })
        .collect();

    // Pods nominated to in-flight claims run there as surely as bound pods run on their
    // nodes: they count in topology on their claim's bin. A pod also being placed in this
    // solve (nominated to a claim whose node registered, hence pending again) counts where
    // it is placed instead, and a bound pod counts on its node.
    let solving: BTreeSet<&ObjectKey> = if in_flight.iter().any(|(b, _)| bins[*b].node.is_some()) {
        pending.iter().map(|&i| &input.pods[i].key).collect()
    } else {
        BTreeSet::new()
    };
    let in_flight_pods: Vec<(usize, &Pod)> = in_flight
        .iter()
        .flat_map(|&(b, c)| c.pods.iter().map(move |p| (b, p)))
        .filter(|(_, p)| {
            p.node_name.is_none()
                && !matches!(p.phase, PodPhase::Succeeded | PodPhase::Failed)
                && !solving.contains(&p.key)
        })
        .collect();

    // Classes: pods with identical scheduling needs.
    let selector_keys = selector_keys(
        pending
            .iter()
            .map(|&i| &input.pods[i])
            .chain(input.nodes.iter().flat_map(|n| &n.pods))
            .chain(in_flight_pods.iter().map(|&(_, p)| p)),
    );
    let mut by_key: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for &i in &pending {
        by_key
            .entry(class_key(&input.pods[i], &infos[i], &selector_keys))
            .or_default()
            .push(i);
    }
    let mut topo = Topology::default();
    let mut classes: Vec<Class> = by_key
        .into_values()
        .map(|pods| {
            let p = &input.pods[pods[0]];
            let views = views_for(
                p,
                &infos[pods[0]].alternatives,
                &mut topo,
                &input.namespaces,
            );
            let topology = views.iter().any(|v| !v.constraints.is_empty());
            Class {
                pods,
                views,
                universes: Vec::new(),
                topology,
            }
        })
        .collect();
    // Universes depend only on the key, the spread's node inclusion policies and the pod's
    // node requirements and tolerations: classes share them.
    type UniverseKey = (String, (bool, bool), String);
    let mut memo: BTreeMap<UniverseKey, Vec<DomainId>> = BTreeMap::new();
    for class in &mut classes {
        let p = &input.pods[class.pods[0]];
        let shape = format!(
            "{:?}|{:?}",
            infos[class.pods[0]].alternatives, p.tolerations
        );
        class.universes = class
            .views
            .iter()
            .map(|v| {
                v.constraints
                    .iter()
                    .map(|c| {
                        let key = &topo.groups[c.group()].key.topology_key;
                        memo.entry((key.clone(), input_spread(p, c, key), shape.clone()))
                            .or_insert_with(|| {
                                let mut ids: Vec<DomainId> = universe(
                                    input,
                                    &pools,
                                    &bins,
                                    p,
                                    &infos[class.pods[0]].alternatives,
                                    key,
                                    c,
                                )
                                .iter()
                                .map(|d| topo.domains.intern(d))
                                .collect();
                                ids.sort_unstable();
                                ids
                            })
                            .clone()
                    })
                    .collect()
            })
            .collect();
    }
    for class in &classes {
        let (last, universes) = (class.views.len() - 1, class.universes.last());
        for (c, u) in class.views[last]
            .constraints
            .iter()
            .zip(universes.into_iter().flatten())
        {
            if let Constraint::Affinity { group, .. } = c {
                topo.affinity_owners.insert(*group);
            }
            if let Constraint::AntiAffinity { group } = c
                && topo.groups[*group].key.topology_key != labels::HOSTNAME
            {
                topo.anti_owners.insert(*group);
            }
            if let Constraint::Spread {
                group,
                max_skew,
                min_domains,
            } = c
            {
                let owners = topo.spread_owners.entry(*group).or_default();
                let owner = (*max_skew, *min_domains, u.clone());
                if !owners.contains(&owner) {
                    owners.push(owner);
                }
            }
        }
    }
    // Pods already running, or nominated to in-flight claims, count in every topology group
    // they match, and their own anti-affinity excludes pods from their domains.
    let running_anti = input
        .nodes
        .iter()
        .flat_map(|n| &n.pods)
        .chain(in_flight_pods.iter().map(|&(_, p)| p))
        .any(|p| {
            p.pod_anti_affinity
                .as_ref()
                .is_some_and(|a| !a.required.is_empty())
        });
    let track = !topo.groups.is_empty() || running_anti;
    if track {
        for b in &bins {
            if let Some(n) = b.node {
                for p in input.nodes[n]
                    .pods
                    .iter()
                    .filter(|p| !matches!(p.phase, PodPhase::Succeeded | PodPhase::Failed))
                {
                    record_on_bin(&mut topo, p, &input.namespaces, b);
                }
            }
        }
        // A claim counts its pods in the domains it pins (its labels, its single-valued
        // requirements, its own hostname). A key it leaves open (a zone EC2 picks at launch)
        // counts them nowhere until the watcher reports the claim with the label, as a node
        // without the label would: see docs/scheduler.md.
        for &(b, p) in &in_flight_pods {
            record_on_bin(&mut topo, p, &input.namespaces, &bins[b]);
        }
    }

    for class in &mut classes {
        let p = &input.pods[class.pods[0]];
        for view in &mut class.views {
            view.pin_keys = topo.keys_for(p, &view.constraints);
            view.pin_key_ids = view
                .pin_keys
                .iter()
                .filter(|k| *k != labels::HOSTNAME)
                .map(|k| topo.keys.intern(k))
                .collect();
            view.owner_groups = topo.owner_groups_of(p);
        }
        // A pod whose placement must pin a domain is placed one at a time.
        class.topology |= class
            .views
            .iter()
            .any(|v| v.pin_keys.iter().any(|k| k.as_str() != labels::HOSTNAME))
            || topo
                .spread_owners
                .keys()
                .chain(&topo.affinity_owners)
                .any(|&g| topo.groups[g].matches(p));
    }
    classes.sort_by(|a, b| {
        let (pa, pb) = (&input.pods[a.pods[0]], &input.pods[b.pods[0]]);
        let (ra, rb) = (&infos[a.pods[0]].requests, &infos[b.pods[0]].requests);
        pb.priority
            .cmp(&pa.priority)
            .then_with(|| b.topology.cmp(&a.topology))
            .then_with(|| rb.get(resource::CPU).cmp(&ra.get(resource::CPU)))
            .then_with(|| rb.get(resource::MEMORY).cmp(&ra.get(resource::MEMORY)))
            .then_with(|| pa.key.cmp(&pb.key))
    });
    stats.classes = classes.len();

    // Domains in the hot loop are compared as ids: each bin's, per topology key.
    let mut bins = bins;
    for b in &mut bins {
        b.domain_ids = (0..topo.keys.len())
            .map(|k| {
                let name = topo.keys.name(k as KeyId);
                b.domains.get(name).map(|d| topo.domains.intern(d))
            })
            .collect();
    }
    let host_key = topo.keys.get(labels::HOSTNAME);

    // The smallest request of any pending pod: claims without room for it are full for good,
    // and the scan over claims starts after the leading full ones.
    let mut smallest: Option<Resources> = None;
    for &i in &pending {
        let r = &infos[i].requests;
        smallest = Some(match smallest {
            None => r.clone(),
            Some(acc) => acc
                .iter()
                .chain(r.iter())
                .map(|(k, _)| (k.to_owned(), acc.get(k).min(r.get(k))))
                .collect(),
        });
    }
    let cx = Cx {
        input,
        pools: &pools,
        infos: &infos,
        smallest: smallest.unwrap_or_default(),
        host_key,
        demand: pending.iter().fold(Resources::new(), |mut acc, &i| {
            let r = &infos[i].requests;
            acc.set(resource::CPU, acc.get(resource::CPU) + r.get(resource::CPU));
            acc.set(
                resource::MEMORY,
                acc.get(resource::MEMORY) + r.get(resource::MEMORY),
            );
            acc
        }),
        track,
    };
    let mut st = State {
        bins,
        claims: Vec::new(),
        charged: vec![Resources::new(); pools.len()],
        topo,
        placements,
        unschedulable,
        stats,
        open_from: 0,
        respect_caps: true,
        host_cursor: BTreeMap::new(),
    };

    // 1. Pods whose placement depends on where others go (topology), one at a time.
    for class in classes.iter().filter(|c| c.topology) {
        st.place_one_by_one(&cx, class, &class.pods);
    }
    // 2. The rest, filling each node in turn with the pods that suit what is left of it.
    let generic: Vec<&Class> = classes.iter().filter(|c| !c.topology).collect();
    let leftovers = st.fill_generic(&cx, &generic);
    // 3. What could not be placed with every preference kept: one at a time, relaxing.
    for (class, pods) in generic.iter().zip(leftovers) {
        if !pods.is_empty() {
            st.place_one_by_one(&cx, class, &pods);
        }
    }
    let State {
        claims,
        mut placements,
        mut unschedulable,
        mut stats,
        ..
    } = st;

    let new_node_claims: Vec<NewNodeClaim> = claims
        .iter()
        .map(|c| finish_claim(c, &pools, input))
        .collect();
    stats.unschedulable = unschedulable.len();
    stats.new_node_claims = new_node_claims.len();
    stats.new_price = new_node_claims.iter().map(|c| c.price).sum();
    stats.duration_micros = started.elapsed().as_micros();
    placements.sort_by(|a, b| a.pod.cmp(&b.pod));
    unschedulable.sort_by(|a, b| a.pod.cmp(&b.pod));
    Plan {
        new_node_claims,
        placements,
        unschedulable,
        stats,
    }
}

/// The mutable side of a solve.
struct State {
    bins: Vec<Bin>,
    claims: Vec<OpenClaim>,
    charged: Vec<Resources>,
    topo: Topology,
    placements: Vec<Placement>,
    unschedulable: Vec<crate::sync::Unschedulable>,
    stats: SolveStats,
    /// Claims before this index have no room for any pending pod.
    open_from: usize,
    /// Whether claims keep to their cost-optimal shape; lifted for a pod nothing else takes.
    respect_caps: bool,
    /// Per (hostname group, cap): claims before the index already hold more than the cap of
    /// the group's pods, so a pod whose gate caps the group per node there skips them.
    /// Counts only grow, so this only advances.
    host_cursor: BTreeMap<(usize, i64), usize>,
}

impl State {
    fn new_claim(
        pool_idx: usize,
        pool: &PreparedPool,
        first: &Resources,
        demand: &Resources,
    ) -> OpenClaim {
        let options: Vec<usize> = (0..pool.types.len()).collect();
        OpenClaim {
            host_id: topology::UNSEEN,
            domain_ids: Vec::new(),
            pool: pool_idx,
            reqs: Requirements::new(),
            cap: best_shape(pool, &options, first, demand),
            max_room: max_room(pool, &options),
            max_room_of: options.len(),
            options,
            pods: Vec::new(),
            requests: Resources::new(),
            host_ports: Vec::new(),
            charge: Resources::new(),
        }
    }

    /// Tries one existing target.
    fn try_target(
        &mut self,
        cx: &Cx<'_>,
        target: &Target,
        pi: usize,
        view: &View,
        gate: &Gate,
    ) -> bool {
        let p = &cx.input.pods[pi];
        let info = &cx.infos[pi];
        match *target {
            Target::Bin(bi) => bin_accepts(&self.bins[bi], p, info, view, gate, &self.topo),
            Target::Claim(ci) => try_add(
                cx,
                &mut self.claims[ci],
                &mut self.charged,
                p,
                pi,
                info,
                view,
                gate,
                &self.topo,
                self.respect_caps,
            ),
        }
    }

    /// The gate of pod `pi` under `view` (`universes`: the view's), against the counts now.
    fn gate(&self, cx: &Cx<'_>, pi: usize, view: &View, universes: &[Vec<DomainId>]) -> Gate {
        Gate::new(
            &self.topo,
            &cx.input.pods[pi],
            &view.constraints,
            universes,
            &view.owner_groups,
        )
    }

    /// Re-reads the domains claim `ci` pins, after its requirements changed.
    fn refresh_domains(&mut self, cx: &Cx<'_>, ci: usize) {
        let c = &self.claims[ci];
        let template = &cx.pools[c.pool].template;
        let topo = &mut self.topo;
        let ids = (0..topo.keys.len())
            .map(|k| {
                let name = topo.keys.name(k as KeyId);
                c.reqs
                    .get(name)
                    .and_then(ValueSet::single)
                    .or_else(|| template.get(name).and_then(ValueSet::single))
                    .map(|d| topo.domains.intern(d))
            })
            .collect();
        self.claims[ci].domain_ids = ids;
    }

    /// Opens a new claim for the pod in the first NodePool (by weight) that can host it.
    fn open_claim(&mut self, cx: &Cx<'_>, pi: usize, view: &View, gate: &Gate) -> Option<usize> {
        let p = &cx.input.pods[pi];
        for (pool_idx, pool) in cx.pools.iter().enumerate() {
            if pool.types.is_empty() {
                continue;
            }
            let np = &cx.input.node_pools[pool.input].node_pool;
            if untolerated(&p.tolerations, &np.taints).is_some()
                || (!view.tolerate_prefer_no_schedule
                    && pod::preferred_taint_penalty(&p.tolerations, &np.taints) > 0)
            {
                continue;
            }
            let mut claim = Self::new_claim(pool_idx, pool, &cx.infos[pi].requests, &cx.demand);
            let index = self.claims.len();
            claim.host_id = self.topo.domains.intern(&format!("new:{index}"));
            claim.domain_ids = (0..self.topo.keys.len())
                .map(|k| {
                    let name = self.topo.keys.name(k as KeyId);
                    pool.template
                        .get(name)
                        .and_then(ValueSet::single)
                        .map(|d| self.topo.domains.intern(d))
                })
                .collect();
            if try_add(
                cx,
                &mut claim,
                &mut self.charged,
                p,
                pi,
                &cx.infos[pi],
                view,
                gate,
                &self.topo,
                self.respect_caps,
            ) {
                self.claims.push(claim);
                self.refresh_domains(cx, index);
                return Some(index);
            }
        }
        None
    }

    /// Books pod `pi` on a target that accepted it (claims already hold it).
    fn commit(&mut self, cx: &Cx<'_>, pi: usize, target: &Target) {
        let p = &cx.input.pods[pi];
        match *target {
            Target::Bin(bi) => {
                let b = &mut self.bins[bi];
                pod::sub(&mut b.free, &cx.infos[pi].requests);
                b.host_ports.extend(p.host_ports.iter().cloned());
                match b.target {
                    NominationTarget::Node(_) => self.stats.placed_on_nodes += 1,
                    NominationTarget::NodeClaim(_) => self.stats.placed_on_in_flight += 1,
                }
                self.placements.push(Placement {
                    pod: p.key.clone(),
                    target: b.target.clone(),
                });
                if cx.track {
                    record_on_bin(&mut self.topo, p, &cx.input.namespaces, &self.bins[bi]);
                }
            }
            Target::Claim(ci) => {
                self.stats.placed_on_new += 1;
                while self.open_from < self.claims.len()
                    && claim_full(&self.claims[self.open_from], &cx.smallest)
                {
                    self.open_from += 1;
                }
                if cx.track {
                    let c = &self.claims[ci];
                    let merged = claim_requirements(cx.pools, c);
                    let np = &cx.input.node_pools[cx.pools[c.pool].input].node_pool;
                    let facts = NodeFacts {
                        requirements: &merged,
                        claim: true,
                        taints: &np.taints,
                        domain_of: &|k| claim_domain(&merged, ci, k),
                    };
                    self.topo.record(p, &cx.input.namespaces, &facts);
                }
                self.refresh_domains(cx, ci);
            }
        }
    }

    fn refuse(&mut self, cx: &Cx<'_>, class: &Class, pi: usize) {
        let p = &cx.input.pods[pi];
        let last = &class.views[class.views.len() - 1];
        let mut keys: Vec<String> = last
            .constraints
            .iter()
            .map(|c| self.topo.groups[c.group()].key.topology_key.clone())
            .collect();
        keys.sort();
        keys.dedup();
        let reason = explain(cx.input, cx.pools, &self.charged, p, &cx.infos[pi], &keys);
        self.unschedulable.push(crate::sync::Unschedulable {
            pod: p.key.clone(),
            reason,
        });
    }

    /// The first claim a pod could join as far as the per-node caps of its gate tell
    /// (hostname anti-affinity, hostname spread, its own or owned).
    fn host_skip(&mut self, cx: &Cx<'_>, gate: &Gate) -> usize {
        let Some(host) = cx.host_key else { return 0 };
        let mut start = 0;
        for (group, at_most) in gate.caps(host) {
            let g = &self.topo.groups[group];
            // Counts only grow, so a claim past the cap stays past it.
            let cursor = self.host_cursor.entry((group, at_most)).or_insert(0);
            while *cursor < self.claims.len() && g.count(self.claims[*cursor].host_id) > at_most {
                *cursor += 1;
            }
            start = start.max(*cursor);
        }
        start
    }

    /// Karpenter's way: each pod to the first node, in-flight claim or new claim that takes it,
    /// relaxing its preferences only when nothing does.
    fn place_one_by_one(&mut self, cx: &Cx<'_>, class: &Class, pods: &[usize]) {
        let mut bin_cursor = 0;
        let mut claim_cursor = 0;
        for &pi in pods {
            let mut outcome = None;
            'caps: for respect in [true, false] {
                self.respect_caps = respect;
                'views: for (vi, view) in class.views.iter().enumerate() {
                    let gate = self.gate(cx, pi, view, &class.universes[vi]);
                    let mut bi = if class.topology { 0 } else { bin_cursor };
                    while bi < self.bins.len() {
                        if self.try_target(cx, &Target::Bin(bi), pi, view, &gate) {
                            outcome = Some(Target::Bin(bi));
                            break 'views;
                        }
                        bi += 1;
                    }
                    if !class.topology && vi == 0 && respect {
                        bin_cursor = bi;
                    }
                    let mut ci = if class.topology {
                        self.open_from.max(self.host_skip(cx, &gate))
                    } else if respect {
                        claim_cursor.max(self.open_from)
                    } else {
                        self.open_from
                    };
                    while ci < self.claims.len() {
                        if self.try_target(cx, &Target::Claim(ci), pi, view, &gate) {
                            outcome = Some(Target::Claim(ci));
                            break 'views;
                        }
                        ci += 1;
                    }
                    if !class.topology && vi == 0 && respect {
                        claim_cursor = ci;
                    }
                    if let Some(ci) = self.open_claim(cx, pi, view, &gate) {
                        outcome = Some(Target::Claim(ci));
                        break 'views;
                    }
                }
                if outcome.is_some() {
                    break 'caps;
                }
            }
            self.respect_caps = true;
            match outcome {
                Some(target) => {
                    self.commit(cx, pi, &target);
                    if !class.topology {
                        match target {
                            Target::Bin(bi) => bin_cursor = bi,
                            Target::Claim(ci) => {
                                bin_cursor = self.bins.len();
                                claim_cursor = ci;
                            }
                        }
                    }
                }
                None => self.refuse(cx, class, pi),
            }
        }
    }

    /// Fills targets one at a time with the pods of `classes` (no topology, strictest view),
    /// each time picking the class whose requests best match the target's remaining room
    /// (the dot-product heuristic of vector bin packing), so nodes come out balanced between
    /// CPU and memory. Returns, per class, the pods left for [`Self::place_one_by_one`].
    fn fill_generic(&mut self, cx: &Cx<'_>, classes: &[&Class]) -> Vec<Vec<usize>> {
        let mut next = vec![0usize; classes.len()];
        for bi in 0..self.bins.len() {
            if self.bins[bi].usable {
                self.fill_target(cx, classes, &mut next, &Target::Bin(bi));
            }
        }
        for ci in self.open_from..self.claims.len() {
            self.fill_target(cx, classes, &mut next, &Target::Claim(ci));
        }
        let mut exhausted = vec![false; classes.len()];
        while let Some(k) =
            (0..classes.len()).find(|&k| !exhausted[k] && next[k] < classes[k].pods.len())
        {
            let pi = classes[k].pods[next[k]];
            let gate = self.gate(cx, pi, &classes[k].views[0], &classes[k].universes[0]);
            match self.open_claim(cx, pi, &classes[k].views[0], &gate) {
                Some(ci) => {
                    next[k] += 1;
                    self.commit(cx, pi, &Target::Claim(ci));
                    self.fill_target(cx, classes, &mut next, &Target::Claim(ci));
                }
                None => exhausted[k] = true,
            }
        }
        classes
            .iter()
            .zip(next)
            .map(|(c, n)| c.pods[n..].to_vec())
            .collect()
    }

    fn fill_target(
        &mut self,
        cx: &Cx<'_>,
        classes: &[&Class],
        next: &mut [usize],
        target: &Target,
    ) {
        let mut refused = vec![false; classes.len()];
        // A claim is filled toward one instance type: the option that absorbs the remaining
        // demand (in its CPU:memory mix) at the lowest price, so nodes come out the shape of
        // the cheapest type for the workload rather than of the largest.
        let shape = match *target {
            Target::Bin(_) => None,
            Target::Claim(ci) => {
                let mut demand = Resources::new();
                for (k, class) in classes.iter().enumerate() {
                    let left = (class.pods.len() - next[k]) as i64;
                    if left > 0 {
                        let r = &cx.infos[class.pods[next[k]]].requests;
                        demand.set(
                            resource::CPU,
                            demand.get(resource::CPU) + r.get(resource::CPU) * left,
                        );
                        demand.set(
                            resource::MEMORY,
                            demand.get(resource::MEMORY) + r.get(resource::MEMORY) * left,
                        );
                    }
                }
                let c = &self.claims[ci];
                let pool = &cx.pools[c.pool];
                c.options
                    .iter()
                    .map(|&o| &pool.types[o])
                    .filter(|t| t.price.is_finite() && fits(&c.requests, &t.room))
                    .map(|t| {
                        let absorb = [resource::CPU, resource::MEMORY]
                            .iter()
                            .filter(|r| demand.get(r) > 0)
                            .map(|r| {
                                (t.room.get(r) - c.requests.get(r)).max(0) as f64
                                    / demand.get(r) as f64
                            })
                            .fold(f64::INFINITY, f64::min);
                        (t.price / absorb.max(1e-12), t)
                    })
                    .min_by(|a, b| a.0.total_cmp(&b.0))
                    .map(|(_, t)| t.room.clone())
            }
        };
        loop {
            let (capacity, room) = match *target {
                Target::Bin(bi) => (self.bins[bi].capacity.clone(), self.bins[bi].free.clone()),
                Target::Claim(ci) => {
                    let c = &self.claims[ci];
                    let cap = c
                        .cap
                        .clone()
                        .or_else(|| shape.clone())
                        .unwrap_or_else(|| max_room(&cx.pools[c.pool], &c.options));
                    let mut room = cap.clone();
                    pod::sub(&mut room, &c.requests);
                    (cap, room)
                }
            };
            let mut best: Option<(f64, usize)> = None;
            for k in 0..classes.len() {
                if refused[k] || next[k] >= classes[k].pods.len() {
                    continue;
                }
                let requests = &cx.infos[classes[k].pods[next[k]]].requests;
                if !fits(requests, &room) {
                    continue;
                }
                let score = alignment(requests, &room, &capacity);
                if best.is_none_or(|(s, _)| score > s) {
                    best = Some((score, k));
                }
            }
            let Some((_, k)) = best else { break };
            let pi = classes[k].pods[next[k]];
            let gate = self.gate(cx, pi, &classes[k].views[0], &classes[k].universes[0]);
            if self.try_target(cx, target, pi, &classes[k].views[0], &gate) {
                next[k] += 1;
                self.commit(cx, pi, target);
            } else {
                refused[k] = true;
            }
        }
    }
}

/// How well requests point the way the remaining room does, both relative to capacity
/// (CPU and memory, the dimensions that decide the instance type).
fn alignment(requests: &Resources, room: &Resources, capacity: &Resources) -> f64 {
    let (mut dot, mut rq, mut rm) = (0.0, 0.0, 0.0);
    for r in [resource::CPU, resource::MEMORY] {
        let cap = capacity.get(r).max(1) as f64;
        let (a, b) = (requests.get(r) as f64 / cap, room.get(r) as f64 / cap);
        dot += a * b;
        rq += a * a;
        rm += b * b;
    }
    dot / (rq.sqrt() * rm.sqrt()).max(1e-12)
}

enum Target {
    Bin(usize),
    Claim(usize),
}

/// Read-only context of a solve.
struct Cx<'a> {
    input: &'a SchedulingInput,
    pools: &'a [PreparedPool],
    infos: &'a [PodInfo],
    /// The smallest request of any pending pod.
    smallest: Resources,
    /// The CPU and memory all pending pods request.
    demand: Resources,
    /// Whether placements must be recorded for topology.
    track: bool,
    /// The hostname key's id, if any constraint uses it.
    host_key: Option<KeyId>,
}

/// A claim's requirements with its pool's template.
fn claim_requirements(pools: &[PreparedPool], c: &OpenClaim) -> Requirements {
    pools[c.pool]
        .template
        .intersect(&c.reqs)
        .unwrap_or_else(|_| c.reqs.clone())
}

/// The domain of new claim `index` for `key`: itself for hostname, else a single value.
fn claim_domain<'a>(reqs: &'a Requirements, index: usize, key: &str) -> Option<Cow<'a, str>> {
    if key == labels::HOSTNAME {
        Some(Cow::Owned(format!("new:{index}")))
    } else {
        reqs.get(key).and_then(ValueSet::single).map(Cow::Borrowed)
    }
}

/// Records `p` running on an existing node or in-flight claim.
fn record_on_bin(topo: &mut Topology, p: &Pod, namespaces: &[Namespace], b: &Bin) {
    let facts = NodeFacts {
        requirements: &b.labels_reqs,
        claim: b.node.is_none(),
        taints: &b.taints,
        domain_of: &|k| b.domains.get(k).map(|d| Cow::Borrowed(d.as_str())),
    };
    topo.record(p, namespaces, &facts);
}

/// The domains of an open claim, by key id (hostname: the claim itself).
fn claim_domains(c: &OpenClaim, host_key: Option<KeyId>) -> impl Fn(KeyId) -> Option<DomainId> {
    move |k| {
        if Some(k) == host_key {
            Some(c.host_id)
        } else {
            c.domain_ids.get(k as usize).copied().flatten()
        }
    }
}

/// Everything that makes two pods schedule differently, as a string.
fn class_key(p: &Pod, info: &PodInfo, selector_keys: &BTreeSet<String>) -> String {
    // Labels matter only where some selector reads them (spread, affinity); keeping only
    // those keys keeps classes large.
    let labels: Vec<(&String, &String)> = p
        .labels
        .iter()
        .filter(|(k, _)| selector_keys.contains(*k))
        .collect();
    format!(
        "{}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{}|{:?}|{:?}|{:?}|{:?}",
        p.priority,
        info.requests,
        p.node_selector,
        p.node_affinity,
        p.tolerations,
        p.volume_requirements,
        p.host_ports,
        p.key.namespace,
        labels,
        p.topology_spread,
        p.pod_affinity,
        p.pod_anti_affinity,
    )
}

/// Every label key a spread or affinity selector of these pods reads.
fn selector_keys<'a>(pods: impl Iterator<Item = &'a Pod>) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    let mut add = |sel: Option<&crate::model::LabelSelector>, extra: &[String]| {
        if let Some(sel) = sel {
            keys.extend(sel.match_labels.keys().cloned());
            keys.extend(sel.match_expressions.iter().map(|e| e.key.clone()));
        }
        keys.extend(extra.iter().cloned());
    };
    for p in pods {
        for c in &p.topology_spread {
            add(c.label_selector.as_ref(), &c.match_label_keys);
        }
        for a in [&p.pod_affinity, &p.pod_anti_affinity]
            .into_iter()
            .flatten()
        {
            for t in a.required.iter().chain(a.preferred.iter().map(|w| &w.term)) {
                add(t.label_selector.as_ref(), &t.match_label_keys);
                add(None, &t.mismatch_label_keys);
            }
        }
    }
    keys
}

fn bin_accepts(
    b: &Bin,
    p: &Pod,
    info: &PodInfo,
    view: &View,
    gate: &Gate,
    topo: &Topology,
) -> bool {
    b.usable
        && fits(&info.requests, &b.free)
        && untolerated(&p.tolerations, &b.taints).is_none()
        && (view.tolerate_prefer_no_schedule
            || pod::preferred_taint_penalty(&p.tolerations, &b.taints) == 0)
        && !host_ports_conflict(&p.host_ports, &b.host_ports)
        && view
            .alternatives
            .iter()
            .any(|alt| b.labels_reqs.admits(alt).is_ok())
        && gate.allows(topo, p, &|k| {
            b.domain_ids.get(k as usize).copied().flatten()
        })
}

/// Whether `t` has room for `requests` and fits in the limits left.
fn room_and_limits_ok(
    t: &PoolType,
    requests: &Resources,
    remaining: Option<&Resources>,
    limits: &Resources,
) -> bool {
    fits(requests, &t.room)
        && remaining.is_none_or(|rem| {
            limits.iter().all(|(name, _)| {
                let need = if name == resource::NODES {
                    1000
                } else {
                    t.capacity.get(name)
                };
                need <= rem.get(name)
            })
        })
}

/// Whether the pool type `t` can host a claim with requirements `reqs` and `requests`, within
/// the limits left (`remaining`).
fn type_ok(
    t: &PoolType,
    reqs: &Requirements,
    requests: &Resources,
    remaining: Option<&Resources>,
    limits: &Resources,
) -> bool {
    room_and_limits_ok(t, requests, remaining, limits) && t.reqs.admits(reqs).is_ok()
}

/// Limits left for one claim of `pool`: limit − used − what other claims charge.
fn remaining_for(
    pool: &PreparedPool,
    charged: &Resources,
    own_charge: &Resources,
) -> Option<Resources> {
    if pool.limits.is_empty() {
        return None;
    }
    Some(
        pool.limits
            .iter()
            .map(|(name, limit)| {
                (
                    name.to_owned(),
                    limit - pool.used.get(name) - charged.get(name) + own_charge.get(name),
                )
            })
            .collect(),
    )
}

/// Domains a claim could still take for `key`, given its options and requirements.
fn candidate_domains(
    pool: &PreparedPool,
    options: &[usize],
    reqs: &Requirements,
    key: &str,
) -> Vec<String> {
    let mut out = BTreeSet::new();
    if let Some(v) = pool.template.get(key).and_then(ValueSet::single) {
        out.insert(v.to_owned());
    }
    for &o in options {
        let allowed = pool.types[o]
            .reqs
            .get(key)
            .and_then(ValueSet::finite_values);
        if let Some(values) = allowed {
            out.extend(
                values
                    .iter()
                    .filter(|v| reqs.get(key).is_none_or(|w| w.allows(Some(v))))
                    .cloned(),
            );
        }
    }
    out.into_iter().collect()
}

/// Tries to add pod `pi` to `claim`, narrowing its options and, for
/// topology constraints, pinning the domains; leaves it untouched on failure.
#[allow(clippy::too_many_arguments)]
fn try_add(
    cx: &Cx<'_>,
    claim: &mut OpenClaim,
    charged: &mut [Resources],
    p: &Pod,
    pi: usize,
    info: &PodInfo,
    view: &View,
    gate: &Gate,
    topo: &Topology,
    respect_cap: bool,
) -> bool {
    let pool = &cx.pools[claim.pool];
    let np = &cx.input.node_pools[pool.input].node_pool;
    if untolerated(&p.tolerations, &np.taints).is_some()
        || (!view.tolerate_prefer_no_schedule
            && pod::preferred_taint_penalty(&p.tolerations, &np.taints) > 0)
        || host_ports_conflict(&p.host_ports, &claim.host_ports)
    {
        return false;
    }
    // Quick refusals before narrowing options: no option has room, or a constraint on a
    // domain the claim already has fails.
    if !claim.requests.fits_with(&info.requests, &claim.max_room)
        || (respect_cap
            && claim
                .cap
                .as_ref()
                .is_some_and(|cap| !claim.requests.fits_with(&info.requests, cap)))
    {
        return false;
    }
    if !gate.allows_known(topo, p, &claim_domains(claim, cx.host_key)) {
        return false;
    }
    let mut requests = claim.requests.clone();
    add(&mut requests, &info.requests);
    let owned_keys = &view.pin_keys;
    let remaining = remaining_for(pool, &charged[claim.pool], &claim.charge);
    // Keys whose domain must be pinned (hostname is the claim itself).
    let keys: Vec<&str> = owned_keys
        .iter()
        .map(String::as_str)
        .filter(|k| *k != labels::HOSTNAME)
        .collect();
    // Fast path: a pod that adds no requirement and needs no domain the claim has not pinned
    // already leaves the claim's requirements as they are, so only room and limits narrow
    // the options.
    let pinned = {
        let domains = claim_domains(claim, cx.host_key);
        view.pin_key_ids.iter().all(|&k| domains(k).is_some())
    };
    let unconstrained = view.alternatives.iter().any(Requirements::is_empty);
    if unconstrained && pinned {
        let options: Vec<usize> = claim
            .options
            .iter()
            .copied()
            .filter(|&o| {
                room_and_limits_ok(&pool.types[o], &requests, remaining.as_ref(), &pool.limits)
            })
            .collect();
        if !options.is_empty()
            && min_values_hold(&claim.reqs, pool, &options)
            && gate.allows(topo, p, &claim_domains(claim, cx.host_key))
        {
            let reqs = std::mem::take(&mut claim.reqs);
            commit_add(claim, pool, charged, reqs, options, requests, p, pi);
            return true;
        }
    }
    for alt in &view.alternatives {
        if unconstrained && pinned && alt.is_empty() {
            continue; // tried above
        }
        let Ok(reqs) = claim.reqs.intersect(alt) else {
            continue;
        };
        let options: Vec<usize> = claim
            .options
            .iter()
            .copied()
            .filter(|&o| {
                type_ok(
                    &pool.types[o],
                    &reqs,
                    &requests,
                    remaining.as_ref(),
                    &pool.limits,
                )
            })
            .collect();
        if options.is_empty() {
            continue;
        }
        let Some((reqs, options)) = pin_domains(
            pool,
            reqs,
            options,
            &keys,
            p,
            view,
            gate,
            topo,
            claim.host_id,
        ) else {
            continue;
        };
        if !min_values_hold(&reqs, pool, &options) {
            continue;
        }
        commit_add(claim, pool, charged, reqs, options, requests, p, pi);
        return true;
    }
    false
}

/// Books a pod on a claim with its new requirements and options.
#[allow(clippy::too_many_arguments)]
fn commit_add(
    claim: &mut OpenClaim,
    pool: &PreparedPool,
    charged: &mut [Resources],
    reqs: Requirements,
    options: Vec<usize>,
    requests: Resources,
    p: &Pod,
    pi: usize,
) {
    if options.len() != claim.options.len() || claim.pods.is_empty() {
        let charge = charge_of(pool, &options);
        let total = &mut charged[claim.pool];
        pod::sub(total, &claim.charge);
        add(total, &charge);
        claim.charge = charge;
        if claim.pods.is_empty() || options.len() * 2 <= claim.max_room_of {
            claim.max_room = max_room(pool, &options);
            claim.max_room_of = options.len();
        }
    }
    claim.reqs = reqs;
    claim.options = options;
    claim.requests = requests;
    claim.pods.push(pi);
    claim.host_ports.extend(p.host_ports.iter().cloned());
}

/// Pins each topology key to one domain that keeps every constraint (trying domains from the
/// least loaded), then checks the constraints; `None` if no choice works.
#[allow(clippy::too_many_arguments)]
fn pin_domains(
    pool: &PreparedPool,
    reqs: Requirements,
    options: Vec<usize>,
    keys: &[&str],
    p: &Pod,
    view: &View,
    gate: &Gate,
    topo: &Topology,
    host_id: DomainId,
) -> Option<(Requirements, Vec<usize>)> {
    let Some((key, rest)) = keys.split_first() else {
        let merged = pool
            .template
            .intersect(&reqs)
            .unwrap_or_else(|_| reqs.clone());
        let host_key = topo.keys.get(labels::HOSTNAME);
        return gate
            .allows(topo, p, &|k| {
                if Some(k) == host_key {
                    Some(host_id)
                } else {
                    merged
                        .get(topo.keys.name(k))
                        .and_then(ValueSet::single)
                        .map(|d| topo.domain(d))
                }
            })
            .then_some((reqs, options));
    };
    let mut candidates = candidate_domains(pool, &options, &reqs, key);
    // Least-loaded first (for spread), by the first constraint on the key.
    if let Some(c) = view
        .constraints
        .iter()
        .find(|c| topo.groups[c.group()].key.topology_key == *key)
    {
        let g = &topo.groups[c.group()];
        candidates.sort_by_key(|d| (g.count(topo.domain(d)), d.clone()));
    }
    for d in candidates {
        let mut pinned = reqs.clone();
        pinned.add(key, ValueSet::one_of([d.clone()]));
        if pinned.get(key).is_some_and(ValueSet::is_unsatisfiable) {
            continue;
        }
        let narrowed: Vec<usize> = options
            .iter()
            .copied()
            // The options already admit every other key: only the pinned one can narrow them.
            .filter(|&o| {
                pool.types[o]
                    .reqs
                    .get(key)
                    .is_some_and(|vs| vs.allows(Some(&d)))
            })
            .collect();
        if narrowed.is_empty() {
            continue;
        }
        if let Some(found) = pin_domains(pool, pinned, narrowed, rest, p, view, gate, topo, host_id)
        {
            return Some(found);
        }
    }
    None
}

/// Per limited resource, the largest capacity among the options (the worst case of a launch).
fn charge_of(pool: &PreparedPool, options: &[usize]) -> Resources {
    let mut charge = Resources::new();
    for (name, _) in pool.limits.iter() {
        let worst = if name == resource::NODES {
            1000
        } else {
            options
                .iter()
                .map(|&o| pool.types[o].capacity.get(name))
                .max()
                .unwrap_or(0)
        };
        charge.set(name, worst);
    }
    charge
}

/// Karpenter's `minValues`: enough distinct values of each such key must remain among the options.
fn min_values_hold(reqs: &Requirements, pool: &PreparedPool, options: &[usize]) -> bool {
    let keys: Vec<(&str, u32)> = pool
        .template
        .iter()
        .chain(reqs.iter())
        .filter_map(|(k, v)| v.min_values.map(|m| (k, m)))
        .collect();
    keys.into_iter().all(|(key, min)| {
        let mut values: BTreeSet<&str> = BTreeSet::new();
        for &o in options {
            if let Some(vs) = pool.types[o]
                .reqs
                .get(key)
                .and_then(ValueSet::finite_values)
            {
                let wanted = reqs.get(key);
                values.extend(
                    vs.iter()
                        .map(String::as_str)
                        .filter(|v| wanted.is_none_or(|w| w.allows(Some(v)))),
                );
            }
        }
        values.len() >= min as usize
    })
}

/// A price ordered by `f64::total_cmp`.
#[derive(PartialEq)]
struct PriceKey(f64);

impl Eq for PriceKey {}

impl PartialOrd for PriceKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for PriceKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

fn finish_claim(c: &OpenClaim, pools: &[PreparedPool], input: &SchedulingInput) -> NewNodeClaim {
    let pool = &pools[c.pool];
    let npi = &input.node_pools[pool.input];
    let np = &npi.node_pool;
    let reqs = pool
        .template
        .intersect(&c.reqs)
        .unwrap_or_else(|_| pool.template.clone());
    // The options already satisfy the claim's requirements (they were narrowed as pods came):
    // only the zone and capacity type, which pick the offering, need intersecting.
    type Values<'a> = Option<std::borrow::Cow<'a, ValueSet>>;
    let mut options: Vec<(&crate::model::Offering, &PoolType, Values<'_>, Values<'_>)> = Vec::new();
    // The options come in the pool's price order, and a type's pool price is a lower bound of
    // its price here: once MAX_INSTANCE_TYPES are found, a type whose pool price is above the
    // dearest of the best ones found cannot enter.
    let mut best = std::collections::BinaryHeap::new();
    for &o in &c.options {
        let t = &pool.types[o];
        if best.len() >= MAX_INSTANCE_TYPES
            && best
                .peek()
                .is_some_and(|&PriceKey(dearest)| t.price > dearest)
        {
            break;
        }
        let it = &npi.instance_types[t.index];
        let zones = key_values(&t.reqs, &reqs, labels::TOPOLOGY_ZONE);
        let capacity_types = key_values(&t.reqs, &reqs, labels::CAPACITY_TYPE);
        if let Some(offering) =
            cheapest_offering_ref(it, zones.as_deref(), capacity_types.as_deref())
        {
            best.push(PriceKey(offering.price));
            if best.len() > MAX_INSTANCE_TYPES {
                best.pop();
            }
            options.push((offering, t, zones, capacity_types));
        }
    }
    let name = |t: &PoolType| npi.instance_types[t.index].name.as_str();
    options.sort_by(|a, b| {
        a.0.price
            .total_cmp(&b.0.price)
            .then_with(|| name(a.1).cmp(name(b.1)))
    });
    options.truncate(MAX_INSTANCE_TYPES);
    let chosen: Vec<InstanceTypeOption> = options
        .iter()
        .map(|(o, t, ..)| InstanceTypeOption {
            name: name(t).to_owned(),
            price: o.price,
            zone: o.zone.clone(),
            capacity_type: o.capacity_type,
        })
        .collect();
    let mut requirements_set = reqs.clone();
    requirements_set.add(
        labels::INSTANCE_TYPE,
        ValueSet::one_of(chosen.iter().map(|o| o.name.clone())),
    );
    let mut zones = BTreeSet::new();
    let mut capacity_types = BTreeSet::new();
    for (_, _, z, ct) in &options {
        if let Some(values) = z.as_deref().and_then(ValueSet::finite_values) {
            zones.extend(values.iter().cloned());
        }
        if let Some(values) = ct.as_deref().and_then(ValueSet::finite_values) {
            capacity_types.extend(values.iter().cloned());
        }
    }
    requirements_set.add(labels::TOPOLOGY_ZONE, ValueSet::one_of(zones));
    requirements_set.add(labels::CAPACITY_TYPE, ValueSet::one_of(capacity_types));
    let mut requests = c.requests.clone();
    if let Some((_, t, _, _)) = options.first() {
        add(&mut requests, &t.daemon_overhead);
    }
    let mut labels = np.labels.clone();
    labels.extend(requirements_set.labels());
    NewNodeClaim {
        node_pool: np.name.clone(),
        requirements: requirements_set.to_requirements(),
        labels,
        taints: np.taints.clone(),
        startup_taints: np.startup_taints.clone(),
        price: chosen.first().map_or(0.0, |o| o.price),
        instance_types: chosen,
        pods: c.pods.iter().map(|&i| input.pods[i].key.clone()).collect(),
        requests,
    }
}

// ---- reasons --------------------------------------------------------------------------------------------

fn resource_amount(name: &str, milli: i64) -> String {
    match name {
        resource::CPU => format!("{}", (milli as f64 / 1000.0 * 100.0).round() / 100.0),
        resource::PODS | resource::NODES => format!("{}", milli / 1000),
        _ => Milli(milli).to_string(),
    }
}

/// Why no NodePool can host `p`: one line naming the constraint and the numbers.
fn explain(
    input: &SchedulingInput,
    pools: &[PreparedPool],
    charged: &[Resources],
    p: &Pod,
    info: &PodInfo,
    topology_keys: &[String],
) -> String {
    if pools.is_empty() {
        return "no NodePool exists".to_owned();
    }
    let mut reasons: Vec<(String, String)> = Vec::new();
    let mut taint_blocked: Vec<String> = Vec::new();
    for (pool_idx, pool) in pools.iter().enumerate() {
        let npi = &input.node_pools[pool.input];
        let np = &npi.node_pool;
        let reason = if !np.ready {
            format!(
                "NodePool {} is not ready: {}",
                np.name,
                if np.not_ready_reason.is_empty() {
                    "no reason given"
                } else {
                    &np.not_ready_reason
                }
            )
        } else if let Some(t) = untolerated(&p.tolerations, &np.taints) {
            taint_blocked.push(pod::taint_display(t));
            format!(
                "NodePool {} has taint {} that the pod does not tolerate",
                np.name,
                pod::taint_display(t)
            )
        } else if pool.types.is_empty() {
            format!(
                "NodePool {} allows no instance type with an available offering",
                np.name
            )
        } else {
            explain_pool(pool, &charged[pool_idx], npi, info, topology_keys)
        };
        reasons.push((np.name.clone(), reason));
    }
    if taint_blocked.len() == pools.len() {
        taint_blocked.sort();
        taint_blocked.dedup();
        return format!("no NodePool tolerates taint {}", taint_blocked.join(" or "));
    }
    if reasons.len() == 1 {
        return reasons.remove(0).1;
    }
    reasons
        .into_iter()
        .map(|(_, r)| r)
        .collect::<Vec<_>>()
        .join("; ")
}

fn explain_pool(
    pool: &PreparedPool,
    charged: &Resources,
    npi: &NodePoolInput,
    info: &PodInfo,
    topology_keys: &[String],
) -> String {
    let np = &npi.node_pool;
    // Requirements.
    let compatible: Vec<&PoolType> = pool
        .types
        .iter()
        .filter(|t| {
            info.alternatives
                .iter()
                .any(|alt| t.reqs.admits(alt).is_ok())
        })
        .collect();
    if compatible.is_empty() {
        let alt = &info.alternatives[0];
        let conflict = pool
            .template
            .admits(alt)
            .err()
            .or_else(|| pool.types.first().and_then(|t| t.reqs.admits(alt).err()));
        return match conflict {
            Some(c) => format!("NodePool {} cannot satisfy requirement {}", np.name, c),
            None => format!(
                "NodePool {} has no instance type matching the pod's requirements",
                np.name
            ),
        };
    }
    // Resources.
    let fitting: Vec<&&PoolType> = compatible
        .iter()
        .filter(|t| fits(&info.requests, &t.room))
        .collect();
    if fitting.is_empty() {
        let (name, need) = info
            .requests
            .iter()
            .find(|(name, v)| compatible.iter().all(|t| *v > t.room.get(name)))
            .unwrap_or_else(|| info.requests.iter().next().unwrap_or((resource::CPU, 0)));
        let largest = compatible
            .iter()
            .map(|t| t.room.get(name))
            .max()
            .unwrap_or(0);
        return format!(
            "needs {} {name}; the largest type NodePool {} allows has {} allocatable",
            resource_amount(name, need),
            np.name,
            resource_amount(name, largest)
        );
    }
    // Limits.
    let remaining = remaining_for(pool, charged, &Resources::new());
    if let Some(rem) = remaining {
        for (name, limit) in pool.limits.iter() {
            let smallest = if name == resource::NODES {
                1000
            } else {
                fitting
                    .iter()
                    .map(|t| t.capacity.get(name))
                    .min()
                    .unwrap_or(0)
            };
            if smallest > rem.get(name) {
                let in_use = pool.used.get(name) + charged.get(name);
                return format!(
                    "NodePool {} limit {name}={} reached ({} in use)",
                    np.name,
                    resource_amount(name, limit),
                    resource_amount(name, in_use)
                );
            }
        }
    }
    if !topology_keys.is_empty() {
        return format!(
            "NodePool {}: topology spread or pod (anti-)affinity on {} cannot be satisfied",
            np.name,
            topology_keys.join(", ")
        );
    }
    format!(
        "NodePool {}: no instance type fits the pod beside its constraints (minValues or host ports)",
        np.name
    )
}
