//! The relational normalizer: JSON records in, one Arrow batch per table out.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow_array::builder::{
    BooleanBuilder, Float64Builder, Int64Builder, NullBufferBuilder, TimestampMicrosecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch, StringArray, new_null_array};
use arrow_buffer::{Buffer, OffsetBuffer, ScalarBuffer};
use arrow_schema::SchemaRef;
use json_tape::{Kind, Number, Records, Value};

use crate::config::{ColumnHint, ContractMode, HintType, NormalizeConfig, SchemaContract};
use crate::content_hash::{self, Hex};
use crate::naming::{join_path, normalize_identifier};
use crate::schema::{Column, ColumnType, SchemaRegistry, TableMeta, WriteDisposition};
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
/// A hash of a merged root record's whole JSON (children included): a merge skips the
/// records whose stored copy has the same hash, so an unchanged record costs no rewrite and
/// a run that brings nothing new commits nothing.
pub const CONTENT_HASH: &str = "_errlake_content_hash";
/// Column holding the elements of a list of scalars.
pub const VALUE: &str = "value";
/// The name that a list inside a list gets (its table is `<table>__list`).
pub const LIST: &str = "list";

/// A scalar value, typed.
#[derive(Debug, Clone, Copy)]
enum Scalar<'a> {
    Bool(bool),
    BigInt(i64),
    Double(f64),
    Text(&'a str),
    /// A timestamp string, with its instant in microseconds since the epoch (UTC).
    Timestamp(&'a str, i64),
    /// JSON text of a nested value.
    Json(&'a str),
}

impl Scalar<'_> {
    fn kind(&self) -> ColumnType {
        match self {
            Scalar::Bool(_) => ColumnType::Bool,
            Scalar::BigInt(_) => ColumnType::BigInt,
            Scalar::Double(_) => ColumnType::Double,
            Scalar::Text(_) => ColumnType::Text,
            Scalar::Timestamp(..) => ColumnType::Timestamp,
            Scalar::Json(_) => ColumnType::Json,
        }
    }

    fn to_owned(self) -> OwnedScalar {
        match self {
            Scalar::Bool(b) => OwnedScalar::Bool(b),
            Scalar::BigInt(i) => OwnedScalar::BigInt(i),
            Scalar::Double(f) => OwnedScalar::Double(f),
            Scalar::Text(s) => OwnedScalar::Text(s.to_owned()),
            Scalar::Timestamp(s, m) => OwnedScalar::Timestamp(s.to_owned(), m),
            Scalar::Json(s) => OwnedScalar::Json(s.to_owned()),
        }
    }
}

/// A scalar held back with its record.
enum OwnedScalar {
    Bool(bool),
    BigInt(i64),
    Double(f64),
    Text(String),
    Timestamp(String, i64),
    Json(String),
}

impl OwnedScalar {
    fn borrow(&self) -> Scalar<'_> {
        match self {
            OwnedScalar::Bool(b) => Scalar::Bool(*b),
            OwnedScalar::BigInt(i) => Scalar::BigInt(*i),
            OwnedScalar::Double(f) => Scalar::Double(*f),
            OwnedScalar::Text(s) => Scalar::Text(s),
            OwnedScalar::Timestamp(s, m) => Scalar::Timestamp(s, *m),
            OwnedScalar::Json(s) => Scalar::Json(s),
        }
    }
}

enum ColumnData {
    Bool(BooleanBuilder),
    BigInt(Int64Builder),
    Double(Float64Builder),
    /// Text and JSON text.
    Text(TextBuilder),
    Timestamp(TimestampMicrosecondBuilder),
}

/// A text column under construction: Arrow's `StringBuilder` without its calls. Each value
/// is appended inline (its bytes, its end offset), where the builder's out-of-line
/// `append_value` took about 65 instructions a value, a twentieth of normalization.
struct TextBuilder {
    values: Vec<u8>,
    /// The end of each value in `values`, after a leading 0.
    offsets: Vec<i32>,
    nulls: NullBufferBuilder,
}

impl TextBuilder {
    fn with_capacity(rows: usize, text_bytes: usize) -> Self {
        let mut offsets = Vec::with_capacity(rows + 1);
        offsets.push(0);
        TextBuilder {
            values: Vec::with_capacity(text_bytes),
            offsets,
            nulls: NullBufferBuilder::new(rows),
        }
    }

    /// The offset after the values so far. A page's column past 2 GiB of text is refused
    /// as Arrow's own builder refuses it.
    #[inline(always)]
    fn end(&self) -> i32 {
        i32::try_from(self.values.len()).expect("byte array offset overflow")
    }

    #[inline(always)]
    fn append_value(&mut self, value: &str) {
        self.values.extend_from_slice(value.as_bytes());
        let end = self.end();
        self.offsets.push(end);
        self.nulls.append_non_null();
    }

    fn append_nulls(&mut self, n: usize) {
        let end = self.end();
        self.offsets.extend(std::iter::repeat_n(end, n));
        self.nulls.append_n_nulls(n);
    }

    fn append_null(&mut self) {
        self.append_nulls(1);
    }

    /// The array of the values so far; the builder starts again empty.
    fn finish(&mut self) -> StringArray {
        let values = std::mem::take(&mut self.values);
        let offsets = std::mem::replace(&mut self.offsets, vec![0]);
        let nulls = self.nulls.finish();
        // SAFETY: `offsets` start at 0 and each is the length of `values` after a whole
        // `&str` was appended (or repeats the last, for a null), so they are non-decreasing,
        // end at `values.len()`, and every pair of them spans UTF-8 text; `nulls` has one
        // entry per value. That is all `StringArray::try_new` would check.
        unsafe {
            StringArray::new_unchecked(
                OffsetBuffer::new_unchecked(ScalarBuffer::from(offsets)),
                Buffer::from_vec(values),
                nulls,
            )
        }
    }
}

struct ColumnBuilder {
    data: ColumnData,
    json: bool,
    len: usize,
}

impl ColumnBuilder {
    /// A builder with room for `rows` values (and `text_bytes` bytes of text). Sized by the
    /// table's last batch, not Arrow's default of 1024 slots: a table may have thousands of
    /// columns, and 1024 slots each cost megabytes per page and batch.
    fn new(column_type: ColumnType, rows: usize, text_bytes: usize) -> Self {
        let data = match column_type {
            ColumnType::Bool => ColumnData::Bool(BooleanBuilder::with_capacity(rows)),
            ColumnType::BigInt => ColumnData::BigInt(Int64Builder::with_capacity(rows)),
            ColumnType::Double => ColumnData::Double(Float64Builder::with_capacity(rows)),
            ColumnType::Text | ColumnType::Json => {
                ColumnData::Text(TextBuilder::with_capacity(rows, text_bytes))
            }
            ColumnType::Timestamp => ColumnData::Timestamp(
                TimestampMicrosecondBuilder::with_capacity(rows).with_timezone("UTC"),
            ),
        };
        ColumnBuilder {
            data,
            json: column_type == ColumnType::Json,
            len: 0,
        }
    }

    /// Pads with nulls up to `row` (the rows that had no value here).
    #[inline]
    fn pad_to(&mut self, row: usize) {
        if row > self.len {
            self.pad_nulls(row - self.len);
        }
    }

    fn pad_nulls(&mut self, n: usize) {
        match &mut self.data {
            ColumnData::Bool(b) => b.append_nulls(n),
            ColumnData::BigInt(b) => b.append_nulls(n),
            ColumnData::Double(b) => b.append_nulls(n),
            ColumnData::Text(b) => b.append_nulls(n),
            ColumnData::Timestamp(b) => b.append_nulls(n),
        }
        self.len += n;
    }

    /// Appends `value` at `row`. The caller has checked that the value fits the column
    /// ([`fits`]) and that the row has no value in it yet (names are unique per table, so
    /// one row never reaches one column twice).
    #[inline(always)]
    fn put(&mut self, row: usize, value: Scalar<'_>) {
        debug_assert!(self.len <= row, "a second value for one row and column");
        if self.len > row {
            return;
        }
        self.pad_to(row);
        match (&mut self.data, value) {
            (ColumnData::Bool(b), Scalar::Bool(v)) => b.append_value(v),
            (ColumnData::BigInt(b), Scalar::BigInt(v)) => b.append_value(v),
            (ColumnData::Double(b), Scalar::Double(v)) => b.append_value(v),
            (ColumnData::Double(b), Scalar::BigInt(v)) => b.append_value(v as f64),
            (ColumnData::Timestamp(b), Scalar::Timestamp(_, micros)) => b.append_value(micros),
            (ColumnData::Text(b), Scalar::Json(v)) => b.append_value(v),
            (ColumnData::Text(b), Scalar::Text(v) | Scalar::Timestamp(v, _)) if !self.json => {
                b.append_value(v)
            }
            (ColumnData::Text(b), other) => b.append_value(&json_text(other)),
            (data, other) => {
                // Unreachable when the caller checked `fits`; keep the value as text rather
                // than lose it, in a column that cannot hold it: a null.
                debug_assert!(false, "{other:?} does not fit");
                match data {
                    ColumnData::Bool(b) => b.append_null(),
                    ColumnData::BigInt(b) => b.append_null(),
                    ColumnData::Double(b) => b.append_null(),
                    ColumnData::Text(b) => b.append_null(),
                    ColumnData::Timestamp(b) => b.append_null(),
                }
            }
        }
        self.len += 1;
    }

