//! `cargo xtask demo`: the embedded mock API on loopback, the seed pipeline against it.

use std::path::PathBuf;

use mock_api::{DataSize, MockConfig, MockHandle};
use pipeline::{Overrides, Pipeline, RunOptions};
use source_errors::Secrets;

/// The mock's data: its size and revision, shared by `demo` and `mock`.
#[derive(Debug, clap::Args)]
pub(crate) struct MockData {
    /// Organizations in the mock.
    #[arg(long, default_value_t = 2)]
    organizations: usize,
    /// Projects per organization.
    #[arg(long, default_value_t = 5)]
    projects_per_org: usize,
    /// Errors per project.
    #[arg(long, default_value_t = 40)]
    errors_per_project: usize,
    /// Events per project (about 4 KB each, nested).
    #[arg(long, default_value_t = 500)]
    events_per_project: usize,
    /// Serve this revision of the data (0, 1, 2, ...: later ones change and add rows), to see
    /// a merge.
    #[arg(long, default_value_t = 0)]
    revision: u32,
}

impl MockData {
    /// Starts the mock on `addr` with this data, accepting `authorization`.
    async fn start(
        &self,
        addr: std::net::SocketAddr,
        authorization: String,
    ) -> std::io::Result<MockHandle> {
        let size = DataSize {
            organizations: self.organizations,
            projects_per_org: self.projects_per_org,
            saved_searches_per_project: 3,
            errors_per_project: self.errors_per_project,
            events_per_project: self.events_per_project,
        };
        let mock = MockHandle::start_on(
            addr,
            MockConfig {
                seed: 7,
                size,
                authorization,
            },
        )
        .await?;
        mock.set_revision(self.revision);
        Ok(mock)
    }
}

/// Arguments of `demo`.
#[derive(Debug, clap::Args)]
pub(crate) struct DemoArgs {
    /// Where the tables go.
    #[arg(long, default_value = "./lake")]
    destination: String,
    #[command(flatten)]
    data: MockData,
    /// The pipeline file to run.
    #[arg(long)]
    pipeline: Option<PathBuf>,
    #[command(flatten)]
    flags: crate::run::RunFlags,
}

/// Arguments of `mock`.
#[derive(Debug, clap::Args)]
pub(crate) struct MockArgs {
    /// The loopback port (0: any free one).
    #[arg(long, default_value_t = 8377)]
    port: u16,
    /// The exact `Authorization` header value the mock accepts (the pipeline's `auth_token`).
    #[arg(long, env = "AUTH_TOKEN", hide_env_values = true)]
    token: String,
    #[command(flatten)]
    data: MockData,
}

pub(crate) async fn mock(args: MockArgs) -> anyhow::Result<()> {
    let mock = args
        .data
        .start(
            std::net::SocketAddr::from(([127, 0, 0, 1], args.port)),
            args.token,
        )
        .await?;
    println!(
        "mock API (revision {}) on {}; Ctrl-C stops it",
        args.data.revision,
        mock.base_url()
    );
    println!(
        "  AUTH_TOKEN=... cargo xtask run pipelines/errors.toml --base-url {} --destination ./lake",
        mock.base_url()
    );
    tokio::signal::ctrl_c().await?;
    Ok(())
}

pub(crate) async fn demo(args: DemoArgs) -> anyhow::Result<std::process::ExitCode> {
    let token = format!("demo-{:016x}", fastrand_u64());
    let mock = args
        .data
        .start(
            std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            token.clone(),
        )
        .await?;
    let file = args
        .pipeline
        .unwrap_or_else(|| crate::workspace_root().join("pipelines/errors.toml"));
    println!(
        "mock API on {} (revision {}); running {}",
        mock.base_url(),
        args.data.revision,
        file.display()
    );
    let secrets = Secrets::from_map([("auth_token".to_owned(), token)]);
    let overrides = Overrides {
        base_url: Some(mock.base_url()),
        destination: Some(args.destination.clone()),
        ..Overrides::default()
    };
    let p = Pipeline::load(&file, &secrets, &overrides)?;
    let (report, code) = crate::run::execute(&p, RunOptions::default(), &args.flags).await?;
    let events = report.rows.get("events").copied().unwrap_or(0);
    if report.seconds > 0.0 {
        println!("{:.0} events/s", events as f64 / report.seconds);
    }
    println!();
    println!("query it with DuckDB:");
    println!(
        "  duckdb -c \"INSTALL delta; LOAD delta; SELECT severity, count(*) FROM delta_scan('{}/events') GROUP BY 1\"",
        args.destination.trim_end_matches('/')
    );
    println!("see what landed, the pipeline state and the last loads:");
    println!(
        "  cargo xtask inspect {}",
        args.destination.trim_end_matches('/')
    );
    Ok(code)
}

/// A random number for the demo's throwaway token.
fn fastrand_u64() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (t.as_nanos() as u64) ^ u64::from(std::process::id()).rotate_left(32)
}
