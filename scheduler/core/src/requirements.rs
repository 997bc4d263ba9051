//! Node selector requirements as sets of allowed values per label key, with intersection —
//! the algebra Karpenter's scheduler works in.
//!
//! For each key a [`ValueSet`] says which values a node's label may have and whether the label
//! may be absent, following Kubernetes' semantics: `In` and `Exists` need the label, `NotIn` and
//! `DoesNotExist` accept its absence, `Gt`/`Lt`/`Gte`/`Lte` need an integer value in range.
//! Intersecting the requirements of a NodePool, an instance type, an offering and a pod tells
//! whether a node can satisfy them all, and what its labels would be.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::model::{Labels, Operator, Requirement};

/// The values one label key may take on a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueSet {
    /// `false`: only `values` are allowed. `true`: every value except `values`.
    complement: bool,
    values: BTreeSet<String>,
    /// Exclusive integer bounds; when set, a value must be an integer inside them.
    greater_than: Option<i64>,
    less_than: Option<i64>,
    /// Whether a node without the label satisfies this.
    absent_ok: bool,
    /// Karpenter's `minValues`: at least this many distinct values must remain possible.
    pub min_values: Option<u32>,
}

impl ValueSet {
    /// The label must be present, any value.
    pub fn exists() -> Self {
        Self {
            complement: true,
            values: BTreeSet::new(),
            greater_than: None,
            less_than: None,
            absent_ok: false,
            min_values: None,
        }
    }

    /// The label must be absent.
    pub fn does_not_exist() -> Self {
        Self {
            complement: false,
            values: BTreeSet::new(),
            greater_than: None,
            less_than: None,
            absent_ok: true,
            min_values: None,
        }
    }

    /// The label must be present with one of `values`.
    pub fn one_of<I: IntoIterator<Item = S>, S: Into<String>>(values: I) -> Self {
        Self {
            values: values.into_iter().map(Into::into).collect(),
            absent_ok: false,
            ..Self::does_not_exist()
        }
    }

    pub fn from_requirement(r: &Requirement) -> Self {
        let bound = |f: fn(i64) -> Self| {
            r.values
                .first()
                .and_then(|v| v.parse::<i64>().ok())
                .map_or_else(Self::nothing, f)
        };
        let mut set = match r.operator {
            Operator::In => Self::one_of(r.values.iter().cloned()),
            Operator::NotIn => Self {
                complement: true,
                values: r.values.iter().cloned().collect(),
                absent_ok: true,
                ..Self::exists()
            },
            Operator::Exists => Self::exists(),
            Operator::DoesNotExist => Self::does_not_exist(),
            Operator::Gt => bound(|n| Self {
                greater_than: Some(n),
                ..Self::exists()
            }),
            Operator::Gte => bound(|n| Self {
                greater_than: Some(n.saturating_sub(1)),
                ..Self::exists()
            }),
            Operator::Lt => bound(|n| Self {
                less_than: Some(n),
                ..Self::exists()
            }),
            Operator::Lte => bound(|n| Self {
                less_than: Some(n.saturating_add(1)),
                ..Self::exists()
            }),
        };
        set.min_values = r.min_values;
        set
    }

    /// Satisfied by nothing (a malformed bound).
    fn nothing() -> Self {
        Self {
            absent_ok: false,
            ..Self::does_not_exist()
        }
    }

    fn within_bounds(&self, value: &str) -> bool {
        if self.greater_than.is_none() && self.less_than.is_none() {
            return true;
        }
        value.parse::<i64>().is_ok_and(|n| {
            self.greater_than.is_none_or(|g| n > g) && self.less_than.is_none_or(|l| n < l)
        })
    }

    /// Whether a node whose label is `value` (`None`: absent) satisfies this.
    pub fn allows(&self, value: Option<&str>) -> bool {
        match value {
            None => self.absent_ok,
            Some(v) => {
                let listed = self.values.contains(v);
                (if self.complement { !listed } else { listed }) && self.within_bounds(v)
            }
        }
    }

