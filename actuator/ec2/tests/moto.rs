//! The EC2 provider against moto over HTTP (`tests/common` starts it on 127.0.0.1:0).

mod common;

use std::time::Duration;

use berth_api::v1::EC2NodeClassSpec;
use berth_cloud::{CloudError, CloudProvider};
use berth_ec2::api::Filter;
use berth_ec2::{Ec2Api, Ec2Cloud, Ec2Options, SdkApi};
use berth_scheduler_core::labels;
use berth_scheduler_core::model::{
    CapacityType, NodeClaim, NodeClassRef, Operator, Requirement, Taint, TaintEffect,
};
use common::{Faulty, Fixture, ManualClock, fixture};

use common::AL2023_X86;

fn node_class() -> EC2NodeClassSpec {
    serde_json::from_value(serde_json::json!({
        "subnetSelectorTerms": [{"tags": {"karpenter.sh/discovery": "ci"}}],
        "securityGroupSelectorTerms": [{"tags": {"karpenter.sh/discovery": "ci"}}],
        "amiSelectorTerms": [{"alias": "al2023@latest"}],
        "tags": {"team": "ci"},
        "kubelet": {"maxPods": 58}
    }))
    .unwrap()
}

fn options(clock: &ManualClock) -> Ec2Options {
    let mut o = Ec2Options::new(
        "gitlab-ci",
        "https://example.eks.amazonaws.com",
        "us-east-1",
    );
    o.cluster_ca_bundle = "Q0E=".to_owned();
    o.clock = clock.clock();
    o
}

fn cloud<A: Ec2Api>(api: A, clock: &ManualClock) -> Ec2Cloud<A> {
    let c = Ec2Cloud::new(api, options(clock));
    c.set_node_class("default", node_class());
    c
}

fn claim(name: &str, types: &[&str], capacity_type: &str) -> NodeClaim {
    let mut c = NodeClaim::new(
        name,
        "gitlab",
        NodeClassRef {
            group: "karpenter.k8s.aws".into(),
            kind: "EC2NodeClass".into(),
            name: "default".into(),
        },
    );
    c.requirements = vec![
        Requirement::new(labels::INSTANCE_TYPE, Operator::In, types),
        Requirement::new(labels::CAPACITY_TYPE, Operator::In, &[capacity_type]),
        Requirement::new(labels::TOPOLOGY_ZONE, Operator::In, &["us-east-1a"]),
    ];
    c.taints = vec![Taint {
        key: "dedicated".into(),
        value: "gitlab-runner-auto".into(),
        effect: TaintEffect::NoSchedule,
    }];
    c
}

async fn instances_tagged(f: &Fixture, claim: &str) -> Vec<aws_sdk_ec2::types::Instance> {
    let out = f
        .ec2
        .describe_instances()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("tag:karpenter.sh/nodeclaim")
                .values(claim)
                .build(),
        )
        .send()
        .await
        .unwrap();
    out.reservations()
        .iter()
        .flat_map(|r| r.instances().iter().cloned())
        .filter(|i| i.state().and_then(|s| s.name()).map(|n| n.as_str()) != Some("terminated"))
        .collect()
}

#[tokio::test]
async fn resolves_subnets_security_groups_and_the_alias_ami() {
    let f = fixture().await;
    let clock = ManualClock::new();
    let c = cloud(SdkApi::from_conf(&f.conf), &clock);
    let r = c.resolve("default").await.unwrap();
    let mut got: Vec<(String, String)> = r
        .subnets
        .iter()
        .map(|s| (s.id.clone(), s.zone.clone()))
        .collect();
    got.sort();
    let mut want = f.subnets.clone();
    want.sort();
    assert_eq!(got, want);
    assert_eq!(r.security_groups.len(), 1);
    assert_eq!(r.security_groups[0].id, f.security_group);
    assert_eq!(r.amis.len(), 1, "only the x86_64 parameter exists");
    assert_eq!(r.amis[0].id, f.amis[0]);
    assert_eq!(r.amis[0].arch, "amd64");
}

