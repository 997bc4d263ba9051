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
    /// Print the final summary as JSON (progress to stderr).
    pub json: bool,
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

/// The team's working hours, in simulated time from the start (midnight).
pub const WORK_START: Duration = Duration::from_secs(8 * 3600);
pub const WORK_END: Duration = Duration::from_secs(18 * 3600);

/// A working day of CI: nothing at night; from 08:00 pipelines in bursts (one or two after a
/// merge, busier around midday), the last starting before 18:00 so every build finishes by
/// evening. A window shorter than a day is the same day cut short.
pub fn pipelines(duration: Duration, seed: u64) -> Vec<Pipeline> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut out = Vec::new();
    let end = WORK_END.min(duration.saturating_sub(Duration::from_secs(20 * 60)));
    let mut t = WORK_START.min(end) + Duration::from_secs(60 * rng.random_range(0..10));
    let mut n = 0;
    while t < end {
        let midday = t > Duration::from_secs(10 * 3600) && t < Duration::from_secs(16 * 3600);
        let burst = if midday { rng.random_range(1..=2) } else { 1 };
        for i in 0..burst {
            n += 1;
            out.push(Pipeline {
                at: t + Duration::from_secs(40 * i),
                name: format!("pipeline-{}", 1000 + n),
                pods: rng.random_range(4..=10),
                run_for: Duration::from_secs(60 * rng.random_range(4..=12)),
            });
        }
        let gap = if midday {
            rng.random_range(12..=25)
        } else {
            rng.random_range(20..=40)
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
                    // As a GitLab user configures the runner (`pod_annotations`): a running
                    // build is never disrupted; its node goes once it is empty.
                    "annotations": {
                        berth_sim::controllers::RUN_FOR_ANNOTATION: format!("{}s", p.run_for.as_secs()),
                        berth_scheduler_core::labels::DO_NOT_DISRUPT: "true",
                    },
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
    // NB: with -o json, stdout carries the JSON only.
    macro_rules! say {
        ($($t:tt)*) => {
            if o.json { eprintln!($($t)*) } else { println!($($t)*) }
        };
    }
    say!(
        "Berth demo: the seed article's GitLab CI story on a simulated cluster ({} simulated in about {:.0} s, {}× speed).",
        hms(o.duration),
        o.duration.as_secs_f64() / o.speed,
        o.speed
    );
    say!(
        "NodePools from the seed (v1beta1, converted): default-nodepool, {GITLAB_POOL} (t3.2xlarge on-demand, tainted; limits cpu 32, memory 64Gi: at most 2 nodes; WhenUnderutilized = WhenEmptyOrUnderutilized, consolidateAfter 0s)."
    );
    say!(
        "A working day: {} pipelines of 4-10 build pods (1 CPU, 2 GiB each, karpenter.sh/do-not-disrupt) between {} and {}; builds run 4-12 min; quiet nights.",
        plan.len(),
        hms(WORK_START),
        hms(WORK_END)
    );
    say!("");
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
        progress_to_stderr: o.json,
    })
    .await?;
    if o.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&crate::play::summary_json(&outcome))?
        );
        return Ok(());
    }
    print_summary(&outcome, "pipelines");
    println!();
    println!(
        "Nodes are removed once their builds finish (emptiness; the builds' do-not-disrupt keeps"
    );
    println!(
        "running ones safe), so Berth pays for the working day, not for a group sized for the peak"
    );
    println!(
        "all day. Pods that wait are held by the seed NodePool's limits (memory 64Gi = 2 × t3.2xlarge):"
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
        let day = Duration::from_secs(24 * 3600);
        let p = pipelines(day, 7);
        assert!(p.len() >= 20, "{}", p.len());
        assert_eq!(p, pipelines(day, 7), "the same seed, the same story");
        assert!(p.iter().all(|x| x.at >= WORK_START && x.at < WORK_END));
        assert!(p.iter().all(|x| (4..=10).contains(&x.pods)));
        assert!(p.windows(2).all(|w| w[0].at <= w[1].at));
        // Midday has bursts: two pipelines within a minute.
        assert!(
            p.windows(2)
                .any(|w| w[1].at - w[0].at <= Duration::from_secs(60))
        );
    }
}
