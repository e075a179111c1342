//! Rewriting a data file without some of its rows, streaming a batch at a time: the one way
//! rows leave files, whether a merge replaces them, a later page of the load supersedes them
//! or the load deletes them.

use arrow_array::BooleanArray;
use arrow_array::cast::AsArray;
use futures::TryStreamExt;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
use parquet::arrow::async_reader::ParquetRecordBatchStreamBuilder;

use crate::encoding::{ColumnEncodings, writer_properties};
use crate::lake::Lake;
use crate::load_ids::{RootIds, row_pages};
use crate::probe::FileRows;
use crate::read::StoreFile;
use crate::writer::{StagedFile, id_key};
use crate::{ParquetSinkConfig, Result, SinkError};

/// Which rows of a file stay: asked with each row's key ([`id_key`] of its key column,
/// `None` when null) and the page it came in (a staged file's rows only; `None` otherwise).
pub(crate) type Keep<'a> = &'a (dyn Fn(Option<u128>, Option<u64>) -> bool + Sync);

/// A file to rewrite without some of its rows.
pub(crate) struct RewriteOf<'a> {
    pub(crate) table: &'a str,
    /// The column [`Keep`] is asked with.
    pub(crate) key_column: &'a str,
    /// The file, and the row groups that may hold a row to take out (the rewrite, if any,
    /// reads them all).
    pub(crate) file: FileRows<'a>,
    /// The pages of the file's rows, in runs (a staged file's; empty for a committed one).
    pub(crate) runs: &'a [(u64, u64)],
    /// The name of the new file.
    pub(crate) new_name: String,
}

/// What a rewrite did.
pub(crate) struct Rewrite {
    /// The file's rows.
    pub(crate) total: u64,
    /// The rows kept.
    pub(crate) kept: u64,
    /// The new file, written only when some rows went and some stayed.
    pub(crate) file: Option<StagedFile>,
}

impl Rewrite {
    /// No new file: every row stays, or none does.
    fn in_place(total: u64, kept: u64) -> Self {
        Rewrite {
            total,
            kept,
            file: None,
        }
    }
}

/// The name of a file rewritten by a load: `prefix` and a number within the load.
pub(crate) fn rewritten_name(prefix: &str, n: usize) -> String {
    crate::files::data_file_name(&format!("{prefix}-rw-{n:05}"))
}

/// Rewrites a file with the rows `keep` keeps. The key column alone is read first, from the
/// row groups `of.file` names: a file that loses no row (a bloom filter's false positive,
/// likely when a load brings a hundred thousand ids) or every row is not read further, and
/// nothing is written.
pub(crate) async fn rewrite_keeping(
    lake: &Lake,
    config: &ParquetSinkConfig,
    of: RewriteOf<'_>,
    keep: Keep<'_>,
) -> Result<Rewrite> {
    let RewriteOf {
        table,
        key_column,
        file,
        runs,
        new_name,
    } = of;
    let path = file.path;
    let parquet_err = |source| SinkError::ParquetFile {
        table: table.to_owned(),
        path: path.to_owned(),
        source,
    };
    // Pages are known row by row only when every row group is read in order.
    let pages = || -> Box<dyn Iterator<Item = Option<u64>> + Send + '_> {
        if runs.is_empty() {
            Box::new(std::iter::repeat(None))
        } else {
            Box::new(row_pages(runs).map(Some).chain(std::iter::repeat(None)))
        }
    };
    let source = lake.data_file(table, path, file.size);
    let metadata = ArrowReaderMetadata::load_async(&mut source.clone(), ArrowReaderOptions::new())
        .await
        .map_err(parquet_err)?;
    let total = metadata.metadata().file_metadata().num_rows().max(0) as u64;

    let key_pages = match file.row_groups {
        Some(_) => Box::new(std::iter::repeat(None)),
        None => pages(),
    };
    let going = rows_going(
        (table, key_column, file),
        (source.clone(), metadata.clone()),
        key_pages,
        keep,
    )
    .await?;
    if going == 0 || going == total {
        return Ok(Rewrite::in_place(total, total - going));
    }

    let encodings = ColumnEncodings::of_file(metadata.metadata());
    let builder = ParquetRecordBatchStreamBuilder::new_with_metadata(source, metadata);
    let schema = builder.schema().clone();
    let mut stream = builder.build().map_err(parquet_err)?;
    let mut writer = lake
        .parquet_writer(
            table,
            &new_name,
            &schema,
            writer_properties(config, &schema, &encodings),
        )
        .map_err(parquet_err)?;
    let mut pages = pages();
    let mut kept = 0u64;
    let mut new_runs: Vec<(u64, u64)> = Vec::new();
    while let Some(batch) = stream.try_next().await.map_err(parquet_err)? {
        let keys = batch
            .column_by_name(key_column)
            .ok_or_else(|| missing_column(table, path, key_column))?;
        let mask = kept_mask(keys, &mut pages, keep, &mut new_runs);
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
        let _ = writer.into_upload().abort().await;
        return Ok(Rewrite::in_place(total, kept));
    }
    writer.finish().await.map_err(parquet_err)?;
    let size = writer.bytes_written() as u64;
    Ok(Rewrite {
        total,
        kept,
        file: Some(StagedFile {
            name: new_name,
            size,
            n_rows: kept,
            runs: new_runs,
        }),
    })
}

