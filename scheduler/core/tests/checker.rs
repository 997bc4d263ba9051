//! The checker catches broken plans: each test breaks a valid plan one way.

mod common;

use berth_scheduler_core::checker::check;
use berth_scheduler_core::labels;
use berth_scheduler_core::model::*;
use berth_scheduler_core::solver::{self, InstanceTypeOption};
use berth_scheduler_core::sync::NominationTarget;
use common::*;

#[track_caller]
fn flags(inp: &solver::SchedulingInput, plan: &solver::Plan, says: &str) {
    let v = check(inp, plan);
    assert!(
        v.iter().any(|m| m.contains(says)),
        "expected a violation containing {says:?}, got {v:?}"
    );
}

#[test]
fn a_valid_plan_passes() {
    let inp = input(vec![pool("default")], pods("a", 20, 1000, gib(1)));
    assert_eq!(check(&inp, &solver::solve(&inp)), Vec::<String>::new());
}

#[test]
fn dropped_and_duplicated_pods() {
    let inp = input(vec![pool("default")], pods("a", 3, 1000, gib(1)));
    let mut plan = solver::solve(&inp);
    let dropped = plan.new_node_claims[0].pods.pop().unwrap();
    flags(&inp, &plan, &format!("pod {dropped} is decided 0 times"));
    plan.new_node_claims[0].pods.push(dropped.clone());
    plan.new_node_claims[0].pods.push(dropped.clone());
    flags(&inp, &plan, "decided 2 times");
}

#[test]
fn overfull_claim() {
    // Each pod needs more than a t3.medium's 1.93 allocatable cpu.
    let inp = input(vec![pool("default")], pods("a", 20, 3000, gib(1)));
    let mut plan = solver::solve(&inp);
    plan.new_node_claims[0].instance_types.insert(
        0,
        InstanceTypeOption {
            name: "t3.medium".into(),
            price: 0.0,
            zone: "us-east-1a".into(),
            capacity_type: CapacityType::Spot,
        },
    );
    flags(&inp, &plan, "do not fit option t3.medium");
    flags(&inp, &plan, "priced 0 but its offering costs");
}

#[test]
fn option_breaking_a_requirement() {
    let p = with_affinity(
        pod("a", 500, gib(1)),
        vec![vec![Requirement::new(
            labels::ARCH,
            Operator::In,
            &["arm64"],
        )]],
    );
    let inp = input(vec![pool("default")], vec![p]);
    let mut plan = solver::solve(&inp);
    plan.new_node_claims[0]
        .instance_types
        .push(InstanceTypeOption {
            name: "m5.8xlarge".into(),
            price: 100.0,
            zone: "us-east-1a".into(),
            capacity_type: CapacityType::OnDemand,
        });
    flags(
        &inp,
        &plan,
        "does not satisfy pod default/a's node requirements",
    );
}

#[test]
fn untolerated_taint() {
    let mut np = pool("tainted");
    np.taints = vec![taint("k", "v", TaintEffect::NoSchedule)];
    let mut p = pod("a", 500, gib(1));
    p.tolerations = vec![tolerate("k", "v", TaintEffect::NoSchedule)];
    let inp = input(vec![np], vec![p.clone(), pod("b", 500, gib(1))]);
    let mut plan = solver::solve(&inp);
    // b is refused (taint); force it onto a's claim.
    plan.unschedulable.clear();
    plan.new_node_claims[0]
        .pods
        .push(ObjectKey::new("default", "b"));
    flags(
        &inp,
        &plan,
        "pod default/b does not tolerate taint k=v:NoSchedule",
    );
}

#[test]
fn over_limit() {
    let mut np = pool("limited");
    np.limits = Resources::new().with(resource::CPU, 4000);
    let inp = input(vec![np], vec![pod("a", 500, gib(1))]);
    let mut plan = solver::solve(&inp);
    plan.new_node_claims.push(plan.new_node_claims[0].clone());
    plan.new_node_claims[1].pods.clear();
    flags(&inp, &plan, "limit cpu exceeded");
}

#[test]
fn over_committed_node_and_shared_host_port() {
    let it = catalog()
        .into_iter()
        .find(|t| t.name == "m5.large")
        .unwrap();
    let mut a = pod("a", 1500, gib(1));
    let mut b = pod("b", 1500, gib(1));
    a.host_ports = vec![HostPort {
        ip: String::new(),
        port: 80,
        protocol: Protocol::Tcp,
    }];
    b.host_ports = a.host_ports.clone();
    let mut inp = input(vec![pool("default")], vec![a, b]);
    inp.nodes = vec![existing(node("n1", "default", &it, "us-east-1a"), vec![])];
    let mut plan = solver::solve(&inp);
    plan.new_node_claims.clear();
    plan.placements = ["a", "b"]
        .iter()
        .map(|n| solver::Placement {
            pod: ObjectKey::new("default", n),
            target: NominationTarget::Node("n1".into()),
        })
        .collect();
    flags(&inp, &plan, "node n1 is over-committed");
    flags(&inp, &plan, "share a host port on node n1");
}

