//! The lake: a destination URL, its object store, and the Delta tables under it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use deltalake::kernel::StructType;
use deltalake::kernel::engine::arrow_conversion::TryFromArrow;
use deltalake::{DeltaTable, DeltaTableBuilder};
use object_store::ObjectStore;
use object_store::path::Path as StorePath;
use url::Url;

use transform::TableSchema;

use crate::files::is_own_data_file;

use crate::{Result, SinkError};

/// The part size of a multipart upload: S3's smallest. Each open file holds up to one part
/// being filled and two being sent, so a smaller part is less memory (8 MiB parts held a
/// fifth of the run's heap at its peak).
const UPLOAD_PART_BYTES: usize = 5 * 1024 * 1024;

/// The Delta table property (the protocol's own, which Spark's and delta-rs' `VACUUM`
/// honor too) that makes a table keep the files its commits removed, for readers of older
/// versions, for as long as it says (`interval 604800 seconds`). A table without it has
/// them deleted right after each commit, so a plain `*.parquet` glob sees its rows.
pub const KEEP_HISTORY_PROPERTY: &str = "delta.deletedFileRetentionDuration";

/// How long a table keeps the files its commits removed: `None` when it does not keep
/// history (the property is unset, or says zero).
pub(crate) fn kept_history(
    state: &deltalake::table::state::DeltaTableState,
) -> Option<std::time::Duration> {
    let snapshot = state.snapshot();
    snapshot
        .metadata()
        .configuration()
        .contains_key(KEEP_HISTORY_PROPERTY)
        .then(|| {
            use deltalake::table::config::TablePropertiesExt;
            snapshot
                .table_properties()
                .deleted_file_retention_duration()
        })
        .filter(|d| !d.is_zero())
}

/// A destination: where the tables live, and the store that reaches it.
#[derive(Debug, Clone)]
pub struct Lake {
    /// The destination as a URL with a trailing `/` (`file:///data/lake/`, `s3://bucket/prefix/`).
    url: Url,
    /// The store, rooted at the filesystem root or the bucket.
    store: Arc<dyn ObjectStore>,
    /// The destination's path within the store.
    prefix: StorePath,
}

impl Lake {
    /// Opens a destination: a local path (created if missing), a `file://` URL, or an
    /// `s3://bucket/prefix` URL (credentials, region and endpoint from the standard AWS
    /// environment variables, e.g. `AWS_ENDPOINT_URL` for an S3-compatible server).
    pub fn open(destination: &str) -> Result<Lake> {
        Lake::open_with_options(destination, &BTreeMap::new())
    }

