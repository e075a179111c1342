//! `cargo xtask bench`: the figures that speed and memory claims rest on, printed, never
//! asserted. Ratios are measured within one run, since the machines are shared and noisy.
//!
//! - normalization: the embedded mock's events as page bodies, parsed into
//!   `serde_json::Value` (the baseline) and normalized into Arrow batches, on one core;
//! - pipeline: `cargo xtask demo` in a child process at two sizes, for events per second
//!   and the child's peak resident memory.

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
    /// Events landed by each pipeline run; the pipeline bench runs each size once.
    #[arg(long, value_delimiter = ',', default_values_t = [50_000usize, 200_000])]
    pipeline_events: Vec<usize>,
    /// Repetitions of the normalization bench (the median is printed).
    #[arg(long, default_value_t = 5)]
    repeat: usize,
    /// Which benches to run.
    #[arg(long, value_delimiter = ',', default_values_t = [Bench::Normalize, Bench::Pipeline])]
    only: Vec<Bench>,
    /// Where the pipeline bench writes its lakes (deleted after each run).
    #[arg(long, default_value_t = std::env::temp_dir().join("errlake-bench").display().to_string())]
    scratch: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Bench {
    Normalize,
    Pipeline,
}

impl std::fmt::Display for Bench {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Bench::Normalize => "normalize",
            Bench::Pipeline => "pipeline",
        })
    }
}

pub(crate) fn bench(args: BenchArgs) -> anyhow::Result<()> {
    println!(
        "machine: {} cores; figures are medians of {} repetitions where repeated",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        args.repeat
    );
    if args.only.contains(&Bench::Normalize) {
        normalize_bench(args.normalize_events, args.repeat.max(1))?;
    }
    if args.only.contains(&Bench::Pipeline) {
        pipeline_bench(&args.pipeline_events, Path::new(&args.scratch))?;
    }
    Ok(())
}

/// Page bodies (50 events each, as the seed pipeline asks for) of the mock's events.
fn event_pages(n_events: usize) -> Vec<Vec<u8>> {
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
                k,
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

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
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

    let events = Arc::new(TableMeta {
        name: "events".into(),
        parent: None,
        root: "events".into(),
        primary_key: Some("id".into()),
        write_disposition: WriteDisposition::Merge,
    });
    let mut parse_times = Vec::new();
    let mut normalize_times = Vec::new();
    let mut rows = 0usize;
    let mut tables = 0usize;
    for _ in 0..repeat {
        let started = Instant::now();
        let parsed: Vec<Vec<serde_json::Value>> = pages
            .iter()
            .map(|p| serde_json::from_slice(p))
            .collect::<Result<_, _>>()?;
        parse_times.push(started.elapsed());

        // A fresh registry each time: the first page decides the columns, as in a first run.
        let mut normalizer = Normalizer::new(NormalizeConfig::default(), SchemaRegistry::default());
        let started = Instant::now();
        let mut n_rows = 0;
        for (seq, records) in parsed.iter().enumerate() {
            let batches = normalizer.normalize(&events, "bench", seq as u64, records)?;
            n_rows += batches.iter().map(|b| b.batch.num_rows()).sum::<usize>();
        }
        normalize_times.push(started.elapsed());
        rows = n_rows;
        tables = normalizer.registry().snapshot().len();
        drop(parsed);
    }
    let parse = median(parse_times).as_secs_f64();
    let normalize = median(normalize_times).as_secs_f64();
    println!(
        "  {:<34} {:>9} {:>12} {:>14}",
        "stage", "MB/s", "events/s", "rows/s (all)"
    );
    println!(
        "  {:<34} {:>9.0} {:>12.0} {:>14}",
        "serde_json::from_slice::<Value>",
        mb / parse,
        n_events as f64 / parse,
        "-"
    );
    println!(
        "  {:<34} {:>9.0} {:>12.0} {:>14.0}",
        "normalize Value -> Arrow batches",
        mb / normalize,
        n_events as f64 / normalize,
        rows as f64 / normalize
    );
    println!(
        "  {:<34} {:>9.0} {:>12.0} {:>14.0}",
        "parse + normalize",
        mb / (parse + normalize),
        n_events as f64 / (parse + normalize),
        rows as f64 / (parse + normalize)
    );
    println!(
        "  normalize / parse time: {:.2}x ({rows} rows in {tables} tables)",
        normalize / parse
    );
    Ok(())
}

fn pipeline_bench(sizes: &[usize], scratch: &Path) -> anyhow::Result<()> {
    println!();
    println!(
        "pipeline: `xtask demo` (embedded mock, pipelines/errors.toml, 2 organizations x 5 projects) in a child process"
    );
    println!(
        "  {:>9} {:>10} {:>12} {:>10} {:>14}",
        "events", "seconds", "events/s", "MB/s", "peak RSS (MB)"
    );
    let exe = std::env::current_exe().context("bench: locating the xtask binary")?;
    for &events in sizes {
        let lake = scratch.join(format!("pipeline-{events}"));
        let _ = std::fs::remove_dir_all(&lake);
        let report = scratch.join(format!("pipeline-{events}.json"));
        std::fs::create_dir_all(scratch)?;
        let per_project = events.div_ceil(10);
        let status = run_child(
            Command::new(&exe)
                .arg("demo")
                .arg("--destination")
                .arg(&lake)
                .arg("--events-per-project")
                .arg(per_project.to_string())
                .arg("--report")
                .arg(&report)
                .stdout(std::process::Stdio::null()),
        )?;
        anyhow::ensure!(status.success(), "bench: the demo run failed ({status})");
        let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&report)?)?;
        let seconds = report["seconds"].as_f64().unwrap_or(f64::NAN);
        let landed = report["rows"]["events"].as_u64().unwrap_or(0);
        let bytes = report["http"]["bytes"].as_u64().unwrap_or(0);
        // Read by the child itself: a parent's rusage of a child counts the parent's own
        // footprint at fork time.
        let peak_rss = report["peak_rss_bytes"].as_u64().unwrap_or(0);
        println!(
            "  {:>9} {:>10.2} {:>12.0} {:>10.0} {:>14.0}",
            landed,
            seconds,
            landed as f64 / seconds,
            bytes as f64 / 1e6 / seconds,
            peak_rss as f64 / 1e6
        );
        let _ = std::fs::remove_dir_all(&lake);
    }
    Ok(())
}

/// Runs a child to its end.
fn run_child(command: &mut Command) -> anyhow::Result<std::process::ExitStatus> {
    command.status().context("bench: starting a child run")
}
