//! Issue 12: what errlake never does. It deletes no file it did not write, stores no secret,
//! moves no table in a failed run, and sends nothing for a partition value that would leave
//! its path.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::IntoResponse;
use mock_api::{MockConfig, MockHandle};
use pipeline::{PipelineError, RunOptions};
use sink_parquet::{Lake, SinkError};

use crate::support::{load, pipeline_file, run};

const TOKEN: &str = "it-token-5f3a";

/// Files another tool left in a destination (a dlt filesystem destination writes such paths),
/// two hours old, so that no age guard spares them.
const FOREIGN: [&str; 5] = [
    "events/part-0001.parquet",
    "events/2023/part-0002.parquet",
    "errors/old.parquet",
    "archive/2023.parquet",
    "notes.txt",
];

fn plant_foreign_files(lake: &Path) {
    let old = SystemTime::now() - Duration::from_secs(7200);
    for f in FOREIGN {
        let path = lake.join(f);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"not errlake's").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(old)
            .unwrap();
    }
}

fn assert_foreign_files_intact(lake: &Path) {
    for f in FOREIGN {
        assert_eq!(
            std::fs::read(lake.join(f)).unwrap(),
            b"not errlake's",
            "{f} was touched"
        );
    }
}

/// Every data file's name in a folder, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_errlake_did_not_write_survive_runs_merges_and_vacuum() {
    let mock = MockHandle::start(MockConfig::small(TOKEN)).await.unwrap();
    let lake = tempfile::tempdir().unwrap();
    plant_foreign_files(lake.path());
    let p = load(
        &pipeline_file("errors.toml"),
        &mock.base_url(),
        lake.path(),
        TOKEN,
    );

    // A first run refuses the destination, naming what is not errlake's, and writes nothing.
    let err = run(&p).await.unwrap_err();
    let PipelineError::ForeignFiles { files, .. } = &err else {
        panic!("expected a refusal, got {err}");
    };
    let mut expected: Vec<String> = FOREIGN.iter().map(|f| (*f).to_owned()).collect();
    expected.sort();
    assert_eq!(*files, expected);
    assert!(err.to_string().contains("--adopt-foreign-files"), "{err}");
    assert_eq!(files_under(lake.path()).len(), FOREIGN.len());

    // Asked to, it writes beside them; runs, merges and a vacuum of everything
    // unreferenced leave them as they were.
    let adopt = RunOptions {
        adopt_foreign_files: true,
        ..RunOptions::default()
    };
    pipeline::run(&p, &adopt).await.unwrap();
    mock.set_revision(1);
    pipeline::run(&p, &RunOptions::default()).await.unwrap();
    let lake_handle = Lake::open(lake.path().to_str().unwrap()).unwrap();
    for folder in lake_handle.folders().await.unwrap() {
        let orphans = lake_handle
            .remove_orphans(&folder, Duration::ZERO, true)
            .await
            .unwrap();
        assert!(
            orphans.paths.iter().all(|p| !FOREIGN.contains(&p.as_str())),
            "{orphans:?}"
        );
        lake_handle
            .remove_orphans(&folder, Duration::ZERO, false)
            .await
            .unwrap();
    }
    assert_foreign_files_intact(lake.path());
}

