//! `berth plan`: one offline scheduling decision on plain Kubernetes YAML.
//!
//! ```text
//!  files ──> documents ──> NodePools + EC2NodeClasses (v1 or v1beta1, converted and validated)
//!                      ──> Pods, Deployments/ReplicaSets/StatefulSets/Jobs (expanded to pods),
//!                          DaemonSets, Nodes (existing capacity), PDBs, PVCs/PVs, Namespaces
//!        catalog (built in, or --catalog) + each EC2NodeClass's kubelet ──> instance types
//!  ──> SchedulingInput ──solve──> Plan ─────────────────────────────┐
//!  Nodes + NodeClaims (given, or made up from the Node) + running pods  ├─> table | json | yaml
//!  + pods the Plan puts on those Nodes ──> DisruptionInput ──decide──> DisruptionPlan
//! ```
//!
//! The clock is `--now` (default: the system's): expiry, budgets' schedules and
//! `consolidateAfter` read it. See [`disruption`] for what is made up where the files are silent.

mod disruption;

use std::collections::BTreeMap;
use std::time::SystemTime;

use anyhow::{Context, bail};
use berth_api::convert::{self, V1Object};
use berth_api::{domain, manifest, v1};
use berth_catalog::Catalog;
use berth_scheduler_core::allocatable::KubeletSettings;
use berth_scheduler_core::model::{self as m, Requirement};
use berth_scheduler_core::solver::{self, ExistingNode, NodePoolInput, Plan, SchedulingInput};
use berth_scheduler_core::sync::NominationTarget;
use k8s_openapi::api::{
    apps::v1 as apps, batch::v1 as batch, core::v1 as core, policy::v1 as policy,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Everything read from the files.
#[derive(Default)]
struct Objects {
    karpenter: Vec<manifest::Manifest>,
    /// Where each object came from (`file: document N`), by `Kind/name`.
    origins: BTreeMap<String, String>,
    pods: Vec<core::Pod>,
    workloads: Vec<(
        String,
        k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
        core::PodTemplateSpec,
        i32,
    )>,
    daemon_sets: Vec<apps::DaemonSet>,
    nodes: Vec<core::Node>,
    pdbs: Vec<policy::PodDisruptionBudget>,
    pvcs: Vec<core::PersistentVolumeClaim>,
    pvs: Vec<core::PersistentVolume>,
    namespaces: Vec<core::Namespace>,
}

/// What the files describe: the provisioning input, and what disruption needs beside it.
pub struct Input {
    pub scheduling: SchedulingInput,
    /// What disruption reads of the Nodes beside the scheduling input.
    pub disruption: disruption::Cluster,
}

fn typed<T: DeserializeOwned>(file: &str, doc: usize, value: Value) -> anyhow::Result<T> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        anyhow::anyhow!(
            "{file}: document {doc}: {path}: {}",
            e.into_inner()
                .to_string()
                .split(" at line ")
                .next()
                .unwrap_or_default()
        )
    })
}

