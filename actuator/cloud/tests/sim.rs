//! The sim cloud keeps the `CloudProvider` contract.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use berth_catalog::Catalog;
use berth_cloud::sim::UNAVAILABLE_OFFERING_TTL;
use berth_cloud::{CloudError, CloudProvider, InstanceState, Metered, SimCloud, SimOptions};
use berth_scheduler_core::labels;
use berth_scheduler_core::model::{
    CapacityType, Disruption, NodeClaim, NodeClassRef, NodePool, Operator, Requirement, Resources,
};

/// A clock tests move by hand.
#[derive(Clone)]
struct ManualClock(Arc<Mutex<SystemTime>>);

impl ManualClock {
    fn new() -> Self {
        Self(Arc::new(Mutex::new(
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        )))
    }

    fn advance(&self, by: Duration) {
        *self.0.lock().unwrap() += by;
    }
}

fn cloud(boot: Duration, termination: Duration) -> (SimCloud, ManualClock) {
    let clock = ManualClock::new();
    let c = clock.clone();
    let options = SimOptions {
        boot_delay: boot,
        termination_delay: termination,
        clock: Arc::new(move || *c.0.lock().unwrap()),
        ..SimOptions::default()
    };
    (SimCloud::new(&Catalog::builtin(), options), clock)
}

fn class_ref() -> NodeClassRef {
    NodeClassRef {
        group: "karpenter.k8s.aws".to_owned(),
        kind: "EC2NodeClass".to_owned(),
        name: "default".to_owned(),
    }
}

fn claim(name: &str, reqs: &[(&str, &[&str])]) -> NodeClaim {
    let mut c = NodeClaim::new(name, "default", class_ref());
    c.requirements = reqs
        .iter()
        .map(|(k, v)| Requirement::new(k, Operator::In, v))
        .collect();
    c
}

fn pool(reqs: &[(&str, &[&str])]) -> NodePool {
    NodePool {
        name: "default".to_owned(),
        weight: 0,
        labels: Default::default(),
        annotations: Default::default(),
        requirements: reqs
            .iter()
            .map(|(k, v)| Requirement::new(k, Operator::In, v))
            .collect(),
        taints: vec![],
        startup_taints: vec![],
        node_class_ref: class_ref(),
        limits: Resources::new(),
        expire_after: None,
        termination_grace_period: None,
        disruption: Disruption {
            consolidation_policy:
                berth_scheduler_core::model::ConsolidationPolicy::WhenEmptyOrUnderutilized,
            consolidate_after: None,
            budgets: vec![],
        },
        ready: true,
        not_ready_reason: String::new(),
    }
}

const M5: (&str, &[&str]) = (labels::INSTANCE_TYPE, &["m5.large", "m5.xlarge"]);

#[tokio::test]
async fn create_is_idempotent_by_claim_name() {
    let (cloud, _) = cloud(Duration::ZERO, Duration::ZERO);
    let c = claim("default-abc12", &[M5]);
    let first = cloud.create(&c).await.unwrap();
    let again = cloud.create(&c).await.unwrap();
    assert_eq!(first.provider_id, again.provider_id);
    assert_eq!(cloud.launched(), 1);
    assert_eq!(cloud.list().await.unwrap().len(), 1);
    assert_eq!(first.node_claim, "default-abc12");
    assert_eq!(first.labels[labels::NODE_POOL], "default");
    assert_eq!(first.labels[labels::INSTANCE_TYPE], first.instance_type);
    assert!(
        first
            .provider_id
            .starts_with(&format!("sim:///{}/i-", first.zone))
    );
}

