//! Strategic merge patch and server-side apply, as far as kubectl and kube-rs use them.
//!
//! - **Strategic merge** (`application/strategic-merge-patch+json`): a JSON merge patch
//!   whose lists of the core types merge by their key (`containers` by `name`, `conditions`
//!   by `type`, `taints` by `key`, `ownerReferences` by `uid`, ...), with the `$patch:
//!   delete|replace` and `$deleteFromPrimitiveList/<field>` directives; `finalizers` merge as
//!   a set.
//! - **Server-side apply** (`application/apply-patch+yaml`): creates the object when it does
//!   not exist; otherwise merges the applied configuration (strategically for core types).
//!   Each field manager's fields are recorded in `metadata.managedFields` (`FieldsV1`, lists
//!   counted as one field); applying a different value to a field another manager applied is
//!   a 409 Conflict naming the field and manager, unless `force=true`, which takes the field
//!   over. NB: fields a manager stops applying are not removed (real apply removes them).

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

/// The merge key of a list field of the core types, by field name.
fn merge_key(field: &str) -> Option<&'static str> {
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets"
        | "resourceClaims"
        | "volumeDevices" => "name",
        "volumeMounts" => "mountPath",
        "ports" => "containerPort",
        "conditions" | "addresses" => "type",
        "taints" => "key",
        "ownerReferences" => "uid",
        "hostAliases" => "ip",
        "topologySpreadConstraints" => "topologyKey",
        _ => return None,
    })
}

/// Lists of strings merged as sets.
fn set_list(field: &str) -> bool {
    field == "finalizers"
}

fn without_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), without_directives(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(without_directives).collect()),
        other => other.clone(),
    }
}

/// Applies a strategic merge patch to `target`.
pub fn strategic_merge(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if p.get("$patch").and_then(Value::as_str) == Some("replace") {
        *target = without_directives(patch);
        return;
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let t = target.as_object_mut().expect("made an object");
    for (k, v) in p {
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(list)), Value::Array(gone)) = (t.get_mut(field), v) {
                list.retain(|x| !gone.contains(x));
            }
            continue;
        }
        if k.starts_with('$') {
            continue; // $setElementOrder, $retainKeys, $patch: ordering hints and the like
        }
        if v.is_null() {
            t.remove(k);
            continue;
        }
        match (t.get_mut(k), v) {
            (Some(Value::Array(list)), Value::Array(items)) if merge_key(k).is_some() => {
                merge_list(list, items, merge_key(k).expect("checked"));
            }
            (Some(Value::Array(list)), Value::Array(items)) if set_list(k) => {
                for i in items {
                    if !list.contains(i) {
                        list.push(i.clone());
                    }
                }
            }
            (Some(existing @ Value::Object(_)), Value::Object(_)) => strategic_merge(existing, v),
            _ => {
                t.insert(k.clone(), without_directives(v));
            }
        }
    }
}

fn merge_list(list: &mut Vec<Value>, items: &[Value], key: &str) {
    for item in items {
        let id = item.get(key).cloned();
        let at = id
            .as_ref()
            .and_then(|id| list.iter().position(|x| x.get(key) == Some(id)));
        if item.get("$patch").and_then(Value::as_str) == Some("delete") {
            if let Some(i) = at {
                list.remove(i);
            }
            continue;
        }
        match at {
            Some(i) => strategic_merge(&mut list[i], item),
            None => list.push(without_directives(item)),
        }
    }
}

/// The fields an applied configuration sets, as paths (`spec.replicas`,
/// `metadata.labels.app`); a list is one field. Identity fields are left out.
pub fn field_paths(applied: &Value) -> BTreeSet<Vec<String>> {
    fn walk(v: &Value, path: &mut Vec<String>, out: &mut BTreeSet<Vec<String>>) {
        match v {
            Value::Object(m) if !m.is_empty() => {
                for (k, child) in m {
                    path.push(k.clone());
                    walk(child, path, out);
                    path.pop();
                }
            }
            _ => {
                out.insert(path.clone());
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(applied, &mut Vec::new(), &mut out);
    out.retain(|p| {
        !matches!(
            p.iter().map(String::as_str).collect::<Vec<_>>().as_slice(),
            ["apiVersion"]
                | ["kind"]
                | ["status", ..]
                | [
                    "metadata",
                    "name"
                        | "namespace"
                        | "resourceVersion"
                        | "managedFields"
                        | "uid"
                        | "generation"
                        | "creationTimestamp"
                ]
        )
    });
    out
}

/// `FieldsV1` from paths: `{"f:spec": {"f:replicas": {}}}`.
fn fields_v1(paths: &BTreeSet<Vec<String>>) -> Value {
    let mut root = Map::new();
    for p in paths {
        let mut node = &mut root;
        for k in p {
            node = node
                .entry(format!("f:{k}"))
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .expect("fields are objects");
        }
    }
    Value::Object(root)
}

fn paths_of(fields: &Value) -> BTreeSet<Vec<String>> {
    fn walk(v: &Value, path: &mut Vec<String>, out: &mut BTreeSet<Vec<String>>) {
        let Some(m) = v.as_object() else { return };
        let keys: Vec<(&String, &Value)> = m.iter().filter(|(k, _)| k.starts_with("f:")).collect();
        if keys.is_empty() && !path.is_empty() {
            out.insert(path.clone());
        }
        for (k, child) in keys {
            path.push(k[2..].to_owned());
            walk(child, path, out);
            path.pop();
        }
    }
    let mut out = BTreeSet::new();
    walk(fields, &mut Vec::new(), &mut out);
    out
}

fn at<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.get(k))
}

/// A field another manager applied, with a different value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub manager: String,
    pub field: String,
}

