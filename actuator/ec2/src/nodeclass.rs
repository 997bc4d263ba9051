//! Resolving an EC2NodeClass to what a launch needs: subnets, security groups, AMIs, the
//! instance profile. A class that cannot resolve is not ready, with a reason a person can act
//! on, and its NodePools are not launched into.

use std::collections::BTreeMap;

use berth_api::v1::{AmiFamily, EC2NodeClassSpec};
use berth_scheduler_core::labels;

use crate::api::{Ec2Api, Filter, Image, SecurityGroup, Subnet, Tags};
use crate::userdata::Family;

/// What resolution needs besides the class: the cluster's Kubernetes version (`1.33`) for the
/// aliases; the cluster, region and class names for the instance profile made from a role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolveContext {
    pub kubernetes_version: String,
    pub cluster_name: String,
    pub region: String,
    pub class_name: String,
}

impl ResolveContext {
    /// The instance profile Berth creates for a class that names a `role`: one per (cluster,
    /// region, class), `<cluster>_<hash>` like Karpenter's, so a class keeps its profile across
    /// restarts and two clusters in one account never share one.
    pub fn instance_profile_name(&self) -> String {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(format!("{}{}", self.region, self.class_name));
        let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        format!("{}_{hex}", self.cluster_name)
    }

    fn instance_profile_tags(&self) -> Tags {
        [
            (labels::EC2_NODE_CLASS.to_owned(), self.class_name.clone()),
            (
                format!("kubernetes.io/cluster/{}", self.cluster_name),
                "owned".to_owned(),
            ),
            ("eks:eks-cluster-name".to_owned(), self.cluster_name.clone()),
            (labels::TOPOLOGY_REGION.to_owned(), self.region.clone()),
        ]
        .into()
    }
}

/// An AMI the class may launch, with the architecture it serves (Kubernetes' spelling).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedAmi {
    pub id: String,
    pub name: String,
    /// `amd64` or `arm64`.
    pub arch: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedNodeClass {
    /// At most one per zone: the one with the most free addresses.
    pub subnets: Vec<Subnet>,
    pub security_groups: Vec<SecurityGroup>,
    /// The newest matching image per architecture.
    pub amis: Vec<ResolvedAmi>,
    pub family: Family,
    pub instance_profile: Option<String>,
}

impl ResolvedNodeClass {
    pub fn ami_for(&self, arch: &str) -> Option<&ResolvedAmi> {
        self.amis.iter().find(|a| a.arch == arch)
    }

    pub fn subnet_in(&self, zone: &str) -> Option<&Subnet> {
        self.subnets.iter().find(|s| s.zone == zone)
    }
}

/// Why a class is not ready; `condition` is the status condition that is false.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{condition}: {reason}")]
pub struct NotReady {
    /// `SubnetsReady`, `SecurityGroupsReady`, `AMIsReady`, `InstanceProfileReady`.
    pub condition: &'static str,
    pub reason: String,
}

fn not_ready(condition: &'static str, reason: impl Into<String>) -> NotReady {
    NotReady {
        condition,
        reason: reason.into(),
    }
}

/// EC2's architecture spelling to Kubernetes'.
pub fn kube_arch(ec2: &str) -> Option<&'static str> {
    match ec2 {
        "x86_64" | "x86_64_mac" => Some(labels::ARCH_AMD64),
        "arm64" | "arm64_mac" => Some(labels::ARCH_ARM64),
        _ => None,
    }
}

/// The value Berth writes in `karpenter.k8s.aws/ec2nodeclass-hash-version`. Berth's hash is its
/// own (not Karpenter's hashstructure), so a claim hashed by Karpenter (`v4`) is not called
/// drifted for that.
pub const NODE_CLASS_HASH_VERSION: &str = "berth-v1";

/// The EC2NodeClass's static drift hash (`karpenter.k8s.aws/ec2nodeclass-hash`): the fields
/// Karpenter's `EC2NodeClass.Hash()` covers: everything in the spec but the selector terms
/// (subnets, security groups, AMIs, capacity reservations; their drift is dynamic: what they
/// resolve to is compared instead) and `ipPrefixCount`, with the AMI family as resolved (an
/// alias's family counts as if written). FNV-1a over the fields' canonical JSON, as a decimal.
pub fn node_class_hash(spec: &EC2NodeClassSpec) -> String {
    let fields = serde_json::json!({
        "associatePublicIPAddress": spec.associate_public_ip_address,
        "amiFamily": format!("{:?}", family_of(spec)),
        "userData": spec.user_data,
        "role": spec.role,
        "instanceProfile": spec.instance_profile,
        "tags": spec.tags,
        "kubelet": spec.kubelet,
        "blockDeviceMappings": spec.block_device_mappings,
        "instanceStorePolicy": spec.instance_store_policy,
        "detailedMonitoring": spec.detailed_monitoring,
        "metadataOptions": spec.metadata_options,
        "context": spec.context,
    });
    // NB: serde_json's maps are sorted by key (no `preserve_order`), so this is canonical.
    let text = fields.to_string();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h.to_string()
}

