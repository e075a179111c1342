//! Shards: four processes of one pipeline (`ERRLAKE_SHARD=I/4`) at once against one mock,
//! into one prefix of a bucket on the moto S3 server; afterwards every table equals a
//! single-process run's (read by the `deltalake` Python package), every leaf partition was
//! fetched by exactly one shard (the mock's request log); the same after the shards merge
//! changed data at once, and when one shard is killed with SIGKILL mid-run and run again.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use mock_api::{DataSize, MockConfig, MockHandle};

use crate::support::{S3Server, pipeline_file, run_python};

const TOKEN: &str = "shard-token-7c1e";
const SHARDS: u32 = 4;

/// The seed pipeline with a checkpoint every 10 pages, so that shards commit along the way
/// and meet each other's commits more than once.
fn pipeline_with_checkpoints(dir: &Path) -> PathBuf {
    let file = dir.join("errors.toml");
    let seed = std::fs::read_to_string(pipeline_file("errors.toml")).unwrap();
    std::fs::write(&file, format!("{seed}\n[checkpoint]\npages = 10\n")).unwrap();
    file
}

/// One run of `file` as a process of its own; `shard` as `I/N`, or none.
fn spawn(file: &Path, base_url: &str, s3: &S3Server, lake: &str, shard: Option<&str>) -> Child {
    let mut c = Command::new(env!("CARGO_BIN_EXE_run-pipeline"));
    c.arg(file)
        .arg(base_url)
        .arg(lake)
        .env("AUTH_TOKEN", TOKEN)
        // The checkpoint lines, which the kill test waits for.
        .env("ERRLAKE_LOG", "pipeline=info")
        .env(
            "RUN_PIPELINE_STORAGE_OPTIONS",
            serde_json::to_string(&s3.options()).unwrap(),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(shard) = shard {
        c.env("ERRLAKE_SHARD", shard);
    }
    c.spawn().unwrap()
}

/// Waits for a run; panics with its output when it failed. Returns its commit retries.
fn finish(child: Child, what: &str) -> u64 {
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{what} failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("commit_retries="))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{what} printed no commit_retries: {stdout}"))
}

/// Per data table: its columns with their Arrow types, its rows, its distinct row keys, and
/// a digest of its rows sorted by key (every column but `_dlt_load_id`, which differs from
/// load to load), as the Python `deltalake` reader sees them.
fn tables(url: &str, s3: &S3Server) -> BTreeMap<String, serde_json::Value> {
    let script = r#"
import hashlib, json, sys
import pyarrow.fs as pafs
from deltalake import DeltaTable
url, options = sys.argv[1], json.loads(sys.argv[2])
fs = pafs.S3FileSystem(endpoint_override=options["aws_endpoint"], scheme="http",
    access_key=options["aws_access_key_id"], secret_key=options["aws_secret_access_key"],
    region=options["aws_region"])
root = url[len("s3://"):]
out = {}
for folder in fs.get_file_info(pafs.FileSelector(root)):
    name = folder.base_name
    if folder.type != pafs.FileType.Directory or name.startswith("_errlake"):
        continue
    t = DeltaTable(f"{url}/{name}", storage_options=options).to_pyarrow_table()
    key = "_dlt_id"
    columns = sorted(c for c in t.column_names if c != "_dlt_load_id")
    rows = t.select(columns).to_pylist()
    rows.sort(key=lambda r: r[key])
    digest = hashlib.sha256(json.dumps(rows, default=str, sort_keys=True).encode()).hexdigest()
    out[name] = {
        "schema": sorted(f"{f.name}: {f.type}" for f in t.schema),
        "rows": t.num_rows,
        "distinct": len(set(r[key] for r in rows)),
        "digest": digest,
    }
print(json.dumps(out), flush=True)
import os; os._exit(0)
"#;
    let options = serde_json::to_string(&s3.options()).unwrap();
    run_python(script, &[url, &options])
}

/// The requests for the leaf resources' pages (errors, events, saved searches), each with
/// how many times it was made.
fn leaf_requests(log: &[String]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for path in log.iter().filter(|p| p.starts_with("/projects/")) {
        *counts.entry(path.clone()).or_default() += 1;
    }
    counts
}

fn mock_config() -> MockConfig {
    MockConfig {
        seed: 23,
        size: DataSize {
            organizations: 1,
            projects_per_org: 16,
            saved_searches_per_project: 2,
            errors_per_project: 20,
            events_per_project: 240,
        },
        authorization: TOKEN.to_owned(),
    }
}

