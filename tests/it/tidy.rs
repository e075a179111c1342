//! Checks of the tree itself: module docs, no skipped tests, only the allowed internal
//! dependency edges (ARCHITECTURE.md, "Cross-Cutting").

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::support::workspace_root;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n != "target") {
                rust_files(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn all_rust_files() -> Vec<PathBuf> {
    let root = workspace_root();
    let mut files = Vec::new();
    for dir in ["crates", "xtask", "tests"] {
        rust_files(&root.join(dir), &mut files);
    }
    files
}

#[test]
fn every_module_starts_with_a_doc_line() {
    let missing: Vec<PathBuf> = all_rust_files()
        .into_iter()
        .filter(|f| !std::fs::read_to_string(f).unwrap().starts_with("//!"))
        .collect();
    assert!(
        missing.is_empty(),
        "files without a `//!` line: {missing:?}"
    );
}

#[test]
fn no_test_is_skipped_or_expects_a_panic() {
    let banned = [concat!("#[", "ignore"), concat!("#[", "should_panic")];
    let offenders: Vec<String> = all_rust_files()
        .into_iter()
        .filter_map(|f| {
            let text = std::fs::read_to_string(&f).unwrap();
            banned
                .iter()
                .find(|b| text.contains(*b))
                .map(|b| format!("{}: {b}", f.display()))
        })
        .collect();
    assert!(offenders.is_empty(), "{offenders:?}");
}

#[test]
fn internal_dependencies_follow_the_allowed_edges() {
    let internal = [
        "http-core",
        "paginate",
        "source-errors",
        "transform",
        "sink-parquet",
        "pipeline",
        "mock-api",
    ];
    let allowed: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::from([
        ("http-core", BTreeSet::new()),
        ("paginate", BTreeSet::from(["http-core"])),
        ("source-errors", BTreeSet::from(["http-core", "paginate"])),
        ("transform", BTreeSet::new()),
        ("sink-parquet", BTreeSet::from(["transform"])),
        ("mock-api", BTreeSet::new()),
        (
            "pipeline",
            BTreeSet::from([
                "http-core",
                "paginate",
                "source-errors",
                "transform",
                "sink-parquet",
            ]),
        ),
    ]);
    for (krate, ok) in &allowed {
        let manifest = std::fs::read_to_string(
            workspace_root()
                .join("crates")
                .join(krate)
                .join("Cargo.toml"),
        )
        .unwrap();
        let deps = manifest
            .split("[dependencies]")
            .nth(1)
            .unwrap_or("")
            .split("\n[")
            .next()
            .unwrap_or("");
        for line in deps.lines() {
            let name = line.split(['.', '=', ' ']).next().unwrap_or("").trim();
            if internal.contains(&name) {
                assert!(
                    ok.contains(name),
                    "`{krate}` depends on `{name}`: not an allowed edge (see ARCHITECTURE.md)"
                );
            }
        }
    }
}

#[test]
fn pipeline_files_hold_no_literal_credentials() {
    for entry in std::fs::read_dir(workspace_root().join("pipelines")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
            for key in ["api_key", "token", "password"] {
                let assigns = line.contains(&format!("\"{key}\":"))
                    || line.trim_start().starts_with(&format!("{key} ="));
                if assigns {
                    assert!(
                        line.contains("secrets"),
                        "{}: `{}` is not a secret reference",
                        path.display(),
                        line.trim()
                    );
                }
            }
        }
    }
}