    /// Bytes of text held (0 for other types).
    fn text_bytes(&self) -> usize {
        match &self.data {
            ColumnData::Text(b) => b.values.len(),
            _ => 0,
        }
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

/// A scalar as JSON text, for a JSON column.
fn json_text(value: Scalar<'_>) -> String {
    match value {
        Scalar::Bool(b) => b.to_string(),
        Scalar::BigInt(i) => i.to_string(),
        Scalar::Double(f) => {
            serde_json::Number::from_f64(f).map_or_else(|| "null".to_owned(), |n| n.to_string())
        }
        Scalar::Text(s) | Scalar::Timestamp(s, _) => {
            serde_json::Value::String(s.to_owned()).to_string()
        }
        Scalar::Json(s) => s.to_owned(),
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

/// What schema contracts left out (`discard_row`, `discard_value`), counted; and the
/// objects kept whole as JSON text because their table reached `max_table_columns`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Discarded {
    /// Records left out whole, per root table.
    pub rows: BTreeMap<String, u64>,
    /// Values (or lists) left out, per `<table>.<column>`.
    pub values: BTreeMap<String, u64>,
    /// Objects kept as JSON text in one column instead of new columns, per
    /// `<table>.<column>` (nothing is lost: the text holds the whole object).
    #[serde(default)]
    pub kept_as_json: BTreeMap<String, u64>,
}

impl Discarded {
    /// Adds another count to this one.
    pub fn add(&mut self, other: &Discarded) {
        for (k, v) in &other.rows {
            *self.rows.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &other.values {
            *self.values.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &other.kept_as_json {
            *self.kept_as_json.entry(k.clone()).or_default() += v;
        }
    }

    /// Whether nothing was left out or kept as JSON text.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty() && self.values.is_empty() && self.kept_as_json.is_empty()
    }
}

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Where the values of one node of a table go, per value kind.
#[derive(Debug, Clone, Copy)]
enum Slot {
    /// Into the column at this position, of this type.
    Column(u32, ColumnType),
    /// Left out by the contract (counted).
    DiscardValue,
    /// The whole record is left out by the contract (counted).
    DiscardRow,
}

/// A resolved path within a table's rows: a nested-object prefix, a column, or a list.
#[derive(Debug)]
struct Node {
    /// The normalized name (`device__os_name`); empty for the row itself.
    name: String,
    /// The JSON pointer of the source key within the row (`/device/osName`).
    pointer: String,
    /// Child nodes by raw JSON key.
    children: FastMap<Box<str>, u32>,
    /// The keys of the last object seen at this node, in its order, with their child nodes:
    /// records of one resource mostly repeat their keys in one order, so a key is first
    /// compared with the key at its position last time, and looked up only when it differs.
    last_order: SeenKeys,
    /// Where a scalar of each kind goes, once decided.
    slots: [Option<Slot>; N_KINDS],
    hint: Option<ColumnHint>,
    /// The child table of a list at this node, once made.
    child_table: Option<Result<u32, Slot>>,
    /// The last `normalize` call in which this node saw a null.
    null_seen: u64,
    /// The root table's primary key: its values are always text, whatever their JSON type,
    /// so that the key column holds every key and never loses one to a variant column.
    is_primary_key: bool,
}

impl Node {
    /// The column this node's strings go to as text whatever they read as: set when its
    /// text and timestamp slots are one text column (see [`Normalizer::put_text`]).
    #[inline(always)]
    fn text_column(&self) -> Option<u32> {
        match (
            self.slots[kind_index(ColumnType::Text)],
            self.slots[kind_index(ColumnType::Timestamp)],
        ) {
            (Some(Slot::Column(p, ColumnType::Text)), Some(Slot::Column(q, ColumnType::Text)))
                if p == q =>
            {
                Some(p)
            }
            _ => None,
        }
    }

    /// The columns values of this node go to as they are, with nothing else to decide:
    /// strings to its [`Node::text_column`], integers to a bigint column, booleans to a
    /// boolean column; none when a hint or the primary key asks for more.
    fn direct_columns(&self) -> DirectColumns {
        if self.hint.is_some() || self.is_primary_key {
            return DirectColumns::NONE;
        }
        let column = |kind: ColumnType| match self.slots[kind_index(kind)] {
            Some(Slot::Column(p, column_type)) if column_type == kind => p,
            _ => NO_COLUMN,
        };
        DirectColumns {
            text: self.text_column().unwrap_or(NO_COLUMN),
            big_int: column(ColumnType::BigInt),
            bool: column(ColumnType::Bool),
        }
    }

    fn new(name: String, pointer: String, hint: Option<ColumnHint>) -> Self {
        Node {
            name,
            pointer,
            children: FastMap::default(),
            last_order: SeenKeys::default(),
            slots: [None; N_KINDS],
            hint,
            child_table: None,
            null_seen: 0,
            is_primary_key: false,
        }
    }
}

/// The keys of the last object seen at a node, in its order, and their child nodes, as
/// parallel lists: the short forms that every key is compared with are packed four to a
/// cache line (a list of structs that held each key's text too took a line per key).
#[derive(Debug, Default)]
struct SeenKeys {
    /// Each key as [`json_tape::Key::short`] gives it, or [`LONG_KEY`] for a key without a
    /// short form.
    shorts: Vec<u128>,
    nodes: Vec<u32>,
    /// The keys' text, read only to compare a key without a short form.
    keys: Vec<Box<str>>,
}

/// [`SeenKeys::shorts`] of a key without a short form: no short form has these bytes, as
/// the byte 0xFF is never part of UTF-8 text.
const LONG_KEY: u128 = u128::MAX;

impl SeenKeys {
    /// The child node of the key at `position` if the key there last time was this one.
    #[inline(always)]
    fn node_at(&self, position: usize, short: Option<u128>, long: Option<&str>) -> Option<u32> {
        let held = *self.shorts.get(position)?;
        let same = match short {
            Some(short) => held == short,
            None => {
                held == LONG_KEY
                    && long.is_some_and(|text| {
                        same_key(self.keys[position].as_bytes(), text.as_bytes())
                    })
            }
        };
        same.then(|| self.nodes[position])
    }

    /// Notes `key` at `position`, forgetting the keys noted after it.
    fn note(&mut self, position: usize, short: Option<u128>, key: &str, node: u32) {
        self.shorts.truncate(position);
        self.nodes.truncate(position);
        self.keys.truncate(position);
        self.shorts.push(short.unwrap_or(LONG_KEY));
        self.nodes.push(node);
        self.keys.push(key.into());
    }
}

/// Where values of a node go without a decision ([`Node::direct_columns`]), by kind:
/// a column's position, or [`NO_COLUMN`] when they take the long way.
#[derive(Debug, Clone, Copy)]
struct DirectColumns {
    text: u32,
    big_int: u32,
    bool: u32,
}

impl DirectColumns {
    const NONE: DirectColumns = DirectColumns {
        text: NO_COLUMN,
        big_int: NO_COLUMN,
        bool: NO_COLUMN,
    };
}

/// A [`DirectColumns`] entry for values that take the long way.
const NO_COLUMN: u32 = u32::MAX;

/// Positions of the `_dlt_*` columns of a table.
#[derive(Debug, Clone, Copy)]
struct SystemColumns {
    row_id: u32,
    load_id: u32,
    /// Merged roots only; `u32::MAX` elsewhere.
    content_hash: u32,
    parent_id: u32,
    list_idx: u32,
    root_id: u32,
}

/// What one worker knows of a table: its identity, contract and resolved nodes.
#[derive(Debug)]
struct LocalTable {
    meta: Arc<TableMeta>,
    contract: SchemaContract,
    existed: bool,
    nodes: Vec<Node>,
    /// Per node, the columns its strings, integers and booleans go to as they are (see
    /// [`Node::direct_columns`]): the one fact read for most values, kept apart from the
    /// nodes (a few hundred bytes each) so that a record's walk reads few cache lines.
    direct: Vec<DirectColumns>,
    system: SystemColumns,
    /// The Arrow schema last built, reused while the column count stays.
    arrow: Option<(usize, SchemaRef, Vec<ColumnType>)>,
    /// How big this table's last batch was, to size the next one's builders.
    last_batch: BatchSize,
}

/// The rows of a table's last batch and the bytes of text of each of its columns: the
/// next page's builders start with a quarter more room than that, so that they rarely
/// grow. Sized by the page's record count alone, the builders of child tables and of long
/// text grew, copying themselves, about 80 times per event of the mock (330,000
/// reallocations over 4000 events, 3% of the instructions normalization ran).
#[derive(Debug, Default)]
struct BatchSize {
    rows: usize,
    text_bytes: Vec<usize>,
}

impl BatchSize {
    /// Room for a new builder of column `position`: rows at least `rows_hint`.
    fn room(&self, position: usize, rows_hint: usize) -> (usize, usize) {
        let rows = rows_hint.max(self.rows + self.rows / 4);
        let text = match self.text_bytes.get(position) {
            Some(&bytes) if bytes > 0 => bytes + bytes / 4,
            _ => rows * 16,
        };
        (rows, text)
    }
}

/// Rows of one table under construction during one `normalize` call.
#[derive(Default)]
struct Rows {
    n_rows: usize,
    /// Room made in each new column builder.
    rows_hint: usize,
    builders: Vec<Option<ColumnBuilder>>,
    null_nodes: Vec<u32>,
}

/// A value held back until its record is known to stay (only under a `discard_row` contract).
struct Pending {
    table: u32,
    position: u32,
    column_type: ColumnType,
    row: usize,
    value: OwnedScalar,
}

/// Turns pages of JSON records into Arrow batches, one per table.
///
/// One normalizer per transform worker; the workers share a [`SchemaRegistry`], so they agree
/// on every column's name and type. A value that does not fit its column's type goes to a
/// variant column named `<column>__v_<type>`; no value is dropped unless a schema contract
/// says so, and then it is counted in [`Normalizer::discarded`].
#[derive(Debug)]
pub struct Normalizer {
    config: NormalizeConfig,
    registry: SchemaRegistry,
    tables: Vec<LocalTable>,
    table_ids: FastMap<String, u32>,
    /// Normalized names of raw JSON keys.
    names: FastMap<Box<str>, Box<str>>,
    discarded: Discarded,
    /// Counts `normalize` calls, to mark nodes that saw a null in the current one.
    call: u64,
    stage_rows: bool,
    /// Whether merged root rows get `_errlake_content_hash` (see
    /// [`Normalizer::without_content_hashes`]).
    content_hashes: bool,
    /// The bytes of the record being hashed ([`content_hash`]), kept between calls.
    hash_buf: Vec<u8>,
}

/// Where a value lands: a table, a row of it, and the ids that link it.
#[derive(Clone, Copy)]
struct RowRef<'a> {
    table: u32,
    row: usize,
    row_id: &'a str,
    root_id: &'a str,
}

/// Whether the current record goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Go,
    DiscardRow,
}

/// The state of one `normalize` call.
struct Call {
    rows: Vec<Option<Rows>>,
    /// How many values a new column builder makes room for: the page's record count.
    rows_hint: usize,
    /// Under a `discard_row` contract: the current record's values.
    pending: Option<Vec<Pending>>,
    /// While a merged root record is flattened: the bytes of its content hash, written by
    /// the same walk ([`content_hash`]).
    hash: Option<Vec<u8>>,
}

impl Call {
    /// The rows of `table` in this call, made on first use. The path from a value to its
    /// builder (`put`, `emit`, this, `put_into`, `ColumnBuilder::put`) is inlined whole and
    /// makes nothing on the way (builders and rows are made out of line). Over 4000 events
    /// (callgrind), normalization ran 511M instructions as five calls, each checking and
    /// making; 479M inlined; 442M with the making out of line (measured together with
    /// json-tape's short-key mask).
    #[inline(always)]
    fn rows(&mut self, table: u32) -> &mut Rows {
        let i = table as usize;
        if !matches!(self.rows.get(i), Some(Some(_))) {
            self.make_rows(i);
        }
        match &mut self.rows[i] {
            Some(rows) => rows,
            None => unreachable!("made above"),
        }
    }

    #[cold]
    #[inline(never)]
    fn make_rows(&mut self, i: usize) {
        if self.rows.len() <= i {
            self.rows.resize_with(i + 1, || None);
        }
        self.rows[i] = Some(Rows {
            rows_hint: self.rows_hint,
            ..Rows::default()
        });
    }
}

impl Normalizer {
    /// A normalizer sharing `registry` with the other workers of the run.
    pub fn new(config: NormalizeConfig, registry: SchemaRegistry) -> Self {
        Normalizer {
            stage_rows: config.may_discard_rows(),
            content_hashes: true,
            hash_buf: Vec::new(),
            config,
            registry,
            tables: Vec::new(),
            table_ids: FastMap::default(),
            names: FastMap::default(),
            discarded: Discarded::default(),
            call: 0,
        }
    }

    /// A normalizer that gives merged root rows no content hash: for tables whose rows
    /// change with every write (a pipeline's own state), where the hash would never match.
    pub fn without_content_hashes(mut self) -> Self {
        self.content_hashes = false;
        self
    }

    /// The schema registry this normalizer shares.
    pub fn registry(&self) -> &SchemaRegistry {
        &self.registry
    }

    /// What the schema contracts left out so far.
    pub fn discarded(&self) -> &Discarded {
        &self.discarded
    }

    /// Normalizes one page of records of the root table `root`, given as `serde_json`
    /// values (written as JSON text and read back: [`Normalizer::normalize_records`] reads a
    /// parsed page without that detour).
    pub fn normalize(
        &mut self,
        root: &Arc<TableMeta>,
        load_id: &str,
        page_seq: u64,
        records: &[serde_json::Value],
    ) -> Result<Vec<TableBatch>> {
        let records = Records::from_serde(records).map_err(|problem| TransformError::Json {
            table: root.name.clone(),
            problem,
        })?;
        self.normalize_records(root, load_id, page_seq, &records, None)
    }

    /// Normalizes one page of records of the root table `root`, read from the page's parsed
    /// body in one pass: no tree of any record is built.
    ///
    /// `load_id` fills `_dlt_load_id`; `page_seq` (unique per page within a run) makes the row
    /// ids of tables without a merge key unique. Under merge, only the last record of a
    /// primary key within the page is kept, and its `_dlt_id` is derived from the key, so a
    /// rerun produces the same ids. `extra` is a `(key, text)` pair that each record gets
    /// when it lacks the key (a child resource's parent key). Returns one batch per table
    /// that received rows, the root table first.
    pub fn normalize_records(
        &mut self,
        root: &Arc<TableMeta>,
        load_id: &str,
        page_seq: u64,
        records: &Records,
        extra: Option<(&str, &str)>,
    ) -> Result<Vec<TableBatch>> {
        self.call += 1;
        let root_table = self.table(root)?;
        let system = self.tables[root_table as usize].system;
        let mut call = Call {
            rows: Vec::new(),
            rows_hint: records.len().clamp(1, 1024),
            pending: self.stage_rows.then(Vec::new),
            hash: (system.content_hash != u32::MAX).then(|| std::mem::take(&mut self.hash_buf)),
        };
        call.rows(root_table);

        let keys = merge_keys(root, records, extra)?;
        // The last occurrence of a key within the page wins.
        let mut last_of_key: FastMap<&str, usize> =
            FastMap::with_capacity_and_hasher(records.len(), Default::default());
        for (i, k) in keys.iter().enumerate() {
            if let Some(k) = k {
                last_of_key.insert(k.as_ref(), i);
            }
        }

        for (record_idx, record) in records.iter().enumerate() {
            let row_id = match &keys[record_idx] {
                Some(k) => {
                    if last_of_key.get(k.as_ref()) != Some(&record_idx) {
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
            if record.kind() != Kind::Object {
                return Err(TransformError::NotAnObject {
                    table: root.name.clone(),
                    record_idx,
                    found: record.kind().described(),
                });
            }
            let extra = extra.filter(|(key, _)| record.get(key).is_none());
            let saved_counts: Option<Vec<usize>> = call.pending.as_ref().map(|_| {
                call.rows
                    .iter()
                    .map(|r| r.as_ref().map_or(0, |r| r.n_rows))
                    .collect()
            });
            let at = self.start_root_row(&mut call, root_table, row_id.as_str(), load_id);
            if let Some(hash) = call.hash.as_mut() {
                hash.clear();
                content_hash::object(hash, record.len() + usize::from(extra.is_some()));
            }
            let mut flow = self.flatten_members(&mut call, at, 0, record, 0)?;
            if let (Flow::Go, Some((key, text))) = (flow, extra) {
                if let Some(hash) = call.hash.as_mut() {
                    content_hash::key(hash, key);
                    content_hash::text(hash, text);
                }
                let node = self.child_node(at.table, 0, key);
                let text_column = self.tables[at.table as usize].nodes[node as usize].text_column();
                flow = self.put_text(&mut call, at, node, text, text_column)?;
            }
            if let Some(hash) = call.hash.as_ref() {
                let hash = content_hash::digest(hash);
                self.emit(
                    &mut call,
                    at,
                    system.content_hash,
                    ColumnType::Text,
                    Scalar::Text(hash.as_str()),
                );
            }
            if let Some(saved) = saved_counts {
                self.settle_staged_record(&mut call, flow, saved, &root.name);
            }
        }

        if let Some(hash) = call.hash.take() {
            self.hash_buf = hash;
        }
        self.finish(call)
    }

    /// A new row of root table `root_table`, with its row id and load id set.
    fn start_root_row<'r>(
        &mut self,
        call: &mut Call,
        root_table: u32,
        row_id: &'r str,
        load_id: &str,
    ) -> RowRef<'r> {
        let rows = call.rows(root_table);
        let row = rows.n_rows;
        rows.n_rows += 1;
        let at = RowRef {
            table: root_table,
            row,
            row_id,
            root_id: row_id,
        };
        let system = self.tables[root_table as usize].system;
        self.emit(
            call,
            at,
            system.row_id,
            ColumnType::Text,
            Scalar::Text(row_id),
        );
        self.emit(
            call,
            at,
            system.load_id,
            ColumnType::Text,
            Scalar::Text(load_id),
        );
        at
    }

    /// Under a contract that may discard rows, a record's values wait in `call.pending`:
    /// kept, they go into their columns; discarded, every table's row count goes back to
    /// `saved` (what it was before the record) and the discard is counted.
    fn settle_staged_record(&mut self, call: &mut Call, flow: Flow, saved: Vec<usize>, root: &str) {
        let Some(pending) = call.pending.take() else {
            return;
        };
        if flow == Flow::DiscardRow {
            for (rows, n) in call.rows.iter_mut().zip(saved) {
                if let Some(rows) = rows {
                    rows.n_rows = n;
                }
            }
            *self.discarded.rows.entry(root.to_owned()).or_default() += 1;
        } else {
            for p in &pending {
                put_into(
                    call.rows(p.table),
                    &self.tables,
                    p.table,
                    p.position,
                    p.column_type,
                    p.row,
                    p.value.borrow(),
                );
            }
        }
        call.pending = Some(Vec::new());
    }

    /// The local id of a table, set up on first sight (with its `_dlt_*` columns).
    fn table(&mut self, meta: &Arc<TableMeta>) -> Result<u32> {
        if let Some(&id) = self.table_ids.get(&meta.name) {
            return Ok(id);
        }
        let existed = self.registry.existed(&meta.name);
        let system = {
            let mut registry = self.registry.lock();
            let schema = registry.entry(meta.name.clone()).or_default();
            let mut system_column = |name: &str| {
                schema.claim(name, "#dlt");
                schema
                    .add_column(Column::new(
                        name,
                        if name == LIST_IDX {
                            ColumnType::BigInt
                        } else {
                            ColumnType::Text
                        },
                    ))
                    .0 as u32
            };
            let row_id = system_column(ROW_ID);
            if meta.is_root() {
                let load_id = system_column(LOAD_ID);
                let merged = self.content_hashes
                    && meta.primary_key.is_some()
                    && meta.write_disposition == WriteDisposition::Merge;
                SystemColumns {
                    row_id,
                    load_id,
                    content_hash: if merged {
                        system_column(CONTENT_HASH)
                    } else {
                        u32::MAX
                    },
                    parent_id: u32::MAX,
                    list_idx: u32::MAX,
                    root_id: u32::MAX,
                }
            } else {
                SystemColumns {
                    row_id,
                    load_id: u32::MAX,
                    content_hash: u32::MAX,
                    parent_id: system_column(PARENT_ID),
                    list_idx: system_column(LIST_IDX),
                    root_id: system_column(ROOT_ID),
                }
            }
        };
        let id = self.tables.len() as u32;
        self.tables.push(LocalTable {
            contract: self.config.contract(&meta.name),
            meta: meta.clone(),
            existed,
            nodes: vec![Node::new(String::new(), String::new(), None)],
            direct: vec![DirectColumns::NONE],
            system,
            arrow: None,
            last_batch: BatchSize::default(),
        });
        self.table_ids.insert(meta.name.clone(), id);
        Ok(id)
    }

    /// An object's pairs flattened under node `parent` of the row at `at`.
    fn flatten_object(
        &mut self,
        call: &mut Call,
        at: RowRef<'_>,
        parent: u32,
        object: Value<'_>,
        depth: usize,
    ) -> Result<Flow> {
        if let Some(hash) = call.hash.as_mut() {
            content_hash::object(hash, object.len());
        }
        self.flatten_members(call, at, parent, object, depth)
    }

    /// The pairs of [`Normalizer::flatten_object`], without the object's start in the
    /// content hash (a root record's start counts the pair it may get).
    fn flatten_members(
        &mut self,
        call: &mut Call,
        at: RowRef<'_>,
        parent: u32,
        object: Value<'_>,
        depth: usize,
    ) -> Result<Flow> {
        for (position, (key, value)) in object.members().enumerate() {
            // A short key (nearly every one) is compared and hashed as one number, without
            // reading its text.
            let short = key.short();
            // The key's text, read only for a key without a short form.
            let long = short.is_none().then(|| key.as_str());
            let seen = self.tables[at.table as usize].nodes[parent as usize]
                .last_order
                .node_at(position, short, long.as_deref());
            if let Some(hash) = call.hash.as_mut() {
                match &long {
                    None => content_hash::short_key(hash, short.unwrap_or_default()),
                    Some(text) => content_hash::key(hash, text),
                }
            }
            let node = match seen {
                Some(node) => node,
                None => {
                    let key = long.unwrap_or_else(|| key.as_str());
                    let node = self.child_node(at.table, parent, &key);
                    self.tables[at.table as usize].nodes[parent as usize]
                        .last_order
                        .note(position, short, &key, node);
                    node
                }
            };
            // Most strings, integers and booleans go straight to their column here, without
            // the call to `flatten_value` that other values take (its entry and exit were
            // 3.4% of normalization's instructions for strings alone).
            let t = &self.tables[at.table as usize];
            let direct = t.direct[node as usize];
            let n = &t.nodes[node as usize];
            let flow = match value.kind() {
                Kind::String if direct.text != NO_COLUMN => {
                    self.flatten_string(call, at, node, value, false, Some(direct.text))?
                }
                Kind::String if n.hint.is_none() => {
                    let (is_primary_key, text_column) = (n.is_primary_key, n.text_column());
                    self.flatten_string(call, at, node, value, is_primary_key, text_column)?
                }
                Kind::Number if direct.big_int != NO_COLUMN => match value.as_number() {
                    Some(number @ Number::Int(i)) => {
                        if let Some(hash) = call.hash.as_mut() {
                            content_hash::number(hash, Some(number));
                        }
                        self.emit(
                            call,
                            at,
                            direct.big_int,
                            ColumnType::BigInt,
                            Scalar::BigInt(i),
                        );
                        Flow::Go
                    }
                    _ => self.flatten_value(call, at, node, value, depth)?,
                },
                Kind::Bool if direct.bool != NO_COLUMN => {
                    let b = value.as_bool() == Some(true);
                    if let Some(hash) = call.hash.as_mut() {
                        content_hash::boolean(hash, b);
                    }
                    self.emit(call, at, direct.bool, ColumnType::Bool, Scalar::Bool(b));
                    Flow::Go
                }
                _ => self.flatten_value(call, at, node, value, depth)?,
            };
            if flow == Flow::DiscardRow {
                return Ok(Flow::DiscardRow);
            }
        }
        Ok(Flow::Go)
    }

    /// A string value of node `node`: into the content hash while one is made, then into
    /// its column (the primary key as text, others as timestamps when they read as one).
    #[inline(always)]
    fn flatten_string(
        &mut self,
        call: &mut Call,
        at: RowRef<'_>,
        node: u32,
        value: Value<'_>,
        is_primary_key: bool,
        text_column: Option<u32>,
    ) -> Result<Flow> {
        let s = match value.as_plain_str() {
            Some(plain) => Cow::Borrowed(plain),
            None => value.as_str().unwrap_or_default(),
        };
        if let Some(hash) = call.hash.as_mut() {
            content_hash::text(hash, &s);
        }
        if is_primary_key {
            self.put(call, at, node, Scalar::Text(&s))
        } else {
            self.put_text(call, at, node, &s, text_column)
        }
    }

    /// A string value: a timestamp when it reads as one, text otherwise. A string whose
    /// node puts text and timestamps alike into its text column is not read as a timestamp:
    /// it lands there as its text either way (most strings; reading each was 2.6% of
    /// normalization's instructions), and goes there at once, without [`Normalizer::put`]
    /// looking its slot up again (4000 events: 381.0M -> 366.1M instructions).
    /// `text_column` is the node's [`Node::text_column`], read by the caller with the node's
    /// other facts.
    #[inline(always)]
    fn put_text(
        &mut self,
        call: &mut Call,
        at: RowRef<'_>,
        node: u32,
        s: &str,
        text_column: Option<u32>,
    ) -> Result<Flow> {
        match text_column {
            Some(p) => {
                // A text column takes any text: `fits` holds.
                self.emit(call, at, p, ColumnType::Text, Scalar::Text(s));
                Ok(Flow::Go)
            }
            None => {
                let scalar = match parse_timestamp(s) {
                    Some(micros) => Scalar::Timestamp(s, micros),
                    None => Scalar::Text(s),
                };
                self.put(call, at, node, scalar)
            }
        }
    }

    /// A value of node `node`, written into the content hash too while one is made.
    fn flatten_value(
        &mut self,
        call: &mut Call,
        at: RowRef<'_>,
        node: u32,
        value: Value<'_>,
        depth: usize,
    ) -> Result<Flow> {
        let n = &self.tables[at.table as usize].nodes[node as usize];
        let (is_primary_key, text_column) = (n.is_primary_key, n.text_column());
        match n.hint.as_ref().map(|h| (h.exclude, h.column_type)) {
            Some((true, _)) => {
                if let Some(hash) = call.hash.as_mut() {
                    content_hash::feed(hash, value, None);
                }
                return Ok(Flow::Go);
            }
            Some((false, Some(HintType::Json))) if !value.is_null() => {
                if let Some(hash) = call.hash.as_mut() {
                    content_hash::feed(hash, value, None);
                }
                let text = value.to_json();
                return self.put(call, at, node, Scalar::Json(&text));
            }
            _ => {}
        }
        match value.kind() {
            Kind::Null => {
                if let Some(hash) = call.hash.as_mut() {
                    content_hash::null(hash);
                }
                let current = self.call;
                let n = &mut self.tables[at.table as usize].nodes[node as usize];
                if n.null_seen != current {
                    n.null_seen = current;
                    call.rows(at.table).null_nodes.push(node);
                }
                Ok(Flow::Go)
            }
            Kind::Bool => {
                let b = value.as_bool() == Some(true);
                if let Some(hash) = call.hash.as_mut() {
                    content_hash::boolean(hash, b);
                }
                self.put(call, at, node, Scalar::Bool(b))
            }
            Kind::Number => {
                let number = value.as_number();
                if let Some(hash) = call.hash.as_mut() {
                    content_hash::number(hash, number);
                }
                match number {
                    // The primary key is text, whatever its JSON type.
                    Some(_) if is_primary_key => {
                        let text = value.as_key_text().unwrap_or_default();
                        self.put(call, at, node, Scalar::Text(&text))
                    }
                    Some(Number::Int(i)) => self.put(call, at, node, Scalar::BigInt(i)),
                    // Beyond i64: kept exactly as decimal text.
                    Some(Number::UInt(u)) => {
                        let text = u.to_string();
                        self.put(call, at, node, Scalar::Text(&text))
                    }
                    Some(Number::Big(digits)) => self.put(call, at, node, Scalar::Text(digits)),
                    Some(Number::Float(f)) => self.put(call, at, node, Scalar::Double(f)),
                    None => Ok(Flow::Go),
                }
            }
            Kind::String => self.flatten_string(call, at, node, value, is_primary_key, text_column),
            Kind::Object => self.flatten_nested_object(call, at, node, value, depth),
            Kind::Array => self.flatten_list(call, at, node, value, depth),
        }
    }

    /// An object below the row's top level: flattened into `__`-joined columns, or kept
    /// whole as JSON text when it nests too deep or its new keys would pass the table's
    /// column limit.
    fn flatten_nested_object(
        &mut self,
        call: &mut Call,
        at: RowRef<'_>,
        node: u32,
        value: Value<'_>,
        depth: usize,
    ) -> Result<Flow> {
        let too_deep = depth + 1 > self.config.max_nesting_depth;
        if too_deep || self.would_overflow(at.table, node, value) {
            if !too_deep {
                let t = &self.tables[at.table as usize];
                let key = format!("{}.{}", t.meta.name, t.nodes[node as usize].name);
                *self.discarded.kept_as_json.entry(key).or_default() += 1;
            }
            if let Some(hash) = call.hash.as_mut() {
                content_hash::feed(hash, value, None);
            }
            let text = value.to_json();
            self.put(call, at, node, Scalar::Json(&text))
        } else {
            self.flatten_object(call, at, node, value, depth + 1)
        }
    }

    /// A list: a row per item in the child table, linked to its parent row and root; a
    /// list nesting too deep is kept whole as JSON text.
    fn flatten_list(
        &mut self,
        call: &mut Call,
        at: RowRef<'_>,
        node: u32,
        value: Value<'_>,
        depth: usize,
    ) -> Result<Flow> {
        let kept_whole = depth + 1 > self.config.max_nesting_depth;
        let child = if kept_whole {
            None
        } else {
            match self.child_table(at.table, node)? {
                Ok(child) => Some(child),
                Err(Slot::DiscardRow) => return Ok(Flow::DiscardRow),
                Err(_) => None,
            }
        };
        if let Some(hash) = call.hash.as_mut() {
            match child {
                Some(_) => content_hash::list(hash, value.len()),
                None => content_hash::feed(hash, value, None),
            }
        }
        let Some(child) = child else {
            if kept_whole {
                let text = value.to_json();
                return self.put(call, at, node, Scalar::Json(&text));
            }
            self.count_discarded_value(at.table, node);
            return Ok(Flow::Go);
        };
        // The table's shared metadata, not a copy of its name: a list costs no allocation.
        let child_meta = self.tables[child as usize].meta.clone();
        let mut row_ids = RowIdParts::list_items(at.row_id, &child_meta.name);
        for (list_idx, item) in value.elements().enumerate() {
            let child_row_id = row_ids.item(list_idx);
            let child_at = self.start_child_row(call, at, child, child_row_id.as_str(), list_idx);
            let flow = match item.kind() {
                Kind::Object => self.flatten_object(call, child_at, 0, item, depth + 1)?,
                // A list in a list makes the table `<child>__list` (dlt's name).
                Kind::Array => {
                    let list_node = self.child_node(child, 0, LIST);
                    self.flatten_value(call, child_at, list_node, item, depth + 1)?
                }
                _ => {
                    let value_node = self.child_node(child, 0, VALUE);
                    self.flatten_value(call, child_at, value_node, item, depth + 1)?
                }
            };
            if flow == Flow::DiscardRow {
                return Ok(Flow::DiscardRow);
            }
        }
        Ok(Flow::Go)
    }

    /// A new row of child table `child` for item `list_idx` of a list in row `at`, with its
    /// system columns (row id, parent id, list index, root id) set.
    fn start_child_row<'r>(
        &mut self,
        call: &mut Call,
        at: RowRef<'r>,
        child: u32,
        child_row_id: &'r str,
        list_idx: usize,
    ) -> RowRef<'r> {
        let system = self.tables[child as usize].system;
        let rows = call.rows(child);
        let row = rows.n_rows;
        rows.n_rows += 1;
        let child_at = RowRef {
            table: child,
            row,
            row_id: child_row_id,
            root_id: at.root_id,
        };
        if call.pending.is_some() {
            let columns = [
                (system.row_id, ColumnType::Text, Scalar::Text(child_row_id)),
                (system.parent_id, ColumnType::Text, Scalar::Text(at.row_id)),
                (
                    system.list_idx,
                    ColumnType::BigInt,
                    Scalar::BigInt(list_idx as i64),
                ),
                (system.root_id, ColumnType::Text, Scalar::Text(at.root_id)),
            ];
            for (column, column_type, scalar) in columns {
                self.emit(call, child_at, column, column_type, scalar);
            }
        } else {
            // Straight into the builders, the table's rows looked up once for the four, each
            // put written out with its value: as a loop over the four, each put matched its
            // value's type (4.7M of 350M instructions over 4000 events), and building the
            // four as a list first took 6.2M more.
            let rows = call.rows(child);
            let tables = &self.tables;
            let text = |s| (ColumnType::Text, Scalar::Text(s));
            let (t, v) = text(child_row_id);
            put_into(rows, tables, child, system.row_id, t, row, v);
            let (t, v) = text(at.row_id);
            put_into(rows, tables, child, system.parent_id, t, row, v);
            let (t, v) = (ColumnType::BigInt, Scalar::BigInt(list_idx as i64));
            put_into(rows, tables, child, system.list_idx, t, row, v);
            let (t, v) = text(at.root_id);
            put_into(rows, tables, child, system.root_id, t, row, v);
        }
        child_at
    }

    /// The node of `key` under `parent`, resolved on first sight: its name is the parent's
    /// name joined with the key's normalized form, unless another source key owns that name
    /// in the table, then `<name>_<n>`.
    fn child_node(&mut self, table: u32, parent: u32, key: &str) -> u32 {
        let t = table as usize;
        if let Some(&n) = self.tables[t].nodes[parent as usize].children.get(key) {
            return n;
        }
        let base = match self.names.get(key) {
            Some(n) => n.to_string(),
            None => {
                let n = normalize_identifier(key);
                self.names.insert(key.into(), n.clone().into_boxed_str());
                n
            }
        };
        let parent_node = &self.tables[t].nodes[parent as usize];
        let candidate = if parent_node.name.is_empty() {
            base
        } else {
            join_path(&parent_node.name, &base)
        };
        let mut pointer = parent_node.pointer.clone();
        pointer.push('/');
        for c in key.chars() {
            match c {
                '~' => pointer.push_str("~0"),
                '/' => pointer.push_str("~1"),
                c => pointer.push(c),
            }
        }
        let table_name = self.tables[t].meta.name.clone();
        let name = self
            .registry
            .lock()
            .entry(table_name.clone())
            .or_default()
            .claim(&candidate, &pointer);
        let hint = self.config.hint(&table_name, &name).cloned();
        let id = self.tables[t].nodes.len() as u32;
        let mut node = Node::new(name, pointer, hint);
        let meta = &self.tables[t].meta;
        node.is_primary_key =
            parent == 0 && meta.parent.is_none() && meta.primary_key.as_deref() == Some(key);
        self.tables[t].direct.push(node.direct_columns());
        self.tables[t].nodes.push(node);
        self.tables[t].nodes[parent as usize]
            .children
            .insert(key.into(), id);
        id
    }

    /// The child table of the list at `node`, or the contract's verdict when the table is
    /// new to an existing parent whose contract does not let tables evolve.
    fn child_table(&mut self, table: u32, node: u32) -> Result<Result<u32, Slot>> {
        let t = table as usize;
        if let Some(made) = self.tables[t].nodes[node as usize].child_table {
            return Ok(made);
        }
        let parent = self.tables[t].meta.clone();
        let name = join_path(&parent.name, &self.tables[t].nodes[node as usize].name);
        let is_new = self.registry.table_len(&name) == 0;
        let verdict = if is_new && self.tables[t].existed {
            match self.tables[t].contract.tables {
                ContractMode::Evolve => None,
                ContractMode::Freeze => {
                    return Err(TransformError::ContractViolation {
                        table: parent.name.clone(),
                        column: self.tables[t].nodes[node as usize].name.clone(),
                        rule: "tables",
                        detail: format!("a list would make the new table `{name}`"),
                    });
                }
                ContractMode::DiscardRow => Some(Slot::DiscardRow),
                ContractMode::DiscardValue => Some(Slot::DiscardValue),
            }
        } else {
            None
        };
        let made = match verdict {
            Some(slot) => Err(slot),
            None => {
                let meta = Arc::new(TableMeta {
                    name,
                    parent: Some(parent.name.clone()),
                    root: parent.root.clone(),
                    primary_key: None,
                    write_disposition: parent.write_disposition,
                });
                Ok(self.table(&meta)?)
            }
        };
        self.tables[t].nodes[node as usize].child_table = Some(made);
        Ok(made)
    }

    /// Puts a scalar of a node into its column, or the variant column of its kind.
    #[inline(always)]
    fn put(
        &mut self,
        call: &mut Call,
        at: RowRef<'_>,
        node: u32,
        value: Scalar<'_>,
    ) -> Result<Flow> {
        let kind = value.kind();
        let slot = match self.tables[at.table as usize].nodes[node as usize].slots[kind_index(kind)]
        {
            Some(slot) => slot,
            None => {
                let slot = self.decide_slot(at.table, node, kind, false)?;
                let own_text = kind == ColumnType::Text
                    && matches!(slot, Slot::Column(p, ColumnType::Text)
                        if self.own_column(at.table, node) == Some(p as usize));
                let slots = &mut self.tables[at.table as usize].nodes[node as usize].slots;
                slots[kind_index(kind)] = Some(slot);
                if own_text {
                    // A timestamp at this node lands in its text column too (`kind_fits`):
                    // decided now, so that its strings need not be read as timestamps.
                    slots[kind_index(ColumnType::Timestamp)].get_or_insert(slot);
                }
                let t = &mut self.tables[at.table as usize];
                t.direct[node as usize] = t.nodes[node as usize].direct_columns();
                slot
            }
        };
        let slot = match slot {
            Slot::Column(_, column_type) if !fits(column_type, value) => {
                // Only an integer too large for a double column gets here.
                self.decide_slot(at.table, node, kind, true)?
            }
            other => other,
        };
        match slot {
            Slot::Column(position, column_type) => {
                self.emit(call, at, position, column_type, value);
                Ok(Flow::Go)
            }
            Slot::DiscardValue => {
                self.count_discarded_value(at.table, node);
                Ok(Flow::Go)
            }
            Slot::DiscardRow => Ok(Flow::DiscardRow),
        }
    }

    /// The position of a node's own column (named after the node, not a variant), if made.
    fn own_column(&self, table: u32, node: u32) -> Option<usize> {
        let t = &self.tables[table as usize];
        self.registry
            .lock()
            .get(&t.meta.name)
            .and_then(|schema| schema.position(&t.nodes[node as usize].name))
    }

    /// Decides where values of `kind` at a node go, adding columns to the registry as the
    /// contract allows. `variant`: skip the node's own column.
    fn decide_slot(
        &mut self,
        table: u32,
        node: u32,
        kind: ColumnType,
        variant: bool,
    ) -> Result<Slot> {
        let t = &self.tables[table as usize];
        let n = &t.nodes[node as usize];
        let mut registry = self.registry.lock();
        let schema = registry.entry(t.meta.name.clone()).or_default();
        let verdict =
            |rule: &'static str, mode: ContractMode, column: &str, detail: String| match mode {
                ContractMode::Evolve => Ok(None),
                ContractMode::Freeze => Err(TransformError::ContractViolation {
                    table: t.meta.name.clone(),
                    column: column.to_owned(),
                    rule,
                    detail,
                }),
                ContractMode::DiscardRow => Ok(Some(Slot::DiscardRow)),
                ContractMode::DiscardValue => Ok(Some(Slot::DiscardValue)),
            };
        if !variant {
            let existing = schema
                .position(&n.name)
                .map(|p| (p, schema.columns()[p].column_type));
            let (position, column_type) = match existing {
                Some(found) => found,
                None => {
                    if t.existed
                        && let Some(slot) = verdict(
                            "columns",
                            t.contract.columns,
                            &n.name,
                            format!("new column `{}` ({})", n.name, kind.name()),
                        )?
                    {
                        return Ok(slot);
                    }
                    let column_type = n
                        .hint
                        .as_ref()
                        .and_then(|h| h.column_type)
                        .map_or(kind, ColumnType::from);
                    schema.add_column(Column {
                        name: n.name.clone(),
                        column_type,
                        source: Some(n.pointer.clone()),
                    })
                }
            };
            if kind_fits(column_type, kind) {
                return Ok(Slot::Column(position as u32, column_type));
            }
        }
        // A value of another type than the column's: its variant column.
        let suffix = kind.variant_suffix();
        let source = format!("{}#{suffix}", n.pointer);
        let name = schema.claim(&join_path(&n.name, suffix), &source);
        if schema.position(&name).is_none()
            && t.existed
            && let Some(slot) = verdict(
                "data_type",
                t.contract.data_type,
                &n.name,
                format!(
                    "a {} value in `{}` of type {}",
                    kind.name(),
                    n.name,
                    schema.column_type(&n.name).map_or("?", ColumnType::name)
                ),
            )?
        {
            return Ok(slot);
        }
        let (position, column_type) = schema.add_column(Column {
            name,
            column_type: kind,
            source: Some(source),
        });
        Ok(Slot::Column(position as u32, column_type))
    }

