//! The scheduler's work, behind the gRPC adapter: the cluster model fed by the watcher's
//! stream, the batch window, instance types from the actuator, solving, and launching.
//!
//! ```text
//!  Sync batches ──apply──> ClusterModel ──pending pods──> Batcher (idle 1 s, max 10 s)
//!                                                              │ due
//!        InstanceTypes (cached per NodePool) ──> solve(model.input) ──> Plan
//!                                                              │
//!        record_launch (in flight at once) ──> Launch ×N in parallel (deadline, retries)
//!                                                              │
//!        feedback on the current stream: nominations, unschedulable
//! ```
//!
//! A claim counts as in flight from the moment it is decided, so the next batch neither
//! launches again for its pods nor forgets it against the NodePool's limits. A failed launch
//! puts its pods back in the queue; an insufficient-capacity error also drops the pool's
//! cached instance types so the next solve sees the offerings the actuator now hides.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use berth_scheduler_core::batcher::Batcher;
use berth_scheduler_core::cloud::CloudError;
use berth_scheduler_core::cluster::{ClusterModel, SyncError, node_claim_for};
use berth_scheduler_core::disruption::{self, Command};
use berth_scheduler_core::model::{Instance, InstanceType, NodeClaim, NodePool, ObjectKey};
use berth_scheduler_core::solver::{self, Plan};
use berth_scheduler_core::sync::{Batch, BatchKind, Feedback, Nomination, NominationTarget};
use tokio::sync::{Notify, mpsc, watch};

use crate::metrics;

/// What the scheduler asks of the actuator.
pub trait Cloud: Send + Sync + 'static {
    /// Every instance type the pool may launch, with offerings.
    fn instance_types(
        &self,
        pool: &NodePool,
    ) -> impl Future<Output = Result<Vec<InstanceType>, CloudError>> + Send;
    /// Creates the NodeClaim and its instance (idempotent by name).
    fn launch(
        &self,
        claim: &NodeClaim,
    ) -> impl Future<Output = Result<Instance, CloudError>> + Send;
    /// Carries out a disruption decision (idempotent by its id).
    fn disrupt(&self, command: &Command) -> impl Future<Output = Result<(), CloudError>> + Send;
    /// Hands the nodes an evaluation kept, and why, to whoever publishes them as events (the
    /// actuator, the only writer to the cluster). Best effort; nothing by default.
    fn disruption_blocked(
        &self,
        blocked: &[disruption::Blocked],
    ) -> impl Future<Output = Result<(), CloudError>> + Send {
        let _ = blocked;
        std::future::ready(Ok(()))
    }
}

/// How long a NodeClaim the actuator was told to disrupt counts as disrupting before the
/// watcher shows the actuator's record (wall time: it covers the watch's latency).
pub const DISRUPTED_MEMORY: Duration = Duration::from_secs(2);

/// How long a consolidation search that found nothing is trusted while the cluster stays the
/// same (Karpenter marks its cluster state unconsolidated after 5 minutes).
pub const CONSOLIDATED_TTL: Duration = Duration::from_secs(300);

/// Where the engine reads the time: the wall clock, or a simulated cluster's faster one.
#[derive(Clone)]
pub struct Clock(pub Arc<dyn Fn() -> SystemTime + Send + Sync>);

impl Clock {
    pub fn now(&self) -> SystemTime {
        (self.0)()
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self(Arc::new(SystemTime::now))
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Clock")
    }
}

/// How the engine disrupts.
#[derive(Debug, Clone)]
pub struct DisruptionOptions {
    /// Off: nodes are never removed.
    pub enabled: bool,
    /// How often a settled cluster is evaluated.
    pub interval: Duration,
    /// How long a decision waits before it is checked again and carried out (Karpenter: 15 s).
    pub validation_wait: Duration,
    pub core: disruption::Options,
}

