//! Which existing files, and which row groups of them, may hold one of a load's ids: the key
//! column's bloom filters, each id hashed once for all of them.
//!
//! A merge reads only the row groups a filter says may hold an incoming id: a false positive
//! costs one row group's key column, not the file's. With one filter per
//! row group and a growing table, checking every id against every filter through
//! `Sbbf::check` hashed each id again for every filter: at millions of rows that was a tenth
//! of a run's CPU. Here the ids are hashed once (xxHash64, as the Parquet spec's split block
//! bloom filter says), sorted, and tested first against the union of a file's row-group
//! filters ([`BlockFilter::union_of`]), then only those the union may hold against each row
//! group's filter: measured with row groups of 122,880 rows, 3 a file, most ids were checked
//! once per file instead of three times; with the 14 to 18 of a child table's file, the
//! union passed about a third.

use std::collections::HashMap;

use arrow_array::cast::AsArray;
use futures::TryStreamExt;
use parquet::arrow::ProjectionMask;
use parquet::bloom_filter::Sbbf;
use transform::ROW_ID;

use crate::lake::Lake;
use crate::writer::StagedFile;
use crate::{Result, SinkError};

/// The spec's salts: each picks the bit one hash sets in one word of a block.
const SALT: [u32; 8] = [
    0x47b6137b, 0x44974d91, 0x8824ad5b, 0xa2b7289d, 0x705495c7, 0x2df1424b, 0x9efc4947, 0x5c6bfb31,
];

/// A split block bloom filter's blocks of eight 32-bit words, read from a file.
pub(crate) struct BlockFilter {
    blocks: Vec<[u32; 8]>,
}

impl BlockFilter {
    /// The blocks of a filter the `parquet` crate read (its bit set, as the file stores it).
    pub(crate) fn of(filter: &Sbbf, scratch: &mut Vec<u8>) -> parquet::errors::Result<BlockFilter> {
        scratch.clear();
        filter.write_bitset(&mut *scratch)?;
        let blocks = scratch
            .chunks_exact(32)
            .map(|block| {
                let mut words = [0u32; 8];
                for (word, bytes) in words.iter_mut().zip(block.chunks_exact(4)) {
                    *word = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
                }
                words
            })
            .collect();
        Ok(BlockFilter { blocks })
    }

    /// The union of filters: a filter that may hold every value one of them may hold, or
    /// `None` when there is none or their sizes are not all powers of two. A split block
    /// filter's block for a hash is `((hash >> 32) * blocks) >> 32`, so doubling the blocks
    /// sends the values of block `i` to block `2i` or `2i + 1`: each filter is widened to the
    /// largest size by repeating its blocks (it answers as before), then all are OR-ed
    /// together. Widening rather than folding keeps a small last row group from saturating
    /// the union.
    pub(crate) fn union_of<'a>(
        filters: impl Iterator<Item = &'a BlockFilter> + Clone,
    ) -> Option<Self> {
        let blocks = filters.clone().map(|f| f.blocks.len()).max()?;
        if filters
            .clone()
            .any(|f| f.blocks.is_empty() || !f.blocks.len().is_power_of_two())
        {
            return None;
        }
        let mut union = vec![[0u32; 8]; blocks];
        for filter in filters {
            let widen = blocks / filter.blocks.len();
            for (i, block) in union.iter_mut().enumerate() {
                for (word, bits) in block.iter_mut().zip(&filter.blocks[i / widen]) {
                    *word |= bits;
                }
            }
        }
        Some(BlockFilter { blocks: union })
    }

    /// Whether the filter may hold the value of this hash ([`id_hash`]).
    pub(crate) fn may_hold(&self, hash: u64) -> bool {
        if self.blocks.is_empty() {
            return false;
        }
        let index = ((hash >> 32) * self.blocks.len() as u64) >> 32;
        let block = &self.blocks[index as usize];
        let low = hash as u32;
        block
            .iter()
            .zip(SALT)
            .all(|(word, salt)| word & (1 << (low.wrapping_mul(salt) >> 27)) != 0)
    }
}

/// An id's hash as Parquet's bloom filters take it: xxHash64 of its bytes, seed 0.
pub(crate) fn id_hash(id: &[u8]) -> u64 {
    xxhash_rust::xxh64::xxh64(id, 0)
}

/// Where in a data file a reader must look: its path and size, and the row groups that may
/// hold what it looks for (`None`: all of them).
#[derive(Debug, Clone, Copy)]
pub(crate) struct FileRows<'a> {
    pub(crate) path: &'a str,
    pub(crate) size: u64,
    pub(crate) row_groups: Option<&'a [usize]>,
}

