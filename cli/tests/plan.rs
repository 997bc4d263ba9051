//! `berth plan`'s disruption side end to end: the binary on Nodes and running pods, what it
//! would disrupt (`disruptions`), what it keeps and why (`disruptionBlocked`), and `--now`.

use std::collections::BTreeSet;
mod common;

use common::{berth, text};

use serde_json::Value;

const EXAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../examples/plan/disruption.yaml"
);

/// `berth plan -f - -o json [extra...]` on `yaml`: the document.
fn plan_json(yaml: &str, extra: &[&str]) -> Value {
    let out = berth(
        &[&["plan", "-f", "-", "-o", "json"], extra].concat(),
        Some(yaml),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn keys(v: &Value) -> BTreeSet<&str> {
    v.as_object().unwrap().keys().map(String::as_str).collect()
}

/// A NodePool `general` (m5, on-demand) and its EC2NodeClass, with this disruption block.
fn pool(disruption: &str) -> String {
    format!(
        r#"apiVersion: karpenter.k8s.aws/v1
kind: EC2NodeClass
metadata: {{name: default}}
spec:
  role: KarpenterNodeRole-test
  amiSelectorTerms: [{{alias: al2023@latest}}]
  subnetSelectorTerms: [{{tags: {{karpenter.sh/discovery: test}}}}]
  securityGroupSelectorTerms: [{{tags: {{karpenter.sh/discovery: test}}}}]
---
apiVersion: karpenter.sh/v1
kind: NodePool
metadata: {{name: general}}
spec:
  template:
    spec:
      nodeClassRef: {{group: karpenter.k8s.aws, kind: EC2NodeClass, name: default}}
      expireAfter: 720h
      requirements:
        - {{key: karpenter.k8s.aws/instance-family, operator: In, values: [m5]}}
        - {{key: karpenter.sh/capacity-type, operator: In, values: [on-demand]}}
  disruption:
{disruption}
"#
    )
}

/// An m5.large Node of pool `general` created at `created`.
fn node(name: &str, created: &str) -> String {
    format!(
        r#"---
apiVersion: v1
kind: Node
metadata:
  name: {name}
  creationTimestamp: "{created}"
  labels:
    karpenter.sh/nodepool: general
    karpenter.sh/capacity-type: on-demand
    node.kubernetes.io/instance-type: m5.large
    topology.kubernetes.io/zone: us-east-1a
status:
  allocatable: {{cpu: 1930m, memory: 7Gi, pods: "29"}}
"#
    )
}

/// A running pod on `node`, started at `started`, with these annotations.
fn pod(name: &str, node: &str, started: &str, annotations: &str) -> String {
    format!(
        r#"---
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: default, annotations: {{{annotations}}}}}
spec:
  nodeName: {node}
  containers: [{{name: c, image: busybox, resources: {{requests: {{cpu: 500m, memory: 1Gi}}}}}}]
status: {{phase: Running, startTime: "{started}"}}
"#
    )
}

const WHEN_UNDERUTILIZED: &str =
    "    consolidationPolicy: WhenEmptyOrUnderutilized\n    consolidateAfter: 30s";

#[test]
fn an_empty_node_is_removed_once_consolidate_after_has_passed() {
    let yaml = pool(WHEN_UNDERUTILIZED) + &node("empty-1", "2025-01-01T00:00:00Z");

    let plan = plan_json(&yaml, &["--now", "2025-01-01T01:00:00Z"]);
    let disruptions = plan["disruptions"].as_array().unwrap();
    assert_eq!(disruptions.len(), 1, "{plan:#}");
    let d = &disruptions[0];
    assert!(
        keys(d).is_superset(&BTreeSet::from([
            "method",
            "nodes",
            "replacements",
            "savingsPerHour"
        ])),
        "{d:#}"
    );
    assert_eq!(d["method"], "Empty");
    assert_eq!(d["nodes"], serde_json::json!(["empty-1"]));
    assert_eq!(d["replacements"], serde_json::json!([]));
    // Its whole price is saved: m5.large on demand.
    let saved = d["savingsPerHour"].as_f64().unwrap();
    assert!((saved - 0.096).abs() < 0.01, "{saved}");
    assert_eq!(plan["disruptionBlocked"], serde_json::json!([]));

    // Ten seconds after its creation, consolidateAfter (30s) holds it, and says so.
    let plan = plan_json(&yaml, &["--now", "2025-01-01T00:00:10Z"]);
    assert_eq!(plan["disruptions"], serde_json::json!([]), "{plan:#}");
    let blocked = plan["disruptionBlocked"].as_array().unwrap();
    assert_eq!(blocked.len(), 1);
    assert_eq!(keys(&blocked[0]), BTreeSet::from(["node", "reason"]));
    assert_eq!(blocked[0]["node"], "empty-1");
    assert_eq!(
        blocked[0]["reason"],
        "consolidateAfter has 20s to run since the last pod event"
    );
}

