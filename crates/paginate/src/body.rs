//! A page body read as JSON, once: a quick scan for what the parser would misreport (nesting
//! beyond [`MAX_DEPTH`], lone surrogate escapes) or round (integers beyond 64 bits), then the
//! parse; a problem names its byte.

use serde::Deserialize;
use serde_json::Value;

/// The deepest nesting of lists and objects a page may have. Deeper than the parser's own
/// 128 levels, so that deep values reach the normalizer, which keeps what lies past its
/// `max_nesting_depth` as JSON text; shallow enough that parsing, hashing and dropping a
/// value stay well within a thread's stack.
pub const MAX_DEPTH: usize = 1024;

/// Why a body is not JSON the pipeline can read, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyProblem {
    /// The byte of the body where the problem is.
    pub offset: usize,
    /// What is wrong there.
    pub problem: String,
}

/// Parses a page body, as [`crate::PageLoop`] does for each page; an empty (or
/// all-whitespace) body is an empty list. An integer that fits neither `i64` nor `u64` becomes
/// a string of all its digits (the parser would round it to a double: two ids that differ
/// past the 17th digit would become one), which the normalizer keeps as text, as it keeps
/// integers between `i64` and `u64`.
pub fn parse_body(bytes: &[u8]) -> Result<Value, BodyProblem> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Array(Vec::new()));
    }
    let big = scan(bytes)?;
    let quoted;
    let input: &[u8] = if big.is_empty() {
        bytes
    } else {
        quoted = quote_spans(bytes, &big);
        &quoted
    };
    let mut de = serde_json::Deserializer::from_slice(input);
    // The scan bounded the depth.
    de.disable_recursion_limit();
    let parsed = Value::deserialize(&mut de).and_then(|v| de.end().map(|()| v));
    parsed.map_err(|e| {
        let at = format!(" at line {} column {}", e.line(), e.column());
        let text = e.to_string();
        let offset = byte_offset(input, e.line(), e.column());
        // Back to the body's own bytes: two quotes were added per integer before the offset.
        let added = big
            .iter()
            .enumerate()
            .take_while(|(k, span)| span.end + 2 * k + 2 <= offset)
            .count();
        BodyProblem {
            offset: offset - 2 * added,
            problem: text.strip_suffix(&at).unwrap_or(&text).to_owned(),
        }
    })
}

/// The body with each span (an integer literal) in double quotes.
fn quote_spans(bytes: &[u8], spans: &[std::ops::Range<usize>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + 2 * spans.len());
    let mut at = 0;
    for span in spans {
        out.extend_from_slice(&bytes[at..span.start]);
        out.push(b'"');
        out.extend_from_slice(&bytes[span.clone()]);
        out.push(b'"');
        at = span.end;
    }
    out.extend_from_slice(&bytes[at..]);
    out
}

/// Whether a number literal is an integer that fits neither `i64` nor `u64`.
fn is_big_integer(token: &[u8]) -> bool {
    let digits = token.strip_prefix(b"-").unwrap_or(token);
    token.len() > 19
        && !digits.is_empty()
        && digits.iter().all(u8::is_ascii_digit)
        && std::str::from_utf8(token)
            .is_ok_and(|t| t.parse::<i64>().is_err() && t.parse::<u64>().is_err())
}

/// The byte offset of a 1-based line and column (as the parser counts them: bytes).
fn byte_offset(bytes: &[u8], line: usize, column: usize) -> usize {
    let line_start = if line <= 1 {
        0
    } else {
        bytes
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b'\n')
            .nth(line - 2)
            .map_or(bytes.len(), |(i, _)| i + 1)
    };
    (line_start + column.saturating_sub(1)).min(bytes.len())
}