    /// Whether flattening `object` at `node` would take its table past `max_table_columns`:
    /// then the object is kept whole as JSON text. A cheap bound first (this worker's nodes
    /// and the columns it last saw), the registry only near the limit.
    fn would_overflow(&self, table: u32, node: u32, object: Value<'_>) -> bool {
        let t = &self.tables[table as usize];
        let limit = self.config.max_table_columns;
        let seen = t
            .nodes
            .len()
            .max(t.arrow.as_ref().map_or(0, |(n, _, _)| *n));
        if seen + object.len() <= limit {
            return false;
        }
        let known = &t.nodes[node as usize].children;
        let new_keys = object
            .members()
            .filter(|(k, _)| !known.contains_key(k.as_str().as_ref()))
            .count();
        new_keys > 0 && self.registry.table_len(&t.meta.name) + new_keys > limit
    }

    fn count_discarded_value(&mut self, table: u32, node: u32) {
        let t = &self.tables[table as usize];
        let key = format!("{}.{}", t.meta.name, t.nodes[node as usize].name);
        *self.discarded.values.entry(key).or_default() += 1;
    }

    /// Appends a value to a column of a row, or holds it back while the record may still be
    /// discarded.
    #[inline(always)]
    fn emit(
        &self,
        call: &mut Call,
        at: RowRef<'_>,
        position: u32,
        column_type: ColumnType,
        value: Scalar<'_>,
    ) {
        match &mut call.pending {
            Some(pending) => pending.push(Pending {
                table: at.table,
                position,
                column_type,
                row: at.row,
                value: value.to_owned(),
            }),
            None => put_into(
                call.rows(at.table),
                &self.tables,
                at.table,
                position,
                column_type,
                at.row,
                value,
            ),
        }
    }