impl Default for DisruptionOptions {
    fn default() -> Self {
        Self {
            enabled: true,
            interval: Duration::from_secs(10),
            validation_wait: Duration::from_secs(15),
            core: disruption::Options::default(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    /// A batch closes after this long without a new pending pod...
    pub batch_idle: Duration,
    /// ...or this long after its first.
    pub batch_max: Duration,
    /// Instance types are fetched again after this.
    pub instance_types_ttl: Duration,
    /// Attempts per launch (retried on `Unavailable`: launches are idempotent by name).
    pub launch_attempts: u32,
    pub disruption: DisruptionOptions,
    /// Decisions' time (pods' and nodes' timestamps are on it).
    pub clock: Clock,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            batch_idle: Duration::from_secs(1),
            batch_max: Duration::from_secs(10),
            instance_types_ttl: Duration::from_secs(300),
            launch_attempts: 3,
            disruption: DisruptionOptions::default(),
            clock: Clock::default(),
        }
    }
}

/// Why a batch was refused; the stream ends with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// Another watcher's stream took over.
    #[error("another watcher's Sync stream took over")]
    Superseded,
    #[error(transparent)]
    Sync(SyncError),
}

struct Cached {
    pool: NodePool,
    types: Vec<InstanceType>,
    at: Instant,
}

struct State {
    model: ClusterModel,
    batcher: Batcher,
    /// The stream whose batches are applied, and where its feedback goes.
    stream: u64,
    feedback: Option<mpsc::Sender<Feedback>>,
    types: HashMap<String, Cached>,
    /// The last disruption evaluation, for `Explain`.
    last_disruption: Option<disruption::DisruptionPlan>,
    /// The consolidation key of the last search that found nothing, and when: the search is
    /// skipped while the cluster gives the same key, for at most [`CONSOLIDATED_TTL`].
    consolidated: Option<(u64, SystemTime)>,
    /// NodeClaims of decisions sent to the actuator that the watcher has not yet reported
    /// recorded, deleting or gone, with when they were sent: counted as disrupting meanwhile,
    /// so they are not chosen again, for at most [`DISRUPTED_MEMORY`].
    disrupted: BTreeMap<String, Instant>,
}

/// The scheduler's state and loop. Cheap to share: clone the `Arc`.
pub struct Engine<C> {
    cloud: C,
    options: Options,
    state: Mutex<State>,
    wake: Notify,
}

impl<C> std::fmt::Debug for Engine<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// What one solve did, for tests and logs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Round {
    pub pods: usize,
    pub launched: Vec<NodeClaim>,
    pub nominations: Vec<Nomination>,
    pub unschedulable: usize,
}

fn claim_name(pool: &str) -> String {
    use rand::Rng as _;
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    let suffix: String = (0..5)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect();
    format!("{pool}-{suffix}")
}

