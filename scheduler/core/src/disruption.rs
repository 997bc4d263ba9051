//! Disruption: which nodes can go, and what (if anything) replaces them. Karpenter v1's
//! methods, in its order, one decision at a time:
//!
//! ```text
//!  nodes + NodeClaims + pods + NodePools (budgets, policy, consolidateAfter) + instance types
//!       │
//!       ├─ 1. Expired        expireAfter passed: forceful, not budgeted, replaced
//!       ├─ 2. Drifted        NodePool hash / requirements changed, or the cloud says so: replaced
//!       ├─ 3. Empty          no reschedulable pods for consolidateAfter: deleted (many at once)
//!       ├─ 4. Underutilized  multi-node: N candidates out, at most one cheaper node in
//!       └─ 5. Underutilized  single-node: delete, or replace with one cheaper node
//!       │
//!       v
//!  DisruptionPlan { decision (at most one), blocked nodes with their reasons, stats }
//! ```
//!
//! Where the pods of candidate nodes would go is asked of the provisioning solver
//! ([`crate::solver::solve`]): the candidates (and nodes already being disrupted) are taken out
//! of the cluster, their reschedulable pods become pending, and a plan that schedules every one
//! of them with no new node (delete) or one cheaper new node (replace) is a consolidation.
//!
//! Always respected (the reason is reported when they block): `karpenter.sh/do-not-disrupt` on
//! pods and nodes, PodDisruptionBudgets that allow no disruption now, NodePool disruption
//! budgets (the most restrictive active one per reason), nodes not yet initialized. Expiration
//! is forceful, as in Karpenter v1: blocks do not hold it (the drain still waits on PDBs and
//! do-not-disrupt pods until the NodeClaim's `terminationGracePeriod`).
//!
//! Pure: time is `DisruptionInput::now`; nothing here reads a clock except for the stats'
//! durations.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant, SystemTime};

use crate::labels;
use crate::model::{
    BudgetNodes, CapacityType, ConsolidationPolicy, DisruptionReason, Labels, Node, NodeClaim,
    NodeClaimCondition, NodePool, ObjectKey, Pod, PodPhase, Resources,
};
use crate::requirements::{Requirements, ValueSet};
use crate::solver::{self, ExistingNode, NewNodeClaim, SchedulingInput};
use crate::topology::selector_matches;

/// Karpenter's rule: a spot node is replaced by a spot node only when at least this many
/// cheaper instance types are possible (so the replacement is not the next to be reclaimed).
pub const MIN_SPOT_TO_SPOT_OPTIONS: usize = 15;

/// Multi-node consolidation looks at most at this many candidates (Karpenter's cap).
pub const MAX_MULTI_NODE_CANDIDATES: usize = 100;
/// Karpenter's `MultiNodeConsolidationTimeoutDuration`.
pub const MULTI_NODE_TIMEOUT: Duration = Duration::from_secs(60);
/// Karpenter's `SingleNodeConsolidationTimeoutDuration`.
pub const SINGLE_NODE_TIMEOUT: Duration = Duration::from_secs(180);

/// The value Berth writes in `karpenter.sh/nodepool-hash-version`. Berth's hash is its own
/// (not Karpenter's hashstructure), so it carries its own version: a NodeClaim hashed by
/// another version (Karpenter's `v3`) is not called drifted for that, as Karpenter does on a
/// version change.
pub const NODE_POOL_HASH_VERSION: &str = "berth-v1";

/// The disruption methods, in the order they are tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Method {
    Expired,
    Drifted,
    Empty,
    Underutilized,
}

impl Method {
    /// Karpenter's spelling (`Expired`, `Drifted`, `Empty`, `Underutilized`).
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Expired => "Expired",
            Method::Drifted => "Drifted",
            Method::Empty => "Empty",
            Method::Underutilized => "Underutilized",
        }
    }

    /// The budget reason that limits this method; expiration is not budgeted.
    pub fn budget_reason(self) -> Option<DisruptionReason> {
        match self {
            Method::Expired => None,
            Method::Drifted => Some(DisruptionReason::Drifted),
            Method::Empty => Some(DisruptionReason::Empty),
            Method::Underutilized => Some(DisruptionReason::Underutilized),
        }
    }
}

impl std::str::FromStr for Method {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "Expired" => Ok(Method::Expired),
            "Drifted" => Ok(Method::Drifted),
            "Empty" => Ok(Method::Empty),
            "Underutilized" => Ok(Method::Underutilized),
            other => Err(format!(
                "{other:?} is not one of Expired, Drifted, Empty, Underutilized"
            )),
        }
    }
}

/// Knobs Karpenter keeps in feature gates and constants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Karpenter's `SpotToSpotConsolidation` feature gate (off by default, as there).
    pub spot_to_spot: bool,
    /// At most this many candidates in one multi-node consolidation.
    pub max_multi_node: usize,
    /// Multi-node consolidation stops searching after this long and keeps the best decision
    /// found so far (Karpenter: 1 minute). `None`: no limit (the result is then the same on
    /// every machine).
    pub multi_node_timeout: Option<Duration>,
    /// Single-node consolidation stops trying candidates after this long (Karpenter: 3 minutes);
    /// the candidates not tried are reported blocked with the timeout. `None`: no limit.
    pub single_node_timeout: Option<Duration>,
    /// The [`DisruptionPlan::consolidation_key`] of an earlier evaluation whose consolidation
    /// search (multi- and single-node) found nothing: when the cluster gives the same key now,
    /// the search is skipped (Karpenter's "consolidated" cluster state). The caller lets it
    /// lapse after a while, since prices it cannot see in the key may change (Karpenter: 5 min).
    pub consolidated: Option<u64>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            spot_to_spot: false,
            max_multi_node: MAX_MULTI_NODE_CANDIDATES,
            multi_node_timeout: Some(MULTI_NODE_TIMEOUT),
            single_node_timeout: Some(SINGLE_NODE_TIMEOUT),
            consolidated: None,
        }
    }
}

/// What one disruption decision looks at.
#[derive(Debug, Clone)]
pub struct DisruptionInput {
    /// The cluster as provisioning sees it: NodePools with their instance types, nodes with
    /// their pods, claims in flight, DaemonSets, PDBs. Its `now` is the decision's time; its
    /// `pods` (pending pods) are left where they are.
    pub cluster: SchedulingInput,
    /// Every NodeClaim, initialized ones included (a node is managed when one names it).
    pub node_claims: Vec<NodeClaim>,
    /// When a pod last arrived on or left each node (by node name). A node without an entry
    /// counts from its NodeClaim's creation (or the node's, when later).
    pub last_pod_event: BTreeMap<String, SystemTime>,
    pub options: Options,
}

/// A node a decision disrupts.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub node: String,
    pub node_claim: String,
    pub node_pool: String,
    pub instance_type: String,
    pub zone: String,
    pub capacity_type: String,
    /// USD/hour of its offering; `None` when the catalog no longer lists it.
    pub price: Option<f64>,
    /// Its reschedulable pods (what the drain will evict).
    pub pods: Vec<ObjectKey>,
    /// Karpenter's disruption cost: eviction costs of its pods × the lifetime it has left.
    pub disruption_cost: f64,
}

