//! # berth-watcher
//!
//! Streams the cluster to the scheduler and publishes the scheduler's answers.
//!
//! ```text
//!  API server ──watch (kube-runtime reflectors: pods, nodes, NodeClaims, NodePools,
//!      │          DaemonSets, PDBs, namespaces, PVCs/PVs/StorageClasses, EC2NodeClasses)
//!      v
//!  Stores ──mark dirty──> Tracker ──Sync: snapshot, then deltas──> berth-scheduler
//!      ^                                  <──feedback (acks, nominations, unschedulable)──┘
//!      └── Events on pods (Nominated / FailedProvisioning), NodePool status
//! ```
//!
//! Watch events only mark objects dirty; a delta carries each dirty object's current state if
//! it differs from what was sent ([`tracker`]), so bursts coalesce, relists after a `410` or a
//! cut watch send only real differences, and memory is bounded by the cluster's size. At most
//! `--max-batches-in-flight` batches wait for the scheduler's acknowledgement (backpressure).
//! When the stream breaks (a scheduler restart), the watcher reconnects with backoff and
//! starts again with a whole snapshot.

pub mod cluster;
pub mod feedback;
pub mod metrics;
pub mod tracker;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use berth_proto::v1 as p;
use berth_scheduler_core::sync::{Feedback, ObjectKind};
use berth_service::PrometheusHandle;
use tokio::sync::{Mutex, Notify, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

use crate::cluster::{Dirty, Stores};
use crate::tracker::Tracker;

fn duration(s: &str) -> Result<Duration, String> {
    berth_api::duration::parse_flag(s)
}

/// berth-watcher: streams cluster state (pending pods first of all) to berth-scheduler over
/// `berth.v1.Scheduler/Sync`, and turns its feedback into pod Events and NodePool status.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "berth-watcher", version)]
pub struct Args {
    /// The scheduler's gRPC URL (`https://` for TLS, see `--tls-ca`); several, comma-separated,
    /// for replicas of which only the leader listens: the one that answers is used.
    #[arg(
        long,
        env = "BERTH_SCHEDULER_URL",
        default_value = "http://127.0.0.1:50051"
    )]
    pub scheduler_url: String,
    /// Address of `/metrics`, `/healthz` and `/readyz` (ready once a snapshot is acknowledged).
    #[arg(long, env = "BERTH_ADMIN_ADDR", default_value = "127.0.0.1:9090")]
    pub admin_addr: SocketAddr,
    /// Kubeconfig of the cluster (default: `KUBECONFIG`, `~/.kube/config`, or in-cluster).
    #[arg(long, env = "BERTH_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Names this replica in the scheduler's logs.
    #[command(flatten)]
    pub leader: berth_service::leader::LeaderArgs,
    #[arg(long, env = "BERTH_WATCHER_ID", default_value = "berth-watcher")]
    pub watcher_id: String,
    /// Changes per batch at most.
    #[arg(long, env = "BERTH_MAX_BATCH_CHANGES", default_value_t = 500)]
    pub max_batch_changes: usize,
    /// Batches sent and not yet acknowledged at most (backpressure).
    #[arg(long, env = "BERTH_MAX_BATCHES_IN_FLIGHT", default_value_t = 8)]
    pub max_batches_in_flight: u64,
    /// How long changes gather before a delta is sent.
    #[arg(long, env = "BERTH_COALESCE", default_value = "50ms", value_parser = duration)]
    pub coalesce: Duration,
    /// The same pod event is published at most once per this window.
    #[arg(long, env = "BERTH_EVENT_DEDUP_WINDOW", default_value = "2m", value_parser = duration)]
    pub event_dedup_window: Duration,
    /// Pod events per second at most, after a burst of `--event-burst`.
    #[arg(long, env = "BERTH_EVENT_QPS", default_value_t = 20.0)]
    pub event_qps: f64,
    #[arg(long, env = "BERTH_EVENT_BURST", default_value_t = 200)]
    pub event_burst: u32,
    /// How often NodePool status is brought up to date.
    #[arg(long, env = "BERTH_STATUS_INTERVAL", default_value = "5s", value_parser = duration)]
    pub status_interval: Duration,
    #[command(flatten)]
    pub tls: berth_service::ClientTlsArgs,
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
        tracing::info!(admin = %running.admin_addr, "berth-watcher running");
        berth_service::shutdown_signal().await;
        tracing::info!("shutting down");
        running.shutdown().await
    })
}

/// A started watcher.
#[derive(Debug)]
pub struct Running {
    pub admin_addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Stops and waits.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        match tokio::time::timeout(berth_service::SHUTDOWN_GRACE, self.task).await {
            Ok(r) => r.context("the watcher task panicked")?,
            Err(_) => Ok(()),
        }
    }
}

