//! Property: for random trees of organizations and projects, random page counts and random
//! retryable faults, every page of every partition reaches the pages channel exactly once,
//! and no record is lost or duplicated.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use mock_api::{DataSize, Fault, MockConfig, MockHandle};
use proptest::prelude::*;
use source_errors::{Page, RunOptions, Secrets};

use crate::support::pipeline_file;

/// A fault on one page: which resource, which page, which status, how many times in a row.
#[derive(Debug, Clone)]
struct PageFault {
    resource: &'static str,
    page: usize,
    status: u16,
    times: usize,
}

fn page_fault() -> impl Strategy<Value = PageFault> {
    (
        prop::sample::select(vec![
            "/organizations/",
            "/errors",
            "/events",
            "/user/organizations",
        ]),
        0usize..3,
        prop::sample::select(vec![429u16, 500, 502, 503, 504]),
        1usize..=3,
    )
        .prop_map(|(resource, page, status, times)| PageFault {
            resource,
            page,
            status,
            times,
        })
}

/// The source of `pipelines/errors.toml` against `base_url`, after `tweak` edits its keys.
fn seed_source(
    base_url: &str,
    tweak: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>),
) -> Arc<source_errors::Source> {
    let mut value = source_errors::read_pipeline_value(&pipeline_file("errors.toml")).unwrap();
    let object = value.as_object_mut().unwrap();
    for key in ["name", "destination"] {
        object.remove(key);
    }
    object["client"]["base_url"] = serde_json::json!(base_url);
    tweak(object);
    let secrets = Secrets::from_map([("auth_token".to_owned(), "t".to_owned())]);
    Arc::new(source_errors::Source::from_value(value, "errors.toml".as_ref(), &secrets).unwrap())
}

/// Runs the source to the end and returns every page it sent.
async fn run_source(source: Arc<source_errors::Source>) -> Vec<Page> {
    let client = http_core::Client::new(source.client.clone()).unwrap();
    let (pages_tx, pages_rx) = async_channel::bounded(4);
    let collect = tokio::spawn(async move {
        let mut pages = Vec::new();
        while let Ok(p) = pages_rx.recv().await {
            pages.push(p);
        }
        pages
    });
    let options = RunOptions::default();
    source_errors::run(source, client, pages_tx, options)
        .await
        .unwrap();
    collect.await.unwrap()
}

async fn fetch_all(size: DataSize, faults: &[PageFault]) -> (Vec<Page>, MockHandle) {
    let mock = MockHandle::start(MockConfig {
        seed: 11,
        size,
        authorization: "t".into(),
    })
    .await
    .unwrap();
    for f in faults {
        mock.add_fault(Fault {
            path_contains: f.resource.into(),
            offset: f.page * 50,
            status: f.status,
            body: "<html>try again</html>".into(),
            retry_after: Some("0".into()),
            times: f.times,
        });
    }
    let source = seed_source(&mock.base_url(), |object| {
        object["client"]["retry"] =
            serde_json::json!({"backoff_base_secs": 0.001, "backoff_max_secs": 0.005});
    });
    (run_source(source).await, mock)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn every_page_arrives_once_and_no_record_is_lost_or_duplicated(
        organizations in 1usize..4,
        projects_per_org in 1usize..4,
        errors_per_project in 0usize..120,
        events_per_project in 0usize..160,
        faults in prop::collection::vec(page_fault(), 0..6),
    ) {
        let size = DataSize { organizations, projects_per_org, saved_searches_per_project: 2, errors_per_project, events_per_project };
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        // At most one fault per page (the patterns match disjoint paths), so that each
        // stays within the 3 retries.
        let mut seen_pages = BTreeSet::new();
        let faults: Vec<PageFault> = faults.into_iter().filter(|f| seen_pages.insert((f.resource, f.page))).collect();
        let (pages, mock) = runtime.block_on(fetch_all(size.clone(), &faults));

        // Each (resource, partition, page) once.
        let mut seen = BTreeSet::new();
        for p in &pages {
            prop_assert!(seen.insert((p.resource.to_string(), p.partition.to_string(), p.page_idx)), "page twice: {} {} {}", p.resource, p.partition, p.page_idx);
        }
        // Every record once, and all of them.
        let mut ids: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut n_records: BTreeMap<String, usize> = BTreeMap::new();
        for p in &pages {
            *n_records.entry(p.resource.to_string()).or_default() += p.records.len();
            for r in p.records.iter() {
                ids.entry(p.resource.to_string()).or_default().insert(r.get("id").and_then(|v| v.as_key_text()).unwrap().into_owned());
            }
        }
        for (resource, expected) in mock.expected_counts() {
            prop_assert_eq!(n_records.get(resource).copied().unwrap_or(0), expected, "records of {}", resource);
            prop_assert_eq!(ids.get(resource).map_or(0, BTreeSet::len), expected, "distinct ids of {}", resource);
        }
        // The page count of each paging is what 50 a page makes.
        let n_projects = organizations * projects_per_org;
        let pages_of = |resource: &str| pages.iter().filter(|p| &*p.resource == resource).count();
        prop_assert_eq!(pages_of("events"), n_projects * events_per_project.div_ceil(50).max(1));
        prop_assert_eq!(pages_of("errors"), n_projects * errors_per_project.div_ceil(50).max(1));
    }
}

