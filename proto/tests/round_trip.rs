//! Domain → proto → bytes → proto → domain is the identity, and bad messages name their field.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use berth_proto::v1 as p;
use berth_proto::{ConversionError, status};
use berth_scheduler_core::cloud::{CloudError, UnavailableOffering};
use berth_scheduler_core::model::*;
use berth_scheduler_core::sync::*;
use prost::Message;

fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_nanos(123)
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn selector() -> LabelSelector {
    LabelSelector {
        match_labels: labels(&[("app", "web")]),
        match_expressions: vec![SelectorRequirement {
            key: "tier".into(),
            operator: SelectorOperator::NotIn,
            values: vec!["db".into()],
        }],
    }
}

fn rich_pod() -> Pod {
    let mut pod = Pod::new("gitlab", "runner-abc");
    pod.labels = labels(&[("app", "web")]);
    pod.owner = Some(OwnerReference {
        kind: "Job".into(),
        name: "build-1".into(),
        uid: "u1".into(),
    });
    pod.priority = 1000;
    pod.containers = vec![
        Resources::new().with("cpu", 1000).with("memory", 2 << 30),
        Resources::new().with("nvidia.com/gpu", 1000),
    ];
    pod.init_containers = vec![
        InitContainer {
            requests: Resources::new().with("cpu", 2000),
            sidecar: false,
        },
        InitContainer {
            requests: Resources::new().with("cpu", 100),
            sidecar: true,
        },
    ];
    pod.overhead = Resources::new().with("memory", 1 << 20);
    pod.node_selector = labels(&[("workload-type", "gitlab-runners-auto")]);
    pod.node_affinity = Some(NodeAffinity {
        required: vec![NodeSelectorTerm {
            match_expressions: vec![Requirement::new(
                "karpenter.k8s.aws/instance-cpu",
                Operator::Gte,
                &["4"],
            )],
            match_fields: vec![Requirement::new("metadata.name", Operator::NotIn, &["n1"])],
        }],
        preferred: vec![PreferredSchedulingTerm {
            weight: 50,
            term: NodeSelectorTerm {
                match_expressions: vec![Requirement::new(
                    "topology.kubernetes.io/zone",
                    Operator::In,
                    &["a", "b"],
                )],
                match_fields: vec![],
            },
        }],
    });
    pod.tolerations = vec![
        Toleration {
            key: "dedicated".into(),
            operator: TolerationOperator::Equal,
            value: "gitlab-runner-auto".into(),
            effect: Some(TaintEffect::NoSchedule),
            toleration_seconds: None,
        },
        Toleration {
            key: String::new(),
            operator: TolerationOperator::Exists,
            value: String::new(),
            effect: None,
            toleration_seconds: Some(300),
        },
    ];
    pod.topology_spread = vec![TopologySpreadConstraint {
        max_skew: 1,
        topology_key: "topology.kubernetes.io/zone".into(),
        when_unsatisfiable: WhenUnsatisfiable::ScheduleAnyway,
        label_selector: Some(selector()),
        min_domains: Some(3),
        match_label_keys: vec!["pod-template-hash".into()],
        node_affinity_policy: NodeInclusionPolicy::Ignore,
        node_taints_policy: NodeInclusionPolicy::Honor,
    }];
    let term = PodAffinityTerm {
        label_selector: Some(selector()),
        namespaces: vec!["a".into()],
        namespace_selector: Some(LabelSelector::default()),
        topology_key: "kubernetes.io/hostname".into(),
        match_label_keys: vec!["k".into()],
        mismatch_label_keys: vec!["m".into()],
    };
    pod.pod_affinity = Some(PodAffinity {
        required: vec![term.clone()],
        preferred: vec![],
    });
    pod.pod_anti_affinity = Some(PodAffinity {
        required: vec![],
        preferred: vec![WeightedPodAffinityTerm { weight: 10, term }],
    });
    pod.volume_requirements = vec![Requirement::new(
        "topology.kubernetes.io/zone",
        Operator::In,
        &["us-east-1a"],
    )];
    pod.host_ports = vec![HostPort {
        ip: "0.0.0.0".into(),
        port: 8080,
        protocol: Protocol::Udp,
    }];
    pod.do_not_disrupt = true;
    pod.phase = PodPhase::Running;
    pod.node_name = Some("node-1".into());
    pod.nominated_node_claim = Some("claim-1".into());
    pod.unschedulable = true;
    pod.created_at = at(1_700_000_000);
    pod
}

