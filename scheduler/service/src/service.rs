//! The gRPC adapters: `berth.v1.Scheduler` served to the watcher, and the engine's [`Cloud`]
//! over the actuator's `berth.v1.CloudProvider`.

use std::pin::Pin;
use std::sync::Arc;

use berth_proto::v1 as p;
use berth_scheduler_core::cloud::CloudError;
use berth_scheduler_core::disruption::Command;
use berth_scheduler_core::model::{Instance, InstanceType, NodeClaim, NodePool, ObjectKey};
use berth_scheduler_core::sync::{Batch, Feedback};
use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::engine::{ApplyError, Cloud, Engine, Explanation};

/// Serves `berth.v1.Scheduler` over an [`Engine`].
pub struct SchedulerService<C> {
    engine: Arc<Engine<C>>,
}

impl<C> std::fmt::Debug for SchedulerService<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchedulerService").finish_non_exhaustive()
    }
}

impl<C> SchedulerService<C> {
    pub fn new(engine: Arc<Engine<C>>) -> Self {
        Self { engine }
    }
}

type SyncStream = Pin<Box<dyn Stream<Item = Result<p::SyncResponse, Status>> + Send>>;

fn response(f: &Feedback) -> p::SyncResponse {
    p::SyncResponse {
        feedback: Some(p::Feedback::from(f)),
    }
}

#[tonic::async_trait]
impl<C: Cloud> p::scheduler_server::Scheduler for SchedulerService<C> {
    type SyncStream = SyncStream;

