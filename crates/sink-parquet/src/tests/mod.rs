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
    let mut out: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for b in batches_at(lake, table, version).await {
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
    out.values_mut().for_each(|v| v.sort_unstable());
    out
}

/// Every batch of a table's data files at `version` (the latest when `None`).
async fn batches_at(
    lake: &Lake,
    table: &str,
    version: Option<u64>,
) -> Vec<arrow_array::RecordBatch> {
    let t = match version {
        Some(v) => lake.load_table_version(table, v).await.unwrap(),
        None => lake.load_table(table).await.unwrap().unwrap(),
    };
    let mut out = Vec::new();
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
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
            .unwrap()
            .build()
            .unwrap();
        out.extend(reader.map(Result::unwrap));
    }
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

/// The program's memory hook ([`LoadWriter::releasing_memory_with`]) runs once per
/// checkpoint and once at the commit, each time after the files closed: the file just
/// staged is on disk when it runs.
#[tokio::test]
async fn the_memory_hook_runs_once_a_commits_files_have_closed() {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    static DIR: Mutex<Option<std::path::PathBuf>> = Mutex::new(None);
    static FILES_SEEN: Mutex<Vec<usize>> = Mutex::new(Vec::new());
    fn release() {
        CALLS.fetch_add(1, Ordering::SeqCst);
        if let Some(dir) = DIR.lock().unwrap().as_ref() {
            FILES_SEEN
                .lock()
                .unwrap()
                .push(parquet_files(dir, "events"));
        }
    }

    let dir = tempfile::tempdir().unwrap();
    *DIR.lock().unwrap() = Some(dir.path().to_owned());
    let lake = Lake::open(dir.path().to_str().unwrap()).unwrap();
    let m = root(WriteDisposition::Merge);
    let writer = stage(&lake, &m, &[vec![json!({"id": "a", "v": 1})]])
        .await
        .releasing_memory_with(release);
    writer.commit().await.unwrap();
    assert_eq!(CALLS.load(Ordering::SeqCst), 1, "once at the commit");
    let mut writer = stage(&lake, &m, &[vec![json!({"id": "b", "v": 2})]])
        .await
        .releasing_memory_with(release);
    writer.checkpoint().await.unwrap();
    assert_eq!(CALLS.load(Ordering::SeqCst), 2, "once at the checkpoint");
    writer.commit().await.unwrap();
    assert_eq!(CALLS.load(Ordering::SeqCst), 3, "once more at the commit");
    // Each time, the file just closed was on disk beside those committed before (the last
    // commit had none left to close).
    assert_eq!(*FILES_SEEN.lock().unwrap(), vec![1, 2, 2]);
    assert_eq!(
        rows(&lake, "events", "id").await,
        BTreeMap::from([("a".into(), vec![1]), ("b".into(), vec![2])])
    );
}

/// Checkpoints leave the load's earlier child and hash files out of the merge's probe while
/// the root's commit finds no incoming id in the load's earlier root files (and its earlier
/// hash files out of the unchanged-record lookup); a record that comes again in a later
/// checkpoint still replaces its children and its hash row of the earlier one, changed or
/// not.
#[tokio::test]
async fn a_record_again_in_a_later_checkpoint_replaces_its_children_there() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(dir.path().to_str().unwrap()).unwrap();
    let m = root(WriteDisposition::Merge);
    let pages = [
        vec![
            json!({"id": "a", "v": 1, "items": [{"v": 10}, {"v": 11}]}),
            json!({"id": "b", "v": 2, "items": [{"v": 20}]}),
            json!({"id": "d", "v": 7, "items": [{"v": 70}]}),
        ],
        // New ids only: the earlier child files need no probe.
        vec![json!({"id": "c", "v": 3, "items": [{"v": 30}]})],
        // `a` again, two checkpoints later: its children of the first page go; `d` again,
        // unchanged.
        vec![
            json!({"id": "a", "v": 4, "items": [{"v": 40}]}),
            json!({"id": "d", "v": 7, "items": [{"v": 70}]}),
        ],
        // `b` again, from a root file the last checkpoint rewrote.
        vec![json!({"id": "b", "v": 5, "items": [{"v": 50}]})],
    ];
    let registry = SchemaRegistry::new(lake.schemas().await.unwrap());
    let mut normalizer = Normalizer::new(NormalizeConfig::default(), registry.clone());
    let load_id = uuid::Uuid::new_v4().to_string();
    let mut writer = LoadWriter::new(
        lake.clone(),
        ParquetSinkConfig::default(),
        load_id.clone(),
        vec![m.clone()],
    )
    .declaring_null_only_columns_of(registry);
    for (seq, records) in pages.iter().enumerate() {
        let batches = normalizer
            .normalize(&m, &load_id, seq as u64, records)
            .unwrap();
        writer.write(seq as u64, batches).await.unwrap();
        writer.checkpoint().await.unwrap();
    }
    writer.commit().await.unwrap();

    assert_eq!(
        rows(&lake, "events", "id").await,
        BTreeMap::from([
            ("a".into(), vec![4]),
            ("b".into(), vec![5]),
            ("c".into(), vec![3]),
            ("d".into(), vec![7])
        ])
    );
    let mut children: Vec<i64> = rows(&lake, "events__items", "_dlt_root_id")
        .await
        .into_values()
        .flatten()
        .collect();
    children.sort_unstable();
    assert_eq!(children, vec![30, 40, 50, 70]);
    // One hash row per record.
    let hashes = crate::hash_table("events");
    let mut ids = Vec::new();
    for b in batches_at(&lake, &hashes, None).await {
        let column = b
            .column_by_name(transform::ROW_ID)
            .unwrap()
            .as_string::<i32>();
        ids.extend(column.iter().flatten().map(str::to_owned));
    }
    ids.sort_unstable();
    let n = ids.len();
    ids.dedup();
    assert_eq!((n, ids.len()), (4, 4), "hash rows per record");
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

