//! Fetches a page from a server on loopback with an API key header, the way the source
//! fetches from Bugsnag: the key goes in a header, never in the URL or a log line.
//!
//! `cargo run -p http-core --example get_from_loopback`

use http_core::{ApiKeyLocation, Auth, Client, ClientConfig, ClientSettings, Secret};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/user/organizations"))
        .and(header("authorization", "token abc"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!([{"id": "o1"}])))
        .mount(&server)
        .await;

    let config: ClientConfig =
        serde_json::from_value(serde_json::json!({ "base_url": server.uri() })).unwrap();
    let auth = Auth::ApiKey {
        name: "Authorization".into(),
        value: Secret::new("token abc"),
        location: ApiKeyLocation::Header,
    };
    let client =
        Client::new(ClientSettings::from_config(&config, Some(auth)).unwrap()).expect("a client");
    let url = format!("{}/user/organizations", server.uri())
        .parse()
        .unwrap();
    let page = client.get(&url).await.expect("the server answers");
    let body: serde_json::Value = serde_json::from_slice(&page.body).unwrap();
    println!("{} {}: {body}", page.status, page.url);
    assert_eq!(page.status, 200);
    assert_eq!(body[0]["id"], "o1");
}

#[test]
fn gets_a_page() {
    main();
}
