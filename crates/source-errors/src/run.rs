//! The fan-out: one task per (resource, partition), children spawned as their parents' pages
//! stream in, pages sent to a bounded channel.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use json_tape::Records;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use url::Url;

use http_core::Client;
use paginate::{FetchedPage, PageLoop};

use crate::config::{Resource, Source};
use crate::incremental::{
    Incremental, PartitionState, RowOrder, compare_cursors, cursor_of, max_cursor,
};
use crate::shard::Shard;
use crate::{Result, SourceError};

/// The partition keys of a paging and their values (`project_id = "5a2f..."`); empty for a
/// root resource.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Partition(pub BTreeMap<String, String>);

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|(k, v)| format!("{k}={v}")).collect();
        f.write_str(&parts.join(","))
    }
}

/// One page of one resource: the message on the pages channel.
#[derive(Debug, Clone)]
pub struct Page {
    /// The resource.
    pub resource: Arc<str>,
    /// The partition it was fetched for.
    pub partition: Arc<Partition>,
    /// The page's position within this run's part of its paging, from 0.
    pub page_idx: usize,
    /// The page's number in its paging, from 1, counting the pages earlier runs landed of a
    /// resumed paging: the number errors show.
    pub page_no: usize,
    /// A number unique to the page within the run, increasing in fetch order within a paging:
    /// the later page of two wins when both hold the same primary key.
    pub page_seq: u64,
    /// The records, parsed once, as the data selector found them, in the page's body.
    pub records: Records,
    /// For a child resource, the parent's key as a column each record gets unless it has
    /// that key: (`_<parent>_<field>`, value), dlt's `include_from_parent` naming.
    pub parent_key: Option<(String, String)>,
    /// The partition's state once this page and every earlier page of its paging have
    /// landed: where the paging goes on, or, after its last page, the next run's cursor.
    /// `None` when the run keeps no state for the partition (a backfill window).
    pub state_after: Option<PartitionState>,
}

/// A (resource, partition) as the state names it: the resource and the partition's
/// `key=value,...` text (empty for a root resource).
pub type StateKey = (String, String);

/// Options of one source run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// The resources whose pages are sent; their ancestors are fetched too, for partitions,
    /// but not sent. `None`: all.
    pub selected: Option<HashSet<String>>,
    /// Stop each paging after this many pages (a stopped paging resumes there next run).
    pub max_pages: Option<usize>,
    /// The state the earlier runs left, per (resource, partition).
    pub state: Arc<HashMap<StateKey, PartitionState>>,
    /// Resources whose state is ignored: they start at the initial value and first page.
    pub full_refresh: HashSet<String>,
    /// A paging that fails (after the client's retries) fails its partition only: it is
    /// listed in the report and the other pagings go on.
    pub keep_going: bool,
    /// Where the counters go as pages come in, for a progress display to read; a run
    /// without one keeps them to itself.
    pub live: Option<LiveStats>,
    /// The part of the pipeline this run does. Split (`--shard 1/4`), a leaf resource's
    /// pagings (those no selected resource fans out from) are fetched only by the shard that
    /// owns their partition; the parents are fetched in full by every shard, ignoring their
    /// stored state so that every shard finds every partition, and sent by shard 0 alone.
    pub shard: Shard,
}

/// The per-resource counters of a running source, shared with whoever displays them.
pub type LiveStats = Arc<Mutex<BTreeMap<String, ResourceStats>>>;

/// What a source run did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SourceReport {
    /// Per resource.
    pub resources: BTreeMap<String, ResourceStats>,
    /// Pagings that failed under `keep_going`.
    pub failed: Vec<FailedPartition>,
}

/// A paging that failed under `keep_going`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FailedPartition {
    /// The resource.
    pub resource: String,
    /// The partition (`key=value,...`; empty for a root resource).
    pub partition: String,
    /// Why, as the error says it (credentials redacted).
    pub error: String,
}