/// One disruption: these nodes go, these new NodeClaims come first.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub method: Method,
    pub candidates: Vec<Candidate>,
    /// Launched and initialized before the candidates are drained.
    pub replacements: Vec<NewNodeClaim>,
    /// USD/hour saved: the candidates' prices less the replacements'. Negative for expiry and
    /// drift when the replacement costs more.
    pub savings_per_hour: f64,
    /// Why (for drift: what drifted).
    pub reason: String,
}

impl Decision {
    pub fn node_names(&self) -> Vec<String> {
        self.candidates.iter().map(|c| c.node.clone()).collect()
    }
}

/// Why a node cannot be disrupted now.
#[derive(Debug, Clone, PartialEq)]
pub enum BlockReason {
    NotInitialized,
    /// The node or its NodeClaim carries `karpenter.sh/do-not-disrupt: "true"`.
    NodeDoNotDisrupt,
    PodDoNotDisrupt {
        pod: ObjectKey,
    },
    /// A PDB covering one of its pods allows no disruption now.
    PodDisruptionBudget {
        pdb: ObjectKey,
        pod: ObjectKey,
    },
    /// The NodePool's budgets allow no more disruptions for this reason now.
    Budget {
        reason: DisruptionReason,
        allowed: usize,
        disrupting: usize,
        nodes: usize,
    },
    /// `consolidateAfter` has not passed since the last pod event.
    ConsolidateAfter {
        remaining: Duration,
    },
    /// `consolidateAfter: Never`.
    ConsolidationDisabled,
    /// The NodePool is not in the cluster (or its instance types are unknown).
    NodePoolUnknown {
        node_pool: String,
    },
    /// Its pods would not all fit elsewhere with at most one cheaper new node.
    NotConsolidatable {
        why: String,
    },
}

impl std::fmt::Display for BlockReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BlockReason::NotInitialized => write!(f, "not initialized yet"),
            BlockReason::NodeDoNotDisrupt => {
                write!(f, "the node has {}: \"true\"", labels::DO_NOT_DISRUPT)
            }
            BlockReason::PodDoNotDisrupt { pod } => {
                write!(f, "pod {pod} has {}: \"true\"", labels::DO_NOT_DISRUPT)
            }
            BlockReason::PodDisruptionBudget { pdb, pod } => write!(
                f,
                "PodDisruptionBudget {pdb} allows no disruption of pod {pod} now"
            ),
            BlockReason::Budget {
                reason,
                allowed,
                disrupting,
                nodes,
            } => write!(
                f,
                "the NodePool's disruption budget for {} allows {allowed} of {nodes} nodes ({disrupting} disrupting)",
                reason_str(*reason)
            ),
            BlockReason::ConsolidateAfter { remaining } => write!(
                f,
                "consolidateAfter has {}s to run since the last pod event",
                remaining.as_secs()
            ),
            BlockReason::ConsolidationDisabled => write!(f, "consolidateAfter is Never"),
            BlockReason::NodePoolUnknown { node_pool } => {
                write!(
                    f,
                    "NodePool {node_pool} is unknown or has no instance types"
                )
            }
            BlockReason::NotConsolidatable { why } => write!(f, "{why}"),
        }
    }
}

fn reason_str(r: DisruptionReason) -> &'static str {
    match r {
        DisruptionReason::Underutilized => "Underutilized",
        DisruptionReason::Empty => "Empty",
        DisruptionReason::Drifted => "Drifted",
    }
}

/// A node that stays, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Blocked {
    pub node: String,
    pub node_pool: String,
    pub reason: BlockReason,
}

/// What a NodePool's budgets allow now, per reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetStatus {
    pub node_pool: String,
    pub reason: DisruptionReason,
    pub nodes: usize,
    pub disrupting: usize,
    /// Disruptions still allowed (after those under way).
    pub allowed: usize,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct DisruptionStats {
    /// Managed, initialized nodes not being disrupted.
    pub nodes: usize,
    /// Nodes that could be disrupted by some method (before budgets).
    pub eligible: usize,
    /// Simulations run (solver calls).
    pub simulations: usize,
    /// A consolidation search stopped at its timeout ([`Options`]).
    pub timed_out: bool,
    /// The consolidation search was skipped: the cluster is as it was when a search last found
    /// nothing ([`Options::consolidated`]).
    pub consolidation_skipped: bool,
    pub duration_micros: u128,
}

/// The outcome of one evaluation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DisruptionPlan {
    pub decision: Option<Decision>,
    /// Nodes that would otherwise be candidates, with the first reason that holds each.
    pub blocked: Vec<Blocked>,
    pub budgets: Vec<BudgetStatus>,
    pub stats: DisruptionStats,
    /// A fingerprint of what the consolidation search looked at (its candidates, every node
    /// with its pods and room, claims in flight, NodePools, DaemonSets, PDBs, offerings). When
    /// the search ran to the end and found nothing, passing it back as
    /// [`Options::consolidated`] skips the search until the cluster changes. `None` when no
    /// search was due (a decision came earlier).
    pub consolidation_key: Option<u64>,
}

// ---- hashing ------------------------------------------------------------------------------------

