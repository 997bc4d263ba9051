//! Well-known labels, annotations, taints and finalizers, spelled as Karpenter and Kubernetes
//! spell them, so a Karpenter user's selectors and tolerations keep working.
//!
//! They live in the pure core because scheduling reasons about them (zone, capacity type,
//! instance-type facts); `berth-api` re-exports this module as `berth_api::labels`.

/// Karpenter's API group for NodePool and NodeClaim.
pub const KARPENTER_GROUP: &str = "karpenter.sh";
/// The AWS provider's API group for EC2NodeClass.
pub const KARPENTER_AWS_GROUP: &str = "karpenter.k8s.aws";

// ---- karpenter.sh ----------------------------------------------------------------------

/// Label on every node and NodeClaim naming the NodePool that created it.
pub const NODE_POOL: &str = "karpenter.sh/nodepool";
/// Label: `spot`, `on-demand` (or `reserved`).
pub const CAPACITY_TYPE: &str = "karpenter.sh/capacity-type";
/// Label set once a node's NodeClaim has registered.
pub const NODE_REGISTERED: &str = "karpenter.sh/registered";
/// Label set once a node is initialized (ready, startup taints gone, resources registered).
pub const NODE_INITIALIZED: &str = "karpenter.sh/initialized";
/// Annotation on a pod or node: `"true"` forbids voluntary disruption.
pub const DO_NOT_DISRUPT: &str = "karpenter.sh/do-not-disrupt";
/// Annotation on NodePools: hash of the template, for drift detection.
pub const NODE_POOL_HASH: &str = "karpenter.sh/nodepool-hash";
/// Annotation on NodePools: version of the hashing scheme.
pub const NODE_POOL_HASH_VERSION: &str = "karpenter.sh/nodepool-hash-version";
/// Annotation on a node/NodeClaim carrying the deadline by which it must be gone.
pub const NODE_CLAIM_TERMINATION_TIMESTAMP: &str = "karpenter.sh/nodeclaim-termination-timestamp";
/// Annotation on a NodeClaim: the NodePool's `kubelet` block carried over from v1beta1.
pub const KUBELET_COMPATIBILITY: &str = "compatibility.karpenter.sh/v1beta1-kubelet-conversion";
/// Annotation on a NodeClaim: the v1beta1 nodeClassRef kept for round-trips.
pub const NODE_CLASS_REFERENCE_COMPATIBILITY: &str =
    "compatibility.karpenter.sh/v1beta1-nodeclass-reference";
/// Finalizer that holds NodeClaims and Nodes until their instance is terminated.
pub const TERMINATION_FINALIZER: &str = "karpenter.sh/termination";
/// Taint (NoSchedule) put on a node Karpenter is disrupting.
/// Annotations the actuator records an in-flight disruption decision with, on each candidate
/// NodeClaim: the decision survives any restart (Berth's own; Karpenter keeps its queue in
/// memory and rolls back on a restart).
pub const DISRUPTION_ID: &str = "disruption.berth.dev/id";
pub const DISRUPTION_METHOD: &str = "disruption.berth.dev/method";
/// Comma-separated names of the replacement NodeClaims.
pub const DISRUPTION_REPLACEMENTS: &str = "disruption.berth.dev/replacements";
/// RFC 3339 time the decision was recorded.
pub const DISRUPTION_STARTED: &str = "disruption.berth.dev/started-at";
/// USD per hour the decision saves, and why it was made (for the actuator's events).
pub const DISRUPTION_SAVINGS: &str = "disruption.berth.dev/savings-per-hour";
pub const DISRUPTION_REASON: &str = "disruption.berth.dev/reason";
pub const DISRUPTED_TAINT_KEY: &str = "karpenter.sh/disrupted";
/// Taint (NoExecute) a node carries until its NodeClaim has registered it.
pub const UNREGISTERED_TAINT_KEY: &str = "karpenter.sh/unregistered";

// ---- karpenter.k8s.aws (instance facts) ------------------------------------------------

