//! The pipeline file: the stages' sections nested in one file, loaded and checked.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use sink_parquet::ParquetSinkConfig;
use source_errors::{ConfigError, Secrets, Source, config_error, read_pipeline_value};
use transform::NormalizeConfig;

/// Channel capacities (`[channels]` in the pipeline file).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelConfig {
    /// Pages waiting for a transform worker (each page is held as its body and the body's
    /// tape, about 2.5 times the body: 0.5 MB for 50 full events). Default: 8.
    #[serde(default = "default_pages")]
    pub channel_capacity_pages: usize,
    /// Page batches waiting for the sink. Default: 8.
    #[serde(default = "default_batches")]
    pub channel_capacity_batches: usize,
    /// Transform workers. Default: 0, meaning one per core.
    #[serde(default)]
    pub transform_workers: usize,
}

fn default_pages() -> usize {
    8
}
fn default_batches() -> usize {
    8
}

impl Default for ChannelConfig {
    fn default() -> Self {
        ChannelConfig {
            channel_capacity_pages: default_pages(),
            channel_capacity_batches: default_batches(),
            transform_workers: 0,
        }
    }
}

/// When a run commits what it has landed so far (`[checkpoint]` in the pipeline file): a
/// checkpoint is one commit per table with the state of every paging it covers, so a run
/// that dies keeps its checkpoints and the next run goes on from them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointConfig {
    /// Commit after this many pages landed since the last checkpoint. Default: 5000 (against
    /// a rate-limited API the seconds come first). Each checkpoint ends a data file per
    /// table and costs a merge probe: at 1000, a million-event run against the mock took
    /// twice as long as at 5000 (84 s and 44 s), most of it packing the small files after.
    #[serde(default = "default_checkpoint_pages")]
    pub pages: u64,
    /// Commit when this many seconds passed since the last checkpoint (checked as pages
    /// land). Default: 300.
    #[serde(default = "default_checkpoint_seconds")]
    pub seconds: u64,
}

fn default_checkpoint_pages() -> u64 {
    5000
}
fn default_checkpoint_seconds() -> u64 {
    300
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig {
            pages: default_checkpoint_pages(),
            seconds: default_checkpoint_seconds(),
        }
    }
}

/// What the command line may override in a pipeline file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// Replaces `client.base_url`.
    pub base_url: Option<String>,
    /// Replaces `destination`.
    pub destination: Option<String>,
    /// Added to (and overriding) `storage_options`.
    pub storage_options: BTreeMap<String, String>,
}

/// A checked pipeline, ready to run.
#[derive(Debug, Clone)]
pub struct Pipeline {
    /// The file it came from.
    pub file: PathBuf,
    /// Its name (`name`, or the file's stem).
    pub name: String,
    /// Where the tables go: a path, `file://` or `s3://` URL.
    pub destination: String,
    /// Options of an `s3://` destination (`aws_endpoint`, `aws_region`, `aws_allow_http`, ...);
    /// credentials belong in the environment (`AWS_ACCESS_KEY_ID`, ...), not in the file.
    pub storage_options: BTreeMap<String, String>,
    /// The source: client and resources.
    pub source: Arc<Source>,
    /// Normalization settings.
    pub normalize: NormalizeConfig,
    /// File sizing.
    pub sink: ParquetSinkConfig,
    /// Channel capacities and workers.
    pub channels: ChannelConfig,
    /// When a run commits mid-way.
    pub checkpoint: CheckpointConfig,
}

/// The keys of a pipeline file that belong to the composition root; the rest is the source's.
const ROOT_KEYS: &[&str] = &[
    "name",
    "destination",
    "storage_options",
    "normalize",
    "sink",
    "channels",
    "checkpoint",
];

impl Pipeline {
    /// Loads a `.toml` or `.json` pipeline file and checks it, before any request.
    pub fn load(
        file: &Path,
        secrets: &Secrets,
        overrides: &Overrides,
    ) -> Result<Pipeline, ConfigError> {
        let value = read_pipeline_value(file)?;
        Pipeline::from_value(value, file, secrets, overrides)
    }