/// Two writers that opened the lake at the same time (two shards): one saw only nulls in
/// `line`, the other integers. Whichever commits first, the table ends with `line` as a
/// bigint and no variant column; in between, the null-only load declares `line` (text,
/// marked) so readers can select it, and no data file holds it.
#[tokio::test]
async fn a_column_is_typed_by_its_first_value_whichever_writer_commits_first() {
    for nulls_first in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(dir.path().to_str().unwrap()).unwrap();
        let m = root(WriteDisposition::Merge);
        let nulls = stage(&lake, &m, &[vec![json!({"id": "a", "v": 1, "line": null})]]).await;
        let typed = stage(&lake, &m, &[vec![json!({"id": "b", "v": 2, "line": 7})]]).await;
        let field = |lake: Lake| async move {
            let t = lake.load_table("events").await.unwrap().unwrap();
            let schema = crate::lake::arrow_schema_of(t.snapshot().unwrap().snapshot());
            let names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
            (schema.field_with_name("line").unwrap().clone(), names)
        };
        if nulls_first {
            nulls.commit().await.unwrap();
            let (line, _) = field(lake.clone()).await;
            assert_eq!(line.data_type(), &arrow_schema::DataType::Utf8);
            assert_eq!(
                line.metadata()
                    .get(transform::NULL_ONLY_METADATA_KEY)
                    .map(String::as_str),
                Some("true")
            );
            typed.commit().await.unwrap();
        } else {
            typed.commit().await.unwrap();
            nulls.commit().await.unwrap();
        }
        let (line, names) = field(lake.clone()).await;
        assert_eq!(
            line.data_type(),
            &arrow_schema::DataType::Int64,
            "{names:?}"
        );
        assert!(
            line.metadata()
                .get(transform::NULL_ONLY_METADATA_KEY)
                .is_none()
        );
        assert!(!names.iter().any(|n| n.starts_with("line__")), "{names:?}");
        assert_eq!(
            rows(&lake, "events", "id").await,
            BTreeMap::from([("a".into(), vec![1]), ("b".into(), vec![2])])
        );
        // No data file holds `line` as text.
        let t = lake.load_table("events").await.unwrap().unwrap();
        for f in t.snapshot().unwrap().log_data().iter() {
            let bytes = lake
                .store()
                .get(&lake.file_path("events", &f.path()))
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
            let schema = ParquetRecordBatchReaderBuilder::try_new(bytes)
                .unwrap()
                .schema()
                .clone();
            if let Ok(line) = schema.field_with_name("line") {
                assert_eq!(line.data_type(), &arrow_schema::DataType::Int64);
            }
        }
    }
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

