//! Lands two loads of the same record in a Delta table in a temporary folder: the second
//! merges on the record's id, so the table holds its latest copy once.
//!
//! `cargo run -p sink-parquet --example merge_into_temp_lake`

use std::sync::Arc;

use sink_parquet::{Lake, LoadWriter, ParquetSinkConfig};
use transform::{NormalizeConfig, Normalizer, SchemaRegistry, TableMeta, WriteDisposition};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(dir.path().to_str().unwrap()).expect("a lake in a folder");
    let events = Arc::new(TableMeta {
        name: "events".into(),
        parent: None,
        root: "events".into(),
        primary_key: Some("id".into()),
        write_disposition: WriteDisposition::Merge,
    });
    for (n, status) in ["open", "fixed"].into_iter().enumerate() {
        let load_id = format!("load-{n}");
        let registry = SchemaRegistry::new(lake.schemas().await.unwrap());
        let mut normalizer = Normalizer::new(NormalizeConfig::default(), registry);
        let records = vec![serde_json::json!({"id": "e1", "status": status})];
        let batches = normalizer
            .normalize(&events, &load_id, 0, &records)
            .unwrap();
        let mut load = LoadWriter::new(
            lake.clone(),
            ParquetSinkConfig::default(),
            load_id,
            vec![events.clone()],
        );
        load.write(0, batches).await.unwrap();
        for c in load.commit().await.unwrap() {
            println!(
                "{} at version {}: {} rows added, {} replaced",
                c.table, c.version, c.rows_added, c.rows_removed
            );
            if c.table == "events" {
                assert_eq!(
                    (c.version, c.rows_added, c.rows_removed),
                    (n as u64, 1, n as u64)
                );
            }
        }
    }
    let rows = lake
        .read_rows("events")
        .await
        .unwrap()
        .expect("the table exists");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["status"], "fixed");
}

#[test]
fn merges_on_id() {
    main();
}
