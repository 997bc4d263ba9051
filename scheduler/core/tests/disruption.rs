//! Disruption: each method, each block, and a property: a decision never leaves a pod without
//! room (checked by the independent plan checker on the cluster the decision leaves).

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use berth_scheduler_core::checker;
use berth_scheduler_core::disruption::{
    self, BlockReason, DisruptionInput, Method, Options, budget_active, budget_limit,
};
use berth_scheduler_core::labels;
use berth_scheduler_core::model::*;
use common::*;
use proptest::prelude::*;

const HOUR: Duration = Duration::from_secs(3600);

fn t0() -> SystemTime {
    // 2026-12-07T12:00:00Z, a Monday.
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_644_800)
}

fn it(name: &str) -> InstanceType {
    catalog().into_iter().find(|t| t.name == name).unwrap()
}

/// A cluster builder: nodes of one pool, each with its NodeClaim (initialized), created an hour
/// before `t0`.
struct Cluster {
    input: DisruptionInput,
}

impl Cluster {
    fn new(pool: NodePool) -> Self {
        let mut cluster = input(vec![pool], vec![]);
        cluster.now = t0();
        Self {
            input: DisruptionInput {
                cluster,
                node_claims: vec![],
                last_pod_event: BTreeMap::new(),
                options: Options::default(),
            },
        }
    }

    fn pool(&self) -> &NodePool {
        &self.input.cluster.node_pools[0].node_pool
    }

    /// Adds node `name` of type `ty` holding `pods`.
    fn node(mut self, name: &str, ty: &str, pods: Vec<Pod>) -> Self {
        let pool = self.pool().clone();
        let mut n = node(name, &pool.name, &it(ty), ZONES[0]);
        n.created_at = t0() - HOUR;
        let mut c = NodeClaim::new(&format!("{name}-claim"), &pool.name, node_class());
        c.node_name = name.into();
        c.provider_id = n.provider_id.clone();
        c.labels = n.labels.clone();
        c.annotations = disruption::hash_annotations(&pool);
        c.created_at = t0() - HOUR;
        c.expire_after = pool.expire_after;
        c.conditions = [
            NodeClaimCondition::Launched,
            NodeClaimCondition::Registered,
            NodeClaimCondition::Initialized,
        ]
        .into();
        self.input.node_claims.push(c);
        self.input.cluster.nodes.push(existing(n, pods));
        self
    }

    fn claim(&mut self, node: &str) -> &mut NodeClaim {
        self.input
            .node_claims
            .iter_mut()
            .find(|c| c.node_name == node)
            .unwrap()
    }

    fn node_mut(&mut self, node: &str) -> &mut ExistingNodeRef {
        self.input
            .cluster
            .nodes
            .iter_mut()
            .find(|n| n.node.name == node)
            .unwrap()
    }

    fn decide(&self) -> disruption::DisruptionPlan {
        disruption::decide(&self.input)
    }
}

type ExistingNodeRef = berth_scheduler_core::solver::ExistingNode;

fn consolidating_pool() -> NodePool {
    let mut p = pool("general");
    p.disruption.consolidate_after = Some(Duration::ZERO);
    p.disruption.budgets = vec![Budget {
        nodes: BudgetNodes::Percent(100),
        reasons: vec![],
        schedule: None,
        duration: None,
    }];
    p
}

fn when_empty() -> NodePool {
    let mut p = consolidating_pool();
    p.disruption.consolidation_policy = ConsolidationPolicy::WhenEmpty;
    p
}

fn small(name: &str) -> Pod {
    pod(name, 500, 1024 * MI * 1000)
}

fn blocked_reason<'a>(plan: &'a disruption::DisruptionPlan, node: &str) -> &'a BlockReason {
    &plan
        .blocked
        .iter()
        .find(|b| b.node == node)
        .unwrap_or_else(|| panic!("{node} not blocked: {plan:#?}"))
        .reason
}

