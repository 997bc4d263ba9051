//! An independent plan checker: given the input and a plan, verifies every constraint and limit
//! without the solver's bookkeeping, from concrete node labels. Tests run it on every plan the
//! solver emits, including random workloads.
//!
//! For a new NodeClaim the checker does not know which of its instance types will be launched,
//! so every listed option must be valid: its labels (with the zone and capacity type of the
//! offering listed for it) satisfy the NodePool and every pod, and its allocatable holds the
//! pods plus the DaemonSets that would run there.

use std::collections::{BTreeMap, BTreeSet};

use crate::labels;
use crate::model::{InstanceType, Labels, Node, Pod, PodPhase, Resources, Taint, resource};
use crate::pod::{add, effective_requests, fits, host_ports_conflict, untolerated};
use crate::requirements::labels_match;
use crate::solver::{MAX_INSTANCE_TYPES, NewNodeClaim, Plan, SchedulingInput};
use crate::sync::NominationTarget;

/// Whether a node with `labels` satisfies the pod's node selector, volume requirements and one
/// of its required node-affinity terms.
pub fn pod_matches_labels(p: &Pod, labels: &Labels) -> bool {
    let selector = p
        .node_selector
        .iter()
        .all(|(k, v)| labels.get(k) == Some(v));
    let volumes = p
        .volume_requirements
        .iter()
        .all(|r| labels_match(labels, r));
    let affinity = p.node_affinity.as_ref().is_none_or(|a| {
        a.required.is_empty()
            || a.required.iter().any(|term| {
                term.match_expressions
                    .iter()
                    .all(|r| labels_match(labels, r))
            })
    });
    selector && volumes && affinity
}

fn daemon_overhead(
    input: &SchedulingInput,
    labels: &Labels,
    taints: &[Taint],
    running: &BTreeSet<&str>,
) -> Resources {
    let mut out = Resources::new();
    for ds in &input.daemon_sets {
        if !running.contains(ds.key.name.as_str())
            && untolerated(&ds.template.tolerations, taints).is_none()
            && pod_matches_labels(&ds.template, labels)
        {
            add(&mut out, &effective_requests(&ds.template));
        }
    }
    out
}

/// The labels a node of `it` launched by `claim` in this zone and capacity type would carry.
fn option_labels(
    claim: &NewNodeClaim,
    it: &InstanceType,
    zone: &str,
    capacity_type: &str,
) -> Labels {
    let mut l = claim.labels.clone();
    for r in &it.requirements {
        if r.operator == crate::model::Operator::In && r.values.len() == 1 {
            l.insert(r.key.clone(), r.values[0].clone());
        }
    }
    l.insert(labels::INSTANCE_TYPE.to_owned(), it.name.clone());
    l.insert(labels::TOPOLOGY_ZONE.to_owned(), zone.to_owned());
    l.insert(labels::CAPACITY_TYPE.to_owned(), capacity_type.to_owned());
    l.insert(labels::NODE_POOL.to_owned(), claim.node_pool.clone());
    l
}

