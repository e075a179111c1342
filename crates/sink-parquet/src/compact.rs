//! Compaction: a table's small data files (each checkpoint ends its files early) rewritten
//! into files of the target size, in one commit that changes no row.

use arrow_schema::SchemaRef;
use deltalake::kernel::Action;
use deltalake::kernel::transaction::CommitBuilder;
use deltalake::protocol::DeltaOperation;
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
use parquet::arrow::async_reader::ParquetRecordBatchStreamBuilder;

use crate::columns::widen;
use crate::encoding::{ColumnEncodings, writer_properties};
use crate::lake::{Lake, kept_history};
use crate::read::StoreFile;
use crate::table_commit::add_action;
use crate::writer::file_token;
use crate::{ParquetSinkConfig, Result, SinkError, TableCommit};

/// What one compaction did to a table.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Compaction {
    /// The version it committed.
    pub version: u64,
    /// Small files read.
    pub files_before: usize,
    /// Files written in their place.
    pub files_after: usize,
    /// Bytes of the small files.
    pub bytes: u64,
}

/// A data file smaller than this share of the target size counts as small. Files of a
/// quarter or half the target (a checkpoint's worth of a large table) read well enough;
/// rewriting them made a 5,000,000-event run re-encode a gigabyte of Parquet at its end.
/// Small files are what runs of a few pages leave, and those are what packing is for.
const SMALL_SHARE: u64 = 8;

/// What a compaction wrote before its commit: the packed files (name, bytes, rows), the
/// small files they replace, and those files' bytes.
#[derive(Default)]
struct Packed {
    written: Vec<(String, u64, u64)>,
    removed: Vec<deltalake::kernel::LogicalFileView>,
    bytes: u64,
}

/// Groups of small files (by index into `sizes`) of up to `target` bytes each, in order;
/// a group of one file is left out (there is nothing to pack it with).
fn bins_of(sizes: &[u64], target: u64) -> Vec<Vec<usize>> {
    let mut bins: Vec<Vec<usize>> = Vec::new();
    let mut filled = u64::MAX;
    for (i, &size) in sizes.iter().enumerate() {
        if filled.saturating_add(size) > target {
            bins.push(Vec::new());
            filled = 0;
        }
        bins.last_mut().expect("a bin was opened").push(i);
        filled += size;
    }
    bins.retain(|b| b.len() > 1);
    bins
}

impl Lake {
    /// Rewrites the small data files of `table` (under an eighth of the target file size), once
    /// there are `config.compact_min_files` of them, into files of about the target size,
    /// in one `OPTIMIZE` commit whose actions change no data, so readers, merges and change
    /// feeds see the same rows. Groups of files are
    /// packed in the order the table lists them; a group needs two files or more. Nothing
    /// happens when another writer commits first (the next run tries again), and a file
    /// whose columns are not all in the group's widest schema is left as it is, so no
    /// column is ever dropped. The replaced files are deleted unless the table keeps
    /// history.
    pub async fn compact(
        &self,
        table: &str,
        config: &ParquetSinkConfig,
        load_id: &str,
    ) -> Result<Option<Compaction>> {
        let delta_err = |source| SinkError::Delta {
            table: table.to_owned(),
            source,
        };
        let Some(t) = self.load_table(table).await? else {
            return Ok(None);
        };
        let state = t.snapshot().map_err(delta_err)?;
        let target = config.target_file_bytes as u64;
        let small: Vec<_> = state
            .log_data()
            .iter()
            .filter(|f| (f.size().max(0) as u64) < target / SMALL_SHARE)
            .collect();
        if config.compact_min_files == 0 || small.len() < config.compact_min_files.max(2) {
            return Ok(None);
        }
        let sizes: Vec<u64> = small.iter().map(|f| f.size().max(0) as u64).collect();
        let bins = bins_of(&sizes, target);
        if bins.is_empty() {
            return Ok(None);
        }
        let prefix = format!("{load_id}-{}-compact", file_token());
        let mut packed = Packed::default();
        let outcome = async {
            for bin in &bins {
                let files: Vec<(String, u64)> = bin
                    .iter()
                    .map(|&i| (small[i].path().into_owned(), sizes[i]))
                    .collect();
                let name = crate::files::data_file_name(&format!(
                    "{prefix}-{:05}",
                    packed.written.len() + 1
                ));
                let Some((size, rows)) = self.pack(table, config, &files, &name).await? else {
                    continue;
                };
                packed.written.push((name, size, rows));
                for &i in bin {
                    packed.bytes += sizes[i];
                    packed.removed.push(small[i].clone());
                }
            }
            Ok::<_, SinkError>(())
        }
        .await;
        if let Err(e) = outcome {
            self.discard(table, &packed.written).await;
            return Err(e);
        }
        if packed.written.is_empty() {
            return Ok(None);
        }
        self.commit_compaction(table, config, load_id, &t, packed)
            .await
    }

