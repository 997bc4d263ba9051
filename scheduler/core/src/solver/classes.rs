//! Pod classes: pods with identical scheduling needs, their views (preferences relaxed step
//! by step) and the topology domains they could go to.

use std::collections::BTreeSet;

use super::offering::key_values;
use super::plan::SchedulingInput;
use super::prepare::{Bin, PodInfo, PreparedPool};
use crate::labels;
use crate::model::{Namespace, Pod};
use crate::pod::untolerated;
use crate::requirements::{Requirements, ValueSet};
use crate::topology::{Constraint, DomainId, KeyId, Topology};

/// One way of scheduling a pod: its preferences, relaxed step by step (Karpenter's order:
/// preferred pod affinity, then preferred node affinity terms from the lightest, then
/// ScheduleAnyway spread, then tolerating PreferNoSchedule taints).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct View {
    pub(super) alternatives: Vec<Requirements>,
    pub(super) constraints: Vec<Constraint>,
    pub(super) tolerate_prefer_no_schedule: bool,
    /// Topology keys whose domain must be known on a node this pod joins (filled in once
    /// every class's constraints are registered).
    pub(super) pin_keys: Vec<String>,
    /// `pin_keys` but hostname, interned.
    pub(super) pin_key_ids: Vec<KeyId>,
    /// The owned topology groups the pod counts in (filled in with `pin_keys`).
    pub(super) owner_groups: Vec<usize>,
}

/// What all pods of a class share.
pub(super) struct Class {
    pub(super) pods: Vec<usize>,
    pub(super) views: Vec<View>,
    /// Per view, per constraint: every domain the pod could go to (sorted).
    pub(super) universes: Vec<Vec<Vec<DomainId>>>,
    /// Placement changes what later pods of the class may do (topology), so no cursor.
    pub(super) topology: bool,
}

const NEW_NODE_DOMAIN: &str = "\u{0}new-node";

pub(super) fn views_for(
    p: &Pod,
    base: &[Requirements],
    topo: &mut Topology,
    namespaces: &[Namespace],
) -> Vec<View> {
    let mut preferred_terms: Vec<&crate::model::PreferredSchedulingTerm> = p
        .node_affinity
        .as_ref()
        .map(|a| a.preferred.iter().collect())
        .unwrap_or_default();
    // Heaviest kept longest: relax from the lightest.
    preferred_terms.sort_by_key(|t| std::cmp::Reverse(t.weight));
    let with_terms = |n: usize| -> Vec<Requirements> {
        base.iter()
            .map(|alt| {
                let mut alt = alt.clone();
                for t in &preferred_terms[..n] {
                    for r in &t.term.match_expressions {
                        alt.add(&r.key, ValueSet::from_requirement(r));
                    }
                }
                alt
            })
            .collect()
    };
    let required = {
        let mut c = topo.spread_constraints(p, false);
        c.extend(topo.affinity_constraints(p, false, namespaces));
        c
    };
    let mut all_spread = topo.spread_constraints(p, true);
    let with_preferred_affinity = {
        let mut c = all_spread.clone();
        c.extend(topo.affinity_constraints(p, true, namespaces));
        c
    };
    all_spread.extend(topo.affinity_constraints(p, false, namespaces));
    let mut views = vec![View {
        alternatives: with_terms(preferred_terms.len()),
        constraints: with_preferred_affinity,
        tolerate_prefer_no_schedule: false,
        pin_keys: vec![],
        pin_key_ids: vec![],
        owner_groups: vec![],
    }];
    views.push(View {
        alternatives: with_terms(preferred_terms.len()),
        constraints: all_spread.clone(),
        tolerate_prefer_no_schedule: false,
        pin_keys: vec![],
        pin_key_ids: vec![],
        owner_groups: vec![],
    });
    for n in (0..preferred_terms.len()).rev() {
        views.push(View {
            alternatives: with_terms(n),
            constraints: all_spread.clone(),
            tolerate_prefer_no_schedule: false,
            pin_keys: vec![],
            pin_key_ids: vec![],
            owner_groups: vec![],
        });
    }
    views.push(View {
        alternatives: base.to_vec(),
        constraints: required.clone(),
        tolerate_prefer_no_schedule: false,
        pin_keys: vec![],
        pin_key_ids: vec![],
        owner_groups: vec![],
    });
    views.push(View {
        alternatives: base.to_vec(),
        constraints: required,
        tolerate_prefer_no_schedule: true,
        pin_keys: vec![],
        pin_key_ids: vec![],
        owner_groups: vec![],
    });
    views.dedup();
    views
}