    fn finish(&mut self, mut call: Call) -> Result<Vec<TableBatch>> {
        let mut out = Vec::with_capacity(call.rows.len());
        for (id, rows) in call.rows.iter_mut().enumerate() {
            let Some(rows) = rows else { continue };
            if rows.n_rows == 0 {
                continue;
            }
            let table = &mut self.tables[id];
            // Columns that only saw nulls get their hinted type, or are declared null-only:
            // their first value, in any run or shard, will type them.
            if !rows.null_nodes.is_empty() {
                let mut registry = self.registry.lock();
                let schema = registry.entry(table.meta.name.clone()).or_default();
                for &node in &rows.null_nodes {
                    let n = &table.nodes[node as usize];
                    let is_plain = n.children.is_empty() && n.child_table.is_none();
                    let excluded = n.hint.as_ref().is_some_and(|h| h.exclude);
                    let frozen = table.existed && table.contract.columns != ContractMode::Evolve;
                    if is_plain && !excluded && !frozen && schema.position(&n.name).is_none() {
                        let hinted = n.hint.as_ref().and_then(|h| h.column_type);
                        let column = Column {
                            name: n.name.clone(),
                            column_type: hinted.map_or(ColumnType::Text, ColumnType::from),
                            source: Some(n.pointer.clone()),
                        };
                        if hinted.is_some() {
                            schema.add_column(column);
                        } else {
                            schema.add_null_only(column);
                        }
                    }
                }
            }
            let len = self.registry.table_len(&table.meta.name);
            let (schema, types) = match &table.arrow {
                Some((n, schema, types)) if *n == len => (schema.clone(), types.clone()),
                _ => {
                    let (schema, types) = self.registry.arrow_and_types(&table.meta.name);
                    table.arrow = Some((types.len(), schema.clone(), types.clone()));
                    (schema, types)
                }
            };
            table.last_batch.rows = rows.n_rows;
            table.last_batch.text_bytes.clear();
            table.last_batch.text_bytes.extend(
                rows.builders
                    .iter()
                    .map(|b| b.as_ref().map_or(0, ColumnBuilder::text_bytes)),
            );
            let arrays: Vec<ArrayRef> = types
                .iter()
                .enumerate()
                .map(|(position, column_type)| {
                    match rows.builders.get_mut(position).and_then(Option::as_mut) {
                        Some(builder) => builder.finish(rows.n_rows),
                        None => new_null_array(&column_type.arrow_type(), rows.n_rows),
                    }
                })
                .collect();
            let batch =
                RecordBatch::try_new(schema, arrays).map_err(|source| TransformError::Arrow {
                    table: table.meta.name.clone(),
                    source,
                })?;
            out.push(TableBatch {
                table: table.meta.clone(),
                batch,
            });
        }
        Ok(out)
    }
}

