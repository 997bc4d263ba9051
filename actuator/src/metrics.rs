//! The actuator's metric names, owned here once (the cloud layer's own, per-call ones are in
//! `berth_cloud::metrics`), and the Prometheus recorder.

use berth_service::PrometheusHandle;

/// Counter: instances launched, by `nodepool`, `instance_type`, `zone`, `capacity_type`.
pub const LAUNCHES_TOTAL: &str = "berth_actuator_launches_total";
/// Counter: failed launches, by `nodepool` and `reason` (the cloud error's code).
pub const LAUNCH_FAILURES_TOTAL: &str = "berth_actuator_launch_failures_total";
/// Counter: instance terminations by `nodepool`, `instance_type`, `zone`, `capacity_type`
/// (with `--node-claims kubernetes`, once per drained NodeClaim when its instance is gone;
/// with `memory`, when a Terminate starts shutting a live instance down).
pub const TERMINATIONS_TOTAL: &str = "berth_actuator_terminations_total";
/// Gauge: offerings hidden by the insufficient-capacity cache.
pub const UNAVAILABLE_OFFERINGS: &str = "berth_actuator_unavailable_offerings";
/// Gauge: NodeClaims by `phase` (`launching`, `launched`, `registered`, `initialized`,
/// `deleting`), set on every lifecycle pass.
pub const NODE_CLAIMS: &str = "berth_actuator_node_claims";
/// Counter: evictions requested while draining, by `result` (`evicted`, `blocked`, `gone`,
/// `deleted` after the termination grace period).
pub const EVICTIONS_TOTAL: &str = "berth_actuator_evictions_total";
/// Histogram: seconds from a NodeClaim's deletion to its finalizer's removal.
pub const DRAIN_DURATION_SECONDS: &str = "berth_actuator_drain_duration_seconds";
/// Counter: garbage-collection actions, by `action` (`terminate_instance`, `delete_claim`).
pub const GC_ACTIONS_TOTAL: &str = "berth_actuator_gc_actions_total";
/// Counter: disruption steps the lifecycle took, by `method` (`Expired`, `Drifted`, `Empty`,
/// `Underutilized`) and `action` (`recorded`, `deleted`, `rolled_back`).
pub const DISRUPTION_ACTIONS_TOTAL: &str = "berth_actuator_disruption_actions_total";
/// Counter: Kubernetes Events published, by `reason` (`DisruptionBlocked`,
/// `Unconsolidatable`, `DisruptionLaunching`, `DisruptionTerminating`); repeats dropped by the
/// de-duplication are not counted.
pub const EVENTS_TOTAL: &str = "berth_actuator_events_total";
/// Counter: Events the API server refused or that could not be sent, by `reason`.
pub const EVENT_ERRORS_TOTAL: &str = "berth_actuator_event_errors_total";
/// Histogram: seconds per gRPC call, by `method` and `code`.
pub const RPC_DURATION_SECONDS: &str = "berth_actuator_rpc_duration_seconds";

const RPC_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
const DRAIN_BUCKETS: &[f64] = &[
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];

/// The actuator's histograms and their buckets.
pub const BUCKETS: berth_service::Buckets = &[
    (
        berth_cloud::metrics::CLOUD_CALL_DURATION_SECONDS,
        berth_cloud::metrics::CLOUD_CALL_BUCKETS,
    ),
    (RPC_DURATION_SECONDS, RPC_BUCKETS),
    (DRAIN_DURATION_SECONDS, DRAIN_BUCKETS),
];

/// Installs the process-wide recorder (see [`berth_service::install_recorder`]) and describes
/// the actuator's metrics.
pub fn install() -> anyhow::Result<PrometheusHandle> {
    let handle = berth_service::install_recorder(&[BUCKETS])?;
    describe();
    Ok(handle)
}

/// Describes the actuator's metrics (help texts).
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(LAUNCHES_TOTAL, "Instances launched");
    describe_counter!(LAUNCH_FAILURES_TOTAL, "Launches that failed, by reason");
    describe_counter!(TERMINATIONS_TOTAL, "Instance terminations");
    describe_counter!(
        DISRUPTION_ACTIONS_TOTAL,
        "Disruption decisions recorded, carried out (candidate deleted) and rolled back"
    );
    describe_counter!(EVENTS_TOTAL, "Kubernetes Events published, by reason");
    describe_counter!(
        EVENT_ERRORS_TOTAL,
        "Kubernetes Events that failed to publish"
    );
    describe_gauge!(
        UNAVAILABLE_OFFERINGS,
        "Offerings hidden after an insufficient-capacity error"
    );
    describe_histogram!(
        RPC_DURATION_SECONDS,
        metrics::Unit::Seconds,
        "gRPC call duration"
    );
    describe_histogram!(
        berth_cloud::metrics::CLOUD_CALL_DURATION_SECONDS,
        metrics::Unit::Seconds,
        "Cloud call duration"
    );
    describe_counter!(
        berth_cloud::metrics::CLOUD_CALL_ERRORS_TOTAL,
        "Failed cloud calls"
    );
}