impl<C: Cloud> Engine<C> {
    pub fn new(cloud: C, options: Options) -> Arc<Self> {
        let batcher = Batcher::new(options.batch_idle, options.batch_max);
        Arc::new(Self {
            cloud,
            options,
            state: Mutex::new(State {
                model: ClusterModel::default(),
                batcher,
                stream: 0,
                feedback: None,
                types: HashMap::new(),
                last_disruption: None,
                consolidated: None,
                disrupted: Default::default(),
            }),
            wake: Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A watcher opened a stream: it starts with a snapshot, and feedback goes to it from now.
    pub fn open_stream(&self, feedback: mpsc::Sender<Feedback>) -> u64 {
        let mut s = self.lock();
        s.stream += 1;
        s.model.reset_stream();
        s.feedback = Some(feedback);
        ::metrics::counter!(metrics::SYNC_STREAMS_TOTAL).increment(1);
        s.stream
    }

    /// The stream ended.
    pub fn close_stream(&self, stream: u64) {
        let mut s = self.lock();
        if s.stream == stream {
            s.feedback = None;
        }
    }

    /// Applies a batch from `stream`; the acknowledged sequence.
    pub fn apply(&self, stream: u64, batch: Batch) -> Result<u64, ApplyError> {
        let mut s = self.lock();
        if s.stream != stream {
            return Err(ApplyError::Superseded);
        }
        let kind = batch.kind;
        // Does this batch call for a solve? Any change may: a new pending pod, a NodePool, a
        // claim that failed or came up (its nominated pods may be pending again), capacity
        // freed on a node. The batch window keeps this to one solve per burst.
        let relevant = matches!(kind, BatchKind::SnapshotEnd) || !batch.changes.is_empty();
        s.model.apply(batch).map_err(ApplyError::Sync)?;
        let now = self.options.clock.now();
        s.model.stamp_pod_events(now);
        ::metrics::counter!(metrics::BATCHES_APPLIED_TOTAL, "kind" => match kind {
            BatchKind::Delta => "delta",
            _ => "snapshot",
        })
        .increment(1);
        if relevant && s.model.synced() && s.model.pending().next().is_some() {
            s.batcher.observe(Instant::now());
            drop(s);
            self.wake.notify_one();
            return Ok(self.lock().model.acknowledged());
        }
        Ok(s.model.acknowledged())
    }

    /// Solves whenever a batch window closes, until `stop`.
    pub async fn run(self: Arc<Self>, stop: watch::Receiver<bool>) {
        loop {
            let deadline = self.lock().batcher.deadline();
            let sleep = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = self.wake.notified() => continue,
                () = sleep => {}
                () = berth_service::stopped(stop.clone()) => return,
            }
            if !self.lock().batcher.take_if_due(Instant::now()) {
                continue;
            }
            let round = self.clone().solve_once().await;
            if round.pods > 0 {
                tracing::info!(
                    pods = round.pods,
                    launched = round.launched.len(),
                    nominated = round.nominations.len(),
                    unschedulable = round.unschedulable,
                    "scheduled a batch"
                );
            }
        }
    }

    /// Instance types of every NodePool, fetched where missing, stale or the pool changed.
    async fn instance_types(&self, pools: Vec<NodePool>) -> BTreeMap<String, Vec<InstanceType>> {
        let ttl = self.options.instance_types_ttl;
        let stale: Vec<NodePool> = {
            let s = self.lock();
            pools
                .iter()
                .filter(|p| {
                    s.types
                        .get(&p.name)
                        .is_none_or(|c| c.pool != **p || c.at.elapsed() >= ttl)
                })
                .cloned()
                .collect()
        };
        let fetched = futures::future::join_all(stale.into_iter().map(|pool| async move {
            let r = self.cloud.instance_types(&pool).await;
            (pool, r)
        }))
        .await;
        let mut s = self.lock();
        for (pool, r) in fetched {
            match r {
                Ok(types) => {
                    ::metrics::counter!(metrics::INSTANCE_TYPE_FETCHES_TOTAL, "result" => "ok")
                        .increment(1);
                    s.types.insert(
                        pool.name.clone(),
                        Cached {
                            pool,
                            types,
                            at: Instant::now(),
                        },
                    );
                }
                Err(e) => {
                    ::metrics::counter!(metrics::INSTANCE_TYPE_FETCHES_TOTAL, "result" => "error")
                        .increment(1);
                    tracing::warn!(node_pool = %pool.name, error = %e, "fetching instance types");
                }
            }
        }
        s.types
            .retain(|name, _| pools.iter().any(|p| &p.name == name));
        pools
            .iter()
            .filter_map(|p| Some((p.name.clone(), s.types.get(&p.name)?.types.clone())))
            .collect()
    }

    /// One solve over the pods pending now; launches start in the background.
    pub async fn solve_once(self: Arc<Self>) -> Round {
        let started = Instant::now();
        let pools: Vec<NodePool> = {
            let s = self.lock();
            if !s.model.synced() || s.model.pending().next().is_none() {
                return Round::default();
            }
            s.model.node_pools().cloned().collect()
        };
        let types = self.instance_types(pools).await;
        let input = self.lock().model.input(&types, self.options.clock.now());
        if input.pods.is_empty() {
            return Round::default();
        }
        let plan: Plan = match tokio::task::spawn_blocking(move || solver::solve(&input)).await {
            Ok(plan) => plan,
            Err(e) => {
                tracing::error!(error = %e, "the solver panicked");
                return Round::default();
            }
        };
        let now = self.options.clock.now();
        let mut round = Round {
            pods: plan.stats.pods,
            unschedulable: plan.unschedulable.len(),
            ..Round::default()
        };
        let feedback = {
            let mut s = self.lock();
            for new in &plan.new_node_claims {
                let Some(pool) = s.model.node_pool(&new.node_pool).cloned() else {
                    continue;
                };
                let claim = node_claim_for(new, &pool, &claim_name(&pool.name), now);
                s.model.record_launch(claim.clone(), &new.pods);
                for pod in &new.pods {
                    round.nominations.push(Nomination {
                        pod: pod.clone(),
                        target: NominationTarget::NodeClaim(claim.name.clone()),
                    });
                }
                round.launched.push(claim);
            }
            for p in &plan.placements {
                if let NominationTarget::NodeClaim(c) = &p.target {
                    s.model.nominate(p.pod.clone(), c);
                }
                round.nominations.push(Nomination {
                    pod: p.pod.clone(),
                    target: p.target.clone(),
                });
            }
            for n in &round.nominations {
                if let Some(pod) = s.model.pod(&n.pod)
                    && let Ok(waited) = now.duration_since(pod.created_at)
                {
                    ::metrics::histogram!(metrics::POD_NOMINATION_SECONDS)
                        .record(waited.as_secs_f64());
                }
            }
            ::metrics::gauge!(metrics::PENDING_PODS, "reason" => "unschedulable")
                .set(plan.unschedulable.len() as f64);
            ::metrics::gauge!(metrics::PENDING_PODS, "reason" => "nominated")
                .set(round.nominations.len() as f64);
            let feedback = Feedback {
                acknowledged: s.model.acknowledged(),
                nominations: round.nominations.clone(),
                unschedulable: plan.unschedulable.clone(),
            };
            s.feedback.clone().map(|tx| (tx, feedback))
        };
        ::metrics::histogram!(metrics::BATCH_SIZE).record(plan.stats.pods as f64);
        ::metrics::histogram!(metrics::SCHEDULING_DURATION_SECONDS)
            .record(started.elapsed().as_secs_f64());
        if let Some((tx, f)) = feedback
            && tx.try_send(f).is_err()
        {
            tracing::warn!("the watcher is not reading feedback; this round's events are dropped");
        }
        for claim in &round.launched {
            let engine = self.clone();
            let claim = claim.clone();
            tokio::spawn(async move { engine.launch(claim).await });
        }
        round
    }

    async fn launch(self: Arc<Self>, claim: NodeClaim) {
        let mut attempt = 0;
        let result = loop {
            attempt += 1;
            match self.cloud.launch(&claim).await {
                Err(CloudError::Unavailable { message })
                    if attempt < self.options.launch_attempts =>
                {
                    tracing::warn!(node_claim = %claim.name, attempt, %message, "launch: cloud unavailable; retrying");
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                }
                r => break r,
            }
        };
        match result {
            Ok(instance) => {
                ::metrics::counter!(metrics::NODE_CLAIMS_LAUNCHED_TOTAL, "nodepool" => claim.node_pool.clone())
                    .increment(1);
                tracing::info!(
                    node_claim = %claim.name,
                    node_pool = %claim.node_pool,
                    instance_type = %instance.instance_type,
                    zone = %instance.zone,
                    "launched"
                );
            }
            Err(e) => {
                ::metrics::counter!(metrics::LAUNCH_ERRORS_TOTAL, "nodepool" => claim.node_pool.clone(), "code" => e.code())
                    .increment(1);
                tracing::warn!(node_claim = %claim.name, error = %e, "launch failed; its pods are pending again");
                let mut s = self.lock();
                s.model.forget_claim(&claim.name);
                if matches!(e, CloudError::InsufficientCapacity { .. }) {
                    s.types.remove(&claim.node_pool);
                }
                s.batcher.observe(Instant::now());
                drop(s);
                self.wake.notify_one();
            }
        }
    }

    /// What the scheduler would do for one pod now.
    pub async fn explain(&self, pod: &ObjectKey) -> Explanation {
        let pools: Vec<NodePool> = {
            let s = self.lock();
            match s.model.pod(pod) {
                None => return Explanation::NotPending("not known to the scheduler".into()),
                Some(p) if p.node_name.is_some() => {
                    return Explanation::NotPending(format!(
                        "bound to node {}",
                        p.node_name.as_deref().unwrap_or_default()
                    ));
                }
                Some(p) if !p.unschedulable => {
                    return Explanation::NotPending(
                        "the kube-scheduler has not marked it Unschedulable".into(),
                    );
                }
                Some(_) => {}
            }
            if let Some(c) = s.model.nomination(pod) {
                return Explanation::NodeClaim(c.to_owned());
            }
            s.model.node_pools().cloned().collect()
        };
        let types = self.instance_types(pools.clone()).await;
        let mut input = self.lock().model.input(&types, self.options.clock.now());
        input.pods.retain(|p| &p.key == pod);
        let plan = solver::solve(&input);
        if let Some(c) = plan.new_node_claims.first() {
            return Explanation::WouldLaunch {
                node_pool: c.node_pool.clone(),
                instance_types: c.instance_types.iter().map(|o| o.name.clone()).collect(),
            };
        }
        if let Some(p) = plan.placements.first() {
            return match &p.target {
                NominationTarget::Node(n) => Explanation::Node(n.clone()),
                NominationTarget::NodeClaim(c) => Explanation::NodeClaim(c.clone()),
            };
        }
        // Not schedulable: ask each pool alone, so every pool's reason is shown.
        let mut reasons = Vec::new();
        for pool in &pools {
            let mut alone = input.clone();
            alone.node_pools.retain(|p| p.node_pool.name == pool.name);
            let reason = if alone.node_pools.is_empty() {
                "no instance types (the actuator could not be asked)".to_owned()
            } else {
                solver::solve(&alone)
                    .unschedulable
                    .first()
                    .map(|u| u.reason.clone())
                    .unwrap_or_default()
            };
            reasons.push((pool.name.clone(), reason));
        }
        if reasons.is_empty() {
            reasons.push((
                String::new(),
                plan.unschedulable
                    .first()
                    .map(|u| u.reason.clone())
                    .unwrap_or_else(|| "no NodePool".into()),
            ));
        }
        Explanation::NotSchedulable(reasons)
    }

    /// Evaluates disruption every `interval` while the cluster is settled, until `stop`.
    /// The NodePools' cost per hour ([`metrics::NODEPOOL_COST_PER_HOUR`]) is recorded at the
    /// same interval, disruption enabled or not and whether or not pods are pending.
    pub async fn run_disruption(self: Arc<Self>, stop: watch::Receiver<bool>) {
        let mut every = tokio::time::interval(self.options.disruption.interval);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => {}
                () = berth_service::stopped(stop.clone()) => return,
            }
            self.record_costs().await;
            if !self.options.disruption.enabled {
                continue;
            }
            let stop = stop.clone();
            tokio::select! {
                _ = self.clone().disrupt_once() => {}
                () = berth_service::stopped(stop) => return,
            }
        }
    }