    /// Packs `files` into one new file `name`: its size and rows, or `None` when no schema
    /// holds every column of the files.
    async fn pack(
        &self,
        table: &str,
        config: &ParquetSinkConfig,
        files: &[(String, u64)],
        name: &str,
    ) -> Result<Option<(u64, u64)>> {
        let mut sources = Vec::with_capacity(files.len());
        for (path, size) in files {
            let mut file = self.data_file(table, path, *size);
            let metadata = ArrowReaderMetadata::load_async(&mut file, ArrowReaderOptions::new())
                .await
                .map_err(parquet_err(table, path))?;
            sources.push((path.as_str(), file, metadata));
        }
        let Some(schema) = widest_schema(&sources) else {
            return Ok(None);
        };
        let rows = self
            .rewrite_into(table, config, sources, &schema, name)
            .await?;
        let size = self
            .store()
            .head(&self.file_path(table, name))
            .await
            .map_err(|source| SinkError::Store {
                path: name.to_owned(),
                source,
            })?
            .size;
        Ok(Some((size, rows)))
    }

    /// Deletes the files a compaction wrote but did not commit.
    async fn discard(&self, table: &str, written: &[(String, u64, u64)]) {
        self.delete_files(table, written.iter().map(|(name, _, _)| name))
            .await;
    }

    /// The `OPTIMIZE` commit: the small files removed, the packed ones added, no data
    /// changed. Another writer's commit in between makes it give up (the packed files are
    /// deleted, the table is left as it was).
    async fn commit_compaction(
        &self,
        table: &str,
        config: &ParquetSinkConfig,
        load_id: &str,
        t: &deltalake::DeltaTable,
        packed: Packed,
    ) -> Result<Option<Compaction>> {
        let state = t.snapshot().map_err(|source| SinkError::Delta {
            table: table.to_owned(),
            source,
        })?;
        let now_ms = chrono::Utc::now().timestamp_millis();
        let mut actions: Vec<Action> = packed
            .removed
            .iter()
            .map(|f| Action::Remove(f.remove_action(false)))
            .collect();
        actions.extend(
            packed
                .written
                .iter()
                .map(|(name, size, rows)| add_action(name, *size, *rows, false, now_ms)),
        );
        let properties = crate::table_commit::commit_properties()
            .with_metadata([("errlake.load_id".to_owned(), serde_json::json!(load_id))]);
        let operation = DeltaOperation::Optimize {
            predicate: None,
            target_size: config.target_file_bytes as i64,
        };
        let committed = CommitBuilder::from(properties)
            .with_actions(actions)
            .build(Some(state), t.log_store(), operation)
            .await;
        let version = match committed {
            Ok(c) => c.version(),
            Err(error) => {
                // Another writer moved the table: its files may be gone; leave it be.
                tracing::info!(table, %error, "compaction skipped: the table changed");
                self.discard(table, &packed.written).await;
                return Ok(None);
            }
        };
        if kept_history(state).is_none() {
            self.delete_files(table, packed.removed.iter().map(|f| f.path()))
                .await;
        }
        Ok(Some(Compaction {
            version: version as u64,
            files_before: packed.removed.len(),
            files_after: packed.written.len(),
            bytes: packed.bytes,
        }))
    }