    /// Whether the label may be absent.
    pub fn absent_ok(&self) -> bool {
        self.absent_ok
    }

    /// Whether some value (not absence) is allowed.
    pub fn any_value(&self) -> bool {
        if !self.complement {
            return !self.values.is_empty();
        }
        match (self.greater_than, self.less_than) {
            (Some(g), Some(l)) => {
                let excluded = self
                    .values
                    .iter()
                    .filter_map(|v| v.parse::<i64>().ok())
                    .filter(|n| *n > g && *n < l)
                    .count();
                i128::from(l) - i128::from(g) - 1 > excluded as i128
            }
            _ => true,
        }
    }

    /// Whether nothing satisfies this: no value and not absence.
    pub fn is_unsatisfiable(&self) -> bool {
        !self.absent_ok && !self.any_value()
    }

    /// The single allowed value, when exactly one value is allowed and absence is not.
    pub fn single(&self) -> Option<&str> {
        if !self.complement && !self.absent_ok && self.values.len() == 1 {
            self.values.iter().next().map(String::as_str)
        } else {
            None
        }
    }

    /// The allowed values when they are a finite list.
    pub fn finite_values(&self) -> Option<&BTreeSet<String>> {
        (!self.complement).then_some(&self.values)
    }

    /// Whether something (a value, or absence) satisfies both; the same as
    /// `!self.intersect(other).is_unsatisfiable()` without building the intersection.
    pub fn intersects(&self, other: &ValueSet) -> bool {
        if self.absent_ok && other.absent_ok {
            return true;
        }
        match (self.complement, other.complement) {
            (false, false) => {
                let (small, large) = if self.values.len() <= other.values.len() {
                    (self, other)
                } else {
                    (other, self)
                };
                small.values.iter().any(|v| large.values.contains(v))
            }
            (false, true) => self.values.iter().any(|v| other.allows(Some(v))),
            (true, false) => other.values.iter().any(|v| self.allows(Some(v))),
            (true, true) => {
                let pick = |a: Option<i64>, b: Option<i64>, f: fn(i64, i64) -> i64| match (a, b) {
                    (Some(a), Some(b)) => Some(f(a, b)),
                    (a, b) => a.or(b),
                };
                match (
                    pick(self.greater_than, other.greater_than, i64::max),
                    pick(self.less_than, other.less_than, i64::min),
                ) {
                    (Some(g), Some(l)) => {
                        let excluded: BTreeSet<i64> = self
                            .values
                            .iter()
                            .chain(&other.values)
                            .filter_map(|v| v.parse::<i64>().ok())
                            .filter(|n| *n > g && *n < l)
                            .collect();
                        i128::from(l) - i128::from(g) - 1 > excluded.len() as i128
                    }
                    _ => true,
                }
            }
        }
    }

    /// What both allow.
    pub fn intersect(&self, other: &ValueSet) -> ValueSet {
        let pick = |a: Option<i64>, b: Option<i64>, f: fn(i64, i64) -> i64| match (a, b) {
            (Some(a), Some(b)) => Some(f(a, b)),
            (a, b) => a.or(b),
        };
        let greater_than = pick(self.greater_than, other.greater_than, i64::max);
        let less_than = pick(self.less_than, other.less_than, i64::min);
        let mut out = match (self.complement, other.complement) {
            (false, false) => ValueSet::one_of(self.values.intersection(&other.values).cloned()),
            (true, false) => ValueSet::one_of(
                other
                    .values
                    .iter()
                    .filter(|v| !self.values.contains(*v))
                    .cloned(),
            ),
            (false, true) => ValueSet::one_of(
                self.values
                    .iter()
                    .filter(|v| !other.values.contains(*v))
                    .cloned(),
            ),
            (true, true) => ValueSet {
                values: self.values.union(&other.values).cloned().collect(),
                ..ValueSet::exists()
            },
        };
        out.greater_than = greater_than;
        out.less_than = less_than;
        if !out.complement {
            let bounds = out.clone();
            out.values.retain(|v| bounds.within_bounds(v));
            out.greater_than = None;
            out.less_than = None;
        }
        out.absent_ok = self.absent_ok && other.absent_ok;
        out.min_values = match (self.min_values, other.min_values) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        out
    }
}

