//! A [`CloudProvider`] wrapper that records each call's duration and errors.

use std::future::Future;
use std::time::Instant;

use berth_scheduler_core::cloud::CloudError;
use berth_scheduler_core::model::{InstanceType, NodeClaim, NodePool};

use crate::metrics::{record_call, record_error};
use crate::provider::{CloudProvider, DriftReason, Instance};

/// Wraps a provider; every method records [`crate::metrics::CLOUD_CALL_DURATION_SECONDS`] and,
/// on error, [`crate::metrics::CLOUD_CALL_ERRORS_TOTAL`] with the error's code. A `NotFound`
/// from `delete` is how termination is confirmed, so it is not counted as an error there.
#[derive(Debug, Clone)]
pub struct Metered<P> {
    inner: P,
}

impl<P: CloudProvider> Metered<P> {
    pub fn new(inner: P) -> Self {
        Self { inner }
    }

    pub fn inner(&self) -> &P {
        &self.inner
    }

    async fn timed<T>(
        &self,
        method: &'static str,
        call: impl Future<Output = Result<T, CloudError>>,
    ) -> Result<T, CloudError> {
        let started = Instant::now();
        let out = call.await;
        let provider = self.inner.name();
        record_call(provider, method, started.elapsed());
        if let Err(e) = &out
            && !(method == "delete" && matches!(e, CloudError::NotFound { .. }))
        {
            record_error(provider, method, e.code());
        }
        out
    }
}

impl<P: CloudProvider> CloudProvider for Metered<P> {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    async fn create(&self, claim: &NodeClaim) -> Result<Instance, CloudError> {
        self.timed("create", self.inner.create(claim)).await
    }

    async fn delete(&self, node_claim: &str) -> Result<(), CloudError> {
        self.timed("delete", self.inner.delete(node_claim)).await
    }

    async fn get(&self, node_claim: &str) -> Result<Instance, CloudError> {
        self.timed("get", self.inner.get(node_claim)).await
    }

    async fn list(&self) -> Result<Vec<Instance>, CloudError> {
        self.timed("list", self.inner.list()).await
    }

    async fn instance_types(&self, node_pool: &NodePool) -> Result<Vec<InstanceType>, CloudError> {
        self.timed("instance_types", self.inner.instance_types(node_pool))
            .await
    }

    fn launch_annotations(&self, claim: &NodeClaim) -> std::collections::BTreeMap<String, String> {
        self.inner.launch_annotations(claim)
    }

    async fn is_drifted(&self, claim: &NodeClaim) -> Result<Option<DriftReason>, CloudError> {
        self.timed("is_drifted", self.inner.is_drifted(claim)).await
    }
}
