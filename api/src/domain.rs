//! Kubernetes objects → the scheduler core's domain model.
//!
//! One implementation for everything that reads a cluster: `berth plan` (from YAML files) and
//! the watcher (from reflectors). Each function validates what it converts and names the
//! field path of anything it cannot read (`spec.containers[1].resources.requests.cpu`).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use berth_scheduler_core::model as m;
use berth_scheduler_core::quantity::parse_milli;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;

use crate::{FieldError, labels, v1};

type Result<T> = std::result::Result<T, FieldError>;

fn err<T>(path: impl Into<String>, message: impl Into<String>) -> Result<T> {
    Err(FieldError {
        path: path.into(),
        message: message.into(),
    })
}

fn resources(list: Option<&BTreeMap<String, Quantity>>, path: &str) -> Result<m::Resources> {
    let mut out = m::Resources::new();
    for (name, q) in list.into_iter().flatten() {
        match parse_milli(&q.0) {
            Ok(v) => out.set(name, v),
            Err(e) => return err(format!("{path}.{name}"), e.to_string()),
        }
    }
    Ok(out)
}

fn operator(op: &str, path: &str) -> Result<m::Operator> {
    Ok(match op {
        "In" => m::Operator::In,
        "NotIn" => m::Operator::NotIn,
        "Exists" => m::Operator::Exists,
        "DoesNotExist" => m::Operator::DoesNotExist,
        "Gt" => m::Operator::Gt,
        "Lt" => m::Operator::Lt,
        "Gte" => m::Operator::Gte,
        "Lte" => m::Operator::Lte,
        other => return err(path, format!("unknown operator {other:?}")),
    })
}

fn requirement(r: &core::NodeSelectorRequirement, path: &str) -> Result<m::Requirement> {
    Ok(m::Requirement {
        key: r.key.clone(),
        operator: operator(&r.operator, &format!("{path}.operator"))?,
        values: r.values.clone().unwrap_or_default(),
        min_values: None,
    })
}

fn requirements(
    list: Option<&Vec<core::NodeSelectorRequirement>>,
    path: &str,
) -> Result<Vec<m::Requirement>> {
    list.into_iter()
        .flatten()
        .enumerate()
        .map(|(i, r)| requirement(r, &format!("{path}[{i}]")))
        .collect()
}

fn term(t: &core::NodeSelectorTerm, path: &str) -> Result<m::NodeSelectorTerm> {
    Ok(m::NodeSelectorTerm {
        match_expressions: requirements(
            t.match_expressions.as_ref(),
            &format!("{path}.matchExpressions"),
        )?,
        match_fields: requirements(t.match_fields.as_ref(), &format!("{path}.matchFields"))?,
    })
}

fn effect(e: &str, path: &str) -> Result<m::TaintEffect> {
    Ok(match e {
        "NoSchedule" => m::TaintEffect::NoSchedule,
        "PreferNoSchedule" => m::TaintEffect::PreferNoSchedule,
        "NoExecute" => m::TaintEffect::NoExecute,
        other => return err(path, format!("unknown taint effect {other:?}")),
    })
}

fn taints(list: Option<&Vec<core::Taint>>, path: &str) -> Result<Vec<m::Taint>> {
    list.into_iter()
        .flatten()
        .enumerate()
        .map(|(i, t)| {
            Ok(m::Taint {
                key: t.key.clone(),
                value: t.value.clone().unwrap_or_default(),
                effect: effect(&t.effect, &format!("{path}[{i}].effect"))?,
            })
        })
        .collect()
}

fn selector(s: &meta::LabelSelector, path: &str) -> Result<m::LabelSelector> {
    Ok(m::LabelSelector {
        match_labels: s.match_labels.clone().unwrap_or_default(),
        match_expressions: s
            .match_expressions
            .iter()
            .flatten()
            .enumerate()
            .map(|(i, e)| {
                let operator = match e.operator.as_str() {
                    "In" => m::SelectorOperator::In,
                    "NotIn" => m::SelectorOperator::NotIn,
                    "Exists" => m::SelectorOperator::Exists,
                    "DoesNotExist" => m::SelectorOperator::DoesNotExist,
                    other => {
                        return err(
                            format!("{path}.matchExpressions[{i}].operator"),
                            format!("unknown operator {other:?}"),
                        );
                    }
                };
                Ok(m::SelectorRequirement {
                    key: e.key.clone(),
                    operator,
                    values: e.values.clone().unwrap_or_default(),
                })
            })
            .collect::<Result<_>>()?,
    })
}

