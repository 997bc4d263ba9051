//! A simulated cluster in the test process, and Berth's three real binaries as child
//! processes talking gRPC and Kubernetes HTTP on loopback.

#![allow(dead_code)]

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use berth_api::v1::NodeClaim;
use berth_sim::controllers::{ClusterOptions, Controllers};
use berth_sim::server::ApiServer;
use berth_sim::store::Store;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};

pub mod disruption;
pub mod ec2;
pub mod history;

/// A binary of the workspace, next to the test executable's directory
/// (`target/<profile>/deps/..`).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace's binaries first (scripts/test does: cargo build --workspace --bins)",
        path.display()
    );
    path
}

impl Service {
    /// Its Prometheus page: GET http://<admin>/metrics over a plain TCP connection (loopback).
    pub fn metrics(&self) -> String {
        use std::io::{Read as _, Write as _};
        let addr = self.admin.as_deref().expect("an admin address");
        let mut stream = std::net::TcpStream::connect(addr).expect("the admin port");
        write!(
            stream,
            "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        // Read until the server closes, or until it has been quiet for a second.
        stream
            .set_read_timeout(Some(Duration::from_secs(1)))
            .unwrap();
        let mut page = Vec::new();
        let _ = stream.read_to_end(&mut page);
        String::from_utf8_lossy(&page).into_owned()
    }
}

/// The value of the sample of `name` whose labels include every `label="value"` of `labels`,
/// in a Prometheus text page.
pub fn sample(page: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    page.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?;
        if !(rest.starts_with(' ') || rest.starts_with('{')) {
            return None;
        }
        let all = labels
            .iter()
            .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
        all.then(|| l.rsplit(' ').next()?.parse().ok()).flatten()
    })
}

/// The simulated cluster: API server, controllers, kubelets (boot delay 2 s).
pub struct Cluster {
    pub url: String,
    pub kubeconfig: PathBuf,
    pub server: ApiServer,
    /// The API server's objects, for reads too large to go through HTTP each time.
    pub store: Store,
    pub client: kube::Client,
    stop: tokio::sync::watch::Sender<bool>,
    dir: PathBuf,
}

impl Cluster {
    /// Boot delay 2 s, pods start 200 ms after binding.
    pub async fn start(name: &str, manifests: &[&str]) -> Self {
        Self::start_with(
            name,
            manifests,
            ClusterOptions {
                boot_delay: Duration::from_secs(2),
                pod_start_delay: Duration::from_millis(200),
                ..ClusterOptions::default()
            },
        )
        .await
    }