/// What one paging did.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct PartitionStats {
    /// Pages fetched.
    pub pages: u64,
    /// Records fetched.
    pub records: u64,
    /// Body bytes.
    pub bytes: u64,
    /// Retries.
    pub retries: u64,
    /// Seconds from its first request to its end.
    pub seconds: f64,
    /// Whether it went on from an earlier run's unfinished paging.
    pub resumed: bool,
    /// The start value sent (incremental resources).
    pub cursor_start: Option<String>,
    /// The latest cursor value seen.
    pub cursor_end: Option<String>,
    /// Why it failed (under `keep_going`).
    pub error: Option<String>,
}

/// What a source run fetched, per resource.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct ResourceStats {
    /// Pagings run (one per partition).
    pub partitions: u64,
    /// Pages fetched.
    pub pages: u64,
    /// Records fetched.
    pub records: u64,
    /// Body bytes.
    pub bytes: u64,
    /// Retries.
    pub retries: u64,
    /// Per partition (`key=value,...`; empty for a root resource).
    pub by_partition: BTreeMap<String, PartitionStats>,
}

/// What one fetch task does.
struct Job {
    resource: Arc<Resource>,
    partition: Arc<Partition>,
}

/// Shared by the fetch tasks of a run.
struct Context {
    source: Arc<Source>,
    resources: HashMap<String, Arc<Resource>>,
    client: Client,
    pages_tx: async_channel::Sender<Page>,
    /// Requests in flight; a task holds a permit only while it fetches one page, so children
    /// start while their parents still page.
    permits: Semaphore,
    /// Requests in flight per resource, for resources with a `concurrency` of their own.
    resource_permits: HashMap<String, Semaphore>,
    /// Child jobs found by a task, spawned by the coordinator; every send happens before the
    /// sending task ends, so an empty task set with an empty queue means the run is done.
    spawn_tx: mpsc::UnboundedSender<Job>,
    page_seq: AtomicU64,
    /// Partition values already scheduled, per child resource (a parent row seen twice, as
    /// rows move between pages, must not fetch its children twice).
    scheduled: Mutex<HashMap<String, HashSet<String>>>,
    stats: LiveStats,
    options: RunOptions,
}

/// Fetches every page of every resource and partition and sends them to `pages_tx`.
///
/// Returns when all pagings are done, or at the first error (the other tasks are cancelled);
/// if the receiver is gone, returns quietly with what was fetched. A panic in a task is
/// re-raised.
pub async fn run(
    source: Arc<Source>,
    client: Client,
    pages_tx: async_channel::Sender<Page>,
    options: RunOptions,
) -> Result<SourceReport> {
    let (spawn_tx, mut spawn_rx) = mpsc::unbounded_channel();
    let resources: HashMap<String, Arc<Resource>> = source
        .resources
        .iter()
        .map(|r| (r.name.clone(), Arc::new(r.clone())))
        .collect();
    let needed = needed_resources(&source, options.selected.as_ref());
    let ctx = Arc::new(Context {
        permits: Semaphore::new(source.concurrency),
        resource_permits: source
            .resources
            .iter()
            .filter_map(|r| r.concurrency.map(|n| (r.name.clone(), Semaphore::new(n))))
            .collect(),
        source: source.clone(),
        resources,
        client,
        pages_tx,
        spawn_tx,
        page_seq: AtomicU64::new(0),
        scheduled: Mutex::default(),
        stats: options.live.clone().unwrap_or_default(),
        options,
    });

    let mut failed = Vec::new();
    let mut tasks = JoinSet::new();
    for r in source
        .resources
        .iter()
        .filter(|r| r.partition_keys.is_empty() && needed.contains(&r.name))
    {
        let job = Job {
            resource: ctx.resources[&r.name].clone(),
            partition: Arc::default(),
        };
        tasks.spawn(fetch_paging(ctx.clone(), job, needed.clone()));
    }
    loop {
        while let Ok(job) = spawn_rx.try_recv() {
            tasks.spawn(fetch_paging(ctx.clone(), job, needed.clone()));
        }
        let Some(joined) = tasks.join_next().await else {
            // Every task has ended; a last look for jobs sent just before the end.
            match spawn_rx.try_recv() {
                Ok(job) => {
                    tasks.spawn(fetch_paging(ctx.clone(), job, needed.clone()));
                    continue;
                }
                Err(_) => break,
            }
        };
        match joined {
            Ok((_, Ok(()))) => {}
            Ok(((resource, partition), Err(e)))
                if ctx.options.keep_going && !matches!(e, SourceError::Cancelled) =>
            {
                tracing::error!(%resource, %partition, error = %e, "paging failed; the other pagings go on (--keep-going)");
                let error = e.to_string();
                ctx.stats
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry(resource.clone())
                    .or_default()
                    .by_partition
                    .entry(partition.clone())
                    .or_default()
                    .error = Some(error.clone());
                failed.push(FailedPartition {
                    resource,
                    partition,
                    error,
                });
            }
            Ok((_, Err(e))) => {
                tasks.shutdown().await;
                return Err(e);
            }
            Err(join_error) => {
                tasks.shutdown().await;
                if join_error.is_panic() {
                    std::panic::resume_unwind(join_error.into_panic());
                }
                return Err(SourceError::Cancelled);
            }
        }
    }
    let resources = ctx.stats.lock().unwrap_or_else(|p| p.into_inner()).clone();
    Ok(SourceReport { resources, failed })
}

