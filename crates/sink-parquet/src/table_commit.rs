//! One table's move to its next Delta version: the merge against the files it has (only
//! those the bloom probe names), the `add`/`remove` actions, the schema and history
//! settings, and the retry when another writer committed first.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arrow_schema::{Field, Schema, SchemaRef};
use deltalake::DeltaTable;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::{Action, Add, MetadataExt};
use deltalake::protocol::{DeltaOperation, SaveMode};

use transform::{TableMeta, WriteDisposition};

use crate::columns::root_key_column;
use crate::lake::{KEEP_HISTORY_PROPERTY, Lake, arrow_schema_of, delta_schema, kept_history};
use crate::load_ids::{RootIds, ids_won_by_others};
use crate::probe::{FileRows, files_maybe_holding};
use crate::rewrite::{RewriteOf, drop_superseded, rewrite_keeping, rewritten_name, without_rows};
use crate::writer::{IdPages, IdSet, StagedFile, TableWriter, empty_schema, file_token};
use crate::{Result, SinkError};

/// What a load did to one table.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TableCommit {
    /// The table.
    pub table: String,
    /// The root table it belongs to.
    pub root: String,
    /// The Delta version committed.
    pub version: u64,
    /// Rows this load added.
    pub rows_added: u64,
    /// Rows of earlier loads this load replaced or removed.
    pub rows_removed: u64,
    /// Data files added.
    pub files_added: usize,
    /// Data files removed (and deleted from storage).
    pub files_removed: usize,
    /// Bytes of the table's data files before this commit.
    pub bytes_before: u64,
    /// Bytes of earlier files a merge read and rewrote (without the replaced rows).
    pub bytes_rewritten: u64,
    /// How many times another writer had moved the table when this load tried to commit:
    /// each time the merge was done again against the new version.
    pub retries: u32,
    /// Bytes of rewritten files that those retries threw away.
    pub bytes_rewritten_by_retries: u64,
}

/// The `add` action of a data file (its row count as the file's statistics).
pub(crate) fn add_action(
    name: &str,
    size: u64,
    rows: u64,
    data_change: bool,
    now_ms: i64,
) -> Action {
    Action::Add(Add {
        path: name.to_owned(),
        partition_values: HashMap::new(),
        size: size as i64,
        modification_time: now_ms,
        data_change,
        stats: Some(serde_json::json!({ "numRecords": rows }).to_string()),
        ..Default::default()
    })
}

/// One table's part of a load's commit: what [`commit_table`] works with.
#[derive(Clone, Copy)]
pub(crate) struct TableLoad<'a> {
    pub(crate) lake: &'a Lake,
    pub(crate) config: &'a crate::ParquetSinkConfig,
    pub(crate) load_id: &'a str,
    pub(crate) meta: &'a Arc<TableMeta>,
    /// The root's ids in this load (for a root and its child tables).
    pub(crate) root_ids: Option<&'a RootIds>,
    /// A child table: its root table and the root's final staged files, whose ids say
    /// which of the child's files may hold rows to replace.
    pub(crate) id_source: Option<(&'a str, &'a [StagedFile])>,
    /// A child table: its root table and the version this load committed it at.
    pub(crate) root_commit: Option<(&'a str, u64)>,
    /// The columns the load saw with nulls only: the table's schema declares them.
    pub(crate) null_only: &'a [Field],
    /// The data files this load committed to the table at its earlier checkpoints (fresh
    /// rows of its own, no rewrites). A root's commit says whether it removed rows from one
    /// of them or found one gone; a child's probe leaves them out when `skip_own_files`.
    pub(crate) own_files: Option<&'a HashSet<String>>,
    /// A child table whose root's commit neither removed rows from the load's earlier root
    /// files nor found one gone: the child rows of the load's earlier files belong to roots
    /// in those files, so none of them has an incoming root id, and their bloom filters are
    /// not read. Without this, each checkpoint probed every file the run had written to every
    /// child table, and a checkpoint took longer the more the run had written.
    pub(crate) skip_own_files: bool,
}

/// What [`commit_table`] did: the commit (`None`: nothing to change), the staged files it
/// committed, and whether it left the load's earlier files of the table as they were (no
/// row removed from one, none gone; see [`TableLoad::skip_own_files`]).
pub(crate) struct Committed {
    pub(crate) commit: Option<TableCommit>,
    pub(crate) staged: Vec<StagedFile>,
    pub(crate) own_files_untouched: bool,
}

