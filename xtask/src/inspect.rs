//! `cargo xtask inspect`: what is in a destination.

use sink_parquet::Lake;

/// Arguments of `inspect`.
#[derive(Debug, clap::Args)]
pub(crate) struct InspectArgs {
    /// The destination: a path, file:// or s3:// URL.
    #[arg(default_value = "./lake")]
    destination: String,
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
        "{:<44} {:>8} {:>10} {:>6} {:>8}  last load",
        "table", "version", "rows", "files", "columns"
    );
    for name in tables {
        let Some(info) = lake.table_info(&name).await? else {
            continue;
        };
        println!(
            "{:<44} {:>8} {:>10} {:>6} {:>8}  {}",
            name,
            info.version,
            info.rows,
            info.files,
            info.columns.len(),
            info.last_load_id.as_deref().unwrap_or("-")
        );
    }
    Ok(())
}
