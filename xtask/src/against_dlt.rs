//! `cargo xtask bench --against dlt`: errlake and dlt 1.31's `rest_api_source` read the same
//! embedded mock, served by a process of its own, one tool after the other; events per
//! second, MB/s of JSON and peak memory of each, and the ratio.

use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

/// The dlt version compared against, with the parquet extra its filesystem destination needs.
const DLT: &str = "dlt[parquet]==1.31.0";

/// The mock's token for both tools.
const TOKEN: &str = "bench-token";

/// One tool's run.
struct Figures {
    seconds: f64,
    events: u64,
    peak_rss_bytes: u64,
}

impl Figures {
    fn rate(&self) -> f64 {
        self.events as f64 / self.seconds
    }
}

/// Runs the comparison per size in `sizes` (events), in `scratch`: `rounds` times each tool,
/// dlt and errlake in turn, and compares the medians.
pub(crate) fn against_dlt(sizes: &[usize], rounds: usize, scratch: &Path) -> anyhow::Result<()> {
    let python = python_with_dlt()?;
    let exe = std::env::current_exe().context("bench: locating the xtask binary")?;
    std::fs::create_dir_all(scratch)?;
    let script = scratch.join("dlt_bench.py");
    std::fs::write(&script, include_str!("dlt_bench.py"))?;
    println!();
    println!(
        "errlake against {DLT} (rest_api_source, parquet files), the same mock in a process of its own; {rounds} round(s) of dlt then errlake per size"
    );
    println!(
        "{:>8} {:>9} {:>8} {:>8} {:>10} {:>7} {:>14}",
        "events", "tool", "round", "seconds", "events/s", "MB/s", "peak RSS (MB)"
    );
    for &events in sizes {
        let mock = Mock::start(&exe, events.div_ceil(10))?;
        let (mut dlt_runs, mut errlake_runs) = (Vec::new(), Vec::new());
        // Both read the same pages; errlake counts their bytes.
        let mut json_bytes = 0.0;
        let line = |tool: &str, round: &str, f: &Figures, json_bytes: f64| {
            println!(
                "{:>8} {:>9} {:>8} {:>8.2} {:>10.0} {:>7.1} {:>14.0}",
                f.events,
                tool,
                round,
                f.seconds,
                f.rate(),
                json_bytes / 1e6 / f.seconds,
                f.peak_rss_bytes as f64 / 1e6
            );
        };
        for round in 1..=rounds {
            let dlt = dlt_run(
                &python,
                &script,
                &mock,
                &scratch.join(format!("dlt-{events}")),
            )?;
            let run = crate::bench::seeded_run(
                &exe,
                &mock,
                &scratch.join(format!("errlake-{events}")),
                &scratch.join(format!("errlake-{events}.json")),
            )?;
            json_bytes = run.http_bytes as f64;
            let errlake = Figures {
                seconds: run.seconds,
                events: run.events,
                peak_rss_bytes: run.peak_rss_bytes,
            };
            line("dlt", &round.to_string(), &dlt, json_bytes);
            line("errlake", &round.to_string(), &errlake, json_bytes);
            dlt_runs.push(dlt);
            errlake_runs.push(errlake);
        }
        let (dlt, errlake) = (median(&dlt_runs), median(&errlake_runs));
        if rounds > 1 {
            line("dlt", "median", &dlt, json_bytes);
            line("errlake", "median", &errlake, json_bytes);
        }
        println!(
            "{:>8} errlake / dlt events per second: {:.1}x; peak RSS: {:.0}%",
            "",
            errlake.rate() / dlt.rate(),
            100.0 * errlake.peak_rss_bytes as f64 / dlt.peak_rss_bytes as f64
        );
    }
    Ok(())
}

/// The median of each figure of `runs` apart.
fn median(runs: &[Figures]) -> Figures {
    use crate::bench::median_of;
    Figures {
        seconds: median_of(runs.iter().map(|r| r.seconds)),
        events: runs.first().map_or(0, |r| r.events),
        peak_rss_bytes: median_of(runs.iter().map(|r| r.peak_rss_bytes as f64)) as u64,
    }
}

