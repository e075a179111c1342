//! Normalization: JSON records to named, typed, flattened Arrow tables and child tables.
//!
//! Role in the pipeline: transform workers pull pages of records (a [`Records`] view of the
//! page's [`json_tape::Document`], parsed once by the source) and push [`TableBatch`]es to
//! the sink, reading each value from the tape straight into an Arrow builder: no tree of a
//! record is built. The core is synchronous and knows nothing of HTTP, Tokio or files;
//! anything that can hand it records can use it ([`Normalizer::normalize`] takes
//! `serde_json` values).
//!
//! The shapes follow dlt's relational normalizer, so a dlt user finds the same tables:
//! - names are snake_case ([`naming`]), nesting levels joined by `__`;
//! - nested objects flatten into columns (`device__os_name`);
//! - lists become child tables (`events__exceptions`, `events__exceptions__stacktrace`)
//!   whose rows carry `_dlt_parent_id`, `_dlt_list_idx` and `_dlt_root_id`; lists of scalars
//!   give a `value` column, a list inside a list the table `<table>__list`;
//! - types are inferred (bool, bigint, double, text, UTC timestamp from ISO 8601 strings of
//!   any precision and offset); beyond `max_nesting_depth` a value is kept as JSON text;
//! - a value that does not fit its column goes to a variant column (`severity__v_bigint`);
//! - under merge, a root row's `_dlt_id` is a hash of its primary key, so reruns give the
//!   same ids; child row ids follow from their parent's id and list position.
//!
//! # Where errlake differs from dlt 1.31, on purpose
//!
//! The test `normalize_fixtures::names_match_dlt` checks the recorded Bugsnag and Sentry
//! fixtures against the names dlt 1.31 gives them (`tests/data/dlt/`); they are the same
//! but for the first two points below, which the fixtures show.
//! - Child tables always have `_dlt_root_id` (dlt adds it only under merge), so any child row
//!   joins its root row directly and merges can replace a root's children.
//! - Root rows under merge have `_errlake_content_hash` ([`CONTENT_HASH`]), a hash of the
//!   record's JSON with its children, so the sink leaves out records that come again
//!   unchanged.
//! - A column that holds only nulls gets its hinted type, or is declared null-only
//!   ([`NULL_ONLY_METADATA_KEY`]): the lake's schema lists it as nullable text, so readers
//!   can select it, but no batch or data file holds it, and its first non-null value decides
//!   its type, in whichever run or shard lands it first (dlt leaves such a column out until
//!   a value arrives, so a reader cannot select it; declaring it as text for good would fix
//!   a type before any value was seen). A field that is null in some rows of a page and
//!   typed in others gets the type of its values.
//! - Letters outside ASCII are kept (lowercased): `é-ünïcode` is `é_ünïcode`, not `_n_code`;
//!   an empty key is `_empty`.
//! - Two keys of one table that normalize to the same name (`userId`, `user_id`) both keep
//!   their values: the first seen owns the name, the next gets `user_id_1`, and every
//!   column records its source key as a JSON pointer in its Arrow/Delta field metadata
//!   (`errlake.source = /user_id`), which later runs read back, so a key keeps its column.
//! - Integers are exact: `i64` as bigint, larger ones (beyond `u64` too) as their decimal
//!   text; doubles (`1.5e300`, `-0.0`) are the nearest IEEE double of the text, which prints
//!   back as the same digits.
//! - A JSON column type (`errlake.type = json` in the field metadata) for values kept whole.
//!
//! # Configuration ([`NormalizeConfig`])
//!
//! Column hints (`type`, `exclude`, `type = "json"` to keep a nested field whole), the
//! nesting depth, and dlt's schema contracts (`tables`, `columns`, `data_type`: `evolve`,
//! `freeze`, `discard_row`, `discard_value`) per table. Contracts apply to tables that
//! existed before the run; what they discard is counted in [`Normalizer::discarded`].
//!
//! ```
//! use std::sync::Arc;
//! use transform::{Normalizer, NormalizeConfig, SchemaRegistry, TableMeta, WriteDisposition};
//!
//! let events = Arc::new(TableMeta {
//!     name: "events".into(),
//!     parent: None,
//!     root: "events".into(),
//!     primary_key: Some("id".into()),
//!     write_disposition: WriteDisposition::Merge,
//! });
//! let mut normalizer = Normalizer::new(NormalizeConfig::default(), SchemaRegistry::default());
//! let records = vec![serde_json::json!({
//!     "id": "e1",
//!     "receivedAt": "2017-12-12T10:58:55.000Z",
//!     "device": {"osName": "android"},
//!     "exceptions": [{"errorClass": "NullPointerException"}],
//! })];
//! let batches = normalizer.normalize(&events, "load-1", 0, &records).unwrap();
//! assert_eq!(batches[0].table.name, "events");
//! assert!(batches[0].batch.schema().field_with_name("device__os_name").is_ok());
//! assert_eq!(batches[1].table.name, "events__exceptions");
//! ```

#![warn(missing_docs)]
#![deny(rustdoc::broken_intra_doc_links)]

mod config;
mod content_hash;
pub mod naming;
mod normalize;
mod schema;

pub use config::{ColumnHint, ContractMode, HintType, NormalizeConfig, SchemaContract, TableHints};
pub use content_hash::Hex;
pub use json_tape::{Document, Records};
pub use normalize::{
    CONTENT_HASH, Discarded, LIST, LIST_IDX, LOAD_ID, Normalizer, PARENT_ID, ROOT_ID, ROW_ID,
    TableBatch, VALUE, primary_key_string,
};
pub use schema::{
    Column, ColumnType, NULL_ONLY_METADATA_KEY, SOURCE_METADATA_KEY, SchemaRegistry,
    TYPE_METADATA_KEY, TableMeta, TableSchema, WriteDisposition,
};

/// What can go wrong while normalizing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransformError {
    /// A record of a merged table lacks its primary key (or it is not a string or number).
    #[error(
        "transform: record {record_idx} of `{table}` has no usable primary key `{primary_key}`"
    )]
    MissingPrimaryKey {
        /// The root table.
        table: String,
        /// The primary key column.
        primary_key: String,
        /// The position of the record in its page.
        record_idx: usize,
    },
    /// A record is not a JSON object.
    #[error("transform: record {record_idx} of `{table}` is {found}, not an object")]
    NotAnObject {
        /// The root table.
        table: String,
        /// The position of the record in its page.
        record_idx: usize,
        /// What the record is.
        found: &'static str,
    },
    /// Data does not fit a table that existed before the run, and its schema contract
    /// says `freeze`.
    #[error("transform: schema contract of `{table}` ({rule} = \"freeze\") refuses {detail}")]
    ContractViolation {
        /// The table.
        table: String,
        /// The column (or list) concerned.
        column: String,
        /// The contract's rule: `tables`, `columns` or `data_type`.
        rule: &'static str,
        /// What the data would have done.
        detail: String,
    },
    /// Records given as `serde_json` values could not be read back as JSON (nested deeper
    /// than [`json_tape::MAX_DEPTH`]).
    #[error("transform: the records of `{table}` are not JSON the normalizer reads: {problem}")]
    Json {
        /// The root table.
        table: String,
        /// What the parser found.
        problem: json_tape::Problem,
    },
    /// Arrow refused a batch (a bug: the columns are built to fit the schema).
    #[error("transform: building a batch of `{table}`")]
    Arrow {
        /// The table.
        table: String,
        /// Arrow's error.
        #[source]
        source: arrow_schema::ArrowError,
    },
}

/// The result type of this crate.
pub type Result<T, E = TransformError> = std::result::Result<T, E>;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