    /// The disruption input now, or `None` while the cluster is not settled (pods pending,
    /// claims in flight: provisioning goes first).
    /// Sets [`metrics::NODEPOOL_COST_PER_HOUR`] and [`metrics::UNPRICED_NODES`] from the
    /// nodes the model holds and their NodePools' offerings.
    async fn record_costs(&self) {
        let pools: Vec<NodePool> = {
            let s = self.lock();
            if !s.model.synced() {
                return;
            }
            s.model.node_pools().cloned().collect()
        };
        let types = self.instance_types(pools).await;
        let costs = {
            let s = self.lock();
            let input = s.model.disruption_input(
                &types,
                self.options.clock.now(),
                self.options.disruption.core.clone(),
            );
            disruption::cost_per_hour(&input.cluster)
        };
        for (pool, dollars) in &costs.per_hour {
            ::metrics::gauge!(metrics::NODEPOOL_COST_PER_HOUR, "nodepool" => pool.clone())
                .set(*dollars);
        }
        ::metrics::gauge!(metrics::UNPRICED_NODES).set(costs.unpriced as f64);
    }

    async fn disruption_input(&self) -> Option<disruption::DisruptionInput> {
        let pools: Vec<NodePool> = {
            let s = self.lock();
            if !s.model.synced() || !s.model.settled() {
                tracing::trace!(
                    synced = s.model.synced(),
                    "disruption waits for a settled cluster"
                );
                return None;
            }
            s.model.node_pools().cloned().collect()
        };
        let types = self.instance_types(pools).await;
        let mut s = self.lock();
        if !s.model.settled() {
            return None;
        }
        let mut input = s.model.disruption_input(
            &types,
            self.options.clock.now(),
            self.options.disruption.core.clone(),
        );
        let model = &s.model;
        // Until the watcher shows the actuator's record (or the deletion), the claim counts as
        // disrupting. A record the actuator wrote and rolled back at once may never be seen
        // (the watcher coalesces updates): such an entry lapses after DISRUPTED_MEMORY, or the
        // claim would count as disrupting for ever and hold its NodePool's budget.
        let still: BTreeMap<String, Instant> = s
            .disrupted
            .iter()
            .filter(|(c, sent)| {
                sent.elapsed() < DISRUPTED_MEMORY
                    && model.node_claim(c).is_some_and(|c| {
                        !c.deleting
                            && !c
                                .annotations
                                .contains_key(berth_scheduler_core::labels::DISRUPTION_ID)
                    })
            })
            .map(|(c, sent)| (c.clone(), *sent))
            .collect();
        for c in &mut input.node_claims {
            if still.contains_key(&c.name) {
                c.deleting = true;
            }
        }
        s.disrupted = still;
        input.options.consolidated = s
            .consolidated
            .filter(|(_, at)| {
                input
                    .cluster
                    .now
                    .duration_since(*at)
                    .is_ok_and(|age| age < CONSOLIDATED_TTL)
            })
            .map(|(key, _)| key);
        Some(input)
    }

