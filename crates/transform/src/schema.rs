//! Table identities and schemas: column types, the shared schema registry that keeps every
//! transform worker on one column list per table, and the conversion to Arrow.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};

/// How a table's rows land in the lake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteDisposition {
    /// Rows are added to the table.
    Append,
    /// The run's rows replace the table's content in one commit.
    Replace,
    /// Rows replace the rows with the same primary key; new keys are added.
    Merge,
}

impl fmt::Display for WriteDisposition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WriteDisposition::Append => "append",
            WriteDisposition::Replace => "replace",
            WriteDisposition::Merge => "merge",
        })
    }
}

/// The type of a normalized column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ColumnType {
    /// `true` / `false`.
    Bool,
    /// A signed 64-bit integer.
    BigInt,
    /// A 64-bit float.
    Double,
    /// UTF-8 text; also nested data beyond the nesting limit, as JSON text, and integers
    /// beyond 64 bits, as their exact decimal text.
    Text,
    /// An instant in UTC with microsecond precision, from an ISO 8601 string.
    Timestamp,
}

impl ColumnType {
    /// The suffix of a variant column holding values of this type (`severity__v_bigint`).
    pub fn variant_suffix(self) -> &'static str {
        match self {
            ColumnType::Bool => "v_bool",
            ColumnType::BigInt => "v_bigint",
            ColumnType::Double => "v_double",
            ColumnType::Text => "v_text",
            ColumnType::Timestamp => "v_timestamp",
        }
    }

    /// The Arrow type of the column.
    pub fn arrow_type(self) -> DataType {
        match self {
            ColumnType::Bool => DataType::Boolean,
            ColumnType::BigInt => DataType::Int64,
            ColumnType::Double => DataType::Float64,
            ColumnType::Text => DataType::Utf8,
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
}

/// The ordered, growing column list of one table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableSchema {
    columns: Vec<Column>,
    index: HashMap<String, usize>,
}

impl TableSchema {
    /// A schema from columns in order; a repeated name keeps its first type.
    pub fn from_columns(columns: impl IntoIterator<Item = Column>) -> Self {
        let mut schema = TableSchema::default();
        for c in columns {
            schema.add(c.name, c.column_type);
        }
        schema
    }

    /// The schema of an Arrow schema's columns whose types normalization knows.
    pub fn from_arrow(schema: &Schema) -> Self {
        TableSchema::from_columns(schema.fields().iter().filter_map(|f| {
            ColumnType::from_arrow(f.data_type()).map(|t| Column {
                name: f.name().clone(),
                column_type: t,
            })
        }))
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
        if let Some(&i) = self.index.get(&name) {
            return self.columns[i].column_type;
        }
        self.index.insert(name.clone(), self.columns.len());
        self.columns.push(Column { name, column_type });
        column_type
    }

    /// The number of columns.
    pub fn len(&self) -> usize {
        self.columns.len()
    }

    /// Whether the schema has no column.
    pub fn is_empty(&self) -> bool {
        self.columns.is_empty()
    }

    /// The Arrow schema of the first `n` columns (all nullable).
    pub fn arrow_prefix(&self, n: usize) -> SchemaRef {
        Arc::new(Schema::new(
            self.columns[..n]
                .iter()
                .map(|c| Field::new(c.name.clone(), c.column_type.arrow_type(), true))
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
}

impl SchemaRegistry {
    /// A registry that starts from the given table schemas.
    pub fn new(existing: HashMap<String, TableSchema>) -> Self {
        SchemaRegistry {
            inner: Arc::new(Mutex::new(existing)),
        }
    }

    /// A copy of one table's schema.
    pub fn table(&self, name: &str) -> Option<TableSchema> {
        self.lock().get(name).cloned()
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
