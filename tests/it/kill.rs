//! Crash safety: a run killed with SIGKILL at many instants (fetching, writing files,
//! committing) leaves every table readable at a committed version with one row per id, and
//! the next run completes the work; checked by the Python `deltalake` reader.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mock_api::{DataSize, MockConfig, MockHandle};

use crate::support::{S3Server, pipeline_file, run_python};

const TOKEN: &str = "kill-token-41d2";

/// Where a kill test's lakes live: local folders, or prefixes of a bucket on the S3 test
/// server.
struct Lakes {
    /// A folder or `s3://bucket/prefix`; each lake is a sub-path.
    root: String,
    /// Storage options (empty for local folders).
    options: BTreeMap<String, String>,
}

impl Lakes {
    fn lake(&self, name: &str) -> String {
        format!("{}/{name}", self.root)
    }
}

/// Per table with a Delta log: (rows, distinct keys) as the Python reader sees them, and the
/// rows of all `*.parquet` files in its folder (listed through pyarrow's file systems, so
/// the same check runs on S3).
fn read_tables(lakes: &Lakes, lake: &str) -> BTreeMap<String, (i64, i64, i64)> {
    let script = r#"
import json, sys
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from deltalake import DeltaTable
url, options = sys.argv[1], json.loads(sys.argv[2])
if url.startswith("s3://"):
    fs = pafs.S3FileSystem(endpoint_override=options["aws_endpoint"], scheme="http",
        access_key=options["aws_access_key_id"], secret_key=options["aws_secret_access_key"],
        region=options["aws_region"])
    root = url[len("s3://"):]
else:
    fs, root = pafs.LocalFileSystem(), url
def ls(path):
    return fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
out = {}
for folder in sorted(ls(root), key=lambda i: i.path):
    if folder.type != pafs.FileType.Directory:
        continue
    name = folder.base_name
    if name.startswith("_errlake"):
        continue  # errlake's own tables: the pipeline state and content hashes
    # A table exists once its first commit file does (a kill while creating it may leave
    # an empty log folder, or a temporary file in it).
    log = [i.base_name for i in ls(folder.path + "/_delta_log")]
    if not any(n[0].isdigit() and n.endswith(".json") for n in log):
        continue
    t = DeltaTable(f"{url}/{name}", storage_options=options or None).to_pyarrow_table()
    key = "id" if "id" in t.column_names and "_dlt_parent_id" not in t.column_names else "_dlt_id"
    ids = t.column(key).to_pylist()
    glob_rows = sum(pq.ParquetFile(fs.open_input_file(i.path)).metadata.num_rows
                    for i in ls(folder.path) if i.base_name.endswith(".parquet"))
    out[name] = [t.num_rows, len(set(ids)), glob_rows]
print(json.dumps(out), flush=True)
import os; os._exit(0)
"#;
    let options = serde_json::to_string(&lakes.options).unwrap();
    let parsed: BTreeMap<String, [i64; 3]> = run_python(script, &[lake, &options]);
    parsed
        .into_iter()
        .map(|(k, [a, b, c])| (k, (a, b, c)))
        .collect()
}

