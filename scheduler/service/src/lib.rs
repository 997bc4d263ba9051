//! # berth-scheduler
//!
//! Keeps the watcher's model of the cluster, gathers pending pods into batches, packs them
//! onto the cheapest new NodeClaims the NodePools allow (`berth-scheduler-core`'s solver), and
//! launches them through the actuator.
//!
//! ```text
//!  berth-watcher ──Sync──> SchedulerService ──> Engine (engine.rs) ──Launch, InstanceTypes──> berth-actuator
//!                <──feedback: acks, nominations, unschedulable──┘        (GrpcCloud)
//!  /metrics /healthz /readyz on --admin-addr; grpc.health.v1 and reflection on --grpc-addr
//! ```
//!
//! A restart loses nothing: the next watcher snapshot rebuilds the model, NodeClaims in flight
//! included, and pending pods are placed on those claims before anything new is launched.

pub mod engine;
pub mod metrics;
pub mod service;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use berth_service::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;

pub use engine::{Cloud, Engine, Options};

fn duration(s: &str) -> Result<Duration, String> {
    berth_api::duration::parse_flag(s)
}

/// Karpenter's feature gates as Berth reads them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FeatureGates {
    pub spot_to_spot_consolidation: bool,
}

fn feature_gates(s: &str) -> Result<FeatureGates, String> {
    let mut gates = FeatureGates::default();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, value) = part
            .split_once('=')
            .ok_or_else(|| format!("{part:?}: expected Name=true|false"))?;
        let value: bool = value
            .parse()
            .map_err(|_| format!("{name}: {value:?} is not true or false"))?;
        match name {
            "SpotToSpotConsolidation" => gates.spot_to_spot_consolidation = value,
            // Karpenter's other gates do not change the scheduler's decisions.
            "NodeRepair" | "ReservedCapacity" | "StaticCapacity" | "NodeOverlay" => {}
            other => return Err(format!("{other}: not a known feature gate")),
        }
    }
    Ok(gates)
}

