//! `cargo xtask inspect`: what is in a destination: tables, versions, rows, files, schemas
//! and the last loads.

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
    let tables = lake.table_names().await?;
    if tables.is_empty() {
        println!("{}: no tables yet", lake.url());
        return Ok(());
    }
    println!("{}", lake.url());
    println!(
        "{:<44} {:>8} {:>10} {:>6} {:>8}",
        "table", "version", "rows", "files", "columns"
    );
    let mut infos = Vec::new();
    for name in tables {
        let Some(info) = lake.table_info(&name).await? else {
            continue;
        };
        println!(
            "{:<44} {:>8} {:>10} {:>6} {:>8}",
            name,
            info.version,
            info.rows,
            info.files,
            info.columns.len(),
        );
        infos.push((name, info));
    }
    if args.loads > 0 {
        println!();
        println!("last loads (newest first):");
        for (name, info) in &infos {
            println!("  {name}");
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
