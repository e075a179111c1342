//! Follows Bugsnag-style `Link` headers through three pages with no network: the paginator
//! is a state machine fed each response's headers and records.
//!
//! `cargo run -p paginate --example follow_links`

use paginate::{Next, Paginator, PaginatorConfig};

fn main() {
    let config: PaginatorConfig = serde_json::from_value(serde_json::json!({
        "type": "cursor",
        "cursor_param": "Link",
        "limit": 2,
        "stop_condition": "not headers.get('Link') or 'rel=\"next\"' not in headers.get('Link')",
    }))
    .expect("a valid paginator");
    let (strategy, first_params) = config.compile().expect("it compiles");
    let mut paginator = Paginator::new(strategy);
    let mut url: url::Url = "https://api.example.com/projects/p1/events"
        .parse()
        .unwrap();
    url.query_pairs_mut().extend_pairs(first_params);

    // What the server would answer: a `Link` to the next page on every page but the last.
    let mut fetched = Vec::new();
    loop {
        fetched.push(url.to_string());
        let page = fetched.len();
        let mut headers = http::HeaderMap::new();
        if page < 3 {
            let next = format!(
                "<https://api.example.com/projects/p1/events?offset={}>; rel=\"next\"",
                page * 2
            );
            headers.insert("link", next.parse().unwrap());
        }
        let records = serde_json::json!([{"id": page * 2}, {"id": page * 2 + 1}]);
        match paginator
            .next(&url, &headers, &records, &records)
            .expect("a page it understands")
        {
            Next::Url(next) => url = next,
            Next::Stop => break,
        }
    }
    for (n, url) in fetched.iter().enumerate() {
        println!("page {}: {url}", n + 1);
    }
    assert_eq!(fetched.len(), 3);
    assert!(fetched[0].ends_with("per_page=2"), "{}", fetched[0]);
    assert!(fetched[2].ends_with("offset=4"), "{}", fetched[2]);
}

#[test]
fn follows_three_pages() {
    main();
}
