//! `scheduler.proto`: the Sync stream (objects, batches of changes, feedback).

use berth_scheduler_core::model as m;
use berth_scheduler_core::sync as s;

use super::cluster::{
    daemon_set_from, node_claim_from, node_from, node_pool_from, pdb_from, pod_from,
};
use super::common::{key_from, key_to, labels, labels_to};
use super::{ConversionError, Result, each, err, join, required};
use crate::v1 as p;

enum_conv!(ObjectKind, s::ObjectKind, kind_to, kind_from, {
    Pod <=> s::ObjectKind::Pod, Node <=> s::ObjectKind::Node, NodeClaim <=> s::ObjectKind::NodeClaim,
    NodePool <=> s::ObjectKind::NodePool, DaemonSet <=> s::ObjectKind::DaemonSet,
    PodDisruptionBudget <=> s::ObjectKind::PodDisruptionBudget, Namespace <=> s::ObjectKind::Namespace,
});
enum_conv!(BatchKind, s::BatchKind, batch_kind_to, batch_kind_from, {
    Snapshot <=> s::BatchKind::Snapshot, SnapshotEnd <=> s::BatchKind::SnapshotEnd, Delta <=> s::BatchKind::Delta,
});

impl From<&s::Object> for p::Object {
    fn from(o: &s::Object) -> Self {
        use p::object::Object as O;
        p::Object {
            object: Some(match o {
                s::Object::Pod(x) => O::Pod(x.into()),
                s::Object::Node(x) => O::Node(x.into()),
                s::Object::NodeClaim(x) => O::NodeClaim(x.into()),
                s::Object::NodePool(x) => O::NodePool(x.into()),
                s::Object::DaemonSet(x) => O::DaemonSet(x.into()),
                s::Object::PodDisruptionBudget(x) => O::PodDisruptionBudget(x.into()),
                s::Object::Namespace(x) => O::Namespace(p::Namespace {
                    name: x.name.clone(),
                    labels: labels_to(&x.labels),
                }),
            }),
        }
    }
}

pub(super) fn object_from(o: p::Object, path: &str) -> Result<s::Object> {
    use p::object::Object as O;
    Ok(match required(o.object, path, "object")? {
        O::Pod(x) => s::Object::Pod(pod_from(x, &join(path, "pod"))?),
        O::Node(x) => s::Object::Node(node_from(x, &join(path, "node"))?),
        O::NodeClaim(x) => s::Object::NodeClaim(node_claim_from(x, &join(path, "node_claim"))?),
        O::NodePool(x) => s::Object::NodePool(node_pool_from(x, &join(path, "node_pool"))?),
        O::DaemonSet(x) => s::Object::DaemonSet(daemon_set_from(x, &join(path, "daemon_set"))?),
        O::PodDisruptionBudget(x) => {
            s::Object::PodDisruptionBudget(pdb_from(x, &join(path, "pod_disruption_budget"))?)
        }
        O::Namespace(x) => {
            if x.name.is_empty() {
                return err(&join(path, "namespace.name"), "required");
            }
            s::Object::Namespace(m::Namespace {
                name: x.name,
                labels: labels(x.labels),
            })
        }
    })
}

impl From<&s::Batch> for p::Batch {
    fn from(b: &s::Batch) -> Self {
        use p::change::Change as C;
        p::Batch {
            sequence: b.sequence,
            kind: batch_kind_to(b.kind),
            changes: b
                .changes
                .iter()
                .map(|c| p::Change {
                    change: Some(match c {
                        s::Change::Upsert(o) => C::Upsert(o.into()),
                        s::Change::Delete { kind, key } => C::Delete(p::Deletion {
                            kind: kind_to(*kind),
                            key: Some(key_to(key)),
                        }),
                    }),
                })
                .collect(),
        }
    }
}

impl TryFrom<p::Batch> for s::Batch {
    type Error = ConversionError;
    fn try_from(b: p::Batch) -> Result<Self> {
        use p::change::Change as C;
        let path = "batch";
        if b.sequence == 0 {
            return err("batch.sequence", "must start at 1");
        }
        Ok(s::Batch {
            sequence: b.sequence,
            kind: batch_kind_from(b.kind, "batch.kind")?,
            changes: each(b.changes, path, "changes", |c, path| {
                Ok(match required(c.change, path, "change")? {
                    C::Upsert(o) => s::Change::Upsert(object_from(o, &join(path, "upsert"))?),
                    C::Delete(d) => {
                        let dp = join(path, "delete");
                        s::Change::Delete {
                            kind: kind_from(d.kind, &join(&dp, "kind"))?,
                            key: key_from(d.key, &dp, "key")?,
                        }
                    }
                })
            })?,
        })
    }
}

impl From<&s::Feedback> for p::Feedback {
    fn from(f: &s::Feedback) -> Self {
        use p::nomination::Target as T;
        p::Feedback {
            acknowledged: f.acknowledged,
            nominations: f
                .nominations
                .iter()
                .map(|n| p::Nomination {
                    pod: Some(key_to(&n.pod)),
                    target: Some(match &n.target {
                        s::NominationTarget::Node(x) => T::Node(x.clone()),
                        s::NominationTarget::NodeClaim(x) => T::NodeClaim(x.clone()),
                    }),
                })
                .collect(),
            unschedulable: f
                .unschedulable
                .iter()
                .map(|u| p::Unschedulable {
                    pod: Some(key_to(&u.pod)),
                    reason: u.reason.clone(),
                })
                .collect(),
        }
    }
}

impl TryFrom<p::Feedback> for s::Feedback {
    type Error = ConversionError;
    fn try_from(f: p::Feedback) -> Result<Self> {
        use p::nomination::Target as T;
        Ok(s::Feedback {
            acknowledged: f.acknowledged,
            nominations: each(f.nominations, "feedback", "nominations", |n, path| {
                Ok(s::Nomination {
                    pod: key_from(n.pod, path, "pod")?,
                    target: match required(n.target, path, "target")? {
                        T::Node(x) => s::NominationTarget::Node(x),
                        T::NodeClaim(x) => s::NominationTarget::NodeClaim(x),
                    },
                })
            })?,
            unschedulable: each(f.unschedulable, "feedback", "unschedulable", |u, path| {
                Ok(s::Unschedulable {
                    pod: key_from(u.pod, path, "pod")?,
                    reason: u.reason,
                })
            })?,
        })
    }
}
