//! `berth demo`: the seed article's story, played on the simulated cluster with Berth's three
//! real services and the sim cloud. GitLab CI pipelines arrive in bursts (Jobs of build pods
//! shaped like the seed README's), run for a while, finish; Berth provisions for them. Time
//! is compressed (`--speed`, default 180×): the simulated cluster's clock runs fast, and
//! every delay Berth's services wait on the wall clock (boot, batching) is divided by the
//! speed. `crate::play` runs it and computes the report.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::Pod;
use rand::{Rng as _, SeedableRng as _};

use crate::play::{Action, Arrival, Scenario, hms, print_summary};

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

pub fn run(options: Options) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(play(options))
}

async fn play(o: Options) -> anyhow::Result<()> {
    crate::init_logs("error");
    let catalog = crate::read_catalog(o.catalog.as_deref())?;
    let mut manifests = Vec::new();
    for text in SEED {
        let value: serde_json::Value = serde_norway::from_str(text).context("a seed manifest")?;
        manifests.push(value);
    }
    manifests.push(serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "gitlab"}}));
    let plan = pipelines(o.duration, o.seed);
    println!(
        "Berth demo: the seed article's GitLab CI story on a simulated cluster ({} simulated in about {:.0} s, {}× speed).",
        hms(o.duration),
        o.duration.as_secs_f64() / o.speed,
        o.speed
    );
    println!(
        "NodePools from the seed (v1beta1, converted): default-nodepool, {GITLAB_POOL} (t3.2xlarge on-demand, tainted; limits cpu 32, memory 64Gi: at most 2 nodes)."
    );
    println!(
        "{} pipelines of 4-10 build pods (1 CPU, 2 GiB each) arrive in bursts; builds run 4-12 min.",
        plan.len()
    );
    println!();
    let outcome = crate::play::play(Scenario {
        manifests,
        arrivals: plan
            .iter()
            .map(|p| Arrival {
                at: p.at,
                action: Action::Create(job(p)),
            })
            .collect(),
        duration: o.duration,
        speed: o.speed,
        boot_delay: Duration::from_secs(45),
        kubeconfig: o.kubeconfig,
        catalog_path: o.catalog,
        catalog,
        counted: Box::new(|p: &Pod| p.metadata.namespace.as_deref() == Some("gitlab")),
    })
    .await?;
    print_summary(&outcome, "pipelines");
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
    Ok(())
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
}