/// FNV-1a, 64 bits: stable across builds and platforms (std's hasher is not).
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
    fn write(&mut self, s: &str) {
        for b in s.as_bytes().iter().chain([0xffu8].iter()) {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

/// The hash of a NodePool's static template fields (labels, annotations, taints, startup
/// taints, node class, expireAfter, terminationGracePeriod), as a decimal string for
/// `karpenter.sh/nodepool-hash`. Requirements are left out: they drift dynamically (a node is
/// drifted only when its labels no longer satisfy them). Taints are hashed as a set.
pub fn node_pool_hash(pool: &NodePool) -> String {
    let mut h = Fnv::new();
    h.write("labels");
    for (k, v) in &pool.labels {
        h.write(k);
        h.write(v);
    }
    h.write("annotations");
    for (k, v) in &pool.annotations {
        h.write(k);
        h.write(v);
    }
    for (name, taints) in [("taints", &pool.taints), ("startup", &pool.startup_taints)] {
        h.write(name);
        let set: BTreeSet<String> = taints
            .iter()
            .map(|t| format!("{}={}:{}", t.key, t.value, t.effect.as_str()))
            .collect();
        for t in set {
            h.write(&t);
        }
    }
    h.write("class");
    h.write(&pool.node_class_ref.group);
    h.write(&pool.node_class_ref.kind);
    h.write(&pool.node_class_ref.name);
    h.write("expire");
    h.write(&format!("{:?}", pool.expire_after.map(|d| d.as_secs())));
    h.write("tgp");
    h.write(&format!(
        "{:?}",
        pool.termination_grace_period.map(|d| d.as_secs())
    ));
    h.0.to_string()
}

/// The annotations a NodeClaim of `pool` carries so its drift can be told later.
pub fn hash_annotations(pool: &NodePool) -> Labels {
    [
        (labels::NODE_POOL_HASH.to_owned(), node_pool_hash(pool)),
        (
            labels::NODE_POOL_HASH_VERSION.to_owned(),
            NODE_POOL_HASH_VERSION.to_owned(),
        ),
    ]
    .into()
}

/// Why `claim` (with its node's `labels`) no longer matches `pool`, if it does not.
pub fn drift(claim: &NodeClaim, node_labels: &Labels, pool: &NodePool) -> Option<String> {
    if claim.conditions.contains(&NodeClaimCondition::Drifted) {
        return Some("the cloud provider reports it drifted (Drifted condition)".into());
    }
    let version = claim.annotations.get(labels::NODE_POOL_HASH_VERSION);
    if version.map(String::as_str) == Some(NODE_POOL_HASH_VERSION)
        && let Some(hash) = claim.annotations.get(labels::NODE_POOL_HASH)
        && *hash != node_pool_hash(pool)
    {
        return Some("the NodePool's template changed (nodepool-hash)".into());
    }
    let mut labels = claim.labels.clone();
    labels.extend(node_labels.iter().map(|(k, v)| (k.clone(), v.clone())));
    for r in &pool.requirements {
        let set = ValueSet::from_requirement(r);
        match labels.get(&r.key) {
            Some(v) if !set.allows(Some(v)) => {
                return Some(format!(
                    "label {}={v} is no longer allowed by the NodePool's requirement {} {} {:?}",
                    r.key,
                    r.key,
                    r.operator.as_str(),
                    r.values
                ));
            }
            // A label the node does not have: only a well-known label may be undefined
            // (Karpenter's AllowUndefinedWellKnownLabels).
            None if !set.absent_ok() && !labels::WELL_KNOWN_LABELS.contains(&r.key.as_str()) => {
                return Some(format!(
                    "the NodePool now requires label {} which the node lacks",
                    r.key
                ));
            }
            _ => {}
        }
    }
    None
}

// ---- budgets --------------------------------------------------------------------------------------

/// Five-field cron for Karpenter's macros.
fn cron_expression(schedule: &str) -> &str {
    match schedule {
        "@yearly" | "@annually" => "0 0 1 1 *",
        "@monthly" => "0 0 1 * *",
        "@weekly" => "0 0 * * 0",
        "@daily" | "@midnight" => "0 0 * * *",
        "@hourly" => "0 * * * *",
        other => other,
    }
}

/// Whether a budget with this schedule and duration is active at `now` (Karpenter's rule:
/// the schedule fired within the last `duration`). No schedule: always. A schedule that does
/// not parse (validation refuses it) never is.
pub fn budget_active(schedule: Option<&str>, duration: Option<Duration>, now: SystemTime) -> bool {
    let Some(schedule) = schedule else {
        return true;
    };
    let Ok(cron) = croner::Cron::new(cron_expression(schedule)).parse() else {
        return false;
    };
    let now: chrono::DateTime<chrono::Utc> = now.into();
    let Ok(window) = chrono::Duration::from_std(duration.unwrap_or_default()) else {
        return false;
    };
    let since = now - window;
    // The first firing at or after `since`.
    match cron.find_next_occurrence(&since, true) {
        Ok(next) => next <= now,
        Err(_) => false,
    }
}

/// How many of `nodes` a NodePool's budgets allow to be disrupted at once for `reason`
/// (before subtracting those under way): the most restrictive active budget, percentages
/// rounded up. `None` when no budget applies (unlimited).
pub fn budget_limit(
    pool: &NodePool,
    reason: DisruptionReason,
    nodes: usize,
    now: SystemTime,
) -> Option<usize> {
    pool.disruption
        .budgets
        .iter()
        .filter(|b| b.reasons.is_empty() || b.reasons.contains(&reason))
        .filter(|b| budget_active(b.schedule.as_deref(), b.duration, now))
        .map(|b| match b.nodes {
            BudgetNodes::Count(n) => n as usize,
            BudgetNodes::Percent(p) => (nodes * usize::from(p)).div_ceil(100),
        })
        .min()
}

// ---- candidates -----------------------------------------------------------------------------------

/// A node with what the methods need of it.
#[derive(Debug, Clone)]
struct NodeInfo {
    index: usize,
    claim: usize,
    pool: Option<usize>,
    /// Being disrupted already: deleting, or tainted `karpenter.sh/disrupted`.
    disrupting: bool,
    reschedulable: Vec<usize>,
    candidate: Candidate,
    /// The first reason a graceful method may not take it.
    block: Option<BlockReason>,
    /// Passed consolidateAfter (or why not).
    consolidatable: Result<(), BlockReason>,
}

fn is_mirror(p: &Pod) -> bool {
    p.owner.as_ref().is_some_and(|o| o.kind == "Node")
}

/// Pods the drain evicts and that must land elsewhere: not DaemonSet or mirror pods, not
/// finished.
pub fn reschedulable(p: &Pod) -> bool {
    crate::pod::daemon_set_owner(p).is_none()
        && !is_mirror(p)
        && !matches!(p.phase, PodPhase::Succeeded | PodPhase::Failed)
}

/// Karpenter's eviction cost of a pod: 1, plus its deletion cost and priority scaled down,
/// clamped to [-10, 10].
fn eviction_cost(p: &Pod) -> f64 {
    (1.0 + f64::from(p.priority) / 2f64.powi(25)).clamp(-10.0, 10.0)
}

fn is_disrupted_taint(t: &crate::model::Taint) -> bool {
    t.key == labels::DISRUPTED_TAINT_KEY
}

/// What each NodePool's nodes cost per hour now: the sum of each node's offering price (its
/// instance type, zone and capacity type in its NodePool's instance types), by NodePool name.
/// Every NodePool is listed (0 when it has no node); a node whose offering the pool no longer
/// lists (a type since excluded, or unknown to the cloud) adds nothing and is counted in
/// `unpriced`.
pub fn cost_per_hour(input: &SchedulingInput) -> PoolCosts {
    let mut costs = PoolCosts::default();
    for p in &input.node_pools {
        costs.per_hour.insert(p.node_pool.name.clone(), 0.0);
    }
    for n in &input.nodes {
        let Some(pool_name) = n.node.labels.get(labels::NODE_POOL) else {
            continue;
        };
        let Some(pool) = input
            .node_pools
            .iter()
            .position(|p| &p.node_pool.name == pool_name)
        else {
            continue;
        };
        match node_price(input, pool, &n.node) {
            Some(price) => {
                *costs.per_hour.entry(pool_name.clone()).or_default() += price;
            }
            None => costs.unpriced += 1,
        }
    }
    costs
}

/// [`cost_per_hour`]'s answer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PoolCosts {
    /// Dollars per hour, by NodePool.
    pub per_hour: BTreeMap<String, f64>,
    /// Nodes of a NodePool whose offering has no price.
    pub unpriced: usize,
}

/// The price of the node's offering in its NodePool's instance types.
fn node_price(input: &SchedulingInput, pool: usize, node: &Node) -> Option<f64> {
    let l = &node.labels;
    let it = l.get(labels::INSTANCE_TYPE)?;
    let zone = l.get(labels::TOPOLOGY_ZONE)?;
    let ct = l
        .get(labels::CAPACITY_TYPE)
        .map_or(labels::CAPACITY_TYPE_ON_DEMAND, String::as_str);
    input.node_pools[pool]
        .instance_types
        .iter()
        .find(|t| &t.name == it)?
        .offerings
        .iter()
        .find(|o| &o.zone == zone && o.capacity_type.as_str() == ct)
        .map(|o| o.price)
}

/// The NodeClaim of each node: the first that names it, by node name or provider id (an index,
/// so that a cluster of thousands of nodes is not matched pairwise).
struct ClaimIndex<'a> {
    claims: &'a [NodeClaim],
    by_node: HashMap<&'a str, usize>,
    by_provider: HashMap<&'a str, usize>,
}

