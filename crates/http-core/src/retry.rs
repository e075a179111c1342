//! When and how long to wait before retrying: `Retry-After` parsing and the backoff policy.

use std::time::{Duration, SystemTime};

/// The retry policy of a client (`[client.retry]` in the pipeline file).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Retries after the first attempt, for 429, 500, 502, 503, 504 and connect or read
    /// timeouts. Default: 3 (the seed's).
    #[serde(default = "default_max_retries")]
    pub max_retries: usize,
    /// The first backoff delay, in seconds; it doubles per retry, with jitter. Default: 1.
    #[serde(default = "default_backoff_base_secs")]
    pub backoff_base_secs: f64,
    /// The largest backoff delay, in seconds. Default: 60.
    #[serde(default = "default_backoff_max_secs")]
    pub backoff_max_secs: f64,
    /// The longest `Retry-After` honored, in seconds: a server that asks for longer fails the
    /// request at once, with a message saying how long it asked for. Default: 300.
    #[serde(default = "default_retry_after_max_secs")]
    pub retry_after_max_secs: f64,
}

fn default_max_retries() -> usize {
    3
}
fn default_backoff_base_secs() -> f64 {
    1.0
}
fn default_backoff_max_secs() -> f64 {
    60.0
}
fn default_retry_after_max_secs() -> f64 {
    300.0
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_retries: default_max_retries(),
            backoff_base_secs: default_backoff_base_secs(),
            backoff_max_secs: default_backoff_max_secs(),
            retry_after_max_secs: default_retry_after_max_secs(),
        }
    }
}

/// Exponential backoff with full jitter: the n-th delay is drawn uniformly from
/// `[0, min(max, base * 2^n)]`, so that clients that failed together do not retry together.
#[derive(Debug, Clone)]
pub struct FullJitter {
    base: Duration,
    max: Duration,
    attempt: u32,
    remaining: usize,
    rng: fastrand::Rng,
}

impl FullJitter {
    /// Delays for the retries of `config`.
    pub fn new(config: &RetryConfig) -> Self {
        FullJitter {
            base: Duration::from_secs_f64(config.backoff_base_secs.max(0.0)),
            max: Duration::from_secs_f64(config.backoff_max_secs.max(0.0)),
            attempt: 0,
            remaining: config.max_retries,
            rng: fastrand::Rng::new(),
        }
    }
}

impl Iterator for FullJitter {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let ceiling = self
            .base
            .saturating_mul(1u32 << self.attempt.min(30))
            .min(self.max);
        self.attempt += 1;
        Some(ceiling.mul_f64(self.rng.f64()))
    }
}

/// Statuses that are retried.
pub fn is_retryable_status(status: u16) -> bool {
    matches!(status, 429 | 500 | 502 | 503 | 504)
}

/// The wait a `Retry-After` value asks for: delta-seconds (integer or fractional) or an
/// HTTP-date; `None` for a missing or unparsable value. A date in the past is zero.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_jitter_stays_under_the_doubling_ceiling_and_stops() {
        let config = RetryConfig {
            max_retries: 5,
            backoff_base_secs: 1.0,
            backoff_max_secs: 8.0,
            ..RetryConfig::default()
        };
        let delays: Vec<Duration> = FullJitter::new(&config).collect();
        assert_eq!(delays.len(), 5);
        for (n, d) in delays.iter().enumerate() {
            let ceiling = Duration::from_secs((1u64 << n).min(8));
            assert!(*d <= ceiling, "retry {n}: {d:?} > {ceiling:?}");
        }
    }

    #[test]
    fn retry_after_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("0", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("1.5", now),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-3", now), None);
        let in_ten = httpdate::fmt_http_date(now + Duration::from_secs(10));
        assert_eq!(
            parse_retry_after(&in_ten, now),
            Some(Duration::from_secs(10))
        );
        let past = httpdate::fmt_http_date(now - Duration::from_secs(10));
        assert_eq!(parse_retry_after(&past, now), Some(Duration::ZERO));
    }
}
