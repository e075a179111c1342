//! Table identities and schemas: column types, the shared schema registry that keeps every
//! transform worker on one column list per table, and the conversion to Arrow.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};

pub use table_model::WriteDisposition;

/// The type of a normalized column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ColumnType {
    /// `true` / `false`.
    Bool,
    /// A signed 64-bit integer.
    BigInt,
    /// A 64-bit float.
    Double,
    /// UTF-8 text; also unsigned integers beyond `i64`, as their exact decimal text.
    Text,
    /// An instant in UTC with microsecond precision, from an ISO 8601 string.
    Timestamp,
    /// JSON text: nested data beyond the nesting limit, or a field hinted `type = "json"`.
    /// Stored as a UTF-8 column whose field metadata says `errlake.type = json`.
    Json,
}

/// Field metadata key holding a column's source: the JSON pointer (RFC 6901) of the key it
/// comes from, relative to the row (`/device/osName`); a variant column adds `#v_<type>`.
pub const SOURCE_METADATA_KEY: &str = "errlake.source";
/// Field metadata key marking a JSON text column (`json`).
pub const TYPE_METADATA_KEY: &str = "errlake.type";
/// Field metadata key (`true`) of a column every writer has seen only nulls in so far: the
/// lake declares it (readers can select it, as all nulls) with a placeholder type, text, but
/// no data file holds it, so the first non-null value that any writer lands decides its
/// type, whichever shard or run commits first.
pub const NULL_ONLY_METADATA_KEY: &str = "errlake.null_only";

impl ColumnType {
    /// The suffix of a variant column holding values of this type (`severity__v_bigint`).
    pub fn variant_suffix(self) -> &'static str {
        match self {
            ColumnType::Bool => "v_bool",
            ColumnType::BigInt => "v_bigint",
            ColumnType::Double => "v_double",
            ColumnType::Text => "v_text",
            ColumnType::Timestamp => "v_timestamp",
            ColumnType::Json => "v_json",
        }
    }

    /// The name used in config hints and reports.
    pub fn name(self) -> &'static str {
        match self {
            ColumnType::Bool => "bool",
            ColumnType::BigInt => "bigint",
            ColumnType::Double => "double",
            ColumnType::Text => "text",
            ColumnType::Timestamp => "timestamp",
            ColumnType::Json => "json",
        }
    }

    /// The Arrow type of the column.
    pub fn arrow_type(self) -> DataType {
        match self {
            ColumnType::Bool => DataType::Boolean,
            ColumnType::BigInt => DataType::Int64,
            ColumnType::Double => DataType::Float64,
            ColumnType::Text | ColumnType::Json => DataType::Utf8,
            ColumnType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        }
    }

    /// The column type for an Arrow type, if it is one normalization produces.
    pub fn from_arrow(data_type: &DataType) -> Option<ColumnType> {
        Some(match data_type {
            DataType::Boolean => ColumnType::Bool,
            DataType::Int64 | DataType::Int32 => ColumnType::BigInt,
            DataType::Float64 | DataType::Float32 => ColumnType::Double,
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => ColumnType::Text,
            DataType::Timestamp(_, _) => ColumnType::Timestamp,
            _ => return None,
        })
    }
}

/// The identity of a table: what the sink needs to know to write it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableMeta {
    /// The normalized table name (`events`, `events__exceptions`).
    pub name: String,
    /// The table of the parent rows, for a child table.
    pub parent: Option<String>,
    /// The root table this table belongs to (itself for a root table).
    pub root: String,
    /// The primary key column of a root table.
    pub primary_key: Option<String>,
    /// How the rows land.
    pub write_disposition: WriteDisposition,
}

impl TableMeta {
    /// Whether this is a root table (one per resource).
    pub fn is_root(&self) -> bool {
        self.parent.is_none()
    }
}

/// One column of a table schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// The normalized column name.
    pub name: String,
    /// The column type, fixed once chosen.
    pub column_type: ColumnType,
    /// Where the column's values come from: the JSON pointer of the original key within a
    /// row (`/userId`), `#v_<type>` appended for a variant column; `None` for the `_dlt_*`
    /// columns. Kept in the field metadata, so the lake records the original keys.
    pub source: Option<String>,
}

impl Column {
    /// A column without a recorded source.
    pub fn new(name: impl Into<String>, column_type: ColumnType) -> Self {
        Column {
            name: name.into(),
            column_type,
            source: None,
        }
    }
}

