//! A page of JSON as a flat tape of tokens: one validating pass over the bytes notes where
//! every value is, and readers walk the tape without building a tree.
//!
//! Role in the pipeline: the source parses each page body once into a [`Document`] (what
//! the paginator needs, a cursor or a stop condition's `response`, is read from it in place);
//! the transform workers read the same document's records straight into Arrow builders. A
//! record costs no allocation but the strings that hold escapes.
//!
//! Why a tape of our own and not a tree or a SIMD parser (measured on the mock's events with
//! `cargo xtask bench --only normalize`, where the figures are printed):
//! - `serde_json::Value` builds a map per object and a string per key and value: building and
//!   dropping those trees was a third of a run's CPU.
//! - simd-json's tape borrows a mutable copy of the body (it unescapes in place), so it
//!   cannot travel from the source to a transform worker with its bytes without a
//!   self-referential type, and it rounds or refuses integers beyond 64 bits; sonic-rs'
//!   lazy values scan a record again at every level they are read at.
//! - This tape holds offsets into the body it owns (a [`Document`] is `Send + Sync`, shared
//!   through an `Arc`), numbers parsed once, and the facts a reader needs: where each list
//!   or object ends, how many items it has, which keys a later duplicate shadows.
//!
//! What the pass checks, each problem with its byte offset ([`Problem`]): UTF-8, the JSON
//! grammar, nesting up to [`MAX_DEPTH`], escapes (a lone UTF-16 surrogate is named), numbers
//! out of a double's range. Integers beyond 64 bits keep all their digits
//! ([`Number::Big`]); a key given twice in one object keeps its last value, as
//! `serde_json` does.
//!
//! ```
//! let doc = json_tape::Document::parse(br#"{"data": [{"id": "a", "n": 2}]}"#.to_vec()).unwrap();
//! let data = doc.root().get("data").unwrap();
//! let first = data.elements().next().unwrap();
//! assert_eq!(first.get("id").unwrap().as_str().as_deref(), Some("a"));
//! assert_eq!(first.get("n").unwrap().as_number(), Some(json_tape::Number::Int(2)));
//! ```

#![warn(missing_docs)]

mod parse;
mod records;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::fmt::Write as _;

pub use records::{NotRecords, Records};

/// The deepest nesting of lists and objects a document may have: deep values reach the
/// normalizer, which keeps what lies past its own depth limit as JSON text, while walking a
/// value stays well within a thread's stack.
pub const MAX_DEPTH: usize = 1024;

/// Why bytes are not a JSON document, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The byte where the problem is.
    pub offset: usize,
    /// What is wrong there.
    pub problem: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at byte {}", self.problem, self.offset)
    }
}

impl std::error::Error for Problem {}

/// The kind of a JSON value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool,
    /// A number.
    Number,
    /// A string.
    String,
    /// A list.
    Array,
    /// An object.
    Object,
}

impl Kind {
    /// The kind with an article, for messages: `a list`.
    pub fn described(self) -> &'static str {
        match self {
            Kind::Null => "null",
            Kind::Bool => "a boolean",
            Kind::Number => "a number",
            Kind::String => "a string",
            Kind::Array => "a list",
            Kind::Object => "an object",
        }
    }
}

/// A number as the document wrote it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Number<'a> {
    /// An integer that fits `i64`.
    Int(i64),
    /// An integer above `i64::MAX` that fits `u64`.
    UInt(u64),
    /// A number with a fraction or an exponent, or `-0`: the nearest double.
    Float(f64),
    /// An integer beyond 64 bits, as its digits (a double would round it).
    Big(&'a str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Tag {
    Null,
    False,
    True,
    Int,
    UInt,
    Float,
    Big,
    /// A string without escapes: its bytes are its text.
    Str,
    /// A string with escapes, decoded when read.
    EscStr,
    Array,
    Object,
}

/// One token. Strings and numbers span their text (strings without the quotes); a list or
/// object spans its brackets, `a` is the tape position after its last item and `b` its item
/// count (in an object, the pairs whose key no later key shadows); a number's value is in
/// `a` and `b`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Node {
    pub(crate) tag: Tag,
    /// A key that a later key of the same object shadows.
    pub(crate) shadowed: bool,
    pub(crate) start: u32,
    pub(crate) end: u32,
    pub(crate) a: u32,
    pub(crate) b: u32,
}

impl Node {
    #[inline]
    fn bits(&self) -> u64 {
        (u64::from(self.a) << 32) | u64::from(self.b)
    }
}

/// A parsed JSON document: its bytes and their tape.
#[derive(Debug, Clone)]
pub struct Document {
    /// The body, checked to be UTF-8 once, so that reading a string is a slice.
    text: String,
    nodes: Vec<Node>,
}

