//! The HTTP client: one GET with auth, retries, a shared pause per host, timeouts and a body
//! size limit.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use backon::Retryable;
use http::{HeaderMap, HeaderName, HeaderValue};
use url::Url;

use crate::pacing::{Budget, Pacer, RateLimitConfig};
use crate::retry::{FullJitter, RetryConfig, is_retryable_status, parse_retry_after};
use crate::secret::{Secret, is_credential_param, redact_text, redact_url};
use crate::{FetchError, Result};

/// The `client` section of a pipeline file, as written (secrets still as references).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// The API's base URL; resource paths are appended to it. Credentials are sent only to
    /// its origin (scheme, host, port) and to `trusted_hosts`.
    pub base_url: String,
    /// Headers sent with every request (for Bugsnag: `X-Version = "2"`). Default: none.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// How to authenticate. Default: no authentication.
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    /// Retries and backoff.
    #[serde(default)]
    pub retry: RetryConfig,
    /// Rate limits and pacing.
    #[serde(default)]
    pub rate_limit: RateLimitConfig,
    /// The longest a whole request (connect, send, read the body) may take, in seconds.
    /// Default: 120.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: f64,
    /// The longest connecting may take, in seconds. Default: 10.
    #[serde(default = "default_connect_timeout_secs")]
    pub connect_timeout_secs: f64,
    /// The longest the server may stay silent while the response is read, in seconds: a
    /// stalled body fails after it (and is retried). Default: 30.
    #[serde(default = "default_read_timeout_secs")]
    pub read_timeout_secs: f64,
    /// The largest response body accepted, in bytes; real full events exceed 1 MB.
    /// Default: 64 MiB.
    #[serde(default = "default_max_response_bytes")]
    pub max_response_bytes: u64,
    /// Hosts besides the base URL's that may receive the credentials. Default: none.
    #[serde(default)]
    pub trusted_hosts: Vec<String>,
}

fn default_timeout_secs() -> f64 {
    120.0
}
fn default_connect_timeout_secs() -> f64 {
    10.0
}
fn default_read_timeout_secs() -> f64 {
    30.0
}
fn default_max_response_bytes() -> u64 {
    64 * 1024 * 1024
}

/// The `client.auth` section, as written: credential fields may hold secret references that
/// the caller resolves into an [`Auth`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum AuthConfig {
    /// An API key in a header or a query parameter.
    ApiKey {
        /// The header or parameter name. Default: `Authorization`.
        #[serde(default = "default_api_key_name")]
        name: String,
        /// The key (a secret reference such as `{{ secrets.auth_token }}`).
        api_key: String,
        /// `header` (default) or `query`.
        #[serde(default)]
        location: ApiKeyLocation,
    },
    /// `Authorization: Bearer <token>`.
    Bearer {
        /// The token (a secret reference).
        token: String,
    },
    /// HTTP basic authentication.
    HttpBasic {
        /// The user name.
        username: String,
        /// The password (a secret reference).
        password: String,
    },
}

fn default_api_key_name() -> String {
    "Authorization".to_owned()
}

/// Where an API key goes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApiKeyLocation {
    /// In a request header.
    #[default]
    Header,
    /// In a query parameter.
    Query,
}

/// Resolved credentials.
#[derive(Debug, Clone)]
pub enum Auth {
    /// An API key in a header or a query parameter.
    ApiKey {
        /// The header or parameter name.
        name: String,
        /// The key.
        value: Secret,
        /// Where it goes.
        location: ApiKeyLocation,
    },
    /// A bearer token.
    Bearer(Secret),
    /// HTTP basic authentication.
    Basic {
        /// The user name.
        username: String,
        /// The password.
        password: Secret,
    },
}

impl Auth {
    fn secret(&self) -> &Secret {
        match self {
            Auth::ApiKey { value, .. } => value,
            Auth::Bearer(s) => s,
            Auth::Basic { password, .. } => password,
        }
    }
}

/// Everything a [`Client`] needs, checked.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    /// The base URL; its origin receives the credentials.
    pub base_url: Url,
    /// Headers for every request.
    pub headers: HeaderMap,
    /// Credentials.
    pub auth: Option<Auth>,
    /// Retries and backoff.
    pub retry: RetryConfig,
    /// Rate limits and pacing.
    pub rate_limit: RateLimitConfig,
    /// Whole-request timeout.
    pub timeout: Duration,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Read timeout: the longest silence while reading.
    pub read_timeout: Duration,
    /// The largest body accepted, in bytes.
    pub max_response_bytes: u64,
    /// Further hosts that may receive credentials.
    pub trusted_hosts: Vec<String>,
}

