//! End-to-end tests of whole pipelines: a real API server on loopback, the stages, and Delta
//! tables in a temporary folder, read back by errlake and by an independent reader.

/// Helpers: temp lakes, running pipelines, the independent Python Delta reader.
mod support;

/// The seed pipeline against the embedded mock: a full run, a merging rerun, a failing run.
mod seed_pipeline;

/// The pipeline files: TOML and JSON forms, paths and stop conditions as the seed means them.
mod pipeline_files;

/// `pipelines/bugsnag.toml` against the real recorded Bugsnag responses, served locally.
mod bugsnag_recordings;

/// `pipelines/sentry.toml` against the Sentry-shaped mock.
mod sentry;

/// `pipelines/sentry.toml` against Sentry's example bodies and recorded headers.
mod sentry_recordings;

/// Checks of the tree: module docs, no skipped tests, allowed dependency edges, no secrets.
mod tidy;

/// Pipelines into `s3://` destinations on a moto server started by the test.
mod s3;

/// Property tests of the fan-out: random trees, page counts and faults.
mod fan_out;

/// The real recorded responses normalized: snapshots, and the names next to dlt's.
mod normalize_fixtures;

/// SIGKILL at many instants of a run, then a rerun: consistent tables, nothing lost.
mod kill;

/// Incremental cursors, checkpoints, resume after a kill, keep-going and interrupts.
mod incremental;

/// Data files of the configured size, row groups of the configured rows.
mod file_sizing;

/// What errlake never does: delete others' files, store a secret, move a table in a failed
/// run, send a request outside a partition's path (issue 12).
mod hardening;

/// Recorded pages mutated at random through parse and normalization (issue 12).
mod bad_pages;

/// Shards of one pipeline in processes of their own, at once, into one lake on S3.
mod shards;

/// The Kubernetes manifests of `deploy/` have the keys a sharded run needs.
mod deploy;
