//! v1beta1 → v1 conversion, following Karpenter's own conversion where it has one:
//!
//! | v1beta1 | v1 |
//! |---|---|
//! | `consolidationPolicy: WhenUnderutilized` | `WhenEmptyOrUnderutilized`, `consolidateAfter: 0s` |
//! | `disruption.expireAfter` | `template.spec.expireAfter` |
//! | `nodeClassRef {apiVersion, kind, name}` | `{group, kind, name}` (defaults `karpenter.k8s.aws`, `EC2NodeClass`) |
//! | NodePool `template.spec.kubelet` | the referenced EC2NodeClass's `spec.kubelet` |
//! | `amiFamily` without `amiSelectorTerms` | `amiSelectorTerms: [{alias: <family>@latest}]` |
//! | `metadataOptions` absent | v1beta1's defaults written out (hop limit 2; v1 would default to 1) |
//!
//! Conversion works on a whole set of manifests at once because the kubelet block moves from
//! a NodePool to another object. What cannot be converted is an error naming the field; what is
//! converted with a change of behaviour worth knowing about is a [`Note`] naming the field.

use std::collections::BTreeMap;

use crate::manifest::Manifest;
use crate::v1::{self, NillableDuration};
use crate::v1beta1;
use crate::{FieldError, Validate, labels};

/// A converted (or already v1) object.
#[derive(Debug, Clone, PartialEq)]
pub enum V1Object {
    NodePool(v1::NodePool),
    NodeClaim(v1::NodeClaim),
    EC2NodeClass(v1::EC2NodeClass),
}

impl V1Object {
    pub fn describe(&self) -> String {
        let (kind, name) = match self {
            V1Object::NodePool(o) => ("NodePool", &o.metadata.name),
            V1Object::NodeClaim(o) => ("NodeClaim", &o.metadata.name),
            V1Object::EC2NodeClass(o) => ("EC2NodeClass", &o.metadata.name),
        };
        format!("{kind}/{}", name.as_deref().unwrap_or("<unnamed>"))
    }

    pub fn validate(&self) -> Result<(), crate::ValidationErrors> {
        match self {
            V1Object::NodePool(o) => o.validate(),
            V1Object::NodeClaim(o) => o.validate(),
            V1Object::EC2NodeClass(o) => o.validate(),
        }
    }

    /// The object as YAML (one document, no leading `---`).
    pub fn to_yaml(&self) -> String {
        match self {
            V1Object::NodePool(o) => serde_norway::to_string(o),
            V1Object::NodeClaim(o) => serde_norway::to_string(o),
            V1Object::EC2NodeClass(o) => serde_norway::to_string(o),
        }
        .expect("Karpenter objects always serialise")
    }
}

/// Something about a field of `object` the user should know after conversion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub object: String,
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for Note {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}: {}", self.object, self.path, self.message)
    }
}

