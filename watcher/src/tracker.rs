//! What the scheduler has been told, and what changed since: the watcher's side of the `Sync`
//! stream, without I/O.
//!
//! The watcher does not forward watch events one by one. Each event only marks its object
//! *dirty*; a delta batch then reads the dirty objects' current state and sends what differs
//! from what was last sent (an upsert, or a delete for an object that is gone or no longer
//! relevant). So a burst of updates to one pod becomes one change, a relist after a 410 sends
//! only real differences, nothing is sent twice, and memory is bounded by the cluster's size:
//! one copy of each object sent, plus the dirty keys.

use std::collections::{BTreeSet, HashMap};

use berth_scheduler_core::model::ObjectKey;
use berth_scheduler_core::sync::{Batch, BatchKind, Change, Object, ObjectKind};

/// One object's identity on the stream. Cluster-scoped objects have an empty namespace.
pub type Key = (ObjectKind, ObjectKey);

/// The key of an object, as the scheduler's model files it.
pub fn key_of(o: &Object) -> Key {
    let key = match o {
        Object::Pod(p) => p.key.clone(),
        Object::Node(n) => ObjectKey::new("", &n.name),
        Object::NodeClaim(c) => ObjectKey::new("", &c.name),
        Object::NodePool(p) => ObjectKey::new("", &p.name),
        Object::DaemonSet(d) => d.key.clone(),
        Object::PodDisruptionBudget(b) => b.key.clone(),
        Object::Namespace(n) => ObjectKey::new("", &n.name),
    };
    (o.kind(), key)
}

#[derive(Debug)]
pub struct Tracker {
    sent: HashMap<Key, Object>,
    dirty: BTreeSet<Key>,
    next_sequence: u64,
    acknowledged: u64,
    max_changes: usize,
}

impl Tracker {
    /// `max_changes` bounds each batch (a snapshot is split into several).
    pub fn new(max_changes: usize) -> Self {
        Self {
            sent: HashMap::new(),
            dirty: BTreeSet::new(),
            next_sequence: 1,
            acknowledged: 0,
            max_changes: max_changes.max(1),
        }
    }

    /// An object changed (or may have): its current state is read at the next delta.
    pub fn mark(&mut self, key: Key) {
        self.dirty.insert(key);
    }

    /// Every object of `kind` may have changed (a relist): those in `current`, and those sent.
    pub fn mark_kind(&mut self, kind: ObjectKind, current: impl IntoIterator<Item = ObjectKey>) {
        for k in current {
            self.dirty.insert((kind, k));
        }
        let sent: Vec<Key> = self
            .sent
            .keys()
            .filter(|(k, _)| *k == kind)
            .cloned()
            .collect();
        self.dirty.extend(sent);
    }