impl Document {
    /// Parses `bytes` as one JSON value (whitespace around it allowed).
    pub fn parse(bytes: Vec<u8>) -> Result<Document, Problem> {
        let text = utf8(bytes)?;
        let nodes = parse::parse(text.as_bytes())?;
        Ok(Document { text, nodes })
    }

    /// A document of a `serde_json` value (written as JSON text, then parsed).
    pub fn from_serde(value: &serde_json::Value) -> Result<Document, Problem> {
        Document::parse(serde_json::to_vec(value).unwrap_or_default())
    }

    /// The document's top-level value.
    pub fn root(&self) -> Value<'_> {
        Value { doc: self, idx: 0 }
    }

    /// The value at a tape position taken from [`Value::position`].
    ///
    /// # Panics
    /// If `position` is not a position of this document.
    pub fn at(&self, position: u32) -> Value<'_> {
        assert!(
            (position as usize) < self.nodes.len(),
            "no value at {position}"
        );
        Value {
            doc: self,
            idx: position,
        }
    }

    /// The document's bytes.
    pub fn bytes(&self) -> &[u8] {
        self.text.as_bytes()
    }

    /// Heap bytes held: the body and its tape.
    pub fn heap_bytes(&self) -> usize {
        self.text.capacity() + self.nodes.capacity() * std::mem::size_of::<Node>()
    }

    #[inline]
    fn text(&self, node: &Node) -> &str {
        // Tokens start and end at ASCII bytes (quotes, brackets, digits, letters of
        // literals), so these are character boundaries.
        self.text
            .get(node.start as usize..node.end as usize)
            .unwrap_or("")
    }
}

/// `bytes` as a `String`, checked to be UTF-8 by simdutf8 (SIMD, several times the speed
/// of the standard library's check, which was a twentieth of parsing a page); the standard
/// check runs only on invalid bytes, to name where they are.
fn utf8(bytes: Vec<u8>) -> Result<String, Problem> {
    if simdutf8::basic::from_utf8(&bytes).is_ok() {
        // SAFETY: simdutf8 has just checked that `bytes` are UTF-8.
        return Ok(unsafe { String::from_utf8_unchecked(bytes) });
    }
    String::from_utf8(bytes).map_err(|e| Problem {
        offset: e.utf8_error().valid_up_to(),
        problem: "invalid unicode code point".into(),
    })
}

/// A value in a [`Document`]; cheap to copy.
#[derive(Clone, Copy)]
pub struct Value<'a> {
    doc: &'a Document,
    idx: u32,
}

impl std::fmt::Debug for Value<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_json())
    }
}

