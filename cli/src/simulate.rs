//! `berth simulate`: the user's own manifests on the simulated cluster with Berth's three
//! services, for a simulated window, with a summary and an HTML report — "what would Berth
//! launch, and what would it cost?".
//!
//! Workloads arrive on a schedule written as annotations on the objects themselves
//! (docs/simulate.md), so a user's existing manifests need one line each:
//!
//! - `sim.berth.dev/arrive-at: 10m` — created that long after the start (default: at the start);
//! - `sim.berth.dev/repeat-every: 30m` — created again every 30 minutes until the window ends,
//!   as `<name>-2`, `<name>-3`, … (CI pipelines, cron-like batches);
//! - `sim.berth.dev/replicas-at: "20m=10,1h=2"` — a Deployment, StatefulSet or ReplicaSet
//!   scaled to those replica counts at those times (a daily peak);
//! - `sim.berth.dev/run-for: 5m` on a pod template — the pod succeeds after running that long
//!   (read by the simulated kubelet).
//!
//! Everything is read and checked before anything starts: a bad manifest or annotation stops
//! the run with every error, naming the object and the field.

use std::path::PathBuf;
use std::time::Duration;

use berth_api::duration::parse_flag;
use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;

use crate::play::{Action, Arrival, Outcome, Scenario, hms, print_summary};

pub const ARRIVE_AT: &str = "sim.berth.dev/arrive-at";
pub const REPEAT_EVERY: &str = "sim.berth.dev/repeat-every";
pub const REPLICAS_AT: &str = "sim.berth.dev/replicas-at";

/// Kinds `replicas-at` scales.
const SCALABLE: &[&str] = &["Deployment", "StatefulSet", "ReplicaSet"];

#[derive(Debug, Clone)]
pub struct Options {
    /// Print the final summary as JSON (progress to stderr).
    pub json: bool,
    pub files: Vec<PathBuf>,
    pub duration: Duration,
    pub speed: f64,
    pub boot_delay: Duration,
    pub report: Option<PathBuf>,
    pub kubeconfig: PathBuf,
    pub catalog: Option<PathBuf>,
}

/// The manifests split by the schedule: what exists at the start, and what arrives later.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Schedule {
    pub initial: Vec<Value>,
    pub arrivals: Vec<Arrival>,
}

/// `Kind namespace/name` (or `Kind name`), for messages.
fn describe(v: &Value) -> String {
    let kind = v["kind"].as_str().unwrap_or("<no kind>");
    let name = v.pointer("/metadata/name").and_then(Value::as_str);
    let name = name.unwrap_or("<unnamed>");
    match v.pointer("/metadata/namespace").and_then(Value::as_str) {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    }
}

fn annotation<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.pointer("/metadata/annotations")
        .and_then(|a| a.get(key))
        .and_then(Value::as_str)
}