fn affinity_term(t: &core::PodAffinityTerm, path: &str) -> Result<m::PodAffinityTerm> {
    Ok(m::PodAffinityTerm {
        label_selector: t
            .label_selector
            .as_ref()
            .map(|s| selector(s, &format!("{path}.labelSelector")))
            .transpose()?,
        namespaces: t.namespaces.clone().unwrap_or_default(),
        namespace_selector: t
            .namespace_selector
            .as_ref()
            .map(|s| selector(s, &format!("{path}.namespaceSelector")))
            .transpose()?,
        topology_key: t.topology_key.clone(),
        match_label_keys: t.match_label_keys.clone().unwrap_or_default(),
        mismatch_label_keys: t.mismatch_label_keys.clone().unwrap_or_default(),
    })
}

fn pod_affinity(
    required: Option<&Vec<core::PodAffinityTerm>>,
    preferred: Option<&Vec<core::WeightedPodAffinityTerm>>,
    path: &str,
) -> Result<m::PodAffinity> {
    Ok(m::PodAffinity {
        required: required
            .into_iter()
            .flatten()
            .enumerate()
            .map(|(i, t)| {
                affinity_term(
                    t,
                    &format!("{path}.requiredDuringSchedulingIgnoredDuringExecution[{i}]"),
                )
            })
            .collect::<Result<_>>()?,
        preferred: preferred
            .into_iter()
            .flatten()
            .enumerate()
            .map(|(i, w)| {
                let p = format!("{path}.preferredDuringSchedulingIgnoredDuringExecution[{i}]");
                Ok(m::WeightedPodAffinityTerm {
                    weight: w.weight,
                    term: affinity_term(&w.pod_affinity_term, &format!("{p}.podAffinityTerm"))?,
                })
            })
            .collect::<Result<_>>()?,
    })
}

fn inclusion(
    policy: Option<&str>,
    default: m::NodeInclusionPolicy,
    path: &str,
) -> Result<m::NodeInclusionPolicy> {
    match policy {
        None => Ok(default),
        Some("Honor") => Ok(m::NodeInclusionPolicy::Honor),
        Some("Ignore") => Ok(m::NodeInclusionPolicy::Ignore),
        Some(other) => err(path, format!("{other:?} is not Honor or Ignore")),
    }
}

fn time(t: Option<&meta::Time>) -> SystemTime {
    t.and_then(|t| u64::try_from(t.0.as_second()).ok())
        .map_or(SystemTime::UNIX_EPOCH, |s| {
            SystemTime::UNIX_EPOCH + Duration::from_secs(s)
        })
}

/// Volume topology a pod's PersistentVolumeClaims impose, from their bound PersistentVolumes'
/// node affinity (the first term, as the kube-scheduler's volume binding does for zonal PVs).
pub type VolumeLookup<'a> = &'a dyn Fn(&str, &str) -> Option<Vec<m::Requirement>>;

/// A pod, from its metadata, spec and status. `volumes` resolves a PersistentVolumeClaim
/// (namespace, name) to the node requirements of its bound volume.
pub fn pod(p: &core::Pod, volumes: VolumeLookup<'_>) -> Result<m::Pod> {
    let namespace = p
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".to_owned());
    let name = p.metadata.name.clone().ok_or_else(|| FieldError {
        path: "metadata.name".into(),
        message: "required".into(),
    })?;
    let mut out = m::Pod::new(&namespace, &name);
    out.uid = p.metadata.uid.clone().unwrap_or_default();
    out.labels = p.metadata.labels.clone().unwrap_or_default();
    out.created_at = time(p.metadata.creation_timestamp.as_ref());
    out.do_not_disrupt = p
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(labels::DO_NOT_DISRUPT))
        .is_some_and(|v| v == "true");
    out.owner = p
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
        .map(|o| m::OwnerReference {
            kind: o.kind.clone(),
            name: o.name.clone(),
            uid: o.uid.clone(),
        });
    let spec = p.spec.as_ref().ok_or_else(|| FieldError {
        path: "spec".into(),
        message: "required".into(),
    })?;
    pod_spec(spec, &mut out, "spec", &namespace, volumes)?;
    if let Some(status) = &p.status {
        out.phase = match status.phase.as_deref() {
            None | Some("Pending") => m::PodPhase::Pending,
            Some("Running") => m::PodPhase::Running,
            Some("Succeeded") => m::PodPhase::Succeeded,
            Some("Failed") => m::PodPhase::Failed,
            Some(_) => m::PodPhase::Unknown,
        };
        out.unschedulable = status.conditions.iter().flatten().any(|c| {
            c.type_ == "PodScheduled"
                && c.status == "False"
                && c.reason.as_deref() == Some("Unschedulable")
        });
    }
    Ok(out)
}

