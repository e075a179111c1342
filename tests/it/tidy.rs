//! Checks of the tree itself: module docs, no skipped tests, only the allowed internal
//! dependency edges (ARCHITECTURE.md, "Cross-Cutting").

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::support::{stdout_of, workspace_root};

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
        "json-tape",
        "table-model",
    ];
    let allowed: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::from([
        ("http-core", BTreeSet::new()),
        ("json-tape", BTreeSet::new()),
        ("table-model", BTreeSet::new()),
        ("paginate", BTreeSet::from(["http-core", "json-tape"])),
        (
            "source-errors",
            BTreeSet::from(["http-core", "paginate", "json-tape", "table-model"]),
        ),
        ("transform", BTreeSet::from(["json-tape", "table-model"])),
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

/// `paginate`'s state machines are usable without an HTTP client or an async runtime: what
/// brings those in is optional, behind the `fetch` feature (`.ci/run` builds and tests the
/// crate without it).
#[test]
fn paginate_needs_no_runtime_without_its_fetch_feature() {
    let manifest =
        std::fs::read_to_string(workspace_root().join("crates/paginate/Cargo.toml")).unwrap();
    let deps = manifest
        .split("[dependencies]")
        .nth(1)
        .unwrap_or("")
        .split("\n[")
        .next()
        .unwrap_or("");
    let mut seen = 0;
    for line in deps.lines() {
        let name = line.split(['.', '=', ' ']).next().unwrap_or("").trim();
        if ["http-core", "tokio", "reqwest"].contains(&name) {
            seen += 1;
            assert!(
                line.contains("optional = true"),
                "paginate: `{name}` must be optional (feature `fetch`): {line}"
            );
        }
    }
    assert!(
        seen > 0,
        "paginate's manifest names no http-core: is the check stale?"
    );
    assert!(
        manifest.contains("fetch = [\"dep:http-core\"]"),
        "paginate: the `fetch` feature no longer brings http-core"
    );
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

/// The modules of `sink-parquet` a module names through `crate::` (the crate root's own
/// items left out).
fn sink_module_imports() -> BTreeMap<String, BTreeSet<String>> {
    let src = workspace_root().join("crates/sink-parquet/src");
    let mut modules = BTreeMap::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if path.extension().is_some_and(|e| e == "rs") && name != "lib" && name != "tests" {
            modules.insert(name, std::fs::read_to_string(&path).unwrap());
        }
    }
    let mut imports = BTreeMap::new();
    for (module, text) in &modules {
        let mut named = BTreeSet::new();
        for (at, _) in text.match_indices("crate::") {
            let rest = &text[at + "crate::".len()..];
            let heads: Vec<&str> = match rest.strip_prefix('{') {
                Some(group) => group.split('}').next().unwrap_or("").split(',').collect(),
                None => vec![rest],
            };
            for head in heads {
                let head: String = head
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if modules.contains_key(&head) && head != *module {
                    named.insert(head);
                }
            }
        }
        imports.insert(module.clone(), named);
    }
    imports
}

#[test]
fn sink_modules_import_no_circle() {
    let imports = sink_module_imports();
    assert!(
        imports.len() >= 10 && imports["commit"].contains("table_commit"),
        "the module scan found too little: {imports:?}"
    );
    // Depth-first search from each module; a module met again on the current path closes
    // a circle.
    fn visit<'a>(
        module: &'a str,
        imports: &'a BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) {
        if let Some(at) = path.iter().position(|m| *m == module) {
            panic!(
                "sink-parquet modules import each other in a circle: {} -> {module}",
                path[at..].join(" -> ")
            );
        }
        if !done.insert(module) {
            return;
        }
        path.push(module);
        for next in &imports[module] {
            visit(next, imports, path, done);
        }
        path.pop();
    }
    let mut done = BTreeSet::new();
    for module in imports.keys() {
        visit(module, &imports, &mut Vec::new(), &mut done);
    }
}

/// Each package's features in the dependency tree `args` selects (`cargo tree`), keyed by
/// name and version; a package built for the host and for the target can have two sets.
fn features_by_package(args: &[&str]) -> BTreeMap<String, BTreeSet<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let stdout = stdout_of(
        std::process::Command::new(cargo)
            .current_dir(workspace_root())
            .args(["tree", "--offline", "--locked", "--prefix", "none"])
            .args(["--format", "{p} [{f}]"])
            .args(args),
        &format!("cargo tree {args:?}"),
    );
    let mut packages: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in String::from_utf8_lossy(&stdout).lines() {
        // A package seen before ends in ` (*)`.
        let line = line.trim_end_matches(" (*)");
        let mut words = line.split_whitespace();
        let (Some(name), Some(version)) = (words.next(), words.next()) else {
            continue;
        };
        let features = line
            .rsplit_once('[')
            .map_or("", |(_, f)| f.trim_end_matches(']'));
        packages
            .entry(format!("{name} {version}"))
            .or_default()
            .insert(features.to_owned());
    }
    packages
}

/// `cargo xtask test` first builds the runner, then the whole suite: a dependency the two
/// builds ask for with different features is compiled twice, and with it everything above
/// it (a dev-dependency turning on hyper's `full` rebuilt the arrow and deltalake crates).
/// The runner's manifest asks for such features too (see `xtask/Cargo.toml`).
#[test]
fn the_runner_and_the_tests_share_one_build_of_each_dependency() {
    let runner = features_by_package(&["--package", "xtask", "--edges", "normal,build"]);
    let suite = features_by_package(&["--workspace", "--edges", "normal,build,dev"]);
    assert!(
        runner.len() > 100,
        "cargo tree listed only {} packages for the runner",
        runner.len()
    );
    let differing: Vec<String> = runner
        .iter()
        .filter_map(|(package, features)| {
            let in_suite = suite.get(package)?;
            (in_suite != features)
                .then(|| format!("{package}: runner {features:?}, tests {in_suite:?}"))
        })
        .collect();
    assert!(
        differing.is_empty(),
        "the test build turns on features the runner's does not, so `cargo xtask test` \
         compiles these (and what depends on them) twice; ask for them in xtask/Cargo.toml:\n{}",
        differing.join("\n")
    );
}
