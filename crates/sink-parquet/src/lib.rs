//! The lake writer: Parquet files in Delta Lake tables on local disk or S3, appended,
//! replaced or merged on the primary key, one Delta commit per table at each checkpoint and
//! at the end of a load (the tables of a root move one after another: the root, its child
//! tables, its content hashes).
//!
//! Role in the pipeline: the last stage. A [`LoadWriter`] takes the [`transform::TableBatch`]es
//! of each page, stages them as zstd Parquet files in the tables' folders (not yet visible:
//! no Delta version references them), and [`LoadWriter::commit`] moves each table to its next
//! version in one commit through delta-rs; [`LoadWriter::abort`] deletes the staged files.
//!
//! Merge is copy-on-write: a data file that holds any incoming root id is rewritten without
//! those rows; child tables follow their root through `_dlt_root_id`, so the children of a
//! replaced row are replaced with it (removed list elements disappear). Within a load, the
//! row from the later page wins.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use std::sync::Arc;
//! use sink_parquet::{Lake, LoadWriter, ParquetSinkConfig};
//! use transform::{NormalizeConfig, Normalizer, SchemaRegistry, TableMeta, WriteDisposition};
//! let dir = tempfile::tempdir().unwrap();
//! let lake = Lake::open(dir.path().to_str().unwrap())?;
//! let events = Arc::new(TableMeta {
//!     name: "events".into(),
//!     parent: None,
//!     root: "events".into(),
//!     primary_key: Some("id".into()),
//!     write_disposition: WriteDisposition::Merge,
//! });
//! let records = vec![serde_json::json!({"id": "e1", "breadcrumbs": [{"name": "click"}]})];
//! let mut normalizer = Normalizer::new(NormalizeConfig::default(), SchemaRegistry::default());
//! let batches = normalizer.normalize(&events, "load-1", 0, &records).unwrap();
//! let mut load = LoadWriter::new(lake, ParquetSinkConfig::default(), "load-1".into(), vec![events]);
//! load.write(0, batches).await?;
//! let commits = load.commit().await?;
//! for c in &commits {
//!     println!("{} is at version {}", c.table, c.version);
//! }
//! assert!(commits.iter().any(|c| c.table == "events__breadcrumbs" && c.rows_added == 1));
//! # Ok::<(), sink_parquet::SinkError>(())
//! # }).unwrap();
//! ```

#![warn(missing_docs)]
#![deny(rustdoc::broken_intra_doc_links)]

mod catalog;
mod columns;
mod commit;
mod compact;
pub mod encoding;
mod files;
mod hash_rows;
mod lake;
mod load_ids;
mod probe;
mod read;
mod rewrite;
mod table_commit;
mod upkeep;
mod upload;
mod writer;

pub use catalog::{LOADS_FOLDER, LoadEntry, TableInfo};
pub use compact::{Compaction, compact_tables};
pub use files::is_own_data_file;
pub use lake::{KEEP_HISTORY_PROPERTY, Lake, Orphans};
pub use load_ids::hash_table;
pub use table_commit::TableCommit;
pub use writer::LoadWriter;

