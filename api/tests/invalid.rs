//! Invalid manifests are refused with the field path and what is wrong.

use berth_api::convert;
use berth_api::manifest::{self, ParseError};

const GITLAB: &str = include_str!("fixtures/seed/nodepool-gitlab.v1beta1.yaml");
const CLASS: &str = include_str!("fixtures/seed/ec2nodeclass-default.v1beta1.yaml");

/// The path and message of every error, from parsing or from conversion + validation.
fn errors(text: &str) -> Vec<(String, String)> {
    match manifest::parse_all(text) {
        Err(errors) => errors
            .into_iter()
            .map(|e| match e {
                ParseError::Field { path, message, .. } => (path, message),
                other => (String::new(), other.to_string()),
            })
            .collect(),
        Ok(m) => match convert::to_v1(m) {
            Ok(_) => Vec::new(),
            Err(errors) => errors
                .into_iter()
                .map(|e| (e.error.path, e.error.message))
                .collect(),
        },
    }
}

#[track_caller]
fn assert_refused(text: &str, path: &str, says: &str) {
    let errors = errors(text);
    assert!(
        errors.iter().any(|(p, m)| p == path && m.contains(says)),
        "expected an error at {path} saying {says:?}, got {errors:?}"
    );
}

#[test]
fn the_seed_is_accepted() {
    assert_eq!(errors(GITLAB), Vec::<(String, String)>::new());
    assert_eq!(errors(CLASS), Vec::<(String, String)>::new());
}

#[test]
fn bad_operator() {
    assert_refused(
        &GITLAB.replace("operator: Gt", "operator: Bigger"),
        "spec.template.spec.requirements[5].operator",
        "unknown variant `Bigger`",
    );
}

#[test]
fn restricted_label_domain_in_requirement() {
    let text = GITLAB.replace(
        "key: karpenter.k8s.aws/instance-family",
        "key: kubernetes.io/custom",
    );
    assert_refused(
        &text,
        "spec.template.spec.requirements[3].key",
        "label domain \"kubernetes.io\" is restricted",
    );
    let text = GITLAB.replace(
        "key: karpenter.k8s.aws/instance-family",
        "key: karpenter.sh/foo",
    );
    assert_refused(
        &text,
        "spec.template.spec.requirements[3].key",
        "label domain \"karpenter.sh\" is restricted",
    );
    let text = GITLAB.replace(
        "key: karpenter.k8s.aws/instance-family",
        "key: kubernetes.io/hostname",
    );
    assert_refused(
        &text,
        "spec.template.spec.requirements[3].key",
        "kubernetes.io",
    );
}

#[test]
fn restricted_template_label() {
    let text = GITLAB.replace(
        "workload-type: gitlab-runners-auto",
        "karpenter.sh/nodepool: mine",
    );
    assert_refused(
        &text,
        "spec.template.metadata.labels[karpenter.sh/nodepool]",
        "restricted",
    );
    let text = GITLAB.replace("workload-type: gitlab-runners-auto", "k8s.io/thing: x");
    assert_refused(
        &text,
        "spec.template.metadata.labels[k8s.io/thing]",
        "label domain \"k8s.io\" is restricted",
    );
}

#[test]
fn weight_zero() {
    let text = GITLAB.replace("  limits:\n", "  weight: 0\n  limits:\n");
    assert_refused(&text, "spec.weight", "must be between 1 and 100, got 0");
    let text = GITLAB.replace("  limits:\n", "  weight: 101\n  limits:\n");
    assert_refused(&text, "spec.weight", "got 101");
}

#[test]
fn gt_with_two_values() {
    let text = GITLAB.replace("values: [\"2\"]", "values: [\"2\", \"3\"]");
    assert_refused(
        &text,
        "spec.template.spec.requirements[5].values",
        "must have a single positive integer value",
    );
    let text = GITLAB.replace("values: [\"2\"]", "values: [\"two\"]");
    assert_refused(
        &text,
        "spec.template.spec.requirements[5].values",
        "single positive integer",
    );
}

#[test]
fn unknown_consolidation_policy() {
    let text = GITLAB.replace(
        "consolidationPolicy: WhenUnderutilized",
        "consolidationPolicy: Sometimes",
    );
    assert_refused(
        &text,
        "spec.disruption.consolidationPolicy",
        "unknown variant `Sometimes`",
    );
}

#[test]
fn missing_node_class_ref() {
    let text = GITLAB.replace("      nodeClassRef:\n        name: default\n", "");
    assert_refused(&text, "spec.template.spec.nodeClassRef", "required");
    let v1 = V1_POOL.replace(
        "      nodeClassRef: {group: karpenter.k8s.aws, kind: EC2NodeClass, name: default}\n",
        "",
    );
    assert_refused(&v1, "spec.template.spec", "missing field `nodeClassRef`");
}

