//! Tests of the normalizer: table shapes, names, types, variants and row ids.

use std::fmt::Write;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type, TimestampMicrosecondType};
use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType;
use serde_json::{Value, json};

use crate::*;

fn meta(name: &str, disposition: WriteDisposition) -> Arc<TableMeta> {
    Arc::new(TableMeta {
        name: name.into(),
        parent: None,
        root: name.into(),
        primary_key: Some("id".into()),
        write_disposition: disposition,
    })
}

/// Renders batches as text: per table, `column: type` lines, then the rows, leaving out the
/// hash-valued id and content-hash columns (they are checked separately).
fn render(batches: &[TableBatch]) -> String {
    let mut out = String::new();
    for tb in batches {
        writeln!(out, "{}", tb.table.name).unwrap();
        let b = &tb.batch;
        let shown: Vec<usize> = (0..b.num_columns())
            .filter(|&i| {
                let n = b.schema().field(i).name().clone();
                n != ROW_ID && n != PARENT_ID && n != ROOT_ID && n != LOAD_ID && n != CONTENT_HASH
            })
            .collect();
        for &i in &shown {
            writeln!(
                out,
                "  {}: {}",
                b.schema().field(i).name(),
                b.schema().field(i).data_type()
            )
            .unwrap();
        }
        for row in 0..b.num_rows() {
            let cells: Vec<String> = shown.iter().map(|&i| cell(b, i, row)).collect();
            writeln!(out, "  | {}", cells.join(" | ")).unwrap();
        }
    }
    out
}

fn cell(b: &RecordBatch, col: usize, row: usize) -> String {
    let a = b.column(col);
    if a.is_null(row) {
        return "∅".into();
    }
    match a.data_type() {
        DataType::Boolean => a.as_boolean().value(row).to_string(),
        DataType::Int64 => a.as_primitive::<Int64Type>().value(row).to_string(),
        DataType::Float64 => format!("{:?}", a.as_primitive::<Float64Type>().value(row)),
        DataType::Utf8 => format!("{:?}", a.as_string::<i32>().value(row)),
        DataType::Timestamp(..) => {
            let micros = a.as_primitive::<TimestampMicrosecondType>().value(row);
            chrono::DateTime::from_timestamp_micros(micros)
                .unwrap()
                .to_rfc3339()
        }
        other => format!("<{other}>"),
    }
}

#[track_caller]
fn check(records: Value, expect: &str) {
    let mut n = Normalizer::new(NormalizeConfig::default(), SchemaRegistry::default());
    let records = records.as_array().unwrap().clone();
    let batches = n
        .normalize(
            &meta("events", WriteDisposition::Merge),
            "load",
            0,
            &records,
        )
        .unwrap();
    let got = render(&batches);
    assert_eq!(got.trim(), expect.trim(), "\n--- got ---\n{got}");
}

#[test]
fn nested_objects_flatten_into_columns() {
    check(
        json!([{"id": "a", "device": {"osName": "android", "totalMemory": 8589934592u64}}]),
        r#"
events
  id: Utf8
  device__os_name: Utf8
  device__total_memory: Int64
  | "a" | "android" | 8589934592
"#,
    );
}

#[test]
fn lists_become_child_tables_with_value_columns_for_scalars() {
    check(
        json!([{"id": "a", "exceptions": [{"errorClass": "E", "stacktrace": [{"lineNumber": 3}]}], "tags": ["x", "y"]}]),
        r#"
events
  id: Utf8
  | "a"
events__exceptions
  _dlt_list_idx: Int64
  error_class: Utf8
  | 0 | "E"
events__exceptions__stacktrace
  _dlt_list_idx: Int64
  line_number: Int64
  | 0 | 3
events__tags
  _dlt_list_idx: Int64
  value: Utf8
  | 0 | "x"
  | 1 | "y"
"#,
    );
}

#[test]
fn timestamps_of_any_precision_and_offset_become_utc() {
    check(
        json!([
            {"id": "a", "at": "2017-12-12T10:58:55.000Z"},
            {"id": "b", "at": "2021-07-08T14:26:55+02:00"},
            {"id": "c", "at": "2020-06-17T22:26:56.098086Z"},
        ]),
        r#"
events
  id: Utf8
  at: Timestamp(µs, "UTC")
  | "a" | 2017-12-12T10:58:55+00:00
  | "b" | 2021-07-08T12:26:55+00:00
  | "c" | 2020-06-17T22:26:56.098086+00:00
"#,
    );
}

