//! The EC2NodeClass status controller: hands each class to the cloud, writes what it resolved
//! (subnets, security groups, AMIs, instance profile) and the readiness conditions to the
//! class's status, and on deletion waits for the class's NodeClaims to go before releasing
//! what the cloud made for it (the instance profile of a `role`) and dropping its finalizer.
//!
//! The decisions are pure ([`conditions`], [`deletion`]); [`NodeClasses`] does the writes.

use std::future::Future;

use berth_api::v1::{
    AmiStatus, EC2NodeClass, EC2NodeClassSpec, EC2NodeClassStatus, NodeClaim,
    NodeSelectorRequirementWithMinValues, Operator, SecurityGroupStatus, SubnetStatus,
};
use berth_cloud::{CloudError, SimCloud};
use berth_scheduler_core::labels;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, Patch, PatchParams};

use crate::store::{StoreError, is_status, kube_error};

/// The finalizer Karpenter puts on an EC2NodeClass.
pub const FINALIZER: &str = "karpenter.k8s.aws/termination";

/// The readiness conditions of a class, in the order resolution checks them; `Ready` sums them.
pub const CONDITIONS: [&str; 4] = [
    "SubnetsReady",
    "SecurityGroupsReady",
    "AMIsReady",
    "InstanceProfileReady",
];

/// What resolving a class gave: the status fields, and the condition that failed with why.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resolution {
    /// Everything but `conditions`.
    pub status: EC2NodeClassStatus,
    /// `(condition, message)` of the first part that did not resolve.
    pub failed: Option<(String, String)>,
}

/// A cloud that resolves EC2NodeClasses.
pub trait NodeClassResolver: Send + Sync + 'static {
    /// Takes the class (replacing an earlier spec of that name) and resolves it.
    fn resolve(
        &self,
        name: &str,
        spec: &EC2NodeClassSpec,
    ) -> impl Future<Output = Resolution> + Send;

    /// The class is being deleted: launch nothing more into it.
    fn retire(&self, name: &str);

    /// Forgets the class and releases what was made for it. Called once no NodeClaim uses it;
    /// idempotent (the class may have been released before a restart).
    fn release(
        &self,
        name: &str,
        spec: &EC2NodeClassSpec,
    ) -> impl Future<Output = Result<(), CloudError>> + Send;
}

fn arch_requirement(arch: &str) -> Vec<NodeSelectorRequirementWithMinValues> {
    vec![NodeSelectorRequirementWithMinValues {
        key: labels::ARCH.to_owned(),
        operator: Operator::In,
        values: vec![arch.to_owned()],
        min_values: None,
    }]
}

impl<A: berth_ec2::Ec2Api> NodeClassResolver for berth_ec2::Ec2Cloud<A> {
    async fn resolve(&self, name: &str, spec: &EC2NodeClassSpec) -> Resolution {
        self.set_node_class(name, spec.clone());
        match self.resolution(name).await {
            Ok(r) => Resolution {
                status: EC2NodeClassStatus {
                    subnets: r
                        .subnets
                        .iter()
                        .map(|s| SubnetStatus {
                            id: s.id.clone(),
                            zone: s.zone.clone(),
                            zone_id: Some(s.zone_id.clone()).filter(|z| !z.is_empty()),
                        })
                        .collect(),
                    security_groups: r
                        .security_groups
                        .iter()
                        .map(|g| SecurityGroupStatus {
                            id: g.id.clone(),
                            name: Some(g.name.clone()).filter(|n| !n.is_empty()),
                        })
                        .collect(),
                    amis: r
                        .amis
                        .iter()
                        .map(|a| AmiStatus {
                            id: a.id.clone(),
                            name: Some(a.name.clone()).filter(|n| !n.is_empty()),
                            requirements: arch_requirement(&a.arch),
                        })
                        .collect(),
                    instance_profile: r.instance_profile.clone(),
                    conditions: Vec::new(),
                },
                failed: None,
            },
            Err(e) => Resolution {
                status: EC2NodeClassStatus::default(),
                failed: Some((e.condition.to_owned(), e.reason)),
            },
        }
    }