impl<'a> Value<'a> {
    #[inline]
    fn node(&self) -> &'a Node {
        &self.doc.nodes[self.idx as usize]
    }

    /// The tape position after this value and everything in it.
    #[inline]
    fn after(&self) -> u32 {
        let n = self.node();
        match n.tag {
            Tag::Array | Tag::Object => n.a,
            _ => self.idx + 1,
        }
    }

    /// Where this value is on its document's tape (for [`Document::at`]).
    #[inline]
    pub fn position(&self) -> u32 {
        self.idx
    }

    /// The document this value is in.
    pub fn document(&self) -> &'a Document {
        self.doc
    }

    /// The value's kind.
    #[inline]
    pub fn kind(&self) -> Kind {
        match self.node().tag {
            Tag::Null => Kind::Null,
            Tag::False | Tag::True => Kind::Bool,
            Tag::Int | Tag::UInt | Tag::Float | Tag::Big => Kind::Number,
            Tag::Str | Tag::EscStr => Kind::String,
            Tag::Array => Kind::Array,
            Tag::Object => Kind::Object,
        }
    }

    /// Whether the value is `null`.
    #[inline]
    pub fn is_null(&self) -> bool {
        self.node().tag == Tag::Null
    }

    /// The boolean, if this is one.
    #[inline]
    pub fn as_bool(&self) -> Option<bool> {
        match self.node().tag {
            Tag::True => Some(true),
            Tag::False => Some(false),
            _ => None,
        }
    }

    /// The number, if this is one.
    #[inline]
    pub fn as_number(&self) -> Option<Number<'a>> {
        let n = self.node();
        match n.tag {
            Tag::Int => Some(Number::Int(n.bits() as i64)),
            Tag::UInt => Some(Number::UInt(n.bits())),
            Tag::Float => Some(Number::Float(f64::from_bits(n.bits()))),
            Tag::Big => Some(Number::Big(self.doc.text(n))),
            _ => None,
        }
    }

    /// The string if it is one without escapes: its text is the body's, borrowed, with no
    /// decoding to branch to (a reader takes [`Value::as_str`] when this is `None`).
    #[inline]
    pub fn as_plain_str(&self) -> Option<&'a str> {
        let n = self.node();
        (n.tag == Tag::Str).then(|| self.doc.text(n))
    }

    /// The string, if this is one: borrowed from the body unless it has escapes.
    #[inline]
    pub fn as_str(&self) -> Option<Cow<'a, str>> {
        let n = self.node();
        match n.tag {
            Tag::Str => Some(Cow::Borrowed(self.doc.text(n))),
            Tag::EscStr => Some(Cow::Owned(parse::unescape(self.doc.text(n)))),
            _ => None,
        }
    }

    /// A string or number as text (`7`, `"a"` as `a`), as keys and cursors are read.
    #[inline]
    pub fn as_key_text(&self) -> Option<Cow<'a, str>> {
        match self.kind() {
            Kind::String => self.as_str(),
            Kind::Number => Some(match self.as_number()? {
                Number::Big(digits) => Cow::Borrowed(digits),
                other => Cow::Owned(number_text(other)),
            }),
            _ => None,
        }
    }

    /// The items of a list, or the pairs of an object (without shadowed keys); 0 otherwise.
    #[inline]
    pub fn len(&self) -> usize {
        let n = self.node();
        match n.tag {
            Tag::Array | Tag::Object => n.b as usize,
            _ => 0,
        }
    }

    /// Whether [`Value::len`] is 0.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The items of a list (none for other kinds).
    #[inline]
    pub fn elements(&self) -> Elements<'a> {
        let n = self.node();
        let (at, left) = match n.tag {
            Tag::Array => (self.idx + 1, n.b),
            _ => (0, 0),
        };
        Elements {
            doc: self.doc,
            at,
            left,
        }
    }

    /// The keys and values of an object, in document order (none for other kinds); of a key
    /// given twice, the last.
    #[inline]
    pub fn members(&self) -> Members<'a> {
        let n = self.node();
        let (at, end) = match n.tag {
            Tag::Object => (self.idx + 1, n.a),
            _ => (0, 0),
        };
        Members {
            doc: self.doc,
            at,
            end,
        }
    }

    /// The value of `key` in an object.
    #[inline]
    pub fn get(&self, key: &str) -> Option<Value<'a>> {
        // A key of up to 16 bytes without a zero byte is compared as one number with the
        // object's short keys (see [`Key::short`]); a record's keys are looked up per record
        // (its primary key, its cursor), and reading each key's text was a twentieth of a run.
        let bytes = key.as_bytes();
        if bytes.len() <= 16 && !bytes.contains(&0) {
            let want = padded(bytes);
            return self
                .members()
                .find(|(k, _)| match k.short() {
                    Some(short) => short == want,
                    None => k.as_str() == key,
                })
                .map(|(_, v)| v);
        }
        self.members()
            .find(|(k, _)| k.as_str() == key)
            .map(|(_, v)| v)
    }

    /// The value's text exactly as the body has it.
    pub fn raw(&self) -> &'a str {
        let n = self.node();
        match n.tag {
            Tag::Str | Tag::EscStr => self
                .doc
                .text
                .get(n.start as usize - 1..n.end as usize + 1)
                .unwrap_or(""),
            _ => self.doc.text(n),
        }
    }

    /// Compact JSON text of the value, as `serde_json::to_string` writes it.
    pub fn to_json(&self) -> String {
        let mut out = String::new();
        self.write_json(&mut out);
        out
    }

    /// Appends compact JSON text of the value to `out`.
    pub fn write_json(&self, out: &mut String) {
        let n = self.node();
        match n.tag {
            Tag::Null => out.push_str("null"),
            Tag::True => out.push_str("true"),
            Tag::False => out.push_str("false"),
            Tag::Int | Tag::UInt | Tag::Float | Tag::Big => {
                if let Some(number) = self.as_number() {
                    match number {
                        Number::Big(digits) => out.push_str(digits),
                        other => out.push_str(&number_text(other)),
                    }
                }
            }
            // Without escapes, the body's bytes are what serde_json would write.
            Tag::Str => {
                out.push('"');
                out.push_str(self.doc.text(n));
                out.push('"');
            }
            Tag::EscStr => {
                let text = parse::unescape(self.doc.text(n));
                let _ = write!(
                    out,
                    "{}",
                    serde_json::Value::String(text) // escapes as serde_json does
                );
            }
            Tag::Array => {
                out.push('[');
                for (i, item) in self.elements().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.write_json(out);
                }
                out.push(']');
            }
            Tag::Object => {
                out.push('{');
                for (i, (key, value)) in self.members().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    key.write_json(out);
                    out.push(':');
                    value.write_json(out);
                }
                out.push('}');
            }
        }
    }

    /// The value as a `serde_json::Value` (for the small parts of a page that code written
    /// for serde_json reads: cursors, a stop condition's `response`). An integer beyond 64
    /// bits becomes a string of its digits.
    pub fn to_serde(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self.node().tag {
            Tag::Null => J::Null,
            Tag::True => J::Bool(true),
            Tag::False => J::Bool(false),
            Tag::Int | Tag::UInt | Tag::Float | Tag::Big => match self.as_number() {
                Some(Number::Int(i)) => J::from(i),
                Some(Number::UInt(u)) => J::from(u),
                Some(Number::Float(f)) => J::from(f),
                Some(Number::Big(digits)) => J::String(digits.to_owned()),
                None => J::Null,
            },
            Tag::Str | Tag::EscStr => J::String(self.as_str().unwrap_or_default().into_owned()),
            Tag::Array => J::Array(self.elements().map(|v| v.to_serde()).collect()),
            Tag::Object => J::Object(
                self.members()
                    .map(|(k, v)| (k.as_str().into_owned(), v.to_serde()))
                    .collect(),
            ),
        }
    }
}