pub fn family_of(spec: &EC2NodeClassSpec) -> Family {
    let from_alias = spec
        .ami_selector_terms
        .iter()
        .find_map(|t| t.alias.as_deref())
        .and_then(|a| a.split('@').next())
        .and_then(AmiFamily::from_alias_family);
    match spec.ami_family.or(from_alias) {
        Some(AmiFamily::AL2) => Family::AL2,
        Some(AmiFamily::AL2023) => Family::AL2023,
        Some(AmiFamily::Bottlerocket) => Family::Bottlerocket,
        _ => Family::Custom,
    }
}

/// The SSM parameters of an alias (`al2023@latest`, `bottlerocket@v1.20.3`), per architecture.
pub fn alias_parameters(
    alias: &str,
    kubernetes_version: &str,
) -> Result<Vec<(&'static str, String)>, String> {
    let (family, version) = alias
        .split_once('@')
        .ok_or_else(|| format!("alias {alias:?} is not <family>@<version>"))?;
    let k = kubernetes_version;
    let latest = version == "latest";
    let v = version;
    let params = match family {
        "al2" => vec![
            (
                labels::ARCH_AMD64,
                if latest {
                    format!("/aws/service/eks/optimized-ami/{k}/amazon-linux-2/recommended/image_id")
                } else {
                    format!("/aws/service/eks/optimized-ami/{k}/amazon-linux-2/amazon-eks-node-{k}-{v}/image_id")
                },
            ),
            (
                labels::ARCH_ARM64,
                if latest {
                    format!("/aws/service/eks/optimized-ami/{k}/amazon-linux-2-arm64/recommended/image_id")
                } else {
                    format!("/aws/service/eks/optimized-ami/{k}/amazon-linux-2-arm64/amazon-eks-arm64-node-{k}-{v}/image_id")
                },
            ),
        ],
        "al2023" => [("x86_64", labels::ARCH_AMD64), ("arm64", labels::ARCH_ARM64)]
            .into_iter()
            .map(|(ec2, arch)| {
                (
                    arch,
                    if latest {
                        format!("/aws/service/eks/optimized-ami/{k}/amazon-linux-2023/{ec2}/standard/recommended/image_id")
                    } else {
                        format!("/aws/service/eks/optimized-ami/{k}/amazon-linux-2023/{ec2}/standard/amazon-eks-node-al2023-{ec2}-standard-{k}-{v}/image_id")
                    },
                )
            })
            .collect(),
        "bottlerocket" => [("x86_64", labels::ARCH_AMD64), ("arm64", labels::ARCH_ARM64)]
            .into_iter()
            .map(|(ec2, arch)| {
                let v = v.trim_start_matches('v');
                (
                    arch,
                    if latest {
                        format!("/aws/service/bottlerocket/aws-k8s-{k}/{ec2}/latest/image_id")
                    } else {
                        format!("/aws/service/bottlerocket/aws-k8s-{k}/{ec2}/{v}/image_id")
                    },
                )
            })
            .collect(),
        other => return Err(format!("alias family {other:?} is not supported on Linux (al2, al2023, bottlerocket)")),
    };
    Ok(params)
}

/// Resolves every part of the class; the first part that fails makes it not ready.
pub async fn resolve<A: Ec2Api>(
    api: &A,
    spec: &EC2NodeClassSpec,
    cx: &ResolveContext,
) -> Result<ResolvedNodeClass, NotReady> {
    let subnets = subnets(api, spec).await?;
    let security_groups = security_groups(api, spec).await?;
    let amis = amis(api, spec, cx).await?;
    let instance_profile = instance_profile(api, spec, cx).await?;
    Ok(ResolvedNodeClass {
        subnets,
        security_groups,
        amis,
        family: family_of(spec),
        instance_profile,
    })
}