    fn retire(&self, name: &str) {
        self.remove_node_class(name);
    }

    async fn release(&self, name: &str, spec: &EC2NodeClassSpec) -> Result<(), CloudError> {
        self.release_node_class(name, spec).await
    }
}

/// The sim cloud launches into every zone of its catalog with made-up ids, so every class is
/// ready; the status shows what a user would see on EC2.
impl NodeClassResolver for SimCloud {
    async fn resolve(&self, _name: &str, spec: &EC2NodeClassSpec) -> Resolution {
        let zones = self.zones();
        Resolution {
            status: EC2NodeClassStatus {
                subnets: zones
                    .iter()
                    .map(|z| SubnetStatus {
                        id: format!("subnet-sim-{z}"),
                        zone: z.clone(),
                        zone_id: None,
                    })
                    .collect(),
                security_groups: vec![SecurityGroupStatus {
                    id: "sg-sim".to_owned(),
                    name: Some("sim".to_owned()),
                }],
                amis: [labels::ARCH_AMD64, labels::ARCH_ARM64]
                    .into_iter()
                    .map(|arch| AmiStatus {
                        id: format!("ami-sim-{arch}"),
                        name: None,
                        requirements: arch_requirement(arch),
                    })
                    .collect(),
                instance_profile: spec
                    .instance_profile
                    .clone()
                    .or_else(|| spec.role.as_ref().map(|r| format!("sim_{r}"))),
                conditions: Vec::new(),
            },
            failed: None,
        }
    }

    fn retire(&self, _name: &str) {}

    async fn release(&self, _name: &str, _spec: &EC2NodeClassSpec) -> Result<(), CloudError> {
        Ok(())
    }
}

fn condition(type_: &str, status: &str, reason: &str, message: &str, now: &Time) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message: message.to_owned(),
        last_transition_time: now.clone(),
        observed_generation: None,
    }
}

/// The class's conditions after a resolution: parts before the failed one True, the failed
/// one False with the message, later ones Unknown (not checked), and `Ready`. A condition
/// whose status did not change keeps its transition time.
pub fn conditions(
    previous: &[Condition],
    failed: Option<(&str, &str)>,
    generation: Option<i64>,
    now: &Time,
) -> Vec<Condition> {
    let failed_at = failed.and_then(|(c, _)| CONDITIONS.iter().position(|x| *x == c));
    let mut out: Vec<Condition> = CONDITIONS
        .iter()
        .enumerate()
        .map(|(i, c)| match failed_at {
            Some(at) if i == at => condition(
                c,
                "False",
                &format!("{}NotReady", c.trim_end_matches("Ready")),
                failed.map_or("", |(_, m)| m),
                now,
            ),
            Some(at) if i > at => condition(c, "Unknown", "NotChecked", "", now),
            _ => condition(c, "True", c, "", now),
        })
        .collect();
    out.push(match failed {
        None => condition("Ready", "True", "Ready", "", now),
        Some((c, m)) => condition("Ready", "False", "NotReady", &format!("{c}: {m}"), now),
    });
    for c in &mut out {
        c.observed_generation = generation;
        if let Some(p) = previous.iter().find(|p| p.type_ == c.type_)
            && p.status == c.status
        {
            c.last_transition_time = p.last_transition_time.clone();
        }
    }
    out
}

/// What to do with a class being deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deletion {
    /// NodeClaims still use it (their names): wait.
    Wait(Vec<String>),
    /// Release what the cloud made and drop the finalizer.
    Release,
}

pub fn deletion(class: &str, claims: &[NodeClaim]) -> Deletion {
    let users: Vec<String> = claims
        .iter()
        .filter(|c| c.spec.node_class_ref.name == class)
        .filter_map(|c| c.metadata.name.clone())
        .collect();
    if users.is_empty() {
        Deletion::Release
    } else {
        Deletion::Wait(users)
    }
}

