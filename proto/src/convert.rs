//! `TryFrom` conversions between `berth.v1` messages and the domain model.
//!
//! Domain → proto is infallible (`From`); proto → domain validates and names the first bad
//! field with its path from the message root, e.g. `node_pool.requirements[2].operator`.

use std::time::{Duration, SystemTime};

use berth_scheduler_core::model as m;
use berth_scheduler_core::sync as s;

use crate::v1 as p;

/// A message that does not convert: `field` is its path from the message root.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ConversionError {
    pub field: String,
    pub message: String,
}

type Result<T> = std::result::Result<T, ConversionError>;

fn err<T>(field: &str, message: impl Into<String>) -> Result<T> {
    Err(ConversionError {
        field: field.to_owned(),
        message: message.into(),
    })
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_owned()
    } else {
        format!("{path}.{field}")
    }
}

fn required<T>(value: Option<T>, path: &str, field: &str) -> Result<T> {
    value.ok_or_else(|| ConversionError {
        field: join(path, field),
        message: "required".into(),
    })
}

/// Converts each element, naming `field[i]` on failure.
fn each<P, D>(
    items: Vec<P>,
    path: &str,
    field: &str,
    f: impl Fn(P, &str) -> Result<D>,
) -> Result<Vec<D>> {
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| f(item, &format!("{}[{i}]", join(path, field))))
        .collect()
}

/// Proto enums: domain → i32 and i32 (not UNSPECIFIED) → domain.
macro_rules! enum_conv {
    ($proto:ident, $domain:ty, $to:ident, $from:ident, { $($pv:ident <=> $dv:expr),+ $(,)? }) => {
        fn $to(d: $domain) -> i32 {
            $(if d == $dv { return p::$proto::$pv as i32; })+
            unreachable!("every domain value is listed")
        }
        fn $from(v: i32, field: &str) -> Result<$domain> {
            match p::$proto::try_from(v) {
                $(Ok(p::$proto::$pv) => Ok($dv),)+
                _ => err(field, format!("{v} is not a valid {} (UNSPECIFIED is not allowed)", stringify!($proto))),
            }
        }
    };
}

enum_conv!(Operator, m::Operator, operator_to, operator_from, {
    In <=> m::Operator::In, NotIn <=> m::Operator::NotIn, Exists <=> m::Operator::Exists,
    DoesNotExist <=> m::Operator::DoesNotExist, Gt <=> m::Operator::Gt, Lt <=> m::Operator::Lt,
    Gte <=> m::Operator::Gte, Lte <=> m::Operator::Lte,
});
enum_conv!(TaintEffect, m::TaintEffect, effect_to, effect_from, {
    NoSchedule <=> m::TaintEffect::NoSchedule, PreferNoSchedule <=> m::TaintEffect::PreferNoSchedule,
    NoExecute <=> m::TaintEffect::NoExecute,
});
enum_conv!(TolerationOperator, m::TolerationOperator, toleration_op_to, toleration_op_from, {
    Equal <=> m::TolerationOperator::Equal, Exists <=> m::TolerationOperator::Exists,
});
enum_conv!(SelectorOperator, m::SelectorOperator, selector_op_to, selector_op_from, {
    In <=> m::SelectorOperator::In, NotIn <=> m::SelectorOperator::NotIn,
    Exists <=> m::SelectorOperator::Exists, DoesNotExist <=> m::SelectorOperator::DoesNotExist,
});
enum_conv!(CapacityType, m::CapacityType, capacity_type_to, capacity_type_from, {
    OnDemand <=> m::CapacityType::OnDemand, Spot <=> m::CapacityType::Spot, Reserved <=> m::CapacityType::Reserved,
});
enum_conv!(WhenUnsatisfiable, m::WhenUnsatisfiable, when_to, when_from, {
    DoNotSchedule <=> m::WhenUnsatisfiable::DoNotSchedule, ScheduleAnyway <=> m::WhenUnsatisfiable::ScheduleAnyway,
});
enum_conv!(NodeInclusionPolicy, m::NodeInclusionPolicy, inclusion_to, inclusion_from, {
    Honor <=> m::NodeInclusionPolicy::Honor, Ignore <=> m::NodeInclusionPolicy::Ignore,
});
enum_conv!(Protocol, m::Protocol, protocol_to, protocol_from, {
    Tcp <=> m::Protocol::Tcp, Udp <=> m::Protocol::Udp, Sctp <=> m::Protocol::Sctp,
});
enum_conv!(PodPhase, m::PodPhase, phase_to, phase_from, {
    Pending <=> m::PodPhase::Pending, Running <=> m::PodPhase::Running, Succeeded <=> m::PodPhase::Succeeded,
    Failed <=> m::PodPhase::Failed, Unknown <=> m::PodPhase::Unknown,
});
enum_conv!(NodeClaimCondition, m::NodeClaimCondition, condition_to, condition_from, {
    Launched <=> m::NodeClaimCondition::Launched, Registered <=> m::NodeClaimCondition::Registered,
    Initialized <=> m::NodeClaimCondition::Initialized, Ready <=> m::NodeClaimCondition::Ready,
    Drifted <=> m::NodeClaimCondition::Drifted, Consolidatable <=> m::NodeClaimCondition::Consolidatable,
    Drained <=> m::NodeClaimCondition::Drained, InstanceTerminating <=> m::NodeClaimCondition::InstanceTerminating,
});
enum_conv!(ConsolidationPolicy, m::ConsolidationPolicy, policy_to, policy_from, {
    WhenEmpty <=> m::ConsolidationPolicy::WhenEmpty,
    WhenEmptyOrUnderutilized <=> m::ConsolidationPolicy::WhenEmptyOrUnderutilized,
});
enum_conv!(DisruptionReason, m::DisruptionReason, reason_to, reason_from, {
    Underutilized <=> m::DisruptionReason::Underutilized, Empty <=> m::DisruptionReason::Empty,
    Drifted <=> m::DisruptionReason::Drifted,
});
enum_conv!(ObjectKind, s::ObjectKind, kind_to, kind_from, {
    Pod <=> s::ObjectKind::Pod, Node <=> s::ObjectKind::Node, NodeClaim <=> s::ObjectKind::NodeClaim,
    NodePool <=> s::ObjectKind::NodePool, DaemonSet <=> s::ObjectKind::DaemonSet,
    PodDisruptionBudget <=> s::ObjectKind::PodDisruptionBudget, Namespace <=> s::ObjectKind::Namespace,
});
enum_conv!(BatchKind, s::BatchKind, batch_kind_to, batch_kind_from, {
    Snapshot <=> s::BatchKind::Snapshot, SnapshotEnd <=> s::BatchKind::SnapshotEnd, Delta <=> s::BatchKind::Delta,
});
enum_conv!(TerminationState, m::TerminationState, termination_to, termination_from, {
    Terminating <=> m::TerminationState::Terminating, Terminated <=> m::TerminationState::Terminated,
});

