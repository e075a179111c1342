//! Tests of the config checks: every mistake is named by file and key path.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Value, json};

use crate::*;

fn secrets() -> Secrets {
    Secrets::from_map([("auth_token".to_owned(), "tok".to_owned())])
}

fn seed_like() -> Value {
    json!({
        "client": {"base_url": "https://api.example.com/v2/",
                   "auth": {"type": "api_key", "name": "Authorization", "api_key": "{{ secrets.auth_token }}", "location": "header"}},
        "resource_defaults": {"primary_key": "id", "write_disposition": "merge", "endpoint": {"params": {"per_page": 50}}},
        "resources": [
            {"name": "events", "endpoint": {"path": "/projects/{{ stream_partition['project_id'] }}/events", "data_selector": "data",
                "paginator": {"type": "cursor", "limit": 50, "cursor_param": "Link",
                              "stop_condition": "not headers.get('Link') or 'rel=\"next\"' not in headers.get('Link')"}}},
            {"name": "projects", "endpoint": {"path": "/organizations/{{ stream_partition['organization_id'] }}/projects", "data_selector": "data"}},
            {"name": "organizations", "endpoint": {"path": "/user/organizations", "data_selector": "data", "params": {"admin": true}}},
        ],
    })
}

#[track_caller]
fn check_error(mutate: impl FnOnce(&mut Value), expect: &str) {
    let mut v = seed_like();
    mutate(&mut v);
    let err = Source::from_value(v, Path::new("pipelines/x.toml"), &secrets()).unwrap_err();
    assert_eq!(err.to_string(), expect);
}

#[test]
fn defaults_merge_and_parents_are_inferred_and_ordered() {
    let s = Source::from_value(seed_like(), Path::new("x.json"), &secrets()).unwrap();
    let names: Vec<&str> = s.resources.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["organizations", "projects", "events"]);
    let events = s.resource("events").unwrap();
    assert_eq!(events.primary_key.as_deref(), Some("id"));
    assert_eq!(events.write_disposition, WriteDisposition::Merge);
    assert_eq!(
        events.parent().unwrap(),
        &ParentRef::new("project_id", "projects", "id").unwrap()
    );
    let orgs = s.resource("organizations").unwrap();
    assert_eq!(
        orgs.params,
        vec![
            ("per_page".to_owned(), "50".to_owned()),
            ("admin".to_owned(), "true".to_owned())
        ]
    );
}

#[test]
fn paths_render_with_partition_values_under_the_base_path() {
    let s = Source::from_value(seed_like(), Path::new("x.json"), &secrets()).unwrap();
    let partition = BTreeMap::from([("project_id".to_owned(), "5a2f c3/7".to_owned())]);
    let url = s
        .first_url(s.resource("events").unwrap(), &partition)
        .unwrap();
    assert_eq!(
        url.as_str(),
        "https://api.example.com/v2/projects/5a2f%20c3%2F7/events?per_page=50"
    );
}

// Issue 12: a parent id of `..` turned `/projects/{id}/saved_searches` into `/saved_searches`.
#[test]
fn a_partition_value_that_cannot_be_a_segment_fails_naming_its_parent() {
    let s = Source::from_value(seed_like(), Path::new("x.json"), &secrets()).unwrap();
    for value in ["..", ".", ""] {
        let partition = BTreeMap::from([("project_id".to_owned(), value.to_owned())]);
        let err = s
            .first_url(s.resource("events").unwrap(), &partition)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            format!(
                "source: resource `events`: partition value `{value}` of `project_id` (the `id` of a `projects` record) cannot be a path segment; nothing was sent for it"
            )
        );
    }
    let partition = BTreeMap::from([("project_id".to_owned(), "../x?y#z".to_owned())]);
    let url = s
        .first_url(s.resource("events").unwrap(), &partition)
        .unwrap();
    assert_eq!(
        url.as_str(),
        "https://api.example.com/v2/projects/..%2Fx%3Fy%23z/events?per_page=50"
    );
}

