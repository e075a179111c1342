//! Normalization of the real recorded API responses: snapshots of the tables, columns, types
//! and first rows, and a comparison of the names with what dlt 1.31 gives the same data.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::sync::Arc;

use arrow_array::{Array, RecordBatch};
use serde_json::Value;
use transform::{
    NormalizeConfig, Normalizer, ROOT_ID, SOURCE_METADATA_KEY, SchemaRegistry, TableBatch,
    TableMeta, WriteDisposition,
};

fn data_dir() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data")
}

/// The fixtures and their tables, as `tests/data/dlt/fixtures.json` lists them for dlt too.
fn fixtures() -> Vec<(String, String)> {
    let list: Value =
        serde_json::from_slice(&std::fs::read(data_dir().join("dlt/fixtures.json")).unwrap())
            .unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["file"].as_str().unwrap().to_owned(),
                f["table"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// The batches of one fixture, normalized as a first run would (append: ids from the load),
/// and the schemas they left (with the columns that saw only nulls).
fn normalize_fixture(file: &str, table: &str) -> (Vec<TableBatch>, SchemaRegistry) {
    let body: Value =
        serde_json::from_slice(&std::fs::read(data_dir().join(file)).unwrap()).unwrap();
    let records = match body {
        Value::Array(items) => items,
        other => vec![other],
    };
    let meta = Arc::new(TableMeta {
        name: table.to_owned(),
        parent: None,
        root: table.to_owned(),
        primary_key: Some("id".into()),
        write_disposition: WriteDisposition::Append,
    });
    let registry = SchemaRegistry::default();
    let mut normalizer = Normalizer::new(NormalizeConfig::default(), registry.clone());
    let batches = normalizer
        .normalize(&meta, "snapshot", 0, &records)
        .unwrap_or_else(|e| panic!("{file}: {e}"));
    (batches, registry)
}

/// Tables in name order; per table its columns (`name: type <- source`), the columns that
/// saw only nulls (declared in the lake, in no batch), and first rows, with the hash-valued
/// `_dlt_*` ids shown as `#`.
fn render((batches, registry): &(Vec<TableBatch>, SchemaRegistry)) -> String {
    let mut by_name: Vec<&TableBatch> = batches.iter().collect();
    by_name.sort_by(|a, b| a.table.name.cmp(&b.table.name));
    let mut out = String::new();
    for tb in by_name {
        let b = &tb.batch;
        writeln!(out, "{} ({} rows)", tb.table.name, b.num_rows()).unwrap();
        for f in b.schema().fields() {
            let source = f
                .metadata()
                .get(SOURCE_METADATA_KEY)
                .map(|s| format!(" <- {s}"))
                .unwrap_or_default();
            writeln!(out, "  {}: {}{source}", f.name(), f.data_type()).unwrap();
        }
        let schema = registry.table(&tb.table.name).unwrap();
        for c in schema.null_only() {
            let source = c.source.as_deref().unwrap_or_default();
            writeln!(out, "  {}: only nulls so far <- {source}", c.name).unwrap();
        }
        for row in 0..b.num_rows().min(2) {
            let cells: Vec<String> = (0..b.num_columns()).map(|c| cell(b, c, row)).collect();
            writeln!(out, "  | {}", cells.join(" | ")).unwrap();
        }
    }
    out
}

fn cell(b: &RecordBatch, col: usize, row: usize) -> String {
    let name = b.schema().field(col).name().clone();
    let a = b.column(col);
    if a.is_null(row) {
        return "∅".into();
    }
    if name.starts_with("_dlt_") && name != "_dlt_list_idx" && name != "_dlt_load_id" {
        return "#".into();
    }
    let text = arrow_cast_display(a.as_ref(), row);
    if text.chars().count() > 40 {
        format!("{}…", text.chars().take(40).collect::<String>())
    } else {
        text
    }
}

fn arrow_cast_display(a: &dyn Array, row: usize) -> String {
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Float64Type, Int64Type, TimestampMicrosecondType};
    use arrow_schema::DataType;
    match a.data_type() {
        DataType::Boolean => a.as_boolean().value(row).to_string(),
        DataType::Int64 => a.as_primitive::<Int64Type>().value(row).to_string(),
        DataType::Float64 => format!("{:?}", a.as_primitive::<Float64Type>().value(row)),
        DataType::Utf8 => format!("{:?}", a.as_string::<i32>().value(row)),
        DataType::Timestamp(..) => {
            let micros = a.as_primitive::<TimestampMicrosecondType>().value(row);
            chrono::DateTime::from_timestamp_micros(micros)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
                .unwrap_or_default()
        }
        other => format!("<{other}>"),
    }
}

#[test]
fn snapshots_of_the_recorded_fixtures() {
    for (file, table) in fixtures() {
        let name = file.replace(['/', '.'], "_");
        insta::assert_snapshot!(name, render(&normalize_fixture(&file, &table)), &file);
    }
}

/// The names dlt 1.31 gives the fixtures (made by `tests/data/dlt/dlt_names.py`) are ours,
/// except where errlake does better on purpose (see the `transform` crate docs):
/// child tables always carry `_dlt_root_id`, and a column that holds only nulls is declared
/// in the lake where dlt leaves it out (it is in no batch, as in dlt's files).
#[test]
fn names_match_dlt() {
    let dlt: Value =
        serde_json::from_slice(&std::fs::read(data_dir().join("dlt/names.json")).unwrap()).unwrap();
    let mut report = String::new();
    for (file, table) in fixtures() {
        let (batches, _) = normalize_fixture(&file, &table);
        let ours: BTreeMap<String, BTreeSet<String>> = batches
            .iter()
            .map(|tb| {
                let schema = tb.batch.schema();
                let columns = schema
                    .fields()
                    .iter()
                    .enumerate()
                    .filter(|(i, f)| {
                        let all_null = tb.batch.column(*i).null_count() == tb.batch.num_rows();
                        f.name() != ROOT_ID && !all_null
                    })
                    .map(|(_, f)| f.name().clone())
                    .collect();
                (tb.table.name.clone(), columns)
            })
            .collect();
        let theirs: BTreeMap<String, BTreeSet<String>> =
            serde_json::from_value(dlt["fixtures"][&file].clone()).unwrap();
        if ours != theirs {
            writeln!(report, "{file}:").unwrap();
            for t in ours.keys().chain(theirs.keys()).collect::<BTreeSet<_>>() {
                let empty = BTreeSet::new();
                let (o, d) = (
                    ours.get(t).unwrap_or(&empty),
                    theirs.get(t).unwrap_or(&empty),
                );
                for c in o.difference(d) {
                    writeln!(report, "  {t}.{c}: only errlake").unwrap();
                }
                for c in d.difference(o) {
                    writeln!(report, "  {t}.{c}: only dlt").unwrap();
                }
            }
        }
    }
    assert!(report.is_empty(), "names differ from dlt's:\n{report}");
}