/// Checks that the sharded lake holds what the single run's does, table by table.
fn assert_same_tables(
    single: &BTreeMap<String, serde_json::Value>,
    sharded: &BTreeMap<String, serde_json::Value>,
) {
    assert_eq!(
        single.keys().collect::<Vec<_>>(),
        sharded.keys().collect::<Vec<_>>(),
        "the same tables"
    );
    for (table, expected) in single {
        assert_eq!(
            expected["rows"], expected["distinct"],
            "{table}: one row per id in the single run"
        );
        assert_eq!(
            &sharded[table], expected,
            "`{table}` differs from the single-process run"
        );
    }
}

/// What both multi-process tests start with: an S3 server, the mock (served by a runtime of
/// its own) and the pipeline file with checkpoints.
struct Setup {
    s3: S3Server,
    mock: MockHandle,
    base_url: String,
    file: PathBuf,
    _dir: tempfile::TempDir,
    _rt: tokio::runtime::Runtime,
}

impl Setup {
    fn start(bucket: &str) -> Setup {
        let s3 = S3Server::start(bucket);
        let rt = tokio::runtime::Runtime::new().unwrap();
        let mock = rt.block_on(MockHandle::start(mock_config())).unwrap();
        let base_url = mock.base_url();
        let dir = tempfile::tempdir().unwrap();
        let file = pipeline_with_checkpoints(dir.path());
        Setup {
            s3,
            mock,
            base_url,
            file,
            _dir: dir,
            _rt: rt,
        }
    }

    /// Starts shard `shard` (`I/N`), or the whole pipeline in one process, into `lake`.
    fn spawn(&self, lake: &str, shard: Option<&str>) -> Child {
        spawn(&self.file, &self.base_url, &self.s3, lake, shard)
    }

    /// Runs the whole pipeline in one process into `lake`, to its end.
    fn single_run(&self, lake: &str, what: &str) {
        finish(self.spawn(lake, None), what);
    }

    /// Runs the `SHARDS` shards at once into `lake` and waits for them all; their commit
    /// retries added up.
    fn all_shards(&self, lake: &str) -> u64 {
        let runs: Vec<Child> = (0..SHARDS)
            .map(|i| self.spawn(lake, Some(&format!("{i}/{SHARDS}"))))
            .collect();
        runs.into_iter()
            .enumerate()
            .map(|(i, run)| finish(run, &format!("shard {i}/{SHARDS}")))
            .sum()
    }
}

#[test]
fn four_shards_at_once_land_what_one_process_lands_and_split_the_partitions() {
    let setup = Setup::start("errlake-shards");
    let (s3, mock) = (&setup.s3, &setup.mock);

    let single_url = "s3://errlake-shards/single";
    setup.single_run(single_url, "the single-process run");
    let single_log = mock.request_log();
    let single = tables(single_url, s3);
    assert!(
        single["events"]["rows"].as_u64() == Some(16 * 240),
        "{:?}",
        single["events"]
    );
    // `derived.deploy` is null in every event of some projects and a number in the others:
    // the column is a bigint, whichever project's page landed first, and has no variant.
    let deploy: Vec<&str> = single["events"]["schema"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c.as_str())
        .filter(|c| c.starts_with("derived__deploy"))
        .collect();
    assert_eq!(deploy, ["derived__deploy: int64"]);

    let sharded_url = "s3://errlake-shards/sharded";
    let retries = setup.all_shards(sharded_url);
    let sharded_log = mock.request_log()[single_log.len()..].to_vec();
    assert_same_tables(&single, &tables(sharded_url, s3));

    // Every leaf page was asked for as often as the single run asked for it (once): no
    // partition was fetched by two shards, and none was left out.
    assert_eq!(leaf_requests(&sharded_log), leaf_requests(&single_log));
    // The parents were fetched by every shard.
    let org_pages = |log: &[String]| {
        log.iter()
            .filter(|p| p.starts_with("/user/organizations"))
            .count()
    };
    assert_eq!(
        org_pages(&sharded_log),
        SHARDS as usize * org_pages(&single_log)
    );

    // The server's data changes; the shards merge it at once, each rewriting files (and the
    // hash tables) that the others read: the tables still equal a single run's merge.
    mock.set_revision(1);
    setup.single_run(single_url, "the single-process merge");
    let merge_retries = setup.all_shards(sharded_url);
    assert_same_tables(&tables(single_url, s3), &tables(sharded_url, s3));
    eprintln!("4 shards at once: {retries} commit retries landing, {merge_retries} merging");
}

