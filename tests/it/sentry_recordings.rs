//! `pipelines/sentry.toml` against Sentry's own example bodies and recorded headers, served
//! from loopback (the `Link` hosts and paths rewritten to the local server).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::Value;

use crate::support::{load, pipeline_file, read_with_python, run, run_python, test_data};

const TOKEN: &str = "sntrys_recorded_7c2e";
const ORG: &str = "the-interstellar-jurisdiction";
const PROJECT: &str = "prime-mover";

fn data(name: &str) -> String {
    test_data("sentry", name)
}

struct Recorded {
    base: String,
    requests: AtomicUsize,
    /// Answers to the second events page so far: the first is the recorded 429.
    second_page: AtomicUsize,
}

/// A JSON body with Sentry's last-page links (`results="false"` on both).
fn last_page(r: &Recorded, path: &str, body: String) -> Response {
    let link = format!(
        "<{0}{path}?&cursor=0:0:1>; rel=\"previous\"; results=\"false\"; cursor=\"0:0:1\", <{0}{path}?&cursor=0:100:0>; rel=\"next\"; results=\"false\"; cursor=\"0:100:0\"",
        r.base
    );
    let mut response = ([("content-type", "application/json")], body).into_response();
    response
        .headers_mut()
        .insert("link", HeaderValue::from_str(&link).unwrap());
    response
}

/// A recorded response (`http/<name>`): its status, headers and body, the `Link` pointed at
/// `path` on this server.
fn recorded(r: &Recorded, name: &str, path: &str, body: String) -> Response {
    let envelope: Value = serde_json::from_str(&data(&format!("http/{name}"))).unwrap();
    let status = StatusCode::from_u16(envelope["status"].as_u64().unwrap() as u16).unwrap();
    let body = match envelope.get("body") {
        Some(b) => b.to_string(),
        None => body,
    };
    let mut response = (status, body).into_response();
    for (k, v) in envelope["headers"].as_object().unwrap() {
        let v = v.as_str().unwrap().replace(
            "https://sentry.io/api/0/organizations/acme/issues/123456/events/",
            &format!("{}{path}", r.base),
        );
        response.headers_mut().insert(
            axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(&v).unwrap(),
        );
    }
    response
}

async fn serve(
    State(r): State<Arc<Recorded>>,
    uri: Uri,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    r.requests.fetch_add(1, Ordering::SeqCst);
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
    if auth != Some(&format!("Bearer {TOKEN}")) {
        return (StatusCode::UNAUTHORIZED, "{\"detail\":\"Invalid token\"}").into_response();
    }
    let path = uri.path().to_owned();
    let query = query.unwrap_or_default();
    let events = format!("/api/0/projects/{ORG}/{PROJECT}/events/");
    match path.as_str() {
        "/api/0/organizations/" => last_page(&r, &path, data("organizations.list.json")),
        p if p == format!("/api/0/organizations/{ORG}/projects/") => {
            last_page(&r, &path, data("projects.list.json"))
        }
        p if p == format!("/api/0/projects/{ORG}/{PROJECT}/issues/") => {
            assert!(
                query.contains("query="),
                "issues asked without `query`: {query}"
            );
            last_page(&r, &path, data("issues.project-list.json"))
        }
        p if p == events && !query.contains("cursor=0:100:0") => {
            assert!(query.contains("full=true"), "{query}");
            let full: Value = serde_json::from_str(&data("event.full.json")).unwrap();
            let body = Value::Array(vec![full]).to_string();
            recorded(&r, "link.first-page.http.json", &path, body)
        }
        p if p == events => {
            // The next page: first Sentry's concurrency 429 (no Retry-After, no reset), then
            // an empty last page.
            if r.second_page.fetch_add(1, Ordering::SeqCst) == 0 {
                return recorded(&r, "429.concurrent.http.json", &path, String::new());
            }
            last_page(&r, &path, "[]".to_owned())
        }
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sentry_pipeline_lands_sentrys_example_bodies() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let state = Arc::new(Recorded {
        base: base.clone(),
        requests: AtomicUsize::new(0),
        second_page: AtomicUsize::new(0),
    });
    let app = Router::new().fallback(get(serve)).with_state(state.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let lake = tempfile::tempdir().unwrap();
    let p = load(
        &pipeline_file("sentry.toml"),
        &format!("{base}/api/0/"),
        lake.path(),
        TOKEN,
    );
    let report = run(&p).await.unwrap();
    let tables = [
        "organizations",
        "projects",
        "issues",
        "events",
        "events__entries",
        "events__tags",
    ];
    let read = read_with_python(lake.path(), &tables);
    for t in ["organizations", "projects", "issues", "events"] {
        assert_eq!((read[t].rows, read[t].distinct_keys), (1, 1), "{t}");
    }
    // The typed entries (exception, breadcrumbs, request) and the tags as rows.
    assert_eq!(read["events__entries"].rows, 3);
    assert!(read["events__tags"].rows > 0);
    // The recorded 429 was waited out and retried once; the events paging took the first
    // page, the limited request, and the last page.
    assert_eq!(report.resources["events"].retries, 1);
    assert_eq!(report.resources["events"].pages, 2);
    assert_eq!(state.requests.load(Ordering::SeqCst), 1 + 1 + 1 + 3);

    // Sentry's types land without loss: ids as text, `count` as text beside `userCount` as
    // a number, the event's 32-hex id, microseconds kept.
    let script = r#"
import json, sys
from deltalake import DeltaTable
lake = sys.argv[1]
issues = DeltaTable(f"{lake}/issues").to_pyarrow_table()
events = DeltaTable(f"{lake}/events").to_pyarrow_table()
out = {
    "issue_id": str(issues.schema.field("id").type),
    "count": [str(issues.schema.field("count").type), issues.column("count")[0].as_py()],
    "user_count": str(issues.schema.field("user_count").type),
    "event_id": events.column("id")[0].as_py(),
    "date_received": str(events.column("date_received")[0].as_py()),
}
print(json.dumps(out), flush=True)
import os; os._exit(0)
"#;
    let types: Value = run_python(script, &[&lake.path().display().to_string()]);
    assert_eq!(types["issue_id"], "string");
    assert_eq!(types["count"][0], "string");
    assert_eq!(types["user_count"], "int64");
    assert_eq!(types["event_id"], "9999aaafcc8b46d797c23c6077c6ff01");
    // `2020-06-17T22:26:56.428721Z`, to the microsecond.
    assert!(
        types["date_received"]
            .as_str()
            .unwrap()
            .starts_with("2020-06-17 22:26:56.428721"),
        "{types}"
    );
}
