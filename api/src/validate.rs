//! Validation equal to Karpenter's CRD rules, as a Rust `validate()` for the CLI and the
//! simulated API server, and as the CEL rules the generated CRDs carry.
//!
//! Each [`FieldError`] names the field path (`spec.template.spec.requirements[2].values`) and
//! says what is wrong. All errors of an object are collected, not just the first.
//!
//! NB: Karpenter's own CEL rules have quirks we do not copy: the subnet and security-group
//! "mutually exclusive" rules use `!self.all(...)` and so only fail when *every* term breaks
//! them; Berth checks each term (in Rust and in its CRDs). Label domains are matched with a
//! plain suffix test, as Karpenter does (`fookubernetes.io` counts as `kubernetes.io`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::Value;

use crate::labels;
use crate::schema::cel;
use crate::v1::{
    self, AmiFamily, EC2NodeClass, NodeClaim, NodePool, NodeSelectorRequirementWithMinValues,
    Operator, Taint,
};

/// One invalid field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted path from the object root, e.g. `spec.template.spec.requirements[0].operator`.
    pub path: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every invalid field of an object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ValidationErrors(pub Vec<FieldError>);

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl ValidationErrors {
    /// Whether some error is about `path`.
    pub fn has_path(&self, path: &str) -> bool {
        self.0.iter().any(|e| e.path == path)
    }
}

/// Objects that can check themselves against Karpenter's rules.
pub trait Validate {
    fn validate(&self) -> Result<(), ValidationErrors>;
}

/// Collects errors under a path prefix.
#[derive(Debug, Default)]
struct Errors(Vec<FieldError>);

impl Errors {
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            path: path.into(),
            message: message.into(),
        });
    }
    fn finish(self) -> Result<(), ValidationErrors> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ValidationErrors(self.0))
        }
    }
}

// ---- Kubernetes name rules ----------------------------------------------------------------

