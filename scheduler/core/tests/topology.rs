//! Topology spread and pod (anti-)affinity; every plan also passes the independent checker.

mod common;

use std::collections::BTreeMap;

use berth_scheduler_core::labels;
use berth_scheduler_core::model::*;
use berth_scheduler_core::solver::{self, Plan};
use berth_scheduler_core::sync::NominationTarget;
use common::*;

fn spread(
    key: &str,
    max_skew: i32,
    when: WhenUnsatisfiable,
    app: &str,
) -> TopologySpreadConstraint {
    TopologySpreadConstraint {
        max_skew,
        topology_key: key.into(),
        when_unsatisfiable: when,
        label_selector: Some(selector(app)),
        min_domains: None,
        match_label_keys: vec![],
        node_affinity_policy: NodeInclusionPolicy::Honor,
        node_taints_policy: NodeInclusionPolicy::Ignore,
    }
}

fn term(key: &str, app: &str) -> PodAffinityTerm {
    PodAffinityTerm {
        label_selector: Some(selector(app)),
        topology_key: key.into(),
        ..Default::default()
    }
}

fn spread_pods(n: usize, key: &str, max_skew: i32, when: WhenUnsatisfiable) -> Vec<Pod> {
    (0..n)
        .map(|i| {
            let mut p = app(&format!("web-{i}"), "web");
            p.topology_spread = vec![spread(key, max_skew, when, "web")];
            p
        })
        .collect()
}

/// Pods per zone on new claims.
fn per_zone(plan: &Plan) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for c in &plan.new_node_claims {
        *out.entry(
            c.labels
                .get(labels::TOPOLOGY_ZONE)
                .cloned()
                .unwrap_or_else(|| "?".into()),
        )
        .or_default() += c.pods.len();
    }
    out
}

#[test]
fn zone_spread_balances_new_nodes() {
    let plan = solve(&input(
        vec![pool("default")],
        spread_pods(
            6,
            labels::TOPOLOGY_ZONE,
            1,
            WhenUnsatisfiable::DoNotSchedule,
        ),
    ));
    assert!(plan.unschedulable.is_empty());
    assert_eq!(
        per_zone(&plan),
        [
            ("us-east-1a".into(), 2),
            ("us-east-1b".into(), 2),
            ("us-east-1c".into(), 2)
        ]
        .into()
    );
}

#[test]
fn zone_spread_counts_running_pods() {
    let it = catalog()
        .into_iter()
        .find(|t| t.name == "m5.2xlarge")
        .unwrap();
    let mut inp = input(
        vec![pool("default")],
        spread_pods(
            4,
            labels::TOPOLOGY_ZONE,
            1,
            WhenUnsatisfiable::DoNotSchedule,
        ),
    );
    let mut full = node("n1", "default", &it, "us-east-1a");
    full.allocatable = Resources::new()
        .with(resource::CPU, 1000)
        .with(resource::MEMORY, gib(2))
        .with(resource::PODS, 2000);
    inp.nodes = vec![existing(
        full,
        vec![app("old-0", "web"), app("old-1", "web")],
    )];
    let plan = solve(&inp);
    assert!(plan.unschedulable.is_empty());
    let zones = per_zone(&plan);
    assert_eq!(zones.get("us-east-1a"), None, "{zones:?}");
    assert_eq!(zones["us-east-1b"], 2);
    assert_eq!(zones["us-east-1c"], 2);
}

#[test]
fn zone_spread_with_skew_two() {
    let plan = solve(&input(
        vec![pool("default")],
        spread_pods(
            7,
            labels::TOPOLOGY_ZONE,
            2,
            WhenUnsatisfiable::DoNotSchedule,
        ),
    ));
    let zones = per_zone(&plan);
    let (max, min) = (zones.values().max().unwrap(), zones.values().min().unwrap());
    assert!(max - min <= 2, "{zones:?}");
}

#[test]
fn zone_spread_limited_by_pod_zones() {
    let mut pods = spread_pods(
        4,
        labels::TOPOLOGY_ZONE,
        1,
        WhenUnsatisfiable::DoNotSchedule,
    );
    for p in &mut pods {
        *p = with_affinity(
            p.clone(),
            vec![vec![Requirement::new(
                labels::TOPOLOGY_ZONE,
                Operator::In,
                &["us-east-1a", "us-east-1b"],
            )]],
        );
    }
    let plan = solve(&input(vec![pool("default")], pods));
    assert_eq!(
        per_zone(&plan),
        [("us-east-1a".into(), 2), ("us-east-1b".into(), 2)].into()
    );
}