/// Annotation on NodeClaims: hash of the EC2NodeClass, for drift detection.
pub const EC2_NODE_CLASS_HASH: &str = "karpenter.k8s.aws/ec2nodeclass-hash";
/// Annotation on NodeClaims: the version of that hash; a hash of another version is not
/// compared (no drift from a changed hashing).
pub const EC2_NODE_CLASS_HASH_VERSION: &str = "karpenter.k8s.aws/ec2nodeclass-hash-version";
/// Label naming the EC2NodeClass a node was launched from.
pub const EC2_NODE_CLASS: &str = "karpenter.k8s.aws/ec2nodeclass";
pub const INSTANCE_HYPERVISOR: &str = "karpenter.k8s.aws/instance-hypervisor";
pub const INSTANCE_ENCRYPTION_IN_TRANSIT_SUPPORTED: &str =
    "karpenter.k8s.aws/instance-encryption-in-transit-supported";
pub const INSTANCE_CATEGORY: &str = "karpenter.k8s.aws/instance-category";
pub const INSTANCE_FAMILY: &str = "karpenter.k8s.aws/instance-family";
pub const INSTANCE_GENERATION: &str = "karpenter.k8s.aws/instance-generation";
pub const INSTANCE_LOCAL_NVME: &str = "karpenter.k8s.aws/instance-local-nvme";
pub const INSTANCE_SIZE: &str = "karpenter.k8s.aws/instance-size";
pub const INSTANCE_CPU: &str = "karpenter.k8s.aws/instance-cpu";
pub const INSTANCE_CPU_MANUFACTURER: &str = "karpenter.k8s.aws/instance-cpu-manufacturer";
pub const INSTANCE_CPU_SUSTAINED_CLOCK_SPEED_MHZ: &str =
    "karpenter.k8s.aws/instance-cpu-sustained-clock-speed-mhz";
pub const INSTANCE_MEMORY: &str = "karpenter.k8s.aws/instance-memory";
pub const INSTANCE_EBS_BANDWIDTH: &str = "karpenter.k8s.aws/instance-ebs-bandwidth";
pub const INSTANCE_NETWORK_BANDWIDTH: &str = "karpenter.k8s.aws/instance-network-bandwidth";
pub const INSTANCE_GPU_NAME: &str = "karpenter.k8s.aws/instance-gpu-name";
pub const INSTANCE_GPU_MANUFACTURER: &str = "karpenter.k8s.aws/instance-gpu-manufacturer";
pub const INSTANCE_GPU_COUNT: &str = "karpenter.k8s.aws/instance-gpu-count";
pub const INSTANCE_GPU_MEMORY: &str = "karpenter.k8s.aws/instance-gpu-memory";
pub const INSTANCE_ACCELERATOR_NAME: &str = "karpenter.k8s.aws/instance-accelerator-name";
pub const INSTANCE_ACCELERATOR_MANUFACTURER: &str =
    "karpenter.k8s.aws/instance-accelerator-manufacturer";
pub const INSTANCE_ACCELERATOR_COUNT: &str = "karpenter.k8s.aws/instance-accelerator-count";

// ---- Kubernetes --------------------------------------------------------------------------

pub const TOPOLOGY_ZONE: &str = "topology.kubernetes.io/zone";
pub const TOPOLOGY_REGION: &str = "topology.kubernetes.io/region";
pub const ZONE_ID: &str = "topology.k8s.aws/zone-id";
pub const INSTANCE_TYPE: &str = "node.kubernetes.io/instance-type";
pub const ARCH: &str = "kubernetes.io/arch";
/// `kubernetes.io/arch` values.
pub const ARCH_AMD64: &str = "amd64";
pub const ARCH_ARM64: &str = "arm64";
pub const OS: &str = "kubernetes.io/os";
pub const HOSTNAME: &str = "kubernetes.io/hostname";
pub const WINDOWS_BUILD: &str = "node.kubernetes.io/windows-build";
/// Deprecated beta spellings that Kubernetes still sets on nodes.
pub const ZONE_BETA: &str = "failure-domain.beta.kubernetes.io/zone";
pub const REGION_BETA: &str = "failure-domain.beta.kubernetes.io/region";
pub const INSTANCE_TYPE_BETA: &str = "beta.kubernetes.io/instance-type";
pub const ARCH_BETA: &str = "beta.kubernetes.io/arch";
pub const OS_BETA: &str = "beta.kubernetes.io/os";

