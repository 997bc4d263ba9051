//! `berth sandbox`: the simulated cluster (API server, control plane, kubelets) with Berth's
//! actuator (sim cloud) running against it over real HTTP and gRPC on loopback, until Ctrl-C.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use berth_sim::controllers::{ClusterOptions, Controllers};
use berth_sim::server::ApiServer;
use berth_sim::store::Store;
use clap::Parser as _;

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
fn read_manifests(files: &[PathBuf]) -> anyhow::Result<Vec<serde_json::Value>> {
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

fn write_kubeconfig(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("--kubeconfig-out {}", path.display()))
}

/// Runs the sandbox until Ctrl-C (or SIGTERM).
pub fn run(options: Options) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve(options))
}

async fn serve(options: Options) -> anyhow::Result<()> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BERTH_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    // Read everything first: a bad file stops the sandbox before anything starts.
    let manifests = read_manifests(&options.files)?;
    let clock: Arc<dyn Fn() -> SystemTime + Send + Sync> = Arc::new(SystemTime::now);
    let store = Store::new(100_000);
    let server = ApiServer::new(store.clone(), clock.clone());
    for (_, crd) in berth_api::crds::all() {
        let value = serde_json::to_value(crd).context("a CRD")?;
        server
            .create_object(value)
            .map_err(|e| anyhow::anyhow!(e))?;
    }
    for m in manifests {
        server.create_object(m).map_err(|e| anyhow::anyhow!(e))?;
    }
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let (addr, api_task) = server
        .serve(options.listen, until(stopped.clone()))
        .await
        .with_context(|| format!("--listen {}", options.listen))?;
    let url = format!("http://{addr}");
    write_kubeconfig(&options.kubeconfig, &berth_sim::server::kubeconfig(&url))?;
    let controllers = Controllers::new(
        store,
        clock,
        ClusterOptions {
            boot_delay: options.boot_delay,
            pod_start_delay: options.pod_start_delay,
            ..ClusterOptions::default()
        },
    );
    let controllers = tokio::spawn(controllers.run(stopped.clone()));

    let kubeconfig = options.kubeconfig.display().to_string();
    let boot = format!("{}s", options.boot_delay.as_secs_f64());
    let mut actuator_args = vec![
        "berth-actuator",
        "--provider",
        "sim",
        "--kubeconfig",
        &kubeconfig,
        "--grpc-addr",
        "127.0.0.1:0",
        "--admin-addr",
        "127.0.0.1:0",
        "--sim-boot-delay",
        &boot,
    ];
    let catalog = options.catalog.as_ref().map(|c| c.display().to_string());
    if let Some(c) = &catalog {
        actuator_args.extend(["--catalog", c]);
    }
    let args = berth_actuator::args::Args::try_parse_from(actuator_args)?;
    let metrics = berth_actuator::metrics::install()?;
    let actuator = berth_actuator::start(args, metrics).await?;

    println!("Berth sandbox: a simulated Kubernetes cluster with Berth's actuator (sim cloud).");
    println!();
    println!("  API server   {url}");
    println!("  kubeconfig   {kubeconfig}");
    println!(
        "  actuator     gRPC {}, metrics http://{}/metrics",
        actuator.grpc_addr, actuator.admin_addr
    );
    println!();
    println!("Try:");
    println!("  export KUBECONFIG={kubeconfig}");
    println!("  kubectl apply -f examples/gitlab/build-pods.yaml   # GitLab CI build pods");
    println!("  kubectl get nodepools,ec2nodeclasses");
    println!(
        "  kubectl create deployment web --image nginx --replicas 3 --dry-run=client -o yaml | kubectl apply -f -"
    );
    println!("  kubectl get pods,nodes -w");
    println!();
    println!(
        "Note: the watcher and scheduler services are not part of the sandbox yet, so pending"
    );
    println!("pods stay Unschedulable; NodeClaims launched through the actuator's gRPC Launch");
    println!("boot, register and take pods (a NodeClaim created with kubectl is not launched).");
    println!("Ctrl-C stops everything.");
    println!("sandbox ready");

    berth_actuator::shutdown_signal().await;
    eprintln!("stopping");
    // The actuator first, while the API server still answers its last writes.
    actuator.shutdown().await?;
    let _ = stop.send(true);
    controllers.await?;
    api_task.await??;
    Ok(())
}
