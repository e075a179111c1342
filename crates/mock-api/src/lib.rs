//! An embedded mock of the Bugsnag-shaped error-monitoring API, on loopback, for the demo and
//! the tests.
//!
//! It serves the seed's five endpoints (`/user/organizations`,
//! `/organizations/{id}/projects`, `/projects/{id}/saved_searches`, `/projects/{id}/errors`,
//! `/projects/{id}/events`) with deterministic data from a seed: `{"data": [...]}` bodies,
//! `per_page` (default 30, at most 100) and `offset` query parameters, an absolute
//! `Link: <...>; rel="next"` header on every page but the last, `X-Total-Count`, and a 401
//! without the right `Authorization` header. Saved searches are one page, as in Bugsnag.
//!
//! [`MockHandle::start_sentry`] serves the Sentry shape instead ([`sentry`]): Web API v0's
//! organizations, projects, issues and events, with Sentry's paging and quirks.
//!
//! [`MockHandle::set_revision`] serves a changed version of the same data (some rows updated,
//! some added, some list elements removed), to exercise merge; [`MockHandle::add_fault`]
//! makes chosen pages fail (a status, a `Retry-After`, or a broken body).
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! let mock = mock_api::MockHandle::start(mock_api::MockConfig::small("secret-token")).await?;
//! println!("serving on {}", mock.base_url());
//! # Ok(()) }
//! ```

#![warn(missing_docs)]
#![deny(rustdoc::broken_intra_doc_links)]

pub mod data;
pub mod sentry;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use data::hash_str;
pub use data::{DataSize, count_at};

/// What the mock serves.
#[derive(Debug, Clone)]
pub struct MockConfig {
    /// The seed of the data.
    pub seed: u64,
    /// How much data.
    pub size: DataSize,
    /// The exact `Authorization` header value required.
    pub authorization: String,
}

impl MockConfig {
    /// A small data set: 2 organizations, 3 projects each, 2 saved searches, 12 errors and
    /// 75 events per project.
    pub fn small(authorization: &str) -> Self {
        MockConfig {
            seed: 7,
            size: DataSize {
                organizations: 2,
                projects_per_org: 3,
                saved_searches_per_project: 2,
                errors_per_project: 12,
                events_per_project: 75,
            },
            authorization: authorization.to_owned(),
        }
    }
}

/// Which API the mock imitates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ApiShape {
    /// Bugsnag's Data Access API: the seed's five endpoints.
    #[default]
    Bugsnag,
    /// Sentry's Web API v0 under `/api/0/` ([`sentry`]).
    Sentry,
}

/// A page that misbehaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// The request path contains this.
    pub path_contains: String,
    /// The page's `offset` (0 for the first page).
    pub offset: usize,
    /// The status to answer; 200 with `body` set gives a broken body.
    pub status: u16,
    /// The body to answer.
    pub body: String,
    /// A `Retry-After` header value.
    pub retry_after: Option<String>,
    /// How many times; `usize::MAX` for always.
    pub times: usize,
}

struct Shared {
    config: MockConfig,
    base_url: String,
    revision: AtomicU32,
    requests: AtomicU64,
    faults: Mutex<Vec<Fault>>,
    /// Every request's path and query, in order (the Sentry shape's).
    log: Mutex<Vec<String>>,
    /// Requests for a page past the end of a list (the Sentry shape's).
    past_end: AtomicU64,
    /// The Sentry shape's rate limits.
    sentry: sentry::Limiter,
    /// Organization id -> index.
    orgs: HashMap<String, usize>,
    /// Project id -> (organization index, project index).
    projects: HashMap<String, (usize, usize)>,
}

