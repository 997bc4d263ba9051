//! Cloud errors on the wire: a gRPC code for clients that only look at codes, and a
//! `google.rpc.Status` in the details carrying a `berth.v1.CloudError` for those that branch
//! on the kind (the scheduler re-fetches instance types after `InsufficientCapacity`).

use berth_scheduler_core::cloud::{CloudError, UnavailableOffering};
use prost::Message;
use tonic::Code;

use crate::convert::{capacity_type_from_proto, capacity_type_to_proto};
use crate::v1 as p;

const TYPE_URL: &str = "type.googleapis.com/berth.v1.CloudError";

/// The gRPC code each kind maps to (documented in `cloud.proto`).
pub fn code(e: &CloudError) -> Code {
    match e {
        CloudError::NotFound { .. } => Code::NotFound,
        CloudError::InsufficientCapacity { .. } => Code::ResourceExhausted,
        CloudError::NodeClassNotReady { .. } => Code::FailedPrecondition,
        CloudError::Launch { .. } => Code::Aborted,
        CloudError::InvalidArgument { .. } => Code::InvalidArgument,
        CloudError::Unavailable { .. } => Code::Unavailable,
    }
}

fn to_proto(e: &CloudError) -> p::CloudError {
    use p::CloudErrorCode as C;
    let mut out = p::CloudError {
        message: e.to_string(),
        ..Default::default()
    };
    match e {
        CloudError::NotFound { what } => {
            out.code = C::NotFound as i32;
            out.reason = what.clone();
        }
        CloudError::InsufficientCapacity { offerings } => {
            out.code = C::InsufficientCapacity as i32;
            out.offerings = offerings
                .iter()
                .map(|o| p::UnavailableOffering {
                    instance_type: o.instance_type.clone(),
                    zone: o.zone.clone(),
                    capacity_type: capacity_type_to_proto(o.capacity_type),
                })
                .collect();
        }
        CloudError::NodeClassNotReady { reason } => {
            out.code = C::NodeClassNotReady as i32;
            out.reason = reason.clone();
        }
        CloudError::Launch { code, message } => {
            out.code = C::LaunchFailed as i32;
            out.reason = code.clone();
            out.message = message.clone();
        }
        CloudError::InvalidArgument { field, message } => {
            out.code = C::InvalidArgument as i32;
            out.field = field.clone();
            out.message = message.clone();
        }
        CloudError::Unavailable { message } => {
            out.code = C::Unavailable as i32;
            out.message = message.clone();
        }
    }
    out
}

/// A `tonic::Status` carrying `e`.
pub fn to_status(e: &CloudError) -> tonic::Status {
    let code = code(e);
    let detail = to_proto(e);
    let rpc_status = tonic_types::pb::Status {
        code: code as i32,
        message: e.to_string(),
        details: vec![prost_types::Any {
            type_url: TYPE_URL.to_owned(),
            value: detail.encode_to_vec(),
        }],
    };
    tonic::Status::with_details(code, e.to_string(), rpc_status.encode_to_vec().into())
}

/// The cloud error a status carries. A status without Berth's detail (a transport failure, a
/// deadline, a server that is not Berth's) maps from its code alone, with its message.
pub fn from_status(status: &tonic::Status) -> CloudError {
    if let Some(detail) = tonic_types::pb::Status::decode(status.details())
        .ok()
        .and_then(|s| s.details.into_iter().find(|d| d.type_url == TYPE_URL))
        .and_then(|any| p::CloudError::decode(any.value.as_slice()).ok())
        && let Some(e) = from_proto(detail)
    {
        return e;
    }
    let message = status.message().to_owned();
    match status.code() {
        Code::NotFound => CloudError::NotFound { what: message },
        Code::ResourceExhausted => CloudError::InsufficientCapacity {
            offerings: Vec::new(),
        },
        Code::FailedPrecondition => CloudError::NodeClassNotReady { reason: message },
        Code::InvalidArgument => CloudError::InvalidArgument {
            field: String::new(),
            message,
        },
        Code::Aborted => CloudError::Launch {
            code: "Aborted".into(),
            message,
        },
        _ => CloudError::Unavailable {
            message: format!("{:?}: {message}", status.code()),
        },
    }
}

fn from_proto(e: p::CloudError) -> Option<CloudError> {
    use p::CloudErrorCode as C;
    Some(match C::try_from(e.code).ok()? {
        C::Unspecified => return None,
        C::NotFound => CloudError::NotFound { what: e.reason },
        C::InsufficientCapacity => CloudError::InsufficientCapacity {
            offerings: e
                .offerings
                .into_iter()
                .map(|o| {
                    Some(UnavailableOffering {
                        capacity_type: capacity_type_from_proto(o.capacity_type, "capacity_type")
                            .ok()?,
                        instance_type: o.instance_type,
                        zone: o.zone,
                    })
                })
                .collect::<Option<_>>()?,
        },
        C::NodeClassNotReady => CloudError::NodeClassNotReady { reason: e.reason },
        C::LaunchFailed => CloudError::Launch {
            code: e.reason,
            message: e.message,
        },
        C::InvalidArgument => CloudError::InvalidArgument {
            field: e.field,
            message: e.message,
        },
        C::Unavailable => CloudError::Unavailable { message: e.message },
    })
}

/// A conversion failure as the `INVALID_ARGUMENT` status servers return.
impl From<crate::ConversionError> for tonic::Status {
    fn from(e: crate::ConversionError) -> Self {
        to_status(&CloudError::InvalidArgument {
            field: e.field,
            message: e.message,
        })
    }
}