#[tokio::test]
async fn spot_first_then_cheapest_within_the_requirements() {
    let (cloud, _) = cloud(Duration::ZERO, Duration::ZERO);
    let both = cloud.create(&claim("a", &[M5])).await.unwrap();
    assert_eq!(both.capacity_type, CapacityType::Spot);
    assert_eq!(both.instance_type, "m5.large", "the cheaper of the two");

    let on_demand = cloud
        .create(&claim(
            "b",
            &[
                M5,
                (labels::CAPACITY_TYPE, &["on-demand"]),
                (labels::TOPOLOGY_ZONE, &["us-east-1c"]),
            ],
        ))
        .await
        .unwrap();
    assert_eq!(on_demand.capacity_type, CapacityType::OnDemand);
    assert_eq!(on_demand.zone, "us-east-1c");
    assert!(on_demand.allocatable.get("cpu") < on_demand.capacity.get("cpu"));
}

#[tokio::test]
async fn an_offering_without_capacity_is_skipped_cached_and_hidden_for_a_while() {
    let (cloud, clock) = cloud(Duration::ZERO, Duration::ZERO);
    let only = [
        (labels::INSTANCE_TYPE, &["m5.large"][..]),
        (labels::TOPOLOGY_ZONE, &["us-east-1a"][..]),
    ];
    cloud.remove_capacity("m5.large", "us-east-1a", CapacityType::Spot);
    let i = cloud.create(&claim("a", &only)).await.unwrap();
    assert_eq!(
        i.capacity_type,
        CapacityType::OnDemand,
        "fell back past the spot offering"
    );

    let types = cloud.instance_types(&pool(&[])).await.unwrap();
    let m5 = types.iter().find(|t| t.name == "m5.large").unwrap();
    let spot_1a = |t: &berth_scheduler_core::model::InstanceType| {
        t.offerings
            .iter()
            .find(|o| o.zone == "us-east-1a" && o.capacity_type == CapacityType::Spot)
            .unwrap()
            .available
    };
    assert!(!spot_1a(m5), "the failed offering is listed as unavailable");
    assert!(
        m5.offerings.iter().filter(|o| o.available).count() > 1,
        "other offerings stay available"
    );

    cloud.restore_capacity("m5.large", "us-east-1a", CapacityType::Spot);
    clock.advance(UNAVAILABLE_OFFERING_TTL + Duration::from_secs(1));
    let types = cloud.instance_types(&pool(&[])).await.unwrap();
    assert!(spot_1a(
        types.iter().find(|t| t.name == "m5.large").unwrap()
    ));
}

#[tokio::test]
async fn no_capacity_anywhere_is_insufficient_capacity_listing_the_offerings() {
    let (cloud, _) = cloud(Duration::ZERO, Duration::ZERO);
    let only = [
        (labels::INSTANCE_TYPE, &["m5.large"][..]),
        (labels::TOPOLOGY_ZONE, &["us-east-1b"][..]),
    ];
    cloud.remove_capacity("m5.large", "us-east-1b", CapacityType::Spot);
    cloud.remove_capacity("m5.large", "us-east-1b", CapacityType::OnDemand);
    match cloud.create(&claim("a", &only)).await {
        Err(CloudError::InsufficientCapacity { offerings }) => {
            assert_eq!(offerings.len(), 2);
            assert!(
                offerings
                    .iter()
                    .all(|o| o.instance_type == "m5.large" && o.zone == "us-east-1b")
            );
        }
        other => panic!("expected insufficient capacity, got {other:?}"),
    }
    assert_eq!(cloud.launched(), 0);
    // The cache now hides both: the next launch fails without trying them.
    assert!(matches!(
        cloud.create(&claim("b", &only)).await,
        Err(CloudError::InsufficientCapacity { offerings }) if offerings.is_empty()
    ));
}

#[tokio::test]
async fn nothing_compatible_is_a_launch_error() {
    let (cloud, _) = cloud(Duration::ZERO, Duration::ZERO);
    let err = cloud
        .create(&claim("a", &[(labels::INSTANCE_TYPE, &["no-such.type"])]))
        .await
        .unwrap_err();
    assert!(
        matches!(err, CloudError::Launch { ref code, .. } if code == "NoCompatibleOffering"),
        "{err:?}"
    );
}