/// The resources a split run divides between its shards: those it fetches whose pages no
/// other fetched resource fans out from (the leaves). Every shard fetches the others, the
/// parents, to find the partitions.
pub fn split_resources<'s>(
    source: &'s Source,
    selected: Option<&HashSet<String>>,
) -> Vec<&'s Resource> {
    let needed = needed_resources(source, selected);
    source
        .resources
        .iter()
        .filter(|r| {
            needed.contains(&r.name) && !source.children(&r.name).any(|c| needed.contains(&c.name))
        })
        .collect()
}

/// The selected resources and all their ancestors.
fn needed_resources(source: &Source, selected: Option<&HashSet<String>>) -> Arc<HashSet<String>> {
    let mut needed = HashSet::new();
    for r in &source.resources {
        if selected.is_none_or(|s| s.contains(&r.name)) {
            needed.insert(r.name.clone());
            for p in &r.partition_keys {
                needed.insert(p.resource.clone());
            }
        }
    }
    // Ancestors of ancestors.
    loop {
        let before = needed.len();
        for r in &source.resources {
            if needed.contains(&r.name) {
                for p in &r.partition_keys {
                    needed.insert(p.resource.clone());
                }
            }
        }
        if needed.len() == before {
            break;
        }
    }
    Arc::new(needed)
}

async fn fetch_paging(
    ctx: Arc<Context>,
    job: Job,
    needed: Arc<HashSet<String>>,
) -> (StateKey, Result<()>) {
    let key: StateKey = (job.resource.name.clone(), job.partition.to_string());
    let result = fetch_paging_inner(&ctx, &job, &needed, &key).await;
    (key, result)
}