    pub async fn start_with(name: &str, manifests: &[&str], options: ClusterOptions) -> Self {
        let dir = std::env::temp_dir().join(format!("berth-it-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let clock: Arc<dyn Fn() -> SystemTime + Send + Sync> = Arc::new(SystemTime::now);
        let store = Store::new(100_000);
        let server = ApiServer::new(store.clone(), clock.clone());
        for (_, crd) in berth_api::crds::all() {
            server
                .create_object(serde_json::to_value(crd).unwrap())
                .unwrap();
        }
        for text in manifests {
            for doc in text.split("\n---") {
                let v: serde_json::Value = serde_norway::from_str(doc).unwrap();
                if !v.is_null() {
                    server.create_object(v).unwrap();
                }
            }
        }
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let mut rx = stopped.clone();
        let (addr, _task) = server
            .clone()
            .serve("127.0.0.1:0".parse().unwrap(), async move {
                let _ = rx.wait_for(|s| *s).await;
            })
            .await
            .unwrap();
        let url = format!("http://{addr}");
        let kubeconfig = dir.join("kubeconfig");
        std::fs::write(&kubeconfig, berth_sim::server::kubeconfig(&url)).unwrap();
        let controllers = Controllers::new(store.clone(), clock, options);
        tokio::spawn(controllers.run(stopped));
        let kc = kube::config::Kubeconfig::read_from(&kubeconfig).unwrap();
        let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .unwrap();
        let client = kube::Client::try_from(config).unwrap();
        Self {
            url,
            kubeconfig,
            server,
            store,
            client,
            stop,
            dir,
        }
    }

    /// A kubeconfig (written once) whose bearer token is `user`: the API server's audit
    /// ([`berth_sim::server::Audit`]) names the calls made with it by that user. Each service
    /// started here uses its binary's name.
    pub fn kubeconfig_for(&self, user: &str) -> String {
        let path = self.dir.join(format!("kubeconfig-{user}"));
        if !path.exists() {
            std::fs::write(
                &path,
                berth_sim::server::kubeconfig_with_token(&self.url, user),
            )
            .unwrap();
        }
        path.display().to_string()
    }

    pub fn create(&self, yaml: &str) {
        for doc in yaml.split("\n---") {
            let v: serde_json::Value = serde_norway::from_str(doc).unwrap();
            if !v.is_null() {
                self.server.create_object(v).unwrap();
            }
        }
    }

    pub async fn list<K>(&self) -> Vec<K>
    where
        K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        Api::<K>::all(self.client.clone())
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A child process, killed when dropped.
pub struct Service {
    pub child: Child,
    /// The gRPC address it logged, if it serves gRPC.
    pub grpc: Option<String>,
    /// The admin (metrics, health) address it logged.
    pub admin: Option<String>,
}

impl Service {
    /// Starts `name` with `args` (JSON logs) and waits for its "serving"/"running" line (or a
    /// standby's "waiting for the leader lease").
    pub fn spawn(name: &str, args: &[&str]) -> Self {
        Self::spawn_with(name, args, |_| {})
    }

    /// [`Service::spawn`] with the command adjusted first (its environment, say).
    pub fn spawn_with(name: &str, args: &[&str], adjust: impl FnOnce(&mut Command)) -> Self {
        let mut command = Command::new(binary(name));
        command
            .args(args)
            .args(["--log-format", "json", "--log", "info,kube=warn"]);
        adjust(&mut command);
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        let logs = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let who = name.to_owned();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(logs).lines().map_while(Result::ok) {
                if std::env::var_os("BERTH_IT_LOGS").is_some() {
                    eprintln!("[{who}] {line}");
                }
                if !sent && let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                    let msg = v["fields"]["message"].as_str().unwrap_or_default();
                    // A standby (--leader-elect) says it waits, and listens on no gRPC port.
                    if msg.contains("serving")
                        || msg.contains("running")
                        || msg.contains("standby: waiting for the leader lease")
                    {
                        let field = |k: &str| v["fields"][k].as_str().map(str::to_owned);
                        let _ = tx.send((field("grpc"), field("admin")));
                        sent = true;
                    }
                }
            }
        });
        let (grpc, admin) = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("{name} did not start"));
        Self { child, grpc, admin }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.grpc.as_deref().expect("a gRPC service"))
    }

    /// SIGKILL, no goodbye.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The three services against `cluster`, sim cloud.
pub struct Berth {
    pub actuator: Service,
    pub scheduler: Service,
    pub watcher: Service,
}

/// The actuator on the sim cloud, instances booting in 2 s (the cluster's boot delay).
pub fn actuator(cluster: &Cluster) -> Service {
    actuator_booting_in(cluster, "2s")
}

pub fn actuator_booting_in(cluster: &Cluster, boot_delay: &str) -> Service {
    actuator_with(cluster, &["--sim-boot-delay", boot_delay])
}

/// The actuator on the sim cloud with `extra` flags (instances boot in 2 s unless `extra`
/// says `--sim-boot-delay`).
pub fn actuator_with(cluster: &Cluster, extra: &[&str]) -> Service {
    let kc = cluster.kubeconfig_for("berth-actuator");
    let mut args = vec![
        "--provider",
        "sim",
        "--kubeconfig",
        &kc,
        "--grpc-addr",
        "127.0.0.1:0",
        "--admin-addr",
        "127.0.0.1:0",
        "--lifecycle-interval",
        "1s",
    ];
    if !extra.contains(&"--sim-boot-delay") {
        args.extend(["--sim-boot-delay", "2s"]);
    }
    args.extend_from_slice(extra);
    Service::spawn("berth-actuator", &args)
}

pub fn scheduler(actuator_url: &str) -> Service {
    scheduler_with("127.0.0.1:0", actuator_url, &[])
}

