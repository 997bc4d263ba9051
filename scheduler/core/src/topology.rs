//! Topology: spread constraints and pod (anti-)affinity, counted per domain.
//!
//! A *group* is what a constraint counts: pods matching a label selector in some namespaces,
//! per value ("domain") of a topology key. Every pod placed (or already running) is added to the
//! groups it matches, in the domain of its node. A pod's constraints then ask of a candidate
//! domain: would the skew stay within `maxSkew`? Is there a matching pod (affinity)? Is there
//! none (anti-affinity)? Running pods' own anti-affinity terms also forbid their domains to
//! pods they match (Kubernetes' symmetric rule).

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use crate::model::{
    LabelSelector, Labels, Namespace, Pod, PodAffinityTerm, SelectorOperator,
    TopologySpreadConstraint,
};

/// Whether `labels` match a Kubernetes label selector.
pub fn selector_matches(selector: &LabelSelector, labels: &Labels) -> bool {
    selector
        .match_labels
        .iter()
        .all(|(k, v)| labels.get(k) == Some(v))
        && selector.match_expressions.iter().all(|e| {
            let value = labels.get(&e.key);
            match e.operator {
                SelectorOperator::In => value.is_some_and(|v| e.values.contains(v)),
                SelectorOperator::NotIn => value.is_none_or(|v| !e.values.contains(v)),
                SelectorOperator::Exists => value.is_some(),
                SelectorOperator::DoesNotExist => value.is_none(),
            }
        })
}

/// Which namespaces a term's selector looks in.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Namespaces {
    /// Explicit names (the pod's own namespace when the term names none).
    Names(BTreeSet<String>),
    /// Every namespace.
    All,
    /// Names plus the namespaces whose labels match a selector (resolved against the input).
    Resolved(BTreeSet<String>),
}

impl Namespaces {
    pub fn contains(&self, ns: &str) -> bool {
        match self {
            Namespaces::All => true,
            Namespaces::Names(n) | Namespaces::Resolved(n) => n.contains(ns),
        }
    }
}

/// The namespaces a pod-affinity term applies to.
pub fn term_namespaces(
    owner: &Pod,
    term: &PodAffinityTerm,
    namespaces: &[Namespace],
) -> Namespaces {
    let mut names: BTreeSet<String> = term.namespaces.iter().cloned().collect();
    match &term.namespace_selector {
        None if names.is_empty() => Namespaces::Names([owner.key.namespace.clone()].into()),
        None => Namespaces::Names(names),
        Some(sel) if sel.match_labels.is_empty() && sel.match_expressions.is_empty() => {
            Namespaces::All
        }
        Some(sel) => {
            names.extend(
                namespaces
                    .iter()
                    .filter(|n| selector_matches(sel, &n.labels))
                    .map(|n| n.name.clone()),
            );
            Namespaces::Resolved(names)
        }
    }
}

/// The selector a term counts with, after `matchLabelKeys` / `mismatchLabelKeys` added the
/// owner's own label values.
pub fn effective_selector(
    owner: &Pod,
    selector: Option<&LabelSelector>,
    match_keys: &[String],
    mismatch_keys: &[String],
) -> Option<LabelSelector> {
    let mut sel = selector?.clone();
    for k in match_keys {
        if let Some(v) = owner.labels.get(k) {
            sel.match_expressions
                .push(crate::model::SelectorRequirement {
                    key: k.clone(),
                    operator: SelectorOperator::In,
                    values: vec![v.clone()],
                });
        }
    }
    for k in mismatch_keys {
        if let Some(v) = owner.labels.get(k) {
            sel.match_expressions
                .push(crate::model::SelectorRequirement {
                    key: k.clone(),
                    operator: SelectorOperator::NotIn,
                    values: vec![v.clone()],
                });
        }
    }
    Some(sel)
}

/// The selector a pod-affinity term counts with (see [`effective_selector`]).
pub fn term_selector(owner: &Pod, term: &PodAffinityTerm) -> Option<LabelSelector> {
    effective_selector(
        owner,
        term.label_selector.as_ref(),
        &term.match_label_keys,
        &term.mismatch_label_keys,
    )
}

/// What a group counts.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct GroupKey {
    pub topology_key: String,
    pub namespaces: Namespaces,
    /// Debug form of the selector, for identity.
    pub selector: String,
}

#[derive(Debug, Clone)]
pub struct Group {
    pub key: GroupKey,
    pub selector: LabelSelector,
    /// Matching pods per domain.
    pub counts: BTreeMap<String, i64>,
}

impl Group {
    pub fn matches(&self, pod: &Pod) -> bool {
        self.key.namespaces.contains(&pod.key.namespace)
            && selector_matches(&self.selector, &pod.labels)
    }

    pub fn count(&self, domain: &str) -> i64 {
        self.counts.get(domain).copied().unwrap_or(0)
    }

    pub fn total(&self) -> i64 {
        self.counts.values().sum()
    }
}

