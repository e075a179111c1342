//! The relational normalizer: JSON records in, one Arrow batch per table out.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::builder::{
    BooleanBuilder, Float64Builder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch, new_null_array};
use serde_json::{Map, Value};

use crate::naming::{join_path, normalize_identifier};
use crate::schema::{ColumnType, SchemaRegistry, TableMeta, WriteDisposition};
use crate::{Result, TransformError};

/// Column holding a row's id (deterministic from the primary key in a root table under merge).
pub const ROW_ID: &str = "_dlt_id";
/// Column of a root row holding the id of the load that wrote it.
pub const LOAD_ID: &str = "_dlt_load_id";
/// Column of a child row holding its parent row's id.
pub const PARENT_ID: &str = "_dlt_parent_id";
/// Column of a child row holding its position in the parent's list.
pub const LIST_IDX: &str = "_dlt_list_idx";
/// Column of a child row holding its root row's id.
pub const ROOT_ID: &str = "_dlt_root_id";
/// Column holding the elements of a list of scalars.
pub const VALUE: &str = "value";

/// Normalization settings of a pipeline (`[normalize]` in the pipeline file).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NormalizeConfig {
    /// How many levels of nested objects and lists become columns and child tables;
    /// anything deeper is kept as a JSON text column. Default: 8.
    #[serde(default = "default_max_nesting_depth")]
    pub max_nesting_depth: usize,
}

fn default_max_nesting_depth() -> usize {
    8
}

impl Default for NormalizeConfig {
    fn default() -> Self {
        NormalizeConfig {
            max_nesting_depth: default_max_nesting_depth(),
        }
    }
}

/// A batch of rows of one table; its schema is a prefix of the table's column list at the time
/// it was made, so later batches of the same table may only have more columns.
#[derive(Debug, Clone)]
pub struct TableBatch {
    /// The table the rows belong to.
    pub table: Arc<TableMeta>,
    /// The rows.
    pub batch: RecordBatch,
}

/// Turns pages of JSON records into Arrow batches, one per table.
///
/// One normalizer per transform worker; the workers share a [`SchemaRegistry`], so they agree
/// on every column's type. A value that does not fit its column's type goes to a variant
/// column named `<column>__v_<type>`; no value is dropped.
#[derive(Debug)]
pub struct Normalizer {
    config: NormalizeConfig,
    registry: SchemaRegistry,
    /// Column types this worker has already looked up, per table: saves the registry lock.
    known_types: HashMap<String, HashMap<String, ColumnType>>,
    /// Normalized names of raw JSON keys.
    names: HashMap<String, String>,
    /// Identities of child tables, made once.
    child_metas: HashMap<String, Arc<TableMeta>>,
}

/// A scalar value, typed.
#[derive(Debug, Clone, Copy)]
enum Scalar<'a> {
    Bool(bool),
    BigInt(i64),
    Double(f64),
    Text(&'a str),
    /// A timestamp string, with its instant in microseconds since the epoch (UTC).
    Timestamp(&'a str, i64),
}

impl Scalar<'_> {
    fn column_type(&self) -> ColumnType {
        match self {
            Scalar::Bool(_) => ColumnType::Bool,
            Scalar::BigInt(_) => ColumnType::BigInt,
            Scalar::Double(_) => ColumnType::Double,
            Scalar::Text(_) => ColumnType::Text,
            Scalar::Timestamp(..) => ColumnType::Timestamp,
        }
    }
}

enum ColumnData {
    Bool(BooleanBuilder),
    BigInt(Int64Builder),
    Double(Float64Builder),
    Text(StringBuilder),
    Timestamp(TimestampMicrosecondBuilder),
}

struct ColumnBuilder {
    data: ColumnData,
    len: usize,
}

