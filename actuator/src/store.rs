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
    /// The NodeClaim is in a state the request cannot apply to (being deleted, in another
    /// disruption decision).
    #[error("{0}")]
    Conflict(String),
}

/// A disruption decision as recorded on each of its candidate NodeClaims.
#[derive(Debug, Clone, PartialEq)]
pub struct DisruptionMark {
    pub id: String,
    pub method: String,
    pub replacements: Vec<String>,
    pub started_at: std::time::SystemTime,
    /// USD/hour the decision saves (`None` on a record written before it was kept).
    pub savings_per_hour: Option<f64>,
    /// Why, in words (empty when not kept).
    pub reason: String,
}

impl DisruptionMark {
    /// As annotations.
    pub fn annotations(&self) -> BTreeMap<String, String> {
        let started: k8s_openapi::jiff::Timestamp = self
            .started_at
            .try_into()
            .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        [
            (labels::DISRUPTION_ID.to_owned(), self.id.clone()),
            (labels::DISRUPTION_METHOD.to_owned(), self.method.clone()),
            (
                labels::DISRUPTION_REPLACEMENTS.to_owned(),
                self.replacements.join(","),
            ),
            (labels::DISRUPTION_STARTED.to_owned(), started.to_string()),
        ]
        .into_iter()
        .chain(
            self.savings_per_hour
                .map(|s| (labels::DISRUPTION_SAVINGS.to_owned(), s.to_string())),
        )
        .chain(
            (!self.reason.is_empty())
                .then(|| (labels::DISRUPTION_REASON.to_owned(), self.reason.clone())),
        )
        .collect()
    }

