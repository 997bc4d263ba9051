//! `consolidation`: one disruption evaluation over a cluster that has shrunk since it was
//! provisioned (issue 12's benchmark).
//!
//! The cluster is built as a real one gets that way: the `catalog-mix` workload is provisioned
//! by the solver (so every node is a type and zone the solver would pick for its pods), then
//! each node keeps a random share of its pods (uniform from `--keep-min`, 10 % by default, to
//! 100 %; at least one pod: the
//! Deployments scaled down), as after a busy period. Every node runs the two DaemonSets of
//! `catalog-mix`. So that blocks are exercised too, 2 % of the nodes hold a pod annotated
//! `karpenter.sh/do-not-disrupt` and two Deployments have a PodDisruptionBudget that allows
//! nothing now.
//!
//! The figures: the time of one [`disruption::decide`], what it decided, and what that decision
//! saves against what any repacking could save (the cluster's price less the LP lower bound of
//! its pods on fresh nodes).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use berth_scheduler_core::disruption::{self, DisruptionInput, Options};
use berth_scheduler_core::labels;
use berth_scheduler_core::model::*;
use berth_scheduler_core::solver::{self, ExistingNode, NewNodeClaim, SchedulingInput};
use berth_scheduler_core::sync::NominationTarget;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The decision's clock: nodes were created two hours before it.
fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_644_800)
}

/// Pods per node the catalog-mix provisioning gives on average (about 30); a first guess of the
/// pods needed for `nodes` nodes, corrected once.
const PODS_PER_NODE_GUESS: usize = 30;

/// A shrunk cluster of `nodes` nodes (see the module docs), as the scheduler service would hand
/// it to [`disruption::decide`].
pub fn cluster(
    nodes: usize,
    keep_min: f64,
    seed: u64,
    catalog: &berth_catalog::Catalog,
) -> DisruptionInput {
    let mut pods = nodes * PODS_PER_NODE_GUESS;
    let (mut fresh, mut plan);
    loop {
        fresh = crate::workloads::catalog_mix(pods, seed, catalog);
        plan = solver::solve(&fresh);
        let got = plan.new_node_claims.len();
        if got >= nodes {
            break;
        }
        pods = pods * nodes / got.max(1) + pods / 20;
    }
    let mut rng = StdRng::seed_from_u64(seed ^ 0x00c0_501d);
    let mut pool = fresh.node_pools[0].node_pool.clone();
    pool.disruption.consolidation_policy = ConsolidationPolicy::WhenEmptyOrUnderutilized;
    pool.disruption.consolidate_after = Some(Duration::ZERO);
    fresh.node_pools[0].node_pool = pool.clone();
    let by_key: BTreeMap<&ObjectKey, &Pod> = fresh.pods.iter().map(|p| (&p.key, p)).collect();
    let created = now() - Duration::from_secs(2 * 3600);

    let mut cluster_nodes = Vec::with_capacity(nodes);
    let mut claims = Vec::with_capacity(nodes);
    for (i, new) in plan.new_node_claims.iter().take(nodes).enumerate() {
        let name = format!("node-{i:05}");
        let keep = rng.random_range(keep_min.clamp(0.0, 1.0)..=1.0);
        let mut pods: Vec<Pod> = new
            .pods
            .iter()
            .filter_map(|k| by_key.get(k).map(|p| (*p).clone()))
            .filter(|_| rng.random_bool(keep))
            .collect();
        if pods.is_empty()
            && let Some(p) = new.pods.first().and_then(|k| by_key.get(k))
        {
            pods.push((*p).clone());
        }
        if rng.random_range(0..100) < 2
            && let Some(p) = pods.first_mut()
        {
            p.do_not_disrupt = true;
        }
        let (node, claim) = materialize(&name, new, &fresh, created, pods, &pool);
        cluster_nodes.push(node);
        claims.push(claim);
    }

    let pdb = |app: &str| PodDisruptionBudget {
        key: ObjectKey::new("default", &format!("{app}-pdb")),
        selector: LabelSelector {
            match_labels: [("app".to_owned(), app.to_owned())].into(),
            match_expressions: vec![],
        },
        disruptions_allowed: 0,
    };
    let cluster = SchedulingInput {
        now: now(),
        node_pools: fresh.node_pools.clone(),
        nodes: cluster_nodes,
        node_claims: vec![],
        daemon_sets: fresh.daemon_sets.clone(),
        pods: vec![],
        pod_disruption_budgets: vec![pdb("app-011"), pdb("app-042")],
        namespaces: fresh.namespaces.clone(),
    };
    DisruptionInput {
        cluster,
        node_claims: claims,
        last_pod_event: BTreeMap::new(),
        options: Options::default(),
    }
}

