//! The commit of a load: per root table, the root, then its child tables, then its content
//! hashes, one Delta commit each, the roots at once; a checkpoint is the same commit of what
//! was staged so far.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use arrow_array::{RecordBatch, StringArray};
use arrow_schema::{Field, Schema};

use transform::{CONTENT_HASH, LOAD_ID, ROW_ID, TableMeta, WriteDisposition};

use crate::columns::root_key_column;
use crate::hash_rows::HashRows;
use crate::lake::Lake;
use crate::load_ids::{HASH, RootIds, deleted_ids, hash_table, unchanged_ids};
use crate::rewrite::without_rows;
use crate::table_commit::{Committed, TableCommit, TableLoad, commit_table};
use crate::writer::{IdSet, LoadWriter, StagedFile, file_token, root_of};
use crate::{Result, SinkError};

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

    /// [`LoadWriter::checkpoint`], pushing every commit made into `commits`, so that
    /// a failure part-way still tells which tables moved.
    pub async fn checkpoint_into(&mut self, commits: &mut Vec<TableCommit>) -> Result<()> {
        let part = self.split_off(|root| root.write_disposition != WriteDisposition::Replace);
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

    /// [`LoadWriter::commit`], pushing every commit made into `commits`, also when the
    /// commit fails part-way, so that the caller still learns which tables moved.
    ///
    /// Each root's tables commit in their order (the root, its child tables, its hash
    /// table), and the roots at once, each in a task of its own: they touch disjoint tables,
    /// a table's commit mostly waits on the store (the end of a 40,000-event run spent 0.4 s
    /// committing 20 tables one by one), and a merge's rewrites use another core. Once one
    /// root's commit fails, the others start no further table's commit.
    pub async fn commit_into(mut self, commits: &mut Vec<TableCommit>) -> Result<()> {
        self.flush_all().await?;
        if let Some(release) = self.release_memory {
            release();
        }
        let existing: Arc<[String]> = self.lake.table_names().await?.into();
        check_files_present(&self.lake, &self.roots, &existing).await?;
        // The files earlier checkpoints committed (a poisoned lock only means a panic
        // elsewhere; the names are still whole).
        let own_before = Arc::new(
            self.own_files
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
        );
        let roots = self.roots.clone();
        let made: Arc<Mutex<Vec<Vec<TableCommit>>>> =
            Arc::new(Mutex::new(vec![Vec::new(); roots.len()]));
        let failed = Arc::new(AtomicBool::new(false));
        let mut groups = tokio::task::JoinSet::new();
        for (i, root) in roots.iter().enumerate() {
            let group = self.split_off(|r| r.name == root.name);
            let progress = RootProgress {
                existing: existing.clone(),
                own_before: own_before.clone(),
                made: made.clone(),
                slot: i,
                failed: failed.clone(),
            };
            let commit: CommitFuture = Box::pin(group.commit_root(root.clone(), progress));
            groups.spawn(commit);
        }
        let mut outcome = Ok(());
        while let Some(joined) = groups.join_next().await {
            let result = joined.unwrap_or_else(|e| {
                Err(SinkError::Internal {
                    message: format!("a root's commit stopped: {e}"),
                })
            });
            if let Err(e) = result {
                failed.store(true, Ordering::SeqCst);
                if outcome.is_ok() {
                    outcome = Err(e);
                }
            }
        }
        // In the roots' order, each root's tables in theirs, whichever finished first.
        let made = std::mem::take(&mut *made.lock().unwrap_or_else(PoisonError::into_inner));
        commits.extend(made.into_iter().flatten());
        outcome
    }

    /// The commit of one root's tables (this writer holds that root alone): the root, then
    /// its child tables, then its hash table, each commit noted in `progress` as made. It
    /// stops before a table's commit once another root's commit failed (`commit_into` notes
    /// a failure as soon as the failed task ends).
    ///
    /// The hash table's file is written while the root and its children commit, in a task
    /// of its own, and committed after them: written after them, its encoding was the last
    /// 0.1 s of a 200,000-event run with one core idle. Staged files are seen by no reader
    /// before their commit, and when the root's commit fails or stops, the hash file is
    /// deleted.
    async fn commit_root(mut self, root: Arc<TableMeta>, progress: RootProgress) -> Result<()> {
        if progress.stopped() {
            return Ok(());
        }
        let (root_ids, new_hashes) = self.root_ids_of(&root, &progress.own_before).await?;
        let hash_file = new_hashes.map(|rows| {
            let meta = hash_table_meta(&root.name);
            let writer = self.hash_writer(meta.clone());
            tokio::spawn(stage_hashes(writer, meta, rows))
        });
        let tables = self.commit_root_tables(&root, root_ids, &progress).await;
        let hash_file = match hash_file {
            None => None,
            Some(task) => Some(task.await.unwrap_or_else(|e| {
                Err(SinkError::Internal {
                    message: format!("writing the hash table of `{}` stopped: {e}", root.name),
                })
            })),
        };
        match (tables, hash_file) {
            (Ok(root_own_files_untouched), Some(Ok(mut writer))) => {
                if progress.stopped() {
                    writer.abort().await;
                    return Ok(());
                }
                writer.skip_own_root_files = root_own_files_untouched;
                for c in commit_hashes(writer).await? {
                    progress.note(Some(c));
                }
                Ok(())
            }
            (Ok(_), None) => Ok(()),
            (Ok(_), Some(Err(e))) => Err(e),
            (Err(e), hash_file) => {
                if let Some(Ok(writer)) = hash_file {
                    writer.abort().await;
                }
                Err(e)
            }
        }
    }

    /// The root's table and then its child tables, each committed in turn (see
    /// [`LoadWriter::commit_root`]). Returns whether the root's commit left the load's
    /// earlier root files untouched (then its hash table's probe leaves the load's earlier
    /// hash files out).
    async fn commit_root_tables(
        &mut self,
        root: &Arc<TableMeta>,
        root_ids: Option<RootIds>,
        progress: &RootProgress,
    ) -> Result<bool> {
        let own_before = progress.own_before.as_ref();
        let group = self.tables_of(root, &progress.existing);
        // The root's final staged files carry the load's root ids, which also say
        // which child files may hold rows to replace.
        let mut root_files: Vec<StagedFile> = Vec::new();
        let mut root_version: Option<u64> = None;
        let mut root_own_files_untouched = false;
        for table in group {
            if progress.stopped() {
                break;
            }
            let writer = self.tables.remove(&table);
            let meta = match &writer {
                Some(w) => w.meta.clone(),
                None => meta_without_rows(root, &table),
            };
            let is_root = table == root.name;
            let null_only = self
                .registry
                .as_ref()
                .map_or_else(Vec::new, |r| r.null_only_fields(&table));
            let load = TableLoad {
                null_only: &null_only,
                lake: &self.lake,
                config: &self.config,
                load_id: &self.load_id,
                meta: &meta,
                root_ids: root_ids.as_ref(),
                id_source: (!is_root).then_some((root.name.as_str(), root_files.as_slice())),
                root_commit: root_version
                    .filter(|_| !is_root)
                    .map(|v| (root.name.as_str(), v)),
                own_files: own_before.get(&table),
                skip_own_files: if is_root {
                    self.skip_own_root_files
                } else {
                    root_own_files_untouched
                },
            };
            let Committed {
                commit: committed,
                staged,
                own_files_untouched,
            } = commit_table(load, writer).await?;
            if committed.is_some() {
                self.note_own_files(&table, &staged);
            }
            if is_root {
                root_own_files_untouched = own_files_untouched;
                root_files = staged;
                root_version = committed.as_ref().map(|c| c.version);
                #[cfg(test)]
                if let Some(pause) = self.pause_after_root {
                    tokio::time::sleep(pause).await;
                }
            }
            progress.note(committed);
        }
        Ok(root_own_files_untouched)
    }

    /// A writer for a root's hash table (`meta`), under this load (the root names of the
    /// load tell which of the lake's tables are the hash table's:
    /// `_errlake_hashes_events__archive` is not a child of `_errlake_hashes_events`).
    fn hash_writer(&self, meta: Arc<TableMeta>) -> LoadWriter {
        let mut writer = LoadWriter::new(
            self.lake.clone(),
            self.config.clone(),
            self.load_id.clone(),
            vec![meta],
        );
        writer.root_names = self.root_names.iter().map(|r| hash_table(r)).collect();
        writer.own_files = self.own_files.clone();
        writer
    }
}

