//! The EC2 path: moto on 127.0.0.1 (the EC2 provider's own fixture: a VPC with subnets in
//! us-east-1a and us-east-1b and a security group tagged `karpenter.sh/discovery: ci`, the
//! AL2023 AMI parameter seeded), and `berth-actuator --provider ec2` pointed at it, writing
//! NodeClaims to the simulated cluster. Without moto these tests fail, never skip.

use berth_api::v1::EC2NodeClass;

use super::{Cluster, Service, eventually};

#[path = "../../../actuator/ec2/tests/common/mod.rs"]
pub mod moto;

/// The cluster name the actuator tags its instances with (`kubernetes.io/cluster/<name>`).
pub const CLUSTER_NAME: &str = "berth-it";

/// The EC2NodeClass, named like the seed's (the seed's default NodePool refers to it), whose
/// selectors match what the moto fixture tagged.
pub use moto::NODE_CLASS;

/// The manifests of an EC2 scenario: the node class above and the seed's default NodePool
/// (t3 medium/large/xlarge, on-demand).
pub const MANIFESTS: &[&str] = &[
    NODE_CLASS,
    include_str!("../../../api/tests/fixtures/seed/nodepool-default.v1beta1.yaml"),
];

/// moto with the fixture and the node role the class names.
pub async fn moto() -> moto::Fixture {
    let f = moto::fixture().await;
    moto::create_node_role(&f.conf).await;
    f
}

/// `berth-actuator --provider ec2` against moto at `endpoint`, writing NodeClaims to
/// `cluster`, serving gRPC on `grpc_addr` (port 0, or a predecessor's to restart it), with
/// `extra` flags.
/// Static credentials in the environment and the endpoint override: the SDK never looks for
/// credentials elsewhere, never reaches the instance-metadata address or AWS.
pub fn actuator(cluster: &Cluster, endpoint: &str, grpc_addr: &str, extra: &[&str]) -> Service {
    let kc = cluster.kubeconfig_for("berth-actuator");
    let mut args = vec![
        "--provider",
        "ec2",
        "--kubeconfig",
        &kc,
        "--aws-endpoint-url",
        endpoint,
        "--region",
        "us-east-1",
        "--cluster-name",
        CLUSTER_NAME,
        "--cluster-endpoint",
        "https://example.eks.amazonaws.com",
        "--grpc-addr",
        grpc_addr,
        "--admin-addr",
        "127.0.0.1:0",
        "--lifecycle-interval",
        "1s",
    ];
    args.extend_from_slice(extra);
    Service::spawn_with("berth-actuator", &args, |command| {
        command
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null");
        for v in [
            "AWS_SESSION_TOKEN",
            "AWS_PROFILE",
            "AWS_ROLE_ARN",
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
            "AWS_ENDPOINT_URL",
            "BERTH_NODE_CLAIMS",
        ] {
            command.env_remove(v);
        }
    })
}

/// Waits until the actuator resolved the EC2NodeClass against moto (`Ready=True`) and
/// returns it.
pub async fn class_ready(cluster: &Cluster) -> EC2NodeClass {
    let ready = |c: &EC2NodeClass| {
        c.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        })
    };
    eventually(30, "the EC2NodeClass is Ready", || async {
        cluster.list::<EC2NodeClass>().await.iter().any(ready)
    })
    .await;
    cluster.list::<EC2NodeClass>().await.remove(0)
}

/// Every instance (any state) tagged `karpenter.sh/nodeclaim=<claim>`.
pub async fn instances_of(
    ec2: &aws_sdk_ec2::Client,
    claim: &str,
) -> Vec<aws_sdk_ec2::types::Instance> {
    described(ec2, "tag:karpenter.sh/nodeclaim", claim).await
}

/// Every instance (any state) the actuator launched for this cluster.
pub async fn cluster_instances(ec2: &aws_sdk_ec2::Client) -> Vec<aws_sdk_ec2::types::Instance> {
    described(
        ec2,
        &format!("tag:kubernetes.io/cluster/{CLUSTER_NAME}"),
        "owned",
    )
    .await
}

/// The cluster's instances not yet terminated.
pub async fn live_instances(ec2: &aws_sdk_ec2::Client) -> Vec<aws_sdk_ec2::types::Instance> {
    cluster_instances(ec2)
        .await
        .into_iter()
        .filter(|i| {
            i.state()
                .and_then(|s| s.name())
                .is_some_and(|s| s.as_str() != "terminated")
        })
        .collect()
}

async fn described(
    ec2: &aws_sdk_ec2::Client,
    filter: &str,
    value: &str,
) -> Vec<aws_sdk_ec2::types::Instance> {
    ec2.describe_instances()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name(filter)
                .values(value)
                .build(),
        )
        .send()
        .await
        .unwrap()
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .cloned()
        .collect()
}