/// A field of `object` that could not be converted, or is invalid after conversion.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{object}: {error}")]
pub struct ConversionError {
    pub object: String,
    pub error: FieldError,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Converted {
    /// In input order.
    pub objects: Vec<V1Object>,
    pub notes: Vec<Note>,
}

/// Converts every manifest to v1 and validates the result. Either everything converts and
/// validates, or nothing is returned but every error found.
pub fn to_v1(manifests: Vec<Manifest>) -> Result<Converted, Vec<ConversionError>> {
    let mut cx = Cx::default();
    // Kubelet blocks move from NodePools to EC2NodeClasses: collect them first.
    let mut kubelets: BTreeMap<String, (String, v1::KubeletConfiguration)> = BTreeMap::new();
    for m in &manifests {
        if let Manifest::NodePoolV1beta1(np) = m
            && let (Some(kubelet), Some(r)) = (
                &np.spec.template.spec.kubelet,
                &np.spec.template.spec.node_class_ref,
            )
            && is_ec2_node_class(r)
        {
            let object = m.describe();
            match kubelets.get(&r.name) {
                Some((first, k)) if k != kubelet => cx.error(
                    &object,
                    "spec.template.spec.kubelet",
                    format!(
                        "differs from the kubelet block of {first}, which uses the same EC2NodeClass {:?}; in v1 kubelet settings belong to the EC2NodeClass, so give these NodePools separate EC2NodeClasses",
                        r.name
                    ),
                ),
                Some(_) => {}
                None => {
                    kubelets.insert(r.name.clone(), (object, kubelet.clone()));
                }
            }
        }
    }
    let class_names: Vec<String> = manifests
        .iter()
        .filter_map(|m| match m {
            Manifest::EC2NodeClass(c) => c.metadata.name.clone(),
            Manifest::EC2NodeClassV1beta1(c) => c.metadata.name.clone(),
            _ => None,
        })
        .collect();
    let expire_after: BTreeMap<String, NillableDuration> = manifests
        .iter()
        .filter_map(|m| match m {
            Manifest::NodePoolV1beta1(np) => Some((
                np.metadata.name.clone()?,
                NillableDuration(np.spec.disruption.expire_after.clone()),
            )),
            Manifest::NodePool(np) => Some((
                np.metadata.name.clone()?,
                np.spec.template.spec.expire_after.clone(),
            )),
            _ => None,
        })
        .collect();

    let mut objects = Vec::new();
    for m in manifests {
        let object = m.describe();
        let converted = match m {
            Manifest::NodePool(o) => Some(V1Object::NodePool(o)),
            Manifest::NodeClaim(o) => Some(V1Object::NodeClaim(o)),
            Manifest::EC2NodeClass(mut o) => {
                let name = o.metadata.name.clone().unwrap_or_default();
                cx.move_kubelet(&object, &mut o.spec.kubelet, kubelets.get(&name));
                Some(V1Object::EC2NodeClass(o))
            }
            Manifest::NodePoolV1beta1(o) => cx
                .node_pool(&object, o, &class_names)
                .map(V1Object::NodePool),
            Manifest::NodeClaimV1beta1(o) => cx
                .node_claim(&object, o, &expire_after)
                .map(V1Object::NodeClaim),
            Manifest::EC2NodeClassV1beta1(o) => {
                let name = o.metadata.name.clone().unwrap_or_default();
                cx.ec2_node_class(&object, o).map(|mut c| {
                    cx.move_kubelet(&object, &mut c.spec.kubelet, kubelets.get(&name));
                    V1Object::EC2NodeClass(c)
                })
            }
        };
        if let Some(converted) = converted {
            if let Err(errors) = converted.validate() {
                for error in errors.0 {
                    cx.errors.push(ConversionError {
                        object: object.clone(),
                        error,
                    });
                }
            }
            objects.push(converted);
        }
    }
    if cx.errors.is_empty() {
        Ok(Converted {
            objects,
            notes: cx.notes,
        })
    } else {
        Err(cx.errors)
    }
}

fn is_ec2_node_class(r: &v1beta1::NodeClassReference) -> bool {
    let group = r
        .api_version
        .as_deref()
        .map(|v| v.split('/').next().unwrap_or(v));
    group.is_none_or(|g| g == labels::KARPENTER_AWS_GROUP)
        && r.kind.as_deref().is_none_or(|k| k == "EC2NodeClass")
}

/// Keeps a v1beta1 kubelet block in Karpenter's compatibility annotation, which Karpenter v1
/// still honours.
fn keep_kubelet_annotation(
    metadata: &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    kubelet: &v1::KubeletConfiguration,
) {
    let json = serde_json::to_string(kubelet).expect("kubelet serialises");
    metadata
        .annotations
        .get_or_insert_default()
        .insert(labels::KUBELET_COMPATIBILITY.to_owned(), json);
}

#[derive(Default)]
struct Cx {
    errors: Vec<ConversionError>,
    notes: Vec<Note>,
}

impl Cx {
    fn error(&mut self, object: &str, path: &str, message: impl Into<String>) {
        self.errors.push(ConversionError {
            object: object.to_owned(),
            error: FieldError {
                path: path.to_owned(),
                message: message.into(),
            },
        });
    }

    fn note(&mut self, object: &str, path: &str, message: impl Into<String>) {
        self.notes.push(Note {
            object: object.to_owned(),
            path: path.to_owned(),
            message: message.into(),
        });
    }

