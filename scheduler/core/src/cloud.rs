//! Errors a cloud provider reports, shared by the actuator (which raises them) and the
//! scheduler (which branches on them, e.g. re-fetching instance types after an
//! insufficient-capacity error). They cross the wire as gRPC statuses, see `berth-proto`.

use crate::model::CapacityType;

/// An offering the cloud could not fulfil.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnavailableOffering {
    pub instance_type: String,
    pub zone: String,
    pub capacity_type: CapacityType,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CloudError {
    /// The NodeClaim's instance does not exist (never launched, or gone).
    #[error("{what} not found")]
    NotFound { what: String },
    /// No offering allowed by the NodeClaim had capacity; `offerings` lists those tried.
    #[error("insufficient capacity for {} offering(s)", offerings.len())]
    InsufficientCapacity { offerings: Vec<UnavailableOffering> },
    /// The NodeClass cannot be launched into yet (subnets, AMIs, ... did not resolve).
    #[error("node class not ready: {reason}")]
    NodeClassNotReady { reason: String },
    /// The cloud refused the launch for another reason.
    #[error("launch failed ({code}): {message}")]
    Launch { code: String, message: String },
    /// The request itself is malformed.
    #[error("invalid argument {field}: {message}")]
    InvalidArgument { field: String, message: String },
    /// The cloud could not be reached or failed; retrying may help.
    #[error("cloud unavailable: {message}")]
    Unavailable { message: String },
}

impl CloudError {
    /// A stable snake_case name of the kind, for metrics labels and logs.
    pub fn code(&self) -> &'static str {
        match self {
            CloudError::NotFound { .. } => "not_found",
            CloudError::InsufficientCapacity { .. } => "insufficient_capacity",
            CloudError::NodeClassNotReady { .. } => "node_class_not_ready",
            CloudError::Launch { .. } => "launch_failed",
            CloudError::InvalidArgument { .. } => "invalid_argument",
            CloudError::Unavailable { .. } => "unavailable",
        }
    }
}