/// Fills `out` from a pod spec found at `path`.
pub fn pod_spec(
    spec: &core::PodSpec,
    out: &mut m::Pod,
    path: &str,
    namespace: &str,
    volumes: VolumeLookup<'_>,
) -> Result<()> {
    out.priority = spec.priority.unwrap_or(0);
    out.node_name = spec.node_name.clone().filter(|n| !n.is_empty());
    out.node_selector = spec.node_selector.clone().unwrap_or_default();
    out.overhead = resources(spec.overhead.as_ref(), &format!("{path}.overhead"))?;
    out.containers = spec
        .containers
        .iter()
        .enumerate()
        .map(|(i, c)| {
            resources(
                c.resources.as_ref().and_then(|r| r.requests.as_ref()),
                &format!("{path}.containers[{i}].resources.requests"),
            )
        })
        .collect::<Result<_>>()?;
    out.init_containers = spec
        .init_containers
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, c)| {
            Ok(m::InitContainer {
                requests: resources(
                    c.resources.as_ref().and_then(|r| r.requests.as_ref()),
                    &format!("{path}.initContainers[{i}].resources.requests"),
                )?,
                sidecar: c.restart_policy.as_deref() == Some("Always"),
            })
        })
        .collect::<Result<_>>()?;
    for (ci, c) in spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .enumerate()
    {
        for (pi, port) in c.ports.iter().flatten().enumerate() {
            let Some(host_port) = port.host_port.filter(|p| *p > 0) else {
                continue;
            };
            let protocol = match port.protocol.as_deref() {
                None | Some("TCP") => m::Protocol::Tcp,
                Some("UDP") => m::Protocol::Udp,
                Some("SCTP") => m::Protocol::Sctp,
                Some(other) => {
                    return err(
                        format!("{path}.containers[{ci}].ports[{pi}].protocol"),
                        format!("unknown protocol {other:?}"),
                    );
                }
            };
            let port_number = u16::try_from(host_port).map_err(|_| FieldError {
                path: format!("{path}.containers[{ci}].ports[{pi}].hostPort"),
                message: format!("{host_port} is not a port"),
            })?;
            out.host_ports.push(m::HostPort {
                ip: port.host_ip.clone().unwrap_or_default(),
                port: port_number,
                protocol,
            });
        }
    }
    out.tolerations = spec
        .tolerations
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, t)| {
            let p = format!("{path}.tolerations[{i}]");
            Ok(m::Toleration {
                key: t.key.clone().unwrap_or_default(),
                operator: match t.operator.as_deref() {
                    None | Some("Equal") => m::TolerationOperator::Equal,
                    Some("Exists") => m::TolerationOperator::Exists,
                    Some(other) => {
                        return err(
                            format!("{p}.operator"),
                            format!("{other:?} is not Equal or Exists"),
                        );
                    }
                },
                value: t.value.clone().unwrap_or_default(),
                effect: t
                    .effect
                    .as_deref()
                    .filter(|e| !e.is_empty())
                    .map(|e| effect(e, &format!("{p}.effect")))
                    .transpose()?,
                toleration_seconds: t.toleration_seconds,
            })
        })
        .collect::<Result<_>>()?;
    out.topology_spread = spec
        .topology_spread_constraints
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, c)| {
            let p = format!("{path}.topologySpreadConstraints[{i}]");
            Ok(m::TopologySpreadConstraint {
                max_skew: c.max_skew,
                topology_key: c.topology_key.clone(),
                when_unsatisfiable: match c.when_unsatisfiable.as_str() {
                    "DoNotSchedule" => m::WhenUnsatisfiable::DoNotSchedule,
                    "ScheduleAnyway" => m::WhenUnsatisfiable::ScheduleAnyway,
                    other => {
                        return err(
                            format!("{p}.whenUnsatisfiable"),
                            format!("{other:?} is not DoNotSchedule or ScheduleAnyway"),
                        );
                    }
                },
                label_selector: c
                    .label_selector
                    .as_ref()
                    .map(|s| selector(s, &format!("{p}.labelSelector")))
                    .transpose()?,
                min_domains: c.min_domains,
                match_label_keys: c.match_label_keys.clone().unwrap_or_default(),
                node_affinity_policy: inclusion(
                    c.node_affinity_policy.as_deref(),
                    m::NodeInclusionPolicy::Honor,
                    &format!("{p}.nodeAffinityPolicy"),
                )?,
                node_taints_policy: inclusion(
                    c.node_taints_policy.as_deref(),
                    m::NodeInclusionPolicy::Ignore,
                    &format!("{p}.nodeTaintsPolicy"),
                )?,
            })
        })
        .collect::<Result<_>>()?;
    if let Some(a) = &spec.affinity {
        let p = format!("{path}.affinity");
        if let Some(na) = &a.node_affinity {
            let np = format!("{p}.nodeAffinity");
            out.node_affinity = Some(m::NodeAffinity {
                required: na
                    .required_during_scheduling_ignored_during_execution
                    .iter()
                    .flat_map(|s| s.node_selector_terms.iter())
                    .enumerate()
                    .map(|(i, t)| term(t, &format!("{np}.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[{i}]")))
                    .collect::<Result<_>>()?,
                preferred: na
                    .preferred_during_scheduling_ignored_during_execution
                    .iter()
                    .flatten()
                    .enumerate()
                    .map(|(i, t)| {
                        Ok(m::PreferredSchedulingTerm {
                            weight: t.weight,
                            term: term(&t.preference, &format!("{np}.preferredDuringSchedulingIgnoredDuringExecution[{i}].preference"))?,
                        })
                    })
                    .collect::<Result<_>>()?,
            });
        }
        if let Some(pa) = &a.pod_affinity {
            out.pod_affinity = Some(pod_affinity(
                pa.required_during_scheduling_ignored_during_execution
                    .as_ref(),
                pa.preferred_during_scheduling_ignored_during_execution
                    .as_ref(),
                &format!("{p}.podAffinity"),
            )?);
        }
        if let Some(pa) = &a.pod_anti_affinity {
            out.pod_anti_affinity = Some(pod_affinity(
                pa.required_during_scheduling_ignored_during_execution
                    .as_ref(),
                pa.preferred_during_scheduling_ignored_during_execution
                    .as_ref(),
                &format!("{p}.podAntiAffinity"),
            )?);
        }
    }
    for v in spec.volumes.iter().flatten() {
        if let Some(claim) = &v.persistent_volume_claim
            && let Some(reqs) = volumes(namespace, &claim.claim_name)
        {
            out.volume_requirements.extend(reqs);
        }
    }
    Ok(())
}

