//! The `[normalize]` section of a pipeline: nesting depth, per-table column hints and
//! schema contracts (dlt's `schema_contract` vocabulary).

use std::collections::BTreeMap;

use crate::schema::ColumnType;

/// Normalization settings of a pipeline (`[normalize]` in the pipeline file).
///
/// ```toml
/// [normalize]
/// max_nesting_depth = 4
/// schema_contract = { columns = "evolve", data_type = "evolve" }
///
/// [normalize.tables.events]
/// schema_contract = { columns = "freeze" }
/// columns.meta_data__custom = { type = "json" }   # keep this object as JSON text
/// columns.device__free_disk = { type = "double" }
/// columns.user__email = { exclude = true }        # never stored
/// ```
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NormalizeConfig {
    /// How many levels of nested objects and lists become columns and child tables;
    /// anything deeper is kept as a JSON text column (`errlake.type = json`). Default: 8.
    #[serde(default = "default_max_nesting_depth")]
    pub max_nesting_depth: usize,
    /// The most columns a table gets. An object whose new keys would take its table past it
    /// is kept whole as JSON text in one column instead, and the run report counts it
    /// (`kept_as_json`); the top level of a record always becomes columns. User-defined
    /// metadata can hold thousands of distinct keys, each a column of every later file and
    /// footer; dlt has no limit. Default: 1000, twenty times the widest table of the Bugsnag
    /// and Sentry APIs' documented fields, and well within what DuckDB, Polars, Spark and
    /// Trino read comfortably.
    #[serde(default = "default_max_table_columns")]
    pub max_table_columns: usize,
    /// The schema contract of every table without its own. Default: evolve everything.
    #[serde(default)]
    pub schema_contract: SchemaContract,
    /// Per table (by normalized name, `events`, `events__exceptions`): hints and contract.
    #[serde(default)]
    pub tables: BTreeMap<String, TableHints>,
}

pub(crate) fn default_max_nesting_depth() -> usize {
    8
}

fn default_max_table_columns() -> usize {
    1000
}

impl Default for NormalizeConfig {
    /// Depth 8, 1000 columns a table, evolve, no hints.
    fn default() -> Self {
        NormalizeConfig {
            max_nesting_depth: default_max_nesting_depth(),
            max_table_columns: default_max_table_columns(),
            schema_contract: SchemaContract::default(),
            tables: BTreeMap::new(),
        }
    }
}

impl NormalizeConfig {
    /// The contract of a table: its own, or the default.
    pub fn contract(&self, table: &str) -> SchemaContract {
        self.tables
            .get(table)
            .and_then(|t| t.schema_contract)
            .unwrap_or(self.schema_contract)
    }

    /// The hint of a column, if any.
    pub fn hint(&self, table: &str, column: &str) -> Option<&ColumnHint> {
        self.tables.get(table)?.columns.get(column)
    }

    /// Whether any table's contract can discard whole rows (rows are then staged per record
    /// before they reach the column builders).
    pub(crate) fn may_discard_rows(&self) -> bool {
        std::iter::once(&self.schema_contract)
            .chain(
                self.tables
                    .values()
                    .filter_map(|t| t.schema_contract.as_ref()),
            )
            .any(|c| [c.tables, c.columns, c.data_type].contains(&ContractMode::DiscardRow))
    }
}

/// Hints and contract of one table.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableHints {
    /// This table's contract, instead of `[normalize].schema_contract`.
    #[serde(default)]
    pub schema_contract: Option<SchemaContract>,
    /// Per column (by normalized name; for a nested object, the name of its prefix, e.g.
    /// `meta_data__custom`): its type or its exclusion.
    #[serde(default)]
    pub columns: BTreeMap<String, ColumnHint>,
}

/// A hint for one column.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnHint {
    /// The column's type, instead of the one inferred from its first value: `bool`,
    /// `bigint`, `double`, `text`, `timestamp`, or `json` (the value, nested or not, kept
    /// as JSON text; nothing below it is flattened). A value that does not fit goes to a
    /// variant column, as with inferred types. Also the type of a column that only ever
    /// saw nulls (otherwise `text`).
    #[serde(default, rename = "type")]
    pub column_type: Option<HintType>,
    /// Leave the field (and anything nested in it) out of the tables. Default: false.
    #[serde(default)]
    pub exclude: bool,
    /// dlt's `hard_delete`: in a merged root table, a record whose value here is `true`
    /// (or, for a column of another type, not null) deletes the row of its primary key and
    /// its child rows, and is not stored itself. Default: false.
    #[serde(default)]
    pub hard_delete: bool,
}

/// The column types a hint can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HintType {
    /// `true` / `false`.
    Bool,
    /// 64-bit integer.
    Bigint,
    /// 64-bit float.
    Double,
    /// UTF-8 text.
    Text,
    /// UTC timestamp (microseconds).
    Timestamp,
    /// JSON text.
    Json,
}

impl From<HintType> for ColumnType {
    fn from(h: HintType) -> Self {
        match h {
            HintType::Bool => ColumnType::Bool,
            HintType::Bigint => ColumnType::BigInt,
            HintType::Double => ColumnType::Double,
            HintType::Text => ColumnType::Text,
            HintType::Timestamp => ColumnType::Timestamp,
            HintType::Json => ColumnType::Json,
        }
    }
}

/// What happens when data does not fit a table that existed before the run (dlt's
/// `schema_contract`). Tables created in this run always evolve.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemaContract {
    /// A list that would make a new child table.
    #[serde(default)]
    pub tables: ContractMode,
    /// A field that would make a new column.
    #[serde(default)]
    pub columns: ContractMode,
    /// A value that does not fit its column's type (would make a variant column).
    #[serde(default)]
    pub data_type: ContractMode,
}

/// One rule of a schema contract.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContractMode {
    /// The schema grows: new child tables, columns, variant columns. The default.
    #[default]
    Evolve,
    /// The run fails, naming the table and column.
    Freeze,
    /// The whole record (root row and its children) is left out and counted in the report.
    DiscardRow,
    /// The value (or list) is left out and counted in the report; the row stays.
    DiscardValue,
}

impl ContractMode {
    /// The name used in the config.
    pub fn name(self) -> &'static str {
        match self {
            ContractMode::Evolve => "evolve",
            ContractMode::Freeze => "freeze",
            ContractMode::DiscardRow => "discard_row",
            ContractMode::DiscardValue => "discard_value",
        }
    }
}
