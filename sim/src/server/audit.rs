//! What each client asked of the API server, in the terms RBAC authorizes: verb, API group,
//! resource (with its subresource), namespace. The client is named by its bearer token (the
//! sim authenticates nobody: the token is taken at its word), so a test can give each Berth
//! service its own kubeconfig and learn exactly which permissions each one needs.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, Method, Uri};

use super::resources::Target;
use super::selectors::query_param;

/// One authorization a request needed, as RBAC spells it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KubeCall {
    /// The bearer token of the request, or `system:anonymous` without one.
    pub user: String,
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`.
    pub verb: String,
    /// `""` for the core group.
    pub group: String,
    /// `pods`, or `pods/eviction` for a subresource.
    pub resource: String,
    /// The request's namespace; `None` for cluster-scoped objects and requests across all
    /// namespaces.
    pub namespace: Option<String>,
}

/// The calls recorded so far; clones share one record.
#[derive(Debug, Clone, Default)]
pub struct Audit(Arc<Mutex<BTreeSet<KubeCall>>>);

impl Audit {
    /// Every distinct call recorded.
    pub fn calls(&self) -> BTreeSet<KubeCall> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The calls of one user.
    pub fn calls_of(&self, user: &str) -> BTreeSet<KubeCall> {
        self.calls()
            .into_iter()
            .filter(|c| c.user == user)
            .collect()
    }

    pub(super) fn record(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        t: &Target,
        creates: bool,
    ) {
        let user = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("system:anonymous")
            .to_owned();
        let watch = query_param(uri, "watch").is_some_and(|w| w == "true" || w == "1");
        let verb = match (method, t.name.is_some()) {
            (&Method::GET, _) if watch => "watch",
            (&Method::GET, true) => "get",
            (&Method::GET, false) => "list",
            (&Method::POST, _) => "create",
            (&Method::PUT, _) => "update",
            (&Method::PATCH, _) => "patch",
            (&Method::DELETE, true) => "delete",
            (&Method::DELETE, false) => "deletecollection",
            _ => return,
        };
        let resource = match &t.subresource {
            Some(sub) => format!("{}/{sub}", t.api.plural),
            None => t.api.plural.to_owned(),
        };
        let call = |verb: &str| KubeCall {
            user: user.clone(),
            verb: verb.to_owned(),
            group: t.api.group.to_owned(),
            resource: resource.clone(),
            namespace: t.namespace.clone(),
        };
        let mut calls = self.0.lock().unwrap_or_else(|e| e.into_inner());
        calls.insert(call(verb));
        // A server-side apply that creates its object needs `create` as well, as the real
        // server authorizes it.
        if creates {
            calls.insert(call("create"));
        }
    }
}
