//! `berth sandbox`: the simulated cluster (API server, control plane, kubelets) with Berth's
//! actuator (sim cloud) running against it over real HTTP and gRPC on loopback, until Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;

use crate::stack::{Stack, StackOptions};

/// How the sandbox is set up.
#[derive(Debug, Clone)]
pub struct Options {
    pub listen: SocketAddr,
    pub kubeconfig: PathBuf,
    pub boot_delay: Duration,
    pub pod_start_delay: Duration,
    pub files: Vec<PathBuf>,
    pub catalog: Option<PathBuf>,
}

/// The files given, a directory standing for its `.yaml`, `.yml` and `.json` files (sorted).
fn expand(files: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for f in files {
        if f.is_dir() {
            let mut inside: Vec<PathBuf> = std::fs::read_dir(f)
                .with_context(|| f.display().to_string())?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.extension()
                        .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
                })
                .collect();
            inside.sort();
            out.extend(inside);
        } else {
            out.push(f.clone());
        }
    }
    Ok(out)
}

/// The objects of manifest files, in order, as JSON.
pub fn read_manifests(files: &[PathBuf]) -> anyhow::Result<Vec<serde_json::Value>> {
    let mut out = Vec::new();
    for file in &expand(files)? {
        let text = std::fs::read_to_string(file).with_context(|| file.display().to_string())?;
        for (i, doc) in serde_norway::Deserializer::from_str(&text).enumerate() {
            let value = serde_json::Value::deserialize(doc)
                .with_context(|| format!("{}: document {}", file.display(), i + 1))?;
            if value.is_null() {
                continue;
            }
            out.push(value);
        }
    }
    Ok(out)
}

use serde::Deserialize as _;

/// Runs the sandbox until Ctrl-C (or SIGTERM).
pub fn run(options: Options) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve(options))
}

async fn serve(options: Options) -> anyhow::Result<()> {
    crate::init_logs("warn");
    // Read everything first: a bad file stops the sandbox before anything starts.
    let manifests = read_manifests(&options.files)?;
    let stack = Stack::start(StackOptions {
        listen: options.listen,
        kubeconfig: options.kubeconfig.clone(),
        clock: Arc::new(SystemTime::now),
        boot_delay: options.boot_delay,
        pod_start_delay: options.pod_start_delay,
        tick: berth_sim::controllers::ClusterOptions::default().tick,
        sim_cloud_boot_delay: options.boot_delay,
        batch_idle: Duration::from_secs(1),
        batch_max: Duration::from_secs(10),
        sim_cloud_termination_delay: Duration::from_secs(30),
        disruption_interval: Duration::from_secs(10),
        disruption_validation: Duration::from_secs(15),
        coalesce: Duration::from_millis(50),
        actuator_deadlines: crate::stack::ActuatorDeadlines::WALL,
        catalog: options.catalog.clone(),
        manifests,
    })
    .await?;
    let kubeconfig = options.kubeconfig.display().to_string();
    println!("Berth sandbox: a simulated Kubernetes cluster with Berth's watcher, scheduler and");
    println!("actuator (sim cloud).");
    println!();
    println!("  API server   {}", stack.url);
    println!("  kubeconfig   {kubeconfig}");
    println!(
        "  actuator     gRPC {}, metrics http://{}/metrics",
        stack.actuator.grpc_addr, stack.actuator.admin_addr
    );
    println!(
        "  scheduler    gRPC {}, metrics http://{}/metrics",
        stack.scheduler.grpc_addr, stack.scheduler.admin_addr
    );
    println!(
        "  watcher      metrics http://{}/metrics",
        stack.watcher.admin_addr
    );
    println!();
    println!("Try:");
    println!("  export KUBECONFIG={kubeconfig}");
    println!(
        "  kubectl apply -f examples/gitlab/   # the seed's EC2NodeClass, NodePools and build pods"
    );
    println!("  kubectl get nodepools,ec2nodeclasses");
    println!(
        "  kubectl create deployment web --image nginx --replicas 3 --dry-run=client -o yaml | kubectl apply -f -"
    );
    println!("  kubectl get pods,nodeclaims,nodes -w");
    println!("  kubectl get events --field-selector reason=Nominated");
    println!();
    println!("Empty nodes are removed after consolidateAfter; see docs/disruption.md.");
    println!("Ctrl-C stops everything.");
    println!("sandbox ready");

    berth_service::shutdown_signal().await;
    eprintln!("stopping");
    stack.shutdown().await
}
