//! [`Ec2Cloud`]: the EC2 [`CloudProvider`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use berth_api::domain::node_class_settings;
use berth_api::v1::EC2NodeClassSpec;
use berth_catalog::{Catalog, Facts, PriceModel};
use berth_cloud::{
    CloudError, CloudProvider, DriftReason, Instance, InstanceState, UnavailableOffering,
};
use berth_scheduler_core::labels;
use berth_scheduler_core::model::{
    CapacityType, InstanceType, NodeClaim, NodePool, Taint, TaintEffect,
};
use berth_scheduler_core::requirements::{Requirements, ValueSet};
use sha2::{Digest, Sha256};

use crate::api::{
    ApiError, BlockDevice, Ec2Api, Ec2Instance, Filter, FleetLaunchTemplate, FleetOverride,
    FleetRequest, LaunchTemplateData, MetadataOptions, Tags,
};
use crate::nodeclass::{self, NotReady, ResolveContext, ResolvedNodeClass};
use crate::pricing::{FetchedPrices, PriceOverrides, Pricer};
use crate::userdata::{self, Bootstrap};

/// Tag naming the NodeClaim an instance was launched for.
pub const TAG_NODE_CLAIM: &str = labels::NODE_CLAIM;
/// Tag naming the NodePool.
pub const TAG_NODE_POOL: &str = labels::NODE_POOL;
/// Tag marking launch templates Berth owns (value: the cluster name).
pub const TAG_LAUNCH_TEMPLATE_CLUSTER: &str = "berth.dev/cluster";

/// EC2 error codes that mean "no capacity for this offering right now".
pub const CAPACITY_ERRORS: &[&str] = &[
    "InsufficientInstanceCapacity",
    "MaxSpotInstanceCountExceeded",
    "VcpuLimitExceeded",
    "UnfulfillableCapacity",
    "InsufficientFreeAddressesInSubnet",
];

/// At most this many instance types go into one fleet request (EC2's limit on overrides).
pub const MAX_FLEET_TYPES: usize = 60;

/// A source of time.
pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

#[derive(Clone)]
pub struct Ec2Options {
    pub cluster_name: String,
    pub cluster_endpoint: String,
    /// Base64 of the cluster CA bundle.
    pub cluster_ca_bundle: String,
    pub service_cidr: String,
    /// `1.33`: resolves AMI aliases.
    pub kubernetes_version: String,
    pub region: String,
    pub unavailable_offering_ttl: Duration,
    pub instance_types_ttl: Duration,
    pub prices_ttl: Duration,
    /// How long a resolved EC2NodeClass is reused before resolving again.
    pub node_class_ttl: Duration,
    /// Launch templates unused this long are deleted by [`Ec2Cloud::garbage_collect_launch_templates`].
    pub launch_template_ttl: Duration,
    pub price_overrides: PriceOverrides,
    pub clock: Clock,
}

impl Ec2Options {
    pub fn new(cluster_name: &str, cluster_endpoint: &str, region: &str) -> Self {
        Self {
            cluster_name: cluster_name.to_owned(),
            cluster_endpoint: cluster_endpoint.to_owned(),
            cluster_ca_bundle: String::new(),
            service_cidr: "10.100.0.0/16".to_owned(),
            kubernetes_version: "1.33".to_owned(),
            region: region.to_owned(),
            unavailable_offering_ttl: Duration::from_secs(180),
            instance_types_ttl: Duration::from_secs(300),
            prices_ttl: Duration::from_secs(12 * 3600),
            node_class_ttl: Duration::from_secs(60),
            launch_template_ttl: Duration::from_secs(3600),
            price_overrides: PriceOverrides::default(),
            clock: Arc::new(SystemTime::now),
        }
    }
}

impl std::fmt::Debug for Ec2Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ec2Options")
            .field("cluster_name", &self.cluster_name)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

type OfferingKey = (String, String, CapacityType);

#[derive(Default)]
struct State {
    unavailable: BTreeMap<OfferingKey, SystemTime>,
    facts: Option<(SystemTime, Vec<Facts>)>,
    prices: Option<(SystemTime, FetchedPrices)>,
    resolved: BTreeMap<String, (SystemTime, Result<ResolvedNodeClass, NotReady>)>,
    /// Launch templates known to exist, with when they were last used.
    templates: BTreeMap<String, SystemTime>,
}

/// The EC2 cloud. Cheap to clone (clones share caches).
#[derive(Clone)]
pub struct Ec2Cloud<A> {
    api: Arc<A>,
    options: Ec2Options,
    node_classes: Arc<Mutex<BTreeMap<String, EC2NodeClassSpec>>>,
    state: Arc<Mutex<State>>,
}

impl<A> std::fmt::Debug for Ec2Cloud<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ec2Cloud")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves the maps consistent, so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn unavailable(e: ApiError) -> CloudError {
    CloudError::Unavailable {
        message: e.to_string(),
    }
}

fn node_class_not_ready(name: &str, e: &NotReady) -> CloudError {
    CloudError::NodeClassNotReady {
        reason: format!("EC2NodeClass {name}: {e}"),
    }
}

/// EC2's instance states that still hold (or will hold) capacity.
fn live(i: &Ec2Instance) -> bool {
    matches!(
        i.state.as_str(),
        "pending" | "running" | "stopping" | "stopped"
    )
}

impl<A: Ec2Api> Ec2Cloud<A> {
    pub fn new(api: A, options: Ec2Options) -> Self {
        Self {
            api: Arc::new(api),
            options,
            node_classes: Arc::default(),
            state: Arc::default(),
        }
    }