impl ColumnBuilder {
    fn new(column_type: ColumnType) -> Self {
        let data = match column_type {
            ColumnType::Bool => ColumnData::Bool(BooleanBuilder::new()),
            ColumnType::BigInt => ColumnData::BigInt(Int64Builder::new()),
            ColumnType::Double => ColumnData::Double(Float64Builder::new()),
            ColumnType::Text => ColumnData::Text(StringBuilder::new()),
            ColumnType::Timestamp => {
                ColumnData::Timestamp(TimestampMicrosecondBuilder::new().with_timezone("UTC"))
            }
        };
        ColumnBuilder { data, len: 0 }
    }

    fn pad_to(&mut self, row: usize) {
        let n = row.saturating_sub(self.len);
        if n == 0 {
            return;
        }
        match &mut self.data {
            ColumnData::Bool(b) => b.append_nulls(n),
            ColumnData::BigInt(b) => b.append_nulls(n),
            ColumnData::Double(b) => b.append_nulls(n),
            ColumnData::Text(b) => {
                for _ in 0..n {
                    b.append_null();
                }
            }
            ColumnData::Timestamp(b) => b.append_nulls(n),
        }
        self.len = row;
    }

    /// Appends `value` at `row` if it fits the column's type; returns false if it does not.
    fn put(&mut self, row: usize, value: Scalar<'_>) -> bool {
        if self.len > row {
            // The same column twice in one row: only possible when two keys normalize to the
            // same name; the caller resolves that before calling, so treat it as not fitting.
            return false;
        }
        let fits = matches!(
            (&self.data, value),
            (ColumnData::Bool(_), Scalar::Bool(_))
                | (ColumnData::BigInt(_), Scalar::BigInt(_))
                | (ColumnData::Double(_), Scalar::Double(_))
                | (ColumnData::Text(_), Scalar::Text(_) | Scalar::Timestamp(..))
                | (ColumnData::Timestamp(_), Scalar::Timestamp(..))
        ) || matches!((&self.data, value), (ColumnData::Double(_), Scalar::BigInt(i)) if i.unsigned_abs() <= (1u64 << 53));
        if !fits {
            return false;
        }
        self.pad_to(row);
        match (&mut self.data, value) {
            (ColumnData::Bool(b), Scalar::Bool(v)) => b.append_value(v),
            (ColumnData::BigInt(b), Scalar::BigInt(v)) => b.append_value(v),
            (ColumnData::Double(b), Scalar::Double(v)) => b.append_value(v),
            (ColumnData::Double(b), Scalar::BigInt(v)) => b.append_value(v as f64),
            (ColumnData::Text(b), Scalar::Text(v) | Scalar::Timestamp(v, _)) => b.append_value(v),
            (ColumnData::Timestamp(b), Scalar::Timestamp(_, micros)) => b.append_value(micros),
            _ => unreachable!("checked by `fits` above"),
        }
        self.len += 1;
        true
    }

    fn finish(&mut self, n_rows: usize) -> ArrayRef {
        self.pad_to(n_rows);
        match &mut self.data {
            ColumnData::Bool(b) => Arc::new(b.finish()),
            ColumnData::BigInt(b) => Arc::new(b.finish()),
            ColumnData::Double(b) => Arc::new(b.finish()),
            ColumnData::Text(b) => Arc::new(b.finish()),
            ColumnData::Timestamp(b) => Arc::new(b.finish()),
        }
    }
}

/// The rows of one table under construction during one `normalize` call.
struct TableRows {
    meta: Arc<TableMeta>,
    n_rows: usize,
    columns: HashMap<String, ColumnBuilder>,
}

/// Where a value lands: a table under construction, a row of it, and the ids that link it.
#[derive(Clone, Copy)]
struct RowRef<'a> {
    table: usize,
    row: usize,
    row_id: &'a str,
    root_id: &'a str,
    depth: usize,
}

impl Normalizer {
    /// A normalizer sharing `registry` with the other workers of the run.
    pub fn new(config: NormalizeConfig, registry: SchemaRegistry) -> Self {
        Normalizer {
            config,
            registry,
            known_types: HashMap::new(),
            names: HashMap::new(),
            child_metas: HashMap::new(),
        }
    }