#[tokio::test]
async fn a_class_that_cannot_resolve_is_not_ready_with_the_reason() {
    let f = fixture().await;
    let clock = ManualClock::new();
    let c = Ec2Cloud::new(SdkApi::from_conf(&f.conf), options(&clock));
    let mut spec = node_class();
    spec.subnet_selector_terms[0].tags =
        [("karpenter.sh/discovery".to_owned(), "nope".to_owned())].into();
    c.set_node_class("default", spec);
    let err = c
        .create(&claim("a", &["m5.large"], "on-demand"))
        .await
        .unwrap_err();
    match err {
        CloudError::NodeClassNotReady { reason } => {
            assert!(reason.contains("SubnetsReady"), "{reason}");
            assert!(reason.contains("subnetSelectorTerms"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    let missing = c.resolve("other").await.unwrap_err();
    assert!(matches!(missing, CloudError::NodeClassNotReady { .. }));
}

#[tokio::test]
async fn launch_tags_the_instance_reuses_the_launch_template_and_is_idempotent() {
    let f = fixture().await;
    let clock = ManualClock::new();
    let c = cloud(SdkApi::from_conf(&f.conf), &clock);
    let first = c
        .create(&claim(
            "gitlab-abc12",
            &["m5.large", "m5.xlarge"],
            "on-demand",
        ))
        .await
        .unwrap();
    assert_eq!(first.instance_type, "m5.large", "the claim's cheapest type");
    assert_eq!(first.zone, "us-east-1a");
    assert_eq!(first.capacity_type, CapacityType::OnDemand);
    assert!(
        first.provider_id.starts_with("aws:///us-east-1a/i-"),
        "{}",
        first.provider_id
    );
    assert_eq!(first.image_id, f.amis[0]);
    assert!(first.allocatable.get("cpu") > 0 && first.allocatable.get("pods") == 58_000);
    assert_eq!(first.labels[labels::NODE_POOL], "gitlab");

    let tagged = instances_tagged(&f, "gitlab-abc12").await;
    assert_eq!(tagged.len(), 1);
    let tags: std::collections::BTreeMap<&str, &str> = tagged[0]
        .tags()
        .iter()
        .filter_map(|t| Some((t.key()?, t.value()?)))
        .collect();
    assert_eq!(tags["karpenter.sh/nodepool"], "gitlab");
    assert_eq!(tags["kubernetes.io/cluster/gitlab-ci"], "owned");
    assert_eq!(tags["eks:eks-cluster-name"], "gitlab-ci");
    assert_eq!(tags["team"], "ci", "the class's own tags");

    // Again: the same instance, nothing new launched.
    let again = c
        .create(&claim(
            "gitlab-abc12",
            &["m5.large", "m5.xlarge"],
            "on-demand",
        ))
        .await
        .unwrap();
    assert_eq!(again.provider_id, first.provider_id);
    assert_eq!(instances_tagged(&f, "gitlab-abc12").await.len(), 1);

    // Another claim with the same labels and taints reuses the launch template.
    c.create(&claim("gitlab-def34", &["m5.large"], "on-demand"))
        .await
        .unwrap();
    let templates = SdkApi::from_conf(&f.conf)
        .describe_launch_templates(vec![Filter::new("tag:berth.dev/cluster", &["gitlab-ci"])])
        .await
        .unwrap();
    assert_eq!(templates.len(), 1, "{templates:?}");
    assert!(templates[0].name.starts_with("berth/gitlab-ci/"));
}

#[tokio::test]
async fn a_restarted_actuator_finds_the_instance_instead_of_launching_another() {
    let f = fixture().await;
    let clock = ManualClock::new();
    let before = cloud(SdkApi::from_conf(&f.conf), &clock);
    let launched = before
        .create(&claim("gitlab-crash", &["m5.large"], "on-demand"))
        .await
        .unwrap();
    drop(before); // the process dies before the NodeClaim status is written
    let after = cloud(SdkApi::from_conf(&f.conf), &clock);
    let relaunched = after
        .create(&claim("gitlab-crash", &["m5.large"], "on-demand"))
        .await
        .unwrap();
    assert_eq!(relaunched.provider_id, launched.provider_id);
    assert_eq!(instances_tagged(&f, "gitlab-crash").await.len(), 1);
}

#[tokio::test]
async fn get_list_and_delete_until_not_found() {
    let f = fixture().await;
    let clock = ManualClock::new();
    let c = cloud(SdkApi::from_conf(&f.conf), &clock);
    let i = c
        .create(&claim("gitlab-gone", &["m5.large"], "on-demand"))
        .await
        .unwrap();
    assert_eq!(
        c.get("gitlab-gone").await.unwrap().provider_id,
        i.provider_id
    );
    assert_eq!(c.list().await.unwrap().len(), 1);
    assert!(matches!(
        c.get("never").await,
        Err(CloudError::NotFound { .. })
    ));

    c.delete("gitlab-gone").await.unwrap();
    let mut gone = false;
    for _ in 0..10 {
        match c.delete("gitlab-gone").await {
            Err(CloudError::NotFound { .. }) => {
                gone = true;
                break;
            }
            Ok(()) => tokio::time::sleep(Duration::from_millis(200)).await,
            Err(e) => panic!("{e:?}"),
        }
    }
    assert!(gone, "delete reports NotFound once the instance is gone");
    assert!(matches!(
        c.get("gitlab-gone").await,
        Err(CloudError::NotFound { .. })
    ));
    assert!(c.list().await.unwrap().is_empty());
}

#[tokio::test]
async fn insufficient_capacity_falls_back_to_the_next_type_and_hides_the_offering() {
    let f = fixture().await;
    let clock = ManualClock::new();
    let faulty = Faulty::new(SdkApi::from_conf(&f.conf));
    faulty.fail("m5.large");
    let c = cloud(faulty, &clock);
    let i = c
        .create(&claim(
            "gitlab-ice",
            &["m5.large", "m5.xlarge"],
            "on-demand",
        ))
        .await
        .unwrap();
    assert_eq!(i.instance_type, "m5.xlarge");
    assert_eq!(c.unavailable_offerings(), 1);

    let pool = nodepool();
    let types = c.instance_types(&pool).await.unwrap();
    let m5 = types
        .iter()
        .find(|t| t.name == "m5.large")
        .expect("listed although unavailable");
    let on_demand_1a = m5
        .offerings
        .iter()
        .find(|o| o.zone == "us-east-1a" && o.capacity_type == CapacityType::OnDemand)
        .unwrap();
    assert!(!on_demand_1a.available);

    // The next launch does not even ask for the hidden offering.
    c.create(&claim(
        "gitlab-ice2",
        &["m5.large", "m5.xlarge"],
        "on-demand",
    ))
    .await
    .unwrap();
    let last = c
        .api()
        .fleet_requests
        .lock()
        .unwrap()
        .last()
        .cloned()
        .unwrap();
    assert!(
        last.launch_templates
            .iter()
            .flat_map(|lt| &lt.overrides)
            .all(|o| o.instance_type != "m5.large")
    );

    // After the cache's TTL it is offered again.
    clock.advance(Duration::from_secs(181));
    assert_eq!(c.unavailable_offerings(), 0);
}

#[tokio::test]
async fn no_capacity_left_is_insufficient_capacity_listing_what_was_tried() {
    let f = fixture().await;
    let clock = ManualClock::new();
    let faulty = Faulty::new(SdkApi::from_conf(&f.conf));
    faulty.fail("m5.large");
    faulty.fail("m5.xlarge");
    let c = cloud(faulty, &clock);
    match c
        .create(&claim(
            "gitlab-none",
            &["m5.large", "m5.xlarge"],
            "on-demand",
        ))
        .await
    {
        Err(CloudError::InsufficientCapacity { offerings }) => {
            let mut names: Vec<&str> = offerings.iter().map(|o| o.instance_type.as_str()).collect();
            names.sort();
            assert_eq!(names, ["m5.large", "m5.xlarge"]);
        }
        other => panic!("{other:?}"),
    }
    assert!(instances_tagged(&f, "gitlab-none").await.is_empty());
}

#[tokio::test]
async fn spot_is_tried_first_when_the_claim_allows_both() {
    let f = fixture().await;
    let clock = ManualClock::new();
    let faulty = Faulty::new(SdkApi::from_conf(&f.conf));
    let c = cloud(faulty, &clock);
    let mut both = claim("gitlab-spot", &["m5.large"], "spot");
    both.requirements[1] =
        Requirement::new(labels::CAPACITY_TYPE, Operator::In, &["spot", "on-demand"]);
    c.create(&both).await.unwrap();
    let first = c.api().fleet_requests.lock().unwrap()[0].clone();
    assert!(first.spot);
    assert_eq!(first.client_token, "gitlab-spot");
}

fn nodepool() -> berth_scheduler_core::model::NodePool {
    berth_scheduler_core::model::NodePool {
        name: "gitlab".into(),
        weight: 0,
        labels: Default::default(),
        annotations: Default::default(),
        requirements: vec![Requirement::new(
            "karpenter.k8s.aws/instance-family",
            Operator::In,
            &["m5"],
        )],
        taints: vec![],
        startup_taints: vec![],
        node_class_ref: NodeClassRef {
            group: "karpenter.k8s.aws".into(),
            kind: "EC2NodeClass".into(),
            name: "default".into(),
        },
        limits: Default::default(),
        expire_after: None,
        termination_grace_period: None,
        disruption: berth_scheduler_core::model::Disruption {
            consolidation_policy: berth_scheduler_core::model::ConsolidationPolicy::WhenEmpty,
            consolidate_after: None,
            budgets: vec![],
        },
        ready: true,
        not_ready_reason: String::new(),
    }
}

#[tokio::test]
async fn instance_types_come_from_ec2_with_model_prices_when_the_pricing_api_fails() {
    let f = fixture().await;
    let clock = ManualClock::new();
    let c = cloud(SdkApi::from_conf(&f.conf), &clock);
    // moto has no Pricing API: on-demand prices come from the built-in model.
    assert!(
        SdkApi::from_conf(&f.conf)
            .on_demand_prices("us-east-1".into())
            .await
            .is_err()
    );
    let types = c.instance_types(&nodepool()).await.unwrap();
    assert!(types.len() >= 5, "{}", types.len());
    assert!(types.iter().all(|t| t.name.starts_with("m5")));
    let m5 = types.iter().find(|t| t.name == "m5.large").unwrap();
    let facts = berth_catalog::Catalog::builtin()
        .facts
        .into_iter()
        .find(|f| f.name == "m5.large")
        .unwrap();
    let model = berth_catalog::PriceModel::builtin().on_demand(&facts);
    let od = m5
        .offerings
        .iter()
        .find(|o| o.capacity_type == CapacityType::OnDemand)
        .unwrap();
    assert!((od.price - model).abs() < 1e-9, "{} vs {model}", od.price);
    // Only zones the class has subnets in are available.
    assert!(
        m5.offerings
            .iter()
            .filter(|o| o.available)
            .all(|o| o.zone == "us-east-1a" || o.zone == "us-east-1b")
    );
    assert!(
        m5.offerings
            .iter()
            .any(|o| o.zone == "us-east-1c" && !o.available)
    );
    // maxPods from the class's kubelet block.
    assert_eq!(m5.allocatable().get("pods"), 58_000);
}

#[tokio::test]
async fn unused_launch_templates_are_garbage_collected() {
    let f = fixture().await;
    let clock = ManualClock::new();
    let c = cloud(SdkApi::from_conf(&f.conf), &clock);
    c.create(&claim("gitlab-lt", &["m5.large"], "on-demand"))
        .await
        .unwrap();
    assert!(
        c.garbage_collect_launch_templates()
            .await
            .unwrap()
            .is_empty()
    );
    clock.advance(Duration::from_secs(3601));
    let deleted = c.garbage_collect_launch_templates().await.unwrap();
    assert_eq!(deleted.len(), 1);
    let left = SdkApi::from_conf(&f.conf)
        .describe_launch_templates(vec![Filter::new("tag:berth.dev/cluster", &["gitlab-ci"])])
        .await
        .unwrap();
    assert!(left.is_empty());
}

#[tokio::test]
async fn an_instance_is_drifted_once_the_alias_points_at_a_newer_ami() {
    let f = fixture().await;
    let clock = ManualClock::new();
    let c = cloud(SdkApi::from_conf(&f.conf), &clock);
    let nc = claim("gitlab-drift", &["m5.large"], "on-demand");
    c.create(&nc).await.unwrap();
    assert_eq!(c.is_drifted(&nc).await.unwrap(), None);
    f.moto.seed_parameter(AL2023_X86, &f.amis[1]);
    clock.advance(Duration::from_secs(61)); // the resolved class is re-read
    let drift = c.is_drifted(&nc).await.unwrap().expect("drifted");
    assert!(drift.0.starts_with("AMIDrift"), "{drift:?}");
}

async fn create_role(f: &Fixture, name: &str) {
    aws_sdk_iam::Client::new(&f.conf)
        .create_role()
        .role_name(name)
        .assume_role_policy_document(
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#,
        )
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn a_role_gets_an_instance_profile_that_follows_it_and_is_released_with_the_class() {
    let f = fixture().await;
    create_role(&f, "KarpenterNodeRole-ci").await;
    create_role(&f, "KarpenterNodeRole-ci-2").await;
    let clock = ManualClock::new();
    let api = SdkApi::from_conf(&f.conf);
    let c = Ec2Cloud::new(SdkApi::from_conf(&f.conf), options(&clock));
    let mut spec = node_class();
    spec.role = Some("KarpenterNodeRole-ci".to_owned());
    c.set_node_class("default", spec.clone());

    let resolved = c.resolve("default").await.unwrap();
    let profile = resolved.instance_profile.clone().unwrap();
    assert!(profile.starts_with("gitlab-ci_"), "{profile}");
    assert_eq!(
        api.get_instance_profile(profile.clone()).await.unwrap(),
        Some(vec!["KarpenterNodeRole-ci".to_owned()])
    );
    // The launch uses it: its launch template names the profile (moto's CreateFleet does not
    // copy the profile onto the instance, so the template is what can be checked).
    c.create(&claim("gitlab-iam", &["m5.large"], "on-demand"))
        .await
        .unwrap();
    let templates = api
        .describe_launch_templates(vec![Filter::new("tag:berth.dev/cluster", &["gitlab-ci"])])
        .await
        .unwrap();
    assert_eq!(templates.len(), 1, "{templates:?}");
    let versions = f
        .ec2
        .describe_launch_template_versions()
        .launch_template_name(&templates[0].name)
        .versions("$Latest")
        .send()
        .await
        .unwrap();
    let names: Vec<&str> = versions
        .launch_template_versions()
        .iter()
        .filter_map(|v| v.launch_template_data()?.iam_instance_profile()?.name())
        .collect();
    assert_eq!(names, vec![profile.as_str()]);

    // Another role: the same profile now holds that one only (after the cache expires).
    spec.role = Some("KarpenterNodeRole-ci-2".to_owned());
    c.set_node_class("default", spec.clone());
    clock.advance(std::time::Duration::from_secs(61));
    let again = c.resolve("default").await.unwrap();
    assert_eq!(again.instance_profile.as_deref(), Some(profile.as_str()));
    assert_eq!(
        api.get_instance_profile(profile.clone()).await.unwrap(),
        Some(vec!["KarpenterNodeRole-ci-2".to_owned()])
    );

    // A role that does not exist: not ready, naming the field.
    spec.role = Some("NoSuchRole".to_owned());
    c.set_node_class("default", spec.clone());
    clock.advance(std::time::Duration::from_secs(61));
    match c.resolve("default").await.unwrap_err() {
        CloudError::NodeClassNotReady { reason } => {
            assert!(reason.contains("InstanceProfileReady"), "{reason}");
            assert!(reason.contains("spec.role"), "{reason}");
        }
        other => panic!("{other:?}"),
    }

    spec.role = Some("KarpenterNodeRole-ci-2".to_owned());
    c.release_node_class("default", &spec).await.unwrap();
    assert_eq!(api.get_instance_profile(profile).await.unwrap(), None);
    // Idempotent.
    c.release_node_class("default", &spec).await.unwrap();
}

#[tokio::test]
async fn a_named_instance_profile_must_exist() {
    let f = fixture().await;
    let clock = ManualClock::new();
    let c = Ec2Cloud::new(SdkApi::from_conf(&f.conf), options(&clock));
    let mut spec = node_class();
    spec.instance_profile = Some("missing-profile".to_owned());
    c.set_node_class("default", spec);
    match c.resolve("default").await.unwrap_err() {
        CloudError::NodeClassNotReady { reason } => {
            assert!(reason.contains("spec.instanceProfile"), "{reason}");
            assert!(reason.contains("missing-profile"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_launch_template_deleted_behind_its_back_is_recreated() {
    let f = fixture().await;
    let clock = ManualClock::new();
    let c = cloud(SdkApi::from_conf(&f.conf), &clock);
    c.create(&claim("gitlab-lt1", &["m5.large"], "on-demand"))
        .await
        .unwrap();
    let api = SdkApi::from_conf(&f.conf);
    let templates = api
        .describe_launch_templates(vec![Filter::new("tag:berth.dev/cluster", &["gitlab-ci"])])
        .await
        .unwrap();
    assert_eq!(templates.len(), 1);
    api.delete_launch_template(templates[0].name.clone())
        .await
        .unwrap();
    // The cached name is stale now; the launch recreates the template and succeeds.
    c.create(&claim("gitlab-lt2", &["m5.large"], "on-demand"))
        .await
        .unwrap();
    let again = api
        .describe_launch_templates(vec![Filter::new("tag:berth.dev/cluster", &["gitlab-ci"])])
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(instances_tagged(&f, "gitlab-lt2").await.len(), 1);
}

#[tokio::test]
async fn resolutions_at_the_same_time_share_one_instance_profile() {
    // The EC2NodeClass controller and a launch (or InstanceTypes) resolve a new class at
    // once: both find the profile without its role and add it; IAM refuses the second add
    // (a profile holds one role), which must not leave the class not ready.
    let f = fixture().await;
    create_role(&f, "KarpenterNodeRole-ci").await;
    let clock = ManualClock::new();
    let c = Ec2Cloud::new(SdkApi::from_conf(&f.conf), options(&clock));
    let other = Ec2Cloud::new(SdkApi::from_conf(&f.conf), options(&clock));
    let mut spec = node_class();
    spec.role = Some("KarpenterNodeRole-ci".to_owned());
    c.set_node_class("default", spec.clone());
    other.set_node_class("default", spec);
    let (a, b) = tokio::join!(c.resolve("default"), other.resolve("default"));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.instance_profile, b.instance_profile);
    assert_eq!(
        SdkApi::from_conf(&f.conf)
            .get_instance_profile(a.instance_profile.unwrap())
            .await
            .unwrap(),
        Some(vec!["KarpenterNodeRole-ci".to_owned()])
    );
}

/// What the actuator records with a launch (the store writes these on the NodeClaim).
fn launched_with(c: &Ec2Cloud<SdkApi>, nc: &NodeClaim) -> NodeClaim {
    let mut recorded = nc.clone();
    recorded.annotations.extend(c.launch_annotations(nc));
    recorded
}

#[tokio::test]
async fn a_changed_tag_on_the_node_class_is_node_class_drift() {
    let f = fixture().await;
    let clock = ManualClock::new();
    let c = cloud(SdkApi::from_conf(&f.conf), &clock);
    let nc = claim("gitlab-hash", &["m5.large"], "on-demand");
    c.create(&nc).await.unwrap();
    let recorded = launched_with(&c, &nc);
    assert_eq!(
        recorded.annotations[labels::EC2_NODE_CLASS_HASH_VERSION],
        "berth-v1"
    );
    assert!(!recorded.annotations[labels::EC2_NODE_CLASS_HASH].is_empty());
    assert_eq!(c.is_drifted(&recorded).await.unwrap(), None);

    // A selector term is not hashed: its drift is what it resolves to.
    let mut same = node_class();
    same.subnet_selector_terms = serde_json::from_value(serde_json::json!([
        {"tags": {"karpenter.sh/discovery": "ci"}},
        {"tags": {"unused": "yes"}}
    ]))
    .unwrap();
    c.set_node_class("default", same);
    assert_eq!(c.is_drifted(&recorded).await.unwrap(), None);

    let mut changed = node_class();
    changed.tags.insert("team".into(), "platform".into());
    c.set_node_class("default", changed);
    let drift = c.is_drifted(&recorded).await.unwrap().expect("drifted");
    assert!(drift.0.starts_with("NodeClassDrift: "), "{drift:?}");
    // A hash of another version (Karpenter's own) is not compared.
    let mut karpenters = recorded.clone();
    karpenters
        .annotations
        .insert(labels::EC2_NODE_CLASS_HASH_VERSION.into(), "v4".into());
    assert_eq!(c.is_drifted(&karpenters).await.unwrap(), None);
}

#[tokio::test]
async fn an_ami_selector_that_no_longer_selects_the_instance_s_image_is_ami_drift() {
    let f = fixture().await;
    let clock = ManualClock::new();
    let c = cloud(SdkApi::from_conf(&f.conf), &clock);
    let nc = claim("gitlab-ami", &["m5.large"], "on-demand");
    let instance = c.create(&nc).await.unwrap();
    let recorded = launched_with(&c, &nc);
    assert_eq!(c.is_drifted(&recorded).await.unwrap(), None);
    let other = f
        .amis
        .iter()
        .find(|a| **a != instance.image_id)
        .expect("a second image")
        .clone();
    let mut pinned = node_class();
    pinned.ami_selector_terms =
        serde_json::from_value(serde_json::json!([{ "id": other }])).unwrap();
    pinned.ami_family = Some(berth_api::v1::AmiFamily::AL2023);
    c.set_node_class("default", pinned);
    clock.advance(Duration::from_secs(61)); // the resolved class is re-read
    let drift = c.is_drifted(&recorded).await.unwrap().expect("drifted");
    // The selector is not hashed (the family stays AL2023): the drift is the image's.
    assert!(drift.0.starts_with("AMIDrift: "), "{drift:?}");
    assert!(drift.0.contains(&instance.image_id), "{drift:?}");
}

/// Actions AWS authorizes on behalf of an operation the provider starts, which it never
/// starts itself (so the SDK never records them).
const IMPLIED_ACTIONS: &[(&str, &str)] = &[
    (
        "ec2:RunInstances",
        "CreateFleet (type instant) launches through RunInstances",
    ),
    (
        "ec2:CreateTags",
        "tag specifications of CreateFleet and CreateLaunchTemplate",
    ),
    ("iam:TagInstanceProfile", "CreateInstanceProfile with tags"),
    (
        "iam:PassRole",
        "AddRoleToInstanceProfile, and launching with the node role's profile",
    ),
];

/// The actions deploy/iam/berth-actuator-policy.json allows.
fn policy_actions() -> std::collections::BTreeSet<String> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/iam/berth-actuator-policy.json"
    );
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let doc: serde_json::Value = serde_json::from_str(&text).expect("the policy is JSON");
    let mut actions = std::collections::BTreeSet::new();
    for statement in doc["Statement"].as_array().expect("Statement is a list") {
        assert_eq!(statement["Effect"], "Allow", "{statement}");
        match &statement["Action"] {
            serde_json::Value::String(a) => {
                actions.insert(a.clone());
            }
            serde_json::Value::Array(list) => actions.extend(
                list.iter()
                    .map(|a| a.as_str().expect("an action").to_owned()),
            ),
            other => panic!("Action {other}"),
        }
    }
    actions
}

/// The provider's whole life against moto through one [`CallLog`]: every AWS operation it
/// starts must be allowed by the IAM policy, and the policy must allow nothing it never
/// starts (apart from what AWS checks on behalf of those operations).
#[tokio::test]
async fn the_iam_policy_allows_exactly_the_aws_operations_the_provider_starts() {
    let f = fixture().await;
    create_role(&f, "KarpenterNodeRole-ci").await;
    let clock = ManualClock::new();
    let log = berth_ec2::CallLog::new();
    let c = Ec2Cloud::new(SdkApi::from_conf_logged(&f.conf, &log), options(&clock));
    let mut spec = node_class();
    spec.role = Some("KarpenterNodeRole-ci".to_owned());
    c.set_node_class("default", spec.clone());

    // Resolving the class: subnets, security groups, the alias's SSM parameter, its image,
    // the role's instance profile.
    c.resolve("default").await.unwrap();
    // Instance types: types, offerings, spot prices, on-demand prices (moto has no Pricing
    // API; the call is still made, and a real account must allow it).
    c.instance_types(&nodepool()).await.unwrap();
    // Launch, read back, drift, terminate.
    let nc = claim("gitlab-iam-policy", &["m5.large"], "on-demand");
    c.create(&nc).await.unwrap();
    assert_eq!(c.list().await.unwrap().len(), 1);
    c.is_drifted(&launched_with(&c, &nc)).await.unwrap();
    c.delete(&nc.name).await.unwrap();
    // The unused launch template is collected; the class is released with its profile.
    clock.advance(Duration::from_secs(3601));
    assert_eq!(c.garbage_collect_launch_templates().await.unwrap().len(), 1);
    c.release_node_class("default", &spec).await.unwrap();

    let called = log.actions();
    // The log sees the calls (a log that recorded nothing would make the checks vacuous).
    for a in ["ec2:CreateFleet", "ssm:GetParameter", "pricing:GetProducts"] {
        assert!(called.contains(a), "{a} not recorded: {called:?}");
    }
    let allowed = policy_actions();
    let missing: Vec<&String> = called.difference(&allowed).collect();
    assert!(
        missing.is_empty(),
        "the provider calls these, and deploy/iam/berth-actuator-policy.json does not allow them: {missing:?}"
    );
    let mut want = called.clone();
    want.extend(IMPLIED_ACTIONS.iter().map(|(a, _)| (*a).to_owned()));
    let unused: Vec<&String> = allowed.difference(&want).collect();
    assert!(
        unused.is_empty(),
        "the policy allows these, and the provider never calls them (least privilege): {unused:?}"
    );
}
