//! # berth-service
//!
//! What the three Berth services (`berth-watcher`, `berth-scheduler`, `berth-actuator`) share,
//! so each binary is only its own flags and its own work:
//!
//! - [`LogArgs`] and [`init_tracing`]: `--log` filter and `--log-format text|json`;
//! - [`install_recorder`]: the process-wide Prometheus recorder (one per process, even when the
//!   sandbox runs all three services in it);
//! - [`serve_admin`]: `/metrics`, `/healthz` and `/readyz` on their own port;
//! - [`TlsArgs`]: rustls for the gRPC server and client when certificates are given,
//!   plaintext on loopback otherwise;
//! - [`kube_client`]: a Kubernetes client from `--kubeconfig` or the environment;
//! - [`leader`]: leader election on a Lease, so services run 2+ replicas with one writer;
//! - [`shutdown_signal`] and [`SHUTDOWN_GRACE`].

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

pub mod leader;

use anyhow::Context as _;
pub use metrics_exporter_prometheus::PrometheusHandle;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// How long a graceful shutdown waits for connected clients.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Logging flags, flattened into each binary's.
#[derive(Debug, Clone, clap::Args)]
pub struct LogArgs {
    #[arg(long, env = "BERTH_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// `tracing` filter (`info`, `berth_scheduler=debug,info`).
    #[arg(long, env = "BERTH_LOG", default_value = "info")]
    pub log: String,
}

/// Installs the process's log subscriber, writing to stdout (a second call in one process is
/// an error).
pub fn init_tracing(filter: &str, format: LogFormat) -> anyhow::Result<()> {
    let env = tracing_subscriber::EnvFilter::try_new(filter)
        .with_context(|| format!("--log {filter:?}"))?;
    let builder = tracing_subscriber::fmt().with_env_filter(env);
    match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    }
    .map_err(|e| anyhow::anyhow!("installing the log subscriber: {e}"))
}

/// Histogram buckets by metric name: each service's `metrics::BUCKETS`.
pub type Buckets = &'static [(&'static str, &'static [f64])];

/// Installs the process-wide Prometheus recorder with these histogram buckets. Only the first
/// call installs; later calls return the same handle (so a process running several services,
/// like `berth sandbox`, passes every service's buckets to its first call).
pub fn install_recorder(buckets: &[Buckets]) -> anyhow::Result<PrometheusHandle> {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    static INSTALLING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = INSTALLING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(h) = HANDLE.get() {
        return Ok(h.clone());
    }
    let mut builder = PrometheusBuilder::new();
    for (name, b) in buckets.iter().flat_map(|b| b.iter()) {
        builder = builder.set_buckets_for_metric(Matcher::Full((*name).to_owned()), b)?;
    }
    let handle = builder.install_recorder()?;
    Ok(HANDLE.get_or_init(|| handle).clone())
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("a SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Resolves once `stop` turns true (or its sender is gone).
pub async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Binds `addr` and serves `/metrics`, `/healthz` (the process is alive) and `/readyz` (200
/// once `ready` is true, 503 before) until `stop`.
pub async fn serve_admin(
    addr: SocketAddr,
    metrics: PrometheusHandle,
    ready: watch::Receiver<bool>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<(SocketAddr, impl Future<Output = anyhow::Result<()>>)> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("--admin-addr {addr}"))?;
    let bound = listener.local_addr()?;
    let app = axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(move || {
                let handle = metrics.clone();
                async move { handle.render() }
            }),
        )
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .route(
            "/readyz",
            axum::routing::get(move || {
                let ready = *ready.borrow();
                async move {
                    if ready {
                        (axum::http::StatusCode::OK, "ok")
                    } else {
                        (axum::http::StatusCode::SERVICE_UNAVAILABLE, "not ready")
                    }
                }
            }),
        );
    let serving = async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(stopped(stop))
            .await
            .context("admin server")
    };
    Ok((bound, serving))
}

