//! `berth demo`: the seed article's story, played on the simulated cluster with Berth's three
//! real services and the sim cloud. GitLab CI pipelines arrive in bursts (Jobs of build pods
//! shaped like the seed README's), run for a while, finish; Berth provisions for them. Time
//! is compressed (`--speed`, default 180×): the simulated cluster's clock runs fast, and
//! every delay Berth's services wait on the wall clock (boot, batching) is divided by the
//! speed. The report is computed from the cluster's own objects (pod creation and start
//! times, NodeClaims and their labels), priced with the sim cloud's catalog.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use berth_scheduler_core::labels;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, PostParams};
use rand::{Rng as _, SeedableRng as _};

use crate::stack::{Stack, StackOptions};

/// The seed's manifests, the repo's own copies (v1beta1 as the article wrote them; the API
/// server converts them to karpenter.sh/v1 on the way in).
const SEED: &[&str] = &[
    include_str!("../../api/tests/fixtures/seed/ec2nodeclass-default.v1beta1.yaml"),
    include_str!("../../api/tests/fixtures/seed/nodepool-default.v1beta1.yaml"),
    include_str!("../../api/tests/fixtures/seed/nodepool-gitlab.v1beta1.yaml"),
];

/// The GitLab NodePool's name in the seed.
const GITLAB_POOL: &str = "gitlab-auto-nodepool";

#[derive(Debug, Clone)]
pub struct Options {
    /// Simulated seconds per wall second.
    pub speed: f64,
    /// Simulated length of the story.
    pub duration: Duration,
    pub seed: u64,
    pub kubeconfig: PathBuf,
    pub catalog: Option<PathBuf>,
}

/// One CI pipeline: a Job of `pods` build pods, each running `run_for`.
#[derive(Debug, Clone, PartialEq)]
pub struct Pipeline {
    /// Simulated time after the start.
    pub at: Duration,
    pub name: String,
    pub pods: u32,
    pub run_for: Duration,
}

/// Pipelines in bursts, like a working team's CI: a quiet start, a busy middle (several
/// pipelines close together after merges), a quiet end; nothing starts in the last 20 minutes
/// so most builds finish inside the window.
pub fn pipelines(duration: Duration, seed: u64) -> Vec<Pipeline> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut out = Vec::new();
    let end = duration.saturating_sub(Duration::from_secs(20 * 60));
    let mut t = Duration::from_secs(60);
    let mut n = 0;
    while t < end {
        let busy = t > duration / 4 && t < duration * 3 / 4;
        // A burst: 1-3 pipelines within a minute or two.
        let burst = if busy { rng.random_range(2..=3) } else { 1 };
        for i in 0..burst {
            n += 1;
            out.push(Pipeline {
                at: t + Duration::from_secs(40 * i),
                name: format!("pipeline-{}", 1000 + n),
                pods: rng.random_range(4..=10),
                run_for: Duration::from_secs(60 * rng.random_range(4..=12)),
            });
        }
        let gap = if busy {
            rng.random_range(6..=12)
        } else {
            rng.random_range(12..=20)
        };
        t += Duration::from_secs(60 * gap);
    }
    out
}

fn job(p: &Pipeline) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": p.name, "namespace": "gitlab"},
        "spec": {
            "parallelism": p.pods,
            "completions": p.pods,
            "template": {
                "metadata": {
                    "labels": {"app": "gitlab-runner-build", "pipeline": p.name},
                    "annotations": {berth_sim::controllers::RUN_FOR_ANNOTATION: format!("{}s", p.run_for.as_secs())},
                },
                "spec": {
                    "restartPolicy": "Never",
                    "nodeSelector": {"workload-type": "gitlab-runners-auto"},
                    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "gitlab-runner-auto", "effect": "NoSchedule"}],
                    "containers": [{"name": "build", "image": "ubuntu:20.04", "resources": {"requests": {"cpu": "1", "memory": "2Gi"}}}],
                },
            },
        },
    })
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
    price: f64,
}

