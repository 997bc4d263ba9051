//! Random workloads: whatever the solver emits, the independent checker finds no violation,
//! and every pod it refuses carries a reason.

mod common;

use berth_scheduler_core::checker::check;
use berth_scheduler_core::cluster::node_claim_for;
use berth_scheduler_core::labels;
use berth_scheduler_core::model::*;
use berth_scheduler_core::solver;
use berth_scheduler_core::sync::NominationTarget;
use common::*;
use proptest::prelude::*;

fn arb_pool(i: usize) -> impl Strategy<Value = NodePool> {
    (
        any::<bool>(),
        0..3usize,
        0..4usize,
        prop::option::of(2..40i64),
        prop::option::of(1..6i64),
        0..100i32,
    )
        .prop_map(
            move |(tainted, family, ct, cpu_limit, node_limit, weight)| {
                let mut np = pool(&format!("pool-{i}"));
                np.weight = weight;
                if tainted {
                    np.taints = vec![taint(
                        "dedicated",
                        &format!("team-{i}"),
                        TaintEffect::NoSchedule,
                    )];
                    np.labels.insert("team".into(), format!("team-{i}"));
                }
                match family {
                    1 => np.requirements.push(Requirement::new(
                        labels::INSTANCE_FAMILY,
                        Operator::In,
                        &["c5", "m5"],
                    )),
                    2 => np.requirements.push(Requirement::new(
                        labels::ARCH,
                        Operator::In,
                        &["arm64"],
                    )),
                    _ => {}
                }
                match ct {
                    1 => np.requirements.push(Requirement::new(
                        labels::CAPACITY_TYPE,
                        Operator::In,
                        &["spot"],
                    )),
                    2 => np.requirements.push(Requirement::new(
                        labels::CAPACITY_TYPE,
                        Operator::In,
                        &["on-demand"],
                    )),
                    _ => {}
                }
                if let Some(c) = cpu_limit {
                    np.limits.set(resource::CPU, c * 1000);
                }
                if let Some(n) = node_limit {
                    np.limits.set(resource::NODES, n * 1000);
                }
                np
            },
        )
}

fn arb_pod(i: usize) -> impl Strategy<Value = Pod> {
    (
        prop::sample::select(vec![100i64, 250, 500, 1000, 1500, 3000, 7000, 20_000]),
        prop::sample::select(vec![128i64, 512, 1024, 4096, 16_384, 65_536]),
        0..3usize,
        0..5usize,
        any::<bool>(),
        0..3usize,
        0..8usize,
        0..3usize,
    )
        .prop_map(
            move |(cpu_milli, mem_mib, team, affinity, port, gpu, topology, app)| {
                let mut p = pod(&format!("p{i:03}"), cpu_milli, mem_mib * MI * 1000);
                if team > 0 {
                    let value = format!("team-{}", team - 1);
                    p.tolerations = vec![tolerate("dedicated", &value, TaintEffect::NoSchedule)];
                    if team == 2 {
                        p.node_selector.insert("team".into(), value);
                    }
                }
                let term = match affinity {
                    1 => Some(Requirement::new(
                        labels::TOPOLOGY_ZONE,
                        Operator::In,
                        &["us-east-1b"],
                    )),
                    2 => Some(Requirement::new(
                        labels::INSTANCE_CPU,
                        Operator::Gte,
                        &["8"],
                    )),
                    3 => Some(Requirement::new(labels::ARCH, Operator::NotIn, &["arm64"])),
                    _ => None,
                };
                if let Some(r) = term {
                    p = with_affinity(p, vec![vec![r]]);
                }
                if port {
                    p.host_ports = vec![HostPort {
                        ip: String::new(),
                        port: 8080,
                        protocol: Protocol::Tcp,
                    }];
                }
                if gpu == 2 {
                    p.containers[0].set(resource::NVIDIA_GPU, 1000);
                }
                let app = format!("app-{app}");
                p.labels.insert("app".into(), app.clone());
                let selector = LabelSelector {
                    match_labels: [("app".to_owned(), app)].into(),
                    match_expressions: vec![],
                };
                let term = |key: &str| PodAffinityTerm {
                    label_selector: Some(selector.clone()),
                    topology_key: key.into(),
                    ..Default::default()
                };
                let tolerations = p.tolerations.clone();
                let spread = |key: &str, when| TopologySpreadConstraint {
                    max_skew: 1,
                    topology_key: key.into(),
                    when_unsatisfiable: when,
                    label_selector: Some(selector.clone()),
                    min_domains: None,
                    match_label_keys: vec![],
                    // Vary the node inclusion policies with other draws.
                    node_affinity_policy: if gpu == 1 {
                        NodeInclusionPolicy::Ignore
                    } else {
                        NodeInclusionPolicy::Honor
                    },
                    node_taints_policy: if tolerations.is_empty() {
                        NodeInclusionPolicy::Ignore
                    } else {
                        NodeInclusionPolicy::Honor
                    },
                };
                match topology {
                    1 => {
                        p.topology_spread = vec![spread(
                            labels::TOPOLOGY_ZONE,
                            WhenUnsatisfiable::DoNotSchedule,
                        )]
                    }
                    2 => {
                        p.topology_spread =
                            vec![spread(labels::HOSTNAME, WhenUnsatisfiable::DoNotSchedule)]
                    }
                    3 => {
                        p.pod_anti_affinity = Some(PodAffinity {
                            required: vec![term(labels::HOSTNAME)],
                            preferred: vec![],
                        })
                    }
                    4 => {
                        p.pod_affinity = Some(PodAffinity {
                            required: vec![term(labels::TOPOLOGY_ZONE)],
                            preferred: vec![],
                        })
                    }
                    5 => {
                        p.topology_spread = vec![spread(
                            labels::TOPOLOGY_ZONE,
                            WhenUnsatisfiable::ScheduleAnyway,
                        )]
                    }
                    6 => {
                        p.pod_anti_affinity = Some(PodAffinity {
                            required: vec![term(labels::TOPOLOGY_ZONE)],
                            preferred: vec![],
                        })
                    }
                    _ => {}
                }
                p
            },
        )
}

