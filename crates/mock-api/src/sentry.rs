//! The Sentry-shaped mock: Web API v0's organizations, projects, issues and events under
//! `/api/0/`, with Sentry's habits a client must handle.
//!
//! - Records in Sentry's shapes (`../shared/api/api-facts.md` §2.3): numeric-string ids,
//!   32-hex event ids, `count` as a string beside `userCount` as a number, `tags` as
//!   `{key, value}` lists, keys with dots (`event.type`), and with `full=true` the typed
//!   `entries` (exception, breadcrumbs, request) and microsecond `dateReceived`.
//! - Paging by `cursor=0:<offset>:0` with a `Link` header that always names both
//!   `rel="previous"` and `rel="next"`; the end of data is `results="false"` on the next
//!   link, which still points past the end. Page size is `limit` on issues and `per_page`
//!   elsewhere (default 100); more than 100 is a 400, as Sentry answers.
//! - Issues without a `query` parameter are the unresolved ones only (Sentry's implicit
//!   `is:unresolved`); `query=` (empty) lists them all. Events take `start` and `end`
//!   (ISO 8601) and come newest first.
//! - `X-Sentry-Rate-Limit-*` headers on every answer.
//!
//! Revision 1 ([`crate::MockHandle::set_revision`]) resolves every fifth issue without
//! moving its `lastSeen` (as Sentry does) and adds events.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use crate::data::{self, count_at, cursor_millis, hash_str};
use crate::{Shared, check, push_json};

/// The routes of the Sentry shape.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/api/0/organizations/", get(organizations))
        .route("/api/0/organizations/{org}/projects/", get(projects))
        .route(
            "/api/0/projects/{org}/{project}/{resource}/",
            get(project_resource),
        )
        .with_state(shared)
}

/// An organization's slug.
pub fn organization_slug(i: usize) -> String {
    format!("org-{i}")
}

/// A project's slug.
pub fn project_slug(i: usize, j: usize) -> String {
    format!("project-{i}-{j}")
}

/// The numeric-string id of a project.
fn project_id(i: usize, j: usize) -> String {
    (4_500_000 + i * 1000 + j).to_string()
}

/// The numeric-string id of issue `k` of a project.
fn issue_id(i: usize, j: usize, k: usize) -> u64 {
    6_000_000_000 + (i * 1000 + j) as u64 * 100_000 + k as u64
}

/// Sentry's time format: `2023-11-14T22:13:20.123456Z`.
fn sentry_time(millis: i64, micros: u64) -> String {
    let base = data::format_millis(millis);
    // `…SS.mmmZ` -> `…SS.mmmuuuZ`.
    format!("{}{:03}Z", base.trim_end_matches('Z'), micros % 1000)
}

/// The query parameters of a request, decoded.
fn params(query: Option<&str>) -> Vec<(String, String)> {
    url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn param<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn detail(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "detail": message }))).into_response()
}

/// The request's offset: `cursor=<value>:<offset>:<is_prev>`.
fn cursor_offset(params: &[(String, String)]) -> usize {
    param(params, "cursor")
        .and_then(|c| c.split(':').nth(1))
        .and_then(|o| o.parse().ok())
        .unwrap_or(0)
}

