//! Staging: per-table writers that turn batches into Parquet files in the table's folder,
//! not yet part of the table.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::{RecordBatch, new_null_array};
use arrow_schema::{Schema, SchemaRef};
use object_store::ObjectStoreExt;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use transform::{ROOT_ID, ROW_ID, TableBatch, TableMeta, WriteDisposition};

use crate::lake::Lake;
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

/// Rows of one table buffered until a file is full.
#[derive(Debug)]
pub(crate) struct TableWriter {
    pub(crate) meta: Arc<TableMeta>,
    /// The widest schema seen: batch schemas are prefixes of each other.
    pub(crate) schema: SchemaRef,
    buffered: Vec<(u64, RecordBatch)>,
    buffered_bytes: usize,
    pub(crate) staged: Vec<StagedFile>,
    pub(crate) n_rows: u64,
    /// Root tables under merge: the last page each row id came in.
    pub(crate) last_page_of_id: HashMap<String, u64>,
    /// Root tables under merge: ids that came in more than one page in this load.
    pub(crate) repeated_ids: HashSet<String>,
}

/// Everything one load writes before its commit.
#[derive(Debug)]
pub struct LoadWriter {
    pub(crate) lake: Lake,
    pub(crate) config: ParquetSinkConfig,
    pub(crate) load_id: String,
    pub(crate) tables: HashMap<String, TableWriter>,
    /// The root tables of this load, whether or not rows came.
    pub(crate) roots: Vec<Arc<TableMeta>>,
    n_files: usize,
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
        LoadWriter {
            lake,
            config,
            load_id,
            tables: HashMap::new(),
            roots,
            n_files: 0,
        }
    }

    /// The load id.
    pub fn load_id(&self) -> &str {
        &self.load_id
    }

    /// Rows received so far, per table.
    pub fn row_counts(&self) -> HashMap<String, u64> {
        self.tables
            .iter()
            .map(|(k, t)| (k.clone(), t.n_rows))
            .collect()
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
                    buffered: Vec::new(),
                    buffered_bytes: 0,
                    staged: Vec::new(),
                    n_rows: 0,
                    last_page_of_id: HashMap::new(),
                    repeated_ids: HashSet::new(),
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
                    if let Some(previous) = writer.last_page_of_id.insert(id.to_owned(), page_seq)
                        && previous != page_seq
                    {
                        writer.repeated_ids.insert(id.to_owned());
                    }
                }
            }
            writer.n_rows += tb.batch.num_rows() as u64;
            writer.buffered_bytes += tb.batch.get_array_memory_size();
            writer.buffered.push((page_seq, tb.batch));
            if writer.buffered_bytes >= self.config.target_file_bytes {
                self.flush_table(&name).await?;
            }
        }
        // Over the memory budget of all tables: write the largest buffer out.
        while self
            .tables
            .values()
            .map(|t| t.buffered_bytes)
            .sum::<usize>()
            > self.config.max_buffered_bytes
        {
            let Some(largest) = self
                .tables
                .iter()
                .max_by_key(|(_, t)| t.buffered_bytes)
                .map(|(n, _)| n.clone())
            else {
                break;
            };
            self.flush_table(&largest).await?;
        }
        Ok(())
    }

    async fn flush_table(&mut self, name: &str) -> Result<()> {
        self.n_files += 1;
        let file_no = self.n_files;
        let writer = self
            .tables
            .get_mut(name)
            .ok_or_else(|| SinkError::Internal {
                message: format!("no writer for `{name}`"),
            })?;
        flush(&self.lake, &self.config, &self.load_id, file_no, writer).await
    }

    /// Writes what is still buffered.
    pub(crate) async fn flush_all(&mut self) -> Result<()> {
        let names: Vec<String> = self.tables.keys().cloned().collect();
        for name in names {
            self.flush_table(&name).await?;
        }
        Ok(())
    }

    /// Deletes the files this load staged: after a failure nothing of it stays behind.
    pub async fn abort(mut self) {
        for (name, t) in self.tables.drain() {
            for f in &t.staged {
                let path = self.lake.file_path(&name, &f.name);
                if let Err(error) = self.lake.store().delete(&path).await {
                    tracing::warn!(table = %name, file = %f.name, %error, "could not delete a staged file");
                }
            }
        }
    }
}

/// Pads a batch with null columns up to `schema` (batch schemas are prefixes of it).
pub(crate) fn widen(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    if batch.schema().fields().len() == schema.fields().len() {
        return Ok(batch.clone());
    }
    let n = batch.num_rows();
    let columns = schema
        .fields()
        .iter()
        .map(|f| match batch.column_by_name(f.name()) {
            Some(c) => c.clone(),
            None => new_null_array(f.data_type(), n),
        })
        .collect();
    RecordBatch::try_new(schema.clone(), columns).map_err(|e| SinkError::Internal {
        message: format!("widening a batch: {e}"),
    })
}

pub(crate) fn writer_properties(config: &ParquetSinkConfig) -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(config.zstd_level).unwrap_or_default(),
        ))
        .set_max_row_group_row_count(Some(config.row_group_rows))
        .build()
}

/// Encodes batches as one Parquet file in memory.
pub(crate) fn encode(
    config: &ParquetSinkConfig,
    schema: &SchemaRef,
    batches: &[RecordBatch],
    table: &str,
) -> Result<Vec<u8>> {
    let fail = |e: parquet::errors::ParquetError| SinkError::Parquet {
        table: table.to_owned(),
        source: e,
    };
    let mut writer =
        ArrowWriter::try_new(Vec::new(), schema.clone(), Some(writer_properties(config)))
            .map_err(fail)?;
    for b in batches {
        writer.write(&widen(b, schema)?).map_err(fail)?;
    }
    writer.into_inner().map_err(fail)
}

async fn flush(
    lake: &Lake,
    config: &ParquetSinkConfig,
    load_id: &str,
    file_no: usize,
    writer: &mut TableWriter,
) -> Result<()> {
    if writer.buffered.is_empty() {
        return Ok(());
    }
    let batches: Vec<(u64, RecordBatch)> = std::mem::take(&mut writer.buffered);
    writer.buffered_bytes = 0;
    let schema = writer.schema.clone();
    let table = writer.meta.name.clone();
    let config_c = config.clone();
    let only_batches: Vec<RecordBatch> = batches.iter().map(|(_, b)| b.clone()).collect();
    let bytes =
        tokio::task::spawn_blocking(move || encode(&config_c, &schema, &only_batches, &table))
            .await
            .map_err(|e| SinkError::Internal {
                message: format!("encoding task: {e}"),
            })??;
    let name = format!("part-{load_id}-{file_no:05}.zstd.parquet");
    let path = lake.file_path(&writer.meta.name, &name);
    let size = bytes.len() as u64;
    lake.store()
        .put(&path, bytes.into())
        .await
        .map_err(|source| SinkError::Store {
            path: path.to_string(),
            source,
        })?;
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for (seq, b) in &batches {
        match runs.last_mut() {
            Some((s, n)) if s == seq => *n += b.num_rows() as u64,
            _ => runs.push((*seq, b.num_rows() as u64)),
        }
    }
    let n_rows = runs.iter().map(|(_, n)| n).sum();
    writer.staged.push(StagedFile {
        name,
        size,
        n_rows,
        runs,
    });
    Ok(())
}

/// The column that links a table's rows to their root row.
pub(crate) fn root_key_column(meta: &TableMeta) -> &'static str {
    if meta.is_root() { ROW_ID } else { ROOT_ID }
}

/// An empty schema.
pub(crate) fn empty_schema() -> SchemaRef {
    Arc::new(Schema::empty())
}