#[test]
fn two_underutilized_nodes_are_replaced_by_one_cheaper_node() {
    let out = berth(
        &[
            "plan",
            "-f",
            EXAMPLE,
            "--now",
            "2025-06-02T09:00:00Z",
            "-o",
            "json",
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    let disruptions = plan["disruptions"].as_array().unwrap();
    assert_eq!(disruptions.len(), 1, "{plan:#}");
    let d = &disruptions[0];
    assert_eq!(d["method"], "Underutilized", "{d:#}");
    let nodes: BTreeSet<&str> = d["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    assert_eq!(nodes, BTreeSet::from(["web-a", "web-b"]));
    let replacements = d["replacements"].as_array().unwrap();
    assert_eq!(replacements.len(), 1, "{d:#}");
    let r = &replacements[0];
    assert_eq!(
        keys(r),
        BTreeSet::from([
            "nodePool",
            "instanceType",
            "zone",
            "capacityType",
            "pricePerHour"
        ])
    );
    assert_eq!(r["nodePool"], "general");
    assert_eq!(r["instanceType"], "m5.large");
    assert_eq!(r["capacityType"], "on-demand");
    assert!(r["zone"].as_str().unwrap().starts_with("us-east-1"), "{r}");
    // Two m5.xlarge out, one m5.large in: the difference is saved.
    let price = r["pricePerHour"].as_f64().unwrap();
    let saved = d["savingsPerHour"].as_f64().unwrap();
    assert!(saved > 0.0, "{saved}");
    assert!((saved - 3.0 * price).abs() < 0.01, "{saved} vs {price}");
    // The build node stays for its build.
    assert_eq!(
        plan["disruptionBlocked"],
        serde_json::json!([{
            "node": "ci-1",
            "reason": "pod default/build-1 has karpenter.sh/do-not-disrupt: \"true\""
        }])
    );

    // The table and YAML say the same.
    let table = berth(
        &["plan", "-f", EXAMPLE, "--now", "2025-06-02T09:00:00Z"],
        None,
    );
    let table = text(&table.stdout);
    // No pods to place: nothing launched, at a price of $0 (not -0).
    assert!(
        table.contains("0 of 0 pods scheduled; 0 new node(s); $0.0000/hour"),
        "{table}"
    );
    assert!(
        table.contains("disruption Underutilized: web-a, web-b -> general m5.large (")
            || table.contains("disruption Underutilized: web-b, web-a -> general m5.large ("),
        "{table}"
    );
    assert!(
        table.contains(
            "disruption blocked ci-1: pod default/build-1 has karpenter.sh/do-not-disrupt: \"true\""
        ),
        "{table}"
    );
    let yaml = berth(
        &[
            "plan",
            "-f",
            EXAMPLE,
            "--now",
            "2025-06-02T09:00:00Z",
            "-o",
            "yaml",
        ],
        None,
    );
    let yaml = text(&yaml.stdout);
    assert!(
        yaml.contains("disruptions:") && yaml.contains("method: Underutilized"),
        "{yaml}"
    );
    assert!(
        yaml.contains("disruptionBlocked:") && yaml.contains("savingsPerHour:"),
        "{yaml}"
    );
}

#[test]
fn a_do_not_disrupt_pod_keeps_its_node_and_the_reason_is_reported() {
    let yaml = pool(WHEN_UNDERUTILIZED)
        + &node("build-node", "2025-01-01T00:00:00Z")
        + &pod(
            "build",
            "build-node",
            "2025-01-01T00:01:00Z",
            "karpenter.sh/do-not-disrupt: \"true\"",
        );
    let plan = plan_json(&yaml, &["--now", "2025-01-02T00:00:00Z"]);
    assert_eq!(plan["disruptions"], serde_json::json!([]), "{plan:#}");
    assert_eq!(
        plan["disruptionBlocked"],
        serde_json::json!([{
            "node": "build-node",
            "reason": "pod default/build has karpenter.sh/do-not-disrupt: \"true\""
        }])
    );

    // Without the annotation it is the price that holds it: m5.large is m5's smallest.
    let yaml = pool(WHEN_UNDERUTILIZED)
        + &node("build-node", "2025-01-01T00:00:00Z")
        + &pod("build", "build-node", "2025-01-01T00:01:00Z", "");
    let plan = plan_json(&yaml, &["--now", "2025-01-02T00:00:00Z"]);
    assert_eq!(plan["disruptions"], serde_json::json!([]), "{plan:#}");
    assert_eq!(
        plan["disruptionBlocked"],
        serde_json::json!([{"node": "build-node", "reason": "no replacement is cheaper"}])
    );
}

#[test]
fn a_node_expires_at_now() {
    // Created in 2099: by the system clock it is young; at --now, 45 days later, its
    // expireAfter (720h) has passed.
    let yaml = pool(WHEN_UNDERUTILIZED)
        + &node("old-1", "2099-01-01T00:00:00Z")
        + &pod("app", "old-1", "2099-01-01T00:01:00Z", "");

    let plan = plan_json(&yaml, &[]);
    assert!(
        plan["disruptions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["method"] != "Expired"),
        "{plan:#}"
    );
    let plan = plan_json(&yaml, &["--now", "2099-01-20T00:00:00Z"]);
    assert!(
        plan["disruptions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["method"] != "Expired"),
        "{plan:#}"
    );

    let plan = plan_json(&yaml, &["--now", "2099-02-15T00:00:00Z"]);
    let d = &plan["disruptions"][0];
    assert_eq!(d["method"], "Expired", "{plan:#}");
    assert_eq!(d["nodes"], serde_json::json!(["old-1"]));
    // Its pod needs a node: the replacement.
    let replacements = d["replacements"].as_array().unwrap();
    assert_eq!(replacements.len(), 1, "{d:#}");
    assert_eq!(replacements[0]["nodePool"], "general");
}

#[test]
fn a_bad_now_is_refused_naming_the_flag() {
    let yaml = pool(WHEN_UNDERUTILIZED) + &node("n", "2025-01-01T00:00:00Z");
    for bad in ["yesterday", "2025-01-01", "2025-13-01T00:00:00Z"] {
        let out = berth(&["plan", "-f", "-", "--now", bad], Some(&yaml));
        assert_eq!(out.status.code(), Some(1), "{bad}");
        let err = text(&out.stderr);
        assert!(err.contains("--now") && err.contains(bad), "{bad}: {err}");
        assert_eq!(text(&out.stdout), "");
    }
}