    /// One evaluation: decide, wait, validate against fresh state, carry out. The decision
    /// carried out, if any.
    pub async fn disrupt_once(self: Arc<Self>) -> Option<Command> {
        let input = self.disruption_input().await?;
        let evaluated_at = input.cluster.now;
        let started = Instant::now();
        let plan = tokio::task::spawn_blocking(move || disruption::decide(&input))
            .await
            .ok()?;
        ::metrics::histogram!(metrics::DISRUPTION_EVALUATION_SECONDS)
            .record(started.elapsed().as_secs_f64());
        ::metrics::gauge!(metrics::DISRUPTION_ELIGIBLE_NODES).set(plan.stats.eligible as f64);
        if plan.consolidation_key.is_some() {
            let outcome = if plan.stats.consolidation_skipped {
                "skipped"
            } else if plan.stats.timed_out {
                "timed_out"
            } else {
                "searched"
            };
            ::metrics::counter!(metrics::DISRUPTION_CONSOLIDATION_SEARCHES_TOTAL, "outcome" => outcome)
                .increment(1);
        }
        for b in &plan.budgets {
            let reason = format!("{:?}", b.reason);
            ::metrics::gauge!(metrics::DISRUPTION_BUDGET_ALLOWED, "nodepool" => b.node_pool.clone(), "reason" => reason.clone())
                .set(b.allowed as f64);
            ::metrics::gauge!(metrics::DISRUPTION_BUDGET_DISRUPTING, "nodepool" => b.node_pool.clone(), "reason" => reason)
                .set(b.disrupting as f64);
        }
        for b in &plan.blocked {
            tracing::debug!(node = %b.node, node_pool = %b.node_pool, reason = %b.reason, "not disrupted");
        }
        self.report_blocked(&plan.blocked).await;
        let decision = plan.decision.clone();
        {
            let mut s = self.lock();
            // Karpenter's "consolidated" state: a full search that found nothing is not run
            // again until the cluster changes (or the state lapses: prices move).
            s.consolidated = match (&plan.decision, plan.consolidation_key) {
                (None, Some(_)) if plan.stats.consolidation_skipped => s.consolidated,
                (None, Some(key)) if !plan.stats.timed_out => Some((key, evaluated_at)),
                _ => None,
            };
            s.last_disruption = Some(plan);
        }
        let decision = decision?;
        let method = decision.method.as_str();
        tracing::info!(
            method,
            nodes = ?decision.node_names(),
            replacements = decision.replacements.len(),
            savings_per_hour = decision.savings_per_hour,
            "disruption decided; validating after the wait"
        );
        tokio::time::sleep(self.options.disruption.validation_wait).await;
        let Some(fresh) = self.disruption_input().await else {
            ::metrics::counter!(metrics::DISRUPTION_DECISIONS_TOTAL, "method" => method, "decision" => "invalidated").increment(1);
            tracing::info!(method, "disruption dropped: the cluster is not settled");
            return None;
        };
        let decision = match disruption::validate(&fresh, &decision) {
            Ok(d) => d,
            Err(why) => {
                ::metrics::counter!(metrics::DISRUPTION_DECISIONS_TOTAL, "method" => method, "decision" => "invalidated").increment(1);
                tracing::info!(method, %why, "disruption dropped on validation");
                return None;
            }
        };
        let now = self.options.clock.now();
        let command = {
            let mut s = self.lock();
            let mut replacements = Vec::new();
            for new in &decision.replacements {
                let Some(pool) = s.model.node_pool(&new.node_pool).cloned() else {
                    continue;
                };
                let claim = node_claim_for(new, &pool, &claim_name(&pool.name), now);
                // In flight from now: provisioning counts it, and the candidates' pods find
                // it once they are evicted.
                s.model.record_launch(claim.clone(), &[]);
                replacements.push(claim);
            }
            Command {
                id: claim_name("disruption"),
                method: decision.method,
                node_claims: decision
                    .candidates
                    .iter()
                    .map(|c| c.node_claim.clone())
                    .collect(),
                replacements,
                savings_per_hour: decision.savings_per_hour,
                reason: decision.reason.clone(),
            }
        };
        match self.cloud.disrupt(&command).await {
            Ok(()) => {
                let sent = Instant::now();
                self.lock()
                    .disrupted
                    .extend(command.node_claims.iter().map(|c| (c.clone(), sent)));
                ::metrics::counter!(metrics::DISRUPTION_DECISIONS_TOTAL, "method" => method, "decision" => "executed").increment(1);
                ::metrics::counter!(metrics::DISRUPTION_NODES_TOTAL, "method" => method)
                    .increment(command.node_claims.len() as u64);
                tracing::info!(
                    decision = %command.id,
                    method,
                    node_claims = ?command.node_claims,
                    savings_per_hour = command.savings_per_hour,
                    "disrupting"
                );
                Some(command)
            }
            Err(e) => {
                ::metrics::counter!(metrics::DISRUPTION_DECISIONS_TOTAL, "method" => method, "decision" => "failed").increment(1);
                tracing::warn!(decision = %command.id, error = %e, "disruption refused by the actuator");
                let mut s = self.lock();
                for c in &command.replacements {
                    s.model.forget_claim(&c.name);
                }
                None
            }
        }
    }

