//! Benchmark 3 of `BENCHMARKS.md`, end to end in the simulated cluster: N pods created at
//! once → all bound, with zero simulated boot delay, so the figure is Berth's own control
//! loop (watcher → scheduler → actuator → node registered → kube-scheduler binds). The three
//! real binaries run as child processes, as in the integration tests; the simulated cluster
//! runs in this process.
//!
//! ```sh
//! cargo build --release --workspace --bins --examples
//! ./target/release/examples/e2e 10000        # pods (default 1000)
//! ```
//!
//! Prints: pods, nodes, time to the first NodeClaim and until every pod is bound, the
//! scheduler's solve time and batches (from its /metrics: the batching windows are the rest),
//! and each process's peak RSS. Not measured yet: the watcher → scheduler stream's
//! throughput on its own.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use berth_sim::controllers::ClusterOptions;
use berth_sim::store::Resource;
use common::{Cluster, Service};

/// One instance type, so the node count is predictable: m5.2xlarge (8 vCPU, 32 GiB) holds
/// about 20 pods of 350m.
const POOL: &str = "apiVersion: karpenter.sh/v1
kind: NodePool
metadata: {name: bench}
spec:
  template:
    spec:
      nodeClassRef: {group: karpenter.k8s.aws, kind: EC2NodeClass, name: default}
      requirements:
        - {key: node.kubernetes.io/instance-type, operator: In, values: [m5.2xlarge]}
        - {key: karpenter.sh/capacity-type, operator: In, values: [on-demand]}
  limits: {cpu: '10000000'}
";

/// Peak resident memory of a process, in MB.
fn peak_rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The sum of a metric's samples (all label sets) in a Prometheus text page.
fn metric(page: &str, name: &str) -> f64 {
    page.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn scrape(service: &Service) -> String {
    service.metrics()
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("pods: a number"))
        .unwrap_or(1000);
    let cluster = Cluster::start_with(
        "e2e-bench",
        &[common::SEED[0], POOL],
        ClusterOptions {
            boot_delay: Duration::ZERO,
            pod_start_delay: Duration::ZERO,
            ..ClusterOptions::default()
        },
    )
    .await;
    let kc = cluster.kubeconfig.display().to_string();
    let actuator = common::actuator_booting_in(&cluster, "0s");
    let scheduler = Service::spawn(
        "berth-scheduler",
        &[
            "--grpc-addr",
            "127.0.0.1:0",
            "--admin-addr",
            "127.0.0.1:0",
            "--actuator-url",
            &actuator.url(),
        ],
    );
    let watcher = Service::spawn(
        "berth-watcher",
        &[
            "--scheduler-url",
            &scheduler.url(),
            "--admin-addr",
            "127.0.0.1:0",
            "--kubeconfig",
            &kc,
        ],
    );
    // Let the watcher's snapshot reach the scheduler.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let started = Instant::now();
    for i in 0..n {
        cluster
            .server
            .create_object(serde_json::json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": format!("bench-{i}"), "namespace": "default"},
                "spec": {"containers": [{"name": "a", "image": "x",
                    "resources": {"requests": {"cpu": "350m", "memory": "1Gi"}}}]},
            }))
            .expect("a pod");
    }
    let created = started.elapsed();
    let pods = Resource::new("", "pods", true);
    let claims = Resource::new("karpenter.sh", "nodeclaims", false);
    let mut first_claim = None;
    let bound = loop {
        if first_claim.is_none() && !cluster.store.list(&claims, None).0.is_empty() {
            first_claim = Some(started.elapsed());
        }
        let (list, _) = cluster.store.list(&pods, None);
        let bound = list
            .iter()
            .filter(|p| p.pointer("/spec/nodeName").is_some_and(|v| v.is_string()))
            .count();
        if bound == n {
            break started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(1800),
            "{bound} of {n} pods bound after 30 minutes"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (list, _) = cluster.store.list(&pods, None);
    let nodes: BTreeSet<&str> = list
        .iter()
        .filter_map(|p| p.pointer("/spec/nodeName")?.as_str())
        .collect();
    let page = scrape(&scheduler);
    let solve = metric(&page, "berth_scheduler_scheduling_duration_seconds_sum");
    let batches = metric(&page, "berth_scheduler_scheduling_duration_seconds_count");
    println!(
        "pods {n}  nodes {}  created in {:.2} s  first NodeClaim {:.2} s  all bound {:.2} s  ({:.0} pods/s)",
        nodes.len(),
        created.as_secs_f64(),
        first_claim.unwrap_or_default().as_secs_f64(),
        bound.as_secs_f64(),
        n as f64 / bound.as_secs_f64()
    );
    println!("scheduler: {batches:.0} solves, {solve:.2} s solving");
    println!(
        "peak RSS: watcher {:.0} MB, scheduler {:.0} MB, actuator {:.0} MB, simulated cluster {:.0} MB",
        peak_rss_mb(watcher.child.id()),
        peak_rss_mb(scheduler.child.id()),
        peak_rss_mb(actuator.child.id()),
        peak_rss_mb(std::process::id()),
    );
}
