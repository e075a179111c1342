//! A pipeline run as its own process, for tests that kill it: `run-pipeline <file>
//! <base_url> <destination>`, the token from `AUTH_TOKEN`. Exit 0 on success, 1 on failure.

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
    let secrets = Secrets::from_map([("auth_token".to_owned(), token)]);
    let overrides = Overrides {
        base_url: Some(base_url.clone()),
        destination: Some(destination.clone()),
        ..Overrides::default()
    };
    let result = Pipeline::load(Path::new(file), &secrets, &overrides)
        .map_err(|e| e.to_string())
        .and_then(|p| {
            tokio::runtime::Runtime::new()
                .map_err(|e| e.to_string())?
                .block_on(pipeline::run(&p, &RunOptions::default()))
                .map_err(|e| e.to_string())
        });
    match result {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