/// Tag and label naming the NodeClaim an instance was launched for.
pub const NODE_CLAIM: &str = "karpenter.sh/nodeclaim";

/// Whether the kubelet may not set `key` on its own node (the NodeRestriction admission
/// plugin): labels in the `kubernetes.io` and `k8s.io` domains other than the well-known ones
/// the kubelet owns. Such labels are applied when the node registers instead.
pub fn is_restricted_for_kubelet(key: &str) -> bool {
    let Some((domain, _)) = key.split_once('/') else {
        return false;
    };
    if domain == "node-restriction.kubernetes.io"
        || domain.ends_with(".node-restriction.kubernetes.io")
    {
        return true;
    }
    let kube_domain = domain == "kubernetes.io"
        || domain.ends_with(".kubernetes.io")
        || domain == "k8s.io"
        || domain.ends_with(".k8s.io");
    if !kube_domain {
        return false;
    }
    let allowed_keys = [
        HOSTNAME,
        ARCH,
        OS,
        INSTANCE_TYPE,
        TOPOLOGY_ZONE,
        TOPOLOGY_REGION,
        ZONE_BETA,
        REGION_BETA,
        INSTANCE_TYPE_BETA,
        ARCH_BETA,
        OS_BETA,
        WINDOWS_BUILD,
    ];
    let allowed_domain = domain == "kubelet.kubernetes.io"
        || domain.ends_with(".kubelet.kubernetes.io")
        || domain == "node.kubernetes.io"
        || domain.ends_with(".node.kubernetes.io");
    !(allowed_keys.contains(&key) || allowed_domain)
}

/// Capacity-type label values.
pub const CAPACITY_TYPE_SPOT: &str = "spot";
pub const CAPACITY_TYPE_ON_DEMAND: &str = "on-demand";
pub const CAPACITY_TYPE_RESERVED: &str = "reserved";

/// Labels Karpenter sets on every node from the instance it launched; requirements on these
/// keys are allowed although they sit in restricted domains (see `berth_api::validate`).
pub const WELL_KNOWN_LABELS: &[&str] = &[
    NODE_POOL,
    TOPOLOGY_ZONE,
    TOPOLOGY_REGION,
    INSTANCE_TYPE,
    ARCH,
    OS,
    CAPACITY_TYPE,
    WINDOWS_BUILD,
    ZONE_ID,
    INSTANCE_HYPERVISOR,
    INSTANCE_ENCRYPTION_IN_TRANSIT_SUPPORTED,
    INSTANCE_CATEGORY,
    INSTANCE_FAMILY,
    INSTANCE_GENERATION,
    INSTANCE_LOCAL_NVME,
    INSTANCE_SIZE,
    INSTANCE_CPU,
    INSTANCE_CPU_MANUFACTURER,
    INSTANCE_CPU_SUSTAINED_CLOCK_SPEED_MHZ,
    INSTANCE_MEMORY,
    INSTANCE_EBS_BANDWIDTH,
    INSTANCE_NETWORK_BANDWIDTH,
    INSTANCE_GPU_NAME,
    INSTANCE_GPU_MANUFACTURER,
    INSTANCE_GPU_COUNT,
    INSTANCE_GPU_MEMORY,
    INSTANCE_ACCELERATOR_NAME,
    INSTANCE_ACCELERATOR_MANUFACTURER,
    INSTANCE_ACCELERATOR_COUNT,
];

/// Deprecated label spellings and the label Karpenter treats them as.
pub const NORMALIZED_LABELS: &[(&str, &str)] = &[
    (ZONE_BETA, TOPOLOGY_ZONE),
    (ARCH_BETA, ARCH),
    (OS_BETA, OS),
    (INSTANCE_TYPE_BETA, INSTANCE_TYPE),
    (REGION_BETA, TOPOLOGY_REGION),
];

/// The label Karpenter means by `key` (beta spellings normalised).
pub fn normalize(key: &str) -> &str {
    NORMALIZED_LABELS
        .iter()
        .find(|(beta, _)| *beta == key)
        .map_or(key, |(_, ga)| ga)
}
