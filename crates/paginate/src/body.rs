//! A page body read as JSON, once, into a tape ([`json_tape::Document`]): what the paginator
//! needs is read from it in place, and the transform workers read the records from the same
//! document. A problem names its byte.

pub use json_tape::{MAX_DEPTH, Problem as BodyProblem};

use json_tape::Document;

/// Parses a page body, as [`crate::PageLoop`] does for each page; an empty (or
/// all-whitespace) body is an empty list. An integer beyond 64 bits keeps all its digits
/// ([`json_tape::Number::Big`]), which the normalizer keeps as text.
pub fn parse_body(bytes: Vec<u8>) -> Result<Document, BodyProblem> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Document::parse(b"[]".to_vec());
    }
    Document::parse(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Issue 12: integers beyond 64 bits became doubles, so two ids that differ past the 17th
    // digit merged into one row.
    #[test]
    fn integers_beyond_64_bits_keep_every_digit() {
        let d = parse_body(
            b"[{\"id\": 123456789012345678901234567890, \"n\": -98765432109876543210987, \"u\": 18446744073709551615, \"f\": 1.5e300}]".to_vec(),
        )
        .unwrap();
        let v = d.root().to_serde();
        assert_eq!(v[0]["id"], "123456789012345678901234567890");
        assert_eq!(v[0]["n"], "-98765432109876543210987");
        assert_eq!(v[0]["u"], 18446744073709551615u64);
        assert_eq!(v[0]["f"], 1.5e300);
    }

    #[test]
    fn a_blank_body_is_an_empty_list_and_a_bad_one_names_its_byte() {
        assert_eq!(parse_body(b"  \n".to_vec()).unwrap().root().to_json(), "[]");
        let problem = parse_body(b"[{\"a\": 1},\n {\"b\": tru}]".to_vec()).unwrap_err();
        assert_eq!(
            (problem.offset, problem.problem.as_str()),
            (21, "expected ident")
        );
    }
}
