//! Helpers for the OpenAPI schemas of the generated CRDs.

use serde_json::{Value, json};

/// One `x-kubernetes-validations` entry: a CEL `rule` and the `message` the API server returns
/// when it is false.
pub(crate) fn cel(rule: &str, message: &str) -> Value {
    json!({ "rule": rule, "message": message })
}

/// A string schema with a regular-expression `pattern`.
pub(crate) fn string_with_pattern(pattern: &str) -> schemars::Schema {
    schemars::json_schema!({ "type": "string", "pattern": pattern })
}
