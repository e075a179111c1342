//! Tests of the client against real HTTP servers on loopback (wiremock).

use std::time::{Duration, Instant};

use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::*;

fn settings(base: &str, auth: Option<Auth>) -> ClientSettings {
    settings_with(
        base,
        auth,
        serde_json::json!({"headers": {"X-Version": "2"}}),
    )
}

/// How long `n` GETs of `url`, one after another, take.
async fn time_gets(client: &Client, url: &str, n: usize) -> Duration {
    let url: url::Url = url.parse().unwrap();
    let started = Instant::now();
    for _ in 0..n {
        client.get(&url).await.unwrap();
    }
    started.elapsed()
}

fn token_auth() -> Auth {
    Auth::ApiKey {
        name: "Authorization".into(),
        value: Secret::new("token s3cr3t-value"),
        location: ApiKeyLocation::Header,
    }
}

#[tokio::test]
async fn sends_headers_and_auth_to_the_base_origin() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/user/organizations"))
        .and(header("Authorization", "token s3cr3t-value"))
        .and(header("X-Version", "2"))
        .respond_with(ResponseTemplate::new(200).set_body_string("[]"))
        .expect(1)
        .mount(&server)
        .await;
    let client = Client::new(settings(&server.uri(), Some(token_auth()))).unwrap();
    let r = client
        .get(
            &format!("{}/user/organizations", server.uri())
                .parse()
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(r.body, b"[]");
}

#[tokio::test]
async fn retries_429_honoring_retry_after_then_succeeds() {
    let server = MockServer::start().await;
    Mock::given(path("/x"))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "1"))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(path("/x"))
        .respond_with(ResponseTemplate::new(200).set_body_string("ok"))
        .mount(&server)
        .await;
    let client = Client::new(settings(&server.uri(), None)).unwrap();
    let started = Instant::now();
    let r = client
        .get(&format!("{}/x", server.uri()).parse().unwrap())
        .await
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "waited {:?}",
        started.elapsed()
    );
    assert_eq!(r.n_retries, 1);
    assert_eq!(client.stats().by_status.get(&429), Some(&1));
}

#[tokio::test]
async fn gives_up_after_max_retries_on_5xx() {
    let server = MockServer::start().await;
    Mock::given(path("/x"))
        .respond_with(ResponseTemplate::new(503).set_body_string("<html>down</html>"))
        .expect(4)
        .mount(&server)
        .await;
    let client = Client::new(settings(&server.uri(), None)).unwrap();
    let err = client
        .get(&format!("{}/x", server.uri()).parse().unwrap())
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(503));
    assert_eq!(client.stats().retries, 3);
}

#[tokio::test]
async fn other_4xx_are_not_retried_and_say_what_to_check() {
    let server = MockServer::start().await;
    Mock::given(path("/x"))
        .respond_with(ResponseTemplate::new(401).set_body_string("{\"errors\":[\"bad token\"]}"))
        .expect(1)
        .mount(&server)
        .await;
    let client = Client::new(settings(&server.uri(), Some(token_auth()))).unwrap();
    let err = client
        .get(&format!("{}/x", server.uri()).parse().unwrap())
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("401 (check the auth token)"), "{text}");
    assert!(!text.contains("s3cr3t"), "{text}");
}

#[tokio::test]
async fn credentials_stay_home_when_a_url_points_elsewhere() {
    let home = MockServer::start().await;
    let other = MockServer::start().await;
    Mock::given(path("/next"))
        .respond_with(|req: &Request| {
            let has_auth = req.headers.contains_key("authorization");
            ResponseTemplate::new(200).set_body_string(if has_auth { "leaked" } else { "clean" })
        })
        .mount(&other)
        .await;
    let client = Client::new(settings(&home.uri(), Some(token_auth()))).unwrap();
    let r = client
        .get(&format!("{}/next", other.uri()).parse().unwrap())
        .await
        .unwrap();
    assert_eq!(r.body, b"clean");
}

