//! The seed pipeline (`pipelines/errors.toml`) against the embedded mock API.

use std::collections::HashSet;

use mock_api::{Fault, MockConfig, MockHandle};

use crate::support::{column_by_id, load, pipeline_file, read_with_duckdb, read_with_python, run};

const TOKEN: &str = "it-token-5f3a";
const ROOTS: [&str; 5] = [
    "organizations",
    "projects",
    "saved_searches",
    "errors",
    "events",
];
const CHILDREN: [&str; 3] = [
    "events__exceptions",
    "events__exceptions__stacktrace",
    "events__breadcrumbs",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_run_lands_every_resource_and_a_rerun_merges_on_id() {
    let mock = MockHandle::start(MockConfig::small(TOKEN)).await.unwrap();
    let lake = tempfile::tempdir().unwrap();
    let p = load(
        &pipeline_file("errors.toml"),
        &mock.base_url(),
        lake.path(),
        TOKEN,
    );

    let first = run(&p).await.unwrap();
    let all: Vec<&str> = ROOTS.iter().chain(CHILDREN.iter()).copied().collect();
    let read = read_with_python(lake.path(), &all);
    for (table, expected) in mock.expected_counts() {
        let r = &read[table];
        assert_eq!(
            (r.rows as usize, r.distinct_keys as usize, r.version),
            (expected, expected, 0),
            "{table}"
        );
    }
    for t in CHILDREN {
        assert!(read[t].rows > 0, "{t} is empty");
        assert_eq!(read[t].rows as u64, first.rows[t], "{t}");
    }

    // The server's data changes: some rows updated, some added, list elements removed.
    mock.set_revision(1);
    let second = run(&p).await.unwrap();
    let read = read_with_python(lake.path(), &all);
    // Organizations and saved searches do not change in revision 1: their records are
    // stored unchanged, so their tables get no new version.
    let unchanged = ["organizations", "saved_searches"];
    for (table, expected) in mock.expected_counts() {
        let r = &read[table];
        let version = if unchanged.contains(&table) { 0 } else { 1 };
        assert_eq!(
            (r.rows as usize, r.distinct_keys as usize, r.version),
            (expected, expected, version),
            "{table}"
        );
        assert_eq!(
            r.glob_rows, r.rows,
            "{table}: a *.parquet glob sees other rows than the table"
        );
    }
    // Incremental: only the new and changed events came (the one at each cursor too).
    let changed_per_project = 3 + (0..78).filter(|k| k % 10 == 1).count() as u64;
    assert!(
        second.resources["events"].records <= 6 * (changed_per_project + 1),
        "{:?}",
        second.resources["events"]
    );
    // The children of a changed event were replaced with it (removed breadcrumbs are gone):
    // every table equals a full load of revision 1 into an empty lake.
    let fresh_lake = tempfile::tempdir().unwrap();
    let fresh = load(
        &pipeline_file("errors.toml"),
        &mock.base_url(),
        fresh_lake.path(),
        TOKEN,
    );
    let full = run(&fresh).await.unwrap();
    let reference = read_with_python(fresh_lake.path(), &all);
    for t in &all {
        assert_eq!(
            (read[*t].rows, read[*t].distinct_keys),
            (reference[*t].rows, reference[*t].distinct_keys),
            "{t}"
        );
        assert_eq!(read[*t].glob_rows, read[*t].rows, "{t}");
    }
    assert!(full.rows["events__breadcrumbs"] < first.rows["events__breadcrumbs"] + 3 * 9 * 6);

    // DuckDB's delta extension reads the same tables.
    let duck = read_with_duckdb(lake.path(), &all);
    for t in &all {
        assert_eq!(duck[*t], [read[*t].rows, read[*t].rows], "{t}");
    }

    // The changed values landed: revision 1 turns every tenth event (index % 10 == 1) to info.
    let severity = column_by_id(lake.path(), "events", "severity");
    let n_info = severity.values().filter(|v| *v == "info").count();
    let per_project = mock_api::count_at(75, 1);
    let expected_info = (0..per_project).filter(|k| k % 10 == 1).count() * 6;
    assert_eq!(n_info, expected_info);
    let names = column_by_id(lake.path(), "projects", "name");
    assert!(
        names.values().any(|n| n.contains("(renamed r1)")),
        "{names:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_fails_midway_commits_nothing() {
    let mock = MockHandle::start(MockConfig::small(TOKEN)).await.unwrap();
    let lake = tempfile::tempdir().unwrap();
    let p = load(
        &pipeline_file("errors.toml"),
        &mock.base_url(),
        lake.path(),
        TOKEN,
    );
    run(&p).await.unwrap();
    let before = read_with_python(lake.path(), &ROOTS);

    mock.set_revision(1);
    mock.add_fault(Fault {
        path_contains: "/events".into(),
        offset: 50,
        status: 200,
        body: "{\"data\": [{\"id\": ".into(),
        retry_after: None,
        times: usize::MAX,
    });
    // All events again (the cursor would ask only for the few new ones, one page).
    let options = pipeline::RunOptions {
        full_refresh: vec!["events".into()],
        ..pipeline::RunOptions::default()
    };
    let err = pipeline::run(&p, &options).await.unwrap_err();
    let message = anyhow_like(err);
    assert!(
        message.contains("page 2 of `events[organization_id="),
        "{message}"
    );
    assert!(message.contains("offset=50"), "{message}");
    assert!(message.contains("is not valid JSON"), "{message}");

    let after = read_with_python(lake.path(), &ROOTS);
    assert_eq!(before, after, "a failed run changed the lake");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retryable_statuses_are_retried_with_retry_after() {
    let mock = MockHandle::start(MockConfig::small(TOKEN)).await.unwrap();
    let lake = tempfile::tempdir().unwrap();
    let p = load(
        &pipeline_file("errors.toml"),
        &mock.base_url(),
        lake.path(),
        TOKEN,
    );
    for status in [429, 503] {
        mock.add_fault(Fault {
            path_contains: "/errors".into(),
            offset: 0,
            status,
            body: "<html>busy</html>".into(),
            retry_after: Some("0".into()),
            times: 1,
        });
    }
    let report = run(&p).await.unwrap();
    assert_eq!(report.http.retries, 2);
    assert_eq!(report.http.by_status.get(&429), Some(&1));
    assert_eq!(report.http.by_status.get(&503), Some(&1));
    let read = read_with_python(lake.path(), &["errors"]);
    assert_eq!(
        read["errors"].rows as usize,
        mock.expected_counts()["errors"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_fails_with_advice_and_no_secret() {
    let mock = MockHandle::start(MockConfig::small(TOKEN)).await.unwrap();
    let lake = tempfile::tempdir().unwrap();
    let p = load(
        &pipeline_file("errors.toml"),
        &mock.base_url(),
        lake.path(),
        "wrong-secret-value",
    );
    let message = anyhow_like(run(&p).await.unwrap_err());
    assert!(message.contains("401 (check the auth token)"), "{message}");
    assert!(!message.contains("wrong-secret-value"), "{message}");
    let tables: HashSet<String> = std::fs::read_dir(lake.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    // No table, only the load history, whose report says why, without the secret either.
    assert_eq!(
        tables,
        HashSet::from([sink_parquet::LOADS_FOLDER.to_owned()]),
        "{tables:?}"
    );
    let history = sink_parquet::Lake::open(&lake.path().display().to_string())
        .unwrap()
        .load_reports(5)
        .await
        .unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0]["outcome"], "failed");
    let text = history[0].to_string();
    assert!(text.contains("401 (check the auth token)"), "{text}");
    assert!(!text.contains("wrong-secret-value"), "{text}");
}

/// The error with its whole chain of causes, as the runner prints it.
fn anyhow_like(e: pipeline::PipelineError) -> String {
    pipeline::error_chain(&e)
}

/// `[normalize]` in the pipeline file: a field kept as JSON, one excluded, one retyped, and
/// a frozen contract that stops a later run naming the new column (the lake keeps its
/// version), read back by the Python Delta reader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn normalize_hints_and_contracts_from_the_pipeline_file() {
    let mock = MockHandle::start(MockConfig::small(TOKEN)).await.unwrap();
    let lake = tempfile::tempdir().unwrap();
    let seed = std::fs::read_to_string(pipeline_file("errors.toml")).unwrap();
    let hinted = lake.path().join("hinted.toml");
    std::fs::write(
        &hinted,
        format!(
            "{seed}\n[normalize.tables.events.columns]\n\
             meta_data__custom = {{ type = \"json\" }}\n\
             user__email = {{ exclude = true }}\n\
             device__total_memory = {{ type = \"double\" }}\n"
        ),
    )
    .unwrap();
    let dest = lake.path().join("lake");
    let p = load(&hinted, &mock.base_url(), &dest, TOKEN);
    run(&p).await.unwrap();

    let custom = column_by_id(&dest, "events", "meta_data__custom");
    let (_, first) = custom.iter().next().unwrap();
    let parsed: serde_json::Value = serde_json::from_str(first).unwrap();
    assert!(parsed.get("trace id").is_some(), "{first}");
    let memory = column_by_id(&dest, "events", "device__total_memory");
    assert!(memory.values().all(|v| v == "8589934592.0"), "{memory:?}");
    let t = deltalake_columns(&dest, "events");
    assert!(!t.iter().any(|c| c.starts_with("user__email")), "{t:?}");
    assert!(
        !t.iter().any(|c| c.starts_with("meta_data__custom__")),
        "{t:?}"
    );

    // The same pipeline with a frozen column contract, against data with a new field.
    let frozen = lake.path().join("frozen.toml");
    std::fs::write(
        &frozen,
        format!(
            "{}\n[normalize.tables.events]\nschema_contract = {{ columns = \"freeze\" }}\n",
            std::fs::read_to_string(&hinted)
                .unwrap()
                .replace("user__email = { exclude = true }\n", "")
        ),
    )
    .unwrap();
    let p = load(&frozen, &mock.base_url(), &dest, TOKEN);
    let err = run(&p).await.unwrap_err();
    let message = format!("{:#}", anyhow::Error::from(err));
    assert!(
        message.contains("user__email") && message.contains("freeze"),
        "{message}"
    );
    let read = read_with_python(&dest, &["events"]);
    assert_eq!(
        read["events"].version, 0,
        "the refused run committed nothing"
    );
}

/// The column names of a table, through the Python reader's schema.
fn deltalake_columns(lake: &std::path::Path, table: &str) -> Vec<String> {
    crate::support::run_python(
        "import json, sys\nfrom deltalake import DeltaTable\n\
         print(json.dumps([f.name for f in DeltaTable(sys.argv[1]).schema().fields]))",
        &[&lake.join(table).display().to_string()],
    )
}

/// The pipeline's `[sink]` section holds for its state table too: with a history setting,
/// the state table keeps its replaced files for that long, as the data tables do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sink_section_holds_for_the_state_table() {
    let mock = MockHandle::start(MockConfig::small(TOKEN)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let seed = std::fs::read_to_string(pipeline_file("errors.toml")).unwrap();
    let file = dir.path().join("history.toml");
    std::fs::write(
        &file,
        format!("{seed}\n[sink]\nkeep_history_secs = 86400\n"),
    )
    .unwrap();
    let lake_dir = dir.path().join("lake");
    let p = load(&file, &mock.base_url(), &lake_dir, TOKEN);
    run(&p).await.unwrap();
    let lake = sink_parquet::Lake::open(lake_dir.to_str().unwrap()).unwrap();
    for table in ["events", pipeline::STATE_TABLE] {
        // The property as every Delta reader finds it: the last `metaData` of the log.
        let mut commits: Vec<_> = std::fs::read_dir(lake_dir.join(table).join("_delta_log"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        commits.sort();
        let retention = commits
            .iter()
            .flat_map(|c| {
                let text = std::fs::read_to_string(c).unwrap();
                text.lines()
                    .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                    .filter_map(|a| a.get("metaData").cloned())
                    .collect::<Vec<_>>()
            })
            .last()
            .and_then(|m| {
                m["configuration"][sink_parquet::KEEP_HISTORY_PROPERTY]
                    .as_str()
                    .map(str::to_owned)
            });
        assert_eq!(
            retention.as_deref(),
            Some("interval 86400 seconds"),
            "{table}"
        );
        let info = lake.table_info(table).await.unwrap().unwrap();
        assert_eq!(
            info.keeps_history,
            Some(std::time::Duration::from_secs(86400)),
            "{table}"
        );
    }
}