/// Every violation found, as sentences; empty means the plan is valid.
pub fn check(input: &SchedulingInput, plan: &Plan) -> Vec<String> {
    let mut v = Vec::new();
    let pods: BTreeMap<_, &Pod> = input.pods.iter().map(|p| (p.key.clone(), p)).collect();

    // Each pending pod is decided exactly once.
    let mut seen: BTreeMap<_, usize> = BTreeMap::new();
    for key in plan
        .placements
        .iter()
        .map(|p| &p.pod)
        .chain(plan.new_node_claims.iter().flat_map(|c| &c.pods))
        .chain(plan.unschedulable.iter().map(|u| &u.pod))
    {
        *seen.entry(key.clone()).or_default() += 1;
        if !pods.contains_key(key) {
            v.push(format!("plan mentions unknown pod {key}"));
        }
    }
    for p in &input.pods {
        let pending =
            p.node_name.is_none() && !matches!(p.phase, PodPhase::Succeeded | PodPhase::Failed);
        match (pending, seen.get(&p.key).copied().unwrap_or(0)) {
            (true, 1) | (false, 0) => {}
            (true, n) => v.push(format!("pod {} is decided {n} times", p.key)),
            (false, _) => v.push(format!("pod {} is not pending but was planned", p.key)),
        }
    }

    // Existing nodes.
    let mut on_node: BTreeMap<&str, Vec<&Pod>> = BTreeMap::new();
    for pl in &plan.placements {
        let Some(p) = pods.get(&pl.pod) else { continue };
        match &pl.target {
            NominationTarget::Node(name) => on_node.entry(name.as_str()).or_default().push(p),
            NominationTarget::NodeClaim(name) => {
                match input
                    .node_claims
                    .iter()
                    .find(|c| &c.node_claim.name == name)
                {
                    None => v.push(format!("pod {} placed on unknown NodeClaim {name}", p.key)),
                    Some(c) => {
                        if let Some(t) = untolerated(&p.tolerations, &c.node_claim.taints) {
                            v.push(format!(
                                "pod {} does not tolerate taint {} of NodeClaim {name}",
                                p.key,
                                crate::pod::taint_display(t)
                            ));
                        }
                    }
                }
            }
        }
    }
    for (name, placed) in &on_node {
        let Some(n) = input.nodes.iter().find(|n| n.node.name == *name) else {
            v.push(format!("pods placed on unknown node {name}"));
            continue;
        };
        check_node(&mut v, input, &n.node, &n.pods, placed);
    }

    // New claims.
    let mut charged: BTreeMap<&str, Resources> = BTreeMap::new();
    for (i, claim) in plan.new_node_claims.iter().enumerate() {
        let Some(npi) = input
            .node_pools
            .iter()
            .find(|p| p.node_pool.name == claim.node_pool)
        else {
            v.push(format!("claim {i}: unknown NodePool {}", claim.node_pool));
            continue;
        };
        let np = &npi.node_pool;
        if !np.ready {
            v.push(format!("claim {i}: NodePool {} is not ready", np.name));
        }
        if claim.instance_types.is_empty() || claim.instance_types.len() > MAX_INSTANCE_TYPES {
            v.push(format!(
                "claim {i}: {} instance types",
                claim.instance_types.len()
            ));
        }
        if claim
            .instance_types
            .windows(2)
            .any(|w| w[0].price > w[1].price)
        {
            v.push(format!("claim {i}: instance types not cheapest first"));
        }
        if claim
            .instance_types
            .first()
            .is_some_and(|o| o.price != claim.price)
        {
            v.push(format!(
                "claim {i}: price {} is not its cheapest option's",
                claim.price
            ));
        }
        let claim_pods: Vec<&Pod> = claim
            .pods
            .iter()
            .filter_map(|k| pods.get(k).copied())
            .collect();
        for (a, p) in claim_pods.iter().enumerate() {
            if let Some(t) = untolerated(&p.tolerations, &np.taints) {
                v.push(format!(
                    "claim {i}: pod {} does not tolerate taint {}",
                    p.key,
                    crate::pod::taint_display(t)
                ));
            }
            for q in &claim_pods[a + 1..] {
                if host_ports_conflict(&p.host_ports, &q.host_ports) {
                    v.push(format!(
                        "claim {i}: pods {} and {} share a host port",
                        p.key, q.key
                    ));
                }
            }
        }
        let mut requests = Resources::new();
        for p in &claim_pods {
            add(&mut requests, &effective_requests(p));
        }
        let mut worst = Resources::new();
        let mut min_values: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
        for o in &claim.instance_types {
            let Some(it) = npi.instance_types.iter().find(|t| t.name == o.name) else {
                v.push(format!(
                    "claim {i}: {} is not an instance type of NodePool {}",
                    o.name, np.name
                ));
                continue;
            };
            let offering = it
                .offerings
                .iter()
                .find(|x| x.zone == o.zone && x.capacity_type == o.capacity_type && x.available);
            match offering {
                None => v.push(format!(
                    "claim {i}: {} has no available offering {} {}",
                    o.name,
                    o.zone,
                    o.capacity_type.as_str()
                )),
                Some(x) if x.price != o.price => v.push(format!(
                    "claim {i}: {} priced {} but its offering costs {}",
                    o.name, o.price, x.price
                )),
                Some(_) => {}
            }
            let l = option_labels(claim, it, &o.zone, o.capacity_type.as_str());
            for r in &np.requirements {
                if !labels_match(&l, r) {
                    v.push(format!(
                        "claim {i}: option {} breaks NodePool requirement {} {:?} {:?}",
                        o.name, r.key, r.operator, r.values
                    ));
                }
                if r.min_values.is_some()
                    && let Some(val) = l.get(&r.key)
                {
                    min_values
                        .entry(r.key.as_str())
                        .or_default()
                        .insert(val.clone());
                }
            }
            for p in &claim_pods {
                if !pod_matches_labels(p, &l) {
                    v.push(format!(
                        "claim {i}: option {} does not satisfy pod {}'s node requirements",
                        o.name, p.key
                    ));
                }
            }
            let mut need = requests.clone();
            add(
                &mut need,
                &daemon_overhead(input, &l, &np.taints, &BTreeSet::new()),
            );
            if !fits(&need, &it.allocatable()) {
                v.push(format!(
                    "claim {i}: pods and DaemonSets do not fit option {}",
                    o.name
                ));
            }
            for (name, cap) in it.capacity.iter() {
                if cap > worst.get(name) {
                    worst.set(name, cap);
                }
            }
        }
        for r in &np.requirements {
            if let Some(min) = r.min_values
                && min_values.get(r.key.as_str()).map_or(0, BTreeSet::len) < min as usize
            {
                v.push(format!(
                    "claim {i}: fewer than {min} values of {} among its options",
                    r.key
                ));
            }
        }
        worst.set(resource::NODES, 1000);
        add(charged.entry(np.name.as_str()).or_default(), &worst);
    }

    // Limits: existing nodes, in-flight claims and the worst case of every new claim.
    for npi in &input.node_pools {
        let np = &npi.node_pool;
        if np.limits.is_empty() {
            continue;
        }
        let mut used = charged.get(np.name.as_str()).cloned().unwrap_or_default();
        let claimed_nodes: BTreeSet<&str> = input
            .node_claims
            .iter()
            .map(|c| c.node_claim.node_name.as_str())
            .collect();
        for n in input.nodes.iter().filter(|n| {
            n.node.labels.get(labels::NODE_POOL) == Some(&np.name)
                && !claimed_nodes.contains(n.node.name.as_str())
        }) {
            add(&mut used, &n.node.capacity);
            used.set(resource::NODES, used.get(resource::NODES) + 1000);
        }
        for c in input
            .node_claims
            .iter()
            .filter(|c| c.node_claim.node_pool == np.name)
        {
            if c.node_claim.capacity.is_empty() {
                // Unknown capacity: the largest instance type the claim allows bounds it.
                let mut largest = Resources::new();
                for it in npi
                    .instance_types
                    .iter()
                    .filter(|it| type_allowed(it, &c.node_claim.requirements))
                {
                    for (name, cap) in it.capacity.iter() {
                        if cap > largest.get(name) {
                            largest.set(name, cap);
                        }
                    }
                }
                add(&mut used, &largest);
            } else {
                add(&mut used, &c.node_claim.capacity);
            }
            used.set(resource::NODES, used.get(resource::NODES) + 1000);
        }
        if !plan.new_node_claims.iter().any(|c| c.node_pool == np.name) {
            continue;
        }
        for (name, limit) in np.limits.iter() {
            if used.get(name) > limit {
                v.push(format!(
                    "NodePool {} limit {name} exceeded: {} > {limit}",
                    np.name,
                    used.get(name)
                ));
            }
        }
    }
    v.extend(check_topology(input, plan));
    v
}