/// The class's instance profile: `spec.instanceProfile` as given (it must exist), or the
/// profile Berth keeps for `spec.role` (created, and its role replaced when the class names
/// another).
async fn instance_profile<A: Ec2Api>(
    api: &A,
    spec: &EC2NodeClassSpec,
    cx: &ResolveContext,
) -> Result<Option<String>, NotReady> {
    let fail = |field: &str, e: String| not_ready("InstanceProfileReady", format!("{field}: {e}"));
    match (&spec.instance_profile, &spec.role) {
        (Some(profile), _) => match api.get_instance_profile(profile.clone()).await {
            Ok(Some(_)) => Ok(Some(profile.clone())),
            Ok(None) => Err(fail(
                "spec.instanceProfile",
                format!("instance profile {profile:?} does not exist"),
            )),
            Err(e) => Err(fail("spec.instanceProfile", e.to_string())),
        },
        (None, Some(role)) => {
            let name = cx.instance_profile_name();
            let field = "spec.role";
            let roles = match api.get_instance_profile(name.clone()).await {
                Ok(Some(roles)) => roles,
                Ok(None) => {
                    match api
                        .create_instance_profile(name.clone(), cx.instance_profile_tags())
                        .await
                    {
                        Ok(()) => {}
                        // Another replica created it meanwhile.
                        Err(e) if e.code == "EntityAlreadyExists" => {}
                        Err(e) => return Err(fail(field, e.to_string())),
                    }
                    Vec::new()
                }
                Err(e) => return Err(fail(field, e.to_string())),
            };
            // A profile holds one role: drop any other before adding this one.
            for other in roles.iter().filter(|r| *r != role) {
                api.remove_role_from_instance_profile(name.clone(), other.clone())
                    .await
                    .map_err(|e| fail(field, e.to_string()))?;
            }
            if !roles.contains(role) {
                match api
                    .add_role_to_instance_profile(name.clone(), role.clone())
                    .await
                {
                    Ok(()) => {}
                    // NB: another resolution (the class controller's and a launch's run at
                    // once) added it meanwhile; a profile holds one role, so IAM refuses the
                    // second add. Only a profile that holds the role now is fine.
                    Err(e)
                        if e.code == "LimitExceeded"
                            && api
                                .get_instance_profile(name.clone())
                                .await
                                .ok()
                                .flatten()
                                .is_some_and(|now| now == [role.clone()]) => {}
                    Err(e) => return Err(fail(field, format!("role {role:?}: {e}"))),
                }
            }
            Ok(Some(name))
        }
        (None, None) => Ok(None),
    }
}

/// Deletes the instance profile Berth made for the class (its roles removed first), whatever
/// the spec says now: a class that moved from `role` to its own `instanceProfile` still had
/// one. A profile the user named is never touched. Idempotent.
pub async fn release_instance_profile<A: Ec2Api>(
    api: &A,
    _spec: &EC2NodeClassSpec,
    cx: &ResolveContext,
) -> Result<(), crate::api::ApiError> {
    let name = cx.instance_profile_name();
    if let Some(roles) = api.get_instance_profile(name.clone()).await? {
        for role in roles {
            api.remove_role_from_instance_profile(name.clone(), role)
                .await?;
        }
        api.delete_instance_profile(name).await?;
    }
    Ok(())
}

async fn subnets<A: Ec2Api>(api: &A, spec: &EC2NodeClassSpec) -> Result<Vec<Subnet>, NotReady> {
    let mut found: BTreeMap<String, Subnet> = BTreeMap::new();
    for (i, term) in spec.subnet_selector_terms.iter().enumerate() {
        let mut filters: Vec<Filter> = term.tags.iter().map(|(k, v)| Filter::tag(k, v)).collect();
        if let Some(id) = &term.id {
            filters.push(Filter::new("subnet-id", &[id]));
        }
        let subnets = api.describe_subnets(filters).await.map_err(|e| {
            not_ready(
                "SubnetsReady",
                format!("spec.subnetSelectorTerms[{i}]: {e}"),
            )
        })?;
        for s in subnets {
            found.insert(s.id.clone(), s);
        }
    }
    // One per zone: the one with the most free addresses (then by id, for determinism).
    let mut by_zone: BTreeMap<String, Subnet> = BTreeMap::new();
    for s in found.into_values() {
        match by_zone.get(&s.zone) {
            Some(best) if best.available_ips >= s.available_ips => {}
            _ => {
                by_zone.insert(s.zone.clone(), s);
            }
        }
    }
    if by_zone.is_empty() {
        return Err(not_ready(
            "SubnetsReady",
            "no subnet matches spec.subnetSelectorTerms",
        ));
    }
    Ok(by_zone.into_values().collect())
}

async fn security_groups<A: Ec2Api>(
    api: &A,
    spec: &EC2NodeClassSpec,
) -> Result<Vec<SecurityGroup>, NotReady> {
    let mut found: BTreeMap<String, SecurityGroup> = BTreeMap::new();
    for (i, term) in spec.security_group_selector_terms.iter().enumerate() {
        let mut filters: Vec<Filter> = term.tags.iter().map(|(k, v)| Filter::tag(k, v)).collect();
        if let Some(id) = &term.id {
            filters.push(Filter::new("group-id", &[id]));
        }
        if let Some(name) = &term.name {
            filters.push(Filter::new("group-name", &[name]));
        }
        let groups = api.describe_security_groups(filters).await.map_err(|e| {
            not_ready(
                "SecurityGroupsReady",
                format!("spec.securityGroupSelectorTerms[{i}]: {e}"),
            )
        })?;
        for g in groups {
            found.insert(g.id.clone(), g);
        }
    }
    if found.is_empty() {
        return Err(not_ready(
            "SecurityGroupsReady",
            "no security group matches spec.securityGroupSelectorTerms",
        ));
    }
    Ok(found.into_values().collect())
}

