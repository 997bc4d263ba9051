//! The watcher's caches of the cluster (kube-runtime reflectors) and the conversion of what
//! they hold into the slim objects the scheduler is sent.

use std::sync::Arc;

use berth_api::v1::{EC2NodeClass, NodeClaim, NodePool};
use berth_scheduler_core::model::{self as m, ObjectKey};
use berth_scheduler_core::sync::{Object, ObjectKind};
use futures::{Stream, StreamExt as _};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Namespace, Node, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use tokio::sync::{Mutex, Notify};

use crate::metrics;
use crate::tracker::{Key, Tracker};

/// The caches, one per kind the scheduler needs (and the kinds those depend on: volumes for
/// pods' topology, EC2NodeClasses for NodePools' readiness).
#[derive(Clone)]
pub struct Stores {
    pub pods: Store<Pod>,
    pub nodes: Store<Node>,
    pub node_claims: Store<NodeClaim>,
    pub node_pools: Store<NodePool>,
    pub daemon_sets: Store<DaemonSet>,
    pub pdbs: Store<PodDisruptionBudget>,
    pub namespaces: Store<Namespace>,
    pub pvcs: Store<PersistentVolumeClaim>,
    pub pvs: Store<PersistentVolume>,
    pub storage_classes: Store<StorageClass>,
    pub node_classes: Store<EC2NodeClass>,
}

impl std::fmt::Debug for Stores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stores").finish_non_exhaustive()
    }
}

/// What a watch event tells the stream: which objects to look at again.
#[derive(Debug, Clone)]
enum Touched {
    One(Key),
    /// Every object of this kind (a relist finished).
    All(ObjectKind),
    /// Every pod (a volume changed) / every NodePool (a node class changed).
    Dependents(ObjectKind),
}

fn touched<K, F>(event: &watcher::Event<K>, key: F, kind: ObjectKind) -> Option<Touched>
where
    F: Fn(&K) -> Key,
{
    match event {
        watcher::Event::Apply(o) | watcher::Event::Delete(o) => Some(Touched::One(key(o))),
        watcher::Event::InitDone => Some(Touched::All(kind)),
        watcher::Event::Init | watcher::Event::InitApply(_) => None,
    }
}

fn namespaced<K: kube::Resource>(o: &K) -> ObjectKey {
    ObjectKey::new(
        o.meta().namespace.as_deref().unwrap_or_default(),
        o.meta().name.as_deref().unwrap_or_default(),
    )
}

fn cluster_scoped<K: kube::Resource>(o: &K) -> ObjectKey {
    ObjectKey::new("", o.meta().name.as_deref().unwrap_or_default())
}

/// Where watch events go: the tracker's dirty set, and a wake-up for the stream.
#[derive(Debug, Clone)]
pub struct Dirty {
    pub tracker: Arc<Mutex<Tracker>>,
    pub changed: Arc<Notify>,
}

