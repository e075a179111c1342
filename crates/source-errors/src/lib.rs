//! The error-monitoring source: the pipeline config model, the resource graph, and the
//! parent-to-child fan-out that emits pages.
//!
//! Role in the pipeline: the first stage. [`Source::from_value`] checks the source's part of a
//! pipeline file (client, resource defaults merged into resources as dlt does, partition keys
//! resolved to parent resources, paginators and templates compiled, secrets resolved) before
//! any request; [`run`] fetches every (resource, partition) through `paginate` and
//! `http-core` and sends [`Page`]s into a bounded channel. It knows nothing of Arrow or files.
//!
//! ```
//! use std::path::Path;
//! use source_errors::{Secrets, Source};
//! let config = serde_json::json!({
//!     "client": {"base_url": "https://api.example.com",
//!                "auth": {"type": "api_key", "name": "Authorization", "api_key": "{{ secrets.auth_token }}"}},
//!     "resource_defaults": {"primary_key": "id", "write_disposition": "merge"},
//!     "resources": [
//!         {"name": "organizations", "endpoint": {"path": "/user/organizations"}},
//!         {"name": "projects", "endpoint": {"path": "/organizations/{{ stream_partition['organization_id'] }}/projects"}},
//!     ],
//! });
//! let secrets = Secrets::from_map([("auth_token".to_string(), "t".to_string())]);
//! let source = Source::from_value(config, Path::new("example.json"), &secrets).unwrap();
//! assert_eq!(source.resource("projects").unwrap().parent().unwrap().resource, "organizations");
//! ```

#![warn(missing_docs)]
#![deny(rustdoc::broken_intra_doc_links)]

mod config;
mod incremental;
mod run;
mod secrets;
mod shard;

use std::fmt;
use std::path::PathBuf;

pub use config::{
    EndpointConfig, ParentRef, Resource, ResourceConfig, Source, SourceConfig, WriteDisposition,
    config_error, deep_merge, describe_auth, partition_keys, read_pipeline_value,
};
pub use incremental::{
    Incremental, IncrementalConfig, PartitionState, RowOrder, compare_cursors, cursor_of,
    max_cursor,
};
pub use run::{
    FailedPartition, LiveStats, Page, Partition, PartitionStats, ResourceStats, RunOptions,
    SourceReport, StateKey, run, split_resources,
};
pub use secrets::{Secrets, secret_reference};
pub use shard::Shard;

/// A mistake in a pipeline file, found before any request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The pipeline file.
    pub file: PathBuf,
    /// Where in it (`resources[1].endpoint.path`); empty for the whole file.
    pub key_path: String,
    /// What is wrong and what was expected.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key_path.is_empty() {
            write!(f, "config: {}: {}", self.file.display(), self.message)
        } else {
            write!(
                f,
                "config: {}: `{}`: {}",
                self.file.display(),
                self.key_path,
                self.message
            )
        }
    }
}

impl std::error::Error for ConfigError {}

/// What can stop the source.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// The pipeline file is wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A partition value made a path that does not render.
    #[error("source: resource `{resource}`: {message}")]
    Partition {
        /// The resource.
        resource: String,
        /// What went wrong.
        message: String,
    },
    /// A paging failed.
    #[error(transparent)]
    Paginate(#[from] paginate::PaginateError),
    /// The run was cancelled.
    #[error("source: cancelled")]
    Cancelled,
}

/// The result type of this crate.
pub type Result<T, E = SourceError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests;