/// One page of `total` records (the page size from `size_param`), with Sentry's Link and
/// rate-limit headers; `write` gives record `i` of the list.
fn page(
    shared: &Shared,
    admission: &Admission,
    path: &str,
    query: Option<&str>,
    size_param: &str,
    total: usize,
    write: impl Fn(usize) -> Value,
) -> Response {
    let params = params(query);
    let size = match param(&params, size_param).map(str::parse::<usize>) {
        None => 100,
        Some(Ok(n)) if (1..=100).contains(&n) => n,
        Some(_) => {
            return detail(
                StatusCode::BAD_REQUEST,
                &format!("Invalid {size_param} value. Cannot exceed 100."),
            );
        }
    };
    let offset = cursor_offset(&params);
    if offset > 0 && offset >= total {
        // Only a client that followed a `results="false"` link asks for this.
        shared.past_end.fetch_add(1, Ordering::SeqCst);
    }
    let end = (offset + size).min(total);
    let mut body = String::from("[");
    for (n, i) in (offset.min(end)..end).enumerate() {
        if n > 0 {
            body.push(',');
        }
        push_json(&mut body, &write(i));
    }
    body.push(']');
    let mut response = ([(header::CONTENT_TYPE, "application/json")], body).into_response();
    // The request's other parameters kept, `cursor` replaced; Sentry writes `?&cursor=`
    // when nothing else is left.
    let kept: Vec<String> = query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("cursor="))
        .map(str::to_owned)
        .collect();
    let link = |offset: usize, is_prev: u8, rel: &str, results: bool| {
        let cursor = format!("0:{offset}:{is_prev}");
        format!(
            "<{}{path}?{}&cursor={cursor}>; rel=\"{rel}\"; results=\"{results}\"; cursor=\"{cursor}\"",
            shared.base_url,
            kept.join("&")
        )
    };
    let links = format!(
        "{}, {}",
        link(offset.saturating_sub(size), 1, "previous", offset > 0),
        link(end, 0, "next", end < total)
    );
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&links) {
        h.insert(header::LINK, v);
    }
    h.insert("X-Hits", HeaderValue::from(total as u64));
    admission.headers(h);
    response
}

/// Limits the Sentry-shaped mock enforces, as Sentry's rate limiter does: a fixed window of
/// requests and a number of requests in flight, each answered past its limit with a 429 that
/// has no `Retry-After` (only the `X-Sentry-Rate-Limit-*` headers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SentryLimits {
    /// Requests per window, per caller.
    pub requests_per_window: u32,
    /// The window (whole seconds, aligned on the epoch).
    pub window: Duration,
    /// Requests in flight at most.
    pub concurrent: u32,
    /// How long each answer takes (so that requests overlap).
    pub latency: Duration,
}

/// The limiter's state: the window's start and count, the requests in flight, the 429s.
#[derive(Debug, Default)]
pub(crate) struct Limiter {
    limits: Mutex<Option<SentryLimits>>,
    /// The current window (its index since the epoch) and its requests so far.
    window: Mutex<Option<(u64, u32)>>,
    in_flight: Arc<AtomicU32>,
    /// The most requests in flight that were let in at once.
    peak_in_flight: AtomicU32,
    rate_limited: AtomicU64,
}

/// A request let in: the headers it answers with, and its place among those in flight.
pub(crate) struct Admission {
    limit: u32,
    remaining: u32,
    reset_epoch: u64,
    concurrent_limit: u32,
    concurrent_remaining: u32,
    latency: Duration,
    _in_flight: InFlight,
}

