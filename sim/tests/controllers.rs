//! The simulated control plane on a store with a hand-moved clock: workloads make pods, the
//! kube-scheduler binds or marks them, kubelets register nodes for launched NodeClaims and
//! run pods, the garbage collector follows owners.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use berth_sim::controllers::{ClusterOptions, Controllers};
use berth_sim::store::{Resource, Store};
use serde_json::{Value, json};

struct Sim {
    store: Store,
    now: Arc<Mutex<SystemTime>>,
    controllers: Controllers,
}

impl Sim {
    fn new() -> Self {
        let store = Store::new(100_000);
        let now = Arc::new(Mutex::new(
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        ));
        let clock = now.clone();
        let controllers = Controllers::new(
            store.clone(),
            Arc::new(move || *clock.lock().unwrap()),
            ClusterOptions {
                boot_delay: Duration::from_secs(45),
                pod_start_delay: Duration::from_secs(2),
                tick: Duration::from_millis(10),
            },
        );
        Self {
            store,
            now,
            controllers,
        }
    }

    fn advance(&self, by: Duration) {
        *self.now.lock().unwrap() += by;
    }

    fn time(&self) -> SystemTime {
        *self.now.lock().unwrap()
    }

    /// Reconciles until nothing changes (at most 20 passes).
    fn settle(&self) {
        for _ in 0..20 {
            let before = self.store.resource_version();
            self.controllers.reconcile();
            if self.store.resource_version() == before {
                return;
            }
        }
        panic!("the controllers did not settle");
    }

    fn create(&self, r: &Resource, v: Value) {
        self.store.create(r, v, self.time()).unwrap();
    }

    fn list(&self, r: &Resource) -> Vec<Value> {
        self.store.list(r, None).0
    }

    fn pods(&self) -> Vec<Value> {
        self.list(&pods())
    }
}

fn pods() -> Resource {
    Resource::new("", "pods", true)
}
fn nodes() -> Resource {
    Resource::new("", "nodes", false)
}

fn deployment(replicas: i32) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [{"name": "c", "image": "nginx",
                                    "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}}],
                    "tolerations": [{"key": "team", "operator": "Exists"}]
                }
            }
        }
    })
}

/// A NodeClaim the actuator launched `at`, with the status it writes.
fn launched_claim(name: &str, at: SystemTime) -> Value {
    let t = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at.try_into().unwrap());
    json!({
        "apiVersion": "karpenter.sh/v1", "kind": "NodeClaim",
        "metadata": {"name": name, "labels": {
            "karpenter.sh/nodepool": "default",
            "node.kubernetes.io/instance-type": "m5.xlarge",
            "topology.kubernetes.io/zone": "us-east-1a",
            "karpenter.sh/capacity-type": "on-demand",
            "kubernetes.io/arch": "amd64"}},
        "spec": {
            "nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "default"},
            "requirements": [],
            "taints": [{"key": "team", "value": "ci", "effect": "NoSchedule"}],
            "startupTaints": [{"key": "cni.example/not-ready", "effect": "NoSchedule"}]
        },
        "status": {
            "providerID": format!("sim:///us-east-1a/{name}"),
            "capacity": {"cpu": "4", "memory": "16Gi", "pods": "58"},
            "allocatable": {"cpu": "3920m", "memory": "14Gi", "pods": "58"},
            "conditions": [{"type": "Launched", "status": "True", "reason": "Launched",
                            "message": "", "lastTransitionTime": t}]
        }
    })
}