#[test]
fn an_empty_node_goes_once_consolidate_after_has_passed() {
    let mut p = consolidating_pool();
    p.disruption.consolidation_policy = ConsolidationPolicy::WhenEmpty;
    p.disruption.consolidate_after = Some(Duration::from_secs(300));
    let mut c = Cluster::new(p)
        .node("busy", "m5.xlarge", vec![small("a")])
        .node("idle", "m5.xlarge", vec![]);
    c.input
        .last_pod_event
        .insert("idle".into(), t0() - Duration::from_secs(100));
    let plan = c.decide();
    assert!(plan.decision.is_none(), "{plan:#?}");
    assert!(matches!(
        blocked_reason(&plan, "idle"),
        BlockReason::ConsolidateAfter { remaining } if remaining.as_secs() == 200
    ));
    c.input
        .last_pod_event
        .insert("idle".into(), t0() - Duration::from_secs(300));
    let d = c.decide().decision.expect("empty node removed");
    assert_eq!(d.method, Method::Empty);
    assert_eq!(d.node_names(), ["idle"]);
    assert!(d.replacements.is_empty());
    assert!(
        (d.savings_per_hour - 0.192).abs() < 1e-9,
        "{}",
        d.savings_per_hour
    );
}

#[test]
fn daemon_set_and_finished_pods_do_not_keep_a_node() {
    let mut ds = small("agent");
    ds.owner = Some(OwnerReference {
        kind: "DaemonSet".into(),
        name: "agent".into(),
        uid: "u".into(),
    });
    let mut done = small("done");
    done.phase = PodPhase::Succeeded;
    let c = Cluster::new(consolidating_pool()).node("n1", "m5.large", vec![ds, done]);
    let mut c = c;
    c.node_mut("n1").pods[1].phase = PodPhase::Succeeded;
    let d = c.decide().decision.unwrap();
    assert_eq!(d.method, Method::Empty);
}

#[test]
fn two_half_used_nodes_become_one() {
    // Two m5.2xlarge (8 vCPU) with 3 vCPU each: one goes, its pods join the other.
    let c = Cluster::new(consolidating_pool())
        .node("a", "m5.2xlarge", pods("a", 3, 1000, gib(1)))
        .node("b", "m5.2xlarge", pods("b", 3, 1000, gib(1)));
    let d = c.decide().decision.expect("consolidates");
    assert_eq!(d.method, Method::Underutilized);
    // Multi-node first: both go for one cheaper node, which saves more than deleting one.
    assert_eq!(d.candidates.len(), 2, "{d:#?}");
    assert_eq!(d.replacements.len(), 1);
    assert!(d.savings_per_hour > 0.384, "{}", d.savings_per_hour);
    check_decision(&c.input, &d);
    // With m5.2xlarge the only type, no cheaper single node holds 6 vCPU: one of them is
    // deleted and its pods join the other.
    let mut p = consolidating_pool();
    p.requirements.push(Requirement::new(
        labels::INSTANCE_TYPE,
        Operator::In,
        &["m5.2xlarge"],
    ));
    let c = Cluster::new(p)
        .node("a", "m5.2xlarge", pods("a", 3, 1000, gib(1)))
        .node("b", "m5.2xlarge", pods("b", 3, 1000, gib(1)));
    let d = c.decide().decision.expect("consolidates");
    assert_eq!(d.candidates.len(), 1, "{d:#?}");
    assert!(d.replacements.is_empty());
    check_decision(&c.input, &d);
}

#[test]
fn multi_node_replaces_several_nodes_with_one_cheaper() {
    // Three m5.xlarge (4 vCPU) at 2.5 vCPU each do not fit on each other, but all pods fit
    // one m5.2xlarge (0.384/h) for less than three m5.xlarge (0.576/h).
    let c = Cluster::new(consolidating_pool())
        .node("a", "m5.xlarge", pods("a", 1, 2500, gib(2)))
        .node("b", "m5.xlarge", pods("b", 1, 2500, gib(2)))
        .node("c", "m5.xlarge", pods("c", 1, 2500, gib(2)));
    let plan = c.decide();
    let d = plan.decision.expect("consolidates");
    assert_eq!(d.method, Method::Underutilized);
    assert_eq!(d.candidates.len(), 3, "{d:#?}");
    assert_eq!(d.replacements.len(), 1);
    let r = &d.replacements[0];
    assert!(r.price < 0.576, "{}", r.price);
    assert!(r.instance_types.iter().all(|o| o.price < 0.576));
    assert!(d.savings_per_hour > 0.0);
    check_decision(&c.input, &d);
}

