//! Helpers shared by the end-to-end tests.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use pipeline::{Overrides, Pipeline, RunOptions, RunReport};
use source_errors::Secrets;

pub(crate) fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub(crate) fn pipeline_file(name: &str) -> PathBuf {
    workspace_root().join("pipelines").join(name)
}

/// Loads a pipeline file against `base_url` into `destination`, with the token given.
pub(crate) fn load(file: &Path, base_url: &str, destination: &Path, token: &str) -> Pipeline {
    let secrets = Secrets::from_map([("auth_token".to_owned(), token.to_owned())]);
    let overrides = Overrides {
        base_url: Some(base_url.to_owned()),
        destination: Some(destination.display().to_string()),
    };
    Pipeline::load(file, &secrets, &overrides).unwrap()
}

pub(crate) async fn run(p: &Pipeline) -> Result<RunReport, pipeline::PipelineError> {
    pipeline::run(p, &RunOptions::default()).await
}

/// The Python interpreter with the `deltalake` package (set up by `cargo xtask test`).
fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("ERRLAKE_TEST_PYTHON") {
        return PathBuf::from(p);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let venv = target.join("errlake-py/bin/python");
    assert!(
        venv.exists(),
        "the independent Delta reader is missing: run the suite with `cargo xtask test`, which installs it"
    );
    venv
}

/// Per table: (Delta version, rows, distinct values of the key column) as read by the
/// `deltalake` Python package, plus the rows a plain `*.parquet` glob sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReadBack {
    pub(crate) version: i64,
    pub(crate) rows: i64,
    pub(crate) distinct_keys: i64,
    pub(crate) glob_rows: i64,
}

pub(crate) fn read_with_python(lake: &Path, tables: &[&str]) -> BTreeMap<String, ReadBack> {
    let script = r#"
import json, sys, glob
import pyarrow.compute as pc
import pyarrow.parquet as pq
from deltalake import DeltaTable
lake, tables = sys.argv[1], sys.argv[2].split(",")
out = {}
for t in tables:
    dt = DeltaTable(f"{lake}/{t}")
    tab = dt.to_pyarrow_table()
    key = "id" if "__" not in t else "_dlt_id"
    glob_rows = sum(pq.ParquetFile(f).metadata.num_rows for f in glob.glob(f"{lake}/{t}/*.parquet"))
    out[t] = [dt.version(), tab.num_rows, len(pc.unique(tab.column(key))), glob_rows]
print(json.dumps(out), flush=True)
# Leave at once: the reader's threads can abort interpreter shutdown.
import os; os._exit(0)
"#;
    let output = Command::new(python())
        .arg("-c")
        .arg(script)
        .arg(lake)
        .arg(tables.join(","))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "python reader failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let parsed: BTreeMap<String, [i64; 4]> = serde_json::from_slice(&output.stdout).unwrap();
    parsed
        .into_iter()
        .map(|(k, [version, rows, distinct_keys, glob_rows])| {
            (
                k,
                ReadBack {
                    version,
                    rows,
                    distinct_keys,
                    glob_rows,
                },
            )
        })
        .collect()
}

/// One column of a table as strings, keyed by `id`, read through the Python reader.
pub(crate) fn column_by_id(lake: &Path, table: &str, column: &str) -> BTreeMap<String, String> {
    let script = r#"
import json, sys
from deltalake import DeltaTable
tab = DeltaTable(f"{sys.argv[1]}/{sys.argv[2]}").to_pyarrow_table()
ids, vals = tab.column("id").to_pylist(), tab.column(sys.argv[3]).to_pylist()
print(json.dumps({i: str(v) for i, v in zip(ids, vals)}), flush=True)
import os; os._exit(0)
"#;
    let output = Command::new(python())
        .arg("-c")
        .arg(script)
        .arg(lake)
        .arg(table)
        .arg(column)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "python reader failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}
