//! The simulated API server's object store: every object of every resource, one global
//! resourceVersion, and a window of past events that watches replay from.
//!
//! It keeps the Kubernetes semantics code relies on:
//! - every write gets the next resourceVersion (a decimal string, globally increasing);
//! - an update carrying a resourceVersion other than the stored one is a `409 Conflict`;
//! - deleting an object with finalizers only sets `deletionTimestamp`; it goes away when an
//!   update removes the last finalizer;
//! - a watch from resourceVersion R replays every event after R, then follows live events; R
//!   older than the retained window is `410 Gone`, so the client relists.
//!
//! Objects are JSON (`serde_json::Value`): the store does not interpret kinds beyond
//! `metadata`. Time is passed in, so tests need no clock.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use serde_json::{Value, json};
use tokio::sync::broadcast;

/// A resource: API group (empty for core) and plural name (`pods`, `nodeclaims`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Resource {
    pub group: String,
    pub plural: String,
    pub namespaced: bool,
}

impl Resource {
    pub fn new(group: &str, plural: &str, namespaced: bool) -> Self {
        Self {
            group: group.to_owned(),
            plural: plural.to_owned(),
            namespaced,
        }
    }
}

/// Where an object lives: namespace (empty for cluster-scoped) and name.
pub type ObjectName = (String, String);

/// Why a request failed, with the HTTP code the API server answers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("{resource} \"{name}\" not found")]
    NotFound { resource: String, name: String },
    #[error("{resource} \"{name}\" already exists")]
    AlreadyExists { resource: String, name: String },
    #[error(
        "Operation cannot be fulfilled on {resource} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
    )]
    Conflict { resource: String, name: String },
    #[error("too old resource version: {requested} ({oldest})")]
    Gone { requested: u64, oldest: u64 },
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
}

impl StoreError {
    /// The HTTP status code.
    pub fn code(&self) -> u16 {
        match self {
            StoreError::NotFound { .. } => 404,
            StoreError::AlreadyExists { .. } | StoreError::Conflict { .. } => 409,
            StoreError::Gone { .. } => 410,
            StoreError::Invalid { .. } => 422,
        }
    }

