//! Builders for scheduling scenarios: a small, realistic catalog, NodePools, pods, nodes.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::SystemTime;

use berth_scheduler_core::allocatable::{
    DEFAULT_VM_MEMORY_OVERHEAD_PERCENT, InstanceFacts, KubeletSettings, capacity_and_overhead,
};
use berth_scheduler_core::checker;
use berth_scheduler_core::labels;
use berth_scheduler_core::model::*;
use berth_scheduler_core::solver::{
    self, ExistingNode, InFlightClaim, NodePoolInput, Plan, SchedulingInput,
};

pub const GI: i64 = 1 << 30;
pub const MI: i64 = 1 << 20;
pub const ZONES: [&str; 3] = ["us-east-1a", "us-east-1b", "us-east-1c"];

pub fn cpu(cores: f64) -> i64 {
    (cores * 1000.0) as i64
}

pub fn gib(n: i64) -> i64 {
    n * GI * 1000
}

/// An instance type with Karpenter's overhead, on-demand and spot in every zone.
pub fn instance(name: &str, vcpus: u32, memory_gib: u64, arch: &str, price: f64) -> InstanceType {
    instance_with(name, vcpus, memory_gib, arch, price, BTreeMap::new())
}

pub fn instance_with(
    name: &str,
    vcpus: u32,
    memory_gib: u64,
    arch: &str,
    price: f64,
    extended: BTreeMap<String, i64>,
) -> InstanceType {
    let (family, size) = name.split_once('.').unwrap();
    let generation: String = family.chars().filter(char::is_ascii_digit).collect();
    let category: String = family
        .chars()
        .take_while(char::is_ascii_alphabetic)
        .collect();
    let facts = InstanceFacts {
        vcpus,
        memory_mib: memory_gib * 1024,
        max_enis: 4,
        ipv4_per_eni: 15,
        ephemeral_storage_bytes: 20 * GI,
        extended: extended.clone(),
    };
    let (capacity, overhead) = capacity_and_overhead(
        &facts,
        &KubeletSettings::default(),
        DEFAULT_VM_MEMORY_OVERHEAD_PERCENT,
    );
    let mut requirements = vec![
        Requirement::new(labels::INSTANCE_FAMILY, Operator::In, &[family]),
        Requirement::new(labels::INSTANCE_SIZE, Operator::In, &[size]),
        Requirement::new(labels::INSTANCE_CATEGORY, Operator::In, &[&category]),
        Requirement::new(labels::INSTANCE_GENERATION, Operator::In, &[&generation]),
        Requirement::new(labels::INSTANCE_CPU, Operator::In, &[&vcpus.to_string()]),
        Requirement::new(
            labels::INSTANCE_MEMORY,
            Operator::In,
            &[&(memory_gib * 1024).to_string()],
        ),
        Requirement::new(labels::ARCH, Operator::In, &[arch]),
        Requirement::new(labels::OS, Operator::In, &["linux"]),
    ];
    match extended.get(resource::NVIDIA_GPU) {
        Some(n) => requirements.push(Requirement::new(
            labels::INSTANCE_GPU_COUNT,
            Operator::In,
            &[&n.to_string()],
        )),
        None => requirements.push(Requirement::new(
            labels::INSTANCE_GPU_COUNT,
            Operator::DoesNotExist,
            &[],
        )),
    }
    requirements.retain(|r| r.operator != Operator::DoesNotExist);
    let mut offerings = Vec::new();
    for zone in ZONES {
        offerings.push(Offering {
            zone: zone.into(),
            capacity_type: CapacityType::OnDemand,
            price,
            available: true,
        });
        offerings.push(Offering {
            zone: zone.into(),
            capacity_type: CapacityType::Spot,
            price: (price * 0.35 * 10000.0).round() / 10000.0,
            available: true,
        });
    }
    InstanceType {
        name: name.into(),
        requirements,
        capacity,
        overhead,
        offerings,
    }
}

