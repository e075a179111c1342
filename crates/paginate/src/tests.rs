//! Paginator state machines without a server, and the page loop against a real one.

use http::{HeaderMap, HeaderValue};
use serde_json::{Value, json};
use url::Url;

use crate::*;

fn strategy(config: Value) -> Strategy {
    serde_json::from_value::<PaginatorConfig>(config)
        .unwrap()
        .compile()
        .unwrap()
        .0
}

fn link(v: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("link", HeaderValue::from_str(v).unwrap());
    h
}

fn url(s: &str) -> Url {
    s.parse().unwrap()
}

#[test]
fn bugsnag_nested_offset_links_are_followed_exactly_as_given() {
    // From the real recording: the next link carries percent-encoded nested params.
    let next = "https://api.bugsnag.com/projects/p/events?base=2017-12-12T11%3A55%3A03.000Z&offset%5Bcount%5D=30&offset%5Bid%5D=abc&per_page=30";
    let mut p = Paginator::new(strategy(json!({"type": "header_link"})));
    let got = p
        .next(
            &url("https://api.bugsnag.com/projects/p/events?per_page=30"),
            &link(&format!("<{next}>; rel=\"next\"")),
            &json!([]),
            &json!([1]),
        )
        .unwrap();
    assert_eq!(got, Next::Url(url(next)));
    assert_eq!(url(next).as_str(), next);
}

#[test]
fn sentry_previous_and_next_pairs_stop_on_results_false() {
    let mut p = Paginator::new(strategy(json!({"type": "header_link"})));
    let h = link(
        r#"<https://sentry.io/api/0/x/?&cursor=0:0:1>; rel="previous"; results="false"; cursor="0:0:1", <https://sentry.io/api/0/x/?&cursor=0:100:0>; rel="next"; results="true"; cursor="0:100:0""#,
    );
    let got = p
        .next(
            &url("https://sentry.io/api/0/x/"),
            &h,
            &json!([]),
            &json!([1]),
        )
        .unwrap();
    assert_eq!(
        got,
        Next::Url(url("https://sentry.io/api/0/x/?&cursor=0:100:0"))
    );
    let last = link(
        r#"<https://sentry.io/api/0/x/?&cursor=0:100:1>; rel="previous"; results="true"; cursor="0:100:1", <https://sentry.io/api/0/x/?&cursor=0:200:0>; rel="next"; results="false"; cursor="0:200:0""#,
    );
    assert_eq!(
        p.next(
            &url("https://sentry.io/api/0/x/?&cursor=0:100:0"),
            &last,
            &json!([]),
            &json!([1])
        )
        .unwrap(),
        Next::Stop
    );
}

#[test]
fn relative_links_resolve_against_the_request_url() {
    let mut p = Paginator::new(strategy(json!({"type": "header_link"})));
    let got = p
        .next(
            &url("https://a.example/v2/items?page=1"),
            &link("</v2/items?page=2>; REL=next"),
            &json!([]),
            &json!([1]),
        )
        .unwrap();
    assert_eq!(got, Next::Url(url("https://a.example/v2/items?page=2")));
}

#[test]
fn a_repeated_next_url_is_a_loop() {
    let mut p = Paginator::new(strategy(json!({"type": "header_link"})));
    let here = url("https://a.example/x?page=1");
    let err = p
        .next(
            &here,
            &link("<https://a.example/x?page=1>; rel=\"next\""),
            &json!([]),
            &json!([1]),
        )
        .unwrap_err();
    assert!(matches!(err, PagingProblem::Repeated(_)));
}

