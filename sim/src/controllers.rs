//! The simulated control plane and nodes, run in-process against the store:
//!
//! - **workload controllers**: Deployments → ReplicaSets → Pods (a template change starts a
//!   new ReplicaSet and scales the old ones to zero), StatefulSets (`<name>-<ordinal>`), Jobs
//!   (parallelism, completions, `Complete`), DaemonSets (one pod per node they run on), and
//!   the garbage collector (objects whose owners are all gone are deleted);
//! - **kube-scheduler**: binds pending pods to Ready nodes where they fit, through the
//!   scheduler core's solver (resources, selectors, affinity, taints, spread, host ports: the
//!   predicates are not written twice), and marks the rest `PodScheduled=False`,
//!   `Unschedulable`, with the reason, as a real scheduler does;
//! - **kubelets**: a NodeClaim launched `boot_delay` ago gets its Node (providerID, the claim's
//!   labels, well-known labels, its taints plus `karpenter.sh/unregistered`, capacity,
//!   allocatable, Ready); startup taints are lifted once Karpenter registered the node; bound
//!   pods run after `pod_start_delay`; a pod annotated `sim.berth.dev/run-for: <duration>`
//!   succeeds that long after it started; pods of a node that is gone are deleted;
//! - **disruption controller**: each PodDisruptionBudget's status ([`crate::pdb`]).
//!
//! Every controller reads the store and writes through it, so each change is a real
//! resourceVersion and watch event, exactly what a client of the API server sees.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use berth_scheduler_core::labels;
use berth_scheduler_core::model as m;
use berth_scheduler_core::solver::{self, ExistingNode, SchedulingInput};
use berth_scheduler_core::sync::NominationTarget;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Node, Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::store::{Resource, Store, StoreError};

/// How a pod says how long it runs before it succeeds (`30s`, `5m`, `1h30m`).
pub const RUN_FOR_ANNOTATION: &str = "sim.berth.dev/run-for";

/// The simulated cluster's timings.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// From a NodeClaim's launch to its Node registering (the cloud's boot time).
    pub boot_delay: Duration,
    /// From binding to Running (image pull, container start).
    pub pod_start_delay: Duration,
    /// How often the controllers look when nothing changed (timers: boots, starts, runs).
    pub tick: Duration,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            boot_delay: Duration::from_secs(45),
            pod_start_delay: Duration::from_secs(2),
            tick: Duration::from_millis(100),
        }
    }
}

type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

fn res(group: &str, plural: &str, namespaced: bool) -> Resource {
    Resource::new(group, plural, namespaced)
}

fn pods() -> Resource {
    res("", "pods", true)
}
fn nodes() -> Resource {
    res("", "nodes", false)
}

/// What one pass did, for tests and logs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pass {
    pub pods_created: usize,
    pub pods_deleted: usize,
    pub bound: usize,
    pub unschedulable: usize,
    pub nodes_registered: usize,
    pub pods_started: usize,
    pub pods_succeeded: usize,
    pub collected: usize,
}

/// The controllers, over one store.
pub struct Controllers {
    store: Store,
    clock: Clock,
    options: ClusterOptions,
    names: AtomicU64,
}

impl std::fmt::Debug for Controllers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controllers")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

fn time(t: SystemTime) -> Time {
    Time(
        t.try_into()
            .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
    )
}

fn system_time(t: &Time) -> SystemTime {
    SystemTime::from(t.0)
}

fn key(meta: &ObjectMeta) -> (String, String) {
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

fn controller_uid(meta: &ObjectMeta) -> Option<&str> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
        .map(|o| o.uid.as_str())
}