    pub fn api(&self) -> &A {
        &self.api
    }

    fn now(&self) -> SystemTime {
        (self.options.clock)()
    }

    /// Sets (or replaces) an EC2NodeClass; the actuator's controller calls this as it watches.
    /// A changed spec resolves again at once; an unchanged one keeps its cached resolution
    /// (`node_class_ttl`), so calling this on every pass costs no AWS call.
    pub fn set_node_class(&self, name: &str, spec: EC2NodeClassSpec) {
        let previous = lock(&self.node_classes).insert(name.to_owned(), spec.clone());
        if previous.as_ref() != Some(&spec) {
            lock(&self.state).resolved.remove(name);
        }
    }

    pub fn remove_node_class(&self, name: &str) {
        lock(&self.node_classes).remove(name);
        lock(&self.state).resolved.remove(name);
    }

    fn node_class(&self, name: &str) -> Result<EC2NodeClassSpec, CloudError> {
        lock(&self.node_classes)
            .get(name)
            .cloned()
            .ok_or_else(|| CloudError::NodeClassNotReady {
                reason: format!("EC2NodeClass {name} not found"),
            })
    }

    fn resolve_context(&self, class_name: &str) -> ResolveContext {
        ResolveContext {
            kubernetes_version: self.options.kubernetes_version.clone(),
            cluster_name: self.options.cluster_name.clone(),
            region: self.options.region.clone(),
            class_name: class_name.to_owned(),
        }
    }

    /// Forgets a deleted class and releases what Berth made for it (the instance profile of
    /// its `role`). The caller makes sure no NodeClaim uses it any more. Idempotent.
    pub async fn release_node_class(
        &self,
        name: &str,
        spec: &EC2NodeClassSpec,
    ) -> Result<(), CloudError> {
        nodeclass::release_instance_profile(self.api.as_ref(), spec, &self.resolve_context(name))
            .await
            .map_err(|e| CloudError::Unavailable {
                message: format!("EC2NodeClass {name}: releasing its instance profile: {e}"),
            })?;
        self.remove_node_class(name);
        Ok(())
    }

    /// The class resolved (cached for `node_class_ttl`), or why it is not ready.
    pub async fn resolve(&self, name: &str) -> Result<ResolvedNodeClass, CloudError> {
        if !lock(&self.node_classes).contains_key(name) {
            return Err(CloudError::NodeClassNotReady {
                reason: format!("EC2NodeClass {name} not found"),
            });
        }
        self.resolution(name)
            .await
            .map_err(|e| node_class_not_ready(name, &e))
    }

    /// [`resolve`](Self::resolve) with the structured reason (the condition that failed).
    pub async fn resolution(&self, name: &str) -> Result<ResolvedNodeClass, NotReady> {
        let now = self.now();
        if let Some((at, r)) = lock(&self.state).resolved.get(name)
            && now.duration_since(*at).unwrap_or_default() < self.options.node_class_ttl
        {
            return r.clone();
        }
        let Ok(spec) = self.node_class(name) else {
            return Err(NotReady {
                condition: "Ready",
                reason: format!("EC2NodeClass {name} not found"),
            });
        };
        let cx = self.resolve_context(name);
        let r = nodeclass::resolve(self.api.as_ref(), &spec, &cx).await;
        lock(&self.state)
            .resolved
            .insert(name.to_owned(), (now, r.clone()));
        r
    }

    /// Instance-type facts from `DescribeInstanceTypes` and the per-zone offerings (cached).
    async fn facts(&self) -> Result<Vec<Facts>, CloudError> {
        let now = self.now();
        if let Some((at, f)) = &lock(&self.state).facts
            && now.duration_since(*at).unwrap_or_default() < self.options.instance_types_ttl
        {
            return Ok(f.clone());
        }
        let infos = self
            .api
            .describe_instance_types()
            .await
            .map_err(unavailable)?;
        let offerings = self
            .api
            .describe_instance_type_offerings()
            .await
            .map_err(unavailable)?;
        let mut zones: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (t, z) in offerings {
            zones.entry(t).or_default().push(z);
        }
        let facts: Vec<Facts> = infos
            .into_iter()
            .filter(|i| i.vcpu > 0 && i.memory_mib > 0 && i.name.contains('.'))
            .map(|i| Facts {
                zones: {
                    let mut z = zones.remove(&i.name).unwrap_or_default();
                    z.sort();
                    z.dedup();
                    z
                },
                name: i.name,
                vcpu: i.vcpu,
                memory_mib: i.memory_mib,
                architectures: i.architectures,
                gpu_count: i.gpu_count,
                gpu_manufacturer: i.gpu_manufacturer,
                gpu_name: i.gpu_name,
                gpu_memory_mib: i.gpu_memory_mib,
                neuron_count: i.neuron_count,
                efa: i.efa,
                max_enis: i.max_enis,
                ipv4_per_eni: i.ipv4_per_eni,
                hypervisor: i.hypervisor,
                bare_metal: i.bare_metal,
                burstable: i.burstable,
                usage_classes: i.usage_classes,
                local_storage_gb: i.local_storage_gb,
                on_demand_usd_per_hour: None,
            })
            .collect();
        lock(&self.state).facts = Some((now, facts.clone()));
        Ok(facts)
    }

