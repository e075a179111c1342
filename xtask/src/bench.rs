//! `cargo xtask bench`: the figures that speed and memory claims rest on, printed, never
//! asserted. Ratios are measured within one run, since the machines are shared and noisy.
//!
//! - normalization: the embedded mock's events as page bodies, parsed into a tape and
//!   normalized into Arrow batches, on one core (`serde_json::Value` trees as the baseline);
//! - pipeline: `cargo xtask run pipelines/errors.toml` in a child process against the mock
//!   served by another (`xtask mock`), per size, for events per second and the run's peak
//!   resident memory;
//! - shards (`bench_shards`, only when named): 1, 2 and 4 shards of one pipeline at once
//!   into one lake, for their commit retries and bytes rewritten;
//! - merge: an events table of N rows (built by 10 loads), then 1% of N rows landed four
//!   ways: appended, merged as new ids, merged as changes to the newest rows, merged as
//!   changes spread over the whole table; seconds, bytes rewritten, peak memory of each;
//! - encoding: the mock's events normalized into their tables, then written as Parquet
//!   with each candidate setting (zstd level, dictionary choice), on one core: seconds,
//!   bytes and the memory the writers hold, per setting.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use transform::{NormalizeConfig, Normalizer, SchemaRegistry, TableMeta, WriteDisposition};

/// Arguments of `bench`.
#[derive(Debug, clap::Args)]
pub(crate) struct BenchArgs {
    /// Events normalized in the normalization bench (about 4 KB of JSON each).
    #[arg(long, default_value_t = 20_000)]
    normalize_events: usize,
    /// Events landed by each pipeline run; the pipeline bench runs each size once a round.
    #[arg(long, value_delimiter = ',', default_values_t = [50_000usize, 200_000])]
    pipeline_events: Vec<usize>,
    /// Rounds of the whole-run benches (pipeline, against another tool): every size once a
    /// round, the rounds one after the other, so that a change in the shared host's speed
    /// falls on every size alike; the median of each figure over the rounds is compared.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Repetitions of the normalization bench (the median is printed).
    #[arg(long, default_value_t = 5)]
    repeat: usize,
    /// Rows of the events table in the merge bench, one bench per size.
    #[arg(long, value_delimiter = ',', default_values_t = [250_000usize, 1_000_000])]
    merge_rows: Vec<usize>,
    /// Which benches to run (`shards` only when named).
    #[arg(long, value_delimiter = ',', default_values_t = [Bench::Normalize, Bench::Encoding, Bench::Pipeline, Bench::Merge])]
    only: Vec<Bench>,
    /// The numbers of shards of the shards bench, one landing each.
    #[arg(long, value_delimiter = ',', default_values_t = [1u32, 2, 4])]
    shards: Vec<u32>,
    /// Events landed by the shards bench (16 projects).
    #[arg(long, default_value_t = 64_000)]
    shard_events: usize,
    /// Where the pipeline bench writes its lakes (deleted after each run).
    #[arg(long, default_value_t = std::env::temp_dir().join("errlake-bench").display().to_string())]
    scratch: String,
    /// Compare with another tool instead: `dlt` installs dlt 1.31 into the test virtual
    /// environment and lands the same mock with its `rest_api_source`, then errlake does.
    #[arg(long)]
    against: Option<Against>,
    /// Events landed by each tool in the comparison, one comparison per size.
    #[arg(long, value_delimiter = ',', default_values_t = [40_000usize])]
    against_events: Vec<usize>,
    /// Internal: the merge bench's measured landing, run in a child process of its own so
    /// its peak memory is the landing's alone: `<lake dir>,<case>,<table rows>`.
    #[arg(long, hide = true)]
    land_child: Option<String>,
}

/// Another tool to compare with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Against {
    /// dlt 1.31's `rest_api_source`.
    Dlt,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Bench {
    Normalize,
    Pipeline,
    Merge,
    Encoding,
    Shards,
}

