//! `cargo xtask run` and `cargo xtask check`, and how every run is started from the command
//! line: progress display, Ctrl-C, the summary and the exit code.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, OnceLock};

use anyhow::Context;

use pipeline::{Interrupt, Outcome, Overrides, Pipeline, RunOptions, RunReport};
use source_errors::{Secrets, Shard};

use crate::progress::{Display, Mode};

/// The options of every run from the command line (`run` and `demo`).
#[derive(Debug, clap::Args)]
pub(crate) struct RunFlags {
    /// Ignore the stored state (incremental cursor, resume points) of these resources,
    /// comma-separated: they start at their initial value and first page.
    #[arg(long, value_delimiter = ',')]
    full_refresh: Vec<String>,
    /// A paging that keeps failing (after the retries) fails its partition only: the run
    /// lands the others, lists the failed ones and exits with 2; the next run retries them
    /// from their last landed page.
    #[arg(long)]
    keep_going: bool,
    /// Write the run report as JSON to this file (the lake's load history keeps it too).
    #[arg(long)]
    report: Option<PathBuf>,
    /// Write into a destination that holds files errlake did not write (a first run
    /// refuses one otherwise); errlake never deletes those files.
    #[arg(long)]
    adopt_foreign_files: bool,
}

/// Runs a pipeline with live progress (bars on a terminal, log lines elsewhere) and Ctrl-C
/// handling (the first stops gracefully: pages in flight land and commit; the second stops
/// at once), prints the summary and says how it ended: 0 completed, 2 some partitions
/// failed, 130 interrupted.
pub(crate) async fn execute(
    p: &Pipeline,
    mut options: RunOptions,
    flags: &RunFlags,
) -> anyhow::Result<(RunReport, ExitCode)> {
    options.full_refresh = flags.full_refresh.clone();
    options.keep_going = flags.keep_going;
    options.adopt_foreign_files = flags.adopt_foreign_files;
    options.release_memory = Some(crate::release_freed_memory);
    let live = source_errors::LiveStats::default();
    let http = Arc::new(OnceLock::new());
    options.live = Some(live.clone());
    options.http_probe = Some(http.clone());
    let interrupt = Interrupt::default();
    options.interrupt = Some(interrupt.clone());
    let ctrl_c = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!(
                "interrupted: no new requests; the pages in flight land and commit (Ctrl-C again to stop at once)"
            );
            interrupt.trigger();
        }
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("stopped at once: the last checkpoint stays committed");
            std::process::exit(130);
        }
    });
    let display = Display::start(Mode::detect(crate::json_logs()), live, http);
    let result = pipeline::run(p, &options).await;
    display.finish().await;
    ctrl_c.abort();
    let report = result?;
    print_summary(&report);
    if let Some(path) = &flags.report {
        write_report(&report, path)?;
    }
    let code = match report.outcome {
        Outcome::Completed => ExitCode::SUCCESS,
        Outcome::PartiallyFailed => {
            eprintln!(
                "{} partitions failed; the next run retries them from their last landed page:",
                report.failed.len()
            );
            for f in &report.failed {
                eprintln!("  {}[{}]: {}", f.resource, f.partition, f.error);
            }
            ExitCode::from(2)
        }
        Outcome::Interrupted => {
            eprintln!(
                "interrupted: what landed is committed with its state; the next run goes on from there"
            );
            ExitCode::from(130)
        }
        Outcome::Failed => ExitCode::FAILURE,
    };
    Ok((report, code))
}

