//! Server-side printing: what `kubectl get` shows. A request that accepts
//! `application/json;as=Table;g=meta.k8s.io;v=v1` gets a `meta.k8s.io/v1` `Table` with the
//! columns `kubectl` users expect for pods, nodes, workloads and Karpenter's objects (their
//! CRDs' printer columns); other kinds get Name and Age.

use std::time::SystemTime;

use serde_json::{Value, json};

/// Whether the request asked for a Table.
pub fn wanted(accept: &str) -> bool {
    accept.contains("as=Table")
}

/// `kubectl`'s age spelling: `45s`, `3m12s`, `5h`, `2d3h`.
pub fn age(created: &Value, now: SystemTime) -> String {
    let Some(at) = created
        .as_str()
        .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
    else {
        return "<unknown>".to_owned();
    };
    let at = SystemTime::from(at);
    let s = now.duration_since(at).unwrap_or_default().as_secs();
    match s {
        0..120 => format!("{s}s"),
        120..600 => format!("{}m{}s", s / 60, s % 60),
        600..10_800 => format!("{}m", s / 60),
        10_800..172_800 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

fn condition<'a>(obj: &'a Value, type_: &str) -> Option<&'a Value> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn label(obj: &Value, key: &str) -> String {
    text(&obj["metadata"]["labels"][key])
}

/// Column (name, type, priority: 0 always shown, 1 with `-o wide`) and the cells of a row.
type Columns = &'static [(&'static str, &'static str, u8)];

fn columns(plural: &str) -> Columns {
    match plural {
        "pods" => &[
            ("Name", "string", 0),
            ("Ready", "string", 0),
            ("Status", "string", 0),
            ("Restarts", "string", 0),
            ("Age", "string", 0),
            ("Node", "string", 1),
        ],
        "nodes" => &[
            ("Name", "string", 0),
            ("Status", "string", 0),
            ("Roles", "string", 0),
            ("Age", "string", 0),
            ("Version", "string", 0),
            ("Instance-Type", "string", 1),
            ("Zone", "string", 1),
        ],
        "deployments" | "replicasets" | "statefulsets" => &[
            ("Name", "string", 0),
            ("Ready", "string", 0),
            ("Age", "string", 0),
        ],
        "jobs" => &[
            ("Name", "string", 0),
            ("Status", "string", 0),
            ("Completions", "string", 0),
            ("Age", "string", 0),
        ],
        "nodepools" => &[
            ("Name", "string", 0),
            ("NodeClass", "string", 0),
            ("Nodes", "string", 0),
            ("Ready", "string", 0),
            ("Age", "string", 0),
            ("Weight", "integer", 1),
        ],
        "nodeclaims" => &[
            ("Name", "string", 0),
            ("Type", "string", 0),
            ("Capacity", "string", 0),
            ("Zone", "string", 0),
            ("Node", "string", 0),
            ("Ready", "string", 0),
            ("Age", "string", 0),
            ("ID", "string", 1),
            ("NodePool", "string", 1),
        ],
        "ec2nodeclasses" => &[
            ("Name", "string", 0),
            ("Ready", "string", 0),
            ("Age", "string", 0),
        ],
        _ => &[("Name", "string", 0), ("Age", "string", 0)],
    }
}