#[test]
fn body_cursor_offset_page_number_and_json_link() {
    let mut c = Paginator::new(strategy(
        json!({"type": "cursor", "cursor_path": "meta.next", "cursor_param": "after"}),
    ));
    assert_eq!(
        c.next(
            &url("https://a/x?per_page=2"),
            &HeaderMap::new(),
            &json!({"meta": {"next": "c2"}}),
            &json!([1])
        )
        .unwrap(),
        Next::Url(url("https://a/x?per_page=2&after=c2"))
    );
    assert_eq!(
        c.next(
            &url("https://a/x?after=c2"),
            &HeaderMap::new(),
            &json!({"meta": {"next": null}}),
            &json!([1])
        )
        .unwrap(),
        Next::Stop
    );

    let mut o = Paginator::new(strategy(
        json!({"type": "offset", "limit": 2, "total_path": "total"}),
    ));
    assert_eq!(
        o.next(
            &url("https://a/x?offset=0&limit=2"),
            &HeaderMap::new(),
            &json!({"total": 3}),
            &json!([1, 2])
        )
        .unwrap(),
        Next::Url(url("https://a/x?limit=2&offset=2"))
    );
    assert_eq!(
        o.next(
            &url("https://a/x?limit=2&offset=2"),
            &HeaderMap::new(),
            &json!({"total": 3}),
            &json!([3])
        )
        .unwrap(),
        Next::Stop
    );

    let mut n = Paginator::new(strategy(
        json!({"type": "page_number", "total_path": "pages"}),
    ));
    assert_eq!(
        n.next(
            &url("https://a/x?page=1"),
            &HeaderMap::new(),
            &json!({"pages": 2}),
            &json!([1])
        )
        .unwrap(),
        Next::Url(url("https://a/x?page=2"))
    );
    assert_eq!(
        n.next(
            &url("https://a/x?page=2"),
            &HeaderMap::new(),
            &json!({"pages": 2}),
            &json!([1])
        )
        .unwrap(),
        Next::Stop
    );

    let mut j = Paginator::new(strategy(
        json!({"type": "json_link", "next_url_path": "paging.next"}),
    ));
    assert_eq!(
        j.next(
            &url("https://a/x"),
            &HeaderMap::new(),
            &json!({"paging": {"next": "/x?p=2"}}),
            &json!([1])
        )
        .unwrap(),
        Next::Url(url("https://a/x?p=2"))
    );
}

#[test]
fn offset_without_an_end_signal_is_refused_at_config_time() {
    let config: PaginatorConfig = serde_json::from_value(
        json!({"type": "offset", "limit": 10, "stop_after_empty_page": false}),
    )
    .unwrap();
    let err = config.compile().unwrap_err();
    assert_eq!(err.field, "stop_after_empty_page");
    assert!(err.message.contains("never ends"), "{err}");
}

#[test]
fn offset_can_page_past_empty_pages_up_to_the_total() {
    let mut o = Paginator::new(strategy(
        json!({"type": "offset", "limit": 2, "total_path": "total", "stop_after_empty_page": false}),
    ));
    // An empty page in the middle (filtered server-side), the total says there is more.
    assert_eq!(
        o.next(
            &url("https://a/x?offset=0&limit=2"),
            &HeaderMap::new(),
            &json!({"total": 6}),
            &json!([])
        )
        .unwrap(),
        Next::Url(url("https://a/x?limit=2&offset=2"))
    );
}

#[test]
fn link_headers_with_commas_in_urls_and_bare_params_parse() {
    let mut p = Paginator::new(strategy(json!({"type": "header_link"})));
    let h = link(
        r#"<https://a.example/x?ids=1,2,3&page=1>;rel=prev,<https://a.example/x?ids=1,2,3&page=3>;rel="next";title=n"#,
    );
    let got = p
        .next(
            &url("https://a.example/x?ids=1,2,3&page=2"),
            &h,
            &json!([]),
            &json!([1]),
        )
        .unwrap();
    assert_eq!(got, Next::Url(url("https://a.example/x?ids=1,2,3&page=3")));
}

#[test]
fn repeated_link_headers_are_all_read() {
    let mut h = HeaderMap::new();
    h.append(
        "link",
        HeaderValue::from_static("<https://a.example/x?page=1>; rel=\"prev\""),
    );
    h.append(
        "Link",
        HeaderValue::from_static("<https://a.example/x?page=3>; rel=\"next\""),
    );
    let mut p = Paginator::new(strategy(json!({"type": "header_link"})));
    let got = p
        .next(
            &url("https://a.example/x?page=2"),
            &h,
            &json!([]),
            &json!([1]),
        )
        .unwrap();
    assert_eq!(got, Next::Url(url("https://a.example/x?page=3")));
}

/// The network loop, against a server on loopback.
#[cfg(feature = "fetch")]
mod page_loops {
    use serde_json::json;
    use wiremock::matchers::{path, query_param};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    use super::{strategy, url};
    use crate::*;