/// The node (with its DaemonSet pods and `pods` bound) and initialized NodeClaim that `new`
/// becomes when launched as its cheapest option.
fn materialize(
    name: &str,
    new: &NewNodeClaim,
    input: &SchedulingInput,
    created: SystemTime,
    pods: Vec<Pod>,
    pool: &NodePool,
) -> (ExistingNode, NodeClaim) {
    let option = &new.instance_types[0];
    let it = input.node_pools[0]
        .instance_types
        .iter()
        .find(|t| t.name == option.name)
        .expect("the plan's instance type is in its pool");
    let mut node_labels: Labels = it
        .requirements
        .iter()
        .filter(|r| r.operator == Operator::In && r.values.len() == 1)
        .map(|r| (r.key.clone(), r.values[0].clone()))
        .collect();
    node_labels.extend(new.labels.clone());
    node_labels.insert(labels::INSTANCE_TYPE.into(), it.name.clone());
    node_labels.insert(labels::TOPOLOGY_ZONE.into(), option.zone.clone());
    node_labels.insert(
        labels::CAPACITY_TYPE.into(),
        option.capacity_type.as_str().into(),
    );
    node_labels.insert(labels::NODE_POOL.into(), pool.name.clone());
    node_labels.insert(labels::HOSTNAME.into(), name.into());
    let provider_id = format!("aws:///{}/i-{name}", option.zone);
    let node = Node {
        name: name.into(),
        provider_id: provider_id.clone(),
        labels: node_labels.clone(),
        taints: vec![],
        capacity: it.capacity.clone(),
        allocatable: it.allocatable(),
        ready: true,
        unschedulable: false,
        deleting: false,
        do_not_disrupt: false,
        created_at: created,
    };
    let mut bound: Vec<Pod> = input
        .daemon_sets
        .iter()
        .map(|ds| {
            let mut p = ds.template.clone();
            p.key = ObjectKey::new(&ds.key.namespace, &format!("{}-{name}", ds.key.name));
            p.owner = Some(OwnerReference {
                kind: "DaemonSet".into(),
                name: ds.key.name.clone(),
                uid: ds.key.name.clone(),
            });
            p
        })
        .chain(pods)
        .collect();
    for p in &mut bound {
        p.node_name = Some(name.into());
        p.nominated_node_claim = None;
        p.phase = PodPhase::Running;
        p.unschedulable = false;
        p.created_at = created;
    }
    let mut claim = NodeClaim::new(
        &format!("{name}-claim"),
        &pool.name,
        pool.node_class_ref.clone(),
    );
    claim.node_name = name.into();
    claim.provider_id = provider_id;
    claim.labels = node_labels;
    claim.annotations = disruption::hash_annotations(pool);
    claim.requirements = new.requirements.clone();
    claim.capacity = node.capacity.clone();
    claim.allocatable = node.allocatable.clone();
    claim.created_at = created;
    claim.expire_after = pool.expire_after;
    claim.conditions = [
        NodeClaimCondition::Launched,
        NodeClaimCondition::Registered,
        NodeClaimCondition::Initialized,
    ]
    .into();
    (ExistingNode { node, pods: bound }, claim)
}

/// The cluster's price per hour (each node's offering).
pub fn price(input: &DisruptionInput) -> f64 {
    let types = &input.cluster.node_pools[0].instance_types;
    input
        .cluster
        .nodes
        .iter()
        .filter_map(|n| {
            let l = &n.node.labels;
            let it = types
                .iter()
                .find(|t| Some(&t.name) == l.get(labels::INSTANCE_TYPE))?;
            it.offerings
                .iter()
                .find(|o| {
                    Some(&o.zone) == l.get(labels::TOPOLOGY_ZONE)
                        && Some(o.capacity_type.as_str())
                            == l.get(labels::CAPACITY_TYPE).map(String::as_str)
                })
                .map(|o| o.price)
        })
        .sum()
}

/// The cluster's reschedulable pods, pending, on no nodes: what a repacking from scratch
/// places (the DaemonSets stay, as overhead on each new node).
pub fn repack_input(input: &DisruptionInput) -> SchedulingInput {
    let pods = input
        .cluster
        .nodes
        .iter()
        .flat_map(|n| &n.pods)
        .filter(|p| disruption::reschedulable(p))
        .map(|p| {
            let mut p = p.clone();
            p.node_name = None;
            p.phase = PodPhase::Pending;
            p.unschedulable = true;
            p
        })
        .collect();
    SchedulingInput {
        now: input.cluster.now,
        node_pools: input.cluster.node_pools.clone(),
        nodes: vec![],
        node_claims: vec![],
        daemon_sets: input.cluster.daemon_sets.clone(),
        pods,
        pod_disruption_budgets: vec![],
        namespaces: input.cluster.namespaces.clone(),
    }
}

/// Applies `decision` as the cluster would carry it out: its nodes go, their pods land where
/// the decision's simulation put them (existing nodes or the replacements, launched as their
/// cheapest option). `round` names the replacements.
pub fn apply(input: &mut DisruptionInput, decision: &disruption::Decision, round: usize) {
    let (_, plan) = disruption::simulation(input, decision);
    let leaving: std::collections::BTreeSet<&str> = decision
        .candidates
        .iter()
        .map(|c| c.node.as_str())
        .collect();
    let mut moving: BTreeMap<ObjectKey, Pod> = BTreeMap::new();
    for n in input
        .cluster
        .nodes
        .iter()
        .filter(|n| leaving.contains(n.node.name.as_str()))
    {
        for p in n.pods.iter().filter(|p| disruption::reschedulable(p)) {
            moving.insert(p.key.clone(), p.clone());
        }
    }
    input
        .cluster
        .nodes
        .retain(|n| !leaving.contains(n.node.name.as_str()));
    input
        .node_claims
        .retain(|c| !leaving.contains(c.node_name.as_str()));
    for placement in &plan.placements {
        let NominationTarget::Node(name) = &placement.target else {
            continue;
        };
        if let (Some(node), Some(mut pod)) = (
            input
                .cluster
                .nodes
                .iter_mut()
                .find(|n| &n.node.name == name),
            moving.remove(&placement.pod),
        ) {
            pod.node_name = Some(name.clone());
            node.pods.push(pod);
        }
    }
    let pool = input.cluster.node_pools[0].node_pool.clone();
    // The replacements as decided (narrowed to the cheaper types), with the pods planned there.
    for (j, new) in decision.replacements.iter().enumerate() {
        let pods = new.pods.iter().filter_map(|k| moving.remove(k)).collect();
        let name = format!("new-{round:04}-{j}");
        let (node, claim) = materialize(&name, new, &input.cluster, input.cluster.now, pods, &pool);
        input.cluster.nodes.push(node);
        input.node_claims.push(claim);
    }
}
