//! Pods nominated to NodeClaims still in flight count in topology (spread, affinity,
//! anti-affinity) exactly as pods on existing nodes do, through the API the scheduler service
//! uses: a [`ClusterModel`] fed by the watcher, its `input`, `solve`, then `record_launch` and
//! `nominate` with the plan. Every plan also passes the independent checker.

mod common;

use std::collections::BTreeMap;
use std::time::SystemTime;

use berth_scheduler_core::cluster::{ClusterModel, node_claim_for};
use berth_scheduler_core::labels;
use berth_scheduler_core::model::*;
use berth_scheduler_core::solver::Plan;
use berth_scheduler_core::sync::{Batch, BatchKind, Change, NominationTarget, Object};
use common::*;

/// The scheduler service's loop, without the I/O: solves over the model and records the
/// plan's launches and nominations the way `berth-scheduler`'s engine does.
struct Scheduler {
    model: ClusterModel,
    sequence: u64,
    types: BTreeMap<String, Vec<InstanceType>>,
    launched: usize,
    /// Whether the watcher reports each launched claim (as it will once it is created)
    /// before the next solve, or the claim is only known as launched by this scheduler.
    report_claims: bool,
    /// Every claim launched, by name.
    claims: BTreeMap<String, NodeClaim>,
    /// Every nomination sent as feedback, in order.
    nominations: Vec<(ObjectKey, String)>,
}

impl Scheduler {
    fn new(report_claims: bool) -> Self {
        let mut s = Self {
            model: ClusterModel::default(),
            sequence: 0,
            types: [("default".to_owned(), catalog())].into(),
            launched: 0,
            report_claims,
            claims: BTreeMap::new(),
            nominations: Vec::new(),
        };
        s.batch(
            BatchKind::SnapshotEnd,
            vec![Change::Upsert(Object::NodePool(pool("default")))],
        );
        s
    }

    fn batch(&mut self, kind: BatchKind, changes: Vec<Change>) {
        self.sequence += 1;
        self.model
            .apply(Batch {
                sequence: self.sequence,
                kind,
                changes,
            })
            .unwrap();
    }

    fn arrive(&mut self, pods: Vec<Pod>) {
        let changes = pods
            .into_iter()
            .map(|p| Change::Upsert(Object::Pod(p)))
            .collect();
        self.batch(BatchKind::Delta, changes);
    }

    /// One solve; the plan's claims are launched (in flight, never initialized here).
    fn round(&mut self) -> Plan {
        let now = SystemTime::UNIX_EPOCH;
        let input = self.model.input(&self.types, now);
        let plan = solve(&input);
        let mut reported = Vec::new();
        for new in &plan.new_node_claims {
            let np = self.model.node_pool(&new.node_pool).cloned().unwrap();
            let name = format!("{}-{}", np.name, self.launched);
            self.launched += 1;
            let claim = node_claim_for(new, &np, &name, now);
            self.model.record_launch(claim.clone(), &new.pods);
            for p in &new.pods {
                self.nominations.push((p.clone(), name.clone()));
            }
            self.claims.insert(name, claim.clone());
            reported.push(Change::Upsert(Object::NodeClaim(claim)));
        }
        for p in &plan.placements {
            if let NominationTarget::NodeClaim(c) = &p.target {
                self.model.nominate(p.pod.clone(), c);
                self.nominations.push((p.pod.clone(), c.clone()));
            }
        }
        if self.report_claims && !reported.is_empty() {
            self.batch(BatchKind::Delta, reported);
        }
        plan
    }

    /// The zone of the claim `pod` is nominated to.
    fn zone_of(&self, pod: &str) -> Option<String> {
        let claim = self.model.nomination(&ObjectKey::new("default", pod))?;
        self.claims[claim]
            .labels
            .get(labels::TOPOLOGY_ZONE)
            .cloned()
    }

    /// No pod was nominated twice (the engine sends every nomination as feedback).
    fn assert_nominated_once(&self) {
        let mut seen = std::collections::BTreeSet::new();
        for (p, _) in &self.nominations {
            assert!(
                seen.insert(p),
                "{p} was nominated again: {:?}",
                self.nominations
            );
        }
    }
}

fn term(key: &str, app: &str) -> PodAffinityTerm {
    PodAffinityTerm {
        label_selector: Some(selector(app)),
        topology_key: key.into(),
        ..Default::default()
    }
}