#[test]
fn single_node_replaces_an_oversized_node_with_a_cheaper_one() {
    let c =
        Cluster::new(consolidating_pool()).node("big", "m5.4xlarge", pods("p", 2, 1000, gib(2)));
    let plan = c.decide();
    let d = plan.decision.clone().unwrap_or_else(|| panic!("{plan:#?}"));
    assert_eq!(d.method, Method::Underutilized);
    assert_eq!(d.replacements.len(), 1);
    assert!(d.replacements[0].price < 0.768);
    assert!(d.savings_per_hour > 0.3, "{}", d.savings_per_hour);
    check_decision(&c.input, &d);
}

#[test]
fn consolidation_searches_stop_at_their_timeouts_and_say_so() {
    let mut c =
        Cluster::new(consolidating_pool()).node("big", "m5.4xlarge", pods("p", 2, 1000, gib(2)));
    c.input.options.single_node_timeout = Some(Duration::ZERO);
    let plan = c.decide();
    assert!(plan.decision.is_none(), "{plan:#?}");
    assert!(plan.stats.timed_out);
    assert_eq!(plan.stats.simulations, 0);
    assert!(
        blocked_reason(&plan, "big")
            .to_string()
            .contains("single-node consolidation stops after 0s"),
        "{plan:#?}"
    );
    // No limit: the same cluster is consolidated.
    c.input.options.single_node_timeout = None;
    let plan = c.decide();
    assert!(
        plan.decision.is_some() && !plan.stats.timed_out,
        "{plan:#?}"
    );
}

#[test]
fn a_search_that_found_nothing_is_skipped_until_the_cluster_changes() {
    // Two on-demand c5.large (the pool's cheapest type), each mostly used: nothing to delete
    // or replace (one c5.xlarge costs as much as both).
    let mut pool = consolidating_pool();
    pool.requirements.push(Requirement::new(
        labels::CAPACITY_TYPE,
        Operator::In,
        &["on-demand"],
    ));
    pool.requirements.push(Requirement::new(
        labels::INSTANCE_FAMILY,
        Operator::In,
        &["c5"],
    ));
    let mut c = Cluster::new(pool)
        .node("a", "c5.large", pods("a", 1, 1500, gib(2)))
        .node("b", "c5.large", pods("b", 1, 1500, gib(2)));
    let first = c.decide();
    assert!(first.decision.is_none(), "{first:#?}");
    assert!(first.stats.simulations > 0 && !first.stats.consolidation_skipped);
    let key = first.consolidation_key.expect("a search ran");
    c.input.options.consolidated = Some(key);
    let again = c.decide();
    assert!(again.stats.consolidation_skipped, "{again:#?}");
    assert_eq!(again.stats.simulations, 0);
    assert_eq!(again.consolidation_key, Some(key));
    assert!(
        blocked_reason(&again, "a")
            .to_string()
            .contains("nothing changed")
    );
    // One pod ends: the key changes and the search runs (and now finds node a's pod room).
    c.input.cluster.nodes[1].pods.clear();
    let changed = c.decide();
    assert!(!changed.stats.consolidation_skipped);
    assert_ne!(changed.consolidation_key, Some(key));
}

