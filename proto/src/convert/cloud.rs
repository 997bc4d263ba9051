//! `cloud.proto`: the CloudProvider service (instance types, instances, termination,
//! disruption requests).

use berth_scheduler_core::model as m;

use super::cluster::node_claim_from;
use super::common::{
    capacity_type_from, capacity_type_to, labels, labels_to, requirement_from, requirements_to,
    resources_from, resources_to, time_from, time_to,
};
use super::{ConversionError, Result, each, err, join};
use crate::v1 as p;

enum_conv!(TerminationState, m::TerminationState, termination_to, termination_from, {
    Terminating <=> m::TerminationState::Terminating, Terminated <=> m::TerminationState::Terminated,
});

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

pub(super) fn instance_type_from(t: p::InstanceType, path: &str) -> Result<m::InstanceType> {
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

pub(super) fn instance_from(i: p::Instance, path: &str) -> Result<m::Instance> {
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

fn block_kind_to(r: &berth_scheduler_core::disruption::BlockReason) -> p::DisruptionBlockKind {
    use berth_scheduler_core::disruption::BlockReason as B;
    match r {
        B::NotInitialized => p::DisruptionBlockKind::NotInitialized,
        B::NodeDoNotDisrupt => p::DisruptionBlockKind::NodeDoNotDisrupt,
        B::PodDoNotDisrupt { .. } => p::DisruptionBlockKind::PodDoNotDisrupt,
        B::PodDisruptionBudget { .. } => p::DisruptionBlockKind::PodDisruptionBudget,
        B::Budget { .. } => p::DisruptionBlockKind::Budget,
        B::ConsolidateAfter { .. } => p::DisruptionBlockKind::ConsolidateAfter,
        B::ConsolidationDisabled => p::DisruptionBlockKind::ConsolidationDisabled,
        B::NodePoolUnknown { .. } => p::DisruptionBlockKind::NodePoolUnknown,
        B::NotConsolidatable { .. } => p::DisruptionBlockKind::NotConsolidatable,
    }
}

/// The kind and the words (the core's `Display`, as `Explain` says it) of one blocked node.
impl From<&berth_scheduler_core::disruption::Blocked> for p::BlockedNode {
    fn from(b: &berth_scheduler_core::disruption::Blocked) -> Self {
        p::BlockedNode {
            node: b.node.clone(),
            node_pool: b.node_pool.clone(),
            kind: block_kind_to(&b.reason) as i32,
            message: b.reason.to_string(),
        }
    }
}

impl From<&[berth_scheduler_core::disruption::Blocked]> for p::DisruptionBlockedRequest {
    fn from(blocked: &[berth_scheduler_core::disruption::Blocked]) -> Self {
        p::DisruptionBlockedRequest {
            blocked: blocked.iter().map(Into::into).collect(),
        }
    }
}