/// Whether an instance type can satisfy requirements, judged on the labels it defines.
fn type_allowed(it: &InstanceType, reqs: &[crate::model::Requirement]) -> bool {
    let mut l = Labels::new();
    for r in &it.requirements {
        if r.operator == crate::model::Operator::In && r.values.len() == 1 {
            l.insert(r.key.clone(), r.values[0].clone());
        }
    }
    l.insert(labels::INSTANCE_TYPE.to_owned(), it.name.clone());
    reqs.iter()
        .filter(|r| l.contains_key(&r.key))
        .all(|r| labels_match(&l, r))
}

fn check_node(
    v: &mut Vec<String>,
    input: &SchedulingInput,
    node: &Node,
    bound: &[Pod],
    placed: &[&Pod],
) {
    if !node.ready || node.unschedulable || node.deleting {
        v.push(format!(
            "pods placed on node {} that is not ready, cordoned or deleting",
            node.name
        ));
    }
    let running: BTreeSet<&str> = bound
        .iter()
        .filter_map(|p| crate::pod::daemon_set_owner(p))
        .collect();
    let mut used = daemon_overhead(input, &node.labels, &node.taints, &running);
    let live: Vec<&Pod> = bound
        .iter()
        .filter(|p| !matches!(p.phase, PodPhase::Succeeded | PodPhase::Failed))
        .collect();
    for p in live.iter().chain(placed.iter()) {
        add(&mut used, &effective_requests(p));
    }
    if !fits(&used, &node.allocatable) {
        v.push(format!("node {} is over-committed", node.name));
    }
    for (a, p) in placed.iter().enumerate() {
        if let Some(t) = untolerated(&p.tolerations, &node.taints) {
            v.push(format!(
                "pod {} does not tolerate taint {} of node {}",
                p.key,
                crate::pod::taint_display(t),
                node.name
            ));
        }
        if !pod_matches_labels(p, &node.labels) {
            v.push(format!(
                "pod {} does not match node {}'s labels",
                p.key, node.name
            ));
        }
        for q in live.iter().copied().chain(placed[a + 1..].iter().copied()) {
            if host_ports_conflict(&p.host_ports, &q.host_ports) {
                v.push(format!(
                    "pods {} and {} share a host port on node {}",
                    p.key, q.key, node.name
                ));
            }
        }
    }
}