// ---- scalars ----------------------------------------------------------------------------------------

fn resources_to(r: &m::Resources) -> p::ResourceList {
    p::ResourceList {
        milli: r.iter().map(|(k, v)| (k.to_owned(), v)).collect(),
    }
}

fn resources_from(r: Option<p::ResourceList>, path: &str) -> Result<m::Resources> {
    let milli = r.map(|r| r.milli).unwrap_or_default();
    for (name, v) in &milli {
        if name.is_empty() {
            return err(path, "empty resource name");
        }
        if *v < 0 {
            return err(&format!("{path}[{name}]"), format!("{v} is negative"));
        }
    }
    Ok(milli.into_iter().collect())
}

fn time_to(t: SystemTime) -> prost_types::Timestamp {
    t.into()
}

fn time_from(t: Option<prost_types::Timestamp>, path: &str, field: &str) -> Result<SystemTime> {
    let t = required(t, path, field)?;
    SystemTime::try_from(t).map_err(|e| ConversionError {
        field: join(path, field),
        message: e.to_string(),
    })
}

fn duration_to(d: Duration) -> prost_types::Duration {
    prost_types::Duration::try_from(d).expect("durations Berth handles fit a protobuf Duration")
}

fn duration_from(d: Option<prost_types::Duration>, field: &str) -> Result<Option<Duration>> {
    d.map(|d| {
        Duration::try_from(d).map_err(|e| ConversionError {
            field: field.to_owned(),
            message: e.to_string(),
        })
    })
    .transpose()
}

fn labels(map: std::collections::HashMap<String, String>) -> m::Labels {
    map.into_iter().collect()
}

