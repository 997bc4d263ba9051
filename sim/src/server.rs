//! The simulated API server's HTTP side: Kubernetes REST paths over [`crate::store`].
//!
//! Served: discovery (`/version`, `/api`, `/apis`, `/api/v1`, `/apis/<g>/<v>`); for every
//! resource of [`RESOURCES`]: list (label and field selectors), watch (replay from a
//! resourceVersion, `410` as an `ERROR` event, `timeoutSeconds`, bookmarks), get, create,
//! update (409 on a stale resourceVersion), patch (JSON merge patch and JSON patch; strategic
//! merge and apply are handled as merge patches), delete (finalizers), and the `status`
//! subresource, eviction honouring PodDisruptionBudgets (429), and Karpenter objects validated on
//! write (422 naming the field). Not yet: bindings, v1beta1 conversion on write, fault
//! injection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::faults::{Effect, Faults};
use crate::store::{EventType, Resource, Store, StoreError, status};

/// A resource the server serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiResource {
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
}

const fn r(
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    kind: &'static str,
    namespaced: bool,
) -> ApiResource {
    ApiResource {
        group,
        version,
        plural,
        kind,
        namespaced,
    }
}

/// Every resource served.
pub const RESOURCES: &[ApiResource] = &[
    r("", "v1", "namespaces", "Namespace", false),
    r("", "v1", "pods", "Pod", true),
    r("", "v1", "nodes", "Node", false),
    r("", "v1", "events", "Event", true),
    r(
        "",
        "v1",
        "persistentvolumeclaims",
        "PersistentVolumeClaim",
        true,
    ),
    r("", "v1", "persistentvolumes", "PersistentVolume", false),
    r("apps", "v1", "deployments", "Deployment", true),
    r("apps", "v1", "replicasets", "ReplicaSet", true),
    r("apps", "v1", "statefulsets", "StatefulSet", true),
    r("apps", "v1", "daemonsets", "DaemonSet", true),
    r("batch", "v1", "jobs", "Job", true),
    r(
        "policy",
        "v1",
        "poddisruptionbudgets",
        "PodDisruptionBudget",
        true,
    ),
    r("coordination.k8s.io", "v1", "leases", "Lease", true),
    r(
        "storage.k8s.io",
        "v1",
        "storageclasses",
        "StorageClass",
        false,
    ),
    r("events.k8s.io", "v1", "events", "Event", true),
    r("karpenter.sh", "v1", "nodepools", "NodePool", false),
    r("karpenter.sh", "v1", "nodeclaims", "NodeClaim", false),
    r(
        "karpenter.k8s.aws",
        "v1",
        "ec2nodeclasses",
        "EC2NodeClass",
        false,
    ),
    // Written objects are converted to v1 and stored as such (reads return v1).
    r("karpenter.sh", "v1beta1", "nodepools", "NodePool", false),
    r("karpenter.sh", "v1beta1", "nodeclaims", "NodeClaim", false),
    r(
        "karpenter.k8s.aws",
        "v1beta1",
        "ec2nodeclasses",
        "EC2NodeClass",
        false,
    ),
    r(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        false,
    ),
];

impl ApiResource {
    fn store_key(&self) -> Resource {
        // Events of core/v1 and events.k8s.io/v1 are different stores here.
        Resource::new(self.group, self.plural, self.namespaced)
    }

    fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

/// The parsed path of a resource request.
#[derive(Debug, PartialEq)]
struct Target {
    api: ApiResource,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

fn parse_path(path: &str) -> Option<Target> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match parts.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some((*ns).to_owned()), rest),
        _ => (None, rest),
    };
    let (plural, name, subresource) = match rest {
        [plural] => (*plural, None, None),
        [plural, name] => (*plural, Some((*name).to_owned()), None),
        [plural, name, sub] => (*plural, Some((*name).to_owned()), Some((*sub).to_owned())),
        _ => return None,
    };
    // `/api/v1/namespaces/<name>` is the namespace itself.
    let api = *RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)?;
    Some(Target {
        api,
        namespace,
        name,
        subresource,
    })
}

/// The server: the store, a clock and the fault rules.
#[derive(Clone)]
pub struct ApiServer {
    pub store: Store,
    clock: Arc<dyn Fn() -> SystemTime + Send + Sync>,
    faults: Faults,
}

impl std::fmt::Debug for ApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiServer").finish_non_exhaustive()
    }
}

fn error(e: &StoreError) -> Response {
    (
        StatusCode::from_u16(e.code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        axum::Json(status(e)),
    )
        .into_response()
}

fn bad_request(message: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": "BadRequest", "code": 400}),
        ),
    )
        .into_response()
}

fn query_param(uri: &Uri, key: &str) -> Option<String> {
    uri.query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == key).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                    out.push(b);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A label selector: `k=v`, `k==v`, `k!=v`, `k`, `!k`, `k in (a,b)`, `k notin (a,b)`.