#[test]
fn a_value_of_another_type_goes_to_a_variant_column() {
    check(
        json!([
            {"id": "a", "line": 3, "at": "2017-12-12T10:58:55Z"},
            {"id": "b", "line": "3a", "at": "yesterday"},
        ]),
        r#"
events
  id: Utf8
  line: Int64
  at: Timestamp(µs, "UTC")
  line__v_text: Utf8
  at__v_text: Utf8
  | "a" | 3 | 2017-12-12T10:58:55+00:00 | ∅ | ∅
  | "b" | ∅ | ∅ | "3a" | "yesterday"
"#,
    );
}

/// Integers and booleans whose node's own column has another type go to their variant
/// columns, the first time and every time after (when the normalizer knows their column
/// and puts them there directly), and values of the own column's type still go there.
#[test]
fn integers_and_booleans_keep_going_to_their_variant_columns() {
    check(
        json!([
            {"id": "a", "n": "x", "b": 1},
            {"id": "b", "n": 2, "b": true},
            {"id": "c", "n": 3, "b": false},
            {"id": "d", "n": true, "b": 4},
            {"id": "e", "n": "y", "b": true},
        ]),
        r#"
events
  id: Utf8
  n: Utf8
  b: Int64
  n__v_bigint: Int64
  b__v_bool: Boolean
  n__v_bool: Boolean
  | "a" | "x" | 1 | ∅ | ∅ | ∅
  | "b" | ∅ | ∅ | 2 | true | ∅
  | "c" | ∅ | ∅ | 3 | false | ∅
  | "d" | ∅ | 4 | ∅ | ∅ | true
  | "e" | "y" | ∅ | ∅ | true | ∅
"#,
    );
}

/// A text column keeps a later timestamp-shaped string as its text (no timestamp variant),
/// where a column of another type sends text and timestamps to variants of their own: the
/// normalizer skips reading strings as timestamps only where either lands in one column.
#[test]
fn a_timestamp_after_text_stays_text_and_after_a_number_gets_its_own_variant() {
    check(
        json!([
            {"id": "a", "note": "soon", "line": 3},
            {"id": "b", "note": "2017-12-12T10:58:55Z", "line": "3a"},
            {"id": "c", "note": "later", "line": "2017-12-12T10:58:55Z"},
        ]),
        r#"
events
  id: Utf8
  note: Utf8
  line: Int64
  line__v_text: Utf8
  line__v_timestamp: Timestamp(µs, "UTC")
  | "a" | "soon" | 3 | ∅ | ∅
  | "b" | "2017-12-12T10:58:55Z" | ∅ | "3a" | ∅
  | "c" | "later" | ∅ | ∅ | 2017-12-12T10:58:55+00:00
"#,
    );
}

// Issue 12: ids arriving as an integer, then a string, then `1.0` put three of four rows in
// `id__v_text`/`id__v_double` with `id` null.
#[test]
fn a_primary_key_of_any_json_type_is_text_in_the_key_column() {
    check(
        json!([
            {"id": 7, "v": 1},
            {"id": "a", "v": 2},
            {"id": 1.0, "v": 3},
            {"id": "2017-12-12T10:58:55Z", "v": 4},
            {"id": 18446744073709551615u64, "v": 5},
        ]),
        r#"
events
  id: Utf8
  v: Int64
  | "7" | 1
  | "a" | 2
  | "1.0" | 3
  | "2017-12-12T10:58:55Z" | 4
  | "18446744073709551615" | 5
"#,
    );
}

#[test]
fn integers_beyond_64_bits_are_kept_exactly_as_text() {
    check(
        json!([{"id": "a", "big": 9223372036854775808u64, "f": 1.5e300}]),
        r#"
events
  id: Utf8
  big: Utf8
  f: Float64
  | "a" | "9223372036854775808" | 1.5e300
"#,
    );
}