/// A server whose next link carries the token in `auth_token` and in `sig`, that answers
/// the first request for each later page with a 503 (so that the retry is logged), and that
/// echoes a rejected token in its 401 body.
async fn leaky_server() -> String {
    type Seen = std::sync::Arc<std::sync::Mutex<std::collections::HashSet<String>>>;
    async fn serve(
        State((token, seen)): State<(String, Seen)>,
        uri: Uri,
        headers: HeaderMap,
    ) -> impl IntoResponse {
        let sent = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        if sent != token {
            return (
                StatusCode::UNAUTHORIZED,
                HeaderMap::new(),
                format!("{{\"errors\": [\"bad token {sent}\"]}}"),
            );
        }
        let page: u32 = uri
            .query()
            .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("page=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        if page > 1 && seen.lock().unwrap().insert(uri.to_string()) {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                HeaderMap::new(),
                String::new(),
            );
        }
        let mut links = HeaderMap::new();
        if page < 3 {
            let next = format!(
                "<http://{}/user/organizations?page={}&auth_token={token}&sig={token}>; rel=\"next\"",
                headers
                    .get("host")
                    .and_then(|h| h.to_str().ok())
                    .unwrap_or_default(),
                page + 1
            );
            links.insert("link", next.parse().unwrap());
        }
        let body = format!("{{\"data\": [{{\"id\": \"org-{page}\", \"name\": \"n\"}}]}}");
        (StatusCode::OK, links, body)
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .fallback(serve)
        .with_state((TOKEN.to_owned(), Seen::default()));
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

fn one_resource_pipeline(dir: &Path) -> PathBuf {
    let file = dir.join("orgs.toml");
    std::fs::write(
        &file,
        r#"
name = "orgs"
destination = "./unused"
[client]
base_url = "https://api.example.com"
[client.auth]
type = "api_key"
name = "Authorization"
api_key = "{{ secrets.auth_token }}"
[[resources]]
name = "organizations"
primary_key = "id"
write_disposition = "merge"
[resources.endpoint]
path = "/user/organizations"
data_selector = "data"
[resources.endpoint.paginator]
type = "header_link"
"#,
    )
    .unwrap();
    file
}

/// Every file of the lake that holds `needle`.
fn files_holding(lake: &Path, needle: &str) -> Vec<PathBuf> {
    files_under(lake)
        .into_iter()
        .filter(|f| {
            std::fs::read(f)
                .unwrap()
                .windows(needle.len())
                .any(|w| w == needle.as_bytes())
        })
        .collect()
}

// Issue 12: a next link carrying `?auth_token=<token>&sig=<token>` put the token into the
// stored resume URL; a token under four characters echoed in a 401 went to stderr and into
// the run report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_reaches_a_file_of_the_lake_or_an_error() {
    let base = leaky_server().await;
    let dir = tempfile::tempdir().unwrap();
    let file = one_resource_pipeline(dir.path());
    let lake = dir.path().join("lake");

    // Stopped after one page: the resume point is stored, without the credentials.
    let p = load(&file, &base, &lake, TOKEN);
    let options = RunOptions {
        max_pages: Some(1),
        ..RunOptions::default()
    };
    let report = pipeline::run(&p, &options).await.unwrap();
    assert_eq!(report.rows["organizations"], 1);
    let state = Lake::open(lake.to_str().unwrap())
        .unwrap()
        .read_rows(pipeline::STATE_TABLE)
        .await
        .unwrap()
        .unwrap();
    let resume = state[0]["resume_url"].as_str().unwrap().to_owned();
    assert!(resume.ends_with("/user/organizations?page=2"), "{resume}");
    // The next run resumes there and finishes, the server still seeing the token.
    let report = run(&p).await.unwrap();
    assert_eq!(report.rows["organizations"], 2);
    assert_eq!(files_holding(&lake, TOKEN), Vec::<PathBuf>::new());

    // A short wrong token, echoed by the server: redacted in the error and the report.
    let short = "Zq9";
    let bad = load(&file, &base, &dir.path().join("lake2"), short);
    let err = run(&bad).await.unwrap_err();
    let chain = pipeline::error_chain(&err);
    assert!(chain.contains("401"), "{chain}");
    assert!(!chain.contains(short), "{chain}");
    assert_eq!(
        files_holding(&dir.path().join("lake2"), short),
        Vec::<PathBuf>::new()
    );

    // The same runs in a process of their own, every log line on: no line holds a token.
    for (token, lake, ok) in [(TOKEN, "lake3", true), (short, "lake4", false)] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_run-pipeline"))
            .arg(&file)
            .arg(&base)
            .arg(dir.path().join(lake))
            .env("AUTH_TOKEN", token)
            .env("ERRLAKE_LOG", "debug")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(output.status.success(), ok, "{text}");
        assert!(text.contains("retrying request") || !ok, "{text}");
        assert!(text.contains("401") || ok, "{text}");
        let leaks: Vec<&str> = text.lines().filter(|l| l.contains(token)).collect();
        assert!(leaks.is_empty(), "{leaks:#?}");
        assert_eq!(
            files_holding(&dir.path().join(lake), token),
            Vec::<PathBuf>::new()
        );
    }
}