    /// Opens a destination with storage options that take precedence over the environment:
    /// for S3, `object_store`'s `AmazonS3ConfigKey` names such as `aws_endpoint`,
    /// `aws_region`, `aws_allow_http`, `aws_access_key_id`.
    pub fn open_with_options(
        destination: &str,
        options: &BTreeMap<String, String>,
    ) -> Result<Lake> {
        let bad = |message: String| SinkError::Destination {
            destination: destination.to_owned(),
            message,
        };
        let url = if destination.contains("://") {
            Url::parse(destination).map_err(|e| bad(e.to_string()))?
        } else {
            let path = std::path::Path::new(destination);
            std::fs::create_dir_all(path)
                .map_err(|e| bad(format!("cannot create the folder: {e}")))?;
            let abs = std::fs::canonicalize(path).map_err(|e| bad(e.to_string()))?;
            Url::from_directory_path(&abs).map_err(|()| bad("not an absolute path".into()))?
        };
        let mut url = url;
        if !url.path().ends_with('/') {
            let p = format!("{}/", url.path());
            url.set_path(&p);
        }
        let (store, prefix): (Arc<dyn ObjectStore>, StorePath) = match url.scheme() {
            "file" if !options.is_empty() => {
                return Err(bad(
                    "storage options apply to s3:// destinations only".into()
                ));
            }
            "file" => {
                let path = url
                    .to_file_path()
                    .map_err(|()| bad("not a local path".into()))?;
                std::fs::create_dir_all(&path)
                    .map_err(|e| bad(format!("cannot create the folder: {e}")))?;
                let store = object_store::local::LocalFileSystem::new();
                let prefix =
                    StorePath::from_filesystem_path(&path).map_err(|e| bad(e.to_string()))?;
                (Arc::new(store), prefix)
            }
            "s3" | "s3a" => {
                let bucket = url
                    .host_str()
                    .ok_or_else(|| bad("no bucket in the URL".into()))?
                    .to_owned();
                let mut builder =
                    object_store::aws::AmazonS3Builder::from_env().with_bucket_name(&bucket);
                for (key, value) in options {
                    let key: object_store::aws::AmazonS3ConfigKey = key
                        .parse()
                        .map_err(|_| bad(format!("unknown storage option `{key}`")))?;
                    builder = builder.with_config(key, value);
                }
                let store = builder.build().map_err(|e| bad(e.to_string()))?;
                register_s3_logstore();
                (
                    Arc::new(store),
                    StorePath::from(url.path().trim_matches('/')),
                )
            }
            other => {
                return Err(bad(format!(
                    "unsupported scheme `{other}`: use a path, file:// or s3://"
                )));
            }
        };
        Ok(Lake { url, store, prefix })
    }

    /// The destination URL.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The destination's folder in its store.
    pub(crate) fn prefix(&self) -> &StorePath {
        &self.prefix
    }

    /// The store, rooted at the filesystem root or the bucket.
    pub(crate) fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The URL of a table's folder.
    pub(crate) fn table_url(&self, table: &str) -> Url {
        // Table names are normalized identifiers: letters, digits and `_`.
        let mut url = self.url.clone();
        let p = format!("{}{}/", self.url.path(), table);
        url.set_path(&p);
        url
    }

    /// The store path of a file in a table's folder.
    pub(crate) fn file_path(&self, table: &str, file: &str) -> StorePath {
        self.prefix.clone().join(table).join(file)
    }

    /// A data file of `table` of known size, to read through the async Parquet reader.
    pub(crate) fn data_file(&self, table: &str, file: &str, size: u64) -> crate::read::StoreFile {
        crate::read::StoreFile::new(self.store().clone(), self.file_path(table, file), size)
    }

    /// A new data file of `table`, written as it streams: a small file goes up in one put, a
    /// large one as a multipart upload of [`UPLOAD_PART_BYTES`] parts, two in flight (enough
    /// to keep a connection busy, little memory per open file).
    fn upload(&self, table: &str, file: &str) -> object_store::buffered::BufWriter {
        object_store::buffered::BufWriter::with_capacity(
            self.store().clone(),
            self.file_path(table, file),
            UPLOAD_PART_BYTES,
        )
        .with_max_concurrency(2)
    }

    /// A Parquet writer of a new data file of `table`, uploaded as it is written.
    pub(crate) fn parquet_writer(
        &self,
        table: &str,
        file: &str,
        schema: &arrow_schema::SchemaRef,
        properties: parquet::file::properties::WriterProperties,
    ) -> parquet::errors::Result<crate::upload::UploadingParquetWriter> {
        crate::upload::UploadingParquetWriter::try_new(
            self.upload(table, file),
            schema.clone(),
            properties,
        )
    }

    /// Stores a whole object.
    pub(crate) async fn put(&self, path: &StorePath, bytes: Vec<u8>) -> Result<()> {
        use object_store::ObjectStoreExt;
        self.store()
            .put(path, bytes.into())
            .await
            .map_err(|source| SinkError::Store {
                path: path.to_string(),
                source,
            })?;
        Ok(())
    }

