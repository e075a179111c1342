//! The commit of a load: copy-on-write merge, replace and append, as one Delta commit per
//! table.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::{Array, BooleanArray, RecordBatch, StringArray};
use arrow_schema::{Field, Schema, SchemaRef};
use bytes::Bytes;
use deltalake::DeltaTable;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::{Action, Add, MetadataExt};
use deltalake::protocol::{DeltaOperation, SaveMode};
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::async_writer::AsyncArrowWriter;

use transform::{CONTENT_HASH, LOAD_ID, ROW_ID, TableMeta, WriteDisposition};

use crate::encoding::{ColumnEncodings, encode, writer_properties};
use crate::hash_rows::HashRowsBuilder;
use crate::lake::{KEEP_HISTORY_PROPERTY, Lake, data_files, delta_schema, kept_history};
use crate::probe::{FileRows, files_maybe_holding};
use crate::writer::{
    IdMap, IdSet, LoadWriter, StagedFile, TableWriter, empty_schema, file_token, id_key,
    root_key_column,
};
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
}

/// Ids of a load's root rows, and which of them came more than once.
struct RootIds {
    /// Every root row id of the load, with the last page it came in.
    last_page: IdMap<u64>,
    /// Ids that came in more than one page.
    repeated: IdSet,
    /// Ids whose last record in the load says "delete" (the hard-delete column).
    deleted: IdSet,
}

impl LoadWriter {
    /// A checkpoint: commits what was written so far to every table except those of replaced
    /// roots (a replace swaps a table's content once, at the end of the run, never with part
    /// of it), and goes on writing under the same load id. Each table gets at most one
    /// commit, as in [`LoadWriter::commit`]; a table with nothing new gets none.
    pub async fn checkpoint(&mut self) -> Result<Vec<TableCommit>> {
        let mut commits = Vec::new();
        self.checkpoint_into(&mut commits).await?;
        Ok(commits)
    }

    /// [`LoadWriter::checkpoint`], pushing each commit into `commits` as it is made, so that
    /// a failure part-way still tells which tables moved.
    pub async fn checkpoint_into(&mut self, commits: &mut Vec<TableCommit>) -> Result<()> {
        let replaced: HashSet<String> = self
            .roots
            .iter()
            .filter(|r| r.write_disposition == WriteDisposition::Replace)
            .map(|r| r.name.clone())
            .collect();
        let (kept, done): (HashMap<_, _>, HashMap<_, _>) = std::mem::take(&mut self.tables)
            .into_iter()
            .partition(|(_, w)| replaced.contains(&w.meta.root));
        self.tables = kept;
        let part = LoadWriter {
            lake: self.lake.clone(),
            config: self.config.clone(),
            load_id: self.load_id.clone(),
            tables: done,
            roots: self
                .roots
                .iter()
                .filter(|r| !replaced.contains(&r.name))
                .cloned()
                .collect(),
            n_files: self.n_files,
            file_prefix: self.file_prefix.clone(),
            #[cfg(test)]
            pause_after_root: self.pause_after_root,
        };
        part.commit_into(commits).await
    }

    /// Commits the load: per root table, the root and each of its child tables move to a new
    /// Delta version in one commit each. A table with nothing to change gets no new version.
    /// Before the first commit, every table the load would change is checked for data files
    /// its version references but that are gone ([`SinkError::MissingFiles`]), so that such a
    /// load fails with no table moved.
    pub async fn commit(self) -> Result<Vec<TableCommit>> {
        let mut commits = Vec::new();
        self.commit_into(&mut commits).await?;
        Ok(commits)
    }

