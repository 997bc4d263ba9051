//! `berth plan`'s disruption side: what the scheduler's disruption loop would do next with the
//! files' Nodes and running pods, by the same pure decision
//! ([`berth_scheduler_core::disruption::decide`]).
//!
//! ```text
//!  Node + its NodeClaim (from the files, or made up from the Node) ─┐
//!  running pods (spec.nodeName): startTime ─> last pod event ───────┼─> DisruptionInput ─decide─>
//!  the provisioning Plan: pods it puts on a Node arrive at --now ───┘    decision + blocked nodes
//! ```
//!
//! Where the files are silent (documented in docs/plan.md):
//! - A Node with a `karpenter.sh/nodepool` label and no NodeClaim naming it (`status.nodeName`
//!   or `status.providerID`) gets the NodeClaim Karpenter would have written: the Node's labels
//!   and annotations (so a `karpenter.sh/nodepool-hash` on the Node counts for drift), its
//!   NodePool's `expireAfter` and `terminationGracePeriod`, created with the Node, initialized
//!   when the Node is Ready (unless it is a Karpenter Node still initializing: labelled
//!   `karpenter.sh/registered` without `karpenter.sh/initialized: "true"`).
//! - A Node with neither is not managed by a NodePool: disruption leaves it alone, and it is
//!   listed as blocked with that reason. A NodeClaim whose Node is not among the files is in
//!   flight: disruption does not look at it.
//! - Times that are missing count the way that disrupts least by surprise: a Node or NodeClaim
//!   without `creationTimestamp` is new for expiry (created at `--now`), and a Node with no
//!   known time at all (no creationTimestamp, no pod `status.startTime`, no NodeClaim
//!   `status.lastPodEventTime`) has been quiet for ever for `consolidateAfter`.
//! - Pending pods the provisioning plan puts on an existing Node arrive there at `--now`
//!   (provisioning goes first); pods bound for new NodeClaims are left out, as the new nodes
//!   are (the scheduler waits for them to settle before it disrupts anything).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use berth_api::{domain, labels, v1};
use berth_scheduler_core::disruption::{self, Decision, DisruptionInput, DisruptionPlan, Options};
use berth_scheduler_core::model as m;
use berth_scheduler_core::solver::{
    ExistingNode, NewNodeClaim, NodePoolInput, Plan, SchedulingInput,
};
use berth_scheduler_core::sync::NominationTarget;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::Serialize;

