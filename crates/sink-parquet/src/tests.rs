//! Tests of the sink: loads into a temporary lake, read back from the committed files.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use object_store::ObjectStoreExt;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::{Value, json};

use transform::{NormalizeConfig, Normalizer, SchemaRegistry, TableMeta, WriteDisposition};

use crate::*;

fn root(disposition: WriteDisposition) -> Arc<TableMeta> {
    Arc::new(TableMeta {
        name: "events".into(),
        parent: None,
        root: "events".into(),
        primary_key: Some("id".into()),
        write_disposition: disposition,
    })
}

/// Runs one load: each inner list is one page.
async fn load(lake: &Lake, meta: &Arc<TableMeta>, pages: &[Vec<Value>]) -> Vec<TableCommit> {
    stage(lake, meta, pages).await.commit().await.unwrap()
}

/// The committed rows of a table: `id` (or `_dlt_root_id` for a child) -> `v` values.
async fn rows(lake: &Lake, table: &str, key: &str) -> BTreeMap<String, Vec<i64>> {
    rows_at(lake, table, key, None).await
}

/// The rows of a table at `version` (the latest when `None`), read from its data files.
async fn rows_at(
    lake: &Lake,
    table: &str,
    key: &str,
    version: Option<u64>,
) -> BTreeMap<String, Vec<i64>> {
    let t = match version {
        Some(v) => lake.load_table_version(table, v).await.unwrap(),
        None => lake.load_table(table).await.unwrap().unwrap(),
    };
    let mut out: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for f in t.snapshot().unwrap().log_data().iter() {
        let path = lake.file_path(table, &f.path());
        let bytes = lake
            .store()
            .get(&path)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        for b in ParquetRecordBatchReaderBuilder::try_new(bytes)
            .unwrap()
            .build()
            .unwrap()
        {
            let b = b.unwrap();
            let keys = b.column_by_name(key).unwrap().as_string::<i32>().clone();
            let vals = b
                .column_by_name("v")
                .unwrap()
                .as_primitive::<Int64Type>()
                .clone();
            for i in 0..b.num_rows() {
                out.entry(keys.value(i).to_owned())
                    .or_default()
                    .push(vals.value(i));
            }
        }
    }
    out.values_mut().for_each(|v| v.sort_unstable());
    out
}

fn parquet_files(dir: &std::path::Path, table: &str) -> usize {
    std::fs::read_dir(dir.join(table))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "parquet")
        })
        .count()
}

#[tokio::test]
async fn records_that_come_again_unchanged_are_not_rewritten() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(dir.path().to_str().unwrap()).unwrap();
    let m = root(WriteDisposition::Merge);
    let page = vec![
        json!({"id": "a", "v": 1, "items": [{"v": 10}, {"v": 11}]}),
        json!({"id": "b", "v": 2, "items": [{"v": 20}]}),
    ];
    load(&lake, &m, std::slice::from_ref(&page)).await;
    // The same records: nothing to commit.
    let again = load(&lake, &m, std::slice::from_ref(&page)).await;
    assert!(again.is_empty(), "{again:?}");
    // One changed record: only it and its children are replaced.
    let changed = load(
        &lake,
        &m,
        &[vec![
            json!({"id": "a", "v": 1, "items": [{"v": 10}, {"v": 11}]}),
            json!({"id": "b", "v": 3, "items": [{"v": 30}]}),
        ]],
    )
    .await;
    let by_table: BTreeMap<&str, (u64, u64)> = changed
        .iter()
        .map(|c| (c.table.as_str(), (c.rows_added, c.rows_removed)))
        .collect();
    assert_eq!(by_table["events"], (1, 1));
    assert_eq!(by_table["events__items"], (1, 1));
    assert_eq!(
        rows(&lake, "events", "id").await,
        BTreeMap::from([("a".into(), vec![1]), ("b".into(), vec![3])])
    );
    // Without stored hashes (a load killed after the root's commit and before its hash
    // table's) the records merge again: the children are restored with their root.
    let hashes = lake.table_url(&crate::hash_table("events"));
    std::fs::remove_dir_all(hashes.to_file_path().unwrap()).unwrap();
    let remerged = load(&lake, &m, std::slice::from_ref(&page)).await;
    assert!(
        remerged
            .iter()
            .any(|c| c.table == "events__items" && c.rows_added == 3)
    );
}