    /// [`LoadWriter::commit`], pushing each commit into `commits` as it is made, so that a
    /// failure part-way still tells which tables moved.
    pub async fn commit_into(mut self, commits: &mut Vec<TableCommit>) -> Result<()> {
        self.flush_all().await?;
        let existing = self.lake.table_names().await?;
        check_files_present(&self.lake, &self.roots, &existing).await?;
        let roots = self.roots.clone();
        for root in &roots {
            let mut root_ids = self.tables.get_mut(&root.name).map(|w| {
                let (last_page, repeated) = std::mem::take(&mut w.root_ids).into_maps();
                RootIds {
                    last_page,
                    repeated,
                    deleted: IdSet::default(),
                }
            });
            if let (Some(ids), Some(column), Some(w)) = (
                root_ids.as_mut(),
                self.config.hard_delete_columns.get(&root.name),
                self.tables.get(&root.name),
            ) && root.write_disposition == WriteDisposition::Merge
            {
                ids.deleted = deleted_ids(&self.lake, &root.name, column, &w.staged, ids).await?;
            }
            let prefix = format!("{}__", root.name);
            // Records whose stored copy is identical are left out, with their children: an
            // unchanged record costs no rewrite, and a load of nothing new commits nothing.
            // The stored hashes live in a table of their own, committed after the root's
            // child tables, so a load killed between the root's commit and its children's
            // leaves the old hashes, and the next load merges those records again.
            let mut new_hashes: Option<(StringArray, StringArray)> = None;
            if let (Some(ids), Some(w)) = (root_ids.as_mut(), self.tables.get(&root.name))
                && root.write_disposition == WriteDisposition::Merge
                && w.schema.column_with_name(CONTENT_HASH).is_some()
            {
                let (unchanged, rows) =
                    unchanged_ids(&self.lake, &root.name, &w.staged, ids).await?;
                new_hashes = Some(rows).filter(|(ids, _)| !ids.is_empty());
                if !unchanged.is_empty() {
                    tracing::debug!(table = %root.name, records = unchanged.len(), "unchanged records left out of the merge");
                    for id in &unchanged {
                        ids.last_page.remove(id);
                    }
                    for (name, tw) in self
                        .tables
                        .iter_mut()
                        .filter(|(n, _)| **n == root.name || n.starts_with(&prefix))
                    {
                        let (kept, replaced) = without_rows(
                            &self.lake,
                            &self.config,
                            &format!("{}-{}-same", self.load_id, file_token()),
                            name,
                            root_key_column(&tw.meta),
                            &tw.staged,
                            &|k| unchanged.contains(&k),
                        )
                        .await?;
                        self.lake
                            .delete_files(name, replaced.iter().map(|f| &f.name))
                            .await;
                        tw.staged = kept;
                    }
                }
            }
            // The root first, then its child tables: written this load or already in the lake.
            let mut group: Vec<String> = vec![root.name.clone()];
            let mut children: Vec<String> = self
                .tables
                .keys()
                .filter(|t| t.starts_with(&prefix))
                .chain(existing.iter().filter(|t| t.starts_with(&prefix)))
                .cloned()
                .collect();
            children.sort();
            children.dedup();
            group.extend(children);
            // The root's final staged files carry the load's root ids, which also say
            // which child files may hold rows to replace.
            let mut root_files: Vec<StagedFile> = Vec::new();
            let mut root_version: Option<u64> = None;
            for table in group {
                let writer = self.tables.remove(&table);
                let meta = match &writer {
                    Some(w) => w.meta.clone(),
                    None if table == root.name => root.clone(),
                    None => Arc::new(TableMeta {
                        name: table.clone(),
                        parent: Some(root.name.clone()),
                        root: root.name.clone(),
                        primary_key: None,
                        write_disposition: root.write_disposition,
                    }),
                };
                let is_root = table == root.name;
                let (committed, staged) = commit_table(
                    &self.lake,
                    &self.config,
                    &self.load_id,
                    &meta,
                    writer,
                    root_ids.as_ref(),
                    (!is_root).then_some((root.name.as_str(), root_files.as_slice())),
                    root_version
                        .filter(|_| !is_root)
                        .map(|v| (root.name.as_str(), v)),
                )
                .await?;
                if is_root {
                    root_files = staged;
                    root_version = committed.as_ref().map(|c| c.version);
                    #[cfg(test)]
                    if let Some(pause) = self.pause_after_root {
                        tokio::time::sleep(pause).await;
                    }
                }
                commits.extend(committed);
            }
            if let Some((ids, hashes)) = new_hashes {
                commits.extend(
                    commit_hashes(
                        &self.lake,
                        &self.config,
                        &self.load_id,
                        &root.name,
                        ids,
                        hashes,
                    )
                    .await?,
                );
            }
        }
        Ok(())
    }
}

/// Fails with [`SinkError::MissingFiles`] when an existing table a load would commit to (a
/// root, its child tables, their hash tables) references a data file that is gone.
async fn check_files_present(
    lake: &Lake,
    roots: &[Arc<TableMeta>],
    existing: &[String],
) -> Result<()> {
    let touched = |t: &String| {
        roots.iter().any(|r| {
            *t == r.name || t.starts_with(&format!("{}__", r.name)) || *t == hash_table(&r.name)
        })
    };
    for table in existing.iter().filter(|t| touched(t)) {
        let missing = lake.missing_files(table).await?;
        if !missing.is_empty() {
            return Err(SinkError::MissingFiles {
                destination: lake.url().to_string(),
                table: table.clone(),
                files: missing,
            });
        }
    }
    Ok(())
}

impl RootIds {
    /// Whether the copy of root id `k` that came in page `page` is the load's last one.
    fn is_last_copy(&self, k: u128, page: u64) -> bool {
        !self.repeated.contains(&k) || self.last_page.get(&k) == Some(&page)
    }
}

/// The page of each row of a staged file, in row order, from the file's runs.
fn row_pages(runs: &[(u64, u64)]) -> impl Iterator<Item = u64> + '_ {
    runs.iter()
        .flat_map(|(seq, n)| std::iter::repeat_n(*seq, *n as usize))
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

/// The table that holds the content hashes of a merged root table's records.
pub fn hash_table(root: &str) -> String {
    format!("_errlake_hashes_{root}")
}

/// The hash table's column of hashes (not [`CONTENT_HASH`], so that its own merge does not
/// look for unchanged records).
const HASH: &str = "hash";