    /// The schema registry this normalizer shares.
    pub fn registry(&self) -> &SchemaRegistry {
        &self.registry
    }

    /// Normalizes one page of records of the root table `root`.
    ///
    /// `load_id` fills `_dlt_load_id`; `page_seq` (unique per page within a run) makes the row
    /// ids of tables without a merge key unique. Under merge, only the last record of a
    /// primary key within the page is kept, and its `_dlt_id` is derived from the key, so a
    /// rerun produces the same ids. Returns one batch per table that received rows, the root
    /// table first.
    pub fn normalize(
        &mut self,
        root: &Arc<TableMeta>,
        load_id: &str,
        page_seq: u64,
        records: &[Value],
    ) -> Result<Vec<TableBatch>> {
        let mut tables: Vec<TableRows> = vec![TableRows {
            meta: root.clone(),
            n_rows: 0,
            columns: HashMap::new(),
        }];
        let mut table_index: HashMap<String, usize> = HashMap::from([(root.name.clone(), 0)]);

        let merge_key = match (&root.primary_key, root.write_disposition) {
            (Some(pk), WriteDisposition::Merge) => Some(pk.as_str()),
            _ => None,
        };
        let keys: Vec<Option<String>> = records
            .iter()
            .enumerate()
            .map(|(record_idx, record)| match merge_key {
                Some(pk) => primary_key_string(record, pk).map(Some).ok_or_else(|| {
                    TransformError::MissingPrimaryKey {
                        table: root.name.clone(),
                        primary_key: pk.to_owned(),
                        record_idx,
                    }
                }),
                None => Ok(None),
            })
            .collect::<Result<_>>()?;
        // The last occurrence of a key within the page wins.
        let mut last_of_key: HashMap<&str, usize> = HashMap::new();
        for (i, k) in keys.iter().enumerate() {
            if let Some(k) = k {
                last_of_key.insert(k.as_str(), i);
            }
        }

        for (record_idx, record) in records.iter().enumerate() {
            let row_id = match &keys[record_idx] {
                Some(k) => {
                    if last_of_key.get(k.as_str()) != Some(&record_idx) {
                        continue;
                    }
                    row_id_hash(&[root.name.as_bytes(), k.as_bytes()])
                }
                None => row_id_hash(&[
                    load_id.as_bytes(),
                    &page_seq.to_le_bytes(),
                    &(record_idx as u64).to_le_bytes(),
                ]),
            };
            let Value::Object(object) = record else {
                return Err(TransformError::NotAnObject {
                    table: root.name.clone(),
                    record_idx,
                    found: json_kind(record),
                });
            };
            let row = tables[0].n_rows;
            tables[0].n_rows += 1;
            let at = RowRef {
                table: 0,
                row,
                row_id: &row_id,
                root_id: &row_id,
                depth: 0,
            };
            self.put(&mut tables, at, ROW_ID, Scalar::Text(&row_id));
            self.put(&mut tables, at, LOAD_ID, Scalar::Text(load_id));
            self.flatten_object(&mut tables, &mut table_index, at, "", object)?;
        }

        self.finish(tables)
    }

    fn flatten_object(
        &mut self,
        tables: &mut Vec<TableRows>,
        table_index: &mut HashMap<String, usize>,
        at: RowRef<'_>,
        prefix: &str,
        object: &Map<String, Value>,
    ) -> Result<()> {
        for (key, value) in object {
            let name = self.normalized(key);
            let column = if prefix.is_empty() {
                name
            } else {
                join_path(prefix, &name)
            };
            self.flatten_value(tables, table_index, at, &column, value)?;
        }
        Ok(())
    }

