//! Keeping under a host's rate limit: the pause after a 429, pacing from rate-limit headers,
//! a client-side rate limit and a concurrency limit per host.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderMap;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use url::Url;

/// Rate limits of a client (`[client.rate_limit]` in the pipeline file).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Requests per minute at most, per host, whatever the API says (Bugsnag allows about
    /// 30). Default: none.
    #[serde(default)]
    pub requests_per_minute: Option<u32>,
    /// Requests in flight at most, per host. Default: 4.
    #[serde(default = "default_max_concurrent_per_host")]
    pub max_concurrent_per_host: usize,
    /// Follow `X-RateLimit-*` and `X-Sentry-Rate-Limit-*` response headers, spacing requests
    /// so that the remaining budget lasts until the reset. Default: true.
    #[serde(default = "default_true")]
    pub pace_from_headers: bool,
    /// The window of an `X-RateLimit-Limit` that comes without a reset time, in seconds
    /// (Bugsnag's is one minute). Default: 60.
    #[serde(default = "default_window_secs")]
    pub window_secs: f64,
}

fn default_max_concurrent_per_host() -> usize {
    4
}
fn default_true() -> bool {
    true
}
fn default_window_secs() -> f64 {
    60.0
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            requests_per_minute: None,
            max_concurrent_per_host: default_max_concurrent_per_host(),
            pace_from_headers: true,
            window_secs: default_window_secs(),
        }
    }
}

type Limiter = governor::DefaultDirectRateLimiter;

/// The per-host state every clone of a client shares.
#[derive(Debug)]
struct Host {
    /// No request starts before this instant: set by a 429, `Retry-After` and pacing.
    not_before: Instant,
    /// Requests in flight.
    slots: Arc<Semaphore>,
    /// The permits `slots` still has in all: the configured limit, lowered to the server's
    /// concurrency limit when it announces one.
    capacity: usize,
    /// The client-side rate limit, if configured.
    limiter: Option<Arc<Limiter>>,
}

/// The hosts a client talks to, and how fast it may.
#[derive(Debug)]
pub(crate) struct Pacer {
    config: RateLimitConfig,
    hosts: Mutex<HashMap<String, Host>>,
}

/// What a response said about the rate limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Budget {
    pub(crate) limit: Option<u64>,
    pub(crate) remaining: Option<u64>,
    /// Time until the window resets.
    pub(crate) reset_in: Option<Duration>,
}

impl Budget {
    /// Reads `X-RateLimit-Limit`, `-Remaining`, `-Reset` or Sentry's `X-Sentry-Rate-Limit-*`
    /// (names are case-insensitive). A reset above 10^9 is epoch seconds, else seconds.
    pub(crate) fn from_headers(headers: &HeaderMap, now: SystemTime) -> Option<Budget> {
        let number = |names: &[&str]| -> Option<f64> {
            names
                .iter()
                .find_map(|n| headers.get(*n))
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<f64>().ok())
                .filter(|v| v.is_finite() && *v >= 0.0)
        };
        let limit = number(&["x-ratelimit-limit", "x-sentry-rate-limit-limit"]);
        let remaining = number(&["x-ratelimit-remaining", "x-sentry-rate-limit-remaining"]);
        let reset = number(&["x-ratelimit-reset", "x-sentry-rate-limit-reset"]);
        if limit.is_none() && remaining.is_none() {
            return None;
        }
        let reset_in = reset.map(|r| {
            if r > 1e9 {
                let now_secs = now
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs_f64();
                Duration::from_secs_f64((r - now_secs).max(0.0))
            } else {
                Duration::from_secs_f64(r)
            }
        });
        Some(Budget {
            limit: limit.map(|v| v as u64),
            remaining: remaining.map(|v| v as u64),
            reset_in,
        })
    }

    /// The spacing that makes the remaining budget last: the time to the reset shared by the
    /// requests left, or, without a reset, the window shared by the limit.
    pub(crate) fn spacing(&self, window: Duration) -> Option<Duration> {
        match (self.remaining, self.reset_in, self.limit) {
            (Some(0), Some(reset), _) => Some(reset),
            (Some(0), None, _) => Some(window),
            (Some(r), Some(reset), _) => Some(reset / (r.min(u64::from(u32::MAX)) as u32)),
            (_, None, Some(l)) if l > 0 => Some(window / (l.min(u64::from(u32::MAX)) as u32)),
            _ => None,
        }
    }
}

impl Pacer {
    pub(crate) fn new(config: RateLimitConfig) -> Self {
        Pacer {
            config,
            hosts: Mutex::new(HashMap::new()),
        }
    }

    fn key(url: &Url) -> String {
        format!(
            "{}://{}:{}",
            url.scheme(),
            url.host_str().unwrap_or(""),
            url.port_or_known_default().unwrap_or(0)
        )
    }

    fn with_host<T>(&self, url: &Url, f: impl FnOnce(&mut Host) -> T) -> T {
        let mut hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
        let host = hosts.entry(Pacer::key(url)).or_insert_with(|| Host {
            not_before: Instant::now(),
            slots: Arc::new(Semaphore::new(self.config.max_concurrent_per_host.max(1))),
            capacity: self.config.max_concurrent_per_host.max(1),
            limiter: self
                .config
                .requests_per_minute
                .and_then(NonZeroU32::new)
                .and_then(|n: NonZeroU32| {
                    // Evenly spaced, no burst: n a minute is one every 60/n seconds.
                    governor::Quota::with_period(Duration::from_secs_f64(60.0 / f64::from(n.get())))
                        .map(|q| q.allow_burst(NonZeroU32::MIN))
                })
                .map(|q| Arc::new(governor::RateLimiter::direct(q))),
        });
        f(host)
    }

