//! `cargo xtask inspect`: what is in a destination: tables, versions, rows, files, schemas,
//! the pipeline state per resource and partition, and the last runs and loads.

use sink_parquet::Lake;

/// Arguments of `inspect`.
#[derive(Debug, clap::Args)]
pub(crate) struct InspectArgs {
    /// The destination: a path, file:// or s3:// URL.
    #[arg(default_value = "./lake")]
    destination: String,
    /// Also list every table's columns and types.
    #[arg(long)]
    schema: bool,
    /// How many of each table's last loads to show.
    #[arg(long, default_value_t = 3)]
    loads: usize,
}

pub(crate) async fn inspect(args: InspectArgs) -> anyhow::Result<()> {
    let lake = Lake::open(&args.destination)?;
    let (internal, tables): (Vec<String>, Vec<String>) = lake
        .table_names()
        .await?
        .into_iter()
        .partition(|t| t.starts_with("_errlake"));
    if tables.is_empty() && internal.is_empty() {
        println!("{}: no tables yet", lake.url());
        return Ok(());
    }
    println!("{}", lake.url());
    println!();
    println!(
        "{:<44} {:>8} {:>10} {:>6} {:>9} {:>8}",
        "table", "version", "rows", "files", "MB", "columns"
    );
    let mut infos = Vec::new();
    for name in tables {
        let Some(info) = lake.table_info(&name).await? else {
            continue;
        };
        println!(
            "{:<44} {:>8} {:>10} {:>6} {:>9.1} {:>8}",
            name,
            info.version,
            info.rows,
            info.files,
            info.bytes as f64 / 1e6,
            info.columns.len(),
        );
        infos.push((name, info));
    }
    state(&lake).await?;
    runs(&lake, args.loads.max(1)).await?;
    if args.loads > 0 {
        println!();
        println!("last loads per table (newest first):");
        for (name, info) in &infos {
            match info.keeps_history {
                Some(kept) => println!(
                    "  {name}  (keeps the files its commits removed for {} s: older versions stay readable)",
                    kept.as_secs()
                ),
                None => println!("  {name}"),
            }
            for l in info.last_loads.iter().take(args.loads) {
                let when = l
                    .timestamp_ms
                    .and_then(chrono::DateTime::from_timestamp_millis)
                    .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
                    .unwrap_or_else(|| "-".into());
                println!(
                    "    v{:<4} {when}  {:<13} load {:<32} +{} rows, -{} replaced",
                    l.version,
                    l.operation.as_deref().unwrap_or("-"),
                    l.load_id.as_deref().unwrap_or("(not errlake)"),
                    l.rows_added.map_or("?".into(), |n| n.to_string()),
                    l.rows_removed.map_or("?".into(), |n| n.to_string()),
                );
            }
        }
    }
    if args.schema {
        for (name, info) in &infos {
            println!();
            println!("{name}:");
            for (column, data_type) in &info.columns {
                println!("  {column:<48} {data_type}");
            }
        }
    }
    Ok(())
}

