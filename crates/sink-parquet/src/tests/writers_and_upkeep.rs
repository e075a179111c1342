//! Tests of the sink beyond one writer's merge: concurrent writers, hard deletes, history
//! retention and compaction.

use super::*;

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
        retries: 0,
        bytes_rewritten_by_retries: 0,
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

/// Delta's expired-log clean-up deletes log files past `delta.logRetentionDuration` (30
/// days) on every commit after a checkpoint, whoever wrote them: errlake deletes only data
/// files it wrote, so its commits leave every log file where it is.
#[tokio::test]
async fn log_files_past_the_tables_log_retention_are_left_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(dir.path().to_str().unwrap()).unwrap();
    let m = root(WriteDisposition::Merge);
    for v in 0..3 {
        load(&lake, &m, &[vec![json!({"id": "a", "v": v})]]).await;
    }
    // A table written to for over a month: a checkpoint (as another writer makes every
    // 100 commits) and the log before it 40 days old.
    let table = lake.load_table("events").await.unwrap().unwrap();
    deltalake::checkpoints::create_checkpoint(&table, None)
        .await
        .unwrap();
    let log = dir.path().join("events/_delta_log");
    let log_files = || {
        let mut names: Vec<String> = std::fs::read_dir(&log)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let month_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(40 * 86_400);
    for name in log_files() {
        std::fs::File::options()
            .write(true)
            .open(log.join(name))
            .unwrap()
            .set_modified(month_ago)
            .unwrap();
    }
    let before = log_files();
    assert!(
        before.contains(&"00000000000000000000.json".to_owned()),
        "{before:?}"
    );

    load(&lake, &m, &[vec![json!({"id": "a", "v": 9})]]).await;
    let after = log_files();
    let gone: Vec<&String> = before.iter().filter(|n| !after.contains(n)).collect();
    assert!(gone.is_empty(), "log files deleted: {gone:?}");
    assert_eq!(
        rows(&lake, "events", "id").await,
        BTreeMap::from([("a".into(), vec![9])])
    );
}
