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

mod classes;
mod domains;
mod explain;
mod offering;
mod packing;
mod plan;
mod prepare;
mod state;

pub use plan::{
    ExistingNode, InFlightClaim, InstanceTypeOption, MAX_INSTANCE_TYPES, NewNodeClaim,
    NodePoolInput, Placement, Plan, SchedulingInput, SolveStats,
};
pub use prepare::daemon_runs_on_labels;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use crate::labels;
use crate::model::{ObjectKey, Pod, PodPhase, Resources, resource};
use crate::pod::{effective_requests, requirement_alternatives};
use crate::topology::{Constraint, DomainId, KeyId, Topology};
use classes::{Class, class_key, input_spread, selector_keys, universe, views_for};
use domains::record_on_bin;
use offering::finish_claim;
use prepare::{Bins, PodInfo, prepare_bins, prepare_pools};
use state::{Cx, State};

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
