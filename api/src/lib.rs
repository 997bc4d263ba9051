//! # berth-api
//!
//! Karpenter's Kubernetes API as Rust types: `karpenter.sh/v1` NodePool and NodeClaim,
//! `karpenter.k8s.aws/v1` EC2NodeClass, their v1beta1 predecessors (as Karpenter v0.33–v0.37
//! served them) with a conversion to v1, the well-known labels, validation equal to Karpenter's
//! CRD rules, and the CRDs generated from the types.
//!
//! ```text
//!   YAML/JSON ──manifest::parse──> Manifest::{V1(..), V1beta1(..)}
//!                                      │ convert::to_v1 (field-path warnings)
//!                                      v
//!                     v1::{NodePool, NodeClaim, EC2NodeClass} ──validate()──> FieldErrors
//!                                      │
//!                               crds::all() ──> deploy/crds/*.yaml
//! ```

pub mod convert;
pub mod crds;
pub mod domain;
pub mod duration;
pub mod manifest;
mod schema;
pub mod v1;
pub mod v1beta1;
pub mod validate;

/// Well-known labels, annotations, taints and finalizers (shared with the scheduler core).
pub use berth_scheduler_core::labels;
pub use validate::{FieldError, Validate, ValidationErrors};

/// A disruption budget's `nodes`: `Some(count or percent)` when well-formed.
pub fn budget_nodes(nodes: &str) -> Option<berth_scheduler_core::model::BudgetNodes> {
    use berth_scheduler_core::model::BudgetNodes;
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match nodes.strip_suffix('%') {
        Some(p) if all_digits(p) && p.len() <= 3 => p
            .parse::<u8>()
            .ok()
            .filter(|p| *p <= 100)
            .map(BudgetNodes::Percent),
        Some(_) => None,
        None if all_digits(nodes) => nodes.parse().ok().map(BudgetNodes::Count),
        None => None,
    }
}

/// Checks a disruption budget schedule: a 5-field cron expression (UTC) or one of the
/// `@yearly`-style macros Karpenter accepts.
pub fn parse_schedule(schedule: &str) -> Result<(), String> {
    const MACROS: &[&str] = &[
        "@annually",
        "@yearly",
        "@monthly",
        "@weekly",
        "@daily",
        "@midnight",
        "@hourly",
    ];
    if schedule.starts_with('@') {
        return if MACROS.contains(&schedule) {
            Ok(())
        } else {
            Err(format!("{schedule:?} is not one of {MACROS:?}"))
        };
    }
    let fields = schedule.split_whitespace().count();
    if fields != 5 {
        return Err(format!(
            "{schedule:?} must be a cron expression with 5 fields (minute hour day-of-month month day-of-week), got {fields}"
        ));
    }
    croner::Cron::new(schedule)
        .parse()
        .map(|_| ())
        .map_err(|e| format!("{schedule:?} is not a valid cron expression: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_scheduler_core::model::BudgetNodes;

    #[test]
    fn budget_nodes_formats() {
        assert_eq!(budget_nodes("10%"), Some(BudgetNodes::Percent(10)));
        assert_eq!(budget_nodes("100%"), Some(BudgetNodes::Percent(100)));
        assert_eq!(budget_nodes("0"), Some(BudgetNodes::Count(0)));
        assert_eq!(budget_nodes("5"), Some(BudgetNodes::Count(5)));
        for bad in ["101%", "%", "-1", "ten", "1.5", "10 %", "1000%", ""] {
            assert_eq!(budget_nodes(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn schedules() {
        assert!(parse_schedule("0 9 * * mon-fri").is_ok());
        assert!(parse_schedule("@daily").is_ok());
        assert!(parse_schedule("@sometimes").is_err());
        assert!(parse_schedule("0 9 * *").is_err());
        assert!(parse_schedule("0 25 * * *").is_err());
    }
}
