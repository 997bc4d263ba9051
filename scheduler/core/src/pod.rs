//! What scheduling needs to know about a pod, computed once: its effective requests, its
//! node requirements (node selector, required node affinity, volume topology) and whether it
//! tolerates a set of taints.

use crate::model::{
    HostPort, Pod, Resources, Taint, TaintEffect, Toleration, TolerationOperator, resource,
};
use crate::requirements::{Requirements, ValueSet};

/// A pod's requests as Kubernetes counts them: the larger of the largest init container (plus
/// the sidecars started before it) and the app containers plus all sidecars, plus the pod
/// overhead, plus one `pods` slot.
pub fn effective_requests(pod: &Pod) -> Resources {
    let mut sum_app = Resources::new();
    for c in &pod.containers {
        add(&mut sum_app, c);
    }
    // Sidecars run beside the app containers.
    let mut sidecars = Resources::new();
    let mut init_peak = Resources::new();
    for init in &pod.init_containers {
        if init.sidecar {
            add(&mut sidecars, &init.requests);
            max_into(&mut init_peak, &sidecars);
        } else {
            let mut during = sidecars.clone();
            add(&mut during, &init.requests);
            max_into(&mut init_peak, &during);
        }
    }
    add(&mut sum_app, &sidecars);
    let mut out = sum_app;
    max_into(&mut out, &init_peak);
    add(&mut out, &pod.overhead);
    out.set(resource::PODS, out.get(resource::PODS) + 1000);
    out
}

/// The DaemonSet that owns the pod, if one does.
pub fn daemon_set_owner(p: &Pod) -> Option<&str> {
    p.owner
        .as_ref()
        .filter(|o| o.kind == "DaemonSet")
        .map(|o| o.name.as_str())
}

/// `into += other`, per resource.
pub fn add(into: &mut Resources, other: &Resources) {
    into.add(other);
}

/// `into -= other`, per resource (may go negative).
pub fn sub(into: &mut Resources, other: &Resources) {
    into.sub(other);
}

fn max_into(into: &mut Resources, other: &Resources) {
    for (name, v) in other.iter() {
        if v > into.get(name) {
            into.set(name, v);
        }
    }
}

/// Whether `requests` fit in `available`: for every requested resource, enough is left.
pub fn fits(requests: &Resources, available: &Resources) -> bool {
    requests.fits_in(available)
}

/// The first resource that does not fit, with the amounts.
pub fn first_shortfall<'a>(
    requests: &'a Resources,
    available: &Resources,
) -> Option<(&'a str, i64, i64)> {
    requests
        .iter()
        .find(|(name, v)| *v > available.get(name))
        .map(|(name, v)| (name, v, available.get(name)))
}

/// Whether `toleration` tolerates `taint` (Kubernetes' rule).
pub fn tolerates_taint(toleration: &Toleration, taint: &Taint) -> bool {
    if toleration.effect.is_some_and(|e| e != taint.effect) {
        return false;
    }
    if toleration.key.is_empty() {
        return toleration.operator == TolerationOperator::Exists;
    }
    toleration.key == taint.key
        && match toleration.operator {
            TolerationOperator::Exists => true,
            TolerationOperator::Equal => toleration.value == taint.value,
        }
}

/// The first NoSchedule or NoExecute taint none of the tolerations tolerates.
/// (PreferNoSchedule never blocks.)
pub fn untolerated<'a>(tolerations: &[Toleration], taints: &'a [Taint]) -> Option<&'a Taint> {
    taints
        .iter()
        .filter(|t| t.effect != TaintEffect::PreferNoSchedule)
        .find(|t| !tolerations.iter().any(|tol| tolerates_taint(tol, t)))
}

/// Number of PreferNoSchedule taints not tolerated: a cost to avoid, not a bar.
pub fn preferred_taint_penalty(tolerations: &[Toleration], taints: &[Taint]) -> usize {
    taints
        .iter()
        .filter(|t| t.effect == TaintEffect::PreferNoSchedule)
        .filter(|t| !tolerations.iter().any(|tol| tolerates_taint(tol, t)))
        .count()
}

/// `key=value:Effect`, as kubectl prints taints.
pub fn taint_display(t: &Taint) -> String {
    let effect = t.effect.as_str();
    if t.value.is_empty() {
        format!("{}:{effect}", t.key)
    } else {
        format!("{}={}:{effect}", t.key, t.value)
    }
}