/// TLS flags of a gRPC server, flattened into each binary's.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TlsArgs {
    /// TLS certificate (PEM) of the gRPC service; with `--tls-key`, serves TLS.
    #[arg(long, env = "BERTH_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    #[arg(long, env = "BERTH_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// CA (PEM) that client certificates must chain to (mutual TLS).
    #[arg(long, env = "BERTH_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
}

fn read(path: &Path, flag: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("{flag} {}", path.display()))
}

impl TlsArgs {
    /// The server's TLS configuration, `None` for plaintext.
    pub fn server_config(&self) -> anyhow::Result<Option<tonic::transport::ServerTlsConfig>> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        let mut tls = tonic::transport::ServerTlsConfig::new().identity(
            tonic::transport::Identity::from_pem(
                read(cert, "--tls-cert")?,
                read(key, "--tls-key")?,
            ),
        );
        if let Some(ca) = &self.tls_client_ca {
            tls = tls.client_ca_root(tonic::transport::Certificate::from_pem(read(
                ca,
                "--tls-client-ca",
            )?));
        }
        Ok(Some(tls))
    }
}

/// TLS flags of a gRPC client (the watcher calling the scheduler, the scheduler calling the
/// actuator). TLS is used when the peer's URL is `https://`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ClientTlsArgs {
    /// CA (PEM) the server's certificate must chain to (needed for `https://`).
    #[arg(long, env = "BERTH_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (PEM), for servers that require mutual TLS.
    #[arg(long, env = "BERTH_TLS_CLIENT_CERT", requires = "tls_client_key")]
    pub tls_client_cert: Option<PathBuf>,
    #[arg(long, env = "BERTH_TLS_CLIENT_KEY", requires = "tls_client_cert")]
    pub tls_client_key: Option<PathBuf>,
}

impl ClientTlsArgs {
    /// An endpoint for `url` with TLS when it is `https://`, and `timeout` on every call (none
    /// for long-lived streams).
    pub fn endpoint(
        &self,
        url: &str,
        flag: &str,
        timeout: Option<Duration>,
    ) -> anyhow::Result<tonic::transport::Endpoint> {
        let mut endpoint = tonic::transport::Endpoint::from_shared(url.to_owned())
            .with_context(|| format!("{flag} {url:?}"))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true);
        if let Some(t) = timeout {
            endpoint = endpoint.timeout(t);
        }
        if url.starts_with("https://") {
            let ca = self.tls_ca.as_deref().with_context(|| {
                format!("{flag} {url:?} is https://, so --tls-ca must name the CA that signed its certificate")
            })?;
            let mut tls = tonic::transport::ClientTlsConfig::new().ca_certificate(
                tonic::transport::Certificate::from_pem(read(ca, "--tls-ca")?),
            );
            if let (Some(cert), Some(key)) = (&self.tls_client_cert, &self.tls_client_key) {
                tls = tls.identity(tonic::transport::Identity::from_pem(
                    read(cert, "--tls-client-cert")?,
                    read(key, "--tls-client-key")?,
                ));
            }
            endpoint = endpoint
                .tls_config(tls)
                .with_context(|| format!("{flag} {url:?}"))?;
        }
        Ok(endpoint)
    }
}

/// A Kubernetes client from `kubeconfig`, else `KUBECONFIG`, `~/.kube/config` or in-cluster.
/// kube-rs's own retries are off: every Berth controller retries on its next pass, and a 429
/// from the Eviction API must come back at once.
pub async fn kube_client(kubeconfig: Option<&Path>) -> anyhow::Result<kube::Client> {
    let mut config = match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("--kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(file, &Default::default())
                .await
                .with_context(|| format!("--kubeconfig {}", path.display()))?
        }
        None => kube::Config::infer()
            .await
            .context("no Kubernetes configuration (give --kubeconfig)")?,
    };
    config.default_retry = false;
    kube::Client::try_from(config).context("building the Kubernetes client")
}