// ---- topology ------------------------------------------------------------------------------------------

use crate::model::WhenUnsatisfiable;
use crate::requirements::Requirements;
use crate::topology::{NodeFilter, effective_selector, selector_matches, term_namespaces};

/// A pod and the node it runs or will run on.
struct PlacedPod<'a> {
    pod: &'a Pod,
    /// The node's labels (hostname included): its domains.
    labels: Labels,
    /// Its labels as requirements, or a NodeClaim's requirements (for spread node filters).
    reqs: Requirements,
    /// Whether the node is a NodeClaim not launched yet.
    claim: bool,
    /// Whether it is one of the plan's new NodeClaims (whose domains the plan decides).
    new_claim: bool,
    taints: Vec<Taint>,
    /// Placed by the plan (not already running).
    new: bool,
}

/// A pod on an in-flight claim (`new`: placed there by the plan).
fn on_claim<'a>(p: &'a Pod, c: &crate::model::NodeClaim, new: bool) -> PlacedPod<'a> {
    let mut l = c.labels.clone();
    for r in &c.requirements {
        if r.operator == crate::model::Operator::In && r.values.len() == 1 {
            l.insert(r.key.clone(), r.values[0].clone());
        }
    }
    let mut reqs = Requirements::from_requirements(&c.requirements);
    for (k, v) in &c.labels {
        reqs.add(k, crate::requirements::ValueSet::one_of([v.clone()]));
    }
    l.insert(labels::HOSTNAME.to_owned(), format!("nodeclaim:{}", c.name));
    PlacedPod {
        pod: p,
        labels: l,
        reqs,
        claim: true,
        new_claim: false,
        taints: c.taints.clone(),
        new,
    }
}

