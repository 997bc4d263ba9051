//! Scheduling scenarios, each asserting one placement property; every plan also passes the
//! independent checker (see `common::solve`).

mod common;

use berth_scheduler_core::labels;
use berth_scheduler_core::model::*;
use berth_scheduler_core::solver::MAX_INSTANCE_TYPES;
use berth_scheduler_core::sync::NominationTarget;
use common::*;

// ---- resources ----------------------------------------------------------------------------------

#[test]
fn one_pod_gets_the_cheapest_type_that_fits() {
    let plan = solve(&input(vec![pool("default")], vec![pod("a", 1000, gib(2))]));
    assert_eq!(plan.new_node_claims.len(), 1);
    let c = &plan.new_node_claims[0];
    // Spot t3/c5 are cheapest; the cheapest option fitting 1 cpu/2Gi is listed first.
    assert_eq!(c.instance_types[0].price, c.price);
    assert!(
        c.instance_types
            .windows(2)
            .all(|w| w[0].price <= w[1].price)
    );
    assert_eq!(c.instance_types[0].capacity_type, CapacityType::Spot);
}

#[test]
fn small_pods_pack_onto_few_nodes() {
    let plan = solve(&input(
        vec![pool("default")],
        pods("web", 100, 250, gib(1) / 2),
    ));
    assert!(plan.unschedulable.is_empty());
    assert_eq!(
        plan.new_node_claims
            .iter()
            .map(|c| c.pods.len())
            .sum::<usize>(),
        100
    );
    // Nodes come out full: on every node but the last, the binding resource (CPU or memory)
    // is at least 85 % requested.
    let types = catalog();
    for c in &plan.new_node_claims[..plan.new_node_claims.len() - 1] {
        let alloc = types
            .iter()
            .find(|t| t.name == c.instance_types[0].name)
            .unwrap()
            .allocatable();
        let share = |r: &str| c.requests.get(r) as f64 / alloc.get(r) as f64;
        assert!(
            share(resource::CPU).max(share(resource::MEMORY)) >= 0.85,
            "{c:?}"
        );
    }
}

#[test]
fn pod_larger_than_every_type_is_refused_with_numbers() {
    let plan = solve(&input(
        vec![pool("default")],
        vec![pod("huge", 96_000, gib(8))],
    ));
    let reason = reason_of(&plan, "huge");
    assert!(
        reason.starts_with("needs 96 cpu; the largest type NodePool default allows has 47."),
        "{reason}"
    );
}

#[test]
fn memory_shortfall_names_memory() {
    let plan = solve(&input(
        vec![pool("default")],
        vec![pod("mem", 1000, gib(1024))],
    ));
    let reason = reason_of(&plan, "mem");
    assert!(reason.starts_with("needs 1Ti memory;"), "{reason}");
}

#[test]
fn extended_resources_pick_gpu_types() {
    let mut p = pod("train", 2000, gib(8));
    p.containers[0].set(resource::NVIDIA_GPU, 1000);
    let plan = solve(&input(vec![pool("default")], vec![p]));
    let c = claim_of(&plan, "train");
    assert_eq!(option_names(c), ["g4dn.xlarge", "g4dn.12xlarge"]);
}

#[test]
fn gpu_pods_that_need_more_gpus_than_any_type_are_refused() {
    let mut p = pod("big-train", 2000, gib(8));
    p.containers[0].set(resource::NVIDIA_GPU, 8000);
    let plan = solve(&input(vec![pool("default")], vec![p]));
    assert!(reason_of(&plan, "big-train").starts_with("needs 8 nvidia.com/gpu"));
}

#[test]
fn init_containers_and_sidecars_count() {
    let mut p = pod("init", 500, gib(1));
    p.init_containers = vec![InitContainer {
        requests: Resources::new().with(resource::CPU, 40_000),
        sidecar: false,
    }];
    let plan = solve(&input(vec![pool("default")], vec![p]));
    let c = claim_of(&plan, "init");
    // Only types with ≥ 40 allocatable cores: the 48-vCPU GPU type.
    assert_eq!(option_names(c), ["g4dn.12xlarge"]);

    let mut p = pod("sidecar", 30_000, gib(1));
    p.init_containers = vec![InitContainer {
        requests: Resources::new().with(resource::CPU, 2000),
        sidecar: true,
    }];
    let plan = solve(&input(vec![pool("default")], vec![p]));
    // 32 cpu with the sidecar: no 32-vCPU type has 32 allocatable.
    assert_eq!(option_names(claim_of(&plan, "sidecar")), ["g4dn.12xlarge"]);
}

#[test]
fn pod_overhead_counts() {
    let mut p = pod("kata", 31_500, gib(1));
    assert!(
        option_names(claim_of(
            &solve(&input(vec![pool("default")], vec![p.clone()])),
            "kata"
        ))
        .contains(&"c5.8xlarge")
    );
    p.overhead = Resources::new().with(resource::CPU, 500);
    assert!(
        !option_names(claim_of(
            &solve(&input(vec![pool("default")], vec![p])),
            "kata"
        ))
        .contains(&"c5.8xlarge")
    );
}

#[test]
fn pods_count_is_a_resource() {
    // 58 pods per node for these types (4 ENIs × 14 + 2); 200 tiny pods need ≥ 4 nodes.
    let plan = solve(&input(
        vec![pool("default")],
        pods("tiny", 200, 10, MI * 1000),
    ));
    assert!(plan.new_node_claims.len() >= 4);
    assert!(plan.new_node_claims.iter().all(|c| c.pods.len() <= 58));
}

// ---- taints ---------------------------------------------------------------------------------------------

