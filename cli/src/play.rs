//! Playing a scenario on the simulated cluster: what `berth demo` and `berth simulate` share.
//!
//! ```text
//!  Scenario ──> Stack (sim API server, controllers, kubelets; watcher, scheduler, actuator)
//!     │ arrivals at their simulated times (create / scale, over Kubernetes HTTP)
//!     v
//!  sample loop: NodeClaims and pods listed through the API ──> Samples ──> Outcome
//! ```
//!
//! Time is compressed by `speed`: the simulated cluster's clock runs fast, and every delay
//! Berth's services wait on the wall clock (boot, batching) is divided by the speed. The outcome
//! is computed from the cluster's own objects (pod creation and start times, NodeClaims and
//! their labels), priced with the sim cloud's catalog.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use berth_scheduler_core::labels;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use kube::discovery::{ApiResource, Scope};

use crate::stack::{Stack, StackOptions};

/// What happens at an arrival.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Create this object (any kind the simulated cluster serves).
    Create(serde_json::Value),
    /// Set `spec.replicas` of a Deployment, StatefulSet or ReplicaSet.
    Scale {
        api_version: String,
        kind: String,
        namespace: String,
        name: String,
        replicas: i64,
    },
}

/// One thing that happens at a simulated time after the start.
#[derive(Debug, Clone, PartialEq)]
pub struct Arrival {
    pub at: Duration,
    pub action: Action,
}

/// Which pods the outcome counts (waits, pending/running).
pub type PodFilter = Box<dyn Fn(&Pod) -> bool + Send + Sync>;

/// A story to play.
pub struct Scenario {
    /// Created before the services start (NodePools, EC2NodeClasses, namespaces, workloads
    /// present from the beginning).
    pub manifests: Vec<serde_json::Value>,
    /// Sorted by `at`.
    pub arrivals: Vec<Arrival>,
    /// Simulated length.
    pub duration: Duration,
    /// Simulated seconds per wall second (≥ 1).
    pub speed: f64,
    /// Simulated boot time of a node.
    pub boot_delay: Duration,
    pub kubeconfig: PathBuf,
    pub catalog_path: Option<PathBuf>,
    pub catalog: berth_catalog::Catalog,
    pub counted: PodFilter,
    /// Progress lines go to stderr (stdout carries JSON).
    pub progress_to_stderr: bool,
}

impl std::fmt::Debug for Scenario {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scenario")
            .field("manifests", &self.manifests.len())
            .field("arrivals", &self.arrivals.len())
            .field("duration", &self.duration)
            .field("speed", &self.speed)
            .finish_non_exhaustive()
    }
}

/// The cluster at one moment.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Sample {
    /// Simulated time since the start.
    pub t: Duration,
    pub pending: usize,
    pub running: usize,
    /// Launched NodeClaims by instance type.
    pub nodes: BTreeMap<String, usize>,
    /// What those NodeClaims cost per hour.
    pub per_hour: f64,
}

impl Sample {
    pub fn node_count(&self) -> usize {
        self.nodes.values().sum()
    }
}

/// A static node group sized for Berth's peak, what the article's team ran before: a NodePool's
/// nodes at the moment they cost the most, kept for the whole window.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StaticGroup {
    pub pool: String,
    /// Nodes by instance type.
    pub nodes: BTreeMap<String, usize>,
    /// What they cost per hour.
    pub per_hour: f64,
}

impl StaticGroup {
    /// `2 × t3.2xlarge + 1 × m5.large`.
    pub fn describe(&self) -> String {
        let parts: Vec<String> = self
            .nodes
            .iter()
            .map(|(t, n)| format!("{n} × {t}"))
            .collect();
        parts.join(" + ")
    }
}

/// The run's outcome.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub simulated: Duration,
    pub interrupted: bool,
    /// Arrivals that happened.
    pub arrivals: usize,
    pub pods_created: usize,
    pub pods_succeeded: usize,
    pub pods_started: usize,
    pub pods_never_started: usize,
    /// Seconds from creation to start, sorted.
    pub waits: Vec<f64>,
    /// NodeClaims launched by (instance type, zone, capacity type).
    pub launched: BTreeMap<(String, String, String), usize>,
    /// Pods that ran and were killed before they finished (evicted, deleted, failed).
    pub pods_lost: usize,
    /// NodeClaims gone before the end, by why (the disruption method, or `other`).
    pub nodes_removed: BTreeMap<String, usize>,
    pub cost: f64,
    pub static_groups: Vec<StaticGroup>,
    pub static_cost: f64,
    pub samples: Vec<Sample>,
}

