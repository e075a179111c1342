//! What a lake holds, read for people and for the pipeline: a table's summary (`inspect`),
//! a small table's rows as JSON (the state), and the run reports of `_errlake_loads`.

use object_store::path::Path as StorePath;

use crate::lake::{Lake, data_files, kept_history};
use crate::{Result, SinkError};

/// A summary of one table, for `inspect`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TableInfo {
    /// The current version.
    pub version: u64,
    /// Rows, from the file statistics.
    pub rows: u64,
    /// Data files.
    pub files: usize,
    /// Bytes of its data files.
    pub bytes: u64,
    /// Column names and types.
    pub columns: Vec<(String, String)>,
    /// The load id of the latest commit, if errlake made it.
    pub last_load_id: Option<String>,
    /// The latest commits, newest first (at most five).
    pub last_loads: Vec<LoadEntry>,
    /// How long the files its commits removed are kept ([`KEEP_HISTORY_PROPERTY`]);
    /// `None`: deleted right after each commit.
    pub keeps_history: Option<std::time::Duration>,
}

/// One commit of a table, from its Delta history.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LoadEntry {
    /// The version it made.
    pub version: u64,
    /// When (milliseconds since the epoch).
    pub timestamp_ms: Option<i64>,
    /// The Delta operation (`WRITE`, `CREATE TABLE`).
    pub operation: Option<String>,
    /// errlake's load id, if errlake made it.
    pub load_id: Option<String>,
    /// Rows the load added.
    pub rows_added: Option<u64>,
    /// Rows of earlier loads it replaced.
    pub rows_removed: Option<u64>,
}

impl Lake {
    /// A summary of table `name`; `None` if there is no such table.
    pub async fn table_info(&self, name: &str) -> Result<Option<TableInfo>> {
        let Some(t) = self.load_table(name).await? else {
            return Ok(None);
        };
        let fail = |source| SinkError::Delta {
            table: name.to_owned(),
            source,
        };
        let snapshot = t.snapshot().map_err(fail)?;
        let files: Vec<_> = snapshot.log_data().iter().collect();
        let rows = files
            .iter()
            .map(|f| f.num_records().unwrap_or(0) as u64)
            .sum();
        let bytes = files.iter().map(|f| f.size().max(0) as u64).sum();
        let columns = snapshot
            .snapshot()
            .arrow_schema()
            .fields()
            .iter()
            .map(|f| (f.name().clone(), f.data_type().to_string()))
            .collect();
        let version = t.version().unwrap_or(0);
        let keeps_history = kept_history(snapshot);
        let mut last_loads = Vec::new();
        {
            use futures::StreamExt;
            let mut history = t.history(Some(5));
            let mut v = version;
            while let Some(Ok(info)) = history.next().await {
                let get = |k: &str| info.info.get(k);
                last_loads.push(LoadEntry {
                    version: v,
                    timestamp_ms: info.timestamp,
                    operation: info.operation.clone(),
                    load_id: get("errlake.load_id")
                        .and_then(|v| v.as_str())
                        .map(str::to_owned),
                    rows_added: get("errlake.rows_added").and_then(|v| v.as_u64()),
                    rows_removed: get("errlake.rows_removed").and_then(|v| v.as_u64()),
                });
                v = v.saturating_sub(1);
            }
        }
        let last_load_id = last_loads.first().and_then(|l| l.load_id.clone());
        Ok(Some(TableInfo {
            version,
            rows,
            files: files.len(),
            bytes,
            columns,
            last_load_id,
            last_loads,
            keeps_history,
        }))
    }
}

/// The folder of the load history: one JSON report per load, named by its load id.
pub const LOADS_FOLDER: &str = "_errlake_loads";

impl Lake {
    /// Every row of table `name` at its latest version, as JSON objects (column name to
    /// value, nulls left out); `None` if there is no such table. Meant for small tables such
    /// as the pipeline state: all rows are held in memory.
    pub async fn read_rows(
        &self,
        name: &str,
    ) -> Result<Option<Vec<serde_json::Map<String, serde_json::Value>>>> {
        use futures::TryStreamExt;
        let Some(t) = self.load_table(name).await? else {
            return Ok(None);
        };
        let files = data_files(&t, name)?;
        let mut json = arrow_json::ArrayWriter::new(Vec::new());
        for (path, size) in files {
            let parquet_err = |source| SinkError::ParquetFile {
                table: name.to_owned(),
                path: path.clone(),
                source,
            };
            let stream = self
                .data_file(name, &path, size)
                .builder()
                .await
                .map_err(parquet_err)?
                .build()
                .map_err(parquet_err)?;
            let batches: Vec<_> = stream.try_collect().await.map_err(parquet_err)?;
            for batch in &batches {
                json.write(batch).map_err(|e| SinkError::Internal {
                    message: format!("table `{name}` as JSON: {e}"),
                })?;
            }
        }
        json.finish().map_err(|e| SinkError::Internal {
            message: format!("table `{name}` as JSON: {e}"),
        })?;
        let bytes = json.into_inner();
        if bytes.is_empty() {
            return Ok(Some(Vec::new()));
        }
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| SinkError::Internal {
                message: format!("table `{name}` as JSON: {e}"),
            })
    }

    /// Stores a load's report in the load history (`_errlake_loads/<load_id>.json`).
    pub async fn put_load_report(&self, load_id: &str, report: &serde_json::Value) -> Result<()> {
        let path = self.file_path(LOADS_FOLDER, &format!("{load_id}.json"));
        let body = serde_json::to_vec_pretty(report).map_err(|e| SinkError::Internal {
            message: format!("load report as JSON: {e}"),
        })?;
        self.put(&path, body).await
    }

    /// The latest `limit` load reports, newest first (load ids sort by their start time);
    /// a report that cannot be read is left out with a warning.
    pub async fn load_reports(&self, limit: usize) -> Result<Vec<serde_json::Value>> {
        use object_store::ObjectStoreExt;
        let folder = self.prefix().clone().join(LOADS_FOLDER);
        let mut paths: Vec<StorePath> = self
            .list_under(&folder)
            .await?
            .into_iter()
            .map(|(_, o)| o.location)
            .filter(|p| p.as_ref().ends_with(".json"))
            .collect();
        paths.sort();
        let mut reports = Vec::new();
        for path in paths.iter().rev().take(limit) {
            let read = async {
                let bytes = self.store().get(path).await?.bytes().await?;
                Ok::<_, object_store::Error>(bytes)
            };
            match read.await.map(|b| serde_json::from_slice(&b)) {
                Ok(Ok(report)) => reports.push(report),
                Ok(Err(e)) => tracing::warn!(path = %path, error = %e, "load report is not JSON"),
                Err(e) => tracing::warn!(path = %path, error = %e, "load report unreadable"),
            }
        }
        Ok(reports)
    }
}
