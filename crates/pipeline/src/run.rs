//! One run of a pipeline: the stages wired through two bounded channels; commits at
//! checkpoints and at the end, each followed by the pipeline state it makes true.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_core::{Client, ClientSettings, StatsSnapshot};
use sink_parquet::{Lake, LoadWriter, ParquetSinkConfig, TableCommit};
use source_errors::{
    FailedPartition, LiveStats, Page, PartitionState, ResourceStats, Shard, Source, StateKey,
    WriteDisposition,
};
use transform::{
    Discarded, Normalizer, SchemaRegistry, TableBatch, TableMeta, naming::normalize_identifier,
};

use crate::PipelineError;
use crate::config::{CheckpointConfig, Pipeline};
use crate::state::{Progress, StoredState, commit_state, load_state};

/// Options of one run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Only these resources (their parents are fetched for partitions, not written).
    pub resources: Option<Vec<String>>,
    /// Stop each paging after this many pages (the next run resumes it there).
    pub max_pages: Option<usize>,
    /// Resources whose stored state (cursor, resume point) this run ignores: they start at
    /// their initial value and first page.
    pub full_refresh: Vec<String>,
    /// A paging that fails after the client's retries fails its partition only: the others
    /// go on, the report lists it, and the next run retries it from its last landed page.
    pub keep_going: bool,
    /// Stops the run gracefully when triggered (Ctrl-C): no new requests, the pages in
    /// flight land, and a last checkpoint commits them with their state.
    pub interrupt: Option<Interrupt>,
    /// Live per-resource counters, for a progress display.
    pub live: Option<LiveStats>,
    /// Receives the run's HTTP client once it exists, for a progress display to read its
    /// request counts and rate-limit wait.
    pub http_probe: Option<Arc<std::sync::OnceLock<Client>>>,
    /// Write into a destination that already holds files errlake did not write (a first
    /// run refuses one otherwise). errlake never deletes those files either way.
    pub adopt_foreign_files: bool,
    /// The part of the pipeline this run does (`--shard 1/4`): see
    /// [`source_errors::RunOptions::shard`]. Its state rows carry the shard's name.
    pub shard: Shard,
    /// This run's client-side budget of requests per minute, in place of the file's
    /// `client.rate_limit.requests_per_minute`. Unset, a split run takes the file's budget
    /// divided by the number of shards (a budget is per token, and the shards share one).
    pub requests_per_minute: Option<u32>,
    /// Called each time a checkpoint or the final commit has closed its data files: the
    /// program's hook to hand its allocator's freed pages back to the system (see
    /// [`LoadWriter::releasing_memory_with`]).
    pub release_memory: Option<fn()>,
}

/// A handle that stops a run gracefully; clones share it.
#[derive(Debug, Clone)]
pub struct Interrupt(Arc<tokio::sync::watch::Sender<bool>>);

impl Default for Interrupt {
    fn default() -> Self {
        Interrupt(Arc::new(tokio::sync::watch::Sender::new(false)))
    }
}

impl Interrupt {
    /// Asks the run to stop.
    pub fn trigger(&self) {
        self.0.send_replace(true);
    }

    /// Whether the run was asked to stop.
    pub fn is_triggered(&self) -> bool {
        *self.0.borrow()
    }

