//! A table's columns as the sink sees them: the key a merge looks rows up by, and
//! widening a batch to its file's schema.

use arrow_array::{RecordBatch, new_null_array};
use arrow_schema::SchemaRef;
use transform::{ROOT_ID, ROW_ID, TableMeta};

use crate::{Result, SinkError};

/// The column a merge looks a file's rows up by: `_dlt_root_id` in a child table, `_dlt_id`
/// in a root table.
pub(crate) fn key_column_of(schema: &SchemaRef) -> Option<&'static str> {
    if schema.field_with_name(ROOT_ID).is_ok() {
        Some(ROOT_ID)
    } else if schema.field_with_name(ROW_ID).is_ok() {
        Some(ROW_ID)
    } else {
        None
    }
}

/// The column that links a table's rows to their root row.
pub(crate) fn root_key_column(meta: &TableMeta) -> &'static str {
    if meta.is_root() { ROW_ID } else { ROOT_ID }
}

/// Pads a batch with null columns up to `schema` (batch schemas are prefixes of it).
pub(crate) fn widen(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    if batch.schema().fields().len() == schema.fields().len() {
        return Ok(batch.clone());
    }
    let n = batch.num_rows();
    let columns = schema
        .fields()
        .iter()
        .map(|f| match batch.column_by_name(f.name()) {
            Some(c) => c.clone(),
            None => new_null_array(f.data_type(), n),
        })
        .collect();
    RecordBatch::try_new(schema.clone(), columns).map_err(|e| SinkError::Internal {
        message: format!("widening a batch: {e}"),
    })
}
