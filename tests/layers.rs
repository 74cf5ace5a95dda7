//! The layers of the crate import only downwards: the pure core, then `crd`, then the AWS
//! adapters and the pure `plan`, then the pipeline `observe` -> `apply` -> `report`, then the
//! `controller` loop and the wiring. This test reads every source file (test code excepted: a
//! `tests.rs`, a `*_tests.rs` or what follows `#[cfg(test)]`) and fails on an import of a layer
//! the README's layout section does not allow.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::Path;

/// Each layer and the layers it may import (besides itself).
const RULES: &[(&str, &[&str])] = &[
    ("codegen", &["instance"]),
    ("instance", &["codegen"]),
    ("engine", &["instance"]),
    ("userdata", &[]),
    ("rollout", &[]),
    ("subnet", &["engine"]),
    ("eks_addon", &["engine"]),
    ("karpenter", &["engine", "instance"]),
    ("crd", &["engine", "userdata", "instance", "eks_addon"]),
    ("metrics", &[]),
    ("fence", &[]),
    (
        "aws",
        &["crd", "eks_addon", "fence", "instance", "rollout", "subnet"],
    ),
    ("error", &["aws"]),
    (
        "plan",
        &[
            "crd",
            "eks_addon",
            "engine",
            "instance",
            "karpenter",
            "rollout",
            "subnet",
        ],
    ),
    (
        "observe",
        &[
            "aws",
            "crd",
            "eks_addon",
            "engine",
            "error",
            "instance",
            "karpenter",
            "metrics",
            "plan",
            "rollout",
            "subnet",
        ],
    ),
    (
        "apply",
        &[
            "aws",
            "crd",
            "eks_addon",
            "engine",
            "error",
            "instance",
            "karpenter",
            "metrics",
            "observe",
            "plan",
            "userdata",
            "rollout",
            "subnet",
        ],
    ),
    (
        "report",
        &[
            "apply",
            "crd",
            "eks_addon",
            "engine",
            "error",
            "metrics",
            "observe",
            "plan",
            "rollout",
            "subnet",
        ],
    ),
];

/// The production code of a file: everything before its first `#[cfg(test)]`.
fn production_code(path: &Path) -> String {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    if name == "tests.rs" || name.ends_with("_tests.rs") {
        return String::new();
    }
    let text = std::fs::read_to_string(path).expect("readable source");
    match text.find("#[cfg(test)]") {
        Some(at) => text[..at].to_owned(),
        None => text,
    }
}

/// The layers a piece of code names as `crate::<layer>` (comments excepted).
fn imported(code: &str) -> BTreeSet<String> {
    let mut layers = BTreeSet::new();
    for line in code.lines() {
        let line = line.trim_start();
        if line.starts_with("//") {
            continue;
        }
        for (at, _) in line.match_indices("crate::") {
            let rest = &line[at + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            if !name.is_empty() {
                layers.insert(name);
            }
        }
    }
    layers
}

fn files(path: &Path, out: &mut Vec<std::path::PathBuf>) {
    if path.is_dir() {
        for entry in std::fs::read_dir(path).expect("readable dir") {
            files(&entry.expect("entry").path(), out);
        }
    } else if path.is_file() && path.extension().is_some_and(|e| e == "rs") {
        out.push(path.to_owned());
    }
}

#[test]
fn every_layer_imports_only_the_layers_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut problems = Vec::new();
    for (layer, allowed) in RULES {
        let mut sources = Vec::new();
        files(&src.join(layer), &mut sources);
        files(&src.join(format!("{layer}.rs")), &mut sources);
        assert!(!sources.is_empty(), "no source for layer {layer}");
        for file in sources {
            for name in imported(&production_code(&file)) {
                if name != *layer && !allowed.contains(&name.as_str()) {
                    problems.push(format!(
                        "{}: imports crate::{name}, which layer {layer} may not",
                        file.strip_prefix(&src).unwrap_or(&file).display()
                    ));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn the_check_sees_an_upward_import() {
    let code = "use crate::plan::FleetPlan;\n// crate::controller in a comment\nfn f() {}\n";
    assert_eq!(
        imported(code),
        BTreeSet::from(["plan".to_owned()]),
        "a real import is seen, a comment is not"
    );
}
