//! Prices of offerings: the AWS Pricing API for on-demand and `DescribeSpotPriceHistory` for
//! spot, falling back to Berth's built-in price model (`berth-catalog`) where they fail or say
//! nothing, then adjusted by the user's price file (negotiated discounts, Savings Plans).

use std::collections::BTreeMap;

use berth_catalog::{Facts, PriceModel, SPOT_PRICE_FACTOR};
use serde::Deserialize;

/// Where a price came from (reported in logs and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PriceSource {
    Api,
    Model,
    UserFile,
}

/// Prices fetched from AWS (either part may be empty when its API failed).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FetchedPrices {
    pub on_demand: BTreeMap<String, f64>,
    pub spot: BTreeMap<(String, String), f64>,
}

/// The user's price file.
///
/// ```json
/// {
///   "on_demand_discount_percent": 12,
///   "instance_types": { "m5.large": { "on_demand": 0.081, "spot": 0.031 } }
/// }
/// ```
///
/// A type's own prices win; otherwise the discount applies to the on-demand price.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceOverrides {
    #[serde(default)]
    pub on_demand_discount_percent: f64,
    #[serde(default)]
    pub instance_types: BTreeMap<String, TypePrices>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TypePrices {
    pub on_demand: Option<f64>,
    pub spot: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("price file: {path}: {message}")]
pub struct PriceFileError {
    pub path: String,
    pub message: String,
}

impl PriceOverrides {
    /// Parses a price file; errors name the field.
    pub fn parse(json: &str) -> Result<Self, PriceFileError> {
        let de = &mut serde_json::Deserializer::from_str(json);
        let parsed: Self = serde_path_to_error::deserialize(de).map_err(|e| PriceFileError {
            path: e.path().to_string(),
            message: e.inner().to_string(),
        })?;
        if !(0.0..100.0).contains(&parsed.on_demand_discount_percent) {
            return Err(PriceFileError {
                path: "on_demand_discount_percent".to_owned(),
                message: "must be at least 0 and below 100".to_owned(),
            });
        }
        for (name, p) in &parsed.instance_types {
            for (field, v) in [("on_demand", p.on_demand), ("spot", p.spot)] {
                if v.is_some_and(|v| !v.is_finite() || v < 0.0) {
                    return Err(PriceFileError {
                        path: format!("instance_types.{name}.{field}"),
                        message: "must be a non-negative number".to_owned(),
                    });
                }
            }
        }
        Ok(parsed)
    }
}

/// Prices for every offering, with their sources.
#[derive(Debug, Clone, PartialEq)]
pub struct Pricer {
    fetched: FetchedPrices,
    model: PriceModel,
    overrides: PriceOverrides,
}

impl Pricer {
    pub fn new(fetched: FetchedPrices, overrides: PriceOverrides) -> Self {
        Self {
            fetched,
            model: PriceModel::builtin(),
            overrides,
        }
    }

    /// On-demand USD/hour of `f`.
    pub fn on_demand(&self, f: &Facts) -> (f64, PriceSource) {
        if let Some(p) = self
            .overrides
            .instance_types
            .get(&f.name)
            .and_then(|t| t.on_demand)
        {
            return (p, PriceSource::UserFile);
        }
        let discount = 1.0 - self.overrides.on_demand_discount_percent / 100.0;
        match self.fetched.on_demand.get(&f.name) {
            Some(&p) => (p * discount, PriceSource::Api),
            None => (self.model.on_demand(f) * discount, PriceSource::Model),
        }
    }

    /// Spot USD/hour of `f` in `zone`.
    pub fn spot(&self, f: &Facts, zone: &str) -> (f64, PriceSource) {
        if let Some(p) = self
            .overrides
            .instance_types
            .get(&f.name)
            .and_then(|t| t.spot)
        {
            return (p, PriceSource::UserFile);
        }
        match self.fetched.spot.get(&(f.name.clone(), zone.to_owned())) {
            Some(&p) => (p, PriceSource::Api),
            None => {
                let base = self
                    .fetched
                    .on_demand
                    .get(&f.name)
                    .copied()
                    .unwrap_or_else(|| self.model.on_demand(f));
                (base * SPOT_PRICE_FACTOR, PriceSource::Model)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m5() -> Facts {
        berth_catalog::Catalog::builtin()
            .facts
            .into_iter()
            .find(|f| f.name == "m5.large")
            .unwrap()
    }

    #[test]
    fn api_prices_win_over_the_model_and_the_user_file_over_both() {
        let f = m5();
        let model = PriceModel::builtin().on_demand(&f);
        let none = Pricer::new(FetchedPrices::default(), PriceOverrides::default());
        assert_eq!(none.on_demand(&f), (model, PriceSource::Model));
        assert_eq!(
            none.spot(&f, "us-east-1a"),
            (model * SPOT_PRICE_FACTOR, PriceSource::Model)
        );

        let fetched = FetchedPrices {
            on_demand: [("m5.large".to_owned(), 0.096)].into(),
            spot: [(("m5.large".to_owned(), "us-east-1a".to_owned()), 0.04)].into(),
        };
        let api = Pricer::new(fetched.clone(), PriceOverrides::default());
        assert_eq!(api.on_demand(&f), (0.096, PriceSource::Api));
        assert_eq!(api.spot(&f, "us-east-1a"), (0.04, PriceSource::Api));
        assert_eq!(
            api.spot(&f, "us-east-1b"),
            (0.096 * SPOT_PRICE_FACTOR, PriceSource::Model)
        );

        let overrides = PriceOverrides::parse(
            r#"{"on_demand_discount_percent": 25, "instance_types": {"m5.large": {"spot": 0.01}}}"#,
        )
        .unwrap();
        let user = Pricer::new(fetched, overrides);
        let (p, source) = user.on_demand(&f);
        assert!(
            (p - 0.072).abs() < 1e-12 && source == PriceSource::Api,
            "{p}"
        );
        assert_eq!(user.spot(&f, "us-east-1b"), (0.01, PriceSource::UserFile));
    }

    #[test]
    fn a_bad_price_file_names_the_field() {
        let e = PriceOverrides::parse(r#"{"instance_types": {"m5.large": {"ondemand": 1}}}"#)
            .unwrap_err();
        assert!(e.path.starts_with("instance_types.m5.large"), "{e}");
        let e = PriceOverrides::parse(r#"{"on_demand_discount_percent": 140}"#).unwrap_err();
        assert_eq!(e.path, "on_demand_discount_percent");
        let e =
            PriceOverrides::parse(r#"{"instance_types": {"m5.large": {"spot": -1}}}"#).unwrap_err();
        assert_eq!(e.path, "instance_types.m5.large.spot");
    }
}
