//! A pipeline run as its own process, for tests that kill it: `run-pipeline <file>
//! <base_url> <destination>`, the token from `AUTH_TOKEN`,
//! storage options (JSON) from `RUN_PIPELINE_STORAGE_OPTIONS`. Exit 0 on success, 1 on failure.

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
                .block_on(pipeline::run(&p, &RunOptions::default()))
                .map_err(|e| {
                    let mut text = e.to_string();
                    let mut source = std::error::Error::source(&e);
                    while let Some(cause) = source {
                        text.push_str(": ");
                        text.push_str(&cause.to_string());
                        source = cause.source();
                    }
                    text
                })
        });
    match result {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