/// A root's commit as its task runs it.
type CommitFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send>>;

/// What the roots' commits of one load share: what the lake held before, and where each
/// notes its commits as it makes them.
struct RootProgress {
    /// The lake's tables before the load's commit.
    existing: Arc<[String]>,
    /// The files the load's earlier checkpoints committed, per table.
    own_before: Arc<HashMap<String, HashSet<String>>>,
    /// Per root, in the load's order of roots, the commits made.
    made: Arc<Mutex<Vec<Vec<TableCommit>>>>,
    /// This root's place in `made`.
    slot: usize,
    /// Set when a root's commit failed: the others start no further table's commit.
    failed: Arc<AtomicBool>,
}

impl RootProgress {
    fn stopped(&self) -> bool {
        self.failed.load(Ordering::SeqCst)
    }

    fn note(&self, committed: Option<TableCommit>) {
        if let Some(c) = committed {
            self.made.lock().unwrap_or_else(PoisonError::into_inner)[self.slot].push(c);
        }
    }
}

/// The metadata of a table of `root` the load wrote no rows to: the root itself, or a child
/// table already in the lake.
fn meta_without_rows(root: &Arc<TableMeta>, table: &str) -> Arc<TableMeta> {
    if table == root.name {
        return root.clone();
    }
    Arc::new(TableMeta {
        name: table.to_owned(),
        parent: Some(root.name.clone()),
        root: root.name.clone(),
        primary_key: None,
        write_disposition: root.write_disposition,
    })
}