impl<'a> ClaimIndex<'a> {
    fn new(claims: &'a [NodeClaim]) -> Self {
        let mut by_node = HashMap::new();
        let mut by_provider = HashMap::new();
        for (i, c) in claims.iter().enumerate() {
            if !c.node_name.is_empty() {
                by_node.entry(c.node_name.as_str()).or_insert(i);
            }
            if !c.provider_id.is_empty() {
                by_provider.entry(c.provider_id.as_str()).or_insert(i);
            }
        }
        Self {
            claims,
            by_node,
            by_provider,
        }
    }

    fn claim_for(&self, node: &Node) -> Option<(usize, &'a NodeClaim)> {
        let by_node = self.by_node.get(node.name.as_str()).copied();
        let by_provider = self.by_provider.get(node.provider_id.as_str()).copied();
        let i = match (by_node, by_provider) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b)?,
        };
        Some((i, &self.claims[i]))
    }
}

fn nodes_info(input: &DisruptionInput) -> Vec<NodeInfo> {
    let cluster = &input.cluster;
    let now = cluster.now;
    let claims = ClaimIndex::new(&input.node_claims);
    let mut out = Vec::new();
    for (index, n) in cluster.nodes.iter().enumerate() {
        let Some((claim_index, claim)) = claims.claim_for(&n.node) else {
            continue; // not Berth's (or Karpenter's) to disrupt
        };
        let pool = cluster
            .node_pools
            .iter()
            .position(|p| p.node_pool.name == claim.node_pool);
        // Deleting, tainted for it, or recorded in a decision the actuator carries out.
        let disrupting = n.node.deleting
            || claim.deleting
            || claim.annotations.contains_key(labels::DISRUPTION_ID)
            || n.node.taints.iter().any(is_disrupted_taint);
        let reschedulable: Vec<usize> = n
            .pods
            .iter()
            .enumerate()
            .filter(|(_, p)| reschedulable(p))
            .map(|(i, _)| i)
            .collect();
        let lifetime = claim
            .expire_after
            .map(|total| {
                let age = now.duration_since(claim.created_at).unwrap_or_default();
                (1.0 - age.as_secs_f64() / total.as_secs_f64().max(1.0)).clamp(0.0, 1.0)
            })
            .unwrap_or(1.0);
        let cost: f64 = reschedulable
            .iter()
            .map(|&i| eviction_cost(&n.pods[i]))
            .sum::<f64>()
            * lifetime;
        let get = |k: &str| n.node.labels.get(k).cloned().unwrap_or_default();
        let candidate = Candidate {
            node: n.node.name.clone(),
            node_claim: claim.name.clone(),
            node_pool: claim.node_pool.clone(),
            instance_type: get(labels::INSTANCE_TYPE),
            zone: get(labels::TOPOLOGY_ZONE),
            capacity_type: get(labels::CAPACITY_TYPE),
            price: pool.and_then(|p| node_price(cluster, p, &n.node)),
            pods: reschedulable
                .iter()
                .map(|&i| n.pods[i].key.clone())
                .collect(),
            disruption_cost: cost,
        };
        let block = block_reason(input, n, claim, pool, &reschedulable);
        let consolidatable = match pool.map(|p| &cluster.node_pools[p].node_pool) {
            None => Err(BlockReason::NodePoolUnknown {
                node_pool: claim.node_pool.clone(),
            }),
            Some(p) => match p.disruption.consolidate_after {
                None => Err(BlockReason::ConsolidationDisabled),
                Some(after) => {
                    let since = input
                        .last_pod_event
                        .get(&n.node.name)
                        .copied()
                        .unwrap_or(claim.created_at.max(n.node.created_at));
                    let due = since + after;
                    if due <= now {
                        Ok(())
                    } else {
                        Err(BlockReason::ConsolidateAfter {
                            remaining: due.duration_since(now).unwrap_or_default(),
                        })
                    }
                }
            },
        };
        out.push(NodeInfo {
            index,
            claim: claim_index,
            pool,
            disrupting,
            reschedulable,
            candidate,
            block,
            consolidatable,
        });
    }
    out
}

fn block_reason(
    input: &DisruptionInput,
    n: &ExistingNode,
    claim: &NodeClaim,
    pool: Option<usize>,
    reschedulable: &[usize],
) -> Option<BlockReason> {
    if pool.is_none() {
        return Some(BlockReason::NodePoolUnknown {
            node_pool: claim.node_pool.clone(),
        });
    }
    if !claim.conditions.contains(&NodeClaimCondition::Initialized) {
        return Some(BlockReason::NotInitialized);
    }
    if n.node.do_not_disrupt
        || claim
            .annotations
            .get(labels::DO_NOT_DISRUPT)
            .map(String::as_str)
            == Some("true")
    {
        return Some(BlockReason::NodeDoNotDisrupt);
    }
    for &i in reschedulable {
        let p = &n.pods[i];
        if p.do_not_disrupt {
            return Some(BlockReason::PodDoNotDisrupt { pod: p.key.clone() });
        }
        if let Some(pdb) = input.cluster.pod_disruption_budgets.iter().find(|b| {
            b.key.namespace == p.key.namespace
                && b.disruptions_allowed <= 0
                && selector_matches(&b.selector, &p.labels)
        }) {
            return Some(BlockReason::PodDisruptionBudget {
                pdb: pdb.key.clone(),
                pod: p.key.clone(),
            });
        }
    }
    None
}

// ---- simulation ------------------------------------------------------------------------------------

/// The cluster `decision` leaves, and the provisioning plan for the pods its nodes held (and
/// the pods of nodes already being disrupted), as [`decide`] simulated it: for checking a
/// decision independently (e.g. with [`crate::checker::check`]).
pub fn simulation(input: &DisruptionInput, decision: &Decision) -> (SchedulingInput, solver::Plan) {
    let infos = nodes_info(input);
    let out: Vec<usize> = decision
        .candidates
        .iter()
        .filter_map(|c| infos.iter().position(|i| i.candidate.node == c.node))
        .collect();
    let one_new = (decision.method == Method::Underutilized && decision.replacements.len() == 1)
        .then(|| decision.replacements[0].node_pool.clone());
    let sim = simulation_input(input, &infos, &out, one_new.as_deref());
    let plan = solver::solve(&sim);
    (sim, plan)
}

/// The cluster without `out` (and nodes already being disrupted), their reschedulable pods
/// pending; with `one_new`, at most one new node, of that pool.
fn simulation_input(
    input: &DisruptionInput,
    infos: &[NodeInfo],
    out: &[usize],
    one_new: Option<&str>,
) -> SchedulingInput {
    let cluster = &input.cluster;
    let leaving: BTreeSet<usize> = infos
        .iter()
        .filter(|i| i.disrupting)
        .map(|i| i.index)
        .chain(out.iter().map(|&o| infos[o].index))
        .collect();
    let pods = leaving_pods(cluster, infos, &leaving);
    let mut sim = SchedulingInput {
        now: cluster.now,
        node_pools: cluster.node_pools.clone(),
        nodes: cluster
            .nodes
            .iter()
            .enumerate()
            .filter(|(i, _)| !leaving.contains(i))
            .map(|(_, n)| n.clone())
            .collect(),
        node_claims: cluster.node_claims.clone(),
        daemon_sets: cluster.daemon_sets.clone(),
        pods,
        pod_disruption_budgets: cluster.pod_disruption_budgets.clone(),
        namespaces: cluster.namespaces.clone(),
    };
    if let Some(only) = one_new {
        limit_to_one_new(&mut sim, only);
    }
    sim
}

