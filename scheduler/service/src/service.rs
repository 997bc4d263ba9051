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

type CloudClient = p::cloud_provider_client::CloudProviderClient<tonic::transport::Channel>;

/// The actuator, over gRPC: one address, or the replicas' addresses of which only the leader
/// listens (a standby does not), tried in turn when one is unavailable.
#[derive(Debug, Clone)]
pub struct GrpcCloud {
    endpoints: std::sync::Arc<[tonic::transport::Endpoint]>,
    clients: std::sync::Arc<std::sync::Mutex<Vec<CloudClient>>>,
    current: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

fn lazy_client(e: &tonic::transport::Endpoint) -> CloudClient {
    CloudClient::new(e.connect_lazy()).max_decoding_message_size(64 << 20)
}

impl GrpcCloud {
    /// Lazily connected clients (each reconnects by itself when its actuator restarts).
    pub fn new(endpoints: Vec<tonic::transport::Endpoint>) -> Self {
        assert!(!endpoints.is_empty(), "at least one actuator address");
        let clients = endpoints.iter().map(lazy_client).collect();
        Self {
            endpoints: endpoints.into(),
            clients: std::sync::Arc::new(std::sync::Mutex::new(clients)),
            current: Default::default(),
        }
    }

    fn client(&self, i: usize) -> CloudClient {
        self.clients.lock().unwrap_or_else(|e| e.into_inner())[i].clone()
    }

    /// `rpc` on the address that answered last; on `Unavailable` (nothing listens there: a
    /// standby, a restart) on the next ones, each once. An address that was unavailable gets
    /// a fresh connection for the next call.
    async fn call<T, F, Fut>(&self, rpc: F) -> Result<T, tonic::Status>
    where
        F: Fn(CloudClient) -> Fut,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        use std::sync::atomic::Ordering;
        let n = self.endpoints.len();
        let first = self.current.load(Ordering::Relaxed) % n;
        let mut last = None;
        for k in 0..n {
            let i = (first + k) % n;
            match rpc(self.client(i)).await {
                Err(s) if s.code() == tonic::Code::Unavailable && n > 1 => {
                    self.clients.lock().unwrap_or_else(|e| e.into_inner())[i] =
                        lazy_client(&self.endpoints[i]);
                    last = Some(s);
                }
                other => {
                    self.current.store(i, Ordering::Relaxed);
                    return other;
                }
            }
        }
        Err(last.unwrap_or_else(|| tonic::Status::unavailable("no actuator address")))
    }
}

fn conversion(e: berth_proto::ConversionError) -> CloudError {
    CloudError::Unavailable {
        message: format!("the actuator answered with a malformed message: {e}"),
    }
}

impl Cloud for GrpcCloud {
    async fn instance_types(&self, pool: &NodePool) -> Result<Vec<InstanceType>, CloudError> {
        let request = p::InstanceTypesRequest {
            node_pool: Some(p::NodePool::from(pool)),
        };
        let response = self
            .call(|mut c| {
                let request = request.clone();
                async move { c.instance_types(request).await }
            })
            .await
            .map_err(|s| berth_proto::status::from_status(&s))?;
        Vec::<InstanceType>::try_from(response.into_inner()).map_err(conversion)
    }

    async fn launch(&self, claim: &NodeClaim) -> Result<Instance, CloudError> {
        let request = p::LaunchRequest {
            node_claim: Some(p::NodeClaim::from(claim)),
        };
        let response = self
            .call(|mut c| {
                let request = request.clone();
                async move { c.launch(request).await }
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
        let request = p::DisruptRequest::from(command);
        self.call(|mut c| {
            let request = request.clone();
            async move { c.disrupt(request).await }
        })
        .await
        .map_err(|s| berth_proto::status::from_status(&s))?;
        Ok(())
    }

    async fn disruption_blocked(
        &self,
        blocked: &[berth_scheduler_core::disruption::Blocked],
    ) -> Result<(), CloudError> {
        let request = p::DisruptionBlockedRequest::from(blocked);
        match self
            .call(|mut c| {
                let request = request.clone();
                async move { c.disruption_blocked(request).await }
            })
            .await
        {
            Ok(_) => Ok(()),
            // An actuator from before the RPC: it publishes no such events.
            Err(s) if s.code() == tonic::Code::Unimplemented => Ok(()),
            Err(s) => Err(berth_proto::status::from_status(&s)),
        }
    }
}