fn child(base_url: &str, lakes: &Lakes, lake: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_run-pipeline"));
    c.arg(pipeline_file("errors.toml"))
        .arg(base_url)
        .arg(lake)
        .env("AUTH_TOKEN", TOKEN)
        .env(
            "RUN_PIPELINE_STORAGE_OPTIONS",
            serde_json::to_string(&lakes.options).unwrap(),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

#[test]
fn runs_killed_at_many_instants_leave_consistent_tables_and_the_next_run_completes() {
    let dir = tempfile::tempdir().unwrap();
    kill_test(&Lakes {
        root: dir.path().display().to_string(),
        options: BTreeMap::new(),
    });
}

#[test]
fn on_s3_runs_killed_at_many_instants_leave_consistent_tables_and_the_next_run_completes() {
    let s3 = S3Server::start("errlake-kill");
    kill_test(&Lakes {
        root: "s3://errlake-kill/lakes".to_owned(),
        options: s3.options(),
    });
}

fn kill_test(lakes: &Lakes) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mock = rt
        .block_on(MockHandle::start(MockConfig {
            seed: 11,
            size: DataSize {
                organizations: 2,
                projects_per_org: 3,
                saved_searches_per_project: 2,
                errors_per_project: 30,
                events_per_project: 2000,
            },
            authorization: TOKEN.to_owned(),
        }))
        .unwrap();
    let base_url = mock.base_url();

    // An uninterrupted run: the reference, and how long a run takes here.
    let reference = lakes.lake("reference");
    let started = Instant::now();
    assert!(
        child(&base_url, lakes, &reference)
            .status()
            .unwrap()
            .success()
    );
    let full = started.elapsed();
    let expected = read_tables(lakes, &reference);
    assert!(expected.len() >= 8, "{expected:?}");

    // Kill instants across the run, denser near its end where the commits happen, each
    // moved by a random few percent (the seed is in every failure message).
    let seed = fastrand::u64(..);
    let mut rng = fastrand::Rng::with_seed(seed);
    let fractions: Vec<f64> = (0..14)
        .map(|i| (i as f64 + 0.5) / 14.0)
        .chain([0.8, 0.84, 0.88, 0.91, 0.94, 0.96, 0.98, 0.99])
        .map(|f| f + (rng.f64() - 0.5) * 0.04)
        .collect();
    let mut log: Vec<String> = Vec::new();
    // Runs on a lake that has the tables are merges and take their own time: a run that
    // ends before its kill shortens the time scale, and the schedule goes round until 22
    // runs were killed.
    let mut scale = full;
    let lake = lakes.lake("lake");
    let mut killed = 0;
    for f in fractions.iter().cycle().take(3 * fractions.len()) {
        if killed >= fractions.len() {
            break;
        }
        let mut run = child(&base_url, lakes, &lake).spawn().unwrap();
        std::thread::sleep(scale.mul_f64(*f));
        let finished = run.try_wait().unwrap().is_some();
        if finished {
            scale = scale.mul_f64(0.85);
        } else {
            run.kill().unwrap(); // SIGKILL
            killed += 1;
        }
        run.wait().unwrap();
        let tables = read_tables(lakes, &lake);
        log.push(format!(
            "{} at {f:.3} of {scale:?}: {} tables, {} events",
            if finished { "ended" } else { "killed" },
            tables.len(),
            tables.get("events").map_or(0, |t| t.0)
        ));
        for (table, (rows, distinct, _)) in tables {
            assert_eq!(
                rows,
                distinct,
                "`{table}` has duplicate ids (seed {seed}):\n{}",
                log.join("\n")
            );
            assert!(
                rows <= expected[&table].0,
                "`{table}` has more rows than a whole run (seed {seed}):\n{}",
                log.join("\n")
            );
        }
    }
    assert!(
        killed >= 22,
        "only {killed} runs were killed before they ended:\n{}",
        log.join("\n")
    );

    // The next run completes the work: the same tables as the uninterrupted run.
    assert!(child(&base_url, lakes, &lake).status().unwrap().success());
    let got = read_tables(lakes, &lake);
    let rows = |m: &BTreeMap<String, (i64, i64, i64)>| -> BTreeMap<String, (i64, i64)> {
        m.iter()
            .map(|(k, (r, d, _))| (k.clone(), (*r, *d)))
            .collect()
    };
    assert_eq!(
        rows(&got),
        rows(&expected),
        "seed {seed}:\n{}",
        log.join("\n")
    );

    // Files of the killed loads are not referenced; vacuum removes them, and then a plain
    // glob of each folder sees exactly the table's rows.
    let lake_handle = sink_parquet::Lake::open_with_options(&lake, &lakes.options).unwrap();
    rt.block_on(async {
        for folder in lake_handle.folders().await.unwrap() {
            lake_handle
                .remove_orphans(&folder, Duration::ZERO, false)
                .await
                .unwrap();
        }
    });
    for (table, (rows, _, glob_rows)) in read_tables(lakes, &lake) {
        assert_eq!(
            rows, glob_rows,
            "`{table}`: the glob sees other rows than the table"
        );
    }
}
