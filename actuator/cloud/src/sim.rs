//! The sim cloud: a real, in-memory [`CloudProvider`] over Berth's instance-type catalog.
//!
//! It keeps the contract the EC2 provider keeps (idempotent launches by NodeClaim name,
//! `NotFound` once gone, spot before on-demand, an insufficient-capacity cache that hides
//! offerings for a while) so that everything above it, the simulated cluster first of all,
//! behaves as it would on EC2. Instances boot after `boot_delay` and shut down after
//! `termination_delay`, both measured on the clock it is given (the simulated cluster
//! compresses time). Tests inject errors per method and offerings without capacity, and read
//! back every call.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use berth_catalog::Catalog;
use berth_scheduler_core::allocatable::KubeletSettings;
use berth_scheduler_core::cloud::{CloudError, UnavailableOffering};
use berth_scheduler_core::labels;
use berth_scheduler_core::model::{CapacityType, InstanceType, Labels, NodeClaim, NodePool};
use berth_scheduler_core::requirements::{Requirements, ValueSet};

use crate::provider::{CloudProvider, DriftReason, Instance, InstanceState};

/// How long an offering that reported no capacity stays hidden (as Karpenter's ICE cache).
pub const UNAVAILABLE_OFFERING_TTL: Duration = Duration::from_secs(180);

/// A source of time.
pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

#[derive(Clone)]
pub struct SimOptions {
    /// From launch to the instance running (the node registering is the cluster's business).
    pub boot_delay: Duration,
    /// From the first `delete` to the instance being gone.
    pub termination_delay: Duration,
    /// The kubelet settings allocatable is computed with.
    pub kubelet: KubeletSettings,
    pub root_volume_bytes: i64,
    /// The image every instance reports.
    pub image_id: String,
    pub clock: Clock,
}

impl Default for SimOptions {
    fn default() -> Self {
        Self {
            boot_delay: Duration::from_secs(45),
            termination_delay: Duration::from_secs(30),
            kubelet: KubeletSettings::default(),
            root_volume_bytes: berth_catalog::DEFAULT_ROOT_VOLUME_BYTES,
            image_id: "ami-00000000000051m00".to_owned(),
            clock: Arc::new(SystemTime::now),
        }
    }
}

impl std::fmt::Debug for SimOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimOptions")
            .field("boot_delay", &self.boot_delay)
            .field("termination_delay", &self.termination_delay)
            .field("image_id", &self.image_id)
            .finish_non_exhaustive()
    }
}

/// One call the sim cloud received, for tests to assert on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub method: &'static str,
    /// The NodeClaim or NodePool name it was about (empty for `list`).
    pub subject: String,
}

type OfferingKey = (String, String, CapacityType);

#[derive(Debug)]
struct SimInstance {
    instance: Instance,
    /// When it is gone, once termination started.
    gone_at: Option<SystemTime>,
}

#[derive(Debug, Default)]
struct SimState {
    /// By NodeClaim name (the sim's stand-in for the `karpenter.sh/nodeclaim` tag).
    instances: BTreeMap<String, SimInstance>,
    next_id: u64,
    /// Offerings the cloud has no capacity in (injected by tests).
    no_capacity: BTreeSet<OfferingKey>,
    /// Offerings a launch found without capacity, until when they stay hidden.
    unavailable: BTreeMap<OfferingKey, SystemTime>,
    /// Errors to return from the next calls of a method, in order.
    injected: BTreeMap<&'static str, VecDeque<CloudError>>,
    drifted: BTreeMap<String, String>,
    calls: Vec<Call>,
}

/// The in-memory cloud. Cheap to clone (clones share the same cloud).
#[derive(Clone)]
pub struct SimCloud {
    types: Arc<Vec<InstanceType>>,
    options: SimOptions,
    state: Arc<Mutex<SimState>>,
}