    /// Prices from the Pricing API and spot history (cached for `prices_ttl`); an API that
    /// fails or says nothing leaves its part empty, and the model fills in.
    async fn prices(&self) -> Pricer {
        let now = self.now();
        let cached = lock(&self.state).prices.clone();
        let fetched = match cached {
            Some((at, p))
                if now.duration_since(at).unwrap_or_default() < self.options.prices_ttl =>
            {
                p
            }
            _ => {
                let on_demand = match self.api.on_demand_prices(self.options.region.clone()).await {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::warn!(error = %e, "on-demand prices unavailable, using the built-in price model");
                        BTreeMap::new()
                    }
                };
                let spot = match self.api.spot_prices().await {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::warn!(error = %e, "spot prices unavailable, using the built-in discount");
                        BTreeMap::new()
                    }
                };
                let p = FetchedPrices { on_demand, spot };
                lock(&self.state).prices = Some((now, p.clone()));
                p
            }
        };
        Pricer::new(fetched, self.options.price_overrides.clone())
    }

    /// Every instance type the class can launch, priced, with offerings limited to zones the
    /// class has a subnet in and marked unavailable while in the insufficient-capacity cache.
    async fn types_for(
        &self,
        spec: &EC2NodeClassSpec,
        resolved: &ResolvedNodeClass,
    ) -> Result<Vec<(Facts, InstanceType)>, CloudError> {
        let facts = self.facts().await?;
        let pricer = self.prices().await;
        let (kubelet, root) =
            node_class_settings(spec).map_err(|e| CloudError::NodeClassNotReady {
                reason: e.to_string(),
            })?;
        let catalog = Catalog {
            facts: Vec::new(),
            prices: PriceModel::builtin(),
        };
        let zones: BTreeSet<&str> = resolved.subnets.iter().map(|s| s.zone.as_str()).collect();
        let arches: BTreeSet<&str> = resolved.amis.iter().map(|a| a.arch.as_str()).collect();
        let now = self.now();
        let st = lock(&self.state);
        let mut out = Vec::new();
        for f in facts {
            let mut priced = f.clone();
            priced.on_demand_usd_per_hour = Some(pricer.on_demand(&f).0);
            let mut it = catalog.instance_type(&priced, &kubelet, root);
            // Only architectures the class has an image for.
            if !it.requirements.iter().any(|r| {
                r.key == labels::ARCH && r.values.iter().any(|v| arches.contains(v.as_str()))
            }) {
                continue;
            }
            for o in &mut it.offerings {
                if o.capacity_type == CapacityType::Spot {
                    o.price = pricer.spot(&f, &o.zone).0;
                }
                let key = (it.name.clone(), o.zone.clone(), o.capacity_type);
                o.available = zones.contains(o.zone.as_str())
                    && st.unavailable.get(&key).is_none_or(|until| now >= *until);
            }
            out.push((f, it));
        }
        Ok(out)
    }

    fn mark_unavailable(&self, offerings: &[UnavailableOffering]) {
        let until = self.now() + self.options.unavailable_offering_ttl;
        let mut st = lock(&self.state);
        for o in offerings {
            st.unavailable.insert(
                (o.instance_type.clone(), o.zone.clone(), o.capacity_type),
                until,
            );
        }
    }

    /// Offerings currently hidden after an insufficient-capacity error.
    pub fn unavailable_offerings(&self) -> usize {
        let now = self.now();
        lock(&self.state)
            .unavailable
            .values()
            .filter(|until| now < **until)
            .count()
    }

    fn claim_filters(&self, node_claim: &str) -> Vec<Filter> {
        vec![
            Filter::new(&format!("tag:{TAG_NODE_CLAIM}"), &[node_claim]),
            Filter::new(
                &format!("tag:kubernetes.io/cluster/{}", self.options.cluster_name),
                &["owned"],
            ),
        ]
    }

    async fn instances_of(&self, node_claim: &str) -> Result<Vec<Ec2Instance>, CloudError> {
        self.api
            .describe_instances(self.claim_filters(node_claim))
            .await
            .map_err(unavailable)
    }

    /// The tags of every instance launched for `claim`.
    fn instance_tags(&self, claim: &NodeClaim, spec: &EC2NodeClassSpec) -> Tags {
        let mut tags: Tags = spec.tags.clone();
        tags.insert(TAG_NODE_POOL.to_owned(), claim.node_pool.clone());
        tags.insert(TAG_NODE_CLAIM.to_owned(), claim.name.clone());
        tags.insert(
            format!("kubernetes.io/cluster/{}", self.options.cluster_name),
            "owned".to_owned(),
        );
        tags.insert(
            "eks:eks-cluster-name".to_owned(),
            self.options.cluster_name.clone(),
        );
        tags.insert(
            labels::EC2_NODE_CLASS.to_owned(),
            claim.node_class_ref.name.clone(),
        );
        tags.entry("Name".to_owned())
            .or_insert_with(|| claim.name.clone());
        tags
    }

    /// The launch template for (class, image, the claim's labels and taints), created on
    /// first use, reused after; its name is a hash of everything it carries.
    async fn launch_template(
        &self,
        spec: &EC2NodeClassSpec,
        resolved: &ResolvedNodeClass,
        image_id: &str,
        claim: &NodeClaim,
    ) -> Result<String, CloudError> {
        let bootstrap = self.bootstrap(spec, claim);
        let user_data = userdata::render(resolved.family, &bootstrap).map_err(|e| {
            CloudError::NodeClassNotReady {
                reason: format!("EC2NodeClass {}: {e}", claim.node_class_ref.name),
            }
        })?;
        let data = LaunchTemplateData {
            image_id: image_id.to_owned(),
            user_data: base64::engine::general_purpose::STANDARD.encode(user_data),
            security_group_ids: resolved
                .security_groups
                .iter()
                .map(|g| g.id.clone())
                .collect(),
            instance_profile: resolved.instance_profile.clone(),
            block_devices: block_devices(spec, resolved.family),
            metadata: metadata(spec),
            detailed_monitoring: spec.detailed_monitoring.unwrap_or(false),
            associate_public_ip_address: spec.associate_public_ip_address,
        };
        let mut hasher = Sha256::new();
        hasher.update(self.options.cluster_name.as_bytes());
        hasher.update(format!("{data:?}").as_bytes());
        let digest = hasher.finalize();
        let hex: String = digest[..10].iter().map(|b| format!("{b:02x}")).collect();
        let name = format!("berth/{}/{hex}", self.options.cluster_name);
        let now = self.now();
        if lock(&self.state).templates.contains_key(&name) {
            lock(&self.state).templates.insert(name.clone(), now);
            return Ok(name);
        }
        let existing = self
            .api
            .describe_launch_templates(vec![Filter::new("launch-template-name", &[&name])])
            .await
            .map_err(unavailable)?;
        if existing.is_empty() {
            let mut tags: Tags = spec.tags.clone();
            tags.insert(
                TAG_LAUNCH_TEMPLATE_CLUSTER.to_owned(),
                self.options.cluster_name.clone(),
            );
            tags.insert(
                labels::EC2_NODE_CLASS.to_owned(),
                claim.node_class_ref.name.clone(),
            );
            match self
                .api
                .create_launch_template(name.clone(), data, tags)
                .await
            {
                Ok(_) => {}
                // Another actuator replica created it first.
                Err(e) if e.code.contains("AlreadyExists") => {}
                Err(e) => {
                    return Err(CloudError::Launch {
                        code: e.code,
                        message: e.message,
                    });
                }
            }
        }
        lock(&self.state).templates.insert(name.clone(), now);
        Ok(name)
    }

    fn bootstrap(&self, spec: &EC2NodeClassSpec, claim: &NodeClaim) -> Bootstrap {
        let mut node_labels = claim.labels.clone();
        node_labels.insert(labels::NODE_POOL.to_owned(), claim.node_pool.clone());
        // Single-valued requirements become labels, except the well-known ones the instance
        // itself decides (zone, type, capacity type, ...): those are set at registration, and
        // keeping them out lets claims that differ only there share a launch template.
        for r in &claim.requirements {
            if r.operator == berth_scheduler_core::model::Operator::In
                && r.values.len() == 1
                && !labels::WELL_KNOWN_LABELS.contains(&r.key.as_str())
            {
                node_labels.insert(r.key.clone(), r.values[0].clone());
            }
        }
        // Labels the kubelet may not set itself are applied at registration instead.
        node_labels.retain(|k, _| !labels::is_restricted_for_kubelet(k));
        let mut taints: Vec<(String, String, String)> = claim
            .taints
            .iter()
            .chain(&claim.startup_taints)
            .map(Bootstrap::taint)
            .collect();
        taints.push(Bootstrap::taint(&Taint {
            key: labels::UNREGISTERED_TAINT_KEY.to_owned(),
            value: String::new(),
            effect: TaintEffect::NoExecute,
        }));
        let kubelet = spec.kubelet.clone().unwrap_or_default();
        Bootstrap {
            cluster_name: self.options.cluster_name.clone(),
            endpoint: self.options.cluster_endpoint.clone(),
            ca_bundle: self.options.cluster_ca_bundle.clone(),
            service_cidr: self.options.service_cidr.clone(),
            cluster_dns: kubelet.cluster_dns.clone(),
            labels: node_labels,
            taints,
            max_pods: kubelet.max_pods,
            kube_reserved: kubelet.kube_reserved.clone(),
            system_reserved: kubelet.system_reserved.clone(),
            eviction_hard: kubelet.eviction_hard.clone(),
            eviction_soft: kubelet.eviction_soft.clone(),
            eviction_soft_grace_period: kubelet.eviction_soft_grace_period.clone(),
            user_data: spec.user_data.clone(),
        }
    }

    /// Deletes Berth's launch templates of this cluster that no launch used for
    /// `launch_template_ttl` (a template this process never used counts from when it first
    /// saw it). Returns the names deleted.
    pub async fn garbage_collect_launch_templates(&self) -> Result<Vec<String>, CloudError> {
        let now = self.now();
        let listed = self
            .api
            .describe_launch_templates(vec![Filter::new(
                &format!("tag:{TAG_LAUNCH_TEMPLATE_CLUSTER}"),
                &[&self.options.cluster_name],
            )])
            .await
            .map_err(unavailable)?;
        let mut stale = Vec::new();
        {
            let mut st = lock(&self.state);
            for t in &listed {
                let last = *st.templates.entry(t.name.clone()).or_insert(now);
                if now.duration_since(last).unwrap_or_default() >= self.options.launch_template_ttl
                {
                    stale.push(t.name.clone());
                }
            }
        }
        for name in &stale {
            match self.api.delete_launch_template(name.clone()).await {
                Ok(()) => {}
                Err(e) if e.code.contains("NotFound") => {}
                Err(e) => return Err(unavailable(e)),
            }
            lock(&self.state).templates.remove(name);
        }
        Ok(stale)
    }

    fn to_instance(&self, i: &Ec2Instance, types: &[(Facts, InstanceType)]) -> Instance {
        let it = types
            .iter()
            .find(|(f, _)| f.name == i.instance_type)
            .map(|(_, t)| t);
        let capacity_type = if i.spot {
            CapacityType::Spot
        } else {
            CapacityType::OnDemand
        };
        let mut node_labels: BTreeMap<String, String> = it
            .map(|t| Requirements::from_requirements(&t.requirements).labels())
            .unwrap_or_default();
        node_labels.insert(labels::INSTANCE_TYPE.to_owned(), i.instance_type.clone());
        node_labels.insert(labels::TOPOLOGY_ZONE.to_owned(), i.zone.clone());
        node_labels.insert(
            labels::CAPACITY_TYPE.to_owned(),
            capacity_type.as_str().to_owned(),
        );
        let node_pool = i.tags.get(TAG_NODE_POOL).cloned().unwrap_or_default();
        if !node_pool.is_empty() {
            node_labels.insert(labels::NODE_POOL.to_owned(), node_pool.clone());
        }
        Instance {
            node_claim: i.tags.get(TAG_NODE_CLAIM).cloned().unwrap_or_default(),
            node_pool,
            provider_id: format!("aws:///{}/{}", i.zone, i.id),
            instance_type: i.instance_type.clone(),
            zone: i.zone.clone(),
            capacity_type,
            image_id: i.image_id.clone(),
            capacity: it.map(|t| t.capacity.clone()).unwrap_or_default(),
            allocatable: it.map(InstanceType::allocatable).unwrap_or_default(),
            labels: node_labels,
            price: it
                .and_then(|t| {
                    t.offerings
                        .iter()
                        .find(|o| o.zone == i.zone && o.capacity_type == capacity_type)
                })
                .map_or(0.0, |o| o.price),
            state: match i.state.as_str() {
                "pending" => InstanceState::Pending,
                "running" | "stopping" | "stopped" => InstanceState::Running,
                _ => InstanceState::ShuttingDown,
            },
            launched_at: i.launched_at,
        }
    }

    /// Types, priced, for instances whose class may be gone (for get/list): the class's
    /// types when it resolves, else the plain catalog of the region.
    async fn types_for_reporting(&self, node_class: Option<&str>) -> Vec<(Facts, InstanceType)> {
        if let Some(name) = node_class
            && let Ok(spec) = self.node_class(name)
            && let Ok(resolved) = self.resolve(name).await
            && let Ok(t) = self.types_for(&spec, &resolved).await
        {
            return t;
        }
        let Ok(facts) = self.facts().await else {
            return Vec::new();
        };
        let pricer = self.prices().await;
        let catalog = Catalog {
            facts: Vec::new(),
            prices: PriceModel::builtin(),
        };
        facts
            .into_iter()
            .map(|f| {
                let mut priced = f.clone();
                priced.on_demand_usd_per_hour = Some(pricer.on_demand(&f).0);
                let t = catalog.instance_type(
                    &priced,
                    &Default::default(),
                    berth_catalog::DEFAULT_ROOT_VOLUME_BYTES,
                );
                (f, t)
            })
            .collect()
    }

    async fn launch(&self, claim: &NodeClaim) -> Result<Instance, CloudError> {
        let class = &claim.node_class_ref.name;
        let spec = self.node_class(class)?;
        let resolved = self.resolve(class).await?;
        let types = self.types_for(&spec, &resolved).await?;
        let reqs = Requirements::from_requirements(&claim.requirements);
        let zones = reqs.get(labels::TOPOLOGY_ZONE).cloned();
        let capacity_types = reqs.get(labels::CAPACITY_TYPE).cloned();
        // The claim lists its types cheapest first; keep that order when it does.
        let order: BTreeMap<&str, usize> = claim
            .requirements
            .iter()
            .find(|r| {
                r.key == labels::INSTANCE_TYPE
                    && r.operator == berth_scheduler_core::model::Operator::In
            })
            .map(|r| {
                r.values
                    .iter()
                    .enumerate()
                    .map(|(i, v)| (v.as_str(), i))
                    .collect()
            })
            .unwrap_or_default();
        let compatible: Vec<&(Facts, InstanceType)> = types
            .iter()
            .filter(|(_, it)| {
                Requirements::from_requirements(&it.requirements)
                    .intersect(&reqs)
                    .is_ok()
            })
            .collect();
        if compatible.is_empty() {
            return Err(CloudError::Launch {
                code: "NoCompatibleInstanceType".to_owned(),
                message: format!(
                    "no instance type of EC2NodeClass {class} satisfies NodeClaim {}'s requirements",
                    claim.name
                ),
            });
        }
        let (zones, capacity_types) = (zones.as_ref(), capacity_types.as_ref());
        let allows = |set: Option<&ValueSet>, v: &str| set.is_none_or(|s| s.allows(Some(v)));
        let mut tried: Vec<UnavailableOffering> = Vec::new();
        let mut template_retried = false;
        for attempt in 0..4 {
            let now = self.now();
            let hidden = |t: &str, z: &str, ct: CapacityType| {
                lock(&self.state)
                    .unavailable
                    .get(&(t.to_owned(), z.to_owned(), ct))
                    .is_some_and(|until| now < *until)
            };
            // Allowed offerings not hidden, per capacity type.
            let offerings = &|ct: CapacityType| -> Vec<(&InstanceType, &str, f64)> {
                let mut out: Vec<(&InstanceType, &str, f64)> = compatible
                    .iter()
                    .flat_map(|(_, it)| {
                        it.offerings.iter().filter_map(move |o| {
                            (o.capacity_type == ct
                                && o.available
                                && allows(zones, &o.zone)
                                && allows(capacity_types, ct.as_str()))
                            .then_some((it, o.zone.as_str(), o.price))
                        })
                    })
                    .filter(|(it, z, _)| !hidden(&it.name, z, ct))
                    .collect();
                out.sort_by(|a, b| {
                    order
                        .get(a.0.name.as_str())
                        .unwrap_or(&usize::MAX)
                        .cmp(order.get(b.0.name.as_str()).unwrap_or(&usize::MAX))
                        .then(a.2.total_cmp(&b.2))
                        .then_with(|| a.0.name.cmp(&b.0.name))
                        .then_with(|| a.1.cmp(b.1))
                });
                out
            };
            let spot = offerings(CapacityType::Spot);
            let (capacity_type, chosen) = if spot.is_empty() {
                (CapacityType::OnDemand, offerings(CapacityType::OnDemand))
            } else {
                (CapacityType::Spot, spot)
            };
            if chosen.is_empty() {
                return Err(CloudError::InsufficientCapacity { offerings: tried });
            }
            // The first MAX_FLEET_TYPES types, every allowed zone of each.
            let mut type_names: Vec<&str> = Vec::new();
            for (it, ..) in &chosen {
                if !type_names.contains(&it.name.as_str()) {
                    type_names.push(&it.name);
                }
            }
            type_names.truncate(MAX_FLEET_TYPES);
            // Overrides grouped by image (one launch template per architecture).
            let mut by_ami: BTreeMap<String, Vec<FleetOverride>> = BTreeMap::new();
            for (it, zone, _) in chosen
                .iter()
                .filter(|(it, ..)| type_names.contains(&it.name.as_str()))
            {
                let Some(subnet) = resolved.subnet_in(zone) else {
                    continue;
                };
                let arch = it
                    .requirements
                    .iter()
                    .find(|r| r.key == labels::ARCH)
                    .and_then(|r| r.values.iter().find(|a| resolved.ami_for(a).is_some()));
                let Some(ami) = arch.and_then(|a| resolved.ami_for(a)) else {
                    continue;
                };
                by_ami
                    .entry(ami.id.clone())
                    .or_default()
                    .push(FleetOverride {
                        instance_type: it.name.clone(),
                        subnet_id: subnet.id.clone(),
                        zone: (*zone).to_owned(),
                    });
            }
            let mut launch_templates = Vec::new();
            for (ami, overrides) in by_ami {
                let name = self.launch_template(&spec, &resolved, &ami, claim).await?;
                launch_templates.push(FleetLaunchTemplate { name, overrides });
            }
            let request = FleetRequest {
                launch_templates,
                spot: capacity_type == CapacityType::Spot,
                client_token: if attempt == 0 {
                    claim.name.clone()
                } else {
                    format!("{}-{attempt}", claim.name)
                },
                tags: self.instance_tags(claim, &spec),
            };
            let templates: Vec<String> = request
                .launch_templates
                .iter()
                .map(|t| t.name.clone())
                .collect();
            let result = match self.api.create_fleet(request).await {
                // A cached template deleted behind our back (by a person, or another
                // replica's garbage collection): forget it; the next attempt recreates it.
                Err(e) if launch_template_missing(&e.code) && !template_retried => {
                    tracing::warn!(node_claim = %claim.name, code = %e.code, "launch template gone; recreating it");
                    let mut state = lock(&self.state);
                    for t in &templates {
                        state.templates.remove(t);
                    }
                    template_retried = true;
                    continue;
                }
                Err(e) if e.code == "Transport" || e.code.starts_with("RequestLimitExceeded") => {
                    return Err(unavailable(e));
                }
                Err(e) => {
                    return Err(CloudError::Launch {
                        code: e.code,
                        message: e.message,
                    });
                }
                Ok(r) => r,
            };
            let mut ice: Vec<UnavailableOffering> = Vec::new();
            let mut other = None;
            for e in &result.errors {
                if CAPACITY_ERRORS.contains(&e.code.as_str()) {
                    if let (Some(t), Some(z)) = (&e.instance_type, &e.zone) {
                        ice.push(UnavailableOffering {
                            instance_type: t.clone(),
                            zone: z.clone(),
                            capacity_type,
                        });
                    }
                } else if other.is_none() {
                    other = Some(e.clone());
                }
            }
            self.mark_unavailable(&ice);
            tried.extend(ice.iter().cloned());
            if let Some(id) = result.instance_ids.first() {
                let found = self
                    .api
                    .describe_instances(vec![Filter::new("instance-id", &[id])])
                    .await
                    .map_err(unavailable)?;
                let Some(i) = found.first() else {
                    return Err(CloudError::Unavailable {
                        message: format!("instance {id} launched but not described yet"),
                    });
                };
                tracing::info!(node_claim = %claim.name, instance = %id, instance_type = %i.instance_type, zone = %i.zone, "launched");
                return Ok(self.to_instance(i, &types));
            }
            if ice.is_empty() {
                let e = other.unwrap_or(crate::api::FleetError {
                    code: "NoInstanceLaunched".to_owned(),
                    message: "CreateFleet launched nothing and reported no error".to_owned(),
                    instance_type: None,
                    subnet_id: None,
                    zone: None,
                });
                return Err(CloudError::Launch {
                    code: e.code,
                    message: e.message,
                });
            }
        }
        Err(CloudError::InsufficientCapacity { offerings: tried })
    }
}