    /// From a NodeClaim's annotations; `None` when it is in no decision.
    pub fn from_annotations(a: &BTreeMap<String, String>) -> Option<Self> {
        let id = a.get(labels::DISRUPTION_ID)?.clone();
        let started_at = a
            .get(labels::DISRUPTION_STARTED)
            .and_then(|s| s.parse::<k8s_openapi::jiff::Timestamp>().ok())
            .map_or(
                std::time::SystemTime::UNIX_EPOCH,
                std::time::SystemTime::from,
            );
        Some(Self {
            id,
            method: a
                .get(labels::DISRUPTION_METHOD)
                .cloned()
                .unwrap_or_default(),
            replacements: a
                .get(labels::DISRUPTION_REPLACEMENTS)
                .map(|r| {
                    r.split(',')
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
            started_at,
            savings_per_hour: a
                .get(labels::DISRUPTION_SAVINGS)
                .and_then(|s| s.parse().ok()),
            reason: a
                .get(labels::DISRUPTION_REASON)
                .cloned()
                .unwrap_or_default(),
        })
    }
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
    /// Merges `annotations` into the NodeClaim's (what the provider records with a launch,
    /// e.g. the EC2NodeClass hash); nothing when empty.
    fn annotate(
        &self,
        name: &str,
        annotations: &BTreeMap<String, String>,
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
    /// Whether the NodeClaim still exists (being deleted counts).
    fn exists(&self, name: &str) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// Records `mark` on the NodeClaim. Idempotent for the same decision id; `Conflict` when
    /// the claim is being deleted or already in another decision, `NotFound` when gone.
    fn mark_disruption(
        &self,
        name: &str,
        mark: &DisruptionMark,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Removes the record of decision `id` (a rollback); nothing when it is not there.
    fn clear_disruption(
        &self,
        name: &str,
        id: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
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
    async fn annotate(
        &self,
        name: &str,
        annotations: &BTreeMap<String, String>,
    ) -> Result<(), StoreError> {
        self.with(name, |s| {
            s.claim
                .annotations
                .extend(annotations.iter().map(|(k, v)| (k.clone(), v.clone())))
        })
    }

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

    async fn exists(&self, name: &str) -> Result<bool, StoreError> {
        Ok(self.lock().contains_key(name))
    }

    async fn mark_disruption(&self, name: &str, mark: &DisruptionMark) -> Result<(), StoreError> {
        self.with(name, |s| {
            if s.deleting {
                return Err(StoreError::Conflict(format!(
                    "NodeClaim {name} is being deleted"
                )));
            }
            match s.claim.annotations.get(labels::DISRUPTION_ID) {
                Some(id) if *id != mark.id => Err(StoreError::Conflict(format!(
                    "NodeClaim {name} is already in disruption {id}"
                ))),
                Some(_) => Ok(()),
                None => {
                    s.claim.annotations.extend(mark.annotations());
                    Ok(())
                }
            }
        })?
    }

    async fn clear_disruption(&self, name: &str, id: &str) -> Result<(), StoreError> {
        let mut claims = self.lock();
        if let Some(s) = claims.get_mut(name)
            && s.claim
                .annotations
                .get(labels::DISRUPTION_ID)
                .map(String::as_str)
                == Some(id)
        {
            for k in [
                labels::DISRUPTION_ID,
                labels::DISRUPTION_METHOD,
                labels::DISRUPTION_REPLACEMENTS,
                labels::DISRUPTION_STARTED,
                labels::DISRUPTION_SAVINGS,
                labels::DISRUPTION_REASON,
            ] {
                s.claim.annotations.remove(k);
            }
        }
        Ok(())
    }
}

/// NodeClaims as `karpenter.sh/v1` objects in Kubernetes.
#[derive(Clone)]
pub struct Kube {
    api: kube::Api<berth_api::v1::NodeClaim>,
    clock: Arc<dyn Fn() -> std::time::SystemTime + Send + Sync>,
}

impl std::fmt::Debug for Kube {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kube").finish_non_exhaustive()
    }
}

/// A Kubernetes failure as the store's error (callers branch on `NotFound` apart).
pub(crate) fn kube_error(e: kube::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// Whether the API server answered with this HTTP status.
pub(crate) fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

impl Kube {
    pub fn new(client: kube::Client) -> Self {
        Self {
            api: kube::Api::all(client),
            clock: Arc::new(std::time::SystemTime::now),
        }
    }

    pub fn client(&self) -> kube::Client {
        self.api.clone().into_client()
    }

    /// Sets one status condition (replacing one of the same type) and, in the same write,
    /// the other status fields of `extra`; retried on a conflicting write.
    pub(crate) async fn set_condition(
        &self,
        name: &str,
        condition: k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition,
        extra: serde_json::Value,
    ) -> Result<(), StoreError> {
        use kube::api::{Patch, PatchParams};
        for _ in 0..5 {
            let current = match self.api.get(name).await {
                Ok(c) => c,
                Err(e) if is_status(&e, 404) => return Err(StoreError::NotFound(name.to_owned())),
                Err(e) => return Err(kube_error(e)),
            };
            let mut conditions = current
                .status
                .as_ref()
                .map(|s| s.conditions.clone())
                .unwrap_or_default();
            match conditions.iter_mut().find(|c| c.type_ == condition.type_) {
                // An unchanged status keeps its transition time.
                Some(c) if c.status == condition.status => {
                    c.reason = condition.reason.clone();
                    c.message = condition.message.clone();
                }
                Some(c) => *c = condition.clone(),
                None => conditions.push(condition.clone()),
            }
            let mut status = extra.clone();
            status["conditions"] = serde_json::to_value(&conditions).expect("conditions serialize");
            let patch = serde_json::json!({
                "metadata": {"resourceVersion": current.metadata.resource_version},
                "status": status,
            });
            match self
                .api
                .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) if is_status(&e, 409) => continue,
                Err(e) if is_status(&e, 404) => return Err(StoreError::NotFound(name.to_owned())),
                Err(e) => return Err(kube_error(e)),
            }
        }
        Err(StoreError::Unavailable(format!(
            "NodeClaim {name}: status kept changing under five attempts to write it"
        )))
    }

    pub(crate) fn condition(
        &self,
        type_: &str,
        status: bool,
        reason: &str,
        message: &str,
    ) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
        let now: k8s_openapi::jiff::Timestamp = (self.clock)()
            .try_into()
            .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
            type_: type_.to_owned(),
            status: if status { "True" } else { "False" }.to_owned(),
            reason: reason.to_owned(),
            message: message.to_owned(),
            last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now),
            observed_generation: None,
        }
    }
}