/// A running mock; it stops when the handle is dropped.
pub struct MockHandle {
    shared: Arc<Shared>,
    addr: SocketAddr,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

impl MockHandle {
    /// Starts the mock on a free loopback port.
    pub async fn start(config: MockConfig) -> std::io::Result<MockHandle> {
        MockHandle::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), config).await
    }

    /// Starts the mock on `addr` (port 0: a free one).
    pub async fn start_on(addr: SocketAddr, config: MockConfig) -> std::io::Result<MockHandle> {
        MockHandle::serve(addr, config, ApiShape::Bugsnag).await
    }

    /// Starts the Sentry-shaped mock ([`sentry`]) on a free loopback port; its base URL is
    /// [`MockHandle::base_url`] followed by `/api/0/`.
    pub async fn start_sentry(config: MockConfig) -> std::io::Result<MockHandle> {
        let addr = SocketAddr::from(([127, 0, 0, 1], 0));
        MockHandle::serve(addr, config, ApiShape::Sentry).await
    }

    /// Starts the mock of `shape` on `addr` (port 0: a free one).
    pub async fn serve(
        addr: SocketAddr,
        config: MockConfig,
        shape: ApiShape,
    ) -> std::io::Result<MockHandle> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let base_url = format!("http://{addr}");
        let mut orgs = HashMap::new();
        let mut projects = HashMap::new();
        for i in 0..config.size.organizations {
            orgs.insert(data::object_id(config.seed, 1, &[i as u64]), i);
            for j in 0..config.size.projects_per_org {
                projects.insert(
                    data::object_id(config.seed, 2, &[i as u64, j as u64]),
                    (i, j),
                );
            }
        }
        let shared = Arc::new(Shared {
            config,
            base_url,
            revision: AtomicU32::new(0),
            requests: AtomicU64::new(0),
            faults: Mutex::new(Vec::new()),
            log: Mutex::new(Vec::new()),
            past_end: AtomicU64::new(0),
            sentry: sentry::Limiter::default(),
            orgs,
            projects,
        });
        let app = match shape {
            ApiShape::Bugsnag => Router::new()
                .route("/user/organizations", get(organizations))
                .route("/organizations/{org_id}/projects", get(projects_of))
                .route("/projects/{project_id}/{resource}", get(project_resource))
                .with_state(shared.clone()),
            ApiShape::Sentry => sentry::router(shared.clone()),
        };
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async {
                let _ = rx.await;
            });
            if let Err(error) = serve.await {
                tracing::error!(%error, "mock API stopped");
            }
        });
        Ok(MockHandle {
            shared,
            addr,
            _shutdown: tx,
        })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> String {
        self.shared.base_url.clone()
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A reader of the request count that another task can own.
    pub fn request_counter(&self) -> impl Fn() -> u64 + Send + Sync + 'static {
        let shared = self.shared.clone();
        move || shared.requests.load(Ordering::SeqCst)
    }

    /// Serves revision `n` of the data from now on (0 is the first).
    pub fn set_revision(&self, n: u32) {
        self.shared.revision.store(n, Ordering::SeqCst);
    }

    /// Requests answered so far.
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Every request so far as `path?query`, in the order they came.
    pub fn request_log(&self) -> Vec<String> {
        self.shared
            .log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Requests for a page past the end of a list: a client that followed Sentry's
    /// `results="false"` next link makes them.
    pub fn requests_past_the_end(&self) -> u64 {
        self.shared.past_end.load(Ordering::SeqCst)
    }

    /// Makes the Sentry shape enforce rate limits from now on (`None`: none).
    pub fn set_sentry_limits(&self, limits: Option<sentry::SentryLimits>) {
        self.shared.sentry.set_limits(limits);
    }

    /// Requests the Sentry shape answered with a 429 so far.
    pub fn rate_limited(&self) -> u64 {
        self.shared.sentry.rate_limited()
    }

    /// The most requests in flight the Sentry shape let in at once while it enforced limits.
    pub fn peak_in_flight(&self) -> u32 {
        self.shared.sentry.peak_in_flight()
    }

    /// Makes a page misbehave.
    pub fn add_fault(&self, fault: Fault) {
        self.shared
            .faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(fault);
    }

    /// Removes all faults.
    pub fn clear_faults(&self) {
        self.shared
            .faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// The number of rows of each resource at the current revision.
    pub fn expected_counts(&self) -> HashMap<&'static str, usize> {
        let s = &self.shared.config.size;
        let rev = self.shared.revision.load(Ordering::SeqCst);
        let n_projects = s.organizations * s.projects_per_org;
        HashMap::from([
            ("organizations", s.organizations),
            ("projects", n_projects),
            ("saved_searches", n_projects * s.saved_searches_per_project),
            ("errors", n_projects * count_at(s.errors_per_project, rev)),
            ("events", n_projects * count_at(s.events_per_project, rev)),
        ])
    }
}