fn cells(plural: &str, o: &Value, now: SystemTime) -> Vec<Value> {
    let name = text(&o["metadata"]["name"]);
    let age = age(&o["metadata"]["creationTimestamp"], now);
    let ready = |c: &str| text(&condition(o, c).map_or(Value::Null, |c| c["status"].clone()));
    let cells: Vec<String> = match plural {
        "pods" => {
            let containers = o["spec"]["containers"].as_array().map_or(0, Vec::len);
            let phase = text(&o["status"]["phase"]);
            let running = phase == "Running";
            let status = if o["metadata"].get("deletionTimestamp").is_some() {
                "Terminating".to_owned()
            } else if phase == "Succeeded" {
                "Completed".to_owned()
            } else if phase.is_empty() {
                "Pending".to_owned()
            } else {
                phase
            };
            vec![
                name,
                format!("{}/{containers}", if running { containers } else { 0 }),
                status,
                "0".to_owned(),
                age,
                text(&o["spec"]["nodeName"]),
            ]
        }
        "nodes" => {
            let mut status = if ready("Ready") == "True" {
                "Ready".to_owned()
            } else {
                "NotReady".to_owned()
            };
            if o["spec"]["unschedulable"] == true {
                status.push_str(",SchedulingDisabled");
            }
            vec![
                name,
                status,
                "<none>".to_owned(),
                age,
                text(&o["status"]["nodeInfo"]["kubeletVersion"]),
                label(o, "node.kubernetes.io/instance-type"),
                label(o, "topology.kubernetes.io/zone"),
            ]
        }
        "deployments" | "replicasets" | "statefulsets" => vec![
            name,
            format!(
                "{}/{}",
                o["status"]["readyReplicas"].as_i64().unwrap_or(0),
                o["spec"]["replicas"].as_i64().unwrap_or(1)
            ),
            age,
        ],
        "jobs" => vec![
            name,
            if condition(o, "Complete").is_some() {
                "Complete".to_owned()
            } else {
                "Running".to_owned()
            },
            format!(
                "{}/{}",
                o["status"]["succeeded"].as_i64().unwrap_or(0),
                o["spec"]["completions"].as_i64().unwrap_or(1)
            ),
            age,
        ],
        "nodepools" => vec![
            name,
            text(&o["spec"]["template"]["spec"]["nodeClassRef"]["name"]),
            text(&o["status"]["resources"]["nodes"]),
            ready("Ready"),
            age,
            text(&o["spec"]["weight"]),
        ],
        "nodeclaims" => vec![
            name,
            label(o, "node.kubernetes.io/instance-type"),
            label(o, "karpenter.sh/capacity-type"),
            label(o, "topology.kubernetes.io/zone"),
            text(&o["status"]["nodeName"]),
            ready("Ready"),
            age,
            text(&o["status"]["providerID"]),
            label(o, "karpenter.sh/nodepool"),
        ],
        "ec2nodeclasses" => vec![name, ready("Ready"), age],
        _ => vec![name, age],
    };
    cells.into_iter().map(Value::String).collect()
}

/// A `Table` of `items`.
pub fn table(plural: &str, items: &[Value], resource_version: &str, now: SystemTime) -> Value {
    let definitions: Vec<Value> = columns(plural)
        .iter()
        .map(|(name, type_, priority)| {
            json!({"name": name, "type": type_, "format": if *name == "Name" { "name" } else { "" },
                   "description": "", "priority": priority})
        })
        .collect();
    let rows: Vec<Value> = items
        .iter()
        .map(|o| json!({"cells": cells(plural, o, now), "object": o}))
        .collect();
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1",
           "metadata": {"resourceVersion": resource_version},
           "columnDefinitions": definitions, "rows": rows})
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn ages_read_like_kubectls() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let created = json!("2023-11-14T22:13:20Z");
        assert_eq!(age(&created, at + Duration::from_secs(45)), "45s");
        assert_eq!(age(&created, at + Duration::from_secs(192)), "3m12s");
        assert_eq!(age(&created, at + Duration::from_secs(3 * 86_400)), "3d");
    }

    #[test]
    fn a_pending_pod_reads_0_of_n_pending() {
        let pod = json!({"metadata": {"name": "a", "creationTimestamp": "2023-11-14T22:13:20Z"},
            "spec": {"containers": [{"name": "c"}]}, "status": {"phase": "Pending"}});
        let t = table(
            "pods",
            &[pod],
            "7",
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_010),
        );
        assert_eq!(
            t["rows"][0]["cells"],
            json!(["a", "0/1", "Pending", "0", "10s", ""])
        );
    }
}