#[test]
fn a_shard_killed_mid_run_and_run_again_completes_the_lake() {
    let setup = Setup::start("errlake-shard-kill");
    let s3 = &setup.s3;

    let single_url = "s3://errlake-shard-kill/single";
    setup.single_run(single_url, "the single-process run");
    let single = tables(single_url, s3);

    let url = "s3://errlake-shard-kill/sharded";
    let mut runs: Vec<Option<Child>> = (0..SHARDS)
        .map(|i| Some(setup.spawn(url, Some(&format!("{i}/{SHARDS}")))))
        .collect();
    // Shard 1 dies by SIGKILL just after its first checkpoint: part of its partitions are
    // committed with their state, the rest is staged or not fetched yet.
    let mut victim = runs[1].take().unwrap();
    let log = std::io::BufReader::new(victim.stderr.take().unwrap());
    let mut checkpointed = false;
    for line in log.lines() {
        if line.unwrap().contains("checkpoint committed") {
            checkpointed = true;
            break;
        }
    }
    victim.kill().unwrap(); // SIGKILL
    let status = victim.wait().unwrap();
    assert!(
        checkpointed && !status.success(),
        "shard 1 ended ({status}) before its first checkpoint: the kill tested nothing"
    );
    for (i, run) in runs.into_iter().enumerate() {
        if let Some(run) = run {
            finish(run, &format!("shard {i}/{SHARDS}"));
        }
    }
    // The lake is consistent without the dead shard's part: one row per id in every table.
    let partial = tables(url, s3);
    for (table, t) in &partial {
        assert_eq!(
            t["rows"], t["distinct"],
            "`{table}` has duplicate ids after the kill"
        );
    }
    assert!(
        partial["events"]["rows"].as_u64() < single["events"]["rows"].as_u64(),
        "the killed shard's events were missing before its rerun"
    );
    finish(
        setup.spawn(url, Some(&format!("1/{SHARDS}"))),
        "shard 1 run again",
    );
    assert_same_tables(&single, &tables(url, s3));
}

/// Of a split run, shard 0 alone writes the parents: another shard fetches them too but never
/// replaces or empties a parent's table (here `projects`, replaced each run); and a leaf
/// resource that replaces its table cannot be split, so a split run refuses it by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_shard_zero_writes_the_parents_and_a_replaced_leaf_is_refused() {
    use pipeline::RunOptions;
    use source_errors::Shard;

    let mock = MockHandle::start(MockConfig::small(TOKEN)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let seed = std::fs::read_to_string(pipeline_file("errors.toml")).unwrap();
    let with_replace = |resource: &str| {
        let file = dir.path().join(format!("{resource}-replaced.toml"));
        let name = format!("name = \"{resource}\"\n");
        let text = seed.replacen(
            &name,
            &format!("{name}write_disposition = \"replace\"\n"),
            1,
        );
        assert_ne!(text, seed);
        std::fs::write(&file, text).unwrap();
        file
    };
    let lake_dir = dir.path().join("lake");
    let lake = sink_parquet::Lake::open(&lake_dir.display().to_string()).unwrap();
    let p = crate::support::load(
        &with_replace("projects"),
        &mock.base_url(),
        &lake_dir,
        TOKEN,
    );
    let shard = |i| RunOptions {
        shard: Shard::new(i, 2).unwrap(),
        ..RunOptions::default()
    };
    pipeline::run(&p, &shard(0)).await.unwrap();
    let projects = lake.table_info("projects").await.unwrap().unwrap();
    assert_eq!(projects.rows, mock.expected_counts()["projects"] as u64);
    let report = pipeline::run(&p, &shard(1)).await.unwrap();
    assert!(
        report.commits.iter().all(|c| c.table != "projects"),
        "{:?}",
        report.commits
    );
    let after = lake.table_info("projects").await.unwrap().unwrap();
    assert_eq!(
        (after.version, after.rows),
        (projects.version, projects.rows)
    );
    assert!(lake.table_info("events").await.unwrap().unwrap().rows > 0);

    let p = crate::support::load(&with_replace("events"), &mock.base_url(), &lake_dir, TOKEN);
    let e = pipeline::run(&p, &shard(1)).await.unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("`events` cannot be split between shards"),
        "{text}"
    );
}
