//! One run of a pipeline: the stages wired through two bounded channels, then one commit per
//! table, or none.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use http_core::{Client, StatsSnapshot};
use sink_parquet::{Lake, LoadWriter, TableCommit};
use source_errors::{Page, ResourceStats};
use transform::{
    Discarded, Normalizer, SchemaRegistry, TableBatch, TableMeta, naming::normalize_identifier,
};

use crate::PipelineError;
use crate::config::Pipeline;

/// Options of one run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Only these resources (their parents are fetched for partitions, not written).
    pub resources: Option<Vec<String>>,
    /// Stop each paging after this many pages.
    pub max_pages: Option<usize>,
}

/// What a run did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunReport {
    /// The load id, in every root row's `_dlt_load_id` and in each commit's info.
    pub load_id: String,
    /// The destination URL.
    pub destination: String,
    /// Per resource: partitions, pages, records, bytes, retries.
    pub resources: BTreeMap<String, ResourceStats>,
    /// HTTP traffic.
    pub http: StatsSnapshot,
    /// Per table, the commit made.
    pub commits: Vec<TableCommit>,
    /// Rows normalized per table.
    pub rows: BTreeMap<String, u64>,
    /// What the schema contracts left out.
    pub discarded: Discarded,
    /// Wall-clock seconds.
    pub seconds: f64,
}

/// A page's batches on their way to the sink.
struct PageBatches {
    page_seq: u64,
    batches: Vec<TableBatch>,
}

/// Runs a pipeline: fetch, normalize and stage everything, then commit each table once.
/// On any error nothing is committed, the staged files are deleted, and the error names
/// the stage, resource, partition and page.
pub async fn run(pipeline: &Pipeline, options: &RunOptions) -> Result<RunReport, PipelineError> {
    let started = Instant::now();
    let load_id = load_id();
    let source = pipeline.source.clone();
    if let Some(selected) = &options.resources {
        for name in selected {
            if source.resource(name).is_none() {
                return Err(PipelineError::UnknownResource { name: name.clone() });
            }
        }
    }
    let lake = Lake::open_with_options(&pipeline.destination, &pipeline.storage_options)?;
    let registry = SchemaRegistry::new(lake.schemas().await?);
    let client = Client::new(source.client.clone()).map_err(PipelineError::Client)?;

    let selected: Option<HashSet<String>> = options
        .resources
        .as_ref()
        .map(|r| r.iter().cloned().collect());
    let metas: BTreeMap<String, Arc<TableMeta>> = source
        .resources
        .iter()
        .filter(|r| selected.as_ref().is_none_or(|s| s.contains(&r.name)))
        .map(|r| {
            let table = normalize_identifier(&r.table_name);
            let meta = TableMeta {
                name: table.clone(),
                parent: None,
                root: table,
                primary_key: r.primary_key.clone(),
                write_disposition: match r.write_disposition {
                    source_errors::WriteDisposition::Append => transform::WriteDisposition::Append,
                    source_errors::WriteDisposition::Replace => {
                        transform::WriteDisposition::Replace
                    }
                    source_errors::WriteDisposition::Merge => transform::WriteDisposition::Merge,
                },
            };
            (r.name.clone(), Arc::new(meta))
        })
        .collect();
    let metas = Arc::new(metas);

    let (pages_tx, pages_rx) =
        async_channel::bounded::<Page>(pipeline.channels.channel_capacity_pages);
    let (batches_tx, batches_rx) =
        async_channel::bounded::<PageBatches>(pipeline.channels.channel_capacity_batches);

    // Fetch: ends when every paging is done; drops `pages_tx`, which closes the channel.
    let source_task = tokio::spawn(source_errors::run(
        source.clone(),
        client.clone(),
        pages_tx,
        source_errors::RunOptions {
            selected,
            max_pages: options.max_pages,
        },
    ));

    // Normalize: CPU work on blocking threads, one per core, sharing the page channel.
    let n_workers = match pipeline.channels.transform_workers {
        0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
        n => n,
    };
    let mut workers = Vec::with_capacity(n_workers);
    for _ in 0..n_workers {
        let pages_rx = pages_rx.clone();
        let batches_tx = batches_tx.clone();
        let metas = metas.clone();
        let mut normalizer = Normalizer::new(pipeline.normalize.clone(), registry.clone());
        let load_id = load_id.clone();
        workers.push(tokio::task::spawn_blocking(
            move || -> Result<Discarded, PipelineError> {
                while let Ok(page) = pages_rx.recv_blocking() {
                    let Some(meta) = metas.get(&*page.resource) else {
                        continue;
                    };
                    let batches =
                        match normalizer.normalize(meta, &load_id, page.page_seq, &page.records) {
                            Ok(b) => b,
                            Err(source) => {
                                // Stop the fetchers: their next send fails and they return.
                                pages_rx.close();
                                return Err(PipelineError::Transform {
                                    resource: page.resource.to_string(),
                                    partition: page.partition.to_string(),
                                    page_idx: page.page_idx,
                                    source: Box::new(source),
                                });
                            }
                        };
                    if batches_tx
                        .send_blocking(PageBatches {
                            page_seq: page.page_seq,
                            batches,
                        })
                        .is_err()
                    {
                        // The sink is gone; it reports why.
                        pages_rx.close();
                        return Ok(normalizer.discarded().clone());
                    }
                }
                Ok(normalizer.discarded().clone())
            },
        ));
    }
    drop(pages_rx);
    drop(batches_tx);

    // Stage: one writer per table, fed by one task.
    let roots: Vec<Arc<TableMeta>> = metas.values().cloned().collect();
    let mut writer = LoadWriter::new(lake.clone(), pipeline.sink.clone(), load_id.clone(), roots);
    let sink_task = tokio::spawn(async move {
        while let Ok(msg) = batches_rx.recv().await {
            if let Err(e) = writer.write(msg.page_seq, msg.batches).await {
                batches_rx.close();
                return (writer, Err(PipelineError::from(e)));
            }
        }
        (writer, Ok(()))
    });

    let source_result = join(source_task).await;
    let mut first_error: Option<PipelineError> = None;
    let resources = match source_result {
        Ok(Ok(stats)) => stats,
        Ok(Err(e)) => {
            first_error = Some(PipelineError::Source(e));
            BTreeMap::new()
        }
        Err(e) => return Err(e),
    };
    let mut discarded = Discarded::default();
    for w in workers {
        match join(w).await? {
            Ok(d) => discarded.add(&d),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    let (writer, sink_result) = join(sink_task).await?;
    if let Err(e) = sink_result {
        first_error.get_or_insert(e);
    }
    if let Some(e) = first_error {
        writer.abort().await;
        return Err(e);
    }
    let rows: BTreeMap<String, u64> = writer.row_counts().into_iter().collect();
    let commits = writer.commit().await?;
    Ok(RunReport {
        load_id,
        destination: lake.url().to_string(),
        resources,
        http: client.stats(),
        commits,
        rows,
        discarded,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Awaits a task; a panic in it is re-raised here, never swallowed.
async fn join<T>(handle: tokio::task::JoinHandle<T>) -> Result<T, PipelineError> {
    match handle.await {
        Ok(v) => Ok(v),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(PipelineError::Cancelled),
    }
}

/// A load id: the UTC time (sortable) and a random suffix.
fn load_id() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!(
        "{}.{:06}-{}",
        now.as_secs(),
        now.subsec_micros(),
        &random[..8]
    )
}