fn gitlab_pool() -> NodePool {
    let mut np = pool("gitlab-auto-nodepool");
    np.labels
        .insert("workload-type".into(), "gitlab-runners-auto".into());
    np.taints = vec![taint(
        "dedicated",
        "gitlab-runner-auto",
        TaintEffect::NoSchedule,
    )];
    np.requirements = vec![
        Requirement::new(labels::ARCH, Operator::In, &["amd64"]),
        Requirement::new(labels::CAPACITY_TYPE, Operator::In, &["on-demand"]),
        Requirement::new(labels::INSTANCE_FAMILY, Operator::In, &["t3"]),
        Requirement::new(labels::INSTANCE_SIZE, Operator::In, &["2xlarge"]),
        Requirement::new(labels::INSTANCE_GENERATION, Operator::Gt, &["2"]),
    ];
    np.limits = Resources::new()
        .with(resource::CPU, 32_000)
        .with(resource::MEMORY, gib(64));
    np
}

fn build_pod(name: &str) -> Pod {
    let mut p = pod(name, 1000, gib(2));
    p.node_selector
        .insert("workload-type".into(), "gitlab-runners-auto".into());
    p.tolerations = vec![tolerate(
        "dedicated",
        "gitlab-runner-auto",
        TaintEffect::NoSchedule,
    )];
    p
}

#[test]
fn untolerated_taint_blocks_and_is_named() {
    let plan = solve(&input(
        vec![gitlab_pool()],
        vec![pod("plain", 1000, gib(1))],
    ));
    assert_eq!(
        reason_of(&plan, "plain"),
        "no NodePool tolerates taint dedicated=gitlab-runner-auto:NoSchedule"
    );
}

#[test]
fn gitlab_build_pods_land_on_t3_2xlarge_on_demand() {
    let plan = solve(&input(
        vec![pool("default"), gitlab_pool()],
        (0..10).map(|i| build_pod(&format!("build-{i}"))).collect(),
    ));
    assert!(plan.unschedulable.is_empty(), "{:?}", plan.unschedulable);
    for c in &plan.new_node_claims {
        assert_eq!(c.node_pool, "gitlab-auto-nodepool");
        assert_eq!(option_names(c), ["t3.2xlarge"]);
        assert_eq!(c.instance_types[0].capacity_type, CapacityType::OnDemand);
        assert_eq!(c.labels["workload-type"], "gitlab-runners-auto");
        assert_eq!(c.taints, gitlab_pool().taints);
    }
    // 7 allocatable cpu per t3.2xlarge: 10 one-cpu pods need 2 nodes.
    assert_eq!(plan.new_node_claims.len(), 2);
}

#[test]
fn gitlab_limit_caps_the_fleet_and_says_so() {
    let plan = solve(&input(
        vec![gitlab_pool()],
        (0..40)
            .map(|i| build_pod(&format!("build-{i:02}")))
            .collect(),
    ));
    // cpu=32 would allow four 8-vCPU nodes, but memory=64Gi allows only two: a t3.2xlarge
    // has 30310Mi of capacity after the VM overhead. 2 × 7 pods.
    assert_eq!(plan.new_node_claims.len(), 2);
    assert_eq!(plan.unschedulable.len(), 40 - 14);
    assert_eq!(
        plan.unschedulable[0].reason,
        "NodePool gitlab-auto-nodepool limit memory=64Gi reached (60620Mi in use)"
    );

    let mut cpu_bound = gitlab_pool();
    cpu_bound.limits = Resources::new().with(resource::CPU, 32_000);
    let plan = solve(&input(
        vec![cpu_bound],
        (0..40)
            .map(|i| build_pod(&format!("build-{i:02}")))
            .collect(),
    ));
    assert_eq!(plan.new_node_claims.len(), 4);
    assert_eq!(
        plan.unschedulable[0].reason,
        "NodePool gitlab-auto-nodepool limit cpu=32 reached (32 in use)"
    );
}

#[test]
fn prefer_no_schedule_does_not_block() {
    let mut np = pool("soft");
    np.taints = vec![taint("spot-only", "", TaintEffect::PreferNoSchedule)];
    let plan = solve(&input(vec![np], vec![pod("a", 1000, gib(1))]));
    assert!(plan.unschedulable.is_empty());
}

#[test]
fn startup_taints_do_not_block() {
    let mut np = pool("cilium");
    np.startup_taints = vec![taint(
        "node.cilium.io/agent-not-ready",
        "true",
        TaintEffect::NoExecute,
    )];
    let plan = solve(&input(vec![np], vec![pod("a", 1000, gib(1))]));
    assert_eq!(plan.new_node_claims.len(), 1);
    assert_eq!(plan.new_node_claims[0].startup_taints.len(), 1);
}

#[test]
fn no_execute_taint_needs_toleration() {
    let mut np = pool("ne");
    np.taints = vec![taint("k", "v", TaintEffect::NoExecute)];
    let plan = solve(&input(vec![np.clone()], vec![pod("a", 1000, gib(1))]));
    assert_eq!(
        reason_of(&plan, "a"),
        "no NodePool tolerates taint k=v:NoExecute"
    );
    let mut p = pod("b", 1000, gib(1));
    p.tolerations = vec![Toleration {
        key: "k".into(),
        operator: TolerationOperator::Exists,
        value: String::new(),
        effect: None,
        toleration_seconds: None,
    }];
    assert!(solve(&input(vec![np], vec![p])).unschedulable.is_empty());
}

// ---- labels and requirements -------------------------------------------------------------------------

#[test]
fn node_selector_on_pool_label() {
    let mut labelled = pool("team-a");
    labelled.labels.insert("team".into(), "a".into());
    let mut p = pod("a", 1000, gib(1));
    p.node_selector.insert("team".into(), "a".into());
    let plan = solve(&input(vec![pool("default"), labelled], vec![p]));
    assert_eq!(claim_of(&plan, "a").node_pool, "team-a");
}