const N_KINDS: usize = 6;

fn kind_index(kind: ColumnType) -> usize {
    match kind {
        ColumnType::Bool => 0,
        ColumnType::BigInt => 1,
        ColumnType::Double => 2,
        ColumnType::Text => 3,
        ColumnType::Timestamp => 4,
        ColumnType::Json => 5,
    }
}

/// Whether values of `kind` belong in a column of `column_type` (an integer in a double
/// column is checked again for its size).
fn kind_fits(column_type: ColumnType, kind: ColumnType) -> bool {
    column_type == kind
        || matches!(
            (column_type, kind),
            (ColumnType::Double, ColumnType::BigInt)
                | (ColumnType::Text, ColumnType::Timestamp)
                | (ColumnType::Json, _)
        )
}

/// Whether this value fits a column of `column_type`: integers go into a double column
/// only where the double holds them exactly.
fn fits(column_type: ColumnType, value: Scalar<'_>) -> bool {
    match (column_type, value) {
        (ColumnType::Double, Scalar::BigInt(i)) => i.unsigned_abs() <= (1u64 << 53),
        (c, v) => kind_fits(c, v.kind()),
    }
}

/// Whether two keys are equal, compared inline a word at a time: keys are short, and a call
/// to `memcmp` for each key of each record was a twentieth of normalization.
#[inline]
fn same_key(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    let word = |s: &[u8], i: usize| u64::from_le_bytes(s[i..i + 8].try_into().unwrap_or([0; 8]));
    let half = |s: &[u8], i: usize| u32::from_le_bytes(s[i..i + 4].try_into().unwrap_or([0; 4]));
    match n {
        0 => true,
        1..4 => a[0] == b[0] && a[n / 2] == b[n / 2] && a[n - 1] == b[n - 1],
        4..8 => half(a, 0) == half(b, 0) && half(a, n - 4) == half(b, n - 4),
        _ => {
            let mut i = 0;
            while i + 8 < n {
                if word(a, i) != word(b, i) {
                    return false;
                }
                i += 8;
            }
            word(a, n - 8) == word(b, n - 8)
        }
    }
}

