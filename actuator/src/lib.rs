//! berth-actuator: the only caller of the cloud and the only writer of NodeClaims.
//!
//! ```text
//!   berth-scheduler ──gRPC berth.v1.CloudProvider──> CloudService (service.rs)
//!                                                     │  validate, convert, map errors
//!                       NodeClaimStore (store.rs) <───┤
//!                                                     v
//!                          Metered<P: CloudProvider>: Ec2Cloud (berth-ec2) | SimCloud (berth-cloud)
//!   /metrics /healthz /readyz on --admin-addr
//! ```

pub mod args;
pub mod controller;
pub mod events;
pub mod execute;
pub mod launch;
pub mod lifecycle;
pub mod metrics;
pub mod nodeclass;
pub mod service;
pub mod store;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use berth_cloud::{CloudProvider, Metered, SimCloud, SimOptions};
use berth_service::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;

use crate::args::{Args, LogFormat, NodeClaims, Provider};
use crate::service::CloudService;
use crate::store::{Memory, NodeClaimStore};

pub use berth_service::{SHUTDOWN_GRACE, shutdown_signal};

/// Runs until SIGTERM or Ctrl-C.
pub fn run(args: Args) -> anyhow::Result<()> {
    init_tracing(&args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let handle = metrics::install()?;
        let running = start(args, handle).await?;
        tracing::info!(grpc = %running.grpc_addr, admin = %running.admin_addr, "berth-actuator serving");
        let stop = running.stop.clone();
        let mut serving = std::pin::pin!(running.wait());
        tokio::select! {
            r = &mut serving => return r,
            () = shutdown_signal() => {}
        }
        tracing::info!("shutting down");
        let _ = stop.send(true);
        // Open connections get this long to finish their calls and hang up.
        match tokio::time::timeout(SHUTDOWN_GRACE, serving).await {
            Ok(r) => r,
            Err(_) => {
                tracing::warn!(grace = ?SHUTDOWN_GRACE, "clients still connected; stopping anyway");
                Ok(())
            }
        }
    })
}

fn init_tracing(args: &Args) -> anyhow::Result<()> {
    let format = match args.log_format {
        LogFormat::Json => berth_service::LogFormat::Json,
        LogFormat::Text => berth_service::LogFormat::Text,
    };
    berth_service::init_tracing(&args.log, format)
}

/// A started actuator: its bound addresses, and how to stop it.
#[derive(Debug)]
pub struct Running {
    pub grpc_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// Send `true` to shut down gracefully.
    pub stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Waits until both servers stopped; the first error of either.
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await.context("the actuator task panicked")?
    }

    /// Stops and waits, at most [`SHUTDOWN_GRACE`] for connected clients to hang up.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        match tokio::time::timeout(SHUTDOWN_GRACE, self.wait()).await {
            Ok(r) => r,
            Err(_) => {
                tracing::warn!(grace = ?SHUTDOWN_GRACE, "clients still connected; stopping anyway");
                Ok(())
            }
        }
    }
}

/// The cluster's time: what the API server's timestamps (creation, deletion, a recorded
/// disruption's start) are compared with, and what written timestamps (events, disruption
/// records) carry. The wall clock on a real cluster; the simulated cluster's (faster) clock in
/// `berth demo` and `berth simulate`. The cloud's own timestamps (instance launch times) are
/// always compared with the wall clock.
#[derive(Clone)]
pub struct Clock(pub std::sync::Arc<dyn Fn() -> std::time::SystemTime + Send + Sync>);

impl Clock {
    pub fn now(&self) -> std::time::SystemTime {
        (self.0)()
    }
}

impl Default for Clock {
    /// The wall clock.
    fn default() -> Self {
        Self(std::sync::Arc::new(std::time::SystemTime::now))
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Clock")
    }
}

/// Binds both addresses, builds the provider and the NodeClaim store from `args`, and serves.
pub async fn start(args: Args, metrics: PrometheusHandle) -> anyhow::Result<Running> {
    start_on(args, metrics, Clock::default()).await
}

/// [`start`], with `clock` as the cluster's time (see [`Clock`]): the deadlines in `args`
/// (`--registration-ttl`, `--launch-grace`, `--replacement-ttl`) and NodeClaims'
/// `terminationGracePeriod` are measured on it.
pub async fn start_on(
    args: Args,
    metrics: PrometheusHandle,
    clock: Clock,
) -> anyhow::Result<Running> {
    match args.node_claims {
        NodeClaims::Memory => {
            let env = Env {
                cluster: None,
                metrics,
                clock,
            };
            start_with(args, Memory::default(), env).await
        }
        NodeClaims::Kubernetes => {
            let client = kube_client(&args).await?;
            let store = store::Kube::new(client.clone());
            let env = Env {
                cluster: Some(client),
                metrics,
                clock,
            };
            start_with(args, store, env).await
        }
    }
}