/// A root whose name begins with another root's name and `__` is a table of its own: the
/// other root's merge neither sweeps it in as a child nor removes its children.
#[tokio::test]
async fn a_root_named_like_a_child_of_another_root_keeps_its_rows() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(dir.path().to_str().unwrap()).unwrap();
    let events = root(WriteDisposition::Merge);
    let archive = another_root(&events, "events__archive");
    for v in [1, 2] {
        let registry = SchemaRegistry::new(lake.schemas().await.unwrap());
        // The same ids in both roots, so that their rows' keys are the same too.
        let record = json!({"id": "a", "v": v, "items": [{"v": 10 * v}]});
        let pages = [(&events, record.clone()), (&archive, record)];
        stage_roots(&lake, registry, &pages)
            .await
            .commit()
            .await
            .unwrap();
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

/// The roots of a load commit at once: when one root's commit fails, the load fails with
/// its error, that root and its child tables stay where they were, and every table that
/// moved (another root may have committed meanwhile) is among the commits handed back;
/// nothing the failed root staged is left behind.
#[tokio::test]
async fn a_failed_root_leaves_its_tables_and_every_commit_made_is_told() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(dir.path().to_str().unwrap()).unwrap();
    let events = root(WriteDisposition::Merge);
    let errors = another_root(&events, "errors");
    let tables = ["events", "events__items", "errors", "errors__items"];
    let mut versions = BTreeMap::new();
    for (n, v) in [json!(1), json!("one")].into_iter().enumerate() {
        // The second load's normalizer does not know the lake: its `v` of events is text,
        // where the table's is a number.
        let registry = if n == 0 {
            SchemaRegistry::default()
        } else {
            SchemaRegistry::new(std::collections::HashMap::from_iter(
                lake.schemas()
                    .await
                    .unwrap()
                    .into_iter()
                    .filter(|(t, _)| t.starts_with("errors")),
            ))
        };
        let pages = [
            (&events, json!({"id": "a", "v": v, "items": [{"v": 1}]})),
            (&errors, json!({"id": "a", "v": n, "items": [{"v": 1}]})),
        ];
        let writer = stage_roots(&lake, registry, &pages).await;
        let mut commits = Vec::new();
        let outcome = writer.commit_into(&mut commits).await;
        let mut now = BTreeMap::new();
        for table in tables {
            let version = lake.load_table(table).await.unwrap().unwrap().version();
            now.insert(table, version.unwrap());
        }
        if n == 0 {
            outcome.unwrap();
            assert_eq!(commits.len(), 4 + 2, "four tables and two hash tables");
        } else {
            match outcome {
                Err(SinkError::Schema { table, .. }) => assert_eq!(table, "events"),
                other => panic!("expected the events table's schema error, got {other:?}"),
            }
            // The hash file written while the root committed is deleted with its failure:
            // the first load's file alone is left.
            assert_eq!(parquet_files(dir.path(), "_errlake_hashes_events"), 1);
            for table in tables {
                let moved = now[table] != versions[table];
                let told = commits.iter().any(|c| c.table == table);
                assert_eq!(moved, told, "{table}: moved {moved}, told {told}");
                assert!(
                    !(table.starts_with("events") && moved),
                    "{table} moved after its root's commit failed"
                );
            }
        }
        versions = now;
    }
}

/// A root table like `of` (its key and disposition) named `name`.
fn another_root(of: &Arc<TableMeta>, name: &str) -> Arc<TableMeta> {
    Arc::new(TableMeta {
        name: name.into(),
        root: name.into(),
        ..(**of).clone()
    })
}

/// Writes one load of several roots without committing it: each `(root, record)` is a
/// page of its own, normalized against `registry`.
async fn stage_roots(
    lake: &Lake,
    registry: SchemaRegistry,
    pages: &[(&Arc<TableMeta>, Value)],
) -> LoadWriter {
    let mut normalizer = Normalizer::new(NormalizeConfig::default(), registry);
    let load_id = uuid::Uuid::new_v4().to_string();
    let roots = pages.iter().map(|(meta, _)| (*meta).clone()).collect();
    let mut writer = LoadWriter::new(
        lake.clone(),
        ParquetSinkConfig::default(),
        load_id.clone(),
        roots,
    );
    for (seq, (meta, record)) in pages.iter().enumerate() {
        let batches = normalizer
            .normalize(meta, &load_id, seq as u64, std::slice::from_ref(record))
            .unwrap();
        writer.write(seq as u64, batches).await.unwrap();
    }
    writer
}

/// Writes one load's pages without committing it.
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
    let mut normalizer = Normalizer::new(NormalizeConfig::default(), registry.clone());
    let load_id = uuid::Uuid::new_v4().to_string();
    let mut writer = LoadWriter::new(lake.clone(), config, load_id.clone(), vec![meta.clone()])
        .declaring_null_only_columns_of(registry);
    for (seq, records) in pages.iter().enumerate() {
        let batches = normalizer
            .normalize(meta, &load_id, seq as u64, records)
            .unwrap();
        writer.write(seq as u64, batches).await.unwrap();
    }
    writer
}

mod writers_and_upkeep;
