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

use rustc_hash::FxHashMap;

use crate::model::{
    LabelSelector, Labels, Namespace, NodeInclusionPolicy, Pod, PodAffinityTerm, SelectorOperator,
    Taint, Toleration, TopologySpreadConstraint,
};
use crate::pod::{requirement_alternatives, untolerated};
use crate::requirements::Requirements;

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
    /// Debug form of the node filter, for identity.
    pub filter: String,
}

/// Which nodes' pods a spread constraint counts (its `nodeAffinityPolicy` and
/// `nodeTaintsPolicy`): with `Honor`, only nodes that match the owner's required node
/// affinity and node selector, or whose taints the owner tolerates.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeFilter {
    /// The owner's node requirements, one per nodeSelectorTerm (`None`: every node).
    pub affinity: Option<Vec<Requirements>>,
    /// The owner's tolerations (`None`: taints do not matter).
    pub tolerations: Option<Vec<Toleration>>,
}

impl NodeFilter {
    /// The filter of `p`'s spread constraint `c`.
    pub fn of(p: &Pod, c: &TopologySpreadConstraint) -> Self {
        Self {
            affinity: (c.node_affinity_policy == NodeInclusionPolicy::Honor)
                .then(|| requirement_alternatives(p))
                .filter(|alts| !alts.iter().any(Requirements::is_empty)),
            tolerations: (c.node_taints_policy == NodeInclusionPolicy::Honor)
                .then(|| p.tolerations.clone()),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.affinity.is_none() && self.tolerations.is_none()
    }

    /// Whether a node is counted: `node` is its labels as requirements, or for a NodeClaim
    /// (`claim`) its requirements, which need only be compatible with the owner's (its labels
    /// are not all known before launch).
    pub fn passes(&self, node: &Requirements, claim: bool, taints: &[Taint]) -> bool {
        self.affinity.as_ref().is_none_or(|alts| {
            alts.iter().any(|alt| {
                if claim {
                    node.intersect(alt).is_ok()
                } else {
                    node.admits(alt).is_ok()
                }
            })
        }) && self
            .tolerations
            .as_ref()
            .is_none_or(|t| untolerated(t, taints).is_none())
    }
}

/// What [`Topology::record`] needs to know of the node a pod runs on.
pub struct NodeFacts<'a, 's> {
    /// Its labels as requirements, or a NodeClaim's requirements.
    pub requirements: &'a Requirements,
    /// Whether it is a NodeClaim not launched yet (see [`NodeFilter::passes`]).
    pub claim: bool,
    pub taints: &'a [Taint],
    /// Its domain per topology key.
    pub domain_of: &'a dyn Fn(&str) -> Option<Cow<'s, str>>,
}

impl std::fmt::Debug for NodeFacts<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeFacts")
            .field("requirements", self.requirements)
            .field("taints", &self.taints)
            .finish_non_exhaustive()
    }
}

/// An interned topology key.
pub type KeyId = u32;
/// An interned domain (a value of some topology key).
pub type DomainId = u32;
/// A domain no pod was ever counted in (its counts are all zero).
pub const UNSEEN: DomainId = DomainId::MAX;

/// Strings to dense ids, so that the solver's hot loop compares integers.
#[derive(Debug, Default)]
pub struct Interner {
    names: Vec<String>,
    ids: FxHashMap<String, u32>,
}

impl Interner {
    /// The id of `name`, registering it on first use.
    pub fn intern(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let id = u32::try_from(self.names.len()).expect("fewer than 2^32 names");
        self.names.push(name.to_owned());
        self.ids.insert(name.to_owned(), id);
        id
    }

    pub fn get(&self, name: &str) -> Option<u32> {
        self.ids.get(name).copied()
    }