/// One request in flight, counted until it is answered.
struct InFlight(Arc<AtomicU32>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Admission {
    fn headers(&self, h: &mut HeaderMap) {
        for (name, value) in [
            ("X-Sentry-Rate-Limit-Limit", u64::from(self.limit)),
            ("X-Sentry-Rate-Limit-Remaining", u64::from(self.remaining)),
            ("X-Sentry-Rate-Limit-Reset", self.reset_epoch),
            (
                "X-Sentry-Rate-Limit-ConcurrentLimit",
                u64::from(self.concurrent_limit),
            ),
            (
                "X-Sentry-Rate-Limit-ConcurrentRemaining",
                u64::from(self.concurrent_remaining),
            ),
        ] {
            h.insert(name, HeaderValue::from(value));
        }
    }
}

impl Limiter {
    /// Lets a request in, or answers it with Sentry's 429.
    fn admit(&self) -> Result<Admission, Box<Response>> {
        let in_flight = InFlight(self.in_flight.clone());
        let now_in_flight = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        let limits = *self.limits.lock().unwrap_or_else(|p| p.into_inner());
        let epoch_now = chrono::Utc::now().timestamp().max(0) as u64;
        let Some(limits) = limits else {
            return Ok(Admission {
                limit: 1000,
                remaining: 999,
                reset_epoch: epoch_now + 1,
                concurrent_limit: 25,
                concurrent_remaining: 24,
                latency: Duration::ZERO,
                _in_flight: in_flight,
            });
        };
        // Fixed windows aligned on the epoch, as Sentry's limiter keeps them: the reset is
        // the end of the current one, in whole seconds.
        let window_secs = limits.window.as_secs().max(1);
        let window_index = epoch_now / window_secs;
        let count = {
            let mut window = self.window.lock().unwrap_or_else(|p| p.into_inner());
            let count = match *window {
                Some((index, count)) if index == window_index => count + 1,
                _ => 1,
            };
            *window = Some((window_index, count));
            count
        };
        let admission = Admission {
            limit: limits.requests_per_window,
            remaining: limits.requests_per_window.saturating_sub(count),
            reset_epoch: (window_index + 1) * window_secs,
            concurrent_limit: limits.concurrent,
            concurrent_remaining: limits.concurrent.saturating_sub(now_in_flight),
            latency: limits.latency,
            _in_flight: in_flight,
        };
        let message = if count > limits.requests_per_window {
            Some(format!(
                "You are attempting to use this endpoint too frequently. Limit is {} requests in {} seconds",
                limits.requests_per_window,
                limits.window.as_secs()
            ))
        } else if now_in_flight > limits.concurrent {
            Some(format!(
                "You are attempting to go above the allowed concurrency for this endpoint. Concurrency limit is {}",
                limits.concurrent
            ))
        } else {
            None
        };
        let Some(message) = message else {
            self.peak_in_flight
                .fetch_max(now_in_flight, Ordering::SeqCst);
            return Ok(admission);
        };
        self.rate_limited.fetch_add(1, Ordering::SeqCst);
        // A plain Django response: `{"detail": ...}` as text/html, no Retry-After.
        let mut response = (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            json!({ "detail": message }).to_string(),
        )
            .into_response();
        admission.headers(response.headers_mut());
        Err(Box::new(response))
    }

    /// Enforces `limits` from now on (`None`: no limits).
    pub(crate) fn set_limits(&self, limits: Option<SentryLimits>) {
        *self.limits.lock().unwrap_or_else(|p| p.into_inner()) = limits;
    }

    /// Requests answered with a 429 so far.
    pub(crate) fn rate_limited(&self) -> u64 {
        self.rate_limited.load(Ordering::SeqCst)
    }

    /// The most requests in flight that were let in at once (under limits).
    pub(crate) fn peak_in_flight(&self) -> u32 {
        self.peak_in_flight.load(Ordering::SeqCst)
    }
}

/// Checks the token and the rate limits, logs and counts the request, and waits the
/// answer's latency; the offset is the cursor's.
async fn checked(
    s: &Shared,
    headers: &HeaderMap,
    path: &str,
    query: Option<&str>,
) -> Result<Admission, Response> {
    s.log_request(path, query);
    if let Some(r) = check(s, headers, path, cursor_offset(&params(query))) {
        return Err(r);
    }
    let admission = s.sentry.admit().map_err(|r| *r)?;
    if !admission.latency.is_zero() {
        tokio::time::sleep(admission.latency).await;
    }
    Ok(admission)
}

async fn organizations(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let path = "/api/0/organizations/";
    let admission = match checked(&s, &headers, path, q.as_deref()).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let seed = s.config.seed;
    page(
        &s,
        &admission,
        path,
        q.as_deref(),
        "per_page",
        s.config.size.organizations,
        |i| organization(seed, i, &s.base_url),
    )
}

async fn projects(
    State(s): State<Arc<Shared>>,
    Path(org): Path<String>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let path = format!("/api/0/organizations/{org}/projects/");
    let admission = match checked(&s, &headers, &path, q.as_deref()).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let Some(i) = (0..s.config.size.organizations).find(|&i| organization_slug(i) == org) else {
        return detail(
            StatusCode::NOT_FOUND,
            "The requested resource does not exist",
        );
    };
    let (seed, rev) = (s.config.seed, s.revision.load(Ordering::SeqCst));
    page(
        &s,
        &admission,
        &path,
        q.as_deref(),
        "per_page",
        s.config.size.projects_per_org,
        |j| project(seed, i, j, rev),
    )
}

/// `/api/0/projects/{org}/{project}/{issues|events}/`.
async fn project_resource(
    State(s): State<Arc<Shared>>,
    Path((org, slug, resource)): Path<(String, String, String)>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let path = format!("/api/0/projects/{org}/{slug}/{resource}/");
    let admission = match checked(&s, &headers, &path, q.as_deref()).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let size = &s.config.size;
    let found = (0..size.organizations)
        .flat_map(|i| (0..size.projects_per_org).map(move |j| (i, j)))
        .find(|&(i, j)| organization_slug(i) == org && project_slug(i, j) == slug);
    let Some((i, j)) = found else {
        return detail(
            StatusCode::NOT_FOUND,
            "The requested resource does not exist",
        );
    };
    let (seed, rev) = (s.config.seed, s.revision.load(Ordering::SeqCst));
    let query = params(q.as_deref());
    let n_issues = size.errors_per_project;
    match resource.as_str() {
        "issues" => {
            // Without `query`, Sentry lists unresolved issues only.
            let all = param(&query, "query").is_some();
            let kept: Vec<usize> = (0..n_issues)
                .filter(|&k| all || issue_status(k, rev) != "resolved")
                .collect();
            page(
                &s,
                &admission,
                &path,
                q.as_deref(),
                "limit",
                kept.len(),
                |n| issue(seed, i, j, kept[n], rev),
            )
        }
        "events" => {
            let base = size.events_per_project;
            let total = count_at(base, rev);
            let parts = |k: usize| [17, hash_str(&slug), k as u64];
            let millis = |k: usize| cursor_millis(seed, &parts(k), k, base, rev);
            let bound = |key: &str| {
                param(&query, key)
                    .and_then(|v| chrono::DateTime::parse_from_rfc3339(v).ok())
                    .map(|t| t.timestamp_millis())
            };
            let (start, end) = (bound("start"), bound("end"));
            // Newest first, as Sentry lists them.
            let mut kept: Vec<(i64, usize)> = (0..total)
                .map(|k| (millis(k), k))
                .filter(|&(t, _)| start.is_none_or(|s| t >= s) && end.is_none_or(|e| t <= e))
                .collect();
            kept.sort_unstable_by(|a, b| b.cmp(a));
            let full = param(&query, "full") == Some("true");
            page(
                &s,
                &admission,
                &path,
                q.as_deref(),
                "per_page",
                kept.len(),
                |n| {
                    let (t, k) = kept[n];
                    event(seed, (i, j), k, t, n_issues, full)
                },
            )
        }
        _ => detail(
            StatusCode::NOT_FOUND,
            "The requested resource does not exist",
        ),
    }
}

/// Organization `i`.
fn organization(seed: u64, i: usize, base_url: &str) -> Value {
    let slug = organization_slug(i);
    json!({
        "avatar": {"avatarType": "letter_avatar", "avatarUuid": null},
        "dateCreated": data::format_millis(1_600_000_000_000 + (seed % 1000) as i64 + i as i64 * 86_400_000),
        "features": ["performance-view", "session-replay"],
        "hasAuthProvider": false,
        "id": (1000 + i).to_string(),
        "isEarlyAdopter": i.is_multiple_of(2),
        "allowMemberInvite": true,
        "allowMemberProjectCreation": true,
        "allowSuperuserAccess": false,
        "links": {"organizationUrl": format!("{base_url}/{slug}"), "regionUrl": base_url},
        "name": format!("Organization {i}"),
        "require2FA": false,
        "slug": slug,
        "status": {"id": "active", "name": "active"},
    })
}

/// Project `j` of organization `i`.
fn project(seed: u64, i: usize, j: usize, revision: u32) -> Value {
    let name = if revision > 0 && j == 0 {
        format!("Project {i}-{j} (renamed r{revision})")
    } else {
        format!("Project {i}-{j}")
    };
    let platform = ["python", "javascript", "java"][j % 3];
    json!({
        "id": project_id(i, j),
        "slug": project_slug(i, j),
        "name": name,
        "platform": platform,
        "platforms": [platform],
        "dateCreated": data::format_millis(1_650_000_000_000 + (seed % 1000) as i64 + j as i64 * 3_600_000),
        "firstEvent": null,
        "isBookmarked": false,
        "isMember": true,
        "hasAccess": true,
        "access": ["project:read", "event:read"],
        "features": ["releases", "minidump"],
        "environments": ["production", "staging"],
        "team": {"id": (2000 + i).to_string(), "name": format!("Team {i}"), "slug": format!("team-{i}")},
        "teams": [{"id": (2000 + i).to_string(), "name": format!("Team {i}"), "slug": format!("team-{i}")}],
        "latestRelease": null,
    })
}

/// An issue's status at a revision: every fifth resolved at revision 1 and later, a few
/// resolved or ignored from the start.
fn issue_status(k: usize, revision: u32) -> &'static str {
    match k % 7 {
        3 => "resolved",
        5 => "ignored",
        _ if revision > 0 && k.is_multiple_of(5) => "resolved",
        _ => "unresolved",
    }
}