impl LoadWriter {
    /// The ids the load brings to `root` (`None`: it staged no rows there), with the ids its
    /// hard-delete column deletes, and without the records whose stored copy is identical
    /// ([`LoadWriter::leave_out_unchanged`], whose hash rows come second).
    async fn root_ids_of(
        &mut self,
        root: &TableMeta,
        own_before: &HashMap<String, HashSet<String>>,
    ) -> Result<(Option<RootIds>, Option<HashRows>)> {
        let Some(w) = self.tables.get_mut(&root.name) else {
            return Ok((None, None));
        };
        let (last_page, repeated) = std::mem::take(&mut w.root_ids).into_pages();
        let mut ids = RootIds {
            last_page,
            repeated,
            deleted: IdSet::default(),
        };
        if let Some(column) = self.config.hard_delete_columns.get(&root.name)
            && root.write_disposition == WriteDisposition::Merge
        {
            ids.deleted = deleted_ids(&self.lake, &root.name, column, &w.staged, &ids).await?;
        }
        let new_hashes = self.leave_out_unchanged(root, &mut ids, own_before).await?;
        Ok((Some(ids), new_hashes))
    }

    /// Notes the files a commit added to `table` among the load's own (`own_files`).
    fn note_own_files(&self, table: &str, staged: &[StagedFile]) {
        if staged.is_empty() {
            return;
        }
        self.own_files
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(table.to_owned())
            .or_default()
            .extend(staged.iter().map(|f| f.name.clone()));
    }