/// The run's outcome.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub simulated: Duration,
    pub pipelines: usize,
    pub pods_created: usize,
    pub pods_succeeded: usize,
    pub pods_started: usize,
    pub pods_never_started: usize,
    /// Seconds from creation to start, sorted.
    pub waits: Vec<f64>,
    pub launched: BTreeMap<(String, String, String), usize>,
    pub cost: f64,
    pub peak_nodes: BTreeMap<String, usize>,
    /// (pool, instance type, nodes, $/h each): the static group sized for Berth's peak.
    pub static_groups: Vec<(String, String, usize, f64)>,
    pub static_cost: f64,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn hms(d: Duration) -> String {
    let s = d.as_secs();
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

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

pub fn run(options: Options) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(play(options))
}

async fn play(o: Options) -> anyhow::Result<()> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BERTH_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    anyhow::ensure!(
        o.speed >= 1.0 && o.speed.is_finite(),
        "--speed must be at least 1"
    );
    let catalog = match &o.catalog {
        Some(path) => berth_catalog::Catalog::parse(
            &std::fs::read_to_string(path)
                .with_context(|| format!("--catalog {}", path.display()))?,
        )
        .with_context(|| format!("--catalog {}", path.display()))?,
        None => berth_catalog::Catalog::builtin(),
    };
    let price = prices(&catalog);
    let mut manifests = Vec::new();
    for text in SEED {
        let value: serde_json::Value = serde_norway::from_str(text).context("a seed manifest")?;
        manifests.push(value);
    }
    manifests.push(serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "gitlab"}}));

    let speed = o.speed;
    let start_wall = Instant::now();
    let start_sim = SystemTime::now();
    let clock: crate::stack::Clock =
        Arc::new(move || start_sim + start_wall.elapsed().mul_f64(speed));
    let sim_now = clock.clone();
    let wall = |sim: Duration| sim.div_f64(speed);
    let stack = Stack::start(StackOptions {
        listen: "127.0.0.1:0".parse()?,
        kubeconfig: o.kubeconfig.clone(),
        clock,
        boot_delay: Duration::from_secs(45),
        pod_start_delay: Duration::from_secs(2),
        sim_cloud_boot_delay: wall(Duration::from_secs(45)),
        batch_idle: wall(Duration::from_secs(1)),
        batch_max: wall(Duration::from_secs(10)),
        coalesce: wall(Duration::from_secs(1)).min(Duration::from_millis(50)),
        catalog: o.catalog.clone(),
        manifests,
    })
    .await?;
    let client = berth_service::kube_client(Some(&o.kubeconfig)).await?;
    let plan = pipelines(o.duration, o.seed);
    println!(
        "Berth demo: the seed article's GitLab CI story on a simulated cluster ({} simulated in about {:.0} s, {}× speed).",
        hms(o.duration),
        o.duration.as_secs_f64() / speed,
        speed
    );
    println!(
        "NodePools from the seed (v1beta1, converted): default-nodepool, {GITLAB_POOL} (t3.2xlarge on-demand, tainted; limits cpu 32, memory 64Gi: at most 2 nodes)."
    );
    println!(
        "{} pipelines of 4-10 build pods (1 CPU, 2 GiB each) arrive in bursts; builds run 4-12 min.",
        plan.len()
    );
    println!();

    let jobs: Api<k8s_openapi::api::batch::v1::Job> = Api::namespaced(client.clone(), "gitlab");
    let pods: Api<Pod> = Api::all(client.clone());
    let claims_api: Api<berth_api::v1::NodeClaim> = Api::all(client.clone());
    let elapsed = |now: SystemTime| now.duration_since(start_sim).unwrap_or_default();
    let mut next = 0;
    let mut seen: BTreeMap<String, ClaimSeen> = BTreeMap::new();
    let mut peak: BTreeMap<String, usize> = BTreeMap::new();
    let mut last_print = Instant::now() - Duration::from_secs(10);
    let interrupted = loop {
        let now = sim_now();
        let t = elapsed(now);
        while next < plan.len() && plan[next].at <= t {
            let value = job(&plan[next]);
            let obj: k8s_openapi::api::batch::v1::Job = serde_json::from_value(value)?;
            jobs.create(&PostParams::default(), &obj)
                .await
                .with_context(|| format!("creating {}", plan[next].name))?;
            next += 1;
        }
        // Sample the cluster: claims (for cost and peaks) and pods (for progress).
        let claims = claims_api.list(&ListParams::default()).await?;
        let mut by_pool: BTreeMap<String, usize> = BTreeMap::new();
        for c in &claims.items {
            let l = c.metadata.labels.clone().unwrap_or_default();
            let get = |k: &str| l.get(k).cloned().unwrap_or_default();
            let name = c.metadata.name.clone().unwrap_or_default();
            let instance_type = get(labels::INSTANCE_TYPE);
            if instance_type.is_empty() {
                continue; // not launched yet
            }
            let pool = get(labels::NODE_POOL);
            *by_pool.entry(pool.clone()).or_default() += 1;
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
                price: price.get(&key).copied().unwrap_or_default(),
            });
            entry.last_seen = now;
        }
        for (pool, n) in by_pool {
            let p = peak.entry(pool).or_default();
            *p = (*p).max(n);
        }
        if last_print.elapsed() >= Duration::from_secs(2) || t >= o.duration {
            last_print = Instant::now();
            let list = pods.list(&ListParams::default()).await?;
            let phase = |p: &Pod| {
                p.status
                    .as_ref()
                    .and_then(|s| s.phase.clone())
                    .unwrap_or_default()
            };
            let pending = list.items.iter().filter(|p| phase(p) == "Pending").count();
            let running = list.items.iter().filter(|p| phase(p) == "Running").count();
            let mut types: BTreeMap<&str, usize> = BTreeMap::new();
            let mut per_hour = 0.0;
            for c in seen.values().filter(|c| c.last_seen == now) {
                *types.entry(&c.instance_type).or_default() += 1;
                per_hour += c.price;
            }
            let types: Vec<String> = types.iter().map(|(t, n)| format!("{t}×{n}")).collect();
            println!(
                "[{}] pending {pending:>3}  running {running:>3}  nodes {:<28} ${per_hour:.2}/h",
                hms(t),
                if types.is_empty() {
                    "-".to_owned()
                } else {
                    types.join(" ")
                },
            );
        }
        if t >= o.duration {
            break false;
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
            () = berth_service::shutdown_signal() => break true,
        }
    };
    let end = sim_now();
    let list = pods.list(&ListParams::default()).await?;
    stack.shutdown().await?;

    let mut report = Report {
        simulated: elapsed(end),
        pipelines: next,
        peak_nodes: peak,
        ..Report::default()
    };
    for p in &list.items {
        if p.metadata.namespace.as_deref() != Some("gitlab") {
            continue;
        }
        report.pods_created += 1;
        let status = p.status.clone().unwrap_or_default();
        if status.phase.as_deref() == Some("Succeeded") {
            report.pods_succeeded += 1;
        }
        let created = p
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| SystemTime::from(t.0));
        match (
            created,
            status.start_time.as_ref().map(|t| SystemTime::from(t.0)),
        ) {
            (Some(c), Some(s)) => {
                report.pods_started += 1;
                report
                    .waits
                    .push(s.duration_since(c).unwrap_or_default().as_secs_f64());
            }
            _ => report.pods_never_started += 1,
        }
    }
    report.waits.sort_by(f64::total_cmp);
    for c in seen.values() {
        let hours = end
            .duration_since(c.created)
            .unwrap_or_default()
            .as_secs_f64()
            / 3600.0;
        report.cost += hours * c.price;
        *report
            .launched
            .entry((
                c.instance_type.clone(),
                c.zone.clone(),
                c.capacity_type.clone(),
            ))
            .or_default() += 1;
    }
    // The static alternative: per pool, Berth's peak node count of its most used type, at
    // that type's cheapest price Berth paid, for the whole window.
    let hours = report.simulated.as_secs_f64() / 3600.0;
    for (pool, n) in &report.peak_nodes {
        let mut by_type: BTreeMap<&str, (usize, f64)> = BTreeMap::new();
        for c in seen.values().filter(|c| &c.pool == pool) {
            let e = by_type.entry(&c.instance_type).or_insert((0, f64::MAX));
            e.0 += 1;
            e.1 = e.1.min(c.price);
        }
        if let Some((t, (_, p))) = by_type.iter().max_by_key(|(_, (count, _))| *count) {
            report
                .static_groups
                .push((pool.clone(), (*t).to_owned(), *n, *p));
            report.static_cost += *n as f64 * p * hours;
        }
    }
    print_report(&report, interrupted);
    Ok(())
}

