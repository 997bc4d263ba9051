//! The `berth.v1.CloudProvider` gRPC service: validate, convert, call the provider and the
//! NodeClaim store, map errors to statuses. Nothing else lives here.

use std::time::Instant;

use berth_cloud::{CloudError, CloudProvider, InstanceState};
use berth_proto::status::to_status;
use berth_proto::v1 as pb;
use berth_proto::v1::cloud_provider_server::CloudProvider as CloudProviderRpc;
use berth_scheduler_core::model::{NodeClaim, NodePool};
use tonic::{Request, Response, Status};

use crate::metrics as m;
use crate::store::{DisruptionMark, NodeClaimStore, StoreError};

/// Serves `provider` and writes NodeClaims to `store`.
#[derive(Debug, Clone)]
pub struct CloudService<P, S> {
    provider: P,
    store: S,
    drained: bool,
    events: Option<crate::events::Recorder>,
    clock: crate::Clock,
}

impl<P, S> CloudService<P, S> {
    /// Terminate calls the cloud itself: there is no cluster whose node needs draining.
    pub fn new(provider: P, store: S) -> Self {
        Self {
            provider,
            store,
            drained: false,
            events: None,
            clock: crate::Clock::default(),
        }
    }

    /// A disruption decision's start is recorded on `clock` (the cluster's time, which the
    /// lifecycle compares it with; the wall clock by default).
    pub fn with_clock(mut self, clock: crate::Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Publishes disruption events (`DisruptionLaunching`, and `DisruptionBlocked` for what
    /// the scheduler reports) through `recorder`.
    pub fn with_events(mut self, recorder: crate::events::Recorder) -> Self {
        self.events = Some(recorder);
        self
    }

    /// Terminate only deletes the NodeClaim: the lifecycle controller holds it by its
    /// finalizer, drains the node, terminates the instance and lets it go.
    pub fn drained_by_lifecycle(mut self) -> Self {
        self.drained = true;
        self
    }
}

fn store_status(e: StoreError) -> Status {
    match e {
        StoreError::NotFound(name) => Status::not_found(format!("NodeClaim {name} not found")),
        StoreError::Unavailable(m) => Status::unavailable(m),
        StoreError::Conflict(m) => Status::failed_precondition(m),
    }
}

fn required_name(name: &str) -> Result<(), Status> {
    if name.is_empty() {
        return Err(to_status(&CloudError::InvalidArgument {
            field: "node_claim".to_owned(),
            message: "required".to_owned(),
        }));
    }
    Ok(())
}

/// Times a call into `berth_actuator_rpc_duration_seconds`.
fn observe<T>(method: &'static str, started: Instant, out: &Result<T, Status>) {
    let code = match out {
        Ok(_) => "OK".to_owned(),
        Err(s) => format!("{:?}", s.code()),
    };
    metrics::histogram!(m::RPC_DURATION_SECONDS, "method" => method, "code" => code)
        .record(started.elapsed().as_secs_f64());
}

impl<P: CloudProvider, S: NodeClaimStore> CloudService<P, S> {
    async fn do_instance_types(
        &self,
        r: pb::InstanceTypesRequest,
    ) -> Result<pb::InstanceTypesResponse, Status> {
        let np: NodePool = r
            .node_pool
            .ok_or_else(|| {
                to_status(&CloudError::InvalidArgument {
                    field: "node_pool".to_owned(),
                    message: "required".to_owned(),
                })
            })?
            .try_into()?;
        let types = self
            .provider
            .instance_types(&np)
            .await
            .map_err(|e| to_status(&e))?;
        Ok(pb::InstanceTypesResponse {
            instance_types: types.iter().map(Into::into).collect(),
        })
    }

    async fn do_launch(&self, r: pb::LaunchRequest) -> Result<pb::LaunchResponse, Status> {
        let claim: NodeClaim = r
            .node_claim
            .ok_or_else(|| {
                to_status(&CloudError::InvalidArgument {
                    field: "node_claim".to_owned(),
                    message: "required".to_owned(),
                })
            })?
            .try_into()?;
        required_name(&claim.name)?;
        // The NodeClaim exists (with its finalizer) before any instance does.
        self.store.create(&claim).await.map_err(store_status)?;
        match crate::launch::launch(&self.provider, &self.store, &claim).await {
            Ok(instance) => Ok(pb::LaunchResponse {
                instance: Some((&instance).into()),
            }),
            Err(crate::launch::LaunchError::Cloud(e)) => Err(to_status(&e)),
            Err(crate::launch::LaunchError::Store(e)) => Err(store_status(e)),
        }
    }

    async fn do_disrupt(&self, r: pb::DisruptRequest) -> Result<pb::DisruptResponse, Status> {
        let command: berth_scheduler_core::disruption::Command = r.try_into()?;
        if !self.drained {
            return Err(Status::failed_precondition(
                "disruption needs the lifecycle controller (an actuator with a Kubernetes cluster)",
            ));
        }
        for (i, c) in command.replacements.iter().enumerate() {
            if c.name.is_empty() {
                return Err(to_status(&CloudError::InvalidArgument {
                    field: format!("replacements[{i}].name"),
                    message: "required".to_owned(),
                }));
            }
        }
        let mark = DisruptionMark {
            id: command.id.clone(),
            method: command.method.as_str().to_owned(),
            replacements: command
                .replacements
                .iter()
                .map(|c| c.name.clone())
                .collect(),
            started_at: self.clock.now(),
            savings_per_hour: Some(command.savings_per_hour),
            reason: command.reason.clone(),
        };
        // Recorded first: from here on the decision survives a crash (the lifecycle carries
        // it on, or rolls it back when its replacements never appear).
        let mut marked = Vec::new();
        for name in &command.node_claims {
            if let Err(e) = self.store.mark_disruption(name, &mark).await {
                self.roll_back(&marked, &command.id).await;
                return Err(store_status(e));
            }
            marked.push(name.clone());
        }
        let launches = command.replacements.iter().map(|claim| async move {
            self.store.create(claim).await.map_err(store_status)?;
            match crate::launch::launch(&self.provider, &self.store, claim).await {
                Ok(_) => Ok(()),
                Err(crate::launch::LaunchError::Cloud(e)) => Err(to_status(&e)),
                Err(crate::launch::LaunchError::Store(e)) => Err(store_status(e)),
            }
        });
        if let Some(e) = futures::future::join_all(launches)
            .await
            .into_iter()
            .find_map(Result::err)
        {
            self.roll_back(&marked, &command.id).await;
            return Err(e);
        }
        if let Some(events) = &self.events {
            for claim in &command.replacements {
                if let Some(involved) = events.node_claim(&claim.name).await {
                    events
                        .publish(vec![crate::events::launching(
                            involved,
                            command.method.as_str(),
                        )])
                        .await;
                }
            }
        }
        metrics::counter!(m::DISRUPTION_ACTIONS_TOTAL, "method" => command.method.as_str(), "action" => "recorded").increment(1);
        tracing::info!(
            decision = %command.id,
            method = command.method.as_str(),
            node_claims = ?command.node_claims,
            replacements = ?mark.replacements,
            savings_per_hour = command.savings_per_hour,
            reason = %command.reason,
            "disruption recorded"
        );
        Ok(pb::DisruptResponse {})
    }

    /// Clears a decision's record from the claims it was written on (best effort: the
    /// lifecycle rolls back a decision whose replacements never appear anyway).
    async fn roll_back(&self, claims: &[String], id: &str) {
        for name in claims {
            if let Err(e) = self.store.clear_disruption(name, id).await {
                tracing::warn!(node_claim = %name, decision = %id, error = %e, "clearing a disruption record");
            }
        }
    }

    async fn do_disruption_blocked(
        &self,
        r: pb::DisruptionBlockedRequest,
    ) -> Result<pb::DisruptionBlockedResponse, Status> {
        for (i, b) in r.blocked.iter().enumerate() {
            if b.node.is_empty() {
                return Err(to_status(&CloudError::InvalidArgument {
                    field: format!("blocked[{i}].node"),
                    message: "required".to_owned(),
                }));
            }
        }
        // Without a cluster there is nothing to publish on.
        if let Some(events) = &self.events {
            events.blocked(&r.blocked).await;
        }
        Ok(pb::DisruptionBlockedResponse {})
    }

    async fn do_terminate(&self, r: pb::TerminateRequest) -> Result<pb::TerminateResponse, Status> {
        required_name(&r.node_claim)?;
        if self.drained {
            // The claim gone means drained, terminated and finalized.
            if !self
                .store
                .exists(&r.node_claim)
                .await
                .map_err(store_status)?
            {
                return Ok(pb::TerminateResponse {
                    state: pb::TerminationState::Terminated as i32,
                });
            }
            self.store
                .delete(&r.node_claim)
                .await
                .map_err(store_status)?;
            return Ok(pb::TerminateResponse {
                state: pb::TerminationState::Terminating as i32,
            });
        }
        self.store
            .delete(&r.node_claim)
            .await
            .map_err(store_status)?;
        let instance = self.provider.get(&r.node_claim).await.ok();
        match self.provider.delete(&r.node_claim).await {
            Ok(()) => {
                if let Some(i) = instance.filter(|i| i.state != InstanceState::ShuttingDown) {
                    metrics::counter!(m::TERMINATIONS_TOTAL,
                        "nodepool" => i.node_pool.clone(),
                        "instance_type" => i.instance_type.clone(),
                        "zone" => i.zone.clone(),
                        "capacity_type" => i.capacity_type.as_str())
                    .increment(1);
                }
                Ok(pb::TerminateResponse {
                    state: pb::TerminationState::Terminating as i32,
                })
            }
            Err(CloudError::NotFound { .. }) => {
                self.store
                    .finalize(&r.node_claim)
                    .await
                    .map_err(store_status)?;
                Ok(pb::TerminateResponse {
                    state: pb::TerminationState::Terminated as i32,
                })
            }
            Err(e) => Err(to_status(&e)),
        }
    }
}

#[tonic::async_trait]
impl<P: CloudProvider + Clone, S: NodeClaimStore + Clone> CloudProviderRpc for CloudService<P, S> {
    #[tracing::instrument(skip_all)]
    async fn instance_types(
        &self,
        request: Request<pb::InstanceTypesRequest>,
    ) -> Result<Response<pb::InstanceTypesResponse>, Status> {
        let started = Instant::now();
        let out = self.do_instance_types(request.into_inner()).await;
        observe("InstanceTypes", started, &out);
        out.map(Response::new)
    }

    #[tracing::instrument(skip_all)]
    async fn launch(
        &self,
        request: Request<pb::LaunchRequest>,
    ) -> Result<Response<pb::LaunchResponse>, Status> {
        let started = Instant::now();
        // A launch runs to its end even when the caller goes away (a scheduler killed
        // mid-call): the NodeClaim object already exists by then, and a claim left without
        // its instance would hold the scheduler's pods until the registration TTL.
        let this = self.clone();
        let request = request.into_inner();
        let out = tokio::spawn(async move { this.do_launch(request).await })
            .await
            .unwrap_or_else(|e| Err(Status::internal(format!("the launch task failed: {e}"))));
        observe("Launch", started, &out);
        out.map(Response::new)
    }

    #[tracing::instrument(skip_all)]
    async fn terminate(
        &self,
        request: Request<pb::TerminateRequest>,
    ) -> Result<Response<pb::TerminateResponse>, Status> {
        let started = Instant::now();
        let out = self.do_terminate(request.into_inner()).await;
        observe("Terminate", started, &out);
        out.map(Response::new)
    }

    #[tracing::instrument(skip_all)]
    async fn disrupt(
        &self,
        request: Request<pb::DisruptRequest>,
    ) -> Result<Response<pb::DisruptResponse>, Status> {
        let started = Instant::now();
        // As a launch: carried to its end when the caller goes away.
        let this = self.clone();
        let request = request.into_inner();
        let out = tokio::spawn(async move { this.do_disrupt(request).await })
            .await
            .unwrap_or_else(|e| Err(Status::internal(format!("the disruption task failed: {e}"))));
        observe("Disrupt", started, &out);
        out.map(Response::new)
    }

    #[tracing::instrument(skip_all)]
    async fn disruption_blocked(
        &self,
        request: Request<pb::DisruptionBlockedRequest>,
    ) -> Result<Response<pb::DisruptionBlockedResponse>, Status> {
        let started = Instant::now();
        let out = self.do_disruption_blocked(request.into_inner()).await;
        observe("DisruptionBlocked", started, &out);
        out.map(Response::new)
    }

    #[tracing::instrument(skip_all)]
    async fn get(
        &self,
        request: Request<pb::GetRequest>,
    ) -> Result<Response<pb::GetResponse>, Status> {
        let started = Instant::now();
        let r = request.into_inner();
        let out = async {
            required_name(&r.node_claim)?;
            let i = self
                .provider
                .get(&r.node_claim)
                .await
                .map_err(|e| to_status(&e))?;
            Ok(pb::GetResponse {
                instance: Some((&i).into()),
            })
        }
        .await;
        observe("Get", started, &out);
        out.map(Response::new)
    }

    #[tracing::instrument(skip_all)]
    async fn list(
        &self,
        _request: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        let started = Instant::now();
        let out = self
            .provider
            .list()
            .await
            .map(|all| pb::ListResponse {
                instances: all.iter().map(Into::into).collect(),
            })
            .map_err(|e| to_status(&e));
        observe("List", started, &out);
        out.map(Response::new)
    }
}
