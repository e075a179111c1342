//! `cargo xtask run` and `cargo xtask check`.

use std::path::PathBuf;

use anyhow::Context;

use pipeline::{Overrides, Pipeline, RunOptions, RunReport};
use source_errors::Secrets;

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
    /// Write the run report as JSON to this file.
    #[arg(long)]
    report: Option<PathBuf>,
}

/// Arguments of `check`.
#[derive(Debug, clap::Args)]
pub(crate) struct CheckArgs {
    /// The pipeline file.
    pipeline: PathBuf,
}

pub(crate) async fn run(args: RunArgs) -> anyhow::Result<()> {
    let mut secrets = Secrets::from_env();
    if let Some(path) = &args.secrets_file {
        secrets = secrets.with_file(path).map_err(anyhow::Error::msg)?;
    }
    let overrides = Overrides {
        base_url: args.base_url,
        destination: args.destination,
        storage_options: args.storage_option.into_iter().collect(),
    };
    let p = Pipeline::load(&args.pipeline, &secrets, &overrides)?;
    let report = pipeline::run(
        &p,
        &RunOptions {
            resources: args.resources,
            max_pages: args.max_pages,
        },
    )
    .await?;
    print_summary(&report);
    if let Some(path) = &args.report {
        write_report(&report, path)?;
    }
    Ok(())
}

/// Writes the run report as JSON, with this process's peak resident memory so far
/// (`peak_rss_bytes`, Linux only) beside the report's own fields.
pub(crate) fn write_report(report: &RunReport, path: &std::path::Path) -> anyhow::Result<()> {
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
    println!("load {} into {}", report.load_id, report.destination);
    println!(
        "{:<44} {:>10} {:>10} {:>8}",
        "table", "rows added", "replaced", "version"
    );
    for c in &report.commits {
        println!(
            "{:<44} {:>10} {:>10} {:>8}",
            c.table, c.rows_added, c.rows_removed, c.version
        );
    }
    if report.commits.is_empty() {
        println!("(nothing changed: no table got a new version)");
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
            .map(|p| format!(" <- {}.{} as {}", p.resource, p.field, p.key))
            .unwrap_or_default();
        println!(
            "  {}{}{parent}\n  {}  GET {}  paginator: {}, {} on {}",
            "  ".repeat(depth),
            r.name,
            "  ".repeat(depth),
            r.path_template,
            r.strategy_name(),
            r.write_disposition_name(),
            r.primary_key.as_deref().unwrap_or("-")
        );
    }
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
