//! The NodeClaim lifecycle controller: reads NodeClaims, Nodes and Pods, decides with
//! [`crate::lifecycle`], acts with [`crate::execute`] and the cloud provider.
//!
//! [`Lifecycle::run`] keeps kube-runtime reflectors (watch caches) of NodeClaims, Nodes and,
//! when a [`NodeClasses`] controller rides along, EC2NodeClasses; any change wakes a pass over
//! the cached objects, and a pass also runs every `interval` (registration deadlines, drains
//! waiting on PodDisruptionBudgets). Garbage collection lists the cloud every `gc_interval`.
//! [`Lifecycle::reconcile_all`] is the same pass from fresh lists, for one-shot use and tests.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use berth_api::v1::{EC2NodeClass, NodeClaim as NodeClaimObject};
use berth_cloud::{CloudError, CloudProvider};
use berth_scheduler_core::labels;
use berth_scheduler_core::model::Resources;
use berth_scheduler_core::quantity::parse_milli;
use futures::{FutureExt as _, StreamExt as _};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams};
use kube::runtime::{WatchStreamExt as _, reflector, watcher};

use crate::execute::Executor;
use crate::lifecycle::{self, ClaimView, DrainStep, NodeView, PodView, Step};
use crate::metrics as m;
use crate::nodeclass::{NodeClassResolver, NodeClasses};
use crate::store::{DisruptionMark, Kube, NodeClaimStore, StoreError, kube_error};

/// What one pass did, for logs and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pass {
    pub registered: Vec<String>,
    pub initialized: Vec<String>,
    pub deleted_unregistered: Vec<String>,
    pub evicted: Vec<String>,
    pub eviction_blocked: Vec<String>,
    pub terminated: Vec<String>,
    pub finalized: Vec<String>,
    /// Instances without a NodeClaim that were terminated (their claim names).
    pub leaked_terminated: Vec<String>,
    /// NodeClaims whose instance was gone, deleted.
    pub orphans_deleted: Vec<String>,
    /// NodeClaims whose unrecorded launch was resumed (found or launched, and recorded).
    pub relaunched: Vec<String>,
    /// Disruption candidates deleted once their replacements were up.
    pub disrupted: Vec<String>,
    /// Disruption decisions given up (claim names).
    pub disruptions_rolled_back: Vec<String>,
    /// Claims the cloud called drifted (their `Drifted` condition set True).
    pub drifted: Vec<String>,
    /// Claims whose node carried the disrupted taint with no disruption under way (a roll-back
    /// that raced a pass still tainting): untainted.
    pub disruption_taints_removed: Vec<String>,
}

pub struct Lifecycle<P> {
    provider: P,
    store: Kube,
    exec: Executor,
    claims: Api<NodeClaimObject>,
    nodes: Api<Node>,
    pods: Api<Pod>,
    deadlines: lifecycle::Deadlines,
    /// The cluster's time (see [`crate::Clock`]).
    clock: Arc<dyn Fn() -> SystemTime + Send + Sync>,
    cloud_clock: Arc<dyn Fn() -> SystemTime + Send + Sync>,
    events: crate::events::Recorder,
    /// How often each initialized claim is asked of the cloud's `is_drifted`.
    drift_interval: Duration,
    /// When each claim was last asked.
    drift_checked: std::sync::Mutex<BTreeMap<String, std::time::Instant>>,
}

/// Karpenter looks at a NodeClaim's drift every 5 minutes; each look costs the cloud a call.
pub const DRIFT_INTERVAL: Duration = Duration::from_secs(300);

impl<P> std::fmt::Debug for Lifecycle<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lifecycle")
            .field("deadlines", &self.deadlines)
            .finish_non_exhaustive()
    }
}

fn resources(
    map: &BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
) -> Resources {
    let mut out = Resources::new();
    for (k, q) in map {
        if let Ok(v) = parse_milli(&q.0) {
            out.set(k, v);
        }
    }
    out
}