/// EC2's codes for a launch template that does not exist.
fn launch_template_missing(code: &str) -> bool {
    code.starts_with("InvalidLaunchTemplateName.NotFound")
        || code.starts_with("InvalidLaunchTemplateId.NotFound")
}

fn metadata(spec: &EC2NodeClassSpec) -> MetadataOptions {
    use berth_api::v1::{EnabledDisabled, HttpTokens};
    match &spec.metadata_options {
        Some(m) => MetadataOptions {
            http_endpoint_enabled: m.http_endpoint == EnabledDisabled::Enabled,
            http_tokens_required: m.http_tokens == HttpTokens::Required,
            http_put_response_hop_limit: i32::try_from(m.http_put_response_hop_limit).unwrap_or(1),
            http_protocol_ipv6_enabled: m.http_protocol_ipv6 == EnabledDisabled::Enabled,
        },
        // Karpenter's defaults: IMDSv2 required, one hop.
        None => MetadataOptions {
            http_endpoint_enabled: true,
            http_tokens_required: true,
            http_put_response_hop_limit: 1,
            http_protocol_ipv6_enabled: false,
        },
    }
}

fn block_devices(spec: &EC2NodeClassSpec, family: userdata::Family) -> Vec<BlockDevice> {
    if spec.block_device_mappings.is_empty() {
        // Karpenter's default root volume: 20 GiB gp3, encrypted.
        let device = match family {
            userdata::Family::Bottlerocket => "/dev/xvdb",
            _ => "/dev/xvda",
        };
        return vec![BlockDevice {
            device_name: device.to_owned(),
            volume_size_gib: Some(20),
            volume_type: Some("gp3".to_owned()),
            encrypted: Some(true),
            delete_on_termination: Some(true),
            ..BlockDevice::default()
        }];
    }
    spec.block_device_mappings
        .iter()
        .map(|b| {
            let ebs = b.ebs.clone().unwrap_or_default();
            BlockDevice {
                device_name: b
                    .device_name
                    .clone()
                    .unwrap_or_else(|| "/dev/xvda".to_owned()),
                volume_size_gib: ebs
                    .volume_size
                    .as_ref()
                    .and_then(|q| berth_scheduler_core::quantity::parse_milli(&q.0).ok())
                    .map(|milli| ((milli / 1000 + (1 << 30) - 1) >> 30) as i32),
                volume_type: ebs.volume_type.map(volume_type),
                iops: ebs.iops.and_then(|v| i32::try_from(v).ok()),
                throughput: ebs.throughput.and_then(|v| i32::try_from(v).ok()),
                encrypted: ebs.encrypted,
                kms_key_id: ebs.kms_key_id,
                snapshot_id: ebs.snapshot_id,
                delete_on_termination: ebs.delete_on_termination,
            }
        })
        .collect()
}