/// The reschedulable pods of the nodes in `leaving` (by index in the cluster), pending again,
/// in the order of `infos`.
fn leaving_pods(
    cluster: &SchedulingInput,
    infos: &[NodeInfo],
    leaving: &BTreeSet<usize>,
) -> Vec<Pod> {
    let mut pods = Vec::new();
    for info in infos.iter().filter(|i| leaving.contains(&i.index)) {
        for &p in &info.reschedulable {
            let mut pod = cluster.nodes[info.index].pods[p].clone();
            pod.node_name = None;
            pod.nominated_node_claim = None;
            pod.phase = PodPhase::Pending;
            pod.unschedulable = true;
            pods.push(pod);
        }
    }
    pods
}

/// The simulations of one evaluation share one copy of the cluster: the nodes a simulation
/// takes out are moved aside and back, never cloned, so a simulation costs the solve and not a
/// copy of thousands of nodes. Every simulation sees exactly what [`simulation_input`] builds.
struct Simulator {
    /// The cluster without the nodes already being disrupted, no pending pods.
    base: SchedulingInput,
    /// The cluster index of each of `base.nodes`.
    index: Vec<usize>,
}

impl Simulator {
    fn new(input: &DisruptionInput, infos: &[NodeInfo]) -> Self {
        let cluster = &input.cluster;
        let disrupting: BTreeSet<usize> = infos
            .iter()
            .filter(|i| i.disrupting)
            .map(|i| i.index)
            .collect();
        let (index, nodes): (Vec<usize>, Vec<ExistingNode>) = cluster
            .nodes
            .iter()
            .enumerate()
            .filter(|(i, _)| !disrupting.contains(i))
            .map(|(i, n)| (i, n.clone()))
            .unzip();
        Self {
            base: SchedulingInput {
                now: cluster.now,
                node_pools: cluster.node_pools.clone(),
                nodes,
                node_claims: cluster.node_claims.clone(),
                daemon_sets: cluster.daemon_sets.clone(),
                pods: Vec::new(),
                pod_disruption_budgets: cluster.pod_disruption_budgets.clone(),
                namespaces: cluster.namespaces.clone(),
            },
            index,
        }
    }

    /// Solves the cluster without `out` (indices into `infos`) and the nodes already being
    /// disrupted, their pods pending; with `one_new`, at most one new node, of that pool.
    fn solve(
        &mut self,
        input: &DisruptionInput,
        infos: &[NodeInfo],
        out: &[usize],
        one_new: Option<&str>,
    ) -> solver::Plan {
        let out_nodes: BTreeSet<usize> = out.iter().map(|&o| infos[o].index).collect();
        let leaving: BTreeSet<usize> = infos
            .iter()
            .filter(|i| i.disrupting)
            .map(|i| i.index)
            .chain(out_nodes.iter().copied())
            .collect();
        self.base.pods = leaving_pods(&input.cluster, infos, &leaving);
        let all = std::mem::take(&mut self.base.nodes);
        let total = all.len();
        let mut aside = Vec::with_capacity(out_nodes.len());
        self.base.nodes = Vec::with_capacity(total);
        for (pos, n) in all.into_iter().enumerate() {
            if out_nodes.contains(&self.index[pos]) {
                aside.push((pos, n));
            } else {
                self.base.nodes.push(n);
            }
        }
        let limits: Option<Vec<Resources>> = one_new.map(|only| {
            let saved = self
                .base
                .node_pools
                .iter()
                .map(|p| p.node_pool.limits.clone())
                .collect();
            limit_to_one_new(&mut self.base, only);
            saved
        });
        let plan = solver::solve(&self.base);
        if let Some(saved) = limits {
            for (p, l) in self.base.node_pools.iter_mut().zip(saved) {
                p.node_pool.limits = l;
            }
        }
        // Put the nodes back where they were.
        let kept = std::mem::take(&mut self.base.nodes);
        let mut kept = kept.into_iter();
        let mut aside = aside.into_iter().peekable();
        self.base.nodes = (0..total)
            .filter_map(|pos| match aside.peek() {
                Some((p, _)) if *p == pos => aside.next().map(|(_, n)| n),
                _ => kept.next(),
            })
            .collect();
        self.base.pods = Vec::new();
        plan
    }
}

/// NodePool limits that let the solver open one new node of pool `only` and none elsewhere.
fn limit_to_one_new(sim: &mut SchedulingInput, only: &str) {
    let present: BTreeSet<&str> = sim.nodes.iter().map(|n| n.node.name.as_str()).collect();
    let mut counts: BTreeMap<String, i64> = BTreeMap::new();
    for n in &sim.nodes {
        if let Some(p) = n.node.labels.get(labels::NODE_POOL) {
            *counts.entry(p.clone()).or_default() += 1;
        }
    }
    for c in &sim.node_claims {
        if !present.contains(c.node_claim.node_name.as_str()) {
            *counts.entry(c.node_claim.node_pool.clone()).or_default() += 1;
        }
    }
    for p in &mut sim.node_pools {
        let np = &mut p.node_pool;
        let extra = i64::from(np.name == only);
        let mut limit = (counts.get(&np.name).copied().unwrap_or(0) + extra) * 1000;
        let current = np.limits.get(crate::model::resource::NODES);
        if current > 0 {
            limit = limit.min(current);
        }
        np.limits.set(crate::model::resource::NODES, limit);
    }
}

/// Narrows a new claim's instance types to those `keep` accepts (cheapest first), rewriting
/// its `instance-type In [...]` requirement and price. `None` when nothing is left.
fn narrow(
    mut new: NewNodeClaim,
    keep: impl Fn(&solver::InstanceTypeOption) -> bool,
    at_most: usize,
) -> Option<NewNodeClaim> {
    new.instance_types.retain(|o| keep(o));
    new.instance_types.truncate(at_most);
    let first = new.instance_types.first()?;
    new.price = first.price;
    let names: Vec<String> = new.instance_types.iter().map(|o| o.name.clone()).collect();
    for r in &mut new.requirements {
        if r.key == labels::INSTANCE_TYPE {
            r.values.retain(|v| names.contains(v));
        }
    }
    Some(new)
}

fn pool_allows_spot(new: &NewNodeClaim) -> bool {
    let r = Requirements::from_requirements(&new.requirements);
    r.get(labels::CAPACITY_TYPE)
        .is_none_or(|s| s.allows(Some(labels::CAPACITY_TYPE_SPOT)))
}

struct Ctx<'a> {
    input: &'a DisruptionInput,
    infos: Vec<NodeInfo>,
    simulator: Simulator,
    simulations: usize,
}