/// The text of a number as serde_json writes it (`1.0`, `-0.0`, `1e300`).
fn number_text(number: Number<'_>) -> String {
    match number {
        Number::Int(i) => i.to_string(),
        Number::UInt(u) => u.to_string(),
        Number::Float(f) => {
            serde_json::Number::from_f64(f).map_or_else(|| "null".to_owned(), |n| n.to_string())
        }
        Number::Big(digits) => digits.to_owned(),
    }
}

/// A key of an object.
#[derive(Clone, Copy)]
pub struct Key<'a>(Value<'a>);

impl<'a> Key<'a> {
    /// The key's text: borrowed from the body unless it has escapes.
    #[inline]
    pub fn as_str(&self) -> Cow<'a, str> {
        self.0.as_str().unwrap_or_default()
    }

    /// A key of at most 16 bytes without escapes as one number: its bytes, little-endian,
    /// zero-padded (`None` for longer keys and keys with escapes). A plain key holds no zero
    /// byte (JSON text cannot), so two such keys are equal exactly when their numbers are:
    /// readers compare keys by one comparison, without reading their text.
    #[inline]
    pub fn short(&self) -> Option<u128> {
        let n = self.0.node();
        let (start, end) = (n.start as usize, n.end as usize);
        let len = end - start;
        if n.tag != Tag::Str || len > 16 {
            return None;
        }
        let b = self.0.doc.text.as_bytes();
        // One 16-byte load cut to the key's length; only a key ending the body's last 16
        // bytes is copied.
        Some(match b.get(start..start + 16) {
            Some(sixteen) => {
                u128::from_le_bytes(sixteen.try_into().unwrap_or([0; 16])) & KEEP_BYTES[len]
            }
            None => padded(&b[start..end]),
        })
    }

    fn write_json(&self, out: &mut String) {
        self.0.write_json(out);
    }
}

impl std::fmt::Debug for Key<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.as_str())
    }
}

/// `KEEP_BYTES[n]` keeps the low `n` bytes of a word (a table, as a shift of a 128-bit
/// word by a variable amount takes a dozen instructions, once per key read).
const KEEP_BYTES: [u128; 17] = {
    let mut masks = [0u128; 17];
    let mut n = 1;
    while n < 17 {
        masks[n] = u128::MAX >> (8 * (16 - n));
        n += 1;
    }
    masks
};

/// Up to 16 bytes as one little-endian number, zero-padded: a short key's form.
fn padded(bytes: &[u8]) -> u128 {
    let mut word = [0u8; 16];
    word[..bytes.len()].copy_from_slice(bytes);
    u128::from_le_bytes(word)
}

/// The items of a list.
#[derive(Clone)]
pub struct Elements<'a> {
    doc: &'a Document,
    at: u32,
    left: u32,
}

impl<'a> Iterator for Elements<'a> {
    type Item = Value<'a>;

    #[inline]
    fn next(&mut self) -> Option<Value<'a>> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let v = Value {
            doc: self.doc,
            idx: self.at,
        };
        self.at = v.after();
        Some(v)
    }

    #[inline]
    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left as usize, Some(self.left as usize))
    }
}

impl ExactSizeIterator for Elements<'_> {}

/// The pairs of an object.
#[derive(Clone)]
pub struct Members<'a> {
    doc: &'a Document,
    at: u32,
    /// The tape position after the object.
    end: u32,
}

impl<'a> Iterator for Members<'a> {
    type Item = (Key<'a>, Value<'a>);

    #[inline]
    fn next(&mut self) -> Option<(Key<'a>, Value<'a>)> {
        loop {
            if self.at >= self.end {
                return None;
            }
            let key = Value {
                doc: self.doc,
                idx: self.at,
            };
            let value = Value {
                doc: self.doc,
                idx: self.at + 1,
            };
            self.at = value.after();
            if !key.node().shadowed {
                return Some((Key(key), value));
            }
        }
    }
}