#[tokio::test]
async fn merge_replaces_rows_and_their_children_and_the_later_page_wins() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(dir.path().to_str().unwrap()).unwrap();
    let m = root(WriteDisposition::Merge);
    load(
        &lake,
        &m,
        &[vec![
            json!({"id": "a", "v": 1, "items": [{"v": 10}, {"v": 11}]}),
            json!({"id": "b", "v": 2}),
        ]],
    )
    .await;

    // Second load: `a` comes twice, in two pages; the later page wins, with its children.
    let commits = load(
        &lake,
        &m,
        &[
            vec![json!({"id": "a", "v": 3, "items": [{"v": 30}, {"v": 31}, {"v": 32}]})],
            vec![
                json!({"id": "a", "v": 4, "items": [{"v": 40}]}),
                json!({"id": "c", "v": 5}),
            ],
        ],
    )
    .await;
    let root_rows = rows(&lake, "events", "id").await;
    assert_eq!(
        root_rows,
        BTreeMap::from([
            ("a".into(), vec![4]),
            ("b".into(), vec![2]),
            ("c".into(), vec![5])
        ])
    );
    let child_rows: Vec<i64> = rows(&lake, "events__items", "_dlt_root_id")
        .await
        .into_values()
        .flatten()
        .collect();
    assert_eq!(child_rows, vec![40]);
    let versions: BTreeMap<String, u64> = commits
        .iter()
        .map(|c| (c.table.clone(), c.version))
        .collect();
    assert_eq!(
        versions,
        BTreeMap::from([
            ("events".into(), 1),
            ("events__items".into(), 1),
            (crate::hash_table("events"), 1)
        ])
    );
    // The replaced files are gone from the folder.
    let t = lake.load_table("events").await.unwrap().unwrap();
    assert_eq!(
        parquet_files(dir.path(), "events"),
        t.snapshot().unwrap().log_data().iter().count()
    );
}

#[tokio::test]
async fn merge_removes_children_of_a_row_whose_list_emptied() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(dir.path().to_str().unwrap()).unwrap();
    let m = root(WriteDisposition::Merge);
    load(
        &lake,
        &m,
        &[vec![json!({"id": "a", "v": 1, "items": [{"v": 10}]})]],
    )
    .await;
    load(&lake, &m, &[vec![json!({"id": "a", "v": 2, "items": []})]]).await;
    assert!(
        rows(&lake, "events__items", "_dlt_root_id")
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn append_adds_and_replace_swaps() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(dir.path().to_str().unwrap()).unwrap();
    let a = root(WriteDisposition::Append);
    load(&lake, &a, &[vec![json!({"id": "a", "v": 1})]]).await;
    load(&lake, &a, &[vec![json!({"id": "a", "v": 2})]]).await;
    assert_eq!(
        rows(&lake, "events", "id").await,
        BTreeMap::from([("a".into(), vec![1, 2])])
    );

    let r = root(WriteDisposition::Replace);
    let commits = load(
        &lake,
        &r,
        &[vec![json!({"id": "z", "v": 9, "new_col": true})]],
    )
    .await;
    assert_eq!(
        rows(&lake, "events", "id").await,
        BTreeMap::from([("z".into(), vec![9])])
    );
    assert_eq!(commits[0].rows_removed, 2);
    assert_eq!(parquet_files(dir.path(), "events"), 1);
    let info = lake.table_info("events").await.unwrap().unwrap();
    assert!(
        info.columns.iter().any(|(c, _)| c == "new_col"),
        "{:?}",
        info.columns
    );
}

#[tokio::test]
async fn an_aborted_load_leaves_no_file_and_no_table() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(dir.path().to_str().unwrap()).unwrap();
    let m = root(WriteDisposition::Merge);
    let mut normalizer = Normalizer::new(NormalizeConfig::default(), SchemaRegistry::default());
    let config = ParquetSinkConfig {
        target_file_bytes: 1,
        ..ParquetSinkConfig::default()
    };
    let mut writer = LoadWriter::new(lake.clone(), config, "l".into(), vec![m.clone()]);
    let batches = normalizer
        .normalize(&m, "l", 0, &[json!({"id": "a", "v": 1})])
        .unwrap();
    writer.write(0, batches).await.unwrap();
    assert_eq!(
        parquet_files(dir.path(), "events"),
        1,
        "the tiny target makes a staged file at once"
    );
    writer.abort().await;
    assert_eq!(parquet_files(dir.path(), "events"), 0);
    assert!(lake.load_table("events").await.unwrap().is_none());
}