    fn flatten_value(
        &mut self,
        tables: &mut Vec<TableRows>,
        table_index: &mut HashMap<String, usize>,
        at: RowRef<'_>,
        column: &str,
        value: &Value,
    ) -> Result<()> {
        match value {
            Value::Null => {}
            Value::Bool(b) => self.put(tables, at, column, Scalar::Bool(*b)),
            Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    self.put(tables, at, column, Scalar::BigInt(i));
                } else if n.is_u64() {
                    // Beyond i64: kept exactly as decimal text.
                    let text = n.to_string();
                    self.put(tables, at, column, Scalar::Text(&text));
                } else if let Some(f) = n.as_f64() {
                    self.put(tables, at, column, Scalar::Double(f));
                }
            }
            Value::String(s) => {
                let scalar = match parse_timestamp(s) {
                    Some(micros) => Scalar::Timestamp(s, micros),
                    None => Scalar::Text(s),
                };
                self.put(tables, at, column, scalar);
            }
            Value::Object(object) => {
                if at.depth + 1 > self.config.max_nesting_depth {
                    let text = value.to_string();
                    self.put(tables, at, column, Scalar::Text(&text));
                } else {
                    let nested = RowRef {
                        depth: at.depth + 1,
                        ..at
                    };
                    self.flatten_object(tables, table_index, nested, column, object)?;
                }
            }
            Value::Array(items) => {
                if at.depth + 1 > self.config.max_nesting_depth {
                    let text = value.to_string();
                    self.put(tables, at, column, Scalar::Text(&text));
                    return Ok(());
                }
                let parent_name = tables[at.table].meta.name.clone();
                let child_name = join_path(&parent_name, column);
                let child = match table_index.get(&child_name) {
                    Some(&i) => i,
                    None => {
                        let meta = self.child_meta(&child_name, &tables[at.table].meta);
                        tables.push(TableRows {
                            meta,
                            n_rows: 0,
                            columns: HashMap::new(),
                        });
                        table_index.insert(child_name.clone(), tables.len() - 1);
                        tables.len() - 1
                    }
                };
                for (list_idx, item) in items.iter().enumerate() {
                    let child_row_id = row_id_hash(&[
                        at.row_id.as_bytes(),
                        child_name.as_bytes(),
                        &(list_idx as u64).to_le_bytes(),
                    ]);
                    let row = tables[child].n_rows;
                    tables[child].n_rows += 1;
                    let child_at = RowRef {
                        table: child,
                        row,
                        row_id: &child_row_id,
                        root_id: at.root_id,
                        depth: at.depth + 1,
                    };
                    self.put(tables, child_at, ROW_ID, Scalar::Text(&child_row_id));
                    self.put(tables, child_at, PARENT_ID, Scalar::Text(at.row_id));
                    self.put(tables, child_at, LIST_IDX, Scalar::BigInt(list_idx as i64));
                    self.put(tables, child_at, ROOT_ID, Scalar::Text(at.root_id));
                    match item {
                        Value::Object(object) => {
                            self.flatten_object(tables, table_index, child_at, "", object)?
                        }
                        other => self.flatten_value(tables, table_index, child_at, VALUE, other)?,
                    }
                }
            }
        }
        Ok(())
    }

    /// Puts a scalar into a column of a row, or into the column's variant column if it does
    /// not fit the column's type.
    fn put(&mut self, tables: &mut [TableRows], at: RowRef<'_>, column: &str, value: Scalar<'_>) {
        let table_name = &tables[at.table].meta.name;
        let column_type = self.column_type(table_name, column, value.column_type());
        let rows = &mut tables[at.table];
        let builder = rows
            .columns
            .entry(column.to_owned())
            .or_insert_with(|| ColumnBuilder::new(column_type));
        if builder.put(at.row, value) {
            return;
        }
        // A value of another type, or a second key of the row with the same normalized name:
        // keep it in the variant column for its type.
        let variant = join_path(column, value.column_type().variant_suffix());
        let variant_type = self.column_type(&rows.meta.name, &variant, value.column_type());
        let builder = rows
            .columns
            .entry(variant)
            .or_insert_with(|| ColumnBuilder::new(variant_type));
        if !builder.put(at.row, value) {
            // Only reachable with more than two keys of one object normalizing to one name;
            // the last one of them is then kept as text in a further variant.
            let fallback = join_path(column, "v_dup");
            let fallback_type = self.column_type(&rows.meta.name, &fallback, ColumnType::Text);
            let builder = rows
                .columns
                .entry(fallback)
                .or_insert_with(|| ColumnBuilder::new(fallback_type));
            let text = scalar_text(value);
            builder.put(at.row, Scalar::Text(&text));
        }
    }

    /// The type of a column, decided by the registry on first sight.
    fn column_type(&mut self, table: &str, column: &str, proposed: ColumnType) -> ColumnType {
        if let Some(t) = self
            .known_types
            .get(table)
            .and_then(|cols| cols.get(column))
        {
            return *t;
        }
        let decided = {
            let mut registry = self.registry.lock();
            registry
                .entry(table.to_owned())
                .or_default()
                .add(column.to_owned(), proposed)
        };
        self.known_types
            .entry(table.to_owned())
            .or_default()
            .insert(column.to_owned(), decided);
        decided
    }

    fn normalized(&mut self, key: &str) -> String {
        if let Some(n) = self.names.get(key) {
            return n.clone();
        }
        let n = normalize_identifier(key);
        self.names.insert(key.to_owned(), n.clone());
        n
    }

    fn child_meta(&mut self, name: &str, parent: &TableMeta) -> Arc<TableMeta> {
        self.child_metas
            .entry(name.to_owned())
            .or_insert_with(|| {
                Arc::new(TableMeta {
                    name: name.to_owned(),
                    parent: Some(parent.name.clone()),
                    root: parent.root.clone(),
                    primary_key: None,
                    write_disposition: parent.write_disposition,
                })
            })
            .clone()
    }

    fn finish(&mut self, tables: Vec<TableRows>) -> Result<Vec<TableBatch>> {
        let mut out = Vec::with_capacity(tables.len());
        for mut rows in tables {
            if rows.n_rows == 0 {
                continue;
            }
            let schema = self.registry.table(&rows.meta.name).unwrap_or_default();
            let arrow_schema = schema.arrow();
            let arrays: Vec<ArrayRef> = schema
                .columns()
                .iter()
                .map(|c| match rows.columns.get_mut(&c.name) {
                    Some(builder) => builder.finish(rows.n_rows),
                    None => new_null_array(&c.column_type.arrow_type(), rows.n_rows),
                })
                .collect();
            let batch = RecordBatch::try_new(arrow_schema, arrays).map_err(|source| {
                TransformError::Arrow {
                    table: rows.meta.name.clone(),
                    source,
                }
            })?;
            out.push(TableBatch {
                table: rows.meta,
                batch,
            });
        }
        Ok(out)
    }
}

/// The primary key of a record as text, if the record has a usable one.
pub fn primary_key_string(record: &Value, primary_key: &str) -> Option<String> {
    match record.get(primary_key)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A 128-bit row id, as 32 hex digits, from its parts.
fn row_id_hash(parts: &[&[u8]]) -> String {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    for part in parts {
        hasher.update(&(part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    format!("{:032x}", hasher.digest128())
}

/// Microseconds since the epoch of an ISO 8601 / RFC 3339 date-time with an offset.
fn parse_timestamp(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    // Cheap shape check before the parser: `YYYY-MM-DDTHH:MM:SS` and an offset or `Z`.
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
    {
        return None;
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|dt| dt.timestamp_micros())
}

fn scalar_text(value: Scalar<'_>) -> String {
    match value {
        Scalar::Bool(b) => b.to_string(),
        Scalar::BigInt(i) => i.to_string(),
        Scalar::Double(f) => f.to_string(),
        Scalar::Text(s) | Scalar::Timestamp(s, _) => s.to_owned(),
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}
