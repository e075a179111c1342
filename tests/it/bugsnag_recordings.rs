//! `pipelines/bugsnag.toml` against real recorded Bugsnag responses, served from loopback
//! with the recorded headers (the `Link` host rewritten to the local server).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::support::{load, pipeline_file, read_with_python, run, test_data};

const TOKEN: &str = "token BUGSNAG_AUTH_TOKEN";

struct Recorded {
    base: String,
    organizations: String,
    projects: String,
    errors: String,
    events_page1: String,
    events_link: String,
    requests: AtomicUsize,
}

fn data(name: &str) -> String {
    test_data("bugsnag", name)
}

async fn serve(
    State(r): State<Arc<Recorded>>,
    uri: Uri,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    r.requests.fetch_add(1, Ordering::SeqCst);
    let header = |k: &str| headers.get(k).and_then(|v| v.to_str().ok()).unwrap_or("");
    if header("authorization") != TOKEN || header("x-version") != "2" {
        return (StatusCode::UNAUTHORIZED, "{\"errors\":[\"Unauthorized\"]}").into_response();
    }
    let path = uri.path();
    let query = query.unwrap_or_default();
    let body = if path == "/user/organizations" {
        r.organizations.clone()
    } else if path == "/organizations/BUGSNAG_ORG_ID/projects" {
        r.projects.clone()
    } else if path.starts_with("/organizations/") {
        "[]".to_owned()
    } else if path.ends_with("/errors") {
        r.errors.clone()
    } else if path.ends_with("/saved_searches") {
        "[]".to_owned()
    } else if path.ends_with("/events") && !query.contains("offset%5Bcount%5D=63") {
        assert!(query.contains("full_reports=true"), "{query}");
        let mut response = r.events_page1.clone().into_response();
        let link = r.events_link.replace("https://api.bugsnag.com", &r.base);
        response
            .headers_mut()
            .insert("link", HeaderValue::from_str(&link).unwrap());
        response
            .headers_mut()
            .insert("x-total-count", HeaderValue::from_static("475"));
        return response;
    } else if path.ends_with("/events") {
        // The recorded next page was not recorded: an empty last page.
        "[]".to_owned()
    } else {
        return StatusCode::NOT_FOUND.into_response();
    };
    ([("content-type", "application/json; charset=utf-8")], body).into_response()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bugsnag_pipeline_lands_the_recorded_responses() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let envelope: serde_json::Value =
        serde_json::from_str(&data("events.list.real-2017.page1.http.json")).unwrap();
    let recorded = Arc::new(Recorded {
        base: base.clone(),
        organizations: data("organizations.list.real-2017.json"),
        projects: data("projects.list.real-2017.json"),
        errors: data("errors.list.real-2017.json"),
        events_page1: data("events.list.real-2017.page1.json"),
        events_link: envelope["headers"]["Link"].as_str().unwrap().to_owned(),
        requests: AtomicUsize::new(0),
    });
    let app = Router::new()
        .fallback(get(serve))
        .with_state(recorded.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let lake = tempfile::tempdir().unwrap();
    let p = load(&pipeline_file("bugsnag.toml"), &base, lake.path(), TOKEN);
    let report = run(&p).await.unwrap();

    let read = read_with_python(
        lake.path(),
        &[
            "organizations",
            "projects",
            "errors",
            "events",
            "events__exceptions",
        ],
    );
    assert_eq!(
        (
            read["organizations"].rows,
            read["organizations"].distinct_keys
        ),
        (10, 10)
    );
    assert_eq!(
        (read["projects"].rows, read["projects"].distinct_keys),
        (30, 30)
    );
    // Every project answered the same recorded error and events: merged on id, once each.
    assert_eq!((read["errors"].rows, read["errors"].distinct_keys), (1, 1));
    assert_eq!(
        (read["events"].rows, read["events"].distinct_keys),
        (63, 63)
    );
    assert_eq!(read["events__exceptions"].rows, 63);
    // Each project's events: the recorded page, then its nested-offset next link, then the end.
    assert_eq!(report.resources["events"].pages, 60);
    assert_eq!(report.resources["events"].records, 30 * 63);
}
