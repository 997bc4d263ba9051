//! `berth`: the user's command line.

mod demo;
mod plan;
mod play;
mod report;
mod sandbox;
mod simulate;
mod stack;

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use berth_api::convert::{self, V1Object};
use berth_api::manifest;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "berth",
    version,
    about = "Berth: a Karpenter-compatible Kubernetes node autoscaler"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Convert Karpenter v1beta1 manifests (NodePool, NodeClaim, EC2NodeClass) to v1 YAML.
    ///
    /// v1 objects pass through unchanged. Notes on changed behaviour go to stderr; invalid input
    /// is refused with the field path and exit code 1, and nothing is printed on stdout.
    Convert {
        /// Manifest files (multi-document YAML or JSON); `-` reads stdin.
        #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
        files: Vec<PathBuf>,
    },
    /// Check manifests against Karpenter's rules (v1beta1 is converted first).
    Validate {
        /// Manifest files (multi-document YAML or JSON); `-` reads stdin.
        #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
        files: Vec<PathBuf>,
    },
    /// Print the CustomResourceDefinitions Berth installs (NodePool, NodeClaim, EC2NodeClass).
    Crds,
    /// One scheduling decision, offline: what would Berth launch for these manifests, and what
    /// would disruption do with their Nodes?
    ///
    /// Reads NodePools and EC2NodeClasses (v1 or v1beta1), Pods, Deployments, ReplicaSets,
    /// StatefulSets and Jobs (expanded to their pods), DaemonSets, Nodes (existing capacity)
    /// and their NodeClaims, PodDisruptionBudgets, PersistentVolumeClaims and
    /// PersistentVolumes.
    Plan {
        /// Manifest files (multi-document YAML or JSON); `-` reads stdin.
        #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
        files: Vec<PathBuf>,
        /// Instance-type catalog (JSON, see docs/plan.md); default: the built-in us-east-1 one.
        #[arg(long, env = "BERTH_CATALOG")]
        catalog: Option<PathBuf>,
        /// Output format.
        #[arg(short = 'o', long = "output", default_value = "table", value_parser = ["table", "json", "yaml"])]
        output: String,
        /// The clock for disruption (RFC 3339, e.g. 2025-06-01T09:00:00Z): expiry, budgets'
        /// schedules and consolidateAfter; default: now.
        #[arg(long)]
        now: Option<String>,
    },
    /// Play the seed article's story: GitLab CI build pods on a tainted NodePool, in bursts.
    ///
    /// Runs the simulated cluster with Berth's watcher, scheduler and actuator (sim cloud),
    /// the seed's EC2NodeClass and NodePools (v1beta1, converted), then CI pipelines arriving
    /// in bursts; shows progress and ends with a report: pods run, waits, nodes by type, cost,
    /// and the cost of a static node group sized for the peak. Needs no set-up.
    Demo {
        /// Simulated seconds per wall second (the default plays a day in about a minute).
        #[arg(long, default_value_t = 1440.0, conflicts_with = "real_time")]
        speed: f64,
        /// Play at wall speed (same as --speed 1).
        #[arg(long)]
        real_time: bool,
        /// How long the story lasts, in simulated time (from midnight; CI runs 08:00–18:00).
        #[arg(long, default_value = "24h", value_parser = parse_duration)]
        duration: std::time::Duration,
        /// Seed of the pipelines' arrival times and sizes.
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// `table`: progress and a report; `json`: the final summary as JSON on stdout
        /// (progress on stderr).
        #[arg(short = 'o', long = "output", default_value = "table", value_parser = ["table", "json"])]
        output: String,
        /// Where to write the simulated cluster's kubeconfig (to look around while it runs).
        #[arg(long, default_value = "berth-demo.kubeconfig")]
        kubeconfig_out: PathBuf,
        /// Instance-type catalog of the sim cloud (JSON, see docs/plan.md).
        #[arg(long, env = "BERTH_CATALOG")]
        catalog: Option<PathBuf>,
    },
    /// What would Berth launch for your workloads, and what would it cost? Your manifests on
    /// the simulated cluster with Berth's three services, over a simulated window.
    ///
    /// Reads NodePools and EC2NodeClasses (v1 or v1beta1) and workloads (Pods, Deployments,
    /// StatefulSets, Jobs, DaemonSets, ...; files or directories). Workloads arrive on the
    /// schedule their annotations give (sim.berth.dev/arrive-at, repeat-every, replicas-at,
    /// run-for: docs/simulate.md), or at the start. Prints progress and a summary (pods, waits,
    /// nodes launched, cost against a static group sized for the peak) and, with --report,
    /// writes a self-contained HTML report with charts.
    Simulate {
        /// Manifest files or directories (YAML or JSON).
        #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
        files: Vec<PathBuf>,
        /// How long the simulated window lasts.
        #[arg(long, default_value = "1h", value_parser = parse_duration)]
        duration: std::time::Duration,
        /// Simulated seconds per wall second.
        #[arg(long, default_value_t = 120.0, conflicts_with = "real_time")]
        speed: f64,
        /// Play at wall speed (same as --speed 1).
        #[arg(long)]
        real_time: bool,
        /// From a NodeClaim's launch to its node registering (simulated).
        #[arg(long, default_value = "45s", value_parser = parse_duration)]
        boot_delay: std::time::Duration,
        /// Write an HTML report (charts of pods, nodes and $/h over time) here.
        #[arg(long)]
        report: Option<PathBuf>,
        /// `table`: progress and a summary; `json`: the final summary as JSON on stdout
        /// (progress on stderr).
        #[arg(short = 'o', long = "output", default_value = "table", value_parser = ["table", "json"])]
        output: String,
        /// Where to write the simulated cluster's kubeconfig (to look around while it runs).
        #[arg(long, default_value = "berth-simulate.kubeconfig")]
        kubeconfig_out: PathBuf,
        /// Instance-type catalog of the sim cloud (JSON, see docs/plan.md).
        #[arg(long, env = "BERTH_CATALOG")]
        catalog: Option<PathBuf>,
    },
    /// Start a simulated cluster with Berth's watcher, scheduler and actuator (sim cloud) and
    /// write its kubeconfig.
    ///
    /// The Kubernetes API server (in memory, on loopback), workload controllers, a
    /// kube-scheduler and kubelets that register a node for each launched NodeClaim; Berth's
    /// CRDs installed. Runs until Ctrl-C.
    Sandbox {
        /// Address of the API server (port 0: any free port).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: std::net::SocketAddr,
        /// Where to write the kubeconfig.
        #[arg(long, default_value = "berth-sandbox.kubeconfig")]
        kubeconfig_out: PathBuf,
        /// From a NodeClaim's launch to its node registering.
        #[arg(long, default_value = "45s", value_parser = parse_duration)]
        boot_delay: std::time::Duration,
        /// From a pod's binding to Running.
        #[arg(long, default_value = "2s", value_parser = parse_duration)]
        pod_start_delay: std::time::Duration,
        /// Manifests (files or directories) to create at start: any kinds the sandbox serves; v1beta1 Karpenter objects are converted.
        #[arg(short = 'f', long = "filename", num_args = 1..)]
        files: Vec<PathBuf>,
        /// Instance-type catalog of the sim cloud (JSON, see docs/plan.md).
        #[arg(long, env = "BERTH_CATALOG")]
        catalog: Option<PathBuf>,
    },
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    berth_sim::controllers::parse_duration(s)
        .ok_or_else(|| format!("{s:?} is not a duration like 45s, 2m or 500ms"))
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Convert { files } => Ok(convert_files(&files, true)?),
        Command::Validate { files } => Ok(convert_files(&files, false)?),
        Command::Sandbox {
            listen,
            kubeconfig_out,
            boot_delay,
            pod_start_delay,
            files,
            catalog,
        } => {
            sandbox::run(sandbox::Options {
                listen,
                kubeconfig: kubeconfig_out,
                boot_delay,
                pod_start_delay,
                files,
                catalog,
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo {
            speed,
            real_time,
            duration,
            seed,
            output,
            kubeconfig_out,
            catalog,
        } => {
            demo::run(demo::Options {
                speed: if real_time { 1.0 } else { speed },
                duration,
                seed,
                json: output == "json",
                kubeconfig: kubeconfig_out,
                catalog,
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Simulate {
            files,
            duration,
            speed,
            real_time,
            boot_delay,
            report,
            output,
            kubeconfig_out,
            catalog,
        } => {
            simulate::run(simulate::Options {
                files,
                duration,
                speed: if real_time { 1.0 } else { speed },
                boot_delay,
                report,
                json: output == "json",
                kubeconfig: kubeconfig_out,
                catalog,
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Crds => {
            print!("{}", berth_api::crds::all_yaml());
            Ok(ExitCode::SUCCESS)
        }
        Command::Plan {
            files,
            catalog,
            output,
            now,
        } => {
            let now = match now {
                Some(now) => plan::parse_now(&now)?,
                None => std::time::SystemTime::now(),
            };
            let catalog = read_catalog(catalog.as_deref())?;
            let inputs = files
                .iter()
                .map(|path| {
                    Ok((
                        if path.as_os_str() == "-" {
                            "<stdin>".to_owned()
                        } else {
                            path.display().to_string()
                        },
                        read(path)?,
                    ))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            print!("{}", plan::run(&inputs, &catalog, &output, now)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Logs of the services running in this process go to stderr, at `BERTH_LOG` or `default`.
pub fn init_logs(default: &str) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BERTH_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default)),
        )
        .with_writer(std::io::stderr)
        .try_init();
}

/// The catalog at `path` (`--catalog`), or the built-in one.
pub fn read_catalog(path: Option<&std::path::Path>) -> anyhow::Result<berth_catalog::Catalog> {
    match path {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("--catalog {}", path.display()))?;
            berth_catalog::Catalog::parse(&text)
                .with_context(|| format!("--catalog {}", path.display()))
        }
        None => Ok(berth_catalog::Catalog::builtin()),
    }
}

fn read(path: &PathBuf) -> anyhow::Result<String> {
    if path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading stdin")?;
        Ok(text)
    } else {
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
    }
}

/// Reads, converts and validates every file; prints the v1 YAML when `print` is set.
/// All files are checked before anything is printed, so output is all-or-nothing.
fn convert_files(files: &[PathBuf], print: bool) -> anyhow::Result<ExitCode> {
    let mut manifests = Vec::new();
    let mut failed = false;
    for path in files {
        match manifest::parse_all(&read(path)?) {
            Ok(mut m) => manifests.append(&mut m),
            Err(errors) => {
                failed = true;
                let name = if path.as_os_str() == "-" {
                    "<stdin>".into()
                } else {
                    path.display().to_string()
                };
                for e in errors {
                    eprintln!("error: {name}: {e}");
                }
            }
        }
    }
    if failed {
        return Ok(ExitCode::FAILURE);
    }
    let converted = match convert::to_v1(manifests) {
        Ok(c) => c,
        Err(errors) => {
            for e in errors {
                eprintln!("error: {e}");
            }
            return Ok(ExitCode::FAILURE);
        }
    };
    for note in &converted.notes {
        eprintln!("note: {note}");
    }
    if print {
        let docs: Vec<String> = converted.objects.iter().map(V1Object::to_yaml).collect();
        print!("---\n{}", docs.join("---\n"));
    } else {
        for o in &converted.objects {
            println!("{}: valid", o.describe());
        }
    }
    Ok(ExitCode::SUCCESS)
}