const V1_POOL: &str = "apiVersion: karpenter.sh/v1
kind: NodePool
metadata: {name: p}
spec:
  template:
    spec:
      requirements: [{key: kubernetes.io/arch, operator: In, values: [amd64]}]
      nodeClassRef: {group: karpenter.k8s.aws, kind: EC2NodeClass, name: default}
";

#[test]
fn v1_rules() {
    assert_eq!(errors(V1_POOL), Vec::<(String, String)>::new());
    let in_without_values = V1_POOL.replace("operator: In, values: [amd64]", "operator: In");
    assert_refused(
        &in_without_values,
        "spec.template.spec.requirements[0].values",
        "must have a value defined",
    );
    let min_values = V1_POOL.replace("values: [amd64]}", "values: [amd64], minValues: 2}");
    assert_refused(
        &min_values,
        "spec.template.spec.requirements[0].minValues",
        "at least that many values",
    );
    let gte = V1_POOL.replace(
        "{key: kubernetes.io/arch, operator: In, values: [amd64]}",
        "{key: karpenter.k8s.aws/instance-cpu, operator: Gte, values: ['4']}",
    );
    assert_eq!(errors(&gte), Vec::<(String, String)>::new());
    let lte = gte.replace("Gte, values: ['4']", "Lte, values: ['4', '8']");
    assert_refused(
        &lte,
        "spec.template.spec.requirements[0].values",
        "single positive integer",
    );
    let expire = V1_POOL.replace(
        "      nodeClassRef",
        "      expireAfter: 30d\n      nodeClassRef",
    );
    assert_refused(&expire, "spec.template.spec.expireAfter", "not a duration");
    let never = V1_POOL.replace(
        "      nodeClassRef",
        "      expireAfter: Never\n      nodeClassRef",
    );
    assert_eq!(errors(&never), Vec::<(String, String)>::new());
    let budget = format!(
        "{V1_POOL}  disruption:\n    consolidateAfter: 1m\n    budgets: [{{nodes: '110%'}}, {{nodes: '1', schedule: '0 9 * * *'}}]\n"
    );
    assert_refused(&budget, "spec.disruption.budgets[0].nodes", "percentage");
    assert_refused(
        &budget,
        "spec.disruption.budgets[1]",
        "'schedule' must be set with 'duration'",
    );
    let cron = budget
        .replace(
            "schedule: '0 9 * * *'",
            "schedule: '0 99 * * *', duration: 8h",
        )
        .replace("110%", "10%");
    assert_refused(
        &cron,
        "spec.disruption.budgets[1].schedule",
        "not a valid cron expression",
    );
    let taint = V1_POOL.replace("      nodeClassRef", "      taints: [{key: a, effect: NoSchedule}, {key: a, effect: NoSchedule}]\n      nodeClassRef");
    assert_refused(&taint, "spec.template.spec.taints[1]", "duplicate taint");
    let effect = V1_POOL.replace(
        "      nodeClassRef",
        "      taints: [{key: a, effect: Sometimes}]\n      nodeClassRef",
    );
    assert_refused(
        &effect,
        "spec.template.spec.taints[0].effect",
        "unknown variant",
    );
    let limits = format!("{V1_POOL}  limits: {{cpu: lots}}\n");
    assert_refused(&limits, "spec.limits.cpu", "not a number");
    let group = V1_POOL.replace("group: karpenter.k8s.aws,", "group: karpenter.k8s.aws/v1,");
    assert_refused(
        &group,
        "spec.template.spec.nodeClassRef.group",
        "without a version",
    );
}

#[test]
fn unknown_fields_are_refused() {
    let text = GITLAB.replace("  limits:\n", "  limitz: {}\n  limits:\n");
    assert_refused(&text, "spec.limitz", "unknown field");
}

const V1_CLASS: &str = "apiVersion: karpenter.k8s.aws/v1
kind: EC2NodeClass
metadata: {name: default}
spec:
  role: KarpenterNodeRole
  amiSelectorTerms: [{alias: al2023@latest}]
  subnetSelectorTerms: [{tags: {karpenter.sh/discovery: demo}}]
  securityGroupSelectorTerms: [{tags: {karpenter.sh/discovery: demo}}]
";

