//! The scheduler's metric names, owned here once.

/// Histogram: seconds per solve (instance types fetched, model read, solver run).
pub const SCHEDULING_DURATION_SECONDS: &str = "berth_scheduler_scheduling_duration_seconds";
/// Histogram: pending pods per solved batch.
pub const BATCH_SIZE: &str = "berth_scheduler_batch_size";
/// Gauge: pods waiting for capacity after the last solve, by `reason` (`nominated`,
/// `unschedulable`, `waiting` for the next batch).
pub const PENDING_PODS: &str = "berth_scheduler_pending_pods";
/// Counter: NodeClaims launched, by `nodepool`.
pub const NODE_CLAIMS_LAUNCHED_TOTAL: &str = "berth_scheduler_nodeclaims_launched_total";
/// Counter: launches that failed for good, by `nodepool` and `code` (the cloud error's kind).
pub const LAUNCH_ERRORS_TOTAL: &str = "berth_scheduler_launch_errors_total";
/// Histogram: seconds from a pod's creation to its nomination.
pub const POD_NOMINATION_SECONDS: &str = "berth_scheduler_pod_nomination_seconds";
/// Counter: instance-type fetches from the actuator, by `result` (`ok`, `error`).
pub const INSTANCE_TYPE_FETCHES_TOTAL: &str = "berth_scheduler_instance_type_fetches_total";
/// Counter: `Sync` streams opened by watchers.
pub const SYNC_STREAMS_TOTAL: &str = "berth_scheduler_sync_streams_total";
/// Counter: batches applied from watchers, by `kind` (`snapshot`, `delta`).
pub const BATCHES_APPLIED_TOTAL: &str = "berth_scheduler_batches_applied_total";

/// Counter: disruption decisions, by `method` and `decision` (`executed`, `invalidated` on
/// validation, `failed` when the actuator refused).
pub const DISRUPTION_DECISIONS_TOTAL: &str = "berth_scheduler_disruption_decisions_total";
/// Counter: nodes disrupted, by `method`.
pub const DISRUPTION_NODES_TOTAL: &str = "berth_scheduler_disruption_nodes_total";
/// Gauge: nodes some disruption method could take (before budgets), at the last evaluation.
pub const DISRUPTION_ELIGIBLE_NODES: &str = "berth_scheduler_disruption_eligible_nodes";
/// Gauge: what each NodePool's nodes cost per hour now (their offerings' prices), by
/// `nodepool`; set at each disruption evaluation.
pub const NODEPOOL_COST_PER_HOUR: &str = "berth_scheduler_nodepool_cost_per_hour_dollars";
/// Gauge: nodes whose offering has no price in their NodePool's instance types (left out of
/// the cost), at the last evaluation.
pub const UNPRICED_NODES: &str = "berth_scheduler_unpriced_nodes";
/// Gauge: disruptions the NodePool's budgets still allow, by `nodepool` and `reason`.
pub const DISRUPTION_BUDGET_ALLOWED: &str = "berth_scheduler_disruption_budget_allowed";
/// Gauge: nodes of the NodePool being disrupted, by `nodepool` and `reason`.
pub const DISRUPTION_BUDGET_DISRUPTING: &str = "berth_scheduler_disruption_budget_disrupting";
/// Counter: consolidation searches (multi- and single-node), by `outcome`: `searched`,
/// `skipped` (the cluster is as it was when a search last found nothing), `timed_out`.
pub const DISRUPTION_CONSOLIDATION_SEARCHES_TOTAL: &str =
    "berth_scheduler_disruption_consolidation_searches_total";
/// Histogram: seconds per disruption evaluation (every method).
pub const DISRUPTION_EVALUATION_SECONDS: &str = "berth_scheduler_disruption_evaluation_seconds";

const SECONDS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
const POD_WAIT: &[f64] = &[
    0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];
const PODS: &[f64] = &[1.0, 5.0, 10.0, 50.0, 100.0, 500.0, 1000.0, 5000.0, 10000.0];

/// The scheduler's histograms and their buckets.
pub const BUCKETS: berth_service::Buckets = &[
    (SCHEDULING_DURATION_SECONDS, SECONDS),
    (BATCH_SIZE, PODS),
    (POD_NOMINATION_SECONDS, POD_WAIT),
    (DISRUPTION_EVALUATION_SECONDS, SECONDS),
];

pub fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_histogram!(
        SCHEDULING_DURATION_SECONDS,
        Unit::Seconds,
        "Duration of a solve"
    );
    describe_histogram!(BATCH_SIZE, "Pending pods per solved batch");
    describe_gauge!(PENDING_PODS, "Pods waiting for capacity, by reason");
    describe_counter!(NODE_CLAIMS_LAUNCHED_TOTAL, "NodeClaims launched");
    describe_counter!(LAUNCH_ERRORS_TOTAL, "Launches that failed, by code");
    describe_histogram!(
        POD_NOMINATION_SECONDS,
        Unit::Seconds,
        "From a pod's creation to its nomination"
    );
    describe_counter!(
        INSTANCE_TYPE_FETCHES_TOTAL,
        "Instance-type fetches from the actuator"
    );
    describe_counter!(SYNC_STREAMS_TOTAL, "Sync streams opened by watchers");
    describe_counter!(
        DISRUPTION_DECISIONS_TOTAL,
        "Disruption decisions, by outcome"
    );
    describe_counter!(DISRUPTION_NODES_TOTAL, "Nodes disrupted");
    describe_counter!(
        DISRUPTION_CONSOLIDATION_SEARCHES_TOTAL,
        "Consolidation searches, by outcome"
    );
    describe_gauge!(
        NODEPOOL_COST_PER_HOUR,
        "What each NodePool's nodes cost per hour, in dollars"
    );
    describe_gauge!(UNPRICED_NODES, "Nodes left out of the cost: no price");
    describe_gauge!(
        DISRUPTION_ELIGIBLE_NODES,
        "Nodes a disruption method could take"
    );
    describe_gauge!(
        DISRUPTION_BUDGET_ALLOWED,
        "Disruptions the budgets allow now"
    );
    describe_gauge!(DISRUPTION_BUDGET_DISRUPTING, "Nodes being disrupted");
    describe_histogram!(
        DISRUPTION_EVALUATION_SECONDS,
        Unit::Seconds,
        "Duration of a disruption evaluation"
    );
    describe_counter!(BATCHES_APPLIED_TOTAL, "Batches applied from watchers");
}
