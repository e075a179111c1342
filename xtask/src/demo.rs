//! `cargo xtask demo`: the embedded mock API on loopback, the seed pipeline against it.

use std::path::PathBuf;

use mock_api::{ApiShape, DataSize, MockConfig, MockHandle};
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
    /// Which API to imitate: Bugsnag's (the seed's five endpoints) or Sentry's Web API v0
    /// (organizations, projects, issues and events under `/api/0/`).
    #[arg(long, value_enum, default_value_t = Shape::Bugsnag)]
    shape: Shape,
    /// Sentry shape: answer past this many requests a second with Sentry's 429 (no
    /// `Retry-After`), as its rate limiter does.
    #[arg(long)]
    requests_per_second: Option<u32>,
    /// Sentry shape: answer past this many requests in flight with Sentry's 429 (each
    /// answer then takes 20 ms, so that requests overlap).
    #[arg(long)]
    concurrency: Option<u32>,
}

/// The API shapes the mock serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Shape {
    Bugsnag,
    Sentry,
}

impl MockData {
    /// Starts the mock on `addr` with this data, accepting `token` (as Bugsnag's pipeline
    /// sends it, or as `Bearer <token>` in the Sentry shape).
    async fn start(
        &self,
        addr: std::net::SocketAddr,
        token: String,
    ) -> std::io::Result<MockHandle> {
        let size = DataSize {
            organizations: self.organizations,
            projects_per_org: self.projects_per_org,
            saved_searches_per_project: 3,
            errors_per_project: self.errors_per_project,
            events_per_project: self.events_per_project,
        };
        let (shape, authorization) = match self.shape {
            Shape::Bugsnag => (ApiShape::Bugsnag, token),
            Shape::Sentry => (ApiShape::Sentry, format!("Bearer {token}")),
        };
        let config = MockConfig {
            seed: 7,
            size,
            authorization,
        };
        let mock = MockHandle::serve(addr, config, shape).await?;
        mock.set_revision(self.revision);
        if self.requests_per_second.is_some() || self.concurrency.is_some() {
            mock.set_sentry_limits(Some(mock_api::sentry::SentryLimits {
                requests_per_window: self.requests_per_second.unwrap_or(u32::MAX),
                window: std::time::Duration::from_secs(1),
                concurrent: self.concurrency.unwrap_or(u32::MAX),
                latency: std::time::Duration::from_millis(20),
            }));
        }
        Ok(mock)
    }

    /// The base URL a pipeline is pointed at.
    fn base_url(&self, mock: &MockHandle) -> String {
        match self.shape {
            Shape::Bugsnag => mock.base_url(),
            Shape::Sentry => format!("{}/api/0/", mock.base_url()),
        }
    }

    /// The pipeline file of the shape.
    fn pipeline(&self) -> &'static str {
        match self.shape {
            Shape::Bugsnag => "pipelines/errors.toml",
            Shape::Sentry => "pipelines/sentry.toml",
        }
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
    let base_url = args.data.base_url(&mock);
    println!(
        "mock API (revision {}) on {base_url}; Ctrl-C stops it",
        args.data.revision,
    );
    println!(
        "  AUTH_TOKEN=... cargo xtask run {} --base-url {base_url} --destination ./lake",
        args.data.pipeline()
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
        .unwrap_or_else(|| crate::workspace_root().join(args.data.pipeline()));
    let base_url = args.data.base_url(&mock);
    println!(
        "mock API on {base_url} (revision {}); running {}",
        args.data.revision,
        file.display()
    );
    let secrets = Secrets::from_map([("auth_token".to_owned(), token)]);
    let overrides = Overrides {
        base_url: Some(base_url),
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
    let (column, table) = match args.data.shape {
        Shape::Bugsnag => ("severity", "events"),
        Shape::Sentry => ("status", "issues"),
    };
    println!(
        "  duckdb -c \"INSTALL delta; LOAD delta; SELECT {column}, count(*) FROM delta_scan('{}/{table}') GROUP BY 1\"",
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
