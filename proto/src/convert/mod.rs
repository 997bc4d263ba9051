//! `TryFrom` conversions between `berth.v1` messages and the domain model.
//!
//! Domain → proto is infallible (`From`); proto → domain validates and names the first bad
//! field with its path from the message root, e.g. `node_pool.requirements[2].operator`.

use berth_scheduler_core::model as m;
use berth_scheduler_core::sync as s;

use crate::v1 as p;
use cloud::{instance_from, instance_type_from};
use cluster::{daemon_set_from, node_claim_from, node_from, node_pool_from, pdb_from, pod_from};
use scheduler::object_from;

/// A message that does not convert: `field` is its path from the message root.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ConversionError {
    pub field: String,
    pub message: String,
}

type Result<T> = std::result::Result<T, ConversionError>;

fn err<T>(field: &str, message: impl Into<String>) -> Result<T> {
    Err(ConversionError {
        field: field.to_owned(),
        message: message.into(),
    })
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_owned()
    } else {
        format!("{path}.{field}")
    }
}

fn required<T>(value: Option<T>, path: &str, field: &str) -> Result<T> {
    value.ok_or_else(|| ConversionError {
        field: join(path, field),
        message: "required".into(),
    })
}

/// Converts each element, naming `field[i]` on failure.
fn each<P, D>(
    items: Vec<P>,
    path: &str,
    field: &str,
    f: impl Fn(P, &str) -> Result<D>,
) -> Result<Vec<D>> {
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| f(item, &format!("{}[{i}]", join(path, field))))
        .collect()
}

/// Proto enums: domain → i32 and i32 (not UNSPECIFIED) → domain.
macro_rules! enum_conv {
    ($proto:ident, $domain:ty, $to:ident, $from:ident, { $($pv:ident <=> $dv:expr),+ $(,)? }) => {
        pub(super) fn $to(d: $domain) -> i32 {
            $(if d == $dv { return p::$proto::$pv as i32; })+
            unreachable!("every domain value is listed")
        }
        pub(super) fn $from(v: i32, field: &str) -> Result<$domain> {
            match p::$proto::try_from(v) {
                $(Ok(p::$proto::$pv) => Ok($dv),)+
                _ => err(field, format!("{v} is not a valid {} (UNSPECIFIED is not allowed)", stringify!($proto))),
            }
        }
    };
}

mod cloud;
mod cluster;
mod common;
mod scheduler;

pub(crate) use common::{capacity_type_from_proto, capacity_type_to_proto};

/// Implements `TryFrom<proto>` for a domain type through its path-taking converter.
macro_rules! try_from_root {
    ($($proto:ty => $domain:ty, $f:ident, $root:literal;)+) => {$(
        impl TryFrom<$proto> for $domain {
            type Error = ConversionError;
            fn try_from(v: $proto) -> Result<Self> {
                $f(v, $root)
            }
        }
    )+};
}

try_from_root! {
    p::Pod => m::Pod, pod_from, "pod";
    p::Node => m::Node, node_from, "node";
    p::NodeClaim => m::NodeClaim, node_claim_from, "node_claim";
    p::NodePool => m::NodePool, node_pool_from, "node_pool";
    p::DaemonSet => m::DaemonSet, daemon_set_from, "daemon_set";
    p::PodDisruptionBudget => m::PodDisruptionBudget, pdb_from, "pod_disruption_budget";
    p::Object => s::Object, object_from, "object";
    p::InstanceType => m::InstanceType, instance_type_from, "instance_type";
    p::Instance => m::Instance, instance_from, "instance";
}