async fn fetch_paging_inner(
    ctx: &Arc<Context>,
    job: &Job,
    needed: &HashSet<String>,
    key: &StateKey,
) -> Result<()> {
    let started = std::time::Instant::now();
    let resource = &job.resource;
    let children = ctx.children(resource, needed);
    let is_parent = !children.is_empty();
    let shard = ctx.options.shard;
    if !ctx.fetches(resource, &job.partition, is_parent) {
        return Ok(());
    }
    let label = paging_label(resource, &job.partition);
    let start = PagingStart::of(ctx, job, key, &label, shard.is_split() && is_parent)?;
    let incremental = resource.incremental.as_ref();
    let mut latest = start.latest.clone();
    let mut pages = PageLoop::new(
        ctx.client.clone(),
        start.url.clone(),
        resource.strategy.clone(),
        resource.data_selector.clone(),
        label,
        ctx.options.max_pages,
    )
    .resuming_after(start.pages_before);
    let send = ctx
        .options
        .selected
        .as_ref()
        .is_none_or(|s| s.contains(&resource.name))
        && (!is_parent || shard.writes_shared());
    let resource_name: Arc<str> = Arc::from(resource.name.as_str());
    ctx.record_stats(key, &mut |r, p| {
        r.partitions += 1;
        p.resumed = start.resumed;
        p.cursor_start = start.start_value.clone();
    });

    loop {
        if ctx.pages_tx.is_closed() {
            // Stopped (an interrupt, or downstream failed): no request whose page has nowhere
            // to go.
            return Ok(());
        }
        let Some(fetched) = ctx.next_page(resource, &mut pages).await? else {
            return Ok(());
        };
        let page_seq = ctx.page_seq.fetch_add(1, Ordering::Relaxed);
        let past_window = incremental.is_some_and(|i| {
            scan_cursors(
                i,
                &fetched.records,
                start.start_value.as_deref(),
                &mut latest,
            )
        });
        let next_url = if past_window {
            None
        } else {
            pages.next_url().map(|u| ctx.client.without_credentials(u))
        };
        let state_after = (!start.backfill).then(|| {
            start.state_after(
                incremental.is_some(),
                next_url.as_ref(),
                &latest,
                fetched.page_no,
            )
        });
        ctx.record_page(key, &fetched, started, &latest);
        for child in &children {
            schedule_children(ctx, child, &job.partition, &fetched.records);
        }
        if send {
            let page = Page {
                resource: resource_name.clone(),
                partition: job.partition.clone(),
                page_idx: fetched.page_idx,
                page_no: fetched.page_no,
                page_seq,
                records: fetched.records,
                parent_key: parent_key(resource, &job.partition),
                state_after,
            };
            if ctx.pages_tx.send(page).await.is_err() {
                // Downstream is gone (it failed or stopped); nothing more to do here.
                return Ok(());
            }
        }
        if past_window {
            tracing::debug!(resource = %resource.name, partition = %job.partition, "rows past the incremental window; paging stops");
            return Ok(());
        }
    }
}

impl Context {
    /// Whether this run fetches a paging: a parent's, every shard (each needs every
    /// partition); a leaf's, only the shard that owns its partition.
    fn fetches(&self, resource: &Resource, partition: &Partition, is_parent: bool) -> bool {
        let shard = self.options.shard;
        !shard.is_split() || is_parent || shard.owns(&paging_key(resource, partition))
    }

    /// The next page of a paging, fetched within the run's and the resource's limits on
    /// requests in flight; `None` after the last.
    async fn next_page(
        &self,
        resource: &Resource,
        pages: &mut PageLoop,
    ) -> Result<Option<FetchedPage>> {
        let _resource_permit = match self.resource_permits.get(&resource.name) {
            Some(s) => Some(s.acquire().await.map_err(|_| SourceError::Cancelled)?),
            None => None,
        };
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| SourceError::Cancelled)?;
        Ok(pages.next_page().await?)
    }

    /// The child resources this run needs that page through a resource's rows.
    fn children(&self, resource: &Resource, needed: &HashSet<String>) -> Vec<Arc<Resource>> {
        self.source
            .children(&resource.name)
            .filter(|c| needed.contains(&c.name))
            .map(|c| self.resources[&c.name].clone())
            .collect()
    }

    /// Counts a fetched page for its resource and partition.
    fn record_page(
        &self,
        key: &StateKey,
        fetched: &FetchedPage,
        started: std::time::Instant,
        latest: &Option<String>,
    ) {
        let n_records = fetched.records.len() as u64;
        self.record_stats(key, &mut |r, p| {
            r.pages += 1;
            r.records += n_records;
            r.bytes += fetched.n_bytes as u64;
            r.retries += u64::from(fetched.n_retries);
            p.pages += 1;
            p.records += n_records;
            p.bytes += fetched.n_bytes as u64;
            p.retries += u64::from(fetched.n_retries);
            p.seconds = started.elapsed().as_secs_f64();
            p.cursor_end = latest.clone();
        });
    }

    /// Updates the counters of a paging's resource and partition.
    fn record_stats(
        &self,
        key: &StateKey,
        f: &mut dyn FnMut(&mut ResourceStats, &mut PartitionStats),
    ) {
        let mut stats = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        let r = stats.entry(key.0.clone()).or_default();
        let mut p = r.by_partition.remove(&key.1).unwrap_or_default();
        f(r, &mut p);
        r.by_partition.insert(key.1.clone(), p);
    }
}