    /// Records whose stored copy is identical are left out, with their children: an
    /// unchanged record costs no rewrite, and a load of nothing new commits nothing. The
    /// stored hashes live in a table of their own, committed after the root's child tables,
    /// so a load killed between the root's commit and its children's leaves the old hashes,
    /// and the next load merges those records again. Returns the `(row id, hash)` rows to
    /// store once the root and its children are in (`None`: none, or no hashes).
    ///
    /// The load's own hash files of earlier checkpoints (`own_before`) are not read: a record
    /// the load already stored comes again only when its page came twice, and merging it
    /// again is correct where leaving it out only saves work, while reading them made every
    /// checkpoint slower than the one before.
    async fn leave_out_unchanged(
        &mut self,
        root: &TableMeta,
        ids: &mut RootIds,
        own_before: &HashMap<String, HashSet<String>>,
    ) -> Result<Option<HashRows>> {
        let Some(w) = self.tables.get(&root.name) else {
            return Ok(None);
        };
        if root.write_disposition != WriteDisposition::Merge
            || w.schema.column_with_name(CONTENT_HASH).is_none()
        {
            return Ok(None);
        }
        let own_hash_files = own_before.get(&hash_table(&root.name));
        let (unchanged, rows) =
            unchanged_ids(&self.lake, &root.name, &w.staged, ids, own_hash_files).await?;
        if !unchanged.is_empty() {
            tracing::debug!(table = %root.name, records = unchanged.len(), "unchanged records left out of the merge");
            ids.last_page.remove_all(&unchanged);
            for (name, tw) in self
                .tables
                .iter_mut()
                .filter(|(_, w)| w.meta.root == root.name)
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
        Ok(Some(rows).filter(|rows| !rows.is_empty()))
    }

    /// A root's tables in commit order: the root first, then its child tables, written this
    /// load or already in the lake (`existing`).
    fn tables_of(&self, root: &TableMeta, existing: &[String]) -> Vec<String> {
        let mut group: Vec<String> = vec![root.name.clone()];
        let mut children: Vec<String> = self
            .tables
            .values()
            .filter(|w| w.meta.root == root.name && !w.meta.is_root())
            .map(|w| w.meta.name.clone())
            .chain(
                existing
                    .iter()
                    .filter(|t| {
                        **t != root.name
                            && !self.tables.contains_key(*t)
                            && root_of(t, &self.root_names) == Some(root.name.as_str())
                    })
                    .cloned(),
            )
            .collect();
        children.sort();
        children.dedup();
        group.extend(children);
        group
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

/// Rows of the hash table per batch written.
const HASH_ROWS_PER_BATCH: usize = 8192;

/// The hash table of root table `root`: merged on its row id.
fn hash_table_meta(root: &str) -> Arc<TableMeta> {
    Arc::new(TableMeta {
        name: hash_table(root),
        parent: None,
        root: hash_table(root),
        primary_key: Some(ROW_ID.into()),
        write_disposition: WriteDisposition::Merge,
    })
}

/// Writes a root's `(row id, content hash)` rows into `writer` (a [`LoadWriter::hash_writer`]
/// of the hash table `meta`) as its staged file, which [`commit_hashes`] then commits. On
/// failure, what was staged is deleted.
async fn stage_hashes(
    mut writer: LoadWriter,
    meta: Arc<TableMeta>,
    rows: HashRows,
) -> Result<LoadWriter> {
    match write_hashes(&mut writer, meta, rows).await {
        Ok(()) => Ok(writer),
        Err(e) => {
            writer.abort().await;
            Err(e)
        }
    }
}

/// The rows of [`stage_hashes`], written and their file closed.
async fn write_hashes(writer: &mut LoadWriter, meta: Arc<TableMeta>, rows: HashRows) -> Result<()> {
    let schema = Arc::new(Schema::new(vec![
        Field::new(ROW_ID, arrow_schema::DataType::Utf8, false),
        Field::new(LOAD_ID, arrow_schema::DataType::Utf8, false),
        Field::new(HASH, arrow_schema::DataType::Utf8, false),
    ]));
    // In slices, each with its own load id column: a column of the load id on every row of
    // a checkpoint's 250,000 would take 10 MB at once.
    let n = rows.len();
    for start in (0..n).step_by(HASH_ROWS_PER_BATCH) {
        let len = HASH_ROWS_PER_BATCH.min(n - start);
        let load_ids = std::iter::repeat_n(writer.load_id.as_str(), len);
        let (ids, hashes) = rows.columns(start, len);
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(ids),
                Arc::new(StringArray::from_iter_values(load_ids)),
                Arc::new(hashes),
            ],
        )
        .map_err(|e| SinkError::Internal {
            message: format!("hash table `{}`: {e}", meta.name),
        })?;
        let table = meta.clone();
        writer
            .write(0, vec![transform::TableBatch { table, batch }])
            .await?;
    }
    // The rows are in the writer's file now; they go before it closes.
    drop(rows);
    writer.flush_all().await
}

/// Merges a root's staged hash file ([`stage_hashes`]) into its hash table. The writer's
/// `skip_own_root_files` says whether the root's commit left the load's earlier root files
/// untouched (then their hash files hold none of these ids and are not probed).
///
/// Its future is boxed and named `Send` here: it commits through [`LoadWriter::commit`],
/// whose roots' tasks come back to [`LoadWriter::commit_root`], and the compiler proves that
/// cycle `Send` only where one link of it has a type of its own.
fn commit_hashes(
    writer: LoadWriter,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<TableCommit>>> + Send>> {
    // The hash table has no hash column of its own, so this commit does not come back here.
    Box::pin(writer.commit())
}
