//! Staging: per-table writers that stream batches into Parquet files in the table's folder,
//! not yet part of the table.
//!
//! Each table has at most one open file; a batch is encoded when it arrives (so encoding
//! overlaps fetching and normalizing), and what is held in memory is the encoded, compressed
//! row group in progress, not the Arrow batches of a whole file. A file is closed when it
//! reaches the target size, when a batch brings a wider schema than the file was opened
//! with, or at the end of the load.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use arrow_array::cast::AsArray;
use arrow_schema::{Schema, SchemaRef};

use transform::{ROW_ID, SchemaRegistry, TableBatch, TableMeta, WriteDisposition};

use crate::columns::widen;
use crate::encoding::{ColumnEncodings, writer_properties};
use crate::lake::Lake;
use crate::upload::UploadingParquetWriter;
use crate::{ParquetSinkConfig, Result, SinkError};

/// A Parquet file written for this load, not yet committed.
#[derive(Debug, Clone)]
pub(crate) struct StagedFile {
    /// The file name within the table's folder.
    pub(crate) name: String,
    pub(crate) size: u64,
    pub(crate) n_rows: u64,
    /// Runs of rows in file order, each from one page: (page_seq, rows).
    pub(crate) runs: Vec<(u64, u64)>,
}

/// A Parquet file of a table being written.
struct OpenFile {
    name: String,
    schema: SchemaRef,
    writer: UploadingParquetWriter,
    n_rows: u64,
    runs: Vec<(u64, u64)>,
}

impl std::fmt::Debug for OpenFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenFile")
            .field("name", &self.name)
            .field("n_rows", &self.n_rows)
            .finish_non_exhaustive()
    }
}

/// The staging state of one table in a load.
#[derive(Debug)]
pub(crate) struct TableWriter {
    pub(crate) meta: Arc<TableMeta>,
    /// The widest schema seen: batch schemas are prefixes of each other.
    pub(crate) schema: SchemaRef,
    open: Option<OpenFile>,
    pub(crate) staged: Vec<StagedFile>,
    /// Root tables under merge: each row id (by [`id_key`]) with the page it came in.
    pub(crate) root_ids: IdLog,
}

/// Per table, the data files a load's checkpoints committed (see [`LoadWriter::own_files`]).
pub(crate) type OwnFiles = Arc<Mutex<HashMap<String, HashSet<String>>>>;

/// Everything one load writes before its commit.
#[derive(Debug)]
pub struct LoadWriter {
    pub(crate) lake: Lake,
    pub(crate) config: ParquetSinkConfig,
    pub(crate) load_id: String,
    pub(crate) tables: HashMap<String, TableWriter>,
    /// The root tables of this load, whether or not rows came.
    pub(crate) roots: Vec<Arc<TableMeta>>,
    /// The names of every root table of the load, also those a checkpoint leaves to the
    /// end: a table of the lake belongs to the root [`root_of`] finds among them.
    pub(crate) root_names: Arc<[String]>,
    pub(crate) n_files: usize,
    /// Names this writer's files: the load id and a random token, so that files of two
    /// writers of one load (the state table's, written at every checkpoint) never collide.
    pub(crate) file_prefix: String,
    /// Where the load's null-only columns are known (see
    /// [`transform::NULL_ONLY_METADATA_KEY`]): each table's commit declares them.
    pub(crate) registry: Option<SchemaRegistry>,
    /// Per table, the names of the data files the load's checkpoints committed, shared with
    /// the writers a checkpoint splits off (see `TableLoad::skip_own_files`): a name per
    /// file, a few per checkpoint.
    pub(crate) own_files: OwnFiles,
    /// Whether the roots' merge probes leave out the load's earlier files of the root (the
    /// writer of a root's hash table, when the root's commit found none of the incoming ids
    /// in the load's earlier root files: their hash rows are in the load's earlier hash
    /// files, and only theirs).
    pub(crate) skip_own_root_files: bool,
    /// Called once a commit's files have closed (see [`LoadWriter::releasing_memory_with`]).
    pub(crate) release_memory: Option<fn()>,
    /// Tests: a pause between a root table's commit and its children's, to let another
    /// writer in.
    #[cfg(test)]
    pub(crate) pause_after_root: Option<std::time::Duration>,
}