#[tokio::test]
async fn query_api_keys_are_redacted_in_errors() {
    let server = MockServer::start().await;
    Mock::given(path("/x"))
        .respond_with(ResponseTemplate::new(404))
        .mount(&server)
        .await;
    let auth = Auth::ApiKey {
        name: "auth_token".into(),
        value: Secret::new("qs-secret"),
        location: ApiKeyLocation::Query,
    };
    let client = Client::new(settings(&server.uri(), Some(auth))).unwrap();
    let err = client
        .get(&format!("{}/x", server.uri()).parse().unwrap())
        .await
        .unwrap_err();
    assert!(!format!("{err} {err:?}").contains("qs-secret"));
    let received = server.received_requests().await.unwrap();
    assert!(
        received[0]
            .url
            .query()
            .unwrap_or("")
            .contains("auth_token=qs-secret")
    );
}

#[tokio::test]
async fn bodies_over_the_limit_are_refused() {
    let server = MockServer::start().await;
    Mock::given(path("/x"))
        .respond_with(ResponseTemplate::new(200).set_body_string("x".repeat(2000)))
        .mount(&server)
        .await;
    let mut s = settings(&server.uri(), None);
    s.max_response_bytes = 1000;
    let client = Client::new(s).unwrap();
    let err = client
        .get(&format!("{}/x", server.uri()).parse().unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(err, FetchError::TooLarge { limit: 1000, .. }),
        "{err}"
    );
}

fn settings_with(base: &str, auth: Option<Auth>, extra: serde_json::Value) -> ClientSettings {
    let mut config = serde_json::json!({
        "base_url": base,
        "retry": {"backoff_base_secs": 0.01, "backoff_max_secs": 0.05},
    });
    if let (Some(c), Some(e)) = (config.as_object_mut(), extra.as_object()) {
        c.extend(e.clone());
    }
    let config: ClientConfig = serde_json::from_value(config).unwrap();
    ClientSettings::from_config(&config, auth).unwrap()
}

#[tokio::test]
async fn redirects_keep_credentials_only_for_trusted_hosts() {
    let home = MockServer::start().await;
    let other = MockServer::start().await;
    let echo_auth = |req: &Request| {
        let has_auth = req.headers.contains_key("authorization");
        ResponseTemplate::new(200).set_body_string(if has_auth {
            "with-auth"
        } else {
            "without-auth"
        })
    };
    Mock::given(path("/away"))
        .respond_with(
            ResponseTemplate::new(302)
                .insert_header("Location", format!("{}/landing", other.uri()).as_str()),
        )
        .mount(&home)
        .await;
    Mock::given(path("/here"))
        .respond_with(ResponseTemplate::new(307).insert_header("Location", "/landing"))
        .mount(&home)
        .await;
    Mock::given(path("/landing"))
        .respond_with(echo_auth)
        .mount(&home)
        .await;
    Mock::given(path("/landing"))
        .respond_with(echo_auth)
        .mount(&other)
        .await;
    let client = Client::new(settings(&home.uri(), Some(token_auth()))).unwrap();
    let away = client
        .get(&format!("{}/away", home.uri()).parse().unwrap())
        .await
        .unwrap();
    assert_eq!(away.body, b"without-auth");
    assert_eq!(away.url.as_str(), format!("{}/landing", other.uri()));
    let here = client
        .get(&format!("{}/here", home.uri()).parse().unwrap())
        .await
        .unwrap();
    assert_eq!(here.body, b"with-auth");
}

#[tokio::test]
async fn endless_redirects_end_with_an_error() {
    let server = MockServer::start().await;
    Mock::given(path("/loop"))
        .respond_with(ResponseTemplate::new(302).insert_header("Location", "/loop"))
        .mount(&server)
        .await;
    let client = Client::new(settings(&server.uri(), None)).unwrap();
    let err = client
        .get(&format!("{}/loop", server.uri()).parse().unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(err, FetchError::Redirects { max: 10, .. }),
        "{err}"
    );
}

