//! The scheduler killed (SIGKILL) mid-burst and restarted at the same address: the watcher
//! reconnects and sends a fresh snapshot, NodeClaims in flight included; every pod runs and
//! no NodeClaim is launched twice for the same pods (every node ends up with pods).

mod common;

use berth_api::v1::NodeClaim;
use common::{Cluster, eventually};
use k8s_openapi::api::core::v1::Pod;

fn web_pods(n: usize) -> String {
    (0..n)
        .map(|i| {
            format!(
                "apiVersion: v1
kind: Pod
metadata: {{name: web-{i}, namespace: default}}
spec:
  containers: [{{name: a, image: x, resources: {{requests: {{cpu: '1', memory: 1Gi}}}}}}]"
            )
        })
        .collect::<Vec<_>>()
        .join("\n---\n")
}

#[tokio::test(flavor = "multi_thread")]
async fn no_duplicate_claims_and_no_lost_pods() {
    let cluster = Cluster::start("restart", common::SEED).await;
    let actuator = common::actuator(&cluster);
    let scheduler = common::scheduler(&actuator.url());
    let url = scheduler.url();
    let addr = scheduler.grpc.clone().unwrap();
    let _watcher = common::watcher(&cluster, &url);
    cluster.create(&web_pods(8));
    eventually(30, "the first NodeClaim", || async {
        !cluster.list::<NodeClaim>().await.is_empty()
    })
    .await;
    scheduler.kill();
    // More pods while the scheduler is down.
    cluster.create(&web_pods(12).replace("web-", "late-"));
    let _scheduler = common::Service::spawn(
        "berth-scheduler",
        &[
            "--grpc-addr",
            &addr,
            "--admin-addr",
            "127.0.0.1:0",
            "--actuator-url",
            &actuator.url(),
            "--batch-idle",
            "300ms",
            "--batch-max",
            "2s",
        ],
    );
    eventually(60, "all 20 pods run", || async {
        cluster
            .list::<Pod>()
            .await
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .count()
            == 20
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let pods = cluster.list::<Pod>().await;
    let claims = cluster.list::<NodeClaim>().await;
    for c in &claims {
        let node = c
            .status
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        assert!(
            pods.iter()
                .any(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(&node)),
            "NodeClaim {:?} (node {node:?}) got no pods: launched twice?",
            c.metadata.name
        );
    }
}