    pub fn name(&self, id: u32) -> &str {
        &self.names[id as usize]
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

#[derive(Debug, Clone)]
pub struct Group {
    pub key: GroupKey,
    /// `key.topology_key`, interned.
    pub key_id: KeyId,
    pub selector: LabelSelector,
    /// Only pods on nodes passing it count.
    pub filter: NodeFilter,
    /// Matching pods per domain.
    counts: FxHashMap<DomainId, i64>,
    total: i64,
}

impl Group {
    pub fn matches(&self, pod: &Pod) -> bool {
        self.key.namespaces.contains(&pod.key.namespace)
            && selector_matches(&self.selector, &pod.labels)
    }

    pub fn count(&self, domain: DomainId) -> i64 {
        self.counts.get(&domain).copied().unwrap_or(0)
    }

    pub fn total(&self) -> i64 {
        self.total
    }
}

/// A running pod's anti-affinity term, pinned to the domain it runs in.
#[derive(Debug, Clone)]
pub struct AntiRecord {
    pub namespaces: Namespaces,
    pub selector: LabelSelector,
}

/// A required spread constraint counting a group: (maxSkew, minDomains, the owner's domains).
pub type SpreadOwner = (i64, Option<i32>, Vec<DomainId>);

/// Every group of a solve and the anti-affinity records of placed pods.
#[derive(Debug, Default)]
pub struct Topology {
    pub groups: Vec<Group>,
    index: BTreeMap<GroupKey, usize>,
    /// Topology keys and domains, interned.
    pub keys: Interner,
    pub domains: Interner,
    /// Anti-affinity records by (topology key, domain).
    anti: FxHashMap<(KeyId, DomainId), Vec<AntiRecord>>,
    /// The keys `anti` has records for, and the distinct (namespaces, selector) of its records.
    anti_keys: BTreeSet<KeyId>,
    anti_selectors: Vec<(KeyId, Namespaces, LabelSelector)>,
    /// Per group, the required spread constraints of pending pods that count it:
    /// (maxSkew, minDomains, the owner's domains). A pod matching the group may not push a
    /// domain past them either, so that the final state honours every spread whatever order
    /// the kube-scheduler binds pods in.
    pub spread_owners: BTreeMap<usize, Vec<SpreadOwner>>,
    /// Groups that pending pods have required affinity to. A pod counting in one joins a domain
    /// the group already occupies (or starts it), so that the affine pods' domain stays
    /// occupied whatever order pods are bound in.
    pub affinity_owners: BTreeSet<usize>,
    /// Groups that pending pods have required anti-affinity to. A pod counting in one pins
    /// the group's key on the claim it joins, so that its domain is known and the
    /// anti-affinity can be checked (both ways) before launch.
    pub anti_owners: BTreeSet<usize>,
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
        filter: NodeFilter,
    ) -> usize {
        let key = GroupKey {
            topology_key: topology_key.to_owned(),
            namespaces,
            selector: format!("{selector:?}"),
            filter: if filter.is_empty() {
                String::new()
            } else {
                format!("{filter:?}")
            },
        };
        if let Some(&i) = self.index.get(&key) {
            return i;
        }
        let key_id = self.keys.intern(topology_key);
        self.groups.push(Group {
            key: key.clone(),
            key_id,
            selector,
            filter,
            counts: FxHashMap::default(),
            total: 0,
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
                    NodeFilter::of(p, c),
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
                let group = self.group(&term.topology_key, ns, selector, NodeFilter::default());
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

    /// The id of a domain, [`UNSEEN`] if no pod was ever counted there.
    pub fn domain(&self, name: &str) -> DomainId {
        self.domains.get(name).unwrap_or(UNSEEN)
    }

    /// Records `p` running in `node`.
    pub fn record(&mut self, p: &Pod, namespaces: &[Namespace], node: &NodeFacts<'_, '_>) {
        let domain_of = node.domain_of;
        for g in &mut self.groups {
            if g.matches(p)
                && g.filter.passes(node.requirements, node.claim, node.taints)
                && let Some(d) = domain_of(&g.key.topology_key)
            {
                let id = self.domains.intern(&d);
                *g.counts.entry(id).or_default() += 1;
                g.total += 1;
            }
        }
        if let Some(a) = &p.pod_anti_affinity {
            for term in &a.required {
                let (Some(selector), Some(domain)) =
                    (term_selector(p, term), domain_of(&term.topology_key))
                else {
                    continue;
                };
                let namespaces = term_namespaces(p, term, namespaces);
                let key = self.keys.intern(&term.topology_key);
                let domain = self.domains.intern(&domain);
                self.anti_keys.insert(key);
                if !self
                    .anti_selectors
                    .iter()
                    .any(|(k, n, s)| *k == key && *n == namespaces && *s == selector)
                {
                    self.anti_selectors
                        .push((key, namespaces.clone(), selector.clone()));
                }
                self.anti
                    .entry((key, domain))
                    .or_default()
                    .push(AntiRecord {
                        namespaces,
                        selector,
                    });
            }
        }
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
    /// constraints use, those of pending pods' spread, affinity and anti-affinity groups it
    /// counts in, and those of running pods' anti-affinity that selects it.
    pub fn keys_for(&self, p: &Pod, constraints: &[Constraint]) -> Vec<String> {
        let mut keys: Vec<String> = constraints
            .iter()
            .map(|c| self.groups[c.group()].key.topology_key.clone())
            .collect();
        for &g in self
            .spread_owners
            .keys()
            .chain(&self.affinity_owners)
            .chain(&self.anti_owners)
        {
            if self.groups[g].matches(p) {
                keys.push(self.groups[g].key.topology_key.clone());
            }
        }
        for (key, ns, sel) in &self.anti_selectors {
            if ns.contains(&p.key.namespace) && selector_matches(sel, &p.labels) {
                keys.push(self.keys.name(*key).to_owned());
            }
        }
        keys.sort();
        keys.dedup();
        keys
    }
}

/// What one rule of a [`Gate`] asks of a domain's count.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Rule {
    /// At most this many matching pods already there.
    AtMost(i64),
    /// At least one matching pod already there.
    Occupied,
    /// Any domain, as long as the node has the key.
    Any,
}

#[derive(Debug, Clone, Copy)]
struct Check {
    key: KeyId,
    group: usize,
    rule: Rule,
    /// Whether a node without the key passes.
    keyless_ok: bool,
}

/// A pod's topology constraints compiled against the current counts: while no pod is
/// recorded, whether a node with given domains may take the pod is a few integer comparisons.
/// Build a new gate after every [`Topology::record`].
#[derive(Debug, Clone, Default)]
pub struct Gate {
    checks: Vec<Check>,
    /// Whether some running or placed pod's anti-affinity could match this pod.
    anti: bool,
}

impl Gate {
    /// Compiles `p`'s `constraints` (with, per constraint, the domains it may go to) and the
    /// owned groups it counts in (see [`Topology::owner_groups_of`]).
    pub fn new(
        topo: &Topology,
        p: &Pod,
        constraints: &[Constraint],
        universes: &[Vec<DomainId>],
        owner_groups: &[usize],
    ) -> Gate {
        let mut checks = Vec::with_capacity(constraints.len() + owner_groups.len());
        let spread_min = |g: &Group, min_domains: Option<i32>, universe: &[DomainId]| {
            if min_domains.is_some_and(|m| (universe.len() as i64) < i64::from(m)) {
                0
            } else {
                universe.iter().map(|&d| g.count(d)).min().unwrap_or(0)
            }
        };
        for (c, universe) in constraints.iter().zip(universes) {
            let g = &topo.groups[c.group()];
            let (rule, keyless_ok) = match *c {
                Constraint::Spread {
                    max_skew,
                    min_domains,
                    ..
                } => {
                    // count + own − min ≤ maxSkew; the pod counts itself when it matches.
                    let own = i64::from(g.matches(p));
                    let min = spread_min(g, min_domains, universe);
                    (Rule::AtMost(max_skew + min - own), false)
                }
                Constraint::Affinity { self_match, .. } => {
                    if self_match && g.total() == 0 {
                        (Rule::Any, false)
                    } else {
                        (Rule::Occupied, false)
                    }
                }
                // A node without the key: anti-affinity holds trivially.
                Constraint::AntiAffinity { .. } => (Rule::AtMost(0), true),
            };
            checks.push(Check {
                key: g.key_id,
                group: c.group(),
                rule,
                keyless_ok,
            });
        }
        for &gi in owner_groups {
            let g = &topo.groups[gi];
            if topo.affinity_owners.contains(&gi) && g.total() > 0 {
                checks.push(Check {
                    key: g.key_id,
                    group: gi,
                    rule: Rule::Occupied,
                    keyless_ok: true,
                });
            }
            // count + 1 − min ≤ maxSkew for every owner.
            let at_most = topo
                .spread_owners
                .get(&gi)
                .into_iter()
                .flatten()
                .map(|(max_skew, min_domains, universe)| {
                    max_skew - 1 + spread_min(g, *min_domains, universe)
                })
                .min();
            if let Some(at_most) = at_most {
                checks.push(Check {
                    key: g.key_id,
                    group: gi,
                    rule: Rule::AtMost(at_most),
                    keyless_ok: true,
                });
            }
        }
        let anti = topo
            .anti_selectors
            .iter()
            .any(|(_, ns, sel)| ns.contains(&p.key.namespace) && selector_matches(sel, &p.labels));
        Gate { checks, anti }
    }

    /// The caps this gate puts on one key: (group, at most this many of its pods per domain).
    pub fn caps(&self, key: KeyId) -> impl Iterator<Item = (usize, i64)> + '_ {
        self.checks.iter().filter_map(move |c| match c.rule {
            Rule::AtMost(m) if c.key == key => Some((c.group, m)),
            _ => None,
        })
    }

    /// Whether a node whose domains are `domain_of` may take `p`; a key the node does not
    /// have fails spread and affinity and passes anti-affinity.
    pub fn allows(
        &self,
        topo: &Topology,
        p: &Pod,
        domain_of: &dyn Fn(KeyId) -> Option<DomainId>,
    ) -> bool {
        self.eval(topo, p, domain_of, false)
    }

    /// The same, judging only the keys whose domain is known (`domain_of` is `None` for a key
    /// that is still open, as on a claim whose zone is not pinned yet).
    pub fn allows_known(
        &self,
        topo: &Topology,
        p: &Pod,
        domain_of: &dyn Fn(KeyId) -> Option<DomainId>,
    ) -> bool {
        self.eval(topo, p, domain_of, true)
    }

    fn eval(
        &self,
        topo: &Topology,
        p: &Pod,
        domain_of: &dyn Fn(KeyId) -> Option<DomainId>,
        unknown_ok: bool,
    ) -> bool {
        let checks_hold = self.checks.iter().all(|c| match domain_of(c.key) {
            None => unknown_ok || c.keyless_ok,
            Some(d) => {
                let count = topo.groups[c.group].count(d);
                match c.rule {
                    Rule::AtMost(m) => count <= m,
                    Rule::Occupied => count > 0,
                    Rule::Any => true,
                }
            }
        });
        checks_hold && !(self.anti && topo.anti_forbids(p, domain_of))
    }
}

impl Topology {
    /// Whether placed or running pods' anti-affinity forbids `p` in a node with these domains.
    fn anti_forbids(&self, p: &Pod, domain_of: &dyn Fn(KeyId) -> Option<DomainId>) -> bool {
        self.anti_keys.iter().any(|&key| {
            domain_of(key)
                .and_then(|d| self.anti.get(&(key, d)))
                .is_some_and(|records| {
                    records.iter().any(|r| {
                        r.namespaces.contains(&p.key.namespace)
                            && selector_matches(&r.selector, &p.labels)
                    })
                })
        })
    }
}