#[tokio::test]
async fn column_sources_live_in_the_delta_schema_and_keep_collided_names_across_runs() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(dir.path().to_str().unwrap()).unwrap();
    let m = root(WriteDisposition::Merge);
    load(
        &lake,
        &m,
        &[vec![json!({"id": "a", "userId": "u", "user_id": 1})]],
    )
    .await;
    let schemas = lake.schemas().await.unwrap();
    let events = &schemas["events"];
    let source = |name: &str| {
        events
            .columns()
            .iter()
            .find(|c| c.name == name)
            .and_then(|c| c.source.clone())
    };
    assert_eq!(source("user_id").as_deref(), Some("/userId"));
    assert_eq!(source("user_id_1").as_deref(), Some("/user_id"));
    // A later run meets `user_id` alone first: it still lands in `user_id_1`.
    load(&lake, &m, &[vec![json!({"id": "b", "user_id": 2})]]).await;
    let t = lake.load_table("events").await.unwrap().unwrap();
    let schema = t.snapshot().unwrap().snapshot().arrow_schema();
    let names: Vec<&String> = schema.fields().iter().map(|f| f.name()).collect();
    assert!(
        !names.iter().any(|n| n.as_str() == "user_id_2"),
        "{names:?}"
    );
    assert_eq!(
        schema.field_with_name("user_id_1").unwrap().data_type(),
        &arrow_schema::DataType::Int64
    );
}

#[tokio::test]
async fn merge_reads_and_rewrites_only_the_files_that_hold_incoming_ids() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(dir.path().to_str().unwrap()).unwrap();
    let m = root(WriteDisposition::Merge);
    // Three loads, three files per table.
    for prefix in ["a", "b", "c"] {
        let page: Vec<Value> = (0..200)
            .map(|i| json!({"id": format!("{prefix}{i}"), "v": i, "items": [{"v": i}, {"v": i + 1}]}))
            .collect();
        load(&lake, &m, &[page]).await;
    }
    // `a5` changes and loses its children; `b7` changes; `d1` is new.
    let commits = load(
        &lake,
        &m,
        &[vec![
            json!({"id": "a5", "v": 500, "items": []}),
            json!({"id": "b7", "v": 700, "items": [{"v": 7000}]}),
            json!({"id": "d1", "v": 1}),
        ]],
    )
    .await;
    let by_table: BTreeMap<&str, &TableCommit> =
        commits.iter().map(|c| (c.table.as_str(), c)).collect();
    for table in ["events", "events__items"] {
        let c = by_table[table];
        assert_eq!(
            c.files_removed, 2,
            "{table}: the `a` and `b` files only: {c:?}"
        );
        assert!(
            c.bytes_rewritten * 4 < c.bytes_before * 3,
            "{table}: the `c` file was not read: {c:?}"
        );
    }
    let events = rows(&lake, "events", "id").await;
    assert_eq!(events.len(), 601);
    assert_eq!(events["a5"], vec![500]);
    assert_eq!(events["b7"], vec![700]);
    assert_eq!(events["c5"], vec![5]);
    let children = rows(&lake, "events__items", "_dlt_root_id").await;
    assert_eq!(
        children.values().map(Vec::len).sum::<usize>(),
        599 * 2 - 2 + 1
    );
    assert!(children.values().flatten().any(|v| *v == 7000));
}