/// The seed pipeline against the small mock, into a fresh folder.
async fn seed_pipeline() -> (MockHandle, tempfile::TempDir, pipeline::Pipeline) {
    let mock = MockHandle::start(MockConfig::small(TOKEN)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = load(
        &pipeline_file("errors.toml"),
        &mock.base_url(),
        dir.path(),
        TOKEN,
    );
    (mock, dir, p)
}

/// [`seed_pipeline`], run once.
async fn seed_pipeline_run() -> (MockHandle, tempfile::TempDir, pipeline::Pipeline) {
    let (mock, dir, p) = seed_pipeline().await;
    run(&p).await.unwrap();
    (mock, dir, p)
}

// Issue 12: with one data file of `events` missing, a failed run moved `errors` and its
// hashes, and its report said `commits: []`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_finds_a_data_file_gone_moves_no_table_and_says_the_way_out() {
    let (mock, dir, p) = seed_pipeline_run().await;
    let lake = Lake::open(dir.path().to_str().unwrap()).unwrap();
    let versions = |lake: Lake| async move {
        let mut out = std::collections::BTreeMap::new();
        for t in lake.table_names().await.unwrap() {
            let v = lake.table_info(&t).await.unwrap().unwrap().version;
            out.insert(t, v);
        }
        out
    };
    let before = versions(lake.clone()).await;
    let events = dir.path().join("events");
    let gone = std::fs::read_dir(&events)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "parquet"))
        .unwrap();
    std::fs::remove_file(&gone).unwrap();

    mock.set_revision(1);
    for _ in 0..2 {
        let err = run(&p).await.unwrap_err();
        let PipelineError::Sink(sink) = &err else {
            panic!("expected a sink error, got {err}");
        };
        let SinkError::MissingFiles { table, files, .. } = sink.as_ref() else {
            panic!("expected missing files, got {sink}");
        };
        assert_eq!(table, "events");
        assert_eq!(
            files,
            &vec![gone.file_name().unwrap().to_string_lossy().into_owned()]
        );
        assert!(err.to_string().contains("cargo xtask repair"), "{err}");
        assert_eq!(versions(lake.clone()).await, before, "a table moved");
        let reports = lake.load_reports(1).await.unwrap();
        assert_eq!(reports[0]["outcome"], "failed");
        assert_eq!(reports[0]["commits"], serde_json::json!([]));
    }

    // The way out: drop the file from the table; the next run loads again.
    let dropped = lake.repair("events").await.unwrap();
    assert_eq!(dropped.len(), 1);
    run(&p).await.unwrap();
}