/// A node.
pub fn node(n: &core::Node) -> Result<m::Node> {
    let name = n.metadata.name.clone().ok_or_else(|| FieldError {
        path: "metadata.name".into(),
        message: "required".into(),
    })?;
    let spec = n.spec.as_ref();
    let status = n.status.as_ref();
    Ok(m::Node {
        name,
        provider_id: spec.and_then(|s| s.provider_id.clone()).unwrap_or_default(),
        labels: n.metadata.labels.clone().unwrap_or_default(),
        taints: taints(spec.and_then(|s| s.taints.as_ref()), "spec.taints")?,
        capacity: resources(status.and_then(|s| s.capacity.as_ref()), "status.capacity")?,
        allocatable: resources(
            status.and_then(|s| s.allocatable.as_ref()),
            "status.allocatable",
        )?,
        // A node without conditions (e.g. written by hand for `berth plan`) counts as Ready.
        ready: status
            .and_then(|s| s.conditions.as_ref())
            .is_none_or(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True")),
        unschedulable: spec.and_then(|s| s.unschedulable).unwrap_or(false),
        deleting: n.metadata.deletion_timestamp.is_some(),
        do_not_disrupt: n
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(labels::DO_NOT_DISRUPT))
            .is_some_and(|v| v == "true"),
        created_at: time(n.metadata.creation_timestamp.as_ref()),
    })
}

fn api_taint(t: &v1::Taint) -> m::Taint {
    m::Taint::from(t)
}

fn api_requirement(r: &v1::NodeSelectorRequirementWithMinValues) -> m::Requirement {
    m::Requirement {
        key: r.key.clone(),
        operator: r.operator.into(),
        values: r.values.clone(),
        min_values: r.min_values.and_then(|v| u32::try_from(v).ok()),
    }
}

