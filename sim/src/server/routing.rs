//! Routing a request: injected faults, content types, discovery, then the verb on the
//! parsed path (list, get, create, update, patch, delete and the pod subresources).

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::ApiServer;
use super::resources::parse_path;
use super::selectors::{query_param, selected};
use super::write::{custom_resource, meta_name, to_v1};
use crate::faults::Effect;
use crate::store::{StoreError, status};

impl ApiServer {
    pub(super) async fn handle(
        &self,
        method: Method,
        uri: Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> Response {
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
        let applies = method == Method::PATCH
            && headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|ct| ct.starts_with("application/apply-patch"));
        let creates = applies
            && t.name
                .as_deref()
                .is_some_and(|name| self.store.get(&key, &ns, name).is_err());
        self.audit.record(&method, &uri, &headers, &t, creates);
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
            (&Method::DELETE, Some(name), None) => {
                if t.api.plural == "pods" {
                    self.note_pod_deletion(&ns, name);
                }
                match self.store.delete(&key, &ns, name, now) {
                    Ok(o) => axum::Json(o).into_response(),
                    Err(e) => error(&e),
                }
            }
            _ => (
                StatusCode::METHOD_NOT_ALLOWED,
                axum::Json(json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                    "status": "Failure", "message": format!("{method} {path} is not supported"),
                    "reason": "MethodNotAllowed", "code": 405})),
            )
                .into_response(),
        }
    }
}

pub(super) fn error(e: &StoreError) -> Response {
    (
        StatusCode::from_u16(e.code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        axum::Json(status(e)),
    )
        .into_response()
}

pub(super) fn bad_request(message: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": "BadRequest", "code": 400}),
        ),
    )
        .into_response()
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

/// Whether the patched object carries no resourceVersion of its own (then the stored one
/// applies, as the API server does for patches).
fn patch_rv(patched: &Value, current: &Value) -> bool {
    patched["metadata"].get("resourceVersion").is_none()
        || patched["metadata"]["resourceVersion"] == current["metadata"]["resourceVersion"]
}