impl std::fmt::Debug for SimCloud {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimCloud")
            .field("types", &self.types.len())
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl SimCloud {
    /// A sim cloud selling every type of `catalog`.
    pub fn new(catalog: &Catalog, options: SimOptions) -> Self {
        let types = catalog.instance_types(&options.kubelet, options.root_volume_bytes);
        Self {
            types: Arc::new(types),
            options,
            state: Arc::new(Mutex::new(SimState::default())),
        }
    }

    fn state(&self) -> MutexGuard<'_, SimState> {
        // A panic while holding the lock cannot leave the maps half-updated in a way later
        // calls would misread, so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every zone an offering of the catalog is in, sorted.
    pub fn zones(&self) -> Vec<String> {
        let zones: std::collections::BTreeSet<&String> = self
            .types
            .iter()
            .flat_map(|t| t.offerings.iter().map(|o| &o.zone))
            .collect();
        zones.into_iter().cloned().collect()
    }

    fn now(&self) -> SystemTime {
        (self.options.clock)()
    }

    /// The next call of `method` (`create`, `delete`, `get`, `list`, `instance_types`,
    /// `is_drifted`) fails with `error`; several queue up in order.
    pub fn inject_error(&self, method: &'static str, error: CloudError) {
        self.state()
            .injected
            .entry(method)
            .or_default()
            .push_back(error);
    }

    /// The cloud has no capacity for this offering until [`Self::restore_capacity`].
    pub fn remove_capacity(&self, instance_type: &str, zone: &str, capacity_type: CapacityType) {
        self.state()
            .no_capacity
            .insert((instance_type.to_owned(), zone.to_owned(), capacity_type));
    }

    pub fn restore_capacity(&self, instance_type: &str, zone: &str, capacity_type: CapacityType) {
        self.state().no_capacity.remove(&(
            instance_type.to_owned(),
            zone.to_owned(),
            capacity_type,
        ));
    }

    /// `is_drifted` reports `reason` for this claim from now on.
    pub fn set_drifted(&self, node_claim: &str, reason: &str) {
        self.state()
            .drifted
            .insert(node_claim.to_owned(), reason.to_owned());
    }

    /// `is_drifted` reports nothing for this claim again.
    pub fn clear_drifted(&self, node_claim: &str) {
        self.state().drifted.remove(node_claim);
    }

    /// Every call received so far.
    pub fn calls(&self) -> Vec<Call> {
        self.state().calls.clone()
    }

    /// Launches so far that created an instance (not idempotent repeats).
    pub fn launched(&self) -> u64 {
        self.state().next_id
    }

    /// Books a call and pops an injected error for it.
    fn begin(
        &self,
        st: &mut SimState,
        method: &'static str,
        subject: &str,
    ) -> Result<(), CloudError> {
        st.calls.push(Call {
            method,
            subject: subject.to_owned(),
        });
        match st.injected.get_mut(method).and_then(VecDeque::pop_front) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Drops instances whose termination finished; refreshes states.
    fn settle(&self, st: &mut SimState, now: SystemTime) {
        st.instances
            .retain(|_, i| i.gone_at.is_none_or(|gone| now < gone));
        st.unavailable.retain(|_, until| now < *until);
        for i in st.instances.values_mut() {
            i.instance.state = if i.gone_at.is_some() {
                InstanceState::ShuttingDown
            } else if now < i.instance.launched_at + self.options.boot_delay {
                InstanceState::Pending
            } else {
                InstanceState::Running
            };
        }
    }

    fn with_availability(&self, st: &SimState, it: &InstanceType) -> InstanceType {
        let mut it = it.clone();
        for o in &mut it.offerings {
            o.available =
                !st.unavailable
                    .contains_key(&(it.name.clone(), o.zone.clone(), o.capacity_type));
        }
        it
    }

    fn launch(
        &self,
        st: &mut SimState,
        claim: &NodeClaim,
        now: SystemTime,
    ) -> Result<Instance, CloudError> {
        let reqs = Requirements::from_requirements(&claim.requirements);
        let zones = reqs.get(labels::TOPOLOGY_ZONE);
        let capacity_types = reqs.get(labels::CAPACITY_TYPE);
        // Every offering the claim allows: (type, zone, capacity type, price).
        let mut allowed: Vec<(&InstanceType, String, CapacityType, f64)> = Vec::new();
        for it in self.types.iter() {
            let own = Requirements::from_requirements(&it.requirements);
            if own.intersect(&reqs).is_err() {
                continue;
            }
            for o in &it.offerings {
                if zones.is_none_or(|z| z.allows(Some(&o.zone)))
                    && capacity_types.is_none_or(|c| c.allows(Some(o.capacity_type.as_str())))
                {
                    allowed.push((it, o.zone.clone(), o.capacity_type, o.price));
                }
            }
        }
        if allowed.is_empty() {
            return Err(CloudError::Launch {
                code: "NoCompatibleOffering".to_owned(),
                message: format!(
                    "no instance type offering satisfies NodeClaim {}'s requirements",
                    claim.name
                ),
            });
        }
        let mut tried = Vec::new();
        // Spot first when allowed (as the EC2 provider), then the cheapest.
        let rank = |c: CapacityType| match c {
            CapacityType::Spot => 0,
            CapacityType::OnDemand => 1,
            CapacityType::Reserved => 2,
        };
        allowed.sort_by(|a, b| {
            rank(a.2)
                .cmp(&rank(b.2))
                .then(a.3.total_cmp(&b.3))
                .then_with(|| a.0.name.cmp(&b.0.name))
                .then_with(|| a.1.cmp(&b.1))
        });
        for (it, zone, capacity_type, price) in allowed {
            let key = (it.name.clone(), zone.clone(), capacity_type);
            if st.unavailable.contains_key(&key) {
                continue;
            }
            if st.no_capacity.contains(&key) {
                st.unavailable.insert(key, now + UNAVAILABLE_OFFERING_TTL);
                tried.push(UnavailableOffering {
                    instance_type: it.name.clone(),
                    zone,
                    capacity_type,
                });
                continue;
            }
            st.next_id += 1;
            let id = format!("i-{:017x}", st.next_id);
            let mut node_labels: Labels =
                Requirements::from_requirements(&it.requirements).labels();
            node_labels.insert(labels::INSTANCE_TYPE.to_owned(), it.name.clone());
            node_labels.insert(labels::TOPOLOGY_ZONE.to_owned(), zone.clone());
            node_labels.insert(
                labels::CAPACITY_TYPE.to_owned(),
                capacity_type.as_str().to_owned(),
            );
            node_labels.insert(labels::NODE_POOL.to_owned(), claim.node_pool.clone());
            return Ok(Instance {
                node_claim: claim.name.clone(),
                node_pool: claim.node_pool.clone(),
                provider_id: format!("sim:///{zone}/{id}"),
                instance_type: it.name.clone(),
                zone,
                capacity_type,
                image_id: self.options.image_id.clone(),
                capacity: it.capacity.clone(),
                allocatable: it.allocatable(),
                labels: node_labels,
                price,
                state: if self.options.boot_delay.is_zero() {
                    InstanceState::Running
                } else {
                    InstanceState::Pending
                },
                launched_at: now,
            });
        }
        Err(CloudError::InsufficientCapacity { offerings: tried })
    }
}

impl CloudProvider for SimCloud {
    fn name(&self) -> &'static str {
        "sim"
    }

    async fn create(&self, claim: &NodeClaim) -> Result<Instance, CloudError> {
        let now = self.now();
        let mut st = self.state();
        self.begin(&mut st, "create", &claim.name)?;
        if claim.name.is_empty() {
            return Err(CloudError::InvalidArgument {
                field: "node_claim.name".to_owned(),
                message: "must not be empty".to_owned(),
            });
        }
        self.settle(&mut st, now);
        if let Some(existing) = st.instances.get(&claim.name) {
            return Ok(existing.instance.clone());
        }
        let instance = self.launch(&mut st, claim, now)?;
        st.instances.insert(
            claim.name.clone(),
            SimInstance {
                instance: instance.clone(),
                gone_at: None,
            },
        );
        Ok(instance)
    }

    async fn delete(&self, node_claim: &str) -> Result<(), CloudError> {
        let now = self.now();
        let mut st = self.state();
        self.begin(&mut st, "delete", node_claim)?;
        self.settle(&mut st, now);
        let Some(i) = st.instances.get_mut(node_claim) else {
            return Err(not_found(node_claim));
        };
        if i.gone_at.is_none() {
            i.gone_at = Some(now + self.options.termination_delay);
            i.instance.state = InstanceState::ShuttingDown;
        }
        Ok(())
    }

    async fn get(&self, node_claim: &str) -> Result<Instance, CloudError> {
        let now = self.now();
        let mut st = self.state();
        self.begin(&mut st, "get", node_claim)?;
        self.settle(&mut st, now);
        st.instances
            .get(node_claim)
            .map(|i| i.instance.clone())
            .ok_or_else(|| not_found(node_claim))
    }

    async fn list(&self) -> Result<Vec<Instance>, CloudError> {
        let now = self.now();
        let mut st = self.state();
        self.begin(&mut st, "list", "")?;
        self.settle(&mut st, now);
        Ok(st.instances.values().map(|i| i.instance.clone()).collect())
    }

    async fn instance_types(&self, node_pool: &NodePool) -> Result<Vec<InstanceType>, CloudError> {
        let now = self.now();
        let mut st = self.state();
        self.begin(&mut st, "instance_types", &node_pool.name)?;
        self.settle(&mut st, now);
        let mut template = Requirements::from_requirements(&node_pool.requirements);
        for (k, v) in &node_pool.labels {
            template.add(k, ValueSet::one_of([v.clone()]));
        }
        Ok(self
            .types
            .iter()
            .filter(|it| {
                Requirements::from_requirements(&it.requirements)
                    .intersect(&template)
                    .is_ok()
            })
            .map(|it| self.with_availability(&st, it))
            .collect())
    }

    async fn is_drifted(&self, claim: &NodeClaim) -> Result<Option<DriftReason>, CloudError> {
        let now = self.now();
        let mut st = self.state();
        self.begin(&mut st, "is_drifted", &claim.name)?;
        self.settle(&mut st, now);
        if !st.instances.contains_key(&claim.name) {
            return Err(not_found(&claim.name));
        }
        Ok(st.drifted.get(&claim.name).cloned().map(DriftReason))
    }
}

fn not_found(node_claim: &str) -> CloudError {
    CloudError::NotFound {
        what: format!("instance of NodeClaim {node_claim}"),
    }
}
