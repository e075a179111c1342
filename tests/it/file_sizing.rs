//! File sizing: a run writes data files of the configured size, with row groups of the
//! configured rows, however many pages it fetched (not a file or a row group per page).

use mock_api::{MockConfig, MockHandle};

use crate::support::{load, pipeline_file, run, run_python};

const TOKEN: &str = "sizing-token";
/// Scaled down so the test stays quick: the same rules close a 128 MiB file.
const TARGET_FILE_BYTES: u64 = 1 << 20;
/// The target file size of the compaction test.
const COMPACT_TARGET_FILE_BYTES: u64 = 8 << 20;
const ROW_GROUP_ROWS: u64 = 2_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_writes_files_of_the_target_size_not_one_per_page() {
    let mut config = MockConfig::small(TOKEN);
    config.size.events_per_project = 3_000;
    let mock = MockHandle::start(config).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = sized_pipeline(dir.path(), "");
    let lake = dir.path().join("lake");
    let p = load(&file, &mock.base_url(), &lake, TOKEN);
    let report = run(&p).await.unwrap();
    let pages = report.resources["events"].pages;
    assert!(report.compacted.is_empty(), "{:?}", report.compacted);

    let tables = [
        "events",
        "events__breadcrumbs",
        "events__exceptions__stacktrace",
    ];
    let read = files_of(&lake, &tables);
    for table in tables {
        let files = &read[table];
        let rows: u64 = files.iter().flat_map(|(_, g, _)| g).sum();
        let bytes: u64 = files.iter().map(|(b, _, _)| b).sum();
        assert_eq!(rows, report.rows[table], "{table}");
        // Every file reached the target before it was closed, but the one the run ended and
        // those a wider batch ended (a column's first value: the mock's `derived.deploy` is
        // null in the first projects' events): one per schema.
        let schemas: std::collections::BTreeSet<u64> = files.iter().map(|(_, _, c)| *c).collect();
        let small = files
            .iter()
            .filter(|(b, _, _)| *b < TARGET_FILE_BYTES)
            .count();
        assert!(
            small <= schemas.len(),
            "{table}: {small} files under the target for {} schemas: {files:?}",
            schemas.len()
        );
        assert!(
            (files.len() as u64) <= bytes / TARGET_FILE_BYTES + schemas.len() as u64,
            "{table}: {} files for {bytes} bytes",
            files.len()
        );
        // Full row groups: at most the configured rows, and all but each file's last full.
        for (_, groups, _) in files {
            let (last, full) = groups.split_last().unwrap();
            assert!(*last <= ROW_GROUP_ROWS, "{table}: {groups:?}");
            assert!(
                full.iter().all(|g| *g == ROW_GROUP_ROWS),
                "{table}: {groups:?}"
            );
        }
    }
    let events = read["events"].len() as u64;
    assert!(
        events > 1 && events * 20 < pages,
        "{events} events files for {pages} pages"
    );
}

/// Checkpoints every 20 pages end files early; after the run, compaction packs each
/// table's small files into target-sized ones, and every row is still there once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_small_files_of_checkpoints_are_compacted_after_the_run() {
    let mut config = MockConfig::small(TOKEN);
    config.size.events_per_project = 3_000;
    let mock = MockHandle::start(config).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Files count as small under an eighth of the target: a larger target than the other
    // test's, so that a checkpoint's 20 pages of every table are small.
    let file = sized_pipeline_with(
        dir.path(),
        COMPACT_TARGET_FILE_BYTES,
        "compact_min_files = 4\n[checkpoint]\npages = 20\n",
    );
    let lake = dir.path().join("lake");
    let p = load(&file, &mock.base_url(), &lake, TOKEN);
    let report = run(&p).await.unwrap();
    assert!(report.checkpoints >= 10, "{}", report.checkpoints);

    let tables = [
        "events",
        "events__breadcrumbs",
        "events__exceptions__stacktrace",
    ];
    let read = files_of(&lake, &tables);
    let counted = crate::support::read_with_python(&lake, &tables);
    for table in tables {
        let compacted = &report.compacted[table];
        assert!(
            compacted.files_before >= report.checkpoints as usize / 2,
            "{table}: {compacted:?}"
        );
        let files = &read[table];
        let bytes: u64 = files.iter().map(|(b, _, _)| b).sum();
        // What stays small: at most a file no other could join, and the last packed one.
        let small = files
            .iter()
            .filter(|(b, _, _)| *b < COMPACT_TARGET_FILE_BYTES / 8)
            .count();
        assert!(small <= 2, "{table}: {small} small files: {files:?}");
        assert!(
            (files.len() as u64) <= bytes / (COMPACT_TARGET_FILE_BYTES / 2) + 2,
            "{table}: {} files for {bytes} bytes after compaction",
            files.len()
        );
        let expected = mock.expected_counts().get(table).copied().map(|n| n as i64);
        let r = &counted[table];
        assert_eq!(r.rows, r.distinct_keys, "{table}: one row per id");
        assert_eq!(r.glob_rows, r.rows, "{table}: the compacted files are gone");
        assert_eq!(r.rows as u64, report.rows[table], "{table}");
        if let Some(n) = expected {
            assert_eq!(r.rows, n, "{table}");
        }
    }
}

/// The seed pipeline with the scaled-down sizes, and `extra` lines after them.
fn sized_pipeline(dir: &std::path::Path, extra: &str) -> std::path::PathBuf {
    sized_pipeline_with(dir, TARGET_FILE_BYTES, extra)
}

/// The seed pipeline with files of `target` bytes, the scaled-down row groups, and `extra`.
fn sized_pipeline_with(dir: &std::path::Path, target: u64, extra: &str) -> std::path::PathBuf {
    let file = dir.join("errors.toml");
    let seed = std::fs::read_to_string(pipeline_file("errors.toml")).unwrap();
    std::fs::write(
        &file,
        format!(
            "{seed}\n[sink]\ntarget_file_bytes = {target}\nrow_group_rows = {ROW_GROUP_ROWS}\n{extra}"
        ),
    )
    .unwrap();
    file
}

/// Per table, each active file's size and the rows of each of its row groups, as pyarrow
/// reads them from the files the Delta log lists.
fn files_of(
    lake: &std::path::Path,
    tables: &[&str],
) -> std::collections::BTreeMap<String, Vec<(u64, Vec<u64>, u64)>> {
    let script = r#"
import json, os, sys
import pyarrow.parquet as pq
from deltalake import DeltaTable
out = {}
for t in sys.argv[2].split(","):
    root = f"{sys.argv[1]}/{t}"
    files = []
    for uri in DeltaTable(root).file_uris():
        path = uri.removeprefix("file://")
        meta = pq.ParquetFile(path).metadata
        groups = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
        files.append([os.path.getsize(path), groups, meta.num_columns])
    out[t] = files
print(json.dumps(out), flush=True)
os._exit(0)
"#;
    run_python(script, &[&lake.display().to_string(), &tables.join(",")])
}