/// Issue `k` of project (i, j).
fn issue(seed: u64, i: usize, j: usize, k: usize, revision: u32) -> Value {
    let last_seen = 1_700_000_000_000 + (k as i64) * 3_600_000 + (seed % 1000) as i64;
    let status = issue_status(k, revision);
    let level = ["error", "warning", "fatal"][k % 3];
    json!({
        "id": issue_id(i, j, k).to_string(),
        "shortId": format!("PROJECT-{i}{j}-{k:X}"),
        "title": format!("TypeError: cannot read property 'x{k}' of undefined"),
        "culprit": format!("app/views/{k}.py in handler"),
        "permalink": format!("https://sentry.io/organizations/{}/issues/{}/", organization_slug(i), issue_id(i, j, k)),
        "logger": null,
        "level": level,
        "status": status,
        "statusDetails": if status == "resolved" { json!({"inRelease": "1.0.0"}) } else { json!({}) },
        "substatus": if status == "unresolved" { "ongoing" } else { status },
        "isPublic": false,
        "shareId": null,
        "type": "error",
        "count": (150 + k * 7).to_string(),
        "userCount": 10 + k,
        "numComments": k % 4,
        "firstSeen": sentry_time(last_seen - 86_400_000, k as u64),
        "lastSeen": sentry_time(last_seen, k as u64 * 7),
        "project": {"id": project_id(i, j), "name": format!("Project {i}-{j}"), "slug": project_slug(i, j), "platform": "python"},
        "metadata": {"type": "TypeError", "value": format!("cannot read property 'x{k}' of undefined")},
        "stats": {"24h": [[1_700_000_000 + k as i64 * 3600, k % 5], [1_700_003_600 + k as i64 * 3600, 0]]},
        "assignedTo": if k.is_multiple_of(4) { json!({"type": "user", "id": "1", "name": "Jane", "email": "jane@example.com"}) } else { Value::Null },
        "annotations": [],
        "isBookmarked": false,
        "isSubscribed": k.is_multiple_of(2),
        "hasSeen": true,
        "subscriptionDetails": null,
    })
}