impl std::fmt::Display for Bench {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Bench::Normalize => "normalize",
            Bench::Pipeline => "pipeline",
            Bench::Merge => "merge",
            Bench::Encoding => "encoding",
            Bench::Shards => "shards",
        })
    }
}

pub(crate) fn bench(args: BenchArgs) -> anyhow::Result<()> {
    if let Some(spec) = &args.land_child {
        return crate::runtime()?.block_on(land_child(spec));
    }
    println!(
        "machine: {} cores; one-core figures are medians of {} repetitions, whole runs of {} round(s)",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        args.repeat,
        args.rounds
    );
    if let Some(Against::Dlt) = args.against {
        return crate::against_dlt::against_dlt(
            &args.against_events,
            args.rounds.max(1),
            Path::new(&args.scratch),
        );
    }
    if args.only.contains(&Bench::Normalize) {
        normalize_bench(args.normalize_events, args.repeat.max(1))?;
    }
    if args.only.contains(&Bench::Pipeline) {
        pipeline_bench(
            &args.pipeline_events,
            args.rounds.max(1),
            Path::new(&args.scratch),
        )?;
    }
    if args.only.contains(&Bench::Encoding) {
        crate::bench_encoding::encoding_bench(args.normalize_events, args.repeat.max(1))?;
    }
    if args.only.contains(&Bench::Merge) {
        let rt = crate::runtime()?;
        for &rows in &args.merge_rows {
            rt.block_on(merge_bench(rows, Path::new(&args.scratch)))?;
        }
    }
    if args.only.contains(&Bench::Shards) {
        crate::bench_shards::shards_bench(
            &args.shards,
            args.shard_events,
            Path::new(&args.scratch),
        )?;
    }
    Ok(())
}

/// Page bodies (50 events each, as the seed pipeline asks for) of the mock's events.
pub(crate) fn event_pages(n_events: usize) -> Vec<Vec<u8>> {
    let per_page = 50;
    let projects = 10;
    let per_project = n_events.div_ceil(projects);
    let mut pages = Vec::new();
    let mut page = Vec::with_capacity(per_page);
    for p in 0..projects {
        let project_id = mock_api::data::object_id(7, 2, &[p as u64]);
        for k in 0..per_project {
            if p * per_project + k >= n_events {
                break;
            }
            page.push(mock_api::data::event(
                7,
                &project_id,
                40,
                (k, per_project),
                0,
                "http://127.0.0.1:1",
            ));
            if page.len() == per_page {
                pages.push(serde_json::to_vec(&page).unwrap_or_default());
                page.clear();
            }
        }
    }
    if !page.is_empty() {
        pages.push(serde_json::to_vec(&page).unwrap_or_default());
    }
    pages
}

/// The seed's events resource as the normalizer sees it: a root table merged on `id`.
pub(crate) fn events_table() -> Arc<TableMeta> {
    Arc::new(TableMeta {
        name: "events".into(),
        parent: None,
        root: "events".into(),
        primary_key: Some("id".into()),
        write_disposition: WriteDisposition::Merge,
    })
}

/// A page body parsed as the source parses it, and its records (the page is a list).
pub(crate) fn page_records(body: Vec<u8>) -> anyhow::Result<transform::Records> {
    let doc = Arc::new(paginate::parse_body(body)?);
    transform::Records::select(doc, 0).map_err(|_| anyhow::anyhow!("bench: a page is not a list"))
}

pub(crate) fn median(xs: Vec<Duration>) -> Duration {
    Duration::from_secs_f64(median_of(xs.iter().map(Duration::as_secs_f64)))
}

