//! Instance type and offering selection: the cheapest offerings, and a packed claim turned
//! into a [`NewNodeClaim`] with its instance types cheapest first.

use std::collections::BTreeSet;

use super::packing::OpenClaim;
use super::plan::{InstanceTypeOption, MAX_INSTANCE_TYPES, NewNodeClaim, SchedulingInput};
use super::prepare::{PoolType, PreparedPool};
use crate::labels;
use crate::model::{CapacityType, InstanceType};
use crate::pod::add;
use crate::requirements::{Requirements, ValueSet};

/// The cheapest available offering of `it` that `reqs` allow: (price, zone, capacity type).
pub(super) fn cheapest_offering(
    it: &InstanceType,
    reqs: &Requirements,
) -> Option<(f64, String, CapacityType)> {
    cheapest_offering_in(
        it,
        reqs.get(labels::TOPOLOGY_ZONE),
        reqs.get(labels::CAPACITY_TYPE),
    )
}

/// The cheapest available offering in the allowed zones and capacity types (`None`: any).
fn cheapest_offering_in(
    it: &InstanceType,
    zones: Option<&ValueSet>,
    capacity_types: Option<&ValueSet>,
) -> Option<(f64, String, CapacityType)> {
    cheapest_offering_ref(it, zones, capacity_types)
        .map(|o| (o.price, o.zone.clone(), o.capacity_type))
}

fn cheapest_offering_ref<'a>(
    it: &'a InstanceType,
    zones: Option<&ValueSet>,
    capacity_types: Option<&ValueSet>,
) -> Option<&'a crate::model::Offering> {
    it.offerings
        .iter()
        .filter(|o| o.available)
        .filter(|o| zones.is_none_or(|z| z.allows(Some(&o.zone))))
        .filter(|o| capacity_types.is_none_or(|c| c.allows(Some(o.capacity_type.as_str()))))
        .min_by(|a, b| {
            a.price
                .total_cmp(&b.price)
                .then_with(|| a.zone.cmp(&b.zone))
                .then_with(|| a.capacity_type.cmp(&b.capacity_type))
        })
}

/// What both sets of requirements allow for one key (`None`: neither constrains it);
/// borrowed when only one does.
pub(super) fn key_values<'a>(
    a: &'a Requirements,
    b: &'a Requirements,
    key: &str,
) -> Option<std::borrow::Cow<'a, ValueSet>> {
    use std::borrow::Cow;
    match (a.get(key), b.get(key)) {
        (Some(x), Some(y)) if x == y => Some(Cow::Borrowed(x)),
        (Some(x), Some(y)) => Some(Cow::Owned(x.intersect(y))),
        (Some(x), None) | (None, Some(x)) => Some(Cow::Borrowed(x)),
        (None, None) => None,
    }
}

/// A price ordered by `f64::total_cmp`.
#[derive(PartialEq)]
struct PriceKey(f64);

impl Eq for PriceKey {}

impl PartialOrd for PriceKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for PriceKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

pub(super) fn finish_claim(
    c: &OpenClaim,
    pools: &[PreparedPool],
    input: &SchedulingInput,
) -> NewNodeClaim {
    let pool = &pools[c.pool];
    let npi = &input.node_pools[pool.input];
    let np = &npi.node_pool;
    let reqs = pool
        .template
        .intersect(&c.reqs)
        .unwrap_or_else(|_| pool.template.clone());
    // The options already satisfy the claim's requirements (they were narrowed as pods came):
    // only the zone and capacity type, which pick the offering, need intersecting.
    type Values<'a> = Option<std::borrow::Cow<'a, ValueSet>>;
    let mut options: Vec<(&crate::model::Offering, &PoolType, Values<'_>, Values<'_>)> = Vec::new();
    // The options come in the pool's price order, and a type's pool price is a lower bound of
    // its price here: once MAX_INSTANCE_TYPES are found, a type whose pool price is above the
    // dearest of the best ones found cannot enter.
    let mut best = std::collections::BinaryHeap::new();
    for &o in &c.options {
        let t = &pool.types[o];
        if best.len() >= MAX_INSTANCE_TYPES
            && best
                .peek()
                .is_some_and(|&PriceKey(dearest)| t.price > dearest)
        {
            break;
        }
        let it = &npi.instance_types[t.index];
        let zones = key_values(&t.reqs, &reqs, labels::TOPOLOGY_ZONE);
        let capacity_types = key_values(&t.reqs, &reqs, labels::CAPACITY_TYPE);
        if let Some(offering) =
            cheapest_offering_ref(it, zones.as_deref(), capacity_types.as_deref())
        {
            best.push(PriceKey(offering.price));
            if best.len() > MAX_INSTANCE_TYPES {
                best.pop();
            }
            options.push((offering, t, zones, capacity_types));
        }
    }
    let name = |t: &PoolType| npi.instance_types[t.index].name.as_str();
    options.sort_by(|a, b| {
        a.0.price
            .total_cmp(&b.0.price)
            .then_with(|| name(a.1).cmp(name(b.1)))
    });
    options.truncate(MAX_INSTANCE_TYPES);
    let chosen: Vec<InstanceTypeOption> = options
        .iter()
        .map(|(o, t, ..)| InstanceTypeOption {
            name: name(t).to_owned(),
            price: o.price,
            zone: o.zone.clone(),
            capacity_type: o.capacity_type,
        })
        .collect();
    let mut requirements_set = reqs.clone();
    requirements_set.add(
        labels::INSTANCE_TYPE,
        ValueSet::one_of(chosen.iter().map(|o| o.name.clone())),
    );
    let mut zones = BTreeSet::new();
    let mut capacity_types = BTreeSet::new();
    for (_, _, z, ct) in &options {
        if let Some(values) = z.as_deref().and_then(ValueSet::finite_values) {
            zones.extend(values.iter().cloned());
        }
        if let Some(values) = ct.as_deref().and_then(ValueSet::finite_values) {
            capacity_types.extend(values.iter().cloned());
        }
    }
    requirements_set.add(labels::TOPOLOGY_ZONE, ValueSet::one_of(zones));
    requirements_set.add(labels::CAPACITY_TYPE, ValueSet::one_of(capacity_types));
    let mut requests = c.requests.clone();
    if let Some((_, t, _, _)) = options.first() {
        add(&mut requests, &t.daemon_overhead);
    }
    let mut labels = np.labels.clone();
    labels.extend(requirements_set.labels());
    NewNodeClaim {
        node_pool: np.name.clone(),
        requirements: requirements_set.to_requirements(),
        labels,
        taints: np.taints.clone(),
        startup_taints: np.startup_taints.clone(),
        price: chosen.first().map_or(0.0, |o| o.price),
        instance_types: chosen,
        pods: c.pods.iter().map(|&i| input.pods[i].key.clone()).collect(),
        requests,
    }
}
