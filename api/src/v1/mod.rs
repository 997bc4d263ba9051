//! `karpenter.sh/v1` (NodePool, NodeClaim) and `karpenter.k8s.aws/v1` (EC2NodeClass): the API
//! Berth serves and stores. Field names, defaults and rules follow Karpenter v1 so that a
//! Karpenter user's manifests apply unchanged.

// NB: clippy reads kube's repeated `printcolumn(type_ = ...)` as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
mod ec2nodeclass;
#[allow(clippy::duplicated_attributes)]
mod nodeclaim;
#[allow(clippy::duplicated_attributes)]
mod nodepool;

pub use ec2nodeclass::*;
pub use nodeclaim::*;
pub use nodepool::*;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::schema::{cel, string_with_pattern};

/// Karpenter's operators for node selector requirements.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Operator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
    Gt,
    Lt,
    Gte,
    Lte,
}

impl From<Operator> for berth_scheduler_core::model::Operator {
    fn from(op: Operator) -> Self {
        use berth_scheduler_core::model::Operator as M;
        match op {
            Operator::In => M::In,
            Operator::NotIn => M::NotIn,
            Operator::Exists => M::Exists,
            Operator::DoesNotExist => M::DoesNotExist,
            Operator::Gt => M::Gt,
            Operator::Lt => M::Lt,
            Operator::Gte => M::Gte,
            Operator::Lte => M::Lte,
        }
    }
}

/// A node selector requirement with Karpenter's `minValues`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    cel("self.operator == 'In' ? self.values.size() != 0 : true", "requirements with operator 'In' must have a value defined"),
    cel("self.operator in ['Gt', 'Lt', 'Gte', 'Lte'] ? (self.values.size() == 1 && int(self.values[0]) >= 0) : true",
        "requirements operator 'Gt', 'Lt', 'Gte' or 'Lte' must have a single positive integer value"),
    cel("(self.operator == 'In' && has(self.minValues)) ? self.values.size() >= self.minValues : true",
        "requirements with 'minValues' must have at least that many values specified in the 'values' field"),
]))]
pub struct NodeSelectorRequirementWithMinValues {
    #[schemars(
        length(max = 316),
        regex(
            pattern = r"^(([a-zA-Z0-9]|[a-zA-Z0-9][-a-zA-Z0-9]*[a-zA-Z0-9])\.)*([a-zA-Z0-9]|[a-zA-Z0-9][-a-zA-Z0-9]*[a-zA-Z0-9])(\/(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]))?$|^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
        )
    )]
    pub key: String,
    pub operator: Operator,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub values: Vec<String>,
    /// At least this many distinct values of `key` must remain possible (1..=50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 50))]
    pub min_values: Option<i32>,
}

#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, JsonSchema,
)]
pub enum TaintEffect {
    NoSchedule,
    PreferNoSchedule,
    NoExecute,
}

/// A node taint, as in core/v1 but with the effect checked by the schema.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Taint {
    #[schemars(
        length(min = 1),
        regex(
            pattern = r"^(([a-zA-Z0-9]|[a-zA-Z0-9][-a-zA-Z0-9]*[a-zA-Z0-9])\.)*([a-zA-Z0-9]|[a-zA-Z0-9][-a-zA-Z0-9]*[a-zA-Z0-9])(\/(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]))?$|^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
        )
    )]
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"))]
    pub value: Option<String>,
    pub effect: TaintEffect,
    /// Set by the node controller for NoExecute taints; kept for round-trips.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_added: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
}

impl From<&Taint> for berth_scheduler_core::model::Taint {
    fn from(t: &Taint) -> Self {
        use berth_scheduler_core::model::TaintEffect as E;
        Self {
            key: t.key.clone(),
            value: t.value.clone().unwrap_or_default(),
            effect: match t.effect {
                TaintEffect::NoSchedule => E::NoSchedule,
                TaintEffect::PreferNoSchedule => E::PreferNoSchedule,
                TaintEffect::NoExecute => E::NoExecute,
            },
        }
    }
}

/// Reference to the cloud-specific node class (for AWS: an EC2NodeClass).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeClassReference {
    /// API group of the node class, e.g. `karpenter.k8s.aws`.
    #[schemars(extend("x-kubernetes-validations" = [cel("self != ''", "group may not be empty")]),
               regex(pattern = r"^[^/]*$"), length(max = 253))]
    pub group: String,
    /// Kind of the node class, e.g. `EC2NodeClass`.
    #[schemars(extend("x-kubernetes-validations" = [cel("self != ''", "kind may not be empty")]), length(max = 63))]
    pub kind: String,
    /// Name of the node class.
    #[schemars(extend("x-kubernetes-validations" = [cel("self != ''", "name may not be empty")]), length(max = 253))]
    pub name: String,
}

impl NodeClassReference {
    /// The AWS provider's default reference to an EC2NodeClass called `name`.
    pub fn ec2(name: &str) -> Self {
        Self {
            group: crate::labels::KARPENTER_AWS_GROUP.to_owned(),
            kind: "EC2NodeClass".to_owned(),
            name: name.to_owned(),
        }
    }
}

/// A duration in Go's `time.ParseDuration` subset Karpenter accepts (`720h`, `1h30m`, `30s`),
/// or `Never`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct NillableDuration(pub String);

impl NillableDuration {
    pub const NEVER: &'static str = "Never";

    pub fn never() -> Self {
        Self(Self::NEVER.to_owned())
    }

    /// `Ok(None)` for `Never`, the duration otherwise.
    pub fn parse(&self) -> Result<Option<std::time::Duration>, String> {
        if self.0 == Self::NEVER {
            return Ok(None);
        }
        crate::duration::parse_hms(&self.0).map(Some)
    }
}

impl From<&str> for NillableDuration {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

impl JsonSchema for NillableDuration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "NillableDuration".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        string_with_pattern(crate::duration::NILLABLE_DURATION_PATTERN)
    }
    fn inline_schema() -> bool {
        true
    }
}

/// A `metav1.Duration` restricted to hours, minutes and seconds (`48h`, `1h30m`, `90s`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Duration(pub String);

impl Duration {
    pub fn parse(&self) -> Result<std::time::Duration, String> {
        crate::duration::parse_hms(&self.0)
    }
}

impl From<&str> for Duration {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        string_with_pattern(crate::duration::DURATION_PATTERN)
    }
    fn inline_schema() -> bool {
        true
    }
}