async fn kube_client(args: &Args) -> anyhow::Result<kube::Client> {
    // NB: kube-rs's retries are off (berth_service::kube_client): a 429 from the Eviction API
    // means "a PodDisruptionBudget says not now", and the drain retries it on its next pass.
    berth_service::kube_client(args.kubeconfig.as_deref())
        .await
        .context("give --kubeconfig, or --node-claims memory")
}

/// What the service runs in besides its flags: the cluster (none with `--node-claims
/// memory`), the metrics recorder's handle, the cluster's clock.
struct Env {
    cluster: Option<kube::Client>,
    metrics: PrometheusHandle,
    clock: Clock,
}

async fn start_with<S: NodeClaimStore + Clone>(
    args: Args,
    store: S,
    env: Env,
) -> anyhow::Result<Running> {
    match args.provider {
        Provider::Sim => {
            let catalog = match &args.catalog {
                Some(path) => {
                    let text = std::fs::read_to_string(path)
                        .with_context(|| format!("--catalog {}", path.display()))?;
                    berth_catalog::Catalog::parse(&text)
                        .with_context(|| format!("--catalog {}", path.display()))?
                }
                None => berth_catalog::Catalog::builtin(),
            };
            let sim = SimCloud::new(
                &catalog,
                SimOptions {
                    boot_delay: args.sim_boot_delay,
                    termination_delay: args.sim_termination_delay,
                    ..SimOptions::default()
                },
            );
            let resolver = sim.clone();
            serve(args, Metered::new(sim), resolver, store, env, None).await
        }
        Provider::Ec2 => {
            let cloud = ec2_cloud(&args).await?;
            let source = cloud.clone();
            let housekeeping: Housekeeping = Box::new(move || {
                let cloud = source.clone();
                Box::pin(async move {
                    ::metrics::gauge!(metrics::UNAVAILABLE_OFFERINGS)
                        .set(cloud.unavailable_offerings() as f64);
                    match cloud.garbage_collect_launch_templates().await {
                        Ok(deleted) if !deleted.is_empty() => {
                            tracing::info!(?deleted, "deleted unused launch templates");
                        }
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "launch template garbage collection"),
                    }
                })
            });
            let resolver = cloud.clone();
            serve(
                args,
                Metered::new(cloud),
                resolver,
                store,
                env,
                Some(housekeeping),
            )
            .await
        }
    }
}

async fn ec2_cloud(args: &Args) -> anyhow::Result<berth_ec2::Ec2Cloud<berth_ec2::SdkApi>> {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(args.region.clone()));
    if let Some(url) = &args.aws_endpoint_url {
        loader = loader.endpoint_url(url);
    }
    let conf = loader.load().await;
    let mut options =
        berth_ec2::Ec2Options::new(&args.cluster_name, &args.cluster_endpoint, &args.region);
    options.cluster_ca_bundle = args.cluster_ca_bundle.clone();
    options.service_cidr = args.service_cidr.clone();
    options.kubernetes_version = args.kubernetes_version.clone();
    if let Some(path) = &args.price_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("--price-file {}", path.display()))?;
        options.price_overrides = berth_ec2::pricing::PriceOverrides::parse(&text)
            .with_context(|| format!("--price-file {}", path.display()))?;
    }
    let cloud = berth_ec2::Ec2Cloud::new(berth_ec2::SdkApi::from_conf(&conf), options);
    if let Some(path) = &args.node_classes {
        for (name, spec) in read_node_classes(path)? {
            cloud.set_node_class(&name, spec);
        }
    }
    Ok(cloud)
}

/// The EC2NodeClasses of a YAML file (v1 or v1beta1, converted and validated).
pub fn read_node_classes(
    path: &std::path::Path,
) -> anyhow::Result<Vec<(String, berth_api::v1::EC2NodeClassSpec)>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--node-classes {}", path.display()))?;
    let refused = |errors: Vec<String>| {
        anyhow::anyhow!("--node-classes {}: {}", path.display(), errors.join("; "))
    };
    let manifests = berth_api::manifest::parse_all(&text)
        .map_err(|errors| refused(errors.iter().map(ToString::to_string).collect()))?;
    let converted = berth_api::convert::to_v1(manifests)
        .map_err(|errors| refused(errors.iter().map(ToString::to_string).collect()))?;
    Ok(converted
        .objects
        .into_iter()
        .filter_map(|o| match o {
            berth_api::convert::V1Object::EC2NodeClass(c) => {
                Some((c.metadata.name.clone().unwrap_or_default(), c.spec))
            }
            _ => None,
        })
        .collect())
}

/// What a provider does now and then besides serving: gauges, cleaning up after itself.
type Housekeeping =
    Box<dyn Fn() -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