/// File sizing and encoding (`[sink]` in the pipeline file).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParquetSinkConfig {
    /// The size of a data file, in Parquet bytes, past which it is closed and the next one
    /// started: a file is closed with the row group that takes it past this size, so it
    /// ends at most a row group over it. Default: 128 MiB (DuckDB, Spark and Trino read files of 100 MB to 1 GB well).
    #[serde(default = "default_target_file_bytes")]
    pub target_file_bytes: usize,
    /// Bytes of row groups in progress (encoded, not yet written) of all tables together;
    /// past it the largest row group is ended early. Bounds the sink's memory. Default: 128 MiB.
    #[serde(default = "default_max_buffered_bytes")]
    pub max_buffered_bytes: usize,
    /// Rows per Parquet row group, at most. Default: 65536. A row group in progress is held
    /// until it ends, and a checkpoint ends each table's. With DuckDB's 122,880 rows, each
    /// checkpoint interval's resident peak came late in it (0.85 to 0.99 of its length; the
    /// events table's second row group of a 5000-page interval ends at 0.98), 20 MB over a
    /// run that ends sooner: 198 MB at 1,000,000 events against 178 at 200,000, where 65,536
    /// rows gave 178 and 175, at the same speed and for files of the same size.
    #[serde(default = "default_row_group_rows")]
    pub row_group_rows: usize,
    /// Encoded bytes per Parquet row group, at most (whichever limit comes first). A row
    /// group in progress is held in memory, so this bounds the sink's memory per table.
    /// Default: 32 MiB.
    #[serde(default = "default_row_group_bytes")]
    pub row_group_bytes: usize,
    /// Seconds after which a data file that no table version references is deleted when
    /// its table is committed (files of a load that died). Younger ones may belong to a
    /// load still running elsewhere; `cargo xtask vacuum --older-than 0` deletes them all.
    /// Default: 3600.
    #[serde(default = "default_orphan_grace_secs")]
    pub orphan_grace_secs: u64,
    /// Keep the data files a commit removes (replaced by a merge or a replace) this many
    /// seconds, for time travel and for readers still on an older version: set as each
    /// table's `delta.deletedFileRetentionDuration` ([`KEEP_HISTORY_PROPERTY`]), which later
    /// runs, `cargo xtask vacuum` and other Delta writers' `VACUUM` honor. Unset: a table
    /// keeps what its property says (nothing, on tables this sink created), and the removed
    /// files go right after each commit, so a plain `*.parquet` glob of a table sees exactly
    /// its rows. 0 removes the property.
    #[serde(default)]
    pub keep_history_secs: Option<u64>,
    /// A table with at least this many small data files (under an eighth of the target size: each
    /// checkpoint and each small incremental run leaves some) gets them packed into
    /// target-sized files after a run ([`Lake::compact`]). The threshold bounds the cost: a
    /// rewrite every so many runs, not every run. 0 turns compaction off. Default: 16.
    #[serde(default = "default_compact_min_files")]
    pub compact_min_files: usize,
    /// Per root table, its hard-delete column (set by the pipeline from the `hard_delete`
    /// column hints of `[normalize]`, not written in `[sink]`).
    #[serde(skip)]
    pub hard_delete_columns: std::collections::BTreeMap<String, String>,
    /// The zstd level (1 to 22). Default: 1, measured by `cargo xtask bench --only encoding`:
    /// on the mock's events level 3 wrote files no smaller and took 1.4 times as long.
    /// Columns past a table's 256th are LZ4-compressed instead, whatever the level (the
    /// writer keeps a zstd context per column; see `encoding.rs`).
    #[serde(default = "default_zstd_level")]
    pub zstd_level: i32,
}

fn default_target_file_bytes() -> usize {
    128 * 1024 * 1024
}
fn default_max_buffered_bytes() -> usize {
    128 * 1024 * 1024
}
fn default_row_group_rows() -> usize {
    65_536
}
fn default_row_group_bytes() -> usize {
    32 * 1024 * 1024
}
fn default_orphan_grace_secs() -> u64 {
    3600
}
fn default_compact_min_files() -> usize {
    16
}
fn default_zstd_level() -> i32 {
    1
}

impl Default for ParquetSinkConfig {
    fn default() -> Self {
        ParquetSinkConfig {
            target_file_bytes: default_target_file_bytes(),
            max_buffered_bytes: default_max_buffered_bytes(),
            row_group_rows: default_row_group_rows(),
            row_group_bytes: default_row_group_bytes(),
            orphan_grace_secs: default_orphan_grace_secs(),
            keep_history_secs: None,
            compact_min_files: default_compact_min_files(),
            hard_delete_columns: Default::default(),
            zstd_level: default_zstd_level(),
        }
    }
}

