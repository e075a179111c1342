//! Property tests: for random JSON trees, every scalar of the input is in the output with
//! its path and value, and normalizing the same records twice gives identical batches.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_array::Array;
use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type};
use arrow_schema::DataType;
use proptest::prelude::*;
use serde_json::{Map, Value};

use crate::*;

/// Keys chosen to collide after normalization, clash with system and `value`/`list`
/// names, and carry non-ASCII letters, dots, spaces, dashes and nothing at all.
const KEYS: &[&str] = &[
    "a", "A", "userId", "user_id", "UserID", "é", "É", "", " ", "x.y", "x y", "x-y", "x_y",
    "_dlt_id", "value", "list", "a__b", "2fa", "名前",
];

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (-1e6f64..1e6).prop_map(Value::from),
        prop_oneof![Just(1.5e300), Just(-0.0), Just(f64::MIN_POSITIVE)].prop_map(Value::from),
        "[a-zA-Zé ]{0,6}".prop_map(Value::String),
    ]
}

fn tree() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(4, 40, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..5).prop_map(|kv| {
                Value::Object(kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
            }),
        ]
    })
}

fn records() -> impl Strategy<Value = Vec<Value>> {
    prop::collection::vec(
        prop::collection::vec((prop::sample::select(KEYS), tree()), 0..6),
        1..5,
    )
    .prop_map(|records| {
        records
            .into_iter()
            .enumerate()
            .map(|(i, kv)| {
                let mut object: Map<String, Value> =
                    kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
                object.insert("id".into(), Value::String(format!("r{i}")));
                Value::Object(object)
            })
            .collect()
    })
}

/// A number as the tables can show it either way: integral values up to 2^53 as integers.
fn number(f: f64) -> String {
    if f.fract() == 0.0 && f.abs() <= 9_007_199_254_740_992.0 {
        format!("n:{}", f as i64)
    } else {
        format!("n:{f:?}")
    }
}

fn pointer_push(pointer: &str, key: &str) -> String {
    format!("{pointer}/{}", key.replace('~', "~0").replace('/', "~1"))
}

/// Every scalar of a row's tree, as (source pointer within its row, value), counted; lists
/// start new rows, whose pointers start again (scalars in a list under `/value`, lists in a
/// list under `/list`).
fn input_scalars(value: &Value, pointer: &str, out: &mut BTreeMap<(String, String), usize>) {
    let mut add = |v: String| *out.entry((pointer.to_owned(), v)).or_default() += 1;
    match value {
        Value::Null => {}
        Value::Bool(b) => add(format!("b:{b}")),
        Value::Number(n) => match n.as_i64() {
            Some(i) if i.unsigned_abs() > (1 << 53) => add(format!("n:{i}")),
            Some(i) => add(number(i as f64)),
            None => add(number(n.as_f64().unwrap())),
        },
        Value::String(s) => add(format!("s:{s}")),
        Value::Object(o) => {
            for (k, v) in o {
                input_scalars(v, &pointer_push(pointer, k), out);
            }
        }
        Value::Array(items) => {
            for item in items {
                match item {
                    Value::Object(_) => input_scalars(item, "", out),
                    Value::Array(_) => input_scalars(item, "/list", out),
                    _ => input_scalars(item, "/value", out),
                }
            }
        }
    }
}

fn output_scalars(batches: &[TableBatch]) -> BTreeMap<(String, String), usize> {
    let mut out = BTreeMap::new();
    for tb in batches {
        let b = &tb.batch;
        for (i, f) in b.schema().fields().iter().enumerate() {
            let Some(source) = f.metadata().get(SOURCE_METADATA_KEY) else {
                continue;
            };
            let pointer = source.split('#').next().unwrap().to_owned();
            let a = b.column(i);
            for row in 0..b.num_rows() {
                if a.is_null(row) {
                    continue;
                }
                let v = match a.data_type() {
                    DataType::Boolean => format!("b:{}", a.as_boolean().value(row)),
                    DataType::Int64 => {
                        let v = a.as_primitive::<Int64Type>().value(row);
                        if v.unsigned_abs() > (1 << 53) {
                            format!("n:{v}")
                        } else {
                            number(v as f64)
                        }
                    }
                    DataType::Float64 => number(a.as_primitive::<Float64Type>().value(row)),
                    DataType::Utf8 => format!("s:{}", a.as_string::<i32>().value(row)),
                    other => panic!("unexpected type {other} in {}", f.name()),
                };
                *out.entry((pointer.clone(), v)).or_default() += 1;
            }
        }
    }
    out
}