/// The alternatives a pod accepts for its node's labels: one `Requirements` per required
/// node-affinity term (an OR), each ANDed with the node selector and volume requirements.
pub fn requirement_alternatives(pod: &Pod) -> Vec<Requirements> {
    let mut base = Requirements::from_labels(&pod.node_selector);
    for r in &pod.volume_requirements {
        base.add(&r.key, ValueSet::from_requirement(r));
    }
    let terms: Vec<_> = pod
        .node_affinity
        .as_ref()
        .map(|a| a.required.iter().collect())
        .unwrap_or_default();
    if terms.is_empty() {
        return vec![base];
    }
    terms
        .into_iter()
        .map(|term| {
            let mut alt = base.clone();
            for r in &term.match_expressions {
                alt.add(&r.key, ValueSet::from_requirement(r));
            }
            alt
        })
        .collect()
}

/// Whether two sets of host ports conflict on one node.
pub fn host_ports_conflict(a: &[HostPort], b: &[HostPort]) -> bool {
    let wildcard = |ip: &str| ip.is_empty() || ip == "0.0.0.0" || ip == "::";
    a.iter().any(|x| {
        b.iter().any(|y| {
            x.port == y.port
                && x.protocol == y.protocol
                && (x.ip == y.ip || wildcard(&x.ip) || wildcard(&y.ip))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{InitContainer, Protocol};

    fn r(cpu: i64, mem: i64) -> Resources {
        Resources::new().with("cpu", cpu).with("memory", mem)
    }

    #[test]
    fn requests_follow_kubernetes() {
        let mut pod = Pod::new("ns", "p");
        pod.containers = vec![r(500, 100), r(250, 100)];
        assert_eq!(effective_requests(&pod), r(750, 200).with("pods", 1000));

        // A big init container dominates.
        pod.init_containers = vec![InitContainer {
            requests: r(2000, 50),
            sidecar: false,
        }];
        assert_eq!(effective_requests(&pod), r(2000, 200).with("pods", 1000));

        // Sidecars add to the app containers and to later init containers.
        pod.init_containers = vec![
            InitContainer {
                requests: r(100, 10),
                sidecar: true,
            },
            InitContainer {
                requests: r(1000, 10),
                sidecar: false,
            },
        ];
        // app: 750+100 = 850; init peak: 100 + 1000 = 1100.
        assert_eq!(effective_requests(&pod), r(1100, 210).with("pods", 1000));

        pod.overhead = r(50, 5);
        assert_eq!(effective_requests(&pod), r(1150, 215).with("pods", 1000));
    }

    #[test]
    fn tolerations() {
        let taint = Taint {
            key: "dedicated".into(),
            value: "gitlab-runner-auto".into(),
            effect: TaintEffect::NoSchedule,
        };
        let equal = Toleration {
            key: "dedicated".into(),
            operator: TolerationOperator::Equal,
            value: "gitlab-runner-auto".into(),
            effect: Some(TaintEffect::NoSchedule),
            toleration_seconds: None,
        };
        assert!(tolerates_taint(&equal, &taint));
        assert!(!tolerates_taint(
            &Toleration {
                value: "other".into(),
                ..equal.clone()
            },
            &taint
        ));
        assert!(!tolerates_taint(
            &Toleration {
                effect: Some(TaintEffect::NoExecute),
                ..equal.clone()
            },
            &taint
        ));
        assert!(tolerates_taint(
            &Toleration {
                effect: None,
                ..equal.clone()
            },
            &taint
        ));
        assert!(tolerates_taint(
            &Toleration {
                operator: TolerationOperator::Exists,
                value: String::new(),
                ..equal.clone()
            },
            &taint
        ));
        let all = Toleration {
            key: String::new(),
            operator: TolerationOperator::Exists,
            value: String::new(),
            effect: None,
            toleration_seconds: None,
        };
        assert!(tolerates_taint(&all, &taint));
        assert_eq!(untolerated(&[], std::slice::from_ref(&taint)), Some(&taint));
        let soft = Taint {
            effect: TaintEffect::PreferNoSchedule,
            ..taint.clone()
        };
        assert_eq!(untolerated(&[], std::slice::from_ref(&soft)), None);
        assert_eq!(preferred_taint_penalty(&[], &[soft]), 1);
        assert_eq!(
            taint_display(&taint),
            "dedicated=gitlab-runner-auto:NoSchedule"
        );
    }

    #[test]
    fn host_ports() {
        let p = |ip: &str, port, protocol| HostPort {
            ip: ip.into(),
            port,
            protocol,
        };
        assert!(host_ports_conflict(
            &[p("", 80, Protocol::Tcp)],
            &[p("10.0.0.1", 80, Protocol::Tcp)]
        ));
        assert!(!host_ports_conflict(
            &[p("", 80, Protocol::Tcp)],
            &[p("", 80, Protocol::Udp)]
        ));
        assert!(!host_ports_conflict(
            &[p("10.0.0.2", 80, Protocol::Tcp)],
            &[p("10.0.0.1", 80, Protocol::Tcp)]
        ));
        assert!(!host_ports_conflict(
            &[p("", 80, Protocol::Tcp)],
            &[p("", 81, Protocol::Tcp)]
        ));
    }
}