#[test]
fn broken_topology() {
    let mk = |name: &str| {
        let mut p = pod(name, 500, gib(1));
        p.labels.insert("app".into(), "nginx".into());
        let sel = LabelSelector {
            match_labels: [("app".to_owned(), "nginx".to_owned())].into(),
            match_expressions: vec![],
        };
        p.pod_anti_affinity = Some(PodAffinity {
            required: vec![PodAffinityTerm {
                label_selector: Some(sel.clone()),
                topology_key: labels::HOSTNAME.into(),
                ..Default::default()
            }],
            preferred: vec![],
        });
        p.topology_spread = vec![TopologySpreadConstraint {
            max_skew: 1,
            topology_key: labels::TOPOLOGY_ZONE.into(),
            when_unsatisfiable: WhenUnsatisfiable::DoNotSchedule,
            label_selector: Some(sel),
            min_domains: None,
            match_label_keys: vec![],
            node_affinity_policy: NodeInclusionPolicy::Honor,
            node_taints_policy: NodeInclusionPolicy::Ignore,
        }];
        p
    };
    let inp = input(vec![pool("default")], vec![mk("a"), mk("b"), mk("c")]);
    let mut plan = solver::solve(&inp);
    assert_eq!(check(&inp, &plan), Vec::<String>::new());
    let moved = plan.new_node_claims[1].pods.pop().unwrap();
    plan.new_node_claims[0].pods.push(moved);
    flags(&inp, &plan, "shares kubernetes.io/hostname");
    flags(&inp, &plan, "breaks spread on topology.kubernetes.io/zone");
}

#[test]
fn topology_counts_pods_nominated_to_in_flight_claims() {
    let sel = LabelSelector {
        match_labels: [("app".to_owned(), "web".to_owned())].into(),
        match_expressions: vec![],
    };
    let web = |name: &str| {
        let mut p = pod(name, 500, gib(1));
        p.labels.insert("app".into(), "web".into());
        p.topology_spread = vec![TopologySpreadConstraint {
            max_skew: 1,
            topology_key: labels::TOPOLOGY_ZONE.into(),
            when_unsatisfiable: WhenUnsatisfiable::DoNotSchedule,
            label_selector: Some(sel.clone()),
            min_domains: None,
            match_label_keys: vec![],
            node_affinity_policy: NodeInclusionPolicy::Honor,
            node_taints_policy: NodeInclusionPolicy::Ignore,
        }];
        p
    };
    let mut loner = pod("loner", 500, gib(1));
    loner.pod_anti_affinity = Some(PodAffinity {
        required: vec![PodAffinityTerm {
            label_selector: Some(sel.clone()),
            topology_key: labels::TOPOLOGY_ZONE.into(),
            ..Default::default()
        }],
        preferred: vec![],
    });
    let claim_in = |name: &str, zone: &str, pods: Vec<Pod>| {
        let mut c = NodeClaim::new(name, "default", node_class());
        c.requirements = vec![Requirement::new(
            labels::TOPOLOGY_ZONE,
            Operator::In,
            &[zone],
        )];
        c.labels.insert(labels::TOPOLOGY_ZONE.into(), zone.into());
        in_flight(c, pods)
    };
    let mut inp = input(vec![pool("default")], vec![web("web-2")]);
    inp.node_claims = vec![
        claim_in("default-a", ZONES[0], vec![web("web-0")]),
        claim_in("default-b", ZONES[1], vec![web("web-1")]),
    ];
    let mut plan = solver::solve(&inp);
    assert_eq!(check(&inp, &plan), Vec::<String>::new());
    // The third replica beside the first: a is at 2 while c is empty.
    let new = &mut plan.new_node_claims[0];
    new.labels
        .insert(labels::TOPOLOGY_ZONE.into(), ZONES[0].into());
    flags(
        &inp,
        &plan,
        "breaks spread on topology.kubernetes.io/zone: 2 in us-east-1a",
    );
    // A nominated pod's anti-affinity excludes its zone.
    inp.node_claims
        .push(claim_in("default-c", ZONES[0], vec![loner]));
    flags(
        &inp,
        &plan,
        "placed where pod default/loner's anti-affinity",
    );
}
