//! Berth's EC2 [`CloudProvider`](berth_cloud::CloudProvider).
//!
//! ```text
//!   Ec2Cloud ── resolves EC2NodeClasses (nodeclass) ── subnets, security groups, AMIs (SSM aliases)
//!      │      ── renders user data (userdata): AL2 bootstrap.sh, AL2023 nodeadm, Bottlerocket TOML
//!      │      ── launch templates named by a hash of what they carry, reused, garbage-collected
//!      │      ── CreateFleet (instant, one instance): spot first, ≤ 60 types × zones,
//!      │         insufficient-capacity errors cached 3 min and retried with what is left
//!      │      ── prices (pricing): Pricing API + spot history, built-in model as fallback,
//!      │         user price file on top
//!      v
//!   Ec2Api (api) ── the narrow seam: only the AWS calls made, plain types; SdkApi implements
//!                   it with aws-sdk-ec2 / aws-sdk-ssm / aws-sdk-pricing
//! ```
//!
//! Idempotency: the NodeClaim name is the fleet's client token and an instance tag
//! (`karpenter.sh/nodeclaim`); `create` looks for a live instance with that tag before
//! launching, so a crash between launch and status update never yields a second instance.

pub mod api;
pub mod nodeclass;
pub mod pricing;
pub mod provider;
pub mod userdata;

pub use api::{CallLog, Ec2Api, SdkApi};
pub use provider::{Ec2Cloud, Ec2Options};
