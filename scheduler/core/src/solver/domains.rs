//! Topology domains of bins and claims: recording placements and pinning the domains a
//! claim takes.

use std::borrow::Cow;
use std::collections::BTreeSet;

use super::classes::View;
use super::packing::OpenClaim;
use super::prepare::{Bin, PreparedPool};
use crate::labels;
use crate::model::{Namespace, Pod};
use crate::requirements::{Requirements, ValueSet};
use crate::topology::{DomainId, Gate, KeyId, NodeFacts, Topology};

/// A claim's requirements with its pool's template.
pub(super) fn claim_requirements(pools: &[PreparedPool], c: &OpenClaim) -> Requirements {
    pools[c.pool]
        .template
        .intersect(&c.reqs)
        .unwrap_or_else(|_| c.reqs.clone())
}

/// The domain of new claim `index` for `key`: itself for hostname, else a single value.
pub(super) fn claim_domain<'a>(
    reqs: &'a Requirements,
    index: usize,
    key: &str,
) -> Option<Cow<'a, str>> {
    if key == labels::HOSTNAME {
        Some(Cow::Owned(format!("new:{index}")))
    } else {
        reqs.get(key).and_then(ValueSet::single).map(Cow::Borrowed)
    }
}

/// Records `p` running on an existing node or in-flight claim.
pub(super) fn record_on_bin(topo: &mut Topology, p: &Pod, namespaces: &[Namespace], b: &Bin) {
    let facts = NodeFacts {
        requirements: &b.labels_reqs,
        claim: b.node.is_none(),
        taints: &b.taints,
        domain_of: &|k| b.domains.get(k).map(|d| Cow::Borrowed(d.as_str())),
    };
    topo.record(p, namespaces, &facts);
}

/// The domains of an open claim, by key id (hostname: the claim itself).
pub(super) fn claim_domains(
    c: &OpenClaim,
    host_key: Option<KeyId>,
) -> impl Fn(KeyId) -> Option<DomainId> {
    move |k| {
        if Some(k) == host_key {
            Some(c.host_id)
        } else {
            c.domain_ids.get(k as usize).copied().flatten()
        }
    }
}

/// Domains a claim could still take for `key`, given its options and requirements.
fn candidate_domains(
    pool: &PreparedPool,
    options: &[usize],
    reqs: &Requirements,
    key: &str,
) -> Vec<String> {
    let mut out = BTreeSet::new();
    if let Some(v) = pool.template.get(key).and_then(ValueSet::single) {
        out.insert(v.to_owned());
    }
    for &o in options {
        let allowed = pool.types[o]
            .reqs
            .get(key)
            .and_then(ValueSet::finite_values);
        if let Some(values) = allowed {
            out.extend(
                values
                    .iter()
                    .filter(|v| reqs.get(key).is_none_or(|w| w.allows(Some(v))))
                    .cloned(),
            );
        }
    }
    out.into_iter().collect()
}

/// Pins each topology key to one domain that keeps every constraint (trying domains from the
/// least loaded), then checks the constraints; `None` if no choice works.
#[allow(clippy::too_many_arguments)]
pub(super) fn pin_domains(
    pool: &PreparedPool,
    reqs: Requirements,
    options: Vec<usize>,
    keys: &[&str],
    p: &Pod,
    view: &View,
    gate: &Gate,
    topo: &Topology,
    host_id: DomainId,
) -> Option<(Requirements, Vec<usize>)> {
    let Some((key, rest)) = keys.split_first() else {
        let merged = pool
            .template
            .intersect(&reqs)
            .unwrap_or_else(|_| reqs.clone());
        let host_key = topo.keys.get(labels::HOSTNAME);
        return gate
            .allows(topo, p, &|k| {
                if Some(k) == host_key {
                    Some(host_id)
                } else {
                    merged
                        .get(topo.keys.name(k))
                        .and_then(ValueSet::single)
                        .map(|d| topo.domain(d))
                }
            })
            .then_some((reqs, options));
    };
    let mut candidates = candidate_domains(pool, &options, &reqs, key);
    // Least-loaded first (for spread), by the first constraint on the key.
    if let Some(c) = view
        .constraints
        .iter()
        .find(|c| topo.groups[c.group()].key.topology_key == *key)
    {
        let g = &topo.groups[c.group()];
        candidates.sort_by_key(|d| (g.count(topo.domain(d)), d.clone()));
    }
    for d in candidates {
        let mut pinned = reqs.clone();
        pinned.add(key, ValueSet::one_of([d.clone()]));
        if pinned.get(key).is_some_and(ValueSet::is_unsatisfiable) {
            continue;
        }
        let narrowed: Vec<usize> = options
            .iter()
            .copied()
            // The options already admit every other key: only the pinned one can narrow them.
            .filter(|&o| {
                pool.types[o]
                    .reqs
                    .get(key)
                    .is_some_and(|vs| vs.allows(Some(&d)))
            })
            .collect();
        if narrowed.is_empty() {
            continue;
        }
        if let Some(found) = pin_domains(pool, pinned, narrowed, rest, p, view, gate, topo, host_id)
        {
            return Some(found);
        }
    }
    None
}