    /// Waits until a request to `url` may start; the permit is its slot among the host's
    /// requests in flight.
    pub(crate) async fn admit(&self, url: &Url) -> OwnedSemaphorePermit {
        let (slots, limiter) = self.with_host(url, |h| (h.slots.clone(), h.limiter.clone()));
        let permit = slots
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        if let Some(limiter) = limiter {
            limiter.until_ready().await;
        }
        loop {
            let not_before = self.with_host(url, |h| h.not_before);
            if not_before <= Instant::now() {
                break;
            }
            tracing::debug!(
                host = url.host_str().unwrap_or(""),
                wait_ms = (not_before - Instant::now()).as_millis() as u64,
                "waiting for the host's rate limit"
            );
            tokio::time::sleep_until(not_before).await;
        }
        permit
    }

    /// How long the most paused host still waits before its next request (zero when none
    /// is paused): what a progress display shows as the API pacing us.
    pub(crate) fn longest_pause(&self) -> Duration {
        let now = Instant::now();
        let hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
        hosts
            .values()
            .map(|h| h.not_before.saturating_duration_since(now))
            .max()
            .unwrap_or(Duration::ZERO)
    }

    /// No request to `url`'s host starts for `wait` (after a 429 or `Retry-After`).
    pub(crate) fn pause(&self, url: &Url, wait: Duration) {
        let until = Instant::now() + wait;
        self.with_host(url, |h| h.not_before = h.not_before.max(until));
    }

    /// Spaces the next request to the host as the response's rate-limit headers ask, and
    /// keeps the requests in flight within a concurrency limit the server announces.
    pub(crate) fn observe(&self, url: &Url, headers: &HeaderMap, cap: Duration) {
        if !self.config.pace_from_headers {
            return;
        }
        if let Some(limit) = concurrent_limit(headers) {
            self.lower_capacity(url, limit);
        }
        let window = Duration::from_secs_f64(self.config.window_secs.max(0.0));
        if let Some(spacing) =
            Budget::from_headers(headers, SystemTime::now()).and_then(|b| b.spacing(window))
        {
            self.pause(url, spacing.min(cap));
        }
    }
}

impl Pacer {
    /// Lowers the host's requests in flight to `limit` (never below one): the permits free
    /// now are taken away at once, those in use as they come back (each later response
    /// lowers again). A limit above the configured one changes nothing.
    fn lower_capacity(&self, url: &Url, limit: usize) {
        self.with_host(url, |h| {
            let target = limit.max(1);
            if h.capacity > target {
                let gone = h.slots.forget_permits(h.capacity - target);
                if gone > 0 {
                    tracing::debug!(
                        host = url.host_str().unwrap_or(""),
                        in_flight_at_most = h.capacity - gone,
                        "lowered to the server's concurrency limit"
                    );
                }
                h.capacity -= gone;
            }
        });
    }

    /// The host's requests in flight at most now (for tests).
    #[cfg(test)]
    fn capacity(&self, url: &Url) -> usize {
        self.with_host(url, |h| h.capacity)
    }
}

/// The server's limit on requests in flight: Sentry's `X-Sentry-Rate-Limit-ConcurrentLimit`.
fn concurrent_limit(headers: &HeaderMap) -> Option<usize> {
    headers
        .get("x-sentry-rate-limit-concurrentlimit")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn budgets_from_bugsnag_and_sentry_headers() {
        let now = UNIX_EPOCH + Duration::from_secs(2_000_000_000);
        let bugsnag = Budget::from_headers(
            &headers(&[("X-Ratelimit-Limit", "30"), ("X-Ratelimit-Remaining", "29")]),
            now,
        )
        .unwrap();
        assert_eq!(
            bugsnag.spacing(Duration::from_secs(60)),
            Some(Duration::from_secs(2))
        );
        let sentry = Budget::from_headers(
            &headers(&[
                ("X-Sentry-Rate-Limit-Remaining", "4"),
                ("X-Sentry-Rate-Limit-Reset", "2000000010"),
            ]),
            now,
        )
        .unwrap();
        assert_eq!(
            sentry.spacing(Duration::from_secs(60)),
            Some(Duration::from_millis(2500))
        );
        let spent = Budget::from_headers(
            &headers(&[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "7")]),
            now,
        )
        .unwrap();
        assert_eq!(
            spent.spacing(Duration::from_secs(60)),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            Budget::from_headers(&headers(&[("x-ratelimit-remaining", "soon")]), now),
            None
        );
    }

    /// Sentry's concurrency limit lowers the requests in flight, at once for free permits
    /// and as held ones come back; a higher limit never raises the configured one.
    #[tokio::test]
    async fn a_servers_concurrency_limit_lowers_the_requests_in_flight() {
        let pacer = Pacer::new(RateLimitConfig::default());
        let url = Url::parse("https://sentry.io/api/0/organizations/").unwrap();
        let limit = |n: &str| headers(&[("X-Sentry-Rate-Limit-ConcurrentLimit", n)]);
        let held = pacer.admit(&url).await;
        let held_too = pacer.admit(&url).await;
        let cap = Duration::from_secs(1);
        pacer.observe(&url, &limit("1"), cap);
        // Two of the four permits were free: taken away. Two are in use.
        assert_eq!(pacer.capacity(&url), 2);
        drop(held);
        pacer.observe(&url, &limit("1"), cap);
        assert_eq!(pacer.capacity(&url), 1);
        pacer.observe(&url, &limit("25"), cap);
        assert_eq!(pacer.capacity(&url), 1);
        drop(held_too);
        // One request at a time now: a second waits for the first.
        let first = pacer.admit(&url).await;
        let second = tokio::time::timeout(Duration::from_millis(50), pacer.admit(&url)).await;
        assert!(second.is_err(), "a second request was let in");
        drop(first);
    }
}