/// Which rows of a batch `keep` keeps, given their keys and, row by row, their pages; the
/// pages of the kept rows are appended to `new_runs` as (page, rows) runs.
fn kept_mask(
    keys: &arrow_array::ArrayRef,
    pages: &mut dyn Iterator<Item = Option<u64>>,
    keep: Keep<'_>,
    new_runs: &mut Vec<(u64, u64)>,
) -> BooleanArray {
    let mut mask = Vec::with_capacity(keys.len());
    for (k, page) in keys.as_string::<i32>().iter().zip(pages) {
        let stays = keep(k.map(id_key), page);
        if let (true, Some(page)) = (stays, page) {
            match new_runs.last_mut() {
                Some((p, n)) if *p == page => *n += 1,
                _ => new_runs.push((page, 1)),
            }
        }
        mask.push(Some(stays));
    }
    BooleanArray::from(mask)
}

/// How many rows of a file `keep` takes out, from its key column alone (in the row groups
/// `file` names; `pages`: each row's page, in order, when every row group is read).
async fn rows_going(
    (table, key_column, file): (&str, &str, FileRows<'_>),
    (source, metadata): (StoreFile, ArrowReaderMetadata),
    mut pages: Box<dyn Iterator<Item = Option<u64>> + Send + '_>,
    keep: Keep<'_>,
) -> Result<u64> {
    let parquet_err = |source| SinkError::ParquetFile {
        table: table.to_owned(),
        path: file.path.to_owned(),
        source,
    };
    let mut keys = ParquetRecordBatchStreamBuilder::new_with_metadata(source, metadata);
    if let Some(row_groups) = file.row_groups {
        keys = keys.with_row_groups(row_groups.to_vec());
    }
    let mask = ProjectionMask::columns(keys.parquet_schema(), [key_column]);
    let mut keys = keys.with_projection(mask).build().map_err(parquet_err)?;
    let mut going = 0u64;
    while let Some(batch) = keys.try_next().await.map_err(parquet_err)? {
        let column = batch
            .column_by_name(key_column)
            .ok_or_else(|| missing_column(table, file.path, key_column))?;
        going += column
            .as_string::<i32>()
            .iter()
            .zip(pages.by_ref())
            .filter(|(k, page)| !keep(k.map(id_key), *page))
            .count() as u64;
    }
    Ok(going)
}

/// Staged files without the rows whose key `remove` picks: each file with such rows is
/// rewritten (or dropped when nothing remains). Returns the files to commit and the
/// originals that were replaced.
pub(crate) async fn without_rows(
    lake: &Lake,
    config: &ParquetSinkConfig,
    name_prefix: &str,
    table: &str,
    key_column: &str,
    staged: &[StagedFile],
    remove: &(dyn Fn(u128) -> bool + Sync),
) -> Result<(Vec<StagedFile>, Vec<StagedFile>)> {
    let (mut kept, mut replaced) = (Vec::new(), Vec::new());
    for (n, f) in staged.iter().enumerate() {
        let of = RewriteOf {
            table,
            key_column,
            file: FileRows::all(&f.name, f.size),
            runs: &f.runs,
            new_name: rewritten_name(name_prefix, n + 1),
        };
        let rewrite = rewrite_keeping(lake, config, of, &|k, _| !k.is_some_and(remove)).await?;
        match rewrite.file {
            Some(file) => kept.push(file),
            None if rewrite.kept == rewrite.total => {
                kept.push(f.clone());
                continue;
            }
            None => {}
        }
        replaced.push(f.clone());
    }
    Ok((kept, replaced))
}

/// A staged file without the rows whose root id came again in a later page of the load
/// (`None` when none remains); a file that changes is replaced, the original deleted.
pub(crate) async fn drop_superseded(
    lake: &Lake,
    config: &ParquetSinkConfig,
    table: &str,
    key_column: &str,
    file: StagedFile,
    ids: &RootIds,
) -> Result<Option<StagedFile>> {
    let of = RewriteOf {
        table,
        key_column,
        file: FileRows::all(&file.name, file.size),
        runs: &file.runs,
        new_name: file.name.replace(".zstd.parquet", "-dedup.zstd.parquet"),
    };
    let keep = |k: Option<u128>, page: Option<u64>| match (k, page) {
        (Some(k), Some(page)) => ids.is_last_copy(k, page),
        _ => true,
    };
    let rewrite = rewrite_keeping(lake, config, of, &keep).await?;
    if rewrite.kept == rewrite.total {
        return Ok(Some(file));
    }
    lake.delete_files(table, [&file.name]).await;
    Ok(rewrite.file)
}

fn missing_column(table: &str, file: &str, column: &str) -> SinkError {
    SinkError::MissingKeyColumn {
        table: table.to_owned(),
        file: file.to_owned(),
        column: column.to_owned(),
    }
}