/// A merge looks for incoming ids only in the row groups whose filters may hold them, and
/// a file that holds one is still rewritten whole: every other row group's rows stay.
#[tokio::test]
async fn a_merge_into_one_row_group_of_a_file_keeps_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(dir.path().to_str().unwrap()).unwrap();
    let m = root(WriteDisposition::Merge);
    let config = ParquetSinkConfig {
        row_group_rows: 50,
        ..ParquetSinkConfig::default()
    };
    let page: Vec<Value> = (0..200)
        .map(|i| json!({"id": format!("x{i}"), "v": i, "items": [{"v": i}]}))
        .collect();
    stage_with(&lake, &m, &[page], config.clone())
        .await
        .commit()
        .await
        .unwrap();
    // One file of four row groups per table; `x170` is in the last one.
    let commits = stage_with(
        &lake,
        &m,
        &[vec![
            json!({"id": "x170", "v": 1700, "items": [{"v": 17000}]}),
        ]],
        config,
    )
    .await
    .commit()
    .await
    .unwrap();
    for table in ["events", "events__items"] {
        let c = commits.iter().find(|c| c.table == table).unwrap();
        assert_eq!((c.files_removed, c.rows_removed), (1, 1), "{table}: {c:?}");
    }
    let events = rows(&lake, "events", "id").await;
    assert_eq!(events.len(), 200);
    assert_eq!(events["x170"], vec![1700]);
    assert_eq!(events["x3"], vec![3]);
    let items = rows(&lake, "events__items", "_dlt_root_id").await;
    assert_eq!(items.values().map(Vec::len).sum::<usize>(), 200);
    assert!(items.values().flatten().any(|v| *v == 17000));
    assert!(!items.values().flatten().any(|v| *v == 170));
}

/// Writes one load's pages without committing it.
/// A root whose name begins with another root's name and `__` is a table of its own: the
/// other root's merge neither sweeps it in as a child nor removes its children.
#[tokio::test]
async fn a_root_named_like_a_child_of_another_root_keeps_its_rows() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(dir.path().to_str().unwrap()).unwrap();
    let events = root(WriteDisposition::Merge);
    let archive = Arc::new(TableMeta {
        name: "events__archive".into(),
        root: "events__archive".into(),
        ..(*events).clone()
    });
    for v in [1, 2] {
        let registry = SchemaRegistry::new(lake.schemas().await.unwrap());
        let mut normalizer = Normalizer::new(NormalizeConfig::default(), registry);
        let load_id = uuid::Uuid::new_v4().to_string();
        let mut writer = LoadWriter::new(
            lake.clone(),
            ParquetSinkConfig::default(),
            load_id.clone(),
            vec![events.clone(), archive.clone()],
        );
        // The same ids in both roots, so that their rows' keys are the same too.
        for (seq, meta) in [&events, &archive].into_iter().enumerate() {
            let records = vec![json!({"id": "a", "v": v, "items": [{"v": 10 * v}]})];
            let batches = normalizer
                .normalize(meta, &load_id, seq as u64, &records)
                .unwrap();
            writer.write(seq as u64, batches).await.unwrap();
        }
        writer.commit().await.unwrap();
    }
    for table in ["events", "events__archive"] {
        assert_eq!(
            rows(&lake, table, "id").await,
            BTreeMap::from([("a".into(), vec![2])]),
            "{table}"
        );
        let children: Vec<i64> = rows(&lake, &format!("{table}__items"), "_dlt_root_id")
            .await
            .into_values()
            .flatten()
            .collect();
        assert_eq!(children, vec![20], "{table}__items");
    }
}

async fn stage(lake: &Lake, meta: &Arc<TableMeta>, pages: &[Vec<Value>]) -> LoadWriter {
    stage_with(lake, meta, pages, ParquetSinkConfig::default()).await
}

