//! `pipelines/sentry.toml` against the Sentry-shaped mock: Sentry's paging, its implicit
//! unresolved-only issue list, full events, merges across runs.

use std::time::Duration;

use mock_api::sentry::{SentryLimits, resolved_issues};
use mock_api::{ApiShape, DataSize, MockConfig, MockHandle};

use crate::support::{column_by_id, load, pipeline_file, read_with_python, run};

const TOKEN: &str = "sntryu_it_6b1d";

/// 2 organizations x 3 projects; 230 events a project (three pages of at most 100), 40
/// issues a project (one page).
async fn sentry_mock() -> MockHandle {
    sentry_mock_of(230).await
}

/// The Sentry mock with `events` events a project.
async fn sentry_mock_of(events: usize) -> MockHandle {
    let config = MockConfig {
        seed: 11,
        size: DataSize {
            organizations: 2,
            projects_per_org: 3,
            saved_searches_per_project: 0,
            errors_per_project: 40,
            events_per_project: events,
        },
        authorization: format!("Bearer {TOKEN}"),
    };
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    MockHandle::serve(addr, config, ApiShape::Sentry)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentry_lands_every_issue_and_event_once_and_merges_a_changed_server() {
    let mock = sentry_mock().await;
    let base_url = format!("{}/api/0/", mock.base_url());
    let lake = tempfile::tempdir().unwrap();
    let p = load(&pipeline_file("sentry.toml"), &base_url, lake.path(), TOKEN);

    let first = run(&p).await.unwrap();
    let tables = ["organizations", "projects", "issues", "events"];
    let read = read_with_python(lake.path(), &tables);
    let (issues, resolved) = (40, resolved_issues(40, 0));
    for (table, expected) in [
        ("organizations", 2),
        ("projects", 6),
        ("issues", 6 * issues),
        ("events", 6 * 230),
    ] {
        let r = &read[table];
        assert_eq!(
            (r.rows as usize, r.distinct_keys as usize, r.version),
            (expected, expected, 0),
            "{table}"
        );
    }
    // Resolved issues came too: the pipeline sends `query`, without which Sentry lists
    // unresolved ones only.
    let status = column_by_id(lake.path(), "issues", "status");
    assert_eq!(
        status.values().filter(|s| *s == "resolved").count(),
        6 * resolved
    );
    assert!(resolved > 0);
    // Full events: their entries landed as child tables.
    assert!(
        first.rows["events__entries"] >= 6 * 230 * 3,
        "{:?}",
        first.rows
    );
    assert!(first.rows["events__tags"] >= 6 * 230 * 3);
    // Every paging stopped at `results="false"` without following that link; the events of
    // a project took three pages.
    assert_eq!(mock.requests_past_the_end(), 0, "{:?}", mock.request_log());
    let log = mock.request_log();
    let event_pages = log.iter().filter(|r| r.contains("/events/")).count();
    assert_eq!(event_pages, 6 * 3, "{log:?}");
    assert!(
        log.iter()
            .filter(|r| r.contains("/issues/"))
            .all(|r| r.contains("limit=100") && r.contains("query=")),
        "{log:?}"
    );

    // The server changes: issues resolved since (their `lastSeen` unmoved), events added,
    // a project renamed. The rerun merges on id; events come from each project's cursor on.
    mock.set_revision(1);
    let second = run(&p).await.unwrap();
    // Per project: the added events, the changed ones (revision 1 moves every tenth to a
    // new time), and the one at the cursor again.
    let added = (mock_api::count_at(230, 1) - 230) as u64;
    let changed = (0..230u64).filter(|k| k % 10 == 1).count() as u64;
    assert_eq!(
        second.resources["events"].records,
        6 * (added + changed + 1),
        "{:?}",
        second.resources["events"]
    );
    let read = read_with_python(lake.path(), &tables);
    let (issues_1, resolved_1) = (40, resolved_issues(40, 1));
    let events_1 = mock_api::count_at(230, 1);
    for (table, expected) in [
        ("projects", 6),
        ("issues", 6 * issues_1),
        ("events", 6 * events_1),
    ] {
        let r = &read[table];
        assert_eq!(
            (r.rows as usize, r.distinct_keys as usize, r.version),
            (expected, expected, 1),
            "{table}"
        );
    }
    // Organizations did not change: stored unchanged, no new version.
    assert_eq!(read["organizations"].version, 0);
    let status = column_by_id(lake.path(), "issues", "status");
    assert_eq!(
        status.values().filter(|s| *s == "resolved").count(),
        6 * resolved_1
    );
    assert!(resolved_1 > resolved);
    let names = column_by_id(lake.path(), "projects", "name");
    assert!(
        names.values().any(|n| n.contains("(renamed r1)")),
        "{names:?}"
    );

    // Nothing changed since: a rerun asks for events once per project (from its cursor:
    // the boundary event comes again) and for the issue pages, and commits no new version.
    let before = mock.request_log().len();
    run(&p).await.unwrap();
    let log = mock.request_log()[before..].to_vec();
    let events: Vec<&String> = log.iter().filter(|r| r.contains("/events/")).collect();
    assert_eq!(events.len(), 6, "{log:?}");
    assert!(events.iter().all(|r| r.contains("start=")), "{events:?}");
    assert_eq!(log.iter().filter(|r| r.contains("/issues/")).count(), 6);
    let again = read_with_python(lake.path(), &tables);
    for t in tables {
        assert_eq!(again[t].version, read[t].version, "{t}");
        assert_eq!(again[t].rows, read[t].rows, "{t}");
    }
    assert_eq!(mock.requests_past_the_end(), 0);
}

/// Sentry limits a caller by a window of requests and by requests in flight, and its 429s
/// carry no Retry-After. The run keeps to the announced concurrency, paces by the window's
/// headers, waits out the few 429s it gets until the window's reset, and lands everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentry_rate_and_concurrency_limits_are_kept() {
    let mock = sentry_mock_of(1000).await;
    mock.set_sentry_limits(Some(SentryLimits {
        requests_per_window: 20,
        window: Duration::from_secs(1),
        concurrent: 2,
        latency: Duration::from_millis(20),
    }));
    let base_url = format!("{}/api/0/", mock.base_url());
    let lake = tempfile::tempdir().unwrap();
    let p = load(&pipeline_file("sentry.toml"), &base_url, lake.path(), TOKEN);
    let report = run(&p).await.unwrap();
    let read = read_with_python(lake.path(), &["issues", "events"]);
    assert_eq!(read["events"].rows, 6 * 1000);
    assert_eq!(read["events"].distinct_keys, 6 * 1000);
    assert_eq!(read["issues"].rows, 6 * 40);
    let requests = mock.request_log().len() as u64;
    let limited = mock.rate_limited();
    // 1 + 2 + 6 issue pages + 60 event pages, and the retries of what was limited.
    assert_eq!(requests, 69 + limited, "{limited} limited");
    assert!(
        limited * 20 <= requests,
        "{limited} of {requests} requests were rate limited"
    );
    assert!(mock.peak_in_flight() <= 2, "{}", mock.peak_in_flight());
    let retries: u64 = report.resources.values().map(|r| r.retries).sum();
    assert_eq!(retries, limited);
}