/// Merges the load's `(row id, content hash)` pairs into the root's hash table.
async fn commit_hashes(
    lake: &Lake,
    config: &crate::ParquetSinkConfig,
    load_id: &str,
    root: &str,
    ids: StringArray,
    hashes: StringArray,
) -> Result<Vec<TableCommit>> {
    let name = hash_table(root);
    let meta = Arc::new(TableMeta {
        name: name.clone(),
        parent: None,
        root: name.clone(),
        primary_key: Some(ROW_ID.into()),
        write_disposition: WriteDisposition::Merge,
    });
    let schema = Arc::new(Schema::new(vec![
        Field::new(ROW_ID, arrow_schema::DataType::Utf8, false),
        Field::new(LOAD_ID, arrow_schema::DataType::Utf8, false),
        Field::new(HASH, arrow_schema::DataType::Utf8, false),
    ]));
    let n = ids.len();
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(ids),
            Arc::new(StringArray::from(vec![load_id; n])),
            Arc::new(hashes),
        ],
    )
    .map_err(|e| SinkError::Internal {
        message: format!("hash table of `{root}`: {e}"),
    })?;
    let mut writer = LoadWriter::new(
        lake.clone(),
        config.clone(),
        load_id.to_owned(),
        vec![meta.clone()],
    );
    writer
        .write(0, vec![transform::TableBatch { table: meta, batch }])
        .await?;
    // The hash table has no hash column of its own, so this commit does not come back here.
    Box::pin(writer.commit()).await
}

