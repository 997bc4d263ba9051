//! Benchmark workloads, generated from their description in `../shared/design/BENCHMARKS.md`.

use std::time::SystemTime;

use berth_scheduler_core::labels;
use berth_scheduler_core::model::*;
use berth_scheduler_core::solver::{NodePoolInput, SchedulingInput};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const GI: i64 = 1 << 30;
const MI: i64 = 1 << 20;

/// Karpenter's benchmark instance types: type i has i+1 vCPU, 2(i+1) GiB, 10(i+1) pods, amd64
/// linux; spot in zone-1 and zone-2, on-demand in zone-1..3; price 0.1·vCPU + 0.1·GB. No
/// overhead (Karpenter's fake types carry none worth modelling here).
fn karpenter_types() -> Vec<InstanceType> {
    (0..400)
        .map(|i| {
            let n = i64::from(i) + 1;
            let memory = 2 * n * GI;
            let price = 0.1 * n as f64 + 0.1 * (memory as f64 / 1e9);
            let mut offerings = Vec::new();
            for zone in ["zone-1", "zone-2"] {
                offerings.push(Offering {
                    zone: zone.into(),
                    capacity_type: CapacityType::Spot,
                    price,
                    available: true,
                });
            }
            for zone in ["zone-1", "zone-2", "zone-3"] {
                offerings.push(Offering {
                    zone: zone.into(),
                    capacity_type: CapacityType::OnDemand,
                    price,
                    available: true,
                });
            }
            InstanceType {
                name: format!("fake-it-{i}"),
                requirements: vec![
                    Requirement::new(labels::ARCH, Operator::In, &["amd64"]),
                    Requirement::new(labels::OS, Operator::In, &["linux"]),
                ],
                capacity: Resources::new()
                    .with(resource::CPU, n * 1000)
                    .with(resource::MEMORY, memory * 1000)
                    .with(resource::PODS, 10 * n * 1000),
                overhead: Overhead::default(),
                offerings,
            }
        })
        .collect()
}

