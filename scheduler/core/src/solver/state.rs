//! The packing state: the mutable side of a solve and its placement loops (one by one,
//! and filling targets by alignment).

use std::collections::BTreeMap;

use super::classes::{Class, View};
use super::domains::{claim_domain, claim_requirements, record_on_bin};
use super::explain::explain;
use super::packing::{OpenClaim, best_shape, bin_accepts, claim_full, max_room, try_add};
use super::plan::{Placement, SchedulingInput, SolveStats};
use super::prepare::{Bin, PodInfo, PreparedPool};
use crate::model::{Resources, resource};
use crate::pod::{self, fits, untolerated};
use crate::requirements::{Requirements, ValueSet};
use crate::sync::NominationTarget;
use crate::topology::{self, DomainId, Gate, KeyId, NodeFacts, Topology};

/// The mutable side of a solve.
pub(super) struct State {
    pub(super) bins: Vec<Bin>,
    pub(super) claims: Vec<OpenClaim>,
    pub(super) charged: Vec<Resources>,
    pub(super) topo: Topology,
    pub(super) placements: Vec<Placement>,
    pub(super) unschedulable: Vec<crate::sync::Unschedulable>,
    pub(super) stats: SolveStats,
    /// Claims before this index have no room for any pending pod.
    pub(super) open_from: usize,
    /// Whether claims keep to their cost-optimal shape; lifted for a pod nothing else takes.
    pub(super) respect_caps: bool,
    /// Per (hostname group, cap): claims before the index already hold more than the cap of
    /// the group's pods, so a pod whose gate caps the group per node there skips them.
    /// Counts only grow, so this only advances.
    pub(super) host_cursor: BTreeMap<(usize, i64), usize>,
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
    pub(super) fn place_one_by_one(&mut self, cx: &Cx<'_>, class: &Class, pods: &[usize]) {
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
    pub(super) fn fill_generic(&mut self, cx: &Cx<'_>, classes: &[&Class]) -> Vec<Vec<usize>> {
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
pub(super) struct Cx<'a> {
    pub(super) input: &'a SchedulingInput,
    pub(super) pools: &'a [PreparedPool],
    pub(super) infos: &'a [PodInfo],
    /// The smallest request of any pending pod.
    pub(super) smallest: Resources,
    /// The CPU and memory all pending pods request.
    pub(super) demand: Resources,
    /// Whether placements must be recorded for topology.
    pub(super) track: bool,
    /// The hostname key's id, if any constraint uses it.
    pub(super) host_key: Option<KeyId>,
}
