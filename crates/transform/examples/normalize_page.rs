//! Normalizes one page of Bugsnag-shaped events into Arrow batches, one per table, the way
//! dlt names them: nested objects flattened into `parent__child` columns, lists into child
//! tables linked by `_dlt_parent_id` and `_dlt_root_id`.
//!
//! `cargo run -p transform --example normalize_page`

use std::sync::Arc;

use transform::{NormalizeConfig, Normalizer, SchemaRegistry, TableMeta, WriteDisposition};

fn main() {
    let page = r#"[
        {"id": "e1", "receivedAt": "2017-12-12T10:58:55.000Z",
         "app": {"releaseStage": "production"},
         "breadcrumbs": [{"name": "click"}, {"name": "navigate"}]},
        {"id": "e2", "receivedAt": "2017-12-12T10:59:01.000Z", "app": {"releaseStage": "beta"},
         "breadcrumbs": []}
    ]"#;
    let records: Vec<serde_json::Value> = serde_json::from_str(page).expect("a JSON array");
    let events = Arc::new(TableMeta {
        name: "events".into(),
        parent: None,
        root: "events".into(),
        primary_key: Some("id".into()),
        write_disposition: WriteDisposition::Merge,
    });
    let mut normalizer = Normalizer::new(NormalizeConfig::default(), SchemaRegistry::default());
    let batches = normalizer
        .normalize(&events, "load-1", 0, &records)
        .expect("the page normalizes");
    for b in &batches {
        let columns: Vec<&str> = b
            .batch
            .schema_ref()
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        println!(
            "{}: {} rows, columns {columns:?}",
            b.table.name,
            b.batch.num_rows()
        );
    }
    assert_eq!(batches.len(), 2);
    assert_eq!(batches[0].batch.num_rows(), 2);
    assert!(
        batches[0]
            .batch
            .schema()
            .field_with_name("app__release_stage")
            .is_ok()
    );
    assert_eq!(batches[1].table.name, "events__breadcrumbs");
    assert_eq!(batches[1].batch.num_rows(), 2);
}

#[test]
fn normalizes_a_page() {
    main();
}