/// The scheduler on `grpc_addr` (a restart reuses its predecessor's), with `extra` flags.
pub fn scheduler_with(grpc_addr: &str, actuator_url: &str, extra: &[&str]) -> Service {
    let mut args = vec![
        "--grpc-addr",
        grpc_addr,
        "--admin-addr",
        "127.0.0.1:0",
        "--actuator-url",
        actuator_url,
        "--batch-idle",
        "300ms",
        "--batch-max",
        "2s",
    ];
    args.extend_from_slice(extra);
    Service::spawn("berth-scheduler", &args)
}

pub fn watcher(cluster: &Cluster, scheduler_url: &str) -> Service {
    watcher_with(cluster, scheduler_url, &[])
}

/// [`watcher`] with `extra` flags.
pub fn watcher_with(cluster: &Cluster, scheduler_url: &str, extra: &[&str]) -> Service {
    let kc = cluster.kubeconfig_for("berth-watcher");
    let mut args = vec![
        "--scheduler-url",
        scheduler_url,
        "--admin-addr",
        "127.0.0.1:0",
        "--kubeconfig",
        &kc,
        "--status-interval",
        "1s",
    ];
    args.extend_from_slice(extra);
    Service::spawn("berth-watcher", &args)
}

/// Scheduler flags for disruption scenarios: evaluate every 2 s, validate after 3 s (instead
/// of 10 s and 15 s), so a decision is carried out within seconds.
pub const QUICK_DISRUPTION: &[&str] = &[
    "--disruption-interval",
    "2s",
    "--disruption-validation",
    "3s",
];

impl Berth {
    pub fn start(cluster: &Cluster) -> Self {
        let actuator = actuator(cluster);
        let scheduler = scheduler(&actuator.url());
        let watcher = watcher(cluster, &scheduler.url());
        Self {
            actuator,
            scheduler,
            watcher,
        }
    }

    /// The three services for disruption scenarios: [`QUICK_DISRUPTION`], and instances that
    /// shut down in 1 s (the sim cloud's default is 30 s).
    pub fn start_disrupting(cluster: &Cluster) -> Self {
        Self::start_disrupting_with(cluster, &[])
    }

    /// [`Berth::start_disrupting`], with `scheduler_extra` flags for the scheduler.
    pub fn start_disrupting_with(cluster: &Cluster, scheduler_extra: &[&str]) -> Self {
        let actuator = actuator_with(cluster, &["--sim-termination-delay", "1s"]);
        let flags = [QUICK_DISRUPTION, scheduler_extra].concat();
        let scheduler = scheduler_with("127.0.0.1:0", &actuator.url(), &flags);
        let watcher = watcher(cluster, &scheduler.url());
        Self {
            actuator,
            scheduler,
            watcher,
        }
    }
}

/// Polls `check` every 200 ms for up to `secs` seconds.
pub async fn eventually<F, Fut>(secs: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..secs * 5 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("timed out waiting until {what}");
}

pub const SEED: &[&str] = &[
    include_str!("../../../api/tests/fixtures/seed/ec2nodeclass-default.v1beta1.yaml"),
    include_str!("../../../api/tests/fixtures/seed/nodepool-default.v1beta1.yaml"),
    include_str!("../../../api/tests/fixtures/seed/nodepool-gitlab.v1beta1.yaml"),
];

pub fn is_running(p: &Pod) -> bool {
    p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}

pub fn node_of(p: &Pod) -> Option<&str> {
    p.spec.as_ref().and_then(|s| s.node_name.as_deref())
}

/// `n` plain pods `<prefix>-<i>` in `default`, each requesting `cpu` and 1Gi.
pub fn plain_pods(prefix: &str, n: usize, cpu: &str) -> String {
    (0..n)
        .map(|i| {
            format!(
                "apiVersion: v1
kind: Pod
metadata: {{name: {prefix}-{i}, namespace: default}}
spec:
  containers: [{{name: a, image: x, resources: {{requests: {{cpu: '{cpu}', memory: 1Gi}}}}}}]"
            )
        })
        .collect::<Vec<_>>()
        .join("\n---\n")
}

/// Waits until `n` pods run.
pub async fn all_run(cluster: &Cluster, n: usize, secs: u64) {
    eventually(secs, &format!("all {n} pods run"), || async {
        cluster
            .list::<Pod>()
            .await
            .iter()
            .filter(|p| is_running(p))
            .count()
            == n
    })
    .await;
}