#[test]
fn hostname_spread_puts_one_per_node() {
    let plan = solve(&input(
        vec![pool("default")],
        spread_pods(5, labels::HOSTNAME, 1, WhenUnsatisfiable::DoNotSchedule),
    ));
    assert_eq!(plan.new_node_claims.len(), 5);
    assert!(plan.new_node_claims.iter().all(|c| c.pods.len() == 1));
}

#[test]
fn capacity_type_spread() {
    let plan = solve(&input(
        vec![pool("default")],
        spread_pods(
            4,
            labels::CAPACITY_TYPE,
            1,
            WhenUnsatisfiable::DoNotSchedule,
        ),
    ));
    let mut by_ct: BTreeMap<String, usize> = BTreeMap::new();
    for c in &plan.new_node_claims {
        *by_ct
            .entry(c.labels[labels::CAPACITY_TYPE].clone())
            .or_default() += c.pods.len();
    }
    assert_eq!(by_ct, [("on-demand".into(), 2), ("spot".into(), 2)].into());
}

#[test]
fn min_domains_forces_spreading_when_too_few_domains() {
    let mut pods = spread_pods(
        3,
        labels::TOPOLOGY_ZONE,
        1,
        WhenUnsatisfiable::DoNotSchedule,
    );
    for p in &mut pods {
        p.topology_spread[0].min_domains = Some(5);
    }
    let plan = solve(&input(vec![pool("default")], pods));
    // Fewer than 5 zones: the global minimum is 0, so each zone holds at most one.
    assert!(per_zone(&plan).values().all(|n| *n == 1));
}

#[test]
fn spread_selector_need_not_match_the_pod() {
    let mut p = app("x", "other");
    p.topology_spread = vec![spread(
        labels::TOPOLOGY_ZONE,
        1,
        WhenUnsatisfiable::DoNotSchedule,
        "web",
    )];
    let plan = solve(&input(vec![pool("default")], vec![p]));
    assert!(plan.unschedulable.is_empty());
}

#[test]
fn hostname_anti_affinity_needs_a_node_each() {
    let pods: Vec<Pod> = (0..4)
        .map(|i| {
            let mut p = app(&format!("nginx-{i}"), "nginx");
            p.pod_anti_affinity = Some(PodAffinity {
                required: vec![term(labels::HOSTNAME, "nginx")],
                preferred: vec![],
            });
            p
        })
        .collect();
    let plan = solve(&input(vec![pool("default")], pods));
    assert_eq!(plan.new_node_claims.len(), 4);
}

#[test]
fn anti_affinity_avoids_running_pods() {
    let it = catalog()
        .into_iter()
        .find(|t| t.name == "m5.2xlarge")
        .unwrap();
    let mut p = app("new", "db");
    p.pod_anti_affinity = Some(PodAffinity {
        required: vec![term(labels::HOSTNAME, "db")],
        preferred: vec![],
    });
    let mut inp = input(vec![pool("default")], vec![p]);
    inp.nodes = vec![existing(
        node("n1", "default", &it, "us-east-1a"),
        vec![app("old", "db")],
    )];
    let plan = solve(&inp);
    assert_eq!(
        plan.new_node_claims.len(),
        1,
        "placed beside the pod it avoids"
    );
}

#[test]
fn running_pods_anti_affinity_is_symmetric() {
    let it = catalog()
        .into_iter()
        .find(|t| t.name == "m5.2xlarge")
        .unwrap();
    let mut loner = app("loner", "loner");
    loner.pod_anti_affinity = Some(PodAffinity {
        required: vec![term(labels::HOSTNAME, "web")],
        preferred: vec![],
    });
    let mut inp = input(vec![pool("default")], vec![app("web-0", "web")]);
    inp.nodes = vec![existing(
        node("n1", "default", &it, "us-east-1a"),
        vec![loner],
    )];
    let plan = solve(&inp);
    assert_eq!(
        plan.new_node_claims.len(),
        1,
        "web-0 went where loner's anti-affinity excludes it"
    );
}