#[test]
fn node_selector_nobody_offers_is_refused() {
    let mut p = pod("a", 1000, gib(1));
    p.node_selector.insert("team".into(), "z".into());
    let plan = solve(&input(vec![pool("default")], vec![p]));
    let reason = reason_of(&plan, "a");
    assert!(
        reason.contains("cannot satisfy requirement team In [z]"),
        "{reason}"
    );
}

#[test]
fn zone_affinity_restricts_zone() {
    let p = with_affinity(
        pod("a", 1000, gib(1)),
        vec![vec![Requirement::new(
            labels::TOPOLOGY_ZONE,
            Operator::In,
            &["us-east-1b"],
        )]],
    );
    let plan = solve(&input(vec![pool("default")], vec![p]));
    let c = claim_of(&plan, "a");
    assert!(c.instance_types.iter().all(|o| o.zone == "us-east-1b"));
    assert_eq!(c.labels[labels::TOPOLOGY_ZONE], "us-east-1b");
}

#[test]
fn arch_not_in_excludes_graviton() {
    let p = with_affinity(
        pod("a", 1000, gib(1)),
        vec![vec![Requirement::new(
            labels::ARCH,
            Operator::NotIn,
            &["amd64"],
        )]],
    );
    let plan = solve(&input(vec![pool("default")], vec![p]));
    assert!(
        option_names(claim_of(&plan, "a"))
            .iter()
            .all(|n| n.starts_with("m6g."))
    );
}

#[test]
fn affinity_terms_are_ored() {
    let p = with_affinity(
        pod("a", 1000, gib(1)),
        vec![
            vec![Requirement::new(
                labels::TOPOLOGY_ZONE,
                Operator::In,
                &["eu-west-1a"],
            )],
            vec![Requirement::new(
                labels::INSTANCE_FAMILY,
                Operator::In,
                &["r5"],
            )],
        ],
    );
    let plan = solve(&input(vec![pool("default")], vec![p]));
    assert!(
        option_names(claim_of(&plan, "a"))
            .iter()
            .all(|n| n.starts_with("r5."))
    );
}

#[test]
fn affinity_terms_and_within() {
    let p = with_affinity(
        pod("a", 1000, gib(1)),
        vec![vec![
            Requirement::new(labels::INSTANCE_FAMILY, Operator::In, &["m5", "c5"]),
            Requirement::new(labels::INSTANCE_SIZE, Operator::In, &["2xlarge"]),
        ]],
    );
    let plan = solve(&input(vec![pool("default")], vec![p]));
    let mut names = option_names(claim_of(&plan, "a"));
    names.sort();
    assert_eq!(names, ["c5.2xlarge", "m5.2xlarge"]);
}

#[test]
fn numeric_operators_on_instance_cpu() {
    for (op, value, expect) in [
        (Operator::Gt, "8", (|cpu: u32| cpu > 8) as fn(u32) -> bool),
        (Operator::Gte, "8", |cpu: u32| cpu >= 8),
        (Operator::Lt, "8", |cpu: u32| cpu < 8),
        (Operator::Lte, "8", |cpu: u32| cpu <= 8),
    ] {
        let p = with_affinity(
            pod("a", 500, gib(1)),
            vec![vec![Requirement::new(labels::INSTANCE_CPU, op, &[value])]],
        );
        let inp = input(vec![pool("default")], vec![p]);
        let plan = solve(&inp);
        for name in option_names(claim_of(&plan, "a")) {
            let it = catalog().into_iter().find(|t| t.name == name).unwrap();
            let cpu = u32::try_from(it.capacity.get(resource::CPU) / 1000).unwrap();
            assert!(expect(cpu), "{op:?} {value}: {name} has {cpu} cpu");
        }
    }
}

#[test]
fn exists_and_does_not_exist() {
    let gpu = with_affinity(
        pod("gpu", 500, gib(1)),
        vec![vec![Requirement::new(
            labels::INSTANCE_GPU_COUNT,
            Operator::Exists,
            &[],
        )]],
    );
    let cpu_only = with_affinity(
        pod("cpu", 500, gib(1)),
        vec![vec![Requirement::new(
            labels::INSTANCE_GPU_COUNT,
            Operator::DoesNotExist,
            &[],
        )]],
    );
    let plan = solve(&input(vec![pool("default")], vec![gpu, cpu_only]));
    assert!(
        option_names(claim_of(&plan, "gpu"))
            .iter()
            .all(|n| n.starts_with("g4dn"))
    );
    assert!(
        option_names(claim_of(&plan, "cpu"))
            .iter()
            .all(|n| !n.starts_with("g4dn"))
    );
}

#[test]
fn node_pool_requirements_bound_the_types() {
    let mut np = pool("c-only");
    np.requirements.push(Requirement::new(
        labels::INSTANCE_CATEGORY,
        Operator::In,
        &["c"],
    ));
    let plan = solve(&input(vec![np], vec![pod("a", 1000, gib(1))]));
    assert!(
        option_names(claim_of(&plan, "a"))
            .iter()
            .all(|n| n.starts_with("c5."))
    );
}

#[test]
fn pod_and_pool_requirements_that_conflict_are_refused() {
    let mut np = pool("c-only");
    np.requirements.push(Requirement::new(
        labels::INSTANCE_CATEGORY,
        Operator::In,
        &["c"],
    ));
    let p = with_affinity(
        pod("a", 1000, gib(1)),
        vec![vec![Requirement::new(
            labels::INSTANCE_CATEGORY,
            Operator::In,
            &["r"],
        )]],
    );
    let plan = solve(&input(vec![np], vec![p]));
    let reason = reason_of(&plan, "a");
    assert!(
        reason.contains("karpenter.k8s.aws/instance-category In [r]"),
        "{reason}"
    );
}

