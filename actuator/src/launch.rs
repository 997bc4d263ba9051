//! One launch: the cloud call and the status write that records it. Shared by the `Launch`
//! RPC (which creates the NodeClaim first) and the lifecycle controller (which resumes a
//! launch that an actuator gone away never recorded).

use berth_cloud::{CloudError, CloudProvider};
use berth_scheduler_core::model::{Instance, NodeClaim};

use crate::metrics as m;
use crate::store::{NodeClaimStore, StoreError};

/// Why a launch did not finish.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The cloud refused or failed; `Launched=False` with its reason was recorded (best
    /// effort).
    #[error(transparent)]
    Cloud(CloudError),
    /// The instance exists but its status could not be written: the next attempt finds the
    /// instance by the claim's name and records it.
    #[error(transparent)]
    Store(StoreError),
}

/// Launches `claim` (which must exist in `store`) and records the instance on it.
pub async fn launch<P: CloudProvider, S: NodeClaimStore>(
    provider: &P,
    store: &S,
    claim: &NodeClaim,
) -> Result<Instance, LaunchError> {
    match provider.create(claim).await {
        Ok(instance) => {
            // Before the launch is recorded: a claim recorded Launched always carries what
            // drift is later compared with (a crash in between resumes the launch, and this).
            store
                .annotate(&claim.name, &provider.launch_annotations(claim))
                .await
                .map_err(LaunchError::Store)?;
            store
                .launched(&claim.name, &instance)
                .await
                .map_err(LaunchError::Store)?;
            metrics::counter!(m::LAUNCHES_TOTAL,
                "nodepool" => claim.node_pool.clone(),
                "instance_type" => instance.instance_type.clone(),
                "zone" => instance.zone.clone(),
                "capacity_type" => instance.capacity_type.as_str())
            .increment(1);
            tracing::info!(node_claim = %claim.name, provider_id = %instance.provider_id, "launched");
            Ok(instance)
        }
        Err(e) => {
            metrics::counter!(m::LAUNCH_FAILURES_TOTAL,
                "nodepool" => claim.node_pool.clone(), "reason" => e.code())
            .increment(1);
            tracing::warn!(node_claim = %claim.name, error = %e, "launch failed");
            // The status is best effort: the caller learns the error either way.
            if let Err(se) = store.launch_failed(&claim.name, &e.to_string()).await {
                tracing::warn!(node_claim = %claim.name, error = %se, "recording the launch failure");
            }
            Err(LaunchError::Cloud(e))
        }
    }
}
