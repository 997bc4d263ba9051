//! The served resources ([`RESOURCES`]) and the parsing of a request's path.

use crate::store::Resource;

/// A resource the server serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiResource {
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
}

const fn r(
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    kind: &'static str,
    namespaced: bool,
) -> ApiResource {
    ApiResource {
        group,
        version,
        plural,
        kind,
        namespaced,
    }
}

/// Every resource served.
pub const RESOURCES: &[ApiResource] = &[
    r("", "v1", "namespaces", "Namespace", false),
    r("", "v1", "pods", "Pod", true),
    r("", "v1", "nodes", "Node", false),
    r("", "v1", "events", "Event", true),
    r(
        "",
        "v1",
        "persistentvolumeclaims",
        "PersistentVolumeClaim",
        true,
    ),
    r("", "v1", "persistentvolumes", "PersistentVolume", false),
    // What a Helm release (Berth's chart among them) is made of: Helm keeps its release
    // records in Secrets.
    r("", "v1", "secrets", "Secret", true),
    r("", "v1", "configmaps", "ConfigMap", true),
    r("", "v1", "serviceaccounts", "ServiceAccount", true),
    r("", "v1", "services", "Service", true),
    r(
        "rbac.authorization.k8s.io",
        "v1",
        "clusterroles",
        "ClusterRole",
        false,
    ),
    r(
        "rbac.authorization.k8s.io",
        "v1",
        "clusterrolebindings",
        "ClusterRoleBinding",
        false,
    ),
    r("rbac.authorization.k8s.io", "v1", "roles", "Role", true),
    r(
        "rbac.authorization.k8s.io",
        "v1",
        "rolebindings",
        "RoleBinding",
        true,
    ),
    r("apps", "v1", "deployments", "Deployment", true),
    r("apps", "v1", "replicasets", "ReplicaSet", true),
    r("apps", "v1", "statefulsets", "StatefulSet", true),
    r("apps", "v1", "daemonsets", "DaemonSet", true),
    r("batch", "v1", "jobs", "Job", true),
    r(
        "policy",
        "v1",
        "poddisruptionbudgets",
        "PodDisruptionBudget",
        true,
    ),
    r("coordination.k8s.io", "v1", "leases", "Lease", true),
    r(
        "storage.k8s.io",
        "v1",
        "storageclasses",
        "StorageClass",
        false,
    ),
    r("events.k8s.io", "v1", "events", "Event", true),
    r("karpenter.sh", "v1", "nodepools", "NodePool", false),
    r("karpenter.sh", "v1", "nodeclaims", "NodeClaim", false),
    r(
        "karpenter.k8s.aws",
        "v1",
        "ec2nodeclasses",
        "EC2NodeClass",
        false,
    ),
    // Written objects are converted to v1 and stored as such (reads return v1).
    r("karpenter.sh", "v1beta1", "nodepools", "NodePool", false),
    r("karpenter.sh", "v1beta1", "nodeclaims", "NodeClaim", false),
    r(
        "karpenter.k8s.aws",
        "v1beta1",
        "ec2nodeclasses",
        "EC2NodeClass",
        false,
    ),
    r(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        false,
    ),
];

impl ApiResource {
    pub(super) fn store_key(&self) -> Resource {
        // Events of core/v1 and events.k8s.io/v1 are different stores here.
        Resource::new(self.group, self.plural, self.namespaced)
    }

    pub(super) fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

/// The parsed path of a resource request.
#[derive(Debug, PartialEq)]
pub(super) struct Target {
    pub(super) api: ApiResource,
    pub(super) namespace: Option<String>,
    pub(super) name: Option<String>,
    pub(super) subresource: Option<String>,
}

pub(super) fn parse_path(path: &str) -> Option<Target> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match parts.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some((*ns).to_owned()), rest),
        _ => (None, rest),
    };
    let (plural, name, subresource) = match rest {
        [plural] => (*plural, None, None),
        [plural, name] => (*plural, Some((*name).to_owned()), None),
        [plural, name, sub] => (*plural, Some((*name).to_owned()), Some((*sub).to_owned())),
        _ => return None,
    };
    // `/api/v1/namespaces/<name>` is the namespace itself.
    let api = *RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)?;
    Some(Target {
        api,
        namespace,
        name,
        subresource,
    })
}