fn node_class() -> NodeClassRef {
    NodeClassRef {
        group: "karpenter.k8s.aws".into(),
        kind: "EC2NodeClass".into(),
        name: "default".into(),
    }
}

fn rich_node_pool() -> NodePool {
    NodePool {
        name: "gitlab-auto-nodepool".into(),
        weight: 10,
        labels: labels(&[("workload-type", "gitlab-runners-auto")]),
        annotations: labels(&[("a", "b")]),
        requirements: vec![Requirement {
            min_values: Some(2),
            ..Requirement::new(
                "karpenter.k8s.aws/instance-size",
                Operator::In,
                &["2xlarge", "4xlarge"],
            )
        }],
        taints: vec![Taint {
            key: "dedicated".into(),
            value: "gitlab-runner-auto".into(),
            effect: TaintEffect::NoSchedule,
        }],
        startup_taints: vec![Taint {
            key: "cilium".into(),
            value: String::new(),
            effect: TaintEffect::NoExecute,
        }],
        node_class_ref: node_class(),
        limits: Resources::new().with("cpu", 32_000).with("nodes", 10_000),
        expire_after: Some(Duration::from_secs(720 * 3600)),
        termination_grace_period: Some(Duration::from_secs(3600)),
        disruption: Disruption {
            consolidation_policy: ConsolidationPolicy::WhenEmptyOrUnderutilized,
            consolidate_after: None,
            budgets: vec![
                Budget {
                    nodes: BudgetNodes::Percent(10),
                    reasons: vec![],
                    schedule: None,
                    duration: None,
                },
                Budget {
                    nodes: BudgetNodes::Count(0),
                    reasons: vec![DisruptionReason::Drifted, DisruptionReason::Empty],
                    schedule: Some("0 9 * * 1-5".into()),
                    duration: Some(Duration::from_secs(8 * 3600)),
                },
            ],
        },
        ready: false,
        not_ready_reason: "EC2NodeClass default: SubnetsReady=False".into(),
    }
}

fn rich_node_claim() -> NodeClaim {
    let mut c = NodeClaim::new(
        "gitlab-auto-nodepool-x7k2p",
        "gitlab-auto-nodepool",
        node_class(),
    );
    c.labels = labels(&[("karpenter.sh/nodepool", "gitlab-auto-nodepool")]);
    c.annotations = labels(&[("karpenter.k8s.aws/ec2nodeclass-hash", "123")]);
    c.requirements = vec![Requirement::new(
        "node.kubernetes.io/instance-type",
        Operator::In,
        &["t3.2xlarge"],
    )];
    c.taints = rich_node_pool().taints;
    c.startup_taints = rich_node_pool().startup_taints;
    c.requests = Resources::new().with("cpu", 7000);
    c.expire_after = Some(Duration::from_secs(3600));
    c.provider_id = "aws:///us-east-1a/i-0abc".into();
    c.node_name = "ip-10-0-0-1".into();
    c.image_id = "ami-123".into();
    c.capacity = Resources::new().with("cpu", 8000);
    c.allocatable = Resources::new().with("cpu", 7910);
    c.conditions = BTreeSet::from([NodeClaimCondition::Launched, NodeClaimCondition::Registered]);
    c.deleting = true;
    c.created_at = at(1_700_000_100);
    c
}

fn rich_node() -> Node {
    Node {
        name: "ip-10-0-0-1".into(),
        provider_id: "aws:///us-east-1a/i-0abc".into(),
        labels: labels(&[("node.kubernetes.io/instance-type", "t3.2xlarge")]),
        taints: vec![Taint {
            key: "karpenter.sh/unregistered".into(),
            value: String::new(),
            effect: TaintEffect::NoExecute,
        }],
        capacity: Resources::new().with("cpu", 8000).with("pods", 58_000),
        allocatable: Resources::new().with("cpu", 7910),
        ready: true,
        unschedulable: true,
        deleting: false,
        do_not_disrupt: true,
        created_at: at(1_700_000_200),
    }
}