    /// Checks a pipeline given as a JSON value; `file` names it in errors.
    pub fn from_value(
        value: Value,
        file: &Path,
        secrets: &Secrets,
        overrides: &Overrides,
    ) -> Result<Pipeline, ConfigError> {
        let Value::Object(mut map) = value else {
            return Err(config_error(
                file,
                "",
                "expected a table of keys at the top",
            ));
        };
        let mut take = |key: &str| map.remove(key);
        let name = match take("name") {
            None => file
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("pipeline")
                .to_owned(),
            Some(Value::String(s)) => s,
            Some(other) => {
                return Err(config_error(
                    file,
                    "name",
                    format!("expected a string, got {other}"),
                ));
            }
        };
        let destination = match (overrides.destination.clone(), take("destination")) {
            (Some(d), _) => d,
            (None, None) => "./lake".to_owned(),
            (None, Some(Value::String(s))) => s,
            (None, Some(other)) => {
                return Err(config_error(
                    file,
                    "destination",
                    format!("expected a path or URL, got {other}"),
                ));
            }
        };
        let mut storage_options: BTreeMap<String, String> =
            section(file, "storage_options", take("storage_options"))?;
        storage_options.extend(overrides.storage_options.clone());
        let normalize: NormalizeConfig = section(file, "normalize", take("normalize"))?;
        let sink = sink_section(file, take("sink"), &normalize)?;
        let channels: ChannelConfig = section(file, "channels", take("channels"))?;
        let checkpoint: CheckpointConfig = section(file, "checkpoint", take("checkpoint"))?;
        if checkpoint.pages == 0 || checkpoint.seconds == 0 {
            return Err(config_error(
                file,
                "checkpoint",
                "`pages` and `seconds` must be at least 1",
            ));
        }
        debug_assert!(ROOT_KEYS.iter().all(|k| !map.contains_key(*k)));
        let mut source_value = Value::Object(map);
        if let Some(url) = &overrides.base_url
            && let Some(client) = source_value
                .get_mut("client")
                .and_then(Value::as_object_mut)
        {
            client.insert("base_url".into(), Value::String(url.clone()));
        }
        let source = Source::from_value(source_value, file, secrets).map_err(|e| match e {
            source_errors::SourceError::Config(c) => c,
            other => config_error(file, "", other.to_string()),
        })?;
        if channels.channel_capacity_pages == 0 || channels.channel_capacity_batches == 0 {
            return Err(config_error(
                file,
                "channels",
                "capacities must be at least 1",
            ));
        }
        Ok(Pipeline {
            file: file.to_path_buf(),
            name,
            destination,
            storage_options,
            source: Arc::new(source),
            normalize,
            sink,
            channels,
            checkpoint,
        })
    }
}

/// The `[sink]` section, checked, with the `hard_delete` column hints of `[normalize]`.
fn sink_section(
    file: &Path,
    value: Option<Value>,
    normalize: &NormalizeConfig,
) -> Result<ParquetSinkConfig, ConfigError> {
    let mut sink: ParquetSinkConfig = section(file, "sink", value)?;
    for (table, hints) in &normalize.tables {
        for (column, hint) in &hints.columns {
            if hint.hard_delete {
                sink.hard_delete_columns
                    .insert(table.clone(), column.clone());
            }
        }
    }
    if !(1..=22).contains(&sink.zstd_level) {
        return Err(config_error(
            file,
            "sink.zstd_level",
            format!("must be from 1 to 22, got {}", sink.zstd_level),
        ));
    }
    Ok(sink)
}

fn section<T: serde::de::DeserializeOwned + Default>(
    file: &Path,
    key: &str,
    value: Option<Value>,
) -> Result<T, ConfigError> {
    match value {
        None => Ok(T::default()),
        Some(v) => serde_path_to_error::deserialize(v).map_err(|e| {
            let inner = e.path().to_string();
            let key_path = if inner == "." {
                key.to_owned()
            } else {
                format!("{key}.{inner}")
            };
            config_error(file, &key_path, e.into_inner().to_string())
        }),
    }
}