impl Ctx<'_> {
    /// Where the pods of `out` (and of nodes already being disrupted) would go: the cluster
    /// without those nodes, their reschedulable pods pending. The pending pods of the cluster
    /// are left out: provisioning answers for them.
    fn sim(&mut self, out: &[usize]) -> solver::Plan {
        self.simulations += 1;
        self.simulator.solve(self.input, &self.infos, out, None)
    }

    /// The simulation with at most one new node, of pool `only`: the solver packs for the
    /// cheapest fleet, which may be two small nodes where consolidation wants one.
    fn sim_one_new(&mut self, out: &[usize], only: &str) -> solver::Plan {
        self.simulations += 1;
        self.simulator
            .solve(self.input, &self.infos, out, Some(only))
    }

    /// Deleting `out`, or replacing them with one cheaper node: the decision, or why not.
    fn consolidation(&mut self, out: &[usize]) -> Result<Decision, String> {
        let mut plan = self.sim(out);
        if plan.unschedulable.is_empty() && plan.new_node_claims.len() > 1 {
            let pools: BTreeSet<String> = plan
                .new_node_claims
                .iter()
                .map(|n| n.node_pool.clone())
                .collect();
            for pool in pools {
                let one = self.sim_one_new(out, &pool);
                if one.unschedulable.is_empty() && one.new_node_claims.len() == 1 {
                    plan = one;
                    break;
                }
            }
        }
        if let Some(u) = plan.unschedulable.first() {
            return Err(format!(
                "its pods would not all fit elsewhere: {} ({})",
                u.pod, u.reason
            ));
        }
        let candidates: Vec<Candidate> = out
            .iter()
            .map(|&o| self.infos[o].candidate.clone())
            .collect();
        let known: Option<f64> = candidates.iter().map(|c| c.price).sum();
        let mut replacements = plan.new_node_claims;
        match replacements.len() {
            0 => {
                let saved =
                    known.unwrap_or_else(|| candidates.iter().filter_map(|c| c.price).sum::<f64>());
                Ok(Decision {
                    method: Method::Underutilized,
                    candidates,
                    replacements: Vec::new(),
                    savings_per_hour: saved,
                    reason: "its pods fit on other nodes".into(),
                })
            }
            1 => {
                let Some(price) = known else {
                    return Err("its price is unknown, so a replacement cannot be compared".into());
                };
                let new = replacements.remove(0);
                let all_spot = candidates
                    .iter()
                    .all(|c| c.capacity_type == CapacityType::Spot.as_str());
                let new = if all_spot && pool_allows_spot(&new) {
                    if !self.input.options.spot_to_spot {
                        return Err(
                            "SpotToSpotConsolidation is disabled: a spot node is not replaced by a spot node"
                                .into(),
                        );
                    }
                    let cheaper = |o: &solver::InstanceTypeOption| {
                        o.capacity_type == CapacityType::Spot && o.price < price
                    };
                    let options = new.instance_types.iter().filter(|o| cheaper(o)).count();
                    if out.len() == 1 && options < MIN_SPOT_TO_SPOT_OPTIONS {
                        return Err(format!(
                            "spot-to-spot consolidation needs {MIN_SPOT_TO_SPOT_OPTIONS} cheaper instance types, got {options}"
                        ));
                    }
                    let at_most = if out.len() == 1 {
                        MIN_SPOT_TO_SPOT_OPTIONS
                    } else {
                        usize::MAX
                    };
                    narrow(new, cheaper, at_most)
                } else if out.len() > 1 {
                    // N nodes for one of a type among them: deleting the others is the same
                    // saving with less churn (Karpenter's filterOutSameType).
                    let types: BTreeSet<&str> = candidates
                        .iter()
                        .map(|c| c.instance_type.as_str())
                        .collect();
                    narrow(
                        new,
                        |o| o.price < price && !types.contains(o.name.as_str()),
                        usize::MAX,
                    )
                } else {
                    narrow(new, |o| o.price < price, usize::MAX)
                };
                let Some(new) = new else {
                    return Err("no replacement is cheaper".into());
                };
                Ok(Decision {
                    method: Method::Underutilized,
                    savings_per_hour: price - new.price,
                    candidates,
                    replacements: vec![new],
                    reason: "one cheaper node holds its pods".into(),
                })
            }
            n => Err(format!("its pods would need {n} new nodes")),
        }
    }

    /// Replacing `out` (expiry, drift): whatever new nodes its pods need. `forceful` goes on
    /// even when some pods fit nowhere.
    fn replacement(
        &mut self,
        method: Method,
        out: usize,
        forceful: bool,
        reason: String,
    ) -> Result<Decision, String> {
        let plan = self.sim(&[out]);
        if !forceful && let Some(u) = plan.unschedulable.first() {
            return Err(format!(
                "its pods would not all fit elsewhere: {} ({})",
                u.pod, u.reason
            ));
        }
        let c = self.infos[out].candidate.clone();
        let new_price: f64 = plan.new_node_claims.iter().map(|n| n.price).sum();
        Ok(Decision {
            method,
            savings_per_hour: c.price.unwrap_or_default() - new_price,
            candidates: vec![c],
            replacements: plan.new_node_claims,
            reason,
        })
    }
}

/// What a consolidation search over `under` depends on, hashed: the candidates in order, every
/// node (name, room, taints, labels, pods), claims in flight, NodePools with their offerings,
/// DaemonSets and PDBs. Stable within a process (std's SipHash with fixed keys), which is all a
/// caller holding it between evaluations needs.
fn consolidation_key(input: &DisruptionInput, infos: &[NodeInfo], under: &[usize]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let c = &input.cluster;
    for &i in under {
        infos[i].candidate.node.hash(&mut h);
    }
    under.len().hash(&mut h);
    for info in infos {
        (info.index, info.disrupting).hash(&mut h);
    }
    let resources = |r: &Resources, h: &mut std::collections::hash_map::DefaultHasher| {
        for (name, value) in r.iter() {
            (name, value).hash(h);
        }
    };
    for n in &c.nodes {
        let node = &n.node;
        (&node.name, &node.provider_id, &node.labels).hash(&mut h);
        (
            node.ready,
            node.unschedulable,
            node.deleting,
            node.do_not_disrupt,
        )
            .hash(&mut h);
        format!("{:?}", node.taints).hash(&mut h);
        resources(&node.allocatable, &mut h);
        for p in &n.pods {
            (&p.key, &p.uid, p.phase, &p.labels, p.do_not_disrupt).hash(&mut h);
            for r in &p.containers {
                resources(r, &mut h);
            }
        }
    }
    for claim in &c.node_claims {
        format!("{:?}", claim.node_claim).hash(&mut h);
        claim.pods.len().hash(&mut h);
    }
    for p in &c.node_pools {
        format!("{:?}", p.node_pool).hash(&mut h);
        for t in &p.instance_types {
            t.name.hash(&mut h);
            for o in &t.offerings {
                (&o.zone, o.capacity_type, o.price.to_bits(), o.available).hash(&mut h);
            }
        }
    }
    format!("{:?}{:?}", c.daemon_sets, c.pod_disruption_budgets).hash(&mut h);
    h.finish()
}