/// A NodePool (validated first). `ready` and its reason come from the caller, who knows
/// whether the NodePool's node class resolved.
pub fn node_pool(np: &v1::NodePool, ready: bool, not_ready_reason: &str) -> Result<m::NodePool> {
    use crate::Validate;
    np.validate().map_err(|e| {
        e.0.into_iter()
            .next()
            .expect("validation errors are never empty")
    })?;
    let s = &np.spec;
    let t = &s.template.spec;
    let never_or = |d: &v1::NillableDuration, path: &str| {
        d.parse().map_err(|e| FieldError {
            path: path.into(),
            message: e,
        })
    };
    Ok(m::NodePool {
        name: np.metadata.name.clone().unwrap_or_default(),
        weight: s.weight.unwrap_or(0),
        labels: s.template.metadata.labels.clone(),
        annotations: s.template.metadata.annotations.clone(),
        requirements: t.requirements.iter().map(api_requirement).collect(),
        taints: t.taints.iter().map(api_taint).collect(),
        startup_taints: t.startup_taints.iter().map(api_taint).collect(),
        node_class_ref: m::NodeClassRef {
            group: t.node_class_ref.group.clone(),
            kind: t.node_class_ref.kind.clone(),
            name: t.node_class_ref.name.clone(),
        },
        limits: resources(Some(&s.limits), "spec.limits")?,
        expire_after: never_or(&t.expire_after, "spec.template.spec.expireAfter")?,
        termination_grace_period: t
            .termination_grace_period
            .as_ref()
            .map(|d| d.parse())
            .transpose()
            .map_err(|e| FieldError {
                path: "spec.template.spec.terminationGracePeriod".into(),
                message: e,
            })?,
        disruption: m::Disruption {
            consolidation_policy: match s.disruption.consolidation_policy {
                v1::ConsolidationPolicy::WhenEmpty => m::ConsolidationPolicy::WhenEmpty,
                v1::ConsolidationPolicy::WhenEmptyOrUnderutilized => {
                    m::ConsolidationPolicy::WhenEmptyOrUnderutilized
                }
            },
            consolidate_after: never_or(
                &s.disruption.consolidate_after,
                "spec.disruption.consolidateAfter",
            )?,
            budgets: s
                .disruption
                .budgets
                .iter()
                .map(|b| m::Budget {
                    nodes: crate::budget_nodes(&b.nodes).expect("validated"),
                    reasons: b
                        .reasons
                        .iter()
                        .map(|r| match r {
                            v1::DisruptionReason::Underutilized => {
                                m::DisruptionReason::Underutilized
                            }
                            v1::DisruptionReason::Empty => m::DisruptionReason::Empty,
                            v1::DisruptionReason::Drifted => m::DisruptionReason::Drifted,
                        })
                        .collect(),
                    schedule: b.schedule.clone(),
                    duration: b
                        .duration
                        .as_deref()
                        .and_then(|d| crate::duration::parse_budget_duration(d).ok()),
                })
                .collect(),
        },
        ready,
        not_ready_reason: not_ready_reason.to_owned(),
    })
}

/// The pods a workload would create: `replicas` copies of its template, named like the
/// controller names them (`<name>-<i>`).
pub fn template_pods(
    kind: &str,
    meta: &meta::ObjectMeta,
    template: &core::PodTemplateSpec,
    replicas: i32,
    volumes: VolumeLookup<'_>,
) -> Result<Vec<m::Pod>> {
    let namespace = meta
        .namespace
        .clone()
        .unwrap_or_else(|| "default".to_owned());
    let name = meta.name.clone().ok_or_else(|| FieldError {
        path: "metadata.name".into(),
        message: "required".into(),
    })?;
    let spec = template.spec.as_ref().ok_or_else(|| FieldError {
        path: "spec.template.spec".into(),
        message: "required".into(),
    })?;
    let mut base = m::Pod::new(&namespace, &name);
    base.labels = template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    base.owner = Some(m::OwnerReference {
        kind: kind.to_owned(),
        name: name.clone(),
        uid: meta.uid.clone().unwrap_or_default(),
    });
    base.do_not_disrupt = template
        .metadata
        .as_ref()
        .and_then(|m| m.annotations.as_ref())
        .and_then(|a| a.get(labels::DO_NOT_DISRUPT))
        .is_some_and(|v| v == "true");
    base.unschedulable = true;
    pod_spec(spec, &mut base, "spec.template.spec", &namespace, volumes)?;
    Ok((0..replicas.max(0))
        .map(|i| {
            let mut p = base.clone();
            p.key.name = format!("{name}-{i}");
            p.uid = format!("{}-{i}", base.uid);
            p
        })
        .collect())
}

/// A DaemonSet's pod template.
pub fn daemon_set(ds: &k8s_openapi::api::apps::v1::DaemonSet) -> Result<m::DaemonSet> {
    let spec = ds.spec.as_ref().ok_or_else(|| FieldError {
        path: "spec".into(),
        message: "required".into(),
    })?;
    let mut pods = template_pods("DaemonSet", &ds.metadata, &spec.template, 1, &|_, _| None)?;
    let mut template = pods.remove(0);
    template.key.name = ds.metadata.name.clone().unwrap_or_default();
    Ok(m::DaemonSet {
        key: template.key.clone(),
        template,
    })
}

/// The requirements a PersistentVolume's node affinity imposes (its first term).
pub fn volume_requirements(pv: &core::PersistentVolume) -> Result<Vec<m::Requirement>> {
    let terms = pv
        .spec
        .as_ref()
        .and_then(|s| s.node_affinity.as_ref())
        .and_then(|a| a.required.as_ref())
        .map(|r| r.node_selector_terms.as_slice())
        .unwrap_or_default();
    match terms.first() {
        None => Ok(Vec::new()),
        Some(t) => {
            Ok(term(t, "spec.nodeAffinity.required.nodeSelectorTerms[0]")?.match_expressions)
        }
    }
}

