//! Preparation: NodePools with the instance types they see, existing nodes and in-flight
//! claims as bins, and the pool usage counted against limits.

use std::collections::{BTreeMap, BTreeSet};

use super::offering::cheapest_offering;
use super::plan::{ExistingNode, InFlightClaim, SchedulingInput};
use crate::labels;
use crate::model::{
    DaemonSet, HostPort, InstanceType, Labels, NodeClaim, NodePool, ObjectKey, PodPhase, Resources,
    Taint, resource,
};
use crate::pod::{self, add, effective_requests, requirement_alternatives, untolerated};
use crate::requirements::{Requirements, ValueSet};
use crate::sync::NominationTarget;
use crate::topology::DomainId;

/// An instance type as one NodePool sees it.
pub(super) struct PoolType {
    pub(super) index: usize,
    /// Template ∩ the type's own requirements ∩ its available offerings' zones/capacity types.
    pub(super) reqs: Requirements,
    /// Allocatable less the DaemonSet pods that would run on it.
    pub(super) room: Resources,
    pub(super) capacity: Resources,
    pub(super) daemon_overhead: Resources,
    /// The cheapest available offering the NodePool allows (USD/hour).
    pub(super) price: f64,
}

pub(super) struct PreparedPool {
    pub(super) input: usize,
    pub(super) template: Requirements,
    pub(super) types: Vec<PoolType>,
    /// Limits (milli) and what is already charged against them outside this solve.
    pub(super) limits: Resources,
    pub(super) used: Resources,
}

/// A pod, preprocessed.
pub(super) struct PodInfo {
    pub(super) requests: Resources,
    pub(super) alternatives: Vec<Requirements>,
}

/// Capacity already in use on an existing node or in-flight claim.
pub(super) struct Bin {
    pub(super) target: NominationTarget,
    /// Index into `input.nodes` for a node.
    pub(super) node: Option<usize>,
    /// The labels topology domains are read from (hostname included).
    pub(super) domains: Labels,
    /// Allocatable (for a claim whose type is unknown, the smallest compatible type's).
    pub(super) capacity: Resources,
    pub(super) labels_reqs: Requirements,
    pub(super) taints: Vec<Taint>,
    pub(super) free: Resources,
    pub(super) host_ports: Vec<HostPort>,
    pub(super) usable: bool,
    /// `domains` per topology key id (filled once the keys are known).
    pub(super) domain_ids: Vec<Option<DomainId>>,
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

pub(super) fn prepare_pools(input: &SchedulingInput) -> Vec<PreparedPool> {
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
                    a.price.total_cmp(&b.price).then_with(|| {
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

/// The bins of a solve: existing nodes, then in-flight claims.
pub(super) struct Bins<'a> {
    pub(super) bins: Vec<Bin>,
    /// Pods of [`SchedulingInput::pods`] nominated to an in-flight claim: its bin.
    pub(super) nominated: BTreeMap<ObjectKey, usize>,
    /// Each in-flight claim with the bin its nominated pods run on: its own, or its node's
    /// once the node registered.
    pub(super) in_flight: Vec<(usize, &'a InFlightClaim)>,
}

pub(super) fn prepare_bins(input: &SchedulingInput) -> Bins<'_> {
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