impl Outcome {
    /// Berth's cost over the static groups' (`None` when there is nothing to compare with).
    pub fn ratio(&self) -> Option<f64> {
        (self.static_cost > 0.0).then(|| self.cost / self.static_cost)
    }

    pub fn wait(&self, p: f64) -> f64 {
        percentile(&self.waits, p)
    }
}

/// A counted pod's life, as the watch saw it.
#[derive(Debug, Clone, Default)]
struct PodLife {
    created: Option<SystemTime>,
    started: Option<SystemTime>,
    phase: String,
    gone: bool,
}

/// What a NodeClaim cost: launched at `created`, seen until `last_seen` (simulated).
#[derive(Debug, Clone)]
struct ClaimSeen {
    pool: String,
    instance_type: String,
    zone: String,
    capacity_type: String,
    created: SystemTime,
    last_seen: SystemTime,
    /// Still there at the last sample.
    present: bool,
    price: f64,
    /// The disruption method it was last seen recorded in, if any.
    method: Option<String>,
}

pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// `01:02:03`.
pub fn hms(d: Duration) -> String {
    let s = d.as_secs();
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// The catalog's price of every offering, by (instance type, zone, capacity type).
fn prices(catalog: &berth_catalog::Catalog) -> BTreeMap<(String, String, String), f64> {
    let mut out = BTreeMap::new();
    for it in catalog.instance_types(
        &Default::default(),
        berth_scheduler_core::allocatable::DEFAULT_ROOT_VOLUME_BYTES,
    ) {
        for o in &it.offerings {
            out.insert(
                (
                    it.name.clone(),
                    o.zone.clone(),
                    o.capacity_type.as_str().to_owned(),
                ),
                o.price,
            );
        }
    }
    out
}

/// `group/version` → (group, version); the core group has no slash.
fn group_version(api_version: &str) -> (&str, &str) {
    api_version.split_once('/').unwrap_or(("", api_version))
}

/// Writes arrivals through the Kubernetes API, as a user's `kubectl` would: discovery finds
/// each kind's resource and scope once.
struct Writer {
    client: kube::Client,
    resources: BTreeMap<(String, String), (ApiResource, Scope)>,
}

impl Writer {
    async fn api(
        &mut self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
    ) -> anyhow::Result<Api<DynamicObject>> {
        let key = (api_version.to_owned(), kind.to_owned());
        if !self.resources.contains_key(&key) {
            let (group, version) = group_version(api_version);
            let gvk = GroupVersionKind::gvk(group, version, kind);
            let (ar, caps) = kube::discovery::pinned_kind(&self.client, &gvk)
                .await
                .with_context(|| format!("{api_version} {kind}: not served"))?;
            self.resources.insert(key.clone(), (ar, caps.scope));
        }
        let (ar, scope) = &self.resources[&key];
        Ok(match scope {
            Scope::Namespaced => {
                Api::namespaced_with(self.client.clone(), namespace.unwrap_or("default"), ar)
            }
            Scope::Cluster => Api::all_with(self.client.clone(), ar),
        })
    }

    async fn apply(&mut self, action: &Action) -> anyhow::Result<()> {
        match action {
            Action::Create(value) => {
                let obj: DynamicObject =
                    serde_json::from_value(value.clone()).context("an arrival's object")?;
                let types = obj.types.clone().unwrap_or_default();
                let name = obj.metadata.name.clone().unwrap_or_default();
                let api = self
                    .api(
                        &types.api_version,
                        &types.kind,
                        obj.metadata.namespace.as_deref(),
                    )
                    .await?;
                api.create(&PostParams::default(), &obj)
                    .await
                    .with_context(|| format!("creating {} {name}", types.kind))?;
            }
            Action::Scale {
                api_version,
                kind,
                namespace,
                name,
                replicas,
            } => {
                let api = self.api(api_version, kind, Some(namespace)).await?;
                api.patch(
                    name,
                    &PatchParams::default(),
                    &Patch::Merge(serde_json::json!({"spec": {"replicas": replicas}})),
                )
                .await
                .with_context(|| format!("scaling {kind} {namespace}/{name} to {replicas}"))?;
            }
        }
        Ok(())
    }
}

/// Plays `s` to its end (or Ctrl-C), printing a progress line every two wall seconds.
pub async fn play(s: Scenario) -> anyhow::Result<Outcome> {
    anyhow::ensure!(
        s.speed >= 1.0 && s.speed.is_finite(),
        "--speed must be at least 1"
    );
    let price = prices(&s.catalog);
    let speed = s.speed;
    let start_wall = Instant::now();
    let start_sim = SystemTime::now();
    let clock: crate::stack::Clock =
        Arc::new(move || start_sim + start_wall.elapsed().mul_f64(speed));
    let sim_now = clock.clone();
    let wall = |sim: Duration| sim.div_f64(speed);
    let stack = Stack::start(StackOptions {
        listen: "127.0.0.1:0".parse()?,
        kubeconfig: s.kubeconfig.clone(),
        clock,
        boot_delay: s.boot_delay,
        pod_start_delay: Duration::from_secs(2),
        // Timers are noticed within three simulated seconds where the wall clock allows.
        tick: Duration::from_secs(3)
            .div_f64(speed)
            .clamp(Duration::from_millis(20), Duration::from_millis(100)),
        sim_cloud_boot_delay: wall(s.boot_delay),
        batch_idle: wall(Duration::from_secs(1)),
        batch_max: wall(Duration::from_secs(10)),
        sim_cloud_termination_delay: wall(Duration::from_secs(30)),
        disruption_interval: wall(Duration::from_secs(10)),
        disruption_validation: wall(Duration::from_secs(15)),
        coalesce: wall(Duration::from_secs(1)).min(Duration::from_millis(50)),
        actuator_deadlines: crate::stack::ActuatorDeadlines::compressed(speed),
        catalog: s.catalog_path.clone(),
        manifests: s.manifests,
    })
    .await?;
    let client = berth_service::kube_client(Some(&s.kubeconfig)).await?;
    let mut writer = Writer {
        client: client.clone(),
        resources: BTreeMap::new(),
    };
    let pods: Api<Pod> = Api::all(client.clone());
    let claims_api: Api<berth_api::v1::NodeClaim> = Api::all(client.clone());
    let elapsed = |now: SystemTime| now.duration_since(start_sim).unwrap_or_default();
    let phase = |p: &Pod| {
        p.status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default()
    };
    // Every counted pod's life, from a watch (polling would miss pods that finish and go
    // between two looks once nodes are removed).
    let lives: Arc<std::sync::Mutex<BTreeMap<String, PodLife>>> = Arc::default();
    let counted: Arc<PodFilter> = Arc::new(s.counted);
    let watching = {
        use futures::StreamExt as _;
        use kube::runtime::watcher;
        let lives = lives.clone();
        let counted = counted.clone();
        let mut events = watcher(pods.clone(), watcher::Config::default()).boxed();
        tokio::spawn(async move {
            while let Some(event) = events.next().await {
                let (pod, gone) = match event {
                    Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => (p, false),
                    Ok(watcher::Event::Delete(p)) => (p, true),
                    _ => continue,
                };
                if !counted(&pod) {
                    continue;
                }
                let uid = pod.metadata.uid.clone().unwrap_or_default();
                let status = pod.status.clone().unwrap_or_default();
                let mut lives = lives.lock().unwrap_or_else(|e| e.into_inner());
                let life = lives.entry(uid).or_default();
                life.created = pod
                    .metadata
                    .creation_timestamp
                    .as_ref()
                    .map(|t| SystemTime::from(t.0));
                if let Some(t) = status.start_time.as_ref() {
                    life.started = Some(SystemTime::from(t.0));
                }
                if let Some(p) = status.phase {
                    life.phase = p;
                }
                life.gone |= gone;
            }
        })
    };
    let mut next = 0;
    let mut seen: BTreeMap<String, ClaimSeen> = BTreeMap::new();
    let mut peak: BTreeMap<String, StaticGroup> = BTreeMap::new();
    let mut samples: Vec<Sample> = Vec::new();
    let mut last_sample: Option<Instant> = None;
    let mut last_print: Option<Instant> = None;
    let interrupted = loop {
        let now = sim_now();
        let t = elapsed(now);
        // NB: an arrival at the window's end or later never happens (the summary says so).
        while next < s.arrivals.len()
            && s.arrivals[next].at <= t
            && s.arrivals[next].at < s.duration
        {
            writer.apply(&s.arrivals[next].action).await?;
            next += 1;
        }
        // Claims every pass (for cost and peaks), pods for the samples.
        let claims = claims_api.list(&ListParams::default()).await?;
        for c in seen.values_mut() {
            c.present = false;
        }
        for c in &claims.items {
            let l = c.metadata.labels.clone().unwrap_or_default();
            let get = |k: &str| l.get(k).cloned().unwrap_or_default();
            let name = c.metadata.name.clone().unwrap_or_default();
            let instance_type = get(labels::INSTANCE_TYPE);
            if instance_type.is_empty() {
                continue; // not launched yet
            }
            let pool = get(labels::NODE_POOL);
            let key = (
                instance_type.clone(),
                get(labels::TOPOLOGY_ZONE),
                get(labels::CAPACITY_TYPE),
            );
            let created = c
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| SystemTime::from(t.0))
                .unwrap_or(now);
            let entry = seen.entry(name).or_insert_with(|| ClaimSeen {
                pool,
                instance_type,
                zone: key.1.clone(),
                capacity_type: key.2.clone(),
                created,
                last_seen: now,
                present: true,
                price: price.get(&key).copied().unwrap_or_default(),
                method: None,
            });
            entry.last_seen = now;
            entry.present = true;
            if let Some(m) = c
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(labels::DISRUPTION_METHOD))
            {
                entry.method = Some(m.clone());
            }
            // NB: the zone label can arrive after the instance type's (the launch's status
            // write): price the claim once it is known.
            if entry.zone.is_empty() && !key.1.is_empty() {
                entry.zone = key.1.clone();
                entry.capacity_type = key.2.clone();
                entry.price = price.get(&key).copied().unwrap_or_default();
            }
        }
        let mut fleets: BTreeMap<&str, StaticGroup> = BTreeMap::new();
        for c in seen.values().filter(|c| c.present) {
            let f = fleets.entry(&c.pool).or_default();
            *f.nodes.entry(c.instance_type.clone()).or_default() += 1;
            f.per_hour += c.price;
        }
        for (pool, fleet) in fleets {
            let p = peak.entry(pool.to_owned()).or_default();
            if fleet.per_hour > p.per_hour {
                *p = StaticGroup {
                    pool: pool.to_owned(),
                    ..fleet
                };
            }
        }
        let done = t >= s.duration;
        if done || last_sample.is_none_or(|l| l.elapsed() >= Duration::from_millis(250)) {
            last_sample = Some(Instant::now());
            let list = pods.list(&ListParams::default()).await?;
            let counted = list.items.iter().filter(|p| counted(p));
            let (mut pending, mut running) = (0, 0);
            for p in counted {
                match phase(p).as_str() {
                    "Pending" => pending += 1,
                    "Running" => running += 1,
                    _ => {}
                }
            }
            let mut sample = Sample {
                t,
                pending,
                running,
                ..Sample::default()
            };
            for c in seen.values().filter(|c| c.present) {
                *sample.nodes.entry(c.instance_type.clone()).or_default() += 1;
                sample.per_hour += c.price;
            }
            if done || last_print.is_none_or(|l| l.elapsed() >= Duration::from_secs(2)) {
                last_print = Some(Instant::now());
                print_progress(&sample, s.progress_to_stderr);
            }
            samples.push(sample);
        }
        if done {
            break false;
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
            () = berth_service::shutdown_signal() => break true,
        }
    };
    let end = sim_now();
    let list = pods.list(&ListParams::default()).await?;
    // Let the watch catch up with the last changes before the cluster goes.
    tokio::time::sleep(Duration::from_millis(200)).await;
    watching.abort();
    stack.shutdown().await?;

    let mut outcome = Outcome {
        simulated: elapsed(end),
        interrupted,
        arrivals: next,
        samples,
        ..Outcome::default()
    };
    let lives = std::mem::take(&mut *lives.lock().unwrap_or_else(|e| e.into_inner()));
    drop(list);
    for life in lives.values() {
        outcome.pods_created += 1;
        if life.phase == "Succeeded" {
            outcome.pods_succeeded += 1;
        }
        match (life.created, life.started) {
            (Some(c), Some(s)) => {
                outcome.pods_started += 1;
                outcome
                    .waits
                    .push(s.duration_since(c).unwrap_or_default().as_secs_f64());
            }
            _ => outcome.pods_never_started += 1,
        }
        // Ran, and was killed (evicted, deleted with its node, failed) before it finished.
        if life.started.is_some()
            && (life.phase == "Failed" || (life.gone && life.phase != "Succeeded"))
        {
            outcome.pods_lost += 1;
        }
    }
    outcome.waits.sort_by(f64::total_cmp);
    for c in seen.values() {
        if !c.present {
            *outcome
                .nodes_removed
                .entry(c.method.clone().unwrap_or_else(|| "other".into()))
                .or_default() += 1;
        }
        let until = if c.present { end } else { c.last_seen };
        let hours = until
            .duration_since(c.created)
            .unwrap_or_default()
            .as_secs_f64()
            / 3600.0;
        outcome.cost += hours * c.price;
        *outcome
            .launched
            .entry((
                c.instance_type.clone(),
                c.zone.clone(),
                c.capacity_type.clone(),
            ))
            .or_default() += 1;
    }
    // The static alternative: each pool's fleet at its most expensive moment, all window long.
    let hours = outcome.simulated.as_secs_f64() / 3600.0;
    outcome.static_groups = peak.into_values().collect();
    outcome.static_cost = outcome
        .static_groups
        .iter()
        .map(|g| g.per_hour * hours)
        .sum();
    Ok(outcome)
}