#[test]
fn a_do_not_disrupt_pod_or_node_blocks_and_says_why() {
    let mut keep = small("build");
    keep.do_not_disrupt = true;
    let mut c = Cluster::new(consolidating_pool())
        .node("a", "m5.2xlarge", vec![keep])
        .node("b", "m5.2xlarge", vec![small("x")]);
    c.node_mut("b").node.do_not_disrupt = true;
    let plan = c.decide();
    assert!(plan.decision.is_none(), "{plan:#?}");
    assert!(
        matches!(blocked_reason(&plan, "a"), BlockReason::PodDoNotDisrupt { pod } if pod.name == "build")
    );
    assert_eq!(blocked_reason(&plan, "b"), &BlockReason::NodeDoNotDisrupt);
    assert!(
        blocked_reason(&plan, "a")
            .to_string()
            .contains("karpenter.sh/do-not-disrupt")
    );
    // The NodeClaim's annotation counts too.
    let mut c = Cluster::new(consolidating_pool()).node("c", "m5.large", vec![]);
    c.claim("c")
        .annotations
        .insert(labels::DO_NOT_DISRUPT.into(), "true".into());
    assert_eq!(
        blocked_reason(&c.decide(), "c"),
        &BlockReason::NodeDoNotDisrupt
    );
}

#[test]
fn a_pdb_at_zero_allowed_blocks() {
    let mut p = small("web-0");
    p.labels.insert("app".into(), "web".into());
    let mut c = Cluster::new(consolidating_pool())
        .node("a", "m5.2xlarge", vec![p])
        .node("b", "m5.2xlarge", vec![small("other")]);
    c.input.cluster.pod_disruption_budgets = vec![PodDisruptionBudget {
        key: ObjectKey::new("default", "web"),
        selector: selector("web"),
        disruptions_allowed: 0,
    }];
    let plan = c.decide();
    assert!(matches!(
        blocked_reason(&plan, "a"),
        BlockReason::PodDisruptionBudget { pdb, .. } if pdb.name == "web"
    ));
    // b can still go: its pod fits on a.
    assert_eq!(plan.decision.unwrap().node_names(), ["b"]);
    // With one disruption allowed, a may go too.
    c.input.cluster.pod_disruption_budgets[0].disruptions_allowed = 1;
    assert!(c.decide().blocked.iter().all(|b| b.node != "a"));
}

#[test]
fn a_budget_of_zero_blocks_and_an_inactive_schedule_does_not() {
    let mut p = consolidating_pool();
    p.disruption.budgets.push(Budget {
        nodes: BudgetNodes::Count(0),
        reasons: vec![DisruptionReason::Empty],
        // Every day at 09:00 UTC for 8 hours: active at 12:00.
        schedule: Some("0 9 * * *".into()),
        duration: Some(8 * HOUR),
    });
    let mut c = Cluster::new(p).node("idle", "m5.large", vec![]);
    let plan = c.decide();
    assert!(plan.decision.is_none());
    assert!(matches!(
        blocked_reason(&plan, "idle"),
        BlockReason::Budget {
            reason: DisruptionReason::Empty,
            allowed: 0,
            ..
        }
    ));
    assert!(blocked_reason(&plan, "idle").to_string().contains("Empty"));
    // At 20:00 the window (09:00–17:00) is over: the 100 % budget applies.
    c.input.cluster.now = t0() + 8 * HOUR;
    assert_eq!(c.decide().decision.unwrap().method, Method::Empty);
}

#[test]
fn budgets_percent_rounds_up_and_the_most_restrictive_wins() {
    let mut p = pool("x");
    p.disruption.budgets = vec![
        Budget {
            nodes: BudgetNodes::Percent(10),
            reasons: vec![],
            schedule: None,
            duration: None,
        },
        Budget {
            nodes: BudgetNodes::Count(5),
            reasons: vec![DisruptionReason::Drifted],
            schedule: None,
            duration: None,
        },
    ];
    assert_eq!(budget_limit(&p, DisruptionReason::Empty, 11, t0()), Some(2));
    assert_eq!(budget_limit(&p, DisruptionReason::Empty, 5, t0()), Some(1));
    assert_eq!(
        budget_limit(&p, DisruptionReason::Drifted, 100, t0()),
        Some(5)
    );
    assert_eq!(
        budget_limit(&p, DisruptionReason::Drifted, 20, t0()),
        Some(2)
    );
    p.disruption.budgets.clear();
    assert_eq!(budget_limit(&p, DisruptionReason::Empty, 5, t0()), None);
    assert!(budget_active(
        Some("@daily"),
        Some(HOUR),
        t0() - 12 * HOUR + Duration::from_secs(60)
    ));
    assert!(!budget_active(Some("@daily"), Some(HOUR), t0()));
    assert!(!budget_active(Some("not cron"), Some(HOUR), t0()));
}

