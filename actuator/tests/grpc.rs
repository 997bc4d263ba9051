//! The real actuator (sim cloud) over gRPC on loopback, and its admin endpoints.

use berth_actuator::args::Args;
use berth_cloud::CloudError;
use berth_proto::v1 as pb;
use berth_proto::v1::cloud_provider_client::CloudProviderClient;
use berth_scheduler_core::labels;
use berth_scheduler_core::model::{NodeClaim, NodeClassRef, Operator, Requirement};
use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn start() -> berth_actuator::Running {
    let args = Args::parse_from([
        "berth-actuator",
        "--grpc-addr",
        "127.0.0.1:0",
        "--admin-addr",
        "127.0.0.1:0",
        "--provider",
        "sim",
        "--node-claims",
        "memory",
        "--sim-boot-delay",
        "0s",
        "--sim-termination-delay",
        "0s",
    ]);
    let handle = berth_actuator::metrics::install().unwrap();
    berth_actuator::start(args, handle).await.unwrap()
}

fn claim(name: &str, types: &[&str]) -> pb::NodeClaim {
    let mut c = NodeClaim::new(
        name,
        "gitlab",
        NodeClassRef {
            group: "karpenter.k8s.aws".into(),
            kind: "EC2NodeClass".into(),
            name: "default".into(),
        },
    );
    c.requirements = vec![Requirement::new(labels::INSTANCE_TYPE, Operator::In, types)];
    (&c).into()
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test]
async fn launch_get_terminate_over_grpc_with_metrics() {
    let running = start().await;
    let mut client = CloudProviderClient::connect(format!("http://{}", running.grpc_addr))
        .await
        .unwrap();

    let first = client
        .launch(pb::LaunchRequest {
            node_claim: Some(claim("gitlab-a1", &["m5.large"])),
        })
        .await
        .unwrap()
        .into_inner()
        .instance
        .unwrap();
    assert_eq!(first.instance_type, "m5.large");
    assert_eq!(first.node_pool, "gitlab");
    let again = client
        .launch(pb::LaunchRequest {
            node_claim: Some(claim("gitlab-a1", &["m5.large"])),
        })
        .await
        .unwrap()
        .into_inner()
        .instance
        .unwrap();
    assert_eq!(again.provider_id, first.provider_id, "idempotent by name");

    let got = client
        .get(pb::GetRequest {
            node_claim: "gitlab-a1".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .instance
        .unwrap();
    assert_eq!(got.provider_id, first.provider_id);
    assert_eq!(
        client
            .list(pb::ListRequest {})
            .await
            .unwrap()
            .into_inner()
            .instances
            .len(),
        1
    );

    let state = |r: pb::TerminateResponse| r.state();
    let t1 = client
        .terminate(pb::TerminateRequest {
            node_claim: "gitlab-a1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(state(t1), pb::TerminationState::Terminating);
    let t2 = client
        .terminate(pb::TerminateRequest {
            node_claim: "gitlab-a1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(state(t2), pb::TerminationState::Terminated);
    let gone = client
        .get(pb::GetRequest {
            node_claim: "gitlab-a1".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), tonic::Code::NotFound);

    let metrics = http_get(running.admin_addr, "/metrics").await;
    assert!(
        metrics.contains("berth_actuator_launches_total"),
        "{metrics}"
    );
    assert!(
        metrics.contains("berth_actuator_cloud_call_duration_seconds_bucket"),
        "{metrics}"
    );
    assert!(
        metrics.contains("berth_actuator_rpc_duration_seconds_bucket"),
        "{metrics}"
    );
    assert!(
        http_get(running.admin_addr, "/healthz")
            .await
            .ends_with("ok")
    );
    assert!(
        http_get(running.admin_addr, "/readyz")
            .await
            .ends_with("ok")
    );

    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn bad_requests_are_invalid_argument_naming_the_field_and_cloud_errors_are_typed() {
    let running = start().await;
    let mut client = CloudProviderClient::connect(format!("http://{}", running.grpc_addr))
        .await
        .unwrap();

    let missing = client
        .launch(pb::LaunchRequest { node_claim: None })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::InvalidArgument);
    assert!(matches!(
        berth_proto::status::from_status(&missing),
        CloudError::InvalidArgument { ref field, .. } if field == "node_claim"
    ));

    let mut bad = claim("gitlab-b1", &["m5.large"]);
    bad.requirements[0].operator = 99;
    let refused = client
        .launch(pb::LaunchRequest {
            node_claim: Some(bad),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    match berth_proto::status::from_status(&refused) {
        CloudError::InvalidArgument { field, .. } => {
            assert!(field.starts_with("node_claim.requirements[0]"), "{field}")
        }
        other => panic!("{other:?}"),
    }

    let impossible = client
        .launch(pb::LaunchRequest {
            node_claim: Some(claim("gitlab-b2", &["no-such.type"])),
        })
        .await
        .unwrap_err();
    assert!(matches!(
        berth_proto::status::from_status(&impossible),
        CloudError::Launch { .. }
    ));

    let no_name = client
        .terminate(pb::TerminateRequest {
            node_claim: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(no_name.code(), tonic::Code::InvalidArgument);

    running.shutdown().await.unwrap();
}