/// A running pod's anti-affinity term, pinned to the domain it runs in.
#[derive(Debug, Clone)]
pub struct AntiRecord {
    pub topology_key: String,
    pub domain: String,
    pub namespaces: Namespaces,
    pub selector: LabelSelector,
}

/// A required spread constraint counting a group: (maxSkew, minDomains, the owner's domains).
pub type SpreadOwner = (i64, Option<i32>, BTreeSet<String>);

/// Every group of a solve and the anti-affinity records of placed pods.
#[derive(Debug, Default)]
pub struct Topology {
    pub groups: Vec<Group>,
    index: BTreeMap<GroupKey, usize>,
    /// Anti-affinity records by topology key, then domain.
    pub anti: BTreeMap<String, BTreeMap<String, Vec<AntiRecord>>>,
    /// Per group, the required spread constraints of pending pods that count it:
    /// (maxSkew, minDomains, the owner's domains). A pod matching the group may not push a
    /// domain past them either, so that the final state honours every spread whatever order
    /// the kube-scheduler binds pods in.
    pub spread_owners: BTreeMap<usize, Vec<SpreadOwner>>,
    /// Groups that pending pods have required affinity to. A pod counting in one joins a domain
    /// the group already occupies (or starts it), so that the affine pods' domain stays
    /// occupied whatever order pods are bound in.
    pub affinity_owners: BTreeSet<usize>,
}

/// One constraint of a pod, resolved to its group.
#[derive(Debug, Clone, PartialEq)]
pub enum Constraint {
    Spread {
        group: usize,
        max_skew: i64,
        min_domains: Option<i32>,
    },
    Affinity {
        group: usize,
        self_match: bool,
    },
    AntiAffinity {
        group: usize,
    },
}

impl Constraint {
    pub fn group(&self) -> usize {
        match self {
            Constraint::Spread { group, .. }
            | Constraint::Affinity { group, .. }
            | Constraint::AntiAffinity { group } => *group,
        }
    }
}

impl Topology {
    /// The group for `(key, namespaces, selector)`, registering it on first use.
    pub fn group(
        &mut self,
        topology_key: &str,
        namespaces: Namespaces,
        selector: LabelSelector,
    ) -> usize {
        let key = GroupKey {
            topology_key: topology_key.to_owned(),
            namespaces,
            selector: format!("{selector:?}"),
        };
        if let Some(&i) = self.index.get(&key) {
            return i;
        }
        self.groups.push(Group {
            key: key.clone(),
            selector,
            counts: BTreeMap::new(),
        });
        self.index.insert(key, self.groups.len() - 1);
        self.groups.len() - 1
    }

    /// The pod's spread constraints; `strict` includes ScheduleAnyway ones (as preferences
    /// honoured while they can be).
    pub fn spread_constraints(&mut self, p: &Pod, strict: bool) -> Vec<Constraint> {
        p.topology_spread
            .iter()
            .filter(|c| {
                strict || c.when_unsatisfiable == crate::model::WhenUnsatisfiable::DoNotSchedule
            })
            .map(|c: &TopologySpreadConstraint| {
                let selector =
                    effective_selector(p, c.label_selector.as_ref(), &c.match_label_keys, &[])
                        // No selector selects no pods: the constraint counts nothing.
                        .unwrap_or_else(|| LabelSelector {
                            match_labels: [("\u{0}none".to_owned(), String::new())].into(),
                            match_expressions: vec![],
                        });
                let group = self.group(
                    &c.topology_key,
                    Namespaces::Names([p.key.namespace.clone()].into()),
                    selector,
                );
                Constraint::Spread {
                    group,
                    max_skew: i64::from(c.max_skew),
                    min_domains: c.min_domains,
                }
            })
            .collect()
    }

    /// The pod's affinity and anti-affinity terms; `preferred` adds its preferred terms.
    pub fn affinity_constraints(
        &mut self,
        p: &Pod,
        preferred: bool,
        namespaces: &[Namespace],
    ) -> Vec<Constraint> {
        let mut out = Vec::new();
        let mut terms = |affinity: Option<&crate::model::PodAffinity>,
                         anti: bool,
                         out: &mut Vec<Constraint>| {
            let Some(a) = affinity else { return };
            let pref = a.preferred.iter().filter(|_| preferred).map(|w| &w.term);
            for term in a.required.iter().chain(pref) {
                let Some(selector) = term_selector(p, term) else {
                    continue; // no selector matches no pods: affinity to nothing is ignored, as kube-scheduler does
                };
                let ns = term_namespaces(p, term, namespaces);
                let self_match =
                    ns.contains(&p.key.namespace) && selector_matches(&selector, &p.labels);
                let group = self.group(&term.topology_key, ns, selector);
                out.push(if anti {
                    Constraint::AntiAffinity { group }
                } else {
                    Constraint::Affinity { group, self_match }
                });
            }
        };
        terms(p.pod_affinity.as_ref(), false, &mut out);
        terms(p.pod_anti_affinity.as_ref(), true, &mut out);
        out
    }

