//! Berth's simulated cluster (issue 5, in progress): today the API server's object store
//! ([`store`]) with Kubernetes' resourceVersion, conflict, finalizer and watch semantics. The
//! HTTP API server, the simulated kube-scheduler and kubelets, and `berth sandbox` are not
//! built yet (see `sim/README.md`).

pub mod server;
pub mod store;