#[test]
fn capacity_type_requirement() {
    let mut np = pool("od");
    np.requirements.push(Requirement::new(
        labels::CAPACITY_TYPE,
        Operator::In,
        &["on-demand"],
    ));
    let plan = solve(&input(vec![np], vec![pod("a", 1000, gib(1))]));
    assert!(
        claim_of(&plan, "a")
            .instance_types
            .iter()
            .all(|o| o.capacity_type == CapacityType::OnDemand)
    );
}

#[test]
fn unavailable_offerings_are_skipped() {
    let mut inp = input(vec![pool("default")], vec![pod("a", 1000, gib(1))]);
    for t in &mut inp.node_pools[0].instance_types {
        for o in &mut t.offerings {
            o.available = o.zone == "us-east-1c" && o.capacity_type == CapacityType::OnDemand;
        }
    }
    let plan = solve(&inp);
    let c = claim_of(&plan, "a");
    assert!(
        c.instance_types
            .iter()
            .all(|o| o.zone == "us-east-1c" && o.capacity_type == CapacityType::OnDemand)
    );
}

#[test]
fn nothing_available_is_reported() {
    let mut inp = input(vec![pool("default")], vec![pod("a", 1000, gib(1))]);
    for t in &mut inp.node_pools[0].instance_types {
        t.offerings.iter_mut().for_each(|o| o.available = false);
    }
    let plan = solve(&inp);
    assert_eq!(
        reason_of(&plan, "a"),
        "NodePool default allows no instance type with an available offering"
    );
}

#[test]
fn volume_topology_pins_the_zone() {
    let mut p = pod("db", 1000, gib(1));
    p.volume_requirements = vec![Requirement::new(
        labels::TOPOLOGY_ZONE,
        Operator::In,
        &["us-east-1c"],
    )];
    let plan = solve(&input(vec![pool("default")], vec![p]));
    assert!(
        claim_of(&plan, "db")
            .instance_types
            .iter()
            .all(|o| o.zone == "us-east-1c")
    );
}

#[test]
fn min_values_keeps_enough_families() {
    let mut np = pool("flexible");
    np.requirements.push(Requirement {
        min_values: Some(3),
        ..Requirement::new(
            labels::INSTANCE_FAMILY,
            Operator::In,
            &["c5", "m5", "r5", "m6g"],
        )
    });
    let plan = solve(&input(vec![np], pods("a", 30, 1000, gib(1))));
    for c in &plan.new_node_claims {
        let families: std::collections::BTreeSet<&str> = c
            .instance_types
            .iter()
            .map(|o| o.name.split('.').next().unwrap())
            .collect();
        assert!(families.len() >= 3, "{families:?}");
    }
}

#[test]
fn min_values_that_cannot_hold_refuse() {
    let mut np = pool("strict");
    np.requirements.push(Requirement {
        min_values: Some(2),
        ..Requirement::new(labels::INSTANCE_FAMILY, Operator::In, &["c5", "g4dn"])
    });
    let mut p = pod("gpu", 1000, gib(1));
    p.containers[0].set(resource::NVIDIA_GPU, 1000);
    let plan = solve(&input(vec![np], vec![p]));
    assert!(reason_of(&plan, "gpu").contains("minValues"));
}

#[test]
fn at_most_sixty_types_cheapest_first() {
    let mut inp = input(vec![pool("default")], vec![pod("a", 100, MI * 100_000)]);
    let mut many = Vec::new();
    for i in 1..=80 {
        many.push(instance(
            &format!("x{i}.large"),
            2,
            4,
            "amd64",
            0.01 * f64::from(i),
        ));
    }
    inp.node_pools[0].instance_types = many;
    let plan = solve(&inp);
    let c = claim_of(&plan, "a");
    assert_eq!(c.instance_types.len(), MAX_INSTANCE_TYPES);
    assert_eq!(c.instance_types[0].name, "x1.large");
}

// ---- NodePools ----------------------------------------------------------------------------------------

#[test]
fn higher_weight_pool_wins() {
    let mut heavy = pool("heavy");
    heavy.weight = 50;
    heavy.requirements.push(Requirement::new(
        labels::INSTANCE_FAMILY,
        Operator::In,
        &["r5"],
    ));
    let plan = solve(&input(
        vec![pool("default"), heavy],
        vec![pod("a", 1000, gib(1))],
    ));
    assert_eq!(claim_of(&plan, "a").node_pool, "heavy");
}

#[test]
fn lower_weight_pool_takes_what_the_higher_cannot() {
    let mut heavy = pool("heavy");
    heavy.weight = 50;
    heavy.taints = vec![taint("x", "y", TaintEffect::NoSchedule)];
    let plan = solve(&input(
        vec![pool("default"), heavy],
        vec![pod("a", 1000, gib(1))],
    ));
    assert_eq!(claim_of(&plan, "a").node_pool, "default");
}

#[test]
fn pools_that_are_not_ready_are_skipped() {
    let mut broken = pool("broken");
    broken.ready = false;
    broken.not_ready_reason = "EC2NodeClass default: no subnets".into();
    let plan = solve(&input(vec![broken.clone()], vec![pod("a", 1000, gib(1))]));
    assert_eq!(
        reason_of(&plan, "a"),
        "NodePool broken is not ready: EC2NodeClass default: no subnets"
    );
    let plan = solve(&input(
        vec![broken, pool("ok")],
        vec![pod("a", 1000, gib(1))],
    ));
    assert_eq!(claim_of(&plan, "a").node_pool, "ok");
}

