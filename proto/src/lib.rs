//! # berth-proto
//!
//! Berth's gRPC contract, package `berth.v1` (see `proto/berth/v1/*.proto`, every field
//! documented there), the code generated from it, and `TryFrom` conversions to the domain model
//! of `berth-scheduler-core`.
//!
//! ```text
//!   watcher ──Scheduler.Sync──> scheduler ──CloudProvider.{InstanceTypes,Launch,...}──> actuator
//!                (scheduler.proto)                      (cloud.proto)
//! ```
//!
//! An invalid message converts to a [`ConversionError`] naming the field
//! (`batch.changes[3].upsert.pod.tolerations[0].operator`), which servers return as
//! `INVALID_ARGUMENT`. Cloud errors travel as gRPC statuses, see [`status`].
//!
//! Every Berth server also serves `grpc.health.v1` and reflection: see [`standard_services`].

pub mod convert;
pub mod status;

/// Generated code for package `berth.v1`.
#[allow(
    missing_docs,
    missing_debug_implementations,
    clippy::all,
    clippy::pedantic
)]
pub mod v1 {
    tonic::include_proto!("berth.v1");
}

pub use convert::ConversionError;

/// The encoded file descriptor set of `berth.v1`, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/berth_v1_descriptor.bin"));

/// Adds the services every Berth server serves beside its own: `grpc.health.v1` (for
/// Kubernetes gRPC probes and grpcurl) and reflection, v1 and v1alpha. The returned reporter
/// sets each service's health; the overall status (`""`) starts `SERVING`.
///
/// ```no_run
/// # async fn serve() -> Result<(), tonic::transport::Error> {
/// let mut server = tonic::transport::Server::builder();
/// let (router, health) = berth_proto::add_standard_services(&mut server);
/// // router.add_service(SchedulerServer::new(...)).serve(addr).await
/// # drop(health); router.serve("127.0.0.1:0".parse().unwrap()).await
/// # }
/// ```
pub fn add_standard_services(
    server: &mut tonic::transport::Server,
) -> (
    tonic::transport::server::Router,
    tonic_health::server::HealthReporter,
) {
    let (health_reporter, health) = tonic_health::server::health_reporter();
    let builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let v1 = builder()
        .build_v1()
        .expect("berth.v1 descriptors are valid");
    let v1alpha = builder()
        .build_v1alpha()
        .expect("berth.v1 descriptors are valid");
    (
        server
            .add_service(health)
            .add_service(v1)
            .add_service(v1alpha),
        health_reporter,
    )
}
