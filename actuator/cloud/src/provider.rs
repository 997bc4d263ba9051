//! The `CloudProvider` trait; the instance it reports is the core model's `Instance`.

use std::future::Future;

use berth_scheduler_core::cloud::CloudError;
pub use berth_scheduler_core::model::{Instance, InstanceState};
use berth_scheduler_core::model::{InstanceType, NodeClaim, NodePool};

/// Why a NodeClaim no longer matches what its NodePool and NodeClass would launch now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriftReason(pub String);

/// A cloud that launches and terminates the instances behind NodeClaims.
///
/// # Contract
/// - **Idempotent by NodeClaim name.** [`create`](Self::create) called again for a claim that
///   already has a live instance returns that instance and launches nothing, including after
///   the caller (or the provider process) restarted between the two calls: the provider finds
///   the instance by the claim name it tagged it with, not by memory.
/// - **`NotFound` means gone.** [`get`](Self::get) and [`delete`](Self::delete) return
///   [`CloudError::NotFound`] when the claim has no instance: never launched, or terminated.
///   [`delete`](Self::delete) of a live instance starts termination and returns `Ok(())`; the
///   caller repeats it until it returns `NotFound`, which is how it learns termination finished.
/// - **`instance_types` lists everything.** Every instance type the NodePool's requirements
///   and node class allow, with every offering, including those currently unavailable (their
///   `available` is false, e.g. after an insufficient-capacity error). The scheduler decides
///   what to use; the provider never hides a type.
/// - **Launch picks the offering.** [`create`](Self::create) launches one instance of one of the
///   types, zones and capacity types the claim's requirements allow (its `node.kubernetes.io/instance-type`
///   values come cheapest first); spot before on-demand when both are allowed; an offering that
///   has no capacity is skipped and remembered. When none is left it returns
///   [`CloudError::InsufficientCapacity`] listing the offerings tried.
/// - **Errors are typed.** Callers branch on [`CloudError`]: `NodeClassNotReady` (do not launch
///   into this pool now), `InsufficientCapacity` (re-fetch instance types and re-plan),
///   `Launch` (the cloud's own code), `Unavailable` (retry with backoff), `InvalidArgument`.
pub trait CloudProvider: Send + Sync + 'static {
    /// A short name for metrics and logs (`ec2`, `sim`).
    fn name(&self) -> &'static str;

    /// Launches an instance for `claim` (see the contract on idempotency and offerings).
    fn create(
        &self,
        claim: &NodeClaim,
    ) -> impl Future<Output = Result<Instance, CloudError>> + Send;

    /// Starts or checks termination of the claim's instance: `Ok(())` while it shuts down,
    /// `NotFound` once it is gone.
    fn delete(&self, node_claim: &str) -> impl Future<Output = Result<(), CloudError>> + Send;

    /// The claim's instance; `NotFound` when there is none.
    fn get(&self, node_claim: &str) -> impl Future<Output = Result<Instance, CloudError>> + Send;

    /// Every live instance this provider launched for the cluster (found by tags, not memory).
    fn list(&self) -> impl Future<Output = Result<Vec<Instance>, CloudError>> + Send;

    /// Every instance type `node_pool` may launch, with all offerings (see the contract).
    fn instance_types(
        &self,
        node_pool: &NodePool,
    ) -> impl Future<Output = Result<Vec<InstanceType>, CloudError>> + Send;

    /// Annotations to record on `claim` with its launch, for [`is_drifted`](Self::is_drifted)
    /// to compare later (EC2: `karpenter.k8s.aws/ec2nodeclass-hash` and its version). None by
    /// default. Computed from what the provider holds (no cloud call), so it cannot fail.
    fn launch_annotations(&self, claim: &NodeClaim) -> std::collections::BTreeMap<String, String> {
        let _ = claim;
        std::collections::BTreeMap::new()
    }

    /// Whether the claim's instance no longer matches what would be launched now: `None` when
    /// it still matches, else the reason as `"<Word>: <why>"`, the word Karpenter's
    /// (`NodeClassDrift`: the static hash from [`launch_annotations`](Self::launch_annotations)
    /// differs, same hash version only; `AMIDrift`, `SubnetDrift`, `SecurityGroupDrift`). The
    /// lifecycle sets the claim's `Drifted` condition from it. `NotFound` when the claim has no
    /// instance. Called for every initialized claim every few minutes: keep it cheap (cached
    /// resolutions, one lookup of the instance).
    fn is_drifted(
        &self,
        claim: &NodeClaim,
    ) -> impl Future<Output = Result<Option<DriftReason>, CloudError>> + Send;
}