/// A Kubernetes time as a `SystemTime`; `None` when absent (or before 1970).
fn time(t: Option<&Time>) -> Option<SystemTime> {
    let secs = u64::try_from(t?.0.as_second()).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

/// A NodeClaim from the files, with the times the domain model leaves out.
pub struct GivenClaim {
    claim: m::NodeClaim,
    created: Option<SystemTime>,
    last_pod_event: Option<SystemTime>,
}

impl GivenClaim {
    /// Converts a (validated) NodeClaim; its NodePool label is required.
    pub fn read(c: &v1::NodeClaim) -> anyhow::Result<Self> {
        let claim = domain::node_claim(c).map_err(|e| anyhow::anyhow!("{e}"))?;
        if claim.node_pool.is_empty() {
            anyhow::bail!(
                "metadata.labels[{:?}]: required (the NodePool the NodeClaim belongs to)",
                labels::NODE_POOL
            );
        }
        Ok(Self {
            claim,
            created: time(c.metadata.creation_timestamp.as_ref()),
            last_pod_event: c
                .status
                .as_ref()
                .and_then(|s| time(s.last_pod_event_time.as_ref())),
        })
    }
}

/// What disruption reads of the files beside the scheduling input.
pub struct Cluster {
    now: SystemTime,
    /// One per managed Node: the files' own, or made up from the Node.
    node_claims: Vec<m::NodeClaim>,
    /// The latest known time per Node (creation, pod starts, the claim's last pod event).
    last_pod_event: BTreeMap<String, SystemTime>,
    /// Nodes no NodePool manages.
    unmanaged: Vec<String>,
}

/// Whether a Node counts as initialized for its made-up NodeClaim.
fn initialized(node: &m::Node) -> bool {
    let initializing = node.labels.contains_key(labels::NODE_REGISTERED)
        && node
            .labels
            .get(labels::NODE_INITIALIZED)
            .map(String::as_str)
            != Some("true");
    node.ready && !initializing
}

/// The NodeClaim Karpenter would have written for `node` of pool `pool_name`.
fn made_up_claim(
    raw: &core::Node,
    node: &m::Node,
    pool_name: &str,
    pools: &[NodePoolInput],
    now: SystemTime,
) -> m::NodeClaim {
    let pool = pools
        .iter()
        .map(|p| &p.node_pool)
        .find(|p| p.name == pool_name);
    let class = pool.map_or_else(
        || m::NodeClassRef {
            group: String::new(),
            kind: String::new(),
            name: String::new(),
        },
        |p| p.node_class_ref.clone(),
    );
    let mut claim = m::NodeClaim::new(&node.name, pool_name, class);
    claim.labels = node.labels.clone();
    claim.labels.remove(labels::NODE_POOL);
    claim.annotations = raw.metadata.annotations.clone().unwrap_or_default();
    claim.node_name = node.name.clone();
    claim.provider_id = node.provider_id.clone();
    claim.expire_after = pool.and_then(|p| p.expire_after);
    claim.termination_grace_period = pool.and_then(|p| p.termination_grace_period);
    claim.capacity = node.capacity.clone();
    claim.allocatable = node.allocatable.clone();
    claim.conditions = [
        m::NodeClaimCondition::Launched,
        m::NodeClaimCondition::Registered,
    ]
    .into_iter()
    .chain(initialized(node).then_some(m::NodeClaimCondition::Initialized))
    .collect();
    claim.deleting = node.deleting;
    claim.created_at = time(raw.metadata.creation_timestamp.as_ref()).unwrap_or(now);
    claim
}

/// When a pod on a node last started: `status.startTime`, else its creation.
fn pod_times(pods: &[core::Pod]) -> BTreeMap<&str, SystemTime> {
    let mut out: BTreeMap<&str, SystemTime> = BTreeMap::new();
    for p in pods {
        let Some(node) = p.spec.as_ref().and_then(|s| s.node_name.as_deref()) else {
            continue;
        };
        let status = p.status.as_ref();
        if matches!(
            status.and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        ) {
            continue;
        }
        let started = status
            .and_then(|s| time(s.start_time.as_ref()))
            .or_else(|| time(p.metadata.creation_timestamp.as_ref()));
        if let Some(t) = started {
            let latest = out.entry(node).or_insert(t);
            *latest = (*latest).max(t);
        }
    }
    out
}

impl Cluster {
    /// `raw_nodes` and `nodes` are the files' Nodes in the same order, raw and converted.
    pub fn new(
        raw_nodes: &[core::Node],
        nodes: &[ExistingNode],
        claims: Vec<GivenClaim>,
        pods: &[core::Pod],
        pools: &[NodePoolInput],
        now: SystemTime,
    ) -> Self {
        let started = pod_times(pods);
        let mut given: Vec<Option<GivenClaim>> = claims.into_iter().map(Some).collect();
        let mut out = Self {
            now,
            node_claims: Vec::new(),
            last_pod_event: BTreeMap::new(),
            unmanaged: Vec::new(),
        };
        for (raw, n) in raw_nodes.iter().zip(nodes) {
            let node = &n.node;
            let node_created = time(raw.metadata.creation_timestamp.as_ref());
            // The claim naming this node, as the core matches them.
            let mine = given.iter_mut().find(|g| {
                g.as_ref().is_some_and(|g| {
                    (!g.claim.node_name.is_empty() && g.claim.node_name == node.name)
                        || (!g.claim.provider_id.is_empty()
                            && g.claim.provider_id == node.provider_id)
                })
            });
            let (claim, claim_times) = match mine.and_then(Option::take) {
                Some(GivenClaim {
                    mut claim,
                    created,
                    last_pod_event,
                }) => {
                    claim.created_at = created.or(node_created).unwrap_or(now);
                    (claim, [created, last_pod_event])
                }
                None => match node.labels.get(labels::NODE_POOL) {
                    Some(pool) => (made_up_claim(raw, node, pool, pools, now), [None, None]),
                    None => {
                        out.unmanaged.push(node.name.clone());
                        continue;
                    }
                },
            };
            let latest = [node_created, started.get(node.name.as_str()).copied()]
                .into_iter()
                .chain(claim_times)
                .flatten()
                .max()
                .unwrap_or(SystemTime::UNIX_EPOCH);
            out.last_pod_event.insert(node.name.clone(), latest);
            out.node_claims.push(claim);
        }
        out
    }

    /// The disruption decision on `scheduling` once `plan`'s placements on existing nodes are
    /// made (those pods arrive at `now`).
    pub fn decide(self, mut scheduling: SchedulingInput, plan: &Plan) -> Outcome {
        let Self {
            now,
            node_claims,
            mut last_pod_event,
            unmanaged,
        } = self;
        let placed: BTreeMap<&m::ObjectKey, &str> = plan
            .placements
            .iter()
            .filter_map(|p| match &p.target {
                NominationTarget::Node(n) => Some((&p.pod, n.as_str())),
                NominationTarget::NodeClaim(_) => None,
            })
            .collect();
        let (arriving, pending): (Vec<m::Pod>, Vec<m::Pod>) = std::mem::take(&mut scheduling.pods)
            .into_iter()
            .partition(|p| placed.contains_key(&p.key));
        scheduling.pods = pending;
        for mut pod in arriving {
            let node = placed[&pod.key];
            if let Some(n) = scheduling.nodes.iter_mut().find(|n| n.node.name == node) {
                pod.node_name = Some(node.to_owned());
                pod.unschedulable = false;
                n.pods.push(pod);
                last_pod_event.insert(node.to_owned(), now);
            }
        }
        let input = DisruptionInput {
            cluster: scheduling,
            node_claims,
            last_pod_event,
            options: Options::default(),
        };
        Outcome {
            plan: disruption::decide(&input),
            unmanaged,
        }
    }
}

/// The decision and the nodes that stay.
pub struct Outcome {
    plan: DisruptionPlan,
    unmanaged: Vec<String>,
}

/// One disruption decision (docs/plan.md).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DisruptionOutput {
    /// `Expired`, `Drifted`, `Empty` or `Underutilized`.
    pub method: String,
    pub nodes: Vec<String>,
    /// Launched (and initialized) before the nodes are drained.
    pub replacements: Vec<ReplacementOutput>,
    /// The nodes' prices less the replacements'; negative when a replacement costs more
    /// (expiry, drift).
    pub savings_per_hour: f64,
    /// Why, in words (for drift: what drifted).
    pub reason: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplacementOutput {
    pub node_pool: String,
    pub instance_type: String,
    pub zone: String,
    pub capacity_type: String,
    pub price_per_hour: f64,
}

#[derive(Debug, Serialize)]
pub struct BlockedOutput {
    pub node: String,
    pub reason: String,
}

/// A new claim as the output names it: its pool and cheapest option.
pub(super) fn replacement(c: &NewNodeClaim) -> ReplacementOutput {
    let first = c.instance_types.first();
    ReplacementOutput {
        node_pool: c.node_pool.clone(),
        instance_type: first.map(|o| o.name.clone()).unwrap_or_default(),
        zone: first.map(|o| o.zone.clone()).unwrap_or_default(),
        capacity_type: first
            .map(|o| o.capacity_type.as_str().to_owned())
            .unwrap_or_default(),
        price_per_hour: c.price,
    }
}

fn decision(d: &Decision) -> DisruptionOutput {
    DisruptionOutput {
        method: d.method.as_str().to_owned(),
        nodes: d.node_names(),
        replacements: d.replacements.iter().map(replacement).collect(),
        savings_per_hour: super::round4(d.savings_per_hour),
        reason: d.reason.clone(),
    }
}

impl Outcome {
    /// The `disruptions` and `disruptionBlocked` of the plan's document.
    pub fn output(&self) -> (Vec<DisruptionOutput>, Vec<BlockedOutput>) {
        let disruptions = self.plan.decision.iter().map(decision).collect();
        let mut blocked: Vec<BlockedOutput> = self
            .plan
            .blocked
            .iter()
            .map(|b| BlockedOutput {
                node: b.node.clone(),
                reason: b.reason.to_string(),
            })
            .collect();
        blocked.extend(self.unmanaged.iter().map(|n| BlockedOutput {
            node: n.clone(),
            reason: format!(
                "not managed by a NodePool (no {} label and no NodeClaim)",
                labels::NODE_POOL
            ),
        }));
        blocked.sort_by(|a, b| a.node.cmp(&b.node));
        (disruptions, blocked)
    }
}

/// The table's disruption lines.
pub fn table(s: &mut String, disruptions: &[DisruptionOutput], blocked: &[BlockedOutput]) {
    use std::fmt::Write;
    for d in disruptions {
        let replaced = if d.replacements.is_empty() {
            "no replacement".to_owned()
        } else {
            d.replacements
                .iter()
                .map(|r| {
                    format!(
                        "{} {} ({}, {}, ${:.4}/hour)",
                        r.node_pool, r.instance_type, r.zone, r.capacity_type, r.price_per_hour
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(
            s,
            "disruption {}: {} -> {replaced}; saves ${:.4}/hour ({})",
            d.method,
            d.nodes.join(", "),
            d.savings_per_hour,
            d.reason
        );
    }
    for b in blocked {
        let _ = writeln!(s, "disruption blocked {}: {}", b.node, b.reason);
    }
    if disruptions.is_empty() && !blocked.is_empty() {
        let _ = writeln!(s, "no disruption");
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Input, input, output, parse_now};
    use berth_catalog::Catalog;
    use berth_scheduler_core::solver;

    const POOL: &str = r#"
apiVersion: karpenter.k8s.aws/v1
kind: EC2NodeClass
metadata: {name: default}
spec:
  role: R
  amiSelectorTerms: [{alias: al2023@latest}]
  subnetSelectorTerms: [{tags: {k: v}}]
  securityGroupSelectorTerms: [{tags: {k: v}}]
---
apiVersion: karpenter.sh/v1
kind: NodePool
metadata: {name: general}
spec:
  template:
    spec:
      nodeClassRef: {group: karpenter.k8s.aws, kind: EC2NodeClass, name: default}
      expireAfter: 1h
      requirements:
        - {key: karpenter.k8s.aws/instance-family, operator: In, values: [m5]}
        - {key: karpenter.sh/capacity-type, operator: In, values: [on-demand]}
  disruption:
    consolidationPolicy: WhenEmptyOrUnderutilized
    consolidateAfter: 1h
"#;

    /// An m5.large Node; `extra` goes under `metadata:`.
    fn mk_node(name: &str, extra: &str) -> String {
        format!(
            "---\napiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n{extra}\nstatus:\n  allocatable: {{cpu: 1930m, memory: 7Gi, pods: \"29\"}}\n"
        )
    }

    const LABELS: &str = "  labels:\n    karpenter.sh/nodepool: general\n    node.kubernetes.io/instance-type: m5.large\n    topology.kubernetes.io/zone: us-east-1a\n    karpenter.sh/capacity-type: on-demand";

    /// A decision as `(method, nodes)`.
    type Disruption = (String, Vec<String>);
    /// A node that stays as `(node, reason)`.
    type Kept = (String, String);

    /// `(disruptions, blocked)` of the files at `now`.
    fn plan(yaml: &str, now: &str) -> anyhow::Result<(Vec<Disruption>, Vec<Kept>)> {
        let Input {
            scheduling,
            disruption,
        } = input(
            &[("test.yaml".to_owned(), yaml.to_owned())],
            &Catalog::builtin(),
            parse_now(now)?,
        )?;
        let provisioning = solver::solve(&scheduling);
        let out = output(&provisioning, &disruption.decide(scheduling, &provisioning));
        Ok((
            out.disruptions
                .into_iter()
                .map(|d| (d.method, d.nodes))
                .collect(),
            out.disruption_blocked
                .into_iter()
                .map(|b| (b.node, b.reason))
                .collect(),
        ))
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn a_node_without_times_is_not_expired_and_has_been_quiet() {
        // expireAfter and consolidateAfter are both 1h; with no time known, the node is new
        // for expiry and long quiet for consolidation: Empty, not Expired.
        let yaml = POOL.to_owned() + &mk_node("n", LABELS);
        let (d, blocked) = plan(&yaml, "2030-01-01T00:00:00Z").unwrap();
        assert_eq!(d, vec![("Empty".to_owned(), strings(&["n"]))]);
        assert!(blocked.is_empty(), "{blocked:?}");
    }

    #[test]
    fn the_node_pools_expire_after_applies_to_a_node_without_a_claim() {
        let labels = format!("{LABELS}\n  creationTimestamp: \"2030-01-01T00:00:00Z\"");
        let yaml = POOL.to_owned() + &mk_node("n", &labels);
        let (d, _) = plan(&yaml, "2030-01-01T00:59:00Z").unwrap();
        assert!(d.is_empty(), "{d:?}");
        let (d, _) = plan(&yaml, "2030-01-01T01:00:00Z").unwrap();
        assert_eq!(d, vec![("Expired".to_owned(), strings(&["n"]))]);
    }

    #[test]
    fn a_node_without_a_node_pool_is_left_alone_and_says_why() {
        let yaml = POOL.to_owned() + &mk_node("static", "  labels: {team: infra}");
        let (d, blocked) = plan(&yaml, "2030-01-01T00:00:00Z").unwrap();
        assert!(d.is_empty());
        assert_eq!(
            blocked,
            vec![(
                "static".to_owned(),
                "not managed by a NodePool (no karpenter.sh/nodepool label and no NodeClaim)"
                    .to_owned()
            )]
        );
    }

    #[test]
    fn a_karpenter_node_still_initializing_is_not_a_candidate() {
        let labels = format!("{LABELS}\n    karpenter.sh/registered: \"true\"");
        let yaml = POOL.to_owned() + &mk_node("n", &labels);
        let (d, blocked) = plan(&yaml, "2030-01-01T00:00:00Z").unwrap();
        assert!(d.is_empty(), "{d:?}");
        assert_eq!(
            blocked,
            vec![("n".to_owned(), "not initialized yet".to_owned())]
        );
        let labels = format!("{labels}\n    karpenter.sh/initialized: \"true\"");
        let yaml = POOL.to_owned() + &mk_node("n", &labels);
        let (d, _) = plan(&yaml, "2030-01-01T00:00:00Z").unwrap();
        assert_eq!(d, vec![("Empty".to_owned(), strings(&["n"]))]);
    }

    #[test]
    fn a_pending_pod_the_plan_puts_on_an_empty_node_keeps_it() {
        let pending = "---\napiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: c, resources: {requests: {cpu: 500m}}}]\n";
        let yaml = POOL.to_owned() + &mk_node("n", LABELS) + pending;
        let (d, blocked) = plan(&yaml, "2030-01-01T00:00:00Z").unwrap();
        assert!(d.is_empty(), "{d:?}");
        assert_eq!(
            blocked,
            vec![(
                "n".to_owned(),
                "consolidateAfter has 3600s to run since the last pod event".to_owned()
            )]
        );
    }

    const CLAIM: &str = r#"
---
apiVersion: karpenter.sh/v1
kind: NodeClaim
metadata:
  name: general-abcde
  creationTimestamp: "2030-01-01T00:00:00Z"
  labels: {karpenter.sh/nodepool: general}
spec:
  nodeClassRef: {group: karpenter.k8s.aws, kind: EC2NodeClass, name: default}
  expireAfter: Never
  requirements:
    - {key: node.kubernetes.io/instance-type, operator: In, values: [m5.large]}
status:
  nodeName: n
  lastPodEventTime: "2030-01-01T05:00:00Z"
  conditions:
    - {type: Initialized, status: "True", reason: Initialized, message: "", lastTransitionTime: "2030-01-01T00:01:00Z"}
"#;

    #[test]
    fn a_given_node_claim_is_used_with_its_expiry_and_last_pod_event() {
        // The claim says Never (the pool says 1h) and a pod left at 05:00 (consolidateAfter
        // 1h): at 05:30 nothing happens, at 06:00 the node is Empty.
        let yaml = POOL.to_owned() + &mk_node("n", LABELS) + CLAIM;
        let (d, blocked) = plan(&yaml, "2030-01-01T05:30:00Z").unwrap();
        assert!(d.is_empty(), "{d:?}");
        assert_eq!(
            blocked,
            vec![(
                "n".to_owned(),
                "consolidateAfter has 1800s to run since the last pod event".to_owned()
            )]
        );
        let (d, _) = plan(&yaml, "2030-01-01T06:00:00Z").unwrap();
        assert_eq!(d, vec![("Empty".to_owned(), strings(&["n"]))]);
    }

    #[test]
    fn a_node_claims_drifted_condition_drifts_its_node() {
        let claim = CLAIM.replace(
            "conditions:\n",
            "conditions:\n    - {type: Drifted, status: \"True\", reason: AMIDrift, message: \"\", lastTransitionTime: \"2030-01-01T00:01:00Z\"}\n",
        );
        let yaml = POOL.to_owned() + &mk_node("n", LABELS) + &claim;
        let (d, _) = plan(&yaml, "2030-01-01T05:30:00Z").unwrap();
        assert_eq!(d, vec![("Drifted".to_owned(), strings(&["n"]))]);
    }

    #[test]
    fn a_node_claim_without_its_node_pool_label_is_refused() {
        let claim = CLAIM.replace("  labels: {karpenter.sh/nodepool: general}\n", "");
        let yaml = POOL.to_owned() + &mk_node("n", LABELS) + &claim;
        let err = plan(&yaml, "2030-01-01T05:30:00Z").unwrap_err().to_string();
        assert!(
            err.contains(
                "NodeClaim/general-abcde: metadata.labels[\"karpenter.sh/nodepool\"]: required"
            ),
            "{err}"
        );
    }

    #[test]
    fn now_takes_rfc_3339_only() {
        let t = parse_now("2030-01-01T00:00:00Z").unwrap();
        assert_eq!(
            t.duration_since(std::time::SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_secs(),
            1_893_456_000
        );
        assert_eq!(parse_now("2030-01-01T01:00:00+01:00").unwrap(), t);
        for bad in ["", "2030-01-01", "tomorrow", "1969-12-31T23:59:59Z"] {
            let err = parse_now(bad).unwrap_err().to_string();
            assert!(err.starts_with("--now: "), "{bad}: {err}");
        }
    }
}