/// Connects to the cluster, starts the caches and the stream to the scheduler.
pub async fn start(args: Args, metrics: PrometheusHandle) -> anyhow::Result<Running> {
    let client = berth_service::kube_client(args.kubeconfig.as_deref()).await?;
    start_with_client(args, client, metrics).await
}

/// [`start`] with a given Kubernetes client.
pub async fn start_with_client(
    args: Args,
    client: kube::Client,
    metrics: PrometheusHandle,
) -> anyhow::Result<Running> {
    // No per-call timeout: Sync is one long stream.
    let endpoints = args
        .scheduler_url
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(|u| args.tls.endpoint(u, "--scheduler-url", None))
        .collect::<anyhow::Result<Vec<_>>>()?;
    anyhow::ensure!(!endpoints.is_empty(), "--scheduler-url: no address");
    let (stop, stopped) = watch::channel(false);
    // A standby is ready (it has nothing to wait for); the leader once its stream is open.
    let (ready_tx, ready) = watch::channel(args.leader.leader_elect);
    let (admin_addr, admin) =
        berth_service::serve_admin(args.admin_addr, metrics, ready, stopped.clone()).await?;
    // The admin server answers while this replica waits to lead.
    let admin = tokio::spawn(admin);
    let admin = async { admin.await.context("the admin server panicked")? };
    let leadership =
        berth_service::leader::acquire(Some(client.clone()), &args.leader, "watcher").await?;
    let _ = ready_tx.send(false);
    leadership.exit_when_lost("watcher");
    let dirty = Dirty {
        tracker: Arc::new(Mutex::new(Tracker::new(args.max_batch_changes))),
        changed: Arc::new(Notify::new()),
    };
    let (stores, reflectors) = cluster::start(client.clone(), dirty.clone());
    let (feedback_tx, feedback_rx) = mpsc::channel::<Feedback>(64);
    let publisher = feedback::Publisher::new(
        client.clone(),
        stores.clone(),
        feedback::Limiter::new(args.event_dedup_window, args.event_qps, args.event_burst),
    );
    let stream = Stream {
        endpoints,
        next: Default::default(),
        watcher_id: args.watcher_id.clone(),
        stores: stores.clone(),
        dirty: dirty.clone(),
        max_in_flight: args.max_batches_in_flight.max(1),
        coalesce: args.coalesce,
        feedback: feedback_tx,
        ready: ready_tx,
    };
    let status_interval = args.status_interval;
    let task = tokio::spawn({
        let stopped = stopped.clone();
        async move {
            let until = || berth_service::stopped(stopped.clone());
            let work = async {
                tokio::join!(
                    reflectors,
                    stream.run(stopped.clone()),
                    publish(publisher, feedback_rx),
                    statuses(client, stores, dirty.tracker.clone(), status_interval),
                );
            };
            tokio::select! {
                () = work => {}
                () = until() => {}
            }
            admin.await
        }
    });
    Ok(Running {
        admin_addr,
        stop,
        task,
    })
}

async fn publish(mut publisher: feedback::Publisher, mut rx: mpsc::Receiver<Feedback>) {
    while let Some(f) = rx.recv().await {
        publisher.publish(&f).await;
    }
}

async fn statuses(
    client: kube::Client,
    stores: Stores,
    tracker: Arc<Mutex<Tracker>>,
    every: Duration,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if stores.node_pools.wait_until_ready().await.is_err() {
            continue;
        }
        let _ = stores.nodes.wait_until_ready().await;
        feedback::update_node_pool_statuses(&client, &stores).await;
        let t = tracker.lock().await;
        for kind in [
            ObjectKind::Pod,
            ObjectKind::Node,
            ObjectKind::NodeClaim,
            ObjectKind::NodePool,
            ObjectKind::DaemonSet,
            ObjectKind::PodDisruptionBudget,
            ObjectKind::Namespace,
        ] {
            ::metrics::gauge!(metrics::OBJECTS, "kind" => format!("{kind:?}"))
                .set(t.count(kind) as f64);
        }
    }
}

/// The Sync stream to the scheduler, reopened whenever it breaks.
struct Stream {
    /// The scheduler's addresses: one, or its replicas' of which only the leader listens.
    endpoints: Vec<tonic::transport::Endpoint>,
    /// The one to try next (moves on after a failure).
    next: std::sync::atomic::AtomicUsize,
    watcher_id: String,
    stores: Stores,
    dirty: Dirty,
    max_in_flight: u64,
    coalesce: Duration,
    feedback: mpsc::Sender<Feedback>,
    ready: watch::Sender<bool>,
}