    fn client(base: &str) -> http_core::Client {
        let config: http_core::ClientConfig =
            serde_json::from_value(json!({"base_url": base, "retry": {"backoff_base_secs": 0.01}}))
                .unwrap();
        http_core::Client::new(http_core::ClientSettings::from_config(&config, None).unwrap())
            .unwrap()
    }

    #[tokio::test]
    async fn page_loop_follows_links_until_the_seed_stop_condition() {
        let server = MockServer::start().await;
        let base = server.uri();
        Mock::given(path("/items"))
            .and(query_param("offset", "2"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"data": [{"id": 3}]})))
            .mount(&server)
            .await;
        Mock::given(path("/items"))
            .respond_with(
                ResponseTemplate::new(200)
                    .insert_header(
                        "Link",
                        format!("<{base}/items?offset=2>; rel=\"next\"").as_str(),
                    )
                    .set_body_json(json!({"data": [{"id": 1}, {"id": 2}]})),
            )
            .mount(&server)
            .await;
        let s = strategy(
            json!({"type": "cursor", "cursor_param": "Link", "stop_condition": "not headers.get('Link') or 'rel=\"next\"' not in headers.get('Link')"}),
        );
        let mut pages = PageLoop::new(
            client(&base),
            url(&format!("{base}/items")),
            s,
            Some(JsonPath::parse("data").unwrap()),
            "items".into(),
            None,
        );
        let p0 = pages.next_page().await.unwrap().unwrap();
        let p1 = pages.next_page().await.unwrap().unwrap();
        assert!(pages.next_page().await.unwrap().is_none());
        assert_eq!((p0.records.len(), p1.records.len(), p1.page_idx), (2, 1, 1));
    }

    #[tokio::test]
    async fn a_broken_body_names_the_paging_and_page() {
        let server = MockServer::start().await;
        Mock::given(path("/items"))
            .respond_with(ResponseTemplate::new(200).set_body_string("{\"data\": ["))
            .mount(&server)
            .await;
        let mut pages = PageLoop::new(
            client(&server.uri()),
            url(&format!("{}/items", server.uri())),
            Strategy::SinglePage,
            None,
            "items[project_id=p1]".into(),
            None,
        );
        let err = pages.next_page().await.unwrap_err();
        assert!(
            err.to_string()
                .starts_with("paginate: page 1 of `items[project_id=p1]`"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn page_loop_stops_at_max_pages_and_at_an_empty_page_with_a_next_link() {
        let server = MockServer::start().await;
        let base = server.uri();
        // Every page links to a next one: an endless API.
        Mock::given(path("/endless"))
            .respond_with({
                let origin = base.clone();
                move |req: &wiremock::Request| {
                    let n: u32 = req
                        .url
                        .query_pairs()
                        .find(|(k, _)| k == "p")
                        .map_or(0, |(_, v)| v.parse().unwrap());
                    ResponseTemplate::new(200)
                        .insert_header(
                            "Link",
                            format!("<{}/endless?p={}>; rel=\"next\"", origin, n + 1).as_str(),
                        )
                        .set_body_json(json!([{"id": n}]))
                }
            })
            .mount(&server)
            .await;
        let mut pages = PageLoop::new(
            client(&base),
            url(&format!("{base}/endless")),
            Strategy::Link {
                rel: "next".into(),
                stop_condition: None,
            },
            None,
            "endless".into(),
            Some(3),
        );
        let mut n = 0;
        while pages.next_page().await.unwrap().is_some() {
            n += 1;
        }
        assert_eq!(n, 3);

        // An empty page that still announces a next one ends the paging.
        Mock::given(path("/empty"))
            .respond_with(
                ResponseTemplate::new(200)
                    .insert_header("Link", format!("<{base}/empty?p=2>; rel=\"next\"").as_str())
                    .set_body_json(json!([])),
            )
            .expect(1)
            .mount(&server)
            .await;
        let mut pages = PageLoop::new(
            client(&base),
            url(&format!("{base}/empty")),
            Strategy::Link {
                rel: "next".into(),
                stop_condition: None,
            },
            None,
            "empty".into(),
            None,
        );
        assert_eq!(pages.next_page().await.unwrap().unwrap().records.len(), 0);
        assert!(pages.next_page().await.unwrap().is_none());
    }
}
