//! `kubectl` against the simulated API server: get, apply, create, delete and watch on pods,
//! nodes and NodePools. Needs a kubectl (`BERTH_KUBECTL`, or `kubectl` on the PATH, e.g.
//! Debian's `kubernetes-client`); without one the test says so and passes nothing else.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use berth_sim::controllers::{ClusterOptions, Controllers};
use berth_sim::server::ApiServer;
use berth_sim::store::Store;

fn kubectl_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("BERTH_KUBECTL") {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("kubectl"))
            .find(|p| p.is_file())
    })
}

struct Kubectl {
    bin: PathBuf,
    kubeconfig: PathBuf,
}

impl Kubectl {
    fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        use std::io::Write;
        let mut child = Command::new(&self.bin)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run kubectl");
        if let Some(input) = stdin {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
        }
        drop(child.stdin.take());
        child.wait_with_output().unwrap()
    }

    /// Runs and expects success; returns stdout.
    async fn ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let this = Kubectl {
            bin: self.bin.clone(),
            kubeconfig: self.kubeconfig.clone(),
        };
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        let stdin = stdin.map(str::to_owned);
        let out = tokio::task::spawn_blocking(move || {
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            (this.run(&refs, stdin.as_deref()), refs.join(" "))
        })
        .await
        .unwrap();
        let (output, cmd) = out;
        assert!(
            output.status.success(),
            "kubectl {cmd} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }
}

const NODE_POOL: &str = r#"
apiVersion: karpenter.sh/v1
kind: NodePool
metadata:
  name: gitlab
spec:
  template:
    spec:
      nodeClassRef:
        group: karpenter.k8s.aws
        kind: EC2NodeClass
        name: default
      requirements:
        - key: node.kubernetes.io/instance-type
          operator: In
          values: ["t3.2xlarge"]
  limits:
    cpu: "32"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_gets_applies_creates_deletes_and_watches() {
    let Some(bin) = kubectl_binary() else {
        eprintln!("SKIPPED: no kubectl (set BERTH_KUBECTL or install kubernetes-client)");
        return;
    };
    let store = Store::new(10_000);
    let server = ApiServer::new(store.clone(), Arc::new(SystemTime::now));
    let local = server.start_local().await.unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let controllers = Controllers::new(store, Arc::new(SystemTime::now), ClusterOptions::default());
    let running = tokio::spawn(controllers.run(stopped));
    let dir = std::env::temp_dir().join(format!("berth-kubectl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, local.kubeconfig()).unwrap();
    let k = Kubectl { bin, kubeconfig };

    assert!(k.ok(&["get", "nodes"], None).await.is_empty());
    assert!(
        k.ok(&["apply", "-f", "-"], Some(NODE_POOL))
            .await
            .contains("nodepool.karpenter.sh/gitlab created")
    );
    let pools = k.ok(&["get", "nodepools"], None).await;
    assert!(pools.contains("gitlab"), "{pools}");
    // Applying again changes nothing; changing a field patches it.
    k.ok(&["apply", "-f", "-"], Some(NODE_POOL)).await;
    let changed = NODE_POOL.replace("cpu: \"32\"", "cpu: \"64\"");
    assert!(
        k.ok(&["apply", "-f", "-"], Some(&changed))
            .await
            .contains("configured")
    );
    let limit = k
        .ok(
            &[
                "get",
                "nodepool",
                "gitlab",
                "-o",
                "jsonpath={.spec.limits.cpu}",
            ],
            None,
        )
        .await;
    assert_eq!(limit, "64");

    // A deployment makes pods (the workload controllers), which stay pending: no nodes.
    // (`kubectl create deployment` sends protobuf, which the simulated server does not
    // speak: it answers 415. `apply` sends JSON.)
    let rendered = k
        .ok(
            &[
                "create",
                "deployment",
                "web",
                "--image",
                "nginx",
                "--replicas",
                "2",
                "--dry-run=client",
                "-o",
                "yaml",
            ],
            None,
        )
        .await;
    k.ok(&["apply", "-f", "-"], Some(&rendered)).await;
    let mut pods = String::new();
    for _ in 0..50 {
        pods = k.ok(&["get", "pods", "-o", "name"], None).await;
        if pods.lines().count() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(pods.lines().count(), 2, "{pods}");
    let reason = k
        .ok(
            &[
                "get",
                "pods",
                "-o",
                "jsonpath={.items[0].status.conditions[0].reason}",
            ],
            None,
        )
        .await;
    assert_eq!(reason, "Unschedulable");
    // Labels through kubectl's strategic merge patch.
    let first = pods.lines().next().unwrap().to_owned();
    k.ok(&["label", &first, "team=ci"], None).await;
    let labelled = k
        .ok(&["get", "pods", "-l", "team=ci", "-o", "name"], None)
        .await;
    assert_eq!(labelled.trim(), first);

    // A watch sees the deletion.
    let watch = {
        let bin = k.bin.clone();
        let kubeconfig = k.kubeconfig.clone();
        std::thread::spawn(move || {
            Command::new(bin)
                .arg("--kubeconfig")
                .arg(kubeconfig)
                .args([
                    "get",
                    "nodepools",
                    "-w",
                    "--output-watch-events",
                    "--request-timeout",
                    "5s",
                ])
                .output()
                .unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(800)).await;
    k.ok(&["delete", "nodepool", "gitlab"], None).await;
    let watched = tokio::task::spawn_blocking(move || watch.join().unwrap())
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&watched.stdout);
    assert!(
        text.contains("DELETED"),
        "{text}\n{}",
        String::from_utf8_lossy(&watched.stderr)
    );
    k.ok(&["delete", "deployment", "web"], None).await;

    let _ = stop.send(true);
    running.await.unwrap();
    local.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