impl Stream {
    async fn run(self, stop: watch::Receiver<bool>) {
        let mut failures: u32 = 0;
        let mut opened = false;
        loop {
            if failures > 0 {
                let backoff = Duration::from_millis(100)
                    .saturating_mul(1 << failures.min(6))
                    .min(Duration::from_secs(5));
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = berth_service::stopped(stop.clone()) => return,
                }
            }
            if opened {
                ::metrics::counter!(metrics::STREAM_RECONNECTS_TOTAL).increment(1);
            }
            let outcome = tokio::select! {
                r = self.session() => r,
                () = berth_service::stopped(stop.clone()) => return,
            };
            let _ = self.ready.send(false);
            match outcome {
                Ok(()) => failures = 0,
                Err(e) => {
                    failures = failures.saturating_add(1);
                    self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::warn!(error = %format!("{e:#}"), "sync stream to the scheduler");
                }
            }
            opened = true;
        }
    }

    /// One stream: snapshot, then deltas until it breaks.
    async fn session(&self) -> anyhow::Result<()> {
        let endpoint = &self.endpoints
            [self.next.load(std::sync::atomic::Ordering::Relaxed) % self.endpoints.len()];
        let channel = endpoint
            .connect()
            .await
            .with_context(|| format!("connecting to {}", endpoint.uri()))?;
        let mut client = p::scheduler_client::SchedulerClient::new(channel)
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20);
        self.stores.ready().await;
        let (tx, rx) = mpsc::channel::<p::SyncRequest>(8);
        tx.send(p::SyncRequest {
            message: Some(p::sync_request::Message::Hello(p::Hello {
                watcher_id: self.watcher_id.clone(),
            })),
        })
        .await
        .ok()
        .context("the stream closed")?;
        let responses = client
            .sync(ReceiverStream::new(rx))
            .await
            .context("opening Sync")?
            .into_inner();
        let snapshot = {
            let mut t = self.dirty.tracker.lock().await;
            t.snapshot(self.stores.all())
        };
        let last = snapshot.last().map_or(0, |b| b.sequence);
        let reader = tokio::spawn(read_feedback(
            responses,
            self.dirty.clone(),
            self.feedback.clone(),
            self.ready.clone(),
            last,
        ));
        let result = async {
            for b in &snapshot {
                ::metrics::counter!(metrics::CHANGES_SENT_TOTAL, "kind" => "snapshot")
                    .increment(b.changes.len() as u64);
                send(&tx, b).await?;
            }
            tracing::info!(batches = snapshot.len(), "snapshot sent");
            drop(snapshot);
            loop {
                tokio::select! {
                    () = self.dirty.changed.notified() => {}
                    () = closed(&reader) => anyhow::bail!("the scheduler ended the stream"),
                }
                tokio::time::sleep(self.coalesce).await;
                loop {
                    let batch = {
                        let mut t = self.dirty.tracker.lock().await;
                        ::metrics::gauge!(metrics::BATCHES_IN_FLIGHT).set(t.in_flight() as f64);
                        if t.in_flight() >= self.max_in_flight {
                            break;
                        }
                        t.delta(|k| self.stores.current(k))
                    };
                    let Some(b) = batch else { break };
                    ::metrics::counter!(metrics::DELTAS_SENT_TOTAL).increment(1);
                    ::metrics::counter!(metrics::CHANGES_SENT_TOTAL, "kind" => "delta")
                        .increment(b.changes.len() as u64);
                    send(&tx, &b).await?;
                }
            }
        }
        .await;
        reader.abort();
        result
    }
}

async fn closed(reader: &tokio::task::JoinHandle<anyhow::Result<()>>) {
    while !reader.is_finished() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn send(
    tx: &mpsc::Sender<p::SyncRequest>,
    b: &berth_scheduler_core::sync::Batch,
) -> anyhow::Result<()> {
    tx.send(p::SyncRequest {
        message: Some(p::sync_request::Message::Batch(p::Batch::from(b))),
    })
    .await
    .ok()
    .context("the stream closed")
}

async fn read_feedback(
    mut responses: tonic::Streaming<p::SyncResponse>,
    dirty: Dirty,
    feedback: mpsc::Sender<Feedback>,
    ready: watch::Sender<bool>,
    snapshot_end: u64,
) -> anyhow::Result<()> {
    while let Some(message) = responses.message().await? {
        let Some(f) = message.feedback else { continue };
        let f = Feedback::try_from(f).map_err(|e| anyhow::anyhow!("feedback: {e}"))?;
        dirty.tracker.lock().await.acknowledge(f.acknowledged);
        if f.acknowledged >= snapshot_end {
            let _ = ready.send(true);
        }
        dirty.changed.notify_one();
        if !(f.nominations.is_empty() && f.unschedulable.is_empty())
            && feedback.try_send(f).is_err()
        {
            ::metrics::counter!(metrics::EVENTS_DROPPED_TOTAL, "why" => "queue_full").increment(1);
        }
    }
    Ok(())
}