fn read(objects: &mut Objects, file: &str, text: &str) -> anyhow::Result<()> {
    for (i, de) in serde_norway::Deserializer::from_str(text).enumerate() {
        let doc = i + 1;
        let value: Value = serde::Deserialize::deserialize(de)
            .map_err(|e| anyhow::anyhow!("{file}: document {doc}: not valid YAML: {e}"))?;
        if value.is_null() {
            continue;
        }
        let required = |field: &str| format!("{file}: document {doc}: {field}: required");
        let kind = value
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let api_version = value
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let name = value
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("<unnamed>");
        objects
            .origins
            .insert(format!("{kind}/{name}"), format!("{file}: document {doc}"));
        match (api_version.as_str(), kind.as_str()) {
            (_, "List") => {
                let items = value
                    .get("items")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                let text = items
                    .iter()
                    .map(|v| serde_json::to_string(v).expect("json"))
                    .collect::<Vec<_>>()
                    .join("\n---\n");
                read(objects, &format!("{file}: document {doc} (List)"), &text)?;
            }
            (v, _) if v.starts_with("karpenter.") => match manifest::parse_value(doc, value) {
                Ok(m) => objects.karpenter.push(m),
                Err(errors) => bail!(
                    "{}",
                    errors
                        .iter()
                        .map(|e| format!("{file}: {e}"))
                        .collect::<Vec<_>>()
                        .join("\n")
                ),
            },
            ("v1", "Pod") => objects.pods.push(typed(file, doc, value)?),
            ("v1", "Node") => objects.nodes.push(typed(file, doc, value)?),
            ("v1", "PersistentVolumeClaim") => objects.pvcs.push(typed(file, doc, value)?),
            ("v1", "PersistentVolume") => objects.pvs.push(typed(file, doc, value)?),
            ("v1", "Namespace") => objects.namespaces.push(typed(file, doc, value)?),
            ("apps/v1", "DaemonSet") => objects.daemon_sets.push(typed(file, doc, value)?),
            ("policy/v1", "PodDisruptionBudget") => objects.pdbs.push(typed(file, doc, value)?),
            ("apps/v1", "Deployment") => {
                let d: apps::Deployment = typed(file, doc, value)?;
                let spec = d.spec.with_context(|| required("spec"))?;
                objects.workloads.push((
                    "ReplicaSet".into(),
                    d.metadata,
                    spec.template,
                    spec.replicas.unwrap_or(1),
                ));
            }
            ("apps/v1", "ReplicaSet") => {
                let d: apps::ReplicaSet = typed(file, doc, value)?;
                let spec = d.spec.with_context(|| required("spec"))?;
                let template = spec.template.with_context(|| required("spec.template"))?;
                objects.workloads.push((
                    "ReplicaSet".into(),
                    d.metadata,
                    template,
                    spec.replicas.unwrap_or(1),
                ));
            }
            ("apps/v1", "StatefulSet") => {
                let d: apps::StatefulSet = typed(file, doc, value)?;
                let spec = d.spec.with_context(|| required("spec"))?;
                objects.workloads.push((
                    "StatefulSet".into(),
                    d.metadata,
                    spec.template,
                    spec.replicas.unwrap_or(1),
                ));
            }
            ("batch/v1", "Job") => {
                let d: batch::Job = typed(file, doc, value)?;
                let spec = d.spec.with_context(|| required("spec"))?;
                let pods = spec
                    .parallelism
                    .unwrap_or(1)
                    .min(spec.completions.unwrap_or(i32::MAX));
                objects
                    .workloads
                    .push(("Job".into(), d.metadata, spec.template, pods));
            }
            _ => bail!(
                "{file}: document {doc}: {api_version} {kind} is not something `berth plan` reads (NodePool, EC2NodeClass, NodeClaim, Pod, Deployment, ReplicaSet, StatefulSet, Job, DaemonSet, Node, PodDisruptionBudget, PersistentVolumeClaim, PersistentVolume, Namespace)"
            ),
        }
    }
    Ok(())
}

/// Kubelet settings and root volume of an EC2NodeClass.
fn node_class_settings(c: &v1::EC2NodeClass) -> anyhow::Result<(KubeletSettings, i64)> {
    domain::node_class_settings(&c.spec).map_err(|e| anyhow::anyhow!("{e}"))
}

