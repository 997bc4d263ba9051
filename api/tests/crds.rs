//! The CRDs checked in under `deploy/crds/` are exactly what the types generate.
//! Regenerate with `BERTH_UPDATE_CRDS=1 cargo test -p berth-api --test crds`.

use std::path::PathBuf;

fn crd_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/crds")
}

#[test]
fn checked_in_crds_match_the_types() {
    let update = std::env::var_os("BERTH_UPDATE_CRDS").is_some();
    let mut stale = Vec::new();
    for (file, crd) in berth_api::crds::all() {
        let path = crd_dir().join(file);
        let generated = berth_api::crds::to_yaml(&crd);
        if update {
            std::fs::write(&path, &generated).unwrap();
            continue;
        }
        let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
        if checked_in != generated {
            stale.push(path.display().to_string());
        }
    }
    assert!(
        stale.is_empty(),
        "CRDs differ from the types: {stale:?}; run `BERTH_UPDATE_CRDS=1 cargo test -p berth-api --test crds` and commit"
    );
}

#[test]
fn crds_carry_karpenters_rules() {
    let json: String = berth_api::crds::all()
        .iter()
        .map(|(_, crd)| serde_json::to_string(crd).unwrap())
        .collect();
    for expected in [
        r#"label domain \"kubernetes.io\" is restricted"#,
        "requirements with operator 'In' must have a value defined",
        "must have a single positive integer value",
        "'schedule' must be set with 'duration'",
        "must specify exactly one of ['role', 'instanceProfile']",
        "^((100|[0-9]{1,2})%|[0-9]+)$",
        "WhenEmptyOrUnderutilized",
        "Gte",
    ] {
        assert!(json.contains(expected), "CRDs lack {expected:?}");
    }
    let crds = berth_api::crds::all();
    for (_, crd) in &crds {
        assert_eq!(crd.spec.scope, "Cluster");
        assert_eq!(crd.spec.versions.len(), 1);
        assert_eq!(crd.spec.versions[0].name, "v1");
        assert!(
            crd.spec.versions[0]
                .subresources
                .as_ref()
                .unwrap()
                .status
                .is_some()
        );
    }
}
