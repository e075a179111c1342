//! `cargo xtask bench --only shards`: one pipeline split into 1, 2 and 4 shards, each a
//! process of its own, all at once into one lake, as an Indexed Job runs them; what their
//! concurrent commits cost (retries, bytes rewritten) on a first landing and on a merge of
//! changed data.

use std::path::Path;
use std::process::Child;
use std::time::Instant;

use anyhow::Context;

use crate::against_dlt::Mock;

/// What the shards of one landing did together.
#[derive(Default)]
struct Landing {
    seconds: f64,
    events: u64,
    commits: u64,
    retries: u64,
    bytes_rewritten: u64,
    bytes_thrown_away: u64,
    peak_rss: u64,
}

/// Runs the bench for each number of shards in `counts`, `events` events in all (16
/// projects), in lakes under `scratch`.
pub(crate) fn shards_bench(counts: &[u32], events: usize, scratch: &Path) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("bench: locating the xtask binary")?;
    println!();
    println!(
        "shards: `xtask run pipelines/errors.toml --shard I/N`, N processes at once into one local lake; the mock (2 organizations x 8 projects, {events} events) in a process of its own"
    );
    println!(
        "  {:>6} {:<24} {:>8} {:>10} {:>8} {:>8} {:>16} {:>16} {:>14}",
        "shards",
        "landing",
        "seconds",
        "events/s",
        "commits",
        "retries",
        "rewritten (MB)",
        "by retries (MB)",
        "peak RSS (MB)"
    );
    let per_project = events.div_ceil(16);
    for &n in counts {
        let lake = scratch.join(format!("shards-{n}"));
        let _ = std::fs::remove_dir_all(&lake);
        std::fs::create_dir_all(&lake)?;
        for (revision, what) in [(0, "first, empty lake"), (1, "merge of revision 1")] {
            let mock = Mock::start_with(
                &exe,
                &[
                    "--projects-per-org".to_owned(),
                    "8".to_owned(),
                    "--events-per-project".to_owned(),
                    per_project.to_string(),
                    "--revision".to_owned(),
                    revision.to_string(),
                ],
            )?;
            let l = land_in_shards(&exe, &mock, &lake, n)?;
            drop(mock);
            println!(
                "  {:>6} {:<24} {:>8.2} {:>10.0} {:>8} {:>8} {:>16.1} {:>16.1} {:>14.0}",
                n,
                what,
                l.seconds,
                l.events as f64 / l.seconds,
                l.commits,
                l.retries,
                l.bytes_rewritten as f64 / 1e6,
                l.bytes_thrown_away as f64 / 1e6,
                l.peak_rss as f64 / 1e6,
            );
        }
        let _ = std::fs::remove_dir_all(&lake);
    }
    Ok(())
}

/// Runs `n` shards at once against `mock` into `lake`; their figures added up (wall time
/// and peak memory: the largest).
fn land_in_shards(exe: &Path, mock: &Mock, lake: &Path, n: u32) -> anyhow::Result<Landing> {
    let started = Instant::now();
    let runs: Vec<(Child, std::path::PathBuf)> = (0..n)
        .map(|i| {
            let report = lake.with_extension(format!("shard-{i}.json"));
            let child = mock
                .seed_run(exe, lake, &report)
                .arg("--shard")
                .arg(format!("{i}/{n}"))
                .spawn()
                .context("bench: starting a shard")?;
            Ok((child, report))
        })
        .collect::<anyhow::Result<_>>()?;
    let mut landing = Landing::default();
    for (i, (mut child, report)) in runs.into_iter().enumerate() {
        let status = child.wait()?;
        anyhow::ensure!(status.success(), "bench: shard {i}/{n} failed ({status})");
        let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&report)?)?;
        let _ = std::fs::remove_file(lake.with_extension(format!("shard-{i}.json")));
        landing.events += report["rows"]["events"].as_u64().unwrap_or(0);
        landing.retries += report["commit_retries"].as_u64().unwrap_or(0);
        landing.peak_rss = landing
            .peak_rss
            .max(report["peak_rss_bytes"].as_u64().unwrap_or(0));
        for c in report["commits"].as_array().into_iter().flatten() {
            landing.commits += 1;
            landing.bytes_rewritten += c["bytes_rewritten"].as_u64().unwrap_or(0);
            landing.bytes_thrown_away += c["bytes_rewritten_by_retries"].as_u64().unwrap_or(0);
        }
    }
    landing.seconds = started.elapsed().as_secs_f64();
    Ok(landing)
}
