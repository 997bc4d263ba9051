//! The simulated cluster and Berth's three services in one process: what `berth sandbox` and
//! `berth demo` run. The services are the same code as the binaries (`berth-watcher`,
//! `berth-scheduler`, `berth-actuator`), configured by the same flags, talking real gRPC and
//! real Kubernetes HTTP over loopback.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use berth_sim::controllers::{ClusterOptions, Controllers};
use berth_sim::server::ApiServer;
use berth_sim::store::Store;
use clap::Parser as _;

pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// How the stack is set up.
#[derive(Clone)]
pub struct StackOptions {
    pub listen: SocketAddr,
    pub kubeconfig: PathBuf,
    /// The simulated cluster's clock (a faster one compresses time).
    pub clock: Clock,
    /// Sim-cluster durations, on `clock`.
    pub boot_delay: Duration,
    pub pod_start_delay: Duration,
    /// How often the simulated controllers look for due timers (boots, pod starts), wall time.
    pub tick: Duration,
    /// Service durations, on the wall clock.
    pub sim_cloud_boot_delay: Duration,
    /// The sim cloud's time from terminate to gone, wall time.
    pub sim_cloud_termination_delay: Duration,
    pub batch_idle: Duration,
    pub batch_max: Duration,
    /// The scheduler's disruption evaluation interval and validation wait, wall time.
    pub disruption_interval: Duration,
    pub disruption_validation: Duration,
    /// How long the watcher gathers changes before sending them.
    pub coalesce: Duration,
    /// The actuator's deadlines, on `clock` (see [`ActuatorDeadlines`]).
    pub actuator_deadlines: ActuatorDeadlines,
    pub catalog: Option<PathBuf>,
    /// Objects created before anything starts (CRDs are always installed).
    pub manifests: Vec<serde_json::Value>,
}

impl std::fmt::Debug for StackOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StackOptions")
            .field("listen", &self.listen)
            .field("boot_delay", &self.boot_delay)
            .finish_non_exhaustive()
    }
}

/// The actuator's deadlines, measured on the cluster's clock like the timestamps they are
/// compared with (`--registration-ttl`, `--launch-grace`, `--replacement-ttl`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActuatorDeadlines {
    pub registration_ttl: Duration,
    pub launch_grace: Duration,
    pub replacement_ttl: Duration,
}

impl ActuatorDeadlines {
    /// The binary's defaults: for a clock that is the wall clock.
    pub const WALL: Self = Self {
        registration_ttl: Duration::from_secs(15 * 60),
        launch_grace: Duration::from_secs(60),
        replacement_ttl: Duration::from_secs(15 * 60),
    };

    /// For a clock `speed` times the wall clock's. The launch grace is about Berth's own RPC
    /// latency, which does not speed up: 60 wall seconds. The others are about the cloud and
    /// the cluster (simulated time), but a lifecycle pass takes wall time too, so none is
    /// shorter than 20 wall seconds, lest a busy machine trip a deadline the simulated cloud
    /// would have met.
    pub fn compressed(speed: f64) -> Self {
        let wall = |secs: u64| Duration::from_secs(secs).mul_f64(speed);
        Self {
            registration_ttl: Self::WALL.registration_ttl.max(wall(20)),
            launch_grace: wall(60),
            replacement_ttl: Self::WALL.replacement_ttl.max(wall(20)),
        }
    }
}

/// A running stack.
#[derive(Debug)]
pub struct Stack {
    pub url: String,
    pub actuator: berth_actuator::Running,
    pub scheduler: berth_scheduler::Running,
    pub watcher: berth_watcher::Running,
    stop: tokio::sync::watch::Sender<bool>,
    controllers: tokio::task::JoinHandle<()>,
    api: tokio::task::JoinHandle<std::io::Result<()>>,
}

fn millis(d: Duration) -> String {
    format!("{}ms", d.as_millis().max(1))
}