/// A server of the seed's shape that counts the requests in flight per endpoint kind.
mod in_flight {
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::time::Duration;

    use axum::extract::State;
    use axum::http::Uri;
    use std::sync::Arc;

    #[derive(Default)]
    pub(super) struct Counts {
        pub(super) now: Mutex<HashMap<&'static str, usize>>,
        pub(super) max: Mutex<HashMap<&'static str, usize>>,
    }

    fn kind(path: &str) -> &'static str {
        [
            "saved_searches",
            "errors",
            "events",
            "projects",
            "organizations",
        ]
        .into_iter()
        .find(|k| path.ends_with(k))
        .unwrap_or("other")
    }

    pub(super) async fn handle(
        State(counts): State<Arc<Counts>>,
        uri: Uri,
    ) -> axum::Json<serde_json::Value> {
        let k = kind(uri.path());
        {
            let mut now = counts.now.lock().unwrap();
            let n = now.entry(k).or_default();
            *n += 1;
            let mut max = counts.max.lock().unwrap();
            let m = max.entry(k).or_default();
            *m = (*m).max(*n);
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
        *counts.now.lock().unwrap().get_mut(k).unwrap() -= 1;
        let data = match k {
            "organizations" => serde_json::json!([{"id": "o1"}]),
            "projects" => serde_json::json!(
                (0..6)
                    .map(|i| serde_json::json!({"id": format!("p{i}")}))
                    .collect::<Vec<_>>()
            ),
            _ => serde_json::json!([{"id": format!("{}-1", uri.path())}]),
        };
        axum::Json(serde_json::json!({ "data": data }))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resource_concurrency_limits_its_requests_in_flight() {
    let counts = Arc::new(in_flight::Counts::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new()
        .fallback(axum::routing::get(in_flight::handle))
        .with_state(counts.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let source = seed_source(&base, |object| {
        object.insert("concurrency".into(), serde_json::json!(6));
        object["client"]["rate_limit"] = serde_json::json!({"max_concurrent_per_host": 6});
        object["resources"][4]["concurrency"] = serde_json::json!(1);
        assert_eq!(object["resources"][4]["name"], "events");
    });
    let pages = run_source(source).await;
    assert_eq!(pages.len(), 1 + 1 + 6 * 3);
    let max = counts.max.lock().unwrap().clone();
    assert_eq!(max["events"], 1, "{max:?}");
    assert!(
        max["errors"] > 1,
        "the other resources run in parallel: {max:?}"
    );
}