fn label_matches(selector: &str, labels: &serde_json::Map<String, Value>) -> bool {
    let mut terms = Vec::new();
    let mut depth = 0;
    let mut start = 0;
    for (i, c) in selector.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                terms.push(&selector[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&selector[start..]);
    terms
        .iter()
        .map(|t| t.trim())
        .filter(|t| !t.is_empty())
        .all(|t| {
            let get = |k: &str| labels.get(k.trim()).and_then(Value::as_str);
            if let Some((k, v)) = t.split_once("!=") {
                return get(k) != Some(v.trim());
            }
            if let Some((k, v)) = t.split_once("==").or_else(|| t.split_once('=')) {
                return get(k) == Some(v.trim());
            }
            let set = |rest: &str| -> Vec<String> {
                rest.trim()
                    .trim_start_matches('(')
                    .trim_end_matches(')')
                    .split(',')
                    .map(|v| v.trim().to_owned())
                    .collect()
            };
            if let Some((k, rest)) = t.split_once(" notin ") {
                return get(k).is_none_or(|v| !set(rest).iter().any(|s| s == v));
            }
            if let Some((k, rest)) = t.split_once(" in ") {
                return get(k).is_some_and(|v| set(rest).iter().any(|s| s == v));
            }
            if let Some(k) = t.strip_prefix('!') {
                return get(k).is_none();
            }
            get(t).is_some()
        })
}

/// A field selector: `metadata.name=x`, `metadata.namespace=x`, `spec.nodeName=x`,
/// `status.phase!=Succeeded`, comma-separated.
fn field_matches(selector: &str, obj: &Value) -> bool {
    selector
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .all(|t| {
            let (path, want, equal) = match t.split_once("!=") {
                Some((p, v)) => (p, v, false),
                None => match t.split_once("==").or_else(|| t.split_once('=')) {
                    Some((p, v)) => (p, v, true),
                    None => return false,
                },
            };
            let mut v = obj;
            for part in path.split('.') {
                v = &v[part];
            }
            let have = v.as_str().unwrap_or("");
            (have == want) == equal
        })
}

fn selected(uri: &Uri, obj: &Value) -> bool {
    let labels = obj["metadata"]["labels"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    query_param(uri, "labelSelector").is_none_or(|s| label_matches(&s, &labels))
        && query_param(uri, "fieldSelector").is_none_or(|s| field_matches(&s, obj))
}

impl ApiServer {
    pub fn new(store: Store, clock: Arc<dyn Fn() -> SystemTime + Send + Sync>) -> Self {
        Self {
            store,
            clock,
            faults: Faults::default(),
        }
    }

    /// Creates one object as a `POST` would (v1beta1 Karpenter objects converted, defaults,
    /// validation); namespaced objects without a namespace go to `default`. The error names
    /// the object and says why.
    pub fn create_object(&self, mut obj: Value) -> Result<Value, String> {
        let api_version = obj["apiVersion"].as_str().unwrap_or_default().to_owned();
        let kind = obj["kind"].as_str().unwrap_or_default().to_owned();
        let name = meta_name(&obj).unwrap_or_default().to_owned();
        let what = format!("{kind}/{name}");
        let (group, version) = api_version
            .rsplit_once('/')
            .unwrap_or(("", api_version.as_str()));
        let api = *RESOURCES
            .iter()
            .find(|r| r.group == group && r.version == version && r.kind == kind)
            .ok_or_else(|| format!("{what}: {api_version} {kind} is not served"))?;
        if api.version == "v1beta1" {
            obj = to_v1(obj).map_err(|_| format!("{what}: cannot be converted to v1"))?;
        }
        let namespace = api.namespaced.then(|| {
            obj["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default")
                .to_owned()
        });
        let t = Target {
            api,
            namespace,
            name: None,
            subresource: None,
        };
        self.defaults(&t, &mut obj);
        if let Err(causes) = Self::causes(&t, &obj) {
            let causes: Vec<String> = causes.iter().map(|(f, m)| format!("{f}: {m}")).collect();
            return Err(format!("{what} is invalid: {}", causes.join(", ")));
        }
        self.store
            .create(&api.store_key(), obj, (self.clock)())
            .map_err(|e| format!("{what}: {e}"))
    }

    /// The fault rules (shared with every clone of this server).
    pub fn faults(&self) -> Faults {
        self.faults.clone()
    }

    /// Serves on `addr` (port 0: any) until `shutdown` resolves; returns the bound address
    /// and the server task.
    pub async fn serve(
        self,
        addr: SocketAddr,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>)> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let bound = listener.local_addr()?;
        // Open watches would hold a graceful shutdown for up to their timeout: end them.
        let faults = self.faults.clone();
        let shutdown = async move {
            shutdown.await;
            faults.cut_watches();
        };
        let app = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let server = self.clone();
                async move { server.handle(method, uri, headers, body).await }
            },
        );
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
        });
        Ok((bound, task))
    }

    /// Serves on 127.0.0.1 with a port of its own until the returned handle is dropped.
    pub async fn start_local(self) -> std::io::Result<LocalServer> {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (addr, task) = self
            .serve(SocketAddr::from(([127, 0, 0, 1], 0)), async {
                let _ = stopped.await;
            })
            .await?;
        Ok(LocalServer {
            addr,
            stop: Some(stop),
            task: Some(task),
        })
    }

    async fn handle(&self, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
        let path = uri.path();
        match self.faults.take(method.as_str(), path) {
            Some(Effect::Status(code)) => return injected(code),
            Some(Effect::Delay(by)) => tokio::time::sleep(by).await,
            None => {}
        }
        // JSON only (and YAML for apply): a protobuf or CBOR body is refused the way a
        // server refuses a content type it does not serve, which client-go answers by
        // sending JSON.
        if let Some(ct) = headers.get("content-type").and_then(|v| v.to_str().ok())
            && !body.is_empty()
            && !(ct.contains("json") || ct.contains("yaml"))
        {
            return (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                axum::Json(json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                    "status": "Failure", "reason": "UnsupportedMediaType", "code": 415,
                    "message": format!("the body of the request was in an unknown format - accepted media types include: application/json, application/yaml (got {ct})")})),
            )
                .into_response();
        }
        if let Some(resp) = self.discovery(path) {
            return resp;
        }
        let Some(t) = parse_path(path) else {
            return error(&StoreError::NotFound {
                resource: "path".to_owned(),
                name: path.to_owned(),
            });
        };
        if t.api.namespaced && t.namespace.is_none() && method != Method::GET {
            return bad_request("a namespaced resource needs a namespace in its path");
        }
        let now = (self.clock)();
        let key = t.api.store_key();
        let ns = t.namespace.clone().unwrap_or_default();
        let v1beta1 = t.api.version == "v1beta1";
        let parse = || -> Result<Value, Box<Response>> {
            let obj: Value = serde_json::from_slice(&body)
                .map_err(|e| Box::new(bad_request(&format!("invalid JSON: {e}"))))?;
            if v1beta1 && matches!(method, Method::POST | Method::PUT) {
                return to_v1(obj);
            }
            Ok(obj)
        };
        if v1beta1 && method == Method::PATCH {
            return bad_request(&format!(
                "{}.{}/v1beta1 objects are converted to v1 on create and update; patch the {}/v1 object instead",
                t.api.plural, t.api.group, t.api.group
            ));
        }
        match (&method, &t.name, t.subresource.as_deref()) {
            (&Method::GET, None, None) => {
                if query_param(&uri, "watch").is_some_and(|w| w == "true" || w == "1") {
                    return self.watch(&t, &uri);
                }
                let (items, rv) = self.store.list(&key, t.namespace.as_deref());
                let items: Vec<Value> = items.into_iter().filter(|o| selected(&uri, o)).collect();
                if accept_table(&headers) {
                    return axum::Json(crate::table::table(
                        t.api.plural,
                        &items,
                        &rv.to_string(),
                        now,
                    ))
                    .into_response();
                }
                axum::Json(json!({
                    "kind": format!("{}List", t.api.kind),
                    "apiVersion": t.api.api_version(),
                    "metadata": {"resourceVersion": rv.to_string()},
                    "items": items,
                }))
                .into_response()
            }
            (&Method::GET, Some(name), None | Some("status")) => {
                match self.store.get(&key, &ns, name) {
                    Ok(o) if accept_table(&headers) => {
                        let rv = o["metadata"]["resourceVersion"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned();
                        axum::Json(crate::table::table(t.api.plural, &[o], &rv, now))
                            .into_response()
                    }
                    Ok(o) => axum::Json(o).into_response(),
                    Err(e) => error(&e),
                }
            }
            (&Method::POST, None, None) => {
                let mut obj = match parse() {
                    Ok(o) => o,
                    Err(r) => return *r,
                };
                self.defaults(&t, &mut obj);
                self.create(&t, &key, obj, now)
            }
            (&Method::PUT, Some(name), sub) => {
                let mut obj = match parse() {
                    Ok(o) => o,
                    Err(r) => return *r,
                };
                if meta_name(&obj) != Some(name.as_str()) {
                    return bad_request("the name in the body does not match the path");
                }
                self.defaults(&t, &mut obj);
                self.write(&t, &key, &ns, name, sub, obj, now)
            }
            (&Method::PATCH, Some(name), sub) => {
                let content_type = headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                if content_type.starts_with("application/apply-patch") {
                    return self.apply(&t, &key, &ns, name, sub, &uri, &body, now);
                }
                let current = match self.store.get(&key, &ns, name) {
                    Ok(o) => o,
                    Err(e) => return error(&e),
                };
                let patch = match parse() {
                    Ok(o) => o,
                    Err(r) => return *r,
                };
                let mut patched = current.clone();
                if content_type.starts_with("application/strategic-merge-patch") {
                    if custom_resource(&t.api) {
                        return (
                            StatusCode::UNSUPPORTED_MEDIA_TYPE,
                            axum::Json(json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                                "status": "Failure", "reason": "UnsupportedMediaType", "code": 415,
                                "message": "strategic merge patch is not supported for custom resources; use a merge or JSON patch"})),
                        )
                            .into_response();
                    }
                    crate::patch::strategic_merge(&mut patched, &patch);
                } else if content_type.starts_with("application/json-patch+json") {
                    let ops: json_patch::Patch = match serde_json::from_value(patch) {
                        Ok(p) => p,
                        Err(e) => return bad_request(&format!("invalid JSON patch: {e}")),
                    };
                    if let Err(e) = json_patch::patch(&mut patched, &ops) {
                        return (
                            StatusCode::UNPROCESSABLE_ENTITY,
                            axum::Json(json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                                "status": "Failure", "message": e.to_string(), "reason": "Invalid", "code": 422})),
                        )
                            .into_response();
                    }
                } else {
                    json_patch::merge(&mut patched, &patch);
                }
                if !patched.is_object() || !patched["metadata"].is_object() {
                    return (
                        StatusCode::UNPROCESSABLE_ENTITY,
                        axum::Json(json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                            "status": "Failure", "reason": "Invalid", "code": 422,
                            "message": "the patched object must be an object with metadata"})),
                    )
                        .into_response();
                }
                // Without a resourceVersion in the patch, the patch applies to the current one.
                if patch_rv(&patched, &current) {
                    patched["metadata"]["resourceVersion"] =
                        current["metadata"]["resourceVersion"].clone();
                }
                self.write(&t, &key, &ns, name, sub, patched, now)
            }
            (&Method::POST, Some(name), Some("eviction")) if t.api.plural == "pods" => {
                self.evict(&ns, name, now)
            }
            (&Method::POST, Some(name), Some("binding")) if t.api.plural == "pods" => {
                let binding = match parse() {
                    Ok(o) => o,
                    Err(r) => return *r,
                };
                self.bind(&ns, name, &binding, now)
            }
            (&Method::DELETE, Some(name), None) => match self.store.delete(&key, &ns, name, now) {
                Ok(o) => axum::Json(o).into_response(),
                Err(e) => error(&e),
            },
            _ => (
                StatusCode::METHOD_NOT_ALLOWED,
                axum::Json(json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                    "status": "Failure", "message": format!("{method} {path} is not supported"),
                    "reason": "MethodNotAllowed", "code": 405})),
            )
                .into_response(),
        }
    }

    /// Writes `obj` over the object (`status` subresource: only its status changes; main
    /// resource: everything but its status).
    #[allow(clippy::too_many_arguments)]
    fn write(
        &self,
        t: &Target,
        key: &Resource,
        ns: &str,
        name: &str,
        sub: Option<&str>,
        mut obj: Value,
        now: SystemTime,
    ) -> Response {
        let current = match self.store.get(key, ns, name) {
            Ok(o) => o,
            Err(e) => return error(&e),
        };
        match sub {
            Some("status") => {
                let mut next = current.clone();
                next["status"] = obj.get("status").cloned().unwrap_or(Value::Null);
                if let Some(rv) = obj["metadata"].get("resourceVersion") {
                    next["metadata"]["resourceVersion"] = rv.clone();
                }
                obj = next;
            }
            None => {
                if let Some(s) = current.get("status") {
                    obj["status"] = s.clone();
                } else if let Some(o) = obj.as_object_mut() {
                    o.remove("status");
                }
            }
            Some(other) => return bad_request(&format!("subresource {other} is not supported")),
        }
        if t.api.namespaced {
            obj["metadata"]["namespace"] = ns.into();
        }
        if let Err(r) = Self::validate(t, &obj) {
            return *r;
        }
        match self.store.update(key, obj, now) {
            Ok(o) => axum::Json(o).into_response(),
            Err(e) => error(&e),
        }
    }

    fn create(&self, t: &Target, key: &Resource, obj: Value, now: SystemTime) -> Response {
        if let Err(r) = Self::validate(t, &obj) {
            return *r;
        }
        match self.store.create(key, obj, now) {
            Ok(o) => (StatusCode::CREATED, axum::Json(o)).into_response(),
            Err(e) => error(&e),
        }
    }

    /// Server-side apply ([`crate::patch::apply`]): creates or merges, recording the field
    /// manager; 409 naming the fields another manager applied, unless `force=true`.
    #[allow(clippy::too_many_arguments)]
    fn apply(
        &self,
        t: &Target,
        key: &Resource,
        ns: &str,
        name: &str,
        sub: Option<&str>,
        uri: &Uri,
        body: &[u8],
        now: SystemTime,
    ) -> Response {
        let Some(manager) = query_param(uri, "fieldManager").filter(|m| !m.is_empty()) else {
            return bad_request("PATCH: fieldManager is required for apply patch");
        };
        let force = query_param(uri, "force").is_some_and(|f| f == "true");
        let applied: Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(_) => match serde_norway::from_slice(body) {
                Ok(v) => v,
                Err(e) => return bad_request(&format!("invalid apply configuration: {e}")),
            },
        };
        if !applied.is_object() || applied.get("metadata").is_some_and(|m| !m.is_object()) {
            return bad_request("the apply configuration must be an object");
        }
        if meta_name(&applied).is_some_and(|n| n != name) {
            return bad_request("the name in the body does not match the path");
        }
        let current = match self.store.get(key, ns, name) {
            Ok(o) => Some(o),
            Err(StoreError::NotFound { .. }) if sub.is_none() => None,
            Err(e) => return error(&e),
        };
        let time = k8s_time(now);
        let result = crate::patch::apply(
            current.as_ref(),
            &applied,
            &manager,
            force,
            !custom_resource(&t.api),
            &time,
        );
        let mut obj = match result {
            Ok(o) => o,
            Err(conflicts) => {
                let causes: Vec<Value> = conflicts
                    .iter()
                    .map(|c| {
                        json!({"reason": "FieldManagerConflict", "field": c.field,
                        "message": format!("conflict with \"{}\"", c.manager)})
                    })
                    .collect();
                let list = conflicts
                    .iter()
                    .map(|c| format!("conflict with \"{}\": {}", c.manager, c.field))
                    .collect::<Vec<_>>()
                    .join(", ");
                return (
                    StatusCode::CONFLICT,
                    axum::Json(json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                        "status": "Failure", "reason": "Conflict", "code": 409,
                        "message": format!("Apply failed with {} conflict(s): {list}", conflicts.len()),
                        "details": {"name": name, "kind": t.api.plural, "causes": causes}})),
                )
                    .into_response();
            }
        };
        match current {
            None => {
                obj["metadata"]["name"] = name.into();
                self.defaults(t, &mut obj);
                self.create(t, key, obj, now)
            }
            Some(c) => {
                obj["metadata"]["resourceVersion"] = c["metadata"]["resourceVersion"].clone();
                self.write(t, key, ns, name, sub, obj, now)
            }
        }
    }

    /// The binding subresource: assigns a pod to a node (409 when it is already assigned).
    fn bind(&self, ns: &str, name: &str, binding: &Value, now: SystemTime) -> Response {
        let pods = Resource::new("", "pods", true);
        let Some(node) = binding["target"]["name"].as_str().filter(|n| !n.is_empty()) else {
            return bad_request("Binding: target.name: Required value");
        };
        let mut pod = match self.store.get(&pods, ns, name) {
            Ok(p) => p,
            Err(e) => return error(&e),
        };
        if let Some(current) = pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) {
            return error(&StoreError::Conflict {
                resource: "pods/binding".to_owned(),
                name: format!("{name} is already assigned to node {current}"),
            });
        }
        pod["spec"]["nodeName"] = node.into();
        let condition = json!({"type": "PodScheduled", "status": "True",
            "lastTransitionTime": k8s_time(now)});
        let conditions = pod["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|c| c["type"] != "PodScheduled")
            .chain([condition])
            .collect::<Vec<_>>();
        pod["status"]["conditions"] = conditions.into();
        match self.store.update(&pods, pod, now) {
            Ok(_) => (
                StatusCode::CREATED,
                axum::Json(json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                    "status": "Success", "code": 201})),
            )
                .into_response(),
            Err(e) => error(&e),
        }
    }

    /// The Eviction API: deletes the pod unless a PodDisruptionBudget selecting it would be
    /// broken (429, as the real API server answers).
    fn evict(&self, ns: &str, name: &str, now: SystemTime) -> Response {
        let pods = Resource::new("", "pods", true);
        let pod = match self.store.get(&pods, ns, name) {
            Ok(p) => p,
            Err(e) => return error(&e),
        };
        let labels = pod["metadata"]["labels"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        let (budgets, _) = self.store.list(
            &Resource::new("policy", "poddisruptionbudgets", true),
            Some(ns),
        );
        let (all, _) = self.store.list(&pods, Some(ns));
        for pdb in budgets {
            let selector = &pdb["spec"]["selector"];
            if !selector_matches_json(selector, &labels) {
                continue;
            }
            let matching: Vec<&Value> = all
                .iter()
                .filter(|p| {
                    selector_matches_json(
                        selector,
                        &p["metadata"]["labels"]
                            .as_object()
                            .cloned()
                            .unwrap_or_default(),
                    )
                })
                .collect();
            let expected = matching.len() as i64;
            let healthy = matching
                .iter()
                .filter(|p| {
                    p["metadata"].get("deletionTimestamp").is_none()
                        && p["status"]["phase"].as_str() == Some("Running")
                })
                .count() as i64;
            let amount = |v: &Value| -> Option<i64> {
                match v {
                    Value::Number(n) => n.as_i64(),
                    Value::String(s) => s
                        .strip_suffix('%')
                        .and_then(|p| p.parse::<i64>().ok())
                        .map(|p| (p * expected + 99) / 100),
                    _ => None,
                }
            };
            let allowed = if let Some(min) = pdb["spec"].get("minAvailable").and_then(amount) {
                healthy > min // one fewer healthy pod still meets minAvailable
            } else if let Some(max) = pdb["spec"].get("maxUnavailable").and_then(amount) {
                (expected - healthy) < max // one more unavailable still within maxUnavailable
            } else {
                true
            };
            if !allowed {
                let pdb_name = pdb["metadata"]["name"].as_str().unwrap_or_default();
                return (
                    StatusCode::TOO_MANY_REQUESTS,
                    axum::Json(json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                        "status": "Failure", "reason": "TooManyRequests", "code": 429,
                        "message": format!("Cannot evict pod as it would violate the pod's disruption budget {pdb_name}.")})),
                )
                    .into_response();
            }
        }
        match self.store.delete(&pods, ns, name, now) {
            Ok(_) => (
                StatusCode::CREATED,
                axum::Json(json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                    "status": "Success", "code": 201})),
            )
                .into_response(),
            Err(e) => error(&e),
        }
    }

    /// What is wrong with a Karpenter object, as (field, message) pairs (berth-api's rules).
    fn causes(t: &Target, obj: &Value) -> Result<(), Vec<(String, String)>> {
        use berth_api::validate::Validate;
        fn check<T: serde::de::DeserializeOwned + Validate>(
            obj: &Value,
        ) -> Result<(), Vec<(String, String)>> {
            let parsed: T = serde_path_to_error::deserialize(obj.clone())
                .map_err(|e| vec![(e.path().to_string(), e.inner().to_string())])?;
            parsed.validate().map_err(|errors| {
                errors
                    .0
                    .into_iter()
                    .map(|e| (e.path, e.message))
                    .collect::<Vec<_>>()
            })
        }
        match (t.api.group, t.api.plural) {
            ("karpenter.sh", "nodepools") => check::<berth_api::v1::NodePool>(obj),
            ("karpenter.sh", "nodeclaims") => check::<berth_api::v1::NodeClaim>(obj),
            ("karpenter.k8s.aws", "ec2nodeclasses") => check::<berth_api::v1::EC2NodeClass>(obj),
            _ => Ok(()),
        }
    }

    /// Karpenter objects are validated on write as Karpenter's CRDs do (berth-api's rules):
    /// a malformed or invalid one is a `422 Invalid` naming the field.
    fn validate(t: &Target, obj: &Value) -> Result<(), Box<Response>> {
        let result = Self::causes(t, obj);
        result.map_err(|causes| {
            let name = obj["metadata"]["name"].as_str().unwrap_or_default();
            let message = format!(
                "{}.{} \"{name}\" is invalid: {}",
                t.api.kind,
                t.api.group,
                causes
                    .iter()
                    .map(|(f, m)| format!("{f}: {m}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            Box::new(
                (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    axum::Json(json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                        "status": "Failure", "reason": "Invalid", "code": 422, "message": message,
                        "details": {"name": name, "group": t.api.group, "kind": t.api.kind,
                            "causes": causes.iter().map(|(f, m)| json!({"field": f, "message": m,
                                "reason": "FieldValueInvalid"})).collect::<Vec<_>>()}})),
                )
                    .into_response(),
            )
        })
    }

    fn defaults(&self, t: &Target, obj: &mut Value) {
        if !obj.is_object() {
            return;
        }
        obj["apiVersion"] = t.api.api_version().into();
        obj["kind"] = t.api.kind.into();
        if obj.get("metadata").is_none_or(|m| !m.is_object()) {
            obj["metadata"] = json!({});
        }
        if let Some(ns) = &t.namespace {
            obj["metadata"]["namespace"] = ns.clone().into();
        }
    }

    fn watch(&self, t: &Target, uri: &Uri) -> Response {
        let key = t.api.store_key();
        let from = query_param(uri, "resourceVersion")
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|v| *v > 0);
        let timeout = query_param(uri, "timeoutSeconds")
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_secs)
            .unwrap_or(Duration::from_secs(1800));
        let bookmarks = query_param(uri, "allowWatchBookmarks").is_some_and(|v| v == "true");
        let namespace = t.namespace.clone();
        let uri = uri.clone();
        let api = t.api;
        // No resourceVersion: start with the current objects as ADDED events.
        let (initial, start) = match from {
            Some(rv) => (Vec::new(), rv),
            None => {
                let (items, rv) = self.store.list(&key, namespace.as_deref());
                (items, rv)
            }
        };
        let line = |kind: &str, object: &Value| {
            let mut s = serde_json::to_vec(&json!({"type": kind, "object": object}))
                .expect("events serialize");
            s.push(b'\n');
            Bytes::from(s)
        };
        let mut prefix: Vec<Bytes> = initial
            .iter()
            .filter(|o| selected(&uri, o))
            .map(|o| line("ADDED", o))
            .collect();
        let watch = match self.store.watch(&key, start) {
            Ok(w) => Some(w),
            Err(e) => {
                prefix.push(line("ERROR", &status(&e)));
                None
            }
        };
        let deadline = tokio::time::Instant::now() + timeout;
        let bookmark = move |rv: u64| {
            line(
                "BOOKMARK",
                &json!({"kind": api.kind, "apiVersion": api.api_version(),
                    "metadata": {"resourceVersion": rv.to_string()}}),
            )
        };
        let mut cuts = self.faults.cuts();
        cuts.mark_unchanged();
        let state = (
            prefix.into_iter(),
            watch,
            uri,
            namespace,
            bookmarks,
            start,
            cuts,
        );
        let stream = futures::stream::unfold(state, move |mut st| async move {
            if let Some(b) = st.0.next() {
                return Some((Ok::<Bytes, std::io::Error>(b), st));
            }
            let watch = st.1.as_mut()?;
            loop {
                let next = tokio::select! {
                    next = tokio::time::timeout_at(
                        deadline.min(tokio::time::Instant::now() + Duration::from_secs(60)),
                        watch.next(),
                    ) => next,
                    _ = st.6.changed() => {
                        // An injected cut: the connection drops mid-stream.
                        st.1 = None;
                        return Some((Err(std::io::Error::other("watch cut by fault injection")), st));
                    }
                };
                match next {
                    // The watch ends at timeoutSeconds, with a last bookmark when asked.
                    Err(_) if tokio::time::Instant::now() >= deadline => {
                        if st.4 {
                            let b = bookmark(st.5);
                            st.1 = None;
                            return Some((Ok(b), st));
                        }
                        return None;
                    }
                    Err(_) if st.4 => {
                        let b = bookmark(st.5);
                        return Some((Ok(b), st));
                    }
                    Err(_) => continue,
                    Ok(Err(e)) => {
                        let b = line("ERROR", &status(&e));
                        st.1 = None;
                        return Some((Ok(b), st));
                    }
                    Ok(Ok(e)) => {
                        st.5 = e.resource_version;
                        let in_ns = st.3.as_deref().is_none_or(|ns| {
                            e.object["metadata"]["namespace"].as_str() == Some(ns)
                        });
                        if !in_ns || !selected(&st.2, &e.object) {
                            continue;
                        }
                        let kind = match e.kind {
                            EventType::Added => "ADDED",
                            EventType::Modified => "MODIFIED",
                            EventType::Deleted => "DELETED",
                        };
                        return Some((Ok(line(kind, &e.object)), st));
                    }
                }
            }
        });
        Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "application/json")
            .body(Body::from_stream(stream))
            .expect("a valid response")
    }

    fn discovery(&self, path: &str) -> Option<Response> {
        let json = |v: Value| Some(axum::Json(v).into_response());
        match path.trim_end_matches('/') {
            "/version" => json(
                json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0-berth-sim",
                "platform": "linux/amd64"}),
            ),
            // OpenAPI: v2 is not served (clients fall back to v3); v3 publishes, per group
            // version, a schema per kind that accepts any fields, so client-side validation
            // defers to the server's (Karpenter objects are validated on write).
            "/openapi/v3" => {
                let mut paths = serde_json::Map::new();
                for r in RESOURCES {
                    let gv = if r.group.is_empty() {
                        format!("api/{}", r.version)
                    } else {
                        format!("apis/{}/{}", r.group, r.version)
                    };
                    paths.insert(
                        gv.clone(),
                        json!({"serverRelativeURL": format!("/openapi/v3/{gv}?hash=berth")}),
                    );
                }
                json(json!({ "paths": paths }))
            }
            p if p.starts_with("/openapi/v3/") => {
                let gv = &p["/openapi/v3/".len()..];
                let (group, version) = match gv.split('/').collect::<Vec<_>>().as_slice() {
                    ["api", v] => (String::new(), (*v).to_owned()),
                    ["apis", g, v] => ((*g).to_owned(), (*v).to_owned()),
                    _ => return None,
                };
                let schemas: serde_json::Map<String, Value> = RESOURCES
                    .iter()
                    .filter(|r| r.group == group && r.version == version)
                    .map(|r| {
                        let name = format!("{}.{}.{}", if r.group.is_empty() { "io.k8s.api.core" } else { r.group }, r.version, r.kind);
                        (name, json!({"type": "object",
                            "x-kubernetes-preserve-unknown-fields": true,
                            "x-kubernetes-group-version-kind": [{"group": r.group, "version": r.version, "kind": r.kind}]}))
                    })
                    .collect();
                if schemas.is_empty() {
                    return None;
                }
                // Write operations list `fieldValidation`, which tells kubectl the server
                // validates fields itself.
                let mut paths = serde_json::Map::new();
                for r in RESOURCES
                    .iter()
                    .filter(|r| r.group == group && r.version == version)
                {
                    let gvk = json!({"group": r.group, "version": r.version, "kind": r.kind});
                    let op = json!({"x-kubernetes-group-version-kind": gvk,
                        "parameters": [{"name": "fieldValidation", "in": "query",
                                        "schema": {"type": "string", "uniqueItems": true}}],
                        "responses": {}});
                    let base = if r.namespaced {
                        format!("/{gv}/namespaces/{{namespace}}/{}", r.plural)
                    } else {
                        format!("/{gv}/{}", r.plural)
                    };
                    paths.insert(base.clone(), json!({"post": op}));
                    paths.insert(format!("{base}/{{name}}"), json!({"put": op, "patch": op}));
                }
                json(json!({"openapi": "3.0.0",
                    "info": {"title": "Kubernetes", "version": "v1.33.0-berth-sim"},
                    "paths": paths, "components": {"schemas": schemas}}))
            }
            "/api" => json(json!({"kind": "APIVersions", "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]})),
            "/apis" => {
                // Each group with its versions, the first served (v1) preferred.
                let mut groups: Vec<(&str, Vec<&str>)> = Vec::new();
                for r in RESOURCES.iter().filter(|r| !r.group.is_empty()) {
                    match groups.iter_mut().find(|(g, _)| *g == r.group) {
                        Some((_, versions)) if !versions.contains(&r.version) => {
                            versions.push(r.version);
                        }
                        Some(_) => {}
                        None => groups.push((r.group, vec![r.version])),
                    }
                }
                let groups: Vec<Value> = groups
                    .into_iter()
                    .map(|(g, versions)| {
                        let gvs: Vec<Value> = versions
                            .iter()
                            .map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
                            .collect();
                        json!({"name": g, "versions": gvs, "preferredVersion": gvs[0]})
                    })
                    .collect();
                json(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}))
            }
            p => {
                let parts: Vec<&str> = p.trim_matches('/').split('/').collect();
                let (group, version) = match parts.as_slice() {
                    ["api", v] => ("", *v),
                    ["apis", g, v] => (*g, *v),
                    _ => return None,
                };
                let resources: Vec<Value> = RESOURCES
                    .iter()
                    .filter(|r| r.group == group && r.version == version)
                    .flat_map(|r| {
                        let verbs = ["create", "delete", "get", "list", "patch", "update", "watch"];
                        let short: &[&str] = match r.plural {
                            "pods" => &["po"],
                            "nodes" => &["no"],
                            "namespaces" => &["ns"],
                            "events" => &["ev"],
                            "persistentvolumeclaims" => &["pvc"],
                            "persistentvolumes" => &["pv"],
                            "deployments" => &["deploy"],
                            "replicasets" => &["rs"],
                            "statefulsets" => &["sts"],
                            "daemonsets" => &["ds"],
                            "poddisruptionbudgets" => &["pdb"],
                            "storageclasses" => &["sc"],
                            "customresourcedefinitions" => &["crd", "crds"],
                            _ => &[],
                        };
                        [
                            json!({"name": r.plural, "singularName": r.kind.to_lowercase(),
                                "namespaced": r.namespaced, "kind": r.kind, "verbs": verbs,
                                "shortNames": short}),
                            json!({"name": format!("{}/status", r.plural), "singularName": "",
                                "namespaced": r.namespaced, "kind": r.kind, "verbs": ["get", "patch", "update"]}),
                        ]
                    })
                    .collect();
                if resources.is_empty() {
                    return None;
                }
                let gv = if group.is_empty() {
                    version.to_owned()
                } else {
                    format!("{group}/{version}")
                };
                json(
                    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv,
                    "resources": resources}),
                )
            }
        }
    }
}