#[test]
fn empty_nodes_go_only_as_many_as_the_budget_allows() {
    let mut p = consolidating_pool();
    p.disruption.budgets = vec![Budget {
        nodes: BudgetNodes::Count(2),
        reasons: vec![],
        schedule: None,
        duration: None,
    }];
    let mut c = Cluster::new(p)
        .node("e1", "m5.large", vec![])
        .node("e2", "m5.large", vec![])
        .node("e3", "m5.large", vec![]);
    let plan = c.decide();
    let d = plan.decision.unwrap();
    assert_eq!(d.candidates.len(), 2);
    assert!(matches!(
        plan.blocked[0].reason,
        BlockReason::Budget { allowed: 2, .. }
    ));
    // One already being disrupted uses the budget up: one more only.
    c.node_mut("e1").node.deleting = true;
    let d = c.decide().decision.unwrap();
    assert_eq!(d.candidates.len(), 1);
}

#[test]
fn spot_to_spot_needs_the_feature_gate_and_fifteen_cheaper_types() {
    let mut p = consolidating_pool();
    p.requirements.push(Requirement::new(
        labels::CAPACITY_TYPE,
        Operator::In,
        &["spot"],
    ));
    let mut c = Cluster::new(p).node("big", "m5.4xlarge", pods("p", 2, 1000, gib(2)));
    c.node_mut("big")
        .node
        .labels
        .insert(labels::CAPACITY_TYPE.into(), "spot".into());
    let plan = c.decide();
    assert!(plan.decision.is_none(), "{plan:#?}");
    assert!(
        blocked_reason(&plan, "big")
            .to_string()
            .contains("SpotToSpotConsolidation")
    );
    c.input.options.spot_to_spot = true;
    let plan = c.decide();
    // The small catalog has fewer than 15 spot types cheaper than an m5.4xlarge's spot price.
    assert!(plan.decision.is_none(), "{plan:#?}");
    let why = blocked_reason(&plan, "big").to_string();
    assert!(why.contains("needs 15 cheaper instance types"), "{why}");
}

#[test]
fn on_demand_is_replaced_by_spot_only_when_the_pool_allows_spot() {
    // The common catalog offers spot everywhere (cheaper): a pool that allows both replaces
    // an on-demand node by spot; one that allows on-demand only keeps to on-demand.
    let c =
        Cluster::new(consolidating_pool()).node("big", "m5.4xlarge", pods("p", 2, 1000, gib(2)));
    let d = c.decide().decision.unwrap();
    assert_eq!(
        d.replacements[0].instance_types[0].capacity_type,
        CapacityType::Spot
    );
    let mut p = consolidating_pool();
    p.requirements.push(Requirement::new(
        labels::CAPACITY_TYPE,
        Operator::In,
        &["on-demand"],
    ));
    let c = Cluster::new(p).node("big", "m5.4xlarge", pods("p", 2, 1000, gib(2)));
    let d = c.decide().decision.unwrap();
    assert!(
        d.replacements[0]
            .instance_types
            .iter()
            .all(|o| o.capacity_type == CapacityType::OnDemand)
    );
}

#[test]
fn a_node_not_yet_initialized_is_never_a_candidate() {
    let mut c = Cluster::new(consolidating_pool()).node("new", "m5.large", vec![]);
    c.claim("new")
        .conditions
        .remove(&NodeClaimCondition::Initialized);
    let plan = c.decide();
    assert!(plan.decision.is_none());
    assert_eq!(blocked_reason(&plan, "new"), &BlockReason::NotInitialized);
}

