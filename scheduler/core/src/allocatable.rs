//! Capacity and overhead of an instance type, by Karpenter's formulas — the one
//! implementation shared by the scheduler core, `berth plan`'s catalog and the actuator.
//!
//! - memory capacity: the instance's memory less the VM overhead (default 7.5 %);
//! - pods: ENI-limited `ENIs · (IPv4 per ENI − 1) + 2`, unless the kubelet's `maxPods` says
//!   otherwise, capped by `podsPerCore · vCPUs` when that is set;
//! - kube-reserved: memory `11 MiB · pods + 255 MiB`; CPU 6 % of the first core, 1 % of the
//!   second, 0.5 % of cores 3–4 and 0.25 % of the rest; ephemeral storage 1 Gi;
//! - eviction threshold: memory 100 Mi, root filesystem 10 % (the kubelet's `evictionHard`
//!   and `evictionSoft` override, the larger of the two winning);
//! - explicit `kubeReserved` / `systemReserved` entries replace the defaults they name.

use std::collections::BTreeMap;

use crate::model::{Overhead, Resources, resource};

const MI: i64 = 1 << 20;
const GI: i64 = 1 << 30;

/// Raw facts about an instance type.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceFacts {
    pub vcpus: u32,
    pub memory_mib: u64,
    pub max_enis: u32,
    pub ipv4_per_eni: u32,
    /// Root volume size in bytes (ephemeral-storage capacity).
    pub ephemeral_storage_bytes: i64,
    /// Accelerators and other extended resources, in whole units (`nvidia.com/gpu: 4`).
    pub extended: BTreeMap<String, i64>,
}

/// An eviction threshold: an absolute amount (milli-units) or a share of capacity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Threshold {
    Milli(i64),
    Percent(f64),
}

impl Threshold {
    fn resolve(self, capacity_milli: i64) -> i64 {
        match self {
            Threshold::Milli(m) => m,
            Threshold::Percent(p) => ((capacity_milli as f64) * p / 100.0).ceil() as i64,
        }
    }

    /// Parses `100Mi` or `10%`.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.strip_suffix('%') {
            Some(p) => p
                .parse::<f64>()
                .map(Threshold::Percent)
                .map_err(|_| format!("{s:?} is not a percentage")),
            None => crate::quantity::parse_milli(s)
                .map(Threshold::Milli)
                .map_err(|e| e.to_string()),
        }
    }
}

/// The kubelet settings that change allocatable (an EC2NodeClass's `kubelet` block).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KubeletSettings {
    pub max_pods: Option<u32>,
    pub pods_per_core: Option<u32>,
    pub kube_reserved: Resources,
    pub system_reserved: Resources,
    /// Keyed by eviction signal (`memory.available`, `nodefs.available`, ...).
    pub eviction_hard: BTreeMap<String, Threshold>,
    pub eviction_soft: BTreeMap<String, Threshold>,
}

/// Root volume assumed when the EC2NodeClass does not say (AL2/AL2023's 20 GiB).
pub const DEFAULT_ROOT_VOLUME_BYTES: i64 = 20 << 30;

/// Karpenter's default VM memory overhead.
pub const DEFAULT_VM_MEMORY_OVERHEAD_PERCENT: f64 = 7.5;

/// The ENI-limited pod count.
pub fn eni_limited_pods(max_enis: u32, ipv4_per_eni: u32) -> u32 {
    max_enis
        .saturating_mul(ipv4_per_eni.saturating_sub(1))
        .saturating_add(2)
}

/// Pods a node may run under `kubelet`.
pub fn max_pods(facts: &InstanceFacts, kubelet: &KubeletSettings) -> u32 {
    let pods = kubelet
        .max_pods
        .unwrap_or_else(|| eni_limited_pods(facts.max_enis, facts.ipv4_per_eni));
    match kubelet.pods_per_core {
        Some(per_core) if per_core > 0 => pods.min(per_core.saturating_mul(facts.vcpus)),
        _ => pods,
    }
}

/// Kube-reserved CPU in millicores: 6 % of the first core, 1 % of the second, 0.5 % of cores
/// 3–4, 0.25 % beyond.
pub fn kube_reserved_cpu_milli(vcpus: u32) -> i64 {
    // In hundredths of a millicore to stay exact: 0.25 % of a core is 2.5 m.
    let mut centi = 0i64;
    for core in 1..=i64::from(vcpus) {
        centi += match core {
            1 => 6000,
            2 => 1000,
            3 | 4 => 500,
            _ => 250,
        };
    }
    (centi + 99) / 100
}

