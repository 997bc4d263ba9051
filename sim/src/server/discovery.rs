//! Discovery: `/version`, `/api`, `/apis`, the group versions' resource lists and OpenAPI v3.

use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::ApiServer;
use super::resources::RESOURCES;

impl ApiServer {
    pub(super) fn discovery(&self, path: &str) -> Option<Response> {
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
                            "configmaps" => &["cm"],
                            "serviceaccounts" => &["sa"],
                            "services" => &["svc"],
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