#[test]
fn colliding_keys_get_their_own_columns_recorded_with_the_original_key() {
    let mut n = Normalizer::new(NormalizeConfig::default(), SchemaRegistry::default());
    let events = meta("events", WriteDisposition::Merge);
    let page = |n: &mut Normalizer, records: Value| {
        n.normalize(&events, "load", 0, records.as_array().unwrap())
            .unwrap()
    };
    let first = page(&mut n, json!([{"id": "a", "userId": "u1", "user_id": 7}]));
    // The same raw key lands in the same column later, whether or not its twin is there.
    let second = page(
        &mut n,
        json!([{"id": "b", "user_id": 8}, {"id": "c", "userId": "u3"}]),
    );
    assert_eq!(
        render(&first).trim(),
        r#"
events
  id: Utf8
  user_id: Utf8
  user_id_1: Int64
  | "a" | "u1" | 7"#
            .trim()
    );
    assert_eq!(
        render(&second).trim(),
        r#"
events
  id: Utf8
  user_id: Utf8
  user_id_1: Int64
  | "b" | ∅ | 8
  | "c" | "u3" | ∅"#
            .trim()
    );
    let schema = second[0].batch.schema();
    let source = |c: &str| {
        schema
            .field_with_name(c)
            .unwrap()
            .metadata()
            .get(SOURCE_METADATA_KEY)
            .cloned()
    };
    assert_eq!(source("user_id").as_deref(), Some("/userId"));
    assert_eq!(source("user_id_1").as_deref(), Some("/user_id"));
    // The claims survive a reload of the schema from the lake's Arrow schema.
    let reloaded = TableSchema::from_arrow(&schema);
    let mut again = Normalizer::new(
        NormalizeConfig::default(),
        SchemaRegistry::new([("events".to_owned(), reloaded)].into()),
    );
    let third = page(&mut again, json!([{"id": "d", "user_id": 9}]));
    assert_eq!(
        third[0]
            .batch
            .schema()
            .field_with_name("user_id_1")
            .unwrap()
            .data_type(),
        &DataType::Int64
    );
    assert_eq!(third[0].batch.num_columns(), schema.fields().len());
}