// Issue 12: `per_page = "x"`, 0, negative or absurd values were accepted, and a token with
// a newline failed only at the first request.
#[test]
fn page_sizes_and_credentials_that_cannot_work_are_refused() {
    for bad in [
        json!("x"),
        json!(0),
        json!(-5),
        json!(1_000_000),
        json!(2.5),
    ] {
        check_error(
            |v| v["resource_defaults"]["endpoint"]["params"]["per_page"] = bad.clone(),
            &format!(
                "config: pipelines/x.toml: `resources[0].endpoint.params.per_page`: a page size is a whole number from 1 to 10000, got `{}`",
                bad.as_str().map_or_else(|| bad.to_string(), str::to_owned)
            ),
        );
    }
    check_error(
        |v| v["resources"][0]["endpoint"]["paginator"]["limit"] = json!(0),
        "config: pipelines/x.toml: `resources[0].endpoint.paginator.limit`: a page size is a whole number from 1 to 10000, got `0`",
    );
    let newline = Secrets::from_map([("auth_token".to_owned(), "tok\nen".to_owned())]);
    let err = Source::from_value(seed_like(), Path::new("pipelines/x.toml"), &newline)
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "config: pipelines/x.toml: `client.auth.api_key`: the secret holds a character a header cannot carry (a newline or another control character)"
    );
}

#[test]
fn unknown_keys_are_named_with_their_path() {
    check_error(
        |v| v["resources"][0]["endpoint"]["paginatr"] = json!({}),
        "config: pipelines/x.toml: `resources[0].endpoint.paginatr`: unknown field `paginatr`, expected one of `path`, `method`, `params`, `data_selector`, `paginator`, `incremental`",
    );
}

#[test]
fn wrong_types_are_named_with_their_path() {
    check_error(
        |v| v["resources"][1]["primary_key"] = json!(5),
        "config: pipelines/x.toml: `resources[1].primary_key`: invalid type: integer `5`, expected a string",
    );
}

#[test]
fn an_unknown_parent_is_an_error() {
    check_error(
        |v| v["resources"][2]["name"] = json!("orgs"),
        "config: pipelines/x.toml: `resources[1].endpoint.path`: no resource provides partition key `organization_id`: declare it as params.organization_id = { type = \"resolve\", resource = \"...\", field = \"id\" }",
    );
}

#[test]
fn a_template_that_cannot_render_is_an_error() {
    let mut v = seed_like();
    v["resources"][2]["endpoint"]["path"] = json!("/user/{{ organizations");
    let err = Source::from_value(v, Path::new("x.toml"), &secrets())
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("config: x.toml: `resources[2].endpoint.path`: template `/user/{{ organizations` does not render"), "{err}");
}

#[test]
fn a_broken_stop_condition_is_an_error() {
    let mut v = seed_like();
    v["resources"][0]["endpoint"]["paginator"]["stop_condition"] = json!("not headers.get(");
    let err = Source::from_value(v, Path::new("x.toml"), &secrets())
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("config: x.toml: `resources[0].endpoint.paginator.stop_condition`: "),
        "{err}"
    );
}

#[test]
fn a_missing_secret_is_named_without_a_value() {
    let err =
        Source::from_value(seed_like(), Path::new("x.toml"), &Secrets::from_map([])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "config: x.toml: `client.auth.api_key`: secret `auth_token` is not set: export AUTH_TOKEN or add it to the secrets file"
    );
}

#[test]
fn literal_tokens_are_refused() {
    check_error(
        |v| v["client"]["auth"]["api_key"] = json!("token abcdef"),
        "config: pipelines/x.toml: `client.auth.api_key`: write credentials as a secret reference such as \"{{ secrets.auth_token }}\", never as a literal",
    );
}

#[test]
fn explicit_resolve_declarations_name_the_parent() {
    let mut v = seed_like();
    v["resources"][1]["endpoint"]["path"] =
        json!("/organizations/{{ stream_partition['org'] }}/projects");
    v["resources"][1]["endpoint"]["params"] =
        json!({"org": {"type": "resolve", "resource": "organizations", "field": "slug"}});
    let s = Source::from_value(v, Path::new("x.toml"), &secrets()).unwrap();
    assert_eq!(
        s.resource("projects").unwrap().parent().unwrap().field,
        "slug"
    );
}

#[test]
fn cycles_are_errors() {
    let v = json!({
        "client": {"base_url": "https://a.example"},
        "resources": [
            {"name": "as", "endpoint": {"path": "/a/{{ stream_partition['b_id'] }}"}},
            {"name": "bs", "endpoint": {"path": "/b/{{ stream_partition['a_id'] }}"}},
        ],
    });
    let err = Source::from_value(v, Path::new("x.toml"), &secrets())
        .unwrap_err()
        .to_string();
    assert!(err.contains("cycle"), "{err}");
}
