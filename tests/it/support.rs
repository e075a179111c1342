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

/// A file of `tests/data/<dir>/` as text.
pub(crate) fn test_data(dir: &str, name: &str) -> String {
    std::fs::read_to_string(workspace_root().join("tests/data").join(dir).join(name)).unwrap()
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
        ..Overrides::default()
    };
    Pipeline::load(file, &secrets, &overrides).unwrap()
}

pub(crate) async fn run(p: &Pipeline) -> Result<RunReport, pipeline::PipelineError> {
    pipeline::run(p, &RunOptions::default()).await
}

/// The Python interpreter with the `deltalake` package (set up by `cargo xtask test`).
pub(crate) fn python() -> PathBuf {
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
    let parsed: BTreeMap<String, [i64; 4]> =
        run_python(script, &[&lake.display().to_string(), &tables.join(",")]);
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
    run_python(script, &[&lake.display().to_string(), table, column])
}

/// What `command` prints; it must succeed, or the test fails with its `what` and stderr.
pub(crate) fn stdout_of(command: &mut Command, what: &str) -> Vec<u8> {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// Runs a Python script with the Delta reader and parses what it prints as JSON.
pub(crate) fn run_python<T: serde::de::DeserializeOwned>(script: &str, args: &[&str]) -> T {
    let stdout = stdout_of(
        Command::new(python()).arg("-c").arg(script).args(args),
        "python reader",
    );
    serde_json::from_slice(&stdout).unwrap_or_else(|e| {
        panic!(
            "python printed {:?}: {e}",
            String::from_utf8_lossy(&stdout)
                .chars()
                .take(300)
                .collect::<String>()
        )
    })
}

/// A moto S3 server on a free loopback port, with one bucket; stopped on drop.
pub(crate) struct S3Server {
    child: std::process::Child,
    pub(crate) endpoint: String,
}

impl S3Server {
    pub(crate) fn start(bucket: &str) -> S3Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let moto = python().parent().unwrap().join("moto_server");
        assert!(
            moto.exists(),
            "moto_server is missing: run the suite with `cargo xtask test`, which installs it"
        );
        let child = Command::new(moto)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let server = S3Server {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        // Wait for it to listen, then create the bucket (moto takes unsigned requests).
        let started = std::time::Instant::now();
        loop {
            if let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                use std::io::{Read, Write};
                let request = format!(
                    "PUT /{bucket} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                stream.write_all(request.as_bytes()).unwrap();
                let mut answer = String::new();
                let _ = stream.read_to_string(&mut answer);
                assert!(
                    answer.starts_with("HTTP/1.1 200"),
                    "creating the bucket: {answer}"
                );
                return server;
            }
            assert!(
                started.elapsed().as_secs() < 60,
                "moto_server did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// Storage options for errlake and for the Python reader.
    pub(crate) fn options(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("aws_endpoint".to_owned(), self.endpoint.clone()),
            ("aws_region".to_owned(), "us-east-1".to_owned()),
            ("aws_access_key_id".to_owned(), "testing".to_owned()),
            ("aws_secret_access_key".to_owned(), "testing".to_owned()),
            ("aws_allow_http".to_owned(), "true".to_owned()),
        ])
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Per table: (Delta version, rows, distinct keys) of tables under an `s3://` URL, read by the
/// `deltalake` Python package.
pub(crate) fn read_s3_with_python(
    url: &str,
    tables: &[&str],
    options: &BTreeMap<String, String>,
) -> BTreeMap<String, [i64; 3]> {
    let script = r#"
import json, sys
import pyarrow.compute as pc
from deltalake import DeltaTable
url, tables, options = sys.argv[1], sys.argv[2].split(","), json.loads(sys.argv[3])
out = {}
for t in tables:
    dt = DeltaTable(f"{url}/{t}", storage_options=options)
    tab = dt.to_pyarrow_table()
    key = "id" if "__" not in t else "_dlt_id"
    out[t] = [dt.version(), tab.num_rows, len(pc.unique(tab.column(key)))]
print(json.dumps(out), flush=True)
import os; os._exit(0)
"#;
    let options = serde_json::to_string(options).unwrap();
    run_python(script, &[url, &tables.join(","), &options])
}

/// Per table: (rows, distinct keys) as DuckDB's `delta_scan` reads them (the delta extension
/// comes from the `duckdb-ext-delta` package that `cargo xtask test` installs).
pub(crate) fn read_with_duckdb(lake: &Path, tables: &[&str]) -> BTreeMap<String, [i64; 2]> {
    let script = r#"
import json, os, sys, sysconfig
import duckdb
con = duckdb.connect()
# Its progress bar (shown when a query runs past 2 s) would print before the JSON.
con.execute("SET enable_progress_bar = false")
con.execute("SET extension_directory='" + os.path.join(sysconfig.get_paths()["purelib"], "duckdb_ext", "extensions") + "'")
con.execute("LOAD delta")
out = {}
for t in sys.argv[2].split(","):
    key = "id" if "__" not in t else "_dlt_id"
    out[t] = list(con.execute(f"SELECT count(*), count(DISTINCT {key}) FROM delta_scan('{sys.argv[1]}/{t}')").fetchone())
print(json.dumps(out), flush=True)
os._exit(0)
"#;
    run_python(script, &[&lake.display().to_string(), &tables.join(",")])
}
