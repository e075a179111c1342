//! The pipeline files load, and their two forms agree.

use std::collections::BTreeMap;
use std::path::Path;

use pipeline::{Overrides, Pipeline};
use source_errors::Secrets;

use crate::support::pipeline_file;

fn load(name: &str) -> Pipeline {
    let secrets = Secrets::from_map([("auth_token".to_owned(), "t".to_owned())]);
    Pipeline::load(&pipeline_file(name), &secrets, &Overrides::default()).unwrap()
}

#[test]
fn the_toml_and_json_forms_of_the_seed_load_to_the_same_pipeline() {
    let toml = load("errors.toml");
    let json = load("errors.json");
    assert_eq!(format!("{:?}", toml.source), format!("{:?}", json.source));
    assert_eq!(
        (toml.destination.as_str(), toml.name.as_str()),
        (json.destination.as_str(), json.name.as_str())
    );
}

#[test]
fn paths_render_as_the_seed_means_them() {
    let p = load("errors.toml");
    let s = &p.source;
    let org = BTreeMap::from([(
        "organization_id".to_owned(),
        "5a2fc306d1befa003981d5ad".to_owned(),
    )]);
    let proj = BTreeMap::from([(
        "project_id".to_owned(),
        "5a2fc37fd1befa003981d5b9".to_owned(),
    )]);
    let url = |r: &str, part: &BTreeMap<String, String>| {
        s.first_url(s.resource(r).unwrap(), part)
            .unwrap()
            .to_string()
    };
    assert_eq!(
        url("organizations", &BTreeMap::new()),
        "https://api.example.com/user/organizations?per_page=50"
    );
    assert_eq!(
        url("projects", &org),
        "https://api.example.com/organizations/5a2fc306d1befa003981d5ad/projects?per_page=50"
    );
    assert_eq!(
        url("saved_searches", &proj),
        "https://api.example.com/projects/5a2fc37fd1befa003981d5b9/saved_searches?per_page=50"
    );
    assert_eq!(
        url("events", &proj),
        "https://api.example.com/projects/5a2fc37fd1befa003981d5b9/events?per_page=50&filters%5Bevent.since%5D%5B%5D%5Btype%5D=eq"
    );
    let parents: Vec<(String, String)> = s
        .resources
        .iter()
        .map(|r| {
            (
                r.name.clone(),
                r.parent()
                    .map(|p| format!("{}.{}", p.resource, p.field))
                    .unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        parents,
        [
            ("organizations".to_owned(), String::new()),
            ("projects".to_owned(), "organizations.id".to_owned()),
            ("saved_searches".to_owned(), "projects.id".to_owned()),
            ("errors".to_owned(), "projects.id".to_owned()),
            ("events".to_owned(), "projects.id".to_owned()),
        ]
    );
}

#[test]
fn the_seed_stop_condition_is_kept_verbatim_and_decides_on_the_link_header() {
    let p = load("errors.toml");
    let events = p.source.resource("events").unwrap();
    let paginate::Strategy::Link {
        stop_condition: Some(stop),
        ..
    } = &events.strategy
    else {
        panic!(
            "events should page by Link header with a stop condition: {:?}",
            events.strategy
        );
    };
    assert_eq!(
        stop.source(),
        r#"not headers.get('Link') or 'rel="next"' not in headers.get('Link')"#
    );
    let mut headers = http::HeaderMap::new();
    let empty = serde_json::json!([]);
    assert!(stop.evaluate(&headers, &empty, &empty).unwrap());
    headers.insert(
        "link",
        "<https://api.example.com/x?offset=50>; rel=\"next\""
            .parse()
            .unwrap(),
    );
    assert!(!stop.evaluate(&headers, &empty, &empty).unwrap());
    assert!(
        p.source.resource("saved_searches").unwrap().strategy == paginate::Strategy::SinglePage
    );
}

#[test]
fn a_bad_file_is_named_with_its_key_path_before_any_request() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    let text = std::fs::read_to_string(pipeline_file("errors.toml"))
        .unwrap()
        .replace(
            "data_selector = \"data\"\n\n[resources.endpoint.paginator]\ntype = \"cursor\"",
            "data_selector = \"data\"\n\n[resources.endpoint.paginator]\ntype = \"cursr\"",
        );
    std::fs::write(&file, text).unwrap();
    let secrets = Secrets::from_map([("auth_token".to_owned(), "t".to_owned())]);
    let err = Pipeline::load(&file, &secrets, &Overrides::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(&format!(
            "config: {}: `resources[0].endpoint.paginator",
            file.display()
        )),
        "{err}"
    );
    assert!(err.contains("unknown variant `cursr`"), "{err}");
    let missing = Pipeline::load(
        Path::new("pipelines/nope.toml"),
        &secrets,
        &Overrides::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        missing.starts_with("config: pipelines/nope.toml: cannot read"),
        "{missing}"
    );
}

/// The Sentry file's mistakes are named by key before any request: a page above Sentry's
/// 100 (a 400 there), a placeholder without a cursor, an unknown placeholder.
#[test]
fn sentry_page_sizes_and_placeholders_are_checked_by_key() {
    let dir = tempfile::tempdir().unwrap();
    let sentry = std::fs::read_to_string(pipeline_file("sentry.toml")).unwrap();
    let secrets = Secrets::from_map([("auth_token".to_owned(), "t".to_owned())]);
    let load = |text: String, base_url: Option<&str>| {
        let file = dir.path().join("s.toml");
        std::fs::write(&file, text).unwrap();
        let overrides = Overrides {
            base_url: base_url.map(str::to_owned),
            ..Overrides::default()
        };
        Pipeline::load(&file, &secrets, &overrides)
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    let big = sentry.replacen("limit = 100", "limit = 200", 1);
    let e = load(big.clone(), None).unwrap_err();
    assert!(
        e.contains("`resources[0].endpoint.paginator.limit`") && e.contains("400 Bad Request"),
        "{e}"
    );
    // A self-hosted instance is Sentry too; another API may take bigger pages.
    let e = load(big.clone(), Some("http://127.0.0.1:9000/api/0/")).unwrap_err();
    assert!(e.contains("400 Bad Request"), "{e}");
    load(big, Some("https://api.example.com/")).unwrap();

    let no_cursor = sentry.replace(
        "[resources.endpoint.incremental]\ncursor_path = \"dateCreated\"\n",
        "",
    );
    let e = load(no_cursor, None).unwrap_err();
    assert!(
        e.contains("`resources[3].endpoint.params.start`")
            && e.contains("needs an `incremental` section"),
        "{e}"
    );
    let unknown = sentry.replace("{incremental.start_value}", "{incremental.last_value}");
    let e = load(unknown, None).unwrap_err();
    assert!(
        e.contains("unknown placeholder `{incremental.last_value}`"),
        "{e}"
    );
}

#[test]
fn every_pipeline_file_checks() {
    for entry in std::fs::read_dir(crate::support::workspace_root().join("pipelines")).unwrap() {
        let path = entry.unwrap().path();
        let secrets = Secrets::from_map([("auth_token".to_owned(), "t".to_owned())]);
        Pipeline::load(&path, &secrets, &Overrides::default()).unwrap_or_else(|e| panic!("{e}"));
    }
}

#[test]
fn a_hard_delete_hint_reaches_the_sink() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.toml");
    let seed = std::fs::read_to_string(pipeline_file("errors.toml")).unwrap();
    std::fs::write(
        &file,
        format!("{seed}\n[normalize.tables.errors.columns.is_deleted]\nhard_delete = true\n"),
    )
    .unwrap();
    let secrets = Secrets::from_map([("auth_token".to_owned(), "t".to_owned())]);
    let p = Pipeline::load(&file, &secrets, &Overrides::default()).unwrap();
    assert_eq!(
        p.sink.hard_delete_columns.get("errors").map(String::as_str),
        Some("is_deleted")
    );
}

#[test]
fn a_zstd_level_out_of_range_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.toml");
    let seed = std::fs::read_to_string(pipeline_file("errors.toml")).unwrap();
    let secrets = Secrets::from_map([("auth_token".to_owned(), "t".to_owned())]);
    for (level, ok) in [(0, false), (1, true), (22, true), (23, false), (-5, false)] {
        std::fs::write(&file, format!("{seed}\n[sink]\nzstd_level = {level}\n")).unwrap();
        match Pipeline::load(&file, &secrets, &Overrides::default()) {
            Ok(p) => {
                assert!(ok, "level {level} was accepted");
                assert_eq!(p.sink.zstd_level, level);
            }
            Err(e) => {
                assert!(!ok, "level {level}: {e}");
                let e = e.to_string();
                assert!(e.contains("`sink.zstd_level`"), "{e}");
                assert!(e.contains(&format!("got {level}")), "{e}");
            }
        }
    }
}