#[test]
fn anti_affinity_only_in_its_namespaces() {
    let it = catalog()
        .into_iter()
        .find(|t| t.name == "m5.2xlarge")
        .unwrap();
    let mut other_ns = app("old", "db");
    other_ns.key.namespace = "elsewhere".into();
    let mut p = app("new", "db");
    p.pod_anti_affinity = Some(PodAffinity {
        required: vec![term(labels::HOSTNAME, "db")],
        preferred: vec![],
    });
    let mut inp = input(vec![pool("default")], vec![p]);
    inp.nodes = vec![existing(
        node("n1", "default", &it, "us-east-1a"),
        vec![other_ns],
    )];
    let plan = solve(&inp);
    assert!(
        plan.new_node_claims.is_empty(),
        "the other namespace's pod should not count"
    );
}

#[test]
fn namespace_selector_widens_the_term() {
    let it = catalog()
        .into_iter()
        .find(|t| t.name == "m5.2xlarge")
        .unwrap();
    let mut other_ns = app("old", "db");
    other_ns.key.namespace = "team-b".into();
    let mut t = term(labels::HOSTNAME, "db");
    t.namespace_selector = Some(LabelSelector {
        match_labels: [("team".to_owned(), "b".to_owned())].into(),
        match_expressions: vec![],
    });
    let mut p = app("new", "db");
    p.pod_anti_affinity = Some(PodAffinity {
        required: vec![t],
        preferred: vec![],
    });
    let mut inp = input(vec![pool("default")], vec![p]);
    inp.namespaces = vec![Namespace {
        name: "team-b".into(),
        labels: [("team".to_owned(), "b".to_owned())].into(),
    }];
    inp.nodes = vec![existing(
        node("n1", "default", &it, "us-east-1a"),
        vec![other_ns],
    )];
    let plan = solve(&inp);
    assert_eq!(plan.new_node_claims.len(), 1);
}

#[test]
fn zone_self_affinity_keeps_a_group_together() {
    let pods: Vec<Pod> = (0..12)
        .map(|i| {
            let mut p = app(&format!("cache-{i}"), "cache");
            p.containers[0].set(resource::CPU, 3000);
            p.pod_affinity = Some(PodAffinity {
                required: vec![term(labels::TOPOLOGY_ZONE, "cache")],
                preferred: vec![],
            });
            p
        })
        .collect();
    let plan = solve(&input(vec![pool("default")], pods));
    assert!(plan.unschedulable.is_empty());
    assert_eq!(per_zone(&plan).len(), 1, "{:?}", per_zone(&plan));
}

#[test]
fn affinity_follows_running_pods() {
    let it = catalog()
        .into_iter()
        .find(|t| t.name == "m5.large")
        .unwrap();
    let mut full = node("n1", "default", &it, "us-east-1c");
    full.allocatable = Resources::new()
        .with(resource::CPU, 500)
        .with(resource::MEMORY, gib(1))
        .with(resource::PODS, 1000);
    let mut p = app("client", "client");
    p.pod_affinity = Some(PodAffinity {
        required: vec![term(labels::TOPOLOGY_ZONE, "db")],
        preferred: vec![],
    });
    let mut inp = input(vec![pool("default")], vec![p]);
    inp.nodes = vec![existing(full, vec![app("db-0", "db")])];
    let plan = solve(&inp);
    assert_eq!(
        claim_of(&plan, "client").labels[labels::TOPOLOGY_ZONE],
        "us-east-1c"
    );
}

#[test]
fn affinity_to_nothing_is_refused_with_the_key() {
    let mut p = app("client", "client");
    p.pod_affinity = Some(PodAffinity {
        required: vec![term(labels::TOPOLOGY_ZONE, "db")],
        preferred: vec![],
    });
    let plan = solve(&input(vec![pool("default")], vec![p]));
    let reason = reason_of(&plan, "client");
    assert!(
        reason.contains("pod (anti-)affinity on topology.kubernetes.io/zone cannot be satisfied"),
        "{reason}"
    );
}

