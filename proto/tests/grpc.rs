//! Health and reflection over the real transport on loopback.

use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Channel, Server};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

#[tokio::test]
async fn health_and_reflection_are_served() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (router, reporter) = berth_proto::add_standard_services(&mut Server::builder());
    reporter
        .set_service_status(
            "berth.v1.Scheduler",
            tonic_health::ServingStatus::NotServing,
        )
        .await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(router.serve_with_incoming_shutdown(
        TcpListenerStream::new(listener),
        async {
            stopped.await.ok();
        },
    ));

    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel.clone());
    let overall = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(overall.status(), ServingStatus::Serving);
    let scheduler = health
        .check(HealthCheckRequest {
            service: "berth.v1.Scheduler".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(scheduler.status(), ServingStatus::NotServing);

    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("{response:?}")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "berth.v1.Scheduler",
        "berth.v1.CloudProvider",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }

    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

/// A CloudProvider whose Launch always reports insufficient capacity and whose Get never
/// finds anything: enough to see typed errors cross the wire.
#[derive(Debug)]
struct NoCapacity;

#[tonic::async_trait]
impl berth_proto::v1::cloud_provider_server::CloudProvider for NoCapacity {
    async fn instance_types(
        &self,
        _: tonic::Request<berth_proto::v1::InstanceTypesRequest>,
    ) -> Result<tonic::Response<berth_proto::v1::InstanceTypesResponse>, tonic::Status> {
        Ok(tonic::Response::new(Default::default()))
    }
    async fn launch(
        &self,
        request: tonic::Request<berth_proto::v1::LaunchRequest>,
    ) -> Result<tonic::Response<berth_proto::v1::LaunchResponse>, tonic::Status> {
        // Malformed requests are refused naming the field, as real servers do.
        let claim = request
            .into_inner()
            .node_claim
            .ok_or(berth_proto::ConversionError {
                field: "node_claim".into(),
                message: "required".into(),
            })?;
        berth_scheduler_core::model::NodeClaim::try_from(claim)?;
        Err(berth_proto::status::to_status(
            &CloudError::InsufficientCapacity {
                offerings: vec![UnavailableOffering {
                    instance_type: "t3.2xlarge".into(),
                    zone: "us-east-1a".into(),
                    capacity_type: CapacityType::OnDemand,
                }],
            },
        ))
    }
    async fn disrupt(
        &self,
        request: tonic::Request<berth_proto::v1::DisruptRequest>,
    ) -> Result<tonic::Response<berth_proto::v1::DisruptResponse>, tonic::Status> {
        berth_scheduler_core::disruption::Command::try_from(request.into_inner())?;
        Ok(tonic::Response::new(Default::default()))
    }
    async fn disruption_blocked(
        &self,
        _: tonic::Request<berth_proto::v1::DisruptionBlockedRequest>,
    ) -> Result<tonic::Response<berth_proto::v1::DisruptionBlockedResponse>, tonic::Status> {
        Ok(tonic::Response::new(Default::default()))
    }
    async fn terminate(
        &self,
        _: tonic::Request<berth_proto::v1::TerminateRequest>,
    ) -> Result<tonic::Response<berth_proto::v1::TerminateResponse>, tonic::Status> {
        Ok(tonic::Response::new(TerminationState::Terminated.into()))
    }
    async fn get(
        &self,
        request: tonic::Request<berth_proto::v1::GetRequest>,
    ) -> Result<tonic::Response<berth_proto::v1::GetResponse>, tonic::Status> {
        Err(berth_proto::status::to_status(&CloudError::NotFound {
            what: request.into_inner().node_claim,
        }))
    }
    async fn list(
        &self,
        _: tonic::Request<berth_proto::v1::ListRequest>,
    ) -> Result<tonic::Response<berth_proto::v1::ListResponse>, tonic::Status> {
        Ok(tonic::Response::new(Default::default()))
    }
}

use berth_scheduler_core::cloud::{CloudError, UnavailableOffering};
use berth_scheduler_core::model::{CapacityType, NodeClaim, NodeClassRef, TerminationState};

#[tokio::test]
async fn cloud_errors_cross_the_wire_typed() {
    use berth_proto::v1::cloud_provider_client::CloudProviderClient;
    use berth_proto::v1::cloud_provider_server::CloudProviderServer;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        Server::builder()
            .add_service(CloudProviderServer::new(NoCapacity))
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                stopped.await.ok();
            }),
    );
    let mut client = CloudProviderClient::connect(format!("http://{addr}"))
        .await
        .unwrap();

    let claim = NodeClaim::new(
        "c1",
        "gitlab",
        NodeClassRef {
            group: "karpenter.k8s.aws".into(),
            kind: "EC2NodeClass".into(),
            name: "default".into(),
        },
    );
    let status = client
        .launch(berth_proto::v1::LaunchRequest {
            node_claim: Some((&claim).into()),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    let CloudError::InsufficientCapacity { offerings } = berth_proto::status::from_status(&status)
    else {
        panic!("{status:?}")
    };
    assert_eq!(offerings[0].instance_type, "t3.2xlarge");

    let mut bad: berth_proto::v1::NodeClaim = (&claim).into();
    bad.node_class_ref.as_mut().unwrap().name.clear();
    let status = client
        .launch(berth_proto::v1::LaunchRequest {
            node_claim: Some(bad),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        berth_proto::status::from_status(&status),
        CloudError::InvalidArgument {
            field: "node_claim.node_class_ref.name".into(),
            message: "required".into()
        }
    );

    let status = client
        .get(berth_proto::v1::GetRequest {
            node_claim: "c9".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        berth_proto::status::from_status(&status),
        CloudError::NotFound { what: "c9".into() }
    );

    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}