/// Arguments of `run`.
#[derive(Debug, clap::Args)]
pub(crate) struct RunArgs {
    /// The pipeline file (.toml or .json).
    pipeline: PathBuf,
    /// Replaces the file's client.base_url.
    #[arg(long)]
    base_url: Option<String>,
    /// Replaces the file's destination: a path, file:// or s3:// URL.
    #[arg(long)]
    destination: Option<String>,
    /// An option of an s3:// destination, as key=value (repeatable): aws_endpoint,
    /// aws_region, aws_allow_http, ... Credentials belong in the environment.
    #[arg(long, value_parser = parse_key_value)]
    storage_option: Vec<(String, String)>,
    /// Only these resources, comma-separated (their parents are fetched, not written).
    #[arg(long, value_delimiter = ',')]
    resources: Option<Vec<String>>,
    /// Stop each paging after this many pages.
    #[arg(long)]
    max_pages: Option<usize>,
    /// An untracked TOML file of secrets (`auth_token = "..."`), read after the environment.
    #[arg(long)]
    secrets_file: Option<PathBuf>,
    /// Run shard I of N (I from 0): only the partitions of the leaf resources that hash to
    /// it; the parents are fetched by every shard and written by shard 0. Also from
    /// `ERRLAKE_SHARD=I/N`, or `JOB_COMPLETION_INDEX` with `ERRLAKE_SHARDS=N` (a Kubernetes
    /// Indexed Job).
    #[arg(long)]
    shard: Option<Shard>,
    /// This run's client-side budget of requests per minute, in place of the file's
    /// `client.rate_limit.requests_per_minute` (which a split run divides by N): give each
    /// shard the whole budget when it has a token of its own (`AUTH_TOKEN_SHARD_<I>`).
    #[arg(long, env = "ERRLAKE_REQUESTS_PER_MINUTE")]
    requests_per_minute: Option<u32>,
    #[command(flatten)]
    flags: RunFlags,
}

/// The shard a run is: `--shard`, else `ERRLAKE_SHARD=I/N`, else `JOB_COMPLETION_INDEX`
/// (set by a Kubernetes Indexed Job) with `ERRLAKE_SHARDS=N`; the whole pipeline when none
/// is set. `env` reads a variable.
pub(crate) fn shard_of(
    flag: Option<Shard>,
    env: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<Shard> {
    if let Some(shard) = flag {
        return Ok(shard);
    }
    if let Some(text) = env("ERRLAKE_SHARD") {
        return text
            .parse()
            .map_err(|e: String| anyhow::anyhow!("ERRLAKE_SHARD: {e}"));
    }
    match (env("JOB_COMPLETION_INDEX"), env("ERRLAKE_SHARDS")) {
        (Some(index), Some(count)) => format!("{index}/{count}")
            .parse()
            .map_err(|e: String| anyhow::anyhow!("JOB_COMPLETION_INDEX and ERRLAKE_SHARDS: {e}")),
        (None, Some(count)) => anyhow::bail!(
            "ERRLAKE_SHARDS={count} is set but JOB_COMPLETION_INDEX is not: which shard is this? (set ERRLAKE_SHARD=I/N or pass --shard I/N)"
        ),
        // An Indexed Job that does not set ERRLAKE_SHARDS runs the whole pipeline in each pod.
        (_, None) => Ok(Shard::whole()),
    }
}

/// Arguments of `check`.
#[derive(Debug, clap::Args)]
pub(crate) struct CheckArgs {
    /// The pipeline file.
    pipeline: PathBuf,
}

pub(crate) async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let shard = shard_of(args.shard, |name| std::env::var(name).ok())?;
    let mut secrets = Secrets::from_env();
    if let Some(path) = &args.secrets_file {
        secrets = secrets.with_file(path).map_err(anyhow::Error::msg)?;
    }
    if shard.is_split() {
        secrets = secrets.for_shard(shard.index());
    }
    let overrides = Overrides {
        base_url: args.base_url,
        destination: args.destination,
        storage_options: args.storage_option.into_iter().collect(),
    };
    let p = Pipeline::load(&args.pipeline, &secrets, &overrides)?;
    if shard.is_split() {
        eprintln!(
            "shard {shard}: the leaf resources' partitions that hash to it; parents fetched in full"
        );
    }
    let options = RunOptions {
        resources: args.resources,
        max_pages: args.max_pages,
        shard,
        requests_per_minute: args.requests_per_minute,
        ..RunOptions::default()
    };
    let (_, code) = execute(&p, options, &args.flags).await?;
    Ok(code)
}

/// Writes the run report as JSON, with this process's peak resident memory so far
/// (`peak_rss_bytes`, Linux only) beside the report's own fields.
pub(crate) fn write_report(report: &RunReport, path: &Path) -> anyhow::Result<()> {
    let mut json = serde_json::to_value(report)?;
    if let (Some(peak), Some(fields)) = (peak_rss_bytes(), json.as_object_mut()) {
        fields.insert("peak_rss_bytes".into(), peak.into());
    }
    std::fs::write(path, serde_json::to_vec_pretty(&json)?)
        .with_context(|| format!("writing the run report to {}", path.display()))
}