#[test]
fn consolidate_after_never_disables_consolidation() {
    let mut p = consolidating_pool();
    p.disruption.consolidate_after = None;
    let c = Cluster::new(p).node("idle", "m5.large", vec![]);
    let plan = c.decide();
    assert!(plan.decision.is_none());
    assert_eq!(
        blocked_reason(&plan, "idle"),
        &BlockReason::ConsolidationDisabled
    );
}

#[test]
fn when_empty_does_not_consolidate_underutilized_nodes() {
    let mut p = consolidating_pool();
    p.disruption.consolidation_policy = ConsolidationPolicy::WhenEmpty;
    let c = Cluster::new(p)
        .node("a", "m5.2xlarge", pods("a", 1, 1000, gib(1)))
        .node("b", "m5.2xlarge", pods("b", 1, 1000, gib(1)));
    assert!(c.decide().decision.is_none());
}

#[test]
fn a_template_change_drifts_the_node_and_it_is_replaced() {
    let mut c = Cluster::new(when_empty()).node("a", "m5.large", pods("p", 1, 1000, gib(1)));
    // Busy and fine: nothing to do (its pod would need a node anyway).
    assert!(c.decide().decision.is_none());
    c.input.cluster.node_pools[0]
        .node_pool
        .labels
        .insert("team".into(), "ci".into());
    let d = c.decide().decision.expect("drifted");
    assert_eq!(d.method, Method::Drifted);
    assert!(d.reason.contains("nodepool-hash"), "{}", d.reason);
    assert_eq!(d.replacements.len(), 1);
    assert_eq!(
        d.replacements[0].labels.get("team").map(String::as_str),
        Some("ci")
    );
    check_decision(&c.input, &d);
}

#[test]
fn a_hash_of_another_version_is_not_drift() {
    let mut c = Cluster::new(when_empty()).node("a", "m5.large", pods("p", 1, 1000, gib(1)));
    c.claim("a")
        .annotations
        .insert(labels::NODE_POOL_HASH_VERSION.into(), "v3".into());
    c.input.cluster.node_pools[0]
        .node_pool
        .labels
        .insert("team".into(), "ci".into());
    assert!(c.decide().decision.is_none());
}

#[test]
fn a_requirement_the_node_no_longer_meets_drifts_it() {
    let mut c = Cluster::new(when_empty()).node("a", "m5.large", pods("p", 1, 1000, gib(1)));
    c.input.cluster.node_pools[0]
        .node_pool
        .requirements
        .push(Requirement::new(
            labels::INSTANCE_FAMILY,
            Operator::In,
            &["c5"],
        ));
    let d = c.decide().decision.expect("drifted");
    assert_eq!(d.method, Method::Drifted);
    assert!(d.reason.contains("instance-family"), "{}", d.reason);
    assert!(
        d.replacements[0]
            .instance_types
            .iter()
            .all(|o| o.name.starts_with("c5."))
    );
}

#[test]
fn drift_waits_for_do_not_disrupt_and_budgets() {
    let mut keep = small("build");
    keep.do_not_disrupt = true;
    let mut c = Cluster::new(consolidating_pool()).node("a", "m5.large", vec![keep]);
    c.input.cluster.node_pools[0]
        .node_pool
        .labels
        .insert("team".into(), "ci".into());
    let plan = c.decide();
    assert!(plan.decision.is_none());
    assert!(matches!(
        blocked_reason(&plan, "a"),
        BlockReason::PodDoNotDisrupt { .. }
    ));
}