    async fn triggered(&self) {
        let mut rx = self.0.subscribe();
        let _ = rx.wait_for(|stop| *stop).await;
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Everything fetched and committed.
    Completed,
    /// Committed, but some partitions failed (`--keep-going`); the next run retries them.
    PartiallyFailed,
    /// Stopped by an interrupt; what landed is committed, the next run goes on from there.
    Interrupted,
    /// Failed; the checkpoints before the failure stay committed.
    Failed,
}

/// What a run did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunReport {
    /// The load id, in every root row's `_dlt_load_id` and in each commit's info.
    pub load_id: String,
    /// How the run ended.
    pub outcome: Outcome,
    /// Why it failed (`Failed` only).
    pub error: Option<String>,
    /// Pagings that failed under `keep_going`.
    pub failed: Vec<FailedPartition>,
    /// Checkpoints committed before the end.
    pub checkpoints: u32,
    /// The destination URL.
    pub destination: String,
    /// The shard this run was (`1/4`); `None` for an unsplit run.
    pub shard: Option<String>,
    /// How many times a table commit found that another writer had moved the table first
    /// and merged again (other shards, concurrent runs): the sum of the commits' `retries`.
    pub commit_retries: u64,
    /// Per resource: partitions, pages, records, bytes, retries.
    pub resources: BTreeMap<String, ResourceStats>,
    /// HTTP traffic.
    pub http: StatsSnapshot,
    /// Per table, the commits made (at checkpoints and at the end), the state table's too.
    pub commits: Vec<TableCommit>,
    /// Rows normalized per table.
    pub rows: BTreeMap<String, u64>,
    /// Tables whose small files (left by checkpoints) were rewritten into target-sized
    /// ones after the run's last commit.
    pub compacted: BTreeMap<String, sink_parquet::Compaction>,
    /// What the schema contracts left out.
    pub discarded: Discarded,
    /// Wall-clock seconds.
    pub seconds: f64,
}

/// A page's batches on their way to the sink.
struct PageBatches {
    key: StateKey,
    page_idx: usize,
    page_seq: u64,
    state_after: Option<PartitionState>,
    batches: Vec<TableBatch>,
}

/// Runs a pipeline: fetch, normalize and stage, commit at checkpoints and at the end, each
/// commit followed by the state it makes true; every run's report goes to the lake's load
/// history. On an error the checkpoints before it stay committed, what was staged since is
/// deleted, and the error names the stage, resource, partition and page.
pub async fn run(pipeline: &Pipeline, options: &RunOptions) -> Result<RunReport, PipelineError> {
    let started = Instant::now();
    let load_id = load_id();
    let source = pipeline.source.clone();
    check_resource_names(&source, options)?;
    check_shardable(&source, options)?;
    let lake = open_destination(pipeline, options).await?;
    let registry = SchemaRegistry::new(lake.schemas().await?);
    let client = Client::new(client_settings(&source, options)).map_err(PipelineError::Client)?;
    if let Some(probe) = &options.http_probe {
        let _ = probe.set(client.clone());
    }
    let stored = load_state(&lake).await?;
    let selected: Option<HashSet<String>> = options
        .resources
        .as_ref()
        .map(|r| r.iter().cloned().collect());
    let written = written_resources(&source, selected.as_ref(), options.shard);
    let tables = ResourceTables::of(&source, written.as_ref());

    let (pages_tx, pages_rx) =
        async_channel::bounded::<Page>(pipeline.channels.channel_capacity_pages);
    let (batches_tx, batches_rx) =
        async_channel::bounded::<PageBatches>(pipeline.channels.channel_capacity_batches);
    let interrupt_task = options
        .interrupt
        .clone()
        .map(|interrupt| close_on_interrupt(interrupt, &pages_tx));

    // Fetch: ends when every paging is done; drops `pages_tx`, which closes the channel.
    let source_options = source_options(options, selected, &stored);
    let source_task = tokio::spawn(source_errors::run(
        source.clone(),
        client.clone(),
        pages_tx,
        source_options,
    ));

    // Normalize: CPU work on threads of their own, one per core, sharing the page channel.
    let workers = spawn_workers(
        pipeline,
        &pages_rx,
        &batches_tx,
        &tables,
        &registry,
        &load_id,
    )?;
    drop(pages_rx);
    drop(batches_tx);

    // Stage: one writer per table, fed by one task, committing at checkpoints.
    let mut sink = Sink::new(pipeline, &lake, &registry, &load_id, tables, stored);
    sink.shard = options.shard;
    if let Some(release) = options.release_memory {
        sink.writer = sink.writer.take().map(|w| w.releasing_memory_with(release));
    }
    let sink_task = tokio::spawn(sink.land_all(batches_rx));

    let mut ended = Ended::join(source_task, workers, sink_task).await?;
    if let Some(task) = interrupt_task {
        task.abort();
    }
    let interrupted = options
        .interrupt
        .as_ref()
        .is_some_and(Interrupt::is_triggered);
    let report = RunReport {
        load_id,
        outcome: Outcome::Completed,
        error: None,
        failed: ended.source.failed.clone(),
        checkpoints: ended.sink.checkpoints,
        destination: lake.url().to_string(),
        shard: options.shard.is_split().then(|| options.shard.to_string()),
        commit_retries: 0,
        resources: std::mem::take(&mut ended.source.resources),
        http: client.stats(),
        commits: Vec::new(),
        rows: std::mem::take(&mut ended.sink.rows),
        compacted: BTreeMap::new(),
        discarded: std::mem::take(&mut ended.discarded),
        seconds: 0.0,
    };
    ended
        .conclude(report, pipeline, &lake, interrupted, started)
        .await
}