/// Appends a value that fits the column to its builder, padding skipped rows with nulls; a
/// new builder gets room by the table's last batch.
#[inline(always)]
fn put_into(
    rows: &mut Rows,
    tables: &[LocalTable],
    table: u32,
    position: u32,
    column_type: ColumnType,
    row: usize,
    value: Scalar<'_>,
) {
    let p = position as usize;
    match rows.builders.get_mut(p) {
        Some(Some(builder)) => builder.put(row, value),
        _ => new_builder(rows, &tables[table as usize].last_batch, p, column_type).put(row, value),
    }
}

/// The builder of column `p`, made with room by the table's last batch (the first value of
/// a column in a call; kept out of line, off the path of every other value).
#[cold]
#[inline(never)]
fn new_builder<'r>(
    rows: &'r mut Rows,
    last_batch: &BatchSize,
    p: usize,
    column_type: ColumnType,
) -> &'r mut ColumnBuilder {
    if rows.builders.len() <= p {
        rows.builders.resize_with(p + 1, || None);
    }
    let (room, text_bytes) = last_batch.room(p, rows.rows_hint);
    rows.builders[p].insert(ColumnBuilder::new(column_type, room, text_bytes))
}

/// Each record's primary key as text when `root` is merged on one (`None` otherwise): from
/// the record, or from `extra` when that is the key and the record lacks it.
fn merge_keys<'a>(
    root: &TableMeta,
    records: &'a Records,
    extra: Option<(&'a str, &'a str)>,
) -> Result<Vec<Option<std::borrow::Cow<'a, str>>>> {
    let merge_key = match (&root.primary_key, root.write_disposition) {
        (Some(pk), WriteDisposition::Merge) => Some(pk.as_str()),
        _ => None,
    };
    records
        .iter()
        .enumerate()
        .map(|(record_idx, record)| {
            let Some(pk) = merge_key else { return Ok(None) };
            let from_extra = || match extra {
                Some((key, text)) if key == pk && record.get(pk).is_none() => {
                    Some(std::borrow::Cow::Borrowed(text))
                }
                _ => None,
            };
            record
                .get(pk)
                .and_then(|v| v.as_key_text())
                .or_else(from_extra)
                .map(Some)
                .ok_or_else(|| TransformError::MissingPrimaryKey {
                    table: root.name.clone(),
                    primary_key: pk.to_owned(),
                    record_idx,
                })
        })
        .collect()
}