impl LoadWriter {
    /// A writer for one load into `lake`; `roots` are the load's root tables (a replaced root
    /// with no rows this load is emptied; a merged one keeps its rows).
    pub fn new(
        lake: Lake,
        config: ParquetSinkConfig,
        load_id: String,
        roots: Vec<Arc<TableMeta>>,
    ) -> Self {
        let file_prefix = format!("{load_id}-{}", file_token());
        LoadWriter {
            lake,
            config,
            load_id,
            tables: HashMap::new(),
            file_prefix,
            root_names: roots.iter().map(|r| r.name.clone()).collect(),
            roots,
            n_files: 0,
            registry: None,
            own_files: Arc::default(),
            skip_own_root_files: false,
            release_memory: None,
            #[cfg(test)]
            pause_after_root: None,
        }
    }

    /// Declares, at each table's commit, the columns `registry` has seen with nulls only:
    /// the table's schema lists them (typed when a value comes) though no file holds them.
    pub fn declaring_null_only_columns_of(mut self, registry: SchemaRegistry) -> Self {
        self.registry = Some(registry);
        self
    }

    /// Moves the tables of the roots `moved` picks, with those roots, into a writer of their
    /// own under the same load (what a checkpoint commits while this one goes on writing).
    pub(crate) fn split_off(&mut self, moved: impl Fn(&TableMeta) -> bool) -> LoadWriter {
        let (went, kept): (HashMap<_, _>, HashMap<_, _>) = std::mem::take(&mut self.tables)
            .into_iter()
            .partition(|(_, w)| self.roots.iter().any(|r| r.name == w.meta.root && moved(r)));
        self.tables = kept;
        LoadWriter {
            tables: went,
            roots: self.roots.iter().filter(|r| moved(r)).cloned().collect(),
            root_names: self.root_names.clone(),
            lake: self.lake.clone(),
            config: self.config.clone(),
            load_id: self.load_id.clone(),
            n_files: self.n_files,
            file_prefix: self.file_prefix.clone(),
            registry: self.registry.clone(),
            own_files: self.own_files.clone(),
            skip_own_root_files: self.skip_own_root_files,
            release_memory: self.release_memory,
            #[cfg(test)]
            pause_after_root: self.pause_after_root,
        }
    }

    /// Calls `release` each time a commit or checkpoint has closed its files, before it
    /// reads anything back: the program's hook to hand the memory its allocator keeps back
    /// to the system (jemalloc's purge, glibc's `malloc_trim`).
    ///
    /// Closing a checkpoint's files frees their row groups, tens of megabytes at once, while
    /// the checkpoint goes on to read its root ids back and commit. An allocator that
    /// returns freed pages on a timer still counts them then, and the new reads came on top:
    /// a 1,000,000-event run's peak was at its first checkpoint, 20 MB over the streaming.
    pub fn releasing_memory_with(mut self, release: fn()) -> Self {
        self.release_memory = Some(release);
        self
    }

    /// The load id.
    pub fn load_id(&self) -> &str {
        &self.load_id
    }