impl fmt::Display for ValueSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = || self.values.iter().cloned().collect::<Vec<_>>().join(",");
        match (self.complement, self.values.is_empty(), self.absent_ok) {
            (false, true, true) => write!(f, "DoesNotExist")?,
            (false, true, false) => write!(f, "nothing")?,
            (false, false, _) => write!(f, "In [{}]", list())?,
            (true, true, false) => write!(f, "Exists")?,
            (true, true, true) => write!(f, "anything")?,
            (true, false, _) => write!(f, "NotIn [{}]", list())?,
        }
        if let Some(g) = self.greater_than {
            write!(f, " >{g}")?;
        }
        if let Some(l) = self.less_than {
            write!(f, " <{l}")?;
        }
        Ok(())
    }
}

/// Allowed values per key. A key that is not listed is unconstrained.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Requirements(BTreeMap<String, ValueSet>);

/// Why two sets of requirements cannot both hold: the first key on which they disagree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub key: String,
    pub wanted: String,
    pub available: String,
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} (available: {})",
            self.key, self.wanted, self.available
        )
    }
}

impl Requirements {
    pub fn new() -> Self {
        Self::default()
    }

    /// All of `reqs` (an AND).
    pub fn from_requirements<'a>(reqs: impl IntoIterator<Item = &'a Requirement>) -> Self {
        let mut out = Self::new();
        for r in reqs {
            out.add(&r.key, ValueSet::from_requirement(r));
        }
        out
    }

    /// Each label as `key In [value]`.
    pub fn from_labels(labels: &Labels) -> Self {
        let mut out = Self::new();
        for (k, v) in labels {
            out.add(k, ValueSet::one_of([v.clone()]));
        }
        out
    }

    /// Narrows `key` to what it allowed and `set` allows.
    pub fn add(&mut self, key: &str, set: ValueSet) {
        let merged = match self.0.get(key) {
            Some(existing) => existing.intersect(&set),
            None => set,
        };
        self.0.insert(key.to_owned(), merged);
    }

    pub fn get(&self, key: &str) -> Option<&ValueSet> {
        self.0.get(key)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &ValueSet)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Both at once; `Err` names the first key where nothing is left.
    pub fn intersect(&self, other: &Requirements) -> Result<Requirements, Conflict> {
        let mut out = self.clone();
        for (key, set) in &other.0 {
            let mine = self.0.get(key);
            let merged = mine.map_or_else(|| set.clone(), |m| m.intersect(set));
            if merged.is_unsatisfiable() {
                return Err(Conflict {
                    key: key.clone(),
                    wanted: set.to_string(),
                    available: mine.map_or_else(|| "unconstrained".to_owned(), ToString::to_string),
                });
            }
            out.0.insert(key.clone(), merged);
        }
        Ok(out)
    }

    /// Whether a node described by `self` (its keys are all the labels it can have: an unlisted
    /// key means the label is absent) can satisfy `pod`. `Err` names the first conflict.
    pub fn admits(&self, pod: &Requirements) -> Result<(), Conflict> {
        let absent = ValueSet::does_not_exist();
        for (key, wanted) in &pod.0 {
            let available = self.0.get(key).unwrap_or(&absent);
            if !available.intersects(wanted) {
                return Err(Conflict {
                    key: key.clone(),
                    wanted: wanted.to_string(),
                    available: available.to_string(),
                });
            }
        }
        Ok(())
    }

    /// As node selector requirements (one to three per key: the set, then any bounds).
    pub fn to_requirements(&self) -> Vec<Requirement> {
        let mut out = Vec::new();
        for (key, set) in &self.0 {
            let values: Vec<String> = set.values.iter().cloned().collect();
            let mut push = |operator, values: Vec<String>| {
                out.push(Requirement {
                    key: key.clone(),
                    operator,
                    values,
                    min_values: None,
                });
            };
            match (set.complement, values.is_empty(), set.absent_ok) {
                (false, true, _) => push(Operator::DoesNotExist, vec![]),
                (false, false, _) => push(Operator::In, values),
                (true, true, false) if set.greater_than.is_none() && set.less_than.is_none() => {
                    push(Operator::Exists, vec![])
                }
                (true, true, _) => {}
                (true, false, _) => push(Operator::NotIn, values),
            }
            if let Some(g) = set.greater_than {
                push(Operator::Gt, vec![g.to_string()]);
            }
            if let Some(l) = set.less_than {
                push(Operator::Lt, vec![l.to_string()]);
            }
            if let (Some(min), Some(last)) = (set.min_values, out.last_mut()) {
                last.min_values = Some(min);
            }
        }
        out
    }

    /// The labels a node satisfying these would certainly carry: keys with a single value.
    pub fn labels(&self) -> Labels {
        self.0
            .iter()
            .filter_map(|(k, v)| v.single().map(|s| (k.clone(), s.to_owned())))
            .collect()
    }
}