/// What the source needs of the run's options, with the state the earlier runs left.
fn source_options(
    options: &RunOptions,
    selected: Option<HashSet<String>>,
    stored: &HashMap<StateKey, StoredState>,
) -> source_errors::RunOptions {
    source_errors::RunOptions {
        selected,
        max_pages: options.max_pages,
        state: Arc::new(
            stored
                .iter()
                .map(|(k, v)| (k.clone(), v.state.clone()))
                .collect(),
        ),
        full_refresh: options.full_refresh.iter().cloned().collect(),
        keep_going: options.keep_going,
        live: options.live.clone(),
        shard: options.shard,
    }
}

/// The client's settings for this run: the file's, with the run's own request budget, or
/// under `--shard` the file's budget shared out between the shards (at least one request a
/// minute each).
fn client_settings(source: &Source, options: &RunOptions) -> ClientSettings {
    let mut settings = source.client.clone();
    let budget = &mut settings.rate_limit.requests_per_minute;
    match options.requests_per_minute {
        Some(own) => *budget = Some(own),
        None if options.shard.is_split() => {
            *budget = budget.map(|n| (n / options.shard.count()).max(1));
        }
        None => {}
    }
    settings
}

/// The resources whose rows this run writes (`None`: all): the selected ones, but for a
/// split run's shards other than 0 only the leaves, since shard 0 writes the parents every
/// shard fetches (a parent among another shard's roots would be a root that got no rows,
/// which a replace empties).
fn written_resources(
    source: &Source,
    selected: Option<&HashSet<String>>,
    shard: Shard,
) -> Option<HashSet<String>> {
    if !shard.is_split() || shard.writes_shared() {
        return selected.cloned();
    }
    Some(
        source_errors::split_resources(source, selected)
            .into_iter()
            .map(|r| r.name.clone())
            .collect(),
    )
}

/// A split run refuses a resource it cannot split: a leaf resource that replaces its table
/// each run would be replaced by each shard's part in turn.
fn check_shardable(source: &Source, options: &RunOptions) -> Result<(), PipelineError> {
    if !options.shard.is_split() {
        return Ok(());
    }
    let selected: Option<HashSet<String>> = options
        .resources
        .as_ref()
        .map(|r| r.iter().cloned().collect());
    for r in source_errors::split_resources(source, selected.as_ref()) {
        if r.write_disposition == WriteDisposition::Replace {
            return Err(PipelineError::NotShardable {
                resource: r.name.clone(),
                why: "it replaces its table each run, and each shard holds only part of its rows (use merge or append to split it)".into(),
            });
        }
    }
    Ok(())
}

/// Every resource the options name exists.
fn check_resource_names(source: &Source, options: &RunOptions) -> Result<(), PipelineError> {
    for name in options
        .resources
        .iter()
        .flatten()
        .chain(&options.full_refresh)
    {
        if source.resource(name).is_none() {
            return Err(PipelineError::UnknownResource { name: name.clone() });
        }
    }
    Ok(())
}