    fn node_class_ref(
        &mut self,
        object: &str,
        path: &str,
        r: Option<v1beta1::NodeClassReference>,
    ) -> Option<v1::NodeClassReference> {
        let Some(r) = r else {
            self.error(
                object,
                path,
                "required: name the EC2NodeClass these nodes use ({name: default})",
            );
            return None;
        };
        if r.name.is_empty() {
            self.error(object, &format!("{path}.name"), "required");
            return None;
        }
        let group = match r.api_version.as_deref() {
            None | Some("") => labels::KARPENTER_AWS_GROUP.to_owned(),
            Some(v) => match v.split_once('/') {
                Some((group, version))
                    if !group.is_empty() && !version.is_empty() && !version.contains('/') =>
                {
                    group.to_owned()
                }
                _ => {
                    self.error(
                        object,
                        &format!("{path}.apiVersion"),
                        format!("{v:?} is not <group>/<version>, e.g. karpenter.k8s.aws/v1beta1"),
                    );
                    return None;
                }
            },
        };
        let kind = r
            .kind
            .filter(|k| !k.is_empty())
            .unwrap_or_else(|| "EC2NodeClass".to_owned());
        Some(v1::NodeClassReference {
            group,
            kind,
            name: r.name,
        })
    }

    fn node_pool(
        &mut self,
        object: &str,
        np: v1beta1::NodePool,
        class_names: &[String],
    ) -> Option<v1::NodePool> {
        let v1beta1::NodePool {
            metadata,
            spec,
            status,
        } = np;
        let d = spec.disruption;
        let (consolidation_policy, consolidate_after) = match d.consolidation_policy {
            v1beta1::ConsolidationPolicy::WhenUnderutilized => {
                if let Some(after) = d
                    .consolidate_after
                    .as_deref()
                    .filter(|a| *a != NillableDuration::NEVER)
                {
                    self.error(
                        object,
                        "spec.disruption.consolidateAfter",
                        format!("{after:?}: consolidateAfter cannot be combined with consolidationPolicy=WhenUnderutilized"),
                    );
                }
                (
                    v1::ConsolidationPolicy::WhenEmptyOrUnderutilized,
                    NillableDuration("0s".into()),
                )
            }
            v1beta1::ConsolidationPolicy::WhenEmpty => match d.consolidate_after {
                Some(after) => (v1::ConsolidationPolicy::WhenEmpty, NillableDuration(after)),
                None => {
                    self.error(
                        object,
                        "spec.disruption.consolidateAfter",
                        "consolidateAfter must be specified with consolidationPolicy=WhenEmpty",
                    );
                    (
                        v1::ConsolidationPolicy::WhenEmpty,
                        NillableDuration::never(),
                    )
                }
            },
        };
        let t = spec.template.spec;
        let node_class_ref = self.node_class_ref(
            object,
            "spec.template.spec.nodeClassRef",
            t.node_class_ref.clone(),
        )?;
        let mut metadata = metadata;
        if let Some(kubelet) = &t.kubelet {
            let class_in_input = class_names.contains(&node_class_ref.name);
            if class_in_input && node_class_ref.kind == "EC2NodeClass" {
                self.note(
                    object,
                    "spec.template.spec.kubelet",
                    format!(
                        "moved to EC2NodeClass/{}: spec.kubelet",
                        node_class_ref.name
                    ),
                );
            } else {
                // Karpenter v1 still honours this annotation, so behaviour is kept.
                keep_kubelet_annotation(&mut metadata, kubelet);
                self.note(
                    object,
                    "spec.template.spec.kubelet",
                    format!(
                        "kept as annotation {} because EC2NodeClass/{} is not among the converted manifests; move these settings to its spec.kubelet",
                        labels::KUBELET_COMPATIBILITY,
                        node_class_ref.name
                    ),
                );
            }
        }
        if !t.resources.is_empty() {
            self.note(
                object,
                "spec.template.spec.resources",
                "dropped: v1 NodePools have no resources field (Karpenter ignored it)",
            );
        }
        Some(v1::NodePool {
            metadata,
            spec: v1::NodePoolSpec {
                template: v1::NodeClaimTemplate {
                    metadata: spec.template.metadata,
                    spec: v1::NodeClaimTemplateSpec {
                        taints: t.taints,
                        startup_taints: t.startup_taints,
                        requirements: t.requirements,
                        node_class_ref,
                        expire_after: NillableDuration(d.expire_after),
                        termination_grace_period: None,
                    },
                },
                disruption: v1::Disruption {
                    consolidate_after,
                    consolidation_policy,
                    budgets: if d.budgets.is_empty() {
                        v1::Disruption::default().budgets
                    } else {
                        d.budgets
                    },
                },
                limits: spec.limits,
                weight: spec.weight,
            },
            status: status.map(|s| v1::NodePoolStatus {
                resources: s.resources,
                nodes: None,
                conditions: s.conditions,
            }),
        })
    }