/// [`stage`] with a sink configuration of its own.
async fn stage_with(
    lake: &Lake,
    meta: &Arc<TableMeta>,
    pages: &[Vec<Value>],
    config: ParquetSinkConfig,
) -> LoadWriter {
    let registry = SchemaRegistry::new(lake.schemas().await.unwrap());
    let mut normalizer = Normalizer::new(NormalizeConfig::default(), registry);
    let load_id = uuid::Uuid::new_v4().to_string();
    let mut writer = LoadWriter::new(lake.clone(), config, load_id.clone(), vec![meta.clone()]);
    for (seq, records) in pages.iter().enumerate() {
        let batches = normalizer
            .normalize(meta, &load_id, seq as u64, records)
            .unwrap();
        writer.write(seq as u64, batches).await.unwrap();
    }
    writer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_both_land_without_lost_updates_or_duplicate_ids() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(dir.path().to_str().unwrap()).unwrap();
    let m = root(WriteDisposition::Merge);
    let record = |id: String, v: i64| json!({"id": id, "v": v, "items": [{"v": v}, {"v": v}]});
    load(
        &lake,
        &m,
        &[(0..10).map(|i| record(format!("s{i}"), 0)).collect()],
    )
    .await;
    for round in 0..5 {
        // Two writers, disjoint ids plus ten shared ones, committing at the same moment.
        let page = |who: &str, v: i64| -> Vec<Value> {
            (0..50)
                .map(|i| record(format!("{who}{round}-{i}"), v))
                .chain((0..10).map(|i| record(format!("s{i}"), v)))
                .collect()
        };
        let a = stage(&lake, &m, &[page("a", 1)]).await;
        let b = stage(&lake, &m, &[page("b", 2)]).await;
        let (ra, rb) = tokio::join!(a.commit(), b.commit());
        ra.unwrap();
        rb.unwrap();
    }
    let events = rows(&lake, "events", "id").await;
    assert_eq!(events.len(), 10 + 5 * 100, "no lost row");
    for (id, vs) in &events {
        assert_eq!(vs.len(), 1, "`{id}` landed {} times", vs.len());
        if id.starts_with('s') {
            assert!(vs[0] == 1 || vs[0] == 2, "`{id}` kept an old value {vs:?}");
        }
    }
    // The children follow whichever writer won each root row.
    let children = rows(&lake, "events__items", "_dlt_root_id").await;
    assert_eq!(children.len(), events.len());
    let root_v: BTreeMap<String, i64> = root_values_by_row_id(&lake).await;
    for (root_id, vs) in &children {
        assert_eq!(vs.len(), 2, "root {root_id} has {} children", vs.len());
        assert!(
            vs.iter().all(|v| Some(v) == root_v.get(root_id)),
            "children {vs:?} of root {root_id} are not those of its row ({:?})",
            root_v.get(root_id)
        );
    }
}

/// `_dlt_id` -> `v` of the committed root rows.
async fn root_values_by_row_id(lake: &Lake) -> BTreeMap<String, i64> {
    rows(lake, "events", "_dlt_id")
        .await
        .into_iter()
        .map(|(k, v)| (k, v[0]))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_whose_root_rows_were_replaced_meanwhile_leaves_the_winners_children() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(dir.path().to_str().unwrap()).unwrap();
    let m = root(WriteDisposition::Merge);
    let record = |id: &str, v: i64| json!({"id": id, "v": v, "items": [{"v": v}, {"v": v}]});
    load(&lake, &m, &[vec![record("s", 0), record("t", 0)]]).await;
    // A commits its root rows, then stalls; B lands `s` whole (root and children) meanwhile;
    // then A commits its children.
    let mut a = stage(&lake, &m, &[vec![record("s", 1), record("t", 1)]]).await;
    a.pause_after_root = Some(std::time::Duration::from_millis(600));
    let b = stage(&lake, &m, &[vec![record("s", 2)]]).await;
    let a_task = tokio::spawn(a.commit());
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    b.commit().await.unwrap();
    a_task.await.unwrap().unwrap();

    let events = rows(&lake, "events", "id").await;
    assert_eq!(events["s"], vec![2], "B replaced `s` after A");
    assert_eq!(events["t"], vec![1]);
    let root_v = root_values_by_row_id(&lake).await;
    let children = rows(&lake, "events__items", "_dlt_root_id").await;
    assert_eq!(children.len(), 2);
    for (root_id, vs) in &children {
        assert_eq!(vs, &vec![root_v[root_id]; 2], "children of {root_id}");
    }
}

/// A lake whose merged `events` table holds `a`, `b`, `c` with `v` 1, 2, 3, each with one
/// child row in `events__items` of the same `v`.
async fn lake_of_three(dir: &tempfile::TempDir) -> (Lake, Arc<TableMeta>) {
    let lake = Lake::open(dir.path().to_str().unwrap()).unwrap();
    let m = root(WriteDisposition::Merge);
    let record = |id: &str, v: i64| json!({"id": id, "v": v, "items": [{"v": v}]});
    load(
        &lake,
        &m,
        &[vec![record("a", 1), record("b", 2), record("c", 3)]],
    )
    .await;
    (lake, m)
}

