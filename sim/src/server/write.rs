//! The write verbs: update (and the `status` subresource), create and server-side apply;
//! defaults, validation of Karpenter objects and their v1beta1 conversion on write.

use std::time::SystemTime;

use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::ApiServer;
use super::resources::{ApiResource, Target};
use super::routing::{bad_request, error};
use super::selectors::query_param;
use crate::store::{Resource, StoreError};

impl ApiServer {
    /// Writes `obj` over the object (`status` subresource: only its status changes; main
    /// resource: everything but its status).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn write(
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

    pub(super) fn create(
        &self,
        t: &Target,
        key: &Resource,
        obj: Value,
        now: SystemTime,
    ) -> Response {
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
    pub(super) fn apply(
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

    /// What is wrong with a Karpenter object, as (field, message) pairs (berth-api's rules).
    pub(super) fn causes(t: &Target, obj: &Value) -> Result<(), Vec<(String, String)>> {
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

    pub(super) fn defaults(&self, t: &Target, obj: &mut Value) {
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
}

/// Karpenter's resources are CRDs (merge and JSON patch only); the rest are built in.
pub(super) fn custom_resource(api: &ApiResource) -> bool {
    matches!(api.group, "karpenter.sh" | "karpenter.k8s.aws")
}

/// A karpenter v1beta1 object converted to v1 (berth-api's conversion), or a 422 naming the
/// field that cannot be converted.
pub(super) fn to_v1(obj: Value) -> Result<Value, Box<Response>> {
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

pub(super) fn k8s_time(t: SystemTime) -> String {
    let ts: k8s_openapi::jiff::Timestamp = t
        .try_into()
        .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
    ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

pub(super) fn meta_name(obj: &Value) -> Option<&str> {
    obj["metadata"]["name"].as_str()
}
