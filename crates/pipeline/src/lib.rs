//! The composition root: loads a pipeline file and runs it, wiring the source, the transform
//! workers and the sink through two bounded channels.
//!
//! Role: the only crate (with `xtask` and `tests/`) that knows every stage. Programs that
//! want to run a pipeline without the CLI call [`Pipeline::load`] and [`run`]:
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use pipeline::{Overrides, Pipeline, RunOptions, run};
//! use source_errors::Secrets;
//! let p = Pipeline::load("pipelines/errors.toml".as_ref(), &Secrets::from_env(), &Overrides::default())?;
//! let report = run(&p, &RunOptions::default()).await?;
//! for c in &report.commits {
//!     println!("{}: version {}, {} rows added", c.table, c.version, c.rows_added);
//! }
//! # Ok(()) }
//! ```
//!
//! Data flow: `source_errors::run` sends pages (one message per page) into the pages channel;
//! one transform worker per core normalizes them into per-table Arrow batches; one sink task
//! stages them as Parquet files, committed at checkpoints and when every stage has ended
//! without error; on an error, what was staged since the last checkpoint is deleted and the
//! tables stay at their last committed version.

#![warn(missing_docs)]
#![deny(rustdoc::broken_intra_doc_links)]

mod config;
mod run;
mod state;

pub use config::{ChannelConfig, CheckpointConfig, Overrides, Pipeline};
pub use run::{Interrupt, Outcome, RunOptions, RunReport, error_chain, run};
pub use state::{STATE_TABLE, StoredState, load_state};

/// Why a run failed: its report lists the commits it made before (checkpoints), if any.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    /// The pipeline file is wrong.
    #[error(transparent)]
    Config(#[from] source_errors::ConfigError),
    /// `--resources` named a resource the file does not have.
    #[error("pipeline: no resource named `{name}`")]
    UnknownResource {
        /// The name given.
        name: String,
    },
    /// `--shard` split a resource that cannot be split.
    #[error("pipeline: resource `{resource}` cannot be split between shards: {why}")]
    NotShardable {
        /// The resource.
        resource: String,
        /// Why not, and what to do.
        why: String,
    },
    /// The HTTP client could not be built.
    #[error("pipeline: building the HTTP client")]
    Client(#[source] http_core::FetchError),
    /// Fetching failed.
    #[error(transparent)]
    Source(#[from] source_errors::SourceError),
    /// Normalizing a page failed.
    #[error("transform: page {page_no} of `{resource}`{partition}", partition = if partition.is_empty() { String::new() } else { format!("[{partition}]") })]
    Transform {
        /// The resource.
        resource: String,
        /// The partition.
        partition: String,
        /// The page's number in its paging, from 1.
        page_no: usize,
        /// Why.
        #[source]
        source: Box<transform::TransformError>,
    },
    /// Writing or committing failed.
    #[error(transparent)]
    Sink(Box<sink_parquet::SinkError>),
    /// A first run into a destination that holds files errlake did not write.
    #[error(
        "pipeline: destination `{destination}` holds files errlake did not write ({list}); errlake never deletes them, but it does not write beside another tool's data unless asked: choose an empty destination, or pass --adopt-foreign-files",
        list = files.join(", ")
    )]
    ForeignFiles {
        /// The destination URL.
        destination: String,
        /// Some of those files, relative to the destination.
        files: Vec<String>,
    },
    /// The system would not start a transform worker's thread.
    #[error("pipeline: starting transform worker {index}")]
    WorkerThread {
        /// Which worker (from 0).
        index: usize,
        /// Why the thread did not start.
        #[source]
        source: std::io::Error,
    },
    /// A stage was cancelled.
    #[error("pipeline: cancelled")]
    Cancelled,
}

impl From<sink_parquet::SinkError> for PipelineError {
    fn from(e: sink_parquet::SinkError) -> Self {
        PipelineError::Sink(Box::new(e))
    }
}
