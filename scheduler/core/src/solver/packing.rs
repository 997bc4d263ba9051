//! Open claims and bins: whether a pod fits, narrowing a claim's instance-type options as
//! pods join, limits and `minValues`.

use std::collections::BTreeSet;

use super::classes::View;
use super::domains::{claim_domains, pin_domains};
use super::prepare::{Bin, PodInfo, PoolType, PreparedPool};
use super::state::Cx;
use crate::labels;
use crate::model::{HostPort, Pod, Resources, resource};
use crate::pod::{self, add, fits, host_ports_conflict, untolerated};
use crate::requirements::{Requirements, ValueSet};
use crate::topology::{DomainId, Gate, Topology};

/// A new NodeClaim being packed.
pub(super) struct OpenClaim {
    pub(super) pool: usize,
    /// Intersection of the chosen requirement alternatives of its pods.
    pub(super) reqs: Requirements,
    /// Indexes into the pool's `types` still possible, in pool order.
    pub(super) options: Vec<usize>,
    pub(super) pods: Vec<usize>,
    pub(super) requests: Resources,
    pub(super) host_ports: Vec<HostPort>,
    /// What it charges against its pool's limits: per resource the max over its options.
    pub(super) charge: Resources,
    /// Per resource the most room any option has (a quick upper bound for fitting). It is
    /// recomputed only when the options halve: over a superset of the options it is still an
    /// upper bound.
    pub(super) max_room: Resources,
    /// How many options `max_room` was computed over.
    pub(super) max_room_of: usize,
    /// The claim's hostname domain (`new:<index>`), interned.
    pub(super) host_id: DomainId,
    /// Per topology key (by id), the domain the claim's requirements or its pool's template
    /// pin, if any (see [`State::refresh_domains`](super::state::State::refresh_domains)).
    pub(super) domain_ids: Vec<Option<DomainId>>,
    /// The room of the type this claim is filled toward (see [`best_shape`]): pods that
    /// would outgrow it go to other claims, so nodes stay the cheapest shape for the workload.
    pub(super) cap: Option<Resources>,
}

/// Among `options` of `pool` whose room holds `first`, the type that absorbs `demand` (in its
/// CPU:memory mix) at the lowest price per unit absorbed; its room.
pub(super) fn best_shape(
    pool: &PreparedPool,
    options: &[usize],
    first: &Resources,
    demand: &Resources,
) -> Option<Resources> {
    options
        .iter()
        .map(|&o| &pool.types[o])
        .filter(|t| t.price.is_finite() && fits(first, &t.room))
        .map(|t| {
            let absorb = [resource::CPU, resource::MEMORY]
                .iter()
                .filter(|r| demand.get(r) > 0)
                .map(|r| t.room.get(r).max(0) as f64 / demand.get(r) as f64)
                .fold(f64::INFINITY, f64::min);
            (
                if absorb.is_finite() {
                    t.price / absorb.max(1e-12)
                } else {
                    t.price
                },
                t,
            )
        })
        // Equal cost per unit (within rounding): the larger type, which fragments less.
        .min_by(|a, b| {
            if (a.0 - b.0).abs() <= 1e-9 * a.0.abs().max(b.0.abs()) {
                b.1.room
                    .get(resource::CPU)
                    .cmp(&a.1.room.get(resource::CPU))
            } else {
                a.0.total_cmp(&b.0)
            }
        })
        .map(|(_, t)| t.room.clone())
}

/// Whether no pending pod could still join the claim.
pub(super) fn claim_full(c: &OpenClaim, smallest: &Resources) -> bool {
    let mut need = c.requests.clone();
    add(&mut need, smallest);
    !fits(&need, &c.max_room)
}

/// Per resource, the largest room among `options`.
pub(super) fn max_room(pool: &PreparedPool, options: &[usize]) -> Resources {
    let mut out = Resources::new();
    for &o in options {
        for (name, v) in pool.types[o].room.iter() {
            if v > out.get(name) {
                out.set(name, v);
            }
        }
    }
    out
}

