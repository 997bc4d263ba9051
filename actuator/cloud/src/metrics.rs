//! Metric names of the cloud layer, owned here once (the actuator exposes them).

use std::time::Duration;

/// Histogram: seconds per cloud call, labelled `provider`, `method`.
pub const CLOUD_CALL_DURATION_SECONDS: &str = "berth_actuator_cloud_call_duration_seconds";
/// Counter: failed cloud calls, labelled `provider`, `method`, `code`.
pub const CLOUD_CALL_ERRORS_TOTAL: &str = "berth_actuator_cloud_call_errors_total";

/// Buckets for [`CLOUD_CALL_DURATION_SECONDS`] (EC2 calls take 50 ms to tens of seconds).
pub const CLOUD_CALL_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

pub(crate) fn record_call(provider: &'static str, method: &'static str, took: Duration) {
    metrics::histogram!(CLOUD_CALL_DURATION_SECONDS, "provider" => provider, "method" => method)
        .record(took.as_secs_f64());
}

pub(crate) fn record_error(provider: &'static str, method: &'static str, code: &'static str) {
    metrics::counter!(CLOUD_CALL_ERRORS_TOTAL, "provider" => provider, "method" => method, "code" => code)
        .increment(1);
}
