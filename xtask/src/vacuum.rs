//! `cargo xtask vacuum`: delete the data files errlake wrote that no table version
//! references (left by loads that died before their commit); a table that keeps history
//! keeps the files its commits removed until its retention ends. Files errlake did not
//! write are never touched. `cargo xtask repair`: drop from a table the data files it
//! references that are gone.

use std::time::Duration;

use sink_parquet::Lake;

/// Arguments of `vacuum`.
#[derive(Debug, clap::Args)]
pub(crate) struct VacuumArgs {
    /// The destination: a path, file:// or s3:// URL.
    #[arg(default_value = "./lake")]
    destination: String,
    /// Only files older than this many seconds: younger ones may belong to a load still
    /// running. 0 deletes every unreferenced file (no load may be running).
    #[arg(long, default_value_t = 3600)]
    older_than: u64,
    /// Only print what would be deleted, file by file.
    #[arg(long)]
    dry_run: bool,
}

pub(crate) async fn vacuum(args: VacuumArgs) -> anyhow::Result<()> {
    let lake = Lake::open(&args.destination)?;
    let (mut files, mut bytes) = (0, 0);
    for folder in lake.folders().await? {
        let o = lake
            .remove_orphans(&folder, Duration::from_secs(args.older_than), args.dry_run)
            .await?;
        if args.dry_run {
            for path in &o.paths {
                println!("would delete {path}");
            }
        }
        if o.files > 0 {
            println!(
                "{folder}: {} {} unreferenced files ({:.1} MB)",
                if args.dry_run {
                    "would delete"
                } else {
                    "deleted"
                },
                o.files,
                o.bytes as f64 / 1e6
            );
        }
        files += o.files;
        bytes += o.bytes;
    }
    println!(
        "{}: {files} unreferenced data files, {:.1} MB{}",
        lake.url(),
        bytes as f64 / 1e6,
        if args.dry_run {
            " (dry run)"
        } else {
            " deleted"
        }
    );
    Ok(())
}

/// Arguments of `repair`.
#[derive(Debug, clap::Args)]
pub(crate) struct RepairArgs {
    /// The destination: a path, file:// or s3:// URL.
    #[arg(default_value = "./lake")]
    destination: String,
    /// The table whose missing data files are dropped (their rows are lost).
    #[arg(long)]
    table: String,
}

/// Drops the data files a table references but that are gone, so that it reads and loads again.
pub(crate) async fn repair(args: RepairArgs) -> anyhow::Result<()> {
    let lake = Lake::open(&args.destination)?;
    let dropped = lake.repair(&args.table).await?;
    if dropped.is_empty() {
        println!(
            "{}: every data file of `{}` is there; nothing to repair",
            lake.url(),
            args.table
        );
    }
    for file in &dropped {
        println!(
            "{}/{file}: dropped from the table (its rows are lost)",
            args.table
        );
    }
    Ok(())
}