impl ClientSettings {
    /// Checks a [`ClientConfig`] whose secrets the caller has resolved into `auth`.
    /// An error names the offending field (as data: [`SettingError::field`]), never a secret.
    pub fn from_config(
        config: &ClientConfig,
        auth: Option<Auth>,
    ) -> std::result::Result<Self, SettingError> {
        let base_url = Url::parse(&config.base_url).map_err(|e| {
            SettingError::new(
                "base_url",
                format!("`{}` is not a URL: {e}", config.base_url),
            )
        })?;
        if !matches!(base_url.scheme(), "http" | "https") {
            return Err(SettingError::new(
                "base_url",
                format!("`{}` is not an http or https URL", config.base_url),
            ));
        }
        let mut headers = HeaderMap::new();
        for (k, v) in &config.headers {
            let bad = |what: &str| SettingError::new(format!("headers.{k}"), what);
            let name =
                HeaderName::from_bytes(k.as_bytes()).map_err(|_| bad("not a header name"))?;
            let value = HeaderValue::from_str(v).map_err(|_| bad("not a header value"))?;
            headers.insert(name, value);
        }
        // A credential that cannot be a header fails here, at config time, never at the
        // first request; the message names the field, never the value.
        let header_safe = |field: &str, value: &str| {
            HeaderValue::from_str(value).map(|_| ()).map_err(|_| {
                SettingError::new(
                    format!("auth.{field}"),
                    "the secret holds a character a header cannot carry (a newline or another control character)",
                )
            })
        };
        match &auth {
            Some(Auth::ApiKey {
                value,
                location: ApiKeyLocation::Header,
                ..
            }) => header_safe("api_key", value.expose())?,
            Some(Auth::Bearer(token)) => header_safe("token", token.expose())?,
            Some(Auth::Basic { username, password }) => {
                if username.contains(':') || username.chars().any(char::is_control) {
                    return Err(SettingError::new(
                        "auth.username",
                        "a user name may hold no `:` and no control character",
                    ));
                }
                if password.expose().chars().any(char::is_control) {
                    return Err(SettingError::new(
                        "auth.password",
                        "the secret holds a control character",
                    ));
                }
            }
            Some(Auth::ApiKey { .. }) | None => {}
        }
        for (field, secs) in [
            ("timeout_secs", config.timeout_secs),
            ("connect_timeout_secs", config.connect_timeout_secs),
            ("read_timeout_secs", config.read_timeout_secs),
        ] {
            if !(secs.is_finite() && secs > 0.0) {
                return Err(SettingError::new(
                    field,
                    format!("expected a positive number of seconds, got {secs}"),
                ));
            }
        }
        Ok(ClientSettings {
            base_url,
            headers,
            auth,
            retry: config.retry.clone(),
            rate_limit: config.rate_limit.clone(),
            timeout: Duration::from_secs_f64(config.timeout_secs),
            connect_timeout: Duration::from_secs_f64(config.connect_timeout_secs),
            read_timeout: Duration::from_secs_f64(config.read_timeout_secs),
            max_response_bytes: config.max_response_bytes,
            trusted_hosts: config.trusted_hosts.clone(),
        })
    }
}

/// A client setting that cannot work: which field of the `client` section, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SettingError {
    /// The field's path within the `client` section (`base_url`, `headers.Accept`,
    /// `auth.token`).
    pub field: String,
    /// What is wrong with it; never the value of a secret.
    pub message: String,
}

impl SettingError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        SettingError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// A response whose body was read in full.
#[derive(Debug, Clone)]
pub struct Response {
    /// The URL fetched (as requested; credentials are never in it).
    pub url: Url,
    /// The status code (2xx: other statuses are errors).
    pub status: u16,
    /// The response headers.
    pub headers: HeaderMap,
    /// The body, decompressed.
    pub body: Vec<u8>,
    /// How many retries this response took.
    pub n_retries: u32,
}

/// Counters of a client's traffic, for the run report.
#[derive(Debug, Default)]
pub(crate) struct ClientStats {
    requests: AtomicU64,
    retries: AtomicU64,
    bytes: AtomicU64,
    by_status: Mutex<BTreeMap<u16, u64>>,
}