/// A `LabelSelector` object (`matchLabels`, `matchExpressions`) against labels; an empty or
/// missing selector matches everything (policy/v1).
fn selector_matches_json(selector: &Value, labels: &serde_json::Map<String, Value>) -> bool {
    let labels_ok = selector["matchLabels"]
        .as_object()
        .is_none_or(|m| m.iter().all(|(k, v)| labels.get(k) == Some(v)));
    let exprs_ok = selector["matchExpressions"].as_array().is_none_or(|exprs| {
        exprs.iter().all(|e| {
            let have = labels
                .get(e["key"].as_str().unwrap_or_default())
                .and_then(Value::as_str);
            let values: Vec<&str> = e["values"]
                .as_array()
                .map(|v| v.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            match e["operator"].as_str().unwrap_or_default() {
                "In" => have.is_some_and(|h| values.contains(&h)),
                "NotIn" => have.is_none_or(|h| !values.contains(&h)),
                "Exists" => have.is_some(),
                "DoesNotExist" => have.is_none(),
                _ => false,
            }
        })
    });
    labels_ok && exprs_ok
}

/// A kubeconfig for `kubectl` and kube-rs clients of the server at `url`.
pub fn kubeconfig(url: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: berth-sim\n  cluster:\n    server: {url}\nusers:\n- name: berth-sim\n  user: {{}}\ncontexts:\n- name: berth-sim\n  context:\n    cluster: berth-sim\n    user: berth-sim\ncurrent-context: berth-sim\n"
    )
}