/// Where each pod runs: bound pods, pods nominated to in-flight claims, placed pods, pods on
/// new claims.
fn pod_domains<'a>(input: &'a SchedulingInput, plan: &Plan) -> Vec<PlacedPod<'a>> {
    let mut out = Vec::new();
    let node_labels = |n: &Node| {
        let mut l = n.labels.clone();
        l.entry(labels::HOSTNAME.to_owned())
            .or_insert_with(|| n.name.clone());
        l
    };
    let on_node = |p: &'a Pod, n: &Node, new: bool| PlacedPod {
        pod: p,
        labels: node_labels(n),
        reqs: Requirements::from_labels(&n.labels),
        claim: false,
        new_claim: false,
        taints: n.taints.clone(),
        new,
    };
    for n in &input.nodes {
        for p in n
            .pods
            .iter()
            .filter(|p| !matches!(p.phase, PodPhase::Succeeded | PodPhase::Failed))
        {
            out.push(on_node(p, &n.node, false));
        }
    }
    let pods: BTreeMap<_, &Pod> = input.pods.iter().map(|p| (p.key.clone(), p)).collect();
    // Pods nominated to an in-flight claim run there (on its node once it registered),
    // unless the plan decides them (they are among the pods to place).
    for c in &input.node_claims {
        let node = (!c.node_claim.node_name.is_empty())
            .then(|| {
                input
                    .nodes
                    .iter()
                    .find(|n| n.node.name == c.node_claim.node_name)
            })
            .flatten();
        for p in c.pods.iter().filter(|p| {
            p.node_name.is_none()
                && !matches!(p.phase, PodPhase::Succeeded | PodPhase::Failed)
                && !pods.contains_key(&p.key)
        }) {
            out.push(match node {
                Some(n) => on_node(p, &n.node, false),
                None => on_claim(p, &c.node_claim, false),
            });
        }
    }
    for pl in &plan.placements {
        let Some(p) = pods.get(&pl.pod) else { continue };
        let placed = match &pl.target {
            NominationTarget::Node(name) => input
                .nodes
                .iter()
                .find(|n| &n.node.name == name)
                .map(|n| on_node(p, &n.node, true)),
            NominationTarget::NodeClaim(name) => input
                .node_claims
                .iter()
                .find(|c| &c.node_claim.name == name)
                .map(|c| on_claim(p, &c.node_claim, true)),
        };
        out.extend(placed);
    }
    for (i, c) in plan.new_node_claims.iter().enumerate() {
        let mut l = c.labels.clone();
        l.insert(labels::HOSTNAME.to_owned(), format!("new:{i}"));
        let mut reqs = Requirements::from_requirements(&c.requirements);
        for (k, v) in &c.labels {
            reqs.add(k, crate::requirements::ValueSet::one_of([v.clone()]));
        }
        for key in &c.pods {
            if let Some(p) = pods.get(key) {
                out.push(PlacedPod {
                    pod: p,
                    labels: l.clone(),
                    reqs: reqs.clone(),
                    claim: true,
                    new_claim: true,
                    taints: c.taints.clone(),
                    new: true,
                });
            }
        }
    }
    out
}

const NEW_NODE: &str = "\u{0}new-node";