#[test]
fn schedule_anyway_spread_is_honoured_when_possible() {
    let plan = solve(&input(
        vec![pool("default")],
        spread_pods(
            3,
            labels::TOPOLOGY_ZONE,
            1,
            WhenUnsatisfiable::ScheduleAnyway,
        ),
    ));
    assert_eq!(per_zone(&plan).len(), 3);
}

#[test]
fn schedule_anyway_spread_is_relaxed_when_not() {
    let mut one_zone = pool("one-zone");
    one_zone.requirements.push(Requirement::new(
        labels::TOPOLOGY_ZONE,
        Operator::In,
        &["us-east-1a"],
    ));
    let plan = solve(&input(
        vec![one_zone],
        spread_pods(
            3,
            labels::TOPOLOGY_ZONE,
            1,
            WhenUnsatisfiable::ScheduleAnyway,
        ),
    ));
    assert!(plan.unschedulable.is_empty());
    let strict = solve(&input(
        vec![{
            let mut p = pool("one-zone");
            p.requirements.push(Requirement::new(
                labels::TOPOLOGY_ZONE,
                Operator::In,
                &["us-east-1a"],
            ));
            p
        }],
        spread_pods(
            3,
            labels::TOPOLOGY_ZONE,
            1,
            WhenUnsatisfiable::DoNotSchedule,
        ),
    ));
    // With one zone, a zone spread is trivially balanced.
    assert!(strict.unschedulable.is_empty());
}

#[test]
fn preferred_node_affinity_is_honoured_then_relaxed() {
    let mut p = pod("a", 1000, gib(1));
    p.node_affinity = Some(NodeAffinity {
        required: vec![],
        preferred: vec![PreferredSchedulingTerm {
            weight: 10,
            term: NodeSelectorTerm {
                match_expressions: vec![Requirement::new(
                    labels::INSTANCE_FAMILY,
                    Operator::In,
                    &["r5"],
                )],
                match_fields: vec![],
            },
        }],
    });
    let plan = solve(&input(vec![pool("default")], vec![p.clone()]));
    assert!(
        option_names(claim_of(&plan, "a"))
            .iter()
            .all(|n| n.starts_with("r5."))
    );

    let mut c_only = pool("c-only");
    c_only.requirements.push(Requirement::new(
        labels::INSTANCE_FAMILY,
        Operator::In,
        &["c5"],
    ));
    let plan = solve(&input(vec![c_only], vec![p]));
    assert!(
        option_names(claim_of(&plan, "a"))
            .iter()
            .all(|n| n.starts_with("c5."))
    );
}

#[test]
fn preferred_anti_affinity_is_honoured_then_relaxed() {
    let pods: Vec<Pod> = (0..3)
        .map(|i| {
            let mut p = app(&format!("w-{i}"), "w");
            p.pod_anti_affinity = Some(PodAffinity {
                required: vec![],
                preferred: vec![WeightedPodAffinityTerm {
                    weight: 100,
                    term: term(labels::HOSTNAME, "w"),
                }],
            });
            p
        })
        .collect();
    let plan = solve(&input(vec![pool("default")], pods.clone()));
    assert_eq!(plan.new_node_claims.len(), 3);
    let mut np = pool("one");
    np.limits = Resources::new().with(resource::NODES, 1000);
    let plan = solve(&input(vec![np], pods));
    assert!(plan.unschedulable.is_empty(), "{:?}", plan.unschedulable);
    assert_eq!(plan.new_node_claims.len(), 1);
}

#[test]
fn prefer_no_schedule_pools_are_avoided_when_possible() {
    let mut soft = pool("soft");
    soft.weight = 100;
    soft.taints = vec![taint("spot", "", TaintEffect::PreferNoSchedule)];
    let plan = solve(&input(
        vec![soft.clone(), pool("plain")],
        vec![pod("a", 1000, gib(1))],
    ));
    assert_eq!(claim_of(&plan, "a").node_pool, "plain");
    let plan = solve(&input(vec![soft], vec![pod("a", 1000, gib(1))]));
    assert_eq!(claim_of(&plan, "a").node_pool, "soft");
}