/// The kubelet settings (those that change allocatable) and root volume size of an
/// EC2NodeClass, shared by `berth plan` and the actuator so both compute the same allocatable.
pub fn node_class_settings(
    c: &v1::EC2NodeClassSpec,
) -> Result<(berth_scheduler_core::allocatable::KubeletSettings, i64)> {
    use berth_scheduler_core::allocatable::{KubeletSettings, Threshold};
    let mut k = KubeletSettings::default();
    if let Some(kc) = &c.kubelet {
        k.max_pods = kc.max_pods.and_then(|v| u32::try_from(v).ok());
        k.pods_per_core = kc.pods_per_core.and_then(|v| u32::try_from(v).ok());
        for (into, from, path) in [
            (
                &mut k.kube_reserved,
                &kc.kube_reserved,
                "spec.kubelet.kubeReserved",
            ),
            (
                &mut k.system_reserved,
                &kc.system_reserved,
                "spec.kubelet.systemReserved",
            ),
        ] {
            for (name, q) in from {
                match parse_milli(q) {
                    Ok(v) => into.set(name, v),
                    Err(e) => return err(format!("{path}.{name}"), e.to_string()),
                }
            }
        }
        for (into, from, path) in [
            (
                &mut k.eviction_hard,
                &kc.eviction_hard,
                "spec.kubelet.evictionHard",
            ),
            (
                &mut k.eviction_soft,
                &kc.eviction_soft,
                "spec.kubelet.evictionSoft",
            ),
        ] {
            for (signal, t) in from {
                match Threshold::parse(t) {
                    Ok(v) => {
                        into.insert(signal.clone(), v);
                    }
                    Err(e) => return err(format!("{path}.{signal}"), e),
                }
            }
        }
    }
    let root = match c
        .block_device_mappings
        .iter()
        .enumerate()
        .find(|(_, b)| b.root_volume)
        .and_then(|(i, b)| Some((i, b.ebs.as_ref()?.volume_size.as_ref()?)))
    {
        Some((i, q)) => match parse_milli(&q.0) {
            Ok(milli) => milli / 1000,
            Err(e) => {
                return err(
                    format!("spec.blockDeviceMappings[{i}].ebs.volumeSize"),
                    e.to_string(),
                );
            }
        },
        None => berth_scheduler_core::allocatable::DEFAULT_ROOT_VOLUME_BYTES,
    };
    Ok((k, root))
}

/// A NodeClaim object as the scheduler needs it: spec, the status the actuator wrote (the
/// conditions that are `True`), and whether it is being deleted.
pub fn node_claim(c: &v1::NodeClaim) -> Result<m::NodeClaim> {
    let name = c.metadata.name.clone().ok_or_else(|| FieldError {
        path: "metadata.name".into(),
        message: "required".into(),
    })?;
    let mut claim_labels = c.metadata.labels.clone().unwrap_or_default();
    let node_pool = claim_labels.remove(labels::NODE_POOL).unwrap_or_default();
    let s = &c.spec;
    let status = c.status.clone().unwrap_or_default();
    let conditions = status
        .conditions
        .iter()
        .filter(|c| c.status == "True")
        .filter_map(|c| {
            Some(match c.type_.as_str() {
                v1::condition::LAUNCHED => m::NodeClaimCondition::Launched,
                v1::condition::REGISTERED => m::NodeClaimCondition::Registered,
                v1::condition::INITIALIZED => m::NodeClaimCondition::Initialized,
                v1::condition::READY => m::NodeClaimCondition::Ready,
                v1::condition::DRIFTED => m::NodeClaimCondition::Drifted,
                v1::condition::CONSOLIDATABLE => m::NodeClaimCondition::Consolidatable,
                v1::condition::DRAINED => m::NodeClaimCondition::Drained,
                v1::condition::INSTANCE_TERMINATING => m::NodeClaimCondition::InstanceTerminating,
                _ => return None,
            })
        })
        .collect();
    Ok(m::NodeClaim {
        name,
        node_pool,
        labels: claim_labels,
        annotations: c.metadata.annotations.clone().unwrap_or_default(),
        requirements: s.requirements.iter().map(api_requirement).collect(),
        taints: s.taints.iter().map(api_taint).collect(),
        startup_taints: s.startup_taints.iter().map(api_taint).collect(),
        requests: resources(Some(&s.resources.requests), "spec.resources.requests")?,
        node_class_ref: m::NodeClassRef {
            group: s.node_class_ref.group.clone(),
            kind: s.node_class_ref.kind.clone(),
            name: s.node_class_ref.name.clone(),
        },
        expire_after: s.expire_after.parse().map_err(|e| FieldError {
            path: "spec.expireAfter".into(),
            message: e,
        })?,
        termination_grace_period: s
            .termination_grace_period
            .as_ref()
            .map(|d| d.parse())
            .transpose()
            .map_err(|e| FieldError {
                path: "spec.terminationGracePeriod".into(),
                message: e,
            })?,
        provider_id: status.provider_id.unwrap_or_default(),
        node_name: status.node_name.unwrap_or_default(),
        image_id: status.image_id.unwrap_or_default(),
        capacity: resources(Some(&status.capacity), "status.capacity")?,
        allocatable: resources(Some(&status.allocatable), "status.allocatable")?,
        conditions,
        deleting: c.metadata.deletion_timestamp.is_some(),
        created_at: time(c.metadata.creation_timestamp.as_ref()),
    })
}