/// The pipeline state: per resource, each partition's cursor, unfinished paging and error.
async fn state(lake: &Lake) -> anyhow::Result<()> {
    let state = pipeline::load_state(lake).await?;
    println!();
    if state.is_empty() {
        println!("pipeline state: none yet");
        return Ok(());
    }
    shard_summary(&state);
    println!("pipeline state (what the next run starts from), per resource and partition:");
    let mut by_resource: std::collections::BTreeMap<&str, Vec<_>> = Default::default();
    for ((resource, partition), s) in &state {
        by_resource
            .entry(resource.as_str())
            .or_default()
            .push((partition.as_str(), s));
    }
    for (resource, mut partitions) in by_resource {
        partitions.sort_by_key(|(p, _)| *p);
        let unfinished = partitions
            .iter()
            .filter(|(_, s)| s.state.resume_url.is_some())
            .count();
        let failed = partitions.iter().filter(|(_, s)| s.error.is_some()).count();
        println!(
            "  {resource}: {} partitions, {unfinished} unfinished, {failed} failed",
            partitions.len()
        );
        for (partition, s) in partitions {
            let name = if partition.is_empty() {
                "(all)"
            } else {
                partition
            };
            let cursor = s
                .state
                .cursor
                .as_deref()
                .map_or("no cursor".to_owned(), |c| format!("cursor {c}"));
            let next = match &s.state.resume_url {
                Some(_) => "  resumes mid-paging".to_owned(),
                None => String::new(),
            };
            let error = s
                .error
                .as_deref()
                .map(|e| format!("  FAILED: {e}"))
                .unwrap_or_default();
            let shard = s
                .shard
                .as_deref()
                .map(|shard| format!(" by shard {shard}"))
                .unwrap_or_default();
            println!(
                "    {name:<60} {cursor}{next}{error}  (updated {}{shard})",
                s.updated_at.as_deref().unwrap_or("-")
            );
        }
    }
    Ok(())
}

/// Per shard that wrote state rows (split runs, `--shard I/N`): its partitions, how many are
/// unfinished or failed, and its last update; nothing when no split run wrote any.
fn shard_summary(state: &std::collections::HashMap<(String, String), pipeline::StoredState>) {
    #[derive(Default)]
    struct Shard<'a> {
        partitions: usize,
        unfinished: usize,
        failed: usize,
        updated: &'a str,
    }
    let mut shards: std::collections::BTreeMap<&str, Shard<'_>> = Default::default();
    for s in state.values() {
        let Some(name) = s.shard.as_deref() else {
            continue;
        };
        let shard = shards.entry(name).or_default();
        shard.partitions += 1;
        shard.unfinished += usize::from(s.state.resume_url.is_some());
        shard.failed += usize::from(s.error.is_some());
        shard.updated = shard.updated.max(s.updated_at.as_deref().unwrap_or(""));
    }
    if shards.is_empty() {
        return;
    }
    println!("pipeline state per shard (each resumes on its own):");
    for (name, s) in shards {
        println!(
            "  shard {name}: {} partitions, {} unfinished, {} failed, last updated {}",
            s.partitions, s.unfinished, s.failed, s.updated
        );
    }
}

/// The last runs from the load history, with their outcome.
async fn runs(lake: &Lake, n: usize) -> anyhow::Result<()> {
    let reports = lake.load_reports(n).await?;
    println!();
    if reports.is_empty() {
        println!("runs: none recorded");
        return Ok(());
    }
    println!("last runs (newest first):");
    for r in reports {
        let get = |k: &str| r.get(k).cloned().unwrap_or_default();
        let rows: u64 = r
            .get("rows")
            .and_then(|v| v.as_object())
            .map(|m| m.values().filter_map(|v| v.as_u64()).sum())
            .unwrap_or(0);
        let commits = r
            .get("commits")
            .and_then(|v| v.as_array())
            .map_or(0, Vec::len);
        let failed = r
            .get("failed")
            .and_then(|v| v.as_array())
            .map_or(0, Vec::len);
        println!(
            "  {}  {:<16} {:>6.1} s  {:>6} requests  {:>8} rows  {:>3} checkpoints  {:>3} commits{}",
            get("load_id").as_str().unwrap_or("?"),
            get("outcome").as_str().unwrap_or("?"),
            get("seconds").as_f64().unwrap_or(0.0),
            r.pointer("/http/requests")
                .and_then(|v| v.as_u64())
                .unwrap_or(0),
            rows,
            get("checkpoints").as_u64().unwrap_or(0),
            commits,
            if failed > 0 {
                format!("  {failed} partitions failed")
            } else {
                String::new()
            }
        );
        if let Some(e) = r.get("error").and_then(|v| v.as_str()) {
            println!("      error: {e}");
        }
    }
    Ok(())
}
