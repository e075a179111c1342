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
    /// The longest `Retry-After` honored, in seconds; a longer one is cut to this. Default: 300.
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