/// The ordered, growing column list of one table, and which source key owns each name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableSchema {
    columns: Vec<Column>,
    index: HashMap<String, usize>,
    /// Names (of columns, nested-object prefixes and lists) and the source pointer that owns
    /// each: a second key normalizing to a taken name gets `<name>_<n>` instead.
    claims: HashMap<String, String>,
    /// Columns seen with nulls only, in the order they were seen: declared in the lake, in
    /// no batch (see [`NULL_ONLY_METADATA_KEY`]); a column's first value moves it to
    /// `columns`.
    null_only: Vec<Column>,
}

impl TableSchema {
    /// A schema from columns in order; a repeated name keeps its first type. The columns'
    /// sources claim their names again, and the nested-object prefixes along them.
    pub fn from_columns(columns: impl IntoIterator<Item = Column>) -> Self {
        let mut schema = TableSchema::default();
        for c in columns {
            if let Some(source) = &c.source {
                schema.claim_along(&c.name, source);
            }
            schema.add_column(c);
        }
        schema
    }

    /// The schema of an Arrow schema's columns whose types normalization knows, with the
    /// sources and JSON markers of their field metadata; the null-only columns it declares
    /// stay untyped.
    pub fn from_arrow(schema: &Schema) -> Self {
        let is_null_only = |f: &Field| {
            f.metadata().get(NULL_ONLY_METADATA_KEY).map(String::as_str) == Some("true")
        };
        let column = |f: &Arc<Field>| {
            let json = f.metadata().get(TYPE_METADATA_KEY).map(String::as_str) == Some("json");
            ColumnType::from_arrow(f.data_type()).map(|t| Column {
                name: f.name().clone(),
                column_type: if json && t == ColumnType::Text {
                    ColumnType::Json
                } else {
                    t
                },
                source: f.metadata().get(SOURCE_METADATA_KEY).cloned(),
            })
        };
        let mut table = TableSchema::from_columns(
            schema
                .fields()
                .iter()
                .filter(|f| !is_null_only(f))
                .filter_map(column),
        );
        for c in schema
            .fields()
            .iter()
            .filter(|f| is_null_only(f))
            .filter_map(column)
        {
            table.add_null_only(c);
        }
        table
    }

    /// Notes a column that held only nulls, unless the table has it (typed or null-only).
    pub fn add_null_only(&mut self, column: Column) {
        if self.index.contains_key(&column.name)
            || self.null_only.iter().any(|c| c.name == column.name)
        {
            return;
        }
        if let Some(source) = &column.source {
            self.claim_along(&column.name, source);
        }
        self.null_only.push(column);
    }

    /// The columns seen with nulls only so far (declared in the lake, in no batch).
    pub fn null_only(&self) -> &[Column] {
        &self.null_only
    }

    /// The lake's declaration of the null-only columns: nullable text fields marked with
    /// [`NULL_ONLY_METADATA_KEY`] (and their sources).
    pub fn null_only_fields(&self) -> Vec<Field> {
        self.null_only
            .iter()
            .map(|c| {
                let mut metadata =
                    HashMap::from([(NULL_ONLY_METADATA_KEY.to_owned(), "true".to_owned())]);
                if let Some(source) = &c.source {
                    metadata.insert(SOURCE_METADATA_KEY.to_owned(), source.clone());
                }
                Field::new(c.name.clone(), DataType::Utf8, true).with_metadata(metadata)
            })
            .collect()
    }

    /// Claims `name` for `source` and each `__`-separated prefix of the name for the
    /// matching prefix of the pointer (`device__os_name` from `/device/osName` also claims
    /// `device` for `/device`).
    fn claim_along(&mut self, name: &str, source: &str) {
        self.claims.insert(name.to_owned(), source.to_owned());
        if source.contains('#') {
            return;
        }
        let names: Vec<&str> = name.split(crate::naming::PATH_SEPARATOR).collect();
        let keys: Vec<&str> = source.split('/').skip(1).collect();
        if names.len() != keys.len() {
            return;
        }
        for n in 1..names.len() {
            let prefix = names[..n].join(crate::naming::PATH_SEPARATOR);
            let pointer: String = keys[..n].iter().flat_map(|k| ["/", k]).collect();
            self.claims.entry(prefix).or_insert(pointer);
        }
    }

    /// The name `source` owns in this table: `candidate` if free or already its own,
    /// otherwise the first free `<candidate>_<n>` (n = 1, 2, ...). Claims it.
    pub fn claim(&mut self, candidate: &str, source: &str) -> String {
        let mut name = candidate.to_owned();
        let mut n = 0;
        loop {
            match self.claims.get(&name) {
                None => {
                    self.claims.insert(name.clone(), source.to_owned());
                    return name;
                }
                Some(owner) if owner == source => return name,
                Some(_) => {
                    n += 1;
                    name = format!("{candidate}_{n}");
                }
            }
        }
    }