fn node_pool() -> NodePool {
    NodePool {
        name: "default".into(),
        weight: 0,
        labels: Labels::new(),
        annotations: Labels::new(),
        requirements: vec![],
        taints: vec![],
        startup_taints: vec![],
        node_class_ref: NodeClassRef {
            group: "karpenter.k8s.aws".into(),
            kind: "EC2NodeClass".into(),
            name: "default".into(),
        },
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

fn value(rng: &mut StdRng) -> String {
    ((b'a' + rng.random_range(0..7u8)) as char).to_string()
}

fn requests(rng: &mut StdRng) -> Resources {
    const CPU: [i64; 5] = [100, 250, 500, 1000, 1500];
    const MEM_MI: [i64; 6] = [100, 256, 512, 1024, 2048, 4096];
    Resources::new()
        .with(resource::CPU, CPU[rng.random_range(0..5)])
        .with(resource::MEMORY, MEM_MI[rng.random_range(0..6)] * MI * 1000)
}

fn selector(key: &str, value: String) -> LabelSelector {
    LabelSelector {
        match_labels: [(key.to_owned(), value)].into(),
        match_expressions: vec![],
    }
}

fn spread(key: &str, sel: LabelSelector) -> TopologySpreadConstraint {
    TopologySpreadConstraint {
        max_skew: 1,
        topology_key: key.into(),
        when_unsatisfiable: WhenUnsatisfiable::DoNotSchedule,
        label_selector: Some(sel),
        min_domains: None,
        match_label_keys: vec![],
        node_affinity_policy: NodeInclusionPolicy::Honor,
        node_taints_policy: NodeInclusionPolicy::Ignore,
    }
}

fn karpenter_pods(n: usize, seed: u64, generic_only: bool) -> Vec<Pod> {
    let mut rng = StdRng::seed_from_u64(seed);
    let part = n / 5;
    (0..n)
        .map(|i| {
            let mut p = Pod::new("default", &format!("pod-{i:06}"));
            p.unschedulable = true;
            p.containers = vec![requests(&mut rng)];
            let kind = if generic_only || i >= 5 * part {
                0
            } else {
                i / part
            };
            match kind {
                1 | 2 => {
                    p.labels.insert("my-label".into(), value(&mut rng));
                    let key = if kind == 1 {
                        labels::TOPOLOGY_ZONE
                    } else {
                        labels::HOSTNAME
                    };
                    p.topology_spread = vec![spread(key, selector("my-label", value(&mut rng)))];
                }
                3 => {
                    let v = value(&mut rng);
                    p.labels.insert("my-affininity".into(), v.clone());
                    p.pod_affinity = Some(PodAffinity {
                        required: vec![PodAffinityTerm {
                            label_selector: Some(selector("my-affininity", v)),
                            topology_key: labels::TOPOLOGY_ZONE.into(),
                            ..Default::default()
                        }],
                        preferred: vec![],
                    });
                }
                4 => {
                    p.labels.insert("app".into(), "nginx".into());
                    p.pod_anti_affinity = Some(PodAffinity {
                        required: vec![PodAffinityTerm {
                            label_selector: Some(selector("app", "nginx".into())),
                            topology_key: labels::HOSTNAME.into(),
                            ..Default::default()
                        }],
                        preferred: vec![],
                    });
                }
                _ => {
                    p.labels.insert("my-label".into(), value(&mut rng));
                }
            }
            p
        })
        .collect()
}

fn input(pods: Vec<Pod>) -> SchedulingInput {
    SchedulingInput {
        now: SystemTime::UNIX_EPOCH,
        node_pools: vec![NodePoolInput {
            node_pool: node_pool(),
            instance_types: karpenter_types(),
        }],
        nodes: vec![],
        node_claims: vec![],
        daemon_sets: vec![],
        pods,
        pod_disruption_budgets: vec![],
        namespaces: vec![],
    }
}

pub fn karpenter_mix(n: usize, seed: u64) -> SchedulingInput {
    input(karpenter_pods(n, seed, false))
}

/// The same pods' requests with every pod generic, for the cost ratio target.
pub fn karpenter_mix_generic_only(n: usize, seed: u64) -> SchedulingInput {
    input(karpenter_pods(n, seed, true))
}

/// `catalog-mix`: the real EC2 catalog, one NodePool (families c, m, r of generation > 4,
/// amd64 and arm64, on-demand and spot), two DaemonSets, and 200 Deployments with heavy-tailed
/// replica counts scaled to `n` pods; requests in the ratios of web (2 GiB/CPU), batch
/// (1 GiB/CPU) and memory-heavy (8 GiB/CPU) services, 100m–8 CPU and 128Mi–32Gi. A few
/// Deployments spread on zone; a few use hostname anti-affinity.
pub fn catalog_mix(n: usize, seed: u64, catalog: &berth_catalog::Catalog) -> SchedulingInput {
    use berth_scheduler_core::allocatable::KubeletSettings;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut pool = node_pool();
    pool.requirements = vec![
        Requirement::new(labels::INSTANCE_CATEGORY, Operator::In, &["c", "m", "r"]),
        Requirement::new(labels::INSTANCE_GENERATION, Operator::Gt, &["4"]),
        Requirement::new(labels::ARCH, Operator::In, &["amd64", "arm64"]),
        Requirement::new(labels::CAPACITY_TYPE, Operator::In, &["on-demand", "spot"]),
    ];
    let types = catalog.instance_types(
        &KubeletSettings::default(),
        berth_catalog::DEFAULT_ROOT_VOLUME_BYTES,
    );

    struct Deployment {
        replicas: f64,
        cpu: i64,
        memory: i64,
        spread: bool,
        anti: bool,
    }
    const CPUS: [i64; 8] = [100, 250, 250, 500, 500, 1000, 2000, 8000];
    let mut deployments: Vec<Deployment> = (0..200)
        .map(|i| {
            let tail = rng.random_range(0..100) < 4;
            let replicas = if tail {
                rng.random_range(500..1500)
            } else {
                rng.random_range(1..=20)
            } as f64;
            let cpu = CPUS[rng.random_range(0..CPUS.len())];
            let gib_per_cpu = match rng.random_range(0..100) {
                0..60 => 2.0,
                60..85 => 1.0,
                _ => 8.0,
            };
            let memory =
                ((cpu as f64 / 1000.0 * gib_per_cpu * 1024.0) as i64).clamp(128, 32 * 1024) * MI;
            let anti = !tail && i % 37 == 5;
            let spread = !anti && i % 23 == 7;
            Deployment {
                replicas,
                cpu,
                memory,
                spread,
                anti,
            }
        })
        .collect();
    let total: f64 = deployments.iter().map(|d| d.replicas).sum();
    let scale = n as f64 / total;
    for d in &mut deployments {
        d.replicas = (d.replicas * scale).round().max(1.0);
        if d.anti {
            d.replicas = d.replicas.min(30.0);
        }
    }
    // Rounding leaves the total off by a little: the largest Deployment takes the difference.
    let sum: f64 = deployments.iter().map(|d| d.replicas).sum();
    if let Some(largest) = deployments
        .iter_mut()
        .filter(|d| !d.anti)
        .max_by(|a, b| a.replicas.total_cmp(&b.replicas))
    {
        largest.replicas = (largest.replicas + n as f64 - sum).max(1.0);
    }
    let mut pods = Vec::new();
    for (i, d) in deployments.iter().enumerate() {
        let app = format!("app-{i:03}");
        for r in 0..d.replicas as usize {
            if pods.len() >= n {
                break;
            }
            let mut p = Pod::new("default", &format!("{app}-{r}"));
            p.unschedulable = true;
            p.labels.insert("app".into(), app.clone());
            p.owner = Some(OwnerReference {
                kind: "ReplicaSet".into(),
                name: app.clone(),
                uid: app.clone(),
            });
            p.containers = vec![
                Resources::new()
                    .with(resource::CPU, d.cpu)
                    .with(resource::MEMORY, d.memory * 1000),
            ];
            if d.spread {
                p.topology_spread =
                    vec![spread(labels::TOPOLOGY_ZONE, selector("app", app.clone()))];
            }
            if d.anti {
                p.pod_anti_affinity = Some(PodAffinity {
                    required: vec![PodAffinityTerm {
                        label_selector: Some(selector("app", app.clone())),
                        topology_key: labels::HOSTNAME.into(),
                        ..Default::default()
                    }],
                    preferred: vec![],
                });
            }
            pods.push(p);
        }
    }
    let daemon = |name: &str, cpu: i64, mem_mi: i64| {
        let mut template = Pod::new("kube-system", name);
        template.containers = vec![
            Resources::new()
                .with(resource::CPU, cpu)
                .with(resource::MEMORY, mem_mi * MI * 1000),
        ];
        DaemonSet {
            key: ObjectKey::new("kube-system", name),
            template,
        }
    };
    SchedulingInput {
        now: SystemTime::UNIX_EPOCH,
        node_pools: vec![NodePoolInput {
            node_pool: pool,
            instance_types: types,
        }],
        nodes: vec![],
        node_claims: vec![],
        daemon_sets: vec![
            daemon("log-agent", 100, 128),
            daemon("metrics-agent", 200, 256),
        ],
        pods,
        pod_disruption_budgets: vec![],
        namespaces: vec![],
    }
}
