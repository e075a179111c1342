//! Which ids a load touches: its root ids and the page each last came in, those its last
//! records delete, those stored unchanged (the `_errlake_hashes_*` tables) and those another
//! writer won since our root commit.

use std::collections::HashSet;

use arrow_array::cast::AsArray;
use futures::TryStreamExt;
use parquet::arrow::ProjectionMask;
use transform::{CONTENT_HASH, LOAD_ID, ROW_ID};

use crate::hash_rows::{HashRows, HashRowsBuilder};
use crate::lake::{Lake, data_files};
use crate::probe::{FileRows, files_maybe_holding};
use crate::writer::{IdPages, IdSet, StagedFile, id_key};
use crate::{Result, SinkError};

/// Ids of a load's root rows, and which of them came more than once.
pub(crate) struct RootIds {
    /// Every root row id of the load, with the latest page it came in.
    pub(crate) last_page: IdPages,
    /// Ids that came in more than one page.
    pub(crate) repeated: IdSet,
    /// Ids whose last record in the load says "delete" (the hard-delete column).
    pub(crate) deleted: IdSet,
}

impl RootIds {
    /// Whether the copy of root id `k` that came in page `page` is the load's last one.
    pub(crate) fn is_last_copy(&self, k: u128, page: u64) -> bool {
        !self.repeated.contains(&k) || self.last_page.page_of(k) == Some(page)
    }
}

/// The page of each row of a staged file, in row order, from the file's runs.
pub(crate) fn row_pages(runs: &[(u64, u64)]) -> impl Iterator<Item = u64> + '_ {
    runs.iter()
        .flat_map(|(seq, n)| std::iter::repeat_n(*seq, *n as usize))
}

/// The table that holds the content hashes of a merged root table's records.
pub fn hash_table(root: &str) -> String {
    format!("_errlake_hashes_{root}")
}

/// The hash table's column of hashes (not [`CONTENT_HASH`], so that its own merge does not
/// look for unchanged records).
pub(crate) const HASH: &str = "hash";

/// The ids among `ids` whose root row in `root_table` now comes from another load than
/// ours: rows added by other writers' commits after our commit at `our_version`.
pub(crate) async fn ids_won_by_others(
    lake: &Lake,
    root_table: &str,
    our_version: u64,
    load_id: &str,
    ids: &IdPages,
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
                if l != load_id && ids.contains(k) {
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
///
/// `not_read`: files of the hash table left unread (the load's own of earlier checkpoints).
pub(crate) async fn unchanged_ids(
    lake: &Lake,
    table: &str,
    staged: &[StagedFile],
    ids: &RootIds,
    not_read: Option<&HashSet<String>>,
) -> Result<(IdSet, HashRows)> {
    let mut incoming =
        HashRowsBuilder::with_capacity(staged.iter().map(|f| f.n_rows as usize).sum());
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
    let mut incoming = incoming.finish();
    // Another writer's merge of the hash table (another shard, a concurrent run) may replace
    // and delete a file of the version read here: read the new version then.
    let mut attempt = 0;
    let unchanged = loop {
        match stored_unchanged(lake, table, staged, &incoming, not_read).await {
            Err(e) if e.is_concurrent_commit() && attempt < MAX_HASH_READS => {
                attempt += 1;
                tracing::debug!(table, attempt, error = %e, "hash table moved while read; reading it again");
            }
            read => break read?,
        }
    };
    if !unchanged.is_empty() {
        incoming.remove(|k| unchanged.contains(&k));
    }
    Ok((unchanged, incoming))
}

/// How many times the hash table is read while other writers keep replacing its files.
const MAX_HASH_READS: usize = 20;

/// The incoming records whose stored content hash (in the root's hash table, as of its
/// latest version) is theirs.
async fn stored_unchanged(
    lake: &Lake,
    table: &str,
    staged: &[StagedFile],
    incoming: &HashRows,
    not_read: Option<&HashSet<String>>,
) -> Result<IdSet> {
    let mut unchanged = IdSet::default();
    let hashes = hash_table(table);
    if let Some(t) = lake.load_table(&hashes).await?
        && !incoming.is_empty()
    {
        let mut existing = data_files(&t, &hashes)?;
        existing.retain(|(path, _)| not_read.is_none_or(|skip| !skip.contains(path)));
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
            for_each_id_with(lake, &hashes, file, HASH, |k, id, h| {
                if incoming.has_hash(k, id, h) {
                    unchanged.insert(k);
                }
            })
            .await?;
        }
    }
    Ok(unchanged)
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

/// The root ids whose last record in the load's staged root files has the hard-delete
/// column set: `true` for a boolean column, any value for another type. A record that
/// says "delete" and comes again unflagged in a later page of the load stays.
pub(crate) async fn deleted_ids(
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