/// Where a paging starts, and what it goes on from: an unfinished paging where it stopped;
/// otherwise the first page, from the stored cursor (or the initial value) when the resource
/// has one.
struct PagingStart {
    url: Url,
    /// The stored state the paging goes on from (none under a backfill window or a full
    /// refresh).
    prior: Option<PartitionState>,
    /// The cursor value the first request asks from.
    start_value: Option<String>,
    /// A backfill window (`end_value`): the run leaves the stored state alone.
    backfill: bool,
    /// Whether the paging goes on from a stored resume URL.
    resumed: bool,
    /// The latest cursor value of the pages an earlier run landed of a resumed paging.
    latest: Option<String>,
    /// How many pages of a resumed paging earlier runs landed.
    pages_before: usize,
}

impl PagingStart {
    /// Where a paging starts: its stored state, unless `fresh` (or a backfill, or a full
    /// refresh) says to start over.
    fn of(
        ctx: &Context,
        job: &Job,
        key: &StateKey,
        label: &str,
        fresh: bool,
    ) -> Result<PagingStart> {
        let resource = &job.resource;
        let incremental = resource.incremental.as_ref();
        let backfill = incremental.is_some_and(|i| i.end_value.is_some());
        let prior = ctx
            .options
            .state
            .get(key)
            .filter(|_| !fresh && !backfill && !ctx.options.full_refresh.contains(&resource.name))
            .cloned();
        let start_value = incremental.and_then(|i| {
            prior
                .as_ref()
                .and_then(|p| p.cursor.clone())
                .or_else(|| i.initial_value.clone())
        });
        let resume = prior
            .as_ref()
            .and_then(|p| p.resume_url.as_deref())
            .and_then(|u| {
                Url::parse(u)
                    .inspect_err(|e| tracing::warn!(paging = %label, error = %e, "stored resume URL is not a URL; starting at the first page"))
                    .ok()
            })
            // A resume point on a host this API does not use any more (the base URL
            // changed) is not followed: the paging starts over.
            .filter(|u| {
                let ours = ctx.client.is_trusted(u);
                if !ours {
                    tracing::warn!(paging = %label, "stored resume URL is not on base_url's host or a trusted host; starting at the first page");
                }
                ours
            });
        let resumed = resume.is_some();
        let (latest, pages_before) = match (resumed, &prior) {
            (true, Some(p)) => (
                p.resume_cursor.clone(),
                p.resume_page
                    .and_then(|n| usize::try_from(n).ok())
                    .unwrap_or(0),
            ),
            _ => (None, 0),
        };
        let url = match resume {
            Some(url) => {
                tracing::info!(paging = %label, "resuming an unfinished paging");
                url
            }
            None => {
                let end_value = incremental.and_then(|i| i.end_value.as_deref());
                let mut url = ctx.source.first_url_within(
                    resource,
                    &job.partition.0,
                    start_value.as_deref(),
                    end_value,
                )?;
                if let Some(i) = incremental {
                    let mut query = url.query_pairs_mut();
                    if let (Some(p), Some(v)) = (&i.start_param, &start_value) {
                        query.append_pair(p, v);
                    }
                    if let (Some(p), Some(v)) = (&i.end_param, &i.end_value) {
                        query.append_pair(p, v);
                    }
                }
                url
            }
        };
        Ok(PagingStart {
            url,
            prior,
            start_value,
            backfill,
            resumed,
            latest,
            pages_before,
        })
    }