#[test]
fn match_label_keys_split_spread_by_revision() {
    // Two revisions of one app spread independently: matchLabelKeys adds the pod's own
    // pod-template-hash to the selector.
    let mk = |name: &str, rev: &str| {
        let mut p = app(name, "web");
        p.labels.insert("pod-template-hash".into(), rev.into());
        let mut c = spread(labels::HOSTNAME, 1, WhenUnsatisfiable::DoNotSchedule, "web");
        c.match_label_keys = vec!["pod-template-hash".into()];
        p.topology_spread = vec![c];
        p
    };
    let plan = solve(&input(
        vec![pool("default")],
        vec![mk("a", "v1"), mk("b", "v2")],
    ));
    // Without matchLabelKeys, two matching pods would need two nodes; here one node holds both.
    assert_eq!(plan.new_node_claims.len(), 1);
}

#[test]
fn mismatch_label_keys_keep_tenants_apart() {
    let mk = |name: &str, tenant: &str| {
        let mut p = app(name, "db");
        p.labels.insert("tenant".into(), tenant.into());
        let mut t = PodAffinityTerm {
            label_selector: Some(LabelSelector::default()),
            topology_key: labels::HOSTNAME.into(),
            ..Default::default()
        };
        t.mismatch_label_keys = vec!["tenant".into()];
        p.pod_anti_affinity = Some(PodAffinity {
            required: vec![t],
            preferred: vec![],
        });
        p
    };
    let plan = solve(&input(
        vec![pool("default")],
        vec![mk("a", "x"), mk("b", "y"), mk("c", "x")],
    ));
    for c in &plan.new_node_claims {
        let tenants: std::collections::BTreeSet<&str> = c
            .pods
            .iter()
            .map(|k| if k.name == "b" { "y" } else { "x" })
            .collect();
        assert_eq!(
            tenants.len(),
            1,
            "tenants x and y share a node: {:?}",
            c.pods
        );
    }
}

#[test]
fn preferred_pod_affinity_is_honoured() {
    let it = catalog()
        .into_iter()
        .find(|t| t.name == "m5.large")
        .unwrap();
    let mut full = node("n1", "default", &it, "us-east-1b");
    full.allocatable = Resources::new()
        .with(resource::CPU, 500)
        .with(resource::MEMORY, gib(1))
        .with(resource::PODS, 1000);
    let mut p = app("client", "client");
    p.pod_affinity = Some(PodAffinity {
        required: vec![],
        preferred: vec![WeightedPodAffinityTerm {
            weight: 50,
            term: term(labels::TOPOLOGY_ZONE, "db"),
        }],
    });
    let mut inp = input(vec![pool("default")], vec![p]);
    inp.nodes = vec![existing(full, vec![app("db-0", "db")])];
    let plan = solve(&inp);
    assert_eq!(
        claim_of(&plan, "client").labels[labels::TOPOLOGY_ZONE],
        "us-east-1b"
    );
}

#[test]
fn spread_and_anti_affinity_together() {
    let pods: Vec<Pod> = (0..6)
        .map(|i| {
            let mut p = app(&format!("ha-{i}"), "ha");
            p.topology_spread = vec![spread(
                labels::TOPOLOGY_ZONE,
                1,
                WhenUnsatisfiable::DoNotSchedule,
                "ha",
            )];
            p.pod_anti_affinity = Some(PodAffinity {
                required: vec![term(labels::HOSTNAME, "ha")],
                preferred: vec![],
            });
            p
        })
        .collect();
    let plan = solve(&input(vec![pool("default")], pods));
    assert_eq!(plan.new_node_claims.len(), 6);
    assert!(per_zone(&plan).values().all(|n| *n == 2));
}

#[test]
fn pods_counted_by_a_spread_respect_it_on_existing_nodes() {
    let it = catalog()
        .into_iter()
        .find(|t| t.name == "m5.8xlarge")
        .unwrap();
    let mut owner = app("owner", "web");
    owner.topology_spread = vec![spread(
        labels::HOSTNAME,
        1,
        WhenUnsatisfiable::DoNotSchedule,
        "web",
    )];
    let mut pods = vec![owner];
    pods.extend((0..10).map(|i| app(&format!("w{i}"), "web")));
    let mut inp = input(vec![pool("default")], pods);
    inp.nodes = vec![existing(node("n1", "default", &it, "us-east-1a"), vec![])];
    let plan = solve(&inp);
    let on_n1 = plan
        .placements
        .iter()
        .filter(|p| p.target == berth_scheduler_core::sync::NominationTarget::Node("n1".into()))
        .count();
    assert!(on_n1 <= 1, "{on_n1} web pods on n1");
}