fn owner(kind: &str, api_version: &str, meta: &ObjectMeta) -> OwnerReference {
    OwnerReference {
        api_version: api_version.to_owned(),
        kind: kind.to_owned(),
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

fn terminal(p: &Pod) -> bool {
    matches!(phase(p), "Succeeded" | "Failed")
}

fn node_ready(n: &Node) -> bool {
    n.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// A short, stable suffix from a number (`k8s`-like: lowercase letters and digits).
fn suffix(mut n: u64) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut out = Vec::new();
    for _ in 0..5 {
        out.push(ALPHABET[(n % ALPHABET.len() as u64) as usize]);
        n /= ALPHABET.len() as u64;
    }
    String::from_utf8(out).expect("ascii")
}

/// A stable hash of a pod template (FNV-1a over its JSON), as `pod-template-hash`.
fn template_hash(t: &PodTemplateSpec) -> String {
    let text = serde_json::to_string(t).unwrap_or_default();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    suffix(h) + &suffix(h >> 32)[..3]
}

/// Parses `90s`, `5m`, `1h30m`, `250ms` (see [`berth_api::duration::parse_flag`]).
pub fn parse_duration(s: &str) -> Option<Duration> {
    berth_api::duration::parse_flag(s).ok()
}

impl Controllers {
    pub fn new(store: Store, clock: Clock, options: ClusterOptions) -> Self {
        Self {
            store,
            clock,
            options,
            names: AtomicU64::new(0x5eed),
        }
    }

    fn now(&self) -> SystemTime {
        (self.clock)()
    }

    fn list<T: DeserializeOwned>(&self, r: &Resource) -> Vec<T> {
        self.store
            .list(r, None)
            .0
            .into_iter()
            .filter_map(|v| serde_json::from_value(v).ok())
            .collect()
    }

    fn create<T: Serialize>(&self, r: &Resource, obj: &T) -> Result<(), StoreError> {
        let value = serde_json::to_value(obj).expect("k8s objects serialize");
        self.store.create(r, value, self.now()).map(drop)
    }

    /// Writes `obj` (carrying the resourceVersion it was read at: a conflict means someone
    /// else wrote first, and the next pass sees their version).
    fn update<T: Serialize>(&self, r: &Resource, obj: &T) -> Result<(), StoreError> {
        let value = serde_json::to_value(obj).expect("k8s objects serialize");
        self.store.update(r, value, self.now()).map(drop)
    }

    fn delete(&self, r: &Resource, meta: &ObjectMeta) -> Result<(), StoreError> {
        let (ns, name) = key(meta);
        match self.store.delete(r, &ns, &name, self.now()) {
            Ok(_) | Err(StoreError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn next_name(&self, base: &str) -> String {
        let n = self.names.fetch_add(7919, Ordering::Relaxed);
        format!("{base}-{}", suffix(n))
    }

    /// Runs every controller once.
    pub fn reconcile(&self) -> Pass {
        let mut pass = Pass::default();
        for (what, r) in [
            ("deployments", self.deployments()),
            ("replicasets", self.replica_sets(&mut pass)),
            ("statefulsets", self.stateful_sets(&mut pass)),
            ("jobs", self.jobs(&mut pass)),
            ("kubelet", self.kubelets(&mut pass)),
            ("daemonsets", self.daemon_sets(&mut pass)),
            ("kube-scheduler", self.schedule(&mut pass)),
            ("garbage collector", self.collect_garbage(&mut pass)),
            ("disruption", self.disruption_budgets()),
        ] {
            if let Err(e) = r {
                // Conflicts are expected between writers; the next pass sees the newer object.
                if !matches!(e, StoreError::Conflict { .. }) {
                    tracing::warn!(controller = what, error = %e, "sim controller");
                }
            }
        }
        pass
    }

    /// Reconciles whenever the store changed, and every `tick` for timers, until `stop`.
    pub async fn run(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut seen = u64::MAX;
        let mut last = tokio::time::Instant::now();
        loop {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(20)) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            let rv = self.store.resource_version();
            if rv == seen && last.elapsed() < self.options.tick {
                continue;
            }
            seen = rv;
            last = tokio::time::Instant::now();
            self.reconcile();
        }
    }

    // ---- workload controllers ----

    fn deployments(&self) -> Result<(), StoreError> {
        let rs_res = res("apps", "replicasets", true);
        let sets: Vec<ReplicaSet> = self.list(&rs_res);
        for d in self.list::<Deployment>(&res("apps", "deployments", true)) {
            let Some(spec) = d.spec.clone() else { continue };
            if d.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let (ns, name) = key(&d.metadata);
            let uid = d.metadata.uid.clone().unwrap_or_default();
            let replicas = spec.replicas.unwrap_or(1);
            let hash = template_hash(&spec.template);
            let current = format!("{name}-{hash}");
            let owned: Vec<&ReplicaSet> = sets
                .iter()
                .filter(|rs| controller_uid(&rs.metadata) == Some(uid.as_str()))
                .collect();
            match owned
                .iter()
                .find(|rs| rs.metadata.name.as_deref() == Some(&current))
            {
                None => {
                    let mut template = spec.template.clone();
                    let meta = template.metadata.get_or_insert_with(Default::default);
                    meta.labels
                        .get_or_insert_with(Default::default)
                        .insert("pod-template-hash".into(), hash.clone());
                    let mut selector = spec.selector.clone();
                    selector
                        .match_labels
                        .get_or_insert_with(Default::default)
                        .insert("pod-template-hash".into(), hash.clone());
                    let rs = ReplicaSet {
                        metadata: ObjectMeta {
                            name: Some(current.clone()),
                            namespace: Some(ns.clone()),
                            labels: meta.labels.clone(),
                            owner_references: Some(vec![owner(
                                "Deployment",
                                "apps/v1",
                                &d.metadata,
                            )]),
                            ..Default::default()
                        },
                        spec: Some(k8s_openapi::api::apps::v1::ReplicaSetSpec {
                            replicas: Some(replicas),
                            selector,
                            template: Some(template),
                            min_ready_seconds: None,
                        }),
                        status: None,
                    };
                    self.create(&rs_res, &rs)?;
                }
                Some(rs) => {
                    let want = Some(replicas);
                    if rs.spec.as_ref().and_then(|s| s.replicas) != want {
                        let mut rs = (*rs).clone();
                        rs.spec.get_or_insert_with(Default::default).replicas = want;
                        self.update(&rs_res, &rs)?;
                    }
                }
            }
            // Recreate: older ReplicaSets go to zero.
            for old in owned
                .iter()
                .filter(|rs| rs.metadata.name.as_deref() != Some(&current))
            {
                if old.spec.as_ref().and_then(|s| s.replicas) != Some(0) {
                    let mut rs = (*old).clone();
                    rs.spec.get_or_insert_with(Default::default).replicas = Some(0);
                    self.update(&rs_res, &rs)?;
                }
            }
            let count = |f: &dyn Fn(&k8s_openapi::api::apps::v1::ReplicaSetStatus) -> i32| {
                owned
                    .iter()
                    .filter_map(|rs| rs.status.as_ref())
                    .map(f)
                    .sum::<i32>()
            };
            let status = json!({
                "observedGeneration": d.metadata.generation,
                "replicas": count(&|s| s.replicas),
                "readyReplicas": count(&|s| s.ready_replicas.unwrap_or(0)),
                "availableReplicas": count(&|s| s.available_replicas.unwrap_or(0)),
                "updatedReplicas": owned.iter().filter(|rs| rs.metadata.name.as_deref() == Some(&current))
                    .filter_map(|rs| rs.status.as_ref()).map(|s| s.replicas).sum::<i32>(),
            });
            self.set_status(&res("apps", "deployments", true), &d, status)?;
        }
        Ok(())
    }

    /// Writes `status` when it differs from the object's.
    fn set_status<T: Serialize>(
        &self,
        r: &Resource,
        obj: &T,
        status: Value,
    ) -> Result<(), StoreError> {
        let mut value = serde_json::to_value(obj).expect("k8s objects serialize");
        if value.get("status") == Some(&status) {
            return Ok(());
        }
        value["status"] = status;
        self.store.update(r, value, self.now()).map(drop)
    }

    /// The disruption controller: each PodDisruptionBudget's status (expected and healthy
    /// pods, how many must stay healthy, disruptions allowed: [`crate::pdb`]), which is what
    /// an autoscaler reads to tell whether a node's pods may be evicted now.
    fn disruption_budgets(&self) -> Result<(), StoreError> {
        let r = res("policy", "poddisruptionbudgets", true);
        let (budgets, _) = self.store.list(&r, None);
        if budgets.is_empty() {
            return Ok(());
        }
        let (all, _) = self.store.list(&pods(), None);
        let workloads = crate::pdb::Workloads::list(&self.store, None);
        for mut budget in budgets {
            let generation = budget["metadata"]["generation"].as_i64().unwrap_or(1);
            let status = crate::pdb::status(&budget, &all, &workloads).to_json(generation);
            if budget.get("status") == Some(&status) {
                continue;
            }
            budget["status"] = status;
            match self.store.update(&r, budget, self.now()) {
                Ok(_) | Err(StoreError::Conflict { .. } | StoreError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Pods owned by `uid`, not being deleted.
    fn owned_pods<'a>(all: &'a [Pod], uid: &str) -> Vec<&'a Pod> {
        all.iter()
            .filter(|p| controller_uid(&p.metadata) == Some(uid))
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect()
    }

    fn new_pod(
        &self,
        name: String,
        ns: &str,
        template: &PodTemplateSpec,
        owner_ref: OwnerReference,
    ) -> Pod {
        let meta = template.metadata.clone().unwrap_or_default();
        Pod {
            metadata: ObjectMeta {
                name: Some(name),
                namespace: Some(ns.to_owned()),
                labels: meta.labels,
                annotations: meta.annotations,
                owner_references: Some(vec![owner_ref]),
                ..Default::default()
            },
            spec: template.spec.clone(),
            status: Some(k8s_openapi::api::core::v1::PodStatus {
                phase: Some("Pending".into()),
                ..Default::default()
            }),
        }
    }

    fn replica_sets(&self, pass: &mut Pass) -> Result<(), StoreError> {
        let all: Vec<Pod> = self.list(&pods());
        for rs in self.list::<ReplicaSet>(&res("apps", "replicasets", true)) {
            let Some(spec) = rs.spec.clone() else {
                continue;
            };
            let Some(template) = spec.template.clone() else {
                continue;
            };
            let (ns, name) = key(&rs.metadata);
            let uid = rs.metadata.uid.clone().unwrap_or_default();
            let mut owned = Self::owned_pods(&all, &uid);
            let want = usize::try_from(spec.replicas.unwrap_or(1)).unwrap_or(0);
            if rs.metadata.deletion_timestamp.is_none() {
                for _ in owned.len()..want {
                    let pod = self.new_pod(
                        self.next_name(&name),
                        &ns,
                        &template,
                        owner("ReplicaSet", "apps/v1", &rs.metadata),
                    );
                    self.create(&pods(), &pod)?;
                    pass.pods_created += 1;
                }
            }
            if owned.len() > want {
                // Unbound pods go first, then the newest.
                owned.sort_by_key(|p| {
                    (
                        p.spec.as_ref().and_then(|s| s.node_name.clone()).is_some(),
                        std::cmp::Reverse(p.metadata.creation_timestamp.as_ref().map(|t| t.0)),
                    )
                });
                for p in &owned[..owned.len() - want] {
                    self.delete(&pods(), &p.metadata)?;
                    pass.pods_deleted += 1;
                }
            }
            let running = owned
                .iter()
                .filter(|p| phase(p) == "Running")
                .count()
                .min(want);
            let status = json!({
                "observedGeneration": rs.metadata.generation,
                "replicas": owned.len().min(want.max(owned.len())),
                "readyReplicas": running,
                "availableReplicas": running,
                "fullyLabeledReplicas": owned.len(),
            });
            self.set_status(&res("apps", "replicasets", true), &rs, status)?;
        }
        Ok(())
    }

    fn stateful_sets(&self, pass: &mut Pass) -> Result<(), StoreError> {
        let all: Vec<Pod> = self.list(&pods());
        for ss in self.list::<StatefulSet>(&res("apps", "statefulsets", true)) {
            let Some(spec) = ss.spec.clone() else {
                continue;
            };
            let (ns, name) = key(&ss.metadata);
            let uid = ss.metadata.uid.clone().unwrap_or_default();
            let owned = Self::owned_pods(&all, &uid);
            let want = usize::try_from(spec.replicas.unwrap_or(1)).unwrap_or(0);
            let existing: BTreeSet<String> = owned
                .iter()
                .filter_map(|p| p.metadata.name.clone())
                .collect();
            if ss.metadata.deletion_timestamp.is_none() {
                for i in 0..want {
                    let pod_name = format!("{name}-{i}");
                    if !existing.contains(&pod_name) {
                        let mut pod = self.new_pod(
                            pod_name.clone(),
                            &ns,
                            &spec.template,
                            owner("StatefulSet", "apps/v1", &ss.metadata),
                        );
                        pod.metadata
                            .labels
                            .get_or_insert_with(Default::default)
                            .insert("statefulset.kubernetes.io/pod-name".into(), pod_name);
                        self.create(&pods(), &pod)?;
                        pass.pods_created += 1;
                    }
                }
            }
            for p in &owned {
                let ordinal = p
                    .metadata
                    .name
                    .as_deref()
                    .and_then(|n| n.rsplit('-').next())
                    .and_then(|o| o.parse::<usize>().ok());
                if ordinal.is_none_or(|o| o >= want) {
                    self.delete(&pods(), &p.metadata)?;
                    pass.pods_deleted += 1;
                }
            }
            let running = owned.iter().filter(|p| phase(p) == "Running").count();
            let status = json!({
                "observedGeneration": ss.metadata.generation,
                "replicas": owned.len(),
                "readyReplicas": running,
                "availableReplicas": running,
                "currentReplicas": owned.len(),
            });
            self.set_status(&res("apps", "statefulsets", true), &ss, status)?;
        }
        Ok(())
    }

    fn jobs(&self, pass: &mut Pass) -> Result<(), StoreError> {
        let all: Vec<Pod> = self.list(&pods());
        let now = self.now();
        for job in self.list::<Job>(&res("batch", "jobs", true)) {
            let Some(spec) = job.spec.clone() else {
                continue;
            };
            let (ns, name) = key(&job.metadata);
            let uid = job.metadata.uid.clone().unwrap_or_default();
            let owned = Self::owned_pods(&all, &uid);
            let previous = job.status.clone().unwrap_or_default();
            // NB: as the real Job controller (pod tracking with finalizers), a completion
            // counts once: a succeeded pod deleted later (its node removed) is not run again.
            let succeeded = owned
                .iter()
                .filter(|p| phase(p) == "Succeeded")
                .count()
                .max(usize::try_from(previous.succeeded.unwrap_or(0)).unwrap_or(0));
            let failed = owned.iter().filter(|p| phase(p) == "Failed").count();
            let active = owned.iter().filter(|p| !terminal(p)).count();
            let completions = usize::try_from(spec.completions.unwrap_or(1)).unwrap_or(1);
            let parallelism = usize::try_from(spec.parallelism.unwrap_or(1)).unwrap_or(1);
            let complete = succeeded >= completions;
            if !complete && job.metadata.deletion_timestamp.is_none() {
                let room = parallelism
                    .min(completions - succeeded)
                    .saturating_sub(active);
                for _ in 0..room {
                    let mut pod = self.new_pod(
                        self.next_name(&name),
                        &ns,
                        &spec.template,
                        owner("Job", "batch/v1", &job.metadata),
                    );
                    pod.metadata
                        .labels
                        .get_or_insert_with(Default::default)
                        .insert("job-name".into(), name.clone());
                    self.create(&pods(), &pod)?;
                    pass.pods_created += 1;
                }
            }
            let mut status = json!({
                "active": active,
                "succeeded": succeeded,
                "failed": failed,
                "startTime": previous.start_time.clone().unwrap_or_else(|| time(now)),
            });
            if complete {
                let at = previous
                    .completion_time
                    .clone()
                    .unwrap_or_else(|| time(now));
                status["completionTime"] = serde_json::to_value(&at).expect("time");
                status["conditions"] = json!([{
                    "type": "Complete", "status": "True",
                    "lastTransitionTime": at, "lastProbeTime": at,
                }]);
            }
            self.set_status(&res("batch", "jobs", true), &job, status)?;
        }
        Ok(())
    }

    fn daemon_sets(&self, pass: &mut Pass) -> Result<(), StoreError> {
        let all: Vec<Pod> = self.list(&pods());
        let nodes: Vec<Node> = self.list(&nodes());
        for ds in self.list::<DaemonSet>(&res("apps", "daemonsets", true)) {
            let Some(spec) = ds.spec.clone() else {
                continue;
            };
            let Ok(model) = berth_api::domain::daemon_set(&ds) else {
                continue;
            };
            let (ns, name) = key(&ds.metadata);
            let uid = ds.metadata.uid.clone().unwrap_or_default();
            let owned = Self::owned_pods(&all, &uid);
            let on: BTreeMap<String, &Pod> = owned
                .iter()
                .filter_map(|p| Some((p.spec.as_ref()?.node_name.clone()?, *p)))
                .collect();
            let mut wanted = BTreeSet::new();
            for n in &nodes {
                if n.metadata.deletion_timestamp.is_some() {
                    continue;
                }
                let Ok(node) = berth_api::domain::node(n) else {
                    continue;
                };
                if !solver::daemon_runs_on_labels(&model, &node.labels, &node.taints) {
                    continue;
                }
                wanted.insert(node.name.clone());
                if !on.contains_key(&node.name) && ds.metadata.deletion_timestamp.is_none() {
                    let mut pod = self.new_pod(
                        self.next_name(&name),
                        &ns,
                        &spec.template,
                        owner("DaemonSet", "apps/v1", &ds.metadata),
                    );
                    pod.spec.get_or_insert_with(Default::default).node_name = Some(node.name);
                    self.create(&pods(), &pod)?;
                    pass.pods_created += 1;
                }
            }
            for (node, p) in &on {
                if !wanted.contains(node) {
                    self.delete(&pods(), &p.metadata)?;
                    pass.pods_deleted += 1;
                }
            }
            let ready = owned.iter().filter(|p| phase(p) == "Running").count();
            let status = json!({
                "observedGeneration": ds.metadata.generation,
                "desiredNumberScheduled": wanted.len(),
                "currentNumberScheduled": on.len(),
                "numberReady": ready,
                "numberMisscheduled": on.keys().filter(|n| !wanted.contains(*n)).count(),
            });
            self.set_status(&res("apps", "daemonsets", true), &ds, status)?;
        }
        Ok(())
    }

    /// Deletes objects all of whose owners are gone (background propagation). Only owners of
    /// kinds the sim knows count: a dependent of anything else is left alone.
    fn collect_garbage(&self, pass: &mut Pass) -> Result<(), StoreError> {
        const KNOWN: [&str; 7] = [
            "Deployment",
            "ReplicaSet",
            "StatefulSet",
            "DaemonSet",
            "Job",
            "NodeClaim",
            "Node",
        ];
        // Dependents first: one created after the owners were listed is not judged on a
        // list that misses its owner.
        let dependents: Vec<(Resource, Vec<Value>)> =
            [pods(), res("apps", "replicasets", true), nodes()]
                .into_iter()
                .map(|r| {
                    let items = self.store.list(&r, None).0;
                    (r, items)
                })
                .collect();
        let owners = [
            res("apps", "deployments", true),
            res("apps", "replicasets", true),
            res("apps", "statefulsets", true),
            res("apps", "daemonsets", true),
            res("batch", "jobs", true),
            res("karpenter.sh", "nodeclaims", false),
            nodes(),
        ];
        let uids: BTreeSet<String> = owners
            .iter()
            .flat_map(|r| self.store.list(r, None).0)
            .filter_map(|v| v["metadata"]["uid"].as_str().map(str::to_owned))
            .collect();
        for (r, items) in dependents {
            for v in items {
                let Ok(meta) = serde_json::from_value::<ObjectMeta>(v["metadata"].clone()) else {
                    continue;
                };
                let refs = meta.owner_references.clone().unwrap_or_default();
                if !refs.is_empty()
                    && refs.iter().all(|o| KNOWN.contains(&o.kind.as_str()))
                    && refs.iter().all(|o| !uids.contains(&o.uid))
                    && meta.deletion_timestamp.is_none()
                {
                    self.delete(&r, &meta)?;
                    pass.collected += 1;
                }
            }
        }
        Ok(())
    }

    // ---- kube-scheduler ----

    fn schedule(&self, pass: &mut Pass) -> Result<(), StoreError> {
        let all: Vec<Pod> = self.list(&pods());
        let pending: Vec<&Pod> = all
            .iter()
            .filter(|p| {
                p.spec.as_ref().is_some_and(|s| {
                    s.node_name.is_none()
                        && s.scheduler_name
                            .as_deref()
                            .is_none_or(|n| n == "default-scheduler")
                })
            })
            .filter(|p| !terminal(p) && p.metadata.deletion_timestamp.is_none())
            .collect();
        if pending.is_empty() {
            return Ok(());
        }
        let no_volumes = |_: &str, _: &str| None;
        let mut existing: BTreeMap<String, ExistingNode> = BTreeMap::new();
        for n in self.list::<Node>(&nodes()) {
            if !node_ready(&n) {
                continue;
            }
            if let Ok(node) = berth_api::domain::node(&n) {
                existing.insert(
                    node.name.clone(),
                    ExistingNode {
                        node,
                        pods: Vec::new(),
                    },
                );
            }
        }
        for p in &all {
            let Some(node) = p.spec.as_ref().and_then(|s| s.node_name.as_ref()) else {
                continue;
            };
            if terminal(p) {
                continue;
            }
            if let (Some(n), Ok(pod)) = (
                existing.get_mut(node),
                berth_api::domain::pod(p, &no_volumes),
            ) {
                n.pods.push(pod);
            }
        }
        let mut models = Vec::new();
        let mut by_key: BTreeMap<m::ObjectKey, &Pod> = BTreeMap::new();
        for p in &pending {
            match berth_api::domain::pod(p, &no_volumes) {
                Ok(mut pod) => {
                    pod.unschedulable = true;
                    by_key.insert(pod.key.clone(), p);
                    models.push(pod);
                }
                Err(e) => {
                    self.mark_unschedulable(p, &format!("the pod cannot be read: {e}"))?;
                }
            }
        }
        let input = SchedulingInput {
            now: self.now(),
            node_pools: Vec::new(),
            nodes: existing.into_values().collect(),
            node_claims: Vec::new(),
            daemon_sets: Vec::new(),
            pods: models,
            pod_disruption_budgets: Vec::new(),
            namespaces: Vec::new(),
        };
        let plan = solver::solve(&input);
        for placement in &plan.placements {
            let NominationTarget::Node(node) = &placement.target else {
                continue;
            };
            let Some(p) = by_key.get(&placement.pod) else {
                continue;
            };
            let mut pod = (*p).clone();
            pod.spec.get_or_insert_with(Default::default).node_name = Some(node.clone());
            set_pod_condition(&mut pod, "PodScheduled", "True", "", "", self.now());
            match self.update(&pods(), &pod) {
                Ok(()) => pass.bound += 1,
                Err(StoreError::Conflict { .. } | StoreError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        for u in &plan.unschedulable {
            if let Some(p) = by_key.get(&u.pod) {
                let nodes = input.nodes.len();
                let message = format!("0/{nodes} nodes are available: {}", u.reason);
                if self.mark_unschedulable(p, &message)? {
                    pass.unschedulable += 1;
                }
            }
        }
        Ok(())
    }

    /// Sets `PodScheduled=False`, `Unschedulable`; false when it already said so.
    fn mark_unschedulable(&self, p: &Pod, message: &str) -> Result<bool, StoreError> {
        let already = p
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| {
                c.iter().any(|c| {
                    c.type_ == "PodScheduled"
                        && c.status == "False"
                        && c.reason.as_deref() == Some("Unschedulable")
                        && c.message.as_deref() == Some(message)
                })
            });
        if already {
            return Ok(false);
        }
        let mut pod = p.clone();
        set_pod_condition(
            &mut pod,
            "PodScheduled",
            "False",
            "Unschedulable",
            message,
            self.now(),
        );
        match self.update(&pods(), &pod) {
            Ok(()) => Ok(true),
            Err(StoreError::Conflict { .. } | StoreError::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    // ---- kubelets ----

    fn kubelets(&self, pass: &mut Pass) -> Result<(), StoreError> {
        let now = self.now();
        let node_list: Vec<Node> = self.list(&nodes());
        let by_provider: BTreeSet<String> = node_list
            .iter()
            .filter_map(|n| n.spec.as_ref()?.provider_id.clone())
            .collect();
        // Boot: a launched claim's node registers after the boot delay.
        for claim in
            self.list::<berth_api::v1::NodeClaim>(&res("karpenter.sh", "nodeclaims", false))
        {
            if claim.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let Some(status) = &claim.status else {
                continue;
            };
            let Some(provider_id) = status.provider_id.clone() else {
                continue;
            };
            if by_provider.contains(&provider_id) {
                continue;
            }
            let launched_at = status
                .conditions
                .iter()
                .find(|c| c.type_ == "Launched" && c.status == "True")
                .map(|c| system_time(&c.last_transition_time));
            let Some(launched_at) = launched_at else {
                continue;
            };
            if now < launched_at + self.options.boot_delay {
                continue;
            }
            self.create(&nodes(), &node_for(&claim, &provider_id, now))?;
            pass.nodes_registered += 1;
        }
        // Startup taints are lifted once Karpenter registered the node.
        for n in &node_list {
            let registered = n
                .metadata
                .labels
                .as_ref()
                .is_some_and(|l| l.get(labels::NODE_REGISTERED).is_some_and(|v| v == "true"));
            let startup: Vec<String> = n
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(STARTUP_TAINTS_ANNOTATION))
                .map(|s| {
                    s.split(',')
                        .filter(|k| !k.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            if !registered || startup.is_empty() {
                continue;
            }
            let mut node = n.clone();
            if let Some(spec) = node.spec.as_mut() {
                spec.taints = spec.taints.take().map(|t| {
                    t.into_iter()
                        .filter(|t| !startup.contains(&t.key))
                        .collect()
                });
            }
            node.metadata
                .annotations
                .get_or_insert_with(Default::default)
                .remove(STARTUP_TAINTS_ANNOTATION);
            match self.update(&nodes(), &node) {
                Ok(()) | Err(StoreError::Conflict { .. } | StoreError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        // Pods: start after the start delay, succeed after their run time; pods of a node
        // that is gone are deleted.
        let ready: BTreeSet<String> = node_list
            .iter()
            .filter(|n| node_ready(n))
            .filter_map(|n| n.metadata.name.clone())
            .collect();
        let names: BTreeSet<String> = node_list
            .iter()
            .filter_map(|n| n.metadata.name.clone())
            .collect();
        for p in self.list::<Pod>(&pods()) {
            let Some(node) = p.spec.as_ref().and_then(|s| s.node_name.clone()) else {
                continue;
            };
            if !names.contains(&node) {
                self.delete(&pods(), &p.metadata)?;
                pass.pods_deleted += 1;
                continue;
            }
            if p.metadata.deletion_timestamp.is_some() || !ready.contains(&node) {
                continue;
            }
            match phase(&p) {
                "Pending" => {
                    let bound_at = pod_condition_time(&p, "PodScheduled")
                        .or_else(|| p.metadata.creation_timestamp.as_ref().map(system_time))
                        .unwrap_or(now);
                    if now < bound_at + self.options.pod_start_delay {
                        continue;
                    }
                    let mut pod = p.clone();
                    let status = pod.status.get_or_insert_with(Default::default);
                    status.phase = Some("Running".into());
                    status.start_time = Some(time(now));
                    status.host_ip = Some("10.0.0.1".into());
                    set_pod_condition(&mut pod, "PodScheduled", "True", "", "", now);
                    set_pod_condition(&mut pod, "Initialized", "True", "", "", now);
                    set_pod_condition(&mut pod, "ContainersReady", "True", "", "", now);
                    set_pod_condition(&mut pod, "Ready", "True", "", "", now);
                    match self.update(&pods(), &pod) {
                        Ok(()) => pass.pods_started += 1,
                        Err(StoreError::Conflict { .. } | StoreError::NotFound { .. }) => {}
                        Err(e) => return Err(e),
                    }
                }
                "Running" => {
                    let run_for = p
                        .metadata
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get(RUN_FOR_ANNOTATION))
                        .and_then(|d| parse_duration(d));
                    let started = p
                        .status
                        .as_ref()
                        .and_then(|s| s.start_time.as_ref())
                        .map(system_time);
                    let (Some(run_for), Some(started)) = (run_for, started) else {
                        continue;
                    };
                    if now < started + run_for {
                        continue;
                    }
                    let mut pod = p.clone();
                    pod.status.get_or_insert_with(Default::default).phase =
                        Some("Succeeded".into());
                    set_pod_condition(&mut pod, "Ready", "False", "PodCompleted", "", now);
                    set_pod_condition(
                        &mut pod,
                        "ContainersReady",
                        "False",
                        "PodCompleted",
                        "",
                        now,
                    );
                    match self.update(&pods(), &pod) {
                        Ok(()) => pass.pods_succeeded += 1,
                        Err(StoreError::Conflict { .. } | StoreError::NotFound { .. }) => {}
                        Err(e) => return Err(e),
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// Where the simulated kubelet remembers which taints are startup taints (a real one is
/// told by whatever agent lifts them).
const STARTUP_TAINTS_ANNOTATION: &str = "sim.berth.dev/startup-taints";

fn pod_condition_time(p: &Pod, type_: &str) -> Option<SystemTime> {
    p.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_ && c.status == "True")?
        .last_transition_time
        .as_ref()
        .map(system_time)
}

fn set_pod_condition(
    pod: &mut Pod,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: SystemTime,
) {
    let conditions = pod
        .status
        .get_or_insert_with(Default::default)
        .conditions
        .get_or_insert_with(Vec::new);
    let new = k8s_openapi::api::core::v1::PodCondition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: Some(reason.to_owned()).filter(|r| !r.is_empty()),
        message: Some(message.to_owned()).filter(|m| !m.is_empty()),
        last_transition_time: Some(time(now)),
        ..Default::default()
    };
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) if c.status == status => {
            c.reason = new.reason;
            c.message = new.message;
        }
        Some(c) => *c = new,
        None => conditions.push(new),
    }
}

/// The Node a kubelet registers for a launched claim.
fn node_for(claim: &berth_api::v1::NodeClaim, provider_id: &str, now: SystemTime) -> Node {
    let name = claim.metadata.name.clone().unwrap_or_default();
    let mut node_labels = claim.metadata.labels.clone().unwrap_or_default();
    node_labels.insert(labels::HOSTNAME.into(), name.clone());
    node_labels.insert(labels::OS.into(), "linux".into());
    node_labels
        .entry(labels::ARCH.into())
        .or_insert_with(|| labels::ARCH_AMD64.into());
    if let Some(zone) = node_labels.get(labels::TOPOLOGY_ZONE).cloned() {
        let region = zone
            .trim_end_matches(|c: char| c.is_ascii_lowercase())
            .to_owned();
        node_labels.insert(labels::TOPOLOGY_REGION.into(), region);
    }
    let mut taints: Vec<Value> = claim
        .spec
        .taints
        .iter()
        .chain(&claim.spec.startup_taints)
        .map(|t| serde_json::to_value(t).expect("taints serialize"))
        .collect();
    taints.push(json!({"key": labels::UNREGISTERED_TAINT_KEY, "effect": "NoExecute"}));
    let startup: Vec<&str> = claim
        .spec
        .startup_taints
        .iter()
        .map(|t| t.key.as_str())
        .collect();
    let status = claim.status.clone().unwrap_or_default();
    let t = time(now);
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {
            "name": name,
            "labels": node_labels,
            "annotations": {STARTUP_TAINTS_ANNOTATION: startup.join(",")},
        },
        "spec": {"providerID": provider_id, "taints": taints},
        "status": {
            "capacity": status.capacity,
            "allocatable": status.allocatable,
            "conditions": [{
                "type": "Ready", "status": "True", "reason": "KubeletReady",
                "message": "kubelet is posting ready status",
                "lastHeartbeatTime": t, "lastTransitionTime": t,
            }],
            "nodeInfo": {
                "architecture": claim.metadata.labels.as_ref().and_then(|l| l.get(labels::ARCH)).cloned().unwrap_or_else(|| "amd64".into()),
                "bootID": "", "containerRuntimeVersion": "containerd://1.7.0",
                "kernelVersion": "6.1.0", "kubeProxyVersion": "", "kubeletVersion": "v1.33.0",
                "machineID": "", "operatingSystem": "linux", "osImage": "Berth simulated node",
                "systemUUID": "",
            },
        },
    }))
    .expect("a well-formed Node")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_kubernetes_ones() {
        assert_eq!(parse_duration("90s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("5x"), None);
        assert_eq!(parse_duration(""), None);
    }

    #[test]
    fn suffixes_are_five_safe_characters() {
        let s = suffix(123_456_789);
        assert_eq!(s.len(), 5);
        assert!(
            s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        );
        assert_ne!(suffix(1), suffix(2));
    }
}