/// Every domain of `key` a pod may run in: eligible nodes, and every offering of every
/// NodePool it tolerates whose labels satisfy the pool and the pod (for hostname, one
/// placeholder domain standing for any new node).
fn reachable_domains(
    input: &SchedulingInput,
    p: &Pod,
    key: &str,
    honor_affinity: bool,
    honor_taints: bool,
) -> Option<BTreeSet<String>> {
    let hostname = key == labels::HOSTNAME;
    let mut out = BTreeSet::new();
    for n in input
        .nodes
        .iter()
        .filter(|n| n.node.ready && !n.node.unschedulable && !n.node.deleting)
    {
        if (honor_affinity && !pod_matches_labels(p, &n.node.labels))
            || (honor_taints && untolerated(&p.tolerations, &n.node.taints).is_some())
        {
            continue;
        }
        let name = n
            .node
            .labels
            .get(key)
            .cloned()
            .or_else(|| hostname.then(|| n.node.name.clone()));
        if let Some(d) = name {
            out.insert(d);
        }
    }
    for npi in input.node_pools.iter().filter(|np| {
        np.node_pool.ready && untolerated(&p.tolerations, &np.node_pool.taints).is_none()
    }) {
        let np = &npi.node_pool;
        for it in &npi.instance_types {
            for o in it.offerings.iter().filter(|o| o.available) {
                let claim = NewNodeClaim {
                    node_pool: np.name.clone(),
                    requirements: vec![],
                    labels: np.labels.clone(),
                    taints: vec![],
                    startup_taints: vec![],
                    instance_types: vec![],
                    pods: vec![],
                    requests: Resources::new(),
                    price: 0.0,
                };
                let l = option_labels(&claim, it, &o.zone, o.capacity_type.as_str());
                if np.requirements.iter().all(|r| labels_match(&l, r)) && pod_matches_labels(p, &l)
                {
                    if hostname {
                        // A new node would be a domain of its own, holding none yet.
                        out.insert(NEW_NODE.to_owned());
                    } else if let Some(d) = l.get(key) {
                        out.insert(d.clone());
                    }
                }
            }
        }
    }
    Some(out)
}