/// The destination, refused when a first run finds files errlake did not write there
/// (unless the options adopt them).
async fn open_destination(
    pipeline: &Pipeline,
    options: &RunOptions,
) -> Result<Lake, PipelineError> {
    let lake = Lake::open_with_options(&pipeline.destination, &pipeline.storage_options)?;
    if !options.adopt_foreign_files && !lake.has_load_history().await? {
        let files = lake.foreign_objects(5).await?;
        if !files.is_empty() {
            return Err(PipelineError::ForeignFiles {
                destination: lake.url().to_string(),
                files,
            });
        }
    }
    Ok(lake)
}

/// An interrupt closes the pages channel: the fetchers stop at their next page, the pages
/// already queued still land. The task holds the sender weakly, so the channel still closes
/// when the fetchers end.
fn close_on_interrupt(
    interrupt: Interrupt,
    pages_tx: &async_channel::Sender<Page>,
) -> tokio::task::JoinHandle<()> {
    let pages_tx = pages_tx.downgrade();
    tokio::spawn(async move {
        interrupt.triggered().await;
        tracing::warn!("interrupted: no new requests; the pages in flight land and commit");
        if let Some(tx) = pages_tx.upgrade() {
            tx.close();
        }
    })
}

/// Each resource's root table, named once (a resource may name its table itself), and
/// how its rows land.
struct ResourceTables {
    /// The root table of every resource of the source.
    root_tables: HashMap<String, String>,
    dispositions: HashMap<String, WriteDisposition>,
    /// Per selected resource, its root table's identity (what the workers normalize into).
    metas: Arc<BTreeMap<String, Arc<TableMeta>>>,
}

impl ResourceTables {
    fn of(source: &Source, selected: Option<&HashSet<String>>) -> Self {
        let root_tables: HashMap<String, String> = source
            .resources
            .iter()
            .map(|r| (r.name.clone(), normalize_identifier(&r.table_name)))
            .collect();
        let metas = source
            .resources
            .iter()
            .filter(|r| selected.is_none_or(|s| s.contains(&r.name)))
            .map(|r| {
                let table = root_tables[&r.name].clone();
                let meta = TableMeta {
                    name: table.clone(),
                    parent: None,
                    root: table,
                    primary_key: r.primary_key.clone(),
                    write_disposition: r.write_disposition,
                };
                (r.name.clone(), Arc::new(meta))
            })
            .collect();
        ResourceTables {
            dispositions: source
                .resources
                .iter()
                .map(|r| (r.name.clone(), r.write_disposition))
                .collect(),
            root_tables,
            metas: Arc::new(metas),
        }
    }
}

/// The transform workers (`channels.transform_workers`, or one per core), each with a
/// normalizer of its own on the shared registry. If a thread does not start, the pages
/// channel closes, so the fetchers and the workers already started stop.
fn spawn_workers(
    pipeline: &Pipeline,
    pages: &async_channel::Receiver<Page>,
    batches: &async_channel::Sender<PageBatches>,
    tables: &ResourceTables,
    registry: &SchemaRegistry,
    load_id: &str,
) -> Result<Vec<WorkerThread>, PipelineError> {
    let n_workers = match pipeline.channels.transform_workers {
        0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
        n => n,
    };
    (0..n_workers)
        .map(|index| {
            let worker = Worker {
                pages: pages.clone(),
                batches: batches.clone(),
                metas: tables.metas.clone(),
                normalizer: Normalizer::new(pipeline.normalize.clone(), registry.clone()),
                load_id: load_id.to_owned(),
            };
            WorkerThread::spawn(worker, index).map_err(|source| {
                pages.close();
                PipelineError::WorkerThread { index, source }
            })
        })
        .collect()
}