/// Starts the reflectors; the returned future drives them (run it until shutdown).
pub fn start(
    client: kube::Client,
    dirty: Dirty,
) -> (Stores, impl std::future::Future<Output = ()>) {
    let config = watcher::Config::default();
    let mut streams: Vec<futures::stream::BoxStream<'static, Touched>> = Vec::new();

    fn reflect<K>(
        api: Api<K>,
        config: &watcher::Config,
        map: impl Fn(&watcher::Event<K>) -> Option<Touched> + Send + 'static,
        name: &'static str,
    ) -> (Store<K>, impl Stream<Item = Touched> + Send + 'static)
    where
        K: kube::Resource<DynamicType = ()>
            + Clone
            + std::fmt::Debug
            + serde::de::DeserializeOwned
            + Send
            + Sync
            + 'static,
    {
        let (store, writer) = reflector::store::<K>();
        let stream = reflector::reflector(writer, watcher(api, config.clone()).default_backoff())
            .filter_map(move |event| {
                let out = match event {
                    Ok(e) => map(&e),
                    Err(e) => {
                        // The watcher backs off and relists by itself (410s included).
                        tracing::warn!(kind = name, error = %e, "watch");
                        ::metrics::counter!(metrics::WATCH_ERRORS_TOTAL, "kind" => name)
                            .increment(1);
                        None
                    }
                };
                std::future::ready(out)
            });
        (store, stream)
    }

    macro_rules! watch {
        ($ty:ty, $kind:expr, $keyf:expr, $name:literal) => {{
            let (store, stream) = reflect(
                Api::<$ty>::all(client.clone()),
                &config,
                move |e| touched(e, $keyf, $kind),
                $name,
            );
            streams.push(stream.boxed());
            store
        }};
    }
    macro_rules! dependents {
        ($ty:ty, $of:expr, $name:literal) => {{
            let (store, stream) = reflect(
                Api::<$ty>::all(client.clone()),
                &config,
                move |e| match e {
                    watcher::Event::Init | watcher::Event::InitApply(_) => None,
                    _ => Some(Touched::Dependents($of)),
                },
                $name,
            );
            streams.push(stream.boxed());
            store
        }};
    }
    let pods = watch!(
        Pod,
        ObjectKind::Pod,
        |o: &Pod| (ObjectKind::Pod, namespaced(o)),
        "pod"
    );
    let nodes = watch!(
        Node,
        ObjectKind::Node,
        |o: &Node| (ObjectKind::Node, cluster_scoped(o)),
        "node"
    );
    let node_claims = watch!(
        NodeClaim,
        ObjectKind::NodeClaim,
        |o: &NodeClaim| (ObjectKind::NodeClaim, cluster_scoped(o)),
        "nodeclaim"
    );
    let node_pools = watch!(
        NodePool,
        ObjectKind::NodePool,
        |o: &NodePool| (ObjectKind::NodePool, cluster_scoped(o)),
        "nodepool"
    );
    let daemon_sets = watch!(
        DaemonSet,
        ObjectKind::DaemonSet,
        |o: &DaemonSet| (ObjectKind::DaemonSet, namespaced(o)),
        "daemonset"
    );
    let pdbs = watch!(
        PodDisruptionBudget,
        ObjectKind::PodDisruptionBudget,
        |o: &PodDisruptionBudget| (ObjectKind::PodDisruptionBudget, namespaced(o)),
        "poddisruptionbudget"
    );
    let namespaces = watch!(
        Namespace,
        ObjectKind::Namespace,
        |o: &Namespace| (ObjectKind::Namespace, cluster_scoped(o)),
        "namespace"
    );
    let pvcs = dependents!(
        PersistentVolumeClaim,
        ObjectKind::Pod,
        "persistentvolumeclaim"
    );
    let pvs = dependents!(PersistentVolume, ObjectKind::Pod, "persistentvolume");
    let storage_classes = dependents!(StorageClass, ObjectKind::Pod, "storageclass");
    let node_classes = dependents!(EC2NodeClass, ObjectKind::NodePool, "ec2nodeclass");

    let stores = Stores {
        pods,
        nodes,
        node_claims,
        node_pools,
        daemon_sets,
        pdbs,
        namespaces,
        pvcs,
        pvs,
        storage_classes,
        node_classes,
    };
    let driver = {
        let stores = stores.clone();
        async move {
            let mut events = futures::stream::select_all(streams);
            while let Some(t) = events.next().await {
                let mut tracker = dirty.tracker.lock().await;
                match t {
                    Touched::One(key) => tracker.mark(key),
                    Touched::All(kind) | Touched::Dependents(kind) => {
                        tracker.mark_kind(kind, stores.keys(kind));
                    }
                }
                drop(tracker);
                dirty.changed.notify_one();
            }
        }
    };
    (stores, driver)
}

impl Stores {
    /// Waits until every cache has listed once.
    pub async fn ready(&self) {
        let _ = self.pods.wait_until_ready().await;
        let _ = self.nodes.wait_until_ready().await;
        let _ = self.node_claims.wait_until_ready().await;
        let _ = self.node_pools.wait_until_ready().await;
        let _ = self.daemon_sets.wait_until_ready().await;
        let _ = self.pdbs.wait_until_ready().await;
        let _ = self.namespaces.wait_until_ready().await;
        let _ = self.pvcs.wait_until_ready().await;
        let _ = self.pvs.wait_until_ready().await;
        let _ = self.storage_classes.wait_until_ready().await;
        let _ = self.node_classes.wait_until_ready().await;
    }

    /// The keys cached for `kind`.
    pub fn keys(&self, kind: ObjectKind) -> Vec<ObjectKey> {
        fn ns<K: kube::Resource + Clone>(s: &Store<K>) -> Vec<ObjectKey>
        where
            K::DynamicType: Eq + std::hash::Hash + Clone,
        {
            s.state().iter().map(|o| namespaced(o.as_ref())).collect()
        }
        match kind {
            ObjectKind::Pod => ns(&self.pods),
            ObjectKind::Node => ns(&self.nodes),
            ObjectKind::NodeClaim => ns(&self.node_claims),
            ObjectKind::NodePool => ns(&self.node_pools),
            ObjectKind::DaemonSet => ns(&self.daemon_sets),
            ObjectKind::PodDisruptionBudget => ns(&self.pdbs),
            ObjectKind::Namespace => ns(&self.namespaces),
        }
    }

    /// Every relevant object, converted (the snapshot).
    pub fn all(&self) -> Vec<Object> {
        let mut out = Vec::new();
        for kind in [
            ObjectKind::Namespace,
            ObjectKind::NodePool,
            ObjectKind::Node,
            ObjectKind::NodeClaim,
            ObjectKind::DaemonSet,
            ObjectKind::PodDisruptionBudget,
            ObjectKind::Pod,
        ] {
            for key in self.keys(kind) {
                if let Some(o) = self.current(&(kind, key)) {
                    out.push(o);
                }
            }
        }
        out
    }

    /// What the scheduler should hold for `key` now: `None` when the object is gone or does
    /// not matter to scheduling (a finished pod, a pod the kube-scheduler has not given up on,
    /// an object that does not convert: logged and counted).
    pub fn current(&self, (kind, key): &Key) -> Option<Object> {
        let converted = match kind {
            ObjectKind::Pod => {
                let p = self
                    .pods
                    .get(&ObjectRef::new(&key.name).within(&key.namespace))?;
                pod_matters(&p).then(|| {
                    berth_api::domain::pod(&p, &|ns, claim| self.volume(ns, claim)).map(Object::Pod)
                })?
            }
            ObjectKind::Node => {
                let n = self.nodes.get(&ObjectRef::new(&key.name))?;
                berth_api::domain::node(&n).map(Object::Node)
            }
            ObjectKind::NodeClaim => {
                let c = self.node_claims.get(&ObjectRef::new(&key.name))?;
                berth_api::domain::node_claim(&c).map(Object::NodeClaim)
            }
            ObjectKind::NodePool => {
                let p = self.node_pools.get(&ObjectRef::new(&key.name))?;
                let (ready, reason) = self.node_class_ready(&p);
                berth_api::domain::node_pool(&p, ready, &reason).map(Object::NodePool)
            }
            ObjectKind::DaemonSet => {
                let d = self
                    .daemon_sets
                    .get(&ObjectRef::new(&key.name).within(&key.namespace))?;
                berth_api::domain::daemon_set(&d).map(Object::DaemonSet)
            }
            ObjectKind::PodDisruptionBudget => {
                let b = self
                    .pdbs
                    .get(&ObjectRef::new(&key.name).within(&key.namespace))?;
                berth_api::domain::pod_disruption_budget(&b).map(Object::PodDisruptionBudget)
            }
            ObjectKind::Namespace => {
                let n = self.namespaces.get(&ObjectRef::new(&key.name))?;
                Ok(Object::Namespace(berth_api::domain::namespace(&n)))
            }
        };
        match converted {
            Ok(o) => Some(o),
            Err(e) => {
                tracing::warn!(?kind, namespace = %key.namespace, name = %key.name, field = %e.path, error = %e.message, "cannot convert; left out");
                ::metrics::counter!(metrics::CONVERSION_ERRORS_TOTAL, "kind" => format!("{kind:?}")).increment(1);
                None
            }
        }
    }

    /// The node requirements of a PersistentVolumeClaim: its bound volume's node affinity, or,
    /// unbound, its StorageClass's allowed topologies.
    fn volume(&self, namespace: &str, claim: &str) -> Option<Vec<m::Requirement>> {
        let pvc = self.pvcs.get(&ObjectRef::new(claim).within(namespace))?;
        let spec = pvc.spec.as_ref()?;
        if let Some(volume) = spec.volume_name.as_deref().filter(|v| !v.is_empty()) {
            let pv = self.pvs.get(&ObjectRef::new(volume))?;
            return berth_api::domain::volume_requirements(&pv).ok();
        }
        let class = self
            .storage_classes
            .get(&ObjectRef::new(spec.storage_class_name.as_deref()?))?;
        let topologies = class.allowed_topologies.as_ref()?;
        let first = topologies.first()?;
        Some(
            first
                .match_label_expressions
                .iter()
                .flatten()
                .map(|e| m::Requirement {
                    key: e.key.clone(),
                    operator: m::Operator::In,
                    values: e.values.clone(),
                    min_values: None,
                })
                .collect(),
        )
    }

    /// Whether a NodePool's node class can be launched with. An EC2NodeClass must exist and
    /// report `Ready=True`; another cloud's node class kinds are not watched here and count as
    /// ready (their actuator refuses launches with `FAILED_PRECONDITION` when not).
    pub fn node_class_ready(&self, pool: &NodePool) -> (bool, String) {
        let r = &pool.spec.template.spec.node_class_ref;
        if r.kind != "EC2NodeClass" {
            return (true, String::new());
        }
        let Some(class) = self.node_classes.get(&ObjectRef::new(&r.name)) else {
            return (false, format!("EC2NodeClass {:?} not found", r.name));
        };
        if class.metadata.deletion_timestamp.is_some() {
            return (false, format!("EC2NodeClass {:?} is being deleted", r.name));
        }
        let ready = class
            .status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"));
        match ready {
            Some(c) if c.status == "True" => (true, String::new()),
            Some(c) => (
                false,
                format!("EC2NodeClass {:?} is not ready: {}", r.name, c.message),
            ),
            None => (
                false,
                format!("EC2NodeClass {:?} has no status yet", r.name),
            ),
        }
    }
}

/// Pods the scheduler needs: bound pods that still hold their node's resources, and unbound
/// ones the kube-scheduler marked Unschedulable. Never finished pods.
pub fn pod_matters(p: &Pod) -> bool {
    let status = p.status.as_ref();
    let phase = status.and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Succeeded" | "Failed")) {
        return false;
    }
    let bound = p
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty());
    if bound {
        return true;
    }
    if p.metadata.deletion_timestamp.is_some() {
        return false;
    }
    status.and_then(|s| s.conditions.as_ref()).is_some_and(|c| {
        c.iter().any(|c| {
            c.type_ == "PodScheduled"
                && c.status == "False"
                && c.reason.as_deref() == Some("Unschedulable")
        })
    })
}
