//! User data that joins an instance to the cluster, per AMI family:
//!
//! - **AL2**: MIME multipart; the user's parts first, then a shell part that runs
//!   `/etc/eks/bootstrap.sh` with the cluster, labels, taints and kubelet flags.
//! - **AL2023**: MIME multipart; the user's parts first, then a `nodeadm` `NodeConfig`
//!   (`application/node.eks.aws`).
//! - **Bottlerocket**: TOML settings; the user's TOML merged with Berth's (Berth's cluster
//!   settings win, the user's other settings stay).
//! - **Custom**: the user's user data, untouched.
//!
//! Output is deterministic (sorted labels, fixed MIME boundary) so that equal inputs give equal
//! launch templates.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use berth_scheduler_core::model::Taint;

/// The MIME boundary of every multipart user data Berth writes.
pub const BOUNDARY: &str = "//BERTH-BOUNDARY//";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    AL2,
    AL2023,
    Bottlerocket,
    Custom,
}

/// What the node needs to join the cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Bootstrap {
    pub cluster_name: String,
    pub endpoint: String,
    /// Base64 of the cluster CA bundle.
    pub ca_bundle: String,
    /// The cluster's service CIDR (AL2023 needs it).
    pub service_cidr: String,
    pub cluster_dns: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<(String, String, String)>,
    pub max_pods: Option<i32>,
    pub kube_reserved: BTreeMap<String, String>,
    pub system_reserved: BTreeMap<String, String>,
    pub eviction_hard: BTreeMap<String, String>,
    pub eviction_soft: BTreeMap<String, String>,
    pub eviction_soft_grace_period: BTreeMap<String, String>,
    /// The EC2NodeClass's `userData`.
    pub user_data: Option<String>,
}

