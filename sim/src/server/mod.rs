//! The simulated API server's HTTP side: Kubernetes REST paths over [`crate::store`].
//!
//! Served: discovery (`/version`, `/api`, `/apis`, `/api/v1`, `/apis/<g>/<v>`); for every
//! resource of [`RESOURCES`]: list (label and field selectors), watch (replay from a
//! resourceVersion, `410` as an `ERROR` event, `timeoutSeconds`, bookmarks), get, create,
//! update (409 on a stale resourceVersion), patch (JSON merge patch and JSON patch; strategic
//! merge and apply are handled as merge patches), delete (finalizers), and the `status`
//! subresource, eviction honouring PodDisruptionBudgets (429; counted, see
//! [`ApiServer::evictions`]), and Karpenter objects validated on write (422 naming the field).
//! Not yet: bindings, v1beta1 conversion on write, fault injection.

mod audit;
mod discovery;
mod local;
mod resources;
mod routing;
pub(crate) mod selectors;
mod subresources;
mod watch;
mod write;

pub use audit::{Audit, KubeCall};
pub use local::{LocalServer, kubeconfig, kubeconfig_with_token};
pub use resources::{ApiResource, RESOURCES};
pub use subresources::EvictionStats;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, Uri};
use serde_json::Value;

use crate::faults::Faults;
use crate::store::Store;
use resources::Target;
use write::{meta_name, to_v1};

/// The server: the store, a clock, the fault rules and what the Eviction API did.
#[derive(Clone)]
pub struct ApiServer {
    pub store: Store,
    clock: Arc<dyn Fn() -> SystemTime + Send + Sync>,
    faults: Faults,
    evictions: Arc<Mutex<EvictionStats>>,
    audit: Audit,
}

impl std::fmt::Debug for ApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiServer").finish_non_exhaustive()
    }
}

impl ApiServer {
    pub fn new(store: Store, clock: Arc<dyn Fn() -> SystemTime + Send + Sync>) -> Self {
        Self {
            store,
            clock,
            faults: Faults::default(),
            evictions: Arc::default(),
            audit: Audit::default(),
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

    /// What the Eviction API did so far, and pods deleted around it past their
    /// PodDisruptionBudget (shared with every clone of this server).
    pub fn evictions(&self) -> EvictionStats {
        self.evictions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The fault rules (shared with every clone of this server).
    /// What each client (by bearer token) asked of the server, as RBAC verbs and resources.
    pub fn audit(&self) -> Audit {
        self.audit.clone()
    }

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
}

#[cfg(test)]
mod tests {
    use super::resources::parse_path;
    use super::selectors::{field_matches, label_matches};
    use super::*;
    use serde_json::json;

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