/// berth-scheduler: serves `berth.v1.Scheduler` to the watcher and launches NodeClaims
/// through the actuator's `berth.v1.CloudProvider`.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "berth-scheduler", version)]
pub struct Args {
    /// Address of the gRPC service (Scheduler, health, reflection).
    #[arg(long, env = "BERTH_GRPC_ADDR", default_value = "127.0.0.1:50051")]
    pub grpc_addr: SocketAddr,
    /// Address of `/metrics`, `/healthz` and `/readyz` (ready once a snapshot arrived).
    #[arg(long, env = "BERTH_ADMIN_ADDR", default_value = "127.0.0.1:9091")]
    pub admin_addr: SocketAddr,
    /// The actuator's gRPC URL (`https://` for TLS, see `--tls-ca`); several, comma-separated,
    /// for replicas of which only the leader listens: the one that answers is used.
    #[arg(
        long,
        env = "BERTH_ACTUATOR_URL",
        default_value = "http://127.0.0.1:50052"
    )]
    pub actuator_url: String,
    /// Kubeconfig for the leader Lease, the scheduler's only Kubernetes object (default:
    /// `KUBECONFIG`, `~/.kube/config`, or in-cluster); used with `--leader-elect` only.
    #[arg(long, env = "BERTH_KUBECONFIG")]
    pub kubeconfig: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub leader: berth_service::leader::LeaderArgs,
    /// A batch of pending pods closes after this long without a new one...
    #[arg(long, env = "BERTH_BATCH_IDLE", default_value = "1s", value_parser = duration)]
    pub batch_idle: Duration,
    /// ...or this long after its first pod.
    #[arg(long, env = "BERTH_BATCH_MAX", default_value = "10s", value_parser = duration)]
    pub batch_max: Duration,
    /// Instance types fetched from the actuator are kept this long.
    #[arg(long, env = "BERTH_INSTANCE_TYPES_TTL", default_value = "5m", value_parser = duration)]
    pub instance_types_ttl: Duration,
    /// Deadline of each call to the actuator.
    #[arg(long, env = "BERTH_ACTUATOR_TIMEOUT", default_value = "60s", value_parser = duration)]
    pub actuator_timeout: Duration,
    /// Attempts per launch when the actuator is unavailable (launches are idempotent).
    #[arg(long, env = "BERTH_LAUNCH_ATTEMPTS", default_value_t = 3)]
    pub launch_attempts: u32,
    /// Remove and replace nodes (expiry, drift, emptiness, consolidation). Off: nodes stay.
    #[arg(long, env = "BERTH_DISRUPTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub disruption: bool,
    /// How often a settled cluster is evaluated for disruption.
    #[arg(long, env = "BERTH_DISRUPTION_INTERVAL", default_value = "10s", value_parser = duration)]
    pub disruption_interval: Duration,
    /// How long a disruption decision waits before it is validated against fresh state and
    /// carried out (Karpenter's 15 s).
    #[arg(long, env = "BERTH_DISRUPTION_VALIDATION", default_value = "15s", value_parser = duration)]
    pub disruption_validation: Duration,
    /// Karpenter's feature gates, `Name=true,...`; Berth reads `SpotToSpotConsolidation`.
    #[arg(long, env = "BERTH_FEATURE_GATES", default_value = "", value_parser = feature_gates)]
    pub feature_gates: FeatureGates,
    /// Deadline for every unary RPC served (Explain).
    #[arg(long, env = "BERTH_RPC_TIMEOUT", default_value = "30s", value_parser = duration)]
    pub rpc_timeout: Duration,
    /// Requests in flight per connection before new ones wait.
    #[arg(long, env = "BERTH_MAX_CONCURRENT_RPCS", default_value_t = 64)]
    pub max_concurrent_rpcs: usize,
    #[command(flatten)]
    pub tls: berth_service::TlsArgs,
    #[command(flatten)]
    pub client_tls: berth_service::ClientTlsArgs,
    #[command(flatten)]
    pub log: berth_service::LogArgs,
}

/// Runs until SIGTERM or Ctrl-C.
pub fn run(args: Args) -> anyhow::Result<()> {
    berth_service::init_tracing(&args.log.log, args.log.log_format)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let handle = berth_service::install_recorder(&[metrics::BUCKETS])?;
        metrics::describe();
        let running = start(args, handle).await?;
        tracing::info!(grpc = %running.grpc_addr, admin = %running.admin_addr, "berth-scheduler serving");
        berth_service::shutdown_signal().await;
        tracing::info!("shutting down");
        running.shutdown().await
    })
}

/// A started scheduler.
#[derive(Debug)]
pub struct Running {
    pub grpc_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Stops gracefully, waiting at most [`berth_service::SHUTDOWN_GRACE`] for clients.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        match tokio::time::timeout(berth_service::SHUTDOWN_GRACE, self.task).await {
            Ok(r) => r.context("the scheduler task panicked")?,
            Err(_) => {
                tracing::warn!("clients still connected; stopping anyway");
                Ok(())
            }
        }
    }
}

/// Binds both addresses and serves, calling the actuator at `--actuator-url`.
pub async fn start(args: Args, metrics: PrometheusHandle) -> anyhow::Result<Running> {
    start_on(args, metrics, engine::Clock::default()).await
}