/// Reads the files and assembles the scheduling input (at `now`) and the disruption side.
pub fn input(
    files: &[(String, String)],
    catalog: &Catalog,
    now: SystemTime,
) -> anyhow::Result<Input> {
    let mut objects = Objects::default();
    for (name, text) in files {
        read(&mut objects, name, text)?;
    }
    let origins = std::mem::take(&mut objects.origins);
    let origin = |object: &str| {
        origins
            .get(object)
            .map_or_else(String::new, |o| format!("{o}: "))
    };
    let converted = convert::to_v1(std::mem::take(&mut objects.karpenter)).map_err(|errors| {
        anyhow::anyhow!(
            "{}",
            errors
                .iter()
                .map(|e| format!("{}{e}", origin(&e.object)))
                .collect::<Vec<_>>()
                .join("\n")
        )
    })?;
    let classes: BTreeMap<String, &v1::EC2NodeClass> = converted
        .objects
        .iter()
        .filter_map(|o| match o {
            V1Object::EC2NodeClass(c) => c.metadata.name.clone().map(|n| (n, c)),
            _ => None,
        })
        .collect();

    let mut node_pools = Vec::new();
    for o in &converted.objects {
        let V1Object::NodePool(np) = o else { continue };
        let name = np.metadata.name.clone().unwrap_or_default();
        let class_name = &np.spec.template.spec.node_class_ref.name;
        let (ready, reason, instance_types) = match classes.get(class_name) {
            Some(c) => {
                let (kubelet, root) = node_class_settings(c)
                    .with_context(|| format!("EC2NodeClass/{class_name}: spec.kubelet"))?;
                (true, String::new(), catalog.instance_types(&kubelet, root))
            }
            None => (
                false,
                format!("EC2NodeClass {class_name} is not among the files"),
                Vec::new(),
            ),
        };
        let node_pool = domain::node_pool(np, ready, &reason).map_err(|e| {
            anyhow::anyhow!(
                "{}NodePool/{name}: {e}",
                origin(&format!("NodePool/{name}"))
            )
        })?;
        node_pools.push(NodePoolInput {
            node_pool,
            instance_types,
        });
    }

    // Volumes: PVC → bound PV → its node affinity.
    let mut pv_reqs: BTreeMap<String, Vec<Requirement>> = BTreeMap::new();
    for pv in &objects.pvs {
        let name = pv.metadata.name.clone().unwrap_or_default();
        let object = format!("PersistentVolume/{name}");
        pv_reqs.insert(
            name.clone(),
            domain::volume_requirements(pv)
                .map_err(|e| anyhow::anyhow!("{}{object}: {e}", origin(&object)))?,
        );
    }
    let mut claim_volume: BTreeMap<(String, String), String> = BTreeMap::new();
    for pvc in &objects.pvcs {
        if let Some(volume) = pvc.spec.as_ref().and_then(|s| s.volume_name.clone()) {
            let ns = pvc
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into());
            claim_volume.insert((ns, pvc.metadata.name.clone().unwrap_or_default()), volume);
        }
    }
    let lookup = |ns: &str, claim: &str| {
        claim_volume
            .get(&(ns.to_owned(), claim.to_owned()))
            .and_then(|v| pv_reqs.get(v))
            .cloned()
    };

    let mut pods = Vec::new();
    for p in &objects.pods {
        let name = p.metadata.name.clone().unwrap_or_default();
        let object = format!("Pod/{name}");
        let mut pod = domain::pod(p, &lookup)
            .map_err(|e| anyhow::anyhow!("{}{object}: {e}", origin(&object)))?;
        // A pod from a file with no status is pending.
        pod.unschedulable |= pod.node_name.is_none();
        pods.push(pod);
    }
    for (kind, meta, template, replicas) in &objects.workloads {
        let name = meta.name.clone().unwrap_or_default();
        let object = match kind.as_str() {
            "ReplicaSet" => [format!("Deployment/{name}"), format!("ReplicaSet/{name}")]
                .into_iter()
                .find(|o| origins.contains_key(o))
                .unwrap_or_default(),
            _ => format!("{kind}/{name}"),
        };
        pods.extend(
            domain::template_pods(kind, meta, template, *replicas, &lookup)
                .map_err(|e| anyhow::anyhow!("{}{object}: {e}", origin(&object)))?,
        );
    }
    let mut nodes: Vec<ExistingNode> = objects
        .nodes
        .iter()
        .map(|n| {
            let object = format!("Node/{}", n.metadata.name.clone().unwrap_or_default());
            domain::node(n)
                .map(|node| ExistingNode { node, pods: vec![] })
                .map_err(|e| anyhow::anyhow!("{}{object}: {e}", origin(&object)))
        })
        .collect::<anyhow::Result<_>>()?;
    let (bound, pending): (Vec<m::Pod>, Vec<m::Pod>) =
        pods.into_iter().partition(|p| p.node_name.is_some());
    for p in bound {
        match nodes
            .iter_mut()
            .find(|n| Some(&n.node.name) == p.node_name.as_ref())
        {
            Some(n) => n.pods.push(p),
            None => bail!(
                "Pod/{}: spec.nodeName: node {:?} is not among the files",
                p.key.name,
                p.node_name.unwrap_or_default()
            ),
        }
    }
    let daemon_sets = objects
        .daemon_sets
        .iter()
        .map(|d| {
            let object = format!("DaemonSet/{}", d.metadata.name.clone().unwrap_or_default());
            domain::daemon_set(d).map_err(|e| anyhow::anyhow!("{}{object}: {e}", origin(&object)))
        })
        .collect::<anyhow::Result<_>>()?;
    let pod_disruption_budgets = objects
        .pdbs
        .iter()
        .map(|b| {
            let object = format!(
                "PodDisruptionBudget/{}",
                b.metadata.name.clone().unwrap_or_default()
            );
            let mut pdb = domain::pod_disruption_budget(b)
                .map_err(|e| anyhow::anyhow!("{}{object}: {e}", origin(&object)))?;
            // As for pods: no namespace in a file is `default`.
            if pdb.key.namespace.is_empty() {
                pdb.key.namespace = "default".into();
            }
            Ok(pdb)
        })
        .collect::<anyhow::Result<_>>()?;
    let namespaces = objects
        .namespaces
        .iter()
        .map(|n| m::Namespace {
            name: n.metadata.name.clone().unwrap_or_default(),
            labels: n.metadata.labels.clone().unwrap_or_default(),
        })
        .collect();
    let node_claims = converted
        .objects
        .iter()
        .filter_map(|o| match o {
            V1Object::NodeClaim(c) => Some(c),
            _ => None,
        })
        .map(|c| {
            let object = format!("NodeClaim/{}", c.metadata.name.clone().unwrap_or_default());
            disruption::GivenClaim::read(c)
                .map_err(|e| anyhow::anyhow!("{}{object}: {e}", origin(&object)))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let disruption = disruption::Cluster::new(
        &objects.nodes,
        &nodes,
        node_claims,
        &objects.pods,
        &node_pools,
        now,
    );
    Ok(Input {
        scheduling: SchedulingInput {
            now,
            node_pools,
            nodes,
            node_claims: vec![],
            daemon_sets,
            pods: pending,
            pod_disruption_budgets,
            namespaces,
        },
        disruption,
    })
}

/// The stable JSON/YAML form of a plan (documented in docs/plan.md).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanOutput {
    pub new_node_claims: Vec<ClaimOutput>,
    pub placements: Vec<PlacementOutput>,
    pub unschedulable: Vec<UnschedulableOutput>,
    pub totals: Totals,
    /// What disruption would do next with the Nodes (at most one decision today: Karpenter
    /// takes one at a time). A list, so that later decisions can be added.
    pub disruptions: Vec<disruption::DisruptionOutput>,
    /// Nodes that stay, and why.
    pub disruption_blocked: Vec<disruption::BlockedOutput>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimOutput {
    pub node_pool: String,
    pub instance_type: String,
    pub zone: String,
    pub capacity_type: String,
    pub price_per_hour: f64,
    /// Every compatible type, cheapest first (what the launch may use).
    pub instance_types: Vec<String>,
    pub pods: Vec<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlacementOutput {
    pub pod: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_claim: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct UnschedulableOutput {
    pub pod: String,
    pub reason: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Totals {
    pub pods: usize,
    pub scheduled: usize,
    pub new_node_claims: usize,
    pub price_per_hour: f64,
}

pub fn output(plan: &Plan, disruption: &disruption::Outcome) -> PlanOutput {
    let (disruptions, disruption_blocked) = disruption.output();
    PlanOutput {
        disruptions,
        disruption_blocked,
        new_node_claims: plan
            .new_node_claims
            .iter()
            .map(|c| {
                let r = disruption::replacement(c);
                ClaimOutput {
                    node_pool: r.node_pool,
                    instance_type: r.instance_type,
                    zone: r.zone,
                    capacity_type: r.capacity_type,
                    price_per_hour: r.price_per_hour,
                    instance_types: c.instance_types.iter().map(|o| o.name.clone()).collect(),
                    pods: c.pods.iter().map(ToString::to_string).collect(),
                }
            })
            .collect(),
        placements: plan
            .placements
            .iter()
            .map(|p| PlacementOutput {
                pod: p.pod.to_string(),
                node: matches!(&p.target, NominationTarget::Node(_))
                    .then(|| target_name(&p.target)),
                node_claim: matches!(&p.target, NominationTarget::NodeClaim(_))
                    .then(|| target_name(&p.target)),
            })
            .collect(),
        unschedulable: plan
            .unschedulable
            .iter()
            .map(|u| UnschedulableOutput {
                pod: u.pod.to_string(),
                reason: u.reason.clone(),
            })
            .collect(),
        totals: Totals {
            pods: plan.stats.pods,
            scheduled: plan.stats.pods - plan.stats.unschedulable,
            new_node_claims: plan.new_node_claims.len(),
            price_per_hour: round4(plan.stats.new_price),
        },
    }
}

/// USD to four places. NB: `+ 0.0` turns the `-0.0` of an empty sum into `0.0`.
fn round4(usd: f64) -> f64 {
    (usd * 10_000.0).round() / 10_000.0 + 0.0
}

fn target_name(t: &NominationTarget) -> String {
    match t {
        NominationTarget::Node(n) | NominationTarget::NodeClaim(n) => n.clone(),
    }
}

/// A table for people.
pub fn table(out: &PlanOutput) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    if !out.new_node_claims.is_empty() {
        let _ = writeln!(
            s,
            "{:<24} {:<16} {:<12} {:<10} {:>9} {:>5}",
            "NODEPOOL", "INSTANCE TYPE", "ZONE", "CAPACITY", "$/HOUR", "PODS"
        );
        for c in &out.new_node_claims {
            let _ = writeln!(
                s,
                "{:<24} {:<16} {:<12} {:<10} {:>9.4} {:>5}",
                c.node_pool,
                c.instance_type,
                c.zone,
                c.capacity_type,
                c.price_per_hour,
                c.pods.len()
            );
        }
        s.push('\n');
    }
    if !out.placements.is_empty() {
        let _ = writeln!(s, "{} pod(s) fit existing capacity", out.placements.len());
    }
    for u in &out.unschedulable {
        let _ = writeln!(s, "unschedulable {}: {}", u.pod, u.reason);
    }
    disruption::table(&mut s, &out.disruptions, &out.disruption_blocked);
    let t = &out.totals;
    let _ = writeln!(
        s,
        "{} of {} pods scheduled; {} new node(s); ${:.4}/hour",
        t.scheduled, t.pods, t.new_node_claims, t.price_per_hour
    );
    s
}

/// `--now`: an RFC 3339 time (`2025-06-01T09:00:00Z`).
pub fn parse_now(s: &str) -> anyhow::Result<SystemTime> {
    let t: k8s_openapi::jiff::Timestamp = s.parse().map_err(|e| {
        anyhow::anyhow!("--now: {s:?} is not an RFC 3339 time like 2025-06-01T09:00:00Z ({e})")
    })?;
    let after_epoch = u64::try_from(t.as_second())
        .map_err(|_| anyhow::anyhow!("--now: {s:?} is before 1970-01-01T00:00:00Z"))?;
    Ok(SystemTime::UNIX_EPOCH
        + std::time::Duration::from_secs(after_epoch)
        + std::time::Duration::from_nanos(u64::from(t.subsec_nanosecond().unsigned_abs())))
}

/// Solves, evaluates disruption at `now`, and renders.
pub fn run(
    files: &[(String, String)],
    catalog: &Catalog,
    format: &str,
    now: SystemTime,
) -> anyhow::Result<String> {
    let Input {
        scheduling,
        disruption,
    } = input(files, catalog, now)?;
    let plan = solver::solve(&scheduling);
    let outcome = disruption.decide(scheduling, &plan);
    let out = output(&plan, &outcome);
    Ok(match format {
        "json" => serde_json::to_string_pretty(&out)? + "\n",
        "yaml" => serde_norway::to_string(&out)?,
        _ => table(&out),
    })
}