    async fn sync(
        &self,
        request: Request<Streaming<p::SyncRequest>>,
    ) -> Result<Response<Self::SyncStream>, Status> {
        let mut inbound = request.into_inner();
        let hello = match inbound.message().await? {
            Some(p::SyncRequest {
                message: Some(p::sync_request::Message::Hello(h)),
            }) => h,
            _ => {
                return Err(Status::invalid_argument(
                    "message: the first message must be hello",
                ));
            }
        };
        tracing::info!(watcher = %hello.watcher_id, "watcher connected");
        let (out, rx) = mpsc::channel::<Result<p::SyncResponse, Status>>(64);
        // Feedback from solves goes through its own bounded queue into the stream.
        let (feedback_tx, mut feedback_rx) = mpsc::channel::<Feedback>(64);
        let stream = self.engine.open_stream(feedback_tx);
        let engine = self.engine.clone();
        let forward = out.clone();
        tokio::spawn(async move {
            while let Some(f) = feedback_rx.recv().await {
                if forward.send(Ok(response(&f))).await.is_err() {
                    break;
                }
            }
        });
        tokio::spawn(async move {
            let end = loop {
                let batch = match inbound.message().await {
                    Ok(Some(p::SyncRequest {
                        message: Some(p::sync_request::Message::Batch(b)),
                    })) => b,
                    Ok(Some(_)) => {
                        break Some(Status::invalid_argument(
                            "message: only batches may follow hello",
                        ));
                    }
                    Ok(None) => break None,
                    Err(status) => {
                        tracing::info!(%status, "watcher stream broke");
                        break None;
                    }
                };
                let batch = match Batch::try_from(batch) {
                    Ok(b) => b,
                    Err(e) => break Some(Status::from(e)),
                };
                match engine.apply(stream, batch) {
                    Ok(acknowledged) => {
                        let ack = Feedback {
                            acknowledged,
                            ..Feedback::default()
                        };
                        if out.send(Ok(response(&ack))).await.is_err() {
                            break None;
                        }
                    }
                    Err(ApplyError::Superseded) => {
                        break Some(Status::aborted(ApplyError::Superseded.to_string()));
                    }
                    Err(e @ ApplyError::Sync(_)) => {
                        break Some(Status::failed_precondition(format!(
                            "{e}; reconnect and start with a snapshot"
                        )));
                    }
                }
            };
            engine.close_stream(stream);
            if let Some(status) = end {
                tracing::warn!(%status, "ending a watcher's stream");
                let _ = out.send(Err(status)).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn explain(
        &self,
        request: Request<p::ExplainRequest>,
    ) -> Result<Response<p::ExplainResponse>, Status> {
        let request = request.into_inner();
        use p::explain_response::Outcome;
        if !request.node.is_empty() {
            if request.pod.is_some() {
                return Err(Status::invalid_argument("pod, node: give one, not both"));
            }
            return Ok(Response::new(p::ExplainResponse {
                outcome: Some(Outcome::Disruption(self.engine.explain_node(&request.node))),
            }));
        }
        let key = request
            .pod
            .ok_or_else(|| Status::invalid_argument("pod: required (or node)"))?;
        if key.name.is_empty() {
            return Err(Status::invalid_argument("pod.name: required"));
        }
        let key = ObjectKey::new(
            if key.namespace.is_empty() {
                "default"
            } else {
                &key.namespace
            },
            &key.name,
        );
        let outcome = match self.engine.explain(&key).await {
            Explanation::Node(n) => Outcome::Node(n),
            Explanation::NodeClaim(c) => Outcome::NodeClaim(c),
            Explanation::WouldLaunch {
                node_pool,
                instance_types,
            } => Outcome::WouldLaunch(p::WouldLaunch {
                node_pool,
                instance_types,
            }),
            Explanation::NotSchedulable(reasons) => Outcome::NotSchedulable(p::NotSchedulable {
                reasons: reasons
                    .into_iter()
                    .map(|(node_pool, reason)| p::NodePoolReason { node_pool, reason })
                    .collect(),
            }),
            Explanation::NotPending(why) => Outcome::NotPending(why),
        };
        Ok(Response::new(p::ExplainResponse {
            outcome: Some(outcome),
        }))
    }
}

/// The actuator, over gRPC.
#[derive(Debug, Clone)]
pub struct GrpcCloud {
    client: p::cloud_provider_client::CloudProviderClient<tonic::transport::Channel>,
}

impl GrpcCloud {
    /// A lazily connected client (reconnects by itself when the actuator restarts).
    pub fn new(endpoint: tonic::transport::Endpoint) -> Self {
        Self {
            client: p::cloud_provider_client::CloudProviderClient::new(endpoint.connect_lazy())
                .max_decoding_message_size(64 << 20),
        }
    }
}

fn conversion(e: berth_proto::ConversionError) -> CloudError {
    CloudError::Unavailable {
        message: format!("the actuator answered with a malformed message: {e}"),
    }
}

impl Cloud for GrpcCloud {
    async fn instance_types(&self, pool: &NodePool) -> Result<Vec<InstanceType>, CloudError> {
        let response = self
            .client
            .clone()
            .instance_types(p::InstanceTypesRequest {
                node_pool: Some(p::NodePool::from(pool)),
            })
            .await
            .map_err(|s| berth_proto::status::from_status(&s))?;
        Vec::<InstanceType>::try_from(response.into_inner()).map_err(conversion)
    }

    async fn launch(&self, claim: &NodeClaim) -> Result<Instance, CloudError> {
        let response = self
            .client
            .clone()
            .launch(p::LaunchRequest {
                node_claim: Some(p::NodeClaim::from(claim)),
            })
            .await
            .map_err(|s| berth_proto::status::from_status(&s))?;
        let instance = response
            .into_inner()
            .instance
            .ok_or_else(|| CloudError::Unavailable {
                message: "the actuator's LaunchResponse has no instance".into(),
            })?;
        Instance::try_from(instance).map_err(conversion)
    }

    async fn disrupt(&self, command: &Command) -> Result<(), CloudError> {
        self.client
            .clone()
            .disrupt(p::DisruptRequest::from(command))
            .await
            .map_err(|s| berth_proto::status::from_status(&s))?;
        Ok(())
    }

    async fn disruption_blocked(
        &self,
        blocked: &[berth_scheduler_core::disruption::Blocked],
    ) -> Result<(), CloudError> {
        match self
            .client
            .clone()
            .disruption_blocked(p::DisruptionBlockedRequest::from(blocked))
            .await
        {
            Ok(_) => Ok(()),
            // An actuator from before the RPC: it publishes no such events.
            Err(s) if s.code() == tonic::Code::Unimplemented => Ok(()),
            Err(s) => Err(berth_proto::status::from_status(&s)),
        }
    }
}