#[derive(serde::Deserialize)]
struct PageParams {
    per_page: Option<usize>,
    offset: Option<usize>,
}

fn check(shared: &Shared, headers: &HeaderMap, path: &str, offset: usize) -> Option<Response> {
    shared.requests.fetch_add(1, Ordering::SeqCst);
    let ok = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        == Some(shared.config.authorization.as_str());
    if !ok {
        return Some(
            (
                StatusCode::UNAUTHORIZED,
                axum::Json(json!({"errors": ["Unauthorized"]})),
            )
                .into_response(),
        );
    }
    let mut faults = shared.faults.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(f) = faults
        .iter_mut()
        .find(|f| f.times > 0 && path.contains(&f.path_contains) && f.offset == offset)
    {
        if f.times != usize::MAX {
            f.times -= 1;
        }
        let mut response = (
            StatusCode::from_u16(f.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            f.body.clone(),
        )
            .into_response();
        if let Some(ra) = f
            .retry_after
            .as_deref()
            .and_then(|v| HeaderValue::from_str(v).ok())
        {
            response.headers_mut().insert(header::RETRY_AFTER, ra);
        }
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        return Some(response);
    }
    None
}

/// Appends a record as JSON text.
fn push_json(out: &mut String, record: &Value) {
    use std::fmt::Write;
    let _ = write!(out, "{record}");
}

/// One page of `total` records written by `write`, with Link and X-Total-Count headers.
fn page(
    shared: &Shared,
    path: &str,
    query: Option<String>,
    params: &PageParams,
    total: usize,
    paged: bool,
    write: impl Fn(&mut String, usize),
) -> Response {
    let per_page = if paged {
        params.per_page.unwrap_or(30).clamp(1, 100)
    } else {
        total.max(1)
    };
    let offset = if paged { params.offset.unwrap_or(0) } else { 0 };
    let end = (offset + per_page).min(total);
    // Room for full events (about 4.5 KB each): reserved once, not grown record by record.
    let mut body = String::with_capacity(64 + end.saturating_sub(offset) * 4608);
    body.push_str("{\"data\":[");
    for (n, i) in (offset.min(end)..end).enumerate() {
        if n > 0 {
            body.push(',');
        }
        write(&mut body, i);
    }
    body.push_str("]}");
    let mut response = ([(header::CONTENT_TYPE, "application/json")], body).into_response();
    let h = response.headers_mut();
    h.insert("X-Total-Count", HeaderValue::from(total as u64));
    if paged && end < total {
        // Keep the request's other parameters, as the real API does, and set the offset.
        let kept: Vec<String> = query
            .unwrap_or_default()
            .split('&')
            .filter(|p| !p.is_empty() && !p.starts_with("offset="))
            .map(str::to_owned)
            .collect();
        let mut q = kept.join("&");
        if !q.is_empty() {
            q.push('&');
        }
        let link = format!("<{}{path}?{q}offset={end}>; rel=\"next\"", shared.base_url);
        if let Ok(v) = HeaderValue::from_str(&link) {
            h.insert(header::LINK, v);
        }
    }
    response
}

async fn organizations(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(p): Query<PageParams>,
    RawQuery(q): RawQuery,
) -> Response {
    let path = "/user/organizations";
    s.log_request(path, q.as_deref());
    if let Some(r) = check(&s, &headers, path, p.offset.unwrap_or(0)) {
        return r;
    }
    page(
        &s,
        path,
        q,
        &p,
        s.config.size.organizations,
        true,
        |out, i| push_json(out, &data::organization(s.config.seed, i, &s.base_url)),
    )
}

fn not_found(what: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        axum::Json(json!({"errors": [format!("{what} not found")]})),
    )
        .into_response()
}