/// A PodDisruptionBudget: its selector and how many disruptions its status allows now.
pub fn pod_disruption_budget(
    pdb: &k8s_openapi::api::policy::v1::PodDisruptionBudget,
) -> Result<m::PodDisruptionBudget> {
    let namespace = pdb.metadata.namespace.clone().unwrap_or_default();
    let name = pdb.metadata.name.clone().unwrap_or_default();
    let selector = match pdb.spec.as_ref().and_then(|s| s.selector.as_ref()) {
        Some(s) => selector(s, "spec.selector")?,
        None => m::LabelSelector::default(),
    };
    Ok(m::PodDisruptionBudget {
        key: m::ObjectKey::new(&namespace, &name),
        selector,
        disruptions_allowed: pdb.status.as_ref().map_or(0, |s| s.disruptions_allowed),
    })
}

/// A namespace's name and labels (namespace selectors of pod affinity).
pub fn namespace(ns: &core::Namespace) -> m::Namespace {
    m::Namespace {
        name: ns.metadata.name.clone().unwrap_or_default(),
        labels: ns.metadata.labels.clone().unwrap_or_default(),
    }
}

/// A NodeClaim object for `c`, as the actuator creates it: the claim's labels and the
/// NodePool label, the termination finalizer, and its spec (status is written apart).
pub fn node_claim_object(c: &m::NodeClaim) -> v1::NodeClaim {
    use berth_scheduler_core::quantity::format_milli;
    let mut labels_map = c.labels.clone();
    labels_map.insert(labels::NODE_POOL.to_owned(), c.node_pool.clone());
    let taint = |t: &m::Taint| v1::Taint {
        key: t.key.clone(),
        value: (!t.value.is_empty()).then(|| t.value.clone()),
        effect: match t.effect {
            m::TaintEffect::NoSchedule => v1::TaintEffect::NoSchedule,
            m::TaintEffect::PreferNoSchedule => v1::TaintEffect::PreferNoSchedule,
            m::TaintEffect::NoExecute => v1::TaintEffect::NoExecute,
        },
        time_added: None,
    };
    let operator = |o: m::Operator| match o {
        m::Operator::In => v1::Operator::In,
        m::Operator::NotIn => v1::Operator::NotIn,
        m::Operator::Exists => v1::Operator::Exists,
        m::Operator::DoesNotExist => v1::Operator::DoesNotExist,
        m::Operator::Gt => v1::Operator::Gt,
        m::Operator::Lt => v1::Operator::Lt,
        m::Operator::Gte => v1::Operator::Gte,
        m::Operator::Lte => v1::Operator::Lte,
    };
    let mut obj = v1::NodeClaim::new(
        &c.name,
        v1::NodeClaimSpec {
            taints: c.taints.iter().map(taint).collect(),
            startup_taints: c.startup_taints.iter().map(taint).collect(),
            requirements: c
                .requirements
                .iter()
                .map(|r| v1::NodeSelectorRequirementWithMinValues {
                    key: r.key.clone(),
                    operator: operator(r.operator),
                    values: r.values.clone(),
                    min_values: r.min_values.and_then(|v| i32::try_from(v).ok()),
                })
                .collect(),
            resources: v1::ResourceRequirements {
                requests: c
                    .requests
                    .iter()
                    .map(|(k, v)| (k.to_owned(), Quantity(format_milli(v))))
                    .collect(),
            },
            node_class_ref: v1::NodeClassReference {
                group: c.node_class_ref.group.clone(),
                kind: c.node_class_ref.kind.clone(),
                name: c.node_class_ref.name.clone(),
            },
            expire_after: match c.expire_after {
                Some(d) => v1::NillableDuration(crate::duration::format_hms(d)),
                None => v1::NillableDuration::never(),
            },
            termination_grace_period: c
                .termination_grace_period
                .map(|d| v1::Duration(crate::duration::format_hms(d))),
        },
    );
    obj.metadata.labels = Some(labels_map);
    if !c.annotations.is_empty() {
        obj.metadata.annotations = Some(c.annotations.clone());
    }
    obj.metadata.finalizers = Some(vec![labels::TERMINATION_FINALIZER.to_owned()]);
    obj
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod_yaml(yaml: &str) -> core::Pod {
        serde_norway::from_str(yaml).unwrap()
    }

    #[test]
    fn gitlab_build_pod() {
        let p = pod_yaml(
            "metadata: {name: runner-1, namespace: gitlab}
spec:
  nodeSelector: {workload-type: gitlab-runners-auto}
  tolerations: [{key: dedicated, operator: Equal, value: gitlab-runner-auto, effect: NoSchedule}]
  containers: [{name: build, image: 'ubuntu:20.04', resources: {requests: {cpu: '1', memory: 2Gi}}}]
status:
  phase: Pending
  conditions: [{type: PodScheduled, status: 'False', reason: Unschedulable}]
",
        );
        let m = pod(&p, &|_, _| None).unwrap();
        assert_eq!(m.key, m::ObjectKey::new("gitlab", "runner-1"));
        assert_eq!(m.node_selector["workload-type"], "gitlab-runners-auto");
        assert_eq!(m.tolerations[0].effect, Some(m::TaintEffect::NoSchedule));
        assert_eq!(m.containers[0].get("cpu"), 1000);
        assert_eq!(m.containers[0].get("memory"), 2 * (1 << 30) * 1000);
        assert!(m.unschedulable);
    }

    #[test]
    fn affinity_spread_ports_and_sidecars() {
        let p = pod_yaml(
            "metadata: {name: web, labels: {app: web}}
spec:
  initContainers: [{name: proxy, restartPolicy: Always, resources: {requests: {cpu: 100m}}}]
  containers: [{name: app, ports: [{containerPort: 80, hostPort: 8080, protocol: UDP}]}]
  topologySpreadConstraints: [{maxSkew: 1, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: DoNotSchedule, labelSelector: {matchLabels: {app: web}}}]
  affinity:
    nodeAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
        nodeSelectorTerms: [{matchExpressions: [{key: karpenter.k8s.aws/instance-cpu, operator: Gte, values: ['4']}]}]
    podAntiAffinity:
      requiredDuringSchedulingIgnoredDuringExecution: [{topologyKey: kubernetes.io/hostname, labelSelector: {matchLabels: {app: web}}}]
",
        );
        let m = pod(&p, &|_, _| None).unwrap();
        assert!(m.init_containers[0].sidecar);
        assert_eq!(
            m.host_ports,
            vec![m::HostPort {
                ip: String::new(),
                port: 8080,
                protocol: m::Protocol::Udp
            }]
        );
        assert_eq!(
            m.topology_spread[0].node_taints_policy,
            m::NodeInclusionPolicy::Ignore
        );
        assert_eq!(
            m.node_affinity.unwrap().required[0].match_expressions[0].operator,
            m::Operator::Gte
        );
        assert_eq!(
            m.pod_anti_affinity.unwrap().required[0].topology_key,
            "kubernetes.io/hostname"
        );
    }

    #[test]
    fn bad_fields_are_named() {
        let p = pod_yaml(
            "metadata: {name: x}\nspec: {containers: [{name: a}, {name: b, resources: {requests: {cpu: lots}}}]}",
        );
        assert_eq!(
            pod(&p, &|_, _| None).unwrap_err().path,
            "spec.containers[1].resources.requests.cpu"
        );
        let p = pod_yaml(
            "metadata: {name: x}\nspec: {containers: [{name: a}], tolerations: [{key: k, operator: Maybe}]}",
        );
        assert_eq!(
            pod(&p, &|_, _| None).unwrap_err().path,
            "spec.tolerations[0].operator"
        );
    }

    #[test]
    fn volumes_pin_zones() {
        let p = pod_yaml(
            "metadata: {name: db, namespace: data}\nspec: {containers: [{name: a}], volumes: [{name: v, persistentVolumeClaim: {claimName: db-data}}]}",
        );
        let lookup = |ns: &str, claim: &str| {
            (ns == "data" && claim == "db-data").then(|| {
                vec![m::Requirement::new(
                    labels::TOPOLOGY_ZONE,
                    m::Operator::In,
                    &["us-east-1b"],
                )]
            })
        };
        assert_eq!(
            pod(&p, &lookup).unwrap().volume_requirements[0].values,
            ["us-east-1b"]
        );
    }
}