/// Budgets per (pool index, reason): (nodes, disrupting, allowed).
fn budgets(
    input: &DisruptionInput,
    infos: &[NodeInfo],
) -> BTreeMap<(usize, DisruptionReason), (usize, usize, usize)> {
    let mut out = BTreeMap::new();
    for (pi, p) in input.cluster.node_pools.iter().enumerate() {
        let of_pool = infos.iter().filter(|i| i.pool == Some(pi));
        let nodes = of_pool.clone().count();
        let disrupting = of_pool.filter(|i| i.disrupting).count();
        for reason in [
            DisruptionReason::Empty,
            DisruptionReason::Drifted,
            DisruptionReason::Underutilized,
        ] {
            let allowed = budget_limit(&p.node_pool, reason, nodes, input.cluster.now)
                .map_or(usize::MAX, |l| l.saturating_sub(disrupting));
            out.insert((pi, reason), (nodes, disrupting, allowed));
        }
    }
    out
}

/// Evaluates every method in Karpenter's order and returns the first decision found, with the
/// reasons that held the other nodes.
pub fn decide(input: &DisruptionInput) -> DisruptionPlan {
    let started = Instant::now();
    let now = input.cluster.now;
    let infos = nodes_info(input);
    let budget = budgets(input, &infos);
    let mut plan = DisruptionPlan {
        budgets: budget
            .iter()
            .map(
                |(&(pi, reason), &(nodes, disrupting, allowed))| BudgetStatus {
                    node_pool: input.cluster.node_pools[pi].node_pool.name.clone(),
                    reason,
                    nodes,
                    disrupting,
                    allowed: allowed.min(nodes),
                },
            )
            .collect(),
        ..DisruptionPlan::default()
    };
    let mut ctx = Ctx {
        input,
        simulator: Simulator::new(input, &infos),
        infos,
        simulations: 0,
    };
    let live: Vec<usize> = (0..ctx.infos.len())
        .filter(|&i| !ctx.infos[i].disrupting)
        .collect();
    plan.stats.nodes = live.len();
    let mut blocked: BTreeMap<usize, BlockReason> = BTreeMap::new();
    let mut eligible: BTreeSet<usize> = BTreeSet::new();
    let budget_block = |i: &NodeInfo, reason: DisruptionReason| -> Option<BlockReason> {
        let &(nodes, disrupting, allowed) = budget.get(&(i.pool?, reason))?;
        (allowed == 0).then_some(BlockReason::Budget {
            reason,
            allowed: 0,
            disrupting,
            nodes,
        })
    };

    // 1. Expiration: forceful, oldest first.
    let mut expired: Vec<usize> = live
        .iter()
        .copied()
        .filter(|&i| {
            let c = &input.node_claims[ctx.infos[i].claim];
            c.expire_after.is_some_and(|e| c.created_at + e <= now)
        })
        .collect();
    expired.sort_by_key(|&i| input.node_claims[ctx.infos[i].claim].created_at);
    if let Some(&i) = expired.first() {
        let e = input.node_claims[ctx.infos[i].claim]
            .expire_after
            .unwrap_or_default();
        let reason = format!("expireAfter {}s passed", e.as_secs());
        if let Ok(d) = ctx.replacement(Method::Expired, i, true, reason) {
            plan.decision = Some(d);
        }
    }

    // 2. Drift: graceful, budgeted, cheapest to disrupt first.
    if plan.decision.is_none() {
        let mut drifted: Vec<(usize, String)> = Vec::new();
        for &i in &live {
            let info = &ctx.infos[i];
            let Some(pi) = info.pool else { continue };
            let node = &input.cluster.nodes[info.index].node;
            let claim = &input.node_claims[info.claim];
            if let Some(why) = drift(claim, &node.labels, &input.cluster.node_pools[pi].node_pool) {
                if let Some(b) = info.block.clone() {
                    blocked.entry(i).or_insert(b);
                } else if let Some(b) = budget_block(info, DisruptionReason::Drifted) {
                    blocked.entry(i).or_insert(b);
                } else {
                    eligible.insert(i);
                    drifted.push((i, why));
                }
            }
        }
        drifted.sort_by(|a, b| {
            ctx.infos[a.0]
                .candidate
                .disruption_cost
                .total_cmp(&ctx.infos[b.0].candidate.disruption_cost)
        });
        for (i, why) in drifted {
            match ctx.replacement(Method::Drifted, i, false, why) {
                Ok(d) => {
                    plan.decision = Some(d);
                    break;
                }
                Err(why) => {
                    blocked.insert(i, BlockReason::NotConsolidatable { why });
                }
            }
        }
    }

    // Consolidation candidates: graceful, past consolidateAfter.
    let mut consolidatable: Vec<usize> = Vec::new();
    for &i in &live {
        let info = &ctx.infos[i];
        if let Some(b) = &info.block {
            blocked.entry(i).or_insert_with(|| b.clone());
            continue;
        }
        if let Err(b) = &info.consolidatable {
            blocked.entry(i).or_insert_with(|| b.clone());
            continue;
        }
        consolidatable.push(i);
    }
    consolidatable.sort_by(|&a, &b| {
        ctx.infos[a]
            .candidate
            .disruption_cost
            .total_cmp(&ctx.infos[b].candidate.disruption_cost)
            .then(ctx.infos[a].index.cmp(&ctx.infos[b].index))
    });

    // 3. Emptiness: every empty candidate the budgets allow, at once.
    if plan.decision.is_none() {
        let mut taken: BTreeMap<usize, usize> = BTreeMap::new();
        let mut empty = Vec::new();
        for &i in &consolidatable {
            let info = &ctx.infos[i];
            if !info.reschedulable.is_empty() {
                continue;
            }
            eligible.insert(i);
            let Some(pi) = info.pool else { continue };
            let &(nodes, disrupting, allowed) = &budget[&(pi, DisruptionReason::Empty)];
            let n = taken.entry(pi).or_default();
            if *n >= allowed {
                blocked.insert(
                    i,
                    BlockReason::Budget {
                        reason: DisruptionReason::Empty,
                        allowed,
                        disrupting: disrupting + *n,
                        nodes,
                    },
                );
                continue;
            }
            *n += 1;
            empty.push(i);
        }
        if !empty.is_empty() {
            let candidates: Vec<Candidate> = empty
                .iter()
                .map(|&i| ctx.infos[i].candidate.clone())
                .collect();
            plan.decision = Some(Decision {
                method: Method::Empty,
                savings_per_hour: candidates.iter().filter_map(|c| c.price).sum(),
                candidates,
                replacements: Vec::new(),
                reason: "no reschedulable pods".into(),
            });
        }
    }

    // 4–5. Underutilized: multi-node, then single-node.
    if plan.decision.is_none() {
        let mut taken: BTreeMap<usize, usize> = BTreeMap::new();
        let mut under: Vec<usize> = Vec::new();
        for &i in &consolidatable {
            let info = &ctx.infos[i];
            let Some(pi) = info.pool else { continue };
            // Empty nodes go for reason Empty only (when its budget or policy allows).
            if info.reschedulable.is_empty()
                || input.cluster.node_pools[pi]
                    .node_pool
                    .disruption
                    .consolidation_policy
                    != ConsolidationPolicy::WhenEmptyOrUnderutilized
            {
                continue;
            }
            eligible.insert(i);
            let &(nodes, disrupting, allowed) = &budget[&(pi, DisruptionReason::Underutilized)];
            let n = taken.entry(pi).or_default();
            if *n >= allowed {
                blocked.insert(
                    i,
                    BlockReason::Budget {
                        reason: DisruptionReason::Underutilized,
                        allowed,
                        disrupting: disrupting + *n,
                        nodes,
                    },
                );
                continue;
            }
            *n += 1;
            under.push(i);
        }
        let key = consolidation_key(input, &ctx.infos, &under);
        plan.consolidation_key = Some(key);
        let skip = input.options.consolidated == Some(key);
        plan.stats.consolidation_skipped = skip;
        if skip {
            for &i in &under {
                blocked.entry(i).or_insert(BlockReason::NotConsolidatable {
                    why: "nothing changed since consolidation last found no saving".into(),
                });
            }
            under.clear();
        }
        let multi: Vec<usize> = under
            .iter()
            .copied()
            .take(input.options.max_multi_node)
            .collect();
        // The largest prefix (of two or more) that consolidates, by binary search.
        if multi.len() >= 2 {
            let (mut lo, mut hi) = (2usize, multi.len());
            let mut best: Option<Decision> = None;
            let multi_started = Instant::now();
            while lo <= hi {
                if input
                    .options
                    .multi_node_timeout
                    .is_some_and(|t| multi_started.elapsed() >= t)
                {
                    plan.stats.timed_out = true;
                    break;
                }
                let mid = (lo + hi) / 2;
                match ctx.consolidation(&multi[..mid]) {
                    Ok(d) if d.savings_per_hour > 0.0 => {
                        best = Some(d);
                        lo = mid + 1;
                    }
                    _ => hi = mid - 1,
                }
            }
            plan.decision = best;
        }
        if plan.decision.is_none() {
            let single_started = Instant::now();
            for (tried, &i) in under.iter().enumerate() {
                if let Some(limit) = input.options.single_node_timeout
                    && single_started.elapsed() >= limit
                {
                    plan.stats.timed_out = true;
                    for &j in &under[tried..] {
                        blocked.entry(j).or_insert(BlockReason::NotConsolidatable {
                            why: format!(
                                "not evaluated: single-node consolidation stops after {}s",
                                limit.as_secs()
                            ),
                        });
                    }
                    break;
                }
                match ctx.consolidation(&[i]) {
                    Ok(d) if d.savings_per_hour > 0.0 => {
                        plan.decision = Some(d);
                        break;
                    }
                    Ok(_) => {
                        blocked.insert(
                            i,
                            BlockReason::NotConsolidatable {
                                why: "no saving".into(),
                            },
                        );
                    }
                    Err(why) => {
                        blocked.insert(i, BlockReason::NotConsolidatable { why });
                    }
                }
            }
        }
    }

    if let Some(d) = &plan.decision {
        let chosen: BTreeSet<&str> = d.candidates.iter().map(|c| c.node.as_str()).collect();
        blocked.retain(|&i, _| !chosen.contains(ctx.infos[i].candidate.node.as_str()));
    }
    plan.blocked = blocked
        .into_iter()
        .map(|(i, reason)| Blocked {
            node: ctx.infos[i].candidate.node.clone(),
            node_pool: ctx.infos[i].candidate.node_pool.clone(),
            reason,
        })
        .collect();
    plan.stats.eligible = eligible.len();
    plan.stats.simulations = ctx.simulations;
    plan.stats.duration_micros = started.elapsed().as_micros();
    plan
}

