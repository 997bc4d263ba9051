//! The watcher's metric names, owned here once.

/// Gauge: objects the scheduler holds (sent and not deleted), by `kind`.
pub const OBJECTS: &str = "berth_watcher_objects";
/// Counter: delta batches sent.
pub const DELTAS_SENT_TOTAL: &str = "berth_watcher_deltas_sent_total";
/// Counter: changes sent (upserts and deletes), snapshots included, by `kind` (`snapshot`,
/// `delta`).
pub const CHANGES_SENT_TOTAL: &str = "berth_watcher_changes_sent_total";
/// Counter: `Sync` streams opened after the first (scheduler restarts, cut connections).
pub const STREAM_RECONNECTS_TOTAL: &str = "berth_watcher_stream_reconnects_total";
/// Gauge: batches sent and not yet acknowledged.
pub const BATCHES_IN_FLIGHT: &str = "berth_watcher_batches_in_flight";
/// Counter: watch errors by `kind` (the watch backs off and relists).
pub const WATCH_ERRORS_TOTAL: &str = "berth_watcher_watch_errors_total";
/// Counter: objects left out because they do not convert, by `kind`.
pub const CONVERSION_ERRORS_TOTAL: &str = "berth_watcher_conversion_errors_total";
/// Counter: pod events published, by `reason` (`Nominated`, `FailedProvisioning`).
pub const EVENTS_PUBLISHED_TOTAL: &str = "berth_watcher_events_published_total";
/// Counter: pod events not published, by `why` (`duplicate`, `rate_limited`).
pub const EVENTS_DROPPED_TOTAL: &str = "berth_watcher_events_dropped_total";
/// Counter: pod events the API server refused.
pub const EVENT_PUBLISH_ERRORS_TOTAL: &str = "berth_watcher_event_publish_errors_total";
/// Gauge: what each NodePool's nodes hold, by `nodepool` and `resource` (`cpu` in cores,
/// `memory` and `ephemeral-storage` in bytes, `pods`, `nodes`: the NodePool's
/// `status.resources`), at each status pass.
pub const NODEPOOL_USAGE: &str = "berth_watcher_nodepool_usage";
/// Gauge: each NodePool's `spec.limits`, by `nodepool` and `resource`, in the same units.
pub const NODEPOOL_LIMIT: &str = "berth_watcher_nodepool_limit";
/// Counter: NodePool status updates written.
pub const NODE_POOL_STATUS_UPDATES_TOTAL: &str = "berth_watcher_node_pool_status_updates_total";
/// Counter: NodePool status updates refused.
pub const NODE_POOL_STATUS_ERRORS_TOTAL: &str = "berth_watcher_node_pool_status_errors_total";

/// The watcher's histograms and their buckets (none yet).
pub const BUCKETS: berth_service::Buckets = &[];

pub fn describe() {
    use metrics::{describe_counter, describe_gauge};
    describe_gauge!(OBJECTS, "Objects the scheduler holds, by kind");
    describe_gauge!(
        NODEPOOL_USAGE,
        "What each NodePool's nodes hold, by resource"
    );
    describe_gauge!(NODEPOOL_LIMIT, "Each NodePool's limits, by resource");
    describe_counter!(DELTAS_SENT_TOTAL, "Delta batches sent to the scheduler");
    describe_counter!(CHANGES_SENT_TOTAL, "Changes sent to the scheduler");
    describe_counter!(STREAM_RECONNECTS_TOTAL, "Sync streams reopened");
    describe_gauge!(BATCHES_IN_FLIGHT, "Batches sent and not yet acknowledged");
    describe_counter!(WATCH_ERRORS_TOTAL, "Watch errors, by kind");
    describe_counter!(
        CONVERSION_ERRORS_TOTAL,
        "Objects left out: they do not convert"
    );
    describe_counter!(EVENTS_PUBLISHED_TOTAL, "Pod events published");
    describe_counter!(
        EVENTS_DROPPED_TOTAL,
        "Pod events dropped (duplicate, rate limited)"
    );
    describe_counter!(
        EVENT_PUBLISH_ERRORS_TOTAL,
        "Pod events the API server refused"
    );
    describe_counter!(NODE_POOL_STATUS_UPDATES_TOTAL, "NodePool status updates");
    describe_counter!(
        NODE_POOL_STATUS_ERRORS_TOTAL,
        "NodePool status updates refused"
    );
}