fn normalize_bench(n_events: usize, repeat: usize) -> anyhow::Result<()> {
    let pages = event_pages(n_events);
    let bytes: usize = pages.iter().map(Vec::len).sum();
    let mb = bytes as f64 / 1e6;
    println!();
    println!(
        "normalization, one core: {n_events} mock events in {} pages, {mb:.1} MB of JSON",
        pages.len()
    );

    let events = events_table();
    let mut serde_times = Vec::new();
    let mut parse_times = Vec::new();
    let mut normalize_times = Vec::new();
    let mut rows = 0usize;
    let mut tables = 0usize;
    for _ in 0..repeat {
        // The tree the pipeline no longer builds, as the baseline.
        let started = Instant::now();
        for page in &pages {
            let tree: serde_json::Value = serde_json::from_slice(page)?;
            drop(tree);
        }
        serde_times.push(started.elapsed());

        // Page by page, as a transform worker takes them: each page's body and tape are
        // dropped before the next, so the allocator reuses their memory.
        // A fresh registry each time: the first page decides the columns, as in a first run.
        let mut normalizer = Normalizer::new(NormalizeConfig::default(), SchemaRegistry::default());
        let (mut parse, mut normalize) = (Duration::ZERO, Duration::ZERO);
        let mut n_rows = 0;
        for (seq, page) in pages.iter().enumerate() {
            let body = page.clone();
            let started = Instant::now();
            let records = page_records(body)?;
            let parsed = Instant::now();
            let batches =
                normalizer.normalize_records(&events, "bench", seq as u64, &records, None)?;
            normalize += parsed.elapsed();
            parse += parsed - started;
            n_rows += batches.iter().map(|b| b.batch.num_rows()).sum::<usize>();
        }
        parse_times.push(parse);
        normalize_times.push(normalize);
        rows = n_rows;
        tables = normalizer.registry().snapshot().len();
    }
    let serde = median(serde_times).as_secs_f64();
    let parse = median(parse_times).as_secs_f64();
    let normalize = median(normalize_times).as_secs_f64();
    println!(
        "  {:<38} {:>9} {:>12} {:>14}",
        "stage", "MB/s", "events/s", "rows/s (all)"
    );
    let line = |stage: &str, secs: f64, rows: Option<usize>| {
        println!(
            "  {:<38} {:>9.0} {:>12.0} {:>14}",
            stage,
            mb / secs,
            n_events as f64 / secs,
            rows.map_or("-".to_owned(), |r| format!("{:.0}", r as f64 / secs))
        );
    };
    line("baseline: serde_json::Value trees", serde, None);
    line("parse: page bytes -> tape (json-tape)", parse, None);
    line("normalize: tape -> Arrow batches", normalize, Some(rows));
    line("page bytes -> Arrow batches", parse + normalize, Some(rows));
    println!(
        "  tape parse / Value parse time: {:.2}x; normalize / tape parse: {:.2}x ({rows} rows in {tables} tables)",
        parse / serde,
        normalize / parse
    );
    Ok(())
}

/// One whole run of the seed pipeline.
pub(crate) struct PipelineRun {
    pub(crate) seconds: f64,
    pub(crate) events: u64,
    pub(crate) http_bytes: u64,
    pub(crate) peak_rss_bytes: u64,
    /// The events table's data files, and their average size in MB.
    events_files: (usize, f64),
}

impl PipelineRun {
    fn rate(&self) -> f64 {
        self.events as f64 / self.seconds
    }
}