#[test]
fn nesting_beyond_the_limit_is_kept_as_json_text() {
    let mut n = Normalizer::new(
        NormalizeConfig {
            max_nesting_depth: 1,
            ..NormalizeConfig::default()
        },
        SchemaRegistry::default(),
    );
    let records = vec![json!({"id": "a", "meta": {"deep": {"x": [1, 2]}}})];
    let batches = n
        .normalize(
            &meta("events", WriteDisposition::Merge),
            "load",
            0,
            &records,
        )
        .unwrap();
    let got = render(&batches);
    assert!(got.contains(r#"meta__deep: Utf8"#), "{got}");
    assert!(got.contains(r#"{\"x\":[1,2]}"#), "{got}");
}

// Issue 12: a record with 10,000 distinct keys made 10,000 columns (and a gigabyte).
#[test]
fn an_object_that_would_pass_the_column_limit_is_kept_as_json_text_and_counted() {
    let mut n = Normalizer::new(
        NormalizeConfig {
            max_table_columns: 8,
            ..NormalizeConfig::default()
        },
        SchemaRegistry::default(),
    );
    let m = meta("events", WriteDisposition::Merge);
    let wide: serde_json::Map<String, Value> =
        (0..10).map(|i| (format!("k{i}"), json!(i))).collect();
    let records = vec![
        json!({"id": "a", "meta": {"x": 1}}),
        json!({"id": "b", "meta": {"x": 2}, "custom": wide}),
        json!({"id": "c", "meta": {"x": 3, "y": 4}}),
    ];
    let got = render(&n.normalize(&m, "load", 0, &records).unwrap());
    // `_dlt_id`, `_dlt_load_id`, the content hash, `id` and `meta__x` leave room for three.
    assert!(got.contains("  custom: Utf8\n"), "{got}");
    assert!(got.contains(r#""{\"k0\":0,\"k1\":1,"#), "{got}");
    assert!(got.contains("  meta__y: Int64\n"), "{got}");
    assert_eq!(
        n.discarded().kept_as_json,
        [("events.custom".to_owned(), 1)].into()
    );
}

#[test]
fn merge_row_ids_follow_the_primary_key_and_the_last_record_of_a_page_wins() {
    let mut n = Normalizer::new(NormalizeConfig::default(), SchemaRegistry::default());
    let m = meta("events", WriteDisposition::Merge);
    let a = n
        .normalize(
            &m,
            "load-1",
            0,
            &[json!({"id": "x", "v": 1}), json!({"id": "x", "v": 2})],
        )
        .unwrap();
    let b = n
        .normalize(&m, "load-2", 9, &[json!({"id": "x", "v": 3})])
        .unwrap();
    assert_eq!(a[0].batch.num_rows(), 1);
    let v = a[0]
        .batch
        .column_by_name("v")
        .unwrap()
        .as_primitive::<Int64Type>()
        .value(0);
    assert_eq!(v, 2);
    let id = |t: &TableBatch| {
        t.batch
            .column_by_name(ROW_ID)
            .unwrap()
            .as_string::<i32>()
            .value(0)
            .to_owned()
    };
    assert_eq!(id(&a[0]), id(&b[0]));
}

#[test]
fn child_rows_link_to_parent_and_root() {
    let mut n = Normalizer::new(NormalizeConfig::default(), SchemaRegistry::default());
    let records = vec![json!({"id": "x", "a": [{"b": [1]}]})];
    let out = n
        .normalize(&meta("events", WriteDisposition::Merge), "l", 0, &records)
        .unwrap();
    let s = |t: &TableBatch, c: &str| {
        t.batch
            .column_by_name(c)
            .unwrap()
            .as_string::<i32>()
            .value(0)
            .to_owned()
    };
    let root_id = s(&out[0], ROW_ID);
    assert_eq!(s(&out[1], PARENT_ID), root_id);
    assert_eq!(s(&out[1], ROOT_ID), root_id);
    assert_eq!(s(&out[2], PARENT_ID), s(&out[1], ROW_ID));
    assert_eq!(s(&out[2], ROOT_ID), root_id);
}

#[test]
fn workers_sharing_a_registry_agree_on_types_and_batches_are_schema_prefixes() {
    let registry = SchemaRegistry::default();
    let mut w1 = Normalizer::new(NormalizeConfig::default(), registry.clone());
    let mut w2 = Normalizer::new(NormalizeConfig::default(), registry.clone());
    let m = meta("events", WriteDisposition::Append);
    let b1 = w1
        .normalize(&m, "l", 0, &[json!({"id": "1", "n": 1})])
        .unwrap();
    let b2 = w2
        .normalize(&m, "l", 1, &[json!({"id": "2", "n": 1.5, "extra": true})])
        .unwrap();
    let full = registry.table("events").unwrap().arrow();
    for b in [&b1[0], &b2[0]] {
        let s = b.batch.schema();
        assert_eq!(s.fields()[..], full.fields()[..s.fields().len()]);
    }
    assert_eq!(
        registry.table("events").unwrap().column_type("n"),
        Some(ColumnType::BigInt)
    );
    assert!(b2[0].batch.column_by_name("n__v_double").is_some());
}

#[test]
fn a_merged_record_without_its_key_is_an_error_naming_it() {
    let mut n = Normalizer::new(NormalizeConfig::default(), SchemaRegistry::default());
    let err = n
        .normalize(
            &meta("events", WriteDisposition::Merge),
            "l",
            0,
            &[json!({"x": 1})],
        )
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "transform: record 0 of `events` has no usable primary key `id`"
    );
}

fn existing_registry(columns: &[(&str, ColumnType)]) -> SchemaRegistry {
    let mut schema = TableSchema::default();
    for (name, t) in columns {
        schema.add_column(Column {
            name: (*name).to_owned(),
            column_type: *t,
            source: Some(format!("/{name}")),
        });
    }
    SchemaRegistry::new([("events".to_owned(), schema)].into())
}

fn contract_config(contract: SchemaContract) -> NormalizeConfig {
    NormalizeConfig {
        tables: [(
            "events".to_owned(),
            TableHints {
                schema_contract: Some(contract),
                ..TableHints::default()
            },
        )]
        .into(),
        ..NormalizeConfig::default()
    }
}

#[test]
fn hints_set_types_keep_json_and_exclude_fields() {
    let config: NormalizeConfig = toml_config(
        r#"
        [tables.events.columns]
        meta = { type = "json" }
        secret = { exclude = true }
        size = { type = "double" }
        deploy = { type = "timestamp" }
        "#,
    );
    let mut n = Normalizer::new(config, SchemaRegistry::default());
    let records = vec![json!({
        "id": "a", "meta": {"x": [1, {"y": "é"}]}, "secret": {"token": "t"}, "size": 3,
        "deploy": null, "other": null,
    })];
    let batches = n
        .normalize(&meta("events", WriteDisposition::Merge), "l", 0, &records)
        .unwrap();
    assert_eq!(batches.len(), 1, "a JSON-hinted list makes no child table");
    assert_eq!(
        render(&batches).trim(),
        r#"
events
  id: Utf8
  meta: Utf8
  size: Float64
  deploy: Timestamp(µs, "UTC")
  | "a" | "{\"x\":[1,{\"y\":\"é\"}]}" | 3.0 | ∅"#
            .trim()
    );
    let schema = batches[0].batch.schema();
    let meta_field = schema.field_with_name("meta").unwrap();
    assert_eq!(
        meta_field
            .metadata()
            .get(TYPE_METADATA_KEY)
            .map(String::as_str),
        Some("json")
    );
    // A hinted column that saw only nulls has its type; an unhinted one is null-only.
    let registry = n.registry().table("events").unwrap();
    let null_only: Vec<&str> = registry
        .null_only()
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(null_only, ["other"]);
}

/// A column's type is its first value's, whoever lands it: one that saw only nulls is
/// declared null-only (in no batch), and a later page's integers make it a bigint column,
/// not text with a `__v_bigint` variant, in this run and in the next one, which starts from
/// the lake's declaration.
#[test]
fn a_column_that_saw_only_nulls_is_typed_by_its_first_value() {
    let events = meta("events", WriteDisposition::Merge);
    let mut n = Normalizer::new(NormalizeConfig::default(), SchemaRegistry::default());
    let first = n
        .normalize(&events, "l", 0, &[json!({"id": "a", "line": null})])
        .unwrap();
    assert!(first[0].batch.column_by_name("line").is_none());
    let declared = n.registry().null_only_fields("events");
    assert_eq!(declared.len(), 1);
    assert_eq!(declared[0].name(), "line");
    assert_eq!(
        declared[0]
            .metadata()
            .get(NULL_ONLY_METADATA_KEY)
            .map(String::as_str),
        Some("true")
    );
    assert_eq!(
        declared[0]
            .metadata()
            .get(SOURCE_METADATA_KEY)
            .map(String::as_str),
        Some("/line")
    );

    // The next run starts from the lake, which lists the declaration among its fields.
    let mut lake_fields: Vec<arrow_schema::Field> = first[0]
        .batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    lake_fields.extend(declared);
    let from_lake = TableSchema::from_arrow(&arrow_schema::Schema::new(lake_fields));
    assert_eq!(from_lake.column_type("line"), None);
    assert_eq!(from_lake.null_only().len(), 1);
    for registry in [
        n.registry().clone(),
        SchemaRegistry::new([("events".to_owned(), from_lake)].into()),
    ] {
        let mut n = Normalizer::new(NormalizeConfig::default(), registry);
        let second = n
            .normalize(&events, "l", 1, &[json!({"id": "b", "line": 42})])
            .unwrap();
        let schema = second[0].batch.schema();
        assert_eq!(
            schema.field_with_name("line").unwrap().data_type(),
            &arrow_schema::DataType::Int64
        );
        assert!(schema.field_with_name("line__v_bigint").is_err());
        assert!(n.registry().table("events").unwrap().null_only().is_empty());
    }
}

fn toml_config(text: &str) -> NormalizeConfig {
    toml::from_str(text).unwrap()
}

#[test]
fn freeze_refuses_a_new_column_of_an_existing_table_naming_it() {
    let mut n = Normalizer::new(
        contract_config(SchemaContract {
            columns: ContractMode::Freeze,
            ..SchemaContract::default()
        }),
        existing_registry(&[("id", ColumnType::Text)]),
    );
    let err = n
        .normalize(
            &meta("events", WriteDisposition::Merge),
            "l",
            0,
            &[json!({"id": "a", "newField": 1})],
        )
        .unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("`events`")
            && message.contains("new_field")
            && message.contains("columns"),
        "{message}"
    );
}

#[test]
fn discard_row_leaves_out_the_record_and_its_children_and_counts_it() {
    let mut n = Normalizer::new(
        contract_config(SchemaContract {
            data_type: ContractMode::DiscardRow,
            ..SchemaContract::default()
        }),
        existing_registry(&[("id", ColumnType::Text), ("n", ColumnType::BigInt)]),
    );
    let batches = n
        .normalize(
            &meta("events", WriteDisposition::Merge),
            "l",
            0,
            &[
                json!({"id": "a", "n": 1, "tags": ["x", "y"]}),
                json!({"id": "b", "tags": ["z"], "n": "not a number"}),
                json!({"id": "c", "n": 3, "tags": ["w"]}),
            ],
        )
        .unwrap();
    assert_eq!(
        render(&batches).trim(),
        r#"
events
  id: Utf8
  n: Int64
  | "a" | 1
  | "c" | 3
events__tags
  _dlt_list_idx: Int64
  value: Utf8
  | 0 | "x"
  | 1 | "y"
  | 0 | "w""#
            .trim()
    );
    assert_eq!(n.discarded().rows.get("events"), Some(&1));
}

#[test]
fn discard_value_drops_only_the_value_and_counts_it() {
    let mut n = Normalizer::new(
        contract_config(SchemaContract {
            columns: ContractMode::DiscardValue,
            ..SchemaContract::default()
        }),
        existing_registry(&[("id", ColumnType::Text)]),
    );
    let batches = n
        .normalize(
            &meta("events", WriteDisposition::Merge),
            "l",
            0,
            &[
                json!({"id": "a", "extra": 1}),
                json!({"id": "b", "extra": 2}),
            ],
        )
        .unwrap();
    assert_eq!(batches[0].batch.num_rows(), 2);
    assert!(batches[0].batch.schema().field_with_name("extra").is_err());
    assert_eq!(n.discarded().values.get("events.extra"), Some(&2));
}

#[test]
fn a_list_of_lists_makes_a_list_table() {
    check(
        json!([{"id": "a", "m": [[1, 2], [3]]}]),
        r#"
events
  id: Utf8
  | "a"
events__m
  _dlt_list_idx: Int64
  | 0
  | 1
events__m__list
  _dlt_list_idx: Int64
  value: Int64
  | 0 | 1
  | 1 | 2
  | 0 | 3
"#,
    );
}

/// The content hash is stored in lakes and compared run after run: its digest of a record
/// must never change, or every stored record would look changed once.
#[test]
fn the_content_hash_of_a_record_stays_what_lakes_stored() {
    let mut n = Normalizer::new(NormalizeConfig::default(), SchemaRegistry::default());
    let record = json!({
        "id": "e1", "n": 7, "neg": -3, "x": 1.5, "ok": true, "none": null,
        "tags": ["a", "b"], "user": {"name": "Ada", "ids": [1, 2]}
    });
    let batches = n
        .normalize(
            &meta("events", WriteDisposition::Merge),
            "load",
            0,
            &[record.clone(), json!({"id": "e2"})],
        )
        .unwrap();
    let root = &batches
        .iter()
        .find(|b| b.table.name == "events")
        .unwrap()
        .batch;
    let hashes = root
        .column_by_name(CONTENT_HASH)
        .unwrap()
        .as_string::<i32>();
    assert_eq!(hashes.value(0), "f9d41f00f785d055");
    assert_eq!(hashes.value(1), "7933f2d03ddc7c08");
}

#[test]
fn a_normalizer_without_content_hashes_gives_merged_rows_none() {
    let records = [json!({"id": "e1", "n": 1})];
    let meta = meta("_errlake_state", WriteDisposition::Merge);
    let with = Normalizer::new(NormalizeConfig::default(), SchemaRegistry::default())
        .normalize(&meta, "l", 0, &records)
        .unwrap();
    assert!(with[0].batch.column_by_name(CONTENT_HASH).is_some());
    let without = Normalizer::new(NormalizeConfig::default(), SchemaRegistry::default())
        .without_content_hashes()
        .normalize(&meta, "l", 0, &records)
        .unwrap();
    assert!(without[0].batch.column_by_name(CONTENT_HASH).is_none());
    assert_eq!(without[0].batch.num_rows(), 1);
}

#[test]
fn records_with_keys_in_other_orders_or_missing_fill_the_same_columns() {
    let body = br#"[
        {"id": "a", "level": "error", "device": {"os": "ios", "model": "x"}},
        {"level": "warning", "id": "b", "device": {"model": "y"}},
        {"id": "c", "device": {"model": "z", "os": "android"}, "level": "info"},
        {"id": "d", "level": "error", "device": {"os": "ios", "model": "w"}}
    ]"#;
    let doc = Arc::new(json_tape::Document::parse(body.to_vec()).unwrap());
    let records = json_tape::Records::select(doc, 0).unwrap();
    let mut n = Normalizer::new(NormalizeConfig::default(), SchemaRegistry::default());
    let batches = n
        .normalize_records(
            &meta("events", WriteDisposition::Merge),
            "load",
            0,
            &records,
            None,
        )
        .unwrap();
    let got = render(&batches);
    assert_eq!(
        got.trim(),
        r#"
events
  id: Utf8
  level: Utf8
  device__os: Utf8
  device__model: Utf8
  | "a" | "error" | "ios" | "x"
  | "b" | "warning" | ∅ | "y"
  | "c" | "info" | "android" | "z"
  | "d" | "error" | "ios" | "w"
"#
        .trim(),
        "\n--- got ---\n{got}"
    );
}