/// Splits `manifests` by their schedule annotations. `window` is the simulated length:
/// repeats stop there. Returns every error (object, annotation, what is wrong).
pub fn schedule(manifests: Vec<Value>, window: Duration) -> Result<Schedule, Vec<String>> {
    let mut out = Schedule::default();
    let mut errors = Vec::new();
    for v in manifests {
        let what = describe(&v);
        let field = |key: &str| format!("{what}: metadata.annotations[{key}]");
        let mut duration_of = |key: &str| -> Option<Duration> {
            let text = annotation(&v, key)?;
            match parse_flag(text) {
                Ok(d) => Some(d),
                Err(e) => {
                    errors.push(format!("{}: {e}", field(key)));
                    None
                }
            }
        };
        let at = duration_of(ARRIVE_AT);
        let every = duration_of(REPEAT_EVERY);
        let mut scale = Vec::new();
        if let Some(text) = annotation(&v, REPLICAS_AT) {
            let kind = v["kind"].as_str().unwrap_or_default();
            if !SCALABLE.contains(&kind) {
                errors.push(format!(
                    "{}: only a {} has replicas to set",
                    field(REPLICAS_AT),
                    SCALABLE.join(", ")
                ));
            }
            for step in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let parsed = step.split_once('=').and_then(|(t, n)| {
                    Some((parse_flag(t.trim()).ok()?, n.trim().parse::<i64>().ok()?))
                });
                match parsed {
                    Some((t, n)) if n >= 0 => scale.push((t, n)),
                    _ => errors.push(format!(
                        "{}: {step:?} is not <time>=<replicas>, like 20m=10",
                        field(REPLICAS_AT)
                    )),
                }
            }
        }
        if every.is_some_and(|d| d.is_zero()) {
            errors.push(format!("{}: must be longer than 0s", field(REPEAT_EVERY)));
            continue;
        }
        if every.is_some()
            && v.pointer("/metadata/name")
                .and_then(Value::as_str)
                .is_none()
        {
            errors.push(format!(
                "{what}: metadata.name: repeated objects need a name"
            ));
            continue;
        }
        let at = at.unwrap_or_default();
        if at.is_zero() && every.is_none() {
            out.initial.push(v.clone());
        } else {
            let mut t = at;
            let mut n = 1;
            loop {
                let mut copy = v.clone();
                if n > 1 {
                    let name = format!("{}-{n}", copy["metadata"]["name"].as_str().unwrap());
                    copy["metadata"]["name"] = Value::String(name);
                }
                out.arrivals.push(Arrival {
                    at: t,
                    action: Action::Create(copy),
                });
                let Some(every) = every else { break };
                t += every;
                n += 1;
                if t >= window {
                    break;
                }
            }
        }
        let name = v.pointer("/metadata/name").and_then(Value::as_str);
        for (t, replicas) in scale {
            out.arrivals.push(Arrival {
                at: t.max(at),
                action: Action::Scale {
                    api_version: v["apiVersion"].as_str().unwrap_or_default().to_owned(),
                    kind: v["kind"].as_str().unwrap_or_default().to_owned(),
                    namespace: v
                        .pointer("/metadata/namespace")
                        .and_then(Value::as_str)
                        .unwrap_or("default")
                        .to_owned(),
                    name: name.unwrap_or_default().to_owned(),
                    replicas,
                },
            });
        }
    }
    // Stable: at equal times, the files' order.
    out.arrivals.sort_by_key(|a| a.at);
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// Karpenter objects are read and validated as `berth validate` does (v1beta1 converted).
fn check_karpenter(manifests: &[Value]) -> Vec<String> {
    let mut parsed = Vec::new();
    let mut errors = Vec::new();
    let karpenter = manifests.iter().filter(|v| {
        v["apiVersion"]
            .as_str()
            .is_some_and(|a| a.starts_with("karpenter.sh/") || a.starts_with("karpenter.k8s.aws/"))
    });
    for (i, v) in karpenter.enumerate() {
        match berth_api::manifest::parse_value(i + 1, v.clone()) {
            Ok(m) => parsed.push(m),
            Err(e) => errors.extend(e.iter().map(|e| match e {
                berth_api::manifest::ParseError::Field { path, message, .. } => {
                    format!("{}: {path}: {message}", describe(v))
                }
                other => format!("{}: {other}", describe(v)),
            })),
        }
    }
    if !errors.is_empty() {
        return errors;
    }
    if !parsed.iter().any(|m| {
        matches!(
            m,
            berth_api::manifest::Manifest::NodePool(_)
                | berth_api::manifest::Manifest::NodePoolV1beta1(_)
        )
    }) {
        return vec![
            "no NodePool in the manifests: Berth launches nodes only for NodePools (see examples/ and docs/simulate.md)"
                .to_owned(),
        ];
    }
    match berth_api::convert::to_v1(parsed) {
        Ok(_) => Vec::new(),
        Err(e) => e.iter().map(ToString::to_string).collect(),
    }
}

/// Pods the report counts: the user's workloads, not DaemonSet pods.
fn counted(p: &Pod) -> bool {
    !p.metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.kind == "DaemonSet")
}