/// What one pass did to one class, for tests and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Unchanged,
    StatusWritten { ready: bool },
    FinalizerAdded,
    WaitingForClaims(Vec<String>),
    Released,
}

/// Writes EC2NodeClass finalizers and status.
#[derive(Clone)]
pub struct NodeClasses<R> {
    resolver: R,
    api: Api<EC2NodeClass>,
    claims: Api<NodeClaim>,
    clock: std::sync::Arc<dyn Fn() -> std::time::SystemTime + Send + Sync>,
}

impl<R> std::fmt::Debug for NodeClasses<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeClasses").finish_non_exhaustive()
    }
}

impl<R: NodeClassResolver> NodeClasses<R> {
    pub fn new(
        resolver: R,
        client: kube::Client,
        clock: std::sync::Arc<dyn Fn() -> std::time::SystemTime + Send + Sync>,
    ) -> Self {
        Self {
            resolver,
            api: Api::all(client.clone()),
            claims: Api::all(client),
            clock,
        }
    }

    /// Every class brought up to date once, from a fresh list: a replica that has just become
    /// the leader resolves its classes before it serves (errors are logged; the lifecycle's
    /// passes retry).
    pub async fn reconcile_all(&self) {
        let (classes, claims) = match (
            self.api.list(&Default::default()).await,
            self.claims.list(&Default::default()).await,
        ) {
            (Ok(classes), Ok(claims)) => (classes.items, claims.items),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(error = %e, "listing EC2NodeClasses and NodeClaims");
                return;
            }
        };
        for class in &classes {
            if let Err(e) = self.reconcile(class, &claims).await {
                tracing::warn!(class = ?class.metadata.name, error = %e, "EC2NodeClass");
            }
        }
    }

    /// Brings one class up to date: its finalizer, its status, or its release once deleted.
    pub async fn reconcile(
        &self,
        class: &EC2NodeClass,
        claims: &[NodeClaim],
    ) -> Result<Outcome, StoreError> {
        let name = class.metadata.name.clone().unwrap_or_default();
        let finalizers = class.metadata.finalizers.clone().unwrap_or_default();
        let ours = finalizers.iter().any(|f| f == FINALIZER);
        if class.metadata.deletion_timestamp.is_some() {
            if !ours {
                return Ok(Outcome::Unchanged);
            }
            self.resolver.retire(&name);
            if let Deletion::Wait(users) = deletion(&name, claims) {
                return Ok(Outcome::WaitingForClaims(users));
            }
            // The cache may lag a claim created a moment ago: ask the API server.
            let fresh = self
                .claims
                .list(&Default::default())
                .await
                .map_err(kube_error)?
                .items;
            return match deletion(&name, &fresh) {
                Deletion::Wait(users) => Ok(Outcome::WaitingForClaims(users)),
                Deletion::Release => {
                    self.resolver
                        .release(&name, &class.spec)
                        .await
                        .map_err(|e| StoreError::Unavailable(e.to_string()))?;
                    let rest: Vec<&String> =
                        finalizers.iter().filter(|f| *f != FINALIZER).collect();
                    self.patch(
                        &name,
                        Patch::Merge(serde_json::json!({"metadata": {
                            "finalizers": rest,
                            "resourceVersion": class.metadata.resource_version,
                        }})),
                        false,
                    )
                    .await?;
                    Ok(Outcome::Released)
                }
            };
        }
        if !ours {
            let mut all = finalizers.clone();
            all.push(FINALIZER.to_owned());
            self.patch(
                &name,
                Patch::Merge(serde_json::json!({"metadata": {
                    "finalizers": all,
                    "resourceVersion": class.metadata.resource_version,
                }})),
                false,
            )
            .await?;
            return Ok(Outcome::FinalizerAdded);
        }
        let resolution = self.resolver.resolve(&name, &class.spec).await;
        let previous = class.status.clone().unwrap_or_default();
        let now = Time(
            (self.clock)()
                .try_into()
                .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
        );
        let mut status = resolution.status;
        status.conditions = conditions(
            &previous.conditions,
            resolution
                .failed
                .as_ref()
                .map(|(c, m)| (c.as_str(), m.as_str())),
            class.metadata.generation,
            &now,
        );
        if status == previous {
            return Ok(Outcome::Unchanged);
        }
        let ready = resolution.failed.is_none();
        if let Some((c, m)) = &resolution.failed {
            tracing::warn!(ec2_node_class = %name, condition = %c, reason = %m, "EC2NodeClass not ready");
        }
        // A merge patch leaves out what is not sent: fields the resolution no longer has are
        // sent as null, so they are cleared instead of kept.
        let mut body = serde_json::to_value(&status).expect("status serializes");
        for field in ["subnets", "securityGroups", "amis", "instanceProfile"] {
            if body.get(field).is_none() {
                body[field] = serde_json::Value::Null;
            }
        }
        self.patch(
            &name,
            Patch::Merge(serde_json::json!({ "status": body })),
            true,
        )
        .await?;
        Ok(Outcome::StatusWritten { ready })
    }

    async fn patch(
        &self,
        name: &str,
        patch: Patch<serde_json::Value>,
        status: bool,
    ) -> Result<(), StoreError> {
        let params = PatchParams::default();
        let r = if status {
            self.api.patch_status(name, &params, &patch).await
        } else {
            self.api.patch(name, &params, &patch).await
        };
        match r {
            Ok(_) => Ok(()),
            Err(e) if is_status(&e, 404) => Err(StoreError::NotFound(name.to_owned())),
            // A stale resourceVersion: the next pass sees the newer object.
            Err(e) if is_status(&e, 409) => {
                // Written from a cached copy that was already stale: the watch brings the
                // newer one and the next pass writes again.
                tracing::debug!(ec2_node_class = %name, "changed meanwhile; retried on the next pass");
                Ok(())
            }
            Err(e) => Err(kube_error(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn a_failed_part_is_false_later_parts_unknown_and_ready_false_with_the_reason() {
        let c = conditions(
            &[],
            Some(("AMIsReady", "spec.amiSelectorTerms[0]: no image")),
            Some(3),
            &at(10),
        );
        let by: Vec<(&str, &str)> = c
            .iter()
            .map(|c| (c.type_.as_str(), c.status.as_str()))
            .collect();
        assert_eq!(
            by,
            vec![
                ("SubnetsReady", "True"),
                ("SecurityGroupsReady", "True"),
                ("AMIsReady", "False"),
                ("InstanceProfileReady", "Unknown"),
                ("Ready", "False"),
            ]
        );
        assert_eq!(
            c[4].message,
            "AMIsReady: spec.amiSelectorTerms[0]: no image"
        );
        assert!(c.iter().all(|c| c.observed_generation == Some(3)));
    }

    #[test]
    fn an_unchanged_condition_keeps_its_transition_time() {
        let first = conditions(&[], None, Some(1), &at(10));
        let second = conditions(&first, None, Some(1), &at(20));
        assert_eq!(first, second);
        let failed = conditions(&second, Some(("SubnetsReady", "none")), Some(2), &at(30));
        let ready = failed.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(ready.last_transition_time, at(30));
    }

    #[test]
    fn a_class_in_use_waits_for_its_claims() {
        let claim: NodeClaim = serde_json::from_value(serde_json::json!({
            "apiVersion": "karpenter.sh/v1", "kind": "NodeClaim",
            "metadata": {"name": "gitlab-x"},
            "spec": {"nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "default"},
                     "requirements": []}
        }))
        .unwrap();
        assert_eq!(
            deletion("default", std::slice::from_ref(&claim)),
            Deletion::Wait(vec!["gitlab-x".to_owned()])
        );
        assert_eq!(deletion("other", &[claim]), Deletion::Release);
    }
}
