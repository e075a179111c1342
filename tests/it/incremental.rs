//! Incremental runs, checkpoints and resume with the seed pipeline against the mock: what a
//! rerun asks the API for (counted by the mock), what it commits, and that the tables end
//! as an uninterrupted run leaves them (read by the Python Delta reader).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mock_api::{DataSize, Fault, MockConfig, MockHandle};
use pipeline::{Interrupt, Outcome, RunOptions};

use crate::support::{load, pipeline_file, read_with_python};

const TOKEN: &str = "inc-token-88b1";
const TABLES: [&str; 5] = [
    "organizations",
    "projects",
    "saved_searches",
    "errors",
    "events",
];

fn size(events_per_project: usize) -> DataSize {
    DataSize {
        organizations: 2,
        projects_per_org: 3,
        saved_searches_per_project: 2,
        errors_per_project: 30,
        events_per_project,
    }
}

async fn mock(events_per_project: usize) -> MockHandle {
    MockHandle::start(MockConfig {
        seed: 5,
        size: size(events_per_project),
        authorization: TOKEN.to_owned(),
    })
    .await
    .unwrap()
}

/// Per table (rows, distinct ids) as the Python reader sees them.
fn rows(lake: &Path) -> BTreeMap<String, (i64, i64)> {
    read_with_python(lake, &TABLES)
        .into_iter()
        .map(|(t, r)| (t, (r.rows, r.distinct_keys)))
        .collect()
}

fn expected(mock: &MockHandle) -> BTreeMap<String, (i64, i64)> {
    TABLES
        .iter()
        .map(|t| {
            let n = mock.expected_counts()[t] as i64;
            ((*t).to_owned(), (n, n))
        })
        .collect()
}