fn pipeline_bench(sizes: &[usize], rounds: usize, scratch: &Path) -> anyhow::Result<()> {
    println!();
    println!(
        "pipeline: `xtask run pipelines/errors.toml` against the mock (2 organizations x 5 projects), each in a process of its own; every size once a round, {rounds} round(s)"
    );
    let header = |first: &str| {
        println!(
            "  {:>6} {:>9} {:>10} {:>12} {:>10} {:>14} {:>22} {:>20}",
            first,
            "events",
            "seconds",
            "events/s",
            "MB/s",
            "peak RSS (MB)",
            "events files (avg MB)",
            "rate, RSS vs first"
        );
    };
    let line = |label: &str, run: &PipelineRun, first: &PipelineRun| {
        println!(
            "  {:>6} {:>9} {:>10.2} {:>12.0} {:>10.0} {:>14.0} {:>22} {:>20}",
            label,
            run.events,
            run.seconds,
            run.rate(),
            run.http_bytes as f64 / 1e6 / run.seconds,
            run.peak_rss_bytes as f64 / 1e6,
            format!("{} ({:.1})", run.events_files.0, run.events_files.1),
            format!(
                "{:.0}%, {:.0}%",
                100.0 * run.rate() / first.rate(),
                100.0 * run.peak_rss_bytes as f64 / first.peak_rss_bytes as f64
            )
        );
    };
    header("round");
    let exe = std::env::current_exe().context("bench: locating the xtask binary")?;
    // Each size's runs, in the order of `sizes`.
    let mut runs: Vec<Vec<PipelineRun>> = sizes.iter().map(|_| Vec::new()).collect();
    for round in 1..=rounds {
        for (i, &events) in sizes.iter().enumerate() {
            let run = pipeline_run(&exe, events, scratch)?;
            // Within a round, against the round's first size.
            let first = match i {
                0 => &run,
                _ => runs[0].last().unwrap_or(&run),
            };
            line(&round.to_string(), &run, first);
            runs[i].push(run);
        }
    }
    if rounds > 1 {
        // The median of each figure apart: "flat in the size of the run" is judged on these.
        let medians: Vec<PipelineRun> = runs
            .iter()
            .map(|runs| PipelineRun {
                seconds: median_of(runs.iter().map(|r| r.seconds)),
                events: runs[0].events,
                http_bytes: runs[0].http_bytes,
                peak_rss_bytes: median_of(runs.iter().map(|r| r.peak_rss_bytes as f64)) as u64,
                events_files: runs[0].events_files,
            })
            .collect();
        println!("  medians over the rounds (each figure apart), and each size's range of peaks:");
        header("");
        for (median, runs) in medians.iter().zip(&runs) {
            line("median", median, &medians[0]);
            let peaks = runs.iter().map(|r| r.peak_rss_bytes as f64 / 1e6);
            let (low, high) = peaks.fold((f64::MAX, 0.0f64), |(l, h), p| (l.min(p), h.max(p)));
            println!(
                "  {:>6} {:>9} peak RSS {low:.0} to {high:.0} MB",
                "", median.events
            );
        }
    }
    Ok(())
}

/// The median of `xs` (the upper one of an even count).
pub(crate) fn median_of(xs: impl Iterator<Item = f64>) -> f64 {
    let mut xs: Vec<f64> = xs.collect();
    xs.sort_by(f64::total_cmp);
    xs.get(xs.len() / 2).copied().unwrap_or(f64::NAN)
}

/// One run of the seed pipeline landing `events` from a mock in a process of its own.
fn pipeline_run(exe: &Path, events: usize, scratch: &Path) -> anyhow::Result<PipelineRun> {
    std::fs::create_dir_all(scratch)?;
    // The mock in a process of its own: the run's peak memory is the pipeline's alone.
    let mock = crate::against_dlt::Mock::start(exe, events.div_ceil(10))?;
    seeded_run(
        exe,
        &mock,
        &scratch.join(format!("pipeline-{events}")),
        &scratch.join(format!("pipeline-{events}.json")),
    )
}