/// A running [`ApiServer`] on loopback; stops when dropped.
#[derive(Debug)]
pub struct LocalServer {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl LocalServer {
    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kubeconfig for `kubectl` and kube-rs clients.
    pub fn kubeconfig(&self) -> String {
        kubeconfig(&self.url())
    }

    /// Stops and waits for the server to finish.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task.await.map_err(std::io::Error::other)?,
            None => Ok(()),
        }
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// An injected error, as the real API server words it.
fn injected(code: u16) -> Response {
    let reason = match code {
        429 => "TooManyRequests",
        500 => "InternalError",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "InternalError",
    };
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (
        status,
        axum::Json(json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "reason": reason, "code": code,
            "message": format!("injected fault: {reason}")})),
    )
        .into_response();
    if code == 429 {
        response
            .headers_mut()
            .insert("retry-after", axum::http::HeaderValue::from_static("1"));
    }
    response
}

fn accept_table(headers: &HeaderMap) -> bool {
    headers
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .is_some_and(crate::table::wanted)
}

/// Karpenter's resources are CRDs (merge and JSON patch only); the rest are built in.
fn custom_resource(api: &ApiResource) -> bool {
    matches!(api.group, "karpenter.sh" | "karpenter.k8s.aws")
}

/// A karpenter v1beta1 object converted to v1 (berth-api's conversion), or a 422 naming the
/// field that cannot be converted.
fn to_v1(obj: Value) -> Result<Value, Box<Response>> {
    let invalid = |message: String| {
        Box::new(
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                axum::Json(json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                "status": "Failure", "reason": "Invalid", "code": 422, "message": message})),
            )
                .into_response(),
        )
    };
    fn joined<E: ToString>(errors: &[E]) -> String {
        errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    }
    let manifest =
        berth_api::manifest::parse_value(0, obj).map_err(|errors| invalid(joined(&errors)))?;
    let converted =
        berth_api::convert::to_v1(vec![manifest]).map_err(|errors| invalid(joined(&errors)))?;
    let object = converted
        .objects
        .into_iter()
        .next()
        .ok_or_else(|| invalid("nothing to convert".to_owned()))?;
    let value = match object {
        berth_api::convert::V1Object::NodePool(o) => serde_json::to_value(o),
        berth_api::convert::V1Object::EC2NodeClass(o) => serde_json::to_value(o),
        berth_api::convert::V1Object::NodeClaim(o) => serde_json::to_value(o),
    };
    value.map_err(|e| invalid(e.to_string()))
}