/// A transform worker on a thread of its own (not tokio's blocking pool, which it would
/// hold for the whole run: the object store's file IO and the Delta kernel's log reads at a
/// checkpoint run there, some of them waiting on others, so a program that caps the pool
/// could see a checkpoint wait forever behind the workers).
struct WorkerThread {
    done: tokio::sync::oneshot::Receiver<Result<Discarded, PipelineError>>,
    thread: std::thread::JoinHandle<()>,
}

impl WorkerThread {
    fn spawn(worker: Worker, index: usize) -> std::io::Result<Self> {
        let (tx, done) = tokio::sync::oneshot::channel();
        let thread = std::thread::Builder::new()
            .name(format!("errlake-transform-{index}"))
            .spawn(move || {
                // The receiver is gone only when the run was dropped midway.
                let _ = tx.send(worker.run());
            })?;
        Ok(Self { done, thread })
    }

    /// What the worker returned; its panic, if it panicked.
    async fn join(self) -> Result<Discarded, PipelineError> {
        match self.done.await {
            Ok(result) => result,
            // The sender went with a panic: the thread has unwound, and `join` says why.
            Err(_) => match self.thread.join() {
                Err(panic) => std::panic::resume_unwind(panic),
                Ok(()) => Err(PipelineError::Cancelled),
            },
        }
    }
}

/// A transform worker: takes pages from the shared channel, sends their batches on.
struct Worker {
    pages: async_channel::Receiver<Page>,
    batches: async_channel::Sender<PageBatches>,
    metas: Arc<BTreeMap<String, Arc<TableMeta>>>,
    normalizer: Normalizer,
    load_id: String,
}

impl Worker {
    /// Runs until the pages channel ends or the sink is gone; what the contracts left out.
    fn run(mut self) -> Result<Discarded, PipelineError> {
        while let Ok(page) = self.pages.recv_blocking() {
            let Some(meta) = self.metas.get(&*page.resource) else {
                continue;
            };
            let parent_key = page
                .parent_key
                .as_ref()
                .map(|(k, v)| (k.as_str(), v.as_str()));
            let batches = match self.normalizer.normalize_records(
                meta,
                &self.load_id,
                page.page_seq,
                &page.records,
                parent_key,
            ) {
                Ok(b) => b,
                Err(source) => {
                    // Stop the fetchers: their next send fails and they return.
                    self.pages.close();
                    return Err(PipelineError::Transform {
                        resource: page.resource.to_string(),
                        partition: page.partition.to_string(),
                        page_no: page.page_no,
                        source: Box::new(source),
                    });
                }
            };
            let message = PageBatches {
                key: (page.resource.to_string(), page.partition.to_string()),
                page_idx: page.page_idx,
                page_seq: page.page_seq,
                state_after: page.state_after,
                batches,
            };
            if self.batches.send_blocking(message).is_err() {
                // The sink is gone; it reports why.
                self.pages.close();
                break;
            }
        }
        Ok(self.normalizer.discarded().clone())
    }
}

/// The stages once ended: the source's report, what the workers discarded, the sink with
/// what it committed, and the first error of any of them.
struct Ended {
    source: source_errors::SourceReport,
    discarded: Discarded,
    sink: Sink,
    first_error: Option<PipelineError>,
}

