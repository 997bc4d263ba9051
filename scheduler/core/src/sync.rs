//! What flows on the watcher → scheduler `Sync` stream, and the feedback that flows back.

use crate::model::{
    DaemonSet, Namespace, Node, NodeClaim, NodePool, ObjectKey, Pod, PodDisruptionBudget,
};

/// One object the watcher reports.
#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    Pod(Pod),
    Node(Node),
    NodeClaim(NodeClaim),
    NodePool(NodePool),
    DaemonSet(DaemonSet),
    PodDisruptionBudget(PodDisruptionBudget),
    Namespace(Namespace),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ObjectKind {
    Pod,
    Node,
    NodeClaim,
    NodePool,
    DaemonSet,
    PodDisruptionBudget,
    Namespace,
}

impl Object {
    pub fn kind(&self) -> ObjectKind {
        match self {
            Object::Pod(_) => ObjectKind::Pod,
            Object::Node(_) => ObjectKind::Node,
            Object::NodeClaim(_) => ObjectKind::NodeClaim,
            Object::NodePool(_) => ObjectKind::NodePool,
            Object::DaemonSet(_) => ObjectKind::DaemonSet,
            Object::PodDisruptionBudget(_) => ObjectKind::PodDisruptionBudget,
            Object::Namespace(_) => ObjectKind::Namespace,
        }
    }
}

/// A change to one object. Cluster-scoped objects have an empty namespace in their key.
// NB: most changes are upserts, so boxing the object would add an allocation per change to
// save space only on the rarer deletions.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Upsert(Object),
    Delete { kind: ObjectKind, key: ObjectKey },
}

/// Whether a batch belongs to the initial snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchKind {
    /// Part of a snapshot; more parts follow. The receiver buffers it.
    Snapshot,
    /// The last part of a snapshot: the receiver replaces its whole model with the snapshot.
    SnapshotEnd,
    /// Changes since the snapshot, applied in order.
    Delta,
}

/// A batch of changes. `sequence` increases by one per batch on a stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub sequence: u64,
    pub kind: BatchKind,
    pub changes: Vec<Change>,
}

/// Where the scheduler means a pod to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NominationTarget {
    /// An existing node.
    Node(String),
    /// A NodeClaim, in flight or about to be launched.
    NodeClaim(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nomination {
    pub pod: ObjectKey,
    pub target: NominationTarget,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unschedulable {
    pub pod: ObjectKey,
    /// Human-readable, shown in the pod's `FailedProvisioning` event.
    pub reason: String,
}

/// The scheduler's answer after it handled batches up to `acknowledged`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Feedback {
    /// The highest batch sequence applied to the model.
    pub acknowledged: u64,
    pub nominations: Vec<Nomination>,
    pub unschedulable: Vec<Unschedulable>,
}