#[test]
fn an_expired_node_is_replaced_whatever_blocks_it() {
    let mut p = consolidating_pool();
    p.expire_after = Some(HOUR / 2);
    p.disruption.budgets = vec![Budget {
        nodes: BudgetNodes::Count(0),
        reasons: vec![],
        schedule: None,
        duration: None,
    }];
    let mut keep = small("build");
    keep.do_not_disrupt = true;
    let c = Cluster::new(p).node("old", "m5.large", vec![keep]);
    let d = c.decide().decision.expect("expired");
    assert_eq!(d.method, Method::Expired);
    assert_eq!(d.replacements.len(), 1);
}

#[test]
fn validation_drops_a_decision_whose_pods_changed() {
    let mut c = Cluster::new(consolidating_pool())
        .node("a", "m5.2xlarge", pods("a", 3, 1000, gib(1)))
        .node("b", "m5.2xlarge", pods("b", 3, 1000, gib(1)));
    let d = c.decide().decision.unwrap();
    assert!(disruption::validate(&c.input, &d).is_ok());
    let gone = d.candidates[0].node.clone();
    let mut extra = small("late");
    extra.node_name = Some(gone.clone());
    extra.phase = PodPhase::Running;
    c.node_mut(&gone).pods.push(extra);
    let err = disruption::validate(&c.input, &d).unwrap_err();
    assert!(err.contains("pods"), "{err}");
}

#[test]
fn validation_drops_an_emptiness_decision_once_a_pod_arrived() {
    let mut c = Cluster::new(consolidating_pool()).node("idle", "m5.large", vec![]);
    let d = c.decide().decision.unwrap();
    let mut p = small("arrived");
    p.node_name = Some("idle".into());
    p.phase = PodPhase::Running;
    c.node_mut("idle").pods.push(p);
    assert!(disruption::validate(&c.input, &d).is_err());
}

#[test]
fn validation_drops_a_consolidation_whose_saving_shrank() {
    let mut c =
        Cluster::new(consolidating_pool()).node("big", "m5.4xlarge", pods("p", 2, 1000, gib(2)));
    let d = c.decide().decision.unwrap();
    // Every other type got dearer: the same replacement no longer saves as much.
    for t in &mut c.input.cluster.node_pools[0].instance_types {
        if t.name != "m5.4xlarge" {
            for o in &mut t.offerings {
                o.price *= 1.5;
            }
        }
    }
    let err = disruption::validate(&c.input, &d).unwrap_err();
    assert!(
        err.contains("prices changed") || err.contains("cheaper"),
        "{err}"
    );
}

#[test]
fn node_claims_are_hashed_as_their_pool_is() {
    let p = consolidating_pool();
    let mut q = p.clone();
    assert_eq!(
        disruption::node_pool_hash(&p),
        disruption::node_pool_hash(&q)
    );
    q.requirements.clear(); // requirements drift dynamically, not by hash
    assert_eq!(
        disruption::node_pool_hash(&p),
        disruption::node_pool_hash(&q)
    );
    q.taints.push(taint("a", "b", TaintEffect::NoSchedule));
    assert_ne!(
        disruption::node_pool_hash(&p),
        disruption::node_pool_hash(&q)
    );
    let claim = berth_scheduler_core::cluster::node_claim_for(
        &berth_scheduler_core::solver::NewNodeClaim {
            node_pool: p.name.clone(),
            requirements: vec![],
            labels: Labels::new(),
            taints: vec![],
            startup_taints: vec![],
            instance_types: vec![],
            pods: vec![],
            requests: Resources::new(),
            price: 0.0,
        },
        &p,
        "general-abc",
        t0(),
    );
    assert_eq!(
        claim.annotations.get(labels::NODE_POOL_HASH),
        Some(&disruption::node_pool_hash(&p))
    );
    assert_eq!(
        claim
            .annotations
            .get(labels::NODE_POOL_HASH_VERSION)
            .map(String::as_str),
        Some(disruption::NODE_POOL_HASH_VERSION)
    );
}