fn labels_to(map: &m::Labels) -> std::collections::HashMap<String, String> {
    map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn opt_string(s: String) -> Option<String> {
    if s.is_empty() { None } else { Some(s) }
}

// ---- common ---------------------------------------------------------------------------------------------

fn requirement_to(r: &m::Requirement) -> p::Requirement {
    p::Requirement {
        key: r.key.clone(),
        operator: operator_to(r.operator),
        values: r.values.clone(),
        min_values: r.min_values,
    }
}

fn requirement_from(r: p::Requirement, path: &str) -> Result<m::Requirement> {
    if r.key.is_empty() {
        return err(&join(path, "key"), "required");
    }
    Ok(m::Requirement {
        key: r.key,
        operator: operator_from(r.operator, &join(path, "operator"))?,
        values: r.values,
        min_values: r.min_values,
    })
}

fn requirements_to(rs: &[m::Requirement]) -> Vec<p::Requirement> {
    rs.iter().map(requirement_to).collect()
}

fn taint_to(t: &m::Taint) -> p::Taint {
    p::Taint {
        key: t.key.clone(),
        value: t.value.clone(),
        effect: effect_to(t.effect),
    }
}

fn taint_from(t: p::Taint, path: &str) -> Result<m::Taint> {
    if t.key.is_empty() {
        return err(&join(path, "key"), "required");
    }
    Ok(m::Taint {
        key: t.key,
        value: t.value,
        effect: effect_from(t.effect, &join(path, "effect"))?,
    })
}

fn taints_to(ts: &[m::Taint]) -> Vec<p::Taint> {
    ts.iter().map(taint_to).collect()
}

fn toleration_to(t: &m::Toleration) -> p::Toleration {
    p::Toleration {
        key: t.key.clone(),
        operator: toleration_op_to(t.operator),
        value: t.value.clone(),
        effect: t
            .effect
            .map_or(p::TaintEffect::Unspecified as i32, effect_to),
        toleration_seconds: t.toleration_seconds,
    }
}

fn toleration_from(t: p::Toleration, path: &str) -> Result<m::Toleration> {
    let effect = if t.effect == p::TaintEffect::Unspecified as i32 {
        None
    } else {
        Some(effect_from(t.effect, &join(path, "effect"))?)
    };
    Ok(m::Toleration {
        key: t.key,
        operator: toleration_op_from(t.operator, &join(path, "operator"))?,
        value: t.value,
        effect,
        toleration_seconds: t.toleration_seconds,
    })
}

fn term_to(t: &m::NodeSelectorTerm) -> p::NodeSelectorTerm {
    p::NodeSelectorTerm {
        match_expressions: requirements_to(&t.match_expressions),
        match_fields: requirements_to(&t.match_fields),
    }
}

fn term_from(t: p::NodeSelectorTerm, path: &str) -> Result<m::NodeSelectorTerm> {
    Ok(m::NodeSelectorTerm {
        match_expressions: each(
            t.match_expressions,
            path,
            "match_expressions",
            requirement_from,
        )?,
        match_fields: each(t.match_fields, path, "match_fields", requirement_from)?,
    })
}

fn node_affinity_to(a: &m::NodeAffinity) -> p::NodeAffinity {
    p::NodeAffinity {
        required: a.required.iter().map(term_to).collect(),
        preferred: a
            .preferred
            .iter()
            .map(|t| p::PreferredSchedulingTerm {
                weight: t.weight,
                term: Some(term_to(&t.term)),
            })
            .collect(),
    }
}

fn node_affinity_from(a: p::NodeAffinity, path: &str) -> Result<m::NodeAffinity> {
    Ok(m::NodeAffinity {
        required: each(a.required, path, "required", term_from)?,
        preferred: each(a.preferred, path, "preferred", |t, path| {
            Ok(m::PreferredSchedulingTerm {
                weight: t.weight,
                term: term_from(required(t.term, path, "term")?, &join(path, "term"))?,
            })
        })?,
    })
}

fn selector_to(s: &m::LabelSelector) -> p::LabelSelector {
    p::LabelSelector {
        match_labels: labels_to(&s.match_labels),
        match_expressions: s
            .match_expressions
            .iter()
            .map(|e| p::SelectorRequirement {
                key: e.key.clone(),
                operator: selector_op_to(e.operator),
                values: e.values.clone(),
            })
            .collect(),
    }
}

fn selector_from(s: p::LabelSelector, path: &str) -> Result<m::LabelSelector> {
    Ok(m::LabelSelector {
        match_labels: labels(s.match_labels),
        match_expressions: each(s.match_expressions, path, "match_expressions", |e, path| {
            Ok(m::SelectorRequirement {
                key: e.key,
                operator: selector_op_from(e.operator, &join(path, "operator"))?,
                values: e.values,
            })
        })?,
    })
}

fn key_to(k: &m::ObjectKey) -> p::ObjectKey {
    p::ObjectKey {
        namespace: k.namespace.clone(),
        name: k.name.clone(),
    }
}

fn key_from(k: Option<p::ObjectKey>, path: &str, field: &str) -> Result<m::ObjectKey> {
    let k = required(k, path, field)?;
    if k.name.is_empty() {
        return err(&join(&join(path, field), "name"), "required");
    }
    Ok(m::ObjectKey {
        namespace: k.namespace,
        name: k.name,
    })
}

fn node_class_ref_to(r: &m::NodeClassRef) -> p::NodeClassRef {
    p::NodeClassRef {
        group: r.group.clone(),
        kind: r.kind.clone(),
        name: r.name.clone(),
    }
}

fn node_class_ref_from(r: Option<p::NodeClassRef>, path: &str) -> Result<m::NodeClassRef> {
    let r = required(r, path, "node_class_ref")?;
    for (field, value) in [("group", &r.group), ("kind", &r.kind), ("name", &r.name)] {
        if value.is_empty() {
            return err(&join(&join(path, "node_class_ref"), field), "required");
        }
    }
    Ok(m::NodeClassRef {
        group: r.group,
        kind: r.kind,
        name: r.name,
    })
}

// ---- pods ------------------------------------------------------------------------------------------------

fn spread_to(c: &m::TopologySpreadConstraint) -> p::TopologySpreadConstraint {
    p::TopologySpreadConstraint {
        max_skew: c.max_skew,
        topology_key: c.topology_key.clone(),
        when_unsatisfiable: when_to(c.when_unsatisfiable),
        label_selector: c.label_selector.as_ref().map(selector_to),
        min_domains: c.min_domains,
        match_label_keys: c.match_label_keys.clone(),
        node_affinity_policy: inclusion_to(c.node_affinity_policy),
        node_taints_policy: inclusion_to(c.node_taints_policy),
    }
}

fn spread_from(c: p::TopologySpreadConstraint, path: &str) -> Result<m::TopologySpreadConstraint> {
    if c.max_skew < 1 {
        return err(
            &join(path, "max_skew"),
            format!("must be at least 1, got {}", c.max_skew),
        );
    }
    if c.topology_key.is_empty() {
        return err(&join(path, "topology_key"), "required");
    }
    let policy = |v: i32, default, field| {
        if v == p::NodeInclusionPolicy::Unspecified as i32 {
            Ok(default)
        } else {
            inclusion_from(v, &join(path, field))
        }
    };
    Ok(m::TopologySpreadConstraint {
        max_skew: c.max_skew,
        topology_key: c.topology_key,
        when_unsatisfiable: when_from(c.when_unsatisfiable, &join(path, "when_unsatisfiable"))?,
        label_selector: c
            .label_selector
            .map(|s| selector_from(s, &join(path, "label_selector")))
            .transpose()?,
        min_domains: c.min_domains,
        match_label_keys: c.match_label_keys,
        node_affinity_policy: policy(
            c.node_affinity_policy,
            m::NodeInclusionPolicy::Honor,
            "node_affinity_policy",
        )?,
        node_taints_policy: policy(
            c.node_taints_policy,
            m::NodeInclusionPolicy::Ignore,
            "node_taints_policy",
        )?,
    })
}

fn affinity_term_to(t: &m::PodAffinityTerm) -> p::PodAffinityTerm {
    p::PodAffinityTerm {
        label_selector: t.label_selector.as_ref().map(selector_to),
        namespaces: t.namespaces.clone(),
        namespace_selector: t.namespace_selector.as_ref().map(selector_to),
        topology_key: t.topology_key.clone(),
        match_label_keys: t.match_label_keys.clone(),
        mismatch_label_keys: t.mismatch_label_keys.clone(),
    }
}

fn affinity_term_from(t: p::PodAffinityTerm, path: &str) -> Result<m::PodAffinityTerm> {
    if t.topology_key.is_empty() {
        return err(&join(path, "topology_key"), "required");
    }
    Ok(m::PodAffinityTerm {
        label_selector: t
            .label_selector
            .map(|s| selector_from(s, &join(path, "label_selector")))
            .transpose()?,
        namespaces: t.namespaces,
        namespace_selector: t
            .namespace_selector
            .map(|s| selector_from(s, &join(path, "namespace_selector")))
            .transpose()?,
        topology_key: t.topology_key,
        match_label_keys: t.match_label_keys,
        mismatch_label_keys: t.mismatch_label_keys,
    })
}

fn pod_affinity_to(a: &m::PodAffinity) -> p::PodAffinity {
    p::PodAffinity {
        required: a.required.iter().map(affinity_term_to).collect(),
        preferred: a
            .preferred
            .iter()
            .map(|w| p::WeightedPodAffinityTerm {
                weight: w.weight,
                term: Some(affinity_term_to(&w.term)),
            })
            .collect(),
    }
}

fn pod_affinity_from(a: p::PodAffinity, path: &str) -> Result<m::PodAffinity> {
    Ok(m::PodAffinity {
        required: each(a.required, path, "required", affinity_term_from)?,
        preferred: each(a.preferred, path, "preferred", |w, path| {
            Ok(m::WeightedPodAffinityTerm {
                weight: w.weight,
                term: affinity_term_from(required(w.term, path, "term")?, &join(path, "term"))?,
            })
        })?,
    })
}

impl From<&m::Pod> for p::Pod {
    fn from(pod: &m::Pod) -> Self {
        p::Pod {
            key: Some(key_to(&pod.key)),
            uid: pod.uid.clone(),
            labels: labels_to(&pod.labels),
            owner: pod.owner.as_ref().map(|o| p::OwnerReference {
                kind: o.kind.clone(),
                name: o.name.clone(),
                uid: o.uid.clone(),
            }),
            priority: pod.priority,
            containers: pod.containers.iter().map(resources_to).collect(),
            init_containers: pod
                .init_containers
                .iter()
                .map(|c| p::InitContainer {
                    requests: Some(resources_to(&c.requests)),
                    sidecar: c.sidecar,
                })
                .collect(),
            overhead: Some(resources_to(&pod.overhead)),
            node_selector: labels_to(&pod.node_selector),
            node_affinity: pod.node_affinity.as_ref().map(node_affinity_to),
            tolerations: pod.tolerations.iter().map(toleration_to).collect(),
            topology_spread: pod.topology_spread.iter().map(spread_to).collect(),
            pod_affinity: pod.pod_affinity.as_ref().map(pod_affinity_to),
            pod_anti_affinity: pod.pod_anti_affinity.as_ref().map(pod_affinity_to),
            volume_requirements: requirements_to(&pod.volume_requirements),
            host_ports: pod
                .host_ports
                .iter()
                .map(|h| p::HostPort {
                    ip: h.ip.clone(),
                    port: u32::from(h.port),
                    protocol: protocol_to(h.protocol),
                })
                .collect(),
            do_not_disrupt: pod.do_not_disrupt,
            phase: phase_to(pod.phase),
            node_name: pod.node_name.clone().unwrap_or_default(),
            nominated_node_claim: pod.nominated_node_claim.clone().unwrap_or_default(),
            unschedulable: pod.unschedulable,
            created_at: Some(time_to(pod.created_at)),
        }
    }
}

fn pod_from(pod: p::Pod, path: &str) -> Result<m::Pod> {
    Ok(m::Pod {
        key: key_from(pod.key, path, "key")?,
        uid: pod.uid,
        labels: labels(pod.labels),
        owner: pod.owner.map(|o| m::OwnerReference {
            kind: o.kind,
            name: o.name,
            uid: o.uid,
        }),
        priority: pod.priority,
        containers: each(pod.containers, path, "containers", |c, path| {
            resources_from(Some(c), path)
        })?,
        init_containers: each(pod.init_containers, path, "init_containers", |c, path| {
            Ok(m::InitContainer {
                requests: resources_from(c.requests, &join(path, "requests"))?,
                sidecar: c.sidecar,
            })
        })?,
        overhead: resources_from(pod.overhead, &join(path, "overhead"))?,
        node_selector: labels(pod.node_selector),
        node_affinity: pod
            .node_affinity
            .map(|a| node_affinity_from(a, &join(path, "node_affinity")))
            .transpose()?,
        tolerations: each(pod.tolerations, path, "tolerations", toleration_from)?,
        topology_spread: each(pod.topology_spread, path, "topology_spread", spread_from)?,
        pod_affinity: pod
            .pod_affinity
            .map(|a| pod_affinity_from(a, &join(path, "pod_affinity")))
            .transpose()?,
        pod_anti_affinity: pod
            .pod_anti_affinity
            .map(|a| pod_affinity_from(a, &join(path, "pod_anti_affinity")))
            .transpose()?,
        volume_requirements: each(
            pod.volume_requirements,
            path,
            "volume_requirements",
            requirement_from,
        )?,
        host_ports: each(pod.host_ports, path, "host_ports", |h, path| {
            let port = u16::try_from(h.port).ok().filter(|p| *p != 0);
            Ok(m::HostPort {
                ip: h.ip,
                port: port.ok_or_else(|| ConversionError {
                    field: join(path, "port"),
                    message: format!("{} is not a port (1-65535)", h.port),
                })?,
                protocol: protocol_from(h.protocol, &join(path, "protocol"))?,
            })
        })?,
        do_not_disrupt: pod.do_not_disrupt,
        phase: phase_from(pod.phase, &join(path, "phase"))?,
        node_name: opt_string(pod.node_name),
        nominated_node_claim: opt_string(pod.nominated_node_claim),
        unschedulable: pod.unschedulable,
        created_at: time_from(pod.created_at, path, "created_at")?,
    })
}

// ---- nodes, claims, pools -------------------------------------------------------------------------------

impl From<&m::Node> for p::Node {
    fn from(n: &m::Node) -> Self {
        p::Node {
            name: n.name.clone(),
            provider_id: n.provider_id.clone(),
            labels: labels_to(&n.labels),
            taints: taints_to(&n.taints),
            capacity: Some(resources_to(&n.capacity)),
            allocatable: Some(resources_to(&n.allocatable)),
            ready: n.ready,
            unschedulable: n.unschedulable,
            deleting: n.deleting,
            created_at: Some(time_to(n.created_at)),
            do_not_disrupt: n.do_not_disrupt,
        }
    }
}

fn node_from(n: p::Node, path: &str) -> Result<m::Node> {
    if n.name.is_empty() {
        return err(&join(path, "name"), "required");
    }
    Ok(m::Node {
        name: n.name,
        provider_id: n.provider_id,
        labels: labels(n.labels),
        taints: each(n.taints, path, "taints", taint_from)?,
        capacity: resources_from(n.capacity, &join(path, "capacity"))?,
        allocatable: resources_from(n.allocatable, &join(path, "allocatable"))?,
        ready: n.ready,
        unschedulable: n.unschedulable,
        deleting: n.deleting,
        do_not_disrupt: n.do_not_disrupt,
        created_at: time_from(n.created_at, path, "created_at")?,
    })
}

impl From<&m::NodeClaim> for p::NodeClaim {
    fn from(c: &m::NodeClaim) -> Self {
        p::NodeClaim {
            name: c.name.clone(),
            node_pool: c.node_pool.clone(),
            labels: labels_to(&c.labels),
            annotations: labels_to(&c.annotations),
            requirements: requirements_to(&c.requirements),
            taints: taints_to(&c.taints),
            startup_taints: taints_to(&c.startup_taints),
            requests: Some(resources_to(&c.requests)),
            node_class_ref: Some(node_class_ref_to(&c.node_class_ref)),
            expire_after: c.expire_after.map(duration_to),
            termination_grace_period: c.termination_grace_period.map(duration_to),
            provider_id: c.provider_id.clone(),
            node_name: c.node_name.clone(),
            image_id: c.image_id.clone(),
            capacity: Some(resources_to(&c.capacity)),
            allocatable: Some(resources_to(&c.allocatable)),
            conditions: c.conditions.iter().map(|c| condition_to(*c)).collect(),
            deleting: c.deleting,
            created_at: Some(time_to(c.created_at)),
        }
    }
}

fn node_claim_from(c: p::NodeClaim, path: &str) -> Result<m::NodeClaim> {
    if c.name.is_empty() {
        return err(&join(path, "name"), "required");
    }
    if c.node_pool.is_empty() {
        return err(&join(path, "node_pool"), "required");
    }
    Ok(m::NodeClaim {
        name: c.name,
        node_pool: c.node_pool,
        labels: labels(c.labels),
        annotations: labels(c.annotations),
        requirements: each(c.requirements, path, "requirements", requirement_from)?,
        taints: each(c.taints, path, "taints", taint_from)?,
        startup_taints: each(c.startup_taints, path, "startup_taints", taint_from)?,
        requests: resources_from(c.requests, &join(path, "requests"))?,
        node_class_ref: node_class_ref_from(c.node_class_ref, path)?,
        expire_after: duration_from(c.expire_after, &join(path, "expire_after"))?,
        termination_grace_period: duration_from(
            c.termination_grace_period,
            &join(path, "termination_grace_period"),
        )?,
        provider_id: c.provider_id,
        node_name: c.node_name,
        image_id: c.image_id,
        capacity: resources_from(c.capacity, &join(path, "capacity"))?,
        allocatable: resources_from(c.allocatable, &join(path, "allocatable"))?,
        conditions: c
            .conditions
            .into_iter()
            .enumerate()
            .map(|(i, v)| condition_from(v, &format!("{}[{i}]", join(path, "conditions"))))
            .collect::<Result<_>>()?,
        deleting: c.deleting,
        created_at: time_from(c.created_at, path, "created_at")?,
    })
}

impl From<&m::NodePool> for p::NodePool {
    fn from(n: &m::NodePool) -> Self {
        p::NodePool {
            name: n.name.clone(),
            weight: n.weight,
            labels: labels_to(&n.labels),
            annotations: labels_to(&n.annotations),
            requirements: requirements_to(&n.requirements),
            taints: taints_to(&n.taints),
            startup_taints: taints_to(&n.startup_taints),
            node_class_ref: Some(node_class_ref_to(&n.node_class_ref)),
            limits: Some(resources_to(&n.limits)),
            expire_after: n.expire_after.map(duration_to),
            termination_grace_period: n.termination_grace_period.map(duration_to),
            disruption: Some(p::Disruption {
                consolidation_policy: policy_to(n.disruption.consolidation_policy),
                consolidate_after: n.disruption.consolidate_after.map(duration_to),
                budgets: n
                    .disruption
                    .budgets
                    .iter()
                    .map(|b| p::Budget {
                        nodes: Some(match b.nodes {
                            m::BudgetNodes::Percent(pct) => {
                                p::budget::Nodes::Percent(u32::from(pct))
                            }
                            m::BudgetNodes::Count(n) => p::budget::Nodes::Count(n),
                        }),
                        reasons: b.reasons.iter().map(|r| reason_to(*r)).collect(),
                        schedule: b.schedule.clone().unwrap_or_default(),
                        duration: b.duration.map(duration_to),
                    })
                    .collect(),
            }),
            ready: n.ready,
            not_ready_reason: n.not_ready_reason.clone(),
        }
    }
}

fn node_pool_from(n: p::NodePool, path: &str) -> Result<m::NodePool> {
    if n.name.is_empty() {
        return err(&join(path, "name"), "required");
    }
    let dp = join(path, "disruption");
    let d = required(n.disruption, path, "disruption")?;
    let disruption = m::Disruption {
        consolidation_policy: policy_from(
            d.consolidation_policy,
            &join(&dp, "consolidation_policy"),
        )?,
        consolidate_after: duration_from(d.consolidate_after, &join(&dp, "consolidate_after"))?,
        budgets: each(d.budgets, &dp, "budgets", |b, path| {
            let nodes = match required(b.nodes, path, "nodes")? {
                p::budget::Nodes::Percent(pct) if pct <= 100 => m::BudgetNodes::Percent(pct as u8),
                p::budget::Nodes::Percent(pct) => {
                    return err(&join(path, "percent"), format!("{pct} is over 100"));
                }
                p::budget::Nodes::Count(n) => m::BudgetNodes::Count(n),
            };
            Ok(m::Budget {
                nodes,
                reasons: b
                    .reasons
                    .into_iter()
                    .enumerate()
                    .map(|(i, r)| reason_from(r, &format!("{}[{i}]", join(path, "reasons"))))
                    .collect::<Result<_>>()?,
                schedule: opt_string(b.schedule),
                duration: duration_from(b.duration, &join(path, "duration"))?,
            })
        })?,
    };
    Ok(m::NodePool {
        name: n.name,
        weight: n.weight,
        labels: labels(n.labels),
        annotations: labels(n.annotations),
        requirements: each(n.requirements, path, "requirements", requirement_from)?,
        taints: each(n.taints, path, "taints", taint_from)?,
        startup_taints: each(n.startup_taints, path, "startup_taints", taint_from)?,
        node_class_ref: node_class_ref_from(n.node_class_ref, path)?,
        limits: resources_from(n.limits, &join(path, "limits"))?,
        expire_after: duration_from(n.expire_after, &join(path, "expire_after"))?,
        termination_grace_period: duration_from(
            n.termination_grace_period,
            &join(path, "termination_grace_period"),
        )?,
        disruption,
        ready: n.ready,
        not_ready_reason: n.not_ready_reason,
    })
}

impl From<&m::DaemonSet> for p::DaemonSet {
    fn from(d: &m::DaemonSet) -> Self {
        p::DaemonSet {
            key: Some(key_to(&d.key)),
            template: Some((&d.template).into()),
        }
    }
}

fn daemon_set_from(d: p::DaemonSet, path: &str) -> Result<m::DaemonSet> {
    Ok(m::DaemonSet {
        key: key_from(d.key, path, "key")?,
        template: pod_from(
            required(d.template, path, "template")?,
            &join(path, "template"),
        )?,
    })
}

impl From<&m::PodDisruptionBudget> for p::PodDisruptionBudget {
    fn from(b: &m::PodDisruptionBudget) -> Self {
        p::PodDisruptionBudget {
            key: Some(key_to(&b.key)),
            selector: Some(selector_to(&b.selector)),
            disruptions_allowed: b.disruptions_allowed,
        }
    }
}

fn pdb_from(b: p::PodDisruptionBudget, path: &str) -> Result<m::PodDisruptionBudget> {
    Ok(m::PodDisruptionBudget {
        key: key_from(b.key, path, "key")?,
        selector: selector_from(
            required(b.selector, path, "selector")?,
            &join(path, "selector"),
        )?,
        disruptions_allowed: b.disruptions_allowed,
    })
}

// ---- the Sync stream ---------------------------------------------------------------------------------------

impl From<&s::Object> for p::Object {
    fn from(o: &s::Object) -> Self {
        use p::object::Object as O;
        p::Object {
            object: Some(match o {
                s::Object::Pod(x) => O::Pod(x.into()),
                s::Object::Node(x) => O::Node(x.into()),
                s::Object::NodeClaim(x) => O::NodeClaim(x.into()),
                s::Object::NodePool(x) => O::NodePool(x.into()),
                s::Object::DaemonSet(x) => O::DaemonSet(x.into()),
                s::Object::PodDisruptionBudget(x) => O::PodDisruptionBudget(x.into()),
                s::Object::Namespace(x) => O::Namespace(p::Namespace {
                    name: x.name.clone(),
                    labels: labels_to(&x.labels),
                }),
            }),
        }
    }
}

fn object_from(o: p::Object, path: &str) -> Result<s::Object> {
    use p::object::Object as O;
    Ok(match required(o.object, path, "object")? {
        O::Pod(x) => s::Object::Pod(pod_from(x, &join(path, "pod"))?),
        O::Node(x) => s::Object::Node(node_from(x, &join(path, "node"))?),
        O::NodeClaim(x) => s::Object::NodeClaim(node_claim_from(x, &join(path, "node_claim"))?),
        O::NodePool(x) => s::Object::NodePool(node_pool_from(x, &join(path, "node_pool"))?),
        O::DaemonSet(x) => s::Object::DaemonSet(daemon_set_from(x, &join(path, "daemon_set"))?),
        O::PodDisruptionBudget(x) => {
            s::Object::PodDisruptionBudget(pdb_from(x, &join(path, "pod_disruption_budget"))?)
        }
        O::Namespace(x) => {
            if x.name.is_empty() {
                return err(&join(path, "namespace.name"), "required");
            }
            s::Object::Namespace(m::Namespace {
                name: x.name,
                labels: labels(x.labels),
            })
        }
    })
}

impl From<&s::Batch> for p::Batch {
    fn from(b: &s::Batch) -> Self {
        use p::change::Change as C;
        p::Batch {
            sequence: b.sequence,
            kind: batch_kind_to(b.kind),
            changes: b
                .changes
                .iter()
                .map(|c| p::Change {
                    change: Some(match c {
                        s::Change::Upsert(o) => C::Upsert(o.into()),
                        s::Change::Delete { kind, key } => C::Delete(p::Deletion {
                            kind: kind_to(*kind),
                            key: Some(key_to(key)),
                        }),
                    }),
                })
                .collect(),
        }
    }
}

impl TryFrom<p::Batch> for s::Batch {
    type Error = ConversionError;
    fn try_from(b: p::Batch) -> Result<Self> {
        use p::change::Change as C;
        let path = "batch";
        if b.sequence == 0 {
            return err("batch.sequence", "must start at 1");
        }
        Ok(s::Batch {
            sequence: b.sequence,
            kind: batch_kind_from(b.kind, "batch.kind")?,
            changes: each(b.changes, path, "changes", |c, path| {
                Ok(match required(c.change, path, "change")? {
                    C::Upsert(o) => s::Change::Upsert(object_from(o, &join(path, "upsert"))?),
                    C::Delete(d) => {
                        let dp = join(path, "delete");
                        s::Change::Delete {
                            kind: kind_from(d.kind, &join(&dp, "kind"))?,
                            key: key_from(d.key, &dp, "key")?,
                        }
                    }
                })
            })?,
        })
    }
}

impl From<&s::Feedback> for p::Feedback {
    fn from(f: &s::Feedback) -> Self {
        use p::nomination::Target as T;
        p::Feedback {
            acknowledged: f.acknowledged,
            nominations: f
                .nominations
                .iter()
                .map(|n| p::Nomination {
                    pod: Some(key_to(&n.pod)),
                    target: Some(match &n.target {
                        s::NominationTarget::Node(x) => T::Node(x.clone()),
                        s::NominationTarget::NodeClaim(x) => T::NodeClaim(x.clone()),
                    }),
                })
                .collect(),
            unschedulable: f
                .unschedulable
                .iter()
                .map(|u| p::Unschedulable {
                    pod: Some(key_to(&u.pod)),
                    reason: u.reason.clone(),
                })
                .collect(),
        }
    }
}

impl TryFrom<p::Feedback> for s::Feedback {
    type Error = ConversionError;
    fn try_from(f: p::Feedback) -> Result<Self> {
        use p::nomination::Target as T;
        Ok(s::Feedback {
            acknowledged: f.acknowledged,
            nominations: each(f.nominations, "feedback", "nominations", |n, path| {
                Ok(s::Nomination {
                    pod: key_from(n.pod, path, "pod")?,
                    target: match required(n.target, path, "target")? {
                        T::Node(x) => s::NominationTarget::Node(x),
                        T::NodeClaim(x) => s::NominationTarget::NodeClaim(x),
                    },
                })
            })?,
            unschedulable: each(f.unschedulable, "feedback", "unschedulable", |u, path| {
                Ok(s::Unschedulable {
                    pod: key_from(u.pod, path, "pod")?,
                    reason: u.reason,
                })
            })?,
        })
    }
}

// ---- the CloudProvider service -------------------------------------------------------------------------------

impl From<&m::InstanceType> for p::InstanceType {
    fn from(t: &m::InstanceType) -> Self {
        p::InstanceType {
            name: t.name.clone(),
            requirements: requirements_to(&t.requirements),
            capacity: Some(resources_to(&t.capacity)),
            overhead: Some(p::Overhead {
                kube_reserved: Some(resources_to(&t.overhead.kube_reserved)),
                system_reserved: Some(resources_to(&t.overhead.system_reserved)),
                eviction_threshold: Some(resources_to(&t.overhead.eviction_threshold)),
            }),
            offerings: t
                .offerings
                .iter()
                .map(|o| p::Offering {
                    zone: o.zone.clone(),
                    capacity_type: capacity_type_to(o.capacity_type),
                    price: o.price,
                    available: o.available,
                })
                .collect(),
        }
    }
}

fn instance_type_from(t: p::InstanceType, path: &str) -> Result<m::InstanceType> {
    if t.name.is_empty() {
        return err(&join(path, "name"), "required");
    }
    let op = join(path, "overhead");
    let o = t.overhead.unwrap_or_default();
    Ok(m::InstanceType {
        name: t.name,
        requirements: each(t.requirements, path, "requirements", requirement_from)?,
        capacity: resources_from(t.capacity, &join(path, "capacity"))?,
        overhead: m::Overhead {
            kube_reserved: resources_from(o.kube_reserved, &join(&op, "kube_reserved"))?,
            system_reserved: resources_from(o.system_reserved, &join(&op, "system_reserved"))?,
            eviction_threshold: resources_from(
                o.eviction_threshold,
                &join(&op, "eviction_threshold"),
            )?,
        },
        offerings: each(t.offerings, path, "offerings", |o, path| {
            if o.zone.is_empty() {
                return err(&join(path, "zone"), "required");
            }
            if !o.price.is_finite() || o.price < 0.0 {
                return err(
                    &join(path, "price"),
                    format!("{} is not a price in USD/hour", o.price),
                );
            }
            Ok(m::Offering {
                zone: o.zone,
                capacity_type: capacity_type_from(o.capacity_type, &join(path, "capacity_type"))?,
                price: o.price,
                available: o.available,
            })
        })?,
    })
}

impl From<&m::Instance> for p::Instance {
    fn from(i: &m::Instance) -> Self {
        p::Instance {
            node_claim: i.node_claim.clone(),
            provider_id: i.provider_id.clone(),
            instance_type: i.instance_type.clone(),
            zone: i.zone.clone(),
            capacity_type: capacity_type_to(i.capacity_type),
            image_id: i.image_id.clone(),
            capacity: Some(resources_to(&i.capacity)),
            allocatable: Some(resources_to(&i.allocatable)),
            labels: labels_to(&i.labels),
            launched_at: Some(time_to(i.launched_at)),
            node_pool: i.node_pool.clone(),
            price: i.price,
            state: match i.state {
                m::InstanceState::Pending => p::InstanceState::Pending,
                m::InstanceState::Running => p::InstanceState::Running,
                m::InstanceState::ShuttingDown => p::InstanceState::ShuttingDown,
            } as i32,
        }
    }
}

fn instance_from(i: p::Instance, path: &str) -> Result<m::Instance> {
    for (field, value) in [
        ("node_claim", &i.node_claim),
        ("provider_id", &i.provider_id),
        ("instance_type", &i.instance_type),
    ] {
        if value.is_empty() {
            return err(&join(path, field), "required");
        }
    }
    Ok(m::Instance {
        node_claim: i.node_claim,
        provider_id: i.provider_id,
        instance_type: i.instance_type,
        zone: i.zone,
        capacity_type: capacity_type_from(i.capacity_type, &join(path, "capacity_type"))?,
        image_id: i.image_id,
        capacity: resources_from(i.capacity, &join(path, "capacity"))?,
        allocatable: resources_from(i.allocatable, &join(path, "allocatable"))?,
        labels: labels(i.labels),
        launched_at: time_from(i.launched_at, path, "launched_at")?,
        node_pool: i.node_pool,
        price: if i.price.is_finite() && i.price >= 0.0 {
            i.price
        } else {
            return err(&join(path, "price"), "must be a non-negative number");
        },
        state: match p::InstanceState::try_from(i.state) {
            Ok(p::InstanceState::Pending) => m::InstanceState::Pending,
            Ok(p::InstanceState::Running) => m::InstanceState::Running,
            Ok(p::InstanceState::ShuttingDown) => m::InstanceState::ShuttingDown,
            _ => return err(&join(path, "state"), "required"),
        },
    })
}

/// Implements `TryFrom<proto>` for a domain type through its path-taking converter.
macro_rules! try_from_root {
    ($($proto:ty => $domain:ty, $f:ident, $root:literal;)+) => {$(
        impl TryFrom<$proto> for $domain {
            type Error = ConversionError;
            fn try_from(v: $proto) -> Result<Self> {
                $f(v, $root)
            }
        }
    )+};
}

try_from_root! {
    p::Pod => m::Pod, pod_from, "pod";
    p::Node => m::Node, node_from, "node";
    p::NodeClaim => m::NodeClaim, node_claim_from, "node_claim";
    p::NodePool => m::NodePool, node_pool_from, "node_pool";
    p::DaemonSet => m::DaemonSet, daemon_set_from, "daemon_set";
    p::PodDisruptionBudget => m::PodDisruptionBudget, pdb_from, "pod_disruption_budget";
    p::Object => s::Object, object_from, "object";
    p::InstanceType => m::InstanceType, instance_type_from, "instance_type";
    p::Instance => m::Instance, instance_from, "instance";
}

/// `InstanceTypes` response → domain, naming `instance_types[i]...` on failure.
impl TryFrom<p::InstanceTypesResponse> for Vec<m::InstanceType> {
    type Error = ConversionError;
    fn try_from(r: p::InstanceTypesResponse) -> Result<Self> {
        each(r.instance_types, "", "instance_types", instance_type_from)
    }
}

impl From<m::TerminationState> for p::TerminateResponse {
    fn from(state: m::TerminationState) -> Self {
        p::TerminateResponse {
            state: termination_to(state),
        }
    }
}

impl TryFrom<p::TerminateResponse> for m::TerminationState {
    type Error = ConversionError;
    fn try_from(r: p::TerminateResponse) -> Result<Self> {
        termination_from(r.state, "state")
    }
}

/// Used by [`crate::status`].
pub(crate) fn capacity_type_to_proto(c: m::CapacityType) -> i32 {
    capacity_type_to(c)
}

pub(crate) fn capacity_type_from_proto(v: i32, field: &str) -> Result<m::CapacityType> {
    capacity_type_from(v, field)
}

// ---- disruption ---------------------------------------------------------------------------------

fn method_to(m: berth_scheduler_core::disruption::Method) -> i32 {
    use berth_scheduler_core::disruption::Method;
    (match m {
        Method::Expired => p::DisruptionMethod::Expired,
        Method::Drifted => p::DisruptionMethod::Drifted,
        Method::Empty => p::DisruptionMethod::Empty,
        Method::Underutilized => p::DisruptionMethod::Underutilized,
    }) as i32
}

fn method_from(v: i32, field: &str) -> Result<berth_scheduler_core::disruption::Method> {
    use berth_scheduler_core::disruption::Method;
    match p::DisruptionMethod::try_from(v) {
        Ok(p::DisruptionMethod::Expired) => Ok(Method::Expired),
        Ok(p::DisruptionMethod::Drifted) => Ok(Method::Drifted),
        Ok(p::DisruptionMethod::Empty) => Ok(Method::Empty),
        Ok(p::DisruptionMethod::Underutilized) => Ok(Method::Underutilized),
        _ => err(field, format!("{v} is not a disruption method")),
    }
}

impl From<&berth_scheduler_core::disruption::Command> for p::DisruptRequest {
    fn from(c: &berth_scheduler_core::disruption::Command) -> Self {
        p::DisruptRequest {
            id: c.id.clone(),
            method: method_to(c.method),
            node_claims: c.node_claims.clone(),
            replacements: c.replacements.iter().map(Into::into).collect(),
            savings_per_hour: c.savings_per_hour,
            reason: c.reason.clone(),
        }
    }
}

impl TryFrom<p::DisruptRequest> for berth_scheduler_core::disruption::Command {
    type Error = ConversionError;
    fn try_from(r: p::DisruptRequest) -> Result<Self> {
        if r.id.is_empty() {
            return err("id", "required");
        }
        if r.node_claims.is_empty() {
            return err("node_claims", "at least one NodeClaim is required");
        }
        if let Some(i) = r.node_claims.iter().position(String::is_empty) {
            return err(&format!("node_claims[{i}]"), "must not be empty");
        }
        if !r.savings_per_hour.is_finite() {
            return err("savings_per_hour", "must be a finite number");
        }
        Ok(Self {
            id: r.id,
            method: method_from(r.method, "method")?,
            node_claims: r.node_claims,
            replacements: each(r.replacements, "", "replacements", node_claim_from)?,
            savings_per_hour: r.savings_per_hour,
            reason: r.reason,
        })
    }
}