fn every_object() -> Vec<Object> {
    vec![
        Object::Pod(rich_pod()),
        Object::Pod(Pod::new("default", "minimal")),
        Object::Node(rich_node()),
        Object::NodeClaim(rich_node_claim()),
        Object::NodePool(rich_node_pool()),
        Object::DaemonSet(DaemonSet {
            key: ObjectKey::new("kube-system", "aws-node"),
            template: rich_pod(),
        }),
        Object::PodDisruptionBudget(PodDisruptionBudget {
            key: ObjectKey::new("web", "pdb"),
            selector: selector(),
            disruptions_allowed: 1,
        }),
        Object::Namespace(Namespace {
            name: "gitlab".into(),
            labels: labels(&[("team", "ci")]),
        }),
    ]
}

/// Through the wire format, not just the generated structs.
fn wire<M: Message + Default>(m: &M) -> M {
    M::decode(m.encode_to_vec().as_slice()).expect("decodes")
}

#[test]
fn every_object_round_trips() {
    for object in every_object() {
        let proto: p::Object = (&object).into();
        let back =
            Object::try_from(wire(&proto)).unwrap_or_else(|e| panic!("{:?}: {e}", object.kind()));
        assert_eq!(back, object);
    }
}

#[test]
fn batches_round_trip() {
    let mut changes: Vec<Change> = every_object().into_iter().map(Change::Upsert).collect();
    changes.push(Change::Delete {
        kind: ObjectKind::Pod,
        key: ObjectKey::new("gitlab", "runner-abc"),
    });
    changes.push(Change::Delete {
        kind: ObjectKind::Node,
        key: ObjectKey::new("", "ip-10-0-0-1"),
    });
    for kind in [
        BatchKind::Snapshot,
        BatchKind::SnapshotEnd,
        BatchKind::Delta,
    ] {
        let batch = Batch {
            sequence: 7,
            kind,
            changes: changes.clone(),
        };
        let proto: p::Batch = (&batch).into();
        assert_eq!(Batch::try_from(wire(&proto)).unwrap(), batch);
    }
}

#[test]
fn feedback_round_trips() {
    let feedback = Feedback {
        acknowledged: 42,
        nominations: vec![
            Nomination {
                pod: ObjectKey::new("a", "p1"),
                target: NominationTarget::Node("n1".into()),
            },
            Nomination {
                pod: ObjectKey::new("a", "p2"),
                target: NominationTarget::NodeClaim("c1".into()),
            },
        ],
        unschedulable: vec![Unschedulable {
            pod: ObjectKey::new("a", "p3"),
            reason: "no NodePool tolerates taint x".into(),
        }],
    };
    let proto: p::Feedback = (&feedback).into();
    assert_eq!(Feedback::try_from(wire(&proto)).unwrap(), feedback);
}