    /// Streams the rows of `sources` into one new file `name`; its rows.
    async fn rewrite_into(
        &self,
        table: &str,
        config: &ParquetSinkConfig,
        sources: Vec<(&str, StoreFile, ArrowReaderMetadata)>,
        schema: &SchemaRef,
        name: &str,
    ) -> Result<u64> {
        let encodings = sources
            .first()
            .map_or_else(ColumnEncodings::dictionaries, |(_, _, metadata)| {
                ColumnEncodings::of_file(metadata.metadata())
            });
        let mut writer = self
            .parquet_writer(
                table,
                name,
                schema,
                writer_properties(config, schema, &encodings),
            )
            .map_err(parquet_err(table, name))?;
        let mut rows = 0u64;
        for (path, file, metadata) in sources {
            let mut stream = ParquetRecordBatchStreamBuilder::new_with_metadata(file, metadata)
                .build()
                .map_err(parquet_err(table, path))?;
            while let Some(batch) = stream.try_next().await.map_err(parquet_err(table, path))? {
                rows += batch.num_rows() as u64;
                writer
                    .write(&widen(&batch, schema)?)
                    .await
                    .map_err(parquet_err(table, name))?;
            }
        }
        writer.finish().await.map_err(parquet_err(table, name))?;
        Ok(rows)
    }
}

/// The error of reading or writing data file `path` of `table`.
fn parquet_err(table: &str, path: &str) -> impl Fn(parquet::errors::ParquetError) -> SinkError {
    let (table, path) = (table.to_owned(), path.to_owned());
    move |source| SinkError::ParquetFile {
        table: table.clone(),
        path: path.clone(),
        source,
    }
}

/// The schema with the most columns among the files, if every file's columns (with their
/// types) are in it: only then can each be widened to it without losing a column.
fn widest_schema(files: &[(&str, StoreFile, ArrowReaderMetadata)]) -> Option<SchemaRef> {
    let widest = files
        .iter()
        .map(|(_, _, m)| m.schema())
        .max_by_key(|s| s.fields().len())?
        .clone();
    let fits = files.iter().all(|(_, _, m)| {
        m.schema().fields().iter().all(|f| {
            widest
                .field_with_name(f.name())
                .is_ok_and(|w| w.data_type() == f.data_type())
        })
    });
    fits.then_some(widest)
}

/// Compacts each table a load committed to (see [`Lake::compact`]); a table that cannot be
/// compacted is logged and left as it is, since its data is committed either way.
pub async fn compact_tables(
    lake: &Lake,
    config: &ParquetSinkConfig,
    load_id: &str,
    commits: &[TableCommit],
) -> Vec<(String, Compaction)> {
    let mut tables: Vec<&str> = commits.iter().map(|c| c.table.as_str()).collect();
    tables.sort_unstable();
    tables.dedup();
    let mut done = Vec::new();
    for table in tables {
        match lake.compact(table, config, load_id).await {
            Ok(Some(c)) => {
                tracing::info!(
                    table,
                    version = c.version,
                    files_before = c.files_before,
                    files_after = c.files_after,
                    "compacted small files"
                );
                done.push((table.to_owned(), c));
            }
            Ok(None) => {}
            // Another writer (a shard, a concurrent run) moved the table: its files are
            // packed by a later run.
            Err(error) if error.is_concurrent_commit() => {
                tracing::info!(table, %error, "another writer changed the table; compaction left to a later run");
            }
            Err(error) => {
                let error = crate::with_causes(&error);
                tracing::warn!(table, %error, "could not compact small files");
            }
        }
    }
    done
}

#[cfg(test)]
mod tests {
    #[test]
    fn small_files_pack_in_order_up_to_the_target_and_a_lone_one_is_left() {
        assert_eq!(
            super::bins_of(&[40, 40, 40, 90, 10], 100),
            vec![vec![0, 1], vec![3, 4]]
        );
        assert!(super::bins_of(&[60, 60, 60], 100).is_empty());
        assert_eq!(super::bins_of(&[1; 3], 100), vec![vec![0, 1, 2]]);
    }
}