    /// Takes the batches of one page (`page_seq` orders pages: of two rows with the same
    /// primary key, the one from the later page wins).
    pub async fn write(&mut self, page_seq: u64, batches: Vec<TableBatch>) -> Result<()> {
        for tb in batches {
            let name = tb.table.name.clone();
            let writer = self
                .tables
                .entry(name.clone())
                .or_insert_with(|| TableWriter {
                    meta: tb.table.clone(),
                    schema: tb.batch.schema(),
                    open: None,
                    staged: Vec::new(),
                    root_ids: IdLog::default(),
                });
            if tb.batch.schema().fields().len() > writer.schema.fields().len() {
                writer.schema = tb.batch.schema();
            }
            if writer.meta.is_root() && writer.meta.write_disposition == WriteDisposition::Merge {
                let ids = tb
                    .batch
                    .column_by_name(ROW_ID)
                    .ok_or_else(|| SinkError::Internal {
                        message: format!("batch of `{name}` has no {ROW_ID} column"),
                    })?;
                for id in ids.as_string::<i32>().iter().flatten() {
                    writer.root_ids.push(id_key(id), page_seq);
                }
            }
            let wider = writer
                .open
                .as_ref()
                .is_some_and(|f| f.schema.fields().len() < tb.batch.schema().fields().len());
            if wider {
                close(&self.lake, &name, writer).await?;
            }
            if writer.open.is_none() {
                self.n_files += 1;
                writer.open = Some(open(
                    &self.lake,
                    &self.config,
                    &self.file_prefix,
                    self.n_files,
                    &name,
                    writer.schema.clone(),
                    &ColumnEncodings::sample(&tb.batch),
                )?);
            }
            let file = writer.open.as_mut().ok_or_else(|| SinkError::Internal {
                message: format!("no open file for `{name}`"),
            })?;
            let rows = tb.batch.num_rows() as u64;
            file.writer
                .write(&widen(&tb.batch, &file.schema)?)
                .await
                .map_err(|source| SinkError::Parquet {
                    table: name.clone(),
                    source,
                })?;
            file.n_rows += rows;
            match file.runs.last_mut() {
                Some((seq, n)) if *seq == page_seq => *n += rows,
                _ => file.runs.push((page_seq, rows)),
            }
            // Compressed bytes of finished row groups: the row group in progress is counted
            // only once written (its in-progress size is before compression, and closing on
            // it left files a quarter under the target).
            if file.writer.bytes_written() >= self.config.target_file_bytes {
                close(&self.lake, &name, writer).await?;
            }
        }
        // Over the memory budget of all tables: end the largest row group in progress.
        let buffered = |t: &TableWriter| t.open.as_ref().map_or(0, |f| f.writer.memory_size());
        if self.tables.values().map(buffered).sum::<usize>() > self.config.max_buffered_bytes
            && let Some(largest) = self.tables.values_mut().max_by_key(|t| buffered(t))
            && let Some(file) = largest.open.as_mut()
        {
            file.writer
                .flush()
                .await
                .map_err(|source| SinkError::Parquet {
                    table: largest.meta.name.clone(),
                    source,
                })?;
        }
        Ok(())
    }

    /// Closes every open file.
    ///
    /// As many files close at once as there are cores, each in a task of its own: closing a
    /// file encodes its last row group, and at the end of a run, with the transform workers
    /// done, one task left the other cores idle. Not more at once: each closing file holds
    /// its encoded pages and upload parts until it is done, and closing all of a
    /// checkpoint's files at once raised a 1,000,000-event run's peak by up to 30 MB.
    pub(crate) async fn flush_all(&mut self) -> Result<()> {
        let at_once = std::thread::available_parallelism().map_or(2, |n| n.get());
        let mut waiting: Vec<(String, TableWriter)> =
            std::mem::take(&mut self.tables).into_iter().collect();
        let mut closing = tokio::task::JoinSet::new();
        let mut outcome = Ok(());
        loop {
            while closing.len() < at_once
                && let Some((name, mut writer)) = waiting.pop()
            {
                let lake = self.lake.clone();
                closing.spawn(async move {
                    let closed = close(&lake, &name, &mut writer).await;
                    (name, writer, closed)
                });
            }
            let Some(joined) = closing.join_next().await else {
                break;
            };
            match joined {
                Ok((name, writer, closed)) => {
                    self.tables.insert(name, writer);
                    if let (Err(e), Ok(())) = (closed, &outcome) {
                        outcome = Err(e);
                    }
                }
                Err(e) if outcome.is_ok() => {
                    outcome = Err(SinkError::Internal {
                        message: format!("closing a data file stopped: {e}"),
                    });
                }
                Err(_) => {}
            }
        }
        outcome
    }

    /// Leaves root table `root` and its child tables out of this load: their staged files
    /// are deleted and the commit does not touch them (a replaced table whose data came
    /// only in part, after a failed paging or an interrupt, keeps its old content).
    pub async fn discard_root(&mut self, root: &str) {
        self.roots.retain(|r| r.name != root);
        let (gone, kept): (HashMap<_, _>, HashMap<_, _>) = std::mem::take(&mut self.tables)
            .into_iter()
            .partition(|(_, w)| w.meta.root == root);
        self.tables = kept;
        delete_staged(&self.lake, gone).await;
    }