// Issue 12: a parent id of `..` made `/projects/{{ project_id }}/saved_searches` into
// `GET /saved_searches`, with the credentials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_value_of_dot_dot_sends_nothing_outside_its_path() {
    async fn serve(uri: Uri) -> impl IntoResponse {
        let body = match uri.path() {
            "/user/organizations" => r#"{"data": [{"id": ".."}]}"#,
            _ => r#"{"data": []}"#,
        };
        (StatusCode::OK, body)
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let log = seen.clone();
    let app = axum::Router::new().fallback(move |uri: Uri| {
        log.lock().unwrap().push(uri.path().to_owned());
        serve(uri)
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    let dir = tempfile::tempdir().unwrap();
    let p = load(
        &pipeline_file("errors.toml"),
        &format!("http://{addr}"),
        dir.path(),
        TOKEN,
    );
    let err = run(&p).await.unwrap_err().to_string();
    assert!(
        err.contains("partition value `..` of `organization_id` (the `id` of a `organizations` record) cannot be a path segment"),
        "{err}"
    );
    assert_eq!(
        *seen.lock().unwrap(),
        vec!["/user/organizations".to_owned()]
    );
}

/// One page of `n_records` organizations whose `metaData` holds `n_keys` distinct keys each.
fn wide_page(n_records: usize, n_keys: usize) -> String {
    let records: Vec<serde_json::Value> = (0..n_records)
        .map(|r| {
            let meta: serde_json::Map<String, serde_json::Value> = (0..n_keys)
                .map(|k| {
                    (
                        format!("custom_key_{k}"),
                        serde_json::json!(format!("v{r}-{k}")),
                    )
                })
                .collect();
            serde_json::json!({"id": format!("org-{r}"), "metaData": meta})
        })
        .collect();
    serde_json::json!({ "data": records }).to_string()
}

/// Runs a one-resource pipeline in a process of its own and returns its peak memory.
fn peak_rss_of_run(file: &Path, base: &str, lake: &Path) -> u64 {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_run-pipeline"))
        .arg(file)
        .arg(base)
        .arg(lake)
        .env("AUTH_TOKEN", TOKEN)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("peak_rss_bytes="))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no peak memory reported: {stdout}"))
}

// Issue 12: about 115 KB per column, so a record with 10,000 distinct keys peaked at 1.2 GB,
// and every later run into that table paid it again (1.1 GB for 10 rows).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_of_ten_thousand_keys_costs_tens_of_megabytes() {
    let round = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let pages = std::sync::Arc::new([wide_page(1, 10_000), wide_page(10, 10)]);
    let (r, p) = (round.clone(), pages.clone());
    let app = axum::Router::new().fallback(move || {
        let body = p[r.load(std::sync::atomic::Ordering::SeqCst)].clone();
        async move { body }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(one_resource_pipeline(dir.path()))
        .unwrap()
        .replace("type = \"header_link\"", "type = \"single_page\"");
    let mb = |b: u64| b as f64 / 1e6;
    let columns = |lake: PathBuf| async move {
        Lake::open(lake.to_str().unwrap())
            .unwrap()
            .table_info("organizations")
            .await
            .unwrap()
            .unwrap()
            .columns
    };

    // As shipped: past `max_table_columns` the object is kept whole as JSON text.
    let file = dir.path().join("default.toml");
    std::fs::write(&file, &text).unwrap();
    let lake = dir.path().join("lake-default");
    let peak = peak_rss_of_run(&file, &base, &lake);
    let cols = columns(lake).await;
    assert!(cols.len() < 20, "{cols:?}");
    assert!(cols.iter().any(|(name, _)| name == "meta_data"), "{cols:?}");
    assert!(peak < 200_000_000, "peaked at {:.0} MB", mb(peak));

    // The limit raised past the record's width: 10,000 columns are really made. The heap
    // peaks at about 70 MB (heaptrack), most of it delta-rs's handling of the wide schema;
    // the rest of the resident memory is what the allocator keeps between the stages.
    let file = dir.path().join("wide.toml");
    std::fs::write(
        &file,
        format!("{text}\n[normalize]\nmax_table_columns = 20000\n"),
    )
    .unwrap();
    let lake = dir.path().join("lake-wide");
    let first = peak_rss_of_run(&file, &base, &lake);
    round.store(1, std::sync::atomic::Ordering::SeqCst);
    let later = peak_rss_of_run(&file, &base, &lake);
    let cols = columns(lake).await.len();
    assert!(cols > 10_000, "{cols} columns");
    eprintln!(
        "10,000 keys: {:.0} MB as JSON text; as 10,000 columns {:.0} MB, a later run of 10 rows {:.0} MB",
        mb(peak),
        mb(first),
        mb(later)
    );
    assert!(
        first < 300_000_000,
        "first run peaked at {:.0} MB",
        mb(first)
    );
    assert!(
        later < 300_000_000,
        "later run peaked at {:.0} MB",
        mb(later)
    );
}

// Issue 12: a corrupt `_delta_log` commit printed hundreds of backtrace lines under
// RUST_BACKTRACE=1 and never named the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_commit_file_is_named_in_one_line() {
    let (_mock, dir, p) = seed_pipeline_run().await;
    let commit = dir
        .path()
        .join("events/_delta_log/00000000000000000001.json");
    std::fs::write(&commit, "{\"add\": {\"path\": \"x\", broken\n").unwrap();
    let err = run(&p).await.unwrap_err();
    let text = pipeline::error_chain(&err);
    assert!(
        text.starts_with("sink: the Delta log of table `events` cannot be read: file://"),
        "{text}"
    );
    assert!(
        text.contains("events/_delta_log/00000000000000000001.json: line 1 is not JSON"),
        "{text}"
    );
    assert!(!text.contains('\n'), "{text}");
}

// Issue 12: one value the parser cannot read (here a lone surrogate escape) failed the run;
// now it fails its page, naming the byte, and `--keep-going` lands every other partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_with_an_unreadable_value_fails_only_its_partition() {
    let (mock, _dir, p) = seed_pipeline().await;
    let project = mock_api::data::object_id(7, 2, &[0, 1]);
    let body = r#"{"data": [{"id": "e1", "message": "\ud800"}]}"#;
    mock.add_fault(mock_api::Fault {
        path_contains: format!("/projects/{project}/events"),
        offset: 50,
        status: 200,
        body: body.into(),
        retry_after: None,
        times: usize::MAX,
    });
    let options = RunOptions {
        keep_going: true,
        ..RunOptions::default()
    };
    let report = pipeline::run(&p, &options).await.unwrap();
    assert_eq!(report.outcome, pipeline::Outcome::PartiallyFailed);
    assert_eq!(report.failed.len(), 1, "{:?}", report.failed);
    let failed = &report.failed[0];
    assert_eq!(failed.resource, "events");
    assert!(failed.partition.contains(&project), "{failed:?}");
    assert!(
        failed.error.contains("page 2 of `events[")
            && failed.error.contains(&format!(
                "is not valid JSON at byte {}",
                body.find('\\').unwrap()
            )),
        "{}",
        failed.error
    );
    // The other five projects' events landed whole, and the failed one's first page.
    assert_eq!(report.rows["events"], 5 * 75 + 50);
}
