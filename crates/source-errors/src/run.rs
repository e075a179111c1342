//! The fan-out: one task per (resource, partition), children spawned as their parents' pages
//! stream in, pages sent to a bounded channel.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;

use http_core::Client;
use paginate::PageLoop;

use crate::config::{Resource, Source};
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
    /// The page's position within its paging, from 0.
    pub page_idx: usize,
    /// A number unique to the page within the run, increasing in fetch order within a paging:
    /// the later page of two wins when both hold the same primary key.
    pub page_seq: u64,
    /// The records, parsed once, as the data selector found them (plus the parent key column
    /// of a child resource, `_<parent>_<field>`).
    pub records: Vec<Value>,
}

/// Options of one source run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The resources whose pages are sent; their ancestors are fetched too, for partitions,
    /// but not sent. `None`: all.
    pub selected: Option<HashSet<String>>,
    /// Stop each paging after this many pages.
    pub max_pages: Option<usize>,
}

/// What a source run fetched, per resource.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
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
    stats: Mutex<BTreeMap<String, ResourceStats>>,
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
) -> Result<BTreeMap<String, ResourceStats>> {
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
        stats: Mutex::default(),
        options,
    });

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
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
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
    let stats = ctx.stats.lock().unwrap_or_else(|p| p.into_inner()).clone();
    Ok(stats)
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

async fn fetch_paging(ctx: Arc<Context>, job: Job, needed: Arc<HashSet<String>>) -> Result<()> {
    let resource = &job.resource;
    let label = if job.partition.0.is_empty() {
        resource.name.clone()
    } else {
        format!("{}[{}]", resource.name, job.partition)
    };
    let url = ctx.source.first_url(resource, &job.partition.0)?;
    let mut pages = PageLoop::new(
        ctx.client.clone(),
        url,
        resource.strategy.clone(),
        resource.data_selector.clone(),
        label,
        ctx.options.max_pages,
    );
    let children: Vec<Arc<Resource>> = ctx
        .source
        .children(&resource.name)
        .filter(|c| needed.contains(&c.name))
        .map(|c| ctx.resources[&c.name].clone())
        .collect();
    let send = ctx
        .options
        .selected
        .as_ref()
        .is_none_or(|s| s.contains(&resource.name));
    let resource_name: Arc<str> = Arc::from(resource.name.as_str());
    ctx.stats
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(resource.name.clone())
        .or_default()
        .partitions += 1;

    loop {
        let fetched = {
            let _resource_permit = match ctx.resource_permits.get(&resource.name) {
                Some(s) => Some(s.acquire().await.map_err(|_| SourceError::Cancelled)?),
                None => None,
            };
            let _permit = ctx
                .permits
                .acquire()
                .await
                .map_err(|_| SourceError::Cancelled)?;
            pages.next_page().await?
        };
        let Some(fetched) = fetched else {
            return Ok(());
        };
        let page_seq = ctx.page_seq.fetch_add(1, Ordering::Relaxed);
        {
            let mut stats = ctx.stats.lock().unwrap_or_else(|p| p.into_inner());
            let s = stats.entry(resource.name.clone()).or_default();
            s.pages += 1;
            s.records += fetched.records.len() as u64;
            s.bytes += fetched.n_bytes as u64;
            s.retries += u64::from(fetched.n_retries);
        }
        for child in &children {
            schedule_children(&ctx, child, &job.partition, &fetched.records);
        }
        if !send {
            continue;
        }
        let mut records = fetched.records;
        if let Some(parent) = resource.parent() {
            // The parent's key, so that child rows join to their parent (dlt's
            // include_from_parent naming).
            let column = format!("_{}_{}", parent.resource, parent.field);
            if let Some(value) = job.partition.0.get(&parent.key) {
                for record in &mut records {
                    if let Value::Object(map) = record {
                        map.entry(column.clone())
                            .or_insert_with(|| Value::String(value.clone()));
                    }
                }
            }
        }
        let page = Page {
            resource: resource_name.clone(),
            partition: job.partition.clone(),
            page_idx: fetched.page_idx,
            page_seq,
            records,
        };
        if ctx.pages_tx.send(page).await.is_err() {
            // Downstream is gone (it failed or stopped); nothing more to do here.
            return Ok(());
        }
    }
}

fn schedule_children(
    ctx: &Context,
    child: &Arc<Resource>,
    partition: &Partition,
    records: &[Value],
) {
    let Some(parent) = child.parent() else { return };
    for record in records {
        let value = match record.get(&parent.field) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => {
                tracing::warn!(resource = %child.name, field = %parent.field, "parent record without a usable key; its children are skipped");
                continue;
            }
        };
        let mut child_partition = partition.0.clone();
        child_partition.insert(parent.key.clone(), value.clone());
        // Deduplicated on the keys the child's path uses: the same project reached twice is
        // fetched once.
        let key: Vec<&str> = child
            .partition_keys
            .iter()
            .filter_map(|k| child_partition.get(&k.key).map(String::as_str))
            .collect();
        let key = key.join("\u{1f}");
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
                partition: Arc::new(Partition(child_partition)),
            });
        }
    }
}