    /// Deletes the files this load staged: after a failure nothing of it stays behind.
    pub async fn abort(mut self) {
        delete_staged(&self.lake, std::mem::take(&mut self.tables)).await;
    }
}

/// Deletes the staged and unfinished files of `tables`.
async fn delete_staged(lake: &Lake, tables: HashMap<String, TableWriter>) {
    for (name, mut t) in tables {
        if let Some(file) = t.open.take() {
            // An unfinished upload leaves no object behind once aborted.
            if let Err(error) = file.writer.into_upload().abort().await {
                tracing::warn!(table = %name, file = %file.name, %error, "could not abort an unfinished file");
            }
        }
        lake.delete_files(&name, t.staged.iter().map(|f| &f.name))
            .await;
    }
}

/// A random token for file names: a file is never written twice under one name, even by
/// two commits of one load.
pub(crate) fn file_token() -> String {
    format!("{:08x}", fastrand::u32(..))
}

/// Opens the next data file of a table.
fn open(
    lake: &Lake,
    config: &ParquetSinkConfig,
    file_prefix: &str,
    file_no: usize,
    table: &str,
    schema: SchemaRef,
    encodings: &ColumnEncodings,
) -> Result<OpenFile> {
    let name = crate::files::data_file_name(&format!("{file_prefix}-{file_no:05}"));
    let writer = lake
        .parquet_writer(
            table,
            &name,
            &schema,
            writer_properties(config, &schema, encodings),
        )
        .map_err(|source| SinkError::Parquet {
            table: table.to_owned(),
            source,
        })?;
    Ok(OpenFile {
        name,
        schema,
        writer,
        n_rows: 0,
        runs: Vec::new(),
    })
}

/// Finishes a table's open file, if any, and stages it.
async fn close(lake: &Lake, table: &str, writer: &mut TableWriter) -> Result<()> {
    let Some(mut file) = writer.open.take() else {
        return Ok(());
    };
    file.writer
        .finish()
        .await
        .map_err(|source| SinkError::Parquet {
            table: table.to_owned(),
            source,
        })?;
    let size = file.writer.bytes_written() as u64;
    tracing::debug!(table, file = %file.name, size, rows = file.n_rows, path = %lake.file_path(table, &file.name), "staged");
    writer.staged.push(StagedFile {
        name: file.name,
        size,
        n_rows: file.n_rows,
        runs: file.runs,
    });
    Ok(())
}

/// A row id as a 128-bit hash: the load's id set costs 16 bytes an id instead of a string,
/// so a load of millions of rows keeps it small (collisions: about 2^-64 at 10^10 ids).
pub(crate) fn id_key(id: &str) -> u128 {
    xxhash_rust::xxh3::xxh3_128(id.as_bytes())
}

/// Hashes an [`id_key`], itself a uniform 128-bit hash, by folding it to 64 bits instead of
/// hashing it again: the load's id sets are probed for every root row.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct IdKeyHasher(u64);