impl<'a> FileRows<'a> {
    /// Every row of a file.
    pub(crate) fn all(path: &'a str, size: u64) -> Self {
        FileRows {
            path,
            size,
            row_groups: None,
        }
    }
}

/// Per file that may hold an id, the row groups that may (`None`: all, the file has no
/// filters).
pub(crate) type Candidates = HashMap<String, Option<Vec<usize>>>;

/// The existing files (path, size) whose key column may hold one of the ids in the key
/// column of `id_files` (staged files of `id_table`), with the row groups that may: a row
/// group is read only if its bloom filter says it may hold an id; files without filters
/// always are, whole. Holds the load's id hashes (bounded by the checkpoint interval, 8
/// bytes an id) and one file's filters at a time: the memory does not grow with the files
/// the table has.
pub(crate) async fn files_maybe_holding(
    lake: &Lake,
    table: &str,
    key_column: &str,
    existing: &[(String, u64)],
    id_table: &str,
    id_files: &[StagedFile],
) -> Result<Candidates> {
    let parquet_err = |path: &str| {
        let path = path.to_owned();
        let table = table.to_owned();
        move |source| SinkError::ParquetFile {
            table: table.clone(),
            path: path.clone(),
            source,
        }
    };
    let mut out = Candidates::new();
    if existing.is_empty() {
        return Ok(out);
    }
    let id_column = if id_table == table {
        key_column
    } else {
        ROW_ID
    };
    let Some(hashes) = id_hashes(lake, id_table, id_column, id_files).await? else {
        // Another writer's merge replaced our root file since our root commit: without the
        // ids, every file is a candidate (slower, still exact).
        out.extend(existing.iter().map(|(path, _)| (path.clone(), None)));
        return Ok(out);
    };
    if hashes.is_empty() {
        return Ok(out);
    }
    let mut scratch = Vec::new();
    for (path, size) in existing {
        let mut builder = lake
            .data_file(table, path, *size)
            .builder()
            .await
            .map_err(parquet_err(path))?;
        let column = builder
            .metadata()
            .file_metadata()
            .schema_descr()
            .columns()
            .iter()
            .position(|c| c.name() == key_column);
        let Some(column) = column else {
            out.insert(path.clone(), None);
            continue;
        };
        let mut filters = Vec::with_capacity(builder.metadata().num_row_groups());
        for rg in 0..builder.metadata().num_row_groups() {
            let filter = builder
                .get_row_group_column_bloom_filter(rg, column)
                .await
                .map_err(parquet_err(path))?;
            filters.push(match filter {
                Some(filter) => {
                    Some(BlockFilter::of(&filter, &mut scratch).map_err(parquet_err(path))?)
                }
                None => None,
            });
        }
        let may_hold = row_groups_maybe_holding(&filters, &hashes);
        tracing::debug!(
            table,
            path,
            row_groups = builder.metadata().num_row_groups(),
            may_hold = may_hold.len(),
            ids = hashes.len(),
            "bloom filter probe"
        );
        if !may_hold.is_empty() {
            out.insert(path.clone(), Some(may_hold));
        }
    }
    Ok(out)
}

/// The row groups whose filters (`None`: the row group has none) may hold one of `hashes`:
/// first the ids the union of the file's filters may hold (most files hold none of a
/// checkpoint's ids), then only those against each row group's filter.
fn row_groups_maybe_holding(filters: &[Option<BlockFilter>], hashes: &[u64]) -> Vec<usize> {
    let in_file: Vec<u64>;
    let ids: &[u64] = match BlockFilter::union_of(filters.iter().flatten()) {
        Some(union) => {
            in_file = hashes
                .iter()
                .copied()
                .filter(|&h| union.may_hold(h))
                .collect();
            &in_file
        }
        None => hashes,
    };
    filters
        .iter()
        .enumerate()
        .filter(|(_, filter)| match filter {
            Some(filter) => ids.iter().any(|&hash| filter.may_hold(hash)),
            None => true,
        })
        .map(|(rg, _)| rg)
        .collect()
}