impl Ended {
    async fn join(
        source_task: tokio::task::JoinHandle<source_errors::Result<source_errors::SourceReport>>,
        workers: Vec<WorkerThread>,
        sink_task: tokio::task::JoinHandle<(Sink, Result<(), PipelineError>)>,
    ) -> Result<Ended, PipelineError> {
        let mut first_error: Option<PipelineError> = None;
        let source = match join(source_task).await? {
            Ok(report) => report,
            Err(e) => {
                first_error = Some(PipelineError::Source(e));
                source_errors::SourceReport::default()
            }
        };
        let mut discarded = Discarded::default();
        for w in workers {
            match w.join().await {
                Ok(d) => discarded.add(&d),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        let (sink, sink_result) = join(sink_task).await?;
        if let Err(e) = sink_result {
            first_error.get_or_insert(e);
        }
        Ok(Ended {
            source,
            discarded,
            sink,
            first_error,
        })
    }
}

impl Ended {
    /// The run's last commit (or, after an error, the staged files deleted), the compaction
    /// of the tables it wrote, and the report, stored in the load history whatever the
    /// outcome.
    async fn conclude(
        mut self,
        mut report: RunReport,
        pipeline: &Pipeline,
        lake: &Lake,
        interrupted: bool,
        started: Instant,
    ) -> Result<RunReport, PipelineError> {
        let result = match self.first_error {
            Some(e) => {
                if let Some(w) = self.sink.writer.take() {
                    w.abort().await;
                }
                Err(e)
            }
            None => self.sink.finish(&report.failed, interrupted).await,
        };
        report.commits = std::mem::take(&mut self.sink.commits);
        report.commit_retries = report.commits.iter().map(|c| u64::from(c.retries)).sum();
        // Checkpoints end files early: once the run's data is in, the small files of the
        // tables it wrote are packed into target-sized ones (not after an interrupt: the
        // user asked to stop). Of a split run's shards, shard 0 packs them: N shards
        // compacting the same tables at once would undo each other's work.
        let compacts = self.sink.shard.writes_shared();
        if result.is_ok() && !interrupted && compacts {
            report.compacted = sink_parquet::compact_tables(
                lake,
                &pipeline.sink,
                &report.load_id,
                &report.commits,
            )
            .await
            .into_iter()
            .collect();
        }
        // The fetchers ended before the stages were joined: `report.http` is final.
        report.seconds = started.elapsed().as_secs_f64();
        report.outcome = match (&result, interrupted, report.failed.is_empty()) {
            (Err(_), _, _) => Outcome::Failed,
            (Ok(()), true, _) => Outcome::Interrupted,
            (Ok(()), false, false) => Outcome::PartiallyFailed,
            (Ok(()), false, true) => Outcome::Completed,
        };
        if let Err(e) = &result {
            report.error = Some(error_chain(e));
        }
        store_report(lake, &report).await;
        result.map(|()| report)
    }
}

/// The load history keeps every run's report, failed ones too; failing to store it is
/// logged, never the run's error.
async fn store_report(lake: &Lake, report: &RunReport) {
    match serde_json::to_value(report) {
        Ok(value) => {
            if let Err(e) = lake.put_load_report(&report.load_id, &value).await {
                tracing::warn!(error = %e, "could not store the run report in the load history");
            }
        }
        Err(e) => tracing::warn!(error = %e, "run report is not JSON"),
    }
}

/// An error and its causes on one line, each cause's first line only (the Delta kernel's
/// errors carry a backtrace in their text when `RUST_BACKTRACE` is set), a cause that
/// repeats the one before it left out.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(e);
    while let Some(cause) = next {
        let text = cause.to_string();
        let first = text
            .lines()
            .next()
            .unwrap_or_default()
            .trim_end_matches(':');
        if !first.is_empty() && parts.last().map(String::as_str) != Some(first) {
            parts.push(first.to_owned());
        }
        next = cause.source();
    }
    parts.join(": ")
}

/// The sink side of a run: stages pages, tracks the state they make true, and commits.
struct Sink {
    /// `None` once committed or aborted.
    writer: Option<LoadWriter>,
    /// The run's shard, which its state rows name when the run is split.
    shard: Shard,
    lake: Lake,
    registry: SchemaRegistry,
    load_id: String,
    dispositions: HashMap<String, WriteDisposition>,
    /// Each resource's root table.
    root_tables: HashMap<String, String>,
    /// The pipeline's `[sink]` settings (the state table's writer takes them too).
    sink_config: ParquetSinkConfig,
    progress: Progress,
    /// The state as committed (loaded at the start, updated at each commit).
    committed: HashMap<StateKey, StoredState>,
    commits: Vec<TableCommit>,
    /// Rows normalized per table over the whole run.
    rows: BTreeMap<String, u64>,
    checkpoints: u32,
    config: CheckpointConfig,
    pages_since: u64,
    since: Instant,
}

impl Sink {
    fn new(
        pipeline: &Pipeline,
        lake: &Lake,
        registry: &SchemaRegistry,
        load_id: &str,
        tables: ResourceTables,
        stored: HashMap<StateKey, StoredState>,
    ) -> Self {
        let roots: Vec<Arc<TableMeta>> = tables.metas.values().cloned().collect();
        Sink {
            writer: Some(
                LoadWriter::new(
                    lake.clone(),
                    pipeline.sink.clone(),
                    load_id.to_owned(),
                    roots,
                )
                .declaring_null_only_columns_of(registry.clone()),
            ),
            shard: Shard::whole(),
            lake: lake.clone(),
            registry: registry.clone(),
            load_id: load_id.to_owned(),
            dispositions: tables.dispositions,
            root_tables: tables.root_tables,
            sink_config: pipeline.sink.clone(),
            progress: Progress::default(),
            committed: stored,
            commits: Vec::new(),
            rows: BTreeMap::new(),
            checkpoints: 0,
            config: pipeline.checkpoint.clone(),
            pages_since: 0,
            since: Instant::now(),
        }
    }

