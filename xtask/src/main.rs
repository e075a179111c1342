//! The errlake runner and developer tasks, after the cargo-xtask convention
//! (<https://github.com/matklad/cargo-xtask>): `cargo xtask <task>`, built optimized because
//! it runs real pipelines.

mod against_dlt;
mod bench;
mod bench_encoding;
mod bench_shards;
mod demo;
mod inspect;
mod progress;
mod run;
mod test;
mod vacuum;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// errlake: land an error-monitoring API in Delta Lake tables.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", version, about)]
struct Cli {
    /// How log lines are written to stderr: `plain` text or `json` objects, one per line.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Plain)]
    log_format: LogFormat,
    #[command(subcommand)]
    task: Option<Task>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Plain,
    Json,
}

static JSON_LOGS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();

/// Whether log lines are JSON (`--log-format json`).
pub(crate) fn json_logs() -> bool {
    JSON_LOGS.get().copied().unwrap_or(false)
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Run a pipeline against the API (the token from AUTH_TOKEN) into its destination.
    Run(run::RunArgs),
    /// Start the embedded mock API on loopback and run pipelines/errors.toml against it into ./lake.
    Demo(demo::DemoArgs),
    /// Serve the embedded mock API on a loopback port until Ctrl-C, to run pipelines against.
    Mock(demo::MockArgs),
    /// Check a pipeline file and print its resource graph, without sending a request.
    Check(run::CheckArgs),
    /// Show the tables of a destination: versions, rows, files, columns, last loads.
    Inspect(inspect::InspectArgs),
    /// Print the speed and memory figures: normalization against plain parsing, the whole
    /// pipeline against the embedded mock.
    Bench(bench::BenchArgs),
    /// Delete the data files errlake wrote that no table version references (left by loads that died).
    Vacuum(vacuum::VacuumArgs),
    /// Drop from a table the data files it references that are gone (deleted by hand, lost).
    Repair(vacuum::RepairArgs),
    /// Install what the tests need (a Python venv with the deltalake package) and run the whole suite.
    Test(test::TestArgs),
}

/// The pipeline allocates many short-lived values (builders, encoded pages, row groups) on
/// several threads at once; glibc's allocator spent a third more time on them, and
/// mimalloc kept twice jemalloc's memory resident (see the workspace manifest). jemalloc
/// also serves the C code's `malloc` (the manifest's `unprefixed_malloc_on_supported_platforms`):
/// zstd's contexts, made anew for every column of every row group, went to glibc's heap,
/// which kept what they freed, so that heap grew from 10 MB at 200,000 events to 33 MB at
/// 1,000,000 events (while the live heap did not); in jemalloc they are returned like the rest.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings, read once at start-up (`MALLOC_CONF` in the environment still
/// overrides them). The live heap of a run stays flat with its size, but with jemalloc's
/// defaults (8 arenas on 2 cores, freed pages kept 10 s, no background purging) resident
/// memory grew with it; two arenas, a thread that returns pages 0.3 s after they were freed,
/// and no lazily-purged middle state keep it near the live heap. With zstd's contexts in
/// jemalloc, a 1 s decay held them longer than glibc had (peaks of 213 MB at 200,000 events
/// and 236 to 245 at 1,000,000, against 191 and 202 to 206 at 0.3 s, at the same speed).
#[allow(non_upper_case_globals)]
#[unsafe(export_name = "malloc_conf")]
pub static malloc_conf: &[u8; 69] =
    b"narenas:2,background_thread:true,dirty_decay_ms:300,muzzy_decay_ms:0\0";