/// A small catalog in the shape of EC2's: compute, general and memory families, Graviton, burstable, a GPU type.
pub fn catalog() -> Vec<InstanceType> {
    let mut out = Vec::new();
    for (size, mult) in [
        ("large", 1u32),
        ("xlarge", 2),
        ("2xlarge", 4),
        ("4xlarge", 8),
        ("8xlarge", 16),
    ] {
        let v = 2 * mult;
        out.push(instance(
            &format!("c5.{size}"),
            v,
            u64::from(2 * v),
            "amd64",
            0.085 * f64::from(mult),
        ));
        out.push(instance(
            &format!("m5.{size}"),
            v,
            u64::from(4 * v),
            "amd64",
            0.096 * f64::from(mult),
        ));
        out.push(instance(
            &format!("r5.{size}"),
            v,
            u64::from(8 * v),
            "amd64",
            0.126 * f64::from(mult),
        ));
        out.push(instance(
            &format!("m6g.{size}"),
            v,
            u64::from(4 * v),
            "arm64",
            0.077 * f64::from(mult),
        ));
    }
    for (size, v, mem, price) in [
        ("medium", 2, 4, 0.0416),
        ("large", 2, 8, 0.0832),
        ("xlarge", 4, 16, 0.1664),
        ("2xlarge", 8, 32, 0.3328),
    ] {
        out.push(instance(&format!("t3.{size}"), v, mem, "amd64", price));
    }
    out.push(instance_with(
        "g4dn.xlarge",
        4,
        16,
        "amd64",
        0.526,
        [(resource::NVIDIA_GPU.to_owned(), 1)].into(),
    ));
    out.push(instance_with(
        "g4dn.12xlarge",
        48,
        192,
        "amd64",
        3.912,
        [(resource::NVIDIA_GPU.to_owned(), 4)].into(),
    ));
    out
}

pub fn node_class() -> NodeClassRef {
    NodeClassRef {
        group: "karpenter.k8s.aws".into(),
        kind: "EC2NodeClass".into(),
        name: "default".into(),
    }
}

pub fn pool(name: &str) -> NodePool {
    NodePool {
        name: name.into(),
        weight: 0,
        labels: Labels::new(),
        annotations: Labels::new(),
        requirements: vec![Requirement::new(labels::OS, Operator::In, &["linux"])],
        taints: vec![],
        startup_taints: vec![],
        node_class_ref: node_class(),
        limits: Resources::new(),
        expire_after: None,
        termination_grace_period: None,
        disruption: Disruption {
            consolidation_policy: ConsolidationPolicy::WhenEmptyOrUnderutilized,
            consolidate_after: None,
            budgets: vec![],
        },
        ready: true,
        not_ready_reason: String::new(),
    }
}

pub fn taint(key: &str, value: &str, effect: TaintEffect) -> Taint {
    Taint {
        key: key.into(),
        value: value.into(),
        effect,
    }
}

pub fn tolerate(key: &str, value: &str, effect: TaintEffect) -> Toleration {
    Toleration {
        key: key.into(),
        operator: TolerationOperator::Equal,
        value: value.into(),
        effect: Some(effect),
        toleration_seconds: None,
    }
}

pub fn pod(name: &str, cpu_milli: i64, memory: i64) -> Pod {
    let mut p = Pod::new("default", name);
    p.containers = vec![
        Resources::new()
            .with(resource::CPU, cpu_milli)
            .with(resource::MEMORY, memory),
    ];
    p.unschedulable = true;
    p
}

pub fn pods(prefix: &str, n: usize, cpu_milli: i64, memory: i64) -> Vec<Pod> {
    (0..n)
        .map(|i| pod(&format!("{prefix}-{i}"), cpu_milli, memory))
        .collect()
}

pub fn with_affinity(mut p: Pod, terms: Vec<Vec<Requirement>>) -> Pod {
    p.node_affinity = Some(NodeAffinity {
        required: terms
            .into_iter()
            .map(|match_expressions| NodeSelectorTerm {
                match_expressions,
                match_fields: vec![],
            })
            .collect(),
        preferred: vec![],
    });
    p
}

