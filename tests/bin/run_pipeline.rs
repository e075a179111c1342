//! A pipeline run as its own process, for tests that kill it or measure its memory:
//! `run-pipeline <file> <base_url> <destination>`, the token from `AUTH_TOKEN`,
//! storage options (JSON) from `RUN_PIPELINE_STORAGE_OPTIONS`. Exit 0 on success, 1 on failure;
//! the last line on stdout is `peak_rss_bytes=N`, the process's peak resident memory (Linux).
//! `ERRLAKE_SHARD=I/N` makes it shard I of N; a run that ends well prints
//! `commit_retries=N` before it (the commits that found another writer first).
//! Log lines go to stderr as the runner writes them, filtered by `ERRLAKE_LOG` (none unset).

use std::path::Path;
use std::process::ExitCode;

use pipeline::{Overrides, Pipeline, RunOptions};
use source_errors::Secrets;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [file, base_url, destination] = args.as_slice() else {
        eprintln!("usage: run-pipeline <file> <base_url> <destination>");
        return ExitCode::FAILURE;
    };
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_env("ERRLAKE_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    }
    let token = std::env::var("AUTH_TOKEN").unwrap_or_default();
    // Storage options of an `s3://` destination, as JSON (the kill test on the S3 server).
    let storage_options = match std::env::var("RUN_PIPELINE_STORAGE_OPTIONS") {
        Ok(json) if !json.is_empty() => match serde_json::from_str(&json) {
            Ok(options) => options,
            Err(e) => {
                eprintln!(
                    "error: RUN_PIPELINE_STORAGE_OPTIONS is not a JSON object of strings: {e}"
                );
                return ExitCode::FAILURE;
            }
        },
        _ => Default::default(),
    };
    let shard = match std::env::var("ERRLAKE_SHARD") {
        Ok(text) => match text.parse() {
            Ok(shard) => shard,
            Err(e) => {
                eprintln!("error: ERRLAKE_SHARD: {e}");
                return ExitCode::FAILURE;
            }
        },
        Err(_) => Default::default(),
    };
    let options = RunOptions {
        shard,
        ..RunOptions::default()
    };
    let secrets = Secrets::from_map([("auth_token".to_owned(), token)]);
    let overrides = Overrides {
        base_url: Some(base_url.clone()),
        destination: Some(destination.clone()),
        storage_options,
    };
    let result = Pipeline::load(Path::new(file), &secrets, &overrides)
        .map_err(|e| e.to_string())
        .and_then(|p| {
            tokio::runtime::Runtime::new()
                .map_err(|e| e.to_string())?
                .block_on(pipeline::run(&p, &options))
                .map_err(|e| pipeline::error_chain(&e))
        });
    let peak = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
            let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kb * 1024)
        });
    if let Some(peak) = peak {
        println!("peak_rss_bytes={peak}");
    }
    match result {
        Ok(report) => {
            println!("commit_retries={}", report.commit_retries);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