/// One run of the seed pipeline against `mock` into `lake` (deleted before and after), its
/// report written to `report`: the run's figures, as the child measured them.
pub(crate) fn seeded_run(
    exe: &Path,
    mock: &crate::against_dlt::Mock,
    lake: &Path,
    report: &Path,
) -> anyhow::Result<PipelineRun> {
    let _ = std::fs::remove_dir_all(lake);
    let status = run_child(&mut mock.seed_run(exe, lake, report))?;
    anyhow::ensure!(
        status.success(),
        "bench: the pipeline run failed ({status})"
    );
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(report)?)?;
    // The events table's data files: how the sink sized them for this many pages.
    let table = crate::runtime()?.block_on(async {
        sink_parquet::Lake::open(&lake.display().to_string())?
            .table_info("events")
            .await
    })?;
    let _ = std::fs::remove_dir_all(lake);
    Ok(PipelineRun {
        seconds: report["seconds"].as_f64().unwrap_or(f64::NAN),
        events: report["rows"]["events"].as_u64().unwrap_or(0),
        http_bytes: report["http"]["bytes"].as_u64().unwrap_or(0),
        // Read by the child itself: a parent's rusage of a child counts the parent's own
        // footprint at fork time.
        peak_rss_bytes: report["peak_rss_bytes"].as_u64().unwrap_or(0),
        events_files: table.map_or((0, 0.0), |t| {
            (t.files, t.bytes as f64 / t.files.max(1) as f64 / 1e6)
        }),
    })
}

/// Runs a child to its end.
fn run_child(command: &mut Command) -> anyhow::Result<std::process::ExitStatus> {
    command.status().context("bench: starting a child run")
}

/// A small event (about 200 bytes of JSON) with one list, so a merge has a child table.
fn small_event(id: usize, version: usize) -> serde_json::Value {
    serde_json::json!({
        "id": format!("ev-{id:08}"),
        "received_at": format!("2026-11-{:02}T{:02}:{:02}:00Z", 1 + id % 28, id % 24, id % 60),
        "severity": (["error", "warning", "info"][(id + version) % 3]),
        "message": format!("TypeError in handler {} (v{version})", id % 977),
        "count": id * 7 + version,
        "device": {"os": (["android", "ios"][id % 2]), "version": format!("{}.0", 9 + id % 5)},
        "tags": [format!("t{}", id % 13), format!("v{version}")],
    })
}

/// Lands `ids` as one load of 1,000-record pages; the load's commits.
async fn land(
    lake: &sink_parquet::Lake,
    disposition: WriteDisposition,
    ids: &[usize],
    version: usize,
) -> anyhow::Result<Vec<sink_parquet::TableCommit>> {
    let meta = Arc::new(TableMeta {
        name: "events".into(),
        parent: None,
        root: "events".into(),
        primary_key: Some("id".into()),
        write_disposition: disposition,
    });
    let registry = SchemaRegistry::new(lake.schemas().await?);
    let mut normalizer = Normalizer::new(NormalizeConfig::default(), registry);
    let load_id = format!("bench-{}", fastrand_suffix());
    let mut writer = sink_parquet::LoadWriter::new(
        lake.clone(),
        sink_parquet::ParquetSinkConfig::default(),
        load_id.clone(),
        vec![meta.clone()],
    );
    for (seq, chunk) in ids.chunks(1000).enumerate() {
        let records: Vec<serde_json::Value> =
            chunk.iter().map(|&id| small_event(id, version)).collect();
        let batches = normalizer.normalize(&meta, &load_id, seq as u64, &records)?;
        writer.write(seq as u64, batches).await?;
    }
    Ok(writer.commit().await?)
}

fn fastrand_suffix() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{:x}", t.as_nanos())
}

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
        })
        .and_then(|kib| kib.parse::<f64>().ok())
        .map_or(f64::NAN, |kib| kib / 1000.0)
}

/// The figures of one measured landing, printed by the child as JSON.
#[derive(serde::Serialize, serde::Deserialize)]
struct Landed {
    seconds: f64,
    bytes_before: u64,
    bytes_rewritten: u64,
    peak_rss_mb: f64,
}