/// The root table `t`, keyed on `id`.
fn root_table(write_disposition: WriteDisposition) -> Arc<TableMeta> {
    Arc::new(TableMeta {
        name: "t".into(),
        parent: None,
        root: "t".into(),
        primary_key: Some("id".into()),
        write_disposition,
    })
}

fn normalize(records: &[Value]) -> Vec<TableBatch> {
    Normalizer::new(NormalizeConfig::default(), SchemaRegistry::default())
        .normalize(&root_table(WriteDisposition::Append), "load", 0, records)
        .unwrap()
}

/// The content hashes of `records` normalized under merge with `config`, in row order.
fn content_hashes(records: &[Value], config: NormalizeConfig) -> Vec<String> {
    let batches = Normalizer::new(config, SchemaRegistry::default())
        .normalize(&root_table(WriteDisposition::Merge), "load", 0, records)
        .unwrap();
    let hashes = batches[0].batch.column_by_name(CONTENT_HASH).unwrap();
    let hashes = hashes.as_string::<i32>();
    (0..hashes.len())
        .map(|i| hashes.value(i).to_owned())
        .collect()
}

/// The content hash of one record by a walk of its own over the whole record.
fn whole_record_hash(record: &Value) -> String {
    let doc = json_tape::Document::from_serde(record).unwrap();
    let mut bytes = Vec::new();
    crate::content_hash::feed(&mut bytes, doc.root(), None);
    crate::content_hash::digest(&bytes).as_str().to_owned()
}

/// Configs under which the normalizer keeps parts of a record whole (too deep, too many
/// columns, a JSON hint, an excluded column, a list whose table the contract refuses), so
/// that the content hash must take those parts from a walk of their own.
fn configs() -> impl Strategy<Value = NormalizeConfig> {
    (1usize..4, 3usize..12, prop::sample::subsequence(KEYS, 0..4)).prop_map(
        |(depth, columns, hinted)| {
            let mut config = NormalizeConfig {
                max_nesting_depth: depth,
                max_table_columns: columns,
                ..NormalizeConfig::default()
            };
            let hints = config.tables.entry("t".into()).or_default();
            for (i, key) in hinted.into_iter().enumerate() {
                let name = crate::naming::normalize_identifier(key);
                hints.columns.insert(
                    name,
                    ColumnHint {
                        column_type: (i % 2 == 0).then_some(HintType::Json),
                        exclude: i % 2 == 1,
                        ..ColumnHint::default()
                    },
                );
            }
            config
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn the_content_hash_made_while_flattening_is_the_whole_records(
        records in records(),
        config in configs(),
    ) {
        // Records of one page that share an id keep the last; ids here are distinct.
        let expected: Vec<String> = records.iter().map(whole_record_hash).collect();
        prop_assert_eq!(content_hashes(&records, config), expected);
    }

    #[test]
    fn every_scalar_is_found_with_its_path_and_value(records in records()) {
        let mut expected = BTreeMap::new();
        for r in &records {
            input_scalars(r, "", &mut expected);
        }
        let got = output_scalars(&normalize(&records));
        prop_assert_eq!(got, expected);
    }

    #[test]
    fn normalizing_twice_gives_identical_batches(records in records()) {
        let first = normalize(&records);
        let second = normalize(&records);
        prop_assert_eq!(first.len(), second.len());
        for (a, b) in first.iter().zip(&second) {
            prop_assert_eq!(&a.table, &b.table);
            prop_assert_eq!(&a.batch, &b.batch);
        }
    }
}