async fn serve<P, R, S>(
    args: Args,
    provider: P,
    resolver: R,
    store: S,
    env: Env,
    housekeeping: Option<Housekeeping>,
) -> anyhow::Result<Running>
where
    P: CloudProvider + Clone,
    R: nodeclass::NodeClassResolver + Clone,
    S: NodeClaimStore + Clone,
{
    let Env {
        cluster,
        metrics,
        clock,
    } = env;
    let (stop, stopped) = watch::channel(false);
    // Ready from the start: the actuator serves as soon as it listens (a standby is ready too).
    let (_, ready) = watch::channel(true);
    let (admin_addr, admin) =
        berth_service::serve_admin(args.admin_addr, metrics, ready, stopped.clone()).await?;
    // The admin server answers while this replica waits to lead.
    let admin = tokio::spawn(admin);
    let admin = async { admin.await.context("the admin server panicked")? };
    let leadership =
        berth_service::leader::acquire(cluster.clone(), &args.leader, "actuator").await?;
    leadership.exit_when_lost("actuator");

    let mut builder = tonic::transport::Server::builder()
        .timeout(args.rpc_timeout)
        .concurrency_limit_per_connection(args.max_concurrent_rpcs);
    if let Some(tls) = args.tls.server_config()? {
        builder = builder.tls_config(tls).context("--tls-cert/--tls-key")?;
    }
    let (router, health) = berth_proto::add_standard_services(&mut builder);
    health
        .set_serving::<berth_proto::v1::cloud_provider_server::CloudProviderServer<CloudService<P, S>>>()
        .await;
    let recorder = cluster
        .clone()
        .map(|c| events::Recorder::new(c).with_clock(clock.clone()));
    let lifecycle = cluster.map(|client| {
        (
            controller::Lifecycle::new(
                provider.clone(),
                client.clone(),
                lifecycle::Deadlines {
                    registration_ttl: args.registration_ttl,
                    launch_grace: args.launch_grace,
                    replacement_ttl: args.replacement_ttl,
                },
                clock.0.clone(),
            )
            .with_events(recorder.clone().expect("a cluster has a recorder")),
            nodeclass::NodeClasses::new(resolver, client, clock.0.clone()),
        )
    });
    // A leader that has just taken over knows its node classes before its first Launch.
    if let Some((_, classes)) = &lifecycle {
        classes.reconcile_all().await;
    }
    let grpc_listener = TcpListener::bind(args.grpc_addr)
        .await
        .with_context(|| format!("--grpc-addr {}", args.grpc_addr))?;
    let grpc_addr = grpc_listener.local_addr()?;
    let mut service = CloudService::new(provider, store).with_clock(clock);
    if lifecycle.is_some() {
        service = service.drained_by_lifecycle();
    }
    if let Some(recorder) = recorder.clone() {
        service = service.with_events(recorder);
    }
    let router = router
        .add_service(berth_proto::v1::cloud_provider_server::CloudProviderServer::new(service));

    let until = berth_service::stopped;
    let grpc = router.serve_with_incoming_shutdown(
        TcpListenerStream::new(grpc_listener),
        until(stopped.clone()),
    );
    let chores = housekeeping_loop(housekeeping, until(stopped.clone()));
    let (interval, gc_interval) = (args.lifecycle_interval, args.gc_interval);
    let lifecycle_stopped = stopped.clone();
    let background = async move {
        match lifecycle {
            Some((l, classes)) => {
                tokio::join!(
                    chores,
                    l.run(Some(classes), interval, gc_interval, lifecycle_stopped)
                );
            }
            None => chores.await,
        }
    };
    let task = tokio::spawn(supervise(grpc, admin, background, stop.clone()));
    Ok(Running {
        grpc_addr,
        admin_addr,
        stop,
        task,
    })
}

async fn housekeeping_loop(chores: Option<Housekeeping>, stopped: impl Future<Output = ()>) {
    let Some(chores) = chores else {
        stopped.await;
        return;
    };
    let tick = async {
        let mut every = tokio::time::interval(Duration::from_secs(30));
        loop {
            every.tick().await;
            chores().await;
        }
    };
    tokio::select! {
        _ = tick => {}
        _ = stopped => {}
    }
}

/// Runs both servers; when one ends (error or shutdown), the other is stopped gracefully;
/// reports the gRPC server's error first.
async fn supervise(
    grpc: impl Future<Output = Result<(), tonic::transport::Error>>,
    admin: impl Future<Output = anyhow::Result<()>>,
    gauges: impl Future<Output = ()>,
    stop: watch::Sender<bool>,
) -> anyhow::Result<()> {
    let grpc = async {
        let r = grpc.await;
        let _ = stop.send(true);
        r
    };
    let admin = async {
        let r = admin.await;
        let _ = stop.send(true);
        r
    };
    let (g, a, ()) = tokio::join!(grpc, admin, gauges);
    g.context("gRPC server")?;
    a?;
    Ok(())
}