fn arb_input() -> impl Strategy<Value = solver::SchedulingInput> {
    let pools = (1..4usize).prop_flat_map(|n| (0..n).map(arb_pool).collect::<Vec<_>>());
    let pods = (1..80usize).prop_flat_map(|n| (0..n).map(arb_pod).collect::<Vec<_>>());
    (pools, pods, 0..3usize, 0..3usize, any::<bool>()).prop_map(
        |(pools, pods, nodes, ds, bound)| {
            let mut inp = input(pools, pods);
            let types = catalog();
            for n in 0..nodes {
                let it = &types[(n * 7) % types.len()];
                let name = format!("node-{n}");
                let mut bound_pods = Vec::new();
                if bound {
                    bound_pods.push(pod(&format!("running-{n}"), 500, 512 * MI * 1000));
                }
                inp.nodes.push(existing(
                    node(
                        &name,
                        &inp.node_pools[0].node_pool.name.clone(),
                        it,
                        ZONES[n % 3],
                    ),
                    bound_pods,
                ));
            }
            for d in 0..ds {
                inp.daemon_sets.push(daemon_set(
                    &format!("ds-{d}"),
                    100 * (d as i64 + 1),
                    64 * MI * 1000,
                ));
            }
            inp
        },
    )
}

proptest! {
    // PROPTEST_CASES=5000 for a longer hunt.
    #![proptest_config(ProptestConfig { cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(200), ..ProptestConfig::default() })]

    #[test]
    fn every_plan_passes_the_checker(inp in arb_input()) {
        let plan = solver::solve(&inp);
        let violations = check(&inp, &plan);
        if !violations.is_empty() && std::env::var_os("BERTH_DEBUG").is_some() {
            for pl in &plan.placements {
                let p = inp.pods.iter().find(|p| p.key == pl.pod).unwrap();
                eprintln!("{} -> {:?} labels {:?} spread {} ", pl.pod, pl.target, p.labels, p.topology_spread.len());
            }
            for n in &inp.nodes { eprintln!("node {} arch {:?} bound {}", n.node.name, n.node.labels.get("kubernetes.io/arch"), n.pods.len()); }
        }
        prop_assert!(violations.is_empty(), "{violations:#?}");
        for u in &plan.unschedulable {
            prop_assert!(!u.reason.is_empty());
        }
        prop_assert_eq!(plan.stats.pods, plan.stats.placed_on_nodes + plan.stats.placed_on_in_flight + plan.stats.placed_on_new + plan.stats.unschedulable);
    }

    /// A second batch arrives while the first one's claims are in flight: the pods nominated
    /// to them count in topology (the checker counts them too), and none is placed again.
    #[test]
    fn a_batch_beside_claims_in_flight_passes_the_checker(inp in arb_input(), split in 0..100usize) {
        let mut first = inp.clone();
        let later = first.pods.split_off(split % (first.pods.len() + 1));
        let plan = solver::solve(&first);
        prop_assert!(check(&first, &plan).is_empty());
        let mut second = first.clone();
        second.pods = later;
        let pods: std::collections::BTreeMap<ObjectKey, Pod> =
            first.pods.iter().map(|p| (p.key.clone(), p.clone())).collect();
        for pl in &plan.placements {
            if let NominationTarget::Node(n) = &pl.target {
                let node = second.nodes.iter_mut().find(|x| &x.node.name == n).unwrap();
                let mut p = pods[&pl.pod].clone();
                p.node_name = Some(n.clone());
                p.phase = PodPhase::Running;
                node.pods.push(p);
            }
        }
        for (i, new) in plan.new_node_claims.iter().enumerate() {
            let np = &first.node_pools.iter().find(|p| p.node_pool.name == new.node_pool).unwrap().node_pool;
            let claim = node_claim_for(new, np, &format!("{}-{i}", np.name), first.now);
            second.node_claims.push(in_flight(claim, new.pods.iter().map(|k| pods[k].clone()).collect()));
        }
        // The pods nothing could host are still pending.
        second.pods.extend(plan.unschedulable.iter().map(|u| pods[&u.pod].clone()));
        let plan = solver::solve(&second);
        let violations = check(&second, &plan);
        prop_assert!(violations.is_empty(), "{violations:#?}");
        prop_assert_eq!(plan.stats.pods, second.pods.len());
    }
}