pub(super) fn bin_accepts(
    b: &Bin,
    p: &Pod,
    info: &PodInfo,
    view: &View,
    gate: &Gate,
    topo: &Topology,
) -> bool {
    b.usable
        && fits(&info.requests, &b.free)
        && untolerated(&p.tolerations, &b.taints).is_none()
        && (view.tolerate_prefer_no_schedule
            || pod::preferred_taint_penalty(&p.tolerations, &b.taints) == 0)
        && !host_ports_conflict(&p.host_ports, &b.host_ports)
        && view
            .alternatives
            .iter()
            .any(|alt| b.labels_reqs.admits(alt).is_ok())
        && gate.allows(topo, p, &|k| {
            b.domain_ids.get(k as usize).copied().flatten()
        })
}

/// Whether `t` has room for `requests` and fits in the limits left.
fn room_and_limits_ok(
    t: &PoolType,
    requests: &Resources,
    remaining: Option<&Resources>,
    limits: &Resources,
) -> bool {
    fits(requests, &t.room)
        && remaining.is_none_or(|rem| {
            limits.iter().all(|(name, _)| {
                let need = if name == resource::NODES {
                    1000
                } else {
                    t.capacity.get(name)
                };
                need <= rem.get(name)
            })
        })
}

/// Whether the pool type `t` can host a claim with requirements `reqs` and `requests`, within
/// the limits left (`remaining`).
fn type_ok(
    t: &PoolType,
    reqs: &Requirements,
    requests: &Resources,
    remaining: Option<&Resources>,
    limits: &Resources,
) -> bool {
    room_and_limits_ok(t, requests, remaining, limits) && t.reqs.admits(reqs).is_ok()
}

/// Limits left for one claim of `pool`: limit − used − what other claims charge.
pub(super) fn remaining_for(
    pool: &PreparedPool,
    charged: &Resources,
    own_charge: &Resources,
) -> Option<Resources> {
    if pool.limits.is_empty() {
        return None;
    }
    Some(
        pool.limits
            .iter()
            .map(|(name, limit)| {
                (
                    name.to_owned(),
                    limit - pool.used.get(name) - charged.get(name) + own_charge.get(name),
                )
            })
            .collect(),
    )
}

/// Tries to add pod `pi` to `claim`, narrowing its options and, for
/// topology constraints, pinning the domains; leaves it untouched on failure.
#[allow(clippy::too_many_arguments)]
pub(super) fn try_add(
    cx: &Cx<'_>,
    claim: &mut OpenClaim,
    charged: &mut [Resources],
    p: &Pod,
    pi: usize,
    info: &PodInfo,
    view: &View,
    gate: &Gate,
    topo: &Topology,
    respect_cap: bool,
) -> bool {
    let pool = &cx.pools[claim.pool];
    let np = &cx.input.node_pools[pool.input].node_pool;
    if untolerated(&p.tolerations, &np.taints).is_some()
        || (!view.tolerate_prefer_no_schedule
            && pod::preferred_taint_penalty(&p.tolerations, &np.taints) > 0)
        || host_ports_conflict(&p.host_ports, &claim.host_ports)
    {
        return false;
    }
    // Quick refusals before narrowing options: no option has room, or a constraint on a
    // domain the claim already has fails.
    if !claim.requests.fits_with(&info.requests, &claim.max_room)
        || (respect_cap
            && claim
                .cap
                .as_ref()
                .is_some_and(|cap| !claim.requests.fits_with(&info.requests, cap)))
    {
        return false;
    }
    if !gate.allows_known(topo, p, &claim_domains(claim, cx.host_key)) {
        return false;
    }
    let mut requests = claim.requests.clone();
    add(&mut requests, &info.requests);
    let owned_keys = &view.pin_keys;
    let remaining = remaining_for(pool, &charged[claim.pool], &claim.charge);
    // Keys whose domain must be pinned (hostname is the claim itself).
    let keys: Vec<&str> = owned_keys
        .iter()
        .map(String::as_str)
        .filter(|k| *k != labels::HOSTNAME)
        .collect();
    // Fast path: a pod that adds no requirement and needs no domain the claim has not pinned
    // already leaves the claim's requirements as they are, so only room and limits narrow
    // the options.
    let pinned = {
        let domains = claim_domains(claim, cx.host_key);
        view.pin_key_ids.iter().all(|&k| domains(k).is_some())
    };
    let unconstrained = view.alternatives.iter().any(Requirements::is_empty);
    if unconstrained && pinned {
        let options: Vec<usize> = claim
            .options
            .iter()
            .copied()
            .filter(|&o| {
                room_and_limits_ok(&pool.types[o], &requests, remaining.as_ref(), &pool.limits)
            })
            .collect();
        if !options.is_empty()
            && min_values_hold(&claim.reqs, pool, &options)
            && gate.allows(topo, p, &claim_domains(claim, cx.host_key))
        {
            let reqs = std::mem::take(&mut claim.reqs);
            commit_add(claim, pool, charged, reqs, options, requests, p, pi);
            return true;
        }
    }
    for alt in &view.alternatives {
        if unconstrained && pinned && alt.is_empty() {
            continue; // tried above
        }
        let Ok(reqs) = claim.reqs.intersect(alt) else {
            continue;
        };
        let options: Vec<usize> = claim
            .options
            .iter()
            .copied()
            .filter(|&o| {
                type_ok(
                    &pool.types[o],
                    &reqs,
                    &requests,
                    remaining.as_ref(),
                    &pool.limits,
                )
            })
            .collect();
        if options.is_empty() {
            continue;
        }
        let Some((reqs, options)) = pin_domains(
            pool,
            reqs,
            options,
            &keys,
            p,
            view,
            gate,
            topo,
            claim.host_id,
        ) else {
            continue;
        };
        if !min_values_hold(&reqs, pool, &options) {
            continue;
        }
        commit_add(claim, pool, charged, reqs, options, requests, p, pi);
        return true;
    }
    false
}