/// Server-side apply of `applied` by `manager` over `current` (none: a create). `core`
/// chooses strategic merge over JSON merge. Returns the new object or the conflicts.
pub fn apply(
    current: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    core: bool,
    time: &str,
) -> Result<Value, Vec<Conflict>> {
    let mine = field_paths(applied);
    let mut merged = match current {
        None => without_directives(applied),
        Some(c) => {
            let mut m = c.clone();
            if core {
                strategic_merge(&mut m, applied);
            } else {
                json_patch::merge(&mut m, applied);
            }
            m
        }
    };
    let mut entries: Vec<Value> = current
        .and_then(|c| c["metadata"]["managedFields"].as_array().cloned())
        .unwrap_or_default();
    let mut conflicts = Vec::new();
    for e in &mut entries {
        let owner = e["manager"].as_str().unwrap_or_default().to_owned();
        if owner == manager || e["operation"] != "Apply" {
            continue;
        }
        let theirs = paths_of(&e["fieldsV1"]);
        let contested: BTreeSet<Vec<String>> = theirs
            .iter()
            .filter(|p| mine.contains(*p))
            .filter(|p| current.and_then(|c| at(c, p)) != at(applied, p))
            .cloned()
            .collect();
        if contested.is_empty() {
            continue;
        }
        if force {
            let left: BTreeSet<Vec<String>> = theirs.difference(&contested).cloned().collect();
            e["fieldsV1"] = fields_v1(&left);
        } else {
            conflicts.extend(contested.into_iter().map(|p| Conflict {
                manager: owner.clone(),
                field: format!(".{}", p.join(".")),
            }));
        }
    }
    if !conflicts.is_empty() {
        return Err(conflicts);
    }
    entries.retain(|e| !(e["manager"] == manager && e["operation"] == "Apply"));
    entries.retain(|e| e["fieldsV1"].as_object().is_none_or(|m| !m.is_empty()));
    entries.push(json!({
        "manager": manager,
        "operation": "Apply",
        "apiVersion": applied["apiVersion"],
        "time": time,
        "fieldsType": "FieldsV1",
        "fieldsV1": fields_v1(&mine),
    }));
    merged["metadata"]["managedFields"] = Value::Array(entries);
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containers_merge_by_name_and_directives_delete() {
        let mut pod = json!({"spec": {"containers": [
            {"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}]},
            "metadata": {"finalizers": ["x"], "labels": {"k": "v", "gone": "1"}}});
        strategic_merge(
            &mut pod,
            &json!({"spec": {"containers": [{"name": "b", "image": "b:2"},
                {"name": "a", "$patch": "delete"}, {"name": "c", "image": "c:1"}]},
                "metadata": {"finalizers": ["y"], "labels": {"gone": null},
                             "$deleteFromPrimitiveList/finalizers": ["x"]}}),
        );
        assert_eq!(
            pod,
            json!({"spec": {"containers": [{"name": "b", "image": "b:2"}, {"name": "c", "image": "c:1"}]},
                   "metadata": {"finalizers": ["y"], "labels": {"k": "v"}}})
        );
    }

    #[test]
    fn apply_records_managers_and_conflicts_unless_forced() {
        let first = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web"}, "spec": {"replicas": 2}});
        let created = apply(None, &first, "kubectl", false, true, "t0").unwrap();
        assert_eq!(
            created["metadata"]["managedFields"][0]["fieldsV1"],
            json!({"f:spec": {"f:replicas": {}}})
        );
        // Same value from another manager: shared, no conflict.
        let same = apply(Some(&created), &first, "helm", false, true, "t1").unwrap();
        let other = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web"}, "spec": {"replicas": 5}});
        let err = apply(Some(&same), &other, "hpa", false, true, "t2").unwrap_err();
        assert_eq!(err.len(), 2);
        assert_eq!(err[0].field, ".spec.replicas");
        let forced = apply(Some(&same), &other, "hpa", true, true, "t2").unwrap();
        assert_eq!(forced["spec"]["replicas"], 5);
        let managers: Vec<&str> = forced["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["manager"].as_str().unwrap())
            .collect();
        assert_eq!(managers, ["hpa"], "the others lost their only field");
    }
}