#[test]
fn cloud_messages_round_trip() {
    let it = InstanceType {
        name: "t3.2xlarge".into(),
        requirements: vec![Requirement::new(
            "karpenter.k8s.aws/instance-cpu",
            Operator::In,
            &["8"],
        )],
        capacity: Resources::new().with("cpu", 8000).with("memory", 32 << 30),
        overhead: Overhead {
            kube_reserved: Resources::new().with("cpu", 90),
            system_reserved: Resources::new(),
            eviction_threshold: Resources::new().with("memory", 100 << 20),
        },
        offerings: vec![
            Offering {
                zone: "us-east-1a".into(),
                capacity_type: CapacityType::OnDemand,
                price: 0.3328,
                available: true,
            },
            Offering {
                zone: "us-east-1b".into(),
                capacity_type: CapacityType::Spot,
                price: 0.1,
                available: false,
            },
        ],
    };
    let response = p::InstanceTypesResponse {
        instance_types: vec![(&it).into()],
    };
    assert_eq!(
        Vec::<InstanceType>::try_from(wire(&response)).unwrap(),
        vec![it]
    );

    let instance = Instance {
        node_claim: "c1".into(),
        provider_id: "aws:///us-east-1a/i-1".into(),
        instance_type: "t3.2xlarge".into(),
        zone: "us-east-1a".into(),
        capacity_type: CapacityType::Spot,
        image_id: "ami-1".into(),
        capacity: Resources::new().with("cpu", 8000),
        allocatable: Resources::new().with("cpu", 7910),
        labels: labels(&[("karpenter.sh/capacity-type", "spot")]),
        node_pool: "default".into(),
        price: 0.1234,
        state: berth_scheduler_core::model::InstanceState::Running,
        launched_at: at(5),
    };
    let proto: p::Instance = (&instance).into();
    assert_eq!(Instance::try_from(wire(&proto)).unwrap(), instance);

    for state in [TerminationState::Terminating, TerminationState::Terminated] {
        let proto: p::TerminateResponse = state.into();
        assert_eq!(TerminationState::try_from(wire(&proto)).unwrap(), state);
    }
}

#[track_caller]
fn refused<T: std::fmt::Debug>(result: Result<T, ConversionError>, field: &str) {
    match result {
        Err(e) => assert_eq!(e.field, field, "{e}"),
        Ok(v) => panic!("accepted {v:?}, expected an error at {field}"),
    }
}

#[test]
fn invalid_messages_name_the_field() {
    let mut pod: p::Pod = (&rich_pod()).into();
    pod.tolerations[1].operator = 0;
    refused(Pod::try_from(pod), "pod.tolerations[1].operator");

    let mut pod: p::Pod = (&rich_pod()).into();
    pod.node_affinity.as_mut().unwrap().required[0].match_expressions[0].operator = 99;
    refused(
        Pod::try_from(pod),
        "pod.node_affinity.required[0].match_expressions[0].operator",
    );

    let mut pod: p::Pod = (&rich_pod()).into();
    pod.containers[0].milli.insert("cpu".into(), -5);
    refused(Pod::try_from(pod), "pod.containers[0][cpu]");

    let mut pod: p::Pod = (&rich_pod()).into();
    pod.host_ports[0].port = 70_000;
    refused(Pod::try_from(pod), "pod.host_ports[0].port");

    let mut pod: p::Pod = (&rich_pod()).into();
    pod.key = None;
    refused(Pod::try_from(pod), "pod.key");

    let mut pod: p::Pod = (&rich_pod()).into();
    pod.topology_spread[0].max_skew = 0;
    refused(Pod::try_from(pod), "pod.topology_spread[0].max_skew");

    let mut pool: p::NodePool = (&rich_node_pool()).into();
    pool.node_class_ref.as_mut().unwrap().kind.clear();
    refused(NodePool::try_from(pool), "node_pool.node_class_ref.kind");

    let mut pool: p::NodePool = (&rich_node_pool()).into();
    pool.disruption.as_mut().unwrap().budgets[0].nodes = Some(p::budget::Nodes::Percent(150));
    refused(
        NodePool::try_from(pool),
        "node_pool.disruption.budgets[0].percent",
    );

    let mut pool: p::NodePool = (&rich_node_pool()).into();
    pool.disruption = None;
    refused(NodePool::try_from(pool), "node_pool.disruption");

    let mut claim: p::NodeClaim = (&rich_node_claim()).into();
    claim.conditions.push(0);
    refused(NodeClaim::try_from(claim), "node_claim.conditions[2]");

    let mut it: p::InstanceType = (&InstanceType {
        name: "x".into(),
        requirements: vec![],
        capacity: Resources::new(),
        overhead: Overhead::default(),
        offerings: vec![Offering {
            zone: "a".into(),
            capacity_type: CapacityType::Spot,
            price: 1.0,
            available: true,
        }],
    })
        .into();
    it.offerings[0].price = f64::NAN;
    refused(
        InstanceType::try_from(it),
        "instance_type.offerings[0].price",
    );

    let batch = p::Batch {
        sequence: 1,
        kind: p::BatchKind::Delta as i32,
        changes: vec![p::Change {
            change: Some(p::change::Change::Upsert(p::Object { object: None })),
        }],
    };
    refused(Batch::try_from(batch), "batch.changes[0].upsert.object");

    let batch = p::Batch {
        sequence: 1,
        kind: 0,
        changes: vec![],
    };
    refused(Batch::try_from(batch), "batch.kind");

    let mut deep: p::Batch = (&Batch {
        sequence: 3,
        kind: BatchKind::Delta,
        changes: vec![Change::Upsert(Object::DaemonSet(DaemonSet {
            key: ObjectKey::new("a", "b"),
            template: rich_pod(),
        }))],
    })
        .into();
    if let Some(p::change::Change::Upsert(p::Object {
        object: Some(p::object::Object::DaemonSet(ds)),
    })) = &mut deep.changes[0].change
    {
        ds.template
            .as_mut()
            .unwrap()
            .pod_anti_affinity
            .as_mut()
            .unwrap()
            .preferred[0]
            .term
            .as_mut()
            .unwrap()
            .topology_key
            .clear();
    }
    refused(
        Batch::try_from(deep),
        "batch.changes[0].upsert.daemon_set.template.pod_anti_affinity.preferred[0].term.topology_key",
    );
}