/// The peak resident set size of this process (`VmHWM`), where /proc tells it.
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Per table: rows added and removed, Delta version; then the totals.
pub(crate) fn print_summary(report: &RunReport) {
    match &report.shard {
        Some(shard) => println!(
            "load {} into {} (shard {shard})",
            report.load_id, report.destination
        ),
        None => println!("load {} into {}", report.load_id, report.destination),
    }
    println!(
        "{:<44} {:>10} {:>10} {:>8}",
        "table", "rows added", "replaced", "version"
    );
    let (internal, data): (Vec<_>, Vec<_>) = report
        .commits
        .iter()
        .partition(|c| c.table.starts_with("_errlake"));
    // One line per table: checkpoints add up, the version is the last one.
    let mut per_table: std::collections::BTreeMap<&str, (u64, u64, u64)> = Default::default();
    for c in &data {
        let t = per_table.entry(c.table.as_str()).or_default();
        t.0 += c.rows_added;
        t.1 += c.rows_removed;
        t.2 = t.2.max(c.version);
    }
    for (table, (added, removed, version)) in per_table {
        println!("{table:<44} {added:>10} {removed:>10} {version:>8}");
    }
    if data.is_empty() {
        println!("(nothing changed: no table got a new version)");
    }
    if !internal.is_empty() {
        let tables: std::collections::BTreeSet<&str> =
            internal.iter().map(|c| c.table.as_str()).collect();
        println!(
            "pipeline state committed with the data: {}",
            tables.into_iter().collect::<Vec<_>>().join(", ")
        );
    }
    if report.checkpoints > 0 {
        println!(
            "{} checkpoints committed along the way (and the last commit at the end)",
            report.checkpoints
        );
    }
    if report.commit_retries > 0 {
        println!(
            "{} table commits found another writer had committed first and merged again",
            report.commit_retries
        );
    }
    let pages: u64 = report.resources.values().map(|r| r.pages).sum();
    let records: u64 = report.resources.values().map(|r| r.records).sum();
    println!(
        "{} requests ({} retries), {pages} pages, {records} records, {:.1} MB in {:.2} s",
        report.http.requests,
        report.http.retries,
        report.http.bytes as f64 / 1e6,
        report.seconds
    );
    for (table, n) in &report.discarded.rows {
        println!("discarded by the schema contract: {n} records of `{table}`");
    }
    for (column, n) in &report.discarded.values {
        println!("discarded by the schema contract: {n} values of `{column}`");
    }
    for (column, n) in &report.discarded.kept_as_json {
        println!(
            "kept as JSON text (the table reached [normalize] max_table_columns): {n} objects in `{column}`"
        );
    }
}

pub(crate) fn check(args: CheckArgs) -> anyhow::Result<()> {
    // Secrets are not needed to check a file: a placeholder stands in for each.
    let p = Pipeline::load(&args.pipeline, &Secrets::stand_in(), &Overrides::default())?;
    println!(
        "{}: pipeline `{}` is valid",
        args.pipeline.display(),
        p.name
    );
    println!("  base_url:    {}", p.source.client.base_url);
    println!(
        "  auth:        {}",
        source_errors::describe_auth(&p.source.client.auth)
    );
    println!("  destination: {}", p.destination);
    println!("resources (children under their parent):");
    for r in &p.source.resources {
        // Depth in the resource tree: how many parents up to a root.
        let mut depth = 0;
        let mut parent = r.parent();
        while let Some(pr) = parent {
            depth += 1;
            parent = p.source.resource(&pr.resource).and_then(|r| r.parent());
        }
        let parent = r
            .parent()
            .map(|p| {
                format!(
                    "  (child of {}: one paging per {} row, its `{}` as {})",
                    p.resource, p.resource, p.field, p.key
                )
            })
            .unwrap_or_else(|| "  (root: one paging)".to_owned());
        let pad = "  ".repeat(depth);
        println!("  {pad}{}{parent}", r.name);
        println!("  {pad}  GET {}", r.path_template);
        println!(
            "  {pad}  pages: {}; rows: {} on {} into table `{}`",
            r.strategy_name(),
            r.write_disposition_name(),
            r.primary_key.as_deref().unwrap_or("-"),
            r.table_name
        );
        if let Some(i) = &r.incremental {
            let window = match &i.end_value {
                Some(end) => format!(
                    "backfill {} .. {end}",
                    i.initial_value.as_deref().unwrap_or("-")
                ),
                None => format!(
                    "from the stored cursor (first run: {})",
                    i.initial_value.as_deref().unwrap_or("everything")
                ),
            };
            println!(
                "  {pad}  incremental on `{}` per partition, {window}, sent as `{}`",
                i.cursor_path,
                i.start_param.as_deref().unwrap_or("(no parameter)")
            );
        }
    }
    println!(
        "  checkpoints: a commit every {} pages or {} s, with the state of the pages it holds",
        p.checkpoint.pages, p.checkpoint.seconds
    );
    match p.sink.keep_history_secs {
        Some(secs) if secs > 0 => println!(
            "  history: files a commit replaces stay {secs} s (older versions stay readable)"
        ),
        Some(_) => println!(
            "  history: none; files a commit replaces are deleted at once, and tables that kept history stop"
        ),
        None => println!(
            "  history: as each table says (none on tables errlake created): replaced files are deleted at once"
        ),
    }
    println!("no request was sent.");
    Ok(())
}