/// Commits a table's part of the load (`writer`: what it staged, if anything), merging
/// again from the top while other writers commit first.
pub(crate) async fn commit_table(
    load: TableLoad<'_>,
    writer: Option<TableWriter>,
) -> Result<Committed> {
    let TableLoad {
        lake,
        config,
        load_id,
        meta,
        root_ids,
        ..
    } = load;
    let table_name = meta.name.as_str();
    let (mut staged, schema) = match writer {
        Some(w) => (w.staged, w.schema),
        None => (Vec::new(), empty_schema()),
    };
    let key_column = root_key_column(meta);
    let merge = meta.write_disposition == WriteDisposition::Merge;

    // Within the load, the last page of a root id wins: drop older copies from staged files.
    if let (true, Some(ids)) = (merge, root_ids)
        && !ids.repeated.is_empty()
    {
        let mut kept = Vec::new();
        for file in staged {
            kept.extend(drop_superseded(lake, config, table_name, key_column, file, ids).await?);
        }
        staged = kept;
    }

    // Records that say "delete" are not stored; their ids stay among the incoming ones, so
    // the rows they name (and, in child tables, those rows' children) are removed.
    if let (true, Some(ids)) = (merge, root_ids)
        && !ids.deleted.is_empty()
    {
        let remove = |k: u128| ids.deleted.contains(&k);
        let (kept, replaced) = without_rows(
            lake,
            config,
            &format!("{load_id}-{}-del", file_token()),
            table_name,
            key_column,
            &staged,
            &remove,
        )
        .await?;
        lake.delete_files(table_name, replaced.iter().map(|f| &f.name))
            .await;
        staged = kept;
    }

    // Another writer may commit to the table between our read of it and our commit: then
    // the merge is done again against the new version (Delta's optimistic concurrency), so
    // neither writer's rows are lost and no id lands twice.
    let mut attempt = 0;
    let mut bytes_thrown_away = 0;
    loop {
        let mut rewritten = Vec::new();
        let outcome = commit_attempt(load, &staged, &schema, attempt, &mut rewritten).await;
        match outcome {
            Ok((commit, own_files_untouched)) => {
                let commit = commit.map(|c| TableCommit {
                    retries: attempt as u32,
                    bytes_rewritten_by_retries: bytes_thrown_away,
                    ..c
                });
                return Ok(Committed {
                    commit,
                    staged,
                    own_files_untouched,
                });
            }
            Err(e) if attempt < MAX_COMMIT_ATTEMPTS && e.is_concurrent_commit() => {
                lake.delete_files(table_name, rewritten.iter().map(|f| &f.name))
                    .await;
                bytes_thrown_away += rewritten.iter().map(|f| f.size).sum::<u64>();
                attempt += 1;
                tracing::info!(
                    table = table_name,
                    attempt,
                    "table changed during the commit; merging again"
                );
                tokio::time::sleep(std::time::Duration::from_millis(
                    20 * attempt as u64 + fastrand::u64(..50),
                ))
                .await;
            }
            Err(e) => {
                lake.delete_files(table_name, rewritten.iter().map(|f| &f.name))
                    .await;
                return Err(e);
            }
        }
    }
}

/// How many times a table commit is tried when other writers keep committing first.
const MAX_COMMIT_ATTEMPTS: usize = 20;