/// Lands `pages` as one load with `deleted` as the events table's hard-delete column.
async fn land_with_hard_deletes(lake: &Lake, m: &Arc<TableMeta>, pages: &[Vec<Value>]) {
    let mut writer = stage(lake, m, pages).await;
    writer
        .config
        .hard_delete_columns
        .insert("events".into(), "deleted".into());
    writer.commit().await.unwrap();
}

#[tokio::test]
async fn a_hard_delete_column_removes_the_row_and_its_children() {
    let dir = tempfile::tempdir().unwrap();
    let (lake, m) = lake_of_three(&dir).await;

    land_with_hard_deletes(
        &lake,
        &m,
        &[vec![
            json!({"id": "a", "v": 10, "deleted": true, "items": [{"v": 10}]}),
            json!({"id": "b", "v": 20, "deleted": false, "items": [{"v": 20}]}),
            json!({"id": "z", "v": 30, "deleted": true}),
        ]],
    )
    .await;

    let events = rows(&lake, "events", "id").await;
    assert_eq!(
        events,
        BTreeMap::from([("b".into(), vec![20]), ("c".into(), vec![3])]),
        "`a` is deleted, `b` updated, `z` (deleted, never stored) absent"
    );
    let children: Vec<i64> = rows(&lake, "events__items", "_dlt_root_id")
        .await
        .into_values()
        .flatten()
        .collect::<std::collections::BTreeSet<i64>>()
        .into_iter()
        .collect();
    assert_eq!(children, vec![3, 20]);
}

#[tokio::test]
async fn the_last_copy_of_a_record_in_a_load_decides_whether_it_is_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let (lake, m) = lake_of_three(&dir).await;

    let flagged = |id: &str, v: i64, deleted: bool| json!({"id": id, "v": v, "deleted": deleted, "items": [{"v": v}]});
    land_with_hard_deletes(
        &lake,
        &m,
        &[
            vec![flagged("a", 10, true), flagged("b", 20, false)],
            vec![flagged("a", 11, false), flagged("b", 21, true)],
        ],
    )
    .await;

    assert_eq!(
        rows(&lake, "events", "id").await,
        BTreeMap::from([("a".into(), vec![11]), ("c".into(), vec![3])]),
        "`a` came back unflagged in the later page, `b` was deleted by it"
    );
    let children: Vec<i64> = rows(&lake, "events__items", "_dlt_root_id")
        .await
        .into_values()
        .flatten()
        .collect();
    assert_eq!(children.len(), 2);
    assert!(
        children.contains(&11) && children.contains(&3),
        "{children:?}"
    );
}

#[tokio::test]
async fn a_table_that_keeps_history_keeps_replaced_files_until_its_retention_ends() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(dir.path().to_str().unwrap()).unwrap();
    let m = root(WriteDisposition::Merge);
    let record = |id: &str, v: i64| json!({"id": id, "v": v});
    let commit = |pages: Vec<Vec<Value>>, keep: Option<u64>| {
        let (lake, m) = (lake.clone(), m.clone());
        async move {
            let mut writer = stage(&lake, &m, &pages).await;
            writer.config.keep_history_secs = keep;
            writer.commit().await.unwrap()
        }
    };
    commit(vec![vec![record("a", 1), record("b", 2)]], Some(3600)).await;
    commit(vec![vec![record("a", 10)]], Some(3600)).await;
    // A run that does not say keeps what the table says.
    commit(vec![vec![record("b", 20)]], None).await;

    let info = lake.table_info("events").await.unwrap().unwrap();
    assert_eq!(
        info.keeps_history,
        Some(std::time::Duration::from_secs(3600))
    );
    assert_eq!(info.files, 2);
    assert_eq!(
        parquet_files(dir.path(), "events"),
        4,
        "the replaced files stay"
    );
    let at_v0 = rows_at(&lake, "events", "id", Some(0)).await;
    assert_eq!(
        at_v0,
        BTreeMap::from([("a".into(), vec![1]), ("b".into(), vec![2])])
    );
    // Within the retention, a vacuum of everything unreferenced leaves them too.
    let orphans = lake
        .remove_orphans("events", std::time::Duration::ZERO, false)
        .await
        .unwrap();
    assert_eq!(orphans.files, 0);
    assert_eq!(rows_at(&lake, "events", "id", Some(1)).await.len(), 2);

    // Asking for no history removes the property; this commit's replaced file goes at
    // once, and the older ones at the next clean-up.
    commit(vec![vec![record("a", 11)]], Some(0)).await;
    let info = lake.table_info("events").await.unwrap().unwrap();
    assert_eq!(info.keeps_history, None);
    assert_eq!(parquet_files(dir.path(), "events"), 4);
    let orphans = lake
        .remove_orphans("events", std::time::Duration::ZERO, false)
        .await
        .unwrap();
    assert_eq!(orphans.files, 2);
    assert_eq!(parquet_files(dir.path(), "events"), info.files);
    assert_eq!(
        rows(&lake, "events", "id").await,
        BTreeMap::from([("a".into(), vec![11]), ("b".into(), vec![20])])
    );
}