#[test]
fn limits_count_existing_nodes() {
    let mut np = pool("limited");
    np.limits = Resources::new().with(resource::CPU, 16_000);
    let m5 = catalog()
        .into_iter()
        .find(|t| t.name == "m5.2xlarge")
        .unwrap();
    let mut inp = input(vec![np], vec![pod("big", 7000, gib(4))]);
    inp.nodes = vec![existing(
        node("n1", "limited", &m5, "us-east-1a"),
        vec![pod("busy", 7500, gib(1))],
    )];
    let plan = solve(&inp);
    // 8 of 16 cpu are in use: only types with ≤ 8 vCPU are allowed.
    for name in option_names(claim_of(&plan, "big")) {
        let cpu = catalog()
            .into_iter()
            .find(|t| t.name == name)
            .unwrap()
            .capacity
            .get(resource::CPU);
        assert!(cpu <= 8000, "{name}");
    }
}

#[test]
fn nodes_limit() {
    let mut np = pool("few");
    np.limits = Resources::new().with(resource::NODES, 2000);
    let mut p = Vec::new();
    for i in 0..3 {
        let mut x = pod(&format!("p{i}"), 1000, gib(1));
        x.host_ports = vec![HostPort {
            ip: String::new(),
            port: 80,
            protocol: Protocol::Tcp,
        }];
        p.push(x);
    }
    let plan = solve(&input(vec![np], p));
    assert_eq!(plan.new_node_claims.len(), 2);
    assert_eq!(
        reason_of(&plan, "p2"),
        "NodePool few limit nodes=2 reached (2 in use)"
    );
}

#[test]
fn limits_are_charged_for_the_largest_option() {
    let mut np = pool("tight");
    np.limits = Resources::new().with(resource::CPU, 10_000);
    let plan = solve(&input(
        vec![np],
        vec![pod("a", 1000, gib(1)), pod("b", 1000, gib(1))],
    ));
    // Whatever type is launched, the limit holds: every option has ≤ 10 vCPU (the checker
    // verifies the sum over claims of the largest option).
    for c in &plan.new_node_claims {
        for o in &c.instance_types {
            assert!(
                catalog()
                    .into_iter()
                    .find(|t| t.name == o.name)
                    .unwrap()
                    .capacity
                    .get(resource::CPU)
                    <= 10_000
            );
        }
    }
}

// ---- existing capacity first ----------------------------------------------------------------------------

fn m5_xlarge() -> InstanceType {
    catalog()
        .into_iter()
        .find(|t| t.name == "m5.xlarge")
        .unwrap()
}

#[test]
fn existing_node_with_room_is_used_first() {
    let mut inp = input(vec![pool("default")], vec![pod("a", 1000, gib(1))]);
    inp.nodes = vec![existing(
        node("n1", "default", &m5_xlarge(), "us-east-1a"),
        vec![],
    )];
    let plan = solve(&inp);
    assert!(plan.new_node_claims.is_empty());
    assert_eq!(
        plan.placements[0].target,
        NominationTarget::Node("n1".into())
    );
}

#[test]
fn full_existing_node_is_skipped() {
    let mut inp = input(vec![pool("default")], vec![pod("a", 1000, gib(1))]);
    inp.nodes = vec![existing(
        node("n1", "default", &m5_xlarge(), "us-east-1a"),
        vec![pod("hog", 3500, gib(1))],
    )];
    let plan = solve(&inp);
    assert_eq!(plan.new_node_claims.len(), 1);
}

#[test]
fn tainted_cordoned_and_unready_nodes_are_skipped() {
    for (name, change) in [
        (
            "tainted",
            (|n: &mut Node| n.taints = vec![taint("k", "v", TaintEffect::NoSchedule)])
                as fn(&mut Node),
        ),
        ("cordoned", |n: &mut Node| n.unschedulable = true),
        ("unready", |n: &mut Node| n.ready = false),
        ("deleting", |n: &mut Node| n.deleting = true),
    ] {
        let mut n = node(name, "default", &m5_xlarge(), "us-east-1a");
        change(&mut n);
        let mut inp = input(vec![pool("default")], vec![pod("a", 1000, gib(1))]);
        inp.nodes = vec![existing(n, vec![])];
        let plan = solve(&inp);
        assert_eq!(plan.new_node_claims.len(), 1, "{name} node was used");
    }
}

#[test]
fn existing_node_must_match_labels() {
    let p = with_affinity(
        pod("a", 1000, gib(1)),
        vec![vec![Requirement::new(
            labels::TOPOLOGY_ZONE,
            Operator::In,
            &["us-east-1b"],
        )]],
    );
    let mut inp = input(vec![pool("default")], vec![p]);
    inp.nodes = vec![existing(
        node("n1", "default", &m5_xlarge(), "us-east-1a"),
        vec![],
    )];
    let plan = solve(&inp);
    assert_eq!(plan.new_node_claims.len(), 1);
}

#[test]
fn in_flight_claim_takes_pods_before_a_new_one() {
    let mut claim = NodeClaim::new("default-abc", "default", node_class());
    claim.requirements = vec![Requirement::new(
        labels::INSTANCE_TYPE,
        Operator::In,
        &["m5.xlarge"],
    )];
    claim
        .labels
        .insert(labels::NODE_POOL.into(), "default".into());
    claim.requests = Resources::new()
        .with(resource::CPU, 1000)
        .with(resource::PODS, 1000);
    let mut inp = input(vec![pool("default")], vec![pod("a", 1000, gib(1))]);
    inp.node_claims = vec![in_flight(claim, vec![])];
    let plan = solve(&inp);
    assert!(plan.new_node_claims.is_empty());
    assert_eq!(
        plan.placements[0].target,
        NominationTarget::NodeClaim("default-abc".into())
    );
}

#[test]
fn pods_nominated_to_in_flight_claims_stay_there() {
    let mut claim = NodeClaim::new("default-abc", "default", node_class());
    claim.requirements = vec![Requirement::new(
        labels::INSTANCE_TYPE,
        Operator::In,
        &["m5.xlarge"],
    )];
    claim.requests = Resources::new().with(resource::CPU, 3000);
    let mut p = pod("a", 3000, gib(1));
    p.nominated_node_claim = Some("default-abc".into());
    let mut inp = input(vec![pool("default")], vec![p.clone()]);
    inp.node_claims = vec![in_flight(claim, vec![p])];
    let plan = solve(&inp);
    assert!(
        plan.new_node_claims.is_empty(),
        "the nominated pod was provisioned again"
    );
    assert_eq!(
        plan.placements[0].target,
        NominationTarget::NodeClaim("default-abc".into())
    );
}