/// Whether a node with `labels` satisfies the requirement (Kubernetes' node-affinity rules).
pub fn labels_match(labels: &Labels, r: &Requirement) -> bool {
    ValueSet::from_requirement(r).allows(labels.get(&r.key).map(String::as_str))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(key: &str, op: Operator, values: &[&str]) -> Requirement {
        Requirement::new(key, op, values)
    }

    fn set(op: Operator, values: &[&str]) -> ValueSet {
        ValueSet::from_requirement(&req("k", op, values))
    }

    #[test]
    fn operators_follow_kubernetes() {
        let cases: &[(Operator, &[&str], Option<&str>, bool)] = &[
            (Operator::In, &["a", "b"], Some("a"), true),
            (Operator::In, &["a", "b"], Some("c"), false),
            (Operator::In, &["a"], None, false),
            (Operator::NotIn, &["a"], Some("a"), false),
            (Operator::NotIn, &["a"], Some("b"), true),
            (Operator::NotIn, &["a"], None, true),
            (Operator::Exists, &[], Some("x"), true),
            (Operator::Exists, &[], None, false),
            (Operator::DoesNotExist, &[], None, true),
            (Operator::DoesNotExist, &[], Some("x"), false),
            (Operator::Gt, &["4"], Some("5"), true),
            (Operator::Gt, &["4"], Some("4"), false),
            (Operator::Gt, &["4"], Some("x"), false),
            (Operator::Gt, &["4"], None, false),
            (Operator::Gte, &["4"], Some("4"), true),
            (Operator::Gte, &["4"], Some("3"), false),
            (Operator::Lt, &["4"], Some("3"), true),
            (Operator::Lt, &["4"], Some("4"), false),
            (Operator::Lte, &["4"], Some("4"), true),
            (Operator::Lte, &["4"], Some("5"), false),
        ];
        for (op, values, label, expected) in cases {
            assert_eq!(
                set(*op, values).allows(*label),
                *expected,
                "{op:?} {values:?} on {label:?}"
            );
        }
    }

    #[test]
    fn intersections() {
        let zones = set(Operator::In, &["a", "b", "c"]);
        assert_eq!(
            zones.intersect(&set(Operator::NotIn, &["a"])),
            ValueSet::one_of(["b", "c"])
        );
        assert_eq!(
            zones.intersect(&set(Operator::In, &["c", "d"])),
            ValueSet::one_of(["c"])
        );
        assert!(
            zones
                .intersect(&set(Operator::In, &["d"]))
                .is_unsatisfiable()
        );
        assert!(
            zones
                .intersect(&set(Operator::DoesNotExist, &[]))
                .is_unsatisfiable()
        );
        assert!(
            !set(Operator::NotIn, &["a"])
                .intersect(&set(Operator::DoesNotExist, &[]))
                .is_unsatisfiable()
        );
        let cpus = set(Operator::In, &["2", "4", "8", "16"]);
        assert_eq!(
            cpus.intersect(&set(Operator::Gt, &["2"]))
                .intersect(&set(Operator::Lte, &["8"])),
            ValueSet::one_of(["4", "8"])
        );
        let range = set(Operator::Gt, &["2"]).intersect(&set(Operator::Lt, &["4"]));
        assert!(range.allows(Some("3")) && !range.allows(Some("4")));
        assert!(
            set(Operator::Gt, &["3"])
                .intersect(&set(Operator::Lt, &["4"]))
                .is_unsatisfiable()
        );
        assert!(
            set(Operator::Gt, &["2"])
                .intersect(&set(Operator::Lt, &["4"]))
                .intersect(&set(Operator::NotIn, &["3"]))
                .is_unsatisfiable()
        );
    }

    #[test]
    fn intersects_agrees_with_intersect() {
        let ops: &[(Operator, &[&str])] = &[
            (Operator::In, &["1", "2", "a"]),
            (Operator::In, &["3"]),
            (Operator::NotIn, &["2"]),
            (Operator::NotIn, &["1", "2", "3"]),
            (Operator::Exists, &[]),
            (Operator::DoesNotExist, &[]),
            (Operator::Gt, &["1"]),
            (Operator::Gte, &["3"]),
            (Operator::Lt, &["3"]),
            (Operator::Lte, &["2"]),
            (Operator::Gt, &["2"]),
            (Operator::Lt, &["2"]),
        ];
        for (a_op, a_values) in ops {
            for (b_op, b_values) in ops {
                let (a, b) = (set(*a_op, a_values), set(*b_op, b_values));
                for (x, y) in [
                    (&a, &b),
                    (&a.intersect(&b), &set(Operator::NotIn, &["3"])),
                    (&a.intersect(&b), &set(Operator::Lt, &["3"])),
                ] {
                    assert_eq!(
                        x.intersects(y),
                        !x.intersect(y).is_unsatisfiable(),
                        "{x} vs {y}"
                    );
                }
            }
        }
    }

    #[test]
    fn admits_treats_unlisted_keys_as_absent() {
        let node = Requirements::from_requirements(&[
            req("zone", Operator::In, &["a", "b"]),
            req("arch", Operator::In, &["amd64"]),
        ]);
        assert!(
            node.admits(&Requirements::from_requirements(&[req(
                "zone",
                Operator::In,
                &["b"]
            )]))
            .is_ok()
        );
        assert!(
            node.admits(&Requirements::from_requirements(&[req(
                "gpu",
                Operator::DoesNotExist,
                &[]
            )]))
            .is_ok()
        );
        assert!(
            node.admits(&Requirements::from_requirements(&[req(
                "team",
                Operator::NotIn,
                &["x"]
            )]))
            .is_ok()
        );
        let conflict = node
            .admits(&Requirements::from_requirements(&[req(
                "team",
                Operator::In,
                &["x"],
            )]))
            .unwrap_err();
        assert_eq!(conflict.key, "team");
        let conflict = node
            .admits(&Requirements::from_requirements(&[req(
                "arch",
                Operator::In,
                &["arm64"],
            )]))
            .unwrap_err();
        assert_eq!(
            conflict.to_string(),
            "arch In [arm64] (available: In [amd64])"
        );
    }

    #[test]
    fn labels_are_the_single_valued_keys() {
        let r = Requirements::from_requirements(&[
            req("zone", Operator::In, &["a", "b"]),
            req("arch", Operator::In, &["amd64"]),
        ]);
        let r = r
            .intersect(&Requirements::from_requirements(&[req(
                "zone",
                Operator::In,
                &["b"],
            )]))
            .unwrap();
        assert_eq!(
            r.labels(),
            [
                ("arch".to_owned(), "amd64".to_owned()),
                ("zone".to_owned(), "b".to_owned())
            ]
            .into()
        );
    }
}