pub fn node(name: &str, pool: &str, it: &InstanceType, zone: &str) -> Node {
    let mut labels: Labels = it
        .requirements
        .iter()
        .filter(|r| r.operator == Operator::In && r.values.len() == 1)
        .map(|r| (r.key.clone(), r.values[0].clone()))
        .collect();
    labels.insert(labels::INSTANCE_TYPE.into(), it.name.clone());
    labels.insert(labels::TOPOLOGY_ZONE.into(), zone.into());
    labels.insert(labels::CAPACITY_TYPE.into(), "on-demand".into());
    labels.insert(labels::NODE_POOL.into(), pool.into());
    labels.insert(labels::HOSTNAME.into(), name.into());
    Node {
        name: name.into(),
        provider_id: format!("aws:///{zone}/i-{name}"),
        labels,
        taints: vec![],
        capacity: it.capacity.clone(),
        allocatable: it.allocatable(),
        ready: true,
        unschedulable: false,
        deleting: false,
        do_not_disrupt: false,
        created_at: SystemTime::UNIX_EPOCH,
    }
}

pub fn daemon_set(name: &str, cpu_milli: i64, memory: i64) -> DaemonSet {
    let mut template = Pod::new("kube-system", name);
    template.containers = vec![
        Resources::new()
            .with(resource::CPU, cpu_milli)
            .with(resource::MEMORY, memory),
    ];
    DaemonSet {
        key: ObjectKey::new("kube-system", name),
        template,
    }
}

pub fn input(pools: Vec<NodePool>, pods: Vec<Pod>) -> SchedulingInput {
    SchedulingInput {
        now: SystemTime::UNIX_EPOCH,
        node_pools: pools
            .into_iter()
            .map(|node_pool| NodePoolInput {
                node_pool,
                instance_types: catalog(),
            })
            .collect(),
        nodes: vec![],
        node_claims: vec![],
        daemon_sets: vec![],
        pods,
        pod_disruption_budgets: vec![],
        namespaces: vec![],
    }
}

pub fn existing(node: Node, pods: Vec<Pod>) -> ExistingNode {
    let pods = pods
        .into_iter()
        .map(|mut p| {
            p.node_name = Some(node.name.clone());
            p.phase = PodPhase::Running;
            p.unschedulable = false;
            p
        })
        .collect();
    ExistingNode { node, pods }
}

/// An in-flight claim with the pods nominated to it.
pub fn in_flight(claim: NodeClaim, pods: Vec<Pod>) -> InFlightClaim {
    InFlightClaim {
        node_claim: claim,
        pods,
    }
}

/// Solves and checks the plan with the independent checker.
#[track_caller]
pub fn solve(input: &SchedulingInput) -> Plan {
    let plan = solver::solve(input);
    let violations = checker::check(input, &plan);
    assert!(
        violations.is_empty(),
        "plan violates constraints: {violations:#?}\nplan: {plan:#?}"
    );
    plan
}

pub fn reason_of<'a>(plan: &'a Plan, name: &str) -> &'a str {
    plan.unschedulable
        .iter()
        .find(|u| u.pod.name == name)
        .map(|u| u.reason.as_str())
        .unwrap_or_else(|| panic!("{name} was scheduled: {plan:#?}"))
}

pub fn claim_of<'a>(plan: &'a Plan, name: &str) -> &'a solver::NewNodeClaim {
    plan.new_node_claims
        .iter()
        .find(|c| c.pods.iter().any(|p| p.name == name))
        .unwrap_or_else(|| panic!("{name} has no new claim: {plan:#?}"))
}

pub fn option_names(c: &solver::NewNodeClaim) -> Vec<&str> {
    c.instance_types.iter().map(|o| o.name.as_str()).collect()
}

/// A 500m/1Gi pod labelled `app=<app>`.
pub fn app(name: &str, app: &str) -> Pod {
    let mut p = pod(name, 500, gib(1));
    p.labels.insert("app".into(), app.into());
    p
}

/// Selects `app=<app>`.
pub fn selector(app: &str) -> LabelSelector {
    LabelSelector {
        match_labels: [("app".to_owned(), app.to_owned())].into(),
        match_expressions: vec![],
    }
}