/// Capacity and overhead of one instance type.
pub fn capacity_and_overhead(
    facts: &InstanceFacts,
    kubelet: &KubeletSettings,
    vm_memory_overhead_percent: f64,
) -> (Resources, Overhead) {
    let memory_mib = facts.memory_mib as f64;
    let overhead_mib = (memory_mib * vm_memory_overhead_percent / 100.0).ceil();
    let memory = ((memory_mib - overhead_mib).max(0.0) as i64) * MI * 1000;
    let pods = max_pods(facts, kubelet);
    let mut capacity = Resources::new()
        .with(resource::CPU, i64::from(facts.vcpus) * 1000)
        .with(resource::MEMORY, memory)
        .with(resource::PODS, i64::from(pods) * 1000)
        .with(
            resource::EPHEMERAL_STORAGE,
            facts.ephemeral_storage_bytes * 1000,
        );
    for (name, units) in &facts.extended {
        capacity.set(name, units * 1000);
    }

    let mut kube_reserved = Resources::new()
        .with(resource::CPU, kube_reserved_cpu_milli(facts.vcpus))
        .with(
            resource::MEMORY,
            (11 * i64::from(pods) * MI + 255 * MI) * 1000,
        )
        .with(resource::EPHEMERAL_STORAGE, GI * 1000);
    for (name, milli) in kubelet.kube_reserved.iter() {
        kube_reserved.set(name, milli);
    }

    let signal = |name: &str, default: Threshold| {
        let hard = kubelet.eviction_hard.get(name).copied().unwrap_or(
            if kubelet.eviction_hard.is_empty() {
                default
            } else {
                Threshold::Milli(0)
            },
        );
        let soft = kubelet.eviction_soft.get(name).copied();
        (hard, soft)
    };
    let resolve = |(hard, soft): (Threshold, Option<Threshold>), cap: i64| {
        let h = hard.resolve(cap);
        soft.map_or(h, |s| h.max(s.resolve(cap)))
    };
    let memory_signal = signal("memory.available", Threshold::Milli(100 * MI * 1000));
    let nodefs_signal = signal("nodefs.available", Threshold::Percent(10.0));
    let eviction_threshold = Resources::new()
        .with(
            resource::MEMORY,
            resolve(memory_signal, capacity.get(resource::MEMORY)),
        )
        .with(
            resource::EPHEMERAL_STORAGE,
            resolve(nodefs_signal, capacity.get(resource::EPHEMERAL_STORAGE)),
        );

    (
        capacity,
        Overhead {
            kube_reserved,
            system_reserved: kubelet.system_reserved.clone(),
            eviction_threshold,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::InstanceType;

    fn t3_2xlarge() -> InstanceFacts {
        InstanceFacts {
            vcpus: 8,
            memory_mib: 32768,
            max_enis: 4,
            ipv4_per_eni: 15,
            ephemeral_storage_bytes: 20 * GI,
            extended: BTreeMap::new(),
        }
    }

    #[test]
    fn karpenter_defaults_for_t3_2xlarge() {
        let facts = t3_2xlarge();
        let (capacity, overhead) = capacity_and_overhead(
            &facts,
            &KubeletSettings::default(),
            DEFAULT_VM_MEMORY_OVERHEAD_PERCENT,
        );
        // 4 ENIs × 14 + 2 = 58 pods.
        assert_eq!(capacity.get("pods"), 58_000);
        assert_eq!(capacity.get("cpu"), 8000);
        // 32768 MiB − ceil(7.5 %) = 32768 − 2458 = 30310 MiB.
        assert_eq!(capacity.get("memory"), 30310 * MI * 1000);
        // 60 + 10 + 5 + 5 + 4 × 2.5 = 90 m.
        assert_eq!(overhead.kube_reserved.get("cpu"), 90);
        // 11 × 58 + 255 = 893 MiB.
        assert_eq!(overhead.kube_reserved.get("memory"), 893 * MI * 1000);
        assert_eq!(overhead.eviction_threshold.get("memory"), 100 * MI * 1000);
        assert_eq!(
            overhead.eviction_threshold.get("ephemeral-storage"),
            2 * GI * 1000
        );
        let it = InstanceType {
            name: "t3.2xlarge".into(),
            requirements: vec![],
            capacity,
            overhead,
            offerings: vec![],
        };
        assert_eq!(it.allocatable().get("cpu"), 7910);
        assert_eq!(
            it.allocatable().get("memory"),
            (30310 - 893 - 100) * MI * 1000
        );
    }

    #[test]
    fn cpu_reservation_steps() {
        assert_eq!(kube_reserved_cpu_milli(1), 60);
        assert_eq!(kube_reserved_cpu_milli(2), 70);
        assert_eq!(kube_reserved_cpu_milli(4), 80);
        assert_eq!(kube_reserved_cpu_milli(5), 83); // 82.5 rounded up
        assert_eq!(kube_reserved_cpu_milli(96), 310);
    }

    #[test]
    fn kubelet_overrides() {
        let facts = t3_2xlarge();
        let kubelet = KubeletSettings {
            max_pods: Some(110),
            pods_per_core: Some(10),
            kube_reserved: Resources::new().with("cpu", 200),
            system_reserved: Resources::new().with("memory", 100 * MI * 1000),
            eviction_hard: [(
                "memory.available".to_owned(),
                Threshold::Milli(200 * MI * 1000),
            )]
            .into(),
            eviction_soft: [("memory.available".to_owned(), Threshold::Percent(1.0))].into(),
        };
        let (capacity, overhead) =
            capacity_and_overhead(&facts, &kubelet, DEFAULT_VM_MEMORY_OVERHEAD_PERCENT);
        assert_eq!(capacity.get("pods"), 80_000, "podsPerCore caps maxPods");
        assert_eq!(overhead.kube_reserved.get("cpu"), 200);
        assert_eq!(
            overhead.kube_reserved.get("memory"),
            (11 * 80 + 255) * MI * 1000
        );
        assert_eq!(overhead.system_reserved.get("memory"), 100 * MI * 1000);
        // max(200Mi, 1 % of 30310Mi = 303.1Mi)
        assert_eq!(
            overhead.eviction_threshold.get("memory"),
            (30310 * MI * 1000) / 100
        );
        // evictionHard given without nodefs: no nodefs threshold.
        assert_eq!(overhead.eviction_threshold.get("ephemeral-storage"), 0);
    }

    #[test]
    fn thresholds_parse() {
        assert_eq!(
            Threshold::parse("100Mi"),
            Ok(Threshold::Milli(100 * MI * 1000))
        );
        assert_eq!(Threshold::parse("10%"), Ok(Threshold::Percent(10.0)));
        assert!(Threshold::parse("ten").is_err());
    }
}