#[test]
fn cloud_errors_survive_a_status() {
    let errors = [
        CloudError::NotFound {
            what: "nodeclaim c1".into(),
        },
        CloudError::InsufficientCapacity {
            offerings: vec![UnavailableOffering {
                instance_type: "t3.2xlarge".into(),
                zone: "us-east-1a".into(),
                capacity_type: CapacityType::Spot,
            }],
        },
        CloudError::NodeClassNotReady {
            reason: "no subnets match tags".into(),
        },
        CloudError::Launch {
            code: "VcpuLimitExceeded".into(),
            message: "raise your quota".into(),
        },
        CloudError::InvalidArgument {
            field: "node_claim.name".into(),
            message: "required".into(),
        },
        CloudError::Unavailable {
            message: "EC2 timed out".into(),
        },
    ];
    for e in errors {
        let s = status::to_status(&e);
        assert_eq!(s.code(), status::code(&e));
        // tests/grpc.rs checks the same through real HTTP/2 trailers.
        assert_eq!(status::from_status(&s), e);
    }
}

#[test]
fn foreign_statuses_map_by_code() {
    let s = tonic::Status::not_found("no such instance");
    assert_eq!(
        status::from_status(&s),
        CloudError::NotFound {
            what: "no such instance".into()
        }
    );
    let s = tonic::Status::deadline_exceeded("slow");
    assert!(matches!(
        status::from_status(&s),
        CloudError::Unavailable { .. }
    ));
}

#[test]
fn blocked_nodes_carry_their_kind_and_the_cores_words() {
    use berth_scheduler_core::disruption::{BlockReason, Blocked};
    let blocked = vec![
        Blocked {
            node: "n1".into(),
            node_pool: "default".into(),
            reason: BlockReason::PodDoNotDisrupt {
                pod: ObjectKey::new("ci", "build-1"),
            },
        },
        Blocked {
            node: "n2".into(),
            node_pool: "default".into(),
            reason: BlockReason::NotConsolidatable {
                why: "its pods fit nowhere else".into(),
            },
        },
    ];
    let r = p::DisruptionBlockedRequest::from(blocked.as_slice());
    assert_eq!(r.blocked.len(), 2);
    assert_eq!(r.blocked[0].node, "n1");
    assert_eq!(r.blocked[0].kind(), p::DisruptionBlockKind::PodDoNotDisrupt);
    assert_eq!(
        r.blocked[0].message,
        "pod ci/build-1 has karpenter.sh/do-not-disrupt: \"true\""
    );
    assert_eq!(
        r.blocked[1].kind(),
        p::DisruptionBlockKind::NotConsolidatable
    );
    assert_eq!(r.blocked[1].message, "its pods fit nowhere else");
}
