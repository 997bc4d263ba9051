//! A pod asking for `nvidia.com/gpu: 1` gets a node of a GPU instance type from a NodePool
//! that allows the g and p categories (the seed's pools allow only t3) and runs there; the
//! node reports the GPU, and its claim is Initialized (which waits for the extended resources
//! its pods asked for).

mod common;

use berth_api::v1::NodeClaim;
use common::{Berth, Cluster, eventually, is_running, node_of};
use k8s_openapi::api::core::v1::{Node, Pod};

/// GPU nodes for pods that tolerate the GPU taint; on-demand, amd64.
const GPU_POOL: &str = "apiVersion: karpenter.sh/v1
kind: NodePool
metadata:
  name: gpu
spec:
  template:
    spec:
      nodeClassRef: {group: karpenter.k8s.aws, kind: EC2NodeClass, name: default}
      requirements:
        - {key: karpenter.k8s.aws/instance-category, operator: In, values: [g, p]}
        - {key: karpenter.sh/capacity-type, operator: In, values: [on-demand]}
        - {key: kubernetes.io/arch, operator: In, values: [amd64]}
      taints:
        - {key: nvidia.com/gpu, effect: NoSchedule}
  limits:
    nvidia.com/gpu: '8'
";

const GPU_POD: &str = "apiVersion: v1
kind: Pod
metadata: {name: cuda, namespace: default}
spec:
  tolerations: [{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]
  containers:
    - name: cuda
      image: 'nvidia/cuda:12.4.1-base-ubuntu22.04'
      resources:
        requests: {cpu: '1', memory: 4Gi, nvidia.com/gpu: '1'}
        limits: {nvidia.com/gpu: '1'}
";

#[tokio::test(flavor = "multi_thread")]
async fn a_gpu_pod_gets_a_gpu_node() {
    let mut manifests = common::SEED.to_vec();
    manifests.push(GPU_POOL);
    let cluster = Cluster::start("gpu", &manifests).await;
    let _berth = Berth::start(&cluster);
    cluster.create(GPU_POD);
    eventually(60, "the GPU pod runs", || async {
        cluster.list::<Pod>().await.iter().any(is_running)
    })
    .await;

    let pods = cluster.list::<Pod>().await;
    let node_name = node_of(&pods[0]).expect("bound").to_owned();
    let nodes = cluster.list::<Node>().await;
    assert_eq!(nodes.len(), 1, "one node for one pod");
    let node = &nodes[0];
    assert_eq!(node.metadata.name.as_deref(), Some(node_name.as_str()));
    let labels = node.metadata.labels.clone().unwrap_or_default();
    let instance_type = labels["node.kubernetes.io/instance-type"].clone();
    eprintln!("the GPU pod runs on {instance_type}");
    assert_eq!(labels["karpenter.sh/nodepool"], "gpu");

    // The instance type has GPUs: by its label, by the catalog, and by what the node reports.
    let gpus: u32 = labels
        .get("karpenter.k8s.aws/instance-gpu-count")
        .unwrap_or_else(|| panic!("{instance_type}: no instance-gpu-count label"))
        .parse()
        .unwrap();
    assert!(gpus >= 1);
    assert_eq!(
        labels
            .get("karpenter.k8s.aws/instance-gpu-manufacturer")
            .map(String::as_str),
        Some("nvidia")
    );
    let catalog = berth_catalog::Catalog::builtin();
    let facts = catalog
        .facts
        .iter()
        .find(|f| f.name == instance_type)
        .unwrap_or_else(|| panic!("{instance_type} is not in the catalog"));
    assert_eq!(facts.gpu_count, gpus);
    assert_eq!(facts.gpu_manufacturer.as_deref(), Some("NVIDIA"));
    let allocatable = node
        .status
        .as_ref()
        .and_then(|s| s.allocatable.clone())
        .unwrap_or_default();
    assert_eq!(
        allocatable.get("nvidia.com/gpu").map(|q| q.0.as_str()),
        Some(gpus.to_string().as_str()),
        "{allocatable:?}"
    );
    let taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    assert!(
        taints
            .iter()
            .any(|t| t.key == "nvidia.com/gpu" && t.effect == "NoSchedule"),
        "{taints:?}"
    );

    // Initialized only because the node reported the GPU the pod asked for.
    assert_eq!(cluster.list::<NodeClaim>().await.len(), 1);
    eventually(10, "the claim is Initialized", || async {
        cluster.list::<NodeClaim>().await[0]
            .status
            .as_ref()
            .is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Initialized" && c.status == "True")
            })
    })
    .await;
}