impl Stack {
    pub async fn start(o: StackOptions) -> anyhow::Result<Self> {
        let metrics = berth_service::install_recorder(&[
            berth_actuator::metrics::BUCKETS,
            berth_scheduler::metrics::BUCKETS,
            berth_watcher::metrics::BUCKETS,
        ])?;
        berth_actuator::metrics::describe();
        berth_scheduler::metrics::describe();
        berth_watcher::metrics::describe();

        let store = Store::new(100_000);
        let server = ApiServer::new(store.clone(), o.clock.clone());
        for (_, crd) in berth_api::crds::all() {
            let value = serde_json::to_value(crd).context("a CRD")?;
            server
                .create_object(value)
                .map_err(|e| anyhow::anyhow!(e))?;
        }
        for m in o.manifests {
            server.create_object(m).map_err(|e| anyhow::anyhow!(e))?;
        }
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let (addr, api) = server
            .clone()
            .serve(o.listen, berth_service::stopped(stopped.clone()))
            .await
            .with_context(|| format!("--listen {}", o.listen))?;
        let url = format!("http://{addr}");
        std::fs::write(&o.kubeconfig, berth_sim::server::kubeconfig(&url))
            .with_context(|| format!("writing {}", o.kubeconfig.display()))?;
        let controllers = Controllers::new(
            store.clone(),
            o.clock.clone(),
            ClusterOptions {
                boot_delay: o.boot_delay,
                pod_start_delay: o.pod_start_delay,
                tick: o.tick,
            },
        );
        let controllers = tokio::spawn(controllers.run(stopped.clone()));

        let kubeconfig = o.kubeconfig.display().to_string();
        let boot = millis(o.sim_cloud_boot_delay);
        let termination = millis(o.sim_cloud_termination_delay);
        let d = o.actuator_deadlines;
        let (registration_ttl, launch_grace, replacement_ttl) = (
            millis(d.registration_ttl),
            millis(d.launch_grace),
            millis(d.replacement_ttl),
        );
        let mut args = vec![
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
            "--sim-termination-delay",
            &termination,
            "--lifecycle-interval",
            "1s",
            "--registration-ttl",
            &registration_ttl,
            "--launch-grace",
            &launch_grace,
            "--replacement-ttl",
            &replacement_ttl,
        ];
        let catalog = o.catalog.as_ref().map(|c| c.display().to_string());
        if let Some(c) = &catalog {
            args.extend(["--catalog", c]);
        }
        let actuator = berth_actuator::start_on(
            berth_actuator::args::Args::try_parse_from(args)?,
            metrics.clone(),
            berth_actuator::Clock(o.clock.clone()),
        )
        .await
        .context("starting the actuator")?;
        let actuator_url = format!("http://{}", actuator.grpc_addr);
        let (idle, max) = (millis(o.batch_idle), millis(o.batch_max));
        let (every, validation) = (
            millis(o.disruption_interval),
            millis(o.disruption_validation),
        );
        let scheduler = berth_scheduler::start_on(
            berth_scheduler::Args::try_parse_from([
                "berth-scheduler",
                "--grpc-addr",
                "127.0.0.1:0",
                "--admin-addr",
                "127.0.0.1:0",
                "--actuator-url",
                &actuator_url,
                "--batch-idle",
                &idle,
                "--batch-max",
                &max,
                "--disruption-interval",
                &every,
                "--disruption-validation",
                &validation,
            ])?,
            metrics.clone(),
            berth_scheduler::engine::Clock(o.clock.clone()),
        )
        .await
        .context("starting the scheduler")?;
        let scheduler_url = format!("http://{}", scheduler.grpc_addr);
        let coalesce = millis(o.coalesce);
        let watcher = berth_watcher::start(
            berth_watcher::Args::try_parse_from([
                "berth-watcher",
                "--scheduler-url",
                &scheduler_url,
                "--admin-addr",
                "127.0.0.1:0",
                "--kubeconfig",
                &kubeconfig,
                "--status-interval",
                "1s",
                "--coalesce",
                &coalesce,
            ])?,
            metrics,
        )
        .await
        .context("starting the watcher")?;
        Ok(Self {
            url,
            actuator,
            scheduler,
            watcher,
            stop,
            controllers,
            api,
        })
    }

    /// Stops the services (the watcher first, the actuator last, while the API server still
    /// answers their last writes), then the cluster.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.watcher.shutdown().await?;
        self.scheduler.shutdown().await?;
        self.actuator.shutdown().await?;
        let _ = self.stop.send(true);
        self.controllers.await?;
        self.api.await??;
        Ok(())
    }
}