impl std::hash::Hasher for IdKeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0 ^= xxhash_rust::xxh3::xxh3_64(bytes);
    }
    fn write_u128(&mut self, key: u128) {
        self.0 = (key as u64) ^ ((key >> 64) as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// The root ids of a load as they came, each with its page: 24 bytes an id, in chunks of
/// fixed size. A hash map grown while writing doubled (and briefly held both tables) just
/// before a checkpoint, when the writers' row groups are fullest; this log is sorted into
/// [`IdPages`] at the commit ([`IdLog::into_pages`]), after the writers have been flushed.
#[derive(Debug, Default)]
pub(crate) struct IdLog {
    chunks: Vec<Vec<IdPage>>,
    len: usize,
}

/// An id key (as its two halves, so that the entry takes 24 bytes, not the 32 of a `u128`'s
/// alignment) and a page it came in.
type IdPage = (u64, u64, u64);

impl IdLog {
    /// Ids per chunk: 1.5 MiB.
    const CHUNK: usize = 65_536;

    /// Records that id key `key` came in page `page`.
    pub(crate) fn push(&mut self, key: u128, page: u64) {
        if self.chunks.last().is_none_or(|c| c.len() == Self::CHUNK) {
            self.chunks.push(Vec::with_capacity(Self::CHUNK));
        }
        if let Some(chunk) = self.chunks.last_mut() {
            let (high, low) = split(key);
            chunk.push((high, low, page));
            self.len += 1;
        }
    }

    /// The latest page each id came in (by `page_seq`, the order pages were fetched in), and
    /// the ids that came in more than one page. The chunks are moved into one list, sorted
    /// and de-duplicated in place: 24 bytes an id, where a hash map of them took 33 a slot in
    /// a table of the next power of two (which doubled between 200,000 and 250,000 ids).
    pub(crate) fn into_pages(self) -> (IdPages, IdSet) {
        let mut entries: Vec<IdPage> = Vec::with_capacity(self.len);
        for chunk in self.chunks {
            entries.extend(chunk);
        }
        // Sorted by page too: of two copies of an id, the later one comes in a later page.
        entries.sort_unstable();
        let mut repeated = IdSet::default();
        entries.dedup_by(|later, kept| {
            let same_id = (later.0, later.1) == (kept.0, kept.1);
            if same_id && later.2 != kept.2 {
                repeated.insert(join(kept.0, kept.1));
                kept.2 = later.2;
            }
            same_id
        });
        (IdPages::new(entries), repeated)
    }
}

/// A load's root ids, each with the latest page it came in, sorted by id key, with a
/// directory of where each range of keys starts. The lookups are many: every row of every
/// row group a bloom filter points at asks whether its id came, and most did not (a
/// filter's false positive brings a whole row group, 65,536 rows, for none). A binary search
/// of 250,000 ids (6 MB) missed the cache at most of its 18 steps; id keys are uniform
/// hashes, so their top bits pick a directory slot (one or two ids each, about 2 bytes an
/// id) and a lookup reads one slot and one or two neighbouring entries.
#[derive(Debug, Default)]
pub(crate) struct IdPages {
    entries: Vec<IdPage>,
    /// `starts[b]`: the first entry whose key's top `bits` bits are `b` or more; one slot
    /// past the last.
    starts: Vec<u32>,
    bits: u32,
}

impl IdPages {
    /// The ids of `entries`, sorted and without repeats.
    fn new(entries: Vec<IdPage>) -> Self {
        // One or two ids a slot.
        let bits = entries.len().max(1).ilog2().min(31);
        let mut starts = Vec::with_capacity((1 << bits) + 1);
        let mut at = 0;
        for slot in 0..=(1u64 << bits) {
            while at < entries.len() && Self::slot_of(entries[at].0, bits) < slot {
                at += 1;
            }
            starts.push(at as u32);
        }
        IdPages {
            entries,
            starts,
            bits,
        }
    }

    /// The directory slot of a key whose high half is `high`.
    fn slot_of(high: u64, bits: u32) -> u64 {
        if bits == 0 { 0 } else { high >> (64 - bits) }
    }

    /// The latest page id key `key` came in, if it came.
    pub(crate) fn page_of(&self, key: u128) -> Option<u64> {
        let wanted = split(key);
        let slot = Self::slot_of(wanted.0, self.bits) as usize;
        let (from, to) = (*self.starts.get(slot)?, *self.starts.get(slot + 1)?);
        self.entries[from as usize..to as usize]
            .iter()
            .find(|&&(high, low, _)| (high, low) == wanted)
            .map(|&(_, _, page)| page)
    }

    /// Whether id key `key` came in this load.
    pub(crate) fn contains(&self, key: u128) -> bool {
        self.page_of(key).is_some()
    }

    /// Whether no id came.
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Leaves out the ids in `gone`.
    pub(crate) fn remove_all(&mut self, gone: &IdSet) {
        let mut entries = std::mem::take(&mut self.entries);
        entries.retain(|&(high, low, _)| !gone.contains(&join(high, low)));
        *self = IdPages::new(entries);
    }
}

/// An id key's two halves.
fn split(key: u128) -> (u64, u64) {
    ((key >> 64) as u64, key as u64)
}

/// An id key from its two halves.
fn join(high: u64, low: u64) -> u128 {
    (u128::from(high) << 64) | u128::from(low)
}

/// A set of [`id_key`]s.
pub(crate) type IdSet = HashSet<u128, std::hash::BuildHasherDefault<IdKeyHasher>>;

/// The root table `table` belongs to among `roots`: itself, or the longest root whose name
/// and `__` begin its name (child tables are named `<root>__<path>`), so that the children of
/// a root named `events__archive` are not taken for those of `events`.
pub(crate) fn root_of<'a>(table: &str, roots: &'a [String]) -> Option<&'a str> {
    roots
        .iter()
        .filter(|r| {
            table == r.as_str()
                || table
                    .strip_prefix(r.as_str())
                    .is_some_and(|rest| rest.starts_with("__"))
        })
        .max_by_key(|r| r.len())
        .map(String::as_str)
}