fn condition<'a>(pod: &'a Value, type_: &str) -> Option<&'a Value> {
    pod["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

/// What Karpenter's registration does to a node: the registered label, no unregistered taint.
fn register(sim: &Sim, name: &str) {
    let mut node = sim.store.get(&nodes(), "", name).unwrap();
    node["metadata"]["labels"]["karpenter.sh/registered"] = json!("true");
    let taints: Vec<Value> = node["spec"]["taints"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["key"] != "karpenter.sh/unregistered")
        .cloned()
        .collect();
    node["spec"]["taints"] = json!(taints);
    sim.store.update(&nodes(), node, sim.time()).unwrap();
}

#[test]
fn a_deployment_waits_unschedulable_then_runs_on_the_node_a_launched_claim_brings() {
    let sim = Sim::new();
    sim.create(&Resource::new("apps", "deployments", true), deployment(3));
    sim.settle();
    let pods = sim.pods();
    assert_eq!(pods.len(), 3);
    for p in &pods {
        let c = condition(p, "PodScheduled").expect("the scheduler looked at it");
        assert_eq!(c["status"], "False");
        assert_eq!(c["reason"], "Unschedulable");
        assert!(
            c["message"]
                .as_str()
                .unwrap()
                .starts_with("0/0 nodes are available"),
            "{c}"
        );
        assert!(p["metadata"]["ownerReferences"][0]["kind"] == "ReplicaSet");
    }

    // The claim launches; its node registers only after the boot delay.
    let claims = Resource::new("karpenter.sh", "nodeclaims", false);
    sim.create(&claims, launched_claim("default-abcde", sim.time()));
    sim.settle();
    assert!(sim.list(&nodes()).is_empty(), "still booting");
    sim.advance(Duration::from_secs(46));
    sim.settle();
    let node = sim.store.get(&nodes(), "", "default-abcde").unwrap();
    assert_eq!(
        node["spec"]["providerID"],
        "sim:///us-east-1a/default-abcde"
    );
    assert_eq!(
        node["metadata"]["labels"]["node.kubernetes.io/instance-type"],
        "m5.xlarge"
    );
    assert_eq!(
        node["metadata"]["labels"]["topology.kubernetes.io/region"],
        "us-east-1"
    );
    assert_eq!(node["status"]["allocatable"]["cpu"], "3920m");
    let keys: Vec<&str> = node["spec"]["taints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["key"].as_str().unwrap())
        .collect();
    assert_eq!(
        keys,
        ["team", "cni.example/not-ready", "karpenter.sh/unregistered"]
    );
    // Unregistered: nothing binds yet.
    assert!(sim.pods().iter().all(|p| p["spec"]["nodeName"].is_null()));

    register(&sim, "default-abcde");
    sim.settle();
    let keys: Vec<String> = sim.store.get(&nodes(), "", "default-abcde").unwrap()["spec"]["taints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["key"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(keys, ["team"], "startup taints lifted after registration");
    // 3 pods of 1 CPU fit in 3.92 CPU.
    let pods = sim.pods();
    assert!(
        pods.iter()
            .all(|p| p["spec"]["nodeName"] == "default-abcde"),
        "{pods:#?}"
    );
    assert!(pods.iter().all(|p| p["status"]["phase"] == "Pending"));
    sim.advance(Duration::from_secs(3));
    sim.settle();
    assert!(sim.pods().iter().all(|p| p["status"]["phase"] == "Running"));
    let d = sim
        .store
        .get(
            &Resource::new("apps", "deployments", true),
            "default",
            "web",
        )
        .unwrap();
    assert_eq!(d["status"]["readyReplicas"], 3);

    // A fourth replica does not fit: unschedulable with the reason.
    let mut d = d;
    d["spec"]["replicas"] = json!(4);
    sim.store
        .update(&Resource::new("apps", "deployments", true), d, sim.time())
        .unwrap();
    sim.settle();
    let pending: Vec<Value> = sim
        .pods()
        .into_iter()
        .filter(|p| p["spec"]["nodeName"].is_null())
        .collect();
    assert_eq!(pending.len(), 1);
    let c = condition(&pending[0], "PodScheduled").unwrap();
    assert_eq!(c["reason"], "Unschedulable");
    assert!(
        c["message"]
            .as_str()
            .unwrap()
            .contains("1 nodes are available"),
        "{c}"
    );

    // Scaled down to one, then deleted: the garbage collector follows the owners.
    let mut d = sim
        .store
        .get(
            &Resource::new("apps", "deployments", true),
            "default",
            "web",
        )
        .unwrap();
    d["spec"]["replicas"] = json!(1);
    sim.store
        .update(&Resource::new("apps", "deployments", true), d, sim.time())
        .unwrap();
    sim.settle();
    let left = sim.pods();
    assert_eq!(left.len(), 1);
    assert_eq!(
        left[0]["spec"]["nodeName"], "default-abcde",
        "the unbound one went first"
    );
    sim.store
        .delete(
            &Resource::new("apps", "deployments", true),
            "default",
            "web",
            sim.time(),
        )
        .unwrap();
    sim.settle();
    assert!(
        sim.list(&Resource::new("apps", "replicasets", true))
            .is_empty()
    );
    assert!(sim.pods().is_empty());

    // The claim is gone: its node goes (owner reference), and so do its pods.
    let mut node = sim.store.get(&nodes(), "", "default-abcde").unwrap();
    let claim = sim.store.get(&claims, "", "default-abcde").unwrap();
    node["metadata"]["ownerReferences"] = json!([{
        "apiVersion": "karpenter.sh/v1", "kind": "NodeClaim", "name": "default-abcde",
        "uid": claim["metadata"]["uid"], "controller": true}]);
    sim.store.update(&nodes(), node, sim.time()).unwrap();
    sim.store
        .delete(&claims, "", "default-abcde", sim.time())
        .unwrap();
    sim.settle();
    assert!(sim.list(&nodes()).is_empty());
}

#[test]
fn jobs_run_to_completion_daemon_sets_follow_nodes_and_stateful_sets_count() {
    let sim = Sim::new();
    sim.create(
        &Resource::new("karpenter.sh", "nodeclaims", false),
        launched_claim("default-xyz12", sim.time()),
    );
    sim.advance(Duration::from_secs(45));
    sim.settle();
    register(&sim, "default-xyz12");
    sim.create(
        &Resource::new("apps", "daemonsets", true),
        json!({
            "apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": "agent", "namespace": "kube-system"},
            "spec": {"selector": {"matchLabels": {"app": "agent"}},
                     "template": {"metadata": {"labels": {"app": "agent"}},
                                  "spec": {"containers": [{"name": "a", "image": "agent"}],
                                           "tolerations": [{"operator": "Exists"}]}}}
        }),
    );
    sim.create(
        &Resource::new("batch", "jobs", true),
        json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "build", "namespace": "ci"},
            "spec": {"completions": 3, "parallelism": 2,
                     "template": {"metadata": {"annotations": {"sim.berth.dev/run-for": "30s"}},
                                  "spec": {"restartPolicy": "Never",
                                           "containers": [{"name": "b", "image": "build",
                                               "resources": {"requests": {"cpu": "500m"}}}],
                                           "tolerations": [{"key": "team", "operator": "Exists"}]}}}
        }),
    );
    sim.create(
        &Resource::new("apps", "statefulsets", true),
        json!({
            "apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "db", "namespace": "default"},
            "spec": {"replicas": 2, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
                     "template": {"metadata": {"labels": {"app": "db"}},
                                  "spec": {"containers": [{"name": "d", "image": "db"}]}}}
        }),
    );
    sim.settle();
    let names: Vec<String> = sim
        .pods()
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_owned())
        .collect();
    assert!(names.contains(&"db-0".to_owned()) && names.contains(&"db-1".to_owned()));
    let agents: Vec<Value> = sim
        .pods()
        .into_iter()
        .filter(|p| p["metadata"]["namespace"] == "kube-system")
        .collect();
    assert_eq!(agents.len(), 1);
    assert_eq!(agents[0]["spec"]["nodeName"], "default-xyz12");
    let job_pods = || -> Vec<Value> {
        sim.pods()
            .into_iter()
            .filter(|p| p["metadata"]["namespace"] == "ci")
            .collect()
    };
    assert_eq!(job_pods().len(), 2, "parallelism");
    // Start, run 30 s, succeed; the third pod follows; then the job is complete.
    for _ in 0..4 {
        sim.advance(Duration::from_secs(31));
        sim.settle();
    }
    let done = job_pods();
    assert_eq!(done.len(), 3);
    assert!(
        done.iter().all(|p| p["status"]["phase"] == "Succeeded"),
        "{done:#?}"
    );
    let job = sim
        .store
        .get(&Resource::new("batch", "jobs", true), "ci", "build")
        .unwrap();
    assert_eq!(job["status"]["succeeded"], 3);
    assert_eq!(job["status"]["conditions"][0]["type"], "Complete");
}