/// [`start`] on a given clock (a simulated cluster's, which runs faster than the wall's).
pub async fn start_on(
    args: Args,
    metrics: PrometheusHandle,
    clock: engine::Clock,
) -> anyhow::Result<Running> {
    let endpoints = args
        .actuator_url
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(|u| {
            args.client_tls
                .endpoint(u, "--actuator-url", Some(args.actuator_timeout))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    anyhow::ensure!(!endpoints.is_empty(), "--actuator-url: no address");
    let cloud = service::GrpcCloud::new(endpoints);
    start_with(args, cloud, metrics, clock).await
}

/// [`start`] with a given cloud (tests use a fake) and clock.
pub async fn start_with<C: Cloud>(
    args: Args,
    cloud: C,
    metrics: PrometheusHandle,
    clock: engine::Clock,
) -> anyhow::Result<Running> {
    let (stop, stopped) = watch::channel(false);
    // A standby is ready (it has nothing to wait for); the leader once a snapshot arrived.
    let (ready_tx, ready) = watch::channel(args.leader.leader_elect);
    let (admin_addr, admin) =
        berth_service::serve_admin(args.admin_addr, metrics, ready, stopped.clone()).await?;
    // The admin server answers while this replica waits to lead.
    let admin = tokio::spawn(admin);
    let client = match (&args.kubeconfig, args.leader.leader_elect) {
        (_, false) => None,
        (path, true) => Some(berth_service::kube_client(path.as_deref()).await?),
    };
    let leadership = berth_service::leader::acquire(client, &args.leader, "scheduler").await?;
    let _ = ready_tx.send(false);
    leadership.exit_when_lost("scheduler");
    let listener = TcpListener::bind(args.grpc_addr)
        .await
        .with_context(|| format!("--grpc-addr {}", args.grpc_addr))?;
    let grpc_addr = listener.local_addr()?;
    let engine = Engine::new(
        cloud,
        Options {
            batch_idle: args.batch_idle,
            batch_max: args.batch_max,
            instance_types_ttl: args.instance_types_ttl,
            launch_attempts: args.launch_attempts.max(1),
            disruption: engine::DisruptionOptions {
                enabled: args.disruption,
                interval: args.disruption_interval,
                validation_wait: args.disruption_validation,
                core: berth_scheduler_core::disruption::Options {
                    spot_to_spot: args.feature_gates.spot_to_spot_consolidation,
                    ..Default::default()
                },
            },
            clock,
        },
    );
    let mut builder = tonic::transport::Server::builder()
        .timeout(args.rpc_timeout)
        .concurrency_limit_per_connection(args.max_concurrent_rpcs);
    if let Some(tls) = args.tls.server_config()? {
        builder = builder.tls_config(tls).context("--tls-cert/--tls-key")?;
    }
    let (router, health) = berth_proto::add_standard_services(&mut builder);
    health
        .set_serving::<berth_proto::v1::scheduler_server::SchedulerServer<service::SchedulerService<C>>>()
        .await;
    let router = router.add_service(berth_proto::v1::scheduler_server::SchedulerServer::new(
        service::SchedulerService::new(engine.clone()),
    ));
    let grpc = router.serve_with_incoming_shutdown(
        TcpListenerStream::new(listener),
        berth_service::stopped(stopped.clone()),
    );
    let readiness = {
        let engine = engine.clone();
        let stopped = stopped.clone();
        async move {
            let mut every = tokio::time::interval(Duration::from_millis(500));
            loop {
                tokio::select! {
                    _ = every.tick() => { let _ = ready_tx.send(engine.synced()); }
                    () = berth_service::stopped(stopped.clone()) => return,
                }
            }
        }
    };
    let solving = engine.clone().run(stopped.clone());
    let disrupting = engine.clone().run_disruption(stopped.clone());
    let stop_all = stop.clone();
    let task = tokio::spawn(async move {
        let grpc = async {
            let r = grpc.await;
            let _ = stop_all.send(true);
            r
        };
        let admin = async { admin.await.context("the admin server panicked")? };
        let (g, a, (), (), ()) = tokio::join!(grpc, admin, solving, disrupting, readiness);
        g.context("gRPC server")?;
        a?;
        Ok(())
    });
    Ok(Running {
        grpc_addr,
        admin_addr,
        stop,
        task,
    })
}

/// Helper for embedding: the scheduler's engine with the default options over any cloud.
pub fn engine<C: Cloud>(cloud: C) -> Arc<Engine<C>> {
    Engine::new(cloud, Options::default())
}