    /// Lands every message until the batches channel ends, or the first failure (which
    /// closes the channel, so the workers stop).
    async fn land_all(
        mut self,
        batches: async_channel::Receiver<PageBatches>,
    ) -> (Self, Result<(), PipelineError>) {
        while let Ok(msg) = batches.recv().await {
            if let Err(e) = self.land(msg).await {
                batches.close();
                return (self, Err(e));
            }
        }
        (self, Ok(()))
    }

    async fn land(&mut self, msg: PageBatches) -> Result<(), PipelineError> {
        let writer = self
            .writer
            .as_mut()
            .ok_or_else(|| PipelineError::Cancelled)?;
        for tb in &msg.batches {
            *self.rows.entry(tb.table.name.clone()).or_default() += tb.batch.num_rows() as u64;
        }
        writer.write(msg.page_seq, msg.batches).await?;
        self.progress.landed(msg.key, msg.page_idx, msg.state_after);
        self.pages_since += 1;
        if self.pages_since >= self.config.pages
            || self.since.elapsed() >= Duration::from_secs(self.config.seconds)
        {
            self.checkpoint().await?;
        }
        Ok(())
    }

    /// Commits the data tables (all but replaced ones), then the state of the pages landed.
    async fn checkpoint(&mut self) -> Result<(), PipelineError> {
        let writer = self
            .writer
            .as_mut()
            .ok_or_else(|| PipelineError::Cancelled)?;
        let before = self.commits.len();
        let started = Instant::now();
        writer.checkpoint_into(&mut self.commits).await?;
        self.checkpoints += 1;
        tracing::info!(
            checkpoint = self.checkpoints,
            tables = self.commits.len() - before,
            seconds = started.elapsed().as_secs_f64(),
            "checkpoint committed"
        );
        let changes = self.state_changes(false, &[]);
        self.commit_state(changes).await?;
        self.pages_since = 0;
        self.since = Instant::now();
        Ok(())
    }