/// One try at moving a table to its next version with the load's staged files. Files this
/// try writes (rewrites of merged files) are pushed to `rewritten`, so that a failed try can
/// delete them. Returns the commit and whether the load's earlier files of the table were
/// left as they were.
async fn commit_attempt(
    load: TableLoad<'_>,
    staged: &[StagedFile],
    schema: &SchemaRef,
    attempt: usize,
    rewritten: &mut Vec<StagedFile>,
) -> Result<(Option<TableCommit>, bool)> {
    let TableLoad { lake, meta, .. } = load;
    let table_name = meta.name.as_str();
    let won_by_others = won_by_others(load).await?;
    let own = own_rows(load, staged, &won_by_others, attempt, rewritten).await?;
    let staged: &[StagedFile] = own.as_deref().unwrap_or(staged);

    let started = std::time::Instant::now();
    let table = lake.load_table(table_name).await?;
    let loaded = started.elapsed();
    let removals = match &table {
        Some(t) => removals(load, t, staged, &won_by_others, attempt, rewritten).await?,
        // A table gone since an earlier checkpoint took the load's files with it.
        None => Removals {
            own_files_touched: load.own_files.is_some_and(|own| !own.is_empty()),
            ..Removals::default()
        },
    };
    let merged = started.elapsed();

    let rows_added: u64 = staged.iter().map(|f| f.n_rows).sum();
    let mut actions = removals.actions;
    let now_ms = chrono::Utc::now().timestamp_millis();
    let mut added = HashSet::new();
    for f in staged.iter().chain(rewritten.iter()) {
        if added.insert(f.name.as_str()) {
            actions.push(add_action(&f.name, f.size, f.n_rows, true, now_ms));
        }
    }
    let own_files_untouched = !removals.own_files_touched;
    if actions.is_empty() || (table.is_none() && staged.is_empty()) {
        return Ok((None, own_files_untouched));
    }
    let counts = [("rows_added", rows_added), ("rows_removed", removals.rows)];
    let (version, keeps_history) = commit_actions(load, table, actions, schema, counts).await?;
    let committed = started.elapsed();
    clean_up(load, &removals.paths, keeps_history).await;
    tracing::debug!(
        table = table_name,
        version,
        load_seconds = loaded.as_secs_f64(),
        probe_seconds = removals.probe_time.as_secs_f64(),
        merge_seconds = (merged - loaded - removals.probe_time).as_secs_f64(),
        commit_seconds = (committed - merged).as_secs_f64(),
        cleanup_seconds = (started.elapsed() - committed).as_secs_f64(),
        "table committed"
    );
    let commit = TableCommit {
        table: table_name.to_owned(),
        root: meta.root.clone(),
        version,
        rows_added,
        rows_removed: removals.rows,
        files_added: staged.len(),
        files_removed: removals.paths.len(),
        bytes_before: removals.bytes_before,
        bytes_rewritten: removals.bytes_read,
        retries: 0,
        bytes_rewritten_by_retries: 0,
    };
    Ok((Some(commit), own_files_untouched))
}

/// A child table under merge: the root rows of ours that another writer replaced after our
/// root commit are theirs, and so are their children.
async fn won_by_others(load: TableLoad<'_>) -> Result<IdSet> {
    match (load.meta.write_disposition, load.root_commit, load.root_ids) {
        (WriteDisposition::Merge, Some((root_table, version)), Some(ids)) => {
            ids_won_by_others(load.lake, root_table, version, load.load_id, &ids.last_page).await
        }
        _ => Ok(IdSet::default()),
    }
}

/// In a child table, our staged rows without those of roots another writer won or the load
/// deletes (`None`: all stay); files written for it are pushed to `rewritten`.
async fn own_rows(
    load: TableLoad<'_>,
    staged: &[StagedFile],
    won_by_others: &IdSet,
    attempt: usize,
    rewritten: &mut Vec<StagedFile>,
) -> Result<Option<Vec<StagedFile>>> {
    let deleted = load
        .root_ids
        .filter(|_| !load.meta.is_root())
        .map(|ids| &ids.deleted);
    if won_by_others.is_empty() && deleted.is_none_or(HashSet::is_empty) {
        return Ok(None);
    }
    let remove = |k: u128| won_by_others.contains(&k) || deleted.is_some_and(|d| d.contains(&k));
    let (kept, _) = without_rows(
        load.lake,
        load.config,
        &format!("{}-{}-own{attempt}", load.load_id, file_token()),
        &load.meta.name,
        root_key_column(load.meta),
        staged,
        &remove,
    )
    .await?;
    let old: HashSet<&str> = staged.iter().map(|f| f.name.as_str()).collect();
    rewritten.extend(
        kept.iter()
            .filter(|f| !old.contains(f.name.as_str()))
            .cloned(),
    );
    Ok(Some(kept))
}

/// What a commit takes out of a table: `remove` actions, and what they cost.
#[derive(Default)]
struct Removals {
    actions: Vec<Action>,
    /// The files removed.
    paths: Vec<String>,
    /// Rows of earlier loads removed.
    rows: u64,
    /// Bytes of the table before the commit.
    bytes_before: u64,
    /// Bytes of the files a merge read and rewrote.
    bytes_read: u64,
    /// Time spent asking the bloom filters.
    probe_time: std::time::Duration,
    /// Whether rows were removed from one of the load's earlier files
    /// ([`TableLoad::own_files`]) or one of them is gone.
    own_files_touched: bool,
}

