//! The LP lower bound on the hourly price of new capacity (`../shared/design/BENCHMARKS.md`).
//!
//! Per NodePool, over the pods the plan put on its new NodeClaims:
//!
//! ```text
//! minimise Σ_t price_t · x_t
//! subject to Σ_t alloc_{t,r} · x_t ≥ Σ_pods request_r   for r in cpu, memory, pods, GPUs, ...
//!            Σ_{t fits one anti-affinity pod} x_t ≥ K   (the largest hostname anti-affinity
//!                                                      group's K pods need K distinct nodes)
//!            x_t ≥ 0
//! ```
//!
//! where `alloc` is allocatable less the DaemonSet pods each type would run. No packing can
//! cost less, so `cost / bound` measures waste (1.00 is perfect).

use std::collections::BTreeMap;

use berth_scheduler_core::labels;
use berth_scheduler_core::model::{ObjectKey, Pod, Resources};
use berth_scheduler_core::pod::{add, effective_requests, fits, sub};
use berth_scheduler_core::requirements::Requirements;
use berth_scheduler_core::solver::{Plan, SchedulingInput};
use good_lp::{Expression, ProblemVariables, Solution, SolverModel, microlp, variable};

pub fn lower_bound(input: &SchedulingInput, plan: &Plan) -> anyhow::Result<f64> {
    let pods: BTreeMap<&ObjectKey, &Pod> = input.pods.iter().map(|p| (&p.key, p)).collect();
    let mut total = 0.0;
    for npi in &input.node_pools {
        let np = &npi.node_pool;
        let placed: Vec<&Pod> = plan
            .new_node_claims
            .iter()
            .filter(|c| c.node_pool == np.name)
            .flat_map(|c| &c.pods)
            .filter_map(|k| pods.get(k).copied())
            .collect();
        if placed.is_empty() {
            continue;
        }
        let mut need = Resources::new();
        for p in &placed {
            add(&mut need, &effective_requests(p));
        }
        // Pods of one hostname anti-affinity group need distinct nodes; different groups may
        // share, so the bound needs as many nodes as the largest group has pods.
        let mut groups: BTreeMap<String, Vec<&Pod>> = BTreeMap::new();
        for p in &placed {
            for t in p
                .pod_anti_affinity
                .iter()
                .flat_map(|a| &a.required)
                .filter(|t| t.topology_key == labels::HOSTNAME)
            {
                groups
                    .entry(format!("{:?}", t.label_selector))
                    .or_default()
                    .push(p);
            }
        }
        let anti: Vec<&Pod> = groups
            .into_values()
            .max_by_key(Vec::len)
            .unwrap_or_default();
        let smallest_anti = anti
            .iter()
            .map(|p| effective_requests(p))
            .min_by_key(|r| (r.get("cpu"), r.get("memory")));

        let template = Requirements::from_requirements(&np.requirements);
        let mut vars = ProblemVariables::new();
        let mut objective = Expression::from(0.0);
        let mut supply: BTreeMap<String, Expression> = BTreeMap::new();
        let mut anti_nodes = Expression::from(0.0);
        for it in &npi.instance_types {
            let price = it
                .offerings
                .iter()
                .filter(|o| o.available)
                .filter(|o| {
                    template
                        .get(labels::TOPOLOGY_ZONE)
                        .is_none_or(|z| z.allows(Some(&o.zone)))
                })
                .filter(|o| {
                    template
                        .get(labels::CAPACITY_TYPE)
                        .is_none_or(|c| c.allows(Some(o.capacity_type.as_str())))
                })
                .map(|o| o.price)
                .min_by(f64::total_cmp);
            let type_reqs = Requirements::from_requirements(&it.requirements);
            let (Some(price), true) = (price, type_reqs.intersect(&template).is_ok()) else {
                continue;
            };
            let mut alloc = it.allocatable();
            for ds in &input.daemon_sets {
                sub(&mut alloc, &effective_requests(&ds.template));
            }
            let x = vars.add(variable().min(0.0));
            objective += price * x;
            for (name, _) in need.iter() {
                *supply
                    .entry(name.to_owned())
                    .or_insert_with(|| Expression::from(0.0)) +=
                    (alloc.get(name) as f64 / 1000.0) * x;
            }
            if smallest_anti.as_ref().is_some_and(|r| fits(r, &alloc)) {
                anti_nodes += x;
            }
        }
        let mut model = vars.minimise(objective.clone()).using(microlp);
        for (name, amount) in need.iter() {
            let expr = supply.remove(name).unwrap_or_else(|| Expression::from(0.0));
            model = model.with(expr.geq(amount as f64 / 1000.0));
        }
        if !anti.is_empty() {
            model = model.with(anti_nodes.geq(anti.len() as f64));
        }
        let solution = model.solve()?;
        total += solution.eval(&objective);
    }
    Ok(total)
}