/// The primary key of a record as text, if the record has a usable one (a string, or a
/// number as serde_json writes it).
pub fn primary_key_string(record: &serde_json::Value, primary_key: &str) -> Option<String> {
    match record.get(primary_key)? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A 128-bit row id, as 32 hex digits, from its parts: xxh3-128 of each part's length (8
/// bytes, little-endian) and bytes, in order ([`RowIdParts`]).
fn row_id_hash(parts: &[&[u8]]) -> Hex<32> {
    RowIdParts::new(parts).digest()
}

/// The parts of a row id laid out as they are hashed, in a buffer on the stack when they fit
/// (hashing them in one call: a streaming hasher fed part by part costs twice as much per
/// row and gives the same digest).
struct RowIdParts {
    short: [u8; RowIdParts::ROOM],
    /// The parts when they do not fit `short`.
    long: Vec<u8>,
    len: usize,
}

impl RowIdParts {
    /// Room for a child row's parts with a table name of up to 64 bytes.
    const ROOM: usize = 128;

    fn new(parts: &[&[u8]]) -> Self {
        let len: usize = parts.iter().map(|p| 8 + p.len()).sum();
        let mut laid_out = RowIdParts {
            short: [0; Self::ROOM],
            long: if len > Self::ROOM {
                vec![0; len]
            } else {
                Vec::new()
            },
            len,
        };
        let buf = laid_out.bytes_mut();
        let mut at = 0;
        for part in parts {
            buf[at..at + 8].copy_from_slice(&(part.len() as u64).to_le_bytes());
            buf[at + 8..at + 8 + part.len()].copy_from_slice(part);
            at += 8 + part.len();
        }
        laid_out
    }

    /// The parts of the row ids of one list's items: the parent's row id, the child
    /// table's name and the item's index, written once per list; [`RowIdParts::item`]
    /// writes each item's index over the last eight bytes (building each item's parts anew
    /// took about 35 instructions more a row: 363.6M -> 361.2M over 4000 events).
    fn list_items(parent_row_id: &str, child_table: &str) -> Self {
        RowIdParts::new(&[parent_row_id.as_bytes(), child_table.as_bytes(), &[0; 8]])
    }

    /// The row id of item `list_idx` of a list laid out by [`RowIdParts::list_items`].
    #[inline]
    fn item(&mut self, list_idx: usize) -> Hex<32> {
        let buf = self.bytes_mut();
        let n = buf.len();
        buf[n - 8..].copy_from_slice(&(list_idx as u64).to_le_bytes());
        self.digest()
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        if self.len > Self::ROOM {
            &mut self.long
        } else {
            &mut self.short[..self.len]
        }
    }

    fn digest(&mut self) -> Hex<32> {
        Hex::of(xxhash_rust::xxh3::xxh3_128(self.bytes_mut()))
    }
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
    utc_timestamp(b).or_else(|| {
        chrono::DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|dt| dt.timestamp_micros())
    })
}