/// Two full nodes of another NodePool in us-east-1a, each running a `web` pod; with
/// `policy`, how many of four zone-spread `web` pods that select NodePool `default` land in
/// us-east-1a.
fn spread_beside_other_pool(affinity: NodeInclusionPolicy, taints: NodeInclusionPolicy) -> usize {
    let it = catalog()
        .into_iter()
        .find(|t| t.name == "m5.2xlarge")
        .unwrap();
    let mut pods = spread_pods(
        4,
        labels::TOPOLOGY_ZONE,
        1,
        WhenUnsatisfiable::DoNotSchedule,
    );
    for p in &mut pods {
        p.node_selector
            .insert(labels::NODE_POOL.into(), "default".into());
        p.topology_spread[0].node_affinity_policy = affinity;
        p.topology_spread[0].node_taints_policy = taints;
    }
    let mut inp = input(vec![pool("default")], pods);
    inp.nodes = (0..2)
        .map(|i| {
            let mut n = node(&format!("other-{i}"), "other", &it, "us-east-1a");
            n.allocatable = Resources::new()
                .with(resource::CPU, 500)
                .with(resource::MEMORY, gib(1))
                .with(resource::PODS, 1000);
            n.taints = vec![taint("dedicated", "other", TaintEffect::NoSchedule)];
            existing(n, vec![app(&format!("old-{i}"), "web")])
        })
        .collect();
    let plan = solve(&inp);
    assert!(plan.unschedulable.is_empty(), "{:?}", plan.unschedulable);
    per_zone(&plan).get("us-east-1a").copied().unwrap_or(0)
}

#[test]
fn spread_counts_only_nodes_the_pod_could_use_when_node_affinity_policy_is_honor() {
    use NodeInclusionPolicy::{Honor, Ignore};
    // Honor (Kubernetes' default): the other pool's pods do not count, so 1a is as good as
    // any zone.
    assert!(spread_beside_other_pool(Honor, Ignore) >= 1);
    // Ignore: 1a already holds two, so the four go to 1b and 1c.
    assert_eq!(spread_beside_other_pool(Ignore, Ignore), 0);
}

#[test]
fn spread_skips_untolerated_nodes_when_node_taints_policy_is_honor() {
    use NodeInclusionPolicy::{Honor, Ignore};
    // The other pool's nodes are tainted and the pods do not tolerate the taint.
    assert!(spread_beside_other_pool(Ignore, Honor) >= 1);
    assert_eq!(spread_beside_other_pool(Ignore, Ignore), 0);
}

#[test]
fn pods_selected_by_zone_anti_affinity_get_a_pinned_zone_apart_from_it() {
    let mut loner = app("loner", "db");
    loner.pod_anti_affinity = Some(PodAffinity {
        required: vec![term(labels::TOPOLOGY_ZONE, "web")],
        preferred: vec![],
    });
    let mut pods = vec![loner];
    pods.extend((0..3).map(|i| app(&format!("web-{i}"), "web")));
    let plan = solve(&input(vec![pool("default")], pods));
    assert!(plan.unschedulable.is_empty(), "{:?}", plan.unschedulable);
    let zone_of = |name: &str| {
        claim_of(&plan, name)
            .labels
            .get(labels::TOPOLOGY_ZONE)
            .cloned()
    };
    let loner_zone = zone_of("loner").expect("the loner's zone is pinned");
    for i in 0..3 {
        let web = zone_of(&format!("web-{i}")).expect("a selected pod's zone is pinned");
        assert_ne!(web, loner_zone);
    }
}

/// An in-flight claim of pool default pinned to `zone`, with the pods nominated to it.
fn claim_in(name: &str, zone: &str, pods: Vec<Pod>) -> solver::InFlightClaim {
    let mut claim = NodeClaim::new(name, "default", node_class());
    claim.requirements = vec![
        Requirement::new(labels::TOPOLOGY_ZONE, Operator::In, &[zone]),
        Requirement::new(labels::INSTANCE_TYPE, Operator::In, &["m5.xlarge"]),
    ];
    claim
        .labels
        .insert(labels::TOPOLOGY_ZONE.into(), zone.into());
    claim.requests = Resources::new()
        .with(resource::CPU, 500 * pods.len() as i64)
        .with(resource::MEMORY, gib(pods.len() as i64));
    in_flight(claim, pods)
}