/// One dlt run against `mock`, landing into `dir` (deleted afterwards).
fn dlt_run(python: &Path, script: &Path, mock: &Mock, dir: &Path) -> anyhow::Result<Figures> {
    let _ = std::fs::remove_dir_all(dir);
    let output = Command::new(python)
        .arg(script)
        .arg(&mock.base_url)
        .arg(TOKEN)
        .arg(dir)
        .stderr(Stdio::null())
        .output()
        .context("bench: running dlt")?;
    let _ = std::fs::remove_dir_all(dir);
    let last = String::from_utf8_lossy(&output.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_owned();
    if !output.status.success() {
        bail!("bench: the dlt run failed ({}): {last}", output.status);
    }
    let dlt: serde_json::Value =
        serde_json::from_str(&last).context("bench: dlt's figures are not JSON")?;
    Ok(Figures {
        seconds: dlt["seconds"].as_f64().unwrap_or(f64::NAN),
        events: dlt["events"].as_u64().unwrap_or(0),
        peak_rss_bytes: dlt["peak_rss_bytes"].as_u64().unwrap_or(0),
    })
}

/// The test virtual environment's Python, with dlt installed into it when missing.
fn python_with_dlt() -> anyhow::Result<std::path::PathBuf> {
    let python = crate::test::python_with_deltalake()?;
    let has_dlt = Command::new(&python)
        .args([
            "-c",
            "import dlt, sys; sys.exit(dlt.__version__ != '1.31.0')",
        ])
        .status()
        .is_ok_and(|s| s.success());
    if !has_dlt {
        eprintln!("bench: installing {DLT} into {}", python.display());
        if !crate::test::pip_install(&python, &[DLT])? {
            bail!("installing {DLT} failed");
        }
    }
    Ok(python)
}

/// The embedded mock served by `xtask mock` in a child process; stopped on drop.
pub(crate) struct Mock {
    child: std::process::Child,
    pub(crate) base_url: String,
    /// Held open: a closed pipe would fail the mock's next line of output.
    _stdout: std::io::BufReader<std::process::ChildStdout>,
}

impl Mock {
    pub(crate) fn start(exe: &Path, events_per_project: usize) -> anyhow::Result<Mock> {
        Mock::start_with(
            exe,
            &[
                "--events-per-project".to_owned(),
                events_per_project.to_string(),
            ],
        )
    }

    /// The mock with `args` (`xtask mock`'s data flags), on a free port.
    pub(crate) fn start_with(exe: &Path, args: &[String]) -> anyhow::Result<Mock> {
        let mut child = Command::new(exe)
            .args(["mock", "--port", "0"])
            .args(args)
            .env("AUTH_TOKEN", TOKEN)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("bench: starting the mock")?;
        let Some(out) = child.stdout.take() else {
            bail!("bench: the mock has no output");
        };
        let mut stdout = std::io::BufReader::new(out);
        let mut first = String::new();
        stdout.read_line(&mut first)?;
        // "mock API (revision 0) on http://127.0.0.1:PORT; Ctrl-C stops it"
        let base_url = first
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .map(|u| u.trim_end_matches(';').to_owned());
        match base_url {
            Some(base_url) => Ok(Mock {
                child,
                base_url,
                _stdout: stdout,
            }),
            None => {
                let _ = child.kill();
                bail!("bench: the mock did not say where it listens: {first:?}")
            }
        }
    }
}

impl Mock {
    /// `xtask run pipelines/errors.toml` against this mock into `lake`, its report to
    /// `report`; it logs warnings and errors only (`ERRLAKE_LOG` overrides), so its progress
    /// lines do not cut into a bench's table.
    pub(crate) fn seed_run(&self, exe: &Path, lake: &Path, report: &Path) -> Command {
        let mut command = Command::new(exe);
        command
            .arg("run")
            .arg(crate::workspace_root().join("pipelines/errors.toml"))
            .arg("--base-url")
            .arg(&self.base_url)
            .arg("--destination")
            .arg(lake)
            .arg("--report")
            .arg(report)
            .env("AUTH_TOKEN", TOKEN)
            .env(
                "ERRLAKE_LOG",
                std::env::var("ERRLAKE_LOG")
                    .unwrap_or_else(|_| crate::DEFAULT_LOG_FILTER.replace(",progress=info", "")),
            )
            .stdout(Stdio::null());
        command
    }
}

impl Drop for Mock {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