/// A partition key from a nested field of the parent's records: each Sentry issue carries
/// its project as `project: {id, name, slug}`, so a child of `issues` can take
/// `project.slug`. Each project is fetched once, however many issues name it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_key_comes_from_a_nested_field_of_the_parent() {
    let mock = sentry_mock().await;
    let base_url = format!("{}/api/0/", mock.base_url());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sentry-nested.toml");
    let sentry = std::fs::read_to_string(pipeline_file("sentry.toml")).unwrap();
    let nested = r#"
[[resources]]
name = "events_by_issue_project"

[resources.endpoint]
path = "projects/{{ stream_partition['organization_slug'] }}/{{ stream_partition['issue_project'] }}/events/"

[resources.endpoint.params]
organization_slug = { type = "resolve", resource = "organizations", field = "slug" }
issue_project = { type = "resolve", resource = "issues", field = "project.slug" }
"#;
    std::fs::write(&file, format!("{sentry}{nested}")).unwrap();
    let lake = dir.path().join("lake");
    let p = load(&file, &base_url, &lake, TOKEN);
    let report = run(&p).await.unwrap();
    assert_eq!(report.resources["events_by_issue_project"].partitions, 6);
    let read = read_with_python(&lake, &["events", "events_by_issue_project"]);
    assert_eq!(read["events_by_issue_project"].rows, 6 * 230);
    assert_eq!(read["events_by_issue_project"].distinct_keys, 6 * 230);
}