#[test]
fn in_flight_capacity_counts_against_limits() {
    let mut np = pool("limited");
    np.limits = Resources::new().with(resource::CPU, 8000);
    let mut claim = NodeClaim::new("limited-1", "limited", node_class());
    claim.capacity = Resources::new().with(resource::CPU, 8000);
    claim.allocatable = Resources::new()
        .with(resource::CPU, 7900)
        .with(resource::MEMORY, gib(30))
        .with(resource::PODS, 58_000);
    claim.requests = Resources::new().with(resource::CPU, 7000);
    let mut inp = input(vec![np], vec![pod("a", 2000, gib(1))]);
    inp.node_claims = vec![in_flight(claim, vec![])];
    let plan = solve(&inp);
    assert_eq!(
        reason_of(&plan, "a"),
        "NodePool limited limit cpu=8 reached (8 in use)"
    );
}

#[test]
fn terminal_and_bound_pods_are_not_scheduled() {
    let mut done = pod("done", 1000, gib(1));
    done.phase = PodPhase::Succeeded;
    let mut bound = pod("bound", 1000, gib(1));
    bound.node_name = Some("elsewhere".into());
    let plan = solve(&input(vec![pool("default")], vec![done, bound]));
    assert!(
        plan.new_node_claims.is_empty()
            && plan.placements.is_empty()
            && plan.unschedulable.is_empty()
    );
}

// ---- DaemonSets ----------------------------------------------------------------------------------------

#[test]
fn daemon_sets_are_charged_to_new_nodes() {
    // A pod filling an m5.large alone (1.93 cpu allocatable) no longer fits with a 500m DaemonSet.
    let p = with_affinity(
        pod("a", 1800, gib(1)),
        vec![vec![Requirement::new(
            labels::INSTANCE_FAMILY,
            Operator::In,
            &["m5"],
        )]],
    );
    let mut inp = input(vec![pool("default")], vec![p.clone()]);
    assert!(option_names(claim_of(&solve(&inp), "a")).contains(&"m5.large"));
    inp.daemon_sets = vec![daemon_set("agent", 500, MI * 100_000)];
    let plan = solve(&inp);
    let c = claim_of(&plan, "a");
    assert!(!option_names(c).contains(&"m5.large"));
    assert_eq!(c.requests.get(resource::CPU), 2300);
}

#[test]
fn daemon_sets_that_do_not_tolerate_the_pool_are_not_charged() {
    let mut np = gitlab_pool();
    np.limits = Resources::new();
    let mut inp = input(vec![np], vec![build_pod("b")]);
    inp.daemon_sets = vec![daemon_set("agent", 4000, gib(1))];
    let plan = solve(&inp);
    assert_eq!(claim_of(&plan, "b").requests.get(resource::CPU), 1000);
}

#[test]
fn daemon_sets_respect_their_selectors() {
    let mut ds = daemon_set("arm-agent", 1500, gib(1));
    ds.template
        .node_selector
        .insert(labels::ARCH.into(), "arm64".into());
    let p = with_affinity(
        pod("a", 1000, gib(1)),
        vec![vec![Requirement::new(
            labels::INSTANCE_FAMILY,
            Operator::In,
            &["m5"],
        )]],
    );
    let mut inp = input(vec![pool("default")], vec![p]);
    inp.daemon_sets = vec![ds];
    let plan = solve(&inp);
    assert_eq!(claim_of(&plan, "a").requests.get(resource::CPU), 1000);
}

#[test]
fn daemon_sets_not_yet_running_on_existing_nodes_are_charged() {
    let mut inp = input(vec![pool("default")], vec![pod("a", 3000, gib(1))]);
    inp.nodes = vec![existing(
        node("n1", "default", &m5_xlarge(), "us-east-1a"),
        vec![],
    )];
    inp.daemon_sets = vec![daemon_set("agent", 1000, MI * 100_000)];
    let plan = solve(&inp);
    // 3.92 allocatable − 1 for the agent < 3.
    assert_eq!(plan.new_node_claims.len(), 1);

    // Once the agent runs there, it is counted once, as a bound pod.
    let mut agent = pod("agent-n1", 1000, MI * 100_000);
    agent.owner = Some(OwnerReference {
        kind: "DaemonSet".into(),
        name: "agent".into(),
        uid: "u".into(),
    });
    inp.nodes = vec![existing(
        node("n1", "default", &m5_xlarge(), "us-east-1a"),
        vec![agent],
    )];
    inp.pods = vec![pod("a", 2500, gib(1))];
    let plan = solve(&inp);
    assert_eq!(plan.placements.len(), 1);
}

// ---- host ports ------------------------------------------------------------------------------------------

#[test]
fn host_ports_spread_pods_over_nodes() {
    let mut ps = pods("ingress", 3, 100, MI * 100_000);
    for p in &mut ps {
        p.host_ports = vec![HostPort {
            ip: String::new(),
            port: 443,
            protocol: Protocol::Tcp,
        }];
    }
    let plan = solve(&input(vec![pool("default")], ps));
    assert_eq!(plan.new_node_claims.len(), 3);
}