    /// The last commit: everything staged, then the state; the roots of replaced resources
    /// whose data came only in part (a failed partition, an interrupt) are left as they were.
    async fn finish(
        &mut self,
        failed: &[FailedPartition],
        interrupted: bool,
    ) -> Result<(), PipelineError> {
        let mut writer = self.writer.take().ok_or_else(|| PipelineError::Cancelled)?;
        let partial: HashSet<&str> = self
            .dispositions
            .iter()
            .filter(|(name, d)| {
                **d == WriteDisposition::Replace
                    && (interrupted || failed.iter().any(|f| f.resource == **name))
            })
            .map(|(name, _)| name.as_str())
            .collect();
        for name in &partial {
            tracing::warn!(resource = %name, "replace skipped: only part of its data came");
            if let Some(table) = self.root_tables.get(*name) {
                writer.discard_root(table).await;
            }
        }
        writer.commit_into(&mut self.commits).await?;
        let partial: Vec<String> = partial.into_iter().map(str::to_owned).collect();
        let mut changes = self.state_changes(true, &partial);
        for f in failed {
            let key = (f.resource.clone(), f.partition.clone());
            let mut row = changes
                .remove(&key)
                .or_else(|| self.committed.get(&key).cloned())
                .unwrap_or_default();
            row.error = Some(f.error.clone());
            row.shard = self.shard_name();
            changes.insert(key, row);
        }
        self.commit_state(changes).await
    }

    /// The shard's name (`1/4`) for the state rows of a split run; `None` otherwise.
    fn shard_name(&self) -> Option<String> {
        self.shard.is_split().then(|| self.shard.to_string())
    }

    /// The pagings whose state differs from the committed one. Replaced resources never
    /// store a resume point (a replace needs all its pages in one run), and get their state
    /// only at the end of the run.
    fn state_changes(&self, last: bool, skip: &[String]) -> BTreeMap<StateKey, StoredState> {
        let mut changes = BTreeMap::new();
        for (key, state) in self.progress.states() {
            let replace = self.dispositions.get(&key.0) == Some(&WriteDisposition::Replace);
            if skip.contains(&key.0) || (replace && (!last || state.is_resumable())) {
                continue;
            }
            let before = self.committed.get(key);
            if before.is_some_and(|b| {
                b.state == *state && b.error.is_none() && b.shard == self.shard_name()
            }) {
                continue;
            }
            changes.insert(
                key.clone(),
                StoredState {
                    state: state.clone(),
                    shard: self.shard_name(),
                    ..StoredState::default()
                },
            );
        }
        changes
    }

    async fn commit_state(
        &mut self,
        changes: BTreeMap<StateKey, StoredState>,
    ) -> Result<(), PipelineError> {
        let commits = commit_state(
            (&self.lake, &self.sink_config),
            &self.registry,
            &self.load_id,
            &changes,
        )
        .await?;
        self.commits.extend(commits);
        self.committed.extend(changes);
        Ok(())
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn source(rate_limit: serde_json::Value) -> Source {
        let config = serde_json::json!({
            "client": {"base_url": "https://api.example.com", "rate_limit": rate_limit},
            "resources": [{"name": "organizations", "endpoint": {"path": "/user/organizations"}}],
        });
        let secrets = source_errors::Secrets::from_map([]);
        Source::from_value(config, std::path::Path::new("test.json"), &secrets).unwrap()
    }

    fn budget(source: &Source, shard: Shard, own: Option<u32>) -> Option<u32> {
        let options = RunOptions {
            shard,
            requests_per_minute: own,
            ..RunOptions::default()
        };
        client_settings(source, &options)
            .rate_limit
            .requests_per_minute
    }

    /// A budget belongs to a token: shards that share one share it out, unless a run sets
    /// its own (a shard with a token of its own).
    #[test]
    fn a_split_run_takes_its_share_of_the_request_budget() {
        let limited = source(serde_json::json!({"requests_per_minute": 30}));
        assert_eq!(budget(&limited, Shard::whole(), None), Some(30));
        assert_eq!(budget(&limited, Shard::new(1, 4).unwrap(), None), Some(7));
        assert_eq!(budget(&limited, Shard::new(1, 64).unwrap(), None), Some(1));
        assert_eq!(
            budget(&limited, Shard::new(1, 4).unwrap(), Some(30)),
            Some(30)
        );
        let unlimited = source(serde_json::json!({}));
        assert_eq!(budget(&unlimited, Shard::new(0, 4).unwrap(), None), None);
    }
}