fn is_alnum(c: char) -> bool {
    c.is_ascii_alphanumeric()
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`, at most 63 characters.
fn is_name_part(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.starts_with(is_alnum)
        && s.ends_with(is_alnum)
        && s.chars()
            .all(|c| is_alnum(c) || matches!(c, '-' | '_' | '.'))
}

/// A DNS-1123 subdomain: lower-case alphanumerics, `-` and `.`, at most 253 characters.
pub fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                && label.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        })
}

/// A Kubernetes qualified name (`[prefix/]name`), as label keys and taint keys must be.
pub fn qualified_name_error(key: &str) -> Option<String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix
        && !is_dns1123_subdomain(prefix)
    {
        return Some(format!(
            "{key:?}: the prefix must be a DNS subdomain (lower-case alphanumerics, '-' and '.')"
        ));
    }
    if !is_name_part(name) {
        return Some(format!(
            "{key:?}: the name part must be 1-63 characters of alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric"
        ));
    }
    None
}

/// A label value: empty, or a name part of at most 63 characters.
pub fn label_value_error(value: &str) -> Option<String> {
    if value.is_empty() || is_name_part(value) {
        None
    } else {
        Some(format!(
            "{value:?} is not a valid label value: at most 63 alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric"
        ))
    }
}

// ---- Restricted label domains ---------------------------------------------------------------

/// `kubernetes.io` labels users may still require or set.
const KUBERNETES_IO_ALLOWED: &[&str] = &[
    labels::INSTANCE_TYPE_BETA,
    labels::REGION_BETA,
    labels::OS_BETA,
    labels::ARCH_BETA,
    labels::ZONE_BETA,
    labels::TOPOLOGY_ZONE,
    labels::TOPOLOGY_REGION,
    labels::INSTANCE_TYPE,
    labels::ARCH,
    labels::OS,
    labels::WINDOWS_BUILD,
];
const KUBERNETES_IO_EXCEPTIONS: &[&str] = &["node.kubernetes.io", "node-restriction.kubernetes.io"];
const KARPENTER_SH_ALLOWED: &[&str] = &[labels::CAPACITY_TYPE, labels::NODE_POOL];

/// `karpenter.k8s.aws` labels users may require or set: the instance facts.
fn karpenter_aws_allowed() -> Vec<&'static str> {
    let mut allowed = vec![labels::EC2_NODE_CLASS];
    allowed.extend(
        labels::WELL_KNOWN_LABELS
            .iter()
            .filter(|l| l.starts_with("karpenter.k8s.aws/")),
    );
    allowed
}

/// Where a label key is used: the rules differ slightly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelUse {
    /// A NodePool requirement key.
    NodePoolRequirement,
    /// A NodeClaim requirement key (may name `karpenter.sh/nodepool`).
    NodeClaimRequirement,
    /// A NodePool template label.
    TemplateLabel,
}

/// The domain Karpenter's CEL rules test: the text before the first `/`, or the whole key.
fn cel_domain(key: &str) -> &str {
    key.split_once('/').map_or(key, |(domain, _)| domain)
}

/// Why `key` may not be used here, in the words of Karpenter's rule; `None` if allowed.
pub fn restricted_label_error(key: &str, usage: LabelUse) -> Option<String> {
    let domain = cel_domain(key);
    let kubernetes_allowed = KUBERNETES_IO_ALLOWED.contains(&key)
        || KUBERNETES_IO_EXCEPTIONS.iter().any(|e| domain.ends_with(e));
    if !kubernetes_allowed && domain.ends_with("kubernetes.io") {
        return Some(format!(
            "label domain \"kubernetes.io\" is restricted (key {key:?})"
        ));
    }
    if !domain.ends_with("kops.k8s.io") && domain.ends_with("k8s.io") {
        return Some(format!(
            "label domain \"k8s.io\" is restricted (key {key:?})"
        ));
    }
    if !KARPENTER_SH_ALLOWED.contains(&key) && domain.ends_with("karpenter.sh") {
        return Some(format!(
            "label domain \"karpenter.sh\" is restricted (key {key:?})"
        ));
    }
    if usage != LabelUse::NodeClaimRequirement && key == labels::NODE_POOL {
        return Some(format!("label \"{}\" is restricted", labels::NODE_POOL));
    }
    if key == labels::HOSTNAME {
        return Some(format!("label \"{}\" is restricted", labels::HOSTNAME));
    }
    if !karpenter_aws_allowed().contains(&key) && domain.ends_with("karpenter.k8s.aws") {
        return Some(format!(
            "label domain \"karpenter.k8s.aws\" is restricted (key {key:?})"
        ));
    }
    None
}

fn cel_list(items: &[&str]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| format!("{i:?}")).collect();
    format!("[{}]", quoted.join(", "))
}

/// The same rules as [`restricted_label_error`], as CEL over one key expression `k`.
fn restricted_label_cel(k: &str, usage: LabelUse) -> Vec<(String, String)> {
    let domain = format!("{k}.find(\"^([^/]+)\")");
    let mut rules = vec![
        (
            format!(
                "{k} in {} || {domain}.endsWith(\"node.kubernetes.io\") || {domain}.endsWith(\"node-restriction.kubernetes.io\") || !{domain}.endsWith(\"kubernetes.io\")",
                cel_list(KUBERNETES_IO_ALLOWED)
            ),
            "label domain \"kubernetes.io\" is restricted".to_owned(),
        ),
        (
            format!("{domain}.endsWith(\"kops.k8s.io\") || !{domain}.endsWith(\"k8s.io\")"),
            "label domain \"k8s.io\" is restricted".to_owned(),
        ),
        (
            format!(
                "{k} in {} || !{domain}.endsWith(\"karpenter.sh\")",
                cel_list(KARPENTER_SH_ALLOWED)
            ),
            "label domain \"karpenter.sh\" is restricted".to_owned(),
        ),
    ];
    if usage != LabelUse::NodeClaimRequirement {
        rules.push((
            format!("{k} != \"{}\"", labels::NODE_POOL),
            format!("label \"{}\" is restricted", labels::NODE_POOL),
        ));
    }
    rules.push((
        format!("{k} != \"{}\"", labels::HOSTNAME),
        format!("label \"{}\" is restricted", labels::HOSTNAME),
    ));
    rules.push((
        format!(
            "{k} in {} || !{domain}.endsWith(\"karpenter.k8s.aws\")",
            cel_list(&karpenter_aws_allowed())
        ),
        "label domain \"karpenter.k8s.aws\" is restricted".to_owned(),
    ));
    rules
}

/// CEL rules for a NodePool's `template.metadata.labels` map.
pub(crate) fn template_label_cel_rules() -> Vec<Value> {
    restricted_label_cel("x", LabelUse::TemplateLabel)
        .into_iter()
        .map(|(rule, message)| cel(&format!("self.all(x, {rule})"), &message))
        .collect()
}

/// CEL rules for a `requirements` array.
pub(crate) fn requirement_cel_rules(usage: LabelUse) -> Vec<Value> {
    restricted_label_cel("x.key", usage)
        .into_iter()
        .map(|(rule, message)| cel(&format!("self.all(x, {rule})"), &message))
        .collect()
}

/// Tags Berth sets itself and users may not.
const RESTRICTED_TAGS: &[&str] = &[
    "karpenter.sh/nodepool",
    "karpenter.sh/nodeclaim",
    "karpenter.k8s.aws/ec2nodeclass",
    "eks:eks-cluster-name",
];

pub(crate) fn tag_cel_rules() -> Vec<Value> {
    let mut rules = vec![
        cel("self.all(k, k != '')", "empty tag keys aren't supported"),
        cel(
            "self.all(k, !k.startsWith('kubernetes.io/cluster'))",
            "tag contains a restricted tag matching kubernetes.io/cluster/",
        ),
    ];
    for tag in RESTRICTED_TAGS {
        rules.push(cel(
            &format!("self.all(k, k != '{tag}')"),
            &format!("tag contains a restricted tag matching {tag}"),
        ));
    }
    rules
}

// ---- Shared pieces ------------------------------------------------------------------------------

fn validate_name(errors: &mut Errors, name: Option<&str>) {
    match name {
        None | Some("") => errors.add("metadata.name", "required"),
        Some(name) if !is_dns1123_subdomain(name) => errors.add(
            "metadata.name",
            format!("{name:?} must be a DNS subdomain: lower-case alphanumerics, '-' and '.', at most 253 characters"),
        ),
        Some(_) => {}
    }
}

fn validate_requirements(
    errors: &mut Errors,
    path: &str,
    reqs: &[NodeSelectorRequirementWithMinValues],
    usage: LabelUse,
) {
    if reqs.len() > 100 {
        errors.add(
            path,
            format!("at most 100 requirements, got {}", reqs.len()),
        );
    }
    for (i, r) in reqs.iter().enumerate() {
        let p = format!("{path}[{i}]");
        if r.key.len() > 316 {
            errors.add(format!("{p}.key"), "at most 316 characters");
        }
        if let Some(e) = qualified_name_error(&r.key) {
            errors.add(format!("{p}.key"), e);
        }
        if let Some(e) = restricted_label_error(&r.key, usage) {
            errors.add(format!("{p}.key"), e);
        }
        for (j, v) in r.values.iter().enumerate() {
            if let Some(e) = label_value_error(v) {
                errors.add(format!("{p}.values[{j}]"), e);
            }
        }
        match r.operator {
            Operator::In if r.values.is_empty() => errors.add(
                format!("{p}.values"),
                "requirements with operator 'In' must have a value defined",
            ),
            Operator::Gt | Operator::Lt | Operator::Gte | Operator::Lte => {
                let single_int = r.values.len() == 1 && r.values[0].parse::<u64>().is_ok();
                if !single_int {
                    errors.add(
                        format!("{p}.values"),
                        format!(
                            "requirements operator '{:?}' must have a single positive integer value, got {:?}",
                            r.operator, r.values
                        ),
                    );
                }
            }
            _ => {}
        }
        if let Some(min) = r.min_values {
            if !(1..=50).contains(&min) {
                errors.add(
                    format!("{p}.minValues"),
                    format!("must be between 1 and 50, got {min}"),
                );
            } else if r.operator == Operator::In && r.values.len() < min as usize {
                errors.add(
                    format!("{p}.minValues"),
                    format!(
                        "requirements with 'minValues' must have at least that many values specified in the 'values' field (minValues {min}, {} values)",
                        r.values.len()
                    ),
                );
            }
        }
    }
}

fn validate_taints(
    errors: &mut Errors,
    spec_path: &str,
    taints: &[Taint],
    startup_taints: &[Taint],
) {
    let mut seen = BTreeSet::new();
    let all = taints
        .iter()
        .enumerate()
        .map(|(i, t)| (format!("{spec_path}.taints[{i}]"), t))
        .chain(
            startup_taints
                .iter()
                .enumerate()
                .map(|(i, t)| (format!("{spec_path}.startupTaints[{i}]"), t)),
        );
    for (p, t) in all {
        if t.key.is_empty() {
            errors.add(format!("{p}.key"), "required");
        } else if let Some(e) = qualified_name_error(&t.key) {
            errors.add(format!("{p}.key"), e);
        }
        if let Some(value) = &t.value
            && !is_name_part(value)
        {
            errors.add(
                format!("{p}.value"),
                format!("{value:?}: at most 63 alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric"),
            );
        }
        if !seen.insert((t.key.clone(), t.effect)) {
            errors.add(
                p,
                format!("duplicate taint Key/Effect pair {}={:?}", t.key, t.effect),
            );
        }
    }
}

fn validate_node_class_ref(errors: &mut Errors, path: &str, r: &v1::NodeClassReference) {
    if r.group.is_empty() {
        errors.add(format!("{path}.group"), "group may not be empty");
    } else if r.group.contains('/') {
        errors.add(
            format!("{path}.group"),
            format!(
                "{:?} must be an API group without a version (no '/')",
                r.group
            ),
        );
    }
    if r.kind.is_empty() {
        errors.add(format!("{path}.kind"), "kind may not be empty");
    }
    if r.name.is_empty() {
        errors.add(format!("{path}.name"), "name may not be empty");
    }
}

fn validate_quantities(
    errors: &mut Errors,
    path: &str,
    list: &BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
) {
    for (name, q) in list {
        if let Err(e) = berth_scheduler_core::quantity::parse_milli(&q.0) {
            errors.add(format!("{path}.{name}"), e.to_string());
        }
    }
}

fn validate_expire_after(errors: &mut Errors, path: &str, d: &v1::NillableDuration) {
    if let Err(e) = d.parse() {
        errors.add(path, format!("{e}, or Never"));
    }
}

// ---- NodePool -----------------------------------------------------------------------------------------

impl Validate for NodePool {
    fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errors = Errors::default();
        validate_name(&mut errors, self.metadata.name.as_deref());
        let spec = &self.spec;
        let template = &spec.template;

        let labels_path = "spec.template.metadata.labels";
        if template.metadata.labels.len() > 100 {
            errors.add(labels_path, "at most 100 labels");
        }
        for (key, value) in &template.metadata.labels {
            let p = format!("{labels_path}[{key}]");
            if let Some(e) = qualified_name_error(key) {
                errors.add(&p, e);
            }
            if let Some(e) = restricted_label_error(key, LabelUse::TemplateLabel) {
                errors.add(&p, e);
            }
            if let Some(e) = label_value_error(value) {
                errors.add(&p, e);
            }
        }

        let s = &template.spec;
        validate_requirements(
            &mut errors,
            "spec.template.spec.requirements",
            &s.requirements,
            LabelUse::NodePoolRequirement,
        );
        validate_taints(
            &mut errors,
            "spec.template.spec",
            &s.taints,
            &s.startup_taints,
        );
        validate_node_class_ref(
            &mut errors,
            "spec.template.spec.nodeClassRef",
            &s.node_class_ref,
        );
        validate_expire_after(
            &mut errors,
            "spec.template.spec.expireAfter",
            &s.expire_after,
        );
        if let Some(d) = &s.termination_grace_period
            && let Err(e) = d.parse()
        {
            errors.add("spec.template.spec.terminationGracePeriod", e);
        }

        let d = &spec.disruption;
        validate_expire_after(
            &mut errors,
            "spec.disruption.consolidateAfter",
            &d.consolidate_after,
        );
        if d.budgets.len() > 50 {
            errors.add(
                "spec.disruption.budgets",
                format!("at most 50 budgets, got {}", d.budgets.len()),
            );
        }
        for (i, b) in d.budgets.iter().enumerate() {
            let p = format!("spec.disruption.budgets[{i}]");
            if crate::budget_nodes(&b.nodes).is_none() {
                errors.add(
                    format!("{p}.nodes"),
                    format!(
                        "{:?} must be a count (5) or a percentage from 0% to 100% (10%)",
                        b.nodes
                    ),
                );
            }
            if b.schedule.is_some() != b.duration.is_some() {
                errors.add(&p, "'schedule' must be set with 'duration'");
            }
            if let Some(schedule) = &b.schedule
                && let Err(e) = crate::parse_schedule(schedule)
            {
                errors.add(format!("{p}.schedule"), e);
            }
            if let Some(duration) = &b.duration
                && let Err(e) = crate::duration::parse_budget_duration(duration)
            {
                errors.add(format!("{p}.duration"), e);
            }
        }

        validate_quantities(&mut errors, "spec.limits", &spec.limits);
        if let Some(w) = spec.weight
            && !(1..=100).contains(&w)
        {
            errors.add("spec.weight", format!("must be between 1 and 100, got {w}"));
        }
        errors.finish()
    }
}

// ---- NodeClaim ----------------------------------------------------------------------------------------

impl Validate for NodeClaim {
    fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errors = Errors::default();
        validate_name(&mut errors, self.metadata.name.as_deref());
        let s = &self.spec;
        validate_requirements(
            &mut errors,
            "spec.requirements",
            &s.requirements,
            LabelUse::NodeClaimRequirement,
        );
        validate_taints(&mut errors, "spec", &s.taints, &s.startup_taints);
        validate_node_class_ref(&mut errors, "spec.nodeClassRef", &s.node_class_ref);
        validate_expire_after(&mut errors, "spec.expireAfter", &s.expire_after);
        if let Some(d) = &s.termination_grace_period
            && let Err(e) = d.parse()
        {
            errors.add("spec.terminationGracePeriod", e);
        }
        validate_quantities(
            &mut errors,
            "spec.resources.requests",
            &s.resources.requests,
        );
        errors.finish()
    }
}

// ---- EC2NodeClass -------------------------------------------------------------------------------------

fn validate_tags(
    errors: &mut Errors,
    path: &str,
    tags: &BTreeMap<String, String>,
    max: Option<usize>,
) {
    if let Some(max) = max
        && tags.len() > max
    {
        errors.add(path, format!("at most {max} tags, got {}", tags.len()));
    }
    for (k, v) in tags {
        if k.is_empty() {
            errors.add(path, "empty tag keys aren't supported");
        }
        if max.is_some() && v.is_empty() {
            errors.add(format!("{path}[{k}]"), "empty tag values aren't supported");
        }
    }
}

/// Kubernetes patterns are unanchored searches: `subnet-[0-9a-z]+` anywhere in the string.
fn contains_prefixed_id(s: &str, prefix: &str) -> bool {
    s.match_indices(prefix).any(|(i, _)| {
        s[i + prefix.len()..].starts_with(|c: char| c.is_ascii_digit() || c.is_ascii_lowercase())
    })
}

fn is_percentage(s: &str) -> bool {
    s.strip_suffix('%')
        .is_some_and(|n| n.parse::<f64>().is_ok_and(|p| (0.0..=100.0).contains(&p)))
}

impl Validate for EC2NodeClass {
    fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errors = Errors::default();
        validate_name(&mut errors, self.metadata.name.as_deref());
        let s = &self.spec;

        let p = "spec.subnetSelectorTerms";
        if s.subnet_selector_terms.is_empty() {
            errors.add(p, "subnetSelectorTerms cannot be empty");
        } else if s.subnet_selector_terms.len() > 30 {
            errors.add(p, "at most 30 terms");
        }
        for (i, t) in s.subnet_selector_terms.iter().enumerate() {
            let tp = format!("{p}[{i}]");
            match (&t.id, t.tags.is_empty()) {
                (None, true) => errors.add(&tp, "expected at least one, got none, ['tags', 'id']"),
                (Some(_), false) => errors.add(&tp, "'id' is mutually exclusive, cannot be set with a combination of other fields in subnetSelectorTerms"),
                _ => {}
            }
            if let Some(id) = &t.id
                && !contains_prefixed_id(id, "subnet-")
            {
                errors.add(
                    format!("{tp}.id"),
                    format!("{id:?} is not a subnet id (subnet-...)"),
                );
            }
            validate_tags(&mut errors, &format!("{tp}.tags"), &t.tags, Some(20));
        }

        let p = "spec.securityGroupSelectorTerms";
        if s.security_group_selector_terms.is_empty() {
            errors.add(p, "securityGroupSelectorTerms cannot be empty");
        } else if s.security_group_selector_terms.len() > 30 {
            errors.add(p, "at most 30 terms");
        }
        for (i, t) in s.security_group_selector_terms.iter().enumerate() {
            let tp = format!("{p}[{i}]");
            let set = [t.id.is_some(), !t.tags.is_empty(), t.name.is_some()];
            if set == [false, false, false] {
                errors.add(
                    &tp,
                    "expected at least one, got none, ['tags', 'id', 'name']",
                );
            } else if t.id.is_some() && (set[1] || set[2]) {
                errors.add(&tp, "'id' is mutually exclusive, cannot be set with a combination of other fields in securityGroupSelectorTerms");
            } else if t.name.is_some() && set[1] {
                errors.add(&tp, "'name' is mutually exclusive, cannot be set with a combination of other fields in securityGroupSelectorTerms");
            }
            if let Some(id) = &t.id
                && !contains_prefixed_id(id, "sg-")
            {
                errors.add(
                    format!("{tp}.id"),
                    format!("{id:?} is not a security group id (sg-...)"),
                );
            }
            validate_tags(&mut errors, &format!("{tp}.tags"), &t.tags, Some(20));
        }

        let p = "spec.amiSelectorTerms";
        let terms = &s.ami_selector_terms;
        if terms.is_empty() {
            errors.add(p, "amiSelectorTerms cannot be empty");
        } else if terms.len() > 30 {
            errors.add(p, "at most 30 terms");
        }
        let mut alias_family = None;
        for (i, t) in terms.iter().enumerate() {
            let tp = format!("{p}[{i}]");
            let others = !t.tags.is_empty() || t.name.is_some() || t.owner.is_some();
            if t.alias.is_none()
                && t.id.is_none()
                && t.tags.is_empty()
                && t.name.is_none()
                && t.ssm_parameter.is_none()
            {
                errors.add(&tp, "expected at least one, got none, ['tags', 'id', 'name', 'alias', 'ssmParameter']");
            }
            if t.id.is_some() && (t.alias.is_some() || others) {
                errors.add(&tp, "'id' is mutually exclusive, cannot be set with a combination of other fields in amiSelectorTerms");
            }
            if let Some(id) = &t.id
                && !contains_prefixed_id(id, "ami-")
            {
                errors.add(
                    format!("{tp}.id"),
                    format!("{id:?} is not an AMI id (ami-...)"),
                );
            }
            validate_tags(&mut errors, &format!("{tp}.tags"), &t.tags, Some(20));
            let Some(alias) = &t.alias else { continue };
            if t.id.is_none() && others {
                errors.add(&tp, "'alias' is mutually exclusive, cannot be set with a combination of other fields in amiSelectorTerms");
            }
            if terms.len() != 1 {
                errors.add(&tp, "'alias' is mutually exclusive, cannot be set with a combination of other amiSelectorTerms");
            }
            let ap = format!("{tp}.alias");
            if alias.len() > 30 {
                errors.add(&ap, "at most 30 characters");
            }
            match alias.split_once('@') {
                Some((family, version)) if !family.is_empty() && family.chars().all(is_alnum) && !version.is_empty() => {
                    match AmiFamily::from_alias_family(family) {
                        None => errors.add(&ap, format!("family {family:?} is not supported, must be one of the following: 'al2', 'al2023', 'bottlerocket', 'windows2019', 'windows2022'")),
                        Some(f) => {
                            if matches!(f, AmiFamily::Windows2019 | AmiFamily::Windows2022) && version != "latest" {
                                errors.add(&ap, "windows families may only specify version 'latest'");
                            }
                            alias_family = Some(f);
                        }
                    }
                }
                _ => errors.add(&ap, format!("{alias:?}: 'alias' is improperly formatted, must match the format 'family@version'")),
            }
        }
        match (s.ami_family, alias_family) {
            (None, None) if terms.iter().all(|t| t.alias.is_none()) => {
                errors.add("spec.amiFamily", "must specify amiFamily if amiSelectorTerms does not contain an alias")
            }
            (Some(family), Some(alias)) if family != AmiFamily::Custom && family != alias => errors.add(
                "spec.amiFamily",
                format!("if set, amiFamily must be '{alias:?}' or 'Custom' when using an {alias:?} alias, got '{family:?}'"),
            ),
            _ => {}
        }

        match (&s.role, &s.instance_profile) {
            (Some(_), Some(_)) | (None, None) => errors.add(
                "spec",
                "must specify exactly one of ['role', 'instanceProfile']",
            ),
            _ => {}
        }
        if s.role.as_deref() == Some("") {
            errors.add("spec.role", "role cannot be empty");
        }
        if s.instance_profile.as_deref() == Some("") {
            errors.add("spec.instanceProfile", "instanceProfile cannot be empty");
        }

        validate_tags(&mut errors, "spec.tags", &s.tags, None);
        for k in s.tags.keys() {
            if k.starts_with("kubernetes.io/cluster") || RESTRICTED_TAGS.contains(&k.as_str()) {
                errors.add(
                    format!("spec.tags[{k}]"),
                    format!("tag {k:?} is restricted: Berth sets it itself"),
                );
            }
        }

        if let Some(k) = &s.kubelet {
            validate_kubelet(&mut errors, k);
        }

        let p = "spec.blockDeviceMappings";
        if s.block_device_mappings.len() > 50 {
            errors.add(p, "at most 50 block device mappings");
        }
        if s.block_device_mappings
            .iter()
            .filter(|b| b.root_volume)
            .count()
            > 1
        {
            errors.add(p, "must have only one blockDeviceMappings with rootVolume");
        }
        for (i, b) in s.block_device_mappings.iter().enumerate() {
            let Some(ebs) = &b.ebs else { continue };
            let bp = format!("{p}[{i}].ebs");
            if ebs.snapshot_id.is_none() && ebs.volume_size.is_none() {
                errors.add(&bp, "snapshotID or volumeSize must be defined");
            }
            if let Some(size) = &ebs.volume_size
                && let Err(e) = check_volume_size(&size.0)
            {
                errors.add(format!("{bp}.volumeSize"), e);
            }
        }

        if let Some(m) = &s.metadata_options
            && !(1..=64).contains(&m.http_put_response_hop_limit)
        {
            errors.add(
                "spec.metadataOptions.httpPutResponseHopLimit",
                format!(
                    "must be between 1 and 64, got {}",
                    m.http_put_response_hop_limit
                ),
            );
        }
        errors.finish()
    }
}

/// EBS volume sizes: 1Gi..59000Gi, 1G..64000G, 1Ti..58Ti or 1T..64T, as Karpenter's pattern.
fn check_volume_size(size: &str) -> Result<(), String> {
    let (n, max) = [("Gi", 59000), ("G", 64000), ("Ti", 58), ("T", 64)]
        .into_iter()
        .find_map(|(suffix, max)| size.strip_suffix(suffix).map(|n| (n, max)))
        .ok_or_else(|| format!("{size:?} must be a whole number of Gi, G, Ti or T (e.g. 20Gi)"))?;
    match n.parse::<u32>() {
        Ok(v) if (1..=max).contains(&v) && !n.starts_with('0') => Ok(()),
        _ => Err(format!(
            "{size:?} is out of range: 1Gi-59000Gi, 1G-64000G, 1Ti-58Ti or 1T-64T"
        )),
    }
}

fn validate_kubelet(errors: &mut Errors, k: &v1::KubeletConfiguration) {
    let p = "spec.kubelet";
    for (field, map) in [
        ("systemReserved", &k.system_reserved),
        ("kubeReserved", &k.kube_reserved),
    ] {
        for (key, value) in map {
            let fp = format!("{p}.{field}[{key}]");
            if !["cpu", "memory", "ephemeral-storage", "pid"].contains(&key.as_str()) {
                errors.add(
                    &fp,
                    format!(
                        "valid keys for {field} are ['cpu','memory','ephemeral-storage','pid']"
                    ),
                );
            }
            if value.starts_with('-') {
                errors.add(
                    &fp,
                    format!("{field} value cannot be a negative resource quantity"),
                );
            } else if let Err(e) = berth_scheduler_core::quantity::parse_milli(value) {
                errors.add(&fp, e.to_string());
            }
        }
    }
    for (field, map) in [
        ("evictionHard", &k.eviction_hard),
        ("evictionSoft", &k.eviction_soft),
    ] {
        for (key, value) in map {
            let fp = format!("{p}.{field}[{key}]");
            if !v1::EVICTION_SIGNALS.contains(&key.as_str()) {
                errors.add(
                    &fp,
                    format!("valid keys for {field} are {:?}", v1::EVICTION_SIGNALS),
                );
            }
            if !value.is_empty()
                && !is_percentage(value)
                && berth_scheduler_core::quantity::parse_milli(value).is_err()
            {
                errors.add(
                    &fp,
                    format!("{value:?} must be a percentage (10%) or a quantity (100Mi)"),
                );
            }
        }
    }
    for (key, value) in &k.eviction_soft_grace_period {
        let fp = format!("{p}.evictionSoftGracePeriod[{key}]");
        if !v1::EVICTION_SIGNALS.contains(&key.as_str()) {
            errors.add(
                &fp,
                format!(
                    "valid keys for evictionSoftGracePeriod are {:?}",
                    v1::EVICTION_SIGNALS
                ),
            );
        }
        if value.parse::<kube::core::Duration>().is_err() {
            errors.add(&fp, format!("{value:?} is not a duration (e.g. 1m30s)"));
        }
        if !k.eviction_soft.contains_key(key) {
            errors.add(
                &fp,
                "evictionSoftGracePeriod OwnerKey does not have a matching evictionSoft",
            );
        }
    }
    for key in k.eviction_soft.keys() {
        if !k.eviction_soft_grace_period.contains_key(key) {
            errors.add(
                format!("{p}.evictionSoft[{key}]"),
                "evictionSoft OwnerKey does not have a matching evictionSoftGracePeriod",
            );
        }
    }
    for (field, value) in [("maxPods", k.max_pods), ("podsPerCore", k.pods_per_core)] {
        if let Some(v) = value
            && v < 0
        {
            errors.add(
                format!("{p}.{field}"),
                format!("must be at least 0, got {v}"),
            );
        }
    }
    for (field, value) in [
        (
            "imageGCHighThresholdPercent",
            k.image_gc_high_threshold_percent,
        ),
        (
            "imageGCLowThresholdPercent",
            k.image_gc_low_threshold_percent,
        ),
    ] {
        if let Some(v) = value
            && !(0..=100).contains(&v)
        {
            errors.add(
                format!("{p}.{field}"),
                format!("must be between 0 and 100, got {v}"),
            );
        }
    }
    if let (Some(high), Some(low)) = (
        k.image_gc_high_threshold_percent,
        k.image_gc_low_threshold_percent,
    ) && high <= low
    {
        errors.add(
            format!("{p}.imageGCHighThresholdPercent"),
            "imageGCHighThresholdPercent must be greater than imageGCLowThresholdPercent",
        );
    }
}