#[test]
fn host_ports_conflict_with_existing_pods() {
    let mut busy = pod("busy", 100, MI);
    busy.host_ports = vec![HostPort {
        ip: String::new(),
        port: 443,
        protocol: Protocol::Tcp,
    }];
    let mut p = pod("a", 100, MI);
    p.host_ports = busy.host_ports.clone();
    let mut inp = input(vec![pool("default")], vec![p]);
    inp.nodes = vec![existing(
        node("n1", "default", &m5_xlarge(), "us-east-1a"),
        vec![busy],
    )];
    let plan = solve(&inp);
    assert_eq!(plan.new_node_claims.len(), 1);
}

// ---- whole-plan properties --------------------------------------------------------------------------------

#[test]
fn plans_are_deterministic() {
    let mut all = pods("web", 50, 300, gib(1));
    all.extend((0..10).map(|i| build_pod(&format!("build-{i}"))));
    let inp = input(vec![pool("default"), gitlab_pool()], all);
    let (a, b) = (solve(&inp), solve(&inp));
    assert_eq!(a.new_node_claims, b.new_node_claims);
    assert_eq!(a.placements, b.placements);
    assert_eq!(a.unschedulable, b.unschedulable);
}

#[test]
fn identical_pods_form_one_class() {
    let plan = solve(&input(
        vec![pool("default")],
        pods("web", 500, 250, gib(1) / 2),
    ));
    assert_eq!(plan.stats.classes, 1);
    assert_eq!(plan.stats.pods, 500);
    assert_eq!(plan.stats.placed_on_new, 500);
}

#[test]
fn priority_goes_first_when_capacity_is_short() {
    let mut np = pool("limited");
    np.limits = Resources::new().with(resource::NODES, 1000);
    np.requirements.push(Requirement::new(
        labels::INSTANCE_TYPE,
        Operator::In,
        &["m5.large"],
    ));
    let low = pod("low", 1500, gib(1));
    let mut high = pod("high", 1500, gib(1));
    high.priority = 1000;
    let plan = solve(&input(vec![np], vec![low, high]));
    assert_eq!(claim_of(&plan, "high").pods.len(), 1);
    assert!(reason_of(&plan, "low").contains("limit nodes=1"));
}

// ---- more resources ------------------------------------------------------------------------------

#[test]
fn ephemeral_storage_counts() {
    // 20Gi root volumes: 20Gi − 1Gi kube-reserved − 10 % eviction = 17Gi allocatable.
    let mut p = pod("scratch", 500, gib(1));
    p.containers[0].set(resource::EPHEMERAL_STORAGE, gib(18));
    let plan = solve(&input(vec![pool("default")], vec![p]));
    assert!(
        reason_of(&plan, "scratch").starts_with("needs 18Gi ephemeral-storage"),
        "{}",
        reason_of(&plan, "scratch")
    );
    let mut p = pod("scratch", 500, gib(1));
    p.containers[0].set(resource::EPHEMERAL_STORAGE, gib(8));
    let plan = solve(&input(
        vec![pool("default")],
        pods("s", 0, 0, 0).into_iter().chain([p]).collect(),
    ));
    assert_eq!(plan.new_node_claims.len(), 1);
}

#[test]
fn hugepages_need_a_type_that_has_them() {
    let mut p = pod("db", 500, gib(1));
    p.containers[0].set("hugepages-2Mi", gib(1));
    let plan = solve(&input(vec![pool("default")], vec![p.clone()]));
    assert!(reason_of(&plan, "db").starts_with("needs 1Gi hugepages-2Mi"));
    let mut inp = input(vec![pool("default")], vec![p]);
    inp.node_pools[0].instance_types[0]
        .capacity
        .set("hugepages-2Mi", gib(2));
    let name = inp.node_pools[0].instance_types[0].name.clone();
    let plan = solve(&inp);
    assert_eq!(option_names(claim_of(&plan, "db")), [name.as_str()]);
}

#[test]
fn efa_and_neuron_are_extended_resources() {
    for r in [resource::AWS_EFA, resource::AWS_NEURON, resource::AMD_GPU] {
        let mut p = pod("x", 500, gib(1));
        p.containers[0].set(r, 1000);
        let plan = solve(&input(vec![pool("default")], vec![p]));
        assert!(reason_of(&plan, "x").contains(r), "{r}");
    }
}

#[test]
fn requests_add_across_containers() {
    let mut p = pod("multi", 1000, gib(1));
    p.containers.push(
        Resources::new()
            .with(resource::CPU, 1000)
            .with(resource::MEMORY, gib(1)),
    );
    let plan = solve(&input(vec![pool("default")], vec![p]));
    assert_eq!(claim_of(&plan, "multi").requests.get(resource::CPU), 2000);
}

// ---- more existing capacity ----------------------------------------------------------------------------

#[test]
fn existing_nodes_are_filled_in_name_order() {
    let mut inp = input(vec![pool("default")], vec![pod("a", 1000, gib(1))]);
    inp.nodes = vec![
        existing(node("n2", "default", &m5_xlarge(), "us-east-1a"), vec![]),
        existing(node("n1", "default", &m5_xlarge(), "us-east-1b"), vec![]),
    ];
    let plan = solve(&inp);
    assert_eq!(
        plan.placements[0].target,
        NominationTarget::Node("n1".into())
    );
}

#[test]
fn existing_nodes_come_before_in_flight_claims() {
    let mut claim = NodeClaim::new("default-abc", "default", node_class());
    claim.requirements = vec![Requirement::new(
        labels::INSTANCE_TYPE,
        Operator::In,
        &["m5.xlarge"],
    )];
    let mut inp = input(vec![pool("default")], vec![pod("a", 1000, gib(1))]);
    inp.node_claims = vec![in_flight(claim, vec![])];
    inp.nodes = vec![existing(
        node("n1", "default", &m5_xlarge(), "us-east-1a"),
        vec![],
    )];
    let plan = solve(&inp);
    assert_eq!(
        plan.placements[0].target,
        NominationTarget::Node("n1".into())
    );
}