    /// The partition's state once a page has landed: where an unfinished paging goes on
    /// (the stored cursor stays until the paging ends), or the next run's cursor.
    fn state_after(
        &self,
        incremental: bool,
        next_url: Option<&Url>,
        latest: &Option<String>,
        page_no: usize,
    ) -> PartitionState {
        match next_url {
            Some(next) => PartitionState {
                cursor: self.prior.as_ref().and_then(|p| p.cursor.clone()),
                resume_url: Some(next.to_string()),
                resume_cursor: latest.clone(),
                resume_page: Some(page_no as u64),
            },
            None => PartitionState {
                cursor: incremental
                    .then(|| max_cursor(self.start_value.clone(), latest.as_deref()))
                    .flatten(),
                resume_url: None,
                resume_cursor: None,
                resume_page: None,
            },
        }
    }
}

/// Moves `latest` to the page's latest cursor value, and tells whether the page already
/// reaches past the window, so that rows in cursor order let the paging stop there.
fn scan_cursors(
    incremental: &Incremental,
    records: &Records,
    start_value: Option<&str>,
    latest: &mut Option<String>,
) -> bool {
    let mut past_window = false;
    for record in records.iter() {
        let Some(value) = cursor_of(record, &incremental.cursor_path) else {
            continue;
        };
        *latest = max_cursor(latest.take(), Some(&value));
        past_window |= match incremental.row_order {
            Some(RowOrder::Desc) => start_value.is_some_and(|s| compare_cursors(&value, s).is_lt()),
            Some(RowOrder::Asc) => incremental
                .end_value
                .as_deref()
                .is_some_and(|e| compare_cursors(&value, e).is_ge()),
            None => false,
        };
    }
    past_window
}

/// A child resource's parent key, so that child rows join to their parent (dlt's
/// `include_from_parent` naming: `_<parent>_<field>`).
fn parent_key(resource: &Resource, partition: &Partition) -> Option<(String, String)> {
    let parent = resource.parent()?;
    let value = partition.0.get(&parent.key)?;
    Some((
        format!("_{}_{}", parent.resource, parent.field),
        value.clone(),
    ))
}

fn schedule_children(
    ctx: &Context,
    child: &Arc<Resource>,
    partition: &Partition,
    records: &Records,
) {
    let Some(parent) = child.parent() else { return };
    for record in records.iter() {
        let value = match parent.value_in(record) {
            Some(text) => text.into_owned(),
            None => {
                tracing::warn!(resource = %child.name, field = %parent.field, "parent record without a usable key; its children are skipped");
                continue;
            }
        };
        let mut child_partition = Partition(partition.0.clone());
        child_partition.0.insert(parent.key.clone(), value);
        // Deduplicated on the keys the child's path uses: the same project reached twice is
        // fetched once.
        let key = paging_key(child, &child_partition);
        let fresh = ctx
            .scheduled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(child.name.clone())
            .or_default()
            .insert(key);
        if fresh {
            // The coordinator outlives every task, so the receiver is there.
            let _ = ctx.spawn_tx.send(Job {
                resource: child.clone(),
                partition: Arc::new(child_partition),
            });
        }
    }
}

/// A paging as logs and errors name it: `events[project_id=...]`, or the resource alone.
fn paging_label(resource: &Resource, partition: &Partition) -> String {
    if partition.0.is_empty() {
        resource.name.clone()
    } else {
        format!("{}[{partition}]", resource.name)
    }
}

/// What tells a resource's pagings apart, and what their shard is chosen by: the values of
/// the partition keys its path uses, joined by U+001F (the same project reached twice is one
/// paging; `errors` and `events` of one project go to the same shard); for a root resource,
/// its name.
fn paging_key(resource: &Resource, partition: &Partition) -> String {
    if resource.partition_keys.is_empty() {
        return resource.name.clone();
    }
    let values: Vec<&str> = resource
        .partition_keys
        .iter()
        .filter_map(|k| partition.0.get(&k.key).map(String::as_str))
        .collect();
    values.join("\u{1f}")
}