/// Required topology spread and pod (anti-)affinity of every pod the plan places.
pub fn check_topology(input: &SchedulingInput, plan: &Plan) -> Vec<String> {
    let mut v = Vec::new();
    let placed = pod_domains(input, plan);
    let matching = |namespaces: &crate::topology::Namespaces,
                    selector: &crate::model::LabelSelector,
                    key: &str,
                    domain: &str,
                    except: &Pod,
                    filter: &NodeFilter| {
        placed
            .iter()
            .filter(|q| {
                q.pod.key != except.key
                    && namespaces.contains(&q.pod.key.namespace)
                    && selector_matches(selector, &q.pod.labels)
                    && q.labels.get(key).is_some_and(|d| d == domain)
                    && filter.passes(&q.reqs, q.claim, &q.taints)
            })
            .count() as i64
    };
    let everywhere = NodeFilter::default();
    for placed_pod in placed.iter().filter(|q| q.new) {
        let (p, l) = (placed_pod.pod, &placed_pod.labels);
        for c in p
            .topology_spread
            .iter()
            .filter(|c| c.when_unsatisfiable == WhenUnsatisfiable::DoNotSchedule)
        {
            let Some(selector) =
                effective_selector(p, c.label_selector.as_ref(), &c.match_label_keys, &[])
            else {
                continue;
            };
            let ns = crate::topology::Namespaces::Names([p.key.namespace.clone()].into());
            let Some(domain) = l.get(&c.topology_key) else {
                v.push(format!(
                    "pod {} spreads on {} but its node has no such label",
                    p.key, c.topology_key
                ));
                continue;
            };
            let own = i64::from(selector_matches(&selector, &p.labels));
            let filter = NodeFilter::of(p, c);
            let count = matching(&ns, &selector, &c.topology_key, domain, p, &filter) + own;
            use crate::model::NodeInclusionPolicy::Honor;
            let min = match reachable_domains(
                input,
                p,
                &c.topology_key,
                c.node_affinity_policy == Honor,
                c.node_taints_policy == Honor,
            ) {
                None => 0,
                Some(u)
                    if c.min_domains
                        .is_some_and(|m| (u.len() as i64) < i64::from(m)) =>
                {
                    0
                }
                Some(u) => u
                    .iter()
                    .map(|d| {
                        matching(&ns, &selector, &c.topology_key, d, p, &filter)
                            + if d == domain { own } else { 0 }
                    })
                    .min()
                    .unwrap_or(0),
            };
            if count - min > i64::from(c.max_skew) {
                v.push(format!(
                    "pod {} breaks spread on {}: {count} in {domain}, minimum {min}, maxSkew {}",
                    p.key, c.topology_key, c.max_skew
                ));
            }
        }
        for (affinity, anti) in [
            (p.pod_affinity.as_ref(), false),
            (p.pod_anti_affinity.as_ref(), true),
        ] {
            for term in affinity.map(|a| a.required.as_slice()).unwrap_or_default() {
                let Some(selector) = crate::topology::term_selector(p, term) else {
                    continue;
                };
                let ns = term_namespaces(p, term, &input.namespaces);
                let Some(domain) = l.get(&term.topology_key) else {
                    if !anti {
                        v.push(format!(
                            "pod {} has affinity on {} but its node has no such label",
                            p.key, term.topology_key
                        ));
                    } else if placed_pod.new_claim {
                        // The claim gets a value at launch: the plan must decide it.
                        v.push(format!(
                            "pod {} has anti-affinity on {} but its new NodeClaim does not pin it",
                            p.key, term.topology_key
                        ));
                    }
                    continue;
                };
                let here = matching(&ns, &selector, &term.topology_key, domain, p, &everywhere);
                if anti && here > 0 {
                    v.push(format!(
                        "pod {} shares {}={domain} with a pod its anti-affinity excludes",
                        p.key, term.topology_key
                    ));
                }
                if !anti && here == 0 {
                    let self_match =
                        ns.contains(&p.key.namespace) && selector_matches(&selector, &p.labels);
                    let elsewhere = placed.iter().any(|q| {
                        q.pod.key != p.key
                            && ns.contains(&q.pod.key.namespace)
                            && selector_matches(&selector, &q.pod.labels)
                            && q.labels
                                .get(&term.topology_key)
                                .is_some_and(|d| d != domain)
                    });
                    if !self_match || elsewhere {
                        v.push(format!(
                            "pod {} has no pod it has affinity to in {}={domain}",
                            p.key, term.topology_key
                        ));
                    }
                }
            }
        }
        // Running and placed pods' anti-affinity must not exclude this pod.
        for (q, ql) in placed
            .iter()
            .filter(|q| q.pod.key != p.key)
            .map(|q| (q.pod, &q.labels))
        {
            for term in q
                .pod_anti_affinity
                .as_ref()
                .map(|a| a.required.as_slice())
                .unwrap_or_default()
            {
                let Some(selector) = crate::topology::term_selector(q, term) else {
                    continue;
                };
                let ns = term_namespaces(q, term, &input.namespaces);
                if !(ns.contains(&p.key.namespace) && selector_matches(&selector, &p.labels)) {
                    continue;
                }
                let theirs = ql.get(&term.topology_key);
                match l.get(&term.topology_key) {
                    Some(mine) if theirs == Some(mine) => v.push(format!(
                        "pod {} is placed where pod {}'s anti-affinity excludes it",
                        p.key, q.key
                    )),
                    None if placed_pod.new_claim
                        && theirs.is_some()
                        && term.topology_key != labels::HOSTNAME =>
                    {
                        v.push(format!(
                            "pod {} is selected by pod {}'s anti-affinity on {} but its new NodeClaim does not pin it",
                            p.key, q.key, term.topology_key
                        ))
                    }
                    _ => {}
                }
            }
        }
    }
    v
}