    /// The Kubernetes `Status.reason`.
    pub fn reason(&self) -> &'static str {
        match self {
            StoreError::NotFound { .. } => "NotFound",
            StoreError::AlreadyExists { .. } => "AlreadyExists",
            StoreError::Conflict { .. } => "Conflict",
            StoreError::Gone { .. } => "Expired",
            StoreError::Invalid { .. } => "Invalid",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    /// The watch event's `type`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change, as a watch sends it.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub resource_version: u64,
    pub resource: Resource,
    pub kind: EventType,
    pub object: Value,
}

struct Inner {
    rv: u64,
    uid: u64,
    objects: BTreeMap<Resource, BTreeMap<ObjectName, Value>>,
    log: VecDeque<Event>,
    /// The oldest resourceVersion a watch may start from (events after it are all in `log`).
    oldest: u64,
}

/// The store. Cheap to clone (clones share it).
#[derive(Clone)]
pub struct Store {
    inner: Arc<Mutex<Inner>>,
    events: broadcast::Sender<Event>,
    window: usize,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

fn meta<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")?.get(field)?.as_str()
}

fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

impl Store {
    /// A store that keeps the last `window` events for watches to replay.
    pub fn new(window: usize) -> Self {
        let (events, _) = broadcast::channel(window.max(16));
        Self {
            inner: Arc::new(Mutex::new(Inner {
                rv: 0,
                uid: 0,
                objects: BTreeMap::new(),
                log: VecDeque::new(),
                oldest: 0,
            })),
            events,
            window: window.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current resourceVersion (what a list returns).
    pub fn resource_version(&self) -> u64 {
        self.lock().rv
    }

    fn name_of(resource: &Resource, obj: &Value) -> Result<ObjectName, StoreError> {
        let name =
            meta(obj, "name")
                .filter(|n| !n.is_empty())
                .ok_or_else(|| StoreError::Invalid {
                    field: "metadata.name".to_owned(),
                    message: "Required value: name is required".to_owned(),
                })?;
        let namespace = if resource.namespaced {
            meta(obj, "namespace")
                .filter(|n| !n.is_empty())
                .ok_or_else(|| StoreError::Invalid {
                    field: "metadata.namespace".to_owned(),
                    message: "Required value: namespace is required".to_owned(),
                })?
                .to_owned()
        } else {
            String::new()
        };
        Ok((namespace, name.to_owned()))
    }

    fn record(&self, inner: &mut Inner, resource: &Resource, kind: EventType, object: &Value) {
        let event = Event {
            resource_version: inner.rv,
            resource: resource.clone(),
            kind,
            object: object.clone(),
        };
        inner.log.push_back(event.clone());
        while inner.log.len() > self.window {
            if let Some(dropped) = inner.log.pop_front() {
                inner.oldest = dropped.resource_version;
            }
        }
        // Nobody listening is fine.
        let _ = self.events.send(event);
    }

    /// Creates `obj`; sets uid, creationTimestamp, resourceVersion and generation.
    pub fn create(
        &self,
        resource: &Resource,
        mut obj: Value,
        now: SystemTime,
    ) -> Result<Value, StoreError> {
        let key = Self::name_of(resource, &obj)?;
        let mut inner = self.lock();
        if inner
            .objects
            .get(resource)
            .is_some_and(|m| m.contains_key(&key))
        {
            return Err(StoreError::AlreadyExists {
                resource: resource.plural.clone(),
                name: key.1,
            });
        }
        inner.rv += 1;
        inner.uid += 1;
        let m = obj
            .get_mut("metadata")
            .and_then(Value::as_object_mut)
            .expect("name_of checked metadata");
        m.insert(
            "uid".into(),
            format!("00000000-0000-4000-8000-{:012x}", inner.uid).into(),
        );
        m.insert("resourceVersion".into(), inner.rv.to_string().into());
        m.insert("creationTimestamp".into(), rfc3339(now).into());
        m.insert("generation".into(), 1.into());
        m.remove("deletionTimestamp");
        inner
            .objects
            .entry(resource.clone())
            .or_default()
            .insert(key, obj.clone());
        self.record(&mut inner, resource, EventType::Added, &obj);
        Ok(obj)
    }

    pub fn get(
        &self,
        resource: &Resource,
        namespace: &str,
        name: &str,
    ) -> Result<Value, StoreError> {
        self.lock()
            .objects
            .get(resource)
            .and_then(|m| m.get(&(namespace.to_owned(), name.to_owned())))
            .cloned()
            .ok_or_else(|| StoreError::NotFound {
                resource: resource.plural.clone(),
                name: name.to_owned(),
            })
    }

    /// Every object of `resource` (in `namespace` when given), with the resourceVersion of
    /// the list.
    pub fn list(&self, resource: &Resource, namespace: Option<&str>) -> (Vec<Value>, u64) {
        let inner = self.lock();
        let items = inner
            .objects
            .get(resource)
            .map(|m| {
                m.iter()
                    .filter(|((ns, _), _)| namespace.is_none_or(|n| n == ns))
                    .map(|(_, v)| v.clone())
                    .collect()
            })
            .unwrap_or_default();
        (items, inner.rv)
    }

    /// Replaces an object. A `metadata.resourceVersion` in `obj` must match the stored one;
    /// uid, creationTimestamp and deletionTimestamp are kept; the generation grows when the
    /// spec changes; an object being deleted whose last finalizer is removed goes away.
    pub fn update(
        &self,
        resource: &Resource,
        mut obj: Value,
        _now: SystemTime,
    ) -> Result<Value, StoreError> {
        let key = Self::name_of(resource, &obj)?;
        let mut inner = self.lock();
        let Some(current) = inner
            .objects
            .get(resource)
            .and_then(|m| m.get(&key))
            .cloned()
        else {
            return Err(StoreError::NotFound {
                resource: resource.plural.clone(),
                name: key.1,
            });
        };
        if let Some(rv) = meta(&obj, "resourceVersion")
            && Some(rv) != meta(&current, "resourceVersion")
        {
            return Err(StoreError::Conflict {
                resource: resource.plural.clone(),
                name: key.1,
            });
        }
        let generation = current["metadata"]["generation"].as_i64().unwrap_or(1)
            + i64::from(obj.get("spec") != current.get("spec"));
        let m = obj
            .get_mut("metadata")
            .and_then(Value::as_object_mut)
            .expect("name_of checked metadata");
        for kept in ["uid", "creationTimestamp", "deletionTimestamp"] {
            match current["metadata"].get(kept) {
                Some(v) => m.insert(kept.into(), v.clone()),
                None => m.remove(kept),
            };
        }
        // A write that changes nothing is no write: same resourceVersion, no event (as the
        // real API server does).
        m.insert(
            "resourceVersion".into(),
            current["metadata"]["resourceVersion"].clone(),
        );
        m.insert("generation".into(), generation.into());
        if obj == current {
            return Ok(current);
        }
        inner.rv += 1;
        let m = obj
            .get_mut("metadata")
            .and_then(Value::as_object_mut)
            .expect("name_of checked metadata");
        m.insert("resourceVersion".into(), inner.rv.to_string().into());
        m.insert("generation".into(), generation.into());
        let finalizers_left = m
            .get("finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty());
        if m.contains_key("deletionTimestamp") && !finalizers_left {
            inner
                .objects
                .get_mut(resource)
                .expect("present")
                .remove(&key);
            self.record(&mut inner, resource, EventType::Deleted, &obj);
            return Ok(obj);
        }
        inner
            .objects
            .get_mut(resource)
            .expect("present")
            .insert(key, obj.clone());
        self.record(&mut inner, resource, EventType::Modified, &obj);
        Ok(obj)
    }

    /// Deletes an object: with finalizers it only gets a `deletionTimestamp` (and stays until
    /// they are removed); without, it is gone. Returns the object as it ends up.
    pub fn delete(
        &self,
        resource: &Resource,
        namespace: &str,
        name: &str,
        now: SystemTime,
    ) -> Result<Value, StoreError> {
        let key = (namespace.to_owned(), name.to_owned());
        let mut inner = self.lock();
        let Some(mut obj) = inner
            .objects
            .get(resource)
            .and_then(|m| m.get(&key))
            .cloned()
        else {
            return Err(StoreError::NotFound {
                resource: resource.plural.clone(),
                name: name.to_owned(),
            });
        };
        let has_finalizers = obj["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty());
        inner.rv += 1;
        obj["metadata"]["resourceVersion"] = inner.rv.to_string().into();
        if has_finalizers {
            if obj["metadata"].get("deletionTimestamp").is_none() {
                obj["metadata"]["deletionTimestamp"] = rfc3339(now).into();
            }
            inner
                .objects
                .get_mut(resource)
                .expect("present")
                .insert(key, obj.clone());
            self.record(&mut inner, resource, EventType::Modified, &obj);
        } else {
            inner
                .objects
                .get_mut(resource)
                .expect("present")
                .remove(&key);
            self.record(&mut inner, resource, EventType::Deleted, &obj);
        }
        Ok(obj)
    }

    /// A watch from `from` (a resourceVersion a list or an earlier event returned): the events
    /// of `resource` after it, then live ones. `410 Gone` when `from` is older than the
    /// retained window.
    pub fn watch(&self, resource: &Resource, from: u64) -> Result<Watch, StoreError> {
        let inner = self.lock();
        if from < inner.oldest {
            return Err(StoreError::Gone {
                requested: from,
                oldest: inner.oldest,
            });
        }
        // Subscribe under the lock so that no event falls between the replay and the feed.
        let live = self.events.subscribe();
        let replay: VecDeque<Event> = inner
            .log
            .iter()
            .filter(|e| e.resource_version > from && &e.resource == resource)
            .cloned()
            .collect();
        Ok(Watch {
            resource: resource.clone(),
            replay,
            live,
            after: from.max(inner.rv),
        })
    }
}

/// A watch: replayed events first, then live ones.
#[derive(Debug)]
pub struct Watch {
    resource: Resource,
    replay: VecDeque<Event>,
    live: broadcast::Receiver<Event>,
    /// Live events at or before this were replayed (or predate the watch).
    after: u64,
}

impl Watch {
    /// The next event; `Err(Gone)` when this watcher fell so far behind that events were lost
    /// (the client must relist, as after a 410).
    pub async fn next(&mut self) -> Result<Event, StoreError> {
        if let Some(e) = self.replay.pop_front() {
            return Ok(e);
        }
        loop {
            match self.live.recv().await {
                Ok(e) if e.resource == self.resource && e.resource_version > self.after => {
                    return Ok(e);
                }
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(_))
                | Err(broadcast::error::RecvError::Closed) => {
                    return Err(StoreError::Gone {
                        requested: self.after,
                        oldest: self.after,
                    });
                }
            }
        }
    }
}

/// A `Status` object for an error, as the API server returns it.
pub fn status(e: &StoreError) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": e.to_string(),
        "reason": e.reason(),
        "code": e.code(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn t() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_028_800) // 2025-11-25T00:00:00Z
    }

    fn pods() -> Resource {
        Resource::new("", "pods", true)
    }

    fn claims() -> Resource {
        Resource::new("karpenter.sh", "nodeclaims", false)
    }

    fn pod(name: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "ci"}, "spec": {"containers": []}})
    }

    #[test]
    fn timestamps_are_rfc3339() {
        assert_eq!(rfc3339(t()), "2025-11-25T00:00:00Z");
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn writes_get_increasing_resource_versions_and_a_list_returns_the_current_one() {
        let s = Store::new(100);
        let a = s.create(&pods(), pod("a"), t()).unwrap();
        let b = s.create(&pods(), pod("b"), t()).unwrap();
        assert_eq!(a["metadata"]["resourceVersion"], "1");
        assert_eq!(b["metadata"]["resourceVersion"], "2");
        assert_eq!(a["metadata"]["creationTimestamp"], "2025-11-25T00:00:00Z");
        assert_ne!(a["metadata"]["uid"], b["metadata"]["uid"]);
        let (items, rv) = s.list(&pods(), Some("ci"));
        assert_eq!((items.len(), rv), (2, 2));
        assert!(s.list(&pods(), Some("other")).0.is_empty());
        assert_eq!(s.create(&pods(), pod("a"), t()).unwrap_err().code(), 409);
        assert_eq!(s.get(&pods(), "ci", "zzz").unwrap_err().code(), 404);
        let missing_ns = json!({"metadata": {"name": "x"}});
        assert!(matches!(
            s.create(&pods(), missing_ns, t()),
            Err(StoreError::Invalid { ref field, .. }) if field == "metadata.namespace"
        ));
    }

    #[test]
    fn an_update_with_a_stale_resource_version_conflicts() {
        let s = Store::new(100);
        let a = s.create(&pods(), pod("a"), t()).unwrap();
        let mut first = a.clone();
        first["spec"]["nodeName"] = "n1".into();
        let updated = s.update(&pods(), first, t()).unwrap();
        assert_eq!(updated["metadata"]["generation"], 2);
        assert_eq!(updated["metadata"]["uid"], a["metadata"]["uid"]);
        let mut stale = a;
        stale["spec"]["nodeName"] = "n2".into();
        assert_eq!(s.update(&pods(), stale, t()).unwrap_err().code(), 409);
        // Without a resourceVersion the update is unconditional.
        let mut blind = pod("a");
        blind["metadata"]["labels"] = json!({"x": "y"});
        assert!(s.update(&pods(), blind, t()).is_ok());
    }

    #[test]
    fn finalizers_hold_a_deleted_object_until_they_are_removed() {
        let s = Store::new(100);
        let mut c = json!({"metadata": {"name": "gitlab-x1", "finalizers": ["karpenter.sh/termination"]}, "spec": {}});
        c = s.create(&claims(), c, t()).unwrap();
        let deleting = s.delete(&claims(), "", "gitlab-x1", t()).unwrap();
        assert_eq!(
            deleting["metadata"]["deletionTimestamp"],
            "2025-11-25T00:00:00Z"
        );
        assert!(s.get(&claims(), "", "gitlab-x1").is_ok());
        let mut done = deleting;
        done["metadata"]["finalizers"] = json!([]);
        s.update(&claims(), done, t()).unwrap();
        assert_eq!(s.get(&claims(), "", "gitlab-x1").unwrap_err().code(), 404);
        let _ = c;
    }

    #[tokio::test]
    async fn a_watch_replays_from_its_resource_version_then_follows() {
        let s = Store::new(100);
        s.create(&pods(), pod("a"), t()).unwrap();
        let (_, rv) = s.list(&pods(), None);
        s.create(&pods(), pod("b"), t()).unwrap();
        s.create(&claims(), json!({"metadata": {"name": "c"}}), t())
            .unwrap();
        let mut w = s.watch(&pods(), rv).unwrap();
        let e = w.next().await.unwrap();
        assert_eq!(
            (e.kind, e.object["metadata"]["name"].as_str()),
            (EventType::Added, Some("b"))
        );
        s.delete(&pods(), "ci", "a", t()).unwrap();
        let e = w.next().await.unwrap();
        assert_eq!(e.kind, EventType::Deleted);
        assert_eq!(e.object["metadata"]["name"], "a");
        assert_eq!(e.resource_version, 4);
    }

    #[test]
    fn a_watch_from_before_the_window_is_gone() {
        let s = Store::new(3);
        for i in 0..6 {
            s.create(&pods(), pod(&format!("p{i}")), t()).unwrap();
        }
        assert!(matches!(s.watch(&pods(), 1), Err(StoreError::Gone { .. })));
        assert_eq!(s.watch(&pods(), 1).unwrap_err().code(), 410);
        assert!(s.watch(&pods(), 3).is_ok());
        assert_eq!(
            status(&s.watch(&pods(), 0).unwrap_err())["reason"],
            "Expired"
        );
    }
}