    /// The columns in order.
    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    /// The type of a column, if the table has it.
    pub fn column_type(&self, name: &str) -> Option<ColumnType> {
        self.index.get(name).map(|&i| self.columns[i].column_type)
    }

    /// The position of a column.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    /// Adds a column at the end unless it exists; returns the type the column has.
    pub fn add(&mut self, name: String, column_type: ColumnType) -> ColumnType {
        self.add_column(Column {
            name,
            column_type,
            source: None,
        })
        .1
    }

    /// Adds a column at the end unless one of its name exists; returns the column's
    /// position and type.
    pub fn add_column(&mut self, column: Column) -> (usize, ColumnType) {
        if let Some(&i) = self.index.get(&column.name) {
            return (i, self.columns[i].column_type);
        }
        let position = self.columns.len();
        let column_type = column.column_type;
        // Its first value: a null-only column gets its type.
        self.null_only.retain(|c| c.name != column.name);
        self.index.insert(column.name.clone(), position);
        self.columns.push(column);
        (position, column_type)
    }

    /// The number of columns.
    pub fn len(&self) -> usize {
        self.columns.len()
    }

    /// Whether the schema has no column.
    pub fn is_empty(&self) -> bool {
        self.columns.is_empty()
    }

    /// The Arrow schema of the first `n` columns (all nullable), with each column's source
    /// and JSON marker as field metadata.
    pub fn arrow_prefix(&self, n: usize) -> SchemaRef {
        Arc::new(Schema::new(
            self.columns[..n]
                .iter()
                .map(|c| {
                    let mut metadata = HashMap::new();
                    if let Some(source) = &c.source {
                        metadata.insert(SOURCE_METADATA_KEY.to_owned(), source.clone());
                    }
                    if c.column_type == ColumnType::Json {
                        metadata.insert(TYPE_METADATA_KEY.to_owned(), "json".to_owned());
                    }
                    Field::new(c.name.clone(), c.column_type.arrow_type(), true)
                        .with_metadata(metadata)
                })
                .collect::<Vec<_>>(),
        ))
    }

    /// The Arrow schema of all columns.
    pub fn arrow(&self) -> SchemaRef {
        self.arrow_prefix(self.columns.len())
    }
}

/// The schemas of all tables, shared by the transform workers of a run.
///
/// A column's type is decided once, by whichever worker sees its first non-null value, and
/// every worker then uses it; columns are only ever appended, so the schema of any batch is
/// a prefix of its table's current column list. Seed it with the schemas already in the
/// lake so that column types stay stable from run to run.
#[derive(Debug, Clone, Default)]
pub struct SchemaRegistry {
    inner: Arc<Mutex<HashMap<String, TableSchema>>>,
    /// The tables that existed before this run: schema contracts apply to them.
    existing: Arc<HashSet<String>>,
}

impl SchemaRegistry {
    /// A registry that starts from the given table schemas (those already in the lake).
    pub fn new(existing: HashMap<String, TableSchema>) -> Self {
        SchemaRegistry {
            existing: Arc::new(existing.keys().cloned().collect()),
            inner: Arc::new(Mutex::new(existing)),
        }
    }

    /// Whether the table existed before this run.
    pub fn existed(&self, table: &str) -> bool {
        self.existing.contains(table)
    }

    /// A copy of one table's schema.
    pub fn table(&self, name: &str) -> Option<TableSchema> {
        self.lock().get(name).cloned()
    }

    /// The number of columns of a table (0 for a table not seen yet).
    pub fn table_len(&self, name: &str) -> usize {
        self.lock().get(name).map_or(0, TableSchema::len)
    }

    /// A table's Arrow schema and column types, as of now.
    pub fn arrow_and_types(&self, name: &str) -> (SchemaRef, Vec<ColumnType>) {
        let registry = self.lock();
        match registry.get(name) {
            Some(schema) => (
                schema.arrow(),
                schema.columns().iter().map(|c| c.column_type).collect(),
            ),
            None => (Arc::new(Schema::empty()), Vec::new()),
        }
    }

    /// The lake's declaration of a table's null-only columns (see
    /// [`TableSchema::null_only_fields`]); empty for a table not seen yet.
    pub fn null_only_fields(&self, name: &str) -> Vec<Field> {
        self.lock()
            .get(name)
            .map_or_else(Vec::new, TableSchema::null_only_fields)
    }

    /// A copy of every table's schema.
    pub fn snapshot(&self) -> HashMap<String, TableSchema> {
        self.lock().clone()
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, HashMap<String, TableSchema>> {
        // A poisoned lock means a worker panicked while adding a column; the map itself is
        // never left half-updated (one push and one insert), so its content is still valid.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
