//! `berth sandbox` as a user runs it: the binary, its printed addresses and kubeconfig, the
//! seed's manifests, and the whole path below the scheduler: a NodeClaim launched over the
//! actuator's gRPC API boots in the sim cloud, its node is registered by the simulated kubelet,
//! registered and initialized by the actuator's lifecycle controller, and the simulated
//! kube-scheduler runs the waiting pod on it. SIGTERM stops it all with a zero exit.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use berth_proto::v1 as pb;
use berth_proto::v1::cloud_provider_client::CloudProviderClient;
use berth_scheduler_core::labels;
use berth_scheduler_core::model::{NodeClaim, NodeClassRef, Operator, Requirement};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, PostParams};

struct Sandbox(Child);

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..150 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting until {what}");
}

#[tokio::test]
async fn a_launched_claim_becomes_a_node_that_runs_the_waiting_pod() {
    let dir = std::env::temp_dir().join(format!("berth-sandbox-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    let seed = concat!(env!("CARGO_MANIFEST_DIR"), "/../api/tests/fixtures/seed");
    let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("sandbox")
        .arg("--kubeconfig-out")
        .arg(&kubeconfig)
        .args(["--boot-delay", "1s", "--pod-start-delay", "0s", "-f"])
        .arg(format!("{seed}/ec2nodeclass-default.v1beta1.yaml"))
        .arg(format!("{seed}/nodepool-default.v1beta1.yaml"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let sandbox = Sandbox(child);
    let mut grpc = None;
    let mut lines = stdout.lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(rest) = line.trim().strip_prefix("actuator     gRPC ") {
            grpc = rest.split(',').next().map(str::to_owned);
        }
        if line == "sandbox ready" {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    let grpc = grpc.expect("the sandbox printed the actuator's address");

    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(&kubeconfig).unwrap(),
        &Default::default(),
    )
    .await
    .unwrap();
    let client = kube::Client::try_from(config).unwrap();
    let classes: Api<berth_api::v1::EC2NodeClass> = Api::all(client.clone());
    eventually("the actuator made the EC2NodeClass Ready", || async {
        classes.get("default").await.is_ok_and(|c| {
            c.status.is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            })
        })
    })
    .await;

    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "build"},
        "spec": {"containers": [{"name": "c", "image": "build",
                 "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    eventually("the pod is Unschedulable", || async {
        pods.get("build").await.is_ok_and(|p| {
            p.status.and_then(|s| s.conditions).is_some_and(|c| {
                c.iter()
                    .any(|c| c.reason.as_deref() == Some("Unschedulable"))
            })
        })
    })
    .await;

    // What the scheduler service will do: launch a claim for it.
    let mut cloud = CloudProviderClient::connect(format!("http://{grpc}"))
        .await
        .unwrap();
    let mut claim = NodeClaim::new(
        "default-nodepool-abcde",
        "default-nodepool",
        NodeClassRef {
            group: "karpenter.k8s.aws".into(),
            kind: "EC2NodeClass".into(),
            name: "default".into(),
        },
    );
    claim.requirements = vec![Requirement::new(
        labels::INSTANCE_TYPE,
        Operator::In,
        &["t3.large"],
    )];
    cloud
        .launch(pb::LaunchRequest {
            node_claim: Some((&claim).into()),
        })
        .await
        .unwrap();

    let claims: Api<berth_api::v1::NodeClaim> = Api::all(client.clone());
    eventually("the claim is registered and initialized", || async {
        claims.get("default-nodepool-abcde").await.is_ok_and(|c| {
            let s = c.status.unwrap_or_default();
            ["Registered", "Initialized"].iter().all(|t| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == *t && c.status == "True")
            })
        })
    })
    .await;
    let nodes: Api<Node> = Api::all(client.clone());
    let node = nodes.get("default-nodepool-abcde").await.unwrap();
    let node_labels = node.metadata.labels.unwrap();
    assert_eq!(node_labels["node.kubernetes.io/instance-type"], "t3.large");
    assert_eq!(node_labels["karpenter.sh/registered"], "true");
    eventually("the pod runs on the new node", || async {
        pods.get("build").await.is_ok_and(|p| {
            p.spec.and_then(|s| s.node_name).as_deref() == Some("default-nodepool-abcde")
                && p.status.and_then(|s| s.phase).as_deref() == Some("Running")
        })
    })
    .await;

    drop(cloud);
    let pid = sandbox.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let mut sandbox = sandbox;
    let status = sandbox.0.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