/// Finds nesting deeper than [`MAX_DEPTH`] and UTF-16 surrogate escapes without their pair
/// (`"\ud800"`, which the parser reports as an "unexpected end of hex escape"); returns the
/// spans of integers beyond 64 bits.
fn scan(bytes: &[u8]) -> Result<Vec<std::ops::Range<usize>>, BodyProblem> {
    let mut big = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    if bytes[i] != b'\\' {
                        i += 1;
                        continue;
                    }
                    if bytes.get(i + 1) != Some(&b'u') {
                        i += 2;
                        continue;
                    }
                    match hex4(bytes, i + 2) {
                        Some(0xD800..=0xDBFF) => {
                            let pair = (bytes.get(i + 6) == Some(&b'\\')
                                && bytes.get(i + 7) == Some(&b'u'))
                            .then(|| hex4(bytes, i + 8))
                            .flatten();
                            if !matches!(pair, Some(0xDC00..=0xDFFF)) {
                                return Err(lone_surrogate(bytes, i));
                            }
                            i += 12;
                        }
                        Some(0xDC00..=0xDFFF) => return Err(lone_surrogate(bytes, i)),
                        _ => i += 2,
                    }
                }
                i += 1;
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(BodyProblem {
                        offset: i,
                        problem: format!("lists and objects nested deeper than {MAX_DEPTH} levels"),
                    });
                }
                i += 1;
            }
            b']' | b'}' => {
                depth = depth.saturating_sub(1);
                i += 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i < bytes.len()
                    && matches!(bytes[i], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
                {
                    i += 1;
                }
                if is_big_integer(&bytes[start..i]) {
                    big.push(start..i);
                }
            }
            _ => i += 1,
        }
    }
    Ok(big)
}

fn hex4(bytes: &[u8], at: usize) -> Option<u32> {
    let digits = bytes.get(at..at + 4)?;
    u32::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()
}

fn lone_surrogate(bytes: &[u8], at: usize) -> BodyProblem {
    let escape = String::from_utf8_lossy(&bytes[at..(at + 6).min(bytes.len())]).into_owned();
    BodyProblem {
        offset: at,
        problem: format!(
            "the escape `{escape}` is half of a UTF-16 surrogate pair without its other half, not a character"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check_problem(body: &str, offset: usize, problem: &str) {
        assert_eq!(
            parse_body(body.as_bytes()),
            Err(BodyProblem {
                offset,
                problem: problem.to_owned()
            })
        );
    }

    #[test]
    fn problems_name_their_byte() {
        check_problem(
            r#"{"data": [{"m": "\ud800"}]}"#,
            17,
            r"the escape `\ud800` is half of a UTF-16 surrogate pair without its other half, not a character",
        );
        check_problem(r#"[{"a": 1e400}]"#, 11, "number out of range");
        check_problem("[{\"a\": 1},\n {\"b\": tru}]", 21, "expected ident");
        check_problem("[1, 2", 4, "EOF while parsing a list");
        let err = parse_body(b"[\"ok\", \"bad \xff byte\"]").unwrap_err();
        assert_eq!(err.problem, "invalid unicode code point");
        assert!((12..=13).contains(&err.offset), "{err:?}");
    }

    // Issue 12: integers beyond 64 bits became doubles, so two ids that differ past the 17th
    // digit merged into one row.
    #[test]
    fn integers_beyond_64_bits_keep_every_digit() {
        let v = parse_body(
            b"[{\"id\": 123456789012345678901234567890, \"n\": -98765432109876543210987, \"u\": 18446744073709551615, \"f\": 1.5e300}]",
        )
        .unwrap();
        assert_eq!(v[0]["id"], "123456789012345678901234567890");
        assert_eq!(v[0]["n"], "-98765432109876543210987");
        assert_eq!(v[0]["u"], 18446744073709551615u64);
        assert_eq!(v[0]["f"], 1.5e300);
        // An error after a quoted integer still names the body's own byte.
        check_problem(
            "[123456789012345678901234567890, tru]",
            36,
            "expected ident",
        );
    }

    #[test]
    fn pairs_and_ordinary_escapes_parse() {
        let v = parse_body(r#"["\ud83d\ude00 \u00e9 \\u d800 \" \n"]"#.as_bytes()).unwrap();
        assert_eq!(v[0], "😀 é \\u d800 \" \n");
        assert_eq!(parse_body(b"  \n").unwrap(), Value::Array(Vec::new()));
    }

    // Issue 12: nesting deeper than the parser's 128 levels failed the page, although the
    // normalizer keeps deep values as JSON text.
    #[test]
    fn nesting_up_to_the_limit_parses_and_deeper_is_named() {
        let deep = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n));
        assert!(parse_body(deep(MAX_DEPTH).as_bytes()).is_ok());
        check_problem(
            &deep(MAX_DEPTH + 1),
            MAX_DEPTH,
            "lists and objects nested deeper than 1024 levels",
        );
        // Brackets inside strings are text.
        assert!(parse_body(format!("[\"{}\"]", "[".repeat(5000)).as_bytes()).is_ok());
    }
}
