//! The seed article's v1beta1 manifests, converted to v1 and checked field by field.

use berth_api::convert::{self, V1Object};
use berth_api::manifest;
use berth_api::v1::{self, ConsolidationPolicy, Operator};

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/seed/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn convert_fixtures(names: &[&str]) -> convert::Converted {
    let mut manifests = Vec::new();
    for name in names {
        manifests.extend(manifest::parse_all(&fixture(name)).expect("seed manifests parse"));
    }
    convert::to_v1(manifests).expect("seed manifests convert")
}

fn node_pool(c: &convert::Converted, name: &str) -> v1::NodePool {
    c.objects
        .iter()
        .find_map(|o| match o {
            V1Object::NodePool(np) if np.metadata.name.as_deref() == Some(name) => Some(np.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no NodePool {name}"))
}

fn requirement<'a>(
    np: &'a v1::NodePool,
    key: &str,
) -> &'a v1::NodeSelectorRequirementWithMinValues {
    np.spec
        .template
        .spec
        .requirements
        .iter()
        .find(|r| r.key == key)
        .unwrap_or_else(|| panic!("no requirement {key}"))
}

#[test]
fn gitlab_node_pool_converts_field_by_field() {
    let c = convert_fixtures(&["nodepool-gitlab.v1beta1.yaml"]);
    let np = node_pool(&c, "gitlab-auto-nodepool");
    let t = &np.spec.template;
    assert_eq!(
        t.metadata.labels.get("workload-type").map(String::as_str),
        Some("gitlab-runners-auto")
    );
    assert_eq!(t.spec.taints.len(), 1);
    assert_eq!(t.spec.taints[0].key, "dedicated");
    assert_eq!(
        t.spec.taints[0].value.as_deref(),
        Some("gitlab-runner-auto")
    );
    assert_eq!(t.spec.taints[0].effect, v1::TaintEffect::NoSchedule);
    assert_eq!(t.spec.requirements.len(), 6);
    assert_eq!(requirement(&np, "kubernetes.io/arch").values, ["amd64"]);
    assert_eq!(requirement(&np, "kubernetes.io/os").values, ["linux"]);
    assert_eq!(
        requirement(&np, "karpenter.sh/capacity-type").values,
        ["on-demand"]
    );
    assert_eq!(
        requirement(&np, "karpenter.k8s.aws/instance-family").values,
        ["t3"]
    );
    assert_eq!(
        requirement(&np, "karpenter.k8s.aws/instance-size").values,
        ["2xlarge"]
    );
    let generation = requirement(&np, "karpenter.k8s.aws/instance-generation");
    assert_eq!(
        (generation.operator, generation.values.as_slice()),
        (Operator::Gt, ["2".to_owned()].as_slice())
    );
    // nodeClassRef {name} gains the AWS defaults.
    assert_eq!(
        t.spec.node_class_ref,
        v1::NodeClassReference::ec2("default")
    );
    // disruption.expireAfter moved into the template.
    assert_eq!(t.spec.expire_after, v1::NillableDuration::from("720h"));
    // WhenUnderutilized became WhenEmptyOrUnderutilized, consolidating at once.
    assert_eq!(
        np.spec.disruption.consolidation_policy,
        ConsolidationPolicy::WhenEmptyOrUnderutilized
    );
    assert_eq!(
        np.spec.disruption.consolidate_after,
        v1::NillableDuration::from("0s")
    );
    assert_eq!(np.spec.disruption.budgets.len(), 1);
    assert_eq!(np.spec.disruption.budgets[0].nodes, "10%");
    assert_eq!(np.spec.limits["cpu"].0, "32");
    assert_eq!(np.spec.limits["memory"].0, "64Gi");
    assert_eq!(np.spec.weight, None);
}

#[test]
fn default_node_pool_converts_field_by_field() {
    let c = convert_fixtures(&["nodepool-default.v1beta1.yaml"]);
    let np = node_pool(&c, "default-nodepool");
    assert!(np.spec.template.metadata.labels.is_empty());
    assert!(np.spec.template.spec.taints.is_empty());
    assert_eq!(
        requirement(&np, "karpenter.k8s.aws/instance-size").values,
        ["medium", "large", "xlarge"]
    );
    assert_eq!(
        np.spec.template.spec.node_class_ref,
        v1::NodeClassReference::ec2("default")
    );
    // No disruption block in v1beta1: its defaults (WhenUnderutilized, 720h) carry over.
    assert_eq!(
        np.spec.disruption.consolidation_policy,
        ConsolidationPolicy::WhenEmptyOrUnderutilized
    );
    assert_eq!(
        np.spec.template.spec.expire_after,
        v1::NillableDuration::from("720h")
    );
    assert_eq!(np.spec.limits["cpu"].0, "80");
    assert_eq!(np.spec.limits["memory"].0, "320Gi");
}

#[test]
fn ec2_node_class_converts_field_by_field() {
    let c = convert_fixtures(&["ec2nodeclass-default.v1beta1.yaml"]);
    let V1Object::EC2NodeClass(class) = &c.objects[0] else {
        panic!("expected an EC2NodeClass")
    };
    let s = &class.spec;
    // amiFamily AL2 without amiSelectorTerms becomes the alias al2@latest.
    assert_eq!(s.ami_family, None);
    assert_eq!(s.ami_selector_terms.len(), 1);
    assert_eq!(s.ami_selector_terms[0].alias.as_deref(), Some("al2@latest"));
    assert_eq!(s.role.as_deref(), Some("<karpenterProfileInstanceRole>"));
    assert_eq!(s.instance_profile, None);
    assert_eq!(
        s.subnet_selector_terms[0].tags["karpenter.sh/discovery"],
        "<clusterName>"
    );
    assert_eq!(
        s.security_group_selector_terms[0].tags["karpenter.sh/discovery"],
        "<clusterName>"
    );
    assert_eq!(s.tags["karpenter.sh/discovery"], "<clusterName>");
    // v1beta1's metadata defaults are kept (hop limit 2), with a note saying so.
    let m = s.metadata_options.as_ref().unwrap();
    assert_eq!(m.http_put_response_hop_limit, 2);
    assert_eq!(m.http_tokens, v1::HttpTokens::Required);
    assert!(
        c.notes
            .iter()
            .any(|n| n.path == "spec.metadataOptions.httpPutResponseHopLimit")
    );
}

#[test]
fn converted_seed_reparses_as_valid_v1() {
    let c = convert_fixtures(&[
        "ec2nodeclass-default.v1beta1.yaml",
        "nodepool-default.v1beta1.yaml",
        "nodepool-gitlab.v1beta1.yaml",
    ]);
    assert_eq!(c.objects.len(), 3);
    let yaml: String = c
        .objects
        .iter()
        .map(|o| format!("---\n{}", o.to_yaml()))
        .collect();
    let reparsed = manifest::parse_all(&yaml).expect("converted YAML parses");
    assert!(reparsed.iter().all(|m| matches!(
        m,
        manifest::Manifest::NodePool(_) | manifest::Manifest::EC2NodeClass(_)
    )));
    let again = convert::to_v1(reparsed).expect("v1 output validates");
    assert_eq!(again.objects, c.objects, "v1 passes through unchanged");
    assert!(again.notes.is_empty());
}

#[test]
fn kubelet_moves_from_node_pool_to_its_ec2_node_class() {
    let pool = fixture("nodepool-gitlab.v1beta1.yaml").replace(
        "      nodeClassRef:\n",
        "      kubelet:\n        maxPods: 58\n        systemReserved:\n          cpu: 100m\n      nodeClassRef:\n",
    );
    let mut manifests = manifest::parse_all(&pool).unwrap();
    manifests.extend(manifest::parse_all(&fixture("ec2nodeclass-default.v1beta1.yaml")).unwrap());
    let c = convert::to_v1(manifests).unwrap();
    let class = c.objects.iter().find_map(|o| match o {
        V1Object::EC2NodeClass(c) => Some(c),
        _ => None,
    });
    let kubelet = class.unwrap().spec.kubelet.as_ref().expect("kubelet moved");
    assert_eq!(kubelet.max_pods, Some(58));
    assert_eq!(kubelet.system_reserved["cpu"], "100m");
    assert!(
        c.notes
            .iter()
            .any(|n| n.path == "spec.template.spec.kubelet")
    );

    // Without the EC2NodeClass in the input, the block is kept as Karpenter's annotation.
    let c = convert::to_v1(manifest::parse_all(&pool).unwrap()).unwrap();
    let np = node_pool(&c, "gitlab-auto-nodepool");
    let annotation =
        &np.metadata.annotations.as_ref().unwrap()[berth_api::labels::KUBELET_COMPATIBILITY];
    assert!(annotation.contains("\"maxPods\":58"), "{annotation}");
}

#[test]
fn conflicting_kubelet_blocks_for_one_class_are_refused() {
    let with = |pods: u32, name: &str| {
        fixture("nodepool-gitlab.v1beta1.yaml")
            .replace("gitlab-auto-nodepool", name)
            .replace(
                "      nodeClassRef:\n",
                &format!("      kubelet:\n        maxPods: {pods}\n      nodeClassRef:\n"),
            )
    };
    let text = format!(
        "{}\n---\n{}\n---\n{}",
        with(10, "a"),
        with(20, "b"),
        fixture("ec2nodeclass-default.v1beta1.yaml")
    );
    let errors = convert::to_v1(manifest::parse_all(&text).unwrap()).unwrap_err();
    assert!(
        errors
            .iter()
            .any(|e| e.object == "NodePool/b" && e.error.path == "spec.template.spec.kubelet"),
        "{errors:?}"
    );
}