#[tokio::test]
async fn compaction_packs_small_files_without_changing_a_row() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(dir.path().to_str().unwrap()).unwrap();
    let m = root(WriteDisposition::Merge);
    // Eight loads of small files; the later ones bring a new column, so files differ.
    for load_no in 0..8i64 {
        let records: Vec<Value> = (0..50)
            .map(|i| {
                let mut r = json!({"id": format!("r{load_no}-{i}"), "v": i, "items": [{"v": i}]});
                if load_no >= 4 {
                    r["extra"] = json!(format!("x{i}"));
                }
                r
            })
            .collect();
        load(&lake, &m, &[records]).await;
    }
    // One row updated, so a merge-rewritten file is among the small ones too.
    load(
        &lake,
        &m,
        &[vec![
            json!({"id": "r0-3", "v": 1000, "items": [{"v": 1000}]}),
        ]],
    )
    .await;
    let before = rows(&lake, "events", "id").await;
    let children_before = rows(&lake, "events__items", "_dlt_root_id").await;
    let files_before = lake.table_info("events").await.unwrap().unwrap().files;
    assert!(files_before >= 9, "{files_before}");

    let config = ParquetSinkConfig {
        compact_min_files: 4,
        ..ParquetSinkConfig::default()
    };
    let written = |table: &str| TableCommit {
        table: table.into(),
        root: "events".into(),
        version: 0,
        rows_added: 0,
        rows_removed: 0,
        files_added: 0,
        files_removed: 0,
        bytes_before: 0,
        bytes_rewritten: 0,
    };
    let done = crate::compact_tables(
        &lake,
        &config,
        "compaction",
        &[written("events"), written("events__items")],
    )
    .await;
    assert_eq!(done.len(), 2, "{done:?}");
    assert_eq!(
        rows(&lake, "events__items", "_dlt_root_id").await,
        children_before
    );
    let info = lake.table_info("events").await.unwrap().unwrap();
    assert_eq!(info.files, 1);
    assert_eq!(done[0].1.files_before, files_before);
    assert_eq!(
        parquet_files(dir.path(), "events"),
        1,
        "compacted files deleted"
    );
    assert_eq!(rows(&lake, "events", "id").await, before);
    assert_eq!(before.len(), 400);
    assert_eq!(before["r0-3"], vec![1000]);
    assert_eq!(
        info.last_loads[0].operation.as_deref(),
        Some("OPTIMIZE"),
        "{:?}",
        info.last_loads[0]
    );
    // The next merge still finds the ids through the new file's bloom filters.
    load(
        &lake,
        &m,
        &[vec![json!({"id": "r7-1", "v": 7, "items": []})]],
    )
    .await;
    let after = rows(&lake, "events", "id").await;
    assert_eq!(after.len(), 400);
    assert_eq!(after["r7-1"], vec![7]);
    let children = rows(&lake, "events__items", "_dlt_root_id").await;
    assert_eq!(children.len(), 399, "the emptied list's child is gone");
    assert!(!children.contains_key("r7-1"));
    // Below the threshold nothing happens.
    assert_eq!(
        lake.compact("events", &config, "again").await.unwrap(),
        None
    );
}