/// Books a pod on a claim with its new requirements and options.
#[allow(clippy::too_many_arguments)]
fn commit_add(
    claim: &mut OpenClaim,
    pool: &PreparedPool,
    charged: &mut [Resources],
    reqs: Requirements,
    options: Vec<usize>,
    requests: Resources,
    p: &Pod,
    pi: usize,
) {
    if options.len() != claim.options.len() || claim.pods.is_empty() {
        let charge = charge_of(pool, &options);
        let total = &mut charged[claim.pool];
        pod::sub(total, &claim.charge);
        add(total, &charge);
        claim.charge = charge;
        if claim.pods.is_empty() || options.len() * 2 <= claim.max_room_of {
            claim.max_room = max_room(pool, &options);
            claim.max_room_of = options.len();
        }
    }
    claim.reqs = reqs;
    claim.options = options;
    claim.requests = requests;
    claim.pods.push(pi);
    claim.host_ports.extend(p.host_ports.iter().cloned());
}

/// Per limited resource, the largest capacity among the options (the worst case of a launch).
fn charge_of(pool: &PreparedPool, options: &[usize]) -> Resources {
    let mut charge = Resources::new();
    for (name, _) in pool.limits.iter() {
        let worst = if name == resource::NODES {
            1000
        } else {
            options
                .iter()
                .map(|&o| pool.types[o].capacity.get(name))
                .max()
                .unwrap_or(0)
        };
        charge.set(name, worst);
    }
    charge
}

/// Karpenter's `minValues`: enough distinct values of each such key must remain among the options.
fn min_values_hold(reqs: &Requirements, pool: &PreparedPool, options: &[usize]) -> bool {
    let keys: Vec<(&str, u32)> = pool
        .template
        .iter()
        .chain(reqs.iter())
        .filter_map(|(k, v)| v.min_values.map(|m| (k, m)))
        .collect();
    keys.into_iter().all(|(key, min)| {
        let mut values: BTreeSet<&str> = BTreeSet::new();
        for &o in options {
            if let Some(vs) = pool.types[o]
                .reqs
                .get(key)
                .and_then(ValueSet::finite_values)
            {
                let wanted = reqs.get(key);
                values.extend(
                    vs.iter()
                        .map(String::as_str)
                        .filter(|v| wanted.is_none_or(|w| w.allows(Some(v)))),
                );
            }
        }
        values.len() >= min as usize
    })
}