fn quantities(r: &berth_scheduler_core::model::Resources) -> serde_json::Value {
    r.iter()
        .map(|(k, v)| {
            (
                k.to_owned(),
                serde_json::Value::String(berth_scheduler_core::quantity::format_milli(v)),
            )
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

impl NodeClaimStore for Kube {
    async fn annotate(
        &self,
        name: &str,
        annotations: &BTreeMap<String, String>,
    ) -> Result<(), StoreError> {
        if annotations.is_empty() {
            return Ok(());
        }
        use kube::api::{Patch, PatchParams};
        let patch = serde_json::json!({ "metadata": { "annotations": annotations } });
        match self
            .api
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_status(&e, 404) => Err(StoreError::NotFound(name.to_owned())),
            Err(e) => Err(kube_error(e)),
        }
    }

    async fn create(&self, claim: &NodeClaim) -> Result<(), StoreError> {
        let obj = berth_api::domain::node_claim_object(claim);
        match self
            .api
            .create(&kube::api::PostParams::default(), &obj)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_status(&e, 409) => Ok(()),
            Err(e) => Err(kube_error(e)),
        }
    }

    async fn launched(&self, name: &str, instance: &Instance) -> Result<(), StoreError> {
        // The launched instance's labels (type, zone, capacity type, arch, ...) go on the
        // claim, as Karpenter's do: the scheduler counts an in-flight claim by them, and
        // registration copies them onto the Node.
        if !instance.labels.is_empty() {
            use kube::api::{Patch, PatchParams};
            let patch = serde_json::json!({ "metadata": { "labels": instance.labels } });
            match self
                .api
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {}
                Err(e) if is_status(&e, 404) => return Err(StoreError::NotFound(name.to_owned())),
                Err(e) => return Err(kube_error(e)),
            }
        }
        self.set_condition(
            name,
            self.condition("Launched", true, "Launched", ""),
            serde_json::json!({
                "providerID": instance.provider_id,
                "imageID": instance.image_id,
                "capacity": quantities(&instance.capacity),
                "allocatable": quantities(&instance.allocatable),
            }),
        )
        .await
    }

    async fn launch_failed(&self, name: &str, reason: &str) -> Result<(), StoreError> {
        self.set_condition(
            name,
            self.condition("Launched", false, "LaunchFailed", reason),
            serde_json::json!({}),
        )
        .await
    }

    async fn delete(&self, name: &str) -> Result<(), StoreError> {
        match self
            .api
            .delete(name, &kube::api::DeleteParams::default())
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_status(&e, 404) => Ok(()),
            Err(e) => Err(kube_error(e)),
        }
    }

    async fn exists(&self, name: &str) -> Result<bool, StoreError> {
        match self.api.get(name).await {
            Ok(_) => Ok(true),
            Err(e) if is_status(&e, 404) => Ok(false),
            Err(e) => Err(kube_error(e)),
        }
    }

    async fn mark_disruption(&self, name: &str, mark: &DisruptionMark) -> Result<(), StoreError> {
        self.patch_metadata(name, true, |current| {
            if current.metadata.deletion_timestamp.is_some() {
                return Err(StoreError::Conflict(format!(
                    "NodeClaim {name} is being deleted"
                )));
            }
            let annotations = current.metadata.annotations.clone().unwrap_or_default();
            match annotations.get(labels::DISRUPTION_ID) {
                Some(id) if *id == mark.id => Ok(None),
                Some(id) => Err(StoreError::Conflict(format!(
                    "NodeClaim {name} is already in disruption {id}"
                ))),
                None => Ok(Some(
                    serde_json::json!({ "annotations": mark.annotations() }),
                )),
            }
        })
        .await
    }

    async fn clear_disruption(&self, name: &str, id: &str) -> Result<(), StoreError> {
        self.patch_metadata(name, false, |current| {
            let annotations = current.metadata.annotations.clone().unwrap_or_default();
            if annotations.get(labels::DISRUPTION_ID).map(String::as_str) != Some(id) {
                return Ok(None);
            }
            Ok(Some(serde_json::json!({
                "annotations": {
                    labels::DISRUPTION_ID: null,
                    labels::DISRUPTION_METHOD: null,
                    labels::DISRUPTION_REPLACEMENTS: null,
                    labels::DISRUPTION_STARTED: null,
                    labels::DISRUPTION_SAVINGS: null,
                    labels::DISRUPTION_REASON: null,
                },
            })))
        })
        .await
    }

    async fn finalize(&self, name: &str) -> Result<(), StoreError> {
        self.patch_metadata(name, false, |current| {
            let finalizers: Vec<String> = current
                .metadata
                .finalizers
                .clone()
                .unwrap_or_default()
                .into_iter()
                .filter(|f| f != labels::TERMINATION_FINALIZER)
                .collect();
            Ok(Some(serde_json::json!({ "finalizers": finalizers })))
        })
        .await
    }
}

impl Kube {
    /// Merges the metadata `change` computes from the current object (`None`: nothing to
    /// write), guarded by its resourceVersion and retried on a conflicting write. A claim that
    /// is gone is `NotFound` when `must_exist`, else nothing to do.
    async fn patch_metadata(
        &self,
        name: &str,
        must_exist: bool,
        change: impl Fn(&berth_api::v1::NodeClaim) -> Result<Option<serde_json::Value>, StoreError>,
    ) -> Result<(), StoreError> {
        use kube::api::{Patch, PatchParams};
        let gone = || {
            if must_exist {
                Err(StoreError::NotFound(name.to_owned()))
            } else {
                Ok(())
            }
        };
        for _ in 0..5 {
            let current = match self.api.get(name).await {
                Ok(c) => c,
                Err(e) if is_status(&e, 404) => return gone(),
                Err(e) => return Err(kube_error(e)),
            };
            let Some(mut metadata) = change(&current)? else {
                return Ok(());
            };
            metadata["resourceVersion"] = current.metadata.resource_version.clone().into();
            let patch = serde_json::json!({ "metadata": metadata });
            match self
                .api
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) if is_status(&e, 409) => continue,
                Err(e) if is_status(&e, 404) => return gone(),
                Err(e) => return Err(kube_error(e)),
            }
        }
        Err(StoreError::Unavailable(format!(
            "NodeClaim {name}: kept changing under five attempts to write it"
        )))
    }
}