fn k8s_time(t: SystemTime) -> String {
    let ts: k8s_openapi::jiff::Timestamp = t
        .try_into()
        .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
    ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn meta_name(obj: &Value) -> Option<&str> {
    obj["metadata"]["name"].as_str()
}

/// Whether the patched object carries no resourceVersion of its own (then the stored one
/// applies, as the API server does for patches).
fn patch_rv(patched: &Value, current: &Value) -> bool {
    patched["metadata"].get("resourceVersion").is_none()
        || patched["metadata"]["resourceVersion"] == current["metadata"]["resourceVersion"]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_parse_to_resources() {
        let t = parse_path("/api/v1/namespaces/ci/pods/build-1/status").unwrap();
        assert_eq!(t.api.plural, "pods");
        assert_eq!(t.namespace.as_deref(), Some("ci"));
        assert_eq!(t.name.as_deref(), Some("build-1"));
        assert_eq!(t.subresource.as_deref(), Some("status"));
        let t = parse_path("/apis/karpenter.sh/v1/nodeclaims/x").unwrap();
        assert_eq!((t.api.kind, t.namespace), ("NodeClaim", None));
        let t = parse_path("/api/v1/namespaces/ci").unwrap();
        assert_eq!(
            (t.api.plural, t.name.as_deref()),
            ("namespaces", Some("ci"))
        );
        assert!(parse_path("/apis/nope/v1/things").is_none());
    }

    #[test]
    fn selectors() {
        let labels: serde_json::Map<String, Value> =
            serde_json::from_value(json!({"app": "web", "tier": "front"})).unwrap();
        for (s, want) in [
            ("app=web", true),
            ("app==web,tier=front", true),
            ("app!=web", false),
            ("app in (web,api)", true),
            ("app notin (web)", false),
            ("tier", true),
            ("!missing", true),
            ("missing", false),
        ] {
            assert_eq!(label_matches(s, &labels), want, "{s}");
        }
        let pod = json!({"metadata": {"name": "p", "namespace": "ci"}, "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}});
        assert!(field_matches(
            "spec.nodeName=n1,status.phase!=Succeeded",
            &pod
        ));
        assert!(!field_matches("spec.nodeName=n2", &pod));
        assert!(field_matches("spec.nodeName=", &json!({"spec": {}})));
    }
}
