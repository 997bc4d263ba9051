//! The EC2 path end to end: `berth-actuator --provider ec2` against moto, writing NodeClaims
//! to the simulated cluster, with the scheduler and the watcher as usual. Pending pods → a
//! NodeClaim → a real (moto) instance tagged with the claim, in a subnet the EC2NodeClass
//! selected → the simulated kubelet registers a Node with the instance's provider ID → the
//! actuator registers and initializes it → the pods run there.

mod common;

use berth_api::v1::NodeClaim;
use common::ec2::{self, cluster_instances, instances_of};
use common::{Cluster, all_run, node_of, plain_pods};
use k8s_openapi::api::core::v1::{Node, Pod};

#[tokio::test(flavor = "multi_thread")]
async fn pending_pods_get_moto_instances_whose_nodes_run_them() {
    let moto = ec2::moto().await;
    let cluster = Cluster::start("ec2", ec2::MANIFESTS).await;
    let actuator = ec2::actuator(&cluster, &moto.moto.endpoint, "127.0.0.1:0", &[]);
    let scheduler = common::scheduler(&actuator.url());
    let _watcher = common::watcher(&cluster, &scheduler.url());

    // The class resolved against moto: the fixture's subnets, its security group.
    let status = ec2::class_ready(&cluster).await.status.unwrap();
    let mut subnets: Vec<String> = status.subnets.iter().map(|s| s.id.clone()).collect();
    subnets.sort();
    let mut fixture_subnets: Vec<String> = moto.subnets.iter().map(|(id, _)| id.clone()).collect();
    fixture_subnets.sort();
    assert_eq!(subnets, fixture_subnets);
    assert_eq!(
        status
            .security_groups
            .iter()
            .map(|g| g.id.as_str())
            .collect::<Vec<_>>(),
        [moto.security_group.as_str()]
    );

    cluster.create(&plain_pods("web", 3, "1"));
    all_run(&cluster, 3, 90).await;

    let claims = cluster.list::<NodeClaim>().await;
    let nodes = cluster.list::<Node>().await;
    let pods = cluster.list::<Pod>().await;
    assert!(!claims.is_empty());
    for claim in &claims {
        let name = claim.metadata.name.clone().unwrap();
        let provider_id = claim
            .status
            .as_ref()
            .and_then(|s| s.provider_id.clone())
            .unwrap_or_else(|| panic!("{name} has no providerID"));
        // Exactly one moto instance carries the claim's tag, and it is the claim's.
        let instances = instances_of(&moto.ec2, &name).await;
        assert_eq!(instances.len(), 1, "{name}: {instances:?}");
        let instance = &instances[0];
        let id = instance.instance_id().unwrap();
        let zone = instance
            .placement()
            .and_then(|p| p.availability_zone())
            .unwrap();
        assert_eq!(provider_id, format!("aws:///{zone}/{id}"));
        let subnet = instance.subnet_id().unwrap();
        assert!(
            moto.subnets.iter().any(|(s, z)| s == subnet && z == zone),
            "{name} launched in {subnet} ({zone}), not a subnet of the class"
        );
        let tag = |key: &str| {
            instance
                .tags()
                .iter()
                .find(|t| t.key() == Some(key))
                .and_then(|t| t.value())
                .map(str::to_owned)
        };
        assert_eq!(
            tag("karpenter.sh/nodepool").as_deref(),
            Some("default-nodepool")
        );
        assert_eq!(
            tag("karpenter.k8s.aws/ec2nodeclass").as_deref(),
            Some("default")
        );
        let instance_type = instance.instance_type().unwrap().as_str().to_owned();
        assert!(instance_type.starts_with("t3."), "{instance_type}");

        // The simulated kubelet registered a Node with that provider ID, labelled as the
        // instance is, and pods run on it.
        let node = nodes
            .iter()
            .find(|n| n.spec.as_ref().and_then(|s| s.provider_id.as_deref()) == Some(&provider_id))
            .unwrap_or_else(|| panic!("no Node with provider ID {provider_id}"));
        let node_name = node.metadata.name.as_deref().unwrap();
        let labels = node.metadata.labels.clone().unwrap_or_default();
        assert_eq!(labels["node.kubernetes.io/instance-type"], instance_type);
        assert_eq!(labels["topology.kubernetes.io/zone"], zone);
        assert_eq!(labels["karpenter.sh/registered"], "true");
        assert_eq!(
            claim.status.as_ref().and_then(|s| s.node_name.as_deref()),
            Some(node_name)
        );
        assert!(
            pods.iter().any(|p| node_of(p) == Some(node_name)),
            "no pod runs on {node_name}"
        );
    }
    // No instance without a claim.
    assert_eq!(cluster_instances(&moto.ec2).await.len(), claims.len());
}
