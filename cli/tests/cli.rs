//! The `berth` binary end to end: what a user types, what they see, and the exit code.

mod common;

use common::{berth, text};

const SEED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../api/tests/fixtures/seed");

fn seed(name: &str) -> String {
    format!("{SEED}/{name}")
}

#[test]
fn each_seed_manifest_converts_to_v1_that_validate_accepts() {
    for name in [
        "ec2nodeclass-default.v1beta1.yaml",
        "nodepool-default.v1beta1.yaml",
        "nodepool-gitlab.v1beta1.yaml",
    ] {
        let out = berth(&["convert", "-f", &seed(name)], None);
        assert!(out.status.success(), "{name}: {}", text(&out.stderr));
        let yaml = text(&out.stdout);
        assert!(yaml.contains("apiVersion: karpenter."), "{yaml}");
        assert!(
            !yaml.contains("v1beta1"),
            "{name} still mentions v1beta1:\n{yaml}"
        );

        let out = berth(&["validate", "-f", "-"], Some(&yaml));
        assert!(out.status.success(), "{name}: {}", text(&out.stderr));
        assert!(text(&out.stdout).contains(": valid"));
    }
}

#[test]
fn several_files_convert_together() {
    let out = berth(
        &[
            "convert",
            "-f",
            &seed("ec2nodeclass-default.v1beta1.yaml"),
            &seed("nodepool-gitlab.v1beta1.yaml"),
        ],
        None,
    );
    assert!(out.status.success());
    let yaml = text(&out.stdout);
    assert_eq!(
        yaml.matches("\nkind: ").count() + usize::from(yaml.starts_with("kind: ")),
        2,
        "{yaml}"
    );
    assert!(yaml.contains("alias: al2@latest"));
    assert!(yaml.contains("consolidationPolicy: WhenEmptyOrUnderutilized"));
    assert!(
        text(&out.stderr)
            .contains("note: EC2NodeClass/default: spec.metadataOptions.httpPutResponseHopLimit")
    );
}

#[test]
fn invalid_input_exits_1_with_the_field_path_and_prints_nothing() {
    let gitlab = std::fs::read_to_string(seed("nodepool-gitlab.v1beta1.yaml")).unwrap();
    let cases = [
        (
            gitlab.replace("operator: Gt", "operator: Bigger"),
            "spec.template.spec.requirements[5].operator",
        ),
        (
            gitlab.replace(
                "key: karpenter.k8s.aws/instance-family",
                "key: kubernetes.io/custom",
            ),
            "spec.template.spec.requirements[3].key",
        ),
        (
            gitlab.replace("  limits:\n", "  weight: 0\n  limits:\n"),
            "spec.weight",
        ),
        (
            gitlab.replace("values: [\"2\"]", "values: [\"2\", \"3\"]"),
            "spec.template.spec.requirements[5].values",
        ),
        (
            gitlab.replace("WhenUnderutilized", "WhenIdle"),
            "spec.disruption.consolidationPolicy",
        ),
        (
            gitlab.replace("      nodeClassRef:\n        name: default\n", ""),
            "spec.template.spec.nodeClassRef",
        ),
    ];
    for (manifest, path) in cases {
        let other = std::fs::read_to_string(seed("ec2nodeclass-default.v1beta1.yaml")).unwrap();
        // A valid document beside the bad one: nothing may be printed for it either.
        let input = format!("{other}\n---\n{manifest}");
        for command in ["convert", "validate"] {
            let out = berth(&[command, "-f", "-"], Some(&input));
            assert_eq!(out.status.code(), Some(1), "{command} {path}");
            assert!(
                text(&out.stderr).contains(path),
                "{command}: expected {path} in {}",
                text(&out.stderr)
            );
            assert_eq!(text(&out.stdout), "", "{command} {path}");
        }
    }
}