/// The hashes ([`id_hash`]) of the ids in column `id_column` of `id_files` (staged files of
/// `id_table`), sorted so that a filter's blocks are visited in order; `None` when another
/// writer's merge replaced one of the files.
async fn id_hashes(
    lake: &Lake,
    id_table: &str,
    id_column: &str,
    id_files: &[StagedFile],
) -> Result<Option<Vec<u64>>> {
    let mut hashes = Vec::new();
    for f in id_files {
        let parquet_err = |source| SinkError::ParquetFile {
            table: id_table.to_owned(),
            path: f.name.clone(),
            source,
        };
        let builder = match lake
            .data_file(id_table, &f.name, f.size)
            .builder()
            .await
            .map_err(parquet_err)
        {
            Ok(b) => b,
            Err(e) if e.is_concurrent_commit() => return Ok(None),
            Err(e) => return Err(e),
        };
        let mask = ProjectionMask::columns(builder.parquet_schema(), [id_column]);
        let mut stream = builder.with_projection(mask).build().map_err(parquet_err)?;
        while let Some(batch) = stream.try_next().await.map_err(parquet_err)? {
            let Some(keys) = batch.column(0).as_string_opt::<i32>() else {
                continue;
            };
            hashes.extend(keys.iter().flatten().map(|k| id_hash(k.as_bytes())));
        }
    }
    hashes.sort_unstable();
    hashes.dedup();
    Ok(Some(hashes))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The filter answers as the `parquet` crate's own check does, for values it holds and
    /// values it does not, at several sizes.
    #[test]
    fn block_filter_agrees_with_the_parquet_crate() {
        let mut scratch = Vec::new();
        for (ndv, fpp) in [(10, 0.1), (1_000, 0.01), (50_000, 1e-5)] {
            let mut sbbf = Sbbf::new_with_ndv_fpp(ndv, fpp).unwrap();
            let held: Vec<String> = (0..ndv).map(|i| format!("{i:032x}")).collect();
            for id in &held {
                sbbf.insert(id.as_str());
            }
            let filter = BlockFilter::of(&sbbf, &mut scratch).unwrap();
            for id in &held {
                assert!(filter.may_hold(id_hash(id.as_bytes())), "{id} lost");
            }
            let mut false_positives = 0;
            for i in 0..20_000u64 {
                let id = format!("absent-{i}");
                let ours = filter.may_hold(id_hash(id.as_bytes()));
                assert_eq!(ours, sbbf.check(id.as_str()), "{id} at ndv {ndv}");
                false_positives += usize::from(ours);
            }
            assert!(
                false_positives < 20_000 / 4,
                "{false_positives} of 20000 absent ids reported at ndv {ndv}"
            );
        }
    }

    /// The union of filters of different sizes holds every value any of them holds, and
    /// still turns most absent values away; sizes it cannot fold give no union.
    #[test]
    fn a_union_of_filters_holds_what_each_holds() {
        let mut scratch = Vec::new();
        let mut filters = Vec::new();
        let mut held = Vec::new();
        for (n, ndv) in [(0, 500), (1, 5_000), (2, 60_000)] {
            let mut sbbf = Sbbf::new_with_ndv_fpp(ndv, 1e-4).unwrap();
            for i in 0..ndv / 2 {
                let id = format!("{n}-{i:024x}");
                sbbf.insert(id.as_str());
                held.push(id);
            }
            filters.push(BlockFilter::of(&sbbf, &mut scratch).unwrap());
        }
        let sizes: Vec<usize> = filters.iter().map(|f| f.blocks.len()).collect();
        assert!(
            sizes[0] < sizes[2],
            "the filters should differ in size: {sizes:?}"
        );
        let union = BlockFilter::union_of(filters.iter()).unwrap();
        assert_eq!(union.blocks.len(), sizes[2]);
        for id in &held {
            assert!(
                union.may_hold(id_hash(id.as_bytes())),
                "{id} lost in the union"
            );
        }
        let absent = (0..20_000)
            .filter(|i| union.may_hold(id_hash(format!("absent-{i}").as_bytes())))
            .count();
        assert!(
            absent < 20_000 / 2,
            "{absent} of 20000 absent ids in the union"
        );

        // A row group without a filter is always read; of the others, only those that may
        // hold one of the ids.
        let in_last = id_hash(held.last().unwrap().as_bytes());
        let filters: Vec<Option<BlockFilter>> = filters.into_iter().map(Some).collect();
        let mut with_gap = filters;
        with_gap.insert(1, None);
        assert_eq!(row_groups_maybe_holding(&with_gap, &[in_last]), vec![1, 3]);
        assert_eq!(row_groups_maybe_holding(&with_gap, &[]), vec![1]);
        let filters: Vec<BlockFilter> = with_gap.into_iter().flatten().collect();

        let odd = BlockFilter {
            blocks: vec![[0; 8]; 3],
        };
        assert!(BlockFilter::union_of([&filters[0], &odd].into_iter()).is_none());
        assert!(BlockFilter::union_of(std::iter::empty()).is_none());
    }
}