fn print_progress(s: &Sample, to_stderr: bool) {
    let types: Vec<String> = s.nodes.iter().map(|(t, n)| format!("{t}×{n}")).collect();
    let line = format!(
        "[{}] pending {:>3}  running {:>3}  nodes {:<28} ${:.2}/h",
        hms(s.t),
        s.pending,
        s.running,
        if types.is_empty() {
            "-".to_owned()
        } else {
            types.join(" ")
        },
        s.per_hour,
    );
    if to_stderr {
        eprintln!("{line}");
    } else {
        println!("{line}");
    }
}

/// The final summary as JSON (`berth demo -o json`, `berth simulate -o json`).
pub fn summary_json(r: &Outcome) -> serde_json::Value {
    let launched: usize = r.launched.values().sum();
    let removed: usize = r.nodes_removed.values().sum();
    serde_json::json!({
        "simulatedSeconds": r.simulated.as_secs(),
        "interrupted": r.interrupted,
        "arrivals": r.arrivals,
        "podsCreated": r.pods_created,
        "podsRun": r.pods_started,
        "podsSucceeded": r.pods_succeeded,
        "podsNeverStarted": r.pods_never_started,
        "podsLost": r.pods_lost,
        "p50WaitSeconds": r.wait(0.5),
        "p95WaitSeconds": r.wait(0.95),
        "costUsd": r.cost,
        "staticCostUsd": r.static_cost,
        "costRatio": r.ratio(),
        "nodesLaunched": launched,
        "nodesRemoved": removed,
        "nodesRemovedBy": r.nodes_removed,
        "staticGroups": r.static_groups.iter().map(|g| serde_json::json!({
            "nodePool": g.pool,
            "nodes": g.nodes,
            "perHour": g.per_hour,
        })).collect::<Vec<_>>(),
    })
}