/// Every domain of `key` the pod could be placed in under `view`.
///
/// Only the pod's required node constraints narrow it (`alternatives`), not its preferences:
/// Kubernetes counts spread domains over every node the pod may run on.
pub(super) fn universe(
    input: &SchedulingInput,
    pools: &[PreparedPool],
    bins: &[Bin],
    p: &Pod,
    alternatives: &[Requirements],
    key: &str,
    c: &Constraint,
) -> BTreeSet<String> {
    let spread = input_spread(p, c, key);
    let mut out = BTreeSet::new();
    for b in bins.iter().filter(|b| b.usable) {
        let (honor_affinity, honor_taints) = spread;
        if honor_affinity
            && !alternatives
                .iter()
                .any(|alt| b.labels_reqs.admits(alt).is_ok())
        {
            continue;
        }
        if honor_taints && untolerated(&p.tolerations, &b.taints).is_some() {
            continue;
        }
        if let Some(d) = b.domains.get(key) {
            out.insert(d.clone());
        }
    }
    for pool in pools {
        let np = &input.node_pools[pool.input].node_pool;
        if untolerated(&p.tolerations, &np.taints).is_some() {
            continue;
        }
        if key == labels::HOSTNAME {
            if !pool.types.is_empty() {
                out.insert(NEW_NODE_DOMAIN.to_owned());
            }
            continue;
        }
        for t in &pool.types {
            for alt in alternatives {
                if t.reqs.admits(alt).is_ok()
                    && let Some(values) = key_values(&t.reqs, alt, key)
                    && let Some(values) = values.as_ref().finite_values()
                {
                    out.extend(values.iter().cloned());
                }
            }
        }
    }
    out
}

/// The node inclusion policies of the spread constraint behind `c` (affinity: honour both).
pub(super) fn input_spread(p: &Pod, c: &Constraint, key: &str) -> (bool, bool) {
    use crate::model::NodeInclusionPolicy::Honor;
    match c {
        Constraint::Spread { .. } => p
            .topology_spread
            .iter()
            .find(|s| s.topology_key == key)
            .map_or((true, false), |s| {
                (
                    s.node_affinity_policy == Honor,
                    s.node_taints_policy == Honor,
                )
            }),
        _ => (true, false),
    }
}

/// Everything that makes two pods schedule differently, as a string.
pub(super) fn class_key(p: &Pod, info: &PodInfo, selector_keys: &BTreeSet<String>) -> String {
    // Labels matter only where some selector reads them (spread, affinity); keeping only
    // those keys keeps classes large.
    let labels: Vec<(&String, &String)> = p
        .labels
        .iter()
        .filter(|(k, _)| selector_keys.contains(*k))
        .collect();
    format!(
        "{}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{}|{:?}|{:?}|{:?}|{:?}",
        p.priority,
        info.requests,
        p.node_selector,
        p.node_affinity,
        p.tolerations,
        p.volume_requirements,
        p.host_ports,
        p.key.namespace,
        labels,
        p.topology_spread,
        p.pod_affinity,
        p.pod_anti_affinity,
    )
}

/// Every label key a spread or affinity selector of these pods reads.
pub(super) fn selector_keys<'a>(pods: impl Iterator<Item = &'a Pod>) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    let mut add = |sel: Option<&crate::model::LabelSelector>, extra: &[String]| {
        if let Some(sel) = sel {
            keys.extend(sel.match_labels.keys().cloned());
            keys.extend(sel.match_expressions.iter().map(|e| e.key.clone()));
        }
        keys.extend(extra.iter().cloned());
    };
    for p in pods {
        for c in &p.topology_spread {
            add(c.label_selector.as_ref(), &c.match_label_keys);
        }
        for a in [&p.pod_affinity, &p.pod_anti_affinity]
            .into_iter()
            .flatten()
        {
            for t in a.required.iter().chain(a.preferred.iter().map(|w| &w.term)) {
                add(t.label_selector.as_ref(), &t.match_label_keys);
                add(None, &t.mismatch_label_keys);
            }
        }
    }
    keys
}