fn condition_true(claim: &NodeClaimObject, type_: &str) -> bool {
    claim.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == type_ && c.status == "True")
    })
}

fn claim_view(c: &NodeClaimObject) -> ClaimView {
    let status = c.status.clone().unwrap_or_default();
    ClaimView {
        name: c.metadata.name.clone().unwrap_or_default(),
        provider_id: status.provider_id.clone().unwrap_or_default(),
        labels: c.metadata.labels.clone().unwrap_or_default(),
        taints: c.spec.taints.iter().map(Into::into).collect(),
        startup_taints: c.spec.startup_taints.iter().map(Into::into).collect(),
        requests: resources(&c.spec.resources.requests),
        registered: condition_true(c, "Registered"),
        initialized: condition_true(c, "Initialized"),
        launch_recorded: c
            .status
            .as_ref()
            .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Launched")),
        created_at: c
            .metadata
            .creation_timestamp
            .as_ref()
            .map_or(SystemTime::UNIX_EPOCH, |t| SystemTime::from(t.0)),
    }
}

/// `"AMIDrift: why"` as the condition's reason and message (`Drifted` when the cloud gave
/// no reason word).
fn drift_reason(why: &str) -> (&str, &str) {
    match why.split_once(": ") {
        Some((reason, message))
            if !reason.is_empty() && reason.chars().all(|c| c.is_ascii_alphanumeric()) =>
        {
            (reason, message)
        }
        _ => ("Drifted", why),
    }
}

fn node_view(n: &Node) -> Result<NodeView, StoreError> {
    let node =
        berth_api::domain::node(n).map_err(|e| StoreError::Unavailable(format!("Node: {e}")))?;
    Ok(NodeView {
        name: node.name,
        provider_id: node.provider_id,
        labels: node.labels,
        taints: node.taints,
        // NB: not `node.ready`, which counts a node without conditions as Ready (for
        // `berth plan`); initialization waits for a kubelet that said so.
        ready: n
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True")),
        allocatable: node.allocatable,
    })
}

fn pod_view(p: &Pod) -> PodView {
    let spec = p.spec.clone().unwrap_or_default();
    let phase = p
        .status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default();
    PodView {
        namespace: p.metadata.namespace.clone().unwrap_or_default(),
        name: p.metadata.name.clone().unwrap_or_default(),
        critical: matches!(
            spec.priority_class_name.as_deref(),
            Some("system-cluster-critical" | "system-node-critical")
        ),
        daemon_set: p
            .metadata
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.kind == "DaemonSet"),
        terminal: phase == "Succeeded" || phase == "Failed",
        mirror: p
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key("kubernetes.io/config.mirror")),
        deleting: p.metadata.deletion_timestamp.is_some(),
        // NB: only a pod that runs has work to lose; one bound but not started yet (it
        // landed as the node was being disrupted) is evicted and scheduled elsewhere.
        do_not_disrupt: phase == "Running"
            && p.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(labels::DO_NOT_DISRUPT))
                .is_some_and(|v| v == "true"),
    }
}

impl<P: CloudProvider> Lifecycle<P> {
    pub fn new(
        provider: P,
        client: kube::Client,
        deadlines: lifecycle::Deadlines,
        clock: Arc<dyn Fn() -> SystemTime + Send + Sync>,
    ) -> Self {
        let store = Kube::new(client.clone());
        Self {
            provider,
            exec: Executor::new(store.clone()),
            store,
            claims: Api::all(client.clone()),
            nodes: Api::all(client.clone()),
            pods: Api::all(client.clone()),
            deadlines,
            clock,
            cloud_clock: Arc::new(SystemTime::now),
            events: crate::events::Recorder::new(client),
            drift_interval: DRIFT_INTERVAL,
            drift_checked: Default::default(),
        }
    }