    pub fn has_dirty(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// Batches sent and not yet acknowledged.
    pub fn in_flight(&self) -> u64 {
        self.next_sequence - 1 - self.acknowledged
    }

    /// The scheduler applied batches up to `sequence`.
    pub fn acknowledge(&mut self, sequence: u64) {
        self.acknowledged = self.acknowledged.max(sequence.min(self.next_sequence - 1));
    }

    /// Objects sent (and not deleted since), by kind.
    pub fn count(&self, kind: ObjectKind) -> usize {
        self.sent.keys().filter(|(k, _)| *k == kind).count()
    }

    /// Starts a new stream with a snapshot of `objects` (the whole relevant cluster, read
    /// after this call's caller cleared nothing: marks made before are covered by it).
    pub fn snapshot(&mut self, objects: Vec<Object>) -> Vec<Batch> {
        self.sent.clear();
        self.dirty.clear();
        self.next_sequence = 1;
        self.acknowledged = 0;
        let mut changes = Vec::with_capacity(objects.len());
        for o in objects {
            let key = key_of(&o);
            changes.push(Change::Upsert(o.clone()));
            self.sent.insert(key, o);
        }
        let mut batches = Vec::new();
        let mut chunks = changes.chunks(self.max_changes).peekable();
        if chunks.peek().is_none() {
            batches.push(self.batch(BatchKind::SnapshotEnd, Vec::new()));
        }
        while let Some(chunk) = chunks.next() {
            let kind = if chunks.peek().is_some() {
                BatchKind::Snapshot
            } else {
                BatchKind::SnapshotEnd
            };
            batches.push(self.batch(kind, chunk.to_vec()));
        }
        batches
    }

    fn batch(&mut self, kind: BatchKind, changes: Vec<Change>) -> Batch {
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        Batch {
            sequence,
            kind,
            changes,
        }
    }

    /// The next delta: dirty objects whose current state (`current`, `None` when gone or not
    /// relevant) differs from what was sent, at most `max_changes` of them; `None` when
    /// nothing differs. Objects left dirty go in the next one.
    pub fn delta(&mut self, current: impl Fn(&Key) -> Option<Object>) -> Option<Batch> {
        let mut changes = Vec::new();
        while changes.len() < self.max_changes {
            let Some(key) = self.dirty.pop_first() else {
                break;
            };
            match (current(&key), self.sent.get(&key)) {
                (Some(now), Some(before)) if &now == before => {}
                (Some(now), _) => {
                    changes.push(Change::Upsert(now.clone()));
                    self.sent.insert(key, now);
                }
                (None, Some(_)) => {
                    self.sent.remove(&key);
                    let (kind, key) = key;
                    changes.push(Change::Delete { kind, key });
                }
                (None, None) => {}
            }
        }
        (!changes.is_empty()).then(|| self.batch(BatchKind::Delta, changes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_scheduler_core::model::Pod;
    use std::collections::BTreeMap;

    fn pod(name: &str, cpu: i64) -> Object {
        let mut p = Pod::new("ci", name);
        p.containers = vec![berth_scheduler_core::model::Resources::from_iter([(
            "cpu".to_owned(),
            cpu,
        )])];
        Object::Pod(p)
    }

    fn key(name: &str) -> Key {
        (ObjectKind::Pod, ObjectKey::new("ci", name))
    }

    #[test]
    fn snapshot_splits_and_numbers_batches() {
        let mut t = Tracker::new(2);
        let b = t.snapshot(vec![pod("a", 1), pod("b", 1), pod("c", 1)]);
        let kinds: Vec<_> = b.iter().map(|b| (b.sequence, b.kind)).collect();
        assert_eq!(
            kinds,
            [(1, BatchKind::Snapshot), (2, BatchKind::SnapshotEnd)]
        );
        assert_eq!(t.in_flight(), 2);
        t.acknowledge(2);
        assert_eq!(t.in_flight(), 0);
        // An empty cluster is still a snapshot.
        let b = t.snapshot(Vec::new());
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].kind, BatchKind::SnapshotEnd);
        assert_eq!(b[0].sequence, 1);
    }

    #[test]
    fn deltas_coalesce_and_send_only_differences() {
        let mut t = Tracker::new(100);
        t.snapshot(vec![pod("a", 1), pod("b", 1)]);
        let mut now: BTreeMap<Key, Object> =
            [(key("a"), pod("a", 1)), (key("b"), pod("b", 2))].into();
        // Three marks of b, one of an unchanged a, and one of a pod never relevant.
        for k in [key("b"), key("a"), key("b"), key("b"), key("x")] {
            t.mark(k);
        }
        let d = t.delta(|k| now.get(k).cloned()).unwrap();
        assert_eq!(d.sequence, 2);
        assert_eq!(d.changes, vec![Change::Upsert(pod("b", 2))]);
        assert!(t.delta(|k| now.get(k).cloned()).is_none(), "nothing dirty");
        // a goes away (finished, or deleted): a delete, once.
        now.remove(&key("a"));
        t.mark(key("a"));
        t.mark(key("a"));
        let d = t.delta(|k| now.get(k).cloned()).unwrap();
        assert_eq!(
            d.changes,
            vec![Change::Delete {
                kind: ObjectKind::Pod,
                key: ObjectKey::new("ci", "a")
            }]
        );
        t.mark(key("a"));
        assert!(t.delta(|k| now.get(k).cloned()).is_none());
        assert_eq!(t.count(ObjectKind::Pod), 1);
    }

    #[test]
    fn a_relist_marks_what_was_sent_too() {
        let mut t = Tracker::new(1);
        t.snapshot(vec![pod("a", 1), pod("b", 1)]);
        // After a relist only b exists, changed; a vanished while the watch was cut.
        t.mark_kind(ObjectKind::Pod, [ObjectKey::new("ci", "b")]);
        let now: BTreeMap<Key, Object> = [(key("b"), pod("b", 3))].into();
        let first = t.delta(|k| now.get(k).cloned()).unwrap();
        let second = t.delta(|k| now.get(k).cloned()).unwrap();
        assert_eq!(
            first.changes.len() + second.changes.len(),
            2,
            "max_changes splits deltas"
        );
        assert!(!t.has_dirty());
        assert_eq!(t.count(ObjectKind::Pod), 1);
    }
}
