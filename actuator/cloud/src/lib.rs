//! The cloud behind Berth's actuator.
//!
//! ```text
//!   gRPC CloudProvider (berth-proto)        NodeClaim lifecycle (berth-actuator)
//!                 \                           /
//!                  v                         v
//!              Metered<P: CloudProvider>  (per-method duration and errors)
//!                  |
//!        +---------+----------+
//!        v                    v
//!     SimCloud            Ec2Cloud (berth-ec2)
//!  (in memory, over       (aws-sdk-ec2 behind a
//!   berth-catalog)         narrow Ec2Api trait)
//! ```
//!
//! [`CloudProvider`] is modelled on Karpenter's `cloudprovider.CloudProvider`; its doc comments
//! are the contract every implementation keeps. Errors are [`CloudError`] (from the scheduler
//! core, since the scheduler branches on them too).

pub mod metered;
pub mod metrics;
pub mod provider;
pub mod sim;

pub use berth_scheduler_core::cloud::{CloudError, UnavailableOffering};
pub use metered::Metered;
pub use provider::{CloudProvider, DriftReason, Instance, InstanceState};
pub use sim::{SimCloud, SimOptions};
