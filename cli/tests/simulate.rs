//! `berth simulate` end to end: the binary on the example manifests (the simulated cluster and
//! Berth's three services in one process), its summary and HTML report; and bad input refused
//! before anything starts.

use std::path::PathBuf;
use std::process::Command;

const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/simulate");

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("berth-simulate-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The number after `label` in `text` (`ran 12` → 12).
fn figure(text: &str, label: &str) -> usize {
    let at = text
        .find(label)
        .unwrap_or_else(|| panic!("{label:?} in {text}"));
    text[at + label.len()..]
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a number after {label:?} in {text}"))
}

#[test]
fn the_examples_run_and_the_report_has_its_charts() {
    let dir = scratch("examples");
    let report = dir.join("report.html");
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args([
            "simulate",
            "-f",
            EXAMPLES,
            "--duration",
            "30m",
            "--speed",
            "300",
        ])
        .arg("--report")
        .arg(&report)
        .arg("--kubeconfig-out")
        .arg(dir.join("kubeconfig"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let report_text = &stdout[stdout.find("Report (").expect("a report")..];
    // web (4 → 16 at 10m) and two ETL batches (5m, 20m) of 8 pods.
    assert!(figure(report_text, "arrivals ") >= 3, "{stdout}");
    let pods = figure(report_text, "pods ");
    assert!(pods >= 16 + 16, "{stdout}");
    assert!(figure(report_text, "ran ") >= 16 + 8, "{stdout}");
    assert!(stdout.contains("nodes launched:"), "{stdout}");
    assert!(stdout.contains("Berth's cost: $"), "{stdout}");
    assert!(
        !stdout.contains("Berth's cost: $0.00"),
        "nodes cost money: {stdout}"
    );
    // The static group (the fleet at its peak, all window) costs at least what Berth paid.
    let ratio: f64 = report_text
        .split("Berth / static = ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("a ratio in {report_text}"));
    assert!(ratio > 0.0 && ratio <= 1.0, "{ratio}");
    let html = std::fs::read_to_string(&report).unwrap();
    assert_eq!(html.matches("<svg").count(), 4, "four charts");
    assert!(html.contains("Berth simulation"));
    assert!(html.contains("spot") || html.contains("on-demand"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_bad_schedule_is_refused_before_anything_starts() {
    let dir = scratch("bad");
    let manifests = dir.join("bad.yaml");
    let pools = std::fs::read_to_string(format!("{EXAMPLES}/pools.yaml")).unwrap();
    std::fs::write(
        &manifests,
        format!(
            "{pools}\n---\napiVersion: batch/v1\nkind: Job\nmetadata:\n  name: ci\n  namespace: default\n  annotations: {{sim.berth.dev/repeat-every: soon}}\nspec:\n  template:\n    spec:\n      containers: [{{name: a, image: x}}]\n"
        ),
    )
    .unwrap();
    let kubeconfig = dir.join("kubeconfig");
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["simulate", "-f"])
        .arg(&manifests)
        .arg("--kubeconfig-out")
        .arg(&kubeconfig)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "Job default/ci: metadata.annotations[sim.berth.dev/repeat-every]: \"soon\" is not a duration"
        ),
        "{stderr}"
    );
    assert!(!kubeconfig.exists(), "nothing started");
    assert!(out.stdout.is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

/// The actuator measures a NodeClaim's `terminationGracePeriod` on the simulated clock: an
/// expired node whose pod says do-not-disrupt is drained forcefully 10 simulated minutes after
/// its deletion began (a few wall seconds at 600×), and its pod runs on the replacement.
#[test]
fn termination_grace_period_runs_on_simulated_time() {
    let dir = scratch("grace");
    let manifests = dir.join("grace.yaml");
    std::fs::write(
        &manifests,
        "apiVersion: karpenter.k8s.aws/v1
kind: EC2NodeClass
metadata: {name: default}
spec:
  role: KarpenterNodeRole-demo
  amiSelectorTerms: [{alias: al2023@latest}]
  subnetSelectorTerms: [{tags: {karpenter.sh/discovery: demo}}]
  securityGroupSelectorTerms: [{tags: {karpenter.sh/discovery: demo}}]
---
apiVersion: karpenter.sh/v1
kind: NodePool
metadata: {name: general}
spec:
  template:
    spec:
      nodeClassRef: {group: karpenter.k8s.aws, kind: EC2NodeClass, name: default}
      expireAfter: 1h
      terminationGracePeriod: 10m
      requirements:
        - {key: karpenter.k8s.aws/instance-family, operator: In, values: [m5]}
        - {key: karpenter.sh/capacity-type, operator: In, values: [on-demand]}
  disruption: {consolidationPolicy: WhenEmpty, consolidateAfter: 0s}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: pinned, namespace: default}
spec:
  replicas: 1
  selector: {matchLabels: {app: pinned}}
  template:
    metadata:
      labels: {app: pinned}
      annotations: {karpenter.sh/do-not-disrupt: \"true\"}
    spec:
      containers:
        - {name: app, image: nginx, resources: {requests: {cpu: 500m, memory: 1Gi}}}
",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args([
            "simulate",
            "-o",
            "json",
            "--duration",
            "150m",
            "--speed",
            "600",
            "-f",
        ])
        .arg(&manifests)
        .arg("--kubeconfig-out")
        .arg(dir.join("kubeconfig"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let summary: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    // The first node expires at about 1h; its drain waits on the do-not-disrupt pod for the
    // grace period, then deletes it (a pod lost) and the node goes. (On the wall clock the
    // grace period would not end in this run: nothing would be removed.)
    let expired = summary["nodesRemovedBy"]["Expired"].as_u64().unwrap_or(0);
    assert!(
        expired >= 1,
        "the drain ended after the grace period: {summary}"
    );
    assert!(
        summary["podsLost"].as_u64() >= Some(expired),
        "each forced drain killed the pinned pod: {summary}"
    );
    assert_eq!(summary["podsNeverStarted"], 0, "{summary}");
    let _ = std::fs::remove_dir_all(&dir);
}
