//! `berth-bench`: the scheduler core's benchmarks (see `docs/benchmarks.md`).
//!
//! Prints figures; asserts nothing. Run from a release build:
//! `cargo run --release -p berth-scheduler-bench -- karpenter-mix --pods 20000 --runs 5`.

mod consolidation;
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
    /// 200 Deployments on the real EC2 catalog (built in, or --catalog FILE).
    CatalogMix {
        #[arg(long, default_value_t = 10_000)]
        pods: usize,
        /// A catalog in `berth plan`'s format, e.g. ../shared/data/ec2-catalog-us-east-1.json.
        #[arg(long)]
        catalog: Option<std::path::PathBuf>,
    },
    /// One disruption evaluation over a shrunk catalog-mix cluster of N nodes; with
    /// `--rounds`, decisions applied one after another as the cluster would carry them out.
    Consolidation {
        #[arg(long, default_value_t = 2000)]
        nodes: usize,
        /// A catalog in `berth plan`'s format, e.g. ../shared/data/ec2-catalog-us-east-1.json.
        #[arg(long)]
        catalog: Option<std::path::PathBuf>,
        /// Evaluate and apply up to this many decisions in a row (1: the single evaluation).
        #[arg(long, default_value_t = 1)]
        rounds: usize,
        /// Each node keeps a uniform share of its pods between this and 1.
        #[arg(long, default_value_t = 0.10)]
        keep_min: f64,
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
        Workload::CatalogMix { pods, catalog } => {
            let (name, catalog) = load_catalog(catalog)?;
            let input = workloads::catalog_mix(pods, seed, &catalog);
            report(
                &format!("catalog-mix {pods} ({name} catalog)"),
                &input,
                runs,
            )?;
        }
        Workload::Consolidation {
            nodes,
            catalog,
            rounds,
            keep_min,
        } => {
            let (name, catalog) = load_catalog(catalog)?;
            consolidation_report(nodes, keep_min, seed, &name, &catalog, runs, rounds)?;
        }
    }
    Ok(())
}

fn load_catalog(
    path: Option<std::path::PathBuf>,
) -> anyhow::Result<(String, berth_catalog::Catalog)> {
    Ok(match path {
        Some(path) => (
            path.display().to_string(),
            berth_catalog::Catalog::parse(&std::fs::read_to_string(&path)?)?,
        ),
        None => ("built-in".to_owned(), berth_catalog::Catalog::builtin()),
    })
}

fn consolidation_report(
    nodes: usize,
    keep_min: f64,
    seed: u64,
    catalog_name: &str,
    catalog: &berth_catalog::Catalog,
    runs: usize,
    rounds: usize,
) -> anyhow::Result<()> {
    use berth_scheduler_core::disruption;
    let started = Instant::now();
    let mut input = consolidation::cluster(nodes, keep_min, seed, catalog);
    let pods: usize = input
        .cluster
        .nodes
        .iter()
        .map(|n| {
            n.pods
                .iter()
                .filter(|p| disruption::reschedulable(p))
                .count()
        })
        .sum();
    let price = consolidation::price(&input);
    let repack = consolidation::repack_input(&input);
    let fresh = solver::solve(&repack);
    let bound = lp::lower_bound(&repack, &fresh)?;
    println!(
        "consolidation {nodes} nodes ({catalog_name} catalog): pods {pods} | cluster ${price:.2}/h, \
         repacked from scratch ${:.2}/h on {} nodes, LP bound ${bound:.2}/h | built in {:.1}s",
        fresh.stats.new_price,
        fresh.new_node_claims.len(),
        started.elapsed().as_secs_f64()
    );
    let mut times = Vec::new();
    let mut plan = None;
    for _ in 0..runs.max(1) {
        let t = Instant::now();
        let p = disruption::decide(&input);
        times.push(t.elapsed().as_secs_f64());
        plan = Some(p);
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let plan = plan.expect("at least one run");
    let possible = price - bound;
    match &plan.decision {
        Some(d) => println!(
            "  one evaluation: median {median:.3}s over {} runs, {} simulations{} | {} of {} nodes ({} new) saving ${:.2}/h = {:.1}% of the ${possible:.2}/h above the bound | eligible {} blocked {}",
            times.len(),
            plan.stats.simulations,
            if plan.stats.timed_out {
                " (timed out)"
            } else {
                ""
            },
            d.method.as_str(),
            d.candidates.len(),
            d.replacements.len(),
            d.savings_per_hour,
            100.0 * d.savings_per_hour / possible,
            plan.stats.eligible,
            plan.blocked.len(),
        ),
        None => println!(
            "  one evaluation: median {median:.3}s over {} runs, {} simulations{} | no decision | eligible {} blocked {}",
            times.len(),
            plan.stats.simulations,
            if plan.stats.timed_out {
                " (timed out)"
            } else {
                ""
            },
            plan.stats.eligible,
            plan.blocked.len(),
        ),
    }
    if rounds <= 1 {
        return Ok(());
    }
    // Decisions one after another, each applied before the next evaluation.
    let mut total = 0.0f64;
    let mut slowest = 0.0f64;
    let mut done = 0;
    let mut removed = 0;
    let mut launched = 0;
    for round in 0..rounds {
        let t = Instant::now();
        let p = disruption::decide(&input);
        let took = t.elapsed().as_secs_f64();
        total += took;
        slowest = slowest.max(took);
        let Some(d) = p.decision else {
            println!(
                "  the evaluation that found nothing more: {took:.3}s, {} simulations{}",
                p.stats.simulations,
                if p.stats.timed_out {
                    " (timed out)"
                } else {
                    ""
                }
            );
            break;
        };
        removed += d.candidates.len();
        launched += d.replacements.len();
        consolidation::apply(&mut input, &d, round);
        done += 1;
    }
    let after = consolidation::price(&input);
    println!(
        "  {done} decisions applied in a row: {removed} nodes removed, {launched} launched | cluster ${price:.2}/h -> ${after:.2}/h ({:.3} x bound; {:.1}% of the possible saving) | evaluation total {total:.1}s, slowest {slowest:.3}s",
        after / bound,
        100.0 * (price - after) / possible,
    );
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
    if std::env::var_os("BERTH_BENCH_VERBOSE").is_some() {
        for c in &plan.new_node_claims {
            let it = input
                .node_pools
                .iter()
                .flat_map(|p| &p.instance_types)
                .find(|t| Some(&t.name) == c.instance_types.first().map(|o| &o.name));
            let alloc = it.map(|t| t.allocatable()).unwrap_or_default();
            println!(
                "  {:<16} ${:<8.4} pods {:>5} cpu {:>7.1}/{:<7.1} mem {:>7.1}/{:<7.1} GiB options {}",
                c.instance_types.first().map_or("", |o| o.name.as_str()),
                c.price,
                c.pods.len(),
                c.requests.get("cpu") as f64 / 1000.0,
                alloc.get("cpu") as f64 / 1000.0,
                c.requests.get("memory") as f64 / 1000.0 / (1u64 << 30) as f64,
                alloc.get("memory") as f64 / 1000.0 / (1u64 << 30) as f64,
                c.instance_types.len()
            );
        }
    }
    if let Some(u) = plan.unschedulable.first() {
        println!("  first unschedulable: {} — {}", u.pod, u.reason);
    }
    Ok(())
}
