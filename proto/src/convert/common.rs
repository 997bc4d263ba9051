//! `common.proto`: scalars (resources, times, durations, labels) and the shared messages
//! (requirements, taints, tolerations, affinity terms, selectors, object keys, NodeClass refs).

use std::time::{Duration, SystemTime};

use berth_scheduler_core::model as m;

use super::{ConversionError, Result, each, err, join, required};
use crate::v1 as p;

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

// ---- scalars ----------------------------------------------------------------------------------------

pub(super) fn resources_to(r: &m::Resources) -> p::ResourceList {
    p::ResourceList {
        milli: r.iter().map(|(k, v)| (k.to_owned(), v)).collect(),
    }
}

pub(super) fn resources_from(r: Option<p::ResourceList>, path: &str) -> Result<m::Resources> {
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

pub(super) fn time_to(t: SystemTime) -> prost_types::Timestamp {
    t.into()
}

pub(super) fn time_from(
    t: Option<prost_types::Timestamp>,
    path: &str,
    field: &str,
) -> Result<SystemTime> {
    let t = required(t, path, field)?;
    SystemTime::try_from(t).map_err(|e| ConversionError {
        field: join(path, field),
        message: e.to_string(),
    })
}

pub(super) fn duration_to(d: Duration) -> prost_types::Duration {
    prost_types::Duration::try_from(d).expect("durations Berth handles fit a protobuf Duration")
}

pub(super) fn duration_from(
    d: Option<prost_types::Duration>,
    field: &str,
) -> Result<Option<Duration>> {
    d.map(|d| {
        Duration::try_from(d).map_err(|e| ConversionError {
            field: field.to_owned(),
            message: e.to_string(),
        })
    })
    .transpose()
}

pub(super) fn labels(map: std::collections::HashMap<String, String>) -> m::Labels {
    map.into_iter().collect()
}

pub(super) fn labels_to(map: &m::Labels) -> std::collections::HashMap<String, String> {
    map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

pub(super) fn opt_string(s: String) -> Option<String> {
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

pub(super) fn requirement_from(r: p::Requirement, path: &str) -> Result<m::Requirement> {
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

pub(super) fn requirements_to(rs: &[m::Requirement]) -> Vec<p::Requirement> {
    rs.iter().map(requirement_to).collect()
}

fn taint_to(t: &m::Taint) -> p::Taint {
    p::Taint {
        key: t.key.clone(),
        value: t.value.clone(),
        effect: effect_to(t.effect),
    }
}

pub(super) fn taint_from(t: p::Taint, path: &str) -> Result<m::Taint> {
    if t.key.is_empty() {
        return err(&join(path, "key"), "required");
    }
    Ok(m::Taint {
        key: t.key,
        value: t.value,
        effect: effect_from(t.effect, &join(path, "effect"))?,
    })
}

pub(super) fn taints_to(ts: &[m::Taint]) -> Vec<p::Taint> {
    ts.iter().map(taint_to).collect()
}

pub(super) fn toleration_to(t: &m::Toleration) -> p::Toleration {
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

pub(super) fn toleration_from(t: p::Toleration, path: &str) -> Result<m::Toleration> {
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

pub(super) fn node_affinity_to(a: &m::NodeAffinity) -> p::NodeAffinity {
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

pub(super) fn node_affinity_from(a: p::NodeAffinity, path: &str) -> Result<m::NodeAffinity> {
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

pub(super) fn selector_to(s: &m::LabelSelector) -> p::LabelSelector {
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

pub(super) fn selector_from(s: p::LabelSelector, path: &str) -> Result<m::LabelSelector> {
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

pub(super) fn key_to(k: &m::ObjectKey) -> p::ObjectKey {
    p::ObjectKey {
        namespace: k.namespace.clone(),
        name: k.name.clone(),
    }
}

pub(super) fn key_from(k: Option<p::ObjectKey>, path: &str, field: &str) -> Result<m::ObjectKey> {
    let k = required(k, path, field)?;
    if k.name.is_empty() {
        return err(&join(&join(path, field), "name"), "required");
    }
    Ok(m::ObjectKey {
        namespace: k.namespace,
        name: k.name,
    })
}

pub(super) fn node_class_ref_to(r: &m::NodeClassRef) -> p::NodeClassRef {
    p::NodeClassRef {
        group: r.group.clone(),
        kind: r.kind.clone(),
        name: r.name.clone(),
    }
}

pub(super) fn node_class_ref_from(
    r: Option<p::NodeClassRef>,
    path: &str,
) -> Result<m::NodeClassRef> {
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

/// Used by [`crate::status`].
pub(crate) fn capacity_type_to_proto(c: m::CapacityType) -> i32 {
    capacity_type_to(c)
}

pub(crate) fn capacity_type_from_proto(v: i32, field: &str) -> Result<m::CapacityType> {
    capacity_type_from(v, field)
}