#[test]
fn unreadable_input_is_an_error() {
    let out = berth(&["convert", "-f", "/nonexistent/file.yaml"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("/nonexistent/file.yaml"));
    let out = berth(&["convert", "-f", "-"], Some("kind: [unclosed"));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("not valid YAML"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn crds_prints_the_checked_in_crds() {
    let out = berth(&["crds"], None);
    assert!(out.status.success());
    let printed = text(&out.stdout);
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/crds");
    for file in [
        "karpenter.sh_nodepools.yaml",
        "karpenter.sh_nodeclaims.yaml",
        "karpenter.k8s.aws_ec2nodeclasses.yaml",
    ] {
        let checked_in = std::fs::read_to_string(format!("{dir}/{file}")).unwrap();
        assert!(
            printed.contains(&checked_in),
            "{file} is not what `berth crds` prints"
        );
    }
}

#[test]
fn help_lists_every_command() {
    let out = berth(&["--help"], None);
    let help = text(&out.stdout);
    let commands: Vec<&str> = help
        .lines()
        .filter_map(|l| l.strip_prefix("  ")?.split_whitespace().next())
        .collect();
    for command in [
        "convert", "validate", "crds", "plan", "demo", "simulate", "sandbox",
    ] {
        assert!(commands.contains(&command), "{command} missing:\n{help}");
    }
}

const EXAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../examples/gitlab/build-pods.yaml"
);

fn seed_and_example() -> Vec<String> {
    let mut args: Vec<String> = ["plan", "-f"].iter().map(|s| (*s).to_owned()).collect();
    for name in [
        "ec2nodeclass-default.v1beta1.yaml",
        "nodepool-default.v1beta1.yaml",
        "nodepool-gitlab.v1beta1.yaml",
    ] {
        args.push(seed(name));
    }
    args.push(EXAMPLE.to_owned());
    args
}

#[test]
fn plan_puts_build_pods_on_the_gitlab_pool() {
    let args = seed_and_example();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = berth(&[&args[..], &["-o", "json"]].concat(), None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["totals"]["pods"], 18);
    assert_eq!(plan["totals"]["scheduled"], 18);
    let claims = plan["newNodeClaims"].as_array().unwrap();
    let gitlab: Vec<&serde_json::Value> = claims
        .iter()
        .filter(|c| c["nodePool"] == "gitlab-auto-nodepool")
        .collect();
    // 12 one-cpu build pods on 7-cpu t3.2xlarge nodes: two nodes.
    assert_eq!(gitlab.len(), 2);
    for c in &gitlab {
        assert_eq!(c["instanceType"], "t3.2xlarge");
        assert_eq!(c["capacityType"], "on-demand");
        assert!(
            c["pods"]
                .as_array()
                .unwrap()
                .iter()
                .all(|p| p.as_str().unwrap().starts_with("gitlab/pipeline-1234-"))
        );
    }
    // The web pods spread over zones on the default pool's t3 types.
    let web: Vec<&serde_json::Value> = claims
        .iter()
        .filter(|c| c["nodePool"] == "default-nodepool")
        .collect();
    let zones: std::collections::BTreeSet<&str> =
        web.iter().map(|c| c["zone"].as_str().unwrap()).collect();
    assert!(zones.len() >= 3, "{zones:?}");

    let table = berth(&args, None);
    assert!(
        text(&table.stdout).contains("18 of 18 pods scheduled"),
        "{}",
        text(&table.stdout)
    );
    let yaml = berth(&[&args[..], &["-o", "yaml"]].concat(), None);
    assert!(text(&yaml.stdout).contains("newNodeClaims:"));
}

#[test]
fn plan_reads_another_catalog() {
    let catalog = r#"[{"name":"t3.2xlarge","vcpu":8,"memory_mib":32768,"architectures":["x86_64"],"max_enis":4,"ipv4_per_eni":15,"usage_classes":["on-demand"],"zones":["us-east-1a"],"on_demand_usd_per_hour":0.1}]"#;
    let path = std::env::temp_dir().join(format!("berth-catalog-{}.json", std::process::id()));
    std::fs::write(&path, catalog).unwrap();
    let mut args = seed_and_example();
    args.extend([
        "--catalog".to_owned(),
        path.display().to_string(),
        "-o".to_owned(),
        "json".to_owned(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = berth(&args, None);
    std::fs::remove_file(&path).ok();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let gitlab = plan["newNodeClaims"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["nodePool"] == "gitlab-auto-nodepool")
        .unwrap()
        .clone();
    assert_eq!(gitlab["pricePerHour"], 0.1);
    // The default pool allows only t3 medium..xlarge, which this catalog lacks.
    assert!(
        plan["unschedulable"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["pod"] == "default/web-0")
    );
}

#[test]
fn plan_names_file_document_and_field_of_bad_input() {
    let bad = "apiVersion: v1\nkind: Pod\nmetadata: {name: ok}\nspec: {containers: [{name: a}]}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: bad}\nspec: {containers: [{name: a, resources: {requests: {cpu: lots}}}]}\n";
    let out = berth(
        &[
            "plan",
            "-f",
            &seed("nodepool-default.v1beta1.yaml"),
            &seed("ec2nodeclass-default.v1beta1.yaml"),
            "-",
        ],
        Some(bad),
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("<stdin>: document 2: Pod/bad: spec.containers[0].resources.requests.cpu"),
        "{err}"
    );
    assert_eq!(text(&out.stdout), "");

    let pool = std::fs::read_to_string(seed("nodepool-gitlab.v1beta1.yaml"))
        .unwrap()
        .replace("operator: Gt", "operator: Bigger");
    let out = berth(&["plan", "-f", "-"], Some(&pool));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("spec.template.spec.requirements[5].operator"),
        "{}",
        text(&out.stderr)
    );
}
