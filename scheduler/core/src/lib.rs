//! # berth-scheduler-core
//!
//! Berth's pure core: the domain model every service shares, Kubernetes quantities, the
//! well-known labels, and (with the scheduler-core issue) the provisioning solver.
//!
//! ```text
//!  watcher ──Sync (berth.v1)──> scheduler ──Launch/Terminate──> actuator
//!                                   │
//!                       berth-proto converts to/from
//!                                   │
//!                 model::{Pod, Node, NodePool, NodeClaim, InstanceType, ...}
//!                                   │
//!                         (solver: issue 3) -> Plan
//! ```
//!
//! Nothing here does I/O, spawns tasks, reads clocks or logs: time comes in as a value and
//! results leave as data. The crate depends on no async runtime, gRPC, Kubernetes or cloud SDK,
//! so its tests build in seconds.

pub mod allocatable;
pub mod batcher;
pub mod checker;
pub mod cloud;
pub mod cluster;
pub mod disruption;
pub mod labels;
pub mod model;
pub mod pod;
pub mod quantity;
pub mod requirements;
pub mod solver;
pub mod sync;
pub mod topology;
