//! Watch fan-out benchmark: one writer creates pods as fast as the API server takes them
//! while N kube-rs watchers each follow every event over HTTP. Reports the write rate and the
//! delivered event rate (events × watchers / time until the last watcher saw the last event).
//!
//! `cargo run --release -p berth-sim --example watch_fanout -- [events] [watchers]`
//! (defaults: 10000 events, 10 watchers). Figures: docs/benchmarks.md.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use berth_sim::server::ApiServer;
use berth_sim::store::Store;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams, WatchEvent, WatchParams};

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let events: usize = args.next().map_or(10_000, |a| a.parse().expect("events"));
    let watchers: usize = args.next().map_or(10, |a| a.parse().expect("watchers"));
    let server = ApiServer::new(Store::new(events * 2), Arc::new(SystemTime::now))
        .start_local()
        .await
        .unwrap();
    let client = kube::Client::try_from(kube::Config::new(server.url().parse().unwrap())).unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let start_rv = pods
        .list_metadata(&Default::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();

    let mut tasks = Vec::new();
    for _ in 0..watchers {
        // Each watcher its own connection, as separate clients would have.
        let client =
            kube::Client::try_from(kube::Config::new(server.url().parse().unwrap())).unwrap();
        let api: Api<Pod> = Api::namespaced(client, "default");
        let rv = start_rv.clone();
        tasks.push(tokio::spawn(async move {
            let mut seen = 0;
            let mut stream = api
                .watch(&WatchParams::default().timeout(290), &rv)
                .await
                .unwrap()
                .boxed();
            while seen < events {
                match stream.next().await {
                    Some(Ok(WatchEvent::Added(_))) => seen += 1,
                    Some(Ok(_)) => {}
                    Some(Err(e)) => panic!("watch: {e}"),
                    None => panic!("the watch ended after {seen} events"),
                }
            }
            Instant::now()
        }));
    }
    let body = |i: usize| -> Pod {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("p{i}"), "labels": {"app": "bench"}},
            "spec": {"containers": [{"name": "c", "image": "busybox",
                     "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]}
        }))
        .unwrap()
    };
    let started = Instant::now();
    // Eight writers in flight, like a burst of controllers.
    futures::stream::iter(0..events)
        .map(|i| {
            let pods = pods.clone();
            let pod = body(i);
            async move { pods.create(&PostParams::default(), &pod).await.unwrap() }
        })
        .buffer_unordered(8)
        .for_each(|_| async {})
        .await;
    let written = started.elapsed();
    let mut last = started;
    for t in tasks {
        last = last.max(t.await.unwrap());
    }
    let delivered = last - started;
    println!(
        "{events} pods written in {:.2} s ({:.0} writes/s); {watchers} watchers saw all of them after {:.2} s: {:.0} events/s delivered",
        written.as_secs_f64(),
        events as f64 / written.as_secs_f64(),
        delivered.as_secs_f64(),
        (events * watchers) as f64 / delivered.as_secs_f64()
    );
    server.shutdown().await.unwrap();
}