/// The common shape of API timestamps read without chrono's general parser (which was 2.4%
/// of normalization's instructions; chrono's date types still check the calendar):
/// `YYYY-MM-DDTHH:MM:SS`, an optional fraction of 1 to 9 digits, and `Z`. `None` for any other text, valid or not, which goes
/// to chrono (offsets, a leap second, a lowercase `t` or `z`, a space).
fn utc_timestamp(b: &[u8]) -> Option<i64> {
    let digits = |at: usize, n: usize| -> Option<i64> {
        b.get(at..at + n)?.iter().try_fold(0i64, |v, &d| {
            d.is_ascii_digit().then(|| v * 10 + i64::from(d - b'0'))
        })
    };
    if b.len() < 20 || b[10] != b'T' || b[16] != b':' || *b.last()? != b'Z' {
        return None;
    }
    let micros = match b.len() - 20 {
        0 => 0,
        n @ 2..=10 if b[19] == b'.' => digits(20, n - 1)? * 10i64.pow(10 - n as u32) / 1000,
        _ => return None,
    };
    // chrono checks the calendar (month lengths, leap years; a second of 60 is refused here
    // and read by the general parser, which knows leap seconds).
    let field = |at: usize, n: usize| digits(at, n).and_then(|v| u32::try_from(v).ok());
    let date = chrono::NaiveDate::from_ymd_opt(digits(0, 4)? as i32, field(5, 2)?, field(8, 2)?)?;
    let time = date.and_hms_opt(field(11, 2)?, field(14, 2)?, field(17, 2)?)?;
    Some(time.and_utc().timestamp_micros() + micros)
}

#[cfg(test)]
mod row_id_tests {
    use super::{row_id_hash, same_key};

    #[test]
    fn keys_compare_equal_exactly_when_their_bytes_do() {
        let keys = [
            "",
            "a",
            "b",
            "ab",
            "ba",
            "abc",
            "abd",
            "xbc",
            "abcd",
            "abce",
            "abcdefg",
            "abcdefh",
            "abcdefgh",
            "abcdefgi",
            "bbcdefgh",
            "abcdefghijklmnop",
            "abcdefghijklmnoq",
            "abcdefghijklmnopq",
            "bbcdefghijklmnopq",
            "abcdefghXjklmnopq",
        ];
        for a in keys {
            for b in keys {
                assert_eq!(same_key(a.as_bytes(), b.as_bytes()), a == b, "{a:?} {b:?}");
            }
        }
    }

    /// Row ids are stored in lakes: the one-call hash on the stack must give what the
    /// streaming hasher gave, for parts that fit the buffer and parts that do not.
    #[test]
    fn a_row_id_is_the_streamed_digest_of_its_parts() {
        let long = "x".repeat(300);
        let cases: [&[&[u8]]; 4] = [
            &[b"events", b"e1"],
            &[
                b"0123456789abcdef0123456789abcdef",
                b"events__exceptions",
                &7u64.to_le_bytes(),
            ],
            &[&long.as_bytes()[..232], b""],
            &[long.as_bytes(), b"k"],
        ];
        for parts in cases {
            let mut hasher = xxhash_rust::xxh3::Xxh3::new();
            for part in parts {
                hasher.update(&(part.len() as u64).to_le_bytes());
                hasher.update(part);
            }
            let streamed = format!("{:032x}", hasher.digest128());
            assert_eq!(row_id_hash(parts).as_str(), streamed);
        }
        assert_eq!(
            row_id_hash(&[b"events", b"e1"]).as_str(),
            "e052424f4fc15e1eb04189e388c24739"
        );
    }

    #[test]
    fn a_list_item_row_id_is_the_row_id_of_its_parts() {
        let long_name = "t".repeat(200);
        for (parent, table) in [
            ("0123456789abcdef0123456789abcdef", "events__exceptions"),
            ("", ""),
            ("0123456789abcdef0123456789abcdef", long_name.as_str()),
        ] {
            let mut ids = super::RowIdParts::list_items(parent, table);
            for idx in [0usize, 1, 7, 300, usize::MAX] {
                let expected = row_id_hash(&[
                    parent.as_bytes(),
                    table.as_bytes(),
                    &(idx as u64).to_le_bytes(),
                ]);
                assert_eq!(ids.item(idx).as_str(), expected.as_str(), "{table} {idx}");
            }
        }
    }
}

#[cfg(test)]
mod timestamp_tests {
    use proptest::prelude::*;

    use super::parse_timestamp;

    fn chrono_micros(s: &str) -> Option<i64> {
        chrono::DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|dt| dt.timestamp_micros())
    }

    proptest! {
        // Date-times of every shape, valid or not (month 13, 30 February, hour 24, a leap
        // second, fractions of 0 to 11 digits, offsets, lowercase letters): the fast path and
        // chrono agree on each, value or refusal.
        #[test]
        fn timestamps_read_as_chrono_reads_them(
            date in (0u32..=9999, 0u32..=13, 0u32..=32),
            time in (0u32..=24, 0u32..=60, 0u32..=61),
            fraction in proptest::option::of("[0-9]{0,11}"),
            separator in prop_oneof![Just("T"), Just("t"), Just(" ")],
            zone in prop_oneof![Just("Z"), Just("z"), Just("+01:00"), Just("-00:30"), Just("")],
        ) {
            let (year, month, day) = date;
            let (hour, minute, second) = time;
            let fraction = fraction.map(|f| format!(".{f}")).unwrap_or_default();
            let s = format!(
                "{year:04}-{month:02}-{day:02}{separator}{hour:02}:{minute:02}:{second:02}{fraction}{zone}"
            );
            prop_assert_eq!(parse_timestamp(&s), chrono_micros(&s), "{}", s);
        }
    }

    #[test]
    fn the_fast_path_reads_leap_days_and_the_far_years() {
        for s in [
            "2024-02-29T23:59:59.999999Z",
            "2000-02-29T00:00:00Z",
            "1900-02-28T12:00:00.5Z",
            "0000-01-01T00:00:00Z",
            "9999-12-31T23:59:59.123456789Z",
            "1969-12-31T23:59:59.000001Z",
        ] {
            assert!(super::utc_timestamp(s.as_bytes()).is_some(), "{s}");
            assert_eq!(parse_timestamp(s), chrono_micros(s), "{s}");
        }
        assert_eq!(super::utc_timestamp(b"1900-02-29T00:00:00Z"), None);
    }
}