#[test]
fn zone_spread_counts_pods_nominated_to_in_flight_claims() {
    let web = spread_pods(
        3,
        labels::TOPOLOGY_ZONE,
        1,
        WhenUnsatisfiable::DoNotSchedule,
    );
    // web-0 and web-1 are nominated to claims in a and b; web-2 waits. Whether the caller
    // also lists the nominated pods among the pods to place (they stay placed) or not, they
    // count once.
    for listed in [false, true] {
        let mut pods = vec![web[2].clone()];
        if listed {
            pods.extend(web[..2].iter().cloned());
        }
        let mut inp = input(vec![pool("default")], pods);
        inp.node_claims = vec![
            claim_in("default-a", ZONES[0], vec![web[0].clone()]),
            claim_in("default-b", ZONES[1], vec![web[1].clone()]),
        ];
        let plan = solve(&inp);
        assert!(plan.unschedulable.is_empty(), "{:?}", plan.unschedulable);
        assert_eq!(
            per_zone(&plan),
            [(ZONES[2].into(), 1)].into(),
            "listed: {listed}"
        );
        assert_eq!(plan.placements.len(), if listed { 2 } else { 0 });
    }
}

#[test]
fn anti_affinity_of_pods_nominated_to_in_flight_claims_holds_both_ways() {
    let mut loner = app("loner", "db");
    loner.pod_anti_affinity = Some(PodAffinity {
        required: vec![term(labels::TOPOLOGY_ZONE, "web")],
        preferred: vec![],
    });
    let mut solo = app("solo", "solo");
    solo.pod_anti_affinity = Some(PodAffinity {
        required: vec![term(labels::TOPOLOGY_ZONE, "solo")],
        preferred: vec![],
    });
    let mut other = solo.clone();
    other.key = ObjectKey::new("default", "solo-2");
    let mut inp = input(vec![pool("default")], vec![app("web-0", "web"), other]);
    inp.node_claims = vec![
        claim_in("default-a", ZONES[0], vec![loner]),
        claim_in("default-b", ZONES[1], vec![solo]),
    ];
    let plan = solve(&inp);
    assert!(plan.unschedulable.is_empty(), "{:?}", plan.unschedulable);
    // Each may join the other's claim, never the one its anti-affinity rules out.
    let zone_of = |name: &str| match plan.placements.iter().find(|p| p.pod.name == name) {
        Some(p) => match &p.target {
            NominationTarget::NodeClaim(c) if c == "default-a" => Some(ZONES[0].to_owned()),
            NominationTarget::NodeClaim(c) if c == "default-b" => Some(ZONES[1].to_owned()),
            t => panic!("{name} placed on {t:?}"),
        },
        None => claim_of(&plan, name)
            .labels
            .get(labels::TOPOLOGY_ZONE)
            .cloned(),
    };
    let web = zone_of("web-0").expect("web-0's zone is pinned");
    assert_ne!(
        web, ZONES[0],
        "web-0 went where loner's anti-affinity excludes it"
    );
    let solo = zone_of("solo-2").expect("solo-2's zone is pinned");
    assert_ne!(solo, ZONES[1], "solo-2 shares a zone with solo");
}

#[test]
fn affinity_follows_pods_nominated_to_in_flight_claims() {
    let mut p = app("client", "client");
    p.pod_affinity = Some(PodAffinity {
        required: vec![term(labels::TOPOLOGY_ZONE, "db")],
        preferred: vec![],
    });
    let mut inp = input(vec![pool("default")], vec![p]);
    inp.node_claims = vec![claim_in("default-b", ZONES[1], vec![app("db", "db")])];
    let plan = solve(&inp);
    assert!(plan.unschedulable.is_empty(), "{:?}", plan.unschedulable);
    // The claim has room: the client joins it.
    assert_eq!(
        plan.placements[0].target,
        NominationTarget::NodeClaim("default-b".into())
    );
}