/// Event `k` of project (i, j), created at `millis`: a list item, or with `full` the whole
/// event with its entries.
fn event(
    seed: u64,
    (i, j): (usize, usize),
    k: usize,
    millis: i64,
    n_issues: usize,
    full: bool,
) -> Value {
    let id = format!(
        "{:016x}{:016x}",
        hash_str(&format!("{seed}/{i}/{j}")),
        hash_str(&format!("{seed}/{i}/{j}/{k}"))
    );
    let group = issue_id(i, j, k % n_issues.max(1)).to_string();
    // Microseconds, which the `start` filter ignores (it compares milliseconds here, seconds
    // at Sentry): the newest event is at or after a cursor taken from it.
    let created = sentry_time(millis, (k % 997) as u64);
    let environment = ["production", "staging"][k % 2];
    let mut event = json!({
        "id": id,
        "eventID": id,
        "groupID": group,
        "projectID": project_id(i, j),
        "title": format!("TypeError: cannot read property 'x{}' of undefined", k % n_issues.max(1)),
        "message": "",
        "dateCreated": created,
        "platform": "python",
        "event.type": "error",
        "tags": [
            {"key": "level", "value": "error"},
            {"key": "environment", "value": environment},
            {"value": format!("1.{}.0", k % 4), "key": "release"},
        ],
        "user": if k.is_multiple_of(3) { Value::Null } else { json!({"id": format!("u{}", k % 50), "email": format!("user{}@example.com", k % 50), "ip_address": "127.0.0.1"}) },
        "crashFile": null,
        "location": format!("app/views/{}.py", k % 9),
        "culprit": format!("app/views/{}.py in handler", k % 9),
        "metadata": {"type": "TypeError", "value": "cannot read property"},
    });
    if full
        && let (Some(out), Value::Object(more)) = (
            event.as_object_mut(),
            full_event_fields(k, millis, n_issues),
        )
    {
        out.extend(more);
    }
    event
}