/// EC2's spelling of a volume type.
fn volume_type(t: berth_api::v1::VolumeType) -> String {
    use berth_api::v1::VolumeType::*;
    match t {
        Standard => "standard",
        Io1 => "io1",
        Io2 => "io2",
        Gp2 => "gp2",
        Sc1 => "sc1",
        St1 => "st1",
        Gp3 => "gp3",
    }
    .to_owned()
}

impl<A: Ec2Api> CloudProvider for Ec2Cloud<A> {
    fn name(&self) -> &'static str {
        "ec2"
    }

    async fn create(&self, claim: &NodeClaim) -> Result<Instance, CloudError> {
        if claim.name.is_empty() {
            return Err(CloudError::InvalidArgument {
                field: "node_claim.name".to_owned(),
                message: "must not be empty".to_owned(),
            });
        }
        // Idempotency: an instance already tagged with this claim is the answer, whatever
        // happened to the caller in between.
        let existing = self.instances_of(&claim.name).await?;
        if let Some(i) = existing.iter().find(|i| live(i)) {
            let types = self
                .types_for_reporting(Some(&claim.node_class_ref.name))
                .await;
            return Ok(self.to_instance(i, &types));
        }
        self.launch(claim).await
    }

    async fn delete(&self, node_claim: &str) -> Result<(), CloudError> {
        let instances = self.instances_of(node_claim).await?;
        if instances.is_empty() {
            return Err(CloudError::NotFound {
                what: format!("instance of NodeClaim {node_claim}"),
            });
        }
        let ids: Vec<String> = instances
            .iter()
            .filter(|i| live(i))
            .map(|i| i.id.clone())
            .collect();
        if !ids.is_empty() {
            match self.api.terminate_instances(ids).await {
                Ok(()) => {}
                Err(e) if e.code == "InvalidInstanceID.NotFound" => {}
                Err(e) => return Err(unavailable(e)),
            }
        }
        Ok(())
    }

    async fn get(&self, node_claim: &str) -> Result<Instance, CloudError> {
        let instances = self.instances_of(node_claim).await?;
        let Some(i) = instances.first() else {
            return Err(CloudError::NotFound {
                what: format!("instance of NodeClaim {node_claim}"),
            });
        };
        let class = i.tags.get(labels::EC2_NODE_CLASS).cloned();
        let types = self.types_for_reporting(class.as_deref()).await;
        Ok(self.to_instance(i, &types))
    }

    async fn list(&self) -> Result<Vec<Instance>, CloudError> {
        let instances = self
            .api
            .describe_instances(vec![
                Filter::new("tag-key", &[TAG_NODE_CLAIM]),
                Filter::new(
                    &format!("tag:kubernetes.io/cluster/{}", self.options.cluster_name),
                    &["owned"],
                ),
            ])
            .await
            .map_err(unavailable)?;
        let types = self.types_for_reporting(None).await;
        Ok(instances
            .iter()
            .map(|i| self.to_instance(i, &types))
            .collect())
    }

    async fn instance_types(&self, node_pool: &NodePool) -> Result<Vec<InstanceType>, CloudError> {
        let class = &node_pool.node_class_ref.name;
        let spec = self.node_class(class)?;
        let resolved = self.resolve(class).await?;
        let mut template = Requirements::from_requirements(&node_pool.requirements);
        for (k, v) in &node_pool.labels {
            template.add(k, ValueSet::one_of([v.clone()]));
        }
        Ok(self
            .types_for(&spec, &resolved)
            .await?
            .into_iter()
            .map(|(_, it)| it)
            .filter(|it| {
                Requirements::from_requirements(&it.requirements)
                    .intersect(&template)
                    .is_ok()
            })
            .collect())
    }

    fn launch_annotations(&self, claim: &NodeClaim) -> std::collections::BTreeMap<String, String> {
        match self.node_class(&claim.node_class_ref.name) {
            Ok(spec) => [
                (
                    labels::EC2_NODE_CLASS_HASH.to_owned(),
                    crate::nodeclass::node_class_hash(&spec),
                ),
                (
                    labels::EC2_NODE_CLASS_HASH_VERSION.to_owned(),
                    crate::nodeclass::NODE_CLASS_HASH_VERSION.to_owned(),
                ),
            ]
            .into(),
            Err(_) => Default::default(),
        }
    }

    async fn is_drifted(&self, claim: &NodeClaim) -> Result<Option<DriftReason>, CloudError> {
        let instances = self.instances_of(&claim.name).await?;
        let Some(i) = instances.iter().find(|i| live(i)) else {
            return Err(CloudError::NotFound {
                what: format!("instance of NodeClaim {}", claim.name),
            });
        };
        // Static drift first, as Karpenter: the class's hashed fields changed since the launch
        // (only a hash of Berth's own version is compared).
        let spec = self.node_class(&claim.node_class_ref.name)?;
        if claim
            .annotations
            .get(labels::EC2_NODE_CLASS_HASH_VERSION)
            .is_some_and(|v| v == crate::nodeclass::NODE_CLASS_HASH_VERSION)
            && let Some(hash) = claim.annotations.get(labels::EC2_NODE_CLASS_HASH)
        {
            let now = crate::nodeclass::node_class_hash(&spec);
            if *hash != now {
                return Ok(Some(DriftReason(format!(
                    "NodeClassDrift: the EC2NodeClass's hash is {now}, the NodeClaim was launched with {hash}"
                ))));
            }
        }
        let resolved = self.resolve(&claim.node_class_ref.name).await?;
        if !resolved.amis.iter().any(|a| a.id == i.image_id) {
            return Ok(Some(DriftReason(format!(
                "AMIDrift: instance runs {}, the EC2NodeClass now selects {}",
                i.image_id,
                resolved
                    .amis
                    .iter()
                    .map(|a| a.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))));
        }
        if !resolved.subnets.iter().any(|s| s.zone == i.zone) {
            return Ok(Some(DriftReason(format!(
                "SubnetDrift: the EC2NodeClass no longer has a subnet in {}",
                i.zone
            ))));
        }
        Ok(security_group_drift(
            &i.security_group_ids,
            resolved.security_groups.iter().map(|g| g.id.as_str()),
        )
        .map(DriftReason))
    }
}