fn versions(lake: &Path) -> BTreeMap<String, i64> {
    read_with_python(lake, &TABLES)
        .into_iter()
        .map(|(t, r)| (t, r.version))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rerun_without_changes_asks_once_per_partition_and_commits_nothing() {
    let mock = mock(120).await;
    let lake = tempfile::tempdir().unwrap();
    let p = load(
        &pipeline_file("errors.toml"),
        &mock.base_url(),
        lake.path(),
        TOKEN,
    );
    // Run as the command line runs it: with an interrupt handle that is never triggered
    // (it must not keep the run from ending) and live counters.
    let live = source_errors::LiveStats::default();
    let cli_like = RunOptions {
        interrupt: Some(Interrupt::default()),
        live: Some(live.clone()),
        ..RunOptions::default()
    };
    let first = tokio::time::timeout(Duration::from_secs(120), pipeline::run(&p, &cli_like))
        .await
        .expect("the run ends although its interrupt handle was never triggered")
        .unwrap();
    assert_eq!(first.outcome, Outcome::Completed);
    assert_eq!(live.lock().unwrap()["events"].records, 6 * 120);
    let before = versions(lake.path());

    let requests = mock.requests();
    let second = pipeline::run(&p, &RunOptions::default()).await.unwrap();
    let made = mock.requests() - requests;
    let partitions: u64 = second.resources.values().map(|r| r.partitions).sum();
    // 1 organizations + 2 projects + 6 each of saved_searches, errors and events.
    assert_eq!(partitions, 21);
    assert_eq!(made, partitions, "{:#?}", second.resources);
    assert!(second.commits.is_empty(), "{:#?}", second.commits);
    assert_eq!(versions(lake.path()), before);
    assert_eq!(rows(lake.path()), expected(&mock));
    // The incremental resources sent the cursor the first run left.
    let events = &second.resources["events"].by_partition;
    assert!(
        events
            .values()
            .all(|p| p.cursor_start.as_deref().is_some_and(|c| c > "2023")),
        "{events:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_data_costs_only_the_new_pages_and_lands_once() {
    let mock = mock(500).await;
    let lake = tempfile::tempdir().unwrap();
    let p = load(
        &pipeline_file("errors.toml"),
        &mock.base_url(),
        lake.path(),
        TOKEN,
    );
    let first = pipeline::run(&p, &RunOptions::default()).await.unwrap();
    assert_eq!(first.resources["events"].pages, 6 * 10);

    // Revision 1: per project 25 events added and 50 changed (their received_at moves on).
    mock.set_revision(1);
    let second = pipeline::run(&p, &RunOptions::default()).await.unwrap();
    for (partition, stats) in &second.resources["events"].by_partition {
        // 75 new or changed events, plus at most the one at the old cursor: 2 pages of 50,
        // where the first run needed 10.
        assert!(
            (75..=76).contains(&stats.records) && stats.pages == 2,
            "{partition}: {stats:?}"
        );
    }
    assert_eq!(rows(lake.path()), expected(&mock));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_refresh_and_a_backfill_window_ignore_the_cursor() {
    let mock = mock(200).await;
    let lake = tempfile::tempdir().unwrap();
    let p = load(
        &pipeline_file("errors.toml"),
        &mock.base_url(),
        lake.path(),
        TOKEN,
    );
    pipeline::run(&p, &RunOptions::default()).await.unwrap();
    let refreshed = pipeline::run(
        &p,
        &RunOptions {
            full_refresh: vec!["events".into()],
            ..RunOptions::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(refreshed.resources["events"].records, 6 * 200);
    assert_eq!(
        refreshed.resources["errors"].records, 6,
        "errors kept its cursor"
    );
    // Unchanged records are not rewritten: nothing to commit.
    assert!(refreshed.commits.is_empty(), "{:#?}", refreshed.commits);

    // A backfill window: the first 100 minutes of events (one a minute in the mock), sent
    // as since/before; the stored cursor is neither used nor moved.
    let seed = std::fs::read_to_string(pipeline_file("errors.toml")).unwrap();
    let window = seed.replace(
        "cursor_path = \"received_at\"\ninitial_value = \"2015-01-01T00:00:00Z\"",
        "cursor_path = \"received_at\"\ninitial_value = \"2023-11-14T22:13:20Z\"\nend_value = \"2023-11-14T23:53:20Z\"\nend_param = \"filters[event.before][][value]\"",
    );
    assert_ne!(window, seed);
    let file = lake.path().join("backfill.toml");
    std::fs::write(&file, window).unwrap();
    let state_before = pipeline::load_state(
        &sink_parquet::Lake::open(&lake.path().display().to_string()).unwrap(),
    )
    .await
    .unwrap();
    let backfill = load(&file, &mock.base_url(), lake.path(), TOKEN);
    let report = pipeline::run(&backfill, &RunOptions::default())
        .await
        .unwrap();
    for (partition, stats) in &report.resources["events"].by_partition {
        assert!(
            (99..=100).contains(&stats.records),
            "{partition}: {stats:?}"
        );
    }
    let state_after = pipeline::load_state(
        &sink_parquet::Lake::open(&lake.path().display().to_string()).unwrap(),
    )
    .await
    .unwrap();
    let events = |s: &std::collections::HashMap<(String, String), pipeline::StoredState>| {
        s.iter()
            .filter(|(k, _)| k.0 == "events")
            .map(|(k, v)| (k.clone(), v.state.clone()))
            .collect::<BTreeMap<_, _>>()
    };
    assert_eq!(events(&state_after), events(&state_before));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_going_lands_the_other_partitions_and_the_next_run_resumes_the_failed_one() {
    let mock = mock(300).await;
    let lake = tempfile::tempdir().unwrap();
    let (project, file) = failing_events_page(&mock);
    let p = load(&file, &mock.base_url(), lake.path(), TOKEN);
    let report = pipeline::run(
        &p,
        &RunOptions {
            keep_going: true,
            ..RunOptions::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(report.outcome, Outcome::PartiallyFailed);
    assert_eq!(report.failed.len(), 1, "{:?}", report.failed);
    assert_eq!(report.failed[0].resource, "events");
    assert!(report.failed[0].partition.contains(&project));
    let landed = rows(lake.path());
    assert_eq!(
        landed["events"].0,
        5 * 300 + 150,
        "the failed one's first 3 pages landed"
    );

    mock.clear_faults();
    let requests = mock.requests();
    let rerun = pipeline::run(&p, &RunOptions::default()).await.unwrap();
    assert_eq!(rerun.outcome, Outcome::Completed);
    let failed_one = rerun.resources["events"]
        .by_partition
        .iter()
        .find(|(k, _)| k.contains(&project))
        .unwrap()
        .1;
    assert!(failed_one.resumed, "{failed_one:?}");
    assert_eq!(failed_one.pages, 3, "pages 4 to 6 only");
    // The others: one request each (nothing new); the failed one: its 3 missing pages.
    let made = mock.requests() - requests;
    assert_eq!(made, 21 - 1 + 3, "{:#?}", rerun.resources);
    assert_eq!(rows(lake.path()), expected(&mock));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupt_commits_what_landed_and_the_next_run_goes_on_from_there() {
    let mock = mock(1000).await;
    let lake = tempfile::tempdir().unwrap();
    let p = load(
        &pipeline_file("errors.toml"),
        &mock.base_url(),
        lake.path(),
        TOKEN,
    );
    let interrupt = Interrupt::default();
    let trigger = {
        let interrupt = interrupt.clone();
        let requests = mock.request_counter();
        tokio::spawn(async move {
            while requests() < 40 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            interrupt.trigger();
        })
    };
    let report = pipeline::run(
        &p,
        &RunOptions {
            interrupt: Some(interrupt),
            ..RunOptions::default()
        },
    )
    .await
    .unwrap();
    trigger.await.unwrap();
    assert_eq!(report.outcome, Outcome::Interrupted);
    let first_requests = mock.requests();
    assert!(first_requests < 6 * 20, "stopped early: {first_requests}");
    let landed = rows(lake.path());
    assert!(
        landed["events"].0 > 0 && landed["events"].0 < 6000,
        "{landed:?}"
    );

    let rerun = pipeline::run(&p, &RunOptions::default()).await.unwrap();
    assert_eq!(rerun.outcome, Outcome::Completed);
    // An uninterrupted run makes 1 + 2 + 6 + 6 + 6 * 20 = 135 requests. The two runs
    // together make at most 25 more: the 9 pagings without a cursor again, one request per
    // finished incremental paging, and the 4 pages in flight that the interrupt dropped.
    let total = mock.requests();
    assert!(total <= 135 + 25, "{first_requests} then {total}");
    assert_eq!(rows(lake.path()), expected(&mock));
}

/// A mock whose second project's fourth page of events keeps failing (500), and a pipeline
/// file whose retries take milliseconds (outside the lake, which takes only errlake's files):
/// the project's id and the file, deleted when dropped.
fn failing_events_page(mock: &MockHandle) -> (String, tempfile::TempPath) {
    let project = mock_api::data::object_id(5, 2, &[0, 1]);
    mock.add_fault(Fault {
        path_contains: format!("/projects/{project}/events"),
        offset: 150,
        status: 500,
        body: "{\"errors\":[\"boom\"]}".into(),
        retry_after: Some("0".into()),
        times: usize::MAX,
    });
    let mut seed = std::fs::read_to_string(pipeline_file("errors.toml")).unwrap();
    seed.push_str("\n[client.retry]\nbackoff_base_secs = 0.001\nbackoff_max_secs = 0.002\n");
    let file = tempfile::Builder::new()
        .prefix("fast-retry")
        .suffix(".toml")
        .tempfile()
        .unwrap()
        .into_temp_path();
    std::fs::write(&file, seed).unwrap();
    (project, file)
}

/// A program that embeds the pipeline in a runtime with a blocking pool of six threads: its
/// checkpoints and its last commit land. A checkpoint commits the seed's five roots at once,
/// and while the Delta kernel reads a table's log it holds a pool thread (its `block_on`
/// blocks in place), so five can wait while the sixth does the file IO they wait on. The
/// transform workers once held a pool thread each for the whole run: with two cores, this
/// run then waited on itself for ever (a pool of eight was the least that finished).
#[test]
fn a_run_in_a_runtime_with_six_blocking_threads_lands_its_checkpoints() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(6)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (landed, expected) = runtime.block_on(async {
        let mock = MockHandle::start(MockConfig::small(TOKEN)).await.unwrap();
        let file = with_checkpoints(dir.path(), 10);
        let p = load(&file, &mock.base_url(), &dir.path().join("lake"), TOKEN);
        // Not a measure of speed: a run of a few seconds that has not ended after two
        // minutes is waiting on itself.
        let ran = tokio::time::timeout(Duration::from_secs(120), crate::support::run(&p)).await;
        (ran, expected(&mock))
    });
    // A stalled run leaves tasks waiting on the pool; do not wait for them.
    runtime.shutdown_timeout(Duration::from_secs(1));
    let report = landed.expect("the run stalled").unwrap();
    assert_eq!(report.outcome, Outcome::Completed);
    assert!(
        report.checkpoints >= 2,
        "{} checkpoints",
        report.checkpoints
    );
    assert_eq!(rows(&dir.path().join("lake")), expected);
}

/// A pipeline file that checkpoints every `pages` pages.
fn with_checkpoints(dir: &Path, pages: u64) -> std::path::PathBuf {
    let mut seed = std::fs::read_to_string(pipeline_file("errors.toml")).unwrap();
    seed.push_str(&format!("\n[checkpoint]\npages = {pages}\n"));
    let file = dir.join("checkpointed.toml");
    std::fs::write(&file, seed).unwrap();
    file
}

fn child(file: &Path, base_url: &str, lake: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_run-pipeline"));
    c.arg(file)
        .arg(base_url)
        .arg(lake)
        .env("AUTH_TOKEN", TOKEN)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

/// Killed runs resume from their checkpoints: a run killed with SIGKILL at a random instant,
/// then rerun, lands the same tables as an uninterrupted run, and the two runs together ask
/// for at most one checkpoint interval (plus the pages in flight and one request per
/// partition) more than the uninterrupted run.
#[test]
fn killed_runs_resume_from_their_checkpoints() {
    const CHECKPOINT_PAGES: u64 = 10;
    // Pages a run can have fetched beyond what it staged: both channels, the workers, the
    // requests in flight.
    const IN_FLIGHT: u64 = 8 + 8 + 2 + 4;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mock = rt.block_on(mock(1500));
    let dir = tempfile::tempdir().unwrap();
    let file = with_checkpoints(dir.path(), CHECKPOINT_PAGES);

    let reference = dir.path().join("reference");
    let started = Instant::now();
    assert!(
        child(&file, &mock.base_url(), &reference)
            .status()
            .unwrap()
            .success()
    );
    let full = started.elapsed();
    let uninterrupted = mock.requests();
    let want = rows(&reference);

    let seed = fastrand::u64(..);
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut resumed = 0;
    for round in 0..5 {
        let lake = dir.path().join(format!("lake-{round}"));
        let before = mock.requests();
        let mut run = child(&file, &mock.base_url(), &lake).spawn().unwrap();
        std::thread::sleep(full.mul_f64(0.3 + 0.5 * rng.f64()));
        let ended = run.try_wait().unwrap().is_some();
        run.kill().unwrap();
        run.wait().unwrap();
        assert!(
            child(&file, &mock.base_url(), &lake)
                .status()
                .unwrap()
                .success()
        );
        let both = mock.requests() - before;
        let partitions = 21;
        let bound = uninterrupted + CHECKPOINT_PAGES + IN_FLIGHT + partitions;
        assert!(
            both <= bound,
            "round {round} (seed {seed}): killed run and rerun made {both} requests, an uninterrupted run {uninterrupted}"
        );
        assert_eq!(rows(&lake), want, "round {round} (seed {seed})");
        if !ended {
            resumed += 1;
        }
    }
    assert!(
        resumed >= 3,
        "only {resumed} runs were killed before they ended"
    );
}

/// A resume point is a URL of the API the last run used: when the pipeline's base URL
/// changed since, the paging starts over instead of sending the token elsewhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_point_on_another_host_is_not_followed() {
    let first_api = mock(300).await;
    let lake = tempfile::tempdir().unwrap();
    let (project, file) = failing_events_page(&first_api);
    let keep_going = RunOptions {
        keep_going: true,
        ..RunOptions::default()
    };
    let p = load(&file, &first_api.base_url(), lake.path(), TOKEN);
    let report = pipeline::run(&p, &keep_going).await.unwrap();
    assert_eq!(report.failed.len(), 1);

    // The same data served elsewhere (another port): the failed paging starts over there.
    let second_api = mock(300).await;
    let p = load(&file, &second_api.base_url(), lake.path(), TOKEN);
    let rerun = pipeline::run(&p, &RunOptions::default()).await.unwrap();
    let stats = rerun.resources["events"]
        .by_partition
        .iter()
        .find(|(k, _)| k.contains(&project))
        .unwrap()
        .1;
    assert!(!stats.resumed, "{stats:?}");
    assert_eq!(stats.pages, 6);
    assert_eq!(rows(lake.path()), expected(&second_api));
}

/// A replaced resource with a table name of its own whose run fails part-way keeps its
/// table as it was: the replace is skipped for that table, not for a table named after the
/// resource.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_resource_with_its_own_table_name_is_left_alone_after_a_partial_run() {
    let mock = mock(50).await;
    let lake = tempfile::tempdir().unwrap();
    let seed = std::fs::read_to_string(pipeline_file("errors.toml")).unwrap();
    let renamed = seed.replacen(
        "name = \"saved_searches\"\n",
        "name = \"saved_searches\"\nwrite_disposition = \"replace\"\ntable_name = \"searches\"\n",
        1,
    );
    assert_ne!(renamed, seed);
    let file = lake.path().join("renamed.toml");
    std::fs::write(
        &file,
        format!("{renamed}\n[client.retry]\nbackoff_base_secs = 0.001\nbackoff_max_secs = 0.002\n"),
    )
    .unwrap();
    let p = load(&file, &mock.base_url(), &lake.path().join("lake"), TOKEN);
    let first = pipeline::run(&p, &RunOptions::default()).await.unwrap();
    assert_eq!(first.outcome, Outcome::Completed);
    let before = read_with_python(&lake.path().join("lake"), &["searches"])["searches"].rows;
    assert!(before > 0);

    let project = mock_api::data::object_id(5, 2, &[0, 1]);
    mock.add_fault(Fault {
        path_contains: format!("/projects/{project}/saved_searches"),
        offset: 0,
        status: 500,
        body: "{\"errors\":[\"boom\"]}".into(),
        retry_after: Some("0".into()),
        times: usize::MAX,
    });
    let second = pipeline::run(
        &p,
        &RunOptions {
            keep_going: true,
            ..RunOptions::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(second.outcome, Outcome::PartiallyFailed);
    assert_eq!(second.failed.len(), 1, "{:?}", second.failed);
    assert_eq!(second.failed[0].resource, "saved_searches");
    let after = read_with_python(&lake.path().join("lake"), &["searches"])["searches"].rows;
    assert_eq!(
        after, before,
        "the partial replace must not reach `searches`"
    );
}