/// The summary both commands print.
pub fn print_summary(r: &Outcome, what: &str) {
    println!();
    if r.interrupted {
        println!("Interrupted: the report covers what ran so far.");
    }
    println!("Report ({} simulated)", hms(r.simulated));
    println!(
        "  {what} {}   pods {}   ran {}   finished {}   never started {}",
        r.arrivals, r.pods_created, r.pods_started, r.pods_succeeded, r.pods_never_started
    );
    println!(
        "  wait from pending to running: p50 {:.0} s, p95 {:.0} s, max {:.0} s",
        r.wait(0.5),
        r.wait(0.95),
        r.waits.last().copied().unwrap_or_default()
    );
    println!("  nodes launched:");
    for ((t, zone, ct), n) in &r.launched {
        println!("    {n:>3} × {t:<12} {zone:<12} {ct}");
    }
    let removed: Vec<String> = r
        .nodes_removed
        .iter()
        .map(|(why, n)| format!("{n} {why}"))
        .collect();
    println!(
        "  nodes removed: {} ({}); pods lost (killed before they finished): {}",
        r.nodes_removed.values().sum::<usize>(),
        if removed.is_empty() {
            "none".to_owned()
        } else {
            removed.join(", ")
        },
        r.pods_lost
    );
    println!("  Berth's cost: ${:.2}", r.cost);
    for g in &r.static_groups {
        println!(
            "  a static node group for {} sized for the peak: {} at ${:.4}/h for the whole window",
            g.pool,
            g.describe(),
            g.per_hour
        );
    }
    println!("  the static groups' cost: ${:.2}", r.static_cost);
    if let Some(ratio) = r.ratio() {
        println!(
            "  Berth / static = {:.2} ({}; the article's claim is < 0.50)",
            ratio,
            if ratio < 0.5 {
                "more than half cut"
            } else {
                "not more than half cut"
            }
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let v = [1.0, 2.0, 3.0, 4.0, 100.0];
        assert_eq!(percentile(&v, 0.5), 3.0);
        assert_eq!(percentile(&v, 0.95), 100.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }

    #[test]
    fn group_versions() {
        assert_eq!(group_version("v1"), ("", "v1"));
        assert_eq!(group_version("apps/v1"), ("apps", "v1"));
        assert_eq!(group_version("karpenter.sh/v1"), ("karpenter.sh", "v1"));
    }

    #[test]
    fn hms_formats() {
        assert_eq!(hms(Duration::from_secs(3723)), "01:02:03");
    }
}