/// Nothing launched twice: every NodeClaim has a node with pods bound to it.
pub async fn assert_every_claim_has_pods(cluster: &Cluster) {
    let pods = cluster.list::<Pod>().await;
    let claims = cluster.list::<NodeClaim>().await;
    assert!(!claims.is_empty(), "no NodeClaim at all");
    for c in &claims {
        let node = c
            .status
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        assert!(
            !node.is_empty() && pods.iter().any(|p| node_of(p) == Some(node.as_str())),
            "NodeClaim {:?} (node {node:?}) got no pods: launched twice?",
            c.metadata.name
        );
    }
}

/// GitLab build pods as the seed README shapes them.
pub fn build_pods(namespace: &str, prefix: &str, n: usize) -> String {
    (0..n)
        .map(|i| {
            format!(
                "apiVersion: v1
kind: Pod
metadata: {{name: {prefix}-{i}, namespace: {namespace}}}
spec:
  nodeSelector: {{workload-type: gitlab-runners-auto}}
  tolerations: [{{key: dedicated, operator: Equal, value: gitlab-runner-auto, effect: NoSchedule}}]
  containers: [{{name: build, image: 'ubuntu:20.04', resources: {{requests: {{cpu: '1', memory: 2Gi}}}}}}]
"
            )
        })
        .collect::<Vec<_>>()
        .join("\n---\n")
}

/// A Deployment `name` of `replicas` pods labelled `app: <name>`, each requesting `cpu` and
/// 1Gi.
pub fn deployment(name: &str, replicas: usize, cpu: &str) -> String {
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: default}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      containers: [{{name: a, image: x, resources: {{requests: {{cpu: '{cpu}', memory: 1Gi}}}}}}]"
    )
}

/// The running pods labelled `app=<app>`.
pub async fn running(cluster: &Cluster, app: &str) -> Vec<Pod> {
    cluster
        .list::<Pod>()
        .await
        .into_iter()
        .filter(|p| is_running(p) && p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            p.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("app"))
                .is_some_and(|a| a == app)
        })
        .collect()
}

/// A NodeClaim's label `key`.
pub fn claim_label<'a>(c: &'a NodeClaim, key: &str) -> Option<&'a str> {
    c.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(key))
        .map(String::as_str)
}

/// The built-in catalog's on-demand $/h of `instance_type` (the sim cloud's price).
pub fn on_demand_price(instance_type: &str) -> f64 {
    let catalog = berth_catalog::Catalog::builtin();
    let facts = catalog
        .facts
        .iter()
        .find(|f| f.name == instance_type)
        .unwrap_or_else(|| panic!("{instance_type} is not in the catalog"));
    facts
        .on_demand_usd_per_hour
        .unwrap_or_else(|| catalog.prices.on_demand(facts))
}

/// The on-demand $/h of every NodeClaim now.
pub async fn fleet_price(cluster: &Cluster) -> f64 {
    cluster
        .list::<NodeClaim>()
        .await
        .iter()
        .map(|c| {
            on_demand_price(
                claim_label(c, "node.kubernetes.io/instance-type").expect("a launched claim"),
            )
        })
        .sum()
}

/// `name (type) on node` of every NodeClaim, for failure messages.
pub async fn describe_claims(cluster: &Cluster) -> Vec<String> {
    cluster
        .list::<NodeClaim>()
        .await
        .iter()
        .map(|c| {
            format!(
                "{} ({}) node {:?}{}",
                c.metadata.name.as_deref().unwrap_or_default(),
                claim_label(c, "node.kubernetes.io/instance-type").unwrap_or("?"),
                c.status.as_ref().and_then(|s| s.node_name.as_deref()),
                if c.metadata.deletion_timestamp.is_some() {
                    " deleting"
                } else {
                    ""
                }
            )
        })
        .collect()
}

/// The Kubernetes Events (core/v1, any namespace) about `kind`/`name` with `reason`.
pub async fn events_about(
    cluster: &Cluster,
    kind: &str,
    name: &str,
    reason: &str,
) -> Vec<k8s_openapi::api::core::v1::Event> {
    cluster
        .list::<k8s_openapi::api::core::v1::Event>()
        .await
        .into_iter()
        .filter(|e| {
            e.involved_object.kind.as_deref() == Some(kind)
                && e.involved_object.name.as_deref() == Some(name)
                && e.reason.as_deref() == Some(reason)
        })
        .collect()
}
