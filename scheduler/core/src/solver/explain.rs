//! Reasons: why no NodePool can host a pod.

use super::packing::remaining_for;
use super::plan::{NodePoolInput, SchedulingInput};
use super::prepare::{PodInfo, PoolType, PreparedPool};
use crate::model::{Pod, Resources, resource};
use crate::pod::{self, fits, untolerated};
use crate::quantity::Milli;

fn resource_amount(name: &str, milli: i64) -> String {
    match name {
        resource::CPU => format!("{}", (milli as f64 / 1000.0 * 100.0).round() / 100.0),
        resource::PODS | resource::NODES => format!("{}", milli / 1000),
        _ => Milli(milli).to_string(),
    }
}

/// Why no NodePool can host `p`: one line naming the constraint and the numbers.
pub(super) fn explain(
    input: &SchedulingInput,
    pools: &[PreparedPool],
    charged: &[Resources],
    p: &Pod,
    info: &PodInfo,
    topology_keys: &[String],
) -> String {
    if pools.is_empty() {
        return "no NodePool exists".to_owned();
    }
    let mut reasons: Vec<(String, String)> = Vec::new();
    let mut taint_blocked: Vec<String> = Vec::new();
    for (pool_idx, pool) in pools.iter().enumerate() {
        let npi = &input.node_pools[pool.input];
        let np = &npi.node_pool;
        let reason = if !np.ready {
            format!(
                "NodePool {} is not ready: {}",
                np.name,
                if np.not_ready_reason.is_empty() {
                    "no reason given"
                } else {
                    &np.not_ready_reason
                }
            )
        } else if let Some(t) = untolerated(&p.tolerations, &np.taints) {
            taint_blocked.push(pod::taint_display(t));
            format!(
                "NodePool {} has taint {} that the pod does not tolerate",
                np.name,
                pod::taint_display(t)
            )
        } else if pool.types.is_empty() {
            format!(
                "NodePool {} allows no instance type with an available offering",
                np.name
            )
        } else {
            explain_pool(pool, &charged[pool_idx], npi, info, topology_keys)
        };
        reasons.push((np.name.clone(), reason));
    }
    if taint_blocked.len() == pools.len() {
        taint_blocked.sort();
        taint_blocked.dedup();
        return format!("no NodePool tolerates taint {}", taint_blocked.join(" or "));
    }
    if reasons.len() == 1 {
        return reasons.remove(0).1;
    }
    reasons
        .into_iter()
        .map(|(_, r)| r)
        .collect::<Vec<_>>()
        .join("; ")
}

fn explain_pool(
    pool: &PreparedPool,
    charged: &Resources,
    npi: &NodePoolInput,
    info: &PodInfo,
    topology_keys: &[String],
) -> String {
    let np = &npi.node_pool;
    // Requirements.
    let compatible: Vec<&PoolType> = pool
        .types
        .iter()
        .filter(|t| {
            info.alternatives
                .iter()
                .any(|alt| t.reqs.admits(alt).is_ok())
        })
        .collect();
    if compatible.is_empty() {
        let alt = &info.alternatives[0];
        let conflict = pool
            .template
            .admits(alt)
            .err()
            .or_else(|| pool.types.first().and_then(|t| t.reqs.admits(alt).err()));
        return match conflict {
            Some(c) => format!("NodePool {} cannot satisfy requirement {}", np.name, c),
            None => format!(
                "NodePool {} has no instance type matching the pod's requirements",
                np.name
            ),
        };
    }
    // Resources.
    let fitting: Vec<&&PoolType> = compatible
        .iter()
        .filter(|t| fits(&info.requests, &t.room))
        .collect();
    if fitting.is_empty() {
        let (name, need) = info
            .requests
            .iter()
            .find(|(name, v)| compatible.iter().all(|t| *v > t.room.get(name)))
            .unwrap_or_else(|| info.requests.iter().next().unwrap_or((resource::CPU, 0)));
        let largest = compatible
            .iter()
            .map(|t| t.room.get(name))
            .max()
            .unwrap_or(0);
        return format!(
            "needs {} {name}; the largest type NodePool {} allows has {} allocatable",
            resource_amount(name, need),
            np.name,
            resource_amount(name, largest)
        );
    }
    // Limits.
    let remaining = remaining_for(pool, charged, &Resources::new());
    if let Some(rem) = remaining {
        for (name, limit) in pool.limits.iter() {
            let smallest = if name == resource::NODES {
                1000
            } else {
                fitting
                    .iter()
                    .map(|t| t.capacity.get(name))
                    .min()
                    .unwrap_or(0)
            };
            if smallest > rem.get(name) {
                let in_use = pool.used.get(name) + charged.get(name);
                return format!(
                    "NodePool {} limit {name}={} reached ({} in use)",
                    np.name,
                    resource_amount(name, limit),
                    resource_amount(name, in_use)
                );
            }
        }
    }
    if !topology_keys.is_empty() {
        return format!(
            "NodePool {}: topology spread or pod (anti-)affinity on {} cannot be satisfied",
            np.name,
            topology_keys.join(", ")
        );
    }
    format!(
        "NodePool {}: no instance type fits the pod beside its constraints (minValues or host ports)",
        np.name
    )
}
