//! `berth-bench`: the scheduler core's benchmarks (see `docs/benchmarks.md`).
//!
//! Prints figures; asserts nothing. Run from a release build:
//! `cargo run --release -p berth-scheduler-bench -- karpenter-mix --pods 20000 --runs 5`.

mod lp;
mod workloads;

use std::time::Instant;

use berth_scheduler_core::solver::{self, SchedulingInput};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "berth-bench",
    about = "Benchmarks of Berth's scheduler core against the LP lower bound"
)]
struct Args {
    #[command(subcommand)]
    workload: Workload,
    /// Solve this many times and report the median wall time.
    #[arg(long, default_value_t = 5, env = "BERTH_BENCH_RUNS", global = true)]
    runs: usize,
    /// Seed of the workload generator.
    #[arg(long, default_value_t = 42, env = "BERTH_BENCH_SEED", global = true)]
    seed: u64,
}

#[derive(Debug, Subcommand)]
enum Workload {
    /// Karpenter's scheduling benchmark workload (400 synthetic types, five pod shapes).
    KarpenterMix {
        #[arg(long, default_value_t = 1000)]
        pods: usize,
    },
}

fn main() -> anyhow::Result<()> {
    let Args {
        workload,
        runs,
        seed,
    } = Args::parse();
    match workload {
        Workload::KarpenterMix { pods } => {
            let full = workloads::karpenter_mix(pods, seed);
            report(&format!("karpenter-mix {pods}"), &full, runs)?;
            let generic = workloads::karpenter_mix_generic_only(pods, seed);
            report(
                &format!("karpenter-mix {pods} (generic part only)"),
                &generic,
                runs,
            )?;
        }
    }
    Ok(())
}

fn report(name: &str, input: &SchedulingInput, runs: usize) -> anyhow::Result<()> {
    let mut times = Vec::new();
    let mut plan = None;
    for _ in 0..runs.max(1) {
        let started = Instant::now();
        let p = solver::solve(input);
        times.push(started.elapsed().as_secs_f64());
        plan = Some(p);
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let plan = plan.expect("at least one run");
    let bound = lp::lower_bound(input, &plan)?;
    let scheduled = plan.stats.pods - plan.stats.unschedulable;
    println!(
        "{name}: pods {} scheduled {scheduled} nodes {} classes {} | median {:.3}s over {} runs ({:.0} pods/s) | cost ${:.2}/h bound ${:.2}/h ratio {:.3}",
        plan.stats.pods,
        plan.new_node_claims.len(),
        plan.stats.classes,
        median,
        times.len(),
        plan.stats.pods as f64 / median,
        plan.stats.new_price,
        bound,
        plan.stats.new_price / bound,
    );
    if let Some(u) = plan.unschedulable.first() {
        println!("  first unschedulable: {} — {}", u.pod, u.reason);
    }
    Ok(())
}