/// `SecurityGroupDrift` when the instance's groups are not exactly the ones the class selects
/// now (Karpenter compares the sets: a group added to the selection drifts too). An instance
/// that reports no groups is not judged.
///
/// NB: moto reports no instance-level groups for `CreateFleet` launches (and puts the VPC's
/// default group on the interface), so this is tested here, not against moto.
fn security_group_drift<'a>(
    running: &[String],
    selected: impl Iterator<Item = &'a str>,
) -> Option<String> {
    let running: std::collections::BTreeSet<&str> = running.iter().map(String::as_str).collect();
    let selected: std::collections::BTreeSet<&str> = selected.collect();
    if running.is_empty() || running == selected {
        return None;
    }
    Some(format!(
        "SecurityGroupDrift: the instance has {}, the EC2NodeClass now selects {}",
        running.into_iter().collect::<Vec<_>>().join(", "),
        selected.into_iter().collect::<Vec<_>>().join(", ")
    ))
}

#[cfg(test)]
mod drift_tests {
    use super::security_group_drift;

    #[test]
    fn security_groups_drift_when_the_sets_differ() {
        let running = vec!["sg-1".to_owned(), "sg-2".to_owned()];
        assert_eq!(
            security_group_drift(&running, ["sg-2", "sg-1"].into_iter()),
            None
        );
        assert_eq!(
            security_group_drift(&running, ["sg-1"].into_iter()).as_deref(),
            Some(
                "SecurityGroupDrift: the instance has sg-1, sg-2, the EC2NodeClass now selects sg-1"
            )
        );
        assert!(security_group_drift(&running, ["sg-1", "sg-2", "sg-3"].into_iter()).is_some());
        assert_eq!(security_group_drift(&[], ["sg-1"].into_iter()), None);
    }
}