    /// The clock the provider's timestamps (instance launch times) are on, which the garbage
    /// collector compares them with: the wall clock unless a test's cloud runs on another.
    pub fn with_cloud_clock(mut self, clock: Arc<dyn Fn() -> SystemTime + Send + Sync>) -> Self {
        self.cloud_clock = clock;
        self
    }

    /// Asks the cloud about each claim's drift at most this often (tests: zero).
    pub fn with_drift_interval(mut self, every: Duration) -> Self {
        self.drift_interval = every;
        self
    }

    /// Publishes through `recorder` (shared with the gRPC service, so both de-duplicate
    /// against one memory).
    pub fn with_events(mut self, recorder: crate::events::Recorder) -> Self {
        self.events = recorder;
        self
    }

    /// One pass over every NodeClaim from fresh lists, garbage collection included.
    pub async fn reconcile_all(&self) -> Result<Pass, StoreError> {
        let claims = self
            .claims
            .list(&ListParams::default())
            .await
            .map_err(kube_error)?;
        let nodes = self
            .nodes
            .list(&ListParams::default())
            .await
            .map_err(kube_error)?;
        Ok(self.reconcile(&claims.items, &nodes.items, true).await)
    }

    /// One pass over `claims` as they were seen with `nodes`; `gc` adds garbage collection.
    pub async fn reconcile(&self, claims: &[NodeClaimObject], nodes: &[Node], gc: bool) -> Pass {
        let by_provider: BTreeMap<String, &Node> = nodes
            .iter()
            .filter_map(|n| Some((n.spec.as_ref()?.provider_id.clone()?, n)))
            .collect();
        let mut pass = Pass::default();
        let mut phases: BTreeMap<&'static str, usize> = [
            ("launching", 0),
            ("launched", 0),
            ("registered", 0),
            ("initialized", 0),
            ("deleting", 0),
        ]
        .into();
        for c in claims {
            let v = claim_view(c);
            let phase = if c.metadata.deletion_timestamp.is_some() {
                "deleting"
            } else if v.initialized {
                "initialized"
            } else if v.registered {
                "registered"
            } else if !v.provider_id.is_empty() {
                "launched"
            } else {
                "launching"
            };
            *phases.entry(phase).or_default() += 1;
        }
        for (phase, n) in phases {
            metrics::gauge!(m::NODE_CLAIMS, "phase" => phase).set(n as f64);
        }
        for c in claims {
            let view = claim_view(c);
            let node = by_provider.get(&view.provider_id).copied();
            let mark = c
                .metadata
                .annotations
                .as_ref()
                .and_then(DisruptionMark::from_annotations);
            let result = if c.metadata.deletion_timestamp.is_some() {
                self.terminate(c, &view, node, &mut pass).await
            } else if let Some(mark) = mark {
                self.disrupt(c, &view, &mark, node, claims, &mut pass).await
            } else {
                match self.untaint_undisrupted(&view, node, &mut pass).await {
                    Ok(()) => self.advance(c, &view, node, &mut pass).await,
                    Err(e) => Err(e),
                }
            };
            if let Err(e) = result {
                // One claim's trouble does not stop the others.
                tracing::warn!(node_claim = %view.name, error = %e, "reconcile");
            }
        }
        for c in claims {
            if let Err(e) = self.check_drift(c, &mut pass).await {
                tracing::warn!(node_claim = ?c.metadata.name, error = %e, "drift check");
            }
        }
        if gc {
            self.collect_garbage(claims, &mut pass).await;
        }
        pass
    }

    /// Cloud-side drift (Karpenter's `cloudProvider.IsDrifted`): an initialized claim in no
    /// decision is asked of the cloud every `drift_interval`; its `Drifted` condition is set
    /// True with the cloud's reason (`AMIDrift`, `SubnetDrift`, `SecurityGroupDrift`,
    /// `NodeClassDrift`), which the scheduler's disruption replaces, and False again when the
    /// cloud no longer says so.
    async fn check_drift(&self, c: &NodeClaimObject, pass: &mut Pass) -> Result<(), StoreError> {
        let view = claim_view(c);
        let in_decision = c
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(labels::DISRUPTION_ID));
        if c.metadata.deletion_timestamp.is_some() || !view.initialized || in_decision {
            return Ok(());
        }
        {
            let now = std::time::Instant::now();
            let mut checked = self.drift_checked.lock().unwrap_or_else(|e| e.into_inner());
            if checked
                .get(&view.name)
                .is_some_and(|at| now.duration_since(*at) < self.drift_interval)
            {
                return Ok(());
            }
            let every = self.drift_interval;
            checked.retain(|_, at| now.duration_since(*at) < every);
            checked.insert(view.name.clone(), now);
        }
        let claim = berth_api::domain::node_claim(c)
            .map_err(|e| StoreError::Unavailable(format!("NodeClaim: {e}")))?;
        let drift = match self.provider.is_drifted(&claim).await {
            Ok(d) => d,
            // No instance: garbage collection deletes the claim.
            Err(CloudError::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(StoreError::Unavailable(e.to_string())),
        };
        let drifted = condition_true(c, "Drifted");
        match drift {
            Some(berth_cloud::DriftReason(why)) if !drifted => {
                let (reason, message) = drift_reason(&why);
                tracing::info!(node_claim = %view.name, %reason, %message, "drifted");
                self.store
                    .set_condition(
                        &view.name,
                        self.store.condition("Drifted", true, reason, message),
                        serde_json::json!({}),
                    )
                    .await?;
                pass.drifted.push(view.name.clone());
            }
            None if drifted => {
                self.store
                    .set_condition(
                        &view.name,
                        self.store.condition("Drifted", false, "NotDrifted", ""),
                        serde_json::json!({}),
                    )
                    .await?;
            }
            _ => {}
        }
        Ok(())
    }

    /// Terminates instances without a NodeClaim and deletes NodeClaims whose instance is gone.
    async fn collect_garbage(&self, claims: &[NodeClaimObject], pass: &mut Pass) {
        let instances = match self.provider.list().await {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!(error = %e, "garbage collection: listing instances");
                return;
            }
        };
        let known: Vec<(String, String)> = claims
            .iter()
            .filter(|c| c.metadata.deletion_timestamp.is_none())
            .map(|c| {
                let v = claim_view(c);
                (v.name, v.provider_id)
            })
            .chain(
                // Claims being deleted keep their instance until the drain terminates it.
                claims
                    .iter()
                    .filter(|c| c.metadata.deletion_timestamp.is_some())
                    .map(|c| (claim_view(c).name, String::new())),
            )
            .collect();
        // Launch times are the cloud's, on its clock (not the cluster's).
        let cloud_now = (self.cloud_clock)();
        for action in lifecycle::garbage(&instances, &known, cloud_now, lifecycle::LEAK_GRACE) {
            match action {
                lifecycle::GcAction::TerminateInstance {
                    node_claim,
                    provider_id,
                } => {
                    tracing::info!(%node_claim, %provider_id, "terminating an instance without a NodeClaim");
                    match self.provider.delete(&node_claim).await {
                        Ok(()) | Err(CloudError::NotFound { .. }) => {
                            metrics::counter!(m::GC_ACTIONS_TOTAL, "action" => "terminate_instance").increment(1);
                            pass.leaked_terminated.push(node_claim);
                        }
                        Err(e) => tracing::warn!(%node_claim, error = %e, "garbage collection"),
                    }
                }
                lifecycle::GcAction::DeleteClaim { node_claim } => {
                    tracing::info!(%node_claim, "deleting a NodeClaim whose instance is gone");
                    match self.store.delete(&node_claim).await {
                        Ok(()) => {
                            metrics::counter!(m::GC_ACTIONS_TOTAL, "action" => "delete_claim")
                                .increment(1);
                            pass.orphans_deleted.push(node_claim);
                        }
                        Err(e) => tracing::warn!(%node_claim, error = %e, "garbage collection"),
                    }
                }
            }
        }
    }

    async fn advance(
        &self,
        c: &NodeClaimObject,
        view: &ClaimView,
        node: Option<&Node>,
        pass: &mut Pass,
    ) -> Result<(), StoreError> {
        let node_view = node.map(node_view).transpose()?;
        match lifecycle::next_step(view, node_view.as_ref(), (self.clock)(), self.deadlines) {
            Step::Wait { .. } => Ok(()),
            Step::Register {
                node,
                labels: l,
                add_taints,
                ..
            } => {
                let uid = c.metadata.uid.clone().unwrap_or_default();
                self.exec
                    .register(&view.name, &uid, &node, &l, &add_taints)
                    .await?;
                pass.registered.push(view.name.clone());
                Ok(())
            }
            Step::Initialize { node } => {
                self.exec.initialize(&view.name, &node).await?;
                pass.initialized.push(view.name.clone());
                Ok(())
            }
            Step::Launch => {
                let claim = berth_api::domain::node_claim(c)
                    .map_err(|e| StoreError::Unavailable(format!("NodeClaim: {e}")))?;
                tracing::info!(node_claim = %view.name, "resuming a launch that was never recorded");
                match crate::launch::launch(&self.provider, &self.store, &claim).await {
                    Ok(_) => {
                        pass.relaunched.push(view.name.clone());
                        Ok(())
                    }
                    // Recorded as Launched=False: the scheduler plans again.
                    Err(crate::launch::LaunchError::Cloud(_)) => Ok(()),
                    Err(crate::launch::LaunchError::Store(e)) => Err(e),
                }
            }
            Step::Delete { reason } => {
                tracing::info!(node_claim = %view.name, %reason, "deleting a NodeClaim that never registered");
                self.store.delete(&view.name).await?;
                pass.deleted_unregistered.push(view.name.clone());
                Ok(())
            }
        }
    }

    /// The pods bound to `node`, as the drain sees them.
    async fn pods_on(&self, node: &str) -> Result<Vec<PodView>, StoreError> {
        Ok(self
            .pods
            .list(&ListParams::default().fields(&format!("spec.nodeName={node}")))
            .await
            .map_err(kube_error)?
            .items
            .iter()
            .map(pod_view)
            .collect())
    }

    /// A claim recorded in a disruption decision: taint its node, wait for the replacements,
    /// then delete it (the drain follows), or roll the decision back.
    async fn disrupt(
        &self,
        c: &NodeClaimObject,
        view: &ClaimView,
        mark: &DisruptionMark,
        node: Option<&Node>,
        claims: &[NodeClaimObject],
        pass: &mut Pass,
    ) -> Result<(), StoreError> {
        let node_name = node.and_then(|n| n.metadata.name.clone());
        let tainted = node.map(|n| {
            n.spec
                .as_ref()
                .and_then(|s| s.taints.as_ref())
                .is_some_and(|t| t.iter().any(|t| t.key == labels::DISRUPTED_TAINT_KEY))
        });
        let emptiness_broken = match (&node_name, mark.method.as_str()) {
            (Some(n), "Empty") => self
                .pods_on(n)
                .await?
                .iter()
                .any(|p| !p.daemon_set && !p.mirror && !p.terminal),
            _ => false,
        };
        let replacements: Vec<(String, lifecycle::Replacement)> = mark
            .replacements
            .iter()
            .map(|r| {
                let state = match claims
                    .iter()
                    .find(|c| c.metadata.name.as_deref() == Some(r))
                {
                    None => lifecycle::Replacement::Missing,
                    Some(c)
                        if c.metadata.deletion_timestamp.is_some()
                            || c.status.as_ref().is_some_and(|s| {
                                s.conditions
                                    .iter()
                                    .any(|k| k.type_ == "Launched" && k.status == "False")
                            }) =>
                    {
                        lifecycle::Replacement::Failed
                    }
                    Some(c) if condition_true(c, "Initialized") => {
                        lifecycle::Replacement::Initialized
                    }
                    Some(_) => lifecycle::Replacement::Pending,
                };
                (r.clone(), state)
            })
            .collect();
        match lifecycle::disruption_step(
            mark.started_at,
            tainted,
            emptiness_broken,
            &replacements,
            (self.clock)(),
            self.deadlines,
        ) {
            lifecycle::DisruptionStep::Wait => Ok(()),
            lifecycle::DisruptionStep::Taint => {
                if let Some(n) = &node_name {
                    self.exec.taint_disrupted(n).await?;
                }
                Ok(())
            }
            lifecycle::DisruptionStep::Delete => {
                tracing::info!(node_claim = %view.name, decision = %mark.id, method = %mark.method, "disrupting: replacements are up, deleting");
                self.store.delete(&view.name).await?;
                self.events
                    .publish(crate::events::terminating(
                        node.map(|n| {
                            crate::events::Involved::node(
                                n.metadata.name.as_deref().unwrap_or_default(),
                                n.metadata.uid.clone(),
                            )
                        }),
                        crate::events::Involved::node_claim(&view.name, c.metadata.uid.clone()),
                        &mark.method,
                        mark.savings_per_hour,
                        &mark.reason,
                    ))
                    .await;
                metrics::counter!(m::DISRUPTION_ACTIONS_TOTAL, "method" => mark.method.clone(), "action" => "deleted").increment(1);
                pass.disrupted.push(view.name.clone());
                Ok(())
            }
            lifecycle::DisruptionStep::RollBack(reason) => {
                tracing::warn!(node_claim = %view.name, decision = %mark.id, %reason, "disruption rolled back");
                if let Some(n) = &node_name {
                    match self.exec.untaint_disrupted(n).await {
                        Ok(()) | Err(StoreError::NotFound(_)) => {}
                        Err(e) => return Err(e),
                    }
                }
                self.store.clear_disruption(&view.name, &mark.id).await?;
                metrics::counter!(m::DISRUPTION_ACTIONS_TOTAL, "method" => mark.method.clone(), "action" => "rolled_back").increment(1);
                pass.disruptions_rolled_back.push(view.name.clone());
                Ok(())
            }
        }
    }

    /// The disrupted taint belongs to a disruption under way (a record on the claim) or to a
    /// deletion. On a node whose claim has neither, it is left over (a pass that tainted on a
    /// view older than the roll-back that cleared the record) and would keep pods off the node
    /// and the node counted as disrupting for ever: it goes.
    async fn untaint_undisrupted(
        &self,
        view: &ClaimView,
        node: Option<&Node>,
        pass: &mut Pass,
    ) -> Result<(), StoreError> {
        let Some(n) = node else { return Ok(()) };
        let tainted = n
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .is_some_and(|t| t.iter().any(|t| t.key == labels::DISRUPTED_TAINT_KEY));
        if !tainted {
            return Ok(());
        }
        let Some(name) = n.metadata.name.as_deref() else {
            return Ok(());
        };
        tracing::warn!(node_claim = %view.name, node = name, "removing a disrupted taint left by a rolled-back disruption");
        match self.exec.untaint_disrupted(name).await {
            Ok(()) | Err(StoreError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        pass.disruption_taints_removed.push(view.name.clone());
        Ok(())
    }

    async fn terminate(
        &self,
        c: &NodeClaimObject,
        view: &ClaimView,
        node: Option<&Node>,
        pass: &mut Pass,
    ) -> Result<(), StoreError> {
        let ours = c
            .metadata
            .finalizers
            .iter()
            .flatten()
            .any(|f| f == labels::TERMINATION_FINALIZER);
        if !ours {
            return Ok(());
        }
        let node_name = node.and_then(|n| n.metadata.name.clone());
        let pods: Vec<PodView> = match &node_name {
            Some(n) => self.pods_on(n).await?,
            None => Vec::new(),
        };
        let grace_over = match (
            &c.metadata.deletion_timestamp,
            &c.spec.termination_grace_period,
        ) {
            (Some(at), Some(tgp)) => tgp
                .parse()
                .is_ok_and(|d| SystemTime::from(at.0) + d <= (self.clock)()),
            _ => false,
        };
        let taints = node.map(node_view).transpose()?.map(|n| n.taints);
        match lifecycle::drain_step(taints.as_deref(), &pods, grace_over) {
            DrainStep::Taint => {
                if let Some(n) = &node_name {
                    self.exec.taint_disrupted(n).await?;
                }
            }
            DrainStep::Evict(keys) => {
                for (ns, name) in keys {
                    let outcome = self.exec.evict(&ns, &name).await?;
                    let result = match outcome {
                        crate::execute::Eviction::Evicted => "evicted",
                        crate::execute::Eviction::Blocked => "blocked",
                        crate::execute::Eviction::Gone => "gone",
                    };
                    metrics::counter!(m::EVICTIONS_TOTAL, "result" => result).increment(1);
                    match outcome {
                        crate::execute::Eviction::Blocked => {
                            pass.eviction_blocked.push(format!("{ns}/{name}"))
                        }
                        _ => pass.evicted.push(format!("{ns}/{name}")),
                    }
                }
            }
            DrainStep::Delete(keys) => {
                for (ns, name) in keys {
                    self.exec.delete_pod(&ns, &name).await?;
                    metrics::counter!(m::EVICTIONS_TOTAL, "result" => "deleted").increment(1);
                    pass.evicted.push(format!("{ns}/{name}"));
                }
            }
            DrainStep::WaitForPods => {}
            DrainStep::Terminate => {
                if view.provider_id.is_empty() {
                    // Never launched: nothing to terminate.
                    self.store.finalize(&view.name).await?;
                    pass.finalized.push(view.name.clone());
                    return Ok(());
                }
                match self.provider.delete(&view.name).await {
                    Ok(()) => pass.terminated.push(view.name.clone()),
                    Err(CloudError::NotFound { .. }) => {
                        if let Some(n) = &node_name {
                            self.exec.delete_node(n).await?;
                        }
                        self.store.finalize(&view.name).await?;
                        let label = |k: &str| view.labels.get(k).cloned().unwrap_or_default();
                        metrics::counter!(m::TERMINATIONS_TOTAL,
                            "nodepool" => label(labels::NODE_POOL),
                            "instance_type" => label(labels::INSTANCE_TYPE),
                            "zone" => label(labels::TOPOLOGY_ZONE),
                            "capacity_type" => label(labels::CAPACITY_TYPE))
                        .increment(1);
                        if let Some(at) = &c.metadata.deletion_timestamp {
                            let took = (self.clock)()
                                .duration_since(SystemTime::from(at.0))
                                .unwrap_or_default();
                            metrics::histogram!(m::DRAIN_DURATION_SECONDS)
                                .record(took.as_secs_f64());
                        }
                        pass.finalized.push(view.name.clone());
                    }
                    Err(e) => return Err(StoreError::Unavailable(e.to_string())),
                }
            }
        }
        Ok(())
    }

    /// Watches NodeClaims, Nodes and (with `classes`) EC2NodeClasses, and reconciles on every
    /// change and every `interval`, with garbage collection every `gc_interval`, until `stop`
    /// turns true.
    pub async fn run<R: NodeClassResolver + Clone>(
        self,
        classes: Option<NodeClasses<R>>,
        interval: Duration,
        gc_interval: Duration,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let (claims, claims_writer) = reflector::store::<NodeClaimObject>();
        let (nodes, nodes_writer) = reflector::store::<Node>();
        let (node_classes, classes_writer) = reflector::store::<EC2NodeClass>();
        let config = watcher::Config::default();
        let mut streams = vec![
            reflector(
                claims_writer,
                watcher(self.claims.clone(), config.clone()).default_backoff(),
            )
            .map(|e| e.map(drop))
            .boxed(),
            reflector(
                nodes_writer,
                watcher(self.nodes.clone(), config.clone()).default_backoff(),
            )
            .map(|e| e.map(drop))
            .boxed(),
        ];
        if classes.is_some() {
            let api: Api<EC2NodeClass> = Api::all(self.store.client());
            streams.push(
                reflector(classes_writer, watcher(api, config).default_backoff())
                    .map(|e| e.map(drop))
                    .boxed(),
            );
        }
        let changed = Arc::new(tokio::sync::Notify::new());
        let driver = {
            let changed = changed.clone();
            let mut events = futures::stream::select_all(streams);
            tokio::spawn(async move {
                while let Some(event) = events.next().await {
                    match event {
                        Ok(()) => changed.notify_one(),
                        // The watcher backs off and relists by itself (410s included).
                        Err(e) => tracing::warn!(error = %e, "lifecycle watch"),
                    }
                }
            })
        };
        // The lifecycle waits for NodeClaims and Nodes only: EC2NodeClasses that cannot be
        // listed (no CRD, no RBAC) must not hold up draining and terminating.
        let ready = async {
            let _ = claims.wait_until_ready().await;
            let _ = nodes.wait_until_ready().await;
        };
        tokio::select! {
            () = ready => {}
            _ = stop.wait_for(|s| *s) => {
                driver.abort();
                return;
            }
        }
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_gc: Option<tokio::time::Instant> = None;
        // Work under way (an instance shutting down, evictions, a PodDisruptionBudget saying
        // not yet) is looked at again soon, changed or not.
        let soon = interval.min(Duration::from_secs(1));
        let mut requeue = false;
        loop {
            let again = async {
                if requeue {
                    tokio::time::sleep(soon).await;
                } else {
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                () = changed.notified() => {}
                _ = tick.tick() => {}
                () = again => {}
                _ = stop.wait_for(|s| *s) => break,
            }
            let claims_now: Vec<NodeClaimObject> =
                claims.state().iter().map(|c| (**c).clone()).collect();
            let nodes_now: Vec<Node> = nodes.state().iter().map(|n| (**n).clone()).collect();
            let gc = last_gc.is_none_or(|at| at.elapsed() >= gc_interval);
            if gc {
                last_gc = Some(tokio::time::Instant::now());
            }
            let pass = self.reconcile(&claims_now, &nodes_now, gc).await;
            if pass != Pass::default() {
                tracing::debug!(?pass, "lifecycle pass");
            }
            requeue = !(pass.terminated.is_empty()
                && pass.evicted.is_empty()
                && pass.eviction_blocked.is_empty())
                || claims_now.iter().any(|c| {
                    c.metadata
                        .annotations
                        .as_ref()
                        .is_some_and(|a| a.contains_key(labels::DISRUPTION_ID))
                })
                || claims_now
                    .iter()
                    .any(|c| c.metadata.deletion_timestamp.is_some());
            let classes_listed = node_classes
                .wait_until_ready()
                .now_or_never()
                .is_some_and(|r| r.is_ok());
            if let Some(classes) = classes.as_ref().filter(|_| classes_listed) {
                for class in node_classes.state() {
                    match classes.reconcile(&class, &claims_now).await {
                        Ok(outcome) => {
                            tracing::trace!(ec2_node_class = ?class.metadata.name, ?outcome)
                        }
                        Err(e) => {
                            tracing::warn!(ec2_node_class = ?class.metadata.name, error = %e, "EC2NodeClass")
                        }
                    }
                }
            }
        }
        driver.abort();
    }
}