/// What can go wrong in the lake.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SinkError {
    /// The destination cannot be used.
    #[error("sink: destination `{destination}`: {message}")]
    Destination {
        /// The destination as given.
        destination: String,
        /// Why.
        message: String,
    },
    /// Reading or writing an object failed.
    #[error("sink: object store at `{path}`")]
    Store {
        /// The object's path.
        path: String,
        /// The store's error.
        #[source]
        source: object_store::Error,
    },
    /// Encoding or decoding Parquet failed.
    #[error("sink: parquet of table `{table}`")]
    Parquet {
        /// The table.
        table: String,
        /// The Parquet error.
        #[source]
        source: parquet::errors::ParquetError,
    },
    /// Reading or writing one data file of a table failed.
    #[error("sink: parquet file `{path}` of `{table}`")]
    ParquetFile {
        /// The table.
        table: String,
        /// The file, within the table's folder.
        path: String,
        /// The Parquet error.
        #[source]
        source: parquet::errors::ParquetError,
    },
    /// A Delta operation failed.
    #[error("sink: delta table `{table}`")]
    Delta {
        /// The table.
        table: String,
        /// delta-rs's error.
        #[source]
        source: deltalake::DeltaTableError,
    },
    /// A table's schema cannot take this load's columns.
    #[error("sink: schema of table `{table}`: {message}")]
    Schema {
        /// The table.
        table: String,
        /// Why.
        message: String,
    },
    /// A commit file of a table's Delta log cannot be read.
    #[error(
        "sink: the Delta log of table `{table}` cannot be read: {file}: {message}; restore the file from a backup, or move the table's folder away so that the next run loads the table again"
    )]
    CorruptLog {
        /// The table.
        table: String,
        /// The commit file's URL.
        file: String,
        /// What is wrong in it.
        message: String,
    },
    /// A table's current version references data files that are not in its folder (deleted
    /// by hand, or lost). Nothing was committed.
    #[error(
        "sink: table `{table}` of `{destination}` references {n} data file(s) that are gone ({first}{more}); no table was changed. Restore them from a backup, or run `cargo xtask repair {destination} --table {table}` to drop them from the table (their rows are lost; the next run reloads what the API still has)",
        n = files.len(),
        first = files.first().map_or("", String::as_str),
        more = if files.len() > 1 { format!(" and {} more", files.len() - 1) } else { String::new() }
    )]
    MissingFiles {
        /// The destination URL.
        destination: String,
        /// The table.
        table: String,
        /// The missing files, relative to the table's folder.
        files: Vec<String>,
    },
    /// A data file of a table lacks the key column a merge looks its rows up by (a file
    /// another tool added to the table, or one damaged): the load moves no table.
    #[error("sink: file {file} of table `{table}` has no `{column}` column, which a merge needs")]
    MissingKeyColumn {
        /// The table.
        table: String,
        /// The file, within the table's folder.
        file: String,
        /// The column.
        column: String,
    },
    /// A broken invariant (a bug).
    #[error("sink: internal error: {message}")]
    Internal {
        /// What broke.
        message: String,
    },
}

impl SinkError {
    /// Whether a commit failed because another writer committed first.
    pub(crate) fn is_concurrent_commit(&self) -> bool {
        use deltalake::DeltaTableError as E;
        use deltalake::kernel::transaction::TransactionError as T;
        match self {
            SinkError::Delta { source, .. } => match source {
                E::VersionAlreadyExists(_) => true,
                E::Transaction { source } => matches!(
                    source,
                    T::VersionAlreadyExists(_) | T::MaxCommitAttempts(_) | T::CommitConflict(_)
                ),
                _ => false,
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
}

/// An error's text followed by its causes', `: `-separated (for log lines, which
/// otherwise show only the outermost).
pub(crate) fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// The result type of this crate.
pub type Result<T, E = SinkError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests;
