//! The actuator as it runs (gRPC service + lifecycle and EC2NodeClass controllers) against the
//! simulated API server. The resync interval is an hour, so everything here happens because a
//! watch saw a change (or work under way was requeued), not because a timer fired.

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

/// The simulated API server and the actuator on it (sim cloud, instant boot and termination,
/// an hour-long resync), with the kubeconfig in a directory of its own.
struct Actuator {
    server: berth_sim::server::LocalServer,
    running: berth_actuator::Running,
    dir: std::path::PathBuf,
}

async fn start(test: &str) -> Actuator {
    let server = berth_sim::server::ApiServer::new(
        berth_sim::store::Store::new(10_000),
        Arc::new(SystemTime::now),
    );
    let server = server.start_local().await.unwrap();
    let dir = std::env::temp_dir().join(format!("berth-e2e-{test}-{}", std::process::id()));
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
        "--sim-termination-delay",
        "0s",
        "--node-claims",
        "kubernetes",
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--lifecycle-interval",
        "1h",
    ]);
    let running = berth_actuator::start(args, berth_actuator::metrics::install().unwrap())
        .await
        .unwrap();
    Actuator {
        server,
        running,
        dir,
    }
}

/// Launches an m5.large for a `gitlab` NodeClaim over gRPC.
async fn launch(
    client: &mut CloudProviderClient<tonic::transport::Channel>,
    name: &str,
) -> pb::Instance {
    let mut claim = NodeClaim::new(
        name,
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
    client
        .launch(pb::LaunchRequest {
            node_claim: Some((&claim).into()),
        })
        .await
        .unwrap()
        .into_inner()
        .instance
        .unwrap()
}

#[tokio::test]
async fn launch_over_grpc_writes_the_claim_and_the_controller_registers_its_node() {
    let Actuator {
        server,
        running,
        dir,
    } = start("launch").await;
    let mut client = CloudProviderClient::connect(format!("http://{}", running.grpc_addr))
        .await
        .unwrap();
    let instance = launch(&mut client, "gitlab-e2e").await;

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

async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..100 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting until {what}");
}

#[tokio::test]
async fn a_class_gets_its_status_terminate_drains_the_node_and_the_class_waits_for_its_claims() {
    let Actuator {
        server,
        running,
        dir,
    } = start("terminate").await;
    let kube = kube::Client::try_from(kube::Config::new(server.url().parse().unwrap())).unwrap();

    // The EC2NodeClass gets the finalizer, then its resolved status and Ready.
    let classes: Api<berth_api::v1::EC2NodeClass> = Api::all(kube.clone());
    let class: berth_api::v1::EC2NodeClass = serde_json::from_value(json!({
        "apiVersion": "karpenter.k8s.aws/v1", "kind": "EC2NodeClass",
        "metadata": {"name": "default"},
        "spec": {"role": "KarpenterNodeRole-ci",
                 "amiSelectorTerms": [{"alias": "al2023@latest"}],
                 "subnetSelectorTerms": [{"tags": {"karpenter.sh/discovery": "ci"}}],
                 "securityGroupSelectorTerms": [{"tags": {"karpenter.sh/discovery": "ci"}}]}
    }))
    .unwrap();
    classes
        .create(&PostParams::default(), &class)
        .await
        .unwrap();
    eventually("the class is Ready", || async {
        let c = classes.get("default").await.unwrap();
        c.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        })
    })
    .await;
    let c = classes.get("default").await.unwrap();
    assert_eq!(
        c.metadata.finalizers.as_deref(),
        Some(&["karpenter.k8s.aws/termination".to_owned()][..])
    );
    let status = c.status.unwrap();
    assert!(!status.subnets.is_empty() && status.amis.len() == 2);
    assert_eq!(
        status.instance_profile.as_deref(),
        Some("sim_KarpenterNodeRole-ci")
    );

    // A launched claim with a registered node running a pod.
    let mut grpc = CloudProviderClient::connect(format!("http://{}", running.grpc_addr))
        .await
        .unwrap();
    let instance = launch(&mut grpc, "gitlab-term").await;
    let nodes: Api<Node> = Api::all(kube.clone());
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": "sim-node-2"},
        "spec": {"providerID": instance.provider_id},
    }))
    .unwrap();
    nodes.create(&PostParams::default(), &node).await.unwrap();
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(kube.clone(), "default");
    let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(json!({
        "metadata": {"name": "build-1", "namespace": "default", "labels": {"app": "build"}},
        "spec": {"nodeName": "sim-node-2", "containers": [{"name": "c", "image": "busybox"}]},
        "status": {"phase": "Running"}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();

    // A PodDisruptionBudget holds the drain until it is removed.
    let pdbs: Api<k8s_openapi::api::policy::v1::PodDisruptionBudget> =
        Api::namespaced(kube.clone(), "default");
    let pdb: k8s_openapi::api::policy::v1::PodDisruptionBudget = serde_json::from_value(json!({
        "metadata": {"name": "build", "namespace": "default"},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "build"}}}
    }))
    .unwrap();
    pdbs.create(&PostParams::default(), &pdb).await.unwrap();

    // Deleting the class now leaves it in place: a claim still uses it.
    classes
        .delete("default", &Default::default())
        .await
        .unwrap();
    let claims: Api<berth_api::v1::NodeClaim> = Api::all(kube.clone());
    // Terminate deletes the claim; the controller drains the node (the disrupted taint, the
    // pod evicted), terminates the instance, deletes the node and drops the finalizer.
    let state = grpc
        .terminate(pb::TerminateRequest {
            node_claim: "gitlab-term".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .state;
    assert_eq!(state, pb::TerminationState::Terminating as i32);
    eventually("the node is tainted for the drain", || async {
        nodes.get("sim-node-2").await.is_ok_and(|n| {
            n.spec
                .and_then(|s| s.taints)
                .is_some_and(|t| t.iter().any(|t| t.key == "karpenter.sh/disrupted"))
        })
    })
    .await;
    // The drain is held by the budget for a while: the pod, the claim and the class stay.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        pods.get_opt("build-1").await.unwrap().is_some(),
        "the PDB holds it"
    );
    assert!(claims.get_opt("gitlab-term").await.unwrap().is_some());
    let waiting = classes.get("default").await.unwrap();
    assert!(
        waiting.metadata.deletion_timestamp.is_some(),
        "the class waits for its claim"
    );
    pdbs.delete("build", &Default::default()).await.unwrap();
    eventually("the claim is gone", || async {
        claims.get_opt("gitlab-term").await.unwrap().is_none()
    })
    .await;
    assert!(pods.get_opt("build-1").await.unwrap().is_none(), "evicted");
    assert!(
        nodes.get_opt("sim-node-2").await.unwrap().is_none(),
        "node deleted"
    );
    let state = grpc
        .terminate(pb::TerminateRequest {
            node_claim: "gitlab-term".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .state;
    assert_eq!(state, pb::TerminationState::Terminated as i32);
    eventually("the class is released", || async {
        classes.get_opt("default").await.unwrap().is_none()
    })
    .await;

    running.shutdown().await.unwrap();
    server.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
