//! The `berth-actuator` binary as an operator runs it with `--provider ec2`: a child process
//! configured by flags and environment (credentials, endpoint), pointed at moto, driven over
//! gRPC on loopback, and stopped with SIGTERM.

#[path = "../ec2/tests/common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use berth_proto::v1 as pb;
use berth_proto::v1::cloud_provider_client::CloudProviderClient;
use berth_scheduler_core::labels;
use berth_scheduler_core::model::{NodeClaim, NodeClassRef, Operator, Requirement};

/// The child, killed if the test fails before stopping it.
struct Actuator(Child);

impl Drop for Actuator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the binary and reads the gRPC address from its first JSON log line that has it.
fn spawn(endpoint: &str, node_classes: &std::path::Path) -> (Actuator, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_berth-actuator"))
        .args([
            "--provider",
            "ec2",
            "--node-claims",
            "memory",
            "--grpc-addr",
            "127.0.0.1:0",
            "--admin-addr",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--cluster-name",
            "gitlab-ci",
            "--cluster-endpoint",
            "https://example.eks.amazonaws.com",
        ])
        .arg("--node-classes")
        .arg(node_classes)
        .env("BERTH_AWS_ENDPOINT_URL", endpoint)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        // Never let the SDK look for credentials at the instance-metadata address.
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start berth-actuator");
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut lines = stdout.lines();
    let grpc = loop {
        let line = lines
            .next()
            .expect("berth-actuator exited before serving")
            .unwrap();
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if let Some(addr) = v["fields"]["grpc"].as_str() {
            break addr.to_owned();
        }
    };
    // Keep draining its logs so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (Actuator(child), grpc)
}

/// The seed's GitLab NodePool shape, normalised as the scheduler sends it.
fn node_pool() -> berth_scheduler_core::model::NodePool {
    let np: berth_api::v1::NodePool = serde_json::from_value(serde_json::json!({
        "apiVersion": "karpenter.sh/v1", "kind": "NodePool",
        "metadata": {"name": "gitlab"},
        "spec": {"template": {"spec": {
            "nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "default"},
            "requirements": [{"key": "karpenter.k8s.aws/instance-family", "operator": "In", "values": ["m5"]}]
        }}}
    }))
    .unwrap();
    berth_api::domain::node_pool(&np, true, "").unwrap()
}

#[tokio::test]
async fn the_binary_launches_lists_and_terminates_on_ec2_and_stops_on_sigterm() {
    let f = common::fixture().await;
    common::create_node_role(&f.conf).await;
    let dir = std::env::temp_dir().join(format!("berth-bin-ec2-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let classes = dir.join("classes.yaml");
    std::fs::write(&classes, common::NODE_CLASS).unwrap();
    let (mut actuator, grpc) = spawn(&f.moto.endpoint, &classes);
    let mut client = CloudProviderClient::connect(format!("http://{grpc}"))
        .await
        .unwrap();

    let node_class_ref = NodeClassRef {
        group: "karpenter.k8s.aws".into(),
        kind: "EC2NodeClass".into(),
        name: "default".into(),
    };
    let types = client
        .instance_types(pb::InstanceTypesRequest {
            node_pool: Some((&node_pool()).into()),
        })
        .await
        .unwrap()
        .into_inner()
        .instance_types;
    let m5 = types
        .iter()
        .find(|t| t.name == "m5.large")
        .expect("m5.large from DescribeInstanceTypes");
    assert!(m5.offerings.iter().any(|o| o.zone == "us-east-1a"));

    let mut claim = NodeClaim::new("gitlab-bin", "gitlab", node_class_ref);
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
    assert!(
        instance.provider_id.starts_with("aws:///us-east-1"),
        "{}",
        instance.provider_id
    );
    // The instance exists in EC2 with the claim's tag.
    let found = f
        .ec2
        .describe_instances()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("tag:karpenter.sh/nodeclaim")
                .values("gitlab-bin")
                .build(),
        )
        .send()
        .await
        .unwrap();
    let ids: Vec<&str> = found
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .filter_map(|i| i.instance_id())
        .collect();
    assert_eq!(ids.len(), 1);
    assert!(instance.provider_id.ends_with(ids[0]));

    let listed = client
        .list(pb::ListRequest {})
        .await
        .unwrap()
        .into_inner()
        .instances;
    assert_eq!(listed.len(), 1);

    // Terminate until EC2 says it is gone.
    let mut state = 0;
    for _ in 0..20 {
        state = client
            .terminate(pb::TerminateRequest {
                node_claim: "gitlab-bin".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .state;
        if state == pb::TerminationState::Terminated as i32 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(state, pb::TerminationState::Terminated as i32);
    let err = client
        .get(pb::GetRequest {
            node_claim: "gitlab-bin".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);

    // SIGTERM: a graceful stop with a zero exit (the client hangs up first, as a scheduler
    // would; one that does not is cut off after the shutdown grace).
    drop(client);
    let pid = actuator.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = actuator.0.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