    /// Hands an evaluation's blocked nodes to the actuator for its events. Best effort: a
    /// failure is logged, never holds up disruption.
    async fn report_blocked(&self, blocked: &[disruption::Blocked]) {
        if let Err(e) = self.cloud.disruption_blocked(blocked).await {
            tracing::debug!(error = %e, "reporting blocked nodes to the actuator");
        }
    }

    /// Why `node` is still here (or what disruption would do with it), from the last
    /// evaluation.
    pub fn explain_node(&self, node: &str) -> String {
        let s = self.lock();
        let Some(plan) = &s.last_disruption else {
            return if self.options.disruption.enabled {
                "disruption has not been evaluated yet (the cluster has not settled)".into()
            } else {
                "disruption is disabled (--disruption=false)".into()
            };
        };
        if let Some(d) = &plan.decision
            && d.candidates.iter().any(|c| c.node == node)
        {
            return format!(
                "being disrupted: {} ({}), saving ${:.4}/h",
                d.method.as_str(),
                d.reason,
                d.savings_per_hour
            );
        }
        if let Some(b) = plan.blocked.iter().find(|b| b.node == node) {
            return format!("kept: {}", b.reason);
        }
        "kept: its pods need it (no cheaper arrangement found), or it is not managed by a NodePool"
            .into()
    }

    /// Pods pending, claims launched but not yet reported: for tests and `/readyz`.
    pub fn synced(&self) -> bool {
        self.lock().model.synced()
    }
}

/// The answer to `Explain`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Explanation {
    Node(String),
    NodeClaim(String),
    WouldLaunch {
        node_pool: String,
        instance_types: Vec<String>,
    },
    /// Per NodePool, why not.
    NotSchedulable(Vec<(String, String)>),
    NotPending(String),
}
