//! The actuator as it runs (gRPC service + lifecycle controller) against the simulated API
//! server: a Launch creates the NodeClaim, and once a node with its provider ID appears the
//! claim is registered.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use berth_actuator::args::Args;
use berth_proto::v1 as pb;
use berth_proto::v1::cloud_provider_client::CloudProviderClient;
use berth_scheduler_core::labels;
use berth_scheduler_core::model::{NodeClaim, NodeClassRef, Operator, Requirement};
use clap::Parser;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, PostParams};
use serde_json::json;

#[tokio::test]
async fn launch_over_grpc_writes_the_claim_and_the_controller_registers_its_node() {
    let server = berth_sim::server::ApiServer::new(
        berth_sim::store::Store::new(10_000),
        Arc::new(SystemTime::now),
    );
    let server = server.start_local().await.unwrap();
    let dir = std::env::temp_dir().join(format!("berth-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, server.kubeconfig()).unwrap();

    let args = Args::parse_from([
        "berth-actuator",
        "--grpc-addr",
        "127.0.0.1:0",
        "--admin-addr",
        "127.0.0.1:0",
        "--provider",
        "sim",
        "--sim-boot-delay",
        "0s",
        "--node-claims",
        "kubernetes",
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--lifecycle-interval",
        "1s",
    ]);
    let running = berth_actuator::start(args, berth_actuator::metrics::install().unwrap())
        .await
        .unwrap();
    let mut client = CloudProviderClient::connect(format!("http://{}", running.grpc_addr))
        .await
        .unwrap();
    let mut claim = NodeClaim::new(
        "gitlab-e2e",
        "gitlab",
        NodeClassRef {
            group: "karpenter.k8s.aws".into(),
            kind: "EC2NodeClass".into(),
            name: "default".into(),
        },
    );
    claim.requirements = vec![Requirement::new(
        labels::INSTANCE_TYPE,
        Operator::In,
        &["m5.large"],
    )];
    let instance = client
        .launch(pb::LaunchRequest {
            node_claim: Some((&claim).into()),
        })
        .await
        .unwrap()
        .into_inner()
        .instance
        .unwrap();

    let kube = kube::Client::try_from(kube::Config::new(server.url().parse().unwrap())).unwrap();
    let claims: Api<berth_api::v1::NodeClaim> = Api::all(kube.clone());
    let stored = claims.get("gitlab-e2e").await.unwrap();
    assert_eq!(
        stored.status.unwrap().provider_id.as_deref(),
        Some(instance.provider_id.as_str())
    );

    let nodes: Api<Node> = Api::all(kube);
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": "sim-node-1"},
        "spec": {"providerID": instance.provider_id,
                 "taints": [{"key": "karpenter.sh/unregistered", "effect": "NoExecute"}]},
    }))
    .unwrap();
    nodes.create(&PostParams::default(), &node).await.unwrap();

    let mut registered = false;
    for _ in 0..50 {
        let c = claims.get("gitlab-e2e").await.unwrap();
        if c.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Registered" && c.status == "True")
        }) {
            registered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(registered, "the lifecycle controller registered the claim");
    let n = nodes.get("sim-node-1").await.unwrap();
    assert_eq!(
        n.metadata.labels.unwrap()["karpenter.sh/nodepool"],
        "gitlab"
    );

    running.shutdown().await.unwrap();
    server.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