/// What a full event has beyond a list item: the typed entries (exception, breadcrumbs,
/// request), contexts, the SDK and the microsecond `dateReceived`.
fn full_event_fields(k: usize, millis: i64, n_issues: usize) -> Value {
    json!({
        "type": "error",
        "dateReceived": sentry_time(millis + 250, 123 + k as u64 % 800),
        "size": 4000 + k % 900,
        "errors": [],
        "entries": [
            {"type": "exception", "data": {"values": [{
                "type": "TypeError",
                "value": "cannot read property",
                "module": null,
                "mechanism": {"type": "generic", "handled": k.is_multiple_of(2)},
                "threadId": null,
                "stacktrace": {"frames": stack_frames(k)},
                "rawStacktrace": null,
            }]}},
            {"type": "breadcrumbs", "data": {"values": breadcrumbs(k, millis)}},
            {"type": "request", "data": {
                "url": format!("https://app.example.com/items/{k}"),
                "method": "GET",
                "query": [["page", "2"]],
                "headers": [["Accept", "application/json"], ["User-Agent", "Mozilla/5.0"]],
                "cookies": [],
                "env": {"SERVER_NAME": "web-1"},
                "data": null,
                "fragment": null,
                "inferredContentType": null,
            }},
        ],
        "contexts": {"browser": {"name": "Chrome", "version": "120.0"}, "os": {"name": "Linux"}},
        "sdk": {"name": "sentry.python", "version": "1.40.0"},
        "packages": {},
        "fingerprints": [format!("{:032x}", k % n_issues.max(1))],
        "release": null,
        "previousEventID": null,
        "nextEventID": null,
    })
}

/// The exception's frames of event `k`, innermost last.
fn stack_frames(k: usize) -> Vec<Value> {
    (0..4)
        .map(|f| {
            let function = ["handler", "dispatch", "view", "main"][f];
            json!({
                "function": function,
                "filename": format!("app/{f}.py"),
                "absPath": format!("/srv/app/{f}.py"),
                "module": format!("app.m{f}"),
                "lineNo": 10 + f * 3 + k % 5,
                "colNo": null,
                "inApp": f < 2,
                "context": [[9 + f, "def handler(request):"], [10 + f, "    return view(request)"]],
                "vars": {"request": "<Request>"},
            })
        })
        .collect()
}

/// One to four HTTP breadcrumbs, a second apart before the event.
fn breadcrumbs(k: usize, millis: i64) -> Vec<Value> {
    (0..(k % 4 + 1))
        .map(|b| {
            json!({
                "type": "http",
                "category": "httplib",
                "level": "info",
                "timestamp": sentry_time(millis - 1000 * (b as i64 + 1), b as u64),
                "message": null,
                "data": {"url": format!("https://api.example.com/{b}"), "status_code": 200},
                "event_id": null,
            })
        })
        .collect()
}

/// How many of a project's `per_project` issues are resolved at a revision, for tests.
pub fn resolved_issues(per_project: usize, revision: u32) -> usize {
    (0..per_project)
        .filter(|&k| issue_status(k, revision) == "resolved")
        .count()
}

impl Shared {
    /// Notes a request's path and query in the log tests read.
    pub(crate) fn log_request(&self, path: &str, query: Option<&str>) {
        let entry = match query {
            Some(q) if !q.is_empty() => format!("{path}?{q}"),
            _ => path.to_owned(),
        };
        self.log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(entry);
    }
}
