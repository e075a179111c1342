//! The tape against serde_json: problems and their bytes, numbers, escapes, duplicate keys, and any value or bytes.

use proptest::prelude::*;

use crate::{Document, Kind, MAX_DEPTH, Number, Problem};

fn doc(text: &str) -> Document {
    Document::parse(text.as_bytes().to_vec()).unwrap()
}

#[track_caller]
fn check_problem(body: &str, offset: usize, message: &str) {
    assert_eq!(
        Document::parse(body.as_bytes().to_vec()).unwrap_err(),
        Problem {
            offset,
            problem: message.to_owned()
        }
    );
}

#[test]
fn problems_name_their_byte() {
    check_problem(
        r#"{"data": [{"m": "\ud800"}]}"#,
        17,
        r"the escape `\ud800` is half of a UTF-16 surrogate pair without its other half, not a character",
    );
    check_problem(
        r#"{"m": "\udc00\ud800"}"#,
        7,
        r"the escape `\udc00` is half of a UTF-16 surrogate pair without its other half, not a character",
    );
    check_problem(r#"[{"a": 1e400}]"#, 7, "number out of range");
    check_problem("[{\"a\": 1},\n {\"b\": tru}]", 21, "expected ident");
    check_problem("[1, 2", 5, "EOF while parsing a list");
    check_problem("[1 2]", 3, "expected `,` or `]`");
    check_problem(r#"{"a" 1}"#, 5, "expected `:`");
    check_problem(r#"{"a": 1,}"#, 8, "key must be a string");
    check_problem(r#"{1: 2}"#, 1, "key must be a string");
    check_problem("[01]", 2, "expected `,` or `]`");
    check_problem("[1.]", 3, "invalid number");
    check_problem("[-]", 2, "invalid number");
    check_problem(
        "[\"a\tb\"]",
        3,
        "control character (\\u0000-\\u001F) found while parsing a string",
    );
    check_problem(r#"["\x"]"#, 2, "invalid escape");
    check_problem(r#"["\u12G4"]"#, 2, "invalid escape");
    check_problem("[\"abc", 5, "EOF while parsing a string");
    check_problem("[] x", 3, "trailing characters");
    check_problem("", 0, "EOF while parsing a value");
    check_problem("[nul", 4, "EOF while parsing a value");
    let err = Document::parse(b"[\"ok\", \"bad \xff byte\"]".to_vec()).unwrap_err();
    assert_eq!(
        (err.offset, err.problem.as_str()),
        (12, "invalid unicode code point")
    );
}

/// Whitespace around any token is skipped, and a problem after it is named at the byte
/// after the whitespace.
#[test]
fn whitespace_between_tokens_is_skipped_and_problems_after_it_are_named() {
    let d = doc(" \n[ 1 ,\t{ \"a\" : [ ] , \"b\"\r\n:{ } } , \"c\" ]\n ");
    assert_eq!(d.root().to_json(), r#"[1,{"a":[],"b":{}},"c"]"#);
    check_problem("[1 ,\n 2 x]", 8, "expected `,` or `]`");
    check_problem("{ \"a\" : 1 , \"b\" : }", 18, "expected value");
    check_problem("{ \"a\"  1}", 7, "expected `:`");
    check_problem("{ \"a\": 1 ,  }", 12, "key must be a string");
    check_problem("[1,\t", 4, "EOF while parsing a value");
    check_problem("{\"a\" ", 5, "EOF while parsing an object");
    check_problem("[1 ", 3, "EOF while parsing a list");
    check_problem("[1]  x", 5, "trailing characters");
    check_problem("[1 \u{b} 2]", 3, "expected `,` or `]`");
}

#[test]
fn nesting_up_to_the_limit_parses_and_deeper_is_named() {
    let deep = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n));
    let d = doc(&deep(MAX_DEPTH));
    assert_eq!(d.root().to_json(), deep(MAX_DEPTH));
    check_problem(
        &deep(MAX_DEPTH + 1),
        MAX_DEPTH,
        "lists and objects nested deeper than 1024 levels",
    );
    // Brackets inside strings are text.
    assert!(Document::parse(format!("[\"{}\"]", "[".repeat(5000)).into_bytes()).is_ok());
}

#[test]
fn numbers_keep_what_they_say() {
    let d = doc(
        "[0, -1, 9223372036854775807, 9223372036854775808, 18446744073709551615, \
         18446744073709551616, -9223372036854775808, -9223372036854775809, -0, 1.5e300, 2.0, 1E2]",
    );
    let numbers: Vec<Number<'_>> = d.root().elements().filter_map(|v| v.as_number()).collect();
    assert_eq!(
        numbers,
        vec![
            Number::Int(0),
            Number::Int(-1),
            Number::Int(i64::MAX),
            Number::UInt(1 << 63),
            Number::UInt(u64::MAX),
            Number::Big("18446744073709551616"),
            Number::Int(i64::MIN),
            Number::Big("-9223372036854775809"),
            Number::Float(-0.0),
            Number::Float(1.5e300),
            Number::Float(2.0),
            Number::Float(100.0),
        ]
    );
    assert_eq!(
        d.root().to_json(),
        "[0,-1,9223372036854775807,9223372036854775808,18446744073709551615,\
         18446744073709551616,-9223372036854775808,-9223372036854775809,-0.0,1.5e+300,2.0,100.0]"
    );
}

#[test]
fn strings_decode_their_escapes() {
    let d = doc(r#"["\ud83d\ude00 \u00e9 \\u d800 \" \n \/", "plain é"]"#);
    let items: Vec<_> = d.root().elements().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(items, vec!["😀 é \\u d800 \" \n /", "plain é"]);
    assert!(matches!(items[1], std::borrow::Cow::Borrowed(_)));
    assert_eq!(d.root().to_json(), r#"["😀 é \\u d800 \" \n /","plain é"]"#);
}

#[test]
fn a_key_given_twice_keeps_its_last_value() {
    let d = doc(r#"{"a": 1, "b": [1, {"a": 0}], "a": 2, "\u0062": 3}"#);
    let members: Vec<(String, String)> = d
        .root()
        .members()
        .map(|(k, v)| (k.as_str().into_owned(), v.to_json()))
        .collect();
    assert_eq!(
        members,
        vec![("a".into(), "2".into()), ("b".into(), "3".into())]
    );
    assert_eq!(d.root().get("a").unwrap().as_number(), Some(Number::Int(2)));
    assert_eq!(d.root().len(), 2);
    let wide: String = (0..20).map(|i| format!("\"k{}\": {i},", i % 15)).collect();
    let d = doc(&format!("{{{wide} \"z\": 0}}"));
    assert_eq!(d.root().len(), 16);
    assert_eq!(
        d.root().get("k0").unwrap().as_number(),
        Some(Number::Int(15))
    );
}

#[test]
fn a_short_key_is_its_bytes_as_one_number() {
    let keys = |d: &Document| -> Vec<Option<u128>> {
        d.root().members().map(|(k, _)| k.short()).collect()
    };
    // The last key ends the body's last 16 bytes, so it is read without a 16-byte load.
    let d = doc(
        r#"{"": 0, "a": 1, "ab\u0063": 2, "0123456789abcdef": 3, "0123456789abcdefg": 4, "id":5}"#,
    );
    assert_eq!(
        keys(&d),
        vec![
            Some(0),
            Some(u128::from(b'a')),
            None,
            Some(u128::from_le_bytes(*b"0123456789abcdef")),
            None,
            Some(u128::from_le_bytes(*b"id\0\0\0\0\0\0\0\0\0\0\0\0\0\0")),
        ]
    );
}

#[test]
fn get_finds_keys_of_any_length_spelled_plainly_or_escaped() {
    let d = doc(
        r#"{"id": 1, "i\u0064x": 2, "0123456789abcdef": 3, "0123456789abcdefg": 4, "a\u0000": 5, "": 6}"#,
    );
    let get = |k: &str| d.root().get(k).and_then(|v| v.as_number());
    assert_eq!(get("id"), Some(Number::Int(1)));
    assert_eq!(get("idx"), Some(Number::Int(2)));
    assert_eq!(get("0123456789abcdef"), Some(Number::Int(3)));
    assert_eq!(get("0123456789abcdefg"), Some(Number::Int(4)));
    assert_eq!(get("a\0"), Some(Number::Int(5)));
    assert_eq!(get(""), Some(Number::Int(6)));
    assert_eq!(get("a"), None);
    assert_eq!(get("i"), None);
    assert_eq!(get("0123456789abcde"), None);
}

proptest! {
    /// Plain keys of up to 16 bytes have a number, and equal numbers exactly when their
    /// texts are equal; other keys have none.
    #[test]
    fn short_keys_are_equal_when_their_texts_are(
        a in "[a-zé_0-9]{0,18}",
        b in "[a-zé_0-9]{0,18}",
    ) {
        let d = doc(&format!(r#"{{"{a}": 1, "{b}": 2}}"#));
        let members: Vec<_> = d.root().members().map(|(k, _)| k).collect();
        if a == b {
            prop_assert_eq!(members.len(), 1);
            return Ok(());
        }
        let (ka, kb) = (members[0].short(), members[1].short());
        prop_assert_eq!(ka.is_some(), a.len() <= 16);
        prop_assert_eq!(kb.is_some(), b.len() <= 16);
        if let (Some(x), Some(y)) = (ka, kb) {
            prop_assert_ne!(x, y);
            prop_assert_eq!(&x.to_le_bytes()[..a.len()], a.as_bytes());
        }
    }
}

#[test]
fn lists_and_objects_know_their_size_and_end() {
    let d = doc(r#" {"data": [{"id": 1, "tags": []}, {"id": 2, "x": {}}], "next": null} "#);
    let data = d.root().get("data").unwrap();
    assert_eq!((data.kind(), data.len()), (Kind::Array, 2));
    let second = data.elements().nth(1).unwrap();
    assert_eq!(second.get("id").unwrap().as_number(), Some(Number::Int(2)));
    assert!(d.root().get("next").unwrap().is_null());
    assert_eq!(second.raw(), r#"{"id": 2, "x": {}}"#);
    assert_eq!(d.at(data.position()).len(), 2);
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::Bool),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<u64>().prop_map(serde_json::Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(serde_json::Value::from),
        any::<String>().prop_map(serde_json::Value::String),
    ];
    leaf.prop_recursive(4, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
            prop::collection::vec(("[a-c\\\\\"é]{0,3}", inner), 0..6)
                .prop_map(|pairs| { serde_json::Value::Object(pairs.into_iter().collect()) }),
        ]
    })
}

proptest! {
    // The tape reads back what serde_json reads, and writes what serde_json writes.
    #[test]
    fn reads_and_writes_as_serde_json_does(value in json_value(), pretty in any::<bool>()) {
        let text = if pretty {
            serde_json::to_string_pretty(&value).unwrap()
        } else {
            serde_json::to_string(&value).unwrap()
        };
        let d = Document::parse(text.clone().into_bytes()).unwrap();
        prop_assert_eq!(d.root().to_serde(), serde_json::from_str::<serde_json::Value>(&text).unwrap());
        prop_assert_eq!(d.root().to_json(), serde_json::to_string(&value).unwrap());
    }

    // Objects whose keys repeat, plainly or through an escape, in any number and order: the
    // last value of each key is kept, as serde_json keeps it.
    #[test]
    fn repeated_keys_keep_their_last_value(
        pairs in prop::collection::vec(("[a-d]{0,2}|k[0-9]{1,2}", any::<bool>(), any::<i32>()), 0..40)
    ) {
        let members: Vec<String> = pairs
            .iter()
            .map(|(key, escape, value)| {
                let key = match key.strip_prefix('a') {
                    Some(rest) if *escape => format!("\\u0061{rest}"),
                    _ => key.clone(),
                };
                format!("\"{key}\": {value}")
            })
            .collect();
        let text = format!("{{{}}}", members.join(", "));
        let d = Document::parse(text.clone().into_bytes()).unwrap();
        let expected = serde_json::from_str::<serde_json::Value>(&text).unwrap();
        prop_assert_eq!(d.root().len(), expected.as_object().unwrap().len());
        prop_assert_eq!(d.root().to_serde(), expected);
    }

    // A page of objects that share most of their keys, some repeating one of them, some
    // with keys alike in their first eight bytes and length: each keeps the last value of
    // each key, whatever objects the parser checked before it.
    #[test]
    fn objects_of_a_page_keep_their_last_values_whatever_came_before(
        base in prop::collection::vec("[a-c]{1,2}|prefix12[0-9]", 1..9),
        objects in prop::collection::vec((any::<usize>(), any::<usize>(), any::<bool>()), 1..8),
    ) {
        let page: Vec<String> = objects
            .iter()
            .map(|&(from, to, repeat)| {
                let mut keys = base.clone();
                if repeat {
                    keys[to % base.len()] = base[from % base.len()].clone();
                }
                let members: Vec<String> =
                    keys.iter().enumerate().map(|(i, k)| format!("\"{k}\": {i}")).collect();
                format!("{{{}}}", members.join(","))
            })
            .collect();
        let text = format!("[{}]", page.join(","));
        let d = Document::parse(text.clone().into_bytes()).unwrap();
        let expected = serde_json::from_str::<serde_json::Value>(&text).unwrap();
        for (object, want) in d.root().elements().zip(expected.as_array().unwrap()) {
            prop_assert_eq!(object.len(), want.as_object().unwrap().len());
        }
        prop_assert_eq!(d.root().to_serde(), expected);
    }

    // Whatever the bytes, parsing answers (no panic), and agrees with serde_json on whether
    // they are JSON (but for what the tape refuses on purpose or keeps exactly).
    #[test]
    fn any_bytes_parse_or_name_a_byte(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        match Document::parse(bytes.clone()) {
            Ok(d) => {
                prop_assert!(serde_json::from_slice::<serde_json::Value>(&bytes).is_ok());
                let _ = d.root().to_json();
            }
            Err(p) => prop_assert!(p.offset <= bytes.len()),
        }
    }
}