    /// Records `p` running in a node whose domains are given by `domain_of`.
    pub fn record<'s>(
        &mut self,
        p: &Pod,
        namespaces: &[Namespace],
        domain_of: &dyn Fn(&str) -> Option<Cow<'s, str>>,
    ) {
        for g in &mut self.groups {
            if g.matches(p)
                && let Some(d) = domain_of(&g.key.topology_key)
            {
                *g.counts.entry(d.into_owned()).or_default() += 1;
            }
        }
        if let Some(a) = &p.pod_anti_affinity {
            for term in &a.required {
                let (Some(selector), Some(domain)) =
                    (term_selector(p, term), domain_of(&term.topology_key))
                else {
                    continue;
                };
                let record = AntiRecord {
                    topology_key: term.topology_key.clone(),
                    domain: domain.to_string(),
                    namespaces: term_namespaces(p, term, namespaces),
                    selector,
                };
                self.anti
                    .entry(term.topology_key.clone())
                    .or_default()
                    .entry(domain.into_owned())
                    .or_default()
                    .push(record);
            }
        }
    }

    /// Whether placing `p` in `domain` (for the constraint's key) keeps the constraint.
    /// `universe` is every domain the pod could go to (for the spread minimum); `new_domain`
    /// says whether the domain is a brand-new node (hostname keys).
    pub fn allows(
        &self,
        p: &Pod,
        c: &Constraint,
        domain: &str,
        universe: &BTreeSet<String>,
    ) -> bool {
        let g = &self.groups[c.group()];
        match c {
            Constraint::Spread {
                max_skew,
                min_domains,
                ..
            } => {
                let min = if min_domains.is_some_and(|m| (universe.len() as i64) < i64::from(m)) {
                    0
                } else {
                    universe.iter().map(|d| g.count(d)).min().unwrap_or(0)
                };
                // NB: the pod itself counts when it matches its own selector.
                let own = i64::from(g.matches(p));
                g.count(domain) + own - min <= *max_skew
            }
            Constraint::Affinity { self_match, .. } => {
                g.count(domain) > 0 || (*self_match && g.total() == 0)
            }
            Constraint::AntiAffinity { .. } => g.count(domain) == 0,
        }
    }

    /// Whether adding a pod that counts in `groups` (see [`Self::owner_groups_of`]) in these
    /// domains keeps every registered owner's spread and affinity.
    pub fn owners_allow<'s>(
        &self,
        groups: &[usize],
        domain_of: &dyn Fn(&str) -> Option<Cow<'s, str>>,
    ) -> bool {
        groups.iter().all(|&g| {
            let group = &self.groups[g];
            let Some(d) = domain_of(&group.key.topology_key) else {
                return true;
            };
            let affinity_ok =
                !self.affinity_owners.contains(&g) || group.count(&d) > 0 || group.total() == 0;
            affinity_ok
                && self.spread_owners.get(&g).into_iter().flatten().all(
                    |(max_skew, min_domains, universe)| {
                        let min = if min_domains
                            .is_some_and(|m| (universe.len() as i64) < i64::from(m))
                        {
                            0
                        } else {
                            universe.iter().map(|u| group.count(u)).min().unwrap_or(0)
                        };
                        group.count(&d) + 1 - min <= *max_skew
                    },
                )
        })
    }

    /// The owned groups (spread or affinity of pending pods) that `p` counts in.
    pub fn owner_groups_of(&self, p: &Pod) -> Vec<usize> {
        let mut out: Vec<usize> = self
            .spread_owners
            .keys()
            .chain(&self.affinity_owners)
            .copied()
            .filter(|&g| self.groups[g].matches(p))
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Topology keys whose domain must be known when `p` is placed: those its own
    /// constraints use and those of spread groups it counts in.
    pub fn keys_for(&self, p: &Pod, constraints: &[Constraint]) -> Vec<String> {
        let mut keys: Vec<String> = constraints
            .iter()
            .map(|c| self.groups[c.group()].key.topology_key.clone())
            .collect();
        for &g in self.spread_owners.keys().chain(&self.affinity_owners) {
            if self.groups[g].matches(p) {
                keys.push(self.groups[g].key.topology_key.clone());
            }
        }
        keys.sort();
        keys.dedup();
        keys
    }

    /// Whether running pods' anti-affinity forbids `p` in a node with these domains.
    pub fn anti_forbids<'s>(
        &self,
        p: &Pod,
        domain_of: &dyn Fn(&str) -> Option<Cow<'s, str>>,
    ) -> bool {
        self.anti.iter().any(|(key, by_domain)| {
            domain_of(key)
                .and_then(|d| by_domain.get(d.as_ref()))
                .is_some_and(|records| {
                    records.iter().any(|r| {
                        r.namespaces.contains(&p.key.namespace)
                            && selector_matches(&r.selector, &p.labels)
                    })
                })
        })
    }
}
