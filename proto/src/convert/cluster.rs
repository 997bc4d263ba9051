//! `cluster.proto`: the Kubernetes objects the scheduler sees (pods, nodes, NodeClaims,
//! NodePools, DaemonSets, PodDisruptionBudgets).

use berth_scheduler_core::model as m;

use super::common::{
    duration_from, duration_to, key_from, key_to, labels, labels_to, node_affinity_from,
    node_affinity_to, node_class_ref_from, node_class_ref_to, opt_string, requirement_from,
    requirements_to, resources_from, resources_to, selector_from, selector_to, taint_from,
    taints_to, time_from, time_to, toleration_from, toleration_to,
};
use super::{ConversionError, Result, each, err, join, required};
use crate::v1 as p;

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

pub(super) fn pod_from(pod: p::Pod, path: &str) -> Result<m::Pod> {
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

pub(super) fn node_from(n: p::Node, path: &str) -> Result<m::Node> {
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

pub(super) fn node_claim_from(c: p::NodeClaim, path: &str) -> Result<m::NodeClaim> {
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

pub(super) fn node_pool_from(n: p::NodePool, path: &str) -> Result<m::NodePool> {
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

pub(super) fn daemon_set_from(d: p::DaemonSet, path: &str) -> Result<m::DaemonSet> {
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

pub(super) fn pdb_from(b: p::PodDisruptionBudget, path: &str) -> Result<m::PodDisruptionBudget> {
    Ok(m::PodDisruptionBudget {
        key: key_from(b.key, path, "key")?,
        selector: selector_from(
            required(b.selector, path, "selector")?,
            &join(path, "selector"),
        )?,
        disruptions_allowed: b.disruptions_allowed,
    })
}