#[test]
fn ec2_node_class_rules() {
    assert_eq!(errors(V1_CLASS), Vec::<(String, String)>::new());
    let no_role = V1_CLASS.replace("  role: KarpenterNodeRole\n", "");
    assert_refused(
        &no_role,
        "spec",
        "exactly one of ['role', 'instanceProfile']",
    );
    let both = V1_CLASS.replace(
        "  role: KarpenterNodeRole\n",
        "  role: r\n  instanceProfile: p\n",
    );
    assert_refused(&both, "spec", "exactly one of");
    let alias = V1_CLASS.replace("al2023@latest", "ubuntu@latest");
    assert_refused(
        &alias,
        "spec.amiSelectorTerms[0].alias",
        "family \"ubuntu\" is not supported",
    );
    let windows = V1_CLASS.replace("al2023@latest", "windows2022@v1");
    assert_refused(
        &windows,
        "spec.amiSelectorTerms[0].alias",
        "only specify version 'latest'",
    );
    let mixed = V1_CLASS.replace(
        "[{alias: al2023@latest}]",
        "[{alias: al2023@latest}, {id: ami-123}]",
    );
    assert_refused(
        &mixed,
        "spec.amiSelectorTerms[0]",
        "combination of other amiSelectorTerms",
    );
    let family = V1_CLASS.replace("[{alias: al2023@latest}]", "[{tags: {team: a}}]");
    assert_refused(&family, "spec.amiFamily", "must specify amiFamily");
    let mismatch = V1_CLASS.replace("  role:", "  amiFamily: Bottlerocket\n  role:");
    assert_refused(&mismatch, "spec.amiFamily", "'AL2023' or 'Custom'");
    let empty = V1_CLASS.replace(
        "[{tags: {karpenter.sh/discovery: demo}}]\n  securityGroup",
        "[]\n  securityGroup",
    );
    assert_refused(&empty, "spec.subnetSelectorTerms", "cannot be empty");
    let term = V1_CLASS.replace(
        "subnetSelectorTerms: [{tags: {karpenter.sh/discovery: demo}}]",
        "subnetSelectorTerms: [{}]",
    );
    assert_refused(
        &term,
        "spec.subnetSelectorTerms[0]",
        "expected at least one",
    );
    let id_and_tags = V1_CLASS.replace(
        "subnetSelectorTerms: [{tags",
        "subnetSelectorTerms: [{id: subnet-1, tags",
    );
    assert_refused(
        &id_and_tags,
        "spec.subnetSelectorTerms[0]",
        "'id' is mutually exclusive",
    );
    let tag = V1_CLASS.replace("  role:", "  tags: {karpenter.sh/nodepool: x}\n  role:");
    assert_refused(&tag, "spec.tags[karpenter.sh/nodepool]", "restricted");
    let kubelet = V1_CLASS.replace("  role:", "  kubelet: {systemReserved: {gpu: '1'}, evictionSoft: {memory.available: 5%}, imageGCHighThresholdPercent: 10, imageGCLowThresholdPercent: 20}\n  role:");
    assert_refused(
        &kubelet,
        "spec.kubelet.systemReserved[gpu]",
        "valid keys for systemReserved",
    );
    assert_refused(
        &kubelet,
        "spec.kubelet.evictionSoft[memory.available]",
        "matching evictionSoftGracePeriod",
    );
    assert_refused(
        &kubelet,
        "spec.kubelet.imageGCHighThresholdPercent",
        "must be greater than",
    );
    let hop = V1_CLASS.replace(
        "  role:",
        "  metadataOptions: {httpPutResponseHopLimit: 65}\n  role:",
    );
    assert_refused(
        &hop,
        "spec.metadataOptions.httpPutResponseHopLimit",
        "between 1 and 64",
    );
    let volume = V1_CLASS.replace(
        "  role:",
        "  blockDeviceMappings: [{deviceName: /dev/xvda, ebs: {volumeSize: 100Ti}}]\n  role:",
    );
    assert_refused(
        &volume,
        "spec.blockDeviceMappings[0].ebs.volumeSize",
        "out of range",
    );
}

#[test]
fn v1beta1_ec2_node_class_rules() {
    let ubuntu = CLASS.replace("amiFamily: AL2", "amiFamily: Ubuntu");
    assert_refused(&ubuntu, "spec.amiFamily", "Ubuntu has no AMI alias in v1");
    let missing = CLASS.replace("  amiFamily: AL2\n", "");
    assert_refused(&missing, "spec.amiFamily", "required in v1beta1");
}

#[test]
fn errors_name_the_document() {
    let text = format!(
        "{CLASS}\n---\n{}",
        GITLAB.replace("operator: Gt", "operator: Bigger")
    );
    let errors = manifest::parse_all(&text).unwrap_err();
    assert!(
        matches!(&errors[0], ParseError::Field { document: 2, object, .. } if object == "NodePool/gitlab-auto-nodepool"),
        "{errors:?}"
    );
    let unknown =
        manifest::parse_all("apiVersion: v1\nkind: Pod\nmetadata: {name: x}\n").unwrap_err();
    assert!(matches!(&unknown[0], ParseError::UnknownKind { kind, .. } if kind == "Pod"));
}