/// A replica spread over zones a, b and c (allowed by its node affinity), maxSkew 1.
fn spread_web(name: &str) -> Pod {
    let mut p = with_affinity(
        app(name, "web"),
        vec![vec![Requirement::new(
            labels::TOPOLOGY_ZONE,
            Operator::In,
            &ZONES,
        )]],
    );
    p.topology_spread = vec![TopologySpreadConstraint {
        max_skew: 1,
        topology_key: labels::TOPOLOGY_ZONE.into(),
        when_unsatisfiable: WhenUnsatisfiable::DoNotSchedule,
        label_selector: Some(selector("web")),
        min_domains: None,
        match_label_keys: vec![],
        node_affinity_policy: NodeInclusionPolicy::Honor,
        node_taints_policy: NodeInclusionPolicy::Ignore,
    }];
    p
}

fn spread_counts_pods_on_in_flight_claims(report_claims: bool) {
    let mut s = Scheduler::new(report_claims);
    s.arrive(vec![spread_web("web-0"), spread_web("web-1")]);
    let plan = s.round();
    assert_eq!(plan.new_node_claims.len(), 2, "{plan:#?}");
    // The third replica arrives while the first two's claims are in flight.
    s.arrive(vec![spread_web("web-2")]);
    let plan = s.round();
    assert!(plan.unschedulable.is_empty(), "{:?}", plan.unschedulable);
    let zones: std::collections::BTreeSet<String> = (0..3)
        .map(|i| {
            s.zone_of(&format!("web-{i}"))
                .expect("a spread pod's claim pins its zone")
        })
        .collect();
    assert_eq!(
        zones,
        ZONES.iter().map(|z| z.to_string()).collect(),
        "the replicas' claims are not spread over the zones"
    );
    s.assert_nominated_once();
}

#[test]
fn spread_counts_pods_on_claims_launched_but_not_reported() {
    spread_counts_pods_on_in_flight_claims(false);
}

#[test]
fn spread_counts_pods_on_claims_the_watcher_reported() {
    spread_counts_pods_on_in_flight_claims(true);
}

#[test]
fn zone_anti_affinity_avoids_pods_on_in_flight_claims() {
    let solo = |name: &str| {
        let mut p = app(name, "solo");
        p.pod_anti_affinity = Some(PodAffinity {
            required: vec![term(labels::TOPOLOGY_ZONE, "solo")],
            preferred: vec![],
        });
        p
    };
    let mut s = Scheduler::new(true);
    s.arrive(vec![solo("solo-0")]);
    s.round();
    let first = s.zone_of("solo-0").expect("its claim pins the zone");
    s.arrive(vec![solo("solo-1")]);
    let plan = s.round();
    assert!(plan.unschedulable.is_empty(), "{:?}", plan.unschedulable);
    let second = s.zone_of("solo-1").expect("its claim pins the zone");
    assert_ne!(first, second, "solo-1 shares a zone with solo-0");
    s.assert_nominated_once();
}

#[test]
fn anti_affinity_of_pods_on_in_flight_claims_is_symmetric() {
    let mut loner = app("loner", "loner");
    loner.pod_anti_affinity = Some(PodAffinity {
        required: vec![term(labels::TOPOLOGY_ZONE, "web")],
        preferred: vec![],
    });
    let mut s = Scheduler::new(true);
    s.arrive(vec![loner]);
    s.round();
    let loner_zone = s.zone_of("loner").expect("its claim pins the zone");
    s.arrive(vec![app("web-0", "web")]);
    let plan = s.round();
    assert!(plan.unschedulable.is_empty(), "{:?}", plan.unschedulable);
    let web_zone = s
        .zone_of("web-0")
        .expect("a pod selected by anti-affinity gets its zone pinned");
    assert_ne!(
        web_zone, loner_zone,
        "web-0 went where loner's anti-affinity excludes it"
    );
    s.assert_nominated_once();
}

#[test]
fn zone_affinity_follows_pods_on_in_flight_claims() {
    let db = with_affinity(
        app("db", "db"),
        vec![vec![Requirement::new(
            labels::TOPOLOGY_ZONE,
            Operator::In,
            &["us-east-1b"],
        )]],
    );
    let mut s = Scheduler::new(true);
    s.arrive(vec![db]);
    s.round();
    assert_eq!(s.zone_of("db").as_deref(), Some("us-east-1b"));
    let mut client = app("client", "client");
    client.pod_affinity = Some(PodAffinity {
        required: vec![term(labels::TOPOLOGY_ZONE, "db")],
        preferred: vec![],
    });
    s.arrive(vec![client]);
    let plan = s.round();
    assert!(plan.unschedulable.is_empty(), "{:?}", plan.unschedulable);
    assert_eq!(s.zone_of("client").as_deref(), Some("us-east-1b"));
    s.assert_nominated_once();
}