async fn amis<A: Ec2Api>(
    api: &A,
    spec: &EC2NodeClassSpec,
    cx: &ResolveContext,
) -> Result<Vec<ResolvedAmi>, NotReady> {
    let fail = |i: usize, what: String| {
        not_ready("AMIsReady", format!("spec.amiSelectorTerms[{i}]: {what}"))
    };
    // Candidates per architecture; the newest wins.
    let mut images: Vec<Image> = Vec::new();
    let mut by_id: Vec<(usize, String, Option<&'static str>)> = Vec::new();
    for (i, term) in spec.ami_selector_terms.iter().enumerate() {
        if let Some(alias) = &term.alias {
            let params = alias_parameters(alias, &cx.kubernetes_version).map_err(|e| fail(i, e))?;
            for (arch, param) in params {
                match api.get_parameter(param.clone()).await {
                    Ok(Some(id)) => by_id.push((i, id, Some(arch))),
                    // One architecture missing is fine (some families have no arm64 image).
                    Ok(None) => {}
                    Err(e) => return Err(fail(i, format!("SSM parameter {param}: {e}"))),
                }
            }
            if !by_id.iter().any(|(t, ..)| *t == i) {
                return Err(fail(
                    i,
                    format!(
                        "alias {alias}: no SSM parameter for Kubernetes {}",
                        cx.kubernetes_version
                    ),
                ));
            }
            continue;
        }
        if let Some(param) = &term.ssm_parameter {
            match api.get_parameter(param.clone()).await {
                Ok(Some(id)) => by_id.push((i, id, None)),
                Ok(None) => return Err(fail(i, format!("SSM parameter {param} does not exist"))),
                Err(e) => return Err(fail(i, format!("SSM parameter {param}: {e}"))),
            }
            continue;
        }
        let mut filters: Vec<Filter> = term.tags.iter().map(|(k, v)| Filter::tag(k, v)).collect();
        if let Some(id) = &term.id {
            filters.push(Filter::new("image-id", &[id]));
        }
        if let Some(name) = &term.name {
            filters.push(Filter::new("name", &[name]));
        }
        let owners = match (&term.owner, &term.name, &term.id) {
            (Some(o), ..) => vec![o.clone()],
            // A name alone could match anyone's image: only the account's and Amazon's.
            (None, Some(_), None) => vec!["self".to_owned(), "amazon".to_owned()],
            _ => Vec::new(),
        };
        let found = api
            .describe_images(filters, owners)
            .await
            .map_err(|e| fail(i, e.to_string()))?;
        if found.is_empty() {
            return Err(fail(i, "no image matches".to_owned()));
        }
        images.extend(found);
    }
    if !by_id.is_empty() {
        let ids: Vec<String> = by_id.iter().map(|(_, id, _)| id.clone()).collect();
        let described = api
            .describe_images(
                vec![Filter {
                    name: "image-id".to_owned(),
                    values: ids.clone(),
                }],
                Vec::new(),
            )
            .await
            .map_err(|e| fail(by_id[0].0, e.to_string()))?;
        for (i, id, arch) in &by_id {
            match described.iter().find(|d| &d.id == id) {
                Some(d) => {
                    let mut d = d.clone();
                    if let Some(arch) = arch
                        && d.architecture.is_empty()
                    {
                        d.architecture = (*arch).to_owned();
                    }
                    images.push(d);
                }
                None => return Err(fail(*i, format!("image {id} does not exist"))),
            }
        }
    }
    let mut newest: BTreeMap<&'static str, Image> = BTreeMap::new();
    for img in images {
        let Some(arch) = kube_arch(&img.architecture).or(match img.architecture.as_str() {
            "amd64" => Some(labels::ARCH_AMD64),
            "arm64" => Some(labels::ARCH_ARM64),
            _ => None,
        }) else {
            continue;
        };
        match newest.get(arch) {
            Some(best)
                if (best.created.as_str(), best.id.as_str())
                    >= (img.created.as_str(), img.id.as_str()) => {}
            _ => {
                newest.insert(arch, img);
            }
        }
    }
    if newest.is_empty() {
        return Err(not_ready(
            "AMIsReady",
            "no image for amd64 or arm64 matches spec.amiSelectorTerms",
        ));
    }
    Ok(newest
        .into_iter()
        .map(|(arch, img)| ResolvedAmi {
            id: img.id,
            name: img.name,
            arch: arch.to_owned(),
        })
        .collect())
}
