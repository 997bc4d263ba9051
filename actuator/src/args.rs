//! Flags, each with a `BERTH_*` environment fallback.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Provider {
    /// Amazon EC2 through the AWS SDK (credentials from the default chain).
    Ec2,
    /// The in-memory sim cloud over the built-in (or `--catalog`) instance types.
    Sim,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum NodeClaims {
    /// `karpenter.sh/v1` NodeClaim objects in the cluster (`--kubeconfig`, else in-cluster).
    Kubernetes,
    /// In memory: for trying the sim cloud without a cluster; lost on restart.
    Memory,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

fn duration(s: &str) -> Result<Duration, String> {
    berth_api::duration::parse_flag(s)
}

/// berth-actuator: the only caller of the cloud and the only writer of NodeClaims. Serves the
/// `berth.v1.CloudProvider` gRPC service (the contract another cloud's actuator implements).
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "berth-actuator", version)]
pub struct Args {
    /// Address of the gRPC service (CloudProvider, health, reflection).
    #[arg(long, env = "BERTH_GRPC_ADDR", default_value = "127.0.0.1:50052")]
    pub grpc_addr: SocketAddr,
    /// Address of `/metrics`, `/healthz` and `/readyz`.
    #[arg(long, env = "BERTH_ADMIN_ADDR", default_value = "127.0.0.1:9092")]
    pub admin_addr: SocketAddr,
    #[arg(long, env = "BERTH_PROVIDER", value_enum, default_value = "sim")]
    pub provider: Provider,
    /// Where NodeClaims are written.
    #[arg(
        long,
        env = "BERTH_NODE_CLAIMS",
        value_enum,
        default_value = "kubernetes"
    )]
    pub node_claims: NodeClaims,
    /// The NodeClaim lifecycle (registration, initialization, liveness, drain, termination)
    /// and EC2NodeClass status are reconciled on every watched change and at least this often
    /// (with `--node-claims kubernetes`).
    #[arg(long, env = "BERTH_LIFECYCLE_INTERVAL", default_value = "2s", value_parser = duration)]
    pub lifecycle_interval: Duration,
    /// How often instances without a NodeClaim (and NodeClaims without an instance) are looked for.
    #[arg(long, env = "BERTH_GC_INTERVAL", default_value = "30s", value_parser = duration)]
    pub gc_interval: Duration,
    /// A launched instance's node must register within this, or its NodeClaim is deleted.
    #[arg(long, env = "BERTH_REGISTRATION_TTL", default_value = "15m", value_parser = duration)]
    pub registration_ttl: Duration,
    /// A NodeClaim whose launch is not recorded this long after its creation is launched by
    /// the lifecycle controller (its launcher died between the cloud call and the status
    /// write); longer than a Launch call takes.
    #[arg(long, env = "BERTH_LAUNCH_GRACE", default_value = "60s", value_parser = duration)]
    pub launch_grace: Duration,
    /// A disruption decision whose replacements are not initialized this long after it was
    /// recorded is rolled back (the candidates untainted, the replacements deleted).
    #[arg(long, env = "BERTH_REPLACEMENT_TTL", default_value = "15m", value_parser = duration)]
    pub replacement_ttl: Duration,
    /// Kubeconfig of the cluster (default: `KUBECONFIG`, `~/.kube/config`, or in-cluster).
    #[arg(long, env = "BERTH_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// The cluster's name (instance tags, user data).
    #[arg(long, env = "BERTH_CLUSTER_NAME", default_value = "berth")]
    pub cluster_name: String,
    /// The API server's URL nodes join (EC2 user data).
    #[arg(long, env = "BERTH_CLUSTER_ENDPOINT", default_value = "")]
    pub cluster_endpoint: String,
    /// Base64 of the cluster CA bundle (EC2 user data).
    #[arg(long, env = "BERTH_CLUSTER_CA_BUNDLE", default_value = "")]
    pub cluster_ca_bundle: String,
    /// The cluster's service CIDR (AL2023 user data).
    #[arg(long, env = "BERTH_SERVICE_CIDR", default_value = "10.100.0.0/16")]
    pub service_cidr: String,
    /// Kubernetes minor version, for AMI aliases (`1.33`).
    #[arg(long, env = "BERTH_KUBERNETES_VERSION", default_value = "1.33")]
    pub kubernetes_version: String,
    /// AWS region.
    #[arg(long, env = "BERTH_REGION", default_value = "us-east-1")]
    pub region: String,
    /// An AWS endpoint to use instead of AWS's (moto, a VPC endpoint).
    #[arg(long, env = "BERTH_AWS_ENDPOINT_URL")]
    pub aws_endpoint_url: Option<String>,
    /// A price file (negotiated discounts, Savings Plans); see docs/configuration.md.
    #[arg(long, env = "BERTH_PRICE_FILE")]
    pub price_file: Option<PathBuf>,
    /// EC2NodeClasses (YAML, v1 or v1beta1) to launch with, read at start.
    #[arg(long, env = "BERTH_NODE_CLASSES")]
    pub node_classes: Option<PathBuf>,
    /// Instance-type catalog of the sim cloud (default: the built-in us-east-1 one).
    #[arg(long, env = "BERTH_CATALOG")]
    pub catalog: Option<PathBuf>,
    /// Sim cloud: from launch to running.
    #[arg(long, env = "BERTH_SIM_BOOT_DELAY", default_value = "45s", value_parser = duration)]
    pub sim_boot_delay: Duration,
    /// Sim cloud: from terminate to gone.
    #[arg(long, env = "BERTH_SIM_TERMINATION_DELAY", default_value = "30s", value_parser = duration)]
    pub sim_termination_delay: Duration,
    /// Deadline for every RPC served.
    #[arg(long, env = "BERTH_RPC_TIMEOUT", default_value = "60s", value_parser = duration)]
    pub rpc_timeout: Duration,
    /// Requests in flight per connection before new ones wait.
    #[arg(long, env = "BERTH_MAX_CONCURRENT_RPCS", default_value_t = 64)]
    pub max_concurrent_rpcs: usize,
    #[command(flatten)]
    pub tls: berth_service::TlsArgs,
    #[command(flatten)]
    pub leader: berth_service::leader::LeaderArgs,
    #[arg(long, env = "BERTH_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// `tracing` filter (`info`, `berth_actuator=debug,info`).
    #[arg(long, env = "BERTH_LOG", default_value = "info")]
    pub log: String,
}