#[tokio::test]
async fn boot_and_termination_follow_the_clock_and_delete_ends_in_not_found() {
    let (cloud, clock) = cloud(Duration::from_secs(40), Duration::from_secs(20));
    let i = cloud.create(&claim("a", &[M5])).await.unwrap();
    assert_eq!(i.state, InstanceState::Pending);
    clock.advance(Duration::from_secs(40));
    assert_eq!(cloud.get("a").await.unwrap().state, InstanceState::Running);

    cloud.delete("a").await.unwrap();
    assert_eq!(
        cloud.get("a").await.unwrap().state,
        InstanceState::ShuttingDown
    );
    cloud.delete("a").await.unwrap(); // repeating while it shuts down is fine
    clock.advance(Duration::from_secs(20));
    assert!(matches!(
        cloud.delete("a").await,
        Err(CloudError::NotFound { .. })
    ));
    assert!(matches!(
        cloud.get("a").await,
        Err(CloudError::NotFound { .. })
    ));
    assert!(cloud.list().await.unwrap().is_empty());
    // A relaunch under the same name after it is gone is a new instance.
    let again = cloud.create(&claim("a", &[M5])).await.unwrap();
    assert_ne!(again.provider_id, i.provider_id);
}

#[tokio::test]
async fn instance_types_list_every_type_the_pool_allows() {
    let (cloud, _) = cloud(Duration::ZERO, Duration::ZERO);
    let all = cloud.instance_types(&pool(&[])).await.unwrap();
    assert!(all.len() > 500, "{}", all.len());
    let arm = cloud
        .instance_types(&pool(&[(labels::ARCH, &["arm64"])]))
        .await
        .unwrap();
    assert!(!arm.is_empty() && arm.len() < all.len());
    assert!(
        arm.iter().all(|t| t
            .requirements
            .iter()
            .any(|r| r.key == labels::ARCH && r.values == ["arm64"])),
        "arm64 types only"
    );
}

#[tokio::test]
async fn injected_errors_come_once_in_order_and_calls_are_recorded() {
    let (cloud, _) = cloud(Duration::ZERO, Duration::ZERO);
    cloud.inject_error(
        "create",
        CloudError::Unavailable {
            message: "throttled".to_owned(),
        },
    );
    assert!(matches!(
        cloud.create(&claim("a", &[M5])).await,
        Err(CloudError::Unavailable { .. })
    ));
    cloud.create(&claim("a", &[M5])).await.unwrap();
    let calls = cloud.calls();
    assert_eq!(calls.len(), 2);
    assert!(
        calls
            .iter()
            .all(|c| c.method == "create" && c.subject == "a")
    );
}

#[test]
fn metered_records_durations_and_errors_by_code() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let (sim, _) = cloud(Duration::ZERO, Duration::ZERO);
    let metered = Metered::new(sim);
    metrics::with_local_recorder(&recorder, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            metered.create(&claim("a", &[M5])).await.unwrap();
            assert!(metered.get("missing").await.is_err());
            metered.delete("a").await.unwrap();
            // NotFound from delete confirms termination: not an error.
            assert!(metered.delete("a").await.is_err());
        });
    });
    let snapshot = snapshotter.snapshot().into_vec();
    let find = |name: &str, method: &str| {
        snapshot.iter().find(|(key, ..)| {
            key.key().name() == name
                && key
                    .key()
                    .labels()
                    .any(|l| l.key() == "method" && l.value() == method)
        })
    };
    match find(berth_cloud::metrics::CLOUD_CALL_DURATION_SECONDS, "delete") {
        Some((_, _, _, DebugValue::Histogram(values))) => assert_eq!(values.len(), 2),
        other => panic!("no delete durations: {other:?}"),
    }
    match find(berth_cloud::metrics::CLOUD_CALL_ERRORS_TOTAL, "get") {
        Some((key, _, _, DebugValue::Counter(1))) => assert!(
            key.key()
                .labels()
                .any(|l| l.key() == "code" && l.value() == "not_found")
        ),
        other => panic!("no get error: {other:?}"),
    }
    assert!(
        find(berth_cloud::metrics::CLOUD_CALL_ERRORS_TOTAL, "delete").is_none(),
        "delete's NotFound is not an error"
    );
}