trait Describe {
    fn strategy_name(&self) -> &'static str;
    fn write_disposition_name(&self) -> &'static str;
}

impl Describe for source_errors::Resource {
    fn strategy_name(&self) -> &'static str {
        match self.strategy {
            paginate_strategy::Link { .. } => "link header",
            paginate_strategy::BodyCursor { .. } => "body cursor",
            paginate_strategy::JsonLink { .. } => "json link",
            paginate_strategy::Offset { .. } => "offset",
            paginate_strategy::PageNumber { .. } => "page number",
            paginate_strategy::SinglePage => "single page",
        }
    }

    fn write_disposition_name(&self) -> &'static str {
        match self.write_disposition {
            source_errors::WriteDisposition::Append => "append",
            source_errors::WriteDisposition::Replace => "replace",
            source_errors::WriteDisposition::Merge => "merge",
        }
    }
}

use paginate::Strategy as paginate_strategy;

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .ok_or_else(|| format!("`{s}` is not key=value"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }

    #[test]
    fn the_shard_comes_from_the_flag_then_errlake_shard_then_an_indexed_job() {
        let flag = Some(Shard::new(1, 4).unwrap());
        let all = env_of(&[
            ("ERRLAKE_SHARD", "2/4"),
            ("JOB_COMPLETION_INDEX", "3"),
            ("ERRLAKE_SHARDS", "4"),
        ]);
        assert_eq!(shard_of(flag, &all).unwrap().to_string(), "1/4");
        assert_eq!(shard_of(None, &all).unwrap().to_string(), "2/4");
        let job = env_of(&[("JOB_COMPLETION_INDEX", "3"), ("ERRLAKE_SHARDS", "4")]);
        assert_eq!(shard_of(None, &job).unwrap().to_string(), "3/4");
        // An Indexed Job that does not ask for shards runs the whole pipeline.
        let unsplit = env_of(&[("JOB_COMPLETION_INDEX", "3")]);
        assert!(!shard_of(None, &unsplit).unwrap().is_split());
        assert!(!shard_of(None, env_of(&[])).unwrap().is_split());
    }

    #[test]
    fn a_shard_that_cannot_be_says_which_variable_is_wrong() {
        let e = shard_of(None, env_of(&[("ERRLAKE_SHARD", "4/4")])).unwrap_err();
        assert!(e.to_string().starts_with("ERRLAKE_SHARD:"), "{e}");
        let e = shard_of(
            None,
            env_of(&[("JOB_COMPLETION_INDEX", "5"), ("ERRLAKE_SHARDS", "4")]),
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("JOB_COMPLETION_INDEX and ERRLAKE_SHARDS"),
            "{e}"
        );
        let e = shard_of(None, env_of(&[("ERRLAKE_SHARDS", "4")])).unwrap_err();
        assert!(e.to_string().contains("JOB_COMPLETION_INDEX is not"), "{e}");
    }
}