#[allow(clippy::too_many_arguments)]
async fn commit_table(
    lake: &Lake,
    config: &crate::ParquetSinkConfig,
    load_id: &str,
    meta: &Arc<TableMeta>,
    writer: Option<TableWriter>,
    root_ids: Option<&RootIds>,
    id_source: Option<(&str, &[StagedFile])>,
    root_commit: Option<(&str, u64)>,
) -> Result<(Option<TableCommit>, Vec<StagedFile>)> {
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
    loop {
        let mut rewritten = Vec::new();
        let outcome = commit_attempt(
            lake,
            config,
            load_id,
            meta,
            &staged,
            &schema,
            root_ids,
            id_source,
            root_commit,
            attempt,
            &mut rewritten,
        )
        .await;
        match outcome {
            Ok(commit) => return Ok((commit, staged)),
            Err(e) if attempt < MAX_COMMIT_ATTEMPTS && is_concurrent_commit(&e) => {
                lake.delete_files(table_name, rewritten.iter().map(|f| &f.name))
                    .await;
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

/// The ids among `ids` whose root row in `root_table` now comes from another load than
/// ours: rows added by other writers' commits after our commit at `our_version`.
async fn ids_won_by_others(
    lake: &Lake,
    root_table: &str,
    our_version: u64,
    load_id: &str,
    ids: &IdMap<u64>,
) -> Result<IdSet> {
    let mut won = IdSet::default();
    let Some(now) = lake.load_table(root_table).await? else {
        return Ok(won);
    };
    if now.version().is_none_or(|v| v <= our_version) {
        return Ok(won);
    }
    let then = lake.load_table_version(root_table, our_version).await?;
    let then_files: HashSet<String> = data_files(&then, root_table)?
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    for (path, size) in data_files(&now, root_table)?
        .into_iter()
        .filter(|(p, _)| !then_files.contains(p))
    {
        for_each_id_with(
            lake,
            root_table,
            FileRows::all(&path, size),
            LOAD_ID,
            |k, _, l| {
                if l != load_id && ids.contains_key(&k) {
                    won.insert(k);
                }
            },
        )
        .await?;
    }
    Ok(won)
}

/// The load's root ids whose record is stored unchanged (the same content hash in the
/// root's hash table; only files whose bloom filters may hold one of the load's ids are
/// read), and the `(row id, hash)` rows of the others, to store once the load is in.
/// An id that came more than once in the load gets an empty hash (its last copy is not
/// known here), and one the load deletes too, so neither is ever taken as unchanged.
async fn unchanged_ids(
    lake: &Lake,
    table: &str,
    staged: &[StagedFile],
    ids: &RootIds,
) -> Result<(IdSet, (StringArray, StringArray))> {
    let mut incoming = HashRowsBuilder::new();
    for f in staged {
        let file = FileRows::all(&f.name, f.size);
        for_each_id_with(lake, table, file, CONTENT_HASH, |k, id, h| {
            let h = if ids.repeated.contains(&k) || ids.deleted.contains(&k) {
                ""
            } else {
                h
            };
            incoming.push(k, id, h);
        })
        .await?;
    }
    let incoming = incoming.finish();
    let mut unchanged = IdSet::default();
    let hashes = hash_table(table);
    if let Some(t) = lake.load_table(&hashes).await?
        && !incoming.is_empty()
    {
        let existing = data_files(&t, &hashes)?;
        let candidates =
            files_maybe_holding(lake, &hashes, ROW_ID, &existing, table, staged).await?;
        for (path, size) in &existing {
            let Some(row_groups) = candidates.get(path) else {
                continue;
            };
            let file = FileRows {
                path,
                size: *size,
                row_groups: row_groups.as_deref(),
            };
            for_each_id_with(lake, &hashes, file, HASH, |k, _, h| {
                if !h.is_empty() && incoming.hash_of(k) == Some(h) {
                    unchanged.insert(k);
                }
            })
            .await?;
        }
    }
    let rows = incoming.columns_without(|k| unchanged.contains(&k))?;
    Ok((unchanged, rows))
}

/// Calls `f` with each row's id key, id and the text of column `column` in the row groups
/// `file` names (`_dlt_id` and a second string column, read alone); a file without that
/// column (written before it existed) has none to give.
async fn for_each_id_with(
    lake: &Lake,
    table: &str,
    file: FileRows<'_>,
    column: &str,
    mut f: impl FnMut(u128, &str, &str),
) -> Result<()> {
    let parquet_err = |source| SinkError::ParquetFile {
        table: table.to_owned(),
        path: file.path.to_owned(),
        source,
    };
    let mut builder = lake
        .data_file(table, file.path, file.size)
        .builder()
        .await
        .map_err(parquet_err)?;
    let has_column = builder
        .parquet_schema()
        .columns()
        .iter()
        .any(|c| c.name() == column);
    if !has_column {
        return Ok(());
    }
    if let Some(row_groups) = file.row_groups {
        builder = builder.with_row_groups(row_groups.to_vec());
    }
    let mask = ProjectionMask::columns(builder.parquet_schema(), [ROW_ID, column]);
    let mut stream = builder.with_projection(mask).build().map_err(parquet_err)?;
    while let Some(batch) = stream.try_next().await.map_err(parquet_err)? {
        let (Some(keys), Some(values)) = (
            batch
                .column_by_name(ROW_ID)
                .and_then(|c| c.as_string_opt::<i32>()),
            batch
                .column_by_name(column)
                .and_then(|c| c.as_string_opt::<i32>()),
        ) else {
            continue;
        };
        for (k, h) in keys.iter().zip(values.iter()) {
            if let (Some(k), Some(h)) = (k, h) {
                f(id_key(k), k, h);
            }
        }
    }
    Ok(())
}

/// Staged files without the rows whose key `remove` picks: each file with such rows is
/// rewritten (or dropped when nothing remains). Returns the files to commit and the
/// originals that were replaced.
async fn without_rows(
    lake: &Lake,
    config: &crate::ParquetSinkConfig,
    name_prefix: &str,
    table: &str,
    key_column: &str,
    staged: &[StagedFile],
    remove: &(dyn Fn(u128) -> bool + Sync),
) -> Result<(Vec<StagedFile>, Vec<StagedFile>)> {
    let (mut kept, mut replaced) = (Vec::new(), Vec::new());
    for (n, f) in staged.iter().enumerate() {
        let (total, n_kept, file) = rewrite_without(
            lake,
            config,
            name_prefix,
            table,
            key_column,
            FileRows::all(&f.name, f.size),
            remove,
            n + 1,
        )
        .await?;
        match file {
            Some(file) => kept.push(file),
            None if n_kept == total => {
                kept.push(f.clone());
                continue;
            }
            None => {}
        }
        replaced.push(f.clone());
    }
    Ok((kept, replaced))
}

/// The root ids whose last record in the load's staged root files has the hard-delete
/// column set: `true` for a boolean column, any value for another type. A record that
/// says "delete" and comes again unflagged in a later page of the load stays.
async fn deleted_ids(
    lake: &Lake,
    table: &str,
    column: &str,
    staged: &[StagedFile],
    ids: &RootIds,
) -> Result<IdSet> {
    use arrow_array::Array;
    let mut deleted = IdSet::default();
    for f in staged {
        let parquet_err = |source| SinkError::ParquetFile {
            table: table.to_owned(),
            path: f.name.clone(),
            source,
        };
        let builder = lake
            .data_file(table, &f.name, f.size)
            .builder()
            .await
            .map_err(parquet_err)?;
        if !builder.schema().fields().iter().any(|c| c.name() == column) {
            continue;
        }
        // Only an id's last copy in the load counts.
        let mut pages = row_pages(&f.runs);
        let mask = ProjectionMask::columns(builder.parquet_schema(), [ROW_ID, column]);
        let mut stream = builder.with_projection(mask).build().map_err(parquet_err)?;
        while let Some(batch) = stream.try_next().await.map_err(parquet_err)? {
            let (Some(keys), Some(flags)) = (
                batch
                    .column_by_name(ROW_ID)
                    .and_then(|c| c.as_string_opt::<i32>()),
                batch.column_by_name(column),
            ) else {
                pages.by_ref().take(batch.num_rows()).for_each(drop);
                continue;
            };
            let bools = flags.as_boolean_opt();
            for (i, k) in keys.iter().enumerate() {
                let page = pages.next();
                let set = match bools {
                    Some(b) => b.is_valid(i) && b.value(i),
                    None => flags.is_valid(i),
                };
                let Some(k) = k.map(id_key) else { continue };
                if page.is_some_and(|p| ids.is_last_copy(k, p)) {
                    if set {
                        deleted.insert(k);
                    } else {
                        deleted.remove(&k);
                    }
                }
            }
        }
    }
    Ok(deleted)
}

/// How many times a table commit is tried when other writers keep committing first.
const MAX_COMMIT_ATTEMPTS: usize = 20;

/// Whether a commit failed because another writer committed first.
pub(crate) fn is_concurrent_commit(e: &SinkError) -> bool {
    use deltalake::DeltaTableError as E;
    use deltalake::kernel::transaction::TransactionError as T;
    match e {
        SinkError::Delta { source, .. } => match source {
            E::VersionAlreadyExists(_) => true,
            E::Transaction { source } => matches!(
                source,
                T::VersionAlreadyExists(_) | T::MaxCommitAttempts(_) | T::CommitConflict(_)
            ),
            // Two first loads: the other one created the table.
            other => other.to_string().contains("already exists"),
        },
        // A file of the version we read was replaced and deleted by the other writer.
        SinkError::Store {
            source: object_store::Error::NotFound { .. },
            ..
        } => true,
        SinkError::ParquetFile {
            source: parquet::errors::ParquetError::External(inner),
            ..
        } => matches!(
            inner.downcast_ref::<object_store::Error>(),
            Some(object_store::Error::NotFound { .. })
        ),
        _ => false,
    }
}

/// One try at moving a table to its next version with the load's staged files. Files this
/// try writes (rewrites of merged files) are pushed to `rewritten`, so that a failed try can
/// delete them.
#[allow(clippy::too_many_arguments)]
async fn commit_attempt(
    lake: &Lake,
    config: &crate::ParquetSinkConfig,
    load_id: &str,
    meta: &Arc<TableMeta>,
    staged: &[StagedFile],
    schema: &SchemaRef,
    root_ids: Option<&RootIds>,
    id_source: Option<(&str, &[StagedFile])>,
    root_commit: Option<(&str, u64)>,
    attempt: usize,
    rewritten: &mut Vec<StagedFile>,
) -> Result<Option<TableCommit>> {
    let table_name = meta.name.as_str();
    let delta_err = |source| SinkError::Delta {
        table: table_name.to_owned(),
        source,
    };
    let key_column = root_key_column(meta);
    let merge = meta.write_disposition == WriteDisposition::Merge;
    // A child table: root rows of ours that another writer replaced after our root commit
    // are theirs, and so are their children; ours of those roots stay out.
    let won_by_others = match (merge, root_commit, root_ids) {
        (true, Some((root_table, version)), Some(ids)) => {
            ids_won_by_others(lake, root_table, version, load_id, &ids.last_page).await?
        }
        _ => IdSet::default(),
    };
    // In a child table, our own rows of roots that another writer won or that the load
    // deletes stay out.
    let deleted = root_ids.filter(|_| !meta.is_root()).map(|ids| &ids.deleted);
    let own_staged: Vec<StagedFile>;
    let staged: &[StagedFile] = if won_by_others.is_empty() && deleted.is_none_or(HashSet::is_empty)
    {
        staged
    } else {
        let remove =
            |k: u128| won_by_others.contains(&k) || deleted.is_some_and(|d| d.contains(&k));
        let (kept, _) = without_rows(
            lake,
            config,
            &format!("{load_id}-{}-own{attempt}", file_token()),
            table_name,
            key_column,
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
        own_staged = kept;
        &own_staged
    };
    let started = std::time::Instant::now();
    let table = lake.load_table(table_name).await?;
    let loaded = started.elapsed();
    let mut probed = std::time::Duration::ZERO;
    let mut actions: Vec<Action> = Vec::new();
    let mut removed_paths = Vec::new();
    let mut rows_removed = 0u64;
    // Bytes of the table before the commit, and of the files a merge read and rewrote.
    let mut bytes_before = 0u64;
    let mut bytes_read = 0u64;
    let existing_schema: Option<SchemaRef> = match &table {
        Some(t) => Some(t.snapshot().map_err(delta_err)?.snapshot().arrow_schema()),
        None => None,
    };

    if let Some(t) = &table {
        let files: Vec<_> = t.snapshot().map_err(delta_err)?.log_data().iter().collect();
        let incoming: Option<&IdMap<u64>> = root_ids
            .map(|r| &r.last_page)
            .filter(|m| merge && !m.is_empty());
        // Only files whose bloom filters may hold an incoming root id are read at all.
        let candidates = match incoming {
            Some(_) => {
                let existing: Vec<(String, u64)> = files
                    .iter()
                    .map(|f| (f.path().into_owned(), f.size().max(0) as u64))
                    .collect();
                let (id_table, id_files) = id_source.unwrap_or((table_name, staged));
                let probe_started = std::time::Instant::now();
                let candidates = files_maybe_holding(
                    lake, table_name, key_column, &existing, id_table, id_files,
                )
                .await?;
                probed = probe_started.elapsed();
                candidates
            }
            None => Default::default(),
        };
        bytes_before = files.iter().map(|f| f.size().max(0) as u64).sum();
        for f in files {
            let path = f.path().into_owned();
            let remove =
                |f: &deltalake::kernel::LogicalFileView| Action::Remove(f.remove_action(true));
            match (meta.write_disposition, incoming) {
                (WriteDisposition::Replace, _) => {
                    rows_removed += f.num_records().unwrap_or(0) as u64;
                    actions.push(remove(&f));
                    removed_paths.push(path);
                }
                (WriteDisposition::Merge, Some(ids)) => {
                    let Some(row_groups) = candidates.get(&path) else {
                        continue;
                    };
                    let replaced = |k: u128| ids.contains_key(&k) && !won_by_others.contains(&k);
                    let size = f.size().max(0) as u64;
                    let n = rewritten.len() + 1;
                    let (total, kept, file) = rewrite_without(
                        lake,
                        config,
                        &format!("{load_id}-{}-{attempt}", file_token()),
                        table_name,
                        key_column,
                        FileRows {
                            path: &path,
                            size,
                            row_groups: row_groups.as_deref(),
                        },
                        &replaced,
                        n,
                    )
                    .await?;
                    if kept == total {
                        // A bloom filter's false positive: the file stays as it is.
                        continue;
                    }
                    bytes_read += size;
                    rows_removed += total - kept;
                    actions.push(remove(&f));
                    removed_paths.push(path.clone());
                    rewritten.extend(file);
                }
                _ => {}
            }
        }
    }

    let merged = started.elapsed();
    let rows_added: u64 = staged.iter().map(|f| f.n_rows).sum();
    let files_added = staged.len();
    let now_ms = chrono::Utc::now().timestamp_millis();
    for f in staged.iter().chain(rewritten.iter()) {
        actions.push(add_action(&f.name, f.size, f.n_rows, true, now_ms));
    }
    if actions.is_empty() {
        return Ok(None);
    }

    let merged_schema = merge_schemas(table_name, existing_schema.as_ref(), schema)?;
    // No retry inside delta-rs: a table that moved is merged again from the top, since
    // its conflict check does not see that a concurrent append may hold our ids.
    let properties = CommitProperties::default()
        .with_max_retries(0)
        .with_metadata([
            ("errlake.load_id".to_owned(), serde_json::json!(load_id)),
            (
                "errlake.rows_added".to_owned(),
                serde_json::json!(rows_added),
            ),
            (
                "errlake.rows_removed".to_owned(),
                serde_json::json!(rows_removed),
            ),
        ]);
    // The history setting: `None` leaves the table's as it is, `Some(None)` removes it.
    let history_setting: Option<Option<String>> = config
        .keep_history_secs
        .map(|secs| (secs > 0).then(|| format!("interval {secs} seconds")));
    let keeps_history;
    let version = match table {
        None => {
            if staged.is_empty() {
                return Ok(None);
            }
            keeps_history = matches!(history_setting, Some(Some(_)));
            let delta = delta_schema(table_name, &merged_schema)?;
            let blank = lake_table_handle(lake, table_name)?;
            let created = blank
                .create()
                .with_columns(delta.fields().cloned())
                .with_table_name(table_name)
                .with_configuration(
                    history_setting
                        .flatten()
                        .map(|v| (KEEP_HISTORY_PROPERTY, Some(v))),
                )
                .with_actions(actions)
                .with_commit_properties(properties)
                .await
                .map_err(delta_err)?;
            created.version().unwrap_or(0)
        }
        Some(t) => {
            let snapshot = t.snapshot().map_err(delta_err)?;
            let metadata_err = |e: deltalake::kernel::Error| SinkError::Schema {
                table: table_name.to_owned(),
                message: e.to_string(),
            };
            let mut metadata = snapshot.metadata().clone();
            let mut metadata_changed = false;
            if existing_schema
                .as_ref()
                .is_some_and(|s| s.fields().len() != merged_schema.fields().len())
            {
                let delta = delta_schema(table_name, &merged_schema)?;
                metadata = metadata.with_schema(&delta).map_err(metadata_err)?;
                metadata_changed = true;
            }
            let current = metadata.configuration().get(KEEP_HISTORY_PROPERTY).cloned();
            match &history_setting {
                Some(Some(wanted)) if current.as_ref() != Some(wanted) => {
                    metadata = metadata
                        .add_config_key(KEEP_HISTORY_PROPERTY.to_owned(), wanted.clone())
                        .map_err(metadata_err)?;
                    metadata_changed = true;
                }
                Some(None) if current.is_some() => {
                    metadata = metadata
                        .remove_config_key(KEEP_HISTORY_PROPERTY)
                        .map_err(metadata_err)?;
                    metadata_changed = true;
                }
                _ => {}
            }
            keeps_history = match &history_setting {
                Some(setting) => setting.is_some(),
                None => kept_history(snapshot).is_some(),
            };
            if metadata_changed {
                actions.push(Action::Metadata(metadata));
            }
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
            finalized.version()
        }
    };

    let committed = started.elapsed();
    // The files the current version no longer references are deleted, so that a plain
    // `*.parquet` glob of the table sees exactly its rows; a table that keeps history keeps
    // them until their removal is older than its retention (`remove_orphans`).
    if !keeps_history {
        lake.delete_files(table_name, &removed_paths).await;
    }
    // And the files of loads that died before their commit, once old enough.
    match lake
        .remove_orphans(
            table_name,
            std::time::Duration::from_secs(config.orphan_grace_secs),
            false,
        )
        .await
    {
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
    tracing::debug!(
        table = table_name,
        version,
        load_seconds = loaded.as_secs_f64(),
        probe_seconds = probed.as_secs_f64(),
        merge_seconds = (merged - loaded - probed).as_secs_f64(),
        commit_seconds = (committed - merged).as_secs_f64(),
        cleanup_seconds = (started.elapsed() - committed).as_secs_f64(),
        "table committed"
    );
    Ok(Some(TableCommit {
        table: table_name.to_owned(),
        root: meta.root.clone(),
        version,
        rows_added,
        rows_removed,
        files_added,
        files_removed: removed_paths.len(),
        bytes_before,
        bytes_rewritten: bytes_read,
    }))
}

/// A handle on a table folder that holds no table yet.
fn lake_table_handle(lake: &Lake, table: &str) -> Result<DeltaTable> {
    let url = lake.table_url(table);
    deltalake::DeltaTableBuilder::from_url(url.clone())
        .and_then(|b| b.with_storage_backend(lake.store().clone(), url).build())
        .map_err(|source| SinkError::Delta {
            table: table.to_owned(),
            source,
        })
}

/// The table's columns followed by the load's new ones; a changed type is an error.
fn merge_schemas(
    table: &str,
    existing: Option<&SchemaRef>,
    incoming: &SchemaRef,
) -> Result<SchemaRef> {
    let Some(existing) = existing else {
        return Ok(incoming.clone());
    };
    let mut fields: Vec<Arc<Field>> = existing.fields().iter().cloned().collect();
    for f in incoming.fields() {
        match existing.field_with_name(f.name()) {
            Ok(old) if old.data_type() != f.data_type() => {
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
            Ok(_) => {}
            Err(_) => fields.push(f.clone()),
        }
    }
    Ok(Arc::new(Schema::new(fields)))
}

/// Drops, from a staged file, the rows whose root id came again in a later page.
async fn drop_superseded(
    lake: &Lake,
    config: &crate::ParquetSinkConfig,
    table: &str,
    key_column: &str,
    file: StagedFile,
    ids: &RootIds,
) -> Result<Option<StagedFile>> {
    let path = lake.file_path(table, &file.name);
    let bytes = read_all(lake, &path).await?;
    let keys = read_column(&bytes, key_column, table, &file.name)?;
    let pages: Vec<u64> = row_pages(&file.runs).collect();
    let keep: Vec<bool> = keys
        .iter()
        .zip(&pages)
        .map(|(k, seq)| {
            k.as_deref()
                .is_none_or(|k| ids.is_last_copy(id_key(k), *seq))
        })
        .collect();
    if keep.iter().all(|k| *k) {
        return Ok(Some(file));
    }
    let batches = read_batches(&bytes, table, &file.name)?;
    let mut offset = 0;
    let mut remaining = Vec::new();
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for b in batches {
        let n = b.num_rows();
        let mask = BooleanArray::from(keep[offset..offset + n].to_vec());
        for (i, k) in keep[offset..offset + n].iter().enumerate() {
            if *k {
                let seq = pages[offset + i];
                match runs.last_mut() {
                    Some((s, c)) if *s == seq => *c += 1,
                    _ => runs.push((seq, 1)),
                }
            }
        }
        offset += n;
        let kept = arrow_select::filter::filter_record_batch(&b, &mask).map_err(|e| {
            SinkError::Internal {
                message: format!("filtering {}: {e}", file.name),
            }
        })?;
        if kept.num_rows() > 0 {
            remaining.push(kept);
        }
    }
    lake.store()
        .delete(&path)
        .await
        .map_err(|source| SinkError::Store {
            path: path.to_string(),
            source,
        })?;
    if remaining.is_empty() {
        return Ok(None);
    }
    let schema = remaining[0].schema();
    let encoded = encode(
        config,
        &schema,
        &ColumnEncodings::sample(&remaining[0]),
        &remaining,
        table,
    )?
    .bytes;
    let name = file.name.replace(".zstd.parquet", "-dedup.zstd.parquet");
    let size = encoded.len() as u64;
    put(lake, &lake.file_path(table, &name), encoded).await?;
    let n_rows = runs.iter().map(|(_, n)| n).sum();
    Ok(Some(StagedFile {
        name,
        size,
        n_rows,
        runs,
    }))
}

/// Rewrites a file without the rows whose key `remove` picks (by [`id_key`]), streaming one batch
/// at a time. Returns the file's rows, the rows kept, and the new file if rows were removed
/// and some remain (nothing is written when no row matched). Only the row groups `file`
/// names are looked in for such rows; the rewrite, if any, reads them all.
#[allow(clippy::too_many_arguments)]
async fn rewrite_without(
    lake: &Lake,
    config: &crate::ParquetSinkConfig,
    load_id: &str,
    table: &str,
    key_column: &str,
    file: FileRows<'_>,
    remove: &(dyn Fn(u128) -> bool + Sync),
    n: usize,
) -> Result<(u64, u64, Option<StagedFile>)> {
    let path = file.path;
    let parquet_err = |source| SinkError::ParquetFile {
        table: table.to_owned(),
        path: path.to_owned(),
        source,
    };
    use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
    use parquet::arrow::async_reader::ParquetRecordBatchStreamBuilder;
    let row_groups = file.row_groups;
    let file = lake.data_file(table, path, file.size);
    let metadata = ArrowReaderMetadata::load_async(&mut file.clone(), ArrowReaderOptions::new())
        .await
        .map_err(parquet_err)?;
    let total = metadata.metadata().file_metadata().num_rows().max(0) as u64;
    // The key column alone first, of the row groups that may hold a row to remove: a file
    // that loses no row (a bloom filter's false positive, likely when a load brings a hundred
    // thousand ids) or every row is not read further.
    let mut keys =
        ParquetRecordBatchStreamBuilder::new_with_metadata(file.clone(), metadata.clone());
    if let Some(row_groups) = row_groups {
        keys = keys.with_row_groups(row_groups.to_vec());
    }
    let mask = ProjectionMask::columns(keys.parquet_schema(), [key_column]);
    let mut keys = keys.with_projection(mask).build().map_err(parquet_err)?;
    let mut going = 0u64;
    while let Some(batch) = keys.try_next().await.map_err(parquet_err)? {
        let column = batch
            .column_by_name(key_column)
            .ok_or_else(|| missing_column(table, path, key_column))?;
        going += column
            .as_string::<i32>()
            .iter()
            .filter(|k| k.is_some_and(|k| remove(id_key(k))))
            .count() as u64;
    }
    if going == 0 || going == total {
        return Ok((total, total - going, None));
    }
    let encodings = ColumnEncodings::of_file(metadata.metadata());
    let builder = ParquetRecordBatchStreamBuilder::new_with_metadata(file, metadata);
    let schema = builder.schema().clone();
    let mut stream = builder.build().map_err(parquet_err)?;
    let name = crate::files::data_file_name(&format!("{load_id}-rw-{n:05}"));
    let sink = lake.upload(table, &name);
    let mut writer = AsyncArrowWriter::try_new(
        sink,
        schema.clone(),
        Some(writer_properties(config, &schema, &encodings)),
    )
    .map_err(parquet_err)?;
    let mut kept = 0u64;
    while let Some(batch) = stream.try_next().await.map_err(parquet_err)? {
        let keys = batch
            .column_by_name(key_column)
            .ok_or_else(|| missing_column(table, path, key_column))?;
        let mask: BooleanArray = keys
            .as_string::<i32>()
            .iter()
            .map(|k| Some(!k.is_some_and(|k| remove(id_key(k)))))
            .collect();
        let remaining = arrow_select::filter::filter_record_batch(&batch, &mask).map_err(|e| {
            SinkError::Internal {
                message: format!("filtering {path}: {e}"),
            }
        })?;
        kept += remaining.num_rows() as u64;
        if remaining.num_rows() > 0 {
            writer.write(&remaining).await.map_err(parquet_err)?;
        }
    }
    if kept == total || kept == 0 {
        let _ = writer.into_inner().abort().await;
        return Ok((total, kept, None));
    }
    writer.finish().await.map_err(parquet_err)?;
    let size = writer.bytes_written() as u64;
    Ok((
        total,
        kept,
        Some(StagedFile {
            name,
            size,
            n_rows: kept,
            runs: Vec::new(),
        }),
    ))
}

pub(crate) async fn put(
    lake: &Lake,
    path: &object_store::path::Path,
    bytes: Vec<u8>,
) -> Result<()> {
    lake.store()
        .put(path, bytes.into())
        .await
        .map_err(|source| SinkError::Store {
            path: path.to_string(),
            source,
        })?;
    Ok(())
}

async fn read_all(lake: &Lake, path: &object_store::path::Path) -> Result<Bytes> {
    let fail = |source| SinkError::Store {
        path: path.to_string(),
        source,
    };
    lake.store()
        .get(path)
        .await
        .map_err(fail)?
        .bytes()
        .await
        .map_err(fail)
}

fn missing_column(table: &str, file: &str, column: &str) -> SinkError {
    SinkError::Internal {
        message: format!("file {file} of `{table}` has no `{column}` column"),
    }
}

/// One text column of a Parquet file.
fn read_column(
    bytes: &Bytes,
    column: &str,
    table: &str,
    file: &str,
) -> Result<Vec<Option<String>>> {
    let fail = |source| SinkError::Parquet {
        table: table.to_owned(),
        source,
    };
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes.clone()).map_err(fail)?;
    let idx = builder
        .schema()
        .index_of(column)
        .map_err(|_| missing_column(table, file, column))?;
    let mask = ProjectionMask::roots(builder.parquet_schema(), [idx]);
    let reader = builder.with_projection(mask).build().map_err(fail)?;
    let mut out = Vec::new();
    for b in reader {
        let b = b.map_err(|e| SinkError::Internal {
            message: format!("reading {file}: {e}"),
        })?;
        out.extend(
            b.column(0)
                .as_string::<i32>()
                .iter()
                .map(|v| v.map(str::to_owned)),
        );
    }
    Ok(out)
}

fn read_batches(bytes: &Bytes, table: &str, file: &str) -> Result<Vec<RecordBatch>> {
    let fail = |source| SinkError::Parquet {
        table: table.to_owned(),
        source,
    };
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes.clone())
        .map_err(fail)?
        .build()
        .map_err(fail)?;
    reader
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| SinkError::Internal {
            message: format!("reading {file}: {e}"),
        })
}
