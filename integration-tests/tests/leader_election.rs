//! Two replicas of each service with `--leader-elect` (Leases in the simulated API server):
//! the leader of each is killed in turn (SIGKILL) under a burst of pending pods, and the
//! standby takes over within the lease's duration. Clients are given both replicas'
//! addresses (`--actuator-url a,b`, `--scheduler-url a,b`); only the leader listens. Every pod
//! runs, every NodeClaim holds pods (no duplicate launch) and has exactly one instance.
//!
//! Against moto: the sim cloud's instances live in the actuator's memory and would die with
//! the killed leader.

mod common;

use std::time::{Duration, Instant};

use berth_api::v1::NodeClaim;
use common::ec2::{self, instances_of, live_instances};
use common::{Cluster, Service, all_run, assert_every_claim_has_pods, eventually, plain_pods};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;

/// `N` distinct loopback addresses nothing listens on now (a standby binds its own once it
/// leads).
fn free_addrs<const N: usize>() -> [String; N] {
    let held: Vec<std::net::TcpListener> = (0..N)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    std::array::from_fn(|i| held[i].local_addr().unwrap().to_string())
}

fn elect(identity: &str) -> [&str; 3] {
    ["--leader-elect", "--leader-election-identity", identity]
}

async fn holder(cluster: &Cluster, lease: &str) -> Option<String> {
    Api::<Lease>::namespaced(cluster.client.clone(), "default")
        .get_opt(lease)
        .await
        .unwrap()
        .and_then(|l| l.spec?.holder_identity)
}

/// Kills `leader` and returns how long until `successor` holds `lease`.
async fn take_over(cluster: &Cluster, leader: Service, lease: &str, successor: &str) -> Duration {
    let killed = Instant::now();
    leader.kill();
    eventually(30, &format!("{successor} holds {lease}"), || async {
        holder(cluster, lease).await.as_deref() == Some(successor)
    })
    .await;
    killed.elapsed()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_standby_takes_over_each_service_and_nothing_is_launched_twice() {
    let moto = ec2::moto().await;
    let cluster = Cluster::start("leader-election", ec2::MANIFESTS).await;
    let kc = cluster.kubeconfig_for("berth-scheduler");
    let [a1, a2, s1, s2] = free_addrs();
    eprintln!("actuators {a1} {a2}, schedulers {s1} {s2}");

    let actuator =
        |addr: &str, id: &str| ec2::actuator(&cluster, &moto.moto.endpoint, addr, &elect(id));
    let actuator_1 = actuator(&a1, "actuator-1");
    assert!(actuator_1.grpc.is_some(), "the first replica leads");
    let _actuator_2 = actuator(&a2, "actuator-2");
    let actuators = format!("http://{a1},http://{a2}");
    let scheduler = |addr: &str, id: &str| {
        let mut extra = vec!["--kubeconfig", &kc];
        extra.extend(elect(id));
        common::scheduler_with(addr, &actuators, &extra)
    };
    let scheduler_1 = scheduler(&s1, "scheduler-1");
    let _scheduler_2 = scheduler(&s2, "scheduler-2");
    let schedulers = format!("http://{s1},http://{s2}");
    let watcher = |id: &str| common::watcher_with(&cluster, &schedulers, &elect(id));
    let watcher_1 = watcher("watcher-1");
    let _watcher_2 = watcher("watcher-2");
    ec2::class_ready(&cluster).await;
    for lease in ["berth-actuator", "berth-scheduler", "berth-watcher"] {
        assert!(
            holder(&cluster, lease).await.unwrap().ends_with("-1"),
            "{lease}"
        );
    }

    cluster.create(&plain_pods("a", 2, "1"));
    all_run(&cluster, 2, 90).await;

    let mut takeovers = Vec::new();
    // Each leader dies with pods pending.
    cluster.create(&plain_pods("b", 2, "1"));
    takeovers.push((
        "actuator",
        take_over(&cluster, actuator_1, "berth-actuator", "actuator-2").await,
    ));
    all_run(&cluster, 4, 120).await;

    cluster.create(&plain_pods("c", 2, "1"));
    takeovers.push((
        "scheduler",
        take_over(&cluster, scheduler_1, "berth-scheduler", "scheduler-2").await,
    ));
    all_run(&cluster, 6, 120).await;

    cluster.create(&plain_pods("d", 2, "1"));
    takeovers.push((
        "watcher",
        take_over(&cluster, watcher_1, "berth-watcher", "watcher-2").await,
    ));
    all_run(&cluster, 8, 120).await;

    eprintln!("takeovers: {takeovers:?}");
    for (service, took) in &takeovers {
        assert!(
            *took <= Duration::from_secs(15),
            "the {service} standby took {took:?} to lead"
        );
    }
    assert_every_claim_has_pods(&cluster).await;
    let claims = cluster.list::<NodeClaim>().await;
    for c in &claims {
        let name = c.metadata.name.as_deref().unwrap();
        assert_eq!(instances_of(&moto.ec2, name).await.len(), 1, "{name}");
    }
    let running = live_instances(&moto.ec2).await.len();
    assert_eq!(running, claims.len(), "no instance without a NodeClaim");
}