impl Bootstrap {
    pub fn taint(t: &Taint) -> (String, String, String) {
        (t.key.clone(), t.value.clone(), t.effect.as_str().to_owned())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserDataError {
    #[error("spec.userData: not valid TOML for Bottlerocket: {0}")]
    Toml(String),
    #[error("spec.userData: {0}")]
    Mime(String),
}

/// The user data for `family`, not yet base64-encoded.
pub fn render(family: Family, b: &Bootstrap) -> Result<String, UserDataError> {
    match family {
        Family::AL2 => Ok(multipart(
            b.user_data.as_deref(),
            "text/x-shellscript; charset=\"us-ascii\"",
            &al2_script(b),
        )?),
        Family::AL2023 => Ok(multipart(
            b.user_data.as_deref(),
            "application/node.eks.aws",
            &node_config(b),
        )?),
        Family::Bottlerocket => bottlerocket(b),
        Family::Custom => Ok(b.user_data.clone().unwrap_or_default()),
    }
}

fn joined(map: &BTreeMap<String, String>) -> String {
    map.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn taint_list(b: &Bootstrap) -> String {
    b.taints
        .iter()
        .map(|(k, v, e)| {
            if v.is_empty() {
                format!("{k}:{e}")
            } else {
                format!("{k}={v}:{e}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn al2_script(b: &Bootstrap) -> String {
    let mut kubelet = Vec::new();
    if !b.labels.is_empty() {
        kubelet.push(format!("--node-labels=\"{}\"", joined(&b.labels)));
    }
    if !b.taints.is_empty() {
        kubelet.push(format!("--register-with-taints=\"{}\"", taint_list(b)));
    }
    if let Some(n) = b.max_pods {
        kubelet.push(format!("--max-pods={n}"));
    }
    for (flag, map) in [
        ("--kube-reserved", &b.kube_reserved),
        ("--system-reserved", &b.system_reserved),
    ] {
        if !map.is_empty() {
            kubelet.push(format!("{flag}={}", joined(map)));
        }
    }
    for (flag, map) in [
        ("--eviction-hard", &b.eviction_hard),
        ("--eviction-soft", &b.eviction_soft),
        (
            "--eviction-soft-grace-period",
            &b.eviction_soft_grace_period,
        ),
    ] {
        if !map.is_empty() {
            let v = map
                .iter()
                .map(|(k, v)| format!("{k}<{v}"))
                .collect::<Vec<_>>()
                .join(",");
            kubelet.push(format!("{flag}=\"{v}\""));
        }
    }
    let mut s = String::from("#!/bin/bash -xe\n");
    s.push_str("exec > >(tee /var/log/user-data.log|logger -t user-data -s 2>/dev/console) 2>&1\n");
    let _ = write!(
        s,
        "/etc/eks/bootstrap.sh '{}' --apiserver-endpoint '{}' --b64-cluster-ca '{}'",
        b.cluster_name, b.endpoint, b.ca_bundle
    );
    if let Some(dns) = b.cluster_dns.first() {
        let _ = write!(s, " \\\n--dns-cluster-ip '{dns}'");
    }
    if b.max_pods.is_some() {
        s.push_str(" \\\n--use-max-pods false");
    }
    if !kubelet.is_empty() {
        let _ = write!(s, " \\\n--kubelet-extra-args '{}'", kubelet.join(" "));
    }
    s.push('\n');
    s
}

/// YAML string, quoted.
fn q(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialize")
}

fn node_config(b: &Bootstrap) -> String {
    let mut s = String::new();
    s.push_str("apiVersion: node.eks.aws/v1alpha1\nkind: NodeConfig\nspec:\n  cluster:\n");
    let _ = writeln!(s, "    name: {}", q(&b.cluster_name));
    let _ = writeln!(s, "    apiServerEndpoint: {}", q(&b.endpoint));
    let _ = writeln!(s, "    certificateAuthority: {}", q(&b.ca_bundle));
    let _ = writeln!(s, "    cidr: {}", q(&b.service_cidr));
    s.push_str("  kubelet:\n    config:\n");
    if let Some(n) = b.max_pods {
        let _ = writeln!(s, "      maxPods: {n}");
    }
    if !b.cluster_dns.is_empty() {
        s.push_str("      clusterDNS:\n");
        for d in &b.cluster_dns {
            let _ = writeln!(s, "      - {}", q(d));
        }
    }
    for (name, map) in [
        ("kubeReserved", &b.kube_reserved),
        ("systemReserved", &b.system_reserved),
        ("evictionHard", &b.eviction_hard),
        ("evictionSoft", &b.eviction_soft),
        ("evictionSoftGracePeriod", &b.eviction_soft_grace_period),
    ] {
        if !map.is_empty() {
            let _ = writeln!(s, "      {name}:");
            for (k, v) in map {
                let _ = writeln!(s, "        {}: {}", q(k), q(v));
            }
        }
    }
    if !b.taints.is_empty() {
        s.push_str("      registerWithTaints:\n");
        for (k, v, e) in &b.taints {
            let _ = writeln!(s, "      - key: {}", q(k));
            if !v.is_empty() {
                let _ = writeln!(s, "        value: {}", q(v));
            }
            let _ = writeln!(s, "        effect: {}", q(e));
        }
    }
    if !b.labels.is_empty() {
        s.push_str("    flags:\n");
        let _ = writeln!(
            s,
            "    - {}",
            q(&format!("--node-labels={}", joined(&b.labels)))
        );
    }
    s
}

/// The parts of the user's user data: a MIME multipart document's parts, or the whole text
/// as one shell-script part.
fn user_parts(user: &str) -> Result<Vec<String>, UserDataError> {
    let trimmed = user.trim_start();
    if !trimmed.starts_with("MIME-Version:") {
        return Ok(vec![format!(
            "Content-Type: text/x-shellscript; charset=\"us-ascii\"\n\n{}",
            user.trim_end()
        )]);
    }
    let boundary = trimmed
        .lines()
        .find_map(|l| {
            let l = l.trim();
            l.to_ascii_lowercase()
                .starts_with("content-type: multipart/mixed")
                .then(|| {
                    l.split("boundary=")
                        .nth(1)
                        .map(|b| b.trim_matches('"').to_owned())
                })
                .flatten()
        })
        .ok_or_else(|| {
            UserDataError::Mime("a MIME document without a multipart/mixed boundary".to_owned())
        })?;
    let delimiter = format!("--{boundary}");
    let mut parts = Vec::new();
    for chunk in trimmed.split(&delimiter).skip(1) {
        if chunk.starts_with("--") {
            break; // the closing delimiter
        }
        let part = chunk.trim_matches(|c| c == '\n' || c == '\r');
        if !part.is_empty() {
            parts.push(part.to_owned());
        }
    }
    Ok(parts)
}

fn multipart(user: Option<&str>, content_type: &str, ours: &str) -> Result<String, UserDataError> {
    let mut parts = match user {
        Some(u) if !u.trim().is_empty() => user_parts(u)?,
        _ => Vec::new(),
    };
    parts.push(format!(
        "Content-Type: {content_type}\n\n{}",
        ours.trim_end()
    ));
    let mut s =
        format!("MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"{BOUNDARY}\"\n\n");
    for p in &parts {
        let _ = write!(s, "--{BOUNDARY}\n{p}\n\n");
    }
    let _ = writeln!(s, "--{BOUNDARY}--");
    Ok(s)
}

fn bottlerocket(b: &Bootstrap) -> Result<String, UserDataError> {
    use toml::Value;
    let mut doc: toml::Table = match b.user_data.as_deref() {
        Some(u) if !u.trim().is_empty() => {
            toml::from_str(u).map_err(|e| UserDataError::Toml(e.message().to_owned()))?
        }
        _ => toml::Table::new(),
    };
    let settings = doc
        .entry("settings")
        .or_insert_with(|| Value::Table(toml::Table::new()));
    let Value::Table(settings) = settings else {
        return Err(UserDataError::Toml("`settings` must be a table".to_owned()));
    };
    let k8s = settings
        .entry("kubernetes")
        .or_insert_with(|| Value::Table(toml::Table::new()));
    let Value::Table(k8s) = k8s else {
        return Err(UserDataError::Toml(
            "`settings.kubernetes` must be a table".to_owned(),
        ));
    };
    k8s.insert("cluster-name".into(), Value::String(b.cluster_name.clone()));
    k8s.insert("api-server".into(), Value::String(b.endpoint.clone()));
    k8s.insert(
        "cluster-certificate".into(),
        Value::String(b.ca_bundle.clone()),
    );
    if let Some(dns) = b.cluster_dns.first() {
        k8s.insert("cluster-dns-ip".into(), Value::String(dns.clone()));
    }
    if let Some(n) = b.max_pods {
        k8s.insert("max-pods".into(), Value::Integer(i64::from(n)));
    }
    let table = |map: &BTreeMap<String, String>| {
        Value::Table(
            map.iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect(),
        )
    };
    let merge = |k8s: &mut toml::Table, name: &str, map: &BTreeMap<String, String>| {
        if map.is_empty() {
            return;
        }
        let entry = k8s
            .entry(name)
            .or_insert_with(|| Value::Table(toml::Table::new()));
        match entry {
            Value::Table(t) => {
                for (k, v) in map {
                    t.insert(k.clone(), Value::String(v.clone()));
                }
            }
            other => *other = table(map),
        }
    };
    merge(k8s, "node-labels", &b.labels);
    merge(k8s, "kube-reserved", &b.kube_reserved);
    merge(k8s, "system-reserved", &b.system_reserved);
    merge(k8s, "eviction-hard", &b.eviction_hard);
    if !b.taints.is_empty() {
        let mut taints: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (k, v, e) in &b.taints {
            taints
                .entry(k.clone())
                .or_default()
                .push(format!("{v}:{e}"));
        }
        let entry = k8s
            .entry("node-taints")
            .or_insert_with(|| Value::Table(toml::Table::new()));
        if let Value::Table(t) = entry {
            for (k, vs) in taints {
                t.insert(k, Value::Array(vs.into_iter().map(Value::String).collect()));
            }
        }
    }
    toml::to_string(&doc).map_err(|e| UserDataError::Toml(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Compares with `tests/golden/<name>`; `BERTH_UPDATE_GOLDEN=1` rewrites the file.
    fn golden(name: &str, got: &str) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/golden")
            .join(name);
        if std::env::var_os("BERTH_UPDATE_GOLDEN").is_some() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, got).unwrap();
        }
        let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (run with BERTH_UPDATE_GOLDEN=1 to create it)",
                path.display()
            )
        });
        assert_eq!(got, want, "{name} differs from its golden file");
    }

    fn bootstrap(user_data: Option<&str>) -> Bootstrap {
        Bootstrap {
            cluster_name: "gitlab-ci".into(),
            endpoint: "https://ABCDEF.gr7.us-east-1.eks.amazonaws.com".into(),
            ca_bundle: "Q0EtQlVORExF".into(),
            service_cidr: "10.100.0.0/16".into(),
            cluster_dns: vec!["10.100.0.10".into()],
            labels: [
                (
                    "karpenter.sh/nodepool".to_owned(),
                    "gitlab-auto-nodepool".to_owned(),
                ),
                ("workload".to_owned(), "gitlab-runner".to_owned()),
            ]
            .into(),
            taints: vec![
                (
                    "dedicated".into(),
                    "gitlab-runner-auto".into(),
                    "NoSchedule".into(),
                ),
                (
                    "karpenter.sh/unregistered".into(),
                    String::new(),
                    "NoExecute".into(),
                ),
            ],
            max_pods: Some(110),
            kube_reserved: [("cpu".to_owned(), "100m".to_owned())].into(),
            system_reserved: BTreeMap::new(),
            eviction_hard: [("memory.available".to_owned(), "5%".to_owned())].into(),
            eviction_soft: BTreeMap::new(),
            eviction_soft_grace_period: BTreeMap::new(),
            user_data: user_data.map(str::to_owned),
        }
    }

    #[test]
    fn al2_bootstraps_with_labels_taints_and_kubelet_flags_after_the_users_script() {
        let got = render(Family::AL2, &bootstrap(Some("#!/bin/bash\necho hello\n"))).unwrap();
        golden("al2.txt", &got);
    }

    #[test]
    fn al2023_appends_a_node_config_to_the_users_mime_parts() {
        let user = "MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"XYZ\"\n\n--XYZ\nContent-Type: text/x-shellscript\n\necho user\n--XYZ--\n";
        let got = render(Family::AL2023, &bootstrap(Some(user))).unwrap();
        assert!(got.contains("echo user"));
        assert!(got.find("echo user") < got.find("kind: NodeConfig"));
        golden("al2023.txt", &got);
    }

    #[test]
    fn bottlerocket_merges_the_users_toml_and_berth_wins_on_cluster_settings() {
        let user = "[settings.kubernetes]\ncluster-name = \"wrong\"\nimage-gc-high-threshold-percent = 85\n\n[settings.host-containers.admin]\nenabled = true\n";
        let got = render(Family::Bottlerocket, &bootstrap(Some(user))).unwrap();
        let parsed: toml::Table = toml::from_str(&got).unwrap();
        let k8s = &parsed["settings"]["kubernetes"];
        assert_eq!(k8s["cluster-name"].as_str(), Some("gitlab-ci"));
        assert_eq!(
            k8s["image-gc-high-threshold-percent"].as_integer(),
            Some(85)
        );
        assert_eq!(
            parsed["settings"]["host-containers"]["admin"]["enabled"].as_bool(),
            Some(true)
        );
        golden("bottlerocket.toml", &got);
    }

    #[test]
    fn bad_bottlerocket_toml_names_the_field() {
        let err = render(Family::Bottlerocket, &bootstrap(Some("[settings"))).unwrap_err();
        assert!(err.to_string().starts_with("spec.userData:"), "{err}");
    }

    #[test]
    fn custom_is_the_users_user_data_untouched() {
        let got = render(Family::Custom, &bootstrap(Some("anything at all"))).unwrap();
        assert_eq!(got, "anything at all");
    }

    #[test]
    fn output_is_deterministic() {
        let b = bootstrap(None);
        assert_eq!(
            render(Family::AL2023, &b).unwrap(),
            render(Family::AL2023, &b).unwrap()
        );
    }
}