#[test]
fn in_flight_claim_capacity_comes_from_its_requirements() {
    // No reported capacity: the smallest type its requirements allow bounds what it takes.
    let mut claim = NodeClaim::new("default-abc", "default", node_class());
    claim.requirements = vec![Requirement::new(
        labels::INSTANCE_TYPE,
        Operator::In,
        &["m5.large", "m5.xlarge"],
    )];
    let mut inp = input(
        vec![pool("default")],
        vec![pod("a", 1500, gib(1)), pod("b", 1500, gib(1))],
    );
    inp.node_claims = vec![in_flight(claim, vec![])];
    let plan = solve(&inp);
    assert_eq!(
        plan.placements.len(),
        1,
        "an m5.large holds one 1.5-cpu pod"
    );
    assert_eq!(plan.new_node_claims.len(), 1);
}

#[test]
fn deleting_in_flight_claims_take_nothing() {
    let mut claim = NodeClaim::new("default-abc", "default", node_class());
    claim.requirements = vec![Requirement::new(
        labels::INSTANCE_TYPE,
        Operator::In,
        &["m5.xlarge"],
    )];
    claim.deleting = true;
    let mut inp = input(vec![pool("default")], vec![pod("a", 1000, gib(1))]);
    inp.node_claims = vec![in_flight(claim, vec![])];
    assert_eq!(solve(&inp).new_node_claims.len(), 1);
}

#[test]
fn in_flight_claim_taints_apply() {
    let mut claim = NodeClaim::new("gitlab-abc", "default", node_class());
    claim.requirements = vec![Requirement::new(
        labels::INSTANCE_TYPE,
        Operator::In,
        &["m5.xlarge"],
    )];
    claim.taints = vec![taint("dedicated", "x", TaintEffect::NoSchedule)];
    let mut inp = input(vec![pool("default")], vec![pod("a", 1000, gib(1))]);
    inp.node_claims = vec![in_flight(claim, vec![])];
    assert_eq!(solve(&inp).new_node_claims.len(), 1);
}

#[test]
fn many_pools_by_weight_then_name() {
    let (a, b) = (pool("a-pool"), pool("b-pool"));
    let plan = solve(&input(vec![b, a], vec![pod("x", 1000, gib(1))]));
    assert_eq!(
        claim_of(&plan, "x").node_pool,
        "a-pool",
        "equal weights: by name"
    );
}

#[test]
fn pool_labels_do_not_satisfy_other_pools() {
    let mut team = pool("team");
    team.labels.insert("team".into(), "a".into());
    team.taints = vec![taint("team", "a", TaintEffect::NoSchedule)];
    let mut p = pod("x", 1000, gib(1));
    p.node_selector.insert("team".into(), "a".into());
    // It selects the team pool's label but does not tolerate its taint.
    let plan = solve(&input(vec![team, pool("default")], vec![p]));
    let reason = reason_of(&plan, "x");
    assert!(
        reason.contains("NodePool team has taint team=a:NoSchedule"),
        "{reason}"
    );
    assert!(
        reason.contains("NodePool default cannot satisfy requirement team In [a]"),
        "{reason}"
    );
}

#[test]
fn daemon_set_host_ports_block_pods_on_existing_nodes() {
    let mut ds = daemon_set("exporter", 100, MI * 100_000);
    ds.template.host_ports = vec![HostPort {
        ip: String::new(),
        port: 9100,
        protocol: Protocol::Tcp,
    }];
    let mut p = pod("a", 100, MI * 100_000);
    p.host_ports = ds.template.host_ports.clone();
    let mut inp = input(vec![pool("default")], vec![p]);
    inp.daemon_sets = vec![ds];
    inp.nodes = vec![existing(
        node("n1", "default", &m5_xlarge(), "us-east-1a"),
        vec![],
    )];
    let plan = solve(&inp);
    assert!(
        plan.placements.is_empty(),
        "the exporter will hold port 9100 on n1"
    );
}

#[test]
fn volume_zone_outside_the_pool_is_refused() {
    let mut np = pool("east-a");
    np.requirements.push(Requirement::new(
        labels::TOPOLOGY_ZONE,
        Operator::In,
        &["us-east-1a"],
    ));
    let mut p = pod("db", 1000, gib(1));
    p.volume_requirements = vec![Requirement::new(
        labels::TOPOLOGY_ZONE,
        Operator::In,
        &["us-east-1c"],
    )];
    let plan = solve(&input(vec![np], vec![p]));
    assert!(reason_of(&plan, "db").contains("topology.kubernetes.io/zone In [us-east-1c]"));
}

#[test]
fn min_values_on_the_pod_side_is_honoured_too() {
    let mut p = pod("flex", 1000, gib(1));
    p.node_affinity = Some(NodeAffinity {
        required: vec![NodeSelectorTerm {
            match_expressions: vec![Requirement {
                min_values: Some(2),
                ..Requirement::new(labels::INSTANCE_FAMILY, Operator::In, &["c5", "m5", "r5"])
            }],
            match_fields: vec![],
        }],
        preferred: vec![],
    });
    let plan = solve(&input(vec![pool("default")], vec![p]));
    let families: std::collections::BTreeSet<&str> = option_names(claim_of(&plan, "flex"))
        .iter()
        .map(|n| n.split('.').next().unwrap())
        .collect();
    assert!(families.len() >= 2);
}

#[test]
fn empty_input_is_an_empty_plan() {
    let plan = solve(&input(vec![pool("default")], vec![]));
    assert!(
        plan.new_node_claims.is_empty()
            && plan.placements.is_empty()
            && plan.unschedulable.is_empty()
    );
    assert_eq!(plan.stats.pods, 0);
}

#[test]
fn no_node_pools_is_explained() {
    let plan = solve(&input(vec![], vec![pod("a", 100, MI)]));
    assert_eq!(reason_of(&plan, "a"), "no NodePool exists");
}
