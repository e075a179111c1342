//! The HTTP client of errlake: auth, retries with backoff and `Retry-After`, a shared pause per
//! host after a 429, timeouts, a body size limit, and secrets that never print.
//!
//! Role in the pipeline: the leaf of the fetch side. `paginate` drives it page by page; any
//! program that needs a polite, retrying GET against a rate-limited JSON API can use it alone.
//! Input: a URL; output: a [`Response`] with the whole body, or a [`FetchError`] that says
//! what to check.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use http_core::{Auth, ApiKeyLocation, Client, ClientConfig, ClientSettings, Secret};
//! # let server = wiremock::MockServer::start().await;
//! # wiremock::Mock::given(wiremock::matchers::header("authorization", "token abc"))
//! #     .respond_with(wiremock::ResponseTemplate::new(200).set_body_string("[]"))
//! #     .mount(&server).await;
//! # let base_url = server.uri();
//! // `base_url`: the API's, such as https://api.bugsnag.com (here a server on loopback).
//! let config: ClientConfig = serde_json::from_value(serde_json::json!({"base_url": base_url})).unwrap();
//! let auth = Auth::ApiKey { name: "Authorization".into(), value: Secret::new("token abc"), location: ApiKeyLocation::Header };
//! let client = Client::new(ClientSettings::from_config(&config, Some(auth)).unwrap())?;
//! let page = client.get(&format!("{base_url}/user/organizations").parse().unwrap()).await?;
//! assert_eq!(page.body, b"[]");
//! # Ok::<(), http_core::FetchError>(())
//! # }).unwrap();
//! ```

#![warn(missing_docs)]
#![deny(rustdoc::broken_intra_doc_links)]

mod client;
mod pacing;
mod retry;
mod secret;

pub use client::{
    ApiKeyLocation, Auth, AuthConfig, Client, ClientConfig, ClientSettings, Response, SettingError,
    StatsSnapshot,
};
pub use pacing::RateLimitConfig;
pub use retry::{FullJitter, RetryConfig, is_retryable_status, parse_retry_after};
pub use secret::{Secret, is_credential_param, redact_text, redact_url};

/// Why a request failed. URLs in it are redacted; bodies are cut to a snippet.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// The server answered with a status that is not 2xx.
    #[error("http: GET {url} answered {status}{hint}: {body_snippet}", hint = status_hint(*status))]
    Status {
        /// The URL, redacted.
        url: String,
        /// The status code.
        status: u16,
        /// The start of the body.
        body_snippet: String,
    },
    /// Connecting, sending or reading failed (timeouts included).
    #[error("http: GET {url} failed")]
    Transport {
        /// The URL, redacted.
        url: String,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// No answer, or no more of the body, within a configured time.
    #[error("http: GET {url} timed out after {secs} s ({setting})")]
    Timeout {
        /// The URL, redacted.
        url: String,
        /// The limit that ran out, in seconds.
        secs: f64,
        /// Which setting it is (`read_timeout_secs`, `connect_timeout_secs`, `timeout_secs`).
        setting: &'static str,
    },
    /// The connection broke while the body was read (a reset, or a body cut short).
    #[error("http: GET {url}: the connection broke after {n_bytes} bytes of the body")]
    BodyCut {
        /// The URL, redacted.
        url: String,
        /// Bytes of the body read before it broke.
        n_bytes: u64,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// The server asked to wait longer than `retry_after_max_secs` allows: failing now says
    /// so at once, where waiting would look like a hang.
    #[error(
        "http: GET {url} answered {status} and asked to wait {wait_secs:.0} s before retrying, more than retry_after_max_secs = {max_secs}; raise it in [client.retry] to wait that long"
    )]
    WaitTooLong {
        /// The URL, redacted.
        url: String,
        /// The status code.
        status: u16,
        /// How long the server asked to wait, in seconds.
        wait_secs: f64,
        /// The configured cap, in seconds.
        max_secs: f64,
    },
    /// The body was larger than the configured limit.
    #[error("http: GET {url}: the body is larger than max_response_bytes = {limit}")]
    TooLarge {
        /// The URL, redacted.
        url: String,
        /// The limit in bytes.
        limit: u64,
    },
    /// A request was redirected more often than allowed.
    #[error("http: GET {url} was redirected more than {max} times")]
    Redirects {
        /// The URL first asked for, redacted.
        url: String,
        /// The most redirects followed.
        max: usize,
    },
    /// The HTTP client could not be built.
    #[error("http: building the client")]
    Client {
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
}

fn status_hint(status: u16) -> &'static str {
    match status {
        401 => " (check the auth token)",
        403 => " (the token lacks a role or the plan a feature)",
        404 => " (check the id in the path, and that the token may see it)",
        429 => " (rate limited; retries exhausted)",
        _ => "",
    }
}

impl FetchError {
    /// Whether the request may succeed if sent again: 429, 500, 502, 503, 504 and transport
    /// failures (connect errors, timeouts). The only place that decides to retry.
    pub fn is_retryable(&self) -> bool {
        match self {
            FetchError::Status { status, .. } => is_retryable_status(*status),
            FetchError::Transport { source, .. } => {
                source.is_timeout()
                    || source.is_connect()
                    || source.is_request()
                    || source.is_body()
            }
            FetchError::Timeout { .. } | FetchError::BodyCut { .. } => true,
            FetchError::TooLarge { .. }
            | FetchError::WaitTooLong { .. }
            | FetchError::Redirects { .. }
            | FetchError::Client { .. } => false,
        }
    }

    /// The HTTP status, if the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            FetchError::Status { status, .. } | FetchError::WaitTooLong { status, .. } => {
                Some(*status)
            }
            _ => None,
        }
    }
}

/// The result type of this crate.
pub type Result<T, E = FetchError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests;