/// The files of `table` the load removes: all of them under replace; under merge, those
/// holding an incoming root id (only files whose bloom filters may are read), each
/// rewritten without those rows (the new files are pushed to `rewritten`).
async fn removals(
    load: TableLoad<'_>,
    table: &DeltaTable,
    staged: &[StagedFile],
    won_by_others: &IdSet,
    attempt: usize,
    rewritten: &mut Vec<StagedFile>,
) -> Result<Removals> {
    let TableLoad {
        lake,
        config,
        load_id,
        meta,
        root_ids,
        id_source,
        own_files,
        skip_own_files,
        ..
    } = load;
    let table_name = meta.name.as_str();
    let key_column = root_key_column(meta);
    let snapshot = table.snapshot().map_err(|source| SinkError::Delta {
        table: table_name.to_owned(),
        source,
    })?;
    let files: Vec<_> = snapshot.log_data().iter().collect();
    let is_own = |path: &str| own_files.is_some_and(|own| own.contains(path));
    let mut out = Removals {
        bytes_before: files.iter().map(|f| f.size().max(0) as u64).sum(),
        own_files_touched: own_file_gone(own_files, &files),
        ..Removals::default()
    };
    let remove = |f: &deltalake::kernel::LogicalFileView| Action::Remove(f.remove_action(true));
    let incoming: Option<&IdPages> = root_ids
        .map(|r| &r.last_page)
        .filter(|m| meta.write_disposition == WriteDisposition::Merge && !m.is_empty());
    let candidates = match incoming {
        Some(_) => {
            let started = std::time::Instant::now();
            let existing = files
                .iter()
                .map(|f| (f.path().into_owned(), f.size().max(0) as u64))
                .filter(|(path, _)| !(skip_own_files && is_own(path)))
                .collect::<Vec<_>>();
            let (id_table, id_files) = id_source.unwrap_or((table_name, staged));
            let candidates =
                files_maybe_holding(lake, table_name, key_column, &existing, id_table, id_files)
                    .await?;
            out.probe_time = started.elapsed();
            candidates
        }
        None => Default::default(),
    };
    for f in files {
        let path = f.path().into_owned();
        match (meta.write_disposition, incoming) {
            (WriteDisposition::Replace, _) => {
                out.rows += f.num_records().unwrap_or(0) as u64;
                out.actions.push(remove(&f));
                out.paths.push(path);
            }
            (WriteDisposition::Merge, Some(ids)) => {
                let Some(row_groups) = candidates.get(&path) else {
                    continue;
                };
                let replaced = |k: u128| ids.contains(k) && !won_by_others.contains(&k);
                let size = f.size().max(0) as u64;
                let of = RewriteOf {
                    table: table_name,
                    key_column,
                    file: FileRows {
                        path: &path,
                        size,
                        row_groups: row_groups.as_deref(),
                    },
                    runs: &[],
                    new_name: rewritten_name(
                        &format!("{load_id}-{}-{attempt}", file_token()),
                        rewritten.len() + 1,
                    ),
                };
                let keep = |k: Option<u128>, _| !k.is_some_and(replaced);
                let rewrite = rewrite_keeping(lake, config, of, &keep).await?;
                if rewrite.kept == rewrite.total {
                    // A bloom filter's false positive: the file stays as it is.
                    continue;
                }
                out.bytes_read += size;
                out.rows += rewrite.total - rewrite.kept;
                out.own_files_touched |= is_own(&path);
                out.actions.push(remove(&f));
                out.paths.push(path);
                rewritten.extend(rewrite.file);
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Whether one of the load's files (`own`) is no longer among the table's `files`: the
/// table's paths are gathered only when the load has files in it.
fn own_file_gone(
    own: Option<&HashSet<String>>,
    files: &[deltalake::kernel::LogicalFileView],
) -> bool {
    own.filter(|own| !own.is_empty()).is_some_and(|own| {
        let present: HashSet<String> = files.iter().map(|f| f.path().into_owned()).collect();
        own.iter().any(|p| !present.contains(p))
    })
}

/// Commits `actions` as the table's next version (creating the table when there is none),
/// with the load's counts in the commit's metadata, the schema widened to the load's and
/// the history setting applied. Returns the version and whether the table keeps history.
async fn commit_actions(
    load: TableLoad<'_>,
    table: Option<DeltaTable>,
    mut actions: Vec<Action>,
    schema: &SchemaRef,
    counts: [(&str, u64); 2],
) -> Result<(u64, bool)> {
    let TableLoad {
        lake,
        config,
        load_id,
        meta,
        ..
    } = load;
    let table_name = meta.name.as_str();
    let delta_err = |source| SinkError::Delta {
        table: table_name.to_owned(),
        source,
    };
    let existing_schema: Option<SchemaRef> = match &table {
        Some(t) => Some(Arc::new(arrow_schema_of(
            t.snapshot().map_err(delta_err)?.snapshot(),
        ))),
        None => None,
    };
    let (merged_schema, schema_changed) =
        merge_schemas(table_name, existing_schema.as_ref(), schema, load.null_only)?;
    // No retry inside delta-rs: a table that moved is merged again from the top, since
    // its conflict check does not see that a concurrent append may hold our ids.
    let properties = commit_properties().with_metadata(
        std::iter::once(("errlake.load_id".to_owned(), serde_json::json!(load_id))).chain(
            counts
                .iter()
                .map(|(key, n)| (format!("errlake.{key}"), serde_json::json!(n))),
        ),
    );
    // The history setting: `None` leaves the table's as it is, `Some(None)` removes it.
    let history_setting: Option<Option<String>> = config
        .keep_history_secs
        .map(|secs| (secs > 0).then(|| format!("interval {secs} seconds")));
    let Some(t) = table else {
        return create_table(
            lake,
            table_name,
            &merged_schema,
            history_setting,
            actions,
            properties,
        )
        .await;
    };
    let snapshot = t.snapshot().map_err(delta_err)?;
    let metadata = updated_metadata(
        table_name,
        snapshot,
        schema_changed.then_some(&merged_schema),
        &history_setting,
    )?;
    actions.extend(metadata.map(Action::Metadata));
    let keeps_history = match &history_setting {
        Some(setting) => setting.is_some(),
        None => kept_history(snapshot).is_some(),
    };
    let mode = if meta.write_disposition == WriteDisposition::Replace {
        SaveMode::Overwrite
    } else {
        SaveMode::Append
    };
    let operation = DeltaOperation::Write {
        mode,
        partition_by: None,
        predicate: None,
    };
    let finalized = CommitBuilder::from(properties)
        .with_actions(actions)
        .build(Some(snapshot), t.log_store(), operation)
        .await
        .map_err(delta_err)?;
    Ok((finalized.version(), keeps_history))
}

/// The properties every commit of errlake's starts from. No retry inside delta-rs (a
/// caller that sees its table moved decides what to do again), and no expired-log clean-up:
/// delta-rs would list the whole `_delta_log` on every commit and delete the log files past
/// the table's `delta.logRetentionDuration`, whoever wrote them, where errlake deletes only
/// data files it wrote.
pub(crate) fn commit_properties() -> CommitProperties {
    CommitProperties::default()
        .with_max_retries(0)
        .with_cleanup_expired_logs(Some(false))
}

/// A table's first commit, with its schema and history setting; whether it keeps history.
/// When two first loads race, the one that finds the table there afterwards reports that
/// the version exists (delta-rs says so only in the text of a private error), so the merge
/// is tried again against the other's version 0.
async fn create_table(
    lake: &Lake,
    table_name: &str,
    schema: &SchemaRef,
    history_setting: Option<Option<String>>,
    actions: Vec<Action>,
    properties: CommitProperties,
) -> Result<(u64, bool)> {
    let delta_err = |source| SinkError::Delta {
        table: table_name.to_owned(),
        source,
    };
    let delta = delta_schema(table_name, schema)?;
    let created = lake
        .unloaded_table(table_name)?
        .create()
        .with_columns(delta.fields().cloned())
        .with_table_name(table_name)
        .with_configuration(
            history_setting
                .clone()
                .flatten()
                .map(|v| (KEEP_HISTORY_PROPERTY, Some(v))),
        )
        .with_actions(actions)
        .with_commit_properties(properties)
        .await;
    match created {
        Ok(created) => Ok((
            created.version().unwrap_or(0),
            matches!(history_setting, Some(Some(_))),
        )),
        Err(_) if lake.load_table(table_name).await?.is_some() => Err(delta_err(
            deltalake::DeltaTableError::VersionAlreadyExists(0),
        )),
        Err(e) => Err(delta_err(e)),
    }
}

/// The table's metadata with the load's changes, if any: the widened schema, and the
/// history setting (`Some(Some(..))` sets it, `Some(None)` removes it, `None` leaves it).
fn updated_metadata(
    table_name: &str,
    snapshot: &deltalake::table::state::DeltaTableState,
    widened_schema: Option<&SchemaRef>,
    history_setting: &Option<Option<String>>,
) -> Result<Option<deltalake::kernel::Metadata>> {
    let metadata_err = |e: deltalake::kernel::Error| SinkError::Schema {
        table: table_name.to_owned(),
        message: e.to_string(),
    };
    let mut metadata = snapshot.metadata().clone();
    let mut changed = false;
    if let Some(schema) = widened_schema {
        let delta = delta_schema(table_name, schema)?;
        metadata = metadata.with_schema(&delta).map_err(metadata_err)?;
        changed = true;
    }
    let current = metadata.configuration().get(KEEP_HISTORY_PROPERTY).cloned();
    match history_setting {
        Some(Some(wanted)) if current.as_ref() != Some(wanted) => {
            metadata = metadata
                .add_config_key(KEEP_HISTORY_PROPERTY.to_owned(), wanted.clone())
                .map_err(metadata_err)?;
            changed = true;
        }
        Some(None) if current.is_some() => {
            metadata = metadata
                .remove_config_key(KEEP_HISTORY_PROPERTY)
                .map_err(metadata_err)?;
            changed = true;
        }
        _ => {}
    }
    Ok(changed.then_some(metadata))
}

/// After a commit: the files the new version no longer references are deleted, so that a
/// plain `*.parquet` glob of the table sees exactly its rows (a table that keeps history
/// keeps them until their removal is older than its retention), and so are the files of
/// loads that died before their commit, once old enough (`remove_orphans`).
async fn clean_up(load: TableLoad<'_>, removed: &[String], keeps_history: bool) {
    let (lake, table_name) = (load.lake, load.meta.name.as_str());
    if !keeps_history {
        lake.delete_files(table_name, removed).await;
    }
    let grace = std::time::Duration::from_secs(load.config.orphan_grace_secs);
    match lake.remove_orphans(table_name, grace, false).await {
        Ok(o) if o.files > 0 => {
            tracing::info!(
                table = table_name,
                files = o.files,
                bytes = o.bytes,
                "removed orphaned files"
            );
        }
        Ok(_) => {}
        Err(error) => tracing::warn!(table = table_name, %error, "could not remove orphaned files"),
    }
}

/// The table's columns followed by the load's new ones, and the columns the load saw with
/// nulls only (`null_only`) that the table lacks; whether that changed the table's schema.
/// A column the table declares null-only takes the type of the load's values (no data file
/// holds it, so no file disagrees); any other changed type is an error.
fn merge_schemas(
    table: &str,
    existing: Option<&SchemaRef>,
    incoming: &SchemaRef,
    null_only: &[Field],
) -> Result<(SchemaRef, bool)> {
    let mut fields: Vec<Arc<Field>> = existing
        .map(|e| e.fields().iter().cloned().collect())
        .unwrap_or_default();
    let mut changed = false;
    for f in incoming.fields() {
        match fields.iter_mut().find(|old| old.name() == f.name()) {
            Some(old) if is_null_only(old) => {
                *old = f.clone();
                changed = true;
            }
            Some(old) if old.data_type() != f.data_type() => {
                return Err(SinkError::Schema {
                    table: table.to_owned(),
                    message: format!(
                        "column `{}` is {} in the table but {} in this load",
                        f.name(),
                        old.data_type(),
                        f.data_type()
                    ),
                });
            }
            Some(_) => {}
            None => {
                fields.push(f.clone());
                changed = true;
            }
        }
    }
    for f in null_only {
        if !fields.iter().any(|old| old.name() == f.name()) {
            fields.push(Arc::new(f.clone()));
            changed = true;
        }
    }
    Ok((Arc::new(Schema::new(fields)), changed))
}

/// Whether a table's field is a null-only column's declaration.
fn is_null_only(field: &Field) -> bool {
    field
        .metadata()
        .get(transform::NULL_ONLY_METADATA_KEY)
        .is_some_and(|v| v == "true")
}