async fn projects_of(
    State(s): State<Arc<Shared>>,
    Path(org_id): Path<String>,
    headers: HeaderMap,
    Query(p): Query<PageParams>,
    RawQuery(q): RawQuery,
) -> Response {
    let path = format!("/organizations/{org_id}/projects");
    s.log_request(&path, q.as_deref());
    if let Some(r) = check(&s, &headers, &path, p.offset.unwrap_or(0)) {
        return r;
    }
    let Some(&i) = s.orgs.get(&org_id) else {
        return not_found("Organization");
    };
    let rev = s.revision.load(Ordering::SeqCst);
    page(
        &s,
        &path,
        q,
        &p,
        s.config.size.projects_per_org,
        true,
        |out, j| push_json(out, &data::project(s.config.seed, i, j, rev, &s.base_url)),
    )
}

/// `/projects/{project_id}/{saved_searches|errors|events}`.
async fn project_resource(
    State(s): State<Arc<Shared>>,
    Path((project_id, resource)): Path<(String, String)>,
    headers: HeaderMap,
    Query(p): Query<PageParams>,
    RawQuery(q): RawQuery,
) -> Response {
    let path = format!("/projects/{project_id}/{resource}");
    let paged = resource != "saved_searches";
    s.log_request(&path, q.as_deref());
    if let Some(r) = check(
        &s,
        &headers,
        &path,
        if paged { p.offset.unwrap_or(0) } else { 0 },
    ) {
        return r;
    }
    if !s.projects.contains_key(&project_id) {
        return not_found("Project");
    }
    let seed = s.config.seed;
    let size = &s.config.size;
    let rev = s.revision.load(Ordering::SeqCst);
    let n_errors = count_at(size.errors_per_project, rev);
    match resource.as_str() {
        "saved_searches" => page(
            &s,
            &path,
            q,
            &p,
            size.saved_searches_per_project,
            false,
            |out, k| push_json(out, &data::saved_search(seed, &project_id, k)),
        ),
        "errors" => {
            let base = size.errors_per_project;
            let kept = time_filter(q.as_deref(), n_errors, |k| {
                data::cursor_millis(seed, &[10, hash_str(&project_id), k as u64], k, base, rev)
            });
            page(&s, &path, q, &p, kept.len(), true, |out, i| {
                push_json(
                    out,
                    &data::error(seed, &project_id, kept.index(i), base, rev, &s.base_url),
                )
            })
        }
        "events" => {
            let base = size.events_per_project;
            let total = count_at(base, rev);
            let kept = time_filter(q.as_deref(), total, |k| {
                data::cursor_millis(seed, &[13, hash_str(&project_id), k as u64], k, base, rev)
            });
            page(&s, &path, q, &p, kept.len(), true, |out, i| {
                data::write_event(
                    out,
                    seed,
                    &project_id,
                    n_errors,
                    (kept.index(i), base),
                    rev,
                    &s.base_url,
                )
            })
        }
        _ => not_found("Resource"),
    }
}

/// The records of a list that Bugsnag's time filters keep: `filters[event.since][][value]`
/// (at or after) and `filters[event.before][][value]` (before), ISO 8601 times.
enum Kept {
    All(usize),
    Some(Vec<usize>),
}

impl Kept {
    fn len(&self) -> usize {
        match self {
            Kept::All(n) => *n,
            Kept::Some(v) => v.len(),
        }
    }

    fn index(&self, i: usize) -> usize {
        match self {
            Kept::All(_) => i,
            Kept::Some(v) => v[i],
        }
    }
}

fn time_filter(query: Option<&str>, total: usize, millis_of: impl Fn(usize) -> i64) -> Kept {
    let mut since = None;
    let mut before = None;
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        let at = chrono::DateTime::parse_from_rfc3339(&v)
            .ok()
            .map(|t| t.timestamp_millis());
        match k.as_ref() {
            "filters[event.since][][value]" => since = at,
            "filters[event.before][][value]" => before = at,
            _ => {}
        }
    }
    // Every record's time is at or after the first one's (revision 0's record 0 comes
    // first): a `since` before it keeps everything, without computing each time.
    let earliest = data::cursor_millis(0, &[0], 0, 1, 0) - 60_000;
    if before.is_none() && since.is_none_or(|s| s <= earliest) {
        return Kept::All(total);
    }
    Kept::Some(
        (0..total)
            .filter(|&k| {
                let t = millis_of(k);
                since.is_none_or(|s| t >= s) && before.is_none_or(|b| t < b)
            })
            .collect(),
    )
}