pub fn run(o: Options) -> anyhow::Result<Outcome> {
    let manifests = crate::sandbox::read_manifests(&o.files)?;
    let mut errors = check_karpenter(&manifests);
    let schedule = match schedule(manifests, o.duration) {
        Ok(s) => Some(s),
        Err(e) => {
            errors.extend(e);
            None
        }
    };
    if let Some(report) = &o.report
        && report
            .parent()
            .is_some_and(|d| !d.as_os_str().is_empty() && !d.is_dir())
    {
        errors.push(format!(
            "--report {}: its directory does not exist",
            report.display()
        ));
    }
    let Some(schedule) = schedule.filter(|_| errors.is_empty()) else {
        anyhow::bail!("{}", errors.join("\n"));
    };
    let catalog = crate::read_catalog(o.catalog.as_deref())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    crate::init_logs("error");
    let later = schedule
        .arrivals
        .iter()
        .filter(|a| a.at >= o.duration)
        .count();
    // NB: with -o json, stdout carries the JSON only.
    macro_rules! say {
        ($($t:tt)*) => {
            if o.json { eprintln!($($t)*) } else { println!($($t)*) }
        };
    }
    say!(
        "Berth simulate: {} objects at the start, {} arrivals, {} simulated in about {:.0} s ({}× speed).",
        schedule.initial.len(),
        schedule.arrivals.len() - later,
        hms(o.duration),
        o.duration.as_secs_f64() / o.speed,
        o.speed
    );
    if later > 0 {
        say!("  ({later} arrivals fall after the window and will not happen.)");
    }
    say!(
        "  kubeconfig {} (look around while it runs)",
        o.kubeconfig.display()
    );
    say!("");
    let outcome = runtime.block_on(crate::play::play(Scenario {
        manifests: schedule.initial,
        arrivals: schedule.arrivals,
        duration: o.duration,
        speed: o.speed,
        boot_delay: o.boot_delay,
        kubeconfig: o.kubeconfig.clone(),
        catalog_path: o.catalog.clone(),
        catalog,
        counted: Box::new(counted),
        progress_to_stderr: o.json,
    }))?;
    if o.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&crate::play::summary_json(&outcome))?
        );
    } else {
        print_summary(&outcome, "arrivals");
    }
    if let Some(path) = &o.report {
        let title = o
            .files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        std::fs::write(path, crate::report::html(&outcome, &title))
            .map_err(|e| anyhow::anyhow!("--report {}: {e}", path.display()))?;
        println!("  report written to {}", path.display());
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn min(m: u64) -> Duration {
        Duration::from_secs(60 * m)
    }

    #[test]
    fn objects_without_a_schedule_exist_at_the_start() {
        let pool =
            json!({"apiVersion": "karpenter.sh/v1", "kind": "NodePool", "metadata": {"name": "a"}});
        let s = schedule(vec![pool.clone()], min(60)).unwrap();
        assert_eq!(s.initial, vec![pool]);
        assert!(s.arrivals.is_empty());
    }

    #[test]
    fn arrivals_repeat_until_the_window_ends_with_numbered_names() {
        let job = json!({"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "ci", "namespace": "gitlab",
                "annotations": {ARRIVE_AT: "5m", REPEAT_EVERY: "20m"}}});
        let s = schedule(vec![job], min(60)).unwrap();
        assert!(s.initial.is_empty());
        let got: Vec<(Duration, String)> = s
            .arrivals
            .iter()
            .map(|a| match &a.action {
                Action::Create(v) => (a.at, v["metadata"]["name"].as_str().unwrap().to_owned()),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (min(5), "ci".to_owned()),
                (min(25), "ci-2".to_owned()),
                (min(45), "ci-3".to_owned()),
            ]
        );
    }

    #[test]
    fn replicas_at_scales_deployments_in_time_order() {
        let d = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "annotations": {REPLICAS_AT: "30m=2, 10m=8"}}});
        let s = schedule(vec![d.clone()], min(60)).unwrap();
        assert_eq!(s.initial, vec![d]);
        let scales: Vec<(Duration, i64, String)> = s
            .arrivals
            .iter()
            .map(|a| match &a.action {
                Action::Scale {
                    replicas,
                    namespace,
                    ..
                } => (a.at, *replicas, namespace.clone()),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            scales,
            vec![
                (min(10), 8, "default".to_owned()),
                (min(30), 2, "default".to_owned())
            ]
        );
    }

    #[test]
    fn bad_annotations_are_all_reported_with_the_object_and_field() {
        let bad = vec![
            json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "p", "namespace": "ci", "annotations": {ARRIVE_AT: "soon"}}}),
            json!({"apiVersion": "batch/v1", "kind": "Job",
                "metadata": {"name": "j", "annotations": {REPLICAS_AT: "10m=x"}}}),
            json!({"apiVersion": "batch/v1", "kind": "Job",
                "metadata": {"name": "k", "annotations": {REPEAT_EVERY: "0s"}}}),
        ];
        let errors = schedule(bad, min(60)).unwrap_err();
        assert_eq!(errors.len(), 4, "{errors:#?}");
        assert!(
            errors[0]
                .starts_with("Pod ci/p: metadata.annotations[sim.berth.dev/arrive-at]: \"soon\""),
            "{}",
            errors[0]
        );
        assert!(
            errors[1].contains(
                "Job j: metadata.annotations[sim.berth.dev/replicas-at]: only a Deployment"
            ),
            "{}",
            errors[1]
        );
        assert!(
            errors[2].contains("\"10m=x\" is not <time>=<replicas>"),
            "{}",
            errors[2]
        );
        assert!(
            errors[3].contains(
                "Job k: metadata.annotations[sim.berth.dev/repeat-every]: must be longer than 0s"
            ),
            "{}",
            errors[3]
        );
    }

    #[test]
    fn karpenter_objects_are_validated_and_a_node_pool_is_needed() {
        let class = json!({"apiVersion": "karpenter.k8s.aws/v1", "kind": "EC2NodeClass",
            "metadata": {"name": "default"},
            "spec": {"role": "r", "amiSelectorTerms": [{"alias": "al2023@latest"}],
                "subnetSelectorTerms": [{"tags": {"a": "b"}}],
                "securityGroupSelectorTerms": [{"tags": {"a": "b"}}]}});
        let errors = check_karpenter(std::slice::from_ref(&class));
        assert!(errors[0].starts_with("no NodePool"), "{errors:?}");
        let pool = json!({"apiVersion": "karpenter.sh/v1", "kind": "NodePool",
            "metadata": {"name": "p"},
            "spec": {"weight": 0, "template": {"spec": {"nodeClassRef":
                {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "default"},
                "requirements": []}}}});
        let errors = check_karpenter(&[class, pool]);
        assert!(
            errors.iter().any(|e| e.contains("spec.weight")),
            "{errors:?}"
        );
    }
}