    /// Deletes data files of `table` that no commit needs (any more). A file that cannot be
    /// deleted is logged and left to `remove_orphans`: the table is right either way. A file
    /// errlake did not write (a table another tool wrote first) is never deleted: its
    /// removal from the table is the commit's, the file stays.
    /// The names are taken before the returned future runs, so it holds only owned paths
    /// (and stays `Send` whatever iterator the caller passes).
    pub(crate) fn delete_files<S: AsRef<str>>(
        &self,
        table: &str,
        names: impl IntoIterator<Item = S>,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        use object_store::ObjectStoreExt;
        let paths: Vec<StorePath> = names
            .into_iter()
            .filter(|name| {
                let own = is_own_data_file(name.as_ref());
                if !own {
                    tracing::info!(
                        table,
                        file = name.as_ref(),
                        "left in place: errlake did not write it"
                    );
                }
                own
            })
            .map(|name| self.file_path(table, name.as_ref()))
            .collect();
        let (store, table) = (self.store.clone(), table.to_owned());
        async move {
            for path in paths {
                if let Err(error) = store.delete(&path).await {
                    tracing::warn!(table, file = %path, %error, "could not delete a data file");
                }
            }
        }
    }

    /// The Delta table `table`, loaded; `None` if there is none yet. A log that cannot be
    /// read is [`SinkError::CorruptLog`], naming the commit file, where one is not JSON.
    pub(crate) async fn load_table(&self, table: &str) -> Result<Option<DeltaTable>> {
        let fail = |source| SinkError::Delta {
            table: table.to_owned(),
            source,
        };
        let mut t = self.unloaded_table(table)?;
        if !t
            .log_store()
            .is_delta_table_location()
            .await
            .map_err(fail)?
        {
            return Ok(None);
        }
        if let Err(source) = t.load().await {
            return Err(self.unreadable_log(table, source).await);
        }
        Ok(Some(t))
    }

