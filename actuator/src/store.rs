//! Where the actuator writes NodeClaims. [`NodeClaimStore`] is the seam; [`Memory`] keeps them
//! in memory (tests, and running the sim cloud without a cluster); the Kubernetes store writes
//! `karpenter.sh/v1` NodeClaim objects.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, Mutex};

use berth_scheduler_core::labels;
use berth_scheduler_core::model::{Instance, NodeClaim};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("NodeClaim {0} not found")]
    NotFound(String),
    #[error("NodeClaim store unavailable: {0}")]
    Unavailable(String),
}

/// The NodeClaim writes the actuator makes.
///
/// # Contract
/// - `create` is idempotent: an existing NodeClaim of that name is left as it is.
/// - Every NodeClaim is created with the `karpenter.sh/termination` finalizer, so it cannot
///   disappear before its instance is terminated; `finalize` drops it.
pub trait NodeClaimStore: Send + Sync + 'static {
    fn create(&self, claim: &NodeClaim) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Records the launch: providerID, imageID, capacity, allocatable, `Launched=True`.
    fn launched(
        &self,
        name: &str,
        instance: &Instance,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Records a failed launch: `Launched=False` with the cloud's reason.
    fn launch_failed(
        &self,
        name: &str,
        reason: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Asks for deletion (the finalizer holds the object until `finalize`).
    fn delete(&self, name: &str) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Drops the termination finalizer: the instance is gone.
    fn finalize(&self, name: &str) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// A NodeClaim as [`Memory`] keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub claim: NodeClaim,
    pub finalizers: BTreeSet<String>,
    pub deleting: bool,
    pub instance: Option<Instance>,
    pub launch_failure: Option<String>,
}

/// NodeClaims in memory. Cheap to clone (clones share the map).
#[derive(Debug, Clone, Default)]
pub struct Memory {
    claims: Arc<Mutex<BTreeMap<String, Stored>>>,
}

impl Memory {
    pub fn get(&self, name: &str) -> Option<Stored> {
        self.lock().get(name).cloned()
    }

    pub fn names(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Stored>> {
        self.claims.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn with<T>(&self, name: &str, f: impl FnOnce(&mut Stored) -> T) -> Result<T, StoreError> {
        self.lock()
            .get_mut(name)
            .map(f)
            .ok_or_else(|| StoreError::NotFound(name.to_owned()))
    }
}

impl NodeClaimStore for Memory {
    async fn create(&self, claim: &NodeClaim) -> Result<(), StoreError> {
        self.lock()
            .entry(claim.name.clone())
            .or_insert_with(|| Stored {
                claim: claim.clone(),
                finalizers: [labels::TERMINATION_FINALIZER.to_owned()].into(),
                deleting: false,
                instance: None,
                launch_failure: None,
            });
        Ok(())
    }

    async fn launched(&self, name: &str, instance: &Instance) -> Result<(), StoreError> {
        self.with(name, |s| {
            s.claim.provider_id = instance.provider_id.clone();
            s.claim.image_id = instance.image_id.clone();
            s.claim.capacity = instance.capacity.clone();
            s.claim.allocatable = instance.allocatable.clone();
            s.instance = Some(instance.clone());
            s.launch_failure = None;
        })
    }

    async fn launch_failed(&self, name: &str, reason: &str) -> Result<(), StoreError> {
        self.with(name, |s| s.launch_failure = Some(reason.to_owned()))
    }

    async fn delete(&self, name: &str) -> Result<(), StoreError> {
        let mut claims = self.lock();
        match claims.get_mut(name) {
            Some(s) if s.finalizers.is_empty() => {
                claims.remove(name);
            }
            Some(s) => s.deleting = true,
            None => {}
        }
        Ok(())
    }

    async fn finalize(&self, name: &str) -> Result<(), StoreError> {
        let mut claims = self.lock();
        if let Some(s) = claims.get_mut(name) {
            s.finalizers.remove(labels::TERMINATION_FINALIZER);
            if s.deleting && s.finalizers.is_empty() {
                claims.remove(name);
            }
        }
        Ok(())
    }
}