/// A copy of the counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct StatsSnapshot {
    /// Requests sent, retries included.
    pub requests: u64,
    /// Retries.
    pub retries: u64,
    /// Body bytes received.
    pub bytes: u64,
    /// Responses per status code.
    pub by_status: BTreeMap<u16, u64>,
}

impl ClientStats {
    fn record_status(&self, status: u16) {
        let mut map = self.by_status.lock().unwrap_or_else(|p| p.into_inner());
        *map.entry(status).or_default() += 1;
    }
}

/// An HTTP client for one API. Cheap to clone: clones share the connection pool, the
/// counters and the per-host pause.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    settings: Arc<ClientSettings>,
    stats: Arc<ClientStats>,
    /// Per host: pauses after 429s, pacing from rate-limit headers, the client-side rate
    /// limit and the slots for requests in flight; shared by every clone.
    pacer: Arc<Pacer>,
}

/// The most redirects one request follows.
const MAX_REDIRECTS: usize = 10;

/// What one request came to.
enum Hop {
    /// A 2xx response.
    Done(Response),
    /// A redirect to follow.
    Redirect(Url),
}

/// Why one attempt failed, with what the retry loop needs.
struct AttemptError {
    error: FetchError,
    retry_after: Option<Duration>,
}

impl Client {
    /// A client with these settings.
    pub fn new(settings: ClientSettings) -> Result<Client> {
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.connect_timeout)
            .read_timeout(settings.read_timeout)
            .user_agent(concat!("errlake/", env!("CARGO_PKG_VERSION")))
            // Redirects are followed by `attempt`, which decides per hop whether the
            // credentials may go along.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|source| FetchError::Client {
                source: source.without_url(),
            })?;
        Ok(Client {
            http,
            stats: Arc::default(),
            pacer: Arc::new(Pacer::new(settings.rate_limit.clone())),
            settings: Arc::new(settings),
        })
    }

    /// The base URL.
    pub fn base_url(&self) -> &Url {
        &self.settings.base_url
    }

    /// A copy of the traffic counters.
    pub fn stats(&self) -> StatsSnapshot {
        StatsSnapshot {
            requests: self.stats.requests.load(Ordering::Relaxed),
            retries: self.stats.retries.load(Ordering::Relaxed),
            bytes: self.stats.bytes.load(Ordering::Relaxed),
            by_status: self
                .stats
                .by_status
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }

    /// `url` as it may be printed: credential parameters and the configured secret, wherever
    /// it stands, redacted.
    pub fn redact(&self, url: &Url) -> String {
        redact_text(&redact_url(url, self.query_key_name()), &self.secrets())
    }

    /// The name of the query parameter that carries the API key, when it goes in the query.
    fn query_key_name(&self) -> Option<&str> {
        match &self.settings.auth {
            Some(Auth::ApiKey {
                name,
                location: ApiKeyLocation::Query,
                ..
            }) => Some(name.as_str()),
            _ => None,
        }
    }

    /// The credentials of this client, for redaction.
    fn secrets(&self) -> Vec<&Secret> {
        self.settings.auth.iter().map(Auth::secret).collect()
    }

    /// How long requests still wait for a host's rate limit (after a 429, `Retry-After` or
    /// pacing from rate-limit headers); zero when nothing is paused.
    pub fn rate_limit_wait(&self) -> std::time::Duration {
        self.pacer.longest_pause()
    }

    /// `url` without credentials, for storing a URL to fetch later (a resume point): no user
    /// info, and no query parameter that is the configured query key, is named like a
    /// credential ([`is_credential_param`]) or holds the configured secret. The client adds
    /// its own credentials again when it fetches the URL.
    pub fn without_credentials(&self, url: &Url) -> Url {
        let mut clean = url.clone();
        let _ = clean.set_username("");
        let _ = clean.set_password(None);
        let secrets = self.secrets();
        let is_credential = |k: &str, v: &str| {
            is_credential_param(k)
                || self.query_key_name().is_some_and(|n| n == k)
                || secrets
                    .iter()
                    .any(|s| !s.expose().is_empty() && v.contains(s.expose()))
        };
        if url.query_pairs().any(|(k, v)| is_credential(&k, &v)) {
            let kept: Vec<(String, String)> = url
                .query_pairs()
                .filter(|(k, v)| !is_credential(k, v))
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            clean.set_query(None);
            if !kept.is_empty() {
                clean.query_pairs_mut().extend_pairs(kept);
            }
        }
        clean
    }

    /// Whether `url` may receive the credentials: same origin as the base URL, or a trusted host.
    pub fn is_trusted(&self, url: &Url) -> bool {
        let base = &self.settings.base_url;
        let same_origin = url.scheme() == base.scheme()
            && url.host_str() == base.host_str()
            && url.port_or_known_default() == base.port_or_known_default();
        same_origin
            || url
                .host_str()
                .is_some_and(|h| self.settings.trusted_hosts.iter().any(|t| t == h))
    }

    /// GETs `url`, retrying 429, 500, 502, 503, 504 and timeouts with exponential backoff and
    /// full jitter, honoring `Retry-After` (capped). Other statuses are errors at once.
    /// Redirects are followed (at most 10 hops), each hop getting the credentials only if it
    /// is trusted.
    pub async fn get(&self, url: &Url) -> Result<Response> {
        let retry = &self.settings.retry;
        let backoff = FullJitter::new(retry);
        let cap = Duration::from_secs_f64(retry.retry_after_max_secs.max(0.0));
        let n_retries = AtomicU64::new(0);
        let result = (|| async {
            let n = n_retries.load(Ordering::Relaxed) as u32;
            self.attempt(url, n).await
        })
        .retry(backoff)
        .when(|e: &AttemptError| e.error.is_retryable())
        .adjust(|e: &AttemptError, delay| match (e.retry_after, delay) {
            // The backoff is exhausted: no more retries, whatever the server says.
            (_, None) => None,
            (Some(wait), Some(_)) => Some(wait.min(cap)),
            (None, Some(d)) => Some(d),
        })
        .notify(|e: &AttemptError, delay| {
            n_retries.fetch_add(1, Ordering::Relaxed);
            self.stats.retries.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(url = %self.redact(url), error = %e.error, delay_ms = delay.as_millis() as u64, "retrying request");
        })
        .await;
        result.map_err(|e| e.error)
    }

    async fn attempt(
        &self,
        url: &Url,
        n_retries: u32,
    ) -> std::result::Result<Response, AttemptError> {
        let mut current = url.clone();
        for _hop in 0..=MAX_REDIRECTS {
            match self.send_once(&current, n_retries).await? {
                Hop::Done(response) => return Ok(response),
                Hop::Redirect(next) => {
                    tracing::debug!(from = %self.redact(&current), to = %self.redact(&next), "following a redirect");
                    current = next;
                }
            }
        }
        Err(AttemptError {
            error: FetchError::Redirects {
                url: self.redact(url),
                max: MAX_REDIRECTS,
            },
            retry_after: None,
        })
    }

    /// One request, no retry: a response, a redirect to follow, or an error.
    async fn send_once(&self, url: &Url, n_retries: u32) -> std::result::Result<Hop, AttemptError> {
        let _slot = self.pacer.admit(url).await;
        let redacted = self.redact(url);
        let mut request_url = url.clone();
        let mut request = self
            .http
            .get(url.clone())
            .headers(self.settings.headers.clone());
        if let Some(auth) = self.settings.auth.as_ref().filter(|_| self.is_trusted(url)) {
            request = match auth {
                Auth::ApiKey {
                    name,
                    value,
                    location: ApiKeyLocation::Header,
                } => request.header(name, value.expose()),
                Auth::ApiKey {
                    name,
                    value,
                    location: ApiKeyLocation::Query,
                } => {
                    request_url
                        .query_pairs_mut()
                        .append_pair(name, value.expose());
                    self.http
                        .get(request_url)
                        .headers(self.settings.headers.clone())
                }
                Auth::Bearer(token) => request.bearer_auth(token.expose()),
                Auth::Basic { username, password } => {
                    request.basic_auth(username, Some(password.expose()))
                }
            };
        }
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let started = std::time::Instant::now();
        let response = request.send().await.map_err(|source| AttemptError {
            error: self.transport_error(&redacted, source, started),
            retry_after: None,
        })?;
        let status = response.status().as_u16();
        self.stats.record_status(status);
        let headers = response.headers().clone();
        let body = self.read_body(response, &redacted, started).await?;
        self.stats
            .bytes
            .fetch_add(body.len() as u64, Ordering::Relaxed);

        let cap = Duration::from_secs_f64(self.settings.retry.retry_after_max_secs.max(0.0));
        self.pacer.observe(url, &headers, cap);
        if (200..300).contains(&status) {
            return Ok(Hop::Done(Response {
                url: url.clone(),
                status,
                headers,
                body,
                n_retries,
            }));
        }
        if matches!(status, 301 | 302 | 303 | 307 | 308)
            && let Some(next) = headers
                .get(http::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| url.join(v).ok())
        {
            return Ok(Hop::Redirect(next));
        }
        Err(self.status_error(url, redacted, status, &headers, &body, cap))
    }

    /// The error of a response that is neither a success nor a redirect: how long the server
    /// asked to wait (which pauses the host), and the start of the body, redacted.
    fn status_error(
        &self,
        url: &Url,
        redacted: String,
        status: u16,
        headers: &HeaderMap,
        body: &[u8],
        cap: Duration,
    ) -> AttemptError {
        // Retry-After, or for a 429 without it (Sentry's), the rate-limit headers' reset.
        let retry_after = headers
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()))
            .or_else(|| {
                (status == 429)
                    .then(|| Budget::from_headers(headers, SystemTime::now()))
                    .flatten()
                    .and_then(|b| b.reset_in)
                    // A reset in the past (or clock skew) says nothing: back off instead.
                    .filter(|d| !d.is_zero())
            });
        if let Some(wait) = retry_after
            && wait > cap
            && is_retryable_status(status)
        {
            return AttemptError {
                error: FetchError::WaitTooLong {
                    url: redacted,
                    status,
                    wait_secs: wait.as_secs_f64(),
                    max_secs: cap.as_secs_f64(),
                },
                retry_after: None,
            };
        }
        if status == 429 || (retry_after.is_some() && is_retryable_status(status)) {
            self.pacer
                .pause(url, retry_after.unwrap_or_default().min(cap));
        }
        // Redacted before it is cut, so that a secret across the cut is not left in part.
        let secrets = self.secrets();
        let longest = secrets.iter().map(|s| s.expose().len()).max().unwrap_or(0);
        let window = String::from_utf8_lossy(&body[..body.len().min(300 + longest)]);
        let body_snippet: String = redact_text(&window, &secrets).chars().take(300).collect();
        AttemptError {
            error: FetchError::Status {
                url: redacted,
                status,
                body_snippet,
            },
            retry_after,
        }
    }

    /// A failure to connect, send or receive, as the error that says what ran out: a timeout
    /// names its setting; anything else is a transport failure.
    fn transport_error(
        &self,
        redacted: &str,
        source: reqwest::Error,
        started: std::time::Instant,
    ) -> FetchError {
        if !source.is_timeout() {
            return FetchError::Transport {
                url: redacted.to_owned(),
                source: source.without_url(),
            };
        }
        let s = &self.settings;
        let (setting, limit) = if started.elapsed() >= s.timeout {
            ("timeout_secs", s.timeout)
        } else if source.is_connect() {
            ("connect_timeout_secs", s.connect_timeout)
        } else {
            ("read_timeout_secs", s.read_timeout)
        };
        FetchError::Timeout {
            url: redacted.to_owned(),
            secs: limit.as_secs_f64(),
            setting,
        }
    }

    async fn read_body(
        &self,
        mut response: reqwest::Response,
        redacted: &str,
        started: std::time::Instant,
    ) -> std::result::Result<Vec<u8>, AttemptError> {
        let limit = self.settings.max_response_bytes;
        let mut body =
            Vec::with_capacity(response.content_length().unwrap_or(0).min(limit) as usize);
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() as u64 + chunk.len() as u64 > limit {
                        return Err(AttemptError {
                            error: FetchError::TooLarge {
                                url: redacted.to_owned(),
                                limit,
                            },
                            retry_after: None,
                        });
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => return Ok(body),
                // Whatever broke after the headers (a reset, a body cut short, a bad gzip
                // stream) is a transport failure, retried like one.
                Err(source) => {
                    let error = match self.transport_error(redacted, source, started) {
                        FetchError::Transport { url, source } => FetchError::BodyCut {
                            url,
                            n_bytes: body.len() as u64,
                            source,
                        },
                        timeout => timeout,
                    };
                    return Err(AttemptError {
                        error,
                        retry_after: None,
                    });
                }
            }
        }
    }
}