/// An empty schema.
pub(crate) fn empty_schema() -> SchemaRef {
    Arc::new(Schema::empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each id keeps the latest page it came in, whatever order the pages landed in (two
    /// normalizers may hand them over out of order); an id is repeated only when it came in
    /// two pages, not twice in one.
    #[test]
    fn an_ids_latest_page_is_kept_and_only_ids_of_two_pages_are_repeated() {
        let mut log = IdLog::default();
        let (a, b, c, d) = (id_key("a"), id_key("b"), id_key("c"), id_key("d"));
        for (key, page) in [(a, 5), (b, 1), (a, 3), (c, 2), (c, 2), (b, 4), (a, 4)] {
            log.push(key, page);
        }
        let (pages, repeated) = log.into_pages();
        assert_eq!(pages.page_of(a), Some(5));
        assert_eq!(pages.page_of(b), Some(4));
        assert_eq!(pages.page_of(c), Some(2));
        assert_eq!(pages.page_of(d), None);
        assert!(pages.contains(c) && !pages.contains(d));
        let mut want: Vec<u128> = vec![a, b];
        want.sort_unstable();
        let mut got: Vec<u128> = repeated.into_iter().collect();
        got.sort_unstable();
        assert_eq!(got, want);
    }

    /// Over several chunks of the log, every id is found with its page, and the ids left
    /// out are gone while the others stay.
    #[test]
    fn ids_over_many_chunks_are_all_found_and_removed_ones_are_gone() {
        let mut log = IdLog::default();
        let n = IdLog::CHUNK * 2 + 7;
        for i in 0..n {
            log.push(id_key(&format!("id-{i}")), i as u64 / 50);
        }
        let (mut pages, repeated) = log.into_pages();
        assert!(repeated.is_empty());
        assert!((0..n).all(|i| pages.page_of(id_key(&format!("id-{i}"))) == Some(i as u64 / 50)));
        let gone: IdSet = (0..n)
            .step_by(3)
            .map(|i| id_key(&format!("id-{i}")))
            .collect();
        pages.remove_all(&gone);
        assert!((0..n).all(|i| pages.contains(id_key(&format!("id-{i}"))) == (i % 3 != 0)));
        assert!(!pages.is_empty());
    }

    /// The directory finds every id at every size, the keys at both ends of the key space
    /// included, and no id that did not come.
    #[test]
    fn the_directory_finds_exactly_the_ids_that_came() {
        let edges = [0u128, 1, u128::MAX, u128::MAX - 1, 1 << 127, (1 << 127) - 1];
        for n in [0usize, 1, 2, 3, 5, 64, 1000, 4097] {
            let mut log = IdLog::default();
            let came: Vec<u128> = (0..n)
                .map(|i| id_key(&format!("came-{i}")))
                .chain(edges.iter().copied().take(n.min(edges.len())))
                .collect();
            for (i, &k) in came.iter().enumerate() {
                log.push(k, i as u64);
            }
            let (pages, _) = log.into_pages();
            for (i, &k) in came.iter().enumerate() {
                assert_eq!(pages.page_of(k), Some(i as u64), "id {i} of {n}");
            }
            let absent = (0..2000)
                .map(|i| id_key(&format!("absent-{i}")))
                .chain(edges.iter().copied().skip(n.min(edges.len())));
            for k in absent {
                assert!(!pages.contains(k), "{k:x} did not come ({n} ids)");
            }
        }
    }
}
