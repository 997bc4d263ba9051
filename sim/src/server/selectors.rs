//! Query parameters, and label and field selectors (list and watch filtering, and the
//! `LabelSelector` objects of PodDisruptionBudgets).

use axum::http::Uri;
use serde_json::Value;

pub(super) fn query_param(uri: &Uri, key: &str) -> Option<String> {
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
pub(super) fn label_matches(selector: &str, labels: &serde_json::Map<String, Value>) -> bool {
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
pub(super) fn field_matches(selector: &str, obj: &Value) -> bool {
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

pub(super) fn selected(uri: &Uri, obj: &Value) -> bool {
    let labels = obj["metadata"]["labels"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    query_param(uri, "labelSelector").is_none_or(|s| label_matches(&s, &labels))
        && query_param(uri, "fieldSelector").is_none_or(|s| field_matches(&s, obj))
}

/// A `LabelSelector` object (`matchLabels`, `matchExpressions`) against labels; an empty or
/// missing selector matches everything (policy/v1).
pub(crate) fn selector_matches_json(
    selector: &Value,
    labels: &serde_json::Map<String, Value>,
) -> bool {
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