fn print_report(r: &Report, interrupted: bool) {
    println!();
    if interrupted {
        println!("Interrupted: the report covers what ran so far.");
    }
    println!("Report ({} simulated)", hms(r.simulated));
    println!(
        "  pipelines {}   build pods {}   ran {}   finished {}   never started {}",
        r.pipelines, r.pods_created, r.pods_started, r.pods_succeeded, r.pods_never_started
    );
    println!(
        "  wait from pending to running: p50 {:.0} s, p95 {:.0} s, max {:.0} s",
        percentile(&r.waits, 0.5),
        percentile(&r.waits, 0.95),
        r.waits.last().copied().unwrap_or_default()
    );
    println!("  nodes launched:");
    for ((t, zone, ct), n) in &r.launched {
        println!("    {n:>3} × {t:<12} {zone:<12} {ct}");
    }
    println!("  Berth's cost: ${:.2}", r.cost);
    for (pool, t, n, p) in &r.static_groups {
        println!(
            "  a static node group for {pool} sized for the peak: {n} × {t} at ${p:.4}/h for the whole window"
        );
    }
    println!("  the static groups' cost: ${:.2}", r.static_cost);
    if r.static_cost > 0.0 {
        let ratio = r.cost / r.static_cost;
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
    println!();
    println!(
        "Note: nodes are never removed yet (consolidation and expiry arrive with the disruption"
    );
    println!(
        "work), so Berth pays for every node it launched until the end. The article's saving comes"
    );
    println!("from removing nodes once builds finish: this run shows provisioning only.");
    println!(
        "Pods that wait long are held by the seed NodePool's limits (memory 64Gi = 2 × t3.2xlarge):"
    );
    println!("their FailedProvisioning events say so (kubectl get events -n gitlab).");
    println!(
        "Time is compressed: gRPC and API latencies (milliseconds of wall time) count as seconds of"
    );
    println!("simulated time in the waits above; --real-time plays it at wall speed.");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipelines_come_in_bursts_and_stop_before_the_end() {
        let two_hours = Duration::from_secs(7200);
        let p = pipelines(two_hours, 7);
        assert!(p.len() >= 8, "{}", p.len());
        assert_eq!(p, pipelines(two_hours, 7), "the same seed, the same story");
        assert!(
            p.iter()
                .all(|x| x.at <= two_hours - Duration::from_secs(20 * 60))
        );
        assert!(p.iter().all(|x| (4..=10).contains(&x.pods)));
        assert!(p.windows(2).all(|w| w[0].at <= w[1].at));
        // The busy middle has bursts: two pipelines within a minute.
        assert!(
            p.windows(2)
                .any(|w| w[1].at - w[0].at <= Duration::from_secs(60))
        );
    }

    #[test]
    fn percentiles() {
        let v = [1.0, 2.0, 3.0, 4.0, 100.0];
        assert_eq!(percentile(&v, 0.5), 3.0);
        assert_eq!(percentile(&v, 0.95), 100.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }
}