    fn node_claim(
        &mut self,
        object: &str,
        nc: v1beta1::NodeClaim,
        expire_after: &BTreeMap<String, NillableDuration>,
    ) -> Option<v1::NodeClaim> {
        let v1beta1::NodeClaim {
            mut metadata,
            spec,
            status,
        } = nc;
        let node_class_ref =
            self.node_class_ref(object, "spec.nodeClassRef", spec.node_class_ref.clone())?;
        if let Some(kubelet) = &spec.kubelet {
            keep_kubelet_annotation(&mut metadata, kubelet);
            self.note(
                object,
                "spec.kubelet",
                format!("kept as annotation {}", labels::KUBELET_COMPATIBILITY),
            );
        }
        // v1beta1 NodeClaims took expiry from their NodePool; v1 carries it on the claim.
        let pool = metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(labels::NODE_POOL));
        let expire = match pool.and_then(|p| expire_after.get(p)) {
            Some(e) => e.clone(),
            None => {
                self.note(
                    object,
                    "spec.expireAfter",
                    "its NodePool is not among the converted manifests; using the default 720h",
                );
                NillableDuration("720h".into())
            }
        };
        Some(v1::NodeClaim {
            metadata,
            spec: v1::NodeClaimSpec {
                taints: spec.taints,
                startup_taints: spec.startup_taints,
                requirements: spec.requirements,
                resources: spec.resources,
                node_class_ref,
                expire_after: expire,
                termination_grace_period: None,
            },
            status: status.map(|s| v1::NodeClaimStatus {
                node_name: s.node_name,
                provider_id: s.provider_id,
                image_id: s.image_id,
                capacity: s.capacity,
                allocatable: s.allocatable,
                conditions: s.conditions,
                last_pod_event_time: None,
            }),
        })
    }