/// Checks `decision` again against fresh state (Karpenter waits 15 s, then does the same):
/// the same nodes must still be candidates for the same method, with the same pods, the
/// budgets must still allow them, and a consolidation must still save at least as much (prices
/// may have changed). The decision to carry out (replacements recomputed), or why it is
/// dropped.
pub fn validate(input: &DisruptionInput, decision: &Decision) -> Result<Decision, String> {
    let infos = nodes_info(input);
    let budget = budgets(input, &infos);
    let mut idx = Vec::new();
    for c in &decision.candidates {
        let Some(i) = infos.iter().position(|i| i.candidate.node == c.node) else {
            return Err(format!("node {} is gone", c.node));
        };
        let info = &infos[i];
        if info.disrupting {
            return Err(format!("node {} is already being disrupted", c.node));
        }
        if info.candidate.pods != c.pods {
            return Err(format!("the pods on node {} changed", c.node));
        }
        if decision.method != Method::Expired
            && let Some(b) = &info.block
        {
            return Err(format!("node {}: {b}", c.node));
        }
        if matches!(decision.method, Method::Empty | Method::Underutilized)
            && let Err(b) = &info.consolidatable
        {
            return Err(format!("node {}: {b}", c.node));
        }
        idx.push(i);
    }
    if let Some(reason) = decision.method.budget_reason() {
        let mut per_pool: BTreeMap<usize, usize> = BTreeMap::new();
        for &i in &idx {
            *per_pool
                .entry(infos[i].pool.unwrap_or(usize::MAX))
                .or_default() += 1;
        }
        for (pi, n) in per_pool {
            if let Some(&(_, _, allowed)) = budget.get(&(pi, reason))
                && n > allowed
            {
                return Err(format!(
                    "the NodePool's budget for {} now allows {allowed}, the decision takes {n}",
                    reason_str(reason)
                ));
            }
        }
    }
    let mut ctx = Ctx {
        input,
        simulator: Simulator::new(input, &infos),
        infos,
        simulations: 0,
    };
    match decision.method {
        Method::Empty => {
            if idx.iter().any(|&i| !ctx.infos[i].reschedulable.is_empty()) {
                return Err("a node is no longer empty".into());
            }
            let mut d = decision.clone();
            d.candidates = idx
                .iter()
                .map(|&i| ctx.infos[i].candidate.clone())
                .collect();
            Ok(d)
        }
        Method::Underutilized => {
            let d = ctx.consolidation(&idx)?;
            if d.replacements.len() != decision.replacements.len() {
                return Err("the consolidation changed shape (delete ↔ replace)".into());
            }
            if d.savings_per_hour + 1e-9 < decision.savings_per_hour {
                return Err(format!(
                    "it saves {:.4}/h now, not {:.4}/h (prices changed)",
                    d.savings_per_hour, decision.savings_per_hour
                ));
            }
            Ok(d)
        }
        Method::Drifted => {
            let i = idx[0];
            let info = &ctx.infos[i];
            let pool = info.pool.ok_or("NodePool gone")?;
            let node = &input.cluster.nodes[info.index].node;
            let claim = &input.node_claims[info.claim];
            let why = drift(
                claim,
                &node.labels,
                &input.cluster.node_pools[pool].node_pool,
            )
            .ok_or_else(|| format!("node {} is no longer drifted", node.name))?;
            ctx.replacement(Method::Drifted, i, false, why)
        }
        Method::Expired => ctx.replacement(Method::Expired, idx[0], true, decision.reason.clone()),
    }
}

/// A decision as the actuator carries it out (`berth.v1.CloudProvider/Disrupt`).
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    /// Unique per decision; recorded on the candidates.
    pub id: String,
    pub method: Method,
    /// NodeClaims to remove.
    pub node_claims: Vec<String>,
    /// NodeClaims to launch first.
    pub replacements: Vec<NodeClaim>,
    pub savings_per_hour: f64,
    pub reason: String,
}