#[tokio::test]
async fn a_sentry_429_without_retry_after_waits_for_the_reset_header() {
    let server = MockServer::start().await;
    let reset = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 2;
    Mock::given(path("/x"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("X-Sentry-Rate-Limit-Remaining", "0")
                .insert_header("X-Sentry-Rate-Limit-Reset", reset.to_string().as_str())
                .set_body_string(
                    "{\"detail\":\"You are attempting to use this endpoint too frequently.\"}",
                ),
        )
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(path("/x"))
        .respond_with(ResponseTemplate::new(200).set_body_string("ok"))
        .mount(&server)
        .await;
    let client = Client::new(settings(&server.uri(), None)).unwrap();
    let started = Instant::now();
    client
        .get(&format!("{}/x", server.uri()).parse().unwrap())
        .await
        .unwrap();
    // The reset is 1 to 2 seconds away (epoch seconds are whole); the backoff alone is 50 ms.
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "waited {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn the_client_side_rate_limit_spaces_requests() {
    let server = MockServer::start().await;
    Mock::given(path("/x"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    let client = Client::new(settings_with(
        &server.uri(),
        None,
        serde_json::json!({"rate_limit": {"requests_per_minute": 600}}),
    ))
    .unwrap();
    let elapsed = time_gets(&client, &format!("{}/x", server.uri()), 4).await;
    // 600 a minute is one per 100 ms: the fourth request starts 300 ms after the first.
    assert!(elapsed >= Duration::from_millis(290), "took {elapsed:?}");
}

#[tokio::test]
async fn rate_limit_headers_pace_the_next_request() {
    let server = MockServer::start().await;
    Mock::given(path("/x"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("X-Ratelimit-Limit", "120")
                .insert_header("X-Ratelimit-Remaining", "100"),
        )
        .mount(&server)
        .await;
    let client = Client::new(settings_with(
        &server.uri(),
        None,
        serde_json::json!({"rate_limit": {"window_secs": 60}}),
    ))
    .unwrap();
    let elapsed = time_gets(&client, &format!("{}/x", server.uri()), 3).await;
    // 120 a minute without a reset time: one every 500 ms.
    assert!(elapsed >= Duration::from_millis(990), "took {elapsed:?}");
}

#[tokio::test]
async fn requests_in_flight_per_host_are_limited() {
    let server = MockServer::start().await;
    Mock::given(path("/slow"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_millis(200)))
        .mount(&server)
        .await;
    let client = Client::new(settings_with(
        &server.uri(),
        None,
        serde_json::json!({"rate_limit": {"max_concurrent_per_host": 1}}),
    ))
    .unwrap();
    let url: url::Url = format!("{}/slow", server.uri()).parse().unwrap();
    let started = Instant::now();
    let (a, b, c) = tokio::join!(client.get(&url), client.get(&url), client.get(&url));
    assert!(a.is_ok() && b.is_ok() && c.is_ok());
    assert!(
        started.elapsed() >= Duration::from_millis(590),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn garbage_retry_after_falls_back_to_backoff() {
    let server = MockServer::start().await;
    Mock::given(path("/x"))
        .respond_with(ResponseTemplate::new(503).insert_header("Retry-After", "soon-ish"))
        .up_to_n_times(2)
        .mount(&server)
        .await;
    Mock::given(path("/x"))
        .respond_with(ResponseTemplate::new(200).set_body_string("ok"))
        .mount(&server)
        .await;
    let client = Client::new(settings(&server.uri(), None)).unwrap();
    let r = client
        .get(&format!("{}/x", server.uri()).parse().unwrap())
        .await
        .unwrap();
    assert_eq!((r.n_retries, r.body.as_slice()), (2, b"ok".as_slice()));
}

#[tokio::test]
async fn a_server_too_slow_to_answer_is_retried_then_reported_as_a_timeout() {
    let server = MockServer::start().await;
    Mock::given(path("/slow"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(2)))
        .expect(2)
        .mount(&server)
        .await;
    let client = Client::new(settings_with(
        &server.uri(),
        None,
        serde_json::json!({"timeout_secs": 0.3, "retry": {"max_retries": 1, "backoff_base_secs": 0.01}}),
    ))
    .unwrap();
    let err = client
        .get(&format!("{}/slow", server.uri()).parse().unwrap())
        .await
        .unwrap_err();
    match &err {
        FetchError::Timeout { secs, setting, .. } => {
            assert_eq!((*secs, *setting), (0.3, "timeout_secs"));
        }
        other => panic!("expected a timeout, got {other}"),
    }
    assert!(err.to_string().contains("timed out after 0.3 s"), "{err}");
    assert_eq!(client.stats().retries, 1);
}

/// A server on loopback that answers each connection, in turn, with the bytes `answers`
/// gives (the last one again for later connections), then closes it, or first stalls it
/// (`true`) for longer than any test waits.
async fn raw_server(answers: Vec<(Vec<u8>, bool)>) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut n = 0;
        while let Ok((mut socket, _)) = listener.accept().await {
            let (bytes, stall) = answers[n.min(answers.len() - 1)].clone();
            n += 1;
            tokio::spawn(async move {
                let mut request = [0u8; 4096];
                let _ = socket.read(&mut request).await;
                let _ = socket.write_all(&bytes).await;
                if stall {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                }
            });
        }
    });
    format!("http://{addr}")
}

// Issue 12: a connection reset or a body cut short after the headers ended the run.
#[tokio::test]
async fn a_body_cut_short_after_the_headers_is_retried() {
    let full = b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\n[1,2,3,4,5]".to_vec();
    let cut = b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\n[1,2".to_vec();
    let base = raw_server(vec![(cut.clone(), false), (cut, false), (full, false)]).await;
    let client = Client::new(settings(&base, None)).unwrap();
    let r = client
        .get(&format!("{base}/events").parse().unwrap())
        .await
        .unwrap();
    assert_eq!(
        (r.n_retries, r.body.as_slice()),
        (2, b"[1,2,3,4,5]".as_slice())
    );
}

#[tokio::test]
async fn a_stalled_body_times_out_on_the_read_timeout_and_says_so() {
    let stalled = b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\n[1,2".to_vec();
    let base = raw_server(vec![(stalled, true)]).await;
    let client = Client::new(settings_with(
        &base,
        None,
        serde_json::json!({"read_timeout_secs": 0.3, "retry": {"max_retries": 1, "backoff_base_secs": 0.01}}),
    ))
    .unwrap();
    let err = client
        .get(&format!("{base}/events").parse().unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            FetchError::Timeout {
                setting: "read_timeout_secs",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("timed out after 0.3 s (read_timeout_secs)"),
        "{err}"
    );
    assert_eq!(client.stats().retries, 1);
}

// Issue 12: `Retry-After: 999999` waited three times the cap before failing.
#[tokio::test]
async fn a_retry_after_beyond_the_cap_fails_at_once_saying_how_long() {
    let server = MockServer::start().await;
    Mock::given(path("/later"))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "999999"))
        .expect(1)
        .mount(&server)
        .await;
    let client = Client::new(settings(&server.uri(), None)).unwrap();
    let started = Instant::now();
    let err = client
        .get(&format!("{}/later", server.uri()).parse().unwrap())
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        matches!(err, FetchError::WaitTooLong { status: 429, .. }),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("999999 s") && text.contains("retry_after_max_secs = 300"),
        "{text}"
    );
}

// Issue 12: a next link carrying the token in `auth_token` and `sig` put it in the stored
// resume URL.
#[test]
fn stored_urls_keep_no_credential() {
    let client = Client::new(settings("https://api.example.com", Some(token_auth()))).unwrap();
    let next: url::Url = "https://api.example.com/e?offset=5&auth_token=token%20s3cr3t-value&sig=x&echo=token%20s3cr3t-value&page_token=p2"
        .parse()
        .unwrap();
    let stored = client.without_credentials(&next).to_string();
    assert_eq!(stored, "https://api.example.com/e?offset=5&page_token=p2");
    let printed = client.redact(&next);
    assert!(!printed.contains("s3cr3t"), "{printed}");
}

// Issue 12: a token with a newline failed at the first request instead of at config time.
#[test]
fn a_credential_that_cannot_be_a_header_is_refused_by_the_config_check() {
    let config: ClientConfig =
        serde_json::from_value(serde_json::json!({"base_url": "https://api.example.com"})).unwrap();
    let auth = Auth::Bearer(Secret::new("abc\ndef"));
    let err = ClientSettings::from_config(&config, Some(auth)).unwrap_err();
    assert_eq!(err.field, "auth.token");
    assert!(!err.to_string().contains("abc"), "{err}");
}

#[tokio::test]
async fn bearer_and_basic_auth_are_sent_as_their_headers() {
    let server = MockServer::start().await;
    Mock::given(path("/bearer"))
        .and(header("Authorization", "Bearer sntrys_abc"))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&server)
        .await;
    // "me:pw" in base64.
    Mock::given(path("/basic"))
        .and(header("Authorization", "Basic bWU6cHc="))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&server)
        .await;
    let bearer = Client::new(settings(
        &server.uri(),
        Some(Auth::Bearer(Secret::new("sntrys_abc"))),
    ))
    .unwrap();
    bearer
        .get(&format!("{}/bearer", server.uri()).parse().unwrap())
        .await
        .unwrap();
    let basic = Client::new(settings(
        &server.uri(),
        Some(Auth::Basic {
            username: "me".into(),
            password: Secret::new("pw"),
        }),
    ))
    .unwrap();
    basic
        .get(&format!("{}/basic", server.uri()).parse().unwrap())
        .await
        .unwrap();
}

#[tokio::test]
async fn gzip_bodies_are_decompressed() {
    use std::io::Write;
    let server = MockServer::start().await;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(b"{\"data\": [1, 2, 3]}").unwrap();
    let gz = encoder.finish().unwrap();
    Mock::given(path("/gz"))
        .and(header("Accept-Encoding", "gzip"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("Content-Encoding", "gzip")
                .set_body_bytes(gz),
        )
        .mount(&server)
        .await;
    let client = Client::new(settings(&server.uri(), None)).unwrap();
    let r = client
        .get(&format!("{}/gz", server.uri()).parse().unwrap())
        .await
        .unwrap();
    assert_eq!(r.body, b"{\"data\": [1, 2, 3]}");
}

#[tokio::test]
async fn a_429_pauses_every_request_to_the_host() {
    let server = MockServer::start().await;
    Mock::given(path("/a"))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "1"))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(path("/a"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    Mock::given(path("/b"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    let client = Client::new(settings(&server.uri(), None)).unwrap();
    let started = Instant::now();
    let first = client.clone();
    let a_url: url::Url = format!("{}/a", server.uri()).parse().unwrap();
    let a = tokio::spawn(async move { first.get(&a_url).await });
    // Let /a get its 429 first, then ask for /b: it waits for the same pause.
    tokio::time::sleep(Duration::from_millis(200)).await;
    client
        .get(&format!("{}/b", server.uri()).parse().unwrap())
        .await
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "/b did not wait: {:?}",
        started.elapsed()
    );
    a.await.unwrap().unwrap();
}

#[tokio::test]
async fn trusted_hosts_receive_the_credentials() {
    let home = MockServer::start().await;
    let partner = MockServer::start().await;
    Mock::given(path("/x"))
        .and(header("Authorization", "token s3cr3t-value"))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&partner)
        .await;
    let mut s = settings(&home.uri(), Some(token_auth()));
    // Both servers are on 127.0.0.1: the partner differs by port, so it is not the same
    // origin; trusting the host name lets the credentials go there.
    s.trusted_hosts = vec!["127.0.0.1".into()];
    let client = Client::new(s).unwrap();
    client
        .get(&format!("{}/x", partner.uri()).parse().unwrap())
        .await
        .unwrap();
}
