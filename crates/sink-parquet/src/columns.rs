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

/// `batch` with `schema`'s columns in `schema`'s order, by name: its own, and nulls for those
/// it lacks. Within one run a batch's columns are a prefix of its file's; files of two
/// writers (shards, concurrent runs) may hold the same columns in other orders, which a
/// compaction packs into one file.
pub(crate) fn widen(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let same_columns = batch.schema().fields().len() == schema.fields().len()
        && batch
            .schema()
            .fields()
            .iter()
            .zip(schema.fields())
            .all(|(a, b)| a.name() == b.name());
    if same_columns {
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::cast::AsArray;
    use arrow_array::types::Int64Type;
    use arrow_array::{ArrayRef, Int64Array, StringArray};
    use arrow_schema::{DataType, Field, Schema};

    use super::*;

    /// Two writers' files may hold the same columns in other orders: each column lands in the
    /// column of its name, never in the one at its position.
    #[test]
    fn widening_places_columns_by_name_whatever_their_order() {
        let batch = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("n", DataType::Int64, true),
                Field::new("s", DataType::Utf8, true),
            ])),
            vec![
                Arc::new(Int64Array::from(vec![7])) as ArrayRef,
                Arc::new(StringArray::from(vec!["x"])),
            ],
        )
        .unwrap();
        for fields in [
            vec![
                Field::new("s", DataType::Utf8, true),
                Field::new("n", DataType::Int64, true),
            ],
            vec![
                Field::new("s", DataType::Utf8, true),
                Field::new("extra", DataType::Utf8, true),
                Field::new("n", DataType::Int64, true),
            ],
        ] {
            let schema = Arc::new(Schema::new(fields));
            let widened = widen(&batch, &schema).unwrap();
            assert_eq!(widened.schema(), schema);
            assert_eq!(
                widened
                    .column_by_name("s")
                    .unwrap()
                    .as_string::<i32>()
                    .value(0),
                "x"
            );
            assert_eq!(
                widened
                    .column_by_name("n")
                    .unwrap()
                    .as_primitive::<Int64Type>()
                    .value(0),
                7
            );
        }
    }
}
