//! Carrying lifecycle steps ([`crate::lifecycle`]) out against the Kubernetes API: node
//! labels, taints and owner, NodeClaim conditions, evictions, deletions. Each write uses the
//! object's resourceVersion and is retried on a conflict.

use std::collections::BTreeMap;

use berth_scheduler_core::labels;
use berth_scheduler_core::model::Taint;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, EvictParams, Patch, PatchParams};

use crate::store::{Kube, StoreError, is_status, kube_error as unavailable};

/// What became of one eviction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eviction {
    /// Accepted: the pod is being deleted.
    Evicted,
    /// A PodDisruptionBudget says not now (429): retry with backoff.
    Blocked,
    /// The pod is already gone.
    Gone,
}

/// The Kubernetes side of the lifecycle.
#[derive(Clone, Debug)]
pub struct Executor {
    nodes: Api<Node>,
    store: Kube,
}

impl Executor {
    pub fn new(store: Kube) -> Self {
        Self {
            nodes: Api::all(store.client()),
            store,
        }
    }

    /// Changes a node's labels and taints in one write, retried on conflicts; `taints`
    /// computes the new taint list from the current one.
    async fn patch_node(
        &self,
        name: &str,
        labels_to_set: &BTreeMap<String, String>,
        owner: Option<serde_json::Value>,
        taints: impl Fn(&[k8s_openapi::api::core::v1::Taint]) -> Option<Vec<serde_json::Value>>,
    ) -> Result<(), StoreError> {
        for _ in 0..5 {
            let node = match self.nodes.get(name).await {
                Ok(n) => n,
                Err(e) if is_status(&e, 404) => return Err(StoreError::NotFound(name.to_owned())),
                Err(e) => return Err(unavailable(e)),
            };
            let current = node
                .spec
                .as_ref()
                .and_then(|s| s.taints.clone())
                .unwrap_or_default();
            let mut metadata = serde_json::json!({
                "resourceVersion": node.metadata.resource_version,
            });
            if !labels_to_set.is_empty() {
                metadata["labels"] = serde_json::to_value(labels_to_set).expect("labels serialize");
            }
            if let Some(owner) = &owner {
                let mut refs: Vec<serde_json::Value> = node
                    .metadata
                    .owner_references
                    .clone()
                    .unwrap_or_default()
                    .iter()
                    .map(|r| serde_json::to_value(r).expect("owner references serialize"))
                    .filter(|r| r["uid"] != owner["uid"])
                    .collect();
                refs.push(owner.clone());
                metadata["ownerReferences"] = refs.into();
            }
            let mut patch = serde_json::json!({ "metadata": metadata });
            if let Some(t) = taints(&current) {
                patch["spec"] = serde_json::json!({ "taints": t });
            }
            match self
                .nodes
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) if is_status(&e, 409) => continue,
                Err(e) if is_status(&e, 404) => return Err(StoreError::NotFound(name.to_owned())),
                Err(e) => return Err(unavailable(e)),
            }
        }
        Err(StoreError::Unavailable(format!(
            "Node {name}: kept changing under five attempts to write it"
        )))
    }

    /// Registration: label and taint the node as the claim says, drop
    /// `karpenter.sh/unregistered`, own the node by the claim, mark the claim Registered.
    pub async fn register(
        &self,
        claim: &str,
        claim_uid: &str,
        node: &str,
        labels_to_set: &BTreeMap<String, String>,
        add_taints: &[Taint],
    ) -> Result<(), StoreError> {
        let owner = serde_json::json!({
            "apiVersion": "karpenter.sh/v1",
            "kind": "NodeClaim",
            "name": claim,
            "uid": claim_uid,
            "blockOwnerDeletion": true,
        });
        self.patch_node(node, labels_to_set, Some(owner), |current| {
            let mut out: Vec<serde_json::Value> = current
                .iter()
                .filter(|t| t.key != labels::UNREGISTERED_TAINT_KEY)
                .map(|t| serde_json::to_value(t).expect("taints serialize"))
                .collect();
            for t in add_taints {
                let present = current.iter().any(|c| {
                    c.key == t.key
                        && c.value.as_deref().unwrap_or_default() == t.value
                        && c.effect == t.effect.as_str()
                });
                if !present {
                    let mut v = serde_json::json!({"key": t.key, "effect": t.effect.as_str()});
                    if !t.value.is_empty() {
                        v["value"] = t.value.clone().into();
                    }
                    out.push(v);
                }
            }
            Some(out)
        })
        .await?;
        self.store
            .set_condition(
                claim,
                self.store.condition("Registered", true, "Registered", ""),
                serde_json::json!({ "nodeName": node }),
            )
            .await
    }

    /// Initialization: label the node and mark the claim Initialized.
    pub async fn initialize(&self, claim: &str, node: &str) -> Result<(), StoreError> {
        let set: BTreeMap<String, String> =
            [(labels::NODE_INITIALIZED.to_owned(), "true".to_owned())].into();
        self.patch_node(node, &set, None, |_| None).await?;
        self.store
            .set_condition(
                claim,
                self.store.condition("Initialized", true, "Initialized", ""),
                serde_json::json!({}),
            )
            .await
    }

    /// Draining starts: taint the node `karpenter.sh/disrupted:NoSchedule`.
    pub async fn taint_disrupted(&self, node: &str) -> Result<(), StoreError> {
        let disrupted = crate::lifecycle::disrupted_taint();
        self.patch_node(node, &BTreeMap::new(), None, |current| {
            if current.iter().any(|t| t.key == disrupted.key) {
                return None;
            }
            let mut out: Vec<serde_json::Value> = current
                .iter()
                .map(|t| serde_json::to_value(t).expect("taints serialize"))
                .collect();
            out.push(serde_json::json!({"key": disrupted.key, "effect": "NoSchedule"}));
            Some(out)
        })
        .await
    }

    /// A disruption rolled back: drop `karpenter.sh/disrupted` again.
    pub async fn untaint_disrupted(&self, node: &str) -> Result<(), StoreError> {
        self.patch_node(node, &BTreeMap::new(), None, |current| {
            if !current.iter().any(|t| t.key == labels::DISRUPTED_TAINT_KEY) {
                return None;
            }
            Some(
                current
                    .iter()
                    .filter(|t| t.key != labels::DISRUPTED_TAINT_KEY)
                    .map(|t| serde_json::to_value(t).expect("taints serialize"))
                    .collect(),
            )
        })
        .await
    }

    /// Evicts one pod through the Eviction API (which honours PodDisruptionBudgets).
    ///
    /// NB: give the executor a client built with `default_retry = false`, or kube-rs retries a
    /// PDB's 429 for minutes before this returns `Blocked`.
    pub async fn evict(&self, namespace: &str, name: &str) -> Result<Eviction, StoreError> {
        let pods: Api<Pod> = Api::namespaced(self.store.client(), namespace);
        match pods.evict(name, &EvictParams::default()).await {
            Ok(_) => Ok(Eviction::Evicted),
            Err(e) if is_status(&e, 429) => Ok(Eviction::Blocked),
            Err(e) if is_status(&e, 404) => Ok(Eviction::Gone),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// Deletes a pod outright (the termination grace period is over).
    pub async fn delete_pod(&self, namespace: &str, name: &str) -> Result<(), StoreError> {
        let pods: Api<Pod> = Api::namespaced(self.store.client(), namespace);
        match pods.delete(name, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(e) if is_status(&e, 404) => Ok(()),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// Deletes the node once its instance is gone.
    pub async fn delete_node(&self, node: &str) -> Result<(), StoreError> {
        match self.nodes.delete(node, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(e) if is_status(&e, 404) => Ok(()),
            Err(e) => Err(unavailable(e)),
        }
    }
}
