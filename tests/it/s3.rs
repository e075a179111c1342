//! The seed pipeline into an `s3://` destination on a real S3-compatible server (moto) on
//! loopback.

use pipeline::{Overrides, Pipeline};
use source_errors::Secrets;

use mock_api::{MockConfig, MockHandle};

use crate::support::{S3Server, pipeline_file, read_s3_with_python, run};

/// The pipeline in `file` against `mock`, landing under `url` on the S3 server.
fn on_s3(file: &std::path::Path, mock: &MockHandle, url: &str, s3: &S3Server) -> Pipeline {
    let overrides = Overrides {
        base_url: Some(mock.base_url()),
        destination: Some(url.to_owned()),
        storage_options: s3.options(),
    };
    let secrets = Secrets::from_map([("auth_token".to_owned(), "s3-token".to_owned())]);
    Pipeline::load(file, &secrets, &overrides).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_pipeline_lands_and_merges_on_s3() {
    let s3 = S3Server::start("errlake");
    let mock = MockHandle::start(MockConfig::small("s3-token"))
        .await
        .unwrap();
    let url = "s3://errlake/lakes/errors";
    let p = on_s3(&pipeline_file("errors.toml"), &mock, url, &s3);
    run(&p).await.unwrap();
    mock.set_revision(1);
    let second = run(&p).await.unwrap();

    let tables = [
        "organizations",
        "projects",
        "saved_searches",
        "errors",
        "events",
        "events__breadcrumbs",
    ];
    let read = read_s3_with_python(url, &tables, &s3.options());
    for (table, expected) in mock.expected_counts() {
        // Organizations and saved searches do not change in revision 1: no new version.
        let version = i64::from(!["organizations", "saved_searches"].contains(&table));
        assert_eq!(
            read[table],
            [version, expected as i64, expected as i64],
            "{table}"
        );
    }
    // The second run was incremental: only the new and changed events came, their
    // children replacing the old ones, one row per id.
    assert!(second.resources["events"].records < read["events"][1] as u64 / 2);
    let crumbs = read["events__breadcrumbs"];
    assert_eq!(crumbs[1], crumbs[2]);
}

/// Two runs writing the same tables on S3 at once (two mocks with the same ids, one a
/// revision ahead with more rows) both land through Delta's conditional puts and the
/// sink's re-merge: every table ends with one row per id, the union of both runs' ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_runs_on_s3_both_land_with_one_row_per_id() {
    let s3 = S3Server::start("errlake-concurrent");
    let older = MockHandle::start(MockConfig::small("s3-token"))
        .await
        .unwrap();
    let newer = MockHandle::start(MockConfig::small("s3-token"))
        .await
        .unwrap();
    newer.set_revision(1);
    let url = "s3://errlake-concurrent/lake";
    let file = pipeline_file("errors.toml");
    let (a, b) = (
        on_s3(&file, &older, url, &s3),
        on_s3(&file, &newer, url, &s3),
    );
    let (ra, rb) = tokio::join!(run(&a), run(&b));
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert!(!ra.commits.is_empty() && !rb.commits.is_empty());

    let tables = [
        "organizations",
        "projects",
        "saved_searches",
        "errors",
        "events",
    ];
    let read = read_s3_with_python(url, &tables, &s3.options());
    for table in tables {
        let expected = newer.expected_counts()[table] as i64;
        let [_, rows, distinct] = read[table];
        assert_eq!((rows, distinct), (expected, expected), "{table}: {read:?}");
    }
}

/// `[sink] keep_history_secs` on S3: the files a merge replaced stay, so an independent
/// reader still reads the first run's version of a table (time travel), and the table
/// carries the retention as its Delta property for other writers' `VACUUM`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lake_that_keeps_history_on_s3_still_reads_its_older_versions() {
    let s3 = S3Server::start("errlake-history");
    let mock = MockHandle::start(MockConfig::small("s3-token"))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("errors.toml");
    let seed = std::fs::read_to_string(pipeline_file("errors.toml")).unwrap();
    std::fs::write(
        &file,
        format!("{seed}\n[sink]\nkeep_history_secs = 86400\n"),
    )
    .unwrap();
    let url = "s3://errlake-history/lake";
    let p = on_s3(&file, &mock, url, &s3);
    run(&p).await.unwrap();
    let first = mock.expected_counts()["events"] as i64;
    mock.set_revision(1);
    run(&p).await.unwrap();
    let second = mock.expected_counts()["events"] as i64;
    assert_ne!(first, second);

    let script = r#"
import json, sys
import pyarrow.compute as pc
from deltalake import DeltaTable
url, options = sys.argv[1], json.loads(sys.argv[2])
now = DeltaTable(f"{url}/events", storage_options=options)
then = DeltaTable(f"{url}/events", storage_options=options, version=0)
old = then.to_pyarrow_table()
print(json.dumps({
    "rows_now": now.to_pyarrow_table().num_rows,
    "rows_then": old.num_rows,
    "ids_then": len(pc.unique(old.column("id"))),
    "retention": now.metadata().configuration.get("delta.deletedFileRetentionDuration"),
}), flush=True)
import os; os._exit(0)
"#;
    let options = serde_json::to_string(&s3.options()).unwrap();
    let read: serde_json::Value = crate::support::run_python(script, &[url, &options]);
    assert_eq!(read["rows_now"], second, "{read}");
    assert_eq!(read["rows_then"], first, "{read}");
    assert_eq!(read["ids_then"], first, "{read}");
    assert_eq!(read["retention"], "interval 86400 seconds", "{read}");
}