    /// Why a table's log cannot be read: the first commit file with a line that is not
    /// JSON, or else delta-rs's error as it stands.
    async fn unreadable_log(&self, table: &str, source: deltalake::DeltaTableError) -> SinkError {
        use object_store::ObjectStoreExt;
        let log = self.prefix.clone().join(table).join("_delta_log");
        let mut commits: Vec<StorePath> = self
            .list_under(&log)
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|(_, o)| o.location)
            .filter(|p| p.as_ref().ends_with(".json"))
            .collect();
        commits.sort();
        for path in commits {
            let Ok(bytes) = async { self.store.get(&path).await?.bytes().await }.await else {
                continue;
            };
            let bad = bytes
                .split(|b| *b == b'\n')
                .enumerate()
                .filter(|(_, line)| !line.iter().all(u8::is_ascii_whitespace))
                .find_map(|(i, line)| {
                    serde_json::from_slice::<serde::de::IgnoredAny>(line)
                        .err()
                        .map(|e| (i + 1, e))
                });
            if let Some((line, error)) = bad {
                let file = path.filename().unwrap_or_default();
                return SinkError::CorruptLog {
                    table: table.to_owned(),
                    file: format!("{}_delta_log/{file}", self.table_url(table)),
                    message: format!("line {line} is not JSON ({error})"),
                };
            }
        }
        SinkError::Delta {
            table: table.to_owned(),
            source,
        }
    }

    /// A table as of one version.
    pub(crate) async fn load_table_version(&self, table: &str, version: u64) -> Result<DeltaTable> {
        let mut t = self.unloaded_table(table)?;
        t.load_version(version)
            .await
            .map_err(|source| SinkError::Delta {
                table: table.to_owned(),
                source,
            })?;
        Ok(t)
    }

    /// A handle on a table folder on this lake's store, nothing read yet.
    pub(crate) fn unloaded_table(&self, table: &str) -> Result<DeltaTable> {
        let url = self.table_url(table);
        DeltaTableBuilder::from_url(url.clone())
            .and_then(|b| b.with_storage_backend(self.store.clone(), url).build())
            .map_err(|source| SinkError::Delta {
                table: table.to_owned(),
                source,
            })
    }

    /// Every object under `folder` (a store path), with its path relative to the folder.
    pub(crate) async fn list_under(
        &self,
        folder: &StorePath,
    ) -> Result<Vec<(String, object_store::ObjectMeta)>> {
        use futures::TryStreamExt;
        let objects: Vec<object_store::ObjectMeta> = self
            .store
            .list(Some(folder))
            .try_collect()
            .await
            .map_err(|source| SinkError::Store {
                path: folder.to_string(),
                source,
            })?;
        Ok(objects
            .into_iter()
            .map(|o| {
                let relative = o
                    .location
                    .as_ref()
                    .strip_prefix(folder.as_ref())
                    .unwrap_or(o.location.as_ref())
                    .trim_start_matches('/')
                    .to_owned();
                (relative, o)
            })
            .collect())
    }

    /// The names of the tables in the destination (folders holding a `_delta_log`).
    pub async fn table_names(&self) -> Result<Vec<String>> {
        let mut names = Vec::new();
        for name in self.folders().await? {
            let log = self.prefix.clone().join(name.as_str()).join("_delta_log");
            let has_log = self
                .store
                .list_with_delimiter(Some(&log))
                .await
                .map(|l| !l.objects.is_empty())
                .unwrap_or(false);
            if has_log {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    /// Deletes the data files errlake wrote in a table folder ([`is_own_data_file`]: its
    /// own names, directly in the folder) that no version of the table references and that
    /// are older than `older_than`: files of loads that died before their commit (a crash,
    /// a kill), or that a commit replaced but could not delete. The age guard spares the
    /// staged files of a load still running elsewhere. A folder without a table (a first
    /// load that never committed) loses its old errlake files. A table that keeps history
    /// ([`KEEP_HISTORY_PROPERTY`]) keeps the files its commits removed until their removal
    /// is older than its retention. Files of other names, and subfolders, are never touched.
    pub async fn remove_orphans(
        &self,
        table: &str,
        older_than: std::time::Duration,
        dry_run: bool,
    ) -> Result<Orphans> {
        use futures::TryStreamExt;
        use object_store::ObjectStoreExt;
        let delta_err = |source| SinkError::Delta {
            table: table.to_owned(),
            source,
        };
        let mut referenced = std::collections::HashSet::<String>::new();
        if let Some(t) = self.load_table(table).await? {
            let state = t.snapshot().map_err(delta_err)?;
            referenced.extend(state.log_data().iter().map(|f| f.path().into_owned()));
            if let Some(kept) = kept_history(state) {
                let since = chrono::Utc::now().timestamp_millis()
                    - i64::try_from(kept.as_millis()).unwrap_or(i64::MAX);
                let mut tombstones = state.all_tombstones(t.log_store().as_ref());
                while let Some(removed) = tombstones.try_next().await.map_err(delta_err)? {
                    if removed.deletion_timestamp().is_none_or(|at| at > since) {
                        referenced.insert(removed.path().into_owned());
                    }
                }
            }
        }
        let folder = self.prefix.clone().join(table);
        let cutoff = chrono::Utc::now()
            - chrono::Duration::from_std(older_than).unwrap_or(chrono::Duration::MAX);
        let mut orphans = Orphans::default();
        for (relative, object) in self.list_under(&folder).await? {
            if !is_own_data_file(&relative)
                || referenced.contains(&relative)
                || object.last_modified > cutoff
            {
                continue;
            }
            if !dry_run {
                self.store
                    .delete(&object.location)
                    .await
                    .map_err(|source| SinkError::Store {
                        path: object.location.to_string(),
                        source,
                    })?;
            }
            orphans.files += 1;
            orphans.bytes += object.size;
            orphans.paths.push(format!("{table}/{relative}"));
        }
        Ok(orphans)
    }

    /// The folders of the destination, tables or not (a first load that died leaves a
    /// folder without a table).
    pub async fn folders(&self) -> Result<Vec<String>> {
        let listing = self
            .store
            .list_with_delimiter(Some(&self.prefix))
            .await
            .map_err(|source| SinkError::Store {
                path: self.prefix.to_string(),
                source,
            })?;
        let mut names: Vec<String> = listing
            .common_prefixes
            .iter()
            .filter_map(|d| d.filename().map(str::to_owned))
            .collect();
        names.sort();
        Ok(names)
    }

    /// The schemas of all tables in the destination, to seed normalization with, so that
    /// column types stay what earlier runs made them.
    pub async fn schemas(&self) -> Result<HashMap<String, TableSchema>> {
        let mut out = HashMap::new();
        for name in self.table_names().await? {
            if let Some(t) = self.load_table(&name).await? {
                let snapshot = t.snapshot().map_err(|source| SinkError::Delta {
                    table: name.clone(),
                    source,
                })?;
                out.insert(name, with_field_metadata(snapshot.snapshot()));
            }
        }
        Ok(out)
    }
}

/// What [`Lake::remove_orphans`] deleted (or would delete).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Orphans {
    /// Data files.
    pub files: usize,
    /// Their bytes.
    pub bytes: u64,
    /// Their paths within the destination (`<table>/<file>`).
    pub paths: Vec<String>,
}

/// A table's schema as normalization sees it, from its Arrow schema with field metadata.
fn with_field_metadata(state: &deltalake::kernel::EagerSnapshot) -> TableSchema {
    TableSchema::from_arrow(&arrow_schema_of(state))
}

/// A table's Arrow schema with the field metadata of its Delta schema (the columns' sources,
/// JSON and null-only markers): the Arrow schema that delta-rs derives drops everything but
/// field ids.
pub(crate) fn arrow_schema_of(state: &deltalake::kernel::EagerSnapshot) -> arrow_schema::Schema {
    let arrow = state.arrow_schema();
    let delta = state.schema();
    let fields: Vec<arrow_schema::Field> = arrow
        .fields()
        .iter()
        .map(|f| {
            let metadata = delta
                .field(f.name())
                .map(|d| {
                    d.metadata()
                        .iter()
                        .filter_map(|(k, v)| match v {
                            deltalake::kernel::MetadataValue::String(s) => {
                                Some((k.clone(), s.clone()))
                            }
                            _ => None,
                        })
                        .collect()
                })
                .unwrap_or_default();
            f.as_ref().clone().with_metadata(metadata)
        })
        .collect();
    arrow_schema::Schema::new(fields)
}

/// The Delta schema of an Arrow schema.
pub(crate) fn delta_schema(table: &str, schema: &arrow_schema::Schema) -> Result<StructType> {
    StructType::try_from_arrow(schema).map_err(|source| SinkError::Schema {
        table: table.to_owned(),
        message: source.to_string(),
    })
}

/// Makes `s3://` tables use delta-rs's default log store, which commits with conditional puts
/// (`If-None-Match`), as S3 and S3-compatible servers support.
fn register_s3_logstore() {
    let factories = deltalake::logstore::logstore_factories();
    let file = Url::parse("file://").expect("a constant URL");
    if let Some(default) = factories.get(&file).map(|f| f.value().clone()) {
        for scheme in ["s3://", "s3a://"] {
            let url = Url::parse(scheme).expect("a constant URL");
            if !factories.contains_key(&url) {
                factories.insert(url, default.clone());
            }
        }
    }
}

/// The data files of a loaded table's current version: path within the table folder, size.
pub(crate) fn data_files(t: &DeltaTable, table: &str) -> Result<Vec<(String, u64)>> {
    Ok(t.snapshot()
        .map_err(|source| SinkError::Delta {
            table: table.to_owned(),
            source,
        })?
        .log_data()
        .iter()
        .map(|f| (f.path().into_owned(), f.size().max(0) as u64))
        .collect())
}