/// Hands the pages jemalloc keeps after frees back to the system at once, in every arena
/// (`arena.<MALLCTL_ARENAS_ALL>.purge`): called when a checkpoint's files have closed, where
/// tens of megabytes of row groups are freed together and the 0.3 s decay above would keep
/// them resident while the checkpoint reads its ids back. A failed purge only leaves the
/// pages to the decay.
pub(crate) fn release_freed_memory() {
    // SAFETY: a `mallctl` command that reads and writes nothing: every pointer is null and
    // the length zero, as jemalloc's purge command requires; the name is a C string.
    unsafe {
        tikv_jemalloc_sys::mallctl(
            c"arena.4096.purge".as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        );
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let Some(task) = cli.task else {
        use clap::CommandFactory;
        let _ = Cli::command().print_help();
        return ExitCode::SUCCESS;
    };
    let _ = JSON_LOGS.set(cli.log_format == LogFormat::Json);
    init_logging(cli.log_format);
    let ran = |code: anyhow::Result<ExitCode>| match code {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    };
    let result = match task {
        Task::Run(a) => return ran(runtime().and_then(|rt| rt.block_on(run::run(a)))),
        Task::Demo(a) => return ran(runtime().and_then(|rt| rt.block_on(demo::demo(a)))),
        Task::Mock(a) => runtime().and_then(|rt| rt.block_on(demo::mock(a))),
        Task::Check(a) => run::check(a),
        Task::Inspect(a) => runtime().and_then(|rt| rt.block_on(inspect::inspect(a))),
        Task::Test(a) => test::test(a),
        Task::Bench(a) => bench::bench(a),
        Task::Vacuum(a) => runtime().and_then(|rt| rt.block_on(vacuum::vacuum(a))),
        Task::Repair(a) => runtime().and_then(|rt| rt.block_on(vacuum::repair(a))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes on one line (see [`pipeline::error_chain`]).
fn one_line(e: &anyhow::Error) -> String {
    pipeline::error_chain(e.as_ref())
}

/// How long a blocking thread of the runtime waits for work before it ends: 0.3 s, as long
/// as jemalloc keeps freed pages, instead of tokio's 10 s.
///
/// A run's file reads and writes go through `object_store` and delta-rs on the blocking
/// pool; streaming keeps one or two such threads busy, but a checkpoint (bloom filters, key
/// columns and Delta logs read back, files closed) starts a dozen more at once, and with a
/// checkpoint every few seconds they never sat idle for 10 s: from the first checkpoint on,
/// a run kept 20 threads instead of 8, each holding its stack's touched pages and its
/// jemalloc thread cache, memory a run without checkpoints never has. Ended 0.3 s after
/// the checkpoint, they took the peak of a 5,000,000-event run from 197 to 188 MB in two
/// single runs, and the bench's medians of three rounds from 194 to 191 MB (115% to 112% of
/// the 200,000-event run's; see ARCHITECTURE.md, "Memory").
const IDLE_BLOCKING_THREAD_LIFE: std::time::Duration = std::time::Duration::from_millis(300);

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .thread_keep_alive(IDLE_BLOCKING_THREAD_LIFE)
        .enable_all()
        .build()?)
}

/// What is logged when `ERRLAKE_LOG` is not set.
pub(crate) const DEFAULT_LOG_FILTER: &str =
    "warn,progress=info,buoyant_kernel=off,deltalake_core::kernel::transaction=off";

/// Log lines go to stderr, filtered by `ERRLAKE_LOG` (default: warnings, and the progress
/// lines a run writes when stderr is not a terminal; none of the Delta kernel's).
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ERRLAKE_LOG")
        // The Delta kernel logs each error it returns, with a backtrace when RUST_BACKTRACE
        // is set; errlake reports the error once, naming the table and the file. delta-rs's
        // transaction logs a warning and an error each time another writer committed first,
        // which errlake expects: its own retry merges again and says so at info.
        .unwrap_or_else(|_| DEFAULT_LOG_FILTER.into());
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Plain => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// The workspace root, from this crate's manifest folder: never the caller's working folder.
fn workspace_root() -> PathBuf {
    // `cargo xtask` (`cargo run`) sets the variable at run time too; that one wins, because
    // clones sharing one target folder each copy their build to `target/release/xtask`, and
    // cargo does not copy it again for a clone whose build is up to date.
    // Only the xtask package's own folder counts: a test that starts xtask passes on its own.
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .filter(|dir| dir.file_name().is_some_and(|name| name == "xtask"))
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}
