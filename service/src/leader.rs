//! Leader election on a `coordination.k8s.io/v1` Lease (through `kube-lease-manager`), so a
//! Deployment can run two or more replicas of a service that must have one writer.
//!
//! A replica that is not the leader is a standby: it serves `/healthz`, `/readyz` and
//! `/metrics` (it is live and ready, so rollouts and PodDisruptionBudgets count it) but does
//! none of its work and does not listen on its gRPC port, so clients (a Service, or a list
//! of addresses) reach the leader only. When the leader dies its lease runs out
//! ([`LEASE_DURATION`]) and a standby takes over. A leader that loses its lease (it could not
//! renew in time: a partition, a stalled process) exits at once, as client-go's and
//! controller-runtime's leaders do, rather than run on beside the new one.

use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::watch;

/// How long a lease lasts without renewal: the longest a dead leader's work waits for a
/// standby (Karpenter's is 15 s).
pub const LEASE_DURATION: Duration = Duration::from_secs(10);
/// How long before expiry the leader renews it.
pub const RENEW_GRACE: Duration = Duration::from_secs(4);

/// Leader election flags, the same for every service.
#[derive(Debug, Clone, clap::Args)]
pub struct LeaderArgs {
    /// Run only while holding the Lease (for 2+ replicas; needs a Kubernetes client).
    #[arg(
        long,
        env = "BERTH_LEADER_ELECT",
        default_value_t = false,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    pub leader_elect: bool,
    /// Namespace of the Lease.
    #[arg(
        long,
        env = "BERTH_LEADER_ELECTION_NAMESPACE",
        default_value = "default"
    )]
    pub leader_election_namespace: String,
    /// Name of the Lease (default: `berth-<service>`).
    #[arg(long, env = "BERTH_LEADER_ELECTION_LEASE")]
    pub leader_election_lease: Option<String>,
    /// This replica's identity in the Lease (default: `POD_NAME`, else the host name).
    #[arg(long, env = "BERTH_LEADER_ELECTION_IDENTITY")]
    pub leader_election_identity: Option<String>,
}

impl LeaderArgs {
    /// The identity written in the Lease's `holderIdentity`.
    pub fn identity(&self) -> String {
        self.leader_election_identity
            .clone()
            .or_else(|| std::env::var("POD_NAME").ok())
            .or_else(|| std::env::var("HOSTNAME").ok())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| format!("berth-{}", std::process::id()))
    }
}

/// Leadership held: [`Leadership::lost`] resolves if it ends.
#[derive(Debug)]
pub struct Leadership {
    /// `None` without leader election: leadership never ends.
    state: Option<watch::Receiver<bool>>,
}

impl Leadership {
    /// Leadership without an election (`--leader-elect false`): the only replica.
    pub fn sole() -> Self {
        Self { state: None }
    }

    /// Resolves when the lease is lost (never without an election).
    pub async fn lost(mut self) {
        let Some(rx) = self.state.as_mut() else {
            return std::future::pending().await;
        };
        // An error means the manager's task ended: the lease is no longer renewed.
        let _ = rx.wait_for(|leader| !*leader).await;
    }

    /// Exits the process (code 1) when the lease is lost: the new leader must be the only one.
    pub fn exit_when_lost(self, service: &'static str) {
        if self.state.is_none() {
            return;
        }
        tokio::spawn(async move {
            self.lost().await;
            tracing::error!(
                service,
                "lost the leader lease; exiting so only the new leader runs"
            );
            std::process::exit(1);
        });
    }
}

/// Waits until this replica holds the Lease `berth-<service>` (or `--leader-election-lease`),
/// or returns at once when `--leader-elect` is off.
pub async fn acquire(
    client: Option<kube::Client>,
    args: &LeaderArgs,
    service: &str,
) -> anyhow::Result<Leadership> {
    if !args.leader_elect {
        return Ok(Leadership::sole());
    }
    let client = client.context("--leader-elect needs a Kubernetes client (--kubeconfig)")?;
    let lease = args
        .leader_election_lease
        .clone()
        .unwrap_or_else(|| format!("berth-{service}"));
    let identity = args.identity();
    let manager = kube_lease_manager::LeaseManagerBuilder::new(client, &lease)
        .with_namespace(&args.leader_election_namespace)
        .with_identity(&identity)
        .with_duration(LEASE_DURATION.as_secs())
        .with_grace(RENEW_GRACE.as_secs())
        .with_field_manager(format!("berth-{service}"))
        .build()
        .await
        .with_context(|| {
            format!(
                "Lease {}/{lease} (--leader-election-namespace, --leader-election-lease)",
                args.leader_election_namespace
            )
        })?;
    let (mut state, _task) = manager.watch().await;
    // A free lease is taken in one round trip; a held one is waited for.
    let quick = tokio::time::timeout(Duration::from_secs(2), state.wait_for(|leader| *leader))
        .await
        .is_ok();
    if !quick {
        tracing::info!(%lease, %identity, "standby: waiting for the leader lease");
        state
            .wait_for(|leader| *leader)
            .await
            .context("the lease manager stopped")?;
    }
    tracing::info!(%lease, %identity, "leading");
    Ok(Leadership { state: Some(state) })
}