/// The child side of the merge bench: lands 1% of a `rows`-row table built by the parent,
/// the way `case` says, and prints its figures with this process's peak memory.
async fn land_child(spec: &str) -> anyhow::Result<()> {
    let mut parts = spec.rsplitn(3, ',');
    let (Some(rows), Some(case), Some(dir)) = (parts.next(), parts.next(), parts.next()) else {
        anyhow::bail!("bench: --land-child takes <lake dir>,<case>,<rows>, got {spec}");
    };
    let rows: usize = rows.parse().context("bench: --land-child rows")?;
    let changed = rows / 100;
    let lake = sink_parquet::Lake::open(dir)?;
    let (disposition, ids): (_, Vec<usize>) = match case {
        "append" => (WriteDisposition::Append, (rows..rows + changed).collect()),
        "merge: new ids" => (WriteDisposition::Merge, (rows..rows + changed).collect()),
        "merge: newest rows" => (WriteDisposition::Merge, (rows - changed..rows).collect()),
        "merge: spread rows" => (
            WriteDisposition::Merge,
            (0..changed).map(|i| i * 100 + 37).collect(),
        ),
        other => anyhow::bail!("bench: unknown landing case {other}"),
    };
    let started = Instant::now();
    let commits = land(&lake, disposition, &ids, 1).await?;
    let landed = Landed {
        seconds: started.elapsed().as_secs_f64(),
        bytes_before: commits.iter().map(|c| c.bytes_before).sum(),
        bytes_rewritten: commits.iter().map(|c| c.bytes_rewritten).sum(),
        peak_rss_mb: peak_rss_mb(),
    };
    println!("{}", serde_json::to_string(&landed)?);
    Ok(())
}

async fn merge_bench(rows: usize, scratch: &Path) -> anyhow::Result<()> {
    let dir = scratch.join(format!("merge-{rows}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let changed = rows / 100;
    println!();
    println!(
        "merge: events table of {rows} rows (+2 tags each in events__tags), built by 10 loads; then {changed} rows (1%) landed"
    );
    println!(
        "  {:<34} {:>8} {:>10} {:>16} {:>14}",
        "landing 1% of the table as",
        "seconds",
        "x append",
        "bytes rewritten",
        "peak RSS (MB, own process)"
    );
    let mut base = None;
    for case in [
        "append",
        "merge: new ids",
        "merge: newest rows",
        "merge: spread rows",
    ] {
        // A fresh copy of the table for each case, so each starts from the same state.
        let lake_dir = dir.join(case.replace([':', ' '], "_"));
        let lake = sink_parquet::Lake::open(&lake_dir.display().to_string())?;
        let disposition = if case == "append" {
            WriteDisposition::Append
        } else {
            WriteDisposition::Merge
        };
        for part in 0..10 {
            let ids: Vec<usize> = (part * rows / 10..(part + 1) * rows / 10).collect();
            land(&lake, disposition, &ids, 0).await?;
        }
        // The table build's writes reach the disk first, so that their writeback does not
        // land in the measured seconds (it made a 0.07 s append take 0.3 s in some runs).
        let _ = Command::new("sync").status();
        // The measured landing runs in a child process: its peak memory is the landing's
        // alone, not the table build's that came before it in this process.
        let output = Command::new(std::env::current_exe()?)
            .arg("bench")
            .arg("--land-child")
            .arg(format!("{},{case},{rows}", lake_dir.display()))
            .stderr(std::process::Stdio::inherit())
            .output()
            .context("bench: starting the landing child")?;
        anyhow::ensure!(
            output.status.success(),
            "bench: the landing child failed ({})",
            output.status
        );
        let landed: Landed = serde_json::from_slice(&output.stdout)
            .context("bench: reading the landing child's figures")?;
        let Landed {
            seconds,
            bytes_before: before,
            bytes_rewritten: rewritten,
            peak_rss_mb: peak,
        } = landed;
        let base_seconds = *base.get_or_insert(seconds);
        println!(
            "  {:<34} {:>8.2} {:>10.1} {:>9.1} MB {:>3.0}% {:>14.0}",
            case,
            seconds,
            seconds / base_seconds,
            rewritten as f64 / 1e6,
            if before > 0 {
                100.0 * rewritten as f64 / before as f64
            } else {
                0.0
            },
            peak
        );
        let _ = std::fs::remove_dir_all(&lake_dir);
    }
    Ok(())
}
