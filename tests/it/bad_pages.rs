//! Issue 12: recorded pages mutated at random (cut short, bytes flipped, bad escapes, huge
//! numbers, deep nesting) go through parse and normalization: no panic, and either batches
//! or an error that names the byte.

use std::sync::Arc;

use proptest::prelude::*;
use transform::{NormalizeConfig, Normalizer, SchemaRegistry, TableMeta, WriteDisposition};

fn recorded_pages() -> Vec<Vec<u8>> {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data");
    [
        "bugsnag/events.list.real-2017.page1.json",
        "bugsnag/event.full.real-2017.json",
        "bugsnag/errors.list.real-2017.json",
        "sentry/event.full.json",
        "sentry/issues.org-list.json",
    ]
    .iter()
    .map(|f| std::fs::read(dir.join(f)).unwrap())
    .collect()
}

/// One mutation of a page's bytes.
#[derive(Debug, Clone)]
enum Mutation {
    Truncate(usize),
    Flip(usize, u8),
    Insert(usize, &'static str),
    DeepNesting(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let snippets = prop::sample::select(vec![
        "\"\\ud800\"",
        "\"\\udc00x\"",
        "\"\\u12\"",
        "1e400",
        "-1e400",
        "123456789012345678901234567890",
        "\"\\xff\"",
        "\u{0}",
        ",",
        "]",
        "{\"a\":",
        "\u{fffd}\u{1f600}",
    ]);
    prop_oneof![
        any::<prop::sample::Index>().prop_map(|i| Mutation::Truncate(i.index(usize::MAX))),
        (any::<prop::sample::Index>(), any::<u8>())
            .prop_map(|(i, b)| Mutation::Flip(i.index(usize::MAX), b)),
        (any::<prop::sample::Index>(), snippets)
            .prop_map(|(i, s)| Mutation::Insert(i.index(usize::MAX), s)),
        (any::<prop::sample::Index>(), 100usize..1500)
            .prop_map(|(i, d)| Mutation::DeepNesting(i.index(usize::MAX), d)),
    ]
}

fn apply(page: &[u8], mutations: &[Mutation]) -> Vec<u8> {
    let mut bytes = page.to_vec();
    for m in mutations {
        let at = |i: usize| i % (bytes.len() + 1);
        match m {
            Mutation::Truncate(i) => bytes.truncate(at(*i)),
            Mutation::Flip(i, b) if !bytes.is_empty() => {
                let i = i % bytes.len();
                bytes[i] ^= b | 1;
            }
            Mutation::Flip(..) => {}
            Mutation::Insert(i, s) => {
                let i = at(*i);
                bytes.splice(i..i, s.bytes());
            }
            Mutation::DeepNesting(i, depth) => {
                let i = at(*i);
                let deep = format!("{}1{}", "[".repeat(*depth), "]".repeat(*depth));
                bytes.splice(i..i, deep.bytes());
            }
        }
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn mutated_pages_give_batches_or_an_error_naming_the_byte(
        page_idx in 0usize..5,
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        let pages = recorded_pages();
        let bytes = apply(&pages[page_idx], &mutations);
        match paginate::parse_body(bytes.clone()) {
            Err(e) => {
                prop_assert!(e.offset <= bytes.len(), "{e:?}");
                prop_assert!(!e.problem.is_empty());
            }
            Ok(body) => {
                let body = Arc::new(body);
                // The page loop's reading: a list's items, a lone object, or what else it is.
                let records = match transform::Records::select(body.clone(), 0) {
                    Ok(records) => records,
                    Err(_) => transform::Records::from_serde(&[body.root().to_serde()])
                        .expect("a parsed page writes back as JSON"),
                };
                let meta = Arc::new(TableMeta {
                    name: "events".into(),
                    parent: None,
                    root: "events".into(),
                    primary_key: Some("id".into()),
                    write_disposition: WriteDisposition::Append,
                });
                let mut n = Normalizer::new(NormalizeConfig::default(), SchemaRegistry::default());
                // A record that is not an object is an error naming it; anything else lands.
                if let Err(e) = n.normalize_records(&meta, "load", 0, &records, None) {
                    prop_assert!(e.to_string().contains("events"), "{e}");
                }
            }
        }
    }
}