#[tokio::test]
async fn budgets_get_their_status_and_evictions_that_would_break_one_are_refused_and_counted() {
    let sim = Sim::new();
    sim.create(
        &Resource::new("karpenter.sh", "nodeclaims", false),
        launched_claim("default-pdb12", sim.time()),
    );
    sim.advance(Duration::from_secs(45));
    sim.settle();
    register(&sim, "default-pdb12");
    sim.create(&Resource::new("apps", "deployments", true), deployment(3));
    let budgets = Resource::new("policy", "poddisruptionbudgets", true);
    sim.create(
        &budgets,
        json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
               "metadata": {"name": "web", "namespace": "default"},
               "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "web"}}}}),
    );
    sim.settle();
    let status = || sim.store.get(&budgets, "default", "web").unwrap()["status"].clone();
    // Pending pods are not healthy: nothing may go yet.
    assert_eq!(status()["expectedPods"], 3);
    assert_eq!(status()["desiredHealthy"], 2);
    assert_eq!(status()["disruptionsAllowed"], 0);
    sim.advance(Duration::from_secs(3));
    sim.settle();
    assert_eq!(status()["currentHealthy"], 3);
    assert_eq!(status()["disruptionsAllowed"], 1);

    // The Eviction API over the same store.
    let clock = sim.now.clone();
    let server = berth_sim::server::ApiServer::new(
        sim.store.clone(),
        Arc::new(move || *clock.lock().unwrap()),
    );
    let local = server.clone().start_local().await.unwrap();
    let mut config = kube::Config::new(local.url().parse().unwrap());
    config.default_retry = false; // a 429 is the answer under test, not a reason to retry
    let client = kube::Client::try_from(config).unwrap();
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> = kube::Api::namespaced(client, "default");
    let names: Vec<String> = sim
        .pods()
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_owned())
        .collect();
    pods.evict(&names[0], &Default::default()).await.unwrap();
    // Its replacement is not up yet: the budget counts the Deployment's 3, not the 2 left.
    let refused = pods
        .evict(&names[1], &Default::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, kube::Error::Api(s) if s.code == 429),
        "{refused:?}"
    );
    sim.settle();
    assert_eq!(status()["disruptionsAllowed"], 0);
    // Deleting a healthy pod around the Eviction API breaks the budget: counted too.
    pods.delete(&names[2], &Default::default()).await.unwrap();
    let stats = server.evictions();
    assert_eq!(stats.evicted, 1);
    assert_eq!(stats.refused, [format!("default/{} (web)", names[1])]);
    assert_eq!(
        stats.deleted_past_budget,
        [format!("default/{} (web)", names[2])]
    );
    // Once the replacements run, evictions go through again.
    sim.settle();
    sim.advance(Duration::from_secs(3));
    sim.settle();
    assert_eq!(status()["currentHealthy"], 3);
    pods.evict(&names[1], &Default::default()).await.unwrap();
    assert_eq!(server.evictions().evicted, 2);
}