    fn ec2_node_class(
        &mut self,
        object: &str,
        c: v1beta1::EC2NodeClass,
    ) -> Option<v1::EC2NodeClass> {
        let v1beta1::EC2NodeClass {
            metadata,
            spec: s,
            status,
        } = c;
        let Some(family) = s.ami_family else {
            self.error(object, "spec.amiFamily", "required in v1beta1: one of AL2, AL2023, Bottlerocket, Ubuntu, Custom, Windows2019, Windows2022");
            return None;
        };
        let terms: Vec<v1::AmiSelectorTerm> = s
            .ami_selector_terms
            .iter()
            .map(|t| v1::AmiSelectorTerm {
                alias: None,
                tags: t.tags.clone(),
                id: t.id.clone(),
                name: t.name.clone(),
                owner: t.owner.clone(),
                ssm_parameter: None,
            })
            .collect();
        let mut block_device_mappings = s.block_device_mappings;
        let (ami_family, ami_selector_terms) = match family {
            v1beta1::AmiFamily::Ubuntu => {
                if terms.is_empty() {
                    self.error(
                        object,
                        "spec.amiFamily",
                        "Ubuntu has no AMI alias in v1: add amiSelectorTerms naming your Ubuntu AMIs (they are then bootstrapped like AL2)",
                    );
                    return None;
                }
                self.note(object, "spec.amiFamily", "Ubuntu is not a v1 family: converted to AL2, whose bootstrap Ubuntu EKS AMIs share");
                if block_device_mappings.is_empty() {
                    block_device_mappings.push(v1::BlockDeviceMapping {
                        device_name: Some("/dev/sda1".into()),
                        ebs: Some(v1::BlockDevice {
                            encrypted: Some(true),
                            volume_size: Some(
                                k8s_openapi::apimachinery::pkg::api::resource::Quantity(
                                    "20Gi".into(),
                                ),
                            ),
                            volume_type: Some(v1::VolumeType::Gp3),
                            ..Default::default()
                        }),
                        root_volume: true,
                    });
                    self.note(object, "spec.blockDeviceMappings", "added Ubuntu's root volume (/dev/sda1, 20Gi gp3, encrypted), which v1beta1 implied");
                }
                (Some(v1::AmiFamily::AL2), terms)
            }
            v1beta1::AmiFamily::Custom => (Some(v1::AmiFamily::Custom), terms),
            other => {
                let v1_family = match other {
                    v1beta1::AmiFamily::AL2 => v1::AmiFamily::AL2,
                    v1beta1::AmiFamily::AL2023 => v1::AmiFamily::AL2023,
                    v1beta1::AmiFamily::Bottlerocket => v1::AmiFamily::Bottlerocket,
                    v1beta1::AmiFamily::Windows2019 => v1::AmiFamily::Windows2019,
                    _ => v1::AmiFamily::Windows2022,
                };
                if terms.is_empty() {
                    let alias = format!("{}@latest", v1_family.alias_family().expect("not Custom"));
                    (
                        None,
                        vec![v1::AmiSelectorTerm {
                            alias: Some(alias),
                            ..Default::default()
                        }],
                    )
                } else {
                    (Some(v1_family), terms)
                }
            }
        };
        let m = s.metadata_options.unwrap_or_default();
        if m.http_put_response_hop_limit.is_none() {
            self.note(
                object,
                "spec.metadataOptions.httpPutResponseHopLimit",
                "set to 2, v1beta1's default, to keep behaviour (v1 defaults to 1, which keeps pods off the instance metadata service)",
            );
        }
        let metadata_options = v1::MetadataOptions {
            http_endpoint: m.http_endpoint.unwrap_or(v1::EnabledDisabled::Enabled),
            http_protocol_ipv6: m
                .http_protocol_ipv6
                .unwrap_or(v1::EnabledDisabled::Disabled),
            http_put_response_hop_limit: m.http_put_response_hop_limit.unwrap_or(2),
            http_tokens: m.http_tokens.unwrap_or(v1::HttpTokens::Required),
        };
        Some(v1::EC2NodeClass {
            metadata,
            spec: v1::EC2NodeClassSpec {
                subnet_selector_terms: s.subnet_selector_terms,
                security_group_selector_terms: s.security_group_selector_terms,
                associate_public_ip_address: s.associate_public_ip_address,
                ami_selector_terms,
                ami_family,
                user_data: s.user_data,
                role: s.role,
                instance_profile: s.instance_profile,
                tags: s.tags,
                kubelet: None,
                block_device_mappings,
                instance_store_policy: s.instance_store_policy,
                detailed_monitoring: s.detailed_monitoring,
                metadata_options: Some(metadata_options),
                context: s.context,
            },
            status: status.map(|st| v1::EC2NodeClassStatus {
                subnets: st.subnets,
                security_groups: st.security_groups,
                amis: st.amis,
                instance_profile: st.instance_profile,
                conditions: st.conditions,
            }),
        })
    }

    /// Puts the kubelet block collected from the NodePools into the EC2NodeClass.
    fn move_kubelet(
        &mut self,
        object: &str,
        target: &mut Option<v1::KubeletConfiguration>,
        from: Option<&(String, v1::KubeletConfiguration)>,
    ) {
        let Some((pool, kubelet)) = from else { return };
        match target {
            Some(existing) if existing != kubelet => self.error(
                object,
                "spec.kubelet",
                format!("differs from the kubelet block of {pool}, which moves here in v1; make them agree or use separate EC2NodeClasses"),
            ),
            Some(_) => {}
            None => {
                *target = Some(kubelet.clone());
                self.note(object, "spec.kubelet", format!("taken from {pool}: spec.template.spec.kubelet"));
            }
        }
    }
}