/// The independent check: on the cluster the decision leaves, the solver's placement of the
/// candidates' pods passes the plan checker, every pod is placed, and the replacements are
/// what the decision launches.
#[track_caller]
fn check_decision(input: &DisruptionInput, d: &disruption::Decision) {
    let (sim, plan) = disruption::simulation(input, d);
    let problems = checker::check(&sim, &plan);
    assert!(problems.is_empty(), "{problems:#?}");
    assert!(plan.unschedulable.is_empty(), "{:#?}", plan.unschedulable);
    if d.method == Method::Underutilized {
        assert_eq!(plan.new_node_claims.len(), d.replacements.len());
        let gone: f64 = d.candidates.iter().filter_map(|c| c.price).sum();
        let new: f64 = d.replacements.iter().map(|r| r.price).sum();
        assert!(new < gone, "a consolidation must save: {new} ≥ {gone}");
        for r in &d.replacements {
            let fits = r.instance_types.iter().any(|o| o.price < gone);
            assert!(fits);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Random clusters of mixed utilization: whatever is decided leaves every pod with room,
    /// saves money when it consolidates, and never takes a blocked node.
    #[test]
    fn a_decision_never_leaves_a_pod_without_room(
        nodes in prop::collection::vec(
            (0usize..4, prop::collection::vec((100i64..3000, 1i64..6, any::<bool>()), 0..6)),
            1..7,
        )
    ) {
        let types = ["m5.large", "m5.xlarge", "m5.2xlarge", "c5.2xlarge"];
        let mut c = Cluster::new(consolidating_pool());
        let mut keep = Vec::new();
        for (i, (ty, ps)) in nodes.iter().enumerate() {
            let name = format!("n{i}");
            let t = it(types[*ty]);
            let room = t.allocatable();
            let mut used = Resources::new();
            let mut pods = Vec::new();
            for (j, (cpu, mem, dnd)) in ps.iter().enumerate() {
                let mut p = pod(&format!("{name}-{j}"), *cpu, gib(*mem) / 4);
                p.do_not_disrupt = *dnd && j == 0 && i % 3 == 0;
                let mut with = used.clone();
                with.add(&berth_scheduler_core::pod::effective_requests(&p));
                if with.fits_in(&room) {
                    used = with;
                    if p.do_not_disrupt {
                        keep.push(name.clone());
                    }
                    pods.push(p);
                }
            }
            c = c.node(&name, types[*ty], pods);
        }
        let plan = c.decide();
        if let Some(d) = &plan.decision {
            check_decision(&c.input, d);
            for cand in &d.candidates {
                prop_assert!(!keep.contains(&cand.node), "a do-not-disrupt node was taken");
            }
            prop_assert!(disruption::validate(&c.input, d).is_ok());
        }
    }
}

#[test]
fn cost_per_hour_sums_each_pools_node_offerings() {
    let mut c = Cluster::new(consolidating_pool())
        .node("a", "m5.2xlarge", vec![])
        .node("b", "m5.large", vec![]);
    let price = |ty: &str| {
        it(ty)
            .offerings
            .iter()
            .find(|o| o.zone == ZONES[0] && o.capacity_type == CapacityType::OnDemand)
            .unwrap()
            .price
    };
    let pool = c.pool().name.clone();
    let costs = disruption::cost_per_hour(&c.input.cluster);
    let want = price("m5.2xlarge") + price("m5.large");
    assert!((costs.per_hour[&pool] - want).abs() < 1e-9, "{costs:?}");
    assert_eq!(costs.unpriced, 0);
    // A node whose type the pool no longer offers is counted as unpriced, not guessed.
    c.node_mut("b")
        .node
        .labels
        .insert(labels::INSTANCE_TYPE.to_owned(), "x9.nonesuch".to_owned());
    let costs = disruption::cost_per_hour(&c.input.cluster);
    assert!((costs.per_hour[&pool] - price("m5.2xlarge")).abs() < 1e-9);
    assert_eq!(costs.unpriced, 1);
    // A pool without nodes is listed at 0.
    let empty = Cluster::new(consolidating_pool());
    assert_eq!(
        disruption::cost_per_hour(&empty.input.cluster).per_hour[&pool],
        0.0
    );
}
